//! USPTO APS "Green Book" fixed-field text (1976–2001).
//!
//! Each line is a 4-character key (3-letter keys padded with a space) at column 0 and its
//! value from column 6; continuation lines are indented. A key without a value opens a section
//! (`PATN`, `INVT`, `CLAS`, `ABST`, `BSUM`, `DRWD`, `DETD`, `CLMS`, …). `PATN` starts each patent,
//! so a weekly file is framed with [`Framing::LineGroups`] at `PATN` lines; the header line a
//! weekly file starts with (`HHHHHT…`) frames as its own record and is skipped
//! (`not-a-patent:aps-header`).
//!
//! # Number
//! `WKU` is the patent number zero-padded to 8 characters plus one check character
//! (`039373754` = `03937375` + check `4`; `D02456781` = `D0245678` + `1`). The check
//! character is dropped (the raw `WKU` stays in `meta.wku`) and the number loses its leading
//! zeros: `US3937375`. APS has no kind codes; the kind is inferred from the number's prefix as
//! USPTO assigns them to pre-2001 grants — none: `A` (utility), `D`: `S` (design), `RE`: `E`
//! (reissue), `PP`: `P` (plant), `H`: `H` (SIR); `T` (defensive publication) and unknown
//! prefixes get none — and marked `meta.kind_inferred`. So `US3937375A`.
//!
//! # Fields
//! `ISD` date, `TTL` title, `ICL` IPC (fixed width `B60R  900` → `B60R 9/00`, repeated), `EDF`
//! IPC edition, `OCL`/`XCL` US classes, `APN`/`APD`/`APT` application. Abstract: `ABST`
//! paragraphs. Description: `PARN` (parent case), `GOVT`, `BSUM`, `DRWD`, `DETD` in file order,
//! `PAC` headings and `PAR`/`PA0`–`PA5`/`PAL` paragraphs one per line, `EQU` equations one per
//! line, `TBL` tables one line per table line (whitespace collapsed, so columns are not kept).
//! Claims: `CLMS`, a new claim at each `NUM`, its paragraphs joined with spaces (the text
//! carries its number, `1. In a …`); `STM` (`What I claim is:`) goes to `meta.claim_statement`;
//! a design claim (`DCLM`) is one claim per paragraph.
//!
//! APS "dot codes" for characters ASCII lacked are turned into Unicode for the common ones
//! (`.degree.` → `°`, `.alpha.` → `α`, `.ltoreq.` → `≤`, …); the `.sub.`/`.sup.` markers are
//! removed and their text kept in line (`H.sub.2 O` → `H2 O`). Others stay as written.

use crate::doc::{Patent, Record};
use crate::error::{ReadError, ReadErrorKind};

use crate::io::sniff;
use crate::io::xml::collapse_ws;
use crate::io::RawRecord;
use crate::sources::{Format, Framing, ParseContext};

use super::{decode_utf8, iso_date, new_patent, put, put_list, set_date, set_ipc, us_number};

/// USPTO APS "Green Book" fixed-field text (1976–2001).
pub struct UsptoAps;

/// A weekly file's header line starts with this.
const HEADER: &[u8] = b"HHHHHT";

fn is_patn(line: &[u8]) -> bool {
    line.strip_prefix(b"PATN").is_some_and(|rest| rest.iter().all(|c| c.is_ascii_whitespace()))
}

fn starts_patent(_first: &[u8], line: &[u8]) -> bool {
    is_patn(line)
}

impl Format for UsptoAps {
    fn name(&self) -> &'static str {
        "uspto-aps"
    }
    fn source(&self) -> &'static str {
        "uspto"
    }
    /// The first line is `PATN` followed by a `WKU` line, possibly after a weekly-file header
    /// line `HHHHHT…`.
    fn sniff(&self, head: &[u8]) -> bool {
        let mut lines = sniff::trimmed(head).split(|&c| c == b'\n');
        let mut first = lines.next().unwrap_or_default();
        if first.starts_with(HEADER) {
            first = lines.next().unwrap_or_default();
        }
        is_patn(first) && lines.next().is_some_and(|l| l.starts_with(b"WKU "))
    }
    fn framing(&self) -> Framing {
        Framing::LineGroups(starts_patent)
    }
    fn parse(&self, raw: &RawRecord, cx: &ParseContext<'_>) -> Result<Record, ReadError> {
        let text = decode_utf8(raw, cx)?;
        if raw.bytes.starts_with(HEADER) && !text.lines().any(|l| is_patn(l.as_bytes())) {
            return Ok(Record::Skip {
                reason: "not-a-patent:aps-header".into(),
                id: text.lines().next().unwrap_or_default().trim().to_string(),
            });
        }
        aps_patent(raw, &text).map(Record::Patent)
    }
}

/// One field: the section it is in, its key, and the value's lines (first and continuations,
/// trimmed).
struct Field<'a> {
    section: &'a str,
    key: &'a str,
    lines: Vec<&'a str>,
}

impl Field<'_> {
    /// The value as running text (lines joined with spaces, dot codes converted).
    fn text(&self) -> String {
        dot_codes(&collapse_ws(&self.lines.join(" ")))
    }
    /// The first line as written (for fixed-width values such as `ICL  B60R  900`).
    fn first(&self) -> &str {
        self.lines.first().copied().unwrap_or_default()
    }
}

const SECTIONS: &[&str] = &[
    "PATN", "INVT", "ASSG", "PRIR", "REIS", "RLAP", "CLAS", "UREF", "FREF", "OREF", "LREP", "PCTA", "ABST", "GOVT", "PARN", "BSUM", "DRWD",
    "DETD", "CLMS", "DCLM",
];

fn fields<'a>(raw: &RawRecord, text: &'a str) -> Result<Vec<Field<'a>>, ReadError> {
    let mut out: Vec<Field<'a>> = Vec::new();
    let mut section = "";
    let mut offset = 0usize;
    for line in text.split_inclusive('\n') {
        let at = offset;
        offset += line.len();
        let line = line.trim_end_matches(['\n', '\r']);
        if line.trim().is_empty() {
            continue;
        }
        if line.starts_with([' ', '\t']) {
            match out.last_mut() {
                Some(f) => f.lines.push(line.trim()),
                None => return Err(raw.error_at(at as u64, ReadErrorKind::Shape, "APS continuation line before any field")),
            }
            continue;
        }
        let (key, value) = match (line.get(..4), line.get(4..)) {
            (Some(k), Some(v)) => (k.trim_end(), v.trim()),
            _ => (line.trim_end(), ""),
        };
        if value.is_empty() && SECTIONS.contains(&key) {
            section = key;
        }
        out.push(Field { section, key, lines: if value.is_empty() { Vec::new() } else { vec![value] } });
    }
    Ok(out)
}

fn aps_patent(raw: &RawRecord, text: &str) -> Result<Patent, ReadError> {
    if !text.lines().next().is_some_and(|l| is_patn(l.as_bytes())) {
        return Err(raw.error(ReadErrorKind::Shape, "APS record does not start with a PATN line"));
    }
    let fields = fields(raw, text)?;
    let get = |section: &str, key: &str| fields.iter().find(|f| f.section == section && f.key == key);
    let wku = get("PATN", "WKU").map(|f| f.first().to_string()).unwrap_or_default();
    // No WKU is a missing field; a WKU that is not a number is the wrong shape.
    let kind = if wku.trim().is_empty() { ReadErrorKind::MissingField } else { ReadErrorKind::Shape };
    let (number, kind) =
        wku_number(&wku).ok_or_else(|| raw.error(kind, format!("APS patent has no usable patent number (WKU {wku:?})")))?;

    let mut p = new_patent("uspto-aps");
    p.number = format!("{number}{kind}");
    set_date(&mut p, get("PATN", "ISD").map(|f| f.first()).unwrap_or_default());
    p.title = get("PATN", "TTL").map(|f| f.text()).unwrap_or_default();
    set_ipc(&mut p, fields.iter().filter(|f| f.section == "CLAS" && f.key == "ICL").map(|f| f.first()));

    let m = &mut p.meta;
    put(m, "wku", &wku);
    put(m, "kind", kind);
    if !kind.is_empty() {
        m.insert("kind_inferred".into(), true.into());
    }
    put(m, "application_number", get("PATN", "APN").map(|f| f.first()).unwrap_or_default());
    put(m, "application_date", &get("PATN", "APD").and_then(|f| iso_date(f.first())).unwrap_or_default());
    put(m, "application_type", get("PATN", "APT").map(|f| f.first()).unwrap_or_default());
    put(m, "ipc_edition", get("CLAS", "EDF").map(|f| f.first()).unwrap_or_default());
    let us: Vec<String> =
        fields.iter().filter(|f| f.section == "CLAS" && (f.key == "OCL" || f.key == "XCL")).map(|f| f.first().to_string()).collect();
    put_list(m, "us_class", us);

    let mut abstract_lines: Vec<String> = Vec::new();
    let mut description: Vec<String> = Vec::new();
    let mut claims: Vec<String> = Vec::new();
    let mut claim: Option<String> = None;
    for f in &fields {
        let text_field = matches!(f.key, "PAC" | "PAR" | "PAL" | "PA0" | "PA1" | "PA2" | "PA3" | "PA4" | "PA5" | "EQU" | "TBL");
        match f.section {
            "ABST" if text_field => push_text(&mut abstract_lines, f),
            "PARN" | "GOVT" | "BSUM" | "DRWD" | "DETD" if text_field => push_text(&mut description, f),
            "CLMS" => match f.key {
                "STM" => put(&mut p.meta, "claim_statement", &f.text()),
                "NUM" => claims.extend(claim.replace(String::new())),
                _ if text_field => {
                    let c = claim.get_or_insert_with(String::new);
                    for l in field_lines(f) {
                        if !c.is_empty() {
                            c.push(' ');
                        }
                        c.push_str(&l);
                    }
                }
                _ => {}
            },
            "DCLM" if text_field => push_text(&mut claims, f),
            _ => {}
        }
    }
    claims.extend(claim);
    claims.retain(|c| !c.is_empty());
    p.abstract_text = abstract_lines.join("\n");
    p.description = description.join("\n");
    p.claims = claims;
    Ok(p)
}

/// A text field's lines: one for a paragraph or heading, one per table line for `TBL`.
fn field_lines(f: &Field<'_>) -> Vec<String> {
    if f.key == "TBL" {
        f.lines.iter().map(|l| dot_codes(&collapse_ws(l))).filter(|l| !l.is_empty()).collect()
    } else {
        Some(f.text()).filter(|t| !t.is_empty()).into_iter().collect()
    }
}

fn push_text(out: &mut Vec<String>, f: &Field<'_>) {
    out.extend(field_lines(f));
}

/// `WKU` → (`US` + number without check character and leading zeros, inferred kind).
fn wku_number(wku: &str) -> Option<(String, &'static str)> {
    let w = wku.trim();
    if w.len() != 9 || !w.is_ascii() {
        return None;
    }
    let doc = &w[..8];
    let prefix: String = doc.chars().take_while(|c| c.is_ascii_alphabetic()).collect();
    let kind = match prefix.as_str() {
        "" => "A",
        "D" => "S",
        "RE" => "E",
        "PP" => "P",
        "H" => "H",
        _ => "",
    };
    if !doc[prefix.len()..].bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    us_number("US", doc, "").map(|n| (n, kind))
}

/// APS dot codes and their characters (the common ones; the rest stay as written).
const DOT_CODES: &[(&str, &str)] = &[
    ("alpha", "α"),
    ("beta", "β"),
    ("gamma", "γ"),
    ("delta", "δ"),
    ("epsilon", "ε"),
    ("zeta", "ζ"),
    ("eta", "η"),
    ("theta", "θ"),
    ("iota", "ι"),
    ("kappa", "κ"),
    ("lambda", "λ"),
    ("mu", "μ"),
    ("nu", "ν"),
    ("xi", "ξ"),
    ("omicron", "ο"),
    ("pi", "π"),
    ("rho", "ρ"),
    ("sigma", "σ"),
    ("tau", "τ"),
    ("upsilon", "υ"),
    ("phi", "φ"),
    ("chi", "χ"),
    ("psi", "ψ"),
    ("omega", "ω"),
    ("ALPHA", "Α"),
    ("BETA", "Β"),
    ("GAMMA", "Γ"),
    ("DELTA", "Δ"),
    ("EPSILON", "Ε"),
    ("ZETA", "Ζ"),
    ("ETA", "Η"),
    ("THETA", "Θ"),
    ("IOTA", "Ι"),
    ("KAPPA", "Κ"),
    ("LAMBDA", "Λ"),
    ("MU", "Μ"),
    ("NU", "Ν"),
    ("XI", "Ξ"),
    ("OMICRON", "Ο"),
    ("PI", "Π"),
    ("RHO", "Ρ"),
    ("SIGMA", "Σ"),
    ("TAU", "Τ"),
    ("UPSILON", "Υ"),
    ("PHI", "Φ"),
    ("CHI", "Χ"),
    ("PSI", "Ψ"),
    ("OMEGA", "Ω"),
    ("degree", "°"),
    ("+-", "±"),
    ("-+", "∓"),
    ("times", "×"),
    ("div", "÷"),
    ("ltoreq", "≤"),
    ("gtoreq", "≥"),
    ("noteq", "≠"),
    ("apprxeq", "≈"),
    ("about", "≈"),
    ("ident", "≡"),
    ("infin", "∞"),
    ("sqroot", "√"),
    ("intg", "∫"),
    ("varies", "∝"),
    ("fwdarw", "→"),
    ("rarw", "←"),
    ("uparw", "↑"),
    ("dwnarw", "↓"),
    ("revreaction", "⇌"),
    ("cndot", "·"),
    ("multidot", "·"),
    ("angle", "∠"),
    ("perp", "⊥"),
    ("parallel", "∥"),
    ("differential", "∂"),
    ("gradient", "∇"),
    ("ANG", "Å"),
    ("sctn", "§"),
    ("prime", "′"),
    ("dblprime", "″"),
    ("TM", "™"),
    ("RTM", "®"),
    ("COPYRG", "©"),
    ("permill", "‰"),
    ("cent", "¢"),
    ("sub", ""),
    ("sup", ""),
];

/// Replaces the APS dot codes listed in [`DOT_CODES`] (`.degree.` → `°`).
fn dot_codes(s: &str) -> String {
    if !s.contains('.') {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('.') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let code = after.find('.').map(|j| &after[..j]).filter(|c| !c.is_empty() && c.len() <= 16);
        match code.and_then(|c| DOT_CODES.iter().find(|(k, _)| *k == c)) {
            Some((k, v)) => {
                out.push_str(v);
                rest = &after[k.len() + 1..];
            }
            None => {
                out.push('.');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::SourcesConfig;

    fn parse(text: &str) -> Result<Record, ReadError> {
        let cfg = SourcesConfig::default();
        let raw = RawRecord { file: "g.txt".into(), index: 0, offset: 500, line: 20, bytes: text.as_bytes().to_vec() };
        UsptoAps.parse(&raw, &ParseContext { cfg: &cfg })
    }

    #[test]
    fn sniffing() {
        assert!(UsptoAps.sniff(b"PATN\nWKU  039373754\n"));
        assert!(UsptoAps.sniff(b"PATN  \r\nWKU  039373754\r\n"));
        assert!(UsptoAps.sniff(b"HHHHHT APS1 \nPATN\nWKU  039373754\n"));
        assert!(!UsptoAps.sniff(b"PATN\nTTL  x\n"));
        assert!(!UsptoAps.sniff(b"PATENT\nWKU  1\n"));
        assert!(!UsptoAps.sniff(b"{\"PATN\": 1}"));
    }

    #[test]
    fn numbers_from_wku() {
        assert_eq!(wku_number("039373754"), Some(("US3937375".into(), "A")));
        assert_eq!(wku_number("D02456781"), Some(("USD245678".into(), "S")));
        assert_eq!(wku_number("RE0284567"), Some(("USRE28456".into(), "E")));
        assert_eq!(wku_number("PP0045671"), Some(("USPP4567".into(), "P")));
        assert_eq!(wku_number("0393737"), None);
        assert_eq!(wku_number("0393X3754"), None);
    }

    #[test]
    fn dot_codes_become_characters() {
        assert_eq!(dot_codes("heated to 45.degree. C. for 2 .mu.m"), "heated to 45° C. for 2 μm");
        assert_eq!(dot_codes("H.sub.2 O and x.sup.2 .ltoreq. 4. Done."), "H2 O and x2 ≤ 4. Done.");
        assert_eq!(dot_codes("FIG. 1. The .unknown. code"), "FIG. 1. The .unknown. code");
    }

    #[test]
    fn claims_sections_and_continuations() {
        let t = "PATN\nWKU  039373754\nISD  19760210\nTTL  A boat\n      loader\nCLAS\nICL  B60R  900\nICL  X99Z  1\nABST\nPAL  An abstract\n      line.\nBSUM\nPAC  BACKGROUND\nPAR  Para one.\nTBL  a    b\n      1    2\nCLMS\nSTM  What I claim is:\nNUM  1.\nPAR  1. A thing, comprising:\nPA1  a part.\nNUM  2.\nPAR  2. The thing of claim 1.\n";
        let Record::Patent(p) = parse(t).unwrap() else { panic!() };
        assert_eq!(p.number, "US3937375A");
        assert_eq!(p.date, "1976-02-10");
        assert_eq!(p.title, "A boat loader");
        assert_eq!(p.ipc, ["B60R 9/00"]);
        assert!(p.meta["ipc_invalid"][0].as_str().unwrap().starts_with("X99Z  1: "));
        assert_eq!(p.abstract_text, "An abstract line.");
        assert_eq!(p.description, "BACKGROUND\nPara one.\na b\n1 2");
        assert_eq!(p.claims, ["1. A thing, comprising: a part.", "2. The thing of claim 1."]);
        assert_eq!(p.meta["claim_statement"], "What I claim is:");
    }

    #[test]
    fn header_is_skipped_and_bad_records_are_errors() {
        assert_eq!(
            parse("HHHHHT APS1 19760106").unwrap(),
            Record::Skip { reason: "not-a-patent:aps-header".into(), id: "HHHHHT APS1 19760106".into() }
        );
        let e = parse("PATN\nTTL  no number\n").unwrap_err();
        assert_eq!((e.kind.as_str(), e.position.offset), ("missing-field", Some(500)));
        let e = parse("TTL  x\n").unwrap_err();
        assert_eq!(e.kind, "shape");
    }
}
