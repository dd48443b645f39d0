//! Generic corpora users bring: JSONL (and Parquet) with a `text` column, plus optional `id`,
//! `title`, `lang`, `date`; other fields go to `meta`.

use serde::{Deserialize, Serialize};

use crate::doc::Record;
use crate::error::ReadError;

use super::{Format, Framing, ParseContext, RawRecord};

/// Settings of the generic reader.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct GenericConfig {
    /// Name of the text field.
    pub text_field: String,
    /// `source` of the documents.
    pub source: String,
}

impl Default for GenericConfig {
    fn default() -> Self {
        Self { text_field: "text".into(), source: "text".into() }
    }
}

/// JSONL with a text field.
pub struct GenericJsonl;

impl Format for GenericJsonl {
    fn name(&self) -> &'static str {
        "jsonl"
    }
    fn source(&self) -> &'static str {
        "text"
    }
    fn sniff(&self, _head: &[u8]) -> bool {
        false // TODO(reader)
    }
    fn framing(&self) -> Framing {
        Framing::Lines
    }
    fn parse(&self, raw: &RawRecord, _cx: &ParseContext<'_>) -> Result<Record, ReadError> {
        Err(raw.error("unsupported", "the jsonl reader is not implemented yet"))
    }
}
