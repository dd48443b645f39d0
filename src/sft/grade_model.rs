//! Model-based difficulty: the answer loss of each example under a checkpoint, with and without
//! its prompt, and their ratio, the Instruction-Following Difficulty of Li et al. ("From
//! Quantity to Quality", NAACL 2024; a small model's IFD ranks data as a large one's does:
//! "Superfiltering", ACL 2024).
//!
//! For one example (its token ids and loss mask exactly as the SFT shards carry them):
//! * `cond_loss`: mean cross-entropy of the answer tokens (loss mask 1) given everything
//!   before them — system prompt, history, question: the example's training loss;
//! * `answer_loss`: the same tokens, each answer preceded only by its assistant header
//!   (`<|im_start|>assistant\n`);
//! * `ifd = cond_loss / answer_loss` (> 1: the prompt does not help the model).
//!
//! Multi-turn examples: every answer counts, so both losses are means over all answer tokens
//! of all turns (a token-weighted mean over turns), and `cond_loss` equals the trainer's loss
//! on a one-example batch.
//!
//! Speed: no gradients; each example contributes segments (its full text, then each answer
//! alone), packed in order into rows of the SFT row length, `batch_size` rows per forward;
//! attention never crosses a segment and positions restart in each, so packing does not change
//! the numbers. Only the answer positions go through the LM head (chunked, as the trainer's
//! cross-entropy does).
//!
//! Resume and determinism: the batch plan is a pure function of the examples and the settings;
//! after each batch its scores are appended to `model-scores.jsonl` (first line: the
//! fingerprint of model weights, settings and every example's tokens) and flushed, so a killed
//! run continues after its last complete line and gives the same values bit for bit. A finished
//! file serves later runs with the same fingerprint as a cache.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::shard::Batch;
use crate::train::config::{ComputeDtype, DeviceKind};
use crate::train::model::{param_specs, Qwen2};
use crate::train::ops::{self, CeTargets, Ops};
use crate::train::{checkpoint, Qwen2Config};

/// The progress and cache file of model grading, in the SFT output directory.
pub const SCORES_FILE: &str = "model-scores.jsonl";

/// Format of [`SCORES_FILE`]'s first line.
const SCORES_FORMAT: u32 = 1;

/// Losses of one example.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ModelScore {
    /// Mean cross-entropy of the answer tokens given the full prompt.
    pub cond_loss: f64,
    /// Mean cross-entropy of the same tokens after the assistant header alone.
    pub answer_loss: f64,
    /// Answer tokens scored (loss-mask 1 tokens that have a predecessor in their segment).
    pub tokens: u32,
}

impl ModelScore {
    /// Instruction-Following Difficulty: `cond_loss / answer_loss`.
    pub fn ifd(&self) -> f64 {
        self.cond_loss / self.answer_loss
    }
}

/// One example as the grader sees it: the SFT shards' token ids and loss mask.
#[derive(Debug, Clone, Copy)]
pub struct ScoreItem<'a> {
    /// Token ids of the whole example (after truncation).
    pub ids: &'a [u32],
    /// 1 on answer tokens.
    pub mask: &'a [u8],
}

/// Settings of a grading run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GraderSettings {
    /// Rows per forward.
    pub batch_size: usize,
    /// Tokens per row (at least the longest example).
    pub row_len: usize,
    /// Compute dtype.
    pub dtype: ComputeDtype,
    /// Counted tokens per LM-head chunk.
    pub ce_chunk: usize,
}

/// The weights directory `path` names (itself, or a run's newest complete checkpoint) and the
/// hash of its `config.json` and weight files (names, sizes, contents).
pub fn weights_fingerprint(path: &Path) -> Result<(PathBuf, String)> {
    let dir = checkpoint::weights_dir(path).map_err(train_err)?;
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map_err(|e| Error::io(&dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let n = p.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
            n == "config.json" || (n.starts_with("model") && n.contains(".safetensors"))
        })
        .collect();
    files.sort();
    let names: Vec<String> = files.iter().map(|p| p.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default()).collect();
    let digests: Vec<(String, u64, String)> =
        names.into_iter().zip(crate::core::fingerprint::digest_files(&files)?).map(|(n, d)| (n, d.bytes, d.xxh3)).collect();
    Ok((dir, crate::core::hash_of(&digests)))
}

/// A loaded checkpoint ready to score.
pub struct Grader {
    model: Qwen2,
    ops: Box<dyn Ops>,
    head: usize,
    /// The weights directory.
    pub dir: PathBuf,
    /// Fingerprint of its config and weight files.
    pub fingerprint: String,
}

fn train_err(e: crate::train::TrainError) -> Error {
    Error::Other(format!("model grading: {e}"))
}

impl Grader {
    /// Loads `path` (a weights directory, or a training run directory: its newest complete
    /// checkpoint) on `device` in `dtype`.
    pub fn load(path: &Path, device: DeviceKind, gpu: usize, dtype: ComputeDtype) -> Result<Grader> {
        let dir = checkpoint::weights_dir(path).map_err(train_err)?;
        let cfg = Qwen2Config::from_hf_file(&dir.join("config.json")).map_err(train_err)?;
        let dev = match device {
            DeviceKind::Cpu => Device::Cpu,
            DeviceKind::Cuda => Device::new_cuda(gpu).map_err(|e| Error::Other(format!("model grading: cuda:{gpu}: {e}")))?,
        };
        let specs = param_specs(&cfg);
        let params = checkpoint::load_weights(&dir, &specs, &dev).map_err(train_err)?;
        let model = Qwen2::new(&cfg, dtype.dtype(), &params, &dev).map_err(train_err)?;
        let head = specs.iter().position(|s| s.name == "lm_head.weight").unwrap_or(0);
        let (_, fingerprint) = weights_fingerprint(&dir)?;
        Ok(Grader { ops: ops::for_device(&dev), model, head, dir, fingerprint })
    }

    /// A seeded HF-init model of a preset (`tiny`, `qwen2.5-0.5b`, …): benchmarks.
    pub fn from_preset(name: &str, seed: u64, device: DeviceKind, gpu: usize, dtype: ComputeDtype) -> Result<Grader> {
        let cfg = Qwen2Config::preset(name).map_err(train_err)?;
        let dev = match device {
            DeviceKind::Cpu => Device::Cpu,
            DeviceKind::Cuda => Device::new_cuda(gpu).map_err(|e| Error::Other(format!("model grading: cuda:{gpu}: {e}")))?,
        };
        let params = crate::train::model::init_params(&cfg, seed, DType::F32, &dev).map_err(train_err)?;
        let model = Qwen2::new(&cfg, dtype.dtype(), &params, &dev).map_err(train_err)?;
        let head = param_specs(&cfg).iter().position(|s| s.name == "lm_head.weight").unwrap_or(0);
        let fingerprint = crate::core::hash_of(&serde_json::json!({ "preset": name, "seed": seed }));
        Ok(Grader { ops: ops::for_device(&dev), model, head, dir: PathBuf::from(format!("preset:{name}")), fingerprint })
    }

    /// The model's vocabulary size.
    pub fn vocab_size(&self) -> usize {
        self.model.cfg.vocab_size
    }

    /// Checks that the model can score `items` (every id in its vocabulary, every segment within
    /// its positions) before any work: an error names `config.json` and the limit.
    pub fn check_fits(&self, items: &[ScoreItem], header: &[u32]) -> Result<()> {
        let cfg = &self.model.cfg;
        let config = self.dir.join("config.json");
        let max_id = items.iter().flat_map(|it| it.ids.iter()).chain(header).copied().max().unwrap_or(0);
        if max_id as usize >= cfg.vocab_size {
            return Err(Error::Other(format!(
                "{}: vocab_size {} is smaller than the tokenizer's ids (up to {max_id}): a checkpoint of another tokenizer",
                config.display(),
                cfg.vocab_size
            )));
        }
        let longest = items.iter().map(|it| longest_segment(it, header.len())).max().unwrap_or(0);
        if longest > cfg.max_position_embeddings {
            return Err(Error::Other(format!(
                "{}: max_position_embeddings {} is shorter than the longest example ({longest} tokens)",
                config.display(),
                cfg.max_position_embeddings
            )));
        }
        Ok(())
    }

    /// Sum and count of the cross-entropy of each segment's counted predictions. `spans` are
    /// the segments' flattened `(start, len)` in `b`, in order. Each segment's hidden rows go
    /// through the trainer's own LM-head cross-entropy (`Ops::cross_entropy`, forward only:
    /// fused and chunked on CPU, never all logits at once), so a segment's sum is exactly what
    /// the trainer would add for it.
    fn segment_losses(&self, b: &Batch, spans: &[(usize, usize)], ce_chunk: usize) -> Result<Vec<(f64, u32)>> {
        let tensor_err = |e: candle_core::Error| Error::Other(format!("model grading: tensor: {e}"));
        let inp = self.model.inputs(b).map_err(train_err)?;
        let h = self.model.hidden(self.ops.as_ref(), &inp).map_err(train_err)?;
        let w = &self.model.params[self.head];
        let t = &inp.targets;
        let (rows, targets) = if t.count == 0 {
            (Vec::new(), Vec::new())
        } else {
            (t.rows.to_vec1::<u32>().map_err(tensor_err)?, t.targets.to_vec1::<u32>().map_err(tensor_err)?)
        };
        let dev = h.device().clone();
        let mut out = Vec::with_capacity(spans.len());
        let mut k = 0; // next counted prediction; positions ascend, so do the segments
        for &(start, len) in spans {
            // Position p predicts p + 1: both lie in the segment.
            let first = k;
            while k < rows.len() && (rows[k] as usize) + 1 < start + len {
                k += 1;
            }
            let n = k - first;
            if n == 0 {
                out.push((0.0, 0));
                continue;
            }
            let pos = Tensor::from_slice(&rows[first..k], n, &dev).map_err(tensor_err)?;
            let hs = h.index_select(&pos, 0).map_err(tensor_err)?;
            let ct = CeTargets {
                rows: Tensor::arange(0u32, n as u32, &dev).map_err(tensor_err)?,
                targets: Tensor::from_slice(&targets[first..k], n, &dev).map_err(tensor_err)?,
                count: n,
            };
            let ce = self.ops.cross_entropy(&hs, w, &ct, None, ce_chunk.max(1), None).map_err(train_err)?;
            let sum = ce.loss_sum.to_dtype(DType::F64).and_then(|s| s.to_scalar::<f64>()).map_err(tensor_err)?;
            out.push((sum, n as u32));
        }
        Ok(out)
    }
}

/// Tokens of the longest segment of `item`: the whole example or one answer after the header.
fn longest_segment(item: &ScoreItem, header: usize) -> usize {
    let longest_answer = item.mask.split(|&m| m != 1).map(|run| run.len()).max().unwrap_or(0);
    item.ids.len().max(header + longest_answer)
}

/// One packed segment: its tokens and mask, the example it belongs to, and whether it is the
/// full example (`cond`) or an answer alone.
#[derive(Debug, Clone, PartialEq)]
struct Segment {
    ids: Vec<u32>,
    mask: Vec<u8>,
    example: usize,
    cond: bool,
}

/// The segments of one example: the whole example, then each answer (each run of loss-mask 1
/// tokens) after `header`.
fn segments(i: usize, item: &ScoreItem, header: &[u32]) -> Vec<Segment> {
    let mut out = vec![Segment { ids: item.ids.to_vec(), mask: item.mask.to_vec(), example: i, cond: true }];
    let n = item.ids.len();
    let mut t = 0;
    while t < n {
        if item.mask[t] == 1 {
            let s = t;
            while t < n && item.mask[t] == 1 {
                t += 1;
            }
            let mut ids = header.to_vec();
            ids.extend_from_slice(&item.ids[s..t]);
            let mut mask = vec![0u8; header.len()];
            mask.extend(std::iter::repeat_n(1u8, t - s));
            out.push(Segment { ids, mask, example: i, cond: false });
        } else {
            t += 1;
        }
    }
    out
}

/// A batch of the plan: rows of segments, and the examples it completes.
#[derive(Debug, Clone, PartialEq)]
struct PlannedBatch {
    rows: Vec<Vec<Segment>>,
    examples: std::ops::Range<usize>,
}

/// Packs the examples' segments in order into rows of `row_len` tokens (next fit), closing a
/// batch when the next example would need a row beyond `batch_size`: every example lies in one
/// batch.
fn plan(items: &[ScoreItem], header: &[u32], s: &GraderSettings) -> Result<Vec<PlannedBatch>> {
    let mut batches = Vec::new();
    let mut rows: Vec<Vec<Segment>> = Vec::new();
    let mut used = 0usize; // tokens in the last row
    let mut first = 0;
    for (i, item) in items.iter().enumerate() {
        let segs = segments(i, item, header);
        // Rows this example needs when appended to the current batch.
        let mut sim_rows = rows.len();
        let mut sim_used = used;
        for sg in &segs {
            if sg.ids.len() > s.row_len {
                return Err(Error::Other(format!(
                    "model grading: example {i} has a segment of {} tokens, longer than the row ({})",
                    sg.ids.len(),
                    s.row_len
                )));
            }
            if sim_rows == 0 || sim_used + sg.ids.len() > s.row_len {
                sim_rows += 1;
                sim_used = 0;
            }
            sim_used += sg.ids.len();
        }
        if sim_rows > s.batch_size && !rows.is_empty() {
            batches.push(PlannedBatch { rows: std::mem::take(&mut rows), examples: first..i });
            first = i;
            used = 0;
        }
        for sg in segs {
            if rows.is_empty() || used + sg.ids.len() > s.row_len {
                rows.push(Vec::new());
                used = 0;
            }
            used += sg.ids.len();
            rows.last_mut().expect("a row").push(sg);
        }
    }
    if !rows.is_empty() {
        batches.push(PlannedBatch { rows, examples: first..items.len() });
    }
    Ok(batches)
}

/// Runs one planned batch; returns the scores of its examples.
fn run_batch(g: &Grader, pb: &PlannedBatch, s: &GraderSettings, pad: u32) -> Result<Vec<ModelScore>> {
    let rows = pb.rows.len();
    let len = s.row_len;
    let mut b = Batch { batch: rows, seq_len: len, ..Default::default() };
    // Each segment's flattened span, and its (example, cond).
    let mut spans = Vec::new();
    let mut owners = Vec::new();
    for (r, row) in pb.rows.iter().enumerate() {
        let mut seg_lens = Vec::new();
        let mut at = r * len;
        for sg in row {
            b.input_ids.extend_from_slice(&sg.ids);
            b.loss_mask.extend_from_slice(&sg.mask);
            spans.push((at, sg.ids.len()));
            owners.push((sg.example, sg.cond));
            at += sg.ids.len();
            seg_lens.push(sg.ids.len() as u32);
        }
        let fill = len - seg_lens.iter().sum::<u32>() as usize;
        b.input_ids.extend(std::iter::repeat_n(pad, fill));
        b.loss_mask.extend(std::iter::repeat_n(0u8, fill));
        Batch::row_layout(&seg_lens, len, &mut b.position_ids, &mut b.segment_ids);
    }
    let losses = g.segment_losses(&b, &spans, s.ce_chunk)?;
    let n = pb.examples.len();
    let (mut cond, mut ans) = (vec![(0f64, 0u32); n], vec![(0f64, 0u32); n]);
    for (&(ex, is_cond), &(sum, count)) in owners.iter().zip(&losses) {
        let acc = if is_cond { &mut cond[ex - pb.examples.start] } else { &mut ans[ex - pb.examples.start] };
        acc.0 += sum;
        acc.1 += count;
    }
    Ok(cond
        .iter()
        .zip(&ans)
        .map(|(c, a)| ModelScore { cond_loss: c.0 / c.1.max(1) as f64, answer_loss: a.0 / a.1.max(1) as f64, tokens: c.1 })
        .collect())
}

/// One line of [`SCORES_FILE`] after the header.
#[derive(Debug, Serialize, Deserialize)]
struct BatchLine {
    batch: usize,
    first: usize,
    scores: Vec<ModelScore>,
}

/// The first line of [`SCORES_FILE`].
#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Header {
    format: u32,
    fingerprint: String,
}

/// The fingerprint of a grading run: model files, settings, header and every example's tokens.
fn fingerprint(g: &Grader, items: &[ScoreItem], header: &[u32], s: &GraderSettings) -> String {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    for it in items {
        h.update(&(it.ids.len() as u64).to_le_bytes());
        for id in it.ids {
            h.update(&id.to_le_bytes());
        }
        h.update(it.mask);
    }
    crate::core::hash_of(&serde_json::json!({
        "model": g.fingerprint,
        "settings": s,
        "header": header,
        "examples": items.len(),
        "tokens": format!("{:032x}", h.digest128()),
    }))
}

/// Reads the complete batch lines of a progress file written under `fp`; a file of another
/// fingerprint or format counts as absent. Returns the scores so far and the byte length of
/// the valid part (a torn last line is cut there).
fn read_progress(path: &Path, fp: &str) -> Result<(Vec<ModelScore>, usize, u64)> {
    let f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), 0, 0)),
        Err(e) => return Err(Error::io(path, e)),
    };
    let mut r = std::io::BufReader::new(f);
    let mut line = String::new();
    let mut valid = 0u64;
    r.read_line(&mut line).map_err(|e| Error::io(path, e))?;
    let ok = line.ends_with('\n')
        && serde_json::from_str::<Header>(&line).is_ok_and(|h| h == Header { format: SCORES_FORMAT, fingerprint: fp.to_string() });
    if !ok {
        return Ok((Vec::new(), 0, 0));
    }
    valid += line.len() as u64;
    let mut scores = Vec::new();
    let mut batches = 0;
    loop {
        line.clear();
        let n = r.read_line(&mut line).map_err(|e| Error::io(path, e))?;
        if n == 0 || !line.ends_with('\n') {
            break;
        }
        match serde_json::from_str::<BatchLine>(&line) {
            Ok(b) if b.batch == batches && b.first == scores.len() => {
                scores.extend(b.scores);
                batches += 1;
                valid += n as u64;
            }
            _ => break,
        }
    }
    Ok((scores, batches, valid))
}

/// The `coretech bench grade` measurement.
#[derive(Debug, Clone, Serialize)]
pub struct BenchResult {
    /// The model (weights directory or `preset:NAME`).
    pub model: String,
    /// `cpu` or `cuda`.
    pub device: String,
    /// Worker threads (rayon, which candle's CPU matmuls use too).
    pub threads: usize,
    /// Examples scored.
    pub examples: usize,
    /// Real tokens through the model (each example whole, plus each answer after its header).
    pub tokens: u64,
    /// Row positions through the model, padding included (batches × rows × row length).
    pub positions: u64,
    /// Answer tokens scored (each counted twice: with and without its prompt).
    pub answer_tokens: u64,
    /// Batches.
    pub batches: usize,
    /// Wall seconds of the scoring (no loading).
    pub seconds: f64,
    /// CPU seconds of the process during scoring (Linux; null elsewhere).
    pub cpu_seconds: Option<f64>,
    /// Examples per wall second.
    pub examples_per_s: f64,
    /// Real tokens per wall second.
    pub tokens_per_s: f64,
}

/// Scores `items` with `g` (no progress file) and measures the speed.
pub fn bench(g: &Grader, items: &[ScoreItem], header: &[u32], s: &GraderSettings, pad: u32) -> Result<BenchResult> {
    let tokens: u64 = items.iter().map(|it| segments(0, it, header).iter().map(|sg| sg.ids.len() as u64).sum::<u64>()).sum();
    let cpu0 = crate::train::metrics::process_cpu_seconds();
    let (scores, run) = score_all(g, items, header, s, pad, None)?;
    let cpu = match (cpu0, crate::train::metrics::process_cpu_seconds()) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    Ok(BenchResult {
        model: g.dir.display().to_string(),
        device: if g.model.device().is_cpu() { "cpu".into() } else { "cuda".into() },
        threads: rayon::current_num_threads(),
        examples: items.len(),
        tokens,
        positions: run.tokens_forward,
        answer_tokens: 2 * scores.iter().map(|s| s.tokens as u64).sum::<u64>(),
        batches: run.batches,
        seconds: run.elapsed_s,
        cpu_seconds: cpu,
        examples_per_s: items.len() as f64 / run.elapsed_s.max(1e-9),
        tokens_per_s: tokens as f64 / run.elapsed_s.max(1e-9),
    })
}

/// What `coretech bench grade` grades.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// An `examples.parquet` (its `system` and `messages` columns are templated again).
    pub examples: PathBuf,
    /// The tokenizer.
    pub tokenizer: PathBuf,
    /// A preset name (seeded init) or a weights / run directory.
    pub model: String,
    /// Rows per forward.
    pub batch_size: usize,
    /// Row length.
    pub row_len: usize,
    /// LLaMA-Factory cutoff applied to each example.
    pub cutoff_len: usize,
    /// Device.
    pub device: DeviceKind,
    /// Compute dtype.
    pub dtype: ComputeDtype,
}

/// `coretech bench grade`: templates and tokenizes the examples of an `examples.parquet` (an
/// empty `system` means the default prompt), loads the model, scores them all.
pub fn bench_examples(b: &BenchConfig) -> Result<BenchResult> {
    use super::template::{render, tokenize, truncate, DEFAULT_SYSTEM_PROMPT, END_OF_TEXT, IM_START};
    use arrow::array::AsArray;
    let f = std::fs::File::open(&b.examples).map_err(|e| Error::io(&b.examples, e))?;
    let shard_err = |e: &dyn std::fmt::Display| Error::Shard { path: b.examples.clone(), message: e.to_string() };
    let reader =
        parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(f).and_then(|r| r.build()).map_err(|e| shard_err(&e))?;
    let tok = super::tokenizer::SftTokenizer::load(&b.tokenizer)?;
    let mut toks = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| shard_err(&e))?;
        let col =
            |n: &str| batch.column_by_name(n).map(|c| c.as_string::<i32>().clone()).ok_or_else(|| shard_err(&format!("no column {n:?}")));
        let (system, messages) = (col("system")?, col("messages")?);
        for i in 0..batch.num_rows() {
            let msgs: Vec<super::example::Message> =
                serde_json::from_str(messages.value(i)).map_err(|e| shard_err(&format!("row {i}: messages: {e}")))?;
            let ex = super::example::Example {
                id: String::new(),
                dataset: String::new(),
                position: Default::default(),
                ordinal: 0,
                task: String::new(),
                task_from: String::new(),
                split: super::example::Split::Train,
                system: (!system.value(i).is_empty()).then(|| system.value(i).to_string()),
                messages: msgs,
            };
            let mut t = tokenize(&render(&ex, DEFAULT_SYSTEM_PROMPT), &tok)?;
            truncate(&mut t, b.cutoff_len);
            if t.loss_mask.contains(&1) {
                toks.push(t);
            }
        }
    }
    let g = if Path::new(&b.model).exists() {
        Grader::load(Path::new(&b.model), b.device, 0, b.dtype)?
    } else {
        Grader::from_preset(&b.model, 0, b.device, 0, b.dtype)?
    };
    let header = tok.encode(&format!("{IM_START}assistant\n"))?.ids;
    let pad = tok.token_id(END_OF_TEXT).unwrap_or(0);
    let longest = toks.iter().map(|t| t.input_ids.len() + header.len()).max().unwrap_or(0);
    let s = GraderSettings {
        batch_size: b.batch_size,
        row_len: b.row_len.max(longest),
        dtype: b.dtype,
        ce_chunk: super::config::GradeConfig::default().ce_chunk_tokens,
    };
    let items: Vec<ScoreItem> = toks.iter().map(|t| ScoreItem { ids: &t.input_ids, mask: &t.loss_mask }).collect();
    bench(&g, &items, &header, &s, pad)
}

/// What a grading run did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct GradeRun {
    /// Batches in the plan.
    pub batches: usize,
    /// Batches taken from an earlier run's progress file.
    pub batches_reused: usize,
    /// Tokens in the forward passes (rows × row length of the batches computed now).
    pub tokens_forward: u64,
    /// Seconds spent.
    pub elapsed_s: f64,
}

/// Scores every example; with `progress`, resumes from and appends to that file. `pad` fills
/// the rows' tails. Returns one score per item, in order.
pub fn score_all(
    g: &Grader,
    items: &[ScoreItem],
    header: &[u32],
    s: &GraderSettings,
    pad: u32,
    progress: Option<&Path>,
) -> Result<(Vec<ModelScore>, GradeRun)> {
    let t0 = std::time::Instant::now();
    if s.batch_size == 0 || s.row_len < 2 {
        return Err(Error::Other("model grading: batch_size must be >= 1 and the row length >= 2".into()));
    }
    let plan = plan(items, header, s)?;
    let mut run = GradeRun { batches: plan.len(), ..Default::default() };
    let fp = fingerprint(g, items, header, s);
    let (mut scores, done, mut file) = match progress {
        Some(path) => {
            let (scores, done, valid) = read_progress(path, &fp)?;
            let mut f = std::fs::OpenOptions::new().create(true).write(true).truncate(false).open(path).map_err(|e| Error::io(path, e))?;
            if valid == 0 {
                f.set_len(0).map_err(|e| Error::io(path, e))?;
                let mut h = serde_json::to_vec(&Header { format: SCORES_FORMAT, fingerprint: fp.clone() }).expect("header serializes");
                h.push(b'\n');
                f.write_all(&h).and_then(|_| f.sync_data()).map_err(|e| Error::io(path, e))?;
            } else {
                f.set_len(valid).map_err(|e| Error::io(path, e))?;
            }
            use std::io::Seek;
            f.seek(std::io::SeekFrom::End(0)).map_err(|e| Error::io(path, e))?;
            (scores, done, Some((f, path)))
        }
        None => (Vec::new(), 0, None),
    };
    run.batches_reused = done;
    if done > 0 {
        tracing::info!(
            "model grading: {done} of {} batches already scored ({})",
            plan.len(),
            progress.map(|p| p.display().to_string()).unwrap_or_default()
        );
    }
    for (k, pb) in plan.iter().enumerate().skip(done) {
        let got = run_batch(g, pb, s, pad)?;
        run.tokens_forward += (pb.rows.len() * s.row_len) as u64;
        if let Some((f, path)) = file.as_mut() {
            let mut line =
                serde_json::to_vec(&BatchLine { batch: k, first: pb.examples.start, scores: got.clone() }).expect("scores serialize");
            line.push(b'\n');
            f.write_all(&line).and_then(|_| f.sync_data()).map_err(|e| Error::io(&**path, e))?;
        }
        scores.extend(got);
    }
    if scores.len() != items.len() {
        return Err(Error::Other(format!("model grading: {} scores for {} examples", scores.len(), items.len())));
    }
    run.elapsed_s = t0.elapsed().as_secs_f64();
    Ok((scores, run))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item<'a>(ids: &'a [u32], mask: &'a [u8]) -> ScoreItem<'a> {
        ScoreItem { ids, mask }
    }

    #[test]
    fn segments_are_the_example_then_each_answer_after_the_header() {
        let ids = [1, 2, 3, 10, 11, 4, 5, 12];
        let mask = [0, 0, 0, 1, 1, 0, 0, 1];
        let s = segments(7, &item(&ids, &mask), &[90, 91]);
        assert_eq!(s.len(), 3);
        assert_eq!(s[0].ids, ids);
        assert!(s[0].cond);
        assert_eq!((s[1].ids.as_slice(), s[1].mask.as_slice()), (&[90, 91, 10, 11][..], &[0, 0, 1, 1][..]));
        assert_eq!((s[2].ids.as_slice(), s[2].mask.as_slice()), (&[90, 91, 12][..], &[0, 0, 1][..]));
        assert!(s.iter().all(|x| x.example == 7));
    }

    #[test]
    fn the_plan_keeps_each_example_in_one_batch_and_rows_within_length() {
        let a: Vec<u32> = (0..6).collect();
        let m = [0, 0, 0, 1, 1, 1];
        let items: Vec<ScoreItem> = (0..5).map(|_| item(&a, &m)).collect();
        let s = GraderSettings { batch_size: 2, row_len: 10, dtype: ComputeDtype::F32, ce_chunk: 4 };
        let p = plan(&items, &[9], &s).unwrap();
        // Each example: 6 + 4 tokens = one full row; two rows per batch.
        assert_eq!(p.iter().map(|b| b.examples.clone()).collect::<Vec<_>>(), [0..2, 2..4, 4..5]);
        for b in &p {
            assert!(b.rows.len() <= 2);
            assert!(b.rows.iter().all(|r| r.iter().map(|s| s.ids.len()).sum::<usize>() <= 10));
        }
        let long: Vec<u32> = (0..11).collect();
        let lm = [1u8; 11];
        assert!(plan(&[item(&long, &lm)], &[9], &s).unwrap_err().to_string().contains("longer than the row"));
    }
}
