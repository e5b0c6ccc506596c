//! Following a service repository given as a local path (the demo's embedded default and an
//! air-gapped node's): a tag instead of a branch, a pinned commit, and the whole corpus of bad
//! vespa-service.toml files pushed through the real pipeline, each leaving `current` alone.

use std::path::{Path, PathBuf};

use harness::git::LocalRepo;
use harness::*;

fn revisions(home: &Home) -> Vec<PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(home.path("state/revisions"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

#[test]
fn a_tag_is_followed_through_its_annotation_and_when_it_moves() {
    if !require_dachs() {
        return;
    }
    let repo = LocalRepo::new();
    let a = repo.run(&["rev-parse", "HEAD"]);
    repo.run(&["tag", "-a", "-m", "release 1", "release"]);
    repo.write("NOTES", "after the release");
    let b = repo.commit("not released yet");
    let home = repo.home("tag = \"release\"\n");

    let out = home.output(&["sync"]);
    assert_eq!(out.code(), 0, "{out:?}");
    assert_eq!(
        current(&home),
        Some(format!("revisions/{a}")),
        "the tag names {a}, main is at {b}"
    );

    repo.run(&["tag", "-f", "-a", "-m", "release 2", "release", &b]);
    let out = home.output(&["sync"]);
    assert_eq!(out.code(), 0, "{out:?}");
    assert_eq!(current(&home), Some(format!("revisions/{b}")));

    repo.run(&["tag", "-d", "release"]);
    let out = home.output(&["sync"]);
    assert_eq!(out.code(), 1);
    assert!(
        out.stderr.contains("tag release does not exist"),
        "{}",
        out.stderr
    );
    assert_eq!(current(&home), Some(format!("revisions/{b}")));
}

#[test]
fn a_pinned_commit_stays_while_the_branch_moves_and_must_be_on_it() {
    if !require_dachs() {
        return;
    }
    let repo = LocalRepo::new();
    let a = repo.run(&["rev-parse", "HEAD"]);
    repo.write("NOTES", "later");
    repo.commit("later");
    let home = repo.home(&format!("commit = \"{a}\"\n"));
    let out = home.output(&["sync"]);
    assert_eq!(out.code(), 0, "{out:?}");
    assert_eq!(current(&home), Some(format!("revisions/{a}")));

    // A commit on another branch only.
    repo.run(&["checkout", "-q", "-b", "side", &a]);
    repo.write("NOTES", "side");
    let side = repo.commit("side");
    repo.run(&["checkout", "-q", "main"]);
    let home = repo.home(&format!("commit = \"{side}\"\n"));
    let out = home.output(&["sync"]);
    assert_eq!(out.code(), 1);
    assert!(
        out.stderr
            .contains(&format!("pinned commit {side} is not on branch main")),
        "{}",
        out.stderr
    );
    assert_eq!(current(&home), None);
}

#[test]
fn every_bad_service_file_is_refused_by_the_pipeline_and_current_stays() {
    if !require_dachs() {
        return;
    }
    let repo = LocalRepo::new();
    let good = repo.run(&["rev-parse", "HEAD"]);
    let home = repo.home("");
    assert_eq!(home.output(&["sync"]).code(), 0);
    let kept = Some(format!("revisions/{good}"));
    let before = revisions(&home);

    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../agent/tests/fixtures/service-bad");
    let mut n = 0;
    for entry in std::fs::read_dir(corpus).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        repo.write(
            "vespa-service.toml",
            &std::fs::read_to_string(&path).unwrap(),
        );
        let sha = repo.commit(&name);
        let out = home.output(&["sync"]);
        assert_eq!(out.code(), 1, "{name}: {out:?}");
        assert!(
            out.stderr.contains(&format!(
                "commit {sha} rejected at validate: vespa-service.toml"
            )),
            "{name}: {}",
            out.stderr
        );
        assert_eq!(current(&home), kept, "{name}");
        assert_eq!(revisions(&home), before, "{name} left a revision behind");
        n += 1;
    }
    assert!(n >= 20, "only {n} bad files");
}

#[test]
fn the_users_git_configuration_changes_nothing_the_agent_fetches() {
    if !require_dachs() {
        return;
    }
    let repo = LocalRepo::new();
    let sha = repo.run(&["rev-parse", "HEAD"]);
    let home = repo.home("");
    // A ~/.gitconfig that would send the fetch elsewhere, if libgit2 read it.
    let user = tempfile::tempdir().unwrap();
    let url = repo.path().display().to_string();
    std::fs::write(
        user.path().join(".gitconfig"),
        format!("[url \"/nonexistent/elsewhere\"]\n\tinsteadOf = {url}\n"),
    )
    .unwrap();
    let out = home
        .command(&["sync"])
        .env("HOME", user.path())
        .env("XDG_CONFIG_HOME", user.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(current(&home), Some(format!("revisions/{sha}")));
}
