//! The trainer: a differentiable Qwen2 in candle, fused ops with explicit backward, AdamW with
//! fp32 master weights, schedules, the training loop and HF-layout checkpoints.
