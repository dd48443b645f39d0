//! Model-based grading on the fixtures with a tiny random checkpoint: the grader's losses equal
//! the ones computed independently from `coretech logits` (one sequence, full logits, no
//! packing); stages are monotone in the configured score; IFD > 1 handling is counted; a killed
//! run resumes to byte-identical `examples.parquet`; 1 and 2 threads give the same bytes.

#[path = "infer_support/mod.rs"]
mod support;

use std::fs::File;
use std::path::{Path, PathBuf};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{Float64Type, UInt32Type};
use coretech::config::PipelineConfig;
use coretech::pipeline::run_sft;
use coretech::sft::example::{Example, Message};
use coretech::sft::grade_model::SCORES_FILE;
use coretech::sft::template::{render, tokenize, truncate, DEFAULT_SYSTEM_PROMPT};
use coretech::sft::tokenizer::SftTokenizer;
use coretech::sft::Mode;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use support::Tiny;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn tokenizer_path() -> PathBuf {
    root().join("fixtures/tokenizers/qwen2.5/tokenizer.json.zst")
}

/// The first records of a single-turn IPC set and of the multi-turn sharegpt set: real fixture
/// records, few enough that grading stays cheap (every answer token costs a 151,936-way softmax,
/// twice).
const FILES: [(&str, usize); 2] = [("GovPatent-SFT_QA_IPC.jsonl", 24), ("flagai_aquila_convo_samples.sharegpt.jsonl", 24)];

/// The template cutoff of the test builds.
const CUTOFF: usize = 256;

/// Writes the first records of each of [`FILES`] into a fresh directory, under the same names.
fn inputs() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (f, n) in FILES {
        let text = std::fs::read_to_string(root().join("fixtures/data/sft").join(f)).unwrap();
        let head: String = text.split_inclusive('\n').take(n).collect();
        std::fs::write(dir.path().join(f), head).unwrap();
    }
    dir
}

fn config_text(inputs: &Path, out: &Path, model: &Path, grade: &str) -> String {
    let mut t = String::from("stages = [\"sft\"]\n[sft]\n");
    t += &format!("output = {:?}\ntokenizer = {:?}\n", out, tokenizer_path());
    for (f, _) in FILES {
        t += &format!("[[sft.inputs]]\npath = {:?}\n", inputs.join(f));
    }
    t += &format!("[sft.template]\ncutoff_len = {CUTOFF}\n[sft.pack]\nseq_len = 256\n");
    t += &format!("[sft.grade]\nmodel = {model:?}\nbatch_size = 2\n{grade}\n");
    t
}

fn config(inputs: &Path, out: &Path, model: &Path, grade: &str) -> PipelineConfig {
    PipelineConfig::parse(&config_text(inputs, out, model, grade), "test.toml").unwrap()
}

fn checkpoint() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    Tiny { max_pos: 1024, ..Default::default() }.write(dir.path(), 11);
    dir
}

fn batches(path: &Path) -> Vec<RecordBatch> {
    let f = File::open(path).unwrap();
    ParquetRecordBatchReaderBuilder::try_new(f).unwrap().build().unwrap().map(|b| b.unwrap()).collect()
}

/// One row of examples.parquet.
#[derive(Debug, Clone)]
struct Row {
    id: String,
    split: String,
    stage: u32,
    score: f64,
    score_used: String,
    cond: Option<f64>,
    answer: Option<f64>,
    ifd: Option<f64>,
    system: String,
    messages: String,
    tokens: u32,
}

fn rows(dir: &Path) -> Vec<Row> {
    let mut out = Vec::new();
    for b in batches(&dir.join("examples.parquet")) {
        let s = |n: &str| b.column_by_name(n).unwrap().as_string::<i32>().clone();
        let f = |n: &str| b.column_by_name(n).unwrap().as_primitive::<Float64Type>().clone();
        let (id, split, used, system, messages) = (s("id"), s("split"), s("score_used"), s("system"), s("messages"));
        let (score, cond, answer, ifd) = (f("score"), f("cond_loss"), f("answer_loss"), f("ifd"));
        let stage = b.column_by_name("stage").unwrap().as_primitive::<UInt32Type>().clone();
        let tokens = b.column_by_name("tokens").unwrap().as_primitive::<UInt32Type>().clone();
        let opt = |a: &arrow::array::Float64Array, i: usize| if a.is_null(i) { None } else { Some(a.value(i)) };
        for i in 0..b.num_rows() {
            out.push(Row {
                id: id.value(i).into(),
                split: split.value(i).into(),
                stage: stage.value(i),
                score: score.value(i),
                score_used: used.value(i).into(),
                cond: opt(&cond, i),
                answer: opt(&answer, i),
                ifd: opt(&ifd, i),
                system: system.value(i).into(),
                messages: messages.value(i).into(),
                tokens: tokens.value(i),
            });
        }
    }
    out
}

/// Stages are quantiles of the score over the training examples: a lower score never lies in a
/// later stage.
fn assert_stages_monotone(train: &[&Row]) {
    for x in train {
        for y in train {
            if x.score < y.score {
                assert!(x.stage <= y.stage, "{} ({}, stage {}) vs {} ({}, stage {})", x.id, x.score, x.stage, y.id, y.score, y.stage);
            }
        }
    }
}

/// Mean cross-entropy of `targets` (token index → predicted from index − 1) under full logits.
fn ce_sum(logits: &[f32], vocab: usize, ids: &[u32], targets: impl Iterator<Item = usize>) -> (f64, usize) {
    let (mut sum, mut n) = (0f64, 0usize);
    for t in targets {
        let row = &logits[(t - 1) * vocab..t * vocab];
        let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        let lse = m + row.iter().map(|&x| (x as f64 - m).exp()).sum::<f64>().ln();
        sum += lse - row[ids[t] as usize] as f64;
        n += 1;
    }
    (sum, n)
}

/// cond_loss and answer_loss of one example, from `coretech::train::logits::logits` on single
/// unpacked sequences.
fn independent(ckpt: &Path, row: &Row, tok: &SftTokenizer) -> (f64, f64, usize) {
    let messages: Vec<Message> = serde_json::from_str(&row.messages).unwrap();
    let ex = Example::from_turns((!row.system.is_empty()).then(|| row.system.clone()), messages);
    let mut t = tokenize(&render(&ex, DEFAULT_SYSTEM_PROMPT), tok).unwrap();
    truncate(&mut t, CUTOFF);
    assert_eq!(t.input_ids.len(), row.tokens as usize, "{}: same tokens as the build", row.id);
    let vocab = 151_936;
    let full = coretech::train::logits::logits(ckpt, &t.input_ids).unwrap();
    let (c_sum, c_n) = ce_sum(&full, vocab, &t.input_ids, (1..t.input_ids.len()).filter(|&i| t.loss_mask[i] == 1));
    // Each answer (run of mask-1 tokens) after `<|im_start|>assistant\n` alone.
    let header = tok.encode("<|im_start|>assistant\n").unwrap().ids;
    assert_eq!(header.len(), 3);
    let (mut a_sum, mut a_n, mut answers) = (0f64, 0usize, 0usize);
    let mut i = 0;
    while i < t.input_ids.len() {
        if t.loss_mask[i] == 1 {
            let s = i;
            while i < t.input_ids.len() && t.loss_mask[i] == 1 {
                i += 1;
            }
            let mut seq = header.clone();
            seq.extend_from_slice(&t.input_ids[s..i]);
            let lg = coretech::train::logits::logits(ckpt, &seq).unwrap();
            let (sum, n) = ce_sum(&lg, vocab, &seq, header.len()..seq.len());
            a_sum += sum;
            a_n += n;
            answers += 1;
        } else {
            i += 1;
        }
    }
    assert_eq!(c_n, a_n);
    (c_sum / c_n as f64, a_sum / a_n as f64, answers)
}

#[test]
fn grader_losses_match_logits_and_stages_are_monotone() {
    let ckpt = checkpoint();
    let inp = inputs();
    let out = tempfile::tempdir().unwrap();
    let rep = run_sft(&config(inp.path(), out.path(), ckpt.path(), "method = \"model\"\nscore = \"ifd\""), false, Mode::Grade).unwrap();
    let m = rep.grading.model.as_ref().expect("model grading report");
    assert_eq!(rep.grading.score_used, "ifd");
    let all = rows(out.path());
    assert_eq!(m.examples as usize, all.len());
    for r in &all {
        let (c, a, i) = (r.cond.unwrap(), r.answer.unwrap(), r.ifd.unwrap());
        assert!(c.is_finite() && a.is_finite() && a > 0.0 && i.is_finite(), "{r:?}");
        assert_eq!(i, c / a);
        assert_eq!(r.score, i);
        assert_eq!(r.score_used, "ifd");
    }
    // Two examples, one single-turn IPC answer and one conversation with several answers (after
    // the cutoff), recomputed from full logits of unpacked sequences.
    let tok = SftTokenizer::load(&tokenizer_path()).unwrap();
    let shortest = |prefix: &str, multi: bool| {
        all.iter()
            .filter(|r| r.id.starts_with(prefix) && (r.messages.matches("\"assistant\"").count() > 1) == multi)
            .min_by_key(|r| r.tokens)
            .unwrap_or_else(|| panic!("no {prefix} example"))
            .clone()
    };
    for (r, answers) in [(shortest("GovPatent-SFT_QA_IPC:", false), 1), (shortest("flagai", true), 2)] {
        let (c, a, n) = independent(ckpt.path(), &r, &tok);
        assert!(n >= answers, "{}: {n} answers", r.id);
        assert!((c - r.cond.unwrap()).abs() < 1e-5, "{}: cond {c} vs grader {}", r.id, r.cond.unwrap());
        assert!((a - r.answer.unwrap()).abs() < 1e-5, "{}: answer {a} vs grader {}", r.id, r.answer.unwrap());
        assert!((c / a - r.ifd.unwrap()).abs() < 1e-5);
    }
    // Stages are quantiles of the score over the training examples: monotone.
    let train: Vec<&Row> = all.iter().filter(|r| r.split == "train").collect();
    assert_stages_monotone(&train);
    let means: Vec<f64> = rep.grading.stage_means.iter().map(|m| m["ifd"]).collect();
    assert_eq!(means.len(), 3);
    assert!(means.windows(2).all(|w| w[0] < w[1]), "{means:?}");
    assert!(coretech::sft::stats::stats_of_dir(out.path()).unwrap().contains("ifd"));

    // Scoring by another loss reuses nothing and orders by that loss.
    let out2 = tempfile::tempdir().unwrap();
    let rep2 =
        run_sft(&config(inp.path(), out2.path(), ckpt.path(), "method = \"model\"\nscore = \"answer_loss\""), false, Mode::Grade).unwrap();
    assert_eq!(rep2.grading.score_used, "answer_loss");
    for (a, b) in rows(out2.path()).iter().zip(&all) {
        assert_eq!(a.score, b.answer.unwrap());
        assert_eq!((a.cond, a.answer), (b.cond, b.answer));
    }
}

#[test]
fn ifd_above_one_is_counted_and_handled_by_config() {
    let ckpt = checkpoint();
    let inp = inputs();
    let keep_dir = tempfile::tempdir().unwrap();
    let keep = run_sft(&config(inp.path(), keep_dir.path(), ckpt.path(), "method = \"model\""), false, Mode::Grade).unwrap();
    let above = keep.grading.model.as_ref().unwrap().ifd_above_one;
    let train_above = rows(keep_dir.path()).iter().filter(|r| r.split == "train" && r.ifd.unwrap() > 1.0).count() as u64;
    assert_eq!(above, train_above);
    assert!(above > 0, "a random model leaves some examples with IFD > 1");
    let kept_total = rows(keep_dir.path()).len() as u64;

    let last_dir = tempfile::tempdir().unwrap();
    let last =
        run_sft(&config(inp.path(), last_dir.path(), ckpt.path(), "method = \"mix\"\nifd_above_one = \"last_stage\""), false, Mode::Grade)
            .unwrap();
    assert_eq!(last.grading.score_used, "mix(ifd)");
    let m = last.grading.model.as_ref().unwrap();
    assert_eq!((m.ifd_above_one, m.ifd_above_one_moved, m.ifd_above_one_policy.as_str()), (above, above, "last_stage"));
    assert!(rows(last_dir.path()).iter().filter(|r| r.split == "train" && r.ifd.unwrap() > 1.0).all(|r| r.stage == 2));

    let drop_dir = tempfile::tempdir().unwrap();
    let dropped =
        run_sft(&config(inp.path(), drop_dir.path(), ckpt.path(), "method = \"model\"\nifd_above_one = \"drop\""), false, Mode::Grade)
            .unwrap();
    let r = rows(drop_dir.path());
    assert_eq!(r.len() as u64, kept_total - above);
    assert!(r.iter().filter(|r| r.split == "train").all(|r| r.ifd.unwrap() <= 1.0));
    let filtered: u64 = dropped.run.sources.values().map(|s| s.filtered.get("ifd-above-1").copied().unwrap_or(0)).sum();
    assert_eq!(filtered, above);
}

#[test]
fn a_killed_grading_run_resumes_to_the_same_bytes() {
    let ckpt = checkpoint();
    let inp = inputs();
    let out = tempfile::tempdir().unwrap();
    let cfg = config(inp.path(), out.path(), ckpt.path(), "method = \"mix\"");
    let first = run_sft(&cfg, false, Mode::Grade).unwrap();
    let batches = first.grading.model.as_ref().unwrap().batches;
    assert!(batches > 4, "{batches}");
    let want = std::fs::read(out.path().join("examples.parquet")).unwrap();
    // A kill while batch 3 was being written: header, batches 0–2, half a line.
    let scores = out.path().join(SCORES_FILE);
    let text = std::fs::read_to_string(&scores).unwrap();
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    assert_eq!(lines.len() as u64, batches + 1);
    let torn = format!("{}{}", lines[..4].concat(), &lines[4][..lines[4].len() / 2]);
    std::fs::write(&scores, torn).unwrap();
    // A killed build has written neither the table nor its manifest.
    std::fs::remove_file(out.path().join("examples.parquet")).unwrap();
    std::fs::remove_file(out.path().join(coretech::shard::manifest::MANIFEST_FILE)).unwrap();
    let again = run_sft(&cfg, false, Mode::Grade).unwrap();
    let m = again.grading.model.as_ref().unwrap();
    assert_eq!((m.batches, m.batches_reused), (batches, 3));
    assert_eq!(std::fs::read(out.path().join("examples.parquet")).unwrap(), want);
    assert_eq!(std::fs::read_to_string(&scores).unwrap(), text);
    // A finished file serves a rebuild whole; another checkpoint is never served from it.
    std::fs::remove_file(out.path().join(coretech::shard::manifest::MANIFEST_FILE)).unwrap();
    assert_eq!(run_sft(&cfg, false, Mode::Grade).unwrap().grading.model.unwrap().batches_reused, batches);
    let other = checkpoint_with_seed(12);
    let cfg2 = config(inp.path(), out.path(), other.path(), "method = \"mix\"");
    assert_eq!(run_sft(&cfg2, false, Mode::Grade).unwrap().grading.model.unwrap().batches_reused, 0);
}

fn checkpoint_with_seed(seed: u64) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    Tiny { max_pos: 1024, ..Default::default() }.write(dir.path(), seed);
    dir
}

#[test]
fn one_and_two_threads_give_identical_scores() {
    let ckpt = checkpoint();
    let inp = inputs();
    let work = tempfile::tempdir().unwrap();
    let mut outputs = Vec::new();
    for threads in ["1", "2"] {
        let out = work.path().join(format!("t{threads}"));
        let cfg = work.path().join(format!("t{threads}.toml"));
        std::fs::write(&cfg, config_text(inp.path(), &out, ckpt.path(), "method = \"model\"")).unwrap();
        let st = std::process::Command::new(env!("CARGO_BIN_EXE_coretech"))
            .args(["sft", "grade"])
            .arg(&cfg)
            .env("RAYON_NUM_THREADS", threads)
            .output()
            .unwrap();
        assert!(st.status.success(), "{}", String::from_utf8_lossy(&st.stderr));
        outputs.push((std::fs::read(out.join("examples.parquet")).unwrap(), std::fs::read(out.join(SCORES_FILE)).unwrap()));
    }
    assert!(outputs[0].0 == outputs[1].0, "examples.parquet differs between 1 and 2 threads");
    assert!(outputs[0].1 == outputs[1].1, "model scores differ between 1 and 2 threads");
}

/// A model trained (by the trainer, on CPU, in a second) to answer four questions: each
/// question's answer is predictable from it, but not from the assistant header alone. Graded
/// with the real grader: a learned pair gets IFD well below 1 (the question helps), a learned
/// question with another question's answer gets IFD above 1 (the question misleads), and the
/// curriculum order follows.
#[test]
fn a_predictable_answer_gets_a_lower_ifd_than_an_unpredictable_one() {
    use coretech::sft::grade_model::{score_all, Grader, GraderSettings, ScoreItem};
    use coretech::shard::Batch;
    use coretech::train::config::{ComputeDtype, DeviceKind, ModelConfig, TrainConfig};
    use coretech::train::data::VecSource;
    use coretech::train::metrics::MetricsConfig;
    use coretech::train::optim::AdamWConfig;
    use coretech::train::schedule::{Decay, ScheduleConfig};
    use coretech::train::trainer::Trainer;

    const SEQ: usize = 64;
    // The "test" preset's vocabulary is 128 ids: questions 10–59, header 100–102, answers 60–99.
    let header = [100u32, 101, 102];
    let question = |i: u32| -> Vec<u32> { (0..6).map(|t| 10 + i * 12 + t * 2).collect() };
    let answer = |i: u32| -> Vec<u32> { (0..4).map(|t| 60 + i * 10 + t).collect() };
    let example = |q: u32, a: u32| -> (Vec<u32>, Vec<u8>) {
        let mut ids = question(q);
        ids.extend_from_slice(&header);
        let prompt = ids.len();
        ids.extend(answer(a));
        let mask = (0..ids.len()).map(|t| (t >= prompt) as u8).collect();
        (ids, mask)
    };
    // One row: the four learned pairs as segments, then padding.
    let mut b = Batch { batch: 1, seq_len: SEQ, ..Default::default() };
    let mut lens = Vec::new();
    for i in 0..4 {
        let (ids, mask) = example(i, i);
        lens.push(ids.len() as u32);
        b.input_ids.extend(ids);
        b.loss_mask.extend(mask);
    }
    b.input_ids.resize(SEQ, 0);
    b.loss_mask.resize(SEQ, 0);
    Batch::row_layout(&lens, SEQ, &mut b.position_ids, &mut b.segment_ids);
    let run = tempfile::tempdir().unwrap();
    let cfg = TrainConfig {
        output: run.path().to_path_buf(),
        model: ModelConfig { preset: Some("test".into()), ..Default::default() },
        batch_size: 1,
        seq_len: SEQ,
        max_steps: Some(150),
        optimizer: AdamWConfig { lr: 1e-2, weight_decay: 0.0, ..Default::default() },
        schedule: ScheduleConfig { warmup_steps: 0, decay: Decay::Constant, min_lr_ratio: 1.0 },
        metrics: MetricsConfig { progress: false, ..Default::default() },
        ..Default::default()
    };
    Trainer::new(&cfg, Box::new(VecSource::new(vec![b], 0))).unwrap().run().unwrap();

    // Graded from the run directory (its newest checkpoint), as `sft.grade.model` allows.
    let g = Grader::load(run.path(), DeviceKind::Cpu, 0, ComputeDtype::F32).unwrap();
    let learned = example(0, 0);
    let swapped = example(0, 1);
    let items = [ScoreItem { ids: &learned.0, mask: &learned.1 }, ScoreItem { ids: &swapped.0, mask: &swapped.1 }];
    let s = GraderSettings { batch_size: 2, row_len: SEQ, dtype: ComputeDtype::F32, ce_chunk: 3 };
    let (scores, _) = score_all(&g, &items, &header, &s, 0, None).unwrap();
    let (easy, hard) = (scores[0], scores[1]);
    assert_eq!((easy.tokens, hard.tokens), (4, 4));
    // The answer after the header alone is a guess among the four learned answers.
    assert!(easy.cond_loss < easy.answer_loss, "{easy:?}");
    assert!(easy.ifd() < 0.5, "the question makes its answer predictable: {easy:?}");
    assert!(hard.ifd() > 1.0, "the question points to another answer: {hard:?}");
    assert!(easy.ifd() < hard.ifd());
    // Same answer tokens alone, same answer_loss whatever the question.
    let (e1, _) = score_all(&g, &[items[1], items[0]], &header, &s, 0, None).unwrap();
    assert_eq!((e1[0], e1[1]), (hard, easy), "scores do not depend on the batch neighbours");
}

#[test]
fn a_missing_or_incompatible_grading_checkpoint_is_a_clear_error() {
    let inp = inputs();
    let out = tempfile::tempdir().unwrap();
    let nowhere = out.path().join("no-such-run");
    let e = run_sft(&config(inp.path(), out.path(), &nowhere, "method = \"model\""), false, Mode::Grade).unwrap_err().to_string();
    assert!(e.contains("sft.grade.model") && e.contains("no-such-run"), "{e}");
    // A checkpoint whose vocabulary is smaller than the tokenizer's ids.
    let small = tempfile::tempdir().unwrap();
    Tiny { vocab: 1000, max_pos: 1024, ..Default::default() }.write(small.path(), 3);
    let e = run_sft(&config(inp.path(), out.path(), small.path(), "method = \"model\""), false, Mode::Grade).unwrap_err().to_string();
    assert!(e.contains("sft.grade.model") && e.contains("config.json") && e.contains("vocab"), "{e}");
    // Positions beyond the checkpoint's max_position_embeddings.
    let short = tempfile::tempdir().unwrap();
    Tiny { max_pos: 64, ..Default::default() }.write(short.path(), 3);
    let e = run_sft(&config(inp.path(), out.path(), short.path(), "method = \"model\""), false, Mode::Grade).unwrap_err().to_string();
    assert!(e.contains("sft.grade.model") && e.contains("max_position_embeddings"), "{e}");
    // method = "model" without a checkpoint names the key.
    let text = config_text(inp.path(), out.path(), &nowhere, "method = \"model\"").replace(&format!("model = {nowhere:?}\n"), "");
    let e = PipelineConfig::parse(&text, "test.toml").and_then(|c| run_sft(&c, false, Mode::Grade)).unwrap_err().to_string();
    assert!(e.contains("sft.grade.model"), "{e}");
}

/// Runs `coretech bench grade ARGS` from the repository root; returns its JSON line.
fn bench_grade(args: &[&str]) -> serde_json::Value {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_coretech"))
        .current_dir(root())
        .args(["bench", "grade"])
        .args(args)
        .env("RAYON_NUM_THREADS", "1")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

#[test]
fn bench_grade_scores_fixture_examples_and_prints_positive_rates() {
    // A freshly initialised tiny model on the first examples of a fixture SFT file.
    let r = bench_grade(&["fixtures/data/sft/GovPatent-SFT_QA_IPC.jsonl", "--limit", "3", "--cutoff-len", "128", "--batch", "2"]);
    assert_eq!(r["examples"], 3, "{r}");
    assert_eq!((r["model"].as_str(), r["device"].as_str(), r["dtype"].as_str()), (Some("preset:tiny"), Some("cpu"), Some("f32")), "{r}");
    assert_eq!(r["threads"], 1, "{r}");
    // Rows of 512 tokens (the default), 2 to a forward: whole rows go through the model.
    let (batches, positions) = (r["batches"].as_u64().unwrap(), r["positions"].as_u64().unwrap());
    assert!(batches >= 1 && positions % 512 == 0 && positions <= batches * 2 * 512, "{r}");
    for k in ["examples_per_s", "scored_tokens_per_s", "tokens_per_s", "forward_s"] {
        assert!(r[k].as_f64().unwrap() > 0.0, "{k}: {r}");
    }
    assert!(r["scored_tokens"].as_u64().unwrap() > 0 && r["tokens"].as_u64().unwrap() <= r["positions"].as_u64().unwrap(), "{r}");

    // A checkpoint directory on a built examples.parquet (re-templated at the build's cutoff):
    // the answer tokens it scores are the ones the build counted, twice.
    let inp = inputs();
    let out = tempfile::tempdir().unwrap();
    let rep = run_sft(&config(inp.path(), out.path(), Path::new("unused"), "method = \"heuristic\""), false, Mode::Grade).unwrap();
    let ckpt = checkpoint();
    let parquet = out.path().join("examples.parquet");
    let r = bench_grade(&[
        parquet.to_str().unwrap(),
        "--model",
        ckpt.path().to_str().unwrap(),
        "--cutoff-len",
        &CUTOFF.to_string(),
        "--seq",
        "256",
    ]);
    assert_eq!(r["examples"].as_u64().unwrap(), rows(out.path()).len() as u64, "{r}");
    assert_eq!(r["scored_tokens"].as_u64().unwrap(), 2 * rep.template.loss_tokens, "{r}");
    assert!(r["examples_per_s"].as_f64().unwrap() > 0.0, "{r}");
}

/// The demo's grading as it is (`pipelines/demo.toml`: `method = "mix"` with its own CPT run,
/// the stages in the demo's order), on the first records of two of its SFT inputs so that the
/// test stays short; the CPT run is the demo's, cut to 4 steps. Every kept example gets finite
/// losses and IFD, training stages are monotone in the mix score, and the run prints the
/// per-stage mean IFD.
#[test]
fn the_demo_grades_its_sft_set_with_its_own_cpt_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(root().join("fixtures"), tmp.path().join("fixtures")).unwrap();
    let inp = inputs();
    let demo = std::fs::read_to_string(root().join("pipelines/demo.toml")).unwrap();
    let stages = demo.lines().find(|l| l.starts_with("stages = ")).expect("demo.toml lists its stages").to_string();
    assert!(stages.contains(r#""train:cpt", "sft""#), "the demo trains CPT before it grades SFT: {stages}");
    let mut demo = demo.replace(&stages, r#"stages = ["docs", "dedup", "pack", "train:cpt", "sft"]"#);
    assert!(demo.contains("max_steps = 16"));
    demo = demo.replace("max_steps = 16", "max_steps = 4");
    // The demo's [[sft.inputs]] blocks of FILES, reading their first records instead.
    let (a, b) = (demo.find("[[sft.inputs]]").unwrap(), demo.find("[sft.split]").unwrap());
    let blocks: Vec<String> = demo[a..b]
        .split("[[sft.inputs]]")
        .filter_map(|blk| {
            let (f, _) = FILES.iter().find(|(f, _)| blk.contains(&format!("fixtures/data/sft/{f}\"")))?;
            Some(format!("[[sft.inputs]]{}", blk.replace(&format!("\"fixtures/data/sft/{f}\""), &format!("{:?}", inp.path().join(f)))))
        })
        .collect();
    assert_eq!(blocks.len(), FILES.len(), "demo.toml no longer reads {FILES:?}");
    demo = format!("{}{}{}", &demo[..a], blocks.concat(), &demo[b..]);
    std::fs::write(tmp.path().join("demo.toml"), &demo).unwrap();

    let run =
        std::process::Command::new(env!("CARGO_BIN_EXE_coretech")).args(["run", "demo.toml"]).current_dir(tmp.path()).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&run.stdout), String::from_utf8_lossy(&run.stderr));
    assert!(run.status.success(), "{text}");
    assert!(text.contains("grading (mix, by mix(ifd))"), "{text}");
    let means = text.lines().find(|l| l.starts_with("mean IFD per stage")).unwrap_or_else(|| panic!("no per-stage IFD line: {text}"));
    assert_eq!(means.split(", ").count(), 3, "{means}");
    assert!(text.contains("model grading: ") && text.contains("runs/demo-cpt"), "{text}");

    let sft = tmp.path().join("out/demo/sft");
    assert!(sft.join(SCORES_FILE).is_file());
    let all = rows(&sft);
    assert!(all.len() > 30, "{} examples", all.len());
    for r in &all {
        let (c, a, i) = (r.cond.unwrap(), r.answer.unwrap(), r.ifd.unwrap());
        assert!(c.is_finite() && a.is_finite() && a > 0.0 && i.is_finite(), "{r:?}");
        assert_eq!(i, c / a);
        assert_eq!(r.score_used, "mix(ifd)");
    }
    let train: Vec<&Row> = all.iter().filter(|r| r.split == "train").collect();
    assert_eq!(train.iter().map(|r| r.stage).max(), Some(2));
    assert_stages_monotone(&train);
}
