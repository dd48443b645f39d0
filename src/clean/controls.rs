//! Control characters: C0 and C1 controls and DEL are removed (tab and line feed kept), line
//! ends become `\n` (`\r\n`, lone `\r`, NEL), and invisible junk and bidirectional controls
//! can be removed too.

use serde::{Deserialize, Serialize};

use super::rewrite::Rewriter;

/// Control-character removal.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ControlsConfig {
    /// Remove C0/C1 controls and DEL (keeping `\t` and `\n`) and turn `\r\n`, `\r` and NEL
    /// (U+0085) into `\n`.
    pub enabled: bool,
    /// Also remove invisible characters that carry no text: zero-width space U+200B, word
    /// joiner U+2060, byte-order mark U+FEFF, soft hyphen U+00AD. (ZWJ/ZWNJ are kept: emoji
    /// and some scripts need them.)
    pub remove_invisible: bool,
    /// Also remove bidirectional formatting controls: embeddings and overrides U+202A–U+202E,
    /// isolates U+2066–U+2069, marks U+200E/U+200F and U+061C. They carry no text, and an
    /// override (U+202E) makes text display in an order other than the one a model reads it in
    /// ("Trojan Source"). Each document's count goes to `meta.bidi_controls_removed`.
    pub remove_bidi: bool,
}

impl Default for ControlsConfig {
    fn default() -> Self {
        Self { enabled: true, remove_invisible: true, remove_bidi: true }
    }
}

/// Bytes that may start something to remove: C0 controls other than `\t`/`\n`, DEL, and the
/// lead bytes of C1 controls / soft hyphen (0xC2), U+061C (0xD8), U+200B/U+2060 and the bidi
/// controls (0xE2) and U+FEFF (0xEF).
const fn interesting() -> [bool; 256] {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 0x20 {
        t[b] = b != b'\t' as usize && b != b'\n' as usize;
        b += 1;
    }
    t[0x7f] = true;
    t[0xc2] = true;
    t[0xd8] = true;
    t[0xe2] = true;
    t[0xef] = true;
    t
}
static INTERESTING: [bool; 256] = interesting();

/// Whether the UTF-8 sequence at `b[i..]` (lead byte 0xD8 or 0xE2) is a bidi control.
fn is_bidi(b: &[u8], i: usize) -> bool {
    match b[i] {
        0xd8 => b[i + 1] == 0x9c,
        0xe2 => matches!((b[i + 1], b[i + 2]), (0x80, 0x8e | 0x8f | 0xaa..=0xae) | (0x81, 0xa6..=0xa9)),
        _ => false,
    }
}

/// Writes `w.src()` without control characters; returns how many bidi controls it removed.
pub fn run(cfg: &ControlsConfig, w: &mut Rewriter<'_>) -> usize {
    let b = w.src().as_bytes();
    let mut i = 0;
    let mut bidi = 0;
    let mut last = 0; // start of the pending verbatim run
    while i < b.len() {
        if !INTERESTING[b[i] as usize] {
            i += 1;
            continue;
        }
        // (bytes to drop, replacement)
        let (len, with): (usize, &str) = match b[i] {
            b'\r' => (if b.get(i + 1) == Some(&b'\n') { 2 } else { 1 }, "\n"),
            0xc2 if b[i + 1] == 0x85 => (2, "\n"),
            0xc2 if (0x80..=0x9f).contains(&b[i + 1]) => (2, ""),
            0xc2 if b[i + 1] == 0xad && cfg.remove_invisible => (2, ""),
            0xe2 if cfg.remove_invisible && matches!((b[i + 1], b[i + 2]), (0x80, 0x8b) | (0x81, 0xa0)) => (3, ""),
            0xd8 | 0xe2 if cfg.remove_bidi && is_bidi(b, i) => {
                bidi += 1;
                (if b[i] == 0xd8 { 2 } else { 3 }, "")
            }
            0xef if cfg.remove_invisible && b[i + 1] == 0xbb && b[i + 2] == 0xbf => (3, ""),
            0xc2 | 0xd8 | 0xe2 | 0xef => {
                i += 1;
                continue;
            }
            _ => (1, ""), // C0 or DEL
        };
        w.keep(last, i);
        w.push_str(with);
        i += len;
        last = i;
    }
    w.keep(last, b.len());
    bidi
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clean::rewrite::run_stage;

    fn clean(s: &str, cfg: &ControlsConfig) -> String {
        let mut t = s.to_string();
        run_stage(&mut t, &mut String::new(), |w| {
            run(cfg, w);
        });
        t
    }

    #[test]
    fn removes_bidi_controls_and_counts_them() {
        let d = ControlsConfig::default();
        let src = "safe\u{202e}txt.exe\u{202c} \u{2066}a\u{2069}\u{2067}b\u{2068}c\u{2069} x\u{200e}y\u{200f}z\u{61c}!";
        let mut t = src.to_string();
        let mut n = 0;
        run_stage(&mut t, &mut String::new(), |w| n = run(&d, w));
        assert_eq!((t.as_str(), n), ("safetxt.exe abc xyz!", 10));
        let keep = ControlsConfig { remove_bidi: false, ..d.clone() };
        assert_eq!(clean(src, &keep), src);
        // Arabic and other characters with the same lead bytes stay.
        assert_eq!(clean("\u{61b}\u{61f}\u{2026}\u{2070}\u{202f}", &d), "\u{61b}\u{61f}\u{2026}\u{2070}\u{202f}");
    }

    #[test]
    fn removes_controls_keeps_tab_and_newline() {
        let d = ControlsConfig::default();
        assert_eq!(clean("a\u{0}b\u{7}c\u{1b}[0m\td\ne\u{7f}", &d), "abc[0m\td\ne");
        assert_eq!(clean("x\u{80}y\u{9f}z", &d), "xyz");
        assert_eq!(clean("l1\r\nl2\rl3\u{85}l4", &d), "l1\nl2\nl3\nl4");
        assert_eq!(clean("\u{feff}soft\u{ad}ware zero\u{200b}width\u{2060}", &d), "software zerowidth");
        let keep = ControlsConfig { remove_invisible: false, ..d.clone() };
        assert_eq!(clean("\u{feff}a\u{ad}b", &keep), "\u{feff}a\u{ad}b");
        // Other characters with the same lead bytes are untouched.
        assert_eq!(clean("“中文，”é\u{a0}\u{2014}\u{ff0c}", &d), "“中文，”é\u{a0}\u{2014}\u{ff0c}");
        // ZWJ stays.
        assert_eq!(clean("a\u{200d}b", &d), "a\u{200d}b");
    }
}
