//! Text keys for duplicate and contamination checks: a normalized form for exact comparison,
//! and n-grams over units that suit mixed Chinese/English text — one CJK character, or one
//! run of other letters/digits (a word), after width folding and lower-casing.

use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

use crate::ipc::symbol::fold_width;

/// True for ideographs, kana and hangul: each is one n-gram unit.
pub fn is_cjk(c: char) -> bool {
    matches!(c as u32,
        0x3040..=0x30FF      // hiragana, katakana
        | 0x3400..=0x4DBF    // CJK extension A
        | 0x4E00..=0x9FFF    // CJK unified ideographs
        | 0xAC00..=0xD7AF    // hangul syllables
        | 0xF900..=0xFAFF    // CJK compatibility ideographs
        | 0x20000..=0x3134F) // CJK extensions B–G
}

/// The comparison form of a text: width-folded, lower-cased, with everything but letters and
/// digits removed (so punctuation, spacing and full-width variants do not matter).
pub fn normalize(s: &str) -> String {
    fold_width(s).chars().filter(|c| c.is_alphanumeric()).flat_map(char::to_lowercase).collect()
}

/// Hashes of the text's units, in order.
pub fn unit_hashes(s: &str) -> Vec<u64> {
    let folded = fold_width(s);
    let mut out = Vec::new();
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut Vec<u64>| {
        if !word.is_empty() {
            out.push(xxh3_64(word.as_bytes()));
            word.clear();
        }
    };
    for c in folded.chars() {
        if is_cjk(c) {
            flush(&mut word, &mut out);
            let mut buf = [0u8; 4];
            out.push(xxh3_64(c.encode_utf8(&mut buf).as_bytes()));
        } else if c.is_alphanumeric() {
            word.extend(c.to_lowercase());
        } else {
            flush(&mut word, &mut out);
        }
    }
    flush(&mut word, &mut out);
    out
}

/// Calls `f` with the hash of every `n`-gram of a unit-hash sequence, in order (none when it
/// is shorter than `n`). One buffer is reused: this runs over the whole CPT corpus.
pub fn for_each_ngram(units: &[u64], n: usize, mut f: impl FnMut(u64)) {
    let n = n.max(1);
    let mut bytes = Vec::with_capacity(8 * n);
    for w in units.windows(n) {
        bytes.clear();
        for h in w {
            bytes.extend_from_slice(&h.to_le_bytes());
        }
        f(xxh3_64_with_seed(&bytes, n as u64));
    }
}

/// The set of `n`-gram hashes of a text, sorted and deduplicated.
pub fn ngram_set(s: &str, n: usize) -> Vec<u64> {
    let mut v = Vec::new();
    for_each_ngram(&unit_hashes(s), n, |h| v.push(h));
    v.sort_unstable();
    v.dedup();
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalization_ignores_width_case_and_punctuation() {
        assert_eq!(normalize("智能芯片涉及的IPC分类编号有哪些？"), normalize("智能芯片 涉及的 ｉｐｃ 分类编号有哪些?"));
        assert_ne!(normalize("智能芯片"), normalize("区块链"));
    }

    #[test]
    fn units_are_cjk_chars_and_words() {
        // 智 能 芯 片 | ipc | 分 类 | h04l
        assert_eq!(unit_hashes("智能芯片IPC分类 H04L").len(), 8);
        assert_eq!(unit_hashes("Hello, world!").len(), 2);
        assert_eq!(ngram_set("a b c d", 2).len(), 3);
        assert!(ngram_set("a b", 13).is_empty());
        // Same text in different spacing and width gives the same n-grams.
        assert_eq!(ngram_set("一种基于深度学习的专利分类方法", 5), ngram_set("一种 基于深度学习的 专利分类方法。", 5));
    }
}
