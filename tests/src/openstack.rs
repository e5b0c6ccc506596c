//! A DOUBLE of the three OpenStack services a VM rebuild needs, none of which can run on this
//! machine, written from their API references: the metadata service
//! (`GET /openstack/latest/meta_data.json`), Keystone v3 (`POST /v3/auth/tokens` with an
//! application credential: 201, the token in `X-Subject-Token`, the catalog in the body) and
//! Nova (`GET /` for the versions, `GET /servers/{id}`, `POST /servers/{id}/metadata`,
//! `POST /servers/{id}/action` `{"rebuild": ...}` -> 202, 409 when locked). Everything it is
//! asked is recorded, so tests can check the calls, their order and their microversion.

use std::io::Write;
use std::net::TcpStream;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

use super::httpd;

pub const SERVER: &str = "6a0e4b1c-2f4d-4c7e-9d1a-0b5c3e7f9a21";
pub const PROJECT: &str = "9f1c2d3e4b5a";
pub const IMAGE: &str = "1c9e2a7b-debian-12-genericcloud";
pub const CRED_ID: &str = "appcred-0123";
pub const CRED_SECRET: &str = "appcred-secret-s3cr3t-xyz";
pub const TOKEN: &str = "gAAAAA-keystone-token";

#[derive(Debug, Clone)]
pub struct Call {
    pub method: String,
    pub path: String,
    pub microversion: Option<String>,
    pub body: Value,
}

pub struct State {
    pub uuid: String,
    pub max_version: String,
    pub locked: bool,
    pub task_state: Option<String>,
    pub status: String,
    /// None: boot from volume (Nova shows the image as "").
    pub image: Option<String>,
    pub metadata: serde_json::Map<String, Value>,
    pub calls: Vec<Call>,
    /// A malformed answer to give instead of the right one, to the request for this path.
    pub broken: Option<Broken>,
}

/// An answer as a broken or misbehaving service might give it: any status, headers and bytes.
#[derive(Clone, Debug)]
pub struct Broken {
    pub method: &'static str,
    pub path: String,
    pub status: u16,
    /// Extra header lines, each ending in `\r\n`.
    pub headers: String,
    pub body: String,
}

pub struct OpenStack {
    pub state: Arc<Mutex<State>>,
    listener: httpd::Listener,
}

fn answer(conn: &mut TcpStream, status: u16, extra: &str, body: &Value) -> std::io::Result<()> {
    let body = if body.is_null() {
        String::new()
    } else {
        body.to_string()
    };
    write!(
        conn,
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

impl OpenStack {
    pub fn start() -> OpenStack {
        let state = Arc::new(Mutex::new(State {
            uuid: SERVER.into(),
            max_version: "2.96".into(),
            locked: false,
            task_state: None,
            status: "ACTIVE".into(),
            image: Some(IMAGE.into()),
            metadata: serde_json::Map::new(),
            calls: Vec::new(),
            broken: None,
        }));
        let shared = state.clone();
        let listener = httpd::Listener::start(move |mut conn| {
            let Some((head, body)) = httpd::read_request(&mut conn)? else {
                return Ok(());
            };
            let mut first = head.lines().next().unwrap_or("").split_whitespace();
            let method = first.next().unwrap_or("").to_owned();
            let path = first.next().unwrap_or("").to_owned();
            let header = |name: &str| {
                head.lines().find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
                })
            };
            let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let port = conn.local_addr()?.port();
            let mut s = shared.lock().unwrap();
            s.calls.push(Call {
                method: method.clone(),
                path: path.clone(),
                microversion: header("OpenStack-API-Version"),
                body: body.clone(),
            });
            if let Some(b) = s
                .broken
                .clone()
                .filter(|b| b.method == method && b.path == path)
            {
                return write!(
                    conn,
                    "HTTP/1.1 {} X\r\nContent-Type: application/json\r\n{}Content-Length: {}\r\nConnection: close\r\n\r\n{}",
                    b.status,
                    b.headers,
                    b.body.len(),
                    b.body
                );
            }
            let authed = header("X-Auth-Token").as_deref() == Some(TOKEN);
            let server_path = format!("/compute/v2.1/servers/{SERVER}");
            match (method.as_str(), path.as_str()) {
                ("GET", "/metadata/openstack/latest/meta_data.json") => answer(
                    &mut conn,
                    200,
                    "",
                    &json!({"uuid": s.uuid, "project_id": PROJECT, "name": "vespa-node"}),
                ),
                ("POST", "/identity/v3/auth/tokens") => {
                    let c = &body["auth"]["identity"]["application_credential"];
                    if c["id"] != CRED_ID || c["secret"] != CRED_SECRET {
                        return answer(
                            &mut conn,
                            401,
                            "",
                            &json!({"error": {"code": 401, "message": "The request you have made requires authentication."}}),
                        );
                    }
                    answer(
                        &mut conn,
                        201,
                        &format!("X-Subject-Token: {TOKEN}\r\n"),
                        &json!({"token": {
                            "project": {"id": PROJECT, "name": "vespa"},
                            "catalog": [
                                {"type": "identity", "endpoints": [{"interface": "public", "url": format!("http://127.0.0.1:{port}/identity/v3")}]},
                                {"type": "compute", "endpoints": [
                                    {"interface": "internal", "url": "http://10.0.0.1:8774/v2.1"},
                                    {"interface": "public", "url": format!("http://127.0.0.1:{port}/compute/v2.1")}
                                ]}
                            ]
                        }}),
                    )
                }
                _ if !authed => answer(&mut conn, 401, "", &json!({"error": "no token"})),
                ("GET", "/compute/v2.1/") => answer(
                    &mut conn,
                    200,
                    "",
                    &json!({"version": {"id": "v2.1", "status": "CURRENT", "version": s.max_version, "min_version": "2.1"}}),
                ),
                ("GET", p) if p == server_path => {
                    let image = match &s.image {
                        Some(i) => json!({"id": i}),
                        None => json!(""),
                    };
                    answer(
                        &mut conn,
                        200,
                        "",
                        &json!({"server": {
                            "id": SERVER, "status": s.status, "locked": s.locked,
                            "OS-EXT-STS:task_state": s.task_state, "image": image,
                            "metadata": s.metadata,
                        }}),
                    )
                }
                ("POST", p) if p == format!("{server_path}/metadata") => {
                    if let Some(m) = body["metadata"].as_object() {
                        for (k, v) in m {
                            s.metadata.insert(k.clone(), v.clone());
                        }
                    }
                    answer(&mut conn, 200, "", &json!({"metadata": s.metadata}))
                }
                ("POST", p) if p == format!("{server_path}/action") => {
                    if s.locked {
                        return answer(
                            &mut conn,
                            409,
                            "",
                            &json!({"conflictingRequest": {"code": 409, "message": "Instance is locked"}}),
                        );
                    }
                    s.task_state = Some("rebuilding".into());
                    s.status = "REBUILD".into();
                    answer(&mut conn, 202, "", &json!({"server": {"id": SERVER}}))
                }
                _ => answer(&mut conn, 404, "", &json!({"error": "not found"})),
            }
        });
        OpenStack { state, listener }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.listener.port)
    }

    pub fn calls(&self) -> Vec<Call> {
        self.state.lock().unwrap().calls.clone()
    }

    /// The `[openstack]` configuration for this double, the credential in `cred_file`.
    pub fn config(&self, cred_file: &std::path::Path) -> String {
        format!(
            "[openstack]\nauth-url = \"{}\"\ncredential-file = \"{}\"\nserver-id = \"{SERVER}\"\nmetadata-url = \"{}\"\n",
            self.url("/identity/v3"),
            cred_file.display(),
            self.url("/metadata"),
        )
    }
}
