//! EPO "full-text data for text analytics" TSV: the lines of one publication grouped into one record.
//!
//! Each line holds 7 tab-separated fields: `EP`, the 7-digit publication number, kind, date
//! (`YYYY-MM-DD`), language, part type and the text with inline XML (`<p id= num=>`,
//! `<heading>`, `<claim><claim-text>`). A publication spans one line per (language, part); its
//! lines are consecutive and grouped by number + kind. The text of every part is parsed as an XML
//! fragment with the shared tree (predefined and numeric entities only), so markup, comments
//! (page markers) and entities are handled as in the XML reader.
//!
//! Parts: `TITLE`, `ABSTR`, `DESCR`, `CLAIM` make the patent (language chosen by `EpoConfig`);
//! `PDFEP` is a link to the PDF, kept in `meta.pdf_url`; `AMEND` (amended claims), `ACSTM` and
//! `SREPT` (search report) are not part of the publication's own text: they are left out of the
//! text and listed in `meta.other_parts` (`"SREPT:en"`). Any other part type is an error.

use crate::doc::Record;
use crate::error::{ReadError, ReadErrorKind};

use crate::io::framing::GroupFn;
use crate::io::sniff;
use crate::io::text::{decode, record_offset};
use crate::io::xml::{El, XmlDoc, XmlLimits};
use crate::io::RawRecord;
use crate::sources::{Format, Framing, ParseContext};

use super::{block_lines, claim_texts, ep_number, inline_text, iso_date, EpParts};

/// EPO "full-text data for text analytics" TSV: the lines of one publication grouped into one record.
pub struct EpoTsv;

/// Number of tab-separated fields of a line.
const FIELDS: usize = 7;

/// The part types of the format.
const PARTS: [&str; 8] = ["TITLE", "ABSTR", "DESCR", "CLAIM", "PDFEP", "AMEND", "ACSTM", "SREPT"];

impl Format for EpoTsv {
    fn name(&self) -> &'static str {
        "epo-tsv"
    }
    fn source(&self) -> &'static str {
        "epo"
    }
    fn sniff(&self, head: &[u8]) -> bool {
        let line = sniff::first_line(head);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let f: Vec<&[u8]> = line.splitn(FIELDS, |&c| c == b'\t').collect();
        f.len() == FIELDS
            && f[0] == b"EP"
            && !f[1].is_empty()
            && f[1].len() <= 7
            && f[1].iter().all(u8::is_ascii_digit)
            && !f[2].is_empty()
            && f[2].len() <= 3
            && f[2].iter().all(u8::is_ascii_alphanumeric)
            && is_date(f[3])
            && f[4].len() == 2
            && f[4].iter().all(u8::is_ascii_lowercase)
            && PARTS.iter().any(|p| p.as_bytes() == f[5])
    }
    fn framing(&self) -> Framing {
        Framing::LineGroups(NEW_PUBLICATION)
    }
    fn parse(&self, raw: &RawRecord, cx: &ParseContext<'_>) -> Result<Record, ReadError> {
        let text = decode(raw, &raw.bytes, 0, cx.cfg.encoding)?;
        let mut p = EpParts::default();
        let mut key: Option<(String, String, String)> = None;
        let mut other_parts: Vec<serde_json::Value> = Vec::new();
        // Offsets below are in `text`; a GB18030-decoded record is longer than its bytes, so
        // every error position is mapped back to the record's bytes (found by the fuzz harness:
        // errors pointed past the end of the record).
        let at = |i: usize| record_offset(&raw.bytes, &text, i as u64);
        let mut off = 0usize;
        for line in text.split_inclusive('\n') {
            let start = off;
            off += line.len();
            let l = line.trim_end_matches(['\n', '\r']);
            if l.trim().is_empty() {
                continue;
            }
            let f: Vec<&str> = l.splitn(FIELDS, '\t').collect();
            if f.len() < FIELDS {
                return Err(raw.error_at(
                    at(start),
                    ReadErrorKind::Tsv,
                    format!("expected {FIELDS} tab-separated fields (EP, number, kind, date, language, part, text), found {}", f.len()),
                ));
            }
            if f[0] != "EP" {
                return Err(raw.error_at(at(start), ReadErrorKind::Tsv, format!("first field is {:?}, expected \"EP\"", f[0])));
            }
            let this = (f[1].to_string(), f[2].to_string(), f[3].to_string());
            match &key {
                None => key = Some(this),
                Some(k) if (&k.0, &k.1) != (&this.0, &this.1) => {
                    return Err(raw.error_at(
                        at(start),
                        ReadErrorKind::Tsv,
                        format!("line of EP{}{} inside the lines of EP{}{}", this.0, this.1, k.0, k.1),
                    ));
                }
                Some(_) => {}
            }
            let lang = f[4].to_string();
            let body = f[6];
            let body_at = start + l.len() - body.len();
            let frag = |what: &str| {
                parse_fragment(raw, &text, body, body_at, cx).map_err(|mut e| {
                    e.message = format!("{what} ({lang}): {}", e.message);
                    e
                })
            };
            match f[5] {
                "TITLE" => {
                    let d = frag("title")?;
                    p.titles.push((lang, inline_text(d.root())));
                }
                "ABSTR" => {
                    let d = frag("abstract")?;
                    p.abstracts.push((lang, block_lines(d.root()).join("\n")));
                }
                "DESCR" => {
                    let d = frag("description")?;
                    p.descriptions.push((lang, block_lines(d.root()).join("\n")));
                }
                "CLAIM" => {
                    let d = frag("claims")?;
                    p.claims.push((lang, claims_of(d.root())));
                }
                "PDFEP" => {
                    p.meta.insert("pdf_url".into(), body.trim().into());
                }
                "AMEND" | "ACSTM" | "SREPT" => other_parts.push(format!("{}:{lang}", f[5]).into()),
                other => {
                    let part_at = start + f[..5].iter().map(|s| s.len() + 1).sum::<usize>();
                    return Err(raw.error_at(
                        at(part_at),
                        ReadErrorKind::Tsv,
                        format!("unknown part type {other:?} (expected one of {})", PARTS.join(", ")),
                    ));
                }
            }
        }
        let Some((num, kind, date)) = key else {
            return Err(raw.error(ReadErrorKind::Tsv, "record holds no lines"));
        };
        p.number = ep_number(&num, &kind);
        p.kind = kind;
        p.date = iso_date(&date, &mut p.meta);
        p.own_lang = [&p.descriptions, &p.abstracts]
            .into_iter()
            .flat_map(|v| v.iter().map(|(l, _)| l.clone()))
            .chain(p.claims.iter().map(|(l, _)| l.clone()))
            .chain(p.titles.iter().map(|(l, _)| l.clone()))
            .next()
            .unwrap_or_default();
        if !other_parts.is_empty() {
            p.meta.insert("other_parts".into(), other_parts.into());
        }
        Ok(p.into_record(&cx.cfg.epo))
    }
}

/// Starts a new record where the publication (number + kind) changes.
const NEW_PUBLICATION: GroupFn = |first, line| publication_key(first) != publication_key(line);

/// The first three fields (`EP`, number, kind) of a line.
fn publication_key(line: &[u8]) -> &[u8] {
    let mut tabs = 0;
    for (i, &c) in line.iter().enumerate() {
        if c == b'\t' {
            tabs += 1;
            if tabs == 3 {
                return &line[..i];
            }
        }
    }
    line
}

fn is_date(b: &[u8]) -> bool {
    b.len() == 10 && b[4] == b'-' && b[7] == b'-' && b.iter().enumerate().all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit())
}

/// Parses the text field `body` (at byte `at` of `text`, the decoded record) as an XML fragment.
#[allow(clippy::ptr_arg)] // borrowed or owned says how offsets map back (record_offset)
fn parse_fragment(
    raw: &RawRecord,
    text: &std::borrow::Cow<'_, str>,
    body: &str,
    at: usize,
    cx: &ParseContext<'_>,
) -> Result<XmlDoc, ReadError> {
    const OPEN: &str = "<r>";
    let wrapped = format!("{OPEN}{body}</r>");
    // The wrapper is one more level.
    let limits = XmlLimits { max_depth: cx.cfg.max_xml_depth.saturating_add(1) };
    XmlDoc::parse_with(&wrapped, limits).map_err(|mut e| {
        e.offset = ((e.offset as usize).saturating_sub(OPEN.len()).min(body.len()) + at) as u64;
        e.in_decoded(raw, text)
    })
}

/// The claims of a `CLAIM` part: `<claim>` elements, possibly inside a `<claims>` wrapper.
fn claims_of(root: El<'_>) -> Vec<String> {
    match root.child("claims") {
        Some(c) => claim_texts(c),
        None => claim_texts(root),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::{render_patent, RenderConfig};
    use crate::sources::epo::test_support::{golden, read_all};
    use crate::sources::epo::{EpoConfig, OtherLanguages};
    use crate::sources::SourcesConfig;

    const TSV: &str = "fixtures/data/epo/EP0600000-fulltext-sample.tsv";

    fn patents(cfg: &SourcesConfig) -> Vec<crate::doc::Patent> {
        let (fmt, recs) = read_all(TSV, cfg);
        assert_eq!(fmt, Some("epo-tsv"));
        recs.into_iter()
            .map(|r| match r {
                Ok(Record::Patent(p)) => p,
                other => panic!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn sample_holds_three_publications() {
        let ps = patents(&SourcesConfig::default());
        let ids: Vec<(&str, &str, &str)> = ps.iter().map(|p| (p.number.as_str(), p.lang.as_str(), p.date.as_str())).collect();
        assert_eq!(ids, [("EP0600083A1", "en", "1994-06-08"), ("EP0600102A1", "de", "1994-06-08"), ("EP0600103A1", "de", "1994-06-08")]);
        for p in &ps {
            assert!(
                !p.title.is_empty() && !p.abstract_text.is_empty() && !p.description.is_empty() && !p.claims.is_empty(),
                "{}",
                p.number
            );
            assert!(!p.description.contains("<") && !p.description.contains("DP n="), "{}", p.number);
            assert!(p.meta["pdf_url"].as_str().unwrap().starts_with("https://data.epo.org/publication-server/pdf-document?cc=EP&pn=0600"));
        }
        assert_eq!(ps[0].title, "DEVICE FOR CONVEYING AND ARRANGING PAPER SHEET");
        assert_eq!(ps[0].meta["titles"]["fr"], "DISPOSITIF D'ACHEMINEMENT ET DE POSITIONNEMENT DE FEUILLES DE PAPIER");
        assert!(ps[0].description.starts_with("Field of Technology\nThis invention relates to a paper sheet conveying"));
        // `<br/>` inside a claim is a space, the claim stays on one line.
        assert!(ps[0].claims[0].starts_with("1. A paper sheet conveying and arranging apparatus"));
        assert!(ps[0].claims[0].contains("said apparatus comprising: a low-friction paper sheet guide member"), "{}", ps[0].claims[0]);
        assert_eq!(ps[2].title, "Wahlweise links oder rechts anschlagbares Schwenklager für Ausstellvorrichtungen");
        assert!(ps[2].description.contains("\nFigur 1 in perspektivischer und auseinandergezogener Stellung"), "{}", ps[2].description);
    }

    #[test]
    fn preferred_language_applies_to_titles() {
        // The German publications have no English text but English titles: the text stays German.
        let cfg = SourcesConfig { epo: EpoConfig { languages: vec!["en".into()], ..Default::default() }, ..Default::default() };
        let ps = patents(&cfg);
        assert_eq!(ps[1].lang, "de");
        assert!(ps[1].title.starts_with("Beschlag"));
        let cfg = SourcesConfig {
            epo: EpoConfig { languages: vec!["en".into()], other_languages: OtherLanguages::Skip, ..Default::default() },
            ..Default::default()
        };
        let (_, recs) = read_all(TSV, &cfg);
        let skipped: Vec<String> = recs
            .iter()
            .filter_map(|r| match r {
                Ok(Record::Skip { reason, id }) if reason == "language" => Some(id.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(skipped, ["EP0600102A1", "EP0600103A1"]);
    }

    #[test]
    fn other_parts_and_biblio_only() {
        let raw = |s: &str| RawRecord { file: "t.tsv".into(), index: 0, offset: 0, line: 1, bytes: s.as_bytes().to_vec() };
        let cfg = SourcesConfig::default();
        let cx = ParseContext { cfg: &cfg };
        let r = EpoTsv
            .parse(&raw("EP\t0000001\tA1\t2001-01-01\ten\tTITLE\tT &amp; U\r\nEP\t0000001\tA1\t2001-01-01\ten\tSREPT\t<p>x</p>\r\n"), &cx)
            .unwrap();
        assert_eq!(r, Record::Skip { reason: "biblio-only".into(), id: "EP0000001A1".into() });
        let r = EpoTsv.parse(&raw("EP\t0000001\tA1\t2001-01-01\ten\tTITLE\tT &amp; U\nEP\t0000001\tA1\t2001-01-01\ten\tCLAIM\t<claim num=\"1\"><claim-text>C &#x3bc;m</claim-text></claim>\nEP\t0000001\tA1\t2001-01-01\ten\tAMEND\t<claim>z</claim>\n"), &cx).unwrap();
        let Record::Patent(p) = r else { panic!() };
        assert_eq!((p.title.as_str(), p.claims[0].as_str()), ("T & U", "1. C μm"));
        assert_eq!(p.meta["other_parts"], serde_json::json!(["AMEND:en"]));
        let e = EpoTsv.parse(&raw("EP\t0000001\tA1\t2001-01-01\ten\tXXXXX\tq\n"), &cx).unwrap_err();
        assert_eq!((e.kind.as_str(), e.position.offset), ("tsv", Some(28)));
    }

    #[test]
    fn sniffing_is_by_content() {
        let read = |p: &str| std::fs::read(format!("{}/{p}", env!("CARGO_MANIFEST_DIR"))).unwrap();
        assert!(EpoTsv.sniff(&read(TSV)));
        for other in [
            "fixtures/data/epo/EP1442058B1-v1-0.xml",
            "fixtures/data/uspto/US03937375-aps-greenbook.txt",
            "fixtures/data/sft/GovPatent-SFT_raw_data.csv",
            "fixtures/data/wudao/coretech_wudao_demo.jsonl",
            "fixtures/data/ipc/coretech_ipcDes_demo.jsonl",
        ] {
            assert!(!EpoTsv.sniff(&read(other)), "{other}");
        }
        assert!(!EpoTsv.sniff(b"EP\t0600083\tA1\t1994-06-08\ten\tNOTES\tx"));
    }

    /// Any cut of a publication's lines parses or fails cleanly, never panics.
    #[test]
    fn truncations_never_panic() {
        let bytes = std::fs::read(format!("{}/{TSV}", env!("CARGO_MANIFEST_DIR"))).unwrap();
        let cfg = SourcesConfig::default();
        let next = bytes.windows(10).position(|w| w == b"EP\t0600102").unwrap();
        let first_group = &bytes[..next];
        for cut in (1..first_group.len()).step_by(29) {
            let raw = RawRecord { file: "t.tsv".into(), index: 0, offset: 0, line: 1, bytes: first_group[..cut].to_vec() };
            if let Err(e) = EpoTsv.parse(&raw, &ParseContext { cfg: &cfg }) {
                assert!(matches!(e.kind.as_str(), "tsv" | "xml" | "encoding"), "cut {cut}: {e}");
                assert!(e.position.offset.unwrap() <= cut as u64, "cut {cut}: {e}");
            }
        }
    }

    #[test]
    fn golden_tsv_publication() {
        let ps = patents(&SourcesConfig::default());
        let text = render_patent(&ps[0], &RenderConfig::default(), None).text + "\n";
        golden("epo/EP0600083A1-fulltext-tsv.txt", &text);
    }

    #[test]
    fn too_few_fields_is_an_error_with_position() {
        let path = "fixtures/bad/epo-tsv-too-few-fields.tsv";
        let (fmt, recs) = read_all(path, &SourcesConfig::default());
        assert_eq!(fmt, Some("epo-tsv"));
        let text = std::fs::read_to_string(format!("{}/{path}", env!("CARGO_MANIFEST_DIR"))).unwrap();
        let bad_line = text.find("EP\t0600102\tA1\t1994-06-08\tde\tDESCR").unwrap();
        // The first publication reads; the second fails at its short line; reading goes on.
        assert_eq!(recs.len(), 3, "{recs:?}");
        assert!(matches!(&recs[0], Ok(Record::Patent(p)) if p.number == "EP0600083A1"));
        let e = recs[1].as_ref().unwrap_err();
        assert_eq!(e.kind, "tsv");
        assert!(e.position.file.ends_with(path));
        assert_eq!(e.position.offset, Some(bad_line as u64), "{e}");
        assert_eq!(e.position.line, Some(5));
        assert!(e.message.contains("found 6"), "{e}");
        assert!(matches!(&recs[2], Ok(Record::Patent(p)) if p.number == "EP0600103A1"));
    }
}
