use super::*;
use std::os::unix::fs::PermissionsExt;

struct Dir {
    t: tempfile::TempDir,
}

impl Dir {
    fn new() -> Dir {
        Dir {
            t: tempfile::tempdir().unwrap(),
        }
    }
    fn layout(&self) -> Layout {
        Layout {
            vendor_dir: self.t.path().join("usr/agent.d"),
            config_dir: self.t.path().join("etc"),
            runtime_dir: self.t.path().join("run/agent.d"),
        }
    }
    fn write(&self, rel: &str, body: &str) -> PathBuf {
        let p = self.t.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, body).unwrap();
        p
    }
    fn secret(&self, rel: &str, mode: u32) -> PathBuf {
        let p = self.write(rel, "glpat-very-secret-token\n");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }
    fn load(&self) -> Result<Settings, ConfigError> {
        load_with(&self.layout(), None)
    }
    fn error(&self) -> String {
        self.load().unwrap_err().to_string()
    }
}

#[test]
fn defaults_alone_are_valid() {
    let d = Dir::new();
    let s = d.load().unwrap();
    assert_eq!(s.state_dir, Path::new("/var/lib/vespa-agent"));
    assert_eq!(s.http_listen.to_string(), "127.0.0.1:9471");
    assert_eq!(s.reconcile.interval, Duration::from_secs(300));
    assert_eq!(s.dachs.user, "dachsroot");
    assert_eq!(s.source.url, None);
    assert_eq!(s.source.follow, Follow::Branch("main".into()));
    assert_eq!(s.source.verify, Verify::None);
    assert_eq!(s.reconcile.jitter, Duration::from_secs(30));
}

#[test]
fn unset_jitter_follows_the_interval() {
    let d = Dir::new();
    d.write("etc/agent.toml", "[reconcile]\ninterval = \"10s\"\n");
    assert_eq!(d.load().unwrap().reconcile.jitter, Duration::from_secs(1));
}

#[test]
fn later_layers_win_key_by_key_and_origins_are_kept() {
    let d = Dir::new();
    d.write(
        "usr/agent.d/10-defaults.toml",
        "[reconcile]\ninterval = \"1h\"\njitter = \"1m\"\n",
    );
    d.write("etc/agent.toml", "[reconcile]\ninterval = \"10m\"\n");
    d.write(
        "etc/agent.d/50-http.toml",
        "[http]\nlisten = \"0.0.0.0:9000\"\n",
    );
    let run = d.write(
        "run/agent.d/90-x.toml",
        "\n\n[reconcile]\n\ninterval = \"20m\"\n",
    );
    let s = d.load().unwrap();
    assert_eq!(s.reconcile.interval, Duration::from_secs(1200));
    assert_eq!(s.reconcile.jitter, Duration::from_secs(60));
    assert_eq!(s.http_listen.to_string(), "0.0.0.0:9000");
    let origin = &s.merged.get("reconcile.interval").unwrap().origin;
    assert_eq!(origin.to_string(), format!("{}:5", run.display()));
    assert_eq!(s.merged.files.len(), 4);
}

#[test]
fn unknown_key_names_file_line_and_key() {
    let d = Dir::new();
    let f = d.write(
        "etc/agent.d/50-bad.toml",
        "[http]\nlisten = \"127.0.0.1:1\"\nlistne = \"x\"\n",
    );
    let e = d.error();
    assert!(
        e.starts_with(&format!(
            "{}:3:1: key `http.listne`: unknown key",
            f.display()
        )),
        "{e}"
    );
    assert!(e.contains("listen"), "{e}");
}

#[test]
fn unknown_section_is_an_error() {
    let d = Dir::new();
    d.write("etc/agent.toml", "[htpp]\nlisten = \"x\"\n");
    let e = d.error();
    assert!(e.contains(":1:2: key `htpp`: unknown key"), "{e}");
}

#[test]
fn wrong_type_names_key_and_never_echoes_a_string() {
    let d = Dir::new();
    d.write("etc/agent.toml", "[agent]\nstate-dir = [5]\n");
    let e = d.error();
    assert!(
        e.contains(":2:13: key `agent.state-dir`: wrong type: expected a string, a number or a boolean, found sequence"),
        "{e}"
    );
    let d = Dir::new();
    d.write("etc/agent.toml", "[agent]\nstate-dir = 5\n");
    let e = d.error();
    assert!(
        e.contains(":2:13: key `agent.state-dir`: `5` must be an absolute path"),
        "{e}"
    );

    let d = Dir::new();
    d.write("etc/agent.toml", "source = \"glpat-inline-secret\"\n");
    let e = d.error();
    assert!(e.contains("key `source`"), "{e}");
    assert!(!e.contains("glpat"), "{e}");
}

#[test]
fn inline_secret_is_refused_with_a_hint() {
    let d = Dir::new();
    d.write(
        "etc/agent.toml",
        "[source]\ntoken = \"glpat-inline-secret\"\n",
    );
    let e = d.error();
    assert!(e.contains("key `source.token`: unknown key"), "{e}");
    assert!(e.contains("token-file"), "{e}");
    assert!(!e.contains("glpat"), "{e}");
}

#[test]
fn syntax_error_names_file_and_line() {
    let d = Dir::new();
    let f = d.write("etc/agent.d/10.toml", "[http]\nlisten = \"127.0.0.1:1\n");
    let e = d.error();
    assert!(e.starts_with(&format!("{}:2:", f.display())), "{e}");
}

#[test]
fn out_of_range_values_name_their_line() {
    for (body, key, needle) in [
        (
            "[reconcile]\ninterval = \"1s\"\n",
            "reconcile.interval",
            "out of range",
        ),
        (
            "[reconcile]\ninterval = \"2d\"\n",
            "reconcile.interval",
            "out of range",
        ),
        (
            "[reconcile]\ninterval = \"soon\"\n",
            "reconcile.interval",
            "not a duration",
        ),
        (
            "[reconcile]\ninterval = \"1m\"\njitter = \"2m\"\n",
            "reconcile.jitter",
            "out of range",
        ),
        (
            "[reconcile]\nshutdown-timeout = \"0s\"\n",
            "reconcile.shutdown-timeout",
            "out of range",
        ),
        (
            "[http]\nlisten = \"localhost\"\n",
            "http.listen",
            "not an address",
        ),
        (
            "[agent]\nstate-dir = \"var/lib\"\n",
            "agent.state-dir",
            "absolute path",
        ),
        (
            "[dachs]\nuser = \"Root User\"\n",
            "dachs.user",
            "not a valid user name",
        ),
        ("[dachs]\nurl = \"ftp://x\"\n", "dachs.url", "http"),
        (
            "[source]\nbranch = \"a..b\"\n",
            "source.branch",
            "not a valid git branch",
        ),
        (
            "[source]\nurl = \"gopher://x/y\"\n",
            "source.url",
            "unsupported scheme",
        ),
        (
            "[dachs]\ncommand-timeout = \"1s\"\n",
            "dachs.command-timeout",
            "out of range",
        ),
        (
            "[dachs]\napply = \"yes\"\n",
            "dachs.apply",
            "must be true or false",
        ),
        (
            "[dachs]\nrestart = \"systemctl restart dachs\"\n",
            "dachs.restart",
            "starting with an absolute path",
        ),
        (
            "[dachs]\ndrift = \"ignore\"\n",
            "dachs.drift",
            "must be revert or report",
        ),
        (
            "[granules]\nconcurrency = 0\n",
            "granules.concurrency",
            "from 1 to 64",
        ),
        (
            "[granules]\ncredentials-dir = \"creds\"\n",
            "granules.credentials-dir",
            "absolute path",
        ),
        (
            "[granules]\nretries = 11\n",
            "granules.retries",
            "from 0 to 10",
        ),
        (
            "[granules]\nbandwidth-limit = \"fast\"\n",
            "granules.bandwidth-limit",
            "is not a size",
        ),
        (
            "[granules]\ndisk-reserve = \"-1G\"\n",
            "granules.disk-reserve",
            "is not a size",
        ),
        (
            "[granules]\ndisk-reserve = \"2Q\"\n",
            "granules.disk-reserve",
            "is not a size",
        ),
    ] {
        let d = Dir::new();
        d.write("etc/agent.toml", body);
        let e = d.error();
        let line = body.lines().count();
        assert!(e.contains(&format!("agent.toml:{line}:")), "{body}: {e}");
        assert!(e.contains(&format!("key `{key}`")), "{body}: {e}");
        assert!(e.contains(needle), "{body}: {e}");
    }
}

#[test]
fn token_in_repository_url_is_refused_without_echoing_it() {
    let d = Dir::new();
    d.write(
        "etc/agent.toml",
        "[source]\nurl = \"https://oauth2:glpat-xyz@gitlab.example/a.git\"\n",
    );
    let e = d.error();
    assert!(e.contains("source.token-file"), "{e}");
    assert!(!e.contains("glpat"), "{e}");
}

#[test]
fn secret_files_must_be_private() {
    let d = Dir::new();
    let tok = d.secret("etc/token", 0o644);
    d.write(
        "etc/agent.toml",
        &format!("[source]\ntoken-file = \"{}\"\n", tok.display()),
    );
    let e = d.error();
    assert!(
        e.contains("agent.toml:2:") && e.contains("key `source.token-file`"),
        "{e}"
    );
    assert!(e.contains("chmod 0600"), "{e}");
    assert!(!e.contains("glpat"), "{e}");

    std::fs::set_permissions(&tok, std::fs::Permissions::from_mode(0o600)).unwrap();
    let s = d.load().unwrap();
    assert_eq!(s.source.token_file.unwrap().path, tok);
}

#[test]
fn credential_names_resolve_in_the_credentials_directory() {
    let d = Dir::new();
    d.secret("creds/webhook", 0o400);
    d.write(
        "etc/agent.toml",
        "[source]\nwebhook-secret-file = \"webhook\"\n",
    );
    // Without $CREDENTIALS_DIRECTORY the name is looked up in granules.credentials-dir.
    assert!(d.error().contains("credentials/webhook"), "{}", d.error());
    let creds = d.t.path().join("creds");
    d.write(
        "etc/agent.d/10-creds.toml",
        &format!("[granules]\ncredentials-dir = \"{}\"\n", creds.display()),
    );
    let s = load_with(&d.layout(), None).unwrap();
    assert_eq!(
        s.source.webhook_secret_file.unwrap().path,
        creds.join("webhook")
    );
    let s = load_with(&d.layout(), Some(&creds)).unwrap();
    assert_eq!(
        s.source.webhook_secret_file.unwrap().path,
        creds.join("webhook")
    );
}

#[test]
fn render_is_valid_toml_with_origins_and_no_secret_contents() {
    let d = Dir::new();
    let tok = d.secret("etc/token", 0o600);
    d.write(
        "etc/agent.toml",
        &format!(
            "[source]\nurl = \"file:///srv/repo\"\ntoken-file = \"{}\"\n",
            tok.display()
        ),
    );
    let s = d.load().unwrap();
    let out = render::render(&s);
    assert!(!out.contains("glpat"), "{out}");
    assert!(out.contains("agent.toml:2"), "{out}");
    assert!(
        out.contains("state-dir = \"/var/lib/vespa-agent\"  # default"),
        "{out}"
    );
    assert!(out.contains("secret file"), "{out}");
    // Printed output parses as a configuration again and gives the same settings.
    let again = d.write("again/agent.toml", &out);
    let merged = merge_files(&[again]).unwrap();
    let s2 = Settings::from_merged(merged, None).unwrap();
    assert_eq!(s2.source, s.source);
    assert_eq!(s2.reconcile, s.reconcile);
}

#[test]
fn numbers_may_be_written_bare_or_quoted() {
    for text in [
        "[source]\nkeep-revisions = 3\n",
        "[source]\nkeep-revisions = \"3\"\n",
    ] {
        let d = Dir::new();
        d.write("etc/agent.toml", text);
        assert_eq!(d.load().unwrap().source.keep_revisions, 3, "{text}");
    }
}

#[test]
fn sizes_read_as_written() {
    use super::byte_size;
    for (v, n) in [
        ("0", 0),
        ("1500", 1500),
        ("20M", 20_000_000),
        ("1.5G", 1_500_000_000),
        ("512Mi", 512 << 20),
        ("2GB", 2_000_000_000),
        ("1 Ki", 1024),
    ] {
        assert_eq!(byte_size(v), Ok(n), "{v}");
    }
    for bad in ["", "M", "1.2.3", "-5", "10 parsecs", "1e999"] {
        assert!(byte_size(bad).is_err(), "{bad}");
    }
}

#[test]
fn openstack_settings_are_checked_where_they_are_written() {
    let d = Dir::new();
    assert!(
        d.load().unwrap().openstack.is_none(),
        "off unless auth-url is set"
    );
    let cred = d.secret("etc/credentials/openstack", 0o600);
    d.write(
        "etc/agent.d/30-openstack.toml",
        "[openstack]\nauth-url = \"https://keystone.example:5000/v3/\"\n",
    );
    let e = d.error();
    assert!(
        e.contains("30-openstack.toml:2:") && e.contains("set openstack.credential-file too"),
        "{e}"
    );
    for (bad, says) in [
        ("server-id = \"../servers/other\"", "is not an id"),
        ("server-id = \"a b\"", "is not an id"),
        ("image = \"x/y\"", "is not an id"),
        (
            "metadata-url = \"ftp://169.254.169.254\"",
            "http:// or https://",
        ),
        ("rebuild-interval = \"5m\"", "out of range"),
    ] {
        let id = if bad.starts_with("server-id") {
            "image = \"debian-12\""
        } else {
            "server-id = \"6a0e4b1c-2f4d\""
        };
        d.write(
            "etc/agent.d/30-openstack.toml",
            &format!(
                "[openstack]\nauth-url = \"https://keystone.example:5000/v3\"\n\
                 credential-file = \"{}\"\n{id}\n{bad}\n",
                cred.display()
            ),
        );
        let e = d.error();
        assert!(
            e.contains("30-openstack.toml:5:") && e.contains(says),
            "{bad}: {e}"
        );
        assert!(!e.contains("glpat"), "{e}");
    }
    d.write(
        "etc/agent.d/30-openstack.toml",
        &format!(
            "[openstack]\nauth-url = \"https://keystone.example:5000/v3/\"\n\
             credential-file = \"{}\"\nserver-id = \"6a0e4b1c-2f4d\"\n",
            cred.display()
        ),
    );
    let o = d.load().unwrap().openstack.unwrap();
    assert_eq!(o.auth_url, "https://keystone.example:5000/v3");
    assert_eq!(o.metadata_url, "http://169.254.169.254");
    assert_eq!(o.rebuild_interval, std::time::Duration::from_secs(86_400));
    assert_eq!(o.image, None);
}

#[test]
fn rebuild_policy_is_off_by_default_and_checked_where_written() {
    let d = Dir::new();
    let r = d.load().unwrap().rebuild;
    assert_eq!(r.automatic, Automatic::Off);
    assert_eq!(r.unhealthy_for, std::time::Duration::from_secs(1800));
    assert_eq!(r.repair_interval, std::time::Duration::from_secs(6 * 3600));
    assert!(!r.dry_run);
    for (bad, says) in [
        ("automatic = \"yes\"", "must be off, repair or vm"),
        ("automatic = true", "must be off, repair or vm"),
        ("unhealthy-for = \"1s\"", "out of range"),
        ("unhealthy-for = \"soon\"", "duration"),
        ("repair-interval = \"10s\"", "out of range"),
        ("dry-run = \"maybe\"", "true or false"),
        // Level 2 needs somewhere to ask for the new VM.
        ("automatic = \"vm\"", "set [openstack]"),
    ] {
        d.write(
            "etc/agent.d/40-rebuild.toml",
            &format!("[rebuild]\n\n{bad}\n"),
        );
        let e = d.error();
        assert!(
            e.contains("40-rebuild.toml:3:") && e.contains(says),
            "{bad}: {e}"
        );
    }
    d.write(
        "etc/agent.d/40-rebuild.toml",
        "[rebuild]\nautomatic = \"repair\"\nunhealthy-for = \"10m\"\ndry-run = true\n",
    );
    let r = d.load().unwrap().rebuild;
    assert_eq!(r.automatic, Automatic::Repair);
    assert_eq!(r.unhealthy_for, std::time::Duration::from_secs(600));
    assert!(r.dry_run);
}

#[test]
fn the_service_folder_stays_inside_the_repository() {
    for (written, read) in [
        ("paris/dachs-1", "paris/dachs-1"),
        ("/paris/dachs-1/", "paris/dachs-1"),
    ] {
        let d = Dir::new();
        d.write(
            "etc/agent.toml",
            &format!("[source]\npath = \"{written}\"\n"),
        );
        assert_eq!(d.load().unwrap().source.path, read, "{written}");
    }
    let d = Dir::new();
    assert_eq!(d.load().unwrap().source.path, "", "the root unless set");
    for bad in ["../other", "a/../../b", "a//b", "./a", "a/.git", "/", ""] {
        let d = Dir::new();
        let f = d.write("etc/agent.toml", &format!("[source]\npath = \"{bad}\"\n"));
        let e = d.error();
        assert!(
            e.starts_with(&format!("{}:2:", f.display())) && e.contains("source.path"),
            "{bad}: {e}"
        );
    }
}

#[test]
fn the_regression_gate_is_checked_where_it_is_written() {
    let d = Dir::new();
    let gate = d.load().unwrap().dachs.regression.unwrap();
    assert_eq!((gate.tag.as_str(), gate.timeout.as_secs()), ("deploy", 300));
    d.write("etc/agent.toml", "[dachs]\nregression-tests = false\n");
    assert_eq!(d.load().unwrap().dachs.regression, None);
    for (bad, key) in [
        (
            "regression-tag = \"deploy; rm -rf /\"",
            "dachs.regression-tag",
        ),
        ("regression-tag = \"a b\"", "dachs.regression-tag"),
        ("regression-timeout = \"1s\"", "dachs.regression-timeout"),
        ("regression-timeout = \"2h\"", "dachs.regression-timeout"),
        ("regression-tests = \"perhaps\"", "dachs.regression-tests"),
    ] {
        let d = Dir::new();
        let f = d.write("etc/agent.toml", &format!("[dachs]\n{bad}\n"));
        let e = d.error();
        assert!(
            e.starts_with(&format!("{}:2:", f.display())) && e.contains(key),
            "{bad}: {e}"
        );
    }
}
