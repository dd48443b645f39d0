//! Shingles that suit the script: every CJK character (Han, kana, Hangul) is a token of its
//! own and every run of other letters and digits is a word token; a shingle is `cjk_ngram`
//! consecutive tokens when it starts on a CJK character (character n-grams) and `word_ngram`
//! tokens when it starts on a word (word n-grams). The choice is made per token, not per
//! document, so CN/EN mixtures get character n-grams in their Chinese runs and word n-grams in
//! their English runs. Case is folded (configurable), punctuation and whitespace separate
//! tokens and are otherwise ignored, full-width letters and digits are folded to ASCII.

/// Token buffers reused across documents (one per worker).
#[derive(Debug, Default)]
pub struct Tokens {
    /// Token bytes; every word token is followed by one space, CJK tokens by nothing.
    pub buf: Vec<u8>,
    /// Start of each token in `buf`.
    pub starts: Vec<u32>,
    /// End of each token (exclusive, without the trailing space).
    pub ends: Vec<u32>,
    /// Whether each token is a CJK character.
    pub cjk: Vec<bool>,
}

/// Whether `c` is written without spaces between words (each character is a token).
#[inline]
pub fn is_cjk(c: char) -> bool {
    matches!(c as u32,
        0x3040..=0x30FF      // Hiragana, Katakana
        | 0x3100..=0x312F    // Bopomofo
        | 0x3400..=0x4DBF    // CJK Extension A
        | 0x4E00..=0x9FFF    // CJK Unified Ideographs
        | 0xAC00..=0xD7AF    // Hangul syllables
        | 0xF900..=0xFAFF    // CJK Compatibility Ideographs
        | 0x20000..=0x2FA1F  // CJK Extensions B–F, compatibility supplement
    )
}

// ASCII class table: 1 = letter or digit.
const fn ascii_alnum() -> [bool; 128] {
    let mut t = [false; 128];
    let mut i = 0;
    while i < 128 {
        let c = i as u8;
        t[i] = c.is_ascii_alphanumeric();
        i += 1;
    }
    t
}
static ALNUM: [bool; 128] = ascii_alnum();

impl Tokens {
    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.starts.len()
    }

    /// Whether there are no tokens.
    pub fn is_empty(&self) -> bool {
        self.starts.is_empty()
    }

    /// Splits `text` into tokens (replacing the previous content).
    pub fn tokenize(&mut self, text: &str, case_fold: bool) {
        self.buf.clear();
        self.starts.clear();
        self.ends.clear();
        self.cjk.clear();
        self.buf.reserve(text.len() + 16);
        let bytes = text.as_bytes();
        let mut in_word = false;
        let mut i = 0;
        // Hand-written byte loop: this runs over every input byte and is the first half of the
        // signature hot path; ASCII is handled without decoding.
        while i < bytes.len() {
            let b = bytes[i];
            if b < 0x80 {
                if ALNUM[b as usize] {
                    if !in_word {
                        self.starts.push(self.buf.len() as u32);
                        self.cjk.push(false);
                        in_word = true;
                    }
                    self.buf.push(if case_fold { b.to_ascii_lowercase() } else { b });
                } else if in_word {
                    self.end_word();
                    in_word = false;
                }
                i += 1;
                continue;
            }
            let (c, n) = decode(bytes, i);
            i += n;
            if is_cjk(c) {
                if in_word {
                    self.end_word();
                    in_word = false;
                }
                let s = self.buf.len() as u32;
                self.buf.extend_from_slice(&bytes[i - n..i]);
                self.starts.push(s);
                self.ends.push(self.buf.len() as u32);
                self.cjk.push(true);
            } else if c.is_alphanumeric() {
                // Full-width ASCII letters/digits (U+FF10–U+FF5A) fold to ASCII.
                let c = if (0xFF10..=0xFF5A).contains(&(c as u32)) { char::from_u32(c as u32 - 0xFEE0).unwrap_or(c) } else { c };
                if !in_word {
                    self.starts.push(self.buf.len() as u32);
                    self.cjk.push(false);
                    in_word = true;
                }
                let mut tmp = [0u8; 4];
                if case_fold && !c.is_lowercase() {
                    for l in c.to_lowercase() {
                        self.buf.extend_from_slice(l.encode_utf8(&mut tmp).as_bytes());
                    }
                } else {
                    self.buf.extend_from_slice(c.encode_utf8(&mut tmp).as_bytes());
                }
            } else if in_word {
                self.end_word();
                in_word = false;
            }
        }
        if in_word {
            self.end_word();
        }
    }

    fn end_word(&mut self) {
        self.ends.push(self.buf.len() as u32);
        self.buf.push(b' ');
    }

    /// Calls `f` with the bytes of every shingle: at each token `i`, the `n` tokens from `i`
    /// where `n` is `cjk_n` for a CJK token and `word_n` for a word, if that many remain. A text
    /// shorter than its n-gram size gives one shingle of all its tokens; an empty one gives none.
    #[inline]
    pub fn for_each_shingle(&self, word_n: usize, cjk_n: usize, mut f: impl FnMut(&[u8])) -> usize {
        let t = self.len();
        let mut count = 0;
        for i in 0..t {
            let n = if self.cjk[i] { cjk_n } else { word_n };
            if i + n > t {
                continue;
            }
            f(&self.buf[self.starts[i] as usize..self.ends[i + n - 1] as usize]);
            count += 1;
        }
        if count == 0 && t > 0 {
            f(&self.buf[self.starts[0] as usize..self.ends[t - 1] as usize]);
            count = 1;
        }
        count
    }
}

/// Decodes the (valid UTF-8) character starting at `i`; returns it and its length.
#[inline]
fn decode(bytes: &[u8], i: usize) -> (char, usize) {
    let b0 = bytes[i] as u32;
    let (c, n) = if b0 < 0xE0 {
        (((b0 & 0x1F) << 6) | (bytes[i + 1] as u32 & 0x3F), 2)
    } else if b0 < 0xF0 {
        (((b0 & 0x0F) << 12) | ((bytes[i + 1] as u32 & 0x3F) << 6) | (bytes[i + 2] as u32 & 0x3F), 3)
    } else {
        (((b0 & 0x07) << 18) | ((bytes[i + 1] as u32 & 0x3F) << 12) | ((bytes[i + 2] as u32 & 0x3F) << 6) | (bytes[i + 3] as u32 & 0x3F), 4)
    };
    // `text` is a &str, so the sequence is valid; the fallback is unreachable.
    (char::from_u32(c).unwrap_or('\u{FFFD}'), n)
}

/// The set of shingles of `text` as strings (the ground truth for exact Jaccard).
pub fn shingle_set(text: &str, word_n: usize, cjk_n: usize, case_fold: bool) -> std::collections::HashSet<Vec<u8>> {
    let mut t = Tokens::default();
    t.tokenize(text, case_fold);
    let mut set = std::collections::HashSet::new();
    t.for_each_shingle(word_n, cjk_n, |s| {
        set.insert(s.to_vec());
    });
    set
}

/// Exact Jaccard similarity of two shingle sets (1.0 for two empty sets).
pub fn jaccard<T: std::hash::Hash + Eq>(a: &std::collections::HashSet<T>, b: &std::collections::HashSet<T>) -> f64 {
    if a.is_empty() && b.is_empty() {
        return 1.0;
    }
    let (small, large) = if a.len() <= b.len() { (a, b) } else { (b, a) };
    let inter = small.iter().filter(|x| large.contains(*x)).count();
    inter as f64 / (a.len() + b.len() - inter) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shingles(text: &str, w: usize, c: usize) -> Vec<String> {
        let mut t = Tokens::default();
        t.tokenize(text, true);
        let mut v = Vec::new();
        t.for_each_shingle(w, c, |s| v.push(String::from_utf8(s.to_vec()).unwrap()));
        v
    }

    #[test]
    fn cjk_characters_and_latin_words() {
        assert_eq!(shingles("边缘推断应用", 2, 3), ["边缘推", "缘推断", "推断应", "断应用"]);
        assert_eq!(shingles("The GPU, the model!", 2, 3), ["the gpu", "gpu the", "the model"]);
        // A mixture: character n-grams start on Chinese tokens, word n-grams on English ones.
        assert_eq!(shingles("使用GPU资源 Edge nodes", 2, 2), ["使用", "用gpu", "gpu 资", "资源", "源edge", "edge nodes"]);
        // Full-width letters fold to ASCII; case folds.
        assert_eq!(shingles("ＧＰＵ gpu", 2, 2), ["gpu gpu"]);
    }

    #[test]
    fn short_and_empty_texts() {
        assert_eq!(shingles("专利", 5, 5), ["专利"]);
        assert_eq!(shingles("  ,。 ", 5, 5), Vec::<String>::new());
        assert_eq!(shingles("Größe ÄRGER", 5, 5), ["größe ärger"]);
    }

    #[test]
    fn token_boundaries_are_unambiguous() {
        assert_ne!(shingles("ab c", 2, 2), shingles("a bc", 2, 2));
    }

    #[test]
    fn exact_jaccard() {
        let a = shingle_set("一二三四五六七八九十", 5, 3, true);
        let b = shingle_set("一二三四五六七八九", 5, 3, true);
        assert_eq!((a.len(), b.len()), (8, 7));
        assert!((jaccard(&a, &b) - 7.0 / 8.0).abs() < 1e-12);
    }
}
