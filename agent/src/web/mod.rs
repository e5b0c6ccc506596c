//! `http.web-config-file`: TLS and basic auth for the listener, from the web configuration file
//! of Prometheus's exporters, so that a node's one file serves node_exporter and the agent alike.
//!
//! The file, and every file it names, is looked at (a `stat` each) when a connection arrives;
//! a change is read before that connection is served, as the exporter toolkit reads it on every
//! request, so renewed certificates take effect without a restart. A file that does not load
//! leaves the last good one in force: said in the log and `status`, and counted.

pub mod auth;
pub mod file;
pub mod guard;
pub mod listener;
pub mod tls;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use serde::{Deserialize, Serialize};

use crate::metrics::Metrics;

#[derive(Debug, thiserror::Error)]
pub enum WebConfigError {
    #[error("http.web-config-file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}{}: {message}", path.display(), line.map(|l| format!(":{l}")).unwrap_or_default())]
    Invalid {
        path: PathBuf,
        line: Option<usize>,
        message: String,
    },
}

/// The configuration in force.
pub struct Active {
    /// None: plain HTTP.
    pub acceptor: Option<openssl::ssl::SslAcceptor>,
    pub allowed_sans: Vec<String>,
    pub users: Vec<(String, String)>,
    pub excluded_paths: Vec<String>,
    pub headers: Vec<(axum::http::HeaderName, axum::http::HeaderValue)>,
}

impl Active {
    fn open() -> Active {
        Active {
            acceptor: None,
            allowed_sans: Vec::new(),
            users: Vec::new(),
            excluded_paths: Vec::new(),
            headers: Vec::new(),
        }
    }
}

/// What `status` says of the web configuration.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct WebStatus {
    pub file: PathBuf,
    pub tls: bool,
    pub client_certificates: bool,
    pub basic_auth_users: usize,
    /// Why the file on disk is not the one in force; None when it is.
    pub error: Option<String>,
}

impl WebStatus {
    fn log(&self, what: &str) {
        tracing::info!(
            file = %self.file.display(),
            tls = self.tls,
            client_certificates = self.client_certificates,
            basic_auth_users = self.basic_auth_users,
            "{what}"
        );
    }
}

/// One file's identity and version, as `stat` tells them.
type Stamp = Option<(u64, u64, i64, i64, u64)>;

/// The files of a configuration just read, each with its stamp now.
fn stamped(files: Vec<PathBuf>) -> Vec<(PathBuf, Stamp)> {
    files
        .into_iter()
        .map(|f| {
            let s = stamp(&f);
            (f, s)
        })
        .collect()
}

fn stamp(p: &Path) -> Stamp {
    std::fs::metadata(p)
        .ok()
        .map(|m| (m.dev(), m.ino(), m.mtime(), m.mtime_nsec(), m.size()))
}

struct Watched {
    /// The files of the configuration in force (the web config file first) and their stamps
    /// when last read, good or bad.
    stamps: Vec<(PathBuf, Stamp)>,
    status: Option<WebStatus>,
}

pub struct Web {
    path: Option<PathBuf>,
    active: RwLock<Arc<Active>>,
    watched: Mutex<Watched>,
    pub checker: auth::Checker,
    metrics: Arc<Metrics>,
}

/// Reads `path` and builds what the listener needs from it.
pub fn load(path: &Path) -> Result<(Active, Vec<PathBuf>, WebStatus), WebConfigError> {
    let f = file::read(path)?;
    let acceptor = match &f.tls {
        Some(t) => Some(tls::acceptor(t).map_err(|message| WebConfigError::Invalid {
            path: path.to_owned(),
            line: None,
            message,
        })?),
        None => None,
    };
    let status = WebStatus {
        file: path.to_owned(),
        tls: f.tls.is_some(),
        client_certificates: f
            .tls
            .as_ref()
            .is_some_and(|t| t.client_auth != file::ClientAuth::NoClientCert),
        basic_auth_users: f.users.len(),
        error: None,
    };
    let active = Active {
        acceptor,
        allowed_sans: f.tls.map(|t| t.allowed_sans).unwrap_or_default(),
        users: f.users,
        excluded_paths: f.excluded_paths,
        headers: f.headers,
    };
    Ok((active, f.files, status))
}

impl Web {
    /// The listener's configuration at start-up: a file that does not load stops the start
    /// (serving without the TLS or auth it asks for would be worse).
    pub fn start(path: Option<PathBuf>, metrics: Arc<Metrics>) -> Result<Web, WebConfigError> {
        let (active, files, status) = match &path {
            Some(p) => {
                let (a, files, s) = load(p)?;
                s.log("web configuration loaded");
                (a, files, Some(s))
            }
            None => (Active::open(), Vec::new(), None),
        };
        Ok(Web {
            path,
            active: RwLock::new(Arc::new(active)),
            watched: Mutex::new(Watched {
                stamps: stamped(files),
                status,
            }),
            checker: auth::Checker::default(),
            metrics,
        })
    }

    pub fn current(&self) -> Arc<Active> {
        self.active
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The configuration for a new connection: re-read first if a file changed since last look.
    pub fn refresh(&self) -> Arc<Active> {
        let Some(path) = &self.path else {
            return self.current();
        };
        let mut w = self.watched.lock().unwrap_or_else(|e| e.into_inner());
        if w.stamps.iter().all(|(f, s)| stamp(f) == *s) {
            return self.current();
        }
        match load(path) {
            Ok((active, files, status)) => {
                *self.active.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(active);
                w.stamps = stamped(files);
                status.log("web configuration reloaded");
                w.status = Some(status);
                self.metrics
                    .web_reloads
                    .with_label_values(&["success"])
                    .inc();
                self.metrics.web_last_reload_ok.set(1);
            }
            Err(e) => {
                // Not again until something changes once more: re-stamp what was looked at.
                for (f, s) in w.stamps.iter_mut() {
                    *s = stamp(f);
                }
                tracing::error!(
                    error = %e,
                    "web configuration refused; the last good one stays in force"
                );
                if let Some(s) = w.status.as_mut() {
                    s.error = Some(e.to_string());
                }
                self.metrics
                    .web_reloads
                    .with_label_values(&["failure"])
                    .inc();
                self.metrics.web_last_reload_ok.set(0);
            }
        }
        self.current()
    }

    pub fn status(&self) -> Option<WebStatus> {
        self.watched
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .status
            .clone()
    }

    /// Counts a refused connection or request.
    pub fn refused(&self, reason: &str) {
        self.metrics.http_refused.with_label_values(&[reason]).inc();
    }
}
