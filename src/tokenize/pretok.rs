//! The Qwen2 pre-tokenizer, hand-written for speed (the regex needs a look-ahead, which only a
//! backtracking engine such as Oniguruma runs, at ~4 MB/s). It splits exactly as the HF `Split`
//! pre-tokenizer with this pattern and `Isolated` behaviour:
//!
//! ```text
//! (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
//! ```
//!
//! Every character is a letter, a number, whitespace or "other", so some alternative always
//! matches and the pieces cover the text. The alternatives are tried in order at each position,
//! as a leftmost-first backtracking engine does; the comments in [`next_piece`] give, per
//! alternative, the match that backtracking settles on. Character classes come from the Unicode
//! tables of `regex-syntax`; a test compares them with Oniguruma's (through HF) on every code
//! point.
//!
//! The same per-code-point table marks the chars that can make a text non-NFC, so the scan
//! also tells the caller whether the text needed NFC at all (it almost never does), saving a
//! separate pass.

use std::sync::OnceLock;

use unicode_normalization_alignments::char::canonical_combining_class;
use unicode_normalization_alignments::{is_nfc_quick, IsNormalized};

/// The split pattern this module implements (as it appears in `tokenizer.json`).
pub const QWEN2_PATTERN: &str =
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

const LETTER: u8 = 1;
const NUMBER: u8 = 2;
const SPACE: u8 = 4;
/// Not known to be NFC-safe: a canonical combining class other than 0, an NFC quick check
/// other than "Yes", or outside the Basic Multilingual Plane (not tabulated: checking the
/// other planes would cost start-up time for chars that are rare in text).
const NOT_NFC_SAFE: u8 = 8;
/// Number of Unicode code points (the class table covers all of them).
const CODE_POINTS: usize = 0x11_0000;

/// Class bits of every code point: `\p{L}`, `\p{N}`, `\s`, not NFC-safe.
fn classes() -> &'static [u8] {
    static T: OnceLock<Vec<u8>> = OnceLock::new();
    T.get_or_init(|| {
        let mut t = vec![0u8; CODE_POINTS];
        for (pattern, bit) in [(r"\p{L}", LETTER), (r"\p{N}", NUMBER), (r"\s", SPACE)] {
            let hir = regex_syntax::ParserBuilder::new().build().parse(pattern).expect("class pattern parses");
            let regex_syntax::hir::HirKind::Class(regex_syntax::hir::Class::Unicode(class)) = hir.kind() else {
                unreachable!("{pattern} is a Unicode class")
            };
            for r in class.ranges() {
                for k in &mut t[r.start() as usize..=r.end() as usize] {
                    *k |= bit;
                }
            }
        }
        // Below U+0300 every char is a starter with quick check "Yes".
        for (cp, k) in t.iter_mut().enumerate().skip(0x300) {
            let safe = cp < 0x1_0000
                && char::from_u32(cp as u32)
                    .is_some_and(|c| canonical_combining_class(c) == 0 && is_nfc_quick(std::iter::once(c)) == IsNormalized::Yes);
            if !safe {
                *k |= NOT_NFC_SAFE;
            }
        }
        t
    })
}

/// Decodes the char at byte `i` of valid UTF-8: (code point, byte length).
#[inline(always)]
fn decode(s: &[u8], i: usize) -> (u32, usize) {
    let b0 = s[i] as u32;
    if b0 < 0x80 {
        (b0, 1)
    } else if b0 < 0xE0 {
        (((b0 & 0x1F) << 6) | (s[i + 1] as u32 & 0x3F), 2)
    } else if b0 < 0xF0 {
        (((b0 & 0x0F) << 12) | ((s[i + 1] as u32 & 0x3F) << 6) | (s[i + 2] as u32 & 0x3F), 3)
    } else {
        (((b0 & 0x07) << 18) | ((s[i + 1] as u32 & 0x3F) << 12) | ((s[i + 2] as u32 & 0x3F) << 6) | (s[i + 3] as u32 & 0x3F), 4)
    }
}

#[inline]
fn is_crlf(c: u32) -> bool {
    c == b'\r' as u32 || c == b'\n' as u32
}

/// Length of a contraction (`'s`, `'t`, `'re`, `'ve`, `'m`, `'ll`, `'d`, case-insensitive, with
/// Unicode simple case folding as Oniguruma applies it: `ſ` (U+017F) folds to `s`) starting
/// right after an apostrophe at `i`, or 0.
#[inline]
fn contraction(s: &[u8], i: usize) -> usize {
    let lower = |j: usize| -> Option<(u8, usize)> {
        if j >= s.len() {
            return None;
        }
        let (c, l) = decode(s, j);
        if c == 0x17F {
            return Some((b's', l));
        }
        if c < 0x80 {
            return Some(((c as u8).to_ascii_lowercase(), 1));
        }
        None
    };
    match lower(i) {
        Some((b's' | b't' | b'm' | b'd', l)) => l,
        Some((b'r', l)) if matches!(lower(i + l), Some((b'e', _))) => l + 1,
        Some((b'v', l)) if matches!(lower(i + l), Some((b'e', _))) => l + 1,
        Some((b'l', l)) if matches!(lower(i + l), Some((b'l', _))) => l + 1,
        _ => 0,
    }
}

/// Splits one text; remembers whether any char it looked at is not NFC-safe.
struct Scanner<'a> {
    s: &'a [u8],
    table: &'static [u8],
    /// Union of the class bits of every char looked up.
    seen: u8,
}

impl Scanner<'_> {
    /// Class bits of code point `c`.
    #[inline]
    fn class(&mut self, c: u32) -> u8 {
        let k = self.table[c as usize];
        self.seen |= k;
        k
    }

    /// End of the run of chars from `i` whose class satisfies `keep`.
    #[inline]
    fn scan(&mut self, mut i: usize, keep: impl Fn(u32, u8) -> bool) -> usize {
        while i < self.s.len() {
            let (c, l) = decode(self.s, i);
            if !keep(c, self.class(c)) {
                break;
            }
            i += l;
        }
        i
    }

    /// End of the piece that starts at byte `i` (`i < s.len()`).
    #[inline]
    fn next_piece(&mut self, i: usize) -> usize {
        let s = self.s;
        let (c, l) = decode(s, i);
        let cls = self.class(c);
        // 1. (?i:'s|'t|'re|'ve|'m|'ll|'d)
        if c == b'\'' as u32 {
            let n = contraction(s, i + 1);
            if n > 0 {
                return i + 1 + n;
            }
        }
        // 2. [^\r\n\p{L}\p{N}]?\p{L}+ — a letter run, or one non-letter/number/CR/LF char followed
        //    by a letter run (when no letter follows, the optional char backtracks away and \p{L}+
        //    cannot start on it).
        if cls & LETTER != 0 {
            return self.scan(i + l, |_, k| k & LETTER != 0);
        }
        if cls & NUMBER == 0 && !is_crlf(c) && i + l < s.len() {
            let (c2, l2) = decode(s, i + l);
            if self.class(c2) & LETTER != 0 {
                return self.scan(i + l + l2, |_, k| k & LETTER != 0);
            }
        }
        // 3. \p{N} — one number char.
        if cls & NUMBER != 0 {
            return i + l;
        }
        // 4. ` ?[^\s\p{L}\p{N}]+[\r\n]*` — "other" chars, optionally after one space, then CR/LF.
        let other = |k: u8| k & (LETTER | NUMBER | SPACE) == 0;
        let start = if c == b' ' as u32 && i + 1 < s.len() && {
            let c1 = decode(s, i + 1).0;
            other(self.class(c1))
        } {
            i + 1
        } else {
            i
        };
        if other(cls) || start > i {
            let end = self.scan(start, |_, k| other(k));
            return self.scan(end, |ch, _| is_crlf(ch));
        }
        // c is whitespace. Let W = the maximal whitespace run from i.
        let mut last_crlf_end = 0;
        let mut last_char_start = i;
        let mut j = i;
        while j < s.len() {
            let (ch, lj) = decode(s, j);
            if self.class(ch) & SPACE == 0 {
                break;
            }
            last_char_start = j;
            j += lj;
            if is_crlf(ch) {
                last_crlf_end = j;
            }
        }
        // 5. \s*[\r\n]+ — \s* backs off to the last CR/LF of W; the match ends after it.
        if last_crlf_end > 0 {
            return last_crlf_end;
        }
        // 6. \s+(?!\S) — all of W at the end of the text, else W minus its last char (if non-empty).
        if j == s.len() {
            return j;
        }
        if last_char_start > i {
            return last_char_start;
        }
        // 7. \s+ — the single whitespace char before a non-space.
        j
    }
}

/// Calls `f` with each piece of `s`, in order.
#[inline]
pub fn split<'a>(s: &'a str, f: impl FnMut(&'a str)) {
    split_checking_nfc(s, false, f);
}

/// Calls `f` with each piece of `s`, in order. With `stop_if_not_nfc_safe`, stops before the
/// first piece that holds a char which is not NFC-safe and returns false (the pieces given so
/// far are then to be dropped: NFC may change the text before that char too); else true.
#[inline]
pub fn split_checking_nfc<'a>(s: &'a str, stop_if_not_nfc_safe: bool, mut f: impl FnMut(&'a str)) -> bool {
    let b = s.as_bytes();
    let mut sc = Scanner { s: b, table: classes(), seen: 0 };
    let mut i = 0;
    while i < b.len() {
        let e = sc.next_piece(i);
        if stop_if_not_nfc_safe && sc.seen & NOT_NFC_SAFE != 0 {
            return false;
        }
        // Pieces end on char boundaries: every step above advances by whole chars.
        f(&s[i..e]);
        i = e;
    }
    true
}

/// Forces the class table to be built (so the first encode does not pay for it).
pub fn init() {
    classes();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pieces(s: &str) -> Vec<&str> {
        let mut v = Vec::new();
        split(s, |p| v.push(p));
        v
    }

    #[test]
    fn splits_like_the_regex() {
        assert_eq!(pieces("Hello world"), ["Hello", " world"]);
        assert_eq!(pieces("it's I'LL"), ["it", "'s", " I", "'LL"]);
        assert_eq!(pieces("a  \n  b"), ["a", "  \n", " ", " b"]);
        assert_eq!(pieces("x   "), ["x", "   "]);
        assert_eq!(pieces("x   y"), ["x", "  ", " y"]);
        assert_eq!(pieces("123"), ["1", "2", "3"]);
        assert_eq!(pieces(" !!\n\nx"), [" !!\n\n", "x"]);
        assert_eq!(pieces("中文，测试。"), ["中文", "，测试", "。"]);
        assert_eq!(pieces("\t\tx"), ["\t", "\tx"]);
    }
}
