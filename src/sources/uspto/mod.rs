//! USPTO readers: ICE XML v4.x ([`ice`]), pap v1.5 ([`pap`]), PATDOC v2.5 ([`patdoc`]) and
//! APS Green Book text ([`aps`]), and what they share.
//!
//! Every XML record is parsed once and dispatched on its root element, so a bulk file that
//! mixes generations still reads, and a root that is not a patent becomes
//! `Record::Skip { reason: "not-a-patent:<root>" }`.
//!
//! # Numbers
//! `number` is `US` + the publication's doc-number without leading zeros (a letter prefix is
//! kept: `D0680087` → `D680087`, `RE043210` → `RE43210`) + the kind code: `US8930553B2`,
//! `USD680087S1`, `US20130014308A1`. A document without a doc-number is a `missing-field` error.
//!
//! # Text
//! Laid out by [`super::layout`] with each generation's element rule; see [`ice`].

pub mod aps;
pub mod ice;
pub mod pap;
pub mod patdoc;

#[cfg(test)]
mod tests;

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use crate::doc::{Meta, Patent, Record};
use crate::error::ReadError;
use crate::io::text::{decode, Encoding};
use crate::io::xml::{El, XmlDoc};
use crate::io::RawRecord;
use crate::ipc::symbol::normalize;

use super::ParseContext;

/// Settings of the USPTO readers.
#[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct UsptoConfig {}

/// Decodes a USPTO record. USPTO data is UTF-8 (or ASCII): under `encoding = "auto"` the
/// GB18030 fallback meant for Chinese corpora is not tried, so non-UTF-8 bytes are an
/// `encoding` error at their offset instead of turning into CJK characters. (An explicit
/// `gb18030` is honoured; XML error offsets are then positions in the decoded text.)
pub(crate) fn decode_utf8<'a>(raw: &'a RawRecord, cx: &ParseContext<'_>) -> Result<Cow<'a, str>, ReadError> {
    let enc = match cx.cfg.encoding {
        Encoding::Auto => Encoding::Utf8,
        e => e,
    };
    decode(raw, &raw.bytes, 0, enc)
}

/// Parses one USPTO XML record and dispatches on its root element.
pub(crate) fn parse_xml_record(raw: &RawRecord, cx: &ParseContext<'_>) -> Result<Record, ReadError> {
    let text = decode_utf8(raw, cx)?;
    let doc = XmlDoc::parse_with(&text, cx.cfg.xml_limits()).map_err(|e| e.in_decoded(raw, &text))?;
    let root = doc.root();
    match root.name() {
        "us-patent-grant" | "us-patent-application" => ice::ice_patent(raw, root),
        "patent-application-publication" => pap::pap_patent(raw, root, &text),
        "PATDOC" => patdoc::patdoc_patent(raw, root, &text),
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
pub(crate) fn us_number(country: &str, doc: &str, kind: &str) -> Option<String> {
    let doc: String = doc.chars().filter(|c| c.is_ascii_alphanumeric()).collect();
    let split = doc.find(|c: char| c.is_ascii_digit())?;
    let (prefix, digits) = doc.split_at(split);
    let digits = digits.trim_start_matches('0');
    let digits = if digits.is_empty() { "0" } else { digits };
    let country = if country.trim().is_empty() { "US" } else { country.trim() };
    Some(format!("{country}{}{digits}{}", prefix.to_ascii_uppercase(), kind.trim()))
}

/// `YYYYMMDD` → `YYYY-MM-DD`; `None` for anything else (the raw value then goes to meta).
pub(crate) fn iso_date(s: &str) -> Option<String> {
    let s = s.trim();
    let ok = s.len() == 8
        && s.bytes().all(|c| c.is_ascii_digit())
        && (1..=12).contains(&s[4..6].parse::<u8>().ok()?)
        && (1..=31).contains(&s[6..8].parse::<u8>().ok()?);
    ok.then(|| format!("{}-{}-{}", &s[..4], &s[4..6], &s[6..]))
}

/// Sets `p.date` from a `YYYYMMDD` value, keeping an unparsable one as `meta.date_raw`.
pub(crate) fn set_date(p: &mut Patent, raw: &str) {
    match iso_date(raw) {
        Some(d) => p.date = d,
        None => put(&mut p.meta, "date_raw", raw),
    }
}

/// Normalizes IPC codes into `p.ipc` (document order, no duplicates); codes that do not parse
/// are listed in `meta.ipc_invalid` as `raw: reason`.
pub(crate) fn set_ipc<'a>(p: &mut Patent, raw: impl IntoIterator<Item = &'a str>) {
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
pub(crate) fn new_patent(format: &str) -> Patent {
    let mut p = Patent { source: "uspto".into(), lang: "en".into(), ..Default::default() };
    put(&mut p.meta, "format", format);
    p
}

/// Inserts a string into `meta` unless it is empty.
pub(crate) fn put(meta: &mut Meta, key: &str, value: &str) {
    let v = value.trim();
    if !v.is_empty() {
        meta.insert(key.into(), v.into());
    }
}

/// Inserts a list into `meta` unless it is empty.
pub(crate) fn put_list(meta: &mut Meta, key: &str, values: Vec<String>) {
    if !values.is_empty() {
        meta.insert(key.into(), values.into());
    }
}

/// The collapsed text of the first child `name` of `el`, or "".
pub(crate) fn child_text(el: El<'_>, name: &str) -> String {
    el.child(name).map(|c| c.text()).unwrap_or_default()
}

/// The collapsed text at `path` below `el`, or "".
pub(crate) fn path_text(el: El<'_>, path: &str) -> String {
    el.path(path).map(|c| c.text()).unwrap_or_default()
}

/// The system identifier of the document's DOCTYPE (`pap-v15-2001-01-31.dtd`), if any.
pub(crate) fn doctype_system(text: &str) -> Option<&str> {
    let head = &text[..text.len().min(4096)];
    let at = head.find("<!DOCTYPE")?;
    let rest = &head[at..];
    let sys = rest.find("SYSTEM")?;
    let rest = rest[sys + 6..].trim_start();
    let quote = rest.chars().next().filter(|&c| c == '"' || c == '\'')?;
    let end = rest[1..].find(quote)?;
    Some(&rest[1..1 + end])
}
