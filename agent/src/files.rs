//! The files of a resource that the agent manages: everything in the resource's directory of
//! the revision except its granule directories (collection targets, owned by granule import).
//! Listing, hashing, staging and putting them in place under DaCHS's inputs directory.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
#[error("{}: {source}", path.display())]
pub struct FilesError {
    pub path: PathBuf,
    pub source: std::io::Error,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> FilesError + '_ {
    move |source| FilesError {
        path: path.to_owned(),
        source,
    }
}

/// Relative paths of the managed files (regular files and symlinks) under `root`, sorted.
/// `root` missing means no files.
pub fn list(root: &Path, unmanaged: &[String]) -> Result<Vec<PathBuf>, FilesError> {
    let skip: BTreeSet<PathBuf> = unmanaged.iter().map(PathBuf::from).collect();
    let mut out = Vec::new();
    if !root.exists() {
        return Ok(out);
    }
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let dir = root.join(&rel);
        for entry in fs::read_dir(&dir).map_err(io(&dir))? {
            let entry = entry.map_err(io(&dir))?;
            let name = entry.file_name();
            // The agent's own temporary files never count.
            if name.as_bytes().starts_with(TMP_PREFIX.as_bytes()) {
                continue;
            }
            let path = rel.join(&name);
            if skip.contains(&path) {
                continue;
            }
            let kind = entry.file_type().map_err(io(&entry.path()))?;
            if kind.is_dir() {
                stack.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// A content hash over the files' paths, kinds, modes and bytes (git's object ids, so nothing
/// new to trust): equal hashes mean DaCHS would be given the same files.
pub fn hash(root: &Path, files: &[PathBuf]) -> Result<String, FilesError> {
    let mut listing = String::new();
    for rel in files {
        let path = root.join(rel);
        let meta = fs::symlink_metadata(&path).map_err(io(&path))?;
        let (kind, body) = if meta.file_type().is_symlink() {
            let target = fs::read_link(&path).map_err(io(&path))?;
            ("link", target.as_os_str().as_bytes().to_vec())
        } else {
            ("file", fs::read(&path).map_err(io(&path))?)
        };
        let oid = git2::Oid::hash_object(git2::ObjectType::Blob, &body)
            .map_err(|e| io(&path)(std::io::Error::other(e.message().to_owned())))?;
        let exec = meta.permissions().mode() & 0o111 != 0;
        listing.push_str(&format!("{kind} {exec} {oid} {}\n", rel.display()));
    }
    git2::Oid::hash_object(git2::ObjectType::Blob, listing.as_bytes())
        .map(|o| o.to_string())
        .map_err(|e| io(root)(std::io::Error::other(e.message().to_owned())))
}

pub const TMP_PREFIX: &str = ".vespa-tmp-";

/// How the files `new` under `new_root` differ from `old` under `old_root`: paths added,
/// changed (content, kind or mode) and removed.
pub type Diff = (Vec<PathBuf>, Vec<PathBuf>, Vec<PathBuf>);

pub fn diff(
    new_root: &Path,
    new: &[PathBuf],
    old_root: &Path,
    old: &[PathBuf],
) -> Result<Diff, FilesError> {
    let old_set: BTreeSet<&PathBuf> = old.iter().collect();
    let new_set: BTreeSet<&PathBuf> = new.iter().collect();
    let mut added = Vec::new();
    let mut changed = Vec::new();
    for p in new {
        if !old_set.contains(p) {
            added.push(p.clone());
        } else if hash(new_root, std::slice::from_ref(p))?
            != hash(old_root, std::slice::from_ref(p))?
        {
            changed.push(p.clone());
        }
    }
    let removed = old
        .iter()
        .filter(|p| !new_set.contains(p))
        .cloned()
        .collect();
    Ok((added, changed, removed))
}

/// Who the files in DaCHS's inputs directory belong to.
#[derive(Clone, Copy, Debug)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
}

impl Owner {
    /// The DaCHS account's uid and primary group, when the agent runs as root and may give
    /// files away; `None` otherwise, and files belong to the agent's own user and group. The
    /// packaged unit runs the agent as root with DaCHS's group `gavo` as its own group and
    /// without CAP_CHOWN: what it writes is then root's and, without any chown, gavo's.
    pub fn of(user: &str) -> Option<Owner> {
        if unsafe { libc::geteuid() } != 0 || !may_chown() {
            return None;
        }
        let (uid, gid, _) = crate::dachs::cli::passwd(user)?;
        Some(Owner { uid, gid })
    }

    fn apply(owner: Option<Owner>, path: &Path) -> Result<(), FilesError> {
        if let Some(o) = owner {
            std::os::unix::fs::lchown(path, Some(o.uid), Some(o.gid)).map_err(io(path))?;
        }
        Ok(())
    }
}

/// Whether CAP_CHOWN is in this process's effective set (root under a unit that bounds its
/// capabilities may lack it).
fn may_chown() -> bool {
    const CAP_CHOWN: u32 = 0;
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| cap_effective(&s))
        .is_some_and(|caps| caps & (1 << CAP_CHOWN) != 0)
}

fn cap_effective(status: &str) -> Option<u64> {
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

/// Creates `dir` and its missing parents below `base`, each owned by `owner`. Any number of
/// threads may create the same folders at once (parallel transfers into a collection laid out
/// in folders): a folder another one made between the look and the create is taken as made.
pub fn make_dirs(base: &Path, rel_dir: &Path, owner: Option<Owner>) -> Result<(), FilesError> {
    let mut at = base.to_owned();
    for part in rel_dir.components() {
        at.push(part);
        if at.is_dir() {
            continue;
        }
        match fs::create_dir(&at) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && at.is_dir() => continue,
            Err(e) => return Err(io(&at)(e)),
        }
        // Group-writable for DaCHS's group. No setgid bit, which the packaged unit may not
        // set (RestrictSUIDSGID=): the agent's files get the group from Owner or from its
        // own group, DaCHS's from its account's primary group.
        fs::set_permissions(&at, fs::Permissions::from_mode(0o775)).map_err(io(&at))?;
        Owner::apply(owner, &at)?;
    }
    Ok(())
}

/// Copies one file (or symlink) to `to` through a temporary name in the same directory and a
/// rename, so that a reader of `to` sees the old file or the new one, never a part.
fn put(from: &Path, to: &Path, owner: Option<Owner>) -> Result<(), FilesError> {
    let name = to.file_name().unwrap_or_default().to_string_lossy();
    let tmp = to.with_file_name(format!("{TMP_PREFIX}{name}"));
    let _ = fs::remove_file(&tmp);
    let meta = fs::symlink_metadata(from).map_err(io(from))?;
    if meta.file_type().is_symlink() {
        let target = fs::read_link(from).map_err(io(from))?;
        std::os::unix::fs::symlink(target, &tmp).map_err(io(&tmp))?;
    } else {
        fs::copy(from, &tmp).map_err(io(&tmp))?;
        let mode = if meta.permissions().mode() & 0o111 != 0 {
            0o775
        } else {
            0o664
        };
        fs::set_permissions(&tmp, fs::Permissions::from_mode(mode)).map_err(io(&tmp))?;
        fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(io(&tmp))?;
    }
    Owner::apply(owner, &tmp)?;
    fs::rename(&tmp, to).map_err(io(to))
}

/// Makes the managed files under `target` exactly `files` from `source`: each written through a
/// temporary name and renamed into place (the RD last, so that DaCHS never reads an RD whose
/// companions are missing), then the files of `previous` that are no longer wanted removed.
pub fn install(
    source: &Path,
    files: &[PathBuf],
    previous: &[PathBuf],
    target: &Path,
    rd_file: &Path,
    owner: Option<Owner>,
) -> Result<(), FilesError> {
    make_dirs(
        target.parent().unwrap_or(Path::new("/")),
        Path::new(target.file_name().unwrap_or_default()),
        owner,
    )?;
    let mut ordered: Vec<&PathBuf> = files.iter().filter(|f| f.as_path() != rd_file).collect();
    ordered.extend(files.iter().filter(|f| f.as_path() == rd_file));
    for rel in ordered {
        if let Some(parent) = rel.parent() {
            make_dirs(target, parent, owner)?;
        }
        put(&source.join(rel), &target.join(rel), owner)?;
    }
    let wanted: BTreeSet<&PathBuf> = files.iter().collect();
    for rel in previous.iter().filter(|p| !wanted.contains(p)) {
        let path = target.join(rel);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(&path)(e)),
        }
    }
    fs::File::open(target)
        .and_then(|d| d.sync_all())
        .map_err(io(target))
}

/// Removes a directory tree if it exists.
pub fn remove_tree(path: &Path) -> Result<(), FilesError> {
    match fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io(path)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(files: &[(&str, &str)]) -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        for (p, body) in files {
            let path = t.path().join(p);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, body).unwrap();
        }
        t
    }

    /// Parallel transfers into a collection laid out in folders, on a node where none exists
    /// yet: every worker makes the folders of its files, the same ones as the others, at once.
    #[test]
    fn many_workers_make_the_same_nested_folders_at_once() {
        // 60 folders at depths 1 to 3 (targets, nights, instruments), parents shared.
        let dirs: Vec<PathBuf> = (0..60)
            .map(|i| match i % 3 {
                0 => PathBuf::from(format!("t{}", i % 10)),
                1 => PathBuf::from(format!("t{}/n{i}", i % 10)),
                _ => PathBuf::from(format!("t{}/n{}/i{i}", (i - 1) % 10, i - 1)),
            })
            .collect();
        for workers in [4, 16] {
            for round in 0..20 {
                let base = tempfile::tempdir().unwrap();
                let start = std::sync::Barrier::new(workers);
                std::thread::scope(|s| {
                    for w in 0..workers {
                        let (dirs, base, start) = (&dirs, base.path(), &start);
                        s.spawn(move || {
                            start.wait();
                            // Each worker in its own order, as transfers finish.
                            for k in 0..dirs.len() {
                                let d = &dirs[(k * 7 + w * 13) % dirs.len()];
                                make_dirs(base, d, None).unwrap_or_else(|e| {
                                    panic!("{workers} workers, round {round}: {e}")
                                });
                            }
                        });
                    }
                });
                for d in &dirs {
                    let meta = fs::metadata(base.path().join(d)).unwrap();
                    assert!(meta.is_dir());
                    assert_eq!(meta.permissions().mode() & 0o777, 0o775, "{}", d.display());
                }
            }
        }
    }

    #[test]
    fn the_effective_capabilities_are_read_from_proc_status() {
        let status = "Name:\tvespa-agent\nCapInh:\t0000000000000000\nCapEff:\t00000000000000c0\n";
        assert_eq!(cap_effective(status), Some(0xc0));
        assert_eq!(cap_effective("CapEff:\tzz\n"), None);
        assert_eq!(cap_effective("Name:\tx\n"), None);
        // The tests run as root with every capability, or as a user without CAP_CHOWN.
        let root = unsafe { libc::geteuid() } == 0;
        assert_eq!(may_chown(), root);
    }

    #[test]
    fn granule_directories_are_not_managed_and_the_hash_follows_content() {
        let t = tree(&[
            ("q.rd", "<resource/>"),
            ("res/x.txt", "x"),
            ("data/g.csv", "1"),
        ]);
        let files = list(t.path(), &["data".into()]).unwrap();
        assert_eq!(files, [PathBuf::from("q.rd"), PathBuf::from("res/x.txt")]);
        let h1 = hash(t.path(), &files).unwrap();
        fs::write(t.path().join("data/g.csv"), "2").unwrap();
        assert_eq!(
            hash(t.path(), &files).unwrap(),
            h1,
            "granules changed the hash"
        );
        fs::write(t.path().join("res/x.txt"), "y").unwrap();
        assert_ne!(hash(t.path(), &files).unwrap(), h1);
    }

    #[test]
    fn install_replaces_adds_and_removes_but_leaves_granules() {
        let old = tree(&[("q.rd", "old"), ("gone.txt", "bye")]);
        let new = tree(&[("q.rd", "new"), ("sub/added.txt", "hi")]);
        let target = tempfile::tempdir().unwrap();
        let dst = target.path().join("res");
        let old_files = list(old.path(), &[]).unwrap();
        install(old.path(), &old_files, &[], &dst, Path::new("q.rd"), None).unwrap();
        fs::create_dir_all(dst.join("data")).unwrap();
        fs::write(dst.join("data/g.csv"), "granule").unwrap();

        let new_files = list(new.path(), &[]).unwrap();
        install(
            new.path(),
            &new_files,
            &old_files,
            &dst,
            Path::new("q.rd"),
            None,
        )
        .unwrap();
        assert_eq!(fs::read_to_string(dst.join("q.rd")).unwrap(), "new");
        assert_eq!(fs::read_to_string(dst.join("sub/added.txt")).unwrap(), "hi");
        assert!(!dst.join("gone.txt").exists());
        assert_eq!(
            fs::read_to_string(dst.join("data/g.csv")).unwrap(),
            "granule"
        );
        assert_eq!(list(&dst, &["data".into()]).unwrap(), new_files);
        assert!(
            fs::read_dir(&dst)
                .unwrap()
                .flatten()
                .all(|e| !e.file_name().to_string_lossy().starts_with(TMP_PREFIX)),
            "a temporary file was left"
        );
    }
}
