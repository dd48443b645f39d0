//! EPO `ep-patent-document` XML, DTD v1.0–v1.5.1 (language by config; bibliography-only
//! publications are counted as filtered, not errors).

use serde::{Deserialize, Serialize};

use crate::doc::Record;
use crate::error::ReadError;

use super::{Format, Framing, ParseContext, RawRecord};

/// Settings of the EPO readers.
#[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct EpoConfig {}

/// EPO `ep-patent-document` XML.
pub struct EpoXml;

impl Format for EpoXml {
    fn name(&self) -> &'static str {
        "epo-xml"
    }
    fn source(&self) -> &'static str {
        "epo"
    }
    fn sniff(&self, _head: &[u8]) -> bool {
        false // TODO(reader): content sniffing
    }
    fn framing(&self) -> Framing {
        Framing::XmlDocuments
    }
    fn parse(&self, raw: &RawRecord, _cx: &ParseContext<'_>) -> Result<Record, ReadError> {
        Err(raw.error("unsupported", "the epo-xml reader is not implemented yet"))
    }
}
