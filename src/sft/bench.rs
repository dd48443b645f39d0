//! `coretech bench grade`: model-grading throughput. Reads SFT inputs (the fixture set by
//! default) or a built `examples.parquet`, templates and tokenizes each example as the SFT stage
//! does (ChatML, the default system prompt, LLaMA-Factory `cutoff_len`), and scores it with a
//! checkpoint or a freshly initialised model of a preset through the grader's own [`Scorer`]:
//! examples stream from the input into the batches, one record in memory at a time. Prints
//! examples/s and scored tokens/s over the forward passes, with threads, device, dtype, CPU
//! seconds and the machine's load average (the figures of a shared machine need them).

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

use super::example::{Example, Message};
use super::grade_model::{Grader, GraderSettings, ScoreItem, Scorer};
use super::read::{read_input_with, Outcome, ReadContext};
use super::template::{render, tokenize, truncate, Tokenized, DEFAULT_SYSTEM_PROMPT, END_OF_TEXT, IM_START};
use super::tokenizer::SftTokenizer;
use crate::error::{Error, Result};
use crate::train::config::{ComputeDtype, DeviceKind};

/// The fixture SFT set (the demo's SFT inputs), graded when no input is given.
pub const FIXTURE_SET: [&str; 6] = [
    "fixtures/data/sft/GovPatent-SFT_QA_IPC.jsonl",
    "fixtures/data/sft/GovPatent-SFT_QA_Tech.jsonl",
    "fixtures/data/sft/Paper-SFT_QA_IPC.jsonl",
    "fixtures/data/sft/Paper-SFT_QA_Tech.jsonl",
    "fixtures/data/sft/GovPatent-SFT_raw_data.csv",
    "fixtures/data/sft/flagai_aquila_convo_samples.sharegpt.jsonl",
];

/// What `coretech bench grade` grades, and how.
#[derive(Debug, Clone)]
pub struct GradeBenchConfig {
    /// SFT inputs (files or LLaMA-Factory folders, as `[[sft.inputs]]` paths) or built
    /// `examples.parquet` files (their `system` and `messages` columns are templated again).
    pub inputs: Vec<PathBuf>,
    /// Examples to grade at most (the first ones with answer tokens; 0: all).
    pub limit: usize,
    /// The tokenizer.
    pub tokenizer: PathBuf,
    /// A preset name (seeded HF init) or a weights / training run directory.
    pub model: String,
    /// Rows per forward.
    pub batch_size: usize,
    /// Tokens per row (raised to `cutoff_len` plus the assistant header when shorter).
    pub row_len: usize,
    /// LLaMA-Factory cutoff applied to each example.
    pub cutoff_len: usize,
    /// Device.
    pub device: DeviceKind,
    /// CUDA ordinal.
    pub gpu: usize,
    /// Compute dtype.
    pub dtype: ComputeDtype,
    /// Counted tokens per LM-head chunk.
    pub ce_chunk: usize,
}

/// The measurement.
#[derive(Debug, Clone, Serialize)]
pub struct GradeBenchResult {
    /// The model (weights directory or `preset:NAME`).
    pub model: String,
    /// `cpu` or `cuda`.
    pub device: String,
    /// Compute dtype.
    pub dtype: String,
    /// CPU threads candle's kernels use.
    pub threads: usize,
    /// Examples scored.
    pub examples: usize,
    /// Records read but not graded (filtered, unreadable, or no answer token after the cutoff).
    pub skipped: usize,
    /// Rows per forward, tokens per row, template cutoff.
    pub batch_size: usize,
    /// Tokens per row.
    pub row_len: usize,
    /// Template cutoff.
    pub cutoff_len: usize,
    /// Batches (forward passes).
    pub batches: usize,
    /// Real tokens through the model (each example whole, plus each answer after its header).
    pub tokens: u64,
    /// Row positions through the model, padding included (rows × row length).
    pub positions: u64,
    /// Answer tokens scored through the LM head (each twice: with and without its prompt).
    pub scored_tokens: u64,
    /// Seconds inside the forward passes (model and LM head).
    pub forward_s: f64,
    /// Wall seconds from the first record read to the last score (reading and tokenizing too).
    pub wall_s: f64,
    /// Process CPU seconds inside the forward passes, all threads together (Linux).
    pub cpu_s: Option<f64>,
    /// Examples per forward second.
    pub examples_per_s: f64,
    /// Scored answer tokens per forward second.
    pub scored_tokens_per_s: f64,
    /// Real tokens per forward second.
    pub tokens_per_s: f64,
    /// Examples per CPU second (all threads together).
    pub examples_per_cpu_s: Option<f64>,
    /// One-minute load average when the scoring started and when it ended (Linux).
    pub load_1m: Option<(f64, f64)>,
}

/// The one-minute load average (`/proc/loadavg`; `None` elsewhere).
fn load_1m() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg").ok()?.split_whitespace().next()?.parse().ok()
}

/// Calls `each` with every example of an `examples.parquet`, one record batch in memory at a
/// time; stops when `each` returns false.
fn read_parquet(path: &Path, each: &mut dyn FnMut(Example) -> Result<bool>) -> Result<()> {
    use arrow::array::AsArray;
    let f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let shard_err = |e: &dyn std::fmt::Display| Error::Shard { path: path.to_path_buf(), message: e.to_string() };
    let reader =
        parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(f).and_then(|r| r.build()).map_err(|e| shard_err(&e))?;
    let mut row = 0usize;
    for batch in reader {
        let batch = batch.map_err(|e| shard_err(&e))?;
        let col =
            |n: &str| batch.column_by_name(n).map(|c| c.as_string::<i32>().clone()).ok_or_else(|| shard_err(&format!("no column {n:?}")));
        let (system, messages) = (col("system")?, col("messages")?);
        for i in 0..batch.num_rows() {
            let msgs: Vec<Message> =
                serde_json::from_str(messages.value(i)).map_err(|e| shard_err(&format!("row {}: messages: {e}", row + i)))?;
            let sys = (!system.value(i).is_empty()).then(|| system.value(i).to_string());
            if !each(Example::from_turns(sys, msgs))? {
                return Ok(());
            }
        }
        row += batch.num_rows();
    }
    Ok(())
}

/// Runs the benchmark: loads the model, then streams the inputs' examples into the scorer.
pub fn bench_grade(b: &GradeBenchConfig) -> Result<GradeBenchResult> {
    if b.inputs.is_empty() {
        return Err(Error::Other("bench grade: no input".into()));
    }
    let tok = SftTokenizer::load(&b.tokenizer)?;
    let g = if Path::new(&b.model).exists() {
        Grader::load(Path::new(&b.model), b.device, b.gpu, b.dtype)?
    } else {
        Grader::from_preset(&b.model, 0, b.device, b.gpu, b.dtype)?
    };
    let header = tok.encode(&format!("{IM_START}assistant\n"))?.ids;
    let pad = tok.token_id(END_OF_TEXT).unwrap_or(0);
    // Every segment fits: an example is at most `cutoff_len` tokens, an answer alone at most
    // that after the header.
    let s = GraderSettings {
        batch_size: b.batch_size,
        row_len: b.row_len.max(b.cutoff_len + header.len()),
        dtype: b.dtype,
        ce_chunk: b.ce_chunk,
    };
    let tasks = super::task::TaskResolver::new(&Default::default())?;
    let cx = ReadContext {
        tasks: &tasks,
        trailing_user_turn: super::config::ValidateConfig::default().trailing_user_turn,
        base: Path::new("."),
    };
    let load0 = load_1m();
    let t0 = Instant::now();
    let mut scorer = Scorer::new(&g, &header, &s, pad)?;
    let (mut examples, mut skipped) = (0usize, 0usize);
    let limit = if b.limit == 0 { usize::MAX } else { b.limit };
    // Templates, tokenizes and scores one example; false once the limit is reached.
    let mut grade_one = |ex: Example| -> Result<bool> {
        if examples >= limit {
            return Ok(false);
        }
        let mut t: Tokenized = tokenize(&render(&ex, DEFAULT_SYSTEM_PROMPT), &tok)?;
        truncate(&mut t, b.cutoff_len);
        if !t.loss_mask.contains(&1) {
            skipped += 1;
            return Ok(true);
        }
        let item = ScoreItem { ids: &t.input_ids, mask: &t.loss_mask };
        g.check_fits(std::slice::from_ref(&item), &header)?;
        scorer.push(&item)?;
        examples += 1;
        Ok(examples < limit)
    };
    let (mut filtered, mut reached) = (0usize, false);
    for input in &b.inputs {
        if input.extension().is_some_and(|e| e == "parquet") {
            read_parquet(input, &mut |ex| {
                reached = !grade_one(ex)?;
                Ok(!reached)
            })?;
        } else {
            let mut datasets = Default::default();
            // The reader has no early stop: past the limit the records are read and dropped.
            read_input_with(&super::config::SftInput::new(input.clone()), &cx, &mut datasets, &mut |o| {
                match o {
                    Outcome::Example(ex) if !reached => reached = !grade_one(*ex)?,
                    Outcome::Filtered { .. } | Outcome::Error { .. } if !reached => filtered += 1,
                    _ => {}
                }
                Ok(())
            })?;
        }
        if reached {
            break;
        }
    }
    skipped += filtered;
    let (scores, run) = scorer.finish()?;
    let wall_s = t0.elapsed().as_secs_f64();
    let load1 = load_1m();
    if scores.is_empty() {
        return Err(Error::Other("bench grade: no example with answer tokens in the inputs".into()));
    }
    let scored_tokens = 2 * scores.iter().map(|s| s.tokens as u64).sum::<u64>();
    let per_s = |n: f64| n / run.forward_s.max(1e-9);
    Ok(GradeBenchResult {
        model: g.dir.display().to_string(),
        device: format!("{:?}", b.device).to_lowercase(),
        dtype: format!("{:?}", b.dtype).to_lowercase(),
        threads: candle_core::utils::get_num_threads(),
        examples,
        skipped,
        batch_size: s.batch_size,
        row_len: s.row_len,
        cutoff_len: b.cutoff_len,
        batches: run.batches,
        tokens: run.tokens_real,
        positions: run.tokens_forward,
        scored_tokens,
        forward_s: run.forward_s,
        wall_s,
        cpu_s: run.forward_cpu_s,
        examples_per_s: per_s(examples as f64),
        scored_tokens_per_s: per_s(scored_tokens as f64),
        tokens_per_s: per_s(run.tokens_real as f64),
        examples_per_cpu_s: run.forward_cpu_s.filter(|c| *c > 0.0).map(|c| examples as f64 / c),
        load_1m: load0.zip(load1),
    })
}
