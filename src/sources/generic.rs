//! Generic corpora users bring: JSONL, or Parquet, with a text field/column (`text` by default)
//! and optional id, title, lang and date fields; every other field goes to `meta`.
//!
//! Document id: `{source}:{id}` when the record has an id (string or integer), else
//! `{source}:{file}:{line}` with `file` the input's file name (the archive member's name for
//! zip members; a `.gz`/`.zst` suffix dropped, so compressing a file keeps its ids) and `line`
//! the 1-based line of the record in the decompressed file (the 1-based row for Parquet). Both
//! are stable across runs and thread counts.
//!
//! Parquet needs seeking, so it is not framed from a stream: the docs driver hands any plain
//! file that starts with `PAR1` to [`frame_parquet`], which yields each row as a JSON object
//! record (strings, numbers and booleans as themselves, other Arrow types in their display
//! form) parsed by the same code as JSONL. Parquet inside `.gz`/`.zst`/`.zip` is not read.
//!
//! Documents are counted under `source` = [`GenericConfig::source`] once parsed; files and
//! records that fail before a document exists are counted under the format's source, `text`.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{
    DataType, Float32Type, Float64Type, Int16Type, Int32Type, Int64Type, Int8Type, UInt16Type, UInt32Type, UInt64Type, UInt8Type,
};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde::{Deserialize, Serialize};
use serde_json::{Number, Value};

use crate::doc::{Document, Record};
use crate::error::{Position, ReadError, ReadErrorKind};

use super::json;
use super::{Format, Framing, ParseContext, RawRecord, SourcesConfig};
use crate::io::framing::Emit;
use crate::io::sniff::{json_head, JsonLayout as Layout};

/// Settings of the generic reader. An empty field name turns that field off.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct GenericConfig {
    /// Name of the text field (required in every record).
    pub text_field: String,
    /// Name of the optional id field (string or integer).
    pub id_field: String,
    /// Name of the optional title field.
    pub title_field: String,
    /// Name of the optional language field (ISO 639-1).
    pub lang_field: String,
    /// Name of the optional date field (`YYYY-MM-DD`).
    pub date_field: String,
    /// Language of records without a language field (empty: unknown).
    pub lang: String,
    /// `source` of the documents (and prefix of their ids).
    pub source: String,
}

impl Default for GenericConfig {
    fn default() -> Self {
        Self {
            text_field: "text".into(),
            id_field: "id".into(),
            title_field: "title".into(),
            lang_field: "lang".into(),
            date_field: "date".into(),
            lang: String::new(),
            source: "text".into(),
        }
    }
}

/// JSONL with a text field.
pub struct GenericJsonl;

impl Format for GenericJsonl {
    fn name(&self) -> &'static str {
        "jsonl"
    }
    fn source(&self) -> &'static str {
        "text"
    }
    /// Any JSONL of objects (tried last: the specific JSONL formats come first).
    fn sniff(&self, head: &[u8]) -> bool {
        json_head(head).is_some_and(|h| h.layout == Layout::Lines)
    }
    fn framing(&self) -> Framing {
        Framing::Lines
    }
    fn parse(&self, raw: &RawRecord, cx: &ParseContext<'_>) -> Result<Record, ReadError> {
        parse_record(raw, cx).map(Record::Doc)
    }
}

/// Parquet with a text column. Never sniffed from a stream (see [`frame_parquet`]); its rows
/// are parsed like JSONL records.
pub struct GenericParquet;

impl Format for GenericParquet {
    fn name(&self) -> &'static str {
        "parquet"
    }
    fn source(&self) -> &'static str {
        "text"
    }
    fn sniff(&self, _head: &[u8]) -> bool {
        false // needs seeking: the driver routes files starting with `PAR1` to `frame_parquet`
    }
    fn framing(&self) -> Framing {
        Framing::Whole // unused: rows come from `frame_parquet`
    }
    fn parse(&self, raw: &RawRecord, cx: &ParseContext<'_>) -> Result<Record, ReadError> {
        parse_record(raw, cx).map(Record::Doc)
    }
}

/// Parses one JSON object record (a JSONL line or a Parquet row) into a document.
pub fn parse_record(raw: &RawRecord, cx: &ParseContext<'_>) -> Result<Document, ReadError> {
    let cfg = &cx.cfg.generic;
    let mut m = json::parse_object(raw, cx)?;
    let text = json::require_str(&mut m, &cfg.text_field, raw)?;
    let id = match json::take_id(&mut m, &cfg.id_field, raw)? {
        Some(id) => id,
        None => format!("{}:{}", file_label(&raw.file), raw.line),
    };
    let title = json::take_str(&mut m, &cfg.title_field, raw)?.unwrap_or_default();
    let lang = json::take_str(&mut m, &cfg.lang_field, raw)?.unwrap_or_else(|| cfg.lang.clone());
    let date = json::take_str(&mut m, &cfg.date_field, raw)?.unwrap_or_default();
    Ok(Document { id: format!("{}:{id}", cfg.source), source: cfg.source.clone(), lang, title, ipc: Vec::new(), date, text, meta: m })
}

/// The file name part of a stream name (`dir/a.jsonl.gz` → `a.jsonl`, `x.zip!sub/b.jsonl` →
/// `b.jsonl`).
fn file_label(stream: &str) -> &str {
    let name = stream.rsplit(['/', '\\', '!']).next().unwrap_or(stream);
    [".gz", ".zst", ".zstd"].iter().find_map(|s| name.strip_suffix(s)).unwrap_or(name)
}

/// Rows decoded per Arrow batch: bounds memory to a few hundred rows whatever the file size.
const PARQUET_BATCH_ROWS: usize = 256;

/// Whether a file starts with the Parquet magic `PAR1`.
pub fn is_parquet(path: &Path) -> bool {
    use std::io::Read;
    // Only regular files are opened: opening a FIFO would block.
    if !std::fs::metadata(path).is_ok_and(|m| m.is_file()) {
        return false;
    }
    let mut magic = [0u8; 4];
    File::open(path).and_then(|mut f| f.read_exact(&mut magic)).is_ok() && &magic == b"PAR1"
}

/// Frames a Parquet file into one record per row: a JSON object of the row's columns. Rows are
/// positioned by `line` = 1-based row number and `offset` = the byte offset of their row group.
/// A file without the text column (or whose text column is not a string column) is one
/// `shape` error; an unreadable file is one `parquet` error. Rows larger than
/// `max_record_bytes` are `too-large` errors.
pub fn frame_parquet(path: &Path, cfg: &SourcesConfig, emit: &mut Emit<'_>) {
    let name: Arc<str> = Arc::from(path.display().to_string().as_str());
    let file_err = |kind: ReadErrorKind, msg: String| ReadError::new(Position::new(name.to_string(), Some(0), None), kind, msg);
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) => {
            emit(Err(file_err(ReadErrorKind::Io, "cannot open".into()).with_source(e)));
            return;
        }
    };
    let builder = match ParquetRecordBatchReaderBuilder::try_new(file) {
        Ok(b) => b,
        Err(e) => {
            emit(Err(file_err(ReadErrorKind::Parquet, "not a readable Parquet file (truncated or corrupt?)".into()).with_source(e)));
            return;
        }
    };
    let text_field = &cfg.generic.text_field;
    let schema = builder.schema().clone();
    match schema.field_with_name(text_field) {
        Err(_) => {
            let cols: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
            emit(Err(file_err(
                ReadErrorKind::MissingField,
                format!("no text column {text_field:?} (columns: {}); set sources.generic.text_field", cols.join(", ")),
            )));
            return;
        }
        Ok(f) if !is_string_type(f.data_type()) => {
            emit(Err(file_err(ReadErrorKind::Shape, format!("text column {text_field:?} has type {}, not a string type", f.data_type()))));
            return;
        }
        Ok(_) => {}
    }
    // Row group starts, to position rows.
    let groups: Vec<(u64, u64)> = builder
        .metadata()
        .row_groups()
        .iter()
        .map(|rg| {
            let off = rg.file_offset().or_else(|| {
                (rg.num_columns() > 0).then(|| rg.column(0).dictionary_page_offset().unwrap_or(rg.column(0).data_page_offset()))
            });
            (rg.num_rows().max(0) as u64, off.unwrap_or(0).max(0) as u64)
        })
        .collect();
    let reader = match builder.with_batch_size(PARQUET_BATCH_ROWS).build() {
        Ok(r) => r,
        Err(e) => {
            emit(Err(file_err(ReadErrorKind::Parquet, "cannot read".into()).with_source(e)));
            return;
        }
    };
    let (mut group, mut group_end, mut row) = (0usize, groups.first().map_or(0, |g| g.0), 0u64);
    let opts = FormatOptions::default();
    for batch in reader {
        let batch = match batch {
            Ok(b) => b,
            Err(e) => {
                let off = groups.get(group).map_or(0, |g| g.1);
                emit(Err(ReadError::new(
                    Position::new(name.to_string(), Some(off), Some(row + 1)),
                    ReadErrorKind::Parquet,
                    "cannot decode rows",
                )
                .with_source(e)));
                return;
            }
        };
        let fmts: Vec<Option<ArrayFormatter<'_>>> =
            batch.columns().iter().map(|c| ArrayFormatter::try_new(c.as_ref(), &opts).ok()).collect();
        for i in 0..batch.num_rows() {
            while row >= group_end && group + 1 < groups.len() {
                group += 1;
                group_end += groups[group].0;
            }
            let offset = groups.get(group).map_or(0, |g| g.1);
            let mut obj = json::Object::new();
            for ((field, col), fmt) in schema.fields().iter().zip(batch.columns()).zip(&fmts) {
                obj.insert(field.name().clone(), cell(col.as_ref(), fmt.as_ref(), i));
            }
            let bytes = serde_json::to_vec(&obj).expect("JSON object serializes");
            let item = if bytes.len() > cfg.max_record_bytes {
                Err(ReadError::new(
                    Position::new(name.to_string(), Some(offset), Some(row + 1)),
                    ReadErrorKind::TooLarge,
                    format!("record larger than max_record_bytes ({} bytes); skipped", cfg.max_record_bytes),
                ))
            } else {
                Ok(RawRecord { file: name.clone(), index: row, offset, line: row + 1, bytes })
            };
            row += 1;
            if !emit(item) {
                return;
            }
        }
    }
}

fn is_string_type(t: &DataType) -> bool {
    match t {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => true,
        DataType::Dictionary(_, v) => is_string_type(v),
        _ => false,
    }
}

/// One cell as JSON: strings, integers, floats and booleans as themselves; null as null; any
/// other type (dates, lists, structs, binary) as its Arrow display string.
fn cell(col: &dyn Array, fmt: Option<&ArrayFormatter<'_>>, i: usize) -> Value {
    if col.is_null(i) {
        return Value::Null;
    }
    let float = |v: f64| Number::from_f64(v).map(Value::Number).unwrap_or(Value::Null);
    match col.data_type() {
        DataType::Utf8 => col.as_string::<i32>().value(i).into(),
        DataType::LargeUtf8 => col.as_string::<i64>().value(i).into(),
        DataType::Utf8View => col.as_string_view().value(i).into(),
        DataType::Boolean => col.as_boolean().value(i).into(),
        DataType::Int8 => col.as_primitive::<Int8Type>().value(i).into(),
        DataType::Int16 => col.as_primitive::<Int16Type>().value(i).into(),
        DataType::Int32 => col.as_primitive::<Int32Type>().value(i).into(),
        DataType::Int64 => col.as_primitive::<Int64Type>().value(i).into(),
        DataType::UInt8 => col.as_primitive::<UInt8Type>().value(i).into(),
        DataType::UInt16 => col.as_primitive::<UInt16Type>().value(i).into(),
        DataType::UInt32 => col.as_primitive::<UInt32Type>().value(i).into(),
        DataType::UInt64 => col.as_primitive::<UInt64Type>().value(i).into(),
        DataType::Float32 => float(col.as_primitive::<Float32Type>().value(i) as f64),
        DataType::Float64 => float(col.as_primitive::<Float64Type>().value(i)),
        _ => match fmt {
            Some(f) => Value::String(f.value(i).to_string()),
            None => Value::Null,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray};
    use arrow::datatypes::{Field, Schema};
    use parquet::arrow::ArrowWriter;
    use parquet::file::properties::WriterProperties;

    fn raw(file: &str, line: u64, s: &str) -> RawRecord {
        RawRecord { file: Arc::from(file), index: 0, offset: 0, line, bytes: s.as_bytes().to_vec() }
    }

    #[test]
    fn jsonl_fields_and_ids() {
        let cfg = SourcesConfig::default();
        let cx = ParseContext { cfg: &cfg };
        let d = parse_record(
            &raw("d/a.jsonl", 3, r#"{"id": 42, "text": "body", "title": "T", "lang": "en", "date": "2020-01-02", "x": [1]}"#),
            &cx,
        )
        .unwrap();
        assert_eq!(
            (d.id.as_str(), d.source.as_str(), d.lang.as_str(), d.title.as_str(), d.date.as_str(), d.text.as_str()),
            ("text:42", "text", "en", "T", "2020-01-02", "body")
        );
        assert_eq!(serde_json::to_string(&d.meta).unwrap(), r#"{"x":[1]}"#);
        let d = parse_record(&raw("d/a.jsonl.gz", 7, r#"{"text": "body"}"#), &cx).unwrap();
        assert_eq!(d.id, "text:a.jsonl:7");
        let d = parse_record(&raw("d/z.zip!in/b.jsonl", 1, r#"{"text": "body"}"#), &cx).unwrap();
        assert_eq!(d.id, "text:b.jsonl:1");
        let e = parse_record(&raw("a.jsonl", 1, r#"{"content": "body"}"#), &cx).unwrap_err();
        assert_eq!(e.kind, "missing-field");
        assert!(e.message.contains("missing required field \"text\""));
    }

    #[test]
    fn configured_fields() {
        let cfg = SourcesConfig {
            generic: GenericConfig {
                text_field: "body".into(),
                id_field: String::new(),
                lang: "zh".into(),
                source: "web".into(),
                ..Default::default()
            },
            ..Default::default()
        };
        let cx = ParseContext { cfg: &cfg };
        let d = parse_record(&raw("a.jsonl", 5, r#"{"id": 1, "body": "正文"}"#), &cx).unwrap();
        assert_eq!((d.id.as_str(), d.source.as_str(), d.lang.as_str()), ("web:a.jsonl:5", "web", "zh"));
        assert_eq!(d.meta["id"], 1);
    }

    fn write_parquet(path: &Path, cols: Vec<(&str, ArrayRef)>) {
        let schema = Arc::new(Schema::new(cols.iter().map(|(n, a)| Field::new(*n, a.data_type().clone(), true)).collect::<Vec<_>>()));
        let batch = RecordBatch::try_new(schema.clone(), cols.into_iter().map(|(_, a)| a).collect()).unwrap();
        let props = WriterProperties::builder().set_max_row_group_row_count(Some(2)).build();
        let mut w = ArrowWriter::try_new(File::create(path).unwrap(), schema, Some(props)).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
    }

    fn frame_all(path: &Path, cfg: &SourcesConfig) -> Vec<Result<RawRecord, ReadError>> {
        let mut out = Vec::new();
        frame_parquet(path, cfg, &mut |r| {
            out.push(r);
            true
        });
        out
    }

    #[test]
    fn parquet_rows_become_records() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.parquet");
        write_parquet(
            &p,
            vec![
                ("text", Arc::new(StringArray::from(vec![Some("一"), Some("二"), None])) as ArrayRef),
                ("n", Arc::new(Int64Array::from(vec![1, 2, 3])) as ArrayRef),
            ],
        );
        assert!(is_parquet(&p));
        let cfg = SourcesConfig::default();
        let cx = ParseContext { cfg: &cfg };
        let recs = frame_all(&p, &cfg);
        assert_eq!(recs.len(), 3);
        let r1 = recs[1].as_ref().unwrap();
        assert_eq!((r1.line, r1.index), (2, 1));
        let d = parse_record(r1, &cx).unwrap();
        assert_eq!((d.id.as_str(), d.text.as_str()), ("text:c.parquet:2", "二"));
        assert_eq!(d.meta["n"], 2);
        // Third row: null text, second row group.
        let r2 = recs[2].as_ref().unwrap();
        assert!(r2.offset > recs[0].as_ref().unwrap().offset, "row groups have distinct offsets");
        let e = parse_record(r2, &cx).unwrap_err();
        assert!(e.message.contains("missing required field \"text\""), "{e}");
        assert!(e.to_string().contains("c.parquet:3"), "{e}");
    }

    #[test]
    fn parquet_without_text_column_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("no-text.parquet");
        write_parquet(&p, vec![("body", Arc::new(StringArray::from(vec!["a"])) as ArrayRef)]);
        let recs = frame_all(&p, &SourcesConfig::default());
        assert_eq!(recs.len(), 1);
        let e = recs[0].as_ref().unwrap_err();
        assert_eq!(e.kind, "missing-field");
        assert!(e.to_string().contains("no-text.parquet") && e.message.contains("no text column \"text\" (columns: body)"), "{e}");
        // Truncated Parquet: footer gone.
        let bytes = std::fs::read(&p).unwrap();
        let cut = dir.path().join("cut.parquet");
        std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
        let e = frame_all(&cut, &SourcesConfig::default()).remove(0).unwrap_err();
        assert_eq!(e.kind, "parquet");
    }

    #[test]
    fn file_labels() {
        assert_eq!(file_label("a/b/c.jsonl"), "c.jsonl");
        assert_eq!(file_label("c.jsonl.zst"), "c.jsonl");
        assert_eq!(file_label("x.zip!d/e.jsonl"), "e.jsonl");
    }
}
