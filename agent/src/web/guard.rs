//! Basic auth and the configured response headers, in front of every route.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{Web, auth};

/// Paths basic auth never covers: GitLab cannot send it to the webhook, which checks its own
/// `X-Gitlab-Token`; a load balancer's liveness probe has no credentials, and `/healthz` says no
/// more than whether the loop is alive.
pub const OPEN_PATHS: &[&str] = &["/hooks/gitlab", "/healthz"];

pub async fn guard(State(web): State<Arc<Web>>, req: Request, next: Next) -> Response {
    let active = web.refresh();
    let path = req.uri().path();
    let open = active.users.is_empty()
        || OPEN_PATHS.contains(&path)
        || active.excluded_paths.iter().any(|p| p == path);
    let mut resp = if open {
        next.run(req).await
    } else {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(auth::credentials);
        let ok = match &given {
            Some((user, password)) => web.checker.check(&active.users, user, password).await,
            None => false,
        };
        if ok {
            next.run(req).await
        } else {
            web.refused("unauthorized");
            tracing::info!(
                path = %path,
                credentials = given.is_some(),
                "http: request refused for want of valid basic auth"
            );
            (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Basic realm=\"vespa-agent\"")],
                Body::from("Unauthorized\n"),
            )
                .into_response()
        }
    };
    for (k, v) in &active.headers {
        resp.headers_mut().insert(k.clone(), v.clone());
    }
    resp
}
