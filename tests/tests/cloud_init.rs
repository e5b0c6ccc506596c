//! The cloud-init template: rendered with an operator's values it is a valid #cloud-config
//! (`cloud-init schema -c`, Debian's cloud-init), the token lands only in a 0600 file, the
//! pg_sphere fix sits between PostgreSQL and DaCHS, and bad values are refused before anything
//! is written. (Booting it for real is the nspawn bootstrap test's job.)

use std::path::Path;
use std::process::Command;

const TOKEN: &str = "glpat-cloudinit-5d2c91";

fn render(vars: &[(&str, &str)]) -> std::process::Output {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../cloud-init/render.sh");
    let mut c = Command::new("bash");
    c.arg(script);
    for k in [
        "VESPA_SOURCE_URL",
        "VESPA_SOURCE_BRANCH",
        "VESPA_GITLAB_TOKEN_FILE",
        "VESPA_GITLAB_REPORT",
        "VESPA_AGENT_DEB_URL",
        "VESPA_APT_SOURCE",
    ] {
        c.env_remove(k);
    }
    c.envs(vars.iter().copied());
    c.output().unwrap()
}

#[test]
fn the_rendered_template_is_valid_cloud_config_with_the_token_in_a_private_file() {
    if !Path::new("/usr/bin/cloud-init").exists() {
        return harness::missing("cloud-init (the test command installs it)");
    }
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
    let token = token.to_str().unwrap();
    for source in [
        (
            "VESPA_AGENT_DEB_URL",
            "https://dl.example.eu/vespa-agent_0.1.0-1_amd64.deb",
        ),
        (
            "VESPA_APT_SOURCE",
            "deb https://apt.example.eu/vespa bookworm main",
        ),
    ] {
        let out = render(&[
            (
                "VESPA_SOURCE_URL",
                "https://gitlab.example.eu/vespa/epnlab-service.git",
            ),
            ("VESPA_GITLAB_TOKEN_FILE", token),
            source,
        ]);
        assert!(out.status.success(), "{out:?}");
        let yaml = String::from_utf8(out.stdout).unwrap();
        let file = dir.path().join("user-data");
        std::fs::write(&file, &yaml).unwrap();
        let check = Command::new("cloud-init")
            .args(["schema", "-c"])
            .arg(&file)
            .output()
            .unwrap();
        assert!(
            check.status.success(),
            "{}{}",
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        );
        // The token: once, as the content of the credential file, which is 0600.
        assert_eq!(yaml.matches(TOKEN).count(), 1, "{yaml}");
        let at = yaml.find(TOKEN).unwrap();
        let entry = &yaml[yaml[..at].rfind("- path:").unwrap()..at];
        assert!(
            entry.contains("/etc/vespa-agent/credentials/gitlab-token")
                && entry.contains("permissions: '0600'"),
            "{entry}"
        );
        // PostgreSQL, then the pg_sphere fix, then DaCHS, then the agent.
        let order: Vec<usize> = [
            "install postgresql-15 postgresql-15-pgsphere",
            "pg_sphere--1.2.0.sql",
            "install gavodachs2-server",
            "enable --now vespa-agent.service",
        ]
        .iter()
        .map(|step| yaml.find(step).unwrap_or_else(|| panic!("no `{step}`")))
        .collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{order:?}");
        assert!(yaml.contains(source.1), "{}", source.1);
        assert!(!yaml.contains("${VESPA_"), "a variable left unfilled");
    }
}

#[test]
fn bad_values_are_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let good_token = dir.path().join("token");
    std::fs::write(&good_token, TOKEN).unwrap();
    let quote_token = dir.path().join("quote");
    std::fs::write(&quote_token, "glpat-\"injected").unwrap();
    let t = good_token.to_str().unwrap();
    let deb = ("VESPA_AGENT_DEB_URL", "https://dl.example.eu/a.deb");
    let url = ("VESPA_SOURCE_URL", "https://gitlab.example.eu/v/s.git");
    for (vars, says) in [
        (
            vec![("VESPA_GITLAB_TOKEN_FILE", t), deb],
            "set VESPA_SOURCE_URL",
        ),
        (
            vec![
                (
                    "VESPA_SOURCE_URL",
                    "https://oauth2:glpat-x@gitlab.example.eu/s.git",
                ),
                ("VESPA_GITLAB_TOKEN_FILE", t),
                deb,
            ],
            "without credentials",
        ),
        (vec![url, ("VESPA_GITLAB_TOKEN_FILE", t)], "exactly one of"),
        (
            vec![
                url,
                ("VESPA_GITLAB_TOKEN_FILE", t),
                deb,
                ("VESPA_APT_SOURCE", "deb http://x bookworm main"),
            ],
            "exactly one of",
        ),
        (
            vec![
                url,
                ("VESPA_GITLAB_TOKEN_FILE", quote_token.to_str().unwrap()),
                deb,
            ],
            "is not a GitLab token",
        ),
        (
            vec![
                url,
                ("VESPA_GITLAB_TOKEN_FILE", t),
                ("VESPA_APT_SOURCE", "deb http://x $(reboot)"),
            ],
            "VESPA_APT_SOURCE must be",
        ),
        (
            vec![
                url,
                ("VESPA_GITLAB_TOKEN_FILE", t),
                deb,
                ("VESPA_GITLAB_REPORT", "yes"),
            ],
            "true or false",
        ),
    ] {
        let out = render(&vars);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && out.stdout.is_empty(),
            "{vars:?}: {out:?}"
        );
        assert!(err.contains(says), "{vars:?}: {err}");
        assert!(!err.contains("injected") && !err.contains(TOKEN), "{err}");
    }
}
