//! A collection in a local directory (`file://` or an absolute path): the demo's embedded
//! default and an air-gapped node's. The change marker is size and mtime, as rsync's.

use std::fmt::Write;
use std::path::{Path, PathBuf};

use super::{Entry, GranuleError};

pub struct FileSource {
    pub root: PathBuf,
}

impl FileSource {
    /// `source` as written in vespa-service.toml: `file:///dir` or `/dir`.
    pub fn new(source: &str) -> Result<FileSource, GranuleError> {
        let root = match source.strip_prefix("file://") {
            Some(rest) => PathBuf::from(rest),
            None => PathBuf::from(source),
        };
        if !root.is_absolute() {
            return Err(GranuleError::Source(format!(
                "`{source}` is not an absolute path"
            )));
        }
        Ok(FileSource { root })
    }

    /// Every regular file below the root (symlinks are not followed: a collection cannot point
    /// the agent at files outside it).
    pub fn list(&self) -> Result<Vec<Entry>, GranuleError> {
        let mut out = Vec::new();
        let mut stack = vec![String::new()];
        while let Some(rel) = stack.pop() {
            let dir = self.root.join(&rel);
            let mut files = Vec::new();
            for entry in std::fs::read_dir(&dir).map_err(|e| err(&dir, e))? {
                let entry = entry.map_err(|e| err(&dir, e))?;
                // The kind comes with the directory's listing: only files need a stat.
                let kind = entry.file_type().map_err(|e| err(&entry.path(), e))?;
                if kind.is_dir() {
                    stack.push(join(&rel, &entry));
                } else if kind.is_file() {
                    files.push(entry);
                }
            }
            let entries = stat_all(&rel, files)?;
            // At 100,000 files, each copy of the entries is 12 MB of fresh pages.
            if out.is_empty() {
                out = entries;
            } else {
                out.extend(entries);
            }
        }
        Ok(out)
    }

    pub fn open(&self, entry: &Entry) -> Result<std::fs::File, GranuleError> {
        let p = self.root.join(&entry.path);
        std::fs::File::open(&p).map_err(|e| GranuleError::Source(format!("{}: {e}", p.display())))
    }

    pub fn url(&self, entry: &Entry) -> String {
        format!("file://{}", self.root.join(&entry.path).display())
    }
}

fn err(p: &Path, e: std::io::Error) -> GranuleError {
    GranuleError::Source(format!("{}: {e}", p.display()))
}

/// `rel/name`, `/`-separated.
fn join(rel: &str, entry: &std::fs::DirEntry) -> String {
    // A UTF-8 name keeps the allocation `file_name` made: one per file at 100,000.
    let name = entry
        .file_name()
        .into_string()
        .unwrap_or_else(|n| n.to_string_lossy().into_owned());
    if rel.is_empty() {
        name
    } else {
        format!("{rel}/{name}")
    }
}

/// Directories this large are stat'ed by several threads: at 100,000 files the stats are most
/// of a pass's own time, and each is a separate system call.
const PARALLEL_FROM: usize = 4096;

/// The files' entries, in the order given; a directory of many is split across the CPUs.
fn stat_all(rel: &str, files: Vec<std::fs::DirEntry>) -> Result<Vec<Entry>, GranuleError> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
    if files.len() < PARALLEL_FROM || threads < 2 {
        return stat_each(rel, &files);
    }
    let chunk = files.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let parts: Vec<_> = files
            .chunks(chunk)
            .map(|part| scope.spawn(move || stat_each(rel, part)))
            .collect();
        let mut out = Vec::with_capacity(files.len());
        for p in parts {
            out.extend(
                p.join()
                    .map_err(|_| GranuleError::Local("a listing thread crashed".into()))??,
            );
        }
        Ok(out)
    })
}

/// The entries of `files`, into a vector sized once (collecting `Result`s would grow it by
/// copying).
fn stat_each(rel: &str, files: &[std::fs::DirEntry]) -> Result<Vec<Entry>, GranuleError> {
    let mut out = Vec::with_capacity(files.len());
    for f in files {
        out.push(stat(rel, f)?);
    }
    Ok(out)
}

/// A file's entry: its size and modification time are its version.
fn stat(rel: &str, f: &std::fs::DirEntry) -> Result<Entry, GranuleError> {
    let meta = f.metadata().map_err(|e| err(&f.path(), e))?;
    // Nanoseconds as u64 (good until 2554): formatting a u128 costs more than the stat.
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| {
            d.as_secs()
                .saturating_mul(1_000_000_000)
                .saturating_add(u64::from(d.subsec_nanos()))
        });
    // Sized once: `format!` would grow it twice on the way.
    let mut version = String::with_capacity(42);
    let _ = write!(version, "{}:{mtime}", meta.len());
    Ok(Entry {
        path: join(rel, f),
        size: meta.len(),
        version,
        validator: None,
        checksum: None,
        modified_ms: i64::try_from(mtime / 1_000_000).ok(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_directory_is_listed_whole_and_as_one_thread_would() {
        let root = tempfile::tempdir().unwrap();
        let n = PARALLEL_FROM + 1000;
        for i in 0..n {
            std::fs::write(root.path().join(format!("g{i:05}.csv")), "x".repeat(i % 7)).unwrap();
        }
        std::fs::create_dir_all(root.path().join("deep/er")).unwrap();
        std::fs::write(root.path().join("deep/er/odd name ü.csv"), "abc").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", root.path().join("outside.csv")).unwrap();
        std::os::unix::fs::symlink("/etc", root.path().join("outside-dir")).unwrap();

        let src = FileSource::new(root.path().to_str().unwrap()).unwrap();
        let mut listed = src.list().unwrap();
        listed.sort_by(|a, b| a.path.cmp(&b.path));
        assert_eq!(listed.len(), n + 1);
        assert_eq!(listed[0].path, "deep/er/odd name ü.csv");
        for (i, e) in listed[1..].iter().enumerate() {
            assert_eq!(e.path, format!("g{i:05}.csv"));
            let meta = std::fs::metadata(root.path().join(&e.path)).unwrap();
            let t = meta
                .modified()
                .unwrap()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap();
            assert_eq!(e.size, (i % 7) as u64);
            assert_eq!(e.version, format!("{}:{}", i % 7, t.as_nanos()));
            assert_eq!(e.modified_ms, Some(t.as_millis() as i64));
        }
    }
}
