//! `vespa-agent rebuild` (level 1) on a real node: a Debian 12 booted under systemd-nspawn and
//! set up by the cloud-init template (tests/common/node.rs), serving the example. Its digest is
//! taken; then, in turn, its resource directories, DaCHS's database, the agent's state store
//! and the whole of /var/gavo are wiped, and after each `systemctl start vespa-agent-rebuild`
//! (the packaged privileged unit) brings the node back with the same digest. The last rebuild
//! is killed at seeded random moments and started again until it completes.

mod common;

use std::time::{Duration, Instant};

use common::eventually;
use common::node::*;

/// The node's `status --digest`, from its own CLI, as an operator at its shell would run it.
fn digest(node: &Node) -> String {
    let (ok, out) = node.try_sh("vespa-agent status --digest");
    assert!(ok, "status --digest failed:\n{out}\n{}", node.journal());
    out
}

/// Runs the rebuild unit to its end; its output on failure.
fn rebuild(node: &Node) -> Duration {
    let t = Instant::now();
    let (ok, out) = node.try_sh("systemctl start vespa-agent-rebuild.service");
    if !ok {
        // Let the journal take the unit's last lines.
        std::thread::sleep(Duration::from_secs(2));
    }
    let log = node
        .try_sh("journalctl -u vespa-agent-rebuild --no-pager -n 80 -o cat")
        .1;
    assert!(ok, "the rebuild failed: {out}\n{log}");
    t.elapsed()
}

/// After a rebuild the unit's OnSuccess= starts the daemon again.
fn daemon_back(node: &Node) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while node.show("vespa-agent", "ActiveState") != "active" {
        assert!(
            Instant::now() < deadline,
            "the daemon is not back after the rebuild:\n{}",
            node.try_sh(
                "systemctl status vespa-agent --no-pager; \
                 journalctl -u vespa-agent -n 30 --no-pager -o cat"
            )
            .1
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A small seeded generator: the kill points are reproducible from the printed seed.
fn next(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

#[test]
fn every_wipe_is_rebuilt_to_the_same_digest() {
    let Some(served) = serving_node("rebuild") else {
        return;
    };
    let node = &served.node;
    let golden = digest(node);
    eprintln!("golden digest:\n{golden}");
    assert!(
        golden.contains(&format!("rows {EXAMPLE_ROWS} ")),
        "{golden}"
    );

    // A healthy node: the dry run finds nothing to repair below the resources.
    let (ok, plan) = node.try_sh("vespa-agent rebuild --dry-run");
    assert!(ok, "{plan}");
    for step in ["packages", "postgresql", "database", "dachs"] {
        assert!(
            plan.lines()
                .any(|l| l.starts_with(step) && l.ends_with(" ok")),
            "{plan}"
        );
    }

    let wipes: [(&str, &str); 4] = [
        ("the resource directories", "rm -rf /var/gavo/inputs/epnlab"),
        (
            "DaCHS's database",
            "systemctl stop dachs && runuser -u postgres -- dropdb --force gavo",
        ),
        (
            "the agent's state store",
            "systemctl stop vespa-agent && rm -rf /var/lib/vespa-agent",
        ),
        (
            "the whole of /var/gavo",
            // The UAT stub stands in for the internet a real node has (see node.rs).
            "systemctl stop vespa-agent dachs && rm -rf /var/gavo",
        ),
    ];
    let mut seed: u64 = std::env::var("VESPA_REBUILD_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("kill-point seed: VESPA_REBUILD_SEED={seed}");
    for (what, wipe) in wipes {
        node.sh(wipe);
        if what.contains("/var/gavo") {
            node.sh("mkdir -p /var/gavo/cache");
            put_uat_stub(&node.path("var/gavo/cache"));
            node.sh("chown -R dachsroot /var/gavo");
            // Killed at random moments, then run again until it completes.
            for kill in 0..3 {
                let after = Duration::from_millis(1000 + next(&mut seed) % 14_000);
                node.sh("systemctl start --no-block vespa-agent-rebuild.service");
                std::thread::sleep(after);
                let (_, state) = node.try_sh("systemctl is-active vespa-agent-rebuild");
                let _ = node.try_sh("systemctl kill -s KILL vespa-agent-rebuild.service");
                eprintln!("kill {kill} after {after:?} (rebuild was {})", state.trim());
                eventually("the killed rebuild to end", Duration::from_secs(60), || {
                    let s = node.show("vespa-agent-rebuild", "ActiveState");
                    (s != "activating" && s != "deactivating").then_some(())
                });
            }
            let _ = node.try_sh("systemctl reset-failed vespa-agent-rebuild");
        }
        let took = rebuild(node);
        daemon_back(node);
        let after = digest(node);
        eprintln!("REBUILD after wiping {what}: {:.1} s", took.as_secs_f64());
        assert_eq!(after, golden, "after wiping {what}");
    }
}
