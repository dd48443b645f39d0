//! The IPC scheme index: symbol → titles (en from the WIPO master file, zh from the CoreTech
//! IPC corpus), parent and level.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::Result;

/// Where the scheme comes from.
#[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct IpcConfig {
    /// WIPO IPC master-file XML files and CoreTech IPC JSONL files (sniffed by content).
    pub scheme: Vec<PathBuf>,
}

/// The loaded scheme.
#[derive(Debug, Default)]
pub struct IpcScheme {}

impl IpcScheme {
    /// Loads the scheme from the configured files. TODO(ipc): implement.
    pub fn load(_cfg: &IpcConfig) -> Result<IpcScheme> {
        Ok(IpcScheme {})
    }

    /// The title of a normalized symbol in `lang` (`en` or `zh`).
    pub fn title(&self, _symbol: &str, _lang: &str) -> Option<&str> {
        None
    }
}
