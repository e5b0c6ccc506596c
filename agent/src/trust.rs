//! Where the agent's outbound TLS (libgit2's and the HTTP clients') finds the trusted CAs.
//!
//! Why: OpenSSL's defaults parse the whole CA bundle (/etc/ssl/certs/ca-certificates.crt, about
//! 150 certificates) into memory, and the agent holds two TLS configurations (libgit2 keeps its
//! own): 95,000 allocations, about 2 MB of an idle daemon's 13 MB (scripts/bench-footprint.sh).
//! The hashed directory beside the bundle (/etc/ssl/certs, which update-ca-certificates keeps
//! from the same sources) is read lazily instead: only the CA that signed a server's
//! certificate is loaded, when a connection needs it.
//!
//! An operator's own `SSL_CERT_FILE` is always honoured, and a system without the hashed
//! directory keeps the bundle. Children (`dachs`, `git`) see the environment the agent was
//! started with.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

const FILE: &str = "SSL_CERT_FILE";
const DIR: &str = "SSL_CERT_DIR";

/// What OpenSSL should read the trusted CAs from, given the environment the agent started with
/// and OpenSSL's own directory (`OPENSSLDIR`).
#[derive(Debug, PartialEq, Eq)]
pub enum Roots {
    /// The bundle, as OpenSSL does by default: the operator named a file, or no hashed directory
    /// holds a CA.
    Bundle,
    /// Only the hashed directory: the bundle is not read.
    HashedDir(PathBuf),
}

/// Chooses where the CAs come from: see [`Roots`].
pub fn choose(
    cert_file: Option<&OsString>,
    cert_dir: Option<&OsString>,
    openssl_dir: &Path,
) -> Roots {
    if cert_file.is_some() {
        return Roots::Bundle;
    }
    // SSL_CERT_DIR is a list, like PATH; OpenSSL's own is `<OPENSSLDIR>/certs`.
    let dirs: Vec<PathBuf> = match cert_dir {
        Some(list) => std::env::split_paths(list).collect(),
        None => vec![openssl_dir.join("certs")],
    };
    match dirs.into_iter().find(|d| holds_hashed_ca(d)) {
        Some(d) => Roots::HashedDir(d),
        None => Roots::Bundle,
    }
}

/// Whether `dir` has at least one `<8 hex digits>.<n>` entry, the names `openssl rehash`
/// (and update-ca-certificates) give the CAs there.
fn holds_hashed_ca(dir: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries.flatten().any(|e| {
        let name = e.file_name();
        let Some((hash, n)) = name.to_str().and_then(|s| s.split_once('.')) else {
            return false;
        };
        hash.len() == 8
            && hash.bytes().all(|b| b.is_ascii_hexdigit())
            && !n.is_empty()
            && n.bytes().all(|b| b.is_ascii_digit())
    })
}

/// `OPENSSLDIR` of the OpenSSL the agent runs with (`/usr/lib/ssl` on Debian).
fn openssl_dir() -> PathBuf {
    // The form is `OPENSSLDIR: "/usr/lib/ssl"`.
    let s = openssl::version::dir();
    PathBuf::from(s.split('"').nth(1).unwrap_or("/usr/lib/ssl"))
}

/// When [`choose`] says the hashed directory: builds both TLS configurations (libgit2's, the
/// HTTP clients') reading the CAs from it alone, then puts the environment back as it was.
/// Call it before any thread is started: it changes the process's environment for that moment.
pub fn init() {
    let file = std::env::var_os(FILE);
    let dir = std::env::var_os(DIR);
    let roots = choose(file.as_ref(), dir.as_ref(), &openssl_dir());
    tracing::debug!(?roots, "trusted CAs");
    if roots == Roots::Bundle {
        // OpenSSL's own way, when a connection first needs it.
        return;
    }
    // SAFETY: no other thread exists yet (main calls this before the runtime); the variable is
    // read by OpenSSL below and restored before this returns. (At debug level native-tls then
    // says that /dev/null holds no certificate: that is the point.)
    unsafe { std::env::set_var(FILE, "/dev/null") };
    // Both read the variables now and keep what they loaded: libgit2 at its initialisation
    // (git2 also sets SSL_CERT_DIR there), the HTTP clients when their configuration is built.
    // Strict hash verification is libgit2's default; the call is here for its initialisation.
    git2::opts::strict_hash_verification(true);
    if let Err(e) = crate::outbound::prepare() {
        // Every client built later reports it with its own context.
        tracing::debug!(error = %e, "the outbound TLS configuration");
    }
    for (name, value) in [(FILE, file), (DIR, dir)] {
        // SAFETY: as above, still before any thread.
        unsafe {
            match value {
                Some(v) => std::env::set_var(name, v),
                None => std::env::remove_var(name),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hashed_dir() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("9d04f354.0"), "").unwrap();
        d
    }

    #[test]
    fn the_operators_bundle_is_honoured() {
        let d = hashed_dir();
        let f = OsString::from("/etc/my-ca.pem");
        assert_eq!(choose(Some(&f), None, d.path()), Roots::Bundle);
        let list = OsString::from(d.path());
        assert_eq!(choose(Some(&f), Some(&list), d.path()), Roots::Bundle);
    }

    #[test]
    fn a_hashed_directory_is_read_lazily() {
        let ssl = tempfile::tempdir().unwrap();
        std::fs::create_dir(ssl.path().join("certs")).unwrap();
        std::fs::write(ssl.path().join("certs/5ad8a5d6.0"), "").unwrap();
        assert_eq!(
            choose(None, None, ssl.path()),
            Roots::HashedDir(ssl.path().join("certs"))
        );
        // SSL_CERT_DIR wins over OpenSSL's own, and is a list.
        let d = hashed_dir();
        let list = std::env::join_paths(["/nonexistent", d.path().to_str().unwrap()]).unwrap();
        assert_eq!(
            choose(None, Some(&list), ssl.path()),
            Roots::HashedDir(d.path().to_owned())
        );
    }

    #[test]
    fn without_a_hashed_ca_the_bundle_stays() {
        let ssl = tempfile::tempdir().unwrap();
        assert_eq!(choose(None, None, ssl.path()), Roots::Bundle);
        std::fs::create_dir(ssl.path().join("certs")).unwrap();
        for name in [
            "ca-certificates.crt",
            "README",
            "9d04f354",
            "9d04f35.0",
            "9d04f354.x",
        ] {
            std::fs::write(ssl.path().join("certs").join(name), "").unwrap();
        }
        assert_eq!(choose(None, None, ssl.path()), Roots::Bundle);
    }

    #[test]
    fn openssl_names_its_directory() {
        assert!(openssl_dir().is_absolute());
    }
}
