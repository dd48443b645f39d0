//! Reading SFT inputs as LLaMA-Factory does: alpaca and sharegpt records from JSON arrays or
//! JSONL, column and tag mappings from `dataset_info.json`, and CSV files (the GovPatent
//! `question,answer` table, multi-line quoted fields) read as alpaca records.
//!
//! Records become [`Example`]s with LLaMA-Factory's conversion rules (`converter.py`):
//! alpaca: history pairs, then one user turn `instruction + "\n" + input` (empty parts left
//! out), then `output`; sharegpt: an optional leading system turn, then turns that must
//! alternate user/assistant. Deliberate differences, each counted: a sharegpt conversation
//! ending on a user turn is trimmed (config `validate.trailing_user_turn`; LLaMA-Factory drops
//! it), and bare files (no `dataset_info.json`) also read `system` and `history` by name.
//!
//! Every problem names the file and line; bad records are counted and skipped (or fail the run
//! under `--strict`), bad `dataset_info.json` entries are config errors.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::config::{InputFormat, SftInput, TrailingUserTurn};
use super::example::{Example, Message, Role};
use super::task::TaskResolver;
use crate::error::{Error, Position, ReadError, ReadErrorKind, Result};

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

/// Which record fields hold what (LLaMA-Factory's `DatasetAttr` columns and tags).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Columns {
    /// `alpaca` or `sharegpt`.
    pub sharegpt: bool,
    /// Alpaca instruction column.
    pub prompt: Option<String>,
    /// Alpaca input column.
    pub query: Option<String>,
    /// Alpaca output column.
    pub response: Option<String>,
    /// Alpaca history column (list of `[question, answer]`).
    pub history: Option<String>,
    /// System prompt column.
    pub system: Option<String>,
    /// Sharegpt messages column.
    pub messages: Option<String>,
    /// Sharegpt tags.
    pub tags: Tags,
    /// Bare file: accept both `from`/`value` (human/gpt) and `role`/`content` (user/assistant).
    pub lenient_tags: bool,
}

/// Sharegpt tags (LLaMA-Factory defaults: `from`, `value`, `human`, `gpt`, `observation`,
/// `function_call`, `system`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tags {
    /// Key of a turn's role.
    pub role: String,
    /// Key of a turn's text.
    pub content: String,
    /// Role value of user turns.
    pub user: String,
    /// Role value of assistant turns.
    pub assistant: String,
    /// Role value of tool results (not supported: such records are errors).
    pub observation: String,
    /// Role value of tool calls (not supported).
    pub function: String,
    /// Role value of a leading system turn.
    pub system: String,
}

impl Default for Tags {
    fn default() -> Self {
        Self {
            role: "from".into(),
            content: "value".into(),
            user: "human".into(),
            assistant: "gpt".into(),
            observation: "observation".into(),
            function: "function_call".into(),
            system: "system".into(),
        }
    }
}

impl Columns {
    /// LLaMA-Factory's defaults for a formatting.
    pub fn lf_default(sharegpt: bool) -> Self {
        Self {
            sharegpt,
            prompt: Some("instruction".into()),
            query: Some("input".into()),
            response: Some("output".into()),
            history: None,
            system: None,
            messages: Some("conversations".into()),
            tags: Tags::default(),
            lenient_tags: false,
        }
    }

    /// A bare file's mapping: LLaMA-Factory's defaults plus `system` and `history` by name, and
    /// both tag conventions.
    fn bare(sharegpt: bool) -> Self {
        Self { history: Some("history".into()), system: Some("system".into()), lenient_tags: true, ..Self::lf_default(sharegpt) }
    }
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

/// Reads one configured input (a file or a LLaMA-Factory data folder) into `out`.
pub fn read_input(input: &SftInput, cx: &ReadContext<'_>, out: &mut ReadResult) -> Result<()> {
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
                read_file(&f, &entry.name, Some(&entry.columns), input, cx, out)?;
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
    let name = name.strip_suffix(".sharegpt").map(str::to_string).unwrap_or(name);
    read_file(&path, &name, None, input, cx, out)
}

/// A `dataset_info.json` entry, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InfoEntry {
    /// Dataset name (the key).
    pub name: String,
    /// `file_name`, relative to the data folder (a file or a directory of files).
    pub file_name: String,
    /// Its column and tag mapping.
    pub columns: Columns,
}

const COLUMN_KEYS: &[&str] = &[
    "prompt", "query", "response", "history", "messages", "system", "tools", "images", "videos", "audios", "chosen", "rejected", "kto_tag",
];
const UNSUPPORTED_COLUMNS: &[&str] = &["tools", "images", "videos", "audios", "chosen", "rejected", "kto_tag"];
const TAG_KEYS: &[&str] = &["role_tag", "content_tag", "user_tag", "assistant_tag", "observation_tag", "function_tag", "system_tag"];
/// Entry keys that only matter for hub/script loading or sampling and are ignored for local files.
const IGNORED_ENTRY_KEYS: &[&str] = &["split", "subset", "folder", "revision"];
const REMOTE_ENTRY_KEYS: &[&str] = &["hf_hub_url", "ms_hub_url", "om_hub_url", "script_url", "cloud_file_name"];

/// Parses `dataset_info.json` and returns the selected entries (all when `select` is empty),
/// in file order. Unknown column or tag names, unsupported features (ranking, tools, media,
/// hub datasets) and undefined dataset names are config errors naming the key.
pub fn parse_dataset_info(path: &Path, select: &[String]) -> Result<Vec<InfoEntry>> {
    let file = path.display().to_string();
    let cfg_err = |key: String, message: String| Error::Config { file: file.clone(), key, message };
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let value: Value = serde_json::from_slice(strip_bom(&bytes))
        .map_err(|e| cfg_err(format!("line {} column {}", e.line(), e.column()), format!("not valid JSON: {e}")))?;
    let Value::Object(map) = value else {
        return Err(cfg_err("(root)".into(), "expected a JSON object of dataset entries".into()));
    };
    for s in select {
        if !map.contains_key(s) {
            return Err(cfg_err(
                s.clone(),
                format!("undefined dataset {s:?} (defined: {})", map.keys().cloned().collect::<Vec<_>>().join(", ")),
            ));
        }
    }
    let mut out = Vec::new();
    for (name, entry) in &map {
        if !select.is_empty() && !select.contains(name) {
            continue;
        }
        let Value::Object(e) = entry else {
            return Err(cfg_err(name.clone(), "expected an object".into()));
        };
        if let Some(k) = REMOTE_ENTRY_KEYS.iter().find(|k| e.contains_key(**k)) {
            return Err(cfg_err(
                format!("{name}.{k}"),
                "hub and script datasets are not supported: download the data and set file_name".into(),
            ));
        }
        let str_of = |key: &str| -> Result<Option<String>> {
            match e.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(_) => Err(cfg_err(format!("{name}.{key}"), "expected a string".into())),
            }
        };
        let file_name = str_of("file_name")?.ok_or_else(|| cfg_err(name.clone(), "missing file_name".into()))?;
        let sharegpt = match str_of("formatting")?.as_deref() {
            None | Some("alpaca") => false,
            Some("sharegpt") => true,
            Some(other) => {
                return Err(cfg_err(format!("{name}.formatting"), format!("unknown formatting {other:?} (expected alpaca or sharegpt)")))
            }
        };
        if e.get("ranking").and_then(Value::as_bool) == Some(true) {
            return Err(cfg_err(format!("{name}.ranking"), "preference (ranking) datasets are not SFT data".into()));
        }
        if e.get("num_samples").is_some_and(|v| !v.is_null()) {
            return Err(cfg_err(format!("{name}.num_samples"), "sampling is not supported; select the records in the file".into()));
        }
        for k in e.keys() {
            let known = k == "file_name"
                || k == "formatting"
                || k == "ranking"
                || k == "columns"
                || k == "tags"
                || k == "num_samples"
                || IGNORED_ENTRY_KEYS.contains(&k.as_str());
            if !known {
                return Err(cfg_err(format!("{name}.{k}"), format!("unknown dataset_info key {k:?}")));
            }
        }
        let mut columns = Columns::lf_default(sharegpt);
        if let Some(cols) = e.get("columns") {
            let Value::Object(cols) = cols else {
                return Err(cfg_err(format!("{name}.columns"), "expected an object".into()));
            };
            for (k, v) in cols {
                if !COLUMN_KEYS.contains(&k.as_str()) {
                    return Err(cfg_err(
                        format!("{name}.columns.{k}"),
                        format!("unknown column mapping {k:?} (expected one of {})", COLUMN_KEYS.join(", ")),
                    ));
                }
                let v = match v {
                    Value::String(s) => Some(s.clone()),
                    Value::Null => None,
                    _ => return Err(cfg_err(format!("{name}.columns.{k}"), "expected a column name (string)".into())),
                };
                if UNSUPPORTED_COLUMNS.contains(&k.as_str()) {
                    if v.is_some() {
                        return Err(cfg_err(
                            format!("{name}.columns.{k}"),
                            format!("column {k:?} (tools, media, preference data) is not supported for SFT"),
                        ));
                    }
                    continue;
                }
                // As in LLaMA-Factory, a column only applies to its formatting.
                match (k.as_str(), sharegpt) {
                    ("prompt", false) => columns.prompt = v,
                    ("query", false) => columns.query = v,
                    ("response", false) => columns.response = v,
                    ("history", false) => columns.history = v,
                    ("messages", true) => columns.messages = v,
                    ("system", _) => columns.system = v,
                    _ => {}
                }
            }
        }
        if let Some(tags) = e.get("tags") {
            let Value::Object(tags) = tags else {
                return Err(cfg_err(format!("{name}.tags"), "expected an object".into()));
            };
            for (k, v) in tags {
                if !TAG_KEYS.contains(&k.as_str()) {
                    return Err(cfg_err(
                        format!("{name}.tags.{k}"),
                        format!("unknown tag {k:?} (expected one of {})", TAG_KEYS.join(", ")),
                    ));
                }
                let Value::String(v) = v else {
                    return Err(cfg_err(format!("{name}.tags.{k}"), "expected a string".into()));
                };
                if sharegpt {
                    let t = &mut columns.tags;
                    let slot = match k.as_str() {
                        "role_tag" => &mut t.role,
                        "content_tag" => &mut t.content,
                        "user_tag" => &mut t.user,
                        "assistant_tag" => &mut t.assistant,
                        "observation_tag" => &mut t.observation,
                        "function_tag" => &mut t.function,
                        _ => &mut t.system,
                    };
                    *slot = v.clone();
                }
            }
        }
        out.push(InfoEntry { name: name.clone(), file_name, columns });
    }
    Ok(out)
}

/// The data files of an entry: the file itself, or the files of a directory (sorted).
fn entry_files(path: &Path, info: &Path, name: &str) -> Result<Vec<PathBuf>> {
    if path.is_dir() {
        let mut v: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(|e| Error::io(path, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .collect();
        v.sort();
        return Ok(v);
    }
    if !path.exists() {
        return Err(Error::Config {
            file: info.display().to_string(),
            key: format!("{name}.file_name"),
            message: format!("{} does not exist", path.display()),
        });
    }
    Ok(vec![path.to_path_buf()])
}

fn strip_bom(b: &[u8]) -> &[u8] {
    b.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(b)
}

/// A framed record: its position and its parsed JSON (or why it could not be parsed).
struct Raw {
    position: Position,
    value: std::result::Result<Value, ReadError>,
}

/// Reads one data file: frames it (JSON array, JSONL or CSV, by content), converts each record
/// with `columns` (or the bare-file mapping), and appends the outcomes.
fn read_file(
    path: &Path,
    dataset: &str,
    columns: Option<&Columns>,
    input: &SftInput,
    cx: &ReadContext<'_>,
    out: &mut ReadResult,
) -> Result<()> {
    let file = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let bytes = strip_bom(&bytes);
    let first = bytes.iter().copied().find(|b| !b.is_ascii_whitespace());
    let csv = input.format == InputFormat::Csv
        || (input.format == InputFormat::Auto
            && !matches!(first, Some(b'[') | Some(b'{') | None)
            && path.extension().is_some_and(|e| e.eq_ignore_ascii_case("csv")));
    let (raws, csv_header) = if csv {
        let (r, h) = frame_csv(bytes, &file);
        (r, Some(h))
    } else if first == Some(b'[') && !jsonl_of_arrays(bytes) {
        (frame_json_array(bytes, &file), None)
    } else if first == Some(b'{')
        && serde_json::from_slice::<Map<String, Value>>(bytes).is_ok()
        && bytes.split(|&b| b == b'\n').filter(|l| !l.iter().all(u8::is_ascii_whitespace)).count() > 1
    {
        // One pretty-printed object: not a list of records.
        let e = ReadError::new(
            Position::new(&file, Some(0), Some(1)),
            ReadErrorKind::Shape,
            "a single JSON object spanning several lines; expected a JSON array of records or JSONL (one record per line)",
        );
        (vec![Raw { position: e.position.clone(), value: Err(e) }], None)
    } else if first.is_none() || first == Some(b'{') || first == Some(b'[') {
        (frame_jsonl(bytes, &file), None)
    } else {
        let e =
            ReadError::new(Position::new(&file, Some(0), Some(1)), ReadErrorKind::Shape, "not JSON (array or JSONL) and not a .csv file");
        (vec![Raw { position: e.position.clone(), value: Err(e) }], None)
    };

    // The mapping: given (dataset_info), or decided by the format and the first good record.
    let columns = match columns {
        Some(c) => c.clone(),
        None => {
            let sharegpt = match input.format {
                InputFormat::Sharegpt => true,
                InputFormat::Alpaca | InputFormat::Csv => false,
                InputFormat::Auto => raws
                    .iter()
                    .find_map(|r| r.value.as_ref().ok())
                    .is_some_and(|v| v.get("conversations").or_else(|| v.get("messages")).is_some_and(Value::is_array)),
            };
            let mut c = Columns::bare(sharegpt);
            if let Some(h) = &csv_header {
                // The GovPatent table: question → instruction, answer → output.
                if h.iter().any(|k| k == "question") && !h.iter().any(|k| k == "instruction") {
                    c.prompt = Some("question".into());
                }
                if h.iter().any(|k| k == "answer") && !h.iter().any(|k| k == "output") {
                    c.response = Some("answer".into());
                }
            }
            if sharegpt
                && raws
                    .iter()
                    .find_map(|r| r.value.as_ref().ok())
                    .is_some_and(|v| v.get("conversations").is_none() && v.get("messages").is_some())
            {
                c.messages = Some("messages".into());
            }
            c
        }
    };
    let info = out.datasets.entry(dataset.to_string()).or_default();
    info.formatting = if columns.sharegpt { "sharegpt" } else { "alpaca" }.into();
    info.files.push(file.clone());

    for (ordinal, raw) in raws.into_iter().enumerate() {
        let value = match raw.value {
            Ok(v) => v,
            Err(err) => {
                out.outcomes.push(Outcome::Error { dataset: dataset.to_string(), err });
                continue;
            }
        };
        let position = raw.position;
        let converted = if columns.sharegpt { sharegpt(&value, &columns, &position) } else { alpaca(&value, &columns, &position) };
        let conv = match converted {
            Ok(c) => c,
            Err(err) => {
                out.outcomes.push(Outcome::Error { dataset: dataset.to_string(), err });
                continue;
            }
        };
        let (system, mut messages) = match conv {
            Converted::Messages { system, messages } => (system, messages),
            Converted::Filtered(reason) => {
                out.outcomes.push(Outcome::Filtered { dataset: dataset.to_string(), reason, position });
                continue;
            }
        };
        if messages.last().is_some_and(|m| m.role == Role::User) {
            match cx.trailing_user_turn {
                TrailingUserTurn::Drop => {
                    out.outcomes.push(Outcome::Filtered { dataset: dataset.to_string(), reason: "trailing-user-turn", position });
                    continue;
                }
                TrailingUserTurn::Trim => {
                    messages.pop();
                    out.datasets.get_mut(dataset).expect("inserted above").trimmed_trailing_user_turn += 1;
                    if messages.is_empty() {
                        out.outcomes.push(Outcome::Filtered { dataset: dataset.to_string(), reason: "empty-conversation", position });
                        continue;
                    }
                }
            }
        }
        // The task: the input's, the record's own key, or inferred.
        let given = cx.tasks.keys().iter().find_map(|k| value.get(k).filter(|v| !v.is_null()).map(|v| (k, v)));
        let info = out.datasets.get_mut(dataset).expect("inserted above");
        if given.is_some() {
            info.task_key_present += 1;
        } else {
            info.task_key_absent += 1;
        }
        let mut ex = Example {
            id: format!("{dataset}:{ordinal}"),
            dataset: dataset.to_string(),
            position: position.clone(),
            ordinal: ordinal as u64,
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
                out.outcomes.push(Outcome::Error { dataset: dataset.to_string(), err });
                continue;
            }
            (None, None) => (ex.task, ex.task_from) = (cx.tasks.infer(&ex.question(), &ex.answer()), "inferred".into()),
        }
        out.outcomes.push(Outcome::Example(Box::new(ex)));
    }
    Ok(())
}

/// A file that starts with `[` is a JSON array, unless it is not valid JSON as a whole while
/// its first line is (JSONL whose first record is wrongly an array).
fn jsonl_of_arrays(bytes: &[u8]) -> bool {
    let first_line = bytes.split(|&b| b == b'\n').find(|l| !l.iter().all(u8::is_ascii_whitespace)).unwrap_or_default();
    serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_err() && serde_json::from_slice::<serde::de::IgnoredAny>(first_line).is_ok()
}

/// JSONL: one record per non-blank line.
fn frame_jsonl(bytes: &[u8], file: &str) -> Vec<Raw> {
    let mut out = Vec::new();
    let mut offset = 0usize;
    for (i, line) in bytes.split(|&b| b == b'\n').enumerate() {
        let start = offset;
        offset += line.len() + 1;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let position = Position::new(file, Some(start as u64), Some(i as u64 + 1));
        // A byte that is not UTF-8 is named where it is, not as a JSON syntax error.
        if let Err(e) = std::str::from_utf8(line) {
            let at = Position::new(file, Some((start + e.valid_up_to()) as u64), Some(i as u64 + 1));
            out.push(Raw { position, value: Err(ReadError::new(at, ReadErrorKind::Encoding, "not valid UTF-8")) });
            continue;
        }
        let value = serde_json::from_slice::<Value>(line)
            .map_err(|e| ReadError::new(position.clone(), ReadErrorKind::Json, format!("bad JSON at column {}: {e}", e.column())));
        out.push(Raw { position, value });
    }
    out
}

/// A JSON array of records: the whole file must be valid JSON; each element keeps its own line.
fn frame_json_array(bytes: &[u8], file: &str) -> Vec<Raw> {
    let whole = match serde_json::from_slice::<Value>(bytes) {
        Ok(v) => v,
        Err(e) => {
            // One error for the file: without valid JSON there are no reliable record bounds.
            let position = Position::new(file, None, Some(e.line() as u64));
            return vec![Raw {
                position: position.clone(),
                value: Err(ReadError::new(position, ReadErrorKind::Json, format!("bad JSON at column {}: {e}", e.column()))),
            }];
        }
    };
    let Value::Array(items) = whole else {
        let position = Position::new(file, Some(0), Some(1));
        return vec![Raw {
            position: position.clone(),
            value: Err(ReadError::new(position, ReadErrorKind::Shape, "expected a JSON array of records")),
        }];
    };
    let starts = array_element_offsets(bytes);
    items
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            let off = starts.get(i).copied().unwrap_or(0);
            let line = 1 + memchr::memchr_iter(b'\n', &bytes[..off]).count() as u64;
            Raw { position: Position::new(file, Some(off as u64), Some(line)), value: Ok(v) }
        })
        .collect()
}

/// Byte offsets where the top-level elements of a valid JSON array start (a small scanner:
/// depth and string state only, which is all valid JSON needs).
fn array_element_offsets(bytes: &[u8]) -> Vec<usize> {
    let mut out = Vec::new();
    let (mut depth, mut in_str, mut esc, mut expect) = (0usize, false, false, false);
    for (i, &b) in bytes.iter().enumerate() {
        if in_str {
            match (esc, b) {
                (true, _) => esc = false,
                (false, b'\\') => esc = true,
                (false, b'"') => in_str = false,
                _ => {}
            }
            continue;
        }
        if expect && !b.is_ascii_whitespace() && b != b']' {
            out.push(i);
            expect = false;
        }
        match b {
            b'"' => in_str = true,
            b'[' | b'{' => {
                depth += 1;
                if depth == 1 {
                    expect = true;
                }
            }
            b']' | b'}' => depth -= 1,
            b',' if depth == 1 => expect = true,
            _ => {}
        }
    }
    out
}

/// CSV with a header row; each row becomes an object of header → text. Rows with the wrong
/// number of fields, bad UTF-8 or an unclosed quote are errors with their line.
fn frame_csv(bytes: &[u8], file: &str) -> (Vec<Raw>, Vec<String>) {
    let mut rdr = csv::ReaderBuilder::new().has_headers(true).flexible(false).from_reader(bytes);
    let header: Vec<String> = match rdr.headers() {
        Ok(h) => h.iter().map(|s| s.trim().to_string()).collect(),
        Err(e) => {
            let position = Position::new(file, Some(0), Some(1));
            return (
                vec![Raw {
                    position: position.clone(),
                    value: Err(ReadError::new(position, ReadErrorKind::Csv, format!("bad header: {e}"))),
                }],
                Vec::new(),
            );
        }
    };
    let mut out = Vec::new();
    let mut rec = csv::StringRecord::new();
    loop {
        let start = rdr.position().clone();
        let position = Position::new(file, Some(start.byte()), Some(start.line()));
        match rdr.read_record(&mut rec) {
            Ok(false) => break,
            Ok(true) => {
                // The csv crate ends an unclosed quoted field at end of input without an error;
                // a record whose bytes hold an odd number of quotes is exactly that case.
                let end = rdr.position().byte() as usize;
                let quotes = bytecount_quotes(&bytes[start.byte() as usize..end.min(bytes.len())]);
                if quotes % 2 == 1 {
                    let err =
                        ReadError::new(position.clone(), ReadErrorKind::Csv, "unclosed quoted field (it runs to the end of the file)");
                    out.push(Raw { position, value: Err(err) });
                    continue;
                }
                let obj: Map<String, Value> = header.iter().cloned().zip(rec.iter().map(|s| Value::String(s.to_string()))).collect();
                out.push(Raw { position, value: Ok(Value::Object(obj)) });
            }
            Err(e) => {
                let end = (rdr.position().byte() as usize).min(bytes.len());
                let unclosed = bytecount_quotes(&bytes[(start.byte() as usize).min(end)..end]) % 2 == 1;
                let msg = match e.kind() {
                    _ if unclosed => "unclosed quoted field (it runs to the end of the file)".to_string(),
                    csv::ErrorKind::UnequalLengths { expected_len, len, .. } => {
                        format!("record has {len} fields, the header has {expected_len}")
                    }
                    csv::ErrorKind::Utf8 { .. } => "not valid UTF-8".to_string(),
                    _ => e.to_string(),
                };
                let line = e.position().map(|p| p.line()).unwrap_or(start.line());
                let position = Position::new(file, Some(start.byte()), Some(line));
                out.push(Raw { position: position.clone(), value: Err(ReadError::new(position, ReadErrorKind::Csv, msg)) });
            }
        }
    }
    (out, header)
}

fn bytecount_quotes(b: &[u8]) -> usize {
    memchr::memchr_iter(b'"', b).count()
}

enum Converted {
    Messages { system: Option<String>, messages: Vec<Message> },
    Filtered(&'static str),
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// An optional string field: absent and null are `None`, anything but a string is an error.
fn opt_str<'v>(obj: &'v Map<String, Value>, key: Option<&String>, pos: &Position) -> std::result::Result<Option<&'v str>, ReadError> {
    let Some(key) = key else { return Ok(None) };
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(v) => Err(ReadError::new(pos.clone(), ReadErrorKind::Shape, format!("{key:?} must be a string, found {}", kind_of(v)))),
    }
}

fn as_object<'v>(v: &'v Value, pos: &Position) -> std::result::Result<&'v Map<String, Value>, ReadError> {
    v.as_object().ok_or_else(|| {
        ReadError::new(pos.clone(), ReadErrorKind::Shape, format!("expected a JSON object per record, found {}", kind_of(v)))
    })
}

fn nonempty_system(s: Option<&str>) -> Option<String> {
    s.filter(|s| !s.is_empty()).map(str::to_string)
}

/// LLaMA-Factory's alpaca conversion.
fn alpaca(v: &Value, c: &Columns, pos: &Position) -> std::result::Result<Converted, ReadError> {
    let obj = as_object(v, pos)?;
    let missing = |key: &Option<String>| {
        ReadError::new(pos.clone(), ReadErrorKind::MissingField, format!("missing {:?}", key.as_deref().unwrap_or("?")))
    };
    // Without its instruction column a record has no question, unless the input column alone
    // carries one (LLaMA-Factory joins whichever of the two is non-empty).
    let has_query = opt_str(obj, c.query.as_ref(), pos)?.is_some_and(|q| !q.is_empty());
    if c.prompt.as_ref().is_some_and(|k| !obj.contains_key(k)) && !has_query {
        return Err(missing(&c.prompt));
    }
    let response = opt_str(obj, c.response.as_ref(), pos)?.ok_or_else(|| missing(&c.response))?;
    let mut messages = Vec::new();
    if let Some(key) = &c.history {
        match obj.get(key) {
            None | Some(Value::Null) => {}
            Some(Value::Array(pairs)) => {
                for (i, p) in pairs.iter().enumerate() {
                    let pair = p.as_array().filter(|a| a.len() == 2 && a.iter().all(Value::is_string));
                    let Some(pair) = pair else {
                        return Err(ReadError::new(
                            pos.clone(),
                            ReadErrorKind::Shape,
                            format!("{key:?}[{i}] must be a [question, answer] pair of strings"),
                        ));
                    };
                    messages.push(Message { role: Role::User, content: pair[0].as_str().unwrap_or_default().to_string() });
                    messages.push(Message { role: Role::Assistant, content: pair[1].as_str().unwrap_or_default().to_string() });
                }
            }
            Some(other) => {
                return Err(ReadError::new(
                    pos.clone(),
                    ReadErrorKind::Shape,
                    format!("{key:?} must be a list of [question, answer] pairs, found {}", kind_of(other)),
                ))
            }
        }
    }
    let query: Vec<&str> = [opt_str(obj, c.prompt.as_ref(), pos)?, opt_str(obj, c.query.as_ref(), pos)?]
        .into_iter()
        .flatten()
        .filter(|s| !s.is_empty())
        .collect();
    if query.is_empty() {
        return Ok(Converted::Filtered("empty-question"));
    }
    messages.push(Message { role: Role::User, content: query.join("\n") });
    messages.push(Message { role: Role::Assistant, content: response.to_string() });
    Ok(Converted::Messages { system: nonempty_system(opt_str(obj, c.system.as_ref(), pos)?), messages })
}

/// LLaMA-Factory's sharegpt conversion (roles must alternate user/assistant after an optional
/// leading system turn; tool turns are not supported).
fn sharegpt(v: &Value, c: &Columns, pos: &Position) -> std::result::Result<Converted, ReadError> {
    let obj = as_object(v, pos)?;
    let key = c.messages.clone().unwrap_or_else(|| "conversations".into());
    let turns = match obj.get(&key) {
        None | Some(Value::Null) => return Err(ReadError::new(pos.clone(), ReadErrorKind::MissingField, format!("missing {key:?}"))),
        Some(Value::Array(a)) => a,
        Some(other) => {
            return Err(ReadError::new(
                pos.clone(),
                ReadErrorKind::Shape,
                format!("{key:?} must be a list of turns, found {}", kind_of(other)),
            ))
        }
    };
    let t = &c.tags;
    let mut parsed: Vec<(String, String)> = Vec::with_capacity(turns.len());
    for (i, turn) in turns.iter().enumerate() {
        let Some(o) = turn.as_object() else {
            return Err(ReadError::new(
                pos.clone(),
                ReadErrorKind::Shape,
                format!("{key}[{i}] must be an object, found {}", kind_of(turn)),
            ));
        };
        let (role_key, content_key) = if c.lenient_tags && !o.contains_key(&t.role) && o.contains_key("role") {
            ("role", "content")
        } else {
            (t.role.as_str(), t.content.as_str())
        };
        let role = o
            .get(role_key)
            .and_then(Value::as_str)
            .ok_or_else(|| ReadError::new(pos.clone(), ReadErrorKind::MissingField, format!("{key}[{i}] has no string {role_key:?}")))?;
        let content = o
            .get(content_key)
            .and_then(Value::as_str)
            .ok_or_else(|| ReadError::new(pos.clone(), ReadErrorKind::MissingField, format!("{key}[{i}] has no string {content_key:?}")))?;
        parsed.push((role.to_string(), content.to_string()));
    }
    let is = |r: &str, tag: &str, alt: &str| r == tag || (c.lenient_tags && r == alt);
    let mut system = None;
    let mut rest = &parsed[..];
    if let Some((r, content)) = parsed.first() {
        if is(r, &t.system, "system") {
            system = nonempty_system(Some(content));
            rest = &parsed[1..];
        }
    }
    if rest.is_empty() {
        return Ok(Converted::Filtered("empty-conversation"));
    }
    let mut messages = Vec::with_capacity(rest.len());
    for (i, (r, content)) in rest.iter().enumerate() {
        let want_user = i % 2 == 0;
        let role = if is(r, &t.user, "user") {
            Role::User
        } else if is(r, &t.assistant, "assistant") {
            Role::Assistant
        } else if r == &t.observation || r == &t.function {
            return Err(ReadError::new(pos.clone(), ReadErrorKind::Unsupported, format!("turn {i}: tool turns ({r:?}) are not supported")));
        } else {
            return Err(ReadError::new(
                pos.clone(),
                ReadErrorKind::Shape,
                format!("turn {i}: unknown role {r:?} (expected {:?} or {:?})", t.user, t.assistant),
            ));
        };
        if (role == Role::User) != want_user {
            let (want, found) = if want_user { (&t.user, r) } else { (&t.assistant, r) };
            return Err(ReadError::new(
                pos.clone(),
                ReadErrorKind::Shape,
                format!("turn {i}: expected a {want:?} turn, found {found:?} (turns must alternate)"),
            ));
        }
        messages.push(Message { role, content: content.clone() });
    }
    Ok(Converted::Messages { system, messages })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn array_offsets_find_each_element() {
        let text = b"[\n {\"a\": \"x,]\\\"\"},\n {\"b\": [1, 2]}\n]";
        let offs = array_element_offsets(text);
        assert_eq!(offs.len(), 2);
        assert_eq!(text[offs[0]], b'{');
        assert_eq!(&text[offs[1]..offs[1] + 4], b"{\"b\"");
        assert!(array_element_offsets(b"[]").is_empty());
    }

    #[test]
    fn alpaca_joins_instruction_and_input_and_reads_history() {
        let c = Columns::bare(false);
        let pos = Position::new("f", None, Some(1));
        let v: Value = serde_json::json!({"instruction": "Q", "input": "ctx", "output": "A", "history": [["q0", "a0"]], "system": "S"});
        let Converted::Messages { system, messages } = alpaca(&v, &c, &pos).unwrap() else { panic!() };
        assert_eq!(system.as_deref(), Some("S"));
        let texts: Vec<&str> = messages.iter().map(|m| m.content.as_str()).collect();
        assert_eq!(texts, ["q0", "a0", "Q\nctx", "A"]);
        // LLaMA-Factory reads no system/history unless dataset_info maps them.
        let lf = Columns::lf_default(false);
        let Converted::Messages { system, messages } = alpaca(&v, &lf, &pos).unwrap() else { panic!() };
        assert_eq!((system, messages.len()), (None, 2));
    }
}
