//! A collection over WebDAV: B2SAFE through Davrods (an Apache mod_dav provider). Listing walks
//! the tree with `PROPFIND Depth: 1` per folder (Apache and nginx refuse `Depth: infinity`);
//! the change marker is the ETag, or size and last-modified where a server sends no ETag.
//! Basic auth from a credential file; the password never reaches a log, an error or a URL.

use std::collections::VecDeque;
use std::io::Read;
use std::time::Duration;

use percent_encoding::percent_decode_str;
use quick_xml::Reader;
use quick_xml::events::Event;
use reqwest::Url;
use reqwest::blocking::Client;

use super::{Entry, GranuleError};

const PROPFIND: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<D:propfind xmlns:D="DAV:"><D:prop><D:resourcetype/><D:getcontentlength/><D:getetag/><D:getlastmodified/></D:prop></D:propfind>"#;

/// A listing bigger than this is refused rather than held in memory.
const MAX_LISTING: u64 = 256 * 1024 * 1024;

pub struct DavSource {
    /// Ends in `/`.
    base: Url,
    client: Client,
    auth: Option<(String, String)>,
}

/// One `<D:response>` of a multistatus answer.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Item {
    pub href: String,
    pub collection: bool,
    pub size: Option<u64>,
    pub etag: Option<String>,
    pub modified: Option<String>,
}

/// Parses a PROPFIND multistatus body.
pub fn parse_multistatus(xml: &str) -> Result<Vec<Item>, String> {
    let mut reader = Reader::from_str(xml);
    let mut items = Vec::new();
    let mut cur: Option<Item> = None;
    let mut field: Option<&'static str> = None;
    let mut saw_multistatus = false;
    let mut depth = 0usize;
    loop {
        let event = reader.read_event();
        if let Ok(Event::Start(_)) = &event {
            depth += 1;
        }
        match event {
            Err(e) => return Err(format!("not a WebDAV listing: {e}")),
            Ok(Event::Eof) if depth > 0 => return Err("not a WebDAV listing: cut short".into()),
            Ok(Event::Eof) => break,
            Ok(ref ev @ (Event::Start(ref e) | Event::Empty(ref e))) => {
                let open = matches!(ev, Event::Start(_));
                match e.local_name().as_ref() {
                    b"multistatus" => saw_multistatus = true,
                    b"response" => cur = Some(Item::default()),
                    b"collection" => {
                        if let Some(i) = cur.as_mut() {
                            i.collection = true;
                        }
                    }
                    // An empty element (`<getcontentlength/>`) has no value to read.
                    b"href" if open => field = Some("href"),
                    b"getcontentlength" if open => field = Some("size"),
                    b"getetag" if open => field = Some("etag"),
                    b"getlastmodified" if open => field = Some("modified"),
                    _ => {}
                }
            }
            Ok(Event::Text(t)) => {
                if let (Some(i), Some(f)) = (cur.as_mut(), field) {
                    let v = t.xml_content().map_err(|e| format!("bad text: {e}"))?;
                    let v = v.trim();
                    if v.is_empty() {
                        continue;
                    }
                    match f {
                        "href" => i.href.push_str(v),
                        "size" => {
                            i.size = Some(
                                v.parse()
                                    .map_err(|_| format!("size `{v}` is not a number"))?,
                            )
                        }
                        "etag" => {
                            i.etag = Some(v.trim_matches('"').to_owned()).filter(|e| !e.is_empty())
                        }
                        _ => i.modified = Some(v.to_owned()),
                    }
                }
            }
            Ok(Event::End(e)) => {
                depth = depth.saturating_sub(1);
                field = None;
                if e.local_name().as_ref() == b"response"
                    && let Some(i) = cur.take()
                {
                    items.push(i);
                }
            }
            _ => {}
        }
    }
    if !saw_multistatus {
        return Err("not a WebDAV listing: no multistatus element".into());
    }
    Ok(items)
}

impl DavSource {
    /// `credential`: `user:password`.
    pub fn new(
        source: &str,
        credential: Option<&str>,
        timeout: Duration,
    ) -> Result<DavSource, GranuleError> {
        let mut base =
            Url::parse(source).map_err(|e| GranuleError::Source(format!("`{source}`: {e}")))?;
        if !base.path().ends_with('/') {
            base.set_path(&format!("{}/", base.path()));
        }
        let auth = match credential {
            None => None,
            Some(c) => Some(super::user_password(c).ok_or_else(|| {
                GranuleError::Source("the credential file must hold `user:password`".into())
            })?),
        };
        let client = super::http_client(timeout)?;
        Ok(DavSource { base, client, auth })
    }

    fn request(&self, method: reqwest::Method, url: &Url) -> reqwest::blocking::RequestBuilder {
        let r = self.client.request(method, url.clone());
        match &self.auth {
            Some((u, p)) => r.basic_auth(u, Some(p)),
            None => r,
        }
    }

    fn check(&self, url: &Url, resp: &reqwest::blocking::Response) -> Result<(), GranuleError> {
        match resp.status().as_u16() {
            200..=299 => Ok(()),
            401 | 403 => Err(GranuleError::Source(format!(
                "{url}: authentication failed (HTTP {}); check the collection's credential",
                resp.status().as_u16()
            ))),
            s => Err(GranuleError::Source(format!("{url}: HTTP {s}"))),
        }
    }

    pub fn list(&self) -> Result<Vec<Entry>, GranuleError> {
        let propfind = reqwest::Method::from_bytes(b"PROPFIND").expect("a valid method");
        let base_path = percent_decode_str(self.base.path())
            .decode_utf8_lossy()
            .into_owned();
        let mut out = Vec::new();
        let mut todo = VecDeque::from([self.base.clone()]);
        while let Some(dir) = todo.pop_front() {
            let resp = self
                .request(propfind.clone(), &dir)
                .header("Depth", "1")
                .header("Content-Type", "application/xml")
                .body(PROPFIND)
                .send()
                .map_err(|e| GranuleError::Source(format!("{dir}: {}", crate::error_chain(&e))))?;
            self.check(&dir, &resp)?;
            let mut body = String::new();
            resp.take(MAX_LISTING)
                .read_to_string(&mut body)
                .map_err(|e| GranuleError::Source(format!("{dir}: {e}")))?;
            let items = parse_multistatus(&body)
                .map_err(|m| GranuleError::Source(format!("{dir}: {m}")))?;
            let here = percent_decode_str(dir.path())
                .decode_utf8_lossy()
                .into_owned();
            for item in items {
                let url = dir
                    .join(&item.href)
                    .map_err(|_| GranuleError::BadPath(item.href.clone()))?;
                let path = percent_decode_str(url.path())
                    .decode_utf8_lossy()
                    .into_owned();
                if path.trim_end_matches('/') == here.trim_end_matches('/') {
                    continue;
                }
                // Everything listed must lie below the collection's root.
                let Some(rel) = path.strip_prefix(&base_path) else {
                    return Err(GranuleError::BadPath(item.href));
                };
                if url.host_str() != self.base.host_str()
                    || url.port_or_known_default() != self.base.port_or_known_default()
                {
                    return Err(GranuleError::BadPath(item.href));
                }
                if item.collection {
                    let mut next = url.clone();
                    if !next.path().ends_with('/') {
                        next.set_path(&format!("{}/", next.path()));
                    }
                    todo.push_back(next);
                    continue;
                }
                let size = item.size.unwrap_or(0);
                let version = match &item.etag {
                    Some(e) => format!("etag:{e}"),
                    None => format!("{size}:{}", item.modified.as_deref().unwrap_or("")),
                };
                // If-Range takes only a strong ETag; a weak one falls back to the date.
                let validator = match &item.etag {
                    Some(e) if !e.starts_with("W/") => Some(format!("\"{e}\"")),
                    _ => item.modified.clone(),
                };
                let modified_ms = item
                    .modified
                    .as_deref()
                    .and_then(|d| httpdate::parse_http_date(d).ok())
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .and_then(|d| i64::try_from(d.as_millis()).ok());
                out.push(Entry {
                    path: rel.trim_end_matches('/').to_owned(),
                    size,
                    version,
                    validator,
                    checksum: None,
                    modified_ms,
                });
            }
        }
        Ok(out)
    }

    pub fn url(&self, entry: &Entry) -> Url {
        let mut u = self.base.clone();
        {
            let mut segs = u.path_segments_mut().expect("an http URL has a path");
            segs.pop_if_empty();
            for part in entry.path.split('/') {
                segs.push(part);
            }
        }
        u
    }

    /// GETs the file, from `offset` when the server can resume there and the content is still
    /// the listed one (`If-Range`); returns where the body starts.
    pub fn open_at(
        &self,
        entry: &Entry,
        offset: u64,
    ) -> Result<(Box<dyn Read>, u64), GranuleError> {
        let url = self.url(entry);
        let mut req = self.request(reqwest::Method::GET, &url);
        let ranged = offset > 0 && entry.validator.is_some();
        if let (true, Some(v)) = (ranged, &entry.validator) {
            req = req
                .header("Range", format!("bytes={offset}-"))
                .header("If-Range", v);
        }
        let resp = req
            .send()
            .map_err(|e| GranuleError::Transfer(format!("{url}: {}", crate::error_chain(&e))))?;
        match resp.status().as_u16() {
            // The kept bytes are past the end: the file is not the one they came from.
            416 if ranged => return self.open_at(entry, 0),
            404 | 410 => return Err(GranuleError::Vanished(entry.path.clone())),
            408 | 429 | 500..=599 => {
                return Err(GranuleError::Transfer(format!(
                    "{url}: HTTP {}",
                    resp.status().as_u16()
                )));
            }
            _ => self.check(&url, &resp)?,
        }
        let start = if resp.status().as_u16() == 206 {
            let range = resp
                .headers()
                .get("Content-Range")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if !range.starts_with(&format!("bytes {offset}-")) {
                return Err(GranuleError::Transfer(format!(
                    "{url}: asked for the bytes from {offset}, got `{range}`"
                )));
            }
            offset
        } else {
            0
        };
        Ok((Box::new(resp), start))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apache_listings_parse() {
        let xml = r#"<?xml version="1.0" encoding="utf-8"?>
<D:multistatus xmlns:D="DAV:" xmlns:ns0="DAV:">
<D:response><D:href>/dav/epnlab/</D:href><D:propstat><D:prop><D:resourcetype><D:collection/></D:resourcetype><D:getetag>"1000-5e"</D:getetag></D:prop></D:propstat></D:response>
<D:response><D:href>/dav/epnlab/g%2000.csv</D:href><D:propstat><D:prop><D:resourcetype/><D:getcontentlength>1234</D:getcontentlength><D:getetag>"4d2-5f"</D:getetag><D:getlastmodified>Tue, 24 Nov 2026 17:00:00 GMT</D:getlastmodified></D:prop></D:propstat></D:response>
<D:response><D:href>/dav/epnlab/sub/</D:href><D:propstat><D:prop><D:resourcetype><D:collection/></D:resourcetype><D:getcontentlength/>
</D:prop></D:propstat></D:response>
</D:multistatus>"#;
        let items = parse_multistatus(xml).unwrap();
        assert_eq!(items.len(), 3);
        assert!(items[0].collection && items[2].collection);
        assert_eq!(
            items[1],
            Item {
                href: "/dav/epnlab/g%2000.csv".into(),
                collection: false,
                size: Some(1234),
                etag: Some("4d2-5f".into()),
                modified: Some("Tue, 24 Nov 2026 17:00:00 GMT".into()),
            }
        );
    }

    #[test]
    fn bad_listings_are_refused() {
        for bad in [
            "",
            "<html><body>login</body></html>",
            "<D:multistatus xmlns:D=\"DAV:\"><D:response><D:getcontentlength>12x</D:getcontentlength></D:response></D:multistatus>",
            "<D:multistatus xmlns:D=\"DAV:\"><D:response><D:href>a</D:hre",
        ] {
            assert!(parse_multistatus(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn credentials_never_reach_the_url() {
        let s = DavSource::new(
            "https://b2safe.example.eu/dav/epnlab",
            Some("alice:s3cret\n"),
            Duration::from_secs(5),
        )
        .unwrap();
        let e = Entry {
            path: "sub/g 1.csv".into(),
            size: 1,
            version: String::new(),
            validator: None,
            checksum: None,
            modified_ms: None,
        };
        let u = s.url(&e).to_string();
        assert_eq!(u, "https://b2safe.example.eu/dav/epnlab/sub/g%201.csv");
        assert!(!u.contains("s3cret"));
        assert!(DavSource::new("https://x/", Some("no-colon"), Duration::from_secs(5)).is_err());
    }
}
