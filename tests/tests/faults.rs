//! Network faults around the running daemon: fault proxies between it and git's smart-HTTP
//! server (the GitLab stand-in) and between it and Apache mod_dav (the B2SAFE stand-in) answer
//! 5xx bursts and a 401 mid-run, reset connections, cut and corrupt bodies and stall beyond the
//! timeouts, while new commits and granule churn keep arriving. Whatever is injected, DaCHS
//! serves only whole, verified granule files and keeps answering TAP (a prober counts failures),
//! the state store stays intact, no temporary file is left, and once the faults are spent the
//! node converges to exactly the source; the retries and failures show in /metrics.

use std::time::{Duration, Instant};

use harness::churn::*;
use harness::fault::{Fault, FaultProxy};
use harness::*;

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

/// Without a checksum source, a byte damaged on the wire that keeps the size cannot be told from
/// the data. When the import refuses such a file, the next pass fetches it once more and the
/// good bytes are imported; a file that is bad at the source itself is fetched twice, no more.
#[test]
fn a_file_damaged_on_the_wire_without_a_checksum_is_fetched_again() {
    const NAME: &str = "vt_refetch";
    let Some(mut world) = World::start(NAME) else {
        return;
    };
    let git_proxy = FaultProxy::start(world.git.port);
    let dav_proxy = FaultProxy::start(world.dav.port);
    world.route_through(&git_proxy, &dav_proxy);
    world.drop_manifest();
    world.home.write(
        "etc/agent.d/40-faults.toml",
        "[reconcile]\ninterval = \"10s\"\njitter = \"0s\"\n",
    );
    let agent = Agent::start(&world.home, |_| {});
    assert!(
        world.converged(Duration::from_secs(120)),
        "the first revision never served:\n{}",
        agent.log()
    );

    // A month DaCHS cannot read, in the same number of bytes.
    const GOOD: &str = "2024-01-02T00";
    const BAD: &str = "2024-13-02T00";
    dav_proxy
        .plan
        .add("GET", "c0006.csv", Fault::Replace(GOOD, BAD));
    world.source.write(6, 1);
    std::fs::write(
        world.source.dir.join("c0999.csv"),
        csv(999, 1).replacen(GOOD, BAD, 1),
    )
    .unwrap();
    assert!(
        world.converged(Duration::from_secs(90)),
        "the file damaged on the wire was not fetched again; served {:?}\n{}",
        world.served(),
        agent.log()
    );
    assert_eq!(dav_proxy.plan.pending(), 0, "the damage was never injected");
    let gets = |name: &str| {
        dav_proxy
            .plan
            .seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.starts_with("GET ") && s.contains(name))
            .count()
    };
    assert_eq!(
        gets("c0006.csv"),
        2,
        "the damaged file: once damaged, once whole"
    );
    // Several more passes: the file bad at the source stays refused and is not fetched again.
    std::thread::sleep(Duration::from_secs(25));
    assert_eq!(
        gets("c0999.csv"),
        2,
        "a file bad at its source is fetched twice, no more"
    );
    let log = agent.log();
    assert!(
        log.matches("the import refused a granule file").count() >= 2,
        "the refusals are not logged:\n{log}"
    );
    assert_eq!(world.served().unwrap(), world.source.expected());
}
