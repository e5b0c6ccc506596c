//! Delivery, proven on real parts: the .deb (cargo-deb) passes lintian; the units pass
//! `systemd-analyze security` and `verify`; and a Debian 12 booted from nothing under
//! systemd-nspawn becomes a serving DaCHS node through the cloud-init template alone: cloud-init
//! (NoCloud) installs PostgreSQL 15 (15.20 from bookworm-security, with the pg_sphere fix),
//! DaCHS and the package; the agent, under real systemd, pulls the example service from a
//! smart-HTTP git server on the host and imports its granules; a TAP query from the host gets
//! the rows. Then reload, the watchdog, stop, upgrade and purge, each under systemd.
//!
//! The node is booted by tests/common/node.rs.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::node::*;
use common::{eventually, have, missing};

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
        git: _git,
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
        common::git::TOKEN
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
