//! Inference: generation with a KV cache (candle-transformers `qwen2`) and task evaluation.
//!
//! - [`model`]: a checkpoint directory (HF layout: `config.json`, `model.safetensors` or shards
//!   with `model.safetensors.index.json`, optional `tokenizer.json`) loaded into
//!   candle-transformers' `qwen2::ModelForCausalLM`.
//! - [`tokenizer`]: the checkpoint's tokenizer, else the bundled Qwen2.5 one.
//! - [`generate`]: greedy and sampled decoding with stop tokens and streaming text.
//! - [`decode`]: incremental detokenization that never splits a UTF-8 character.
//! - [`chat`]: the interactive multi-turn session behind `coretech chat`.
//! - [`score`]: pure scoring of answers (IPC codes per level, key technologies).
//! - [`eval`]: `coretech eval`: an SFT test split → generated answers → scores and a report.

pub mod chat;
pub mod decode;
pub mod eval;
pub mod generate;
pub mod model;
pub mod score;
pub mod tokenizer;

use std::path::PathBuf;

use crate::error::ReadError;

/// Errors of loading, generation and evaluation.
#[derive(Debug, thiserror::Error)]
pub enum InferError {
    /// A checkpoint directory that cannot be used: missing or malformed file, unsupported
    /// architecture, inconsistent weights.
    #[error("checkpoint {path}: {message}")]
    Checkpoint {
        /// The file or directory at fault.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A tokenizer that cannot be loaded or used.
    #[error("tokenizer {origin}: {message}")]
    Tokenizer {
        /// Where the tokenizer came from (a path or `bundled Qwen2.5`).
        origin: String,
        /// What went wrong.
        message: String,
    },
    /// A generation or evaluation setting out of range.
    #[error("invalid setting {key}: {message}")]
    Config {
        /// The setting's name as the CLI spells it.
        key: String,
        /// What is allowed.
        message: String,
    },
    /// A prompt that does not fit the model's context.
    #[error("prompt of {prompt_tokens} tokens does not fit the model's context of {context} positions")]
    PromptTooLong {
        /// Tokens in the prompt.
        prompt_tokens: usize,
        /// `max_position_embeddings` of the model.
        context: usize,
    },
    /// A bad record or file of an evaluation set.
    #[error(transparent)]
    Data(#[from] ReadError),
    /// An I/O failure on a named path (or `<stdout>`/`<stdin>`). The I/O error is in the message,
    /// not a `source`, so a chained report (`{:#}`) does not print it twice.
    #[error("{path}: {error}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The failure.
        error: std::io::Error,
    },
    /// A tensor operation failed (shapes, dtypes, device).
    #[error("tensor: {0}")]
    Candle(#[from] candle_core::Error),
}

impl InferError {
    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        InferError::Io { path: path.into(), error: source }
    }

    /// A checkpoint problem at `path`.
    pub fn checkpoint(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        InferError::Checkpoint { path: path.into(), message: message.into() }
    }

    /// An out-of-range setting.
    pub fn config(key: &str, message: impl Into<String>) -> Self {
        InferError::Config { key: key.into(), message: message.into() }
    }
}

/// Result of the inference module.
pub type Result<T, E = InferError> = std::result::Result<T, E>;

/// Conversations are rendered by the crate's one ChatML renderer ([`crate::sft::template`]).
pub use crate::sft::template::DEFAULT_SYSTEM_PROMPT;
pub use crate::sft::{Message, Role};
pub use generate::{Generation, GenerationConfig, StopReason};
pub use model::{Checkpoint, DTypeChoice, LoadOptions};
