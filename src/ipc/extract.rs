//! IPC codes in free text (answers, generated text): the one extractor that SFT validation,
//! task inference and evaluation scoring use.
//!
//! A candidate is a capital letter (any, so a wrong section letter is caught), two digits, then
//! optionally a subclass letter, a group and a `/subgroup` — ASCII or full-width, with up to two
//! spaces between the parts. A slash without digits before or after it is kept so a missing
//! group or subgroup is reported rather than read as a subclass. A candidate glued to a
//! letter or digit before it is not a code (`XH04L`, `COVID19A`); one glued to a letter or
//! digit after it falls back to its bare subclass when that stands free (`H04L 5G` is the
//! subclass `H04L` followed by a word), else it is not a code (`G06FX`, `H100`). CJK
//! characters around a code are fine (`分类号H04L`). A candidate outside sections A–H counts
//! only with a `/` (a bare `N79S` is a model number, `Z04L 29/06` a misspelt code).
//!
//! Every mention is parsed with [`IpcSymbol`] and keeps its depth, so each user picks what it
//! needs: validation and task inference look at subclasses and deeper ([`CodeMention::is_code`]
//! with level ≥ 3: a bare class such as `A15` is far more often a cell or model name), scoring
//! at every parsed level ≥ 2 written in full ([`CodeMention::is_complete`]: the reference answers
//! list classes such as `C08`; `H04L29`, a group without its `/subgroup`, is not scored).

use std::sync::OnceLock;

use regex::Regex;
use serde::{Deserialize, Serialize};

use super::symbol::{fold_width, IpcSymbol};

/// One IPC-looking code in a text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CodeMention {
    /// The spelling in the text (`G05B19/00`, `Ｈ０４Ｌ　２９／０６`).
    pub raw: String,
    /// Byte offset of `raw` in the text.
    pub offset: usize,
    /// The normalized symbol (`G05B 19/00`); `None` when it does not parse.
    pub normalized: Option<String>,
    /// Depth of the symbol (2 class, 3 subclass, 4 main group, 5 subgroup); 0 when malformed.
    pub level: u8,
    /// Why it does not parse.
    pub error: Option<String>,
    /// The spelling used full-width characters.
    pub fullwidth: bool,
    /// A group written without its `/subgroup` (`B29C64`, `H04L 29`).
    pub bare_group: bool,
}

impl CodeMention {
    /// Parses to a symbol of at least `min_level` (3: subclass).
    pub fn is_code(&self, min_level: u8) -> bool {
        self.normalized.is_some() && self.level >= min_level
    }

    /// Parses, and every part it has is written in full (no group without its subgroup).
    pub fn is_complete(&self) -> bool {
        self.normalized.is_some() && !self.bare_group
    }
}

/// The depth validation and task inference count from: the subclass (`H04L`).
pub const SUBCLASS_LEVEL: u8 = 3;

fn candidate_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(
            r"[A-ZＡ-Ｚ][0-9０-９]{2}(?:[A-ZＡ-Ｚ](?:[ \u{3000}]{0,2}[0-9０-９]{1,4})?(?:[ \u{3000}]{0,2}[/／][ \u{3000}]{0,2}[0-9０-９]{0,6})?)?",
        )
        .expect("valid regex")
    })
}

/// Letters and digits (ASCII or full-width) glue a candidate to a longer token, which then is
/// not a code. CJK characters around a code are fine.
fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || ('０'..='９').contains(&c) || ('Ａ'..='Ｚ').contains(&c) || ('ａ'..='ｚ').contains(&c)
}

/// Every IPC-looking code in `text`, in order (rules in the module doc).
pub fn extract_codes(text: &str) -> Vec<CodeMention> {
    let mut out = Vec::new();
    for m in candidate_re().find_iter(text) {
        if text[..m.start()].chars().next_back().is_some_and(is_word_char) {
            continue;
        }
        // Prefer the whole match; if a letter/digit follows it, fall back to the bare subclass.
        let mut ends = vec![m.end()];
        let chars: Vec<(usize, char)> = m.as_str().char_indices().collect();
        if chars.len() > 4 && !chars[3].1.is_ascii_digit() && !('０'..='９').contains(&chars[3].1) {
            ends.push(m.start() + chars[4].0);
        }
        let Some(end) = ends.into_iter().find(|&e| !text[e..].chars().next().is_some_and(is_word_char)) else { continue };
        let raw = text[m.start()..end].trim_end_matches([' ', '\u{3000}']);
        let folded = fold_width(raw);
        if !folded.starts_with(|c: char| ('A'..='H').contains(&c)) && !folded.contains('/') {
            continue;
        }
        let fullwidth = raw.chars().any(|c| ('\u{FF01}'..='\u{FF5E}').contains(&c) || c == '\u{3000}');
        let (normalized, level, error) = match IpcSymbol::parse(raw) {
            Ok(sym) => (Some(sym.to_string()), sym.level(), None),
            Err(e) => (None, 0, Some(e.to_string())),
        };
        let bare_group = normalized.is_some() && level == 4 && !folded.contains('/');
        out.push(CodeMention { raw: raw.to_string(), offset: m.start(), normalized, level, error, fullwidth, bare_group });
    }
    out
}

/// The distinct symbols of `text` whose mentions pass `keep`, in order of first appearance.
pub fn distinct_symbols(text: &str, keep: impl Fn(&CodeMention) -> bool) -> Vec<IpcSymbol> {
    let mut seen = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    for m in extract_codes(text).iter().filter(|m| keep(m)) {
        if let Ok(sym) = IpcSymbol::parse(&m.raw) {
            if seen.insert(sym.clone()) {
                out.push(sym);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(text: &str) -> Vec<(String, u8)> {
        extract_codes(text).into_iter().filter_map(|m| m.normalized.map(|n| (n, m.level))).collect()
    }

    #[test]
    fn classes_subclasses_and_groups_with_their_levels() {
        let got = norm("1. **C08** — 有机高分子\n2. **B29C64** — 增材制造\n3. G06F16/00、Ｈ０４Ｌ　２９／０６，H04L 5G");
        let want = [("C08", 2), ("B29C 64", 4), ("G06F 16/00", 4), ("H04L 29/06", 5), ("H04L", 3)];
        assert_eq!(got, want.iter().map(|(s, l)| (s.to_string(), *l)).collect::<Vec<_>>());
        let m = extract_codes("B29C64 与 B29C64/135");
        assert_eq!((m[0].bare_group, m[1].bare_group), (true, false));
        assert!(!m[0].is_complete() && m[1].is_complete() && m[0].is_code(SUBCLASS_LEVEL));
    }

    #[test]
    fn glued_tokens_model_numbers_and_cells_are_not_codes() {
        for t in ["NVIDIA H100 and A100", "B2B, A4 paper, CMOS, h04l", "G06FX, XG06F", "Ecovacs Deebot N79S, Sony Z10X", "COVID19A"] {
            assert!(extract_codes(t).is_empty(), "{t}: {:?}", extract_codes(t));
        }
        // A bare class is a mention, but not a code at the subclass level (`=SUM(A15:A20)`).
        let m = extract_codes("=SUM(A15:A20)");
        assert_eq!(m.len(), 2);
        assert!(m.iter().all(|m| !m.is_code(SUBCLASS_LEVEL)));
    }

    #[test]
    fn distinct_symbols_in_first_appearance_order() {
        let s: Vec<String> = distinct_symbols("H04L, G06F, H04L, C08", |m| m.is_complete()).iter().map(|s| s.to_string()).collect();
        assert_eq!(s, ["H04L", "G06F", "C08"]);
        let s = distinct_symbols("H04L, G06F, C08", |m| m.is_code(SUBCLASS_LEVEL));
        assert_eq!(s.len(), 2);
    }
}
