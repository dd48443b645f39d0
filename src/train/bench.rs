//! `coretech bench train`: training throughput of a model shape on random tokens (one document
//! per row, every next token counted — the PyTorch reference's `labels = ids`), as JSON.

use std::time::Instant;

use candle_core::DType;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::arch::Qwen2Config;
use super::config::{ComputeDtype, DeviceKind, TrainConfig};
use super::error::{Result, TrainError};
use super::metrics::{process_cpu_seconds, process_memory, H100_BF16_PEAK};
use super::model::{init_params, Grads, Qwen2};
use super::ops;
use super::optim::{AdamW, AdamWConfig};
use super::plan::{self, CeChunk, Plan, Recompute, StepShape};
use crate::shard::Batch;

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// A preset name or the path of an HF `config.json`.
    pub model: String,
    /// Rows per step.
    pub batch: usize,
    /// Tokens per row.
    pub seq_len: usize,
    /// Compute dtype.
    pub dtype: ComputeDtype,
    /// Device.
    pub device: DeviceKind,
    /// CUDA ordinal.
    pub gpu: usize,
    /// Timed steps.
    pub steps: usize,
    /// Untimed warm-up steps.
    pub warmup: usize,
    /// Micro-batches per optimizer step (gradient accumulation; tokens/s counts them all).
    pub micro_batches: usize,
    /// Documents packed into each row (1: the CPT shape; more: the SFT shape, ragged attention).
    pub docs_per_row: usize,
    /// Leading part of each document not counted in the loss (the SFT prompt).
    pub prompt_fraction: f64,
    /// Recomputed layers (`auto`: from free device memory, `train::plan`).
    pub recompute: Recompute,
    /// Cross-entropy chunk (tokens, or `auto`).
    pub ce_chunk: CeChunk,
    /// MFU denominator (default: 989e12 on CUDA, none on CPU).
    pub peak_flops: Option<f64>,
    /// Init and data seed.
    pub seed: u64,
}

/// The measurement.
#[derive(Debug, Clone, Serialize)]
pub struct BenchResult {
    /// `cpu` or `cuda`.
    pub device: String,
    /// The ops backend.
    pub backend: String,
    /// CPU threads candle uses.
    pub threads: usize,
    /// The model argument.
    pub model: String,
    /// Parameters (tied head counted once).
    pub n_params: u64,
    /// Compute dtype.
    pub dtype: String,
    /// Rows per step.
    pub batch: usize,
    /// Tokens per row.
    pub seq_len: usize,
    /// Micro-batches per optimizer step.
    pub micro_batches: usize,
    /// Documents packed into each row.
    pub docs_per_row: usize,
    /// Counted predictions per micro-batch.
    pub targets: usize,
    /// What the memory planner chose (recomputed layers, cross-entropy chunk, estimated peak).
    pub plan: Plan,
    /// Timed steps.
    pub steps: usize,
    /// Mean step time.
    pub step_s_mean: f64,
    /// Median step time.
    pub step_s_median: f64,
    /// Mean forward + backward time.
    pub fwd_bwd_s_mean: f64,
    /// Mean optimizer (clip + AdamW) time.
    pub optimizer_s_mean: f64,
    /// Tokens per second over the timed steps.
    pub tokens_per_s: f64,
    /// Process CPU time (user + system) per timed step, seconds (CPU: compare with `step_s_mean`
    /// to see how much of the wall time other processes took).
    pub cpu_s_per_step: Option<f64>,
    /// Tokens per CPU-second (all threads together).
    pub tokens_per_cpu_s: Option<f64>,
    /// 6·N·tokens/s / peak.
    pub mfu: Option<f64>,
    /// The peak used for MFU.
    pub peak_flops: Option<f64>,
    /// Peak resident memory of the process (CPU), bytes.
    pub peak_rss_bytes: Option<u64>,
    /// Loss of the first step.
    pub loss_first: f64,
    /// Loss of the last step.
    pub loss_last: f64,
    /// GPU name (CUDA).
    pub gpu: Option<String>,
    /// Mean forward time (forward + loss, no gradients; measured on separate steps).
    pub forward_s_mean: Option<f64>,
    /// Mean backward time: forward+backward minus forward.
    pub backward_s_mean: Option<f64>,
    /// Measured bf16 matmul rate, TFLOP/s (8192³ through cuBLAS, median; CUDA).
    pub matmul_tflops: Option<f64>,
    /// 6·N·tokens/s over the measured matmul rate.
    pub mfu_measured_peak: Option<f64>,
    /// Device time per fused unit in one profiled step (events around each unit; CUDA).
    pub units: Vec<ops::UnitTime>,
    /// Wall time of the profiled step.
    pub profiled_step_s: Option<f64>,
    /// Peak bytes in use by the trainer's allocations (CUDA pool high-water mark, like
    /// PyTorch's `max_memory_allocated`).
    pub peak_alloc_bytes: Option<u64>,
    /// Peak bytes the CUDA pool held (like PyTorch's `max_memory_reserved`).
    pub peak_reserved_bytes: Option<u64>,
    /// Bytes in use on the whole device after the timed steps (`cuMemGetInfo`).
    pub device_used_bytes: Option<u64>,
}

/// Runs the benchmark.
pub fn bench_train(b: &BenchConfig) -> Result<BenchResult> {
    if b.steps == 0 || b.batch == 0 || b.seq_len < 2 || b.micro_batches == 0 {
        return Err(TrainError::config("bench", "steps, batch and micro-batches must be >= 1, seq >= 2"));
    }
    let arch = if b.model.ends_with(".json") {
        Qwen2Config::from_hf_file(std::path::Path::new(&b.model))?
    } else {
        Qwen2Config::preset(&b.model)?
    };
    let tc = TrainConfig { device: b.device, gpu: b.gpu, ..Default::default() };
    let device = tc.device()?;
    let ops = ops::for_device(&device);
    let masters = init_params(&arch, b.seed, DType::F32, &device)?;
    let cfg = AdamWConfig { lr: 1e-4, beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay: 0.0, ..Default::default() };
    let specs = super::model::param_specs(&arch);
    let mut opt = AdamW::new(&cfg, &specs, &masters)?;
    let mut model = Qwen2::new(&arch, b.dtype.dtype(), &masters, &device)?;
    drop(masters);
    let shape = StepShape {
        arch: &arch,
        batch: b.batch,
        seq_len: b.seq_len,
        micro_batches: b.micro_batches,
        compute_bytes: b.dtype.dtype().size_in_bytes() as u64,
    };
    let plan = plan::plan(&shape, plan::available_bytes(&device)?, b.recompute, b.ce_chunk)?;
    eprintln!("{plan}");
    model.recompute_layers = plan.recompute_layers;
    model.ce_chunk = plan.ce_chunk;
    let mut rng = ChaCha8Rng::seed_from_u64(b.seed);
    let n = b.batch * b.seq_len;
    let batch = bench_batch(&mut rng, arch.vocab_size, b.batch, b.seq_len, b.docs_per_row, b.prompt_fraction);
    let inputs = model.inputs(&batch)?;
    let scale = 1.0 / (inputs.targets.count * b.micro_batches) as f64;
    let sync = || -> Result<()> { Ok(model_device_sync(&device)?) };
    #[cfg(feature = "cuda")]
    if let candle_core::Device::Cuda(d) = &device {
        crate::train::cuda::device::reset_peaks(d)?;
    }
    let mut losses = Vec::new();
    let (mut steps, mut fb, mut op) = (Vec::new(), Vec::new(), Vec::new());
    let mut cpu0 = None;
    for i in 0..b.warmup + b.steps {
        if i == b.warmup {
            cpu0 = process_cpu_seconds();
        }
        let t0 = Instant::now();
        let mut grads = Grads::new(model.params.len());
        let mut loss = 0.0;
        for _ in 0..b.micro_batches {
            loss += model.forward_backward(ops.as_ref(), &inputs, scale, &mut grads)? * scale;
        }
        sync()?;
        let t1 = Instant::now();
        opt.step(ops.as_ref(), &grads, &mut model.params, cfg.lr)?;
        drop(grads);
        sync()?;
        let t2 = Instant::now();
        losses.push(loss);
        if i >= b.warmup {
            steps.push((t2 - t0).as_secs_f64());
            fb.push((t1 - t0).as_secs_f64());
            op.push((t2 - t1).as_secs_f64());
        }
    }
    let cpu_s_per_step = cpu0.zip(process_cpu_seconds()).map(|(a, z)| (z - a) / b.steps as f64);
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    // (pool used peak, pool reserved peak, device used) in bytes.
    type MemPeaks = (u64, u64, u64);
    #[allow(unused_mut)]
    let (mut gpu, mut mem, mut matmul_tflops): (Option<String>, Option<MemPeaks>, Option<f64>) = (None, None, None);
    #[cfg(feature = "cuda")]
    if let candle_core::Device::Cuda(d) = &device {
        let m = crate::train::cuda::device::mem_stats(d)?;
        mem = Some((m.pool_used_peak, m.pool_reserved_peak, m.device_used));
        gpu = Some(crate::train::cuda::device::gpu_name(d)?);
    }
    // Forward alone (loss without gradients), then one step with every unit timed on the device.
    let mut fwd = Vec::new();
    for _ in 0..b.steps.min(3) {
        let t0 = Instant::now();
        model.loss_sum(ops.as_ref(), &inputs)?;
        sync()?;
        fwd.push(t0.elapsed().as_secs_f64());
    }
    ops.set_profiling(true);
    let t0 = Instant::now();
    let mut grads = Grads::new(model.params.len());
    for _ in 0..b.micro_batches {
        model.forward_backward(ops.as_ref(), &inputs, scale, &mut grads)?;
    }
    opt.step(ops.as_ref(), &grads, &mut model.params, cfg.lr)?;
    drop(grads);
    sync()?;
    let profiled_step_s = t0.elapsed().as_secs_f64();
    let units = ops.take_profile()?;
    ops.set_profiling(false);
    #[cfg(feature = "cuda")]
    if let candle_core::Device::Cuda(d) = &device {
        matmul_tflops = Some(crate::train::cuda::device::matmul_tflops(d, 10)?);
    }
    let mut sorted = steps.clone();
    sorted.sort_by(f64::total_cmp);
    let tokens_per_s = (n * b.micro_batches) as f64 / mean(&steps);
    let peak = b.peak_flops.or((b.device == DeviceKind::Cuda).then_some(H100_BF16_PEAK));
    Ok(BenchResult {
        device: format!("{:?}", b.device).to_lowercase(),
        backend: ops.name().to_string(),
        threads: candle_core::utils::get_num_threads(),
        model: b.model.clone(),
        n_params: model.num_params(),
        dtype: format!("{:?}", b.dtype).to_lowercase(),
        batch: b.batch,
        seq_len: b.seq_len,
        micro_batches: b.micro_batches,
        docs_per_row: b.docs_per_row,
        targets: inputs.targets.count,
        plan,
        steps: b.steps,
        step_s_mean: mean(&steps),
        step_s_median: sorted[sorted.len() / 2],
        fwd_bwd_s_mean: mean(&fb),
        optimizer_s_mean: mean(&op),
        tokens_per_s,
        cpu_s_per_step,
        tokens_per_cpu_s: cpu_s_per_step.filter(|c| *c > 0.0).map(|c| (n * b.micro_batches) as f64 / c),
        mfu: peak.map(|p| 6.0 * model.num_params() as f64 * tokens_per_s / p),
        peak_flops: peak,
        peak_rss_bytes: process_memory().map(|m| m.1),
        loss_first: losses[0],
        loss_last: *losses.last().expect("at least one step"),
        gpu,
        forward_s_mean: Some(mean(&fwd)),
        backward_s_mean: Some(mean(&fb) - mean(&fwd)),
        matmul_tflops,
        mfu_measured_peak: matmul_tflops.map(|m| 6.0 * model.num_params() as f64 * tokens_per_s / (m * 1e12)),
        units: units.clone(),
        profiled_step_s: (!units.is_empty()).then_some(profiled_step_s),
        peak_alloc_bytes: mem.map(|m| m.0),
        peak_reserved_bytes: mem.map(|m| m.1),
        device_used_bytes: mem.map(|m| m.2),
    })
}

/// Random tokens; each row one document (the CPT shape) or `docs` packed documents of seeded
/// lengths (at least a quarter of the even share each), whose first `prompt_fraction` of tokens
/// are not counted (the SFT shape: packed conversations, loss on the answers).
fn bench_batch(rng: &mut ChaCha8Rng, vocab: usize, batch: usize, seq_len: usize, docs: usize, prompt_fraction: f64) -> Batch {
    let n = batch * seq_len;
    let mut b = Batch {
        batch,
        seq_len,
        input_ids: (0..n).map(|_| rng.random_range(0..vocab as u32)).collect(),
        loss_mask: Vec::with_capacity(n),
        ..Default::default()
    };
    let docs = docs.clamp(1, seq_len);
    for _ in 0..batch {
        let share = seq_len / docs;
        let mut lens: Vec<u32> = (0..docs).map(|_| rng.random_range(share.div_ceil(4).max(1)..=share.max(1)) as u32).collect();
        let used: u32 = lens.iter().sum();
        *lens.last_mut().expect("docs >= 1") += seq_len as u32 - used;
        Batch::row_layout(&lens, seq_len, &mut b.position_ids, &mut b.segment_ids);
        for &len in &lens {
            let prompt = (len as f64 * prompt_fraction) as u32;
            b.loss_mask.extend((0..len).map(|p| u8::from(p >= prompt)));
        }
    }
    b
}

fn model_device_sync(device: &candle_core::Device) -> candle_core::Result<()> {
    match device {
        candle_core::Device::Cpu => Ok(()),
        d => d.synchronize(),
    }
}
