//! Commit signature verification, when `source.verify` asks for it. GitLab users sign with SSH
//! keys or OpenPGP keys; the agent checks signatures with the same tools git itself uses
//! (`ssh-keygen -Y verify` against an allowed_signers file, `gpgv` against a keyring), so the
//! trust decision is the one an operator can reproduce at a shell.
//!
//! Every commit between the applied revision and the new one must be signed by a trusted key:
//! a history that slips an unsigned commit in below a signed tip is rejected too.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use git2::{Oid, Repository};

use crate::config::Verify;

/// Commits checked in one pass at most; a longer unverified history is refused, not skipped.
const MAX_COMMITS: usize = 1000;

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("commit {sha} is not signed")]
    Unsigned { sha: String },
    #[error("commit {sha} carries an {found} signature, but source.verify asks for {wanted}")]
    WrongKind {
        sha: String,
        found: &'static str,
        wanted: &'static str,
    },
    #[error("commit {sha} is not signed by a trusted key: {detail}")]
    Untrusted { sha: String, detail: String },
    #[error("more than {MAX_COMMITS} new commits to verify since the applied revision")]
    TooMany,
    #[error("cannot verify signatures: {0}")]
    Tool(String),
}

impl VerifyError {
    pub fn kind(&self) -> &'static str {
        match self {
            VerifyError::Unsigned { .. } => "unsigned",
            VerifyError::WrongKind { .. } | VerifyError::Untrusted { .. } => "untrusted",
            VerifyError::TooMany | VerifyError::Tool(_) => "verify_failed",
        }
    }
}

/// Checks every commit reachable from `sha` and not from `applied` (only `sha` on a first
/// sync, when nothing was trusted before).
pub fn check(
    repo: &Repository,
    sha: &str,
    applied: Option<&str>,
    policy: &Verify,
) -> Result<(), VerifyError> {
    let git = |e: git2::Error| VerifyError::Tool(e.message().to_owned());
    let tip = Oid::from_str(sha).map_err(git)?;
    let mut todo = vec![tip];
    if let Some(applied) = applied
        .and_then(|a| Oid::from_str(a).ok())
        .filter(|a| repo.find_commit(*a).is_ok())
    {
        let mut walk = repo.revwalk().map_err(git)?;
        walk.push(tip).map_err(git)?;
        walk.hide(applied).map_err(git)?;
        todo = Vec::new();
        for oid in walk {
            todo.push(oid.map_err(git)?);
            if todo.len() > MAX_COMMITS {
                return Err(VerifyError::TooMany);
            }
        }
    }
    for oid in todo {
        check_one(repo, oid, policy)?;
    }
    Ok(())
}

fn check_one(repo: &Repository, oid: Oid, policy: &Verify) -> Result<(), VerifyError> {
    let sha = oid.to_string();
    let (signature, payload) = match repo.extract_signature(&oid, None) {
        Ok((s, p)) => (s.to_vec(), p.to_vec()),
        Err(e) if e.code() == git2::ErrorCode::NotFound => {
            return Err(VerifyError::Unsigned { sha });
        }
        Err(e) => return Err(VerifyError::Tool(e.message().to_owned())),
    };
    let found = if signature.starts_with(b"-----BEGIN SSH SIGNATURE-----") {
        "SSH"
    } else if signature.starts_with(b"-----BEGIN PGP SIGNATURE-----") {
        "OpenPGP"
    } else {
        "unknown"
    };
    let tmp = tempfile::tempdir().map_err(|e| VerifyError::Tool(e.to_string()))?;
    let sig_path = tmp.path().join("commit.sig");
    std::fs::write(&sig_path, &signature).map_err(|e| VerifyError::Tool(e.to_string()))?;
    match policy {
        Verify::None => Ok(()),
        Verify::Ssh { allowed_signers } => {
            if found != "SSH" {
                return Err(VerifyError::WrongKind {
                    sha,
                    found,
                    wanted: "SSH",
                });
            }
            ssh(&sha, &sig_path, &payload, allowed_signers)
        }
        Verify::OpenPgp { keyring } => {
            if found != "OpenPGP" {
                return Err(VerifyError::WrongKind {
                    sha,
                    found,
                    wanted: "OpenPGP",
                });
            }
            let payload_path = tmp.path().join("commit.payload");
            std::fs::write(&payload_path, &payload)
                .map_err(|e| VerifyError::Tool(e.to_string()))?;
            openpgp(&sha, &sig_path, &payload_path, keyring)
        }
    }
}

fn run(cmd: &mut Command, stdin: Option<&[u8]>) -> Result<(bool, String), VerifyError> {
    let name = cmd.get_program().to_string_lossy().into_owned();
    let mut child = cmd
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env_remove("NOTIFY_SOCKET")
        .spawn()
        .map_err(|e| VerifyError::Tool(format!("{name}: {e}")))?;
    if let (Some(data), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(data)
            .map_err(|e| VerifyError::Tool(format!("{name}: {e}")))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| VerifyError::Tool(format!("{name}: {e}")))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((out.status.success(), text.trim().to_owned()))
}

fn ssh(sha: &str, sig: &Path, payload: &[u8], allowed: &Path) -> Result<(), VerifyError> {
    let untrusted = |detail: String| VerifyError::Untrusted {
        sha: sha.to_owned(),
        detail,
    };
    let (ok, principals) = run(
        Command::new("ssh-keygen")
            .args(["-Y", "find-principals", "-s"])
            .arg(sig)
            .arg("-f")
            .arg(allowed),
        None,
    )?;
    if !ok {
        return Err(untrusted(format!(
            "no key of {} made it ({principals})",
            allowed.display()
        )));
    }
    for principal in principals.lines().map(str::trim).filter(|p| !p.is_empty()) {
        let (ok, _) = run(
            Command::new("ssh-keygen")
                .args(["-Y", "verify", "-n", "git", "-f"])
                .arg(allowed)
                .arg("-I")
                .arg(principal)
                .arg("-s")
                .arg(sig),
            Some(payload),
        )?;
        if ok {
            return Ok(());
        }
    }
    Err(untrusted("the signature does not match the commit".into()))
}

fn openpgp(sha: &str, sig: &Path, payload: &Path, keyring: &Path) -> Result<(), VerifyError> {
    let (ok, out) = run(
        Command::new("gpgv")
            .arg("--keyring")
            .arg(keyring)
            .arg(sig)
            .arg(payload)
            .env(
                "GNUPGHOME",
                sig.parent().unwrap_or(Path::new("/nonexistent")),
            ),
        None,
    )?;
    if ok {
        return Ok(());
    }
    let detail = out
        .lines()
        .last()
        .unwrap_or("gpgv refused the signature")
        .to_owned();
    Err(VerifyError::Untrusted {
        sha: sha.to_owned(),
        detail,
    })
}
