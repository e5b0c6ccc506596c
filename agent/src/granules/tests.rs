use super::*;

fn collection(source: &Path, include: &[&str], exclude: &[&str]) -> Collection {
    Collection {
        name: "granules".into(),
        source: format!("file://{}", source.display()),
        target: "data".into(),
        include: include.iter().map(|s| s.to_string()).collect(),
        exclude: exclude.iter().map(|s| s.to_string()).collect(),
        credential: None,
        manifest: None,
    }
}

fn job(src: &Path, target: &Path, known: Vec<GranuleRecord>) -> Job {
    Job {
        resource: "epnlab".into(),
        collection: collection(src, &["*.csv"], &["skip*"]),
        target: target.to_owned(),
        sha: "c0ffee".into(),
        owner: None,
        known: known.iter().map(HeldGranule::from).collect(),
        credential: None,
        concurrency: 3,
        limits: transfer::Limits::default(),
        progress: None,
    }
}

fn write(dir: &Path, name: &str, body: &str) {
    std::fs::write(dir.join(name), body).unwrap();
}

#[test]
fn only_what_changed_moves_and_vanished_files_go() {
    let src = tempfile::tempdir().unwrap();
    let dst = tempfile::tempdir().unwrap();
    let target = dst.path().join("data");
    write(src.path(), "a.csv", "a");
    write(src.path(), "b.csv", "bb");
    write(src.path(), "skip.csv", "excluded");
    write(src.path(), "notes.txt", "not included");

    let first = sync(&job(src.path(), &target, Vec::new())).unwrap();
    assert_eq!(
        (first.added, first.changed, first.vanished.len()),
        (2, 0, 0)
    );
    assert_eq!(first.bytes, 3);
    assert_eq!(std::fs::read_to_string(target.join("b.csv")).unwrap(), "bb");
    assert!(!target.join("skip.csv").exists() && !target.join("notes.txt").exists());
    let sha_a = &first
        .fetched
        .iter()
        .find(|g| g.path == "a.csv")
        .unwrap()
        .sha256;
    assert_eq!(
        sha_a,
        "ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb"
    );
    let known: Vec<GranuleRecord> = first.fetched.clone();

    // Nothing changed: nothing moves.
    let again = sync(&job(src.path(), &target, known.clone())).unwrap();
    assert!(again.is_empty(), "{again:?}");

    // One changed, one vanished, one new; each written file newer than any before.
    std::thread::sleep(std::time::Duration::from_millis(20));
    write(src.path(), "a.csv", "a2");
    std::fs::remove_file(src.path().join("b.csv")).unwrap();
    write(src.path(), "c.csv", "c");
    let next = sync(&job(src.path(), &target, known.clone())).unwrap();
    assert_eq!((next.added, next.changed), (1, 1));
    assert_eq!(next.vanished, ["b.csv"]);
    assert!(!target.join("b.csv").exists());
    let newest_before = known.iter().map(|g| g.mtime_ms).max().unwrap();
    for g in &next.fetched {
        assert!(g.mtime_ms > newest_before, "{g:?}");
        let on_disk = std::fs::metadata(target.join(&g.path))
            .unwrap()
            .modified()
            .unwrap();
        let ms = on_disk
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        assert_eq!(ms, g.mtime_ms);
    }
    let leftovers: Vec<_> = std::fs::read_dir(&target)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(TMP_PREFIX))
        .collect();
    assert!(leftovers.is_empty());
}

#[test]
fn bad_listings_and_short_reads_are_refused_and_leave_nothing() {
    for bad in [
        "../etc/passwd",
        "/abs",
        "a/../../b",
        "",
        ".vespa-tmp-x.csv",
        "x\0y",
    ] {
        assert!(!plain(bad), "{bad:?}");
    }
    assert!(plain("sub/dir/g.csv"));

    let src = tempfile::tempdir().unwrap();
    let dst = tempfile::tempdir().unwrap();
    write(src.path(), "a.csv", "abc");
    let source = Source::File(file::FileSource::new(src.path().to_str().unwrap()).unwrap());
    let lying = Entry {
        path: "a.csv".into(),
        size: 10,
        version: "x".into(),
        validator: None,
        checksum: None,
        modified_ms: None,
    };
    let shared = transfer::Shared::new(transfer::Limits::default());
    let request = transfer::Request {
        entry: &lying,
        target: dst.path(),
        mtime_ms: now_ms(),
        owner: None,
        expected_sha256: None,
        may_wait: true,
    };
    let e = transfer::fetch(&source, &shared, &request).unwrap_err();
    assert!(matches!(e, GranuleError::Changed { got: 3, .. }), "{e}");
    assert_eq!(
        std::fs::read_dir(dst.path()).unwrap().count(),
        0,
        "a partial file was left"
    );

    let missing = tempfile::tempdir().unwrap().path().join("gone");
    let e = sync(&job(&missing, &dst.path().join("data"), Vec::new())).unwrap_err();
    assert_eq!(e.kind(), "source");
}

#[test]
fn a_manifest_admits_only_files_it_vouches_for() {
    let src = tempfile::tempdir().unwrap();
    let dst = tempfile::tempdir().unwrap();
    let target = dst.path().join("data");
    write(src.path(), "a.csv", "a");
    write(src.path(), "b.csv", "b");
    write(src.path(), "c.csv", "c");
    let a = "ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb";
    // b's checksum is a's: a corrupted transfer, or a wrong manifest. c is not listed.
    write(
        src.path(),
        "MANIFEST.tsv",
        &format!("a.csv\t1\tsha256:{a}\nb.csv\t1\tsha256:{a}\n"),
    );
    let mut j = job(src.path(), &target, Vec::new());
    j.collection.include = vec!["*".into()];
    j.collection.exclude = vec![];
    j.collection.manifest = Some("MANIFEST.tsv".into());
    let out = sync(&j).unwrap();
    assert_eq!(
        out.fetched
            .iter()
            .map(|g| g.path.as_str())
            .collect::<Vec<_>>(),
        ["a.csv"]
    );
    let refused: Vec<(&str, &str)> = out
        .refused
        .iter()
        .map(|g| (g.path.as_str(), g.error.as_deref().unwrap()))
        .collect();
    assert_eq!(refused.len(), 2, "{refused:?}");
    assert!(
        refused[0].0 == "b.csv" && refused[0].1.contains("the manifest says"),
        "{refused:?}"
    );
    assert!(refused[1].0 == "c.csv" && refused[1].1.contains("not in the collection's manifest"));
    assert!(!target.join("b.csv").exists() && !target.join("c.csv").exists());
    assert!(
        !target.join("MANIFEST.tsv").exists(),
        "the manifest is not a granule"
    );

    // Refused files are not fetched again until their listing or manifest entry changes.
    let mut known = out.fetched.clone();
    known.extend(out.refused.clone());
    let mut j = job(src.path(), &target, known);
    j.collection.include = vec!["*".into()];
    j.collection.exclude = vec![];
    j.collection.manifest = Some("MANIFEST.tsv".into());
    assert!(sync(&j).unwrap().refused.is_empty());
    let b = "3e23e8160039594a33894f6564e1b1348bbd7a0088d42c4acb73eeaed59c009d";
    write(
        src.path(),
        "MANIFEST.tsv",
        &format!("a.csv\t1\tsha256:{a}\nb.csv\t1\tsha256:{b}\n"),
    );
    let again = sync(&j).unwrap();
    assert_eq!(
        again
            .fetched
            .iter()
            .map(|g| g.path.as_str())
            .collect::<Vec<_>>(),
        ["b.csv"]
    );
}

#[test]
fn files_keep_their_source_date_unless_it_would_not_look_newer_to_dachs() {
    let src = tempfile::tempdir().unwrap();
    let dst = tempfile::tempdir().unwrap();
    let target = dst.path().join("data");
    let set_mtime = |name: &str, secs: u64| {
        let f = std::fs::File::options()
            .write(true)
            .open(src.path().join(name))
            .unwrap();
        f.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))
            .unwrap();
    };
    write(src.path(), "a.csv", "a");
    set_mtime("a.csv", 1_700_000_000);
    let first = sync(&job(src.path(), &target, Vec::new())).unwrap();
    // Two nodes (or one rebuilt) copying the same source hand DaCHS the same date.
    assert_eq!(first.fetched[0].mtime_ms, 1_700_000_000_000);
    let other = tempfile::tempdir().unwrap();
    let second = sync(&job(src.path(), &other.path().join("data"), Vec::new())).unwrap();
    assert_eq!(second.fetched[0].mtime_ms, first.fetched[0].mtime_ms);

    // Replaced by content dated earlier: DaCHS would skip a file not newer than it recorded,
    // so the copy is dated past every earlier one instead.
    write(src.path(), "a.csv", "older content");
    set_mtime("a.csv", 1_600_000_000);
    let next = sync(&job(src.path(), &target, first.fetched.clone())).unwrap();
    assert_eq!(next.changed, 1);
    assert!(next.fetched[0].mtime_ms > first.fetched[0].mtime_ms);
}

#[test]
fn many_small_files_land_whole_after_shared_flushes() {
    // Two full flushes and a remainder, in nested folders.
    let src = tempfile::tempdir().unwrap();
    let dst = tempfile::tempdir().unwrap();
    let target = dst.path().join("data");
    let n = 2 * transfer::FLUSH_EVERY + 22;
    for i in 0..n {
        let dir = src.path().join(format!("d{}", i % 3));
        std::fs::create_dir_all(&dir).unwrap();
        write(
            &dir,
            &format!("g{i:03}.csv"),
            &format!("row {i}\n").repeat(i + 1),
        );
    }
    let mut j = job(src.path(), &target, Vec::new());
    j.collection.include = vec!["**/*.csv".into()];
    let out = sync(&j).unwrap();
    assert_eq!((out.added, out.fetched.len()), (n, n), "{:?}", out.deferred);
    for g in &out.fetched {
        let on_disk = target.join(&g.path);
        let bytes = std::fs::read(&on_disk).unwrap();
        assert_eq!(bytes, std::fs::read(src.path().join(&g.path)).unwrap());
        use sha2::Digest;
        assert_eq!(g.sha256, format!("{:x}", sha2::Sha256::digest(&bytes)));
        let meta = std::fs::metadata(&on_disk).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(meta.permissions().mode() & 0o777, 0o644);
        let mtime = meta
            .modified()
            .unwrap()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap();
        assert_eq!(mtime.as_millis() as i64, g.mtime_ms);
    }
    let leftovers: Vec<_> = walk(&target)
        .into_iter()
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(TMP_PREFIX)
        })
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// Every file below `dir`.
pub(super) fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
