//! Following the service repository, measured beside git itself in the same run, against the
//! same smart-HTTP server (git http-backend behind nginx with token auth, from the test harness):
//!
//! - a no-change poll: the agent's fetch stage in process (what the daemon does every interval)
//!   beside `git fetch` in a clone that is up to date;
//! - a poll that brings one new commit, both ways;
//! - the time from a webhook request to `current` naming the new commit, through the daemon.
//!
//! `cargo bench --bench source` prints a table of medians over `VESPA_BENCH_RUNS` rounds
//! (default 15), the two tools interleaved so that machine noise hits both alike.

use std::path::Path;
use std::time::{Duration, Instant};

use harness::git::{GitServer, TOKEN};
use harness::{Agent, Home, eventually, post, secret_file};
use vespa_agent::source::fetch::{self, FetchSpec};

/// CPU time (user + system) used so far by this thread, or by the children waited for.
fn cpu(who: i32) -> Duration {
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes into the struct we own and nothing else.
    unsafe { libc::getrusage(who, &mut ru) };
    let t = |tv: libc::timeval| {
        Duration::from_secs(tv.tv_sec as u64) + Duration::from_micros(tv.tv_usec as u64)
    };
    t(ru.ru_utime) + t(ru.ru_stime)
}

#[derive(Default)]
struct Samples {
    wall: Vec<Duration>,
    cpu: Vec<Duration>,
}

impl Samples {
    fn median(v: &[Duration]) -> Duration {
        let mut v = v.to_vec();
        v.sort();
        v[v.len() / 2]
    }
    fn wall(&self) -> Duration {
        Self::median(&self.wall)
    }
    fn cpu(&self) -> Duration {
        Self::median(&self.cpu)
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// The agent's fetch stage, in this thread.
fn agent_fetch(repo: &git2::Repository, spec: &FetchSpec, into: &mut Samples) -> bool {
    let (c0, t0) = (cpu(libc::RUSAGE_THREAD), Instant::now());
    let fetched = fetch::fetch(repo, spec).expect("the agent's fetch");
    into.wall.push(t0.elapsed());
    into.cpu.push(cpu(libc::RUSAGE_THREAD) - c0);
    fetched.downloaded
}

/// `git fetch` in a clone, as a child process.
fn git_fetch(clone: &Path, auth: &str, into: &mut Samples) {
    let (c0, t0) = (cpu(libc::RUSAGE_CHILDREN), Instant::now());
    let out = harness::git::git(clone)
        .args(["-c", auth, "fetch", "-q", "origin", "main"])
        .output()
        .unwrap();
    into.wall.push(t0.elapsed());
    into.cpu.push(cpu(libc::RUSAGE_CHILDREN) - c0);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn main() {
    let runs: usize = std::env::var("VESPA_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(15);
    let server =
        GitServer::start().expect("nginx, fcgiwrap and htpasswd (scripts/test.sh installs them)");
    server.commit_example(&[]);
    server.push();

    let work = tempfile::tempdir().unwrap();
    let spec = server.fetch_spec(work.path());
    let repo = fetch::open_mirror(&work.path().join("mirror.git")).unwrap();
    fetch::fetch(&repo, &spec).unwrap();

    // git gets the token as a header (never in the URL), as a careful operator would set it.
    let basic = harness::base64(format!("oauth2:{TOKEN}").as_bytes());
    let auth = format!("http.extraHeader=Authorization: Basic {basic}");
    let clone = work.path().join("clone");
    let out = harness::git::git(work.path())
        .args(["-c", &auth, "clone", "-q", &server.url()])
        .arg(&clone)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let (mut agent_noop, mut git_noop) = (Samples::default(), Samples::default());
    let (mut agent_new, mut git_new) = (Samples::default(), Samples::default());
    for i in 0..runs {
        assert!(
            !agent_fetch(&repo, &spec, &mut agent_noop),
            "a no-change poll downloaded"
        );
        git_fetch(&clone, &auth, &mut git_noop);

        server.commit(&[("NOTES", Some(&format!("a{i}")))], "for the agent", &[]);
        server.push();
        assert!(
            agent_fetch(&repo, &spec, &mut agent_new),
            "a new commit was not downloaded"
        );
        server.commit(&[("NOTES", Some(&format!("g{i}")))], "for git", &[]);
        server.push();
        git_fetch(&clone, &auth, &mut git_new);
        // Both sides end the round up to date.
        fetch::fetch(&repo, &spec).unwrap();
    }

    let webhook = webhook_to_current(&server, runs.min(6));

    println!();
    println!(
        "service repository over smart HTTP (nginx + git http-backend), medians of {runs} rounds"
    );
    println!(
        "{:<44} {:>11} {:>11} {:>11}",
        "", "wall", "CPU", "wall ratio"
    );
    let row = |name: &str, s: &Samples, base: Option<&Samples>| {
        let ratio = base.map_or(String::new(), |b| {
            format!("{:.2}", s.wall().as_secs_f64() / b.wall().as_secs_f64())
        });
        println!(
            "{name:<44} {:>11} {:>11} {ratio:>11}",
            ms(s.wall()),
            ms(s.cpu())
        );
    };
    row(
        "no-change poll: vespa-agent fetch stage",
        &agent_noop,
        Some(&git_noop),
    );
    row("no-change poll: git fetch", &git_noop, None);
    row(
        "one new commit: vespa-agent fetch stage",
        &agent_new,
        Some(&git_new),
    );
    row("one new commit: git fetch", &git_new, None);
    println!(
        "{:<44} {:>11}   (median of {} webhooks; min {}, max {})",
        "webhook request -> current flipped",
        ms(Samples::median(&webhook)),
        webhook.len(),
        ms(*webhook.iter().min().unwrap()),
        ms(*webhook.iter().max().unwrap())
    );
    println!(
        "(git's CPU is the child process's; the agent's is its thread's, in a process already \
         running, as in the daemon)"
    );
    for (measure, agent, git) in [
        ("fetch_noop", &agent_noop, &git_noop),
        ("fetch_new_commit", &agent_new, &git_new),
    ] {
        harness::summary(
            measure,
            agent.wall().as_secs_f64(),
            git.wall().as_secs_f64(),
            "git fetch",
            "s",
        );
    }
}

/// Through the daemon: a new commit is pushed, the webhook posted, and `current` watched.
fn webhook_to_current(server: &GitServer, rounds: usize) -> Vec<Duration> {
    let home = Home::new(&harness::dachs_url(), "apply = false\n");
    let tok = secret_file(&home, "secrets/token", TOKEN);
    let hook = secret_file(&home, "secrets/hook", "bench-hook-secret");
    home.write(
        "etc/agent.d/20-source.toml",
        &format!(
            "[source]\nurl = \"{}\"\ntoken-file = \"{}\"\nwebhook-secret-file = \"{}\"\n\
             [reconcile]\ninterval = \"1h\"\njitter = \"0s\"\n",
            server.url(),
            tok.display(),
            hook.display()
        ),
    );
    let _agent = Agent::start(&home, |_| {});
    let current = || std::fs::read_link(home.path("state/current")).ok();
    eventually("the first revision", Duration::from_secs(20), current);
    let url = home.url("/hooks/gitlab");
    let body = r#"{"object_kind":"push","ref":"refs/heads/main"}"#;
    let mut out = Vec::new();
    for i in 0..rounds {
        // Past the webhook rate limit, so each request triggers a pass at once.
        std::thread::sleep(vespa_agent::hooks::MIN_SPACING + Duration::from_millis(200));
        let sha = server.commit(&[("NOTES", Some(&format!("w{i}")))], "webhook", &[]);
        server.push();
        let t = Instant::now();
        let (code, _) = post(&url, &[("X-Gitlab-Token", "bench-hook-secret")], body).unwrap();
        assert_eq!(code, 202);
        while !current().is_some_and(|c| c.ends_with(&sha)) {
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "the webhook did not bring {sha}"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        out.push(t.elapsed());
    }
    out
}
