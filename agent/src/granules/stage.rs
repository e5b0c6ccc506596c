//! The granule stage of a pass: every collection of every deployed resource synced, then one
//! `dachs imp -c` for each resource whose granules changed (or are still waiting for an import
//! that failed before), and each granule's import state recorded.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{GranuleError, Job};
use crate::apply::files::Owner;
use crate::config::{GranuleSettings, SecretFile};
use crate::dachs::cli::Dachs;
use crate::runtime::Runtime;
use crate::service::Service;
use crate::state::{GranuleRecord, StateStore};

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
}

fn store<T>(
    s: &Mutex<StateStore>,
    f: impl FnOnce(&StateStore) -> Result<T, crate::state::StateError>,
) -> Result<T, GranuleError> {
    crate::state::with_store(s, f).map_err(|e| GranuleError::Local(e.to_string()))
}

pub async fn run(
    dachs: &Dachs,
    store_: &Mutex<StateStore>,
    runtime: &Runtime,
    inputs: &Path,
    settings: &GranuleSettings,
    sha: &str,
    service: &Service,
) -> Result<Report, GranuleError> {
    let owner = Owner::of(&dachs.user);
    let mut report = Report::default();
    for res in service
        .resources
        .iter()
        .filter(|r| !r.collections.is_empty())
    {
        let resource_dir = inputs.join(&res.dir);
        if !resource_dir.is_dir() {
            continue;
        }
        let mut changed = false;
        for c in &res.collections {
            runtime.set_activity(format!("syncing granules of {}/{}", res.dir, c.name));
            let known = store(store_, |s| s.granules(&res.dir, &c.name))?;
            let progress = Arc::new(super::Progress::default());
            let credential = match &c.credential {
                None => None,
                Some(name) => Some(
                    SecretFile::resolve(
                        &settings.credentials_dir.join(name).to_string_lossy(),
                        None,
                    )
                    .and_then(|f| f.read())
                    .map_err(|m| {
                        GranuleError::Source(format!(
                            "collection `{}` of `{}`: credential `{name}`: {m}",
                            c.name, res.dir
                        ))
                    })?,
                ),
            };
            let job = Job {
                resource: res.dir.clone(),
                collection: c.clone(),
                target: resource_dir.join(&c.target),
                sha: sha.to_owned(),
                owner,
                known,
                credential,
                concurrency: settings.concurrency,
                progress: Some(progress.clone()),
            };
            let handle = tokio::task::spawn_blocking(move || super::sync(&job));
            tokio::pin!(handle);
            // `STATUS=` (systemctl status) follows the transfer.
            let synced = loop {
                tokio::select! {
                    r = &mut handle => break r,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {
                        let total = progress.total.load(Ordering::Relaxed);
                        if total > 0 {
                            runtime.set_activity(format!(
                                "bringing granules of {}/{}: {}/{total} files",
                                res.dir,
                                c.name,
                                progress.done.load(Ordering::Relaxed)
                            ));
                        }
                    }
                }
            }
            .map_err(|e| GranuleError::Local(format!("the granule sync crashed: {e}")))??;
            for g in &synced.fetched {
                store(store_, |s| s.put_granule(g))?;
            }
            for p in &synced.vanished {
                store(store_, |s| s.remove_granule(&res.dir, &c.name, p))?;
            }
            for g in &synced.refused {
                let reason = g.error.clone().unwrap_or_default();
                tracing::warn!(resource = %res.dir, collection = %c.name, granule = %g.path, reason = %reason, "a granule file was refused before import; the others go on");
                store(store_, |s| s.put_granule(g))?;
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
            changed |= !synced.is_empty();
            report.added += synced.added;
            report.changed += synced.changed;
            report.vanished += synced.vanished.len();
            report.bytes += synced.bytes;
        }

        let mut pending: Vec<GranuleRecord> = Vec::new();
        for c in &res.collections {
            let all = store(store_, |s| s.granules(&res.dir, &c.name))?;
            pending.extend(all.into_iter().filter(|g| g.state == "pending"));
        }
        if !changed && pending.is_empty() {
            continue;
        }
        runtime.set_activity(format!(
            "importing {} new or changed granule files of {}",
            pending.len(),
            res.dir
        ));
        let skipped = dachs
            .import_continuing(&res.rd_id())
            .await
            .map_err(|e| GranuleError::Import(e.message()))?;
        for mut g in pending {
            let c = res.collections.iter().find(|c| c.name == g.collection);
            let abs = c.map(|c| resource_dir.join(&c.target).join(&g.path));
            let refusal = skipped
                .iter()
                .find(|(p, _)| abs.as_ref().is_some_and(|a| Path::new(p) == a));
            match refusal {
                Some((_, reason)) => {
                    tracing::warn!(resource = %res.dir, granule = %g.path, reason = %reason, "the import refused a granule file; the others are in");
                    report.refused.push((
                        format!("{}/{}/{}", res.dir, g.collection, g.path),
                        reason.clone(),
                    ));
                    g.state = "failed".into();
                    g.error = Some(reason.clone());
                }
                None => {
                    g.state = "imported".into();
                    g.error = None;
                }
            }
            store(store_, |s| s.put_granule(&g))?;
        }
        report.imported.push(res.dir.clone());
    }
    Ok(report)
}
