//! What every JSON reader needs besides serde_json: where in the text a parse error is, its
//! message without serde's record-relative position, and a word for a value's type.

use serde_json::Value;

use super::RawRecord;
use crate::error::{ReadError, ReadErrorKind};

/// The byte offset in `text` where serde_json stopped (from its 1-based line and byte column).
pub fn error_offset(text: &str, e: &serde_json::Error) -> usize {
    let line_start: usize =
        if e.line() <= 1 { 0 } else { memchr::memchr_iter(b'\n', text.as_bytes()).nth(e.line() - 2).map(|i| i + 1).unwrap_or(text.len()) };
    (line_start + e.column().saturating_sub(1)).min(text.len())
}

/// serde_json's message without its trailing "at line L column C", which is relative to the
/// parsed record: callers give the absolute position instead.
pub fn error_message(e: &serde_json::Error) -> String {
    let full = e.to_string();
    full.rsplit_once(" at line ").map_or(full.as_str(), |(m, _)| m).to_string()
}

/// A `json` error for record `raw` whose decoded text `text` failed to parse, located at the
/// byte where serde_json stopped. A record cut short (serde_json reached its end) is located
/// at the record's first byte instead: the end says nothing, the user needs to find where the
/// broken record starts. When the record was transcoded (from GB18030) the decoded text's
/// offsets do not map back to bytes, so the record's own position is given with the line/column
/// in the decoded text.
pub fn record_error(raw: &RawRecord, text: &str, transcoded: bool, e: &serde_json::Error) -> ReadError {
    if transcoded {
        return raw.error(ReadErrorKind::Json, format!("malformed JSON: {e} (in the GB18030-decoded text)"));
    }
    if e.is_eof() {
        return raw.error(
            ReadErrorKind::Json,
            format!("malformed JSON: {} (the record starting here is cut off after {} bytes)", error_message(e), raw.bytes.len()),
        );
    }
    raw.error_at(error_offset(text, e) as u64, ReadErrorKind::Json, format!("malformed JSON: {}", error_message(e)))
}

/// `a string`, `an array`, … for messages.
pub fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_and_messages() {
        let text = "{\"a\": 1,\n \"b\": x}";
        let e = serde_json::from_str::<Value>(text).unwrap_err();
        assert_eq!(error_offset(text, &e), text.find('x').unwrap());
        assert_eq!(error_message(&e), "expected value");
        assert_eq!(kind_of(&Value::from(vec![1])), "an array");
    }

    #[test]
    fn a_cut_record_is_located_at_its_start_a_bad_byte_at_itself() {
        let raw = |t: &str| RawRecord { file: "f.jsonl".into(), index: 1, offset: 33, line: 2, bytes: t.as_bytes().to_vec() };
        let cut = "{\"instruction\":\"q\",\"output\":";
        let e = serde_json::from_str::<Value>(cut).unwrap_err();
        let err = record_error(&raw(cut), cut, false, &e);
        assert_eq!((err.position.offset, err.position.line), (Some(33), Some(2)), "{err}");
        assert!(err.message.contains("EOF while parsing") && err.message.contains("cut off after 28 bytes"), "{err}");
        let bad = "{\"a\": x}";
        let e = serde_json::from_str::<Value>(bad).unwrap_err();
        let err = record_error(&raw(bad), bad, false, &e);
        assert_eq!(err.position.offset, Some(33 + bad.find('x').unwrap() as u64), "{err}");
    }
}
