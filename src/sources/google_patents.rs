//! Google-Patents record: one Python dict repr per file (CoreTech's raw CN/US/EP/JP crawl).

use crate::doc::Record;
use crate::error::ReadError;

use super::{Format, Framing, ParseContext, RawRecord};

/// Google-Patents record: one Python dict repr per file (CoreTech's raw CN/US/EP/JP crawl).
pub struct GooglePatents;

impl Format for GooglePatents {
    fn name(&self) -> &'static str {
        "google-patents"
    }
    fn source(&self) -> &'static str {
        "cnipa"
    }
    fn sniff(&self, _head: &[u8]) -> bool {
        false // TODO(reader): content sniffing
    }
    fn framing(&self) -> Framing {
        Framing::Whole
    }
    fn parse(&self, raw: &RawRecord, _cx: &ParseContext<'_>) -> Result<Record, ReadError> {
        Err(raw.error("unsupported", "the google-patents reader is not implemented yet"))
    }
}
