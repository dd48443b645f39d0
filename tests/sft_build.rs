//! The SFT stage end to end on the fixtures: accounting, splits, decontamination (train/test
//! and against a CPT document shard), grading (deterministic, monotone, stage means), packed
//! shards, determinism, `--strict`, `sft grade`, `sft stats`.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{Float64Type, UInt32Type, UInt8Type};
use coretech::config::PipelineConfig;
use coretech::doc::Document;
use coretech::pipeline::run_sft as run_pipeline;
use coretech::sft::config::GradeMethod;
use coretech::sft::text::unit_hashes;
use coretech::sft::{Mode, SftReport};
use coretech::shard::{documents, Loader, LoaderConfig, Manifest, ShardWriter};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

const FILES: [&str; 6] = [
    "GovPatent-SFT_QA_IPC.jsonl",
    "GovPatent-SFT_QA_Tech.jsonl",
    "Paper-SFT_QA_IPC.jsonl",
    "Paper-SFT_QA_Tech.jsonl",
    "GovPatent-SFT_raw_data.csv",
    "flagai_aquila_convo_samples.sharegpt.jsonl",
];

/// A pipeline over every fixture file, writing to `out`; `extra` is appended to `[sft]`.
fn config(out: &Path, cpt: Option<&Path>, extra: &str) -> PipelineConfig {
    PipelineConfig::parse(&config_text(out, cpt, extra), "test.toml").unwrap()
}

/// The TOML text of [`config`].
fn config_text(out: &Path, cpt: Option<&Path>, extra: &str) -> String {
    let mut t = String::from("stages = [\"sft\"]\n[sft]\n");
    t += &format!("output = {:?}\ntokenizer = {:?}\n", out, root().join("fixtures/tokenizers/qwen2.5/tokenizer.json.zst"));
    t += extra;
    for f in FILES {
        t += &format!("[[sft.inputs]]\npath = {:?}\n", root().join("fixtures/data/sft").join(f));
    }
    if let Some(c) = cpt {
        t += &format!("[sft.decontam]\ncpt_documents = [{c:?}]\n");
    }
    t += "[sft.pack]\nseq_len = 4096\nrows_per_shard = 50\n";
    t
}

fn batches(path: &Path) -> Vec<RecordBatch> {
    let f = File::open(path).unwrap();
    ParquetRecordBatchReaderBuilder::try_new(f).unwrap().build().unwrap().map(|b| b.unwrap()).collect()
}

/// examples.parquet as (id → (split, task, stage, score, answer_tokens)).
fn graded(dir: &Path) -> BTreeMap<String, (String, String, u32, f64, f64)> {
    let mut out = BTreeMap::new();
    for b in batches(&dir.join("examples.parquet")) {
        let s = |n: &str| b.column_by_name(n).unwrap().as_string::<i32>().clone();
        let (id, split, task) = (s("id"), s("split"), s("task"));
        let stage = b.column_by_name("stage").unwrap().as_primitive::<UInt32Type>().clone();
        let score = b.column_by_name("score").unwrap().as_primitive::<Float64Type>().clone();
        let ans = b.column_by_name("feat_answer_tokens").unwrap().as_primitive::<Float64Type>().clone();
        for i in 0..b.num_rows() {
            out.insert(
                id.value(i).to_string(),
                (split.value(i).to_string(), task.value(i).to_string(), stage.value(i), score.value(i), ans.value(i)),
            );
        }
    }
    out
}

/// A document shard holding every GovPatent IPC question inside ordinary text, plus filler.
fn cpt_shard(dir: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(root().join("fixtures/data/sft/GovPatent-SFT_QA_IPC.jsonl")).unwrap();
    let questions: Vec<String> =
        text.lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["instruction"].as_str().unwrap().to_string()).collect();
    let mut docs = vec![Document {
        id: "wudao:filler".into(),
        source: "wudao".into(),
        text: "与专利无关的一段普通网页文字，用于检验不会误报。".repeat(20),
        ..Default::default()
    }];
    docs.push(Document {
        id: "wudao:leak".into(),
        source: "wudao".into(),
        text: format!("网页摘录：{}。以上为常见问题。", questions.join("；")),
        ..Default::default()
    });
    let mut w = ShardWriter::create(&dir.join("part-00000.parquet"), documents::schema(), &Default::default()).unwrap();
    w.write(&documents::to_batch(&docs)).unwrap();
    let info = w.finish().unwrap();
    Manifest { kind: "documents".into(), shards: vec![info], ..Default::default() }.save(dir).unwrap();
    questions
}

fn files_bytes(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.file_name().unwrap() != ".report.json" {
                out.insert(p.strip_prefix(dir).unwrap().display().to_string(), std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

#[test]
fn fixture_sft_build_end_to_end() {
    let tmp = tempfile::tempdir().unwrap();
    let (out, cpt) = (tmp.path().join("sft"), tmp.path().join("cpt"));
    let questions = cpt_shard(&cpt);
    let cfg = config(&out, Some(&cpt), "");
    let report: SftReport = run_pipeline(&cfg, false, Mode::Build).unwrap();

    // Accounting: every record read ends in exactly one bucket.
    let total = report.run.total();
    assert_eq!(total.read, 682);
    assert_eq!(total.accounted(), total.read);
    for (name, s) in &report.run.sources {
        assert_eq!(s.accounted(), s.read, "{name}");
    }
    assert_eq!(total.errors.values().sum::<u64>(), 0);
    // GovPatent Tech repeats 11 question/answer pairs verbatim: dropped as duplicates.
    assert_eq!(report.run.sources["GovPatent-SFT_QA_Tech"].duplicates.get("exact-pair"), Some(&11));
    assert_eq!(report.duplicates.exact_pairs.len(), 11);
    // Task keys: present in 70 / absent in 98 GovPatent IPC records.
    assert_eq!(
        (report.datasets["GovPatent-SFT_QA_IPC"].task_key_present, report.datasets["GovPatent-SFT_QA_IPC"].task_key_absent),
        (70, 98)
    );
    // Every IPC mention parses; no scheme configured, so none is called unknown.
    assert!(!report.validation.scheme_checked);
    assert!(report.validation.mentions > 2000);
    assert_eq!((report.validation.malformed_codes, report.validation.unknown_codes), (0, 0));

    // Splits: stratified per task, ~10 % test; no training question overlaps a test question.
    let g = graded(&out);
    assert_eq!(g.len() as u64, total.kept);
    for (task, t) in &report.tasks {
        assert!(t.test >= 1 && t.test * 5 < t.train + t.test, "{task}: {t:?}");
    }
    // The eval file: every IPC / key-technology test example, in the form `coretech eval` reads,
    // its task given (not inferred) and its reference the example's answer.
    let evals = coretech::infer::eval::read_examples(&out.join("test-eval.jsonl")).unwrap();
    let want: Vec<&String> = g.iter().filter(|(_, v)| v.0 == "test" && (v.1 == "ipc" || v.1 == "tech")).map(|(k, _)| k).collect();
    assert_eq!(evals.len(), want.len());
    assert!(!evals.is_empty() && evals.iter().all(|e| !e.task_inferred && !e.reference.is_empty() && !e.question.is_empty()));
    // The fixtures hold no near-copies across the split: their most similar questions share a
    // template but name different fields (光刻技术领域涉及哪些核心科技？ vs OLED技术领域…,
    // 5-gram Jaccard 0.73), which must stay. Removal itself is tested below.
    assert!(report.decontam.train_removed.is_empty(), "{:?}", report.decontam.train_removed);

    // CPT check: every GovPatent IPC test question long enough for a 13-gram is flagged, found
    // in the leaking document; the filler document matches nothing.
    let c = report.decontam.cpt.as_ref().unwrap();
    assert_eq!((c.shards, c.documents), (1, 2));
    let flagged: HashMap<&str, &str> = c.flagged.iter().map(|h| (h.id.as_str(), h.first_doc.as_str())).collect();
    let mut expected = 0;
    for (id, (split, ..)) in &g {
        if split != "test" || !id.starts_with("GovPatent-SFT_QA_IPC:") {
            continue;
        }
        let ordinal: usize = id.rsplit(':').next().unwrap().parse().unwrap();
        if unit_hashes(&questions[ordinal]).len() >= 13 {
            assert_eq!(flagged.get(id.as_str()), Some(&"wudao:leak"), "{id}");
            expected += 1;
        }
    }
    assert!(expected >= 1);
    assert!(flagged.values().all(|d| *d == "wudao:leak"));

    // Grading: stage monotone in the score, balanced stages, increasing per-stage means.
    let train: Vec<&(String, String, u32, f64, f64)> = g.values().filter(|v| v.0 == "train").collect();
    for a in &train {
        for b in &train {
            if a.3 < b.3 {
                assert!(a.2 <= b.2);
            }
        }
    }
    let sizes = &report.grading.stage_sizes;
    assert_eq!(sizes.len(), 3);
    assert!(sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1, "{sizes:?}");
    let means = &report.grading.stage_means;
    assert_eq!(means.len(), 3);
    for w in means.windows(2) {
        assert!(w[0]["score"] < w[1]["score"], "{means:?}");
        assert!(w[0]["answer_tokens"] < w[1]["answer_tokens"], "{means:?}");
    }

    // Shards: fixed-length rows, stages in curriculum order, never mixed in a row, masks zero
    // on padding, every training example packed exactly once.
    let m = Manifest::load(&out.join("train")).unwrap();
    assert_eq!(m.kind, "sft");
    let mut seen = Vec::new();
    let mut last_stage = 0;
    // Per stage: (rows, real tokens), for the fill check below.
    let mut per_stage: BTreeMap<u32, (u64, u64)> = BTreeMap::new();
    // Per stage: loss tokens.
    let mut per_stage_mask: BTreeMap<u32, u64> = BTreeMap::new();
    for s in &m.shards {
        for b in batches(&out.join("train").join(&s.file)) {
            let ids = b.column_by_name("input_ids").unwrap().as_list::<i32>().clone();
            let segs = b.column_by_name("seg_lens").unwrap().as_list::<i32>().clone();
            let mask = b.column_by_name("loss_mask").unwrap().as_list::<i32>().clone();
            let stage = b.column_by_name("stage").unwrap().as_primitive::<UInt32Type>().clone();
            let exid = b.column_by_name("example_id").unwrap().as_list::<i32>().clone();
            for r in 0..b.num_rows() {
                assert_eq!(ids.value(r).len(), 4096);
                let seg: Vec<u32> = segs.value(r).as_primitive::<UInt32Type>().values().to_vec();
                let used: u32 = seg.iter().sum();
                let mk = mask.value(r);
                let mk = mk.as_primitive::<UInt8Type>();
                assert!((used as usize..4096).all(|i| mk.value(i) == 0));
                assert!(stage.value(r) >= last_stage);
                last_stage = stage.value(r);
                let st = per_stage.entry(stage.value(r)).or_default();
                st.0 += 1;
                st.1 += used as u64;
                *per_stage_mask.entry(stage.value(r)).or_default() += mk.values().iter().map(|&v| v as u64).sum::<u64>();
                let e = exid.value(r);
                for i in 0..e.len() {
                    let id = e.as_string::<i32>().value(i).to_string();
                    assert_eq!(g[&id].2, stage.value(r), "{id} packed in the wrong stage");
                    seen.push(id);
                }
            }
        }
    }
    let mut want: Vec<String> = g.iter().filter(|(_, v)| v.0 == "train").map(|(k, _)| k.clone()).collect();
    seen.sort();
    want.sort();
    assert_eq!(seen, want);
    assert_eq!(m.rows(), report.packing.as_ref().unwrap().train_rows);
    // The crate's loader reads the train shards: every row once, its mask and stage as written.
    let loss_tokens: u64 = per_stage_mask.values().sum();
    let mut loader = Loader::new(LoaderConfig::single(out.join("train"), 8)).unwrap();
    let (mut rows, mut mask_sum, mut stages) = (0u64, 0u64, BTreeMap::<u32, u64>::new());
    while let Some(b) = loader.next_batch().unwrap() {
        rows += b.batch as u64;
        mask_sum += b.loss_mask.iter().map(|&m| m as u64).sum::<u64>();
        for s in b.stage.unwrap() {
            *stages.entry(s).or_default() += 1;
        }
    }
    assert_eq!((rows, mask_sum), (m.rows(), loss_tokens));
    assert_eq!(stages, per_stage.iter().map(|(s, (r, _))| (*s, *r)).collect::<BTreeMap<_, _>>());
    // Each stage also stands alone (`train/stage-K`, the trainer's curriculum stages): the
    // loader reads exactly that stage's rows from it.
    for (s, (r, _)) in &per_stage {
        let mut loader = Loader::new(LoaderConfig::single(out.join("train").join(format!("stage-{s}")), 8)).unwrap();
        let mut n = 0u64;
        while let Some(b) = loader.next_batch().unwrap() {
            assert!(b.stage.as_ref().unwrap().iter().all(|x| x == s), "stage-{s} holds rows of another stage");
            n += b.batch as u64;
        }
        assert_eq!(n, *r, "stage-{s}");
    }

    // Best fit packs these examples (118 to 2048 tokens) nearly as tightly as possible: per
    // stage at most one row over ceil(tokens / seq_len) (measured: 13/13, 21/21, 31/30; next
    // fit in the same order is two rows over on the largest stage of pipelines/sft.toml).
    for (s, (rows, tokens)) in &per_stage {
        assert!(*rows <= tokens.div_ceil(4096) + 1, "stage {s}: {rows} rows for {tokens} tokens");
    }
    assert_eq!(per_stage.len(), 3);

    // Deterministic: runs on one and on five threads give the same bytes.
    let before = files_bytes(&out);
    for threads in [1, 5] {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| run_pipeline(&cfg, false, Mode::Build)).unwrap();
        assert_eq!(files_bytes(&out), before, "{threads} threads");
    }

    // `sft stats` reads the table back.
    let stats = coretech::sft::stats::stats_of_dir(&out).unwrap();
    assert!(
        stats.contains("examples per split, task and stage") && stats.contains("tok_p90") && stats.contains("answer_tokens"),
        "{stats}"
    );
}

#[test]
fn train_questions_overlapping_the_test_set_are_removed() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("sft");
    run_pipeline(&config(&out, None, ""), false, Mode::Grade).unwrap();
    let g = graded(&out);
    // Two training examples of a file without repeated questions.
    let train: Vec<usize> = g
        .iter()
        .filter(|(id, v)| id.starts_with("Paper-SFT_QA_Tech:") && v.0 == "train")
        .map(|(id, _)| id.rsplit(':').next().unwrap().parse().unwrap())
        .take(2)
        .collect();
    let text = std::fs::read_to_string(root().join("fixtures/data/sft/Paper-SFT_QA_Tech.jsonl")).unwrap();
    let q = |i: usize| {
        serde_json::from_str::<serde_json::Value>(text.lines().nth(i).unwrap()).unwrap()["instruction"].as_str().unwrap().to_string()
    };
    let (qa, qb) = (q(train[0]), q(train[1]));
    // A given test set: the first question respelt (spaces, ASCII punctuation: equal after
    // normalization), the second with one character added before its final punctuation.
    let respelt = qa.replace('？', "?").chars().map(|c| format!("{c} ")).collect::<String>();
    let mut edited: Vec<char> = qb.chars().collect();
    edited.insert(edited.len() - 1, '呢');
    let edited: String = edited.into_iter().collect();
    let near = tmp.path().join("near.jsonl");
    let rec = |q: &str| serde_json::json!({"instruction": q, "input": "", "output": "参考答案。", "task_type": "key_tech"}).to_string();
    std::fs::write(&near, format!("{}\n{}\n", rec(&respelt), rec(&edited))).unwrap();
    let extra = format!("[[sft.inputs]]\npath = {near:?}\nsplit = \"test\"\n");
    let r = run_pipeline(&config(&out, None, &extra), false, Mode::Grade).unwrap();
    let removed: BTreeMap<&str, (&str, &str, f64)> =
        r.decontam.train_removed.iter().map(|o| (o.train_id.as_str(), (o.test_id.as_str(), o.kind.as_str(), o.similarity))).collect();
    let (a, b) = (format!("Paper-SFT_QA_Tech:{}", train[0]), format!("Paper-SFT_QA_Tech:{}", train[1]));
    assert_eq!(removed.get(a.as_str()).map(|x| (x.0, x.1)), Some(("near:0", "exact")), "{removed:?}");
    let (t, kind, sim) = removed[b.as_str()];
    assert_eq!((t, kind), ("near:1", "ngram"));
    assert!((0.8..1.0).contains(&sim), "{sim}");
    assert_eq!(removed.len(), 2, "{removed:?}");
    let g = graded(&out);
    assert!(!g.contains_key(&a) && !g.contains_key(&b));
    assert_eq!(g["near:0"].0, "test");
    let filtered: u64 = r
        .run
        .sources
        .values()
        .map(|s| s.filtered.get("test-overlap-exact").unwrap_or(&0) + s.filtered.get("test-overlap-ngram").unwrap_or(&0))
        .sum();
    assert_eq!(filtered, 2);
}

#[test]
fn grade_mode_writes_the_table_without_shards() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("sft");
    let r = run_pipeline(&config(&out, None, ""), false, Mode::Grade).unwrap();
    assert!(r.packing.is_none() && r.decontam.cpt.is_none());
    assert!(out.join("examples.parquet").exists() && out.join(".report.json").exists());
    assert!(!out.join("train").exists());
    // Weights on one feature: that feature's stage means increase strictly.
    let cfg = config(&out, None, "[sft.grade.weights]\nanswer_tokens = 0.0\nquestion_tokens = 1.0\nipc_codes = 0.0\nipc_depth = 0.0\nlist_items = 0.0\nturns = 0.0\ntask = 0.0\n");
    let r = run_pipeline(&cfg, false, Mode::Grade).unwrap();
    let m = &r.grading.stage_means;
    assert!(m[0]["question_tokens"] < m[1]["question_tokens"] && m[1]["question_tokens"] < m[2]["question_tokens"], "{m:?}");
}

#[test]
fn strict_fails_on_the_first_bad_record_and_lenient_counts_it() {
    let tmp = tempfile::tempdir().unwrap();
    let t = format!(
        "stages=[\"sft\"]\n[sft]\noutput = {:?}\ntokenizer = {:?}\n[[sft.inputs]]\npath = {:?}\n",
        tmp.path().join("o"),
        root().join("fixtures/tokenizers/qwen2.5/tokenizer.json.zst"),
        root().join("fixtures/bad/sft-bad-json-line.jsonl")
    );
    let cfg = PipelineConfig::parse(&t, "t.toml").unwrap();
    let e = run_pipeline(&cfg, true, Mode::Build).unwrap_err().to_string();
    assert!(e.contains("sft-bad-json-line.jsonl:2") && e.contains("json"), "{e}");
    let r = run_pipeline(&cfg, false, Mode::Build).unwrap();
    assert_eq!(r.run.total().errors.get("json"), Some(&1));
    assert_eq!(r.run.total().kept, 2);
}

#[test]
fn model_grading_and_bad_settings_are_clear_config_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("sft");
    // Model grading needs a checkpoint that exists (tests/sft_grade_model.rs grades with one).
    let e = run_pipeline(&config(&out, None, "[sft.grade]\nmethod = \"model\"\nmodel = \"runs/no-such-ckpt\"\n"), false, Mode::Build)
        .unwrap_err()
        .to_string();
    assert!(e.contains("sft.grade.model") && e.contains("no-such-ckpt"), "{e}");
    let e = PipelineConfig::parse(&config_text(&out, None, "[sft.grade]\nmethod = \"mix\"\n"), "t.toml")
        .and_then(|c| run_pipeline(&c, false, Mode::Build))
        .unwrap_err()
        .to_string();
    assert!(e.contains("sft.grade.model"), "{e}");
    let e = run_pipeline(&config(&out, Some(&tmp.path().join("nope")), ""), false, Mode::Build).unwrap_err().to_string();
    assert!(e.contains("sft.decontam.cpt_documents"), "{e}");
    let mut cfg = config(&out, None, "");
    cfg.sft.as_mut().unwrap().pack.open_bins = 0;
    let e = run_pipeline(&cfg, false, Mode::Build).unwrap_err().to_string();
    assert!(e.contains("sft.pack") && e.contains("open_bins"), "{e}");
    let e = PipelineConfig::parse("[sft]\noutput = \"o\"\ninputs = []\n[sft.template]\ncutof_len = 5\n", "t.toml").unwrap_err().to_string();
    assert!(e.contains("cutof_len"), "{e}");
}

#[test]
fn overlength_policies_truncate_drop_or_keep() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("sft");
    let trunc = run_pipeline(&config(&out, None, "[sft.template]\ncutoff_len = 512\n"), false, Mode::Grade).unwrap();
    assert!(trunc.template.truncated > 50, "{:?}", trunc.template);
    assert!(graded(&out).len() as u64 == trunc.run.total().kept);
    let drop = run_pipeline(&config(&out, None, "[sft.template]\ncutoff_len = 512\noverlength = \"drop\"\n"), false, Mode::Grade).unwrap();
    assert_eq!(drop.template.dropped, trunc.template.truncated);
    assert_eq!(drop.template.truncated, 0);
    let over: u64 = drop.run.sources.values().map(|s| s.filtered.get("over-length").copied().unwrap_or(0)).sum();
    assert_eq!(over, drop.template.dropped);
    // Keep: whole examples up to seq_len (4096 here), nothing cut.
    let keep = run_pipeline(&config(&out, None, "[sft.template]\ncutoff_len = 512\noverlength = \"keep\"\n"), false, Mode::Grade).unwrap();
    assert_eq!((keep.template.truncated, keep.template.dropped), (0, 0));
    assert_eq!(keep.run.total().kept, trunc.run.total().kept);
    assert!(keep.template.tokens > trunc.template.tokens);
}

/// A scheme that knows every subclass of G06 and H04 and their groups.
struct G06H04;
impl coretech::sft::validate::IpcLookup for G06H04 {
    fn contains(&self, symbol: &str) -> bool {
        symbol.starts_with("G06") || symbol.starts_with("H04")
    }
}

#[test]
fn codes_unknown_to_the_scheme_are_listed_per_example_and_dropped_on_request() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("sft");
    let cfg = config(&out, None, "");
    let r = coretech::sft::run(cfg.sft.as_ref().unwrap(), Some(&G06H04), false, Mode::Grade).unwrap();
    assert!(r.validation.scheme_checked);
    // GovPatent IPC record 0 lists 13 codes; 8 are outside G06/H04 (counted by hand).
    let e = r.validation.per_example.iter().find(|e| e.id == "GovPatent-SFT_QA_IPC:0").unwrap();
    let expected: Vec<&str> = vec!["H01L", "G16B", "G16H", "G05B 19/00", "G11C 13/00", "H03K", "H05K", "G16C"];
    assert_eq!(e.unknown, expected);
    assert!(e.malformed.is_empty());
    let with_unknown = r.validation.unknown_examples;
    assert!(with_unknown > 100);
    let mut drop_unknown = cfg.sft.clone().unwrap();
    drop_unknown.validate.unknown_codes = coretech::sft::config::Policy::Drop;
    let r = coretech::sft::run(&drop_unknown, Some(&G06H04), false, Mode::Grade).unwrap();
    let dropped: u64 = r.run.sources.values().map(|s| s.filtered.get("unknown-ipc-code").copied().unwrap_or(0)).sum();
    assert_eq!(dropped, with_unknown);
    assert!(!graded(&out).contains_key("GovPatent-SFT_QA_IPC:0"));
}

#[test]
fn empty_cut_off_and_repeated_answers_are_filtered_by_config() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("sft");
    let odd = tmp.path().join("odd.jsonl");
    let rec = |q: &str, a: &str| serde_json::json!({"instruction": q, "input": "", "output": a}).to_string();
    let lines = [rec("空回答的问题？", "  "), rec("被截断的回答？", "智能芯片是一种芯片，主要用于"), rec("完整的问题？", "完整的回答。")];
    std::fs::write(&odd, lines.join("\n")).unwrap();
    // `truncated_answer` is `keep` (a warning) by default since complete Chinese list answers may
    // end without punctuation; dropping is asked for here.
    let extra = format!("[sft.validate]\nduplicate_questions = \"drop\"\ntruncated_answer = \"drop\"\n[[sft.inputs]]\npath = {odd:?}\n");
    let r = run_pipeline(&config(&out, None, &extra), false, Mode::Grade).unwrap();
    let s = &r.run.sources["odd"];
    assert_eq!((s.read, s.kept, s.filtered.get("empty-answer"), s.filtered.get("truncated-answer")), (3, 1, Some(&1), Some(&1)));
    assert_eq!(r.validation.empty_answers, ["odd:0"]);
    assert_eq!(r.validation.truncated_answers, ["odd:1: a Chinese answer ending without punctuation"]);
    // GovPatent IPC asks 20 questions twice with different answers: dropped on request.
    assert_eq!(r.run.sources["GovPatent-SFT_QA_IPC"].duplicates.get("question"), Some(&20));
    // Kept by default, and still listed.
    let r = run_pipeline(&config(&out, None, &format!("[[sft.inputs]]\npath = {odd:?}\n")), false, Mode::Grade).unwrap();
    assert_eq!(r.run.sources["GovPatent-SFT_QA_IPC"].duplicates.get("question"), None);
    assert_eq!(r.duplicates.repeated_questions.iter().filter(|(id, _)| id.starts_with("GovPatent-SFT_QA_IPC")).count(), 20);
}

#[test]
fn every_parquet_file_of_a_demo_like_build_has_unique_column_names() {
    // The demo's [sft] section as it is (inputs, tokenizer, template, grading, packing), writing
    // to a temporary directory and checking contamination against a small document shard.
    let tmp = tempfile::tempdir().unwrap();
    let (out, cpt) = (tmp.path().join("sft"), tmp.path().join("cpt"));
    cpt_shard(&cpt);
    let text = std::fs::read_to_string(root().join("pipelines/demo.toml")).unwrap();
    let mut cfg = PipelineConfig::parse(&text, "pipelines/demo.toml").unwrap();
    let sft = cfg.sft.as_mut().unwrap();
    sft.output = out.clone();
    sft.decontam.cpt_documents = vec![cpt];
    // Model grading needs the demo's CPT run (tests/sft_grade_model.rs runs it): heuristics here.
    sft.grade.method = GradeMethod::Heuristic;
    run_pipeline(&cfg, false, Mode::Build).unwrap();
    let mut files = Vec::new();
    let mut stack = vec![out.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "parquet") {
                files.push(p);
            }
        }
    }
    files.sort();
    // examples.parquet and at least one shard per split.
    assert!(files.iter().any(|f| f.ends_with("examples.parquet")), "{files:?}");
    assert!(files.iter().any(|f| f.starts_with(out.join("train"))) && files.iter().any(|f| f.starts_with(out.join("test"))), "{files:?}");
    for f in &files {
        let r = ParquetRecordBatchReaderBuilder::try_new(File::open(f).unwrap()).unwrap();
        let names: Vec<String> = r.schema().fields().iter().map(|x| x.name().clone()).collect();
        let mut unique = names.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), names.len(), "{}: duplicate column names in {names:?}", f.display());
    }
    // The grading features are prefixed; the codes keep their name.
    let r = ParquetRecordBatchReaderBuilder::try_new(File::open(out.join("examples.parquet")).unwrap()).unwrap();
    let schema = r.schema();
    assert!(schema.field_with_name("feat_ipc_codes").is_ok() && schema.field_with_name("ipc_codes").is_ok());
}

#[test]
fn general_chat_is_trained_on_but_never_in_the_eval_set() {
    // The FlagAI sample (100 general conversations) without a `task`, once as a bare sharegpt
    // file and once through a LLaMA-Factory dataset_info.json: every example is inferred as chat
    // (it used to be `tech`), kept for training, and test-eval.jsonl stays empty.
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let flagai = root().join("fixtures/data/sft/flagai_aquila_convo_samples.sharegpt.jsonl");
    std::fs::copy(&flagai, data.join("convo.jsonl")).unwrap();
    std::fs::write(data.join("dataset_info.json"), r#"{"convo": {"file_name": "convo.jsonl", "formatting": "sharegpt"}}"#).unwrap();
    let out = tmp.path().join("sft");
    let t = format!(
        "stages = [\"sft\"]\n[sft]\noutput = {out:?}\ntokenizer = {:?}\n[[sft.inputs]]\npath = {flagai:?}\n[[sft.inputs]]\npath = {data:?}\n",
        root().join("fixtures/tokenizers/qwen2.5/tokenizer.json.zst")
    );
    let r = run_pipeline(&PipelineConfig::parse(&t, "chat.toml").unwrap(), false, Mode::Grade).unwrap();
    assert_eq!(r.tasks.keys().collect::<Vec<_>>(), ["chat"]);
    let chat = &r.tasks["chat"];
    assert_eq!((chat.inferred, chat.given, chat.config), (200, 0, 0));
    assert!(chat.train > 0 && chat.test > 0, "{chat:?}");
    assert_eq!(std::fs::read(out.join("test-eval.jsonl")).unwrap(), b"");
    assert_eq!(r.eval_set.written, 0);
    let ex = &r.eval_set.excluded["chat"];
    assert_eq!((ex.count, ex.ids.len() as u64), (chat.test, chat.test));
    // Every kept example is in the graded table under `chat`.
    assert!(graded(&out).values().all(|v| v.1 == "chat"));
}

/// Python with pyarrow and datasets: $CORETECH_PYTHON, ./.venv/bin/python, python3.
fn python() -> Option<PathBuf> {
    let mut candidates: Vec<PathBuf> = std::env::var_os("CORETECH_PYTHON").map(PathBuf::from).into_iter().collect();
    candidates.push(root().join(".venv/bin/python"));
    candidates.push("python3".into());
    candidates
        .into_iter()
        .find(|p| std::process::Command::new(p).args(["-c", "import pyarrow, datasets"]).output().is_ok_and(|o| o.status.success()))
}

/// examples.parquet ids by split.
fn ids_by_split(g: &BTreeMap<String, (String, String, u32, f64, f64)>) -> BTreeMap<String, std::collections::BTreeSet<String>> {
    let mut out: BTreeMap<String, std::collections::BTreeSet<String>> = BTreeMap::new();
    for (id, v) in g {
        out.entry(v.0.clone()).or_default().insert(id.clone());
    }
    out
}

#[test]
fn validation_split_is_seeded_per_task_and_leaves_the_test_set_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let (plain, with) = (tmp.path().join("plain"), tmp.path().join("with"));
    run_pipeline(&config(&plain, None, ""), false, Mode::Build).unwrap();
    let report: SftReport = run_pipeline(&config(&with, None, "[sft.split]\nvalidation_fraction = 0.1\n"), false, Mode::Build).unwrap();
    let (a, b) = (ids_by_split(&graded(&plain)), ids_by_split(&graded(&with)));
    // Test untouched (the examples and the eval file); validation drawn from the training side.
    assert_eq!(a["test"], b["test"]);
    assert_eq!(std::fs::read(plain.join("test-eval.jsonl")).unwrap(), std::fs::read(with.join("test-eval.jsonl")).unwrap());
    assert!(report.decontam.train_removed.is_empty(), "{:?}", report.decontam.train_removed);
    let val = &b["validation"];
    assert!(val.is_disjoint(&b["train"]));
    assert_eq!(b["train"].union(val).cloned().collect::<std::collections::BTreeSet<_>>(), a["train"]);
    // Per task about 10 %, at least one each.
    for (task, t) in &report.tasks {
        let n = t.train + t.validation + t.test;
        assert!(t.validation >= 1 && t.validation * 5 < n, "{task}: {t:?}");
    }
    assert_eq!(report.tasks.values().map(|t| t.validation).sum::<u64>(), val.len() as u64);
    // Packed per curriculum stage like test, with the split in its manifests.
    let m = Manifest::load(&with.join("validation")).unwrap();
    assert_eq!((m.kind.as_str(), m.info["split"].as_str()), ("sft", Some("validation")));
    assert_eq!(m.info["examples"], val.len());
    for k in 0..3 {
        let sm = Manifest::load(&with.join(format!("validation/stage-{k}"))).unwrap();
        assert_eq!((sm.info["split"].as_str(), sm.info["stage"].as_u64()), (Some("validation"), Some(k)));
    }
    assert_eq!(report.packing.as_ref().unwrap().validation_rows, m.shards.iter().map(|s| s.rows).sum::<u64>());
    // Without the key nothing changes: no validation directory.
    assert!(!plain.join("validation").exists());
    // A fraction that leaves no room is a config error naming the file and key (at parse time).
    let bad = config_text(&tmp.path().join("bad"), None, "[sft.split]\ntest_fraction = 0.6\nvalidation_fraction = 0.5\n");
    let e = PipelineConfig::parse(&bad, "test.toml").unwrap_err().to_string();
    assert!(e.contains("test.toml") && e.contains("sft.split.validation_fraction"), "{e}");
}

#[test]
fn export_llamafactory_writes_every_split_and_stage_as_llamafactory_datasets() {
    use coretech::sft::export::{self, Format};
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("sft");
    let text = config_text(&out, None, "[sft.split]\nvalidation_fraction = 0.1\n");
    run_pipeline(&PipelineConfig::parse(&text, "test.toml").unwrap(), false, Mode::Build).unwrap();
    let toml = tmp.path().join("sft.toml");
    std::fs::write(&toml, &text).unwrap();
    let lf = tmp.path().join("lf");
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_coretech"))
        .args(["export", "llamafactory"])
        .arg(&toml)
        .arg("--output")
        .arg(&lf)
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));

    // One file per split and stage, each registered with LLaMA-Factory's sharegpt description.
    let g = graded(&out);
    let mut want: BTreeMap<String, u64> = BTreeMap::new();
    for (split, _, stage, ..) in g.values() {
        *want.entry(format!("coretech_{split}_stage{stage}")).or_default() += 1;
    }
    assert_eq!(want.len(), 9, "{want:?}");
    let info: serde_json::Value = serde_json::from_slice(&std::fs::read(lf.join("dataset_info.json")).unwrap()).unwrap();
    let info = info.as_object().unwrap();
    assert_eq!(info.keys().cloned().collect::<std::collections::BTreeSet<_>>(), want.keys().cloned().collect());
    let system = coretech::sft::template::DEFAULT_SYSTEM_PROMPT;
    for (name, n) in &want {
        let d = &info[name];
        assert_eq!(d["formatting"], "sharegpt");
        assert_eq!(d["columns"], serde_json::json!({ "messages": "conversations", "system": "system" }));
        let rows: Vec<serde_json::Value> =
            serde_json::from_slice(&std::fs::read(lf.join(d["file_name"].as_str().unwrap())).unwrap()).unwrap();
        assert_eq!(rows.len() as u64, *n, "{name}");
        for r in &rows {
            let conv = r["conversations"].as_array().unwrap();
            assert!(conv.len() >= 2 && conv.len() % 2 == 0);
            for (i, m) in conv.iter().enumerate() {
                assert_eq!(m["from"], if i % 2 == 0 { "human" } else { "gpt" });
                assert!(!m["value"].as_str().unwrap().is_empty());
            }
            // The fixtures carry no system prompts: the build's default is written out.
            assert_eq!(r["system"], system);
            assert!(g.contains_key(r["id"].as_str().unwrap()));
        }
    }
    // Alpaca: the last exchange as instruction/output, earlier ones as history.
    let alpaca = tmp.path().join("alpaca");
    let files = export::llamafactory(&out, system, &alpaca, Format::Alpaca, "patent").unwrap();
    assert_eq!(files.iter().map(|f| f.examples).sum::<u64>(), g.len() as u64);
    let info: serde_json::Value = serde_json::from_slice(&std::fs::read(alpaca.join("dataset_info.json")).unwrap()).unwrap();
    assert_eq!(info["patent_train_stage0"]["columns"]["history"], "history");
    let multi = export::llamafactory(&out, system, &tmp.path().join("again"), Format::Alpaca, "patent").unwrap();
    assert_eq!(files, multi);
    for f in &files {
        assert_eq!(std::fs::read(alpaca.join(&f.file)).unwrap(), std::fs::read(tmp.path().join("again").join(&f.file)).unwrap());
    }

    // LLaMA-Factory's own reading rules (tests/compat/check_llamafactory.py), both layouts.
    let Some(py) = python() else {
        eprintln!("SKIPPED tests/compat/check_llamafactory.py: no python3 with pyarrow and datasets (set CORETECH_PYTHON or create .venv)");
        return;
    };
    for dir in [&lf, &alpaca] {
        let r = std::process::Command::new(&py)
            .arg(root().join("tests/compat/check_llamafactory.py"))
            .arg(dir)
            .arg(&out)
            .arg(system)
            .output()
            .unwrap();
        assert!(r.status.success(), "{}\n{}", String::from_utf8_lossy(&r.stdout), String::from_utf8_lossy(&r.stderr));
        eprintln!("{}", String::from_utf8_lossy(&r.stdout));
    }
}
