//! Control characters: C0 and C1 controls and DEL are removed (tab and line feed kept), line
//! ends become `\n` (`\r\n`, lone `\r`, NEL), and invisible junk, bidirectional controls and
//! private-use code points can be removed too.

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
    /// Also remove private-use code points (U+E000–U+F8FF and planes 15–16). PDF-extracted
    /// patent text carries them where a font mapped a symbol to its own slot; they mean nothing
    /// to a tokenizer or a reader. Each document's count goes to `meta.private_use_removed`.
    pub remove_private_use: bool,
}

impl Default for ControlsConfig {
    fn default() -> Self {
        Self { enabled: true, remove_invisible: true, remove_bidi: true, remove_private_use: true }
    }
}

/// What [`run`] removed that a document's `meta` counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Removed {
    /// Bidirectional controls.
    pub bidi: usize,
    /// Private-use code points.
    pub private_use: usize,
}

/// Bytes that may start something to remove: C0 controls other than `\t`/`\n`, DEL, and the
/// lead bytes of C1 controls / soft hyphen (0xC2), U+061C (0xD8), U+200B/U+2060 and the bidi
/// controls (0xE2), U+FEFF and the private-use area (0xEE, 0xEF), planes 15–16 (0xF3, 0xF4).
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
    t[0xee] = true;
    t[0xef] = true;
    t[0xf3] = true;
    t[0xf4] = true;
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

/// The length of the private-use code point at `b[i..]` (lead byte 0xEE, 0xEF, 0xF3 or 0xF4), if
/// it is one: U+E000–U+F8FF is EE 80 80–EF A3 BF; plane 15 is F3 B0–BF; plane 16 is F4 80–8F.
fn private_use_len(b: &[u8], i: usize) -> Option<usize> {
    match b[i] {
        0xee => Some(3),
        0xef if b[i + 1] <= 0xa3 => Some(3),
        0xf3 if b[i + 1] >= 0xb0 => Some(4),
        0xf4 if b[i + 1] <= 0x8f => Some(4),
        _ => None,
    }
}

/// Writes `w.src()` without control characters; returns what it removed that is counted.
pub fn run(cfg: &ControlsConfig, w: &mut Rewriter<'_>) -> Removed {
    let b = w.src().as_bytes();
    let mut i = 0;
    let mut bidi = 0;
    let mut private_use = 0;
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
            0xee | 0xef | 0xf3 | 0xf4 if cfg.remove_private_use && private_use_len(b, i).is_some() => {
                private_use += 1;
                (private_use_len(b, i).unwrap_or(1), "")
            }
            0xc2 | 0xd8 | 0xe2 | 0xee | 0xef | 0xf3 | 0xf4 => {
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
    Removed { bidi, private_use }
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
        run_stage(&mut t, &mut String::new(), |w| n = run(&d, w).bidi);
        assert_eq!((t.as_str(), n), ("safetxt.exe abc xyz!", 10));
        let keep = ControlsConfig { remove_bidi: false, ..d.clone() };
        assert_eq!(clean(src, &keep), src);
        // Arabic and other characters with the same lead bytes stay.
        assert_eq!(clean("\u{61b}\u{61f}\u{2026}\u{2070}\u{202f}", &d), "\u{61b}\u{61f}\u{2026}\u{2070}\u{202f}");
    }

    #[test]
    fn removes_private_use_code_points_and_counts_them() {
        let d = ControlsConfig::default();
        // Edges of the BMP area and of planes 15 and 16, as PDF extraction leaves them.
        let src = "a\u{e000}b\u{f8ff}c\u{f0000}d\u{ffffd}e\u{100000}f\u{10fffd}g";
        let mut t = src.to_string();
        let mut r = Removed::default();
        run_stage(&mut t, &mut String::new(), |w| r = run(&d, w));
        assert_eq!((t.as_str(), r), ("abcdefg", Removed { bidi: 0, private_use: 6 }));
        // Neighbours that are not private use stay: U+DFFF has no UTF-8 form, so U+D7FF; U+F900
        // (CJK compatibility), U+FEFF is invisible junk (removed as that, not counted), U+EFFFF.
        let near = "\u{d7ff}\u{f900}\u{ff0c}\u{effff}\u{e0001}";
        assert_eq!(clean(near, &d), near);
        let keep = ControlsConfig { remove_private_use: false, ..d.clone() };
        assert_eq!(clean(src, &keep), src);
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
