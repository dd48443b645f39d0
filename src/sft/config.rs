//! The `[sft]` section of a pipeline: inputs, validation, splits and decontamination, ChatML
//! templating, difficulty grading and packing.

use std::collections::BTreeMap;
use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::example::Split;
use crate::io::Encoding;
use crate::ipc::task::TaskRules;
use crate::shard::WriterConfig;
use crate::tokenize::Engine;
use crate::train::config::{ComputeDtype, DeviceKind};

/// The SFT stage: instruction files → validated, decontaminated, graded, templated and packed
/// SFT token shards.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SftConfig {
    /// Input files (alpaca or sharegpt JSON/JSONL, the GovPatent `question,answer` CSV) and
    /// LLaMA-Factory data folders (a directory holding `dataset_info.json`, or that file).
    #[schemars(length(min = 1))]
    pub inputs: Vec<SftInput>,
    /// Output directory: `train/` and `test/` token shards with their manifests,
    /// `examples.parquet` (every kept example, graded) and `.report.json`.
    #[schemars(length(min = 1))]
    pub output: PathBuf,
    /// The tokenizer (`tokenizer.json`, optionally zstd-compressed as `.zst`).
    #[serde(default = "default_tokenizer")]
    #[schemars(length(min = 1))]
    pub tokenizer: PathBuf,
    /// Tokenizer engine: `auto` (the exact fast path when the tokenizer qualifies), `hf` or
    /// `fast`; the ids are the same.
    #[serde(default)]
    pub tokenizer_engine: Engine,
    /// Fail on the first bad record instead of counting and skipping it.
    #[serde(default)]
    pub strict: bool,
    /// How tasks are named and inferred.
    #[serde(default)]
    pub tasks: TaskConfig,
    /// Answer, IPC-code and duplicate checks.
    #[serde(default)]
    pub validate: ValidateConfig,
    /// Train/test split.
    #[serde(default)]
    pub split: SplitConfig,
    /// Train/test overlap removal and the CPT-corpus contamination check.
    #[serde(default)]
    pub decontam: DecontamConfig,
    /// ChatML rendering, loss mask and truncation.
    #[serde(default)]
    pub template: TemplateConfig,
    /// Difficulty grading and curriculum stages.
    #[serde(default)]
    pub grade: GradeConfig,
    /// Packing examples into fixed-length rows.
    #[serde(default)]
    pub pack: PackConfig,
    /// Parquet settings.
    #[serde(default)]
    pub writer: WriterConfig,
}

impl SftConfig {
    /// Checks what needs no file: ranges (they live in the schema), the task patterns, and the
    /// settings that depend on each other. Keys are named from the pipeline root (`sft.…`).
    pub fn validate(&self) -> crate::Result<()> {
        crate::core::schema::check(self, "sft")?;
        if self.template.overlength != Overlength::Keep && self.pack.seq_len < self.template.cutoff_len {
            return Err(crate::Error::Config {
                file: String::new(),
                key: "sft.pack.seq_len".into(),
                message: format!(
                    "{} is below sft.template.cutoff_len {} (raise it, or set sft.template.overlength = \"keep\")",
                    self.pack.seq_len, self.template.cutoff_len
                ),
            });
        }
        if self.split.test_fraction + self.split.validation_fraction > 1.0 {
            return Err(crate::Error::Config {
                file: String::new(),
                key: "sft.split.validation_fraction".into(),
                message: format!("{} + sft.split.test_fraction {} is over 1", self.split.validation_fraction, self.split.test_fraction),
            });
        }
        if self.grade.method != GradeMethod::Heuristic && self.grade.model.is_none() {
            return Err(crate::Error::Config {
                file: String::new(),
                key: "sft.grade.model".into(),
                message: format!(
                    "method = \"{}\" needs a checkpoint or training run directory to grade with",
                    serde_json::to_value(self.grade.method).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default()
                ),
            });
        }
        super::task::TaskResolver::new(&self.tasks)?;
        Ok(())
    }
}

fn default_tokenizer() -> PathBuf {
    PathBuf::from("fixtures/tokenizers/qwen2.5/tokenizer.json.zst")
}

/// Record layout of an input.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum InputFormat {
    /// Decide from the content: a file starting with `[` or `{` is JSON (`conversations`/
    /// `messages` lists → sharegpt, else alpaca); one whose first line is a comma-separated
    /// header (the GovPatent `question,answer` table) is CSV.
    #[default]
    Auto,
    /// `instruction`, `input`, `output`, `system`, `history`.
    Alpaca,
    /// `conversations` of `from`/`value` turns (or `messages` of `role`/`content`).
    Sharegpt,
    /// A CSV file with `question` and `answer` columns (multi-line quoted fields allowed).
    Csv,
}

/// One input: a file, or a LLaMA-Factory data folder.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SftInput {
    /// A data file, or a directory holding `dataset_info.json` (or that file itself).
    #[schemars(length(min = 1))]
    pub path: PathBuf,
    /// Dataset name used in ids and reports (default: the file stem, or the
    /// `dataset_info.json` key).
    #[serde(default)]
    pub name: Option<String>,
    /// Record layout (files only; `dataset_info.json` gives its own `formatting`).
    #[serde(default)]
    pub format: InputFormat,
    /// Text encoding of the records: `auto` (UTF-8, or GB18030/GBK where a record is not
    /// UTF-8), `utf8`, or `gb18030` (which also reads GBK and GB2312). A UTF-16 file with a
    /// byte-order mark is decoded whatever this says.
    #[serde(default)]
    pub encoding: Encoding,
    /// Which `dataset_info.json` entries to read (empty: all of them).
    #[serde(default)]
    pub datasets: Vec<String>,
    /// Task of every record, overriding the record's own task key and inference.
    #[serde(default)]
    pub task: Option<String>,
    /// Split of every record: `train`, `validation`, `test`, or `auto` (the seeded split decides).
    #[serde(default = "default_split")]
    pub split: Split,
}

fn default_split() -> Split {
    Split::Auto
}

impl SftInput {
    /// An input with every setting at its default (layout and encoding detected, task from
    /// the records, seeded split).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            name: None,
            format: InputFormat::default(),
            encoding: Encoding::default(),
            datasets: Vec::new(),
            task: None,
            split: default_split(),
        }
    }
}

/// Task names and inference.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct TaskConfig {
    /// Record keys that carry the task, tried in order.
    pub keys: Vec<String>,
    /// Task values → canonical task names, besides the built-in names (`IPC`, `ipc_task` → ipc;
    /// `key_tech`, `tech_task` → tech; `joint`; `general` → chat; case-insensitive). Other
    /// values are lower-cased and kept.
    pub aliases: BTreeMap<String, String>,
    /// Inference for records without a task key (and no `task` on their input): `ipc`, `tech`,
    /// `joint`, else `chat` (see `crate::ipc::task`).
    pub infer: TaskRules,
}

impl Default for TaskConfig {
    fn default() -> Self {
        Self { keys: vec!["task_type".into(), "task".into()], aliases: BTreeMap::new(), infer: TaskRules::default() }
    }
}

/// Keep or drop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    /// Keep the example (it is still counted and listed in the report).
    Keep,
    /// Drop the example (counted under its reason).
    Drop,
}

/// What to do with a sharegpt conversation that ends on a user turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum TrailingUserTurn {
    /// Remove the unanswered last user turn (it carries no loss) and keep the rest.
    Trim,
    /// Drop the conversation, as LLaMA-Factory does ("Invalid message count").
    Drop,
}

/// Validation settings.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ValidateConfig {
    /// Answers that look cut off (odd `**` or code-fence count, ending on a comma or an open
    /// bracket, a CJK prose paragraph ending on an ideograph). `keep` (the default) lists them
    /// in `.report.json` (`validation.truncated_answers`) as a warning: the check is a
    /// heuristic, and a complete Chinese answer may end without punctuation.
    pub truncated_answer: Policy,
    /// Examples whose question and answer both repeat an earlier example (after whitespace
    /// normalization): drop keeps the first.
    pub duplicate_pairs: Policy,
    /// Examples whose question repeats an earlier one with a different answer.
    pub duplicate_questions: Policy,
    /// Examples with IPC codes the scheme does not know.
    pub unknown_codes: Policy,
    /// Examples with IPC-looking codes that do not parse (wrong section letter, missing group…).
    pub malformed_codes: Policy,
    /// Sharegpt conversations ending on a user turn.
    pub trailing_user_turn: TrailingUserTurn,
}

impl Default for ValidateConfig {
    fn default() -> Self {
        Self {
            truncated_answer: Policy::Keep,
            duplicate_pairs: Policy::Drop,
            duplicate_questions: Policy::Keep,
            unknown_codes: Policy::Keep,
            malformed_codes: Policy::Keep,
            trailing_user_turn: TrailingUserTurn::Trim,
        }
    }
}

/// Train/test split settings.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct SplitConfig {
    /// Share of each task's `auto` examples that go to test (0 puts all in train).
    #[schemars(range(min = 0.0, max = 1.0))]
    pub test_fraction: f64,
    /// Share of each task's `auto` examples set aside as a validation split (`validation/stage-K`,
    /// for the trainer's validation loss; 0: none). Drawn after test, so adding a validation
    /// split never changes the test set.
    #[schemars(range(min = 0.0, max = 1.0))]
    pub validation_fraction: f64,
    /// Seed of the split hash.
    pub seed: u64,
}

impl Default for SplitConfig {
    fn default() -> Self {
        Self { test_fraction: 0.1, validation_fraction: 0.0, seed: 42 }
    }
}

/// Decontamination settings.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct DecontamConfig {
    /// n of the n-grams compared between train and test questions (units: one CJK character,
    /// or one lower-cased ASCII word/number); at most 1000.
    #[schemars(range(min = 1, max = 1000))]
    pub question_ngram: usize,
    /// A train question whose n-gram Jaccard similarity with some test question reaches this
    /// value is removed (exact matches after normalization are always removed).
    #[schemars(range(min = 0.0, max = 1.0))]
    pub question_threshold: f64,
    /// Document shard directories of the CPT corpus; test questions whose n-grams occur there
    /// are flagged. Empty: no CPT check.
    pub cpt_documents: Vec<PathBuf>,
    /// n of the CPT n-gram check (at most 1000).
    #[schemars(range(min = 1, max = 1000))]
    pub cpt_ngram: usize,
    /// Check test answers against the CPT corpus too.
    pub cpt_check_answers: bool,
    /// Documents read per batch while streaming the CPT shards.
    #[schemars(range(min = 1))]
    pub batch_rows: usize,
}

impl Default for DecontamConfig {
    fn default() -> Self {
        Self {
            question_ngram: 5,
            question_threshold: 0.8,
            cpt_documents: Vec::new(),
            cpt_ngram: 13,
            cpt_check_answers: false,
            batch_rows: 1024,
        }
    }
}

/// What to do with examples longer than `cutoff_len` tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Overlength {
    /// Cut as LLaMA-Factory does (per turn, `infer_seqlen`; later turns dropped).
    Truncate,
    /// Drop the example.
    Drop,
    /// Keep it whole (it must still fit `pack.seq_len`, else it is dropped as `over-seq-len`).
    Keep,
}

/// ChatML templating.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct TemplateConfig {
    /// System prompt of examples that have none (the Qwen2.5 template's default; empty: no
    /// system turn). Inference uses the same default, so set `eval.settings.system` to match
    /// when you change it.
    pub default_system: String,
    /// Longest example in tokens (LLaMA-Factory `cutoff_len`).
    #[schemars(range(min = 1, max = 1_048_576))]
    pub cutoff_len: usize,
    /// Examples over `cutoff_len`.
    pub overlength: Overlength,
}

impl Default for TemplateConfig {
    fn default() -> Self {
        Self { default_system: super::template::DEFAULT_SYSTEM_PROMPT.into(), cutoff_len: 2048, overlength: Overlength::Truncate }
    }
}

/// Grading method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum GradeMethod {
    /// Features of the text and its tokens; no model.
    Heuristic,
    /// The model score (`grade.score`) from the checkpoint `grade.model`.
    Model,
    /// The model score and the heuristic score, each normalized over the training examples
    /// (`grade.mix.normalization`) and summed with the weights of `grade.mix`.
    Mix,
}

/// Which model score orders the examples.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ModelScoreKind {
    /// Instruction-Following Difficulty: `cond_loss / answer_loss`.
    Ifd,
    /// Mean loss of the answer tokens after the assistant header alone.
    AnswerLoss,
    /// Mean loss of the answer tokens given the full prompt (the training loss).
    CondLoss,
}

impl ModelScoreKind {
    /// The name used in configs and in `examples.parquet`'s `score_used`.
    pub fn as_str(self) -> &'static str {
        match self {
            ModelScoreKind::Ifd => "ifd",
            ModelScoreKind::AnswerLoss => "answer_loss",
            ModelScoreKind::CondLoss => "cond_loss",
        }
    }
}

/// What happens to training examples whose IFD exceeds 1 (the prompt does not help the model;
/// Li et al. filter these).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum IfdAboveOne {
    /// Grade them like any other example.
    Keep,
    /// Put them in the last curriculum stage.
    LastStage,
    /// Drop them (counted as `ifd-above-1`).
    Drop,
}

/// Weights of the model and heuristic scores under `method = "mix"`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct MixConfig {
    /// Weight of the normalized model score.
    #[schemars(range(min = 0.0))]
    pub model: f64,
    /// Weight of the normalized heuristic score.
    #[schemars(range(min = 0.0))]
    pub heuristic: f64,
    /// How each of the two scores is scaled over the training examples before weighting.
    pub normalization: Normalization,
}

impl Default for MixConfig {
    fn default() -> Self {
        Self { model: 1.0, heuristic: 1.0, normalization: Normalization::Rank }
    }
}

/// How each feature is scaled before weighting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Normalization {
    /// Mid-rank percentile among the training examples, in [0, 1].
    Rank,
    /// (x − min) / (max − min) over the training examples.
    Minmax,
    /// (x − mean) / std over the training examples.
    Zscore,
}

/// Weights of the heuristic features in the difficulty score.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct FeatureWeights {
    /// Answer length in tokens.
    pub answer_tokens: f64,
    /// Question length in tokens.
    pub question_tokens: f64,
    /// Distinct well-formed IPC codes in the answer.
    pub ipc_codes: f64,
    /// Mean depth of those codes (3 subclass, 4 main group, 5 subgroup).
    pub ipc_depth: f64,
    /// Listed items (top-level numbered lines) in the answer: technologies, codes.
    pub list_items: f64,
    /// Number of user/assistant exchanges.
    pub turns: f64,
    /// The task's weight from `task_weights`.
    pub task: f64,
}

impl Default for FeatureWeights {
    fn default() -> Self {
        Self { answer_tokens: 1.0, question_tokens: 0.25, ipc_codes: 0.5, ipc_depth: 0.5, list_items: 0.5, turns: 0.25, task: 0.5 }
    }
}

/// Difficulty grading and curriculum stages.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct GradeConfig {
    /// `heuristic` (default), `model` or `mix`.
    pub method: GradeMethod,
    /// The grading checkpoint (`model`, `mix`): a weights directory (HF layout, e.g. Qwen2.5 or
    /// a checkpoint of ours) or a training run directory (its newest complete checkpoint).
    pub model: Option<PathBuf>,
    /// Where the grading model runs.
    pub device: DeviceKind,
    /// CUDA device ordinal.
    pub gpu: usize,
    /// Compute dtype of the grading model.
    pub dtype: ComputeDtype,
    /// Rows (of `pack.seq_len` tokens, several examples each) per forward pass.
    #[schemars(range(min = 1))]
    pub batch_size: usize,
    /// Answer tokens per LM-head chunk: the logits held at once are this × the vocabulary
    /// (256 × Qwen2.5's 151,936 × 4 bytes ≈ 156 MB on CPU).
    #[schemars(range(min = 1))]
    pub ce_chunk_tokens: usize,
    /// The model score that orders the examples.
    pub score: ModelScoreKind,
    /// Training examples with IFD > 1: `keep`, `last_stage` or `drop` (counted either way).
    pub ifd_above_one: IfdAboveOne,
    /// `method = "mix"`: weights and normalization of the two scores.
    pub mix: MixConfig,
    /// Number of curriculum stages (quantiles of the score over the training examples).
    #[schemars(range(min = 1, max = 1000))]
    pub stages: usize,
    /// Feature scaling before weighting.
    pub normalization: Normalization,
    /// Feature weights.
    pub weights: FeatureWeights,
    /// Difficulty of each task, used as the `task` feature (unlisted tasks: 0).
    pub task_weights: BTreeMap<String, f64>,
}

impl Default for GradeConfig {
    fn default() -> Self {
        Self {
            method: GradeMethod::Heuristic,
            model: None,
            device: DeviceKind::Cpu,
            gpu: 0,
            dtype: ComputeDtype::F32,
            batch_size: 8,
            ce_chunk_tokens: 256,
            score: ModelScoreKind::Ifd,
            ifd_above_one: IfdAboveOne::Keep,
            mix: MixConfig::default(),
            stages: 3,
            normalization: Normalization::Rank,
            weights: FeatureWeights::default(),
            task_weights: [("chat", 0.0), ("tech", 0.5), ("ipc", 1.0), ("joint", 1.0)].iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        }
    }
}

/// Packing settings.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct PackConfig {
    /// Tokens per packed row (at least `template.cutoff_len`).
    #[schemars(range(min = 1, max = 1_048_576))]
    pub seq_len: usize,
    /// Rows per shard file.
    #[schemars(range(min = 1))]
    pub rows_per_shard: usize,
    /// Seed of the order of examples within a stage.
    pub seed: u64,
    /// Rows kept open for best fit before the fullest is closed (more: fuller rows).
    #[schemars(range(min = 1))]
    pub open_bins: usize,
}

impl Default for PackConfig {
    fn default() -> Self {
        Self { seq_len: 2048, rows_per_shard: 10_000, seed: 42, open_bins: 64 }
    }
}
