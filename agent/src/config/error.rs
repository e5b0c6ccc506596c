//! Errors of the configuration boundary. Every one names the file, and where it can the line,
//! column and key, so that an operator can go straight to the mistake.

use std::fmt;
use std::path::PathBuf;

/// Where a value or a mistake is in a configuration file (1-based line and column).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    pub path: PathBuf,
    pub line: usize,
    pub column: usize,
}

impl Location {
    /// Turns a byte span of `text` (the file's content) into a line and column.
    pub fn from_offset(path: PathBuf, text: &str, offset: usize) -> Self {
        let before = &text[..offset.min(text.len())];
        let line = before.matches('\n').count() + 1;
        let column = before
            .rfind('\n')
            .map_or(before.len(), |nl| before.len() - nl - 1)
            + 1;
        Location { path, line, column }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.path.display(), self.line, self.column)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A mistake inside a file: a syntax error, an unknown key, a wrong type or a bad value.
    #[error("{location}: {}{message}", key.as_ref().map(|k| format!("key `{k}`: ")).unwrap_or_default())]
    Invalid {
        location: Location,
        key: Option<String>,
        message: String,
    },
    /// A bad value that came from the built-in defaults combined with a file (or from the
    /// environment), so there is no single line to point at.
    #[error("key `{key}`: {message}")]
    Unlocated { key: String, message: String },
}
