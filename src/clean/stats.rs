//! One pass over a document's characters: letter counts by script, the units repetition is
//! measured in, Gopher's symbol count; one pass over its lines.
//!
//! Units are right for the script: a CJK character (ideograph, kana, CJK punctuation,
//! full-width form) is a unit on its own, because CJK text has no spaces between words; any
//! other run of non-space characters is a word. English text is thus measured in words and
//! Chinese text in characters, and a Chinese sentence with an embedded `GPU` or `2014` is
//! measured in both, as a reader would.

use xxhash_rust::xxh3::xxh3_64;

use super::script::{classify, is_single_unit, CharClass, Script};
use super::table::mix;

/// Base of the polynomial n-gram hash (odd, so multiplication is invertible mod 2^64).
const NGRAM_BASE: u64 = 0x9e37_79b9_7f4a_7c15;

/// Counts the filters use.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TextStats {
    /// Characters (Unicode scalar values).
    pub chars: usize,
    /// Alphabetic characters.
    pub letters: usize,
    /// Letters in the CJK script (Han, kana, bopomofo, Hangul).
    pub cjk_letters: usize,
    /// Latin letters.
    pub latin_letters: usize,
    /// Units (CJK characters and words).
    pub units: usize,
    /// Units that are single CJK-width characters.
    pub single_units: usize,
    /// Units with at least one letter.
    pub alpha_units: usize,
    /// Word units (runs of non-space, non-CJK characters).
    pub words: usize,
    /// Characters in word units.
    pub word_chars: usize,
    /// Gopher's symbols: `#`, `…`, and each `...`.
    pub symbols: usize,
    /// Non-empty lines.
    pub lines: usize,
    /// Lines starting with a bullet.
    pub bullet_lines: usize,
    /// Lines ending with an ellipsis (`...` or `…`).
    pub ellipsis_lines: usize,
}

impl TextStats {
    /// Fraction of the letters in `script` (0 when there are no letters).
    pub fn script_ratio(&self, script: Script) -> f64 {
        let n = match script {
            Script::Cjk => self.cjk_letters,
            Script::Latin => self.latin_letters,
        };
        ratio(n, self.letters)
    }
}

/// `a / b`, 0 when `b` is 0.
#[inline]
pub fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

/// Prefix sums over the units of a document, for O(1) n-gram hashes and lengths.
#[derive(Default)]
pub struct Units {
    /// `hash[k]` = polynomial hash of units `0..k`.
    hash: Vec<u64>,
    /// `chars[k]` = characters in units `0..k`.
    chars: Vec<u32>,
    /// `NGRAM_BASE^n` for the n in use.
    pow: Vec<u64>,
}

impl Units {
    /// Number of units.
    pub fn len(&self) -> usize {
        self.hash.len().saturating_sub(1)
    }

    /// Whether there are no units.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Hash of the `n` units starting at unit `i`. Its low bits are as uniform as the units'
    /// hashes (the last unit's hash is added with factor 1), so tables index by them directly.
    #[inline]
    pub fn ngram(&self, i: usize, n: usize) -> u64 {
        self.hash[i + n].wrapping_sub(self.hash[i].wrapping_mul(self.pow[n]))
    }

    /// Characters in the `n` units starting at unit `i`.
    #[inline]
    pub fn ngram_chars(&self, i: usize, n: usize) -> usize {
        (self.chars[i + n] - self.chars[i]) as usize
    }

    /// Makes `ngram` usable for every n up to `max_n`.
    pub fn prepare_pow(&mut self, max_n: usize) {
        while self.pow.len() <= max_n {
            let next = self.pow.last().map_or(1, |p| p.wrapping_mul(NGRAM_BASE));
            self.pow.push(next);
        }
    }

    fn reserve(&mut self, n: usize) {
        self.hash.reserve(n);
        self.chars.reserve(n);
    }

    fn clear(&mut self) {
        self.hash.clear();
        self.hash.push(0);
        self.chars.clear();
        self.chars.push(0);
    }

    #[inline]
    fn push(&mut self, h: u64, chars: usize) {
        // Never empty: `clear` leaves the leading 0.
        let (prev, pc) = (self.hash[self.hash.len() - 1], self.chars[self.chars.len() - 1]);
        self.hash.push(prev.wrapping_mul(NGRAM_BASE).wrapping_add(h));
        self.chars.push(pc.saturating_add(chars as u32));
    }
}

/// Bullets a line may start with (Gopher counts `•` and `-`; these are their common kin).
const BULLETS: &[char] = &['•', '●', '○', '◦', '▪', '■', '□', '►', '▶', '➢', '✓', '-', '*', '–'];

/// A non-empty line (trimmed), or a paragraph break (`chars == 0`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Line {
    /// Hash of the trimmed line.
    pub hash: u64,
    /// Characters in the trimmed line; 0 marks one or more blank lines.
    pub chars: u32,
}

/// Counts everything in one pass over the characters and one over the lines; fills `units`
/// and `lines`.
pub fn compute(text: &str, units: &mut Units, lines: &mut Vec<Line>) -> TextStats {
    let mut st = TextStats::default();
    units.clear();
    units.reserve(text.len() / 2);
    let bytes = text.as_bytes();
    // Characters per class, summed up at the end (one increment per character).
    let mut per_class = [0usize; 8];
    let mut word_start = usize::MAX; // MAX: no word open
    let mut word_chars = 0usize;
    let mut word_alpha = false;
    let mut dots = 0usize;
    let (mut n_words, mut n_word_chars, mut n_single, mut alpha_units, mut symbols) = (0usize, 0usize, 0usize, 0usize, 0usize);

    let mut i = 0;
    while i < bytes.len() {
        // ASCII without decoding; otherwise one character.
        let (c, len) = if bytes[i] < 0x80 { (bytes[i] as char, 1) } else { decode(bytes, i) };
        let at = i;
        i += len;
        let class = classify(c);
        per_class[class as usize] += 1;
        if class == CharClass::Other {
            match c {
                '.' => {
                    dots += 1;
                    continue_word(&mut word_start, &mut word_chars, &mut word_alpha, at, false);
                    continue;
                }
                '#' | '…' => symbols += 1,
                _ => {}
            }
        }
        if dots > 0 {
            symbols += dots / 3;
            dots = 0;
        }
        match class {
            CharClass::Newline | CharClass::Space => {
                if word_start != usize::MAX {
                    units.push(xxh3_64(&bytes[word_start..at]), word_chars);
                    n_words += 1;
                    n_word_chars += word_chars;
                    alpha_units += word_alpha as usize;
                    word_start = usize::MAX;
                }
            }
            _ if is_single_unit(c, class) => {
                if word_start != usize::MAX {
                    units.push(xxh3_64(&bytes[word_start..at]), word_chars);
                    n_words += 1;
                    n_word_chars += word_chars;
                    alpha_units += word_alpha as usize;
                    word_start = usize::MAX;
                }
                // Distinct from any word hash: words go through xxh3, characters through mix.
                units.push(mix(c as u64 | 1 << 40), 1);
                n_single += 1;
                alpha_units += class.is_letter() as usize;
            }
            _ => continue_word(&mut word_start, &mut word_chars, &mut word_alpha, at, class.is_letter()),
        }
    }
    if word_start != usize::MAX {
        units.push(xxh3_64(&bytes[word_start..]), word_chars);
        n_words += 1;
        n_word_chars += word_chars;
        alpha_units += word_alpha as usize;
    }
    symbols += dots / 3;

    let count = |cl: CharClass| per_class[cl as usize];
    st.chars = per_class.iter().sum();
    st.cjk_letters = count(CharClass::CjkLetter) + count(CharClass::Hangul);
    st.latin_letters = count(CharClass::Latin);
    st.letters = st.cjk_letters + st.latin_letters + count(CharClass::OtherLetter);
    st.words = n_words;
    st.word_chars = n_word_chars;
    st.single_units = n_single;
    st.units = n_words + n_single;
    st.alpha_units = alpha_units;
    st.symbols = symbols;

    lines.clear();
    for line in text.split('\n') {
        let line = line.trim();
        if line.is_empty() {
            if lines.last().is_some_and(|l| l.chars > 0) {
                lines.push(Line { hash: 0, chars: 0 });
            }
            continue;
        }
        st.lines += 1;
        if line.starts_with(BULLETS) {
            st.bullet_lines += 1;
        }
        if line.ends_with("...") || line.ends_with('…') {
            st.ellipsis_lines += 1;
        }
        lines.push(Line { hash: xxh3_64(line.as_bytes()), chars: count_chars(line.as_bytes()).max(1) as u32 });
    }
    st
}

#[inline]
fn continue_word(start: &mut usize, chars: &mut usize, alpha: &mut bool, at: usize, letter: bool) {
    if *start == usize::MAX {
        *start = at;
        *chars = 0;
        *alpha = false;
    }
    *chars += 1;
    *alpha |= letter;
}

/// The (non-ASCII) character starting at byte `i` of valid UTF-8, and its length.
#[inline]
fn decode(b: &[u8], i: usize) -> (char, usize) {
    let b0 = b[i] as u32;
    let (u, len) = if b0 < 0xe0 {
        (((b0 & 0x1f) << 6) | (b[i + 1] as u32 & 0x3f), 2)
    } else if b0 < 0xf0 {
        (((b0 & 0x0f) << 12) | ((b[i + 1] as u32 & 0x3f) << 6) | (b[i + 2] as u32 & 0x3f), 3)
    } else {
        (((b0 & 0x07) << 18) | ((b[i + 1] as u32 & 0x3f) << 12) | ((b[i + 2] as u32 & 0x3f) << 6) | (b[i + 3] as u32 & 0x3f), 4)
    };
    // Valid UTF-8 (from a `&str`) decodes to a valid scalar value.
    (char::from_u32(u).unwrap_or(char::REPLACEMENT_CHARACTER), len)
}

/// Characters in a UTF-8 byte string (bytes that are not continuation bytes).
#[inline]
pub fn count_chars(b: &[u8]) -> usize {
    b.iter().filter(|&&x| (x as i8) >= -0x40).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_are_words_and_cjk_characters() {
        let mut u = Units::default();
        let st = compute("本发明 uses a GPU，共8个。", &mut u, &mut Vec::new());
        // 本 发 明 | uses | a | GPU | ， | 共 | 8 | 个 | 。
        assert_eq!(st.units, 11);
        assert_eq!(st.single_units, 7);
        assert_eq!(st.words, 4);
        assert_eq!(st.alpha_units, 8);
        assert_eq!(st.cjk_letters, 5);
        assert_eq!(st.latin_letters, 8);
        assert_eq!(st.letters, 13);
        assert_eq!(st.chars, 19);
        assert_eq!(u.len(), 11);
        u.prepare_pow(3);
        assert_eq!(u.ngram_chars(3, 3), 4 + 1 + 3);
    }

    #[test]
    fn equal_ngrams_hash_equal() {
        let mut u = Units::default();
        compute("a b c a b c 中文中文", &mut u, &mut Vec::new());
        u.prepare_pow(3);
        assert_eq!(u.ngram(0, 3), u.ngram(3, 3));
        assert_ne!(u.ngram(0, 3), u.ngram(1, 3));
        assert_eq!(u.ngram(6, 2), u.ngram(8, 2));
        assert_ne!(u.ngram(6, 2), u.ngram(7, 2));
    }

    #[test]
    fn symbols_and_lines() {
        let mut u = Units::default();
        let mut lines = Vec::new();
        let st = compute("# a....\n\n• b…\n- c\nd ... e", &mut u, &mut lines);
        assert_eq!(lines.iter().map(|l| l.chars).collect::<Vec<_>>(), [7, 0, 4, 3, 7]);
        assert_eq!(st.symbols, 1 + 1 + 1 + 1);
        assert_eq!(st.lines, 4);
        assert_eq!(st.bullet_lines, 2);
        assert_eq!(st.ellipsis_lines, 2);
        assert_eq!(count_chars("中a".as_bytes()), 2);
    }
}
