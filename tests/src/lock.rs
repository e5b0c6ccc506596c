//! Locks that the suites honour across test binaries, so that the test command can run several
//! binaries side by side (flock(2) on a file per peer; released when the process ends, however
//! it ends). Within one binary they order the tests' threads the same way.
//!
//! - The host's DaCHS: every suite that uses it shares it; a suite that restarts or stops DaCHS
//!   or PostgreSQL, or rewrites /etc/gavo.rc, owns it for the rest of its process, alone.
//! - A booted node: one at a time on the machine, since a node shares the host's loopback and
//!   its PostgreSQL and DaCHS ports (node.rs).
//! - The package: one `cargo deb` at a time writes target/debian/.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::sync::OnceLock;

/// A held lock; dropping it releases it.
pub struct Hold(#[allow(dead_code)] File);

fn open(name: &str) -> File {
    let path = std::env::temp_dir().join(format!("vespa-agent-tests-{name}.lock"));
    File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn flock(f: &File, how: libc::c_int, name: &str) {
    // SAFETY: flock(2) on a descriptor this process owns.
    while unsafe { libc::flock(f.as_raw_fd(), how) } != 0 {
        let e = std::io::Error::last_os_error();
        assert_eq!(
            e.kind(),
            std::io::ErrorKind::Interrupted,
            "flock {name}: {e}"
        );
    }
}

/// `name` held alone until the `Hold` is dropped.
pub fn alone(name: &str) -> Hold {
    let f = open(name);
    flock(&f, libc::LOCK_EX, name);
    Hold(f)
}

static DACHS: OnceLock<File> = OnceLock::new();

/// The host's DaCHS shared with the other suites, for the rest of this process.
pub fn share_dachs() {
    DACHS.get_or_init(|| {
        let f = open("dachs");
        flock(&f, libc::LOCK_SH, "dachs");
        f
    });
}

/// The host's DaCHS for this process alone, from now until it ends: it waits for every other
/// suite's share to end, and keeps new ones waiting.
pub fn own_dachs() {
    let f = DACHS.get_or_init(|| open("dachs"));
    // On the descriptor that may hold this process's share: flock converts it.
    flock(f, libc::LOCK_EX, "dachs");
}
