//! Log events to journald over its native protocol, each field as a journal field (COMMIT=,
//! RESOURCE=, ERROR=, MESSAGE_ID=...) and, unlike tracing-journald, the fields also written out
//! in MESSAGE: `journalctl -u vespa-agent` shows only MESSAGE, and an operator reading "deploy
//! failed; rolling back" there must see why without `-o verbose`.

use std::fmt::Write as _;
use std::os::unix::net::UnixDatagram;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

/// journald's socket for the native protocol.
pub const SOCKET: &str = "/run/systemd/journal/socket";

/// A datagram larger than this is cut: journald accepts far more, but a log line that long is
/// a bug, and the socket's buffer may be smaller.
const MAX_DATAGRAM: usize = 64 * 1024;

pub struct Journald {
    socket: UnixDatagram,
    identifier: String,
}

impl Journald {
    pub fn connect(identifier: &str) -> std::io::Result<Journald> {
        let socket = UnixDatagram::unbound()?;
        socket.connect(SOCKET)?;
        Ok(Journald {
            socket,
            identifier: identifier.to_owned(),
        })
    }
}

/// The fields of one event, in the order they were recorded.
#[derive(Default)]
struct Fields {
    message: String,
    rest: Vec<(String, String)>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, value.to_owned());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.put(field, format!("{value:?}"));
    }
}

impl Fields {
    fn put(&mut self, field: &Field, value: String) {
        if field.name() == "message" {
            self.message = value;
        } else {
            self.rest.push((field_name(field.name()), value));
        }
    }
}

/// A journal field name: upper case letters, digits and `_`, starting with a letter.
fn field_name(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| match c {
            'a'..='z' => c.to_ascii_uppercase(),
            'A'..='Z' | '0'..='9' => c,
            _ => '_',
        })
        .collect();
    if !out.starts_with(|c: char| c.is_ascii_uppercase()) {
        out.insert_str(0, "X_");
    }
    out
}

fn priority(level: &Level) -> &'static str {
    match *level {
        Level::ERROR => "3",
        Level::WARN => "4",
        Level::INFO => "5",
        Level::DEBUG => "6",
        Level::TRACE => "7",
    }
}

/// `KEY=value\n`, or for a value with a newline `KEY\n<u64 LE length>value\n`.
fn put(buf: &mut Vec<u8>, key: &str, value: &str) {
    buf.extend_from_slice(key.as_bytes());
    if value.contains('\n') {
        buf.push(b'\n');
        buf.extend_from_slice(&(value.len() as u64).to_le_bytes());
    } else {
        buf.push(b'=');
    }
    buf.extend_from_slice(value.as_bytes());
    buf.push(b'\n');
}

/// MESSAGE as `journalctl` shows it: the message, then each field but the message id.
fn message_line(f: &Fields) -> String {
    let mut line = f.message.clone();
    let shown: Vec<&(String, String)> = f.rest.iter().filter(|(k, _)| k != "MESSAGE_ID").collect();
    for (i, (k, v)) in shown.iter().enumerate() {
        let sep = if i == 0 { " (" } else { "; " };
        let _ = write!(line, "{sep}{}: {v}", k.to_ascii_lowercase());
    }
    if !shown.is_empty() {
        line.push(')');
    }
    line
}

fn datagram(identifier: &str, event: &Event<'_>) -> Vec<u8> {
    let mut f = Fields::default();
    event.record(&mut f);
    let meta = event.metadata();
    let mut buf = Vec::with_capacity(512);
    put(&mut buf, "MESSAGE", &message_line(&f));
    put(&mut buf, "PRIORITY", priority(meta.level()));
    put(&mut buf, "SYSLOG_IDENTIFIER", identifier);
    put(&mut buf, "TARGET", meta.target());
    if let Some(file) = meta.file() {
        put(&mut buf, "CODE_FILE", file);
    }
    if let Some(line) = meta.line() {
        put(&mut buf, "CODE_LINE", &line.to_string());
    }
    for (k, v) in &f.rest {
        put(&mut buf, k, v);
    }
    buf
}

impl<S: Subscriber> Layer<S> for Journald {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut buf = datagram(&self.identifier, event);
        if buf.len() > MAX_DATAGRAM {
            buf.truncate(MAX_DATAGRAM);
            // The cut may split a field: end on a clean line for the parser.
            if let Some(nl) = buf.iter().rposition(|&c| c == b'\n') {
                buf.truncate(nl + 1);
            }
        }
        // A journal that is gone cannot be told so; the process goes on.
        let _ = self.socket.send(&buf);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_names_are_what_journald_accepts() {
        assert_eq!(field_name("message_id"), "MESSAGE_ID");
        assert_eq!(field_name("commit"), "COMMIT");
        assert_eq!(field_name("r#type"), "R_TYPE");
        assert_eq!(field_name("_hidden"), "X__HIDDEN");
        assert_eq!(field_name("1st"), "X_1ST");
    }

    #[test]
    fn the_message_carries_the_fields_and_multiline_values_are_framed() {
        let f = Fields {
            message: "deploy failed; rolling back".into(),
            rest: vec![
                ("MESSAGE_ID".into(), "1ef2".into()),
                ("RESOURCE".into(), "epnlab".into()),
                ("ERROR".into(), "stage failed".into()),
            ],
        };
        assert_eq!(
            message_line(&f),
            "deploy failed; rolling back (resource: epnlab; error: stage failed)"
        );
        let plain = Fields {
            message: "started".into(),
            rest: vec![("MESSAGE_ID".into(), "x".into())],
        };
        assert_eq!(message_line(&plain), "started");

        let mut buf = Vec::new();
        put(&mut buf, "A", "one");
        put(&mut buf, "B", "two\nlines");
        let mut want = b"A=one\nB\n".to_vec();
        want.extend_from_slice(&9u64.to_le_bytes());
        want.extend_from_slice(b"two\nlines\n");
        assert_eq!(buf, want);
    }
}
