//! The unit every stage passes on: a [`Document`], and the structured [`Patent`] that patent
//! readers produce before it is rendered into CPT text.

use serde::{Deserialize, Serialize};

/// JSON object with what a source had and the text did not keep. Keys are sorted (BTreeMap),
/// so the serialized form is deterministic.
pub type Meta = serde_json::Map<String, serde_json::Value>;

/// The `meta` key of a document's provenance.
pub const PROVENANCE_KEY: &str = "provenance";
/// The `meta` key a reader sets to [`ID_FROM_POSITION`] when the native id is only the record's
/// position in its file (the docs stage then namespaces it by the file).
pub const ID_FROM_KEY: &str = "id_from";
/// See [`ID_FROM_KEY`].
pub const ID_FROM_POSITION: &str = "position";
/// The `meta` key holding the id an input gave a document that the docs stage renamed
/// (another record of the same file had that id with other text).
pub const ID_GIVEN_KEY: &str = "id_given";

/// One document of the corpus: the row of a document shard.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Document {
    /// `{source}:{native id}`, stable across runs.
    pub id: String,
    /// `wudao|ipc|cnipa|epo|uspto|text|…`.
    pub source: String,
    /// ISO 639-1 code (`zh`, `en`, `de`, `fr`), empty when unknown.
    pub lang: String,
    /// Title, empty when the source has none.
    pub title: String,
    /// Normalized IPC symbols, e.g. `H04L 29/06`.
    pub ipc: Vec<String>,
    /// Publication date `YYYY-MM-DD`, empty when unknown.
    pub date: String,
    /// The text that is tokenized.
    pub text: String,
    /// What the source had and the text did not keep.
    pub meta: Meta,
}

/// A document a stage dropped, with why: a row of a `rejects/` shard (see
/// [`crate::shard::documents::rejects_schema`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reject {
    /// The document as the stage saw it when it dropped it (a record a reader skipped has its
    /// id, source and provenance only).
    pub doc: Document,
    /// The filter (`min_length`, `biblio-only`, …) or duplicate kind (`exact`, `near`).
    pub reason: String,
    /// For a duplicate: the id of the document kept in its place.
    pub kept_id: Option<String>,
    /// For a duplicate: the Jaccard similarity to the kept document (estimated or exact; 1.0
    /// for an exact duplicate).
    pub similarity: Option<f64>,
}

/// A patent publication as read from any patent format, before rendering (see `render`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Patent {
    /// `uspto`, `epo`, `cnipa`, …
    pub source: String,
    /// Publication number with kind code, e.g. `US8930553B2`, `EP1442058B1`, `CN118524411A`.
    pub number: String,
    /// Language of title/abstract/description (ISO 639-1).
    pub lang: String,
    /// Invention title in `lang`.
    pub title: String,
    /// Abstract paragraphs joined by `\n`.
    pub abstract_text: String,
    /// Normalized IPC symbols (`H04L 29/06`), in document order, without duplicates.
    pub ipc: Vec<String>,
    /// IPC titles the source itself gives (Google Patents), aligned with `ipc` where present.
    pub ipc_titles: Vec<String>,
    /// Publication date `YYYY-MM-DD`.
    pub date: String,
    /// Description: headings and paragraphs, one per line.
    pub description: String,
    /// Claims in `lang` (or the configured claims language), one string per claim.
    pub claims: Vec<String>,
    /// Other fields worth keeping (kind, application number, other-language titles, …).
    pub meta: Meta,
}

/// What a reader yields for one framed input record.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    /// A ready document (WuDao, IPC descriptions, generic text, CoreTech-rendered patents).
    Doc(Document),
    /// A structured patent, rendered into a document by `render`.
    Patent(Patent),
    /// Read correctly but not a corpus document (a `sequence-cwu` in a USPTO bulk file, a
    /// bibliography-only EP publication): counted under `reason` as filtered, never an error.
    Skip {
        /// Filter bucket name, e.g. `not-a-patent:sequence-cwu`, `biblio-only`.
        reason: String,
        /// The record's native id where known.
        id: String,
    },
}
