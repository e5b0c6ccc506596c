//! The `[server]` table of vespa-service.toml: rendered into DaCHS's gavo.rc, and DaCHS
//! restarted only when a managed key really changed (the server reads its configuration once,
//! at start; Debian's dachs.service has no reload, and SIGHUP to `dachs serve start -f`
//! crashes it). Done before the resources, because `dachs pub` takes the authority from it.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{ApplyContext, ApplyError};
use crate::dachs::cli::DachsError;
use crate::dachs::gavo_rc;
use crate::service::ServerSettings;

/// How long DaCHS may take to answer again after a restart (it needs about 1.5 s).
const BACK_WITHIN: Duration = Duration::from_secs(60);

/// A gavo.rc the pass changed, and what it said before (`None`: there was none).
pub struct Changed {
    path: PathBuf,
    previous: Option<String>,
}

/// The gavo.rc text `server` asks for, and the current one, when they differ.
pub fn pending(path: &Path, server: &ServerSettings) -> Result<Option<(String, String)>, String> {
    if *server == ServerSettings::default() {
        return Ok(None);
    }
    let current = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let wanted = gavo_rc::render(&current, server);
    Ok((wanted != current).then_some((current, wanted)))
}

fn subject(path: &Path) -> String {
    format!("DaCHS settings {}", path.display())
}

fn failed(path: &Path, step: &'static str, message: String) -> ApplyError {
    ApplyError::Step {
        subject: subject(path),
        step,
        kind: if step == "restart" {
            "restart_failed"
        } else {
            "local"
        },
        message,
        rollback: None,
    }
}

/// Writes the managed keys and restarts DaCHS if anything changed. A restart that fails puts
/// the previous file back and restarts again.
pub async fn apply(
    cx: &ApplyContext<'_>,
    server: &ServerSettings,
) -> Result<Option<Changed>, ApplyError> {
    let Some((current, wanted)) =
        pending(cx.gavo_rc, server).map_err(|m| failed(cx.gavo_rc, "write", m))?
    else {
        return Ok(None);
    };
    let existed = cx.gavo_rc.exists();
    write(cx.gavo_rc, &wanted).map_err(|m| failed(cx.gavo_rc, "write", m))?;
    tracing::info!(path = %cx.gavo_rc.display(), "DaCHS settings changed; restarting DaCHS");
    let changed = Changed {
        path: cx.gavo_rc.to_owned(),
        previous: existed.then_some(current),
    };
    if let Err(e) = restart(cx).await {
        let rollback = restore(cx, &changed).await;
        return Err(ApplyError::Step {
            subject: subject(cx.gavo_rc),
            step: "restart",
            kind: "restart_failed",
            message: e.message(),
            rollback: Some(rollback),
        });
    }
    Ok(Some(changed))
}

/// Puts the previous gavo.rc back and restarts DaCHS.
pub async fn restore(cx: &ApplyContext<'_>, changed: &Changed) -> Result<(), String> {
    match &changed.previous {
        Some(text) => write(&changed.path, text)?,
        None => std::fs::remove_file(&changed.path)
            .map_err(|e| format!("{}: {e}", changed.path.display()))?,
    }
    restart(cx).await.map_err(|e| e.message())
}

/// Replaces the file through a temporary one and a rename, keeping its mode (0644 when new:
/// DaCHS reads it as the server's own user).
pub(crate) fn write(path: &Path, text: &str) -> Result<(), String> {
    let err = |e: std::io::Error| format!("{}: {e}", path.display());
    let mode = std::fs::metadata(path).map_or(0o644, |m| m.permissions().mode() & 0o7777);
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = path.with_file_name(format!(".{name}.vespa-tmp"));
    std::fs::write(&tmp, text).map_err(err)?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode)).map_err(err)?;
    std::fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

/// `dachs.restart`, or under systemd `systemctl restart dachs`, or `dachs serve restart`; then
/// waits until TAP answers a real query again.
async fn restart(cx: &ApplyContext<'_>) -> Result<(), DachsError> {
    let argv: Vec<String> = if !cx.restart.is_empty() {
        cx.restart.to_vec()
    } else if Path::new("/run/systemd/system").is_dir() {
        ["/usr/bin/systemctl", "restart", "dachs"]
            .map(String::from)
            .to_vec()
    } else {
        vec![
            cx.dachs.bin.display().to_string(),
            "serve".into(),
            "restart".into(),
        ]
    };
    let run = cx.dachs.run_program(&argv).await?;
    if run.code != Some(0) {
        return Err(DachsError::Failed {
            command: argv.join(" "),
            message: crate::dachs::cli::error_message(&run),
        });
    }
    let started = Instant::now();
    loop {
        let up = cx.tap.answers_adql().await;
        if up {
            return Ok(());
        }
        if started.elapsed() > BACK_WITHIN {
            return Err(DachsError::Failed {
                command: argv.join(" "),
                message: format!(
                    "DaCHS did not answer TAP queries within {} s of the restart",
                    BACK_WITHIN.as_secs()
                ),
            });
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
