//! Fetching the followed commit of the service repository into a private bare mirror with
//! libgit2. A poll asks the server for its refs (one request); only when the tip is a commit the
//! mirror lacks does it download objects (a second), so a no-change poll costs one request. The
//! token goes with the first request: libgit2 alone sends credentials only after a 401, which
//! doubled every poll of a fleet (scripts/bench-fleet.sh: 2 requests a poll, 32 a second at
//! 1,000 nodes polling every minute; 1 and 16 with the token sent first).

use std::cell::Cell;
use std::path::{Path, PathBuf};

use base64::Engine;
use git2::{AutotagOption, FetchOptions, Oid, RemoteCallbacks, Repository};

use crate::config::{Follow, Secret};

pub struct FetchSpec {
    /// Never carries credentials (the configuration refuses them).
    pub url: String,
    pub follow: Follow,
    pub username: String,
    pub token: Option<Secret>,
}

impl FetchSpec {
    /// The configured repository at `url`, with the token read from `source.token-file` now.
    pub fn configured(url: &str, s: &crate::config::SourceSettings) -> Result<FetchSpec, String> {
        let token = match &s.token_file {
            Some(f) => Some(f.read().map_err(|m| format!("source.token-file: {m}"))?),
            None => None,
        };
        Ok(FetchSpec {
            url: url.to_owned(),
            follow: s.follow.clone(),
            username: s.username.clone(),
            token,
        })
    }
}

/// Makes libgit2 trust `source.ca-file`, when one is configured.
pub fn trust_ca_file(ca: Option<&Path>) -> Result<(), String> {
    if let Some(ca) = ca {
        // SAFETY: libgit2's global options are set between fetches only: one pass (or one
        // `plan`) runs at a time, and nothing else in the agent uses libgit2.
        unsafe { git2::opts::set_ssl_cert_file(ca) }
            .map_err(|e| format!("source.ca-file: {}", e.message()))?;
    }
    Ok(())
}

#[derive(Debug, PartialEq, Eq)]
pub struct Fetched {
    pub sha: String,
    /// Objects were downloaded (false: the mirror already had the commit).
    pub downloaded: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{url}: authentication failed; check source.token-file and source.username")]
    Auth { url: String },
    #[error("{url}: {what} does not exist (deleted, renamed, or never pushed)")]
    RefMissing { url: String, what: String },
    #[error("{url}: pinned commit {sha} is not on branch {branch}")]
    NotOnBranch {
        url: String,
        sha: String,
        branch: String,
    },
    #[error("{url}: cannot fetch: {reason}")]
    Remote { url: String, reason: String },
    #[error("local mirror {}: {reason}", path.display())]
    Mirror { path: PathBuf, reason: String },
}

impl FetchError {
    /// A small fixed set, for metric labels.
    pub fn kind(&self) -> &'static str {
        match self {
            FetchError::Auth { .. } => "auth",
            FetchError::RefMissing { .. } | FetchError::NotOnBranch { .. } => "ref_missing",
            FetchError::Remote { .. } => "unreachable",
            FetchError::Mirror { .. } => "local",
        }
    }
}

/// Keeps libgit2 away from the system's, the user's and XDG git configuration: what the agent
/// fetches must not depend on root's ~/.gitconfig, and under the packaged unit (ProtectHome=)
/// merely looking for that file fails with "failed to stat '/root/.gitconfig'".
fn isolate_git_config() -> Result<(), git2::Error> {
    static DONE: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    let done = DONE.get_or_init(|| {
        for level in [
            git2::ConfigLevel::System,
            git2::ConfigLevel::XDG,
            git2::ConfigLevel::Global,
            git2::ConfigLevel::ProgramData,
        ] {
            // SAFETY: runs once, before the first repository is opened; nothing else in the
            // agent uses libgit2's global options concurrently.
            unsafe { git2::opts::set_search_path(level, "") }
                .map_err(|e| e.message().to_owned())?;
        }
        Ok(())
    });
    done.clone().map_err(|m| git2::Error::from_str(&m))
}

/// Opens the agent's bare mirror, creating it on first use.
pub fn open_mirror(path: &Path) -> Result<Repository, FetchError> {
    let mirror = |e: git2::Error| FetchError::Mirror {
        path: path.to_owned(),
        reason: e.message().to_owned(),
    };
    isolate_git_config().map_err(mirror)?;
    match Repository::open_bare(path) {
        Ok(r) => Ok(r),
        Err(_) if !path.exists() => Repository::init_bare(path).map_err(mirror),
        Err(e) => Err(mirror(e)),
    }
}

/// What libgit2 calls after a 401. The token (if any) went with the first request already
/// (`fetch`), so being asked means it was refused: fail at once, where libgit2 alone would ask
/// again up to 15 times, and never answer with a second Authorization header.
fn callbacks(refused: &Cell<bool>) -> RemoteCallbacks<'_> {
    let mut cb = RemoteCallbacks::new();
    cb.credentials(move |_url, _user, _allowed| {
        refused.set(true);
        Err(git2::Error::from_str("authentication failed"))
    });
    cb
}

fn remote_error(spec: &FetchSpec, refused: &Cell<bool>, e: &git2::Error) -> FetchError {
    if refused.get() || e.code() == git2::ErrorCode::Auth {
        return FetchError::Auth {
            url: spec.url.clone(),
        };
    }
    FetchError::Remote {
        url: spec.url.clone(),
        reason: e.message().to_owned(),
    }
}

/// Where the mirror keeps the followed tip.
pub const FOLLOWED_REF: &str = "refs/vespa/followed";

/// Brings the followed commit into `repo` and returns its SHA.
pub fn fetch(repo: &Repository, spec: &FetchSpec) -> Result<Fetched, FetchError> {
    let wanted = spec.follow.remote_ref();
    let refused = Cell::new(false);
    let mut remote = repo
        .remote_anonymous(&spec.url)
        .map_err(|e| remote_error(spec, &refused, &e))?;

    let has = |oid: Oid| repo.find_commit(oid).is_ok();
    // One connection: the ref advertisement, then objects only if the mirror lacks what the
    // followed ref names (libgit2 asks for no pack when every wanted object is here already).
    let refspec = format!("+{wanted}:{FOLLOWED_REF}");
    let header = spec.token.as_ref().map(|t| {
        let pair = format!("{}:{}", spec.username, t.expose());
        format!(
            "Authorization: Basic {}",
            base64::engine::general_purpose::STANDARD.encode(pair)
        )
    });
    let mut fo = FetchOptions::new();
    fo.remote_callbacks(callbacks(&refused))
        .download_tags(AutotagOption::None)
        .update_fetchhead(false);
    if let Some(h) = &header {
        fo.custom_headers(&[h.as_str()]);
    }
    remote
        .download(&[refspec.as_str()], Some(&mut fo))
        .map_err(|e| remote_error(spec, &refused, &e))?;
    let tip = {
        let heads = remote
            .list()
            .map_err(|e| remote_error(spec, &refused, &e))?;
        // An annotated tag is advertised twice; the peeled entry (`^{}`) names its commit.
        let peeled = format!("{wanted}^{{}}");
        heads
            .iter()
            .find(|h| h.name() == peeled)
            .or_else(|| heads.iter().find(|h| h.name() == wanted))
            .map(|h| h.oid())
    };
    let downloaded = remote.stats().received_objects() > 0;
    remote.disconnect().ok();
    let Some(tip) = tip else {
        return Err(FetchError::RefMissing {
            url: spec.url.clone(),
            what: spec.follow.describe(),
        });
    };
    if !has(tip) {
        return Err(FetchError::Remote {
            url: spec.url.clone(),
            reason: format!("the server advertised {tip} but did not send it"),
        });
    }
    if downloaded {
        // A ref keeps the objects reachable in the mirror.
        repo.reference(FOLLOWED_REF, tip, true, "vespa-agent fetch")
            .map_err(|e| FetchError::Mirror {
                path: repo.path().to_owned(),
                reason: e.message().to_owned(),
            })?;
    }

    let sha = match &spec.follow {
        Follow::Commit { sha, branch } => {
            let pinned = Oid::from_str(sha).ok().filter(|o| has(*o));
            let on_branch = pinned
                .is_some_and(|p| p == tip || repo.graph_descendant_of(tip, p).unwrap_or(false));
            if !on_branch {
                return Err(FetchError::NotOnBranch {
                    url: spec.url.clone(),
                    sha: sha.clone(),
                    branch: branch.clone(),
                });
            }
            sha.clone()
        }
        _ => tip.to_string(),
    };
    Ok(Fetched { sha, downloaded })
}

/// True when `new` does not contain `old` in its history: the branch was rewritten.
pub fn is_force_push(repo: &Repository, old: &str, new: &str) -> bool {
    let (Ok(old), Ok(new)) = (Oid::from_str(old), Oid::from_str(new)) else {
        return false;
    };
    old != new
        && repo.find_commit(old).is_ok()
        && !repo.graph_descendant_of(new, old).unwrap_or(false)
}
