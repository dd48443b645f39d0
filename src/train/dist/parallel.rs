//! Data parallelism over a [`Collective`]: every rank runs the same model on its own rows, and
//! the gradients are summed across ranks before the optimizer step.
//!
//! * **Buckets.** Parameters are grouped, last first (the order backward finishes them), into
//!   buckets of at most `distributed.bucket_mb` MiB of f32 gradient; one collective per bucket.
//!   A parameter larger than a bucket gets one of its own. (Backward is not yet overlapped with
//!   communication: the buckets go out after the whole backward.)
//! * **DDP.** Each bucket is all-reduced; every rank runs the full AdamW on identical gradients,
//!   so the weights stay identical.
//! * **ZeRO-1/2.** Each bucket is padded to a multiple of W and cut into W equal chunks; rank `r`
//!   owns chunk `r` of every bucket: the f32 master weights and moments of those elements
//!   ([`AdamState`] pieces of parameters). ZeRO-1 all-reduces a bucket and keeps its chunk;
//!   ZeRO-2 reduce-scatters it (half the traffic; the full gradient is freed bucket by bucket).
//!   The gradient norm is the rank-ordered sum of the ranks' partial sums of squares; each rank
//!   steps its pieces, then the updated masters are all-gathered per bucket into the model's
//!   parameters.
//!
//! The loss scale is 1 / (counted targets over all ranks and micro-batches), so the summed
//! gradient is the gradient of the global mean loss: W ranks with batch B equal one rank with
//! batch W·B up to summation order.

use std::ops::Range;

use candle_core::{DType, Device, Tensor};

use super::super::error::{Result, TrainError};
use super::super::model::{Grads, ParamSpec};
use super::super::ops::{AdamState, Ops};
use super::super::optim::{AdamW, StepStats};
use super::collective::Collective;
use super::{DistConfig, DistMode};

/// Parameters whose gradients travel together.
#[derive(Debug, Clone)]
struct Bucket {
    /// Parameter indices, in bucket layout order.
    params: Vec<usize>,
    /// Offset of each parameter in the bucket.
    offsets: Vec<usize>,
    /// Elements of the parameters.
    numel: usize,
    /// Elements per rank's chunk: `ceil(numel / W)`.
    chunk: usize,
}

/// The part of a parameter that lies in this rank's chunk of a bucket.
#[derive(Debug, Clone)]
struct Piece {
    param: usize,
    /// First element within the (flattened) parameter.
    param_off: usize,
    /// First element within this rank's chunk.
    chunk_off: usize,
    len: usize,
}

/// This rank's ZeRO shard: optimizer state of its pieces.
#[derive(Debug)]
struct Shard {
    pieces: Vec<Piece>,
    /// Per bucket, its pieces (a range of `pieces`).
    by_bucket: Vec<Range<usize>>,
    states: Vec<AdamState>,
}

/// Step totals over all ranks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StepCounts {
    /// Micro-batches (global: the fewest any rank had — 0 ends the run on every rank).
    pub batches: u64,
    /// Counted targets (global: summed).
    pub targets: u64,
    /// Tokens (global: summed).
    pub tokens: u64,
    /// Highest curriculum stage (global: highest over ranks).
    pub stage: Option<u32>,
}

/// A rank's data-parallel state.
pub struct DataParallel {
    comm: Box<dyn Collective>,
    mode: DistMode,
    buckets: Vec<Bucket>,
    shard: Option<Shard>,
    specs: Vec<ParamSpec>,
    decay: Vec<bool>,
}

/// Checks that every rank of `comm` holds the same `value` of `what`.
pub fn agree(comm: &mut dyn Collective, what: &str, value: f64) -> Result<()> {
    let all = comm.all_gather_f64(&[value])?;
    if let Some((r, v)) = all.iter().enumerate().find(|(_, v)| v[0].to_bits() != all[0][0].to_bits()) {
        return Err(TrainError::Dist(format!(
            "ranks disagree on {what}: rank 0 has {}, rank {r} has {} (every rank needs the same config and a shared output directory)",
            all[0][0], v[0]
        )));
    }
    Ok(())
}

fn flat(t: &Tensor) -> Result<Tensor> {
    Ok(t.flatten_all()?.to_dtype(DType::F32)?.contiguous()?)
}

impl DataParallel {
    /// Sets up data parallelism for `mode` (not `none`): buckets, rank 0's master weights
    /// broadcast into `opt` and `params` (so every rank starts from the same weights), and under
    /// ZeRO this rank's shard of the optimizer state, moved to `device` (the full state in `opt`
    /// is dropped).
    pub fn new(
        comm: Box<dyn Collective>,
        cfg: &DistConfig,
        specs: &[ParamSpec],
        opt: &mut AdamW,
        params: &mut [Tensor],
        device: &Device,
    ) -> Result<DataParallel> {
        if !cfg.mode.is_parallel() {
            return Err(TrainError::config("distributed.mode", "data parallelism needs ddp, zero1 or zero2"));
        }
        let w = comm.world_size();
        let cap = ((cfg.bucket_mb * (1 << 20) as f64) / 4.0).max(1.0) as usize;
        let mut buckets: Vec<Bucket> = Vec::new();
        let mut cur = Bucket { params: Vec::new(), offsets: Vec::new(), numel: 0, chunk: 0 };
        for i in (0..specs.len()).rev() {
            let n = specs[i].numel();
            if !cur.params.is_empty() && cur.numel + n > cap {
                buckets.push(std::mem::replace(&mut cur, Bucket { params: Vec::new(), offsets: Vec::new(), numel: 0, chunk: 0 }));
            }
            cur.offsets.push(cur.numel);
            cur.params.push(i);
            cur.numel += n;
        }
        if !cur.params.is_empty() {
            buckets.push(cur);
        }
        for b in &mut buckets {
            b.chunk = b.numel.div_ceil(w);
        }
        let decay = opt.states.iter().map(|s| s.decay).collect();
        let mut dp = DataParallel { comm, mode: cfg.mode, buckets, shard: None, specs: specs.to_vec(), decay };
        dp.broadcast_masters(opt, params)?;
        if matches!(cfg.mode, DistMode::Zero1 | DistMode::Zero2) {
            dp.shard = Some(dp.make_shard(opt, device)?);
            opt.states = Vec::new();
        }
        Ok(dp)
    }

    /// This rank.
    pub fn rank(&self) -> usize {
        self.comm.rank()
    }

    /// Number of ranks.
    pub fn world_size(&self) -> usize {
        self.comm.world_size()
    }

    /// The collective backend's name.
    pub fn backend(&self) -> &'static str {
        self.comm.name()
    }

    /// Buckets (for logs and tests).
    pub fn num_buckets(&self) -> usize {
        self.buckets.len()
    }

    /// Waits for every rank.
    pub fn barrier(&mut self) -> Result<()> {
        self.comm.barrier()
    }

    fn broadcast_masters(&mut self, opt: &mut AdamW, params: &mut [Tensor]) -> Result<()> {
        if self.comm.world_size() == 1 {
            return Ok(());
        }
        for b in 0..self.buckets.len() {
            let parts = self.buckets[b].params.iter().map(|&i| flat(&opt.states[i].master)).collect::<Result<Vec<_>>>()?;
            let got = self.comm.broadcast(&Tensor::cat(&parts, 0)?, 0)?;
            for (k, &i) in self.buckets[b].params.iter().enumerate() {
                let st = &mut opt.states[i];
                let m = got.narrow(0, self.buckets[b].offsets[k], self.specs[i].numel())?.reshape(st.master.shape())?;
                st.master = m.to_device(st.master.device())?.to_dtype(st.master.dtype())?.contiguous()?;
                params[i] = st.master.to_device(params[i].device())?.to_dtype(params[i].dtype())?;
            }
        }
        Ok(())
    }

    fn pieces_of(&self, b: usize) -> Vec<Piece> {
        let bk = &self.buckets[b];
        let r = self.comm.rank();
        let (lo, hi) = (r * bk.chunk, ((r + 1) * bk.chunk).min(bk.numel));
        let mut out = Vec::new();
        for (k, &i) in bk.params.iter().enumerate() {
            let (s, e) = (bk.offsets[k], bk.offsets[k] + self.specs[i].numel());
            let (a, z) = (s.max(lo), e.min(hi));
            if a < z {
                out.push(Piece { param: i, param_off: a - s, chunk_off: a - lo, len: z - a });
            }
        }
        out
    }

    fn make_shard(&self, opt: &AdamW, device: &Device) -> Result<Shard> {
        let mut pieces = Vec::new();
        let mut by_bucket = Vec::new();
        for b in 0..self.buckets.len() {
            let start = pieces.len();
            pieces.extend(self.pieces_of(b));
            by_bucket.push(start..pieces.len());
        }
        let cut = |t: &Tensor, p: &Piece| -> Result<Tensor> {
            Ok(t.flatten_all()?.narrow(0, p.param_off, p.len)?.to_device(device)?.to_dtype(DType::F32)?.copy()?)
        };
        let states = pieces
            .iter()
            .map(|p| {
                let s = &opt.states[p.param];
                Ok(AdamState {
                    master: cut(&s.master, p)?,
                    exp_avg: cut(&s.exp_avg, p)?,
                    exp_avg_sq: cut(&s.exp_avg_sq, p)?,
                    decay: s.decay,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Shard { pieces, by_bucket, states })
    }

    /// Step totals over all ranks from this rank's.
    pub fn global_counts(&mut self, local: StepCounts) -> Result<StepCounts> {
        let stage = local.stage.map(|s| s as f64 + 1.0).unwrap_or(0.0);
        let all = self.comm.all_gather_f64(&[local.batches as f64, local.targets as f64, local.tokens as f64, stage])?;
        let mut g = StepCounts { batches: u64::MAX, ..Default::default() };
        let mut top = 0.0f64;
        for v in &all {
            g.batches = g.batches.min(v[0] as u64);
            g.targets += v[1] as u64;
            g.tokens += v[2] as u64;
            top = top.max(v[3]);
        }
        g.stage = (top > 0.0).then_some((top - 1.0) as u32);
        Ok(g)
    }

    /// Σ over ranks of `x`, in rank order (identical on every rank).
    pub fn sum_f64(&mut self, x: f64) -> Result<f64> {
        Ok(self.comm.all_gather_f64(&[x])?.iter().map(|v| v[0]).sum())
    }

    /// Checks that every rank holds the same `value` of `what`.
    pub fn agree(&mut self, what: &str, value: f64) -> Result<()> {
        agree(self.comm.as_mut(), what, value)
    }

    fn bucket_grads(&self, b: usize, grads: &mut Grads, dev: &Device) -> Result<Tensor> {
        let bk = &self.buckets[b];
        let mut parts = Vec::with_capacity(bk.params.len() + 1);
        for &i in &bk.params {
            parts.push(match grads.slots[i].take() {
                Some(g) => flat(&g)?,
                None => Tensor::zeros(self.specs[i].numel(), DType::F32, dev)?,
            });
        }
        let pad = bk.chunk * self.comm.world_size() - bk.numel;
        if pad > 0 && self.shard.is_some() {
            parts.push(Tensor::zeros(pad, DType::F32, dev)?);
        }
        Ok(Tensor::cat(&parts, 0)?)
    }

    /// Sums the ranks' gradients and takes one AdamW step at learning rate `lr` (clipping by
    /// the global norm), writing the new weights into `params`.
    pub fn step(&mut self, ops: &dyn Ops, opt: &mut AdamW, mut grads: Grads, params: &mut [Tensor], lr: f64) -> Result<StepStats> {
        let dev = params[0].device().clone();
        if self.shard.is_none() {
            for b in 0..self.buckets.len() {
                let sum = self.comm.all_reduce_sum(&self.bucket_grads(b, &mut grads, &dev)?)?;
                for (k, &i) in self.buckets[b].params.iter().enumerate() {
                    let shape = self.specs[i].shape.clone();
                    grads.slots[i] = Some(sum.narrow(0, self.buckets[b].offsets[k], self.specs[i].numel())?.reshape(shape)?);
                }
            }
            return opt.step(ops, &grads, params, lr);
        }
        // ZeRO: this rank's chunk of every bucket's summed gradient.
        let rank = self.comm.rank();
        let mut piece_grads: Vec<Tensor> = Vec::new();
        for b in 0..self.buckets.len() {
            let full = self.bucket_grads(b, &mut grads, &dev)?;
            let chunk = self.buckets[b].chunk;
            let mine = match self.mode {
                DistMode::Zero1 => self.comm.all_reduce_sum(&full)?.narrow(0, rank * chunk, chunk)?,
                _ => self.comm.reduce_scatter(&full)?,
            };
            drop(full);
            let shard = self.shard.as_ref().expect("zero");
            for p in &shard.pieces[shard.by_bucket[b].clone()] {
                piece_grads.push(mine.narrow(0, p.chunk_off, p.len)?);
            }
        }
        drop(grads);
        let local = if piece_grads.is_empty() { 0.0 } else { ops.sum_squares(&piece_grads)? };
        let grad_norm = self.sum_f64(local)?.sqrt();
        let hp = opt.begin_step(lr, grad_norm)?;
        let shard = self.shard.as_mut().expect("zero");
        if !shard.states.is_empty() {
            // The f32 "params" the step writes are the masters themselves: same values, and
            // the model's parameters come from the all-gather below.
            let mut outs: Vec<Tensor> = shard.states.iter().map(|s| s.master.clone()).collect();
            ops.adamw_step(&mut shard.states, &piece_grads, &mut outs, &hp)?;
        }
        drop(piece_grads);
        for b in 0..self.buckets.len() {
            let full = self.gather_field(b, |s| &s.master, &dev)?;
            for (k, &i) in self.buckets[b].params.iter().enumerate() {
                let p = full.narrow(0, self.buckets[b].offsets[k], self.specs[i].numel())?.reshape(self.specs[i].shape.as_slice())?;
                params[i] = p.to_dtype(params[i].dtype())?;
            }
        }
        Ok(StepStats { grad_norm, clip_coef: hp.grad_scale })
    }

    /// The whole bucket `b` of one optimizer field, all-gathered from the ranks' chunks.
    fn gather_field(&mut self, b: usize, field: impl Fn(&AdamState) -> &Tensor, dev: &Device) -> Result<Tensor> {
        let shard = self.shard.as_ref().expect("zero");
        let chunk = self.buckets[b].chunk;
        let mut parts: Vec<Tensor> =
            shard.states[shard.by_bucket[b].clone()].iter().map(|s| field(s).to_device(dev)).collect::<candle_core::Result<_>>()?;
        let have: usize = shard.pieces[shard.by_bucket[b].clone()].iter().map(|p| p.len).sum();
        if have < chunk {
            parts.push(Tensor::zeros(chunk - have, DType::F32, dev)?);
        }
        let local = Tensor::cat(&parts, 0)?;
        self.comm.all_gather(&local)
    }

    /// Under ZeRO, the full optimizer state gathered from every rank's shard (every rank takes
    /// part); rank 0 gets it, on the CPU, in parameter order, the others `None`. Under DDP
    /// `None` everywhere (each rank holds the full state already).
    pub fn gather_states(&mut self) -> Result<Option<Vec<AdamState>>> {
        if self.shard.is_none() {
            return Ok(None);
        }
        let dev = match self.shard.as_ref().and_then(|s| s.states.first()) {
            Some(s) => s.master.device().clone(),
            None => Device::Cpu,
        };
        let n = self.specs.len();
        let mut fields: [Vec<Option<Tensor>>; 3] = [vec![None; n], vec![None; n], vec![None; n]];
        let rank0 = self.comm.rank() == 0;
        for b in 0..self.buckets.len() {
            for (f, slot) in fields.iter_mut().enumerate() {
                let full = match f {
                    0 => self.gather_field(b, |s| &s.master, &dev)?,
                    1 => self.gather_field(b, |s| &s.exp_avg, &dev)?,
                    _ => self.gather_field(b, |s| &s.exp_avg_sq, &dev)?,
                };
                if !rank0 {
                    continue;
                }
                for (k, &i) in self.buckets[b].params.iter().enumerate() {
                    let t = full.narrow(0, self.buckets[b].offsets[k], self.specs[i].numel())?.reshape(self.specs[i].shape.as_slice())?;
                    slot[i] = Some(t.to_device(&Device::Cpu)?.copy()?);
                }
            }
        }
        if !rank0 {
            return Ok(None);
        }
        let [m, v1, v2] = fields;
        let states = m
            .into_iter()
            .zip(v1)
            .zip(v2)
            .zip(&self.decay)
            .map(|(((m, a), b), &decay)| AdamState {
                master: m.expect("every parameter is in a bucket"),
                exp_avg: a.expect("every parameter is in a bucket"),
                exp_avg_sq: b.expect("every parameter is in a bucket"),
                decay,
            })
            .collect();
        Ok(Some(states))
    }
}
