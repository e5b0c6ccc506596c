//! A world for the crash and soak tests: the example as one resource served from git's
//! smart-HTTP server (token auth) with its granules on Apache mod_dav (Basic auth), changed one
//! revision at a time (the RD and the granules: one added, one changed, one deleted), and what
//! DaCHS should serve at each moment.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use super::dav::DavServer;
use super::fault::FaultProxy;
use super::git::GitServer;
use super::*;

pub const ROWS_PER_FILE: usize = 3;
pub const MANIFEST: &str = "MANIFEST.sha256";
const INPUTS: &str = "/var/gavo/inputs";

/// The example's RD, its schema and directory named `name`.
pub fn example_rd(name: &str) -> String {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/service/epnlab/q.rd");
    std::fs::read_to_string(example)
        .unwrap()
        .replace("epnlab", name)
}

/// The example's header line and one row to vary.
pub fn csv(file: u32, version: u32) -> String {
    let example =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/granules/epnlab/g00000000.csv");
    let text = std::fs::read_to_string(example).unwrap();
    let mut lines = text.lines();
    let header = lines.next().unwrap();
    let row = lines.next().unwrap();
    let mut out = format!("{header}\n");
    for r in 0..ROWS_PER_FILE {
        let uid = format!("c{file:04}r{r}");
        out.push_str(&row.replacen("g00000000", &uid, 1).replacen(
            "Mars",
            &format!("v{version}"),
            1,
        ));
        out.push('\n');
    }
    out
}

/// What the WebDAV server holds: file number -> version.
pub struct Source {
    pub dir: std::path::PathBuf,
    pub files: BTreeMap<u32, u32>,
    pub next_file: u32,
    /// Whether a checksum manifest is kept beside the granules.
    pub manifest: bool,
}

impl Source {
    pub fn write(&mut self, file: u32, version: u32) {
        std::fs::write(self.dir.join(format!("c{file:04}.csv")), csv(file, version)).unwrap();
        self.files.insert(file, version);
        self.write_manifest();
    }

    /// The checksum manifest B2SAFE's replication keeps beside the data: without one a byte
    /// damaged on the wire cannot be told from the data (sizes match), with one it is refused.
    fn write_manifest(&self) {
        use sha2::Digest;
        if !self.manifest {
            return;
        }
        let mut text = String::new();
        for f in self.files.keys() {
            let name = format!("c{f:04}.csv");
            let bytes = std::fs::read(self.dir.join(&name)).unwrap();
            let hex: String = sha2::Sha256::digest(&bytes)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            text.push_str(&format!("{name}\t{}\tsha256:{hex}\n", bytes.len()));
        }
        std::fs::write(self.dir.join(MANIFEST), text).unwrap();
    }

    /// One file added, one changed, one deleted (never fewer than three left).
    pub fn churn(&mut self, seed: &mut u64, version: u32) {
        let f = self.next_file;
        self.next_file += 1;
        self.write(f, version);
        let keys: Vec<u32> = self.files.keys().copied().collect();
        let changed = keys[(next(seed) % keys.len() as u64) as usize];
        self.write(changed, version);
        if self.files.len() > 3 {
            let keys: Vec<u32> = self.files.keys().copied().filter(|k| *k != f).collect();
            let gone = keys[(next(seed) % keys.len() as u64) as usize];
            std::fs::remove_file(self.dir.join(format!("c{gone:04}.csv"))).unwrap();
            self.files.remove(&gone);
            self.write_manifest();
        }
    }

    /// granule_uid -> target_name, as DaCHS should serve them.
    pub fn expected(&self) -> BTreeMap<String, String> {
        let mut m = BTreeMap::new();
        for (f, v) in &self.files {
            for r in 0..ROWS_PER_FILE {
                m.insert(format!("c{f:04}r{r}"), format!("v{v}"));
            }
        }
        m
    }
}

/// One ADQL query through the agent's own TAP client (a VOTable parser checked elsewhere).
pub fn tap_rows(adql: &str) -> Result<Vec<Vec<String>>, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let tap = vespa_agent::dachs::tap::TapClient::new(&dachs_url(), Duration::from_secs(20));
    let answer = rt.block_on(tap.query(adql)).map_err(|e| e.to_string())?;
    Ok(answer.rows)
}

pub fn tap_query(adql: &str) -> Result<(), String> {
    tap_rows(adql).map(drop)
}

/// The table's rows over TAP: granule_uid -> target_name; a duplicate is an error.
pub fn served(name: &str) -> Result<BTreeMap<String, String>, String> {
    let rows = tap_rows(&format!(
        "SELECT granule_uid, target_name FROM {name}.epn_core"
    ))?;
    let mut m = BTreeMap::new();
    for r in rows {
        if m.insert(r[0].clone(), r[1].clone()).is_some() {
            return Err(format!("{} is served twice", r[0]));
        }
    }
    Ok(m)
}

/// Only whole files: every file's rows all present and of one version.
pub fn whole_files(rows: &BTreeMap<String, String>) -> Result<(), String> {
    let mut by_file: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (uid, version) in rows {
        by_file.entry(&uid[..5]).or_default().push(version);
    }
    for (file, versions) in by_file {
        if versions.len() != ROWS_PER_FILE || versions.iter().any(|v| *v != versions[0]) {
            return Err(format!("{file}.csv is served in part: {versions:?}"));
        }
    }
    Ok(())
}

/// Counts failed TAP queries while it runs.
pub struct Prober {
    stop: Arc<AtomicBool>,
    queries: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    errors: Arc<std::sync::Mutex<Vec<String>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Prober {
    /// Queries the host's DaCHS for table `name` every 100 ms.
    pub fn start(name: &str) -> Prober {
        let query = format!("SELECT COUNT(*) FROM {name}.epn_core");
        Prober::with(Duration::from_millis(100), move || tap_query(&query))
    }

    /// Runs `probe` every `every` until [`Prober::finish`].
    pub fn with(
        every: Duration,
        probe: impl Fn() -> Result<(), String> + Send + 'static,
    ) -> Prober {
        let stop = Arc::new(AtomicBool::new(false));
        let queries = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let errors = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (s, q, f, e) = (
            stop.clone(),
            queries.clone(),
            failed.clone(),
            errors.clone(),
        );
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                q.fetch_add(1, Ordering::Relaxed);
                if let Err(err) = probe() {
                    f.fetch_add(1, Ordering::Relaxed);
                    let mut e = e.lock().unwrap();
                    if e.len() < 5 {
                        e.push(err);
                    }
                }
                std::thread::sleep(every);
            }
        });
        Prober {
            stop,
            queries,
            failed,
            errors,
            thread: Some(thread),
        }
    }

    pub fn finish(mut self) -> (u64, u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap();
        (
            self.queries.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
            self.errors.lock().unwrap().clone(),
        )
    }
}

/// The git and WebDAV servers, the agent's home, and the source's state.
pub struct World {
    pub name: &'static str,
    pub git: GitServer,
    pub dav: DavServer,
    pub home: Home,
    pub source: Source,
    pub version: u32,
    service: String,
    rd: String,
}

impl World {
    /// Revision 0 with six granule files; `None` (after failing under CI) when a server is
    /// missing.
    pub fn start(name: &'static str) -> Option<World> {
        if !require_dachs() {
            return None;
        }
        let git = GitServer::start()?;
        let dav = DavServer::start()?;
        remove_resource(name);
        let rd = example_rd(name);
        let service = format!(
            "[[resource]]\ndir = \"{name}\"\n\n[[resource.collection]]\nname = \"granules\"\n\
             source = \"{}\"\ncredential = \"b2safe\"\ninclude = [\"*.csv\"]\n\
             manifest = \"{MANIFEST}\"\n",
            dav.url(name)
        );
        let mut source = Source {
            dir: dav.data(name),
            files: BTreeMap::new(),
            next_file: 0,
            manifest: true,
        };
        for f in 0..6 {
            source.write(f, 0);
        }
        source.next_file = 6;
        let home = Home::new(&dachs_url(), "");
        secret_file(&home, "secrets/token", super::git::TOKEN);
        secret_file(
            &home,
            "credentials/b2safe",
            &format!("{}:{}\n", super::dav::USER, super::dav::PASSWORD),
        );
        write_source(&home, &git.url());
        let w = World {
            name,
            git,
            dav,
            home,
            source,
            version: 0,
            service,
            rd,
        };
        w.commit();
        Some(w)
    }

    fn commit(&self) {
        let v = self.version;
        self.git.commit(
            &[
                ("vespa-service.toml", Some(&self.service)),
                (
                    &format!("{}/q.rd", self.name),
                    Some(&format!("{}\n<!-- revision {v} -->\n", self.rd)),
                ),
            ],
            &format!("revision {v}"),
            &[],
        );
        self.git.push();
    }

    /// From a new commit on, the collection has no checksum manifest: nothing vouches for the
    /// bytes that arrive.
    pub fn drop_manifest(&mut self) {
        self.service = self
            .service
            .replace(&format!("manifest = \"{MANIFEST}\"\n"), "");
        self.source.manifest = false;
        std::fs::remove_file(self.source.dir.join(MANIFEST)).unwrap();
        self.version += 1;
        self.commit();
    }

    /// The next revision: a new commit changing the RD, and granule churn.
    pub fn next_revision(&mut self, seed: &mut u64) {
        self.next_granules(seed);
        self.commit();
    }

    /// Granule churn alone, under the same commit: what most passes of a node see.
    pub fn next_granules(&mut self, seed: &mut u64) {
        self.version += 1;
        let v = self.version;
        self.source.churn(seed, v);
    }

    pub fn served(&self) -> Result<BTreeMap<String, String>, String> {
        served(self.name)
    }

    /// Waits until DaCHS serves exactly the source; false after `within`.
    pub fn converged(&self, within: Duration) -> bool {
        let t = std::time::Instant::now();
        loop {
            if self.served().ok() == Some(self.source.expected()) {
                return true;
            }
            if t.elapsed() > within {
                return false;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// From the next commit on, the agent reaches git and WebDAV through these proxies.
    pub fn route_through(&mut self, git_proxy: &FaultProxy, dav_proxy: &FaultProxy) {
        self.service = self.service.replace(
            &self.dav.url(self.name),
            &dav_proxy.url(&self.dav.url(self.name), self.dav.port),
        );
        write_source(&self.home, &git_proxy.url(&self.git.url(), self.git.port));
    }
}

fn write_source(home: &Home, url: &str) {
    home.write(
        "etc/agent.d/20-world.toml",
        &format!(
            "[source]\nurl = \"{url}\"\ntoken-file = \"{}\"\n\n[granules]\ncredentials-dir = \"{}\"\n",
            home.path("secrets/token").display(),
            home.path("credentials").display()
        ),
    );
}

impl Drop for World {
    fn drop(&mut self) {
        remove_resource(self.name);
    }
}

/// Temporary files of the agent anywhere it writes for resource `name`.
pub fn leftovers(home: &Home, name: &str) -> Vec<String> {
    fn walk(dir: &Path, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let file = e.file_name().to_string_lossy().into_owned();
            if file.starts_with(".vespa-tmp") || file.starts_with(".tmp-") {
                out.push(e.path().display().to_string());
            } else if e.file_type().is_ok_and(|t| t.is_dir()) {
                walk(&e.path(), out);
            }
        }
    }
    let mut out = Vec::new();
    walk(&home.path("state"), &mut out);
    walk(&Path::new(INPUTS).join(name), &mut out);
    let stage = Path::new(INPUTS).join(".vespa-stage").join(name);
    if stage.exists() {
        out.push(stage.display().to_string());
    }
    out
}
