//! A GitLab-like git server for tests: `git http-backend` behind nginx and fcgiwrap, with HTTP
//! basic auth for `oauth2:<token>` (how GitLab takes deploy and access tokens), over plain HTTP
//! and HTTPS with a self-signed certificate. Plus a work tree to make, sign and push commits.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{eventually, free_port, have, missing};

pub const TOKEN: &str = "glpat-test-token-9f8e7d6c5b4a";

pub struct GitServer {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub tls_port: u16,
    nginx: Option<Child>,
    fcgiwrap: Option<Child>,
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Runs `git <args>` in `dir` (see [`git`]), fails the test if it fails, returns its stdout.
pub fn run_git(dir: &Path, args: &[&str]) -> String {
    run(git(dir).args(args))
}

/// git with an identity and no user or system configuration.
pub fn git(dir: &Path) -> Command {
    let mut c = Command::new("git");
    c.current_dir(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "Provider")
        .env("GIT_AUTHOR_EMAIL", "provider@example.org")
        .env("GIT_COMMITTER_NAME", "Provider")
        .env("GIT_COMMITTER_EMAIL", "provider@example.org");
    c
}

impl GitServer {
    /// `None` (after failing under CI) when nginx, fcgiwrap or htpasswd is missing.
    pub fn start() -> Option<GitServer> {
        for bin in ["nginx", "fcgiwrap", "htpasswd", "openssl"] {
            if !have(bin) && !Path::new(&format!("/usr/sbin/{bin}")).exists() {
                missing(&format!("{bin} (the test command installs it)"));
                return None;
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_owned();
        let d = d.as_path();
        for sub in ["repos/ops", "tmp", "logs", "work"] {
            std::fs::create_dir_all(d.join(sub)).unwrap();
        }
        let bare = d.join("repos/ops/service.git");
        run(git(d)
            .args(["init", "-q", "--bare", "-b", "main"])
            .arg(&bare));
        run(git(&bare).args(["config", "http.receivepack", "false"]));
        // GitLab lets a maintainer delete the default branch; so does this server.
        run(git(&bare).args(["config", "receive.denyDeleteCurrent", "ignore"]));
        run(Command::new("htpasswd")
            .args(["-bc"])
            .arg(d.join("htpasswd"))
            .args(["oauth2", TOKEN]));
        run(Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=127.0.0.1",
            ])
            .args([
                "-addext",
                "subjectAltName=IP:127.0.0.1,DNS:localhost",
                "-keyout",
            ])
            .arg(d.join("tls.key"))
            .arg("-out")
            .arg(d.join("tls.crt"))
            .stderr(Stdio::null()));
        let mut s = GitServer {
            port: free_port(),
            tls_port: free_port(),
            dir,
            nginx: None,
            fcgiwrap: None,
        };
        s.up();
        // The work tree that provider commits are made in, pushed to the bare repository directly.
        let work = s.work();
        run(git(d).args(["clone", "-q"]).arg(&bare).arg(&work));
        run(git(&work).args(["checkout", "-q", "-b", "main"]));
        Some(s)
    }

    fn conf(&self) -> String {
        let d = self.dir.path().display();
        format!(
            r#"worker_processes 1; daemon off; user root; pid {d}/nginx.pid; error_log {d}/logs/error.log;
events {{ worker_connections 64; }}
http {{
  log_format timed '$remote_addr - $remote_user "$request" $status $body_bytes_sent $request_time "$http_user_agent"';
  access_log {d}/logs/access.log timed;
  client_body_temp_path {d}/tmp/body; proxy_temp_path {d}/tmp/proxy; fastcgi_temp_path {d}/tmp/fastcgi;
  uwsgi_temp_path {d}/tmp/uwsgi; scgi_temp_path {d}/tmp/scgi;
  server {{
    listen 127.0.0.1:{port};
    listen 127.0.0.1:{tls} ssl;
    ssl_certificate {d}/tls.crt; ssl_certificate_key {d}/tls.key;
    location ~ ^/.+\.git/(info/refs|git-upload-pack|HEAD|objects/.*)$ {{
      auth_basic "GitLab-like"; auth_basic_user_file {d}/htpasswd;
      client_max_body_size 0;
      include /etc/nginx/fastcgi_params;
      fastcgi_param SCRIPT_FILENAME /usr/lib/git-core/git-http-backend;
      fastcgi_param GIT_PROJECT_ROOT {d}/repos;
      fastcgi_param GIT_HTTP_EXPORT_ALL "";
      fastcgi_param PATH_INFO $uri;
      fastcgi_param REMOTE_USER $remote_user;
      fastcgi_pass unix:{d}/fcgiwrap.sock;
    }}
  }}
}}
"#,
            port = self.port,
            tls = self.tls_port
        )
    }

    /// Starts (or restarts) the server and waits until it answers.
    pub fn up(&mut self) {
        let d = self.dir.path().to_owned();
        let sock = d.join("fcgiwrap.sock");
        let _ = std::fs::remove_file(&sock);
        self.fcgiwrap = Some(
            Command::new("fcgiwrap")
                .args(["-c", "4", "-s"])
                .arg(format!("unix:{}", sock.display()))
                .process_group(0)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        std::fs::write(d.join("nginx.conf"), self.conf()).unwrap();
        self.nginx = Some(
            Command::new("nginx")
                .arg("-c")
                .arg(d.join("nginx.conf"))
                .process_group(0)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        eventually("nginx to listen", Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", self.port))
                .ok()
                .filter(|_| sock.exists())
        });
    }

    /// Stops nginx and fcgiwrap (GitLab down). Each runs in its own process group, killed
    /// whole: nginx's worker and fcgiwrap's forked children would otherwise outlive the test
    /// and keep its output pipe open.
    pub fn down(&mut self) {
        for child in [self.nginx.take(), self.fcgiwrap.take()]
            .into_iter()
            .flatten()
        {
            super::kill_group(child);
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/ops/service.git", self.port)
    }

    /// What the agent's fetch stage is given for this server: its URL, branch main, and the
    /// token from a 0600 file under `dir`, read as the agent reads `source.token-file`.
    pub fn fetch_spec(&self, dir: &Path) -> vespa_agent::source::fetch::FetchSpec {
        let token_path = super::private_file(&dir.join("token"), TOKEN);
        let token =
            vespa_agent::config::SecretFile::resolve(token_path.to_str().unwrap(), Path::new("/"))
                .and_then(|f| f.read())
                .unwrap();
        vespa_agent::source::fetch::FetchSpec {
            url: self.url(),
            follow: vespa_agent::config::Follow::Branch("main".into()),
            username: "oauth2".into(),
            token: Some(token),
        }
    }

    /// CPU time the server has used so far: nginx and fcgiwrap, each the leader of its process
    /// group, and every process of their groups (git http-backend, counted once reaped).
    pub fn cpu(&self) -> Duration {
        let groups: Vec<u32> = [&self.nginx, &self.fcgiwrap]
            .into_iter()
            .flatten()
            .map(|c| c.id())
            .collect();
        let tick = 100.0; // USER_HZ on Linux
        let mut ticks = 0u64;
        for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
                continue;
            };
            // After the command's closing parenthesis: state ppid pgrp ... utime(14) stime(15)
            // cutime(16) cstime(17), counted from the pid as field 1.
            let Some((_, rest)) = stat.rsplit_once(')') else {
                continue;
            };
            let f: Vec<&str> = rest.split_whitespace().collect();
            if f.len() > 14 && groups.iter().any(|g| f[2] == g.to_string()) {
                ticks += f[11..15]
                    .iter()
                    .filter_map(|v| v.parse::<u64>().ok())
                    .sum::<u64>();
            }
        }
        Duration::from_secs_f64(ticks as f64 / tick)
    }

    /// nginx's access log: a line per request answered.
    pub fn access_log(&self) -> PathBuf {
        self.dir.path().join("logs/access.log")
    }

    pub fn https_url(&self) -> String {
        format!("https://127.0.0.1:{}/ops/service.git", self.tls_port)
    }

    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("tls.crt")
    }

    pub fn work(&self) -> PathBuf {
        self.dir.path().join("work")
    }

    pub fn bare(&self) -> PathBuf {
        self.dir.path().join("repos/ops/service.git")
    }

    /// Requests the server has answered so far (nginx's access log).
    pub fn requests(&self) -> Vec<String> {
        std::fs::read_to_string(self.access_log())
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// Writes files into the work tree (a `None` body deletes), commits with `extra` git
    /// arguments (signing options), and returns the new commit's SHA. Not pushed.
    pub fn commit(&self, files: &[(&str, Option<&str>)], msg: &str, extra: &[&str]) -> String {
        let w = self.work();
        for (path, body) in files {
            let p = w.join(path);
            match body {
                Some(b) => {
                    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
                    std::fs::write(&p, b).unwrap();
                }
                None => {
                    let _ = std::fs::remove_file(&p);
                }
            }
        }
        run(git(&w).args(["add", "-A"]));
        run(git(&w)
            .args(extra)
            .args(["commit", "-q", "--allow-empty", "-m", msg]));
        run(git(&w).args(["rev-parse", "HEAD"]))
    }

    /// Copies the example service repository into the work tree and commits it.
    pub fn commit_example(&self, extra: &[&str]) -> String {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/service");
        run(Command::new("cp")
            .arg("-r")
            .arg(format!("{}/.", src.display()))
            .arg(self.work()));
        self.commit(&[], "the example service", extra)
    }

    /// Pushes the work tree's main to the server (forced, so a rewritten history goes too).
    pub fn push(&self) {
        run(git(&self.work()).args(["push", "-q", "-f", "origin", "main"]));
    }

    pub fn tip(&self) -> String {
        run(git(&self.bare()).args(["rev-parse", "main"]))
    }

    /// Runs any git command in the work tree.
    pub fn git(&self, args: &[&str]) -> String {
        run_git(&self.work(), args)
    }
}

impl Drop for GitServer {
    fn drop(&mut self) {
        self.down();
    }
}

/// A provider's repository on the local disk, holding the example service; `home` gives an
/// agent that follows it with `dachs.apply = false`.
pub struct LocalRepo {
    dir: tempfile::TempDir,
}

impl LocalRepo {
    pub fn new() -> LocalRepo {
        let dir = tempfile::tempdir().unwrap();
        let r = LocalRepo { dir };
        r.run(&["init", "-q", "-b", "main"]);
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/service");
        let ok = std::process::Command::new("cp")
            .arg("-r")
            .arg(format!("{}/.", src.display()))
            .arg(r.path())
            .status()
            .unwrap();
        assert!(ok.success());
        r.commit("the example service");
        r
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn run(&self, args: &[&str]) -> String {
        run_git(self.path(), args)
    }

    pub fn write(&self, rel: &str, body: &str) {
        let p = self.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, body).unwrap();
    }

    pub fn commit(&self, msg: &str) -> String {
        self.run(&["add", "-A"]);
        self.run(&["commit", "-q", "--allow-empty", "-m", msg]);
        self.run(&["rev-parse", "HEAD"])
    }

    pub fn home(&self, extra: &str) -> super::Home {
        let home = super::Home::new(&super::dachs_url(), "apply = false\n");
        home.write(
            "etc/agent.d/20-source.toml",
            &format!("[source]\nurl = \"{}\"\n{extra}", self.path().display()),
        );
        home
    }
}

impl LocalRepo {
    /// The example service under the schema and directory `name`, its granules from the
    /// example collection, and an agent home that applies it to the harness's DaCHS.
    pub fn example_as(name: &str) -> (LocalRepo, super::Home) {
        let repo = LocalRepo::new();
        repo.run(&["mv", "epnlab", name]);
        let rd = std::fs::read_to_string(repo.path().join(name).join("q.rd")).unwrap();
        repo.write(&format!("{name}/q.rd"), &rd.replace("epnlab", name));
        let granules = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/granules/epnlab");
        repo.write(
            "vespa-service.toml",
            &format!(
                "[[resource]]\ndir = \"{name}\"\n[[resource.collection]]\nname = \"granules\"\nsource = \"{}\"\ninclude = [\"*.csv\"]\n",
                granules.canonicalize().unwrap().display()
            ),
        );
        repo.commit(&format!("the example as {name}"));
        let home = super::Home::new(&super::dachs_url(), "");
        home.write(
            "etc/agent.d/20-source.toml",
            &format!("[source]\nurl = \"{}\"\n", repo.path().display()),
        );
        (repo, home)
    }
}
