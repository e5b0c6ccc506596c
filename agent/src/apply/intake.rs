//! A deploy's granules. Many RDs name their input literally (`<sources>data/x.csv</sources>`),
//! and DaCHS fails an import whose named file is missing; so a deploy brings the resource's
//! collections into its data directory before it imports (a pass never imports a resource whose
//! files the same pass is about to bring), and the import's verdict on those files decides
//! whether the commit is good.
//!
//! Where the line lies: a file refused while others import is a file bad at its source; it stays
//! failed, named in `status`, and the commit applies. A commit under which a file that imported
//! under the previous revision now fails, or under which no granule file of the resource
//! imports at all, is a broken commit: refused and rolled back like any apply failure.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::ApplyContext;
use crate::granules::stage::{self, Stage};
use crate::service::Resource;
use crate::state::GranuleRecord;

/// What bringing a resource's collections left for its import to know.
pub struct Brought {
    /// Why a collection could not be brought fully (the source unreachable, a credential
    /// refused, transfers that kept breaking): if the import then fails, the node is to blame
    /// for now, not the commit.
    pub unavailable: Option<String>,
}

fn stage<'a>(cx: &'a ApplyContext<'_>, sha: &'a str) -> Stage<'a> {
    Stage {
        watcher: None,
        dachs: cx.dachs,
        store: cx.store,
        runtime: cx.runtime,
        inputs: cx.inputs,
        settings: cx.granules,
        sha,
        deployed: &[],
    }
}

/// Brings every collection of `res` (deployed from commit `sha`) into its data directory. Only
/// the state store failing is an error; a collection that fails is in `report`.
pub async fn bring(
    cx: &ApplyContext<'_>,
    res: &Resource,
    sha: &str,
    report: &mut stage::Report,
) -> Result<Brought, String> {
    if res.collections.is_empty() {
        return Ok(Brought { unavailable: None });
    }
    let failed_before = report.failures.len();
    stage(cx, sha)
        .bring(res, &cx.inputs.join(&res.dir), report)
        .await
        .map_err(|e| e.to_string())?;
    let unavailable = report.failures[failed_before..]
        .iter()
        .map(|(name, e)| format!("{name}: {e}"))
        .reduce(|a, b| format!("{a}; {b}"));
    Ok(Brought { unavailable })
}

/// The import's verdict on the granule files (`skipped`: what `dachs imp -c` skipped, path and
/// reason): `Err` with DaCHS's words when it makes the commit a broken one (see the module).
pub fn judge(
    resource_dir: &Path,
    res: &Resource,
    records: &[GranuleRecord],
    skipped: &[(String, String)],
) -> Result<(), String> {
    // By file, not searched for each skipped file: a broken RD skips every one of 100,000.
    let state_of: HashMap<PathBuf, &str> = records
        .iter()
        .filter_map(|g| Some((stage::file_of(res, resource_dir, g)?, g.state.as_str())))
        .collect();
    let mut broken: Vec<String> = Vec::new();
    let mut refused_new = 0;
    for (path, why) in skipped {
        match state_of.get(Path::new(path)).copied() {
            None => broken.push(format!("{path}: {why}")),
            Some("imported") => broken.push(format!(
                "{path} imported under the previous revision and fails under this one: {why}"
            )),
            Some("pending") => refused_new += 1,
            Some(_) => {}
        }
    }
    if let Some(first) = broken.first() {
        return Err(match broken.len() {
            1 => first.clone(),
            n => format!("{first} (and {} more files)", n - 1),
        });
    }
    let pending = records.iter().filter(|g| g.state == "pending").count();
    let imported = records.iter().filter(|g| g.state == "imported").count();
    if pending > 0 && refused_new == pending && imported == 0 {
        let (path, why) = &skipped[0];
        return Err(format!(
            "no granule file of the resource imports under this revision ({pending} refused); \
             the first: {path}: {why}"
        ));
    }
    Ok(())
}

/// The granule records of `res` an import may meet: those waiting for it and those on disk.
pub fn records(cx: &ApplyContext<'_>, res: &Resource) -> Result<Vec<GranuleRecord>, String> {
    let (mut pending, on_disk) = stage(cx, "").records(res).map_err(|e| e.to_string())?;
    pending.extend(on_disk);
    Ok(pending)
}

/// After a successful deploy: the files its import read (of `records`, as [`records`] gave them
/// before the import) are recorded as imported, or refused with DaCHS's reason. An incremental
/// RD read the pending files; a full one every file on disk.
pub fn settle(
    cx: &ApplyContext<'_>,
    res: &Resource,
    sha: &str,
    records: Vec<GranuleRecord>,
    skipped: &[(String, String)],
    report: &mut stage::Report,
) -> Result<(), String> {
    let resource_dir = cx.inputs.join(&res.dir);
    let (mut read, on_disk) = stage::split(records);
    if !stage::incremental(&resource_dir, res) {
        read.extend(on_disk);
    }
    if read.is_empty() {
        return Ok(());
    }
    stage(cx, sha)
        .settle(res, &resource_dir, read, skipped, report)
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::Collection;

    fn resource() -> Resource {
        Resource {
            dir: "r".into(),
            rd: "q".into(),
            publish: false,
            collections: vec![Collection {
                name: "g".into(),
                source: "file:///s".into(),
                target: "data".into(),
                include: vec!["*.csv".into()],
                exclude: Vec::new(),
                credential: None,
                manifest: None,
            }],
        }
    }

    fn record(path: &str, state: &str) -> GranuleRecord {
        GranuleRecord {
            resource: "r".into(),
            collection: "g".into(),
            path: path.into(),
            size: 1,
            version: "1".into(),
            sha256: "ab".into(),
            source_url: String::new(),
            sha: "c".into(),
            mtime_ms: 0,
            fetched_ms: 0,
            state: state.into(),
            error: None,
        }
    }

    fn skip(path: &str) -> (String, String) {
        (format!("/in/r/data/{path}"), "bad row".into())
    }

    #[test]
    fn where_a_bad_file_ends_and_a_broken_commit_begins() {
        let res = resource();
        let dir = Path::new("/in/r");
        let new = [record("a.csv", "pending"), record("b.csv", "pending")];
        // One new file refused while another imports: bad at its source, the commit applies.
        assert_eq!(judge(dir, &res, &new, &[skip("a.csv")]), Ok(()));
        // Every new file refused on a resource that serves none: the commit is broken.
        let all = judge(dir, &res, &new, &[skip("a.csv"), skip("b.csv")]).unwrap_err();
        assert!(all.contains("no granule file"), "{all}");
        assert!(all.contains("/in/r/data/a.csv: bad row"), "{all}");
        // A file that imported before and fails now: broken, whatever the others do.
        let mixed = [record("a.csv", "imported"), record("b.csv", "pending")];
        let again = judge(dir, &res, &mixed, &[skip("a.csv")]).unwrap_err();
        assert!(
            again.contains("imported under the previous revision"),
            "{again}"
        );
        // A file refused before stays refused: no verdict on the commit.
        let known = [record("a.csv", "failed"), record("b.csv", "imported")];
        assert_eq!(judge(dir, &res, &known, &[skip("a.csv")]), Ok(()));
        // A file that is no granule (the repository's own data) fails the import.
        let own = judge(dir, &res, &known, &[("/in/r/table.csv".into(), "x".into())]);
        assert_eq!(own, Err("/in/r/table.csv: x".to_owned()));
        // Nothing to import is no failure.
        assert_eq!(judge(dir, &res, &[], &[]), Ok(()));
    }
}
