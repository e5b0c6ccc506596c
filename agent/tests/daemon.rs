//! `vespa-agent run` as systemd and an operator see it: the notify protocol, signals, the HTTP
//! endpoints, and what happens with bad configuration or a bad state store.

use std::time::{Duration, Instant};

use harness::*;

fn unreachable_dachs() -> String {
    format!("http://127.0.0.1:{}", closed_port())
}

#[test]
fn notify_sequence_ready_watchdog_reloading_stopping() {
    let home = Home::new(&unreachable_dachs(), "");
    let notify = NotifySocket::bind(home.dir.path());
    let mut agent = Agent::start(&home, |c| {
        c.env("NOTIFY_SOCKET", &notify.path)
            .env("WATCHDOG_USEC", "400000");
    });
    let second = Duration::from_secs(5);

    let ready = notify.wait_for("READY=1", 0, second).expect("READY=1");
    assert!(
        notify.messages()[ready].1.contains("STATUS="),
        "READY carries a STATUS line"
    );
    let wd = notify
        .wait_for("WATCHDOG=1", ready, second)
        .expect("WATCHDOG=1 after READY");
    notify
        .wait_for("WATCHDOG=1", wd + 1, second)
        .expect("the watchdog is fed repeatedly");

    let before = notify.messages().len();
    agent.signal(libc::SIGHUP);
    let reloading = notify
        .wait_for("RELOADING=1", before, second)
        .expect("RELOADING=1");
    assert!(
        notify.messages()[reloading].1.contains("MONOTONIC_USEC="),
        "RELOADING=1 comes with MONOTONIC_USEC: {:?}",
        notify.messages()[reloading]
    );
    notify
        .wait_for("READY=1", reloading + 1, second)
        .expect("READY=1 after the reload");

    let before = notify.messages().len();
    let t = Instant::now();
    agent.signal(libc::SIGTERM);
    notify
        .wait_for("STOPPING=1", before, second)
        .expect("STOPPING=1");
    let status = agent.wait(second).expect("exits within 5 s of SIGTERM");
    assert!(status.success(), "SIGTERM exits 0: {status:?}");
    assert!(t.elapsed() < second);
    // Nothing is sent after STOPPING.
    let msgs = notify.messages();
    let stop = msgs
        .iter()
        .position(|(_, m)| m.contains("STOPPING=1"))
        .unwrap();
    assert!(msgs[stop + 1..].iter().all(|(_, m)| !m.contains("READY=1")));
}

#[test]
fn sighup_applies_a_valid_change_and_keeps_the_old_config_when_broken() {
    let home = Home::new(&unreachable_dachs(), "");
    let mut agent = Agent::start(&home, |_| {});
    let status = || {
        get(&home.url("/status"))
            .map(|(_, b)| serde_json::from_str::<serde_json::Value>(&b).unwrap())
    };
    let first = eventually("/status", Duration::from_secs(5), status);
    let old_url = first["dachs_url"].as_str().unwrap().to_owned();

    // A valid drop-in takes effect.
    let new_url = unreachable_dachs();
    home.write(
        "etc/agent.d/50-dachs.toml",
        &format!("[dachs]\nurl = \"{new_url}\"\n"),
    );
    agent.signal(libc::SIGHUP);
    eventually("the new dachs.url", Duration::from_secs(5), || {
        status().filter(|s| s["dachs_url"] == new_url.as_str())
    });
    assert_ne!(old_url, new_url);
    // Its pass done: a reload that arrived during a pass would coalesce into the follow-up one.
    eventually("the reload's pass", Duration::from_secs(5), || {
        status().filter(|s| {
            s["last_pass"]["trigger"] == "reload" && !s["last_pass"]["finished_ms"].is_null()
        })
    });
    let reload_pass = status().unwrap()["last_pass"]["id"].as_i64().unwrap();

    // A broken drop-in is rejected: the previous settings stay, the agent keeps running, and a
    // pass is still triggered.
    let bad = home.write(
        "etc/agent.d/60-broken.toml",
        "[reconcile]\ninterval = \"1s\"\n",
    );
    agent.signal(libc::SIGHUP);
    let s = eventually("the rejection", Duration::from_secs(5), || {
        status().filter(|s| !s["last_reload_error"].is_null())
    });
    let err = s["last_reload_error"].as_str().unwrap();
    assert!(err.contains(&format!("{}:2:", bad.display())), "{err}");
    assert!(err.contains("reconcile.interval"), "{err}");
    assert_eq!(s["dachs_url"], new_url.as_str());
    eventually(
        "a pass triggered by the reload",
        Duration::from_secs(5),
        || {
            status().filter(|s| {
                s["last_pass"]["trigger"] == "reload"
                    && s["last_pass"]["id"].as_i64() > Some(reload_pass)
            })
        },
    );
    let (_, m) = get(&home.url("/metrics")).unwrap();
    assert_eq!(
        metric(&m, "vespa_agent_config_reloads_total{result=\"success\"}"),
        Some(1.0)
    );
    assert_eq!(
        metric(&m, "vespa_agent_config_reloads_total{result=\"failure\"}"),
        Some(1.0)
    );
    assert_eq!(
        metric(&m, "vespa_agent_config_last_reload_successful"),
        Some(0.0)
    );
    assert!(agent.child.try_wait().unwrap().is_none(), "still running");
    assert!(
        agent.log().contains("configuration reload rejected"),
        "{}",
        agent.log()
    );

    agent.signal(libc::SIGTERM);
    assert!(agent.wait(Duration::from_secs(5)).unwrap().success());
}

#[test]
fn sigterm_during_a_stuck_pass_exits_zero_within_five_seconds() {
    let home = Home::new(&unreachable_dachs(), "");
    let notify = NotifySocket::bind(home.dir.path());
    let mut agent = Agent::start(&home, |c| {
        c.env("NOTIFY_SOCKET", &notify.path)
            .env("VESPA_AGENT_DEBUG_STALL", "10m");
    });
    notify
        .wait_for("READY=1", 0, Duration::from_secs(5))
        .expect("READY");
    eventually("the pass to be running", Duration::from_secs(5), || {
        get(&home.url("/status")).filter(|(_, b)| b.contains("stalled on purpose"))
    });
    let t = Instant::now();
    agent.signal(libc::SIGTERM);
    let status = agent
        .wait(Duration::from_secs(5))
        .expect("exits within 5 s");
    assert!(status.success(), "{status:?}");
    assert!(t.elapsed() < Duration::from_secs(5));

    let out = home.output(&["status", "--json"]);
    let s: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(s["last_pass"]["outcome"], "interrupted", "{}", out.stdout);
}

#[test]
fn sigint_stops_like_sigterm() {
    let home = Home::new(&unreachable_dachs(), "");
    let mut agent = Agent::start(&home, |_| {});
    eventually("/healthz", Duration::from_secs(5), || {
        get(&home.url("/healthz"))
    });
    agent.signal(libc::SIGINT);
    assert!(agent.wait(Duration::from_secs(5)).unwrap().success());
}

#[test]
fn a_stuck_loop_starves_the_watchdog_and_fails_healthz() {
    let home = Home::new(
        &unreachable_dachs(),
        "\n[reconcile]\nstall-timeout = \"1s\"\n",
    );
    let notify = NotifySocket::bind(home.dir.path());
    let _agent = Agent::start(&home, |c| {
        c.env("NOTIFY_SOCKET", &notify.path)
            .env("WATCHDOG_USEC", "200000")
            .env("VESPA_AGENT_DEBUG_STALL", "4s");
    });
    notify
        .wait_for("READY=1", 0, Duration::from_secs(5))
        .expect("READY");

    // The first pass hangs for 4 s: after stall-timeout (1 s) /healthz fails with a reason and
    // the watchdog is no longer fed.
    let (code, body) = eventually("/healthz to fail", Duration::from_secs(4), || {
        get(&home.url("/healthz")).filter(|(c, _)| *c == 503)
    });
    assert_eq!(code, 503);
    assert!(body.contains("stall-timeout"), "{body}");
    let starved_at = Instant::now();
    let n = notify.messages().len();
    std::thread::sleep(Duration::from_millis(1200));
    let fed: Vec<_> = notify.messages()[n..]
        .iter()
        .filter(|(t, m)| m.contains("WATCHDOG=1") && *t > starved_at)
        .cloned()
        .collect();
    assert!(
        fed.is_empty(),
        "watchdog fed while the loop was stuck: {fed:?}"
    );

    // When the pass moves on, the loop is alive again.
    eventually("/healthz to recover", Duration::from_secs(6), || {
        get(&home.url("/healthz")).filter(|(c, _)| *c == 200)
    });
    let n = notify.messages().len();
    notify
        .wait_for("WATCHDOG=1", n, Duration::from_secs(2))
        .expect("the watchdog is fed again");
}

#[test]
fn readyz_is_503_with_a_reason_until_a_pass_succeeds() {
    let dachs = unreachable_dachs();
    let home = Home::new(&dachs, "");
    let _agent = Agent::start(&home, |_| {});
    let (code, body) = eventually("a failed first pass", Duration::from_secs(10), || {
        get(&home.url("/readyz")).filter(|(_, b)| b.contains("DaCHS does not answer ADQL"))
    });
    assert_eq!(code, 503);
    assert!(
        body.contains(&dachs),
        "the reason names the DaCHS URL: {body}"
    );
    let (_, m) = get(&home.url("/metrics")).unwrap();
    assert_eq!(metric(&m, "vespa_agent_dachs_up"), Some(0.0));
    assert_eq!(
        metric(&m, "vespa_agent_reconcile_passes_total{result=\"failure\"}"),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &m,
            "vespa_agent_reconcile_errors_total{kind=\"unreachable\",stage=\"health\"}"
        ),
        Some(1.0)
    );

    let out = home.output(&["status"]);
    assert_eq!(out.code(), 0, "{out:?}");
    assert!(out.stdout.contains("not ready"), "{}", out.stdout);
    assert!(
        out.stdout.contains("last error:   stage health"),
        "{}",
        out.stdout
    );
}

#[test]
fn metrics_pass_promtool() {
    let Ok(promtool) = which("promtool") else {
        return missing("promtool (Debian package prometheus)");
    };
    let home = Home::new(&unreachable_dachs(), "");
    let _agent = Agent::start(&home, |_| {});
    let (code, body) = eventually("/metrics after a pass", Duration::from_secs(10), || {
        get(&home.url("/metrics"))
            .filter(|(_, b)| b.contains("vespa_agent_reconcile_passes_total{result=\"failure\"} 1"))
    });
    assert_eq!(code, 200);
    for series in [
        "vespa_agent_build_info{",
        "process_resident_memory_bytes",
        "process_open_fds",
        "vespa_agent_reconcile_pass_duration_seconds_bucket",
        "vespa_agent_reconcile_heartbeat_timestamp_seconds",
    ] {
        assert!(body.contains(series), "{series} missing:\n{body}");
    }
    let mut child = std::process::Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics: {:?}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn which(name: &str) -> Result<std::path::PathBuf, ()> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or(())
}

#[test]
fn a_second_agent_on_the_same_state_is_refused() {
    let home = Home::new(&unreachable_dachs(), "");
    let _agent = Agent::start(&home, |_| {});
    eventually("the first agent", Duration::from_secs(5), || {
        get(&home.url("/healthz"))
    });
    // Same state directory, other port.
    home.write(
        "etc/agent.d/90-port.toml",
        &format!("[http]\nlisten = \"127.0.0.1:{}\"\n", free_port()),
    );
    let out = home.output(&["run"]);
    assert_eq!(out.code(), 69, "{out:?}");
    assert!(out.stderr.contains("another vespa-agent"), "{}", out.stderr);
}

#[test]
fn a_busy_listen_address_exits_69() {
    let home = Home::new(&unreachable_dachs(), "");
    let _holder = std::net::TcpListener::bind(("127.0.0.1", home.port)).unwrap();
    let out = home.output(&["run"]);
    assert_eq!(out.code(), 69, "{out:?}");
    assert!(out.stderr.contains("http.listen"), "{}", out.stderr);
}

#[test]
fn a_damaged_state_store_stops_the_agent_and_is_left_untouched() {
    let home = Home::new(&unreachable_dachs(), "");
    let junk = b"SQLite format 2\0 definitely not a database".repeat(64);
    let db = home.write("state/state.db", "");
    std::fs::write(&db, &junk).unwrap();
    let out = home.output(&["run"]);
    assert_eq!(out.code(), 65, "{out:?}");
    assert!(
        out.stderr.contains("damaged") && out.stderr.contains("move it aside"),
        "{}",
        out.stderr
    );
    assert_eq!(std::fs::read(&db).unwrap(), junk);
    let st = home.output(&["status"]);
    assert!(st.stdout.contains("damaged"), "{st:?}");
}
