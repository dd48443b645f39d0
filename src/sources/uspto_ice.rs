//! USPTO ICE XML v4.x grants and applications (`us-patent-grant`, `us-patent-application`),
//! including weekly bulk files of concatenated documents (non-patent documents such as
//! `sequence-cwu` are skipped and counted).

use serde::{Deserialize, Serialize};

use crate::doc::Record;
use crate::error::ReadError;

use super::{Format, Framing, ParseContext, RawRecord};

/// Settings of the USPTO readers.
#[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct UsptoConfig {}

/// USPTO ICE XML v4.x.
pub struct UsptoIce;

impl Format for UsptoIce {
    fn name(&self) -> &'static str {
        "uspto-ice"
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
        Err(raw.error("unsupported", "the uspto-ice reader is not implemented yet"))
    }
}
