//! A DOUBLE of GitLab's commit status API (REST v4, "Commits API: set the pipeline status of a
//! commit"): no GitLab can run on this machine. `POST /api/v4/projects/:id/statuses/:sha` with
//! the `PRIVATE-TOKEN` header and a form body (`state`, `name`, `description`) answers 201 with
//! the status as JSON; a wrong token 401; a state GitLab does not know 400; and, as GitLab does,
//! 400 "Cannot transition status via :run from :running" when a status is sent twice in a row
//! with the same state for the same commit and name.

use std::collections::BTreeMap;
use std::net::TcpStream;
use std::sync::{Arc, Mutex};

use super::httpd::{Listener, form_decode, read_request, respond};

pub const TOKEN: &str = "glpat-status-7e1d0c";

/// One status GitLab accepted: (project as sent, sha, state, name, description).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub project: String,
    pub sha: String,
    pub state: String,
    pub name: String,
    pub description: String,
}

pub struct GitlabDouble {
    pub port: u16,
    pub accepted: Arc<Mutex<Vec<Status>>>,
    /// Requests refused, with the status code.
    pub refused: Arc<Mutex<Vec<u16>>>,
    _listener: Listener,
}

impl GitlabDouble {
    pub fn start() -> GitlabDouble {
        let accepted: Arc<Mutex<Vec<Status>>> = Arc::default();
        let refused: Arc<Mutex<Vec<u16>>> = Arc::default();
        let (a, r) = (accepted.clone(), refused.clone());
        let listener = Listener::start(move |conn| serve(conn, &a, &r));
        GitlabDouble {
            port: listener.port,
            accepted,
            refused,
            _listener: listener,
        }
    }

    pub fn api_url(&self) -> String {
        format!("http://127.0.0.1:{}/api/v4", self.port)
    }

    pub fn statuses(&self) -> Vec<Status> {
        self.accepted.lock().unwrap().clone()
    }
}

fn answer(conn: &mut TcpStream, status: u16, body: &str) -> std::io::Result<()> {
    respond(conn, status, "application/json", body.as_bytes())
}

fn serve(
    mut conn: TcpStream,
    accepted: &Mutex<Vec<Status>>,
    refused: &Mutex<Vec<u16>>,
) -> std::io::Result<()> {
    let Some((head, body)) = read_request(&mut conn)? else {
        return Ok(());
    };
    let mut refuse = |code: u16, message: &str| {
        refused.lock().unwrap().push(code);
        answer(&mut conn, code, &format!("{{\"message\":\"{message}\"}}"))
    };
    let line = head.lines().next().unwrap_or("");
    let path = line.split(' ').nth(1).unwrap_or("");
    let Some(rest) = path.strip_prefix("/api/v4/projects/") else {
        return refuse(404, "404 Not Found");
    };
    let Some((project, sha)) = rest.split_once("/statuses/") else {
        return refuse(404, "404 Not Found");
    };
    let token = head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case("private-token")
            .then(|| v.trim().to_owned())
    });
    if !line.starts_with("POST ") {
        return refuse(405, "405 Method Not Allowed");
    }
    if token.as_deref() != Some(TOKEN) {
        return refuse(401, "401 Unauthorized");
    }
    let form: BTreeMap<String, String> = String::from_utf8_lossy(&body)
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (form_decode(k), form_decode(v)))
        .collect();
    let state = form.get("state").cloned().unwrap_or_default();
    if !["pending", "running", "success", "failed", "canceled"].contains(&state.as_str()) {
        return refuse(400, "state does not have a valid value");
    }
    let status = Status {
        project: project.to_owned(),
        sha: sha.to_owned(),
        state: state.clone(),
        name: form
            .get("name")
            .cloned()
            .unwrap_or_else(|| "default".into()),
        description: form.get("description").cloned().unwrap_or_default(),
    };
    let mut all = accepted.lock().unwrap();
    let last = all
        .iter()
        .rev()
        .find(|s| s.sha == status.sha && s.name == status.name);
    if last.is_some_and(|l| l.state == state) {
        drop(all);
        return refuse(
            400,
            &format!("Cannot transition status via :run from :{state}"),
        );
    }
    all.push(status);
    drop(all);
    answer(
        &mut conn,
        201,
        &format!("{{\"id\":1,\"sha\":\"{sha}\",\"status\":\"{state}\"}}"),
    )
}
