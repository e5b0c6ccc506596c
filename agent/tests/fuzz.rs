//! Fuzzing, with proptest, of every parser of outside input: the agent's configuration,
//! vespa-service.toml, the checksum manifest, WebDAV PROPFIND answers, GitLab webhook bodies,
//! iRODS HTTP API GenQuery answers, TAP VOTables and DaCHS's command output. Each target starts
//! from the real-looking seeds committed in tests/fuzz-corpus/<target>/ and mutates them (bytes
//! flipped, inserted, deleted, duplicated, the input cut short), plus wholly arbitrary input.
//! Every input must give a value or a typed error with a message, never a panic, a hang or an
//! empty error. `VESPA_FUZZ_CASES` (default 2000 per target, seconds in all) sets the effort;
//! `scripts/fuzz.sh` runs a long session. A failing case is saved by proptest in
//! tests/fuzz-corpus/regressions.txt and replayed first from then on: commit it.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence};

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz-corpus")
        .join(target);
    let mut seeds: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| {
            let p = e.unwrap().path();
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect();
    seeds.sort();
    assert!(!seeds.is_empty(), "no seeds in {}", dir.display());
    seeds.into_iter().map(|(_, b)| b).collect()
}

#[derive(Clone, Debug)]
enum Mutation {
    Flip(usize, u8),
    Insert(usize, Vec<u8>),
    Delete(usize, usize),
    Duplicate(usize, usize),
    Cut(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    // Bytes that matter to the formats: delimiters, quotes, escapes, and high bytes.
    let interesting = prop::sample::select(vec![
        b'<', b'>', b'"', b'\'', b'&', b';', b'=', b'[', b']', b'{', b'}', b',', b':', b'\t',
        b'\n', b'\\', b'/', b'.', b'#', b'*', 0, 0xff, 0xc3,
    ]);
    prop_oneof![
        (
            any::<usize>(),
            prop_oneof![interesting.clone(), any::<u8>()]
        )
            .prop_map(|(i, b)| Mutation::Flip(i, b)),
        (
            any::<usize>(),
            prop::collection::vec(prop_oneof![interesting, any::<u8>()], 1..16)
        )
            .prop_map(|(i, v)| Mutation::Insert(i, v)),
        (any::<usize>(), 1usize..64).prop_map(|(i, n)| Mutation::Delete(i, n)),
        (any::<usize>(), 1usize..256).prop_map(|(i, n)| Mutation::Duplicate(i, n)),
        any::<usize>().prop_map(Mutation::Cut),
    ]
}

fn apply(mut b: Vec<u8>, muts: &[Mutation]) -> Vec<u8> {
    for m in muts {
        let len = b.len();
        let at = |i: usize| if len == 0 { 0 } else { i % (len + 1) };
        match m {
            Mutation::Flip(i, v) if len > 0 => b[i % len] = *v,
            Mutation::Flip(..) => {}
            Mutation::Insert(i, v) => {
                let p = at(*i);
                b.splice(p..p, v.iter().copied());
            }
            Mutation::Delete(i, n) => {
                let p = at(*i);
                let end = (p + n).min(len);
                b.drain(p..end);
            }
            Mutation::Duplicate(i, n) => {
                let p = at(*i);
                let end = (p + n).min(len);
                let copy = b[p..end].to_vec();
                b.splice(end..end, copy);
            }
            Mutation::Cut(i) => b.truncate(at(*i)),
        }
    }
    b
}

/// A seed mutated a few times, or arbitrary bytes.
fn input(target: &'static str) -> impl Strategy<Value = Vec<u8>> {
    let seeds = corpus(target);
    let n = seeds.len();
    prop_oneof![
        9 => (0..n, prop::collection::vec(mutation(), 0..8))
            .prop_map(move |(i, m)| apply(seeds[i].clone(), &m)),
        1 => prop::collection::vec(any::<u8>(), 0..2048),
    ]
}

fn cases() -> u32 {
    std::env::var("VESPA_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000)
}

/// Runs `check` over `cases()` inputs for `target`; a panic fails with the input saved.
fn fuzz(target: &'static str, check: impl Fn(&[u8])) {
    let mut config = Config::with_cases(cases());
    config.failure_persistence = Some(Box::new(FileFailurePersistence::Direct(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fuzz-corpus/regressions.txt"
    ))));
    config.max_shrink_iters = 2000;
    let mut runner = proptest::test_runner::TestRunner::new(config);
    let executions = std::cell::Cell::new(0u64);
    let result = runner.run(&input(target), |bytes| {
        executions.set(executions.get() + 1);
        check(&bytes);
        Ok(())
    });
    if let Err(e) = result {
        panic!("{target}: {e}");
    }
    assert!(
        executions.get() >= u64::from(cases()),
        "{target}: too few runs"
    );
    common::figure(&format!("FUZZ {target}: {} executions", executions.get()));
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// An error must say something.
fn said<E: std::fmt::Display>(target: &str, r: Result<impl Sized, E>) {
    if let Err(e) = r {
        assert!(!e.to_string().trim().is_empty(), "{target}: an empty error");
    }
}

#[test]
fn every_seed_parses() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/service");
    for s in corpus("service") {
        vespa_agent::service::parse(&text(&s), &example).unwrap();
    }
    for s in corpus("propfind") {
        assert!(
            !vespa_agent::granules::webdav::parse_multistatus(&text(&s))
                .unwrap()
                .is_empty()
        );
    }
    for s in corpus("votable") {
        vespa_agent::dachs::votable::parse(&text(&s)).unwrap();
    }
    for s in corpus("irods") {
        vespa_agent::granules::irods::parse_rows(&text(&s)).unwrap();
    }
    for s in corpus("manifest") {
        vespa_agent::granules::manifest::parse("MANIFEST.tsv", &text(&s)).unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    for s in corpus("config") {
        load_config(dir.path(), &s).unwrap();
    }
    let skipped = vespa_agent::dachs::cli::skipped_sources(&text(&corpus("dachs")[0]));
    assert_eq!(skipped.len(), 1, "{skipped:?}");
}

fn load_config(dir: &Path, bytes: &[u8]) -> Result<vespa_agent::config::Settings, String> {
    let etc = dir.join("etc");
    std::fs::create_dir_all(etc.join("agent.d")).unwrap();
    std::fs::write(etc.join("agent.toml"), bytes).unwrap();
    let layout = vespa_agent::config::Layout {
        vendor_dir: dir.join("usr"),
        config_dir: etc,
        runtime_dir: dir.join("run"),
    };
    vespa_agent::config::load(&layout).map_err(|e| e.to_string())
}

#[test]
fn the_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let dir = Mutex::new(dir);
    fuzz("config", |b| {
        let d = dir.lock().unwrap();
        said("config", load_config(d.path(), b));
    });
}

#[test]
fn vespa_service_toml() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/service");
    fuzz("service", |b| {
        match vespa_agent::service::parse(&text(b), &example) {
            // What is accepted stays inside the inputs directory.
            Ok(s) => {
                for r in &s.resources {
                    assert!(
                        !r.dir.is_empty() && !r.dir.contains('/') && r.dir != ".." && r.dir != ".",
                        "{:?}",
                        r.dir
                    );
                }
            }
            Err(e) => assert!(!e.to_string().trim().is_empty()),
        }
    });
}

#[test]
fn the_checksum_manifest() {
    fuzz("manifest", |b| {
        said(
            "manifest",
            vespa_agent::granules::manifest::parse("MANIFEST.tsv", &text(b)),
        )
    });
}

#[test]
fn webdav_propfind_answers() {
    fuzz("propfind", |b| {
        said(
            "propfind",
            vespa_agent::granules::webdav::parse_multistatus(&text(b)),
        )
    });
}

#[test]
fn irods_genquery_answers() {
    fuzz("irods", |b| {
        said("irods", vespa_agent::granules::irods::parse_rows(&text(b)))
    });
}

#[test]
fn tap_votables() {
    fuzz("votable", |b| {
        said("votable", vespa_agent::dachs::votable::parse(&text(b)))
    });
}

#[test]
fn dachs_command_output() {
    fuzz("dachs", |b| {
        let out = text(b);
        let _ = vespa_agent::dachs::cli::skipped_sources(&out);
        let run = vespa_agent::dachs::cli::Run {
            code: Some(1),
            stdout: out.clone(),
            stderr: out,
        };
        assert!(!vespa_agent::dachs::cli::error_message(&run).is_empty());
    });
}

#[test]
fn gitlab_webhook_bodies() {
    use vespa_agent::hooks::{Gate, Verdict};
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("hook");
    std::fs::write(&file, "fuzz-hook-secret").unwrap();
    std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let secret = vespa_agent::config::SecretFile::resolve(file.to_str().unwrap(), dir.path())
        .unwrap()
        .read()
        .unwrap();
    let (triggers, _rx) = vespa_agent::reconcile::Triggers::channel();
    let gate = std::sync::Arc::new(Gate::new(
        Some(secret),
        vespa_agent::config::Follow::Branch("main".into()),
        triggers,
        std::time::Duration::from_secs(3600),
    ));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _guard = rt.enter();
    fuzz("webhook", |b| {
        match gate.handle(Some(b"fuzz-hook-secret"), b) {
            Verdict::BadRequest(m) | Verdict::Ignored(m) => assert!(!m.trim().is_empty()),
            Verdict::Unauthorized | Verdict::Disabled => panic!("the right secret was refused"),
            _ => {}
        }
    });
    // With a wrong secret nothing is even parsed.
    for s in corpus("webhook") {
        assert!(matches!(
            gate.handle(Some(b"wrong"), &s),
            Verdict::Unauthorized
        ));
    }
}
