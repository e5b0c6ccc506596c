//! Applying revisions to the real DaCHS 2.7 that the test command started: deploy the example
//! service and query it, idempotent passes, broken revisions refused while a prober keeps
//! querying, a failed import rolled back, a structural change, and a resource removed.
//!
//! Each test deploys its own copy of the example under its own schema (`vt_<name>`), so tests
//! never share a table. `dachs.bin` is a wrapper that logs every invocation, which is how the
//! tests count DaCHS commands.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use harness::git::run_git;
use harness::*;

const INPUTS: &str = "/var/gavo/inputs";

struct Node {
    repo: tempfile::TempDir,
    /// The collections' source: one directory per resource.
    granules: tempfile::TempDir,
    home: Home,
    name: String,
    log: PathBuf,
}

impl Node {
    /// A service repository holding the example resource renamed to `vt_<name>`, a local
    /// collection with the example's 20 granules (in `granules/<resource>/`), and an agent home
    /// that follows the repository.
    fn new(name: &str) -> Option<Node> {
        if !require_dachs() {
            return None;
        }
        let name = format!("vt_{name}");
        let repo = tempfile::tempdir().unwrap();
        run_git(repo.path(), &["init", "-q", "-b", "main"]);
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
        let rd = std::fs::read_to_string(example.join("service/epnlab/q.rd"))
            .unwrap()
            .replace("epnlab", &name);
        std::fs::create_dir_all(repo.path().join(&name)).unwrap();
        std::fs::write(repo.path().join(&name).join("q.rd"), rd).unwrap();
        let granules = tempfile::tempdir().unwrap();
        let mine = granules.path().join(&name);
        std::fs::create_dir_all(&mine).unwrap();
        for g in std::fs::read_dir(example.join("granules/epnlab")).unwrap() {
            let g = g.unwrap().path();
            std::fs::copy(&g, mine.join(g.file_name().unwrap())).unwrap();
        }
        let mut node = Node {
            home: Home::new(&dachs_url(), ""),
            log: PathBuf::new(),
            repo,
            granules,
            name,
        };
        node.write_service(&[&node.name]);
        node.commit("deploy");

        // A clean slate: an earlier failed run may have left the resource behind.
        remove_resource(&node.name);

        let (wrapper, log) = dachs_wrapper(&node.home);
        node.home.write(
            "etc/agent.d/20-source.toml",
            &format!(
                "[source]\nurl = \"{}\"\n[dachs]\nbin = \"{}\"\n",
                node.repo.path().display(),
                wrapper.display()
            ),
        );
        node.log = log;
        Some(node)
    }

    fn write_service(&self, resources: &[&str]) {
        let mut toml = String::new();
        for r in resources {
            toml.push_str(&format!(
                "[[resource]]\ndir = \"{r}\"\n\n[[resource.collection]]\nname = \"granules\"\nsource = \"{}\"\ntarget = \"data\"\ninclude = [\"*.csv\"]\n\n",
                self.granules.path().join(r).display()
            ));
        }
        std::fs::write(self.repo.path().join("vespa-service.toml"), toml).unwrap();
    }

    fn rd_path(&self) -> PathBuf {
        self.repo.path().join(&self.name).join("q.rd")
    }

    fn edit_rd(&self, f: impl FnOnce(String) -> String) {
        let rd = std::fs::read_to_string(self.rd_path()).unwrap();
        std::fs::write(self.rd_path(), f(rd)).unwrap();
    }

    fn commit(&self, msg: &str) -> String {
        run_git(self.repo.path(), &["add", "-A"]);
        run_git(
            self.repo.path(),
            &["commit", "-q", "--allow-empty", "-m", msg],
        );
        run_git(self.repo.path(), &["rev-parse", "HEAD"])
    }

    fn commands(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn count(&self) -> Result<String, String> {
        tap_query(&format!("SELECT COUNT(*) AS n FROM {}.epn_core", self.name))
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        remove_resource(&self.name);
    }
}

/// One synchronous ADQL query: the first cell of the first row, or the failure.
fn tap_query(adql: &str) -> Result<String, String> {
    let enc: String = adql
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'*' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    let body = format!("REQUEST=doQuery&LANG=ADQL&RESPONSEFORMAT=votable%2Ftd&QUERY={enc}");
    let url = format!("{}/tap/sync", dachs_url().trim_start_matches("http://"));
    let (code, text) = post_form(&url, &body).ok_or("no answer")?;
    if code != 200 || !text.contains(r#"name="QUERY_STATUS" value="OK""#) {
        let msg = text.split("QUERY_STATUS").nth(1).unwrap_or(&text);
        return Err(format!("HTTP {code}: {}", &msg[..msg.len().min(300)]));
    }
    let cell = text
        .split("<TD>")
        .nth(1)
        .and_then(|c| c.split("</TD>").next())
        .unwrap_or("");
    Ok(cell.to_owned())
}

fn post_form(addr_path: &str, body: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let (addr, path) = addr_path.split_at(addr_path.find('/')?);
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(20))).ok()?;
    let req = format!(
        "POST {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    let code = raw.split(' ').nth(1)?.parse().ok()?;
    Some((code, raw.split_once("\r\n\r\n")?.1.to_owned()))
}

/// Queries the table without pause until stopped, counting failures.
struct Prober {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    failed: Arc<std::sync::Mutex<Vec<String>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Prober {
    fn start(table: &str, expect: &str) -> Prober {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (s, o, f) = (stop.clone(), ok.clone(), failed.clone());
        let adql = format!("SELECT COUNT(*) AS n FROM {table}");
        let expect = expect.to_owned();
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match tap_query(&adql) {
                    Ok(n) if n == expect => {
                        o.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(n) => f.lock().unwrap().push(format!("count {n}, not {expect}")),
                    Err(e) => f.lock().unwrap().push(e),
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        Prober {
            stop,
            ok,
            failed,
            thread: Some(thread),
        }
    }

    /// Stops and returns (answered, failures).
    fn finish(mut self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap();
        (
            self.ok.load(Ordering::Relaxed),
            self.failed.lock().unwrap().clone(),
        )
    }
}

#[test]
fn deploys_the_example_then_passes_over_it_run_no_dachs_command_and_removal_drops_it() {
    let Some(node) = Node::new("deploy") else {
        return;
    };
    let plan = node.home.output(&["plan"]);
    assert_eq!(plan.code(), 2, "{plan:?}");
    assert!(
        plan.stdout.contains("deploy vt_deploy (new resource)"),
        "{}",
        plan.stdout
    );
    assert!(
        plan.stdout.contains("/var/gavo/inputs/vt_deploy/q.rd"),
        "{}",
        plan.stdout
    );
    assert!(
        node.commands().is_empty(),
        "plan ran dachs: {:#?}",
        node.commands()
    );
    assert_eq!(current(&node.home), None, "plan moved current");
    assert!(
        !Path::new(INPUTS).join("vt_deploy/q.rd").exists(),
        "plan wrote the RD"
    );

    // GitLab (a double of its commit status API) learns that the commit is being applied,
    // then that it is served.
    let gitlab = harness::gitlab::GitlabDouble::start();
    let token = secret_file(&node.home, "etc/gitlab-token", harness::gitlab::TOKEN);
    node.home.write(
        "etc/agent.d/30-gitlab.toml",
        &format!(
            "[gitlab]\nreport = true\napi-url = \"{}\"\nproject = \"42\"\ntoken-file = \"{}\"\n",
            gitlab.api_url(),
            token.display()
        ),
    );
    let out = node.home.output(&["sync"]);
    assert_eq!(out.code(), 0, "{out:?}");
    assert_eq!(
        node.count().as_deref(),
        Ok("20"),
        "the example's 20 granules over TAP"
    );
    let states: Vec<_> = gitlab
        .statuses()
        .into_iter()
        .map(|s| (s.project, s.state, s.name.starts_with("vespa-agent/")))
        .collect();
    assert_eq!(
        states,
        [
            ("42".to_owned(), "running".to_owned(), true),
            ("42".to_owned(), "success".to_owned(), true)
        ]
    );
    let cmds = node.commands();
    for needed in [
        "val .vespa-stage/",
        "imp -c vt_deploy/q",
        "serve expireRDs vt_deploy/q",
        "pub vt_deploy/q",
    ] {
        assert!(
            cmds.iter().any(|c| c.starts_with(needed)),
            "no `dachs {needed}`: {cmds:#?}"
        );
    }
    assert!(
        !Path::new(INPUTS).join(".vespa-stage/vt_deploy").exists(),
        "the stage was left"
    );
    let meta = std::fs::metadata(Path::new(INPUTS).join("vt_deploy/q.rd")).unwrap();
    assert_ne!(
        std::os::unix::fs::MetadataExt::uid(&meta),
        0,
        "a root-owned file in /var/gavo"
    );

    // With no daemon running, `status` counts the tables over TAP itself.
    let st = node.home.output(&["status"]);
    for line in [
        "resource:     vt_deploy (vt_deploy/q, published; tables vt_deploy.epn_core)",
        "table:        vt_deploy.epn_core: 20 rows, TAP answered in ",
        "granules:     4 imported",
        "daemon:       not running",
    ] {
        assert!(st.stdout.contains(line), "{line}: {}", st.stdout);
    }
    assert_eq!(st.code(), 3, "not running, as systemctl status says");

    // Idempotent: the same revision again runs no DaCHS command at all.
    let before = node.commands().len();
    for _ in 0..2 {
        let out = node.home.output(&["sync"]);
        assert_eq!(out.code(), 0, "{out:?}");
    }
    assert_eq!(
        node.commands().len(),
        before,
        "{:#?}",
        &node.commands()[before..]
    );
    let plan = node.home.output(&["plan"]);
    assert_eq!(plan.code(), 0, "{plan:?}");
    assert!(
        plan.stdout.contains("nothing would change"),
        "{}",
        plan.stdout
    );

    // Drift: a local edit is shown by plan and reverted by the next pass.
    let deployed = Path::new(INPUTS).join("vt_deploy/q.rd");
    let good = std::fs::read_to_string(&deployed).unwrap();
    std::fs::write(
        &deployed,
        good.replace("</resource>", "<!-- local edit --></resource>"),
    )
    .unwrap();
    let plan = node.home.output(&["plan"]);
    assert_eq!(plan.code(), 2, "{plan:?}");
    assert!(plan.stdout.contains("(drift), restore"), "{}", plan.stdout);
    assert!(
        plan.stdout.contains("  ~ /var/gavo/inputs/vt_deploy/q.rd"),
        "{}",
        plan.stdout
    );
    assert_eq!(node.home.output(&["sync"]).code(), 0);
    assert_eq!(
        std::fs::read_to_string(&deployed).unwrap(),
        good,
        "the drift was not reverted"
    );

    // Metadata-only change: imported and expired, still 20 rows.
    node.edit_rd(|rd| rd.replace("EPN-TAP lab service", "EPN-TAP lab service, retitled"));
    node.commit("retitle");
    let out = node.home.output(&["sync"]);
    assert_eq!(out.code(), 0, "{out:?}");
    assert_eq!(node.count().as_deref(), Ok("20"));

    // A second resource (its table empty: no granules yet), then both removed.
    let second = "vt_deploy_b";
    remove_resource(second);
    let rd = std::fs::read_to_string(node.rd_path())
        .unwrap()
        .replace("vt_deploy", second);
    std::fs::create_dir_all(node.repo.path().join(second)).unwrap();
    std::fs::write(node.repo.path().join(second).join("q.rd"), rd).unwrap();
    std::fs::create_dir_all(node.granules.path().join(second)).unwrap();
    node.write_service(&["vt_deploy", second]);
    node.commit("a second resource");
    let out = node.home.output(&["sync"]);
    assert_eq!(out.code(), 0, "{out:?}");
    assert_eq!(
        tap_query("SELECT COUNT(*) AS n FROM vt_deploy_b.epn_core").as_deref(),
        Ok("0")
    );
    assert_eq!(node.count().as_deref(), Ok("20"));

    // Removed from the repository: dropped, directory gone, table gone from TAP.
    node.write_service(&[]);
    let removal = node.commit("remove");
    let plan = node.home.output(&["plan"]);
    assert_eq!(plan.code(), 2, "{plan:?}");
    assert!(
        plan.stdout.contains(&format!("commit {removal}")),
        "{}",
        plan.stdout
    );
    assert!(
        plan.stdout
            .contains("remove vt_deploy: dachs drop vt_deploy/q")
            && plan.stdout.contains("remove vt_deploy_b"),
        "{}",
        plan.stdout
    );
    let out = node.home.output(&["sync"]);
    assert_eq!(out.code(), 0, "{out:?}");
    assert!(
        node.commands().iter().any(|c| c == "drop vt_deploy/q"),
        "{:#?}",
        node.commands()
    );
    assert!(!Path::new(INPUTS).join("vt_deploy").exists());
    assert!(!Path::new(INPUTS).join(second).exists());
    assert!(node.count().is_err(), "the table still answers");
    assert!(tap_query("SELECT COUNT(*) AS n FROM vt_deploy_b.epn_core").is_err());
}

/// What is broken, how the RD is edited to break it, and a word of DaCHS's message about it.
type BrokenCase = (&'static str, fn(String) -> String, &'static str);

#[test]
fn broken_revisions_are_refused_and_the_service_answers_throughout() {
    let Some(node) = Node::new("broken") else {
        return;
    };
    assert_eq!(node.home.output(&["sync"]).code(), 0);
    assert_eq!(node.count().as_deref(), Ok("20"));
    let good = run_git(node.repo.path(), &["rev-parse", "HEAD"]);
    let prober = Prober::start("vt_broken.epn_core", "20");

    let cases: [BrokenCase; 5] = [
        (
            "missing title",
            |rd| rd.replace("<meta name=\"title\">EPN-TAP lab service</meta>", ""),
            "title",
        ),
        (
            "xml error",
            |rd| rd.replacen("</table>", "</tabel>", 1),
            "mismatched tag",
        ),
        (
            "bad mixin parameter",
            |rd| {
                rd.replace(
                    "spatial_frame_type=\"body\"",
                    "spatial_frame_type=\"bogus\"",
                )
            },
            "bogus",
        ),
        (
            "unknown column",
            |rd| rd.replace("<map key=\"source_file\">", "<map key=\"no_such_column\">"),
            "no_such_column",
        ),
        (
            "import fails",
            |rd| {
                rd.replace(
                    "<bind key=\"time_min\">@time_min</bind>",
                    "<bind key=\"time_min\">float(\"notanumber\")</bind>",
                )
            },
            "notanumber",
        ),
    ];
    for (what, edit, says) in cases {
        run_git(node.repo.path(), &["reset", "-q", "--hard", &good]);
        node.edit_rd(edit);
        let sha = node.commit(what);
        // New granule data arrives too: an import then reads a file with the RD under test
        // (updating imports skip files already read, so an RD error can otherwise hide).
        let granule = Path::new(INPUTS).join("vt_broken/data/g00000000.csv");
        let now = std::time::SystemTime::now();
        std::fs::File::options()
            .append(true)
            .open(&granule)
            .unwrap()
            .set_modified(now)
            .unwrap();
        let out = node.home.output(&["sync"]);
        assert_eq!(out.code(), 1, "{what}: {out:?}");
        assert!(
            out.stderr
                .contains(&format!("commit {sha} rejected at apply")),
            "{what}: {}",
            out.stderr
        );
        assert!(
            out.stderr.contains(says),
            "{what}: DaCHS's message is missing: {}",
            out.stderr
        );
        let st = node.home.output(&["status"]);
        assert!(
            st.stdout.contains("FAILED at apply"),
            "{what}: {}",
            st.stdout
        );
        assert!(st.stdout.contains(says), "{what}: {}", st.stdout);
        assert_eq!(
            current(&node.home),
            Some(format!("revisions/{good}")),
            "{what}"
        );
        assert_eq!(node.count().as_deref(), Ok("20"), "{what}");
        let on_disk = std::fs::read_to_string(Path::new(INPUTS).join("vt_broken/q.rd")).unwrap();
        let kept = std::fs::read_to_string(
            node.home
                .path(&format!("state/revisions/{good}/vt_broken/q.rd")),
        )
        .unwrap();
        assert_eq!(on_disk, kept, "{what}: the good RD is not the one on disk");
    }
    // DaCHS re-reads a replaced RD at most every 10 s; give a late reload the chance to fail.
    std::thread::sleep(Duration::from_secs(11));
    let (answered, failures) = prober.finish();
    assert!(
        failures.is_empty(),
        "{} failed queries during broken deploys: {failures:#?}",
        failures.len()
    );
    assert!(answered > 20, "only {answered} queries");
    eprintln!("prober: {answered} queries answered, 0 failed, during 5 broken deploys");
}

#[test]
fn a_new_column_is_a_structural_change_done_as_drop_import_publish() {
    let Some(node) = Node::new("structure") else {
        return;
    };
    assert_eq!(node.home.output(&["sync"]).code(), 0);
    node.edit_rd(|rd| {
        rd.replace(
            "<index columns=\"source_file\"/>",
            "<column name=\"vt_note\" type=\"text\" description=\"a new column\"/>\n    <index columns=\"source_file\"/>",
        )
    });
    node.commit("a new column");
    let before = node.commands().len();
    let out = node.home.output(&["sync"]);
    assert_eq!(out.code(), 0, "{out:?}");
    let cmds = &node.commands()[before..];
    let pos = |c: &str| cmds.iter().position(|x| x == c);
    let (d, i, p) = (
        pos("drop vt_structure/q"),
        pos("imp -c vt_structure/q"),
        pos("pub vt_structure/q"),
    );
    assert!(d.is_some() && d < i && i < p, "{cmds:#?}");
    assert_eq!(
        tap_query("SELECT COUNT(vt_note) AS n FROM vt_structure.epn_core").as_deref(),
        Ok("0")
    );
    assert_eq!(node.count().as_deref(), Ok("20"));
}

#[test]
fn a_local_edit_is_noticed_without_a_poll_then_reported_or_reverted() {
    let Some(node) = Node::new("drift") else {
        return;
    };
    node.home.write(
        "etc/agent.d/40-drift.toml",
        "[reconcile]\ninterval = \"1h\"\n[dachs]\ndrift = \"report\"\n",
    );
    assert_eq!(node.home.output(&["sync"]).code(), 0);
    let agent = Agent::start(&node.home, |_| {});
    eventually("the daemon's first pass", Duration::from_secs(20), || {
        get(&node.home.url("/readyz")).filter(|(c, _)| *c == 200)
    });
    let deployed = Path::new(INPUTS).join("vt_drift/q.rd");
    let good = std::fs::read_to_string(&deployed).unwrap();
    let edited = good.replace("</resource>", "<!-- edited on the node --></resource>");
    std::fs::write(&deployed, &edited).unwrap();

    // Reported within seconds (the poll interval is an hour), and left alone.
    let metrics = eventually("drift to be reported", Duration::from_secs(15), || {
        get(&node.home.url("/metrics"))
            .map(|(_, m)| m)
            .filter(|m| metric(m, "vespa_agent_drift_resources") == Some(1.0))
    });
    // Seen once to fail (the gauge at 1, the counter not): the body says which lines were read.
    assert!(
        metric(&metrics, "vespa_agent_drift_detected_total").unwrap() >= 1.0,
        "{}",
        metrics
            .lines()
            .filter(|l| l.contains("drift"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let st = node.home.output(&["status"]);
    for line in [
        "drift:        vt_drift",
        "table:        vt_drift.epn_core: 20 rows",
        ", ready",
    ] {
        assert!(st.stdout.contains(line), "{line}: {}", st.stdout);
    }
    assert_eq!(std::fs::read_to_string(&deployed).unwrap(), edited);

    // A granule file changing is not drift.
    let passes = |m: &str| metric(m, "vespa_agent_reconcile_passes_total{result=\"success\"}");
    // The start pass and the drift pass, both finished.
    let before = eventually("the drift pass to finish", Duration::from_secs(10), || {
        passes(&get(&node.home.url("/metrics")).unwrap().1).filter(|n| *n == 2.0)
    });
    std::fs::write(
        Path::new(INPUTS).join("vt_drift/data/extra.txt"),
        "not a granule",
    )
    .unwrap();
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(
        passes(&get(&node.home.url("/metrics")).unwrap().1),
        Some(before)
    );

    // Revert: the configuration says so, and the next pass puts the revision's file back.
    node.home.write(
        "etc/agent.d/40-drift.toml",
        "[reconcile]\ninterval = \"1h\"\n",
    );
    let ok = std::process::Command::new("kill")
        .args(["-HUP", &agent.pid().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    eventually("the drift to be reverted", Duration::from_secs(30), || {
        std::fs::read_to_string(&deployed)
            .ok()
            .filter(|t| *t == good)
    });
    // The gauge is set when that pass ends, after its TAP checks: slow on a loaded machine.
    eventually("the drift gauge back to 0", Duration::from_secs(30), || {
        get(&node.home.url("/metrics"))
            .filter(|(_, m)| metric(m, "vespa_agent_drift_resources") == Some(0.0))
    });
    assert_eq!(node.count().as_deref(), Ok("20"));
}

/// The example's granules, one file each: (file name, header, row).
fn one_granule_files() -> Vec<(String, String, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/granules/epnlab");
    let mut out = Vec::new();
    for f in std::fs::read_dir(dir).unwrap() {
        let text = std::fs::read_to_string(f.unwrap().path()).unwrap();
        let mut lines = text.lines();
        let header = lines.next().unwrap().to_owned();
        for row in lines {
            let uid = row.split(',').next().unwrap().to_owned();
            out.push((format!("{uid}.csv"), header.clone(), row.to_owned()));
        }
    }
    out.sort();
    out
}

/// `n` granule files made from the example's rows in turn, each with its own granule_uid.
fn granule_files(n: usize) -> Vec<(String, String, String)> {
    let example = one_granule_files();
    (0..n)
        .map(|i| {
            let (_, header, row) = &example[i % example.len()];
            let uid = format!("g{i:08}");
            let row = row.replacen(row.split(',').next().unwrap(), &uid, 1);
            (format!("{uid}.csv"), header.clone(), row)
        })
        .collect()
}

#[test]
fn granules_follow_their_collection_new_changed_vanished_and_bad() {
    let Some(node) = Node::new("granules") else {
        return;
    };
    let src = node.granules.path().join(&node.name);
    std::fs::remove_dir_all(&src).unwrap();
    std::fs::create_dir_all(&src).unwrap();
    let files = granule_files(1000);
    for (name, header, row) in &files {
        std::fs::write(src.join(name), format!("{header}\n{row}\n")).unwrap();
    }
    let out = node.home.output(&["sync"]);
    assert_eq!(out.code(), 0, "{out:?}");
    assert_eq!(node.count().as_deref(), Ok("1000"));
    let imports = |n: &Node| {
        n.commands()
            .iter()
            .filter(|c| c.starts_with("imp -c"))
            .count()
    };
    assert_eq!(imports(&node), 1);

    // Nothing changed at the source: no import.
    assert_eq!(node.home.output(&["sync"]).code(), 0);
    assert_eq!(imports(&node), 1);

    // +10, -3, 1 modified.
    let (_, header, template) = &files[0];
    for i in 0..10 {
        let uid = format!("gnew{i:05}");
        let row = template.replacen(template.split(',').next().unwrap(), &uid, 1);
        std::fs::write(src.join(format!("{uid}.csv")), format!("{header}\n{row}\n")).unwrap();
    }
    for (name, ..) in &files[1..4] {
        std::fs::remove_file(src.join(name)).unwrap();
    }
    let (name, header, row) = &files[4];
    let uid = row.split(',').next().unwrap();
    std::fs::write(
        src.join(name),
        format!("{header}\n{}\n", row.replace(",Mars,", ",Phobos,")),
    )
    .unwrap();
    // `plan` lists the change without moving anything.
    let plan = node.home.output(&["plan"]);
    assert_eq!(plan.code(), 2, "{plan:?}");
    for line in [
        "granules vt_granules/granules: 10 new, 1 changed, 3 vanished",
        "  ~ g00000004.csv",
        "  - g00000001.csv",
        "  then: dachs imp -c vt_granules/q (incremental",
    ] {
        assert!(plan.stdout.contains(line), "{line}: {}", plan.stdout);
    }
    assert_eq!(imports(&node), 1);
    let out = node.home.output(&["sync"]);
    assert_eq!(out.code(), 0, "{out:?}");
    assert_eq!(node.count().as_deref(), Ok("1007"));
    let q = format!("SELECT target_name FROM vt_granules.epn_core WHERE granule_uid = '{uid}'");
    assert_eq!(tap_query(&q).as_deref(), Ok("Phobos"));
    assert_eq!(imports(&node), 2, "one import for all the changes");

    // A bad file: refused by name and reason, the others imported.
    let bad = template
        .replacen(template.split(',').next().unwrap(), "gbad00001", 1)
        .replacen("2459000.500000", "notanumber", 1);
    std::fs::write(src.join("gbad00001.csv"), format!("{header}\n{bad}\n")).unwrap();
    std::fs::write(
        src.join("gok00001.csv"),
        format!(
            "{header}\n{}\n",
            template.replacen(template.split(',').next().unwrap(), "gok00001", 1)
        ),
    )
    .unwrap();
    let out = node.home.output(&["sync"]);
    assert_eq!(out.code(), 0, "{out:?}");
    assert!(out.stderr.contains("gbad00001.csv"), "{}", out.stderr);
    assert!(out.stderr.contains("notanumber"), "{}", out.stderr);
    assert_eq!(node.count().as_deref(), Ok("1008"));
    let leftovers: Vec<_> = std::fs::read_dir(Path::new(INPUTS).join("vt_granules/data"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".vespa-tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // The newest commit is refused; granules of the applied revision keep flowing, from the
    // pass that refuses it on.
    node.edit_rd(|rd| rd.replacen("</table>", "</tabel>", 1));
    node.commit("broken");
    let more = template.replacen(template.split(',').next().unwrap(), "gmore0001", 1);
    std::fs::write(src.join("gmore0001.csv"), format!("{header}\n{more}\n")).unwrap();
    assert_eq!(node.home.output(&["sync"]).code(), 1);
    assert_eq!(node.count().as_deref(), Ok("1009"));
    let out = node.home.output(&["sync"]);
    assert_eq!(
        out.code(),
        1,
        "the refused commit is still reported: {out:?}"
    );
    assert!(out.stderr.contains("not retried"), "{}", out.stderr);
    assert_eq!(node.count().as_deref(), Ok("1009"));

    // `import`: the granule stage alone, for one resource or all.
    let out = node.home.output(&["import", "--resource", "nope"]);
    assert_eq!(out.code(), 1, "{out:?}");
    assert!(
        out.stderr.contains("has no resource `nope`"),
        "{}",
        out.stderr
    );
    let last = template.replacen(template.split(',').next().unwrap(), "glast0001", 1);
    std::fs::write(src.join("glast0001.csv"), format!("{header}\n{last}\n")).unwrap();
    let before = node.commands().len();
    // On a terminal (script(1) gives it one) `import` draws its progress; in a pipe it does not.
    let cmd = node.home.command(&["import", "--resource", "vt_granules"]);
    let line: Vec<String> = std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| format!("'{}'", a.to_string_lossy()))
        .collect();
    let tty = std::process::Command::new("script")
        .args(["-qec", &line.join(" "), "/dev/null"])
        .env_remove("NOTIFY_SOCKET")
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&tty.stdout);
    assert!(tty.status.success(), "{tty:?}");
    assert!(
        shown.contains("granules: 1 new, 0 changed, 0 vanished"),
        "{shown}"
    );
    assert!(
        shown.contains("dachs imp -c of vt_granules: 1 files"),
        "no progress on a terminal: {shown}"
    );
    assert_eq!(node.count().as_deref(), Ok("1010"));
    assert_eq!(&node.commands()[before..], ["imp -c vt_granules/q"]);
    let out = node.home.output(&["import", "--resource", "vt_granules"]);
    assert_eq!(out.code(), 0, "{out:?}");
    assert!(
        out.stdout.contains(
            "granules: 0 new, 0 changed, 0 vanished, 0 bytes; imported: nothing to import"
        ),
        "{}",
        out.stdout
    );
    assert!(
        !out.stderr.contains("dachs imp -c of"),
        "a bar in a pipe: {}",
        out.stderr
    );

    // Provenance, by granule_uid (looked up over TAP) and by file name.
    let st = node.home.output(&["status", "--granule", "gnew00003"]);
    assert_eq!(st.code(), 0, "{st:?}");
    assert!(
        st.stdout
            .contains("granule:      vt_granules/granules/gnew00003.csv"),
        "{}",
        st.stdout
    );
    assert!(
        st.stdout.contains(&format!(
            "source:       file://{}",
            src.join("gnew00003.csv").display()
        )),
        "{}",
        st.stdout
    );
    assert!(
        st.stdout.contains("state:        imported"),
        "{}",
        st.stdout
    );
    let st = node.home.output(&["status", "--granule", "gbad00001.csv"]);
    assert!(
        st.stdout.contains("state:        failed: ") && st.stdout.contains("notanumber"),
        "{}",
        st.stdout
    );
    // Not an identifier: never put into the ADQL lookup; simply not found.
    let st = node.home.output(&["status", "--granule", "g' OR '1'='1"]);
    assert_eq!(st.code(), 1, "{st:?}");
    assert!(st.stdout.is_empty(), "{}", st.stdout);
    let st = node.home.output(&["status", "--granule", "g_no_such"]);
    assert_eq!(st.code(), 1, "{st:?}");
    assert!(
        st.stderr.contains("no granule matches `g_no_such`"),
        "{}",
        st.stderr
    );

    // An RD without updating data cannot import incrementally: every granule file is read
    // again, `plan` says so, and the rows come out exact.
    node.edit_rd(|rd| {
        let rd = rd.replacen("</tabel>", "</table>", 1);
        let rd = cut(&rd, "<data id=\"prune\"", "</data>");
        let rd = cut(&rd, "<ignoreSources", "/>");
        rd.replace(" updating=\"True\"", "")
    });
    node.commit("full imports");
    let out = node.home.output(&["sync"]);
    assert_eq!(out.code(), 0, "{out:?}");
    assert_eq!(node.count().as_deref(), Ok("1010"));
    std::fs::remove_file(src.join("glast0001.csv")).unwrap();
    let fin = template.replacen(template.split(',').next().unwrap(), "gfull0001", 1);
    std::fs::write(src.join("gfull0001.csv"), format!("{header}\n{fin}\n")).unwrap();
    let plan = node.home.output(&["plan"]);
    assert_eq!(plan.code(), 2, "{plan:?}");
    assert!(
        plan.stdout
            .contains("granules vt_granules/granules: 1 new, 0 changed, 1 vanished")
            && plan
                .stdout
                .contains("(a full import: the RD has no updating data"),
        "{}",
        plan.stdout
    );
    let before = node.commands().len();
    let out = node.home.output(&["sync"]);
    assert_eq!(out.code(), 0, "{out:?}");
    assert_eq!(&node.commands()[before..], ["imp -c vt_granules/q"]);
    assert_eq!(node.count().as_deref(), Ok("1010"));
    let q =
        "SELECT COUNT(*) FROM vt_granules.epn_core WHERE granule_uid IN ('gfull0001', 'glast0001')";
    assert_eq!(tap_query(q).as_deref(), Ok("1"));

    // The refused granule (gbad00001) is skipped by each deploy's import; an RD that breaks
    // the good files too is still refused, and the rows stay.
    node.edit_rd(|rd| {
        rd.replace(
            "<bind key=\"time_min\">@time_min</bind>",
            "<bind key=\"time_min\">float(\"not-a-time\")</bind>",
        )
    });
    node.commit("breaks every row");
    let out = node.home.output(&["sync"]);
    assert_eq!(out.code(), 1, "{out:?}");
    assert!(out.stderr.contains("not-a-time"), "{}", out.stderr);
    assert!(!out.stderr.contains("ROLLBACK FAILED"), "{}", out.stderr);
    assert_eq!(node.count().as_deref(), Ok("1010"));
}

/// `s` without the first run from `from` to the next `to`, both included.
fn cut(s: &str, from: &str, to: &str) -> String {
    let a = s.find(from).unwrap_or_else(|| panic!("no {from}"));
    let b = a + s[a..].find(to).unwrap() + to.len();
    format!("{}{}", &s[..a], &s[b..])
}

#[test]
fn granules_come_over_webdav_with_basic_auth() {
    let Some(node) = Node::new("dav") else {
        return;
    };
    let Some(dav) = harness::dav::DavServer::start() else {
        return;
    };
    let data = dav.data("vt_dav");
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/granules/epnlab");
    for g in std::fs::read_dir(&example).unwrap() {
        let g = g.unwrap().path();
        std::fs::copy(&g, data.join(g.file_name().unwrap())).unwrap();
    }
    std::fs::write(
        node.repo.path().join("vespa-service.toml"),
        format!(
            "[[resource]]\ndir = \"vt_dav\"\n\n[[resource.collection]]\nname = \"granules\"\n\
             source = \"{}\"\ncredential = \"b2safe\"\ninclude = [\"*.csv\"]\n",
            dav.url("vt_dav")
        ),
    )
    .unwrap();
    node.commit("granules over webdav");
    node.home.write(
        "etc/agent.d/50-granules.toml",
        &format!(
            "[granules]\ncredentials-dir = \"{}\"\n",
            node.home.path("credentials").display()
        ),
    );

    // A wrong password: refused, said so, never printed.
    let wrong = "not-the-password-91";
    secret_file(
        &node.home,
        "credentials/b2safe",
        &format!("{}:{wrong}\n", harness::dav::USER),
    );
    let out = node.home.output(&["sync"]);
    assert_eq!(out.code(), 1, "{out:?}");
    assert!(
        out.stderr.contains("authentication failed"),
        "{}",
        out.stderr
    );
    assert!(
        !out.stderr.contains(wrong) && !out.stdout.contains(wrong),
        "{}",
        out.stderr
    );

    secret_file(
        &node.home,
        "credentials/b2safe",
        &format!("{}:{}\n", harness::dav::USER, harness::dav::PASSWORD),
    );
    let out = node.home.output(&["sync"]);
    assert_eq!(out.code(), 0, "{out:?}");
    assert!(
        !out.stderr.contains(harness::dav::PASSWORD),
        "{}",
        out.stderr
    );
    assert_eq!(node.count().as_deref(), Ok("20"));

    // Changed on the server (a new ETag), then one file deleted there.
    let first = data.join("g00000000.csv");
    let text = std::fs::read_to_string(&first).unwrap();
    std::fs::write(&first, text.replacen(",Mars,", ",Phobos,", 1)).unwrap();
    let out = node.home.output(&["sync"]);
    assert_eq!(out.code(), 0, "{out:?}");
    assert_eq!(
        tap_query("SELECT target_name FROM vt_dav.epn_core WHERE granule_uid = 'g00000000'")
            .as_deref(),
        Ok("Phobos")
    );
    std::fs::remove_file(data.join("g00000005.csv")).unwrap();
    let out = node.home.output(&["sync"]);
    assert_eq!(out.code(), 0, "{out:?}");
    assert_eq!(node.count().as_deref(), Ok("15"));

    // A manifest: a file it does not vouch for stays out, the others come in.
    use sha2::Digest;
    let mut manifest = String::new();
    for name in ["g00000000.csv", "g00000010.csv", "g00000015.csv"] {
        let bytes = std::fs::read(data.join(name)).unwrap();
        let sum = format!("{:x}", sha2::Sha256::digest(&bytes));
        manifest.push_str(&format!("{name}\t{}\tsha256:{sum}\n", bytes.len()));
    }
    let extra = std::fs::read_to_string(data.join("g00000010.csv"))
        .unwrap()
        .replace("g000000", "gman000");
    std::fs::write(data.join("unlisted.csv"), extra).unwrap();
    std::fs::write(data.join("MANIFEST.tsv"), manifest).unwrap();
    let toml = std::fs::read_to_string(node.repo.path().join("vespa-service.toml")).unwrap();
    std::fs::write(
        node.repo.path().join("vespa-service.toml"),
        format!("{toml}manifest = \"MANIFEST.tsv\"\n"),
    )
    .unwrap();
    node.commit("a manifest");
    let out = node.home.output(&["sync"]);
    assert_eq!(out.code(), 0, "{out:?}");
    assert!(
        out.stderr.contains("unlisted.csv")
            && out.stderr.contains("not in the collection's manifest"),
        "{}",
        out.stderr
    );
    assert_eq!(
        node.count().as_deref(),
        Ok("15"),
        "an unverified file was imported"
    );
}
