//! What Prometheus sees: a real Prometheus server (Debian's) scrapes an agent that serves the
//! example service from the real DaCHS, the target is up and the key series are there, and the
//! shipped alert rules load and evaluate; `promtool test rules` passes on their unit tests.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use harness::git::LocalRepo;
use harness::prom::{Prometheus, tool};
use harness::*;

const NAME: &str = "vt_prom";

fn rules_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/prometheus")
}

#[test]
fn the_alert_rules_pass_their_unit_tests() {
    let Some(promtool) = tool("promtool") else {
        return;
    };
    for args in [
        vec!["check", "rules", "vespa-agent.rules.yml"],
        vec!["test", "rules", "vespa-agent.rules.test.yml"],
    ] {
        let out = Command::new(&promtool)
            .args(&args)
            .current_dir(rules_dir())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "promtool {args:?}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

struct Cleanup;
impl Drop for Cleanup {
    fn drop(&mut self) {
        remove_resource(NAME);
    }
}

#[test]
fn a_real_prometheus_scrapes_a_serving_node() {
    if tool("prometheus").is_none() || !require_dachs() {
        return;
    }
    remove_resource(NAME);
    let _cleanup = Cleanup;
    let (_repo, home) = LocalRepo::example_as(NAME);
    let _agent = Agent::start(&home, |_| {});
    eventually("the first pass to deploy", Duration::from_secs(120), || {
        get(&home.url("/metrics")).filter(|(_, b)| {
            b.contains(&format!(
                "vespa_agent_tap_table_rows{{table=\"{NAME}.epn_core\"}} 20"
            ))
        })
    });

    let Some(prom) = Prometheus::start(&format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\n\
         scrape_configs:\n  - job_name: vespa-agent\n    static_configs:\n      - targets: ['127.0.0.1:{}']\n",
        rules_dir().join("vespa-agent.rules.yml").display(),
        home.port
    )) else {
        return;
    };
    let port = prom.port;

    eventually(
        "Prometheus to scrape the agent",
        Duration::from_secs(60),
        || {
            let up = prom.query("up{job=\"vespa-agent\"}");
            (up.len() == 1 && up[0].1 == "1").then_some(())
        },
    );
    for (expr, want) in [
        ("vespa_agent_dachs_up".to_owned(), Some("1")),
        (
            format!("vespa_agent_tap_table_rows{{table=\"{NAME}.epn_core\"}}"),
            Some("20"),
        ),
        (
            format!("vespa_agent_tap_table_up{{table=\"{NAME}.epn_core\"}}"),
            Some("1"),
        ),
        // The example collection: 4 files of 5 rows each.
        (
            "vespa_agent_granules{state=\"imported\"}".to_owned(),
            Some("4"),
        ),
        ("vespa_agent_build_info".to_owned(), Some("1")),
        (
            "vespa_agent_revision_info{role=\"applied\"}".to_owned(),
            Some("1"),
        ),
        (
            "vespa_agent_filesystem_free_bytes{role=\"gavo\"}".to_owned(),
            None,
        ),
        ("vespa_agent_memory_available_bytes".to_owned(), None),
        (
            "vespa_agent_reconcile_passes_total{result=\"success\"}".to_owned(),
            None,
        ),
    ] {
        let r = eventually(&expr, Duration::from_secs(20), || {
            let r = prom.query(&expr);
            (!r.is_empty()).then_some(r)
        });
        if let Some(w) = want {
            assert_eq!(r[0].1, w, "{expr}: {r:?}");
        }
    }
    // Every panel of the shipped Grafana dashboards is a query Prometheus accepts, over
    // series the agent serves (the doc names each one).
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../doc/metrics.md"))
            .unwrap();
    let mut checked = 0;
    for board in ["vespa-agent-node.json", "vespa-agent-fleet.json"] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../packaging/grafana")
            .join(board);
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        for panel in json["panels"].as_array().unwrap() {
            for target in panel["targets"].as_array().unwrap() {
                let expr = target["expr"]
                    .as_str()
                    .unwrap()
                    .replace("$instance", ".*")
                    .replace("$__rate_interval", "1m");
                for name in expr
                    .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .filter(|w| w.starts_with("vespa_agent_"))
                {
                    let family = name.trim_end_matches("_bucket");
                    assert!(
                        doc.contains(&format!("`{family}`")),
                        "{board}: {name} is not a metric"
                    );
                }
                let q: String = percent_encoding::utf8_percent_encode(
                    &expr,
                    percent_encoding::NON_ALPHANUMERIC,
                )
                .to_string();
                let (code, body) =
                    get(&format!("127.0.0.1:{port}/api/v1/query?query={q}")).unwrap();
                assert!(
                    code == 200 && body.contains("\"success\""),
                    "{board}: {expr}: {body}"
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 25, "only {checked} panel queries");

    // The rules load and evaluate against the live series; a healthy node fires none.
    let (_, rules) = eventually("the rules to be evaluated", Duration::from_secs(30), || {
        get(&format!("127.0.0.1:{port}/api/v1/rules")).filter(|(_, b)| {
            b.contains("\"lastEvaluation\"") && !b.contains("\"lastEvaluation\":\"0001")
        })
    });
    let v: serde_json::Value = serde_json::from_str(&rules).unwrap();
    let all: Vec<&serde_json::Value> = v["data"]["groups"][0]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .collect();
    let shipped = std::fs::read_to_string(rules_dir().join("vespa-agent.rules.yml"))
        .unwrap()
        .matches("- alert:")
        .count();
    assert_eq!(all.len(), shipped, "every shipped rule loaded");
    assert!(shipped >= 10);
    for r in all {
        assert_eq!(r["health"], "ok", "{r}");
        assert_eq!(r["state"], "inactive", "{r}");
    }
}

/// A fleet as it stands a minute after a push, in the agent's own metrics (its `Metrics` type,
/// one registry per node) scraped by a real Prometheus: which node serves which commit, which
/// refused it and at what stage, which is unhealthy. Each is one panel of the fleet dashboard,
/// and each panel's query must name exactly those nodes.
#[test]
fn the_fleet_dashboard_answers_what_an_operator_asks_after_a_push() {
    use std::collections::BTreeSet;
    use std::sync::Arc;
    use vespa_agent::metrics::Metrics;

    if tool("prometheus").is_none() {
        return;
    }
    const NODES: usize = 300;
    let (old, new) = ("a".repeat(40), "b".repeat(40));
    let name = |i: usize| format!("node-{i:03}:9471");
    // The shapes of a fleet after a push.
    let refused = |i: usize| i.is_multiple_of(10); // refused the push at validate
    let behind = |i: usize| i % 10 == 1; // has not polled since the push
    let dachs_down = |i: usize| i % 25 == 2;
    let table_failing = |i: usize| i % 50 == 3;
    let silent = |i: usize| i == NODES - 1; // the agent does not answer
    let nodes: Vec<Arc<Metrics>> = (0..NODES)
        .map(|i| {
            let m = Metrics::new();
            let applied = if refused(i) || behind(i) { &old } else { &new };
            let desired = if behind(i) { &old } else { &new };
            m.set_revision("applied", applied);
            m.set_revision("desired", desired);
            if refused(i) {
                m.failed_commits.set(1);
                m.desired_refused
                    .with_label_values(&[new.as_str(), "validate"])
                    .set(1.0);
            }
            m.dachs_up.set(if dachs_down(i) { 0 } else { 1 });
            m.table_up
                .with_label_values(&["epnlab.epn_core"])
                .set(if table_failing(i) { 0 } else { 1 });
            m.table_rows.with_label_values(&["epnlab.epn_core"]).set(20);
            m.last_success.set(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_secs_f64(),
            );
            Arc::new(m)
        })
        .collect();
    let served = Arc::new(nodes);
    let server = {
        let served = served.clone();
        harness::httpd::Listener::start(move |mut conn| {
            let Some((head, _)) = harness::httpd::read_request(&mut conn)? else {
                return Ok(());
            };
            let path = head.split_whitespace().nth(1).unwrap_or("/");
            let i: Option<usize> = path
                .strip_prefix("/node/")
                .and_then(|p| p.strip_suffix("/metrics"))
                .and_then(|n| n.parse().ok());
            match i {
                Some(i) if i < NODES && !silent(i) => harness::httpd::respond(
                    &mut conn,
                    200,
                    "text/plain; version=0.0.4",
                    served[i].render().as_bytes(),
                ),
                _ => harness::httpd::respond(&mut conn, 503, "text/plain", b"down\n"),
            }
        })
    };
    let mut config = String::from(
        "global:\n  scrape_interval: 2s\nscrape_configs:\n  - job_name: vespa-agent\n    static_configs:\n",
    );
    for i in 0..NODES {
        config.push_str(&format!(
            "      - targets: ['127.0.0.1:{}']\n        labels: {{instance: '{}', __metrics_path__: '/node/{i}/metrics'}}\n",
            server.port,
            name(i)
        ));
    }
    let Some(prom) = Prometheus::start(&config) else {
        return;
    };
    eventually(
        "Prometheus to scrape the fleet",
        Duration::from_secs(90),
        || {
            (prom.query("count(up{job=\"vespa-agent\"})").first()?.1 == NODES.to_string()
                && prom.query("count(vespa_agent_dachs_up)").first()?.1 == (NODES - 1).to_string())
            .then_some(())
        },
    );

    let board: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../packaging/grafana/vespa-agent-fleet.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let panel = |title: &str| -> Vec<(serde_json::Value, String)> {
        let p = board["panels"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["title"] == title)
            .unwrap_or_else(|| panic!("the fleet dashboard has no panel {title:?}"));
        p["targets"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|t| prom.query(t["expr"].as_str().unwrap()))
            .collect()
    };
    let instances = |rows: &[(serde_json::Value, String)]| -> BTreeSet<String> {
        rows.iter()
            .map(|(m, _)| m["instance"].as_str().unwrap_or("").to_owned())
            .collect()
    };
    let expect = |f: &dyn Fn(usize) -> bool| -> BTreeSet<String> {
        (0..NODES).filter(|&i| f(i)).map(name).collect()
    };
    let answering = |i: usize| !silent(i);

    // Which commit each node serves: two rows, with their counts.
    let per_commit = panel("After a push: nodes per commit");
    let count_of = |sha: &str| {
        per_commit
            .iter()
            .find(|(m, _)| m["revision"] == sha)
            .map(|(_, v)| v.clone())
    };
    let on_old = (0..NODES)
        .filter(|&i| answering(i) && (refused(i) || behind(i)))
        .count();
    assert_eq!(per_commit.len(), 2, "{per_commit:?}");
    assert_eq!(count_of(&old), Some(on_old.to_string()));
    assert_eq!(count_of(&new), Some((NODES - 1 - on_old).to_string()));

    // Which refused it, and where.
    let refusals = panel("Refused commits: node, commit, stage");
    assert_eq!(
        instances(&refusals),
        expect(&|i| answering(i) && refused(i))
    );
    assert!(
        refusals
            .iter()
            .all(|(m, _)| m["revision"] == new.as_str() && m["stage"] == "validate"),
        "{refusals:?}"
    );
    let stat = |title: &str| panel(title).first().map(|(_, v)| v.clone());
    assert_eq!(
        stat("Nodes with a refused commit"),
        Some(expect(&|i| answering(i) && refused(i)).len().to_string())
    );
    // Not on the commit they want: the refusing ones (the behind ones want the old one still).
    assert_eq!(
        stat("Nodes not on their desired commit"),
        Some(expect(&|i| answering(i) && refused(i)).len().to_string())
    );

    // Which are unhealthy, and why: one row per node and problem.
    let unhealthy = panel("Unhealthy nodes");
    let with = |problem: &str| -> BTreeSet<String> {
        instances(
            &unhealthy
                .iter()
                .filter(|(m, _)| m["problem"] == problem)
                .cloned()
                .collect::<Vec<_>>(),
        )
    };
    assert_eq!(with("agent does not answer"), expect(&silent));
    assert_eq!(
        with("DaCHS down"),
        expect(&|i| answering(i) && dachs_down(i))
    );
    assert_eq!(
        with("a table fails over TAP"),
        expect(&|i| answering(i) && table_failing(i))
    );
    assert!(with("no good pass for an hour").is_empty());
    assert_eq!(
        stat("Nodes with DaCHS down"),
        Some(expect(&|i| answering(i) && dachs_down(i)).len().to_string())
    );
    assert_eq!(stat("Nodes up"), Some((NODES - 1).to_string()));
}
