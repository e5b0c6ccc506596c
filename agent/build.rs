//! Records the git revision the binary is built from, for `version` and the build_info metric.
use std::process::Command;

fn main() {
    let revision = std::env::var("VESPA_AGENT_GIT_REVISION")
        .ok()
        .filter(|r| !r.is_empty())
        .or_else(|| {
            let out = Command::new("git")
                .args(["rev-parse", "--short=12", "HEAD"])
                .output()
                .ok()?;
            out.status
                .success()
                .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=VESPA_AGENT_GIT_REVISION={revision}");
    println!("cargo:rerun-if-env-changed=VESPA_AGENT_GIT_REVISION");
    // Rebuild when HEAD moves, so the revision label stays true.
    for f in ["../.git/HEAD", "../.git/refs/heads"] {
        if std::path::Path::new(f).exists() {
            println!("cargo:rerun-if-changed={f}");
        }
    }
}
