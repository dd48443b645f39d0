//! The training loop: micro-batches from a [`BatchSource`] in curriculum order, gradient
//! accumulation with the loss averaged over all counted targets of a step, clipping, AdamW,
//! the schedule, metrics, and checkpoints from which a killed run resumes bit for bit.

use std::path::PathBuf;
use std::time::Instant;

use candle_core::DType;

use super::checkpoint::{self, CheckpointData, TrainerState, STATE_FORMAT};
use super::config::{DeviceKind, TrainConfig};
use super::data::{BatchSource, ShardSource, SourceKind, StageKind, SyntheticSource};
use super::dist::{self, Collective, DataParallel, DistMode, StepCounts};
use super::error::{Result, TrainError};
use super::hf_files::ModelKind;
use super::metrics::{process_memory, MetricsLog, StepMetrics, H100_BF16_PEAK};
use super::model::{init_params, param_specs, Grads, Qwen2};
use super::ops::{self, Ops};
use super::optim::AdamW;
use super::plan::{self, StepShape};
use super::validation;

/// What a run did.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RunSummary {
    /// Steps done (including those of earlier, resumed-from runs).
    pub steps: u64,
    /// Steps the schedule spans.
    pub total_steps: u64,
    /// The step this process resumed from, if it did.
    pub resumed_from: Option<u64>,
    /// Loss of the last step.
    pub final_loss: Option<f64>,
    /// Tokens processed over the whole run.
    pub tokens: u64,
    /// The last checkpoint written.
    pub checkpoint: Option<PathBuf>,
    /// Wall time of this process's part.
    pub elapsed_s: f64,
}

/// A training run in progress.
pub struct Trainer {
    /// The run's config.
    pub cfg: TrainConfig,
    /// The model (compute-dtype parameters).
    pub model: Qwen2,
    /// Optimizer state (f32 master weights and moments).
    pub opt: AdamW,
    /// Optimizer steps done.
    pub step: u64,
    /// Steps the schedule spans.
    pub total_steps: u64,
    /// The step this process resumed from.
    pub resumed_from: Option<u64>,
    /// What the memory planner chose (recomputed layers, cross-entropy chunk).
    pub plan: plan::Plan,
    ops: Box<dyn Ops>,
    source: Box<dyn BatchSource>,
    hash: String,
    /// Rank 0 (or a single process) only.
    metrics: Option<MetricsLog>,
    /// Data parallelism (`distributed.mode` other than `none`, started by a launcher).
    dist: Option<DataParallel>,
    tokens: u64,
    targets: u64,
    last_lr: f64,
    last_stage: Option<u32>,
    last_loss: Option<f64>,
    last_saved: Option<(u64, PathBuf)>,
    /// The step of the last validation (a checkpoint implies the validation due at its step ran).
    last_eval: Option<u64>,
    peak_flops: Option<f64>,
    /// First step and step count of each curriculum stage, when stages set their own LR.
    stage_steps: Option<Vec<(u64, u64)>>,
}

/// First step and number of steps of each stage: step `k` (micro-batches `k·ga … k·ga + ga − 1`)
/// belongs to the stage of its last micro-batch, as its metrics stage does.
pub fn stage_steps(stage_batches: &[u64], grad_accum: u64) -> Vec<(u64, u64)> {
    let ga = grad_accum.max(1);
    let mut before = 0u64;
    let starts: Vec<u64> = stage_batches
        .iter()
        .map(|&n| {
            let start = (before + 1).div_ceil(ga) - 1;
            before += n;
            start
        })
        .collect();
    let end = before.div_ceil(ga);
    starts.iter().enumerate().map(|(i, &s)| (s, starts.get(i + 1).copied().unwrap_or(end).max(s) - s)).collect()
}

/// Learning rate of 0-based `step` of `total`: the run's schedule, or, inside a stage that sets
/// its own, that stage's multiplier and schedule (over the stage's own steps). A pure function
/// of the step, so a resumed run continues the schedule exactly.
pub fn lr_at(cfg: &TrainConfig, stage_steps: Option<&[(u64, u64)]>, step: u64, total: u64) -> f64 {
    let run = |peak: f64| cfg.schedule.lr(peak, step, total);
    let Some(stages) = stage_steps else { return run(cfg.optimizer.lr) };
    let Some(i) = stages.iter().rposition(|&(start, n)| n > 0 && start <= step) else { return run(cfg.optimizer.lr) };
    let st = &cfg.data.stages[i];
    let peak = cfg.optimizer.lr * st.lr_multiplier;
    match &st.schedule {
        Some(s) => s.lr(peak, step - stages[i].0, stages[i].1),
        None => run(peak),
    }
}

impl Trainer {
    /// Sets up a run: resumes from the newest complete checkpoint in `cfg.output/checkpoints`
    /// when there is one (same config hash required), else starts from `cfg.model`.
    pub fn new(cfg: &TrainConfig, source: Box<dyn BatchSource>) -> Result<Trainer> {
        Trainer::build(cfg, source, None)
    }

    /// Sets up rank `comm.rank()` of a data-parallel run (`cfg.distributed.mode` must not be
    /// `none`): `source` yields this rank's share of the batches (see `dist::RankSplit`), and every
    /// rank's `cfg.output` is the same directory, which only rank 0 writes.
    pub fn new_distributed(cfg: &TrainConfig, source: Box<dyn BatchSource>, comm: Box<dyn Collective>) -> Result<Trainer> {
        if !cfg.distributed.mode.is_parallel() {
            return Err(TrainError::config("distributed.mode", "a data-parallel trainer needs ddp, zero1 or zero2"));
        }
        Trainer::build(cfg, source, Some(comm))
    }

    fn build(cfg: &TrainConfig, mut source: Box<dyn BatchSource>, mut comm: Option<Box<dyn Collective>>) -> Result<Trainer> {
        cfg.validate()?;
        let device = cfg.device()?;
        // Under ZeRO the full optimizer state is built on the host; each rank moves its shard to
        // the device (the full state would not fit on one GPU for the models ZeRO is for).
        let zero = comm.is_some() && matches!(cfg.distributed.mode, DistMode::Zero1 | DistMode::Zero2);
        let opt_device = if zero { candle_core::Device::Cpu } else { device.clone() };
        let rank0 = comm.as_ref().is_none_or(|c| c.rank() == 0);
        let arch = cfg.model.arch()?;
        let specs = param_specs(&arch);
        let root = cfg.output.join("checkpoints");
        if rank0 {
            checkpoint::remove_partial(&root)?;
        }
        let hash = cfg.math_hash();
        let total_steps = match (cfg.max_steps, source.total_batches()) {
            (Some(n), _) => n,
            (None, Some(b)) => b.div_ceil(cfg.grad_accum as u64),
            (None, None) => return Err(TrainError::config("max_steps", "the batch source does not know its length: set max_steps")),
        };
        if total_steps == 0 {
            return Err(TrainError::Data("the curriculum yields no full micro-batch".into()));
        }
        let stage_steps = if cfg.data.stages.iter().any(|s| s.has_own_lr()) {
            match source.stage_batches() {
                Some(b) if b.len() == cfg.data.stages.len() => Some(stage_steps(&b, cfg.grad_accum as u64)),
                _ => {
                    return Err(TrainError::config(
                        "data.stages",
                        "a stage sets lr_multiplier or schedule, but this batch source does not know its stage sizes",
                    ))
                }
            }
        } else {
            None
        };
        if let (Some(c), Some(ss)) = (comm.as_mut(), stage_steps.as_ref()) {
            // Each rank places the stages from its own share of the source (`RankSplit`); the lr is
            // a function of the step, so a rank that placed a stage elsewhere would step at
            // another learning rate. 52 bits of a hash go through the f64 exactly.
            let mut h = xxhash_rust::xxh3::Xxh3::new();
            for &(start, n) in ss {
                h.update(&start.to_le_bytes());
                h.update(&n.to_le_bytes());
            }
            dist::parallel::agree(c.as_mut(), "the first step and length of each curriculum stage", (h.digest() >> 12) as f64)?;
        }
        let decay: Vec<bool> = specs.iter().map(|s| cfg.optimizer.decay_norms_and_biases || !s.is_norm_or_bias()).collect();
        let mut resumed = None;
        let latest = checkpoint::list(&root)?.pop();
        if let Some(c) = comm.as_mut() {
            dist::parallel::agree(c.as_mut(), "the checkpoint to resume from", latest.as_ref().map_or(-1.0, |(s, _)| *s as f64))?;
        }
        let mut opt = match latest {
            Some((_, dir)) => {
                let st = checkpoint::load_state(&dir)?;
                if st.config_hash != hash {
                    return Err(TrainError::file(
                        &dir,
                        format!(
                            "written by a run with config hash {}, this config hashes to {hash}: use another output directory",
                            st.config_hash
                        ),
                    ));
                }
                let states = checkpoint::load_optimizer(&dir, &specs, &decay, &opt_device)?;
                source.restore(&st.loader)?;
                tracing::info!("resuming from {} (step {})", dir.display(), st.step);
                let opt = AdamW { cfg: cfg.optimizer.clone(), states, steps: st.optimizer_steps };
                resumed = Some(st);
                opt
            }
            None => {
                let masters = match cfg.model.weights_dir()? {
                    Some(dir) => checkpoint::load_weights(&dir, &specs, &opt_device)?,
                    None => init_params(&arch, cfg.seed, DType::F32, &opt_device)?,
                };
                AdamW::new(&cfg.optimizer, &specs, &masters)?
            }
        };
        let mut model = Qwen2::new(&arch, cfg.dtype.dtype(), &opt.masters(), &device)?;
        let dist = match comm {
            Some(c) => Some(DataParallel::new(c, &cfg.distributed, &specs, &mut opt, &mut model.params, &device)?),
            None => None,
        };
        // With the weights and the optimizer state placed, what is left decides recomputation
        // and the cross-entropy chunk.
        let shape = StepShape {
            arch: &arch,
            batch: cfg.batch_size,
            seq_len: cfg.seq_len,
            micro_batches: cfg.grad_accum,
            compute_bytes: cfg.dtype.dtype().size_in_bytes() as u64,
        };
        let plan = plan::plan(&shape, plan::available_bytes(&device)?, cfg.recompute, cfg.ce_chunk_tokens)?;
        if plan.fits {
            tracing::info!("{plan}");
        } else {
            tracing::warn!("{plan}");
        }
        model.recompute_layers = plan.recompute_layers;
        model.ce_chunk = plan.ce_chunk;
        let step = resumed.as_ref().map(|s| s.step).unwrap_or(0);
        let stage_names: Vec<String> = cfg.data.stages.iter().map(|s| s.name.clone()).collect();
        let metrics = if rank0 { Some(MetricsLog::open(&cfg.output, step, total_steps, &cfg.metrics, &stage_names)?) } else { None };
        let peak_flops = cfg.metrics.peak_flops.or((cfg.device == DeviceKind::Cuda).then_some(H100_BF16_PEAK));
        Ok(Trainer {
            cfg: cfg.clone(),
            model,
            opt,
            step,
            total_steps,
            resumed_from: resumed.as_ref().map(|s| s.step),
            plan,
            ops: ops::for_device(&device),
            source,
            hash,
            metrics,
            dist,
            tokens: resumed.as_ref().map(|s| s.tokens).unwrap_or(0),
            targets: resumed.as_ref().map(|s| s.targets).unwrap_or(0),
            last_lr: resumed.as_ref().map(|s| s.lr).unwrap_or(0.0),
            last_stage: resumed.as_ref().and_then(|s| s.stage),
            last_loss: None,
            last_saved: None,
            last_eval: resumed.as_ref().map(|s| s.step),
            peak_flops,
            stage_steps,
        })
    }

    /// Runs one optimizer step; `None` when the schedule or the data is done.
    pub fn step_once(&mut self) -> Result<Option<StepMetrics>> {
        if self.step >= self.total_steps {
            return Ok(None);
        }
        let cursor = self.source.state();
        let t0 = Instant::now();
        let mut batches = Vec::with_capacity(self.cfg.grad_accum);
        while batches.len() < self.cfg.grad_accum {
            match self.source.next_batch()? {
                Some(b) => batches.push(b),
                None => break,
            }
        }
        if batches.is_empty() && self.dist.is_none() {
            return Ok(None);
        }
        let mut stage = batches.iter().filter_map(|b| b.stage.as_ref().and_then(|s| s.iter().max().copied())).max();
        let inputs = batches.iter().map(|b| self.model.inputs(b)).collect::<Result<Vec<_>>>()?;
        let mut count: usize = inputs.iter().map(|i| i.targets.count).sum();
        let mut tokens: u64 = batches.iter().map(|b| (b.batch * b.seq_len) as u64).sum();
        if let Some(d) = self.dist.as_mut() {
            // The step's loss is the mean over every rank's counted targets.
            let g = d.global_counts(StepCounts { batches: batches.len() as u64, targets: count as u64, tokens, stage })?;
            if g.batches == 0 {
                return Ok(None);
            }
            (count, tokens, stage) = (g.targets as usize, g.tokens, g.stage);
        }
        if self.last_stage.is_some() && stage != self.last_stage && self.step > 0 {
            // The previous stage ended with the previous step: evaluate and save that state
            // (cursor before this step's batches).
            self.validate()?;
            if self.cfg.checkpoint.at_stage_end {
                self.save(cursor)?;
            }
        }
        let lr = lr_at(&self.cfg, self.stage_steps.as_deref(), self.step, self.total_steps);
        let (loss, grad_norm) = if count == 0 {
            tracing::warn!("step {}: no counted target in the batch, update skipped", self.step + 1);
            (None, None)
        } else {
            let mut grads = Grads::new(self.model.params.len());
            let scale = 1.0 / count as f64;
            let mut loss_sum = 0.0;
            for inp in &inputs {
                loss_sum += self.model.forward_backward(self.ops.as_ref(), inp, scale, &mut grads)?;
            }
            let stats = match self.dist.as_mut() {
                Some(d) => {
                    loss_sum = d.sum_f64(loss_sum)?;
                    d.step(self.ops.as_ref(), &mut self.opt, grads, &mut self.model.params, lr)?
                }
                None => self.opt.step(self.ops.as_ref(), &grads, &mut self.model.params, lr)?,
            };
            (Some(loss_sum / count as f64), Some(stats.grad_norm))
        };
        if matches!(self.model.device(), candle_core::Device::Cuda(_)) {
            self.model.device().synchronize()?;
        }
        let step_s = t0.elapsed().as_secs_f64();
        self.step += 1;
        self.tokens += tokens;
        self.targets += count as u64;
        self.last_lr = lr;
        self.last_stage = stage;
        self.last_loss = loss;
        let tokens_per_s = tokens as f64 / step_s.max(1e-9);
        let world = self.dist.as_ref().map_or(1, |d| d.world_size()) as f64;
        let m = StepMetrics {
            step: self.step,
            stage,
            loss,
            lr,
            grad_norm,
            tokens,
            targets: count as u64,
            tokens_per_s,
            mfu: self.peak_flops.map(|p| 6.0 * self.model.num_params() as f64 * tokens_per_s / (p * world)),
            memory_bytes: memory_bytes(self.model.device()),
            step_s,
        };
        if let Some(ml) = self.metrics.as_mut() {
            ml.log(&m)?;
        }
        Ok(Some(m))
    }

    /// Evaluates every validation set at the current step (once per step; on every rank alike,
    /// which each evaluate their share) and logs the losses.
    pub fn validate(&mut self) -> Result<()> {
        if !self.cfg.validation.enabled() || self.last_eval == Some(self.step) {
            return Ok(());
        }
        let (rank, world) = self.dist.as_ref().map_or((0, 1), |d| (d.rank(), d.world_size()));
        let shape = (self.cfg.batch_size, self.cfg.seq_len, self.cfg.seed);
        let mut sums = Vec::with_capacity(self.cfg.validation.sets.len());
        for set in &self.cfg.validation.sets {
            let mut p = validation::evaluate_set(&self.model, self.ops.as_ref(), &self.cfg.validation, set, shape, (rank, world))?;
            if let Some(d) = self.dist.as_mut() {
                p.loss_sum = d.sum_f64(p.loss_sum)?;
                p.targets = d.sum_f64(p.targets as f64)? as u64;
                p.batches = d.sum_f64(p.batches as f64)? as u64;
            }
            sums.push(p);
        }
        let recs = validation::records(self.step, self.last_stage, &self.cfg.validation.sets, &sums)?;
        if let Some(ml) = self.metrics.as_mut() {
            ml.log_val(&recs)?;
        }
        self.last_eval = Some(self.step);
        Ok(())
    }

    /// Writes a checkpoint of the current state with loader cursor `cursor`.
    fn save(&mut self, cursor: serde_json::Value) -> Result<PathBuf> {
        if let Some((s, dir)) = &self.last_saved {
            if *s == self.step {
                return Ok(dir.clone());
            }
        }
        let state = TrainerState {
            format: STATE_FORMAT,
            step: self.step,
            optimizer_steps: self.opt.steps,
            total_steps: self.total_steps,
            config_hash: self.hash.clone(),
            loader: cursor,
            seed: self.cfg.seed,
            lr: self.last_lr,
            stage: self.last_stage,
            tokens: self.tokens,
            targets: self.targets,
            version: env!("CARGO_PKG_VERSION").to_string(),
        };
        let root = self.cfg.output.join("checkpoints");
        // Under ZeRO every rank takes part in gathering the optimizer state; rank 0 writes.
        let gathered = match self.dist.as_mut() {
            Some(d) => d.gather_states()?,
            None => None,
        };
        let dir = match self.metrics.as_ref() {
            Some(ml) => {
                let states = gathered.as_deref().unwrap_or(&self.opt.states);
                let kind = if self.cfg.data.stages.iter().any(|s| s.kind == StageKind::Sft) { ModelKind::Chat } else { ModelKind::Base };
                let data = CheckpointData { arch: &self.model.cfg, specs: &self.model.specs, states, state: &state, kind };
                let dir = checkpoint::save(&root, &self.cfg.checkpoint, &data)?;
                ml.plot()?;
                dir
            }
            None => checkpoint::dir_for(&root, self.step),
        };
        if let Some(d) = self.dist.as_mut() {
            d.barrier()?;
        }
        self.last_saved = Some((self.step, dir.clone()));
        Ok(dir)
    }

    /// Runs at most `max` more steps, checkpointing every `checkpoint.every` steps; returns
    /// whether the run is complete. Without a final save (an interrupted run looks like this).
    pub fn run_steps(&mut self, max: u64) -> Result<bool> {
        for _ in 0..max {
            let Some(m) = self.step_once()? else { return Ok(true) };
            let val_every = self.cfg.validation.every;
            if val_every > 0 && m.step.is_multiple_of(val_every) {
                self.validate()?;
            }
            let every = self.cfg.checkpoint.every;
            if every > 0 && m.step % every == 0 {
                let cursor = self.source.state();
                self.save(cursor)?;
            }
        }
        Ok(self.step >= self.total_steps)
    }

    /// Runs to the end of the schedule (or of the data) and writes the final checkpoint.
    pub fn run(&mut self) -> Result<RunSummary> {
        let t0 = Instant::now();
        self.run_steps(u64::MAX)?;
        if self.step < self.total_steps {
            tracing::warn!("the data ran out at step {} of {}", self.step, self.total_steps);
        }
        self.validate()?;
        let cursor = self.source.state();
        let dir = self.save(cursor)?;
        if let Some(ml) = self.metrics.as_ref() {
            ml.finish();
        }
        Ok(RunSummary {
            steps: self.step,
            total_steps: self.total_steps,
            resumed_from: self.resumed_from,
            final_loss: self.last_loss,
            tokens: self.tokens,
            checkpoint: Some(dir),
            elapsed_s: t0.elapsed().as_secs_f64(),
        })
    }
}

/// Memory in use: the process RSS on CPU; on CUDA the device figure comes with the CUDA backend.
fn memory_bytes(device: &candle_core::Device) -> Option<u64> {
    match device {
        candle_core::Device::Cpu => process_memory().map(|m| m.0),
        _ => None,
    }
}

/// The batch source a config names, for a model with vocabulary `vocab`.
pub fn open_source(cfg: &TrainConfig, vocab: usize) -> Result<Box<dyn BatchSource>> {
    match cfg.data.source {
        SourceKind::Synthetic => Ok(Box::new(SyntheticSource::new(&cfg.data, cfg.seed, vocab, cfg.batch_size, cfg.seq_len)?)),
        SourceKind::Shards => Ok(Box::new(ShardSource::new(&cfg.data, cfg.seed, cfg.batch_size, cfg.seq_len)?)),
    }
}

/// Runs a training config end to end (the `train:<name>` pipeline stage).
pub fn run(cfg: &TrainConfig) -> Result<RunSummary> {
    let arch = cfg.model.arch()?;
    let source = open_source(cfg, arch.vocab_size)?;
    Trainer::new(cfg, source)?.run()
}
