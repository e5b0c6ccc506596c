//! `vespa-agent rebuild --vm` (level 2) against a DOUBLE of the OpenStack metadata service,
//! Keystone and Nova (tests/src/openstack.rs, written from their API references: no
//! OpenStack can run here): the right calls in the right order with the right microversion, the
//! attempt recorded in the server's metadata before the rebuild is asked for, and a refusal,
//! with nothing asked of Nova, for another server's id, a locked or busy server, a rebuild
//! within the interval, a boot-from-volume server on an old Nova, and a wrong credential.

use harness::openstack::*;
use harness::*;

struct Case {
    os: OpenStack,
    home: Home,
}

fn case() -> Case {
    let os = OpenStack::start();
    let home = Home::new(&dachs_url(), "");
    let cred = secret_file(
        &home,
        "etc/credentials/openstack",
        &format!("{CRED_ID}:{CRED_SECRET}\n"),
    );
    home.write(
        "etc/agent.d/20-openstack.toml",
        &format!(
            "[source]\nurl = \"/nonexistent/service\"\n\n{}",
            os.config(&cred)
        ),
    );
    Case { os, home }
}

fn rebuild(c: &Case, extra: &[&str]) -> Output {
    let mut args = vec!["rebuild", "--vm"];
    args.extend_from_slice(extra);
    let out = c.home.output(&args);
    for text in [&out.stdout, &out.stderr] {
        assert!(
            !text.contains(CRED_SECRET),
            "the secret was printed: {text}"
        );
    }
    out
}

fn asked_nova_to_change(c: &Case) -> bool {
    c.os.calls()
        .iter()
        .any(|k| k.method == "POST" && k.path.starts_with("/compute/"))
}

#[test]
fn the_rebuild_is_asked_for_with_the_right_calls_after_recording_it() {
    let c = case();
    let out = rebuild(&c, &[]);
    assert_eq!(out.code(), 0, "{out:?}");
    assert!(out.stdout.contains("rebuild requested"), "{out:?}");
    let calls = c.os.calls();
    let seen: Vec<(&str, &str)> = calls
        .iter()
        .map(|k| (k.method.as_str(), k.path.as_str()))
        .collect();
    let server = format!("/compute/v2.1/servers/{SERVER}");
    assert_eq!(
        seen,
        [
            ("GET", "/metadata/openstack/latest/meta_data.json"),
            ("POST", "/identity/v3/auth/tokens"),
            ("GET", "/compute/v2.1/"),
            ("GET", server.as_str()),
            ("POST", format!("{server}/metadata").as_str()),
            ("POST", format!("{server}/action").as_str()),
        ]
    );
    // The newest microversion up to 2.93, on every server call.
    for k in &calls[3..] {
        assert_eq!(k.microversion.as_deref(), Some("compute 2.93"), "{k:?}");
    }
    assert_eq!(
        calls[1].body["auth"]["identity"]["methods"][0],
        "application_credential"
    );
    assert_eq!(
        calls[5].body,
        serde_json::json!({"rebuild": {"imageRef": IMAGE}})
    );
    let marker = &calls[4].body["metadata"];
    assert!(
        marker["vespa-agent:last-rebuild"].as_str().is_some(),
        "{marker}"
    );

    // The record holds: a second request within the interval is refused, Nova untouched.
    let before = c.os.calls().len();
    c.os.state.lock().unwrap().task_state = None;
    c.os.state.lock().unwrap().status = "ACTIVE".into();
    let again = rebuild(&c, &[]);
    assert_ne!(again.code(), 0);
    assert!(again.stderr.contains("rebuild-interval"), "{again:?}");
    assert!(
        !c.os.calls()[before..]
            .iter()
            .any(|k| k.method == "POST" && k.path.starts_with("/compute/"))
    );
}

#[test]
fn a_dry_run_checks_everything_and_changes_nothing() {
    let c = case();
    let out = rebuild(&c, &["--dry-run"]);
    assert_eq!(out.code(), 0, "{out:?}");
    assert!(
        out.stdout
            .contains(&format!("would rebuild server {SERVER} from image {IMAGE}"))
    );
    assert!(!asked_nova_to_change(&c));
}

#[test]
fn refusals_leave_the_server_alone() {
    type Setup = fn(&mut State);
    let cases: [(&str, Setup, &str); 5] = [
        (
            "another server",
            |s| s.uuid = "0000-other".into(),
            "refusing to rebuild another server",
        ),
        ("locked", |s| s.locked = true, "locked"),
        (
            "busy",
            |s| s.task_state = Some("resize_migrating".into()),
            "busy",
        ),
        (
            "rate limit",
            |s| {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_secs();
                s.metadata.insert(
                    "vespa-agent:last-rebuild".into(),
                    serde_json::Value::String((now - 600).to_string()),
                );
            },
            "rebuilt 10m",
        ),
        (
            "boot from volume, old Nova",
            |s| {
                s.image = None;
                s.max_version = "2.79".into();
            },
            "before 2.93",
        ),
    ];
    for (what, setup, says) in cases {
        let c = case();
        setup(&mut c.os.state.lock().unwrap());
        let out = rebuild(&c, &[]);
        assert_ne!(out.code(), 0, "{what}: {out:?}");
        assert!(out.stderr.contains(says), "{what}: {out:?}");
        assert!(!asked_nova_to_change(&c), "{what}");
    }
}

#[test]
fn boot_from_volume_on_a_new_nova_needs_an_image_and_then_rebuilds_the_volume() {
    let c = case();
    c.os.state.lock().unwrap().image = None;
    let out = rebuild(&c, &[]);
    assert_ne!(out.code(), 0);
    assert!(out.stderr.contains("set openstack.image"), "{out:?}");
    assert!(!asked_nova_to_change(&c));

    c.home.write(
        "etc/agent.d/30-image.toml",
        "[openstack]\nimage = \"debian-12-pinned\"\n",
    );
    let out = rebuild(&c, &[]);
    assert_eq!(out.code(), 0, "{out:?}");
    assert!(out.stdout.contains("root volume is re-imaged"), "{out:?}");
    let action = c.os.calls().last().unwrap().clone();
    assert_eq!(action.body["rebuild"]["imageRef"], "debian-12-pinned");
    assert_eq!(action.microversion.as_deref(), Some("compute 2.93"));
}

#[test]
fn a_wrong_credential_is_named_and_never_printed() {
    let c = case();
    secret_file(
        &c.home,
        "etc/credentials/openstack",
        &format!("{CRED_ID}:wrong-secret\n"),
    );
    let out = rebuild(&c, &[]);
    assert_ne!(out.code(), 0);
    assert!(out.stderr.contains("credential was refused"), "{out:?}");
    assert!(!out.stderr.contains("wrong-secret"), "{out:?}");
    assert!(!asked_nova_to_change(&c));

    // Without an [openstack] configuration, it says what is missing.
    let bare = Home::new(&dachs_url(), "");
    bare.write(
        "etc/agent.d/20-source.toml",
        "[source]\nurl = \"/nonexistent/service\"\n",
    );
    let out = bare.output(&["rebuild", "--vm"]);
    assert_ne!(out.code(), 0);
    assert!(
        out.stderr.contains("openstack.auth-url is not set"),
        "{out:?}"
    );
}

#[test]
fn malformed_answers_are_named_and_nothing_is_rebuilt() {
    let server = format!("/compute/v2.1/servers/{SERVER}");
    let record = format!("{server}/metadata");
    let token = format!("X-Subject-Token: {TOKEN}\r\n");
    let catalog_without_compute = r#"{"token": {"project": {"id": "9f1c2d3e4b5a"}, "catalog": [{"type": "identity", "endpoints": []}]}}"#;
    let cases: Vec<(&str, &str, u16, String, String, &str)> = vec![
        (
            "GET",
            "/metadata/openstack/latest/meta_data.json",
            200,
            String::new(),
            "<html>captive portal</html>".into(),
            "the metadata service: not JSON",
        ),
        (
            "GET",
            "/metadata/openstack/latest/meta_data.json",
            200,
            String::new(),
            r#"{"name": "vespa-node"}"#.into(),
            "names no server id (uuid)",
        ),
        (
            "GET",
            "/metadata/openstack/latest/meta_data.json",
            503,
            String::new(),
            "busy".into(),
            "the metadata service: HTTP 503",
        ),
        (
            "POST",
            "/identity/v3/auth/tokens",
            201,
            String::new(),
            catalog_without_compute.into(),
            "no X-Subject-Token",
        ),
        (
            "POST",
            "/identity/v3/auth/tokens",
            201,
            token.clone(),
            catalog_without_compute.into(),
            "no public compute endpoint",
        ),
        (
            "POST",
            "/identity/v3/auth/tokens",
            201,
            token.clone(),
            r#"{"token": {"#.into(),
            "Keystone: not JSON",
        ),
        (
            "GET",
            "/compute/v2.1/",
            200,
            String::new(),
            r#"{"versions": []}"#.into(),
            "no version in Nova's version document",
        ),
        (
            "GET",
            "/compute/v2.1/",
            200,
            String::new(),
            r#"{"version": {"version": "two"}}"#.into(),
            "no version in Nova's version document",
        ),
        (
            "GET",
            &server,
            200,
            String::new(),
            r#"{"server": {"id": "6a0e"#.into(),
            "Nova: the server: not JSON",
        ),
        (
            "GET",
            &server,
            200,
            String::new(),
            r#"{"server": {"id": "x"}}"#.into(),
            "no status",
        ),
        (
            "GET",
            &server,
            404,
            String::new(),
            r#"{"itemNotFound": {"code": 404}}"#.into(),
            "HTTP 404",
        ),
        (
            "POST",
            &record,
            403,
            String::new(),
            r#"{"forbidden": {}}"#.into(),
            "recording the rebuild: HTTP 403",
        ),
    ];
    for (method, path, status, headers, body, says) in cases {
        let c = case();
        c.os.state.lock().unwrap().broken = Some(Broken {
            method,
            path: path.to_owned(),
            status,
            headers,
            body: body.clone(),
        });
        let out = rebuild(&c, &[]);
        assert_ne!(out.code(), 0, "{path} answering {body}: {out:?}");
        assert!(
            out.stderr.contains(says),
            "{path} answering {body}: wants `{says}`:\n{}",
            out.stderr
        );
        assert!(
            !c.os.calls().iter().any(|k| k.path.ends_with("/action")),
            "{path} answering {body}: a rebuild was asked for"
        );
    }
    // Nova refusing the rebuild itself, or accepting it with the wrong status: an error, after
    // the attempt was recorded (so the interval still counts it).
    for (status, says) in [
        (500, "Nova: the rebuild: HTTP 500"),
        (200, "answered without 202 Accepted"),
    ] {
        let c = case();
        c.os.state.lock().unwrap().broken = Some(Broken {
            method: "POST",
            path: format!("{server}/action"),
            status,
            headers: String::new(),
            body: "{}".into(),
        });
        let out = rebuild(&c, &[]);
        assert_ne!(out.code(), 0, "{out:?}");
        assert!(out.stderr.contains(says), "wants `{says}`:\n{}", out.stderr);
        assert!(
            c.os.state
                .lock()
                .unwrap()
                .metadata
                .contains_key(vespa_agent::rebuild::vm::LAST_REBUILD)
        );
    }
}
