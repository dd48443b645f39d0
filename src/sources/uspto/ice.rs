//! USPTO ICE XML v4.x grants and applications (`us-patent-grant`, `us-patent-application`),
//! including weekly bulk files of concatenated documents (non-patent documents such as
//! `sequence-cwu` are skipped and counted).
//!
//! # Text
//! - Title: `invention-title`, whitespace collapsed.
//! - Abstract and description: one line per heading, paragraph (`p`), list item and table row;
//!   inline markup (`b`, `i`, `sub`, `sup`, `figref`, `claim-ref`, …) is flattened to its text,
//!   so figure references stay as written (`FIG. 1 is …`) and sub/superscripts join their base
//!   (`V<sub>out</sub>` → `Vout`, also footnote marks: `coli<sup>a</sup>` → `colia`). `br`
//!   ends a line. Whitespace runs collapse to one space; words the source glued stay glued.
//! - Tables (CALS `table`): one line per row, the row's non-empty cells joined by ` | `.
//! - Maths (MathML `math`): linearized inline by [`crate::sources::mathml`]. Formulas,
//!   chemistry and figures that exist only as images are dropped.
//! - Claims: one string per `claim`, nested `claim-text` flattened and joined with spaces; the
//!   number is the one the text carries (`1. A system …`), none is added.
//!
//! # Meta
//! `format`, `kind`, `dtd_version`, `source_file`, `application_number`, `application_date`,
//! `application_type`, `cpc` (normalized like IPC), `us_class`, `locarno` (design patents, which
//! have no IPC), `claim_statement`, and `ipc_invalid` for classification codes that do not
//! parse (kept there as `raw: reason`, never a panic).

use crate::doc::Record;
use crate::error::{ReadError, ReadErrorKind};
use crate::io::sniff::xml_root_name;
use crate::io::xml::El;
use crate::io::RawRecord;
use crate::ipc::symbol::normalize;
use crate::sources::layout::{flow, Layout, TextLines};
use crate::sources::{Format, Framing, ParseContext};

use super::{child_text, iso_date, new_patent, parse_xml_record, put, put_list, set_date, set_ipc, us_number};

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

pub(super) fn ice_patent(raw: &RawRecord, root: El<'_>) -> Result<Record, ReadError> {
    let grant = root.name() == "us-patent-grant";
    let biblio_name = if grant { "us-bibliographic-data-grant" } else { "us-bibliographic-data-application" };
    let biblio = root
        .child(biblio_name)
        .ok_or_else(|| raw.error(ReadErrorKind::MissingField, format!("<{}> has no <{biblio_name}>", root.name())))?;
    let pubid = biblio.path("publication-reference/document-id");
    let (country, doc, kind) =
        pubid.map(|d| (child_text(d, "country"), child_text(d, "doc-number"), child_text(d, "kind"))).unwrap_or_default();
    let number = us_number(&country, &doc, &kind).ok_or_else(|| {
        raw.error(
            ReadErrorKind::MissingField,
            format!("<{}> has no publication number (publication-reference/document-id/doc-number)", root.name()),
        )
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
    fn missing_number_is_a_missing_field_error_at_the_record() {
        let e = parse("<us-patent-grant><us-bibliographic-data-grant><invention-title>T</invention-title></us-bibliographic-data-grant></us-patent-grant>").unwrap_err();
        assert_eq!((e.kind.as_str(), e.position.offset), ("missing-field", Some(1000)));
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
