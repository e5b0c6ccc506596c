//! The control socket, `<state-dir>/control.sock`: how `vespa-agent sync` reaches a running
//! daemon. The daemon holds the state directory's lock, so a second process cannot run a pass
//! itself; it asks the daemon for one and waits for that pass's result instead.
//!
//! A Unix socket rather than an HTTP endpoint: `http.listen` may face the network for
//! Prometheus, and the socket's mode (0600, the agent's own user) is the authentication.
//!
//! Protocol: the client sends one line, `sync` or `sync --retry`; the daemon answers with one
//! JSON line, the [`PassRecord`] of the first pass that started after the request. Or `status`:
//! the answer is what `/status` serves, which `vespa-agent status` reads here because the HTTP
//! listener may ask for TLS and basic auth (`http.web-config-file`) that a shell does not have.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;

use crate::reconcile::{Trigger, Triggers};
use crate::runtime::{Runtime, StatusReport};
use crate::state::{PassRecord, now_ms};
use crate::web::Web;

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
    web: Arc<Web>,
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
        let web = web.clone();
        let triggers = triggers.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            if let Err(e) = answer(stream, &runtime, &web, &triggers, &shutdown).await {
                tracing::debug!(error = %e, "control socket: client went away");
            }
        });
    }
}

async fn answer(
    stream: UnixStream,
    runtime: &Runtime,
    web: &Web,
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
        "status" => {
            let mut body =
                serde_json::to_vec(&runtime.report_with(web)).map_err(std::io::Error::other)?;
            body.push(b'\n');
            return write.write_all(&body).await;
        }
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
    let request: &[u8] = if retry { b"sync --retry\n" } else { b"sync\n" };
    let line = exchange(state_dir, request).await?;
    serde_json::from_str(&line).map_err(|_| ControlError::Protocol(line.trim().to_owned()))
}

/// Asks the daemon that holds `state_dir` for its status report.
pub async fn request_status(state_dir: &Path) -> Result<StatusReport, ControlError> {
    let line = exchange(state_dir, b"status\n").await?;
    serde_json::from_str(&line).map_err(|_| ControlError::Protocol(line.trim().to_owned()))
}

/// One request line, one answer line.
async fn exchange(state_dir: &Path, request: &[u8]) -> Result<String, ControlError> {
    let path = socket_path(state_dir);
    let mut stream = UnixStream::connect(&path)
        .await
        .map_err(|source| ControlError::Connect {
            path: path.clone(),
            source,
        })?;
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
    Ok(line)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Outcome;
    use std::time::Duration;

    async fn ask(path: &Path, request: &[u8]) -> String {
        let mut s = UnixStream::connect(path).await.unwrap();
        s.write_all(request).await.unwrap();
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line).await.unwrap();
        line
    }

    #[tokio::test]
    async fn bad_requests_are_refused_and_sync_answers_with_the_next_pass() {
        let dir = tempfile::tempdir().unwrap();
        let listener = bind(dir.path()).unwrap();
        let mode = std::fs::metadata(socket_path(dir.path()))
            .unwrap()
            .permissions();
        assert_eq!(mode.mode() & 0o777, 0o600);
        let runtime = Arc::new(Runtime::new(
            Duration::from_secs(60),
            Vec::new(),
            String::new(),
        ));
        let (triggers, mut rx) = Triggers::channel();
        let stop = CancellationToken::new();
        tokio::spawn(serve(
            listener,
            runtime.clone(),
            Arc::new(Web::start(None, Arc::new(crate::metrics::Metrics::new())).unwrap()),
            triggers,
            stop.clone(),
        ));
        let path = socket_path(dir.path());

        for bad in [
            &b"rm -rf /\n"[..],
            b"sync --retry --force\n",
            &[b'x'; 10_000],
            b"\n",
        ] {
            assert!(ask(&path, bad).await.contains("unknown request"));
        }
        assert!(rx.try_recv().is_err(), "a bad request triggered a pass");

        let answer = tokio::spawn(async move { ask(&path, b"sync --retry\n").await });
        assert_eq!(rx.recv().await, Some(Trigger::Manual));
        assert!(runtime.take_retry());
        // A pass that started before the request does not answer it.
        let mut pass = PassRecord {
            id: 1,
            trigger: "timer".into(),
            started_ms: now_ms() - 60_000,
            finished_ms: Some(now_ms()),
            outcome: Some(Outcome::Failure),
            stage: None,
            error: Some("old".into()),
        };
        runtime.set_last_pass(pass.clone());
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!answer.is_finished());
        pass.id = 2;
        pass.started_ms = now_ms();
        pass.outcome = Some(Outcome::Success);
        runtime.set_last_pass(pass);
        let got: PassRecord = serde_json::from_str(&answer.await.unwrap()).unwrap();
        assert_eq!((got.id, got.outcome), (2, Some(Outcome::Success)));
        stop.cancel();
    }
}
