//! `coretech bench train --world-size N`: data-parallel training throughput with N ranks as
//! threads of one process (CPU: TCP collective on localhost; CUDA: one GPU per rank, `gpu + r`,
//! NCCL with feature `nccl`), next to the same code path with 1 rank measured in the same call,
//! giving tokens/s per rank and the scaling efficiency. Random tokens, every next token counted
//! (as `bench train`), a different batch on every rank.
//!
//! On a CPU the ranks share the machine's cores, so the efficiency there measures contention,
//! not the method; the figure means something with one GPU per rank.

use std::time::Instant;

use candle_core::DType;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::super::arch::Qwen2Config;
use super::super::bench::BenchConfig;
use super::super::config::{DeviceKind, TrainConfig};
use super::super::error::{Result, TrainError};
use super::super::metrics::process_memory;
use super::super::model::{init_params, param_specs, Grads, Qwen2};
use super::super::ops;
use super::super::optim::{AdamW, AdamWConfig};
use super::super::plan::{CeChunk, CE_CHUNK_DEFAULT};
use super::collective::{Collective, Solo};
use super::launch::{Launch, Launcher};
use super::{connect, DataParallel, DistConfig, DistMode};
use crate::shard::Batch;

/// One rank's timings.
#[derive(Debug, Clone, Serialize)]
pub struct RankTiming {
    /// Rank.
    pub rank: usize,
    /// Mean step time.
    pub step_s_mean: f64,
    /// Mean forward + backward time.
    pub fwd_bwd_s_mean: f64,
    /// Mean gradient reduction + optimizer (+ ZeRO all-gather) time.
    pub sync_update_s_mean: f64,
    /// Peak bytes allocated on this rank's GPU (CUDA pool high-water mark).
    pub peak_alloc_bytes: Option<u64>,
    /// Loss of the last step on this rank's batch.
    pub loss_last: f64,
}

/// The measurement.
#[derive(Debug, Clone, Serialize)]
pub struct DistBenchResult {
    /// `cpu` or `cuda`.
    pub device: String,
    /// Collective backend of the N-rank run.
    pub backend: String,
    /// `ddp`, `zero1` or `zero2`.
    pub mode: DistMode,
    /// Ranks.
    pub world_size: usize,
    /// The model argument.
    pub model: String,
    /// Parameters.
    pub n_params: u64,
    /// Rows per step on each rank.
    pub batch_per_rank: usize,
    /// Tokens per row.
    pub seq_len: usize,
    /// Timed steps.
    pub steps: usize,
    /// Tokens per second of all ranks together (each step lasts as long as the slowest rank).
    pub tokens_per_s: f64,
    /// `tokens_per_s / world_size`.
    pub tokens_per_s_per_rank: f64,
    /// The same with 1 rank, measured in this call.
    pub baseline_tokens_per_s: f64,
    /// `tokens_per_s / (world_size · baseline_tokens_per_s)`.
    pub scaling_efficiency: f64,
    /// Peak resident memory of the whole process (all ranks), bytes.
    pub peak_rss_bytes: Option<u64>,
    /// Per rank.
    pub ranks: Vec<RankTiming>,
}

fn rank_run(b: &BenchConfig, arch: &Qwen2Config, mode: DistMode, launch: &Launch) -> Result<RankTiming> {
    let rank = launch.rank;
    let tc = TrainConfig { device: b.device, gpu: b.gpu + launch.local_rank, ..Default::default() };
    let device = tc.device()?;
    let ops = ops::for_device(&device);
    let dcfg = DistConfig { mode, ..Default::default() };
    let comm: Box<dyn Collective> = if launch.world_size == 1 { Box::new(Solo) } else { connect(&dcfg, launch, &device)? };
    let specs = param_specs(arch);
    let zero = matches!(mode, DistMode::Zero1 | DistMode::Zero2);
    let opt_dev = if zero { candle_core::Device::Cpu } else { device.clone() };
    let masters = init_params(arch, b.seed, DType::F32, &opt_dev)?;
    let ocfg = AdamWConfig { lr: 1e-4, weight_decay: 0.0, ..Default::default() };
    let mut opt = AdamW::new(&ocfg, &specs, &masters)?;
    let mut model = Qwen2::new(arch, b.dtype.dtype(), &masters, &device)?;
    drop(masters);
    model.recompute_layers = b.recompute.layers(arch.num_hidden_layers).unwrap_or(0);
    model.ce_chunk = match b.ce_chunk {
        CeChunk::Tokens(c) => c,
        CeChunk::Auto => CE_CHUNK_DEFAULT,
    };
    let mut dp = DataParallel::new(comm, &dcfg, &specs, &mut opt, &mut model.params, &device)?;
    let mut rng = ChaCha8Rng::seed_from_u64(b.seed ^ (rank as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let n = b.batch * b.seq_len;
    let batch = Batch {
        batch: b.batch,
        seq_len: b.seq_len,
        input_ids: (0..n).map(|_| rng.random_range(0..arch.vocab_size as u32)).collect(),
        position_ids: (0..n).map(|i| (i % b.seq_len) as u32).collect(),
        segment_ids: vec![0; n],
        loss_mask: vec![1; n],
        stage: None,
    };
    let inputs = model.inputs(&batch)?;
    let scale = 1.0 / (inputs.targets.count * launch.world_size) as f64;
    let sync = || -> Result<()> {
        if !matches!(device, candle_core::Device::Cpu) {
            device.synchronize()?;
        }
        Ok(())
    };
    #[cfg(feature = "cuda")]
    if let candle_core::Device::Cuda(d) = &device {
        crate::train::cuda::device::reset_peaks(d)?;
    }
    let (mut st, mut fb, mut up) = (Vec::new(), Vec::new(), Vec::new());
    let mut loss = 0.0;
    for i in 0..b.warmup + b.steps {
        dp.barrier()?;
        let t0 = Instant::now();
        let mut grads = Grads::new(model.params.len());
        loss = model.forward_backward(ops.as_ref(), &inputs, scale, &mut grads)? * scale * launch.world_size as f64;
        sync()?;
        let t1 = Instant::now();
        dp.step(ops.as_ref(), &mut opt, grads, &mut model.params, ocfg.lr)?;
        sync()?;
        let t2 = Instant::now();
        if i >= b.warmup {
            st.push((t2 - t0).as_secs_f64());
            fb.push((t1 - t0).as_secs_f64());
            up.push((t2 - t1).as_secs_f64());
        }
    }
    #[allow(unused_mut)]
    let mut peak_alloc_bytes = None;
    #[cfg(feature = "cuda")]
    if let candle_core::Device::Cuda(d) = &device {
        peak_alloc_bytes = Some(crate::train::cuda::device::mem_stats(d)?.pool_used_peak);
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    Ok(RankTiming {
        rank,
        step_s_mean: mean(&st),
        fwd_bwd_s_mean: mean(&fb),
        sync_update_s_mean: mean(&up),
        peak_alloc_bytes,
        loss_last: loss,
    })
}

/// Runs `world` ranks as threads (rendezvous on `127.0.0.1:port`); timings in rank order.
fn run_world(b: &BenchConfig, arch: &Qwen2Config, mode: DistMode, world: usize, port: u16) -> Result<Vec<RankTiming>> {
    std::thread::scope(|s| {
        let hs: Vec<_> = (0..world)
            .map(|rank| {
                let launch = Launch { launcher: Launcher::Single, ..Launch::local(rank, world, port) };
                s.spawn(move || rank_run(b, arch, mode, &launch))
            })
            .collect();
        hs.into_iter().map(|h| h.join().map_err(|_| TrainError::Dist("a rank thread panicked".into()))?).collect()
    })
}

/// Runs the benchmark with `world` ranks and with 1, rendezvous on localhost port `port`.
pub fn bench_train_dist(b: &BenchConfig, world: usize, mode: DistMode, port: u16) -> Result<DistBenchResult> {
    if b.steps == 0 || b.batch == 0 || b.seq_len < 2 || world == 0 {
        return Err(TrainError::config("bench", "steps, batch and world size must be >= 1, seq >= 2"));
    }
    if !mode.is_parallel() {
        return Err(TrainError::config("bench", "--dist-mode must be ddp, zero1 or zero2"));
    }
    if b.micro_batches != 1 {
        return Err(TrainError::config("bench", "--accum must be 1 with --world-size > 1 (one micro-batch a step per rank)"));
    }
    let arch = if b.model.ends_with(".json") {
        Qwen2Config::from_hf_file(std::path::Path::new(&b.model))?
    } else {
        Qwen2Config::preset(&b.model)?
    };
    let base = run_world(b, &arch, mode, 1, port)?;
    let ranks = run_world(b, &arch, mode, world, port)?;
    let tokens = (b.batch * b.seq_len) as f64;
    let slowest = ranks.iter().map(|r| r.step_s_mean).fold(0.0, f64::max);
    let tokens_per_s = tokens * world as f64 / slowest;
    let baseline = tokens / base[0].step_s_mean;
    let backend = match (world, b.device) {
        (1, _) => "solo",
        (_, DeviceKind::Cuda) if cfg!(feature = "nccl") => "nccl",
        _ => "tcp",
    };
    Ok(DistBenchResult {
        device: format!("{:?}", b.device).to_lowercase(),
        backend: backend.into(),
        mode,
        world_size: world,
        model: b.model.clone(),
        n_params: param_specs(&arch).iter().map(|s| s.numel() as u64).sum(),
        batch_per_rank: b.batch,
        seq_len: b.seq_len,
        steps: b.steps,
        tokens_per_s,
        tokens_per_s_per_rank: tokens_per_s / world as f64,
        baseline_tokens_per_s: baseline,
        scaling_efficiency: tokens_per_s / (world as f64 * baseline),
        peak_rss_bytes: process_memory().map(|m| m.1),
        ranks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::config::ComputeDtype;
    use crate::train::plan::Recompute;

    #[test]
    fn two_cpu_ranks_report_throughput_and_efficiency() {
        let b = BenchConfig {
            model: "test".into(),
            batch: 2,
            seq_len: 16,
            dtype: ComputeDtype::F32,
            device: DeviceKind::Cpu,
            gpu: 0,
            steps: 2,
            warmup: 1,
            micro_batches: 1,
            docs_per_row: 1,
            prompt_fraction: 0.0,
            recompute: Recompute::None,
            ce_chunk: CeChunk::Tokens(64),
            peak_flops: None,
            seed: 0,
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let r = bench_train_dist(&b, 2, DistMode::Zero2, port).unwrap();
        assert_eq!((r.world_size, r.ranks.len(), r.backend.as_str()), (2, 2, "tcp"));
        assert!(r.tokens_per_s > 0.0 && r.baseline_tokens_per_s > 0.0 && r.scaling_efficiency > 0.0);
        // Different rows on each rank, from the same weights: the losses differ.
        assert_ne!(r.ranks[0].loss_last.to_bits(), r.ranks[1].loss_last.to_bits());
        assert!(r.ranks.iter().all(|t| t.loss_last.is_finite() && t.loss_last > 0.0));
        assert!(bench_train_dist(&b, 2, DistMode::None, port).is_err());
    }
}
