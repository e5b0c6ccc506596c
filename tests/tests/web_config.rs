//! `http.web-config-file`: the listener speaks TLS and asks for basic auth as the file of
//! Prometheus's exporters says. Real clients only: curl for every refusal, Debian's Prometheus
//! scraping with `tls_config` and `basic_auth`, promtool on what the TLS port serves. The keys
//! and certificates are made by the openssl command, the bcrypt hashes by htpasswd, as an
//! operator makes them.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use harness::prom::{Prometheus, tool};
use harness::*;

/// A CA, a server certificate for 127.0.0.1, and client certificates: two from the CA (one
/// naming prometheus.example, one other.example) and one self-signed.
struct Pki {
    dir: tempfile::TempDir,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A key and a certificate: `signer` None for a self-signed one.
fn certificate(dir: &Path, name: &str, san: &str, signer: Option<&str>) {
    let (key, crt) = (format!("{name}.key"), format!("{name}.crt"));
    let subj = format!("/CN={name}");
    let ext = format!("subjectAltName={san}");
    let mut args = vec![
        "req", "-newkey", "rsa:2048", "-nodes", "-keyout", &key, "-subj", &subj,
    ];
    args.extend(["-days", "2", "-addext", &ext, "-out", &crt]);
    match signer {
        None => args.push("-x509"),
        Some(ca) => args.extend(["-x509", "-CA", ca, "-CAkey"]),
    }
    let ca_key = signer.map(|ca| ca.replace(".crt", ".key"));
    if let Some(k) = &ca_key {
        args.push(k);
    }
    openssl(dir, &args);
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        certificate(d, "ca", "DNS:vespa-test-ca", None);
        certificate(d, "server", "IP:127.0.0.1,DNS:localhost", Some("ca.crt"));
        certificate(d, "client", "DNS:prometheus.example", Some("ca.crt"));
        certificate(d, "stranger", "DNS:other.example", Some("ca.crt"));
        certificate(d, "self", "DNS:prometheus.example", None);
        Pki { dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }
}

/// The bcrypt hash htpasswd makes (cost 10, as the exporter toolkit's documentation does).
fn bcrypt(user: &str, password: &str) -> String {
    let out = Command::new("htpasswd")
        .args(["-nbBC", "10", user, password])
        .output()
        .unwrap();
    assert!(out.status.success());
    let line = String::from_utf8(out.stdout).unwrap();
    line.trim().split_once(':').unwrap().1.to_owned()
}

/// What curl got: its exit code, the HTTP status (0 without one), the headers and the body.
struct Curl {
    exit: i32,
    status: u16,
    headers: String,
    body: String,
}

fn curl(args: &[&str]) -> Curl {
    let dir = tempfile::tempdir().unwrap();
    let headers = dir.path().join("h");
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "-o", "-", "-D"])
        .arg(&headers)
        .args(["-w", "\n%{http_code}"])
        .args(args)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    Curl {
        exit: out.status.code().unwrap_or(-1),
        status: code.trim().parse().unwrap_or(0),
        headers: std::fs::read_to_string(&headers).unwrap_or_default(),
        body: body.to_owned(),
    }
}

/// Whether this machine has what these tests use (a failure under CI).
fn tools() -> bool {
    for t in ["openssl", "htpasswd", "curl"] {
        if !have(t) {
            missing(&format!("{t} (the test command installs it)"));
            return false;
        }
    }
    true
}

/// An agent without a source, listening as `web.yml` in its configuration folder says.
fn agent_with(web_yml: &str) -> (Home, PathBuf, Agent) {
    let home = Home::new(&format!("http://127.0.0.1:{}", closed_port()), "");
    let web = home.write("etc/web.yml", web_yml);
    home.write(
        "etc/agent.d/10-web.toml",
        &format!("[http]\nweb-config-file = \"{}\"\n", web.display()),
    );
    let agent = Agent::start(&home, |_| {});
    (home, web, agent)
}

fn https(home: &Home, path: &str) -> String {
    format!("https://127.0.0.1:{}{path}", home.port)
}

fn metric(body: &str, series: &str) -> f64 {
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{series} not served"))
}

#[test]
fn tls_and_basic_auth_refuse_every_wrong_client_and_prometheus_scrapes_through_them() {
    if !tools() {
        return;
    }
    let pki = Pki::new();
    let alice = bcrypt("alice", "wonderland");
    let (home, web, agent) = agent_with(&format!(
        "# as in the exporter toolkit's docs/web-config.yml\n\
         tls_server_config:\n  cert_file: {}\n  key_file: {}\n\
         http_server_config:\n  headers:\n    X-Content-Type-Options: nosniff\n\
         basic_auth_users:\n  alice: {alice}\n",
        pki.path("server.crt"),
        pki.path("server.key")
    ));
    let ca = pki.path("ca.crt");
    let ok = |c: &Curl| c.status == 200;
    eventually("the TLS listener", Duration::from_secs(20), || {
        ok(&curl(&["--cacert", &ca, &https(&home, "/healthz")])).then_some(())
    });

    // Each refusal with its status, and nothing of the metrics in it.
    let metrics = https(&home, "/metrics");
    for (what, args, status) in [
        ("no credentials", vec!["--cacert", &ca, &metrics], 401),
        (
            "a wrong user",
            vec!["--cacert", &ca, "-u", "mallory:wonderland", &metrics],
            401,
        ),
        (
            "a wrong password",
            vec!["--cacert", &ca, "-u", "alice:looking-glass", &metrics],
            401,
        ),
        (
            "an empty password",
            vec!["--cacert", &ca, "-u", "alice:", &metrics],
            401,
        ),
    ] {
        let c = curl(&args);
        assert_eq!(c.status, status, "{what}: {}", c.body);
        assert!(!c.body.contains("vespa_agent_"), "{what}: {}", c.body);
        assert!(
            c.headers
                .to_ascii_lowercase()
                .contains("www-authenticate: basic"),
            "{what}: {}",
            c.headers
        );
    }
    // Plain HTTP to the TLS port: a 400 that says why, as Go's exporters answer.
    let c = curl(&[&format!("http://127.0.0.1:{}/metrics", home.port)]);
    assert_eq!(c.status, 400, "{}", c.body);
    assert!(
        c.body.contains("HTTP request to an HTTPS server"),
        "{}",
        c.body
    );
    // A client that does not trust the certificate stops itself.
    assert_ne!(curl(&[&metrics]).exit, 0);
    // Open without credentials: the liveness probe, and the webhook (its own token; disabled
    // here, so 404, not 401).
    assert_eq!(
        curl(&["--cacert", &ca, &https(&home, "/healthz")]).status,
        200
    );
    let hook = curl(&[
        "--cacert",
        &ca,
        "-X",
        "POST",
        "-d",
        "{}",
        &https(&home, "/hooks/gitlab"),
    ]);
    assert_eq!(hook.status, 404, "{}", hook.body);
    assert_eq!(
        curl(&["--cacert", &ca, &https(&home, "/status")]).status,
        401
    );
    assert_eq!(
        curl(&["--cacert", &ca, &https(&home, "/readyz")]).status,
        401
    );

    // The right pair: the metrics, the configured header, and promtool finds them well formed.
    let good = curl(&["--cacert", &ca, "-u", "alice:wonderland", &metrics]);
    assert_eq!(good.status, 200);
    assert!(good.headers.contains("nosniff"), "{}", good.headers);
    assert!(
        metric(
            &good.body,
            "vespa_agent_http_refused_total{reason=\"unauthorized\"}"
        ) >= 4.0
    );
    assert!(
        metric(
            &good.body,
            "vespa_agent_http_refused_total{reason=\"plain_http\"}"
        ) >= 1.0
    );
    if let Some(promtool) = tool("promtool") {
        let (valid, said) = Command::new(promtool)
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .output_with_stdin(good.body.as_bytes());
        assert!(valid, "promtool check metrics: {said}");
    }

    // A real Prometheus: with the right credentials the target is up; with a wrong password
    // it is down and says 401.
    let target = format!("127.0.0.1:{}", home.port);
    let job = |name: &str, password: &str| {
        format!(
            "  - job_name: {name}\n    scheme: https\n    tls_config:\n      ca_file: {ca}\n\
             \x20   basic_auth:\n      username: alice\n      password: {password}\n\
             \x20   static_configs:\n      - targets: ['{target}']\n"
        )
    };
    let Some(prom) = Prometheus::start(&format!(
        "global:\n  scrape_interval: 1s\nscrape_configs:\n{}{}",
        job("agent", "wonderland"),
        job("intruder", "guess")
    )) else {
        return;
    };
    eventually(
        "Prometheus to scrape over TLS",
        Duration::from_secs(60),
        || {
            let up = prom.query("up{job=\"agent\"}");
            (up.len() == 1 && up[0].1 == "1").then_some(())
        },
    );
    let built = prom.query("vespa_agent_build_info{job=\"agent\"}");
    assert_eq!(built.len(), 1, "{built:?}");
    eventually(
        "the intruder's scrape to fail",
        Duration::from_secs(30),
        || {
            prom.targets().into_iter().find(|(url, health, err)| {
                url.starts_with("https://") && health == "down" && err.contains("401")
            })
        },
    );
    assert_eq!(prom.query("up{job=\"intruder\"}")[0].1, "0");

    // The operator's `status` reads the daemon over its control socket, credentials or not.
    let out = home.output(&["status"]);
    assert!(
        out.stdout
            .contains("listener:     TLS, basic auth for 1 user(s)"),
        "{}{}",
        out.stdout,
        out.stderr
    );

    // A broken file: the last good one stays in force, said in status and counted.
    std::fs::write(
        &web,
        format!(
            "tls_server_config:\n  cert_file: {}\n  key_file: {}\nbasic_auth_users:\n  alice: not-a-hash\n",
            pki.path("server.crt"),
            pki.path("server.key")
        ),
    )
    .unwrap();
    let status = curl(&[
        "--cacert",
        &ca,
        "-u",
        "alice:wonderland",
        &https(&home, "/status"),
    ]);
    assert_eq!(status.status, 200, "the last good file still serves");
    let v: serde_json::Value = serde_json::from_str(&status.body).unwrap();
    let err = v["web_config"]["error"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        err.contains("web.yml:5") && err.contains("not a bcrypt hash"),
        "{}",
        status.body
    );
    assert!(
        !err.contains("not-a-hash"),
        "the value is not echoed: {err}"
    );
    assert!(
        agent.log().contains("web configuration refused"),
        "{}",
        agent.log()
    );
    let m = curl(&["--cacert", &ca, "-u", "alice:wonderland", &metrics]).body;
    assert_eq!(
        metric(&m, "vespa_agent_web_config_last_reload_successful"),
        0.0
    );
    assert_eq!(
        metric(
            &m,
            "vespa_agent_web_config_reloads_total{result=\"failure\"}"
        ),
        1.0
    );
    let out = home.output(&["status"]);
    assert!(out.stdout.contains("REFUSED"), "{}", out.stdout);

    // Mended, with another user: read at the next request, alice is out and bob is in.
    std::fs::write(
        &web,
        format!(
            "tls_server_config:\n  cert_file: {}\n  key_file: {}\nbasic_auth_users:\n  bob: {}\n",
            pki.path("server.crt"),
            pki.path("server.key"),
            bcrypt("bob", "builder")
        ),
    )
    .unwrap();
    assert_eq!(
        curl(&["--cacert", &ca, "-u", "alice:wonderland", &metrics]).status,
        401
    );
    let m = curl(&["--cacert", &ca, "-u", "bob:builder", &metrics]);
    assert_eq!(m.status, 200);
    assert_eq!(
        metric(&m.body, "vespa_agent_web_config_last_reload_successful"),
        1.0
    );
    assert!(!agent.log().contains("wonderland") && !agent.log().contains("builder"));
}

trait OutputWithStdin {
    fn output_with_stdin(&mut self, input: &[u8]) -> (bool, String);
}

impl OutputWithStdin for Command {
    fn output_with_stdin(&mut self, input: &[u8]) -> (bool, String) {
        use std::io::Write;
        let mut child = self
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(input).unwrap();
        let out = child.wait_with_output().unwrap();
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }
}

#[test]
fn client_certificates_are_required_verified_and_matched_by_name() {
    if !tools() {
        return;
    }
    let pki = Pki::new();
    let (home, _web, _agent) = agent_with(&format!(
        "tls_server_config:\n  cert_file: {}\n  key_file: {}\n  client_ca_file: {}\n  \
         client_auth_type: RequireAndVerifyClientCert\n  client_allowed_sans:\n    - prometheus.example\n",
        pki.path("server.crt"),
        pki.path("server.key"),
        pki.path("ca.crt")
    ));
    let ca = pki.path("ca.crt");
    let metrics = https(&home, "/metrics");
    let with = |name: &str| {
        curl(&[
            "--cacert",
            &ca,
            "--cert",
            &pki.path(&format!("{name}.crt")),
            "--key",
            &pki.path(&format!("{name}.key")),
            &metrics,
        ])
    };
    eventually("the TLS listener", Duration::from_secs(20), || {
        (with("client").status == 200).then_some(())
    });
    // No certificate, one the CA did not sign, one the CA signed for another name: no HTTP at
    // all, the connection ends in the handshake (or right after it, for the name).
    for (what, c) in [
        ("no client certificate", curl(&["--cacert", &ca, &metrics])),
        ("a self-signed certificate", with("self")),
        ("a certificate for another name", with("stranger")),
    ] {
        assert_ne!(c.exit, 0, "{what}: curl succeeded");
        assert_eq!(c.status, 0, "{what}: {}", c.body);
    }
    let m = with("client").body;
    assert!(
        metric(
            &m,
            "vespa_agent_http_refused_total{reason=\"tls_handshake\"}"
        ) >= 2.0
    );
    assert!(metric(&m, "vespa_agent_http_refused_total{reason=\"client_san\"}") >= 1.0);
}

#[test]
fn a_file_that_does_not_load_keeps_the_port_closed_and_names_its_line() {
    if !tools() {
        return;
    }
    let (home, web, mut agent) = agent_with(
        "tls_server_config:\n  cert_file: /nonexistent/server.crt\n  key_file: /nonexistent/server.key\n",
    );
    let status = agent
        .wait(Duration::from_secs(20))
        .expect("the agent to stop");
    assert_eq!(status.code(), Some(78), "EX_CONFIG: {}", agent.log());
    let log = agent.log();
    assert!(
        log.contains(&format!("{}:2", web.display())) && log.contains("/nonexistent/server.crt"),
        "{log}"
    );
    assert!(get(&home.url("/healthz")).is_none(), "nothing listens");
    let check = home.output(&["check-config"]);
    assert_eq!(check.code(), 78, "{}", check.stderr);
    assert!(check.stderr.contains("web.yml:2"), "{}", check.stderr);

    // A key this agent does not implement is refused by name, not ignored.
    std::fs::write(&web, "rate_limit:\n  interval: 1s\n  burst: 10\n").unwrap();
    let check = home.output(&["check-config"]);
    assert_eq!(check.code(), 78);
    assert!(
        check
            .stderr
            .contains("web.yml:1: rate_limit is not implemented"),
        "{}",
        check.stderr
    );
}
