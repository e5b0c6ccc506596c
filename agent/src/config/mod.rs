//! The agent's configuration, in three stages (after coreos/zincati):
//! [`fragments`] (one file as written) -> [`Merged`] (every key's winning value and the file and
//! line it came from) -> [`Settings`] (typed, range-checked, secrets resolved and checked).
//!
//! A configuration is accepted whole or not at all: a reload that fails any check leaves the
//! running settings untouched.

pub mod error;
pub mod follow;
pub mod fragments;
pub mod layers;
pub mod render;
pub mod secret;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use error::{ConfigError, Location};
pub use layers::Layout;
pub use secret::{Secret, SecretFile};

pub use follow::Follow;

use fragments::Fragment;
use toml::Spanned;

/// Where a value came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// The built-in default.
    Default,
    File(Arc<Location>),
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Default => f.write_str("default"),
            Origin::File(loc) => write!(f, "{}:{}", loc.path.display(), loc.line),
        }
    }
}

/// A value and where it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sourced<T> {
    pub value: T,
    pub origin: Origin,
}

/// One key the configuration understands.
pub struct KeySpec {
    pub key: &'static str,
    /// `None`: unset unless a file sets it.
    pub default: Option<&'static str>,
    /// The value names a file holding a secret.
    pub secret: bool,
    pub help: &'static str,
}

/// Every key, in the order `check-config` prints them. The man page vespa-agent.toml(5)
/// documents the same list.
pub const KEYS: &[KeySpec] = &[
    KeySpec {
        key: "agent.state-dir",
        default: Some("/var/lib/vespa-agent"),
        secret: false,
        help: "state store (state.db), the repository mirror, revisions, current, control socket",
    },
    KeySpec {
        key: "http.listen",
        default: Some("127.0.0.1:9471"),
        secret: false,
        help: "address of /metrics, /healthz, /readyz, /status",
    },
    KeySpec {
        key: "http.web-config-file",
        default: None,
        secret: false,
        help: "TLS and basic auth of http.listen: the web configuration file of Prometheus's exporters (unset: plain HTTP, no auth)",
    },
    KeySpec {
        key: "reconcile.interval",
        default: Some("5m"),
        secret: false,
        help: "time between two reconcile passes (10s to 1d)",
    },
    KeySpec {
        key: "reconcile.jitter",
        default: None,
        secret: false,
        help: "random extra delay added to each interval (0 to interval; unset: a tenth of the interval)",
    },
    KeySpec {
        key: "reconcile.stall-timeout",
        default: Some("15m"),
        secret: false,
        help: "a loop silent for longer is stuck: /healthz fails, the watchdog is not fed",
    },
    KeySpec {
        key: "reconcile.shutdown-timeout",
        default: Some("30s"),
        secret: false,
        help: "how long a stop waits for a pass to reach a safe point (1s to 10m)",
    },
    KeySpec {
        key: "dachs.bin",
        default: Some("/usr/bin/dachs"),
        secret: false,
        help: "the dachs command",
    },
    KeySpec {
        key: "dachs.user",
        default: Some("dachsroot"),
        secret: false,
        help: "the DaCHS admin account that dachs commands run as",
    },
    KeySpec {
        key: "dachs.inputs-dir",
        default: Some("/var/gavo/inputs"),
        secret: false,
        help: "DaCHS's inputs directory (one folder per resource)",
    },
    KeySpec {
        key: "dachs.gavo-rc",
        default: Some("/etc/gavo.rc"),
        secret: false,
        help: "DaCHS's configuration file",
    },
    KeySpec {
        key: "dachs.url",
        default: Some("http://127.0.0.1:8080"),
        secret: false,
        help: "where the local DaCHS server answers (its TAP service is <url>/tap)",
    },
    KeySpec {
        key: "dachs.query-timeout",
        default: Some("30s"),
        secret: false,
        help: "time limit of one health-check query (1s to 10m)",
    },
    KeySpec {
        key: "dachs.command-timeout",
        default: Some("30m"),
        secret: false,
        help: "time limit of one dachs command such as an import (10s to 1d)",
    },
    KeySpec {
        key: "dachs.restart",
        default: Some("auto"),
        secret: false,
        help: "how to restart DaCHS after a gavo.rc change: auto (systemctl restart dachs under systemd, else dachs serve restart) or a command",
    },
    KeySpec {
        key: "dachs.drift",
        default: Some("revert"),
        secret: false,
        help: "local edits of managed files under the inputs directory: revert (put the revision back) or report",
    },
    KeySpec {
        key: "dachs.regression-tests",
        default: Some("true"),
        secret: false,
        help: "run a deployed RD's <regSuite> tests (dachs test) as part of the apply gate",
    },
    KeySpec {
        key: "dachs.regression-tag",
        default: Some("deploy"),
        secret: false,
        help: "the tag whose tests run besides the untagged ones (dachs test -t; empty: untagged only)",
    },
    KeySpec {
        key: "dachs.regression-timeout",
        default: Some("5m"),
        secret: false,
        help: "time limit of one RD's regression suites (5s to 1h)",
    },
    KeySpec {
        key: "dachs.apply",
        default: Some("true"),
        secret: false,
        help: "apply revisions to DaCHS; false only follows the repository and checks health",
    },
    KeySpec {
        key: "source.url",
        default: None,
        secret: false,
        help: "the service repository (https://, file:// or an absolute path); no token in it",
    },
    KeySpec {
        key: "source.branch",
        default: Some("main"),
        secret: false,
        help: "the branch of the service repository to follow",
    },
    KeySpec {
        key: "source.tag",
        default: None,
        secret: false,
        help: "follow this tag instead of the branch",
    },
    KeySpec {
        key: "source.commit",
        default: None,
        secret: false,
        help: "pin this commit (40 hex digits; it must be on source.branch)",
    },
    KeySpec {
        key: "source.username",
        default: Some("oauth2"),
        secret: false,
        help: "user name sent with the token (oauth2, or a deploy token's name)",
    },
    KeySpec {
        key: "source.token-file",
        default: None,
        secret: true,
        help: "GitLab deploy or project access token (a path or a credential name)",
    },
    KeySpec {
        key: "source.webhook-secret-file",
        default: None,
        secret: true,
        help: "secret GitLab sends in X-Gitlab-Token (a path or a credential name)",
    },
    KeySpec {
        key: "source.ca-file",
        default: None,
        secret: false,
        help: "PEM bundle of the CAs to trust for an https:// repository (unset: the system's)",
    },
    KeySpec {
        key: "source.path",
        default: None,
        secret: false,
        help: "the repository folder holding vespa-service.toml (unset: the repository's root)",
    },
    KeySpec {
        key: "source.keep-revisions",
        default: Some("5"),
        secret: false,
        help: "revisions kept on disk, besides the applied and desired ones (1 to 100)",
    },
    KeySpec {
        key: "source.verify",
        default: Some("none"),
        secret: false,
        help: "accept only signed commits: none, ssh or openpgp",
    },
    KeySpec {
        key: "source.allowed-signers-file",
        default: None,
        secret: false,
        help: "trusted SSH keys, in ssh-keygen's allowed_signers format (verify = \"ssh\")",
    },
    KeySpec {
        key: "source.keyring-file",
        default: None,
        secret: false,
        help: "trusted OpenPGP public keys, a keyring for gpgv (verify = \"openpgp\")",
    },
    KeySpec {
        key: "gitlab.report",
        default: Some("false"),
        secret: false,
        help: "set the commit status of each commit the agent applies or refuses in GitLab",
    },
    KeySpec {
        key: "gitlab.api-url",
        default: None,
        secret: false,
        help: "GitLab's REST API (unset: <scheme>://<host>/api/v4 of an http(s) source.url)",
    },
    KeySpec {
        key: "gitlab.project",
        default: None,
        secret: false,
        help: "the project's id or path, like vespa/epnlab (unset: source.url's path)",
    },
    KeySpec {
        key: "gitlab.token-file",
        default: None,
        secret: true,
        help: "a token with api scope (a path or a credential name; unset: source.token-file)",
    },
    KeySpec {
        key: "gitlab.status-name",
        default: None,
        secret: false,
        help: "the status's name in GitLab (unset: vespa-agent/<hostname>)",
    },
    KeySpec {
        key: "openstack.auth-url",
        default: None,
        secret: false,
        help: "Keystone v3, like https://keystone.example:5000/v3 (set it to allow `rebuild --vm`)",
    },
    KeySpec {
        key: "openstack.credential-file",
        default: None,
        secret: true,
        help: "a Keystone application credential as `id:secret`, mode 0600 (a path or a credential name)",
    },
    KeySpec {
        key: "openstack.server-id",
        default: None,
        secret: false,
        help: "this VM's server id: `rebuild --vm` refuses when the metadata service names another",
    },
    KeySpec {
        key: "openstack.image",
        default: None,
        secret: false,
        help: "the image id to rebuild from (unset: the server's current image)",
    },
    KeySpec {
        key: "openstack.metadata-url",
        default: Some("http://169.254.169.254"),
        secret: false,
        help: "the metadata service, which tells a VM its own server id",
    },
    KeySpec {
        key: "openstack.rebuild-interval",
        default: Some("24h"),
        secret: false,
        help: "at most one VM rebuild per this period, recorded in the server's metadata in Nova (1h to 30d)",
    },
    KeySpec {
        key: "rebuild.automatic",
        default: Some("off"),
        secret: false,
        help: "off; repair: run `vespa-agent-rebuild` (level 1) after DaCHS has failed its health check for rebuild.unhealthy-for; vm: also ask OpenStack for a new VM when that repair fails and DaCHS still does not answer (needs [openstack])",
    },
    KeySpec {
        key: "rebuild.unhealthy-for",
        default: Some("30m"),
        secret: false,
        help: "how long DaCHS must keep failing its health check, over at least two passes in a row, before an automatic repair (10s to 7d)",
    },
    KeySpec {
        key: "rebuild.repair-interval",
        default: Some("6h"),
        secret: false,
        help: "at most one automatic repair per this period, recorded in the state store (1m to 30d); a VM rebuild is limited by openstack.rebuild-interval",
    },
    KeySpec {
        key: "rebuild.dry-run",
        default: Some("false"),
        secret: false,
        help: "decide, log, count and report as rebuild.automatic says, but start nothing",
    },
    KeySpec {
        key: "granules.credentials-dir",
        default: Some("/etc/vespa-agent/credentials"),
        secret: false,
        help: "credentials: a collection's `credential = NAME` is the file NAME here (`user:password`, mode 0600), and so is a `*-file` credential name when $CREDENTIALS_DIRECTORY is unset",
    },
    KeySpec {
        key: "granules.concurrency",
        default: Some("4"),
        secret: false,
        help: "granule files transferred at once (1 to 64)",
    },
    KeySpec {
        key: "granules.retries",
        default: Some("3"),
        secret: false,
        help: "retries of a failed transfer within a pass, with backoff, resuming where it broke (0 to 10)",
    },
    KeySpec {
        key: "granules.bandwidth-limit",
        default: Some("0"),
        secret: false,
        help: "bytes per second for all transfers together, like \"20M\" (K, M, G: powers of 1000; Ki, Mi, Gi: of 1024); 0: no limit",
    },
    KeySpec {
        key: "granules.disk-reserve",
        default: Some("1G"),
        secret: false,
        help: "free space a transfer never takes from the filesystem of the data directories",
    },
    KeySpec {
        key: "granules.stall-timeout",
        default: Some("60s"),
        secret: false,
        help: "a transfer or listing that sends nothing for this long is broken off and retried",
    },
];

/// Every key's winning value as written (a string), with its origin. Keys no file sets and that
/// have no default are absent.
#[derive(Clone, Debug, Default)]
pub struct Merged {
    values: BTreeMap<&'static str, Sourced<String>>,
    /// The files read, lowest priority first.
    pub files: Vec<PathBuf>,
}

impl Merged {
    pub fn get(&self, key: &str) -> Option<&Sourced<String>> {
        self.values.get(key)
    }
}

/// The validated settings the agent runs with.
#[derive(Clone, Debug)]
pub struct Settings {
    pub state_dir: PathBuf,
    pub http_listen: SocketAddr,
    /// TLS and basic auth of the listener (exporter-toolkit's format); None: plain HTTP.
    pub web_config_file: Option<PathBuf>,
    pub reconcile: ReconcileSettings,
    pub dachs: DachsSettings,
    pub source: SourceSettings,
    pub granules: GranuleSettings,
    /// Commit status reporting; None unless `gitlab.report` is on.
    pub gitlab: Option<GitlabSettings>,
    /// Rebuilding this VM through OpenStack; None unless `openstack.auth-url` is set.
    pub openstack: Option<OpenstackSettings>,
    /// When the agent repairs or rebuilds its node on its own.
    pub rebuild: RebuildSettings,
    /// What was merged, for `check-config` and `/status`.
    pub merged: Merged,
}

/// `rebuild.automatic`: how far the agent goes on its own when DaCHS stays unhealthy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Automatic {
    Off,
    /// Level 1: `vespa-agent-rebuild.service`.
    Repair,
    /// Level 1, then level 2 (OpenStack) when the repair fails and DaCHS still does not answer.
    Vm,
}

impl Automatic {
    pub fn as_str(self) -> &'static str {
        match self {
            Automatic::Off => "off",
            Automatic::Repair => "repair",
            Automatic::Vm => "vm",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RebuildSettings {
    pub automatic: Automatic,
    pub unhealthy_for: Duration,
    pub repair_interval: Duration,
    pub dry_run: bool,
}

#[derive(Clone, Debug)]
pub struct OpenstackSettings {
    /// Ends without `/`: `https://keystone.example:5000/v3`.
    pub auth_url: String,
    pub credential_file: SecretFile,
    pub server_id: String,
    pub image: Option<String>,
    pub metadata_url: String,
    pub rebuild_interval: Duration,
}

#[derive(Clone, Debug)]
pub struct GitlabSettings {
    /// Ends without `/`: `https://gitlab.example/api/v4`.
    pub api_url: String,
    /// An id or a path (`group/project`), sent percent-encoded.
    pub project: String,
    pub token_file: SecretFile,
    pub status_name: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GranuleSettings {
    /// Where collection credentials are (`granules.credentials-dir`).
    pub credentials_dir: PathBuf,
    /// Files transferred at once.
    pub concurrency: usize,
    /// Retries of a failed transfer within a pass.
    pub retries: u32,
    /// Bytes per second for all transfers together; 0: no limit.
    pub bandwidth_limit: u64,
    /// Free bytes a transfer never takes from the data directories' filesystem.
    pub disk_reserve: u64,
    /// Silence after which a transfer is broken off.
    pub stall_timeout: Duration,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReconcileSettings {
    pub interval: Duration,
    pub jitter: Duration,
    pub stall_timeout: Duration,
    pub shutdown_timeout: Duration,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DachsSettings {
    pub bin: PathBuf,
    pub user: String,
    pub inputs_dir: PathBuf,
    pub gavo_rc: PathBuf,
    /// Without a trailing slash.
    pub url: String,
    pub query_timeout: Duration,
    pub command_timeout: Duration,
    /// False: follow the repository without touching DaCHS.
    pub apply: bool,
    /// The restart command; empty for `auto`.
    pub restart: Vec<String>,
    /// `dachs.drift = "revert"`: local edits of managed files are undone by the next pass.
    pub revert_drift: bool,
    /// The provider's regression suites as a deploy gate; `None` when switched off.
    pub regression: Option<Regression>,
}

/// `dachs.regression-*`: how a deployed RD's own tests are run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Regression {
    /// `dachs test -t <tag>`; empty for the untagged tests only.
    pub tag: String,
    pub timeout: Duration,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceSettings {
    pub url: Option<String>,
    pub follow: Follow,
    pub username: String,
    pub token_file: Option<SecretFile>,
    pub webhook_secret_file: Option<SecretFile>,
    pub ca_file: Option<PathBuf>,
    pub keep_revisions: usize,
    pub verify: Verify,
    /// The folder of the repository that is the service (`source.path`), `/`-separated;
    /// empty for the repository's root.
    pub path: String,
}

/// Which commits are accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verify {
    /// Any commit (the default).
    None,
    /// Signed with an SSH key listed in this allowed_signers file.
    Ssh { allowed_signers: PathBuf },
    /// Signed with an OpenPGP key of this keyring.
    OpenPgp { keyring: PathBuf },
}

/// `source.path`: a folder inside the repository, written as git names it (`a/b`). Leading and
/// trailing slashes are forgiven; `..`, `.`, `.git` and absolute paths are not.
pub fn service_folder(v: &str) -> Result<String, String> {
    let trimmed = v.trim_matches('/');
    let parts: Vec<&str> = trimmed.split('/').collect();
    let bad = parts.iter().find(|p| {
        p.is_empty()
            || **p == "."
            || **p == ".."
            || p.eq_ignore_ascii_case(".git")
            || p.contains('\0')
    });
    match bad {
        _ if trimmed.is_empty() => Err("must name a folder of the repository, such as `institute/server`; leave it unset for the root".into()),
        Some(p) => Err(format!("`{v}` must be a folder inside the repository, `/`-separated, without `{p}`")),
        None => Ok(trimmed.to_owned()),
    }
}

/// Reads, merges and validates the configuration of `layout`. Secret names are looked up in
/// `$CREDENTIALS_DIRECTORY` when it is set.
pub fn load(layout: &Layout) -> Result<Settings, ConfigError> {
    let credentials = std::env::var_os(secret::CREDENTIALS_ENV).map(PathBuf::from);
    load_with(layout, credentials.as_deref())
}

pub fn load_with(layout: &Layout, credentials: Option<&Path>) -> Result<Settings, ConfigError> {
    let merged = merge_files(&layout.files()?)?;
    Settings::from_merged(merged, credentials)
}

/// Reads the files in order; a later file's value for a key replaces an earlier one.
pub fn merge_files(files: &[PathBuf]) -> Result<Merged, ConfigError> {
    let mut merged = Merged {
        files: files.to_vec(),
        ..Merged::default()
    };
    for spec in KEYS {
        if let Some(default) = spec.default {
            merged.values.insert(
                spec.key,
                Sourced {
                    value: default.to_owned(),
                    origin: Origin::Default,
                },
            );
        }
    }
    for path in files {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.clone(),
            source,
        })?;
        for (key, value) in flatten(parse_fragment(path, &text)?) {
            let location = Location::from_offset(path.clone(), &text, value.span().start);
            merged.values.insert(
                key,
                Sourced {
                    value: value.into_inner(),
                    origin: Origin::File(Arc::new(location)),
                },
            );
        }
    }
    Ok(merged)
}

fn parse_fragment(path: &Path, text: &str) -> Result<Fragment, ConfigError> {
    let at = |span: Option<std::ops::Range<usize>>| {
        Location::from_offset(path.to_owned(), text, span.map_or(0, |s| s.start))
    };
    let de = toml::Deserializer::parse(text).map_err(|e| ConfigError::Invalid {
        location: at(e.span()),
        key: None,
        message: e.message().to_owned(),
    })?;
    serde_path_to_error::deserialize(de).map_err(|e| {
        let key = e
            .path()
            .to_string()
            .replace(".$__serde_spanned_private_value", "");
        ConfigError::Invalid {
            location: at(e.inner().span()),
            message: describe(&key, e.inner().message()),
            key: Some(key),
        }
    })
}

/// Rewrites serde's message for an operator, and never repeats a string value: a string in the
/// wrong place may be a secret written inline.
pub(crate) fn describe(key: &str, message: &str) -> String {
    if let Some(rest) = message.strip_prefix("unknown field ") {
        let last = key.rsplit('.').next().unwrap_or(key);
        let mut msg = format!(
            "unknown key; {}",
            rest.replace("expected", "known keys here are")
        );
        if ["token", "password", "secret", "webhook-secret", "passwd"].contains(&last) {
            msg.push_str(&format!(
                ". Secrets are never written inline: put it in a file readable only by its \
                 owner (mode 0600) and name that file with `{last}-file`"
            ));
        }
        return msg;
    }
    if let Some(rest) = message.strip_prefix("invalid type: ") {
        let found = rest.split([' ', ',']).next().unwrap_or("value");
        if let Some(i) = rest.find("expected ") {
            return format!("wrong type: {}, found {found}", &rest[i..]);
        }
    }
    message.to_owned()
}

/// The fragment's keys and values, in the order of [`KEYS`].
fn flatten(f: Fragment) -> Vec<(&'static str, Spanned<String>)> {
    let mut out = Vec::new();
    let mut put = |key: &'static str, v: Option<fragments::Value>| {
        if let Some(v) = v {
            let span = v.span();
            out.push((key, Spanned::new(span, v.into_inner().0)));
        }
    };
    if let Some(a) = f.agent {
        put("agent.state-dir", a.state_dir);
    }
    if let Some(h) = f.http {
        put("http.listen", h.listen);
        put("http.web-config-file", h.web_config_file);
    }
    if let Some(r) = f.reconcile {
        put("reconcile.interval", r.interval);
        put("reconcile.jitter", r.jitter);
        put("reconcile.stall-timeout", r.stall_timeout);
        put("reconcile.shutdown-timeout", r.shutdown_timeout);
    }
    if let Some(d) = f.dachs {
        put("dachs.bin", d.bin);
        put("dachs.user", d.user);
        put("dachs.inputs-dir", d.inputs_dir);
        put("dachs.gavo-rc", d.gavo_rc);
        put("dachs.url", d.url);
        put("dachs.query-timeout", d.query_timeout);
        put("dachs.command-timeout", d.command_timeout);
        put("dachs.apply", d.apply);
        put("dachs.restart", d.restart);
        put("dachs.drift", d.drift);
        put("dachs.regression-tests", d.regression_tests);
        put("dachs.regression-tag", d.regression_tag);
        put("dachs.regression-timeout", d.regression_timeout);
    }
    if let Some(s) = f.source {
        put("source.url", s.url);
        put("source.branch", s.branch);
        put("source.tag", s.tag);
        put("source.commit", s.commit);
        put("source.username", s.username);
        put("source.token-file", s.token_file);
        put("source.webhook-secret-file", s.webhook_secret_file);
        put("source.ca-file", s.ca_file);
        put("source.keep-revisions", s.keep_revisions);
        put("source.path", s.path);
        put("source.verify", s.verify);
        put("source.allowed-signers-file", s.allowed_signers_file);
        put("source.keyring-file", s.keyring_file);
    }
    if let Some(g) = f.gitlab {
        put("gitlab.report", g.report);
        put("gitlab.api-url", g.api_url);
        put("gitlab.project", g.project);
        put("gitlab.token-file", g.token_file);
        put("gitlab.status-name", g.status_name);
    }
    if let Some(o) = f.openstack {
        put("openstack.auth-url", o.auth_url);
        put("openstack.credential-file", o.credential_file);
        put("openstack.server-id", o.server_id);
        put("openstack.image", o.image);
        put("openstack.metadata-url", o.metadata_url);
        put("openstack.rebuild-interval", o.rebuild_interval);
    }
    if let Some(r) = f.rebuild {
        put("rebuild.automatic", r.automatic);
        put("rebuild.unhealthy-for", r.unhealthy_for);
        put("rebuild.repair-interval", r.repair_interval);
        put("rebuild.dry-run", r.dry_run);
    }
    if let Some(g) = f.granules {
        put("granules.credentials-dir", g.credentials_dir);
        put("granules.concurrency", g.concurrency);
        put("granules.retries", g.retries);
        put("granules.bandwidth-limit", g.bandwidth_limit);
        put("granules.disk-reserve", g.disk_reserve);
        put("granules.stall-timeout", g.stall_timeout);
    }
    out
}

/// Turns merged strings into typed values, with errors located at the value's origin.
struct Checker<'a> {
    merged: &'a Merged,
}

impl Checker<'_> {
    fn raw(&self, key: &'static str) -> Option<&Sourced<String>> {
        self.merged.get(key)
    }

    fn fail(&self, key: &str, message: String) -> ConfigError {
        match self.merged.get(key).map(|s| &s.origin) {
            Some(Origin::File(loc)) => ConfigError::Invalid {
                location: (**loc).clone(),
                key: Some(key.to_owned()),
                message,
            },
            _ => ConfigError::Unlocated {
                key: key.to_owned(),
                message,
            },
        }
    }

    fn required(&self, key: &'static str) -> Result<&str, ConfigError> {
        self.raw(key)
            .map(|s| s.value.as_str())
            .ok_or_else(|| self.fail(key, "must be set".into()))
    }

    fn parse<T>(
        &self,
        key: &'static str,
        f: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<T, ConfigError> {
        f(self.required(key)?).map_err(|m| self.fail(key, m))
    }

    fn optional<T>(
        &self,
        key: &'static str,
        f: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<Option<T>, ConfigError> {
        match self.raw(key) {
            None => Ok(None),
            Some(s) => f(&s.value).map(Some).map_err(|m| self.fail(key, m)),
        }
    }

    fn duration(
        &self,
        key: &'static str,
        min: Duration,
        max: Duration,
    ) -> Result<Duration, ConfigError> {
        self.parse(key, |v| duration_in(v, min, max))
    }
}

fn duration_in(v: &str, min: Duration, max: Duration) -> Result<Duration, String> {
    let d = humantime::parse_duration(v)
        .map_err(|e| format!("`{v}` is not a duration like \"30s\" or \"5m\" ({e})"))?;
    if d < min || d > max {
        return Err(format!(
            "{v} is out of range: must be between {} and {}",
            humantime::format_duration(min),
            humantime::format_duration(max)
        ));
    }
    Ok(d)
}

/// `1500`, `20M`, `1.5G`, `512Mi`: K, M, G, T are powers of 1000, Ki, Mi, Gi, Ti of 1024.
pub fn byte_size(v: &str) -> Result<u64, String> {
    let bad = || format!("`{v}` is not a size like \"0\", \"500M\", \"2G\" or \"512Mi\"");
    let t = v.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let factor: u64 = match unit.trim().trim_end_matches(['B', 'b']) {
        "" => 1,
        "K" | "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        _ => return Err(bad()),
    };
    let n: f64 = number.parse().map_err(|_| bad())?;
    let bytes = n * factor as f64;
    if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 / 2.0 {
        return Err(bad());
    }
    Ok(bytes as u64)
}

fn absolute_path(v: &str) -> Result<PathBuf, String> {
    let p = PathBuf::from(v);
    if !p.is_absolute() {
        return Err(format!("`{v}` must be an absolute path"));
    }
    Ok(p)
}

/// A Nova or Glance id: a UUID, or at least nothing that could leave its place in a URL path.
fn openstack_id(v: &str) -> Result<String, String> {
    if v.is_empty() || v.len() > 64 || !v.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        return Err(format!(
            "`{v}` is not an id like 0e6d3a3c-5c5f-4b8e-9a43-2f0d2c1b7e11"
        ));
    }
    Ok(v.to_owned())
}

fn http_url(v: &str) -> Result<String, String> {
    let url = reqwest::Url::parse(v).map_err(|e| format!("not a URL ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("must be an http:// or https:// URL".into());
    }
    Ok(v.trim_end_matches('/').to_owned())
}

/// The repository URL may be logged and shown in `/status`, so it must not carry credentials.
/// The value is not repeated in the message, since it may hold a token.
fn repository_url(v: &str) -> Result<String, String> {
    if Path::new(v).is_absolute() {
        return Ok(v.to_owned());
    }
    let url = reqwest::Url::parse(v)
        .map_err(|_| "not a URL: use https://..., file://... or an absolute path".to_string())?;
    if !matches!(url.scheme(), "http" | "https" | "file") {
        return Err(format!(
            "unsupported scheme `{}`: use https://, http://, file:// or an absolute path",
            url.scheme()
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(
            "credentials in the URL are refused: put the token in a file and name \
                    it with source.token-file"
                .into(),
        );
    }
    Ok(v.to_owned())
}

/// `gitlab.*` when reporting is on: what is unset is derived from `source.url` and
/// `source.token-file`, and what cannot be derived is asked for by name.
fn gitlab_settings(
    c: &Checker<'_>,
    source: &SourceSettings,
    secret: impl Fn(&str) -> Result<SecretFile, String>,
) -> Result<GitlabSettings, ConfigError> {
    let from_source = source
        .url
        .as_deref()
        .and_then(|u| reqwest::Url::parse(u).ok())
        .filter(|u| matches!(u.scheme(), "http" | "https"));
    let api_url = match c.optional("gitlab.api-url", |v| {
        let u = reqwest::Url::parse(v).map_err(|_| format!("`{v}` is not a URL"))?;
        if !matches!(u.scheme(), "http" | "https") || !u.username().is_empty() {
            return Err(
                "must be an http(s) URL without credentials, like https://gitlab.example/api/v4"
                    .into(),
            );
        }
        Ok(v.trim_end_matches('/').to_owned())
    })? {
        Some(u) => u,
        None => {
            let u = from_source.as_ref().ok_or_else(|| {
                c.fail(
                    "gitlab.report",
                    "set gitlab.api-url: source.url is not an http(s) URL to derive it from".into(),
                )
            })?;
            format!("{}/api/v4", u.origin().ascii_serialization())
        }
    };
    let project = match c.optional("gitlab.project", |v| {
        let v = v.trim_matches('/');
        if v.is_empty() || v.contains(['\n', '\r', '\0', '?', '#']) {
            Err("must be a project id or a path like group/project".to_string())
        } else {
            Ok(v.to_owned())
        }
    })? {
        Some(p) => p,
        None => from_source
            .as_ref()
            .map(|u| {
                u.path()
                    .trim_matches('/')
                    .trim_end_matches(".git")
                    .to_owned()
            })
            .filter(|p| !p.is_empty())
            .ok_or_else(|| {
                c.fail(
                    "gitlab.report",
                    "set gitlab.project: source.url has no project path to derive it from".into(),
                )
            })?,
    };
    let token_file = match c.optional("gitlab.token-file", secret)? {
        Some(t) => t,
        None => source.token_file.clone().ok_or_else(|| {
            c.fail(
                "gitlab.report",
                "set gitlab.token-file (or source.token-file): GitLab needs a token".into(),
            )
        })?,
    };
    let status_name = match c.optional("gitlab.status-name", |v| {
        if v.is_empty() || v.len() > 100 || v.contains(['\n', '\r', '\0']) {
            Err("must be one line of at most 100 characters".to_string())
        } else {
            Ok(v.to_owned())
        }
    })? {
        Some(n) => n,
        None => format!("vespa-agent/{}", hostname()),
    };
    Ok(GitlabSettings {
        api_url,
        project,
        token_file,
        status_name,
    })
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

fn branch_name(v: &str) -> Result<String, String> {
    let bad = v.is_empty()
        || v.starts_with('-')
        || v.starts_with('/')
        || v.ends_with('/')
        || v.ends_with(".lock")
        || v.contains("..")
        || v.contains("@{")
        || v.chars()
            .any(|c| c.is_whitespace() || c.is_control() || "~^:?*[\\".contains(c));
    if bad {
        return Err(format!("`{v}` is not a valid git branch name"));
    }
    Ok(v.to_owned())
}

/// `auto`, or a command whose program is an absolute path (no shell: arguments are split on
/// whitespace).
fn restart_command(v: &str) -> Result<Vec<String>, String> {
    if v == "auto" {
        return Ok(Vec::new());
    }
    let words: Vec<String> = v.split_whitespace().map(str::to_owned).collect();
    match words.first() {
        Some(p) if p.starts_with('/') => Ok(words),
        _ => Err(format!(
            "`{v}` must be auto or a command starting with an absolute path, like \"/usr/bin/systemctl restart dachs\""
        )),
    }
}

fn boolean(v: &str) -> Result<bool, String> {
    match v {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(format!("`{v}` must be true or false")),
    }
}

fn unix_user(v: &str) -> Result<String, String> {
    let mut chars = v.chars();
    let ok = matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
        && v.len() <= 32;
    if !ok {
        return Err(format!("`{v}` is not a valid user name"));
    }
    Ok(v.to_owned())
}

impl Settings {
    pub fn from_merged(
        merged: Merged,
        credentials: Option<&Path>,
    ) -> Result<Settings, ConfigError> {
        const SECOND: Duration = Duration::from_secs(1);
        const DAY: Duration = Duration::from_secs(86_400);
        const HOUR: Duration = Duration::from_secs(3_600);
        let c = Checker { merged: &merged };
        // Outside systemd (an operator's `vespa-agent status` at a shell), a credential name is
        // the file of that name in the directory the unit loads credentials from.
        let credentials_dir = c.parse("granules.credentials-dir", absolute_path)?;
        let credentials = credentials.unwrap_or(&credentials_dir);
        let secret = |v: &str| {
            let file = SecretFile::resolve(v, credentials)?;
            file.check()?;
            Ok(file)
        };

        let interval = c.duration("reconcile.interval", 10 * SECOND, DAY)?;
        let reconcile = ReconcileSettings {
            interval,
            jitter: c
                .optional("reconcile.jitter", |v| {
                    duration_in(v, Duration::ZERO, interval)
                })?
                .unwrap_or(interval / 10),
            stall_timeout: c.duration("reconcile.stall-timeout", SECOND, DAY)?,
            shutdown_timeout: c.duration("reconcile.shutdown-timeout", SECOND, 600 * SECOND)?,
        };
        let dachs = DachsSettings {
            bin: c.parse("dachs.bin", absolute_path)?,
            user: c.parse("dachs.user", unix_user)?,
            inputs_dir: c.parse("dachs.inputs-dir", absolute_path)?,
            gavo_rc: c.parse("dachs.gavo-rc", absolute_path)?,
            url: c.parse("dachs.url", http_url)?,
            query_timeout: c.duration("dachs.query-timeout", SECOND, 600 * SECOND)?,
            command_timeout: c.duration("dachs.command-timeout", 10 * SECOND, 86400 * SECOND)?,
            apply: c.parse("dachs.apply", boolean)?,
            restart: c.parse("dachs.restart", restart_command)?,
            revert_drift: c.parse("dachs.drift", |v| match v {
                "revert" => Ok(true),
                "report" => Ok(false),
                _ => Err(format!("`{v}` must be revert or report")),
            })?,
            regression: match c.parse("dachs.regression-tests", boolean)? {
                false => None,
                true => Some(Regression {
                    tag: c.parse("dachs.regression-tag", |v| {
                        let plain = v
                            .chars()
                            .all(|ch| ch.is_ascii_alphanumeric() || "-_.".contains(ch));
                        if plain {
                            Ok(v.to_owned())
                        } else {
                            Err(format!(
                                "`{v}` must be one tag (letters, digits, - _ .), as dachs test -t takes"
                            ))
                        }
                    })?,
                    timeout: c.duration("dachs.regression-timeout", 5 * SECOND, 3600 * SECOND)?,
                }),
            },
        };
        let branch = c.parse("source.branch", branch_name)?;
        let tag = c.optional("source.tag", branch_name)?;
        let commit = c.optional("source.commit", |v| {
            if v.len() == 40 && v.chars().all(|ch| ch.is_ascii_hexdigit()) {
                Ok(v.to_ascii_lowercase())
            } else {
                Err(format!("`{v}` is not a full commit SHA (40 hex digits)"))
            }
        })?;
        let follow = match (tag, commit) {
            (Some(_), Some(_)) => {
                return Err(c.fail(
                    "source.commit",
                    "set either source.tag or source.commit, not both".into(),
                ));
            }
            (Some(t), None) => Follow::Tag(t),
            (None, Some(sha)) => Follow::Commit { sha, branch },
            (None, None) => Follow::Branch(branch),
        };
        let readable = |v: &str| {
            let p = absolute_path(v)?;
            std::fs::File::open(&p).map_err(|e| format!("cannot read {v}: {e}"))?;
            Ok(p)
        };
        let verify = match c.required("source.verify")? {
            "none" => Verify::None,
            "ssh" => Verify::Ssh {
                allowed_signers: c
                    .optional("source.allowed-signers-file", readable)?
                    .ok_or_else(|| {
                        c.fail(
                            "source.verify",
                            "verify = \"ssh\" needs source.allowed-signers-file".into(),
                        )
                    })?,
            },
            "openpgp" => Verify::OpenPgp {
                keyring: c
                    .optional("source.keyring-file", readable)?
                    .ok_or_else(|| {
                        c.fail(
                            "source.verify",
                            "verify = \"openpgp\" needs source.keyring-file".into(),
                        )
                    })?,
            },
            other => {
                return Err(c.fail(
                    "source.verify",
                    format!("`{other}` is not one of none, ssh, openpgp"),
                ));
            }
        };
        let source = SourceSettings {
            url: c.optional("source.url", repository_url)?,
            follow,
            username: c.parse("source.username", |v| {
                if v.is_empty() || v.contains([':', '\n', '\r', '\0']) {
                    Err("must be a user name without `:`".to_string())
                } else {
                    Ok(v.to_owned())
                }
            })?,
            token_file: c.optional("source.token-file", secret)?,
            webhook_secret_file: c.optional("source.webhook-secret-file", secret)?,
            ca_file: c.optional("source.ca-file", readable)?,
            keep_revisions: c.parse("source.keep-revisions", |v| match v.parse::<usize>() {
                Ok(n) if (1..=100).contains(&n) => Ok(n),
                _ => Err(format!("`{v}` must be a whole number from 1 to 100")),
            })?,
            verify,
            path: c
                .optional("source.path", service_folder)?
                .unwrap_or_default(),
        };
        let gitlab = match c.parse("gitlab.report", boolean)? {
            false => None,
            true => Some(gitlab_settings(&c, &source, secret)?),
        };
        let openstack = match c.optional("openstack.auth-url", http_url)? {
            None => None,
            Some(auth_url) => {
                let needed = |key: &'static str| {
                    c.fail(
                        "openstack.auth-url",
                        format!("set {key} too: `rebuild --vm` needs it"),
                    )
                };
                Some(OpenstackSettings {
                    auth_url,
                    credential_file: c
                        .optional("openstack.credential-file", secret)?
                        .ok_or_else(|| needed("openstack.credential-file"))?,
                    server_id: c
                        .optional("openstack.server-id", openstack_id)?
                        .ok_or_else(|| needed("openstack.server-id"))?,
                    image: c.optional("openstack.image", openstack_id)?,
                    metadata_url: c.parse("openstack.metadata-url", http_url)?,
                    rebuild_interval: c.duration("openstack.rebuild-interval", HOUR, 30 * DAY)?,
                })
            }
        };
        let rebuild = RebuildSettings {
            automatic: c.parse("rebuild.automatic", |v| match v {
                "off" => Ok(Automatic::Off),
                "repair" => Ok(Automatic::Repair),
                "vm" => Ok(Automatic::Vm),
                _ => Err(format!("`{v}` must be off, repair or vm")),
            })?,
            unhealthy_for: c.duration("rebuild.unhealthy-for", 10 * SECOND, 7 * DAY)?,
            repair_interval: c.duration("rebuild.repair-interval", 60 * SECOND, 30 * DAY)?,
            dry_run: c.parse("rebuild.dry-run", boolean)?,
        };
        if rebuild.automatic == Automatic::Vm && openstack.is_none() {
            return Err(c.fail(
                "rebuild.automatic",
                "automatic = \"vm\" rebuilds through OpenStack: set [openstack] auth-url, \
                 credential-file and server-id, or use \"repair\""
                    .into(),
            ));
        }
        let settings = Settings {
            state_dir: c.parse("agent.state-dir", absolute_path)?,
            http_listen: c.parse("http.listen", |v| {
                v.parse::<SocketAddr>().map_err(|_| {
                    format!("`{v}` is not an address like \"127.0.0.1:9471\" or \"[::]:9471\"")
                })
            })?,
            web_config_file: c.optional("http.web-config-file", absolute_path)?,
            reconcile,
            dachs,
            source,
            granules: GranuleSettings {
                credentials_dir: credentials_dir.clone(),
                concurrency: c.parse("granules.concurrency", |v| match v.parse::<usize>() {
                    Ok(n) if (1..=64).contains(&n) => Ok(n),
                    _ => Err(format!("`{v}` must be a whole number from 1 to 64")),
                })?,
                retries: c.parse("granules.retries", |v| match v.parse::<u32>() {
                    Ok(n) if n <= 10 => Ok(n),
                    _ => Err(format!("`{v}` must be a whole number from 0 to 10")),
                })?,
                bandwidth_limit: c.parse("granules.bandwidth-limit", byte_size)?,
                disk_reserve: c.parse("granules.disk-reserve", byte_size)?,
                stall_timeout: c.duration("granules.stall-timeout", SECOND, HOUR)?,
            },
            gitlab,
            openstack,
            rebuild,
            merged: Merged::default(),
        };
        Ok(Settings { merged, ..settings })
    }
}

#[cfg(test)]
mod tests;
