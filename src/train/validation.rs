//! Validation loss during training: the model's mean loss on held-out token or SFT shard
//! directories (the pack or SFT stage's validation split, an SFT test split), every `every`
//! steps, when the curriculum moves to another stage and at the end of the run.
//!
//! Each set is read through the streaming loader in its seeded order (one pass, at most
//! `max_batches` micro-batches, the same batches at every evaluation); under data parallelism
//! every rank evaluates its share and the sums are added across ranks. No gradients, no
//! optimizer or loader state is touched, so validation never changes the training numbers.

use std::path::PathBuf;
use std::time::Instant;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::error::{Result, TrainError};
use super::metrics::ValMetrics;
use super::model::Qwen2;
use super::ops::Ops;
use crate::shard::reader::{Loader, LoaderConfig};

/// One held-out shard directory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ValSet {
    /// Name in metrics, logs and TensorBoard tags (`val/<name>/loss`).
    pub name: String,
    /// Token or SFT shard directory with its manifest (SFT shards: loss on answers only).
    pub shards: PathBuf,
}

/// The `validation` section of a training config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ValidationConfig {
    /// Held-out sets, evaluated together (none: no validation).
    pub sets: Vec<ValSet>,
    /// Evaluate every N optimizer steps (0: only at stage ends and at the end of the run).
    pub every: u64,
    /// Micro-batches per set and evaluation at most (0: the whole set).
    pub max_batches: u64,
    /// Rows per validation micro-batch on each rank (default: the training `batch_size`).
    pub batch_size: Option<usize>,
}

impl Default for ValidationConfig {
    fn default() -> Self {
        Self { sets: Vec::new(), every: 0, max_batches: 16, batch_size: None }
    }
}

impl ValidationConfig {
    /// Checks names and sizes (the directories are checked when a set is first read).
    pub fn validate(&self) -> Result<()> {
        if self.batch_size == Some(0) {
            return Err(TrainError::config("validation.batch_size", "must be >= 1"));
        }
        for (i, s) in self.sets.iter().enumerate() {
            if s.name.is_empty() || s.name.contains(char::is_whitespace) || s.name.contains('/') {
                return Err(TrainError::config(format!("validation.sets[{i}].name"), "a non-empty name without spaces or '/'"));
            }
            if self.sets[..i].iter().any(|o| o.name == s.name) {
                return Err(TrainError::config(format!("validation.sets[{i}].name"), format!("{:?} is used twice", s.name)));
            }
        }
        Ok(())
    }

    /// Whether any set is configured.
    pub fn enabled(&self) -> bool {
        !self.sets.is_empty()
    }
}

/// Loss sum, counted targets and micro-batches of this rank's share of one set.
pub struct Partial {
    /// Σ of the counted predictions' losses.
    pub loss_sum: f64,
    /// Counted predictions.
    pub targets: u64,
    /// Micro-batches read.
    pub batches: u64,
    /// Wall time of this rank's evaluation of the set.
    pub seconds: f64,
}

/// Evaluates rank `rank` of `world`'s share of `set` (seeded with `seed`; same order every time).
pub fn evaluate_set(
    model: &Qwen2,
    ops: &dyn Ops,
    cfg: &ValidationConfig,
    set: &ValSet,
    (batch_size, seq_len, seed): (usize, usize, u64),
    (rank, world): (usize, usize),
) -> Result<Partial> {
    let lc = LoaderConfig {
        stages: vec![vec![set.shards.clone()]],
        batch_size: cfg.batch_size.unwrap_or(batch_size),
        seed,
        epochs: 1,
        rank,
        world_size: world,
        prefetch: 0,
        replay: 0.0,
        drop_last: false,
    };
    let data_err = |e: crate::error::Error| TrainError::Data(format!("validation set {:?}: {e}", set.name));
    let mut loader = Loader::new(lc).map_err(data_err)?;
    if loader.seq_len() != seq_len {
        return Err(TrainError::config(
            "validation.sets",
            format!("{:?} ({}) holds rows of {} tokens, training uses seq_len {seq_len}", set.name, set.shards.display(), loader.seq_len()),
        ));
    }
    let started = Instant::now();
    let mut p = Partial { loss_sum: 0.0, targets: 0, batches: 0, seconds: 0.0 };
    while cfg.max_batches == 0 || p.batches < cfg.max_batches {
        let Some(b) = loader.next_batch().map_err(data_err)? else { break };
        p.batches += 1;
        // The last step of a pass may leave this rank no rows.
        if b.batch == 0 {
            continue;
        }
        let inp = model.inputs(&b)?;
        if inp.targets.count == 0 {
            continue;
        }
        p.loss_sum += model.loss_sum(ops, &inp)?;
        p.targets += inp.targets.count as u64;
    }
    p.seconds = started.elapsed().as_secs_f64();
    Ok(p)
}

/// Turns the (global) partial sums of every set into metrics records; a set without a single
/// counted target is an error (an empty or all-prompt directory measures nothing).
pub fn records(step: u64, stage: Option<u32>, sets: &[ValSet], sums: &[Partial]) -> Result<Vec<ValMetrics>> {
    sets.iter()
        .zip(sums)
        .map(|(s, p)| {
            if p.targets == 0 {
                return Err(TrainError::Data(format!(
                    "validation set {:?} ({}): no counted target in {} micro-batches",
                    s.name,
                    s.shards.display(),
                    p.batches
                )));
            }
            Ok(ValMetrics {
                step,
                stage,
                set: s.name.clone(),
                val_loss: p.loss_sum / p.targets as f64,
                targets: p.targets,
                batches: p.batches,
                eval_s: p.seconds,
            })
        })
        .collect()
}
