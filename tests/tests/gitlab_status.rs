//! Commit statuses in GitLab, against a double of its commit status API (tests/src/gitlab.rs;
//! no GitLab runs here): a good commit is marked success under `vespa-agent/<name>`, a refused
//! one failed with the reason, a repeat is no error, and a GitLab that is down or refuses the
//! token never holds up a deploy nor shows the token anywhere.

use harness::git::LocalRepo;
use harness::gitlab::{GitlabDouble, TOKEN};
use harness::*;

fn configure(home: &Home, api_url: &str, token: &str) {
    let token_file = secret_file(home, "etc/gitlab-token", token);
    home.write(
        "etc/agent.d/30-gitlab.toml",
        &format!(
            "[gitlab]\nreport = true\napi-url = \"{api_url}\"\nproject = \"vespa/epnlab service\"\n\
             token-file = \"{}\"\nstatus-name = \"vespa-agent/test-node\"\n",
            token_file.display()
        ),
    );
}

#[test]
fn commits_get_their_status_and_a_refused_one_its_reason() {
    if !require_dachs() {
        return;
    }
    let gitlab = GitlabDouble::start();
    let repo = LocalRepo::new();
    let home = repo.home("");
    configure(&home, &gitlab.api_url(), TOKEN);
    let good = repo.run(&["rev-parse", "HEAD"]);

    let out = home.output(&["sync"]);
    assert_eq!(out.code(), 0, "{out:?}");
    let st = gitlab.statuses();
    assert_eq!(st.len(), 1, "{st:?}");
    assert_eq!(
        (
            st[0].project.as_str(),
            st[0].sha.as_str(),
            st[0].state.as_str(),
            st[0].name.as_str()
        ),
        (
            "vespa%2Fepnlab%20service",
            good.as_str(),
            "success",
            "vespa-agent/test-node"
        )
    );

    // Another process, the same commit: GitLab refuses the repeat, which is no failure.
    let out = home.output(&["sync"]);
    assert_eq!(out.code(), 0, "{out:?}");
    assert!(
        !out.stderr.contains("cannot set the commit status"),
        "{}",
        out.stderr
    );
    assert_eq!(gitlab.refused.lock().unwrap().as_slice(), [400]);

    repo.write("vespa-service.toml", "[[resource]]\ndir = \"nowhere\"\n");
    let bad = repo.commit("a resource that is not there");
    let out = home.output(&["sync"]);
    assert_eq!(out.code(), 1, "{out:?}");
    let st = gitlab.statuses();
    let last = st.last().unwrap();
    assert_eq!(
        (last.sha.as_str(), last.state.as_str()),
        (bad.as_str(), "failed")
    );
    assert!(
        last.description.starts_with("refused at validate") && last.description.contains("nowhere"),
        "{}",
        last.description
    );
    assert!(last.description.chars().count() <= 255);
}

#[test]
fn a_gitlab_that_is_down_or_refuses_the_token_holds_nothing_up() {
    if !require_dachs() {
        return;
    }
    let repo = LocalRepo::new();
    let home = repo.home("");
    configure(
        &home,
        &format!("http://127.0.0.1:{}/api/v4", closed_port()),
        TOKEN,
    );
    let out = home.output(&["sync"]);
    assert_eq!(out.code(), 0, "{out:?}");
    assert!(
        out.stderr
            .contains("cannot set the commit status in GitLab"),
        "{}",
        out.stderr
    );
    assert!(current(&home).is_some());

    let gitlab = GitlabDouble::start();
    let wrong = "glpat-not-the-one-4411";
    configure(&home, &gitlab.api_url(), wrong);
    repo.write("NOTES", "a second commit");
    repo.commit("another");
    let out = home.output(&["sync", "-v"]);
    assert_eq!(out.code(), 0, "{out:?}");
    assert!(out.stderr.contains("HTTP 401"), "{}", out.stderr);
    assert_eq!(gitlab.refused.lock().unwrap().as_slice(), [401]);
    for secret in [wrong, TOKEN] {
        assert!(!out.stderr.contains(secret) && !out.stdout.contains(secret));
    }
}

#[test]
fn reporting_asks_for_what_it_cannot_derive() {
    let repo = LocalRepo::new();
    let home = repo.home("");
    home.write("etc/agent.d/30-gitlab.toml", "[gitlab]\nreport = true\n");
    let out = home.output(&["check-config"]);
    assert_eq!(out.code(), 78, "{out:?}");
    assert!(out.stderr.contains("set gitlab.api-url"), "{}", out.stderr);
    home.write(
        "etc/agent.d/30-gitlab.toml",
        "[gitlab]\nreport = true\napi-url = \"http://gitlab.example/api/v4\"\nproject = \"a/b\"\n",
    );
    let out = home.output(&["check-config"]);
    assert_eq!(out.code(), 78, "{out:?}");
    assert!(
        out.stderr.contains("set gitlab.token-file"),
        "{}",
        out.stderr
    );
    home.write(
        "etc/agent.d/30-gitlab.toml",
        "[gitlab]\nreport = true\napi-url = \"ftp://gitlab.example\"\n",
    );
    let out = home.output(&["check-config"]);
    assert!(
        out.stderr.contains("must be an http(s) URL"),
        "{}",
        out.stderr
    );
}
