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

/// A `<D:response>` being read: its size as text until the response ends.
#[derive(Default)]
struct Partial {
    item: Item,
    size: String,
}

/// Parses a PROPFIND multistatus body.
pub fn parse_multistatus(xml: &str) -> Result<Vec<Item>, String> {
    let mut reader = Reader::from_str(xml);
    let mut items = Vec::new();
    let mut cur: Option<Partial> = None;
    let mut field: Option<&'static str> = None;
    let mut saw_multistatus = false;
    let mut depth = 0usize;
    loop {
        let event = reader.read_event();
        match event {
            Err(e) => return Err(format!("not a WebDAV listing: {e}")),
            Ok(Event::Eof) if depth > 0 => return Err("not a WebDAV listing: cut short".into()),
            Ok(Event::Eof) => break,
            Ok(ref ev @ (Event::Start(ref e) | Event::Empty(ref e))) => {
                crate::xml::within_limits(e, depth)
                    .map_err(|m| format!("not a WebDAV listing: {m}"))?;
                let open = matches!(ev, Event::Start(_));
                if open {
                    depth += 1;
                }
                match e.local_name().as_ref() {
                    "multistatus" => saw_multistatus = true,
                    "response" => cur = Some(Partial::default()),
                    "collection" => {
                        if let Some(p) = cur.as_mut() {
                            p.item.collection = true;
                        }
                    }
                    // An empty element (`<getcontentlength/>`) has no value to read.
                    "href" if open => field = Some("href"),
                    "getcontentlength" if open => field = Some("size"),
                    "getetag" if open => field = Some("etag"),
                    "getlastmodified" if open => field = Some("modified"),
                    _ => {}
                }
            }
            Ok(Event::Text(t)) => {
                if let (Some(i), Some(f)) = (cur.as_mut(), field) {
                    value(i, f, &t.xml10_content())?;
                }
            }
            // `&amp;` in an href (a file named `a&b.csv`) comes as a reference of its own.
            Ok(Event::GeneralRef(r)) => {
                if let (Some(i), Some(f)) = (cur.as_mut(), field) {
                    let v = crate::xml::resolve(&r)
                        .map_err(|m| format!("not a WebDAV listing: {m}"))?;
                    value(i, f, &v)?;
                }
            }
            Ok(Event::End(e)) => {
                depth = depth.saturating_sub(1);
                field = None;
                if e.local_name().as_ref() == "response"
                    && let Some(i) = cur.take()
                {
                    items.push(i.finish()?);
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

/// A piece of a field's text: the href is kept whole (references split it into pieces), the
/// other fields are read when the response ends.
fn value(p: &mut Partial, field: &str, piece: &str) -> Result<(), String> {
    let i = &mut p.item;
    match field {
        "href" => i.href.push_str(piece),
        "size" => p.size.push_str(piece),
        "etag" => i.etag.get_or_insert_with(String::new).push_str(piece),
        _ => i.modified.get_or_insert_with(String::new).push_str(piece),
    }
    let i = &p.item;
    let held = i.href.len()
        + p.size.len()
        + i.etag.as_ref().map_or(0, String::len)
        + i.modified.as_ref().map_or(0, String::len);
    if held > 64 * 1024 {
        return Err(format!(
            "not a WebDAV listing: a response whose {field} is longer than 64 KiB"
        ));
    }
    Ok(())
}

impl Partial {
    fn finish(self) -> Result<Item, String> {
        let Partial { item: mut i, size } = self;
        i.href = i.href.trim().to_owned();
        let size = size.trim();
        if !size.is_empty() {
            i.size = Some(size.parse().map_err(|_| {
                format!(
                    "size `{}` is not a number",
                    size.chars().take(40).collect::<String>()
                )
            })?);
        }
        i.etag = i
            .etag
            .map(|e| e.trim().trim_matches('"').to_owned())
            .filter(|e| !e.is_empty());
        i.modified = i
            .modified
            .map(|m| m.trim().to_owned())
            .filter(|m| !m.is_empty());
        Ok(i)
    }
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
            resp.take(MAX_LISTING + 1)
                .read_to_string(&mut body)
                .map_err(|e| GranuleError::Source(format!("{dir}: {e}")))?;
            if body.len() as u64 > MAX_LISTING {
                return Err(GranuleError::Source(format!(
                    "{dir}: the listing is larger than {} MiB; split the folder",
                    MAX_LISTING >> 20
                )));
            }
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

    fn listing(responses: &str) -> String {
        format!(
            "<?xml version=\"1.0\"?>\n<D:multistatus xmlns:D=\"DAV:\">{responses}</D:multistatus>"
        )
    }

    fn file(href: &str, size: u64) -> String {
        format!(
            "<D:response><D:href>{href}</D:href><D:propstat><D:prop><D:resourcetype/><D:getcontentlength>{size}</D:getcontentlength><D:getetag>\"e{size}\"</D:getetag></D:prop></D:propstat></D:response>"
        )
    }

    #[test]
    fn references_in_an_href_are_part_of_it() {
        let items = parse_multistatus(&listing(&file("/dav/a&amp;b&#32;c&#x23;.csv", 7))).unwrap();
        assert_eq!(items[0].href, "/dav/a&b c#.csv");
        assert_eq!(items[0].size, Some(7));
        assert_eq!(items[0].etag.as_deref(), Some("e7"));
        let err = parse_multistatus(&listing(&file("/dav/a&nbsp;.csv", 7))).unwrap_err();
        assert!(err.contains("unknown entity `&nbsp`"), "{err}");
    }

    /// The answers a hostile or broken server could send: each refused (or read) in time and
    /// memory bounded by its size, with an error that says what was wrong. The bound of 20 s
    /// catches a quadratic parser (RUSTSEC-2026-0194: 10,000 attributes took minutes), not speed.
    #[test]
    fn hostile_listings_are_refused_in_bounded_time() {
        let bound = std::time::Duration::from_secs(20);
        let attrs: String = (0..20_000).map(|i| format!(" a{i}=\"x\"")).collect();
        let dup: String = (0..20_000).map(|_| " a=\"x\"").collect();
        let ns: String = (0..20_000)
            .map(|i| format!(" xmlns:n{i}=\"urn:{i}\""))
            .collect();
        let deep = format!(
            "{}{}",
            "<D:prop>".repeat(100_000),
            "</D:prop>".repeat(100_000)
        );
        for (what, xml, says) in [
            (
                "attributes",
                listing(&format!("<D:response{attrs}/>")),
                "more than 64 attributes",
            ),
            (
                "duplicate attributes",
                listing(&format!("<D:response{dup}/>")),
                "more than 64 attributes",
            ),
            (
                "namespace declarations",
                format!("<D:multistatus xmlns:D=\"DAV:\"{ns}/>"),
                "more than 64 attributes",
            ),
            ("deep nesting", listing(&deep), "nested deeper than 64"),
        ] {
            let t = std::time::Instant::now();
            let err = parse_multistatus(&xml).unwrap_err();
            assert!(
                err.starts_with("not a WebDAV listing: ") && err.contains(says),
                "{what}: {err}"
            );
            assert!(t.elapsed() < bound, "{what}: {:?}", t.elapsed());
        }
        // Many megabytes of a real shape are read whole, in linear time.
        let many: String = (0..50_000)
            .map(|i| file(&format!("/dav/c/{i:06}.csv"), i))
            .collect();
        let xml = listing(&many);
        assert!(xml.len() > 8 << 20, "{}", xml.len());
        let t = std::time::Instant::now();
        let items = parse_multistatus(&xml).unwrap();
        assert_eq!(items.len(), 50_000);
        assert_eq!(items[49_999].size, Some(49_999));
        assert!(t.elapsed() < bound, "{:?}", t.elapsed());
        // A field of megabytes is refused, not grown without end.
        let long = listing(&file(&"x".repeat(1 << 20), 1));
        let err = parse_multistatus(&long).unwrap_err();
        assert!(err.contains("whose href is longer than 64 KiB"), "{err}");
        let etag = format!(
            "<D:response><D:href>/a</D:href><D:getetag>{}</D:getetag></D:response>",
            "e".repeat(1 << 20)
        );
        let err = parse_multistatus(&listing(&etag)).unwrap_err();
        assert!(err.contains("whose etag is longer than 64 KiB"), "{err}");
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
