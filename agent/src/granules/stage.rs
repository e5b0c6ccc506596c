//! The granule stage of a pass: every collection of every deployed resource synced, then one
//! `dachs imp -c` for each resource whose granules changed (or are still waiting for an import
//! that failed before), and each granule's import state recorded.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{GranuleError, Job};
use crate::config::{GranuleSettings, SecretFile};
use crate::dachs::cli::Dachs;
use crate::files::Owner;
use crate::runtime::Runtime;
use crate::service::{Collection, Resource, Service};
use crate::state::{GranuleRecord, HeldGranule, StateStore};

#[derive(Debug, Default)]
pub struct Report {
    pub added: usize,
    pub changed: usize,
    pub vanished: usize,
    pub bytes: u64,
    /// Resources imported in this pass.
    pub imported: Vec<String>,
    /// Granules the import refused: (resource/collection/path, DaCHS's reason).
    pub refused: Vec<(String, String)>,
    /// Collections (`resource/collection`) that could not be brought fully in step and
    /// resources whose import failed, each with why. The others, and what arrived of these, are
    /// imported all the same.
    pub failures: Vec<(String, GranuleError)>,
    /// Transfers retried within the pass.
    pub retries: u64,
    /// Each transferred file's duration, in seconds.
    pub transfer_seconds: Vec<f64>,
    /// Each `dachs imp`'s duration, in seconds.
    pub import_seconds: Vec<f64>,
    /// Files and collections that failed, by reason: a [`GranuleError::kind`],
    /// `unverifiable` (not in the manifest) or `import_refused` (DaCHS refused the file).
    pub failed: std::collections::BTreeMap<&'static str, u64>,
}

impl Report {
    /// The pass's error, if a collection failed: the first, with a count of the others.
    pub fn failure(&self) -> Option<GranuleError> {
        let ((name, first), rest) = self.failures.split_first()?;
        let more = match rest.len() {
            0 => String::new(),
            n => format!(" (and {n} more failed)"),
        };
        let mut e = first.clone();
        let with = |m: &mut String| *m = format!("{name}: {m}{more}");
        match &mut e {
            GranuleError::Source(m)
            | GranuleError::Local(m)
            | GranuleError::Transfer(m)
            | GranuleError::DiskReserve(m)
            | GranuleError::Unsupported(m)
            | GranuleError::Import(m) => with(m),
            _ => return Some(GranuleError::Source(format!("{name}: {e}{more}"))),
        }
        Some(e)
    }
}

fn store<T>(
    s: &Mutex<StateStore>,
    f: impl FnOnce(&StateStore) -> Result<T, crate::state::StateError>,
) -> Result<T, GranuleError> {
    crate::state::with_store(s, f).map_err(|e| GranuleError::Local(e.to_string()))
}

/// The sync job of one collection, its credential read from `granules.credentials-dir`.
pub fn job(
    resource_dir: &Path,
    resource: &str,
    c: &Collection,
    settings: &GranuleSettings,
    sha: &str,
    owner: Option<Owner>,
    known: Vec<HeldGranule>,
) -> Result<Job, GranuleError> {
    let credential = match &c.credential {
        None => None,
        Some(name) => Some(
            SecretFile::resolve(name, &settings.credentials_dir)
                .and_then(|f| f.read())
                .map_err(|m| GranuleError::Source(format!("credential `{name}`: {m}")))?,
        ),
    };
    Ok(Job {
        resource: resource.to_owned(),
        collection: c.clone(),
        target: resource_dir.join(&c.target),
        sha: sha.to_owned(),
        owner,
        known,
        credential,
        concurrency: settings.concurrency,
        limits: super::transfer::Limits::from_settings(settings),
        progress: None,
    })
}

/// Where a granule of `res` (deployed in `resource_dir`) is on disk: DaCHS names the files it
/// skips so.
pub fn file_of(res: &Resource, resource_dir: &Path, g: &GranuleRecord) -> Option<PathBuf> {
    let c = res.collections.iter().find(|c| c.name == g.collection)?;
    Some(resource_dir.join(&c.target).join(&g.path))
}

/// Granule records split into those waiting for an import and those on disk already
/// (imported, or refused by an import: they have a checksum); those refused before they came
/// are neither.
pub fn split(records: Vec<GranuleRecord>) -> (Vec<GranuleRecord>, Vec<GranuleRecord>) {
    let (pending, rest): (Vec<_>, Vec<_>) = records.into_iter().partition(|g| g.state == "pending");
    let on_disk = rest.into_iter().filter(|g| !g.sha256.is_empty()).collect();
    (pending, on_disk)
}

/// Whether the resource's RD, as deployed in `resource_dir`, imports only new and changed files.
pub fn incremental(resource_dir: &Path, res: &Resource) -> bool {
    std::fs::read_to_string(resource_dir.join(format!("{}.rd", res.rd)))
        .is_ok_and(|xml| crate::dachs::rd::imports_incrementally(&xml))
}

/// Who else follows the stage besides `STATUS=`: the terminal bar of `vespa-agent import`.
pub trait Watcher: Sync {
    /// A collection's transfer, called every 200 ms while it runs.
    fn transfer(&self, collection: &str, done: usize, total: usize, bytes: u64);
    /// A resource's import begins.
    fn import(&self, resource: &str, files: usize);
}

/// What the stage works with during one pass; [`Stage::run`] reads like the pipeline: for each
/// deployed resource, sync each collection and record what came, then import what is pending
/// and record what DaCHS refused.
pub struct Stage<'a> {
    /// The terminal's bar, besides `STATUS=`.
    pub watcher: Option<&'a dyn Watcher>,
    pub dachs: &'a Dachs,
    pub store: &'a Mutex<StateStore>,
    pub runtime: &'a Runtime,
    /// `dachs.inputs-dir`: the resources' directories are below it.
    pub inputs: &'a Path,
    pub settings: &'a GranuleSettings,
    /// The applied revision the records name.
    pub sha: &'a str,
    /// Resources whose collections this pass already brought and imported at their deploy.
    pub deployed: &'a [String],
}

impl Stage<'_> {
    pub async fn run(&self, service: &Service) -> Result<Report, GranuleError> {
        let mut report = Report::default();
        for res in service
            .resources
            .iter()
            .filter(|r| !r.collections.is_empty() && !self.deployed.contains(&r.dir))
        {
            let resource_dir = self.inputs.join(&res.dir);
            if !resource_dir.is_dir() {
                continue;
            }
            let changed = self.bring(res, &resource_dir, &mut report).await?;
            let Some(pending) = self.files_to_import(res, &resource_dir, changed)? else {
                continue;
            };
            self.import(res, &resource_dir, pending, &mut report)
                .await?;
        }
        Ok(report)
    }

    /// Every collection of the resource brought in step with its source; `Ok(true)` when files
    /// came or went. Also called by a deploy before its import: an RD may name its granule
    /// files literally, and an import must not run before the files it reads are there.
    pub async fn bring(
        &self,
        res: &Resource,
        resource_dir: &Path,
        report: &mut Report,
    ) -> Result<bool, GranuleError> {
        let mut changed = false;
        for c in &res.collections {
            changed |= self.sync_collection(res, c, resource_dir, report).await?;
        }
        Ok(changed)
    }

    /// One collection brought in step with its source and the result recorded. `Ok(true)` when
    /// files came or went; a collection that fails is in the report and leaves the others to go
    /// on; only the state store failing ends the stage.
    async fn sync_collection(
        &self,
        res: &Resource,
        c: &Collection,
        resource_dir: &Path,
        report: &mut Report,
    ) -> Result<bool, GranuleError> {
        let label = format!("{}/{}", res.dir, c.name);
        self.runtime
            .set_activity(format!("syncing granules of {label}"));
        let owner = Owner::of(&self.dachs.user);
        let load_known = || {
            let started = std::time::Instant::now();
            let known = store(self.store, |s| s.held_granules(&res.dir, &c.name));
            let records = known.as_ref().map_or(0, Vec::len);
            tracing::debug!(collection = %label, records, seconds = started.elapsed().as_secs_f64(), "granule records loaded");
            known
        };
        let synced = match job(
            resource_dir,
            &res.dir,
            c,
            self.settings,
            self.sha,
            owner,
            Vec::new(),
        ) {
            Ok(j) => self.transfer(j, &label, load_known).await?,
            Err(e) => Err(e),
        };
        let synced = match synced {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(collection = %label, error = %e, "a granule collection could not be synced; the others go on");
                *report.failed.entry(e.kind()).or_default() += 1;
                report.failures.push((label, e));
                return Ok(false);
            }
        };
        self.record_synced(res, c, &synced, report)?;
        if let Some(e) = synced.failure() {
            report.failures.push((label, e));
        }
        Ok(!synced.is_empty())
    }

    /// The job run on a blocking thread while `STATUS=` (systemctl status) and the terminal's
    /// bar follow it. The source is listed while `known` loads the node's records of it (at
    /// 100,000 granules each takes a tenth of a second). The outer error is the sync task
    /// crashing or the state store failing; the inner one the collection's.
    async fn transfer(
        &self,
        job: Job,
        label: &str,
        known: impl FnOnce() -> Result<Vec<HeldGranule>, GranuleError>,
    ) -> Result<Result<super::Synced, GranuleError>, GranuleError> {
        let crashed = |e| GranuleError::Local(format!("the granule sync crashed: {e}"));
        let listing = tokio::task::spawn_blocking(move || {
            let listed = super::list(&job);
            (job, listed)
        });
        let records = known();
        let (mut job, listed) = listing.await.map_err(crashed)?;
        job.known = records?;
        let listed = match listed {
            Ok(l) => l,
            Err(e) => return Ok(Err(e)),
        };
        let progress = Arc::new(super::Progress::default());
        job.progress = Some(progress.clone());
        let handle = tokio::task::spawn_blocking(move || {
            let synced = super::sync_listed(&job, listed);
            super::drop_aside(job.known);
            synced
        });
        tokio::pin!(handle);
        let tick = Duration::from_millis(if self.watcher.is_some() { 200 } else { 1000 });
        loop {
            tokio::select! {
                r = &mut handle => break r,
                _ = tokio::time::sleep(tick) => {
                    let total = progress.total.load(Ordering::Relaxed);
                    let done = progress.done.load(Ordering::Relaxed);
                    let bytes = progress.bytes.load(Ordering::Relaxed);
                    if total > 0 {
                        self.runtime.set_activity(format!(
                            "bringing granules of {label}: {done}/{total} files, {}",
                            super::transfer::human(bytes)
                        ));
                    }
                    if let Some(w) = self.watcher {
                        w.transfer(label, done, total, bytes);
                    }
                }
            }
        }
        .map_err(crashed)
    }

    /// What a collection's sync fetched, lost and refused goes to the state store, the log and
    /// the report.
    fn record_synced(
        &self,
        res: &Resource,
        c: &Collection,
        synced: &super::Synced,
        report: &mut Report,
    ) -> Result<(), GranuleError> {
        store(self.store, |s| s.put_granules(&synced.fetched))?;
        store(self.store, |s| {
            s.remove_granules(&res.dir, &c.name, &synced.vanished)
        })?;
        store(self.store, |s| s.put_granules(&synced.refused))?;
        for g in &synced.refused {
            let reason = g.error.clone().unwrap_or_default();
            tracing::warn!(message_id = crate::journal::GRANULE_REFUSED, resource = %res.dir, collection = %c.name, granule = %g.path, reason = %reason, "a granule file was refused before import; the others go on");
            report
                .refused
                .push((format!("{}/{}/{}", res.dir, c.name, g.path), reason));
        }
        if !synced.is_empty() {
            tracing::info!(
                resource = %res.dir,
                collection = %c.name,
                added = synced.added,
                changed = synced.changed,
                vanished = synced.vanished.len(),
                bytes = synced.bytes,
                "granules brought in"
            );
        }
        let label = format!("{}/{}", res.dir, c.name);
        for (path, why) in &synced.deferred {
            tracing::info!(collection = %label, granule = %path, reason = %why, "a granule file is left for the next pass");
        }
        report.retries += synced.retries;
        for (k, n) in &synced.failed {
            *report.failed.entry(k).or_default() += n;
        }
        report.transfer_seconds.extend(&synced.durations);
        report.added += synced.added;
        report.changed += synced.changed;
        report.vanished += synced.vanished.len();
        report.bytes += synced.bytes;
        Ok(())
    }

    /// The files the resource's next import reads, or `None` when nothing calls for one. An
    /// incremental import reads the pending files; a full one every file that is on disk (those
    /// refused before the import never got there: they have no checksum).
    fn files_to_import(
        &self,
        res: &Resource,
        resource_dir: &Path,
        changed: bool,
    ) -> Result<Option<Vec<GranuleRecord>>, GranuleError> {
        // An incremental import reads the pending files only: their records alone are loaded.
        let incremental = incremental(resource_dir, res);
        let (mut pending, mut on_disk) = if incremental {
            let mut pending = Vec::new();
            for c in &res.collections {
                pending.extend(store(self.store, |s| {
                    s.pending_granules(&res.dir, &c.name)
                })?);
            }
            (pending, Vec::new())
        } else {
            self.records(res)?
        };
        if !changed && pending.is_empty() {
            return Ok(None);
        }
        if incremental {
            self.runtime.set_activity(format!(
                "importing {} new or changed granule files of {}",
                pending.len(),
                res.dir
            ));
        } else {
            pending.append(&mut on_disk);
            tracing::info!(resource = %res.dir, files = pending.len(), "the RD has no updating data: a full import reads every granule file again");
            self.runtime.set_activity(format!(
                "importing all {} granule files of {} (a full import: the RD has no updating data)",
                pending.len(),
                res.dir
            ));
        }
        Ok(Some(pending))
    }

    /// The resource's granule records: those waiting for an import, and those on disk already
    /// (imported, or refused by an import: they have a checksum).
    pub fn records(
        &self,
        res: &Resource,
    ) -> Result<(Vec<GranuleRecord>, Vec<GranuleRecord>), GranuleError> {
        let mut all = Vec::new();
        for c in &res.collections {
            all.extend(store(self.store, |s| s.granules(&res.dir, &c.name))?);
        }
        Ok(split(all))
    }

    /// One `dachs imp -c` of the resource, then each file's outcome recorded. A failed import
    /// leaves its files pending, so the next pass imports them again.
    async fn import(
        &self,
        res: &Resource,
        resource_dir: &Path,
        pending: Vec<GranuleRecord>,
        report: &mut Report,
    ) -> Result<(), GranuleError> {
        if let Some(w) = self.watcher {
            w.import(&res.dir, pending.len());
        }
        let started = std::time::Instant::now();
        let skipped = self.dachs.import_continuing(&res.rd_id()).await;
        report.import_seconds.push(started.elapsed().as_secs_f64());
        match skipped {
            Ok(skipped) => self.settle(res, resource_dir, pending, &skipped, report),
            Err(e) => {
                *report.failed.entry("import_failed").or_default() += 1;
                report
                    .failures
                    .push((res.dir.clone(), GranuleError::Import(e.message())));
                Ok(())
            }
        }
    }

    /// Records what an import that read `pending` did with each file: refused if DaCHS skipped
    /// it (`skipped`: path, reason), imported otherwise.
    pub fn settle(
        &self,
        res: &Resource,
        resource_dir: &Path,
        mut pending: Vec<GranuleRecord>,
        skipped: &[(String, String)],
        report: &mut Report,
    ) -> Result<(), GranuleError> {
        let refused: HashMap<&Path, &String> =
            skipped.iter().map(|(p, why)| (Path::new(p), why)).collect();
        for g in &mut pending {
            let c = res.collections.iter().find(|c| c.name == g.collection);
            let refusal =
                file_of(res, resource_dir, g).and_then(|f| refused.get(f.as_path()).copied());
            match refusal {
                Some(reason) => {
                    tracing::warn!(message_id = crate::journal::GRANULE_REFUSED, resource = %res.dir, granule = %g.path, reason = %reason, "the import refused a granule file; the others are in");
                    report.refused.push((
                        format!("{}/{}/{}", res.dir, g.collection, g.path),
                        reason.clone(),
                    ));
                    *report.failed.entry("import_refused").or_default() += 1;
                    // Brought in by this pass, with no checksum to vouch for its bytes: fetch
                    // it once more (see `REFETCH`).
                    if g.state == "pending" && c.is_some_and(|c| c.manifest.is_none()) {
                        g.version = format!("{}{}", super::REFETCH, g.version);
                    }
                    g.state = "failed".into();
                    g.error = Some(reason.clone());
                }
                None => {
                    g.state = "imported".into();
                    g.error = None;
                }
            }
        }
        store(self.store, |s| s.put_granules(&pending))?;
        report.imported.push(res.dir.clone());
        Ok(())
    }
}
