//! USPTO ICE XML v4.x grants and applications (`us-patent-grant`, `us-patent-application`),
//! including weekly bulk files of concatenated documents (non-patent documents such as
//! `sequence-cwu` are skipped and counted).
//!
//! This module also holds what the three USPTO XML readers share (ICE, pap v1.5 in
//! [`super::uspto_pap`], PATDOC v2.5 in [`super::uspto_patdoc`]): every XML record is parsed
//! once and dispatched on its root element, so a bulk file that mixes generations still reads,
//! and a root that is not a patent becomes `Record::Skip { reason: "not-a-patent:<root>" }`.
//!
//! # Numbers
//! `number` is `US` + the publication's doc-number without leading zeros (a letter prefix is
//! kept: `D0680087` → `D680087`, `RE043210` → `RE43210`) + the kind code: `US8930553B2`,
//! `USD680087S1`, `US20130014308A1`. A document without a doc-number is a `shape` error.
//!
//! # Text
//! - Title: `invention-title`, whitespace collapsed.
//! - Abstract and description: one line per heading, paragraph (`p`), list item and table row;
//!   inline markup (`b`, `i`, `sub`, `sup`, `figref`, `claim-ref`, …) is flattened to its text,
//!   so figure references stay as written (`FIG. 1 is …`) and sub/superscripts join their base
//!   (`V<sub>out</sub>` → `Vout`, also footnote marks: `coli<sup>a</sup>` → `colia`). `br`
//!   ends a line. Whitespace runs collapse to one space; words the source glued stay glued.
//! - Tables (CALS `table`): one line per row, the row's non-empty cells joined by ` | `.
//! - Maths (MathML `math`): linearized inline (`a/b`, `x_i`, `x^2`, `√(x)`; invisible operators
//!   dropped). Formulas, chemistry and figures that exist only as images are dropped.
//! - Claims: one string per `claim`, nested `claim-text` flattened and joined with spaces; the
//!   number is the one the text carries (`1. A system …`), none is added.
//!
//! # Meta
//! `format`, `kind`, `dtd_version`, `source_file`, `application_number`, `application_date`,
//! `application_type`, `cpc` (normalized like IPC), `us_class`, `locarno` (design patents, which
//! have no IPC), `claim_statement`, and `ipc_invalid` for classification codes that do not
//! parse (kept there as `raw: reason`, never a panic).

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use crate::doc::{Meta, Patent, Record};
use crate::error::ReadError;
use crate::ipc::symbol::normalize;

use super::text::{decode, Encoding};
use super::xml::{collapse_ws, El, XmlDoc};
use super::{sniffing, Format, Framing, ParseContext, RawRecord};

/// Settings of the USPTO readers.
#[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct UsptoConfig {}

/// USPTO ICE XML v4.x.
pub struct UsptoIce;

impl Format for UsptoIce {
    fn name(&self) -> &'static str {
        "uspto-ice"
    }
    fn source(&self) -> &'static str {
        "uspto"
    }
    /// The root element (from the DOCTYPE or the first tag) is `us-patent-grant`,
    /// `us-patent-application`, or `sequence-cwu` (a weekly grant file may begin with one).
    fn sniff(&self, head: &[u8]) -> bool {
        matches!(xml_root_name(head), Some(b"us-patent-grant" | b"us-patent-application" | b"sequence-cwu"))
    }
    fn framing(&self) -> Framing {
        Framing::XmlDocuments
    }
    fn parse(&self, raw: &RawRecord, cx: &ParseContext<'_>) -> Result<Record, ReadError> {
        parse_xml_record(raw, cx)
    }
}

// ---------------------------------------------------------------------------------------------
// Shared by the USPTO XML readers.

/// The name of the root element of the XML document whose first bytes are `head`: the DOCTYPE
/// name if there is one, else the first element's name. `None` when `head` is not XML.
pub(super) fn xml_root_name(head: &[u8]) -> Option<&[u8]> {
    let mut h = sniffing::trimmed(head);
    loop {
        if h.starts_with(b"<?") {
            h = skip_past(h, b"?>")?;
        } else if h.starts_with(b"<!--") {
            h = skip_past(h, b"-->")?;
        } else if let Some(rest) = h.strip_prefix(b"<!DOCTYPE") {
            let rest = trim_ws(rest);
            let n = rest.iter().position(|&c| c.is_ascii_whitespace() || c == b'[' || c == b'>').unwrap_or(rest.len());
            return (n > 0).then(|| &rest[..n]);
        } else if let Some(rest) = h.strip_prefix(b"<") {
            let n = rest.iter().position(|&c| c.is_ascii_whitespace() || c == b'>' || c == b'/').unwrap_or(rest.len());
            let name = &rest[..n];
            return (n > 0 && name[0].is_ascii_alphabetic()).then_some(name);
        } else {
            return None;
        }
        h = trim_ws(h);
    }
}

fn skip_past<'a>(h: &'a [u8], end: &[u8]) -> Option<&'a [u8]> {
    memchr::memmem::find(h, end).map(|i| &h[i + end.len()..])
}

fn trim_ws(b: &[u8]) -> &[u8] {
    let n = b.iter().take_while(|c| c.is_ascii_whitespace()).count();
    &b[n..]
}

/// Decodes a USPTO record. USPTO data is UTF-8 (or ASCII): under `encoding = "auto"` the
/// GB18030 fallback meant for Chinese corpora is not tried, so non-UTF-8 bytes are an
/// `encoding` error at their offset instead of turning into CJK characters. (An explicit
/// `gb18030` is honoured; XML error offsets are then positions in the decoded text.)
pub(super) fn decode_utf8<'a>(raw: &'a RawRecord, cx: &ParseContext<'_>) -> Result<Cow<'a, str>, ReadError> {
    let enc = match cx.cfg.encoding {
        Encoding::Auto => Encoding::Utf8,
        e => e,
    };
    decode(raw, &raw.bytes, 0, enc)
}

/// Parses one USPTO XML record and dispatches on its root element.
pub(super) fn parse_xml_record(raw: &RawRecord, cx: &ParseContext<'_>) -> Result<Record, ReadError> {
    let text = decode_utf8(raw, cx)?;
    let doc = XmlDoc::parse(&text).map_err(|e| raw.error_at(e.offset, "xml", e.message))?;
    let root = doc.root();
    match root.name() {
        "us-patent-grant" | "us-patent-application" => ice_patent(raw, root),
        "patent-application-publication" => super::uspto_pap::pap_patent(raw, root, &text),
        "PATDOC" => super::uspto_patdoc::patdoc_patent(raw, root, &text),
        other => {
            let id = root
                .path("publication-reference/document-id")
                .and_then(|d| us_number(&child_text(d, "country"), &child_text(d, "doc-number"), &child_text(d, "kind")))
                .unwrap_or_else(|| root.attr("id").unwrap_or_default().to_string());
            Ok(Record::Skip { reason: format!("not-a-patent:{other}"), id })
        }
    }
}

/// The publication number: `country` (default `US`) + `doc` without separators and leading
/// zeros (a letter prefix such as `D`, `RE`, `PP` kept) + `kind`. `None` when `doc` holds no
/// digit.
pub(super) fn us_number(country: &str, doc: &str, kind: &str) -> Option<String> {
    let doc: String = doc.chars().filter(|c| c.is_ascii_alphanumeric()).collect();
    let split = doc.find(|c: char| c.is_ascii_digit())?;
    let (prefix, digits) = doc.split_at(split);
    let digits = digits.trim_start_matches('0');
    let digits = if digits.is_empty() { "0" } else { digits };
    let country = if country.trim().is_empty() { "US" } else { country.trim() };
    Some(format!("{country}{}{digits}{}", prefix.to_ascii_uppercase(), kind.trim()))
}

/// `YYYYMMDD` → `YYYY-MM-DD`; `None` for anything else (the raw value then goes to meta).
pub(super) fn iso_date(s: &str) -> Option<String> {
    let s = s.trim();
    let ok = s.len() == 8
        && s.bytes().all(|c| c.is_ascii_digit())
        && (1..=12).contains(&s[4..6].parse::<u8>().ok()?)
        && (1..=31).contains(&s[6..8].parse::<u8>().ok()?);
    ok.then(|| format!("{}-{}-{}", &s[..4], &s[4..6], &s[6..]))
}

/// Sets `p.date` from a `YYYYMMDD` value, keeping an unparsable one as `meta.date_raw`.
pub(super) fn set_date(p: &mut Patent, raw: &str) {
    match iso_date(raw) {
        Some(d) => p.date = d,
        None => put(&mut p.meta, "date_raw", raw),
    }
}

/// Normalizes IPC codes into `p.ipc` (document order, no duplicates); codes that do not parse
/// are listed in `meta.ipc_invalid` as `raw: reason`.
pub(super) fn set_ipc<'a>(p: &mut Patent, raw: impl IntoIterator<Item = &'a str>) {
    let mut invalid: Vec<String> = Vec::new();
    for r in raw {
        if r.trim().is_empty() {
            continue;
        }
        match normalize(r) {
            Ok(s) => {
                if !p.ipc.contains(&s) {
                    p.ipc.push(s);
                }
            }
            Err(e) => invalid.push(format!("{}: {e}", r.trim())),
        }
    }
    put_list(&mut p.meta, "ipc_invalid", invalid);
}

/// A new patent of source `uspto`, language `en`, read by reader `format`.
pub(super) fn new_patent(format: &str) -> Patent {
    let mut p = Patent { source: "uspto".into(), lang: "en".into(), ..Default::default() };
    put(&mut p.meta, "format", format);
    p
}

/// Inserts a string into `meta` unless it is empty.
pub(super) fn put(meta: &mut Meta, key: &str, value: &str) {
    let v = value.trim();
    if !v.is_empty() {
        meta.insert(key.into(), v.into());
    }
}

/// Inserts a list into `meta` unless it is empty.
pub(super) fn put_list(meta: &mut Meta, key: &str, values: Vec<String>) {
    if !values.is_empty() {
        meta.insert(key.into(), values.into());
    }
}

/// The collapsed text of the first child `name` of `el`, or "".
pub(super) fn child_text(el: El<'_>, name: &str) -> String {
    el.child(name).map(|c| c.text()).unwrap_or_default()
}

/// The collapsed text at `path` below `el`, or "".
pub(super) fn path_text(el: El<'_>, path: &str) -> String {
    el.path(path).map(|c| c.text()).unwrap_or_default()
}

/// The system identifier of the document's DOCTYPE (`pap-v15-2001-01-31.dtd`), if any.
pub(super) fn doctype_system(text: &str) -> Option<&str> {
    let head = &text[..text.len().min(4096)];
    let at = head.find("<!DOCTYPE")?;
    let rest = &head[at..];
    let sys = rest.find("SYSTEM")?;
    let rest = rest[sys + 6..].trim_start();
    let quote = rest.chars().next().filter(|&c| c == '"' || c == '\'')?;
    let end = rest[1..].find(quote)?;
    Some(&rest[1..1 + end])
}

/// How an element's content is laid out in the plain text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Layout {
    /// Flows into the current line (`b`, `sub`, `figref`, and any element not listed).
    Inline,
    /// Starts and ends a line (`p`, `heading`, `li`).
    Block,
    /// Ends the current line (`br`).
    Break,
    /// Dropped with its content (figures, images, paragraph numbers).
    Skip,
    /// A CALS table: one line per row, the row's non-empty cells joined by ` | `.
    Table,
    /// MathML, linearized inline.
    Math,
}

/// A format's layout rule: `(element name, parent name) → layout`.
pub(super) type Classify = fn(name: &str, parent: &str) -> Layout;

/// Collects the text lines of a subtree.
pub(super) struct TextLines {
    classify: Classify,
    lines: Vec<String>,
    cur: String,
}

impl TextLines {
    /// An empty collector using `classify`.
    pub(super) fn new(classify: Classify) -> Self {
        Self { classify, lines: Vec::new(), cur: String::new() }
    }

    /// The lines of `el`'s content (`el` itself is a block).
    pub(super) fn of(el: El<'_>, classify: Classify) -> Vec<String> {
        let mut t = Self::new(classify);
        t.walk(el);
        t.finish()
    }

    fn flush(&mut self) {
        if !self.cur.is_empty() {
            let s = collapse_ws(&self.cur);
            self.cur.clear();
            if !s.is_empty() {
                self.lines.push(s);
            }
        }
    }

    /// Adds `el`'s content, ending the current line before and after it.
    pub(super) fn add_block(&mut self, el: El<'_>) {
        self.flush();
        self.walk(el);
        self.flush();
    }

    fn walk(&mut self, el: El<'_>) {
        for n in el.nodes() {
            let c = match n {
                Err(text) => {
                    self.cur.push_str(text);
                    continue;
                }
                Ok(c) => c,
            };
            match (self.classify)(c.name(), el.name()) {
                Layout::Inline => self.walk(c),
                Layout::Block => self.add_block(c),
                Layout::Break => self.flush(),
                Layout::Skip => {}
                Layout::Table => {
                    self.flush();
                    self.table(c);
                }
                Layout::Math => {
                    self.cur.push(' ');
                    self.cur.push_str(&mathml(c));
                    self.cur.push(' ');
                }
            }
        }
    }

    fn table(&mut self, el: El<'_>) {
        for c in el.children() {
            let name = c.name();
            if name.eq_ignore_ascii_case("row") {
                let cells: Vec<String> =
                    c.children().map(|cell| flow(&TextLines::of(cell, self.classify))).filter(|s| !s.is_empty()).collect();
                if !cells.is_empty() {
                    self.lines.push(cells.join(" | "));
                }
            } else if name.eq_ignore_ascii_case("title") {
                self.add_block(c);
            } else if (self.classify)(name, el.name()) != Layout::Skip {
                self.table(c);
            }
        }
    }

    /// The lines collected.
    pub(super) fn finish(mut self) -> Vec<String> {
        self.flush();
        self.lines
    }
}

/// Joins lines into running text: a space between them, none before closing punctuation.
pub(super) fn flow(lines: &[String]) -> String {
    let mut s = String::new();
    for l in lines {
        if !s.is_empty() && !l.starts_with([',', '.', ';', ':', ')', ']']) {
            s.push(' ');
        }
        s.push_str(l);
    }
    s
}

/// Linear text of a MathML element: `a/b`, `x_i`, `x^2`, `√(x)`, rows of tables joined by
/// `; `. Invisible operators (U+2061–U+2064) are dropped.
pub(super) fn mathml(el: El<'_>) -> String {
    let mut s = collapse_ws(&math_node(el));
    for (from, to) in [("( ", "("), ("[ ", "["), (" )", ")"), (" ]", "]"), (" ,", ","), (" ;", ";")] {
        s = s.replace(from, to);
    }
    s
}

fn math_node(el: El<'_>) -> String {
    let full = el.name();
    let local = full.rsplit(':').next().unwrap_or(full).to_ascii_lowercase();
    let parts = || el.children().map(math_node).collect::<Vec<String>>();
    let nth = |v: &[String], i: usize| v.get(i).cloned().unwrap_or_default();
    match local.as_str() {
        "mi" | "mn" | "mo" | "mtext" | "ms" => {
            collapse_ws(&el.raw_text().chars().filter(|c| !('\u{2061}'..='\u{2064}').contains(c)).collect::<String>())
        }
        "mspace" | "none" | "mprescripts" | "annotation" | "annotation-xml" | "mphantom" => String::new(),
        "mfrac" => {
            let v = parts();
            format!("{}/{}", group(&nth(&v, 0)), group(&nth(&v, 1)))
        }
        "msub" | "munder" => {
            let v = parts();
            format!("{}_{}", nth(&v, 0), group(&nth(&v, 1)))
        }
        "msup" | "mover" => {
            let v = parts();
            format!("{}^{}", nth(&v, 0), group(&nth(&v, 1)))
        }
        "msubsup" | "munderover" => {
            let v = parts();
            format!("{}_{}^{}", nth(&v, 0), group(&nth(&v, 1)), group(&nth(&v, 2)))
        }
        "msqrt" => format!("√({})", join_nonempty(&parts(), " ")),
        "mroot" => {
            let v = parts();
            format!("√[{}]({})", nth(&v, 1), nth(&v, 0))
        }
        "mfenced" => {
            let open = el.attr("open").unwrap_or("(");
            let close = el.attr("close").unwrap_or(")");
            let sep =
                el.attr("separators").map(|s| s.trim().chars().next().map(String::from).unwrap_or_default()).unwrap_or_else(|| ",".into());
            format!("{open}{}{close}", join_nonempty(&parts(), &format!("{sep} ")))
        }
        "mtable" => {
            let rows: Vec<String> = el.children().map(|r| join_nonempty(&r.children().map(math_node).collect::<Vec<_>>(), " ")).collect();
            join_nonempty(&rows, "; ")
        }
        _ => join_nonempty(&parts(), " "),
    }
}

fn join_nonempty(v: &[String], sep: &str) -> String {
    v.iter().filter(|s| !s.trim().is_empty()).map(|s| s.trim()).collect::<Vec<_>>().join(sep)
}

/// Parenthesizes a multi-token operand.
fn group(s: &str) -> String {
    let s = s.trim();
    if s.contains(' ') {
        format!("({s})")
    } else {
        s.to_string()
    }
}

// ---------------------------------------------------------------------------------------------
// ICE v4.x.

fn ice_layout(name: &str, parent: &str) -> Layout {
    match name {
        "p" | "heading" | "li" | "ul" | "ol" | "dl" | "dt" | "dd" | "description-of-drawings" => Layout::Block,
        "claim-text" if parent == "claim" || parent == "claim-text" => Layout::Block,
        "br" => Layout::Break,
        "table" => Layout::Table,
        "math" => Layout::Math,
        "figure" | "img" | "chemistry" | "table-external-doc" | "sequence-list" | "us-chemistry" | "us-math" | "us-sequence-list-doc" => {
            Layout::Skip
        }
        _ => Layout::Inline,
    }
}

fn ice_patent(raw: &RawRecord, root: El<'_>) -> Result<Record, ReadError> {
    let grant = root.name() == "us-patent-grant";
    let biblio_name = if grant { "us-bibliographic-data-grant" } else { "us-bibliographic-data-application" };
    let biblio = root.child(biblio_name).ok_or_else(|| raw.error("shape", format!("<{}> has no <{biblio_name}>", root.name())))?;
    let pubid = biblio.path("publication-reference/document-id");
    let (country, doc, kind) =
        pubid.map(|d| (child_text(d, "country"), child_text(d, "doc-number"), child_text(d, "kind"))).unwrap_or_default();
    let number = us_number(&country, &doc, &kind).ok_or_else(|| {
        raw.error("shape", format!("<{}> has no publication number (publication-reference/document-id/doc-number)", root.name()))
    })?;

    let mut p = new_patent("uspto-ice");
    p.number = number;
    p.lang = root.attr("lang").map(str::to_ascii_lowercase).filter(|l| !l.is_empty()).unwrap_or_else(|| "en".into());
    let date = pubid.map(|d| child_text(d, "date")).filter(|d| !d.is_empty()).or_else(|| root.attr("date-publ").map(str::to_string));
    set_date(&mut p, &date.unwrap_or_default());
    p.title = biblio.child("invention-title").map(|t| t.text()).unwrap_or_default();

    let mut ipc: Vec<String> = Vec::new();
    for c in biblio.path("classifications-ipcr").iter().flat_map(|c| c.children_named("classification-ipcr")) {
        ipc.push(ipcr_symbol(c));
    }
    // ICE v4.0/v4.1 (before the 2006 IPC reform): `classification-ipc` with text symbols.
    if let Some(c) = biblio.child("classification-ipc") {
        ipc.extend(
            c.children().filter(|e| e.name() == "main-classification" || e.name() == "further-classification").map(|e| e.raw_text()),
        );
    }
    set_ipc(&mut p, ipc.iter().map(String::as_str));

    let m = &mut p.meta;
    put(m, "kind", &kind);
    put(m, "dtd_version", root.attr("dtd-version").unwrap_or_default());
    put(m, "source_file", root.attr("file").unwrap_or_default());
    if let Some(app) = biblio.child("application-reference") {
        put(m, "application_type", app.attr("appl-type").unwrap_or_default());
        if let Some(d) = app.child("document-id") {
            put(m, "application_number", &child_text(d, "doc-number"));
            put(m, "application_date", &iso_date(&child_text(d, "date")).unwrap_or_default());
        }
    }
    let cpc: Vec<String> = biblio
        .path("classifications-cpc")
        .map(|c| c.descendants("classification-cpc"))
        .unwrap_or_default()
        .into_iter()
        .map(|c| {
            let s = ipcr_symbol(c);
            normalize(&s).unwrap_or(s)
        })
        .collect();
    put_list(m, "cpc", dedup(cpc));
    let national: Vec<String> = biblio
        .children_named("classification-national")
        .flat_map(|c| c.children().filter(|e| e.name() == "main-classification" || e.name() == "further-classification").map(|e| e.text()))
        .filter(|s| !s.is_empty())
        .collect();
    put_list(m, "us_class", national);
    if let Some(l) = biblio.child("classification-locarno") {
        put(m, "locarno", &child_text(l, "main-classification"));
        put(m, "locarno_edition", &child_text(l, "edition"));
    }
    put(m, "claim_statement", &child_text(root, "us-claim-statement"));

    if let Some(a) = root.child("abstract") {
        p.abstract_text = TextLines::of(a, ice_layout).join("\n");
    }
    if let Some(d) = root.child("description") {
        p.description = TextLines::of(d, ice_layout).join("\n");
    }
    if let Some(cl) = root.child("claims") {
        p.claims = cl.children_named("claim").map(|c| flow(&TextLines::of(c, ice_layout))).filter(|s| !s.is_empty()).collect();
    }
    Ok(Record::Patent(p))
}

/// `section` `class` `subclass` `main-group`/`subgroup` of an ICE `classification-ipcr` (or
/// `-cpc`) element, as `H04L 29/06`-style text for the normalizer.
fn ipcr_symbol(c: El<'_>) -> String {
    let f = |n: &str| child_text(c, n);
    format!("{}{}{} {}/{}", f("section"), f("class"), f("subclass"), f("main-group"), f("subgroup"))
}

fn dedup(v: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(v.len());
    for s in v {
        if !out.contains(&s) {
            out.push(s);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::SourcesConfig;
    use std::sync::Arc;

    pub(crate) fn rec(bytes: &[u8]) -> RawRecord {
        RawRecord { file: Arc::from("t.xml"), index: 0, offset: 1000, line: 10, bytes: bytes.to_vec() }
    }

    fn parse(xml: &str) -> Result<Record, ReadError> {
        let cfg = SourcesConfig::default();
        parse_xml_record(&rec(xml.as_bytes()), &ParseContext { cfg: &cfg })
    }

    #[test]
    fn root_names_from_heads() {
        assert_eq!(
            xml_root_name(b"\xef\xbb\xbf <?xml version=\"1.0\"?>\n<!DOCTYPE us-patent-grant SYSTEM \"x.dtd\" [ ]>\n<us-patent-grant>"),
            Some(&b"us-patent-grant"[..])
        );
        assert_eq!(xml_root_name(b"<?xml version=\"1.0\"?><!-- c --><PATDOC DTD=\"2.5\">"), Some(&b"PATDOC"[..]));
        assert_eq!(xml_root_name(b"<!DOCTYPE patent-application-publication["), Some(&b"patent-application-publication"[..]));
        assert_eq!(xml_root_name(b"{\"a\": 1}"), None);
        assert_eq!(xml_root_name(b"<?xml version=\"1.0\""), None);
        assert!(!UsptoIce.sniff(b"<?xml version=\"1.0\"?>\n<!DOCTYPE ep-patent-document SYSTEM \"ep.dtd\">\n<ep-patent-document>"));
        assert!(UsptoIce.sniff(b"<?xml version=\"1.0\"?>\n<us-patent-application lang=\"EN\">"));
    }

    #[test]
    fn numbers_and_dates() {
        assert_eq!(us_number("US", "08930553", "B2").as_deref(), Some("US8930553B2"));
        assert_eq!(us_number("", "D0680087", "S1").as_deref(), Some("USD680087S1"));
        assert_eq!(us_number("US", "20130014308", "A1").as_deref(), Some("US20130014308A1"));
        assert_eq!(us_number("US", "2007/0140112", "A1").as_deref(), Some("US20070140112A1"));
        assert_eq!(us_number("US", "RE043210", "E").as_deref(), Some("USRE43210E"));
        assert_eq!(us_number("US", "  ", "B1"), None);
        assert_eq!(iso_date("20150106").as_deref(), Some("2015-01-06"));
        assert_eq!(iso_date("19510200"), None);
        assert_eq!(iso_date("2015010"), None);
    }

    #[test]
    fn ice_text_layout_tables_maths_and_claims() {
        let xml = r#"<?xml version="1.0"?>
<us-patent-grant lang="EN" dtd-version="v4.5" date-publ="20150106">
<us-bibliographic-data-grant>
<publication-reference><document-id><country>US</country><doc-number>08930553</doc-number><kind>B2</kind><date>20150106</date></document-id></publication-reference>
<classifications-ipcr><classification-ipcr><section>G</section><class>06</class><subclass>F</subclass><main-group>15</main-group><subgroup>16</subgroup></classification-ipcr>
<classification-ipcr><section>Z</section><class>06</class><subclass>F</subclass><main-group>1</main-group><subgroup>00</subgroup></classification-ipcr></classifications-ipcr>
<invention-title>A <i>title</i></invention-title>
</us-bibliographic-data-grant>
<abstract><p>First.</p><p>Second &#x201c;q&#x201d;.</p></abstract>
<description><heading>FIELD</heading>
<p>See <figref>FIG. 1</figref>, V<sub>out</sub>.<br/>Next line.</p>
<p><maths><math><mrow><mi>y</mi><mo>=</mo><mfrac><mrow><mi>a</mi><mo>+</mo><mi>b</mi></mrow><msup><mi>x</mi><mn>2</mn></msup></mfrac></mrow></math><img file="x.tif"/></maths></p>
<tables><table><tgroup><thead><row><entry/><entry>TABLE 1</entry></row></thead><tbody><row><entry>a</entry><entry></entry><entry>1.5</entry></row></tbody></tgroup></table></tables>
<ul><li>one</li><li>two<ul><li>two.a</li></ul></li></ul>
</description>
<claims><claim num="1"><claim-text>1. A thing comprising:<claim-text>a part;</claim-text><claim-text>another part.</claim-text></claim-text></claim>
<claim num="2"><claim-text>2. The thing of <claim-ref idref="c1">claim 1</claim-ref>, wherein x.</claim-text></claim></claims>
</us-patent-grant>"#;
        let Record::Patent(p) = parse(xml).unwrap() else { panic!("not a patent") };
        assert_eq!(p.number, "US8930553B2");
        assert_eq!(p.date, "2015-01-06");
        assert_eq!(p.title, "A title");
        assert_eq!(p.abstract_text, "First.\nSecond \u{201c}q\u{201d}.");
        assert_eq!(p.ipc, ["G06F 15/16"]);
        assert_eq!(p.meta["ipc_invalid"][0].as_str().unwrap(), "Z06F 1/00: wrong section letter 'Z' (expected A–H)");
        assert_eq!(p.description, "FIELD\nSee FIG. 1, Vout.\nNext line.\ny = (a + b)/x^2\nTABLE 1\na | 1.5\none\ntwo\ntwo.a");
        assert_eq!(p.claims, ["1. A thing comprising: a part; another part.", "2. The thing of claim 1, wherein x."]);
    }

    #[test]
    fn non_patent_roots_are_skipped_with_their_patent_number() {
        let r = parse("<sequence-cwu id=\"SEQLST-1\"><publication-reference><document-id><country>US</country><doc-number>08420053</doc-number><kind>B2</kind></document-id></publication-reference></sequence-cwu>").unwrap();
        assert_eq!(r, Record::Skip { reason: "not-a-patent:sequence-cwu".into(), id: "US8420053B2".into() });
    }

    #[test]
    fn missing_number_is_a_shape_error_at_the_record() {
        let e = parse("<us-patent-grant><us-bibliographic-data-grant><invention-title>T</invention-title></us-bibliographic-data-grant></us-patent-grant>").unwrap_err();
        assert_eq!((e.kind.as_str(), e.position.offset), ("shape", Some(1000)));
        assert!(e.message.contains("no publication number"), "{e}");
    }

    #[test]
    fn xml_errors_point_into_the_record() {
        let e = parse("<us-patent-grant>&bogus;</us-patent-grant>").unwrap_err();
        assert_eq!((e.kind.as_str(), e.position.offset), ("xml", Some(1017)));
        let e = parse("<us-patent-grant>caf\u{e9}").map(|_| ()).unwrap_err();
        assert_eq!(e.kind, "xml");
        let bytes = b"<us-patent-grant>caf\xe9 x</us-patent-grant>";
        let cfg = SourcesConfig::default();
        let e = parse_xml_record(&rec(bytes), &ParseContext { cfg: &cfg }).unwrap_err();
        assert_eq!((e.kind.as_str(), e.position.offset), ("encoding", Some(1020)));
    }
}

/// The USPTO fixtures read through the real input, sniffing and framing path; golden renders.
#[cfg(test)]
mod fixture_tests {
    use std::io::{Cursor, Read};
    use std::path::{Path, PathBuf};
    use std::sync::atomic::AtomicU64;
    use std::sync::Arc;

    use crate::doc::Record;
    use crate::error::ReadError;
    use crate::render::{render_patent, RenderConfig};
    use crate::sources::framing::frame;
    use crate::sources::input::{for_each_stream, InputStream};
    use crate::sources::{sniff, ParseContext, SourcesConfig, SNIFF_BYTES};

    fn fixture(rel: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures").join(rel)
    }

    /// Reads every record of `path`: (sniffed format name, parse results in order).
    pub(crate) fn read_all(path: &Path) -> (String, Vec<Result<Record, ReadError>>) {
        let cfg = SourcesConfig::default();
        let cx = ParseContext { cfg: &cfg };
        let progress = Arc::new(AtomicU64::new(0));
        let mut out = Vec::new();
        let mut format_name = String::new();
        for_each_stream(path, &progress, |stream| {
            let InputStream { name, mut reader } = stream;
            let mut head = Vec::new();
            (&mut reader).take(SNIFF_BYTES as u64).read_to_end(&mut head).expect("readable");
            let format = sniff(&head).unwrap_or_else(|| panic!("{name}: no format recognises it"));
            format_name = format.name().to_string();
            let reader = Box::new(Cursor::new(head).chain(reader));
            frame(format.framing(), InputStream { name, reader }, cfg.max_record_bytes, &mut |raw| {
                out.push(raw.and_then(|r| format.parse(&r, &cx)));
                true
            });
            Ok(())
        })
        .expect("input opens");
        (format_name, out)
    }

    fn counts(v: &[Result<Record, ReadError>]) -> (usize, Vec<String>, Vec<String>) {
        let mut patents = 0;
        let mut skips = Vec::new();
        let mut errors = Vec::new();
        for r in v {
            match r {
                Ok(Record::Patent(_)) => patents += 1,
                Ok(Record::Skip { reason, .. }) => skips.push(reason.clone()),
                Ok(Record::Doc(_)) => errors.push("unexpected Doc".into()),
                Err(e) => errors.push(e.to_string()),
            }
        }
        (patents, skips, errors)
    }

    #[test]
    fn every_uspto_fixture_reads_with_the_provenance_counts() {
        let seq = || "not-a-patent:sequence-cwu".to_string();
        let tag = regex::Regex::new(r"<([A-Za-z][\w-]*)").unwrap();
        let entity = regex::Regex::new(r"&#?\w+;").unwrap();
        for (file, format, patents, skips) in [
            ("ipg130416.small.xml", "uspto-ice", 25, vec![seq(), seq()]),
            ("ipa130117.two-applications.xml", "uspto-ice", 2, vec![]),
            ("US08930553-grant-v45.xml", "uspto-ice", 1, vec![]),
            ("US20230080311A1-20230316-application-v46.xml", "uspto-ice", 1, vec![]),
            ("US20010000943A1-pap-v15.xml", "uspto-pap", 1, vec![]),
            ("US06336130-grant-v25-PATDOC.xml", "uspto-patdoc", 1, vec![]),
            ("US03937375-aps-greenbook.txt", "uspto-aps", 1, vec![]),
        ] {
            let path = fixture(&format!("data/uspto/{file}"));
            let (name, recs) = read_all(&path);
            assert_eq!(name, format, "{file}");
            // The element names of the file: none may appear as a tag in the text.
            let source = std::fs::read_to_string(&path).unwrap();
            let tags: std::collections::BTreeSet<&str> = tag.captures_iter(&source).map(|c| c.get(1).unwrap().as_str()).collect();
            let (n, s, errors) = counts(&recs);
            assert!(errors.is_empty(), "{file}: {errors:?}");
            assert_eq!((n, s), (patents, skips), "{file}");
            for r in &recs {
                let Ok(Record::Patent(p)) = r else { continue };
                // Every patent has what the corpus needs, and no markup is left in its text.
                assert!(
                    p.number.starts_with("US") && !p.title.is_empty() && p.date.len() == 10,
                    "{file}: {} {:?} {}",
                    p.number,
                    p.title,
                    p.date
                );
                assert!(!p.claims.is_empty(), "{file}: {} has no claims", p.number);
                for t in [&p.title, &p.abstract_text, &p.description].into_iter().chain(&p.claims) {
                    for tag in &tags {
                        for open in [format!("<{tag}>"), format!("<{tag} "), format!("</{tag}>"), format!("<{tag}/>")] {
                            assert!(!t.contains(&open), "{file}: {} markup {open} left in: {t}", p.number);
                        }
                    }
                    assert!(!entity.is_match(t), "{file}: {} entity left: {t}", p.number);
                }
            }
        }
    }

    #[test]
    fn bulk_file_numbers_and_design_patents() {
        let (_, recs) = read_all(&fixture("data/uspto/ipg130416.small.xml"));
        let patents: Vec<_> = recs
            .iter()
            .filter_map(|r| match r {
                Ok(Record::Patent(p)) => Some(p),
                _ => None,
            })
            .collect();
        assert_eq!(patents[0].number, "USD680087S1");
        assert!(patents[0].ipc.is_empty(), "design patents have no IPC");
        assert_eq!(patents[0].meta["locarno"], "1403");
        assert_eq!(patents[2].number, "US8418361B2");
        // Distinct numbers, all dated the issue day.
        let mut nums: Vec<&str> = patents.iter().map(|p| p.number.as_str()).collect();
        nums.sort();
        nums.dedup();
        assert_eq!(nums.len(), 25);
        assert!(patents.iter().all(|p| p.date == "2013-04-16"));
        // The sequence listings are skipped under the number of the grant they belong to (the
        // grants themselves are not in this cut of the weekly file).
        let skipped: Vec<&str> = recs
            .iter()
            .filter_map(|r| match r {
                Ok(Record::Skip { id, .. }) => Some(id.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(skipped, ["US8420053B2", "US8420317B2"]);
    }

    /// Each USPTO fixture is claimed by exactly its reader; no other fixture (EPO XML and TSV,
    /// JSON, JSONL, CSV, tokenizer files) by any USPTO reader.
    #[test]
    fn uspto_sniffers_claim_only_their_files() {
        use crate::sources::{by_name, sniffing::trimmed};
        let ours = ["uspto-ice", "uspto-pap", "uspto-patdoc", "uspto-aps"].map(|n| by_name(n).unwrap());
        let mut stack = vec![fixture("data")];
        let mut seen = 0;
        while let Some(dir) = stack.pop() {
            for e in std::fs::read_dir(&dir).unwrap().flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                    continue;
                }
                let bytes = std::fs::read(&p).unwrap();
                let head = &bytes[..bytes.len().min(SNIFF_BYTES)];
                let claimed: Vec<&str> = ours.iter().filter(|f| f.sniff(head)).map(|f| f.name()).collect();
                let name = p.file_name().unwrap().to_string_lossy().to_string();
                let want: &[&str] = if !p.parent().unwrap().ends_with("uspto") {
                    &[]
                } else if name.contains("aps") {
                    &["uspto-aps"]
                } else if name.contains("pap") {
                    &["uspto-pap"]
                } else if name.contains("PATDOC") {
                    &["uspto-patdoc"]
                } else {
                    &["uspto-ice"]
                };
                assert_eq!(claimed, want, "{}", p.display());
                // Sniffing looks at content only: the same bytes after a BOM and blank lines.
                let mut padded = b"\xef\xbb\xbf\n \n".to_vec();
                padded.extend_from_slice(trimmed(head));
                assert_eq!(ours.iter().filter(|f| f.sniff(&padded)).count(), want.len(), "{name} with BOM");
                seen += 1;
            }
        }
        assert!(seen >= 20, "only {seen} fixture files");
        for head in [
            &b"{\"RECORDS\": [{\"content\": \"PATN\"}]}"[..],
            b"[\n  {\"title\": \"x\"}",
            b"EP\t0600001\tA1\t1994-06-08\ten\tTITLE\tx\n",
            b"PATN",
        ] {
            assert!(ours.iter().all(|f| !f.sniff(head)), "{}", String::from_utf8_lossy(head));
        }
    }

    /// A bad file's records and its bytes.
    fn read_bad(name: &str) -> (PathBuf, Vec<u8>, Vec<Result<Record, ReadError>>) {
        let path = fixture(&format!("bad/{name}"));
        let (_, recs) = read_all(&path);
        (path.clone(), std::fs::read(&path).unwrap(), recs)
    }

    fn numbers(recs: &[Result<Record, ReadError>]) -> Vec<String> {
        recs.iter()
            .filter_map(|r| match r {
                Ok(Record::Patent(p)) => Some(p.number.clone()),
                _ => None,
            })
            .collect()
    }

    /// The one error of `recs`, checked to name `path`.
    fn the_error<'r>(path: &Path, recs: &'r [Result<Record, ReadError>]) -> &'r ReadError {
        let errors: Vec<&ReadError> = recs.iter().filter_map(|r| r.as_ref().err()).collect();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].position.file, path.display().to_string());
        errors[0]
    }

    fn find(hay: &[u8], needle: &[u8]) -> u64 {
        memchr::memmem::find(hay, needle).expect("needle in file") as u64
    }

    #[test]
    fn truncated_document_in_a_bulk_file_is_one_error_and_the_others_read() {
        let (path, bytes, recs) = read_bad("uspto-bulk-with-truncated-document.xml");
        assert_eq!(recs.len(), 3);
        assert_eq!(numbers(&recs), ["US8000001B2", "US8000003B2"]);
        let e = the_error(&path, &recs);
        assert_eq!(e.kind, "xml");
        assert!(e.message.contains("unclosed element <p>"), "{e}");
        // At the end of the cut document: the byte before the next document's declaration.
        let end = find(&bytes, b"cut of\n") + b"cut of".len() as u64;
        assert_eq!((e.position.offset, e.position.line), (Some(end), Some(18)), "{e}");
        assert!(e.to_string().starts_with(&format!("{}:18 (byte {end})", path.display())), "{e}");
    }

    #[test]
    fn undefined_entity_is_an_xml_error_at_its_byte() {
        let (path, bytes, recs) = read_bad("uspto-undefined-entity.xml");
        let e = the_error(&path, &recs);
        assert_eq!((e.kind.as_str(), e.position.offset), ("xml", Some(find(&bytes, b"&bogus;"))), "{e}");
        assert!(e.message.contains("undefined entity &bogus;"), "{e}");
    }

    #[test]
    fn missing_publication_number_is_a_shape_error() {
        let (path, _, recs) = read_bad("uspto-no-publication-number.xml");
        let e = the_error(&path, &recs);
        assert_eq!((e.kind.as_str(), e.position.offset), ("shape", Some(0)), "{e}");
        assert!(e.message.contains("no publication number (publication-reference/document-id/doc-number)"), "{e}");
    }

    #[test]
    fn text_that_is_not_utf8_is_an_encoding_error_at_the_bad_byte() {
        let (path, bytes, recs) = read_bad("uspto-not-utf8.xml");
        let e = the_error(&path, &recs);
        assert_eq!((e.kind.as_str(), e.position.offset), ("encoding", Some(find(&bytes, b"\xe9"))), "{e}");
        assert!(e.message.contains("invalid UTF-8"), "{e}");
    }

    #[test]
    fn aps_patent_without_wku_is_a_shape_error_and_its_neighbours_read() {
        let (path, bytes, recs) = read_bad("uspto-aps-patent-without-wku.txt");
        assert_eq!(numbers(&recs), ["US3937375A", "US3937376A"]);
        let e = the_error(&path, &recs);
        let second = find(&bytes[1..], b"PATN") + 1;
        assert_eq!((e.kind.as_str(), e.position.offset, e.position.line), ("shape", Some(second), Some(8)), "{e}");
        assert!(e.message.contains("no usable patent number"), "{e}");
    }

    fn docs_config(inputs: &[PathBuf], output: &Path) -> crate::config::DocsConfig {
        let v = serde_json::json!({ "inputs": inputs, "output": output });
        serde_json::from_value(v).expect("docs config")
    }

    /// The whole `docs` stage over the USPTO fixtures: the report accounts for every record.
    #[test]
    fn docs_stage_accounts_for_every_uspto_record() {
        let out = tempfile::tempdir().unwrap();
        let cfg = docs_config(&[fixture("data/uspto")], out.path());
        let scheme = crate::ipc::IpcScheme::default();
        let report = crate::pipeline::docs::run(&cfg, &scheme, Default::default(), false).unwrap();
        let st = &report.sources["uspto"];
        assert_eq!((st.files, st.read, st.accounted()), (7, 34, 34), "{st:?}");
        assert!(st.errors.is_empty(), "{:?}", report.error_samples);
        assert_eq!(st.filtered.get("not-a-patent:sequence-cwu"), Some(&2), "{st:?}");
        assert!(report.unrecognized.is_empty(), "{:?}", report.unrecognized);
    }

    /// Bad records are counted and the run goes on; `strict` fails with the same message.
    #[test]
    fn docs_stage_counts_bad_records_and_strict_fails_on_them() {
        let out = tempfile::tempdir().unwrap();
        let bad: Vec<PathBuf> =
            ["uspto-bulk-with-truncated-document.xml", "uspto-undefined-entity.xml"].iter().map(|f| fixture(&format!("bad/{f}"))).collect();
        let scheme = crate::ipc::IpcScheme::default();
        let report = crate::pipeline::docs::run(&docs_config(&bad, out.path()), &scheme, Default::default(), false).unwrap();
        let st = &report.sources["uspto"];
        // The two good (tiny, hand-made) documents are read; the cleaner may then drop them as
        // too short, which is a filter, not an error.
        let good = st.kept + st.filtered.values().sum::<u64>();
        assert_eq!((st.read, good, st.errors.get("xml")), (4, 2, Some(&2)), "{st:?}");
        let out = tempfile::tempdir().unwrap();
        let err = crate::pipeline::docs::run(&docs_config(&bad, out.path()), &scheme, Default::default(), true).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("uspto-bulk-with-truncated-document.xml:18 (byte ") && msg.contains("unclosed element <p>"), "{msg}");
    }

    /// Documents with a golden render: (fixture, index of the patent in the file, golden name).
    const GOLDEN: &[(&str, usize, &str)] = &[
        ("US08930553-grant-v45.xml", 0, "US8930553B2-ice-grant"),
        ("US20230080311A1-20230316-application-v46.xml", 0, "US20230080311A1-ice-application"),
        ("ipg130416.small.xml", 24, "US8421615B2-ice-grant-maths-tables"),
        ("US20010000943A1-pap-v15.xml", 0, "US20010000943A1-pap"),
        ("US06336130-grant-v25-PATDOC.xml", 0, "US6336130B1-patdoc"),
        ("US03937375-aps-greenbook.txt", 0, "US3937375A-aps"),
    ];

    /// The golden file is the render with claims; the default render must be it without the
    /// claims part. `UPDATE_GOLDEN=1` rewrites the files (then read them through by hand).
    #[test]
    fn golden_renders() {
        let update = std::env::var_os("UPDATE_GOLDEN").is_some();
        for &(file, index, golden) in GOLDEN {
            let (_, recs) = read_all(&fixture(&format!("data/uspto/{file}")));
            let p = recs
                .into_iter()
                .filter_map(|r| match r {
                    Ok(Record::Patent(p)) => Some(p),
                    _ => None,
                })
                .nth(index)
                .unwrap_or_else(|| panic!("{file}: no patent {index}"));
            let plain = render_patent(&p, &RenderConfig::default(), None);
            let with_claims = render_patent(&p, &RenderConfig { claims: true, ..Default::default() }, None);
            let mut meta = serde_json::Map::new();
            for (k, v) in
                [("id", &plain.id), ("source", &plain.source), ("lang", &plain.lang), ("title", &plain.title), ("date", &plain.date)]
            {
                meta.insert(k.into(), v.clone().into());
            }
            meta.insert("ipc".into(), plain.ipc.clone().into());
            meta.insert("claims".into(), p.claims.len().into());
            meta.insert("meta".into(), plain.meta.clone().into());
            let meta = serde_json::to_string_pretty(&meta).unwrap() + "\n";
            let text_path = fixture(&format!("golden/uspto/{golden}.txt"));
            let meta_path = fixture(&format!("golden/uspto/{golden}.meta.json"));
            if update {
                std::fs::create_dir_all(text_path.parent().unwrap()).unwrap();
                std::fs::write(&text_path, format!("{}\n", with_claims.text)).unwrap();
                std::fs::write(&meta_path, &meta).unwrap();
            }
            let want = std::fs::read_to_string(&text_path).unwrap_or_else(|e| panic!("{}: {e}", text_path.display()));
            let want = want.strip_suffix('\n').unwrap_or(&want);
            assert_eq!(with_claims.text, want, "{golden}: render with claims differs from the golden file");
            let claims_at = want.find("\n\n权利要求: ").unwrap_or_else(|| panic!("{golden}: golden has no claims part"));
            assert_eq!(plain.text, &want[..claims_at], "{golden}: default render is not the golden without claims");
            assert_eq!(meta, std::fs::read_to_string(&meta_path).unwrap(), "{golden}: fields and meta differ");
        }
    }
}
