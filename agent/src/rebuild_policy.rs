//! The automatic rebuild policy, `[rebuild]` in the configuration, off by default.
//!
//! When DaCHS has failed its health check (no ADQL answer, or a deployed table that does not
//! answer) for `rebuild.unhealthy-for`, over at least two passes in a row, the daemon records
//! a request in the state store and starts `vespa-agent-rebuild.service` (level 1), which stops
//! the daemon and starts it again when done. At most one such repair per
//! `rebuild.repair-interval`. The decision is taken between passes, never inside one, so never
//! while granules are imported.
//!
//! With `rebuild.automatic = "vm"`, `rebuild` goes on to level 2 when the repair failed AND DaCHS
//! still does not answer: it asks OpenStack for a new VM. Nova's record of the last rebuild
//! (`openstack.rebuild-interval`) keeps a broken image from causing a rebuild loop.
//!
//! Every decision is logged with its reason, counted in `vespa_agent_rebuild_decisions_total`,
//! kept in the state store and shown in `/status`.

use std::time::Duration;

use crate::config::{Automatic, RebuildSettings};
use crate::metrics::Metrics;
use crate::runtime::Runtime;
use crate::state::{REBUILD_ACTIONS as ACTIONS, RebuildRecord, StateStore, now_ms};

/// The unit that runs level 1 with the privileges it needs. Unit tests name one that cannot
/// exist, so that no test ever repairs the machine it runs on.
pub const REBUILD_UNIT: &str = if cfg!(test) {
    "vespa-agent-rebuild-unit-test-never-installed.service"
} else {
    "vespa-agent-rebuild.service"
};

/// A repair counts against `rebuild.repair-interval` once decided, whatever became of it: a
/// repair that could not even start must not be retried at every pass.
const RATE_LIMITED: [&str; 3] = ["started", "dry-run", "failed"];

/// How long after the daemon's decision `rebuild` still takes its request as the reason it runs.
pub const REQUEST_VALID: Duration = Duration::from_secs(3600);

/// What `rebuild` is asked to do, in the state store while it runs.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Request {
    pub at_ms: i64,
    pub reason: String,
    /// Go on to level 2 if the repair fails and DaCHS still does not answer.
    pub escalate: bool,
}

/// What one health observation leads to.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Healthy,
    /// Unhealthy, and the policy is off: only shown in /status and the metric.
    Off,
    /// Unhealthy, not for long enough yet.
    Waiting,
    /// Repair now, for this reason.
    Repair(String),
    /// A repair is due but the last one is too recent (said once per unhealthy spell).
    TooSoon(String),
    /// Already said for this spell.
    Quiet,
}

/// The unhealthy spell the daemon is in, if any.
#[derive(Debug, Default)]
pub struct Watch {
    since_ms: Option<i64>,
    failed_checks: u32,
    said_too_soon: bool,
}

fn human(ms: i64) -> String {
    humantime::format_duration(Duration::from_secs((ms.max(0) / 1000) as u64)).to_string()
}

impl Watch {
    /// Since when DaCHS has failed its health check, if it does now.
    pub fn unhealthy_since_ms(&self) -> Option<i64> {
        self.since_ms
    }

    /// One health observation, at the end of a pass. `problem`: why DaCHS is unhealthy, or
    /// None; `last_repair_ms`: when the last automatic repair was decided.
    pub fn observe(
        &mut self,
        now_ms: i64,
        problem: Option<&str>,
        last_repair_ms: Option<i64>,
        s: &RebuildSettings,
    ) -> Verdict {
        let Some(problem) = problem else {
            *self = Watch::default();
            return Verdict::Healthy;
        };
        let since = *self.since_ms.get_or_insert(now_ms);
        self.failed_checks = self.failed_checks.saturating_add(1);
        if s.automatic == Automatic::Off {
            return Verdict::Off;
        }
        let unhealthy = now_ms - since;
        if self.failed_checks < 2 || unhealthy < s.unhealthy_for.as_millis() as i64 {
            return Verdict::Waiting;
        }
        if let Some(last) = last_repair_ms {
            let ago = now_ms - last;
            if ago < s.repair_interval.as_millis() as i64 {
                if self.said_too_soon {
                    return Verdict::Quiet;
                }
                self.said_too_soon = true;
                return Verdict::TooSoon(format!(
                    "DaCHS has failed its health check for {}, but the last automatic repair \
                     was {} ago and rebuild.repair-interval allows one per {}: {problem}",
                    human(unhealthy),
                    human(ago),
                    humantime::format_duration(s.repair_interval)
                ));
            }
        }
        self.said_too_soon = false;
        Verdict::Repair(format!(
            "DaCHS has failed its health check for {} ({} checks in a row): {problem}",
            human(unhealthy),
            self.failed_checks
        ))
    }
}

/// Records one decision: the state store, the metric, /status and the journal.
pub fn record(
    store: &StateStore,
    metrics: &Metrics,
    runtime: &Runtime,
    level: &str,
    action: &str,
    reason: &str,
) {
    let r = RebuildRecord::now(level, action, reason);
    if let Err(e) = store.record_rebuild(&r) {
        tracing::error!(error = %e, "cannot record the rebuild decision in the state store");
    }
    metrics
        .rebuild_decisions
        .with_label_values(&[level, action])
        .inc();
    runtime.update_rebuild(|s| s.last_decision = Some(r));
    match action {
        "started" | "dry-run" | "refused" | "failed" => {
            tracing::warn!(level, action, reason, "automatic rebuild")
        }
        _ => tracing::info!(level, action, reason, "automatic rebuild"),
    }
}

/// At the daemon's start: the decisions the store kept, into the metric and /status, so that
/// what `rebuild` decided while the daemon was stopped is counted too.
pub fn restore(store: &StateStore, metrics: &Metrics, runtime: &Runtime) {
    let records = match store.rebuilds() {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "cannot read the rebuild decisions from the state store");
            return;
        }
    };
    for r in &records {
        let known = ACTIONS
            .iter()
            .any(|(l, a)| *l == r.level && a.contains(&r.action.as_str()));
        if known {
            metrics
                .rebuild_decisions
                .with_label_values(&[&r.level, &r.action])
                .inc();
        }
    }
    let last = records.into_iter().last();
    runtime.update_rebuild(|s| s.last_decision = last);
}

/// After a pass of the daemon: watches DaCHS's health and, when the policy says so, starts the
/// repair. Returns true when the repair unit was started (systemd stops this daemon next).
pub fn after_pass(
    watch: &mut Watch,
    store: &StateStore,
    metrics: &Metrics,
    runtime: &Runtime,
    s: &RebuildSettings,
) -> bool {
    let now = now_ms();
    let problem = runtime.health_problem();
    let last = store
        .last_rebuild("repair", &RATE_LIMITED)
        .ok()
        .flatten()
        .map(|r| r.at_ms);
    let verdict = watch.observe(now, problem.as_deref(), last, s);
    let since = watch.unhealthy_since_ms();
    metrics
        .unhealthy_seconds
        .set(since.map_or(0.0, |t| (now - t) as f64 / 1000.0));
    runtime.update_rebuild(|r| {
        r.automatic = s.automatic.as_str().to_owned();
        r.dry_run = s.dry_run;
        r.unhealthy_since_unix_ms = since;
    });
    let say =
        |action: &str, reason: &str| record(store, metrics, runtime, "repair", action, reason);
    match verdict {
        Verdict::Repair(reason) if s.dry_run => {
            say("dry-run", &reason);
            false
        }
        Verdict::Repair(reason) => {
            let request = Request {
                at_ms: now,
                reason: reason.clone(),
                escalate: s.automatic == Automatic::Vm,
            };
            let json = serde_json::to_string(&request).expect("a request serialises");
            if let Err(e) = store.set_meta(crate::state::REBUILD_REQUEST, &json) {
                say(
                    "failed",
                    &format!("{reason}; cannot record the request: {e}"),
                );
                return false;
            }
            say("started", &reason);
            match start_unit() {
                Ok(()) => true,
                Err(e) => {
                    let _ = store.delete_meta(crate::state::REBUILD_REQUEST);
                    say("failed", &format!("cannot start {REBUILD_UNIT}: {e}"));
                    false
                }
            }
        }
        Verdict::TooSoon(reason) => {
            say("refused", &reason);
            false
        }
        Verdict::Healthy | Verdict::Off | Verdict::Waiting | Verdict::Quiet => false,
    }
}

/// `systemctl start --no-block`: the unit conflicts with this daemon, so waiting for it would
/// wait for our own stop.
fn start_unit() -> Result<(), String> {
    use std::os::unix::process::ExitStatusExt;
    let out = std::process::Command::new("systemctl")
        .args(["start", "--no-block", REBUILD_UNIT])
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("systemctl: {e}"))?;
    // systemctl runs in this daemon's cgroup: once the job is queued, systemd stops the daemon
    // (Conflicts=) and may kill systemctl with it before it exits. Killed means queued.
    if out.status.success() || out.status.signal().is_some() {
        Ok(())
    } else {
        Err(format!(
            "systemctl {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;

    fn settings(automatic: Automatic) -> RebuildSettings {
        RebuildSettings {
            automatic,
            unhealthy_for: Duration::from_secs(30 * 60),
            repair_interval: Duration::from_secs(6 * 3600),
            dry_run: false,
        }
    }

    #[test]
    fn off_never_decides_but_still_watches() {
        let s = settings(Automatic::Off);
        let mut w = Watch::default();
        for t in 0..100 {
            assert_eq!(w.observe(t * MIN, Some("down"), None, &s), Verdict::Off);
        }
        assert_eq!(w.unhealthy_since_ms(), Some(0));
    }

    #[test]
    fn repairs_only_after_the_whole_window_and_two_checks() {
        let s = settings(Automatic::Repair);
        let mut w = Watch::default();
        assert_eq!(w.observe(0, Some("down"), None, &s), Verdict::Waiting);
        assert_eq!(
            w.observe(29 * MIN, Some("down"), None, &s),
            Verdict::Waiting
        );
        let v = w.observe(30 * MIN, Some("no ADQL answer"), None, &s);
        assert!(
            matches!(&v, Verdict::Repair(r) if r.contains("for 30m") && r.contains("3 checks") && r.contains("no ADQL answer")),
            "{v:?}"
        );
        // However long the spell, one failed check alone is not enough: the second decides.
        let mut w = Watch::default();
        assert_eq!(w.observe(0, Some("down"), None, &s), Verdict::Waiting);
        assert!(matches!(
            w.observe(90 * MIN, Some("down"), None, &s),
            Verdict::Repair(r) if r.contains("2 checks")
        ));
    }

    #[test]
    fn a_healthy_check_starts_the_window_again() {
        let s = settings(Automatic::Vm);
        let mut w = Watch::default();
        w.observe(0, Some("down"), None, &s);
        w.observe(20 * MIN, Some("down"), None, &s);
        assert_eq!(w.observe(25 * MIN, None, None, &s), Verdict::Healthy);
        assert_eq!(w.unhealthy_since_ms(), None);
        assert_eq!(
            w.observe(26 * MIN, Some("down"), None, &s),
            Verdict::Waiting
        );
        assert_eq!(
            w.observe(50 * MIN, Some("down"), None, &s),
            Verdict::Waiting
        );
        assert!(matches!(
            w.observe(56 * MIN, Some("down"), None, &s),
            Verdict::Repair(_)
        ));
    }

    #[test]
    fn a_recent_repair_is_said_once_then_allowed_when_the_interval_has_passed() {
        let s = settings(Automatic::Repair);
        let mut w = Watch::default();
        let last = Some(0);
        w.observe(MIN, Some("down"), last, &s);
        let v = w.observe(40 * MIN, Some("down"), last, &s);
        assert!(
            matches!(&v, Verdict::TooSoon(r) if r.contains("repair-interval") && r.contains("6h")),
            "{v:?}"
        );
        assert_eq!(w.observe(50 * MIN, Some("down"), last, &s), Verdict::Quiet);
        assert_eq!(w.observe(359 * MIN, Some("down"), last, &s), Verdict::Quiet);
        assert!(matches!(
            w.observe(361 * MIN, Some("down"), last, &s),
            Verdict::Repair(_)
        ));
    }

    /// A daemon's parts, with DaCHS failing since an hour ago.
    fn failing_node() -> (tempfile::TempDir, StateStore, Metrics, Runtime, Watch) {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path()).unwrap();
        let runtime = Runtime::new(Duration::from_secs(60), Vec::new(), "http://x".into());
        runtime.set_dachs_error(Some("connection refused".into()));
        let watch = Watch {
            since_ms: Some(now_ms() - 3_600_000),
            failed_checks: 5,
            said_too_soon: false,
        };
        (dir, store, Metrics::new(), runtime, watch)
    }

    fn counted(m: &Metrics, action: &str) -> u64 {
        m.rebuild_decisions
            .with_label_values(&["repair", action])
            .get()
    }

    #[test]
    fn a_dry_run_decides_records_and_counts_but_starts_nothing() {
        let (_dir, store, metrics, runtime, mut watch) = failing_node();
        let s = RebuildSettings {
            dry_run: true,
            ..settings(Automatic::Vm)
        };
        assert!(!after_pass(&mut watch, &store, &metrics, &runtime, &s));
        assert_eq!(counted(&metrics, "dry-run"), 1);
        assert_eq!(store.meta(crate::state::REBUILD_REQUEST).unwrap(), None);
        let last = runtime.report().rebuild.last_decision.unwrap();
        assert_eq!(
            (last.level.as_str(), last.action.as_str()),
            ("repair", "dry-run")
        );
        assert!(
            last.reason.contains("connection refused"),
            "{}",
            last.reason
        );
        assert!(runtime.report().rebuild.unhealthy_since_unix_ms.is_some());
        // The dry run counts against the interval exactly as a repair would.
        assert!(!after_pass(&mut watch, &store, &metrics, &runtime, &s));
        assert_eq!(counted(&metrics, "refused"), 1);
        assert_eq!(counted(&metrics, "dry-run"), 1);
        // Read back at the next start.
        let again = Metrics::new();
        restore(&store, &again, &runtime);
        assert_eq!(
            (counted(&again, "dry-run"), counted(&again, "refused")),
            (1, 1)
        );
    }

    #[test]
    fn a_repair_that_cannot_start_is_recorded_as_failed_and_leaves_no_request() {
        // No systemd manages this test (and no such unit exists where one does): the start fails.
        let (_dir, store, metrics, runtime, mut watch) = failing_node();
        let s = settings(Automatic::Repair);
        assert!(!after_pass(&mut watch, &store, &metrics, &runtime, &s));
        assert_eq!(
            (counted(&metrics, "started"), counted(&metrics, "failed")),
            (1, 1)
        );
        assert_eq!(store.meta(crate::state::REBUILD_REQUEST).unwrap(), None);
        let last = runtime.report().rebuild.last_decision.unwrap();
        assert!(
            last.reason.contains("cannot start vespa-agent-rebuild"),
            "{}",
            last.reason
        );
        // Healthy again: the spell ends, the gauge goes to 0.
        runtime.set_dachs_error(None);
        assert!(!after_pass(&mut watch, &store, &metrics, &runtime, &s));
        assert_eq!(metrics.unhealthy_seconds.get(), 0.0);
        assert_eq!(runtime.report().rebuild.unhealthy_since_unix_ms, None);
    }

    #[test]
    fn the_actions_are_a_fixed_set_that_covers_the_rate_limit() {
        for a in RATE_LIMITED {
            assert!(ACTIONS[0].1.contains(&a), "{a}");
        }
    }
}
