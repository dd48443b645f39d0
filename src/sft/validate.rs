//! Answer validation: IPC codes mentioned in answers (found by the crate's one extractor,
//! [`crate::ipc::extract`], subclasses and deeper plus malformed spellings; checked against the
//! scheme), and answers that look cut off.

use serde::{Deserialize, Serialize};

use super::text::is_cjk;
use crate::ipc::extract::SUBCLASS_LEVEL;
use crate::ipc::extract::{extract_codes, CodeMention};
use crate::ipc::{IpcScheme, IpcSymbol};

/// What validation needs from the IPC scheme.
pub trait IpcLookup {
    /// Whether the scheme knows a normalized symbol (`H04L 29/06`).
    fn contains(&self, symbol: &str) -> bool;
    /// A digest of the scheme's content, for stage fingerprints (empty: unknown).
    fn digest(&self) -> String {
        String::new()
    }
}

impl IpcLookup for IpcScheme {
    /// Membership in the scheme's index: an entry counts whether or not it has a title.
    fn contains(&self, symbol: &str) -> bool {
        IpcScheme::contains(self, symbol)
    }
    fn digest(&self) -> String {
        IpcScheme::digest(self)
    }
}

/// The IPC findings of one example.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CodeCheck {
    /// Every mention, in order.
    pub mentions: Vec<CodeMention>,
    /// Distinct normalized symbols that parse.
    pub distinct: Vec<String>,
    /// Distinct parsed symbols the scheme does not know (empty when no scheme is configured).
    pub unknown: Vec<String>,
    /// Mentions that do not parse: `raw: why`.
    pub malformed: Vec<String>,
}

impl CodeCheck {
    /// Mean depth of the distinct parsed symbols (0 when there are none).
    pub fn mean_depth(&self) -> f64 {
        let levels: Vec<u8> = self.distinct.iter().filter_map(|s| IpcSymbol::parse(s).ok()).map(|s| s.level()).collect();
        if levels.is_empty() {
            0.0
        } else {
            levels.iter().map(|&l| l as f64).sum::<f64>() / levels.len() as f64
        }
    }
}

/// Finds and checks the codes of an answer: mentions of subclass depth or more, and malformed
/// ones (a bare class such as `A15` is not taken). `scheme` is `None` when no scheme is
/// configured (nothing can be called unknown then).
pub fn check_codes(answer: &str, scheme: Option<&dyn IpcLookup>) -> CodeCheck {
    let mentions: Vec<CodeMention> =
        extract_codes(answer).into_iter().filter(|m| m.normalized.is_none() || m.level >= SUBCLASS_LEVEL).collect();
    let mut distinct: Vec<String> = Vec::new();
    let mut malformed = Vec::new();
    for m in &mentions {
        match &m.normalized {
            Some(s) if !distinct.contains(s) => distinct.push(s.clone()),
            Some(_) => {}
            None => malformed.push(format!("{}: {}", m.raw, m.error.as_deref().unwrap_or("malformed"))),
        }
    }
    let unknown = match scheme {
        Some(sc) => distinct.iter().filter(|s| !sc.contains(s)).cloned().collect(),
        None => Vec::new(),
    };
    CodeCheck { mentions, distinct, unknown, malformed }
}

/// Why an answer looks cut off, if it does: an odd number of `**` or code fences, a last
/// character that cannot end a sentence (comma, colon, open bracket), or a mostly-CJK answer
/// whose last line is a prose paragraph ending on an ideograph (Chinese sentences end with
/// punctuation; list items, headings, table rows and `label：value` lines often do not, so a
/// complete list ending `- 涉及专利分析专用系统` is not flagged).
pub fn looks_truncated(answer: &str) -> Option<&'static str> {
    let t = answer.trim_end();
    if t.matches("```").count() % 2 == 1 {
        return Some("unclosed code fence");
    }
    if t.matches("**").count() % 2 == 1 {
        return Some("unbalanced ** markup");
    }
    let last = t.chars().next_back()?;
    if ",，、;；:：(（[【《{".contains(last) {
        return Some("ends on a comma, colon or open bracket");
    }
    let (cjk, letters) = t.chars().fold((0usize, 0usize), |(c, l), ch| (c + is_cjk(ch) as usize, l + ch.is_alphanumeric() as usize));
    if is_cjk(last) && cjk * 2 > letters && !is_structured_line(t.lines().next_back().unwrap_or_default()) {
        return Some("a Chinese answer ending without punctuation");
    }
    None
}

/// A list item (`-`, `*`, `•`, `+`, `1.`, `1、`, `(1)`), heading, table row or `label：value` line.
fn is_structured_line(line: &str) -> bool {
    let l = line.trim_start();
    let numbered = {
        let digits = l.chars().take_while(|c| c.is_ascii_digit() || ('０'..='９').contains(c)).count();
        digits > 0 && l.chars().nth(digits).is_some_and(|c| ".、．)）".contains(c))
    };
    numbered
        || l.starts_with(['#', '|', '(', '（'])
        || ["- ", "* ", "• ", "+ ", "**"].iter().any(|p| l.starts_with(p))
        || l.split_once(['：', ':'])
            .is_some_and(|(label, value)| !label.is_empty() && label.chars().count() <= 12 && !value.trim().is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Known(&'static [&'static str]);
    impl IpcLookup for Known {
        fn contains(&self, s: &str) -> bool {
            self.0.contains(&s)
        }
    }

    fn norm(text: &str) -> Vec<Option<String>> {
        extract_codes(text).into_iter().map(|m| m.normalized).collect()
    }

    #[test]
    fn spellings_are_found_and_normalized() {
        let t = "1. **H01L** — 半导体\n9. **G05B19/00** — 控制\n5. **A61B 34/00** — 手术\n分类号：G06F16/00、H04L12/00\n全角：Ｈ０４Ｌ　２９／０６。";
        let want = ["H01L", "G05B 19/00", "A61B 34/00", "G06F 16/00", "H04L 12/00", "H04L 29/06"];
        assert_eq!(norm(t), want.iter().map(|s| Some(s.to_string())).collect::<Vec<_>>());
        let m = extract_codes(t);
        assert!(m[5].fullwidth && !m[0].fullwidth);
        assert_eq!(m.iter().map(|m| m.level).collect::<Vec<_>>(), [3, 4, 4, 4, 4, 5]);
        assert_eq!(&t[m[1].offset..m[1].offset + m[1].raw.len()], "G05B19/00");
    }

    #[test]
    fn hand_made_bad_codes_are_each_reported() {
        // Wrong section letter: Z is not a section (A–H).
        let c = check_codes("参见 Z04L 29/06。", None);
        assert_eq!(c.malformed, ["Z04L 29/06: wrong section letter 'Z' (expected A–H)"]);
        assert!(c.distinct.is_empty());
        // Missing main group before the slash, with and without a space.
        for t in ["参见 H04L /06。", "参见H04L/06。"] {
            let c = check_codes(t, None);
            assert_eq!(c.malformed.len(), 1, "{t}");
            assert!(c.malformed[0].contains("missing or malformed main group"), "{:?}", c.malformed);
        }
        // Slash without a subgroup.
        let c = check_codes("参见 H04L 29/。", None);
        assert!(c.malformed[0].contains("malformed subgroup"), "{:?}", c.malformed);
        // Full-width digits and letters are a spelling, not an error: normalized and flagged.
        let c = check_codes("参见Ｇ０６Ｆ１６／００。", None);
        assert_eq!((c.distinct.as_slice(), c.malformed.len()), (&["G06F 16/00".to_string()][..], 0));
        assert!(c.mentions[0].fullwidth);
        // Unknown to the scheme (parsed fine, not in it).
        let scheme = Known(&["H04L 29/06"]);
        let c = check_codes("H04L 29/06 与 H04L99/99", Some(&scheme));
        assert_eq!(c.unknown, ["H04L 99/99"]);
        assert!(c.malformed.is_empty());
    }

    #[test]
    fn glued_tokens_and_model_numbers_are_not_codes() {
        assert!(extract_codes("COVID19A and XH04L and H04LX").is_empty());
        // A bare letter-digits-letter token outside sections A–H is a model number.
        assert!(extract_codes("Ecovacs Deebot N79S, Sony Z10X").is_empty());
        // A subclass followed by a word: the subclass only.
        assert_eq!(norm("H04L 5G 网络"), [Some("H04L".to_string())]);
    }

    #[test]
    fn truncation_heuristics() {
        assert_eq!(looks_truncated("智能芯片是一种芯片。"), None);
        assert_eq!(looks_truncated("The answer is 216"), None);
        assert!(looks_truncated("智能芯片是一种芯片，主要用于").is_some());
        assert!(looks_truncated("1. **H01L** — 半导体\n2. **G06F").is_some());
        assert!(looks_truncated("Here are the steps:").is_some());
        assert!(looks_truncated("```rust\nfn main() {}").is_some());
        // Complete Chinese lists whose last item has no final punctuation.
        for a in [
            "专利分析平台包括：\n1. **专利检索**\n   - 涉及专利分析专用系统",
            "主要方向：\n- 专利检索\n- 涉及专利分析专用系统",
            "1.人工智能硬件平台\n技术方向：FPGA、AI芯片、类脑芯片",
            "### 三、专利分析专用系统",
        ] {
            assert_eq!(looks_truncated(a), None, "{a}");
        }
        // A prose paragraph cut in mid-sentence after a list is still flagged.
        assert!(looks_truncated("1. **检索**\n\n智能芯片是一种芯片，主要用于").is_some());
    }
}
