use super::*;
use std::path::PathBuf;

/// A checked-out tree with one good resource, a symlinked directory that escapes, and a
/// resource whose RD is a symlink.
fn tree() -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(t.path().join("epnlab")).unwrap();
    std::fs::write(t.path().join("epnlab/q.rd"), "<resource/>").unwrap();
    std::os::unix::fs::symlink("/etc", t.path().join("evil")).unwrap();
    std::fs::create_dir_all(t.path().join("linkrd")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", t.path().join("linkrd/q.rd")).unwrap();
    t
}

fn corpus() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/service-bad")
}

#[test]
fn every_bad_file_of_the_corpus_is_rejected_with_its_line_and_reason() {
    let t = tree();
    let mut n = 0;
    for entry in std::fs::read_dir(corpus()).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let expect = text
            .lines()
            .next()
            .unwrap()
            .strip_prefix("# expect: ")
            .unwrap();
        let err = parse(&text, t.path())
            .expect_err(&path.display().to_string())
            .to_string();
        assert!(
            err.starts_with("vespa-service.toml:"),
            "{}: {err}",
            path.display()
        );
        assert!(
            err.contains(expect),
            "{}:\n  want: {expect}\n  got:  {err}",
            path.display()
        );
        for secret in ["hunter2", "s3cret"] {
            assert!(
                !err.contains(secret),
                "{}: the error repeats a secret: {err}",
                path.display()
            );
        }
        n += 1;
    }
    assert!(n >= 20, "the corpus shrank to {n} files");
}

#[test]
fn the_example_service_is_valid() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/service");
    let s = load(&root).unwrap();
    assert_eq!(s.resources.len(), 1);
    let r = &s.resources[0];
    assert_eq!(
        (r.dir.as_str(), r.rd_id().as_str(), r.publish),
        ("epnlab", "epnlab/q", true)
    );
    assert_eq!(r.collections[0].target, "data");
    assert!(s.server.server_url.is_some() && s.server.authority.is_some());
}

#[test]
fn defaults_fill_what_is_left_out() {
    let t = tree();
    let s = parse(
        "[[resource]]\ndir = \"epnlab\"\n[[resource.collection]]\nname = \"g\"\nsource = \"/srv/g\"\n",
        t.path(),
    )
    .unwrap();
    let r = &s.resources[0];
    assert_eq!((r.rd.as_str(), r.publish), ("q", true));
    let c = &r.collections[0];
    assert_eq!(
        (c.target.as_str(), c.include.clone(), c.credential.clone()),
        ("data", vec!["*".to_string()], None)
    );
    assert_eq!(s.server, ServerSettings::default());
}

#[test]
fn an_empty_service_is_valid_and_a_missing_file_is_not() {
    let t = tree();
    assert_eq!(parse("", t.path()).unwrap().resources, vec![]);
    assert!(matches!(load(t.path()), Err(ServiceError::Missing)));
    std::os::unix::fs::symlink("/etc/hostname", t.path().join(SERVICE_FILE)).unwrap();
    assert!(
        load(t.path())
            .unwrap_err()
            .to_string()
            .contains("regular file")
    );
}

/// The keys the parser knows in each table, read from its own "unknown key" message, so a key
/// added to the code but not to the man page fails here.
fn known_keys(table_prefix: &str, t: &Path) -> Vec<String> {
    let text = format!("{table_prefix}\nno-such-key = 1\n");
    let err = parse(&text, t).unwrap_err().to_string();
    let list = err
        .split_once("known keys here are ")
        .unwrap_or_else(|| panic!("{err}"))
        .1;
    list.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_man_page_documents_every_key() {
    let t = tree();
    let man = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../man/vespa-service.toml.5"),
    )
    .unwrap();
    let tables = [
        "",
        "[server]",
        "[[resource]]\ndir = \"epnlab\"",
        "[[resource]]\ndir = \"epnlab\"\n[[resource.collection]]\nname = \"g\"\nsource = \"/srv\"",
    ];
    let mut n = 0;
    for table in tables {
        for key in known_keys(table, t.path()) {
            n += 1;
            if key == "server" || key == "resource" || key == "collection" {
                continue;
            }
            assert!(
                man.contains(&format!(".It Cm {key} ")),
                "vespa-service.toml(5) does not document `{key}`"
            );
        }
    }
    assert!(n >= 15, "only {n} keys found");
}
