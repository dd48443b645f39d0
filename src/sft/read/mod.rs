//! Reading SFT inputs as LLaMA-Factory does: alpaca and sharegpt records from JSON arrays or
//! JSONL, column and tag mappings from `dataset_info.json` ([`dataset_info`]), and CSV files
//! (the GovPatent `question,answer` table, multi-line quoted fields) read as alpaca records.
//!
//! Bytes are read as the corpus readers read them ([`file`], on [`crate::io`]): gzip, zstd and
//! zip inputs and UTF-16 byte-order marks are recognised by their bytes, the layout (JSON
//! array, JSONL, CSV) by content, text is UTF-8 or GB18030/GBK (detected, or the input's
//! `encoding`), and records stream one at a time: memory does not grow with the file (only
//! with what the caller keeps; see [`read_input_with`]).
//!
//! Records become [`Example`]s with LLaMA-Factory's conversion rules ([`convert`]):
//! alpaca: history pairs, then one user turn `instruction + "\n" + input` (empty parts left
//! out), then `output`; sharegpt: an optional leading system turn, then turns that must
//! alternate user/assistant. Deliberate differences, each counted: a sharegpt conversation
//! ending on a user turn is trimmed (config `validate.trailing_user_turn`; LLaMA-Factory drops
//! it), and bare files (no `dataset_info.json`) also read `system` and `history` by name.
//!
//! Every problem names the file and line; bad records are counted and skipped (or fail the run
//! under `--strict`), bad `dataset_info.json` entries are config errors.

mod convert;
pub mod dataset_info;
mod file;

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::config::{InputFormat, SftInput, TrailingUserTurn};
use super::example::{Example, Role};
use super::task::TaskResolver;
use crate::error::{Error, Position, ReadError, ReadErrorKind, Result};
use crate::io::json::kind_of;
use convert::{alpaca, sharegpt, Converted};
use dataset_info::entry_files;
pub use dataset_info::{parse_dataset_info, Columns, InfoEntry, Tags};
use file::{for_each_item, Item};

/// The fate of one record.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// A well-formed example (still to be validated).
    Example(Box<Example>),
    /// A record that is well-formed but carries no trainable example.
    Filtered {
        /// Dataset name.
        dataset: String,
        /// Reason (`empty-conversation`, `trailing-user-turn`, `empty-question`).
        reason: &'static str,
        /// Where it is.
        position: Position,
    },
    /// A record that could not be read.
    Error {
        /// Dataset name.
        dataset: String,
        /// What is wrong and where.
        err: ReadError,
    },
}

/// Per-dataset facts gathered while reading.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatasetInfo {
    /// `alpaca` or `sharegpt`.
    pub formatting: String,
    /// Files read.
    pub files: Vec<String>,
    /// Records that carry a task key (`task_type`).
    pub task_key_present: u64,
    /// Records that do not (their task is inferred unless the input sets one).
    pub task_key_absent: u64,
    /// Sharegpt conversations whose trailing user turn was trimmed.
    pub trimmed_trailing_user_turn: u64,
}

/// Everything read from the configured inputs.
#[derive(Debug, Default)]
pub struct ReadResult {
    /// Record outcomes in input order.
    pub outcomes: Vec<Outcome>,
    /// Per-dataset facts.
    pub datasets: BTreeMap<String, DatasetInfo>,
}

/// What the readers need besides the input itself.
pub struct ReadContext<'a> {
    /// Task keys, aliases and inference.
    pub tasks: &'a TaskResolver,
    /// Sharegpt conversations ending on a user turn.
    pub trailing_user_turn: TrailingUserTurn,
    /// Relative input paths are resolved against this directory.
    pub base: &'a Path,
}

/// Reads one configured input (a file or a LLaMA-Factory data folder) into `out` (every
/// outcome kept: see [`read_input_with`] to stream them instead).
pub fn read_input(input: &SftInput, cx: &ReadContext<'_>, out: &mut ReadResult) -> Result<()> {
    let ReadResult { outcomes, datasets } = out;
    read_input_with(input, cx, datasets, &mut |o| {
        outcomes.push(o);
        Ok(())
    })
}

/// Reads one configured input, calling `sink` with each record's outcome in input order, one
/// record in memory at a time. An `Err` from `sink` stops the reading and is returned.
pub fn read_input_with(
    input: &SftInput,
    cx: &ReadContext<'_>,
    datasets: &mut BTreeMap<String, DatasetInfo>,
    sink: &mut dyn FnMut(Outcome) -> Result<()>,
) -> Result<()> {
    let path = cx.base.join(&input.path);
    let info_path = if path.is_dir() { path.join("dataset_info.json") } else { path.clone() };
    let is_info = info_path.file_name().is_some_and(|n| n == "dataset_info.json");
    if path.is_dir() && !info_path.exists() {
        return Err(Error::Config {
            file: String::new(),
            key: "sft.inputs.path".into(),
            message: format!("{} is a directory without dataset_info.json; list its files instead", path.display()),
        });
    }
    if is_info {
        let dir = info_path.parent().unwrap_or(Path::new(".")).to_path_buf();
        for entry in parse_dataset_info(&info_path, &input.datasets)? {
            let files = entry_files(&dir.join(&entry.file_name), &info_path, &entry.name)?;
            for f in files {
                read_file(&f, &entry.name, Some(&entry.columns), input, cx, datasets, sink)?;
            }
        }
        return Ok(());
    }
    if !input.datasets.is_empty() {
        return Err(Error::Config {
            file: String::new(),
            key: "sft.inputs.datasets".into(),
            message: format!("{}: `datasets` applies to dataset_info.json inputs only", path.display()),
        });
    }
    let name = input.name.clone().unwrap_or_else(|| path.file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_default());
    // `qa.jsonl.gz` is `qa`, as `qa.jsonl` is; `x.sharegpt.jsonl` is `x`.
    let name = [".json", ".jsonl", ".csv"].iter().find_map(|e| name.strip_suffix(e)).map(str::to_string).unwrap_or(name);
    let name = name.strip_suffix(".sharegpt").map(str::to_string).unwrap_or(name);
    read_file(&path, &name, None, input, cx, datasets, sink)
}

/// Reads one data file: each record is converted with `columns` (given by `dataset_info.json`,
/// or, for a bare file, decided by the input's format and its first record) and sent to `sink`.
fn read_file(
    path: &Path,
    dataset: &str,
    columns: Option<&Columns>,
    input: &SftInput,
    cx: &ReadContext<'_>,
    datasets: &mut BTreeMap<String, DatasetInfo>,
    sink: &mut dyn FnMut(Outcome) -> Result<()>,
) -> Result<()> {
    datasets.entry(dataset.to_string()).or_default().files.push(path.display().to_string());
    let mut columns = columns.cloned();
    let mut csv_header: Option<Vec<String>> = None;
    let mut ordinal = 0u64;
    let mut stopped: Option<Error> = None;
    let read = for_each_item(path, input.format, input.encoding, &mut |item| {
        let (position, value) = match item {
            Item::CsvHeader(h) => {
                csv_header = Some(h);
                return true;
            }
            Item::Record(position, value) => (position, value),
        };
        let outcome = match value {
            Err(err) => Outcome::Error { dataset: dataset.to_string(), err },
            Ok(value) => {
                let c = columns.get_or_insert_with(|| bare_columns(input.format, &value, csv_header.as_deref()));
                let info = datasets.get_mut(dataset).expect("inserted above");
                to_outcome(value, position, ordinal, c, dataset, input, cx, info)
            }
        };
        ordinal += 1;
        match sink(outcome) {
            Ok(()) => true,
            Err(e) => {
                stopped = Some(e);
                false
            }
        }
    });
    let sharegpt = columns.map_or(input.format == InputFormat::Sharegpt, |c| c.sharegpt);
    datasets.get_mut(dataset).expect("inserted above").formatting = if sharegpt { "sharegpt" } else { "alpaca" }.into();
    match stopped {
        Some(e) => Err(e),
        None => read,
    }
}

/// A bare file's mapping, from its format and its first record (sharegpt when it holds a
/// `conversations` or `messages` list) or CSV header (the GovPatent table: question →
/// instruction, answer → output).
fn bare_columns(format: InputFormat, first: &Value, csv_header: Option<&[String]>) -> Columns {
    let sharegpt = match format {
        InputFormat::Sharegpt => true,
        InputFormat::Alpaca | InputFormat::Csv => false,
        InputFormat::Auto => first.get("conversations").or_else(|| first.get("messages")).is_some_and(Value::is_array),
    };
    let mut c = Columns::bare(sharegpt);
    if let Some(h) = csv_header {
        if h.iter().any(|k| k == "question") && !h.iter().any(|k| k == "instruction") {
            c.prompt = Some("question".into());
        }
        if h.iter().any(|k| k == "answer") && !h.iter().any(|k| k == "output") {
            c.response = Some("answer".into());
        }
    }
    if sharegpt && first.get("conversations").is_none() && first.get("messages").is_some() {
        c.messages = Some("messages".into());
    }
    c
}

/// One parsed record → its outcome: converted, trailing user turn handled, task resolved.
#[allow(clippy::too_many_arguments)]
fn to_outcome(
    value: Value,
    position: Position,
    ordinal: u64,
    columns: &Columns,
    dataset: &str,
    input: &SftInput,
    cx: &ReadContext<'_>,
    info: &mut DatasetInfo,
) -> Outcome {
    let converted = if columns.sharegpt { sharegpt(&value, columns, &position) } else { alpaca(&value, columns, &position) };
    let (system, mut messages) = match converted {
        Ok(Converted::Messages { system, messages }) => (system, messages),
        Ok(Converted::Filtered(reason)) => return Outcome::Filtered { dataset: dataset.to_string(), reason, position },
        Err(err) => return Outcome::Error { dataset: dataset.to_string(), err },
    };
    if messages.last().is_some_and(|m| m.role == Role::User) {
        match cx.trailing_user_turn {
            TrailingUserTurn::Drop => return Outcome::Filtered { dataset: dataset.to_string(), reason: "trailing-user-turn", position },
            TrailingUserTurn::Trim => {
                messages.pop();
                info.trimmed_trailing_user_turn += 1;
                if messages.is_empty() {
                    return Outcome::Filtered { dataset: dataset.to_string(), reason: "empty-conversation", position };
                }
            }
        }
    }
    // The task: the input's, the record's own key, or inferred.
    let given = cx.tasks.keys().iter().find_map(|k| value.get(k).filter(|v| !v.is_null()).map(|v| (k, v)));
    if given.is_some() {
        info.task_key_present += 1;
    } else {
        info.task_key_absent += 1;
    }
    let mut ex = Example {
        id: format!("{dataset}:{ordinal}"),
        dataset: dataset.to_string(),
        position: position.clone(),
        ordinal,
        task: String::new(),
        task_from: String::new(),
        split: input.split,
        system,
        messages,
    };
    match (&input.task, given) {
        (Some(t), _) => (ex.task, ex.task_from) = (cx.tasks.canonical(t), "config".into()),
        (None, Some((_, Value::String(s)))) => (ex.task, ex.task_from) = (cx.tasks.canonical(s), "given".into()),
        (None, Some((k, other))) => {
            let err = ReadError::new(position, ReadErrorKind::Shape, format!("{k:?} must be a string, found {}", kind_of(other)));
            return Outcome::Error { dataset: dataset.to_string(), err };
        }
        (None, None) => (ex.task, ex.task_from) = (cx.tasks.infer(&ex.question(), &ex.answer()), "inferred".into()),
    }
    Outcome::Example(Box::new(ex))
}
