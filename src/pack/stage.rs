//! The `pack` stage: document shards → tokenize → pack → shuffle → token shards + manifest.
//!
//! Pass 1 streams the documents (shard by shard, `batch_docs` at a time, once per mixture
//! pass), tokenizes each batch in parallel (order kept), packs sequentially and collects rows
//! into shuffle chunks written to `OUTPUT/.pack-tmp/`. Pass 2 interleaves the chunks into the
//! output shards (see [`super::shuffle`]). After every chunk and every output shard,
//! `.progress.json` records where the build stands (input position, the packer's partial row,
//! counts, chunk list, interleave state); a killed build resumes from there and ends with
//! byte-identical shards. Nothing depends on the thread count, nor on where the input shards
//! are cut: documents are batched across shard boundaries, so a corpus built by any number of
//! `docs` tasks (merged) packs to the same bytes. The output folder, the fingerprint (config,
//! tokenizer content, every input shard's content), up-to-date and resume decisions belong to
//! [`crate::stage`]; every input shard is checked against its manifest before it is read.
//!
//! With `[pack.validation]` the stage runs twice over the same inputs: once for the training
//! part (`output`), once for the held-out part (its own directory, see [`super::holdout`]); each
//! part is a complete build with its own manifest, report and resume state, and counts the
//! other part's documents as filtered (`validation-split` / `train-split`).

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::bestfit::{BestFit, Example};
use super::cpt::CptPacker;
use super::holdout::{self, Part};
use super::mixture::Mixture;
use super::shuffle::{write_chunk, ChunkInfo, InterleaveState, Interleaver};
use super::{PackConfig, PackMode};
use crate::core::{Fingerprint, RunOptions, RunReport, TaskSplit};
use crate::doc::Document;
use crate::error::{Error, Position, ReadError, ReadErrorKind, Result};
use crate::shard::manifest::{verified_shards, InputShard};
use crate::shard::tokens::{self, Columns, Row};
use crate::shard::{documents, Manifest, ShardInfo, ShardWriter};
use crate::stage::{Stage, StageSpec, PROGRESS_FILE};
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

/// Input position: mixture pass, documents of the pass done (counted over all input shards).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Pos {
    pass: u32,
    doc: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Progress {
    /// None while packing; Some once every input is packed and chunked.
    interleave: Option<InterleaveState>,
    pos: Pos,
    packer: Packer,
    chunks: Vec<ChunkInfo>,
    stats: PackStats,
    report: RunReport,
    shards: Vec<ShardInfo>,
}

/// The document shards of the inputs for this task, in order, each checked against its
/// folder's manifest (rows, size, checksum) before anything is read.
fn input_files(cfg: &PackConfig, task: TaskSplit) -> Result<Vec<InputShard>> {
    let mut all = Vec::new();
    for dir in &cfg.inputs {
        if !dir.is_dir() {
            return Err(Error::Other(format!("{}: input is not a directory of document shards", dir.display())));
        }
        all.extend(verified_shards(dir)?);
    }
    if all.is_empty() {
        return Err(Error::Other(format!("pack: no document shards in {:?}", cfg.inputs)));
    }
    Ok(all.into_iter().enumerate().filter(|(i, _)| task.owns(*i)).map(|(_, p)| p).collect())
}

/// Runs the pack stage for one task; returns the report of the training part (each part's is
/// also written to its `.report.json`).
pub fn run(cfg: &PackConfig, task: TaskSplit) -> Result<RunReport> {
    run_with(cfg, &RunOptions::from(task), None)
}

/// [`run`] with options and an already loaded tokenizer (it must be the one `cfg.tokenizer`
/// names).
pub fn run_with(cfg: &PackConfig, opts: &RunOptions, tokenizer: Option<&Tokenizer>) -> Result<RunReport> {
    let Some(split) = &cfg.validation else { return run_part(cfg, opts, tokenizer, Part::Train) };
    let loaded;
    let tokenizer = match tokenizer {
        Some(t) => t,
        None => {
            loaded = Tokenizer::load(&cfg.tokenizer)?;
            &loaded
        }
    };
    let report = run_part(cfg, opts, Some(tokenizer), Part::Train)?;
    let val = run_part(cfg, opts, Some(tokenizer), Part::Validation)?;
    tracing::info!("pack: validation split: {} documents packed into {}", val.total().kept, split.output_of(&cfg.output).display());
    Ok(report)
}

/// One part of the build: `Part::Train` writes `cfg.output`, `Part::Validation` the validation
/// directory; without `[pack.validation]` only the training part exists and holds everything.
fn run_part(cfg: &PackConfig, opts: &RunOptions, tokenizer: Option<&Tokenizer>, part: Part) -> Result<RunReport> {
    let task = opts.task;
    cfg.validate()?;
    let output = match (part, &cfg.validation) {
        (Part::Validation, Some(v)) => v.output_of(&cfg.output),
        _ => cfg.output.clone(),
    };
    let mut st = Stage::open(StageSpec {
        name: "pack",
        kind: "tokens",
        dir: task.output_dir(&output),
        output,
        inputs: cfg.inputs.clone(),
        force: opts.force,
    })?;
    let files = input_files(cfg, task)?;
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

    // The engine does not change the ids, so it is not part of the fingerprint; the
    // tokenizer's content is.
    let mut c = cfg.clone();
    c.tokenizer.engine = Default::default();
    let digests: Vec<_> = files.iter().map(|f| (&f.digest, f.rows)).collect();
    st.set_fingerprint(
        &Fingerprint::new()
            .with("config", &c)
            .with("part", &part)
            .with("tokenizer_sha256", tokenizer.sha256())
            .with("task", &task)
            .with("inputs", &digests),
    );
    if let Some(mut r) = st.up_to_date::<RunReport>() {
        r.elapsed_s = st.elapsed_s();
        return Ok(r);
    }
    let tmp = st.dir().join(TMP_DIR);
    let resumed = st.resume::<Progress>().filter(|p| {
        let ok = |path: std::path::PathBuf, bytes: u64| std::fs::metadata(path).is_ok_and(|m| m.len() == bytes);
        let intact =
            p.chunks.iter().all(|c| ok(tmp.join(&c.file), c.bytes)) && p.shards.iter().all(|s| ok(st.dir().join(&s.file), s.bytes));
        if !intact {
            tracing::warn!("{}: files of the interrupted run are missing or changed; starting over", st.dir().display());
        }
        intact
    });
    let mut p = match resumed {
        Some(p) => {
            tracing::info!("{}: resuming ({} chunks, {} shards done)", st.dir().display(), p.chunks.len(), p.shards.len());
            st.clean(|n| n == PROGRESS_FILE || n == TMP_DIR_CLAIM || p.shards.iter().any(|s| s.file == n))?;
            // Chunks of the temp folder (ours) that the progress does not list.
            if let Ok(rd) = std::fs::read_dir(&tmp) {
                for e in rd.flatten() {
                    let name = e.file_name().to_string_lossy().to_string();
                    if !p.chunks.iter().any(|c| c.file == name) {
                        std::fs::remove_file(e.path()).map_err(|err| Error::io(e.path(), err))?;
                    }
                }
            }
            p
        }
        None => {
            st.clean(|_| false)?;
            let packer = match cfg.mode {
                PackMode::Cpt => Packer::Cpt(CptPacker::new(cfg.seq_len, eos)),
                PackMode::Whole => Packer::Whole(BestFit::new(cfg.seq_len, eos, cfg.open_bins, false)),
            };
            Progress {
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
    st.claim(TMP_DIR_CLAIM)?;
    st.claim(&shard_name(p.shards.len()))?;
    st.save_progress(&p)?;
    std::fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;

    if p.interleave.is_none() {
        pack_all(cfg, &files, &tokenizer, &mixture, eos, &tmp, &st, part, &mut p)?;
    }
    interleave_all(cfg, &tmp, &st, &mut p)?;

    let Progress { stats, mut report, shards, chunks, .. } = p;
    report.elapsed_s = st.elapsed_s();
    let mut manifest = build_manifest(cfg, &tokenizer, eos, &mixture, &files, &stats, &report, shards, chunks.len(), task);
    if let Some(v) = &cfg.validation {
        manifest.info.insert("split".into(), part.as_str().into());
        manifest.info.insert(
            "validation".into(),
            serde_json::json!({
                "fraction": v.fraction,
                "seed": v.seed_or(cfg.seed),
                "draw": "document held out when unit(hash(seed, id)) < fraction (src/pack/holdout.rs)",
                "train_output": cfg.output.display().to_string(),
                "validation_output": v.output_of(&cfg.output).display().to_string(),
            }),
        );
    }
    st.finish(manifest, &report)?;
    Ok(report)
}

/// The temp folder as an ownership claim (the whole folder is the stage's).
const TMP_DIR_CLAIM: &str = ".pack-tmp/";

/// A document with where it came from (input shard, row in it), for error positions.
struct Doc {
    doc: Document,
    file: usize,
    row: u64,
}

#[allow(clippy::too_many_arguments)]
fn pack_all(
    cfg: &PackConfig,
    files: &[InputShard],
    tokenizer: &Tokenizer,
    mixture: &Mixture,
    eos: u32,
    tmp: &Path,
    st: &Stage,
    part: Part,
    p: &mut Progress,
) -> Result<()> {
    let passes = mixture.passes();
    let mut chunk: Vec<Row> = Vec::new();
    let start = p.pos;
    let mut ids_buf: Vec<Vec<u32>> = Vec::new();
    let batch = cfg.batch_docs;
    for pass in start.pass..passes {
        let skip = if pass == start.pass { start.doc } else { 0 };
        // Batches are cut every `batch_docs` documents of the pass, across input shards, so
        // where the shards end changes nothing.
        // Grows with the documents read, not with the configured batch size (which may be huge:
        // tests/config_extremes.rs, batch_docs = 2^63-1 panicked with a capacity overflow).
        let mut pending: Vec<Doc> = Vec::new();
        let mut done: u64 = 0;
        for (fi, f) in files.iter().enumerate() {
            if done + f.rows <= skip {
                done += f.rows;
                continue;
            }
            let mut row: u64 = 0;
            for docs in documents::read_shard(&f.path, batch)? {
                for doc in docs? {
                    let here = row;
                    row += 1;
                    done += 1;
                    if done <= skip {
                        continue;
                    }
                    pending.push(Doc { doc, file: fi, row: here });
                    if pending.len() == batch {
                        pack_batch(cfg, files, tokenizer, mixture, eos, pass, part, &pending, &mut ids_buf, &mut chunk, p);
                        pending.clear();
                        if chunk.len() >= cfg.shuffle.chunk_rows {
                            flush_chunk(cfg, tmp, &mut chunk, p)?;
                            p.pos = Pos { pass, doc: done };
                            st.save_progress(p)?;
                        }
                    }
                }
            }
        }
        if !pending.is_empty() {
            pack_batch(cfg, files, tokenizer, mixture, eos, pass, part, &pending, &mut ids_buf, &mut chunk, p);
            pending.clear();
            if chunk.len() >= cfg.shuffle.chunk_rows {
                flush_chunk(cfg, tmp, &mut chunk, p)?;
                p.pos = Pos { pass, doc: done };
                st.save_progress(p)?;
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
    p.pos = Pos { pass: passes, doc: 0 };
    p.interleave = Some(Interleaver::new(tmp, p.chunks.clone(), cfg.seed, cfg.shuffle.enabled, None)?.state().clone());
    st.save_progress(p)
}

/// Decides, tokenizes (in parallel, order kept) and packs one batch of documents.
#[allow(clippy::too_many_arguments)]
fn pack_batch(
    cfg: &PackConfig,
    files: &[InputShard],
    tokenizer: &Tokenizer,
    mixture: &Mixture,
    eos: u32,
    pass: u32,
    part: Part,
    docs: &[Doc],
    ids_buf: &mut Vec<Vec<u32>>,
    chunk: &mut Vec<Row>,
    p: &mut Progress,
) {
    let mut chosen: Vec<&Doc> = Vec::with_capacity(docs.len());
    let other_part = cfg.validation.as_ref().map(|v| (v, if part == Part::Train { holdout::HELD_OUT } else { holdout::TRAINING }));
    for d in docs {
        let doc = &d.doc;
        let elsewhere = other_part.filter(|(v, _)| !v.in_part(cfg.seed, &doc.id, part)).map(|(_, bucket)| bucket);
        let copies = if doc.text.is_empty() || elsewhere.is_some() { 0 } else { mixture.copies(&doc.source, &doc.id) };
        if pass == 0 {
            p.stats.sources.entry(doc.source.clone()).or_default().documents += 1;
            // Text bytes read: the stage's input volume (the report's MB in and MB/s).
            p.report.source(&doc.source).bytes_in += doc.text.len() as u64;
            if doc.text.is_empty() {
                p.report.filtered(&doc.source, EMPTY);
            } else if let Some(bucket) = elsewhere {
                p.report.filtered(&doc.source, bucket);
            } else if copies == 0 {
                p.report.filtered(&doc.source, SAMPLED_OUT);
            } else {
                p.report.kept(&doc.source, doc.text.len() as u64);
            }
        }
        if copies > pass {
            chosen.push(d);
        }
    }
    let texts: Vec<&str> = chosen.iter().map(|d| d.doc.text.as_str()).collect();
    ids_buf.clear();
    match tokenizer.encode_batch(&texts) {
        Ok(v) => *ids_buf = v,
        Err(e) => {
            // HF errors are rare and per text; find them one by one.
            for d in &chosen {
                match tokenizer.encode(&d.doc.text) {
                    Ok(ids) => ids_buf.push(ids),
                    Err(err) => {
                        let at = Position::new(format!("{}#{}", files[d.file].path.display(), d.row), None, None);
                        if pass == 0 {
                            p.report.error(&d.doc.source, &ReadError::new(at, ReadErrorKind::Tokenize, err.to_string()));
                        }
                        ids_buf.push(Vec::new());
                        tracing::warn!("{e}");
                    }
                }
            }
        }
    }
    for (d, ids) in chosen.iter().zip(ids_buf.iter()) {
        let d = &d.doc;
        let st = p.stats.sources.entry(d.source.clone()).or_default();
        st.packed += 1;
        st.tokens += ids.len() as u64 + 1;
        match &mut p.packer {
            Packer::Cpt(c) => c.push(ids, &d.source, chunk),
            Packer::Whole(bf) => {
                let mut full = Vec::with_capacity(ids.len() + 1);
                full.extend_from_slice(ids);
                full.push(eos);
                if full.len() > cfg.seq_len {
                    st.split += 1;
                }
                bf.push(&Example { ids: full, loss_mask: None, source: d.source.clone(), stage: None }, chunk);
            }
        }
    }
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

fn interleave_all(cfg: &PackConfig, tmp: &Path, st: &Stage, p: &mut Progress) -> Result<()> {
    let cols = Columns::default();
    let mut il = Interleaver::new(tmp, p.chunks.clone(), cfg.seed, cfg.shuffle.enabled, p.interleave.clone())?;
    let group = cfg.writer.row_group_rows.max(1);
    while il.remaining() > 0 {
        // Claimed (and saved) with the previous progress.
        let path = st.dir().join(shard_name(p.shards.len()));
        let mut w = ShardWriter::create(&path, tokens::schema(cols), &cfg.writer)?;
        let mut in_shard = 0usize;
        let mut real = 0u64;
        // Grows with the rows read, not with the configured group size (which may be huge).
        let mut buf: Vec<Row> = Vec::new();
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
        st.claim(&shard_name(p.shards.len()))?;
        st.save_progress(p)?;
    }
    Ok(())
}

/// Test hook (resume tests; only with the `test-hooks` feature): the next builds on this thread
/// stop with an error right after their `n`-th progress save, as a killed process would.
#[cfg(feature = "test-hooks")]
pub use crate::stage::test_hooks::interrupt_after_saves;

/// Shard file name of token shard `n`.
pub fn shard_name(n: usize) -> String {
    format!("part-{n:05}.parquet")
}

#[allow(clippy::too_many_arguments)]
fn build_manifest(
    cfg: &PackConfig,
    tokenizer: &Tokenizer,
    eos: u32,
    mixture: &Mixture,
    files: &[InputShard],
    stats: &PackStats,
    report: &RunReport,
    shards: Vec<ShardInfo>,
    chunks: usize,
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
        shards,
        accounting: report.accounting(),
        ..Default::default()
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
