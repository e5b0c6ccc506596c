//! Secret hygiene: one agent holding every kind of secret it can hold (the repository token,
//! sent to git's smart-HTTP server behind nginx; the webhook secret; the GitLab commit-status
//! token, sent to a DOUBLE of GitLab's REST API; a B2SAFE password, sent to Apache mod_dav; an
//! OpenStack application credential) runs as a daemon through passes that fetch, deploy and
//! import into the real DaCHS, webhooks with the right and a wrong secret, a refused password
//! and a reload. Then everything someone other than root could read, or that leaves the node,
//! is scanned for every secret: the daemon's whole log, every command's output, /metrics,
//! /status, /healthz, /readyz, every file under the state directory (the state store and its
//! WAL, the mirror's git config, the revisions), the deployed resource directory, and the
//! arguments and environment of every `dachs` child. Any hit fails, naming where.

use std::path::Path;
use std::time::Duration;

use harness::dav::DavServer;
use harness::git::GitServer;
use harness::gitlab::GitlabDouble;
use harness::*;

const NAME: &str = "vt_secrets";
const HOOK_SECRET: &str = "hook-s3cret-a1b2c3d4e5";
const OPENSTACK: &str = "appcred-id-77:appcred-s3cret-f6e5d4";
const WRONG_PASSWORD: &str = "wrong-b2safe-pw-0a9b8c";

/// Every secret of this test, as the agent was given it.
fn secrets() -> Vec<(&'static str, String)> {
    vec![
        ("repository token", harness::git::TOKEN.to_owned()),
        ("webhook secret", HOOK_SECRET.to_owned()),
        ("GitLab status token", harness::gitlab::TOKEN.to_owned()),
        ("B2SAFE password", harness::dav::PASSWORD.to_owned()),
        ("a refused B2SAFE password", WRONG_PASSWORD.to_owned()),
        (
            "OpenStack credential secret",
            "appcred-s3cret-f6e5d4".to_owned(),
        ),
        // How a secret would look in a URL or an Authorization header.
        (
            "B2SAFE Basic auth",
            base64(format!("{}:{}", harness::dav::USER, harness::dav::PASSWORD).as_bytes()),
        ),
        (
            "repository Basic auth",
            base64(format!("oauth2:{}", harness::git::TOKEN).as_bytes()),
        ),
    ]
}

/// Fails naming the secret and the place when `bytes` holds any secret.
fn scan(found: &mut Vec<String>, place: &str, bytes: &[u8]) {
    let text = String::from_utf8_lossy(bytes);
    for (what, secret) in secrets() {
        if text.contains(&secret) {
            found.push(format!("{what} in {place}"));
        }
    }
}

fn scan_tree(found: &mut Vec<String>, dir: &Path, files: &mut usize) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        let t = e.file_type().unwrap();
        if t.is_dir() {
            scan_tree(found, &p, files);
        } else if t.is_file() {
            *files += 1;
            scan(found, &p.display().to_string(), &std::fs::read(&p).unwrap());
        }
    }
}

#[test]
fn no_secret_reaches_a_log_a_metric_a_file_or_a_child_process() {
    if !require_dachs() {
        return;
    }
    let Some(git) = GitServer::start() else {
        return;
    };
    let Some(dav) = DavServer::start() else {
        return;
    };
    let gitlab = GitlabDouble::start();
    remove_resource(NAME);

    // The example as vt_secrets, its granules on the WebDAV server.
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let rd = std::fs::read_to_string(example.join("service/epnlab/q.rd")).unwrap();
    for g in std::fs::read_dir(example.join("granules/epnlab")).unwrap() {
        let g = g.unwrap().path();
        std::fs::copy(&g, dav.data(NAME).join(g.file_name().unwrap())).unwrap();
    }
    let service = format!(
        "[[resource]]\ndir = \"{NAME}\"\n\n[[resource.collection]]\nname = \"granules\"\n\
         source = \"{}\"\ncredential = \"b2safe\"\ninclude = [\"*.csv\"]\n",
        dav.url(NAME)
    );
    let rd = rd.replace("epnlab", NAME);
    git.commit(
        &[
            ("vespa-service.toml", Some(&service)),
            (&format!("{NAME}/q.rd"), Some(&rd)),
        ],
        "the example over WebDAV",
        &[],
    );
    git.push();

    let home = Home::new(&dachs_url(), "");
    let (wrapper, log) = dachs_wrapper(&home);
    // The wrapper also keeps each child's environment.
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\necho \"ARGV $*\" >> '{0}'\nenv | sed 's/^/ENV /' >> '{0}'\nexec /usr/bin/dachs \"$@\"\n",
            log.display()
        ),
    )
    .unwrap();
    let token = secret_file(&home, "secrets/token", harness::git::TOKEN);
    let hook = secret_file(&home, "secrets/hook", HOOK_SECRET);
    let status_token = secret_file(&home, "secrets/gitlab", harness::gitlab::TOKEN);
    let openstack = secret_file(&home, "secrets/openstack", OPENSTACK);
    secret_file(
        &home,
        "credentials/b2safe",
        &format!("{}:{WRONG_PASSWORD}\n", harness::dav::USER),
    );
    home.write(
        "etc/agent.d/20-secrets.toml",
        &format!(
            "[dachs]\nbin = \"{}\"\n\n[source]\nurl = \"{}\"\ntoken-file = \"{}\"\n\
             webhook-secret-file = \"{}\"\n\n[gitlab]\nreport = true\napi-url = \"{}\"\n\
             project = \"42\"\ntoken-file = \"{}\"\n\n[granules]\ncredentials-dir = \"{}\"\n\n\
             [openstack]\nauth-url = \"http://127.0.0.1:{}/v3\"\ncredential-file = \"{}\"\n\
             server-id = \"6a0e4b1c\"\n\n[reconcile]\ninterval = \"10s\"\n",
            wrapper.display(),
            git.url(),
            token.display(),
            hook.display(),
            gitlab.api_url(),
            status_token.display(),
            home.path("credentials").display(),
            closed_port(),
            openstack.display(),
        ),
    );

    // The scanner itself finds each secret, plain and inside other text.
    for (what, secret) in secrets() {
        let mut probe = Vec::new();
        scan(&mut probe, "a probe", format!("x={secret};").as_bytes());
        assert_eq!(probe, [format!("{what} in a probe")]);
    }

    let mut found = Vec::new();
    let mut outputs = String::new();
    let mut cli = |args: &[&str]| {
        let out = home.output(args);
        outputs.push_str(&format!("{}{}", out.stdout, out.stderr));
        out
    };
    // A refused password first: the error says so, and never what it was.
    let out = cli(&["sync"]);
    assert_ne!(out.code(), 0, "{out:?}");
    secret_file(
        &home,
        "credentials/b2safe",
        &format!("{}:{}\n", harness::dav::USER, harness::dav::PASSWORD),
    );
    for args in [
        &["check-config"][..],
        &["plan"],
        &["sync"],
        &["status"],
        &["status", "--json"],
        &["status", "--digest"],
        &["rebuild", "--vm", "--dry-run"],
    ] {
        cli(args);
    }

    // The daemon: passes, webhooks right and wrong, a reload, the endpoints.
    let mut agent = Agent::start(&home, |_| {});
    let addr = home.url("");
    eventually("the daemon's first pass", Duration::from_secs(120), || {
        std::thread::sleep(Duration::from_millis(200));
        get(&format!("{addr}/readyz")).filter(|(code, _)| *code == 200)
    });
    let event = format!(
        r#"{{"object_kind":"push","ref":"refs/heads/main","checkout_sha":"{}"}}"#,
        git.tip()
    );
    for secret in [HOOK_SECRET, "a-wrong-hook-secret-55"] {
        let headers = [("X-Gitlab-Event", "Push Hook"), ("X-Gitlab-Token", secret)];
        post(&format!("{addr}/hooks/gitlab"), &headers, &event);
    }
    agent.signal(libc::SIGHUP);
    std::thread::sleep(Duration::from_secs(2));
    let mut endpoints = 0;
    for path in ["/metrics", "/status", "/healthz", "/readyz"] {
        if let Some((_, body)) = get(&format!("{addr}{path}")) {
            endpoints += 1;
            scan(&mut found, path, body.as_bytes());
        }
    }
    assert_eq!(endpoints, 4, "an endpoint did not answer");
    agent.signal(libc::SIGTERM);
    assert!(agent.wait(Duration::from_secs(30)).is_some(), "no stop");

    scan(&mut found, "the daemon's log", agent.log().as_bytes());
    scan(&mut found, "the commands' output", outputs.as_bytes());
    let children = std::fs::read(&log).unwrap();
    assert!(
        String::from_utf8_lossy(&children).contains("ARGV imp"),
        "no dachs child ran"
    );
    scan(&mut found, "a dachs child's argv or environment", &children);
    let mut files = 0;
    scan_tree(&mut found, &home.path("state"), &mut files);
    scan_tree(&mut found, &Path::new(INPUTS).join(NAME), &mut files);
    assert!(files > 20, "only {files} files scanned");
    assert!(
        gitlab.statuses().iter().any(|s| s.state == "success"),
        "GitLab never heard of the pass: {:?}",
        gitlab.statuses()
    );
    figure(&format!(
        "SECRETS: {} secrets, {files} files, 4 endpoints, the daemon's log, {} bytes of command \
         output and {} bytes of child argv/env scanned; found {}",
        secrets().len(),
        outputs.len(),
        children.len(),
        found.len()
    ));
    assert!(found.is_empty(), "secrets found: {found:#?}");
    remove_resource(NAME);
}

const INPUTS: &str = "/var/gavo/inputs";
