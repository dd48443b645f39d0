//! Byte-to-text decoding of raw records: UTF-8, with GB18030/GBK detection for Chinese corpora
//! that were not re-encoded, and NUL bytes rejected.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use super::framing::RawRecord;
use crate::error::{ReadError, ReadErrorKind};

/// How record bytes are turned into text.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// UTF-8; if a record is not valid UTF-8 but decodes cleanly as GB18030 (a superset of GBK
    /// and GB2312), it is decoded as GB18030.
    #[default]
    Auto,
    /// UTF-8 only: anything else is an error.
    Utf8,
    /// GB18030 (and so GBK/GB2312).
    Gb18030,
}

/// Decodes a record's bytes (or a slice of them starting at `base` within the record).
/// Errors name the absolute byte offset of the first bad byte.
pub fn decode<'a>(raw: &RawRecord, bytes: &'a [u8], base: usize, enc: Encoding) -> Result<Cow<'a, str>, ReadError> {
    if let Some(i) = memchr::memchr(0, bytes) {
        return Err(raw.error_at((base + i) as u64, ReadErrorKind::Encoding, "NUL byte in text"));
    }
    match enc {
        Encoding::Gb18030 => decode_gb18030(bytes).ok_or_else(|| raw.error_at(base as u64, ReadErrorKind::Encoding, "not valid GB18030")),
        Encoding::Utf8 | Encoding::Auto => match std::str::from_utf8(bytes) {
            Ok(s) => Ok(Cow::Borrowed(s)),
            Err(e) => {
                if enc == Encoding::Auto {
                    if let Some(s) = decode_gb18030(bytes) {
                        return Ok(s);
                    }
                }
                let at = base + e.valid_up_to();
                let hint = if enc == Encoding::Auto { " (and not GB18030/GBK either)" } else { "" };
                Err(raw.error_at(at as u64, ReadErrorKind::Encoding, format!("invalid UTF-8{hint}")))
            }
        },
    }
}

/// The byte offset in the record of byte `at` of `text`, the record's bytes as [`decode`] gave
/// them: the same offset for UTF-8 (borrowed), and the length of the re-encoded prefix for
/// GB18030 text (decoded into a new string, where a 2-byte character became 3 bytes).
/// Found by the fuzz harness: an XML error in GBK text pointed past the end of its record.
pub fn record_offset(text: &Cow<'_, str>, at: u64) -> u64 {
    match text {
        Cow::Borrowed(_) => at,
        Cow::Owned(s) => {
            let mut k = (at as usize).min(s.len());
            while !s.is_char_boundary(k) {
                k -= 1;
            }
            encoding_rs::GB18030.encode(&s[..k]).0.len() as u64
        }
    }
}

fn decode_gb18030(bytes: &[u8]) -> Option<Cow<'_, str>> {
    encoding_rs::GB18030.decode_without_bom_handling_and_without_replacement(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn rec(b: &[u8]) -> RawRecord {
        RawRecord { file: Arc::from("f.jsonl"), index: 0, offset: 100, line: 3, bytes: b.to_vec() }
    }

    #[test]
    fn utf8_passes_through() {
        let r = rec("专利 text".as_bytes());
        assert_eq!(decode(&r, &r.bytes, 0, Encoding::Auto).unwrap(), "专利 text");
    }

    #[test]
    fn gbk_is_detected() {
        let (gbk, _, _) = encoding_rs::GBK.encode("一种基于深度学习的专利分类方法");
        let r = rec(&gbk);
        assert_eq!(decode(&r, &r.bytes, 0, Encoding::Auto).unwrap(), "一种基于深度学习的专利分类方法");
        let e = decode(&r, &r.bytes, 0, Encoding::Utf8).unwrap_err();
        // GBK 一 (D2 BB) is itself valid UTF-8 (U+04BB); the first invalid byte is the third.
        assert_eq!((e.kind.as_str(), e.position.offset), ("encoding", Some(102)));
    }

    #[test]
    fn nul_and_garbage_are_errors_with_offsets() {
        let r = rec(b"ab\0cd");
        let e = decode(&r, &r.bytes, 0, Encoding::Auto).unwrap_err();
        assert_eq!(e.position.offset, Some(102));
        let r = rec(b"ok \xff\xff\xff");
        let e = decode(&r, &r.bytes, 0, Encoding::Auto).unwrap_err();
        assert_eq!(e.position.offset, Some(103));
        assert!(e.message.contains("invalid UTF-8"));
    }
}
