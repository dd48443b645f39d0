//! Scoring of generated answers against reference answers. Pure functions, no model.
//!
//! ## IPC codes
//! [`extract_ipc_codes`] takes the IPC symbols of free text from the crate's one extractor
//! ([`crate::ipc::extract`], the same one SFT validation and task inference use): classes,
//! subclasses, groups with their subgroup (`C08`, `H04L`, `A61B 34/00`, `G06F16/00`,
//! full-width spellings), not glued to a letter or digit (so `H100`, `A4`, `B2B` or `G06FX` are
//! not codes); a group written without its `/subgroup` (`H04L29`) and malformed spellings are
//! not scored. Each is normalized with [`IpcSymbol`]; duplicates are dropped, first occurrence
//! kept. Section-only letters and lower-case spellings are not taken: in running text they are
//! far more often something else.
//!
//! Each code is truncated to each level — section `H`, class `H04`, subclass `H04L`, main
//! group `H04L 29/00` — if it reaches that level (`C08` counts at section and class level
//! only). Per example and level, the generated and reference sets give TP = |G ∩ R|,
//! precision TP/|G|, recall TP/|R| and F1 = 2·TP/(|G|+|R|) (undefined when the denominator is
//! 0). The aggregate sums TP, |G| and |R| over examples (micro average), and also reports the
//! mean per-example F1 (macro) and the exact-set-match rate over examples whose reference has
//! codes at that level.
//!
//! ## Key technologies
//! [`extract_technologies`] reads the list structure of an answer ([`crate::ipc::task::list_item`],
//! shared with task inference): lines starting (after
//! indentation and optional `#` heading marks) with a number marker (`1.`, `1、`, `1)`, `(1)`,
//! `（1）`, also inside a leading `**`) or a bullet (`-`, `*`, `•`, `+` followed by a space).
//! The technologies are the numbered items at the shallowest indentation among numbered items;
//! if there are none, the bullets at the shallowest bullet indentation (the sub-bullets
//! `- 简介：…` under each numbered item of the fixture answers are therefore not taken). An
//! item's name is its first `**bold**` span, else its text up to the first `：`, `:`, `—`,
//! `–`, ` - `, `，`, `。` or `；`. Inline enumerations in prose are not extracted.
//!
//! [`normalize_technology`] applies NFKC, lower-cases, and keeps only letters and digits (CJK
//! characters included), so spacing and punctuation do not matter; empty names and duplicates
//! are dropped. Two scores are reported: *exact* (normalized names equal) and *fuzzy* (names
//! paired one-to-one, greedily by decreasing similarity, where similarity is the Dice
//! coefficient of the character-bigram multisets and a pair counts when it reaches the
//! threshold; a one-character name is its own single gram). Precision, recall and F1 are
//! defined as for IPC codes, with TP the number of matched pairs.

use std::collections::{BTreeSet, HashMap};

use serde::{Deserialize, Serialize};
use unicode_normalization::UnicodeNormalization;

use crate::ipc::extract::distinct_symbols;
use crate::ipc::symbol::IpcSymbol;
use crate::ipc::task::{item_name, top_level_items};

/// A depth of the IPC hierarchy at which codes are compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// `H`.
    Section,
    /// `H04`.
    Class,
    /// `H04L`.
    Subclass,
    /// `H04L 29/00` (subgroups fold into their main group).
    Group,
}

/// The four levels, coarse to fine.
pub const LEVELS: [Level; 4] = [Level::Section, Level::Class, Level::Subclass, Level::Group];

impl Level {
    /// The level's name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Level::Section => "section",
            Level::Class => "class",
            Level::Subclass => "subclass",
            Level::Group => "group",
        }
    }

    /// `sym` cut to this level, or `None` if it does not reach it.
    pub fn truncate(self, sym: &IpcSymbol) -> Option<String> {
        let s = sym.section;
        match self {
            Level::Section => Some(s.to_string()),
            Level::Class => sym.class.as_ref().map(|c| format!("{s}{c}")),
            Level::Subclass => match (&sym.class, sym.subclass) {
                (Some(c), Some(sc)) => Some(format!("{s}{c}{sc}")),
                _ => None,
            },
            Level::Group => match (&sym.class, sym.subclass, &sym.group) {
                (Some(c), Some(sc), Some(g)) => Some(format!("{s}{c}{sc} {g}/00")),
                _ => None,
            },
        }
    }
}

/// The IPC codes in `text` (see the module doc), normalized, in order of first appearance.
pub fn extract_ipc_codes(text: &str) -> Vec<IpcSymbol> {
    // Classes and deeper, written in full (a group needs its `/subgroup`).
    distinct_symbols(text, |m| m.is_complete() && m.level >= 2)
}

/// Counts of one comparison of a generated set against a reference set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Items in both.
    pub tp: usize,
    /// Items generated.
    pub generated: usize,
    /// Items in the reference.
    pub reference: usize,
}

impl Counts {
    /// TP / generated; `None` when nothing was generated.
    pub fn precision(&self) -> Option<f64> {
        ratio(self.tp, self.generated)
    }
    /// TP / reference; `None` when the reference is empty.
    pub fn recall(&self) -> Option<f64> {
        ratio(self.tp, self.reference)
    }
    /// 2·TP / (generated + reference); `None` when both are empty.
    pub fn f1(&self) -> Option<f64> {
        ratio(2 * self.tp, self.generated + self.reference)
    }
    /// Element-wise sum.
    pub fn add(&mut self, o: &Counts) {
        self.tp += o.tp;
        self.generated += o.generated;
        self.reference += o.reference;
    }
    /// Counts with precision, recall and F1 spelled out, for reports.
    pub fn scored(&self) -> Prf {
        Prf { counts: *self, precision: self.precision(), recall: self.recall(), f1: self.f1() }
    }
}

fn ratio(a: usize, b: usize) -> Option<f64> {
    (b > 0).then(|| a as f64 / b as f64)
}

/// Counts plus the measures derived from them (`null` where undefined).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Prf {
    /// The counts.
    #[serde(flatten)]
    pub counts: Counts,
    /// TP / generated.
    pub precision: Option<f64>,
    /// TP / reference.
    pub recall: Option<f64>,
    /// 2·TP / (generated + reference).
    pub f1: Option<f64>,
}

/// The codes of one level, from both answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LevelScore {
    /// The level.
    pub level: Level,
    /// Generated codes cut to the level, sorted.
    pub generated_set: Vec<String>,
    /// Reference codes cut to the level, sorted.
    pub reference_set: Vec<String>,
    /// Their comparison.
    #[serde(flatten)]
    pub prf: Prf,
}

/// The IPC score of one answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IpcScore {
    /// Codes found in the generated answer (normalized, first-appearance order).
    pub generated_codes: Vec<String>,
    /// Codes found in the reference answer.
    pub reference_codes: Vec<String>,
    /// Section, class, subclass and group comparisons.
    pub levels: Vec<LevelScore>,
}

fn level_set(codes: &[IpcSymbol], level: Level) -> BTreeSet<String> {
    codes.iter().filter_map(|c| level.truncate(c)).collect()
}

/// Scores the IPC codes of `generated` against those of `reference`.
pub fn score_ipc(generated: &str, reference: &str) -> IpcScore {
    let g = extract_ipc_codes(generated);
    let r = extract_ipc_codes(reference);
    let levels = LEVELS
        .iter()
        .map(|&level| {
            let gs = level_set(&g, level);
            let rs = level_set(&r, level);
            let counts = Counts { tp: gs.intersection(&rs).count(), generated: gs.len(), reference: rs.len() };
            LevelScore { level, generated_set: gs.into_iter().collect(), reference_set: rs.into_iter().collect(), prf: counts.scored() }
        })
        .collect();
    IpcScore {
        generated_codes: g.iter().map(|s| s.to_string()).collect(),
        reference_codes: r.iter().map(|s| s.to_string()).collect(),
        levels,
    }
}

/// One level of the IPC aggregate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LevelSummary {
    /// The level.
    pub level: Level,
    /// Micro average: counts summed over examples, then P/R/F1.
    pub micro: Prf,
    /// Mean of the per-example F1 over examples where it is defined.
    pub macro_f1: Option<f64>,
    /// Share of examples (with reference codes at this level) whose generated set equals the
    /// reference set.
    pub exact_match: Option<f64>,
    /// Examples with reference codes at this level.
    pub examples_with_reference: usize,
}

/// Aggregates per-example IPC scores.
pub fn summarize_ipc<'a>(scores: impl IntoIterator<Item = &'a IpcScore>) -> Vec<LevelSummary> {
    let scores: Vec<&IpcScore> = scores.into_iter().collect();
    LEVELS
        .iter()
        .enumerate()
        .map(|(i, &level)| {
            let mut micro = Counts::default();
            let (mut f1_sum, mut f1_n, mut exact, mut with_ref) = (0.0, 0usize, 0usize, 0usize);
            for s in &scores {
                let l = &s.levels[i];
                micro.add(&l.prf.counts);
                if let Some(f) = l.prf.f1 {
                    f1_sum += f;
                    f1_n += 1;
                }
                if !l.reference_set.is_empty() {
                    with_ref += 1;
                    exact += usize::from(l.generated_set == l.reference_set);
                }
            }
            LevelSummary {
                level,
                micro: micro.scored(),
                macro_f1: (f1_n > 0).then(|| f1_sum / f1_n as f64),
                exact_match: ratio(exact, with_ref),
                examples_with_reference: with_ref,
            }
        })
        .collect()
}

/// The key technologies an answer lists (see the module doc), as written, duplicates (after
/// normalization) and empty names dropped.
pub fn extract_technologies(text: &str) -> Vec<String> {
    let mut seen = BTreeSet::new();
    top_level_items(text)
        .iter()
        .map(|i| item_name(&i.text))
        .filter(|n| {
            let key = normalize_technology(n);
            !key.is_empty() && seen.insert(key)
        })
        .collect()
}

/// NFKC, lower case, letters and digits only.
pub fn normalize_technology(name: &str) -> String {
    name.nfkc().flat_map(char::to_lowercase).filter(|c| c.is_alphanumeric()).collect()
}

fn grams(s: &str) -> HashMap<String, usize> {
    let chars: Vec<char> = s.chars().collect();
    let mut m = HashMap::new();
    if chars.len() < 2 {
        *m.entry(s.to_string()).or_insert(0) += 1;
    } else {
        for w in chars.windows(2) {
            *m.entry(w.iter().collect::<String>()).or_insert(0) += 1;
        }
    }
    m
}

/// Dice coefficient of the character-bigram multisets of two normalized names (1 for equal
/// names, 0 when they share no bigram).
pub fn bigram_dice(a: &str, b: &str) -> f64 {
    if a == b {
        return 1.0;
    }
    let (ga, gb) = (grams(a), grams(b));
    let common: usize = ga.iter().map(|(g, n)| (*n).min(gb.get(g).copied().unwrap_or(0))).sum();
    let total: usize = ga.values().sum::<usize>() + gb.values().sum::<usize>();
    if total == 0 {
        0.0
    } else {
        2.0 * common as f64 / total as f64
    }
}

/// A generated technology paired with a reference one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TechMatch {
    /// The generated name.
    pub generated: String,
    /// The reference name.
    pub reference: String,
    /// Their bigram Dice similarity.
    pub similarity: f64,
}

/// The key-technology score of one answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TechScore {
    /// Technologies extracted from the generated answer.
    pub generated: Vec<String>,
    /// Technologies extracted from the reference answer.
    pub reference: Vec<String>,
    /// Normalized names equal.
    pub exact: Prf,
    /// One-to-one pairs with similarity ≥ the threshold.
    pub fuzzy: Prf,
    /// The fuzzy pairs.
    pub matches: Vec<TechMatch>,
}

/// Scores the technologies of `generated` against those of `reference`; fuzzy pairs need a
/// similarity of at least `threshold` (in (0, 1]).
pub fn score_tech(generated: &str, reference: &str, threshold: f64) -> TechScore {
    let g = extract_technologies(generated);
    let r = extract_technologies(reference);
    let gn: Vec<String> = g.iter().map(|s| normalize_technology(s)).collect();
    let rn: Vec<String> = r.iter().map(|s| normalize_technology(s)).collect();
    let exact_tp = gn.iter().filter(|x| rn.contains(x)).count();
    let mut pairs: Vec<(f64, usize, usize)> = Vec::new();
    for (i, a) in gn.iter().enumerate() {
        for (j, b) in rn.iter().enumerate() {
            let s = bigram_dice(a, b);
            if s >= threshold {
                pairs.push((s, i, j));
            }
        }
    }
    pairs.sort_by(|x, y| y.0.total_cmp(&x.0).then(x.1.cmp(&y.1)).then(x.2.cmp(&y.2)));
    let (mut used_g, mut used_r) = (vec![false; g.len()], vec![false; r.len()]);
    let mut matches = Vec::new();
    for (s, i, j) in pairs {
        if !used_g[i] && !used_r[j] {
            used_g[i] = true;
            used_r[j] = true;
            matches.push(TechMatch { generated: g[i].clone(), reference: r[j].clone(), similarity: s });
        }
    }
    let exact = Counts { tp: exact_tp, generated: g.len(), reference: r.len() };
    let fuzzy = Counts { tp: matches.len(), generated: g.len(), reference: r.len() };
    TechScore { generated: g, reference: r, exact: exact.scored(), fuzzy: fuzzy.scored(), matches }
}

/// The key-technology aggregate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TechSummary {
    /// Exact matching, micro-averaged.
    pub exact: Prf,
    /// Fuzzy matching, micro-averaged.
    pub fuzzy: Prf,
    /// Mean per-example exact F1 where defined.
    pub exact_macro_f1: Option<f64>,
    /// Mean per-example fuzzy F1 where defined.
    pub fuzzy_macro_f1: Option<f64>,
}

/// Aggregates per-example technology scores.
pub fn summarize_tech<'a>(scores: impl IntoIterator<Item = &'a TechScore>) -> TechSummary {
    let (mut exact, mut fuzzy) = (Counts::default(), Counts::default());
    let (mut ef, mut en, mut ff, mut fnn) = (0.0, 0usize, 0.0, 0usize);
    for s in scores {
        exact.add(&s.exact.counts);
        fuzzy.add(&s.fuzzy.counts);
        if let Some(f) = s.exact.f1 {
            ef += f;
            en += 1;
        }
        if let Some(f) = s.fuzzy.f1 {
            ff += f;
            fnn += 1;
        }
    }
    TechSummary {
        exact: exact.scored(),
        fuzzy: fuzzy.scored(),
        exact_macro_f1: (en > 0).then(|| ef / en as f64),
        fuzzy_macro_f1: (fnn > 0).then(|| ff / fnn as f64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codes(text: &str) -> Vec<String> {
        extract_ipc_codes(text).iter().map(|s| s.to_string()).collect()
    }

    fn close(a: Option<f64>, b: f64) -> bool {
        a.is_some_and(|a| (a - b).abs() < 1e-12)
    }

    #[test]
    fn codes_are_found_in_markdown_and_prose_and_normalized() {
        let text = "1. **H01L** — 半导体器件\n2. **G05B19/00** — 控制\n5. **A61B 34/00** — 外科\n\
                    分类号Ｇ０６Ｆ１６／００和H04L 29/06，另见 C08 与 H01L。";
        assert_eq!(codes(text), ["H01L", "G05B 19/00", "A61B 34/00", "G06F 16/00", "H04L 29/06", "C08"]);
    }

    #[test]
    fn things_that_only_look_like_codes_are_not_codes() {
        assert!(
            codes("NVIDIA H100 and A100, B2B, A4 paper, CMOS, h04l, G06FX, XG06F, H04L29").is_empty(),
            "{:?}",
            codes("NVIDIA H100 and A100, B2B, A4 paper, CMOS, h04l, G06FX, XG06F, H04L29")
        );
    }

    #[test]
    fn truncation_per_level() {
        let s = IpcSymbol::parse("H04W 28/0925").unwrap();
        let cut: Vec<Option<String>> = LEVELS.iter().map(|l| l.truncate(&s)).collect();
        assert_eq!(cut, [Some("H".into()), Some("H04".into()), Some("H04W".into()), Some("H04W 28/00".into())]);
        let c = IpcSymbol::parse("C08").unwrap();
        assert_eq!(Level::Subclass.truncate(&c), None);
        assert_eq!(Level::Class.truncate(&c), Some("C08".into()));
    }

    #[test]
    fn ipc_scores_per_level_by_hand() {
        // Reference: G06F 16/00, G06N, H04L 12/00.  Generated: G06F 16/30, G06K, A61B 5/00.
        // section: G={A,G}, R={G,H}           → tp 1, P 1/2, R 1/2, F1 1/2
        // class:   G={A61,G06}, R={G06,H04}   → tp 1, P 1/2, R 1/2
        // subclass G={A61B,G06F,G06K}, R={G06F,G06N,H04L} → tp 1, P 1/3, R 1/3
        // group:   G={A61B 5/00, G06F 16/00}, R={G06F 16/00, H04L 12/00} → tp 1, P 1/2, R 1/2
        let s = score_ipc("建议：G06F 16/30、G06K、A61B5/00", "1. **G06F16/00**\n2. **G06N**\n3. **H04L12/00**");
        let got: Vec<(usize, usize, usize)> =
            s.levels.iter().map(|l| (l.prf.counts.tp, l.prf.counts.generated, l.prf.counts.reference)).collect();
        assert_eq!(got, [(1, 2, 2), (1, 2, 2), (1, 3, 3), (1, 2, 2)]);
        assert!(close(s.levels[2].prf.precision, 1.0 / 3.0));
        assert!(close(s.levels[3].prf.f1, 0.5));
    }

    #[test]
    fn empty_sides_give_undefined_or_zero_measures() {
        let s = score_ipc("没有分类号", "H04L");
        let sub = &s.levels[2];
        assert_eq!(sub.prf.precision, None);
        assert_eq!(sub.prf.recall, Some(0.0));
        assert_eq!(sub.prf.f1, Some(0.0));
        // No group-level codes on either side: nothing to measure.
        assert_eq!(s.levels[3].prf.f1, None);
    }

    #[test]
    fn ipc_summary_micro_macro_exact() {
        let a = score_ipc("H04L G06F", "H04L G06N"); // subclass tp1 g2 r2, f1 .5
        let b = score_ipc("A61B", "A61B"); // subclass tp1 g1 r1, f1 1
        let sum = summarize_ipc([&a, &b]);
        let sub = &sum[2];
        assert_eq!(sub.micro.counts, Counts { tp: 2, generated: 3, reference: 3 });
        assert!(close(sub.micro.f1, 2.0 / 3.0));
        assert!(close(sub.macro_f1, 0.75));
        assert!(close(sub.exact_match, 0.5));
        assert_eq!(sub.examples_with_reference, 2);
        assert_eq!(sum[3].micro.f1, None);
        assert_eq!(sum[3].exact_match, None);
    }

    const TECH_ANSWER: &str =
        "人工智能领域是指……\n\n其核心技术主要包括：\n\n1. **人工智能硬件平台**\n   - **技术简介**：算力。\n   - **应用场景**：训练。\n\n\
                               2. **人工智能通用技术**\n   - **技术简介**：机器学习。\n\n3. 人工智能关键技术：自然语言处理等。\n";

    #[test]
    fn technologies_are_the_top_level_numbered_items() {
        assert_eq!(extract_technologies(TECH_ANSWER), ["人工智能硬件平台", "人工智能通用技术", "人工智能关键技术"]);
    }

    #[test]
    fn bullets_headings_and_bold_numbers() {
        assert_eq!(extract_technologies("核心技术：\n- 机器视觉：识别\n- **SLAM 定位**\n  - 子项\n"), ["机器视觉", "SLAM 定位"]);
        assert_eq!(extract_technologies("### 1. 量子密钥分发\n### 2. 量子中继\n"), ["量子密钥分发", "量子中继"]);
        assert_eq!(extract_technologies("**1. 量子纠错**：说明 **别的**\n**2. 量子纠错**\n"), ["量子纠错"]);
        assert_eq!(extract_technologies("1.5 GHz 的主频\n（1）激光雷达\n(2) 毫米波雷达，用于测距\n"), ["激光雷达", "毫米波雷达"]);
        assert!(extract_technologies("核心技术包括机器学习、知识图谱和模式识别。").is_empty());
    }

    #[test]
    fn normalization_ignores_case_width_space_and_punctuation() {
        assert_eq!(normalize_technology(" ＡＩ 芯片（GPU/NPU）"), "ai芯片gpunpu");
        assert_eq!(normalize_technology("Deep-Learning"), normalize_technology("deep learning"));
    }

    #[test]
    fn dice_by_hand() {
        // 护理机器人的开发: 护理 理机 机器 器人 人的 的开 开发 (7); 护理机器人技术: 护理 理机 机器 器人 人技 技术 (6); common 4.
        assert!((bigram_dice("护理机器人的开发", "护理机器人技术") - 8.0 / 13.0).abs() < 1e-12);
        assert_eq!(bigram_dice("ab", "ab"), 1.0);
        assert_eq!(bigram_dice("a", "b"), 0.0);
        assert_eq!(bigram_dice("aa", "aaaa"), 2.0 * 1.0 / 4.0);
    }

    #[test]
    fn tech_scores_by_hand() {
        let reference = "1. **移动机械臂的运动规划与控制**\n2. **护理机器人的开发**\n3. **外科手术辅助机器人技术**\n";
        let generated = "1. **移动机械臂的运动规划和控制系统**\n2. **护理机器人技术**\n3. **脑机接口**\n4. **外科手术辅助机器人技术**\n";
        let s = score_tech(generated, reference, 0.6);
        // Exact: only 外科手术辅助机器人技术.
        assert_eq!(s.exact.counts, Counts { tp: 1, generated: 4, reference: 3 });
        assert!(close(s.exact.precision, 0.25));
        assert!(close(s.exact.recall, 1.0 / 3.0));
        // Fuzzy at 0.6: + 运动规划 (Dice 20/26) + 护理机器人 (8/13 ≈ 0.615); 脑机接口 unmatched.
        assert_eq!(s.fuzzy.counts, Counts { tp: 3, generated: 4, reference: 3 });
        assert!(close(s.fuzzy.f1, 6.0 / 7.0));
        let sims: Vec<f64> = s.matches.iter().map(|m| m.similarity).collect();
        assert_eq!(sims.len(), 3);
        assert!((sims[1] - 20.0 / 26.0).abs() < 1e-12, "{sims:?}");
        // A stricter threshold drops the 8/13 pair.
        assert_eq!(score_tech(generated, reference, 0.7).fuzzy.counts.tp, 2);
    }

    #[test]
    fn tech_summary_micro() {
        let a = score_tech("1. A\n2. B\n", "1. A\n2. C\n", 1.0);
        let b = score_tech("无列表", "1. D\n", 1.0);
        let s = summarize_tech([&a, &b]);
        assert_eq!(s.exact.counts, Counts { tp: 1, generated: 2, reference: 3 });
        assert!(close(s.exact.f1, 2.0 / 5.0));
        assert!(close(s.exact_macro_f1, 0.25));
    }
}
