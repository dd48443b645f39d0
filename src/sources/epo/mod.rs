//! EPO readers: `ep-patent-document` XML ([`xml`], DTD v1.0–v1.5.1) and the full-text TSV
//! ([`tsv`]), and what they share: the text extraction (both carry the same inline markup), the
//! publication number and date, and the language choice (by config; bibliography-only
//! publications are counted as filtered, not errors).

pub mod tsv;
pub mod xml;

use serde::{Deserialize, Serialize};

use crate::doc::{Meta, Patent, Record};
use crate::io::xml::El;
use crate::sources::layout::{Layout, TextLines};

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

/// `EP` + the 7-digit publication number + kind (`EP0600083A1`), as the EPO writes it.
pub(crate) fn ep_number(num: &str, kind: &str) -> String {
    let num = num.trim();
    let num = num.strip_prefix("EP").unwrap_or(num);
    format!("EP{num:0>7}{}", kind.trim())
}

/// `20060719` → `2006-07-19`.
pub(crate) fn dashed(d: &str) -> String {
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
// Text extraction, shared by the XML and TSV readers.

/// The EPO rule for block-structured content (`description`, `abstract`): one line per heading,
/// paragraph, list item, definition (term and definition on one line), table row (cells joined
/// by ` | `) and `<br/>`; preformatted text keeps its lines. Figures and images are dropped;
/// MathML is linearized. (Page markers `<!-- EPO <DP n="1"> -->` are comments, which the XML
/// tree drops.)
fn block_layout(name: &str, _parent: &str) -> Layout {
    match name {
        "p" | "heading" | "ul" | "ol" | "li" | "dl" | "tables" | "table" | "tgroup" | "thead" | "tbody" | "title" => Layout::Block,
        "pre" => Layout::Pre,
        "dt" => Layout::Term,
        "dd" => Layout::Definition,
        "row" => Layout::Row,
        "br" => Layout::Break,
        "maths" | "math" => Layout::Math,
        "figure" | "img" | "colspec" | "spanspec" | "doc-page" => Layout::Skip,
        _ => Layout::Inline, // b, i, u, sup, sub, patcit, figref, crossref, …
    }
}

/// The EPO rule for one-line text (titles, claims, table cells): nested blocks and `<br/>`
/// become spaces, images are dropped, MathML is linearized.
fn inline_layout(name: &str, _parent: &str) -> Layout {
    match name {
        "br" => Layout::Space,
        "figure" | "img" | "colspec" | "spanspec" | "doc-page" => Layout::Skip,
        "maths" | "math" => Layout::Math,
        "claim-text" | "p" | "heading" | "li" | "dt" | "dd" | "row" | "entry" | "title" => Layout::Spaced,
        _ => Layout::Inline,
    }
}

/// The text of block-structured EP content (`description`, `abstract`) as lines.
pub(crate) fn block_lines(el: El<'_>) -> Vec<String> {
    let mut t = TextLines::with_cells(block_layout, inline_layout);
    t.walk(el);
    t.finish()
}

/// All text of an element on one line (see [`inline_layout`]).
pub(crate) fn inline_text(el: El<'_>) -> String {
    TextLines::one_line(el, inline_layout)
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

// ---------------------------------------------------------------------------------------------
// Language choice and assembly, shared by the XML and TSV readers.

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
    use crate::io::framing::frame;
    use crate::io::input::for_each_stream;
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
            let crate::io::input::InputStream { name: sname, mut reader } = stream;
            let mut head = Vec::new();
            (&mut reader).take(crate::io::SNIFF_BYTES as u64).read_to_end(&mut head).unwrap();
            let Some(f) = sniff(&head) else { return Ok(()) };
            name = Some(f.name());
            let reader = Box::new(std::io::Cursor::new(head).chain(reader));
            let f: &dyn Format = f;
            frame(f.framing(), crate::io::input::InputStream { name: sname, reader }, cfg.max_record_bytes, &mut |raw| {
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
