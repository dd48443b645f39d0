//! `coretech inspect`: what a shard file or directory holds — schema, row counts, sample rows
//! and per-source statistics (computed with polars).

use std::fmt::Write as _;
use std::fs::File;
use std::path::{Path, PathBuf};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::DataType;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use polars::prelude::*;

use crate::error::{Error, Result};

/// The shard files at `path` (a file, or the `*.parquet` files of a directory and its task-*
/// subdirectories).
fn files(path: &Path) -> Result<Vec<PathBuf>> {
    if path.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    if path.join("manifest.json").exists() {
        return crate::shard::documents::shard_files(path);
    }
    let mut out = Vec::new();
    let mut stack = vec![path.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).map_err(|e| Error::io(&d, e))?.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "parquet") {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Renders the inspection report of `path` as text.
pub fn inspect(path: &Path, sample_rows: usize) -> Result<String> {
    let files = files(path)?;
    if files.is_empty() {
        return Err(Error::Other(format!("{}: no parquet shards", path.display())));
    }
    let mut out = String::new();
    let mut sources: Vec<String> = Vec::new();
    let mut lens: Vec<u64> = Vec::new();
    let mut total_rows = 0u64;
    let mut shown = 0usize;
    for f in &files {
        let file = File::open(f).map_err(|e| Error::io(f, e))?;
        let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| Error::Shard { path: f.clone(), message: e.to_string() })?;
        let rows = builder.metadata().file_metadata().num_rows();
        if total_rows == 0 {
            let _ = writeln!(out, "schema:");
            for field in builder.schema().fields() {
                let _ = writeln!(out, "  {}: {}", field.name(), field.data_type());
            }
        }
        let _ = writeln!(out, "{}: {rows} rows", f.display());
        total_rows += rows as u64;
        let reader = builder.with_batch_size(4096).build().map_err(|e| Error::Shard { path: f.clone(), message: e.to_string() })?;
        for batch in reader {
            let batch = batch.map_err(|e| Error::Shard { path: f.clone(), message: e.to_string() })?;
            collect_stats(&batch, &mut sources, &mut lens);
            while shown < sample_rows && shown < batch.num_rows() {
                let _ = writeln!(out, "--- row {shown}");
                for (i, field) in batch.schema().fields().iter().enumerate() {
                    let _ = writeln!(out, "  {}: {}", field.name(), preview(batch.column(i).as_ref(), shown));
                }
                shown += 1;
            }
        }
    }
    let _ = writeln!(out, "total: {} shards, {total_rows} rows", files.len());
    if !sources.is_empty() {
        let df = DataFrame::new_infer_height(vec![Column::new("source".into(), sources), Column::new("len".into(), lens)]).map_err(pl_err)?;
        let stats = df
            .lazy()
            .group_by([col("source")])
            .agg([len().alias("rows"), col("len").sum().alias("bytes"), col("len").mean().alias("mean_len"), col("len").max().alias("max_len")])
            .sort(["source"], Default::default())
            .collect()
            .map_err(pl_err)?;
        let _ = writeln!(out, "per source (text bytes for documents, tokens for token shards):\n{stats}");
    }
    Ok(out)
}

fn pl_err(e: PolarsError) -> Error {
    Error::Other(format!("polars: {e}"))
}

/// Per-row source and length: the `text` length (documents) or the `input_ids` length (tokens).
fn collect_stats(batch: &RecordBatch, sources: &mut Vec<String>, lens: &mut Vec<u64>) {
    let n = batch.num_rows();
    let src = batch.column_by_name("source").and_then(|c| c.as_string_opt::<i32>().cloned());
    for i in 0..n {
        sources.push(src.as_ref().map(|s| s.value(i).to_string()).unwrap_or_else(|| "(none)".into()));
    }
    if let Some(text) = batch.column_by_name("text").and_then(|c| c.as_string_opt::<i32>()) {
        lens.extend((0..n).map(|i| text.value(i).len() as u64));
    } else if let Some(ids) = batch.column_by_name("input_ids").and_then(|c| c.as_list_opt::<i32>()) {
        lens.extend((0..n).map(|i| ids.value(i).len() as u64));
    } else {
        lens.extend(std::iter::repeat_n(0, n));
    }
}

fn preview(col: &dyn Array, row: usize) -> String {
    let s = match col.data_type() {
        DataType::Utf8 => col.as_string::<i32>().value(row).to_string(),
        _ => arrow::util::display::ArrayFormatter::try_new(col, &Default::default()).map(|f| f.value(row).to_string()).unwrap_or_default(),
    };
    let one_line = s.replace('\n', "⏎");
    if one_line.chars().count() > 160 {
        format!("{}… ({} chars)", one_line.chars().take(160).collect::<String>(), s.chars().count())
    } else {
        one_line
    }
}
