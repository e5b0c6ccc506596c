//! One granule file's transfer: written under a temporary name that no RD pattern matches,
//! hashed while it streams, checked against the listing's size and the manifest's checksum,
//! given its mtime, made durable and renamed into place. A broken transfer is retried with
//! backoff and resumed where it broke (`Range` guarded by `If-Range`, so a file that changed
//! meanwhile starts over); the partial file is kept for the next pass when the retries run out.
//!
//! Small files wait, written and verified, for one flush of their filesystem (`syncfs`) that
//! makes many durable at once, and are renamed only after it returned: [`Waiting`], [`land`].

use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::{Entry, GranuleError, Source};
use crate::config::GranuleSettings;
use crate::files::{self, Owner, TMP_PREFIX};

/// How hard a transfer tries, and what it may take.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Retries after the first attempt.
    pub retries: u32,
    /// The first retry's wait; each further one doubles it.
    pub backoff: Duration,
    /// Bytes per second for all transfers together; 0: no limit.
    pub bandwidth: u64,
    /// Free bytes never taken from the target's filesystem.
    pub disk_reserve: u64,
    /// Silence after which a request or a body read is broken off.
    pub stall_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            retries: 3,
            backoff: Duration::from_millis(500),
            bandwidth: 0,
            disk_reserve: 0,
            stall_timeout: Duration::from_secs(60),
        }
    }
}

impl Limits {
    pub fn from_settings(g: &GranuleSettings) -> Limits {
        Limits {
            retries: g.retries,
            bandwidth: g.bandwidth_limit,
            disk_reserve: g.disk_reserve,
            stall_timeout: g.stall_timeout,
            ..Limits::default()
        }
    }
}

/// What the transfers of one sync share: the bandwidth budget and the space promised to files
/// in flight.
pub struct Shared {
    limits: Limits,
    /// When the budget allows the next byte.
    next_slot: Mutex<Instant>,
    /// Bytes that transfers now running may still write.
    in_flight: AtomicU64,
    /// Retries made, for the metric.
    pub retries: AtomicU64,
}

impl Shared {
    pub fn new(limits: Limits) -> Shared {
        Shared {
            limits,
            next_slot: Mutex::new(Instant::now()),
            in_flight: AtomicU64::new(0),
            retries: AtomicU64::new(0),
        }
    }

    /// Paces reads so that all transfers together stay under the bandwidth limit: each chunk
    /// books its share of time after the previous booking and waits until that is over.
    fn throttle(&self, n: usize) {
        if self.limits.bandwidth == 0 {
            return;
        }
        let cost = Duration::from_secs_f64(n as f64 / self.limits.bandwidth as f64);
        let until = {
            let mut next = self.next_slot.lock().unwrap_or_else(|e| e.into_inner());
            let start = (*next).max(Instant::now());
            *next = start + cost;
            *next
        };
        let now = Instant::now();
        if until > now {
            std::thread::sleep(until - now);
        }
    }

    /// Refuses a transfer that would leave less than the reserve free, counting what transfers
    /// already running may still write.
    fn reserve(&self, dir: &Path, size: u64) -> Result<Booking<'_>, GranuleError> {
        let pending = self.in_flight.fetch_add(size, Ordering::SeqCst);
        let booking = Booking { shared: self, size };
        if self.limits.disk_reserve == 0 {
            return Ok(booking);
        }
        let free = free_bytes(dir).map_err(|e| {
            GranuleError::Local(format!("{}: free space unknown: {e}", dir.display()))
        })?;
        if free < self.limits.disk_reserve.saturating_add(pending + size) {
            return Err(GranuleError::DiskReserve(format!(
                "{} has {} free; the transfers under way need {} and granules.disk-reserve \
                 keeps {} free. Nothing more is brought in until space is freed or the reserve \
                 lowered",
                dir.display(),
                human(free),
                human(pending + size),
                human(self.limits.disk_reserve)
            )));
        }
        Ok(booking)
    }
}

/// Space booked for one transfer, given back when it ends.
struct Booking<'a> {
    shared: &'a Shared,
    size: u64,
}

impl Drop for Booking<'_> {
    fn drop(&mut self) {
        self.shared.in_flight.fetch_sub(self.size, Ordering::SeqCst);
    }
}

fn free_bytes(dir: &Path) -> std::io::Result<u64> {
    crate::node::filesystem(dir).map(|(free, _)| free)
}

pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KB", "MB", "GB", "TB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1000.0 && u + 1 < UNITS.len() {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// The temporary name a file is written under: hidden, so no RD's glob reads it.
pub fn temporary(dest: &Path) -> PathBuf {
    let name = dest.file_name().unwrap_or_default().to_string_lossy();
    dest.with_file_name(format!("{TMP_PREFIX}{name}"))
}

/// Beside a partial file: the validator of the content its bytes came from, so that only the
/// same content resumes it (the listing's validator may be newer than the bytes).
pub fn validator_file(tmp: &Path) -> PathBuf {
    let mut name = tmp.as_os_str().to_owned();
    name.push(".validator");
    PathBuf::from(name)
}

/// Removes a partial file and its validator, as if no transfer had begun.
pub fn discard(tmp: &Path) {
    let _ = std::fs::remove_file(tmp);
    let _ = std::fs::remove_file(validator_file(tmp));
}

/// After a broken transfer: the bytes so far stay, marked with the validator of the content
/// they came from, for the next attempt or pass to resume.
fn keep_partial(tmp: &Path, validator: Option<&str>) {
    let has_bytes = std::fs::metadata(tmp).is_ok_and(|m| m.len() > 0);
    let kept = match validator {
        Some(v) if has_bytes => std::fs::write(validator_file(tmp), v).is_ok(),
        _ => false,
    };
    if !kept {
        discard(tmp);
    }
}

fn is_retryable(e: &GranuleError) -> bool {
    matches!(e, GranuleError::Transfer(_) | GranuleError::Mismatch { .. })
}

/// One file's outcome: (sha256 hex, size) or why not.
pub type Fetched = Result<(String, u64), GranuleError>;

/// A file in place, or one written and verified that waits for [`land`].
#[derive(Debug)]
pub enum Landed {
    Done(String, u64),
    Waiting(Waiting),
}

/// A small file written, verified and given its mtime, mode and owner under its temporary name:
/// durable and in place only once [`land`] has flushed it and renamed it.
#[derive(Debug)]
pub struct Waiting {
    file: std::fs::File,
    tmp: PathBuf,
    dest: PathBuf,
    sha256: String,
    size: u64,
}

/// Files up to this size may wait for a shared flush: an fsync each was most of a small file's
/// cost (2,000 files of 10 KB: 0.28 s of 1.36 here, where an fsync is a synchronous write).
pub const WAITS_UP_TO: u64 = 256 * 1024;

/// How many files one flush makes durable at most.
pub const FLUSH_EVERY: usize = 64;

/// One `syncfs` flushes every dirty page of the filesystem, other writers' too (PostgreSQL's):
/// worth it only while little else is dirty, about what the fsyncs it replaces would write.
const SHARED_FLUSH_DIRTY_MAX_KB: u64 = 16 * 1024;

pub struct Request<'a> {
    pub entry: &'a Entry,
    pub target: &'a Path,
    pub mtime_ms: i64,
    pub owner: Option<Owner>,
    pub expected_sha256: Option<&'a str>,
    /// Whether a small file may wait for [`land`] instead of its own fsync.
    pub may_wait: bool,
}

/// Transfers one file, retrying what can be retried. A mismatch against the manifest is
/// retried from the first byte (the bytes may have been damaged on the way); the same wrong
/// checksum twice means the file itself differs, and it is refused.
pub fn fetch(source: &Source, shared: &Shared, r: &Request) -> Result<Landed, GranuleError> {
    let dest = r.target.join(&r.entry.path);
    if let Some(parent) = Path::new(&r.entry.path).parent() {
        files::make_dirs(r.target, parent, r.owner)
            .map_err(|e| GranuleError::Local(e.to_string()))?;
    }
    let tmp = temporary(&dest);
    let mut bad_sum: Option<String> = None;
    let mut attempt = 0u32;
    loop {
        let result = {
            let _booking = shared.reserve(dest.parent().unwrap_or(r.target), r.entry.size)?;
            attempt_once(source, shared, r, &tmp, &dest)
        };
        let e = match result {
            Ok(done) => return Ok(done),
            Err(e) => e,
        };
        if matches!(e, GranuleError::Transfer(_)) {
            keep_partial(&tmp, r.entry.validator.as_deref());
        }
        if let GranuleError::Mismatch { got, .. } = &e {
            discard(&tmp);
            if bad_sum.as_ref() == Some(got) {
                return Err(e);
            }
            bad_sum = Some(got.clone());
        }
        if !is_retryable(&e) || attempt >= shared.limits.retries {
            // A broken transfer's bytes stay for the next pass to resume; anything else
            // leaves nothing behind.
            if !matches!(e, GranuleError::Transfer(_)) {
                discard(&tmp);
            }
            return Err(e);
        }
        shared.retries.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(granule = %r.entry.path, attempt, error = %e, "transfer retried");
        std::thread::sleep(backoff(shared.limits.backoff, attempt, &r.entry.path));
        attempt += 1;
    }
}

/// Doubling waits, spread by a per-file offset so that parallel transfers that broke together
/// do not come back together.
fn backoff(first: Duration, attempt: u32, path: &str) -> Duration {
    let base = first.saturating_mul(1 << attempt.min(10));
    let spread = path.bytes().fold(attempt as u64, |h, b| {
        h.wrapping_mul(31).wrapping_add(b as u64)
    }) % 1000;
    base + base.mul_f64(spread as f64 / 4000.0)
}

fn attempt_once(
    source: &Source,
    shared: &Shared,
    r: &Request,
    tmp: &Path,
    dest: &Path,
) -> Result<Landed, GranuleError> {
    let local = |e: std::io::Error, p: &Path| GranuleError::Local(format!("{}: {e}", p.display()));
    let mut out = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(tmp)
        .map_err(|e| local(e, tmp))?;
    let have = out.metadata().map_err(|e| local(e, tmp))?.len();
    // Kept bytes are resumed only with a validator saying they are the listed content (one is
    // written when a transfer breaks; a crash leaves none, and the file starts over). Nothing
    // extra is read or written on the common path: a fresh file.
    let marker = validator_file(tmp);
    let same_content = have > 0
        && r.entry
            .validator
            .as_ref()
            .is_some_and(|v| std::fs::read_to_string(&marker).is_ok_and(|kept| &kept == v));
    let resume_from = if same_content && have < r.entry.size {
        have
    } else {
        0
    };
    let (mut input, start) = source.open_at(r.entry, resume_from)?;
    let mut hasher = Sha256::new();
    let mut size = start;
    if start > 0 {
        // The kept bytes count toward the checksum: read them back once.
        out.seek(std::io::SeekFrom::Start(0))
            .map_err(|e| local(e, tmp))?;
        let copied = std::io::copy(&mut (&mut out).take(start), &mut HashWriter(&mut hasher))
            .map_err(|e| local(e, tmp))?;
        if copied != start {
            return Err(GranuleError::Local(format!(
                "{}: shrank while resumed",
                tmp.display()
            )));
        }
    } else {
        out.set_len(0).map_err(|e| local(e, tmp))?;
    }
    out.seek(std::io::SeekFrom::Start(start))
        .map_err(|e| local(e, tmp))?;
    // Sized to the file, up to 256 KB: a fresh buffer is zeroed, and zeroing 256 KB for each of
    // thousands of 10 KB granules was a twentieth of a small-file sync's CPU.
    let cap = (r.entry.size.saturating_sub(start) + 1).clamp(8 * 1024, 256 * 1024);
    let mut buf = vec![0u8; cap as usize];
    loop {
        let n = match input.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(GranuleError::Transfer(format!(
                    "`{}` broke off after {size} of {} bytes: {e}",
                    r.entry.path, r.entry.size
                )));
            }
        };
        if n == 0 {
            break;
        }
        shared.throttle(n);
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n]).map_err(|e| local(e, tmp))?;
        size += n as u64;
        if size > r.entry.size {
            break;
        }
    }
    // A body that ends cleanly at another length than listed is another file: a cut-off
    // body ends in a read error (the length or the chunking says more was due).
    if size != r.entry.size {
        return Err(GranuleError::Changed {
            path: r.entry.path.clone(),
            expected: r.entry.size,
            got: size,
        });
    }
    let sum = format!("{:x}", hasher.finalize());
    if let Some(want) = r.expected_sha256
        && sum != want
    {
        return Err(GranuleError::Mismatch {
            path: r.entry.path.clone(),
            expected: want.to_owned(),
            got: sum,
        });
    }
    let mtime = std::time::UNIX_EPOCH + Duration::from_millis(r.mtime_ms as u64);
    out.set_modified(mtime).map_err(|e| local(e, tmp))?;
    // Readable by DaCHS whatever the agent's umask (the unit's is 0077).
    out.set_permissions(std::fs::Permissions::from_mode(0o644))
        .map_err(|e| local(e, tmp))?;
    if let Some(o) = r.owner {
        std::os::unix::fs::fchown(&out, Some(o.uid), Some(o.gid)).map_err(|e| local(e, tmp))?;
    }
    if r.may_wait && have == 0 && size <= WAITS_UP_TO {
        return Ok(Landed::Waiting(Waiting {
            file: out,
            tmp: tmp.to_owned(),
            dest: dest.to_owned(),
            sha256: sum,
            size,
        }));
    }
    out.sync_all().map_err(|e| local(e, tmp))?;
    std::fs::rename(tmp, dest).map_err(|e| local(e, dest))?;
    if have > 0 {
        let _ = std::fs::remove_file(&marker);
    }
    Ok(Landed::Done(sum, size))
}

/// Makes waiting files durable and renames each into place, in the order given: one `syncfs`
/// for those on the first file's filesystem while little else is dirty, an fsync each
/// otherwise; a rename only after its file's flush returned (since Linux 5.8 `syncfs` reports
/// the filesystem's write-back errors). A failed flush fails every file it was for, and their
/// temporary files go.
pub fn land(waiting: Vec<Waiting>) -> Vec<Fetched> {
    let local = |e: std::io::Error, p: &Path| GranuleError::Local(format!("{}: {e}", p.display()));
    let device = |w: &Waiting| w.file.metadata().ok().map(|m| m.dev());
    let shared_device = waiting
        .first()
        .and_then(device)
        .filter(|_| waiting.len() > 1 && little_dirty());
    let together: Vec<bool> = waiting
        .iter()
        .map(|w| shared_device.is_some() && device(w) == shared_device)
        .collect();
    let shared_flush = together
        .iter()
        .any(|t| *t)
        .then(|| syncfs(&waiting[0].file));
    waiting
        .into_iter()
        .zip(together)
        .map(|(w, together)| {
            let flushed = match (&shared_flush, together) {
                (Some(Ok(())), true) => Ok(()),
                (Some(Err(e)), true) => Err(std::io::Error::new(e.kind(), format!("syncfs: {e}"))),
                _ => w.file.sync_all(),
            };
            let done = flushed
                .map_err(|e| local(e, &w.tmp))
                .and_then(|()| std::fs::rename(&w.tmp, &w.dest).map_err(|e| local(e, &w.dest)));
            if done.is_err() {
                discard(&w.tmp);
            }
            done.map(|()| (w.sha256, w.size))
        })
        .collect()
}

fn syncfs(f: &std::fs::File) -> std::io::Result<()> {
    // SAFETY: syncfs takes a descriptor this process holds open.
    match unsafe { libc::syncfs(f.as_raw_fd()) } {
        0 => Ok(()),
        _ => Err(std::io::Error::last_os_error()),
    }
}

/// Whether the node's dirty pages are few enough for one `syncfs` to cost about what the
/// fsyncs it replaces would.
fn little_dirty() -> bool {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| dirty_kb(&m))
        .is_some_and(|kb| kb <= SHARED_FLUSH_DIRTY_MAX_KB)
}

/// `Dirty:` of /proc/meminfo, in kB.
fn dirty_kb(meminfo: &str) -> Option<u64> {
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("Dirty:"))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()
}

struct HashWriter<'a>(&'a mut Sha256);

impl Write for HashWriter<'_> {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.update(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_spreads() {
        let b = |a| backoff(Duration::from_millis(100), a, "g1.csv");
        assert!(b(0) >= Duration::from_millis(100) && b(0) < Duration::from_millis(126));
        assert!(b(1) >= Duration::from_millis(200) && b(2) >= Duration::from_millis(400));
        assert_ne!(
            backoff(Duration::from_millis(100), 0, "a"),
            backoff(Duration::from_millis(100), 0, "b")
        );
    }

    #[test]
    fn the_budget_paces_all_transfers_together() {
        let shared = Shared::new(Limits {
            bandwidth: 1_000_000,
            ..Limits::default()
        });
        let t = Instant::now();
        std::thread::scope(|s| {
            for _ in 0..2 {
                s.spawn(|| {
                    for _ in 0..5 {
                        shared.throttle(50_000);
                    }
                });
            }
        });
        // 500 KB at 1 MB/s: half a second, whoever asks.
        let took = t.elapsed();
        assert!(took >= Duration::from_millis(450), "{took:?}");
    }

    #[test]
    fn the_reserve_counts_files_in_flight() {
        let dir = tempfile::tempdir().unwrap();
        let free = free_bytes(dir.path()).unwrap();
        let shared = Shared::new(Limits {
            disk_reserve: free / 2,
            ..Limits::default()
        });
        let first = shared.reserve(dir.path(), free / 4).unwrap();
        let e = shared
            .reserve(dir.path(), free / 3)
            .err()
            .expect("over the reserve");
        assert_eq!(e.kind(), "disk_reserve");
        assert!(e.to_string().contains("granules.disk-reserve"), "{e}");
        drop(first);
        assert_eq!(shared.in_flight.load(Ordering::SeqCst), 0);
        assert!(shared.reserve(dir.path(), free / 3).is_ok());
    }

    #[test]
    fn the_dirty_figure_is_read_from_meminfo() {
        let meminfo =
            "MemTotal:       24615668 kB\nDirty:              1234 kB\nWriteback:  0 kB\n";
        assert_eq!(dirty_kb(meminfo), Some(1234));
        assert_eq!(dirty_kb("MemTotal: 1 kB\n"), None);
        assert_eq!(dirty_kb("Dirty: many\n"), None);
    }

    /// Files waiting for a flush, written as `attempt_once` leaves them.
    fn waiting(dir: &Path, names: &[&str]) -> Vec<Waiting> {
        names
            .iter()
            .map(|n| {
                let dest = dir.join(n);
                let tmp = temporary(&dest);
                let mut file = std::fs::File::create(&tmp).unwrap();
                file.write_all(n.as_bytes()).unwrap();
                Waiting {
                    file,
                    tmp,
                    dest,
                    sha256: format!("{:x}", Sha256::digest(n.as_bytes())),
                    size: n.len() as u64,
                }
            })
            .collect()
    }

    #[test]
    fn waiting_files_land_after_their_flush_and_a_failed_rename_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let mut files = waiting(dir.path(), &["a.csv", "b.csv", "sub/c.csv"]);
        // Its folder goes before it lands: its rename fails, the others land.
        files[2].dest = dir.path().join("gone/c.csv");
        let landed = land(files);
        assert_eq!(landed[0].as_ref().unwrap().1, 5);
        assert!(landed[1].is_ok());
        assert!(matches!(&landed[2], Err(GranuleError::Local(m)) if m.contains("gone/c.csv")));
        assert_eq!(
            std::fs::read_to_string(dir.path().join("b.csv")).unwrap(),
            "b.csv"
        );
        let mut left: Vec<_> = crate::granules::tests::walk(dir.path())
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["a.csv", "b.csv"], "no temporary file stays");
        // One alone is flushed by itself.
        let one = land(waiting(dir.path(), &["d.csv"]));
        assert!(one[0].is_ok() && dir.path().join("d.csv").exists());
    }

    #[test]
    fn sizes_read_for_people() {
        assert_eq!(human(999), "999 B");
        assert_eq!(human(2_100_000_000), "2.1 GB");
    }
}
