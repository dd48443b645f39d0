//! Tiny random Qwen2 checkpoints in HF layout, written by the tests themselves.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};

/// The shape of a test model. The vocabulary is Qwen2.5's embedding size so the real
/// tokenizer works with it.
#[derive(Clone, Debug)]
pub struct Tiny {
    pub vocab: usize,
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub intermediate: usize,
    pub max_pos: usize,
    pub tie: bool,
    pub dtype: DType,
}

impl Default for Tiny {
    fn default() -> Self {
        Tiny { vocab: 151_936, hidden: 16, layers: 2, heads: 4, kv_heads: 2, intermediate: 32, max_pos: 256, tie: true, dtype: DType::F32 }
    }
}

/// splitmix64: a seeded source of test weights (no dependency on candle's RNG).
struct Rng(u64);

impl Rng {
    fn next_f32(&mut self) -> f32 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }
}

impl Tiny {
    pub fn config_json(&self) -> serde_json::Value {
        serde_json::json!({
            "architectures": ["Qwen2ForCausalLM"],
            "model_type": "qwen2",
            "hidden_size": self.hidden,
            "num_hidden_layers": self.layers,
            "num_attention_heads": self.heads,
            "num_key_value_heads": self.kv_heads,
            "intermediate_size": self.intermediate,
            "vocab_size": self.vocab,
            "rope_theta": 10000.0,
            "rms_norm_eps": 1e-6,
            "tie_word_embeddings": self.tie,
            "torch_dtype": match self.dtype { DType::BF16 => "bfloat16", DType::F16 => "float16", _ => "float32" },
            "max_position_embeddings": self.max_pos,
            "hidden_act": "silu",
            "use_sliding_window": false,
            "sliding_window": 4096,
            "bos_token_id": 151643,
            "eos_token_id": 151643
        })
    }

    /// Random tensors under HF Qwen2 names.
    pub fn tensors(&self, seed: u64) -> HashMap<String, Tensor> {
        let mut rng = Rng(seed);
        let mut t = HashMap::new();
        let mut put = |name: String, shape: &[usize], scale: f32, offset: f32| {
            let n: usize = shape.iter().product();
            let v: Vec<f32> = (0..n).map(|_| offset + scale * rng.next_f32()).collect();
            let x = Tensor::from_vec(v, shape, &Device::Cpu).unwrap().to_dtype(self.dtype).unwrap();
            t.insert(name, x);
        };
        let (h, hd) = (self.hidden, self.hidden / self.heads);
        put("model.embed_tokens.weight".into(), &[self.vocab, h], 1.0, 0.0);
        for l in 0..self.layers {
            let p = format!("model.layers.{l}");
            put(format!("{p}.input_layernorm.weight"), &[h], 0.1, 1.0);
            put(format!("{p}.post_attention_layernorm.weight"), &[h], 0.1, 1.0);
            put(format!("{p}.self_attn.q_proj.weight"), &[self.heads * hd, h], 0.5, 0.0);
            put(format!("{p}.self_attn.q_proj.bias"), &[self.heads * hd], 0.1, 0.0);
            put(format!("{p}.self_attn.k_proj.weight"), &[self.kv_heads * hd, h], 0.5, 0.0);
            put(format!("{p}.self_attn.k_proj.bias"), &[self.kv_heads * hd], 0.1, 0.0);
            put(format!("{p}.self_attn.v_proj.weight"), &[self.kv_heads * hd, h], 0.5, 0.0);
            put(format!("{p}.self_attn.v_proj.bias"), &[self.kv_heads * hd], 0.1, 0.0);
            put(format!("{p}.self_attn.o_proj.weight"), &[h, self.heads * hd], 0.5, 0.0);
            put(format!("{p}.mlp.gate_proj.weight"), &[self.intermediate, h], 0.5, 0.0);
            put(format!("{p}.mlp.up_proj.weight"), &[self.intermediate, h], 0.5, 0.0);
            put(format!("{p}.mlp.down_proj.weight"), &[h, self.intermediate], 0.5, 0.0);
        }
        put("model.norm.weight".into(), &[h], 0.1, 1.0);
        if !self.tie {
            put("lm_head.weight".into(), &[self.vocab, h], 1.0, 0.0);
        }
        t
    }

    /// Writes `config.json` and `model.safetensors` into `dir`.
    pub fn write(&self, dir: &Path, seed: u64) {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("config.json"), serde_json::to_vec_pretty(&self.config_json()).unwrap()).unwrap();
        candle_core::safetensors::save(&self.tensors(seed), dir.join("model.safetensors")).unwrap();
    }

    /// Writes the same weights as [`Tiny::write`], split over two shards with an index.
    pub fn write_sharded(&self, dir: &Path, seed: u64) {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("config.json"), serde_json::to_vec_pretty(&self.config_json()).unwrap()).unwrap();
        let all = self.tensors(seed);
        let (mut a, mut b) = (HashMap::new(), HashMap::new());
        let mut map = serde_json::Map::new();
        for (name, t) in all {
            let file = if name.starts_with("model.layers.0.") || name == "model.embed_tokens.weight" {
                "model-00001-of-00002.safetensors"
            } else {
                "model-00002-of-00002.safetensors"
            };
            map.insert(name.clone(), file.into());
            if file.starts_with("model-00001") {
                a.insert(name, t)
            } else {
                b.insert(name, t)
            };
        }
        candle_core::safetensors::save(&a, dir.join("model-00001-of-00002.safetensors")).unwrap();
        candle_core::safetensors::save(&b, dir.join("model-00002-of-00002.safetensors")).unwrap();
        let index = serde_json::json!({"metadata": {"total_size": 0}, "weight_map": map});
        std::fs::write(dir.join("model.safetensors.index.json"), serde_json::to_vec_pretty(&index).unwrap()).unwrap();
    }
}

/// Writes a tiny checkpoint into a fresh temporary directory.
pub fn tiny_checkpoint(spec: &Tiny, seed: u64) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    spec.write(dir.path(), seed);
    dir
}
