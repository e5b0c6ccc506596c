//! Granules over the iRODS HTTP API, against a double written from the API's reference
//! (tests/src/irods.rs; no iRODS server can run here): the paged GenQuery listing, iRODS's
//! own SHA-256 verifying files with no manifest, token expiry and re-authentication, resume by
//! offset, changes and removals, and the errors a site can produce.

use std::time::Duration;

use harness::dav::{PASSWORD, USER};
use harness::fault::{Fault, FaultProxy};
use harness::irods::IrodsDouble;
use vespa_agent::granules::transfer::Limits;
use vespa_agent::granules::{Job, Synced, sync};
use vespa_agent::service::Collection;
use vespa_agent::state::{GranuleRecord, HeldGranule};

fn job(source: String, target: &std::path::Path, known: Vec<GranuleRecord>, password: &str) -> Job {
    let dir = target.parent().unwrap();
    let secret = harness::private_file(&dir.join("credential"), &format!("{USER}:{password}"));
    let credential = vespa_agent::config::SecretFile::resolve(
        secret.to_str().unwrap(),
        std::path::Path::new("/"),
    )
    .and_then(|f| f.read())
    .unwrap();
    Job {
        resource: "irods".into(),
        collection: Collection {
            name: "c".into(),
            source,
            target: "data".into(),
            include: vec!["**".into()],
            exclude: vec![],
            credential: Some("c".into()),
            manifest: None,
        },
        target: target.to_owned(),
        sha: "feed".into(),
        owner: None,
        known: known.iter().map(HeldGranule::from).collect(),
        credential: Some(credential),
        concurrency: 2,
        limits: Limits {
            backoff: Duration::from_millis(50),
            stall_timeout: Duration::from_secs(5),
            ..Limits::default()
        },
        progress: None,
    }
}

/// What the state store holds after this sync: what arrived, and what was refused (with the
/// listing's version, so it is not fetched again until that changes).
fn remember(known: &mut Vec<GranuleRecord>, s: &Synced) {
    for g in s.fetched.iter().chain(&s.refused) {
        known.retain(|k| k.path != g.path);
        known.push(g.clone());
    }
    known.retain(|k| !s.vanished.contains(&k.path));
}

fn body(n: usize, seed: u8) -> Vec<u8> {
    (0..n).map(|i| (i as u8).wrapping_mul(13) ^ seed).collect()
}

#[test]
fn a_collection_is_listed_in_pages_verified_by_irods_checksums_and_kept_in_step() {
    let d = IrodsDouble::start();
    // Pages of 3 rows: the listing must walk them all.
    d.max_rows.store(3, std::sync::atomic::Ordering::SeqCst);
    let src = d.data("epnlab");
    std::fs::create_dir_all(src.join("sub/deep")).unwrap();
    for i in 0..5 {
        std::fs::write(src.join(format!("g{i}.csv")), body(100 + i, i as u8)).unwrap();
    }
    std::fs::write(src.join("sub/s.csv"), body(50, 7)).unwrap();
    std::fs::write(src.join("sub/deep/d.csv"), body(60, 8)).unwrap();
    // One object's catalogue checksum disagrees with its bytes; one has only an MD5.
    {
        let mut st = d.state.lock().unwrap();
        st.checksums.insert(
            "epnlab/g3.csv".into(),
            "sha2:ypeBEsobvcr6wjGzmiPcTaeG7/gUfE5yuYB3ha/uSLs=".into(),
        );
        st.checksums.insert(
            "epnlab/g4.csv".into(),
            "0cc175b9c0f1b6a831c399e269772661".into(),
        );
    }
    let dest = tempfile::tempdir().unwrap();
    let target = dest.path().join("data");
    let s = sync(&job(d.source("epnlab"), &target, Vec::new(), PASSWORD)).unwrap();
    assert!(s.failure().is_none(), "{:?}", s.failure());
    assert_eq!(s.added, 6, "{:?}", s.refused);
    assert_eq!(s.refused.len(), 1);
    assert_eq!(s.refused[0].path, "g3.csv");
    assert!(!target.join("g3.csv").exists());
    assert_eq!(
        std::fs::read(target.join("sub/deep/d.csv")).unwrap(),
        body(60, 8)
    );
    assert_eq!(
        s.fetched
            .iter()
            .find(|g| g.path == "g0.csv")
            .unwrap()
            .source_url,
        format!("{}/g0.csv", d.source("epnlab"))
    );
    let queries = d.ops().iter().filter(|o| *o == "execute_genquery").count();
    // 2 rows below, 5 at the top: pages of 3, each query ended by an empty page.
    assert_eq!(queries, 3 + 2, "{:?}", d.ops());

    // Unchanged: nothing read. Then one changed, one gone, one new.
    let mut known = Vec::new();
    remember(&mut known, &s);
    let reads = |d: &IrodsDouble| d.ops().iter().filter(|o| o.starts_with("read")).count();
    let before = reads(&d);
    let again = sync(&job(d.source("epnlab"), &target, known.clone(), PASSWORD)).unwrap();
    assert!(again.is_empty());
    assert_eq!(
        reads(&d),
        before,
        "g3.csv stays refused until its entry changes"
    );
    std::fs::write(src.join("g0.csv"), body(100, 99)).unwrap();
    std::fs::remove_file(src.join("sub/s.csv")).unwrap();
    std::fs::write(src.join("g9.csv"), body(10, 9)).unwrap();
    let next = sync(&job(d.source("epnlab"), &target, known, PASSWORD)).unwrap();
    assert_eq!((next.added, next.changed, next.vanished.len()), (1, 1, 1));
    assert_eq!(std::fs::read(target.join("g0.csv")).unwrap(), body(100, 99));
    assert!(!target.join("sub/s.csv").exists());
}

#[test]
fn an_expired_token_is_renewed_and_a_wrong_password_is_said_plainly() {
    let d = IrodsDouble::start();
    let src = d.data("c");
    for i in 0..4 {
        std::fs::write(src.join(format!("g{i}.csv")), body(10, i)).unwrap();
    }
    // Every token dies at once: each request meets a 401 and authenticates again.
    *d.lifetime.lock().unwrap() = Duration::ZERO;
    let dest = tempfile::tempdir().unwrap();
    let target = dest.path().join("data");
    let e = sync(&job(d.source("c"), &target, Vec::new(), PASSWORD)).expect_err("no token lives");
    assert!(e.to_string().contains("a fresh token was refused"), "{e}");
    *d.lifetime.lock().unwrap() = Duration::from_millis(300);
    let mut j = job(d.source("c"), &target, Vec::new(), PASSWORD);
    j.concurrency = 1;
    std::thread::sleep(Duration::from_millis(400));
    let s = sync(&j).unwrap();
    assert!(s.failure().is_none(), "{:?}", s.failure());
    assert_eq!(s.added, 4);

    let e = sync(&job(d.source("c"), &target, Vec::new(), "wrong")).expect_err("refused");
    assert!(e.to_string().contains("authentication failed"), "{e}");
    assert!(!e.to_string().contains("wrong"), "{e}");
    let e = sync(&job(d.source("nope"), &target, Vec::new(), PASSWORD)).expect_err("no such");
    assert!(e.to_string().contains("is not a collection"), "{e}");
}

#[test]
fn a_broken_read_resumes_at_its_offset() {
    let d = IrodsDouble::start();
    let src = d.data("c");
    let big = body(1 << 20, 5);
    std::fs::write(src.join("big.dat"), &big).unwrap();
    let proxy = FaultProxy::start(d.port);
    proxy.plan.add("GET", "op=read", Fault::Truncate(0.5));
    let dest = tempfile::tempdir().unwrap();
    let target = dest.path().join("data");
    let source = d
        .source("c")
        .replace(&format!(":{}/", d.port), &format!(":{}/", proxy.port));
    let s = sync(&job(source, &target, Vec::new(), PASSWORD)).unwrap();
    assert!(s.failure().is_none(), "{:?}", s.failure());
    assert_eq!(std::fs::read(target.join("big.dat")).unwrap(), big);
    let reads: Vec<_> = d
        .ops()
        .into_iter()
        .filter(|o| o.starts_with("read"))
        .collect();
    assert_eq!(reads.len(), 2, "{reads:?}");
    assert!(
        reads[0].ends_with("offset=0") && !reads[1].ends_with("offset=0"),
        "{reads:?}"
    );
}
