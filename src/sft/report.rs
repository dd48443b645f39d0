//! The SFT run report (`.report.json`): the record accounting plus what each step found.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::decontam::{CptReport, Overlap};
use super::read::DatasetInfo;
use crate::core::RunReport;

/// Task provenance and split sizes of one task.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskCounts {
    /// Examples whose record carried the task.
    pub given: u64,
    /// Examples whose input set the task.
    pub config: u64,
    /// Examples whose task was inferred.
    pub inferred: u64,
    /// Kept training examples.
    pub train: u64,
    /// Kept validation examples.
    #[serde(default)]
    pub validation: u64,
    /// Kept test examples.
    pub test: u64,
}

/// IPC codes of one example that need attention.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExampleCodes {
    /// Example id.
    pub id: String,
    /// Parsed codes the scheme does not know.
    pub unknown: Vec<String>,
    /// Codes that do not parse (`raw: why`).
    pub malformed: Vec<String>,
}

/// Validation findings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidationReport {
    /// Whether codes were checked against a scheme (false: no `[ipc] scheme` configured).
    pub scheme_checked: bool,
    /// Examples whose answer mentions at least one code.
    pub examples_with_codes: u64,
    /// Code mentions in answers.
    pub mentions: u64,
    /// Mentions written with full-width characters (normalized).
    pub fullwidth: u64,
    /// Distinct normalized codes over all answers.
    pub distinct_codes: u64,
    /// Examples with unknown codes / unknown code count (distinct per example).
    pub unknown_examples: u64,
    /// Unknown codes, summed over examples.
    pub unknown_codes: u64,
    /// Examples with malformed codes.
    pub malformed_examples: u64,
    /// Malformed mentions.
    pub malformed_codes: u64,
    /// Every example with unknown or malformed codes.
    pub per_example: Vec<ExampleCodes>,
    /// Empty answers (dropped).
    pub empty_answers: Vec<String>,
    /// Answers that look cut off: `id: why`.
    pub truncated_answers: Vec<String>,
}

/// Duplicate findings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DuplicateReport {
    /// `id` repeats question and answer of `of`.
    pub exact_pairs: Vec<(String, String)>,
    /// `id` repeats the question of `of` with another answer.
    pub repeated_questions: Vec<(String, String)>,
}

/// Decontamination findings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DecontamReport {
    /// Training examples removed for overlapping a held-out (test or validation) example.
    pub train_removed: Vec<Overlap>,
    /// The CPT-corpus check (absent when no CPT shards are configured).
    pub cpt: Option<CptReport>,
}

/// Templating and truncation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateReport {
    /// `template.cutoff_len`.
    pub cutoff_len: usize,
    /// Examples cut by truncation.
    pub truncated: u64,
    /// Prompt tokens cut.
    pub prompt_tokens_cut: u64,
    /// Answer tokens cut.
    pub answer_tokens_cut: u64,
    /// Whole turns dropped by truncation.
    pub turns_dropped: u64,
    /// Examples dropped for length.
    pub dropped: u64,
    /// Tokens spanning a prompt/answer boundary (mask 0).
    pub straddling_tokens: u64,
    /// Tokens of kept examples.
    pub tokens: u64,
    /// Loss tokens of kept examples.
    pub loss_tokens: u64,
}

/// Grading.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GradingReport {
    /// `heuristic`, `model` or `mix`.
    pub method: String,
    /// What orders the examples: `heuristic`, the model score (`ifd`, `answer_loss`,
    /// `cond_loss`), or `mix(ifd)` and the like.
    pub score_used: String,
    /// Model grading: the weights directory, batches and timing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<ModelGradingReport>,
    /// Training examples per stage.
    pub stage_sizes: Vec<u64>,
    /// Lowest training score of each stage.
    pub stage_min_scores: Vec<f64>,
    /// Per-stage means of the score and each feature (training examples), as rows.
    pub stage_means: Vec<BTreeMap<String, f64>>,
}

/// Model grading.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelGradingReport {
    /// The weights directory graded with.
    pub weights: String,
    /// Examples scored (training and test).
    pub examples: u64,
    /// Batches in the plan, and those taken from an earlier run's `model-scores.jsonl`.
    pub batches: u64,
    /// Batches reused from the progress file.
    pub batches_reused: u64,
    /// Training examples with IFD > 1 (the prompt does not help the model).
    pub ifd_above_one: u64,
    /// What was done with them: `keep`, `last_stage` or `drop`.
    pub ifd_above_one_policy: String,
    /// Training examples moved to the last stage or dropped for IFD > 1.
    pub ifd_above_one_moved: u64,
    /// Seconds spent scoring.
    pub elapsed_s: f64,
}

/// Packing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackingReport {
    /// Row length.
    pub seq_len: usize,
    /// Training rows.
    pub train_rows: u64,
    /// Validation rows.
    #[serde(default)]
    pub validation_rows: u64,
    /// Test rows.
    pub test_rows: u64,
    /// Real (non-padding) tokens in all rows.
    pub tokens: u64,
    /// Padding tokens.
    pub pad_tokens: u64,
}

/// Test examples left out of `test-eval.jsonl`, of one task.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExcludedExamples {
    /// How many.
    pub count: u64,
    /// Their ids.
    pub ids: Vec<String>,
}

/// `test-eval.jsonl`: the test examples of CoreTech's eval tasks (ipc, tech), and the test
/// examples of other tasks left out of it, listed (nothing is dropped silently).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvalSetReport {
    /// Examples written (ipc and tech test examples).
    pub written: u64,
    /// Test examples not written, per task: `chat` (general conversation, never a patent eval
    /// example) and `joint` (the GovPatent table's key-technology-and-code rows: `coretech eval`
    /// scores such a file's joint examples on both parts, but CoreTech's eval sets are the
    /// separate ipc and tech tasks).
    pub excluded: BTreeMap<String, ExcludedExamples>,
}

/// Everything an SFT run reports.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SftReport {
    /// Per-dataset accounting: read = kept + filtered (reason) + duplicates + errors.
    pub run: RunReport,
    /// Per-dataset reading facts (formatting, files, task key present/absent, trimmed turns).
    pub datasets: BTreeMap<String, DatasetInfo>,
    /// Per-task provenance and split sizes.
    pub tasks: BTreeMap<String, TaskCounts>,
    /// IPC codes and answers.
    pub validation: ValidationReport,
    /// Duplicates.
    pub duplicates: DuplicateReport,
    /// Decontamination.
    pub decontam: DecontamReport,
    /// Templating.
    pub template: TemplateReport,
    /// Grading.
    pub grading: GradingReport,
    /// Packing (absent for `sft grade`).
    pub packing: Option<PackingReport>,
    /// What `test-eval.jsonl` holds and leaves out.
    #[serde(default)]
    pub eval_set: EvalSetReport,
}

impl SftReport {
    /// A human-readable summary.
    pub fn table(&self) -> String {
        let mut out = self.run.table();
        for (name, d) in &self.datasets {
            let _ = writeln!(
                out,
                "{name}: {} — task key present {} / absent {}{}",
                d.formatting,
                d.task_key_present,
                d.task_key_absent,
                if d.trimmed_trailing_user_turn > 0 {
                    format!(", {} trailing user turns trimmed", d.trimmed_trailing_user_turn)
                } else {
                    String::new()
                }
            );
        }
        for (task, t) in &self.tasks {
            let _ = writeln!(
                out,
                "task {task}: train {}{} test {} (given {}, config {}, inferred {})",
                t.train,
                if t.validation > 0 { format!(" validation {}", t.validation) } else { String::new() },
                t.test,
                t.given,
                t.config,
                t.inferred
            );
        }
        let v = &self.validation;
        let _ = writeln!(
            out,
            "IPC: {} mentions in {} answers ({} distinct, {} full-width); unknown {} in {} examples{}; malformed {} in {} examples",
            v.mentions,
            v.examples_with_codes,
            v.distinct_codes,
            v.fullwidth,
            v.unknown_codes,
            v.unknown_examples,
            if v.scheme_checked { "" } else { " (no scheme configured: not checked)" },
            v.malformed_codes,
            v.malformed_examples
        );
        let _ = writeln!(out, "answers: {} empty, {} look truncated", v.empty_answers.len(), v.truncated_answers.len());
        let _ = writeln!(
            out,
            "duplicates: {} exact pairs, {} repeated questions",
            self.duplicates.exact_pairs.len(),
            self.duplicates.repeated_questions.len()
        );
        let _ = writeln!(out, "decontamination: {} training examples overlap the held-out sets", self.decontam.train_removed.len());
        if let Some(c) = &self.decontam.cpt {
            let _ = writeln!(
                out,
                "CPT corpus ({} documents, {}-grams): {} of {} test texts flagged ({} too short to check)",
                c.documents,
                c.ngram,
                c.flagged.len(),
                c.checked,
                c.too_short
            );
        }
        let t = &self.template;
        let _ = writeln!(
            out,
            "template: {} tokens ({} with loss); cutoff {}: {} truncated ({} prompt + {} answer tokens cut, {} turns dropped), {} dropped",
            t.tokens, t.loss_tokens, t.cutoff_len, t.truncated, t.prompt_tokens_cut, t.answer_tokens_cut, t.turns_dropped, t.dropped
        );
        let _ =
            writeln!(out, "grading ({}, by {}): stage sizes {:?}", self.grading.method, self.grading.score_used, self.grading.stage_sizes);
        if let Some(m) = &self.grading.model {
            let _ = writeln!(
                out,
                "model grading: {} examples with {} ({} batches, {} reused, {:.1}s); IFD > 1: {} training examples ({})",
                m.examples, m.weights, m.batches, m.batches_reused, m.elapsed_s, m.ifd_above_one, m.ifd_above_one_policy
            );
        }
        let ifd: Vec<String> =
            self.grading.stage_means.iter().filter_map(|m| m.get("ifd").filter(|v| v.is_finite()).map(|v| format!("{v:.4}"))).collect();
        if !ifd.is_empty() {
            let _ = writeln!(out, "mean IFD per stage (training examples): {}", ifd.join(", "));
        }
        let excluded: Vec<String> = self.eval_set.excluded.iter().map(|(t, e)| format!("{} {t}", e.count)).collect();
        let _ = writeln!(
            out,
            "test-eval.jsonl: {} ipc/tech test examples{}",
            self.eval_set.written,
            if excluded.is_empty() { String::new() } else { format!(" ({} test examples of other tasks left out)", excluded.join(", ")) }
        );
        if let Some(p) = &self.packing {
            let fill = p.tokens as f64 / (p.tokens + p.pad_tokens).max(1) as f64;
            let _ = writeln!(
                out,
                "packing: seq_len {}, {} train rows,{} {} test rows, fill {:.1}%",
                p.seq_len,
                p.train_rows,
                if p.validation_rows > 0 { format!(" {} validation rows,", p.validation_rows) } else { String::new() },
                p.test_rows,
                100.0 * fill
            );
        }
        out
    }
}
