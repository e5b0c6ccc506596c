//! `vespa-agent run`: the supervisor. It opens the state store, binds the HTTP listener, starts
//! the reconcile loop and the watchdog, tells systemd it is ready, and then turns signals into
//! actions: SIGHUP reloads the configuration, SIGTERM and SIGINT stop in bounded time.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::{self, Layout, Settings};
use crate::hooks::{self, Gate};
use crate::http::{self, App};
use crate::metrics::Metrics;
use crate::reconcile::{Reconciler, Trigger, Triggers};
use crate::runtime::Runtime;
use crate::state::StateStore;
use crate::systemd;

/// Test hook: make every pass hang this long (a duration like "30s"), to prove the watchdog and
/// /healthz notice a stuck loop. Documented in vespa-agent(8) under ENVIRONMENT.
pub const DEBUG_STALL_ENV: &str = "VESPA_AGENT_DEBUG_STALL";

pub async fn run(layout: Layout, settings: Settings) -> anyhow::Result<()> {
    let debug_stall = match std::env::var(DEBUG_STALL_ENV) {
        Ok(v) => Some(
            humantime::parse_duration(&v)
                .with_context(|| format!("{DEBUG_STALL_ENV}={v} is not a duration"))?,
        ),
        Err(_) => None,
    };

    let store = StateStore::open(&settings.state_dir)?;
    let interrupted = store.close_interrupted()?;
    if interrupted > 0 {
        tracing::warn!(
            passes = interrupted,
            "the previous run stopped in the middle of a pass"
        );
    }
    let metrics = Arc::new(Metrics::new());
    // Before the port opens: it never serves without the TLS or auth the file asks for.
    let web: Arc<crate::web::Web> = Arc::new(
        crate::web::Web::start(settings.web_config_file.clone(), metrics.clone())
            .context("http.web-config-file does not load; the listener stays closed")?,
    );
    let listener = TcpListener::bind(settings.http_listen)
        .await
        .with_context(|| format!("cannot listen on {} (http.listen)", settings.http_listen))?;
    tracing::info!(
        address = %listener.local_addr()?,
        state = %store.path().display(),
        "vespa-agent {} started",
        env!("CARGO_PKG_VERSION")
    );

    // Without the socket the daemon still does its job; only `sync` cannot reach it.
    let control = crate::control::bind(&settings.state_dir)
        .inspect_err(|e| {
            tracing::warn!(
                socket = %crate::control::socket_path(&settings.state_dir).display(),
                error = %e,
                "cannot create the control socket; `vespa-agent sync` will not reach this daemon"
            );
        })
        .ok();

    let runtime = Arc::new(Runtime::new(
        settings.reconcile.stall_timeout,
        settings.merged.files.clone(),
        settings.dachs.url.clone(),
    ));
    crate::rebuild_policy::restore(&store, &metrics, &runtime);
    let shutdown = CancellationToken::new();
    let (settings_tx, settings_rx) = watch::channel(Arc::new(settings));
    let (triggers, trigger_rx) = Triggers::channel();

    let hooks = Arc::new(Gate::new(
        webhook_secret(&settings_tx.borrow())?,
        settings_tx.borrow().source.follow.clone(),
        triggers.clone(),
        hooks::MIN_SPACING,
    ));
    let http_task = tokio::spawn(http::serve(
        listener,
        App {
            runtime: runtime.clone(),
            metrics: metrics.clone(),
            hooks: hooks.clone(),
            web: web.clone(),
        },
        shutdown.clone(),
    ));
    if let Some(control) = control {
        tokio::spawn(crate::control::serve(
            control,
            runtime.clone(),
            web.clone(),
            triggers.clone(),
            shutdown.clone(),
        ));
    }
    tokio::spawn(crate::watch::run(
        runtime.clone(),
        triggers.clone(),
        shutdown.clone(),
    ));
    let loop_task = tokio::spawn(
        Reconciler {
            store: std::sync::Mutex::new(store),
            runtime: runtime.clone(),
            metrics: metrics.clone(),
            settings: settings_rx,
            triggers: trigger_rx,
            debug_stall,
            failures: 0,
            reporter: crate::gitlab::Reporter::new(),
            rebuild: Some(Default::default()),
            serves: true,
        }
        .run(shutdown.clone()),
    );
    if let Some(period) = systemd::watchdog_period() {
        tokio::spawn(feed_watchdog(runtime.clone(), period, shutdown.clone()));
    }
    systemd::ready(&runtime.activity());

    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    loop {
        tokio::select! {
            _ = hup.recv() => {
                reload(&layout, &settings_tx, &runtime, &metrics, &hooks);
                triggers.send(Trigger::Reload);
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }

    tracing::info!("stopping");
    systemd::stopping();
    shutdown.cancel();
    let limit = settings_tx.borrow().reconcile.shutdown_timeout;
    let stopped = tokio::time::timeout(limit, async {
        let _ = loop_task.await;
        let _ = http_task.await;
    })
    .await;
    if stopped.is_err() {
        tracing::error!(
            seconds = limit.as_secs(),
            "work did not reach a safe point within reconcile.shutdown-timeout; exiting anyway \
             (the pass is recorded as interrupted at the next start)"
        );
    }
    Ok(())
}

/// `vespa-agent sync`: one pass in this process, with the same stages as the daemon's; or, when
/// a daemon holds the state directory, one pass of that daemon's, asked for on its control socket.
pub async fn sync_once(settings: Settings, retry: bool) -> anyhow::Result<std::process::ExitCode> {
    let store = match open_or_ask_daemon(&settings, retry, "").await? {
        Ok(store) => store,
        Err(done) => return Ok(done),
    };
    store.close_interrupted()?;
    let runtime = Arc::new(Runtime::new(
        settings.reconcile.stall_timeout,
        settings.merged.files.clone(),
        settings.dachs.url.clone(),
    ));
    let (_settings_tx, settings_rx) = watch::channel(Arc::new(settings));
    let (_triggers, trigger_rx) = Triggers::channel();
    let mut reconciler = Reconciler {
        store: std::sync::Mutex::new(store),
        runtime: runtime.clone(),
        metrics: Arc::new(Metrics::new()),
        settings: settings_rx,
        triggers: trigger_rx,
        debug_stall: None,
        failures: 0,
        reporter: crate::gitlab::Reporter::new(),
        rebuild: None,
        serves: false,
    };
    let outcome = reconciler
        .pass(Trigger::Manual, retry, &CancellationToken::new())
        .await;
    let report = runtime.report();
    let error = report
        .last_pass
        .as_ref()
        .and_then(|p| p.get("error").and_then(|e| e.as_str()).map(str::to_owned));
    Ok(sync_result(Some(outcome), error, report.applied_revision))
}

/// Opens the state store for a one-shot command; when the daemon holds it, asks the daemon
/// for a pass instead and returns that pass's exit code (`Err`).
pub(crate) async fn open_or_ask_daemon(
    settings: &Settings,
    retry: bool,
    note: &str,
) -> anyhow::Result<Result<StateStore, std::process::ExitCode>> {
    match StateStore::open_for_command(&settings.state_dir) {
        Ok(store) => Ok(Ok(store)),
        Err(crate::state::StateError::Locked { .. }) => {
            eprintln!("vespa-agent: the daemon is running; asking it for a pass{note}");
            let record = crate::control::request_sync(&settings.state_dir, retry)
                .await
                .context("asking the daemon for a pass")?;
            let applied = crate::state::StateReader::open(&settings.state_dir)
                .ok()
                .flatten()
                .and_then(|s| s.meta(crate::state::APPLIED).ok().flatten());
            Ok(Err(sync_result(record.outcome, record.error, applied)))
        }
        Err(e) => Err(e.into()),
    }
}

fn sync_result(
    outcome: Option<crate::state::Outcome>,
    error: Option<String>,
    applied: Option<String>,
) -> std::process::ExitCode {
    if let Some(applied) = &applied {
        println!("applied revision: {applied}");
    }
    if outcome == Some(crate::state::Outcome::Success) {
        println!("sync: success");
        return std::process::ExitCode::SUCCESS;
    }
    let reason = error.unwrap_or_else(|| "unknown".into());
    eprintln!("vespa-agent: sync failed: {reason}");
    std::process::ExitCode::from(crate::exit::FAILURE)
}

/// Re-reads the configuration. A valid one replaces the settings for the next pass; an invalid
/// one is logged and the running settings stay, whole.
fn reload(
    layout: &Layout,
    settings_tx: &watch::Sender<Arc<Settings>>,
    runtime: &Runtime,
    metrics: &Metrics,
    hooks: &Gate,
) {
    systemd::reloading();
    let current = settings_tx.borrow().clone();
    let loaded = config::load(layout)
        .map_err(anyhow::Error::from)
        .and_then(|new| {
            let secret = webhook_secret(&new)?;
            Ok((new, secret))
        });
    match loaded {
        Ok((mut new, secret)) => {
            hooks.update(secret, new.source.follow.clone());
            // The listener and the state store are opened once; changing them takes a restart,
            // so keep the running values and say so rather than half-apply.
            let mut restart = Vec::new();
            if new.http_listen != current.http_listen {
                restart.push("http.listen".to_owned());
                new.http_listen = current.http_listen;
            }
            if new.web_config_file != current.web_config_file {
                restart.push("http.web-config-file".to_owned());
                new.web_config_file = current.web_config_file.clone();
            }
            if new.state_dir != current.state_dir {
                restart.push("agent.state-dir".to_owned());
                new.state_dir = current.state_dir.clone();
            }
            if !restart.is_empty() {
                tracing::warn!(keys = ?restart, "these keys changed but take effect only after a restart");
            }
            runtime.set_stall_timeout(new.reconcile.stall_timeout);
            runtime.config_reloaded(new.merged.files.clone(), new.dachs.url.clone(), restart);
            tracing::info!(files = ?new.merged.files, "configuration reloaded");
            settings_tx.send_replace(Arc::new(new));
            metrics.reloads.with_label_values(&["success"]).inc();
            metrics.last_reload_ok.set(1);
        }
        Err(e) => {
            let e = format!("{e:#}");
            tracing::error!(
                error = %e,
                "configuration reload rejected; the previous configuration stays in force"
            );
            runtime.config_rejected(e);
            metrics.reloads.with_label_values(&["failure"]).inc();
            metrics.last_reload_ok.set(0);
        }
    }
    systemd::ready(&runtime.activity());
}

fn webhook_secret(settings: &Settings) -> anyhow::Result<Option<crate::config::Secret>> {
    settings
        .source
        .webhook_secret_file
        .as_ref()
        .map(|f| {
            f.read()
                .map_err(|m| anyhow::anyhow!("source.webhook-secret-file: {m}"))
        })
        .transpose()
}

/// Feeds systemd's watchdog only while the reconcile loop's heartbeat is fresh, so that a stuck
/// loop (not merely a live process) gets the service restarted.
async fn feed_watchdog(runtime: Arc<Runtime>, period: Duration, shutdown: CancellationToken) {
    let mut starving = false;
    loop {
        if runtime.is_alive() {
            systemd::watchdog();
            starving = false;
        } else if !starving {
            tracing::error!(
                heartbeat_age_seconds = runtime.heartbeat_age().as_secs(),
                "the reconcile loop is stuck; no longer feeding the systemd watchdog"
            );
            starving = true;
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(period) => {}
        }
    }
}
