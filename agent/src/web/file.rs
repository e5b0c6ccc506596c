//! Reading the web configuration file: the YAML of Prometheus's exporter-toolkit
//! (docs/web-configuration.md of github.com/prometheus/exporter-toolkit), so that the file an
//! operator already has for node_exporter works unchanged. Every key of that document is known
//! here; one this agent does not implement is refused by name, never ignored.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::WebConfigError;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFile {
    pub tls_server_config: Option<RawTls>,
    pub http_server_config: Option<RawHttp>,
    #[serde(default)]
    pub basic_auth_users: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub basic_auth_excluded_paths: Option<Vec<String>>,
    pub rate_limit: Option<RawRateLimit>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub cert: Option<String>,
    pub key: Option<String>,
    pub client_ca: Option<String>,
    pub cert_file: Option<String>,
    pub key_file: Option<String>,
    pub client_auth_type: Option<ClientAuth>,
    pub client_ca_file: Option<String>,
    pub client_allowed_sans: Option<Vec<String>>,
    pub min_version: Option<TlsVersion>,
    pub max_version: Option<TlsVersion>,
    pub cipher_suites: Option<Vec<String>>,
    pub prefer_server_cipher_suites: Option<bool>,
    pub curve_preferences: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHttp {
    /// HTTP/2 is offered by exporters over TLS; this agent answers HTTP/1.1 (which every
    /// Prometheus speaks) whatever this says: a capability, not a security setting.
    pub http2: Option<bool>,
    pub headers: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRateLimit {
    pub interval: Option<String>,
    pub burst: Option<u32>,
}

/// Go's `tls.ClientAuthType`, by the names the exporter toolkit reads.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
pub enum ClientAuth {
    #[default]
    NoClientCert,
    RequestClientCert,
    RequireAnyClientCert,
    VerifyClientCertIfGiven,
    RequireAndVerifyClientCert,
}

impl ClientAuth {
    pub fn verifies(self) -> bool {
        matches!(
            self,
            ClientAuth::VerifyClientCertIfGiven | ClientAuth::RequireAndVerifyClientCert
        )
    }
    pub fn requires(self) -> bool {
        matches!(
            self,
            ClientAuth::RequireAnyClientCert | ClientAuth::RequireAndVerifyClientCert
        )
    }
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    TLS10,
    TLS11,
    TLS12,
    TLS13,
}

/// PEM text given inline or by a file, and where it came from (for errors and the reload check).
#[derive(Clone, Debug)]
pub struct Pem {
    pub text: Vec<u8>,
    pub key: &'static str,
    pub file: Option<PathBuf>,
}

/// The file, checked: every value the listener needs, files read.
#[derive(Debug)]
pub struct WebFile {
    pub tls: Option<TlsFile>,
    /// User name and bcrypt hash, sorted by name.
    pub users: Vec<(String, String)>,
    pub excluded_paths: Vec<String>,
    /// Checked and in their HTTP form, ready to be added to every response.
    pub headers: Vec<(axum::http::HeaderName, axum::http::HeaderValue)>,
    /// The files this configuration was read from: a change to any of them reloads it.
    pub files: Vec<PathBuf>,
}

#[derive(Debug)]
pub struct TlsFile {
    pub cert: Pem,
    pub key: Pem,
    pub client_ca: Option<Pem>,
    pub client_auth: ClientAuth,
    pub allowed_sans: Vec<String>,
    pub min_version: TlsVersion,
    pub max_version: TlsVersion,
    /// OpenSSL's names of the TLS 1.2 suites, in the file's order.
    pub cipher_suites: Vec<String>,
    pub prefer_server_cipher_suites: bool,
    /// OpenSSL's group names, in the file's order.
    pub curves: Vec<String>,
}

/// Go's names of the cipher suites its `tls.CipherSuites()` lists for TLS 1.2 and below (the
/// only ones the exporter toolkit accepts), with OpenSSL's name of each. TLS 1.3's suites are
/// not configurable, in Go as here.
const CIPHER_SUITES: &[(&str, &str)] = &[
    ("TLS_RSA_WITH_AES_128_CBC_SHA", "AES128-SHA"),
    ("TLS_RSA_WITH_AES_256_CBC_SHA", "AES256-SHA"),
    ("TLS_RSA_WITH_AES_128_GCM_SHA256", "AES128-GCM-SHA256"),
    ("TLS_RSA_WITH_AES_256_GCM_SHA384", "AES256-GCM-SHA384"),
    (
        "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA",
        "ECDHE-ECDSA-AES128-SHA",
    ),
    (
        "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA",
        "ECDHE-ECDSA-AES256-SHA",
    ),
    ("TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA", "ECDHE-RSA-AES128-SHA"),
    ("TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA", "ECDHE-RSA-AES256-SHA"),
    (
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
        "ECDHE-ECDSA-AES128-GCM-SHA256",
    ),
    (
        "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
    ),
    (
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
    ),
    (
        "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
    ),
    (
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
        "ECDHE-RSA-CHACHA20-POLY1305",
    ),
    (
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
    ),
    // Go's older names of the last two.
    (
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
    ),
    (
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
    ),
];

/// Go's `tls.CurveID` names that OpenSSL 3.0 (Debian 12) offers.
const CURVES: &[(&str, &str)] = &[
    ("CurveP256", "P-256"),
    ("CurveP384", "P-384"),
    ("CurveP521", "P-521"),
    ("X25519", "X25519"),
];

/// The headers the exporter toolkit lets a file set, and the values it accepts (None: any).
const HEADERS: &[(&str, Option<&[&str]>)] = &[
    ("Content-Security-Policy", None),
    ("X-Frame-Options", Some(&["deny", "sameorigin"])),
    ("X-Content-Type-Options", Some(&["nosniff"])),
    ("X-XSS-Protection", None),
    ("Strict-Transport-Security", None),
];

/// Reads and checks the file at `path`. Relative file names in it are taken from the file's own
/// folder, as the exporter toolkit does.
pub fn read(path: &Path) -> Result<WebFile, WebConfigError> {
    let text = read_capped(path)
        .and_then(|b| String::from_utf8(b).map_err(|_| std::io::Error::other("not UTF-8 text")));
    let text = text.map_err(|e| WebConfigError::Read {
        path: path.to_owned(),
        source: e,
    })?;
    parse(path, &text)
}

/// A web configuration, a certificate chain or a key is a few kilobytes; a name that points
/// at /dev/zero or a disk image must not fill the memory.
const MAX_FILE: u64 = 1 << 20;

fn read_capped(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut out = Vec::new();
    std::fs::File::open(path)?
        .take(MAX_FILE + 1)
        .read_to_end(&mut out)?;
    if out.len() as u64 > MAX_FILE {
        return Err(std::io::Error::other(
            "larger than 1 MiB: not a PEM or YAML file",
        ));
    }
    Ok(out)
}

pub fn parse(path: &Path, text: &str) -> Result<WebFile, WebConfigError> {
    let at = Locate { path, text };
    // An empty file (or one of comments) is a valid configuration: plain HTTP, no auth.
    let raw: RawFile = if text.lines().all(|l| {
        let l = l.trim();
        l.is_empty() || l.starts_with('#') || l == "---"
    }) {
        RawFile::default()
    } else {
        serde_saphyr::from_str(text).map_err(|e| at.yaml(&e))?
    };
    if raw.rate_limit.is_some() {
        // Its duration and token bucket would be easy to add; until then, refused by name so
        // that an operator relying on it knows.
        return Err(at.key(
            "rate_limit",
            "rate_limit is not implemented by vespa-agent; remove it (a scrape every few \
             seconds needs none) or put a proxy in front"
                .into(),
        ));
    }
    let dir = path.parent().unwrap_or(Path::new("/"));
    let mut files = vec![path.to_owned()];
    let tls = match raw.tls_server_config {
        Some(t) => tls(&at, dir, t, &mut files)?,
        None => None,
    };
    let mut users = Vec::new();
    for (user, hash) in raw.basic_auth_users.unwrap_or_default() {
        if let Err(e) = hash.parse::<bcrypt::HashParts>() {
            return Err(at.key(
                &user,
                format!(
                    "the password of basic_auth_users `{user}` is not a bcrypt hash ({e}); \
                     make one with `htpasswd -nBC 10 \"\" | tr -d ':\\n'`"
                ),
            ));
        }
        if user.contains(':') {
            return Err(at.key(
                &user,
                format!("the user name `{user}` has a colon, which basic auth cannot carry"),
            ));
        }
        users.push((user, hash));
    }
    let mut headers = Vec::new();
    let http = raw.http_server_config.unwrap_or_default();
    for (name, value) in http.headers.unwrap_or_default() {
        let Some((canonical, allowed)) =
            HEADERS.iter().find(|(h, _)| h.eq_ignore_ascii_case(&name))
        else {
            let known: Vec<&str> = HEADERS.iter().map(|(h, _)| *h).collect();
            return Err(at.key(
                &name,
                format!(
                    "the header `{name}` cannot be configured; the file may set {}",
                    known.join(", ")
                ),
            ));
        };
        if value.is_empty() {
            continue;
        }
        if let Some(allowed) = allowed
            && !allowed.iter().any(|a| a.eq_ignore_ascii_case(&value))
        {
            return Err(at.key(
                &name,
                format!(
                    "`{value}` is not a value of {canonical}; it may be {}",
                    allowed.join(" or ")
                ),
            ));
        }
        let Ok(header_value) = axum::http::HeaderValue::from_str(&value) else {
            return Err(at.key(
                &name,
                format!("the value of {canonical} has characters a header cannot carry"),
            ));
        };
        let header_name = axum::http::HeaderName::from_bytes(canonical.as_bytes())
            .expect("the names of HEADERS are header names");
        headers.push((header_name, header_value));
    }
    let excluded_paths = raw.basic_auth_excluded_paths.unwrap_or_default();
    if let Some(p) = excluded_paths.iter().find(|p| !p.starts_with('/')) {
        return Err(at.key(
            "basic_auth_excluded_paths",
            format!("`{p}` is not a path: each starts with /"),
        ));
    }
    Ok(WebFile {
        tls,
        users,
        excluded_paths,
        headers,
        files,
    })
}

fn tls(
    at: &Locate,
    dir: &Path,
    t: RawTls,
    files: &mut Vec<PathBuf>,
) -> Result<Option<TlsFile>, WebConfigError> {
    // The exporter toolkit serves plain HTTP when no certificate is named at all.
    if t.cert.is_none() && t.cert_file.is_none() && t.key.is_none() && t.key_file.is_none() {
        if t.client_ca.is_some() || t.client_ca_file.is_some() || t.client_auth_type.is_some() {
            return Err(at.key(
                "tls_server_config",
                "tls_server_config sets client authentication but no cert_file and key_file: \
                 the listener cannot speak TLS without them"
                    .into(),
            ));
        }
        return Ok(None);
    }
    let cert = pem(at, dir, "cert", t.cert, "cert_file", t.cert_file, files)?.ok_or_else(|| {
        at.key(
            "key_file",
            "key_file is set but cert_file is missing".into(),
        )
    })?;
    let key = pem(at, dir, "key", t.key, "key_file", t.key_file, files)?.ok_or_else(|| {
        at.key(
            "cert_file",
            "cert_file is set but key_file is missing".into(),
        )
    })?;
    let client_ca = pem(
        at,
        dir,
        "client_ca",
        t.client_ca,
        "client_ca_file",
        t.client_ca_file,
        files,
    )?;
    let client_auth = t.client_auth_type.unwrap_or_default();
    if client_ca.is_some() && !client_auth.verifies() {
        return Err(at.key(
            "client_ca_file",
            "client CAs are configured but client_auth_type does not verify client certificates: \
             set client_auth_type: RequireAndVerifyClientCert"
                .into(),
        ));
    }
    if client_auth.verifies() && client_ca.is_none() {
        return Err(at.key(
            "client_auth_type",
            format!("client_auth_type {client_auth:?} needs client_ca_file to verify against"),
        ));
    }
    let allowed_sans = t.client_allowed_sans.unwrap_or_default();
    if !allowed_sans.is_empty() && !client_auth.requires() {
        return Err(at.key(
            "client_allowed_sans",
            "client_allowed_sans needs client_auth_type RequireAnyClientCert or \
             RequireAndVerifyClientCert: other types let a client in without a certificate"
                .into(),
        ));
    }
    let min_version = t.min_version.unwrap_or(TlsVersion::TLS12);
    let max_version = t.max_version.unwrap_or(TlsVersion::TLS13);
    if min_version > max_version {
        return Err(at.key(
            "min_version",
            format!("min_version {min_version:?} is above max_version {max_version:?}"),
        ));
    }
    let mut cipher_suites = Vec::new();
    for name in t.cipher_suites.unwrap_or_default() {
        let Some((_, ossl)) = CIPHER_SUITES.iter().find(|(go, _)| *go == name) else {
            return Err(at.key(
                &name,
                format!(
                    "`{name}` is not a cipher suite that can be configured (Go's \
                     tls.CipherSuites() for TLS 1.2, e.g. TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256)"
                ),
            ));
        };
        cipher_suites.push((*ossl).to_owned());
    }
    let mut curves = Vec::new();
    for name in t.curve_preferences.unwrap_or_default() {
        let Some((_, ossl)) = CURVES.iter().find(|(go, _)| *go == name) else {
            let known: Vec<&str> = CURVES.iter().map(|(g, _)| *g).collect();
            return Err(at.key(
                &name,
                format!(
                    "`{name}` is not a curve this agent offers; it may be one of {}",
                    known.join(", ")
                ),
            ));
        };
        curves.push((*ossl).to_owned());
    }
    Ok(Some(TlsFile {
        cert,
        key,
        client_ca,
        client_auth,
        allowed_sans,
        min_version,
        max_version,
        cipher_suites,
        prefer_server_cipher_suites: t.prefer_server_cipher_suites.unwrap_or(true),
        curves,
    }))
}

/// A PEM value given inline (`inline_key`) or as a file (`file_key`), never both.
#[allow(clippy::too_many_arguments)]
fn pem(
    at: &Locate,
    dir: &Path,
    inline_key: &'static str,
    inline: Option<String>,
    file_key: &'static str,
    file: Option<String>,
    files: &mut Vec<PathBuf>,
) -> Result<Option<Pem>, WebConfigError> {
    match (inline, file) {
        (Some(_), Some(_)) => Err(at.key(
            file_key,
            format!("both {inline_key} and {file_key} are set; keep one"),
        )),
        (Some(text), None) => Ok(Some(Pem {
            text: text.into_bytes(),
            key: inline_key,
            file: None,
        })),
        (None, Some(name)) => {
            let p = dir.join(&name);
            let text = read_capped(&p)
                .map_err(|e| at.key(file_key, format!("{file_key} {}: {e}", p.display())))?;
            files.push(p.clone());
            Ok(Some(Pem {
                text,
                key: file_key,
                file: Some(p),
            }))
        }
        (None, None) => Ok(None),
    }
}

/// Names the file and line of an error.
pub struct Locate<'a> {
    pub path: &'a Path,
    pub text: &'a str,
}

impl Locate<'_> {
    fn yaml(&self, e: &serde_saphyr::Error) -> WebConfigError {
        WebConfigError::Invalid {
            path: self.path.to_owned(),
            line: e.location().map(|l| l.line() as usize),
            // One line for the journal and `status`; the file and line are said before it.
            message: e.render_with_options(serde_saphyr::render_options! {
                snippets: serde_saphyr::SnippetMode::Off,
            }),
        }
    }

    /// The error at the first line that sets `key` (a mapping key, or a list item equal to it),
    /// else the first that names it at all (an item of a `[a, b]` list).
    pub fn key(&self, key: &str, message: String) -> WebConfigError {
        let line = self
            .text
            .lines()
            .position(|l| {
                let l = l.trim_start().trim_start_matches("- ");
                let l = l.trim_start_matches(['"', '\'']);
                l.strip_prefix(key).is_some_and(|rest| {
                    let rest = rest.trim_start_matches(['"', '\'']).trim_start();
                    rest.is_empty() || rest.starts_with(':')
                })
            })
            .or_else(|| self.text.lines().position(|l| l.contains(key)));
        WebConfigError::Invalid {
            path: self.path.to_owned(),
            line: line.map(|l| l + 1),
            message,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "$2y$10$mDwo.lAisC94iLAyP81MCesa29IzH37oigHC/42V2pdJlUprsJPze";

    fn dir_with(files: &[(&str, &str)]) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        for (name, body) in files {
            std::fs::write(d.path().join(name), body).unwrap();
        }
        d
    }

    /// The error's text and line for `yaml` read from a folder with cert and key files.
    fn refused(yaml: &str) -> (String, Option<usize>) {
        let d = dir_with(&[("server.crt", "CERT"), ("server.key", "KEY")]);
        let p = d.path().join("web.yml");
        match parse(&p, yaml) {
            Ok(f) => panic!("accepted: {f:?}"),
            Err(WebConfigError::Invalid { line, message, .. }) => (message, line),
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn the_exporter_toolkits_own_examples_are_read_unchanged() {
        let d = dir_with(&[("server.crt", "CERT"), ("server.key", "KEY")]);
        let p = d.path().join("web-config.yml");
        // docs/web-config.yml of the exporter toolkit.
        let f = parse(
            &p,
            "# TLS and basic authentication configuration example.\n\
             tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n\n\
             basic_auth_users:\n  alice: $2y$10$mDwo.lAisC94iLAyP81MCesa29IzH37oigHC/42V2pdJlUprsJPze\n  \
             bob: $2y$10$hLqFl9jSjoAAy95Z/zw8Ye8wkdMBM8c5Bn1ptYqP/AXyV0.oy0S8m\n\n\
             basic_auth_excluded_paths:\n- /-/healthy\n- /-/ready\n",
        )
        .unwrap();
        let t = f.tls.unwrap();
        assert_eq!(t.cert.file, Some(d.path().join("server.crt")));
        assert_eq!(t.cert.text, b"CERT");
        assert_eq!(t.min_version, TlsVersion::TLS12);
        assert_eq!(t.client_auth, ClientAuth::NoClientCert);
        assert_eq!(f.users.len(), 2);
        assert_eq!(f.excluded_paths, ["/-/healthy", "/-/ready"]);
        assert_eq!(
            f.files,
            [
                p.clone(),
                d.path().join("server.crt"),
                d.path().join("server.key")
            ]
        );
        // https/testdata/tls_config_users.good.yml: spaces before the colons, quoted names.
        let f = parse(
            &p,
            "tls_server_config :\n  cert_file : \"server.crt\"\n  key_file : \"server.key\"\n\
             basic_auth_users:\n  alice: $2y$12$1DpfPeqF9HzHJt.EWswy1exHluGfbhnn3yXhR7Xes6m3WJqFg0Wby\n",
        )
        .unwrap();
        assert!(f.tls.is_some());
        // Every key of the document this agent implements, at once.
        let f = parse(
            &p,
            &format!(
                "tls_server_config:\n  cert: |\n    INLINE\n  key_file: server.key\n  \
                 client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: server.crt\n  \
                 client_allowed_sans: [prometheus.example.org, 10.0.0.1]\n  \
                 min_version: TLS13\n  max_version: TLS13\n  \
                 cipher_suites: [TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256]\n  \
                 prefer_server_cipher_suites: false\n  curve_preferences: [X25519, CurveP256]\n\
                 http_server_config:\n  http2: false\n  headers:\n    \
                 X-Frame-Options: deny\n    Strict-Transport-Security: max-age=31536000\n\
                 basic_auth_users:\n  alice: {HASH}\n"
            ),
        )
        .unwrap();
        let t = f.tls.unwrap();
        assert_eq!(t.cert.text, b"INLINE\n");
        assert_eq!(t.client_auth, ClientAuth::RequireAndVerifyClientCert);
        assert_eq!(t.cipher_suites, ["ECDHE-RSA-AES128-GCM-SHA256"]);
        assert_eq!(t.curves, ["X25519", "P-256"]);
        assert!(!t.prefer_server_cipher_suites);
        let headers: Vec<(&str, &str)> = f
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.to_str().unwrap()))
            .collect();
        assert_eq!(
            headers,
            [
                ("strict-transport-security", "max-age=31536000"),
                ("x-frame-options", "deny")
            ]
        );
    }

    #[test]
    fn an_empty_file_or_one_without_certificates_is_plain_http() {
        let p = Path::new("/etc/web.yml");
        for yaml in [
            "",
            "# nothing yet\n",
            "---\n",
            "basic_auth_users:\n  a: $2y$10$mDwo.lAisC94iLAyP81MCesa29IzH37oigHC/42V2pdJlUprsJPze\n",
        ] {
            let f = parse(p, yaml).unwrap();
            assert!(f.tls.is_none(), "{yaml}");
        }
    }

    #[test]
    fn every_bad_value_is_refused_with_its_line_and_what_to_do() {
        for (yaml, line, words) in [
            (
                "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  certfile: x\n",
                4,
                "unknown field `certfile`",
            ),
            (
                "basic_auth_user:\n  a: b\n",
                1,
                "unknown field `basic_auth_user`",
            ),
            (
                "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  client_auth_type: RequireClientCert\n",
                4,
                "unknown variant `RequireClientCert`",
            ),
            (
                "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  min_version: TLS14\n",
                4,
                "unknown variant `TLS14`",
            ),
            (
                "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  min_version: TLS13\n  max_version: TLS12\n",
                4,
                "above max_version",
            ),
            (
                "tls_server_config:\n  cert_file: server.crt\n",
                2,
                "key_file is missing",
            ),
            (
                "tls_server_config:\n  cert_file: nowhere.crt\n  key_file: server.key\n",
                2,
                "nowhere.crt",
            ),
            (
                "tls_server_config:\n  cert: X\n  cert_file: server.crt\n  key_file: server.key\n",
                3,
                "both cert and cert_file",
            ),
            (
                "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  client_ca_file: server.crt\n",
                4,
                "RequireAndVerifyClientCert",
            ),
            (
                "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  client_auth_type: RequireAndVerifyClientCert\n",
                4,
                "needs client_ca_file",
            ),
            (
                "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  client_allowed_sans: [a]\n",
                4,
                "RequireAnyClientCert",
            ),
            (
                "tls_server_config:\n  client_auth_type: RequireAndVerifyClientCert\n",
                1,
                "no cert_file and key_file",
            ),
            (
                "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  cipher_suites:\n    - TLS_AES_128_GCM_SHA256\n",
                5,
                "`TLS_AES_128_GCM_SHA256` is not a cipher suite",
            ),
            (
                "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  curve_preferences: [X25519MLKEM768]\n",
                4,
                "X25519MLKEM768",
            ),
            (
                "basic_auth_users:\n  alice: secret\n",
                2,
                "not a bcrypt hash",
            ),
            (
                "http_server_config:\n  headers:\n    Server: nginx\n",
                3,
                "`Server` cannot be configured",
            ),
            (
                "http_server_config:\n  headers:\n    X-Frame-Options: allow\n",
                3,
                "deny or sameorigin",
            ),
            (
                "http_server_config:\n  http3: true\n",
                2,
                "unknown field `http3`",
            ),
            (
                "rate_limit:\n  interval: 1s\n  burst: 5\n",
                1,
                "rate_limit is not implemented",
            ),
            (
                "basic_auth_excluded_paths: [metrics]\n",
                1,
                "each starts with /",
            ),
            ("tls_server_config: [a, b]\n", 1, "expected mapping"),
            (
                "tls_server_config:\n  cert_file: /dev/zero\n  key_file: server.key\n",
                2,
                "larger than 1 MiB",
            ),
        ] {
            let (message, at) = refused(yaml);
            assert!(message.contains(words), "{yaml:?}: {message}");
            assert_eq!(at, Some(line), "{yaml:?}: {message}");
        }
    }

    #[test]
    fn a_password_hash_is_never_echoed_in_an_error() {
        let (message, _) = refused("basic_auth_users:\n  alice: hunter2-not-a-hash\n");
        assert!(!message.contains("hunter2"), "{message}");
    }
}
