//! Inference: generation with a KV cache (candle-transformers `qwen2`) and task evaluation.
