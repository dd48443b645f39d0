//! `coretech inspect`: what a shard file or directory holds — schema, row counts, sample rows
//! and per-source statistics (computed with polars). A rejects folder (`OUTPUT.rejects`) is
//! shown by reason: counts per reason and per source and reason, and, with a reason given, the
//! first rows of that reason with where each document came from.

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
    if crate::shard::Manifest::present(path) {
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
    inspect_with(path, sample_rows, None)
}

/// [`inspect`], and for a rejects folder with `reason`: only the rows dropped for that reason
/// (up to `sample_rows` of them shown). A reason on shards that are not rejects, or one no row
/// has, is an error naming the reasons there are.
pub fn inspect_with(path: &Path, sample_rows: usize, reason: Option<&str>) -> Result<String> {
    let files = files(path)?;
    if files.is_empty() && is_rejects_folder(path) {
        // A stage that dropped nothing (a dedup build without duplicates) leaves a rejects
        // folder with a manifest and no parts.
        return inspect_rejects(path, &files, sample_rows, reason);
    }
    if files.is_empty() {
        return Err(Error::Other(format!("{}: no parquet shards", path.display())));
    }
    if has_column(&files[0], REASON_COLUMN)? {
        return inspect_rejects(path, &files, sample_rows, reason);
    }
    if let Some(r) = reason {
        return Err(Error::Other(format!(
            "{}: --reason {r:?} needs a rejects folder (shards with a `{REASON_COLUMN}` column, e.g. OUTPUT.rejects); these shards have none",
            path.display()
        )));
    }
    if is_token_shard(&files[0])? {
        return inspect_tokens(path, &files, sample_rows);
    }
    let mut out = String::new();
    let mut sources: Vec<String> = Vec::new();
    let mut lens: Vec<u64> = Vec::new();
    let mut total_rows = 0u64;
    let mut shown = 0usize;
    for f in &files {
        let file = File::open(f).map_err(|e| Error::io(f, e))?;
        let builder =
            ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| Error::Shard { path: f.clone(), message: e.to_string() })?;
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
        let df =
            DataFrame::new_infer_height(vec![Column::new("source".into(), sources), Column::new("len".into(), lens)]).map_err(pl_err)?;
        let stats = df
            .lazy()
            .group_by([col("source")])
            .agg([
                len().alias("rows"),
                col("len").sum().alias("bytes"),
                col("len").mean().alias("mean_len"),
                col("len").max().alias("max_len"),
            ])
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

fn is_token_shard(f: &Path) -> Result<bool> {
    has_column(f, "input_ids")
}

fn has_column(f: &Path, name: &str) -> Result<bool> {
    let file = File::open(f).map_err(|e| Error::io(f, e))?;
    let builder =
        ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| Error::Shard { path: f.to_path_buf(), message: e.to_string() })?;
    Ok(builder.schema().column_with_name(name).is_some())
}

/// Whether `path` is a rejects folder by its manifest (`OUTPUT.rejects`, of any stage).
fn is_rejects_folder(path: &Path) -> bool {
    path.is_dir() && crate::shard::Manifest::load(path).is_ok_and(|m| m.kind == crate::stage::REJECTS_KIND)
}

/// The column that makes a shard a rejects shard (see `shard::documents::rejects_schema`).
const REASON_COLUMN: &str = "reason";
/// Rows read at a time.
const READ_BATCH_ROWS: usize = 4096;

/// A rejects folder: rows per reason and per source and reason (counted while streaming: memory
/// bounded by the number of distinct reasons and sources), then sample rows — of `reason` only
/// when given — with id, source, stage, reason, kept id, similarity, provenance and text.
fn inspect_rejects(path: &Path, files: &[PathBuf], sample_rows: usize, reason: Option<&str>) -> Result<String> {
    use std::collections::BTreeMap;
    let mut by_reason: BTreeMap<String, u64> = BTreeMap::new();
    let mut by_source: BTreeMap<(String, String), u64> = BTreeMap::new();
    let mut samples = String::new();
    let mut shown = 0usize;
    let mut total = 0u64;
    for f in files {
        let shard_err = |e: &dyn std::fmt::Display| Error::Shard { path: f.clone(), message: e.to_string() };
        let file = File::open(f).map_err(|e| Error::io(f, e))?;
        let reader = ParquetRecordBatchReaderBuilder::try_new(file)
            .and_then(|b| b.with_batch_size(READ_BATCH_ROWS).build())
            .map_err(|e| shard_err(&e))?;
        let mut row0 = 0usize;
        for batch in reader {
            let batch = batch.map_err(|e| shard_err(&e))?;
            let col = |name: &str| {
                batch
                    .column_by_name(name)
                    .and_then(|c| c.as_string_opt::<i32>().cloned())
                    .ok_or_else(|| shard_err(&format!("no string column `{name}`: not a rejects shard")))
            };
            let (reasons, sources) = (col(REASON_COLUMN)?, col("source")?);
            for i in 0..batch.num_rows() {
                let (r, src) = (reasons.value(i), sources.value(i));
                total += 1;
                *by_reason.entry(r.to_string()).or_default() += 1;
                *by_source.entry((src.to_string(), r.to_string())).or_default() += 1;
                if shown < sample_rows && reason.is_none_or(|want| want == r) {
                    let _ = writeln!(samples, "--- {} row {}", f.display(), row0 + i);
                    for (c, field) in batch.schema().fields().iter().enumerate() {
                        if !batch.column(c).is_null(i) {
                            let _ = writeln!(samples, "  {}: {}", field.name(), preview(batch.column(c).as_ref(), i));
                        }
                    }
                    shown += 1;
                }
            }
            row0 += batch.num_rows();
        }
    }
    let known = || by_reason.keys().cloned().collect::<Vec<_>>().join(", ");
    if let Some(want) = reason {
        if !by_reason.contains_key(want) {
            return Err(Error::Other(format!(
                "{}: no rejected document has reason {want:?}; the reasons here: {}",
                path.display(),
                known()
            )));
        }
    }
    let mut out = String::new();
    let _ = writeln!(out, "rejects: {} shards, {total} rows", files.len());
    let _ = writeln!(out, "by reason:");
    for (r, n) in &by_reason {
        let _ = writeln!(out, "  {r:<24} {n:>9}");
    }
    let _ = writeln!(out, "by source and reason:");
    for ((src, r), n) in &by_source {
        let _ = writeln!(out, "  {src:<12} {r:<24} {n:>9}");
    }
    match reason {
        Some(r) => {
            let _ = writeln!(out, "first {shown} of {} rows with reason {r:?}:", by_reason[r]);
        }
        None => {
            let _ = writeln!(out, "first {shown} rows (--reason R shows one reason):");
        }
    }
    out.push_str(&samples);
    Ok(out)
}

/// The tokenizer a token shard directory was built with, when it can be loaded here (the
/// bundled one, or a file that still exists with the same sha256).
fn manifest_tokenizer(path: &Path) -> Option<crate::tokenize::Tokenizer> {
    let dir = if path.is_file() { path.parent()? } else { path };
    let m = crate::shard::Manifest::load(dir).ok()?;
    let name = m.info.get("tokenizer")?.as_str()?;
    let sha = m.info.get("tokenizer_sha256")?.as_str()?;
    let tok = if name == crate::tokenize::QWEN25 {
        crate::tokenize::Tokenizer::qwen25(crate::tokenize::Engine::Hf).ok()?
    } else {
        crate::tokenize::Tokenizer::from_file(Path::new(name), crate::tokenize::Engine::Hf).ok()?
    };
    (tok.sha256() == sha).then_some(tok)
}

/// Power-of-two bucket label of a length: `1`, `2-3`, `4-7`, …
fn bucket(len: u64) -> (u32, String) {
    let b = 64 - len.max(1).leading_zeros() - 1;
    let lo = 1u64 << b;
    let hi = (lo << 1) - 1;
    (b, if lo == hi { lo.to_string() } else { format!("{lo}-{hi}") })
}

/// Token shards: rows, tokens and padding, tokens per source, histograms of segment lengths and
/// of row fill, and decoded sample rows with the segment boundaries marked.
fn inspect_tokens(path: &Path, files: &[PathBuf], sample_rows: usize) -> Result<String> {
    use std::collections::BTreeMap;
    let tok = manifest_tokenizer(path);
    let mut out = String::new();
    let mut per_source: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let mut seg_hist: BTreeMap<u32, (String, u64)> = BTreeMap::new();
    let mut fill_hist: BTreeMap<u32, (String, u64)> = BTreeMap::new();
    let (mut rows, mut real, mut padding, mut shown) = (0u64, 0u64, 0u64, 0usize);
    let mut seq_len = 0usize;
    for f in files {
        let file = File::open(f).map_err(|e| Error::io(f, e))?;
        let builder =
            ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| Error::Shard { path: f.clone(), message: e.to_string() })?;
        if rows == 0 {
            let _ = writeln!(out, "schema:");
            for field in builder.schema().fields() {
                let _ = writeln!(out, "  {}: {}", field.name(), field.data_type());
            }
        }
        let _ = writeln!(out, "{}: {} rows", f.display(), builder.metadata().file_metadata().num_rows());
        let reader = builder.with_batch_size(1024).build().map_err(|e| Error::Shard { path: f.clone(), message: e.to_string() })?;
        for batch in reader {
            let batch = batch.map_err(|e| Error::Shard { path: f.clone(), message: e.to_string() })?;
            let tb = crate::shard::tokens::TokenBatch::new(&batch, f)?;
            for i in 0..tb.rows {
                let ids = tb.ids(i);
                seq_len = seq_len.max(ids.len());
                let segs = tb.seg_lens(i);
                let sources = tb.sources(i);
                let r: u64 = segs.iter().map(|&l| l as u64).sum();
                rows += 1;
                real += r;
                padding += ids.len() as u64 - r.min(ids.len() as u64);
                for (k, &l) in segs.iter().enumerate() {
                    let e = per_source.entry(sources.get(k).unwrap_or(&"(none)").to_string()).or_default();
                    e.0 += 1;
                    e.1 += l as u64;
                    let (b, label) = bucket(l as u64);
                    seg_hist.entry(b).or_insert((label, 0)).1 += 1;
                }
                let (b, label) = bucket(r);
                fill_hist.entry(b).or_insert((label, 0)).1 += 1;
                if shown < sample_rows {
                    let _ = writeln!(
                        out,
                        "--- row {shown}: {} segments, {r} real tokens{}",
                        segs.len(),
                        tb.stage(i).map(|s| format!(", stage {s}")).unwrap_or_default()
                    );
                    let mut at = 0usize;
                    for (k, &l) in segs.iter().enumerate() {
                        let seg = &ids[at.min(ids.len())..(at + l as usize).min(ids.len())];
                        at += l as usize;
                        let text = match &tok {
                            Some(t) => t.decode(seg).unwrap_or_else(|e| format!("<{e}>")),
                            None => format!("{seg:?}"),
                        };
                        let one_line = text.replace('\n', "⏎");
                        let shown_text: String = one_line.chars().take(200).collect();
                        let more = if one_line.chars().count() > 200 { "…" } else { "" };
                        let _ = writeln!(out, "  ‖ seg {k} [{} · {l} tokens] {shown_text}{more}", sources.get(k).unwrap_or(&"(none)"));
                    }
                    if at < ids.len() {
                        let _ = writeln!(out, "  ‖ padding [{} tokens]", ids.len() - at);
                    }
                    shown += 1;
                }
            }
        }
    }
    let _ = writeln!(out, "total: {} shards, {rows} rows of {seq_len} tokens, {real} real tokens, {padding} padding", files.len());
    if tok.is_none() {
        let _ = writeln!(out, "(token ids shown undecoded: the manifest's tokenizer cannot be loaded here)");
    }
    let _ = writeln!(out, "tokens per source:");
    for (s, (segs, toks)) in &per_source {
        let _ = writeln!(out, "  {s:<12} {toks:>12} tokens {:>6.2} %  {segs:>9} segments", *toks as f64 * 100.0 / real.max(1) as f64);
    }
    for (title, hist) in [("segment lengths (tokens)", &seg_hist), ("real tokens per row", &fill_hist)] {
        let _ = writeln!(out, "{title}:");
        let max = hist.values().map(|(_, n)| *n).max().unwrap_or(1);
        for (label, n) in hist.values() {
            let _ = writeln!(out, "  {label:>13} {n:>9} {}", "#".repeat(((*n * 40).div_ceil(max)) as usize));
        }
    }
    Ok(out)
}
