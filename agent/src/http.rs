//! The agent's one HTTP listener: `/metrics`, `/healthz`, `/readyz`, `/status`.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::runtime::Runtime;

#[derive(Clone)]
pub struct App {
    pub runtime: Arc<Runtime>,
    pub metrics: Arc<Metrics>,
}

pub fn router(app: App) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/status", get(status))
        .with_state(app)
}

/// Serves until `shutdown` is cancelled, then lets open requests finish.
pub async fn serve(
    listener: TcpListener,
    app: App,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router(app))
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

async fn metrics(State(app): State<App>) -> Response {
    // Derived at scrape time, so it is exact without the loop touching the registry on every beat.
    let beat = crate::state::now_ms() as f64 / 1000.0 - app.runtime.heartbeat_age().as_secs_f64();
    app.metrics.heartbeat.set(beat);
    (
        [(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)],
        app.metrics.render(),
    )
        .into_response()
}

/// Liveness: the reconcile loop showed a sign of life within `reconcile.stall-timeout`.
async fn healthz(State(app): State<App>) -> Response {
    let age = app.runtime.heartbeat_age().as_secs_f64();
    if app.runtime.is_alive() {
        (
            StatusCode::OK,
            Json(json!({"status": "ok", "heartbeat_age_seconds": age})),
        )
            .into_response()
    } else {
        let reason = format!(
            "the reconcile loop has shown no sign of life for {age:.0} s (reconcile.stall-timeout is {} s)",
            app.runtime.stall_timeout().as_secs()
        );
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "stalled", "heartbeat_age_seconds": age, "reasons": [reason]})),
        )
            .into_response()
    }
}

/// Readiness: the last reconcile pass succeeded.
async fn readyz(State(app): State<App>) -> Response {
    if app.runtime.is_ready() {
        return (StatusCode::OK, Json(json!({"status": "ready"}))).into_response();
    }
    let report = app.runtime.report();
    let reason = match (&report.last_pass, &report.dachs_error) {
        (None, _) => "no reconcile pass has completed yet".to_owned(),
        (_, Some(e)) => format!("the last reconcile pass failed: {e}"),
        (Some(p), None) => format!(
            "the last reconcile pass did not succeed: {}",
            p.get("error")
                .and_then(|e| e.as_str())
                .unwrap_or("(no message)")
        ),
    };
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({"status": "not ready", "reasons": [reason]})),
    )
        .into_response()
}

async fn status(State(app): State<App>) -> Response {
    Json(app.runtime.report()).into_response()
}
