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
    /// Tokenize and pack document shards into token shards (the `pack` stage of a pipeline).
    Pack {
        /// Pipeline TOML with a [pack] section.
        config: PathBuf,
        #[command(flatten)]
        task: TaskArgs,
    },
    /// Throughput of a component, as JSON (tokens/s, MB/s).
    Bench {
        #[command(subcommand)]
        what: BenchCmd,
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
    /// Tokenize texts (a document shard directory, or JSONL with a "text" field).
    Tokenize {
        /// Document shard directory or JSONL file.
        input: PathBuf,
        /// Encoder: auto, hf, fast.
        #[arg(long, default_value = "auto")]
        engine: String,
        /// A tokenizer.json (default: the bundled Qwen2.5).
        #[arg(long)]
        tokenizer: Option<PathBuf>,
        /// Worker threads.
        #[arg(long, default_value_t = 1)]
        threads: usize,
        /// Texts per parallel batch.
        #[arg(long, default_value_t = 1000)]
        batch: usize,
    },
    /// The whole pack stage: document shards to token shards on disk.
    Pack {
        /// Document shard directory or JSONL file.
        input: PathBuf,
        /// Encoder: auto, hf, fast.
        #[arg(long, default_value = "auto")]
        engine: String,
        /// Worker threads.
        #[arg(long, default_value_t = 1)]
        threads: usize,
        /// Tokens per row.
        #[arg(long, default_value_t = 2048)]
        seq_len: usize,
        /// Pack whole documents (best fit) instead of CPT concatenation.
        #[arg(long)]
        whole: bool,
        /// Keep the token shards in this directory (default: a temp directory, removed).
        #[arg(long)]
        output: Option<PathBuf>,
    },
    /// Read every batch of a token shard directory with the loader.
    Load {
        /// Token shard directory.
        dir: PathBuf,
        /// Rows per batch.
        #[arg(long, default_value_t = 8)]
        batch: usize,
        /// Passes over the data.
        #[arg(long, default_value_t = 1)]
        epochs: u32,
        /// Batches prefetched on a background thread (0 = read on the calling thread only).
        #[arg(long, default_value_t = 0)]
        prefetch: usize,
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
        Cmd::Pack { config, task } => {
            let cfg = load(&config)?;
            let report = pipeline::run_stage(&cfg, "pack", &task.options()?)?;
            print!("{}", report.table());
        }
        Cmd::Bench { what } => {
            use coretech::pack::bench;
            use coretech::tokenize::TokenizerConfig;
            let result = match what {
                BenchCmd::Tokenize { input, engine, tokenizer, threads, batch } => {
                    bench::tokenize(&input, &TokenizerConfig { path: tokenizer, engine: bench::engine(&engine)? }, threads, batch)?
                }
                BenchCmd::Pack { input, engine, threads, seq_len, whole, output } => {
                    let mode = if whole { coretech::pack::PackMode::Whole } else { coretech::pack::PackMode::Cpt };
                    bench::pack(&input, &TokenizerConfig { path: None, engine: bench::engine(&engine)? }, threads, seq_len, mode, output.as_deref())?
                }
                BenchCmd::Load { dir, batch, epochs, prefetch } => bench::load(&dir, batch, epochs, prefetch)?,
            };
            println!("{}", serde_json::to_string(&result)?);
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
        Cmd::Inspect { path, rows } => {
            print!("{}", coretech::inspect::inspect(&path, rows)?);
        }
    }
    Ok(())
}
