//! `vespa-agent import`: the granule stage alone, for the applied revision, with a progress bar
//! on a terminal.

use anyhow::Context;

use crate::config::Settings;
use crate::runtime::Runtime;

/// `vespa-agent import`: the granule stage alone, for the applied revision. While the daemon
/// runs it owns the state store; it then runs a whole pass, which includes the granules.
pub async fn import_once(
    settings: Settings,
    resource: Option<String>,
) -> anyhow::Result<std::process::ExitCode> {
    let note = if resource.is_some() {
        ", which imports every collection (--resource does not apply)"
    } else {
        ", which imports every collection"
    };
    let store = match crate::daemon::open_or_ask_daemon(&settings, false, note).await? {
        Ok(store) => store,
        Err(done) => return Ok(done),
    };
    let applied = store.meta(crate::state::APPLIED)?.ok_or_else(|| {
        anyhow::anyhow!("no revision is applied yet: run `vespa-agent sync` first")
    })?;
    let root = crate::source::revisions::Revisions::new(&settings.state_dir).dir(&applied);
    let mut service =
        crate::service::load(&root).with_context(|| format!("the applied revision {applied}"))?;
    if let Some(r) = &resource {
        service.resources.retain(|x| &x.dir == r);
        if service.resources.is_empty() {
            anyhow::bail!("revision {applied} has no resource `{r}`");
        }
    }
    let runtime = Runtime::new(
        settings.reconcile.stall_timeout,
        Vec::new(),
        settings.dachs.url.clone(),
    );
    let dachs = crate::dachs::cli::Dachs::from_settings(&settings.dachs);
    let store = std::sync::Mutex::new(store);
    let bar = super::progress::Bar::on_terminal();
    let report = crate::granules::stage::Stage {
        watcher: bar
            .as_ref()
            .map(|b| b as &dyn crate::granules::stage::Watcher),
        dachs: &dachs,
        store: &store,
        runtime: &runtime,
        inputs: &settings.dachs.inputs_dir,
        settings: &settings.granules,
        sha: &applied,
        deployed: &[],
    }
    .run(&service)
    .await;
    if let Some(b) = &bar {
        b.finish();
    }
    match report {
        Ok(r) => {
            println!(
                "granules: {} new, {} changed, {} vanished, {} bytes; imported: {}",
                r.added,
                r.changed,
                r.vanished,
                r.bytes,
                if r.imported.is_empty() {
                    "nothing to import".to_owned()
                } else {
                    r.imported.join(", ")
                }
            );
            for (path, reason) in &r.refused {
                println!("refused: {path}: {reason}");
            }
            for (what, e) in &r.failures {
                eprintln!("vespa-agent: {what}: {e}");
            }
            Ok(std::process::ExitCode::from(if r.failures.is_empty() {
                crate::exit::OK
            } else {
                crate::exit::FAILURE
            }))
        }
        Err(e) => {
            eprintln!("vespa-agent: import failed: {e}");
            Ok(std::process::ExitCode::from(crate::exit::FAILURE))
        }
    }
}
