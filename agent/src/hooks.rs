//! `POST /hooks/gitlab`: GitLab push and tag events trigger a pass without waiting for the poll.
//!
//! The request must carry the configured secret in `X-Gitlab-Token` (compared in constant
//! time); events for refs the agent does not follow are acknowledged and ignored. A flood cannot
//! make the agent hammer GitLab: accepted events start at most one pass per `MIN_SPACING`, and
//! an event inside that window is not lost but deferred to its end.

use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::config::{Follow, Secret};
use crate::reconcile::{Trigger, Triggers};

/// The shortest time between two webhook-triggered passes.
pub const MIN_SPACING: Duration = Duration::from_secs(5);

/// The largest request body read; GitLab push events with many commits stay well below.
pub const MAX_BODY: usize = 1 << 20;

#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// No webhook secret is configured: the endpoint is off.
    Disabled,
    Unauthorized,
    BadRequest(String),
    /// A valid event for a ref the agent does not follow.
    Ignored(String),
    /// A pass was triggered now.
    Triggered,
    /// A pass is triggered at the end of the rate-limit window.
    Deferred,
}

#[derive(Deserialize)]
struct Event {
    object_kind: Option<String>,
    #[serde(rename = "ref")]
    git_ref: Option<String>,
}

pub struct Gate {
    secret: RwLock<Option<Secret>>,
    follow: RwLock<Follow>,
    triggers: Triggers,
    /// When the last pass was triggered, and whether one is already deferred.
    window: Mutex<(Option<Instant>, bool)>,
    spacing: Duration,
}

/// Equal-time comparison, so the response time does not reveal how much of a guess was right.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0xff);
        diff |= usize::from(x ^ y);
    }
    diff == 0
}

fn read_lock<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|e| e.into_inner())
}

impl Gate {
    pub fn new(
        secret: Option<Secret>,
        follow: Follow,
        triggers: Triggers,
        spacing: Duration,
    ) -> Gate {
        Gate {
            secret: RwLock::new(secret),
            follow: RwLock::new(follow),
            triggers,
            window: Mutex::new((None, false)),
            spacing,
        }
    }

    /// After a configuration reload.
    pub fn update(&self, secret: Option<Secret>, follow: Follow) {
        *self.secret.write().unwrap_or_else(|e| e.into_inner()) = secret;
        *self.follow.write().unwrap_or_else(|e| e.into_inner()) = follow;
    }

    /// Judges one request. Must be called inside a tokio runtime (a deferred trigger is a task).
    pub fn handle(self: &std::sync::Arc<Self>, token: Option<&[u8]>, body: &[u8]) -> Verdict {
        let authorized = match &*read_lock(&self.secret) {
            None => return Verdict::Disabled,
            Some(secret) => token.is_some_and(|t| constant_time_eq(t, secret.expose().as_bytes())),
        };
        if !authorized {
            return Verdict::Unauthorized;
        }
        let event: Event = match serde_json::from_slice(body) {
            Ok(e) => e,
            Err(e) => return Verdict::BadRequest(format!("not a GitLab event: {e}")),
        };
        let (Some(kind), Some(git_ref)) = (event.object_kind, event.git_ref) else {
            return Verdict::Ignored("not a push or tag event".into());
        };
        let wanted = match &*read_lock(&self.follow) {
            Follow::Branch(b) | Follow::Commit { branch: b, .. } => {
                ("push", format!("refs/heads/{b}"))
            }
            Follow::Tag(t) => ("tag_push", format!("refs/tags/{t}")),
        };
        if kind != wanted.0 || git_ref != wanted.1 {
            return Verdict::Ignored(format!(
                "{kind} event for {git_ref}; following {}",
                wanted.1
            ));
        }
        self.admit()
    }

    fn admit(self: &std::sync::Arc<Self>) -> Verdict {
        let mut w = self.window.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        match w.0 {
            Some(last) if now.duration_since(last) < self.spacing => {
                if !w.1 {
                    w.1 = true;
                    let wait = self.spacing - now.duration_since(last);
                    let gate = self.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(wait).await;
                        let mut w = gate.window.lock().unwrap_or_else(|e| e.into_inner());
                        *w = (Some(Instant::now()), false);
                        gate.triggers.send(Trigger::Webhook);
                    });
                }
                Verdict::Deferred
            }
            _ => {
                w.0 = Some(now);
                self.triggers.send(Trigger::Webhook);
                Verdict::Triggered
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn gate(spacing: Duration) -> (Arc<Gate>, tokio::sync::mpsc::Receiver<Trigger>) {
        let (tx, rx) = Triggers::channel();
        let secret = crate::config::secret::tests_support::secret("s3cret-hook");
        (
            Arc::new(Gate::new(
                Some(secret),
                Follow::Branch("main".into()),
                tx,
                spacing,
            )),
            rx,
        )
    }

    const PUSH_MAIN: &[u8] = br#"{"object_kind":"push","ref":"refs/heads/main","after":"abc"}"#;

    #[test]
    fn constant_time_eq_is_equality() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(!constant_time_eq(b"", b"a"));
        assert!(constant_time_eq(b"", b""));
    }

    #[tokio::test]
    async fn wrong_or_missing_token_triggers_nothing() {
        let (g, mut rx) = gate(Duration::ZERO);
        assert_eq!(g.handle(None, PUSH_MAIN), Verdict::Unauthorized);
        assert_eq!(
            g.handle(Some(b"s3cret-hoo"), PUSH_MAIN),
            Verdict::Unauthorized
        );
        assert_eq!(
            g.handle(Some(b"s3cret-hook "), PUSH_MAIN),
            Verdict::Unauthorized
        );
        assert!(rx.try_recv().is_err());
    }

    #[tokio::test]
    async fn other_refs_and_kinds_are_ignored_and_bad_bodies_refused() {
        let (g, mut rx) = gate(Duration::ZERO);
        let t = Some(b"s3cret-hook".as_slice());
        for body in [
            br#"{"object_kind":"push","ref":"refs/heads/dev"}"#.as_slice(),
            br#"{"object_kind":"tag_push","ref":"refs/tags/v1"}"#,
            br#"{"object_kind":"merge_request"}"#,
            br#"{}"#,
        ] {
            assert!(
                matches!(g.handle(t, body), Verdict::Ignored(_)),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        for body in [b"".as_slice(), b"not json", b"[1,2]", br#"{"ref": 5}"#] {
            assert!(
                matches!(g.handle(t, body), Verdict::BadRequest(_)),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        assert!(rx.try_recv().is_err());
        assert_eq!(g.handle(t, PUSH_MAIN), Verdict::Triggered);
        assert_eq!(rx.try_recv().unwrap(), Trigger::Webhook);
    }

    #[tokio::test]
    async fn a_flood_gives_one_pass_now_and_one_deferred() {
        let (g, mut rx) = gate(Duration::from_millis(200));
        let t = Some(b"s3cret-hook".as_slice());
        assert_eq!(g.handle(t, PUSH_MAIN), Verdict::Triggered);
        for _ in 0..1000 {
            assert_eq!(g.handle(t, PUSH_MAIN), Verdict::Deferred);
        }
        assert_eq!(rx.try_recv().unwrap(), Trigger::Webhook);
        assert!(
            rx.try_recv().is_err(),
            "nothing more before the window ends"
        );
        tokio::time::sleep(Duration::from_millis(350)).await;
        assert_eq!(
            rx.try_recv().unwrap(),
            Trigger::Webhook,
            "the deferred event is not lost"
        );
        assert!(rx.try_recv().is_err());
    }

    #[tokio::test]
    async fn without_a_secret_the_endpoint_is_off() {
        let (tx, _rx) = Triggers::channel();
        let g = Arc::new(Gate::new(
            None,
            Follow::Branch("main".into()),
            tx,
            Duration::ZERO,
        ));
        assert_eq!(g.handle(Some(b"x"), PUSH_MAIN), Verdict::Disabled);
    }
}
