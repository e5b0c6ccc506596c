//! The reconcile loop: one pass at a time, started by a trigger, then an idle wait with jitter.
//!
//! Later stages (fetch, validate, apply, import) plug into [`pass`]; the loop around them stays:
//! triggers that arrive during a pass coalesce into one follow-up pass, the heartbeat shows the
//! loop is alive, and a stop request ends the pass at a safe point.

pub mod pass;

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
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
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Start => "start",
            Trigger::Timer => "timer",
            Trigger::Reload => "reload",
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
    pub store: StateStore,
    pub runtime: Arc<Runtime>,
    pub metrics: Arc<Metrics>,
    pub settings: watch::Receiver<Arc<Settings>>,
    pub triggers: mpsc::Receiver<Trigger>,
    /// Test hook (`VESPA_AGENT_DEBUG_STALL`): every pass hangs this long without a heartbeat,
    /// as a stuck stage would.
    pub debug_stall: Option<Duration>,
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
            self.pass(trigger, &shutdown).await;
            if shutdown.is_cancelled() {
                return;
            }
            let settings = self.settings.borrow().clone();
            let delay = settings.reconcile.interval + jitter(settings.reconcile.jitter);
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

    async fn pass(&mut self, trigger: Trigger, shutdown: &CancellationToken) {
        let started = Instant::now();
        let started_ms = now_ms();
        let id = match self.store.begin_pass(trigger.as_str()) {
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

        // Every stage so far is safe to abandon at any await point (it only reads); a stage
        // that writes must shield its critical section from this cancellation itself.
        let result = tokio::select! {
            _ = shutdown.cancelled() => None,
            r = pass::run(&settings, &self.runtime, &self.metrics, self.debug_stall) => Some(r),
        };
        let (outcome, stage, error) = match &result {
            None => (
                Outcome::Interrupted,
                None,
                Some("stopped before the pass finished".to_owned()),
            ),
            Some(Ok(())) => (Outcome::Success, None, None),
            Some(Err(f)) => (Outcome::Failure, Some(f.stage), Some(f.message.clone())),
        };
        if let Some(id) = id
            && let Err(e) = self.store.finish_pass(id, outcome, stage, error.as_deref())
        {
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
