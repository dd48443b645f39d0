//! Readers: one module per input format, chosen by sniffing the content (never the file name).
//!
//! A format declares how its stream is cut into records ([`Framing`]) and how one record is
//! parsed ([`Format::parse`]). Framing is cheap and sequential; parsing runs in parallel on the
//! records of a batch. See `pipeline` for the driver; streams, framing, encodings and XML are
//! `crate::io`'s.

pub mod json;
pub mod layout;
pub mod mathml;

pub mod cnipa;
pub mod epo;
pub mod generic;
pub mod google_patents;
pub mod ipc_jsonl;
pub mod uspto;
pub mod wudao;

use serde::{Deserialize, Serialize};

use crate::doc::Record;
use crate::error::ReadError;
pub use crate::io::framing::{Framing, RawRecord};
pub use crate::io::text::Encoding;
use crate::io::DEFAULT_MAX_RECORD_BYTES;

/// Reader settings shared by all formats, plus each format's own section.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct SourcesConfig {
    /// Text encoding of inputs (`auto` detects GB18030/GBK where UTF-8 fails).
    pub encoding: Encoding,
    /// Records larger than this many bytes are counted as errors and skipped.
    #[schemars(range(min = 1))]
    pub max_record_bytes: usize,
    /// Most levels of nested XML elements in one document (real patents use about 20); a deeper
    /// document is an `xml-too-deep` error and the rest of its file is still read. The upper
    /// bound keeps the recursive text walks within a worker thread's 2 MiB stack.
    #[schemars(range(min = 1, max = 1024))]
    pub max_xml_depth: usize,
    /// EPO `ep-patent-document` XML and full-text TSV.
    pub epo: epo::EpoConfig,
    /// USPTO formats.
    pub uspto: uspto::UsptoConfig,
    /// Generic JSONL/Parquet corpora.
    pub generic: generic::GenericConfig,
}

impl Default for SourcesConfig {
    fn default() -> Self {
        Self {
            encoding: Encoding::Auto,
            max_record_bytes: DEFAULT_MAX_RECORD_BYTES,
            max_xml_depth: crate::io::xml::DEFAULT_MAX_DEPTH,
            epo: Default::default(),
            uspto: Default::default(),
            generic: Default::default(),
        }
    }
}

impl SourcesConfig {
    /// The XML limits of this config.
    pub fn xml_limits(&self) -> crate::io::xml::XmlLimits {
        crate::io::xml::XmlLimits { max_depth: self.max_xml_depth }
    }
}

/// What a parser may consult.
pub struct ParseContext<'a> {
    /// Reader settings.
    pub cfg: &'a SourcesConfig,
}

/// An input format.
pub trait Format: Send + Sync {
    /// Stable name used in reports and errors, e.g. `uspto-ice`, `epo-tsv`, `wudao-json`.
    fn name(&self) -> &'static str;
    /// The `source` of the documents it yields (`uspto`, `epo`, `cnipa`, `wudao`, `ipc`, `text`).
    fn source(&self) -> &'static str;
    /// Whether the stream whose first bytes (up to [`crate::io::SNIFF_BYTES`]) are `head` is in
    /// this format.
    fn sniff(&self, head: &[u8]) -> bool;
    /// How the stream is cut into records.
    fn framing(&self) -> Framing;
    /// Parses one record.
    fn parse(&self, raw: &RawRecord, cx: &ParseContext<'_>) -> Result<Record, ReadError>;
}

/// All formats, most specific first: sniffing takes the first that accepts a stream.
pub fn registry() -> &'static [&'static dyn Format] {
    static REGISTRY: &[&dyn Format] = &[
        &uspto::ice::UsptoIce,
        &uspto::pap::UsptoPap,
        &uspto::patdoc::UsptoPatdoc,
        &uspto::aps::UsptoAps,
        &epo::xml::EpoXml,
        &epo::tsv::EpoTsv,
        &google_patents::GooglePatents,
        &cnipa::CoretechPatents,
        &ipc_jsonl::IpcJsonl,
        &wudao::WudaoJson,
        &wudao::WudaoJsonl,
        &generic::GenericJsonl,
    ];
    REGISTRY
}

/// The format of a stream, by content. `None` when no format recognises it.
pub fn sniff(head: &[u8]) -> Option<&'static dyn Format> {
    registry().iter().copied().find(|f| f.sniff(head))
}

/// A format by its name (for tests and config overrides).
pub fn by_name(name: &str) -> Option<&'static dyn Format> {
    registry().iter().copied().find(|f| f.name() == name)
}
