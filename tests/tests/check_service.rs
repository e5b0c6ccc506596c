//! `vespa-agent check-service`, the provider's check in their own CI, against a real DaCHS
//! installation (the scratch instance it sets up beside the harness's): the example passes;
//! each broken case fails naming the file, line and column a provider would open; the JUnit
//! report parses and counts the right failures.

use std::path::Path;
use std::process::Command;

use harness::churn::example_rd;
use harness::git::LocalRepo;
use harness::*;

/// Runs `check-service` on the repository with no agent configuration, as in a provider's CI.
fn check(repo: &LocalRepo, args: &[&str]) -> (Output, String) {
    let junit = repo.path().join("../junit-report.xml");
    let _ = std::fs::remove_file(&junit);
    let out = Command::new(bin())
        .arg("--config-dir")
        .arg("/nonexistent")
        .arg("--vendor-config-dir")
        .arg("/nonexistent")
        .args(["-q", "check-service", "--junit"])
        .arg(&junit)
        .args(args)
        .arg(repo.path())
        .output()
        .unwrap();
    let out = Output {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    (out, std::fs::read_to_string(junit).unwrap_or_default())
}

/// The report read by Python's XML parser: (tests, failures, errors, <failure> elements).
fn junit_counts(xml: &str) -> (usize, usize, usize, usize) {
    let out = Command::new("python3")
        .args([
            "-c",
            "import sys, xml.etree.ElementTree as E\n\
             r = E.fromstring(sys.stdin.read())\n\
             print(r.get('tests'), r.get('failures'), r.get('errors'), len(list(r.iter('failure'))))",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(xml.as_bytes())?;
            c.wait_with_output()
        })
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let n: Vec<usize> = text
        .split_whitespace()
        .map(|v| v.parse().unwrap())
        .collect();
    assert_eq!(n.len(), 4, "the JUnit report does not parse: {xml}");
    (n[0], n[1], n[2], n[3])
}

/// The example with its collection read from the example granules in this checkout.
fn example_repo() -> LocalRepo {
    let repo = LocalRepo::new();
    let granules = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/granules/epnlab");
    let toml = std::fs::read_to_string(repo.path().join("vespa-service.toml"))
        .unwrap()
        .replace(
            "file:///srv/vespa-example/granules/epnlab",
            &granules.canonicalize().unwrap().display().to_string(),
        );
    repo.write("vespa-service.toml", &toml);
    repo.commit("granules from the checkout");
    repo
}

/// A broken commit: one file replaced, and where its finding must point.
struct Broken {
    what: &'static str,
    path: &'static str,
    text: String,
    at: String,
    args: &'static [&'static str],
}

#[test]
fn the_example_passes_and_each_broken_case_is_named_where_it_is() {
    if !require_dachs() {
        return;
    }
    let repo = example_repo();
    let (out, xml) = check(&repo, &[]);
    assert_eq!(out.code(), 0, "the example: {out:?}");
    assert_eq!(out.stdout, "", "findings on the example: {out:?}");
    assert_eq!(junit_counts(&xml), (4, 0, 0, 0), "{xml}");
    let (out, xml) = check(&repo, &["--import-sample", "3"]);
    assert_eq!(out.code(), 0, "the example with a sample: {out:?}");
    assert_eq!(junit_counts(&xml), (5, 0, 0, 0), "{xml}");

    let rd = example_rd("epnlab");
    let toml = std::fs::read_to_string(repo.path().join("vespa-service.toml")).unwrap();
    let bogus_line = rd
        .lines()
        .position(|l| l.contains("<index columns=\"source_file\"/>"))
        .unwrap()
        + 1;
    let case = |what, rd_text: String, at: String, args: &'static [&'static str]| Broken {
        what,
        path: if at.starts_with("vespa-service") {
            "vespa-service.toml"
        } else {
            "epnlab/q.rd"
        },
        text: rd_text,
        at,
        args,
    };
    let cases = [
        case(
            "a key of vespa-service.toml out of bounds",
            toml.replace("dir = \"epnlab\"", "dir = \"../etc\""),
            "vespa-service.toml:".to_owned(),
            &[],
        ),
        case(
            "an element DaCHS does not know",
            rd.replace("<index columns=\"source_file\"/>", "<bogus/>"),
            // DaCHS counts columns from 0, and its numbers are kept as it says them.
            format!("epnlab/q.rd:{bogus_line}:4: "),
            &[],
        ),
        case(
            "XML that is not well-formed",
            rd.replacen("</table>", "</tabel>", 1),
            format!(
                "epnlab/q.rd:{}:",
                rd.lines().position(|l| l.contains("</table>")).unwrap() + 1
            ),
            &[],
        ),
        case(
            "Python 2 in the RD, seen by the sample's import",
            rd.replace(
                "table.deleteMatching(",
                "print \"replacing\"\n        table.deleteMatching(",
            ),
            "epnlab/q.rd:".to_owned(),
            &["--import-sample", "2"],
        ),
    ];
    for Broken {
        what,
        path,
        text,
        at,
        args,
    } in cases
    {
        let repo = example_repo();
        repo.write(path, &text);
        repo.commit(what);
        let (out, xml) = check(&repo, args);
        assert_eq!(out.code(), 1, "{what}: {out:?}");
        let findings: Vec<&str> = out.stdout.lines().collect();
        assert!(
            findings.len() == 1 && findings[0].starts_with(&at),
            "{what}: wanted one finding at {at}: {out:?}"
        );
        let (tests, failures, errors, elements) = junit_counts(&xml);
        assert!(
            tests >= 2 && failures == 1 && errors == 0 && elements == 1,
            "{what}: {xml}"
        );
    }

    // A symlink out of the repository: the node's own materialize rule names it.
    let repo = example_repo();
    std::os::unix::fs::symlink("/etc/passwd", repo.path().join("epnlab/passwd")).unwrap();
    repo.commit("a symlink out");
    let (out, _) = check(&repo, &[]);
    assert_eq!(out.code(), 1, "{out:?}");
    assert!(out.stdout.starts_with("epnlab/passwd:1:1: "), "{out:?}");
}

/// The provider's regression suites run against the scratch instance after the sample's
/// import: a failing test is named at its `<regTest>` line; with the services of several nodes
/// in folders, `--path` checks one and names files as the repository has them.
#[test]
fn regression_suites_and_service_folders() {
    if !require_dachs() {
        return;
    }
    let repo = example_repo();
    let toml = std::fs::read_to_string(repo.path().join("vespa-service.toml")).unwrap();
    let suite = |min: usize| {
        example_rd("epnlab").replace(
            "</resource>",
            &format!(
                r#"  <regSuite title="checks">
    <regTest title="at least {min} granules" tags="deploy">
      <url parSet="TAP" QUERY="SELECT granule_uid FROM epnlab.epn_core">/tap/sync</url>
      <code>
        self.assertTrue(len(self.getVOTableRows()) >= {min})
      </code>
    </regTest>
  </regSuite>
</resource>"#
            ),
        )
    };
    repo.run(&["rm", "-rq", "."]);
    repo.write("lyon/dachs-1/vespa-service.toml", &toml);
    repo.write("lyon/dachs-1/epnlab/q.rd", &suite(2));
    repo.write("graz/dachs-2/vespa-service.toml", "not TOML [");
    repo.commit("two nodes' services");
    let started = std::time::Instant::now();
    let (out, xml) = check(&repo, &["--path", "lyon/dachs-1", "--import-sample", "3"]);
    assert_eq!(out.code(), 0, "a passing suite: {out:?}");
    assert_eq!(junit_counts(&xml), (6, 0, 0, 0), "{xml}");
    figure(&format!(
        "check-service with --import-sample 3 and a regression suite: {:.1} s",
        started.elapsed().as_secs_f64()
    ));

    repo.write("lyon/dachs-1/epnlab/q.rd", &suite(300));
    repo.commit("a test that fails");
    let (out, xml) = check(&repo, &["--path", "lyon/dachs-1", "--import-sample", "3"]);
    assert_eq!(out.code(), 1, "a failing suite: {out:?}");
    let line = suite(300)
        .lines()
        .position(|l| l.contains("<regTest title=\"at least 300"))
        .unwrap()
        + 1;
    assert!(
        out.stdout.starts_with(&format!(
            "lyon/dachs-1/epnlab/q.rd:{line}:5: regression test FAIL at least 300 granules"
        )),
        "{out:?}"
    );
    assert_eq!(junit_counts(&xml).1, 1, "{xml}");

    // The other node's folder is broken: checked on its own, it fails there.
    let (out, _) = check(&repo, &["--path", "graz/dachs-2"]);
    assert_eq!(out.code(), 1, "{out:?}");
    assert!(
        out.stdout.starts_with("graz/dachs-2/vespa-service.toml:1:"),
        "{out:?}"
    );
}
