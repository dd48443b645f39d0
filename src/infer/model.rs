//! A checkpoint directory loaded for inference into candle-transformers' `qwen2` model, which
//! keeps a KV cache per layer.
//!
//! The directory holds an HF Qwen2 `config.json`, the weights as `model.safetensors` or as
//! shards listed in `model.safetensors.index.json`, and optionally `tokenizer.json` (else the
//! bundled Qwen2.5 tokenizer) and `generation_config.json` (its `eos_token_id`s stop
//! generation). Unsupported settings (sliding-window attention, RoPE scaling, an architecture
//! other than Qwen2) are errors, not approximations.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::qwen2;
use serde::{Deserialize, Serialize};

use crate::tokenize::Tokenizer;

use super::{tokenizer, InferError, Result};
use crate::sft::template::{END_OF_TEXT, IM_END};
use crate::train::arch::{hf_token_ids, HfConfig, Qwen2Config};
use crate::train::error::TrainError;

/// The dtype the model computes in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DTypeChoice {
    /// The checkpoint's `torch_dtype` on CUDA; f32 on CPU, where candle has no half-precision
    /// matmul (it widens to f32 on every product, so f32 is faster and loses nothing).
    #[default]
    Auto,
    /// 32-bit float.
    F32,
    /// bfloat16.
    Bf16,
    /// float16.
    F16,
}

impl FromStr for DTypeChoice {
    type Err = InferError;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(DTypeChoice::Auto),
            "f32" | "float32" => Ok(DTypeChoice::F32),
            "bf16" | "bfloat16" => Ok(DTypeChoice::Bf16),
            "f16" | "float16" => Ok(DTypeChoice::F16),
            _ => Err(InferError::config("dtype", format!("{s:?} is not one of auto, f32, bf16, f16"))),
        }
    }
}

impl fmt::Display for DTypeChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DTypeChoice::Auto => "auto",
            DTypeChoice::F32 => "f32",
            DTypeChoice::Bf16 => "bf16",
            DTypeChoice::F16 => "f16",
        })
    }
}

/// How to load a checkpoint.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Where the model runs (`Device::Cpu`, or a CUDA device with the `cuda` feature).
    pub device: Device,
    /// The compute dtype.
    pub dtype: DTypeChoice,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions { device: Device::Cpu, dtype: DTypeChoice::Auto }
    }
}

/// Parses a device name: `cpu`, `cuda` or `cuda:N` (CUDA needs the `cuda` feature).
pub fn parse_device(s: &str) -> Result<Device> {
    let bad = |m: String| InferError::config("device", m);
    match s {
        "cpu" => Ok(Device::Cpu),
        "cuda" => Device::new_cuda(0).map_err(|e| bad(e.to_string())),
        _ => match s.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(n)) => Device::new_cuda(n).map_err(|e| bad(e.to_string())),
            _ => Err(bad(format!("{s:?} is not cpu, cuda or cuda:N"))),
        },
    }
}

fn dtype_named(name: &str) -> Option<DType> {
    match name {
        "float32" | "float" => Some(DType::F32),
        "bfloat16" => Some(DType::BF16),
        "float16" | "half" => Some(DType::F16),
        _ => None,
    }
}

/// Reads a checkpoint's `config.json` with the crate's one parser
/// ([`crate::train::arch::HfConfig`]); its errors become checkpoint errors naming the file
/// (each message names the field).
fn read_config(path: &Path) -> Result<HfConfig> {
    let text = std::fs::read_to_string(path).map_err(|e| InferError::io(path, e))?;
    HfConfig::parse(&text).map_err(|e| match e {
        TrainError::Config { message, .. } => InferError::checkpoint(path, message),
        other => InferError::checkpoint(path, other.to_string()),
    })
}

/// The safetensors files of a checkpoint: the shards the index lists (sorted, unique), or the
/// single `model.safetensors`.
pub fn weight_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let index = dir.join("model.safetensors.index.json");
    if index.is_file() {
        let text = std::fs::read_to_string(&index).map_err(|e| InferError::io(&index, e))?;
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| InferError::checkpoint(&index, e.to_string()))?;
        let map =
            v.get("weight_map").and_then(|m| m.as_object()).ok_or_else(|| InferError::checkpoint(&index, "no \"weight_map\" object"))?;
        let mut files: Vec<String> = Vec::new();
        for (name, file) in map {
            let file = file.as_str().ok_or_else(|| InferError::checkpoint(&index, format!("weight_map[{name:?}] is not a file name")))?;
            files.push(file.to_string());
        }
        files.sort();
        files.dedup();
        if files.is_empty() {
            return Err(InferError::checkpoint(&index, "empty weight_map"));
        }
        let paths: Vec<PathBuf> = files.iter().map(|f| dir.join(f)).collect();
        if let Some(missing) = paths.iter().find(|p| !p.is_file()) {
            return Err(InferError::checkpoint(&index, format!("lists {}, which does not exist", missing.display())));
        }
        return Ok(paths);
    }
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return Ok(vec![single]);
    }
    Err(InferError::checkpoint(dir, "has neither model.safetensors nor model.safetensors.index.json"))
}

/// A loaded checkpoint: model, tokenizer, stop tokens, and the tokens now in the KV cache.
pub struct Checkpoint {
    /// The directory it was loaded from.
    pub dir: PathBuf,
    /// Its `config.json`: the architecture.
    pub config: Qwen2Config,
    /// Its tokenizer.
    pub tokenizer: Arc<Tokenizer>,
    /// Where the tokenizer came from (a path, or the bundled Qwen2.5 one).
    pub tokenizer_origin: String,
    /// Ids that end an answer: `<|im_end|>`, `<|endoftext|>` and the configs' `eos_token_id`s.
    pub stop_ids: Vec<u32>,
    /// The compute dtype.
    pub dtype: DType,
    /// The device.
    pub device: Device,
    model: qwen2::ModelForCausalLM,
    cached: Vec<u32>,
}

impl Checkpoint {
    /// Loads `dir` (see the module doc for the layout), or the newest complete checkpoint of
    /// `dir` when it is a training run directory (as `model.from` and `[eval] checkpoint` take).
    pub fn load(dir: &Path, opts: &LoadOptions) -> Result<Checkpoint> {
        let resolved = crate::train::checkpoint::weights_dir(dir).map_err(|e| match e {
            crate::train::TrainError::File { path, message } => InferError::checkpoint(path, message),
            other => InferError::checkpoint(dir, other.to_string()),
        })?;
        let dir = resolved.as_path();
        let HfConfig { arch: config, torch_dtype, eos_token_ids } = read_config(&dir.join("config.json"))?;
        let stored = torch_dtype.as_deref().and_then(dtype_named);
        let dtype = match opts.dtype {
            DTypeChoice::Auto if opts.device.is_cpu() => DType::F32,
            DTypeChoice::Auto => stored.unwrap_or(DType::F32),
            DTypeChoice::F32 => DType::F32,
            DTypeChoice::Bf16 => DType::BF16,
            DTypeChoice::F16 => DType::F16,
        };
        let (tokenizer, tokenizer_origin) = tokenizer::for_checkpoint(dir)?;
        let tok_vocab = tokenizer.vocab_size();
        if tok_vocab > config.vocab_size {
            return Err(InferError::checkpoint(
                dir,
                format!("tokenizer ({tokenizer_origin}) has {tok_vocab} tokens but the model's vocab_size is {}", config.vocab_size),
            ));
        }
        let mut stop_ids: Vec<u32> = [IM_END, END_OF_TEXT].iter().filter_map(|t| tokenizer.token_id(t)).collect();
        stop_ids.extend(eos_token_ids);
        let gen_cfg = dir.join("generation_config.json");
        if gen_cfg.is_file() {
            let text = std::fs::read_to_string(&gen_cfg).map_err(|e| InferError::io(&gen_cfg, e))?;
            let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| InferError::checkpoint(&gen_cfg, e.to_string()))?;
            stop_ids.extend(hf_token_ids(v.get("eos_token_id")));
        }
        stop_ids.sort_unstable();
        stop_ids.dedup();

        let files = weight_files(dir)?;
        let werr = |e: candle_core::Error| InferError::checkpoint(dir, format!("weights: {e}"));
        // SAFETY: the files are mapped read-only and not modified while the model lives (a
        // checkpoint directory is written once, atomically, by the trainer).
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&files, dtype, &opts.device) }.map_err(werr)?;
        let has_head = vb.contains_tensor("lm_head.weight");
        let head_shape = (config.vocab_size, config.hidden_size);
        if !config.tie_word_embeddings && !has_head {
            return Err(InferError::checkpoint(dir, "tie_word_embeddings is false but there is no lm_head.weight"));
        }
        if config.tie_word_embeddings && has_head {
            // candle uses lm_head.weight whenever it exists; transformers ties it to the
            // embedding. They agree only if the two are equal.
            let head = vb.get(head_shape, "lm_head.weight").map_err(werr)?;
            let emb = vb.get(head_shape, "model.embed_tokens.weight").map_err(werr)?;
            let diff = (head - emb)?.abs()?.max_all()?.to_dtype(DType::F32)?.to_scalar::<f32>()?;
            if diff != 0.0 {
                return Err(InferError::checkpoint(
                    dir,
                    format!("tie_word_embeddings is true but lm_head.weight differs from the embedding (max |diff| {diff})"),
                ));
            }
        }
        let cfg = qwen2::Config {
            vocab_size: config.vocab_size,
            hidden_size: config.hidden_size,
            intermediate_size: config.intermediate_size,
            num_hidden_layers: config.num_hidden_layers,
            num_attention_heads: config.num_attention_heads,
            num_key_value_heads: config.num_key_value_heads,
            max_position_embeddings: config.max_position_embeddings,
            // candle applies its window to every layer whatever `use_sliding_window` says; a
            // window as long as the context disables it (we refuse configs that use one).
            sliding_window: config.max_position_embeddings,
            max_window_layers: config.num_hidden_layers,
            tie_word_embeddings: config.tie_word_embeddings,
            rope_theta: config.rope_theta,
            rms_norm_eps: config.rms_norm_eps,
            use_sliding_window: false,
            // The parser accepts silu only (Qwen2's).
            hidden_act: candle_nn::Activation::Silu,
        };
        let model = qwen2::ModelForCausalLM::new(&cfg, vb).map_err(werr)?;
        Ok(Checkpoint {
            dir: dir.to_path_buf(),
            config,
            tokenizer: Arc::new(tokenizer),
            tokenizer_origin,
            stop_ids,
            dtype,
            device: opts.device.clone(),
            model,
            cached: Vec::new(),
        })
    }

    /// Positions the model can attend over (`max_position_embeddings`).
    pub fn context_len(&self) -> usize {
        self.config.max_position_embeddings
    }

    /// The tokens whose keys and values are in the cache, in order.
    pub fn cached_tokens(&self) -> &[u32] {
        &self.cached
    }

    /// Empties the KV cache.
    pub fn clear_cache(&mut self) {
        self.model.clear_kv_cache();
        self.cached.clear();
    }

    /// Appends `ids` to the cached sequence and returns the next-token logits (f32, `[vocab]`).
    pub fn step(&mut self, ids: &[u32]) -> Result<Tensor> {
        if ids.is_empty() {
            return Err(InferError::config("input", "no tokens to run"));
        }
        let total = self.cached.len() + ids.len();
        if total > self.context_len() {
            return Err(InferError::PromptTooLong { prompt_tokens: total, context: self.context_len() });
        }
        let input = Tensor::new(ids, &self.device)?.unsqueeze(0)?;
        let logits = match self.model.forward(&input, self.cached.len()) {
            Ok(l) => l,
            Err(e) => {
                // Some layers may have appended to their cache before the failure.
                self.clear_cache();
                return Err(e.into());
            }
        };
        self.cached.extend_from_slice(ids);
        Ok(logits.squeeze(0)?.squeeze(0)?.to_dtype(DType::F32)?)
    }

    /// Runs `ids` from an empty cache (no reuse) and returns the last position's logits.
    pub fn forward_full(&mut self, ids: &[u32]) -> Result<Tensor> {
        self.clear_cache();
        self.step(ids)
    }

    /// Brings the cache to `prompt` and returns the next-token logits and how many prompt
    /// tokens came from the cache. The cache is reused when it holds a strict prefix of
    /// `prompt`; the remainder is then run at its offset. candle's causal mask for several new
    /// tokens after cached ones is built in f32 and cannot be joined to a half-precision one,
    /// so in bf16/f16 that case recomputes from scratch.
    pub fn prefill(&mut self, prompt: &[u32]) -> Result<(Tensor, usize)> {
        let n = self.cached.len();
        let reusable = n > 0 && n < prompt.len() && prompt[..n] == self.cached[..] && (self.dtype == DType::F32 || prompt.len() - n == 1);
        if reusable {
            Ok((self.step(&prompt[n..])?, n))
        } else {
            Ok((self.forward_full(prompt)?, 0))
        }
    }
}
