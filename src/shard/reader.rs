//! The streaming loader the trainer reads: [`Batch`]es from token shard directories, in a
//! seeded order, split across ranks, over several epochs and curriculum stages, with a cursor
//! that saves and restores exactly.
//!
//! **Order.** For stage `k` and epoch `e` the stage's rows (its directories concatenated, shards
//! in manifest order) form blocks — the Parquet row groups, the unit of reading. The blocks
//! are visited in a seeded order and the rows of each block in a seeded order, both keyed by
//! (seed, stage, epoch) and computed by keyed bijections ([`crate::core::rng::Permutation`]), so
//! no per-row table is kept. (The pack stage already shuffled rows globally; this re-orders
//! them per epoch while reading one row group at a time.)
//!
//! **Replay.** In stages after the first, a share `replay` of the positions holds rows of
//! earlier stages: position `p` is a replay slot iff `⌊(p+1)ρ⌋ > ⌊pρ⌋`; replay slot `j` takes
//! row `π(j mod M)` of the `M` rows of all earlier stages (a keyed bijection per stage and
//! epoch). Every row of the stage itself still comes exactly once per epoch.
//!
//! **Ranks.** Global step `s` covers positions `[s·W·B, (s+1)·W·B)`; rank `r` takes the `B`
//! positions starting at `s·W·B + r·B`. The last step of an epoch may be partial: its `R`
//! positions are split as evenly as possible (ranks get `⌊R/W⌋` or one more, possibly 0 —
//! a batch with `batch == 0`), so every rank runs the same number of steps and every row is
//! read exactly once per epoch by exactly one rank. With `drop_last` the partial step is
//! skipped instead (a gap, by request).
//!
//! **Cursor.** `(stage, epoch, step)` of the next batch plus a fingerprint of the data and
//! the settings that define the order; it is the same on every rank. [`Loader::state`] gives
//! it as JSON, [`Loader::restore`] continues from it with exactly the batches that would have
//! followed.
//!
//! **Memory.** One decoded row group per cache slot (a few), the prefetch queue, and per stage
//! the list of row groups; nothing per row.

use std::collections::VecDeque;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::batch::Batch;
use super::tokens::TokenBatch;
use super::Manifest;
use crate::core::rng::{hash_words, Permutation};
use crate::error::{Error, Result};

/// Decoded row groups kept (the current block plus replay sources).
const BLOCK_CACHE: usize = 4;
/// `replay` is applied in parts per million (integer arithmetic keeps positions exact).
const PPM: u64 = 1_000_000;
/// Version of the cursor format.
const STATE_VERSION: u64 = 1;

/// Loader settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct LoaderConfig {
    /// Curriculum stages in order; each is one or more token shard directories whose rows are
    /// taken together. A single stage is the plain (CPT) case.
    pub stages: Vec<Vec<PathBuf>>,
    /// Rows per batch on each rank.
    pub batch_size: usize,
    /// Seed of the order.
    pub seed: u64,
    /// Passes over each stage.
    pub epochs: u32,
    /// This process's rank.
    pub rank: usize,
    /// Number of ranks.
    pub world_size: usize,
    /// Batches prepared ahead on a background thread (0: none, read on the caller's thread).
    pub prefetch: usize,
    /// Share of positions in stages after the first given to rows of earlier stages (0 ≤ replay < 1).
    pub replay: f64,
    /// Skip the last, partial step of each epoch instead of splitting it unevenly.
    pub drop_last: bool,
}

impl Default for LoaderConfig {
    fn default() -> Self {
        Self { stages: Vec::new(), batch_size: 8, seed: 0, epochs: 1, rank: 0, world_size: 1, prefetch: 4, replay: 0.0, drop_last: false }
    }
}

impl LoaderConfig {
    /// One stage from one directory.
    pub fn single(dir: impl Into<PathBuf>, batch_size: usize) -> Self {
        Self { stages: vec![vec![dir.into()]], batch_size, ..Self::default() }
    }
}

/// Where the loader stands: the next batch to yield.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    /// Stage index.
    pub stage: usize,
    /// Epoch within the stage.
    pub epoch: u32,
    /// Global step within the epoch.
    pub step: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct State {
    version: u64,
    fingerprint: String,
    cursor: Cursor,
}

/// One row group of one shard.
#[derive(Debug, Clone)]
struct Block {
    file: usize,
    group: usize,
    rows: u64,
}

struct StageIndex {
    blocks: Vec<Block>,
    /// Start row of each block in the natural order.
    starts: Vec<u64>,
    rows: u64,
}

impl StageIndex {
    /// (block, offset) of natural row `i`.
    fn locate(&self, i: u64) -> (usize, u64) {
        let b = self.starts.partition_point(|&s| s <= i) - 1;
        (b, i - self.starts[b])
    }
}

struct ShardFile {
    path: PathBuf,
    meta: ArrowReaderMetadata,
}

/// The order of one (stage, epoch): permuted blocks with their start positions.
struct EpochPlan {
    stage: usize,
    epoch: u32,
    order: Vec<usize>,
    starts: Vec<u64>,
    /// Positions in the epoch (stage rows + replay slots).
    len: u64,
    replay_ppm: u64,
    replay_pool: u64,
}

/// Produces batches: everything but the prefetch thread.
struct Producer {
    cfg: LoaderConfig,
    seq_len: usize,
    files: Vec<ShardFile>,
    stages: Vec<StageIndex>,
    cursor: Cursor,
    plan: Option<EpochPlan>,
    cache: VecDeque<((usize, usize), Arc<TokenBatch>)>,
    /// (file name, rows, sha256) of every shard, from the manifests: identifies the data
    /// wherever it is mounted.
    identity: Vec<(String, u64, String)>,
}

fn other(m: impl Into<String>) -> Error {
    Error::Other(m.into())
}

impl Producer {
    fn open(cfg: LoaderConfig) -> Result<Producer> {
        if cfg.stages.is_empty() || cfg.stages.iter().any(|s| s.is_empty()) {
            return Err(other("loader: no token shard directories given (stages is empty or has an empty stage)"));
        }
        if cfg.batch_size == 0 || cfg.world_size == 0 || cfg.rank >= cfg.world_size {
            return Err(other(format!(
                "loader: batch_size {} and world_size {} must be positive and rank {} below world_size",
                cfg.batch_size, cfg.world_size, cfg.rank
            )));
        }
        if !(0.0..1.0).contains(&cfg.replay) {
            return Err(other(format!("loader: replay {} must be in [0, 1)", cfg.replay)));
        }
        let mut files = Vec::new();
        let mut identity = Vec::new();
        let mut stages = Vec::new();
        let mut seq_len: Option<(usize, PathBuf)> = None;
        for dirs in &cfg.stages {
            let mut blocks = Vec::new();
            for dir in dirs {
                let m = Manifest::load(dir)?;
                if m.kind != "tokens" && m.kind != "sft" {
                    return Err(other(format!("{}: manifest kind {:?} is not a token shard set", dir.display(), m.kind)));
                }
                if let Some(sl) = m.info.get("seq_len").and_then(|v| v.as_u64()) {
                    match &seq_len {
                        None => seq_len = Some((sl as usize, dir.clone())),
                        Some((s, d)) if *s != sl as usize => {
                            return Err(other(format!("{}: seq_len {sl} differs from {} in {}", dir.display(), s, d.display())));
                        }
                        _ => {}
                    }
                }
                for s in &m.shards {
                    identity.push((s.file.clone(), s.rows, s.sha256.clone()));
                    let path = dir.join(&s.file);
                    let file = File::open(&path).map_err(|e| Error::io(&path, e))?;
                    let meta = ArrowReaderMetadata::load(&file, ArrowReaderOptions::new())
                        .map_err(|e| Error::Shard { path: path.clone(), message: e.to_string() })?;
                    let groups = meta.metadata().row_groups();
                    let total: i64 = groups.iter().map(|g| g.num_rows()).sum();
                    if total as u64 != s.rows {
                        return Err(Error::Shard { path, message: format!("{total} rows, the manifest says {}", s.rows) });
                    }
                    for (g, rg) in groups.iter().enumerate() {
                        if rg.num_rows() > 0 {
                            blocks.push(Block { file: files.len(), group: g, rows: rg.num_rows() as u64 });
                        }
                    }
                    files.push(ShardFile { path, meta });
                }
            }
            let mut starts = Vec::with_capacity(blocks.len());
            let mut rows = 0;
            for b in &blocks {
                starts.push(rows);
                rows += b.rows;
            }
            stages.push(StageIndex { blocks, starts, rows });
        }
        let mut producer = Producer {
            cfg,
            seq_len: 0,
            files,
            stages,
            cursor: Cursor { stage: 0, epoch: 0, step: 0 },
            plan: None,
            cache: VecDeque::new(),
            identity,
        };
        producer.seq_len = match seq_len {
            Some((s, _)) => s,
            // A manifest without seq_len (e.g. merged from task outputs): the first row tells.
            None => match producer.stages.iter().position(|s| !s.blocks.is_empty()) {
                Some(st) => producer.block(st, 0)?.ids(0).len(),
                None => return Err(other(format!("loader: no rows and no seq_len in the manifests of {:?}", producer.cfg.stages))),
            },
        };
        Ok(producer)
    }

    /// Identifies the data and every setting that defines the order (not the rank).
    fn fingerprint(&self) -> String {
        let c = &self.cfg;
        crate::core::hash_of(&(
            &self.identity,
            c.stages.iter().map(|s| s.len()).collect::<Vec<_>>(),
            c.batch_size,
            c.seed,
            c.epochs,
            c.world_size,
            (c.replay * PPM as f64).round() as u64,
            c.drop_last,
        ))
    }

    fn plan(&mut self, stage: usize, epoch: u32) -> &EpochPlan {
        if self.plan.as_ref().is_none_or(|p| p.stage != stage || p.epoch != epoch) {
            let idx = &self.stages[stage];
            let key = hash_words(self.cfg.seed, &[1, stage as u64, epoch as u64]);
            let perm = Permutation::new(idx.blocks.len() as u64, key);
            let order: Vec<usize> = (0..idx.blocks.len() as u64).map(|i| perm.apply(i) as usize).collect();
            let mut starts = Vec::with_capacity(order.len());
            let mut at = 0;
            for &b in &order {
                starts.push(at);
                at += idx.blocks[b].rows;
            }
            let replay_pool: u64 = self.stages[..stage].iter().map(|s| s.rows).sum();
            let replay_ppm = if stage > 0 && replay_pool > 0 { (self.cfg.replay * PPM as f64).round() as u64 } else { 0 };
            let len = positions_for(idx.rows, replay_ppm);
            self.plan = Some(EpochPlan { stage, epoch, order, starts, len, replay_ppm, replay_pool });
        }
        self.plan.as_ref().expect("plan set")
    }

    fn steps(&mut self, stage: usize, epoch: u32) -> u64 {
        let per_step = (self.cfg.world_size * self.cfg.batch_size) as u64;
        let len = self.plan(stage, epoch).len;
        if self.cfg.drop_last {
            len / per_step
        } else {
            len.div_ceil(per_step)
        }
    }

    /// Moves the cursor to the next existing step (skipping empty stages/epochs); false at the end.
    fn settle(&mut self) -> bool {
        loop {
            if self.cursor.stage >= self.stages.len() {
                return false;
            }
            if self.cursor.epoch >= self.cfg.epochs {
                self.cursor = Cursor { stage: self.cursor.stage + 1, epoch: 0, step: 0 };
                continue;
            }
            if self.cursor.step >= self.steps(self.cursor.stage, self.cursor.epoch) {
                self.cursor = Cursor { epoch: self.cursor.epoch + 1, step: 0, ..self.cursor };
                continue;
            }
            return true;
        }
    }

    /// (stage, natural row) at position `p` of the current plan.
    fn row_at(&self, p: u64) -> (usize, u64) {
        let plan = self.plan.as_ref().expect("plan set");
        let ppm = plan.replay_ppm;
        if ppm > 0 && ((p + 1) as u128 * ppm as u128 / PPM as u128) > (p as u128 * ppm as u128 / PPM as u128) {
            let j = (p as u128 * ppm as u128 / PPM as u128) as u64;
            let key = hash_words(self.cfg.seed, &[2, plan.stage as u64, plan.epoch as u64]);
            let mut r = Permutation::new(plan.replay_pool, key).apply(j % plan.replay_pool);
            for (s, idx) in self.stages.iter().enumerate() {
                if r < idx.rows {
                    return (s, r);
                }
                r -= idx.rows;
            }
            unreachable!("replay row within the pool");
        }
        let q = p - (p as u128 * ppm as u128 / PPM as u128) as u64;
        let j = plan.starts.partition_point(|&s| s <= q) - 1;
        let b = plan.order[j];
        let idx = &self.stages[plan.stage];
        let o = q - plan.starts[j];
        let key = hash_words(self.cfg.seed, &[3, plan.stage as u64, plan.epoch as u64, b as u64]);
        let o = Permutation::new(idx.blocks[b].rows, key).apply(o);
        (plan.stage, idx.starts[b] + o)
    }

    fn block(&mut self, stage: usize, b: usize) -> Result<Arc<TokenBatch>> {
        let block = &self.stages[stage].blocks[b];
        let id = (block.file, block.group);
        if let Some(pos) = self.cache.iter().position(|(k, _)| *k == id) {
            let hit = self.cache.remove(pos).expect("present");
            self.cache.push_front(hit.clone());
            return Ok(hit.1);
        }
        let f = &self.files[block.file];
        let file = File::open(&f.path).map_err(|e| Error::io(&f.path, e))?;
        let shard_err = |e: parquet::errors::ParquetError| Error::Shard { path: f.path.clone(), message: e.to_string() };
        let mut reader = ParquetRecordBatchReaderBuilder::new_with_metadata(file, f.meta.clone())
            .with_row_groups(vec![block.group])
            .with_batch_size(block.rows as usize)
            .build()
            .map_err(shard_err)?;
        let rb = reader
            .next()
            .ok_or_else(|| Error::Shard { path: f.path.clone(), message: format!("row group {} is empty", block.group) })?
            .map_err(|e| Error::Shard { path: f.path.clone(), message: e.to_string() })?;
        let tb = Arc::new(TokenBatch::new(&rb, &f.path)?);
        if tb.rows as u64 != block.rows {
            return Err(Error::Shard {
                path: f.path.clone(),
                message: format!("row group {} decoded to {} rows, expected {}", block.group, tb.rows, block.rows),
            });
        }
        self.cache.push_front((id, tb.clone()));
        self.cache.truncate(BLOCK_CACHE);
        Ok(tb)
    }

    /// The next batch of this rank and the cursor after it.
    fn next(&mut self) -> Result<Option<(Batch, Cursor)>> {
        if !self.settle() {
            return Ok(None);
        }
        let Cursor { stage, epoch, step } = self.cursor;
        let len = self.plan(stage, epoch).len;
        let (w, b, r) = (self.cfg.world_size as u64, self.cfg.batch_size as u64, self.cfg.rank as u64);
        let base = step * w * b;
        let (start, count) = if base + w * b <= len {
            (base + r * b, b)
        } else {
            let rem_rows = len - base;
            let (q, extra) = (rem_rows / w, rem_rows % w);
            (base + r * q + r.min(extra), q + u64::from(r < extra))
        };
        let seq = self.seq_len;
        let mut batch = Batch { batch: count as usize, seq_len: seq, ..Default::default() };
        let n = count as usize * seq;
        batch.input_ids.reserve(n);
        batch.position_ids.reserve(n);
        batch.segment_ids.reserve(n);
        batch.loss_mask.reserve(n);
        let mut stages_col: Vec<u32> = Vec::new();
        let mut have_stage = None;
        for p in start..start + count {
            let (s, row) = self.row_at(p);
            let (blk, off) = self.stages[s].locate(row);
            let tb = self.block(s, blk)?;
            let i = off as usize;
            let path = &self.files[self.stages[s].blocks[blk].file].path;
            tb.validate_row(i, seq, path)?;
            batch.input_ids.extend_from_slice(tb.ids(i));
            let segs = tb.seg_lens(i);
            Batch::row_layout(segs, seq, &mut batch.position_ids, &mut batch.segment_ids);
            match tb.loss_mask(i) {
                Some(m) => batch.loss_mask.extend_from_slice(m),
                None => {
                    let real = segs.iter().map(|&l| l as usize).sum::<usize>();
                    batch.loss_mask.extend(std::iter::repeat_n(1u8, real));
                    batch.loss_mask.extend(std::iter::repeat_n(0u8, seq - real));
                }
            }
            let st = tb.stage(i);
            if have_stage.is_none() {
                have_stage = Some(st.is_some());
            }
            if let Some(v) = st {
                stages_col.push(v);
            }
        }
        if have_stage == Some(true) && stages_col.len() == count as usize {
            batch.stage = Some(stages_col);
        }
        self.cursor = Cursor { step: step + 1, ..self.cursor };
        Ok(Some((batch, self.cursor)))
    }
}

/// Smallest number of positions holding `rows` stage rows when a share `ppm / PPM` are replay slots.
fn positions_for(rows: u64, ppm: u64) -> u64 {
    if ppm == 0 || rows == 0 {
        return rows;
    }
    let replay = |p: u64| (p as u128 * ppm as u128 / PPM as u128) as u64;
    // p - replay(p) is non-decreasing in p and grows by at most 1 per step.
    let mut p = ((rows as u128 * PPM as u128) / (PPM - ppm) as u128) as u64;
    while p - replay(p) > rows {
        p -= 1;
    }
    while p - replay(p) < rows {
        p += 1;
    }
    while p > 0 && (p - 1) - replay(p - 1) == rows {
        p -= 1;
    }
    p
}

enum Source {
    Direct(Box<Producer>),
    Thread { rx: Receiver<Result<(Batch, Cursor)>>, handle: Option<JoinHandle<()>> },
}

/// The streaming loader (see the module docs). Iterate it, or call [`Loader::next_batch`].
pub struct Loader {
    source: Source,
    cursor: Cursor,
    fingerprint: String,
    seq_len: usize,
    /// Batches of one epoch of each stage, for this rank.
    stage_batches: Vec<u64>,
    epochs: u64,
    done: bool,
}

impl Loader {
    /// Opens the shard directories and starts at the beginning.
    pub fn new(cfg: LoaderConfig) -> Result<Loader> {
        Self::start(cfg, None)
    }

    /// Continues from a state saved by [`Loader::state`] with the same data and settings (the
    /// rank may differ: the cursor is the same on every rank).
    pub fn restore(cfg: LoaderConfig, state: &serde_json::Value) -> Result<Loader> {
        let st: State = serde_json::from_value(state.clone()).map_err(|e| other(format!("loader state is not valid: {e}")))?;
        if st.version != STATE_VERSION {
            return Err(other(format!("loader state version {} (this build reads {STATE_VERSION})", st.version)));
        }
        Self::start(cfg, Some(st))
    }

    fn start(cfg: LoaderConfig, state: Option<State>) -> Result<Loader> {
        let prefetch = cfg.prefetch;
        let mut producer = Producer::open(cfg)?;
        let fingerprint = producer.fingerprint();
        if let Some(st) = state {
            if st.fingerprint != fingerprint {
                return Err(other("loader state was saved for other data or settings (shards, batch_size, seed, epochs, world_size, replay or drop_last differ)"));
            }
            producer.cursor = st.cursor;
        }
        let cursor = producer.cursor;
        let seq_len = producer.seq_len;
        let stage_batches = (0..producer.stages.len()).map(|st| producer.steps(st, 0)).collect();
        let producer_epochs = producer.cfg.epochs as u64;
        let source = if prefetch == 0 {
            Source::Direct(Box::new(producer))
        } else {
            let (tx, rx) = sync_channel(prefetch);
            let handle = std::thread::Builder::new()
                .name("loader-prefetch".into())
                .spawn(move || loop {
                    let item = producer.next();
                    let stop = !matches!(item, Ok(Some(_)));
                    let item = match item {
                        Ok(Some(x)) => Ok(x),
                        Ok(None) => break,
                        Err(e) => Err(e),
                    };
                    if tx.send(item).is_err() || stop {
                        break;
                    }
                })
                .map_err(|e| other(format!("loader: cannot start the prefetch thread: {e}")))?;
            Source::Thread { rx, handle: Some(handle) }
        };
        Ok(Loader { source, cursor, fingerprint, seq_len, stage_batches, epochs: producer_epochs, done: false })
    }

    /// Tokens per row.
    pub fn seq_len(&self) -> usize {
        self.seq_len
    }

    /// Batches this rank yields over all stages and epochs, from the start (not from the cursor).
    pub fn total_batches(&self) -> u64 {
        self.stage_batches.iter().sum::<u64>() * self.epochs()
    }

    /// Batches one epoch of each stage yields on this rank.
    pub fn stage_batches(&self) -> &[u64] {
        &self.stage_batches
    }

    /// Passes over each stage.
    pub fn epochs(&self) -> u64 {
        self.epochs
    }

    /// A loader over the same data and settings positioned at `cursor` (the start of an epoch of
    /// a stage, say): what [`Loader::restore`] does with a cursor of this loader's data.
    pub fn seek(&self, cfg: LoaderConfig, cursor: Cursor) -> Result<Loader> {
        let st = State { version: STATE_VERSION, fingerprint: self.fingerprint.clone(), cursor };
        Self::start(cfg, Some(st))
    }

    /// The cursor of the next batch.
    pub fn cursor(&self) -> Cursor {
        self.cursor
    }

    /// The state to store in a checkpoint: restoring it yields the batches after the last one
    /// this loader returned.
    pub fn state(&self) -> serde_json::Value {
        serde_json::to_value(State { version: STATE_VERSION, fingerprint: self.fingerprint.clone(), cursor: self.cursor })
            .expect("state serializes")
    }

    /// The next batch, `Ok(None)` after the last stage's last epoch.
    pub fn next_batch(&mut self) -> Result<Option<Batch>> {
        if self.done {
            return Ok(None);
        }
        let item = match &mut self.source {
            Source::Direct(p) => p.next(),
            Source::Thread { rx, .. } => match rx.recv() {
                Ok(Ok(x)) => Ok(Some(x)),
                Ok(Err(e)) => Err(e),
                Err(_) => Ok(None),
            },
        };
        match item {
            Ok(Some((batch, cursor))) => {
                self.cursor = cursor;
                Ok(Some(batch))
            }
            Ok(None) => {
                self.done = true;
                Ok(None)
            }
            Err(e) => {
                self.done = true;
                Err(e)
            }
        }
    }
}

impl Iterator for Loader {
    type Item = Result<Batch>;
    fn next(&mut self) -> Option<Self::Item> {
        self.next_batch().transpose()
    }
}

impl Drop for Loader {
    fn drop(&mut self) {
        if let Source::Thread { rx, handle } = &mut self.source {
            // Unblock the producer (its send fails once the receiver is gone), then join it.
            let (_, dead) = sync_channel(0);
            drop(std::mem::replace(rx, dead));
            if let Some(h) = handle.take() {
                let _ = h.join();
            }
        }
    }
}

/// Writes the batches a loader over `cfg` yields (from `state` when given, at most `limit`) as
/// JSON lines: the batch's arrays, its `cu_seqlens` and counted `targets`, and the cursor `state`
/// after it (what `coretech batches` prints: the reference other readers of our shards, such as
/// `python/coretech_loader.py`, are checked against). Returns the number of batches.
pub fn write_batches(
    cfg: LoaderConfig,
    state: Option<&serde_json::Value>,
    limit: Option<u64>,
    out: &mut impl std::io::Write,
) -> Result<u64> {
    let cfg = LoaderConfig { prefetch: 0, ..cfg };
    let mut loader = match state {
        Some(st) => Loader::restore(cfg, st)?,
        None => Loader::new(cfg)?,
    };
    let mut n = 0;
    while limit.is_none_or(|l| n < l) {
        let Some(b) = loader.next_batch()? else { break };
        let line = serde_json::json!({
            "batch": b.batch,
            "seq_len": b.seq_len,
            "input_ids": b.input_ids,
            "position_ids": b.position_ids,
            "segment_ids": b.segment_ids,
            "loss_mask": b.loss_mask,
            "cu_seqlens": b.cu_seqlens(),
            "targets": b.target_count(),
            "stage": b.stage,
            "state": loader.state(),
        });
        writeln!(out, "{line}").map_err(|e| Error::io("<stdout>", e))?;
        n += 1;
    }
    Ok(n)
}

/// Row counts of a token shard directory's manifest (for tools and tests).
pub fn rows_in(dir: &Path) -> Result<u64> {
    Ok(Manifest::load(dir)?.rows())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_positions_hold_every_stage_row() {
        for rows in [0u64, 1, 2, 7, 100, 1001] {
            for ppm in [0u64, 1, 100_000, 333_333, 500_000, 900_000] {
                let p = positions_for(rows, ppm);
                let replay = (p as u128 * ppm as u128 / PPM as u128) as u64;
                assert_eq!(p - replay, rows, "rows {rows} ppm {ppm}");
            }
        }
    }
}
