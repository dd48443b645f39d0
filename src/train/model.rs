//! Qwen2 with HF parameter names and an explicit forward and backward (llm.c style): each layer's
//! forward returns the activations its backward needs, the backward walks the layers in reverse
//! and accumulates parameter gradients; the first `recompute_layers` layers keep only their input
//! and re-run their forward in backward (`train::plan` picks how many from free memory). Every fusable unit goes through [`Ops`]; matmuls are
//! candle's (cuBLAS on CUDA).
//!
//! Packed rows follow `shard::Batch`: positions restart at each segment, attention never
//! crosses segments, and position `t` predicts token `t + 1` iff `loss_mask[t + 1] == 1` and both
//! are in the same segment. The loss of a step is the mean over its counted predictions.

use candle_core::{DType, Device, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::Distribution;
use rayon::prelude::*;

use super::arch::Qwen2Config;
use super::error::{Result, TrainError};
use super::ops::{acc_dtype, AttnOut, CeTargets, Ops, RmsNormOut, RopeCtx, Segments};
use crate::shard::Batch;

/// How a parameter is initialised (HF `Qwen2PreTrainedModel._init_weights`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Init {
    /// N(0, initializer_range).
    Normal,
    /// Zeros (biases).
    Zeros,
    /// Ones (RMSNorm weights).
    Ones,
}

/// Name, shape and init of one parameter.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamSpec {
    /// HF name, e.g. `model.layers.0.self_attn.q_proj.weight`.
    pub name: String,
    /// Shape (PyTorch `Linear` layout: `(out, in)`).
    pub shape: Vec<usize>,
    /// Initialisation.
    pub init: Init,
}

impl ParamSpec {
    /// Norm weights and biases (the tensors weight decay usually skips).
    pub fn is_norm_or_bias(&self) -> bool {
        self.shape.len() == 1
    }

    /// Element count.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// Indices into the parameter list of one decoder layer.
#[derive(Debug, Clone, Copy)]
struct LayerIdx {
    ln1: usize,
    q_w: usize,
    q_b: usize,
    k_w: usize,
    k_b: usize,
    v_w: usize,
    v_b: usize,
    o_w: usize,
    ln2: usize,
    gate: usize,
    up: usize,
    down: usize,
}

/// The parameters of a config, in a fixed order: embedding, layers, final norm, untied head.
pub fn param_specs(cfg: &Qwen2Config) -> Vec<ParamSpec> {
    let (h, i, v) = (cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size);
    let q = cfg.num_attention_heads * cfg.head_dim();
    let kv = cfg.num_key_value_heads * cfg.head_dim();
    let mut s = Vec::new();
    let mut p = |name: String, shape: Vec<usize>, init| s.push(ParamSpec { name, shape, init });
    p("model.embed_tokens.weight".into(), vec![v, h], Init::Normal);
    for l in 0..cfg.num_hidden_layers {
        let pre = format!("model.layers.{l}");
        p(format!("{pre}.input_layernorm.weight"), vec![h], Init::Ones);
        for (n, o) in [("q_proj", q), ("k_proj", kv), ("v_proj", kv)] {
            p(format!("{pre}.self_attn.{n}.weight"), vec![o, h], Init::Normal);
            p(format!("{pre}.self_attn.{n}.bias"), vec![o], Init::Zeros);
        }
        p(format!("{pre}.self_attn.o_proj.weight"), vec![h, q], Init::Normal);
        p(format!("{pre}.post_attention_layernorm.weight"), vec![h], Init::Ones);
        p(format!("{pre}.mlp.gate_proj.weight"), vec![i, h], Init::Normal);
        p(format!("{pre}.mlp.up_proj.weight"), vec![i, h], Init::Normal);
        p(format!("{pre}.mlp.down_proj.weight"), vec![h, i], Init::Normal);
    }
    p("model.norm.weight".into(), vec![h], Init::Ones);
    if !cfg.tie_word_embeddings {
        p("lm_head.weight".into(), vec![v, h], Init::Normal);
    }
    s
}

/// Elements drawn from one RNG stream; streams are seeded by (seed, name, chunk), so the init
/// does not depend on the thread count or on the order parameters are built in.
const INIT_CHUNK: usize = 1 << 20;

/// HF init of every parameter in `dtype` on `device`, seeded.
pub fn init_params(cfg: &Qwen2Config, seed: u64, dtype: DType, device: &Device) -> Result<Vec<Tensor>> {
    let std = cfg.initializer_range;
    param_specs(cfg)
        .iter()
        .map(|spec| {
            let n = spec.numel();
            let t = match spec.init {
                Init::Zeros => Tensor::zeros(spec.shape.as_slice(), DType::F32, device)?,
                Init::Ones => Tensor::ones(spec.shape.as_slice(), DType::F32, device)?,
                Init::Normal => {
                    let name_hash = xxhash_rust::xxh3::xxh3_64(spec.name.as_bytes());
                    let mut v = vec![0f32; n];
                    v.par_chunks_mut(INIT_CHUNK).enumerate().for_each(|(c, out)| {
                        let mut rng =
                            ChaCha8Rng::seed_from_u64(seed ^ name_hash.rotate_left(17) ^ (c as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
                        let normal = rand_distr::Normal::new(0.0, std).expect("std >= 0 checked by validate");
                        for x in out.iter_mut() {
                            *x = normal.sample(&mut rng) as f32;
                        }
                    });
                    Tensor::from_vec(v, spec.shape.as_slice(), device)?
                }
            };
            Ok(t.to_dtype(dtype)?)
        })
        .collect()
}

/// RoPE cos/sin for every position `< max_position_embeddings`, `(P, D/2)` in the accumulation
/// dtype. Angles as HF and candle-transformers compute them: f32 inverse frequencies, f32 product.
#[derive(Debug, Clone)]
pub struct RopeTable {
    cos: Tensor,
    sin: Tensor,
    len: usize,
}

impl RopeTable {
    /// The table for `cfg`, covering positions `< len`.
    pub fn new(cfg: &Qwen2Config, len: usize, dtype: DType, device: &Device) -> Result<RopeTable> {
        let d = cfg.head_dim();
        let half = d / 2;
        let inv: Vec<f64> = (0..d).step_by(2).map(|i| 1.0 / cfg.rope_theta.powf(i as f64 / d as f64)).collect();
        let mut cos = Vec::with_capacity(len * half);
        let mut sin = Vec::with_capacity(len * half);
        for p in 0..len {
            for f in &inv {
                let a = if dtype == DType::F64 { p as f64 * f } else { (p as f32 * *f as f32) as f64 };
                cos.push(a.cos());
                sin.push(a.sin());
            }
        }
        let mk = |v: Vec<f64>| -> Result<Tensor> { Ok(Tensor::from_vec(v, (len, half), device)?.to_dtype(dtype)?) };
        Ok(RopeTable { cos: mk(cos)?, sin: mk(sin)?, len })
    }

    /// The angles of the given positions (u32 `(N,)`).
    pub fn gather(&self, positions: &Tensor) -> Result<RopeCtx> {
        Ok(RopeCtx { positions: positions.clone(), cos: self.cos.index_select(positions, 0)?, sin: self.sin.index_select(positions, 0)? })
    }
}

/// A batch on the device, with what every layer shares.
#[derive(Debug, Clone)]
pub struct Inputs {
    /// Rows.
    pub batch: usize,
    /// Tokens per row.
    pub seq_len: usize,
    /// Token ids, u32 `(N,)`.
    pub ids: Tensor,
    /// Attention layout.
    pub segments: Segments,
    /// RoPE angles.
    pub rope: RopeCtx,
    /// Counted predictions.
    pub targets: CeTargets,
}

/// Parameter gradients in the accumulation dtype, `None` until a micro-batch touches them.
#[derive(Debug, Clone, Default)]
pub struct Grads {
    /// One slot per parameter, in [`param_specs`] order.
    pub slots: Vec<Option<Tensor>>,
}

impl Grads {
    /// Empty accumulators for `n` parameters.
    pub fn new(n: usize) -> Grads {
        Grads { slots: vec![None; n] }
    }

    fn take(&mut self, i: usize) -> Option<Tensor> {
        self.slots[i].take()
    }
}

/// What one layer's backward needs.
struct LayerActs {
    x: Tensor,
    ln1: RmsNormOut,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    attn: AttnOut,
    x2: Tensor,
    ln2: RmsNormOut,
    gate: Tensor,
    up: Tensor,
    m: Tensor,
}

/// Where a layer's saved state lives during a step.
enum Saved {
    All(LayerActs),
    Input(Tensor),
}

/// A Qwen2 causal LM: parameters in the compute dtype, RoPE table, layer index.
#[derive(Debug, Clone)]
pub struct Qwen2 {
    /// Architecture.
    pub cfg: Qwen2Config,
    /// Compute dtype (bf16, f32, or f64 for tests).
    pub dtype: DType,
    /// Parameters in [`param_specs`] order, compute dtype.
    pub params: Vec<Tensor>,
    /// Names, shapes and inits, in the same order.
    pub specs: Vec<ParamSpec>,
    /// The first this many layers keep only their input and recompute their forward in
    /// backward (0: none; `num_hidden_layers` or more: all).
    pub recompute_layers: usize,
    /// Counted tokens per cross-entropy chunk.
    pub ce_chunk: usize,
    layers: Vec<LayerIdx>,
    embed: usize,
    norm: usize,
    head: usize,
    rope: RopeTable,
}

fn linear(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
    let y = x.matmul(&w.t()?)?;
    Ok(match b {
        Some(b) => y.broadcast_add(b)?,
        None => y,
    })
}

impl Qwen2 {
    /// A model from parameters in [`param_specs`] order (any float dtype; cast to `dtype`).
    pub fn new(cfg: &Qwen2Config, dtype: DType, params: &[Tensor], device: &Device) -> Result<Qwen2> {
        cfg.validate()?;
        let specs = param_specs(cfg);
        if params.len() != specs.len() {
            return Err(TrainError::config("model", format!("{} parameters given, the config has {}", params.len(), specs.len())));
        }
        for (p, s) in params.iter().zip(&specs) {
            if p.dims() != s.shape.as_slice() {
                return Err(TrainError::config("model", format!("{}: shape {:?}, expected {:?}", s.name, p.dims(), s.shape)));
            }
        }
        let params = params.iter().map(|p| Ok(p.to_device(device)?.to_dtype(dtype)?)).collect::<Result<Vec<_>>>()?;
        let mut layers = Vec::new();
        for l in 0..cfg.num_hidden_layers {
            let b = 1 + l * 12;
            layers.push(LayerIdx {
                ln1: b,
                q_w: b + 1,
                q_b: b + 2,
                k_w: b + 3,
                k_b: b + 4,
                v_w: b + 5,
                v_b: b + 6,
                o_w: b + 7,
                ln2: b + 8,
                gate: b + 9,
                up: b + 10,
                down: b + 11,
            });
        }
        let norm = 1 + cfg.num_hidden_layers * 12;
        let head = if cfg.tie_word_embeddings { 0 } else { norm + 1 };
        debug_assert_eq!(specs[norm].name, "model.norm.weight");
        let rope = RopeTable::new(cfg, cfg.max_position_embeddings, acc_dtype(dtype), device)?;
        Ok(Qwen2 {
            cfg: cfg.clone(),
            dtype,
            params,
            specs,
            recompute_layers: 0,
            ce_chunk: super::plan::CE_CHUNK_DEFAULT,
            layers,
            embed: 0,
            norm,
            head,
            rope,
        })
    }

    /// The device the parameters live on.
    pub fn device(&self) -> &Device {
        self.params[0].device()
    }

    /// Parameters counted once (tied head not double-counted).
    pub fn num_params(&self) -> u64 {
        self.specs.iter().map(|s| s.numel() as u64).sum()
    }

    /// Moves a loader batch to the device, with its segments, RoPE angles and counted targets.
    pub fn inputs(&self, b: &Batch) -> Result<Inputs> {
        let n = b.batch * b.seq_len;
        let bad = |m: String| Err(TrainError::Data(m));
        if n == 0 {
            return bad("empty batch".into());
        }
        for (what, len) in [
            ("input_ids", b.input_ids.len()),
            ("position_ids", b.position_ids.len()),
            ("segment_ids", b.segment_ids.len()),
            ("loss_mask", b.loss_mask.len()),
        ] {
            if len != n {
                return bad(format!("{what} has {len} entries, batch × seq_len = {n}"));
            }
        }
        if let Some(i) = b.input_ids.iter().position(|&t| t as usize >= self.cfg.vocab_size) {
            return bad(format!(
                "token id {} at row {}, position {} is outside the vocabulary ({})",
                b.input_ids[i],
                i / b.seq_len,
                i % b.seq_len,
                self.cfg.vocab_size
            ));
        }
        if let Some(i) = b.position_ids.iter().position(|&p| p as usize >= self.rope.len) {
            return bad(format!(
                "position {} at row {} is beyond max_position_embeddings {}",
                b.position_ids[i],
                i / b.seq_len,
                self.rope.len
            ));
        }
        let dev = self.device();
        let mut rows = Vec::new();
        let mut targets = Vec::new();
        for r in 0..b.batch {
            for t in 0..b.seq_len.saturating_sub(1) {
                let i = r * b.seq_len + t;
                if b.loss_mask[i + 1] == 1 && b.segment_ids[i + 1] == b.segment_ids[i] {
                    rows.push(i as u32);
                    targets.push(b.input_ids[i + 1]);
                }
            }
        }
        let positions = Tensor::from_slice(&b.position_ids, n, dev)?;
        let count = rows.len();
        Ok(Inputs {
            batch: b.batch,
            seq_len: b.seq_len,
            ids: Tensor::from_slice(&b.input_ids, n, dev)?,
            segments: Segments::new(&b.segment_ids, b.batch, b.seq_len, dev)?,
            rope: self.rope.gather(&positions)?,
            targets: CeTargets { count, rows: Tensor::from_vec(rows, count, dev)?, targets: Tensor::from_vec(targets, count, dev)? },
        })
    }

    fn p(&self, i: usize) -> &Tensor {
        &self.params[i]
    }

    fn layer_fwd(&self, ops: &dyn Ops, l: &LayerIdx, x: Tensor, inp: &Inputs) -> Result<(Tensor, LayerActs)> {
        let c = &self.cfg;
        let (b, t, d) = (inp.batch, inp.seq_len, c.head_dim());
        let ln1 = ops.rms_norm_fwd(&x, self.p(l.ln1), c.rms_norm_eps)?;
        let q = linear(&ln1.y, self.p(l.q_w), Some(self.p(l.q_b)))?.reshape((b, t, c.num_attention_heads, d))?;
        let k = linear(&ln1.y, self.p(l.k_w), Some(self.p(l.k_b)))?.reshape((b, t, c.num_key_value_heads, d))?;
        let v = linear(&ln1.y, self.p(l.v_w), Some(self.p(l.v_b)))?.reshape((b, t, c.num_key_value_heads, d))?;
        let q = ops.rope_fwd(&q, &inp.rope)?;
        let k = ops.rope_fwd(&k, &inp.rope)?;
        let attn = ops.attn_fwd(&q, &k, &v, &inp.segments, 1.0 / (d as f64).sqrt())?;
        let a = linear(&attn.out.reshape((b * t, c.num_attention_heads * d))?, self.p(l.o_w), None)?;
        let x2 = (&x + a)?;
        let ln2 = ops.rms_norm_fwd(&x2, self.p(l.ln2), c.rms_norm_eps)?;
        let gate = linear(&ln2.y, self.p(l.gate), None)?;
        let up = linear(&ln2.y, self.p(l.up), None)?;
        let m = ops.swiglu_fwd(&gate, &up)?;
        let x3 = (&x2 + linear(&m, self.p(l.down), None)?)?;
        Ok((x3, LayerActs { x, ln1, q, k, v, attn, x2, ln2, gate, up, m }))
    }

    fn layer_bwd(&self, ops: &dyn Ops, l: &LayerIdx, a: LayerActs, dx3: Tensor, inp: &Inputs, g: &mut Grads) -> Result<Tensor> {
        let c = &self.cfg;
        let (b, t, d) = (inp.batch, inp.seq_len, c.head_dim());
        let n = b * t;
        // MLP. The (N, I) tensors are dropped as soon as they are used: with three of them
        // alive at once a 7B layer's backward holds ≈ 0.5 GB per 4k tokens more (train::plan).
        let LayerActs { x, ln1, q, k, v, attn, x2, ln2, gate, up, m } = a;
        let dm = dx3.matmul(self.p(l.down))?;
        g.slots[l.down] = Some(ops.linear_grad_acc(&dx3, &m, g.take(l.down))?);
        drop(m);
        let (dgate, dup) = ops.swiglu_bwd(&dm, &gate, &up)?;
        drop((dm, gate, up));
        g.slots[l.gate] = Some(ops.linear_grad_acc(&dgate, &ln2.y, g.take(l.gate))?);
        let dh2 = dgate.matmul(self.p(l.gate))?;
        drop(dgate);
        g.slots[l.up] = Some(ops.linear_grad_acc(&dup, &ln2.y, g.take(l.up))?);
        let dh2 = (dh2 + dup.matmul(self.p(l.up))?)?;
        drop(dup);
        let (dx2n, dln2) = ops.rms_norm_bwd(&dh2, &x2, self.p(l.ln2), &ln2.rstd)?;
        drop((dh2, x2, ln2));
        g.slots[l.ln2] = Some(ops.grad_acc(g.take(l.ln2), dln2)?);
        let dx2 = (dx3 + dx2n)?;
        // attention
        let o_flat = attn.out.reshape((n, c.num_attention_heads * d))?;
        let dout = dx2.matmul(self.p(l.o_w))?.reshape((b, t, c.num_attention_heads, d))?;
        g.slots[l.o_w] = Some(ops.linear_grad_acc(&dx2, &o_flat, g.take(l.o_w))?);
        drop(o_flat);
        let (dq, dk, dv) = ops.attn_bwd(&dout, &q, &k, &v, &attn, &inp.segments, 1.0 / (d as f64).sqrt())?;
        drop((dout, q, k, v, attn));
        let dq = ops.rope_bwd(&dq, &inp.rope)?.reshape((n, c.num_attention_heads * d))?;
        let dk = ops.rope_bwd(&dk, &inp.rope)?.reshape((n, c.num_key_value_heads * d))?;
        let dv = dv.reshape((n, c.num_key_value_heads * d))?;
        let dh1 = ((dq.matmul(self.p(l.q_w))? + dk.matmul(self.p(l.k_w))?)? + dv.matmul(self.p(l.v_w))?)?;
        for (dy, w, bias) in [(&dq, l.q_w, l.q_b), (&dk, l.k_w, l.k_b), (&dv, l.v_w, l.v_b)] {
            g.slots[w] = Some(ops.linear_grad_acc(dy, &ln1.y, g.take(w))?);
            g.slots[bias] = Some(ops.bias_grad_acc(dy, g.take(bias))?);
        }
        drop((dq, dk, dv));
        let (dxn, dln1) = ops.rms_norm_bwd(&dh1, &x, self.p(l.ln1), &ln1.rstd)?;
        g.slots[l.ln1] = Some(ops.grad_acc(g.take(l.ln1), dln1)?);
        Ok((dx2 + dxn)?)
    }

    /// Final hidden states `(N, H)` after the last RMSNorm (what the LM head reads).
    pub fn hidden(&self, ops: &dyn Ops, inp: &Inputs) -> Result<Tensor> {
        let mut x = ops.embedding_fwd(&inp.ids, self.p(self.embed))?;
        for l in &self.layers {
            x = self.layer_fwd(ops, l, x, inp)?.0;
        }
        Ok(ops.rms_norm_fwd(&x, self.p(self.norm), self.cfg.rms_norm_eps)?.y)
    }

    /// Logits `(N, V)` in the compute dtype (tests and comparisons; training never builds them).
    pub fn logits(&self, ops: &dyn Ops, inp: &Inputs) -> Result<Tensor> {
        linear(&self.hidden(ops, inp)?, self.p(self.head), None)
    }

    /// Σ of the counted predictions' losses, without gradients (evaluation).
    pub fn loss_sum(&self, ops: &dyn Ops, inp: &Inputs) -> Result<f64> {
        let h = self.hidden(ops, inp)?;
        let ce = ops.cross_entropy(&h, self.p(self.head), &inp.targets, None, self.ce_chunk, None)?;
        Ok(ce.loss_sum.to_dtype(DType::F64)?.to_scalar::<f64>()?)
    }

    /// Forward and backward of one micro-batch: adds the gradients of `grad_scale · loss_sum`
    /// to `grads` and returns `loss_sum` (Σ over counted predictions). For a step's mean loss,
    /// `grad_scale` is 1 / (counted predictions of all the step's micro-batches).
    pub fn forward_backward(&self, ops: &dyn Ops, inp: &Inputs, grad_scale: f64, grads: &mut Grads) -> Result<f64> {
        if grads.slots.len() != self.params.len() {
            *grads = Grads::new(self.params.len());
        }
        let mut x = ops.embedding_fwd(&inp.ids, self.p(self.embed))?;
        let mut saved = Vec::with_capacity(self.layers.len());
        for (i, l) in self.layers.iter().enumerate() {
            if i < self.recompute_layers {
                // Only the input is kept; the activations are dropped with the forward's.
                let next = self.layer_fwd(ops, l, x.clone(), inp)?.0;
                saved.push(Saved::Input(x));
                x = next;
            } else {
                let (next, acts) = self.layer_fwd(ops, l, x, inp)?;
                saved.push(Saved::All(acts));
                x = next;
            }
        }
        let fin = ops.rms_norm_fwd(&x, self.p(self.norm), self.cfg.rms_norm_eps)?;
        // The head gradient accumulates inside the cross-entropy (no second (V, H) buffer).
        let ce = ops.cross_entropy(&fin.y, self.p(self.head), &inp.targets, Some(grad_scale), self.ce_chunk, grads.take(self.head))?;
        let loss_sum = ce.loss_sum.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        grads.slots[self.head] = ce.dw;
        let dh = ce.dh.ok_or_else(|| TrainError::Data("cross-entropy returned no gradient".into()))?;
        let (mut dx, dnorm) = ops.rms_norm_bwd(&dh, &x, self.p(self.norm), &fin.rstd)?;
        grads.slots[self.norm] = Some(ops.grad_acc(grads.take(self.norm), dnorm)?);
        drop(x);
        for l in self.layers.iter().rev() {
            let acts = match saved.pop().expect("one saved entry per layer") {
                Saved::All(a) => a,
                Saved::Input(x) => self.layer_fwd(ops, l, x, inp)?.1,
            };
            dx = self.layer_bwd(ops, l, acts, dx, inp, grads)?;
        }
        let acc = acc_dtype(self.dtype);
        let eg = match grads.take(self.embed) {
            Some(g) => g,
            None => Tensor::zeros(self.specs[self.embed].shape.as_slice(), acc, self.device())?,
        };
        grads.slots[self.embed] = Some(ops.embedding_bwd_acc(&inp.ids, &dx, eg)?);
        Ok(loss_sum)
    }
}

#[cfg(test)]
#[path = "model_tests.rs"]
mod tests;
