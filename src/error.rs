//! Library error types. Every error a user can hit names the file and the position in it.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

/// Where in an input a problem was found. Byte offsets are into the decompressed stream.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Position {
    /// The input file (for archives: `archive.zip!member`).
    pub file: String,
    /// Byte offset of the record (or of the problem) in the decompressed stream.
    pub offset: Option<u64>,
    /// 1-based line number where known.
    pub line: Option<u64>,
}

impl Position {
    /// A position at a byte offset (and optionally a line) of `file`.
    pub fn new(file: impl Into<String>, offset: Option<u64>, line: Option<u64>) -> Self {
        Self { file: file.into(), offset, line }
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if let Some(off) = self.offset {
            write!(f, " (byte {off})")?;
        }
        Ok(())
    }
}

/// The class of a [`ReadError`]: the bucket it is counted under in run reports (kebab-case in
/// JSON). The same fault has the same kind in every reader.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReadErrorKind {
    /// The input could not be read (an I/O failure other than a damaged stream).
    Io,
    /// A path that is not a regular file (FIFO, socket, device): never opened.
    NotAFile,
    /// The stream ends early or is corrupt (a cut or damaged compressed file, an unclosed
    /// JSON array).
    Truncated,
    /// The input holds no data.
    Empty,
    /// A record larger than `max_record_bytes`.
    TooLarge,
    /// Bytes that are not text in the expected encoding (invalid UTF-8/GB18030/UTF-16, NUL).
    Encoding,
    /// Malformed JSON.
    Json,
    /// Malformed XML, or an entity outside the fixed table.
    Xml,
    /// XML elements nested deeper than `sources.max_xml_depth`.
    XmlTooDeep,
    /// Malformed CSV.
    Csv,
    /// A TSV line that does not have the format's fields.
    Tsv,
    /// A malformed Python literal (Google Patents dict records).
    Python,
    /// A zip member that cannot be read.
    Zip,
    /// A Parquet input that cannot be read.
    Parquet,
    /// Well-formed input of the wrong structure: a value of the wrong type, an unexpected root.
    Shape,
    /// A required field (JSON key, XML element, column) is absent or empty.
    MissingField,
    /// Well-formed input this tool does not support (e.g. tool turns in SFT conversations).
    Unsupported,
    /// A file given as an IPC scheme that is not one, or a malformed scheme.
    IpcScheme,
    /// A document the tokenizer failed on.
    Tokenize,
    /// A document whose id an earlier document of the build already has, with other text
    /// (the message names both places; the later one is not written).
    DuplicateId,
    /// A reader (or the renderer or cleaner after it) panicked on this record or file: a bug,
    /// caught so that one input cannot bring the build down (the message says what panicked).
    ReaderPanic,
}

impl ReadErrorKind {
    /// The kebab-case name (`too-large`, `xml-too-deep`, …), as in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            ReadErrorKind::Io => "io",
            ReadErrorKind::NotAFile => "not-a-file",
            ReadErrorKind::Truncated => "truncated",
            ReadErrorKind::Empty => "empty",
            ReadErrorKind::TooLarge => "too-large",
            ReadErrorKind::Encoding => "encoding",
            ReadErrorKind::Json => "json",
            ReadErrorKind::Xml => "xml",
            ReadErrorKind::XmlTooDeep => "xml-too-deep",
            ReadErrorKind::Csv => "csv",
            ReadErrorKind::Tsv => "tsv",
            ReadErrorKind::Python => "python",
            ReadErrorKind::Zip => "zip",
            ReadErrorKind::Parquet => "parquet",
            ReadErrorKind::Shape => "shape",
            ReadErrorKind::MissingField => "missing-field",
            ReadErrorKind::Unsupported => "unsupported",
            ReadErrorKind::IpcScheme => "ipc-scheme",
            ReadErrorKind::Tokenize => "tokenize",
            ReadErrorKind::DuplicateId => "duplicate-id",
            ReadErrorKind::ReaderPanic => "reader-panic",
        }
    }
}

impl fmt::Display for ReadErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<str> for ReadErrorKind {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for ReadErrorKind {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// The underlying error of a [`ReadError`].
type Source = Arc<dyn std::error::Error + Send + Sync + 'static>;

/// A problem with one input record (or a whole input file): counted and skipped, or fatal under
/// `--strict`. The error that caused it (an I/O, decoder or zip error) is kept as its
/// [`source`](std::error::Error::source); in JSON reports its chain is written as `causes`.
#[derive(Debug, Clone)]
pub struct ReadError {
    /// Where the problem is.
    pub position: Position,
    /// The class of the problem, the bucket in the run report.
    pub kind: ReadErrorKind,
    /// What was expected and what was found.
    pub message: String,
    source: Option<Source>,
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.position, self.kind, self.message)
    }
}

impl std::error::Error for ReadError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        // The error itself, not the `Arc` around it (so callers can downcast it).
        self.source.as_deref().map(|e| e as _)
    }
}

impl ReadError {
    /// A read error of class `kind` at `position`.
    pub fn new(position: Position, kind: ReadErrorKind, message: impl Into<String>) -> Self {
        Self { position, kind, message: message.into(), source: None }
    }

    /// The same error, caused by `source` (kept as its source, not flattened into the message).
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Arc::new(source));
        self
    }

    /// The messages of the source chain, outermost first.
    pub fn causes(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut next: Option<&(dyn std::error::Error + 'static)> = self.source.as_deref().map(|e| e as _);
        while let Some(e) = next {
            out.push(e.to_string());
            next = e.source();
        }
        out
    }

    /// The error with its causes, `position: kind: message: cause: …` (for reports).
    pub fn with_causes(&self) -> String {
        let mut s = self.to_string();
        for c in self.causes() {
            s.push_str(": ");
            s.push_str(&c);
        }
        s
    }
}

/// Equal position, kind and message (the source is not compared).
impl PartialEq for ReadError {
    fn eq(&self, o: &Self) -> bool {
        self.position == o.position && self.kind == o.kind && self.message == o.message
    }
}

impl Eq for ReadError {}

/// The JSON form: position, kind, message and the source chain as text.
#[derive(serde::Serialize, serde::Deserialize)]
struct ReadErrorRepr {
    position: Position,
    kind: ReadErrorKind,
    message: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    causes: Vec<String>,
}

/// A cause read back from a report: its message and its own cause.
#[derive(Debug)]
struct Cause {
    message: String,
    next: Option<Box<Cause>>,
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Cause {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.next.as_deref().map(|c| c as _)
    }
}

impl serde::Serialize for ReadError {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        ReadErrorRepr { position: self.position.clone(), kind: self.kind, message: self.message.clone(), causes: self.causes() }
            .serialize(s)
    }
}

impl<'de> serde::Deserialize<'de> for ReadError {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let r = ReadErrorRepr::deserialize(d)?;
        let chain = r.causes.into_iter().rev().fold(None, |next, message| Some(Box::new(Cause { message, next })));
        Ok(Self { position: r.position, kind: r.kind, message: r.message, source: chain.map(|c| Arc::new(*c) as Source) })
    }
}

/// Errors of the library's stages.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A bad input record or file (see [`ReadError`]).
    #[error(transparent)]
    Read(#[from] ReadError),
    /// A configuration problem; `key` is the dotted path of the offending key.
    #[error("config {file}: {key}: {message}")]
    Config {
        /// The config file (empty when the config did not come from a file).
        file: String,
        /// Dotted path of the key, e.g. `docs.writer.row_group_rows`.
        key: String,
        /// What is wrong, and for enums the allowed values.
        message: String,
    },
    /// An I/O failure on a named path. The I/O error is in the message, not a `source`, so a
    /// chained report (`{:#}`) does not print it twice.
    #[error("{path}: {error}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying failure.
        error: std::io::Error,
    },
    /// A Parquet or Arrow failure on a named path.
    #[error("{path}: {message}")]
    Shard {
        /// The shard file.
        path: PathBuf,
        /// What failed.
        message: String,
    },
    /// Anything else, with context.
    #[error("{0}")]
    Other(String),
}

impl Error {
    /// Wraps an I/O error with the path it happened on.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), error: source }
    }
}

/// Library result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_kebab_case_and_sources_are_kept() {
        assert_eq!(serde_json::to_string(&ReadErrorKind::XmlTooDeep).unwrap(), "\"xml-too-deep\"");
        assert_eq!(ReadErrorKind::MissingField.to_string(), "missing-field");
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, "corrupt deflate stream");
        let e = ReadError::new(Position::new("a.gz", Some(7), Some(2)), ReadErrorKind::Truncated, "stream ends early").with_source(io);
        assert_eq!(e.to_string(), "a.gz:2 (byte 7): truncated: stream ends early");
        let src = std::error::Error::source(&e).expect("source kept");
        assert_eq!(src.downcast_ref::<std::io::Error>().unwrap().kind(), std::io::ErrorKind::InvalidData);
        assert_eq!(e.with_causes(), "a.gz:2 (byte 7): truncated: stream ends early: corrupt deflate stream");
        // Through JSON (reports): the chain comes back as text.
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json["kind"], "truncated");
        assert_eq!(json["causes"], serde_json::json!(["corrupt deflate stream"]));
        let back: ReadError = serde_json::from_value(json).unwrap();
        assert_eq!(back, e);
        assert_eq!(back.causes(), ["corrupt deflate stream"]);
    }
}
