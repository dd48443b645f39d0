//! EPO `ep-patent-document` XML, DTD v1.0–v1.5.1 (language by config; bibliography-only
//! publications are counted as filtered, not errors).
//!
//! The text extraction and the language choice are shared with the full-text TSV reader
//! (`epo_tsv`), whose parts carry the same inline markup.

use serde::{Deserialize, Serialize};

use crate::doc::{Meta, Patent, Record};
use crate::error::ReadError;
use crate::ipc::normalize;

use super::sniffing;
use super::text::decode;
use super::xml::{collapse_ws, El, XmlDoc};
use super::{Format, Framing, ParseContext, RawRecord};

/// What to do with a publication that has no text in any of the configured languages.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum OtherLanguages {
    /// Take the text in the publication's own language (the language of the proceedings).
    #[default]
    Own,
    /// Filter the publication out, counted as `language`.
    Skip,
}

/// Settings of the EPO readers (XML and full-text TSV).
#[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct EpoConfig {
    /// Text languages in order of preference (ISO 639-1, e.g. `["en", "de"]`). Title, abstract and
    /// description are taken in the first of these the publication has a description in (or, without
    /// a description, an abstract). Empty: the publication's own language.
    pub languages: Vec<String>,
    /// What to do when the publication has none of `languages`.
    pub other_languages: OtherLanguages,
    /// Claims languages in order of preference. Empty: the language chosen for the text. Either way
    /// the claims fall back to the text language, then the own language, then the first claims set.
    pub claims_languages: Vec<String>,
}

/// EPO `ep-patent-document` XML.
pub struct EpoXml;

impl Format for EpoXml {
    fn name(&self) -> &'static str {
        "epo-xml"
    }
    fn source(&self) -> &'static str {
        "epo"
    }
    fn sniff(&self, head: &[u8]) -> bool {
        root_element_name(sniffing::trimmed(head)) == Some(ROOT)
    }
    fn framing(&self) -> Framing {
        Framing::XmlDocuments
    }
    fn parse(&self, raw: &RawRecord, cx: &ParseContext<'_>) -> Result<Record, ReadError> {
        let text = decode(raw, &raw.bytes, 0, cx.cfg.encoding)?;
        let doc = XmlDoc::parse(&text).map_err(|e| raw.error_at(e.offset, "xml", e.message))?;
        let root = doc.root();
        if root.name() != ROOT {
            return Err(raw.error("shape", format!("root element is <{}>, expected <{ROOT}>", root.name())));
        }
        Ok(parts_of(root).into_record(&cx.cfg.epo))
    }
}

const ROOT: &str = "ep-patent-document";

/// The name of the first element of an XML head, skipping the declaration, processing
/// instructions, comments and the DOCTYPE (with its internal subset). `None` when the head does
/// not start like XML or the root is beyond it.
pub(crate) fn root_element_name(head: &[u8]) -> Option<&str> {
    let mut h = head;
    loop {
        let n = h.iter().take_while(|c| c.is_ascii_whitespace()).count();
        h = &h[n..];
        if h.starts_with(b"<?") {
            h = &h[memchr::memmem::find(h, b"?>")? + 2..];
        } else if h.starts_with(b"<!--") {
            h = &h[memchr::memmem::find(h, b"-->")? + 3..];
        } else if h.starts_with(b"<!DOCTYPE") || h.starts_with(b"<!doctype") {
            // The internal subset may hold '>' inside declarations; skip to its ']' first.
            let close = memchr::memchr(b'>', h)?;
            let open = memchr::memchr(b'[', h).filter(|&i| i < close);
            h = match open {
                Some(_) => {
                    let end = memchr::memmem::find(h, b"]")?;
                    &h[end + memchr::memchr(b'>', &h[end..])? + 1..]
                }
                None => &h[close + 1..],
            };
        } else if h.first() == Some(&b'<') {
            let name_len = h[1..].iter().take_while(|&&c| !c.is_ascii_whitespace() && c != b'>' && c != b'/').count();
            return std::str::from_utf8(&h[1..1 + name_len]).ok();
        } else {
            return None;
        }
    }
}

/// Reads the parts of an `ep-patent-document`.
fn parts_of(root: El<'_>) -> EpParts {
    let mut p = EpParts::default();
    let biblio = root.child("SDOBI");
    let b = |path: &str| biblio.and_then(|s| s.path(path)).map(|e| e.text()).filter(|t| !t.is_empty());
    let num = b("B100/B110").or_else(|| root.attr("doc-number").map(str::to_string)).unwrap_or_default();
    p.kind = b("B100/B130").or_else(|| root.attr("kind").map(str::to_string)).unwrap_or_default();
    p.number = ep_number(&num, &p.kind);
    let raw_date = b("B100/B140/date").or_else(|| root.attr("date-publ").map(str::to_string)).unwrap_or_default();
    p.date = iso_date(&raw_date, &mut p.meta);
    p.own_lang = root.attr("lang").or_else(|| biblio.and_then(|s| s.attr("lang"))).unwrap_or_default().to_string();

    if let Some(v) = root.attr("dtd-version") {
        p.meta.insert("dtd_version".into(), v.into());
    }
    if let Some(s) = biblio {
        read_biblio(s, &mut p);
    }
    let lang_of = |e: El<'_>| e.attr("lang").map(str::to_string).unwrap_or_else(|| p.own_lang.clone());
    let mut abstracts = Vec::new();
    let mut descriptions = Vec::new();
    let mut claims = Vec::new();
    for c in root.children() {
        match c.name() {
            "abstract" => abstracts.push((lang_of(c), block_lines(c).join("\n"))),
            "description" => descriptions.push((lang_of(c), block_lines(c).join("\n"))),
            "claims" => claims.push((lang_of(c), claim_texts(c))),
            _ => {}
        }
    }
    p.abstracts = abstracts;
    p.descriptions = descriptions;
    p.claims = claims;
    p
}

fn read_biblio(s: El<'_>, p: &mut EpParts) {
    if let Some(t) = s.path("B200/B210").map(|e| e.text()).filter(|t| !t.is_empty()) {
        p.meta.insert("application_number".into(), t.into());
    }
    if let Some(t) = s.path("B200/B220/date").map(|e| e.text()).filter(|t| !t.is_empty()) {
        p.meta.insert("filing_date".into(), dashed(&t).into());
    }
    if let Some(b540) = s.path("B500/B540") {
        let mut lang = String::new();
        for c in b540.children() {
            match c.name() {
                "B541" => lang = c.text(),
                "B542" => p.titles.push((lang.clone(), inline_text(c))),
                _ => {}
            }
        }
    }
    // IPC: `B510EP/classification-ipcr/text` (from 2006), or `B510/B511` (main) and `B512` (further).
    let mut symbols: Vec<String> = Vec::new();
    if let Some(b510) = s.path("B500/B510EP") {
        symbols.extend(b510.descendants("classification-ipcr").iter().filter_map(|c| c.child("text")).map(|t| t.raw_text()));
    }
    if let Some(b510) = s.path("B500/B510") {
        for c in b510.children().filter(|c| matches!(c.name(), "B511" | "B512")) {
            // Older files prefix the edition: `7C 07K 14/47`.
            let t = c.raw_text();
            symbols.push(t.trim_start().trim_start_matches(|c: char| c.is_ascii_digit()).to_string());
        }
    }
    let mut unparsed = Vec::new();
    for sym in symbols {
        match normalize(&sym) {
            Ok(n) if !p.ipc.contains(&n) => p.ipc.push(n),
            Ok(_) => {}
            Err(_) => unparsed.push(serde_json::Value::from(collapse_ws(&sym))),
        }
    }
    if !unparsed.is_empty() {
        p.meta.insert("ipc_unparsed".into(), unparsed.into());
    }
    if let Some(b520) = s.path("B500/B520EP") {
        let cpc: Vec<serde_json::Value> = b520
            .descendants("classification-cpc")
            .iter()
            .filter_map(|c| c.child("text"))
            .map(|t| t.raw_text())
            .map(|t| normalize(&t).unwrap_or_else(|_| collapse_ws(&t)).into())
            .collect();
        if !cpc.is_empty() {
            p.meta.insert("cpc".into(), cpc.into());
        }
    }
    let names = |path: &str, item: &str| -> Vec<serde_json::Value> {
        s.path(path)
            .map(|e| e.descendants(item).iter().filter_map(|i| i.child("snm")).map(|n| n.text().into()).collect())
            .unwrap_or_default()
    };
    let mut applicants = names("B700/B710", "B711");
    applicants.extend(names("B700/B730", "B731"));
    if !applicants.is_empty() {
        p.meta.insert("applicants".into(), applicants.into());
    }
    let inventors = names("B700/B720", "B721");
    if !inventors.is_empty() {
        p.meta.insert("inventors".into(), inventors.into());
    }
}

/// `EP` + the 7-digit publication number + kind (`EP0600083A1`), as the EPO writes it.
pub(crate) fn ep_number(num: &str, kind: &str) -> String {
    let num = num.trim();
    let num = num.strip_prefix("EP").unwrap_or(num);
    format!("EP{num:0>7}{}", kind.trim())
}

/// `20060719` → `2006-07-19`.
fn dashed(d: &str) -> String {
    if d.len() == 8 && d.bytes().all(|c| c.is_ascii_digit()) {
        format!("{}-{}-{}", &d[..4], &d[4..6], &d[6..])
    } else {
        d.to_string()
    }
}

/// A publication date as `YYYY-MM-DD` (from `YYYYMMDD` or already dashed); anything else is
/// kept in `meta.date_raw` and the date left empty.
pub(crate) fn iso_date(d: &str, meta: &mut Meta) -> String {
    let d = d.trim();
    let iso = dashed(d);
    let b = iso.as_bytes();
    let ok = b.len() == 10 && b[4] == b'-' && b[7] == b'-' && b.iter().enumerate().all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit());
    if ok {
        iso
    } else {
        if !d.is_empty() {
            meta.insert("date_raw".into(), d.into());
        }
        String::new()
    }
}

// ---------------------------------------------------------------------------------------------
// Text extraction, shared with the TSV reader.

/// Lines being collected from block-structured content.
struct Lines {
    out: Vec<String>,
    cur: String,
}

impl Lines {
    fn flush(&mut self) {
        let l = collapse_ws(&self.cur);
        if !l.is_empty() {
            self.out.push(l);
        }
        self.cur.clear();
    }
}

/// The text of block-structured EP content (`description`, `abstract`) as lines: one per
/// heading, paragraph, list item, definition (term and definition on one line), table row
/// (cells joined by ` | `) and `<br/>`. Figures and images are dropped; MathML is linearized.
/// (Page markers `<!-- EPO <DP n="1"> -->` are comments, which the XML tree drops.)
pub(crate) fn block_lines(el: El<'_>) -> Vec<String> {
    let mut l = Lines { out: Vec::new(), cur: String::new() };
    blocks(el, &mut l);
    l.flush();
    l.out
}

fn blocks(el: El<'_>, l: &mut Lines) {
    for n in el.nodes() {
        let c = match n {
            Err(text) => {
                l.cur.push_str(text);
                continue;
            }
            Ok(c) => c,
        };
        match c.name() {
            "p" | "heading" | "ul" | "ol" | "li" | "dl" | "tables" | "table" | "tgroup" | "thead" | "tbody" | "title" | "pre" => {
                l.flush();
                if c.name() == "pre" {
                    // Preformatted text keeps its lines.
                    for line in c.raw_text().lines() {
                        l.cur.push_str(line);
                        l.flush();
                    }
                } else {
                    blocks(c, l);
                }
                l.flush();
            }
            "dt" => {
                l.flush();
                blocks(c, l);
                l.cur.push(' '); // the definition follows on the same line
            }
            "dd" => {
                blocks(c, l);
                l.flush();
            }
            "row" => {
                l.flush();
                let cells: Vec<String> = c.children().filter(|e| e.name() == "entry").map(inline_text).collect();
                l.cur.push_str(&cells.join(" | "));
                l.flush();
            }
            "br" => l.flush(),
            "maths" | "math" => l.cur.push_str(&math_text(c)),
            "figure" | "img" | "colspec" | "spanspec" | "doc-page" => {}
            _ => blocks(c, l), // inline markup: b, i, u, sup, sub, patcit, figref, crossref, …
        }
    }
}

/// All text of an element on one line: nested blocks and `<br/>` become spaces, images are
/// dropped, MathML is linearized.
pub(crate) fn inline_text(el: El<'_>) -> String {
    let mut s = String::new();
    inline(el, &mut s);
    collapse_ws(&s)
}

fn inline(el: El<'_>, s: &mut String) {
    for n in el.nodes() {
        match n {
            Err(t) => s.push_str(t),
            Ok(c) => match c.name() {
                "br" => s.push(' '),
                "figure" | "img" | "colspec" | "spanspec" | "doc-page" => {}
                "maths" | "math" => s.push_str(&math_text(c)),
                "claim-text" | "p" | "heading" | "li" | "dt" | "dd" | "row" | "entry" | "title" => {
                    s.push(' ');
                    inline(c, s);
                    s.push(' ');
                }
                _ => inline(c, s),
            },
        }
    }
}

/// The claims of one `claims` element, one string per claim, numbered `1. …` from the claim's
/// `num` (its position when missing).
pub(crate) fn claim_texts(claims: El<'_>) -> Vec<String> {
    claims
        .children_named("claim")
        .enumerate()
        .map(|(i, c)| {
            let n = c.attr("num").and_then(|n| n.trim().parse::<u32>().ok()).unwrap_or(i as u32 + 1);
            format!("{n}. {}", inline_text(c))
        })
        .collect()
}

/// MathML as one line of plain text: `V=4/3(D/2)^3`.
fn math_text(el: El<'_>) -> String {
    let mut s = String::new();
    math(el, &mut s);
    collapse_ws(&s)
}

fn math(el: El<'_>, s: &mut String) {
    let kids: Vec<El<'_>> = el.children().collect();
    match (el.name(), kids.as_slice()) {
        ("mfrac", [a, b]) => {
            s.push_str(&math_group(*a));
            s.push('/');
            s.push_str(&math_group(*b));
        }
        ("msup", [a, b]) => {
            s.push_str(&math_group(*a));
            s.push('^');
            s.push_str(&math_group(*b));
        }
        ("msub", [a, b]) => {
            s.push_str(&math_group(*a));
            s.push('_');
            s.push_str(&math_group(*b));
        }
        ("msubsup", [a, b, c]) => {
            s.push_str(&math_group(*a));
            s.push('_');
            s.push_str(&math_group(*b));
            s.push('^');
            s.push_str(&math_group(*c));
        }
        ("msqrt", _) => {
            s.push_str("√(");
            for k in &kids {
                math(*k, s);
            }
            s.push(')');
        }
        ("mroot", [a, b]) => {
            s.push_str(&math_group(*a));
            s.push_str("^(1/");
            s.push_str(&math_text(*b));
            s.push(')');
        }
        ("img" | "annotation" | "annotation-xml", _) => {}
        _ => {
            for n in el.nodes() {
                match n {
                    Err(t) => s.push_str(t.trim()),
                    Ok(c) => math(c, s),
                }
            }
        }
    }
}

/// A MathML operand, in parentheses unless it is a single token or already bracketed.
fn math_group(el: El<'_>) -> String {
    let t = math_text(el);
    let simple = t.chars().all(|c| c.is_alphanumeric() || c == '.');
    let bracketed = t.starts_with('(') && t.ends_with(')');
    if simple || bracketed || t.is_empty() {
        t
    } else {
        format!("({t})")
    }
}

// ---------------------------------------------------------------------------------------------
// Language choice and assembly, shared with the TSV reader.

/// The parts of one EP publication, by language, as a reader found them.
#[derive(Debug, Default)]
pub(crate) struct EpParts {
    /// `EP0600083A1`.
    pub number: String,
    /// Kind code (`A1`, `B2`, …).
    pub kind: String,
    /// Publication date `YYYY-MM-DD` (or empty).
    pub date: String,
    /// The language of the proceedings (root `lang`; for TSV the description's language).
    pub own_lang: String,
    /// (language, title), in document order.
    pub titles: Vec<(String, String)>,
    /// (language, abstract paragraphs joined by `\n`).
    pub abstracts: Vec<(String, String)>,
    /// (language, description lines joined by `\n`).
    pub descriptions: Vec<(String, String)>,
    /// (language, claims).
    pub claims: Vec<(String, Vec<String>)>,
    /// Normalized IPC symbols.
    pub ipc: Vec<String>,
    /// Everything else worth keeping.
    pub meta: Meta,
}

fn find<'a, T>(v: &'a [(String, T)], lang: &str) -> Option<&'a T> {
    v.iter().find(|(l, _)| l == lang).map(|(_, t)| t)
}

impl EpParts {
    /// The patent in the configured language, or a skip (`biblio-only`, `language`).
    pub(crate) fn into_record(mut self, cfg: &EpoConfig) -> Record {
        let has = |v: &[(String, String)]| v.iter().any(|(_, t)| !t.is_empty());
        let has_claims = self.claims.iter().any(|(_, c)| !c.is_empty());
        if !has(&self.abstracts) && !has(&self.descriptions) && !has_claims {
            return Record::Skip { reason: "biblio-only".into(), id: self.number };
        }
        // Languages the text can be taken in: those of the description, else of the abstract,
        // else of the claims.
        let avail: Vec<String> = if has(&self.descriptions) {
            self.descriptions.iter().filter(|(_, t)| !t.is_empty()).map(|(l, _)| l.clone()).collect()
        } else if has(&self.abstracts) {
            self.abstracts.iter().filter(|(_, t)| !t.is_empty()).map(|(l, _)| l.clone()).collect()
        } else {
            self.claims.iter().filter(|(_, c)| !c.is_empty()).map(|(l, _)| l.clone()).collect()
        };
        let preferred = cfg.languages.iter().find(|l| avail.contains(l));
        let lang = match preferred {
            Some(l) => l.clone(),
            None if !cfg.languages.is_empty() && cfg.other_languages == OtherLanguages::Skip => {
                return Record::Skip { reason: "language".into(), id: self.number };
            }
            None if avail.contains(&self.own_lang) => self.own_lang.clone(),
            None => avail[0].clone(),
        };
        if lang != self.own_lang && !self.own_lang.is_empty() {
            self.meta.insert("own_lang".into(), self.own_lang.clone().into());
        }

        let title_lang = [lang.as_str(), self.own_lang.as_str()].into_iter().find(|l| find(&self.titles, l).is_some_and(|t| !t.is_empty()));
        let title = match title_lang {
            Some(l) => find(&self.titles, l).cloned().unwrap_or_default(),
            None => self.titles.iter().map(|(_, t)| t.clone()).find(|t| !t.is_empty()).unwrap_or_default(),
        };
        let other_titles: serde_json::Map<String, serde_json::Value> =
            self.titles.iter().filter(|(_, t)| !t.is_empty() && *t != title).map(|(l, t)| (l.clone(), t.clone().into())).collect();
        if !other_titles.is_empty() {
            self.meta.insert("titles".into(), other_titles.into());
        }
        let abstract_text = find(&self.abstracts, &lang).cloned().unwrap_or_default();
        let other_abstracts: serde_json::Map<String, serde_json::Value> =
            self.abstracts.iter().filter(|(l, t)| *l != lang && !t.is_empty()).map(|(l, t)| (l.clone(), t.clone().into())).collect();
        if !other_abstracts.is_empty() {
            self.meta.insert("abstracts".into(), other_abstracts.into());
        }
        let description = find(&self.descriptions, &lang).cloned().unwrap_or_default();

        let with_claims = |l: &str| find(&self.claims, l).is_some_and(|c| !c.is_empty());
        let claims_lang = cfg
            .claims_languages
            .iter()
            .map(String::as_str)
            .chain([lang.as_str(), self.own_lang.as_str()])
            .find(|l| with_claims(l))
            .map(str::to_string)
            .or_else(|| self.claims.iter().find(|(_, c)| !c.is_empty()).map(|(l, _)| l.clone()));
        let claims = claims_lang.as_deref().and_then(|l| find(&self.claims, l)).cloned().unwrap_or_default();
        if let Some(cl) = claims_lang.filter(|cl| *cl != lang) {
            self.meta.insert("claims_lang".into(), cl.into());
        }
        let langs: Vec<serde_json::Value> = self.claims.iter().filter(|(_, c)| !c.is_empty()).map(|(l, _)| l.clone().into()).collect();
        if langs.len() > 1 {
            self.meta.insert("claims_languages".into(), langs.into());
        }
        self.meta.insert("kind".into(), self.kind.clone().into());

        Record::Patent(Patent {
            source: "epo".into(),
            number: self.number,
            lang,
            title,
            abstract_text,
            ipc: self.ipc,
            ipc_titles: Vec::new(),
            date: self.date,
            description,
            claims,
            meta: self.meta,
        })
    }
}

#[cfg(test)]
pub(crate) mod test_support {
    //! Reading fixtures through the real input, sniffing and framing path.

    use std::path::Path;
    use std::sync::atomic::AtomicU64;
    use std::sync::Arc;

    use crate::doc::Record;
    use crate::error::ReadError;
    use crate::sources::framing::frame;
    use crate::sources::input::for_each_stream;
    use crate::sources::{sniff, Format, ParseContext, SourcesConfig};

    /// Every record of `path` (relative to the crate root): the sniffed format and the parse
    /// results, in order.
    pub fn read_all(path: &str, cfg: &SourcesConfig) -> (Option<&'static str>, Vec<Result<Record, ReadError>>) {
        let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
        let mut out = Vec::new();
        let mut name = None;
        let cx = ParseContext { cfg };
        for_each_stream(&full, &Arc::new(AtomicU64::new(0)), |stream| {
            use std::io::Read;
            let crate::sources::input::InputStream { name: sname, mut reader } = stream;
            let mut head = Vec::new();
            (&mut reader).take(crate::sources::SNIFF_BYTES as u64).read_to_end(&mut head).unwrap();
            let Some(f) = sniff(&head) else { return Ok(()) };
            name = Some(f.name());
            let reader = Box::new(std::io::Cursor::new(head).chain(reader));
            let f: &dyn Format = f;
            frame(f.framing(), crate::sources::input::InputStream { name: sname, reader }, cfg.max_record_bytes, &mut |raw| {
                out.push(raw.and_then(|r| f.parse(&r, &cx)));
                true
            });
            Ok(())
        })
        .unwrap();
        (name, out)
    }

    /// Reads one file that must hold exactly one patent.
    pub fn one_patent(path: &str, cfg: &SourcesConfig) -> crate::doc::Patent {
        let (_, recs) = read_all(path, cfg);
        assert_eq!(recs.len(), 1, "{path}");
        match recs.into_iter().next().unwrap() {
            Ok(Record::Patent(p)) => p,
            other => panic!("{path}: {other:?}"),
        }
    }

    /// Compares `actual` with the golden file `rel` (under `fixtures/golden/`); with
    /// `UPDATE_GOLDEN=1` writes it instead.
    pub fn golden(rel: &str, actual: &str) {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/golden").join(rel);
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, actual).unwrap();
        }
        let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 writes it)", path.display()));
        if expected != actual {
            let at = expected.chars().zip(actual.chars()).take_while(|(a, b)| a == b).count();
            let ctx: String = actual.chars().skip(at.saturating_sub(40)).take(120).collect();
            panic!("{}: output differs at char {at}: …{ctx}…", path.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::test_support::*;
    use super::*;
    use crate::render::{render_patent, RenderConfig};
    use crate::sources::SourcesConfig;

    const DIR: &str = "fixtures/data/epo";

    fn cfg_with(epo: EpoConfig) -> SourcesConfig {
        SourcesConfig { epo, ..Default::default() }
    }

    #[test]
    fn every_xml_fixture_reads_with_zero_errors() {
        let mut numbers = Vec::new();
        for f in [
            "EP1442058B1-v1-0.xml",
            "EP1873405A2-v1-2.xml",
            "EP2716170B2-v1-5-1.xml",
            "EP3782854A1-v1-5.xml",
            "EP4090146A1-v1-5-1-biblio-only.xml",
        ] {
            let (fmt, recs) = read_all(&format!("{DIR}/{f}"), &SourcesConfig::default());
            assert_eq!(fmt, Some("epo-xml"), "{f}");
            assert_eq!(recs.len(), 1, "{f}");
            match recs.into_iter().next().unwrap() {
                Ok(Record::Patent(p)) => {
                    assert!(!p.title.is_empty() && !p.description.is_empty() && !p.claims.is_empty() && !p.ipc.is_empty(), "{f}: {p:?}");
                    assert!(f.starts_with(&p.number), "{f}: {}", p.number);
                    numbers.push(p.number);
                }
                Ok(Record::Skip { reason, id }) => {
                    assert_eq!((f, reason.as_str(), id.as_str()), ("EP4090146A1-v1-5-1-biblio-only.xml", "biblio-only", "EP4090146A1"));
                }
                other => panic!("{f}: {other:?}"),
            }
        }
        assert_eq!(numbers, ["EP1442058B1", "EP1873405A2", "EP2716170B2", "EP3782854A1"]);
    }

    #[test]
    fn bibliography_fields() {
        let p = one_patent(&format!("{DIR}/EP1442058B1-v1-0.xml"), &SourcesConfig::default());
        assert_eq!((p.lang.as_str(), p.date.as_str()), ("en", "2006-07-19"));
        assert_eq!(p.ipc, ["C07K 14/47", "A61K 38/17"]);
        assert_eq!(
            p.title,
            "PEPTIDES EFFECTIVE IN THE TREATMENT OF TUMORS AND OTHER CONDITIONS REQUIRING THE REMOVAL OR DESTRUCTION OF CELLS"
        );
        assert_eq!(p.meta["titles"]["de"], "PEPTIDE ZUM EINSATZ IN DER BEHANDLUNG VON TUMOREN UND ANDEREN ZUSTÄNDEN, DIE DAS ENTFERNEN ODER ZERSTÖREN VON ZELLEN ERFORDERN");
        assert_eq!(p.meta["application_number"], "02779063.3");
        assert_eq!(p.meta["applicants"], serde_json::json!(["NYMOX CORPORATION"]));
        assert!(p.abstract_text.is_empty(), "B1 grants carry no abstract");
        // Page markers inside paragraphs leave no trace and join the words around them.
        assert!(p.description.contains("thermal or electric ablation"), "{}", &p.description[..200]);
        assert!(!p.description.contains("DP n="));
        // MathML is linearized; the formula image is dropped.
        assert!(p.description.contains("according to V=4/3(D/2)^3."), "maths");
        // Table rows become ` | `-joined lines.
        assert!(p.description.contains("\nAmino Acid | One-Letter Symbol | Three-Letter Symbol\n"));
        // Nested claim-text elements stay in their claim.
        assert_eq!(p.claims.len(), 3);
        assert!(p.claims[0]
            .starts_with("1. An NTP-peptide consisting of an amino acid sequence selected from group consisting of: SEQ ID NO. 9 (Met-"));
        assert_eq!(p.claims[1], "2. An NTP-peptide according to claim 1 for use as a medicament.");
    }

    #[test]
    fn language_choice_by_config() {
        let path = format!("{DIR}/EP2716170B2-v1-5-1.xml");
        // Default: the document's own language (German) for text and claims.
        let p = one_patent(&path, &SourcesConfig::default());
        assert_eq!(p.lang, "de");
        assert_eq!(p.title, "Vorrichtung zum Transport von band- oder streifenförmigem Material");
        assert!(p.claims[0].starts_with("1. Vorrichtung zum Transport"));
        assert_eq!(p.meta["titles"]["en"], "Device for transporting material in the form of strips or tape");
        assert_eq!(p.meta["claims_languages"], serde_json::json!(["de", "en", "fr"]));
        assert!(p.meta.get("claims_lang").is_none());
        // English preferred: the description exists only in German, so the text stays German,
        // but English claims can be asked for.
        let cfg = cfg_with(EpoConfig { languages: vec!["en".into()], claims_languages: vec!["en".into()], ..Default::default() });
        let p = one_patent(&path, &cfg);
        assert_eq!(p.lang, "de");
        assert!(p.claims[0].starts_with("1. Device for conveying band-shaped"), "{}", p.claims[0]);
        assert_eq!(p.meta["claims_lang"], "en");
        // French claims; the title stays in the text language.
        let cfg = cfg_with(EpoConfig { claims_languages: vec!["fr".into()], ..Default::default() });
        let p = one_patent(&path, &cfg);
        assert!(p.claims[1].starts_with("2. Dispositif selon la revendication 1"), "{}", p.claims[1]);
        assert_eq!(p.title, "Vorrichtung zum Transport von band- oder streifenförmigem Material");
        // Only English wanted, others skipped.
        let cfg = cfg_with(EpoConfig { languages: vec!["en".into()], other_languages: OtherLanguages::Skip, ..Default::default() });
        let (_, recs) = read_all(&path, &cfg);
        assert_eq!(recs, [Ok(Record::Skip { reason: "language".into(), id: "EP2716170B2".into() })]);
        let p = one_patent(&format!("{DIR}/EP3782854A1-v1-5.xml"), &cfg);
        assert_eq!(p.lang, "en");
    }

    #[test]
    fn sniffing_is_by_content() {
        let read = |p: &str| std::fs::read(format!("{}/{p}", env!("CARGO_MANIFEST_DIR"))).unwrap();
        for f in ["EP1442058B1-v1-0.xml", "EP4090146A1-v1-5-1-biblio-only.xml", "EP2716170B2-v1-5-1.xml"] {
            assert!(EpoXml.sniff(&read(&format!("{DIR}/{f}"))), "{f}");
        }
        // Without declaration, with a BOM and leading blank lines.
        assert!(EpoXml.sniff(b"\xef\xbb\xbf\n\n<ep-patent-document id=\"x\" lang=\"en\">"));
        assert!(EpoXml.sniff(b"<!DOCTYPE ep-patent-document [ <!ENTITY a SYSTEM \"a.tif\" NDATA TIF> ]>\n<!-- c -->\n<ep-patent-document>"));
        for other in [
            "fixtures/data/uspto/US08930553-grant-v45.xml",
            "fixtures/data/uspto/US06336130-grant-v25-PATDOC.xml",
            "fixtures/data/uspto/ipg130416.small.xml",
            "fixtures/data/epo/EP0600000-fulltext-sample.tsv",
            "fixtures/data/ipc/wipo_ipcr_scheme_20100101_excerpt.xml",
            "fixtures/data/cnipa/coretech_Patent_demo.json",
        ] {
            assert!(!EpoXml.sniff(&read(other)), "{other}");
        }
        assert!(!EpoXml.sniff(b"EP\t0600083\t<ep-patent-document>"));
    }

    #[test]
    fn old_b510_classification() {
        let x = "<ep-patent-document lang=\"en\" doc-number=\"600083\" kind=\"A1\" date-publ=\"19940608\"><SDOBI><B500><B510><B516>5</B516><B511> 5B 65H  29/40</B511><B512> 5B 65H  31/30</B512></B510></B500></SDOBI><abstract><p>x</p></abstract></ep-patent-document>";
        let d = XmlDoc::parse(x).unwrap();
        let Record::Patent(p) = parts_of(d.root()).into_record(&EpoConfig::default()) else { panic!() };
        assert_eq!(p.ipc, ["B65H 29/40", "B65H 31/30"]);
        assert_eq!((p.number.as_str(), p.date.as_str(), p.abstract_text.as_str()), ("EP0600083A1", "1994-06-08", "x"));
    }

    #[test]
    fn block_structure() {
        let x = "<description><heading>H <b>1</b></heading><p>a<br/>b\n<ul><li>one</li><li>two<ul><li>deep</li></ul></li></ul>after</p>\
                 <p><dl><dt>Fig. 1:</dt><dd>a <figref>view</figref>;</dd><dt>Fig. 2</dt><dd>b</dd></dl></p><p>x<figure><img file=\"i.tif\"/></figure> y</p></description>";
        let d = XmlDoc::parse(x).unwrap();
        assert_eq!(block_lines(d.root()), ["H 1", "a", "b", "one", "two", "deep", "after", "Fig. 1: a view;", "Fig. 2 b", "x y"]);
    }

    fn render(path: &str, cfg: &SourcesConfig, claims: bool) -> String {
        let p = one_patent(path, cfg);
        render_patent(&p, &RenderConfig { claims, ..Default::default() }, None).text + "\n"
    }

    #[test]
    fn golden_v1_0_english_grant() {
        golden("epo/EP1442058B1-v1-0.txt", &render(&format!("{DIR}/EP1442058B1-v1-0.xml"), &SourcesConfig::default(), false));
    }

    #[test]
    fn golden_v1_5_1_german_b2_with_claims() {
        golden("epo/EP2716170B2-v1-5-1.claims.txt", &render(&format!("{DIR}/EP2716170B2-v1-5-1.xml"), &SourcesConfig::default(), true));
    }

    /// The whole docs stage over every EPO and CN fixture (and the hand-made Google-Patents
    /// record), strict: zero errors, and the accounting per source.
    #[test]
    fn docs_stage_reads_every_fixture() {
        let out = tempfile::tempdir().unwrap();
        let cfg = crate::config::DocsConfig {
            inputs: vec![
                "fixtures/data/epo".into(),
                "fixtures/data/cnipa".into(),
                "fixtures/handmade/google-patents/CN118524411A.txt".into(),
            ],
            output: out.path().join("docs"),
            rows_per_shard: 1000,
            batch_records: 4,
            strict: true,
            sources: Default::default(),
            render: Default::default(),
            clean: Default::default(),
            writer: Default::default(),
        };
        let scheme = crate::ipc::IpcScheme::load(&Default::default()).unwrap();
        let report = crate::pipeline::docs::run(&cfg, &scheme, Default::default(), true).unwrap();
        assert!(report.unrecognized.is_empty(), "{:?}", report.unrecognized);
        let epo = &report.sources["epo"];
        // 5 XML files (one publication each) + the TSV (3 publications).
        assert_eq!((epo.files, epo.read, epo.kept), (6, 8, 7));
        assert_eq!(epo.filtered, [("biblio-only".to_string(), 1)].into_iter().collect());
        assert!(epo.errors.is_empty());
        let cn = &report.sources["cnipa"];
        // The demo's 10 records + the hand-made Google-Patents file.
        assert_eq!((cn.files, cn.read, cn.kept), (2, 11, 11));
        assert!(cn.errors.is_empty() && cn.filtered.is_empty());
        assert_eq!(report.sources.len(), 2, "{:?}", report.sources.keys());
    }

    /// Each of the four formats of this helper claims exactly its own files among every fixture
    /// of the repository (first 64 KiB, as the pipeline sniffs), and no other format's.
    #[test]
    fn sniff_matrix_over_all_fixtures() {
        use crate::sources::{cnipa::CoretechPatents, epo_tsv::EpoTsv, google_patents::GooglePatents, SNIFF_BYTES};
        let mine: [&dyn Format; 4] = [&EpoXml, &EpoTsv, &CoretechPatents, &GooglePatents];
        let mut files = Vec::new();
        let mut stack = vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    files.push(p);
                }
            }
        }
        files.sort();
        assert!(files.len() > 30);
        for f in &files {
            let rel = f.strip_prefix(env!("CARGO_MANIFEST_DIR")).unwrap().to_string_lossy().to_string();
            let name = f.file_name().unwrap().to_string_lossy().to_string();
            let expected = if rel.starts_with("fixtures/golden/") {
                None // rendered text, not an input
            } else if name.starts_with("EP") && name.ends_with(".xml") || name.starts_with("epo-") && name.ends_with(".xml") {
                Some("epo-xml")
            } else if name.ends_with(".tsv") {
                Some("epo-tsv")
            } else if name == "coretech_Patent_demo.json" || name.starts_with("cnipa-") {
                Some("coretech-patents")
            } else if rel.starts_with("fixtures/handmade/google-patents/") && name.ends_with(".txt") || name.starts_with("google-") {
                Some("google-patents")
            } else {
                None
            };
            let bytes = std::fs::read(f).unwrap();
            let head = &bytes[..bytes.len().min(SNIFF_BYTES)];
            let claimed: Vec<&str> = mine.iter().filter(|fmt| fmt.sniff(head)).map(|fmt| fmt.name()).collect();
            assert_eq!(claimed, expected.into_iter().collect::<Vec<_>>(), "{rel}");
            // The registry's first match is the same format.
            if let Some(e) = expected {
                assert_eq!(crate::sources::sniff(head).map(|f| f.name()), Some(e), "{rel}");
            }
        }
    }

    /// Cut anywhere before its end, an EP document is an error (never a panic, never a document).
    #[test]
    fn truncated_documents_are_errors() {
        let bytes = std::fs::read(format!("{}/{DIR}/EP1873405A2-v1-2.xml", env!("CARGO_MANIFEST_DIR"))).unwrap();
        let end = bytes.iter().rposition(|&c| c == b'>').unwrap();
        let cfg = SourcesConfig::default();
        for cut in (0..end).step_by(37) {
            let raw = RawRecord { file: "t.xml".into(), index: 0, offset: 0, line: 1, bytes: bytes[..cut].to_vec() };
            let e = EpoXml.parse(&raw, &ParseContext { cfg: &cfg }).unwrap_err();
            assert!(matches!(e.kind.as_str(), "xml" | "encoding"), "cut {cut}: {e}");
            assert!(e.position.offset.unwrap() <= cut as u64, "cut {cut}: {e}");
        }
    }

    fn bad(name: &str) -> ReadError {
        let (fmt, recs) = read_all(&format!("fixtures/bad/{name}"), &SourcesConfig::default());
        assert_eq!(fmt, Some("epo-xml"), "{name}");
        assert_eq!(recs.len(), 1);
        recs.into_iter().next().unwrap().unwrap_err()
    }

    #[test]
    fn unclosed_tag_is_an_xml_error_with_position() {
        let e = bad("epo-unclosed-tag.xml");
        assert_eq!(e.kind, "xml");
        assert!(e.position.file.ends_with("fixtures/bad/epo-unclosed-tag.xml"), "{e}");
        // The `</description>` that closes while `<p>` is still open.
        let text = std::fs::read_to_string(format!("{}/fixtures/bad/epo-unclosed-tag.xml", env!("CARGO_MANIFEST_DIR"))).unwrap();
        assert_eq!(e.position.offset, Some(text.find("</description>").unwrap() as u64), "{e}");
        assert!(e.message.contains("description"), "{e}");
    }

    #[test]
    fn undefined_entity_is_an_xml_error_with_position() {
        let e = bad("epo-undefined-entity.xml");
        assert_eq!(e.kind, "xml");
        let text = std::fs::read_to_string(format!("{}/fixtures/bad/epo-undefined-entity.xml", env!("CARGO_MANIFEST_DIR"))).unwrap();
        assert_eq!(e.position.offset, Some(text.find("&bogus;").unwrap() as u64), "{e}");
        assert!(e.message.contains("undefined entity &bogus;"), "{e}");
    }
}
