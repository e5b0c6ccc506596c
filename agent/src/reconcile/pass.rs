//! One reconcile pass: its stages in order. The pipeline in DESIGN.md grows here (fetch,
//! validate, apply, import); today a pass checks that the local DaCHS answers ADQL.

use std::time::Duration;

use crate::config::Settings;
use crate::dachs::tap::TapClient;
use crate::metrics::Metrics;
use crate::runtime::Runtime;

/// A stage that failed, with a fixed `kind` usable as a metric label and the full message.
#[derive(Debug)]
pub struct StageFailure {
    pub stage: &'static str,
    pub kind: &'static str,
    pub message: String,
}

/// The query the health stage runs: TAP_SCHEMA exists on every DaCHS, so it answers before any
/// service is deployed, and it goes through ADQL, DaCHS and PostgreSQL (an availability check
/// alone says "available" even with PostgreSQL down).
pub const HEALTH_QUERY: &str = "SELECT TOP 1 table_name FROM tap_schema.tables";

pub async fn run(
    settings: &Settings,
    runtime: &Runtime,
    metrics: &Metrics,
    debug_stall: Option<Duration>,
) -> Result<(), StageFailure> {
    if let Some(stall) = debug_stall {
        runtime.set_activity("stalled on purpose (VESPA_AGENT_DEBUG_STALL)");
        tokio::time::sleep(stall).await;
    }
    health(settings, runtime, metrics).await
}

async fn health(
    settings: &Settings,
    runtime: &Runtime,
    metrics: &Metrics,
) -> Result<(), StageFailure> {
    runtime.set_activity("checking that DaCHS answers ADQL");
    let tap = TapClient::new(&settings.dachs.url, settings.dachs.query_timeout);
    match tap.query(HEALTH_QUERY).await {
        Ok(_) => {
            metrics.dachs_up.set(1);
            runtime.set_dachs_error(None);
            Ok(())
        }
        Err(e) => {
            metrics.dachs_up.set(0);
            metrics
                .stage_errors
                .with_label_values(&["health", e.kind()])
                .inc();
            runtime.set_dachs_error(Some(e.to_string()));
            Err(StageFailure {
                stage: "health",
                kind: e.kind(),
                message: e.to_string(),
            })
        }
    }
}
