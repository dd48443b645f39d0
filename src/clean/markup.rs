//! Leftover markup: HTML/XML tags that survived in web text or in patent full text (`<br>`,
//! `<p id="p0001" num="0001">`, `</claim-text>`), comments, processing instructions and
//! declarations.
//!
//! Only tags with a known name are stripped, so prose such as `a<b and c>d`, `<First
//! Embodiment>` or `x<y>z` is left alone unless `y` is a configured tag name. Block-level tags
//! become a line break (paragraphs stay apart), inline tags disappear (`H<sub>2</sub>O` → `H2O`).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::rewrite::Rewriter;
use super::script::{classify, CharClass};

/// Leftover-markup stripping.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct MarkupConfig {
    /// Strip tags, comments (`<!-- -->`), processing instructions (`<? ?>`) and declarations
    /// (`<!DOCTYPE …>`).
    pub enabled: bool,
    /// Tag names (case-insensitive) replaced by a line break: HTML block elements and the
    /// paragraph-like elements of patent XML.
    pub block_tags: Vec<String>,
    /// Tag names (case-insensitive) removed without a trace: HTML inline elements and the
    /// inline elements of patent XML.
    pub inline_tags: Vec<String>,
    /// A tag (with its attributes) longer than this many bytes is not taken for a tag.
    pub max_tag_bytes: usize,
}

impl Default for MarkupConfig {
    fn default() -> Self {
        let block = "address article aside blockquote body br caption dd div dl dt figcaption figure footer form h1 h2 h3 h4 h5 h6 head header hr html img li main nav ol p pre section table tbody td tfoot th thead title tr ul \
                     abstract claim claim-text claims description description-of-drawings heading entry row tables tgroup";
        let inline = "a abbr b bdi bdo big center cite code data del dfn em font i ins kbd label mark nobr q s samp small span strike strong sub sup time tt u var wbr \
                      claim-ref colspec crossref figref o patcit nplcit smallcaps sub2 sup2";
        let words = |s: &str| s.split_whitespace().map(str::to_string).collect();
        Self { enabled: true, block_tags: words(block), inline_tags: words(inline), max_tag_bytes: 2048 }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Block,
    Inline,
}

/// The compiled tag table.
#[derive(Debug)]
pub struct Markup {
    tags: HashMap<Vec<u8>, Kind>,
    max_name: usize,
    max_tag_bytes: usize,
}

impl Markup {
    /// Builds the tag table.
    pub fn new(cfg: &MarkupConfig) -> Self {
        let mut tags = HashMap::new();
        for t in &cfg.inline_tags {
            tags.insert(t.to_ascii_lowercase().into_bytes(), Kind::Inline);
        }
        for t in &cfg.block_tags {
            tags.insert(t.to_ascii_lowercase().into_bytes(), Kind::Block);
        }
        let max_name = tags.keys().map(Vec::len).max().unwrap_or(0);
        Self { tags, max_name, max_tag_bytes: cfg.max_tag_bytes }
    }

    /// If a tag (or comment, PI, declaration) starts `b` (at a `<`): its length and whether it
    /// becomes a line break.
    /// `comments_close` turns false once a comment found no end: none later will (this keeps
    /// a text full of `<!--` linear).
    fn tag_at(&self, b: &[u8], comments_close: &mut bool) -> Option<(usize, bool)> {
        let limit = &b[..b.len().min(self.max_tag_bytes)];
        if b.starts_with(b"<!--") {
            // Comments may be long and may contain tags (EPO's `<!-- EPO <DP n="2"> -->`).
            if !*comments_close {
                return None;
            }
            let end = memchr::memmem::find(&b[4..], b"-->").map(|e| (4 + e + 3, false));
            *comments_close = end.is_some();
            return end;
        }
        if b.starts_with(b"<?") || (b.len() > 2 && b[1] == b'!' && b[2].is_ascii_alphabetic()) {
            let end = memchr::memchr(b'>', limit)?;
            return (!limit[1..end].contains(&b'<')).then_some((end + 1, false));
        }
        let start = if b.get(1) == Some(&b'/') { 2 } else { 1 };
        let mut i = start;
        while i < limit.len()
            && i - start <= self.max_name
            && (limit[i].is_ascii_alphanumeric() || matches!(limit[i], b'-' | b'_' | b':' | b'.'))
        {
            i += 1;
        }
        if i == start || !limit[start].is_ascii_alphabetic() || i - start > self.max_name {
            return None;
        }
        let mut name = [0u8; 64];
        let n = i - start;
        if n > name.len() {
            return None;
        }
        for (d, s) in name.iter_mut().zip(&limit[start..i]) {
            *d = s.to_ascii_lowercase();
        }
        let kind = *self.tags.get(&name[..n])?;
        // After the name: `>`, `/>`, or attributes, each `name=value` (a bare word is prose:
        // `a<b and c>d` is not a bold tag).
        let block = kind == Kind::Block;
        loop {
            let had_space = space_len(limit, i) > 0;
            i = skip_space(limit, i);
            match limit.get(i)? {
                b'>' => return Some((i + 1, block)),
                b'/' => return (limit.get(i + 1) == Some(&b'>')).then_some((i + 2, block)),
                c if had_space && (c.is_ascii_alphabetic() || *c == b'_' || *c == b':') => {}
                _ => return None,
            }
            while i < limit.len() && (limit[i].is_ascii_alphanumeric() || matches!(limit[i], b'-' | b'_' | b':' | b'.')) {
                i += 1;
            }
            i = skip_space(limit, i);
            if limit.get(i) != Some(&b'=') {
                return None;
            }
            i = skip_space(limit, i + 1);
            match limit.get(i)? {
                &q @ (b'"' | b'\'') => {
                    let end = memchr::memchr(q, &limit[i + 1..])?;
                    i += end + 2;
                }
                _ => {
                    let s = i;
                    while i < limit.len() && space_len(limit, i) == 0 && !matches!(limit[i], b'>' | b'<' | b'"' | b'\'' | b'=') {
                        i += 1;
                    }
                    if i == s {
                        return None;
                    }
                }
            }
        }
    }

    /// Writes `w.src()` without markup.
    pub fn run(&self, w: &mut Rewriter<'_>) {
        let b = w.src().as_bytes();
        let mut last = 0;
        let mut from = 0;
        let mut comments_close = true;
        while let Some(off) = memchr::memchr(b'<', &b[from..]) {
            let at = from + off;
            match self.tag_at(&b[at..], &mut comments_close) {
                Some((len, block)) => {
                    w.keep(last, at);
                    if block {
                        w.push_str("\n");
                    }
                    last = at + len;
                    from = last;
                }
                None => from = at + 1,
            }
        }
        w.keep(last, b.len());
    }
}

/// Byte length of the white-space character at `b[i]` (0 if none or out of bounds). Any
/// Unicode white space separates attributes, as the white-space stage may turn it into a
/// space later: a tag must not become one only after that.
#[inline]
fn space_len(b: &[u8], i: usize) -> usize {
    match b.get(i) {
        None => 0,
        Some(b' ' | b'\t' | b'\n' | b'\r' | b'\x0b' | b'\x0c') => 1,
        Some(&x) if x < 0x80 => 0,
        Some(&x) => {
            let n = match x {
                0xc0..=0xdf => 2,
                0xe0..=0xef => 3,
                _ => 4,
            };
            // `b` may end inside a character (the tag-length limit): then it is not a space.
            match b.get(i..i + n).and_then(|s| std::str::from_utf8(s).ok()).and_then(|s| s.chars().next()) {
                Some(c) if matches!(classify(c), CharClass::Space | CharClass::Newline) => n,
                _ => 0,
            }
        }
    }
}

fn skip_space(b: &[u8], mut i: usize) -> usize {
    loop {
        let n = space_len(b, i);
        if n == 0 {
            return i;
        }
        i += n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clean::rewrite::run_stage;

    fn strip(s: &str) -> String {
        let m = Markup::new(&MarkupConfig::default());
        let mut t = s.to_string();
        run_stage(&mut t, &mut String::new(), |w| m.run(w));
        t
    }

    #[test]
    fn strips_known_tags() {
        assert_eq!(strip("line one<br>line two<BR/>three<br />four"), "line one\nline two\nthree\nfour");
        assert_eq!(strip("<p>H<sub>2</sub>O is <b class=\"x\">water</b></p>"), "\nH2O is water\n");
        assert_eq!(strip("<a href=\"x>y\" title='a<b'>link</a>"), "link");
        assert_eq!(strip("<p\u{a0}class=x\u{3000}>a</p\u{2003}>"), "\na\n");
        assert_eq!(strip("<td align=center\n  width = '5'>cell</td ><img src=a.png/>"), "\ncell\n\n");
        assert_eq!(
            strip("<heading id=\"h0001\">Field</heading><p id=\"p0001\" num=\"0001\">This invention<!-- EPO <DP n=\"2\"> --> relates</p>"),
            "\nField\n\nThis invention relates\n"
        );
        assert_eq!(strip("<?xml version=\"1.0\"?><!DOCTYPE html>text"), "text");
        assert_eq!(strip("<claim-text>1. A device<claim-ref idref=\"c1\">claim 1</claim-ref></claim-text>"), "\n1. A deviceclaim 1\n");
    }

    #[test]
    fn leaves_prose_alone() {
        for s in [
            "a<b and c>d",
            "<b =x>",
            "<b x=>",
            "<p x=\"1\"y=\"2\">",
            "<First Embodiment>",
            "x<y>z",
            "if a < b then",
            "<3",
            "<<>>",
            "<p",
            "<!-- unclosed",
            "<b\nunclosed",
            "《三体》<三体>",
            "<br",
            "<sub 2",
        ] {
            assert_eq!(strip(s), s);
        }
    }
}
