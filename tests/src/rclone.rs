//! A second WebDAV peer for tests: `rclone serve webdav` (Debian's rclone), for the server
//! differences a site's WebDAV front may have (../shared/peers/README.md §8): its own ETags,
//! listing shape and Range handling. Basic auth from an htpasswd file, so no secret is in its
//! arguments.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::dav::{PASSWORD, USER};
use super::{eventually, free_port, missing};

pub struct RcloneDav {
    pub dir: tempfile::TempDir,
    pub port: u16,
    child: Option<Child>,
}

impl RcloneDav {
    /// `None` (after failing under CI) when rclone is missing.
    pub fn start() -> Option<RcloneDav> {
        if Command::new("rclone").arg("version").output().is_err() {
            missing("rclone (the test command installs it)");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir_all(d.join("data")).unwrap();
        let out = Command::new("htpasswd")
            .args(["-bcB"])
            .arg(d.join("htpasswd"))
            .args([USER, PASSWORD])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let port = free_port();
        let child = Command::new("rclone")
            .args(["serve", "webdav"])
            .arg(d.join("data"))
            .args(["--addr", &format!("127.0.0.1:{port}")])
            .arg("--htpasswd")
            .arg(d.join("htpasswd"))
            // Its VFS caches listings for 5 minutes by default: a collection changed behind
            // it shows late. The tests change it behind its back, so no cache.
            .args(["--config", "/dev/null", "--dir-cache-time", "0s"])
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        eventually("rclone to listen", Duration::from_secs(15), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).ok()
        });
        Some(RcloneDav {
            dir,
            port,
            child: Some(child),
        })
    }

    pub fn data(&self, collection: &str) -> PathBuf {
        let p = self.dir.path().join("data").join(collection);
        std::fs::create_dir_all(&p).unwrap();
        p
    }

    pub fn url(&self, collection: &str) -> String {
        format!("http://127.0.0.1:{}/{collection}", self.port)
    }
}

impl Drop for RcloneDav {
    fn drop(&mut self) {
        if let Some(c) = self.child.take() {
            super::kill_group(c);
        }
    }
}
