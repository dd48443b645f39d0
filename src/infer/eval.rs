//! `coretech eval`: answers the questions of an SFT test split with a checkpoint and scores
//! them against the reference answers ([`super::score`] defines the measures).
//!
//! The split is read by the SFT readers ([`crate::sft::read`]): alpaca JSONL or a JSON array of
//! alpaca records (`instruction`, `input` (optional), `output`, and optionally `system`,
//! `history` (`[[question, answer], …]`) and `task_type`), or sharegpt conversations. The
//! question is the last user turn (alpaca: `instruction`, followed by a newline and `input`
//! when `input` is not empty, as LLaMA-Factory builds it); the reference is the answer to it;
//! earlier turns are the history. The prompt is the ChatML rendering (the crate's one renderer,
//! [`crate::sft::template::render_chat`]) of system (the `--system` override, else the
//! record's, else the template default), history and question: the SFT build's training text
//! up to the answer. Any bad record fails the run, naming its file and line.
//!
//! Task ([`crate::ipc::task`], shared with the SFT build): `task_type` (or `task`) names it
//! (`IPC`, `IPC_TASK`, `tech`, `key_tech`, `TECH_TASK`, `joint`; case-insensitive); without one
//! it is inferred by the shared classifier. `ipc` examples are scored on their codes, `tech` on
//! their technologies, `joint` on both; a `chat` example, or an unknown task name, is an error
//! (eval sets hold patent questions).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::generate::{generate, GenerationConfig, StopReason};
use super::model::Checkpoint;
use super::score::{self, IpcScore, LevelSummary, TechScore, TechSummary};
use super::{tokenizer, InferError, Result};
use crate::error::{Position, ReadError, ReadErrorKind};
pub use crate::ipc::task::Task;
use crate::ipc::task::{Classifier, TaskRules};
use crate::sft::config::{SftInput, TaskConfig, TrailingUserTurn};
use crate::sft::read::{read_input_with, Outcome, ReadContext};
use crate::sft::task::TaskResolver;
use crate::sft::template::{render_chat, DEFAULT_SYSTEM_PROMPT};
use crate::sft::{Example, Message, Role, Split};

/// Evaluation settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct EvalConfig {
    /// Generation settings (greedy by default, so a report is reproducible).
    pub generation: GenerationConfig,
    /// System prompt for every example; unset uses each record's `system`, else the template
    /// default.
    pub system: Option<String>,
    /// Evaluate only the first N examples of the file.
    #[schemars(range(min = 1))]
    pub limit: Option<usize>,
    /// Least character-bigram Dice similarity for a fuzzy key-technology match, in (0, 1].
    #[schemars(range(min = 0.0, max = 1.0), extend("exclusiveMinimum" = 0.0))]
    pub tech_match_threshold: f64,
}

impl Default for EvalConfig {
    fn default() -> Self {
        EvalConfig { generation: GenerationConfig::default(), system: None, limit: None, tech_match_threshold: 0.5 }
    }
}

impl EvalConfig {
    /// Checks the ranges.
    pub fn validate(&self) -> Result<()> {
        self.generation.validate()?;
        if !(self.tech_match_threshold > 0.0 && self.tech_match_threshold <= 1.0) {
            return Err(InferError::config("tech-threshold", format!("{} is not in (0, 1]", self.tech_match_threshold)));
        }
        Ok(())
    }
}

/// One question of a test split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalExample {
    /// 0-based record number in the file.
    pub index: usize,
    /// 1-based line (JSONL).
    pub line: Option<u64>,
    /// The task.
    pub task: Task,
    /// True when the file gave no `task_type` and the task was inferred.
    pub task_inferred: bool,
    /// The record's system prompt.
    pub system: Option<String>,
    /// Earlier (question, answer) turns.
    pub history: Vec<(String, String)>,
    /// The question.
    pub question: String,
    /// The reference answer.
    pub reference: String,
}

impl EvalExample {
    /// The conversation to answer; `system` overrides the record's.
    pub fn messages(&self, system: Option<&str>) -> Vec<Message> {
        let mut msgs = Vec::new();
        if let Some(s) = system.or(self.system.as_deref()) {
            msgs.push(Message::new(Role::System, s));
        }
        for (q, a) in &self.history {
            msgs.push(Message::new(Role::User, q.clone()));
            msgs.push(Message::new(Role::Assistant, a.clone()));
        }
        msgs.push(Message::new(Role::User, self.question.clone()));
        msgs
    }
}

/// The task of an example without `task_type`: the shared classifier with its default rules
/// ([`crate::ipc::task`]).
pub fn infer_task(question: &str, reference: &str) -> Task {
    Classifier::default_rules().classify(question, reference)
}

/// One example read by the SFT reader → an eval example (`index`: its number among the
/// examples of the file); `None` for a chat example (not scored).
fn eval_example(ex: &Example, index: usize) -> std::result::Result<Option<EvalExample>, ReadError> {
    let bad = |m: String| ReadError::new(ex.position.clone(), ReadErrorKind::Shape, m);
    let task = Task::from_name(&ex.task)
        .ok_or_else(|| bad(format!("unknown task_type {:?} (expected IPC, tech, key_tech, joint or chat)", ex.task)))?;
    if !task.is_patent_task() {
        return Ok(None);
    }
    let (answer, asked) = ex.messages.split_last().filter(|(a, _)| a.role == Role::Assistant).ok_or_else(|| bad("no answer".into()))?;
    let (question, earlier) = asked.split_last().filter(|(q, _)| q.role == Role::User).ok_or_else(|| bad("no question".into()))?;
    let history = earlier.chunks(2).map(|p| (p[0].content.clone(), p.get(1).map(|m| m.content.clone()).unwrap_or_default())).collect();
    Ok(Some(EvalExample {
        index,
        line: ex.position.line,
        task,
        task_inferred: ex.task_from == "inferred",
        system: ex.system.clone(),
        history,
        question: question.content.clone(),
        reference: answer.content.clone(),
    }))
}

/// A test split as read: the examples to score, and how many were left out per task.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EvalSplit {
    /// The ipc, tech and joint examples, in file order.
    pub examples: Vec<EvalExample>,
    /// Examples not scored, per task (`chat`: general conversation, given or inferred).
    pub excluded: BTreeMap<String, u64>,
}

/// The examples of a test split that `coretech eval` scores (see [`read_split`]; chat examples
/// are left out).
pub fn read_examples(path: &Path) -> Result<Vec<EvalExample>> {
    read_split(path).map(|s| s.examples)
}

/// Reads a test split with the SFT readers (JSONL, a JSON array or sharegpt, told apart by
/// content): the first bad or untrainable record is an error naming its file and line; chat
/// examples are counted in [`EvalSplit::excluded`].
pub fn read_split(path: &Path) -> Result<EvalSplit> {
    let tasks =
        TaskResolver::new(&TaskConfig { keys: vec!["task_type".into(), "task".into()], infer: TaskRules::default(), ..Default::default() })
            .map_err(|e| InferError::config("tasks", e.to_string()))?;
    let cx = ReadContext { tasks: &tasks, trailing_user_turn: TrailingUserTurn::Trim, base: Path::new(".") };
    let input = SftInput { split: Split::Test, ..SftInput::new(path) };
    let mut out = EvalSplit::default();
    // Streamed: the first bad or untrainable record stops the reading.
    read_input_with(&input, &cx, &mut BTreeMap::new(), &mut |o| {
        let err = match o {
            Outcome::Example(ex) => match eval_example(&ex, out.examples.len()) {
                Ok(Some(e)) => {
                    out.examples.push(e);
                    return Ok(());
                }
                Ok(None) => {
                    *out.excluded.entry(ex.task.clone()).or_default() += 1;
                    return Ok(());
                }
                Err(e) => e,
            },
            // A blank file holds no bad record, only none at all: `run` says "no examples".
            Outcome::Error { err, .. } if err.kind == ReadErrorKind::Empty => return Ok(()),
            Outcome::Error { err, .. } => err,
            Outcome::Filtered { reason, position, .. } => {
                ReadError::new(position, ReadErrorKind::Shape, format!("record has nothing to answer ({reason})"))
            }
        };
        Err(crate::error::Error::Read(err))
    })
    .map_err(|e| match e {
        crate::error::Error::Io { path, error } => InferError::io(path, error),
        crate::error::Error::Read(err) => err.into(),
        other => InferError::config("sft_test", other.to_string()),
    })?;
    Ok(out)
}

/// One evaluated example.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExampleResult {
    /// 0-based record number in the file.
    pub index: usize,
    /// 1-based line (JSONL).
    pub line: Option<u64>,
    /// The task.
    pub task: Task,
    /// True when the task was inferred.
    pub task_inferred: bool,
    /// The question.
    pub question: String,
    /// The reference answer.
    pub reference: String,
    /// The generated answer.
    pub generated: String,
    /// Prompt tokens.
    pub prompt_tokens: usize,
    /// Generated tokens.
    pub generated_tokens: usize,
    /// Why generation ended.
    pub stop: StopReason,
    /// IPC scores (IPC examples).
    pub ipc: Option<IpcScore>,
    /// Key-technology scores (tech examples).
    pub tech: Option<TechScore>,
}

/// Scores `generated` for `ex`'s task (a joint example on its codes and its technologies).
pub fn score_answer(ex: &EvalExample, generated: &str, tech_match_threshold: f64) -> (Option<IpcScore>, Option<TechScore>) {
    let ipc = matches!(ex.task, Task::Ipc | Task::Joint).then(|| score::score_ipc(generated, &ex.reference));
    let tech = matches!(ex.task, Task::Tech | Task::Joint).then(|| score::score_tech(generated, &ex.reference, tech_match_threshold));
    (ipc, tech)
}

/// Generates and scores each example in turn; `progress` sees each result as it is done.
pub fn evaluate(
    ckpt: &mut Checkpoint,
    examples: &[EvalExample],
    cfg: &EvalConfig,
    mut progress: impl FnMut(&ExampleResult),
) -> Result<Vec<ExampleResult>> {
    cfg.validate()?;
    let mut results = Vec::with_capacity(examples.len());
    for ex in examples {
        let prompt = render_chat(&ex.messages(cfg.system.as_deref()), DEFAULT_SYSTEM_PROMPT, true).text;
        let ids = tokenizer::encode(&ckpt.tokenizer, &prompt)?;
        let gen = generate(ckpt, &ids, &cfg.generation, |_| Ok(()))?;
        let (ipc, tech) = score_answer(ex, &gen.text, cfg.tech_match_threshold);
        let r = ExampleResult {
            index: ex.index,
            line: ex.line,
            task: ex.task,
            task_inferred: ex.task_inferred,
            question: ex.question.clone(),
            reference: ex.reference.clone(),
            generated: gen.text,
            prompt_tokens: gen.prompt_tokens,
            generated_tokens: gen.tokens.len(),
            stop: gen.stop,
            ipc,
            tech,
        };
        progress(&r);
        results.push(r);
    }
    Ok(results)
}

/// Scores over all examples.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Aggregate {
    /// Examples evaluated.
    pub examples: usize,
    /// IPC examples.
    pub ipc_examples: usize,
    /// Key-technology examples.
    pub tech_examples: usize,
    /// IPC scores per level (empty without IPC examples).
    pub ipc: Vec<LevelSummary>,
    /// Key-technology scores (absent without tech examples).
    pub tech: Option<TechSummary>,
    /// Tokens generated in all.
    pub generated_tokens: usize,
    /// Answers cut by `max_new_tokens` or the context length.
    pub truncated_answers: usize,
}

/// Aggregates results.
pub fn aggregate(results: &[ExampleResult]) -> Aggregate {
    let ipc: Vec<&IpcScore> = results.iter().filter_map(|r| r.ipc.as_ref()).collect();
    let tech: Vec<&TechScore> = results.iter().filter_map(|r| r.tech.as_ref()).collect();
    Aggregate {
        examples: results.len(),
        ipc_examples: ipc.len(),
        tech_examples: tech.len(),
        ipc: if ipc.is_empty() { Vec::new() } else { score::summarize_ipc(ipc.iter().copied()) },
        tech: (!tech.is_empty()).then(|| score::summarize_tech(tech.iter().copied())),
        generated_tokens: results.iter().map(|r| r.generated_tokens).sum(),
        truncated_answers: results.iter().filter(|r| r.stop != StopReason::StopToken).count(),
    }
}

/// The JSON report of `coretech eval`. It holds no timings, so the same checkpoint, split and
/// settings give the same bytes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    /// The checkpoint directory.
    pub checkpoint: PathBuf,
    /// The test split.
    pub sft_test: PathBuf,
    /// Where the tokenizer came from.
    pub tokenizer: String,
    /// Compute dtype.
    pub dtype: String,
    /// The settings.
    pub config: EvalConfig,
    /// Examples in the file that eval scores (ipc, tech, joint).
    pub examples_in_file: usize,
    /// Examples in the file left out of the scores, per task (`chat`).
    #[serde(default)]
    pub excluded: BTreeMap<String, u64>,
    /// Scores over all evaluated examples.
    pub aggregate: Aggregate,
    /// Per-example results.
    pub examples: Vec<ExampleResult>,
}

fn fmt_opt(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.3}"))
}

impl EvalReport {
    /// Writes the report as pretty JSON, atomically (temporary file, then rename).
    pub fn write(&self, path: &Path) -> Result<()> {
        let json = serde_json::to_vec_pretty(self).map_err(|e| InferError::io(path, std::io::Error::other(e)))?;
        let tmp = path.with_extension("json.tmp");
        let mut f = std::fs::File::create(&tmp).map_err(|e| InferError::io(&tmp, e))?;
        f.write_all(&json).and_then(|_| f.write_all(b"\n")).and_then(|_| f.sync_all()).map_err(|e| InferError::io(&tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| InferError::io(path, e))
    }

    /// A printable summary table.
    pub fn summary(&self) -> String {
        let a = &self.aggregate;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "eval {} on {}: {} of {} examples ({} IPC, {} tech), {} tokens generated, {} answers cut short",
            self.checkpoint.display(),
            self.sft_test.display(),
            a.examples,
            self.examples_in_file,
            a.ipc_examples,
            a.tech_examples,
            a.generated_tokens,
            a.truncated_answers
        );
        for (task, n) in &self.excluded {
            let _ = writeln!(s, "  {n} {task} examples of the file are not scored (not a patent task)");
        }
        if !a.ipc.is_empty() {
            let _ = writeln!(s, "{:<22}{:>8}{:>8}{:>8}{:>10}{:>8}{:>6}", "IPC (micro)", "P", "R", "F1", "macro-F1", "exact", "n");
            for l in &a.ipc {
                let _ = writeln!(
                    s,
                    "  {:<20}{:>8}{:>8}{:>8}{:>10}{:>8}{:>6}",
                    l.level.name(),
                    fmt_opt(l.micro.precision),
                    fmt_opt(l.micro.recall),
                    fmt_opt(l.micro.f1),
                    fmt_opt(l.macro_f1),
                    fmt_opt(l.exact_match),
                    l.examples_with_reference
                );
            }
        }
        if let Some(t) = &a.tech {
            let _ = writeln!(s, "{:<22}{:>8}{:>8}{:>8}{:>10}", "key tech (micro)", "P", "R", "F1", "macro-F1");
            let fuzzy = format!("fuzzy ≥ {}", self.config.tech_match_threshold);
            for (name, p, m) in [("exact", &t.exact, t.exact_macro_f1), (fuzzy.as_str(), &t.fuzzy, t.fuzzy_macro_f1)] {
                let _ =
                    writeln!(s, "  {:<20}{:>8}{:>8}{:>8}{:>10}", name, fmt_opt(p.precision), fmt_opt(p.recall), fmt_opt(p.f1), fmt_opt(m));
            }
        }
        s
    }
}

/// The `eval` pipeline stage: a checkpoint answers an SFT test split and is scored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EvalStageConfig {
    /// Weights directory, or a training run directory (its newest complete checkpoint).
    #[schemars(length(min = 1))]
    pub checkpoint: PathBuf,
    /// Alpaca JSONL test split (the SFT build writes `test-eval.jsonl`).
    #[schemars(length(min = 1))]
    pub sft_test: PathBuf,
    /// Where the JSON report (per example and aggregate) is written.
    pub report: Option<PathBuf>,
    /// `cpu`, `cuda` or `cuda:N`.
    #[serde(default = "default_device")]
    #[schemars(regex(pattern = r"^(cpu|cuda(:[0-9]+)?)$"))]
    pub device: String,
    /// Generation and scoring.
    #[serde(default)]
    pub settings: EvalConfig,
}

fn default_device() -> String {
    "cpu".into()
}

impl EvalStageConfig {
    /// Checks the section (its ranges live in the schema); keys are named from the pipeline
    /// root (`eval.…`).
    pub fn validate(&self) -> crate::Result<()> {
        crate::core::schema::check(self, "eval")
    }
}

/// Runs the `eval` stage: loads the checkpoint, evaluates, writes the report; returns it.
pub fn run_stage(cfg: &EvalStageConfig) -> Result<EvalReport> {
    let dir = crate::train::checkpoint::weights_dir(&cfg.checkpoint).map_err(|e| InferError::config("eval.checkpoint", e.to_string()))?;
    let opts = super::LoadOptions { device: super::model::parse_device(&cfg.device)?, ..Default::default() };
    let mut ckpt = Checkpoint::load(&dir, &opts)?;
    let rep = run(&mut ckpt, &cfg.sft_test, &cfg.settings, |_| {})?;
    if let Some(path) = &cfg.report {
        rep.write(path)?;
    }
    Ok(rep)
}

/// Reads the split, evaluates up to `cfg.limit` examples and builds the report.
pub fn run(ckpt: &mut Checkpoint, sft_test: &Path, cfg: &EvalConfig, progress: impl FnMut(&ExampleResult)) -> Result<EvalReport> {
    cfg.validate()?;
    let EvalSplit { examples, excluded } = read_split(sft_test)?;
    if examples.is_empty() {
        return Err(ReadError::new(Position::new(sft_test.display().to_string(), None, None), ReadErrorKind::Shape, "no examples").into());
    }
    let n = cfg.limit.unwrap_or(examples.len()).min(examples.len());
    let results = evaluate(ckpt, &examples[..n], cfg, progress)?;
    Ok(EvalReport {
        checkpoint: ckpt.dir.clone(),
        sft_test: sft_test.to_path_buf(),
        tokenizer: ckpt.tokenizer_origin.clone(),
        dtype: format!("{:?}", ckpt.dtype).to_lowercase(),
        config: cfg.clone(),
        examples_in_file: examples.len(),
        excluded,
        aggregate: aggregate(&results),
        examples: results,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(content: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("test.jsonl");
        std::fs::write(&p, content).unwrap();
        (dir, p)
    }

    #[test]
    fn jsonl_and_json_array_read_alike() {
        let rec = r#"{"instruction":"Q","input":"more","output":"1. **H04L**","system":"S","history":[["q0","a0"]]}"#;
        let (_d, p) = write(&format!("{rec}\n\n{rec}"));
        let a = read_examples(&p).unwrap();
        let (_d2, p2) = write(&format!("[{rec},{rec}]"));
        let b = read_examples(&p2).unwrap();
        assert_eq!(a.len(), 2);
        assert_eq!(a[1].line, Some(3));
        assert_eq!(a[0].question, "Q\nmore");
        assert_eq!(a[0].task, Task::Ipc);
        assert!(a[0].task_inferred);
        assert_eq!(b[0].question, a[0].question);
        let msgs = a[0].messages(None);
        assert_eq!(msgs.iter().map(|m| m.role).collect::<Vec<_>>(), [Role::System, Role::User, Role::Assistant, Role::User]);
        assert_eq!(a[0].messages(Some("X"))[0].content, "X");
    }

    #[test]
    fn task_rule() {
        assert_eq!(infer_task("量子隐形传态的类别代码有哪些？", "1. **H04B10/70**"), Task::Ipc);
        assert_eq!(infer_task("化工新材料相关的IPC分类号有哪些？", "1. **C08**"), Task::Ipc);
        assert_eq!(infer_task("哪些分类号？", "没有"), Task::Ipc);
        assert_eq!(infer_task("人工智能有哪些关键技术？", "1. **人工智能硬件平台**"), Task::Tech);
        let (_d, p) = write(r#"{"instruction":"x","output":"1. **H04L**","task_type":"key_tech"}"#);
        let ex = read_examples(&p).unwrap();
        assert_eq!((ex[0].task, ex[0].task_inferred), (Task::Tech, false));
    }

    #[test]
    fn fixture_tasks_are_inferred_as_their_files_say() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/data/sft");
        for (file, task) in [
            ("GovPatent-SFT_QA_IPC.jsonl", Task::Ipc),
            ("Paper-SFT_QA_IPC.jsonl", Task::Ipc),
            ("GovPatent-SFT_QA_Tech.jsonl", Task::Tech),
            ("Paper-SFT_QA_Tech.jsonl", Task::Tech),
        ] {
            let ex = read_examples(&root.join(file)).unwrap();
            assert!(!ex.is_empty());
            assert!(ex.iter().all(|e| e.task == task), "{file}");
        }
    }

    #[test]
    fn joint_examples_are_scored_on_both_parts_and_chat_is_counted_out() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/data/sft");
        // The GovPatent table asks for key technologies and their codes: joint, both parts scored.
        let split = read_split(&root.join("GovPatent-SFT_raw_data.csv")).unwrap();
        assert_eq!((split.examples.len(), split.excluded.len()), (8, 0));
        for ex in &split.examples {
            assert_eq!((ex.task, ex.task_inferred), (Task::Joint, true));
            let (ipc, tech) = score_answer(ex, &ex.reference, 0.5);
            let (ipc, tech) = (ipc.unwrap(), tech.unwrap());
            assert!(!ipc.reference_codes.is_empty() && !tech.reference.is_empty());
            assert_eq!((ipc.levels[2].prf.f1, tech.exact.f1), (Some(1.0), Some(1.0)));
        }
        // General conversations are chat: none is scored, all are counted.
        let split = read_split(&root.join("flagai_aquila_convo_samples.sharegpt.jsonl")).unwrap();
        assert!(split.examples.is_empty());
        assert_eq!(split.excluded, BTreeMap::from([("chat".to_string(), 100)]));
    }

    #[test]
    fn bad_records_name_file_and_line() {
        for (content, want) in [
            // The SFT readers' messages and kinds (one reader for training and eval data).
            ("{\"instruction\":\"q\",\"output\":\"a\"}\n{\"instruction\":\"q\"}\n", ":2 (byte 33): missing-field: missing \"output\""),
            ("{\"instruction\":\"q\",\"output\":\"a\"}\n{\"instruction\":\"q\",\"output\":\n", ":2 (byte 33): json:"),
            ("{\"instruction\":1,\"output\":\"a\"}", ":1 (byte 0): shape: \"instruction\" must be a string, found a number"),
            // `chat` is a task now (left out of the scores and counted); an unknown name is an error.
            ("{\"instruction\":\"q\",\"output\":\"a\",\"task_type\":\"poetry\"}", "unknown task_type \"poetry\""),
            ("{\"instruction\":\"q\",\"output\":\"a\",\"history\":[[\"q\"]]}", "\"history\"[0] must be a [question, answer] pair"),
            ("[{\"instruction\":\"q\",\"output\":\"a\"}, 3]", "shape: expected a JSON object per record, found a number"),
            // A cut JSON array: the cut element is one `truncated` error at its first byte.
            ("[{\"instruction\":\"q\",", ":1 (byte 1): truncated: input ends inside a JSON array element"),
            // The layout is sniffed from the content, never the name: text that is neither JSON
            // nor a CSV header is a shape error at byte 0.
            ("just some text\n", ":1 (byte 0): shape: not JSON (an array or JSONL) and not CSV"),
        ] {
            let (_d, p) = write(content);
            let err = read_examples(&p).unwrap_err().to_string();
            assert!(err.contains("test.jsonl") && err.contains(want), "{content:?}: {err}");
        }
        // ... so a CSV table named .jsonl is read as CSV.
        let (_d, p) = write("instruction,output,task_type\nq,a,tech\n");
        let examples = read_examples(&p).unwrap();
        assert_eq!((examples.len(), examples[0].line), (1, Some(2)));
        let (_d, p) = write("");
        std::fs::write(&p, b"{\"instruction\":\"\xff\"}").unwrap();
        let err = read_examples(&p).unwrap_err().to_string();
        assert!(err.contains("test.jsonl:1 (byte 16): encoding"), "{err}");
    }

    #[test]
    fn references_scored_against_themselves_are_perfect_on_every_fixture_example() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/data/sft");
        let mut results = Vec::new();
        for file in ["GovPatent-SFT_QA_IPC.jsonl", "Paper-SFT_QA_IPC.jsonl", "GovPatent-SFT_QA_Tech.jsonl", "Paper-SFT_QA_Tech.jsonl"] {
            for ex in read_examples(&root.join(file)).unwrap() {
                let (ipc, tech) = score_answer(&ex, &ex.reference, 0.5);
                if let Some(t) = &tech {
                    assert!(!t.reference.is_empty(), "{file} record {}", ex.index);
                }
                if let Some(i) = &ipc {
                    assert!(!i.reference_codes.is_empty(), "{file} record {}", ex.index);
                }
                results.push(ExampleResult {
                    index: ex.index,
                    line: ex.line,
                    task: ex.task,
                    task_inferred: ex.task_inferred,
                    question: ex.question.clone(),
                    reference: ex.reference.clone(),
                    generated: ex.reference.clone(),
                    prompt_tokens: 0,
                    generated_tokens: 0,
                    stop: StopReason::StopToken,
                    ipc,
                    tech,
                });
            }
        }
        let agg = aggregate(&results);
        assert_eq!(agg.ipc_examples, 168 + 137);
        assert_eq!(agg.tech_examples, 130 + 139);
        for l in &agg.ipc {
            assert_eq!(l.micro.f1, Some(1.0), "{:?}", l.level);
            assert_eq!(l.macro_f1, Some(1.0));
            assert_eq!(l.exact_match, Some(1.0));
            assert!(l.micro.counts.tp > 0);
        }
        let t = agg.tech.unwrap();
        assert_eq!((t.exact.f1, t.fuzzy.f1), (Some(1.0), Some(1.0)));
        assert!(t.exact.counts.tp >= 2 * 269);
    }
}
