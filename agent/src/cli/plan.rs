//! `vespa-agent plan`: what the next pass would change, computed without touching the node.
//! The followed ref is fetched into a temporary repository that borrows the mirror's objects
//! (git alternates), so only what is new crosses the network and neither the mirror, the
//! revisions, `current`, the state store nor DaCHS is written. Exit 0: nothing would change;
//! 2: something would (like `terraform plan -detailed-exitcode`); 1: the plan failed, or part
//! of it could not be made (a collection that cannot be listed).

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;

use crate::apply::{self, Why};
use crate::config::{Settings, Verify};
use crate::service;
use crate::source::fetch::{self, FetchSpec};
use crate::source::revisions::Revisions;
use crate::source::verify;
use crate::state::{self, StateReader};

pub const CHANGES: u8 = 2;

/// The revision the next pass would converge to, materialized in `scratch`.
struct Next {
    sha: String,
    root: std::path::PathBuf,
    /// Not the applied commit.
    fresh: bool,
}

/// Fetches the followed ref into a scratch repository whose object store falls back on the
/// agent's mirror, and writes the commit's tree under `scratch`.
fn preview(
    settings: &Settings,
    url: &str,
    applied: Option<&str>,
    scratch: &Path,
) -> anyhow::Result<Next> {
    let repo = git2::Repository::init_bare(scratch.join("repo.git"))?;
    let mirror = settings.state_dir.join("mirror.git");
    if let Ok(m) = git2::Repository::open_bare(&mirror) {
        std::fs::write(
            scratch.join("repo.git/objects/info/alternates"),
            format!("{}\n", mirror.join("objects").display()),
        )?;
        // The mirror's tip as a local ref: the server then sends only what is newer.
        if let Ok(r) = m.find_reference(fetch::FOLLOWED_REF)
            && let Some(oid) = r.target()
        {
            repo.reference(fetch::FOLLOWED_REF, oid, true, "plan")?;
        }
    }
    fetch::trust_ca_file(settings.source.ca_file.as_deref()).map_err(anyhow::Error::msg)?;
    let spec = FetchSpec::configured(url, &settings.source).map_err(anyhow::Error::msg)?;
    let sha = fetch::fetch(&repo, &spec)?.sha;
    if !matches!(settings.source.verify, Verify::None) {
        verify::check(&repo, &sha, applied, &settings.source.verify)
            .with_context(|| format!("commit {sha} would be rejected at verify"))?;
    }
    let revisions = Revisions::new(scratch);
    let staged = revisions.stage(&repo, &sha, &settings.source.path)?;
    let root = staged.accept()?;
    Ok(Next {
        fresh: applied != Some(sha.as_str()),
        sha,
        root,
    })
}

pub fn show(settings: &Settings) -> anyhow::Result<ExitCode> {
    let reader = StateReader::open(&settings.state_dir)?;
    let (applied, deployed) = match &reader {
        Some(r) => (r.meta(state::APPLIED)?, r.resources()?),
        None => (None, Vec::new()),
    };
    let scratch = tempfile::tempdir().context("cannot make a scratch directory")?;
    let next = match &settings.source.url {
        Some(url) => preview(settings, url, applied.as_deref(), scratch.path())?,
        None => match &applied {
            Some(a) => Next {
                sha: a.clone(),
                root: Revisions::new(&settings.state_dir).dir(a),
                fresh: false,
            },
            None => {
                println!("no source.url is configured and nothing was applied: nothing to do");
                return Ok(ExitCode::SUCCESS);
            }
        },
    };
    if next.fresh
        && let Some(r) = &reader
        && let Some(c) = r.commit(&next.sha)?
        && c.outcome.as_deref() == Some("failed")
    {
        println!(
            "commit {} failed at {} and is not retried: {}",
            next.sha,
            c.stage.as_deref().unwrap_or("?"),
            c.error.as_deref().unwrap_or("")
        );
        println!("nothing would change (push a newer commit, or run `vespa-agent sync --retry`)");
        return Ok(ExitCode::SUCCESS);
    }
    let service = service::load(&next.root)
        .with_context(|| format!("commit {} would be rejected at validate", next.sha))?;
    let mut changes = 0;
    if next.fresh {
        changes += 1;
        println!(
            "commit {} (applied: {})",
            next.sha,
            applied.as_deref().unwrap_or("none")
        );
    } else {
        println!("commit {} (applied)", next.sha);
    }
    if !settings.dachs.apply {
        println!("dachs.apply = false: DaCHS is left alone; `current` would move to the commit");
    } else {
        let rc = &settings.dachs.gavo_rc;
        if let Some((old, new)) =
            apply::server::pending(rc, &service.server).map_err(|m| anyhow::anyhow!(m))?
        {
            changes += 1;
            println!("settings {}: then restart DaCHS", rc.display());
            // Only managed lines differ; the operator's (the admin password among them) never show.
            for l in old.lines().filter(|l| !new.lines().any(|n| n == *l)) {
                println!("  - {l}");
            }
            for l in new.lines().filter(|l| !old.lines().any(|o| o == *l)) {
                println!("  + {l}");
            }
        }
        let plan = apply::plan(
            &settings.dachs.inputs_dir,
            deployed,
            &next.sha,
            &next.root,
            &service,
        )?;
        for c in &plan.changes {
            changes += 1;
            print_change(c, &settings.dachs.inputs_dir, &next.root, settings);
        }
        for r in &plan.removals {
            changes += 1;
            println!(
                "remove {}: dachs drop {} (also unpublishes), delete {}",
                r.dir,
                r.rd_id,
                settings.dachs.inputs_dir.join(&r.dir).display()
            );
        }
    }
    let mut unlisted = Vec::new();
    if settings.dachs.apply {
        let g = granules(settings, reader.as_ref(), &next, &service);
        changes += g.changes;
        unlisted = g.unlisted;
    }
    if !unlisted.is_empty() {
        // Exit 0 would read as "in step" to a script or a provider's CI: it is not known.
        println!(
            "the plan is incomplete: {} could not be listed ({}); what they would change is unknown",
            match unlisted.len() {
                1 => "1 collection".to_owned(),
                n => format!("{n} collections"),
            },
            unlisted.join(", ")
        );
        return Ok(ExitCode::from(crate::exit::FAILURE));
    }
    if changes == 0 {
        println!("nothing would change");
        return Ok(ExitCode::SUCCESS);
    }
    Ok(ExitCode::from(CHANGES))
}

fn print_change(c: &apply::Change<'_>, inputs: &Path, root: &Path, settings: &Settings) {
    let rd = &c.record.rd_id;
    let dir = inputs.join(&c.res.dir);
    match &c.why {
        Why::New => {
            println!("deploy {} (new resource)", c.res.dir);
            for p in &c.files {
                println!("  + {}", dir.join(p).display());
            }
        }
        Why::Files {
            added,
            changed,
            removed,
            drift,
        } => {
            let what = if *drift {
                "files on disk differ from the applied revision (drift), restore"
            } else {
                "files changed"
            };
            println!("deploy {}: {what}", c.res.dir);
            for (sign, list) in [("+", added), ("~", changed), ("-", removed)] {
                for p in list {
                    println!("  {sign} {}", dir.join(p).display());
                }
            }
        }
        Why::Publication => println!("deploy {}: publication changes", c.res.dir),
    }
    let publish = if c.res.publish {
        format!("dachs pub {rd}")
    } else if c.old.as_ref().is_some_and(|o| o.published) {
        format!("dachs pub -u {rd}")
    } else {
        "not published".into()
    };
    let structure = if c.old.is_some() {
        ", dachs val -c (a structural change adds dachs drop)"
    } else {
        ""
    };
    let bring = if c.res.collections.is_empty() {
        String::new()
    } else {
        format!(
            "bring its collections ({}), ",
            c.res
                .collections
                .iter()
                .map(|k| k.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    let import = if c.res.collections.is_empty() {
        "dachs imp"
    } else {
        "dachs imp -c"
    };
    println!(
        "  then: dachs val{structure}, {bring}{import} {rd}, dachs serve expireRDs {rd}, {publish}, TAP check of {}{}",
        if c.record.tables.is_empty() {
            "its tables".to_owned()
        } else {
            c.record.tables.join(", ")
        },
        regression_step(c, root, settings)
    );
}

/// `, dachs test ...: <suites>` when the deploy would run the RD's regression suites.
fn regression_step(c: &apply::Change<'_>, root: &Path, settings: &Settings) -> String {
    let Some(gate) = &settings.dachs.regression else {
        return String::new();
    };
    let path = root.join(&c.res.dir).join(format!("{}.rd", c.res.rd));
    let xml = std::fs::read_to_string(path).unwrap_or_default();
    let suites: Vec<String> = crate::dachs::rd::regression_suites(&xml, &gate.tag)
        .into_iter()
        .filter(|s| s.tests > 0)
        .map(|s| format!("\"{}\" ({} tests)", s.title, s.tests))
        .collect();
    if suites.is_empty() {
        return String::new();
    }
    let tag = match gate.tag.as_str() {
        "" => String::new(),
        t => format!(" -t {t}"),
    };
    format!(
        ", dachs test{tag} {}: {}",
        c.record.rd_id,
        suites.join(", ")
    )
}

/// What the granule part of the plan found.
struct GranulePlan {
    /// Collections that would change.
    changes: usize,
    /// Collections (`resource/collection`) that could not be listed.
    unlisted: Vec<String>,
}

/// Lists every collection and compares it with the state store, moving nothing; prints what a
/// pass would transfer and import.
fn granules(
    settings: &Settings,
    reader: Option<&StateReader>,
    next: &Next,
    service: &service::Service,
) -> GranulePlan {
    let mut changes = 0;
    let mut unlisted = Vec::new();
    for res in service
        .resources
        .iter()
        .filter(|r| !r.collections.is_empty())
    {
        let deployed = settings.dachs.inputs_dir.join(&res.dir);
        let mut would_import = false;
        for c in &res.collections {
            let known = reader
                .map(|r| r.held_granules(&res.dir, &c.name))
                .transpose()
                .map(Option::unwrap_or_default);
            let diff = known.map_err(|e| e.to_string()).and_then(|known| {
                let job = crate::granules::stage::job(
                    &deployed,
                    &res.dir,
                    c,
                    &settings.granules,
                    &next.sha,
                    None,
                    known,
                )
                .map_err(|e| e.to_string())?;
                crate::granules::diff(&job).map_err(|e| e.to_string())
            });
            let label = format!("granules {}/{}", res.dir, c.name);
            let d = match diff {
                Ok(d) => d,
                Err(e) => {
                    println!("{label}: cannot be listed: {e}");
                    unlisted.push(format!("{}/{}", res.dir, c.name));
                    continue;
                }
            };
            if d.todo.is_empty() && d.vanished.is_empty() {
                continue;
            }
            changes += 1;
            would_import = true;
            let changed = d.todo.iter().filter(|t| t.previous.is_some()).count();
            let bytes: u64 = d.todo.iter().map(|t| t.entry.size).sum();
            println!(
                "{label}: {} new, {changed} changed, {} vanished; {} to transfer",
                d.todo.len() - changed,
                d.vanished.len(),
                crate::granules::transfer::human(bytes)
            );
            // A first import lists thousands: the first few say enough.
            const SHOWN: usize = 20;
            let lines = d
                .todo
                .iter()
                .map(|t| {
                    let sign = if t.previous.is_some() { "~" } else { "+" };
                    match &t.expected {
                        Err(why) => format!("  {sign} {} (refused: {why})", t.entry.path),
                        Ok(_) => format!("  {sign} {}", t.entry.path),
                    }
                })
                .chain(d.vanished.iter().map(|p| format!("  - {p}")));
            let total = d.todo.len() + d.vanished.len();
            for l in lines.take(SHOWN) {
                println!("{l}");
            }
            if total > SHOWN {
                println!("  ... and {} more", total - SHOWN);
            }
        }
        if would_import {
            // The revision's RD decides, deployed or not yet.
            let root_rd = next.root.join(&res.dir);
            let how = if crate::granules::stage::incremental(&root_rd, res) {
                "incremental: only the new and changed files are read, the rows of vanished ones pruned"
            } else {
                "a full import: the RD has no updating data, so every granule file is read again"
            };
            println!("  then: dachs imp -c {} ({how})", res.rd_id());
        }
    }
    GranulePlan { changes, unlisted }
}
