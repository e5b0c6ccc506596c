//! A DOUBLE of the iRODS HTTP API (irods/irods_client_http_api, API.md, version 0.7.0): no
//! iRODS server can run on this machine, so this serves a directory as the collection
//! `/tempZone/home/alice` with the operations the agent uses, as API.md describes them:
//!
//! - `POST /authenticate` with Basic auth answers a bearer token (text); tokens expire after
//!   `lifetime` whether used or not, and an expired or unknown token gets 401;
//! - `GET /collections?op=stat&lpath=` answers `{"irods_response": {...}, "type": "collection", ...}`;
//! - `GET /query?op=execute_genquery&query=&offset=&count=` runs the two GenQuery1 shapes
//!   `SELECT COLL_NAME, DATA_NAME, DATA_SIZE, DATA_CHECKSUM, DATA_MODIFY_TIME WHERE COLL_NAME = '<c>'`
//!   and `... WHERE COLL_NAME like '<c>/%'`, `count` clamped to `max_rows` (as `/info` would say);
//! - `GET /data-objects?op=read&lpath=&offset=&count=` answers the bytes.
//!
//! Checksums are iRODS's `sha2:<base64>` of the file, unless a test sets another one.

use std::collections::BTreeMap;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::base64;
use super::dav::{PASSWORD, USER};
use super::httpd::{Listener, form_decode, read_request, respond};

pub const ZONE_PATH: &str = "/tempZone/home/alice";
pub const API: &str = "/irods-http-api/0.7.0";

#[derive(Default)]
pub struct State {
    tokens: BTreeMap<String, Instant>,
    /// Checksums to answer instead of the computed one, by path below the zone root.
    pub checksums: BTreeMap<String, String>,
    /// Requests by operation (`authenticate`, `stat`, `execute_genquery`, `read`), and each
    /// read's offset.
    pub ops: Vec<String>,
}

pub struct IrodsDouble {
    pub port: u16,
    pub root: tempfile::TempDir,
    pub state: Arc<Mutex<State>>,
    pub lifetime: Arc<Mutex<Duration>>,
    pub max_rows: Arc<AtomicUsize>,
    _listener: Listener,
}

impl IrodsDouble {
    pub fn start() -> IrodsDouble {
        let root = tempfile::tempdir().unwrap();
        let ctx = Ctx {
            root: root.path().to_owned(),
            state: Arc::default(),
            lifetime: Arc::new(Mutex::new(Duration::from_secs(3600))),
            max_rows: Arc::new(AtomicUsize::new(1000)),
        };
        let c = ctx.clone();
        let listener = Listener::start(move |conn| serve(conn, &c));
        IrodsDouble {
            port: listener.port,
            root,
            state: ctx.state,
            lifetime: ctx.lifetime,
            max_rows: ctx.max_rows,
            _listener: listener,
        }
    }

    /// The collection's source as vespa-service.toml names it.
    pub fn source(&self, collection: &str) -> String {
        format!(
            "irods+http://127.0.0.1:{}{API}{ZONE_PATH}/{collection}",
            self.port
        )
    }

    pub fn data(&self, collection: &str) -> PathBuf {
        let p = self.root.path().join(collection);
        std::fs::create_dir_all(&p).unwrap();
        p
    }

    pub fn ops(&self) -> Vec<String> {
        self.state.lock().unwrap().ops.clone()
    }
}

#[derive(Clone)]
struct Ctx {
    root: PathBuf,
    state: Arc<Mutex<State>>,
    lifetime: Arc<Mutex<Duration>>,
    max_rows: Arc<AtomicUsize>,
}

fn json(conn: &mut TcpStream, status: u16, v: serde_json::Value) -> std::io::Result<()> {
    respond(conn, status, "application/json", v.to_string().as_bytes())
}

/// The directory a logical path names, if it lies in the zone.
fn local(root: &Path, lpath: &str) -> Option<PathBuf> {
    let rest = lpath.strip_prefix(ZONE_PATH)?;
    if rest.split('/').any(|s| s == "..") {
        return None;
    }
    Some(root.join(rest.trim_start_matches('/')))
}

fn serve(mut conn: TcpStream, ctx: &Ctx) -> std::io::Result<()> {
    let Some((head, _body)) = read_request(&mut conn)? else {
        return Ok(());
    };
    let line = head.lines().next().unwrap_or("");
    let mut parts = line.split(' ');
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let params: BTreeMap<String, String> = query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (form_decode(k), form_decode(v)))
        .collect();
    let header = |name: &str| {
        head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
        })
    };
    let Some(endpoint) = path.strip_prefix(API) else {
        return respond(&mut conn, 404, "text/plain", b"");
    };

    if endpoint == "/authenticate" && method == "POST" {
        ctx.state.lock().unwrap().ops.push("authenticate".into());
        let want = format!("Basic {}", base64(format!("{USER}:{PASSWORD}").as_bytes()));
        if header("authorization").as_deref() != Some(want.as_str()) {
            return respond(&mut conn, 401, "text/plain", b"");
        }
        let mut st = ctx.state.lock().unwrap();
        let token = format!("tok{:08}", st.tokens.len() + 1);
        st.tokens.insert(token.clone(), Instant::now());
        return respond(&mut conn, 200, "text/plain", token.as_bytes());
    }
    // Every other operation needs a live bearer token.
    let token = header("authorization")
        .and_then(|h| h.strip_prefix("Bearer ").map(str::to_owned))
        .unwrap_or_default();
    let lifetime = *ctx.lifetime.lock().unwrap();
    let live = ctx
        .state
        .lock()
        .unwrap()
        .tokens
        .get(&token)
        .is_some_and(|t| t.elapsed() < lifetime);
    if !live {
        return respond(&mut conn, 401, "text/plain", b"");
    }
    let op = params.get("op").cloned().unwrap_or_default();
    let lpath = params.get("lpath").cloned().unwrap_or_default();
    match (endpoint, op.as_str()) {
        ("/collections", "stat") => {
            ctx.state.lock().unwrap().ops.push("stat".into());
            match local(&ctx.root, &lpath).filter(|p| p.is_dir()) {
                Some(_) => json(
                    &mut conn,
                    200,
                    serde_json::json!({"irods_response": {"status_code": 0}, "type": "collection",
                        "inheritance_enabled": false, "permissions": [], "registered": true, "modified_at": 0}),
                ),
                None => json(
                    &mut conn,
                    404,
                    serde_json::json!({"irods_response": {"status_code": -170000, "status_message": "not found"}}),
                ),
            }
        }
        ("/query", "execute_genquery") => {
            ctx.state
                .lock()
                .unwrap()
                .ops
                .push("execute_genquery".into());
            let q = params.get("query").cloned().unwrap_or_default();
            let offset: usize = params
                .get("offset")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let count: usize = params
                .get("count")
                .and_then(|v| v.parse().ok())
                .unwrap_or(usize::MAX)
                .clamp(1, ctx.max_rows.load(Ordering::SeqCst));
            let Some(rows) = genquery(ctx, &q) else {
                return json(
                    &mut conn,
                    400,
                    serde_json::json!({"irods_response": {"status_code": -808000, "status_message": "unsupported query"}}),
                );
            };
            let page: Vec<_> = rows.into_iter().skip(offset).take(count).collect();
            json(
                &mut conn,
                200,
                serde_json::json!({"irods_response": {"status_code": 0}, "rows": page}),
            )
        }
        ("/data-objects", "read") => {
            let offset: u64 = params
                .get("offset")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            ctx.state
                .lock()
                .unwrap()
                .ops
                .push(format!("read {lpath} offset={offset}"));
            match local(&ctx.root, &lpath).and_then(|p| std::fs::read(p).ok()) {
                Some(bytes) => {
                    let from = (offset as usize).min(bytes.len());
                    let to = params
                        .get("count")
                        .and_then(|v| v.parse::<usize>().ok())
                        .map_or(bytes.len(), |c| (from + c).min(bytes.len()));
                    respond(&mut conn, 200, "application/octet-stream", &bytes[from..to])
                }
                None => json(
                    &mut conn,
                    404,
                    serde_json::json!({"irods_response": {"status_code": -808000}}),
                ),
            }
        }
        _ => respond(&mut conn, 400, "text/plain", b""),
    }
}

/// The rows of the two GenQuery shapes the agent sends, sorted as iRODS would.
fn genquery(ctx: &Ctx, q: &str) -> Option<Vec<[String; 5]>> {
    let select = "SELECT COLL_NAME, DATA_NAME, DATA_SIZE, DATA_CHECKSUM, DATA_MODIFY_TIME WHERE ";
    let cond = q.strip_prefix(select)?;
    let (exact, coll) = if let Some(c) = cond.strip_prefix("COLL_NAME = '") {
        (true, c.strip_suffix('\'')?)
    } else {
        (
            false,
            cond.strip_prefix("COLL_NAME like '")?.strip_suffix("/%'")?,
        )
    };
    let dir = local(&ctx.root, coll)?;
    let mut rows = Vec::new();
    let mut stack = vec![(dir.clone(), coll.to_owned())];
    while let Some((d, lpath)) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let meta = e.metadata().ok()?;
            let name = e.file_name().to_string_lossy().into_owned();
            if meta.is_dir() {
                stack.push((e.path(), format!("{lpath}/{name}")));
                continue;
            }
            let below = lpath != coll;
            if exact == below {
                continue;
            }
            let rel = e
                .path()
                .strip_prefix(&ctx.root)
                .ok()?
                .to_string_lossy()
                .into_owned();
            let checksum = ctx
                .state
                .lock()
                .unwrap()
                .checksums
                .get(&rel)
                .cloned()
                .unwrap_or_else(|| {
                    use sha2::Digest;
                    let bytes = std::fs::read(e.path()).unwrap_or_default();
                    format!("sha2:{}", base64(&sha2::Sha256::digest(&bytes)))
                });
            let mtime = meta
                .modified()
                .ok()?
                .duration_since(std::time::UNIX_EPOCH)
                .ok()?
                .as_secs();
            rows.push([
                lpath.clone(),
                name,
                meta.len().to_string(),
                checksum,
                format!("{mtime:011}"),
            ]);
        }
    }
    rows.sort();
    Some(rows)
}
