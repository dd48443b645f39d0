//! Helpers shared by the JSON-family readers (WuDao, IPC descriptions, generic JSONL/Parquet):
//! decoding a framed record into a JSON object with errors that name the byte offset, typed
//! field access with `shape` errors, and a look at the first record of a stream for sniffing.

use std::borrow::Cow;

use serde_json::{Map, Value};

use super::text::decode;
use super::{ParseContext, RawRecord};
use crate::error::ReadError;

/// A JSON object as read from one record.
pub type Object = Map<String, Value>;

/// Decodes `raw` (UTF-8, or GB18030/GBK per `cx.cfg.encoding`) and parses it as one JSON object.
/// Malformed JSON is a `json` error at the byte where the parser stopped; any other JSON value
/// is a `shape` error.
pub fn parse_object(raw: &RawRecord, cx: &ParseContext<'_>) -> Result<Object, ReadError> {
    let text = decode(raw, &raw.bytes, 0, cx.cfg.encoding)?;
    match serde_json::from_str::<Value>(&text) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(other) => Err(raw.error("shape", format!("expected a JSON object, found {}", kind_of(&other)))),
        Err(e) => Err(json_error(raw, &text, matches!(text, Cow::Owned(_)), &e)),
    }
}

/// A `json` error located at the byte where serde_json stopped. When the record was decoded
/// from GB18030 the decoded text's offsets do not map back to bytes, so the record's own
/// position is given with the line/column in the decoded text.
fn json_error(raw: &RawRecord, s: &str, transcoded: bool, e: &serde_json::Error) -> ReadError {
    let full = e.to_string();
    if transcoded {
        return raw.error("json", format!("malformed JSON: {full} (in the GB18030-decoded text)"));
    }
    // The absolute position replaces serde_json's record-relative "at line L column C".
    let msg = format!("malformed JSON: {}", full.rsplit_once(" at line ").map_or(full.as_str(), |(m, _)| m));
    // serde_json counts lines from 1 and columns in bytes from 1.
    let line_start: usize =
        if e.line() <= 1 { 0 } else { memchr::memchr_iter(b'\n', s.as_bytes()).nth(e.line() - 2).map(|i| i + 1).unwrap_or(s.len()) };
    let at = (line_start + e.column().saturating_sub(1)).min(s.len());
    raw.error_at(at as u64, "json", msg)
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

/// Removes `key` and returns its string value; `None` when absent or null. Any other type is a
/// `shape` error.
pub fn take_str(m: &mut Object, key: &str, raw: &RawRecord) -> Result<Option<String>, ReadError> {
    if key.is_empty() {
        return Ok(None);
    }
    match m.remove(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(raw.error("shape", format!("field {key:?} must be a string, found {}", kind_of(&other)))),
    }
}

/// Like [`take_str`], but a missing or null field is a `shape` error.
pub fn require_str(m: &mut Object, key: &str, raw: &RawRecord) -> Result<String, ReadError> {
    take_str(m, key, raw)?.ok_or_else(|| raw.error("shape", format!("missing required field {key:?}")))
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
        Some(other) => Err(raw.error("shape", format!("field {key:?} must be a string or an integer id, found {}", kind_of(&other)))),
    }
}

/// How a JSON stream lays out its records, as seen from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// One object per line (JSONL).
    Lines,
    /// A top-level array of objects.
    Array,
    /// A top-level object whose first value is an array of objects (`{"RECORDS": [...]}`).
    Wrapped,
}

/// What sniffing saw of a JSON stream: its layout and the keys of its first record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// Record layout.
    pub layout: Layout,
    /// Top-level keys of the first record, in order (those within the sniffed bytes).
    pub keys: Vec<String>,
}

impl Head {
    /// Whether the first record has `key`.
    pub fn has(&self, key: &str) -> bool {
        self.keys.iter().any(|k| k == key)
    }

    /// Whether the first record has any of `keys`.
    pub fn has_any(&self, keys: &[&str]) -> bool {
        keys.iter().any(|k| self.has(k))
    }
}

/// Looks at the start of a stream (after a BOM and whitespace) and, if it is JSON holding
/// objects, says how they are laid out and which keys the first one has. Keys whose value runs
/// past the end of `head` are still seen; keys after that point are not.
///
/// A top-level object is a wrapper (`{"RECORDS": [...]}`) when its first value is an array of
/// objects and the object spans several lines or runs past `head`; otherwise it is the first
/// line of a JSONL stream.
pub fn sniff_head(head: &[u8]) -> Option<Head> {
    let h = super::sniffing::trimmed(head);
    let mut s = Scan { b: h, i: 0, closed_at: None };
    match h.first()? {
        b'[' => {
            s.i += 1;
            s.ws();
            if s.peek()? != b'{' {
                return None;
            }
            let (keys, _) = s.object_keys();
            Some(Head { layout: Layout::Array, keys })
        }
        b'{' => {
            let (keys, first) = s.object_keys();
            if let Some(FirstValue { array_of_objects: true, inner_keys }) = first {
                let one_line = s.closed_at.is_some_and(|end| !h[..end].contains(&b'\n'));
                if !one_line || keys.len() == 1 {
                    return Some(Head { layout: Layout::Wrapped, keys: inner_keys });
                }
            }
            Some(Head { layout: Layout::Lines, keys })
        }
        _ => None,
    }
}

struct FirstValue {
    array_of_objects: bool,
    inner_keys: Vec<String>,
}

/// A forgiving scanner over possibly truncated JSON: it stops quietly at the end of the bytes.
struct Scan<'a> {
    b: &'a [u8],
    i: usize,
    /// Just past the `}` of the outermost object read, when it closed within the bytes.
    closed_at: Option<usize>,
}

impl Scan<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn ws(&mut self) {
        while self.peek().is_some_and(|c| c.is_ascii_whitespace()) {
            self.i += 1;
        }
    }

    /// Skips a string starting at `"`; returns its raw contents if it ended within the bytes.
    fn string(&mut self) -> Option<&[u8]> {
        let start = self.i + 1;
        let mut j = start;
        while j < self.b.len() {
            match self.b[j] {
                b'\\' => j += 2,
                b'"' => {
                    self.i = j + 1;
                    return Some(&self.b[start..j]);
                }
                _ => j += 1,
            }
        }
        self.i = self.b.len();
        None
    }

    /// Skips any value (nested containers and strings tracked).
    fn value(&mut self) {
        let mut depth = 0usize;
        while let Some(c) = self.peek() {
            match c {
                b'"' => {
                    if self.string().is_none() {
                        return;
                    }
                    if depth == 0 {
                        return;
                    }
                    continue;
                }
                b'{' | b'[' => depth += 1,
                b'}' | b']' => {
                    if depth == 0 {
                        return; // end of the enclosing container
                    }
                    depth -= 1;
                    if depth == 0 {
                        self.i += 1;
                        return;
                    }
                }
                b',' if depth == 0 => return,
                _ => {}
            }
            self.i += 1;
        }
    }

    /// Reads the keys of the object starting at `{`, and what its first value looks like.
    fn object_keys(&mut self) -> (Vec<String>, Option<FirstValue>) {
        let mut keys = Vec::new();
        let mut first = None;
        self.i += 1;
        loop {
            self.ws();
            match self.peek() {
                Some(b'"') => {}
                Some(b'}') => {
                    self.i += 1;
                    self.closed_at = Some(self.i);
                    return (keys, first);
                }
                _ => return (keys, first),
            }
            let Some(k) = self.string() else { return (keys, first) };
            keys.push(String::from_utf8_lossy(k).into_owned());
            self.ws();
            if self.peek() != Some(b':') {
                return (keys, first);
            }
            self.i += 1;
            self.ws();
            if keys.len() == 1 && self.peek() == Some(b'[') {
                let save = self.i;
                self.i += 1;
                self.ws();
                if self.peek() == Some(b'{') {
                    let mut inner = Scan { b: self.b, i: self.i, closed_at: None };
                    let (inner_keys, _) = inner.object_keys();
                    first = Some(FirstValue { array_of_objects: true, inner_keys });
                }
                self.i = save;
            }
            self.value();
            self.ws();
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b'}') => {}
                _ => return (keys, first),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(s: &str) -> Option<(Layout, Vec<String>)> {
        sniff_head(s.as_bytes()).map(|h| (h.layout, h.keys))
    }

    fn keys(k: &[&str]) -> Vec<String> {
        k.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn layouts() {
        assert_eq!(
            head("\u{feff}  [\n  {\"id\": 1, \"content\": \"a,}\\\"b\", \"n\": {\"x\": [1]}, \"t\": 2}\n]"),
            Some((Layout::Array, keys(&["id", "content", "n", "t"])))
        );
        assert_eq!(head("{\"a\": 1, \"b\": [1, 2]}\n{\"a\": 2}\n"), Some((Layout::Lines, keys(&["a", "b"]))));
        assert_eq!(
            head("{\n  \"RECORDS\": [\n    {\"id\": 1, \"content\": \"x\"}\n  ]\n}"),
            Some((Layout::Wrapped, keys(&["id", "content"])))
        );
        assert_eq!(head("{\"RECORDS\":[{\"id\":1,\"content\":\"x\"}]}"), Some((Layout::Wrapped, keys(&["id", "content"]))));
        // A one-line record whose first field is a list of objects, with more fields: JSONL.
        assert_eq!(head("{\"turns\": [{\"from\": \"a\"}], \"id\": 3}\n"), Some((Layout::Lines, keys(&["turns", "id"]))));
        assert_eq!(head("[1, 2]"), None);
        assert_eq!(head("<?xml version=\"1.0\"?>"), None);
        assert_eq!(head(""), None);
    }

    #[test]
    fn truncated_heads_keep_the_keys_seen() {
        // The first value runs past the sniffed bytes: keys before it are still known.
        assert_eq!(head("{\"id\": 7, \"content\": \"very long"), Some((Layout::Lines, keys(&["id", "content"]))));
        // A wrapper cut inside its first record.
        assert_eq!(head("{\"RECORDS\": [{\"id\": 1, \"content\": \"x"), Some((Layout::Wrapped, keys(&["id", "content"]))));
    }
}
