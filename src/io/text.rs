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
    /// and GB2312), it is decoded as GB18030 — unless it reads as UTF-8 with a few damaged
    /// bytes (8 or more valid multi-byte characters per invalid sequence), which is an error at
    /// the first bad byte, not mojibake.
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
                let damaged = enc == Encoding::Auto && damaged_utf8(bytes);
                if enc == Encoding::Auto && !damaged {
                    if let Some(s) = decode_gb18030(bytes) {
                        return Ok(s);
                    }
                }
                let at = base + e.valid_up_to();
                let hint = match enc {
                    Encoding::Auto if damaged => " (the rest of the record is UTF-8: a damaged byte, not another encoding)",
                    Encoding::Auto => " (and not GB18030/GBK either)",
                    _ => "",
                };
                Err(raw.error_at(at as u64, ReadErrorKind::Encoding, format!("invalid UTF-8{hint}")))
            }
        },
    }
}

/// The offset in `bytes` of byte `at` of `text`, where `text` is what [`decode`] made of
/// `bytes`: the same offset for UTF-8 (borrowed), and for GB18030 text (decoded into a new
/// string, where a 2-byte character became 3 bytes) the number of bytes whose decoding gives
/// `text[..at]`. Found by the fuzz harness: XML, TSV and JSON errors in GB18030 text pointed
/// past the end of their record. Re-encoding the prefix is not exact (the lone byte 0x80
/// decodes to U+20AC, which GB18030 encodes in 2 bytes), so the prefix is decoded again.
// The Cow is the point: borrowed text is the record's own bytes, owned text was transcoded.
#[allow(clippy::ptr_arg)]
pub fn record_offset(bytes: &[u8], text: &Cow<'_, str>, at: u64) -> u64 {
    match text {
        Cow::Borrowed(_) => at,
        Cow::Owned(s) => {
            let mut k = (at as usize).min(s.len());
            while !s.is_char_boundary(k) {
                k -= 1;
            }
            // One byte at a time (an error path only): the first count of bytes whose output
            // reaches `k`. 16 bytes of output room: one input byte completes at most one char.
            let mut decoder = encoding_rs::GB18030.new_decoder_without_bom_handling();
            let mut out = [0u8; 16];
            let mut written = 0;
            for (i, b) in bytes.iter().enumerate() {
                if written >= k {
                    return i as u64;
                }
                written += decoder.decode_to_utf8_without_replacement(std::slice::from_ref(b), &mut out, false).2;
            }
            bytes.len() as u64
        }
    }
}

/// Valid multi-byte UTF-8 characters per invalid sequence above which a record that is not
/// valid UTF-8 counts as damaged UTF-8 rather than GB18030. GBK text forms a valid UTF-8
/// character only by chance (a lead byte E0–EF followed by two bytes 80–BF), so in real GBK
/// the invalid sequences outnumber the valid ones; a UTF-8 record with one stray byte has
/// hundreds of valid characters to one invalid sequence.
const DAMAGED_UTF8_RATIO: usize = 8;

/// Whether `bytes` (not valid UTF-8) are UTF-8 with a few damaged bytes: at least
/// [`DAMAGED_UTF8_RATIO`] valid multi-byte characters per invalid sequence. Decoding such a
/// record as GB18030 would turn all of it into mojibake to hide one bad byte.
fn damaged_utf8(bytes: &[u8]) -> bool {
    let (mut multibyte, mut invalid) = (0usize, 0usize);
    for chunk in bytes.utf8_chunks() {
        multibyte += chunk.valid().chars().filter(|c| c.len_utf8() > 1).count();
        invalid += usize::from(!chunk.invalid().is_empty());
    }
    multibyte >= DAMAGED_UTF8_RATIO * invalid.max(1)
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
    fn a_stray_byte_in_utf8_text_is_an_error_there_not_gb18030_mojibake() {
        // A stray continuation byte at each character boundary of UTF-8 Chinese text: always an
        // error at that byte. Where the damaged bytes happen to be valid GB18030 as a whole,
        // this record used to come out as mojibake.
        let text = "一种基于深度学习的专利分类方法，包括以下步骤：获取专利文本";
        let mut gb18030_valid = 0;
        for at in (0..=text.len()).step_by(3) {
            let mut b = text.as_bytes().to_vec();
            b.insert(at, 0xB0);
            gb18030_valid += usize::from(decode_gb18030(&b).is_some());
            let r = rec(&b);
            let e = decode(&r, &r.bytes, 0, Encoding::Auto).unwrap_err();
            assert_eq!((e.kind.as_str(), e.position.offset), ("encoding", Some(100 + at as u64)));
            assert!(e.message.contains("damaged byte"), "{e}");
        }
        assert!(gb18030_valid > 0, "no insertion gave bytes GB18030 accepts: the test shows nothing");
        // GBK text of every length still decodes as GB18030 (one character alone, 一 = D2 BB,
        // is valid UTF-8: see `gbk_is_detected`).
        for n in 2..=15 {
            let s: String = "一种基于深度学习的专利分类方法".chars().take(n).collect();
            let (gbk, _, _) = encoding_rs::GBK.encode(&s);
            let r = rec(&gbk);
            assert_eq!(decode(&r, &r.bytes, 0, Encoding::Auto).unwrap(), s);
        }
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

    #[test]
    fn offsets_in_decoded_gb18030_map_back_to_bytes() {
        // 0x80 decodes to U+20AC (3 bytes of UTF-8, 2 of GB18030 when re-encoded); 中 is D6 D0.
        let r = rec(b"a\x80b\xd6\xd0c");
        let text = decode(&r, &r.bytes, 0, Encoding::Auto).unwrap();
        assert_eq!(text, "a\u{20ac}b\u{4e2d}c");
        let back: Vec<u64> = text.char_indices().map(|(i, _)| record_offset(&r.bytes, &text, i as u64)).collect();
        assert_eq!(back, [0, 1, 2, 3, 5]);
        assert_eq!(record_offset(&r.bytes, &text, text.len() as u64), r.bytes.len() as u64);
        assert_eq!(record_offset(&r.bytes, &text, 2), 1, "inside a character: the character's start");
        let utf8 = rec("专利".as_bytes());
        assert_eq!(record_offset(&utf8.bytes, &decode(&utf8, &utf8.bytes, 0, Encoding::Auto).unwrap(), 3), 3);
    }
}
