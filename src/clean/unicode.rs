//! Unicode normalization. NFC by default: the Qwen tokenizer normalizes with NFC, and NFC keeps
//! CJK full-width punctuation (`，：（）`) as it is. NFKC (which maps it to ASCII, and `①` to
//! `1`) is available when wanted.

use serde::{Deserialize, Serialize};
use unicode_normalization::{is_nfc_quick, is_nfkc_quick, IsNormalized, UnicodeNormalization};

use super::rewrite::Rewriter;

/// The normalization form applied to the text.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum UnicodeForm {
    /// Canonical composition (what the Qwen tokenizer applies).
    #[default]
    Nfc,
    /// Compatibility composition: also maps full-width forms, ligatures, circled digits, … to
    /// their plain equivalents (full-width CJK punctuation becomes ASCII).
    Nfkc,
    /// Leave the text as it is.
    None,
}

/// Characters that are normalized starters in every form (CJK ideographs, CJK punctuation):
/// the quick check sees them as ASCII, which skips two table lookups per character of Chinese
/// text. A test checks every character of these ranges.
#[inline]
fn always_normal(c: char) -> bool {
    matches!(c, '\u{4e00}'..='\u{9fff}' | '\u{3400}'..='\u{4dbf}' | '\u{3001}'..='\u{3029}')
}

/// Full-width forms are NFC starters (NFKC maps them).
#[inline]
fn nfc_normal(c: char) -> bool {
    always_normal(c) || matches!(c, '\u{ff01}'..='\u{ffee}')
}

/// Writes `w.src()` in `form`. Text the quick check proves normalized is not touched.
pub fn run(form: UnicodeForm, w: &mut Rewriter<'_>) {
    let src = w.src();
    let quick = match form {
        UnicodeForm::None => IsNormalized::Yes,
        UnicodeForm::Nfc => is_nfc_quick(src.chars().map(|c| if nfc_normal(c) { 'a' } else { c })),
        UnicodeForm::Nfkc => is_nfkc_quick(src.chars().map(|c| if always_normal(c) { 'a' } else { c })),
    };
    if quick == IsNormalized::Yes {
        w.keep(0, src.len());
        return;
    }
    // The rewriter copies nothing while the normalized output still equals the input, so a
    // `Maybe` that turns out normalized costs no allocation.
    let mut buf = [0u8; 4];
    match form {
        UnicodeForm::Nfc => src.chars().nfc().for_each(|c| w.push_str(c.encode_utf8(&mut buf))),
        UnicodeForm::Nfkc => src.chars().nfkc().for_each(|c| w.push_str(c.encode_utf8(&mut buf))),
        UnicodeForm::None => w.keep(0, src.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clean::rewrite::run_stage;

    fn norm(s: &str, f: UnicodeForm) -> (String, bool) {
        let mut t = s.to_string();
        let changed = run_stage(&mut t, &mut String::new(), |w| run(f, w));
        (t, changed)
    }

    #[test]
    fn nfc_composes_and_keeps_fullwidth() {
        assert_eq!(norm("e\u{301}cole", UnicodeForm::Nfc), ("école".into(), true));
        assert_eq!(norm("Å\u{212b}", UnicodeForm::Nfc), ("ÅÅ".into(), true));
        let zh = "本发明（GPU）：１２３，①。";
        assert_eq!(norm(zh, UnicodeForm::Nfc), (zh.into(), false));
        assert_eq!(norm("école", UnicodeForm::Nfc), ("école".into(), false));
    }

    #[test]
    fn fast_ranges_are_normalized_starters() {
        use unicode_normalization::char::canonical_combining_class;
        for u in (0x3000..0xa000).chain(0xff00..0x10000) {
            let Some(c) = char::from_u32(u) else { continue };
            let s = c.to_string();
            if nfc_normal(c) {
                assert_eq!(canonical_combining_class(c), 0, "{u:x}");
                assert_eq!(s.nfc().collect::<String>(), s, "{u:x}");
            }
            if always_normal(c) {
                assert_eq!(s.nfkc().collect::<String>(), s, "{u:x}");
            }
        }
    }

    #[test]
    fn nfkc_maps_compatibility_forms() {
        assert_eq!(norm("本发明（GPU）：１２３，①ﬁ", UnicodeForm::Nfkc).0, "本发明(GPU):123,1fi");
        assert_eq!(norm("e\u{301}", UnicodeForm::None), ("e\u{301}".into(), false));
    }
}
