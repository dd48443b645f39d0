//! LLaMA-Factory's `dataset_info.json`: which entries to read, their files, and their column
//! and tag mappings ([`Columns`]); unsupported features (hub datasets, ranking, tools, media,
//! sampling) are config errors naming the key.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::error::{Error, Result};

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
    pub(super) fn bare(sharegpt: bool) -> Self {
        Self { history: Some("history".into()), system: Some("system".into()), lenient_tags: true, ..Self::lf_default(sharegpt) }
    }
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
    let value: Value = serde_json::from_slice(bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&bytes))
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
pub(super) fn entry_files(path: &Path, info: &Path, name: &str) -> Result<Vec<PathBuf>> {
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
