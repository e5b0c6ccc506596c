//! A real Prometheus server (Debian's package) for the tests: started on a free port with the
//! test's configuration and its own storage, killed when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

pub struct Prometheus {
    pub port: u16,
    pub dir: tempfile::TempDir,
    child: Child,
}

/// `/usr/bin/<name>` of the prometheus package, or the test's skip (a failure under CI).
pub fn tool(name: &str) -> Option<PathBuf> {
    let p = Path::new("/usr/bin").join(name);
    if p.exists() {
        Some(p)
    } else {
        super::missing(&format!("{name} (Debian package prometheus)"));
        None
    }
}

impl Prometheus {
    /// Starts Prometheus with `config` (prometheus.yml's text); None when it is not installed.
    pub fn start(config: &str) -> Option<Prometheus> {
        let bin = tool("prometheus")?;
        let dir = tempfile::tempdir().unwrap();
        let port = super::free_port();
        let yml = dir.path().join("prometheus.yml");
        std::fs::write(&yml, config).unwrap();
        let child = Command::new(bin)
            .arg(format!("--config.file={}", yml.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Some(Prometheus { port, dir, child })
    }

    /// The `data` of an answer of Prometheus's HTTP API at `path` (Null when there is none).
    fn api(&self, path: &str) -> serde_json::Value {
        let Some((200, body)) = super::get(&format!("127.0.0.1:{}{path}", self.port)) else {
            return serde_json::Value::Null;
        };
        serde_json::from_str::<serde_json::Value>(&body).unwrap_or_default()["data"].take()
    }

    /// One instant query: the result vector's entries as (labels, value).
    pub fn query(&self, expr: &str) -> Vec<(serde_json::Value, String)> {
        let q = percent_encoding::utf8_percent_encode(expr, percent_encoding::NON_ALPHANUMERIC);
        let data = self.api(&format!("/api/v1/query?query={q}"));
        let text = |v: &serde_json::Value| v.as_str().unwrap_or("").to_owned();
        let rows = data["result"].as_array().cloned().unwrap_or_default();
        rows.iter()
            .map(|e| (e["metric"].clone(), text(&e["value"][1])))
            .collect()
    }

    /// The targets page: each active target's scrape URL, health and last error.
    pub fn targets(&self) -> Vec<(String, String, String)> {
        let data = self.api("/api/v1/targets");
        let text = |v: &serde_json::Value| v.as_str().unwrap_or("").to_owned();
        let rows = data["activeTargets"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        rows.iter()
            .map(|e| {
                (
                    text(&e["scrapeUrl"]),
                    text(&e["health"]),
                    text(&e["lastError"]),
                )
            })
            .collect()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
