//! `manifest.json` beside every shard set: what was built, from what, and the full accounting.
//! No timestamps: the same build gives the same manifest bytes.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// One shard file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardInfo {
    /// File name relative to the manifest's directory.
    pub file: String,
    /// Rows in the shard.
    pub rows: u64,
    /// File size.
    pub bytes: u64,
    /// sha256 of the file, hex.
    pub sha256: String,
    /// Tokens in the shard (token shards only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<u64>,
}

/// The manifest of a shard directory.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// `documents`, `tokens` or `sft`.
    pub kind: String,
    /// `coretech` version that wrote it.
    pub tool_version: String,
    /// sha256 of the stage's canonical config (JSON).
    pub config_hash: String,
    /// Shards in order.
    pub shards: Vec<ShardInfo>,
    /// Stage-specific facts: tokenizer sha256, seq_len, per-source token shares, task index, …
    #[serde(default)]
    pub info: BTreeMap<String, serde_json::Value>,
    /// The accounting of the build (the run report's counts).
    #[serde(default)]
    pub accounting: serde_json::Value,
}

impl Manifest {
    /// Reads `dir/manifest.json`.
    pub fn load(dir: &Path) -> Result<Manifest> {
        let path = dir.join("manifest.json");
        let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
        serde_json::from_slice(&bytes).map_err(|e| Error::Other(format!("{}: bad manifest: {e}", path.display())))
    }

    /// Writes `dir/manifest.json` atomically (pretty JSON, trailing newline).
    pub fn save(&self, dir: &Path) -> Result<()> {
        let mut bytes = serde_json::to_vec_pretty(self).expect("manifest serializes");
        bytes.push(b'\n');
        crate::core::fsio::write_atomic(&dir.join("manifest.json"), &bytes)
    }

    /// Total rows over all shards.
    pub fn rows(&self) -> u64 {
        self.shards.iter().map(|s| s.rows).sum()
    }
}
