//! A collection over the iRODS HTTP API (`irods/irods_client_http_api`, API.md): B2SAFE's own
//! store without a WebDAV front. The source is written
//! `irods+https://host/irods-http-api/<X.Y.Z>/<zone>/home/<user>/<collection>`: the URL up to the
//! version segment is the API, the rest the collection's logical path.
//!
//! Authentication: `POST /authenticate` with Basic `user:password` gives a bearer token; a token
//! that expired answers 401, and the agent authenticates once more and repeats the request.
//! Listing: one paged GenQuery for the collection and one for everything below it, giving each
//! object's size, checksum and mtime, so a rescan is a handful of requests whatever the depth.
//! iRODS's own SHA-256 (`sha2:<base64>`) verifies a file with no manifest. Reading:
//! `op=read` with `offset`, so a broken transfer resumes where it broke.

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::Mutex;
use std::time::Duration;

use reqwest::Url;
use reqwest::blocking::{Client, RequestBuilder, Response};

use super::{Entry, GranuleError};
use crate::service::irods_url::{SCHEME, split};

/// The scheme prefix that names this source.
/// Rows asked for per GenQuery page; the server clamps it to its own maximum.
const PAGE: usize = 1000;

/// A GenQuery answer bigger than this is refused rather than held in memory.
const MAX_BODY: u64 = 64 * 1024 * 1024;

pub struct IrodsSource {
    /// Ends without `/`: `https://host/irods-http-api/0.7.0`.
    api: Url,
    /// The collection's logical path, without a trailing `/`.
    lpath: String,
    client: Client,
    user: String,
    password: String,
    token: Mutex<Option<String>>,
}

/// iRODS's checksum as SHA-256 hex, when it is one (`sha2:`); MD5 and others verify nothing
/// the agent computes.
pub fn sha256_of(checksum: &str) -> Option<String> {
    checksum
        .starts_with("sha2:")
        .then(|| super::manifest::sha256_of(checksum))
        .flatten()
}

/// A GenQuery answer: `{"irods_response": {"status_code": 0}, "rows": [[...], ...]}`.
#[derive(serde::Deserialize)]
struct Rows {
    irods_response: IrodsStatus,
    #[serde(default)]
    rows: Vec<Vec<String>>,
}

#[derive(serde::Deserialize)]
struct IrodsStatus {
    status_code: i64,
    #[serde(default)]
    status_message: Option<String>,
}

#[derive(serde::Deserialize)]
struct Stat {
    irods_response: IrodsStatus,
    #[serde(default, rename = "type")]
    kind: Option<String>,
}

/// Parses one GenQuery page; an error says what is wrong with it.
pub fn parse_rows(body: &str) -> Result<Vec<Vec<String>>, String> {
    let r: Rows = serde_json::from_str(body).map_err(|e| format!("not a GenQuery answer: {e}"))?;
    // CAT_NO_ROWS_FOUND: an empty page, not a failure.
    if r.irods_response.status_code == -808_000 {
        return Ok(Vec::new());
    }
    if r.irods_response.status_code < 0 {
        return Err(format!(
            "iRODS error {}{}",
            r.irods_response.status_code,
            r.irods_response
                .status_message
                .map(|m| format!(": {m}"))
                .unwrap_or_default()
        ));
    }
    Ok(r.rows)
}

impl IrodsSource {
    /// `credential`: `user:password`, required: the HTTP API has no anonymous reads here.
    pub fn new(
        source: &str,
        credential: Option<&str>,
        timeout: Duration,
    ) -> Result<IrodsSource, GranuleError> {
        let (api, lpath) = split(source).map_err(GranuleError::Source)?;
        let (user, password) = credential.and_then(super::user_password).ok_or_else(|| {
            GranuleError::Source(
                "an iRODS HTTP API collection needs a credential holding `user:password`".into(),
            )
        })?;
        let client = super::http_client(timeout)?;
        Ok(IrodsSource {
            api,
            lpath,
            client,
            user,
            password,
            token: Mutex::new(None),
        })
    }

    fn endpoint(&self, name: &str) -> Url {
        let mut u = self.api.clone();
        u.set_path(&format!("{}/{name}", self.api.path()));
        u
    }

    fn authenticate(&self) -> Result<String, GranuleError> {
        let url = self.endpoint("authenticate");
        let resp = self
            .client
            .post(url.clone())
            .basic_auth(&self.user, Some(&self.password))
            .send()
            .map_err(|e| GranuleError::Transfer(format!("{url}: {}", crate::error_chain(&e))))?;
        match resp.status().as_u16() {
            200 => {}
            401 | 403 => {
                return Err(GranuleError::Source(format!(
                    "{url}: authentication failed (HTTP {}); check the collection's credential",
                    resp.status().as_u16()
                )));
            }
            s => return Err(status_error(&url, s)),
        }
        let token = resp
            .text()
            .map_err(|e| GranuleError::Transfer(format!("{url}: {e}")))?
            .trim()
            .to_owned();
        if token.is_empty() || token.len() > 4096 || token.contains(char::is_whitespace) {
            return Err(GranuleError::Source(format!(
                "{url}: the answer is not a bearer token"
            )));
        }
        Ok(token)
    }

    /// Sends a request with the bearer token; on 401 authenticates once more and repeats it
    /// (tokens expire whether used or not).
    fn send(&self, build: impl Fn() -> RequestBuilder) -> Result<Response, GranuleError> {
        for fresh in [false, true] {
            let token = {
                let mut held = self.token.lock().unwrap_or_else(|e| e.into_inner());
                match (&*held, fresh) {
                    (Some(t), false) => t.clone(),
                    _ => {
                        let t = self.authenticate()?;
                        *held = Some(t.clone());
                        t
                    }
                }
            };
            let resp = build().bearer_auth(&token).send().map_err(|e| {
                GranuleError::Transfer(format!("{}: {}", self.api, crate::error_chain(&e)))
            })?;
            if resp.status().as_u16() != 401 {
                return Ok(resp);
            }
        }
        Err(GranuleError::Source(format!(
            "{}: a fresh token was refused (HTTP 401); check the collection's credential",
            self.api
        )))
    }

    /// A GET's status and JSON body.
    fn get(&self, url: &Url, query: &[(&str, String)]) -> Result<(u16, String), GranuleError> {
        let full = with_query(url, query);
        let resp = self.send(|| self.client.get(full.clone()))?;
        let status = resp.status().as_u16();
        let mut body = String::new();
        resp.take(MAX_BODY)
            .read_to_string(&mut body)
            .map_err(|e| GranuleError::Transfer(format!("{url}: {e}")))?;
        Ok((status, body))
    }

    fn json(&self, url: &Url, query: &[(&str, String)]) -> Result<String, GranuleError> {
        match self.get(url, query)? {
            (200, body) => Ok(body),
            (status, _) => Err(status_error(url, status)),
        }
    }

    /// Every object below the collection, by one paged GenQuery per level of the tree (the
    /// collection itself, then everything under it).
    pub fn list(&self) -> Result<Vec<Entry>, GranuleError> {
        let stat_url = self.endpoint("collections");
        let not_found = || {
            GranuleError::Source(format!(
                "{}: `{}` is not a collection the credential can read",
                self.api, self.lpath
            ))
        };
        let body = match self.get(
            &stat_url,
            &[("op", "stat".into()), ("lpath", self.lpath.clone())],
        )? {
            (200, body) => body,
            (404, _) => return Err(not_found()),
            (status, _) => return Err(status_error(&stat_url, status)),
        };
        let stat: Stat = serde_json::from_str(&body)
            .map_err(|e| GranuleError::Source(format!("{stat_url}: not a stat answer: {e}")))?;
        if stat.irods_response.status_code < 0 || stat.kind.as_deref() != Some("collection") {
            return Err(not_found());
        }
        let url = self.endpoint("query");
        let mut found: BTreeMap<String, Entry> = BTreeMap::new();
        for condition in [
            format!("COLL_NAME = '{}'", self.lpath),
            format!("COLL_NAME like '{}/%'", self.lpath),
        ] {
            let query = format!(
                "SELECT COLL_NAME, DATA_NAME, DATA_SIZE, DATA_CHECKSUM, DATA_MODIFY_TIME WHERE {condition}"
            );
            let mut offset = 0usize;
            loop {
                let body = self.json(
                    &url,
                    &[
                        ("op", "execute_genquery".into()),
                        ("query", query.clone()),
                        ("offset", offset.to_string()),
                        ("count", PAGE.to_string()),
                    ],
                )?;
                let rows =
                    parse_rows(&body).map_err(|m| GranuleError::Source(format!("{url}: {m}")))?;
                let n = rows.len();
                for row in rows {
                    let e = self.entry(&row)?;
                    // One row per replica: the first one stands for the object.
                    found.entry(e.path.clone()).or_insert(e);
                }
                // The server clamps `count` to a maximum of its own, so only an empty page
                // says the listing is over.
                if n == 0 {
                    break;
                }
                offset += n;
            }
        }
        Ok(found.into_values().collect())
    }

    fn entry(&self, row: &[String]) -> Result<Entry, GranuleError> {
        let bad =
            |m: &str| GranuleError::Source(format!("{}: GenQuery row {row:?}: {m}", self.api));
        let [coll, name, size, checksum, mtime] = row else {
            return Err(bad("expected 5 columns"));
        };
        let rel_coll = coll
            .strip_prefix(&self.lpath)
            .filter(|r| r.is_empty() || r.starts_with('/'))
            .ok_or_else(|| GranuleError::BadPath(format!("{coll}/{name}")))?;
        let path = format!("{}/{name}", rel_coll.trim_start_matches('/'))
            .trim_start_matches('/')
            .to_owned();
        let size: u64 = size.parse().map_err(|_| bad("the size is not a number"))?;
        let sum = sha256_of(checksum);
        Ok(Entry {
            // iRODS gives seconds since the epoch, zero-padded.
            modified_ms: mtime.trim().parse::<i64>().ok().map(|s| s * 1000),
            version: format!("{size}:{}:{checksum}", mtime.trim_start_matches('0')),
            validator: Some(format!("{size}:{mtime}:{checksum}")),
            checksum: sum,
            path,
            size,
        })
    }

    pub fn lpath_of(&self, entry: &Entry) -> String {
        format!("{}/{}", self.lpath, entry.path)
    }

    pub fn url(&self, entry: &Entry) -> String {
        format!("{}{}{}", SCHEME, self.api, self.lpath_of(entry))
    }

    /// The object's bytes from `offset` (`op=read` takes an offset, so this always resumes).
    pub fn open_at(
        &self,
        entry: &Entry,
        offset: u64,
    ) -> Result<(Box<dyn Read>, u64), GranuleError> {
        let url = self.endpoint("data-objects");
        let query = [
            ("op", "read".to_owned()),
            ("lpath", self.lpath_of(entry)),
            ("offset", offset.to_string()),
        ];
        let full = with_query(&url, &query);
        let resp = self.send(|| self.client.get(full.clone()))?;
        match resp.status().as_u16() {
            200 => Ok((Box::new(resp), offset)),
            404 => Err(GranuleError::Vanished(entry.path.clone())),
            s => Err(status_error(&url, s)),
        }
    }
}

fn with_query(url: &Url, pairs: &[(&str, String)]) -> Url {
    let mut u = url.clone();
    u.query_pairs_mut()
        .extend_pairs(pairs.iter().map(|(k, v)| (*k, v.as_str())));
    u
}

fn status_error(url: &Url, status: u16) -> GranuleError {
    match status {
        408 | 429 | 500..=599 => GranuleError::Transfer(format!("{url}: HTTP {status}")),
        403 => GranuleError::Source(format!(
            "{url}: HTTP 403; the collection's credential may not read it"
        )),
        s => GranuleError::Source(format!("{url}: HTTP {s}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_sha2_checksums_verify() {
        assert_eq!(
            sha256_of("sha2:ypeBEsobvcr6wjGzmiPcTaeG7/gUfE5yuYB3ha/uSLs=").as_deref(),
            Some("ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb")
        );
        assert_eq!(sha256_of("0cc175b9c0f1b6a831c399e269772661"), None);
        assert_eq!(sha256_of(""), None);
    }

    #[test]
    fn genquery_answers_and_errors_parse() {
        let ok = r#"{"irods_response":{"status_code":0},"rows":[["/z/c","a.csv","3","","01700000000"]]}"#;
        assert_eq!(parse_rows(ok).unwrap()[0][1], "a.csv");
        assert!(
            parse_rows(r#"{"irods_response":{"status_code":0}}"#)
                .unwrap()
                .is_empty()
        );
        let none =
            r#"{"irods_response":{"status_code":-808000,"status_message":"CAT_NO_ROWS_FOUND"}}"#;
        assert!(parse_rows(none).unwrap().is_empty());
        let e = parse_rows(
            r#"{"irods_response":{"status_code":-818000,"status_message":"no access"}}"#,
        )
        .unwrap_err();
        assert!(e.contains("-818000") && e.contains("no access"), "{e}");
        for bad in [
            "",
            "[]",
            "<html>",
            r#"{"rows":[]}"#,
            r#"{"irods_response":{"status_code":0},"rows":[[1]]}"#,
        ] {
            assert!(parse_rows(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rows_outside_the_collection_are_refused() {
        let s = IrodsSource::new(
            "irods+http://127.0.0.1:1/irods-http-api/0.7.0/z/home/u/c",
            Some("u:p"),
            Duration::from_secs(1),
        )
        .unwrap();
        let row = |c: &str, n: &str| {
            vec![
                c.to_owned(),
                n.to_owned(),
                "3".to_owned(),
                String::new(),
                "01700000000".to_owned(),
            ]
        };
        let e = s.entry(&row("/z/home/u/c", "a.csv")).unwrap();
        assert_eq!((e.path.as_str(), e.size), ("a.csv", 3));
        assert_eq!(
            s.entry(&row("/z/home/u/c/sub/deep", "b.csv")).unwrap().path,
            "sub/deep/b.csv"
        );
        assert!(matches!(
            s.entry(&row("/z/home/u/cc", "x")),
            Err(GranuleError::BadPath(_))
        ));
        assert!(s.entry(&row("/z/home/u/c", "x")[..4]).is_err());
        let mut r = row("/z/home/u/c", "x");
        r[2] = "-1".into();
        assert!(s.entry(&r).is_err());
        assert!(
            IrodsSource::new(
                "irods+http://h/irods-http-api/0.7.0/z/c",
                None,
                Duration::from_secs(1)
            )
            .is_err()
        );
    }
}
