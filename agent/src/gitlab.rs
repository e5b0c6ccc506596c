//! Commit statuses in GitLab: a provider sees on their commit whether it went live on each node
//! (`POST /projects/:id/statuses/:sha`, GitLab's REST API v4, name `vespa-agent/<hostname>`):
//! `running` while it is applied, `success` once DaCHS serves it, `failed` with the reason when
//! it is refused. Reporting never holds up or fails a pass: each request has a short time
//! limit, and what goes wrong is logged and counted. The same state for the same commit is
//! sent once (GitLab answers 400 to a repeated transition).

use std::sync::Mutex;
use std::time::Duration;

use crate::config::GitlabSettings;
use crate::metrics::Metrics;

/// GitLab keeps at most this many characters of a description.
const DESCRIPTION_MAX: usize = 255;

/// How long a report may take before it is given up.
const TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Running,
    Success,
    Failed,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Running => "running",
            State::Success => "success",
            State::Failed => "failed",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("the token file: {0}")]
    Token(String),
    #[error("{0}")]
    Http(String),
    #[error("GitLab answered HTTP {status}: {message}")]
    Refused { status: u16, message: String },
}

impl ReportError {
    pub fn kind(&self) -> &'static str {
        match self {
            ReportError::Token(_) => "token",
            ReportError::Http(_) => "unreachable",
            ReportError::Refused {
                status: 401 | 403, ..
            } => "unauthorized",
            ReportError::Refused { .. } => "refused",
        }
    }
}

/// Remembers what was last sent, so that a pass over an unchanged commit sends nothing.
#[derive(Default)]
pub struct Reporter {
    sent: Mutex<Option<(String, State)>>,
}

impl Reporter {
    pub fn new() -> Reporter {
        Reporter::default()
    }

    /// Sets the commit's status unless it already has it. Never fails: the outcome goes to the
    /// log and to `vespa_agent_gitlab_reports_total{result}`.
    pub async fn report(
        &self,
        settings: Option<&GitlabSettings>,
        metrics: &Metrics,
        sha: &str,
        state: State,
        description: &str,
    ) {
        let Some(g) = settings else { return };
        {
            let sent = self.sent.lock().unwrap_or_else(|e| e.into_inner());
            if sent
                .as_ref()
                .is_some_and(|(s, st)| s == sha && *st == state)
            {
                return;
            }
        }
        match tokio::time::timeout(TIMEOUT, post(g, sha, state, description)).await {
            Ok(Ok(())) => {
                *self.sent.lock().unwrap_or_else(|e| e.into_inner()) =
                    Some((sha.to_owned(), state));
                metrics.gitlab_reports.with_label_values(&["success"]).inc();
                tracing::debug!(commit = %sha, state = state.as_str(), "commit status set in GitLab");
            }
            Ok(Err(e)) => {
                metrics.gitlab_reports.with_label_values(&[e.kind()]).inc();
                tracing::warn!(commit = %sha, state = state.as_str(), error = %e, "cannot set the commit status in GitLab; the deploy goes on");
            }
            Err(_) => {
                metrics
                    .gitlab_reports
                    .with_label_values(&["unreachable"])
                    .inc();
                tracing::warn!(commit = %sha, state = state.as_str(), seconds = TIMEOUT.as_secs(), "GitLab did not answer the commit status in time; the deploy goes on");
            }
        }
    }
}

/// The description GitLab shows: one line, at most 255 characters.
pub fn description(text: &str) -> String {
    let one_line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    crate::text::bounded(one_line, DESCRIPTION_MAX)
}

/// `/projects/<id or url-encoded path>/statuses/<sha>`.
pub fn endpoint(g: &GitlabSettings, sha: &str) -> String {
    let project: String =
        percent_encoding::utf8_percent_encode(&g.project, percent_encoding::NON_ALPHANUMERIC)
            .to_string();
    format!("{}/projects/{project}/statuses/{sha}", g.api_url)
}

async fn post(g: &GitlabSettings, sha: &str, state: State, text: &str) -> Result<(), ReportError> {
    let token = g.token_file.read().map_err(ReportError::Token)?;
    let client = crate::outbound::client(TIMEOUT, TIMEOUT).map_err(ReportError::Http)?;
    let url = endpoint(g, sha);
    let resp = client
        .post(&url)
        .header("PRIVATE-TOKEN", token.expose())
        .form(&[
            ("state", state.as_str()),
            ("name", g.status_name.as_str()),
            ("description", description(text).as_str()),
        ])
        .send()
        .await
        .map_err(|e| ReportError::Http(format!("{}: {}", g.api_url, crate::error_chain(&e))))?;
    let status = resp.status().as_u16();
    if (200..300).contains(&status) {
        return Ok(());
    }
    let body = resp.text().await.unwrap_or_default();
    // A repeated transition (say running → running after a restart) is no news to GitLab.
    if status == 400 && body.contains("Cannot transition status") {
        return Ok(());
    }
    let message: String = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("message").map(|m| m.to_string()))
        .unwrap_or(body)
        .chars()
        .take(200)
        .collect();
    Err(ReportError::Refused { status, message })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptions_fit_gitlab() {
        assert_eq!(description("applied\nand  serving"), "applied and serving");
        let long = "x".repeat(400);
        let d = description(&long);
        assert_eq!(d.chars().count(), 255);
        assert!(d.ends_with('…'));
    }

    #[test]
    fn the_project_path_is_encoded() {
        let g = GitlabSettings {
            api_url: "https://gitlab.example/api/v4".into(),
            project: "vespa/epn lab".into(),
            token_file: crate::config::SecretFile::resolve("/dev/null", std::path::Path::new("/"))
                .unwrap(),
            status_name: "vespa-agent/node1".into(),
        };
        assert_eq!(
            endpoint(&g, "abc"),
            "https://gitlab.example/api/v4/projects/vespa%2Fepn%20lab/statuses/abc"
        );
    }
}
