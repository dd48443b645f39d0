//! `.manifest.json` beside every shard set: what was built, from what, and the full accounting.
//! No timestamps: the same build gives the same manifest bytes. A stage reading shards checks
//! each against its manifest first ([`verified_shards`]).
//!
//! The side files of a shard folder are dot-prefixed ([`MANIFEST_FILE`] here, the report and
//! progress files in [`crate::stage`]) so that the folder's only visible files are its shards:
//! `datasets.load_dataset("parquet", data_dir=DIR)` skips names starting with `.` (and only
//! those), `pyarrow.dataset` skips `.` and `_`, and `pl.scan_parquet("DIR/*.parquet")` matches
//! only the shards (checked on real outputs by `tests/compat/check_loaders.py`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::core::fingerprint::FileDigest;
use crate::core::fsio::sha256_file;
use crate::error::{Error, Result};

/// The manifest's file name in a shard folder (dot-prefixed: loaders skip it).
pub const MANIFEST_FILE: &str = ".manifest.json";

/// The manifest's name in folders written before side files were dot-prefixed. Such a folder is
/// refused by name (never read as a folder without a manifest, unchecked); the stage that wrote
/// it recognises it and replaces it on its next run.
pub const LEGACY_MANIFEST_FILE: &str = "manifest.json";

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
    /// xxh3-128 of the file, hex: what readers check a shard against (about 9× faster than
    /// sha256 here, see `core::fsio`); absent in manifests of older builds (sha256 is checked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xxh3: Option<String>,
    /// Tokens in the shard (token shards only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<u64>,
}

/// The manifest of a shard directory.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// `documents`, `tokens` or `sft`.
    pub kind: String,
    /// The stage that wrote the folder (`docs`, `dedup`, `pack`, `sft`): only that stage
    /// touches the files this manifest lists.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub stage: String,
    /// `coretech` version that wrote it.
    pub tool_version: String,
    /// sha256 of the stage's canonical config (JSON).
    pub config_hash: String,
    /// Shards in order.
    pub shards: Vec<ShardInfo>,
    /// Other files (and folders, ending in `/`) of the build, relative to the manifest's folder.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<String>,
    /// Stage-specific facts: tokenizer sha256, seq_len, per-source token shares, task index, …
    #[serde(default)]
    pub info: BTreeMap<String, serde_json::Value>,
    /// The accounting of the build (the run report's counts).
    #[serde(default)]
    pub accounting: serde_json::Value,
}

impl Manifest {
    /// Reads `dir/.manifest.json` ([`MANIFEST_FILE`]); a folder of the old layout (a
    /// `manifest.json` only) is an error that says what to do.
    pub fn load(dir: &Path) -> Result<Manifest> {
        let path = dir.join(MANIFEST_FILE);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && dir.join(LEGACY_MANIFEST_FILE).is_file() => {
                return Err(Error::Other(format!(
                    "{}: written by an older coretech (its manifest is {LEGACY_MANIFEST_FILE}, now {MANIFEST_FILE}); run its stage \
                     again (it replaces the folder) or rename the side files with a leading dot",
                    dir.join(LEGACY_MANIFEST_FILE).display()
                )))
            }
            Err(e) => return Err(Error::io(&path, e)),
        };
        Self::parse(&bytes, &path)
    }

    /// Parses manifest bytes read from `path` (named in the error).
    pub fn parse(bytes: &[u8], path: &Path) -> Result<Manifest> {
        serde_json::from_slice(bytes).map_err(|e| Error::Other(format!("{}: bad manifest: {e}", path.display())))
    }

    /// Whether `dir` has a manifest, of the current or the old layout (then [`Manifest::load`]
    /// says what to do rather than the folder being read unchecked).
    pub fn present(dir: &Path) -> bool {
        dir.join(MANIFEST_FILE).exists() || dir.join(LEGACY_MANIFEST_FILE).exists()
    }

    /// Checks `dir/SHARD` against its entry: present, same size, same row count (Parquet
    /// footer), same checksum (xxh3 where recorded, else sha256). Returns its digest.
    pub fn verify_shard(dir: &Path, s: &ShardInfo) -> Result<InputShard> {
        let path = dir.join(&s.file);
        let refuse = |what: String| {
            Error::Other(format!(
                "{}: {what} than {}/{MANIFEST_FILE} records; the shard changed after it was written, refusing to read it",
                path.display(),
                dir.display()
            ))
        };
        let md = std::fs::metadata(&path).map_err(|e| Error::io(&path, e))?;
        if md.len() != s.bytes {
            return Err(refuse(format!("{} bytes, other", md.len())));
        }
        let rows = parquet_rows(&path)?;
        if rows != s.rows {
            return Err(refuse(format!("{rows} rows, other")));
        }
        let digest = FileDigest::of(&path)?;
        let same = match &s.xxh3 {
            Some(x) => *x == digest.xxh3,
            None => sha256_file(&path)? == s.sha256,
        };
        if !same {
            return Err(refuse("other bytes (checksum mismatch)".into()));
        }
        Ok(InputShard { path, rows, digest })
    }

    /// Writes `dir/.manifest.json` atomically (pretty JSON, trailing newline).
    pub fn save(&self, dir: &Path) -> Result<()> {
        let mut bytes = serde_json::to_vec_pretty(self).expect("manifest serializes");
        bytes.push(b'\n');
        crate::core::fsio::write_atomic(&dir.join(MANIFEST_FILE), &bytes)
    }

    /// Total rows over all shards.
    pub fn rows(&self) -> u64 {
        self.shards.iter().map(|s| s.rows).sum()
    }
}

/// An input shard checked against its manifest, with its content digest.
#[derive(Debug, Clone)]
pub struct InputShard {
    /// The file.
    pub path: PathBuf,
    /// Rows (from the Parquet footer).
    pub rows: u64,
    /// Size and xxh3 of its bytes.
    pub digest: FileDigest,
}

/// Rows of a Parquet file, from its footer.
pub fn parquet_rows(path: &Path) -> Result<u64> {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let r = SerializedFileReader::new(f).map_err(|e| Error::Shard { path: path.to_path_buf(), message: e.to_string() })?;
    Ok(r.metadata().file_metadata().num_rows().max(0) as u64)
}

/// The shards of a folder, in manifest order, each checked against the manifest before it is
/// used ([`Manifest::verify_shard`], in parallel); a mismatch is an error naming the shard.
/// A folder without a manifest gives its `*.parquet` files in name order, unchecked (there is
/// nothing to check them against), with their digests.
pub fn verified_shards(dir: &Path) -> Result<Vec<InputShard>> {
    if Manifest::present(dir) {
        let m = Manifest::load(dir)?;
        return m.shards.par_iter().map(|s| Manifest::verify_shard(dir, s)).collect();
    }
    let files = super::documents::shard_files(dir)?;
    files.par_iter().map(|p| Ok(InputShard { path: p.clone(), rows: parquet_rows(p)?, digest: FileDigest::of(p)? })).collect()
}
