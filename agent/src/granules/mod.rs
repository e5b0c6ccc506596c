//! Granules: the files behind each epn_core row, brought from their collection into the
//! resource's data directory and kept in step with it. Only what changed moves; each file is
//! written under a temporary name that no RD pattern matches, checksummed while it streams,
//! fsynced, given an mtime newer than any imported before (DaCHS re-imports a file only when its
//! mtime increases), and renamed into place. Then one `dachs imp -c` per changed resource reads
//! only the new and changed files (the RD's updating pattern) and prunes vanished ones.
//!
//! Sources, one file each: [`file`] (a local directory), [`webdav`] (B2SAFE through Davrods),
//! [`irods`] (B2SAFE through the iRODS HTTP API).

pub mod file;
pub mod irods;
pub mod manifest;
pub mod stage;
pub mod transfer;
pub mod webdav;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Read;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crate::files::{self, Owner, TMP_PREFIX};
use crate::service::Collection;
use crate::state::{GranuleRecord, HeldGranule, now_ms};

#[derive(Clone, Debug, thiserror::Error)]
pub enum GranuleError {
    #[error("collection source: {0}")]
    Source(String),
    #[error("collection source lists `{0}`, which is not a plain relative path; refused")]
    BadPath(String),
    #[error("{0}")]
    Local(String),
    /// The network or the server broke a transfer: retried, resumed where it broke.
    #[error("transfer: {0}")]
    Transfer(String),
    #[error("disk reserve: {0}")]
    DiskReserve(String),
    /// Listed, then gone when fetched: the next listing decides.
    #[error("`{0}` was listed but is gone from the collection; the next pass lists it again")]
    Vanished(String),
    #[error(
        "`{path}` changed while it was copied (expected {expected} bytes, read {got}); retried at the next pass"
    )]
    Changed {
        path: String,
        expected: u64,
        got: u64,
    },
    #[error("{0}")]
    Unsupported(String),
    #[error("granule import failed: {0}")]
    Import(String),
    #[error("`{path}`: its SHA-256 is {got}, the manifest says {expected}; not imported")]
    Mismatch {
        path: String,
        expected: String,
        got: String,
    },
}

impl GranuleError {
    pub fn kind(&self) -> &'static str {
        match self {
            GranuleError::Source(_) => "source",
            GranuleError::BadPath(_) => "bad_listing",
            GranuleError::Local(_) => "local",
            GranuleError::Transfer(_) => "transfer",
            GranuleError::DiskReserve(_) => "disk_reserve",
            GranuleError::Vanished(_) => "changed_in_transfer",
            GranuleError::Changed { .. } => "changed_in_transfer",
            GranuleError::Unsupported(_) => "unsupported",
            GranuleError::Import(_) => "import_failed",
            GranuleError::Mismatch { .. } => "checksum_mismatch",
        }
    }
}

/// Seeded per process, as std's, but several times faster on short keys such as paths.
type HashState = foldhash::fast::RandomState;

/// One file of a collection listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Relative to the collection's root, `/`-separated.
    pub path: String,
    pub size: u64,
    /// Changes whenever the content may have: ETag, or size and mtime.
    pub version: String,
    /// Names the content a partial file's bytes came from, so that only the same content
    /// resumes it; over WebDAV it is what `If-Range` sends (a strong ETag, quoted, or the
    /// last-modified date). None: a broken transfer starts over.
    pub validator: Option<String>,
    /// The SHA-256 (hex) the source itself gives (iRODS's `sha2:`); verified like a manifest's.
    pub checksum: Option<String>,
    /// When the source says the file last changed (ms since the epoch): the local copy gets it,
    /// so that every node, and a rebuilt one, hands DaCHS the same file dates.
    pub modified_ms: Option<i64>,
}

/// The HTTP client of a remote source: `timeout` bounds each wait (connect, headers, every
/// body read), so a stalled transfer breaks off rather than hangs.
pub(crate) fn http_client(
    timeout: std::time::Duration,
) -> Result<reqwest::blocking::Client, GranuleError> {
    crate::outbound::blocking_client(timeout, timeout.min(std::time::Duration::from_secs(10)))
        .map_err(|e| GranuleError::Source(format!("HTTP client: {e}")))
}

/// A credential file's `user:password` (a trailing newline allowed).
pub(crate) fn user_password(credential: &str) -> Option<(String, String)> {
    let (u, p) = credential.trim_end_matches(['\n', '\r']).split_once(':')?;
    Some((u.to_owned(), p.to_owned()))
}

/// A listed path may only name a file below the target: no `..`, no root, nothing hidden the
/// agent uses for itself.
fn plain(path: &str) -> bool {
    !path.is_empty()
        && !path.contains('\0')
        && Path::new(path).components().all(
            |c| matches!(c, Component::Normal(n) if !n.to_string_lossy().starts_with(TMP_PREFIX)),
        )
}

fn matcher(patterns: &[String]) -> Result<globset::GlobSet, GranuleError> {
    let mut b = globset::GlobSetBuilder::new();
    for p in patterns {
        let glob = globset::GlobBuilder::new(p)
            .literal_separator(true)
            .build()
            .map_err(|e| GranuleError::Source(format!("pattern `{p}`: {e}")))?;
        b.add(glob);
    }
    b.build().map_err(|e| GranuleError::Source(e.to_string()))
}

/// Prefixed to a granule's recorded version when the import refused a file that no checksum
/// vouched for: its bytes may have been damaged on the wire with the size kept, so the next pass
/// fetches it once more (the version no longer matches the listing's). If the same bytes come
/// again, the source holds them so and the file stays refused until it changes there. (Only a
/// manifest tells the stage that a checksum vouched; a file an iRODS checksum verified is
/// fetched once more for nothing.)
pub const REFETCH: &str = "refetch ";

/// What one collection's sync did.
#[derive(Debug, Default)]
pub struct Synced {
    /// New or changed granules, written and waiting for the import.
    pub fetched: Vec<GranuleRecord>,
    pub added: usize,
    pub changed: usize,
    /// Paths that left the collection, deleted from the data directory.
    pub vanished: Vec<String>,
    pub bytes: u64,
    /// Files that could not be verified, and files fetched again after the import refused them
    /// that came with the same bytes: recorded as failed, with the reason, and tried again when
    /// their listing or manifest entry changes.
    pub refused: Vec<GranuleRecord>,
    /// Files left for the next pass (a transfer that kept breaking, a file that changed or went
    /// while copied), with the reason. Not recorded: the next listing decides again.
    pub deferred: Vec<(String, GranuleError)>,
    /// Why the sync stopped early (credentials refused, the disk reserve reached, a local
    /// error); what arrived before is in `fetched`.
    pub stopped: Option<GranuleError>,
    /// Transfers retried within the pass.
    pub retries: u64,
    /// Each transferred file's duration, in seconds.
    pub durations: Vec<f64>,
    /// Files refused or deferred, by reason (a [`GranuleError::kind`] or `unverifiable`).
    pub failed: BTreeMap<&'static str, u64>,
}

impl Synced {
    pub fn is_empty(&self) -> bool {
        self.fetched.is_empty() && self.vanished.is_empty()
    }

    /// What the pass reports as its error: why the sync stopped, else the transfers that kept
    /// breaking. Files that changed while copied are a normal race, not an error.
    pub fn failure(&self) -> Option<GranuleError> {
        if let Some(e) = &self.stopped {
            return Some(e.clone());
        }
        let broken: Vec<_> = self
            .deferred
            .iter()
            .filter(|(_, e)| matches!(e, GranuleError::Transfer(_)))
            .collect();
        let (_, first) = broken.first()?;
        Some(GranuleError::Transfer(match broken.len() {
            1 => first.to_string(),
            n => format!("{n} files could not be transferred; the first: {first}"),
        }))
    }
}

/// Where a collection's files come from.
pub enum Source {
    File(file::FileSource),
    Dav(webdav::DavSource),
    Irods(irods::IrodsSource),
}

impl Source {
    /// `credential`: the collection's `user:password`, for WebDAV.
    pub fn new(
        c: &Collection,
        credential: Option<&str>,
        timeout: std::time::Duration,
    ) -> Result<Source, GranuleError> {
        if c.source.starts_with("file://") || c.source.starts_with('/') {
            return Ok(Source::File(file::FileSource::new(&c.source)?));
        }
        if c.source.starts_with(crate::service::irods_url::SCHEME) {
            return Ok(Source::Irods(irods::IrodsSource::new(
                &c.source, credential, timeout,
            )?));
        }
        if c.credential.is_some() && credential.is_none() {
            return Err(GranuleError::Source(format!(
                "collection `{}`: its credential could not be read",
                c.name
            )));
        }
        Ok(Source::Dav(webdav::DavSource::new(
            &c.source, credential, timeout,
        )?))
    }

    fn list(&self) -> Result<Vec<Entry>, GranuleError> {
        match self {
            Source::File(s) => s.list(),
            Source::Dav(s) => s.list(),
            Source::Irods(s) => s.list(),
        }
    }

    /// The file's bytes from `offset` where the source can resume there, else from the first;
    /// returns where the bytes start.
    fn open_at(&self, e: &Entry, offset: u64) -> Result<(Box<dyn Read>, u64), GranuleError> {
        match self {
            Source::File(s) => Ok((Box::new(s.open(e)?), 0)),
            Source::Dav(s) => s.open_at(e, offset),
            Source::Irods(s) => s.open_at(e, offset),
        }
    }

    fn url(&self, e: &Entry) -> String {
        match self {
            Source::File(s) => s.url(e),
            Source::Dav(s) => s.url(e).to_string(),
            Source::Irods(s) => s.url(e),
        }
    }
}

pub struct Job {
    pub resource: String,
    pub collection: Collection,
    /// `<inputs>/<resource>/<target>`.
    pub target: PathBuf,
    pub sha: String,
    pub owner: Option<Owner>,
    /// What the state store holds for this collection.
    pub known: Vec<HeldGranule>,
    /// `user:password` from the collection's credential file.
    pub credential: Option<crate::config::Secret>,
    /// Files transferred at once.
    pub concurrency: usize,
    pub limits: transfer::Limits,
    /// Counts transferred files as they land, for the progress line.
    pub progress: Option<std::sync::Arc<Progress>>,
}

/// How far a collection's transfer is, readable while it runs.
#[derive(Debug, Default)]
pub struct Progress {
    pub done: std::sync::atomic::AtomicUsize,
    /// Files to transfer in this pass, once the listing is compared.
    pub total: std::sync::atomic::AtomicUsize,
    /// Bytes of the files transferred so far.
    pub bytes: std::sync::atomic::AtomicU64,
}

/// Brings the collection's new and changed files into the target directory and deletes the
/// vanished ones. Blocking: run it on the blocking pool.
/// A file to move: new or changed at the source, with what the manifest expects of it.
pub struct Todo {
    pub entry: Entry,
    /// What the node recorded of the older version it holds, if it holds one.
    pub previous: Option<HeldGranule>,
    /// The manifest's SHA-256 (None: no manifest), or why the file cannot be verified.
    pub expected: Result<Option<String>, String>,
}

/// What a collection's listing says against what the node holds.
pub struct Diff {
    pub source: Source,
    /// In path order.
    pub todo: Vec<Todo>,
    /// Paths the node holds that left the collection.
    pub vanished: Vec<String>,
}

/// A collection's files as its source lists them, its patterns and manifest applied.
pub struct Listing {
    source: Source,
    manifest: Option<manifest::Manifest>,
    /// In the source's order.
    entries: Vec<Entry>,
}

/// Lists the collection (and reads its manifest) and compares it with `job.known`, moving
/// nothing: the first half of [`sync`], and what `vespa-agent plan` shows.
pub fn diff(job: &Job) -> Result<Diff, GranuleError> {
    Ok(compare(job, list(job)?))
}

/// Lists the collection and reads its manifest; `job.known` is not read, so that the records
/// can be loaded while the source is listed.
pub fn list(job: &Job) -> Result<Listing, GranuleError> {
    let c = &job.collection;
    let source = Source::new(
        c,
        job.credential.as_ref().map(|s| s.expose()),
        job.limits.stall_timeout,
    )?;
    let manifest = match &c.manifest {
        None => None,
        Some(name) => {
            let entry = Entry {
                path: name.clone(),
                size: 0,
                version: String::new(),
                validator: None,
                checksum: None,
                modified_ms: None,
            };
            let mut text = String::new();
            source
                .open_at(&entry, 0)?
                .0
                .take(1 << 30)
                .read_to_string(&mut text)
                .map_err(|e| GranuleError::Source(format!("manifest `{name}`: {e}")))?;
            Some(manifest::parse(name, &text).map_err(GranuleError::Source)?)
        }
    };
    let include = matcher(&c.include)?;
    let exclude = matcher(&c.exclude)?;
    let started = std::time::Instant::now();
    let mut listed = source.list()?;
    tracing::debug!(collection = %c.name, files = listed.len(), seconds = started.elapsed().as_secs_f64(), "collection listed");
    if let Some(bad) = listed.iter().find(|e| !plain(&e.path)) {
        return Err(GranuleError::BadPath(bad.path.clone()));
    }
    // In place: at 100,000 files a second vector would be 12 MB of fresh pages.
    listed.retain_mut(|e| {
        let is_manifest = c.manifest.as_deref() == Some(e.path.as_str());
        let keep = include.is_match(&e.path) && !exclude.is_match(&e.path) && !is_manifest;
        // A new manifest entry is a new version of the file: a refused file is tried again
        // once the manifest is corrected.
        if let Some(x) = manifest
            .as_ref()
            .and_then(|m| m.get(&e.path))
            .filter(|_| keep)
        {
            e.version = format!("{} {}", e.version, x.sha256);
        }
        keep
    });
    Ok(Listing {
        source,
        manifest,
        entries: listed,
    })
}

/// What the listing says against `job.known`.
pub fn compare(job: &Job, listing: Listing) -> Diff {
    let c = &job.collection;
    let started = std::time::Instant::now();
    let Listing {
        source,
        manifest,
        entries: listed,
    } = listing;
    // One hash map of the node's records, each marked once the listing names it: at 100,000
    // files two walks over the records and one over the listing are most of the comparison's
    // time, each a cache miss per path. Only the few changed and vanished paths need sorting.
    // A path listed twice counts once, as its last listing.
    let (changed, vanished) = {
        let mut known: HashMap<&str, (&HeldGranule, bool), HashState> =
            HashMap::with_capacity_and_hasher(job.known.len(), HashState::default());
        for g in &job.known {
            known.insert(g.path.as_str(), (g, false));
        }
        let mut new: HashSet<&str, HashState> = HashSet::default();
        let mut changed: Vec<(usize, Option<HeldGranule>)> = Vec::new();
        for (i, e) in listed.iter().enumerate().rev() {
            match known.get_mut(e.path.as_str()) {
                Some((_, true)) => {}
                // Unchanged at the source: nothing to move. (A granule the import refused is
                // tried again by every `dachs imp` until its source changes.)
                Some((g, seen)) => {
                    *seen = true;
                    if g.version != e.version {
                        changed.push((i, Some((*g).clone())));
                    }
                }
                None => {
                    if new.insert(e.path.as_str()) {
                        changed.push((i, None));
                    }
                }
            }
        }
        let mut vanished: Vec<String> = known
            .values()
            .filter(|(_, seen)| !seen)
            .map(|(g, _)| g.path.clone())
            .collect();
        vanished.sort_unstable();
        changed.sort_unstable_by(|a, b| listed[a.0].path.cmp(&listed[b.0].path));
        (changed, vanished)
    };
    let mut slots: Vec<Option<Entry>> = listed.into_iter().map(Some).collect();
    let mut todo = Vec::with_capacity(changed.len());
    for (i, previous) in changed {
        let Some(entry) = slots[i].take() else {
            continue;
        };
        let expected = match &manifest {
            None => Ok(entry.checksum.clone()),
            Some(m) => match m.get(&entry.path) {
                None => {
                    Err("not in the collection's manifest, so it cannot be verified".to_owned())
                }
                Some(x) if x.size != entry.size => Err(format!(
                    "the manifest says {} bytes, the collection lists {}",
                    x.size, entry.size
                )),
                Some(x) => Ok(Some(x.sha256.clone())),
            },
        };
        todo.push(Todo {
            entry,
            previous,
            expected,
        });
    }
    drop_aside(slots);
    tracing::debug!(collection = %c.name, changed = todo.len(), seconds = started.elapsed().as_secs_f64(), "listing compared");
    Diff {
        source,
        todo,
        vanished,
    }
}

/// Brings the collection's new and changed files into the target directory and deletes the
/// vanished ones. Blocking: run it on the blocking pool.
pub fn sync(job: &Job) -> Result<Synced, GranuleError> {
    sync_listed(job, list(job)?)
}

/// [`sync`] of a collection already listed.
pub fn sync_listed(job: &Job, listing: Listing) -> Result<Synced, GranuleError> {
    let c = &job.collection;
    let Diff {
        source,
        todo,
        vanished,
    } = compare(job, listing);
    // A file keeps its source's modification time, the same on every node. DaCHS's
    // `fromdbUpdating` re-imports a file only when its date is newer than the one it recorded
    // for it, so a date that is not newer than this node's last copy of that file (a source
    // without dates, a file replaced by an older one) gives way to one past every earlier one.
    let first_mtime = job
        .known
        .iter()
        .map(|g| g.mtime_ms)
        .max()
        .map_or(0, |m| m + 1000)
        .max(now_ms());
    let mtime_of = |i: usize| {
        let t = &todo[i];
        match t.entry.modified_ms {
            Some(m) if m > 0 && t.previous.as_ref().is_none_or(|k| m > k.mtime_ms) => m,
            _ => first_mtime + i as i64,
        }
    };
    let mut out = Synced::default();
    files::make_dirs(
        job.target.parent().unwrap_or(Path::new("/")),
        Path::new(job.target.file_name().unwrap_or_default()),
        job.owner,
    )
    .map_err(|e| GranuleError::Local(e.to_string()))?;

    if let Some(p) = &job.progress {
        p.total.store(todo.len(), Ordering::Relaxed);
    }
    // `concurrency` workers over one keep-alive client; each file's outcome kept by index.
    // A fault that would fail every file (credentials refused, the disk reserve reached)
    // stops them all; what arrived before it is kept.
    let shared = transfer::Shared::new(job.limits.clone());
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let results: Vec<std::sync::Mutex<Option<(transfer::Fetched, f64)>>> =
        todo.iter().map(|_| std::sync::Mutex::new(None)).collect();
    // Small files written and verified, with their index and start, until a flush lands them.
    let waiting: std::sync::Mutex<Vec<(usize, std::time::Instant, transfer::Waiting)>> =
        std::sync::Mutex::default();
    let land = |batch: Vec<(usize, std::time::Instant, transfer::Waiting)>| {
        let (meta, files): (Vec<_>, Vec<_>) =
            batch.into_iter().map(|(i, t, w)| ((i, t), w)).unzip();
        for ((i, started), r) in meta.into_iter().zip(transfer::land(files)) {
            if r.as_ref().is_err_and(stops_all) {
                stop.store(true, Ordering::Relaxed);
            }
            *results[i].lock().unwrap_or_else(|e| e.into_inner()) =
                Some((r, started.elapsed().as_secs_f64()));
        }
    };
    std::thread::scope(|scope| {
        for _ in 0..job.concurrency.clamp(1, todo.len().max(1)) {
            scope.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(t) = todo.get(i) else { break };
                    let Ok(sha) = &t.expected else { continue };
                    let started = std::time::Instant::now();
                    let r = transfer::fetch(
                        &source,
                        &shared,
                        &transfer::Request {
                            entry: &t.entry,
                            target: &job.target,
                            mtime_ms: mtime_of(i),
                            owner: job.owner,
                            expected_sha256: sha.as_deref(),
                            may_wait: todo.len() > 1,
                        },
                    );
                    if r.as_ref().is_err_and(stops_all) {
                        stop.store(true, Ordering::Relaxed);
                    }
                    if let Some(p) = &job.progress {
                        p.done.fetch_add(1, Ordering::Relaxed);
                        if r.is_ok() {
                            // What arrived is the listed size: anything else is an error.
                            p.bytes.fetch_add(t.entry.size, Ordering::Relaxed);
                        }
                    }
                    let r = match r {
                        Ok(transfer::Landed::Waiting(w)) => {
                            let full = {
                                let mut q = waiting.lock().unwrap_or_else(|e| e.into_inner());
                                q.push((i, started, w));
                                (q.len() >= transfer::FLUSH_EVERY).then(|| std::mem::take(&mut *q))
                            };
                            if let Some(batch) = full {
                                land(batch);
                            }
                            continue;
                        }
                        Ok(transfer::Landed::Done(sha256, size)) => Ok((sha256, size)),
                        Err(e) => Err(e),
                    };
                    *results[i].lock().unwrap_or_else(|e| e.into_inner()) =
                        Some((r, started.elapsed().as_secs_f64()));
                }
            });
        }
    });
    // What waits when the transfers end (or stop) lands now: written and verified, it is kept.
    land(std::mem::take(
        &mut *waiting.lock().unwrap_or_else(|e| e.into_inner()),
    ));
    out.retries = shared.retries.load(Ordering::Relaxed);
    for (i, (t, result)) in todo.iter().zip(results).enumerate() {
        let entry = &t.entry;
        let mut record = GranuleRecord {
            resource: job.resource.clone(),
            collection: c.name.clone(),
            path: entry.path.clone(),
            size: entry.size,
            version: entry.version.clone(),
            sha256: String::new(),
            source_url: source.url(entry),
            sha: job.sha.clone(),
            mtime_ms: mtime_of(i),
            fetched_ms: now_ms(),
            state: "pending".into(),
            error: None,
        };
        let outcome = match &t.expected {
            Err(reason) => {
                *out.failed.entry("unverifiable").or_default() += 1;
                Err(reason.clone())
            }
            Ok(_) => match result.into_inner().unwrap_or_else(|e| e.into_inner()) {
                Some((Ok(done), seconds)) => {
                    out.durations.push(seconds);
                    Ok(done)
                }
                Some((Err(e @ GranuleError::Mismatch { .. }), _)) => {
                    *out.failed.entry(e.kind()).or_default() += 1;
                    Err(e.to_string())
                }
                Some((Err(e), _)) => {
                    *out.failed.entry(e.kind()).or_default() += 1;
                    if stops_all(&e) {
                        out.stopped.get_or_insert(e);
                    } else {
                        out.deferred.push((entry.path.clone(), e));
                    }
                    continue;
                }
                // Not started: the sync stopped first.
                None => continue,
            },
        };
        let (sha256, size) = match outcome {
            Ok(done) => done,
            Err(reason) => {
                record.state = "failed".into();
                record.error = Some(reason);
                out.refused.push(record);
                continue;
            }
        };
        record.sha256 = sha256;
        record.size = size;
        if let Some((_, error)) = t
            .previous
            .as_ref()
            .filter(|g| g.version.starts_with(REFETCH))
            .and_then(|g| g.failed.as_ref())
            .filter(|(sha256, _)| *sha256 == record.sha256)
        {
            // Fetched again after the import refused it, and the same bytes came: nothing to
            // import again, and no further fetch until the source changes it.
            record.state = "failed".into();
            record.error = error.clone();
            out.refused.push(record);
            continue;
        }
        if t.previous.is_some() {
            out.changed += 1;
        } else {
            out.added += 1;
        }
        out.bytes += size;
        out.fetched.push(record);
    }
    for path in vanished {
        let p = job.target.join(&path);
        // A partial transfer of it, kept for resuming, goes too.
        let tmp = transfer::temporary(&p);
        for f in [transfer::validator_file(&tmp), tmp, p] {
            match std::fs::remove_file(&f) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(GranuleError::Local(format!("{}: {e}", f.display()))),
            }
        }
        out.vanished.push(path);
    }
    Ok(out)
}

/// Frees a large collection's listing or records on a thread of its own, where it overlaps the
/// import that comes next (DaCHS runs on one core): at 100,000 granules each is milliseconds of
/// freeing that the import would otherwise wait for.
pub(crate) fn drop_aside<T: Send + 'static>(items: Vec<T>) {
    if items.len() < 10_000 {
        return;
    }
    // Should no thread start, the closure and the items are freed here.
    let _ = std::thread::Builder::new()
        .name("free".into())
        .spawn(move || drop(items));
}

/// A fault that every further transfer would meet too.
fn stops_all(e: &GranuleError) -> bool {
    matches!(
        e,
        GranuleError::Source(_) | GranuleError::Local(_) | GranuleError::DiskReserve(_)
    )
}

#[cfg(test)]
mod tests;
