//! USPTO 2002–2004 grants in ST.32 PATDOC v2.5 (numeric SGML-style tags; text inside `PDAT`).
//!
//! Number: `US` + `SDOBI/B100/B110/DNUM` without leading zeros (`06336130` → `6336130`) +
//! `B130` kind → `US6336130B1`; date `B140`. IPC from `B511` (main) and `B512` (further), written
//! fixed-width (`G06F 1516` → `G06F 15/16`); the IPC edition (`B516`), US classes (`B521`,
//! `B522`) and the application (`B210`, `B220`) go to meta. Title `B540`, abstract `SDOAB`,
//! description `SDODE` (`RELAPP`, `BRFSUM`, `DRWDESC`, `DETDESC`), claims `SDOCL/CL/CLM`; the
//! drawings (`SDODR`) are images only.
//!
//! Text follows the ICE rules (see [`super::ice`]): `H` headings and `PARA` paragraphs
//! one per line, `CLMSTEP` claim steps joined into their claim, inline markup (`HIL`, `BOLD`,
//! `SB`, `SP`, `FGREF`, `CLREF`, …) flattened, images (`EMI`, `CUSTOM-CHARACTER`) dropped.

use crate::doc::Record;
use crate::error::{ReadError, ReadErrorKind};

use crate::io::sniff::xml_root_name;
use crate::io::xml::El;
use crate::io::RawRecord;
use crate::sources::layout::{flow, Layout, TextLines};
use crate::sources::{Format, Framing, ParseContext};

use super::{doctype_system, iso_date, new_patent, parse_xml_record, path_text, put, put_list, set_date, set_ipc, us_number};

/// USPTO 2002–2004 grants in ST.32 PATDOC v2.5 (numeric SGML-style tags).
pub struct UsptoPatdoc;

impl Format for UsptoPatdoc {
    fn name(&self) -> &'static str {
        "uspto-patdoc"
    }
    fn source(&self) -> &'static str {
        "uspto"
    }
    /// The root element (DOCTYPE name or first tag) is `PATDOC`.
    fn sniff(&self, head: &[u8]) -> bool {
        xml_root_name(head) == Some(b"PATDOC")
    }
    fn framing(&self) -> Framing {
        Framing::XmlDocuments
    }
    fn parse(&self, raw: &RawRecord, cx: &ParseContext<'_>) -> Result<Record, ReadError> {
        parse_xml_record(raw, cx)
    }
}

fn patdoc_layout(name: &str, _parent: &str) -> Layout {
    match name {
        "PARA" | "H" | "CLMSTEP" => Layout::Block,
        "BR" => Layout::Break,
        "TABLE" | "table" => Layout::Table,
        "MATH" | "math" => Layout::Math,
        "EMI" | "CUSTOM-CHARACTER" | "SDODR" => Layout::Skip,
        _ => Layout::Inline,
    }
}

/// Reads a parsed `PATDOC` document (`text` is its source, for the DOCTYPE).
pub(super) fn patdoc_patent(raw: &RawRecord, root: El<'_>, text: &str) -> Result<Record, ReadError> {
    let bi = root.child("SDOBI").ok_or_else(|| raw.error(ReadErrorKind::MissingField, "<PATDOC> has no <SDOBI> (bibliographic data)"))?;
    let doc = path_text(bi, "B100/B110/DNUM");
    let kind = path_text(bi, "B100/B130");
    let number = us_number(&path_text(bi, "B100/B190"), &doc, &kind)
        .ok_or_else(|| raw.error(ReadErrorKind::MissingField, "<PATDOC> has no publication number (SDOBI/B100/B110/DNUM)"))?;

    let mut p = new_patent("uspto-patdoc");
    p.number = number;
    set_date(&mut p, &path_text(bi, "B100/B140/DATE"));
    p.title = path_text(bi, "B500/B540");
    let ipc: Vec<String> = bi
        .path("B500/B510")
        .map(|b| b.children().filter(|e| e.name() == "B511" || e.name() == "B512").map(|e| e.raw_text()).collect())
        .unwrap_or_default();
    set_ipc(&mut p, ipc.iter().map(String::as_str));

    let m = &mut p.meta;
    put(m, "kind", &kind);
    let dtd = [root.attr("DTD").unwrap_or_default(), doctype_system(text).unwrap_or_default()]
        .iter()
        .filter(|s| !s.is_empty())
        .cloned()
        .collect::<Vec<_>>()
        .join(" ");
    put(m, "dtd_version", &dtd);
    put(m, "application_number", &path_text(bi, "B200/B210/DNUM"));
    put(m, "application_date", &iso_date(&path_text(bi, "B200/B220/DATE")).unwrap_or_default());
    put(m, "ipc_edition", &path_text(bi, "B500/B510/B516"));
    let us: Vec<String> = bi
        .path("B500/B520")
        .map(|b| b.children().filter(|e| e.name() == "B521" || e.name() == "B522").map(|e| e.text()).filter(|s| !s.is_empty()).collect())
        .unwrap_or_default();
    put_list(m, "us_class", us);

    if let Some(a) = root.child("SDOAB") {
        p.abstract_text = TextLines::of(a, patdoc_layout).join("\n");
    }
    if let Some(d) = root.child("SDODE") {
        p.description = TextLines::of(d, patdoc_layout).join("\n");
    }
    if let Some(cl) = root.child("SDOCL") {
        put(&mut p.meta, "claim_statement", &path_text(cl, "H"));
        p.claims = cl.descendants("CLM").into_iter().map(|c| flow(&TextLines::of(c, patdoc_layout))).filter(|s| !s.is_empty()).collect();
    }
    Ok(Record::Patent(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffs_only_patdoc() {
        assert!(UsptoPatdoc.sniff(
            b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<!DOCTYPE PATDOC SYSTEM \"ST32-US-Grant-025xml.dtd\" [\n]>\n<PATDOC DTD=\"2.5\">"
        ));
        assert!(!UsptoPatdoc.sniff(b"<?xml version=\"1.0\"?>\n<!DOCTYPE patent-application-publication SYSTEM \"p.dtd\">"));
        assert!(!UsptoPatdoc.sniff(b"[{\"content\": \"x\"}]"));
    }

    #[test]
    fn claims_join_steps_and_keep_references() {
        let xml = "<PATDOC DTD=\"2.5\"><SDOBI><B100><B110><DNUM><PDAT>06336130</PDAT></DNUM></B110><B130><PDAT>B1</PDAT></B130><B140><DATE><PDAT>20020101</PDAT></DATE></B140></B100>\
<B500><B510><B511><PDAT>G06F 1516</PDAT></B511><B512><PDAT>G06F 1300</PDAT></B512></B510></B500></SDOBI>\
<SDOCL><H LVL=\"1\"><STEXT><PDAT>What is claimed is: </PDAT></STEXT></H><CL><CLM ID=\"CLM-00001\"><PARA ID=\"P-1\"><PTEXT><PDAT>1. An arrangement comprising:</PDAT></PTEXT></PARA>\
<CLMSTEP LVL=\"2\"><PTEXT><PDAT>a node, and </PDAT></PTEXT></CLMSTEP></CLM><CLM ID=\"CLM-00002\"><PARA><PTEXT><PDAT>2. The arrangement in </PDAT><CLREF ID=\"CLM-00001\"><PDAT>claim 1</PDAT></CLREF><PDAT>, wherein.</PDAT></PTEXT></PARA></CLM></CL></SDOCL></PATDOC>";
        let cfg = crate::sources::SourcesConfig::default();
        let raw = RawRecord { file: "p.xml".into(), index: 0, offset: 0, line: 1, bytes: xml.as_bytes().to_vec() };
        let Record::Patent(p) = UsptoPatdoc.parse(&raw, &ParseContext { cfg: &cfg }).unwrap() else { panic!() };
        assert_eq!(p.number, "US6336130B1");
        assert_eq!(p.date, "2002-01-01");
        assert_eq!(p.ipc, ["G06F 15/16", "G06F 13/00"]);
        assert_eq!(p.claims, ["1. An arrangement comprising: a node, and", "2. The arrangement in claim 1, wherein."]);
        assert_eq!(p.meta["claim_statement"], "What is claimed is:");
    }
}
