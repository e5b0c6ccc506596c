//! Delivery, proven on real parts: the .deb (cargo-deb) passes lintian; the units pass
//! `systemd-analyze security` and `verify`; and a Debian 12 booted from nothing under
//! systemd-nspawn becomes a serving DaCHS node through the cloud-init template alone: cloud-init
//! (NoCloud) installs PostgreSQL 15 (15.20 from bookworm-security, with the pg_sphere fix),
//! DaCHS and the package; the agent, under real systemd, pulls the example service from a
//! smart-HTTP git server on the host and imports its granules; a TAP query from the host gets
//! the rows. Then reload, the watchdog, SIGKILL at seeded moments of passes, stop, upgrade and
//! purge, each under systemd.
//!
//! The node is booted by tests/src/node.rs.

use std::process::Command;
use std::time::{Duration, Instant};

use harness::churn::Prober;
use harness::git::GitServer;
use harness::node::*;
use harness::{env_usize, eventually, figure, have, missing, next, post, private_file, seed};

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

#[test]
fn a_fresh_debian_becomes_a_serving_node_through_cloud_init() {
    let Some(Served {
        node,
        git,
        server,
        downloads,
        one_at_a_time: _one_at_a_time,
    }) = serving_node("bootstrap")
    else {
        return;
    };

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
    // ... and nowhere in the agent's or DaCHS's journal (every field), nor in the daemon's
    // arguments or environment.
    let (_, leaks) = node.try_sh(&format!(
        "pid=$(systemctl show -P MainPID vespa-agent); \
         {{ journalctl -u vespa-agent -u dachs -o export; \
            cat /proc/$pid/cmdline /proc/$pid/environ; }} | grep -ac '{}'",
        harness::git::TOKEN
    ));
    assert_eq!(
        leaks.trim(),
        "0",
        "the token leaked into the journal, argv or environment"
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

    // 6b. SIGKILL from systemd at seeded moments of passes (see the function).
    let rows = killed_under_systemd(&node, &git);

    // 6c. Every secret this node holds (the repository token, the webhook secret, DaCHS's admin
    //     password), after all of the above: in no journal field of any unit, no process's
    //     arguments or environment, not in the agent's state store, nothing it serves over HTTP.
    let admin = node.sh("sed -n 's/^adminpasswd *[:=] *//p' /etc/gavo.rc");
    let admin = admin.trim().to_owned();
    assert!(admin.len() >= 8, "no admin password in gavo.rc");
    // The pattern comes from a file: in the scan's own arguments it would find itself.
    let patterns = node.path("var/tmp/secret-patterns");
    let hits = |secret: &str| {
        std::fs::write(&patterns, format!("{secret}\n")).unwrap();
        let (_, n) = node.try_sh(
            "{ journalctl -o export; \
               for p in /proc/[0-9]*; do cat $p/cmdline $p/environ 2>/dev/null; echo; done; \
               cat /var/lib/vespa-agent/state.db; \
               listen=$(sed -n 's/^listen = \"\\(.*\\)\"/\\1/p' /etc/vespa-agent/agent.d/10-bootstrap-test.toml); \
               for u in metrics status healthz readyz; do curl -s http://$listen/$u; done; } \
             | grep -acFf /var/tmp/secret-patterns",
        );
        n.trim().parse::<u32>().ok()
    };
    // The scan finds what is there: a line put in the journal, a metric's name in /metrics.
    node.sh("echo vespa-scan-canary-3f9c | systemd-cat -t scan-canary");
    eventually("the canary in the journal", Duration::from_secs(10), || {
        hits("vespa-scan-canary-3f9c").filter(|n| *n >= 1)
    });
    assert!(
        hits("vespa_agent_reconcile_passes_total").is_some_and(|n| n >= 1),
        "the scan misses /metrics"
    );
    for (name, secret) in [
        ("the token", harness::git::TOKEN),
        ("the webhook secret", WEBHOOK_SECRET),
        ("DaCHS's admin password", admin.as_str()),
    ] {
        assert_eq!(hits(secret), Some(0), "{name} leaked on the node");
    }
    std::fs::remove_file(&patterns).unwrap();
    figure(
        "NODE SECRETS: 3 secrets (token, webhook secret, DaCHS admin password) in the whole \
            journal export, every process's argv and environment, the state store and 4 \
            endpoints: 0 found",
    );

    // 7. stop: clean, within its timeout, and DaCHS goes on serving the last good state.
    let t = Instant::now();
    node.sh("systemctl stop vespa-agent");
    assert!(t.elapsed() < Duration::from_secs(60));
    assert_eq!(node.show("vespa-agent", "ActiveState"), "inactive");
    assert_eq!(node.show("vespa-agent", "Result"), "success");
    assert_eq!(tap_count(NODE_DACHS_PORT).as_deref(), Ok(rows.as_str()));
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
    assert_eq!(tap_count(NODE_DACHS_PORT).as_deref(), Ok(rows.as_str()));
}

const WEBHOOK_SECRET: &str = "node-kill-webhook-secret";

/// The daemon SIGKILLed by systemd (`systemctl kill -s KILL`: the whole service, a running
/// `dachs imp` too, as the OOM killer would) at seeded moments of passes that each bring a new
/// commit and a new granule file, `VESPA_NODE_KILLS` times (default 8). Each time systemd starts
/// it again (Restart=on-failure) and it goes on; at the end the node serves every granule
/// exactly once, the state store is sound, `current` names the newest commit, nothing temporary
/// is left, and TAP answered throughout.
/// Returns the rows served after.
fn killed_under_systemd(node: &Node, git: &GitServer) -> String {
    const PUSH: &str = r#"{"object_kind":"push","ref":"refs/heads/main"}"#;
    let kills = env_usize("VESPA_NODE_KILLS", 8);
    let mut seed = seed("VESPA_NODE_KILL_SEED");
    // A webhook starts each pass at once; its secret is a credential like the token.
    private_file(
        &node.path("etc/vespa-agent/credentials/webhook-secret"),
        WEBHOOK_SECRET,
    );
    node.sh(
        "printf '[source]\\nwebhook-secret-file = \"webhook-secret\"\\n' \
           > /etc/vespa-agent/agent.d/40-webhook.toml && systemctl restart vespa-agent",
    );
    let drop_in =
        std::fs::read_to_string(node.path("etc/vespa-agent/agent.d/10-bootstrap-test.toml"))
            .unwrap();
    let listen = drop_in
        .lines()
        .find_map(|l| l.strip_prefix("listen = \""))
        .and_then(|l| l.strip_suffix('"'))
        .unwrap()
        .to_owned();
    let hook = format!("{listen}/hooks/gitlab");
    let headers = [
        ("X-Gitlab-Event", "Push Hook"),
        ("X-Gitlab-Token", WEBHOOK_SECRET),
    ];

    let prober = Prober::with(Duration::from_millis(200), || {
        tap_count(NODE_DACHS_PORT).map(drop)
    });
    let rd = git.work().join("epnlab/q.rd");
    let example =
        std::fs::read_to_string(root().join("examples/granules/epnlab/g00000000.csv")).unwrap();
    let granules = node.path("srv/vespa-example/granules/epnlab");
    let mut in_pass = 0;
    for i in 0..kills {
        let pid = eventually("the agent running", Duration::from_secs(90), || {
            let pid = node.show("vespa-agent", "MainPID");
            (pid != "0" && node.show("vespa-agent", "ActiveState") == "active").then_some(pid)
        });
        std::fs::write(
            granules.join(format!("k{i:06}.csv")),
            example.replace("g000000", &format!("k{i:06}")),
        )
        .unwrap();
        let text = std::fs::read_to_string(&rd).unwrap();
        std::fs::write(&rd, format!("{text}<!-- kill {i} -->\n")).unwrap();
        git.commit(&[], &format!("kill {i}"), &[]);
        git.push();
        let (code, body) = post(&hook, &headers, PUSH).unwrap_or_default();
        assert_eq!(code, 202, "the webhook: {body}");
        // Within the pass it started: the apply and the import take about 2 to 4 s here.
        std::thread::sleep(Duration::from_millis(next(&mut seed) % 3000));
        let (_, activity) = node.try_sh("systemctl show -P StatusText vespa-agent");
        if !activity.contains("idle") && !activity.trim().is_empty() {
            in_pass += 1;
        }
        node.sh("systemctl kill -s KILL vespa-agent");
        eventually("systemd to start it again", Duration::from_secs(60), || {
            let now = node.show("vespa-agent", "MainPID");
            (now != pid && now != "0").then_some(())
        });
        // An operator's node would rest between kills; here they come faster than the unit's
        // start limit (5 in 10 minutes) allows.
        node.sh("systemctl reset-failed vespa-agent");
    }
    let rows = (EXAMPLE_ROWS.parse::<usize>().unwrap() + 5 * kills).to_string();
    let newest = format!("<!-- kill {} -->", kills - 1);
    // A deploy imports the granules it brings before it publishes the revision: the rows can be
    // there a moment before `current` moves.
    eventually(
        "every granule served, from the newest commit",
        Duration::from_secs(180),
        || {
            let (_, rd) = node.try_sh("cat /var/lib/vespa-agent/current/epnlab/q.rd");
            (tap_count(NODE_DACHS_PORT).as_deref() == Ok(rows.as_str()) && rd.contains(&newest))
                .then_some(())
        },
    );
    let (queries, failed, errors) = prober.finish();
    // Each exactly once: as many distinct granules as rows.
    let distinct = tap_answer(
        NODE_DACHS_PORT,
        "SELECT COUNT(DISTINCT granule_uid) AS n FROM epnlab.epn_core",
    );
    assert_eq!(distinct, Ok(rows.clone()), "a granule is served twice");
    let sound = node.sh(
        "python3 -c \"import sqlite3; print(sqlite3.connect('file:/var/lib/vespa-agent/state.db?mode=ro', \
         uri=True).execute('PRAGMA integrity_check').fetchone()[0])\"",
    );
    assert_eq!(sound.trim(), "ok", "the state store after the kills");
    let (_, left) = node.try_sh(
        "find /var/gavo/inputs /var/lib/vespa-agent \\( -name '.vespa-tmp*' -o -name '.tmp-*' \\) -print",
    );
    assert!(left.trim().is_empty(), "temporary files left: {left}");
    assert_eq!(node.sh("vespa-agent plan >/dev/null; echo $?").trim(), "0");
    figure(&format!(
        "NODE KILLS: {kills} SIGKILLs under systemd ({in_pass} during a pass), each restarted by \
         systemd; TAP queries {queries}, failed {failed}; granules lost or duplicated: 0"
    ));
    assert_eq!(failed, 0, "failed TAP queries: {errors:?}");
    rows
}
