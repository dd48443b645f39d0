//! Atomic Parquet shard writing: write to `NAME.tmp`, fsync, rename, fsync the directory
//! ([`crate::core::fsio`]), so a killed run never leaves a half-written shard under a final
//! name. The sha256 of the bytes is computed while writing.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::manifest::ShardInfo;
use crate::core::fsio::{hex, sync_dir, tmp_path};
use crate::error::{Error, Result};

/// Parquet settings of every shard kind.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct WriterConfig {
    /// zstd level (1–22).
    #[schemars(range(min = 1, max = 22))]
    pub zstd_level: i32,
    /// Rows per Parquet row group.
    #[schemars(range(min = 1))]
    pub row_group_rows: usize,
}

impl Default for WriterConfig {
    fn default() -> Self {
        Self { zstd_level: 3, row_group_rows: 8192 }
    }
}

impl WriterConfig {
    fn properties(&self) -> Result<WriterProperties> {
        let level = ZstdLevel::try_new(self.zstd_level).map_err(|e| Error::Other(format!("zstd_level {}: {e}", self.zstd_level)))?;
        Ok(WriterProperties::builder()
            .set_compression(Compression::ZSTD(level))
            .set_max_row_group_row_count(Some(self.row_group_rows))
            // A fixed creator string keeps shards byte-identical across tool builds of a version.
            .set_created_by(format!("coretech {}", env!("CARGO_PKG_VERSION")))
            .build())
    }
}

struct HashingFile {
    file: File,
    hasher: Sha256,
    xxh: Box<xxhash_rust::xxh3::Xxh3>,
    bytes: u64,
}

impl Write for HashingFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.xxh.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// Writes one shard from record batches, atomically.
pub struct ShardWriter {
    path: PathBuf,
    tmp: PathBuf,
    writer: Option<ArrowWriter<HashingFile>>,
    rows: u64,
}

impl ShardWriter {
    /// Starts `path` (written as `path.tmp` until [`ShardWriter::finish`]). A schema with two
    /// columns of one name is refused: pyarrow, pandas, polars and `datasets` cannot open such a
    /// file.
    pub fn create(path: &Path, schema: SchemaRef, cfg: &WriterConfig) -> Result<Self> {
        if let Some(name) = duplicate_column(&schema) {
            return Err(shard_err(path, format!("schema has two columns named {name:?}")));
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        let tmp = tmp_path(path);
        let file = File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
        let sink = HashingFile { file, hasher: Sha256::new(), xxh: Box::default(), bytes: 0 };
        let writer = ArrowWriter::try_new(sink, schema, Some(cfg.properties()?)).map_err(|e| shard_err(&tmp, e))?;
        Ok(Self { path: path.to_path_buf(), tmp, writer: Some(writer), rows: 0 })
    }

    /// Appends a batch.
    pub fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        self.rows += batch.num_rows() as u64;
        self.writer.as_mut().expect("writer open").write(batch).map_err(|e| shard_err(&self.tmp, e))
    }

    /// Closes the file, fsyncs it, renames it into place and returns its entry for the manifest.
    pub fn finish(mut self) -> Result<ShardInfo> {
        let writer = self.writer.take().expect("writer open");
        let sink = writer.into_inner().map_err(|e| shard_err(&self.tmp, e))?;
        sink.file.sync_all().map_err(|e| Error::io(&self.tmp, e))?;
        let sha256 = hex(&sink.hasher.finalize());
        std::fs::rename(&self.tmp, &self.path).map_err(|e| Error::io(&self.path, e))?;
        sync_dir(&self.path);
        Ok(ShardInfo {
            file: self.path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default(),
            rows: self.rows,
            bytes: sink.bytes,
            sha256,
            xxh3: Some(format!("{:032x}", sink.xxh.digest128())),
            tokens: None,
        })
    }
}

impl Drop for ShardWriter {
    fn drop(&mut self) {
        if self.writer.is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// The first top-level column name that occurs twice in `schema`, if any.
pub fn duplicate_column(schema: &arrow::datatypes::Schema) -> Option<&str> {
    let mut seen = std::collections::HashSet::new();
    schema.fields().iter().map(|f| f.name().as_str()).find(|n| !seen.insert(*n))
}

fn shard_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Shard { path: path.to_path_buf(), message: e.to_string() }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    #[test]
    fn a_schema_with_a_repeated_column_name_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.parquet");
        let schema = Arc::new(Schema::new(vec![
            Field::new("ipc_codes", DataType::Float64, false),
            Field::new("id", DataType::Utf8, false),
            Field::new("ipc_codes", DataType::Utf8, false),
        ]));
        let e = ShardWriter::create(&path, schema, &WriterConfig::default()).err().unwrap().to_string();
        assert!(e.contains("x.parquet") && e.contains("two columns named \"ipc_codes\""), "{e}");
        assert!(!path.exists() && !tmp_path(&path).exists());
    }
}
