//! Reading bytes, below every stage: input expansion and walking ([`input`]), decompression,
//! text encodings ([`text`]), sniffing helpers ([`sniff`]), framing a stream into records
//! ([`framing`]), a safe XML tree ([`xml`]) and its fixed entity table ([`entities`]).
//!
//! Corpus readers (`sources`), the IPC scheme loader (`ipc`), the cleaner (`clean`), SFT and
//! evaluation readers use these; nothing here knows about a stage or a format.

pub mod entities;
pub mod framing;
pub mod input;
pub mod json;
pub mod sniff;
pub mod text;
pub mod xml;

pub use framing::{frame, Framing, RawRecord};
pub use input::{expand_inputs, for_each_stream, InputStream};
pub use text::Encoding;

/// Default cap on one framed record: larger records are counted as `too-large` errors.
pub const DEFAULT_MAX_RECORD_BYTES: usize = 100 << 20;

/// How many bytes of a stream's start are looked at to recognise its format.
pub const SNIFF_BYTES: usize = 64 << 10;
