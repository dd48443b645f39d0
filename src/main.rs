//! The `coretech` command line: parses arguments and calls the library.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use coretech::config::{PipelineConfig, Stage};
use coretech::core::{RunOptions, TaskSplit};
use coretech::dedup::Step;
use coretech::infer;
use coretech::infer::model::DTypeChoice;
use coretech::pipeline;
use coretech::tokenize::Engine;
use coretech::train::config::{ComputeDtype, DeviceKind};
use coretech::train::dist::DistMode;

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
    /// Write into a non-empty output folder this stage did not create; its files are never
    /// deleted or overwritten.
    #[arg(long)]
    force: bool,
}

impl TaskArgs {
    fn options(&self) -> anyhow::Result<RunOptions> {
        Ok(RunOptions { task: TaskSplit::new(self.task_index, self.task_count)?, strict: self.strict, force: self.force })
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
    /// Write into a non-empty output folder this stage did not create; its files are never
    /// deleted or overwritten.
    #[arg(long)]
    force: bool,
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
        /// Write into a non-empty output folder this stage did not create.
        #[arg(long)]
        force: bool,
    },
    /// Per-task and per-stage counts, length distributions and stage means of a built SFT
    /// directory (or its examples.parquet).
    Stats {
        /// The `[sft] output` directory.
        dir: PathBuf,
    },
}

#[derive(Subcommand)]
enum ExportCmd {
    /// The SFT build's graded curriculum stages (every split) as LLaMA-Factory datasets: one
    /// JSON file per split and stage plus dataset_info.json (names `PREFIX_SPLIT_stageK`).
    Llamafactory {
        /// Pipeline TOML with the [sft] section of the build (its output and default system).
        config: PathBuf,
        /// Directory to write (LLaMA-Factory's `dataset_dir`).
        #[arg(long)]
        output: PathBuf,
        /// alpaca or sharegpt.
        #[arg(long, default_value = "sharegpt")]
        format: coretech::sft::export::Format,
        /// Prefix of the dataset names.
        #[arg(long, default_value = "coretech")]
        prefix: String,
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
        /// Run one step only.
        #[arg(long, value_enum)]
        step: Option<Step>,
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
        cmd: DedupBenchCmd,
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
    /// Build SFT token shards (the `sft` stage), or `sft grade` / `sft stats`.
    Sft(SftArgs),
    /// Run every stage the pipeline lists, in order.
    Run {
        /// Pipeline TOML.
        config: PathBuf,
        #[command(flatten)]
        task: TaskArgs,
    },
    /// Write a build's outputs for another tool: `export llamafactory CFG --output DIR`.
    Export {
        #[command(subcommand)]
        what: ExportCmd,
    },
    /// Print the batches the training loader yields from token or SFT shard directories, as
    /// JSON lines (arrays, cu_seqlens, counted targets, the cursor after each batch): the
    /// reference `python/coretech_loader.py` is checked against.
    Batches {
        /// Shard directory of each curriculum stage, in order (one per stage).
        #[arg(required = true)]
        stages: Vec<PathBuf>,
        /// Rows per batch on each rank.
        #[arg(long, default_value_t = 8)]
        batch_size: usize,
        /// Seed of the order.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Passes over each stage.
        #[arg(long, default_value_t = 1)]
        epochs: u32,
        /// This rank.
        #[arg(long, default_value_t = 0)]
        rank: usize,
        /// Number of ranks.
        #[arg(long, default_value_t = 1)]
        world_size: usize,
        /// Share of later stages' positions given to earlier stages' rows.
        #[arg(long, default_value_t = 0.0)]
        replay: f64,
        /// Skip the last, partial step of each epoch.
        #[arg(long)]
        drop_last: bool,
        /// Print at most N batches.
        #[arg(long)]
        limit: Option<u64>,
        /// Continue from a cursor (the JSON `state` of a printed batch, or a checkpoint's
        /// trainer_state.json `loader.loader`).
        #[arg(long)]
        state: Option<String>,
    },
    /// Combine the manifests of a multi-task build (`DIR/task-*`) into `DIR/.manifest.json`.
    Merge {
        /// Output directory holding task-* subdirectories.
        dir: PathBuf,
    },
    /// Chat with a checkpoint (ChatML, streamed): one answer with --prompt, else a REPL on
    /// stdin (`/reset` starts over, `/exit` or end of input quits).
    Chat {
        /// Checkpoint directory (HF layout: config.json, model.safetensors[.index.json]).
        #[arg(long)]
        checkpoint: PathBuf,
        /// System prompt (default: the Qwen2.5 template's).
        #[arg(long)]
        system: Option<String>,
        /// Ask this one question and exit.
        #[arg(long)]
        prompt: Option<String>,
        #[command(flatten)]
        gen: GenArgs,
    },
    /// Answer an SFT test split with a checkpoint and score it: IPC codes per level, key
    /// technologies; prints a summary and optionally writes a JSON report.
    Eval {
        /// Checkpoint directory.
        #[arg(long)]
        checkpoint: PathBuf,
        /// Alpaca JSONL or JSON test split.
        #[arg(long)]
        sft_test: PathBuf,
        /// Evaluate only the first N examples.
        #[arg(long)]
        limit: Option<usize>,
        /// Write the JSON report (per example and aggregate) here.
        #[arg(long)]
        report: Option<PathBuf>,
        /// System prompt for every example (default: the record's, else the template's).
        #[arg(long)]
        system: Option<String>,
        /// Least character-bigram Dice similarity of a fuzzy key-technology match.
        #[arg(long, default_value_t = infer::eval::EvalConfig::default().tech_match_threshold)]
        tech_threshold: f64,
        #[command(flatten)]
        gen: GenArgs,
    },
    /// Train: runs a `[train.<name>]` section of a pipeline (the only one, or the one --name picks).
    Train {
        /// Pipeline TOML with [train.<name>] sections.
        config: PathBuf,
        /// Which [train.<name>] section.
        #[arg(long)]
        name: Option<String>,
        /// Override the section's device.
        #[arg(long, value_enum)]
        device: Option<DeviceKind>,
    },
    /// Write the logits of a weights directory (a checkpoint or HF Qwen2 weights) for one token
    /// sequence under the training forward (f32, CPU) as raw little-endian f32 (tokens × vocab);
    /// the transformers compatibility check reads them (tests/compat/check_transformers.py).
    Logits {
        /// Weights directory (`config.json` + safetensors).
        #[arg(long)]
        checkpoint: PathBuf,
        /// Token ids, comma-separated.
        #[arg(long, value_delimiter = ',')]
        ids: Vec<u32>,
        /// Output file.
        #[arg(long)]
        out: PathBuf,
    },
    /// Plan a training step's device memory without a device: the fixed state (weights, f32
    /// master weights and moments), then the layers to recompute and the cross-entropy chunk for a
    /// card of the given size (what `train` and `bench train` do from the free memory they measure).
    Plan {
        /// A model preset or an HF config.json.
        #[arg(long, default_value = "qwen2.5-7b")]
        model: String,
        /// Rows per micro-batch.
        #[arg(long, default_value_t = 1)]
        batch: usize,
        /// Tokens per row.
        #[arg(long, default_value_t = 4096)]
        seq: usize,
        /// Micro-batches per optimizer step.
        #[arg(long, default_value_t = 1)]
        accum: usize,
        /// Compute dtype (bf16|f32).
        #[arg(long, default_value = "bf16")]
        dtype: String,
        /// Device memory in GiB (H200: 140.4, H100 80GB: 79.6).
        #[arg(long, default_value_t = 140.4)]
        device_gib: f64,
        /// Taken before the trainer allocates (CUDA context, other processes), GiB.
        #[arg(long, default_value_t = 0.6)]
        used_gib: f64,
        /// Recomputed layers: auto, none, all or N.
        #[arg(long, default_value = "auto")]
        recompute: String,
        /// Cross-entropy chunk: auto or tokens.
        #[arg(long, default_value = "auto")]
        ce_chunk: String,
    },
    /// Check the device's fused training units against the CPU reference (random inputs, forward
    /// and backward, stated tolerances) and a few training steps; prints a table and JSON.
    Selftest {
        /// Device.
        #[arg(long, value_enum, default_value_t = DeviceKind::Cuda)]
        device: DeviceKind,
        /// CUDA ordinal.
        #[arg(long, default_value_t = 0)]
        gpu: usize,
        /// Seed of the random inputs (default: from the clock, so every run draws fresh inputs).
        #[arg(long)]
        seed: Option<u64>,
    },
    /// Show a shard file or directory: schema, row counts, sample rows, per-source stats (a
    /// rejects folder: rows per reason and per source, samples of one reason with `--reason`).
    Inspect {
        /// A `.parquet` shard or a shard directory.
        path: PathBuf,
        /// Sample rows to print.
        #[arg(long, default_value_t = 3)]
        rows: usize,
        /// A rejects folder: show only the rows dropped for this reason (`min_length`, `exact`, …).
        #[arg(long)]
        reason: Option<String>,
    },
}

#[derive(Subcommand)]
enum DedupBenchCmd {
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
    /// Copy-family corpora, one per edit rate (OUT/edit-R%/documents, labels.jsonl): originals
    /// of which no two are near copies, each followed by edited copies, a paragraph shuffle and
    /// a truncation.
    Families {
        /// Output directory.
        out: PathBuf,
        /// Fixture directory.
        #[arg(long, default_value = "fixtures/data")]
        fixtures: PathBuf,
        /// Seed of every random choice.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Copies per original.
        #[arg(long, default_value_t = 10)]
        copies: usize,
        /// Character edit rates (one corpus each).
        #[arg(long, value_delimiter = ',', default_values_t = vec![0.005, 0.02, 0.05])]
        rates: Vec<f64>,
        /// Originals with exact Jaccard at least this with an earlier one are left out.
        #[arg(long, default_value_t = 0.5)]
        base_max_jaccard: f64,
    },
    /// Score the output of `coretech dedup CONFIG` on a copy-family corpus (CORPUS: one
    /// OUT/edit-R% directory of `families`; the config's input is CORPUS/documents).
    FamiliesScore {
        /// The corpus directory.
        corpus: PathBuf,
        /// The pipeline TOML the dedup ran with.
        config: PathBuf,
    },
    /// Score the output of `coretech dedup CONFIG` (whose input is LABELLED/documents).
    Score {
        /// The labelled set directory.
        labelled: PathBuf,
        /// The pipeline TOML the dedup ran with.
        config: PathBuf,
    },
    /// About BYTES of documents composed from fixture chunks with small mutations, a share
    /// (--near-copies, default one in five) near copies of recent ones (the speed benchmark input).
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
        /// Share of the documents that are near copies of a recent one.
        #[arg(long, default_value_t = 0.2)]
        near_copies: f64,
    },
}

fn dedup_config(config: &Path) -> anyhow::Result<coretech::dedup::DedupConfig> {
    load(config)?.dedup.with_context(|| format!("{}: no [dedup] section", config.display()))
}

/// Model placement and decoding settings of `chat` and `eval` (greedy unless --temperature > 0).
#[derive(Args, Clone)]
struct GenArgs {
    /// Most new tokens per answer.
    #[arg(long, default_value_t = infer::GenerationConfig::default().max_new_tokens)]
    max_new_tokens: usize,
    /// Sampling temperature; 0 = greedy. Qwen2.5-Instruct's own defaults are 0.7 with
    /// --top-p 0.8 --top-k 20 --repetition-penalty 1.05.
    #[arg(long, default_value_t = infer::GenerationConfig::default().temperature)]
    temperature: f64,
    /// Nucleus sampling mass (1 = off).
    #[arg(long, default_value_t = infer::GenerationConfig::default().top_p)]
    top_p: f64,
    /// Sample among the k most likely tokens (0 = off).
    #[arg(long, default_value_t = infer::GenerationConfig::default().top_k)]
    top_k: usize,
    /// Penalty on tokens among the last `repeat_last_n` (64) of the context (1 = off).
    #[arg(long, default_value_t = infer::GenerationConfig::default().repetition_penalty)]
    repetition_penalty: f32,
    /// Sampling seed.
    #[arg(long, default_value_t = infer::GenerationConfig::default().seed)]
    seed: u64,
    /// cpu, cuda or cuda:N (CUDA needs the `cuda` feature).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// auto: the checkpoint's dtype on CUDA, f32 on CPU.
    #[arg(long, value_enum, default_value_t = DTypeChoice::default())]
    dtype: DTypeChoice,
}

impl GenArgs {
    fn generation(&self) -> infer::GenerationConfig {
        infer::GenerationConfig {
            max_new_tokens: self.max_new_tokens,
            temperature: self.temperature,
            top_p: self.top_p,
            top_k: self.top_k,
            repetition_penalty: self.repetition_penalty,
            seed: self.seed,
            ..Default::default()
        }
    }

    fn load(&self, dir: &std::path::Path) -> anyhow::Result<infer::Checkpoint> {
        self.generation().validate()?;
        let opts = infer::LoadOptions { device: infer::model::parse_device(&self.device)?, dtype: self.dtype };
        let ckpt = infer::Checkpoint::load(dir, &opts)?;
        eprintln!(
            "loaded {} ({} layers, hidden {}, {:?}), tokenizer: {}",
            ckpt.dir.display(),
            ckpt.config.num_hidden_layers,
            ckpt.config.hidden_size,
            ckpt.dtype,
            ckpt.tokenizer_origin
        );
        Ok(ckpt)
    }
}

/// Where a benchmark computes: dtype, device and CUDA ordinal.
#[derive(clap::Args)]
struct ComputeArgs {
    /// Compute dtype.
    #[arg(long, value_enum, default_value_t = ComputeDtype::default())]
    dtype: ComputeDtype,
    /// Device.
    #[arg(long, value_enum, default_value_t = DeviceKind::default())]
    device: DeviceKind,
    /// CUDA ordinal.
    #[arg(long, default_value_t = 0)]
    gpu: usize,
}

#[derive(Subcommand)]
enum BenchCmd {
    /// Tokenize texts (a document shard directory, or JSONL with a "text" field).
    Tokenize {
        /// Document shard directory or JSONL file.
        input: PathBuf,
        /// Encoder.
        #[arg(long, value_enum, default_value_t = Engine::default())]
        engine: Engine,
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
        /// Encoder.
        #[arg(long, value_enum, default_value_t = Engine::default())]
        engine: Engine,
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
    /// Model grading throughput (examples/s, scored tokens/s, CPU seconds, load): cond and
    /// answer-only losses of SFT examples under a checkpoint or a fresh preset, as JSON.
    Grade {
        /// SFT inputs (files or LLaMA-Factory folders) or built `examples.parquet` files
        /// (default: the fixture SFT set).
        #[arg(default_values = coretech::sft::bench::FIXTURE_SET)]
        inputs: Vec<PathBuf>,
        /// Grade the first N examples only (0: all).
        #[arg(long, default_value_t = 0)]
        limit: usize,
        /// A model preset (seeded init: tiny, small, qwen2.5-0.5b, …) or a weights / training
        /// run directory.
        #[arg(long, default_value = "tiny")]
        model: String,
        /// The tokenizer.
        #[arg(long, default_value = "fixtures/tokenizers/qwen2.5/tokenizer.json.zst")]
        tokenizer: PathBuf,
        /// Rows per forward.
        #[arg(long, default_value_t = 8)]
        batch: usize,
        /// Tokens per row (at least the cutoff plus the assistant header).
        #[arg(long, default_value_t = 512)]
        seq: usize,
        /// LLaMA-Factory cutoff applied to each example.
        #[arg(long, default_value_t = 512)]
        cutoff_len: usize,
        /// Answer tokens per LM-head chunk.
        #[arg(long, default_value_t = coretech::sft::config::GradeConfig::default().ce_chunk_tokens)]
        ce_chunk: usize,
        #[command(flatten)]
        compute: ComputeArgs,
    },
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
        #[command(flatten)]
        compute: ComputeArgs,
        /// Timed steps.
        #[arg(long, default_value_t = 5)]
        steps: usize,
        /// Untimed warm-up steps.
        #[arg(long, default_value_t = 1)]
        warmup: usize,
        /// Micro-batches per optimizer step (gradient accumulation).
        #[arg(long, default_value_t = 1)]
        accum: usize,
        /// Documents packed into each row (1: CPT shape; more: SFT shape, ragged attention).
        #[arg(long, default_value_t = 1)]
        docs_per_row: usize,
        /// Leading fraction of each document not counted in the loss (SFT prompts).
        #[arg(long, default_value_t = 0.0)]
        prompt_fraction: f64,
        /// Layers that recompute activations in backward: auto (from free device memory), none,
        /// all, or the first N (a bare --recompute means all).
        #[arg(long, default_value = "auto", default_missing_value = "all", num_args = 0..=1)]
        recompute: String,
        /// Cross-entropy chunk in tokens, or auto (from free device memory; 1024 on CPU).
        #[arg(long, default_value = "auto")]
        ce_chunk: String,
        /// Peak FLOP/s for MFU (default 989e12 on CUDA).
        #[arg(long)]
        peak_flops: Option<f64>,
        /// Data-parallel ranks, as threads of this process (CUDA: GPUs gpu..gpu+N-1); with N > 1
        /// the report gives tokens/s per rank and the scaling efficiency against 1 rank.
        #[arg(long, default_value_t = 1)]
        world_size: usize,
        /// Data-parallel mode with --world-size > 1.
        #[arg(long, value_enum, default_value_t = DistMode::Ddp)]
        dist_mode: DistMode,
        /// Localhost rendezvous port of the ranks (--world-size > 1).
        #[arg(long, default_value_t = 29500)]
        port: u16,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        // No colour codes in a log file (a Slurm log, nohup).
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Reads and checks a pipeline file (its errors name the file and the key).
fn load(config: &Path) -> anyhow::Result<PipelineConfig> {
    Ok(PipelineConfig::load(config)?)
}

/// Names the pipeline file in a config error a stage found while running.
fn named<E: Into<coretech::Error>>(config: &Path) -> impl Fn(E) -> coretech::Error + '_ {
    move |e| coretech::config::in_file(e.into(), &config.display().to_string())
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.cmd {
        Cmd::Docs { config, task } => {
            let cfg = load(&config)?;
            let report = pipeline::run_stage(&cfg, &Stage::Docs, &task.options()?).map_err(named(&config))?;
            print!("{}", report.table());
        }
        Cmd::Dedup { config, task, step, verify_sample, seed } => {
            let cfg = dedup_config(&config)?;
            let report = coretech::dedup::stage::run_with(&cfg, &task.options()?, step).map_err(named(&config))?;
            print!("{}", report.table());
            if let Some(n) = verify_sample {
                print!("{}", coretech::dedup::verify::verify_sample(&cfg, n, seed)?.table());
            }
        }
        Cmd::DedupBench { cmd } => match cmd {
            DedupBenchCmd::Gen { out, fixtures, seed, max_originals } => {
                let cfg = coretech::dedup::bench::LabelledConfig { fixtures, out: out.clone(), seed, max_originals };
                let dedup = coretech::dedup::DedupConfig::new(out.join("documents"), out.join("dedup"));
                let s = coretech::dedup::bench::gen_labelled(&cfg, &dedup)?;
                println!(
                    "{}: {} documents in {} families, {} pairs ({} with Jaccard >= 0.8)",
                    out.display(),
                    s.docs,
                    s.families,
                    s.pairs,
                    s.pairs_08
                );
            }
            DedupBenchCmd::Families { out, fixtures, seed, copies, rates, base_max_jaccard } => {
                let cfg = coretech::dedup::bench::FamiliesConfig { fixtures, out: out.clone(), seed, copies, rates, base_max_jaccard };
                let dedup = coretech::dedup::DedupConfig::new(out.join("documents"), out.join("dedup"));
                let s = coretech::dedup::bench::gen_families(&cfg, &dedup)?;
                println!(
                    "{}: {} originals of {} fixture texts (no two with Jaccard >= {base_max_jaccard}), {copies} copies each",
                    out.display(),
                    s.originals,
                    s.texts
                );
                for (dir, n) in s.corpora {
                    println!("  {}: {n} documents", dir.display());
                }
            }
            DedupBenchCmd::FamiliesScore { corpus, config } => {
                let cfg = dedup_config(&config)?;
                print!("{}", coretech::dedup::bench::score_families(&corpus, &cfg)?.table());
            }
            DedupBenchCmd::Score { labelled, config } => {
                let cfg = dedup_config(&config)?;
                print!("{}", coretech::dedup::bench::score(&labelled, &cfg)?.table());
            }
            DedupBenchCmd::Scale { out, bytes, fixtures, seed, rows_per_shard, near_copies } => {
                let m = coretech::dedup::bench::gen_scale(&fixtures, &out, bytes, seed, rows_per_shard, near_copies)?;
                println!("{}: {} shards, {} documents", out.display(), m.shards.len(), m.rows());
            }
        },
        Cmd::Pack { config, task } => {
            let cfg = load(&config)?;
            let report = pipeline::run_stage(&cfg, &Stage::Pack, &task.options()?).map_err(named(&config))?;
            print!("{}", report.table());
        }
        Cmd::Bench { what } => {
            use coretech::pack::bench;
            use coretech::tokenize::TokenizerConfig;
            let result = match what {
                BenchCmd::Grade {
                    inputs,
                    limit,
                    model,
                    tokenizer,
                    batch,
                    seq,
                    cutoff_len,
                    ce_chunk,
                    compute: ComputeArgs { dtype, device, gpu },
                } => {
                    let b = coretech::sft::bench::GradeBenchConfig {
                        inputs,
                        limit,
                        tokenizer,
                        model,
                        batch_size: batch,
                        row_len: seq,
                        cutoff_len,
                        device,
                        gpu,
                        dtype,
                        ce_chunk,
                    };
                    println!("{}", serde_json::to_string(&coretech::sft::bench::bench_grade(&b)?)?);
                    return Ok(());
                }
                BenchCmd::Train {
                    model,
                    batch,
                    seq,
                    compute: ComputeArgs { dtype, device, gpu },
                    steps,
                    warmup,
                    accum,
                    docs_per_row,
                    prompt_fraction,
                    recompute,
                    ce_chunk,
                    peak_flops,
                    world_size,
                    dist_mode,
                    port,
                } => {
                    let b = coretech::train::bench::BenchConfig {
                        model,
                        batch,
                        seq_len: seq,
                        dtype,
                        device,
                        gpu,
                        steps,
                        warmup,
                        micro_batches: accum,
                        docs_per_row,
                        prompt_fraction,
                        recompute: recompute.parse()?,
                        ce_chunk: ce_chunk.parse()?,
                        peak_flops,
                        seed: 0,
                    };
                    if world_size > 1 {
                        println!(
                            "{}",
                            serde_json::to_string(&coretech::train::dist::bench::bench_train_dist(&b, world_size, dist_mode, port)?)?
                        );
                        return Ok(());
                    }
                    println!("{}", serde_json::to_string(&coretech::train::bench::bench_train(&b)?)?);
                    return Ok(());
                }
                BenchCmd::Tokenize { input, engine, tokenizer, threads, batch } => {
                    bench::tokenize(&input, &TokenizerConfig { path: tokenizer, engine }, threads, batch)?
                }
                BenchCmd::Pack { input, engine, threads, seq_len, whole, output } => {
                    let mode = if whole { coretech::pack::PackMode::Whole } else { coretech::pack::PackMode::Cpt };
                    bench::pack(&input, &TokenizerConfig { path: None, engine }, threads, seq_len, mode, output.as_deref())?
                }
                BenchCmd::Load { dir, batch, epochs, prefetch } => bench::load(&dir, batch, epochs, prefetch)?,
            };
            println!("{}", serde_json::to_string(&result)?);
        }
        Cmd::Sft(args) => match (args.cmd, args.config) {
            (Some(SftCmd::Grade { config, strict, force }), _) => {
                let cfg = load(&config)?;
                let report = pipeline::run_sft_with(&cfg, &RunOptions { strict, force, ..Default::default() }, coretech::sft::Mode::Grade)
                    .map_err(named(&config))?;
                print!("{}", report.table());
                if let Some(sft) = &cfg.sft {
                    print!("{}", coretech::sft::stats::stats_of_dir(&sft.output)?);
                }
            }
            (Some(SftCmd::Stats { dir }), _) => print!("{}", coretech::sft::stats::stats_of_dir(&dir)?),
            (None, Some(config)) => {
                let opts = RunOptions { strict: args.strict, force: args.force, ..Default::default() };
                let report = pipeline::run_sft_with(&load(&config)?, &opts, coretech::sft::Mode::Build).map_err(named(&config))?;
                print!("{}", report.table());
            }
            (None, None) => anyhow::bail!("usage: coretech sft <config> | coretech sft grade <config> | coretech sft stats <dir>"),
        },
        Cmd::Run { config, task } => {
            let cfg = load(&config)?;
            for report in pipeline::run(&cfg, &task.options()?).map_err(named(&config))? {
                println!("== {} ==", report.stage);
                print!("{}", report.table());
            }
        }
        Cmd::Export { what: ExportCmd::Llamafactory { config, output, format, prefix } } => {
            let cfg = load(&config)?;
            let sft = cfg.sft.as_ref().ok_or_else(|| anyhow::anyhow!("{}: no [sft] section", config.display()))?;
            let files = coretech::sft::export::llamafactory(&sft.output, &sft.template.default_system, &output, format, &prefix)?;
            for f in &files {
                println!("{}\t{}\t{} examples", f.name, output.join(&f.file).display(), f.examples);
            }
            println!("{}", output.join(coretech::sft::export::DATASET_INFO).display());
        }
        Cmd::Batches { stages, batch_size, seed, epochs, rank, world_size, replay, drop_last, limit, state } => {
            let cfg = coretech::shard::LoaderConfig {
                stages: stages.into_iter().map(|d| vec![d]).collect(),
                batch_size,
                seed,
                epochs,
                rank,
                world_size,
                prefetch: 0,
                replay,
                drop_last,
            };
            let state: Option<serde_json::Value> = state.map(|s| serde_json::from_str(&s)).transpose().context("--state is not JSON")?;
            coretech::shard::reader::write_batches(cfg, state.as_ref(), limit, &mut std::io::stdout().lock())?;
        }
        Cmd::Merge { dir } => {
            let m = pipeline::merge::merge(&dir)?;
            println!("{}: {} shards, {} rows", dir.display(), m.shards.len(), m.rows());
        }
        Cmd::Chat { checkpoint, system, prompt, gen } => {
            let mut ckpt = gen.load(&checkpoint)?;
            let mut session = infer::chat::ChatSession::new(system, gen.generation());
            match prompt {
                Some(p) => {
                    let mut out = std::io::stdout().lock();
                    let answer = session.ask(&mut ckpt, &p, |t| {
                        out.write_all(t.as_bytes())?;
                        out.flush()
                    })?;
                    writeln!(out)?;
                    if answer.stop != infer::StopReason::StopToken {
                        eprintln!("(stopped: {:?} after {} tokens)", answer.stop, answer.tokens.len());
                    }
                }
                None => infer::chat::repl(&mut ckpt, &mut session, std::io::stdin().lock(), std::io::stdout(), std::io::stderr())?,
            }
        }
        Cmd::Eval { checkpoint, sft_test, limit, report, system, tech_threshold, gen } => {
            let cfg = infer::eval::EvalConfig { generation: gen.generation(), system, limit, tech_match_threshold: tech_threshold };
            cfg.validate()?;
            let mut ckpt = gen.load(&checkpoint)?;
            let started = std::time::Instant::now();
            let rep = infer::eval::run(&mut ckpt, &sft_test, &cfg, |r| {
                eprintln!("[{}] {:?}: {} tokens, {:?}", r.index, r.task, r.generated_tokens, r.stop);
            })?;
            let secs = started.elapsed().as_secs_f64();
            print!("{}", rep.summary());
            println!("{:.1} s, {:.1} generated tokens/s", secs, rep.aggregate.generated_tokens as f64 / secs.max(1e-9));
            if let Some(path) = report {
                rep.write(&path)?;
                println!("report: {}", path.display());
            }
        }
        Cmd::Train { config, name, device } => {
            let cfg = load(&config)?;
            let name = match name {
                Some(n) => n,
                None if cfg.train.len() == 1 => cfg.train.keys().next().cloned().unwrap_or_default(),
                None => anyhow::bail!(
                    "{} has {} [train.<name>] sections: pick one with --name ({})",
                    config.display(),
                    cfg.train.len(),
                    cfg.train.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            };
            let mut tc = cfg.train.get(&name).cloned().with_context(|| format!("{} has no [train.{name}] section", config.display()))?;
            if let Some(d) = device {
                tc.device = d;
            }
            // distributed.mode != none: rank and world size from torchrun/Slurm variables.
            let summary = coretech::train::dist::run(&tc)
                .map_err(|e| named(&config)(coretech::config::in_section(e.into(), &Stage::Train(name.clone()).section())))?;
            println!("{}", serde_json::to_string_pretty(&summary)?);
        }
        Cmd::Logits { checkpoint, ids, out } => {
            let n = coretech::train::logits::write_logits(&checkpoint, &ids, &out)?;
            println!("{} logits ({} tokens) written to {}", n, ids.len(), out.display());
        }
        Cmd::Plan { model, batch, seq, accum, dtype, device_gib, used_gib, recompute, ce_chunk } => {
            let dtype: coretech::train::config::ComputeDtype = dtype.parse()?;
            let p = coretech::train::plan::plan_for_card(
                &model,
                batch,
                seq,
                accum,
                dtype,
                device_gib,
                used_gib,
                recompute.parse()?,
                ce_chunk.parse()?,
            )?;
            println!("{p}");
        }
        Cmd::Selftest { device, gpu, seed } => {
            let tc = coretech::train::TrainConfig { device, gpu, ..Default::default() };
            let seed = seed.unwrap_or_else(|| {
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
            });
            let r = coretech::train::selftest::run(&tc.device()?, seed)?;
            for c in &r.checks {
                let status = if c.pass { "ok" } else { "FAIL" };
                println!(
                    "{:<44} {:>14} rel_err {:>10.3e} max_abs {:>10.3e} tol {:>8.1e}  {status}",
                    c.name,
                    format!("{:?}", c.shape),
                    c.rel_err,
                    c.max_abs,
                    c.tol
                );
            }
            println!("train losses {}: {:?}", r.device, r.train_losses_device);
            println!("train losses cpu: {:?}", r.train_losses_cpu);
            println!("SELFTEST {}", serde_json::to_string(&r)?);
            println!("selftest: {} passed, {} failed", r.passed, r.failed);
            if r.failed > 0 {
                anyhow::bail!("selftest: {} of {} checks failed", r.failed, r.passed + r.failed);
            }
        }
        Cmd::Inspect { path, rows, reason } => {
            print!("{}", coretech::inspect::inspect_with(&path, rows, reason.as_deref())?);
        }
    }
    Ok(())
}
