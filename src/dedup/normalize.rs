//! Text normalization for exact deduplication: what "the same text" means is configurable
//! (case folding, whitespace collapsing, punctuation removal including CJK punctuation), and
//! the key is the xxh3-128 of the normalized bytes.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use unicode_general_category::{get_general_category, GeneralCategory as G};
use xxhash_rust::xxh3::Xxh3;

/// What is ignored when two texts are compared for exact duplication.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct NormalizeConfig {
    /// Fold case (Unicode lowercase), so `Patent` and `PATENT` are the same text.
    pub case_fold: bool,
    /// Collapse every run of whitespace to one space and trim the ends.
    pub collapse_whitespace: bool,
    /// Drop punctuation (Unicode categories P*, which covers CJK punctuation such as `，。；：「」`
    /// and full-width forms).
    pub remove_punctuation: bool,
}

impl Default for NormalizeConfig {
    fn default() -> Self {
        Self { case_fold: false, collapse_whitespace: true, remove_punctuation: false }
    }
}

/// Unicode punctuation (general categories Pc, Pd, Ps, Pe, Pi, Pf, Po).
pub fn is_punctuation(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_punctuation() && !matches!(c, '$' | '+' | '<' | '=' | '>' | '^' | '`' | '|' | '~');
    }
    matches!(
        get_general_category(c),
        G::ConnectorPunctuation
            | G::DashPunctuation
            | G::OpenPunctuation
            | G::ClosePunctuation
            | G::InitialPunctuation
            | G::FinalPunctuation
            | G::OtherPunctuation
    )
}

/// Streams the normalized form of `text` into `sink` in pieces (no allocation of the whole
/// normalized text).
fn normalized(cfg: &NormalizeConfig, text: &str, mut sink: impl FnMut(&[u8])) {
    // Fast path: nothing to change.
    if !cfg.case_fold && !cfg.collapse_whitespace && !cfg.remove_punctuation {
        sink(text.as_bytes());
        return;
    }
    let mut pending_space = false;
    let mut any = false;
    let mut buf = [0u8; 4];
    for c in text.chars() {
        if cfg.collapse_whitespace && c.is_whitespace() {
            pending_space = any;
            continue;
        }
        if cfg.remove_punctuation && is_punctuation(c) {
            continue;
        }
        if pending_space {
            sink(b" ");
            pending_space = false;
        }
        any = true;
        if cfg.case_fold && c.is_uppercase() {
            for l in c.to_lowercase() {
                sink(l.encode_utf8(&mut buf).as_bytes());
            }
        } else {
            sink(c.encode_utf8(&mut buf).as_bytes());
        }
    }
}

/// The normalized text as a string (for tests and audits).
pub fn normalize(cfg: &NormalizeConfig, text: &str) -> String {
    let mut out = Vec::with_capacity(text.len());
    normalized(cfg, text, |b| out.extend_from_slice(b));
    String::from_utf8(out).expect("normalization keeps UTF-8")
}

/// xxh3-128 of the normalized text, seeded: the exact-duplicate key.
pub fn exact_key(cfg: &NormalizeConfig, text: &str, seed: u64) -> u128 {
    let mut h = Xxh3::with_seed(seed);
    normalized(cfg, text, |b| h.update(b));
    h.digest128()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whitespace_variants_share_a_key() {
        let c = NormalizeConfig::default();
        let a = "专利  文本\n第二段。 Two\twords ";
        let b = "  专利 文本 第二段。 Two words";
        assert_eq!(normalize(&c, a), "专利 文本 第二段。 Two words");
        assert_eq!(exact_key(&c, a, 1), exact_key(&c, b, 1));
        assert_ne!(exact_key(&c, a, 1), exact_key(&c, "专利 文本 第二段。 Two Words", 1), "case is kept by default");
        assert_ne!(exact_key(&c, a, 1), exact_key(&c, a, 2), "seeded");
    }

    #[test]
    fn case_and_punctuation_options() {
        let c = NormalizeConfig { case_fold: true, collapse_whitespace: true, remove_punctuation: true };
        assert_eq!(normalize(&c, "Hello, WORLD! 中文，标点。「引号」（括号）：；"), "hello world 中文标点引号括号");
        assert_eq!(exact_key(&c, "A-B c", 0), exact_key(&c, "ab C", 0));
        // Symbols that are not punctuation stay.
        assert_eq!(normalize(&c, "a+b=c ≥ 5%"), "a+b=c ≥ 5");
        let off = NormalizeConfig { case_fold: false, collapse_whitespace: false, remove_punctuation: false };
        assert_eq!(normalize(&off, " a  b "), " a  b ");
    }
}
