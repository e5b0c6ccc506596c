//! `vespa-agent check-service [DIR]`: the provider's check, in their own CI, of a service
//! repository's commit the way a node would accept it, before any node sees it. The commit
//! (HEAD of the checkout) is materialized with the node's own rules, its vespa-service.toml
//! read with the node's own parser, and each RD validated by `dachs val` in a scratch DaCHS
//! that the command sets up and removes; with `--import-sample N`, up to N granule files of each
//! collection are imported there and the RD's regression suites run against that instance.
//!
//! Each finding is one line `FILE:LINE:COL: message` (paths as in the repository); the exit code
//! says 0 accepted, 1 a node would refuse the commit, 2 the check could not be completed.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;

use super::junit::{self, Case, Outcome};
use crate::config::GranuleSettings;
use crate::dachs::cli::DachsError;
use crate::dachs::rd;
use crate::dachs::scratch::Scratch;
use crate::files::{self, Owner};
use crate::service::{self, Resource, SERVICE_FILE, ServiceError};
use crate::source::revisions::{RevisionError, Revisions};

pub struct Options {
    pub dir: PathBuf,
    /// `source.path`: the folder of the repository that is the service.
    pub path: String,
    pub import_sample: Option<usize>,
    pub junit: Option<PathBuf>,
    /// Where collection credentials are read from, by name (besides `VESPA_CREDENTIAL_<NAME>`).
    pub credentials_dir: Option<PathBuf>,
    pub dachs_bin: PathBuf,
    pub dachs_user: String,
    pub regression_tag: String,
    /// The time limit of each `dachs` command.
    pub timeout: Duration,
    /// The time limit of an RD's regression suites.
    pub regression_timeout: Duration,
    /// How the sample's files are transferred (the configuration's, or its defaults).
    pub granules: GranuleSettings,
}

/// The checks made so far, printed as they finish.
struct Checks {
    cases: Vec<Case>,
    /// `<path>/` when the service is a folder of the repository.
    prefix: String,
}

impl Checks {
    fn add(&mut self, name: String, started: Instant, outcome: Outcome) {
        match &outcome {
            Outcome::Passed => eprintln!("ok      {name}"),
            Outcome::Failed(findings) => {
                eprintln!("FAILED  {name}");
                for f in findings {
                    println!("{f}");
                }
            }
            Outcome::Error(why) => eprintln!("ERROR   {name}: {why}"),
        }
        self.cases.push(Case {
            name,
            seconds: started.elapsed().as_secs_f64(),
            outcome,
        });
    }

    /// `FILE:LINE:COL: message`, the file as the repository names it.
    fn at(&self, file: &str, line: usize, column: usize, message: &str) -> String {
        format!("{}{file}:{line}:{column}: {message}", self.prefix)
    }
}

pub async fn run(o: Options) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let mut checks = Checks {
        cases: Vec::new(),
        prefix: if o.path.is_empty() {
            String::new()
        } else {
            format!("{}/", o.path)
        },
    };
    let scratch_tree = tempfile::tempdir().context("cannot make a scratch directory")?;
    let result = check(&o, &mut checks, scratch_tree.path()).await;
    if let Some(path) = &o.junit {
        std::fs::write(path, junit::render(&checks.cases, started.elapsed()))
            .with_context(|| format!("cannot write the JUnit report {}", path.display()))?;
    }
    result?;
    let failed = checks
        .cases
        .iter()
        .filter(|c| matches!(c.outcome, Outcome::Failed(_)))
        .count();
    let errors = checks
        .cases
        .iter()
        .filter(|c| matches!(c.outcome, Outcome::Error(_)))
        .count();
    eprintln!(
        "{} checks in {:.1} s: {} passed, {failed} failed, {errors} not made",
        checks.cases.len(),
        started.elapsed().as_secs_f64(),
        checks.cases.len() - failed - errors
    );
    Ok(ExitCode::from(match (failed, errors) {
        (0, 0) => 0,
        (0, _) => 2,
        _ => 1,
    }))
}

async fn check(o: &Options, checks: &mut Checks, scratch_tree: &Path) -> anyhow::Result<()> {
    // The commit as a node materializes it: the same rules for names, symlinks and submodules.
    let t = Instant::now();
    let repo = git2::Repository::discover(&o.dir)
        .with_context(|| format!("{} is not a git checkout", o.dir.display()))?;
    let sha = repo
        .head()
        .and_then(|h| h.peel_to_commit())
        .with_context(|| format!("{}: no commit checked out", o.dir.display()))?
        .id()
        .to_string();
    let staged = match Revisions::new(scratch_tree).stage(&repo, &sha, &o.path) {
        Ok(s) => s,
        Err(e) => {
            let finding = tree_finding(checks, &e);
            checks.add(
                "the commit's tree".into(),
                t,
                Outcome::Failed(vec![finding]),
            );
            return Ok(());
        }
    };
    checks.add("the commit's tree".into(), t, Outcome::Passed);
    let root = staged.path().to_owned();

    let t = Instant::now();
    let service = match service::load(&root) {
        Ok(s) => s,
        Err(e) => {
            let finding = match &e {
                ServiceError::Invalid { location, .. } => {
                    let message = e.to_string();
                    let message = message
                        .strip_prefix(&format!("{location}: "))
                        .unwrap_or(&message);
                    checks.at(
                        &location.path.display().to_string(),
                        location.line,
                        location.column,
                        message,
                    )
                }
                e => checks.at(SERVICE_FILE, 1, 1, &e.to_string()),
            };
            checks.add(SERVICE_FILE.into(), t, Outcome::Failed(vec![finding]));
            return Ok(());
        }
    };
    checks.add(SERVICE_FILE.into(), t, Outcome::Passed);

    let t = Instant::now();
    let mut scratch = match Scratch::create(&o.dachs_bin, &o.dachs_user, o.timeout).await {
        Ok(s) => s,
        Err(e) => {
            checks.add("a scratch DaCHS".into(), t, Outcome::Error(e.to_string()));
            return Ok(());
        }
    };
    checks.add("a scratch DaCHS".into(), t, Outcome::Passed);
    let owner = Owner::of(&o.dachs_user);
    let mut valid = Vec::new();
    for res in &service.resources {
        if validate(checks, &scratch, &root, res, owner).await {
            valid.push(res);
        }
    }
    let Some(sample) = o.import_sample else {
        return Ok(());
    };
    let mut imported = Vec::new();
    for res in valid {
        if import_sample(o, checks, &scratch, res, sample, owner).await {
            imported.push(res);
        }
    }
    for res in imported {
        regression(o, checks, &mut scratch, &root, res).await;
    }
    Ok(())
}

fn tree_finding(checks: &Checks, e: &RevisionError) -> String {
    let path = match e {
        RevisionError::SymlinkEscapes { path, .. }
        | RevisionError::Submodule { path, .. }
        | RevisionError::BadName { path, .. } => path.clone(),
        RevisionError::NoFolder { .. } => return format!("{e}"),
        _ => ".".into(),
    };
    checks.at(&path, 1, 1, &e.to_string())
}

/// The RD as the repository names it, `<dir>/<rd>.rd`.
fn rd_name(res: &Resource) -> String {
    format!("{}/{}.rd", res.dir, res.rd)
}

/// The RD's own reading, then `dachs val` in the scratch instance, as at apply.
async fn validate(
    checks: &mut Checks,
    scratch: &Scratch,
    root: &Path,
    res: &Resource,
    owner: Option<Owner>,
) -> bool {
    let t = Instant::now();
    let name = format!("{}: dachs val", res.dir);
    let src = root.join(&res.dir);
    let rd_file = PathBuf::from(format!("{}.rd", res.rd));
    let unmanaged: Vec<String> = res.collections.iter().map(|c| c.target.clone()).collect();
    let target = scratch.inputs().join(&res.dir);
    let placed = files::list(&src, &unmanaged)
        .and_then(|list| files::install(&src, &list, &[], &target, &rd_file, owner));
    if let Err(e) = placed {
        checks.add(name, t, Outcome::Error(e.to_string()));
        return false;
    }
    let verdict = match scratch.dachs.validate(&res.rd_id()).await {
        Ok(()) => Ok(()),
        Err(DachsError::Failed { message, .. }) => Err(message),
        Err(e) => {
            checks.add(name, t, Outcome::Error(e.to_string()));
            return false;
        }
    };
    let verdict = verdict.and_then(|()| {
        let xml = std::fs::read_to_string(src.join(&rd_file)).unwrap_or_default();
        rd::adql_tables(&rd_name(res), &xml)
            .map(|_| ())
            .map_err(|e| e.reason)
    });
    match verdict {
        Ok(()) => {
            checks.add(name, t, Outcome::Passed);
            true
        }
        Err(message) => {
            let message = crate::apply::repository_positions(
                &message.replace(&format!("{}/", scratch.inputs().display()), ""),
            );
            let finding = located(checks, &rd_name(res), &message);
            checks.add(name, t, Outcome::Failed(vec![finding]));
            false
        }
    }
}

/// `message` as a finding: at the position it names in `file` (`file:35:89`), else at the
/// file's start.
fn located(checks: &Checks, file: &str, message: &str) -> String {
    let position = message.find(&format!("{file}:")).and_then(|i| {
        let rest = &message[i + file.len() + 1..];
        let (line, rest) = rest.split_once(':')?;
        let column: String = rest.chars().take_while(char::is_ascii_digit).collect();
        Some((line.parse().ok()?, column.parse().ok()?))
    });
    // The XML parser's own words: "mismatched tag: line 38, column 4".
    let parsed = || {
        let rest = &message[message.find("line ")? + "line ".len()..];
        let (line, rest) = rest.split_once(", column ")?;
        let column: String = rest.chars().take_while(char::is_ascii_digit).collect();
        Some((line.trim().parse().ok()?, column.parse().ok()?))
    };
    let (line, column) = position.or_else(parsed).unwrap_or((1, 1));
    let text = message
        .strip_prefix(&format!("{file}:{line}:{column}: "))
        .unwrap_or(message);
    checks.at(file, line, column, text)
}

/// A collection credential by name: `VESPA_CREDENTIAL_<NAME>` (upper case, `-` as `_`), else
/// the file of that name in `--credentials-dir`. Written into `dir` for the granule stage,
/// readable by its owner only.
fn credentials(o: &Options, res: &Resource, dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    for name in res.collections.iter().filter_map(|c| c.credential.as_ref()) {
        let var = format!(
            "VESPA_CREDENTIAL_{}",
            name.to_ascii_uppercase().replace(['-', '.'], "_")
        );
        let value = match std::env::var(&var) {
            Ok(v) => v,
            Err(_) => {
                let file = o.credentials_dir.as_ref().map(|d| d.join(name));
                match file.as_ref().map(std::fs::read_to_string) {
                    Some(Ok(v)) => v,
                    _ => {
                        return Err(format!(
                            "credential `{name}`: set {var} (user:password) or put a file `{name}` in --credentials-dir"
                        ));
                    }
                }
            }
        };
        let path = dir.join(name);
        std::fs::write(&path, value)
            .and_then(|()| std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)))
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(())
}

/// Up to `n` files of each collection brought into the scratch instance and imported. A file
/// DaCHS refuses is reported; a commit under which none of them imports would be refused.
async fn import_sample(
    o: &Options,
    checks: &mut Checks,
    scratch: &Scratch,
    res: &Resource,
    n: usize,
    owner: Option<Owner>,
) -> bool {
    if res.collections.is_empty() {
        return true;
    }
    let t = Instant::now();
    let name = format!(
        "{}: import of a sample of {n} files per collection",
        res.dir
    );
    let secrets = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => {
            checks.add(name, t, Outcome::Error(e.to_string()));
            return false;
        }
    };
    if let Err(e) = credentials(o, res, secrets.path()) {
        checks.add(name, t, Outcome::Error(e));
        return false;
    }
    let settings = GranuleSettings {
        credentials_dir: secrets.path().to_owned(),
        ..o.granules.clone()
    };
    let resource_dir = scratch.inputs().join(&res.dir);
    let mut brought = 0;
    for c in &res.collections {
        let job = crate::granules::stage::job(
            &resource_dir,
            &res.dir,
            c,
            &settings,
            "check-service",
            owner,
            Vec::new(),
        );
        let synced = match job {
            Ok(mut job) => tokio::task::spawn_blocking(move || {
                // The first `n` files of the listing, named exactly.
                let diff = crate::granules::diff(&job)?;
                job.collection.include = diff
                    .todo
                    .iter()
                    .take(n)
                    .map(|t| globset::escape(&t.entry.path))
                    .collect();
                job.collection.exclude.clear();
                if job.collection.include.is_empty() {
                    return Ok(crate::granules::Synced::default());
                }
                crate::granules::sync(&job)
            })
            .await
            .map_err(|e| crate::granules::GranuleError::Local(e.to_string()))
            .and_then(|r| r),
            Err(e) => Err(e),
        };
        match synced {
            Ok(s) => match s.failure() {
                None => brought += s.fetched.len(),
                Some(e) => {
                    checks.add(name, t, Outcome::Error(format!("{}: {e}", c.name)));
                    return false;
                }
            },
            Err(e) => {
                checks.add(name, t, Outcome::Error(format!("{}: {e}", c.name)));
                return false;
            }
        }
    }
    let rd = res.rd_id();
    let skipped = match scratch.dachs.import_continuing(&rd).await {
        Ok(s) => s,
        Err(e) => {
            let finding = located(checks, &rd_name(res), &e.message());
            checks.add(name, t, Outcome::Failed(vec![finding]));
            return false;
        }
    };
    if brought > 0 && skipped.len() >= brought {
        let (path, why) = &skipped[0];
        let message = format!(
            "no granule file of the sample imports ({} refused); the first: {}: {why}",
            skipped.len(),
            path.replace(&format!("{}/", scratch.inputs().display()), "")
        );
        let finding = checks.at(&rd_name(res), 1, 1, &message);
        checks.add(name, t, Outcome::Failed(vec![finding]));
        return false;
    }
    for (path, why) in &skipped {
        eprintln!(
            "warning: {}: a file bad at its source (the others import): {why}",
            path.replace(&format!("{}/", scratch.inputs().display()), "")
        );
    }
    checks.add(name, t, Outcome::Passed);
    true
}

/// The RD's regression suites against the scratch instance's server.
async fn regression(
    o: &Options,
    checks: &mut Checks,
    scratch: &mut Scratch,
    root: &Path,
    res: &Resource,
) {
    let xml = std::fs::read_to_string(root.join(rd_name(res))).unwrap_or_default();
    let tests = rd::regression_test_count(&xml, &o.regression_tag);
    if tests == 0 {
        return;
    }
    let t = Instant::now();
    let name = format!("{}: {tests} regression tests", res.dir);
    if let Err(e) = scratch.serve().await {
        checks.add(name, t, Outcome::Error(e.to_string()));
        return;
    }
    match scratch
        .dachs
        .regression_tests(&res.rd_id(), &o.regression_tag, o.regression_timeout)
        .await
    {
        Ok(r) if r.bad == 0 => checks.add(name, t, Outcome::Passed),
        Ok(r) => {
            let findings = r
                .failed
                .iter()
                .map(|f| {
                    let (line, column) = test_position(&xml, f);
                    checks.at(&rd_name(res), line, column, &format!("regression test {f}"))
                })
                .collect();
            checks.add(name, t, Outcome::Failed(findings));
        }
        Err(e) => {
            let finding = checks.at(&rd_name(res), 1, 1, &e.to_string());
            checks.add(name, t, Outcome::Failed(vec![finding]));
        }
    }
}

/// Where the `<regTest>` a failure line (`FAIL <title> ...`) names starts in the RD; its
/// start when no test's title fits.
fn test_position(xml: &str, failure: &str) -> (usize, usize) {
    let said = failure.split_once(' ').map_or(failure, |(_, rest)| rest);
    let mut best: Option<(usize, usize, usize)> = None;
    for (i, line) in xml.lines().enumerate() {
        let Some(col) = line.find("<regTest") else {
            continue;
        };
        let title = line[col..]
            .split_once("title=\"")
            .and_then(|(_, rest)| rest.split_once('"'))
            .map(|(t, _)| t);
        if let Some(title) = title.filter(|t| said.starts_with(t))
            && best.is_none_or(|(len, ..)| title.len() > len)
        {
            best = Some((title.len(), i + 1, col + 1));
        }
    }
    best.map_or((1, 1), |(_, line, column)| (line, column))
}
