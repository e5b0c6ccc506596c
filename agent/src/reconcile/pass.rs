//! One reconcile pass: its stages in order. Today: the service repository (fetch, verify,
//! materialize, validate, publish) and a health check of the local DaCHS. The apply and import
//! stages of DESIGN.md slot in between.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::apply::{self, ApplyContext};
use crate::config::{Settings, SourceSettings, Verify};
use crate::dachs::cli::Dachs;
use crate::dachs::tap::{HEALTH_QUERY, TapClient};
use crate::metrics::Metrics;
use crate::runtime::{Runtime, Watched};
use crate::service;
use crate::source::fetch::{self, FetchError, FetchSpec};
use crate::source::revisions::{RevisionError, Revisions};
use crate::source::verify;
use crate::state::{self, StateStore, now_ms};

/// A stage that failed, with a fixed `kind` usable as a metric label and the full message.
#[derive(Debug)]
pub struct StageFailure {
    pub stage: &'static str,
    pub kind: &'static str,
    pub message: String,
}

pub struct PassContext<'a> {
    pub settings: &'a Settings,
    pub runtime: &'a Runtime,
    pub metrics: &'a Metrics,
    pub store: &'a Mutex<StateStore>,
    /// Try the desired commit again even if it failed before (`sync --retry`).
    pub retry: bool,
    pub debug_stall: Option<Duration>,
    pub reporter: &'a crate::gitlab::Reporter,
    /// Whether anyone reads the pass's figures: see [`super::Reconciler::serves`].
    pub serves: bool,
}

impl PassContext<'_> {
    /// Sets the commit's status in GitLab when reporting is on; never fails the pass.
    async fn report(&self, sha: &str, state: crate::gitlab::State, text: &str) {
        self.reporter
            .report(
                self.settings.gitlab.as_ref(),
                self.metrics,
                sha,
                state,
                text,
            )
            .await;
    }
}

use crate::gitlab::State;
use crate::journal;
use crate::state::with_store;

pub async fn run(cx: &PassContext<'_>) -> Result<(), StageFailure> {
    if let Some(stall) = cx.debug_stall {
        cx.runtime
            .set_activity("stalled on purpose (VESPA_AGENT_DEBUG_STALL)");
        tokio::time::sleep(stall).await;
    }
    let source_result = match &cx.settings.source.url {
        Some(url) => match source(cx, url).await {
            Ok(target) => {
                let fresh = target.fresh;
                match deliver(cx, target).await {
                    Err(f) if fresh && f.stage == "apply" => {
                        granules_of_applied(cx).await;
                        Err(f)
                    }
                    r => r,
                }
            }
            Err(f) => {
                granules_of_applied(cx).await;
                Err(f)
            }
        },
        None => Ok(()),
    };
    show_revisions(cx);
    if let Err(f) = &source_result {
        cx.metrics
            .stage_errors
            .with_label_values(&[f.stage, f.kind])
            .inc();
    }
    // The health check runs whatever the source stage said: DaCHS keeps serving the last good
    // revision, and whether it answers is worth knowing either way.
    let health_result = health(cx).await;
    source_result.and(health_result)
}

/// GitLab unreachable, or the newest commit refused (by the source stage or at apply): the node
/// keeps serving the applied revision, and that revision's granules keep flowing.
async fn granules_of_applied(cx: &PassContext<'_>) {
    let applied = with_store(cx.store, |s| s.meta(state::APPLIED))
        .ok()
        .flatten();
    if cx.settings.dachs.apply
        && let Some(applied) = applied
        && let Err(g) = granules_of_revision(cx, &applied).await
    {
        tracing::error!(stage = g.stage, error = %g.message, "granules of the applied revision");
        cx.metrics
            .stage_errors
            .with_label_values(&[g.stage, g.kind])
            .inc();
    }
}

/// The revision a pass converges DaCHS to.
struct Target {
    sha: String,
    /// Not applied before: `current` moves to it once it is in DaCHS.
    fresh: bool,
    resources: usize,
}

/// Applies the target revision to DaCHS (unless `dachs.apply` is off), then publishes it as
/// `current`. A fresh commit that fails to apply is recorded as failed, not retried until a
/// newer one or `sync --retry`, and DaCHS keeps serving the previous revision.
async fn deliver(cx: &PassContext<'_>, t: Target) -> Result<(), StageFailure> {
    let fail = |kind: &'static str, message: String| StageFailure {
        stage: "apply",
        kind,
        message,
    };
    let dachs_settings = &cx.settings.dachs;
    if !dachs_settings.apply {
        if t.fresh {
            publish(cx, &t.sha, t.resources).map_err(|m| fail("local", m))?;
        }
        cx.report(
            &t.sha,
            State::Success,
            "followed by the node (dachs.apply is off: DaCHS is left alone)",
        )
        .await;
        return Ok(());
    }
    let root = Revisions::new(&cx.settings.state_dir).dir(&t.sha);
    let service = service::load(&root).map_err(|e| fail("local", e.to_string()))?;
    let dachs = Dachs::from_settings(dachs_settings);
    let tap = TapClient::new(&dachs_settings.url, dachs_settings.query_timeout);
    let acx = ApplyContext {
        dachs: &dachs,
        tap: &tap,
        inputs: &dachs_settings.inputs_dir,
        gavo_rc: &dachs_settings.gavo_rc,
        restart: &dachs_settings.restart,
        revert_drift: dachs_settings.revert_drift,
        granules: &cx.settings.granules,
        regression: dachs_settings.regression.as_ref(),
        metrics: cx.metrics,
        state_dir: &cx.settings.state_dir,
        store: cx.store,
        runtime: cx.runtime,
    };
    let started = Instant::now();
    if t.fresh {
        cx.report(&t.sha, State::Running, "being applied to DaCHS")
            .await;
    }
    let brought = match apply::apply(&acx, &t.sha, &root, &service).await {
        Ok(report) => {
            count_granules(cx.metrics, &report.granules);
            cx.metrics
                .drift_detected
                .inc_by(report.drifted.len() as u64);
            let left = if dachs_settings.revert_drift {
                Vec::new()
            } else {
                report.drifted.clone()
            };
            cx.metrics.drift_resources.set(left.len() as i64);
            cx.runtime.set_drifted(left);
            let deployed = with_store(cx.store, |s| s.resources()).unwrap_or_default();
            cx.runtime.set_watched(
                service
                    .resources
                    .iter()
                    .filter_map(|r| {
                        let hash = deployed.iter().find(|d| d.dir == r.dir)?.hash.clone();
                        Some(Watched {
                            dir: dachs_settings.inputs_dir.join(&r.dir),
                            unmanaged: r.collections.iter().map(|c| c.target.clone()).collect(),
                            hash,
                        })
                    })
                    .collect(),
            );
            if report.dachs_commands > 0 {
                let total = started.elapsed();
                tracing::info!(
                    message_id = journal::REVISION_APPLIED,
                    commit = %t.sha,
                    settings_changed = report.settings_changed,
                    deployed = ?report.deployed,
                    removed = ?report.removed,
                    dachs_commands = report.dachs_commands,
                    seconds = total.as_secs_f64(),
                    dachs_seconds = report.dachs_time.as_secs_f64(),
                    agent_seconds = total.saturating_sub(report.dachs_time).as_secs_f64(),
                    "revision applied to DaCHS"
                );
            }
            Brought {
                resources: report.deployed,
                report: report.granules,
            }
        }
        Err(e) => {
            let message = e.to_string();
            // A collection that cannot be brought while the import needs it is the source's
            // fault, not the commit's: retried with backoff, the commit is not refused.
            if e.kind() == "granules_unavailable" {
                tracing::warn!(commit = %t.sha, error = %message, "granules could not be brought for the import; the commit is tried again at the next pass");
                return Err(fail(e.kind(), message));
            }
            // A DaCHS (or PostgreSQL) that stopped answering is the node's fault, not the
            // commit's: the pass fails and is retried with backoff, the commit is not refused.
            let down = !tap.answers_adql().await;
            if down {
                tracing::warn!(commit = %t.sha, error = %message, "DaCHS stopped answering during the apply; the commit is tried again at the next pass");
                return Err(fail(
                    "dachs_down",
                    format!(
                        "DaCHS stopped answering while commit {} was applied (tried again at the next pass): {message}",
                        t.sha
                    ),
                ));
            }
            if t.fresh {
                with_store(cx.store, |s| {
                    s.set_meta(state::DESIRED, &t.sha)?;
                    s.record_commit(&t.sha, Some("failed"), Some("apply"), Some(&message))
                })
                .map_err(|e| fail("local", e.to_string()))?;
                tracing::error!(message_id = journal::COMMIT_REFUSED, commit = %t.sha, stage = "apply", error = %message, "commit rejected at apply; the previous revision keeps serving");
                cx.report(
                    &t.sha,
                    State::Failed,
                    &format!("refused at apply, the previous revision serves: {message}"),
                )
                .await;
                return Err(fail(
                    e.kind(),
                    format!("commit {} rejected at apply: {message}", t.sha),
                ));
            }
            return Err(fail(e.kind(), message));
        }
    };
    if t.fresh {
        publish(cx, &t.sha, t.resources).map_err(|m| fail("local", m))?;
    }
    cx.report(&t.sha, State::Success, "applied: DaCHS serves it")
        .await;
    granules(cx, &t.sha, &service, brought).await
}

/// The granules the apply brought for the resources it deployed: the granule stage leaves those
/// resources alone in the same pass, and reports them with its own (their metrics are counted).
#[derive(Default)]
struct Brought {
    resources: Vec<String>,
    report: crate::granules::stage::Report,
}

/// [`granules`] for a revision whose service description is not loaded yet.
async fn granules_of_revision(cx: &PassContext<'_>, sha: &str) -> Result<(), StageFailure> {
    let root = Revisions::new(&cx.settings.state_dir).dir(sha);
    let service = service::load(&root).map_err(|e| StageFailure {
        stage: "granules",
        kind: "local",
        message: e.to_string(),
    })?;
    granules(cx, sha, &service, Brought::default()).await
}

/// Brings every collection of the applied revision in step and imports what changed. A
/// failure here is not the commit's: the pass fails and is retried with backoff.
async fn granules(
    cx: &PassContext<'_>,
    sha: &str,
    service: &service::Service,
    brought: Brought,
) -> Result<(), StageFailure> {
    let fail = |kind: &'static str, message: String| StageFailure {
        stage: "granules",
        kind,
        message,
    };
    let d = &cx.settings.dachs;
    let dachs = Dachs::from_settings(d);
    let started = Instant::now();
    let result = crate::granules::stage::Stage {
        watcher: None,
        dachs: &dachs,
        store: cx.store,
        runtime: cx.runtime,
        inputs: &d.inputs_dir,
        settings: &cx.settings.granules,
        sha,
        deployed: &brought.resources,
    }
    .run(service)
    .await;
    if let Ok(counts) = with_store(cx.store, |s| s.granule_counts()) {
        for state in ["pending", "imported", "failed"] {
            let n = counts.iter().find(|(s, _)| s == state).map_or(0, |c| c.1);
            cx.metrics.granules.with_label_values(&[state]).set(n);
        }
    }
    let mut report = result.map_err(|e| fail(e.kind(), e.to_string()))?;
    count_granules(cx.metrics, &report);
    let b = brought.report;
    report.failures.splice(0..0, b.failures);
    report.imported.splice(0..0, b.imported);
    report.refused.splice(0..0, b.refused);
    report.added += b.added;
    report.changed += b.changed;
    report.vanished += b.vanished;
    report.bytes += b.bytes;
    if !report.imported.is_empty() {
        tracing::info!(
            message_id = journal::IMPORT_FINISHED,
            commit = %sha,
            resources = ?report.imported,
            added = report.added,
            changed = report.changed,
            vanished = report.vanished,
            bytes = report.bytes,
            refused = report.refused.len(),
            seconds = started.elapsed().as_secs_f64(),
            dachs_seconds = dachs.time_spent().as_secs_f64(),
            "granules imported"
        );
    }
    match report.failure() {
        Some(e) => Err(fail(e.kind(), e.to_string())),
        None => Ok(()),
    }
}

/// What granule transfers and imports did, into the metrics' counters.
fn count_granules(m: &Metrics, report: &crate::granules::stage::Report) {
    m.granule_bytes.inc_by(report.bytes);
    m.granule_retries.inc_by(report.retries);
    for s in &report.transfer_seconds {
        m.granule_transfer_duration.observe(*s);
    }
    for s in &report.import_seconds {
        m.granule_import_duration.observe(*s);
    }
    for (reason, n) in &report.failed {
        m.granule_failures.with_label_values(&[reason]).inc_by(*n);
    }
}

/// What the blocking half of the source stage found.
enum Prepared {
    /// The followed commit is the applied one, and its revision is in place.
    Unchanged { sha: String },
    /// A new revision, written and validated, ready to publish.
    Ready {
        sha: String,
        resources: usize,
        forced: bool,
    },
}

enum SourceError {
    /// Reaching the repository failed: retried with backoff, the commit is not to blame.
    Fetch(FetchError),
    /// The commit itself is unacceptable: not retried until a newer one or `sync --retry`.
    Commit {
        sha: String,
        stage: &'static str,
        kind: &'static str,
        message: String,
    },
    /// The commit failed before and is not retried.
    KnownFailed {
        sha: String,
        stage: String,
        message: String,
    },
    /// The local disk or the state store failed.
    Local(String),
}

struct SourceJob {
    state_dir: PathBuf,
    source: SourceSettings,
    spec: FetchSpec,
    previous: Option<String>,
    applied: Option<String>,
    known_failure: Option<(String, String, String)>,
    retry: bool,
}

/// The blocking half: git and file system work, run on the blocking pool.
fn prepare(job: SourceJob) -> Result<Prepared, SourceError> {
    let repo = fetch::open_mirror(&job.state_dir.join("mirror.git")).map_err(SourceError::Fetch)?;
    fetch::trust_ca_file(job.source.ca_file.as_deref()).map_err(SourceError::Local)?;
    let fetched = fetch::fetch(&repo, &job.spec).map_err(SourceError::Fetch)?;
    let sha = fetched.sha;
    let revisions = Revisions::new(&job.state_dir);
    // The same commit under another `source.path` is another service: applied anew.
    if job.applied.as_deref() == Some(sha.as_str())
        && revisions.current().as_deref() == Some(sha.as_str())
        && revisions.folder(&sha).as_deref() == Some(job.source.path.as_str())
    {
        return Ok(Prepared::Unchanged { sha });
    }
    if let Some((failed_sha, stage, message)) =
        job.known_failure.filter(|(s, ..)| *s == sha && !job.retry)
    {
        return Err(SourceError::KnownFailed {
            sha: failed_sha,
            stage,
            message,
        });
    }
    let forced = job
        .previous
        .as_deref()
        .is_some_and(|old| fetch::is_force_push(&repo, old, &sha));
    let commit_err = |stage, kind, message: String| SourceError::Commit {
        sha: sha.clone(),
        stage,
        kind,
        message,
    };

    match &job.source.verify {
        Verify::None => {}
        policy => verify::check(&repo, &sha, job.applied.as_deref(), policy)
            .map_err(|e| commit_err("verify", e.kind(), e.to_string()))?,
    }
    let staged = revisions
        .stage(&repo, &sha, &job.source.path)
        .map_err(|e| match e {
            RevisionError::Io { .. } => SourceError::Local(e.to_string()),
            e => commit_err("materialize", "bad_tree", e.to_string()),
        })?;
    let service = service::load(staged.path())
        .map_err(|e| commit_err("validate", "bad_service", e.to_string()))?;
    staged
        .accept()
        .map_err(|e| SourceError::Local(e.to_string()))?;
    Ok(Prepared::Ready {
        sha,
        resources: service.resources.len(),
        forced,
    })
}

async fn source(cx: &PassContext<'_>, url: &str) -> Result<Target, StageFailure> {
    let fail = |kind: &'static str, message: String| StageFailure {
        stage: "source",
        kind,
        message,
    };
    cx.runtime
        .set_activity(format!("fetching {}", cx.settings.source.follow.describe()));
    let spec = FetchSpec::configured(url, &cx.settings.source).map_err(|m| fail("local", m))?;
    let (previous, applied, known_failure) = with_store(cx.store, |s| {
        let previous = s.meta(state::DESIRED)?;
        let applied = s.meta(state::APPLIED)?;
        let known = match &previous {
            Some(p) => s
                .commit(p)?
                .filter(|c| c.outcome.as_deref() == Some("failed"))
                .map(|c| {
                    (
                        c.sha,
                        c.stage.unwrap_or_default(),
                        c.error.unwrap_or_default(),
                    )
                }),
            None => None,
        };
        Ok::<_, state::StateError>((previous, applied, known))
    })
    .map_err(|e| fail("local", e.to_string()))?;

    let job = SourceJob {
        state_dir: cx.settings.state_dir.clone(),
        source: cx.settings.source.clone(),
        spec,
        previous: previous.clone(),
        applied: applied.clone(),
        known_failure,
        retry: cx.retry,
    };
    let started = Instant::now();
    let prepared = tokio::task::spawn_blocking(move || prepare(job))
        .await
        .map_err(|e| fail("local", format!("the source stage crashed: {e}")))?;
    cx.metrics
        .fetch_duration
        .observe(started.elapsed().as_secs_f64());

    let result = match prepared {
        Ok(Prepared::Unchanged { sha }) => {
            cx.metrics.syncs.with_label_values(&["noop"]).inc();
            tracing::debug!(commit = %sha, "service repository unchanged");
            Ok(Target {
                sha,
                fresh: false,
                resources: 0,
            })
        }
        Ok(Prepared::Ready {
            sha,
            resources,
            forced,
        }) => {
            if forced {
                tracing::warn!(
                    commit = %sha,
                    previous = previous.as_deref().unwrap_or(""),
                    "the followed ref was force-pushed: following the rewritten history"
                );
            }
            cx.metrics.syncs.with_label_values(&["success"]).inc();
            Ok(Target {
                sha,
                fresh: true,
                resources,
            })
        }
        Err(SourceError::Fetch(e)) => {
            cx.metrics.syncs.with_label_values(&["error"]).inc();
            return Err(fail(e.kind(), e.to_string()));
        }
        Err(SourceError::Local(m)) => {
            cx.metrics.syncs.with_label_values(&["error"]).inc();
            return Err(fail("local", m));
        }
        Err(SourceError::Commit {
            sha,
            stage,
            kind,
            message,
        }) => {
            cx.metrics.syncs.with_label_values(&["error"]).inc();
            with_store(cx.store, |s| {
                s.set_meta(state::DESIRED, &sha)?;
                s.record_commit(&sha, Some("failed"), Some(stage), Some(&message))
            })
            .map_err(|e| fail("local", e.to_string()))?;
            tracing::error!(message_id = journal::COMMIT_REFUSED, commit = %sha, stage, error = %message, "commit rejected; the last good revision keeps serving");
            cx.report(
                &sha,
                State::Failed,
                &format!("refused at {stage}, the last good revision serves: {message}"),
            )
            .await;
            Err(fail(
                kind,
                format!("commit {sha} rejected at {stage}: {message}"),
            ))
        }
        Err(SourceError::KnownFailed {
            sha,
            stage,
            message,
        }) => {
            cx.metrics.syncs.with_label_values(&["noop"]).inc();
            Err(fail(
                "failed_commit",
                format!(
                    "commit {sha} failed at {stage} and is not retried: {message} (push a newer \
                     commit, or run `vespa-agent sync --retry`)"
                ),
            ))
        }
    };
    result.inspect(|_| {
        cx.metrics.source_last_success.set(now_ms() as f64 / 1000.0);
    })
}

/// Whatever happened, show the revisions as the store now has them.
fn show_revisions(cx: &PassContext<'_>) {
    if let Ok((failed, desired, applied, refused)) = with_store(cx.store, |s| {
        let desired = s.meta(state::DESIRED)?;
        let refused = match &desired {
            Some(d) => s
                .commit(d)?
                .filter(|c| c.outcome.as_deref() == Some("failed")),
            None => None,
        };
        Ok::<_, state::StateError>((
            s.failed_commits()?,
            desired,
            s.meta(state::APPLIED)?,
            refused,
        ))
    }) {
        cx.metrics.failed_commits.set(failed);
        // What an operator asks first after a push: which nodes refused it, and where.
        cx.metrics.desired_refused.reset();
        if let Some(c) = refused {
            let stage = c.stage.as_deref().unwrap_or("unknown");
            cx.metrics
                .desired_refused
                .with_label_values(&[&c.sha, stage])
                .set(1.0);
        }
        if let Some(d) = &desired {
            cx.metrics.set_revision("desired", d);
        }
        if let Some(a) = &applied {
            cx.metrics.set_revision("applied", a);
        }
        cx.runtime.set_revisions(desired, applied);
    }
}

/// The revision passed every check: make it the applied one, then tidy old revisions.
fn publish(cx: &PassContext<'_>, sha: &str, resources: usize) -> Result<(), String> {
    let state_dir: &Path = &cx.settings.state_dir;
    let revisions = Revisions::new(state_dir);
    with_store(cx.store, |s| s.set_meta(state::DESIRED, sha)).map_err(|e| e.to_string())?;
    revisions.publish(sha).map_err(|e| e.to_string())?;
    with_store(cx.store, |s| {
        s.record_commit(sha, Some("applied"), None, None)?;
        s.set_meta(state::APPLIED, sha)
    })
    .map_err(|e| e.to_string())?;
    tracing::info!(commit = %sha, resources, "revision published: current -> revisions/{sha}");
    match revisions.prune(cx.settings.source.keep_revisions, &[sha]) {
        Ok(removed) if !removed.is_empty() => tracing::debug!(?removed, "old revisions removed"),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "cannot remove old revisions"),
    }
    Ok(())
}

/// Counts the rows of every deployed ADQL table over TAP, timing each query: what a user of
/// the service would see, table by table. Metrics only: the health query decides the pass.
async fn count_tables(cx: &PassContext<'_>, tap: &TapClient) -> Vec<crate::runtime::TableHealth> {
    let deployed = with_store(cx.store, |s| s.resources()).unwrap_or_default();
    let mut seen = Vec::new();
    for table in deployed.iter().flat_map(|r| &r.tables) {
        seen.push(count_rows(tap, table).await);
    }
    seen
}

/// The tables' figures into the metrics and the status.
fn publish_tables(cx: &PassContext<'_>, seen: Vec<crate::runtime::TableHealth>) {
    let m = cx.metrics;
    // Tables no longer deployed leave the metrics with this reset.
    m.table_up.reset();
    m.table_rows.reset();
    m.table_query_duration.reset();
    for t in &seen {
        let table = t.table.as_str();
        m.table_query_duration
            .with_label_values(&[table])
            .set(t.seconds);
        m.table_up
            .with_label_values(&[table])
            .set(t.rows.is_some() as i64);
        if let Some(n) = t.rows {
            m.table_rows.with_label_values(&[table]).set(n);
        }
    }
    cx.runtime.set_tables(seen);
}

/// `SELECT COUNT(*)` over one table, timed; DaCHS's words when it fails.
pub async fn count_rows(tap: &TapClient, table: &str) -> crate::runtime::TableHealth {
    // The names passed the RD check: identifiers only, safe in ADQL.
    let started = Instant::now();
    let answer = tap.query(&format!("SELECT COUNT(*) FROM {table}")).await;
    let seconds = started.elapsed().as_secs_f64();
    let (rows, error) = match answer {
        Ok(a) if a.status.as_deref() == Some("OK") => {
            match a.rows.first().and_then(|r| r.first()?.parse::<i64>().ok()) {
                Some(n) => (Some(n), None),
                None => (None, Some("the answer holds no count".to_owned())),
            }
        }
        Ok(a) => (None, Some(a.message)),
        Err(e) => (None, Some(e.to_string())),
    };
    crate::runtime::TableHealth {
        table: table.to_owned(),
        rows,
        seconds,
        error,
    }
}

async fn health(cx: &PassContext<'_>) -> Result<(), StageFailure> {
    cx.runtime.set_activity("checking that DaCHS answers ADQL");
    let dachs = &cx.settings.dachs;
    let tap = TapClient::new(&dachs.url, dachs.query_timeout);
    crate::node::observe(cx.metrics, &dachs.inputs_dir);
    // The tables are counted beside the health query, each a round trip through DaCHS, and
    // their figures kept only when it answered; only for a process that shows them.
    let count = async {
        match cx.serves {
            true => Some(count_tables(cx, &tap).await),
            false => None,
        }
    };
    let (answer, counted) = tokio::join!(tap.query(HEALTH_QUERY), count);
    match answer {
        Ok(_) => {
            cx.metrics.dachs_up.set(1);
            cx.runtime.set_dachs_error(None);
            if let Some(counted) = counted {
                publish_tables(cx, counted);
            }
            Ok(())
        }
        Err(e) => {
            cx.metrics.dachs_up.set(0);
            cx.metrics
                .stage_errors
                .with_label_values(&["health", e.kind()])
                .inc();
            cx.runtime.set_dachs_error(Some(e.to_string()));
            Err(StageFailure {
                stage: "health",
                kind: e.kind(),
                message: e.to_string(),
            })
        }
    }
}
