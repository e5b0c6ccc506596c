//! Which configuration files exist, and in which order they apply (later files win).

use std::path::{Path, PathBuf};

use super::error::ConfigError;

/// Package defaults, shipped by the .deb.
pub const VENDOR_DIR: &str = "/usr/lib/vespa-agent/agent.d";
/// The operator's (and cloud-init's) configuration.
pub const CONFIG_DIR: &str = "/etc/vespa-agent";
/// Runtime overrides that vanish at reboot.
pub const RUNTIME_DIR: &str = "/run/vespa-agent/agent.d";

/// The three places configuration is read from. Tests and the demo move all of them into a
/// temporary directory; on a node they keep their defaults.
#[derive(Clone, Debug)]
pub struct Layout {
    pub vendor_dir: PathBuf,
    pub config_dir: PathBuf,
    pub runtime_dir: PathBuf,
}

impl Default for Layout {
    fn default() -> Self {
        Layout {
            vendor_dir: VENDOR_DIR.into(),
            config_dir: CONFIG_DIR.into(),
            runtime_dir: RUNTIME_DIR.into(),
        }
    }
}

impl Layout {
    /// The files to read, lowest priority first: `<vendor>/*.toml`, `<config>/agent.toml`,
    /// `<config>/agent.d/*.toml`, `<runtime>/*.toml`; lexical order within a folder. Folders
    /// that do not exist are skipped (a node without drop-ins is normal).
    pub fn files(&self) -> Result<Vec<PathBuf>, ConfigError> {
        let mut files = toml_files_in(&self.vendor_dir)?;
        let main = self.config_dir.join("agent.toml");
        if main.exists() {
            files.push(main);
        }
        files.extend(toml_files_in(&self.config_dir.join("agent.d"))?);
        files.extend(toml_files_in(&self.runtime_dir)?);
        Ok(files)
    }
}

/// `*.toml` files of a folder in lexical order. Hidden files are skipped, and so is anything
/// else (`.dpkg-old`, `.toml~`), so that package upgrades and editors leave no stray layer.
fn toml_files_in(dir: &Path) -> Result<Vec<PathBuf>, ConfigError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(ConfigError::Read {
                path: dir.to_owned(),
                source,
            });
        }
    };
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| ConfigError::Read {
            path: dir.to_owned(),
            source,
        })?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') || !name.ends_with(".toml") {
            continue;
        }
        files.push(entry.path());
    }
    files.sort();
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_is_vendor_main_dropins_runtime_and_lexical_within() {
        let t = tempfile::tempdir().unwrap();
        let layout = Layout {
            vendor_dir: t.path().join("vendor"),
            config_dir: t.path().join("etc"),
            runtime_dir: t.path().join("run"),
        };
        for f in [
            "vendor/20-b.toml",
            "vendor/10-a.toml",
            "etc/agent.toml",
            "etc/agent.d/90-z.toml",
            "etc/agent.d/05-y.toml",
            "etc/agent.d/05-y.toml~",
            "etc/agent.d/.hidden.toml",
            "etc/agent.d/x.toml.dpkg-old",
            "run/00-r.toml",
        ] {
            let p = t.path().join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, "").unwrap();
        }
        let got: Vec<_> = layout
            .files()
            .unwrap()
            .into_iter()
            .map(|p| p.strip_prefix(t.path()).unwrap().display().to_string())
            .collect();
        assert_eq!(
            got,
            [
                "vendor/10-a.toml",
                "vendor/20-b.toml",
                "etc/agent.toml",
                "etc/agent.d/05-y.toml",
                "etc/agent.d/90-z.toml",
                "run/00-r.toml"
            ]
        );
    }

    #[test]
    fn missing_folders_are_no_error() {
        let layout = Layout {
            vendor_dir: "/nonexistent/a".into(),
            config_dir: "/nonexistent/b".into(),
            runtime_dir: "/nonexistent/c".into(),
        };
        assert!(layout.files().unwrap().is_empty());
    }
}
