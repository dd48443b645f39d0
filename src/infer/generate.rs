//! Autoregressive generation with the KV cache: greedy or seeded sampling (temperature, top-k,
//! top-p, repetition penalty), stop tokens, a token budget, and text streamed as it completes.

use std::sync::Arc;

use candle_transformers::generation::{LogitsProcessor, Sampling};
use serde::{Deserialize, Serialize};

use super::decode::TextStream;
use super::model::Checkpoint;
use super::{InferError, Result};

/// How to pick tokens. The defaults are greedy decoding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct GenerationConfig {
    /// Most tokens generated for one answer (the stop token not counted).
    #[schemars(range(min = 1, max = 1_048_576))]
    pub max_new_tokens: usize,
    /// Softmax temperature; 0 picks the most likely token (greedy).
    #[schemars(range(min = 0.0))]
    pub temperature: f64,
    /// Nucleus sampling: sample from the smallest set of tokens whose probability reaches
    /// `top_p`; 1 disables it.
    #[schemars(range(min = 0.0, max = 1.0), extend("exclusiveMinimum" = 0.0))]
    pub top_p: f64,
    /// Sample from the `top_k` most likely tokens only (applied before `top_p`); 0 disables it.
    pub top_k: usize,
    /// Divides positive logits (multiplies negative ones) of tokens among the last
    /// `repeat_last_n` of the context; 1 disables it.
    #[schemars(range(min = 0.0), extend("exclusiveMinimum" = 0.0))]
    pub repetition_penalty: f32,
    /// How many of the latest context tokens (prompt included) the repetition penalty sees.
    pub repeat_last_n: usize,
    /// Seed of the sampler: the same seed, prompt and settings give the same tokens.
    pub seed: u64,
}

impl Default for GenerationConfig {
    fn default() -> Self {
        GenerationConfig {
            max_new_tokens: 512,
            temperature: 0.0,
            top_p: 1.0,
            top_k: 0,
            repetition_penalty: 1.0,
            repeat_last_n: 64,
            seed: 0,
        }
    }
}

impl GenerationConfig {
    /// Checks the ranges.
    pub fn validate(&self) -> Result<()> {
        if self.max_new_tokens == 0 {
            return Err(InferError::config("max-new-tokens", "must be at least 1"));
        }
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return Err(InferError::config("temperature", format!("{} is not a finite number ≥ 0", self.temperature)));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(InferError::config("top-p", format!("{} is not in (0, 1]", self.top_p)));
        }
        if !(self.repetition_penalty.is_finite() && self.repetition_penalty > 0.0) {
            return Err(InferError::config("repetition-penalty", format!("{} is not a finite number > 0", self.repetition_penalty)));
        }
        Ok(())
    }

    /// The candle sampling rule these settings describe.
    pub fn sampling(&self) -> Sampling {
        let temperature = self.temperature;
        match (temperature > 0.0, self.top_k > 0, self.top_p < 1.0) {
            (false, _, _) => Sampling::ArgMax,
            (true, true, true) => Sampling::TopKThenTopP { k: self.top_k, p: self.top_p, temperature },
            (true, true, false) => Sampling::TopK { k: self.top_k, temperature },
            (true, false, true) => Sampling::TopP { p: self.top_p, temperature },
            (true, false, false) => Sampling::All { temperature },
        }
    }
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StopReason {
    /// The model produced a stop token (`<|im_end|>`, `<|endoftext|>`, a configured EOS).
    StopToken,
    /// `max_new_tokens` were generated.
    MaxNewTokens,
    /// The context (`max_position_embeddings`) is full.
    ContextFull,
}

/// One generated answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Generation {
    /// Tokens of the prompt.
    pub prompt_tokens: usize,
    /// Generated tokens, the stop token excluded.
    pub tokens: Vec<u32>,
    /// Their text (what was streamed).
    pub text: String,
    /// Why it ended.
    pub stop: StopReason,
    /// The stop token, when one ended it.
    pub stop_token: Option<u32>,
}

/// Generates a continuation of `prompt` with `ckpt`, calling `on_text` with each piece of text
/// as soon as it forms whole characters. The KV cache is reused when it holds a prefix of the
/// prompt (multi-turn chat).
pub fn generate(
    ckpt: &mut Checkpoint,
    prompt: &[u32],
    cfg: &GenerationConfig,
    mut on_text: impl FnMut(&str) -> std::io::Result<()>,
) -> Result<Generation> {
    cfg.validate()?;
    if prompt.is_empty() {
        return Err(InferError::config("prompt", "is empty"));
    }
    if prompt.len() >= ckpt.context_len() {
        return Err(InferError::PromptTooLong { prompt_tokens: prompt.len(), context: ckpt.context_len() });
    }
    let tok = Arc::clone(&ckpt.tokenizer);
    let mut stream = TextStream::new(&tok);
    let mut emit = |text: &mut String, piece: Option<String>| -> Result<()> {
        if let Some(p) = piece {
            on_text(&p).map_err(|e| InferError::io("<output>", e))?;
            text.push_str(&p);
        }
        Ok(())
    };
    let mut sampler = LogitsProcessor::from_sampling(cfg.seed, cfg.sampling());
    let mut context: Vec<u32> = prompt.to_vec();
    let mut tokens = Vec::new();
    let mut text = String::new();
    let (mut logits, _reused) = ckpt.prefill(prompt)?;
    let (stop, stop_token) = loop {
        if cfg.repetition_penalty != 1.0 {
            let recent = &context[context.len().saturating_sub(cfg.repeat_last_n)..];
            logits = candle_transformers::utils::apply_repeat_penalty(&logits, cfg.repetition_penalty, recent)?;
        }
        let next = sampler.sample(&logits)?;
        if ckpt.stop_ids.contains(&next) {
            break (StopReason::StopToken, Some(next));
        }
        tokens.push(next);
        context.push(next);
        emit(&mut text, stream.push(next)?)?;
        if tokens.len() >= cfg.max_new_tokens {
            break (StopReason::MaxNewTokens, None);
        }
        if ckpt.cached_tokens().len() + 1 > ckpt.context_len() {
            break (StopReason::ContextFull, None);
        }
        logits = ckpt.step(&[next])?;
    };
    emit(&mut text, stream.finish()?)?;
    Ok(Generation { prompt_tokens: prompt.len(), tokens, text, stop, stop_token })
}
