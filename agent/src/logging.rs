//! Log output: structured fields to journald under systemd, plain lines on stderr elsewhere.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::prelude::*;

/// The environment variable that sets the log filter (`info`, `debug`,
/// `vespa_agent::reconcile=trace`...). It wins over `-v`/`-q`, so that a unit drop-in can turn on
/// debugging without editing the command line.
pub const LOG_ENV: &str = "VESPA_AGENT_LOG";

/// `verbosity` is the count of `-v` minus the count of `-q`; 0 is `info`.
pub fn init(verbosity: i8) {
    let level = match verbosity {
        i8::MIN..=-2 => "error",
        -1 => "warn",
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_env(LOG_ENV).unwrap_or_else(|_| EnvFilter::new(level));

    // systemd sets JOURNAL_STREAM when stderr is connected to the journal; only then do we log
    // natively, so that fields (COMMIT=, RESOURCE=...) stay searchable and nothing is logged twice.
    if std::env::var_os("JOURNAL_STREAM").is_some()
        && let Ok(journald) = crate::journald::Journald::connect("vespa-agent")
    {
        tracing_subscriber::registry()
            .with(filter)
            .with(journald)
            .init();
        return;
    }
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();
}
