//! The service contract: `vespa-service.toml` at the root of the service repository. It names
//! the DaCHS server settings, the resources to deploy, and each resource's granule collections.
//! The repository holds no secrets and no bulk data, and nothing in it may point outside it:
//! every check here runs before a revision is accepted.

pub mod irods_url;

use std::collections::HashSet;
use std::path::{Component, Path};

use serde::Deserialize;
use toml::Spanned;

use crate::config::Location;

pub const SERVICE_FILE: &str = "vespa-service.toml";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawService {
    server: Option<RawServer>,
    #[serde(default, rename = "resource")]
    resources: Vec<Spanned<RawResource>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawServer {
    server_url: Option<Spanned<String>>,
    sitename: Option<Spanned<String>>,
    authority: Option<Spanned<String>>,
    maintainer_address: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawResource {
    dir: Spanned<String>,
    rd: Option<Spanned<String>>,
    publish: Option<bool>,
    #[serde(default, rename = "collection")]
    collections: Vec<Spanned<RawCollection>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawCollection {
    name: Spanned<String>,
    source: Spanned<String>,
    target: Option<Spanned<String>>,
    include: Option<Spanned<Vec<String>>>,
    exclude: Option<Spanned<Vec<String>>>,
    credential: Option<Spanned<String>>,
    manifest: Option<Spanned<String>>,
}

/// A validated service description.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Service {
    pub server: ServerSettings,
    pub resources: Vec<Resource>,
}

/// The `[server]` table: the DaCHS settings the agent manages in gavo.rc.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServerSettings {
    pub server_url: Option<String>,
    pub sitename: Option<String>,
    pub authority: Option<String>,
    pub maintainer_address: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resource {
    /// The directory in the repository; deployed as `<inputs-dir>/<dir>`.
    pub dir: String,
    /// The RD's name inside it, without `.rd` (DaCHS's RD id is `<dir>/<rd>`).
    pub rd: String,
    pub publish: bool,
    pub collections: Vec<Collection>,
}

impl Resource {
    pub fn rd_id(&self) -> String {
        format!("{}/{}", self.dir, self.rd)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Collection {
    pub name: String,
    /// Where the granules come from: `https://` (WebDAV), `file://` or an absolute path.
    pub source: String,
    /// The data directory inside the resource, relative.
    pub target: String,
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    /// The name of a credential defined in the agent's configuration.
    pub credential: Option<String>,
    /// A checksum manifest published beside the data, relative to `source`.
    pub manifest: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("{SERVICE_FILE} is missing at the root of the repository")]
    Missing,
    #[error("{SERVICE_FILE}: cannot read: {0}")]
    Read(std::io::Error),
    #[error("{location}: {}{message}", key.as_ref().map(|k| format!("key `{k}`: ")).unwrap_or_default())]
    Invalid {
        location: Location,
        key: Option<String>,
        message: String,
    },
}

/// Reads and validates `<root>/vespa-service.toml`, checking the resource directories it names
/// against the checked-out tree at `root`.
pub fn load(root: &Path) -> Result<Service, ServiceError> {
    let path = root.join(SERVICE_FILE);
    let meta = match std::fs::symlink_metadata(&path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(ServiceError::Missing),
        Err(e) => return Err(ServiceError::Read(e)),
    };
    if !meta.is_file() {
        return Err(ServiceError::Invalid {
            location: Location::from_offset(SERVICE_FILE.into(), "", 0),
            key: None,
            message: "must be a regular file (not a symlink or a directory)".into(),
        });
    }
    let text = std::fs::read_to_string(&path).map_err(ServiceError::Read)?;
    parse(&text, root)
}

struct Ctx<'a> {
    text: &'a str,
}

impl Ctx<'_> {
    fn err(
        &self,
        span: std::ops::Range<usize>,
        key: &str,
        message: impl Into<String>,
    ) -> ServiceError {
        ServiceError::Invalid {
            location: Location::from_offset(SERVICE_FILE.into(), self.text, span.start),
            key: Some(key.to_owned()),
            message: message.into(),
        }
    }
}

pub fn parse(text: &str, root: &Path) -> Result<Service, ServiceError> {
    let ctx = Ctx { text };
    let at = |span: Option<std::ops::Range<usize>>| {
        Location::from_offset(SERVICE_FILE.into(), text, span.map_or(0, |s| s.start))
    };
    let de = toml::Deserializer::parse(text).map_err(|e| ServiceError::Invalid {
        location: at(e.span()),
        key: None,
        message: e.message().to_owned(),
    })?;
    let raw: RawService = serde_path_to_error::deserialize(de).map_err(|e| {
        let key = e
            .path()
            .to_string()
            .replace(".$__serde_spanned_private_value", "");
        ServiceError::Invalid {
            location: at(e.inner().span()),
            message: crate::config::describe(&key, e.inner().message()),
            key: Some(key),
        }
    })?;

    let server = match raw.server {
        None => ServerSettings::default(),
        Some(s) => ServerSettings {
            server_url: s
                .server_url
                .map(|u| {
                    let ok = reqwest::Url::parse(u.get_ref())
                        .is_ok_and(|p| matches!(p.scheme(), "http" | "https") && p.username().is_empty() && p.password().is_none());
                    if ok {
                        Ok(u.get_ref().trim_end_matches('/').to_owned())
                    } else {
                        Err(ctx.err(u.span(), "server.server-url", "must be the http:// or https:// URL clients use, without credentials"))
                    }
                })
                .transpose()?,
            sitename: s.sitename.map(|v| one_line(&ctx, v, "server.sitename")).transpose()?,
            authority: s
                .authority
                .map(|v| {
                    let a = v.get_ref();
                    let ok = !a.is_empty()
                        && a.len() <= 255
                        && a.chars().all(|c| c.is_ascii_alphanumeric() || "-._~".contains(c));
                    if ok {
                        Ok(a.clone())
                    } else {
                        Err(ctx.err(v.span(), "server.authority", "must be an IVOA authority like `vespa.example.org` (letters, digits, - . _ ~)"))
                    }
                })
                .transpose()?,
            maintainer_address: s
                .maintainer_address
                .map(|v| one_line(&ctx, v, "server.maintainer-address"))
                .transpose()?,
        },
    };

    let mut resources = Vec::new();
    let mut dirs = HashSet::new();
    for (i, res) in raw.resources.into_iter().enumerate() {
        let key = |k: &str| format!("resource[{i}].{k}");
        let r = res.into_inner();
        let dir = r.dir.get_ref().clone();
        if !is_plain_name(&dir) {
            return Err(ctx.err(r.dir.span(), &key("dir"), format!("`{dir}` must be one directory name at the root of the repository (no `/`, `..` or leading `.`)")));
        }
        if !dirs.insert(dir.clone()) {
            return Err(ctx.err(
                r.dir.span(),
                &key("dir"),
                format!("resource `{dir}` is listed twice"),
            ));
        }
        let rd = match &r.rd {
            None => "q".to_owned(),
            Some(v) if is_plain_name(v.get_ref()) && !v.get_ref().ends_with(".rd") => {
                v.get_ref().clone()
            }
            Some(v) => {
                return Err(ctx.err(
                    v.span(),
                    &key("rd"),
                    "must be the RD's file name without `.rd`, inside the resource directory",
                ));
            }
        };
        match std::fs::symlink_metadata(root.join(&dir)) {
            Ok(m) if m.is_dir() => {}
            Ok(m) if m.file_type().is_symlink() => {
                return Err(ctx.err(r.dir.span(), &key("dir"), format!("`{dir}` is a symlink; a resource must be a real directory in the repository")));
            }
            _ => {
                return Err(ctx.err(
                    r.dir.span(),
                    &key("dir"),
                    format!("there is no directory `{dir}` in the repository"),
                ));
            }
        }
        match std::fs::symlink_metadata(root.join(&dir).join(format!("{rd}.rd"))) {
            Ok(m) if m.is_file() => {}
            _ => {
                return Err(ctx.err(
                    r.rd.as_ref().map_or(r.dir.span(), |v| v.span()),
                    &key("rd"),
                    format!("there is no regular file `{dir}/{rd}.rd` in the repository"),
                ));
            }
        }

        let mut names = HashSet::new();
        let mut collections = Vec::new();
        for (j, col) in r.collections.into_iter().enumerate() {
            let ckey = |k: &str| format!("resource[{i}].collection[{j}].{k}");
            let c = col.into_inner();
            let name = c.name.get_ref().clone();
            if !is_identifier(&name) {
                return Err(ctx.err(
                    c.name.span(),
                    &ckey("name"),
                    "must be a name of letters, digits, `-` and `_`",
                ));
            }
            if !names.insert(name.clone()) {
                return Err(ctx.err(
                    c.name.span(),
                    &ckey("name"),
                    format!("collection `{name}` is listed twice in resource `{dir}`"),
                ));
            }
            let source = c.source.get_ref();
            if let Err(m) = granule_source(source) {
                return Err(ctx.err(c.source.span(), &ckey("source"), m));
            }
            let target = match &c.target {
                None => "data".to_owned(),
                Some(t) if is_relative_inside(t.get_ref()) => {
                    t.get_ref().trim_end_matches('/').to_owned()
                }
                Some(t) => return Err(ctx.err(
                    t.span(),
                    &ckey("target"),
                    format!(
                        "`{}` must be a relative path inside the resource (no `..`, not absolute)",
                        t.get_ref()
                    ),
                )),
            };
            let patterns = |v: &Option<Spanned<Vec<String>>>,
                            k: &str,
                            default: &[&str]|
             -> Result<Vec<String>, ServiceError> {
                match v {
                    None => Ok(default.iter().map(|s| s.to_string()).collect()),
                    Some(p) => {
                        for pat in p.get_ref() {
                            if pat.is_empty()
                                || pat.starts_with('/')
                                || pat.split('/').any(|c| c == "..")
                            {
                                return Err(ctx.err(
                                    p.span(),
                                    &ckey(k),
                                    format!(
                                        "pattern `{pat}` must be relative and must not contain `..`"
                                    ),
                                ));
                            }
                        }
                        Ok(p.get_ref().clone())
                    }
                }
            };
            let include = patterns(&c.include, "include", &["*"])?;
            let exclude = patterns(&c.exclude, "exclude", &[])?;
            let credential = match &c.credential {
                None => None,
                Some(v) if is_identifier(v.get_ref()) => Some(v.get_ref().clone()),
                Some(v) => return Err(ctx.err(v.span(), &ckey("credential"), "must be the name of a credential in the agent's configuration (letters, digits, `-`, `_`), never the secret itself")),
            };
            let manifest = match &c.manifest {
                None => None,
                Some(m) if is_relative_inside(m.get_ref()) => Some(m.get_ref().clone()),
                Some(m) => {
                    return Err(ctx.err(
                        m.span(),
                        &ckey("manifest"),
                        "must be a relative path under the collection's source",
                    ));
                }
            };
            collections.push(Collection {
                name,
                source: source.clone(),
                target,
                include,
                exclude,
                credential,
                manifest,
            });
        }
        resources.push(Resource {
            dir,
            rd,
            publish: r.publish.unwrap_or(true),
            collections,
        });
    }
    Ok(Service { server, resources })
}

fn one_line(ctx: &Ctx<'_>, v: Spanned<String>, key: &str) -> Result<String, ServiceError> {
    if v.get_ref().trim().is_empty() || v.get_ref().contains(['\n', '\r']) {
        return Err(ctx.err(v.span(), key, "must be one non-empty line"));
    }
    Ok(v.into_inner())
}

/// One path component, not hidden: a resource directory or RD name.
fn is_plain_name(s: &str) -> bool {
    !s.is_empty() && !s.starts_with('.') && !s.contains(['/', '\\', '\0']) && s.len() <= 255
}

fn is_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// A relative path made only of normal components (no `..`, `.`, root or prefix).
fn is_relative_inside(s: &str) -> bool {
    let p = Path::new(s);
    !s.is_empty() && !s.contains('\0') && p.components().all(|c| matches!(c, Component::Normal(_)))
}

/// A granule source never carries credentials: they come from the agent's configuration.
fn granule_source(s: &str) -> Result<(), String> {
    if Path::new(s).is_absolute() {
        return Ok(());
    }
    if s.starts_with(crate::service::irods_url::SCHEME) {
        crate::service::irods_url::split(s)?;
    }
    let url = reqwest::Url::parse(s.strip_prefix(crate::service::irods_url::SCHEME).unwrap_or(s))
        .map_err(|_| {
            "must be an https://, http:// (WebDAV), irods+https:// (the iRODS HTTP API) or file:// URL, or an absolute path".to_string()
        })?;
    if !matches!(url.scheme(), "https" | "http" | "file") {
        return Err(format!("unsupported scheme `{}`", url.scheme()));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("credentials in the URL are refused: name a credential of the agent's configuration with `credential`".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests;
