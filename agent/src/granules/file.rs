//! A collection in a local directory (`file://` or an absolute path): the demo's embedded
//! default and an air-gapped node's. The change marker is size and mtime, as rsync's.

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
        let err =
            |p: &Path, e: std::io::Error| GranuleError::Source(format!("{}: {e}", p.display()));
        let mut out = Vec::new();
        let mut stack = vec![PathBuf::new()];
        while let Some(rel) = stack.pop() {
            let dir = self.root.join(&rel);
            for entry in std::fs::read_dir(&dir).map_err(|e| err(&dir, e))? {
                let entry = entry.map_err(|e| err(&dir, e))?;
                let path = rel.join(entry.file_name());
                let meta = entry.metadata().map_err(|e| err(&entry.path(), e))?;
                if meta.is_dir() {
                    stack.push(path);
                } else if meta.is_file() {
                    let mtime = meta
                        .modified()
                        .ok()
                        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                        .map_or(0, |d| d.as_nanos());
                    out.push(Entry {
                        path: path.to_string_lossy().into_owned(),
                        size: meta.len(),
                        version: format!("{}:{mtime}", meta.len()),
                        validator: None,
                        checksum: None,
                        modified_ms: i64::try_from(mtime / 1_000_000).ok(),
                    });
                }
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
