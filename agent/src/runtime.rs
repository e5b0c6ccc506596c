//! What the running daemon knows about itself right now: the loop's heartbeat, whether it is
//! ready, what it is doing. Written by the reconcile loop and the supervisor, read by the HTTP
//! endpoints and the watchdog. Nothing here touches the disk.

use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::state::{PassRecord, now_ms};
use crate::systemd;

pub struct Runtime {
    started: Instant,
    started_unix_ms: i64,
    /// Milliseconds after `started` of the loop's last sign of life.
    heartbeat_ms: AtomicU64,
    stall_timeout_ms: AtomicU64,
    ready: AtomicBool,
    /// Until when (ms after `started`) file events are the agent's own doing: a pass is
    /// running, or ended a moment ago.
    quiet_until_ms: AtomicU64,
    /// The deployed resources' directories and, in each, the granule directories that are not
    /// the agent's to watch.
    watched: tokio::sync::watch::Sender<Vec<Watched>>,
    /// Set by `sync --retry` on the control socket, taken by the next pass.
    retry_requested: AtomicBool,
    /// Each finished pass, for the control socket's waiting clients.
    passes: tokio::sync::watch::Sender<Option<PassRecord>>,
    inner: Mutex<Inner>,
}

#[derive(Clone, Debug, Default, Serialize)]
struct Inner {
    activity: String,
    last_pass: Option<PassRecord>,
    config_files: Vec<PathBuf>,
    last_reload_error: Option<String>,
    restart_needed_for: Vec<String>,
    dachs_url: String,
    dachs_error: Option<String>,
    desired_revision: Option<String>,
    applied_revision: Option<String>,
    drifted: Vec<String>,
    tables: Vec<TableHealth>,
    rebuild: RebuildStatus,
}

/// The automatic rebuild policy as `/status` shows it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct RebuildStatus {
    /// `rebuild.automatic`: off, repair or vm.
    pub automatic: String,
    pub dry_run: bool,
    /// Since when DaCHS has failed its health check (None: it passed the last one).
    pub unhealthy_since_unix_ms: Option<i64>,
    /// The newest decision, by this daemon or by `rebuild`.
    pub last_decision: Option<crate::state::RebuildRecord>,
}

/// One deployed ADQL table as the last pass saw it over TAP.
#[derive(Clone, Debug, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct TableHealth {
    pub table: String,
    /// None when the count failed.
    pub rows: Option<i64>,
    pub seconds: f64,
    /// DaCHS's words when the count failed.
    pub error: Option<String>,
}

/// A deployed resource's directory as the drift watcher sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Watched {
    pub dir: PathBuf,
    /// Granule directories inside it, which are not the agent's to watch.
    pub unmanaged: Vec<String>,
    /// The hash of the managed files as deployed.
    pub hash: String,
}

/// The body of `GET /status`.
#[derive(Debug, Serialize, serde::Deserialize)]
pub struct StatusReport {
    pub version: String,
    pub revision: String,
    pub pid: u32,
    pub started_unix_ms: i64,
    pub uptime_seconds: f64,
    pub ready: bool,
    pub heartbeat_age_seconds: f64,
    pub activity: String,
    pub config_files: Vec<PathBuf>,
    pub last_reload_error: Option<String>,
    pub restart_needed_for: Vec<String>,
    pub last_pass: Option<serde_json::Value>,
    pub dachs_url: String,
    pub dachs_error: Option<String>,
    pub desired_revision: Option<String>,
    pub applied_revision: Option<String>,
    /// Resources whose managed files were edited on the node and left so.
    #[serde(default)]
    pub drifted_resources: Vec<String>,
    /// Why the node is not ready (empty when it is).
    #[serde(default)]
    pub not_ready_because: Vec<String>,
    /// Each deployed table, counted over TAP at the last pass.
    #[serde(default)]
    pub tables: Vec<TableHealth>,
    #[serde(default)]
    pub rebuild: RebuildStatus,
    /// TLS and basic auth of the listener; None without `http.web-config-file`.
    #[serde(default)]
    pub web_config: Option<crate::web::WebStatus>,
}

/// A poisoned lock only means a panic elsewhere; the data (status strings) is still usable.
fn lock(m: &Mutex<Inner>) -> std::sync::MutexGuard<'_, Inner> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Runtime {
    pub fn new(stall_timeout: Duration, config_files: Vec<PathBuf>, dachs_url: String) -> Runtime {
        Runtime {
            started: Instant::now(),
            started_unix_ms: now_ms(),
            heartbeat_ms: AtomicU64::new(0),
            stall_timeout_ms: AtomicU64::new(stall_timeout.as_millis() as u64),
            ready: AtomicBool::new(false),
            quiet_until_ms: AtomicU64::new(0),
            watched: tokio::sync::watch::Sender::new(Vec::new()),
            retry_requested: AtomicBool::new(false),
            passes: tokio::sync::watch::Sender::new(None),
            inner: Mutex::new(Inner {
                activity: "starting".into(),
                config_files,
                dachs_url,
                ..Inner::default()
            }),
        }
    }

    /// The reconcile loop is alive.
    pub fn beat(&self) {
        let ms = self.started.elapsed().as_millis() as u64;
        self.heartbeat_ms.store(ms, Ordering::Relaxed);
    }

    pub fn heartbeat_age(&self) -> Duration {
        let now = self.started.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.heartbeat_ms.load(Ordering::Relaxed)))
    }

    pub fn stall_timeout(&self) -> Duration {
        Duration::from_millis(self.stall_timeout_ms.load(Ordering::Relaxed))
    }

    pub fn set_stall_timeout(&self, d: Duration) {
        self.stall_timeout_ms
            .store(d.as_millis() as u64, Ordering::Relaxed);
    }

    /// The loop's heartbeat is recent enough: the daemon is alive and not stuck.
    pub fn is_alive(&self) -> bool {
        self.heartbeat_age() <= self.stall_timeout()
    }

    /// Ready: a pass has completed, DaCHS answered its health query, and the desired revision
    /// is the applied one. Otherwise, why not, one reason each.
    pub fn readiness(&self) -> Vec<String> {
        let inner = lock(&self.inner).clone();
        let Some(pass) = &inner.last_pass else {
            return vec!["no reconcile pass has completed yet".into()];
        };
        let mut reasons = Vec::new();
        if let Some(e) = &inner.dachs_error {
            reasons.push(format!("DaCHS does not answer ADQL: {e}"));
        }
        let failed_at = |stage: &str| {
            !self.ready.load(Ordering::Relaxed) && pass.stage.as_deref() == Some(stage)
        };
        let why = pass.error.as_deref().unwrap_or("(no message)");
        match (&inner.desired_revision, &inner.applied_revision) {
            (Some(d), Some(a)) if d != a => reasons.push(format!(
                "the desired commit {d} is not applied ({a} serves): {why}"
            )),
            (Some(d), None) => {
                reasons.push(format!("the desired commit {d} is not applied yet: {why}"))
            }
            _ if failed_at("apply") => {
                reasons.push(format!("the last pass failed to apply: {why}"))
            }
            _ => {}
        }
        reasons
    }

    pub fn is_ready(&self) -> bool {
        self.readiness().is_empty()
    }

    /// Whether the last pass succeeded, as one input of [`Runtime::readiness`].
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    /// What the agent does now, in one human line; also shown by `systemctl status`.
    pub fn set_activity(&self, line: impl Into<String>) {
        let line = line.into();
        systemd::status(&line);
        lock(&self.inner).activity = line;
    }

    pub fn activity(&self) -> String {
        lock(&self.inner).activity.clone()
    }

    pub fn set_last_pass(&self, pass: PassRecord) {
        lock(&self.inner).last_pass = Some(pass.clone());
        self.passes.send_replace(Some(pass));
    }

    /// Finished passes, as they finish.
    pub fn subscribe_passes(&self) -> tokio::sync::watch::Receiver<Option<PassRecord>> {
        self.passes.subscribe()
    }

    /// A pass starts (`true`) or ends: the files it writes are not drift.
    pub fn set_busy(&self, busy: bool) {
        let until = if busy {
            u64::MAX
        } else {
            self.started.elapsed().as_millis() as u64 + 1000
        };
        self.quiet_until_ms.store(until, Ordering::Relaxed);
    }

    pub fn is_busy(&self) -> bool {
        (self.started.elapsed().as_millis() as u64) < self.quiet_until_ms.load(Ordering::Relaxed)
    }

    pub fn set_watched(&self, dirs: Vec<Watched>) {
        self.watched.send_if_modified(|w| {
            let changed = *w != dirs;
            *w = dirs;
            changed
        });
    }

    pub fn subscribe_watched(&self) -> tokio::sync::watch::Receiver<Vec<Watched>> {
        self.watched.subscribe()
    }

    /// The next pass retries a commit that failed before.
    pub fn request_retry(&self) {
        self.retry_requested.store(true, Ordering::Relaxed);
    }

    pub fn take_retry(&self) -> bool {
        self.retry_requested.swap(false, Ordering::Relaxed)
    }

    pub fn set_revisions(&self, desired: Option<String>, applied: Option<String>) {
        let mut inner = lock(&self.inner);
        inner.desired_revision = desired;
        inner.applied_revision = applied;
    }

    pub fn set_drifted(&self, resources: Vec<String>) {
        lock(&self.inner).drifted = resources;
    }

    pub fn set_tables(&self, tables: Vec<TableHealth>) {
        lock(&self.inner).tables = tables;
    }

    pub fn set_dachs_error(&self, error: Option<String>) {
        lock(&self.inner).dachs_error = error;
    }

    /// Why DaCHS failed the last pass's health check: no ADQL answer, or a deployed table that
    /// does not answer. None when it passed.
    pub fn health_problem(&self) -> Option<String> {
        let inner = lock(&self.inner);
        if let Some(e) = &inner.dachs_error {
            return Some(format!("DaCHS does not answer ADQL: {e}"));
        }
        inner.tables.iter().find_map(|t| {
            t.error
                .as_ref()
                .map(|e| format!("table {} does not answer: {e}", t.table))
        })
    }

    pub fn update_rebuild(&self, f: impl FnOnce(&mut RebuildStatus)) {
        f(&mut lock(&self.inner).rebuild);
    }

    pub fn config_reloaded(&self, files: Vec<PathBuf>, dachs_url: String, restart: Vec<String>) {
        let mut inner = lock(&self.inner);
        inner.config_files = files;
        inner.dachs_url = dachs_url;
        inner.last_reload_error = None;
        inner.restart_needed_for = restart;
    }

    pub fn config_rejected(&self, error: String) {
        lock(&self.inner).last_reload_error = Some(error);
    }

    /// The report `/status` and the control socket's `status` serve: this one with the
    /// listener's web configuration.
    pub fn report_with(&self, web: &crate::web::Web) -> StatusReport {
        StatusReport {
            web_config: web.status(),
            ..self.report()
        }
    }

    pub fn report(&self) -> StatusReport {
        let inner = lock(&self.inner).clone();
        StatusReport {
            version: env!("CARGO_PKG_VERSION").into(),
            revision: crate::metrics::GIT_REVISION.into(),
            pid: std::process::id(),
            started_unix_ms: self.started_unix_ms,
            uptime_seconds: self.started.elapsed().as_secs_f64(),
            ready: self.is_ready(),
            heartbeat_age_seconds: self.heartbeat_age().as_secs_f64(),
            activity: inner.activity,
            config_files: inner.config_files,
            last_reload_error: inner.last_reload_error,
            restart_needed_for: inner.restart_needed_for,
            last_pass: inner
                .last_pass
                .map(|p| serde_json::to_value(p).unwrap_or_default()),
            dachs_url: inner.dachs_url,
            dachs_error: inner.dachs_error,
            desired_revision: inner.desired_revision,
            applied_revision: inner.applied_revision,
            drifted_resources: inner.drifted,
            not_ready_because: self.readiness(),
            tables: inner.tables,
            rebuild: inner.rebuild,
            web_config: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Outcome;

    fn pass(outcome: Outcome, stage: Option<&str>, error: Option<&str>) -> PassRecord {
        PassRecord {
            id: 1,
            trigger: "timer".into(),
            started_ms: 0,
            finished_ms: Some(1),
            outcome: Some(outcome),
            stage: stage.map(Into::into),
            error: error.map(Into::into),
        }
    }

    #[test]
    fn ready_means_the_desired_revision_serves_from_a_dachs_that_answers() {
        let r = Runtime::new(Duration::from_secs(60), Vec::new(), "http://x".into());
        assert_eq!(r.readiness(), ["no reconcile pass has completed yet"]);

        r.set_last_pass(pass(Outcome::Success, None, None));
        r.set_ready(true);
        r.set_revisions(Some("a".into()), Some("a".into()));
        assert!(r.is_ready());

        // A granule refused, GitLab unreachable: the desired revision still serves.
        r.set_ready(false);
        r.set_last_pass(pass(
            Outcome::Failure,
            Some("granules"),
            Some("g1.csv refused"),
        ));
        assert!(r.is_ready(), "{:?}", r.readiness());
        r.set_last_pass(pass(Outcome::Failure, Some("source"), Some("unreachable")));
        assert!(r.is_ready(), "{:?}", r.readiness());

        // A newer commit refused: the node serves, but not what was asked for.
        r.set_last_pass(pass(
            Outcome::Failure,
            Some("apply"),
            Some("dachs val: bad tag"),
        ));
        r.set_revisions(Some("b".into()), Some("a".into()));
        assert_eq!(
            r.readiness(),
            ["the desired commit b is not applied (a serves): dachs val: bad tag"]
        );
        r.set_dachs_error(Some("connection refused".into()));
        assert_eq!(r.readiness().len(), 2);
        assert!(r.readiness()[0].contains("DaCHS does not answer ADQL: connection refused"));

        // The applied revision failed to apply again (say, a drift it could not revert).
        r.set_dachs_error(None);
        r.set_revisions(Some("a".into()), Some("a".into()));
        assert_eq!(
            r.readiness(),
            ["the last pass failed to apply: dachs val: bad tag"]
        );
    }
}
