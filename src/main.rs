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
    /// Remove exact and near duplicates from document shards (the `dedup` stage of a pipeline).
    ///
    /// With --task-count > 1 run each --step as its own job array, in order: signatures
    /// (input shards split by task), buckets (bands split by task), cluster (one task), filter
    /// (shards split by task), then `coretech merge OUTPUT`.
    Dedup {
        /// Pipeline TOML with a [dedup] section.
        config: PathBuf,
        #[command(flatten)]
        task: TaskArgs,
        /// Run one step only: signatures, buckets, cluster or filter.
        #[arg(long)]
        step: Option<String>,
        /// After the run, check N random near-duplicate pairs: exact Jaccard vs the estimate.
        #[arg(long)]
        verify_sample: Option<usize>,
        /// Seed of the --verify-sample draw.
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// Labelled and scaled test corpora for dedup, and scoring of a dedup run against labels.
    DedupBench {
        #[command(subcommand)]
        cmd: BenchCmd,
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
    /// Fixture texts plus copies with controlled edits, as document shards (OUT/documents), with
    /// exact-Jaccard ground truth (OUT/labels.jsonl, OUT/pairs.jsonl).
    Gen {
        /// Output directory.
        out: PathBuf,
        /// Fixture directory.
        #[arg(long, default_value = "fixtures/data")]
        fixtures: PathBuf,
        /// Seed of every random choice.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Use at most this many originals (0: all).
        #[arg(long, default_value_t = 0)]
        max_originals: usize,
    },
    /// Score the output of `coretech dedup CONFIG` (whose input is LABELLED/documents).
    Score {
        /// The labelled set directory.
        labelled: PathBuf,
        /// The pipeline TOML the dedup ran with.
        config: PathBuf,
    },
    /// About BYTES of documents composed from fixture chunks with small mutations, one in five a
    /// near copy (the speed benchmark input).
    Scale {
        /// Output shard directory.
        out: PathBuf,
        /// Text bytes to generate (e.g. 1000000000).
        #[arg(long)]
        bytes: u64,
        /// Fixture directory.
        #[arg(long, default_value = "fixtures/data")]
        fixtures: PathBuf,
        /// Seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Documents per shard.
        #[arg(long, default_value_t = 20000)]
        rows_per_shard: usize,
    },
}

fn dedup_config(config: &PathBuf) -> anyhow::Result<coretech::dedup::DedupConfig> {
    load(config)?.dedup.with_context(|| format!("{}: no [dedup] section", config.display()))
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
        Cmd::Dedup { config, task, step, verify_sample, seed } => {
            let cfg = dedup_config(&config)?;
            let step = step.map(|s| s.parse()).transpose()?;
            let report = coretech::dedup::run(&cfg, task.options()?.task, step)?;
            print!("{}", report.table());
            if let Some(n) = verify_sample {
                print!("{}", coretech::dedup::verify::verify_sample(&cfg, n, seed)?.table());
            }
        }
        Cmd::DedupBench { cmd } => match cmd {
            BenchCmd::Gen { out, fixtures, seed, max_originals } => {
                let cfg = coretech::dedup::bench::LabelledConfig { fixtures, out: out.clone(), seed, max_originals };
                let dedup = coretech::dedup::DedupConfig::new(out.join("documents"), out.join("dedup"));
                let s = coretech::dedup::bench::gen_labelled(&cfg, &dedup)?;
                println!("{}: {} documents in {} families, {} pairs ({} with Jaccard >= 0.8)", out.display(), s.docs, s.families, s.pairs, s.pairs_08);
            }
            BenchCmd::Score { labelled, config } => {
                let cfg = dedup_config(&config)?;
                print!("{}", coretech::dedup::bench::score(&labelled, &cfg)?.table());
            }
            BenchCmd::Scale { out, bytes, fixtures, seed, rows_per_shard } => {
                let m = coretech::dedup::bench::gen_scale(&fixtures, &out, bytes, seed, rows_per_shard)?;
                println!("{}: {} shards, {} documents", out.display(), m.shards.len(), m.rows());
            }
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
