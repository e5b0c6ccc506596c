//! The `[server]` table reaching DaCHS: rendered into the real /etc/gavo.rc (the operator's
//! keys kept), DaCHS restarted only when a managed key changed, and a failed restart undone.
//! A test binary of its own: it restarts the DaCHS that other tests query, and test binaries
//! run one after another. The original gavo.rc is put back, and DaCHS restarted, at the end.

use std::path::Path;
use std::time::Duration;

use harness::git::run_git;
use harness::*;

const GAVO_RC: &str = "/etc/gavo.rc";

/// Puts the harness's gavo.rc back and restarts DaCHS with it, whatever the test did.
struct RestoreRc(String);

impl Drop for RestoreRc {
    fn drop(&mut self) {
        std::fs::write(GAVO_RC, &self.0).unwrap();
        let _ = std::process::Command::new("dachs")
            .args(["serve", "restart"])
            .output();
        eventually("DaCHS back after the test", Duration::from_secs(30), || {
            get(&format!(
                "{}/tap/availability",
                dachs_url().trim_start_matches("http://")
            ))
            .filter(|(c, b)| *c == 200 && b.contains("true"))
        });
    }
}

fn commit_service(repo: &Path, sitename: &str) {
    std::fs::write(
        repo.join("vespa-service.toml"),
        format!(
            "[server]\nsitename = \"{sitename}\"\nauthority = \"vespa-rc.test\"\n\
             maintainer-address = \"ops@vespa-rc.test\"\n"
        ),
    )
    .unwrap();
    run_git(repo, &["add", "-A"]);
    run_git(repo, &["commit", "-q", "-m", sitename]);
}

fn front_page() -> String {
    get(&format!("{}/", dachs_url().trim_start_matches("http://")))
        .map(|(_, b)| b)
        .unwrap_or_default()
}

#[test]
fn server_settings_reach_gavo_rc_and_dachs_restarts_only_when_they_change() {
    // It restarts the host's DaCHS: no other suite may use it meanwhile.
    harness::lock::own_dachs();
    if !require_dachs() {
        return;
    }
    let original = std::fs::read_to_string(GAVO_RC).unwrap();
    let _restore = RestoreRc(original.clone());
    let password = original
        .lines()
        .find(|l| l.starts_with("adminpasswd"))
        .expect("the harness sets an admin password")
        .to_owned();

    let repo = tempfile::tempdir().unwrap();
    run_git(repo.path(), &["init", "-q", "-b", "main"]);
    commit_service(repo.path(), "vespa-agent rc test");
    let home = Home::new(&dachs_url(), "");
    let (wrapper, log) = dachs_wrapper(&home);
    home.write(
        "etc/agent.d/20-source.toml",
        &format!(
            "[source]\nurl = \"{}\"\n[dachs]\nbin = \"{}\"\n",
            repo.path().display(),
            wrapper.display()
        ),
    );

    let plan = home.output(&["plan"]);
    assert_eq!(plan.code(), 2, "{plan:?}");
    assert!(
        plan.stdout.contains("+ sitename: vespa-agent rc test"),
        "{}",
        plan.stdout
    );
    assert!(
        !plan.stdout.contains("adminpasswd"),
        "plan showed an operator key:\n{}",
        plan.stdout
    );
    assert_eq!(
        std::fs::read_to_string(GAVO_RC).unwrap(),
        original,
        "plan wrote gavo.rc"
    );

    let out = home.output(&["sync"]);
    assert_eq!(out.code(), 0, "{out:?}");
    let rc = std::fs::read_to_string(GAVO_RC).unwrap();
    for want in [
        "sitename: vespa-agent rc test",
        "authority: vespa-rc.test",
        "maintainerAddress: ops@vespa-rc.test",
        &password,
        "serverPort: 8080",
    ] {
        assert!(rc.contains(want), "gavo.rc lacks `{want}`:\n{rc}");
    }
    assert!(
        !out.stderr
            .contains(password.split(':').nth(1).unwrap().trim()),
        "the admin password was logged"
    );
    assert_eq!(lines(&log), ["serve restart"], "exactly one restart");
    assert!(
        front_page().contains("vespa-agent rc test"),
        "DaCHS does not serve the new sitename"
    );

    // Nothing changed: no restart.
    assert_eq!(home.output(&["sync"]).code(), 0);
    assert_eq!(lines(&log).len(), 1, "{:?}", lines(&log));

    // A restart that fails: the previous gavo.rc comes back, the commit is refused.
    home.write(
        "etc/agent.d/30-restart.toml",
        "[dachs]\nrestart = \"/bin/false\"\n",
    );
    commit_service(repo.path(), "never served");
    let out = home.output(&["sync"]);
    assert_eq!(out.code(), 1, "{out:?}");
    assert!(
        out.stderr
            .contains("DaCHS settings /etc/gavo.rc: restart failed"),
        "{}",
        out.stderr
    );
    assert_eq!(
        std::fs::read_to_string(GAVO_RC).unwrap(),
        rc,
        "the previous gavo.rc is not back"
    );
    assert!(front_page().contains("vespa-agent rc test"));
}
