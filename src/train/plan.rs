//! Memory planning for training (pure functions, no device; the host's free memory is read by
//! [`host_available_bytes`]): what the fixed state takes
//! (compute-dtype weights, fp32 master weights and moments, fp32 gradients) and, for a step's
//! shape, which layers recompute their activations in backward and how many tokens the
//! cross-entropy takes at a time so that the step's estimated peak fits the memory the device
//! has free. The trainer and the benchmark call [`plan`] with the free memory they measured after
//! placing the weights and the optimizer state, and print the [`Plan`].
//!
//! The estimate walks one step's timeline the way `model.rs` allocates (forward layer by layer,
//! the chunked LM head + cross-entropy, backward layer by layer with gradients appearing as
//! activations are freed) and takes the largest total. Byte counts per token are those of the
//! tensors `model.rs` keeps (see [`layer_act_bytes`]); checked against the pool peaks measured on
//! the H100 (docs/cuda-notes.md) by the tests below.
//!
//! Recomputed layers are the first ones: backward reaches them last, when most gradients exist,
//! so that is where keeping only a layer's input saves the peak.
//!
//! On CPU nothing is chosen from memory (a run's numbers must not depend on the machine it runs
//! on), but a step that cannot fit is refused before the first step, naming `seq_len` and the
//! sizes: the estimate plus the CPU attention's `T²` scores against what this process can still
//! take ([`plan_host`]). On every device a row longer than the model's positions is refused.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::arch::Qwen2Config;
use super::error::{Result, TrainError};

/// Bytes of an f32 (master weights, moments, gradients, statistics).
const F32: u64 = 4;
/// Kept free for what the model does not count: cuBLAS/cuDNN workspaces, small index tensors,
/// the memory pool's rounding and fragmentation.
pub const RESERVE_BYTES: u64 = 1 << 30;
/// Part of the available memory also kept free (the estimate's own error; measured within
/// 10 % on the H100, see the tests).
pub const RESERVE_FRACTION: f64 = 0.04;
/// Cross-entropy chunks `auto` tries first, largest first (8192 measured +1.2 % over 4096 at
/// 0.5B, docs/cuda-notes.md call 5), before any layer is recomputed.
const CE_CHUNKS_PREFERRED: &[usize] = &[8192, 4096, 2048];
/// Smaller chunks, tried only once every layer is recomputed.
const CE_CHUNKS_SMALL: &[usize] = &[1024, 512, 256];
/// Chunk used where nothing is planned (CPU).
pub const CE_CHUNK_DEFAULT: usize = 1024;

/// Which layers recompute their activations in backward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Recompute {
    /// Chosen by [`plan`] from free memory (on CPU: none).
    #[default]
    Auto,
    /// No layer (every activation kept).
    None,
    /// Every layer (only each layer's input kept).
    All,
    /// The first `n` layers.
    Layers(usize),
}

impl Recompute {
    /// Recomputed layers out of `layers` for an explicit setting (`None` for `Auto`).
    pub fn layers(self, layers: usize) -> Option<usize> {
        match self {
            Recompute::Auto => None,
            Recompute::None => Some(0),
            Recompute::All => Some(layers),
            Recompute::Layers(n) => Some(n.min(layers)),
        }
    }
}

impl fmt::Display for Recompute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Recompute::Auto => write!(f, "auto"),
            Recompute::None => write!(f, "none"),
            Recompute::All => write!(f, "all"),
            Recompute::Layers(n) => write!(f, "{n}"),
        }
    }
}

impl std::str::FromStr for Recompute {
    type Err = TrainError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(Recompute::Auto),
            "none" | "false" => Ok(Recompute::None),
            "all" | "true" => Ok(Recompute::All),
            n => n
                .parse()
                .map(Recompute::Layers)
                .map_err(|_| TrainError::config("recompute", format!("{s:?} is not auto, none, all, true, false or a layer count"))),
        }
    }
}

// TOML/JSON form: `true`/`false`, a layer count, or "auto"/"none"/"all".
impl Serialize for Recompute {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            Recompute::Layers(n) => s.serialize_u64(*n as u64),
            other => s.serialize_str(&other.to_string()),
        }
    }
}

impl<'de> Deserialize<'de> for Recompute {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Recompute;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                write!(f, "true, false, a layer count, or one of \"auto\", \"none\", \"all\"")
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> std::result::Result<Recompute, E> {
                Ok(if v { Recompute::All } else { Recompute::None })
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> std::result::Result<Recompute, E> {
                Ok(Recompute::Layers(v as usize))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> std::result::Result<Recompute, E> {
                u64::try_from(v).map(|v| Recompute::Layers(v as usize)).map_err(|_| E::custom(format!("{v} layers: must be >= 0")))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> std::result::Result<Recompute, E> {
                match v {
                    "auto" => Ok(Recompute::Auto),
                    "none" => Ok(Recompute::None),
                    "all" => Ok(Recompute::All),
                    _ => Err(E::custom(format!("{v:?} is not \"auto\", \"none\" or \"all\""))),
                }
            }
        }
        d.deserialize_any(V)
    }
}

impl JsonSchema for Recompute {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Recompute".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "Layers that recompute activations in backward: \"auto\" (from free device memory), \"none\"/false, \"all\"/true, or the first N layers.",
            "anyOf": [
                { "type": "boolean" },
                { "type": "integer", "minimum": 0 },
                { "type": "string", "enum": ["auto", "none", "all"] }
            ]
        })
    }
}

/// Tokens per cross-entropy chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CeChunk {
    /// Chosen by [`plan`] from free memory (on CPU: [`CE_CHUNK_DEFAULT`]).
    #[default]
    Auto,
    /// This many counted tokens at a time.
    Tokens(usize),
}

impl fmt::Display for CeChunk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CeChunk::Auto => write!(f, "auto"),
            CeChunk::Tokens(n) => write!(f, "{n}"),
        }
    }
}

impl std::str::FromStr for CeChunk {
    type Err = TrainError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(CeChunk::Auto),
            n => match n.parse::<usize>() {
                Ok(n) if n > 0 => Ok(CeChunk::Tokens(n)),
                _ => Err(TrainError::config("ce_chunk_tokens", format!("{s:?} is not auto or a token count >= 1"))),
            },
        }
    }
}

impl Serialize for CeChunk {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            CeChunk::Tokens(n) => s.serialize_u64(*n as u64),
            CeChunk::Auto => s.serialize_str("auto"),
        }
    }
}

impl<'de> Deserialize<'de> for CeChunk {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = CeChunk;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                write!(f, "a token count >= 1 or \"auto\"")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> std::result::Result<CeChunk, E> {
                if v == 0 {
                    return Err(E::custom("0 tokens: must be >= 1"));
                }
                Ok(CeChunk::Tokens(v as usize))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> std::result::Result<CeChunk, E> {
                u64::try_from(v).map_err(|_| E::custom(format!("{v} tokens: must be >= 1"))).and_then(|v| self.visit_u64(v))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> std::result::Result<CeChunk, E> {
                match v {
                    "auto" => Ok(CeChunk::Auto),
                    _ => Err(E::custom(format!("{v:?} is not \"auto\""))),
                }
            }
        }
        d.deserialize_any(V)
    }
}

impl JsonSchema for CeChunk {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "CeChunk".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "Counted tokens per cross-entropy chunk: a count, or \"auto\" (from free device memory).",
            "anyOf": [
                { "type": "integer", "minimum": 1 },
                { "type": "string", "enum": ["auto"] }
            ]
        })
    }
}

/// The shape of a training step, as the planner sees it.
#[derive(Debug, Clone, Copy)]
pub struct StepShape<'a> {
    /// Architecture.
    pub arch: &'a Qwen2Config,
    /// Rows per micro-batch.
    pub batch: usize,
    /// Tokens per row.
    pub seq_len: usize,
    /// Micro-batches per optimizer step (from the second on, every gradient is alive during
    /// the forward).
    pub micro_batches: usize,
    /// Bytes of the compute dtype (2 for bf16, 4 for f32).
    pub compute_bytes: u64,
}

impl StepShape<'_> {
    fn tokens(&self) -> u64 {
        (self.batch * self.seq_len) as u64
    }
}

/// Bytes of the state that lives for the whole run: compute-dtype weights plus f32 master
/// weights and both moments (the gradients come and go each step: [`grad_bytes`]).
pub fn fixed_bytes(arch: &Qwen2Config, compute_bytes: u64) -> u64 {
    arch.num_params() * (compute_bytes + 3 * F32)
}

/// Bytes of the f32 gradients of every parameter.
pub fn grad_bytes(arch: &Qwen2Config) -> u64 {
    arch.num_params() * F32
}

/// Per token, the bytes one layer keeps for its backward when it is not recomputed (what
/// `LayerActs` in `model.rs` holds): input, both norm outputs, q/k/v, attention output, the
/// residual sum, gate, up and their SwiGLU product in the compute dtype; the norm statistics and
/// the attention log-sum-exp in f32.
pub fn layer_act_bytes(arch: &Qwen2Config, compute_bytes: u64) -> u64 {
    let (h, i) = (arch.hidden_size as u64, arch.intermediate_size as u64);
    let q = (arch.num_attention_heads * arch.head_dim()) as u64;
    let kv = (arch.num_key_value_heads * arch.head_dim()) as u64;
    compute_bytes * (4 * h + 2 * q + 2 * kv + 3 * i) + F32 * (arch.num_attention_heads as u64 + 2)
}

/// Per token, what a layer's forward holds besides its kept activations: the projections before
/// RoPE and the bias add, the attention and MLP outputs before the residual add.
fn layer_fwd_tmp_bytes(arch: &Qwen2Config, compute_bytes: u64) -> u64 {
    let h = arch.hidden_size as u64;
    let q = (arch.num_attention_heads * arch.head_dim()) as u64;
    let kv = (arch.num_key_value_heads * arch.head_dim()) as u64;
    compute_bytes * (2 * q + 2 * kv + 2 * h)
}

/// Per token, the largest set of temporaries a layer's backward holds besides its activations:
/// the three `(N, I)` MLP gradients (dm, dgate, dup) and the hidden-size gradients beside them.
fn layer_bwd_tmp_bytes(arch: &Qwen2Config, compute_bytes: u64) -> u64 {
    let (h, i) = (arch.hidden_size as u64, arch.intermediate_size as u64);
    compute_bytes * (3 * i + 4 * h)
}

fn layer_params(arch: &Qwen2Config) -> u64 {
    let (h, i) = (arch.hidden_size as u64, arch.intermediate_size as u64);
    let q = (arch.num_attention_heads * arch.head_dim()) as u64;
    let kv = (arch.num_key_value_heads * arch.head_dim()) as u64;
    h * q + q + 2 * (h * kv + kv) + q * h + 3 * h * i + 2 * h
}

/// Estimated peak bytes a step adds on top of [`fixed_bytes`] (gradients, activations, the
/// LM head and cross-entropy, temporaries) with the first `recompute_layers` layers recomputed
/// and `ce_chunk` tokens per cross-entropy chunk.
pub fn step_peak_bytes(s: &StepShape, recompute_layers: usize, ce_chunk: usize) -> u64 {
    let a = s.arch;
    let (c, n) = (s.compute_bytes, s.tokens());
    let layers = a.num_hidden_layers;
    let r = recompute_layers.min(layers);
    let (h, v) = (a.hidden_size as u64, a.vocab_size as u64);
    let acts = layer_act_bytes(a, c) * n;
    let input = c * h * n;
    let saved = |l: usize| if l < r { input } else { acts };
    let fwd_tmp = layer_fwd_tmp_bytes(a, c) * n;
    let bwd_tmp = layer_bwd_tmp_bytes(a, c) * n;
    let all_grads = grad_bytes(a);
    let layer_grads = layer_params(a) * F32;
    let head_grads = v * h * F32 + h * F32; // head (or tied embedding) and final norm
    let chunk = (ce_chunk.max(1) as u64).min(n.max(1));
    let ce_tmp = chunk * (v * c + 2 * h * c + 2 * F32) + 2 * n * h * c; // logits, rows, dh chunk; final norm out, dh
    let mut peak = 0u64;
    for m in 0..s.micro_batches.max(1) {
        // Gradients alive from the second micro-batch on.
        let g0 = if m == 0 { 0 } else { all_grads };
        let mut kept = 0u64;
        for l in 0..layers {
            peak = peak.max(g0 + kept + acts + fwd_tmp + input);
            kept += saved(l);
        }
        // LM head + cross-entropy: the head's gradient appears (first micro-batch).
        let g_ce = if m == 0 { head_grads } else { all_grads };
        peak = peak.max(g_ce + kept + input + ce_tmp);
        // Backward: layer l's saved state becomes its full activations (recomputed or kept),
        // its gradients appear; layers below still hold theirs.
        let mut g = g_ce;
        for l in (0..layers).rev() {
            kept -= saved(l);
            if m == 0 {
                g += layer_grads;
            }
            peak = peak.max(g + kept + acts + bwd_tmp + input);
        }
        // The embedding gradient (untied) and the last dx.
        let g_end = if m == 0 { all_grads } else { g };
        peak = peak.max(g_end + input);
    }
    peak
}

/// What the planner chose, and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    /// The first this many layers recompute their activations in backward.
    pub recompute_layers: usize,
    /// Decoder layers.
    pub layers: usize,
    /// Counted tokens per cross-entropy chunk.
    pub ce_chunk: usize,
    /// Estimated peak on top of the fixed state (bytes).
    pub step_peak_bytes: u64,
    /// Fixed state: weights, f32 master weights and moments (bytes).
    pub fixed_bytes: u64,
    /// Of the step peak, the f32 gradients (bytes).
    pub grad_bytes: u64,
    /// Memory free for the step after the fixed state, before the reserve (bytes; `None` on CPU).
    pub available_bytes: Option<u64>,
    /// Kept free of the available memory (workspaces, fragmentation, estimate error).
    pub reserve_bytes: u64,
    /// Whether the settings came from the planner (`auto`) or the config.
    pub auto: bool,
    /// Whether the estimate fits the available memory (always true on CPU).
    pub fits: bool,
}

fn gib(b: u64) -> f64 {
    b as f64 / (1u64 << 30) as f64
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "memory plan ({}): recompute {} of {} layers, cross-entropy chunk {} tokens; fixed state {:.1} GiB (weights, f32 master and moments), step peak ≈ {:.1} GiB (gradients {:.1})",
            if self.auto { "auto" } else { "configured" },
            self.recompute_layers,
            self.layers,
            self.ce_chunk,
            gib(self.fixed_bytes),
            gib(self.step_peak_bytes),
            gib(self.grad_bytes),
        )?;
        if let Some(a) = self.available_bytes {
            write!(f, " of {:.1} GiB free after the fixed state ({:.1} GiB kept in reserve)", gib(a), gib(self.reserve_bytes))?;
            if !self.fits {
                write!(f, " — DOES NOT FIT by the estimate")?;
            }
        }
        Ok(())
    }
}

/// The reserve kept out of `available` bytes.
pub fn reserve_for(available: u64) -> u64 {
    RESERVE_BYTES + (available as f64 * RESERVE_FRACTION) as u64
}

/// Plans a step. `available` is the device memory free after the fixed state is placed (`None`:
/// no device limit, as on CPU: `auto` means no recomputation and [`CE_CHUNK_DEFAULT`], and the
/// step is checked against the host's memory, see [`plan_host`]).
/// `auto` picks the fewest recomputed layers with a chunk of at least 2048 tokens (the largest
/// that fits at that count), then, with every layer recomputed, smaller chunks; an explicit
/// setting is kept and only checked. Errors when `auto` finds nothing that fits, with the sizes,
/// and when a row is longer than the model's positions ([`check_positions`]).
pub fn plan(s: &StepShape, available: Option<u64>, recompute: Recompute, ce_chunk: CeChunk) -> Result<Plan> {
    match available {
        Some(a) => plan_device(s, a, recompute, ce_chunk),
        None => plan_host(s, host_available_bytes(), recompute, ce_chunk),
    }
}

/// A row longer than the model's positions: refused (`seq_len`), since the checkpoint's
/// `config.json` would claim fewer positions than the model was trained on (vLLM and HF
/// generation then refuse or mis-handle the longer contexts).
pub fn check_positions(s: &StepShape) -> Result<()> {
    let max = s.arch.max_position_embeddings;
    if s.seq_len > max {
        return Err(TrainError::config(
            "seq_len",
            format!(
                "{} tokens per row, but the model has max_position_embeddings = {max}: use seq_len <= {max}, or a model.config_json with more positions",
                s.seq_len
            ),
        ));
    }
    Ok(())
}

/// Per micro-batch, the bytes the CPU attention (`ops::reference`) holds at its peak besides
/// the activations [`step_peak_bytes`] counts: it materialises f32 scores of `(B, heads, T, T)`,
/// up to five such tensors at once in backward (probabilities, their gradient and the
/// temporaries between), plus the `(B, T, T)` segment mask in three forms.
pub fn cpu_attention_bytes(s: &StepShape) -> u64 {
    let t = s.seq_len as u64;
    let per_row = (5 * s.arch.num_attention_heads as u64 + 3).saturating_mul(t.saturating_mul(t));
    F32.saturating_mul(s.batch as u64).saturating_mul(per_row)
}

/// Kept free of the host's available memory on CPU: what the estimate does not count (candle's
/// temporaries, the allocator's arenas, the batch source), besides [`RESERVE_FRACTION`].
pub const HOST_RESERVE_BYTES: u64 = 256 << 20;

/// Plans a CPU step (no recomputation, [`CE_CHUNK_DEFAULT`] unless set) and refuses, before any
/// work, one whose estimated memory — the fixed state, the step peak and the CPU attention's
/// scores — exceeds `host`, the memory this process can still take (see
/// [`host_available_bytes`]; `None`: unknown, not checked).
pub fn plan_host(s: &StepShape, host: Option<u64>, recompute: Recompute, ce_chunk: CeChunk) -> Result<Plan> {
    check_positions(s)?;
    let layers = s.arch.num_hidden_layers;
    let r = recompute.layers(layers).unwrap_or(0);
    let c = match ce_chunk {
        CeChunk::Tokens(c) => c,
        CeChunk::Auto => CE_CHUNK_DEFAULT,
    };
    let plan = Plan {
        recompute_layers: r,
        layers,
        ce_chunk: c,
        step_peak_bytes: step_peak_bytes(s, r, c),
        fixed_bytes: fixed_bytes(s.arch, s.compute_bytes),
        grad_bytes: grad_bytes(s.arch),
        available_bytes: None,
        reserve_bytes: 0,
        auto: recompute == Recompute::Auto || ce_chunk == CeChunk::Auto,
        fits: true,
    };
    if let Some(host) = host {
        let need = plan.fixed_bytes.saturating_add(plan.step_peak_bytes).saturating_add(cpu_attention_bytes(s));
        let reserve = HOST_RESERVE_BYTES + (host as f64 * RESERVE_FRACTION) as u64;
        if need > host.saturating_sub(reserve) {
            return Err(TrainError::config(
                "seq_len",
                format!(
                    "batch_size {} × seq_len {} does not fit on the CPU: a step needs ≈ {:.2} GiB ({} bytes: fixed state {:.2} GiB, activations and gradients {:.2} GiB, attention scores {:.2} GiB), this process can take {:.2} GiB ({host} bytes, {:.2} GiB kept in reserve); use a smaller batch_size or seq_len",
                    s.batch,
                    s.seq_len,
                    gib(need),
                    need,
                    gib(plan.fixed_bytes),
                    gib(plan.step_peak_bytes),
                    gib(cpu_attention_bytes(s)),
                    gib(host),
                    gib(reserve),
                ),
            ));
        }
    }
    Ok(plan)
}

/// Memory this process can still take on the host: the least of the kernel's `MemAvailable`,
/// the cgroup's limit less its usage (v2 `memory.max`, v1 `memory.limit_in_bytes`) and the
/// address-space limit (`ulimit -v`) less the address space already mapped. `None` where none
/// of these can be read (not Linux).
pub fn host_available_bytes() -> Option<u64> {
    let read = |p: &str| std::fs::read_to_string(p).ok();
    let mut limits: Vec<u64> = Vec::new();
    // "MemAvailable:   22801164 kB"
    let kib_field = |text: &str, name: &str| -> Option<u64> {
        let line = text.lines().find(|l| l.starts_with(name))?;
        line[name.len()..].split_whitespace().next()?.parse::<u64>().ok().map(|k| k * 1024)
    };
    if let Some(m) = read("/proc/meminfo").and_then(|t| kib_field(&t, "MemAvailable:")) {
        limits.push(m);
    }
    let num = |p: &str| read(p).and_then(|t| t.trim().parse::<u64>().ok());
    if let (Some(max), Some(cur)) = (num("/sys/fs/cgroup/memory.max"), num("/sys/fs/cgroup/memory.current")) {
        limits.push(max.saturating_sub(cur));
    } else if let (Some(max), Some(cur)) =
        (num("/sys/fs/cgroup/memory/memory.limit_in_bytes"), num("/sys/fs/cgroup/memory/memory.usage_in_bytes"))
    {
        limits.push(max.saturating_sub(cur));
    }
    // "Max address space         3221225472           3221225472           bytes"
    let as_limit = read("/proc/self/limits").and_then(|t| {
        let line = t.lines().find(|l| l.starts_with("Max address space"))?;
        line["Max address space".len()..].split_whitespace().next()?.parse::<u64>().ok()
    });
    if let (Some(limit), Some(mapped)) = (as_limit, read("/proc/self/status").and_then(|t| kib_field(&t, "VmSize:"))) {
        limits.push(limit.saturating_sub(mapped));
    }
    limits.into_iter().min()
}

/// [`plan`] against `available` bytes of device memory.
fn plan_device(s: &StepShape, available: u64, recompute: Recompute, ce_chunk: CeChunk) -> Result<Plan> {
    check_positions(s)?;
    let layers = s.arch.num_hidden_layers;
    let n = s.batch * s.seq_len;
    let reserve = reserve_for(available);
    let budget = available.saturating_sub(reserve);
    let mk = |r: usize, chunk: usize, auto: bool| {
        let peak = step_peak_bytes(s, r, chunk);
        Plan {
            recompute_layers: r,
            layers,
            ce_chunk: chunk,
            step_peak_bytes: peak,
            fixed_bytes: fixed_bytes(s.arch, s.compute_bytes),
            grad_bytes: grad_bytes(s.arch),
            available_bytes: Some(available),
            reserve_bytes: reserve,
            auto,
            fits: peak <= budget,
        }
    };
    let fixed_r = recompute.layers(layers);
    let fixed_c = match ce_chunk {
        CeChunk::Tokens(c) => Some(c),
        CeChunk::Auto => None,
    };
    let fits = |r: usize, c: usize| step_peak_bytes(s, r, c) <= budget;
    let chunks = |list: &[usize]| -> Vec<usize> {
        let mut v: Vec<usize> = list.iter().map(|&c| c.min(n.max(1))).collect();
        v.dedup();
        v
    };
    let rs: Vec<usize> = match fixed_r {
        Some(r) => vec![r],
        None => (0..=layers).collect(),
    };
    let (big, small) = match fixed_c {
        Some(c) => (vec![c], vec![]),
        None => (chunks(CE_CHUNKS_PREFERRED), chunks(CE_CHUNKS_SMALL)),
    };
    for &r in &rs {
        if let Some(&c) = big.iter().find(|&&c| fits(r, c)) {
            return Ok(mk(r, c, fixed_r.is_none() || fixed_c.is_none()));
        }
    }
    for &r in &rs {
        if let Some(&c) = small.iter().find(|&&c| fits(r, c)) {
            return Ok(mk(r, c, true));
        }
    }
    if fixed_r.is_some() && fixed_c.is_some() {
        // Explicit settings: keep them; the caller warns.
        return Ok(mk(fixed_r.unwrap_or(0), fixed_c.unwrap_or(CE_CHUNK_DEFAULT), false));
    }
    let r = fixed_r.unwrap_or(layers);
    let c = fixed_c.unwrap_or(*CE_CHUNKS_SMALL.last().expect("non-empty"));
    Err(TrainError::config(
        "seq_len",
        format!(
            "batch_size {} × seq_len {} does not fit: with {r} of {layers} layers recomputed and a {c}-token cross-entropy chunk a step needs ≈ {:.1} GiB on top of the fixed state ({:.1} GiB), {:.1} GiB are free ({:.1} GiB kept in reserve); use a smaller batch_size or seq_len",
            s.batch,
            s.seq_len,
            gib(step_peak_bytes(s, r, c)),
            gib(fixed_bytes(s.arch, s.compute_bytes)),
            gib(available),
            gib(reserve),
        ),
    ))
}

/// [`plan`] for a card of `device_gib` GiB of which `used_gib` are taken before the trainer
/// allocates (what `coretech plan` prints): the fixed state comes off first. `model` is a preset
/// or the path of an HF `config.json`.
#[allow(clippy::too_many_arguments)]
pub fn plan_for_card(
    model: &str,
    batch: usize,
    seq_len: usize,
    micro_batches: usize,
    dtype: super::config::ComputeDtype,
    device_gib: f64,
    used_gib: f64,
    recompute: Recompute,
    ce_chunk: CeChunk,
) -> Result<Plan> {
    let arch = if model.ends_with(".json") { Qwen2Config::from_hf_file(std::path::Path::new(model))? } else { Qwen2Config::preset(model)? };
    let bad_memory = device_gib.is_nan() || device_gib <= 0.0 || used_gib.is_nan() || used_gib < 0.0;
    if batch == 0 || seq_len < 2 || micro_batches == 0 || bad_memory {
        return Err(TrainError::config("plan", "batch and micro-batches must be >= 1, seq >= 2, device memory > 0"));
    }
    let compute_bytes = dtype.dtype().size_in_bytes() as u64;
    let card = ((device_gib - used_gib).max(0.0) * (1u64 << 30) as f64) as u64;
    let fixed = fixed_bytes(&arch, compute_bytes);
    if fixed > card {
        return Err(TrainError::config(
            "model",
            format!(
                "the fixed state of {model} ({:.1} GiB: weights, f32 master weights and moments) does not fit {:.1} GiB",
                gib(fixed),
                gib(card)
            ),
        ));
    }
    let shape = StepShape { arch: &arch, batch, seq_len, micro_batches, compute_bytes };
    plan(&shape, Some(card - fixed), recompute, ce_chunk)
}

/// Device memory free for a training step: on CUDA what the driver has free plus what the
/// trainer's memory pool holds unused; `None` on CPU (no device limit to plan against).
pub fn available_bytes(device: &candle_core::Device) -> Result<Option<u64>> {
    match device {
        #[cfg(feature = "cuda")]
        candle_core::Device::Cuda(d) => Ok(Some(super::cuda::device::available_bytes(d)?)),
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: f64 = (1u64 << 30) as f64;

    fn shape(arch: &Qwen2Config, batch: usize, seq_len: usize) -> StepShape<'_> {
        StepShape { arch, batch, seq_len, micro_batches: 1, compute_bytes: 2 }
    }

    /// Fixed state plus step peak, GiB.
    fn total(s: &StepShape, r: usize, c: usize) -> f64 {
        (fixed_bytes(s.arch, s.compute_bytes) + step_peak_bytes(s, r, c)) as f64 / GIB
    }

    #[test]
    fn the_estimate_matches_the_peaks_measured_on_the_h100() {
        // docs/cuda-notes.md: pool high-water marks (cuMemPool USED_MEM_HIGH) of `bench train`.
        let q05 = Qwen2Config::preset("qwen2.5-0.5b").unwrap();
        let q15 = Qwen2Config::preset("qwen2.5-1.5b").unwrap();
        for (what, est, measured) in [
            ("0.5B b8 chunk 4096", total(&shape(&q05, 8, 2048), 0, 4096), 23.1),
            ("0.5B b8 chunk 8192", total(&shape(&q05, 8, 2048), 0, 8192), 24.2),
            ("0.5B b8 recompute", total(&shape(&q05, 8, 2048), 24, 4096), 9.6),
            ("1.5B b8", total(&shape(&q15, 8, 2048), 0, 4096), 53.9),
            ("1.5B b12", total(&shape(&q15, 12, 2048), 0, 4096), 70.2),
        ] {
            let rel = (est - measured).abs() / measured;
            assert!(rel < 0.10, "{what}: estimated {est:.2} GiB, measured {measured} GiB ({:.1} % off)", rel * 100.0);
        }
    }

    #[test]
    fn recomputing_more_layers_or_a_smaller_chunk_never_costs_memory() {
        let a = Qwen2Config::preset("qwen2.5-7b").unwrap();
        let s = StepShape { micro_batches: 2, ..shape(&a, 2, 4096) };
        let mut last = u64::MAX;
        for r in 0..=a.num_hidden_layers {
            let p = step_peak_bytes(&s, r, 4096);
            assert!(p <= last, "{r} layers: {p} > {last}");
            last = p;
            assert!(step_peak_bytes(&s, r, 1024) <= p);
        }
        // A second micro-batch runs its forward with every gradient alive.
        assert!(step_peak_bytes(&s, 0, 4096) > step_peak_bytes(&shape(&a, 2, 4096), 0, 4096));
    }

    #[test]
    fn qwen_7b_on_one_h200_plans_a_fitting_step_and_says_so() {
        let a = Qwen2Config::preset("qwen2.5-7b").unwrap();
        assert_eq!(a.num_params(), 7_615_616_512);
        let fixed = fixed_bytes(&a, 2);
        // bf16 weights + f32 master and moments: 14 bytes a parameter, ≈ 99.3 GiB.
        assert!((fixed as f64 / GIB - 99.3).abs() < 0.1, "{}", fixed as f64 / GIB);
        // An H200 (143,771 MiB) with ≈ 0.6 GiB taken by the context: ≈ 40 GiB after the fixed state.
        let free = (143_771u64 << 20) - (600 << 20) - fixed;
        // seq 4096, one row: every activation fits, the largest preferred chunk.
        let p = plan(&shape(&a, 1, 4096), Some(free), Recompute::Auto, CeChunk::Auto).unwrap();
        assert_eq!((p.recompute_layers, p.ce_chunk, p.fits, p.auto), (0, 4096, true, true), "{p}");
        // Four rows of 2048: some of the first layers recompute, not all.
        let p = plan(&shape(&a, 4, 2048), Some(free), Recompute::Auto, CeChunk::Auto).unwrap();
        assert!(p.recompute_layers > 0 && p.recompute_layers < a.num_hidden_layers && p.fits, "{p}");
        assert!(p.step_peak_bytes <= free - reserve_for(free));
        // One layer fewer would not fit at any preferred chunk: the fewest recomputed layers.
        assert!(step_peak_bytes(&shape(&a, 4, 2048), p.recompute_layers - 1, 2048) > free - reserve_for(free));
        let text = p.to_string();
        assert!(text.contains(&format!("recompute {} of 28 layers", p.recompute_layers)) && text.contains("GiB"), "{text}");
        // Two micro-batches per step: the second forward runs beside all gradients (28.4 GiB),
        // so more layers recompute.
        let s = StepShape { micro_batches: 2, ..shape(&a, 4, 2048) };
        let p2 = plan(&s, Some(free), Recompute::Auto, CeChunk::Auto).unwrap();
        assert!(p2.recompute_layers > p.recompute_layers && p2.fits, "{p2} vs {p}");
        // Far too many tokens: an error naming the sizes and what to change.
        let e = plan(&shape(&a, 64, 4096), Some(free), Recompute::Auto, CeChunk::Auto).unwrap_err().to_string();
        assert!(e.contains("does not fit") && e.contains("GiB") && e.contains("batch_size"), "{e}");
        // On an 80 GB card the fixed state alone does not fit: nothing is free after it.
        let e = plan(&shape(&a, 1, 2048), Some(0), Recompute::Auto, CeChunk::Auto).unwrap_err().to_string();
        assert!(e.contains("does not fit"), "{e}");
    }

    #[test]
    fn explicit_settings_are_kept_and_checked() {
        let a = Qwen2Config::preset("qwen2.5-0.5b").unwrap();
        let s = shape(&a, 8, 2048);
        let p = plan(&s, Some(8 << 30), Recompute::None, CeChunk::Tokens(4096)).unwrap();
        assert_eq!((p.recompute_layers, p.ce_chunk, p.auto, p.fits), (0, 4096, false, false));
        assert!(p.to_string().contains("DOES NOT FIT"));
        let p = plan(&s, Some(8 << 30), Recompute::Layers(99), CeChunk::Auto).unwrap();
        assert_eq!(p.recompute_layers, 24);
        assert!(p.fits && p.ce_chunk >= 2048, "{p}");
        // CPU: nothing to plan against (the host's memory is checked: `plan_host`).
        let p = plan_host(&s, None, Recompute::Auto, CeChunk::Auto).unwrap();
        assert_eq!((p.recompute_layers, p.ce_chunk, p.fits), (0, CE_CHUNK_DEFAULT, true));
        let p = plan_host(&s, None, Recompute::All, CeChunk::Tokens(64)).unwrap();
        assert_eq!((p.recompute_layers, p.ce_chunk), (24, 64));
        // A chunk never exceeds the batch's tokens.
        let tiny = shape(&a, 1, 512);
        assert_eq!(plan(&tiny, Some(40 << 30), Recompute::Auto, CeChunk::Auto).unwrap().ce_chunk, 512);
    }

    #[test]
    fn a_row_longer_than_the_models_positions_is_refused_naming_seq_len() {
        let a = Qwen2Config::preset("test").unwrap();
        assert_eq!(a.max_position_embeddings, 512);
        assert!(plan_host(&shape(&a, 2, 512), None, Recompute::Auto, CeChunk::Auto).is_ok());
        for e in [
            plan_host(&shape(&a, 2, 513), None, Recompute::Auto, CeChunk::Auto).unwrap_err(),
            plan(&shape(&a, 2, 1 << 20), Some(80 << 30), Recompute::Auto, CeChunk::Auto).unwrap_err(),
        ] {
            let TrainError::Config { key, message } = &e else { panic!("{e}") };
            assert_eq!(key, "seq_len");
            assert!(message.contains("max_position_embeddings = 512"), "{message}");
        }
    }

    #[test]
    fn a_cpu_step_over_the_hosts_memory_is_refused_with_the_sizes() {
        let a = Qwen2Config::preset("tiny").unwrap();
        let s = StepShape { compute_bytes: 4, ..shape(&a, 4, 4096) };
        // Four rows of 4096 tokens: ≈ 5.8 GiB of CPU attention scores alone.
        let attn = cpu_attention_bytes(&s);
        assert_eq!(attn, 4 * 4 * (5 * 4 + 3) * 4096 * 4096);
        let need = fixed_bytes(&a, 4) + step_peak_bytes(&s, 0, CE_CHUNK_DEFAULT) + attn;
        let e = plan_host(&s, Some(3 << 30), Recompute::Auto, CeChunk::Auto).unwrap_err();
        let TrainError::Config { key, message } = &e else { panic!("{e}") };
        assert_eq!(key, "seq_len");
        assert!(message.contains(&format!("({need} bytes")) && message.contains("batch_size 4 × seq_len 4096"), "{message}");
        // With room for the estimate and the reserve, the CPU plan is the usual one.
        let host = need + HOST_RESERVE_BYTES + need / 10;
        let p = plan_host(&s, Some(host), Recompute::Auto, CeChunk::Auto).unwrap();
        assert_eq!((p.recompute_layers, p.ce_chunk, p.available_bytes), (0, CE_CHUNK_DEFAULT, None));
        // Extreme shapes saturate instead of overflowing.
        assert_eq!(cpu_attention_bytes(&shape(&a, usize::MAX, usize::MAX)), u64::MAX);
    }

    #[test]
    fn the_host_memory_probe_reads_this_process_limits() {
        // Linux: at least MemAvailable is readable, and it is below the machine's memory.
        if let Some(total) = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|t| t.lines().next().and_then(|l| l.split_whitespace().nth(1)).and_then(|k| k.parse::<u64>().ok()))
        {
            let avail = host_available_bytes().expect("readable on Linux");
            assert!(avail > 0 && avail <= total * 1024, "{avail} of {total} KiB");
        }
    }

    #[test]
    fn settings_parse_from_toml_values_and_strings() {
        #[derive(Deserialize, Serialize)]
        struct T {
            r: Recompute,
            c: CeChunk,
        }
        for (text, r, c) in [
            ("r = true\nc = 4096", Recompute::All, CeChunk::Tokens(4096)),
            ("r = false\nc = \"auto\"", Recompute::None, CeChunk::Auto),
            ("r = 12\nc = 1", Recompute::Layers(12), CeChunk::Tokens(1)),
            ("r = \"auto\"\nc = 8", Recompute::Auto, CeChunk::Tokens(8)),
            ("r = \"all\"\nc = 8", Recompute::All, CeChunk::Tokens(8)),
        ] {
            let t: T = toml::from_str(text).unwrap();
            assert_eq!((t.r, t.c), (r, c), "{text}");
            let back: T = toml::from_str(&toml::to_string(&t).unwrap()).unwrap();
            assert_eq!((back.r, back.c), (r, c));
        }
        for bad in ["r = \"some\"\nc = 1", "r = -1\nc = 1", "r = true\nc = 0", "r = true\nc = \"big\""] {
            assert!(toml::from_str::<T>(bad).is_err(), "{bad}");
        }
        assert_eq!("7".parse::<Recompute>().unwrap(), Recompute::Layers(7));
        assert!("x".parse::<Recompute>().unwrap_err().to_string().contains("layer count"));
        assert_eq!("auto".parse::<CeChunk>().unwrap(), CeChunk::Auto);
        assert!("0".parse::<CeChunk>().is_err());
    }
}
