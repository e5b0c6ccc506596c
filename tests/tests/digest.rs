//! `vespa-agent status --digest` against the real DaCHS: the digest of a node serving the
//! example is stable from one reading to the next, counts every row, and changes when one cell
//! of one row changes in the database.

use std::process::Command;

use harness::fault::{Fault, FaultProxy};
use harness::git::LocalRepo;
use harness::*;

const NAME: &str = "vt_digest";

fn digest(home: &Home) -> (String, serde_json::Value) {
    let text = home.output(&["status", "--digest"]);
    assert_eq!(text.code(), 0, "{text:?}");
    let json = home.output(&["status", "--digest", "--json"]);
    assert_eq!(json.code(), 0, "{json:?}");
    (text.stdout, serde_json::from_str(&json.stdout).unwrap())
}

fn psql(sql: &str) {
    let out = Command::new("runuser")
        .args([
            "-u", "postgres", "--", "psql", "-q", "-d", "gavo", "-c", sql,
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn the_digest_is_stable_counts_every_row_and_sees_one_changed_cell() {
    if !require_dachs() {
        return;
    }
    remove_resource(NAME);
    let (repo, home) = LocalRepo::example_as(NAME);
    let out = home.output(&["sync"]);
    assert_eq!(out.code(), 0, "{out:?}");
    let sha = repo.run(&["rev-parse", "HEAD"]);

    let (first, json) = digest(&home);
    let (second, _) = digest(&home);
    assert_eq!(first, second, "the same node read twice");
    assert!(first.starts_with(&format!("revision {sha}\n")), "{first}");
    assert_eq!(json["revision"], sha.as_str());
    assert_eq!(json["tables"][0]["table"], format!("{NAME}.epn_core"));
    assert_eq!(json["tables"][0]["rows"], 20);
    let last = first.lines().last().unwrap();
    assert_eq!(last, format!("digest {}", json["digest"].as_str().unwrap()));

    psql(&format!(
        "UPDATE {NAME}.epn_core SET target_name = 'Venus' WHERE granule_uid = 'g00000003'"
    ));
    let (changed, _) = digest(&home);
    assert_ne!(changed.lines().last(), first.lines().last());
    psql(&format!(
        "UPDATE {NAME}.epn_core SET target_name = 'Mars' WHERE granule_uid = 'g00000003'"
    ));
    let (back, _) = digest(&home);
    assert_eq!(back, first, "the same rows again");

    // A cut, failed or reset answer to the rows' query (the second TAP request; the count
    // passes) is an error that names the table, never a digest.
    let port: u16 = dachs_url().rsplit(':').next().unwrap().parse().unwrap();
    let proxy = FaultProxy::start(port);
    home.write(
        "etc/agent.d/90-proxy.toml",
        &format!("[dachs]\nurl = \"http://127.0.0.1:{}\"\n", proxy.port),
    );
    for (fault, what) in [
        (Fault::Truncate(0.5), "cut in half"),
        (Fault::Truncate(0.97), "its end missing"),
        (Fault::Status(502), "HTTP 502"),
        (Fault::Reset, "reset"),
    ] {
        proxy
            .plan
            .add("POST", "/tap/sync", Fault::Hook(Box::new(|| {})));
        proxy.plan.add("POST", "/tap/sync", fault);
        let out = home.output(&["status", "--digest"]);
        assert_ne!(out.code(), 0, "{what}: {out:?}");
        assert!(
            !out.stdout.contains("digest "),
            "{what}: a digest was printed: {out:?}"
        );
        assert!(
            out.stderr.contains(&format!("{NAME}.epn_core")),
            "{what}: {out:?}"
        );
        assert_eq!(
            proxy.plan.pending(),
            0,
            "{what}: the rows were not asked for"
        );
    }
    std::fs::remove_file(home.path("etc/agent.d/90-proxy.toml")).unwrap();
    assert_eq!(digest(&home).0, first, "the same rows through no proxy");

    // No state store: nothing to digest, said plainly.
    let empty = Home::new(&dachs_url(), "");
    let out = empty.output(&["status", "--digest"]);
    assert_ne!(out.code(), 0);
    assert!(out.stderr.contains("no state store"), "{out:?}");
    remove_resource(NAME);
}
