//! The `pack` stage: document shards → tokenize → pack → shuffle → token shards + manifest.
//!
//! Pass 1 streams the documents (shard by shard, `batch_docs` at a time, once per mixture
//! pass), tokenizes each batch in parallel (order kept), packs sequentially and collects rows
//! into shuffle chunks written to `OUTPUT/.pack-tmp/`. Pass 2 interleaves the chunks into the
//! output shards (see [`super::shuffle`]). After every chunk and every output shard,
//! `progress.json` records where the build stands (input position, the packer's partial row,
//! counts, chunk list, interleave state); a killed build resumes from there and ends with
//! byte-identical shards. Nothing depends on the thread count.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::bestfit::{BestFit, Example};
use super::cpt::CptPacker;
use super::mixture::Mixture;
use super::shuffle::{write_chunk, ChunkInfo, InterleaveState, Interleaver};
use super::{PackConfig, PackMode};
use crate::core::RunReport;
use crate::core::TaskSplit;
use crate::error::{Error, Position, ReadError, ReadErrorKind, Result};
use crate::shard::tokens::{self, Columns, Row};
use crate::shard::{documents, Manifest, ShardInfo, ShardWriter};
use crate::tokenize::Tokenizer;

/// Temp directory of the shuffle chunks, inside the output directory.
pub const TMP_DIR: &str = ".pack-tmp";
/// Filter bucket of documents the mixture sampled out.
pub const SAMPLED_OUT: &str = "mixture-sampled-out";
/// Filter bucket of documents without text.
pub const EMPTY: &str = "empty-text";

/// Token counts of one source.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceTokens {
    /// Documents read.
    pub documents: u64,
    /// Documents packed, copies included.
    pub packed: u64,
    /// Tokens packed (closing tokens and copies included).
    pub tokens: u64,
    /// Whole mode: documents longer than `seq_len` (cut at multiples of `seq_len`).
    pub split: u64,
}

/// What a build packed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackStats {
    /// Per source.
    pub sources: BTreeMap<String, SourceTokens>,
    /// Rows written.
    pub rows: u64,
    /// Padding tokens (CPT: only in the last row).
    pub padding: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
enum Packer {
    Cpt(CptPacker),
    Whole(BestFit),
}

/// Input position: mixture pass, file, documents done in that file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Pos {
    pass: u32,
    file: usize,
    doc: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Progress {
    config_hash: String,
    /// None while packing; Some once every input is packed and chunked.
    interleave: Option<InterleaveState>,
    pos: Pos,
    packer: Packer,
    chunks: Vec<ChunkInfo>,
    stats: PackStats,
    report: RunReport,
    shards: Vec<ShardInfo>,
}

/// The document shard files of the inputs for this task, in order.
fn input_files(cfg: &PackConfig, task: TaskSplit) -> Result<Vec<PathBuf>> {
    let mut all = Vec::new();
    for dir in &cfg.inputs {
        if !dir.is_dir() {
            return Err(Error::Other(format!("{}: input is not a directory of document shards", dir.display())));
        }
        all.extend(documents::shard_files(dir)?);
    }
    if all.is_empty() {
        return Err(Error::Other(format!("pack: no document shards in {:?}", cfg.inputs)));
    }
    Ok(all.into_iter().enumerate().filter(|(i, _)| i % task.count == task.index).map(|(_, p)| p).collect())
}

/// Runs the pack stage for one task; returns the report (also written to `report.json`).
pub fn run(cfg: &PackConfig, task: TaskSplit) -> Result<RunReport> {
    run_with(cfg, task, None)
}

/// [`run`] with an already loaded tokenizer (it must be the one `cfg.tokenizer` names).
pub fn run_with(cfg: &PackConfig, task: TaskSplit, tokenizer: Option<&Tokenizer>) -> Result<RunReport> {
    let started = Instant::now();
    cfg.validate()?;
    let files = input_files(cfg, task)?;
    let out_dir = task.output_dir(&cfg.output);
    std::fs::create_dir_all(&out_dir).map_err(|e| Error::io(&out_dir, e))?;
    let tokenizer = match tokenizer {
        Some(t) => t.clone(),
        None => Tokenizer::load(&cfg.tokenizer)?,
    };
    let eos = tokenizer.token_id(&cfg.eos_token).ok_or_else(|| Error::Config {
        file: String::new(),
        key: "pack.eos_token".into(),
        message: format!("{:?} is not a token of {}", cfg.eos_token, tokenizer.name()),
    })?;
    let mixture = Mixture::new(&cfg.mixture, cfg.seed)?;

    // The engine does not change the ids, so it is not part of the hash.
    let config_hash = {
        let mut c = cfg.clone();
        c.tokenizer.engine = Default::default();
        let listing: Vec<(String, u64)> =
            files.iter().map(|p| (p.display().to_string(), std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))).collect();
        crate::core::hash_of(&(c, &listing, tokenizer.sha256(), task.index, task.count))
    };
    if let Ok(m) = Manifest::load(&out_dir) {
        if m.config_hash == config_hash && m.kind == "tokens" {
            if let Ok(bytes) = std::fs::read(out_dir.join("report.json")) {
                if let Ok(mut r) = serde_json::from_slice::<RunReport>(&bytes) {
                    tracing::info!("{}: up to date (same inputs and config)", out_dir.display());
                    r.elapsed_s = started.elapsed().as_secs_f64();
                    return Ok(r);
                }
            }
        }
    }
    let tmp = out_dir.join(TMP_DIR);
    let progress = load_progress(&out_dir, &config_hash);
    let mut p = match progress {
        Some(p) => {
            tracing::info!("{}: resuming ({} chunks, {} shards done)", out_dir.display(), p.chunks.len(), p.shards.len());
            clean_stale(&out_dir, p.shards.len(), Some(&p.chunks))?;
            p
        }
        None => {
            clean_stale(&out_dir, 0, None)?;
            let packer = match cfg.mode {
                PackMode::Cpt => Packer::Cpt(CptPacker::new(cfg.seq_len, eos)),
                PackMode::Whole => Packer::Whole(BestFit::new(cfg.seq_len, eos, cfg.open_bins, false)),
            };
            Progress {
                config_hash: config_hash.clone(),
                interleave: None,
                pos: Pos::default(),
                packer,
                chunks: Vec::new(),
                stats: PackStats::default(),
                report: RunReport::new("pack"),
                shards: Vec::new(),
            }
        }
    };
    if let Packer::Whole(bf) = &mut p.packer {
        bf.reindex();
    }
    std::fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;

    if p.interleave.is_none() {
        pack_all(cfg, &files, &tokenizer, &mixture, eos, &tmp, &out_dir, &mut p)?;
    }
    interleave_all(cfg, &tmp, &out_dir, &mut p)?;

    let Progress { stats, mut report, shards, chunks, .. } = p;
    report.elapsed_s = started.elapsed().as_secs_f64();
    let manifest = build_manifest(cfg, &tokenizer, eos, &mixture, &files, &stats, &report, shards, chunks.len(), config_hash, task);
    manifest.save(&out_dir)?;
    let mut rep = serde_json::to_vec_pretty(&report).expect("report serializes");
    rep.push(b'\n');
    crate::core::fsio::write_atomic(&out_dir.join("report.json"), &rep)?;
    let _ = std::fs::remove_file(out_dir.join("progress.json"));
    std::fs::remove_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    Ok(report)
}

#[allow(clippy::too_many_arguments)]
fn pack_all(
    cfg: &PackConfig,
    files: &[PathBuf],
    tokenizer: &Tokenizer,
    mixture: &Mixture,
    eos: u32,
    tmp: &Path,
    out_dir: &Path,
    p: &mut Progress,
) -> Result<()> {
    let passes = mixture.passes();
    let mut chunk: Vec<Row> = Vec::new();
    let start = p.pos;
    let mut ids_buf: Vec<Vec<u32>> = Vec::new();
    for pass in start.pass..passes {
        for (fi, path) in files.iter().enumerate() {
            if (pass, fi) < (start.pass, start.file) {
                continue;
            }
            let skip = if (pass, fi) == (start.pass, start.file) { start.doc } else { 0 };
            let mut done: u64 = 0;
            for batch in documents::read_shard(path, cfg.batch_docs)? {
                let docs = batch?;
                let first = done;
                done += docs.len() as u64;
                if done <= skip {
                    continue;
                }
                let docs = &docs[(skip.saturating_sub(first)) as usize..];
                // Decide, then tokenize the chosen documents in parallel.
                let mut chosen = Vec::with_capacity(docs.len());
                for d in docs {
                    let copies = if d.text.is_empty() { 0 } else { mixture.copies(&d.source, &d.id) };
                    if pass == 0 {
                        p.stats.sources.entry(d.source.clone()).or_default().documents += 1;
                        // Text bytes read: the stage's input volume (the report's MB in and MB/s).
                        p.report.source(&d.source).bytes_in += d.text.len() as u64;
                        if d.text.is_empty() {
                            p.report.filtered(&d.source, EMPTY);
                        } else if copies == 0 {
                            p.report.filtered(&d.source, SAMPLED_OUT);
                        } else {
                            p.report.kept(&d.source, d.text.len() as u64);
                        }
                    }
                    if copies > pass {
                        chosen.push(d);
                    }
                }
                let texts: Vec<&str> = chosen.iter().map(|d| d.text.as_str()).collect();
                ids_buf.clear();
                match tokenizer.encode_batch(&texts) {
                    Ok(v) => ids_buf = v,
                    Err(e) => {
                        // HF errors are rare and per text; find them one by one.
                        for (k, d) in chosen.iter().enumerate() {
                            match tokenizer.encode(&d.text) {
                                Ok(ids) => ids_buf.push(ids),
                                Err(err) => {
                                    let at = Position::new(format!("{}#{}", path.display(), first + k as u64), None, None);
                                    if pass == 0 {
                                        p.report.error(&d.source, &ReadError::new(at, ReadErrorKind::Tokenize, err.to_string()));
                                    }
                                    ids_buf.push(Vec::new());
                                    tracing::warn!("{e}");
                                }
                            }
                        }
                    }
                }
                for (d, ids) in chosen.iter().zip(&ids_buf) {
                    let st = p.stats.sources.entry(d.source.clone()).or_default();
                    st.packed += 1;
                    st.tokens += ids.len() as u64 + 1;
                    match &mut p.packer {
                        Packer::Cpt(c) => c.push(ids, &d.source, &mut chunk),
                        Packer::Whole(bf) => {
                            let mut full = Vec::with_capacity(ids.len() + 1);
                            full.extend_from_slice(ids);
                            full.push(eos);
                            if full.len() > cfg.seq_len {
                                st.split += 1;
                            }
                            bf.push(&Example { ids: full, loss_mask: None, source: d.source.clone(), stage: None }, &mut chunk);
                        }
                    }
                }
                if chunk.len() >= cfg.shuffle.chunk_rows {
                    flush_chunk(cfg, tmp, &mut chunk, p)?;
                    p.pos = Pos { pass, file: fi, doc: done };
                    save_progress(out_dir, p)?;
                }
            }
        }
    }
    // The end of the stream: the partial row (CPT) or the open rows (whole mode).
    let packer = std::mem::replace(&mut p.packer, Packer::Cpt(CptPacker::new(cfg.seq_len, eos)));
    match packer {
        Packer::Cpt(c) => chunk.extend(c.finish(eos)),
        Packer::Whole(bf) => bf.finish(&mut chunk),
    }
    if !chunk.is_empty() {
        flush_chunk(cfg, tmp, &mut chunk, p)?;
    }
    p.pos = Pos { pass: passes, file: 0, doc: 0 };
    p.interleave = Some(Interleaver::new(tmp, p.chunks.clone(), cfg.seed, cfg.shuffle.enabled, None)?.state().clone());
    save_progress(out_dir, p)
}

fn flush_chunk(cfg: &PackConfig, tmp: &Path, chunk: &mut Vec<Row>, p: &mut Progress) -> Result<()> {
    for r in chunk.iter() {
        p.stats.rows += 1;
        p.stats.padding += (cfg.seq_len - r.real_tokens()) as u64;
    }
    let info = write_chunk(tmp, p.chunks.len(), chunk, cfg.seed, cfg.shuffle.enabled)?;
    tracing::info!("pack: chunk {} ({} rows)", p.chunks.len(), info.rows);
    p.chunks.push(info);
    Ok(())
}

fn interleave_all(cfg: &PackConfig, tmp: &Path, out_dir: &Path, p: &mut Progress) -> Result<()> {
    let cols = Columns::default();
    let mut il = Interleaver::new(tmp, p.chunks.clone(), cfg.seed, cfg.shuffle.enabled, p.interleave.clone())?;
    let group = cfg.writer.row_group_rows.max(1);
    while il.remaining() > 0 {
        let path = out_dir.join(shard_name(p.shards.len()));
        let mut w = ShardWriter::create(&path, tokens::schema(cols), &cfg.writer)?;
        let mut in_shard = 0usize;
        let mut real = 0u64;
        let mut buf: Vec<Row> = Vec::with_capacity(group);
        while in_shard < cfg.rows_per_shard {
            let Some(row) = il.next_row()? else { break };
            real += row.real_tokens() as u64;
            buf.push(row);
            in_shard += 1;
            if buf.len() == group {
                w.write(&tokens::to_batch(&buf, cols))?;
                buf.clear();
            }
        }
        if !buf.is_empty() {
            w.write(&tokens::to_batch(&buf, cols))?;
        }
        let mut info = w.finish()?;
        info.tokens = Some(real);
        p.shards.push(info);
        p.interleave = Some(il.state().clone());
        save_progress(out_dir, p)?;
    }
    Ok(())
}

/// Shard file name of token shard `n`.
pub fn shard_name(n: usize) -> String {
    format!("part-{n:05}.parquet")
}

thread_local! {
    /// Test hook: fail the build after this many progress saves on this thread (0 = never).
    static INTERRUPT_AFTER: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Test hook (resume tests): the next builds on this thread stop with an error right after
/// their `n`-th progress save, as a killed process would; 0 turns it off.
#[doc(hidden)]
pub fn interrupt_after_saves(n: u64) {
    INTERRUPT_AFTER.with(|c| c.set(n));
}

fn save_progress(dir: &Path, p: &Progress) -> Result<()> {
    let bytes = serde_json::to_vec(p).expect("progress serializes");
    crate::core::fsio::write_atomic(&dir.join("progress.json"), &bytes)?;
    INTERRUPT_AFTER.with(|c| match c.get() {
        0 => Ok(()),
        1 => {
            c.set(0);
            Err(Error::Other("interrupted (test hook)".into()))
        }
        n => {
            c.set(n - 1);
            Ok(())
        }
    })
}

fn load_progress(dir: &Path, config_hash: &str) -> Option<Progress> {
    let bytes = std::fs::read(dir.join("progress.json")).ok()?;
    let p: Progress = serde_json::from_slice(&bytes).ok()?;
    if p.config_hash != config_hash {
        tracing::warn!("{}: config or inputs changed since the interrupted run; starting over", dir.display());
        return None;
    }
    let ok = |path: PathBuf, bytes: u64| std::fs::metadata(path).is_ok_and(|m| m.len() == bytes);
    if !p.chunks.iter().all(|c| ok(dir.join(TMP_DIR).join(&c.file), c.bytes)) || !p.shards.iter().all(|s| ok(dir.join(&s.file), s.bytes)) {
        tracing::warn!("{}: files of the interrupted run are missing or changed; starting over", dir.display());
        return None;
    }
    Some(p)
}

/// Removes what an earlier run left beyond the first `keep` shards and the listed chunks.
fn clean_stale(dir: &Path, keep: usize, chunks: Option<&[ChunkInfo]>) -> Result<()> {
    for e in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        let stale = if name.ends_with(".tmp") {
            true
        } else if let Some(n) = name.strip_prefix("part-").and_then(|r| r.strip_suffix(".parquet")).and_then(|n| n.parse::<usize>().ok()) {
            n >= keep
        } else {
            matches!(name.as_str(), "manifest.json" | "report.json") || (chunks.is_none() && name == "progress.json")
        };
        if stale {
            std::fs::remove_file(e.path()).map_err(|err| Error::io(e.path(), err))?;
        }
    }
    let tmp = dir.join(TMP_DIR);
    if let Ok(rd) = std::fs::read_dir(&tmp) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if !chunks.is_some_and(|c| c.iter().any(|c| c.file == name)) {
                std::fs::remove_file(e.path()).map_err(|err| Error::io(e.path(), err))?;
            }
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn build_manifest(
    cfg: &PackConfig,
    tokenizer: &Tokenizer,
    eos: u32,
    mixture: &Mixture,
    files: &[PathBuf],
    stats: &PackStats,
    report: &RunReport,
    shards: Vec<ShardInfo>,
    chunks: usize,
    config_hash: String,
    task: TaskSplit,
) -> Manifest {
    let total: u64 = stats.sources.values().map(|s| s.tokens).sum();
    let sources: serde_json::Map<String, serde_json::Value> = stats
        .sources
        .iter()
        .map(|(k, s)| {
            let share = if total > 0 { s.tokens as f64 / total as f64 } else { 0.0 };
            (k.clone(), serde_json::json!({ "weight": mixture.weight(k), "documents": s.documents, "packed": s.packed, "tokens": s.tokens, "split": s.split, "token_share": share }))
        })
        .collect();
    let inputs: Vec<serde_json::Value> = cfg
        .inputs
        .iter()
        .map(|d| serde_json::json!({ "dir": d.display().to_string(), "config_hash": Manifest::load(d).map(|m| m.config_hash).unwrap_or_default() }))
        .collect();
    let mut m = Manifest {
        kind: "tokens".into(),
        tool_version: env!("CARGO_PKG_VERSION").into(),
        config_hash,
        shards,
        info: Default::default(),
        accounting: report.accounting(),
    };
    let info = &mut m.info;
    info.insert("tokenizer".into(), tokenizer.name().into());
    info.insert("tokenizer_sha256".into(), tokenizer.sha256().into());
    info.insert("seq_len".into(), cfg.seq_len.into());
    info.insert("mode".into(), serde_json::to_value(cfg.mode).expect("mode serializes"));
    info.insert("eos_id".into(), eos.into());
    info.insert("pad_id".into(), eos.into());
    info.insert("seed".into(), cfg.seed.into());
    info.insert("rows".into(), stats.rows.into());
    info.insert("tokens".into(), total.into());
    info.insert("padding_tokens".into(), stats.padding.into());
    info.insert("sources".into(), sources.into());
    info.insert("columns".into(), serde_json::json!(["input_ids", "seg_lens", "source"]));
    info.insert(
        "shuffle".into(),
        serde_json::json!({ "enabled": cfg.shuffle.enabled, "chunk_rows": cfg.shuffle.chunk_rows, "chunks": chunks, "scheme": "chunks shuffled in memory, then interleaved with probability proportional to the rows left (uniform permutation)" }),
    );
    info.insert("inputs".into(), inputs.into());
    info.insert("input_shards".into(), files.len().into());
    info.insert("task_index".into(), task.index.into());
    info.insert("task_count".into(), task.count.into());
    m
}
