//! A B2SAFE stand-in for tests: Apache mod_dav serving a directory over WebDAV with Basic auth,
//! as Davrods (itself an Apache mod_dav provider) does (../shared/peers/README.md §8).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{eventually, free_port, missing};

pub const USER: &str = "alice";
pub const PASSWORD: &str = "b2safe-s3cret-7c6b";

pub struct DavServer {
    pub dir: tempfile::TempDir,
    pub port: u16,
    apache: Option<Child>,
}

impl DavServer {
    /// `None` (after failing under CI) when apache2 is missing.
    pub fn start() -> Option<DavServer> {
        if !std::path::Path::new("/usr/sbin/apache2").exists() {
            missing("apache2 (the test command installs it)");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for sub in ["data", "logs", "lock"] {
            std::fs::create_dir_all(d.join(sub)).unwrap();
        }
        // Apache drops to www-data: it must reach the data and write its lock database.
        for p in [d.to_owned(), d.join("data")] {
            std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755))
                .unwrap();
        }
        let ok = Command::new("chown")
            .args(["www-data:www-data"])
            .arg(d.join("lock"))
            .status()
            .unwrap();
        assert!(ok.success());
        let out = Command::new("htpasswd")
            .args(["-bc"])
            .arg(d.join("htpasswd"))
            .args([USER, PASSWORD])
            .output()
            .unwrap();
        assert!(out.status.success());
        let port = free_port();
        let m = "/usr/lib/apache2/modules";
        let conf = format!(
            "ServerRoot {d}\nListen 127.0.0.1:{port}\nPidFile {d}/apache.pid\nErrorLog {d}/logs/error.log\n\
             User www-data\nGroup www-data\nServerName localhost\n\
             LoadModule mpm_event_module {m}/mod_mpm_event.so\n\
             LoadModule authz_core_module {m}/mod_authz_core.so\n\
             LoadModule authn_core_module {m}/mod_authn_core.so\n\
             LoadModule authn_file_module {m}/mod_authn_file.so\n\
             LoadModule auth_basic_module {m}/mod_auth_basic.so\n\
             LoadModule authz_user_module {m}/mod_authz_user.so\n\
             LoadModule alias_module {m}/mod_alias.so\n\
             LoadModule mime_module {m}/mod_mime.so\n\
             LoadModule dav_module {m}/mod_dav.so\n\
             LoadModule dav_fs_module {m}/mod_dav_fs.so\n\
             TypesConfig /etc/mime.types\n\
             DavLockDB {d}/lock/davlock\n\
             CustomLog /dev/null common\n\
             Alias /dav {d}/data\n\
             <Directory {d}/data>\n  Dav On\n  AuthType Basic\n  AuthName b2safe\n  AuthUserFile {d}/htpasswd\n  Require valid-user\n</Directory>\n",
            d = d.display()
        );
        std::fs::write(d.join("httpd.conf"), conf).unwrap();
        let mut s = DavServer {
            dir,
            port,
            apache: None,
        };
        s.up();
        Some(s)
    }

    pub fn up(&mut self) {
        let d = self.dir.path();
        self.apache = Some(
            Command::new("/usr/sbin/apache2")
                .arg("-f")
                .arg(d.join("httpd.conf"))
                .arg("-DFOREGROUND")
                .process_group(0)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        eventually("apache to listen", Duration::from_secs(15), || {
            std::net::TcpStream::connect(("127.0.0.1", self.port)).ok()
        });
    }

    pub fn down(&mut self) {
        if let Some(child) = self.apache.take() {
            super::kill_group(child);
        }
    }

    /// Where a collection's files go on the server side.
    pub fn data(&self, collection: &str) -> PathBuf {
        let p = self.dir.path().join("data").join(collection);
        std::fs::create_dir_all(&p).unwrap();
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        p
    }

    pub fn url(&self, collection: &str) -> String {
        format!("http://127.0.0.1:{}/dav/{collection}", self.port)
    }
}

impl Drop for DavServer {
    fn drop(&mut self) {
        self.down();
    }
}

use std::os::unix::process::CommandExt;
