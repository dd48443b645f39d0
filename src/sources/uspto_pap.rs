//! USPTO pre-2005 application publications (pap v1.5, `patent-application-publication`).

use crate::doc::Record;
use crate::error::ReadError;

use super::{Format, Framing, ParseContext, RawRecord};

/// USPTO pre-2005 application publications (pap v1.5, `patent-application-publication`).
pub struct UsptoPap;

impl Format for UsptoPap {
    fn name(&self) -> &'static str {
        "uspto-pap"
    }
    fn source(&self) -> &'static str {
        "uspto"
    }
    fn sniff(&self, _head: &[u8]) -> bool {
        false // TODO(reader): content sniffing
    }
    fn framing(&self) -> Framing {
        Framing::XmlDocuments
    }
    fn parse(&self, raw: &RawRecord, _cx: &ParseContext<'_>) -> Result<Record, ReadError> {
        Err(raw.error("unsupported", "the uspto-pap reader is not implemented yet"))
    }
}
