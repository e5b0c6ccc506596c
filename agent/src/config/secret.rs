//! Secrets are never written in a configuration file: a `*-file` key names the file that holds
//! one, either by absolute path or by a credential name: under systemd a credential that
//! `LoadCredential=` placed in `$CREDENTIALS_DIRECTORY`, otherwise a file in the credentials
//! directory (`granules.credentials-dir`).

use std::fmt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The environment variable systemd sets for a unit with `LoadCredential=`.
pub const CREDENTIALS_ENV: &str = "CREDENTIALS_DIRECTORY";

/// What systemd puts before each file's name when a unit loads a directory of credentials
/// under the id `vespa`.
pub const UNIT_CREDENTIAL_PREFIX: &str = "vespa_";

/// Where a secret lives. Holding one of these reveals nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretFile {
    pub path: PathBuf,
}

/// A secret's value. It has no `Display`, and its `Debug` is redacted, so it cannot end up in
/// a log line or an error message by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl SecretFile {
    /// Resolves a `*-file` value: an absolute path, or a credential name (no slash) looked up
    /// in `credentials_dir`, as NAME or as `vespa_NAME`: the packaged unit loads the whole
    /// credentials directory with `LoadCredential=vespa:/etc/vespa-agent/credentials`, which
    /// systemd names `vespa_<file>`.
    pub fn resolve(value: &str, credentials_dir: &Path) -> Result<SecretFile, String> {
        let path = Path::new(value);
        if path.is_absolute() {
            return Ok(SecretFile { path: path.into() });
        }
        if value.is_empty() || value.contains('/') || value == "." || value == ".." {
            return Err(format!(
                "`{value}` is neither an absolute path nor a credential name"
            ));
        }
        let plain = credentials_dir.join(value);
        let loaded = credentials_dir.join(format!("{UNIT_CREDENTIAL_PREFIX}{value}"));
        let path = if !plain.exists() && loaded.exists() {
            loaded
        } else {
            plain
        };
        Ok(SecretFile { path })
    }

    /// Checks that the file exists, is a regular file, is not empty, and that neither its
    /// group nor others may read it. Returns its size.
    pub fn check(&self) -> Result<u64, String> {
        let p = self.path.display();
        let meta = std::fs::metadata(&self.path).map_err(|e| format!("secret file {p}: {e}"))?;
        if !meta.is_file() {
            return Err(format!("secret file {p} is not a regular file"));
        }
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(format!(
                "secret file {p} is readable by group or others (mode {mode:04o}); \
                 run `chmod 0600 {p}`"
            ));
        }
        if meta.len() == 0 {
            return Err(format!("secret file {p} is empty"));
        }
        Ok(meta.len())
    }

    /// Reads the secret, without its trailing newline (editors and `echo` add one).
    pub fn read(&self) -> Result<Secret, String> {
        self.check()?;
        let text = std::fs::read_to_string(&self.path)
            .map_err(|e| format!("secret file {}: {e}", self.path.display()))?;
        Ok(Secret(text.trim_end_matches(['\n', '\r']).to_owned()))
    }
}

/// For tests of code that takes a [`Secret`].
#[cfg(test)]
pub mod tests_support {
    pub fn secret(value: &str) -> super::Secret {
        super::Secret(value.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, body: &str, mode: u32) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, body).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    #[test]
    fn absolute_path_and_credential_name_resolve() {
        let c = Path::new("/run/creds/x");
        let abs = SecretFile::resolve("/etc/vespa-agent/token", c).unwrap();
        assert_eq!(abs.path, Path::new("/etc/vespa-agent/token"));
        let cred = SecretFile::resolve("gitlab-token", c).unwrap();
        assert_eq!(cred.path, Path::new("/run/creds/x/gitlab-token"));
        for bad in ["", "a/b", "..", "."] {
            assert!(SecretFile::resolve(bad, c).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_credential_the_unit_loaded_from_the_directory_is_found_by_its_file_name() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("vespa_gitlab-token"), "x").unwrap();
        let cred = SecretFile::resolve("gitlab-token", t.path()).unwrap();
        assert_eq!(cred.path, t.path().join("vespa_gitlab-token"));
        // A credential of exactly that name wins.
        std::fs::write(t.path().join("gitlab-token"), "y").unwrap();
        let cred = SecretFile::resolve("gitlab-token", t.path()).unwrap();
        assert_eq!(cred.path, t.path().join("gitlab-token"));
    }

    #[test]
    fn group_or_world_readable_files_are_refused_with_the_fix() {
        let t = tempfile::tempdir().unwrap();
        for mode in [0o640, 0o604, 0o644, 0o660] {
            let p = write(t.path(), "s", "glpat-secret\n", mode);
            let e = SecretFile { path: p }.check().unwrap_err();
            assert!(e.contains("chmod 0600"), "{e}");
            assert!(!e.contains("glpat-secret"), "{e}");
        }
    }

    #[test]
    fn private_file_is_read_without_trailing_newline_and_debug_is_redacted() {
        let t = tempfile::tempdir().unwrap();
        for mode in [0o600, 0o400] {
            let p = write(t.path(), "s", "glpat-secret\n", mode);
            let s = SecretFile { path: p }.read().unwrap();
            assert_eq!(s.expose(), "glpat-secret");
            assert!(!format!("{s:?}").contains("glpat"));
        }
    }

    #[test]
    fn missing_empty_or_directory_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let empty = write(t.path(), "e", "", 0o600);
        assert!(
            SecretFile { path: empty }
                .check()
                .unwrap_err()
                .contains("empty")
        );
        let missing = SecretFile {
            path: t.path().join("nope"),
        };
        assert!(missing.check().is_err());
        let dir = SecretFile {
            path: t.path().to_owned(),
        };
        std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        assert!(dir.check().unwrap_err().contains("regular file"));
    }
}
