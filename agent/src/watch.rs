//! Watches the deployed resources' directories (inotify, through notify) so that a local edit of
//! a managed file is noticed in seconds, not at the next poll. An event is confirmed by content
//! hash against what was deployed before it asks for a pass: a touch, an editor's swap file or
//! the agent's own installs cost nothing.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{EventKind, RecursiveMode, Watcher};
use tokio_util::sync::CancellationToken;

use crate::files::{self, TMP_PREFIX};
use crate::reconcile::{Trigger, Triggers};
use crate::runtime::{Runtime, Watched};

/// Editors and `cp` write in bursts; one pass after the burst settles.
const QUIET: Duration = Duration::from_secs(2);

/// Whether a changed path is one of the agent's managed files: inside a watched resource, not
/// in one of its granule directories, not one of the agent's temporary files.
fn watching<'a>(watched: &'a [Watched], path: &Path) -> Option<&'a Watched> {
    if path
        .file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with(TMP_PREFIX))
    {
        return None;
    }
    watched.iter().find(|w| {
        path.strip_prefix(&w.dir)
            .is_ok_and(|rel| !w.unmanaged.iter().any(|u| rel.starts_with(u)))
    })
}

/// The managed files of a resource differ from what was deployed.
fn drifted(w: &Watched) -> bool {
    files::list(&w.dir, &w.unmanaged)
        .and_then(|f| files::hash(&w.dir, &f))
        .map_or(true, |h| h != w.hash)
}

pub async fn run(runtime: Arc<Runtime>, triggers: Triggers, shutdown: CancellationToken) {
    let (tx, mut events) = tokio::sync::mpsc::unbounded_channel::<PathBuf>();
    let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if let Ok(ev) = res
            && matches!(
                ev.kind,
                EventKind::Create(_) | EventKind::Modify(_) | EventKind::Remove(_)
            )
        {
            for p in ev.paths {
                let _ = tx.send(p);
            }
        }
    });
    let mut watcher = match watcher {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch the inputs directory; drift is found at each pass only");
            return;
        }
    };
    let mut targets = runtime.subscribe_watched();
    let mut watched: Vec<Watched> = Vec::new();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            changed = targets.changed() => {
                if changed.is_err() {
                    return;
                }
                let new = targets.borrow_and_update().clone();
                for w in &watched {
                    let _ = watcher.unwatch(&w.dir);
                }
                for w in &new {
                    if let Err(e) = watcher.watch(&w.dir, RecursiveMode::Recursive) {
                        tracing::warn!(dir = %w.dir.display(), error = %e, "cannot watch a resource directory");
                    }
                }
                watched = new;
            }
            Some(path) = events.recv() => {
                let Some(w) = watching(&watched, &path).cloned() else {
                    continue;
                };
                let settle = tokio::time::sleep(QUIET);
                tokio::pin!(settle);
                loop {
                    tokio::select! {
                        _ = &mut settle => break,
                        Some(_) = events.recv() => {}
                    }
                }
                // Mid-pass the agent itself is installing: judge the files once it is done,
                // against what the pass then deployed.
                while runtime.is_busy() {
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                    }
                }
                let w = targets
                    .borrow()
                    .iter()
                    .find(|x| x.dir == w.dir)
                    .cloned()
                    .unwrap_or(w);
                if tokio::task::spawn_blocking(move || drifted(&w)).await.unwrap_or(false) {
                    tracing::info!(path = %path.display(), "managed files changed on disk; a pass checks the drift");
                    triggers.send(Trigger::Drift);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_managed_files_count() {
        let watched = vec![Watched {
            dir: PathBuf::from("/in/epnlab"),
            unmanaged: vec!["data".to_owned()],
            hash: String::new(),
        }];
        let yes = |p: &str| watching(&watched, Path::new(p)).is_some();
        assert!(yes("/in/epnlab/q.rd"));
        assert!(yes("/in/epnlab/res/x.txt"));
        assert!(!yes("/in/epnlab/data/g1.csv"));
        assert!(!yes("/in/epnlab/.vespa-tmp-q.rd"));
        assert!(!yes("/in/other/q.rd"));
        assert!(watching(&[], Path::new("/in/epnlab/q.rd")).is_none());
    }

    #[test]
    fn drift_is_judged_by_content() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("q.rd"), "<resource/>").unwrap();
        let f = files::list(t.path(), &[]).unwrap();
        let w = Watched {
            dir: t.path().to_owned(),
            unmanaged: vec!["data".into()],
            hash: files::hash(t.path(), &f).unwrap(),
        };
        assert!(!drifted(&w));
        std::fs::write(t.path().join("q.rd"), "<resource/>").unwrap();
        assert!(!drifted(&w), "the same bytes written again are not drift");
        std::fs::create_dir(t.path().join("data")).unwrap();
        std::fs::write(t.path().join("data/g.csv"), "x").unwrap();
        assert!(!drifted(&w));
        std::fs::write(t.path().join("q.rd"), "<resource><!-- -->").unwrap();
        assert!(drifted(&w));
    }
}
