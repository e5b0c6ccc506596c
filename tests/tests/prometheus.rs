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
