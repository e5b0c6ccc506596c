//! vespa-agent: keeps a VESPA DaCHS node converged to its sources of truth (a commit of the
//! service repository and the granule files in B2SAFE), and proves it.
//!
//! # Layout
//! Data flows one way: source -> reconcile -> dachs/granules -> state -> metrics/http.
//!
//! - [`cli`]: the command line; one dispatch point, exit codes from [`exit`].
//! - [`config`]: configuration files -> merged values with their origins -> validated settings.
//! - [`daemon`]: `run`; the supervisor (signals, reload, bounded shutdown, watchdog).
//! - [`control`]: the control socket through which `sync` asks a running daemon for a pass.
//! - [`source`], [`hooks`]: the service repository (fetch, verify, revisions) and its webhook.
//! - [`service`]: the vespa-service.toml contract.
//! - [`reconcile`]: the loop (triggers, coalescing, heartbeat) and the stages of one pass.
//! - [`apply`]: a revision into DaCHS: stage, `dachs val` gate, install, import, publish,
//!   health check, roll back.
//! - [`dachs`]: the local DaCHS server (`dachs` commands, RDs, TAP queries).
//! - [`state`]: the SQLite state store (passes, commits; later granules).
//! - [`runtime`]: the live status shared by the loop, the endpoints and the watchdog.
//! - [`metrics`], [`http`]: what Prometheus and operators read.
//! - [`systemd`], [`logging`], [`journald`]: sd_notify and the journal.
//! - [`digest`]: what a node serves, as one comparable hash (`status --digest`).
//! - [`rebuild`]: `vespa-agent rebuild`, the node repaired in place from its sources of truth.
//! - [`watch`]: inotify on the deployed resources, so that drift is checked in seconds.

pub mod apply;
pub mod cli;
pub mod config;
pub mod control;
pub mod dachs;
pub mod daemon;
pub mod digest;
pub mod exit;
pub mod gitlab;
pub mod granules;
pub mod hooks;
pub mod http;
pub mod journal;
pub mod journald;
pub mod logging;
pub mod metrics;
pub mod node;
pub mod rebuild;
pub mod reconcile;
pub mod runtime;
pub mod service;
pub mod source;
pub mod state;
pub mod systemd;
pub mod watch;
pub mod xml;

/// An error and its causes on one line ("a: b: c"). Libraries like reqwest keep the useful part
/// ("Connection refused") in the source chain, which `Display` alone does not show.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = c.source();
    }
    out
}
