//! The real environment exists: PostgreSQL and DaCHS 2.7, brought up by the test command
//! (scripts/setup-dachs.sh), answer ADQL, and the agent's health stage sees it.

use std::time::Duration;

use harness::*;
use vespa_agent::dachs::tap::{TapClient, TapError};

#[tokio::test]
async fn real_dachs_answers_adql_and_reports_errors_with_its_own_message() {
    if !require_dachs() {
        return;
    }
    let tap = TapClient::new(&dachs_url(), Duration::from_secs(30));
    let a = tap
        .query("SELECT table_name FROM tap_schema.tables WHERE table_name = 'tap_schema.columns'")
        .await
        .unwrap();
    assert_eq!(a.rows, [vec!["tap_schema.columns".to_string()]]);

    let e = tap
        .query("SELECT x FROM nosuch.table_here")
        .await
        .unwrap_err();
    match e {
        TapError::Query { status, message } => {
            assert_eq!(status, "ERROR");
            assert!(message.contains("nosuch.table_here"), "{message}");
        }
        other => panic!("expected a query error, got {other}"),
    }
}

#[test]
fn agent_becomes_ready_against_real_dachs() {
    if !require_dachs() {
        return;
    }
    let home = Home::new(&dachs_url(), "");
    let _agent = Agent::start(&home, |_| {});
    let (code, _) = eventually("/readyz 200", Duration::from_secs(20), || {
        get(&home.url("/readyz")).filter(|(c, _)| *c == 200)
    });
    assert_eq!(code, 200);
    let (_, m) = get(&home.url("/metrics")).unwrap();
    assert_eq!(metric(&m, "vespa_agent_dachs_up"), Some(1.0), "{m}");
    let out = home.output(&["status"]);
    assert!(
        out.stdout.contains("ready") && out.stdout.contains("success"),
        "{}",
        out.stdout
    );
}
