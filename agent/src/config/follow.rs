//! What the agent follows in the service repository: a branch, a tag or a pinned commit.

/// What to follow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Follow {
    Branch(String),
    Tag(String),
    /// A pinned commit, which must be on the branch.
    Commit {
        sha: String,
        branch: String,
    },
}

impl Follow {
    pub(crate) fn remote_ref(&self) -> String {
        match self {
            Follow::Branch(b) | Follow::Commit { branch: b, .. } => format!("refs/heads/{b}"),
            Follow::Tag(t) => format!("refs/tags/{t}"),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Follow::Branch(b) => format!("branch {b}"),
            Follow::Tag(t) => format!("tag {t}"),
            Follow::Commit { sha, branch } => format!("commit {sha} on branch {branch}"),
        }
    }
}
