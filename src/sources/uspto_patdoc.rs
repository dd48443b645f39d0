//! USPTO 2002–2004 grants in ST.32 PATDOC v2.5 (numeric SGML-style tags).

use crate::doc::Record;
use crate::error::ReadError;

use super::{Format, Framing, ParseContext, RawRecord};

/// USPTO 2002–2004 grants in ST.32 PATDOC v2.5 (numeric SGML-style tags).
pub struct UsptoPatdoc;

impl Format for UsptoPatdoc {
    fn name(&self) -> &'static str {
        "uspto-patdoc"
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
        Err(raw.error("unsupported", "the uspto-patdoc reader is not implemented yet"))
    }
}
