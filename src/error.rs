//! Library error types. Every error a user can hit names the file and the position in it.

use std::fmt;
use std::path::PathBuf;

/// Where in an input a problem was found. Byte offsets are into the decompressed stream.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Position {
    /// The input file (for archives: `archive.zip!member`).
    pub file: String,
    /// Byte offset of the record (or of the problem) in the decompressed stream.
    pub offset: Option<u64>,
    /// 1-based line number where known.
    pub line: Option<u64>,
}

impl Position {
    /// A position at a byte offset (and optionally a line) of `file`.
    pub fn new(file: impl Into<String>, offset: Option<u64>, line: Option<u64>) -> Self {
        Self { file: file.into(), offset, line }
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if let Some(off) = self.offset {
            write!(f, " (byte {off})")?;
        }
        Ok(())
    }
}

/// A problem with one input record (or a whole input file): counted and skipped, or fatal under `--strict`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, thiserror::Error)]
#[error("{position}: {kind}: {message}")]
pub struct ReadError {
    /// Where the problem is.
    pub position: Position,
    /// A short stable class name (`xml`, `json`, `encoding`, `truncated`, `too-large`, `shape`, `io`, …),
    /// used as the bucket in the run report.
    pub kind: String,
    /// What was expected and what was found.
    pub message: String,
}

impl ReadError {
    /// A read error of class `kind` at `position`.
    pub fn new(position: Position, kind: &str, message: impl Into<String>) -> Self {
        Self { position, kind: kind.to_string(), message: message.into() }
    }
}

/// Errors of the library's stages.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A bad input record or file (see [`ReadError`]).
    #[error(transparent)]
    Read(#[from] ReadError),
    /// A configuration problem; `key` is the dotted path of the offending key.
    #[error("config {file}: {key}: {message}")]
    Config {
        /// The config file (empty when the config did not come from a file).
        file: String,
        /// Dotted path of the key, e.g. `docs.writer.row_group_rows`.
        key: String,
        /// What is wrong, and for enums the allowed values.
        message: String,
    },
    /// An I/O failure on a named path.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying failure.
        #[source]
        source: std::io::Error,
    },
    /// A Parquet or Arrow failure on a named path.
    #[error("{path}: {message}")]
    Shard {
        /// The shard file.
        path: PathBuf,
        /// What failed.
        message: String,
    },
    /// Anything else, with context.
    #[error("{0}")]
    Other(String),
}

impl Error {
    /// Wraps an I/O error with the path it happened on.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }
}

/// Library result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
