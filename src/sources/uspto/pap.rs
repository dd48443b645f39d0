//! USPTO pre-2005 application publications (pap v1.5, `patent-application-publication`).
//!
//! Number: `US` + `document-id/doc-number` (`20010000943`) + `kind-code` (`A1`) →
//! `US20010000943A1`; date from `document-date`. IPC from `classification-ipc`
//! (`H01J001/62` style), US classes and the IPC edition go to meta. The internal DTD subset
//! (`<!ENTITY … NDATA TIF>` image declarations) is skipped by the XML tree.
//!
//! Text follows the ICE rules (see [`super::ice`]); specific to pap: the paragraph and
//! table numbers (`<number>1.</number>`) are dropped, `in-line-formula` stays inline, a
//! `claim-text` inside `dependent-claim-reference` is inline.

use crate::doc::Record;
use crate::error::{ReadError, ReadErrorKind};

use crate::io::sniff::xml_root_name;
use crate::io::xml::El;
use crate::io::RawRecord;
use crate::sources::layout::{flow, Layout, TextLines};
use crate::sources::{Format, Framing, ParseContext};

use super::{child_text, doctype_system, iso_date, new_patent, parse_xml_record, path_text, put, put_list, set_date, set_ipc, us_number};

/// USPTO pre-2005 application publications (pap v1.5, `patent-application-publication`).
pub struct UsptoPap;

impl Format for UsptoPap {
    fn name(&self) -> &'static str {
        "uspto-pap"
    }
    fn source(&self) -> &'static str {
        "uspto"
    }
    /// The root element (DOCTYPE name or first tag) is `patent-application-publication`.
    fn sniff(&self, head: &[u8]) -> bool {
        xml_root_name(head) == Some(b"patent-application-publication")
    }
    fn framing(&self) -> Framing {
        Framing::XmlDocuments
    }
    fn parse(&self, raw: &RawRecord, cx: &ParseContext<'_>) -> Result<Record, ReadError> {
        parse_xml_record(raw, cx)
    }
}

fn pap_layout(name: &str, parent: &str) -> Layout {
    match name {
        "paragraph" | "heading" | "section" | "li" => Layout::Block,
        "claim-text" if parent == "claim" || parent == "claim-text" => Layout::Block,
        "br" => Layout::Break,
        "table" => Layout::Table,
        "math" => Layout::Math,
        "number" | "figure" | "image" | "representative-figure" | "emi" => Layout::Skip,
        _ => Layout::Inline,
    }
}

/// Reads a parsed `patent-application-publication` document (`text` is its source, for the
/// DOCTYPE).
pub(super) fn pap_patent(raw: &RawRecord, root: El<'_>, text: &str) -> Result<Record, ReadError> {
    let bib = root.child("subdoc-bibliographic-information").ok_or_else(|| {
        raw.error(ReadErrorKind::MissingField, "<patent-application-publication> has no <subdoc-bibliographic-information>")
    })?;
    let id = bib.child("document-id");
    let (doc, kind) = id.map(|d| (child_text(d, "doc-number"), child_text(d, "kind-code"))).unwrap_or_default();
    let country = id.map(|d| child_text(d, "country-code")).unwrap_or_default();
    let number = us_number(&country, &doc, &kind).ok_or_else(|| {
        raw.error(
            ReadErrorKind::MissingField,
            "<patent-application-publication> has no publication number (subdoc-bibliographic-information/document-id/doc-number)",
        )
    })?;

    let mut p = new_patent("uspto-pap");
    p.number = number;
    set_date(&mut p, &id.map(|d| child_text(d, "document-date")).unwrap_or_default());
    let tech = bib.child("technical-information");
    p.title = tech.map(|t| child_text(t, "title-of-invention")).unwrap_or_default();
    let ipc: Vec<String> = tech
        .and_then(|t| t.child("classification-ipc"))
        .map(|c| {
            c.children()
                .filter(|e| e.name() == "classification-ipc-primary" || e.name() == "classification-ipc-secondary")
                .flat_map(|e| e.children_named("ipc").map(|i| i.raw_text()).collect::<Vec<_>>())
                .collect()
        })
        .unwrap_or_default();
    set_ipc(&mut p, ipc.iter().map(String::as_str));

    let m = &mut p.meta;
    put(m, "kind", &kind);
    put(m, "dtd_version", doctype_system(text).unwrap_or_default());
    put(m, "publication_filing_type", &child_text(bib, "publication-filing-type"));
    if let Some(dom) = bib.child("domestic-filing-data") {
        put(m, "application_number", &path_text(dom, "application-number/doc-number"));
        put(m, "application_date", &iso_date(&child_text(dom, "filing-date")).unwrap_or_default());
    }
    if let Some(t) = tech {
        put(m, "ipc_edition", &path_text(t, "classification-ipc/classification-ipc-edition"));
        let us: Vec<String> = t
            .child("classification-us")
            .map(|c| {
                c.descendants("uspc").into_iter().map(|u| format!("{}/{}", child_text(u, "class"), child_text(u, "subclass"))).collect()
            })
            .unwrap_or_default();
        put_list(m, "us_class", us);
    }

    if let Some(a) = root.child("subdoc-abstract") {
        p.abstract_text = TextLines::of(a, pap_layout).join("\n");
    }
    if let Some(d) = root.child("subdoc-description") {
        p.description = TextLines::of(d, pap_layout).join("\n");
    }
    if let Some(cl) = root.child("subdoc-claims") {
        put(&mut p.meta, "claim_statement", &child_text(cl, "heading"));
        p.claims = cl.children_named("claim").map(|c| flow(&TextLines::of(c, pap_layout))).filter(|s| !s.is_empty()).collect();
    }
    Ok(Record::Patent(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffs_only_pap() {
        assert!(UsptoPap.sniff(b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<!DOCTYPE patent-application-publication SYSTEM \"pap-v15-2001-01-31.dtd\" [\n<!ENTITY x SYSTEM \"x.TIF\" NDATA TIF>\n]>\n"));
        assert!(!UsptoPap.sniff(b"<?xml version=\"1.0\"?>\n<!DOCTYPE us-patent-grant SYSTEM \"g.dtd\" [ ]>"));
        assert!(!UsptoPap.sniff(b"PATN\nWKU  039373754\n"));
    }

    #[test]
    fn claim_references_stay_inline() {
        let xml = "<patent-application-publication><subdoc-bibliographic-information><document-id><doc-number>20010000943</doc-number><kind-code>A1</kind-code><document-date>20010510</document-date></document-id></subdoc-bibliographic-information>\
<subdoc-claims><heading>What is claimed is: </heading><claim><claim-text><highlight><bold>2</bold></highlight>. The device according to <dependent-claim-reference depends_on=\"CLM-00001\"><claim-text>claim 1</claim-text></dependent-claim-reference>, wherein x. </claim-text></claim></subdoc-claims>\
<subdoc-description><paragraph><number>1.</number> Text &ldquo;q&rdquo; &minus;20 nm.</paragraph></subdoc-description></patent-application-publication>";
        let cfg = crate::sources::SourcesConfig::default();
        let raw = RawRecord { file: "p.xml".into(), index: 0, offset: 0, line: 1, bytes: xml.as_bytes().to_vec() };
        let Record::Patent(p) = UsptoPap.parse(&raw, &ParseContext { cfg: &cfg }).unwrap() else { panic!() };
        assert_eq!(p.number, "US20010000943A1");
        assert_eq!(p.date, "2001-05-10");
        assert_eq!(p.claims, ["2. The device according to claim 1, wherein x."]);
        assert_eq!(p.description, "Text \u{201c}q\u{201d} \u{2212}20 nm.");
        assert_eq!(p.meta["claim_statement"], "What is claimed is:");
    }
}
