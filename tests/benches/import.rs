//! Granules into the real DaCHS, beside `dachs imp` alone, in the same run and on the same
//! resource (the example RD, incremental: `updating`, `ignoreSources fromdbUpdating`, prune):
//!
//! - the first import of `VESPA_BENCH_GRANULES` granules (default 100,000 one-row CSV files)
//!   by one `vespa-agent sync` from a local collection: granules per second;
//! - a pass that adds 10 granules to them: `vespa-agent sync` (listing and diffing the whole
//!   collection, transfer, `dachs imp -c`, bookkeeping) beside `dachs imp -c` run by hand on 10
//!   files dropped into the data directory, the least a node must pay. Medians of
//!   `VESPA_BENCH_RUNS` (default 3) runs.
//!
//! `cargo bench --bench import` (needs the harness's DaCHS: scripts/setup-dachs.sh). The
//! resource is `vb_import`, dropped at the end.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use harness::git::run_git;
use harness::{Home, dachs_url, env_usize as env, median, require_dachs, summary};

const NAME: &str = "vb_import";
const INPUTS: &str = "/var/gavo/inputs";

/// The example's rows as templates: (header, rows).
fn example_rows() -> (String, Vec<String>) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/granules/epnlab");
    let mut header = String::new();
    let mut rows = Vec::new();
    for f in std::fs::read_dir(dir).unwrap() {
        let text = std::fs::read_to_string(f.unwrap().path()).unwrap();
        let mut lines = text.lines();
        header = lines.next().unwrap().to_owned();
        rows.extend(lines.map(str::to_owned));
    }
    rows.sort();
    (header, rows)
}

/// Writes granules `from..to` (one row each, its own granule_uid) into `dir`.
fn write_granules(dir: &Path, from: usize, to: usize, prefix: &str) {
    let (header, rows) = example_rows();
    for i in from..to {
        let row = &rows[i % rows.len()];
        let uid = format!("{prefix}{i:08}");
        let row = row.replacen(row.split(',').next().unwrap(), &uid, 1);
        std::fs::write(dir.join(format!("{uid}.csv")), format!("{header}\n{row}\n")).unwrap();
    }
}

fn sync(home: &Home) -> Duration {
    let t = Instant::now();
    let out = home.output(&["sync"]);
    let took = t.elapsed();
    assert_eq!(out.code(), 0, "{out:?}");
    took
}

fn count() -> String {
    let q = format!("SELECT COUNT(*) FROM {NAME}.epn_core");
    let url = format!(
        "{}/tap/sync?REQUEST=doQuery&LANG=ADQL&FORMAT=csv&QUERY={}",
        dachs_url(),
        q.replace(' ', "%20").replace('*', "%2A")
    );
    let out = Command::new("curl").args(["-s", &url]).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .unwrap_or("")
        .to_owned()
}

fn main() {
    if !require_dachs() {
        return;
    }
    let n = env("VESPA_BENCH_GRANULES", 100_000);
    let runs = env("VESPA_BENCH_RUNS", 3);
    harness::remove_resource(NAME);

    let repo = tempfile::tempdir().unwrap();
    run_git(repo.path(), &["init", "-q", "-b", "main"]);
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let rd = std::fs::read_to_string(example.join("service/epnlab/q.rd"))
        .unwrap()
        .replace("epnlab", NAME);
    std::fs::create_dir_all(repo.path().join(NAME)).unwrap();
    std::fs::write(repo.path().join(NAME).join("q.rd"), rd).unwrap();
    let collection = tempfile::tempdir().unwrap();
    std::fs::write(
        repo.path().join("vespa-service.toml"),
        format!(
            "[[resource]]\ndir = \"{NAME}\"\n\n[[resource.collection]]\nname = \"granules\"\nsource = \"{}\"\ninclude = [\"*.csv\"]\n",
            collection.path().display()
        ),
    )
    .unwrap();
    run_git(repo.path(), &["add", "-A"]);
    run_git(repo.path(), &["commit", "-q", "-m", "bench"]);
    let home = Home::new(
        &dachs_url(),
        "command-timeout = \"6h\"\n[reconcile]\nstall-timeout = \"6h\"\n",
    );
    home.write(
        "etc/agent.d/20-source.toml",
        &format!("[source]\nurl = \"{}\"\n", repo.path().display()),
    );

    eprintln!("writing {n} granule files ...");
    write_granules(collection.path(), 0, n, "g");
    eprintln!("first import of {n} granules by vespa-agent sync ...");
    let first = sync(&home);
    assert_eq!(count(), n.to_string());

    let mut agent = Vec::new();
    let mut alone = Vec::new();
    let data = Path::new(INPUTS).join(NAME).join("data");
    for r in 0..runs {
        write_granules(collection.path(), r * 10, r * 10 + 10, "a");
        agent.push(sync(&home));
        // The same 10-file change, by hand: files straight into the data directory (newer
        // mtimes than anything imported), then the import the agent would run.
        write_granules(&data, r * 10, r * 10 + 10, "m");
        let t = Instant::now();
        let out = Command::new("runuser")
            .args([
                "-u",
                "dachsroot",
                "--",
                "dachs",
                "imp",
                "-c",
                &format!("{NAME}/q"),
            ])
            .output()
            .unwrap();
        alone.push(t.elapsed());
        assert!(out.status.success(), "{out:?}");
    }
    assert_eq!(count(), (n + 20 * runs).to_string());

    // Where a pass's time goes: one more pass of 10 granules, untimed, with the agent's debug
    // log (timestamps per step) kept for reading.
    write_granules(collection.path(), runs * 10, runs * 10 + 10, "a");
    let out = home
        .command(&["sync"])
        .env("VESPA_AGENT_LOG", "debug")
        .output()
        .unwrap();
    let log = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench/import-pass.log");
    let _ = std::fs::create_dir_all(log.parent().unwrap());
    std::fs::write(&log, &out.stderr).unwrap();

    let (agent, alone) = (median(agent), median(alone));
    println!();
    println!("granules into DaCHS ({n} granules, medians of {runs} runs where repeated)");
    println!("| what | vespa-agent | dachs imp alone | ratio |");
    println!("|---|---|---|---|");
    println!(
        "| first import of {n} | {:.1} s ({:.0} granules/s) | | |",
        first.as_secs_f64(),
        n as f64 / first.as_secs_f64()
    );
    println!(
        "| +10 granules to {n} | {:.2} s | {:.2} s | {:.2} |",
        agent.as_secs_f64(),
        alone.as_secs_f64(),
        agent.as_secs_f64() / alone.as_secs_f64()
    );
    println!("(the debug log of one more such pass: {})", log.display());
    summary(
        "incremental_100k",
        agent.as_secs_f64(),
        alone.as_secs_f64(),
        &format!("dachs imp -c of the same 10 files alone, at {n} granules"),
        "s",
    );
    harness::remove_resource(NAME);
}
