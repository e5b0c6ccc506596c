//! Services shaped as providers' really are, deployed by the agent on the real DaCHS from
//! nothing. Here: a B2SAFE collection laid out in folders (by target, night and instrument,
//! depths 1 to 3) over Apache mod_dav, brought in by parallel transfers that all make the same
//! folders at once, on a node where none of them exists yet: every fresh deploy must converge in
//! its first pass, at 4 and at 16 transfers at a time. (Before the fix, a worker that found a
//! folder missing and then lost the race to create it failed the pass with "File exists".)

use std::collections::BTreeMap;
use std::path::Path;

use harness::churn::{ROWS_PER_FILE, csv, example_rd, served};
use harness::dav::{DavServer, PASSWORD, USER};
use harness::git::LocalRepo;
use harness::*;

const NAME: &str = "vt_nested";
const FILES: u32 = 60;
const RUNS: usize = 3;

/// File `i`'s folder: 60 folders at depths 1 to 3 below 10 targets, parents shared.
fn folder(i: u32) -> String {
    match i % 3 {
        0 => format!("t{}", i % 10),
        1 => format!("t{}/n{i}", i % 10),
        _ => format!("t{}/n{}/i{i}", (i - 1) % 10, i - 1),
    }
}

#[test]
fn a_collection_in_nested_folders_converges_in_its_first_pass_on_a_fresh_node() {
    if !require_dachs() {
        return;
    }
    let Some(dav) = DavServer::start() else {
        return;
    };
    let data = dav.data(NAME);
    let mut expected = BTreeMap::new();
    for i in 0..FILES {
        let dir = data.join(folder(i));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("g{i:04}.csv")), csv(i, 0)).unwrap();
        for r in 0..ROWS_PER_FILE {
            expected.insert(format!("c{i:04}r{r}"), "v0".to_owned());
        }
    }

    // The example's RD reading its data directory recursively, as such a provider's RD does.
    let (repo, _) = LocalRepo::example_as(NAME);
    let rd_path = format!("{NAME}/q.rd");
    let rd = std::fs::read_to_string(repo.path().join(&rd_path)).unwrap();
    let recursive = rd.replace(
        r#"<sources pattern="data/*.csv">"#,
        r#"<sources pattern="data/*.csv" recurse="True">"#,
    );
    assert_ne!(recursive, rd, "the example RD no longer reads data/*.csv");
    repo.write(&rd_path, &recursive);
    repo.write(
        "vespa-service.toml",
        &format!(
            "[[resource]]\ndir = \"{NAME}\"\n\n[[resource.collection]]\nname = \"granules\"\n\
             source = \"{}\"\ncredential = \"b2safe\"\ninclude = [\"**/*.csv\"]\n",
            dav.url(NAME)
        ),
    );
    repo.commit("a collection laid out in folders");

    let mut last = None;
    for concurrency in [4, 16] {
        for run in 1..=RUNS {
            // A node where nothing of the resource exists yet: no directory, no table, no state.
            remove_resource(NAME);
            let home = Home::new(&dachs_url(), "");
            home.write(
                "etc/agent.d/20-source.toml",
                &format!(
                    "[source]\nurl = \"{}\"\n\n[granules]\nconcurrency = {concurrency}\n\
                     credentials-dir = \"{}\"\n",
                    repo.path().display(),
                    home.path("credentials").display()
                ),
            );
            secret_file(&home, "credentials/b2safe", &format!("{USER}:{PASSWORD}\n"));
            let out = home.output(&["sync"]);
            let what = format!("concurrency {concurrency}, fresh deploy {run} of {RUNS}");
            assert_eq!(out.code(), 0, "{what}: the first pass failed: {out:?}");
            assert_eq!(
                served(NAME).as_ref(),
                Ok(&expected),
                "{what}: DaCHS does not serve every granule of every folder"
            );
            let plan = home.output(&["plan"]);
            assert_eq!(plan.code(), 0, "{what}: not converged: {plan:?}");
            assert!(
                Path::new("/var/gavo/inputs")
                    .join(NAME)
                    .join("data")
                    .join(folder(FILES - 1))
                    .is_dir()
            );
            last = Some(home);
        }
    }

    // Churn on the last node: a file in a new folder three deep, one changed, one gone.
    let home = last.unwrap();
    let deep = data.join("t9/n999/i999");
    std::fs::create_dir_all(&deep).unwrap();
    std::fs::write(deep.join("g0999.csv"), csv(999, 0)).unwrap();
    std::fs::write(data.join(folder(1)).join("g0001.csv"), csv(1, 1)).unwrap();
    std::fs::remove_file(data.join(folder(2)).join("g0002.csv")).unwrap();
    for r in 0..ROWS_PER_FILE {
        expected.insert(format!("c0999r{r}"), "v0".to_owned());
        expected.insert(format!("c0001r{r}"), "v1".to_owned());
        expected.remove(&format!("c0002r{r}"));
    }
    let out = home.output(&["sync"]);
    assert_eq!(out.code(), 0, "the churn: {out:?}");
    assert_eq!(served(NAME).as_ref(), Ok(&expected), "after the churn");
    // A broken RD: refused, and every folder's granules keep being served.
    repo.write(
        &rd_path,
        &recursive.replace(r#"recurse="True""#, r#"recurse="perhaps""#),
    );
    repo.commit("a broken attribute");
    let out = home.output(&["sync"]);
    assert_ne!(out.code(), 0, "a broken RD was applied: {out:?}");
    assert_eq!(served(NAME).as_ref(), Ok(&expected), "after the refusal");
    remove_resource(NAME);
}

/// The example's RD under `name`, its import reading exactly one file, `data/<file>`, as many
/// providers' RDs name their input: full (`<sources>` with the file's name, no `updating`, no
/// prune step) or incremental (the example's updating data, its pattern naming one file).
fn literal_rd(name: &str, file: &str, full: bool) -> String {
    let rd = example_rd(name);
    if !full {
        return rd.replace(
            r#"<sources pattern="data/*.csv">"#,
            &format!(r#"<sources pattern="data/{file}">"#),
        );
    }
    let prune = rd.find("  <!-- 1) prune").unwrap();
    let import = rd.find("  <!-- 2) import").unwrap();
    let rd = format!("{}{}", &rd[..prune], &rd[import..]);
    let sources = rd.find(r#"<sources pattern="data/*.csv">"#).unwrap();
    let end = rd[sources..].find("</sources>").unwrap() + sources + "</sources>".len();
    format!(
        "{}<sources>data/{file}</sources>{}",
        &rd[..sources],
        &rd[end..]
    )
    .replace(
        r#"<data id="import" updating="True">"#,
        r#"<data id="import">"#,
    )
}

/// The rows DaCHS should serve for these files of the churn's CSV shape, all at version 0.
fn rows_of(files: &[u32]) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    for f in files {
        for r in 0..ROWS_PER_FILE {
            m.insert(format!("c{f:04}r{r}"), "v0".to_owned());
        }
    }
    m
}

fn collection(source: &Path, include: &str) -> String {
    format!(
        "[[resource.collection]]\nname = \"granules\"\nsource = \"{}\"\ninclude = [\"{include}\"]\n",
        source.display()
    )
}

/// An RD that names its one input file literally deploys on a node where nothing exists yet, in
/// its first pass, full and incremental; and an RD change that names a file the same commit
/// brings deploys too. (Before the fix, the deploy ran `dachs imp` before the collection had
/// brought the file: "I/O operation failed ([Errno 2] No such file or directory", refused, for
/// ever.)
#[test]
fn an_rd_naming_its_source_literally_deploys_on_a_fresh_node_and_on_a_change() {
    if !require_dachs() {
        return;
    }
    let source = tempfile::tempdir().unwrap();
    std::fs::write(source.path().join("granules.csv"), csv(0, 0)).unwrap();
    std::fs::write(source.path().join("extra.csv"), csv(1, 0)).unwrap();
    for (name, full) in [("vt_litfull", true), ("vt_litinc", false)] {
        remove_resource(name);
        let (repo, home) = LocalRepo::example_as(name);
        let service = |file: &str| {
            format!(
                "[[resource]]\ndir = \"{name}\"\n{}",
                collection(source.path(), file)
            )
        };
        repo.write(
            &format!("{name}/q.rd"),
            &literal_rd(name, "granules.csv", full),
        );
        repo.write("vespa-service.toml", &service("granules.csv"));
        repo.commit("an RD that names its input file");
        let out = home.output(&["sync"]);
        assert_eq!(out.code(), 0, "{name}: the first deploy failed: {out:?}");
        assert_eq!(served(name), Ok(rows_of(&[0])), "{name}: first deploy");

        // One commit: the RD reads another file, and the collection brings it.
        repo.write(
            &format!("{name}/q.rd"),
            &literal_rd(name, "extra.csv", full),
        );
        repo.write("vespa-service.toml", &service("extra.csv"));
        repo.commit("the RD reads another file");
        let out = home.output(&["sync"]);
        assert_eq!(out.code(), 0, "{name}: the RD change failed: {out:?}");
        assert_eq!(served(name), Ok(rows_of(&[1])), "{name}: after the change");
        let plan = home.output(&["plan"]);
        assert_eq!(plan.code(), 0, "{name}: not converged: {plan:?}");
        remove_resource(name);
    }
}

/// A commit under which no granule file of a resource imports (its own Python fails, or every
/// row misses a column) is refused and rolled back like any apply failure, with DaCHS's words
/// in `sync` and `status`: on a fresh node nothing is deployed, on a serving one the previous
/// revision keeps serving every row. Files that imported before and fail under the new RD (a
/// full import reads them all again) refuse the commit too.
#[test]
fn an_rd_under_which_no_granule_imports_is_a_broken_commit() {
    if !require_dachs() {
        return;
    }
    const NAME: &str = "vt_noimport";
    let source = tempfile::tempdir().unwrap();
    std::fs::write(source.path().join("granules.csv"), csv(0, 0)).unwrap();
    std::fs::write(source.path().join("extra.csv"), csv(1, 0)).unwrap();
    // A full import of every file (`<sources>`'s text is a literal name, a pattern its attribute).
    let good = literal_rd(NAME, "*.csv", true).replace(
        "<sources>data/*.csv</sources>",
        r#"<sources pattern="data/*.csv"/>"#,
    );
    // Written for Python 2: DaCHS fails the whole import at the script.
    let python2 = good.replace(
        "table.deleteMatching(",
        "print \"replacing\"\n        table.deleteMatching(",
    );
    // Every row misses a column: DaCHS skips every file (`imp -c`).
    let no_column = good.replace("@obs_id", "@no_such_column");
    assert!(python2 != good && no_column != good);
    let refused = |home: &Home, words: &[&str], what: &str| {
        let out = home.output(&["sync"]);
        assert_ne!(out.code(), 0, "{what}: applied: {out:?}");
        let status = home.output(&["status"]);
        for w in words {
            assert!(
                out.stderr.contains(w),
                "{what}: sync does not say `{w}`: {out:?}"
            );
            assert!(
                status.stdout.contains(w),
                "{what}: status does not say `{w}`: {status:?}"
            );
        }
    };
    let fresh_node = || {
        remove_resource(NAME);
        let (repo, home) = LocalRepo::example_as(NAME);
        repo.write(
            "vespa-service.toml",
            &format!(
                "[[resource]]\ndir = \"{NAME}\"\n{}",
                collection(source.path(), "*.csv")
            ),
        );
        (repo, home)
    };

    // Fresh nodes: nothing deployed, nothing served, no revision applied.
    for (rd, words, what) in [
        (
            &python2,
            &["Missing parentheses"][..],
            "Python 2 on a fresh node",
        ),
        (
            &no_column,
            &["no granule file", "no_such_column"][..],
            "a column missing on a fresh node",
        ),
    ] {
        let (repo, home) = fresh_node();
        repo.write(&format!("{NAME}/q.rd"), rd);
        repo.commit(what);
        refused(&home, words, what);
        assert!(
            served(NAME).is_err(),
            "{what}: the refused resource is served"
        );
        assert_eq!(current(&home), None, "{what}: a revision was applied");
        assert!(
            !Path::new("/var/gavo/inputs")
                .join(NAME)
                .join("q.rd")
                .exists(),
            "{what}: the refused RD is left in place"
        );
    }

    // A serving node: the previous revision keeps serving every row.
    let (repo, home) = fresh_node();
    repo.write(&format!("{NAME}/q.rd"), &good);
    repo.commit("a good RD");
    let out = home.output(&["sync"]);
    assert_eq!(out.code(), 0, "the good RD: {out:?}");
    assert_eq!(served(NAME), Ok(rows_of(&[0, 1])));
    let applied = current(&home);
    for (rd, words, what) in [
        (
            &python2,
            &["Missing parentheses"][..],
            "Python 2 on a serving node",
        ),
        (
            &no_column,
            &["imported under the previous revision", "no_such_column"][..],
            "a column missing on a serving node",
        ),
    ] {
        repo.write(&format!("{NAME}/q.rd"), rd);
        repo.commit(what);
        refused(&home, words, what);
        assert_eq!(served(NAME), Ok(rows_of(&[0, 1])), "{what}: rows lost");
        assert_eq!(current(&home), applied, "{what}: the revision moved");
    }
    remove_resource(NAME);
}

/// A repository holding the services of several nodes in folders, as VESPA's GitLab groups
/// them by institute and server: with `source.path` only that folder is the node's service; a
/// commit that changes only another node's folder applies nothing and runs no `dachs` command;
/// the folder may not be left by a symlink, nor be one.
#[test]
fn a_service_folder_inside_a_larger_repository() {
    if !require_dachs() {
        return;
    }
    const NAME: &str = "vt_folder";
    remove_resource(NAME);
    let (repo, home) = LocalRepo::example_as(NAME);
    let service = std::fs::read_to_string(repo.path().join("vespa-service.toml")).unwrap();
    let rd = std::fs::read_to_string(repo.path().join(NAME).join("q.rd")).unwrap();
    repo.run(&["rm", "-rq", "."]);
    let mine = "paris/dachs-1";
    repo.write(&format!("{mine}/vespa-service.toml"), &service);
    repo.write(&format!("{mine}/{NAME}/q.rd"), &rd);
    // Another node's service, broken as far as this node is concerned: never read here.
    repo.write("graz/dachs-2/vespa-service.toml", "this is not TOML [");
    repo.write("README.md", "the services of every node, one folder each\n");
    repo.commit("the services of two nodes");
    let (wrapper, log) = dachs_wrapper(&home);
    home.write(
        "etc/agent.d/20-source.toml",
        &format!(
            "[source]\nurl = \"{}\"\npath = \"{mine}\"\n[dachs]\nbin = \"{}\"\n",
            repo.path().display(),
            wrapper.display()
        ),
    );
    let out = home.output(&["sync"]);
    assert_eq!(out.code(), 0, "the folder's service: {out:?}");
    assert!(
        served(NAME).is_ok_and(|rows| !rows.is_empty()),
        "DaCHS does not serve the folder's resource"
    );
    let commands = lines(&log).len();
    assert!(commands > 0, "no dachs command ran for the first deploy");

    // Another node's folder changes: this node applies nothing.
    repo.write("graz/dachs-2/vespa-service.toml", "still not TOML [[");
    let other = repo.commit("another node's change");
    let out = home.output(&["sync"]);
    assert_eq!(out.code(), 0, "another folder's commit: {out:?}");
    assert_eq!(
        lines(&log)[commands..],
        [] as [String; 0],
        "a commit outside the folder ran dachs"
    );
    assert!(
        current(&home).is_some_and(|c| c.ends_with(&other)),
        "the node does not follow the commit"
    );

    // A symlink out of the folder (inside the repository) is refused, and so is a folder that
    // is a symlink; the last good revision keeps serving.
    std::os::unix::fs::symlink(
        "../../../README.md",
        repo.path().join(mine).join(NAME).join("notes"),
    )
    .unwrap();
    repo.commit("a symlink out of the folder");
    let out = home.output(&["sync"]);
    assert_ne!(
        out.code(),
        0,
        "a symlink out of the folder was accepted: {out:?}"
    );
    assert!(out.stderr.contains("notes"), "{out:?}");
    assert!(current(&home).is_some_and(|c| c.ends_with(&other)));
    std::fs::remove_file(repo.path().join(mine).join(NAME).join("notes")).unwrap();
    repo.run(&["add", "-A"]);
    repo.run(&["mv", "paris", "lyon"]);
    std::os::unix::fs::symlink("lyon", repo.path().join("paris")).unwrap();
    repo.commit("the folder became a symlink");
    let out = home.output(&["sync"]);
    assert_ne!(
        out.code(),
        0,
        "a folder that is a symlink was followed: {out:?}"
    );
    assert!(out.stderr.contains("symlink"), "{out:?}");
    assert!(served(NAME).is_ok_and(|rows| !rows.is_empty()));
    remove_resource(NAME);
}

/// The example RD under `name` with a `<regSuite>`: an untagged test, one tagged `deploy` that
/// wants at least `min` granules, one tagged for another environment that always fails (it must
/// never run here), and `extra` inside the suite.
fn rd_with_suite(name: &str, min: usize, extra: &str) -> String {
    let rd = example_rd(name);
    let suite = format!(
        r#"
  <regSuite title="{name} regression">
    <regTest title="epn_core answers">
      <url parSet="TAP" QUERY="SELECT COUNT(*) AS n FROM {name}.epn_core">/tap/sync</url>
      <code>
        self.assertHasStrings('value="OK"')
      </code>
    </regTest>
    <regTest title="at least {min} granules" tags="deploy">
      <url parSet="TAP" QUERY="SELECT granule_uid FROM {name}.epn_core">/tap/sync</url>
      <code>
        rows = self.getVOTableRows()
        self.assertTrue(len(rows) >= {min}, "only %d rows"%len(rows))
      </code>
    </regTest>
    <regTest title="only on the production server" tags="production">
      <url>/nothing/here</url>
      <code>
        self.assertTrue(False, "a test for another environment ran")
      </code>
    </regTest>{extra}
  </regSuite>
</resource>"#
    );
    rd.replace("</resource>", &suite)
}

/// The provider's own regression tests gate the deploy: a suite that passes applies (the test
/// tagged for another environment never runs); one that fails is refused and rolled back, with
/// the failing test's title and DaCHS's words, while TAP keeps answering; one that hangs is
/// cut at its time limit.
#[test]
fn the_providers_regression_suites_gate_the_deploy() {
    if !require_dachs() {
        return;
    }
    const NAME: &str = "vt_regsuite";
    remove_resource(NAME);
    let (repo, home) = LocalRepo::example_as(NAME);
    home.write(
        "etc/agent.d/30-regression.toml",
        "[dachs]\nregression-timeout = \"8s\"\n",
    );
    let rd = format!("{NAME}/q.rd");
    repo.write(&rd, &rd_with_suite(NAME, 4, ""));
    repo.commit("regression tests");
    let plan = home.output(&["plan"]);
    assert!(
        plan.stdout.contains(&format!(
            "dachs test -t deploy {NAME}/q: \"{NAME} regression\" (2 tests)"
        )),
        "plan does not name the suites it would run: {plan:?}"
    );
    let out = home.output(&["sync"]);
    assert_eq!(out.code(), 0, "a passing suite: {out:?}");
    let status = home.output(&["status"]);
    assert!(
        status
            .stdout
            .contains(&format!("regression:   {NAME}: 2 of 2 tests passed")),
        "{status:?}"
    );
    let good = served(NAME).unwrap();
    let applied = current(&home);

    let prober = harness::churn::Prober::start(NAME);
    let cases = [
        (
            rd_with_suite(NAME, 400, ""),
            "FAIL at least 400 granules",
            "a failing test",
        ),
        (
            rd_with_suite(
                NAME,
                4,
                r#"
    <regTest title="a test that hangs">
      <url>/tap/availability</url>
      <code>
        import time
        time.sleep(120)
      </code>
    </regTest>"#,
            ),
            "did not finish within 8 s",
            "a hanging test",
        ),
    ];
    for (text, words, what) in &cases {
        repo.write(&rd, text);
        repo.commit(what);
        let started = std::time::Instant::now();
        let out = home.output(&["sync"]);
        assert_ne!(out.code(), 0, "{what}: applied: {out:?}");
        assert!(
            out.stderr.contains(words) && out.stderr.contains("rolled back"),
            "{what}: {out:?}"
        );
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "{what}: not cut at its limit"
        );
        let status = home.output(&["status"]);
        assert!(
            status.stdout.contains(words) && status.stdout.contains("FAILED at apply"),
            "{what}: {status:?}"
        );
        assert_eq!(served(NAME).as_ref(), Ok(&good), "{what}: rows changed");
        assert_eq!(current(&home), applied, "{what}: the revision moved");
    }
    let (queries, failed, errors) = prober.finish();
    assert_eq!(
        failed, 0,
        "TAP failed during the refused deploys: {errors:?}"
    );
    assert!(queries > 20, "only {queries} queries");

    // The gate switched off: the same failing suite applies.
    home.write(
        "etc/agent.d/30-regression.toml",
        "[dachs]\nregression-tests = false\n",
    );
    repo.write(&rd, &cases[0].0);
    repo.commit("the gate is off");
    let out = home.output(&["sync"]);
    assert_eq!(out.code(), 0, "with the gate off: {out:?}");
    remove_resource(NAME);
}

/// `rows` rows of the example's CSV shape, granule_uid `<prefix><n>`, target `target`.
fn rows_csv(prefix: &str, rows: usize, target: &str) -> String {
    let mut lines = csv(0, 0).lines().map(str::to_owned).collect::<Vec<_>>();
    let header = lines.remove(0);
    let template = lines.remove(0).replacen("v0", target, 1);
    let mut out = String::with_capacity(rows * (template.len() + 8));
    out.push_str(&header);
    out.push('\n');
    for n in 0..rows {
        out.push_str(&template.replacen("c0000r0", &format!("{prefix}{n}"), 1));
        out.push('\n');
    }
    out
}

/// One `SELECT COUNT(*)` over TAP.
fn count(table: &str) -> Result<u64, String> {
    let rows = harness::churn::tap_rows(&format!("SELECT COUNT(*) FROM {table}"))?;
    rows.first()
        .and_then(|r| r.first())
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| format!("no count from {table}: {rows:?}"))
}

/// A repository of three resources, each with its own collection and schema, shaped as
/// providers' are: granule files named with spaces, accents, `#` and `%` over WebDAV (an
/// incremental RD); an RD with two tables (epn_core and a view over it that the health check
/// queries too); a full-import RD that names one CSV of 100,000 rows literally. On a node where
/// nothing exists yet all three deploy in the first pass; they converge on churn; a commit that
/// breaks one is refused while all three keep serving.
#[test]
fn a_repository_of_several_resources_shaped_as_providers_have_them() {
    if !require_dachs() {
        return;
    }
    let Some(dav) = DavServer::start() else {
        return;
    };
    const NAMES: &str = "vt_names";
    const TWO: &str = "vt_two";
    const BIG: &str = "vt_big";
    const BIG_ROWS: usize = 100_000;
    for r in [NAMES, TWO, BIG] {
        remove_resource(r);
    }
    let odd = dav.data(NAMES);
    let odd_names = [
        "night 01.csv",
        "Tchourioumov–Guérassimenko.csv",
        "run#7.csv",
        "100% done.csv",
        "67P/nuit été.csv",
    ];
    let mut expected_odd = BTreeMap::new();
    for (i, name) in odd_names.iter().enumerate() {
        let path = odd.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, csv(i as u32, 0)).unwrap();
        expected_odd.extend(rows_of(&[i as u32]));
    }
    let local = tempfile::tempdir().unwrap();
    let (two_src, big_src) = (local.path().join(TWO), local.path().join(BIG));
    std::fs::create_dir_all(&two_src).unwrap();
    std::fs::create_dir_all(&big_src).unwrap();
    std::fs::write(two_src.join("a.csv"), csv(0, 0)).unwrap();
    std::fs::write(two_src.join("b.csv"), csv(1, 0)).unwrap();
    std::fs::write(big_src.join("big.csv"), rows_csv("b", BIG_ROWS, "Ceres")).unwrap();

    let repo = LocalRepo::new();
    repo.run(&["rm", "-rq", "epnlab"]);
    repo.write(
        &format!("{NAMES}/q.rd"),
        &example_rd(NAMES).replace(
            r#"<sources pattern="data/*.csv">"#,
            r#"<sources pattern="data/*.csv" recurse="True">"#,
        ),
    );
    let view = r#"
  <table id="targets" onDisk="True" adql="True">
    <meta name="description">Granules per target: a view over epn_core.</meta>
    <column name="target_name" type="text" required="True" description="The target."/>
    <column name="granules" type="bigint" required="True" description="Its granules."/>
    <viewStatement>
      CREATE VIEW \qName AS (SELECT target_name, COUNT(*) AS granules
        FROM \schema.epn_core GROUP BY target_name)
    </viewStatement>
  </table>

  <data id="views">
    <make table="targets"/>
  </data>
</resource>"#;
    let two_rd = example_rd(TWO).replace("</resource>", view);
    repo.write(&format!("{TWO}/q.rd"), &two_rd);
    repo.write(&format!("{BIG}/q.rd"), &literal_rd(BIG, "big.csv", true));
    repo.write(
        "vespa-service.toml",
        &format!(
            "[[resource]]\ndir = \"{NAMES}\"\n[[resource.collection]]\nname = \"odd\"\n\
             source = \"{}\"\ncredential = \"b2safe\"\ninclude = [\"**/*.csv\"]\n\n\
             [[resource]]\ndir = \"{TWO}\"\n{}\n\
             [[resource]]\ndir = \"{BIG}\"\n{}",
            dav.url(NAMES),
            collection(&two_src, "*.csv"),
            collection(&big_src, "big.csv"),
        ),
    );
    repo.commit("three resources");
    let home = Home::new(&dachs_url(), "");
    home.write(
        "etc/agent.d/20-source.toml",
        &format!(
            "[source]\nurl = \"{}\"\n\n[granules]\ncredentials-dir = \"{}\"\n",
            repo.path().display(),
            home.path("credentials").display()
        ),
    );
    secret_file(&home, "credentials/b2safe", &format!("{USER}:{PASSWORD}\n"));
    let converged = |what: &str, odd: &BTreeMap<String, String>, two: &[u32], big: u64| {
        assert_eq!(served(NAMES).as_ref(), Ok(odd), "{what}: {NAMES}");
        assert_eq!(served(TWO), Ok(rows_of(two)), "{what}: {TWO}");
        assert_eq!(
            count(&format!("{TWO}.targets")),
            Ok(1),
            "{what}: the view over {TWO}.epn_core"
        );
        assert_eq!(count(&format!("{BIG}.epn_core")), Ok(big), "{what}: {BIG}");
    };

    let t = std::time::Instant::now();
    let out = home.output(&["sync"]);
    assert_eq!(out.code(), 0, "the first pass: {out:?}");
    converged("the first pass", &expected_odd, &[0, 1], BIG_ROWS as u64);
    figure(&format!(
        "three resources (odd names over WebDAV, two tables, 100,000 rows in one CSV) deployed on a fresh node in {:.1} s",
        t.elapsed().as_secs_f64()
    ));
    let plan = home.output(&["plan"]);
    assert_eq!(plan.code(), 0, "not converged: {plan:?}");

    // Churn: a file with an odd name comes, one goes, one changes; the big file changes.
    std::fs::write(odd.join("new ü #2 50%.csv"), csv(9, 0)).unwrap();
    expected_odd.extend(rows_of(&[9]));
    std::fs::remove_file(odd.join("run#7.csv")).unwrap();
    for r in 0..ROWS_PER_FILE {
        expected_odd.remove(&format!("c0002r{r}"));
    }
    std::fs::write(odd.join("night 01.csv"), csv(0, 1)).unwrap();
    for r in 0..ROWS_PER_FILE {
        expected_odd.insert(format!("c0000r{r}"), "v1".into());
    }
    std::fs::remove_file(two_src.join("b.csv")).unwrap();
    std::fs::write(
        big_src.join("big.csv"),
        rows_csv("b", BIG_ROWS - 1, "Ceres"),
    )
    .unwrap();
    let out = home.output(&["sync"]);
    assert_eq!(out.code(), 0, "the churn: {out:?}");
    converged("after the churn", &expected_odd, &[0], BIG_ROWS as u64 - 1);

    // One RD broken: refused, and all three keep serving.
    let applied = current(&home);
    repo.write(
        &format!("{TWO}/q.rd"),
        &two_rd.replace(
            "<make table=\"targets\"/>",
            "<make table=\"no_such_table\"/>",
        ),
    );
    repo.commit("a make of a table that does not exist");
    let out = home.output(&["sync"]);
    assert_ne!(out.code(), 0, "a broken RD was applied: {out:?}");
    assert!(out.stderr.contains(&format!("{TWO}/q.rd")), "{out:?}");
    assert_eq!(current(&home), applied);
    converged(
        "after the refusal",
        &expected_odd,
        &[0],
        BIG_ROWS as u64 - 1,
    );
    for r in [NAMES, TWO, BIG] {
        remove_resource(r);
    }
}
