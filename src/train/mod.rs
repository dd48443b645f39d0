//! The trainer: a differentiable Qwen2 in candle with an explicit forward and backward, the
//! fusable units behind one backend interface (`ops`), AdamW over fp32 master weights, schedules,
//! the training loop with curriculum stages, HF-layout checkpoints with exact resume, metrics,
//! and the throughput benchmark.
//!
//! Layout: `arch` (Qwen2Config and presets) → `model` (parameters, forward/backward) on `ops`
//! (units; `ReferenceOps` on CPU, fused kernels on CUDA later) → `optim` + `schedule` →
//! `trainer` (loop over a `data::BatchSource`) → `checkpoint` + `metrics`.

pub mod arch;
pub mod bench;
pub mod checkpoint;
pub mod config;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod data;
pub mod dist;
pub mod error;
pub mod hf_files;
pub mod logits;
pub mod metrics;
pub mod model;
pub mod ops;
pub mod optim;
pub mod plan;
pub mod schedule;
pub mod selftest;
pub mod tensorboard;
pub mod trainer;
pub mod validation;

pub use arch::Qwen2Config;
pub use config::TrainConfig;
pub use data::BatchSource;
pub use error::{Result, TrainError};
pub use model::Qwen2;
pub use trainer::{RunSummary, Trainer};
