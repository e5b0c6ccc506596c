//! Stage 1 of the configuration: what one TOML file says, exactly as written.
//!
//! Every leaf is optional (a drop-in sets only what it changes) and keeps its byte span, so that a
//! value that fails validation later can still be reported with its file and line. Unknown keys are
//! errors (`deny_unknown_fields`): a misspelled key must not silently fall back to a default.

use serde::Deserialize;
use toml::Spanned;

/// A leaf as written. Numbers and booleans are taken as their text (`keep-revisions = 3` and
/// `keep-revisions = "3"` mean the same): the typed check happens later, with the same message
/// whichever way the value was written.
pub type Value = Spanned<Scalar>;

#[derive(Debug, PartialEq, Eq)]
pub struct Scalar(pub String);

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Scalar, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Scalar;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string, a number or a boolean")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar(v.to_owned()))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

/// One configuration file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Fragment {
    pub agent: Option<AgentFragment>,
    pub http: Option<HttpFragment>,
    pub reconcile: Option<ReconcileFragment>,
    pub dachs: Option<DachsFragment>,
    pub source: Option<SourceFragment>,
    pub granules: Option<GranulesFragment>,
    pub gitlab: Option<GitlabFragment>,
    pub openstack: Option<OpenstackFragment>,
    pub rebuild: Option<RebuildFragment>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RebuildFragment {
    pub automatic: Option<Value>,
    pub unhealthy_for: Option<Value>,
    pub repair_interval: Option<Value>,
    pub dry_run: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct OpenstackFragment {
    pub auth_url: Option<Value>,
    pub credential_file: Option<Value>,
    pub server_id: Option<Value>,
    pub image: Option<Value>,
    pub metadata_url: Option<Value>,
    pub rebuild_interval: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct GitlabFragment {
    pub report: Option<Value>,
    pub api_url: Option<Value>,
    pub project: Option<Value>,
    pub token_file: Option<Value>,
    pub status_name: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct GranulesFragment {
    pub credentials_dir: Option<Value>,
    pub concurrency: Option<Value>,
    pub retries: Option<Value>,
    pub bandwidth_limit: Option<Value>,
    pub disk_reserve: Option<Value>,
    pub stall_timeout: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct AgentFragment {
    pub state_dir: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct HttpFragment {
    pub listen: Option<Value>,
    pub web_config_file: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ReconcileFragment {
    pub interval: Option<Value>,
    pub jitter: Option<Value>,
    pub stall_timeout: Option<Value>,
    pub shutdown_timeout: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct DachsFragment {
    pub bin: Option<Value>,
    pub user: Option<Value>,
    pub inputs_dir: Option<Value>,
    pub gavo_rc: Option<Value>,
    pub url: Option<Value>,
    pub query_timeout: Option<Value>,
    pub command_timeout: Option<Value>,
    pub apply: Option<Value>,
    pub restart: Option<Value>,
    pub drift: Option<Value>,
    pub regression_tests: Option<Value>,
    pub regression_tag: Option<Value>,
    pub regression_timeout: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SourceFragment {
    pub url: Option<Value>,
    pub branch: Option<Value>,
    pub tag: Option<Value>,
    pub commit: Option<Value>,
    pub username: Option<Value>,
    pub token_file: Option<Value>,
    pub webhook_secret_file: Option<Value>,
    pub ca_file: Option<Value>,
    pub keep_revisions: Option<Value>,
    pub path: Option<Value>,
    pub verify: Option<Value>,
    pub allowed_signers_file: Option<Value>,
    pub keyring_file: Option<Value>,
}
