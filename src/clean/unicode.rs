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

/// CJK Unified Ideographs are always NFC/NFKC-normalized starters: the quick check sees them
/// as ASCII, which skips two table lookups per character of Chinese text.
#[inline]
fn fast(c: char) -> char {
    if ('\u{4e00}'..='\u{9fff}').contains(&c) {
        'a'
    } else {
        c
    }
}

/// Writes `w.src()` in `form`. Text the quick check proves normalized is not touched.
pub fn run(form: UnicodeForm, w: &mut Rewriter<'_>) {
    let src = w.src();
    let quick = match form {
        UnicodeForm::None => IsNormalized::Yes,
        UnicodeForm::Nfc => is_nfc_quick(src.chars().map(fast)),
        UnicodeForm::Nfkc => is_nfkc_quick(src.chars().map(fast)),
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
    fn nfkc_maps_compatibility_forms() {
        assert_eq!(norm("本发明（GPU）：１２３，①ﬁ", UnicodeForm::Nfkc).0, "本发明(GPU):123,1fi");
        assert_eq!(norm("e\u{301}", UnicodeForm::None), ("e\u{301}".into(), false));
    }
}
