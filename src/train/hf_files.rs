//! The files other engines read beside a checkpoint's weights, so transformers, vLLM and
//! LLaMA-Factory stop and sample as `coretech chat` does: `generation_config.json` (end-of-sequence
//! ids, sampling defaults) and `tokenizer_config.json` (special tokens, the Qwen2.5 chat template).
//!
//! A run with an SFT stage makes a chat model: it ends answers with `<|im_end|>`, so
//! `eos_token_id` is `[<|im_end|>, <|endoftext|>]` (151645, 151643 in the Qwen2.5 vocabulary) and
//! the tokenizer's `eos_token` is `<|im_end|>`, as in Qwen2.5-Instruct. A CPT-only run makes a
//! base model: `<|endoftext|>` ends a document, greedy decoding by default. Ids are looked up in
//! the checkpoint's own `tokenizer.json`, never assumed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::error::{Result, TrainError};
// ChatML's end of a turn, and the end of a document (the Qwen2.5 tokenizer's padding token).
use crate::tokenize::{END_OF_TEXT, IM_END as END_OF_TURN};
/// The Qwen2.5 chat template (ChatML, default system prompt, generation prompt) as transformers'
/// `apply_chat_template` reads it; `fixtures/tokenizers/qwen2.5/PROVENANCE.md` says where it is from.
pub const QWEN25_CHAT_TEMPLATE: &str = include_str!("../../fixtures/tokenizers/qwen2.5/chat_template.jinja");

/// Sampling defaults written to a chat model's `generation_config.json` (`checkpoint.generation`);
/// the defaults are Qwen2.5-Instruct's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct GenerationDefaults {
    /// Sample (true) or decode greedily.
    pub do_sample: bool,
    /// Sampling temperature.
    pub temperature: f64,
    /// Nucleus sampling mass.
    pub top_p: f64,
    /// Sample among the k most likely tokens.
    pub top_k: u32,
    /// Penalty on repeated tokens (1 = off).
    pub repetition_penalty: f64,
}

impl Default for GenerationDefaults {
    fn default() -> Self {
        Self { do_sample: true, temperature: 0.7, top_p: 0.8, top_k: 20, repetition_penalty: 1.05 }
    }
}

impl GenerationDefaults {
    /// Checks ranges.
    pub fn validate(&self) -> Result<()> {
        let ok = self.temperature > 0.0 && self.top_p > 0.0 && self.top_p <= 1.0 && self.repetition_penalty > 0.0;
        if !(ok && self.temperature.is_finite() && self.repetition_penalty.is_finite()) {
            return Err(TrainError::config("checkpoint.generation", "temperature and repetition_penalty must be > 0, top_p in (0, 1]"));
        }
        Ok(())
    }
}

/// What the checkpoint is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelKind {
    /// Continued pre-training only: text ends at `<|endoftext|>`.
    Base,
    /// SFT in ChatML: answers end at `<|im_end|>`.
    Chat,
}

fn id_of(tok: &tokenizers::Tokenizer, name: &str, path: &Path) -> Result<u32> {
    tok.token_to_id(name).ok_or_else(|| TrainError::file(path, format!("the tokenizer has no {name} token")))
}

fn write_json(path: &Path, v: &serde_json::Value) -> Result<()> {
    let text = serde_json::to_string_pretty(v).map_err(|e| TrainError::file(path, e))? + "\n";
    std::fs::write(path, text).map_err(|e| TrainError::file(path, e))
}

/// Writes `generation_config.json` and `tokenizer_config.json` into checkpoint directory `dir`,
/// which already holds `tokenizer.json`. A `tokenizer_config.json` that came with the tokenizer
/// (`src_config`) is kept, with the chat model's `eos_token` and the chat template added where it
/// has none; otherwise one is made from the tokenizer's special tokens.
pub fn write(
    dir: &Path,
    kind: ModelKind,
    gen: &GenerationDefaults,
    max_positions: usize,
    src_config: Option<&Path>,
) -> Result<Vec<PathBuf>> {
    let tok_path = dir.join("tokenizer.json");
    let tok = tokenizers::Tokenizer::from_file(&tok_path).map_err(|e| TrainError::file(&tok_path, e))?;
    let eot = id_of(&tok, END_OF_TEXT, &tok_path)?;
    let gen_json = match kind {
        ModelKind::Chat => serde_json::json!({
            "bos_token_id": eot,
            "pad_token_id": eot,
            "eos_token_id": [id_of(&tok, END_OF_TURN, &tok_path)?, eot],
            "do_sample": gen.do_sample,
            "temperature": gen.temperature,
            "top_p": gen.top_p,
            "top_k": gen.top_k,
            "repetition_penalty": gen.repetition_penalty,
        }),
        ModelKind::Base => serde_json::json!({ "bos_token_id": eot, "eos_token_id": eot, "do_sample": false }),
    };
    let gen_path = dir.join("generation_config.json");
    write_json(&gen_path, &gen_json)?;

    let eos = match kind {
        ModelKind::Chat => END_OF_TURN,
        ModelKind::Base => END_OF_TEXT,
    };
    let mut cfg = match src_config {
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|e| TrainError::file(p, e))?;
            serde_json::from_str::<serde_json::Value>(&text).map_err(|e| TrainError::file(p, format!("not valid JSON: {e}")))?
        }
        None => made_config(&tok, max_positions),
    };
    let obj =
        cfg.as_object_mut().ok_or_else(|| TrainError::file(src_config.unwrap_or(&tok_path), "tokenizer_config.json is not an object"))?;
    if kind == ModelKind::Chat || src_config.is_none() {
        obj.insert("eos_token".into(), eos.into());
    }
    obj.entry("chat_template").or_insert_with(|| QWEN25_CHAT_TEMPLATE.into());
    let cfg_path = dir.join("tokenizer_config.json");
    write_json(&cfg_path, &cfg)?;
    Ok(vec![gen_path, cfg_path])
}

/// A `tokenizer_config.json` for the Qwen2 tokenizer class from the tokenizer's added tokens.
fn made_config(tok: &tokenizers::Tokenizer, max_positions: usize) -> serde_json::Value {
    let added: BTreeMap<u32, tokenizers::AddedToken> = tok.get_added_tokens_decoder().into_iter().collect();
    let decoder: serde_json::Map<String, serde_json::Value> = added
        .iter()
        .map(|(id, t)| {
            let v = serde_json::json!({
                "content": t.content,
                "lstrip": t.lstrip,
                "normalized": t.normalized,
                "rstrip": t.rstrip,
                "single_word": t.single_word,
                "special": t.special,
            });
            (id.to_string(), v)
        })
        .collect();
    // Qwen2.5 lists every special token but <|endoftext|> (the pad token) as additional.
    let additional: Vec<&str> = added.values().filter(|t| t.special && t.content != END_OF_TEXT).map(|t| t.content.as_str()).collect();
    serde_json::json!({
        "add_bos_token": false,
        "add_prefix_space": false,
        "added_tokens_decoder": decoder,
        "additional_special_tokens": additional,
        "bos_token": null,
        "clean_up_tokenization_spaces": false,
        "errors": "replace",
        "model_max_length": max_positions,
        "pad_token": END_OF_TEXT,
        "split_special_tokens": false,
        "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": null,
    })
}
