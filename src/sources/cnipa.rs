//! CoreTech CN patents: a JSON array of `{patent_id, text, source}` with text already rendered.

use crate::doc::Record;
use crate::error::ReadError;

use super::{Format, Framing, ParseContext, RawRecord};

/// CoreTech CN patents: a JSON array of `{patent_id, text, source}` with text already rendered.
pub struct CoretechPatents;

impl Format for CoretechPatents {
    fn name(&self) -> &'static str {
        "coretech-patents"
    }
    fn source(&self) -> &'static str {
        "cnipa"
    }
    fn sniff(&self, _head: &[u8]) -> bool {
        false // TODO(reader): content sniffing
    }
    fn framing(&self) -> Framing {
        Framing::JsonArray
    }
    fn parse(&self, raw: &RawRecord, _cx: &ParseContext<'_>) -> Result<Record, ReadError> {
        Err(raw.error("unsupported", "the coretech-patents reader is not implemented yet"))
    }
}
