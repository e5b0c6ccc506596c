//! Applying a revision to the local DaCHS without ever taking a working service down.
//!
//! For each resource whose managed files changed (see [`files`]): stage the files under
//! `<inputs>/.vespa-stage/<dir>` (DaCHS validates only RDs below its inputs directory), gate on
//! `dachs val`, ask `dachs val -c` whether the table structure changed, put the files in place,
//! import (drop first on a structural change), expire the RD in the running server, publish or
//! unpublish, and query every ADQL table over TAP. Any failure after the files were placed rolls
//! this resource back, and every resource already changed in this pass, to the files of the
//! revision they came from, re-importing where the failed attempt had touched tables.
//!
//! A resource with granule collections has them brought into its data directory before its
//! import (see [`intake`]): the RD may name them literally, and their import decides whether
//! the commit is good.
//!
//! Why the gate comes first: DaCHS keeps serving the last good RD when the file on disk turns
//! broken, but a reload, restart or `expireRDs` with a broken RD takes its tables down. The
//! agent only ever expires an RD that passed `dachs val`.

pub mod intake;
pub mod regression;
pub mod server;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use crate::dachs::cli::{Dachs, DachsError};
use crate::dachs::rd;
use crate::dachs::tap::TapClient;
use crate::files::{self, Owner};
use crate::runtime::Runtime;
use crate::service::{Resource, Service};
use crate::state::{ResourceRecord, StateStore};

/// Where resources are staged for validation, inside DaCHS's inputs directory.
pub const STAGE_DIR: &str = ".vespa-stage";

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// A step failed; `rollback` says whether the previous state was restored.
    #[error("{subject}: {step} failed: {message}{}", rollback_note(.rollback))]
    Step {
        /// `resource <dir>`, or the DaCHS settings file.
        subject: String,
        step: &'static str,
        kind: &'static str,
        message: String,
        rollback: Option<Result<(), String>>,
    },
    #[error("{0}")]
    Local(String),
}

fn rollback_note(r: &Option<Result<(), String>>) -> String {
    match r {
        None => String::new(),
        Some(Ok(())) => "; rolled back, the previous version is serving".into(),
        Some(Err(e)) => format!("; ROLLBACK FAILED: {e}"),
    }
}

impl ApplyError {
    pub fn kind(&self) -> &'static str {
        match self {
            ApplyError::Step { kind, .. } => kind,
            ApplyError::Local(_) => "local",
        }
    }
}

/// What a pass changed.
#[derive(Debug, Default)]
pub struct Report {
    /// Resources whose files on disk differed from the applied revision (reverted unless
    /// `dachs.drift = "report"`).
    pub drifted: Vec<String>,
    /// gavo.rc was rewritten and DaCHS restarted.
    pub settings_changed: bool,
    pub deployed: Vec<String>,
    pub removed: Vec<String>,
    pub dachs_commands: u64,
    pub dachs_time: Duration,
    /// What the deploys' granule transfers and imports did, for the metrics.
    pub granules: crate::granules::stage::Report,
}

pub struct ApplyContext<'a> {
    pub dachs: &'a Dachs,
    pub tap: &'a TapClient,
    pub inputs: &'a Path,
    pub gavo_rc: &'a Path,
    /// `dachs.restart`; empty for automatic.
    pub restart: &'a [String],
    pub state_dir: &'a Path,
    pub store: &'a Mutex<StateStore>,
    pub runtime: &'a Runtime,
    /// `dachs.drift = "revert"`.
    pub revert_drift: bool,
    /// How a deploy brings the resource's collections before its import.
    pub granules: &'a crate::config::GranuleSettings,
    /// The provider's regression suites as the last step of a deploy; `None`: off.
    pub regression: Option<&'a crate::config::Regression>,
    pub metrics: &'a crate::metrics::Metrics,
}

fn store<T>(
    s: &Mutex<StateStore>,
    f: impl FnOnce(&StateStore) -> Result<T, crate::state::StateError>,
) -> Result<T, ApplyError> {
    crate::state::with_store(s, f).map_err(|e| ApplyError::Local(e.to_string()))
}

/// One resource to (re)deploy.
pub struct Change<'a> {
    pub res: &'a Resource,
    pub why: Why,
    /// The RD's ADQL tables, or why they could not be read.
    parsed: Result<Vec<String>, String>,
    unmanaged: Vec<String>,
    /// The managed files, relative to the resource directory.
    pub files: Vec<PathBuf>,
    pub record: ResourceRecord,
    pub old: Option<ResourceRecord>,
}

/// How far a deploy got, so that a rollback undoes exactly that.
#[derive(Default)]
struct Progress {
    placed: bool,
    dropped: bool,
    imported: bool,
}

fn rd_file(res: &Resource) -> PathBuf {
    PathBuf::from(format!("{}.rd", res.rd))
}

/// Why a resource is deployed again.
#[derive(Debug, PartialEq, Eq)]
pub enum Why {
    /// Not deployed before.
    New,
    /// Its files differ from the ones on disk: paths added, changed and removed.
    Files {
        added: Vec<PathBuf>,
        changed: Vec<PathBuf>,
        removed: Vec<PathBuf>,
        /// The revision is the deployed one: someone edited the files on disk.
        drift: bool,
    },
    /// Only `publish` changed.
    Publication,
}

/// What a pass would do, computed without touching anything.
pub struct Plan<'a> {
    pub changes: Vec<Change<'a>>,
    pub removals: Vec<ResourceRecord>,
    /// Resources unchanged by the revision whose records move to it.
    pub carried: Vec<ResourceRecord>,
}

/// Compares the revision at `root` (commit `sha`) with what is deployed (`deployed`, from the
/// state store) and with the files under `inputs`.
pub fn plan<'a>(
    inputs: &Path,
    deployed: Vec<ResourceRecord>,
    sha: &str,
    root: &Path,
    service: &'a Service,
) -> Result<Plan<'a>, ApplyError> {
    let deployed: BTreeMap<String, ResourceRecord> =
        deployed.into_iter().map(|r| (r.dir.clone(), r)).collect();
    let local = |e: files::FilesError| ApplyError::Local(e.to_string());
    let mut plan = Plan {
        changes: Vec::new(),
        removals: Vec::new(),
        carried: Vec::new(),
    };
    for res in &service.resources {
        let unmanaged: Vec<String> = res.collections.iter().map(|c| c.target.clone()).collect();
        let src = root.join(&res.dir);
        let files = files::list(&src, &unmanaged).map_err(local)?;
        let hash = files::hash(&src, &files).map_err(local)?;
        let rd_path = src.join(rd_file(res));
        let xml = std::fs::read_to_string(&rd_path)
            .map_err(|e| ApplyError::Local(format!("{}: {e}", rd_path.display())))?;
        // DaCHS's own verdict comes first (`dachs val` names the line); this reading only
        // matters once the RD has passed it.
        let parsed = rd::adql_tables(&format!("{}/{}", res.dir, rd_file(res).display()), &xml)
            .map_err(|e| e.to_string());
        let record = ResourceRecord {
            dir: res.dir.clone(),
            rd_id: res.rd_id(),
            hash,
            published: res.publish,
            tables: parsed.clone().unwrap_or_default(),
            sha: sha.to_owned(),
        };
        let old = deployed.get(&res.dir).cloned();
        let target = inputs.join(&res.dir);
        let on_disk = files::list(&target, &unmanaged).map_err(local)?;
        let (added, changed, removed) =
            files::diff(&src, &files, &target, &on_disk).map_err(local)?;
        let same_files = added.is_empty() && changed.is_empty() && removed.is_empty();
        let why = match &old {
            None => Some(Why::New),
            Some(o) if !same_files || o.hash != record.hash || o.rd_id != record.rd_id => {
                Some(Why::Files {
                    drift: o.hash == record.hash,
                    added,
                    changed,
                    removed,
                })
            }
            Some(o) if o.published != record.published => Some(Why::Publication),
            Some(_) => None,
        };
        match why {
            Some(why) => plan.changes.push(Change {
                res,
                why,
                parsed,
                unmanaged,
                files,
                record,
                old,
            }),
            // Unchanged, and identical in this revision: a later rollback restores it from
            // here, so older revisions can be pruned.
            None if old.as_ref().is_some_and(|o| o.sha != sha) => plan.carried.push(record),
            None => {}
        }
    }
    let wanted: Vec<&str> = service.resources.iter().map(|r| r.dir.as_str()).collect();
    plan.removals = deployed
        .into_values()
        .filter(|r| !wanted.contains(&r.dir.as_str()))
        .collect();
    Ok(plan)
}

/// Applies the revision at `root` (commit `sha`, described by `service`).
pub async fn apply(
    cx: &ApplyContext<'_>,
    sha: &str,
    root: &Path,
    service: &Service,
) -> Result<Report, ApplyError> {
    let started = (cx.dachs.commands_started(), cx.dachs.time_spent());
    let deployed = store(cx.store, |s| s.resources())?;
    let Plan {
        changes,
        removals,
        carried,
    } = plan(cx.inputs, deployed, sha, root, service)?;
    for record in &carried {
        store(cx.store, |s| s.put_resource(record))?;
    }
    let settings_changed = server::apply(cx, &service.server).await?;

    let mut report = Report::default();
    let mut done: Vec<(Change, Progress)> = Vec::new();
    for change in changes {
        if let Why::Files {
            drift: true,
            added,
            changed,
            removed,
        } = &change.why
        {
            let files: Vec<String> = added
                .iter()
                .chain(changed)
                .chain(removed)
                .map(|p| p.display().to_string())
                .collect();
            report.drifted.push(change.res.dir.clone());
            if !cx.revert_drift {
                tracing::warn!(message_id = crate::journal::DRIFT, resource = %change.res.dir, ?files, "managed files were edited on the node (drift); reported, not reverted (dachs.drift = \"report\")");
                continue;
            }
            tracing::warn!(message_id = crate::journal::DRIFT, resource = %change.res.dir, ?files, "managed files were edited on the node (drift); putting the revision's files back");
        }
        cx.runtime
            .set_activity(format!("deploying resource {}", change.res.dir));
        let mut progress = Progress::default();
        match deploy(cx, root, &change, &mut progress, &mut report.granules).await {
            Ok(()) => {
                store(cx.store, |s| s.put_resource(&change.record))?;
                report.deployed.push(change.res.dir.clone());
                done.push((change, progress));
            }
            Err((step, e)) => {
                tracing::error!(message_id = crate::journal::ROLLBACK, resource = %change.res.dir, step, error = %e.message(), "deploy failed; rolling back");
                let mut restored = rollback(cx, &change, &progress).await;
                for (earlier, p) in done.iter().rev() {
                    let r = rollback(cx, earlier, p).await;
                    if restored.is_ok() {
                        restored = r;
                    }
                }
                if let Some(c) = &settings_changed {
                    let r = server::restore(cx, c).await;
                    if restored.is_ok() {
                        restored = r;
                    }
                }
                return Err(ApplyError::Step {
                    subject: format!("resource {}", change.res.dir),
                    step,
                    kind: step_kind(step, &e),
                    message: e.message(),
                    rollback: Some(restored),
                });
            }
        }
    }
    for gone in removals {
        cx.runtime
            .set_activity(format!("removing resource {}", gone.dir));
        remove(cx, &gone).await.map_err(|e| ApplyError::Step {
            subject: format!("resource {}", gone.dir),
            step: "remove",
            kind: "dachs_failed",
            message: e.message(),
            rollback: None,
        })?;
        store(cx.store, |s| s.remove_resource(&gone.dir))?;
        report.removed.push(gone.dir);
    }
    report.settings_changed = settings_changed.is_some();
    report.dachs_commands = cx.dachs.commands_started() - started.0;
    report.dachs_time = cx.dachs.time_spent() - started.1;
    Ok(report)
}

fn step_kind(step: &'static str, e: &DachsError) -> &'static str {
    match (step, e) {
        (_, DachsError::Timeout { .. }) => "dachs_timeout",
        (_, DachsError::Spawn { .. }) => "dachs_spawn",
        ("validate", _) => "invalid_rd",
        ("import", _) => "import_failed",
        ("health", _) => "health_failed",
        ("granules", _) => "granules_unavailable",
        ("regression", _) => "regression_failed",
        _ => "dachs_failed",
    }
}

type StepResult = Result<(), (&'static str, DachsError)>;

fn local_step(step: &'static str, e: impl std::fmt::Display) -> (&'static str, DachsError) {
    (
        step,
        DachsError::Failed {
            command: step.to_owned(),
            message: e.to_string(),
        },
    )
}

async fn deploy(
    cx: &ApplyContext<'_>,
    root: &Path,
    change: &Change<'_>,
    progress: &mut Progress,
    granules: &mut crate::granules::stage::Report,
) -> StepResult {
    let res = change.res;
    let owner = Owner::of(&cx.dachs.user);
    let src = root.join(&res.dir);
    let stage = cx.inputs.join(STAGE_DIR).join(&res.dir);
    let stage_id = format!("{STAGE_DIR}/{}/{}", res.dir, res.rd);
    let staged = async {
        files::remove_tree(&stage).map_err(|e| local_step("stage", e))?;
        files::make_dirs(cx.inputs, Path::new(STAGE_DIR), owner)
            .map_err(|e| local_step("stage", e))?;
        files::install(&src, &change.files, &[], &stage, &rd_file(res), owner)
            .map_err(|e| local_step("stage", e))?;
        cx.dachs
            .validate(&stage_id)
            .await
            .map_err(|e| ("validate", in_repository_terms(e, cx.inputs)))?;
        if let Err(m) = &change.parsed {
            return Err(local_step("validate", m));
        }
        match &change.old {
            Some(_) => Ok(!cx
                .dachs
                .matches_database(&stage_id)
                .await
                .map_err(|e| ("validate", e))?),
            None => Ok(false),
        }
    }
    .await;
    let _ = files::remove_tree(&stage);
    let structural = staged?;

    let target = cx.inputs.join(&res.dir);
    let on_disk = files::list(&target, &change.unmanaged).map_err(|e| local_step("install", e))?;
    progress.placed = true;
    files::install(&src, &change.files, &on_disk, &target, &rd_file(res), owner)
        .map_err(|e| local_step("install", e))?;
    let sha = &change.record.sha;
    let brought = intake::bring(cx, res, sha, granules)
        .await
        .map_err(|m| local_step("granules", m))?;

    let rd = res.rd_id();
    if structural {
        tracing::info!(resource = %res.dir, "the table structure changed: drop, import, publish");
        progress.dropped = true;
        cx.dachs.drop_rd(&rd).await.map_err(|e| ("import", e))?;
    }
    progress.imported = true;
    let imported = match import(cx, res, &rd).await {
        Ok(s) => s,
        // The files the import wanted may be the ones that could not come: not the commit's
        // fault until they can.
        Err(e) => {
            return Err(match brought.unavailable {
                Some(why) => local_step(
                    "granules",
                    format!(
                        "its collections could not be brought ({why}), and the import without \
                         them failed: {}",
                        e.message()
                    ),
                ),
                None => ("import", e),
            });
        }
    };
    // The server reading the RD anew and the registry's record of it are independent: each
    // `dachs` command is a second of Python's start, so they run side by side (a deploy's last
    // two seconds become one). The expiry's failure is named first, as when they ran in turn.
    let publication = async {
        if res.publish {
            cx.dachs.publish(&rd).await
        } else if change.old.as_ref().is_some_and(|o| o.published) {
            cx.dachs.unpublish(&rd).await
        } else {
            Ok(())
        }
    };
    let (expired, published) = tokio::join!(cx.dachs.expire(&rd), publication);
    expired.map_err(|e| ("expire", e))?;
    published.map_err(|e| ("publish", e))?;
    health(cx, &change.record.tables)
        .await
        .map_err(|m| local_step("health", m))?;
    regression::gate(cx, res, &src.join(rd_file(res)), sha).await?;
    let Imported { records, skipped } = imported;
    intake::settle(cx, res, sha, records, &skipped, granules).map_err(|m| local_step("granules", m))
}

/// A `dachs val` failure as the provider knows the files: `<dir>/q.rd:35:89` in the repository,
/// not `/var/gavo/inputs/.vespa-stage/<dir>/q.rd, (35, 89)` in a staging directory that is
/// gone by the time anyone reads the message. The command keeps the node's name of the RD.
fn in_repository_terms(e: DachsError, inputs: &Path) -> DachsError {
    match e {
        DachsError::Failed { command, message } => DachsError::Failed {
            command,
            message: repository_positions(
                &message
                    .replace(&format!("{}/{STAGE_DIR}/", inputs.display()), "")
                    .replace(&format!("{STAGE_DIR}/"), ""),
            ),
        },
        e => e,
    }
}

/// `q.rd, (35, 89)` -> `q.rd:35:89`, DaCHS's position of an XML error in the form editors and
/// CI logs link.
pub fn repository_positions(message: &str) -> String {
    const AT: &str = ".rd, (";
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(i) = rest.find(AT) {
        out.push_str(&rest[..i + ".rd".len()]);
        let after = &rest[i + AT.len()..];
        let position = after.split_once(')').and_then(|(inside, tail)| {
            let (line, column) = inside.split_once(", ")?;
            let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
            (digits(line) && digits(column)).then(|| (format!(":{line}:{column}"), tail))
        });
        match position {
            Some((at, tail)) => {
                out.push_str(&at);
                rest = tail;
            }
            None => {
                out.push_str(", (");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// The post-apply check: the TAP service says it is available, and a query on each table
/// answers with QUERY_STATUS OK (an HTTP 200 alone proves nothing: DaCHS reports failed
/// queries inside the VOTable).
pub async fn health(cx: &ApplyContext<'_>, tables: &[String]) -> Result<(), String> {
    cx.tap
        .available()
        .await
        .map_err(|e| format!("TAP availability: {e}"))?;
    for t in tables {
        cx.tap
            .query(&format!("SELECT TOP 1 * FROM {t}"))
            .await
            .map_err(|e| format!("query on {t}: {e}"))?;
    }
    Ok(())
}

/// What a deploy's import did with the granule files: the records it met, and what it skipped
/// of them (path, reason).
#[derive(Default)]
struct Imported {
    records: Vec<crate::state::GranuleRecord>,
    skipped: Vec<(String, String)>,
}

/// `dachs imp` of a deployed resource. With granule collections the import goes on past bad
/// files (`-c`) and [`intake::judge`] decides whether what it skipped makes the commit a broken
/// one; without, any failure is.
async fn import(cx: &ApplyContext<'_>, res: &Resource, rd: &str) -> Result<Imported, DachsError> {
    if res.collections.is_empty() {
        return cx.dachs.import(rd).await.map(|()| Imported::default());
    }
    let failed = |message: String| DachsError::Failed {
        command: format!("dachs imp -c {rd}"),
        message,
    };
    let records = intake::records(cx, res).map_err(failed)?;
    let skipped = cx.dachs.import_continuing(rd).await?;
    intake::judge(&cx.inputs.join(&res.dir), res, &records, &skipped).map_err(failed)?;
    let known = skipped.len();
    if known > 0 {
        tracing::info!(resource = %res.dir, skipped = known, "the import skipped granule files; they stay failed, the others are in");
    }
    Ok(Imported { records, skipped })
}

/// Puts back the files of the revision the resource was deployed from (or removes a resource
/// that was new), re-imports if the failed attempt had touched its tables, expires the RD and
/// checks health again.
async fn rollback(cx: &ApplyContext<'_>, change: &Change<'_>, p: &Progress) -> Result<(), String> {
    if !p.placed {
        return Ok(());
    }
    let owner = Owner::of(&cx.dachs.user);
    let target = cx.inputs.join(&change.res.dir);
    let on_disk = files::list(&target, &change.unmanaged).map_err(|e| e.to_string())?;
    let dachs = cx.dachs;
    let Some(old) = &change.old else {
        // A new resource: take it away again.
        if p.imported || p.dropped {
            let _ = dachs.drop_rd(&change.record.rd_id).await;
        }
        files::install(&target, &[], &on_disk, &target, Path::new(""), owner)
            .map_err(|e| e.to_string())?;
        store(cx.store, |s| s.remove_resource(&change.res.dir)).map_err(|e| e.to_string())?;
        return Ok(());
    };
    let src = cx
        .state_dir
        .join("revisions")
        .join(&old.sha)
        .join(&change.res.dir);
    let old_files = files::list(&src, &change.unmanaged).map_err(|e| e.to_string())?;
    if old_files.is_empty() {
        return Err(format!(
            "the files of revision {} are gone from {}",
            old.sha,
            src.display()
        ));
    }
    let old_rd = PathBuf::from(format!(
        "{}.rd",
        old.rd_id.rsplit('/').next().unwrap_or("q")
    ));
    files::install(&src, &old_files, &on_disk, &target, &old_rd, owner)
        .map_err(|e| e.to_string())?;
    let fail = |e: DachsError| e.message();
    if p.dropped {
        dachs.drop_rd(&old.rd_id).await.map_err(fail)?;
    }
    if p.imported {
        import(cx, change.res, &old.rd_id).await.map_err(fail)?;
    }
    dachs.expire(&old.rd_id).await.map_err(fail)?;
    if old.published && (p.dropped || !change.res.publish) {
        dachs.publish(&old.rd_id).await.map_err(fail)?;
    }
    store(cx.store, |s| s.put_resource(old)).map_err(|e| e.to_string())?;
    health(cx, &old.tables).await
}

/// A resource that left the repository: `dachs drop` (which also unpublishes) and its
/// directory removed, granules included.
async fn remove(cx: &ApplyContext<'_>, gone: &ResourceRecord) -> Result<(), DachsError> {
    cx.dachs.drop_rd(&gone.rd_id).await?;
    files::remove_tree(&cx.inputs.join(&gone.dir)).map_err(|e| DachsError::Failed {
        command: "remove".into(),
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_validation_failure_names_the_file_as_the_repository_has_it() {
        let staged = DachsError::Failed {
            command: "dachs val .vespa-stage/comets/q".into(),
            message: "/var/gavo/inputs/.vespa-stage/comets/q.rd, (35, 89): Element foo not \
                      allowed here"
                .into(),
        };
        let DachsError::Failed { command, message } =
            in_repository_terms(staged, Path::new("/var/gavo/inputs"))
        else {
            panic!("not a failure any more");
        };
        assert_eq!(command, "dachs val .vespa-stage/comets/q");
        assert_eq!(message, "comets/q.rd:35:89: Element foo not allowed here");
        // Relative to the inputs directory, and text that only looks like a position.
        assert_eq!(
            repository_positions(".vespa-stage/x/q.rd, (1, 2) and y.rd, (a, 2) and z.rd, ("),
            ".vespa-stage/x/q.rd:1:2 and y.rd, (a, 2) and z.rd, ("
        );
        let timeout = DachsError::Timeout {
            command: "dachs val x".into(),
            seconds: 5,
        };
        assert!(matches!(
            in_repository_terms(timeout, Path::new("/i")),
            DachsError::Timeout { .. }
        ));
    }
}
