//! Where training batches come from. The trainer codes against [`BatchSource`]: stage-ordered
//! micro-batches with a JSON cursor to resume from. [`ShardSource`] reads token shards through
//! the streaming loader (`shard::reader`); [`SyntheticSource`] (seeded documents, for tests and
//! benchmarks) and [`VecSource`] (fixed batches) live here too.

use std::path::PathBuf;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::error::{Result, TrainError};
use super::schedule::ScheduleConfig;
use crate::shard::reader::{Cursor, Loader, LoaderConfig};
use crate::shard::Batch;

/// A stream of training micro-batches in curriculum order.
pub trait BatchSource: Send {
    /// The next micro-batch, or `None` when the curriculum is done.
    fn next_batch(&mut self) -> Result<Option<Batch>>;
    /// A cursor that [`BatchSource::restore`] accepts: after `restore(state())` the source yields
    /// exactly the batches it would have yielded next.
    fn state(&self) -> serde_json::Value;
    /// Moves the source to a saved cursor.
    fn restore(&mut self, state: &serde_json::Value) -> Result<()>;
    /// Micro-batches the whole curriculum yields, when known (sizes the LR schedule).
    fn total_batches(&self) -> Option<u64> {
        None
    }
    /// Micro-batches each stage yields over all its epochs, in curriculum order, when known
    /// (places per-stage learning-rate schedules). Sums to [`BatchSource::total_batches`].
    fn stage_batches(&self) -> Option<Vec<u64>> {
        None
    }
}

/// Kind of a curriculum stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "lowercase")]
pub enum StageKind {
    /// Continued pre-training: every real token is a target.
    #[default]
    Cpt,
    /// Supervised fine-tuning: only answer tokens are targets (the shards' loss mask).
    Sft,
}

/// One stage of the curriculum, run in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct StageConfig {
    /// Stage name (shown in metrics; matches the shards' `stage` where they have one).
    pub name: String,
    /// CPT or SFT.
    pub kind: StageKind,
    /// Token-shard directory of this stage (`data.source = "shards"`).
    pub shards: Option<PathBuf>,
    /// Passes over the stage's rows.
    #[schemars(range(min = 1))]
    pub epochs: u32,
    /// Share of each stage's rows drawn from earlier stages (replay against forgetting).
    #[schemars(range(min = 0.0), extend("exclusiveMaximum" = 1.0))]
    pub replay: f64,
    /// Shard source: micro-batches taken from each epoch of this stage at most, the rest of the
    /// epoch skipped (a short run that still visits every stage of a long curriculum).
    #[schemars(range(min = 1))]
    pub max_batches: Option<u64>,
    /// Factor on the learning rate of this stage's steps: on the run's schedule, or on the peak
    /// of this stage's own `schedule` (at most 100 times the run's peak: beyond it every
    /// step diverges, and a value that large is a typo).
    #[schemars(range(min = 0.0, max = 100.0))]
    pub lr_multiplier: f64,
    /// This stage's own learning-rate schedule over its own steps (warmup from its first step,
    /// decay to its last), peaking at `optimizer.lr × lr_multiplier`. Unset: the run's schedule
    /// continues through the stage.
    pub schedule: Option<ScheduleConfig>,
}

impl Default for StageConfig {
    fn default() -> Self {
        Self {
            name: "main".into(),
            kind: StageKind::Cpt,
            shards: None,
            epochs: 1,
            replay: 0.0,
            max_batches: None,
            lr_multiplier: 1.0,
            schedule: None,
        }
    }
}

impl StageConfig {
    /// Whether the stage changes the run's learning-rate schedule.
    pub fn has_own_lr(&self) -> bool {
        self.lr_multiplier != 1.0 || self.schedule.is_some()
    }
}

/// Where batches come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    /// Seeded synthetic documents (`data.synthetic`).
    #[default]
    Synthetic,
    /// Token shards through the streaming loader.
    Shards,
}

/// Seeded synthetic documents: each stage has a pool of random documents that rows pack (so a
/// model can learn them and the loss falls), or fresh random tokens when the pool is empty.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct SyntheticConfig {
    /// Rows per epoch of each stage.
    pub rows: u64,
    /// Token ids are drawn below this (0: the model's vocabulary).
    pub vocab: usize,
    /// Distinct documents per stage (0: every document is fresh random tokens).
    pub pool_docs: usize,
    /// Shortest document (at most `seq_len`'s maximum, like `max_doc_len`).
    #[schemars(range(max = 1_048_576))]
    pub min_doc_len: usize,
    /// Longest document (0: the row length, i.e. one document per row). At most 1,048,576,
    /// `seq_len`'s maximum: a document is cut at the end of its row, and only the tokens a row
    /// takes are drawn, so a longer one would only change the length distribution.
    #[schemars(range(max = 1_048_576))]
    pub max_doc_len: usize,
    /// SFT stages: share of each document (its start) that is prompt, with no loss.
    #[schemars(range(min = 0.0, max = 1.0))]
    pub prompt_fraction: f64,
}

impl Default for SyntheticConfig {
    fn default() -> Self {
        Self { rows: 256, vocab: 0, pool_docs: 16, min_doc_len: 8, max_doc_len: 64, prompt_fraction: 0.5 }
    }
}

/// The data section of a training config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    /// Batch source.
    pub source: SourceKind,
    /// Curriculum stages, in order.
    #[schemars(length(min = 1))]
    pub stages: Vec<StageConfig>,
    /// Synthetic-source settings.
    pub synthetic: SyntheticConfig,
    /// Shard source: micro-batches the loader prepares ahead on a background thread, so reading
    /// overlaps the step (0: read on the training thread).
    #[schemars(range(min = 0, max = 1024))]
    pub prefetch: usize,
}

impl Default for DataConfig {
    fn default() -> Self {
        Self { source: SourceKind::Synthetic, stages: vec![StageConfig::default()], synthetic: SyntheticConfig::default(), prefetch: 4 }
    }
}

impl DataConfig {
    /// Checks the curriculum.
    pub fn validate(&self) -> Result<()> {
        if self.stages.is_empty() {
            return Err(TrainError::config("data.stages", "at least one stage is needed"));
        }
        for (i, s) in self.stages.iter().enumerate() {
            if s.epochs == 0 {
                return Err(TrainError::config(format!("data.stages[{i}].epochs"), "must be >= 1"));
            }
            if !(0.0..1.0).contains(&s.replay) || (i == 0 && s.replay > 0.0) {
                return Err(TrainError::config(format!("data.stages[{i}].replay"), "must be in [0, 1), and 0 for the first stage"));
            }
            if s.max_batches == Some(0) || (self.source != SourceKind::Shards && s.max_batches.is_some()) {
                return Err(TrainError::config(
                    format!("data.stages[{i}].max_batches"),
                    "must be >= 1, and is read by data.source = \"shards\" only",
                ));
            }
            if self.source == SourceKind::Shards && s.shards.is_none() {
                return Err(TrainError::config(
                    format!("data.stages[{i}].shards"),
                    "a shard directory is needed with data.source = \"shards\"",
                ));
            }
            // The loader takes one replay share for the whole curriculum (epochs are per stage:
            // `ShardSource` skips the epochs a stage does not run).
            if self.source == SourceKind::Shards && i > 1 && s.replay != self.stages[1].replay {
                return Err(TrainError::config(
                    format!("data.stages[{i}].replay"),
                    format!(
                        "with data.source = \"shards\" every stage after the first has the same replay ({} in stage 1)",
                        self.stages[1].replay
                    ),
                ));
            }
        }
        let sy = &self.synthetic;
        if self.source == SourceKind::Synthetic
            && (sy.rows == 0
                || sy.min_doc_len == 0
                || (sy.max_doc_len != 0 && sy.max_doc_len < sy.min_doc_len)
                || !(0.0..1.0).contains(&sy.prompt_fraction))
        {
            return Err(TrainError::config(
                "data.synthetic",
                "rows and min_doc_len must be > 0, max_doc_len 0 or >= min_doc_len, prompt_fraction in [0, 1)",
            ));
        }
        Ok(())
    }
}

/// The synthetic source: row `g` of the curriculum is a pure function of (seed, g), so the
/// cursor is the next row index.
#[derive(Debug, Clone)]
pub struct SyntheticSource {
    cfg: SyntheticConfig,
    stages: Vec<StageConfig>,
    seed: u64,
    vocab: usize,
    batch: usize,
    seq_len: usize,
    /// Cumulative rows at each stage's end.
    stage_end: Vec<u64>,
    next_row: u64,
}

impl SyntheticSource {
    /// A source for `data` yielding micro-batches of `batch` rows of `seq_len` tokens, ids below
    /// `model_vocab` (or `data.synthetic.vocab` when smaller).
    pub fn new(data: &DataConfig, seed: u64, model_vocab: usize, batch: usize, seq_len: usize) -> Result<SyntheticSource> {
        data.validate()?;
        let cfg = data.synthetic.clone();
        let vocab = if cfg.vocab == 0 { model_vocab } else { cfg.vocab.min(model_vocab) };
        let mut stage_end = Vec::new();
        let mut end = 0;
        for s in &data.stages {
            end += cfg.rows * s.epochs as u64;
            stage_end.push(end);
        }
        Ok(SyntheticSource { cfg, stages: data.stages.clone(), seed, vocab, batch, seq_len, stage_end, next_row: 0 })
    }

    fn rng(&self, parts: &[u64]) -> ChaCha8Rng {
        let mut h = self.seed ^ 0x5EED_0F5E_ED00_0001;
        for p in parts {
            h = xxhash_rust::xxh3::xxh3_64_with_seed(&p.to_le_bytes(), h);
        }
        ChaCha8Rng::seed_from_u64(h)
    }

    /// A document's length and its first tokens, at most a row's worth: the tokens are drawn in
    /// order from the document's own generator, so cutting the draw at `seq_len` gives the same
    /// prefix as drawing the whole document (whose length the prompt share still comes from).
    fn doc(&self, stage: usize, doc: u64, rng_parts: &[u64]) -> (usize, Vec<u32>) {
        let mut rng = self.rng(&[1, stage as u64, doc, rng_parts.first().copied().unwrap_or(0)]);
        let max = if self.cfg.max_doc_len == 0 { self.seq_len } else { self.cfg.max_doc_len };
        let min = self.cfg.min_doc_len.min(max);
        let len = rng.random_range(min..=max);
        (len, (0..len.min(self.seq_len)).map(|_| rng.random_range(0..self.vocab as u32)).collect())
    }

    /// Packs row `r` of stage `stage` (the row itself, not a replay decision).
    fn row(&self, stage: usize, r: u64, out: &mut Batch) {
        let mut rng = self.rng(&[2, stage as u64, r]);
        let sft = self.stages[stage].kind == StageKind::Sft;
        let mut seg_lens = Vec::new();
        let start = out.input_ids.len();
        let mut k = 0u64;
        while out.input_ids.len() - start < self.seq_len {
            let (doc_len, doc) = if self.cfg.pool_docs == 0 {
                self.doc(stage, u64::MAX, &[r * 1_000_003 + k])
            } else {
                self.doc(stage, rng.random_range(0..self.cfg.pool_docs as u64), &[])
            };
            k += 1;
            let take = doc.len().min(self.seq_len - (out.input_ids.len() - start));
            let prompt = if sft { ((doc_len as f64) * self.cfg.prompt_fraction).ceil() as usize } else { 0 };
            for (j, &t) in doc[..take].iter().enumerate() {
                out.input_ids.push(t);
                out.loss_mask.push(u8::from(j >= prompt));
            }
            seg_lens.push(take as u32);
        }
        Batch::row_layout(&seg_lens, self.seq_len, &mut out.position_ids, &mut out.segment_ids);
    }

    fn stage_of(&self, g: u64) -> usize {
        self.stage_end.iter().position(|&e| g < e).unwrap_or(self.stages.len() - 1)
    }
}

impl BatchSource for SyntheticSource {
    fn next_batch(&mut self) -> Result<Option<Batch>> {
        let total = *self.stage_end.last().unwrap_or(&0);
        if self.next_row + self.batch as u64 > total {
            return Ok(None);
        }
        let mut b = Batch { batch: self.batch, seq_len: self.seq_len, stage: Some(Vec::new()), ..Default::default() };
        for _ in 0..self.batch {
            let g = self.next_row;
            self.next_row += 1;
            let stage = self.stage_of(g);
            let first = if stage == 0 { 0 } else { self.stage_end[stage - 1] };
            let local = (g - first) % self.cfg.rows;
            let mut rng = self.rng(&[3, g]);
            let replay = self.stages[stage].replay;
            if replay > 0.0 && rng.random_bool(replay) {
                let from = rng.random_range(0..stage);
                self.row(from, rng.random_range(0..self.cfg.rows), &mut b);
            } else {
                self.row(stage, local, &mut b);
            }
            if let Some(s) = b.stage.as_mut() {
                s.push(stage as u32);
            }
        }
        Ok(Some(b))
    }

    fn state(&self) -> serde_json::Value {
        serde_json::json!({ "kind": "synthetic", "next_row": self.next_row })
    }

    fn restore(&mut self, state: &serde_json::Value) -> Result<()> {
        let row =
            state.get("next_row").and_then(|v| v.as_u64()).filter(|_| state.get("kind").and_then(|k| k.as_str()) == Some("synthetic"));
        self.next_row = row.ok_or_else(|| TrainError::Data(format!("not a synthetic-source cursor: {state}")))?;
        Ok(())
    }

    fn total_batches(&self) -> Option<u64> {
        Some(self.stage_end.last().copied().unwrap_or(0) / self.batch as u64)
    }

    fn stage_batches(&self) -> Option<Vec<u64>> {
        // A micro-batch belongs to the stage of its last row (as the step's metrics stage does).
        let b = self.batch as u64;
        let mut prev = 0;
        Some(
            self.stage_end
                .iter()
                .map(|&e| {
                    let n = e / b - prev;
                    prev = e / b;
                    n
                })
                .collect(),
        )
    }
}

/// Fixed batches, yielded in order `epochs` times (`0`: forever).
#[derive(Debug, Clone)]
pub struct VecSource {
    batches: Vec<Batch>,
    epochs: u64,
    next: u64,
}

impl VecSource {
    /// A source over `batches`.
    pub fn new(batches: Vec<Batch>, epochs: u64) -> VecSource {
        VecSource { batches, epochs, next: 0 }
    }
}

impl BatchSource for VecSource {
    fn next_batch(&mut self) -> Result<Option<Batch>> {
        if self.batches.is_empty() || (self.epochs > 0 && self.next >= self.epochs * self.batches.len() as u64) {
            return Ok(None);
        }
        let b = self.batches[(self.next % self.batches.len() as u64) as usize].clone();
        self.next += 1;
        Ok(Some(b))
    }

    fn state(&self) -> serde_json::Value {
        serde_json::json!({ "kind": "vec", "next": self.next })
    }

    fn restore(&mut self, state: &serde_json::Value) -> Result<()> {
        self.next =
            state.get("next").and_then(|v| v.as_u64()).ok_or_else(|| TrainError::Data(format!("not a vec-source cursor: {state}")))?;
        Ok(())
    }

    fn total_batches(&self) -> Option<u64> {
        (self.epochs > 0).then(|| self.epochs * self.batches.len() as u64)
    }
}

/// Token shards through the streaming loader (`data.source = "shards"`): each curriculum stage
/// reads its `shards` directory; rows are tagged with the stage index they were drawn for.
pub struct ShardSource {
    cfg: LoaderConfig,
    loader: Loader,
    /// `max_batches` per stage.
    caps: Vec<Option<u64>>,
    /// `epochs` per stage.
    epochs: Vec<u32>,
}

impl ShardSource {
    /// Opens the stages' shard directories for micro-batches of `batch` rows of `seq_len` tokens.
    pub fn new(data: &DataConfig, seed: u64, batch: usize, seq_len: usize) -> Result<ShardSource> {
        data.validate()?;
        let cfg = LoaderConfig {
            stages: data.stages.iter().map(|s| s.shards.iter().cloned().collect()).collect(),
            batch_size: batch,
            seed,
            // The loader runs every stage for the most epochs; `skip_capped` ends a stage after its own.
            epochs: data.stages.iter().map(|s| s.epochs).max().unwrap_or(1),
            rank: 0,
            world_size: 1,
            prefetch: data.prefetch,
            replay: data.stages.get(1).map_or(0.0, |s| s.replay),
            drop_last: false,
        };
        let loader = Loader::new(cfg.clone()).map_err(|e| TrainError::Data(e.to_string()))?;
        if loader.seq_len() != seq_len {
            return Err(TrainError::config("seq_len", format!("{seq_len}, but the shards hold rows of {} tokens", loader.seq_len())));
        }
        Ok(ShardSource {
            cfg,
            loader,
            caps: data.stages.iter().map(|s| s.max_batches).collect(),
            epochs: data.stages.iter().map(|s| s.epochs).collect(),
        })
    }

    /// Skips the rest of an epoch whose `max_batches` is reached, and the epochs beyond a
    /// stage's own `epochs`; false when nothing is left.
    fn skip_capped(&mut self) -> Result<bool> {
        loop {
            let c = self.loader.cursor();
            if c.stage >= self.caps.len() {
                return Ok(false);
            }
            let per_epoch = self.loader.stage_batches()[c.stage];
            let limit = self.caps[c.stage].map_or(per_epoch, |cap| cap.min(per_epoch));
            let epochs = self.epochs[c.stage];
            if c.epoch < epochs && c.step < limit {
                return Ok(true);
            }
            // This epoch is done (all its batches, or its cap), or the stage's own epochs are.
            let next = if c.epoch + 1 < epochs {
                Cursor { epoch: c.epoch + 1, step: 0, ..c }
            } else {
                Cursor { stage: c.stage + 1, epoch: 0, step: 0 }
            };
            if next.stage >= self.caps.len() {
                return Ok(false);
            }
            // After an epoch's last batch the loader's cursor still points past it and the loader
            // moves on at its next batch: into the next epoch, or into the next stage when this
            // stage runs all of the loader's epochs. Anywhere else it must be moved.
            let moves_there = c.epoch < epochs && c.step >= per_epoch && (next.stage == c.stage || epochs as u64 == self.loader.epochs());
            if moves_there {
                return Ok(true);
            }
            self.loader = self.loader.seek(self.cfg.clone(), next).map_err(|e| TrainError::Data(e.to_string()))?;
        }
    }
}

impl BatchSource for ShardSource {
    fn next_batch(&mut self) -> Result<Option<Batch>> {
        if !self.skip_capped()? {
            return Ok(None);
        }
        let mut b = match self.loader.next_batch().map_err(|e| TrainError::Data(e.to_string()))? {
            Some(b) => b,
            None => return Ok(None),
        };
        // The cursor after a batch is still in that batch's stage (it moves on at the next call).
        b.stage = Some(vec![self.loader.cursor().stage as u32; b.batch]);
        Ok(Some(b))
    }

    fn state(&self) -> serde_json::Value {
        serde_json::json!({ "kind": "shards", "loader": self.loader.state() })
    }

    fn restore(&mut self, state: &serde_json::Value) -> Result<()> {
        let st = state
            .get("loader")
            .filter(|_| state.get("kind").and_then(|k| k.as_str()) == Some("shards"))
            .ok_or_else(|| TrainError::Data(format!("not a shard-source cursor: {state}")))?;
        self.loader = Loader::restore(self.cfg.clone(), st).map_err(|e| TrainError::Data(e.to_string()))?;
        Ok(())
    }

    fn total_batches(&self) -> Option<u64> {
        self.stage_batches().map(|v| v.iter().sum())
    }

    fn stage_batches(&self) -> Option<Vec<u64>> {
        Some(
            self.loader
                .stage_batches()
                .iter()
                .zip(&self.caps)
                .zip(&self.epochs)
                .map(|((&n, cap), &e)| cap.map_or(n, |c| c.min(n)) * e as u64)
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(stages: Vec<StageConfig>) -> DataConfig {
        DataConfig {
            source: SourceKind::Synthetic,
            stages,
            synthetic: SyntheticConfig { rows: 10, vocab: 50, pool_docs: 4, min_doc_len: 3, max_doc_len: 9, prompt_fraction: 0.5 },
            prefetch: 0,
        }
    }

    #[test]
    fn synthetic_rows_follow_the_batch_contract_and_resume() {
        let d = data(vec![
            StageConfig { name: "a".into(), ..Default::default() },
            StageConfig { name: "b".into(), kind: StageKind::Sft, epochs: 2, replay: 0.3, ..Default::default() },
        ]);
        let mut s = SyntheticSource::new(&d, 7, 1000, 3, 16).unwrap();
        assert_eq!(s.total_batches(), Some(10));
        let mut all = Vec::new();
        let mut cursor_at_4 = None;
        while let Some(b) = s.next_batch().unwrap() {
            assert_eq!(b.input_ids.len(), 48);
            assert_eq!(b.position_ids.len(), 48);
            assert!(b.input_ids.iter().all(|&t| t < 50));
            if all.len() == 4 {
                cursor_at_4 = Some(s.state());
            }
            all.push(b);
        }
        assert_eq!(all.len(), 10);
        // Stage 0 is CPT (every token counts), stage 1 SFT (document starts are prompt).
        assert!(all[0].loss_mask.iter().all(|&m| m == 1));
        assert_eq!(all[0].stage.as_ref().unwrap(), &[0, 0, 0]);
        assert_eq!(all[9].stage.as_ref().unwrap(), &[1, 1, 1]);
        assert!(all[9].loss_mask.contains(&0));
        // Same seed, same rows; a restored cursor continues identically.
        let mut again = SyntheticSource::new(&d, 7, 1000, 3, 16).unwrap();
        again.restore(&cursor_at_4.unwrap()).unwrap();
        assert_eq!(again.next_batch().unwrap().unwrap(), all[5]);
        let mut other = SyntheticSource::new(&d, 8, 1000, 3, 16).unwrap();
        assert_ne!(other.next_batch().unwrap().unwrap(), all[0]);
        assert!(again.restore(&serde_json::json!({"kind": "vec", "next": 1})).is_err());
    }

    #[test]
    fn documents_longer_than_a_row_draw_only_the_rows_tokens() {
        let mut d = data(vec![StageConfig::default()]);
        d.synthetic.max_doc_len = 40;
        let s = SyntheticSource::new(&d, 7, 1000, 2, 16).unwrap();
        for doc in 0..4 {
            // The whole document, drawn as before the cut: same length, same first tokens.
            let mut rng = s.rng(&[1, 0, doc, 0]);
            let len = rng.random_range(3..=40usize);
            let whole: Vec<u32> = (0..len).map(|_| rng.random_range(0..50u32)).collect();
            let (got_len, got) = s.doc(0, doc, &[]);
            assert_eq!((got_len, got.as_slice()), (len, &whole[..len.min(16)]));
        }
        // A length no allocation could hold (the schema stops at 2^20; this is the code's own
        // bound): rows are still cut at seq_len, no capacity overflow.
        d.synthetic.max_doc_len = usize::MAX;
        let mut s = SyntheticSource::new(&d, 7, 1000, 2, 16).unwrap();
        let b = s.next_batch().unwrap().unwrap();
        assert_eq!(b.input_ids.len(), 32);
    }

    #[test]
    fn bad_curricula_are_rejected_with_the_key() {
        let e = data(vec![]).validate().unwrap_err();
        assert!(e.to_string().contains("data.stages"), "{e}");
        let e = data(vec![StageConfig { replay: 0.2, ..Default::default() }]).validate().unwrap_err();
        assert!(e.to_string().contains("data.stages[0].replay"), "{e}");
        let e = data(vec![StageConfig { epochs: 0, ..Default::default() }]).validate().unwrap_err();
        assert!(e.to_string().contains("epochs"), "{e}");
        let mut d = data(vec![StageConfig::default()]);
        d.source = SourceKind::Shards;
        assert!(d.validate().unwrap_err().to_string().contains("shards"));
    }

    #[test]
    fn vec_source_cycles_and_resumes() {
        let b = |t: u32| Batch {
            batch: 1,
            seq_len: 1,
            input_ids: vec![t],
            position_ids: vec![0],
            segment_ids: vec![0],
            loss_mask: vec![1],
            stage: None,
        };
        let mut s = VecSource::new(vec![b(1), b(2)], 2);
        assert_eq!(s.total_batches(), Some(4));
        let ids: Vec<u32> = std::iter::from_fn(|| s.next_batch().unwrap()).map(|b| b.input_ids[0]).collect();
        assert_eq!(ids, [1, 2, 1, 2]);
        s.restore(&serde_json::json!({"kind": "vec", "next": 1})).unwrap();
        assert_eq!(s.next_batch().unwrap().unwrap().input_ids, [2]);
    }
}
