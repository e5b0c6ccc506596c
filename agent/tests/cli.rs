//! The short commands: check-config, status, version, and their exit codes.

use std::os::unix::fs::PermissionsExt;

use harness::*;

#[test]
fn check_config_with_a_broken_dropin_exits_78_naming_file_line_and_key() {
    let home = Home::new("http://127.0.0.1:8080", "");
    let bad = home.write(
        "etc/agent.d/50-typo.toml",
        "# tuning\n[reconcile]\nintervall = \"10m\"\n",
    );
    let out = home.output(&["check-config"]);
    assert_eq!(out.code(), 78, "{out:?}");
    assert!(
        out.stderr.contains(&format!(
            "{}:3:1: key `reconcile.intervall`: unknown key",
            bad.display()
        )),
        "{}",
        out.stderr
    );
    assert!(
        out.stdout.is_empty(),
        "nothing half-printed: {}",
        out.stdout
    );
}

#[test]
fn run_with_a_broken_config_exits_78_before_doing_anything() {
    let home = Home::new("http://127.0.0.1:8080", "");
    home.write("run/agent.d/10.toml", "[http]\nlisten = \"nowhere\"\n");
    let out = home.output(&["run"]);
    assert_eq!(out.code(), 78, "{out:?}");
    assert!(
        out.stderr.contains("10.toml:2:10: key `http.listen`"),
        "{}",
        out.stderr
    );
    assert!(
        !home.path("state").exists(),
        "no state created by a refused start"
    );
}

#[test]
fn check_config_prints_every_value_with_its_origin_and_hides_secret_contents() {
    let home = Home::new("http://127.0.0.1:8080", "");
    let token = home.write("secrets/token", "glpat-do-not-print-me\n");
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
    let vendor = home.write(
        "usr/agent.d/10-defaults.toml",
        "[reconcile]\ninterval = \"7m\"\n",
    );
    home.write(
        "etc/agent.d/20-source.toml",
        &format!(
            "[source]\nurl = \"file:///srv/service.git\"\ntoken-file = \"{}\"\n",
            token.display()
        ),
    );
    let out = home.output(&["check-config"]);
    assert_eq!(out.code(), 0, "{out:?}");
    assert!(
        out.stdout
            .contains(&format!("interval = \"7m\"  # {}:2", vendor.display())),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("20-source.toml:3"), "{}", out.stdout);
    assert!(
        out.stdout.contains("stall-timeout = \"15m\"  # default"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("# jitter is not set"), "{}", out.stdout);
    assert!(
        !out.stdout.contains("glpat") && !out.stderr.contains("glpat"),
        "{out:?}"
    );

    // The same secret readable by the group is refused, with the fix.
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o640)).unwrap();
    let out = home.output(&["check-config"]);
    assert_eq!(out.code(), 78, "{out:?}");
    assert!(out.stderr.contains("chmod 0600"), "{}", out.stderr);
    assert!(!out.stderr.contains("glpat"), "{}", out.stderr);
}

#[test]
fn secrets_by_systemd_credential_name() {
    let home = Home::new("http://127.0.0.1:8080", "");
    let creds = home.path("creds");
    let tok = home.write("creds/gitlab-token", "glpat-x\n");
    std::fs::set_permissions(&tok, std::fs::Permissions::from_mode(0o400)).unwrap();
    home.write(
        "etc/agent.d/20.toml",
        "[source]\ntoken-file = \"gitlab-token\"\n",
    );
    let out = home.output(&["check-config"]);
    assert_eq!(out.code(), 78, "without $CREDENTIALS_DIRECTORY: {out:?}");
    let out = home
        .command(&["check-config"])
        .env("CREDENTIALS_DIRECTORY", &creds)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("token-file = \"gitlab-token\""));
}

#[test]
fn status_without_daemon_or_state_says_so_and_exits_3() {
    let home = Home::new("http://127.0.0.1:8080", "");
    let out = home.output(&["status"]);
    assert_eq!(out.code(), 3, "{out:?}");
    // What an operator needs to know and do, not the HTTP client's chain of errors.
    let says = format!(
        "daemon:       not running (nothing listens on 127.0.0.1:{}; start it with `systemctl start vespa-agent`",
        home.port
    );
    assert!(out.stdout.contains(&says), "{}", out.stdout);
    assert!(!out.stdout.contains("os error"), "{}", out.stdout);
    assert!(
        out.stdout.contains("has not run on this node"),
        "{}",
        out.stdout
    );
    let out = home.output(&["status", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert!(
        v["daemon"].is_null() && v["daemon_error"].is_string(),
        "{v}"
    );
}

#[test]
fn version_names_the_build() {
    let home = Home::new("http://127.0.0.1:8080", "");
    let out = home.output(&["version"]);
    assert!(out.status.success());
    assert!(
        out.stdout.starts_with(&format!(
            "vespa-agent {} (revision ",
            env!("CARGO_PKG_VERSION")
        )),
        "{}",
        out.stdout
    );
    let out = home.output(&["--version"]);
    assert!(out.status.success());
}

#[test]
fn an_unknown_command_is_refused_with_usage() {
    let home = Home::new("http://127.0.0.1:8080", "");
    let out = home.output(&["autorebuild"]);
    assert_eq!(out.code(), 2, "{out:?}");
    assert!(
        out.stderr.contains("unrecognized subcommand"),
        "{}",
        out.stderr
    );
}

#[test]
fn the_configuration_directories_come_from_the_environment_too() {
    let home = Home::new("http://127.0.0.1:8080", "");
    home.write(
        "etc/agent.d/50-env.toml",
        "[reconcile]\ninterval = \"7m\"\n",
    );
    let out = std::process::Command::new(harness::bin())
        .arg("check-config")
        .env("VESPA_AGENT_CONFIG_DIR", home.path("etc"))
        .env("VESPA_AGENT_VENDOR_CONFIG_DIR", home.path("usr/agent.d"))
        .env("VESPA_AGENT_RUNTIME_CONFIG_DIR", home.path("run/agent.d"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(stdout.contains("interval = \"7m\""), "{stdout}");
    assert!(stdout.contains("50-env.toml"), "{stdout}");
    // A flag still wins over the environment.
    let out = home
        .command(&["check-config"])
        .env("VESPA_AGENT_CONFIG_DIR", "/nonexistent")
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("interval = \"7m\""),
        "{out:?}"
    );
}

#[test]
fn a_plan_that_cannot_list_a_collection_is_incomplete_and_exits_1() {
    let repo = harness::git::LocalRepo::new();
    let port = closed_port();
    repo.write(
        "vespa-service.toml",
        &format!(
            "[[resource]]\ndir = \"far\"\n[[resource.collection]]\nname = \"away\"\n\
             source = \"http://127.0.0.1:{port}/dav/far/\"\ninclude = [\"*.csv\"]\n"
        ),
    );
    repo.write("far/q.rd", "<resource schema=\"far\"></resource>\n");
    repo.commit("a collection on storage that is down");
    let node = tempfile::tempdir().unwrap();
    let inputs = node.path().join("inputs");
    std::fs::create_dir(&inputs).unwrap();
    let home = Home::new(
        "http://127.0.0.1:8080",
        &format!(
            "inputs-dir = \"{}\"\ngavo-rc = \"{}\"\n",
            inputs.display(),
            node.path().join("gavo.rc").display()
        ),
    );
    home.write(
        "etc/agent.d/20-source.toml",
        &format!("[source]\nurl = \"{}\"\n", repo.path().display()),
    );
    let out = home.output(&["plan"]);
    assert_eq!(out.code(), 1, "{out:?}");
    let last = out.stdout.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("the plan is incomplete: 1 collection could not be listed (far/away)"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("granules far/away: cannot be listed"),
        "{}",
        out.stdout
    );
    assert!(
        !out.stdout.contains("nothing would change"),
        "{}",
        out.stdout
    );
}
