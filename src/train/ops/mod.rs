//! The units of a Qwen2 training step that a device backend may fuse, each with a forward that
//! returns what its backward needs and an explicit backward (llm.c style: no autograd graph, so
//! nothing stays alive by accident and a layer can be recomputed).
//!
//! [`Ops`] is the backend interface. [`ReferenceOps`] implements it with composed candle ops (on
//! any device; on CPU it is the reference every fused kernel is tested against). [`CpuOps`] (the
//! CPU default) replaces the units that dominate a small model's step with loops over raw
//! buffers; the CUDA backend adds fused kernels; the model in `model.rs` calls only this trait and
//! candle matmuls, so swapping kernels never touches it.
//!
//! Layouts (N = batch·seq tokens, row-major over the batch):
//! * hidden states `(N, H)`; attention `q` `(B, T, n_heads, D)`, `k`/`v` `(B, T, n_kv, D)`
//!   (the projection outputs, no transpose), GQA query head `h` uses KV head `h / (n_heads / n_kv)`;
//! * statistics saved for backward (`rstd`, `lse`) and weight gradients are in the accumulation
//!   dtype: f64 for f64 compute (finite-difference tests), f32 otherwise.

mod cpu;
#[cfg(feature = "cuda")]
mod cuda;
mod reference;

use candle_core::{DType, Device, Tensor};

pub use cpu::CpuOps;
#[cfg(feature = "cuda")]
pub use cuda::CudaOps;
pub use reference::ReferenceOps;

use super::error::Result;

/// The dtype statistics and gradients are kept in for a compute dtype.
pub fn acc_dtype(compute: DType) -> DType {
    if compute == DType::F64 {
        DType::F64
    } else {
        DType::F32
    }
}

/// Which tokens may attend to which in a packed batch: causal inside a segment, never across.
#[derive(Debug, Clone)]
pub struct Segments {
    /// Rows.
    pub batch: usize,
    /// Tokens per row.
    pub seq_len: usize,
    /// `(B, T)` u32: segment index of each token within its row (non-decreasing along the row).
    pub segment_ids: Tensor,
    /// u32 `[0, end of segment 0, …, N]` over the flattened batch (varlen kernels' `cu_seqlens`).
    pub cu_seqlens: Tensor,
    /// Longest segment.
    pub max_seqlen: usize,
}

impl Segments {
    /// Builds the segment layout from per-token segment ids (row-major `(B, T)`).
    pub fn new(segment_ids: &[u32], batch: usize, seq_len: usize, device: &Device) -> Result<Segments> {
        let mut cu = vec![0u32];
        for i in 1..segment_ids.len() {
            if i % seq_len == 0 || segment_ids[i] != segment_ids[i - 1] {
                cu.push(i as u32);
            }
        }
        cu.push(segment_ids.len() as u32);
        let max_seqlen = cu.windows(2).map(|w| (w[1] - w[0]) as usize).max().unwrap_or(0);
        Ok(Segments {
            batch,
            seq_len,
            segment_ids: Tensor::from_slice(segment_ids, (batch, seq_len), device)?,
            cu_seqlens: Tensor::new(cu.as_slice(), device)?,
            max_seqlen,
        })
    }
}

/// RoPE angles of the batch's tokens: `cos`/`sin` of `position · θ^(-2i/D)`, `(N, D/2)` in the
/// accumulation dtype, gathered from the model's table by `positions` (u32 `(N,)`). A kernel may
/// use the gathered values or recompute them from the positions.
#[derive(Debug, Clone)]
pub struct RopeCtx {
    /// Position of each token within its segment.
    pub positions: Tensor,
    /// cos of the angles, `(N, D/2)`.
    pub cos: Tensor,
    /// sin of the angles, `(N, D/2)`.
    pub sin: Tensor,
}

/// The counted predictions of a batch: row `rows[j]` of the hidden states predicts `targets[j]`.
#[derive(Debug, Clone)]
pub struct CeTargets {
    /// u32 `(M,)`: flattened token positions whose prediction counts (see `shard::Batch`).
    pub rows: Tensor,
    /// u32 `(M,)`: the token each of those positions must predict.
    pub targets: Tensor,
    /// M (0 when nothing counts).
    pub count: usize,
}

/// RMSNorm forward output.
#[derive(Debug, Clone)]
pub struct RmsNormOut {
    /// Normalised and scaled output, compute dtype, shape of the input.
    pub y: Tensor,
    /// `1 / sqrt(mean(x²) + eps)` per row, `(N,)`, accumulation dtype.
    pub rstd: Tensor,
}

/// Attention forward output.
#[derive(Debug, Clone)]
pub struct AttnOut {
    /// `(B, T, n_heads, D)`, compute dtype.
    pub out: Tensor,
    /// Log-sum-exp of each query's scaled, masked scores, `(B, n_heads, T)`, accumulation dtype
    /// (lets a flash-style backward recompute the probabilities).
    pub lse: Tensor,
}

/// Cross-entropy (fused with the LM head) output.
#[derive(Debug, Clone)]
pub struct CeOut {
    /// Σ over counted predictions of `-log p(target)`, a scalar in the accumulation dtype.
    pub loss_sum: Tensor,
    /// Gradient of `grad_scale · loss_sum` w.r.t. the hidden states, `(N, H)`, compute dtype
    /// (zero rows where nothing counts); `None` for a forward-only call.
    pub dh: Option<Tensor>,
    /// Gradient w.r.t. the head weight `(V, H)`, accumulation dtype, added to the accumulator
    /// handed in; `None` when no accumulator was handed in and nothing counts or no gradient was
    /// asked for.
    pub dw: Option<Tensor>,
}

/// One AdamW step's hyper-parameters (PyTorch `torch.optim.AdamW` semantics).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWStep {
    /// Learning rate of this step.
    pub lr: f64,
    /// First-moment decay.
    pub beta1: f64,
    /// Second-moment decay.
    pub beta2: f64,
    /// Denominator epsilon.
    pub eps: f64,
    /// Decoupled weight decay (applied only to tensors marked for decay).
    pub weight_decay: f64,
    /// 1-based step count (bias correction).
    pub step: u64,
    /// Factor applied to every gradient first (the clipping coefficient; 1 when not clipping).
    pub grad_scale: f64,
}

/// Optimizer state of one parameter: fp32 master weight and moments.
#[derive(Debug, Clone)]
pub struct AdamState {
    /// Master weight, f32 (f64 under f64 compute).
    pub master: Tensor,
    /// First moment.
    pub exp_avg: Tensor,
    /// Second moment.
    pub exp_avg_sq: Tensor,
    /// Whether weight decay applies.
    pub decay: bool,
}

/// Device time spent in one unit while profiling was on.
#[derive(Debug, Clone, serde::Serialize)]
pub struct UnitTime {
    /// Unit name (`attn_bwd`, `cross_entropy`, …).
    pub name: String,
    /// Device seconds, summed over calls.
    pub seconds: f64,
    /// Calls.
    pub calls: usize,
}

/// The fusable units of a training step. Every method is pure in its tensor inputs: it returns
/// new tensors (or, for the `*_acc` forms, the updated accumulator it was handed).
pub trait Ops: Send + Sync {
    /// Backend name for logs and benchmark output.
    fn name(&self) -> &'static str;

    /// RMSNorm of `x` `(N, H)` with weight `w` `(H,)`: `w · x / sqrt(mean(x²) + eps)` (HF order:
    /// normalise in f32, cast to the compute dtype, then scale).
    fn rms_norm_fwd(&self, x: &Tensor, w: &Tensor, eps: f64) -> Result<RmsNormOut>;
    /// RMSNorm backward: `(dx, dw)`; `dx` in the compute dtype, `dw` `(H,)` in the accumulation dtype.
    fn rms_norm_bwd(&self, dy: &Tensor, x: &Tensor, w: &Tensor, rstd: &Tensor) -> Result<(Tensor, Tensor)>;

    /// Rotary embedding (HF half-rotation layout) of `x` `(B, T, heads, D)`.
    fn rope_fwd(&self, x: &Tensor, rope: &RopeCtx) -> Result<Tensor>;
    /// RoPE backward: the rotation by `-θ`.
    fn rope_bwd(&self, dy: &Tensor, rope: &RopeCtx) -> Result<Tensor>;

    /// Causal, segment-masked, grouped-query softmax attention with scale `scale`.
    fn attn_fwd(&self, q: &Tensor, k: &Tensor, v: &Tensor, seg: &Segments, scale: f64) -> Result<AttnOut>;
    /// Attention backward from the forward's `out` and `lse`: `(dq, dk, dv)` in the compute dtype.
    #[allow(clippy::too_many_arguments)]
    fn attn_bwd(
        &self,
        dout: &Tensor,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        fwd: &AttnOut,
        seg: &Segments,
        scale: f64,
    ) -> Result<(Tensor, Tensor, Tensor)>;

    /// `silu(gate) · up`, both `(N, I)`.
    fn swiglu_fwd(&self, gate: &Tensor, up: &Tensor) -> Result<Tensor>;
    /// SwiGLU backward: `(dgate, dup)`.
    fn swiglu_bwd(&self, dy: &Tensor, gate: &Tensor, up: &Tensor) -> Result<(Tensor, Tensor)>;

    /// Rows `ids` (u32 `(N,)`) of `table` `(V, H)`.
    fn embedding_fwd(&self, ids: &Tensor, table: &Tensor) -> Result<Tensor>;
    /// Embedding backward: adds row `i` of `dy` to row `ids[i]` of `grad` (`(V, H)`, accumulation
    /// dtype) and returns it. Deterministic (no atomics whose order varies).
    fn embedding_bwd_acc(&self, ids: &Tensor, dy: &Tensor, grad: Tensor) -> Result<Tensor>;

    /// Cross-entropy of the LM head `h · wᵀ` against `t`, over the vocabulary, `chunk` counted
    /// tokens at a time (never all logits at once). With `grad_scale = Some(s)` it also returns
    /// the gradients of `s · loss_sum`; the head's is added to `dw_acc` (the gradient
    /// accumulated so far, accumulation dtype) in place where the backend can, so a second
    /// micro-batch needs no second `(V, H)` buffer.
    fn cross_entropy(
        &self,
        h: &Tensor,
        w: &Tensor,
        t: &CeTargets,
        grad_scale: Option<f64>,
        chunk: usize,
        dw_acc: Option<Tensor>,
    ) -> Result<CeOut>;

    /// Weight gradient of a linear layer `y = x · Wᵀ`: returns `acc + dyᵀ · x` in the
    /// accumulation dtype (`acc = None` starts it).
    fn linear_grad_acc(&self, dy: &Tensor, x: &Tensor, acc: Option<Tensor>) -> Result<Tensor> {
        let g = dy.t()?.matmul(x)?.to_dtype(acc_dtype(dy.dtype()))?;
        add_acc(acc, g)
    }

    /// Bias gradient: returns `acc + Σ_rows dy`.
    fn bias_grad_acc(&self, dy: &Tensor, acc: Option<Tensor>) -> Result<Tensor> {
        let g = dy.to_dtype(acc_dtype(dy.dtype()))?.sum(0)?;
        add_acc(acc, g)
    }

    /// Adds a gradient into an accumulator (`None` starts it).
    fn grad_acc(&self, acc: Option<Tensor>, g: Tensor) -> Result<Tensor> {
        add_acc(acc, g)
    }

    /// Σ of squares of every gradient, summed in a fixed order (deterministic): the square of
    /// the global gradient norm.
    fn sum_squares(&self, grads: &[Tensor]) -> Result<f64>;

    /// One multi-tensor AdamW step over all parameters: updates `states` in place and writes
    /// each updated master weight, cast to `params[i]`'s dtype, into `params[i]`.
    fn adamw_step(&self, states: &mut [AdamState], grads: &[Tensor], params: &mut [Tensor], hp: &AdamWStep) -> Result<()>;

    /// Starts or stops timing every unit on the device (benchmarks; backends without device
    /// timers ignore it).
    fn set_profiling(&self, _on: bool) {}

    /// Device time per unit since profiling started; clears the record (waits for the device).
    fn take_profile(&self) -> Result<Vec<UnitTime>> {
        Ok(Vec::new())
    }
}

fn add_acc(acc: Option<Tensor>, g: Tensor) -> Result<Tensor> {
    Ok(match acc {
        None => g,
        Some(a) => (a + g)?,
    })
}

/// The backend for a device: the fused kernels where the build has them, else the reference.
pub fn for_device(device: &Device) -> Box<dyn Ops> {
    match device {
        #[cfg(feature = "cuda")]
        Device::Cuda(d) => Box::new(CudaOps::new(d)),
        Device::Cpu => Box::new(CpuOps::new()),
        _ => Box::new(ReferenceOps),
    }
}

#[cfg(test)]
mod tests;
