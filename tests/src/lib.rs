//! The harness of the end-to-end suites (tests/tests/) and of the agent's own binary tests
//! (agent/tests/): the real `vespa-agent` binary with a private configuration tree, a systemd
//! notify socket the test listens on, signals, and plain HTTP requests; and, in the modules, the
//! real peers it runs against (git over smart HTTP, Apache mod_dav, rclone, booted nodes, fault
//! proxies) and the doubles, named as such, where no real server can run here (GitLab's REST
//! API, OpenStack, the iRODS HTTP API). On failure the agent's own log is printed, so a red test
//! says what the agent saw.
// A constructor here starts something real (a server, a repository): no `Default` for those.
#![allow(clippy::new_without_default)]

pub mod churn;
pub mod dav;
pub mod fault;
pub mod git;
pub mod gitlab;
pub mod httpd;
pub mod irods;
pub mod lock;
pub mod node;
pub mod openstack;
pub mod prom;
pub mod rclone;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The agent binary the suites run: `$VESPA_AGENT_BIN` (the test command sets it to the binary of
/// the same build), else `target/<profile>/vespa-agent` beside the test's own executable. Cargo
/// builds that binary for the agent's own tests (`cargo test --workspace`, `cargo test -p
/// vespa-agent`), not for a suite of this crate alone, so a binary older than a source of the
/// agent is refused rather than tested.
pub fn bin() -> &'static Path {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("VESPA_AGENT_BIN") {
            return PathBuf::from(p);
        }
        let exe = std::env::current_exe().expect("the test's own path");
        // target/<profile>/deps/<test>-<hash>
        let bin = exe.parent().and_then(Path::parent).expect("target/<profile>").join("vespa-agent");
        let built = std::fs::metadata(&bin).and_then(|m| m.modified()).unwrap_or_else(|_| {
            panic!("{} is not built: run `cargo build -p vespa-agent` (`cargo test --workspace` builds it)", bin.display())
        });
        let agent = Path::new(env!("CARGO_MANIFEST_DIR")).join("../agent");
        if let Some(newer) = newer_than(&agent, built) {
            panic!(
                "{} is older than {}: run `cargo build -p vespa-agent` (`cargo test --workspace` builds it)",
                bin.display(),
                newer.display()
            );
        }
        bin
    })
}

/// A source file of the agent (src/, build.rs, Cargo.toml) changed after `t`.
fn newer_than(agent: &Path, t: std::time::SystemTime) -> Option<PathBuf> {
    let mut todo = vec![
        agent.join("src"),
        agent.join("build.rs"),
        agent.join("Cargo.toml"),
    ];
    while let Some(p) = todo.pop() {
        let Ok(m) = std::fs::metadata(&p) else {
            continue;
        };
        if m.is_dir() {
            todo.extend(
                std::fs::read_dir(&p)
                    .into_iter()
                    .flatten()
                    .flatten()
                    .map(|e| e.path()),
            );
        } else if m.modified().is_ok_and(|m| m > t) {
            return Some(p);
        }
    }
    None
}

/// True in CI, where a test that needs a real component must fail rather than skip.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// A test needs something this machine does not have: fail under CI, skip (loudly) elsewhere.
pub fn missing(what: &str) {
    if in_ci() {
        panic!("CI=true and {what} is missing: the test command should have installed it");
    }
    eprintln!("SKIPPED: {what} is missing (run the README's test command to install it)");
}

/// Whether a program is on PATH.
pub fn have(bin: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {bin}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A port on which nothing listens: bound and released.
pub fn closed_port() -> u16 {
    free_port()
}

pub struct Home {
    pub dir: tempfile::TempDir,
    pub port: u16,
}

impl Home {
    /// A configuration tree whose agent listens on a free port, keeps its state in the tree, and
    /// talks to DaCHS at `dachs_url`.
    pub fn new(dachs_url: &str, extra: &str) -> Home {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let h = Home { dir, port };
        h.write(
            "etc/agent.toml",
            &format!(
                "[agent]\nstate-dir = \"{}\"\n\n[http]\nlisten = \"127.0.0.1:{port}\"\n\n\
                 [dachs]\nurl = \"{dachs_url}\"\nquery-timeout = \"2s\"\n{extra}",
                h.path("state").display()
            ),
        );
        // The lowest layer, so that a test's own `[granules]` overrides it. The default reserve
        // (1G) refused every transfer on a CI machine whose shared disk had 0.9 GB free; the
        // tests that are about the reserve set their own.
        h.write(
            "usr/agent.d/90-tests.toml",
            "[granules]\ndisk-reserve = \"32M\"\n",
        );
        h
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn write(&self, rel: &str, body: &str) -> PathBuf {
        let p = self.path(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, body).unwrap();
        p
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin());
        c.arg("--config-dir")
            .arg(self.path("etc"))
            .arg("--vendor-config-dir")
            .arg(self.path("usr/agent.d"))
            .arg("--runtime-config-dir")
            .arg(self.path("run/agent.d"))
            .args(args)
            // As under the packaged unit, whose environment has no CA bundle named (this
            // machine's shell names one, which changes where the agent reads its CAs from).
            .env_remove("SSL_CERT_FILE")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID")
            .env_remove("JOURNAL_STREAM")
            .env_remove("CREDENTIALS_DIRECTORY")
            .env_remove("VESPA_AGENT_LOG")
            .env_remove("VESPA_AGENT_CONFIG_DIR")
            .env_remove("VESPA_AGENT_VENDOR_CONFIG_DIR")
            .env_remove("VESPA_AGENT_RUNTIME_CONFIG_DIR");
        c
    }

    /// Runs a short command to completion.
    pub fn output(&self, args: &[&str]) -> Output {
        let out = self.command(args).output().unwrap();
        Output {
            status: out.status,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("127.0.0.1:{}{path}", self.port)
    }
}

#[derive(Debug)]
pub struct Output {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn code(&self) -> i32 {
        self.status.code().unwrap_or(-1)
    }
}

/// The notify socket a test's agent reports to, collecting every datagram with its arrival time.
pub struct NotifySocket {
    pub path: PathBuf,
    messages: Arc<Mutex<Vec<(Instant, String)>>>,
}

impl NotifySocket {
    pub fn bind(dir: &Path) -> NotifySocket {
        let path = dir.join("notify.sock");
        let sock = UnixDatagram::bind(&path).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let messages = Arc::new(Mutex::new(Vec::new()));
        let sink = messages.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            loop {
                match sock.recv(&mut buf) {
                    Ok(n) => sink.lock().unwrap().push((
                        Instant::now(),
                        String::from_utf8_lossy(&buf[..n]).into_owned(),
                    )),
                    Err(e)
                        if e.kind() == std::io::ErrorKind::WouldBlock
                            || e.kind() == std::io::ErrorKind::TimedOut => {}
                    Err(_) => return,
                }
                if Arc::strong_count(&sink) == 1 {
                    return;
                }
            }
        });
        NotifySocket { path, messages }
    }

    pub fn messages(&self) -> Vec<(Instant, String)> {
        self.messages.lock().unwrap().clone()
    }

    /// Waits until a message contains `needle` (after `since` messages), returning its index.
    pub fn wait_for(&self, needle: &str, since: usize, timeout: Duration) -> Option<usize> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let msgs = self.messages();
            if let Some(i) = msgs
                .iter()
                .skip(since)
                .position(|(_, m)| m.contains(needle))
            {
                return Some(since + i);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

/// A running agent. Killed on drop; its log is printed when the test panics.
pub struct Agent {
    pub child: Child,
    pub log: PathBuf,
}

impl Agent {
    pub fn start(home: &Home, configure: impl FnOnce(&mut Command)) -> Agent {
        let log = home.path("agent.log");
        let file = std::fs::File::create(&log).unwrap();
        let mut cmd = home.command(&["run"]);
        cmd.stdout(Stdio::null()).stderr(file);
        configure(&mut cmd);
        let child = cmd.spawn().unwrap();
        Agent { child, log }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid.
        assert_eq!(unsafe { libc::kill(self.pid(), sig) }, 0);
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for the agent to exit.
    pub fn wait(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(s) = self.child.try_wait().unwrap() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "---- vespa-agent log ({}) ----\n{}",
                self.log.display(),
                self.log()
            );
        }
    }
}

/// A minimal HTTP/1.0 GET: (status, body). `None` when nothing answers.
pub fn get(addr_path: &str) -> Option<(u16, String)> {
    let (addr, path) = addr_path.split_at(addr_path.find('/').unwrap_or(addr_path.len()));
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    let status = raw.split(' ').nth(1)?.parse().ok()?;
    let body = raw.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())?;
    Some((status, body))
}

/// Polls `f` until it returns `Some`, or panics with `what` after `timeout`.
pub fn eventually<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// The value of one sample in a /metrics body.
pub fn metric(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// A minimal HTTP/1.0 POST with extra headers: (status, body).
pub fn post(addr_path: &str, headers: &[(&str, &str)], body: &str) -> Option<(u16, String)> {
    let (addr, path) = addr_path.split_at(addr_path.find('/').unwrap_or(addr_path.len()));
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut req = format!(
        "POST {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    let status = raw.split(' ').nth(1)?.parse().ok()?;
    let body = raw.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())?;
    Some((status, body))
}

/// Where the harness's DaCHS answers (scripts/setup-dachs.sh).
pub fn dachs_url() -> String {
    std::env::var("VESPA_TEST_DACHS_URL").unwrap_or_else(|_| "http://127.0.0.1:8080".into())
}

/// True when the harness's DaCHS answers; under CI its absence fails the test.
/// The DaCHS is shared with the other suites from then on (see [`lock`]).
pub fn require_dachs() -> bool {
    lock::share_dachs();
    let up = get(&format!(
        "{}/tap/availability",
        dachs_url().trim_start_matches("http://")
    ))
    .is_some_and(|(c, b)| c == 200 && b.contains("true"));
    if !up {
        missing("a DaCHS server (scripts/setup-dachs.sh)");
    }
    up
}

/// Writes a secret file readable by its owner only.
pub fn secret_file(home: &Home, rel: &str, value: &str) -> PathBuf {
    private_file(&home.path(rel), value)
}

/// Writes `value` to `path` (its folder made if missing) readable by its owner only, as the
/// agent wants a credential file.
pub fn private_file(path: &Path, value: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, value).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path.to_owned()
}

/// Where the home's `current` link points (`revisions/<sha>`), if it exists.
pub fn current(home: &Home) -> Option<String> {
    std::fs::read_link(home.path("state/current"))
        .ok()
        .map(|t| t.display().to_string())
}

/// A `dachs` that logs each invocation's arguments, one line each, then runs the real one:
/// (the wrapper, its log). It runs as dachsroot, so the home becomes traversable and the log
/// writable by everyone.
pub fn dachs_wrapper(home: &Home) -> (PathBuf, PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let log = home.write("dachs.log", "");
    std::fs::set_permissions(&log, std::fs::Permissions::from_mode(0o666)).unwrap();
    let wrapper = home.write(
        "bin/dachs",
        &format!(
            "#!/bin/sh\necho \"$*\" >> '{}'\nexec /usr/bin/dachs \"$@\"\n",
            log.display()
        ),
    );
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(home.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    (wrapper, log)
}

/// Lines of a file, none when it is missing.
pub fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Kills a server started in its own process group, with every process it forked (nginx's
/// workers, fcgiwrap's children, Apache's), so none outlives the test or holds its pipes open.
pub fn kill_group(mut child: std::process::Child) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{}", child.id())])
        .status();
    let _ = child.wait();
}

/// Standard base64 with padding, for Basic auth headers and iRODS's `sha2:` checksums.
pub fn base64(bytes: &[u8]) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &c)| n | (c as u32) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A benchmark's size from the environment, or its default.
pub fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The middle of several timings (the upper middle of an even count).
pub fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Drops a test resource from the harness's DaCHS and removes its directory, if it is there.
pub fn remove_resource(name: &str) {
    let dir = Path::new("/var/gavo/inputs").join(name);
    if dir.join("q.rd").exists() {
        let _ = Command::new("runuser")
            .args([
                "-u",
                "dachsroot",
                "--",
                "dachs",
                "drop",
                &format!("{name}/q"),
            ])
            .output();
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// A seed for reproducible random choices: `$var` when set, else the clock's; printed, so that a
/// failing run can be replayed with it.
pub fn seed(var: &str) -> u64 {
    let seed = std::env::var(var)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("seed: {var}={seed}");
    seed
}

/// A small xorshift generator over a [`seed`].
pub fn next(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

/// One line of the proof's figures (kill points, faults, fuzz executions, secrets found...):
/// printed now, and appended to target/vespa-proof.txt, which the test command prints at its
/// end, since cargo shows nothing of a passing test.
pub fn figure(line: &str) {
    eprintln!("{line}");
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/vespa-proof.txt");
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = writeln!(f, "{line}");
    }
}

/// One measure for `scripts/bench.sh`'s summary: a line `SUMMARY {json}` on stdout, the agent's
/// figure beside its anchor's (the tool a user would otherwise use, or the physical limit), in
/// `unit`; the script gathers them into one table and target/bench/summary.json.
pub fn summary(measure: &str, agent: f64, anchor: f64, anchor_is: &str, unit: &str) {
    let line = serde_json::json!({
        "measure": measure,
        "agent": agent,
        "anchor": anchor,
        "anchor_is": anchor_is,
        "unit": unit,
    });
    println!("SUMMARY {line}");
}
