//! The fixed set of what a rebuild decision can become, per level. The state store's records and
//! the metric's labels both use it; it imports nothing, so both can look down to it.

/// The actions a `RebuildRecord` and `vespa_agent_rebuild_decisions_total` use, per level.
pub const ACTIONS: [(&str, &[&str]); 2] = [
    (
        "repair",
        &["started", "dry-run", "refused", "failed", "succeeded"],
    ),
    (
        "vm",
        &["started", "dry-run", "refused", "failed", "not-needed"],
    ),
];
