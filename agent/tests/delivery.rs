//! Delivery, proven on real parts: the .deb (cargo-deb) passes lintian; the units pass
//! `systemd-analyze security` and `verify`; and a Debian 12 booted from nothing under
//! systemd-nspawn becomes a serving DaCHS node through the cloud-init template alone: cloud-init
//! (NoCloud) installs PostgreSQL 15 (15.20 from bookworm-security, with the pg_sphere fix),
//! DaCHS and the package; the agent, under real systemd, pulls the example service from a
//! smart-HTTP git server on the host and imports its granules; a TAP query from the host gets
//! the rows. Then reload, the watchdog, stop, upgrade and purge, each under systemd.
//!
//! The container shares the host's loopback, where the host runs its own PostgreSQL and DaCHS
//! (the other tests' peers) on 5432 and 8080. The test seeds the rootfs so the node's own run on
//! 5433 and 8090 (../shared/peers/nspawn-dachs.md, recipe 1); a real VM needs none of that.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::git::{GitServer, TOKEN};
use common::{eventually, free_port, have, httpd, missing};

const NODE_PG_PORT: u16 = 5433;
const NODE_DACHS_PORT: u16 = 8090;
/// `SELECT COUNT(*)` of the example table once its granules are in: 4 files of 5 rows.
const EXAMPLE_ROWS: &str = "20";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn is_root() -> bool {
    (unsafe { libc::geteuid() }) == 0
}

/// Runs a command; panics with its output when it fails.
fn run(cmd: &mut Command) -> String {
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
fn deb(revision: &str) -> Option<PathBuf> {
    static BUILT: OnceLock<Option<()>> = OnceLock::new();
    let cargo_deb = dirs_cargo_bin("cargo-deb");
    if !have("cargo-deb") && cargo_deb.is_none() {
        missing("cargo-deb (`cargo install cargo-deb --locked`; the test command installs it)");
        return None;
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    BUILT.get_or_init(|| {
        run(Command::new(&cargo)
            .current_dir(root())
            .args(["deb", "-p", "vespa-agent", "--quiet"]));
        Some(())
    });
    let out = root().join("target/debian");
    let deb = out.join(format!("vespa-agent_0.1.0-{revision}_amd64.deb"));
    if revision != "1" {
        run(Command::new(&cargo).current_dir(root()).args([
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

fn dirs_cargo_bin(name: &str) -> Option<PathBuf> {
    let p = PathBuf::from(std::env::var_os("HOME")?)
        .join(".cargo/bin")
        .join(name);
    p.exists().then_some(p)
}

#[test]
fn the_package_is_lintian_clean() {
    if !have("lintian") {
        return missing("lintian");
    }
    let Some(deb) = deb("1") else { return };
    // Informational tags are printed for the record; any warning or error fails. The one
    // override the package ships is justified in packaging/lintian/vespa-agent.
    let out = Command::new("lintian")
        .args([
            "--allow-root",
            "-I",
            "-E",
            "--pedantic",
            "--fail-on",
            "warning",
        ])
        .arg(&deb)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!("{text}");
    assert!(out.status.success(), "lintian: {text}");
    assert!(!text.lines().any(|l| l.starts_with(['W', 'E'])), "{text}");
}

#[test]
fn the_daemon_unit_is_hardened_to_an_exposure_of_at_most_2() {
    if !have("systemd-analyze") {
        return missing("systemd-analyze");
    }
    let unit = root().join("packaging/systemd/vespa-agent.service");
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--threshold=20", "--no-pager"])
        .arg(&unit)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let level = text
        .lines()
        .find_map(|l| l.split("vespa-agent.service: ").nth(1))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{text}"));
    eprintln!("exposure {level}");
    assert!(level <= 2.0, "exposure {level}:\n{text}");
    assert!(out.status.success(), "{text}");
}

/// A Debian 12 rootfs booted with systemd-nspawn; powered off and deleted when dropped.
struct Node {
    dir: PathBuf,
    log: PathBuf,
    nspawn: Child,
    leader: u32,
}

impl Node {
    /// A fresh copy of the cached base rootfs (scripts/nspawn-rootfs.sh), not booted yet.
    fn prepare(name: &str) -> PathBuf {
        let base = run(Command::new("bash").arg(root().join("scripts/nspawn-rootfs.sh")));
        let base = base.trim().lines().last().unwrap().to_owned();
        let dir = PathBuf::from(format!("/var/tmp/vespa-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        run(Command::new("cp").arg("-a").arg(&base).arg(&dir));
        dir
    }

    fn boot(dir: PathBuf) -> Node {
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
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("nsenter");
        c.args(["-t", &self.leader.to_string(), "-a"]).args(args);
        c.stdin(Stdio::null());
        c
    }

    fn sh(&self, script: &str) -> String {
        run(&mut self.cmd(&["sh", "-c", script]))
    }

    fn try_sh(&self, script: &str) -> (bool, String) {
        let out = self.cmd(&["sh", "-c", script]).output().unwrap();
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stderr));
        (out.status.success(), text)
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel.trim_start_matches('/'))
    }

    fn show(&self, unit: &str, prop: &str) -> String {
        self.sh(&format!("systemctl show -P {prop} {unit}"))
            .trim()
            .to_owned()
    }

    /// What the node's journal says about the agent, for a failing assertion.
    fn journal(&self) -> String {
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

fn write(path: &Path, body: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, body).unwrap();
}

/// The test-only seeds of the rootfs: the node's PostgreSQL and DaCHS on ports of their own,
/// the agent told so, and the example's granules in the local directory its service names.
fn seed_ports_and_granules(dir: &Path, agent_port: u16) {
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
             [reconcile]\ninterval = \"15s\"\n"
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
fn seed_cloud_init(dir: &Path, source_url: &str, deb_url: &str) {
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

fn instance_id() -> String {
    format!("iid-vespa-{}", std::process::id())
}

/// Serves the files of `dir` over HTTP/1.1 on loopback, as a download server would the .deb.
fn file_server(dir: PathBuf) -> httpd::Listener {
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
fn tap_count(port: u16) -> Result<String, String> {
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
        .args([
            "--data-urlencode",
            "QUERY=SELECT COUNT(*) AS n FROM epnlab.epn_core",
        ])
        .output()
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    match (lines.next(), lines.next()) {
        (Some("n"), Some(n)) => Ok(n.trim().to_owned()),
        _ => Err(text.chars().take(200).collect()),
    }
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// Realtime (seconds) of the first journal entry of the agent's unit with `field` = `value`.
fn journal_time(node: &Node, filter: &str) -> Option<f64> {
    let out = node.try_sh(&format!(
        "journalctl -u vespa-agent -o json --no-pager {filter} | head -n 1"
    ));
    let v: serde_json::Value = serde_json::from_str(out.1.lines().next()?).ok()?;
    let us: f64 = v["__REALTIME_TIMESTAMP"].as_str()?.parse().ok()?;
    Some(us / 1e6)
}

/// The offline stand-in of the UAT vocabulary, from scripts/setup-dachs.sh, owned like the cache.
fn put_uat_stub(cache: &Path) {
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

#[test]
fn a_fresh_debian_becomes_a_serving_node_through_cloud_init() {
    if !is_root() {
        return missing("root (systemd-nspawn boots the node)");
    }
    for bin in ["systemd-nspawn", "debootstrap", "nsenter", "curl"] {
        if !have(bin) {
            return missing(bin);
        }
    }
    let Some(deb1) = deb("1") else { return };
    let Some(git) = GitServer::start() else {
        return;
    };
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

    let dir = Node::prepare("bootstrap");
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
    assert_eq!(node.show("dachs", "ActiveState"), "active");
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

    // 4. The installed units are what systemd-analyze verify accepts without a word.
    let (ok, out) = node.try_sh(
        "systemd-analyze verify --man=no vespa-agent.service vespa-agent-rebuild.service 2>&1",
    );
    assert!(
        ok && out.trim().is_empty(),
        "systemd-analyze verify:\n{out}"
    );
    // The token reached the agent as a credential, and nowhere readable by others.
    let (_, creds) = node.try_sh(
        "ls /run/credentials/vespa-agent.service/; stat -c %a /etc/vespa-agent/credentials/gitlab-token",
    );
    assert!(
        creds.contains("vespa_gitlab-token") && creds.contains("600"),
        "{creds}"
    );

    // 5. reload: SIGHUP, the same process, the new file read.
    let pid = node.show("vespa-agent", "MainPID");
    node.sh(
        "printf '[reconcile]\\ninterval = \"20s\"\\n' > /etc/vespa-agent/agent.d/20-reload.toml",
    );
    node.sh("systemctl reload vespa-agent");
    eventually("the reload in the journal", Duration::from_secs(30), || {
        node.try_sh("journalctl -u vespa-agent --no-pager | grep -q 'configuration reloaded'")
            .0
            .then_some(())
    });
    assert_eq!(node.show("vespa-agent", "MainPID"), pid);
    assert_eq!(node.show("vespa-agent", "ActiveState"), "active");

    // 6. The watchdog: a loop stalled on purpose stops feeding it, and systemd restarts the
    //    service. The hook, the short watchdog and the short stall timeout are a test drop-in.
    node.sh(
        "mkdir -p /run/systemd/system/vespa-agent.service.d && \
         printf '[Service]\\nWatchdogSec=3s\\nEnvironment=VESPA_AGENT_DEBUG_STALL=1h\\n' \
           > /run/systemd/system/vespa-agent.service.d/stall.conf && \
         printf '[reconcile]\\nstall-timeout = \"2s\"\\n' > /etc/vespa-agent/agent.d/30-stall.toml && \
         systemctl daemon-reload && systemctl restart vespa-agent",
    );
    eventually(
        "systemd's watchdog to fire",
        Duration::from_secs(120),
        || {
            node.try_sh("journalctl -u vespa-agent --no-pager | grep -q 'Watchdog timeout'")
                .0
                .then_some(())
        },
    );
    eventually(
        "the restart after the watchdog",
        Duration::from_secs(60),
        || {
            let n: u32 = node.show("vespa-agent", "NRestarts").parse().ok()?;
            (n >= 1).then_some(())
        },
    );
    node.sh(
        "rm -r /run/systemd/system/vespa-agent.service.d /etc/vespa-agent/agent.d/30-stall.toml && \
         systemctl daemon-reload && systemctl reset-failed vespa-agent; systemctl restart vespa-agent",
    );
    assert_eq!(node.show("vespa-agent", "ActiveState"), "active");

    // 7. stop: clean, within its timeout, and DaCHS goes on serving the last good state.
    let t = Instant::now();
    node.sh("systemctl stop vespa-agent");
    assert!(t.elapsed() < Duration::from_secs(60));
    assert_eq!(node.show("vespa-agent", "ActiveState"), "inactive");
    assert_eq!(node.show("vespa-agent", "Result"), "success");
    assert_eq!(tap_count(NODE_DACHS_PORT).as_deref(), Ok(EXAMPLE_ROWS));
    node.sh("systemctl start vespa-agent");

    // 8. upgrade: a newer package restarts the running service.
    let Some(deb2) = deb("2") else { return };
    std::fs::copy(&deb2, downloads.path().join("vespa-agent-2.deb")).unwrap();
    let before = node.show("vespa-agent", "MainPID");
    node.sh(&format!(
        "curl -fsS -o /var/cache/vespa-agent-2.deb http://127.0.0.1:{}/vespa-agent-2.deb && \
         DEBIAN_FRONTEND=noninteractive apt-get install -y -q /var/cache/vespa-agent-2.deb",
        server.port
    ));
    assert_eq!(
        node.sh("dpkg-query -W -f '${Version}' vespa-agent"),
        "0.1.0-2"
    );
    eventually(
        "the upgraded agent running",
        Duration::from_secs(60),
        || {
            let pid = node.show("vespa-agent", "MainPID");
            (pid != before && pid != "0" && node.show("vespa-agent", "ActiveState") == "active")
                .then_some(())
        },
    );

    // 9. purge: the service, its state and its configuration go; DaCHS and its data stay.
    node.sh("DEBIAN_FRONTEND=noninteractive apt-get purge -y -q vespa-agent");
    let (_, units) = node.try_sh("systemctl list-unit-files 'vespa-agent*' --no-legend");
    assert!(units.trim().is_empty(), "units left: {units}");
    for gone in [
        "var/lib/vespa-agent",
        "etc/vespa-agent",
        "usr/bin/vespa-agent",
    ] {
        assert!(!node.path(gone).exists(), "{gone} is left after purge");
    }
    let (running, _) = node.try_sh("pgrep -x vespa-agent");
    assert!(!running, "an agent process survived the purge");
    assert_eq!(tap_count(NODE_DACHS_PORT).as_deref(), Ok(EXAMPLE_ROWS));
}
