//! Revisions on disk: each accepted commit is written once, as an immutable directory
//! `<state>/revisions/<sha>/`, and `<state>/current` is a relative symlink naming the applied one.
//! The link is replaced by renaming a new link over it, so a reader of `current` sees the old
//! revision or the new one, never a mix (the git-sync contract).
//!
//! A revision is written from the commit's tree, not with a checkout: every entry is checked as
//! it is written, so a symlink that leaves the revision, a submodule, or a name like `..` or
//! `.git` rejects the commit before anything becomes visible.
//!
//! With `source.path`, a revision is that folder of the commit only: nothing outside it is
//! written or checked, and a symlink in it may not leave it. The folder is named in a marker
//! file at the revision's root, so that a revision written for another folder is written anew.

use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use git2::{ObjectType, Oid, Repository, Tree};

#[derive(Debug, thiserror::Error)]
pub enum RevisionError {
    #[error(
        "commit {sha}: `{path}` is a symlink to `{target}`, which leaves the repository (or the \
         folder source.path names)"
    )]
    SymlinkEscapes {
        sha: String,
        path: String,
        target: String,
    },
    #[error("commit {sha}: `{path}` is a submodule; service repositories cannot use submodules")]
    Submodule { sha: String, path: String },
    #[error("commit {sha}: `{path}` is not an acceptable file name")]
    BadName { sha: String, path: String },
    #[error("commit {sha}: {reason}")]
    Git { sha: String, reason: String },
    #[error(
        "commit {sha} has no folder `{path}` (source.path){}",
        if *.is_link { ": it is a symlink; source.path must name a folder of the commit itself" } else { "" }
    )]
    NoFolder {
        sha: String,
        path: String,
        is_link: bool,
    },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RevisionError + '_ {
    move |source| RevisionError::Io {
        path: path.to_owned(),
        source,
    }
}

pub struct Revisions {
    state_dir: PathBuf,
}

pub const CURRENT: &str = "current";
/// At the root of a revision written for `source.path`: the folder's path.
pub const PATH_MARKER: &str = ".vespa-source-path";
const TMP_PREFIX: &str = ".tmp-";

fn fsync_dir(path: &Path) -> Result<(), RevisionError> {
    File::open(path)
        .and_then(|d| d.sync_all())
        .map_err(io(path))
}

impl Revisions {
    pub fn new(state_dir: &Path) -> Revisions {
        Revisions {
            state_dir: state_dir.to_owned(),
        }
    }

    fn root(&self) -> PathBuf {
        self.state_dir.join("revisions")
    }

    pub fn dir(&self, sha: &str) -> PathBuf {
        self.root().join(sha)
    }

    /// The SHA `current` names, if the link exists.
    pub fn current(&self) -> Option<String> {
        let target = fs::read_link(self.state_dir.join(CURRENT)).ok()?;
        Some(target.file_name()?.to_string_lossy().into_owned())
    }

    /// The folder (`source.path`, empty for the root) the revision of `sha` was written from,
    /// if it is on disk.
    pub fn folder(&self, sha: &str) -> Option<String> {
        let dir = self.dir(sha);
        match fs::read_to_string(dir.join(PATH_MARKER)) {
            Ok(p) => Some(p),
            Err(_) => dir.is_dir().then(String::new),
        }
    }

    /// Writes the commit's tree (its folder `path`, or all of it when `path` is empty) to a
    /// temporary directory beside the revisions. The caller validates it there and then
    /// [`Staged::accept`]s it; a staged tree that is dropped instead is removed, so a rejected
    /// commit never appears under `revisions/`.
    pub fn stage(&self, repo: &Repository, sha: &str, path: &str) -> Result<Staged, RevisionError> {
        let git = |e: git2::Error| RevisionError::Git {
            sha: sha.to_owned(),
            reason: e.message().to_owned(),
        };
        let dest = self.dir(sha);
        let root = self.root();
        fs::create_dir_all(&root).map_err(io(&root))?;
        if self.folder(sha).as_deref() == Some(path) {
            return Ok(Staged {
                tmp: None,
                dest,
                root,
            });
        }
        let tmp = root.join(format!("{TMP_PREFIX}{sha}-{}", std::process::id()));
        if tmp.exists() {
            fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
        }
        fs::create_dir(&tmp).map_err(io(&tmp))?;
        let staged = Staged {
            tmp: Some(tmp.clone()),
            dest,
            root,
        };
        let oid = Oid::from_str(sha).map_err(git)?;
        let mut tree = repo.find_commit(oid).and_then(|c| c.tree()).map_err(git)?;
        if !path.is_empty() {
            let no_folder = |is_link| RevisionError::NoFolder {
                sha: sha.to_owned(),
                path: path.to_owned(),
                is_link,
            };
            // Folder by folder, so that a symlink on the way is named as one.
            for part in path.split('/') {
                let entry = tree
                    .get_path(Path::new(part))
                    .map_err(|_| no_folder(false))?;
                if entry.kind() != Some(ObjectType::Tree) {
                    return Err(no_folder(entry.filemode() == 0o120000));
                }
                tree = repo.find_tree(entry.id()).map_err(git)?;
            }
        }
        write_tree(repo, &tree, &tmp, Path::new(""), sha)?;
        if !path.is_empty() {
            let marker = tmp.join(PATH_MARKER);
            fs::write(&marker, path).map_err(io(&marker))?;
        }
        fsync_dir(&tmp)?;
        Ok(staged)
    }

    /// Points `current` at `revisions/<sha>`: a new link, renamed over the old one.
    pub fn publish(&self, sha: &str) -> Result<(), RevisionError> {
        let tmp = self.state_dir.join(format!("{TMP_PREFIX}{CURRENT}"));
        let _ = fs::remove_file(&tmp);
        std::os::unix::fs::symlink(Path::new("revisions").join(sha), &tmp).map_err(io(&tmp))?;
        let link = self.state_dir.join(CURRENT);
        fs::rename(&tmp, &link).map_err(io(&link))?;
        fsync_dir(&self.state_dir)
    }

    /// Removes revisions beyond the `keep` most recent, never one named in `protect`, and any
    /// leftover of an interrupted write.
    pub fn prune(&self, keep: usize, protect: &[&str]) -> Result<Vec<String>, RevisionError> {
        let root = self.root();
        let Ok(entries) = fs::read_dir(&root) else {
            return Ok(Vec::new());
        };
        let mut revs = Vec::new();
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(TMP_PREFIX) {
                fs::remove_dir_all(e.path()).map_err(io(&e.path()))?;
                continue;
            }
            let mtime = e.metadata().and_then(|m| m.modified()).ok();
            revs.push((mtime, name));
        }
        revs.sort_by_key(|r| std::cmp::Reverse(r.0));
        let mut removed = Vec::new();
        for (_, name) in revs.into_iter().skip(keep) {
            if protect.contains(&name.as_str()) {
                continue;
            }
            let p = root.join(&name);
            fs::remove_dir_all(&p).map_err(io(&p))?;
            removed.push(name);
        }
        Ok(removed)
    }
}

/// A commit's tree written to disk but not yet accepted.
pub struct Staged {
    /// `None` when the revision was already in place.
    tmp: Option<PathBuf>,
    dest: PathBuf,
    root: PathBuf,
}

impl Staged {
    /// Where the tree can be read now.
    pub fn path(&self) -> &Path {
        self.tmp.as_deref().unwrap_or(&self.dest)
    }

    /// Moves the tree to `revisions/<sha>`, in place of one written for another folder.
    pub fn accept(mut self) -> Result<PathBuf, RevisionError> {
        if let Some(tmp) = self.tmp.take() {
            if self.dest.is_dir() {
                let stale = self.root.join(format!(
                    "{TMP_PREFIX}stale-{}",
                    self.dest.file_name().unwrap_or_default().to_string_lossy()
                ));
                let _ = fs::remove_dir_all(&stale);
                fs::rename(&self.dest, &stale).map_err(io(&self.dest))?;
                fs::rename(&tmp, &self.dest).map_err(io(&self.dest))?;
                let _ = fs::remove_dir_all(&stale);
            } else {
                fs::rename(&tmp, &self.dest).map_err(io(&self.dest))?;
            }
            fsync_dir(&self.root)?;
        }
        Ok(self.dest.clone())
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if let Some(tmp) = self.tmp.take() {
            let _ = fs::remove_dir_all(tmp);
        }
    }
}

fn acceptable_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && !name.eq_ignore_ascii_case(".git")
        && !name.contains(['/', '\0'])
}

/// A symlink at `at` (relative to the revision root) pointing to `target` stays inside when,
/// resolved lexically, it never climbs above the root.
fn stays_inside(at: &Path, target: &Path) -> bool {
    if target.is_absolute() {
        return false;
    }
    let mut depth = at.parent().map_or(0, |p| p.components().count()) as isize;
    for c in target.components() {
        match c {
            Component::ParentDir => depth -= 1,
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            _ => return false,
        }
        if depth < 0 {
            return false;
        }
    }
    true
}

fn write_tree(
    repo: &Repository,
    tree: &Tree<'_>,
    dir: &Path,
    rel: &Path,
    sha: &str,
) -> Result<(), RevisionError> {
    let git = |e: git2::Error| RevisionError::Git {
        sha: sha.to_owned(),
        reason: e.message().to_owned(),
    };
    for entry in tree.iter() {
        let name = String::from_utf8_lossy(entry.name_bytes()).into_owned();
        let rel_path = rel.join(&name);
        let shown = rel_path.display().to_string();
        if !acceptable_name(&name) || (rel.as_os_str().is_empty() && name == PATH_MARKER) {
            return Err(RevisionError::BadName {
                sha: sha.into(),
                path: shown,
            });
        }
        let path = dir.join(&name);
        match (entry.kind(), entry.filemode()) {
            (Some(ObjectType::Tree), _) => {
                fs::create_dir(&path).map_err(io(&path))?;
                let sub = repo.find_tree(entry.id()).map_err(git)?;
                write_tree(repo, &sub, &path, &rel_path, sha)?;
                fsync_dir(&path)?;
            }
            (Some(ObjectType::Blob), 0o120000) => {
                let blob = repo.find_blob(entry.id()).map_err(git)?;
                let target = String::from_utf8_lossy(blob.content()).into_owned();
                if !stays_inside(&rel_path, Path::new(&target)) {
                    return Err(RevisionError::SymlinkEscapes {
                        sha: sha.into(),
                        path: shown,
                        target,
                    });
                }
                std::os::unix::fs::symlink(&target, &path).map_err(io(&path))?;
            }
            (Some(ObjectType::Blob), mode) => {
                let blob = repo.find_blob(entry.id()).map_err(git)?;
                let mut f = File::create(&path).map_err(io(&path))?;
                f.write_all(blob.content()).map_err(io(&path))?;
                let perm = if mode == 0o100755 { 0o755 } else { 0o644 };
                f.set_permissions(fs::Permissions::from_mode(perm))
                    .map_err(io(&path))?;
                f.sync_all().map_err(io(&path))?;
            }
            (Some(ObjectType::Commit), _) => {
                return Err(RevisionError::Submodule {
                    sha: sha.into(),
                    path: shown,
                });
            }
            _ => {
                return Err(RevisionError::BadName {
                    sha: sha.into(),
                    path: shown,
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_are_checked_lexically() {
        assert!(stays_inside(Path::new("a/link"), Path::new("b")));
        assert!(stays_inside(Path::new("a/link"), Path::new("../c")));
        assert!(!stays_inside(Path::new("a/link"), Path::new("../../c")));
        assert!(!stays_inside(Path::new("link"), Path::new("../x")));
        assert!(!stays_inside(Path::new("link"), Path::new("/etc/passwd")));
        assert!(!stays_inside(
            Path::new("a/b/link"),
            Path::new("x/../../../../y")
        ));
    }

    #[test]
    fn names_that_could_escape_or_confuse_git_are_refused() {
        for bad in ["", ".", "..", ".git", ".GIT", "a/b"] {
            assert!(!acceptable_name(bad), "{bad}");
        }
        assert!(acceptable_name(".gitignore"));
    }
}
