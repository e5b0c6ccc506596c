//! `vespa-agent rebuild`, level 1: bring a broken node back from its sources of truth, in place.
//! The node holds nothing that exists nowhere else, so each step inspects and, when it finds
//! something broken, rebuilds it from scratch rather than mending it:
//!
//! 1. packages: PostgreSQL 15, pg_sphere and DaCHS installed (with the PostgreSQL 15.20 fix);
//! 2. postgresql: a cluster, online;
//! 3. database: DaCHS's database and its profiles under /var/gavo; when either is gone the
//!    database is made anew with `dachs init` (which cannot run twice on one database);
//! 4. dachs: the server started and answering ADQL;
//! 5. resources: everything the agent deployed forgotten, its directories and tables removed,
//!    and one pass run: the revision fetched again, every resource deployed, every granule
//!    brought in and imported.
//!
//! Every step can be killed and the whole command run again. Root is needed; under systemd
//! `systemctl start vespa-agent-rebuild` runs it with the daemon stopped and starts the daemon
//! again afterwards. Level 2, a new VM from OpenStack, is [`vm`].

pub mod system;
pub mod vm;

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::config::Settings;
use crate::dachs::cli::Dachs;
use crate::dachs::tap::TapClient;
use crate::state::StateStore;

/// In DaCHS's root directory while the rebuild makes its database anew.
const DATABASE_PENDING: &str = ".vespa-agent-database-pending";

/// How long DaCHS may take to answer after a (re)start.
const DACHS_START: Duration = Duration::from_secs(120);

/// Prints one step's verdict, as `rebuild` shows its progress.
fn say(step: &str, what: &str) {
    println!("{step:<10} {what}");
}

/// `rebuild --vm`: level 2, through OpenStack.
pub async fn run_vm(settings: Settings, dry_run: bool) -> anyhow::Result<ExitCode> {
    let Some(o) = &settings.openstack else {
        anyhow::bail!(
            "openstack.auth-url is not set: this node has no OpenStack configuration to rebuild \
             its VM with (see vespa-agent.toml(5))"
        );
    };
    let reason = "requested with `vespa-agent rebuild --vm`";
    match vm::rebuild(o, reason, dry_run).await {
        Ok(plan) => {
            let what = format!(
                "server {} from image {} (compute {}{})",
                plan.server_id,
                plan.image,
                plan.microversion,
                if plan.volume_backed {
                    ", boot from volume: the root volume is re-imaged"
                } else {
                    ""
                }
            );
            if dry_run {
                println!("would rebuild {what}");
            } else {
                tracing::warn!(server = %plan.server_id, image = %plan.image, reason, "VM rebuild requested from OpenStack");
                println!("rebuild requested: {what}; cloud-init will set the node up again");
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => Err(e.into()),
    }
}

pub async fn run(settings: Settings, dry_run: bool) -> anyhow::Result<ExitCode> {
    let escalation = settings.clone();
    let mut request = None;
    let result = repair(settings, dry_run, &mut request).await;
    match request {
        Some(r) => conclude(&escalation, r, result).await,
        None => result,
    }
}

/// After a repair the daemon asked for: its outcome recorded, and with `rebuild.automatic =
/// "vm"`, level 2 when it failed and DaCHS still does not answer.
async fn conclude(
    settings: &Settings,
    request: crate::rebuild_policy::Request,
    result: anyhow::Result<ExitCode>,
) -> anyhow::Result<ExitCode> {
    let store = StateStore::open(&settings.state_dir).context("recording the repair's outcome")?;
    let _ = store.delete_meta(crate::state::REBUILD_REQUEST);
    let record = |level: &str, action: &str, reason: &str| {
        let r = crate::state::RebuildRecord::now(level, action, reason);
        say(level, &format!("{action}: {reason}"));
        tracing::warn!(level, action, reason, "automatic rebuild");
        if let Err(e) = store.record_rebuild(&r) {
            eprintln!("vespa-agent: cannot record the rebuild decision: {e}");
        }
    };
    let failure = match &result {
        Ok(code) if *code == ExitCode::SUCCESS => {
            record("repair", "succeeded", &request.reason);
            return result;
        }
        Ok(_) => "the pass after the repair failed".to_owned(),
        Err(e) => format!("{e:#}"),
    };
    record("repair", "failed", &failure);
    if !request.escalate {
        return result;
    }
    let tap = TapClient::new(&settings.dachs.url, settings.dachs.query_timeout);
    if tap.query(crate::dachs::tap::HEALTH_QUERY).await.is_ok() {
        record(
            "vm",
            "not-needed",
            &format!(
                "the repair failed ({failure}), but DaCHS answers ADQL: a new VM would not help"
            ),
        );
        return result;
    }
    let Some(o) = &settings.openstack else {
        record("vm", "failed", "no [openstack] configuration");
        return result;
    };
    let reason = format!("{}; the repair failed: {failure}", request.reason);
    let dry_run = settings.rebuild.dry_run;
    match vm::rebuild(o, &reason, dry_run).await {
        Ok(plan) => record(
            "vm",
            if dry_run { "dry-run" } else { "started" },
            &format!(
                "server {} from image {}: {reason}",
                plan.server_id, plan.image
            ),
        ),
        Err(vm::VmError::Refused(why)) => record("vm", "refused", &format!("{why}: {reason}")),
        Err(e) => record("vm", "failed", &format!("{e}: {reason}")),
    }
    result
}

/// Level 1; `request` receives the daemon's request, when this repair is an automatic one.
async fn repair(
    settings: Settings,
    dry_run: bool,
    request: &mut Option<crate::rebuild_policy::Request>,
) -> anyhow::Result<ExitCode> {
    if unsafe { libc::geteuid() } != 0 {
        anyhow::bail!(
            "rebuild installs packages and recreates databases: run it as root, or \
             `systemctl start vespa-agent-rebuild`"
        );
    }
    let dachs = Dachs::from_settings(&settings.dachs);
    let tap = TapClient::new(&settings.dachs.url, settings.dachs.query_timeout);

    // The state store first: a running daemon holds it, and must not deploy while the
    // database is being made anew.
    let store = if dry_run {
        None
    } else {
        Some(StateStore::open(&settings.state_dir).map_err(|e| match e {
            crate::state::StateError::Locked { .. } => anyhow::anyhow!(
                "the daemon is running: stop it first (`systemctl start \
                 vespa-agent-rebuild` does, and starts it again afterwards)"
            ),
            e => e.into(),
        })?)
    };
    *request = store
        .as_ref()
        .and_then(|s| s.meta(crate::state::REBUILD_REQUEST).ok().flatten())
        .and_then(|j| serde_json::from_str::<crate::rebuild_policy::Request>(&j).ok());
    // A request the unit never ran for (the node rebooted, the start was lost) must not make a
    // later repair by hand an automatic one, which could go on to rebuild the VM.
    if let (Some(r), Some(s)) = (request.as_ref(), store.as_ref())
        && crate::state::now_ms() - r.at_ms
            > crate::rebuild_policy::REQUEST_VALID.as_millis() as i64
    {
        say(
            "request",
            "ignoring an old automatic request: this is a repair by hand",
        );
        let _ = s.delete_meta(crate::state::REBUILD_REQUEST);
        *request = None;
    }
    if let Some(r) = request {
        say("request", &format!("automatic: {}", r.reason));
    }

    let missing = system::missing_packages();
    if missing.is_empty() {
        say("packages", "ok");
    } else if dry_run {
        say("packages", &format!("would install {}", missing.join(" ")));
    } else {
        say("packages", &format!("installing {}", missing.join(" ")));
        system::install_packages(&missing).context("installing the packages")?;
    }

    if system::postgresql_online() {
        say("postgresql", "ok");
    } else if dry_run {
        say("postgresql", "would start the cluster (or make one)");
    } else {
        say("postgresql", "starting");
        system::start_postgresql().context("starting PostgreSQL")?;
    }

    let rootdir_ok =
        dachs_root(&settings)?.join("etc/feed").exists() && settings.dachs.inputs_dir.is_dir();
    // A rebuild killed while it made the database leaves the schema half made, which the
    // database cannot tell: its marker says so until `dachs upgrade` has finished.
    let interrupted = dachs_root(&settings)?.join(DATABASE_PENDING).exists();
    let db_ok = !interrupted && system::database_exists() && system::database_initialised();
    if db_ok && rootdir_ok {
        say("database", "ok");
    } else if dry_run {
        say(
            "database",
            "would make DaCHS's database anew (dropdb, createdb, dachs init)",
        );
    } else {
        say("database", "making DaCHS's database anew");
        recreate_database(&settings).await?;
    }

    let answers = tap.answers_adql().await;
    if answers && db_ok && rootdir_ok {
        say("dachs", "ok");
    } else if dry_run {
        say("dachs", "would (re)start the DaCHS server");
    } else {
        say("dachs", "starting the server");
        system::start_dachs_server(&settings.dachs.bin).context("starting DaCHS")?;
        wait_for_tap(&tap).await?;
    }

    let Some(store) = store else {
        say(
            "resources",
            "would forget every deployment, remove the resources and run one full pass",
        );
        return Ok(ExitCode::SUCCESS);
    };
    say(
        "resources",
        "deploying everything again from the service repository",
    );
    forget_resources(&settings, &dachs, &store).await?;
    drop(store);
    crate::daemon::sync_once(settings, true).await
}

/// dropdb, createdb, createuser, `dachs init`, `dachs upgrade`: what the package's postinst
/// does on a fresh node, with the server stopped so that nothing holds the old database.
async fn recreate_database(settings: &Settings) -> anyhow::Result<()> {
    let root = dachs_root(settings)?;
    prepare_root(root, &settings.dachs.user)?;
    let pending = root.join(DATABASE_PENDING);
    std::fs::write(&pending, "").with_context(|| format!("writing {}", pending.display()))?;
    system::stop_dachs_server(&settings.dachs.bin);
    system::drop_database().context("dropping DaCHS's database")?;
    system::create_database(&settings.dachs.user).context("creating DaCHS's database")?;
    // As the package's postinst runs them (`su dachsroot -c`), told the running cluster's
    // port: `dachs init` connects through libpq's default, 5432, whatever the cluster's.
    let bin = settings.dachs.bin.to_string_lossy();
    let port = format!("PGPORT={}", system::cluster_port().unwrap_or(5432));
    for step in ["init", "upgrade"] {
        system::run(&[
            "runuser",
            "-u",
            &settings.dachs.user,
            "--",
            "env",
            &port,
            &bin,
            step,
        ])
        .with_context(|| format!("dachs {step}"))?;
    }
    std::fs::remove_file(&pending).with_context(|| format!("removing {}", pending.display()))?;
    Ok(())
}

/// DaCHS's root directory (/var/gavo): the parent of its inputs directory.
fn dachs_root(settings: &Settings) -> anyhow::Result<&Path> {
    settings
        .dachs
        .inputs_dir
        .parent()
        .context("dachs.inputs-dir has no parent: where is DaCHS's root directory?")
}

/// DaCHS's root directory, owned by its account as the postinst leaves it.
fn prepare_root(root: &Path, user: &str) -> anyhow::Result<()> {
    std::fs::create_dir_all(root).with_context(|| format!("creating {}", root.display()))?;
    let (uid, _, _) = crate::dachs::cli::passwd(user)
        .with_context(|| format!("no account `{user}` (dachs.user)"))?;
    std::os::unix::fs::chown(root, Some(uid), None)
        .with_context(|| format!("chown {}", root.display()))?;
    Ok(())
}

async fn wait_for_tap(tap: &TapClient) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        let health = tap.query(crate::dachs::tap::HEALTH_QUERY).await;
        match health {
            Ok(_) => return Ok(()),
            Err(e) if started.elapsed() > DACHS_START => {
                return Err(anyhow::anyhow!(e).context("DaCHS did not answer after its start"));
            }
            // Often: DaCHS answers within a second or two of its start, and the rebuild waits.
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Drops every resource the agent deployed, or that the applied revision names, from DaCHS and
/// from disk, and forgets them: the next pass deploys them as on a fresh node.
async fn forget_resources(
    settings: &Settings,
    dachs: &Dachs,
    store: &StateStore,
) -> anyhow::Result<()> {
    let mut resources: Vec<(String, String)> = store
        .resources()?
        .into_iter()
        .map(|r| (r.dir, r.rd_id))
        .collect();
    for sha in [crate::state::APPLIED, crate::state::DESIRED] {
        let Some(sha) = store.meta(sha)? else {
            continue;
        };
        let root = crate::source::revisions::Revisions::new(&settings.state_dir).dir(&sha);
        if let Ok(service) = crate::service::load(&root) {
            for r in service.resources {
                resources.push((r.dir.clone(), format!("{}/{}", r.dir, r.rd)));
            }
        }
    }
    resources.sort();
    resources.dedup();
    for (dir, rd_id) in &resources {
        let path = settings.dachs.inputs_dir.join(dir);
        if path.is_dir() {
            // Fails harmlessly when the tables went with the database.
            let _ = dachs.run(&["drop", rd_id]).await;
        }
        match std::fs::remove_dir_all(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("removing {}", path.display())),
        }
    }
    let stage = settings.dachs.inputs_dir.join(crate::apply::STAGE_DIR);
    let _ = std::fs::remove_dir_all(stage);
    store.forget_deployments()?;
    Ok(())
}
