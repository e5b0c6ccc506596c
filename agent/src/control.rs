//! The control socket, `<state-dir>/control.sock`: how `vespa-agent sync` reaches a running
//! daemon. The daemon holds the state directory's lock, so a second process cannot run a pass
//! itself; it asks the daemon for one and waits for that pass's result instead.
//!
//! A Unix socket rather than an HTTP endpoint: `http.listen` may face the network for
//! Prometheus, and the socket's mode (0600, the agent's own user) is the authentication.
//!
//! Protocol: the client sends one line, `sync` or `sync --retry`; the daemon answers with one
//! JSON line, the [`PassRecord`] of the first pass that started after the request.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;

use crate::reconcile::{Trigger, Triggers};
use crate::runtime::Runtime;
use crate::state::{PassRecord, now_ms};

pub const SOCKET: &str = "control.sock";

/// A request line longer than this is not a request.
const MAX_LINE: u64 = 256;

pub fn socket_path(state_dir: &Path) -> PathBuf {
    state_dir.join(SOCKET)
}

/// Binds the socket, replacing a stale one: only the holder of the state directory's lock
/// calls this, so no other daemon can be using it.
pub fn bind(state_dir: &Path) -> std::io::Result<UnixListener> {
    let path = socket_path(state_dir);
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

pub async fn serve(
    listener: UnixListener,
    runtime: Arc<Runtime>,
    triggers: Triggers,
    shutdown: CancellationToken,
) {
    loop {
        let stream = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "control socket: accept failed");
                    continue;
                }
            },
        };
        let runtime = runtime.clone();
        let triggers = triggers.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            if let Err(e) = answer(stream, &runtime, &triggers, &shutdown).await {
                tracing::debug!(error = %e, "control socket: client went away");
            }
        });
    }
}

async fn answer(
    stream: UnixStream,
    runtime: &Runtime,
    triggers: &Triggers,
    shutdown: &CancellationToken,
) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    BufReader::new(read.take(MAX_LINE))
        .read_line(&mut line)
        .await?;
    let retry = match line.trim_end() {
        "sync" => false,
        "sync --retry" => true,
        _ => {
            write
                .write_all(b"{\"error\":\"unknown request\"}\n")
                .await?;
            return Ok(());
        }
    };
    let mut passes = runtime.subscribe_passes();
    let asked_ms = now_ms();
    if retry {
        runtime.request_retry();
    }
    tracing::info!(retry, "sync requested on the control socket");
    triggers.send(Trigger::Manual);
    // The pass that answers is the first one to start after the request: a pass already
    // running may have fetched before the commit the operator is waiting for.
    let record = loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            changed = passes.changed() => {
                if changed.is_err() {
                    return Ok(());
                }
            }
        }
        let done = passes.borrow_and_update().clone();
        if let Some(p) = done.filter(|p| p.started_ms >= asked_ms) {
            break p;
        }
    };
    let mut body = serde_json::to_vec(&record).map_err(std::io::Error::other)?;
    body.push(b'\n');
    write.write_all(&body).await
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("cannot reach the running daemon at {}: {source}", path.display())]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the running daemon stopped before the pass finished")]
    Gone,
    #[error("the running daemon answered something unexpected: {0}")]
    Protocol(String),
}

/// Asks the daemon that holds `state_dir` for a pass and waits for its record.
pub async fn request_sync(state_dir: &Path, retry: bool) -> Result<PassRecord, ControlError> {
    let path = socket_path(state_dir);
    let mut stream = UnixStream::connect(&path)
        .await
        .map_err(|source| ControlError::Connect {
            path: path.clone(),
            source,
        })?;
    let request: &[u8] = if retry { b"sync --retry\n" } else { b"sync\n" };
    stream
        .write_all(request)
        .await
        .map_err(|_| ControlError::Gone)?;
    let mut line = String::new();
    BufReader::new(stream)
        .read_line(&mut line)
        .await
        .map_err(|_| ControlError::Gone)?;
    if line.is_empty() {
        return Err(ControlError::Gone);
    }
    serde_json::from_str(&line).map_err(|_| ControlError::Protocol(line.trim().to_owned()))
}
