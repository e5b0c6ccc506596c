//! The reconcile loop: one pass at a time, started by a trigger, then an idle wait with jitter.
//!
//! Later stages (fetch, validate, apply, import) plug into [`pass`]; the loop around them stays:
//! triggers that arrive during a pass coalesce into one follow-up pass, the heartbeat shows the
//! loop is alive, and a stop request ends the pass at a safe point.

pub mod pass;

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::metrics::Metrics;
use crate::runtime::Runtime;
use crate::state::{Outcome, PassRecord, StateStore, now_ms};

/// Why a pass runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    Start,
    Timer,
    /// `systemctl reload` (SIGHUP).
    Reload,
    /// A GitLab push or tag event on `POST /hooks/gitlab`.
    Webhook,
    /// `vespa-agent sync`, in its own process or through the daemon's control socket.
    Manual,
    /// A managed file under the inputs directory changed on disk.
    Drift,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Start => "start",
            Trigger::Timer => "timer",
            Trigger::Reload => "reload",
            Trigger::Webhook => "webhook",
            Trigger::Manual => "manual",
            Trigger::Drift => "drift",
        }
    }
}

/// The sending side of the trigger queue. It holds one pending trigger: anything sent while
/// one is pending merges into it, so a burst of triggers during a pass gives one follow-up pass.
#[derive(Clone)]
pub struct Triggers(mpsc::Sender<Trigger>);

impl Triggers {
    pub fn channel() -> (Triggers, mpsc::Receiver<Trigger>) {
        let (tx, rx) = mpsc::channel(1);
        (Triggers(tx), rx)
    }

    pub fn send(&self, t: Trigger) {
        let _ = self.0.try_send(t);
    }
}

pub struct Reconciler {
    pub store: Mutex<StateStore>,
    pub runtime: Arc<Runtime>,
    pub metrics: Arc<Metrics>,
    pub settings: watch::Receiver<Arc<Settings>>,
    pub triggers: mpsc::Receiver<Trigger>,
    /// Test hook (`VESPA_AGENT_DEBUG_STALL`): every pass hangs this long without a heartbeat,
    /// as a stuck stage would.
    pub debug_stall: Option<Duration>,
    /// Failed passes in a row, for the backoff.
    pub failures: u32,
    /// Commit statuses sent to GitLab.
    pub reporter: crate::gitlab::Reporter,
    /// The automatic rebuild policy's view of DaCHS's health; None in a one-shot `sync`.
    pub rebuild: Option<crate::rebuild_policy::Watch>,
    /// Whether anyone reads this process's metrics and status (the daemon's listener and the
    /// rebuild policy do); a one-shot `sync` has no reader for each table's row count.
    pub serves: bool,
}

/// The first retry after a failed pass comes this soon; each further failure doubles it, up to
/// the normal interval.
const BACKOFF_START: Duration = Duration::from_secs(5);

/// How long to wait after a pass, given the failures in a row before it and whether it
/// succeeded. Three cases, measured with a fleet of 1,000 nodes (scripts/bench-fleet.sh):
/// - a success after a success: the interval plus up to `jitter_max`;
/// - a failure: an exponential backoff from 5 s, bounded by the interval, its second half
///   random, so that nodes that failed together do not retry together;
/// - the first success after failures: anywhere from half an interval to one and a half. A
///   fleet whose server was down comes back within the few seconds of its backoff, and the
///   interval's jitter alone took many intervals to spread it again (the server saw three times
///   its usual load in half of every minute); one random wait restores a uniform spread.
pub fn next_delay(
    interval: Duration,
    jitter_max: Duration,
    failures_before: u32,
    ok: bool,
) -> Duration {
    match (ok, failures_before) {
        (true, 0) => interval + jitter(jitter_max),
        (true, _) => interval / 2 + jitter(interval),
        (false, n) => {
            let base = BACKOFF_START.saturating_mul(1 << n.min(16)).min(interval);
            base / 2 + jitter(base / 2)
        }
    }
}

/// How often the idle loop shows it is alive: often enough that a healthy loop is never
/// mistaken for a stuck one.
fn beat_period(stall_timeout: Duration) -> Duration {
    (stall_timeout / 4).clamp(Duration::from_millis(100), Duration::from_secs(10))
}

/// A uniformly spread delay in `[0, max)`, so that a fleet of nodes started together does not
/// poll GitLab in step.
pub fn jitter(max: Duration) -> Duration {
    if max.is_zero() {
        return Duration::ZERO;
    }
    // RandomState is seeded from the OS once per thread and varied per instance: enough
    // randomness for spreading timers, without another dependency.
    let mut h = RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos());
    Duration::from_nanos(h.finish() % max.as_nanos().min(u64::MAX as u128) as u64)
}

impl Reconciler {
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut trigger = Trigger::Start;
        loop {
            self.runtime.beat();
            let retry = self.runtime.take_retry();
            let ok = self.pass(trigger, retry, &shutdown).await == Outcome::Success;
            crate::heap::trim();
            if shutdown.is_cancelled() {
                return;
            }
            self.consider_rebuild();
            let settings = self.settings.borrow().clone();
            let r = &settings.reconcile;
            let delay = next_delay(r.interval, r.jitter, self.failures, ok);
            if delay >= crate::resident::WORTH_RELEASING {
                let released = crate::resident::release_code();
                tracing::debug!(
                    bytes = released,
                    "code mappings released until their next use"
                );
            }
            self.failures = if ok {
                0
            } else {
                self.failures.saturating_add(1)
            };
            self.runtime.set_activity(format!(
                "idle; next pass in {}",
                humantime::format_duration(Duration::from_secs(delay.as_secs()))
            ));
            let deadline = tokio::time::Instant::now() + delay;
            let beat = beat_period(settings.reconcile.stall_timeout);
            trigger = loop {
                self.runtime.beat();
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    t = self.triggers.recv() => match t {
                        Some(t) => break t,
                        None => return,
                    },
                    _ = tokio::time::sleep_until(deadline) => break Trigger::Timer,
                    _ = tokio::time::sleep(beat) => {}
                }
            };
        }
    }

    /// Between passes, never inside one (so never during an import): the rebuild policy.
    fn consider_rebuild(&mut self) {
        let Some(watch) = self.rebuild.as_mut() else {
            return;
        };
        let settings = self.settings.borrow().clone();
        let started = crate::state::with_store(&self.store, |s| {
            crate::rebuild_policy::after_pass(
                watch,
                s,
                &self.metrics,
                &self.runtime,
                &settings.rebuild,
            )
        });
        if started {
            self.runtime
                .set_activity("repairing the node: vespa-agent-rebuild.service stops this daemon");
        }
    }

    /// Runs one pass and records it; `retry` tries a commit that failed before.
    pub async fn pass(
        &mut self,
        trigger: Trigger,
        retry: bool,
        shutdown: &CancellationToken,
    ) -> Outcome {
        let started = Instant::now();
        let started_ms = now_ms();
        let begun = self
            .store
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .begin_pass(trigger.as_str());
        let id = match begun {
            Ok(id) => Some(id),
            Err(e) => {
                tracing::error!(error = %e, "cannot record the pass in the state store");
                None
            }
        };
        let label = id.map_or_else(String::new, |id| format!(" #{id}"));
        self.runtime
            .set_activity(format!("reconcile pass{label} ({})", trigger.as_str()));
        tracing::info!(
            pass = id,
            trigger = trigger.as_str(),
            "reconcile pass started"
        );
        let settings = self.settings.borrow().clone();
        self.runtime.set_busy(true);

        // A stop may abandon the pass at any await point. The source stage's writes run to
        // completion on the blocking pool (a revision appears whole or not at all). The apply
        // stage may stop between dachs commands (a running one is killed; its transaction rolls
        // back): every file it had installed passed `dachs val`, and the next pass compares the
        // files on disk with the state store's hashes and deploys again what differs.
        let cx = pass::PassContext {
            settings: &settings,
            runtime: &self.runtime,
            metrics: &self.metrics,
            store: &self.store,
            retry,
            debug_stall: self.debug_stall,
            reporter: &self.reporter,
            serves: self.serves,
        };
        let result = tokio::select! {
            _ = shutdown.cancelled() => None,
            r = pass::run(&cx) => Some(r),
        };
        self.runtime.set_busy(false);
        let (outcome, stage, error) = match &result {
            None => (
                Outcome::Interrupted,
                None,
                Some("stopped before the pass finished".to_owned()),
            ),
            Some(Ok(())) => (Outcome::Success, None, None),
            Some(Err(f)) => (Outcome::Failure, Some(f.stage), Some(f.message.clone())),
        };
        let finished = id.map(|id| {
            self.store
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .finish_pass(id, outcome, stage, error.as_deref())
        });
        if let Some(Err(e)) = finished {
            tracing::error!(error = %e, "cannot record the end of the pass in the state store");
        }

        let elapsed = started.elapsed();
        self.runtime.beat();
        self.metrics.pass_duration.observe(elapsed.as_secs_f64());
        match outcome {
            Outcome::Success => {
                self.metrics.passes.with_label_values(&["success"]).inc();
                self.metrics.last_success.set(now_ms() as f64 / 1000.0);
                tracing::info!(
                    pass = id,
                    seconds = elapsed.as_secs_f64(),
                    "reconcile pass succeeded"
                );
            }
            Outcome::Failure => {
                self.metrics.passes.with_label_values(&["failure"]).inc();
                tracing::error!(
                    pass = id,
                    stage,
                    error = error.as_deref(),
                    "reconcile pass failed"
                );
            }
            Outcome::Interrupted => {
                tracing::info!(pass = id, "reconcile pass stopped for shutdown");
            }
        }
        self.runtime.set_ready(outcome == Outcome::Success);
        self.runtime.set_last_pass(PassRecord {
            id: id.unwrap_or(0),
            trigger: trigger.as_str().into(),
            started_ms,
            finished_ms: Some(now_ms()),
            outcome: Some(outcome),
            stage: stage.map(Into::into),
            error,
        });
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_below_its_bound_and_varies() {
        let max = Duration::from_secs(30);
        let samples: Vec<_> = (0..200).map(|_| jitter(max)).collect();
        assert!(samples.iter().all(|d| *d < max));
        let distinct: std::collections::HashSet<_> = samples.iter().collect();
        assert!(distinct.len() > 150, "jitter repeats too often");
        assert_eq!(jitter(Duration::ZERO), Duration::ZERO);
    }

    #[test]
    fn triggers_coalesce_into_one_pending() {
        let (tx, mut rx) = Triggers::channel();
        for _ in 0..10 {
            tx.send(Trigger::Reload);
        }
        assert_eq!(rx.try_recv().unwrap(), Trigger::Reload);
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn backoff_doubles_from_five_seconds_up_to_the_interval_its_second_half_random() {
        let i = Duration::from_secs(300);
        let none = Duration::ZERO;
        assert_eq!(next_delay(i, none, 0, true), i);
        let secs = |s: u64| Duration::from_secs(s);
        // (failures before this failed pass, the backoff it starts)
        for (before, base) in [
            (0, secs(5)),
            (1, secs(10)),
            (3, secs(40)),
            (9, i),
            (u32::MAX, i),
        ] {
            let d: Vec<Duration> = (0..200)
                .map(|_| next_delay(i, secs(30), before, false))
                .collect();
            assert!(
                d.iter().all(|d| *d >= base / 2 && *d < base),
                "{before}: {d:?}"
            );
            // Spread over the whole half, not bunched: a fleet's retries do not come in step.
            let (lo, hi) = (d.iter().min().unwrap(), d.iter().max().unwrap());
            assert!(*hi - *lo > base / 4, "{before}: {lo:?}..{hi:?}");
        }
        // After a success: the interval plus up to the configured jitter.
        for _ in 0..100 {
            let d = next_delay(i, secs(30), 0, true);
            assert!(d >= i && d < i + secs(30));
        }
    }

    #[test]
    fn the_first_success_after_failures_waits_anywhere_in_an_interval() {
        let i = Duration::from_secs(60);
        let d: Vec<Duration> = (0..400)
            .map(|_| next_delay(i, Duration::from_secs(6), 4, true))
            .collect();
        assert!(d.iter().all(|d| *d >= i / 2 && *d < i * 3 / 2), "{d:?}");
        // Every tenth of the range is hit: the fleet's phases spread over a whole interval.
        let mut tenths = [0u32; 10];
        for d in &d {
            tenths[((*d - i / 2).as_secs_f64() / 6.0) as usize] += 1;
        }
        assert!(tenths.iter().all(|&n| n > 10), "{tenths:?}");
    }

    #[test]
    fn beat_period_is_bounded() {
        assert_eq!(
            beat_period(Duration::from_secs(1)),
            Duration::from_millis(250)
        );
        assert_eq!(
            beat_period(Duration::from_millis(10)),
            Duration::from_millis(100)
        );
        assert_eq!(
            beat_period(Duration::from_secs(3600)),
            Duration::from_secs(10)
        );
    }
}
