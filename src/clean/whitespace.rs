//! White space: lines trimmed, runs of spaces collapsed, blank-line runs capped, no leading or
//! trailing blank lines. Paragraph breaks (a blank line) are kept.

use serde::{Deserialize, Serialize};

use super::rewrite::Rewriter;
use super::script::{classify, CharClass};

/// White-space normalization.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct WhitespaceConfig {
    /// Trim every line, collapse each run of horizontal white space (Unicode `White_Space`:
    /// spaces, tabs, no-break and ideographic spaces) to one space — or one tab if the run holds
    /// a tab — and trim the text.
    pub enabled: bool,
    /// Most consecutive line breaks kept (2 = paragraphs separated by one blank line); 1 to
    /// 1000 (the normalizer holds a run of this many line breaks).
    #[schemars(range(min = 1, max = 1000))]
    pub max_newlines: usize,
}

impl Default for WhitespaceConfig {
    fn default() -> Self {
        Self { enabled: true, max_newlines: 2 }
    }
}

/// Bytes that may start a white-space character: ASCII space, tab, line breaks, and the lead
/// bytes of U+0085/U+00A0 (0xC2), U+1680 (0xE1), U+2000–U+205F (0xE2), U+3000 (0xE3).
const fn maybe_space() -> [bool; 256] {
    let mut t = [false; 256];
    t[b' ' as usize] = true;
    t[b'\t' as usize] = true;
    t[b'\n' as usize] = true;
    t[b'\r' as usize] = true;
    t[0x0b] = true;
    t[0x0c] = true;
    t[0xc2] = true;
    t[0xe1] = true;
    t[0xe2] = true;
    t[0xe3] = true;
    t
}
static MAYBE_SPACE: [bool; 256] = maybe_space();

/// The configured normalizer.
#[derive(Debug)]
pub struct Whitespace {
    /// `max_newlines` line breaks, sliced for shorter runs.
    newline_run: String,
}

impl Whitespace {
    /// Builds the normalizer (`max_newlines` is validated by the caller).
    pub fn new(cfg: &WhitespaceConfig) -> Self {
        Self { newline_run: "\n".repeat(cfg.max_newlines.max(1)) }
    }

    /// Writes `w.src()` with normalized white space.
    pub fn run(&self, w: &mut Rewriter<'_>) {
        run(&self.newline_run, w)
    }
}

fn run(newline_run: &str, w: &mut Rewriter<'_>) {
    let src = w.src();
    let b = src.as_bytes();
    let mut i = 0;
    let mut content_start: Option<usize> = None; // start of the pending run of non-space bytes
    let mut any_content = false;
    let mut newlines = 0usize; // line breaks since the last content
    let mut space: Option<&'static str> = None; // pending horizontal space
    while i < b.len() {
        let (class, len) = if !MAYBE_SPACE[b[i] as usize] {
            (CharClass::Other, 1)
        } else if b[i] < 0x80 {
            (classify(b[i] as char), 1)
        } else {
            // Lead bytes shared with common non-space characters (“ ” — 。、): compare the
            // bytes before decoding.
            let is_space = match (b[i], b[i + 1]) {
                (0xc2, 0x85 | 0xa0) => true,
                (0xe1, 0x9a) => b[i + 2] == 0x80,
                (0xe2, 0x80) => matches!(b[i + 2], 0x80..=0x8a | 0xa8 | 0xa9 | 0xaf),
                (0xe2, 0x81) => b[i + 2] == 0x9f,
                (0xe3, 0x80) => b[i + 2] == 0x80,
                _ => false,
            };
            if is_space {
                let c = src[i..].chars().next().expect("in bounds");
                (classify(c), c.len_utf8())
            } else {
                (CharClass::Other, 1)
            }
        };
        match class {
            CharClass::Newline | CharClass::Space => {
                if let Some(s) = content_start.take() {
                    w.keep(s, i);
                }
                if class == CharClass::Newline {
                    newlines += 1;
                    space = None;
                } else if b[i] == b'\t' || space == Some("\t") {
                    space = Some("\t");
                } else {
                    space = Some(" ");
                }
            }
            _ => {
                if content_start.is_none() {
                    if any_content {
                        if newlines > 0 {
                            w.push_str(&newline_run[..newlines.min(newline_run.len())]);
                        } else if let Some(s) = space {
                            w.push_str(s);
                        }
                    }
                    newlines = 0;
                    space = None;
                    any_content = true;
                    content_start = Some(i);
                }
            }
        }
        i += len;
    }
    if let Some(s) = content_start {
        w.keep(s, b.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clean::rewrite::run_stage;

    fn ws(s: &str, max_newlines: usize) -> String {
        let mut t = s.to_string();
        let n = Whitespace::new(&WhitespaceConfig { enabled: true, max_newlines });
        run_stage(&mut t, &mut String::new(), |w| n.run(w));
        t
    }

    /// The byte shortcut agrees with the character classes on every white-space character.
    #[test]
    fn byte_shortcut_matches_classes() {
        let n = Whitespace::new(&WhitespaceConfig::default());
        for u in 0x80..0x3100u32 {
            let Some(c) = char::from_u32(u) else { continue };
            let text = format!("a{c}b");
            let mut t = text.clone();
            run_stage(&mut t, &mut String::new(), |w| n.run(w));
            let want = match classify(c) {
                CharClass::Newline => "a\nb".to_string(),
                CharClass::Space => "a b".to_string(),
                _ => text,
            };
            assert_eq!(t, want, "U+{u:04X}");
        }
    }

    #[test]
    fn collapses_and_trims() {
        assert_eq!(ws("  a   b \t c\u{a0}\u{a0}d  \n\n\n\n  e \n", 2), "a b\tc d\n\ne");
        assert_eq!(ws("\n\n标题: 一种连接器\n\n\n摘要: 本发明。\u{3000}\u{3000}下一句 \n", 2), "标题: 一种连接器\n\n摘要: 本发明。 下一句");
        assert_eq!(ws("a\n \n\t\nb", 2), "a\n\nb");
        assert_eq!(ws("a\n\n\nb", 1), "a\nb");
        assert_eq!(ws("a\n\n\n\nb", 3), "a\n\n\nb");
        assert_eq!(ws("   \n\t ", 2), "");
        assert_eq!(ws("a\u{2028}b\u{2003}c", 2), "a\nb c");
        // Already normal: unchanged (and not copied).
        let mut t = "a b\n\nc".to_string();
        let mut buf = String::new();
        let n = Whitespace::new(&WhitespaceConfig::default());
        assert!(!run_stage(&mut t, &mut buf, |w| n.run(w)));
        assert_eq!(buf.capacity(), 0);
    }
}
