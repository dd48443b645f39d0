//! WuDao corpus: the pretty-printed JSON array (streamed, never loaded whole), JSONL, and the
//! `{"RECORDS": [...]}` wrapper; objects with `content` (and `title`, `dataType`, `id`, …).

use crate::doc::Record;
use crate::error::ReadError;

use super::{Format, Framing, ParseContext, RawRecord};

/// WuDao as a JSON array or `{"RECORDS": [...]}`.
pub struct WudaoJson;
/// WuDao as JSONL.
pub struct WudaoJsonl;

impl Format for WudaoJson {
    fn name(&self) -> &'static str {
        "wudao-json"
    }
    fn source(&self) -> &'static str {
        "wudao"
    }
    fn sniff(&self, _head: &[u8]) -> bool {
        false // TODO(reader)
    }
    fn framing(&self) -> Framing {
        Framing::JsonArray
    }
    fn parse(&self, raw: &RawRecord, _cx: &ParseContext<'_>) -> Result<Record, ReadError> {
        Err(raw.error("unsupported", "the wudao reader is not implemented yet"))
    }
}

impl Format for WudaoJsonl {
    fn name(&self) -> &'static str {
        "wudao-jsonl"
    }
    fn source(&self) -> &'static str {
        "wudao"
    }
    fn sniff(&self, _head: &[u8]) -> bool {
        false // TODO(reader)
    }
    fn framing(&self) -> Framing {
        Framing::Lines
    }
    fn parse(&self, raw: &RawRecord, cx: &ParseContext<'_>) -> Result<Record, ReadError> {
        WudaoJson.parse(raw, cx)
    }
}
