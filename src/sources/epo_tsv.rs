//! EPO "full-text data for text analytics" TSV: the lines of one publication grouped into one record.

use crate::doc::Record;
use crate::error::ReadError;

use super::{Format, Framing, ParseContext, RawRecord};

/// EPO "full-text data for text analytics" TSV: the lines of one publication grouped into one record.
pub struct EpoTsv;

impl Format for EpoTsv {
    fn name(&self) -> &'static str {
        "epo-tsv"
    }
    fn source(&self) -> &'static str {
        "epo"
    }
    fn sniff(&self, _head: &[u8]) -> bool {
        false // TODO(reader): content sniffing
    }
    fn framing(&self) -> Framing {
        Framing::Whole
    }
    fn parse(&self, raw: &RawRecord, _cx: &ParseContext<'_>) -> Result<Record, ReadError> {
        Err(raw.error("unsupported", "the epo-tsv reader is not implemented yet"))
    }
}
