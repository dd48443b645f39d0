//! EPO `ep-patent-document` XML, DTD v1.0–v1.5.1 (language by config; bibliography-only
//! publications are counted as filtered, not errors). Text extraction and the language choice
//! are shared with the full-text TSV reader (see [`super`]).

use crate::doc::Record;
use crate::error::{ReadError, ReadErrorKind};
use crate::io::sniff::xml_root_name;
use crate::io::text::decode;
use crate::io::xml::{collapse_ws, El, XmlDoc};
use crate::io::RawRecord;
use crate::ipc::normalize;
use crate::sources::{Format, Framing, ParseContext};

use super::{block_lines, claim_texts, dashed, ep_number, inline_text, iso_date, EpParts};

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
        xml_root_name(head) == Some(ROOT.as_bytes())
    }
    fn framing(&self) -> Framing {
        Framing::XmlDocuments
    }
    fn parse(&self, raw: &RawRecord, cx: &ParseContext<'_>) -> Result<Record, ReadError> {
        let text = decode(raw, &raw.bytes, 0, cx.cfg.encoding)?;
        let doc = XmlDoc::parse_with(&text, cx.cfg.xml_limits()).map_err(|e| e.in_decoded(raw, &text))?;
        let root = doc.root();
        if root.name() != ROOT {
            return Err(raw.error(ReadErrorKind::Shape, format!("root element is <{}>, expected <{ROOT}>", root.name())));
        }
        Ok(parts_of(root).into_record(&cx.cfg.epo))
    }
}

const ROOT: &str = "ep-patent-document";

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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::test_support::*;
    use super::super::{EpoConfig, OtherLanguages};
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
        // (One MathML rendering for every office: tokens set off by spaces, see `sources::mathml`.)
        assert!(p.description.contains("according to V = 4/3 (D/2)^3."), "maths");
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
            policies: Default::default(),
            policy_by_source: Default::default(),
            policy_by_input: Default::default(),
            writer: Default::default(),
            rejects: true,
            rejects_dir: None,
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
        // The demo's 10 records + the hand-made Google-Patents file, which is the demo's
        // CN118524411A again with the same text: a `same-text` id collision, counted (dedup's
        // exact step removes the copy).
        assert_eq!((cn.files, cn.read, cn.kept), (2, 11, 11));
        assert_eq!(cn.id_collisions, [("same-text".to_string(), 1)].into_iter().collect());
        assert!(cn.errors.is_empty() && cn.filtered.is_empty() && cn.duplicates.is_empty());
        assert_eq!(report.sources.len(), 2, "{:?}", report.sources.keys());
    }

    /// Each of the four formats of this helper claims exactly its own files among every fixture
    /// of the repository (first 64 KiB, as the pipeline sniffs), and no other format's.
    #[test]
    fn sniff_matrix_over_all_fixtures() {
        use crate::io::SNIFF_BYTES;
        use crate::sources::{cnipa::CoretechPatents, epo::tsv::EpoTsv, google_patents::GooglePatents};
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
