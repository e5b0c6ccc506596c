//! Talking to systemd through the notify socket (`Type=notify`). Outside systemd (no
//! `NOTIFY_SOCKET`) every call does nothing, so the same code runs in a shell, a test or a unit.

use std::time::Duration;

use sd_notify::NotifyState;

/// Failures to notify are logged and otherwise ignored: a lost STATUS line must never stop a
/// deploy, and systemd itself notices a missing READY or WATCHDOG.
fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "cannot notify systemd");
    }
}

pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// Tells systemd a reload started. `MONOTONIC_USEC` lets it match this message to the
/// `systemctl reload` that caused it (systemd >= 253 requires it for notify-reload; older
/// versions ignore it).
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(_) => send(&[NotifyState::Reloading]),
    }
}

pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

/// One human line of what the agent is doing, shown by `systemctl status`.
pub fn status(line: &str) {
    send(&[NotifyState::Status(line)]);
}

pub fn watchdog() {
    send(&[NotifyState::Watchdog]);
}

/// How often to feed the watchdog: half of `WatchdogSec=`, as sd_watchdog_enabled(3) advises,
/// or `None` when the unit has no watchdog.
pub fn watchdog_period() -> Option<Duration> {
    sd_notify::watchdog_enabled().map(|limit| limit / 2)
}
