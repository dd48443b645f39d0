//! Cleaning: text normalization (NFC, control characters, whitespace, leftover markup, HTML
//! entities) and quality filters. Each filter has a name; a dropped document is counted under it.

use serde::{Deserialize, Serialize};

use crate::doc::Document;
use crate::error::Result;

/// Normalization and filter settings.
#[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct CleanConfig {}

/// A configured cleaning pipeline: normalizers, then filters, in order.
#[derive(Debug)]
pub struct Cleaner {}

impl Cleaner {
    /// Builds the pipeline from its config. TODO(clean): implement.
    pub fn new(_cfg: &CleanConfig) -> Result<Self> {
        Ok(Cleaner {})
    }

    /// Normalizes `doc.text` in place, then applies the filters. `Err(name)` names the filter
    /// that dropped the document.
    pub fn apply(&self, _doc: &mut Document) -> std::result::Result<(), String> {
        Ok(())
    }
}
