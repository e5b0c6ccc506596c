//! Network faults around the running daemon: fault proxies between it and git's smart-HTTP
//! server (the GitLab stand-in) and between it and Apache mod_dav (the B2SAFE stand-in) answer
//! 5xx bursts and a 401 mid-run, reset connections, cut and corrupt bodies and stall beyond the
//! timeouts, while new commits and granule churn keep arriving. Whatever is injected, DaCHS
//! serves only whole, verified granule files and keeps answering TAP (a prober counts failures),
//! the state store stays intact, no temporary file is left, and once the faults are spent the
//! node converges to exactly the source; the retries and failures show in /metrics.

mod common;

use std::time::{Duration, Instant};

use common::churn::*;
use common::fault::{Fault, FaultProxy};
use common::*;

const NAME: &str = "vt_faults";

/// Faults for a proxy's plan: method, a piece of the path, the fault.
type Rules = Vec<(&'static str, &'static str, Fault)>;

/// The faults of one round: for git, then for WebDAV.
fn round(n: u32) -> (Rules, Rules) {
    let git = match n % 4 {
        0 => vec![
            ("GET", "info/refs", Fault::Status(503)),
            ("GET", "info/refs", Fault::Status(502)),
            ("GET", "info/refs", Fault::Status(503)),
        ],
        1 => vec![
            ("GET", "info/refs", Fault::Reset),
            ("POST", "git-upload-pack", Fault::Truncate(0.5)),
        ],
        2 => vec![
            ("GET", "info/refs", Fault::Status(401)),
            ("POST", "git-upload-pack", Fault::Corrupt),
        ],
        _ => vec![(
            "POST",
            "git-upload-pack",
            Fault::Stall(Duration::from_secs(4)),
        )],
    };
    let dav = match n % 4 {
        0 => vec![
            ("PROPFIND", "/dav/", Fault::Status(500)),
            ("GET", ".csv", Fault::Truncate(0.3)),
        ],
        1 => vec![
            ("GET", ".csv", Fault::Corrupt),
            ("GET", ".csv", Fault::Reset),
        ],
        2 => vec![
            ("GET", ".csv", Fault::Status(401)),
            ("GET", ".csv", Fault::Status(503)),
        ],
        _ => vec![("GET", ".csv", Fault::Stall(Duration::from_secs(4)))],
    };
    (git, dav)
}

#[test]
fn faults_between_the_daemon_and_git_and_storage_lose_and_corrupt_nothing() {
    let Some(mut world) = World::start(NAME) else {
        return;
    };
    let git_proxy = FaultProxy::start(world.git.port);
    let dav_proxy = FaultProxy::start(world.dav.port);
    world.route_through(&git_proxy, &dav_proxy);
    world.home.write(
        "etc/agent.d/40-faults.toml",
        "[reconcile]\ninterval = \"10s\"\njitter = \"0s\"\n\n\
         [granules]\nstall-timeout = \"2s\"\nretries = \"2\"\n",
    );
    let mut seed = seed("VESPA_FAULTS_SEED");
    world.next_revision(&mut seed);
    let agent = Agent::start(&world.home, |_| {});
    assert!(
        world.converged(Duration::from_secs(120)),
        "the first revision never served:\n{}",
        agent.log()
    );

    let prober = Prober::start(NAME);
    let rounds = env_usize("VESPA_FAULT_ROUNDS", 8) as u32;
    for n in 0..rounds {
        let (git, dav) = round(n);
        for (m, p, f) in git {
            git_proxy.plan.add(m, p, f);
        }
        for (m, p, f) in dav {
            dav_proxy.plan.add(m, p, f);
        }
        world.next_revision(&mut seed);
        // While the faults are spent: only whole files, ever.
        let t = Instant::now();
        while git_proxy.plan.pending() + dav_proxy.plan.pending() > 0
            && t.elapsed() < Duration::from_secs(180)
        {
            if let Ok(rows) = world.served() {
                whole_files(&rows).unwrap_or_else(|e| panic!("round {n}: {e}"));
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        assert!(
            world.converged(Duration::from_secs(180)),
            "round {n}: never converged; faults left: git {}, dav {}\n{}",
            git_proxy.plan.pending(),
            dav_proxy.plan.pending(),
            agent.log()
        );
    }
    let (queries, failed, errors) = prober.finish();
    let injected = git_proxy
        .plan
        .injected
        .load(std::sync::atomic::Ordering::SeqCst)
        + dav_proxy
            .plan
            .injected
            .load(std::sync::atomic::Ordering::SeqCst);
    let metrics = get(&format!("{}/metrics", world.home.url(""))).unwrap().1;
    let sum = |prefix: &str| -> f64 {
        metrics
            .lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let (retries, source_errors, granule_errors) = (
        sum("vespa_agent_granule_transfer_retries_total"),
        sum("vespa_agent_reconcile_errors_total{"),
        sum("vespa_agent_granule_failures_total"),
    );
    figure(&format!(
        "FAULTS: {injected} injected over {rounds} rounds; granule retries {retries}, stage \
         errors {source_errors}, granule failures {granule_errors}; TAP queries {queries}, failed \
         {failed}; granules lost or duplicated: 0"
    ));
    assert_eq!(failed, 0, "failed TAP queries: {errors:?}");
    assert!(
        injected >= rounds as usize * 2,
        "only {injected} faults injected"
    );
    assert!(retries > 0.0, "no retry shows in /metrics:\n{metrics}");
    assert!(source_errors > 0.0, "no stage error shows in /metrics");
    agent.signal(libc::SIGTERM);
    let mut agent = agent;
    assert!(agent.wait(Duration::from_secs(30)).is_some());
    let left = leftovers(&world.home, NAME);
    assert!(left.is_empty(), "temporary files left: {left:?}");
}
