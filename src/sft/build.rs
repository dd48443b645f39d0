//! The SFT stage, step by step: read → validate (answers, IPC codes, duplicates) → split →
//! decontaminate → template and tokenize → grade → pack and write. Every record read ends in
//! one bucket of the accounting: kept, filtered (reason), duplicate (kind) or error (kind).
//!
//! SFT sets are small (thousands of examples), so the examples are held in memory; the CPT
//! corpus is only streamed. The output folder, the fingerprint (config, mode, effective
//! `--strict`, the tokenizer's and the IPC scheme's content, every input file including
//! `dataset_info.json`, every CPT shard) and the up-to-date decision belong to [`crate::stage`].

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use xxhash_rust::xxh3::xxh3_64_with_seed;

use super::config::{GradeMethod, IfdAboveOne, ModelScoreKind, Overlength, Policy, SftConfig};
use super::decontam::{cpt_check, train_test_overlap};
use super::example::{Example, Split};
use super::grade::{self, list_items, Features};
use super::grade_model::{self, GraderSettings, ModelScore, ScoreItem};
use super::pack::{pack_rows, write_shards, PackItem, Row};
use super::read::{read_input, Outcome, ReadContext, ReadResult};
use super::report::{EvalSetReport, ExampleCodes, GradingReport, ModelGradingReport, PackingReport, SftReport};
use super::stats::{self, GradedExample};
use super::task::TaskResolver;
use super::template::{render, tokenize, truncate, Tokenized};
use super::text::normalize;
use super::tokenizer::SftTokenizer;
use super::validate::{check_codes, looks_truncated, CodeCheck, IpcLookup};
use crate::core::{Fingerprint, RunOptions, RunReport};
use crate::error::{Error, Result};
use crate::ipc::task::Task;
use crate::shard::{verified_shards, Manifest, ShardInfo};
use crate::stage::{Stage, StageSpec};

/// How far a run goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Everything, including the token shards.
    Build,
    /// Up to grading: `examples.parquet` and `.report.json`, no shards (`coretech sft grade`).
    Grade,
}

/// An example that survived validation, with what later steps need.
struct Kept {
    ex: Example,
    codes: CodeCheck,
    tokens: Tokenized,
    truncated: bool,
    cpt_flagged: bool,
}

fn config_err(key: &str, message: impl Into<String>) -> Error {
    Error::Config { file: String::new(), key: format!("sft.{key}"), message: message.into() }
}

fn check_config(cfg: &SftConfig) -> Result<()> {
    cfg.validate()?;
    for d in &cfg.decontam.cpt_documents {
        if !d.is_dir() {
            return Err(config_err(
                "decontam.cpt_documents",
                format!(
                    "{} is not a directory of document shards (build the CPT documents first, e.g. `coretech run pipelines/cpt.toml`)",
                    d.display()
                ),
            ));
        }
    }
    Ok(())
}

/// The files an input reads: the file itself, or `dataset_info.json` and every file under
/// its folder (a superset of the entries' files: enough for the fingerprint).
fn input_files(cfg: &SftConfig) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for input in &cfg.inputs {
        let p = &input.path;
        let dir = if p.is_dir() {
            p.clone()
        } else if p.file_name().is_some_and(|n| n == "dataset_info.json") {
            p.parent().map(Path::to_path_buf).unwrap_or_default()
        } else {
            out.push(p.clone());
            continue;
        };
        let mut stack = vec![dir];
        let mut found = Vec::new();
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).map_err(|e| Error::io(&d, e))?.flatten() {
                let path = e.path();
                if path.is_dir() {
                    stack.push(path);
                } else if path.is_file() {
                    found.push(path);
                }
            }
        }
        found.sort();
        out.extend(found);
    }
    Ok(out)
}

/// Runs the SFT stage. `scheme` is `None` when no IPC scheme is configured.
pub fn run(cfg: &SftConfig, scheme: Option<&dyn IpcLookup>, strict: bool, mode: Mode) -> Result<SftReport> {
    run_with(cfg, scheme, &RunOptions { strict, ..Default::default() }, mode)
}

/// [`run`] with every option (`--force` included; the task split does not apply).
pub fn run_with(cfg: &SftConfig, scheme: Option<&dyn IpcLookup>, opts: &RunOptions, mode: Mode) -> Result<SftReport> {
    check_config(cfg)?;
    let strict = opts.strict || cfg.strict;
    let mut inputs: Vec<PathBuf> = cfg.inputs.iter().map(|i| i.path.clone()).collect();
    inputs.extend(cfg.decontam.cpt_documents.iter().cloned());
    let mut st = Stage::open(StageSpec {
        name: "sft",
        kind: "sft",
        dir: cfg.output.clone(),
        output: cfg.output.clone(),
        inputs,
        force: opts.force,
    })?;
    let tasks = TaskResolver::new(&cfg.tasks)?;
    let tok = SftTokenizer::load_with(&cfg.tokenizer, cfg.tokenizer_engine)?;
    // Each CPT shard checked against its manifest before the decontamination reads it.
    let cpt: Vec<Vec<_>> = cfg
        .decontam
        .cpt_documents
        .iter()
        .map(|d| Ok(verified_shards(d)?.into_iter().map(|s| (s.digest, s.rows)).collect::<Vec<_>>()))
        .collect::<Result<_>>()?;
    st.set_fingerprint(
        &Fingerprint::new()
            .with("config", cfg)
            .with("mode", &format!("{mode:?}"))
            .with("strict", &strict)
            .with("tokenizer_sha256", &tok.sha256)
            .with("ipc_scheme", &scheme.map(|s| s.digest()))
            .with("cpt_documents", &cpt)
            .with("grade_model", &grade_model_fingerprint(cfg)?)
            .with_files("inputs", &input_files(cfg)?)?,
    );
    if let Some(mut r) = st.up_to_date::<SftReport>() {
        r.run.elapsed_s = st.elapsed_s();
        return Ok(r);
    }
    // SFT sets are small: no resume, every build starts over from what this stage wrote, except
    // the model grading's scores, which resume batch by batch (their own fingerprint decides).
    st.clean(|f| f == grade_model::SCORES_FILE)?;
    let mut owned: Vec<String> = vec![EXAMPLES_FILE.into(), EVAL_FILE.into()];
    // A validation split exists when drawn or given by an input.
    let with_validation = cfg.split.validation_fraction > 0.0 || cfg.inputs.iter().any(|i| i.split == Split::Validation);
    let splits: &[Split] = if with_validation { &[Split::Train, Split::Validation, Split::Test] } else { &[Split::Train, Split::Test] };
    if cfg.grade.method != GradeMethod::Heuristic {
        owned.push(grade_model::SCORES_FILE.into());
    }
    if mode == Mode::Build {
        owned.extend(splits.iter().map(|s| format!("{}/", s.as_str())));
    }
    for f in &owned {
        st.claim(f)?;
    }
    st.save_progress(&())?;
    let mut report = SftReport { run: RunReport::new("sft"), ..Default::default() };

    // Read.
    let cx = ReadContext { tasks: &tasks, trailing_user_turn: cfg.validate.trailing_user_turn, base: Path::new(".") };
    let mut read = ReadResult::default();
    for input in &cfg.inputs {
        read_input(input, &cx, &mut read)?;
    }
    report.datasets = std::mem::take(&mut read.datasets);
    for (name, info) in &report.datasets {
        let s = report.run.source(name);
        s.files += info.files.len() as u64;
        s.bytes_in += info.files.iter().map(|f| std::fs::metadata(f).map(|m| m.len()).unwrap_or(0)).sum::<u64>();
    }
    let mut examples = Vec::new();
    for o in read.outcomes {
        match o {
            Outcome::Example(ex) => examples.push(*ex),
            Outcome::Filtered { dataset, reason, .. } => report.run.filtered(&dataset, reason),
            Outcome::Error { dataset, err } => {
                if strict {
                    return Err(Error::Read(err));
                }
                report.run.error(&dataset, &err);
            }
        }
    }
    for ex in &examples {
        let t = report.tasks.entry(ex.task.clone()).or_default();
        match ex.task_from.as_str() {
            "given" => t.given += 1,
            "config" => t.config += 1,
            _ => t.inferred += 1,
        }
    }

    // Validate answers and codes.
    let mut valid: Vec<(Example, CodeCheck)> = Vec::new();
    let v = &mut report.validation;
    v.scheme_checked = scheme.is_some();
    let mut all_codes: std::collections::BTreeSet<String> = Default::default();
    for ex in examples {
        if ex.messages.iter().any(|m| m.content.trim().is_empty()) {
            let empty_answer = ex.messages.iter().any(|m| m.role == super::example::Role::Assistant && m.content.trim().is_empty());
            let reason = if empty_answer { "empty-answer" } else { "empty-question" };
            if empty_answer {
                v.empty_answers.push(ex.id.clone());
            }
            report.run.filtered(&ex.dataset, reason);
            continue;
        }
        let answer = ex.answer();
        let codes = check_codes(&answer, scheme);
        if !codes.mentions.is_empty() {
            v.examples_with_codes += 1;
        }
        v.mentions += codes.mentions.len() as u64;
        v.fullwidth += codes.mentions.iter().filter(|m| m.fullwidth).count() as u64;
        all_codes.extend(codes.distinct.iter().cloned());
        v.unknown_codes += codes.unknown.len() as u64;
        v.unknown_examples += !codes.unknown.is_empty() as u64;
        v.malformed_codes += codes.malformed.len() as u64;
        v.malformed_examples += !codes.malformed.is_empty() as u64;
        if !codes.unknown.is_empty() || !codes.malformed.is_empty() {
            v.per_example.push(ExampleCodes { id: ex.id.clone(), unknown: codes.unknown.clone(), malformed: codes.malformed.clone() });
        }
        let truncated = ex.messages.iter().filter(|m| m.role == super::example::Role::Assistant).find_map(|m| looks_truncated(&m.content));
        if let Some(why) = truncated {
            v.truncated_answers.push(format!("{}: {why}", ex.id));
        }
        let drop = if truncated.is_some() && cfg.validate.truncated_answer == Policy::Drop {
            Some("truncated-answer")
        } else if !codes.malformed.is_empty() && cfg.validate.malformed_codes == Policy::Drop {
            Some("malformed-ipc-code")
        } else if !codes.unknown.is_empty() && cfg.validate.unknown_codes == Policy::Drop {
            Some("unknown-ipc-code")
        } else {
            None
        };
        match drop {
            Some(reason) => report.run.filtered(&ex.dataset, reason),
            None => valid.push((ex, codes)),
        }
    }
    report.validation.distinct_codes = all_codes.len() as u64;

    // Duplicates, in input order: the first occurrence stays.
    let mut seen_pairs: HashMap<(String, String), String> = HashMap::new();
    let mut seen_questions: HashMap<String, String> = HashMap::new();
    let mut unique = Vec::with_capacity(valid.len());
    for (ex, codes) in valid {
        let q = normalize(&ex.question());
        let pair = (q.clone(), normalize(&ex.answer()));
        if let Some(of) = seen_pairs.get(&pair) {
            report.duplicates.exact_pairs.push((ex.id.clone(), of.clone()));
            if cfg.validate.duplicate_pairs == Policy::Drop {
                duplicate(&mut report.run, &ex.dataset, "exact-pair");
                continue;
            }
        } else if let Some(of) = seen_questions.get(&q) {
            report.duplicates.repeated_questions.push((ex.id.clone(), of.clone()));
            if cfg.validate.duplicate_questions == Policy::Drop {
                duplicate(&mut report.run, &ex.dataset, "question");
                continue;
            }
        }
        seen_pairs.entry(pair).or_insert_with(|| ex.id.clone());
        seen_questions.entry(q).or_insert_with(|| ex.id.clone());
        unique.push((ex, codes));
    }

    // Split.
    let mut exs: Vec<Example> = Vec::with_capacity(unique.len());
    let mut code_checks: Vec<CodeCheck> = Vec::with_capacity(unique.len());
    for (e, c) in unique {
        exs.push(e);
        code_checks.push(c);
    }
    super::split::assign(&mut exs, cfg.split.test_fraction, cfg.split.validation_fraction, cfg.split.seed);

    // Decontaminate: train against the held-out examples (test and validation), then test
    // against the CPT corpus.
    let (train_refs, held_refs): (Vec<&Example>, Vec<&Example>) = exs.iter().partition(|e| e.split == Split::Train);
    let test_refs: Vec<&Example> = held_refs.iter().copied().filter(|e| e.split == Split::Test).collect();
    let overlaps = train_test_overlap(&train_refs, &held_refs, &cfg.decontam);
    let removed: HashMap<String, String> = overlaps.iter().flatten().map(|o| (o.train_id.clone(), o.kind.clone())).collect();
    report.decontam.train_removed = overlaps.into_iter().flatten().collect();
    let cpt_flagged: std::collections::HashSet<String> = if cfg.decontam.cpt_documents.is_empty() {
        Default::default()
    } else {
        let c = cpt_check(&test_refs, &cfg.decontam.cpt_documents, &cfg.decontam)?;
        let set = c.flagged.iter().map(|h| h.id.clone()).collect();
        report.decontam.cpt = Some(c);
        set
    };
    drop((train_refs, held_refs, test_refs));
    let mut survivors: Vec<(Example, CodeCheck)> = Vec::with_capacity(exs.len());
    for (ex, codes) in exs.into_iter().zip(code_checks) {
        match removed.get(&ex.id) {
            Some(kind) => report.run.filtered(&ex.dataset, if kind == "exact" { "test-overlap-exact" } else { "test-overlap-ngram" }),
            None => survivors.push((ex, codes)),
        }
    }

    // Template and tokenize (parallel, order kept), then apply the length policy.
    let tokenized: Vec<Result<Tokenized>> =
        survivors.par_iter().map(|(ex, _)| tokenize(&render(ex, &cfg.template.default_system), &tok)).collect();
    let mut kept: Vec<Kept> = Vec::with_capacity(survivors.len());
    let tr = &mut report.template;
    tr.cutoff_len = cfg.template.cutoff_len;
    for ((ex, codes), t) in survivors.into_iter().zip(tokenized) {
        let mut t = t?;
        tr.straddling_tokens += t.straddling as u64;
        let mut truncated = false;
        let cutoff = cfg.template.cutoff_len;
        match cfg.template.overlength {
            Overlength::Truncate => {
                let cut = truncate(&mut t, cutoff);
                if cut.any() {
                    truncated = true;
                    tr.truncated += 1;
                    tr.prompt_tokens_cut += cut.prompt_tokens as u64;
                    tr.answer_tokens_cut += cut.answer_tokens as u64;
                    tr.turns_dropped += cut.turns_dropped as u64;
                }
            }
            Overlength::Drop if t.input_ids.len() > cutoff => {
                tr.dropped += 1;
                report.run.filtered(&ex.dataset, "over-length");
                continue;
            }
            Overlength::Keep if t.input_ids.len() > cfg.pack.seq_len => {
                tr.dropped += 1;
                report.run.filtered(&ex.dataset, "over-seq-len");
                continue;
            }
            _ => {}
        }
        if !t.loss_mask.contains(&1) {
            report.run.filtered(&ex.dataset, "no-answer-tokens");
            continue;
        }
        tr.tokens += t.input_ids.len() as u64;
        tr.loss_tokens += t.loss_mask.iter().map(|&m| m as u64).sum::<u64>();
        let cpt = cpt_flagged.contains(&ex.id);
        kept.push(Kept { ex, codes, tokens: t, truncated, cpt_flagged: cpt });
    }

    // Grade: model scores first (IFD > 1 may drop training examples), then the features.
    let mut model: Option<Vec<ModelScore>> = None;
    let mut model_report = None;
    if cfg.grade.method != GradeMethod::Heuristic {
        let (scores, mut mr) = model_grade(&kept, cfg, &tok)?;
        let above = |i: usize| kept[i].ex.split == Split::Train && scores[i].ifd() > 1.0;
        let above_idx: Vec<usize> = (0..kept.len()).filter(|&i| above(i)).collect();
        mr.ifd_above_one = above_idx.len() as u64;
        if cfg.grade.ifd_above_one == IfdAboveOne::Drop {
            let drop: std::collections::HashSet<usize> = above_idx.iter().copied().collect();
            let mut keep_scores = Vec::with_capacity(kept.len());
            let mut keep = Vec::with_capacity(kept.len());
            for (i, (k, sc)) in std::mem::take(&mut kept).into_iter().zip(scores).enumerate() {
                if drop.contains(&i) {
                    report.run.filtered(&k.ex.dataset, "ifd-above-1");
                    report.template.tokens -= k.tokens.input_ids.len() as u64;
                    report.template.loss_tokens -= k.tokens.loss_mask.iter().map(|&m| m as u64).sum::<u64>();
                } else {
                    keep.push(k);
                    keep_scores.push(sc);
                }
            }
            kept = keep;
            mr.ifd_above_one_moved = mr.ifd_above_one;
            model = Some(keep_scores);
        } else {
            model = Some(scores);
        }
        model_report = Some(mr);
    }
    let features: Vec<Features> = kept.iter().map(|k| features(k, &cfg.grade.task_weights)).collect();
    let (train_idx, test_idx): (Vec<usize>, Vec<usize>) = (0..kept.len()).partition(|&i| kept[i].ex.split == Split::Train);
    let train_feats: Vec<Features> = train_idx.iter().map(|&i| features[i]).collect();
    let test_feats: Vec<Features> = test_idx.iter().map(|&i| features[i]).collect();
    let train_ids: Vec<String> = train_idx.iter().map(|&i| kept[i].ex.id.clone()).collect();
    let pick = |s: &ModelScore| match cfg.grade.score {
        ModelScoreKind::Ifd => s.ifd(),
        ModelScoreKind::AnswerLoss => s.answer_loss,
        ModelScoreKind::CondLoss => s.cond_loss,
    };
    let (m_train, m_test): (Vec<f64>, Vec<f64>) = match &model {
        Some(m) => (train_idx.iter().map(|&i| pick(&m[i])).collect(), test_idx.iter().map(|&i| pick(&m[i])).collect()),
        None => Default::default(),
    };
    let model_input = model.as_ref().map(|_| grade::ModelInput { train: &m_train, test: &m_test });
    let mut grades = grade::grade(&train_feats, &train_ids, &test_feats, model_input, &cfg.grade)?;
    if let (Some(m), IfdAboveOne::LastStage) = (&model, cfg.grade.ifd_above_one) {
        let last = cfg.grade.stages as u32 - 1;
        for (j, &i) in train_idx.iter().enumerate() {
            if m[i].ifd() > 1.0 {
                grades.train_stages[j] = last;
                if let Some(r) = model_report.as_mut() {
                    r.ifd_above_one_moved += 1;
                }
            }
        }
    }
    let score_used = match cfg.grade.method {
        GradeMethod::Heuristic => "heuristic".to_string(),
        GradeMethod::Model => cfg.grade.score.as_str().to_string(),
        GradeMethod::Mix => format!("mix({})", cfg.grade.score.as_str()),
    };
    let mut score = vec![0.0; kept.len()];
    let mut stage = vec![0u32; kept.len()];
    for (j, &i) in train_idx.iter().enumerate() {
        (score[i], stage[i]) = (grades.train_scores[j], grades.train_stages[j]);
    }
    for (j, &i) in test_idx.iter().enumerate() {
        (score[i], stage[i]) = (grades.test_scores[j], grades.test_stages[j]);
    }

    // Accounting of the kept examples and per-task split sizes.
    for k in &kept {
        let bytes = k.ex.messages.iter().map(|m| m.content.len() as u64).sum();
        report.run.kept(&k.ex.dataset, bytes);
        let t = report.tasks.entry(k.ex.task.clone()).or_default();
        match k.ex.split {
            Split::Train => t.train += 1,
            Split::Validation => t.validation += 1,
            _ => t.test += 1,
        }
    }

    // The graded examples table and its statistics.
    let graded: Vec<GradedExample> = kept
        .iter()
        .enumerate()
        .map(|(i, k)| GradedExample {
            id: k.ex.id.clone(),
            dataset: k.ex.dataset.clone(),
            task: k.ex.task.clone(),
            task_from: k.ex.task_from.clone(),
            split: k.ex.split.as_str().into(),
            stage: stage[i],
            score: score[i],
            score_used: score_used.clone(),
            model: model.as_ref().map(|m| m[i]),
            features: features[i],
            tokens: k.tokens.input_ids.len() as u32,
            truncated: k.truncated,
            cpt_flagged: k.cpt_flagged,
            ipc_codes: k.codes.distinct.clone(),
            unknown_codes: k.codes.unknown.clone(),
            malformed_codes: k.codes.malformed.clone(),
            system: k.ex.system.clone().unwrap_or_default(),
            messages: serde_json::to_string(&k.ex.messages).expect("messages serialize"),
        })
        .collect();
    let df = stats::frame(&[stats::to_batch(&graded)])?;
    let means = stats::stage_means(&df)?;
    let mut stage_means = Vec::new();
    let names: Vec<String> = means.columns().iter().map(|c| c.name().to_string()).collect();
    let cols: Vec<Vec<f64>> = names.iter().map(|n| stats::column_f64(&means, n)).collect::<Result<_>>()?;
    for r in 0..means.height() {
        // Model columns are null (NaN here) without model grading: left out.
        stage_means.push(
            names.iter().zip(&cols).filter(|(_, c)| !c[r].is_nan()).map(|(n, c)| (n.clone(), c[r])).collect::<BTreeMap<String, f64>>(),
        );
    }
    let mut sizes = vec![0u64; cfg.grade.stages];
    for &s in &grades.train_stages {
        sizes[s as usize] += 1;
    }
    report.grading = GradingReport {
        method: format!("{:?}", cfg.grade.method).to_lowercase(),
        score_used,
        model: model_report,
        stage_sizes: sizes,
        stage_min_scores: grades.stage_min_scores.iter().map(|&s| if s.is_finite() { s } else { f64::NAN }).collect(),
        stage_means,
    };

    let out = &cfg.output;
    stats::write_examples(&out.join(EXAMPLES_FILE), &graded, &cfg.writer)?;
    report.eval_set = write_test_alpaca(
        &out.join(EVAL_FILE),
        kept.iter().filter(|k| k.ex.split == Split::Test).map(|k| &k.ex),
        &cfg.template.default_system,
    )?;

    if mode == Mode::Build {
        let pad = tok.token_id("<|endoftext|>").ok_or_else(|| Error::Other("tokenizer has no <|endoftext|> token for padding".into()))?;
        let mut packing = PackingReport { seq_len: cfg.pack.seq_len, ..Default::default() };
        let config_hash = st.fingerprint().to_string();
        for &split in splits {
            let idx: Vec<usize> = (0..kept.len()).filter(|&i| kept[i].ex.split == split).collect();
            let rows = pack_split(&kept, &stage, &idx, cfg, pad)?;
            let real: u64 = rows.iter().map(|r| r.seg_lens.iter().map(|&l| l as u64).sum::<u64>()).sum();
            packing.tokens += real;
            packing.pad_tokens += rows.len() as u64 * cfg.pack.seq_len as u64 - real;
            match split {
                Split::Train => packing.train_rows = rows.len() as u64,
                Split::Validation => packing.validation_rows = rows.len() as u64,
                _ => packing.test_rows = rows.len() as u64,
            }
            // One directory per curriculum stage (`stage-K/`, its own manifest: the trainer reads
            // stages in order from these), and the split's manifest listing all of them.
            let dir = out.join(split.as_str());
            let manifest = |shards: Vec<ShardInfo>, rows: &[Row], examples: Option<usize>| {
                let mut m = Manifest {
                    kind: "sft".into(),
                    tool_version: env!("CARGO_PKG_VERSION").into(),
                    config_hash: config_hash.clone(),
                    shards,
                    accounting: report.run.accounting(),
                    ..Default::default()
                };
                m.info.insert("split".into(), split.as_str().into());
                m.info.insert("tokenizer".into(), tok.name().into());
                m.info.insert("tokenizer_sha256".into(), tok.sha256.clone().into());
                m.info.insert("seq_len".into(), cfg.pack.seq_len.into());
                m.info.insert("cutoff_len".into(), cfg.template.cutoff_len.into());
                m.info.insert("stages".into(), cfg.grade.stages.into());
                let mut per_stage: BTreeMap<String, u64> = BTreeMap::new();
                for r in rows {
                    *per_stage.entry(r.stage.to_string()).or_default() += 1;
                }
                m.info.insert("rows_per_stage".into(), serde_json::to_value(per_stage).expect("serializes"));
                if let Some(n) = examples {
                    m.info.insert("examples".into(), n.into());
                }
                m
            };
            // Writing no rows clears shards an older flat layout left at the split's top level.
            write_shards(&dir, &[], cfg.pack.rows_per_shard, &cfg.writer)?;
            let mut all = Vec::new();
            for k in 0..cfg.grade.stages as u32 {
                let stage_rows: Vec<Row> = rows.iter().filter(|r| r.stage == k).cloned().collect();
                let name = format!("stage-{k}");
                let sdir = dir.join(&name);
                let shards = write_shards(&sdir, &stage_rows, cfg.pack.rows_per_shard, &cfg.writer)?;
                all.extend(shards.iter().cloned().map(|mut s| {
                    s.file = format!("{name}/{}", s.file);
                    s
                }));
                let mut m = manifest(shards, &stage_rows, None);
                m.info.insert("stage".into(), k.into());
                m.save(&sdir)?;
            }
            manifest(all, &rows, Some(idx.len())).save(&dir)?;
        }
        report.packing = Some(packing);
    }
    report.run.elapsed_s = st.elapsed_s();
    // The folder's own manifest: no shards of its own (each split and stage folder has its
    // manifest), the files the build owns, the accounting.
    let mut m = Manifest {
        tool_version: env!("CARGO_PKG_VERSION").into(),
        files: owned,
        accounting: report.run.accounting(),
        ..Default::default()
    };
    m.info.insert("mode".into(), format!("{mode:?}").to_lowercase().into());
    st.finish(m, &report)?;
    Ok(report)
}

/// The graded examples table.
pub const EXAMPLES_FILE: &str = "examples.parquet";
/// The IPC / key-technology test examples in the form `coretech eval` reads.
pub const EVAL_FILE: &str = "test-eval.jsonl";

/// The test examples of CoreTech's eval tasks (IPC codes, key technologies) as alpaca JSON lines
/// (`instruction`, `output`, earlier turns as `history`, `system`, `task_type`, `id`): the file
/// `coretech eval --sft-test` reads. Each record carries the system prompt its example was
/// trained with (its own, else `default_system`), so eval renders the training prompt. Test
/// examples of other tasks (chat, joint) are left out and listed in the returned report.
fn write_test_alpaca<'a>(path: &Path, examples: impl Iterator<Item = &'a Example>, default_system: &str) -> Result<EvalSetReport> {
    use super::example::Role;
    let mut out = Vec::new();
    let mut rep = EvalSetReport::default();
    for ex in examples {
        if !matches!(Task::from_name(&ex.task), Some(Task::Ipc | Task::Tech)) {
            let e = rep.excluded.entry(ex.task.clone()).or_default();
            e.count += 1;
            e.ids.push(ex.id.clone());
            continue;
        }
        let turns: Vec<(&str, &str)> = ex
            .messages
            .chunks(2)
            .filter_map(|p| match p {
                [u, a] if u.role == Role::User && a.role == Role::Assistant => Some((u.content.as_str(), a.content.as_str())),
                _ => None,
            })
            .collect();
        let Some(((question, answer), history)) = turns.split_last() else { continue };
        let mut rec = serde_json::json!({ "id": ex.id, "instruction": question, "input": "", "output": answer, "task_type": ex.task });
        if !history.is_empty() {
            rec["history"] = serde_json::json!(history.iter().map(|(q, a)| [q, a]).collect::<Vec<_>>());
        }
        let system = ex.system.as_deref().unwrap_or(default_system);
        if !system.is_empty() {
            rec["system"] = system.into();
        }
        serde_json::to_writer(&mut out, &rec).expect("json serializes");
        out.push(b'\n');
        rep.written += 1;
    }
    crate::core::fsio::write_atomic(path, &out)?;
    Ok(rep)
}

/// The grading checkpoint's weights directory and file digests (`None` for heuristic grading):
/// a new checkpoint in the run directory makes the stage rebuild.
fn grade_model_fingerprint(cfg: &SftConfig) -> Result<Option<(String, String)>> {
    match (&cfg.grade.model, cfg.grade.method) {
        (Some(p), GradeMethod::Heuristic) => {
            // Kept in the config (switching methods back and forth is common), but said.
            tracing::warn!("sft.grade.model = {:?} is not used: method = \"heuristic\" (\"model\" or \"mix\" grade with it)", p);
            Ok(None)
        }
        (Some(p), _) => {
            let (dir, fp) = grade_model::weights_fingerprint(p).map_err(|e| config_err("grade.model", format!("{}: {e}", p.display())))?;
            Ok(Some((dir.display().to_string(), fp)))
        }
        _ => Ok(None),
    }
}

/// Scores every kept example (training and test) with the grading checkpoint, resuming from
/// and appending to `model-scores.jsonl` in the output directory.
fn model_grade(kept: &[Kept], cfg: &SftConfig, tok: &SftTokenizer) -> Result<(Vec<ModelScore>, ModelGradingReport)> {
    let g = &cfg.grade;
    let path = g.model.as_ref().ok_or_else(|| config_err("grade.model", "no grading checkpoint set"))?;
    let grader = grade_model::Grader::load(path, g.device, g.gpu, g.dtype)
        .map_err(|e| config_err("grade.model", format!("{}: {e}", path.display())))?;
    // The assistant header exactly as the template writes it before an answer.
    let header = tok.encode(&format!("{}assistant\n", super::template::IM_START))?.ids;
    let pad = tok.token_id(super::template::END_OF_TEXT).unwrap_or(0);
    let longest = kept.iter().map(|k| k.tokens.input_ids.len() + header.len()).max().unwrap_or(0);
    let settings =
        GraderSettings { batch_size: g.batch_size, row_len: cfg.pack.seq_len.max(longest), dtype: g.dtype, ce_chunk: g.ce_chunk_tokens };
    let items: Vec<ScoreItem> = kept.iter().map(|k| ScoreItem { ids: &k.tokens.input_ids, mask: &k.tokens.loss_mask }).collect();
    grader.check_fits(&items, &header).map_err(|e| config_err("grade.model", e.to_string()))?;
    std::fs::create_dir_all(&cfg.output).map_err(|e| Error::io(&cfg.output, e))?;
    let progress = cfg.output.join(grade_model::SCORES_FILE);
    let (scores, run) = grade_model::score_all(&grader, &items, &header, &settings, pad, Some(&progress))?;
    for (k, s) in kept.iter().zip(&scores) {
        if !(s.cond_loss.is_finite() && s.answer_loss.is_finite() && s.answer_loss > 0.0) {
            return Err(Error::Other(format!(
                "model grading: example {} has losses cond {} / answer {} (not finite or zero)",
                k.ex.id, s.cond_loss, s.answer_loss
            )));
        }
    }
    let report = ModelGradingReport {
        weights: grader.dir.display().to_string(),
        examples: kept.len() as u64,
        batches: run.batches as u64,
        batches_reused: run.batches_reused as u64,
        ifd_above_one_policy: serde_json::to_value(g.ifd_above_one).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default(),
        elapsed_s: run.elapsed_s,
        ..Default::default()
    };
    Ok((scores, report))
}

fn duplicate(run: &mut RunReport, dataset: &str, kind: &str) {
    let s = run.source(dataset);
    s.read += 1;
    *s.duplicates.entry(kind.to_string()).or_default() += 1;
}

fn features(k: &Kept, task_weights: &BTreeMap<String, f64>) -> Features {
    Features {
        answer_tokens: k.tokens.answer_tokens as f64,
        question_tokens: k.tokens.question_tokens as f64,
        ipc_codes: k.codes.distinct.len() as f64,
        ipc_depth: k.codes.mean_depth(),
        list_items: k
            .ex
            .messages
            .iter()
            .filter(|m| m.role == super::example::Role::Assistant)
            .map(|m| list_items(&m.content))
            .sum::<usize>() as f64,
        turns: k.ex.turns() as f64,
        task_weight: task_weights.get(&k.ex.task).copied().unwrap_or(0.0),
    }
}

/// Packs one split: stage by stage (curriculum order), examples within a stage in a seeded
/// order, best fit, never mixing stages in a row.
fn pack_split(kept: &[Kept], stage: &[u32], idx: &[usize], cfg: &SftConfig, pad_id: u32) -> Result<Vec<Row>> {
    let mut by_stage: BTreeMap<u32, Vec<(u64, usize)>> = BTreeMap::new();
    for &i in idx {
        by_stage.entry(stage[i]).or_default().push((xxh3_64_with_seed(kept[i].ex.id.as_bytes(), cfg.pack.seed), i));
    }
    let mut rows = Vec::new();
    for (s, mut v) in by_stage {
        v.sort();
        let items: Vec<PackItem> = v
            .iter()
            .map(|&(_, i)| PackItem {
                id: kept[i].ex.id.clone(),
                task: kept[i].ex.task.clone(),
                source: kept[i].ex.dataset.clone(),
                input_ids: kept[i].tokens.input_ids.clone(),
                loss_mask: kept[i].tokens.loss_mask.clone(),
            })
            .collect();
        rows.extend(pack_rows(&items, s, cfg.pack.seq_len, pad_id, cfg.pack.open_bins)?);
    }
    Ok(rows)
}
