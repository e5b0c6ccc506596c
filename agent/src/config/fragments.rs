//! Stage 1 of the configuration: what one TOML file says, exactly as written.
//!
//! Every leaf is optional (a drop-in sets only what it changes) and keeps its byte span, so that a
//! value that fails validation later can still be reported with its file and line. Unknown keys are
//! errors (`deny_unknown_fields`): a misspelled key must not silently fall back to a default.

use serde::Deserialize;
use toml::Spanned;

/// One configuration file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Fragment {
    pub agent: Option<AgentFragment>,
    pub http: Option<HttpFragment>,
    pub reconcile: Option<ReconcileFragment>,
    pub dachs: Option<DachsFragment>,
    pub source: Option<SourceFragment>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct AgentFragment {
    pub state_dir: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct HttpFragment {
    pub listen: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ReconcileFragment {
    pub interval: Option<Spanned<String>>,
    pub jitter: Option<Spanned<String>>,
    pub stall_timeout: Option<Spanned<String>>,
    pub shutdown_timeout: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct DachsFragment {
    pub bin: Option<Spanned<String>>,
    pub user: Option<Spanned<String>>,
    pub inputs_dir: Option<Spanned<String>>,
    pub gavo_rc: Option<Spanned<String>>,
    pub url: Option<Spanned<String>>,
    pub query_timeout: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SourceFragment {
    pub url: Option<Spanned<String>>,
    pub branch: Option<Spanned<String>>,
    pub tag: Option<Spanned<String>>,
    pub commit: Option<Spanned<String>>,
    pub username: Option<Spanned<String>>,
    pub token_file: Option<Spanned<String>>,
    pub webhook_secret_file: Option<Spanned<String>>,
    pub ca_file: Option<Spanned<String>>,
    pub keep_revisions: Option<Spanned<String>>,
    pub verify: Option<Spanned<String>>,
    pub allowed_signers_file: Option<Spanned<String>>,
    pub keyring_file: Option<Spanned<String>>,
}
