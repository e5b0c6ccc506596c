//! A VESPA node booted for real: a Debian 12 rootfs (debootstrap, cached by
//! scripts/nspawn-rootfs.sh) under systemd-nspawn, which the cloud-init template turns into a
//! serving DaCHS node with the agent's .deb, following a smart-HTTP git server on the host.
//!
//! The container shares the host's loopback, where the host runs its own PostgreSQL and DaCHS
//! (the other tests' peers) on 5432 and 8080. The rootfs is seeded so that the node's own run on
//! 5433 and 8090 (../shared/peers/nspawn-dachs.md, recipe 1); a real VM needs none of that.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard, Once, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::git::{GitServer, TOKEN};
use super::{eventually, free_port, have, httpd, missing};

pub const NODE_PG_PORT: u16 = 5433;
pub const NODE_DACHS_PORT: u16 = 8090;
/// `SELECT COUNT(*)` of the example table once its granules are in: 4 files of 5 rows.
pub const EXAMPLE_ROWS: &str = "20";

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub fn is_root() -> bool {
    (unsafe { libc::geteuid() }) == 0
}

/// Runs a command; panics with its output when it fails.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The package, built once per test binary with cargo-deb (release profile), at `revision`.
pub fn deb(revision: &str) -> Option<PathBuf> {
    static BUILT: OnceLock<Option<()>> = OnceLock::new();
    let cargo_deb = dirs_cargo_bin("cargo-deb");
    if !have("cargo-deb") && cargo_deb.is_none() {
        missing("cargo-deb (`cargo install cargo-deb --locked`; the test command installs it)");
        return None;
    }
    // scripts/run-tests.py sets RUSTC_BOOTSTRAP for libtest's --report-time; cargo counts it in
    // every fingerprint, so the release build the test command made would be made again.
    let cargo = || {
        let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        c.current_dir(root()).env_remove("RUSTC_BOOTSTRAP");
        c
    };
    let _one_writer = super::lock::alone("deb");
    BUILT.get_or_init(|| {
        run(cargo().args(["deb", "-p", "vespa-agent", "--quiet"]));
        Some(())
    });
    let out = root().join("target/debian");
    let deb = out.join(format!("vespa-agent_0.1.0-{revision}_amd64.deb"));
    if revision != "1" {
        run(cargo().args([
            "deb",
            "-p",
            "vespa-agent",
            "--no-build",
            "--quiet",
            "--deb-revision",
            revision,
        ]));
    }
    assert!(deb.exists(), "{} was not built", deb.display());
    Some(deb)
}

pub fn dirs_cargo_bin(name: &str) -> Option<PathBuf> {
    let p = PathBuf::from(std::env::var_os("HOME")?)
        .join(".cargo/bin")
        .join(name);
    p.exists().then_some(p)
}

/// The .debs the nodes' apt downloads (PostgreSQL, DaCHS and their dependencies), kept between
/// boots on this machine beside the rootfs cache: each node still installs them with apt, as a
/// VM does, without fetching them again. One node runs at a time, so one apt uses it at a time.
fn apt_archives() -> PathBuf {
    let dir = PathBuf::from(
        std::env::var("VESPA_NSPAWN_CACHE")
            .unwrap_or_else(|_| "/var/cache/vespa-agent-tests".into()),
    )
    .join("apt-archives");
    std::fs::create_dir_all(dir.join("partial")).unwrap();
    dir
}

/// A Debian 12 rootfs booted with systemd-nspawn; powered off and deleted when dropped.
pub struct Node {
    pub dir: PathBuf,
    log: PathBuf,
    nspawn: Child,
    pub leader: u32,
}

impl Node {
    /// A fresh copy of the cached base rootfs (scripts/nspawn-rootfs.sh), not booted yet.
    pub fn prepare(name: &str) -> PathBuf {
        let base = run(Command::new("bash").arg(root().join("scripts/nspawn-rootfs.sh")));
        let base = base.trim().lines().last().unwrap().to_owned();
        let dir = PathBuf::from(format!("/var/tmp/vespa-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        run(Command::new("cp").arg("-a").arg(&base).arg(&dir));
        dir
    }

    pub fn boot(dir: PathBuf) -> Node {
        let log = dir.with_extension("console.log");
        let console = std::fs::File::create(&log).unwrap();
        let nspawn = Command::new("systemd-nspawn")
            .args([
                "--register=no",
                "--keep-unit",
                "-q",
                "-b",
                "--console=read-only",
            ])
            .arg("-D")
            .arg(&dir)
            .arg(format!(
                "--bind={}:/var/cache/apt/archives",
                apt_archives().display()
            ))
            .stdin(Stdio::null())
            .stdout(console.try_clone().unwrap())
            .stderr(console)
            .spawn()
            .unwrap();
        let parent = nspawn.id().to_string();
        let leader = eventually("the container's systemd", Duration::from_secs(30), || {
            let out = Command::new("pgrep")
                .args(["-P", &parent, "-x", "systemd"])
                .output()
                .ok()?;
            String::from_utf8_lossy(&out.stdout).trim().parse().ok()
        });
        let node = Node {
            dir,
            log,
            nspawn,
            leader,
        };
        // Until D-Bus is up inside, systemctl cannot connect at all.
        eventually("systemd inside answering", Duration::from_secs(60), || {
            node.cmd(&["systemctl", "is-system-running"])
                .output()
                .ok()
                .filter(|o| !o.stdout.is_empty())
        });
        node
    }

    /// A command inside the container (all its namespaces; note: with the host's capabilities).
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("nsenter");
        c.args(["-t", &self.leader.to_string(), "-a"]).args(args);
        c.stdin(Stdio::null());
        c
    }

    pub fn sh(&self, script: &str) -> String {
        run(&mut self.cmd(&["sh", "-c", script]))
    }

    pub fn try_sh(&self, script: &str) -> (bool, String) {
        let out = self.cmd(&["sh", "-c", script]).output().unwrap();
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stderr));
        (out.status.success(), text)
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel.trim_start_matches('/'))
    }

    pub fn show(&self, unit: &str, prop: &str) -> String {
        self.sh(&format!("systemctl show -P {prop} {unit}"))
            .trim()
            .to_owned()
    }

    /// What the node's journal says about the agent, for a failing assertion.
    pub fn journal(&self) -> String {
        self.try_sh("journalctl -u vespa-agent --no-pager -n 80; journalctl -u cloud-final --no-pager -n 40; tail -n 60 /var/log/cloud-init-output.log").1
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.cmd(&["systemctl", "poweroff"]).output();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.nspawn.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        if let Ok(None) = self.nspawn.try_wait() {
            let _ = Command::new("kill")
                .args(["-KILL", &self.leader.to_string()])
                .status();
            let _ = self.nspawn.kill();
            let _ = self.nspawn.wait();
        }
        if std::env::var_os("VESPA_KEEP_NODE").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
            let _ = std::fs::remove_file(&self.log);
        }
    }
}

pub fn write(path: &Path, body: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, body).unwrap();
}

/// The test-only seeds of the rootfs: the node's PostgreSQL and DaCHS on ports of their own,
/// the agent told so, and the example's granules in the local directory its service names.
pub fn seed_ports_and_granules(dir: &Path, agent_port: u16) {
    let at = |rel: &str| dir.join(rel);
    write(
        &at("etc/postgresql-common/createcluster.d/50-port.conf"),
        &format!("port = {NODE_PG_PORT}\n"),
    );
    write(
        &at("etc/gavo-profiles/dsn"),
        &format!("database = gavo\nhost = localhost\nport = {NODE_PG_PORT}\n"),
    );
    write(
        &at("etc/gavo.rc"),
        &format!(
            "[web]\nserverPort: {NODE_DACHS_PORT}\nserverURL: http://localhost:{NODE_DACHS_PORT}\n\n\
             [db]\nprofilePath: /etc/gavo-profiles:~/.gavo:$configDir\n"
        ),
    );
    // For `su dachsroot -c "dachs init"` in DaCHS's postinst (pam_env reads it).
    write(&at("etc/environment"), &format!("PGPORT={NODE_PG_PORT}\n"));
    write(
        &at("etc/vespa-agent/agent.d/10-bootstrap-test.toml"),
        &format!(
            "# The bootstrap test: this node's DaCHS is on {NODE_DACHS_PORT} (the host has 8080).\n\
             [dachs]\nurl = \"http://127.0.0.1:{NODE_DACHS_PORT}\"\n\n\
             [http]\nlisten = \"127.0.0.1:{agent_port}\"\n\n\
             [reconcile]\ninterval = \"15s\"\n\n\
             # The host's disk is shared; the default reserve (1G) stalled every node on a CI\n\
             # machine that had 0.9 GB free.\n\
             [granules]\ndisk-reserve = \"32M\"\n"
        ),
    );
    let granules = at("srv/vespa-example/granules/epnlab");
    std::fs::create_dir_all(&granules).unwrap();
    for f in std::fs::read_dir(root().join("examples/granules/epnlab")).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, granules.join(f.file_name().unwrap())).unwrap();
    }
}

/// cloud-init's NoCloud seed: the template rendered by cloud-init/render.sh, as an operator
/// would for `openstack server create --user-data`.
pub fn seed_cloud_init(dir: &Path, source_url: &str, deb_url: &str) {
    let token = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(token.path(), TOKEN).unwrap();
    let user_data = run(Command::new("bash")
        .arg(root().join("cloud-init/render.sh"))
        .env("VESPA_SOURCE_URL", source_url)
        .env("VESPA_GITLAB_TOKEN_FILE", token.path())
        .env("VESPA_AGENT_DEB_URL", deb_url)
        .env("VESPA_GITLAB_REPORT", "false"));
    let seed = dir.join("var/lib/cloud/seed/nocloud");
    write(&seed.join("user-data"), &user_data);
    write(
        &seed.join("meta-data"),
        &format!(
            "instance-id: {}\nlocal-hostname: vespa-node\n",
            instance_id()
        ),
    );
}

pub fn instance_id() -> String {
    format!("iid-vespa-{}", std::process::id())
}

/// Serves the files of `dir` over HTTP/1.1 on loopback, as a download server would the .deb.
pub fn file_server(dir: PathBuf) -> httpd::Listener {
    httpd::Listener::start(move |mut conn| {
        let Some((head, _)) = httpd::read_request(&mut conn)? else {
            return Ok(());
        };
        let path = head.split_whitespace().nth(1).unwrap_or("/");
        let name = path.trim_start_matches('/');
        match std::fs::read(dir.join(name)) {
            Ok(body) if !name.contains('/') && !name.is_empty() => httpd::respond(
                &mut conn,
                200,
                "application/vnd.debian.binary-package",
                &body,
            ),
            _ => httpd::respond(&mut conn, 404, "text/plain", b"not found"),
        }
    })
}

/// `SELECT COUNT(*)` of the example table from the host, or why not.
pub fn tap_count(port: u16) -> Result<String, String> {
    tap_answer(port, "SELECT COUNT(*) AS n FROM epnlab.epn_core")
}

/// The one value `n` of an ADQL query to the node's DaCHS, from the host, or why not.
pub fn tap_answer(port: u16, adql: &str) -> Result<String, String> {
    let out = Command::new("curl")
        .args([
            "-s",
            "-m",
            "10",
            &format!("http://127.0.0.1:{port}/tap/sync"),
        ])
        .args([
            "--data-urlencode",
            "REQUEST=doQuery",
            "--data-urlencode",
            "LANG=ADQL",
        ])
        .args(["--data-urlencode", "RESPONSEFORMAT=csv"])
        .args(["--data-urlencode", &format!("QUERY={adql}")])
        .output()
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    match (lines.next(), lines.next()) {
        (Some("n"), Some(n)) => Ok(n.trim().to_owned()),
        _ => Err(text.chars().take(200).collect()),
    }
}

pub fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// Realtime (seconds) of the first journal entry of the agent's unit with `field` = `value`.
pub fn journal_time(node: &Node, filter: &str) -> Option<f64> {
    let out = node.try_sh(&format!(
        "journalctl -u vespa-agent -o json --no-pager {filter} | head -n 1"
    ));
    let v: serde_json::Value = serde_json::from_str(out.1.lines().next()?).ok()?;
    let us: f64 = v["__REALTIME_TIMESTAMP"].as_str()?.parse().ok()?;
    Some(us / 1e6)
}

/// The offline stand-in of the UAT vocabulary, from scripts/setup-dachs.sh, owned like the cache.
pub fn put_uat_stub(cache: &Path) {
    use std::os::unix::fs::MetadataExt;
    let uat = cache.join("http:=2F=2Fwww.ivoa.net=2Frdf=2Fuat");
    let setup = std::fs::read_to_string(root().join("scripts/setup-dachs.sh")).unwrap();
    let json = setup
        .split("<<'J'\n")
        .nth(1)
        .and_then(|s| s.split("\nJ\n").next())
        .expect("the UAT stub in setup-dachs.sh");
    std::fs::write(&uat, json).unwrap();
    let meta = std::fs::metadata(cache).unwrap();
    std::os::unix::fs::chown(&uat, Some(meta.uid()), Some(meta.gid())).unwrap();
}

/// A node that cloud-init set up and that serves the example's rows over TAP, with the peers it
/// needs kept alive.
pub struct Served {
    pub node: Node,
    pub git: GitServer,
    pub server: httpd::Listener,
    pub downloads: tempfile::TempDir,
    /// Held while the node runs: two nodes, of one test binary or of two, would share the
    /// host's network and so the node's PostgreSQL and DaCHS ports. Dropped last.
    pub one_at_a_time: super::lock::Hold,
}

/// Boots a fresh node and waits until it serves the example; `None` (after failing under CI)
/// when something it needs is missing. Prints the times from boot to the first TAP answer.
pub fn serving_node(name: &str) -> Option<Served> {
    let one_at_a_time = super::lock::alone("node");
    if !is_root() {
        missing("root (systemd-nspawn boots the node)");
        return None;
    }
    for bin in ["systemd-nspawn", "debootstrap", "nsenter", "curl"] {
        if !have(bin) {
            missing(bin);
            return None;
        }
    }
    let deb1 = deb("1")?;
    let git = GitServer::start()?;
    git.commit_example(&[]);
    // The node's DaCHS answers on its own port: `dachs serve expireRDs` calls serverURL, and
    // on the shared loopback 8080 is the host's DaCHS.
    let service = std::fs::read_to_string(git.work().join("vespa-service.toml")).unwrap();
    let service = service.replace(
        "http://localhost:8080",
        &format!("http://localhost:{NODE_DACHS_PORT}"),
    );
    assert!(service.contains(&format!(":{NODE_DACHS_PORT}\"")));
    git.commit(
        &[("vespa-service.toml", Some(&service))],
        "this node's DaCHS port",
        &[],
    );
    git.push();
    let downloads = tempfile::tempdir().unwrap();
    std::fs::copy(&deb1, downloads.path().join("vespa-agent.deb")).unwrap();
    let server = file_server(downloads.path().to_owned());

    let dir = Node::prepare(name);
    let agent_port = free_port();
    seed_ports_and_granules(&dir, agent_port);
    seed_cloud_init(
        &dir,
        &git.url(),
        &format!("http://127.0.0.1:{}/vespa-agent.deb", server.port),
    );

    let t_boot = now();
    let node = Node::boot(dir);
    let report = |what: &str| format!("{what}\n--- node journal ---\n{}", node.journal());

    // DaCHS resolves the UAT vocabulary of an ivo_managed RD on the internet, which this machine
    // has not: put the stub of scripts/setup-dachs.sh in DaCHS's cache as soon as DaCHS made it
    // (the package's postinst), before the agent is even installed. A real VM fetches it.
    // 1. Meanwhile, cloud-init runs to its end.
    let cache = node.path("var/gavo/cache");
    // instance/ is an absolute link, meaningless from the host: name the instance's directory.
    let finished = node.path(&format!(
        "var/lib/cloud/instances/{}/boot-finished",
        instance_id()
    ));
    let mut stubbed = false;
    let t_cloud = eventually("cloud-init to finish", Duration::from_secs(900), || {
        if !stubbed && cache.is_dir() {
            put_uat_stub(&cache);
            stubbed = true;
        }
        finished.exists().then(now)
    });
    let (_, status) = node.try_sh("cloud-init status --long");
    assert!(status.contains("status: done"), "{}", report(&status));

    // 2. The agent is active under real systemd, as the unit declares it.
    let active = node.show("vespa-agent", "ActiveState");
    assert_eq!(active, "active", "{}", report("vespa-agent is not active"));
    assert_eq!(node.show("vespa-agent", "Type"), "notify");
    // The agent's first pass writes gavo.rc and restarts DaCHS: it may be on its way back.
    eventually("dachs.service active", Duration::from_secs(120), || {
        (node.show("dachs", "ActiveState") == "active").then_some(())
    });
    // DaCHS's admin password is in gavo.rc, which must stay unreadable to others.
    let rc = node.sh("stat -c %a:%G /etc/gavo.rc; grep -c '^adminpasswd' /etc/gavo.rc");
    assert_eq!(rc.split_whitespace().collect::<Vec<_>>(), ["640:gavo", "1"]);
    let pg = node.sh("dpkg-query -W -f '${Version}' postgresql-15");
    let (newer, _) = node.try_sh(&format!(
        "dpkg --compare-versions '{pg}' ge 15.20-0+deb12u1"
    ));
    assert!(newer, "the node got PostgreSQL {pg}, not 15.20 or later");

    // 3. The example's rows, through TAP from outside the node.
    let t_tap = eventually(
        "the example's rows over TAP",
        Duration::from_secs(600),
        || (tap_count(NODE_DACHS_PORT).as_deref() == Ok(EXAMPLE_ROWS)).then(now),
    );
    let pulled = git.requests().iter().any(|r| r.contains("git-upload-pack"));
    assert!(pulled, "the agent never fetched from the git server");

    // The rows can be visible a moment before the agent logs the import that put them there.
    let logged = |filter: &str| {
        eventually(filter, Duration::from_secs(30), || {
            journal_time(&node, filter)
        })
    };
    let t_agent = logged("");
    let t_applied = logged(&format!(
        "MESSAGE_ID={}",
        vespa_agent::journal::REVISION_APPLIED
    ));
    let t_imported = logged(&format!(
        "MESSAGE_ID={}",
        vespa_agent::journal::IMPORT_FINISHED
    ));
    eprintln!(
        "BOOTSTRAP TIMES (s from container start): agent started {:.1} (cloud-init, apt: \
         PostgreSQL, DaCHS, the agent); revision applied {:.1} (fetch and deploy: {:.1}); \
         granules imported {:.1} (import: {:.1}); cloud-init done {:.1}; first TAP answer with \
         the rows {:.1}",
        t_agent - t_boot,
        t_applied - t_boot,
        t_applied - t_agent,
        t_imported - t_boot,
        t_imported - t_applied,
        t_cloud - t_boot,
        t_tap - t_boot,
    );
    Some(Served {
        node,
        git,
        server,
        downloads,
        one_at_a_time,
    })
}

/// One serving node for the tests of a test binary that take it in turn, since each boot costs
/// minutes of both cores (cloud-init installs PostgreSQL and DaCHS). A test has it alone while
/// it holds the guard and must leave it serving as it found it; one that fails (the guard
/// poisoned) leaves a node in an unknown state, so the next test gets a freshly booted one. It
/// is powered off when the test binary exits.
pub fn shared_serving_node(name: &str) -> Option<SharedNode> {
    static SHARED: Mutex<Option<Served>> = Mutex::new(None);
    extern "C" fn power_off() {
        // try_lock: a test thread still holding the node at exit must not hang the exit.
        let node = match SHARED.try_lock() {
            Ok(mut g) => g.take(),
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner().take(),
            Err(std::sync::TryLockError::WouldBlock) => None,
        };
        drop(node);
    }
    static AT_EXIT: Once = Once::new();
    let mut guard = match SHARED.lock() {
        Ok(g) => g,
        Err(poisoned) => {
            let mut g = poisoned.into_inner();
            eprintln!("the shared node is left from a test that failed: booting a new one");
            drop(g.take());
            SHARED.clear_poison();
            g
        }
    };
    if guard.is_none() {
        *guard = Some(serving_node(name)?);
        // SAFETY: atexit(3) with a function that takes no arguments and does not unwind out.
        AT_EXIT.call_once(|| unsafe {
            libc::atexit(power_off);
        });
    }
    Some(SharedNode(guard))
}

/// A test's turn with the shared node; see [`shared_serving_node`].
pub struct SharedNode(MutexGuard<'static, Option<Served>>);

impl std::ops::Deref for SharedNode {
    type Target = Served;
    fn deref(&self) -> &Served {
        self.0
            .as_ref()
            .expect("a shared node is booted before it is handed out")
    }
}
