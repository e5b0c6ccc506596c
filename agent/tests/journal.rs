//! What the journal receives: structured fields without a prefix and a MESSAGE_ID on key
//! events. No systemd runs on this machine, so a stand-in (a DOUBLE of journald's native
//! socket, /run/systemd/journal/socket, reading the native protocol) receives the entries; the
//! nspawn bootstrap test sees the real journald.

use std::collections::BTreeMap;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::time::Duration;

use harness::git::LocalRepo;

const SOCKET: &str = "/run/systemd/journal/socket";

/// Decodes one datagram of journald's native protocol: `KEY=value\n`, or `KEY\n` followed by
/// a little-endian 64-bit length, the value and `\n`.
fn decode(mut b: &[u8]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    while !b.is_empty() {
        let nl = b.iter().position(|&c| c == b'\n').unwrap_or(b.len());
        let line = &b[..nl];
        if let Some(eq) = line.iter().position(|&c| c == b'=') {
            out.insert(
                String::from_utf8_lossy(&line[..eq]).into_owned(),
                String::from_utf8_lossy(&line[eq + 1..]).into_owned(),
            );
            b = &b[(nl + 1).min(b.len())..];
        } else {
            let key = String::from_utf8_lossy(line).into_owned();
            let len = u64::from_le_bytes(b[nl + 1..nl + 9].try_into().unwrap()) as usize;
            let value = &b[nl + 9..nl + 9 + len];
            out.insert(key, String::from_utf8_lossy(value).into_owned());
            b = &b[(nl + 10 + len).min(b.len())..];
        }
    }
    out
}

#[test]
fn a_refused_commit_is_found_by_its_message_id_with_its_commit() {
    if Path::new(SOCKET).exists() {
        // A real journald runs here: the bootstrap test under systemd-nspawn covers it.
        eprintln!("a journald owns {SOCKET}; not replacing it");
        return;
    }
    std::fs::create_dir_all(Path::new(SOCKET).parent().unwrap()).unwrap();
    let journal = UnixDatagram::bind(SOCKET).unwrap();
    struct Remove;
    impl Drop for Remove {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(SOCKET);
        }
    }
    let _remove = Remove;
    journal
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();

    let repo = LocalRepo::new();
    repo.write("vespa-service.toml", "[[resource]]\ndir = \"nowhere\"\n");
    let bad = repo.commit("a resource that is not there");
    let home = repo.home("");
    let out = home
        .command(&["sync"])
        .env("JOURNAL_STREAM", "8:1234")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    // The command's own verdict goes to the caller; the log lines only to the journal.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr.lines().count(),
        1,
        "logged to stderr besides the journal: {stderr}"
    );
    assert!(stderr.starts_with("vespa-agent: sync failed:"), "{stderr}");

    let mut entries = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    while let Ok(n) = journal.recv(&mut buf) {
        if n > 0 {
            entries.push(decode(&buf[..n]));
        }
    }
    let refused: Vec<_> = entries
        .iter()
        .filter(|e| {
            e.get("MESSAGE_ID").map(String::as_str) == Some(vespa_agent::journal::COMMIT_REFUSED)
        })
        .collect();
    assert_eq!(refused.len(), 1, "{entries:#?}");
    let e = refused[0];
    assert_eq!(e.get("COMMIT"), Some(&bad));
    assert_eq!(e.get("STAGE").map(String::as_str), Some("validate"));
    assert_eq!(
        e.get("SYSLOG_IDENTIFIER").map(String::as_str),
        Some("vespa-agent")
    );
    assert_eq!(e.get("PRIORITY").map(String::as_str), Some("3"));
    assert!(e["MESSAGE"].contains("commit rejected"), "{e:?}");
    assert!(e["ERROR"].contains("nowhere"), "{e:?}");
    assert!(
        !entries
            .iter()
            .any(|e| e.keys().any(|k| k.starts_with("F_")))
    );
}
