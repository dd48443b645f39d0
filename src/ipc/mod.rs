//! The International Patent Classification: symbol parsing/normalization and the scheme
//! (symbol → title, parent, level) built from the WIPO master file and the CoreTech IPC corpus.
//! Used by rendering (IPC titles) and SFT validation.

pub mod coretech;
pub mod scheme;
pub mod symbol;

pub use scheme::{IpcConfig, IpcScheme};
pub use symbol::{normalize, IpcSymbol, SymbolError};
