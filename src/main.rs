//! The `coretech` command line: parses arguments and calls the library.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use coretech::config::PipelineConfig;
use coretech::pipeline::{self, RunOptions, TaskSplit};

#[derive(Parser)]
#[command(name = "coretech", version, about = "Patent-domain LLM toolkit: corpus build and Qwen2 training")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Args, Clone)]
struct TaskArgs {
    /// This task's index in a multi-machine build (Slurm: $SLURM_ARRAY_TASK_ID).
    #[arg(long, default_value_t = 0)]
    task_index: usize,
    /// Number of tasks in a multi-machine build (Slurm: $SLURM_ARRAY_TASK_COUNT).
    #[arg(long, default_value_t = 1)]
    task_count: usize,
    /// Fail on the first bad record instead of counting and skipping it.
    #[arg(long)]
    strict: bool,
}

impl TaskArgs {
    fn options(&self) -> anyhow::Result<RunOptions> {
        Ok(RunOptions { task: TaskSplit::new(self.task_index, self.task_count)?, strict: self.strict })
    }
}

#[derive(Subcommand)]
enum Cmd {
    /// Build document shards from raw inputs (the `docs` stage of a pipeline).
    Docs {
        /// Pipeline TOML with a [docs] section.
        config: PathBuf,
        #[command(flatten)]
        task: TaskArgs,
    },
    /// Run every stage the pipeline lists, in order.
    Run {
        /// Pipeline TOML.
        config: PathBuf,
        #[command(flatten)]
        task: TaskArgs,
    },
    /// Combine the manifests of a multi-task build (`DIR/task-*`) into `DIR/manifest.json`.
    Merge {
        /// Output directory holding task-* subdirectories.
        dir: PathBuf,
    },
    /// Train: runs a `[train.<name>]` section of a pipeline (the only one, or the one --name picks).
    Train {
        /// Pipeline TOML with [train.<name>] sections.
        config: PathBuf,
        /// Which [train.<name>] section.
        #[arg(long)]
        name: Option<String>,
        /// Override the section's device (cpu|cuda).
        #[arg(long)]
        device: Option<String>,
    },
    /// Benchmarks.
    Bench {
        #[command(subcommand)]
        what: BenchCmd,
    },
    /// Check the device's fused training units against the CPU reference (random inputs, forward
    /// and backward, stated tolerances) and a few training steps; prints a table and JSON.
    Selftest {
        /// Device (cpu|cuda).
        #[arg(long, default_value = "cuda")]
        device: String,
        /// CUDA ordinal.
        #[arg(long, default_value_t = 0)]
        gpu: usize,
        /// Seed of the random inputs (default: from the clock, so every run draws fresh inputs).
        #[arg(long)]
        seed: Option<u64>,
    },
    /// Show a shard file or directory: schema, row counts, sample rows, per-source stats.
    Inspect {
        /// A `.parquet` shard or a shard directory.
        path: PathBuf,
        /// Sample rows to print.
        #[arg(long, default_value_t = 3)]
        rows: usize,
    },
}

#[derive(Subcommand)]
enum BenchCmd {
    /// Training throughput (tokens/s, MFU, step-time split, memory) on random tokens, as JSON.
    Train {
        /// A model preset (test, tiny, small, qwen2.5-0.5b, …) or an HF config.json.
        #[arg(long, default_value = "tiny")]
        model: String,
        /// Rows per step.
        #[arg(long, default_value_t = 4)]
        batch: usize,
        /// Tokens per row.
        #[arg(long, default_value_t = 256)]
        seq: usize,
        /// Compute dtype (f32|bf16).
        #[arg(long, default_value = "f32")]
        dtype: String,
        /// Device (cpu|cuda).
        #[arg(long, default_value = "cpu")]
        device: String,
        /// CUDA ordinal.
        #[arg(long, default_value_t = 0)]
        gpu: usize,
        /// Timed steps.
        #[arg(long, default_value_t = 5)]
        steps: usize,
        /// Untimed warm-up steps.
        #[arg(long, default_value_t = 1)]
        warmup: usize,
        /// Recompute activations in backward.
        #[arg(long)]
        recompute: bool,
        /// Cross-entropy chunk in tokens.
        #[arg(long, default_value_t = 1024)]
        ce_chunk: usize,
        /// Peak FLOP/s for MFU (default 989e12 on CUDA).
        #[arg(long)]
        peak_flops: Option<f64>,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn load(config: &PathBuf) -> anyhow::Result<PipelineConfig> {
    PipelineConfig::load(config).with_context(|| format!("loading {}", config.display()))
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.cmd {
        Cmd::Docs { config, task } => {
            let cfg = load(&config)?;
            let report = pipeline::run_stage(&cfg, "docs", &task.options()?)?;
            print!("{}", report.table());
        }
        Cmd::Run { config, task } => {
            let cfg = load(&config)?;
            for report in pipeline::run(&cfg, &task.options()?)? {
                println!("== {} ==", report.stage);
                print!("{}", report.table());
            }
        }
        Cmd::Merge { dir } => {
            let m = pipeline::merge::merge(&dir)?;
            println!("{}: {} shards, {} rows", dir.display(), m.shards.len(), m.rows());
        }
        Cmd::Train { config, name, device } => {
            let cfg = load(&config)?;
            let name = match name {
                Some(n) => n,
                None if cfg.train.len() == 1 => cfg.train.keys().next().cloned().unwrap_or_default(),
                None => anyhow::bail!("{} has {} [train.<name>] sections: pick one with --name ({})", config.display(), cfg.train.len(), cfg.train.keys().cloned().collect::<Vec<_>>().join(", ")),
            };
            let mut tc = cfg.train.get(&name).cloned().with_context(|| format!("{} has no [train.{name}] section", config.display()))?;
            if let Some(d) = device {
                tc.device = d.parse()?;
            }
            let summary = coretech::train::trainer::run(&tc)?;
            println!("{}", serde_json::to_string_pretty(&summary)?);
        }
        Cmd::Bench { what: BenchCmd::Train { model, batch, seq, dtype, device, gpu, steps, warmup, recompute, ce_chunk, peak_flops } } => {
            let b = coretech::train::bench::BenchConfig { model, batch, seq_len: seq, dtype: dtype.parse()?, device: device.parse()?, gpu, steps, warmup, recompute, ce_chunk, peak_flops, seed: 0 };
            println!("{}", serde_json::to_string(&coretech::train::bench::bench_train(&b)?)?);
        }
        Cmd::Selftest { device, gpu, seed } => {
            let tc = coretech::train::TrainConfig { device: device.parse()?, gpu, ..Default::default() };
            let seed = seed.unwrap_or_else(|| std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0));
            let r = coretech::train::selftest::run(&tc.device()?, seed)?;
            for c in &r.checks {
                let status = if c.pass { "ok" } else { "FAIL" };
                println!("{:<44} {:>14} rel_err {:>10.3e} max_abs {:>10.3e} tol {:>8.1e}  {status}", c.name, format!("{:?}", c.shape), c.rel_err, c.max_abs, c.tol);
            }
            println!("train losses {}: {:?}", r.device, r.train_losses_device);
            println!("train losses cpu: {:?}", r.train_losses_cpu);
            println!("SELFTEST {}", serde_json::to_string(&r)?);
            println!("selftest: {} passed, {} failed", r.passed, r.failed);
            if r.failed > 0 {
                anyhow::bail!("selftest: {} of {} checks failed", r.failed, r.passed + r.failed);
            }
        }
        Cmd::Inspect { path, rows } => {
            print!("{}", coretech::inspect::inspect(&path, rows)?);
        }
    }
    Ok(())
}
