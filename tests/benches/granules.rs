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
use harness::{env_usize as env, median};
use vespa_agent::granules::transfer::Limits;
use vespa_agent::granules::{Job, sync};
use vespa_agent::service::Collection;
use vespa_agent::state::GranuleRecord;

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
    known: Vec<GranuleRecord>,
) -> (Duration, Vec<GranuleRecord>) {
    let secret = dest.with_extension("secret");
    std::fs::write(&secret, format!("{USER}:{PASSWORD}")).unwrap();
    std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
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
    records.extend(out.fetched);
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

    let scratch = tempfile::tempdir().unwrap();
    let mut rows = Vec::new();
    for (name, files, size) in [
        ("small", small, "10 KB"),
        ("large", large, &*format!("{large_mb} MB")),
    ] {
        let (mut a, mut r) = (Vec::new(), Vec::new());
        for i in 0..runs {
            let d = scratch.path().join(format!("{name}-agent-{i}"));
            a.push(agent(&dav, name, &d, Vec::new()).0);
            std::fs::remove_dir_all(&d).unwrap();
            let d = scratch.path().join(format!("{name}-rclone-{i}"));
            r.push(rclone(&dav, name, &d));
            std::fs::remove_dir_all(&d).unwrap();
        }
        rows.push((
            format!("copy {files} files of {size}"),
            median(a),
            median(r),
        ));
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
}
