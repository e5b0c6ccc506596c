//! Fuzzing, with proptest, of every parser of outside input: the agent's configuration,
//! vespa-service.toml, the checksum manifest, WebDAV PROPFIND answers, GitLab webhook bodies,
//! iRODS HTTP API GenQuery answers, TAP VOTables and DaCHS's command output. Each target starts
//! from the real-looking seeds committed in tests/fuzz-corpus/<target>/ and mutates them (bytes
//! flipped, inserted, deleted, duplicated, the input cut short), plus wholly arbitrary input.
//! Every input must give a value or a typed error with a message, never a panic, a hang or an
//! empty error: the checks are tests/fuzzing/mod.rs, which fuzz/ (cargo-fuzz, coverage-guided)
//! runs too. `VESPA_FUZZ_CASES` (default 2000 per target, seconds in all) sets the effort;
//! `scripts/fuzz.sh` runs a long session of both. A failing case is saved by proptest in
//! tests/fuzz-corpus/regressions.txt and replayed first from then on: commit it.

mod fuzzing;

use std::path::{Path, PathBuf};

use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence};

/// The targets, each with its seeds in tests/fuzz-corpus/<target>/ and a cargo-fuzz target in
/// fuzz/fuzz_targets/<target>.rs.
const TARGETS: [&str; 9] = [
    "config",
    "service",
    "manifest",
    "propfind",
    "irods",
    "votable",
    "dachs",
    "webhook",
    "webconfig",
];

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

/// Runs the target's check over `cases()` inputs; a panic fails with the input saved.
fn fuzz(target: &'static str) {
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
        fuzzing::check(target, &bytes);
        Ok(())
    });
    if let Err(e) = result {
        panic!("{target}: {e}");
    }
    assert!(
        executions.get() >= u64::from(cases()),
        "{target}: too few runs"
    );
    harness::figure(&format!("FUZZ {target}: {} executions", executions.get()));
}

#[test]
fn every_seed_parses() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/service");
    for s in corpus("service") {
        vespa_agent::service::parse(&fuzzing::text(&s), &example).unwrap();
    }
    for s in corpus("propfind") {
        assert!(
            !vespa_agent::granules::webdav::parse_multistatus(&fuzzing::text(&s))
                .unwrap()
                .is_empty()
        );
    }
    for s in corpus("votable") {
        vespa_agent::dachs::votable::parse(&fuzzing::text(&s)).unwrap();
    }
    for s in corpus("irods") {
        vespa_agent::granules::irods::parse_rows(&fuzzing::text(&s)).unwrap();
    }
    for s in corpus("manifest") {
        vespa_agent::granules::manifest::parse("MANIFEST.tsv", &fuzzing::text(&s)).unwrap();
    }
    for s in corpus("webconfig") {
        let f =
            vespa_agent::web::file::parse(Path::new("/nonexistent/web.yml"), &fuzzing::text(&s));
        // The seeds name files that are not there: the YAML and its keys are accepted.
        assert!(
            f.is_ok()
                || f.as_ref()
                    .is_err_and(|e| e.to_string().contains("/nonexistent/")),
            "{:?}",
            f.err()
        );
    }
    let dir = tempfile::tempdir().unwrap();
    for s in corpus("config") {
        fuzzing::load_config(dir.path(), &s).unwrap();
    }
    let skipped = vespa_agent::dachs::cli::skipped_sources(&fuzzing::text(&corpus("dachs")[0]));
    assert_eq!(skipped.len(), 1, "{skipped:?}");
}

// One proptest run per target, so that a failure names its target.
#[test]
fn the_configuration() {
    fuzz("config");
}

#[test]
fn the_web_configuration_file() {
    fuzz("webconfig");
}

#[test]
fn vespa_service_toml() {
    fuzz("service");
}

#[test]
fn the_checksum_manifest() {
    fuzz("manifest");
}

#[test]
fn webdav_propfind_answers() {
    fuzz("propfind");
}

#[test]
fn irods_genquery_answers() {
    fuzz("irods");
}

#[test]
fn tap_votables() {
    fuzz("votable");
}

#[test]
fn dachs_command_output() {
    fuzz("dachs");
}

#[test]
fn gitlab_webhook_bodies() {
    fuzz("webhook");
    // With a wrong secret nothing is even parsed.
    let hook = fuzzing::Hook::new();
    for s in corpus("webhook") {
        assert!(matches!(
            hook.handle(b"wrong", &s),
            vespa_agent::hooks::Verdict::Unauthorized
        ));
    }
}

#[test]
fn every_target_has_a_test_here() {
    let me = include_str!("fuzz.rs");
    for t in TARGETS {
        assert!(me.contains(&format!("fuzz(\"{t}\")")), "{t}");
        assert!(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join(format!("../fuzz/fuzz_targets/{t}.rs"))
                .is_file(),
            "no cargo-fuzz target {t}"
        );
    }
}
