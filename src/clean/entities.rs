//! HTML character references left in text (`&nbsp;`, `&amp;`, `&#x201c;`, `&#8220;`).
//!
//! Named references use the project's HTML5 table ([`crate::io::entities`]); a
//! reference must end with `;` (so `AT&T` and `&copy` in prose stay). Numeric references follow
//! the HTML rules where they matter for text: `&#13;` is a line break, C1 references
//! (`&#147;`) are the Windows-1252 characters web pages meant, and references to control
//! characters, surrogates, noncharacters or past U+10FFFF are removed. Unknown names are left
//! as they are.

use super::rewrite::Rewriter;
use crate::io::entities;

/// Longest entity name in the table is 31 characters (`CounterClockwiseContourIntegral`).
const MAX_NAME: usize = 32;

/// Windows-1252 characters for code points 0x80–0x9F (HTML's numeric-reference fix-up);
/// `None` where Windows-1252 has no character.
const CP1252_C1: [Option<char>; 32] = [
    Some('€'),
    None,
    Some('‚'),
    Some('ƒ'),
    Some('„'),
    Some('…'),
    Some('†'),
    Some('‡'),
    Some('ˆ'),
    Some('‰'),
    Some('Š'),
    Some('‹'),
    Some('Œ'),
    None,
    Some('Ž'),
    None,
    None,
    Some('‘'),
    Some('’'),
    Some('“'),
    Some('”'),
    Some('•'),
    Some('–'),
    Some('—'),
    Some('˜'),
    Some('™'),
    Some('š'),
    Some('›'),
    Some('œ'),
    None,
    Some('ž'),
    Some('Ÿ'),
];

/// What a reference decodes to.
enum Decoded {
    Str(&'static str),
    Char(char),
    Nothing,
}

/// Parses a reference at the start of `b` (which starts with `&`): its length and value.
fn parse(b: &[u8]) -> Option<(usize, Decoded)> {
    if b.get(1) == Some(&b'#') {
        let (hex, start) = match b.get(2) {
            Some(b'x' | b'X') => (true, 3),
            _ => (false, 2),
        };
        let mut v: u32 = 0;
        let mut i = start;
        while i < b.len() && i - start < 8 {
            let d = match (hex, b[i]) {
                (_, c @ b'0'..=b'9') => (c - b'0') as u32,
                (true, c @ b'a'..=b'f') => (c - b'a' + 10) as u32,
                (true, c @ b'A'..=b'F') => (c - b'A' + 10) as u32,
                _ => break,
            };
            v = v * if hex { 16 } else { 10 } + d;
            i += 1;
        }
        if i == start || b.get(i) != Some(&b';') {
            return None;
        }
        return Some((i + 1, numeric(v)));
    }
    let mut i = 1;
    while i < b.len() && i <= MAX_NAME && (b[i].is_ascii_alphanumeric()) {
        i += 1;
    }
    if i == 1 || !b[1].is_ascii_alphabetic() || b.get(i) != Some(&b';') {
        return None;
    }
    let name = std::str::from_utf8(&b[1..i]).ok()?;
    entities::lookup(name).map(|s| (i + 1, Decoded::Str(s)))
}

fn numeric(v: u32) -> Decoded {
    match v {
        0x09 | 0x0a => Decoded::Char(v as u8 as char),
        0x0d => Decoded::Char('\n'),
        0x80..=0x9f => CP1252_C1[(v - 0x80) as usize].map_or(Decoded::Nothing, Decoded::Char),
        0..=0x1f | 0x7f => Decoded::Nothing,
        0xfdd0..=0xfdef => Decoded::Nothing,
        _ if v & 0xfffe == 0xfffe => Decoded::Nothing,
        _ => char::from_u32(v).map_or(Decoded::Nothing, Decoded::Char),
    }
}

impl Decoded {
    fn is_ampersand(&self) -> bool {
        matches!(self, Decoded::Str("&") | Decoded::Char('&'))
    }
}

/// Writes `w.src()` with its references decoded. Escaped escapes are decoded in the same
/// pass (`&amp;lt;` → `<`, `&amp;amp;amp;` → `&`): a decoded `&` is read again with what follows.
pub fn run(w: &mut Rewriter<'_>) {
    let src = w.src();
    let b = src.as_bytes();
    let mut last = 0;
    let mut from = 0;
    // `&` + the bytes after a decoded `&`, to parse them as one reference.
    let mut again = [0u8; MAX_NAME + 4];
    while let Some(off) = memchr::memchr(b'&', &b[from..]) {
        let at = from + off;
        let Some((len, mut d)) = parse(&b[at..]) else {
            from = at + 1;
            continue;
        };
        w.keep(last, at);
        last = at + len;
        while d.is_ampersand() {
            let n = (b.len() - last).min(again.len() - 1);
            again[0] = b'&';
            again[1..=n].copy_from_slice(&b[last..last + n]);
            match parse(&again[..=n]) {
                Some((len, next)) => {
                    last += len - 1;
                    d = next;
                }
                None => break,
            }
        }
        match d {
            Decoded::Str(s) => w.push_str(s),
            Decoded::Char(c) => w.push(c),
            Decoded::Nothing => {}
        }
        from = last;
    }
    w.keep(last, b.len());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clean::rewrite::run_stage;

    fn decode(s: &str) -> String {
        let mut t = s.to_string();
        run_stage(&mut t, &mut String::new(), run);
        t
    }

    #[test]
    fn named_and_numeric() {
        assert_eq!(decode("a&nbsp;b &amp; c&lt;d&gt;"), "a\u{a0}b & c<d>");
        assert_eq!(decode("&#x201c;quoted&#x201D; &#8220;x&#8221; &#xb0;C &#x3bc;m"), "“quoted” “x” °C μm");
        assert_eq!(decode("&minus;5 &emsp;&agr;"), "−5 \u{2003}α");
        assert_eq!(decode("&#147;cp1252&#148; &#x80;"), "“cp1252” €");
        assert_eq!(decode("a&#13;b&#10;c&#9;d"), "a\nb\nc\td");
        assert_eq!(decode("x&#0;&#1;&#x7f;&#xD800;&#x110000;&#xFFFF;&#129;y"), "xy");
    }

    #[test]
    fn leaves_what_is_not_a_reference() {
        for s in ["AT&T", "&copy 2019", "&unknownname;", "&;", "&#;", "&#x;", "& amp;", "R&D&#", "&#99999999999;", "a & b", "&中;"] {
            assert_eq!(decode(s), s);
        }
    }

    #[test]
    fn escaped_escapes_decode_in_one_pass() {
        assert_eq!(decode("&amp;lt;p&amp;gt;"), "<p>");
        assert_eq!(decode(&format!("&{}lt;", "amp;".repeat(1000))), "<");
        assert_eq!(decode("&amp;amp &amp;T &#38;#x41;"), "&amp &T A");
    }
}
