//! The agent's one HTTP listener: `/metrics`, `/healthz`, `/readyz`, `/status`.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post};
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::hooks::{self, Gate, Verdict};
use crate::metrics::Metrics;
use crate::runtime::Runtime;
use crate::web::Web;
use crate::web::listener::WebListener;

#[derive(Clone)]
pub struct App {
    pub runtime: Arc<Runtime>,
    pub metrics: Arc<Metrics>,
    pub hooks: Arc<Gate>,
    pub web: Arc<Web>,
}

pub fn router(app: App) -> Router {
    let web = app.web.clone();
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/status", get(status))
        .route(
            "/hooks/gitlab",
            post(gitlab_hook).layer(DefaultBodyLimit::max(hooks::MAX_BODY)),
        )
        .layer(axum::middleware::from_fn_with_state(
            web,
            crate::web::guard::guard,
        ))
        .with_state(app)
}

/// A GitLab webhook. The answer is quick (GitLab times hooks out) and never echoes the token.
async fn gitlab_hook(State(app): State<App>, headers: HeaderMap, body: Bytes) -> Response {
    let token = headers.get("x-gitlab-token").map(|v| v.as_bytes());
    let verdict = app.hooks.handle(token, &body);
    let (code, label, reason) = match &verdict {
        Verdict::Disabled => (
            StatusCode::NOT_FOUND,
            "disabled",
            "no source.webhook-secret-file is configured".to_owned(),
        ),
        Verdict::Unauthorized => (
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or wrong X-Gitlab-Token".to_owned(),
        ),
        Verdict::BadRequest(m) => (StatusCode::BAD_REQUEST, "bad_request", m.clone()),
        Verdict::Ignored(m) => (StatusCode::ACCEPTED, "ignored", m.clone()),
        Verdict::Triggered => (
            StatusCode::ACCEPTED,
            "triggered",
            "a reconcile pass starts now".to_owned(),
        ),
        Verdict::Deferred => (
            StatusCode::ACCEPTED,
            "deferred",
            "a pass was triggered moments ago; another follows when the rate limit allows"
                .to_owned(),
        ),
    };
    app.metrics.webhooks.with_label_values(&[label]).inc();
    if verdict == Verdict::Unauthorized {
        tracing::warn!("webhook refused: missing or wrong X-Gitlab-Token");
    } else {
        tracing::info!(result = label, reason = %reason, "webhook");
    }
    (code, Json(json!({"status": label, "reason": reason}))).into_response()
}

/// Serves until `shutdown` is cancelled, then lets open requests finish. Plain HTTP or TLS, as
/// `http.web-config-file` says at each connection.
pub async fn serve(
    listener: TcpListener,
    app: App,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let listener = WebListener::start(listener, app.web.clone(), shutdown.clone())?;
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

/// Readiness: a pass has completed, DaCHS answers, and the desired revision is applied. A
/// failure that leaves the desired revision serving (GitLab unreachable, a granule refused) does
/// not take the node out of service.
async fn readyz(State(app): State<App>) -> Response {
    let reasons = app.runtime.readiness();
    if reasons.is_empty() {
        let report = app.runtime.report();
        return (
            StatusCode::OK,
            Json(json!({"status": "ready", "applied_revision": report.applied_revision})),
        )
            .into_response();
    }
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({"status": "not ready", "reasons": reasons})),
    )
        .into_response()
}

async fn status(State(app): State<App>) -> Response {
    Json(app.runtime.report_with(&app.web)).into_response()
}
