//! USPTO APS "Green Book" fixed-field text (1976–2001).

use crate::doc::Record;
use crate::error::ReadError;

use super::{Format, Framing, ParseContext, RawRecord};

/// USPTO APS "Green Book" fixed-field text (1976–2001).
pub struct UsptoAps;

impl Format for UsptoAps {
    fn name(&self) -> &'static str {
        "uspto-aps"
    }
    fn source(&self) -> &'static str {
        "uspto"
    }
    fn sniff(&self, _head: &[u8]) -> bool {
        false // TODO(reader): content sniffing
    }
    fn framing(&self) -> Framing {
        Framing::Whole
    }
    fn parse(&self, raw: &RawRecord, _cx: &ParseContext<'_>) -> Result<Record, ReadError> {
        Err(raw.error("unsupported", "the uspto-aps reader is not implemented yet"))
    }
}
