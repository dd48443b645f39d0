//! Multi-process data-parallel training: one process per GPU (or CPU rank), launched the way the
//! field does (`torchrun`, Slurm `srun`), gradients summed across ranks with DDP or the AdamW
//! state sharded with ZeRO-1/2.
//!
//! Layout: `launch` (rank, world, rendezvous address from the environment) → `collective` (the
//! operations, with `tcp` for CPU ranks and `nccl` for GPUs, feature `nccl`) → `parallel` (buckets,
//! DDP, ZeRO shards) used by the trainer; `split` gives each rank its share of a batch source.
//!
//! Only rank 0 writes metrics and checkpoints; checkpoints keep the consolidated HF layout (under
//! ZeRO rank 0 gathers the optimizer state), so they load into a run of any world size, and a run
//! resumes exactly with the same world size.

pub mod bench;
pub mod collective;
pub mod launch;
#[cfg(feature = "nccl")]
pub mod nccl;
pub mod parallel;
pub mod split;
pub mod store;
pub mod tcp;

use std::time::Duration;

use candle_core::Device;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use collective::{Collective, Solo};
pub use launch::{Launch, Launcher, Rendezvous};
pub use parallel::{DataParallel, StepCounts};
pub use split::RankSplit;
pub use tcp::TcpCollective;

use super::config::{DeviceKind, TrainConfig};
use super::error::{Result, TrainError};
use super::trainer::{open_source, RunSummary, Trainer};

/// How the ranks share the work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "lowercase")]
pub enum DistMode {
    /// The launcher decides: data parallel (`ddp`) when its variables say `WORLD_SIZE > 1`, one
    /// process otherwise.
    #[default]
    Auto,
    /// One process, no collectives; a launch with `WORLD_SIZE > 1` is an error (N processes
    /// would train N identical copies into one directory).
    None,
    /// Data parallel: gradients all-reduced, every rank holds the full optimizer state.
    Ddp,
    /// ZeRO-1: gradients all-reduced, AdamW master weights and moments sharded across ranks.
    Zero1,
    /// ZeRO-2: gradients reduce-scattered, AdamW state sharded across ranks.
    Zero2,
}

impl DistMode {
    /// Whether ranks exchange gradients (`ddp`, `zero1`, `zero2`).
    pub fn is_parallel(self) -> bool {
        matches!(self, DistMode::Ddp | DistMode::Zero1 | DistMode::Zero2)
    }
}

/// Which implementation carries the collectives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "lowercase")]
pub enum DistBackend {
    /// NCCL on CUDA, TCP on the CPU.
    #[default]
    Auto,
    /// TCP through rank 0 (CPU tensors; on CUDA the buffers go through the host).
    Tcp,
    /// NCCL (CUDA only; needs a build with the `nccl` feature).
    Nccl,
}

/// The `distributed` section of a training config. The world size and rank come from the
/// launcher's environment (`RANK`/`WORLD_SIZE`/… or `SLURM_PROCID`/`SLURM_NTASKS`/…).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct DistConfig {
    /// `auto` (ddp under a launcher with `WORLD_SIZE > 1`, else one process), `none`, `ddp`,
    /// `zero1` or `zero2`.
    pub mode: DistMode,
    /// Collective backend: `auto` (NCCL on CUDA, TCP on CPU), `tcp` or `nccl`.
    pub backend: DistBackend,
    /// Gradient bucket size, MiB of f32 gradients per collective (PyTorch DDP's default is 25).
    #[schemars(range(min = 0.0, max = 65536.0), extend("exclusiveMinimum" = 0.0))]
    pub bucket_mb: f64,
    /// Seconds to wait for the rendezvous and for any one collective (a rank saving a checkpoint
    /// keeps the others waiting this long at most) before failing.
    #[schemars(range(min = 0.0, max = 1e7), extend("exclusiveMinimum" = 0.0))]
    pub timeout_s: f64,
}

impl Default for DistConfig {
    fn default() -> Self {
        Self { mode: DistMode::Auto, backend: DistBackend::Auto, bucket_mb: 25.0, timeout_s: 1800.0 }
    }
}

impl DistConfig {
    /// Checks ranges.
    pub fn validate(&self) -> Result<()> {
        if !(self.bucket_mb > 0.0 && self.bucket_mb.is_finite()) {
            return Err(TrainError::config("distributed.bucket_mb", "must be > 0"));
        }
        if !(self.timeout_s > 0.0 && self.timeout_s.is_finite()) {
            return Err(TrainError::config("distributed.timeout_s", "must be > 0"));
        }
        Ok(())
    }

    /// The timeout as a duration.
    pub fn timeout(&self) -> Duration {
        Duration::from_secs_f64(self.timeout_s)
    }
}

/// Joins the process group `launch` describes with the backend `cfg` picks for `device`.
pub fn connect(cfg: &DistConfig, launch: &Launch, device: &Device) -> Result<Box<dyn Collective>> {
    let nccl = match cfg.backend {
        DistBackend::Auto => device.is_cuda() && cfg!(feature = "nccl"),
        DistBackend::Tcp => false,
        DistBackend::Nccl => true,
    };
    if !nccl {
        return Ok(Box::new(TcpCollective::connect(launch, cfg.timeout())?));
    }
    #[cfg(feature = "nccl")]
    {
        Ok(Box::new(nccl::NcclCollective::connect(launch, cfg.timeout(), device)?))
    }
    #[cfg(not(feature = "nccl"))]
    {
        Err(TrainError::config("distributed.backend", "nccl needs a build with the `nccl` feature (cargo build --features nccl)"))
    }
}

/// Runs a training config as the launcher's environment says: one process without launcher
/// variables (or `WORLD_SIZE = 1` with `distributed.mode` auto or none), else as rank `RANK` of a
/// data-parallel run (`auto` means ddp). `none` with `WORLD_SIZE > 1` fails: the ranks would all
/// train the same one-rank run into one directory.
pub fn run(cfg: &TrainConfig) -> Result<RunSummary> {
    let launch = Launch::from_env()?;
    let mode = cfg.distributed.mode;
    if !mode.is_parallel() {
        if launch.world_size > 1 && mode == DistMode::None {
            return Err(TrainError::config(
                "distributed.mode",
                format!(
                    "\"none\", but the launcher ({:?}) started {} ranks: set mode = \"ddp\", \"zero1\" or \"zero2\" (or leave it out for ddp), or start one process",
                    launch.launcher, launch.world_size
                ),
            ));
        }
        if launch.world_size == 1 {
            return super::trainer::run(cfg);
        }
        tracing::info!("{} ranks from {:?} and no distributed.mode: data parallel (ddp)", launch.world_size, launch.launcher);
    } else if launch.launcher == Launcher::Single {
        tracing::warn!(
            "distributed.mode = {:?} without launcher variables (RANK/WORLD_SIZE or SLURM_*): running as 1 rank",
            cfg.distributed.mode
        );
    }
    run_rank(cfg, &launch)
}

/// Runs a training config as rank `launch.rank` of `launch.world_size` (CUDA: on GPU
/// `launch.local_rank`). Every rank shares `cfg.output`; rank 0 writes it. `distributed.mode`
/// `auto` runs ddp.
pub fn run_rank(cfg: &TrainConfig, launch: &Launch) -> Result<RunSummary> {
    let mut cfg = cfg.clone();
    match cfg.distributed.mode {
        DistMode::Auto => cfg.distributed.mode = DistMode::Ddp,
        DistMode::None => {
            return Err(TrainError::config("distributed.mode", "a rank of a data-parallel run needs ddp, zero1 or zero2 (or auto)"))
        }
        _ => {}
    }
    if cfg.device == DeviceKind::Cuda {
        cfg.gpu = launch.local_rank;
    }
    cfg.validate()?;
    let device = cfg.device()?;
    let comm = connect(&cfg.distributed, launch, &device)?;
    let arch = cfg.model.arch()?;
    let source = RankSplit::new(open_source(&cfg, arch.vocab_size)?, launch.rank, launch.world_size)?;
    Trainer::new_distributed(&cfg, Box::new(source), comm)?.run()
}
