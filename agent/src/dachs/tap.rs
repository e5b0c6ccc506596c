//! The local DaCHS TAP service: synchronous ADQL queries whose answer is trusted only if the
//! VOTable says `QUERY_STATUS` OK (DaCHS answers a failed query with HTTP 200).

use std::time::Duration;

use super::votable::{self, Answer};

/// The query the health stage runs: TAP_SCHEMA exists on every DaCHS, so it answers before any
/// service is deployed, and it goes through ADQL, DaCHS and PostgreSQL (an availability check
/// alone says "available" even with PostgreSQL down).
pub const HEALTH_QUERY: &str = "SELECT TOP 1 table_name FROM tap_schema.tables";

#[derive(Debug, thiserror::Error)]
pub enum TapError {
    #[error("TAP service {url} did not answer: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("TAP service {url} answered HTTP {status}")]
    HttpStatus { url: String, status: u16 },
    #[error("TAP service {url}: {source}")]
    Votable {
        url: String,
        source: votable::VotableError,
    },
    #[error("TAP query failed: {status}: {message}")]
    Query { status: String, message: String },
}

impl TapError {
    /// A small fixed set, for metric labels.
    pub fn kind(&self) -> &'static str {
        match self {
            TapError::Unreachable { .. } => "unreachable",
            TapError::HttpStatus { .. } => "http",
            TapError::Votable { .. } => "bad_answer",
            TapError::Query { .. } => "query",
        }
    }
}

#[derive(Clone, Debug)]
pub struct TapClient {
    http: reqwest::Client,
    sync_url: String,
}

impl TapClient {
    /// `base` is DaCHS's root URL (`dachs.url`); the TAP service is `<base>/tap`.
    pub fn new(base: &str, timeout: Duration) -> TapClient {
        let http = crate::outbound::client(timeout, timeout.min(Duration::from_secs(5)))
            .unwrap_or_else(|e| panic!("the TAP client cannot be built: {e}"));
        TapClient {
            http,
            sync_url: format!("{base}/tap/sync"),
        }
    }

    /// DaCHS serves: VOSI says available AND the health query through ADQL and PostgreSQL
    /// answers (availability alone says yes with PostgreSQL down).
    pub async fn answers_adql(&self) -> bool {
        self.available().await.is_ok() && self.query(HEALTH_QUERY).await.is_ok()
    }

    pub fn sync_url(&self) -> &str {
        &self.sync_url
    }

    /// VOSI availability: `<avl:available>true</avl:available>`. DaCHS says true even with
    /// PostgreSQL down, so this is checked beside a real query, never instead of one.
    pub async fn available(&self) -> Result<(), TapError> {
        let url = self.sync_url.trim_end_matches("/sync").to_owned() + "/availability";
        let resp = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| TapError::Unreachable {
                url: url.clone(),
                reason: crate::error_chain(&e),
            })?;
        let status = resp.status();
        let body = resp.text().await.map_err(|e| TapError::Unreachable {
            url: url.clone(),
            reason: crate::error_chain(&e),
        })?;
        if !status.is_success() {
            return Err(TapError::HttpStatus {
                url,
                status: status.as_u16(),
            });
        }
        if votable::is_available(&body) {
            Ok(())
        } else {
            Err(TapError::Query {
                status: "unavailable".into(),
                message: format!("{url} does not say available"),
            })
        }
    }

    /// Runs one ADQL query and returns its rows as text.
    pub async fn query(&self, adql: &str) -> Result<Answer, TapError> {
        self.query_max(adql, None).await
    }

    /// [`query`](Self::query) with MAXREC: DaCHS cuts a synchronous answer at a default limit
    /// unless told otherwise, and says OVERFLOW when it cut.
    pub async fn query_max(&self, adql: &str, maxrec: Option<u64>) -> Result<Answer, TapError> {
        let url = || self.sync_url.clone();
        let maxrec = maxrec.map(|n| n.to_string());
        let mut form = vec![
            ("REQUEST", "doQuery"),
            ("LANG", "ADQL"),
            ("RESPONSEFORMAT", "votable/td"),
            ("QUERY", adql),
        ];
        if let Some(m) = &maxrec {
            form.push(("MAXREC", m));
        }
        let resp = self
            .http
            .post(&self.sync_url)
            .form(&form)
            .send()
            .await
            .map_err(|e| TapError::Unreachable {
                url: url(),
                reason: crate::error_chain(&e),
            })?;
        let status = resp.status();
        let body = resp.text().await.map_err(|e| TapError::Unreachable {
            url: url(),
            reason: crate::error_chain(&e),
        })?;
        let answer = votable::parse(&body).map_err(|source| {
            if status.is_success() {
                TapError::Votable { url: url(), source }
            } else {
                TapError::HttpStatus {
                    url: url(),
                    status: status.as_u16(),
                }
            }
        })?;
        match answer.status.as_deref() {
            Some("OK" | "OVERFLOW") => Ok(answer),
            other => Err(TapError::Query {
                status: other.unwrap_or("no QUERY_STATUS").to_owned(),
                message: answer.message,
            }),
        }
    }
}
