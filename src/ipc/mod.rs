//! The International Patent Classification: symbol parsing/normalization and the scheme
//! (symbol → title, parent, level) built from the WIPO master file and the CoreTech IPC corpus.
//! Used by rendering (IPC titles) and SFT validation. Also the home of the patent Q&A tasks:
//! the IPC-code extractor for free text ([`extract`]) and the task classifier ([`task`]) that
//! the SFT build and `coretech eval` share.

pub mod coretech;
pub mod extract;
pub mod scheme;
pub mod symbol;
pub mod task;

pub use scheme::{IpcConfig, IpcScheme};
pub use symbol::{normalize, IpcSymbol, SymbolError};
