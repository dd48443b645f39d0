//! The IPC scheme index: normalized symbol → English title (WIPO IPC master file), Chinese title
//! (CoreTech IPC corpus), parent, level and kind. Used by rendering (IPC titles) and by SFT
//! validation.
//!
//! Sources, each file sniffed by content (plain, `.gz`, `.zst` or zip members):
//! - **WIPO IPC master-file XML** (the 2010 `revisionPeriods/…/staticIpc` schema; element names
//!   are matched without namespace prefixes). Streamed with quick-xml, so the ~100 MB+ master
//!   file is never held whole. `ipcEntry` elements nest like the hierarchy: an entry's parent is
//!   the nearest enclosing *indexed* entry (so a two-dot subgroup's parent is its one-dot
//!   subgroup, not the main group). Indexed kinds: `s` section, `c` class, `u` subclass, `m`
//!   main group, `1`–`9` subgroup of that many dots. Not indexed but counted by kind in
//!   [`SchemeStats::wipo_not_indexed`]: `t` (heading text over a class), `g` guidance headings,
//!   `i` subclass indexes, `n` notes, `d` deleted (transferred) entries, and any other kind.
//! - **CoreTech IPC JSONL** (`{"ipc", "des", "ori_des"}`): `ori_des` is the Chinese title. Its
//!   mis-keyed records are re-keyed as [`super::coretech`] explains. When several records give a
//!   symbol a title, a record under its own key beats a re-keyed one, then the first in file
//!   order wins; the others are counted in [`SchemeStats::coretech_duplicates`].
//!
//! Titles. English: the `titlePart`s of `textBody/title`, each with whitespace runs collapsed,
//! joined by `"; "`, as the printed scheme and Google Patents show them. [`IpcEntry::title_en`]
//! leaves the references out (the form CoreTech's patent texts carry, e.g. `H04W28/0925：
//! Management thereof using policies`); [`IpcEntry::title_en_full`] keeps each part's
//! references in parentheses after it, `; `-separated, with referenced symbols normalized:
//! `Hand tools (edge trimmers for lawns A01G 3/06)`. Inline markup keeps its text; the glyph
//! elements `llinkt`/`rlinkt`/`tbond`/`dbond`/`emdash`/`endash`/`nbsp` become `>`, `<`, `≡`,
//! `=`, `—`, `–` and a space. Chinese: `ori_des` as CNIPA words it, references and edition
//! marks (`〔8〕`) included.
//!
//! Entries only the CoreTech corpus knows get their kind and level from the symbol (a
//! subgroup is level 5, its parent the main group: the corpus does not give dot levels).

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;
use serde::{Deserialize, Serialize};

use super::coretech;
use super::symbol::IpcSymbol;
use crate::error::{Error, Position, ReadError, ReadErrorKind, Result};
use crate::io::framing::{frame, Framing};
use crate::io::input::{for_each_stream, InputStream};
use crate::io::sniff;
use crate::io::xml::resolve_entity;
use crate::io::{DEFAULT_MAX_RECORD_BYTES, SNIFF_BYTES};

/// Where the scheme comes from.
#[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct IpcConfig {
    /// WIPO IPC master-file XML files and CoreTech IPC JSONL files (sniffed by content).
    pub scheme: Vec<PathBuf>,
}

/// The place of an entry in the hierarchy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EntryKind {
    /// `A`.
    Section,
    /// `A01`.
    Class,
    /// `A01B`.
    Subclass,
    /// `A01B 1/00`.
    MainGroup,
    /// `A01B 1/02`.
    Subgroup,
}

/// One indexed symbol.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpcEntry {
    /// Normalized symbol (`A01B 1/02`).
    pub symbol: String,
    /// Section, class, subclass, main group or subgroup.
    pub kind: EntryKind,
    /// Depth: 1 section, 2 class, 3 subclass, 4 main group, 4 + n for a subgroup of n dots
    /// (5 for subgroups only the CoreTech corpus knows).
    pub level: u8,
    /// Normalized symbol of the entry one level up; `None` for sections.
    pub parent: Option<String>,
    /// English title without references (WIPO).
    pub title_en: Option<String>,
    /// English title with references in parentheses (WIPO).
    pub title_en_full: Option<String>,
    /// Chinese title (CoreTech `ori_des`).
    pub title_zh: Option<String>,
    /// Whether the entry's structure comes from the WIPO file.
    #[serde(skip)]
    from_wipo: bool,
    /// Whether the Chinese title came from a re-keyed record.
    #[serde(skip)]
    zh_rekeyed: bool,
}

/// What loading read and how much of it was indexed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchemeStats {
    /// `ipcEntry` elements read from WIPO files.
    pub wipo_entries: u64,
    /// Of those, entries indexed as symbols.
    pub wipo_indexed: u64,
    /// Entries not indexed, by `kind` attribute (`t`, `g`, `i`, `n`, `d`, …).
    pub wipo_not_indexed: BTreeMap<String, u64>,
    /// Indexed-kind entries whose symbol an earlier entry already had (first kept).
    pub wipo_duplicates: u64,
    /// Records read from CoreTech IPC files.
    pub coretech_records: u64,
    /// Of those, records re-keyed to the symbol their `ori_des` names.
    pub coretech_rekeyed: u64,
    /// Records whose symbol already had a Chinese title (the preferred one kept).
    pub coretech_duplicates: u64,
    /// Symbols with a Chinese title that no WIPO file had.
    pub coretech_only: u64,
}

/// The loaded scheme.
#[derive(Debug, Default)]
pub struct IpcScheme {
    entries: BTreeMap<String, IpcEntry>,
    stats: SchemeStats,
}

impl IpcScheme {
    /// Loads the scheme from the configured files, in order. A file that is neither a WIPO
    /// master file nor CoreTech IPC JSONL, or that is malformed, is an error naming it and the
    /// position.
    pub fn load(cfg: &IpcConfig) -> Result<IpcScheme> {
        let mut s = IpcScheme::default();
        for p in &cfg.scheme {
            s.add_file(p)?;
        }
        s.finish_coretech_only();
        Ok(s)
    }

    /// A digest of the loaded entries (what rendering and validation read), for stage
    /// fingerprints: another scheme file, an edited one or none gives another digest.
    pub fn digest(&self) -> String {
        crate::core::hash_of(&self.entries)
    }

    /// Adds one file (WIPO XML or CoreTech JSONL, sniffed).
    pub fn add_file(&mut self, path: &Path) -> Result<()> {
        let progress = Arc::default();
        for_each_stream(path, &progress, |stream| {
            let InputStream { name, mut reader } = stream;
            enum Kind {
                Wipo,
                Coretech,
                Unknown,
            }
            let kind = {
                let head = reader
                    .fill_buf()
                    .map_err(|e| Error::Read(ReadError::new(Position::new(&name, Some(0), None), ReadErrorKind::Io, e.to_string())))?;
                let head = &head[..head.len().min(SNIFF_BYTES)];
                let xml_like = sniff::trimmed(head).starts_with(b"<");
                if xml_like
                    && (sniff::contains(head, b"ipcEntry")
                        || sniff::contains(head, b"revisionPeriods")
                        || sniff::contains(head, b"IPCScheme"))
                {
                    Kind::Wipo
                } else if crate::io::sniff::json_head(head).is_some_and(|h| h.has("ipc") && h.has("ori_des")) {
                    Kind::Coretech
                } else {
                    Kind::Unknown
                }
            };
            match kind {
                Kind::Wipo => self.load_wipo(&name, reader),
                Kind::Coretech => self.load_coretech(InputStream { name, reader }),
                Kind::Unknown => Err(Error::Read(ReadError::new(
                    Position::new(&name, Some(0), None),
                    ReadErrorKind::IpcScheme,
                    "not an IPC scheme file: expected WIPO IPC master-file XML (ipcEntry elements) or CoreTech IPC JSONL ({\"ipc\", \"ori_des\", …})",
                ))),
            }
        })
    }

    /// The entry of a symbol, in any spelling `IpcSymbol::parse` accepts (`H04L29/06`,
    /// `H04L0029060000`, `H04L 29/06`).
    pub fn get(&self, symbol: &str) -> Option<&IpcEntry> {
        self.entries.get(symbol).or_else(|| IpcSymbol::parse(symbol).ok().and_then(|s| self.entries.get(&s.to_string())))
    }

    /// Whether the symbol is indexed.
    pub fn contains(&self, symbol: &str) -> bool {
        self.get(symbol).is_some()
    }

    /// The title of a symbol in `lang` (`en`: without references; `zh`); `None` when unknown.
    pub fn title(&self, symbol: &str, lang: &str) -> Option<&str> {
        let e = self.get(symbol)?;
        match lang {
            "en" => e.title_en.as_deref(),
            "zh" => e.title_zh.as_deref(),
            _ => None,
        }
    }

    /// The entry and its ancestors, nearest first (`A01B 63/10`, `A01B 63/02`, `A01B 63/00`,
    /// `A01B`, `A01`, `A`), as far as the index has them.
    pub fn ancestry(&self, symbol: &str) -> Vec<&IpcEntry> {
        let mut out = Vec::new();
        let mut cur = self.get(symbol);
        while let Some(e) = cur {
            out.push(e);
            if out.len() > 32 {
                break; // a cycle would be a bug; never loop forever
            }
            cur = e.parent.as_deref().and_then(|p| self.entries.get(p));
        }
        out
    }

    /// Number of indexed symbols.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is indexed.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// All entries, in symbol order.
    pub fn entries(&self) -> impl Iterator<Item = &IpcEntry> {
        self.entries.values()
    }

    /// What loading read.
    pub fn stats(&self) -> &SchemeStats {
        &self.stats
    }

    fn finish_coretech_only(&mut self) {
        self.stats.coretech_only = self.entries.values().filter(|e| !e.from_wipo && e.title_zh.is_some()).count() as u64;
    }

    fn load_coretech(&mut self, stream: InputStream<'_>) -> Result<()> {
        let mut failure: Option<ReadError> = None;
        frame(Framing::Lines, stream, DEFAULT_MAX_RECORD_BYTES, &mut |r| {
            let res = r.and_then(|raw| {
                let bad = |msg: String| raw.error(ReadErrorKind::IpcScheme, msg);
                let v: serde_json::Value = serde_json::from_slice(&raw.bytes).map_err(|e| bad(format!("malformed JSON: {e}")))?;
                let field = |k: &str| v.get(k).and_then(|x| x.as_str()).ok_or_else(|| bad(format!("missing string field {k:?}")));
                let (ipc, ori) = (field("ipc")?, field("ori_des")?);
                let r = coretech::resolve(ipc, ori).map_err(|e| bad(format!("field \"ipc\" {ipc:?} is not an IPC symbol: {e}")))?;
                Ok(r)
            });
            match res {
                Ok(r) => {
                    self.add_zh(r);
                    true
                }
                Err(e) => {
                    failure = Some(e);
                    false
                }
            }
        });
        failure.map_or(Ok(()), |e| Err(Error::Read(e)))
    }

    fn add_zh(&mut self, r: coretech::CoretechIpc) {
        self.stats.coretech_records += 1;
        self.stats.coretech_rekeyed += r.rekeyed as u64;
        let title = (!r.title.is_empty()).then_some(r.title);
        let e = self.entries.entry(r.symbol.clone()).or_insert_with(|| derived_entry(&r.symbol));
        match &e.title_zh {
            None => {
                e.title_zh = title;
                e.zh_rekeyed = r.rekeyed;
            }
            Some(_) => {
                self.stats.coretech_duplicates += 1;
                if e.zh_rekeyed && !r.rekeyed && title.is_some() {
                    e.title_zh = title;
                    e.zh_rekeyed = false;
                }
            }
        }
    }

    fn load_wipo(&mut self, name: &str, reader: Box<dyn BufRead + '_>) -> Result<()> {
        let mut r = Reader::from_reader(reader);
        r.config_mut().check_end_names = true;
        let mut buf = Vec::new();
        let mut frames: Vec<Frame> = Vec::new();
        let mut tags: Vec<Tag> = Vec::new();
        let err = |off: u64, msg: String| Error::Read(ReadError::new(Position::new(name, Some(off), None), ReadErrorKind::IpcScheme, msg));
        loop {
            let pos = r.buffer_position();
            let ev = r.read_event_into(&mut buf).map_err(|e| err(r.error_position(), format!("malformed XML: {e}")))?;
            match ev {
                Event::Start(e) => {
                    let tag = Tag::of(&e);
                    let collecting = frames.last().is_some_and(|f| f.collecting);
                    match tag {
                        Tag::IpcEntry => {
                            let f = Frame::open(&e, &frames).map_err(|m| err(pos, m))?;
                            frames.push(f);
                        }
                        Tag::Title if tags.ends_with(&[Tag::IpcEntry, Tag::TextBody]) => {
                            if let Some(f) = frames.last_mut() {
                                f.collecting = f.indexed;
                            }
                        }
                        Tag::TitlePart if collecting => frames.last_mut().unwrap().parts.push(Part::default()),
                        Tag::EntryReference if collecting => {
                            if let Some(p) = frames.last_mut().unwrap().parts.last_mut() {
                                p.refs.push(String::new());
                            }
                        }
                        _ => {}
                    }
                    tags.push(tag);
                }
                Event::Empty(e) => {
                    if let Some(f) = frames.last_mut().filter(|f| f.collecting) {
                        let local = e.local_name();
                        let s: String = match local.as_ref() {
                            "sref" => attr(&e, "ref").map(|s| display_symbol(&s)).unwrap_or_default(),
                            "mref" => {
                                let a = attr(&e, "ref").map(|s| display_symbol(&s)).unwrap_or_default();
                                let b = attr(&e, "endRef").map(|s| display_symbol(&s)).unwrap_or_default();
                                format!("{a}-{b}")
                            }
                            "llinkt" => ">".into(),
                            "rlinkt" => "<".into(),
                            "tbond" => "≡".into(),
                            "dbond" => "=".into(),
                            "emdash" => "—".into(),
                            "endash" => "–".into(),
                            "nbsp" => " ".into(),
                            _ => String::new(),
                        };
                        f.push_text(&tags, &s);
                    }
                }
                Event::Text(t) => {
                    if let Some(f) = frames.last_mut().filter(|f| f.collecting) {
                        f.push_text(&tags, &t.xml10_content());
                    }
                }
                Event::CData(t) => {
                    if let Some(f) = frames.last_mut().filter(|f| f.collecting) {
                        f.push_text(&tags, &t.xml10_content());
                    }
                }
                Event::GeneralRef(g) => {
                    let s: String = match g.resolve_char_ref() {
                        Ok(Some(c)) => c.to_string(),
                        Ok(None) => {
                            let n = g.xml10_content();
                            resolve_entity(&n).ok_or_else(|| err(pos, format!("undefined entity &{n};")))?.to_string()
                        }
                        Err(e) => return Err(err(pos, format!("bad character reference: {e}"))),
                    };
                    if let Some(f) = frames.last_mut().filter(|f| f.collecting) {
                        f.push_text(&tags, &s);
                    }
                }
                Event::End(_) => match tags.pop() {
                    Some(Tag::Title) => {
                        if let Some(f) = frames.last_mut() {
                            f.collecting = false;
                        }
                    }
                    Some(Tag::IpcEntry) => {
                        let f = frames.pop().expect("an open ipcEntry");
                        self.close_wipo(f);
                    }
                    _ => {}
                },
                Event::Eof => break,
                Event::Decl(_) | Event::PI(_) | Event::Comment(_) | Event::DocType(_) => {}
            }
            buf.clear();
        }
        if !tags.is_empty() {
            return Err(err(r.buffer_position(), format!("input ends inside {} open elements (truncated file?)", tags.len())));
        }
        Ok(())
    }

    fn close_wipo(&mut self, f: Frame) {
        self.stats.wipo_entries += 1;
        let Some((symbol, kind, level)) = f.indexed_as else {
            *self.stats.wipo_not_indexed.entry(f.kind_attr).or_default() += 1;
            return;
        };
        self.stats.wipo_indexed += 1;
        let title_en = join_parts(&f.parts, false);
        let title_en_full = join_parts(&f.parts, true);
        let e = self.entries.entry(symbol.clone()).or_insert_with(|| derived_entry(&symbol));
        if e.from_wipo {
            self.stats.wipo_duplicates += 1;
            return;
        }
        e.from_wipo = true;
        e.kind = kind;
        e.level = level;
        e.parent = f.parent;
        e.title_en = title_en;
        e.title_en_full = title_en_full;
    }
}

/// An entry known only from its symbol (CoreTech corpus): kind, level and parent derived.
fn derived_entry(symbol: &str) -> IpcEntry {
    let parsed = IpcSymbol::parse(symbol).ok();
    let level = parsed.as_ref().map_or(0, |s| s.level());
    let kind = match level {
        1 => EntryKind::Section,
        2 => EntryKind::Class,
        3 => EntryKind::Subclass,
        4 => EntryKind::MainGroup,
        _ => EntryKind::Subgroup,
    };
    IpcEntry {
        symbol: symbol.to_string(),
        kind,
        level,
        parent: parsed.and_then(|s| s.parent()).map(|p| p.to_string()),
        title_en: None,
        title_en_full: None,
        title_zh: None,
        from_wipo: false,
        zh_rekeyed: false,
    }
}

/// Elements that matter for titles; everything else is `Other`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tag {
    IpcEntry,
    TextBody,
    Title,
    TitlePart,
    Text,
    EntryReference,
    Other,
}

impl Tag {
    fn of(e: &BytesStart<'_>) -> Tag {
        match e.local_name().as_ref() {
            "ipcEntry" => Tag::IpcEntry,
            "textBody" => Tag::TextBody,
            "title" => Tag::Title,
            "titlePart" => Tag::TitlePart,
            "text" => Tag::Text,
            "entryReference" => Tag::EntryReference,
            _ => Tag::Other,
        }
    }
}

#[derive(Debug, Default)]
struct Part {
    text: String,
    refs: Vec<String>,
}

/// An open `ipcEntry`.
struct Frame {
    kind_attr: String,
    /// Symbol, kind and level when this entry is indexed.
    indexed_as: Option<(String, EntryKind, u8)>,
    indexed: bool,
    parent: Option<String>,
    collecting: bool,
    parts: Vec<Part>,
}

impl Frame {
    fn open(e: &BytesStart<'_>, open: &[Frame]) -> std::result::Result<Frame, String> {
        let kind_attr = attr(e, "kind").unwrap_or_default();
        let sym = attr(e, "symbol").unwrap_or_default();
        let kl = match kind_attr.as_str() {
            "s" => Some((EntryKind::Section, 1)),
            "c" => Some((EntryKind::Class, 2)),
            "u" => Some((EntryKind::Subclass, 3)),
            "m" => Some((EntryKind::MainGroup, 4)),
            k if k.len() == 1 && (b'1'..=b'9').contains(&k.as_bytes()[0]) => Some((EntryKind::Subgroup, 4 + (k.as_bytes()[0] - b'0'))),
            _ => None,
        };
        let indexed_as = match kl {
            Some((kind, level)) => {
                let s = IpcSymbol::parse(&sym)
                    .map_err(|err| format!("ipcEntry kind={kind_attr:?} symbol={sym:?}: not an IPC symbol: {err}"))?;
                Some((s.to_string(), kind, level))
            }
            None => None,
        };
        let parent = open.iter().rev().find_map(|f| f.indexed_as.as_ref().map(|(s, _, _)| s.clone()));
        Ok(Frame { kind_attr, indexed: indexed_as.is_some(), indexed_as, parent, collecting: false, parts: Vec::new() })
    }

    /// Appends text to the part text or to the open reference, by where the text is.
    fn push_text(&mut self, tags: &[Tag], s: &str) {
        let in_ref = tags.iter().rev().take_while(|t| **t != Tag::TitlePart).any(|t| *t == Tag::EntryReference);
        let in_text = tags.iter().rev().take_while(|t| **t != Tag::TitlePart).any(|t| *t == Tag::Text);
        let Some(part) = self.parts.last_mut() else { return };
        if in_ref {
            if let Some(r) = part.refs.last_mut() {
                r.push_str(s);
            }
        } else if in_text {
            part.text.push_str(s);
        }
    }
}

fn attr(e: &BytesStart<'_>, name: &str) -> Option<String> {
    let a = e.try_get_attribute(name).ok()??;
    a.normalized_value_with(quick_xml::XmlVersion::Implicit1_0, 1, resolve_entity).ok().map(|v| v.into_owned())
}

/// A referenced symbol in its normalized spelling (the raw reference if it does not parse).
fn display_symbol(s: &str) -> String {
    IpcSymbol::parse(s).map(|p| p.to_string()).unwrap_or_else(|_| s.to_string())
}

fn collapse(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Title parts joined by `; `, with references in parentheses when `refs`.
fn join_parts(parts: &[Part], refs: bool) -> Option<String> {
    let shown: Vec<String> = parts
        .iter()
        .filter_map(|p| {
            let text = collapse(&p.text);
            let rs: Vec<String> = if refs { p.refs.iter().map(|r| collapse(r)).filter(|r| !r.is_empty()).collect() } else { Vec::new() };
            match (text.is_empty(), rs.is_empty()) {
                (true, true) => None,
                (false, true) => Some(text),
                (true, false) => Some(format!("({})", rs.join("; "))),
                (false, false) => Some(format!("{text} ({})", rs.join("; "))),
            }
        })
        .collect();
    (!shown.is_empty()).then(|| shown.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> PathBuf {
        PathBuf::from(format!("{}/fixtures/data/ipc/{name}", env!("CARGO_MANIFEST_DIR")))
    }

    const WIPO: &str = "wipo_ipcr_scheme_20100101_excerpt.xml";
    const EXPAND: &str = "coretech_ipc_description_expand.hier+G06+H04.jsonl";

    fn load(files: &[&str]) -> IpcScheme {
        IpcScheme::load(&IpcConfig { scheme: files.iter().map(|f| fixture(f)).collect() }).unwrap()
    }

    #[test]
    fn wipo_excerpt_counts() {
        let s = load(&[WIPO]);
        let st = s.stats();
        assert_eq!(st.wipo_entries, 1489);
        // s 2 + c 14 + u 52 + m 559 + subgroups 519/164/41/11 (1–4 dots) = 1,362 symbols.
        assert_eq!(st.wipo_indexed, 1362);
        let not: Vec<(&str, u64)> = st.wipo_not_indexed.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        assert_eq!(not, [("d", 2), ("g", 45), ("i", 30), ("n", 47), ("t", 3)]);
        assert_eq!(st.wipo_duplicates, 0);
        assert_eq!(s.len(), 1362);
        assert!(s.entries().all(|e| e.title_en.is_some()), "every indexed WIPO entry has a title");
    }

    #[test]
    fn wipo_titles_and_hierarchy() {
        let s = load(&[WIPO]);
        assert_eq!(s.title("A", "en"), Some("SECTION A - HUMAN NECESSITIES"));
        assert_eq!(s.title("A01", "en"), Some("AGRICULTURE; FORESTRY; ANIMAL HUSBANDRY; HUNTING; TRAPPING; FISHING"));
        assert_eq!(s.title("A01B", "en"), Some("SOIL WORKING IN AGRICULTURE OR FORESTRY; PARTS, DETAILS, OR ACCESSORIES OF AGRICULTURAL MACHINES OR IMPLEMENTS, IN GENERAL"));
        assert_eq!(
            s.get("A01B").unwrap().title_en_full.as_deref(),
            Some(
                "SOIL WORKING IN AGRICULTURE OR FORESTRY; PARTS, DETAILS, OR ACCESSORIES OF AGRICULTURAL MACHINES OR IMPLEMENTS, IN GENERAL \
                 (making or covering furrows or holes for sowing, planting or manuring A01C 5/00; machines for harvesting root crops A01D; \
                 mowers convertible to soil working apparatus or capable of soil working A01D 42/00; mowers combined with soil working implements A01D 43/00; \
                 soil working for engineering purposes E01, E02, E21)"
            )
        );
        // Any spelling of the symbol.
        assert_eq!(s.title("A01B0001000000", "en"), Some("Hand tools"));
        assert_eq!(s.title("A01B1/00", "en"), Some("Hand tools"));
        assert_eq!(s.get("A01B 1/00").unwrap().title_en_full.as_deref(), Some("Hand tools (edge trimmers for lawns A01G 3/00)"));
        assert_eq!(s.title("A01F 11/00", "en"), Some("Threshing apparatus specially adapted for maize; Threshing apparatus specially adapted for particular crops other than cereals"));
        // Glyph elements and range references.
        let urea =
            s.entries().find(|e| e.title_en.as_deref().is_some_and(|t| t.starts_with("Ureas or thioureas containing the groups"))).unwrap();
        assert_eq!(urea.title_en.as_deref(), Some("Ureas or thioureas containing the groups >N - CO - N or >N - CS - N"));
        let cyan = s.entries().find(|e| e.title_en.as_deref() == Some("containing - S - C≡N groups")).unwrap();
        assert_eq!(cyan.title_en_full.as_deref(), Some("containing - S - C≡N groups (A01N 43/00-A01N 47/28 take precedence)"));
        // Parent chain follows the dots: A01B 63/10 (two dots) → 63/02 (one dot) → 63/00.
        let chain: Vec<(&str, u8, EntryKind)> = s.ancestry("A01B 63/10").iter().map(|e| (e.symbol.as_str(), e.level, e.kind)).collect();
        assert_eq!(
            chain,
            [
                ("A01B 63/10", 6, EntryKind::Subgroup),
                ("A01B 63/02", 5, EntryKind::Subgroup),
                ("A01B 63/00", 4, EntryKind::MainGroup),
                ("A01B", 3, EntryKind::Subclass),
                ("A01", 2, EntryKind::Class),
                ("A", 1, EntryKind::Section),
            ]
        );
        // Guidance headings, notes and deleted entries are not symbols of their own.
        assert!(!s.contains("A01F 9/00"), "deleted entry");
        assert!(
            s.contains("A01B 3/00") && s.title("A01B 3/00", "en") != Some("Ploughs"),
            "the guidance heading does not replace the group"
        );
        assert_eq!(s.title("A01B 1/00", "zh"), None);
        assert_eq!(s.title("A01B 1/00", "fr"), None);
    }

    #[test]
    fn coretech_titles() {
        let s = load(&[EXPAND]);
        let st = s.stats();
        assert_eq!(st.coretech_records, 2856);
        assert_eq!(st.coretech_rekeyed, 184);
        // 2,856 records name 2,849 symbols; the 7 old G06Q groups give the repeats.
        assert_eq!(st.coretech_duplicates, 7);
        assert_eq!(s.len(), 2849);
        assert_eq!(st.coretech_only, 2849);
        assert_eq!(s.title("A", "zh"), Some("人类生活必需"));
        assert_eq!(s.title("G06F", "zh"), Some("电数字数据处理"));
        assert_eq!(s.title("G06F3/01", "zh"), Some("用于用户和计算机之间交互的输入装置或输入和输出组合装置（G06F 3/16优先）〔8〕"));
        // Re-keyed records: the real symbol gets the title; the genuine record keeps its own.
        assert_eq!(s.title("H04B 10/02", "zh"), Some("零部件〔5〕"));
        assert!(s.title("H04B 1/02", "zh").unwrap().starts_with("发射机"));
        // Own-key record preferred over a re-keyed one for the same symbol.
        let g = s.title("G06Q 10/00", "zh").unwrap();
        assert!(!g.starts_with("G06Q"), "{g}");
        let e = s.get("G06F 3/01").unwrap();
        assert_eq!((e.kind, e.level, e.parent.as_deref()), (EntryKind::Subgroup, 5, Some("G06F 3/00")));
        assert_eq!(s.title("G06F 3/01", "en"), None);
    }

    #[test]
    fn both_sources_merge_in_any_order() {
        let a = load(&[WIPO, EXPAND, "coretech_ipcDes_demo.jsonl"]);
        let b = load(&["coretech_ipcDes_demo.jsonl", EXPAND, WIPO]);
        let ea: Vec<&IpcEntry> = a.entries().collect();
        let eb: Vec<&IpcEntry> = b.entries().collect();
        assert_eq!(ea, eb);
        assert_eq!(a.title("A01B", "zh"), Some("农业或林业的整地；一般农业机械或农具的部件、零件或附件"));
        assert!(a.title("A01B", "en").unwrap().starts_with("SOIL WORKING"));
        // The WIPO structure wins: A01B 1/02 is a one-dot subgroup under A01B 1/00.
        let e = a.get("A01B 1/02").unwrap();
        assert_eq!((e.level, e.parent.as_deref()), (5, Some("A01B 1/00")));
        assert!(a.stats().coretech_only > 0 && a.stats().coretech_only < a.len() as u64);
    }

    #[test]
    fn bad_scheme_files_are_errors_with_positions() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.txt");
        std::fs::write(&p, "hello").unwrap();
        let e = IpcScheme::load(&IpcConfig { scheme: vec![p.clone()] }).unwrap_err().to_string();
        assert!(e.contains("x.txt") && e.contains("not an IPC scheme file"), "{e}");
        std::fs::write(&p, "<?xml version=\"1.0\"?>\n<revisionPeriods><ipcEntry kind=\"s\" symbol=\"A\"><textBody><title></ipcEntry>")
            .unwrap();
        let e = IpcScheme::load(&IpcConfig { scheme: vec![p.clone()] }).unwrap_err().to_string();
        assert!(e.contains("x.txt") && e.contains("malformed XML"), "{e}");
        std::fs::write(&p, "<revisionPeriods><ipcEntry kind=\"m\" symbol=\"Q99\"></ipcEntry></revisionPeriods>").unwrap();
        let e = IpcScheme::load(&IpcConfig { scheme: vec![p.clone()] }).unwrap_err().to_string();
        assert!(e.contains("not an IPC symbol"), "{e}");
        std::fs::write(&p, "<revisionPeriods><ipcEntry kind=\"s\" symbol=\"A\">").unwrap();
        let e = IpcScheme::load(&IpcConfig { scheme: vec![p.clone()] }).unwrap_err().to_string();
        assert!(e.contains("truncated"), "{e}");
        std::fs::write(&p, "{\"ipc\": \"A01\", \"ori_des\": \"x\"}\n{\"ipc\": \"A01B\"}\n").unwrap();
        let e = IpcScheme::load(&IpcConfig { scheme: vec![p.clone()] }).unwrap_err().to_string();
        assert!(e.contains("x.txt:2") && e.contains("missing string field \"ori_des\""), "{e}");
    }
}
