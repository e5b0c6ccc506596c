//! vespa-agent: keeps a VESPA DaCHS node converged to its sources of truth (a commit of the
//! service repository and the granule files in B2SAFE), and proves it.
//!
//! # Layout
//! Data flows one way: source -> reconcile -> dachs/granules -> state -> metrics/http. No module
//! uses one that uses it, even through others (agent/tests/layers.rs checks it); a name two
//! sides need lives below both.
//!
//! - [`cli`]: the command line and the one-shot commands (`plan`, `status`, `import`); one
//!   dispatch point, exit codes from [`exit`].
//! - [`daemon`]: `run` and `sync`; the supervisor (signals, reload, bounded shutdown, watchdog).
//! - [`control`]: the control socket through which `sync` asks a running daemon for a pass.
//! - [`hooks`], [`http`], [`watch`]: what starts a pass besides the timer (the GitLab webhook,
//!   inotify on the deployed resources) and the HTTP endpoints.
//! - [`rebuild`]: `vespa-agent rebuild`, the node repaired in place from its sources of truth,
//!   or rebuilt by OpenStack; [`rebuild_policy`]: when the daemon asks for it on its own.
//! - [`reconcile`]: the loop (triggers, coalescing, heartbeat) and the stages of one pass.
//! - [`digest`]: what a node serves, as one comparable hash (`status --digest`).
//! - [`apply`]: a revision into DaCHS: stage, `dachs val` gate, install, the resource's
//!   granules brought, import, publish, health check, roll back.
//! - [`granules`]: collections listed, diffed, transferred, verified and imported.
//! - [`files`]: the files the agent puts under DaCHS's inputs directory (listing, hashing,
//!   durable placing), below both [`apply`] and [`granules`].
//! - [`dachs`]: the local DaCHS server (`dachs` commands, RDs, TAP queries, gavo.rc).
//! - [`gitlab`]: commit statuses reported to GitLab.
//! - [`outbound`]: the HTTP clients towards other servers, sharing one TLS configuration.
//! - [`source`]: the service repository (fetch, verify, revisions).
//! - [`service`]: the vespa-service.toml contract.
//! - [`state`]: the SQLite state store (passes, commits, resources, granules, rebuilds).
//! - [`runtime`]: the live status shared by the loop, the endpoints and the watchdog.
//! - [`metrics`]: what Prometheus reads.
//! - [`config`]: configuration files -> merged values with their origins -> validated settings.
//! - [`heap`]: the daemon's heap kept to what it uses.
//! - [`systemd`], [`logging`], [`journald`], [`journal`]: sd_notify and the journal.
//! - [`text`]: outside text kept within bounds; [`xml`]: what the parsers of outside XML
//!   share; [`node`]: the node's free space, memory and load, as far as DaCHS's health depends
//!   on them.

pub mod apply;
pub mod cli;
pub mod config;
pub mod control;
pub mod dachs;
pub mod daemon;
pub mod digest;
pub mod exit;
pub mod files;
pub mod gitlab;
pub mod granules;
pub mod heap;
pub mod hooks;
pub mod http;
pub mod journal;
pub mod journald;
pub mod logging;
pub mod metrics;
pub mod node;
pub mod outbound;
pub mod rebuild;
pub mod rebuild_policy;
pub mod reconcile;
pub mod resident;
pub mod runtime;
pub mod service;
pub mod source;
pub mod state;
pub mod systemd;
pub mod text;
pub mod trust;
pub mod watch;
pub mod web;
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
