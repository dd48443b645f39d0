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
//!
//! Memory: the plan is built as the examples come ([`Scorer`]) and each batch is scored as soon
//! as the next example closes it, so grading holds, besides the caller's examples, one score per
//! example (24 bytes) and one batch: at most `batch_size` rows of `row_len` tokens (more only
//! for a single example whose segments need more rows), their segment copies and the forward's
//! activations for those rows. `coretech bench grade` ([`super::bench`]) feeds examples
//! straight from the input, one record in memory at a time.

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
    /// through the trainer's own LM-head cross-entropy (`Ops::cross_entropy` without a
    /// gradient, as validation calls it: fused and blocked on CPU, never all logits at once),
    /// so a segment's sum is what the trainer would add for it, up to f32 rounding.
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

/// The batch plan, built as the examples come: their segments packed in order into rows of
/// `row_len` tokens (next fit), a batch closed when the next example would need a row beyond
/// `batch_size`, so every example lies in one batch. Only the open batch is held; the plan
/// depends on the examples and the settings alone, never on how they are fed.
struct Planner {
    header: Vec<u32>,
    row_len: usize,
    batch_size: usize,
    /// The open batch's rows, and the tokens in its last row.
    rows: Vec<Vec<Segment>>,
    used: usize,
    /// First example of the open batch; examples pushed so far.
    first: usize,
    next: usize,
}

impl Planner {
    fn new(header: &[u32], s: &GraderSettings) -> Planner {
        Planner { header: header.to_vec(), row_len: s.row_len, batch_size: s.batch_size, rows: Vec::new(), used: 0, first: 0, next: 0 }
    }

    /// Adds the next example; returns the batch it closed (the one before it), if it did.
    fn push(&mut self, item: &ScoreItem) -> Result<Option<PlannedBatch>> {
        let i = self.next;
        let segs = segments(i, item, &self.header);
        // Rows this example needs when appended to the open batch.
        let mut sim_rows = self.rows.len();
        let mut sim_used = self.used;
        for sg in &segs {
            if sg.ids.len() > self.row_len {
                return Err(Error::Other(format!(
                    "model grading: example {i} has a segment of {} tokens, longer than the row ({})",
                    sg.ids.len(),
                    self.row_len
                )));
            }
            if sim_rows == 0 || sim_used + sg.ids.len() > self.row_len {
                sim_rows += 1;
                sim_used = 0;
            }
            sim_used += sg.ids.len();
        }
        let closed = if sim_rows > self.batch_size && !self.rows.is_empty() {
            let b = PlannedBatch { rows: std::mem::take(&mut self.rows), examples: self.first..i };
            self.first = i;
            self.used = 0;
            Some(b)
        } else {
            None
        };
        for sg in segs {
            if self.rows.is_empty() || self.used + sg.ids.len() > self.row_len {
                self.rows.push(Vec::new());
                self.used = 0;
            }
            self.used += sg.ids.len();
            self.rows.last_mut().expect("a row").push(sg);
        }
        self.next += 1;
        Ok(closed)
    }

    /// The last batch, if any example is left in it.
    fn finish(&mut self) -> Option<PlannedBatch> {
        (!self.rows.is_empty()).then(|| PlannedBatch { rows: std::mem::take(&mut self.rows), examples: self.first..self.next })
    }
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

/// What a grading run did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct GradeRun {
    /// Batches in the plan.
    pub batches: usize,
    /// Batches taken from an earlier run's progress file.
    pub batches_reused: usize,
    /// Tokens in the forward passes (rows × row length of the batches computed now).
    pub tokens_forward: u64,
    /// Real tokens in those forward passes (each example whole, each answer after its header).
    pub tokens_real: u64,
    /// Seconds spent, from the first example to the last score.
    pub elapsed_s: f64,
    /// Seconds inside the forward passes (the model and the LM head; no planning, no I/O).
    pub forward_s: f64,
    /// Process CPU seconds inside the forward passes, all threads (Linux; `None` elsewhere).
    pub forward_cpu_s: Option<f64>,
}

/// Scores examples fed one at a time, in bounded memory: each batch of the plan is scored (and
/// its line appended to the progress file) as soon as the next example closes it, so besides
/// one score per example only the open batch is held. Feeding the same examples in the same
/// order gives the same plan and the same scores, however they are read.
pub struct Scorer<'g> {
    g: &'g Grader,
    s: GraderSettings,
    pad: u32,
    planner: Planner,
    /// Batches closed so far.
    planned: usize,
    /// Batches whose scores came from the progress file.
    reused: usize,
    file: Option<(std::fs::File, PathBuf)>,
    scores: Vec<ModelScore>,
    run: GradeRun,
    t0: std::time::Instant,
}

impl<'g> Scorer<'g> {
    /// A scorer without a progress file. `pad` fills the rows' tails.
    pub fn new(g: &'g Grader, header: &[u32], s: &GraderSettings, pad: u32) -> Result<Scorer<'g>> {
        if s.batch_size == 0 || s.row_len < 2 {
            return Err(Error::Other("model grading: batch_size must be >= 1 and the row length >= 2".into()));
        }
        Ok(Scorer {
            g,
            s: s.clone(),
            pad,
            planner: Planner::new(header, s),
            planned: 0,
            reused: 0,
            file: None,
            scores: Vec::new(),
            run: GradeRun { forward_cpu_s: crate::train::metrics::process_cpu_seconds().map(|_| 0.0), ..Default::default() },
            t0: std::time::Instant::now(),
        })
    }

    /// Resumes from `path` when it was written under fingerprint `fp` (its complete batches are
    /// not scored again), else starts it over; appends each new batch's line.
    fn with_progress(mut self, path: &Path, fp: &str) -> Result<Scorer<'g>> {
        let (scores, done, valid) = read_progress(path, fp)?;
        let mut f = std::fs::OpenOptions::new().create(true).write(true).truncate(false).open(path).map_err(|e| Error::io(path, e))?;
        if valid == 0 {
            f.set_len(0).map_err(|e| Error::io(path, e))?;
            let mut h = serde_json::to_vec(&Header { format: SCORES_FORMAT, fingerprint: fp.to_string() }).expect("header serializes");
            h.push(b'\n');
            f.write_all(&h).and_then(|_| f.sync_data()).map_err(|e| Error::io(path, e))?;
        } else {
            f.set_len(valid).map_err(|e| Error::io(path, e))?;
        }
        use std::io::Seek;
        f.seek(std::io::SeekFrom::End(0)).map_err(|e| Error::io(path, e))?;
        if done > 0 {
            tracing::info!("model grading: {done} batches already scored ({})", path.display());
        }
        self.scores = scores;
        self.reused = done;
        self.file = Some((f, path.to_path_buf()));
        Ok(self)
    }

    /// Adds the next example (its segments must fit a row); scores the batch it closes.
    pub fn push(&mut self, item: &ScoreItem) -> Result<()> {
        match self.planner.push(item)? {
            Some(pb) => self.score(pb),
            None => Ok(()),
        }
    }

    /// Scores a closed batch, unless the progress file already holds it.
    fn score(&mut self, pb: PlannedBatch) -> Result<()> {
        let k = self.planned;
        self.planned += 1;
        if k < self.reused {
            return Ok(());
        }
        if self.scores.len() != pb.examples.start {
            return Err(Error::Other(format!(
                "model grading: batch {k} starts at example {}, but {} are scored",
                pb.examples.start,
                self.scores.len()
            )));
        }
        let cpu0 = crate::train::metrics::process_cpu_seconds();
        let t = std::time::Instant::now();
        let got = run_batch(self.g, &pb, &self.s, self.pad)?;
        self.run.forward_s += t.elapsed().as_secs_f64();
        if let (Some(acc), Some(a), Some(b)) = (self.run.forward_cpu_s.as_mut(), cpu0, crate::train::metrics::process_cpu_seconds()) {
            *acc += b - a;
        }
        self.run.tokens_forward += (pb.rows.len() * self.s.row_len) as u64;
        self.run.tokens_real += pb.rows.iter().flatten().map(|sg| sg.ids.len() as u64).sum::<u64>();
        if let Some((f, path)) = self.file.as_mut() {
            let mut line =
                serde_json::to_vec(&BatchLine { batch: k, first: pb.examples.start, scores: got.clone() }).expect("scores serialize");
            line.push(b'\n');
            f.write_all(&line).and_then(|_| f.sync_data()).map_err(|e| Error::io(&*path, e))?;
        }
        self.scores.extend(got);
        Ok(())
    }

    /// Scores the last batch; returns one score per example, in order, and what the run did.
    pub fn finish(mut self) -> Result<(Vec<ModelScore>, GradeRun)> {
        if let Some(pb) = self.planner.finish() {
            self.score(pb)?;
        }
        if self.scores.len() != self.planner.next {
            return Err(Error::Other(format!("model grading: {} scores for {} examples", self.scores.len(), self.planner.next)));
        }
        self.run.batches = self.planned;
        self.run.batches_reused = self.reused.min(self.planned);
        self.run.elapsed_s = self.t0.elapsed().as_secs_f64();
        Ok((self.scores, self.run))
    }
}

/// Scores every example; with `progress`, resumes from and appends to that file (fingerprinted
/// by the model, the settings and every example's tokens). `pad` fills the rows' tails.
/// Returns one score per item, in order.
pub fn score_all(
    g: &Grader,
    items: &[ScoreItem],
    header: &[u32],
    s: &GraderSettings,
    pad: u32,
    progress: Option<&Path>,
) -> Result<(Vec<ModelScore>, GradeRun)> {
    let mut sc = Scorer::new(g, header, s, pad)?;
    if let Some(path) = progress {
        sc = sc.with_progress(path, &fingerprint(g, items, header, s))?;
    }
    for it in items {
        sc.push(it)?;
    }
    sc.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item<'a>(ids: &'a [u32], mask: &'a [u8]) -> ScoreItem<'a> {
        ScoreItem { ids, mask }
    }

    /// The whole plan of `items`, checking after each example that the planner holds one open
    /// batch of at most `batch_size` rows (the memory bound).
    fn plan(items: &[ScoreItem], header: &[u32], s: &GraderSettings) -> Result<Vec<PlannedBatch>> {
        let mut p = Planner::new(header, s);
        let mut out = Vec::new();
        for it in items {
            out.extend(p.push(it)?);
            assert!(p.rows.len() <= s.batch_size);
        }
        out.extend(p.finish());
        Ok(out)
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
