//! One SFT data file as a stream of JSON records, read with the corpus readers' machinery
//! ([`crate::io`]): compression (gzip, zstd, zip) and UTF-16 byte-order marks recognised by
//! their bytes, the layout (JSON array, JSONL or CSV) sniffed from the first bytes (never the
//! file name), records framed one at a time (memory bounded by the largest record, not the
//! file), and each record decoded as UTF-8 or GB18030/GBK ([`Encoding`]).
//!
//! A cut JSON array keeps the records before the cut (the cut is one `truncated` error); a NUL
//! byte or undecodable text is an `encoding` error at its byte; a CSV row becomes an object of
//! header → field, with CRLF inside quoted fields read as LF (a CRLF file gives the same text as
//! its LF twin).

use std::borrow::Cow;
use std::path::Path;
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::error::{Error, Position, ReadError, ReadErrorKind, Result};
use crate::io::input::{for_each_stream, peek};
use crate::io::json::record_error;
use crate::io::sniff::{first_line, trimmed};
use crate::io::text::decode;
use crate::io::{frame, Encoding, Framing, InputStream, RawRecord, DEFAULT_MAX_RECORD_BYTES, SNIFF_BYTES};
use crate::sft::config::InputFormat;

/// What a data file yields, in order.
pub(super) enum Item {
    /// A CSV file's header row (before its records).
    CsvHeader(Vec<String>),
    /// One record, parsed as JSON (a CSV row as an object), or why it could not be.
    Record(Position, std::result::Result<Value, ReadError>),
}

/// How a stream is laid out, from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    JsonArray,
    Jsonl,
    Csv,
    /// One JSON object over several lines (a pretty-printed record, not a list of records).
    PrettyObject,
    Unknown,
}

/// Reads `path` (every stream of it: one, or one per zip member) and calls `f` with each item;
/// `f` returning `false` stops the reading. Only a failure to open the file is an `Err`; every
/// other fault is an item (a stream-level one, such as a FIFO or an unreadable archive, too).
pub(super) fn for_each_item(path: &Path, format: InputFormat, enc: Encoding, f: &mut dyn FnMut(Item) -> bool) -> Result<()> {
    let mut go = true;
    let res = for_each_stream(path, &Arc::default(), |stream| {
        if go {
            go = read_stream(stream, format, enc, f);
        }
        Ok(())
    });
    match res {
        Err(Error::Read(e)) if go => {
            f(Item::Record(e.position.clone(), Err(e)));
            Ok(())
        }
        other => other,
    }
}

fn error_item(e: ReadError) -> Item {
    Item::Record(e.position.clone(), Err(e))
}

/// One decoded stream; `false` when `f` asked to stop.
fn read_stream(stream: InputStream<'_>, format: InputFormat, enc: Encoding, f: &mut dyn FnMut(Item) -> bool) -> bool {
    let peeked = match peek(stream, SNIFF_BYTES) {
        Ok(p) => p,
        Err(e) => return f(error_item(e)),
    };
    let start = Position::new(peeked.name.clone(), Some(0), Some(1));
    let framing = match sniff(&peeked.head, format) {
        Layout::JsonArray => Framing::JsonArray,
        Layout::Jsonl => Framing::Lines,
        Layout::Csv => Framing::Csv,
        Layout::PrettyObject => {
            return f(error_item(ReadError::new(
                start,
                ReadErrorKind::Shape,
                "a single JSON object spanning several lines; expected a JSON array of records or JSONL (one record per line)",
            )))
        }
        Layout::Unknown => {
            return f(error_item(ReadError::new(
                start,
                ReadErrorKind::Shape,
                "not JSON (an array or JSONL) and not CSV (a header row of comma-separated column names)",
            )))
        }
    };
    let mut header: Option<Vec<String>> = None;
    let mut go = true;
    frame(framing, peeked.into_stream(), DEFAULT_MAX_RECORD_BYTES, &mut |r| {
        let item = match r {
            Err(e) => error_item(e),
            Ok(raw) if matches!(framing, Framing::Csv) => match csv_fields(&raw, enc) {
                Err(e) if header.is_none() => {
                    // Without a header no row can be read: one error for the file.
                    let e = ReadError::new(e.position.clone(), ReadErrorKind::Csv, format!("bad header row: {}", e.message));
                    go = f(error_item(e));
                    return false;
                }
                Err(e) => error_item(e),
                Ok(fields) => match &header {
                    None => {
                        let h: Vec<String> = fields.into_iter().map(|s| s.trim().to_string()).collect();
                        header = Some(h.clone());
                        Item::CsvHeader(h)
                    }
                    Some(h) if h.len() != fields.len() => {
                        error_item(raw.error(ReadErrorKind::Csv, format!("record has {} fields, the header has {}", fields.len(), h.len())))
                    }
                    Some(h) => Item::Record(
                        raw.position(),
                        Ok(Value::Object(h.iter().cloned().zip(fields.into_iter().map(Value::String)).collect::<Map<_, _>>())),
                    ),
                },
            },
            Ok(raw) => Item::Record(raw.position(), json_value(&raw, enc)),
        };
        go = f(item);
        go
    });
    go
}

/// A JSON record: decoded, then parsed.
fn json_value(raw: &RawRecord, enc: Encoding) -> std::result::Result<Value, ReadError> {
    let text = decode(raw, &raw.bytes, 0, enc)?;
    serde_json::from_str(&text).map_err(|e| record_error(raw, &text, matches!(text, Cow::Owned(_)), &e))
}

/// The fields of one framed CSV record (decoded first, so a NUL or a bad byte is an error at
/// its offset); CRLF inside a field becomes LF.
fn csv_fields(raw: &RawRecord, enc: Encoding) -> std::result::Result<Vec<String>, ReadError> {
    let text = decode(raw, &raw.bytes, 0, enc)?;
    let mut rdr = csv::ReaderBuilder::new().has_headers(false).flexible(true).from_reader(text.as_bytes());
    let mut rec = csv::StringRecord::new();
    match rdr.read_record(&mut rec) {
        Ok(true) => Ok(rec.iter().map(|s| if s.contains('\r') { s.replace("\r\n", "\n") } else { s.to_string() }).collect()),
        Ok(false) => Ok(Vec::new()),
        Err(e) => Err(raw.error(ReadErrorKind::Csv, e.to_string())),
    }
}

/// The layout of a stream from its first bytes (`format = csv` forces CSV):
/// - `[`: a JSON array, unless its first line is a complete JSON value with more lines after
///   it (JSONL whose records are wrongly arrays: each line is then a `shape` error);
/// - `{`: JSONL, unless the first line is a lone `{` and the second is not JSON either (one
///   pretty-printed object);
/// - anything else: CSV when the first line holds a comma (a header row), else unknown.
fn sniff(head: &[u8], format: InputFormat) -> Layout {
    if format == InputFormat::Csv {
        return Layout::Csv;
    }
    let body = trimmed(head);
    let mut lines = body.split(|&b| b == b'\n').filter(|l| !l.iter().all(u8::is_ascii_whitespace));
    // A line is complete when a newline follows it inside the head (or the head is the stream).
    let complete = |l: &[u8]| l.as_ptr() as usize + l.len() < body.as_ptr() as usize + body.len();
    let is_json = |l: &[u8]| serde_json::from_slice::<serde::de::IgnoredAny>(l).is_ok();
    match body.first() {
        None => Layout::Jsonl,
        Some(b'[') => {
            let first = lines.next().unwrap_or_default();
            if complete(first) && is_json(first) && lines.next().is_some() {
                Layout::Jsonl
            } else {
                Layout::JsonArray
            }
        }
        Some(b'{') => {
            let first = lines.next().unwrap_or_default();
            let second = lines.next();
            if first.trim_ascii() == b"{" && second.is_some_and(|s| complete(s) && !is_json(s)) {
                Layout::PrettyObject
            } else {
                Layout::Jsonl
            }
        }
        Some(_) if memchr::memchr(b',', first_line(head)).is_some() => Layout::Csv,
        Some(_) => Layout::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_are_sniffed_from_content() {
        let s = |h: &str| sniff(h.as_bytes(), InputFormat::Auto);
        assert_eq!(s("[\n {\"a\": 1},\n {\"a\": 2}\n]\n"), Layout::JsonArray);
        assert_eq!(s("[{\"a\": 1}]"), Layout::JsonArray);
        assert_eq!(s("[1, 2]\n[3]\n"), Layout::Jsonl);
        assert_eq!(s("\u{feff}{\"a\": 1}\r\n{\"a\": 2}\r\n"), Layout::Jsonl);
        assert_eq!(s("{\"a\": \n{\"a\": 2}\n"), Layout::Jsonl);
        assert_eq!(s("{\n  \"instruction\": \"q\",\n  \"output\": \"a\"\n}\n"), Layout::PrettyObject);
        assert_eq!(s("question,answer\r\nq,a\r\n"), Layout::Csv);
        assert_eq!(s("just some text\n"), Layout::Unknown);
        assert_eq!(sniff(b"{\"a\": 1}\n", InputFormat::Csv), Layout::Csv);
        // A first line longer than the head is not judged: JSON array / JSONL as it starts.
        assert_eq!(s("[{\"a\": \"very long"), Layout::JsonArray);
    }
}
