//! coretech: a toolkit for patent-domain LLMs. Raw patent, IPC and web corpora are read,
//! rendered, cleaned, deduplicated, tokenized and packed into Parquet shards; a candle trainer
//! runs continued pre-training and curriculum SFT on Qwen2-family models from those shards.
//!
//! The flow (one module per stage): `sources → render → clean → dedup → tokenize/pack → shard
//! → train → infer`, driven by `pipeline` from TOML configs.

#![deny(missing_docs)]

pub mod clean;
pub mod cli;
pub mod config;
pub mod core;
pub mod dedup;
pub mod doc;
pub mod error;
pub mod infer;
pub mod inspect;
pub mod io;
pub mod ipc;
pub mod pack;
pub mod pipeline;
pub mod render;
pub mod sft;
pub mod shard;
pub mod sources;
pub mod stage;
pub mod tokenize;
pub mod train;

pub use doc::{Document, Patent, Record};
pub use error::{Error, Position, ReadError, ReadErrorKind, Result};
