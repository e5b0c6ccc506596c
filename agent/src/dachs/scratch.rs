//! A DaCHS instance of its own for `check-service`: its own root directory, database and port
//! beside (or without) the system's, set up in a few seconds and removed again, so that a
//! provider's RDs are validated, imported and tested without touching any node.
//!
//! The recipe (../shared/dachs/README.md section 12): the instance reuses the installation's
//! role passwords (`dachs init` would otherwise set the shared PostgreSQL roles to new ones and
//! break the system's DaCHS), gets a database made by `postgres`, and is initialised by the
//! DaCHS account with `GAVOSETTINGS` naming its own gavo.rc.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::cli::Dachs;

/// What the installation provides: the role passwords, and DaCHS's cached vocabularies.
const SYSTEM_ETC: &str = "/var/gavo/etc";
const SYSTEM_CACHE: &str = "/var/gavo/cache";
const ROLE_FILES: [&str; 3] = ["feed", "trustedquery", "untrustedquery"];

#[derive(Debug, thiserror::Error)]
#[error("a scratch DaCHS cannot be set up: {0}")]
pub struct ScratchError(String);

pub struct Scratch {
    dir: tempfile::TempDir,
    database: String,
    /// PostgreSQL's port.
    pg_port: u16,
    pub port: u16,
    /// `dachs` commands for this instance.
    pub dachs: Dachs,
    user: String,
    serving: bool,
}

fn run(what: &str, c: &mut Command) -> Result<(), ScratchError> {
    let out = c
        .output()
        .map_err(|e| ScratchError(format!("{what}: {e}")))?;
    if out.status.success() {
        return Ok(());
    }
    Err(ScratchError(format!(
        "{what} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim(),
        String::from_utf8_lossy(&out.stdout).trim()
    )))
}

/// 128 random bits, for the instance's admin password (`dachs serve` needs one set).
fn random_hex() -> Result<String, ScratchError> {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| ScratchError(format!("/dev/urandom: {e}")))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// The port of the installation's PostgreSQL: `PGPORT`, else that of the cluster Debian's
/// `pg_lsclusters` lists as online, else 5432.
fn postgres_port() -> u16 {
    let online = || {
        let out = Command::new("pg_lsclusters")
            .arg("-h")
            .current_dir("/")
            .output()
            .ok()?;
        String::from_utf8_lossy(&out.stdout).lines().find_map(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            (fields.get(3) == Some(&"online")).then(|| fields.get(2)?.parse().ok())?
        })
    };
    std::env::var("PGPORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .or_else(online)
        .unwrap_or(5432)
}

fn free_port() -> Result<u16, ScratchError> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| ScratchError(format!("no free port: {e}")))
}

impl Scratch {
    /// A new instance run by `user` with the `dachs` at `bin`, its commands limited to
    /// `timeout`. Needs root (the database is made as `postgres`, the files owned by `user`).
    pub async fn create(
        bin: &Path,
        user: &str,
        timeout: Duration,
    ) -> Result<Scratch, ScratchError> {
        for f in ROLE_FILES {
            if !Path::new(SYSTEM_ETC).join(f).is_file() {
                return Err(ScratchError(format!(
                    "{SYSTEM_ETC}/{f} is missing: install gavodachs2-server (and apply the \
                     pg_sphere fix of the README) first"
                )));
            }
        }
        let dir = tempfile::Builder::new()
            .prefix("vespa-check-")
            .tempdir()
            .map_err(|e| ScratchError(format!("a scratch directory: {e}")))?;
        let root = dir.path().join("root");
        let port = free_port()?;
        let database = format!(
            "vespa_check_{}_{}",
            std::process::id(),
            dir.path()
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .to_ascii_lowercase()
                .replace(|c: char| !c.is_ascii_alphanumeric(), "")
        );
        let etc = root.join("etc");
        std::fs::create_dir_all(&etc)
            .map_err(|e| ScratchError(format!("{}: {e}", etc.display())))?;
        for f in ROLE_FILES {
            std::fs::copy(Path::new(SYSTEM_ETC).join(f), etc.join(f))
                .map_err(|e| ScratchError(format!("{SYSTEM_ETC}/{f}: {e}")))?;
        }
        let write = |p: PathBuf, text: String| {
            std::fs::write(&p, text).map_err(|e| ScratchError(format!("{}: {e}", p.display())))
        };
        let pg_port = postgres_port();
        write(
            etc.join("dsn"),
            format!("database = {database}\nhost = localhost\nport = {pg_port}\n"),
        )?;
        let rc = dir.path().join("gavo.rc");
        let password = random_hex()?;
        write(
            rc.clone(),
            format!(
                "[general]\nrootDir: {}\n\n[web]\nserverURL: http://localhost:{port}\n\
                 bindAddress: 127.0.0.1\nserverPort: {port}\nuser: gavo\nadminpasswd: {password}\n\n\
                 [ivoa]\nauthority: check.vespa.invalid\n",
                root.display()
            ),
        )?;
        run(
            "chown",
            Command::new("chown")
                .arg("-R")
                .arg(format!("{user}:gavo"))
                .arg(dir.path()),
        )?;
        run(
            "chmod",
            Command::new("chmod")
                .arg("2775")
                .arg(dir.path())
                .arg(&root)
                .arg(&etc),
        )?;
        // It holds the instance's admin password: its account and the server's group only.
        run("chmod", Command::new("chmod").arg("0640").arg(&rc))?;
        let mut dachs = Dachs::new(
            bin.to_owned(),
            user.to_owned(),
            timeout,
            &root.join("inputs"),
        );
        dachs.settings = Some(rc);
        let mut scratch = Scratch {
            dir,
            database,
            pg_port,
            port,
            dachs,
            user: user.to_owned(),
            serving: false,
        };
        run(
            "createdb",
            Command::new("runuser").current_dir("/").args([
                "-u",
                "postgres",
                "--",
                "createdb",
                "--port",
                &pg_port.to_string(),
                "--encoding=UTF-8",
                "--template",
                "template0",
                &scratch.database,
            ]),
        )?;
        let dsn = format!("dbname={} port={pg_port}", scratch.database);
        let init = scratch
            .dachs
            .run(&["init", "-d", &dsn])
            .await
            .map_err(|e| ScratchError(e.to_string()))?;
        if init.code != Some(0) {
            return Err(ScratchError(format!(
                "dachs init: {}",
                super::cli::error_message(&init)
            )));
        }
        // Offline, `dachs val` of an ivo_managed RD needs the cached vocabularies.
        let cache = scratch.root().join("cache");
        if let Ok(entries) = std::fs::read_dir(SYSTEM_CACHE) {
            for e in entries.flatten().filter(|e| e.path().is_file()) {
                let _ = std::fs::copy(e.path(), cache.join(e.file_name()));
            }
            let _ = Command::new("chown")
                .arg("-R")
                .arg(format!("{}:gavo", scratch.user))
                .arg(&cache)
                .status();
        }
        // DaCHS writes debugging files into the working directory of its commands.
        scratch.dachs.workdir = scratch.root().join("tmp");
        Ok(scratch)
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    /// DaCHS's inputs directory of this instance: resources go below it.
    pub fn inputs(&self) -> PathBuf {
        self.root().join("inputs")
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Starts the instance's server and waits until its TAP service says it is available.
    pub async fn serve(&mut self) -> Result<(), ScratchError> {
        if self.serving {
            return Ok(());
        }
        let run = self
            .dachs
            .run_unswitched(&["serve", "start"])
            .await
            .map_err(|e| ScratchError(e.to_string()))?;
        self.serving = true;
        let tap = super::tap::TapClient::new(&self.url(), Duration::from_secs(5));
        for _ in 0..120 {
            if tap.available().await.is_ok() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        Err(ScratchError(format!(
            "its server did not answer on {} within 30 s: {}",
            self.url(),
            super::cli::error_message(&run)
        )))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let rc = self.dachs.settings.clone().unwrap_or_default();
        if self.serving {
            let _ = Command::new(&self.dachs.bin)
                .args(["serve", "stop"])
                .env("GAVOSETTINGS", &rc)
                .output();
        }
        let _ = Command::new("runuser")
            .args([
                "-u",
                "postgres",
                "--",
                "dropdb",
                "--port",
                &self.pg_port.to_string(),
                "--if-exists",
                &self.database,
            ])
            .current_dir("/")
            .output();
    }
}
