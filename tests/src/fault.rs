//! A fault-injecting HTTP proxy for tests: it stands between the agent and a real server and,
//! for the requests a test names, answers with an error status, cuts the body short, flips a
//! byte, stalls, resets the connection, or runs a hook (to change the collection mid-transfer)
//! before passing the request on. One request per connection (it answers `Connection: close`),
//! so each fault hits exactly the request it was meant for.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::httpd::{Listener, find, read_request};

pub enum Fault {
    /// Answer with this status, without asking the server.
    Status(u16),
    /// Pass the head and this share of the body (0.0 to 1.0), then close.
    Truncate(f64),
    /// Flip one byte in the middle of the body.
    Corrupt,
    /// Replace the first occurrence of these bytes in the body with as many others: damage
    /// that keeps the size and that the reader is sure to notice.
    Replace(&'static str, &'static str),
    /// Pass the head and half the body, then hold the connection this long and close.
    Stall(Duration),
    /// Close the connection with a reset before answering.
    Reset,
    /// Run this first, then pass the request on unharmed.
    Hook(Box<dyn FnOnce() + Send>),
}

struct Rule {
    method: String,
    path_contains: String,
    fault: Fault,
}

#[derive(Clone, Default)]
pub struct Plan {
    rules: Arc<Mutex<VecDeque<Rule>>>,
    /// Requests seen, as `METHOD path` with any `Range` header.
    pub seen: Arc<Mutex<Vec<String>>>,
    pub injected: Arc<AtomicUsize>,
}

impl Plan {
    /// The next request with this method whose path contains `path_contains` meets `fault`
    /// (rules are used once each, in the order added).
    pub fn add(&self, method: &str, path_contains: &str, fault: Fault) {
        self.rules.lock().unwrap().push_back(Rule {
            method: method.into(),
            path_contains: path_contains.into(),
            fault,
        });
    }

    fn take(&self, method: &str, path: &str) -> Option<Fault> {
        let mut rules = self.rules.lock().unwrap();
        let i = rules
            .iter()
            .position(|r| r.method == method && path.contains(&r.path_contains))?;
        self.injected.fetch_add(1, Ordering::SeqCst);
        rules.remove(i).map(|r| r.fault)
    }

    pub fn pending(&self) -> usize {
        self.rules.lock().unwrap().len()
    }
}

pub struct FaultProxy {
    pub port: u16,
    pub plan: Plan,
    _listener: Listener,
}

impl FaultProxy {
    pub fn start(upstream_port: u16) -> FaultProxy {
        let plan = Plan::default();
        let p = plan.clone();
        let listener = Listener::start(move |conn| serve(conn, upstream_port, &p));
        FaultProxy {
            port: listener.port,
            plan,
            _listener: listener,
        }
    }

    /// `url` with its port replaced by the proxy's.
    pub fn url(&self, url: &str, upstream_port: u16) -> String {
        url.replace(&format!(":{upstream_port}/"), &format!(":{}/", self.port))
    }
}

fn serve(mut conn: TcpStream, upstream_port: u16, plan: &Plan) -> std::io::Result<()> {
    let Some((head, body)) = read_request(&mut conn)? else {
        return Ok(());
    };
    let mut first = head.lines().next().unwrap_or("").split(' ');
    let (method, path) = (
        first.next().unwrap_or("").to_owned(),
        first.next().unwrap_or("").to_owned(),
    );
    let range = head
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("range:"))
        .map(|l| format!(" {}", l.trim()))
        .unwrap_or_default();
    plan.seen
        .lock()
        .unwrap()
        .push(format!("{method} {path}{range}"));
    let fault = plan.take(&method, &path);
    match fault {
        Some(Fault::Status(code)) => {
            let extra = if code == 401 {
                "WWW-Authenticate: Basic realm=\"b2safe\"\r\n"
            } else {
                ""
            };
            write!(
                conn,
                "HTTP/1.1 {code} Injected\r\n{extra}Content-Length: 0\r\nConnection: close\r\n\r\n"
            )?;
            return Ok(());
        }
        Some(Fault::Reset) => {
            // A zero linger turns the close into a reset.
            let sock = socket_fd(&conn);
            let linger = libc_linger();
            unsafe {
                libc::setsockopt(
                    sock,
                    libc::SOL_SOCKET,
                    libc::SO_LINGER,
                    &linger as *const libc::linger as *const libc::c_void,
                    std::mem::size_of::<libc::linger>() as libc::socklen_t,
                );
            }
            drop(conn);
            return Ok(());
        }
        _ => {}
    }
    let fault = match fault {
        Some(Fault::Hook(f)) => {
            f();
            None
        }
        f => f,
    };
    // Pass the request on with `Connection: close`, and read the whole answer.
    let mut up = TcpStream::connect(("127.0.0.1", upstream_port))?;
    let mut new_head = String::new();
    for line in head.trim_end_matches("\r\n").split("\r\n") {
        if !line.to_ascii_lowercase().starts_with("connection:") {
            new_head.push_str(line);
            new_head.push_str("\r\n");
        }
    }
    new_head.push_str("Connection: close\r\n\r\n");
    up.write_all(new_head.as_bytes())?;
    up.write_all(&body)?;
    let mut answer = Vec::new();
    up.read_to_end(&mut answer)?;
    let split = find(&answer, b"\r\n\r\n").map_or(answer.len(), |i| i + 4);
    let (ahead, abody) = answer.split_at(split);
    match fault {
        None | Some(Fault::Hook(_)) | Some(Fault::Status(_)) | Some(Fault::Reset) => {
            conn.write_all(&answer)?;
        }
        Some(Fault::Corrupt) => {
            let mut b = abody.to_vec();
            if !b.is_empty() {
                let mid = b.len() / 2;
                b[mid] ^= 0x20;
            }
            conn.write_all(ahead)?;
            conn.write_all(&b)?;
        }
        Some(Fault::Replace(from, to)) => {
            assert_eq!(from.len(), to.len(), "a replacement keeps the size");
            let mut b = abody.to_vec();
            if let Some(i) = find(&b, from.as_bytes()) {
                b[i..i + to.len()].copy_from_slice(to.as_bytes());
            }
            conn.write_all(ahead)?;
            conn.write_all(&b)?;
        }
        Some(Fault::Truncate(share)) => {
            conn.write_all(ahead)?;
            let n = ((abody.len() as f64) * share) as usize;
            conn.write_all(&abody[..n.min(abody.len().saturating_sub(1))])?;
        }
        Some(Fault::Stall(d)) => {
            conn.write_all(ahead)?;
            conn.write_all(&abody[..abody.len() / 2])?;
            conn.flush()?;
            std::thread::sleep(d);
        }
    }
    let _ = conn.shutdown(Shutdown::Both);
    Ok(())
}

fn socket_fd(s: &TcpStream) -> i32 {
    use std::os::fd::AsRawFd;
    s.as_raw_fd()
}

fn libc_linger() -> libc::linger {
    libc::linger {
        l_onoff: 1,
        l_linger: 0,
    }
}
