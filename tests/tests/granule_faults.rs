//! Granule transfers through faults: a proxy between the agent's sync and a real Apache mod_dav
//! server (the B2SAFE/Davrods stand-in) answers 5xx, cuts bodies short, flips bytes, stalls,
//! resets connections, refuses the credentials mid-run, and changes the collection during a
//! transfer. Whatever happens, no file lands under its name unless it is whole and verified;
//! retries back off; what arrived is kept; the next pass completes.

use std::path::PathBuf;
use std::time::Duration;

use harness::dav::{DavServer, PASSWORD, USER};
use harness::fault::{Fault, FaultProxy};
use harness::rclone::RcloneDav;
use vespa_agent::granules::transfer::Limits;
use vespa_agent::granules::{Job, Synced, sync};
use vespa_agent::service::Collection;
use vespa_agent::state::{GranuleRecord, HeldGranule};

/// The WebDAV server behind the proxy.
enum Peer {
    Apache(DavServer),
    Rclone(RcloneDav),
}

impl Peer {
    fn port(&self) -> u16 {
        match self {
            Peer::Apache(d) => d.port,
            Peer::Rclone(r) => r.port,
        }
    }

    fn data(&self, collection: &str) -> PathBuf {
        match self {
            Peer::Apache(d) => d.data(collection),
            Peer::Rclone(r) => r.data(collection),
        }
    }

    fn url(&self, collection: &str) -> String {
        match self {
            Peer::Apache(d) => d.url(collection),
            Peer::Rclone(r) => r.url(collection),
        }
    }
}

struct Bench {
    dav: Peer,
    proxy: FaultProxy,
    dest: tempfile::TempDir,
    secret: PathBuf,
}

impl Bench {
    fn new() -> Option<Bench> {
        Bench::with(Peer::Apache(DavServer::start()?))
    }

    fn with(dav: Peer) -> Option<Bench> {
        let proxy = FaultProxy::start(dav.port());
        let dest = tempfile::tempdir().unwrap();
        let secret = harness::private_file(
            &dest.path().join("credential"),
            &format!("{USER}:{PASSWORD}"),
        );
        Some(Bench {
            dav,
            proxy,
            dest,
            secret,
        })
    }

    fn put(&self, name: &str, body: &[u8]) {
        std::fs::write(self.dav.data("c").join(name), body).unwrap();
    }

    fn target(&self) -> PathBuf {
        self.dest.path().join("data")
    }

    fn job(&self, known: Vec<GranuleRecord>, manifest: Option<&str>, limits: Limits) -> Job {
        let credential = vespa_agent::config::SecretFile::resolve(
            self.secret.to_str().unwrap(),
            std::path::Path::new("/"),
        )
        .and_then(|f| f.read())
        .unwrap();
        Job {
            resource: "faults".into(),
            collection: Collection {
                name: "c".into(),
                source: self.proxy.url(&self.dav.url("c"), self.dav.port()),
                target: "data".into(),
                include: vec!["*.dat".into(), "MANIFEST*".into()],
                exclude: vec![],
                credential: Some("c".into()),
                manifest: manifest.map(str::to_owned),
            },
            target: self.target(),
            sha: "f00d".into(),
            owner: None,
            known: known.iter().map(HeldGranule::from).collect(),
            credential: Some(credential),
            concurrency: 2,
            limits,
            progress: None,
        }
    }

    /// Every file in the target, and no temporary one.
    fn landed(&self) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(self.target()).unwrap() {
            let e = e.unwrap();
            out.push((
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            ));
        }
        out.sort();
        out
    }

    fn gets(&self, name: &str) -> Vec<String> {
        self.proxy
            .plan
            .seen
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.starts_with("GET ") && r.contains(name))
            .cloned()
            .collect()
    }
}

fn quick() -> Limits {
    Limits {
        retries: 3,
        backoff: Duration::from_millis(50),
        stall_timeout: Duration::from_secs(2),
        ..Limits::default()
    }
}

fn body(n: usize, seed: u8) -> Vec<u8> {
    (0..n).map(|i| (i as u8).wrapping_mul(31) ^ seed).collect()
}

fn sha256(b: &[u8]) -> String {
    use sha2::Digest;
    format!("{:x}", sha2::Sha256::digest(b))
}

/// What the state store would hold after this sync.
fn remember(known: &mut Vec<GranuleRecord>, s: &Synced) {
    for g in &s.fetched {
        known.retain(|k| k.path != g.path);
        known.push(g.clone());
    }
    known.retain(|k| !s.vanished.contains(&k.path));
}

#[test]
fn a_body_cut_short_is_resumed_where_it_broke() {
    let Some(b) = Bench::new() else { return };
    let big = body(3 << 20, 1);
    b.put("big.dat", &big);
    b.proxy.plan.add("GET", "big.dat", Fault::Truncate(0.6));
    let s = sync(&b.job(Vec::new(), None, quick())).unwrap();
    assert!(s.failure().is_none(), "{:?}", s.failure());
    assert_eq!(s.retries, 1);
    assert_eq!(b.landed(), vec![("big.dat".to_owned(), big.clone())]);
    let gets = b.gets("big.dat");
    assert_eq!(gets.len(), 2, "{gets:?}");
    assert!(
        gets[1].contains("range: bytes=") && !gets[1].contains("bytes=0-"),
        "the retry did not resume: {gets:?}"
    );
    assert_eq!(s.fetched[0].sha256, sha256(&big));
}

#[test]
fn server_errors_resets_and_stalls_are_retried_with_backoff() {
    let Some(b) = Bench::new() else { return };
    let files: Vec<(String, Vec<u8>)> = (0..4)
        .map(|i| (format!("g{i}.dat"), body(200_000 + i, i as u8)))
        .collect();
    for (n, f) in &files {
        b.put(n, f);
    }
    let plan = &b.proxy.plan;
    plan.add("GET", "g0.dat", Fault::Status(500));
    plan.add("GET", "g0.dat", Fault::Status(503));
    plan.add("GET", "g1.dat", Fault::Reset);
    plan.add("GET", "g2.dat", Fault::Stall(Duration::from_secs(6)));
    plan.add("PROPFIND", "/dav/c", Fault::Status(502));
    // A listing that fails is not retried within the pass: the pass fails and the next lists.
    let e = sync(&b.job(Vec::new(), None, quick())).expect_err("listing failed");
    assert!(e.to_string().contains("HTTP 502"), "{e}");
    let s = sync(&b.job(Vec::new(), None, quick())).unwrap();
    assert!(s.failure().is_none(), "{:?}", s.failure());
    assert_eq!(s.retries, 4);
    assert_eq!(plan.pending(), 0);
    assert_eq!(b.landed(), files);
}

#[test]
fn retries_run_out_and_the_next_pass_completes() {
    let Some(b) = Bench::new() else { return };
    b.put("a.dat", &body(5000, 1));
    b.put("b.dat", &body(7000, 2));
    for _ in 0..3 {
        b.proxy.plan.add("GET", "b.dat", Fault::Truncate(0.5));
    }
    let limits = Limits {
        retries: 2,
        ..quick()
    };
    let first = sync(&b.job(Vec::new(), None, limits.clone())).unwrap();
    let e = first.failure().expect("b.dat failed");
    assert_eq!(e.kind(), "transfer", "{e}");
    assert!(e.to_string().contains("b.dat"), "{e}");
    assert_eq!(first.fetched.len(), 1, "a.dat is kept");
    assert_eq!(first.deferred.len(), 1);
    // Only a.dat under its name; b.dat's bytes so far wait under the temporary name.
    let names: Vec<_> = b.landed().into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        [".vespa-tmp-b.dat", ".vespa-tmp-b.dat.validator", "a.dat"]
    );

    let mut known = Vec::new();
    remember(&mut known, &first);
    let second = sync(&b.job(known, None, limits)).unwrap();
    assert!(second.failure().is_none());
    assert_eq!((second.added, second.fetched.len()), (1, 1));
    assert_eq!(
        b.landed(),
        vec![
            ("a.dat".to_owned(), body(5000, 1)),
            ("b.dat".to_owned(), body(7000, 2))
        ]
    );
    let gets = b.gets("b.dat");
    assert!(
        gets.last().unwrap().contains("range: bytes="),
        "the next pass did not resume: {gets:?}"
    );
}

#[test]
fn corrupted_bytes_never_land_under_their_name() {
    let Some(b) = Bench::new() else { return };
    let good = body(100_000, 3);
    let other = body(50_000, 4);
    b.put("good.dat", &good);
    b.put("bad.dat", &other);
    b.put(
        "MANIFEST.sha256",
        // The manifest is right; the wire is not.
        format!(
            "good.dat\t{}\tsha256:{}\nbad.dat\t{}\tsha256:{}\n",
            good.len(),
            sha256(&good),
            other.len(),
            sha256(&other)
        )
        .as_bytes(),
    );
    let plan = &b.proxy.plan;
    // Damaged once: retried from the first byte and verified.
    plan.add("GET", "good.dat", Fault::Corrupt);
    // Damaged the same way every time: the same wrong checksum twice is refused.
    for _ in 0..4 {
        plan.add("GET", "bad.dat", Fault::Corrupt);
    }
    let s = sync(&b.job(Vec::new(), Some("MANIFEST.sha256"), quick())).unwrap();
    assert_eq!(b.landed(), vec![("good.dat".to_owned(), good)]);
    assert_eq!(s.refused.len(), 1);
    let why = s.refused[0].error.as_deref().unwrap();
    assert!(
        why.contains("bad.dat") && why.contains("manifest says"),
        "{why}"
    );
    assert_eq!(
        b.gets("bad.dat").len(),
        2,
        "refused at the second identical sum"
    );
    assert_eq!(s.failed.get("checksum_mismatch"), Some(&1));
}

#[test]
fn credentials_refused_mid_run_stop_the_sync_and_keep_what_arrived() {
    let Some(b) = Bench::new() else { return };
    for i in 0..6 {
        b.put(&format!("g{i}.dat"), &body(1000, i));
    }
    b.proxy.plan.add("GET", "g2.dat", Fault::Status(401));
    let mut job = b.job(Vec::new(), None, quick());
    job.concurrency = 1;
    let s = sync(&job).unwrap();
    let e = s.failure().expect("stopped");
    assert!(e.to_string().contains("authentication failed"), "{e}");
    assert!(!e.to_string().contains(PASSWORD));
    // In listing order: g0 and g1 arrived; nothing after the refusal was tried.
    assert_eq!(s.fetched.len(), 2);
    assert!(b.gets("g3.dat").is_empty());
    let mut known = Vec::new();
    remember(&mut known, &s);
    let next = sync(&b.job(known, None, quick())).unwrap();
    assert!(next.failure().is_none());
    assert_eq!(next.added, 4);
    assert_eq!(b.landed().len(), 6);
}

#[test]
fn a_collection_that_changes_during_the_transfer_is_listed_again_next_pass() {
    let Some(b) = Bench::new() else { return };
    b.put("a.dat", &body(1000, 1));
    b.put("b.dat", &body(2000, 2));
    b.put("c.dat", &body(3000, 3));
    let data = b.dav.data("c");
    let (grown, gone) = (data.join("b.dat"), data.join("c.dat"));
    b.proxy.plan.add(
        "GET",
        "b.dat",
        Fault::Hook(Box::new(move || {
            std::fs::write(&grown, body(2500, 9)).unwrap();
        })),
    );
    b.proxy.plan.add(
        "GET",
        "c.dat",
        Fault::Hook(Box::new(move || std::fs::remove_file(&gone).unwrap())),
    );
    let s = sync(&b.job(Vec::new(), None, quick())).unwrap();
    // A race with the collection, not an error: both are left for the next listing.
    assert!(s.failure().is_none(), "{:?}", s.failure());
    let mut deferred: Vec<_> = s
        .deferred
        .iter()
        .map(|(p, e)| (p.as_str(), e.kind()))
        .collect();
    deferred.sort();
    assert_eq!(
        deferred,
        [
            ("b.dat", "changed_in_transfer"),
            ("c.dat", "changed_in_transfer")
        ]
    );
    assert_eq!(b.landed(), vec![("a.dat".to_owned(), body(1000, 1))]);
    let mut known = Vec::new();
    remember(&mut known, &s);
    let next = sync(&b.job(known, None, quick())).unwrap();
    assert_eq!(next.added, 1);
    assert_eq!(
        b.landed(),
        vec![
            ("a.dat".to_owned(), body(1000, 1)),
            ("b.dat".to_owned(), body(2500, 9))
        ]
    );
}

#[test]
fn a_partial_file_of_content_that_changed_meanwhile_starts_over() {
    let Some(b) = Bench::new() else { return };
    b.put("a.dat", &body(400_000, 1));
    b.proxy.plan.add("GET", "a.dat", Fault::Truncate(0.5));
    let limits = Limits {
        retries: 0,
        ..quick()
    };
    let first = sync(&b.job(Vec::new(), None, limits.clone())).unwrap();
    assert_eq!(first.deferred.len(), 1);
    // The same size, other bytes, a new ETag: If-Range makes the server send it all.
    std::thread::sleep(Duration::from_millis(1100));
    let fresh = body(400_000, 7);
    b.put("a.dat", &fresh);
    let next = sync(&b.job(Vec::new(), None, limits)).unwrap();
    assert!(next.failure().is_none(), "{:?}", next.failure());
    assert_eq!(b.landed(), vec![("a.dat".to_owned(), fresh.clone())]);
    assert_eq!(next.fetched[0].sha256, sha256(&fresh));
}

#[test]
fn the_disk_reserve_stops_transfers_before_the_filesystem_fills() {
    let Some(b) = Bench::new() else { return };
    b.put("a.dat", &body(1000, 1));
    std::fs::create_dir_all(b.target()).unwrap();
    // Well over what is free, whatever else the machine writes or deletes meanwhile.
    let (free, _) = vespa_agent::node::filesystem(&b.target()).unwrap();
    let limits = Limits {
        disk_reserve: free + 1_000_000_000,
        ..quick()
    };
    let s = sync(&b.job(Vec::new(), None, limits)).unwrap();
    let e = s.failure().expect("reserve reached");
    assert_eq!(e.kind(), "disk_reserve");
    assert!(e.to_string().contains("granules.disk-reserve"), "{e}");
    assert!(b.landed().is_empty());
}

/// The same sync against `rclone serve webdav`: its listing, its ETags, its Range answers.
#[test]
fn rclone_serve_webdav_is_followed_the_same_way() {
    let Some(r) = RcloneDav::start() else { return };
    let b = Bench::with(Peer::Rclone(r)).unwrap();
    let sub = b.dav.data("c").join("sub dir");
    std::fs::create_dir_all(&sub).unwrap();
    b.put("a.dat", &body(1000, 1));
    b.put("big.dat", &body(2 << 20, 2));
    std::fs::write(sub.join("n.dat"), body(10, 3)).unwrap();
    b.proxy.plan.add("GET", "big.dat", Fault::Truncate(0.3));
    let mut job = b.job(Vec::new(), None, quick());
    job.collection.include = vec!["**/*.dat".into(), "*.dat".into()];
    let s = sync(&job).unwrap();
    assert!(s.failure().is_none(), "{:?}", s.failure());
    assert_eq!(s.added, 3);
    let gets = b.gets("big.dat");
    assert!(gets[1].contains("range: bytes="), "not resumed: {gets:?}");
    assert_eq!(
        std::fs::read(b.target().join("sub dir/n.dat")).unwrap(),
        body(10, 3)
    );
    assert_eq!(
        std::fs::read(b.target().join("big.dat")).unwrap(),
        body(2 << 20, 2)
    );

    // Nothing changed: nothing moves. Then one changed, one gone.
    let mut known = Vec::new();
    remember(&mut known, &s);
    let mut job = b.job(known.clone(), None, quick());
    job.collection.include = vec!["**/*.dat".into(), "*.dat".into()];
    let again = sync(&job).unwrap();
    assert!(again.is_empty() && again.fetched.is_empty());
    std::thread::sleep(Duration::from_millis(1100));
    b.put("a.dat", &body(1200, 9));
    std::fs::remove_file(sub.join("n.dat")).unwrap();
    let mut job = b.job(known, None, quick());
    job.collection.include = vec!["**/*.dat".into(), "*.dat".into()];
    let next = sync(&job).unwrap();
    assert_eq!((next.added, next.changed, next.vanished.len()), (0, 1, 1));
    assert_eq!(
        std::fs::read(b.target().join("a.dat")).unwrap(),
        body(1200, 9)
    );
    assert!(!b.target().join("sub dir/n.dat").exists());
}
