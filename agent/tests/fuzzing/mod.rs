//! What each fuzz target asks of one input, shared by the two drivers: tests/fuzz.rs (proptest,
//! mutating the seeds, in every `cargo test`) and fuzz/ (cargo-fuzz, coverage-guided libFuzzer,
//! in the test command for a bounded time and in `scripts/fuzz.sh` for long sessions). Every
//! input must give a value or a typed error with a message: never a panic, a hang or an empty
//! error; and what is accepted must be safe to act on.

use std::path::Path;
use std::sync::{Mutex, OnceLock};

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// An error must say something.
fn said<E: std::fmt::Display>(target: &str, r: Result<impl Sized, E>) {
    if let Err(e) = r {
        assert!(!e.to_string().trim().is_empty(), "{target}: an empty error");
    }
}

/// `bytes` as /etc/vespa-agent/agent.toml in a layout under `dir`, loaded as the agent does.
pub fn load_config(dir: &Path, bytes: &[u8]) -> Result<vespa_agent::config::Settings, String> {
    let etc = dir.join("etc");
    std::fs::create_dir_all(etc.join("agent.d")).unwrap();
    std::fs::write(etc.join("agent.toml"), bytes).unwrap();
    let layout = vespa_agent::config::Layout {
        vendor_dir: dir.join("usr"),
        config_dir: etc,
        runtime_dir: dir.join("run"),
    };
    vespa_agent::config::load(&layout).map_err(|e| e.to_string())
}

pub const HOOK_SECRET: &[u8] = b"fuzz-hook-secret";

/// The webhook gate as the daemon builds it, with `HOOK_SECRET`; a runtime is entered for it.
pub struct Hook {
    pub gate: std::sync::Arc<vespa_agent::hooks::Gate>,
    _dir: tempfile::TempDir,
    _rx: tokio::sync::mpsc::Receiver<vespa_agent::reconcile::Trigger>,
    rt: tokio::runtime::Runtime,
}

impl Hook {
    pub fn new() -> Hook {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("hook");
        std::fs::write(&file, HOOK_SECRET).unwrap();
        std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        let secret = vespa_agent::config::SecretFile::resolve(file.to_str().unwrap(), dir.path())
            .unwrap()
            .read()
            .unwrap();
        let (triggers, rx) = vespa_agent::reconcile::Triggers::channel();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let gate = {
            let _guard = rt.enter();
            std::sync::Arc::new(vespa_agent::hooks::Gate::new(
                Some(secret),
                vespa_agent::config::Follow::Branch("main".into()),
                triggers,
                std::time::Duration::from_secs(3600),
            ))
        };
        Hook {
            gate,
            _dir: dir,
            _rx: rx,
            rt,
        }
    }

    pub fn handle(&self, secret: &[u8], body: &[u8]) -> vespa_agent::hooks::Verdict {
        let _guard = self.rt.enter();
        self.gate.handle(Some(secret), body)
    }
}

/// Checks one input against `target`'s parser; panics on a finding.
pub fn check(target: &str, b: &[u8]) {
    match target {
        "config" => {
            static DIR: OnceLock<Mutex<tempfile::TempDir>> = OnceLock::new();
            let d = DIR
                .get_or_init(|| Mutex::new(tempfile::tempdir().unwrap()))
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            said("config", load_config(d.path(), b));
        }
        "service" => {
            let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/service");
            match vespa_agent::service::parse(&text(b), &example) {
                // What is accepted stays inside the inputs directory.
                Ok(s) => {
                    for r in &s.resources {
                        assert!(
                            !r.dir.is_empty()
                                && !r.dir.contains('/')
                                && r.dir != ".."
                                && r.dir != ".",
                            "{:?}",
                            r.dir
                        );
                    }
                }
                Err(e) => assert!(!e.to_string().trim().is_empty()),
            }
        }
        "manifest" => said(
            "manifest",
            vespa_agent::granules::manifest::parse("MANIFEST.tsv", &text(b)),
        ),
        "propfind" => said(
            "propfind",
            vespa_agent::granules::webdav::parse_multistatus(&text(b)),
        ),
        "irods" => said("irods", vespa_agent::granules::irods::parse_rows(&text(b))),
        // Relative file names resolve under a folder that does not exist: nothing is read but
        // the YAML itself.
        "webconfig" => said(
            "webconfig",
            vespa_agent::web::file::parse(Path::new("/nonexistent/web.yml"), &text(b)),
        ),
        "votable" => said("votable", vespa_agent::dachs::votable::parse(&text(b))),
        "dachs" => {
            let out = text(b);
            let _ = vespa_agent::dachs::cli::skipped_sources(&out);
            let run = vespa_agent::dachs::cli::Run {
                code: Some(1),
                stdout: out.clone(),
                stderr: out,
            };
            assert!(!vespa_agent::dachs::cli::error_message(&run).is_empty());
        }
        "webhook" => {
            use vespa_agent::hooks::Verdict;
            static HOOK: OnceLock<Mutex<Hook>> = OnceLock::new();
            let hook = HOOK
                .get_or_init(|| Mutex::new(Hook::new()))
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            match hook.handle(HOOK_SECRET, b) {
                Verdict::BadRequest(m) | Verdict::Ignored(m) => assert!(!m.trim().is_empty()),
                Verdict::Unauthorized | Verdict::Disabled => panic!("the right secret was refused"),
                _ => {}
            }
        }
        other => panic!("no fuzz target {other}"),
    }
}
