//! Packing token streams into fixed-length rows: CPT concatenation ([`cpt`]), whole-document
//! best-fit ([`bestfit`], also the SFT packer), mixture weights ([`mixture`]), the global
//! shuffle ([`shuffle`]), and the `pack` stage that runs them over document shards ([`stage`]).

pub mod bench;
pub mod bestfit;
pub mod cpt;
pub mod holdout;
pub mod mixture;
pub mod shuffle;
pub mod stage;

use std::collections::BTreeMap;
use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::shard::WriterConfig;
use crate::tokenize::TokenizerConfig;
pub use bestfit::{BestFit, Example};
pub use cpt::CptPacker;
pub use holdout::{Part, ValidationSplit};

/// How documents become rows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PackMode {
    /// Documents joined with `<|endoftext|>` and cut into rows of exactly `seq_len`: no padding
    /// except in the very last row of the build.
    #[default]
    Cpt,
    /// Whole documents (each with its `<|endoftext|>`) placed by best-fit, never split unless
    /// longer than `seq_len` (then cut at multiples of `seq_len` tokens from the start); rows
    /// are padded.
    Whole,
}

/// The global shuffle of rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ShuffleConfig {
    /// Shuffle rows across the whole build (off: rows in document order).
    pub enabled: bool,
    /// Rows held in memory per shuffle chunk (memory ≈ chunk_rows × seq_len × 4 bytes); the
    /// number of chunk files open at once in the second pass is rows / chunk_rows.
    #[schemars(range(min = 1))]
    pub chunk_rows: usize,
}

impl Default for ShuffleConfig {
    fn default() -> Self {
        Self { enabled: true, chunk_rows: 16_384 }
    }
}

/// The `pack` stage: document shards → tokenized, packed, shuffled token shards.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PackConfig {
    /// Document shard directories (each with its `.manifest.json`, or `*.parquet` files).
    #[schemars(length(min = 1), inner(length(min = 1)))]
    pub inputs: Vec<PathBuf>,
    /// Output directory of the token shards and `.manifest.json`.
    #[schemars(length(min = 1))]
    pub output: PathBuf,
    /// Tokens per row.
    #[serde(default = "default_seq_len")]
    #[schemars(range(min = 1, max = 1_048_576))]
    pub seq_len: usize,
    /// `cpt` (concatenate and cut) or `whole` (best-fit, documents kept whole).
    #[serde(default)]
    pub mode: PackMode,
    /// The tokenizer (default: the bundled Qwen2.5).
    #[serde(default)]
    pub tokenizer: TokenizerConfig,
    /// Token appended to every document (and used as padding); must exist in the tokenizer.
    #[serde(default = "default_eos")]
    pub eos_token: String,
    /// Seed of every random choice (mixture sampling, shuffle).
    #[serde(default)]
    pub seed: u64,
    /// Weight per source: the integer part is the number of copies of every document, the
    /// fraction the probability of one more (decided per document from hash(seed, id)).
    /// Sources not listed have weight 1; a weight is at most 1000 (copies).
    #[serde(default)]
    #[schemars(extend("additionalProperties" = { "type": "number", "format": "double", "minimum": 0.0, "maximum": 1000.0 }))]
    pub mixture: BTreeMap<String, f64>,
    /// Rows per output shard.
    #[serde(default = "default_rows_per_shard")]
    #[schemars(range(min = 1))]
    pub rows_per_shard: usize,
    /// Documents tokenized per parallel batch.
    #[serde(default = "default_batch_docs")]
    #[schemars(range(min = 1))]
    pub batch_docs: usize,
    /// Whole mode: rows kept open for best-fit before the fullest is closed.
    #[serde(default = "default_open_bins")]
    #[schemars(range(min = 1))]
    pub open_bins: usize,
    /// The global shuffle.
    #[serde(default)]
    pub shuffle: ShuffleConfig,
    /// Parquet settings (row groups are the loader's unit of reading: keep them small).
    #[serde(default = "default_writer")]
    pub writer: WriterConfig,
    /// A seeded share of the documents set aside as a validation split, packed into its own
    /// directory (none: every document is packed for training).
    #[serde(default)]
    pub validation: Option<holdout::ValidationSplit>,
}

impl PackConfig {
    /// Checks the section (its ranges live in the schema).
    pub fn validate(&self) -> crate::Result<()> {
        crate::core::schema::check(self, "pack")?;
        match &self.validation {
            Some(v) => v.check(&self.output),
            None => Ok(()),
        }
    }
}

fn default_seq_len() -> usize {
    2048
}
fn default_eos() -> String {
    "<|endoftext|>".into()
}
fn default_rows_per_shard() -> usize {
    16_384
}
fn default_batch_docs() -> usize {
    1024
}
fn default_open_bins() -> usize {
    64
}
fn default_writer() -> WriterConfig {
    WriterConfig { row_group_rows: 256, ..WriterConfig::default() }
}
