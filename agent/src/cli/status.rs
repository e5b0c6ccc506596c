//! `vespa-agent status`: what the state store remembers, and what the running daemon reports on
//! its `/status` endpoint. Each half is shown even when the other is unavailable.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::process::ExitCode;
use std::time::{Duration, UNIX_EPOCH};

use serde_json::json;

use crate::config::Settings;
use crate::runtime::StatusReport;
use crate::state::{PassRecord, StateReader};

/// LSB's "program is not running", as `systemctl status` uses it.
const NOT_RUNNING: u8 = 3;

/// Where to reach the daemon: a wildcard listen address is reached on loopback.
fn local_addr(listen: SocketAddr) -> SocketAddr {
    match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), listen.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv6Addr::LOCALHOST.into(), listen.port())
        }
        _ => listen,
    }
}

/// The daemon's report: from its control socket when this user may open it (the HTTP listener
/// may want TLS and basic auth, `http.web-config-file`), else from `/status`.
fn fetch_daemon(settings: &Settings) -> Result<StatusReport, String> {
    let url = format!("http://{}/status", local_addr(settings.http_listen));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        if let Ok(report) = crate::control::request_status(&settings.state_dir).await {
            return Ok(report);
        }
        if let Some(file) = &settings.web_config_file {
            return Err(format!(
                "the control socket {} cannot be opened by this user, and http.listen asks \
                 for what {} sets (TLS, basic auth); run as root or the agent's user",
                crate::control::socket_path(&settings.state_dir).display(),
                file.display()
            ));
        }
        let client = crate::outbound::client(Duration::from_secs(3), Duration::from_secs(3))?;
        let addr = local_addr(settings.http_listen);
        let resp = client.get(&url).send().await.map_err(|e| {
            if e.is_connect() {
                // What an operator needs, not the client's chain of errors.
                format!(
                    "nothing listens on {addr}; start it with `systemctl start vespa-agent` \
                     (`journalctl -u vespa-agent` says why it stopped)"
                )
            } else if e.is_timeout() {
                format!("{url} did not answer within 3 s: the daemon is stuck or overloaded")
            } else {
                format!("{url}: {}", crate::error_chain(&e))
            }
        })?;
        resp.json::<StatusReport>()
            .await
            .map_err(|e| format!("{url}: unexpected answer: {e}"))
    })
}

/// Counts each table over TAP now: what `status` shows when no daemon reports it.
fn count_now(settings: &Settings, tables: Vec<String>) -> Vec<crate::runtime::TableHealth> {
    if tables.is_empty() {
        return Vec::new();
    }
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return Vec::new();
    };
    let d = &settings.dachs;
    let tap = crate::dachs::tap::TapClient::new(&d.url, d.query_timeout);
    rt.block_on(async {
        let mut out = Vec::new();
        for t in &tables {
            out.push(crate::reconcile::pass::count_rows(&tap, t).await);
        }
        out
    })
}

fn when(ms: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

fn describe_pass(p: &PassRecord) -> String {
    let outcome = p
        .outcome
        .map_or("running".to_owned(), |o| format!("{o:?}").to_lowercase());
    let took = p
        .duration()
        .map(|d| format!(", took {:.1} s", d.as_secs_f64()))
        .unwrap_or_default();
    format!(
        "#{} {outcome} ({}) at {}{took}",
        p.id,
        p.trigger,
        when(p.started_ms)
    )
}

pub fn show(settings: &Settings, as_json: bool) -> anyhow::Result<ExitCode> {
    let daemon = fetch_daemon(settings);
    let store = StateReader::open(&settings.state_dir);
    let (last, last_success, store_error) = match &store {
        Ok(Some(r)) => (r.last_pass()?, r.last_success()?, None),
        Ok(None) => (
            None,
            None,
            Some("no state store yet: the agent has not run on this node".to_owned()),
        ),
        Err(e) => (None, None, Some(e.to_string())),
    };
    let (desired, applied, desired_failure) = match &store {
        Ok(Some(r)) => {
            let desired = r.meta(crate::state::DESIRED)?;
            let failure = match &desired {
                Some(d) => r
                    .commit(d)?
                    .filter(|c| c.outcome.as_deref() == Some("failed")),
                None => None,
            };
            (desired, r.meta(crate::state::APPLIED)?, failure)
        }
        _ => (None, None, None),
    };
    let resources = match &store {
        Ok(Some(r)) => r.resources()?,
        _ => Vec::new(),
    };
    let granules = match &store {
        Ok(Some(r)) => r.granule_counts()?,
        _ => Vec::new(),
    };
    let rebuilds = match &store {
        Ok(Some(r)) => r.rebuilds()?,
        _ => Vec::new(),
    };
    let regression = match &store {
        Ok(Some(r)) => r.meta_with_prefix(&crate::apply::regression::result_key(""))?,
        _ => Vec::new(),
    };
    // Each table as the daemon's last pass saw it; with the daemon down, asked now.
    let tables = match &daemon {
        Ok(d) => d.tables.clone(),
        Err(_) => count_now(
            settings,
            resources.iter().flat_map(|r| r.tables.clone()).collect(),
        ),
    };
    let code = if daemon.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(NOT_RUNNING)
    };

    if as_json {
        let out = json!({
            "daemon": daemon.as_ref().ok(),
            "daemon_error": daemon.as_ref().err(),
            "state_dir": settings.state_dir,
            "last_pass": last,
            "last_success": last_success,
            "state_error": store_error,
            "desired_revision": desired,
            "applied_revision": applied,
            "desired_revision_failure": desired_failure,
            "resources": resources,
            "tables": tables,
            "granules": granules.iter().cloned().collect::<std::collections::BTreeMap<_, _>>(),
            "rebuilds": rebuilds,
            "regression_tests": regression.iter().cloned().collect::<std::collections::BTreeMap<_, _>>(),
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(code);
    }

    println!("vespa-agent {}", env!("CARGO_PKG_VERSION"));
    match &daemon {
        Ok(d) => {
            let up = humantime::format_duration(Duration::from_secs(d.uptime_seconds as u64));
            let ready = if d.ready { "ready" } else { "not ready" };
            println!("daemon:       running, pid {}, up {up}, {ready}", d.pid);
            for why in &d.not_ready_because {
                println!("not ready:    {why}");
            }
            println!("activity:     {}", d.activity);
            if let Some(e) = &d.dachs_error {
                println!("dachs:        {} FAILING: {e}", d.dachs_url);
            } else {
                println!("dachs:        {}", d.dachs_url);
            }
            if let Some(e) = &d.last_reload_error {
                println!(
                    "config:       last reload REJECTED (previous configuration in force): {e}"
                );
            }
            if !d.drifted_resources.is_empty() {
                println!(
                    "drift:        {} (managed files edited on the node; dachs.drift = \"report\" leaves them)",
                    d.drifted_resources.join(", ")
                );
            }
            if !d.restart_needed_for.is_empty() {
                println!(
                    "config:       restart needed for {}",
                    d.restart_needed_for.join(", ")
                );
            }
        }
        Err(e) => println!("daemon:       not running ({e})"),
    }
    println!(
        "state:        {}",
        crate::state::db_path(&settings.state_dir).display()
    );
    if let Some(e) = &store_error {
        println!("              {e}");
    }
    if let Some(url) = &settings.source.url {
        println!(
            "source:       {url} ({})",
            settings.source.follow.describe()
        );
    }
    match (&applied, &desired) {
        (Some(a), Some(d)) if a == d => println!("revision:     {a} (applied = desired)"),
        (a, d) => {
            println!("applied:      {}", a.as_deref().unwrap_or("none"));
            println!("desired:      {}", d.as_deref().unwrap_or("none"));
        }
    }
    if let Some(f) = &desired_failure {
        println!(
            "desired commit FAILED at {}: {} (not retried until a newer commit or `vespa-agent sync --retry`)",
            f.stage.as_deref().unwrap_or("?"),
            f.error.as_deref().unwrap_or("")
        );
    }
    for r in &resources {
        let published = if r.published {
            "published"
        } else {
            "not published"
        };
        println!(
            "resource:     {} ({}, {published}; tables {}) from {}",
            r.dir,
            r.rd_id,
            if r.tables.is_empty() {
                "none".to_owned()
            } else {
                r.tables.join(", ")
            },
            &r.sha[..r.sha.len().min(12)]
        );
    }
    for t in &tables {
        match (t.rows, &t.error) {
            (Some(n), _) => println!(
                "table:        {}: {n} rows, TAP answered in {:.2} s",
                t.table, t.seconds
            ),
            (None, e) => println!(
                "table:        {}: FAILING over TAP: {}",
                t.table,
                e.as_deref().unwrap_or("no answer")
            ),
        }
    }
    for (dir, result) in &regression {
        println!("regression:   {dir}: {result}");
    }
    if !granules.is_empty() {
        let counts: Vec<String> = granules.iter().map(|(s, n)| format!("{n} {s}")).collect();
        println!("granules:     {}", counts.join(", "));
    }
    let automatic = settings.rebuild.automatic.as_str();
    let dry = if settings.rebuild.dry_run {
        " (dry run)"
    } else {
        ""
    };
    let unhealthy = daemon
        .as_ref()
        .ok()
        .and_then(|d| d.rebuild.unhealthy_since_unix_ms)
        .map(|t| {
            let ms = (crate::state::now_ms() - t).max(0) as u64;
            format!(
                "; DaCHS unhealthy for {}",
                humantime::format_duration(Duration::from_secs(ms / 1000))
            )
        })
        .unwrap_or_default();
    println!("rebuild:      automatic = {automatic}{dry}{unhealthy}");
    if let Some(w) = daemon.as_ref().ok().and_then(|d| d.web_config.as_ref()) {
        println!(
            "listener:     {}{}, basic auth for {} user(s), from {}",
            if w.tls { "TLS" } else { "plain HTTP" },
            if w.client_certificates {
                " with client certificates"
            } else {
                ""
            },
            w.basic_auth_users,
            w.file.display()
        );
        if let Some(e) = &w.error {
            println!("              the file on disk is REFUSED, the last good one serves: {e}");
        }
    }
    if let Some(r) = rebuilds.last() {
        println!(
            "last rebuild: {} {} {}: {}",
            when(r.at_ms),
            r.level,
            r.action,
            r.reason
        );
    }
    match &last {
        Some(p) => {
            println!("last pass:    {}", describe_pass(p));
            if let (Some(stage), Some(err)) = (&p.stage, &p.error) {
                println!("last error:   stage {stage}: {err}");
            }
        }
        None if store_error.is_none() => println!("last pass:    none yet"),
        None => {}
    }
    if let Some(p) = last_success.filter(|s| Some(s.id) != last.as_ref().map(|l| l.id)) {
        println!("last success: {}", describe_pass(&p));
    }
    Ok(code)
}

/// `status --granule`: where a granule file came from and whether DaCHS has it. A granule_uid
/// is looked up over TAP (the RD's `source_file` column names its file), a path in the state
/// store.
pub fn show_granule(settings: &Settings, what: &str, as_json: bool) -> anyhow::Result<ExitCode> {
    let Some(reader) = StateReader::open(&settings.state_dir)? else {
        anyhow::bail!("no state store yet: the agent has not run on this node");
    };
    let mut found = reader.find_granules(what)?;
    if found.is_empty()
        && !what.is_empty()
        && what
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.:".contains(c))
    {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let tap =
            crate::dachs::tap::TapClient::new(&settings.dachs.url, settings.dachs.query_timeout);
        for res in reader.resources()? {
            for table in &res.tables {
                let q = format!("SELECT source_file FROM {table} WHERE granule_uid = '{what}'");
                let Ok(answer) = rt.block_on(tap.query(&q)) else {
                    continue;
                };
                for row in &answer.rows {
                    let Some(file) = row.first() else { continue };
                    let name = file.rsplit('/').next().unwrap_or(file);
                    found.extend(reader.find_granules(name)?.into_iter().filter(|g| {
                        file.starts_with(&format!("{}/", g.resource))
                            && file.ends_with(&format!("/{}", g.path))
                    }));
                }
            }
        }
    }
    if as_json {
        println!("{}", serde_json::to_string_pretty(&found)?);
    } else {
        for g in &found {
            println!("granule:      {}/{}/{}", g.resource, g.collection, g.path);
            println!("source:       {}", g.source_url);
            println!(
                "size:         {} bytes, sha256 {}",
                g.size,
                if g.sha256.is_empty() {
                    "(not fetched)"
                } else {
                    &g.sha256
                }
            );
            println!(
                "commit:       {} (the configuration that brought it)",
                g.sha
            );
            println!("fetched:      {}", when(g.fetched_ms));
            match &g.error {
                Some(e) => println!("state:        {}: {e}", g.state),
                None => println!("state:        {}", g.state),
            }
        }
    }
    if found.is_empty() {
        eprintln!("vespa-agent: no granule matches `{what}`");
        return Ok(ExitCode::from(crate::exit::FAILURE));
    }
    Ok(ExitCode::SUCCESS)
}

/// `status --digest`: the applied revision and every deployed table read whole over TAP.
pub fn show_digest(settings: &Settings, as_json: bool) -> anyhow::Result<ExitCode> {
    let Some(store) = StateReader::open(&settings.state_dir)? else {
        anyhow::bail!("no state store yet: the agent has not run on this node");
    };
    let revision = store.meta(crate::state::APPLIED)?;
    let mut tables: Vec<String> = store
        .resources()?
        .into_iter()
        .flat_map(|r| r.tables)
        .collect();
    tables.sort();
    let d = &settings.dachs;
    let tap = crate::dachs::tap::TapClient::new(&d.url, d.query_timeout);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let digests = rt.block_on(async {
        let mut out = Vec::new();
        for t in &tables {
            out.push(crate::digest::table(&tap, t).await?);
        }
        Ok::<_, crate::digest::DigestError>(out)
    })?;
    let digest = crate::digest::NodeDigest::new(revision, digests);
    if as_json {
        println!("{}", serde_json::to_string_pretty(&digest)?);
    } else {
        print!("{}", digest.lines());
    }
    Ok(ExitCode::SUCCESS)
}
