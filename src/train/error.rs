//! Errors of the trainer: tensor failures, bad model configs, unreadable checkpoints and weights,
//! data-source problems. Each names the file (and the key or tensor) it is about.

use std::path::PathBuf;

/// A trainer error.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A tensor operation failed (shape mismatch, unsupported dtype, device error).
    #[error("tensor: {0}")]
    Candle(#[from] candle_core::Error),
    /// A model or training configuration is invalid; `key` names the field.
    #[error("config {key}: {message}")]
    Config {
        /// The offending field (dotted path).
        key: String,
        /// What is wrong.
        message: String,
    },
    /// A checkpoint, weight or config file is missing, unreadable or inconsistent.
    #[error("{path}: {message}")]
    File {
        /// The file or directory.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The batch source failed or yielded a batch the model cannot take.
    #[error("data: {0}")]
    Data(String),
    /// The rendezvous or a collective operation between ranks failed (names the ranks involved).
    #[error("distributed: {0}")]
    Dist(String),
}

impl TrainError {
    /// A config error on `key`.
    pub fn config(key: impl Into<String>, message: impl Into<String>) -> Self {
        TrainError::Config { key: key.into(), message: message.into() }
    }

    /// A file error on `path`.
    pub fn file(path: impl Into<PathBuf>, message: impl std::fmt::Display) -> Self {
        TrainError::File { path: path.into(), message: message.to_string() }
    }
}

impl From<TrainError> for crate::error::Error {
    fn from(e: TrainError) -> Self {
        match e {
            TrainError::Config { key, message } => crate::error::Error::Config { file: String::new(), key, message },
            other => crate::error::Error::Other(other.to_string()),
        }
    }
}

/// Trainer result type.
pub type Result<T, E = TrainError> = std::result::Result<T, E>;
