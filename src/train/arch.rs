//! The Qwen2 architecture: `Qwen2Config`, read from and written as an HF `config.json`, with the
//! Qwen2.5 presets and small configs for tests, the demo and CPU benchmarks.

use std::path::Path;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::error::{Result, TrainError};

/// The shape of a Qwen2 model (the subset of HF `Qwen2Config` that changes the math).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Qwen2Config {
    /// Vocabulary size (rows of the embedding and the LM head).
    pub vocab_size: usize,
    /// Model width.
    pub hidden_size: usize,
    /// MLP width (gate/up output, down input).
    pub intermediate_size: usize,
    /// Decoder layers.
    pub num_hidden_layers: usize,
    /// Query heads; head_dim = hidden_size / num_attention_heads.
    pub num_attention_heads: usize,
    /// Key/value heads (grouped-query attention: query heads per KV head = heads / kv heads).
    pub num_key_value_heads: usize,
    /// Longest position the RoPE table covers.
    pub max_position_embeddings: usize,
    /// RoPE base θ.
    pub rope_theta: f64,
    /// RMSNorm epsilon.
    pub rms_norm_eps: f64,
    /// The LM head shares the embedding matrix.
    pub tie_word_embeddings: bool,
    /// Standard deviation of the N(0, σ) weight init.
    #[serde(default = "default_init_range")]
    pub initializer_range: f64,
    /// Beginning-of-sequence token (written to config.json).
    #[serde(default)]
    pub bos_token_id: Option<u32>,
    /// End-of-sequence token (written to config.json).
    #[serde(default)]
    pub eos_token_id: Option<u32>,
}

fn default_init_range() -> f64 {
    0.02
}

/// The names `preset` accepts.
pub const PRESETS: &[&str] = &["test", "tiny", "small", "qwen2.5-0.5b", "qwen2.5-1.5b", "qwen2.5-3b", "qwen2.5-7b"];

/// Qwen2.5's vocabulary (tokenizer.json size padded as in the released 0.5B–3B models).
const QWEN_VOCAB: usize = 151_936;
/// `<|endoftext|>` of the Qwen2.5 tokenizer.
const QWEN_EOS: u32 = 151_643;

impl Qwen2Config {
    /// A named architecture: `test` (vocab 128, for unit tests), `tiny` and `small` (the Qwen2.5
    /// vocabulary, for the CPU demo and benchmarks) or one of the released Qwen2.5 base models.
    pub fn preset(name: &str) -> Result<Qwen2Config> {
        let qwen = |hidden, inter, layers, heads, kv, vocab, max_pos, tie| Qwen2Config {
            vocab_size: vocab,
            hidden_size: hidden,
            intermediate_size: inter,
            num_hidden_layers: layers,
            num_attention_heads: heads,
            num_key_value_heads: kv,
            max_position_embeddings: max_pos,
            rope_theta: 1e6,
            rms_norm_eps: 1e-6,
            tie_word_embeddings: tie,
            initializer_range: 0.02,
            bos_token_id: Some(QWEN_EOS),
            eos_token_id: Some(QWEN_EOS),
        };
        let cfg = match name {
            "test" => Qwen2Config { bos_token_id: None, eos_token_id: None, ..qwen(32, 64, 2, 4, 2, 128, 512, true) },
            "tiny" => qwen(64, 176, 2, 4, 2, QWEN_VOCAB, 4096, true),
            "small" => qwen(256, 704, 4, 4, 2, QWEN_VOCAB, 4096, true),
            "qwen2.5-0.5b" => qwen(896, 4864, 24, 14, 2, QWEN_VOCAB, 32_768, true),
            "qwen2.5-1.5b" => qwen(1536, 8960, 28, 12, 2, QWEN_VOCAB, 131_072, true),
            "qwen2.5-3b" => qwen(2048, 11008, 36, 16, 2, QWEN_VOCAB, 32_768, true),
            "qwen2.5-7b" => qwen(3584, 18944, 28, 28, 4, 152_064, 131_072, false),
            other => return Err(TrainError::config("model.preset", format!("unknown preset {other:?} (known: {})", PRESETS.join(", ")))),
        };
        Ok(cfg)
    }

    /// Per-head width.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// Checks the shape is one the model can build.
    pub fn validate(&self) -> Result<()> {
        let bad = |k: &str, m: String| Err(TrainError::config(format!("model.{k}"), m));
        if self.vocab_size == 0
            || self.hidden_size == 0
            || self.intermediate_size == 0
            || self.num_hidden_layers == 0
            || self.max_position_embeddings == 0
        {
            return bad(
                "hidden_size",
                "vocab_size, hidden_size, intermediate_size, num_hidden_layers and max_position_embeddings must be > 0".into(),
            );
        }
        if self.num_attention_heads == 0 || !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return bad(
                "num_attention_heads",
                format!("{} heads do not divide hidden_size {}", self.num_attention_heads, self.hidden_size),
            );
        }
        if !self.head_dim().is_multiple_of(2) {
            return bad("num_attention_heads", format!("head_dim {} must be even for RoPE", self.head_dim()));
        }
        if self.num_key_value_heads == 0 || !self.num_attention_heads.is_multiple_of(self.num_key_value_heads) {
            return bad(
                "num_key_value_heads",
                format!(
                    "num_attention_heads {} is not a multiple of num_key_value_heads {}",
                    self.num_attention_heads, self.num_key_value_heads
                ),
            );
        }
        if !(self.rope_theta > 0.0) || !(self.rms_norm_eps > 0.0) || !(self.initializer_range >= 0.0) {
            return bad("rope_theta", "rope_theta and rms_norm_eps must be > 0, initializer_range >= 0".into());
        }
        Ok(())
    }

    /// Parameters, counted once when the head is tied (as `sum(p.numel())` in PyTorch).
    pub fn num_params(&self) -> u64 {
        let (h, i, v) = (self.hidden_size as u64, self.intermediate_size as u64, self.vocab_size as u64);
        let kv = (self.num_key_value_heads * self.head_dim()) as u64;
        let attn = h * h + h + 2 * (h * kv + kv) + h * h;
        let layer = attn + 3 * h * i + 2 * h;
        let head = if self.tie_word_embeddings { 0 } else { v * h };
        v * h + self.num_hidden_layers as u64 * layer + h + head
    }

    /// Reads an HF `config.json` (see [`HfConfig::parse`]).
    pub fn from_hf_file(path: &Path) -> Result<Qwen2Config> {
        HfConfig::load(path).map(|c| c.arch)
    }

    /// Parses the text of an HF `config.json` (see [`HfConfig::parse`]).
    pub fn from_hf_json(text: &str) -> Result<Qwen2Config> {
        HfConfig::parse(text).map(|c| c.arch)
    }

    /// The HF `config.json` of this model, loadable by `transformers` (`Qwen2ForCausalLM`) and by
    /// candle-transformers' `qwen2::Config`. `torch_dtype` is the dtype of the saved weights
    /// (`bfloat16`, `float32`, `float16`).
    pub fn to_hf_json(&self, torch_dtype: &str) -> serde_json::Value {
        serde_json::json!({
            "architectures": ["Qwen2ForCausalLM"],
            "model_type": "qwen2",
            "attention_dropout": 0.0,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": self.eos_token_id,
            "hidden_act": "silu",
            "hidden_size": self.hidden_size,
            "initializer_range": self.initializer_range,
            "intermediate_size": self.intermediate_size,
            "max_position_embeddings": self.max_position_embeddings,
            "max_window_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_hidden_layers": self.num_hidden_layers,
            "num_key_value_heads": self.num_key_value_heads,
            "rms_norm_eps": self.rms_norm_eps,
            "rope_scaling": null,
            "rope_theta": self.rope_theta,
            "sliding_window": self.max_position_embeddings,
            "tie_word_embeddings": self.tie_word_embeddings,
            "torch_dtype": torch_dtype,
            "use_cache": true,
            "use_sliding_window": false,
            "vocab_size": self.vocab_size,
        })
    }
}

/// Token ids of an HF config field that holds an id or a list of ids (`eos_token_id` in
/// `config.json` and `generation_config.json`); other values give none.
pub fn hf_token_ids(v: Option<&serde_json::Value>) -> Vec<u32> {
    match v {
        Some(serde_json::Value::Number(n)) => n.as_u64().and_then(|x| u32::try_from(x).ok()).into_iter().collect(),
        Some(serde_json::Value::Array(a)) => a.iter().filter_map(|x| x.as_u64().and_then(|x| u32::try_from(x).ok())).collect(),
        _ => Vec::new(),
    }
}

/// The storage dtypes `torch_dtype` (or `dtype`) may name.
pub const HF_DTYPES: &[&str] = &["float32", "float", "bfloat16", "float16", "half"];

/// An HF `config.json` as training and inference read it: the one parser of that file.
#[derive(Debug, Clone, PartialEq)]
pub struct HfConfig {
    /// The architecture (`eos_token_id` is the first of a list).
    pub arch: Qwen2Config,
    /// The storage dtype the file states (`torch_dtype`, or `dtype` as transformers ≥ 5 writes
    /// it), one of [`HF_DTYPES`].
    pub torch_dtype: Option<String>,
    /// Every `eos_token_id` (a number or a list); generation stops on each.
    pub eos_token_ids: Vec<u32>,
}

impl HfConfig {
    /// Reads and parses `path`; errors name the file and the key.
    pub fn load(path: &Path) -> Result<HfConfig> {
        let text = std::fs::read_to_string(path).map_err(|e| TrainError::file(path, e))?;
        Self::parse(&text).map_err(|e| match e {
            TrainError::Config { key, message } => TrainError::file(path, format!("{key}: {message}")),
            other => other,
        })
    }

    /// Parses the text of a config.json. Qwen2 only: fields that change the math and that this
    /// crate does not implement (rope scaling, sliding-window attention, another activation or
    /// architecture) are errors; optional fields default as transformers' `Qwen2Config` does.
    /// Each error's key is the field, its message names the field too (inference shows the
    /// message alone after the file name).
    pub fn parse(text: &str) -> Result<HfConfig> {
        let v: serde_json::Value =
            serde_json::from_str(text).map_err(|e| TrainError::config("config.json", format!("{e} (not valid JSON)")))?;
        let obj = v.as_object().ok_or_else(|| TrainError::config("config.json", "not a JSON object"))?;
        let usize_of = |k: &str| -> Result<usize> {
            match obj.get(k) {
                None | Some(serde_json::Value::Null) => Err(TrainError::config(k, format!("missing field `{k}`"))),
                Some(x) => x.as_u64().map(|x| x as usize).ok_or_else(|| TrainError::config(k, format!("{k} is not an unsigned integer"))),
            }
        };
        let f64_of = |k: &str| -> Option<f64> { obj.get(k).and_then(|x| x.as_f64()) };
        if let Some(archs) = obj.get("architectures").and_then(|x| x.as_array()) {
            if !archs.is_empty() && !archs.iter().any(|a| a.as_str() == Some("Qwen2ForCausalLM")) {
                return Err(TrainError::config("architectures", format!("architectures {archs:?} does not name Qwen2ForCausalLM")));
            }
        }
        if let Some(mt) = obj.get("model_type").and_then(|x| x.as_str()) {
            if mt != "qwen2" {
                return Err(TrainError::config("model_type", format!("model_type {mt:?} is not qwen2")));
            }
        }
        if let Some(act) = obj.get("hidden_act").and_then(|x| x.as_str()) {
            if act != "silu" {
                return Err(TrainError::config("hidden_act", format!("hidden_act {act:?} is not supported (silu only)")));
            }
        }
        if obj.get("rope_scaling").is_some_and(|x| !x.is_null()) {
            return Err(TrainError::config("rope_scaling", "rope_scaling is not supported"));
        }
        if obj.get("use_sliding_window").and_then(|x| x.as_bool()) == Some(true) {
            return Err(TrainError::config("use_sliding_window", "use_sliding_window = true is not supported"));
        }
        // transformers ≥ 5 may write θ inside `rope_parameters`.
        let rope_theta = f64_of("rope_theta")
            .or_else(|| obj.get("rope_parameters").and_then(|r| r.get("rope_theta")).and_then(|x| x.as_f64()))
            .unwrap_or(10_000.0);
        if let Some(rt) = obj.get("rope_parameters").and_then(|r| r.get("rope_type")).and_then(|x| x.as_str()) {
            if rt != "default" {
                return Err(TrainError::config("rope_parameters.rope_type", format!("rope_type {rt:?} is not supported")));
            }
        }
        let ids = |k: &str| hf_token_ids(obj.get(k));
        let torch_dtype = match obj.get("torch_dtype").or_else(|| obj.get("dtype")).and_then(|x| x.as_str()) {
            None => None,
            Some(d) if HF_DTYPES.contains(&d) => Some(d.to_string()),
            Some(d) => {
                return Err(TrainError::config(
                    "torch_dtype",
                    format!("unsupported torch_dtype {d:?} (expected one of {})", HF_DTYPES.join(", ")),
                ))
            }
        };
        let heads = usize_of("num_attention_heads")?;
        let eos_token_ids = ids("eos_token_id");
        let arch = Qwen2Config {
            vocab_size: usize_of("vocab_size")?,
            hidden_size: usize_of("hidden_size")?,
            intermediate_size: usize_of("intermediate_size")?,
            num_hidden_layers: usize_of("num_hidden_layers")?,
            num_attention_heads: heads,
            num_key_value_heads: obj.get("num_key_value_heads").and_then(|x| x.as_u64()).map(|x| x as usize).unwrap_or(heads),
            // transformers' Qwen2Config default.
            max_position_embeddings: match obj.get("max_position_embeddings") {
                None | Some(serde_json::Value::Null) => 32_768,
                Some(_) => usize_of("max_position_embeddings")?,
            },
            rope_theta,
            rms_norm_eps: f64_of("rms_norm_eps").unwrap_or(1e-6),
            tie_word_embeddings: obj.get("tie_word_embeddings").and_then(|x| x.as_bool()).unwrap_or(false),
            initializer_range: f64_of("initializer_range").unwrap_or(0.02),
            bos_token_id: ids("bos_token_id").first().copied(),
            eos_token_id: eos_token_ids.first().copied(),
        };
        if let Some(hd) = obj.get("head_dim").and_then(|x| x.as_u64()) {
            if hd as usize != arch.hidden_size / heads.max(1) {
                return Err(TrainError::config("head_dim", format!("head_dim {hd} differs from hidden_size / num_attention_heads")));
            }
        }
        arch.validate()?;
        Ok(HfConfig { arch, torch_dtype, eos_token_ids })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_validate_and_count_params() {
        for p in PRESETS {
            Qwen2Config::preset(p).unwrap().validate().unwrap();
        }
        // The figure the PyTorch reference prints for this shape (tied, counted once).
        assert_eq!(Qwen2Config::preset("qwen2.5-0.5b").unwrap().num_params(), 494_032_768);
        assert!(Qwen2Config::preset("qwen2.5-9b").unwrap_err().to_string().contains("unknown preset"));
    }

    #[test]
    fn hf_json_round_trips() {
        for p in PRESETS {
            let c = Qwen2Config::preset(p).unwrap();
            let back = Qwen2Config::from_hf_json(&c.to_hf_json("bfloat16").to_string()).unwrap();
            assert_eq!(c, back, "{p}");
        }
    }

    #[test]
    fn hf_json_parses_a_released_config_and_rejects_unsupported_fields() {
        // Qwen2.5-0.5B's config.json (transformers 4.x), verbatim field set.
        let text = r#"{"architectures":["Qwen2ForCausalLM"],"attention_dropout":0.0,"bos_token_id":151643,"eos_token_id":151643,
            "hidden_act":"silu","hidden_size":896,"initializer_range":0.02,"intermediate_size":4864,"max_position_embeddings":32768,
            "max_window_layers":24,"model_type":"qwen2","num_attention_heads":14,"num_hidden_layers":24,"num_key_value_heads":2,
            "rms_norm_eps":1e-06,"rope_theta":1000000.0,"sliding_window":32768,"tie_word_embeddings":true,"torch_dtype":"bfloat16",
            "transformers_version":"4.40.1","use_cache":true,"use_mrope":false,"use_sliding_window":false,"vocab_size":151936}"#;
        let c = Qwen2Config::from_hf_json(text).unwrap();
        assert_eq!(c, Qwen2Config::preset("qwen2.5-0.5b").unwrap());
        let e = Qwen2Config::from_hf_json(&text.replace("\"silu\"", "\"gelu\"")).unwrap_err();
        assert!(e.to_string().contains("hidden_act"), "{e}");
        let e = Qwen2Config::from_hf_json(&text.replace("\"use_sliding_window\":false", "\"use_sliding_window\":true")).unwrap_err();
        assert!(e.to_string().contains("use_sliding_window"), "{e}");
        let e = Qwen2Config::from_hf_json(&text.replace("\"num_key_value_heads\":2", "\"num_key_value_heads\":3")).unwrap_err();
        assert!(e.to_string().contains("num_key_value_heads"), "{e}");
        let e = Qwen2Config::from_hf_json(&text.replace("\"hidden_size\":896,", "")).unwrap_err();
        assert!(e.to_string().contains("hidden_size"), "{e}");
        let e = Qwen2Config::from_hf_json("{\"model_type\":\"llama\"}").unwrap_err();
        assert!(e.to_string().contains("llama"), "{e}");
        assert!(Qwen2Config::from_hf_json("{not json").unwrap_err().to_string().contains("not valid JSON"));
    }

    #[test]
    fn hf_config_keeps_what_inference_needs() {
        // The one parser of config.json: training takes `arch`, inference also the storage dtype
        // and every eos id (a list, as chat models write it).
        let mut v = Qwen2Config::preset("tiny").unwrap().to_hf_json("bfloat16");
        v["eos_token_id"] = serde_json::json!([151645, 151643]);
        v.as_object_mut().unwrap().remove("max_position_embeddings");
        let c = HfConfig::parse(&v.to_string()).unwrap();
        assert_eq!((c.torch_dtype.as_deref(), c.eos_token_ids.as_slice()), (Some("bfloat16"), &[151645, 151643][..]));
        assert_eq!((c.arch.eos_token_id, c.arch.max_position_embeddings), (Some(151645), 32_768));
        v["torch_dtype"] = "int8".into();
        assert!(HfConfig::parse(&v.to_string()).unwrap_err().to_string().contains("unsupported torch_dtype \"int8\""));
        v["torch_dtype"] = "float32".into();
        v["architectures"] = serde_json::json!(["LlamaForCausalLM"]);
        assert!(HfConfig::parse(&v.to_string()).unwrap_err().to_string().contains("does not name Qwen2ForCausalLM"));
        // A file error names the file and the key.
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config.json");
        std::fs::write(&p, "{\"hidden_size\": ").unwrap();
        let e = HfConfig::load(&p).unwrap_err().to_string();
        assert!(e.contains("config.json") && e.contains("EOF while parsing"), "{e}");
    }
}
