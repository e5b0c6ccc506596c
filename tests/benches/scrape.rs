//! `/metrics` of an agent serving the example service from the real DaCHS, beside
//! prometheus-node-exporter's `/metrics` on the same machine in the same run: latency p50 and
//! p99 over `VESPA_BENCH_SCRAPES` (default 1,000) scrapes each, one connection per scrape as
//! Prometheus makes after an idle interval, and the number of series each serves.
//!
//! `cargo bench --bench scrape` (needs scripts/setup-dachs.sh and prometheus-node-exporter).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use harness::git::LocalRepo;
use harness::{Agent, env_usize, eventually, free_port, get, require_dachs};

const NAME: &str = "vb_scrape";

fn scrape(addr: &str, n: usize) -> (Vec<Duration>, usize) {
    let mut took = Vec::with_capacity(n);
    let mut series = 0;
    for _ in 0..n {
        let t = Instant::now();
        let (code, body) = get(addr).expect("an answer");
        took.push(t.elapsed());
        assert_eq!(code, 200);
        series = body
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .count();
    }
    took.sort();
    (took, series)
}

fn pct(v: &[Duration], p: f64) -> f64 {
    v[((v.len() - 1) as f64 * p).round() as usize].as_secs_f64() * 1000.0
}

fn main() {
    if !require_dachs() {
        return;
    }
    let n = env_usize("VESPA_BENCH_SCRAPES", 1000);
    harness::remove_resource(NAME);
    let (_repo, home) = LocalRepo::example_as(NAME);
    let agent = Agent::start(&home, |_| {});
    eventually("the example to be served", Duration::from_secs(120), || {
        get(&home.url("/metrics")).filter(|(_, b)| b.contains("vespa_agent_tap_table_rows{"))
    });

    let port = free_port();
    let exporter = Command::new("prometheus-node-exporter")
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let (a, a_series) = scrape(&home.url("/metrics"), n);
    println!();
    println!("/metrics latency over {n} scrapes, one connection each");
    println!("| server | p50 | p99 | series |");
    println!("|---|---|---|---|");
    println!(
        "| vespa-agent (example served) | {:.2} ms | {:.2} ms | {a_series} |",
        pct(&a, 0.5),
        pct(&a, 0.99)
    );
    match exporter {
        Ok(mut child) => {
            let addr = format!("127.0.0.1:{port}/metrics");
            eventually("node exporter", Duration::from_secs(10), || get(&addr));
            let (e, e_series) = scrape(&addr, n);
            println!(
                "| prometheus-node-exporter | {:.2} ms | {:.2} ms | {e_series} |",
                pct(&e, 0.5),
                pct(&e, 0.99)
            );
            harness::summary(
                "scrape_p50",
                pct(&a, 0.5),
                pct(&e, 0.5),
                "prometheus-node-exporter",
                "ms",
            );
            let _ = child.kill();
            let _ = child.wait();
        }
        Err(e) => println!("| prometheus-node-exporter | not run: {e} | | |"),
    }
    drop(agent);
    harness::remove_resource(NAME);
}
