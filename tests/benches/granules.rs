//! Bringing a collection in over WebDAV, beside `rclone copy` in the same run, against the same
//! Apache mod_dav server on loopback (the B2SAFE/Davrods stand-in of the test harness):
//!
//! - many small files (`VESPA_BENCH_SMALL`, default 10,000 files of 10 KB);
//! - a few large files (`VESPA_BENCH_LARGE`, default 4 files of `VESPA_BENCH_LARGE_MB` = 256 MB);
//! - a no-change rescan of `VESPA_BENCH_RESCAN` files (default 100,000).
//!
//! The agent's side is its granule sync (listing, diff against what it holds, transfer with a
//! SHA-256 computed while streaming, fsync, rename), without the DaCHS import. rclone's WebDAV
//! backend has no hash to verify against Apache: it compares size and modification time.
//! Both use 4 parallel transfers. `cargo bench --bench granules` prints medians of
//! `VESPA_BENCH_RUNS` (default 3) runs.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use harness::dav::{DavServer, PASSWORD, USER};
use harness::{env_usize as env, median, summary};
use vespa_agent::granules::transfer::Limits;
use vespa_agent::granules::{Job, sync};
use vespa_agent::service::Collection;
use vespa_agent::state::HeldGranule;

fn fill(dir: &Path, files: usize, bytes: usize) {
    let body: Vec<u8> = (0..bytes).map(|i| (i * 7 % 251) as u8).collect();
    for i in 0..files {
        std::fs::write(dir.join(format!("g{i:07}.dat")), &body).unwrap();
    }
}

fn agent(
    dav: &DavServer,
    collection: &str,
    dest: &Path,
    known: Vec<HeldGranule>,
) -> (Duration, Vec<HeldGranule>) {
    let secret = harness::private_file(
        &dest.with_extension("secret"),
        &format!("{USER}:{PASSWORD}"),
    );
    let credential = vespa_agent::config::SecretFile::resolve(
        secret.to_str().unwrap(),
        std::path::Path::new("/"),
    )
    .and_then(|f| f.read())
    .unwrap();
    let job = Job {
        resource: "bench".into(),
        collection: Collection {
            name: collection.into(),
            source: dav.url(collection),
            target: "data".into(),
            include: vec!["*".into()],
            exclude: vec![],
            credential: Some("bench".into()),
            manifest: None,
        },
        target: dest.to_owned(),
        sha: "bench".into(),
        owner: None,
        known,
        credential: Some(credential),
        concurrency: 4,
        limits: Limits::default(),
        progress: None,
    };
    let t = Instant::now();
    let out = sync(&job).expect("the agent's sync");
    let took = t.elapsed();
    let mut records = job.known.clone();
    records.extend(out.fetched.iter().map(HeldGranule::from));
    (took, records)
}

fn rclone(dav: &DavServer, collection: &str, dest: &Path) -> Duration {
    let obscured = Command::new("rclone")
        .args(["obscure", PASSWORD])
        .output()
        .unwrap();
    let t = Instant::now();
    let out = Command::new("rclone")
        .args(["copy", "--transfers", "4", "--checkers", "8", "-q", "dav:"])
        .arg(dest)
        .env("RCLONE_CONFIG_DAV_TYPE", "webdav")
        .env("RCLONE_CONFIG_DAV_URL", dav.url(collection))
        .env("RCLONE_CONFIG_DAV_VENDOR", "other")
        .env("RCLONE_CONFIG_DAV_USER", USER)
        .env(
            "RCLONE_CONFIG_DAV_PASS",
            String::from_utf8_lossy(&obscured.stdout).trim(),
        )
        .output()
        .unwrap();
    let took = t.elapsed();
    assert!(
        out.status.success(),
        "rclone: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    took
}

/// `curl --parallel --parallel-max 4` over keep-alive, one process, of every file of the
/// collection into `dest`: the server's own limit for 4 connections, without hashing; with
/// `durable`, every file then fsynced (coreutils `sync FILE...`), the least a tool that keeps
/// what it fetched must pay.
fn curl(dav: &DavServer, collection: &str, dest: &Path, durable: bool) -> Duration {
    std::fs::create_dir_all(dest).unwrap();
    let mut names: Vec<String> = std::fs::read_dir(dav.data(collection))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut config = String::new();
    for n in &names {
        config.push_str(&format!(
            "url = \"{}/{n}\"\noutput = \"{}/{n}\"\n",
            dav.url(collection),
            dest.display()
        ));
    }
    let config_file = dest.with_extension("curl");
    std::fs::write(&config_file, config).unwrap();
    let t = Instant::now();
    let out = Command::new("curl")
        .args(["-sSf", "--parallel", "--parallel-max", "4", "-u"])
        .arg(format!("{USER}:{PASSWORD}"))
        .arg("-K")
        .arg(&config_file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    if durable {
        let ok = Command::new("sync")
            .args(names.iter().map(|n| dest.join(n)))
            .status()
            .unwrap();
        assert!(ok.success());
    }
    t.elapsed()
}

fn main() {
    assert!(
        Command::new("rclone")
            .arg("version")
            .output()
            .is_ok_and(|o| o.status.success()),
        "rclone is needed (apt-get install rclone)"
    );
    let runs = env("VESPA_BENCH_RUNS", 3);
    let small = env("VESPA_BENCH_SMALL", 10_000);
    let large = env("VESPA_BENCH_LARGE", 4);
    let large_mb = env("VESPA_BENCH_LARGE_MB", 256);
    let rescan = env("VESPA_BENCH_RESCAN", 100_000);
    let dav = DavServer::start().expect("apache2 (scripts/test.sh installs it)");
    fill(&dav.data("small"), small, 10 * 1024);
    fill(&dav.data("large"), large, large_mb * 1024 * 1024);
    fill(&dav.data("rescan"), rescan, 100);
    // A real collection is on another machine: its files are not this disk's dirty pages,
    // which every flush here (the agent's, curl's and fsync's) would otherwise write first.
    assert!(Command::new("sync").status().unwrap().success());

    // On the disk the agent writes to: /tmp may be memory, where fsync costs nothing.
    let scratch = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let mut rows = Vec::new();
    let mut limits = Vec::new();
    for (name, files, size) in [
        ("small", small, "10 KB"),
        ("large", large, &*format!("{large_mb} MB")),
    ] {
        let (mut a, mut r, mut c, mut d) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for i in 0..runs {
            let run = |what: &str| scratch.path().join(format!("{name}-{what}-{i}"));
            a.push(agent(&dav, name, &run("agent"), Vec::new()).0);
            r.push(rclone(&dav, name, &run("rclone")));
            c.push(curl(&dav, name, &run("curl"), false));
            d.push(curl(&dav, name, &run("durable"), true));
            for what in ["agent", "rclone", "curl", "durable"] {
                std::fs::remove_dir_all(run(what)).unwrap();
            }
        }
        let (a, r, c, d) = (median(a), median(r), median(c), median(d));
        rows.push((format!("copy {files} files of {size}"), a, r));
        limits.push((format!("copy {files} files of {size}"), a, c, d));
        let (measure, anchor, anchor_is) = match name {
            "small" => ("small_files", c, "curl --parallel 4 over keep-alive"),
            _ => (
                "large_files",
                d,
                "curl --parallel 4, then fsync of every file",
            ),
        };
        summary(
            measure,
            a.as_secs_f64(),
            anchor.as_secs_f64(),
            anchor_is,
            "s",
        );
        summary(
            &format!("{measure}_rclone"),
            a.as_secs_f64(),
            r.as_secs_f64(),
            "rclone copy --transfers 4",
            "s",
        );
    }
    // Rescan: both hold the whole collection already; nothing changed at the source.
    let d_agent = scratch.path().join("rescan-agent");
    let (_, known) = agent(&dav, "rescan", &d_agent, Vec::new());
    let d_rclone = scratch.path().join("rescan-rclone");
    rclone(&dav, "rescan", &d_rclone);
    let (mut a, mut r) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        a.push(agent(&dav, "rescan", &d_agent, known.clone()).0);
        r.push(rclone(&dav, "rescan", &d_rclone));
    }
    rows.push((
        format!("no-change rescan of {rescan} files"),
        median(a),
        median(r),
    ));

    println!();
    println!(
        "granules over WebDAV (Apache mod_dav, loopback), medians of {runs} runs, 4 transfers each"
    );
    println!(
        "{:<36} {:>12} {:>12} {:>14}",
        "", "vespa-agent", "rclone copy", "agent/rclone"
    );
    for (what, a, r) in rows {
        println!(
            "{what:<36} {:>10.2} s {:>10.2} s {:>14.2}",
            a.as_secs_f64(),
            r.as_secs_f64(),
            a.as_secs_f64() / r.as_secs_f64()
        );
    }
    println!(
        "(the agent also computes and records a SHA-256 of every file; rclone's WebDAV backend has none to check)"
    );
    println!();
    println!(
        "the same against the server's limit: curl --parallel --parallel-max 4, one process, keep-alive"
    );
    println!(
        "{:<36} {:>12} {:>12} {:>14} {:>12} {:>12}",
        "", "vespa-agent", "curl", "curl + fsync", "agent/curl", "agent/durable"
    );
    for (what, a, c, d) in limits {
        println!(
            "{what:<36} {:>10.2} s {:>10.2} s {:>12.2} s {:>12.2} {:>12.2}",
            a.as_secs_f64(),
            c.as_secs_f64(),
            d.as_secs_f64(),
            a.as_secs_f64() / c.as_secs_f64(),
            a.as_secs_f64() / d.as_secs_f64()
        );
    }
}
