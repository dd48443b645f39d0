//! The training config (`[train.<name>]` in a pipeline TOML): model and init, device and dtype,
//! batch shape, optimizer, schedule, curriculum data, checkpoints and metrics.

use std::path::PathBuf;

use candle_core::{DType, Device};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::arch::Qwen2Config;
use super::checkpoint::CheckpointConfig;
use super::data::DataConfig;
use super::dist::DistConfig;
use super::error::{Result, TrainError};
use super::metrics::MetricsConfig;
use super::optim::AdamWConfig;
use super::plan::{CeChunk, Recompute};
use super::schedule::ScheduleConfig;
use super::validation::ValidationConfig;

/// Where the model runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "lowercase")]
pub enum DeviceKind {
    /// The CPU (reference ops).
    #[default]
    Cpu,
    /// An NVIDIA GPU (needs a build with the `cuda` feature).
    Cuda,
}

impl std::str::FromStr for DeviceKind {
    type Err = TrainError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "cpu" => Ok(DeviceKind::Cpu),
            "cuda" => Ok(DeviceKind::Cuda),
            other => Err(TrainError::config("device", format!("{other:?} is not cpu or cuda"))),
        }
    }
}

/// The dtype the model computes in. Master weights and optimizer moments are always f32.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "lowercase")]
pub enum ComputeDtype {
    /// f32 everywhere.
    #[default]
    F32,
    /// bf16 weights and activations; f32 statistics, gradients, master weights and moments.
    Bf16,
}

impl ComputeDtype {
    /// The candle dtype.
    pub fn dtype(self) -> DType {
        match self {
            ComputeDtype::F32 => DType::F32,
            ComputeDtype::Bf16 => DType::BF16,
        }
    }
}

impl std::str::FromStr for ComputeDtype {
    type Err = TrainError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "f32" => Ok(ComputeDtype::F32),
            "bf16" => Ok(ComputeDtype::Bf16),
            other => Err(TrainError::config("dtype", format!("{other:?} is not f32 or bf16"))),
        }
    }
}

/// Which architecture, and where the weights start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    /// A named architecture (`test`, `tiny`, `small`, `qwen2.5-0.5b`, `qwen2.5-1.5b`, `qwen2.5-3b`, `qwen2.5-7b`).
    pub preset: Option<String>,
    /// An HF `config.json` to take the architecture from.
    pub config_json: Option<PathBuf>,
    /// Start from these weights instead of a seeded HF init: a directory with `config.json` and
    /// `model.safetensors` (or shards and `model.safetensors.index.json`) — HF Qwen2.5 weights or
    /// a checkpoint of ours — or a training run's output directory, meaning its newest complete
    /// checkpoint (so an SFT run can name the CPT run it continues). The architecture then comes
    /// from its `config.json`.
    pub from: Option<PathBuf>,
}

impl ModelConfig {
    /// Checks that exactly one source is named, and the preset's name.
    pub fn validate(&self) -> Result<()> {
        let named = [self.preset.is_some(), self.config_json.is_some(), self.from.is_some()].iter().filter(|x| **x).count();
        if named != 1 {
            return Err(TrainError::config("model", "set exactly one of preset, config_json or from"));
        }
        if let Some(p) = &self.preset {
            Qwen2Config::preset(p)?;
        }
        Ok(())
    }

    /// The architecture this section names.
    pub fn arch(&self) -> Result<Qwen2Config> {
        self.validate()?;
        if let Some(p) = &self.preset {
            return Qwen2Config::preset(p);
        }
        if let Some(p) = &self.config_json {
            return Qwen2Config::from_hf_file(p);
        }
        Qwen2Config::from_hf_file(&self.weights_dir()?.expect("one is set").join("config.json"))
    }

    /// The weights directory `from` names: itself when it holds a `config.json`, else the newest
    /// complete checkpoint of the run directory it is.
    pub fn weights_dir(&self) -> Result<Option<PathBuf>> {
        self.from.as_deref().map(super::checkpoint::weights_dir).transpose()
    }
}

/// A training run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// Run directory: `checkpoints/`, `metrics.jsonl`, `loss.svg`. A run resumes from the newest
    /// complete checkpoint here.
    #[schemars(length(min = 1))]
    pub output: PathBuf,
    /// Device.
    pub device: DeviceKind,
    /// CUDA device ordinal.
    pub gpu: usize,
    /// Compute dtype.
    pub dtype: ComputeDtype,
    /// Seed of the weight init and the synthetic data.
    pub seed: u64,
    /// Architecture and initial weights.
    pub model: ModelConfig,
    /// Rows per micro-batch.
    #[schemars(range(min = 1, max = 65536))]
    pub batch_size: usize,
    /// Tokens per row.
    #[schemars(range(min = 2, max = 1_048_576))]
    pub seq_len: usize,
    /// Micro-batches per optimizer step (the loss is the mean over all their counted targets).
    #[schemars(range(min = 1, max = 65536))]
    pub grad_accum: usize,
    /// Optimizer steps (default: as many as the data gives, micro-batches / grad_accum).
    #[schemars(range(min = 1))]
    pub max_steps: Option<u64>,
    /// Layers that keep only their input and recompute their forward in backward (less memory,
    /// ≈ 1/3 more compute each): "auto" (default: the fewest that fit the device's free memory,
    /// see `train::plan`; none on CPU), false/"none", true/"all", or the first N layers.
    pub recompute: Recompute,
    /// Counted tokens per cross-entropy chunk (bounds the logits held at once to chunk × vocab):
    /// a count, or "auto" (default: from free device memory; 1024 on CPU).
    pub ce_chunk_tokens: CeChunk,
    /// AdamW.
    pub optimizer: AdamWConfig,
    /// Learning-rate schedule.
    pub schedule: ScheduleConfig,
    /// Batches and curriculum.
    pub data: DataConfig,
    /// Checkpointing.
    pub checkpoint: CheckpointConfig,
    /// Metrics and progress display.
    pub metrics: MetricsConfig,
    /// Validation loss on held-out shard directories.
    pub validation: ValidationConfig,
    /// Multi-process data parallelism (rank and world size come from the launcher).
    pub distributed: DistConfig,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            output: PathBuf::from("runs/train"),
            device: DeviceKind::Cpu,
            gpu: 0,
            dtype: ComputeDtype::F32,
            seed: 0,
            model: ModelConfig { preset: Some("tiny".into()), ..Default::default() },
            batch_size: 4,
            seq_len: 256,
            grad_accum: 1,
            max_steps: None,
            recompute: Recompute::Auto,
            ce_chunk_tokens: CeChunk::Auto,
            optimizer: AdamWConfig::default(),
            schedule: ScheduleConfig::default(),
            data: DataConfig::default(),
            checkpoint: CheckpointConfig::default(),
            metrics: MetricsConfig::default(),
            validation: ValidationConfig::default(),
            distributed: DistConfig::default(),
        }
    }
}

impl TrainConfig {
    /// Checks everything that can be checked without touching files.
    /// Keys are named from the section (`batch_size`, `data.stages[0].epochs`); ranges live in
    /// the schema.
    pub fn validate(&self) -> Result<()> {
        crate::core::schema::check(self, "").map_err(|e| match e {
            crate::Error::Config { key, message, .. } => TrainError::config(key, message),
            other => TrainError::config(crate::core::schema::ROOT, other.to_string()),
        })?;
        self.model.validate()?;
        if self.ce_chunk_tokens == CeChunk::Tokens(0) {
            return Err(TrainError::config("ce_chunk_tokens", "must be >= 1 or \"auto\""));
        }
        self.optimizer.validate()?;
        self.data.validate()?;
        // Decoupled decay multiplies a weight by 1 − lr × weight_decay each step: above 1 at a
        // stage's peak lr, every decayed weight flips sign and grows (a NaN gradient later).
        for (i, st) in self.data.stages.iter().enumerate() {
            let peak = self.optimizer.lr * st.lr_multiplier;
            if peak * self.optimizer.weight_decay > 1.0 {
                return Err(TrainError::config(
                    "optimizer.weight_decay",
                    format!(
                        "{} × the peak lr {peak} of data.stages[{i}] (optimizer.lr × lr_multiplier) is {} > 1: each step would flip the sign of every decayed weight",
                        self.optimizer.weight_decay,
                        peak * self.optimizer.weight_decay
                    ),
                ));
            }
        }
        self.checkpoint.validate()?;
        self.distributed.validate()?;
        self.validation.validate()?;
        Ok(())
    }

    /// The candle device.
    pub fn device(&self) -> Result<Device> {
        match self.device {
            DeviceKind::Cpu => Ok(Device::Cpu),
            DeviceKind::Cuda => Device::new_cuda(self.gpu).map_err(|e| TrainError::config("device", format!("cuda:{}: {e}", self.gpu))),
        }
    }

    /// sha256 of the settings that change the numbers a run produces (everything except the
    /// output directory, checkpoint, metrics and validation settings, the device, recomputation
    /// and the distributed section, which changes only the summation order; the world size is
    /// checked through the loader cursor). A run only resumes from a checkpoint with the same hash.
    pub fn math_hash(&self) -> String {
        let mut v = serde_json::to_value(self).expect("config serializes");
        if let Some(o) = v.as_object_mut() {
            for k in ["output", "checkpoint", "metrics", "validation", "device", "gpu", "recompute", "distributed"] {
                o.remove(k);
            }
        }
        crate::core::hash_of(&v)
    }
}
