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

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
struct SftArgs {
    #[command(subcommand)]
    cmd: Option<SftCmd>,
    /// Pipeline TOML with an [sft] section: read, validate, split, decontaminate, grade, pack.
    config: Option<PathBuf>,
    /// Fail on the first bad record instead of counting and skipping it.
    #[arg(long)]
    strict: bool,
}

#[derive(Subcommand)]
enum SftCmd {
    /// Everything up to difficulty grading: writes examples.parquet and report.json, no shards.
    Grade {
        /// Pipeline TOML with an [sft] section.
        config: PathBuf,
        /// Fail on the first bad record.
        #[arg(long)]
        strict: bool,
    },
    /// Per-task and per-stage counts, length distributions and stage means of a built SFT
    /// directory (or its examples.parquet).
    Stats {
        /// The `[sft] output` directory.
        dir: PathBuf,
    },
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
    /// Build SFT token shards (the `sft` stage), or `sft grade` / `sft stats`.
    Sft(SftArgs),
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
    /// Show a shard file or directory: schema, row counts, sample rows, per-source stats.
    Inspect {
        /// A `.parquet` shard or a shard directory.
        path: PathBuf,
        /// Sample rows to print.
        #[arg(long, default_value_t = 3)]
        rows: usize,
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
        Cmd::Sft(args) => match (args.cmd, args.config) {
            (Some(SftCmd::Grade { config, strict }), _) => {
                let cfg = load(&config)?;
                let report = coretech::sft::run_pipeline(&cfg, strict, coretech::sft::Mode::Grade)?;
                print!("{}", report.table());
                if let Some(sft) = &cfg.sft {
                    print!("{}", coretech::sft::stats::stats_of_dir(&sft.output)?);
                }
            }
            (Some(SftCmd::Stats { dir }), _) => print!("{}", coretech::sft::stats::stats_of_dir(&dir)?),
            (None, Some(config)) => {
                let report = coretech::sft::run_pipeline(&load(&config)?, args.strict, coretech::sft::Mode::Build)?;
                print!("{}", report.table());
            }
            (None, None) => anyhow::bail!("usage: coretech sft <config> | coretech sft grade <config> | coretech sft stats <dir>"),
        },
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
        Cmd::Inspect { path, rows } => {
            print!("{}", coretech::inspect::inspect(&path, rows)?);
        }
    }
    Ok(())
}
