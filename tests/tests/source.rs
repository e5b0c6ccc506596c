//! Following the service repository against a real smart-HTTP git server (git http-backend
//! behind nginx, GitLab-style token auth): first sync, no-change polls, new commits by poll and
//! webhook, wrong tokens and secrets, floods, force-pushes, a deleted branch, the server going
//! away, bad service files, and signed commits (SSH and OpenPGP).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use harness::git::{GitServer, TOKEN};
use harness::*;

const HOOK_SECRET: &str = "hook-secret-5e4d3c2b1a";

/// An agent home following `url`, with the token and webhook secret as private files. The
/// source stage alone: DaCHS is health-checked, not deployed to (tests/apply.rs does that).
fn home_for(url: &str, extra: &str) -> Home {
    let home = Home::new(&dachs_url(), "apply = false\n");
    let tok = secret_file(&home, "secrets/token", &format!("{TOKEN}\n"));
    let hook = secret_file(&home, "secrets/hook", HOOK_SECRET);
    home.write(
        "etc/agent.d/20-source.toml",
        &format!(
            "[source]\nurl = \"{url}\"\ntoken-file = \"{}\"\nwebhook-secret-file = \"{}\"\n{extra}",
            tok.display(),
            hook.display()
        ),
    );
    home
}

fn assert_no_secrets(what: &str, text: &str) {
    for s in [TOKEN, HOOK_SECRET, "glpat-wrong"] {
        assert!(!text.contains(s), "{what} contains a secret:\n{text}");
    }
}

fn setup() -> Option<GitServer> {
    if !require_dachs() {
        return None;
    }
    GitServer::start()
}

#[test]
fn first_sync_over_http_with_a_token_then_a_no_change_poll() {
    let Some(server) = setup() else { return };
    let sha = server.commit_example(&[]);
    server.push();
    let home = home_for(&server.url(), "");

    let out = home.output(&["sync"]);
    assert_eq!(out.code(), 0, "{out:?}");
    assert_eq!(
        current(&home).as_deref(),
        Some(format!("revisions/{sha}").as_str())
    );
    assert!(
        home.path(&format!("state/revisions/{sha}/epnlab/q.rd"))
            .is_file()
    );
    assert!(!home.path(&format!("state/revisions/{sha}/.git")).exists());
    assert_no_secrets("sync output", &format!("{}{}", out.stdout, out.stderr));

    let st = home.output(&["status"]);
    assert!(
        st.stdout
            .contains(&format!("revision:     {sha} (applied = desired)")),
        "{}",
        st.stdout
    );

    // A no-change poll asks for the refs and downloads nothing.
    let before = server.requests().len();
    let out = home.output(&["sync"]);
    assert_eq!(out.code(), 0, "{out:?}");
    let new: Vec<_> = server.requests()[before..].to_vec();
    assert!(
        new.iter()
            .all(|l| !l.contains("POST /ops/service.git/git-upload-pack")),
        "{new:#?}"
    );
    assert!(new.iter().any(|l| l.contains("info/refs")), "{new:#?}");
    // One request in all: the token goes with it, not after a 401 (a fleet's load halves).
    assert_eq!(new.len(), 1, "{new:#?}");
}

#[test]
fn https_needs_the_configured_ca() {
    let Some(server) = setup() else { return };
    let sha = server.commit_example(&[]);
    server.push();

    let home = home_for(&server.https_url(), "");
    let out = home.output(&["sync"]);
    assert_eq!(out.code(), 1, "{out:?}");
    assert!(
        out.stderr.to_lowercase().contains("certificate"),
        "{}",
        out.stderr
    );
    assert_eq!(current(&home), None);

    let home = home_for(
        &server.https_url(),
        &format!("ca-file = \"{}\"\n", server.ca_file().display()),
    );
    let out = home.output(&["sync"]);
    assert_eq!(out.code(), 0, "{out:?}");
    assert_eq!(current(&home), Some(format!("revisions/{sha}")));

    // The CA trusted by the system, as Debian keeps it: a hashed directory (update-ca-certificates
    // writes /etc/ssl/certs so), no bundle named. The agent reads the directory, not a bundle
    // (agent/src/trust.rs).
    let certs = tempfile::tempdir().unwrap();
    std::fs::copy(server.ca_file(), certs.path().join("vespa-test.pem")).unwrap();
    let rehash = Command::new("openssl")
        .arg("rehash")
        .arg(certs.path())
        .status()
        .unwrap();
    assert!(rehash.success());
    let empty = tempfile::tempdir().unwrap();
    let sync = |file: Option<&Path>, dir: &Path| {
        let home = home_for(&server.https_url(), "");
        let mut c = home.command(&["sync"]);
        c.env_remove("SSL_CERT_FILE").env("SSL_CERT_DIR", dir);
        if let Some(f) = file {
            c.env("SSL_CERT_FILE", f);
        }
        let out = c.output().unwrap();
        let text = String::from_utf8_lossy(&out.stderr).into_owned();
        (out.status.code(), text, current(&home))
    };
    let want = Some(format!("revisions/{sha}"));
    let (code, err, now) = sync(None, certs.path());
    assert_eq!((code, &now), (Some(0), &want), "{err}");
    // Not in the directory: refused.
    let (code, err, now) = sync(None, empty.path());
    assert_eq!((code, &now), (Some(1), &None), "{err}");
    assert!(err.to_lowercase().contains("certificate"), "{err}");
    // An operator's own bundle (SSL_CERT_FILE) is still read beside the system's directory.
    let (code, err, now) = sync(Some(&server.ca_file()), Path::new("/etc/ssl/certs"));
    assert_eq!((code, &now), (Some(0), &want), "{err}");
}

#[test]
fn a_wrong_token_fails_fast_and_is_never_printed() {
    let Some(server) = setup() else { return };
    server.commit_example(&[]);
    server.push();
    let home = home_for(&server.url(), "");
    secret_file(&home, "secrets/token", "glpat-wrong-token\n");
    let before = server.requests().len();
    let out = home.output(&["sync"]);
    assert_eq!(out.code(), 1, "{out:?}");
    assert!(
        out.stderr.contains("authentication failed"),
        "{}",
        out.stderr
    );
    assert_no_secrets("sync output", &format!("{}{}", out.stdout, out.stderr));
    let tries = server.requests().len() - before;
    assert_eq!(
        tries, 1,
        "requests for a refused token (libgit2 alone replays 15 times)"
    );
    assert_eq!(current(&home), None);
}

#[test]
fn new_commits_arrive_by_poll_and_by_webhook_and_floods_do_not_hammer_the_server() {
    let Some(server) = setup() else { return };
    let a = server.commit_example(&[]);
    server.push();
    let home = home_for(&server.url(), "");
    home.write(
        "etc/agent.d/30-poll.toml",
        "[reconcile]\ninterval = \"10s\"\njitter = \"0s\"\n",
    );
    let agent = Agent::start(&home, |_| {});
    eventually("the first revision", Duration::from_secs(10), || {
        current(&home).filter(|c| c.ends_with(&a))
    });

    // By poll.
    let b = server.commit(&[("NOTES", Some("b"))], "b", &[]);
    server.push();
    eventually("the poll to bring b", Duration::from_secs(20), || {
        current(&home).filter(|c| c.ends_with(&b))
    });

    // By webhook: well before the next poll.
    let hook = home.url("/hooks/gitlab");
    let push_main = r#"{"object_kind":"push","ref":"refs/heads/main"}"#;
    let c = server.commit(&[("NOTES", Some("c"))], "c", &[]);
    server.push();
    let t = Instant::now();
    let (code, body) = post(&hook, &[("X-Gitlab-Token", HOOK_SECRET)], push_main).unwrap();
    assert_eq!(code, 202, "{body}");
    eventually("the webhook to bring c", Duration::from_secs(5), || {
        current(&home).filter(|x| x.ends_with(&c))
    });
    let webhook_to_current = t.elapsed();
    eprintln!("webhook -> current flipped: {webhook_to_current:?}");

    // `sync` while the daemon holds the state directory: the daemon runs the pass, and the
    // command waits for it and reports its result.
    let d = server.commit(&[("NOTES", Some("d"))], "d", &[]);
    server.push();
    let out = home.output(&["sync"]);
    assert_eq!(out.code(), 0, "{out:?}");
    assert!(
        out.stderr.contains("asking it for a pass"),
        "{}",
        out.stderr
    );
    assert!(
        out.stdout.contains(&format!("applied revision: {d}")),
        "{}",
        out.stdout
    );
    assert_eq!(current(&home), Some(format!("revisions/{d}")));

    // A wrong secret fetches nothing.
    std::thread::sleep(Duration::from_secs(1));
    let before = server.requests().len();
    let (code, body) = post(&hook, &[("X-Gitlab-Token", "guess")], push_main).unwrap();
    assert_eq!(code, 401, "{body}");
    let (code, _) = post(&hook, &[], push_main).unwrap();
    assert_eq!(code, 401);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        server.requests().len(),
        before,
        "a refused webhook reached the git server"
    );

    // Another ref is acknowledged and ignored.
    let (code, body) = post(
        &hook,
        &[("X-Gitlab-Token", HOOK_SECRET)],
        r#"{"object_kind":"push","ref":"refs/heads/dev"}"#,
    )
    .unwrap();
    assert_eq!(code, 202);
    assert!(body.contains("ignored"), "{body}");

    // A flood: 200 events in a burst cause at most a couple of fetches.
    std::thread::sleep(hooks_spacing());
    let before = server.requests().len();
    for _ in 0..200 {
        let (code, _) = post(&hook, &[("X-Gitlab-Token", HOOK_SECRET)], push_main).unwrap();
        assert_eq!(code, 202);
    }
    std::thread::sleep(hooks_spacing() + Duration::from_secs(2));
    // Each poll is one authorised request; counted by the answered ones all the same.
    let refs = server.requests()[before..]
        .iter()
        .filter(|l| l.contains("info/refs") && l.contains(" 200 "))
        .count();
    assert!(
        (1..=3).contains(&refs),
        "{refs} ref requests after a flood of 200 webhooks"
    );

    let (_, m) = get(&home.url("/metrics")).unwrap();
    assert!(
        metric(
            &m,
            "vespa_agent_webhook_requests_total{result=\"unauthorized\"}"
        ) == Some(2.0),
        "{m}"
    );
    assert!(
        m.contains(&format!(
            "vespa_agent_revision_info{{revision=\"{d}\",role=\"applied\"}} 1"
        )),
        "{m}"
    );
    assert_no_secrets("agent log", &agent.log());
    assert_no_secrets("metrics", &m);
    let (_, st) = get(&home.url("/status")).unwrap();
    assert_no_secrets("status", &st);
}

fn hooks_spacing() -> Duration {
    vespa_agent::hooks::MIN_SPACING
}

#[test]
fn force_push_deleted_branch_and_server_outage() {
    let Some(mut server) = setup() else { return };
    let a = server.commit_example(&[]);
    server.push();
    let home = home_for(&server.url(), "");
    assert_eq!(home.output(&["sync"]).code(), 0);

    // Rewrite history: an orphan commit replaces main.
    server.git(&["checkout", "-q", "--orphan", "rewrite"]);
    let r = server.commit(&[("NOTES", Some("rewritten"))], "rewritten history", &[]);
    server.git(&["branch", "-q", "-M", "main"]);
    server.push();
    assert_ne!(a, r);
    let out = home.output(&["sync"]);
    assert_eq!(out.code(), 0, "{out:?}");
    assert!(out.stderr.contains("force-pushed"), "{}", out.stderr);
    assert_eq!(current(&home), Some(format!("revisions/{r}")));

    // The branch is deleted: a clear error, the last good revision stays.
    server.git(&["push", "-q", "origin", ":main"]);
    let out = home.output(&["sync"]);
    assert_eq!(out.code(), 1);
    assert!(
        out.stderr.contains("branch main does not exist"),
        "{}",
        out.stderr
    );
    assert_eq!(current(&home), Some(format!("revisions/{r}")));

    // The server is down, then back.
    server.push();
    server.down();
    let out = home.output(&["sync"]);
    assert_eq!(out.code(), 1);
    assert!(out.stderr.contains("cannot fetch"), "{}", out.stderr);
    assert_eq!(current(&home), Some(format!("revisions/{r}")));
    server.up();
    let out = home.output(&["sync"]);
    assert_eq!(out.code(), 0, "{out:?}");
}

#[test]
fn bad_commits_are_rejected_and_not_retried_until_asked() {
    let Some(server) = setup() else { return };
    let good = server.commit_example(&[]);
    server.push();
    let home = home_for(&server.url(), "");
    assert_eq!(home.output(&["sync"]).code(), 0);
    let here = format!("revisions/{good}");

    let bad_toml = "[[resource]]\ndir = \"../etc\"\n";
    let bad = server.commit(&[("vespa-service.toml", Some(bad_toml))], "bad", &[]);
    server.push();
    let out = home.output(&["sync"]);
    assert_eq!(out.code(), 1);
    assert!(
        out.stderr
            .contains("vespa-service.toml:2:7: key `resource[0].dir`"),
        "{}",
        out.stderr
    );
    assert_eq!(current(&home).as_deref(), Some(here.as_str()));
    assert!(
        !home.path(&format!("state/revisions/{bad}")).exists(),
        "a rejected commit left a revision"
    );

    let out = home.output(&["sync"]);
    assert!(out.stderr.contains("not retried"), "{}", out.stderr);
    let st = home.output(&["status"]);
    assert!(
        st.stdout.contains(&format!("desired:      {bad}")),
        "{}",
        st.stdout
    );
    assert!(
        st.stdout.contains("desired commit FAILED at validate"),
        "{}",
        st.stdout
    );
    let out = home.output(&["sync", "--retry"]);
    assert!(
        out.stderr.contains("rejected at validate"),
        "{}",
        out.stderr
    );

    // A symlink out of the repository.
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/service/vespa-service.toml");
    let ok_toml = std::fs::read_to_string(src).unwrap();
    std::os::unix::fs::symlink("../../../../etc/passwd", server.work().join("epnlab/leak"))
        .unwrap();
    let evil = server.commit(&[("vespa-service.toml", Some(&ok_toml))], "evil", &[]);
    server.push();
    let out = home.output(&["sync"]);
    assert!(
        out.stderr.contains(
            "epnlab/leak` is a symlink to `../../../../etc/passwd`, which leaves the repository"
        ),
        "{}",
        out.stderr
    );
    assert!(!home.path(&format!("state/revisions/{evil}")).exists());
    assert_eq!(current(&home).as_deref(), Some(here.as_str()));

    // A fix is picked up.
    std::fs::remove_file(server.work().join("epnlab/leak")).unwrap();
    let fixed = server.commit(&[], "fixed", &[]);
    server.push();
    assert_eq!(home.output(&["sync"]).code(), 0);
    assert_eq!(current(&home), Some(format!("revisions/{fixed}")));
    let leftovers: Vec<_> = std::fs::read_dir(home.path("state/revisions"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

fn run_ok(cmd: &mut std::process::Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Makes a commit (signed with `sign`'s git options) on top of the work tree's HEAD, pushes it,
/// syncs, and checks that the agent refused it saying `why(sha)`, with `current` still at
/// `kept`. Returns the refused commit.
fn push_refused(
    server: &GitServer,
    home: &Home,
    note: &str,
    sign: &[String],
    kept: &str,
    why: impl Fn(&str) -> String,
) -> String {
    let sign: Vec<&str> = sign.iter().map(String::as_str).collect();
    let sha = server.commit(&[("NOTES", Some(note))], note, &sign);
    server.push();
    let out = home.output(&["sync"]);
    assert_eq!(out.code(), 1, "{out:?}");
    assert!(out.stderr.contains(&why(&sha)), "{}", out.stderr);
    assert_eq!(current(home), Some(format!("revisions/{kept}")));
    sha
}

/// The first commit, signed, is accepted under the verification `extra` configures.
fn first_signed(server: &GitServer, sign: &[String], extra: &str) -> (Home, String) {
    let sign: Vec<&str> = sign.iter().map(String::as_str).collect();
    let a = server.commit_example(&sign);
    server.push();
    let home = home_for(&server.url(), extra);
    let out = home.output(&["sync"]);
    assert_eq!(out.code(), 0, "{out:?}");
    assert_eq!(current(&home), Some(format!("revisions/{a}")));
    (home, a)
}

fn git_options(pairs: &[String]) -> Vec<String> {
    pairs
        .iter()
        .flat_map(|p| ["-c".to_owned(), p.clone()])
        .collect()
}

#[test]
fn ssh_signed_commits_only() {
    let Some(server) = setup() else { return };
    let keys = tempfile::tempdir().unwrap();
    let mut allowed = String::new();
    for name in ["trusted", "stranger"] {
        let key = keys.path().join(name);
        run_ok(
            std::process::Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
                .arg(&key),
        );
        if name == "trusted" {
            let pubkey = std::fs::read_to_string(key.with_extension("pub")).unwrap();
            allowed = format!("provider@example.org namespaces=\"git\" {pubkey}");
        }
    }
    let signers = keys.path().join("allowed_signers");
    std::fs::write(&signers, allowed).unwrap();
    let sign = |name: &str| {
        git_options(&[
            "gpg.format=ssh".into(),
            format!("user.signingkey={}", keys.path().join(name).display()),
            "commit.gpgsign=true".into(),
        ])
    };
    let (trusted, stranger) = (sign("trusted"), sign("stranger"));
    let extra = format!(
        "verify = \"ssh\"\nallowed-signers-file = \"{}\"\n",
        signers.display()
    );
    let (home, a) = first_signed(&server, &trusted, &extra);

    // From here on the daemon runs, and `sync` asks it for each pass.
    let agent = Agent::start(&home, |_| {});
    eventually("the daemon's first pass", Duration::from_secs(10), || {
        get(&home.url("/readyz")).filter(|(c, _)| *c == 200)
    });

    // Unsigned on top: rejected, current stays, status and metrics say why.
    let u = push_refused(&server, &home, "unsigned", &[], &a, |u| {
        format!("commit {u} is not signed")
    });
    let st = home.output(&["status"]);
    assert!(st.stdout.contains("FAILED at verify"), "{}", st.stdout);
    let (_, m) = get(&home.url("/metrics")).unwrap();
    let unsigned = "vespa_agent_reconcile_errors_total{kind=\"unsigned\",stage=\"source\"}";
    assert_eq!(metric(&m, unsigned), Some(1.0), "{m}");
    assert_eq!(
        metric(&m, "vespa_agent_source_failed_commits"),
        Some(1.0),
        "{m}"
    );
    assert!(
        m.contains(&format!(
            "vespa_agent_revision_info{{revision=\"{a}\",role=\"applied\"}} 1"
        )),
        "{m}"
    );
    assert!(
        m.contains(&format!(
            "vespa_agent_revision_info{{revision=\"{u}\",role=\"desired\"}} 1"
        )),
        "{m}"
    );
    // Which commit, refused where: what the fleet dashboard shows of this node.
    assert!(
        m.contains(&format!(
            "vespa_agent_desired_refused_info{{revision=\"{u}\",stage=\"verify\"}} 1"
        )),
        "{m}"
    );

    // A signed commit on top of the unsigned one does not launder it.
    push_refused(&server, &home, "signed over unsigned", &trusted, &a, |_| {
        format!("commit {u} is not signed")
    });

    // An unknown key.
    server.git(&["reset", "-q", "--hard", &a]);
    push_refused(&server, &home, "stranger", &stranger, &a, |x| {
        format!("commit {x} is not signed by a trusted key")
    });

    // Trusted again.
    server.git(&["reset", "-q", "--hard", &a]);
    let t: Vec<&str> = trusted.iter().map(String::as_str).collect();
    let b = server.commit(&[("NOTES", Some("b"))], "trusted", &t);
    server.push();
    assert_eq!(home.output(&["sync"]).code(), 0);
    assert_eq!(current(&home), Some(format!("revisions/{b}")));
    let (_, m) = get(&home.url("/metrics")).unwrap();
    assert!(!m.contains("vespa_agent_desired_refused_info{"), "{m}");
    drop(agent);
}

#[test]
fn openpgp_signed_commits_only() {
    let Some(server) = setup() else { return };
    let gnupg = tempfile::tempdir().unwrap();
    let stranger_home = tempfile::tempdir().unwrap();
    let homes = [
        (gnupg.path(), "Provider <provider@example.org>"),
        (stranger_home.path(), "Stranger <stranger@example.org>"),
    ];
    for (home, uid) in homes {
        std::fs::set_permissions(home, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .unwrap();
        run_ok(
            std::process::Command::new("gpg")
                .env("GNUPGHOME", home)
                .args([
                    "--batch",
                    "--quiet",
                    "--passphrase",
                    "",
                    "--quick-gen-key",
                    uid,
                    "ed25519",
                    "sign",
                    "never",
                ]),
        );
    }
    let keyring = gnupg.path().join("trusted.gpg");
    let exported = std::process::Command::new("gpg")
        .env("GNUPGHOME", gnupg.path())
        .args(["--export"])
        .output()
        .unwrap();
    std::fs::write(&keyring, exported.stdout).unwrap();

    let signed_by = |home: &Path, uid: &str| {
        git_options(&[
            format!("gpg.program={}", gpg_wrapper(home).display()),
            format!("user.signingkey={uid}"),
            "commit.gpgsign=true".into(),
        ])
    };
    let trusted = signed_by(gnupg.path(), "provider@example.org");
    let stranger = signed_by(stranger_home.path(), "stranger@example.org");
    let extra = format!(
        "verify = \"openpgp\"\nkeyring-file = \"{}\"\n",
        keyring.display()
    );
    let (home, a) = first_signed(&server, &trusted, &extra);

    push_refused(&server, &home, "stranger", &stranger, &a, |x| {
        format!("commit {x} is not signed by a trusted key")
    });
    server.git(&["reset", "-q", "--hard", &a]);
    push_refused(&server, &home, "unsigned", &[], &a, |u| {
        format!("commit {u} is not signed")
    });
}

/// git runs `gpg.program` with its own arguments; the wrapper pins the keyring directory.
fn gpg_wrapper(gnupg_home: &Path) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = gnupg_home.join("gpg-wrapper");
    std::fs::write(
        &p,
        format!(
            "#!/bin/sh\nexec gpg --homedir '{}' \"$@\"\n",
            gnupg_home.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}
