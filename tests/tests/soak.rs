//! Soak: the daemon runs while the world keeps changing (a new commit that changes the RD every
//! few seconds, granules added, changed and deleted on the WebDAV server), against the real
//! DaCHS, git's smart-HTTP server and Apache mod_dav, with a prober querying TAP all along. The
//! daemon's resident memory and open file descriptors are sampled throughout; the run ends with
//! DaCHS serving exactly the source. Prints the samples' summary and the RSS slope.
//!
//! `VESPA_SOAK_SECONDS` (default 120) sets the length; `scripts/soak.sh` runs hours.

use std::time::{Duration, Instant};

use harness::churn::*;
use harness::*;

const NAME: &str = "vt_soak";

fn rss_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

fn fds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// Least-squares slope of (seconds, KiB), in KiB per minute.
fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    let (mx, my) = points
        .iter()
        .fold((0.0, 0.0), |(a, b), (x, y)| (a + x / n, b + y / n));
    let (num, den) = points.iter().fold((0.0, 0.0), |(a, b), (x, y)| {
        (a + (x - mx) * (y - my), b + (x - mx) * (x - mx))
    });
    if den == 0.0 { 0.0 } else { num / den * 60.0 }
}

#[test]
fn a_long_run_of_commits_and_granule_churn_keeps_memory_and_descriptors_flat() {
    let Some(mut world) = World::start(NAME) else {
        return;
    };
    let seconds = env_usize("VESPA_SOAK_SECONDS", 120) as u64;
    let mut seed: u64 = 0x5eed_50a4 | 1;
    world.home.write(
        "etc/agent.d/40-soak.toml",
        "[reconcile]\ninterval = \"10s\"\njitter = \"0s\"\n",
    );
    let agent = Agent::start(&world.home, |_| {});
    let pid = agent.pid();
    assert!(
        world.converged(Duration::from_secs(120)),
        "the first revision never served:\n{}",
        agent.log()
    );

    let prober = Prober::start(NAME);
    let started = Instant::now();
    let mut samples: Vec<(f64, u64, usize)> = Vec::new();
    let mut next_change = Instant::now();
    while started.elapsed() < Duration::from_secs(seconds) {
        if Instant::now() >= next_change {
            world.next_revision(&mut seed);
            next_change = Instant::now() + Duration::from_secs(6);
        }
        samples.push((started.elapsed().as_secs_f64(), rss_kib(pid), fds(pid)));
        std::thread::sleep(Duration::from_secs(2));
    }
    assert!(
        world.converged(Duration::from_secs(120)),
        "the last revision never served:\n{}",
        agent.log()
    );
    samples.push((started.elapsed().as_secs_f64(), rss_kib(pid), fds(pid)));
    let (queries, failed, errors) = prober.finish();

    // After the first quarter (allocator and caches warming up), nothing may keep growing.
    let warm: Vec<_> = samples
        .iter()
        .filter(|s| s.0 >= seconds as f64 / 4.0)
        .copied()
        .collect();
    let rss: Vec<(f64, f64)> = warm.iter().map(|s| (s.0, s.1 as f64)).collect();
    let kib_per_min = slope(&rss);
    let (fd_first, fd_last) = (warm[0].2, warm.last().unwrap().2);
    let fd_max = warm.iter().map(|s| s.2).max().unwrap();
    let rss_first = warm[0].1;
    let rss_max = warm.iter().map(|s| s.1).max().unwrap();
    figure(&format!(
        "SOAK: {seconds} s, {} revisions, {} samples after warm-up; RSS {rss_first} KiB -> {} KiB \
         (max {rss_max}), slope {kib_per_min:.1} KiB/min; open fds {fd_first} -> {fd_last} (max \
         {fd_max}); TAP queries {queries}, failed {failed}",
        world.version,
        warm.len(),
        warm.last().unwrap().1,
    ));
    assert_eq!(failed, 0, "failed TAP queries: {errors:?}");
    // A pass holds a few descriptors while it runs (connections, up to granules.concurrency
    // transfers, a dachs child's pipes), so single samples vary by that much; a leak shows as
    // the quietest moments needing more and more, and the busiest beyond what a pass holds.
    let third = warm.len() / 3;
    let quietest = |s: &[(f64, u64, usize)]| s.iter().map(|x| x.2).min().unwrap_or(0);
    let busiest = |s: &[(f64, u64, usize)]| s.iter().map(|x| x.2).max().unwrap_or(0);
    let (early, late) = (&warm[..third], &warm[warm.len() - third..]);
    assert!(
        quietest(late) <= quietest(early) + 2,
        "open file descriptors grew: at least {} in the first third, {} in the last",
        quietest(early),
        quietest(late)
    );
    assert!(
        busiest(late) <= busiest(early) + 2 + 4,
        "open file descriptors grew: at most {} in the first third, {} in the last",
        busiest(early),
        busiest(late)
    );
    // A leak of even a page per pass shows within minutes; noise of the allocator does not reach
    // half the resident size.
    assert!(
        rss_max < rss_first + rss_first / 2,
        "RSS grew from {rss_first} KiB to {rss_max} KiB"
    );
    agent.signal(libc::SIGTERM);
}
