//! Helpers shared by the JSON-family readers (WuDao, IPC descriptions, generic JSONL/Parquet):
//! decoding a framed record into a JSON object with errors that name the byte offset, and typed
//! field access with `shape` errors. (Sniffing a JSON head is `crate::io::sniff::json_head`.)

use std::borrow::Cow;

use serde_json::{Map, Value};

use super::ParseContext;
use crate::error::{ReadError, ReadErrorKind};
use crate::io::json::{kind_of, record_error as json_error};
use crate::io::text::decode;
use crate::io::RawRecord;

/// A JSON object as read from one record.
pub type Object = Map<String, Value>;

/// Decodes `raw` (UTF-8, or GB18030/GBK per `cx.cfg.encoding`) and parses it as one JSON object.
/// Malformed JSON is a `json` error at the byte where the parser stopped; any other JSON value
/// is a `shape` error.
pub fn parse_object(raw: &RawRecord, cx: &ParseContext<'_>) -> Result<Object, ReadError> {
    let text = decode(raw, &raw.bytes, 0, cx.cfg.encoding)?;
    match serde_json::from_str::<Value>(&text) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(other) => Err(raw.error(ReadErrorKind::Shape, format!("expected a JSON object, found {}", kind_of(&other)))),
        Err(e) => Err(json_error(raw, &text, matches!(text, Cow::Owned(_)), &e)),
    }
}

/// Removes `key` and returns its string value; `None` when absent or null. Any other type is a
/// `shape` error.
pub fn take_str(m: &mut Object, key: &str, raw: &RawRecord) -> Result<Option<String>, ReadError> {
    if key.is_empty() {
        return Ok(None);
    }
    match m.remove(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(raw.error(ReadErrorKind::Shape, format!("field {key:?} must be a string, found {}", kind_of(&other)))),
    }
}

/// Like [`take_str`], but a missing or null field is a `missing-field` error.
pub fn require_str(m: &mut Object, key: &str, raw: &RawRecord) -> Result<String, ReadError> {
    take_str(m, key, raw)?.ok_or_else(|| raw.error(ReadErrorKind::MissingField, format!("missing required field {key:?}")))
}

/// Removes `key` and returns it as an identifier: a non-empty string (trimmed) or an integer.
/// Absent, null or blank gives `None`; other types (floats, booleans, arrays, objects) are
/// `shape` errors.
pub fn take_id(m: &mut Object, key: &str, raw: &RawRecord) -> Result<Option<String>, ReadError> {
    if key.is_empty() {
        return Ok(None);
    }
    match m.remove(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => {
            let t = s.trim();
            Ok(if t.is_empty() { None } else { Some(t.to_string()) })
        }
        Some(Value::Number(n)) if n.is_i64() || n.is_u64() => Ok(Some(n.to_string())),
        Some(other) => {
            Err(raw.error(ReadErrorKind::Shape, format!("field {key:?} must be a string or an integer id, found {}", kind_of(&other))))
        }
    }
}
