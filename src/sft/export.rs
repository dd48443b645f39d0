//! `coretech export llamafactory`: the graded curriculum of an SFT build as LLaMA-Factory
//! datasets, so the same stages can be trained there. Reads the build's `examples.parquet`
//! (every kept example with its split and stage) and writes one JSON file per split and stage
//! (`train-stage-0.json`, …, `validation-stage-0.json`, `test-stage-0.json`) in LLaMA-Factory's
//! alpaca or sharegpt layout, plus `dataset_info.json` registering each file under
//! `{prefix}_{split}_stage{K}` with its `formatting` and `columns` (LLaMA-Factory's documented
//! dataset description, `data/README.md`). Examples keep the order of `examples.parquet`; an
//! example without its own system prompt gets the build's default, written out, so LLaMA-Factory's
//! `qwen` template renders the same ChatML as the SFT build.

use std::collections::btree_map::Entry;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use arrow::array::{Array, AsArray};
use arrow::datatypes::UInt32Type;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::{json, Value};

use super::example::{Message, Role};
use crate::error::{Error, Result};

/// File LLaMA-Factory reads the dataset descriptions from (its `DATA_CONFIG`).
pub const DATASET_INFO: &str = "dataset_info.json";

/// LLaMA-Factory's two dataset layouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `instruction` / `input` / `output` / `system` / `history` (earlier turns as pairs).
    Alpaca,
    /// `conversations` of `{"from": "human"|"gpt", "value"}` and `system`.
    Sharegpt,
}

impl std::str::FromStr for Format {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "alpaca" => Ok(Format::Alpaca),
            "sharegpt" => Ok(Format::Sharegpt),
            other => Err(format!("{other:?}: expected alpaca or sharegpt")),
        }
    }
}

/// One file written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exported {
    /// Its `dataset_info.json` name.
    pub name: String,
    /// Its file name in the output directory.
    pub file: String,
    /// Examples in it.
    pub examples: u64,
}

/// Streams one JSON array to a file, an element at a time.
struct ArrayWriter {
    out: BufWriter<File>,
    path: PathBuf,
    n: u64,
}

impl ArrayWriter {
    fn create(path: PathBuf) -> Result<Self> {
        let f = File::create(&path).map_err(|e| Error::io(&path, e))?;
        let mut out = BufWriter::new(f);
        out.write_all(b"[").map_err(|e| Error::io(&path, e))?;
        Ok(Self { out, path, n: 0 })
    }

    fn push(&mut self, v: &Value) -> Result<()> {
        let sep: &[u8] = if self.n == 0 { b"\n" } else { b",\n" };
        self.out.write_all(sep).map_err(|e| Error::io(&self.path, e))?;
        serde_json::to_writer(&mut self.out, v).map_err(|e| Error::io(&self.path, e.into()))?;
        self.n += 1;
        Ok(())
    }

    fn finish(mut self) -> Result<u64> {
        self.out.write_all(b"\n]\n").map_err(|e| Error::io(&self.path, e))?;
        self.out.flush().map_err(|e| Error::io(&self.path, e))?;
        self.out.get_ref().sync_all().map_err(|e| Error::io(&self.path, e))?;
        Ok(self.n)
    }
}

/// One example as a record of `format` (`None` when its turns do not alternate user/assistant
/// ending with an answer, which the SFT build never keeps).
pub fn record(format: Format, system: &str, messages: &[Message], id: &str) -> Option<Value> {
    let alternating = !messages.is_empty()
        && messages.len().is_multiple_of(2)
        && messages.iter().enumerate().all(|(i, m)| m.role == if i % 2 == 0 { Role::User } else { Role::Assistant });
    if !alternating {
        return None;
    }
    Some(match format {
        Format::Sharegpt => {
            let conv: Vec<Value> = messages
                .iter()
                .map(|m| json!({ "from": if m.role == Role::User { "human" } else { "gpt" }, "value": m.content }))
                .collect();
            json!({ "conversations": conv, "system": system, "id": id })
        }
        Format::Alpaca => {
            let (earlier, last) = messages.split_at(messages.len() - 2);
            let history: Vec<Value> = earlier.chunks(2).map(|p| json!([p[0].content, p[1].content])).collect();
            json!({ "instruction": last[0].content, "input": "", "output": last[1].content, "system": system, "history": history, "id": id })
        }
    })
}

/// The `dataset_info.json` description of a file of `format`.
pub fn description(format: Format, file: &str) -> Value {
    match format {
        Format::Sharegpt => json!({
            "file_name": file,
            "formatting": "sharegpt",
            "columns": { "messages": "conversations", "system": "system" },
            "tags": { "role_tag": "from", "content_tag": "value", "user_tag": "human", "assistant_tag": "gpt" }
        }),
        Format::Alpaca => json!({
            "file_name": file,
            "formatting": "alpaca",
            "columns": { "prompt": "instruction", "query": "input", "response": "output", "system": "system", "history": "history" }
        }),
    }
}

/// Writes the examples of the SFT build in `sft_dir` (its `examples.parquet`) to `out` as
/// LLaMA-Factory datasets; `default_system` is the build's `template.default_system`. Returns the
/// files in `dataset_info.json` order (split, then stage).
pub fn llamafactory(sft_dir: &Path, default_system: &str, out: &Path, format: Format, prefix: &str) -> Result<Vec<Exported>> {
    let path = sft_dir.join("examples.parquet");
    let file = File::open(&path).map_err(|e| Error::io(&path, e))?;
    let bad = |what: String| Error::Other(format!("{}: {what}", path.display()));
    let reader = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| bad(e.to_string()))?.build().map_err(|e| bad(e.to_string()))?;
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let mut writers: BTreeMap<(u8, u32), (String, ArrayWriter)> = BTreeMap::new();
    let mut row = 0u64;
    for batch in reader {
        let batch = batch.map_err(|e| bad(e.to_string()))?;
        let col = |name: &str| batch.column_by_name(name).ok_or_else(|| bad(format!("no column {name:?}")));
        let (ids, splits, systems, messages) = (col("id")?, col("split")?, col("system")?, col("messages")?);
        let stages = col("stage")?;
        let (Some(ids), Some(splits), Some(systems), Some(messages), Some(stages)) = (
            ids.as_string_opt::<i32>(),
            splits.as_string_opt::<i32>(),
            systems.as_string_opt::<i32>(),
            messages.as_string_opt::<i32>(),
            stages.as_primitive_opt::<UInt32Type>(),
        ) else {
            return Err(bad("id/split/system/messages are not strings or stage is not uint32".into()));
        };
        for i in 0..batch.num_rows() {
            let at = || format!("row {row}");
            if ids.is_null(i) || splits.is_null(i) || messages.is_null(i) || stages.is_null(i) {
                return Err(bad(format!("{}: null id, split, stage or messages", at())));
            }
            let split = splits.value(i);
            let order = match split {
                "train" => 0u8,
                "validation" => 1,
                "test" => 2,
                other => return Err(bad(format!("{}: split {other:?} (expected train, validation or test)", at()))),
            };
            let turns: Vec<Message> =
                serde_json::from_str(messages.value(i)).map_err(|e| bad(format!("{}: messages are not turns: {e}", at())))?;
            let own = if systems.is_null(i) { "" } else { systems.value(i) };
            let system = if own.is_empty() { default_system } else { own };
            let rec = record(format, system, &turns, ids.value(i))
                .ok_or_else(|| bad(format!("{} ({}): turns do not alternate user/assistant", at(), ids.value(i))))?;
            let stage = stages.value(i);
            let key = (order, stage);
            let writer = match writers.entry(key) {
                Entry::Occupied(o) => o.into_mut(),
                Entry::Vacant(v) => {
                    let file = format!("{split}-stage-{stage}.json");
                    let w = ArrayWriter::create(out.join(&file))?;
                    v.insert((file, w))
                }
            };
            writer.1.push(&rec)?;
            row += 1;
        }
    }
    let mut info = serde_json::Map::new();
    let mut done = Vec::new();
    for ((_, stage), (file, w)) in writers {
        let split = file.split('-').next().unwrap_or_default().to_string();
        let name = format!("{prefix}_{split}_stage{stage}");
        info.insert(name.clone(), description(format, &file));
        done.push(Exported { name, file, examples: w.finish()? });
    }
    let mut bytes = serde_json::to_vec_pretty(&Value::Object(info)).expect("dataset_info serializes");
    bytes.push(b'\n');
    crate::core::fsio::write_atomic(&out.join(DATASET_INFO), &bytes)?;
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn turns(n: usize) -> Vec<Message> {
        (0..n).map(|i| Message::new(if i % 2 == 0 { Role::User } else { Role::Assistant }, format!("t{i}"))).collect()
    }

    #[test]
    fn records_follow_llamafactory_layouts() {
        let s = record(Format::Sharegpt, "sys", &turns(4), "d:1").unwrap();
        assert_eq!(
            s,
            json!({ "conversations": [
                { "from": "human", "value": "t0" }, { "from": "gpt", "value": "t1" },
                { "from": "human", "value": "t2" }, { "from": "gpt", "value": "t3" }
            ], "system": "sys", "id": "d:1" })
        );
        let a = record(Format::Alpaca, "sys", &turns(4), "d:1").unwrap();
        assert_eq!(a, json!({ "instruction": "t2", "input": "", "output": "t3", "system": "sys", "history": [["t0", "t1"]], "id": "d:1" }));
        // Not user/assistant pairs ending with an answer: refused.
        assert!(record(Format::Alpaca, "", &turns(3), "x").is_none());
        assert!(record(Format::Sharegpt, "", &[], "x").is_none());
        let mut swapped = turns(2);
        swapped.swap(0, 1);
        assert!(record(Format::Sharegpt, "", &swapped, "x").is_none());
    }
}
