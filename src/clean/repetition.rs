//! Gopher repetition rules (Rae et al. 2021, as in datatrove's `GopherRepetitionFilter`):
//! duplicated lines and paragraphs (by count and by characters), the most frequent n-gram's
//! share for small n, and the share of characters in duplicated n-grams for larger n.
//!
//! N-grams are over units (see [`super::stats`]): words for Latin text, characters for CJK
//! text, each with its own n and thresholds. N-grams are hashed (a polynomial over the units'
//! hashes, O(1) per n-gram from prefix sums), never built as strings. Fractions are of the
//! document's characters, as in datatrove; an n-gram's length is its units' characters.

use super::script::Script;
use super::stats::{ratio, Line, Units};
use super::table::{mix, CountTable};
use serde::{Deserialize, Serialize};

/// A threshold on one n.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NgramLimit {
    /// N-gram length in units (1 to 1000; Gopher's longest is 10 words).
    #[schemars(range(min = 1, max = 1000))]
    pub n: usize,
    /// The document is dropped when the measured fraction of its characters exceeds this.
    #[schemars(range(min = 0.0, max = 1.0))]
    pub max_frac: f64,
}

fn limits(v: &[(usize, f64)]) -> Vec<NgramLimit> {
    v.iter().map(|&(n, max_frac)| NgramLimit { n, max_frac }).collect()
}

/// One config type per script, so that a partial table in TOML is completed from that
/// script's defaults (a single type would complete it from one script's).
macro_rules! ngram_thresholds {
    ($(#[$doc:meta])* $name:ident, $top:expr, $dup:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
        #[serde(deny_unknown_fields, default)]
        pub struct $name {
            /// Most frequent n-gram: occurrences × its characters / document characters
            /// (`top_{n}_gram`).
            pub top: Vec<NgramLimit>,
            /// Characters in n-grams that occurred before (non-overlapping, scanned left to
            /// right) / document characters (`repeated_{n}_grams`).
            pub duplicated: Vec<NgramLimit>,
        }

        impl Default for $name {
            fn default() -> Self {
                Self { top: limits($top), duplicated: limits($dup) }
            }
        }
    };
}

ngram_thresholds!(
    /// N-gram thresholds over words: Gopher's top n-gram fractions; the duplicated n-gram
    /// fractions are looser than Gopher's (0.15 for n = 5 … 0.10 for n = 10), which drop over
    /// half of real US patents (descriptions and claims restate their elements; the fixture
    /// maximum is 0.48 for n = 5 and 0.31 for n = 10).
    LatinNgrams,
    &[(2, 0.20), (3, 0.18), (4, 0.16)],
    &[(5, 0.60), (6, 0.57), (7, 0.54), (8, 0.51), (9, 0.48), (10, 0.45)]
);

ngram_thresholds!(
    /// N-gram thresholds over CJK characters. A Chinese word is 1.5–2 characters, so Gopher's
    /// word n-grams are taken at twice the n in characters. The fractions are looser than
    /// Gopher's: real patents and IPC descriptions repeat their terms by nature (IPC C01G: top
    /// 4-gram 0.20; CN118524462A: 0.68 of its characters in repeated 10-grams), while a page
    /// that repeats one sentence scores above 0.8.
    CjkNgrams,
    &[(4, 0.30), (6, 0.30), (8, 0.30)],
    &[(10, 0.75), (12, 0.73), (14, 0.71), (16, 0.69), (18, 0.67), (20, 0.65)]
);

/// The repetition rules.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RepetitionConfig {
    /// Apply the rules.
    pub enabled: bool,
    /// Most share of non-empty lines that repeat an earlier line (`repeated_lines`).
    #[schemars(range(min = 0.0, max = 1.0))]
    pub max_dup_line_frac: f64,
    /// Most share of characters in repeated lines (`repeated_line_chars`).
    #[schemars(range(min = 0.0, max = 1.0))]
    pub max_dup_line_char_frac: f64,
    /// Most share of paragraphs (separated by blank lines) that repeat an earlier one
    /// (`repeated_paragraphs`).
    #[schemars(range(min = 0.0, max = 1.0))]
    pub max_dup_para_frac: f64,
    /// Most share of characters in repeated paragraphs (`repeated_paragraph_chars`).
    #[schemars(range(min = 0.0, max = 1.0))]
    pub max_dup_para_char_frac: f64,
    /// N-gram thresholds for documents measured in words.
    pub latin: LatinNgrams,
    /// N-gram thresholds for documents measured in CJK characters.
    pub cjk: CjkNgrams,
}

impl Default for RepetitionConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            // Gopher: 0.3 and 0.2. Patents repeat short list items per embodiment: CN118524462A
            // repeats 64 % of its lines (41 % of its characters).
            max_dup_line_frac: 0.75,
            max_dup_line_char_frac: 0.5,
            max_dup_para_frac: 0.3,
            max_dup_para_char_frac: 0.2,
            latin: LatinNgrams::default(),
            cjk: CjkNgrams::default(),
        }
    }
}

/// Measured repetition (for tests and tuning).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Repetition {
    /// Repeated lines / non-empty lines.
    pub dup_line_frac: f64,
    /// Characters in repeated lines / document characters.
    pub dup_line_char_frac: f64,
    /// Repeated paragraphs / paragraphs.
    pub dup_para_frac: f64,
    /// Characters in repeated paragraphs / document characters.
    pub dup_para_char_frac: f64,
}

/// The compiled rules, with filter names made once.
#[derive(Debug)]
pub struct RepetitionFilter {
    cfg: RepetitionConfig,
    latin: Vec<(NgramLimit, String, bool)>,
    cjk: Vec<(NgramLimit, String, bool)>,
    max_n: usize,
}

/// Per-thread working memory.
#[derive(Default)]
pub struct Scratch {
    table: CountTable,
}

fn compile(top: &[NgramLimit], duplicated: &[NgramLimit]) -> Vec<(NgramLimit, String, bool)> {
    let dup = duplicated.iter().map(|l| (*l, format!("repeated_{}_grams", l.n), false));
    let top = top.iter().map(|l| (*l, format!("top_{}_gram", l.n), true));
    top.chain(dup).collect()
}

impl RepetitionFilter {
    /// Compiles the rules (n ≥ 1 is validated by the caller).
    pub fn new(cfg: &RepetitionConfig) -> Self {
        let latin = compile(&cfg.latin.top, &cfg.latin.duplicated);
        let cjk = compile(&cfg.cjk.top, &cfg.cjk.duplicated);
        let max_n = latin.iter().chain(&cjk).map(|(l, _, _)| l.n).max().unwrap_or(0);
        Self { cfg: cfg.clone(), latin, cjk, max_n }
    }

    /// The largest n in use (for [`Units::prepare_pow`]).
    pub fn max_n(&self) -> usize {
        self.max_n
    }

    /// Line and paragraph duplication, from the lines [`super::stats::compute`] recorded.
    pub fn lines(&self, lines: &[Line], chars: usize, s: &mut Scratch) -> Repetition {
        let mut r = Repetition::default();
        let n_lines = lines.iter().filter(|l| l.chars > 0).count();
        s.table.reset(n_lines);
        let (mut dup, mut dup_chars) = (0usize, 0usize);
        for l in lines.iter().filter(|l| l.chars > 0) {
            if s.table.seen(l.hash) {
                dup += 1;
                dup_chars += l.chars as usize;
            }
        }
        r.dup_line_frac = ratio(dup, n_lines);
        r.dup_line_char_frac = ratio(dup_chars, chars);
        // Paragraphs: runs of lines between breaks; a paragraph's characters include the line
        // breaks inside it.
        s.table.reset(n_lines);
        let (mut paras, mut dup, mut dup_chars) = (0usize, 0usize, 0usize);
        let (mut hash, mut para_chars) = (0u64, 0usize);
        for l in lines.iter().chain(std::iter::once(&Line { hash: 0, chars: 0 })) {
            if l.chars > 0 {
                hash = mix(hash.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ l.hash);
                para_chars += l.chars as usize + (para_chars > 0) as usize;
            } else if para_chars > 0 {
                paras += 1;
                if s.table.seen(hash) {
                    dup += 1;
                    dup_chars += para_chars;
                }
                (hash, para_chars) = (0, 0);
            }
        }
        r.dup_para_frac = ratio(dup, paras);
        r.dup_para_char_frac = ratio(dup_chars, chars);
        r
    }

    /// Most frequent n-gram: its occurrences × characters.
    pub fn top_ngram_chars(units: &Units, n: usize, s: &mut Scratch) -> usize {
        let (count, chars) = Self::top_ngram(units, n, s);
        count * chars
    }

    /// Most frequent n-gram (the first to reach the highest count): (occurrences, characters).
    fn top_ngram(units: &Units, n: usize, s: &mut Scratch) -> (usize, usize) {
        let len = units.len();
        if len < n {
            return (0, 0);
        }
        s.table.reset(len + 1 - n);
        let (mut best, mut best_chars) = (0u32, 0usize);
        for i in 0..=len - n {
            let c = s.table.add(units.ngram(i, n));
            if c > best {
                best = c;
                best_chars = units.ngram_chars(i, n);
            }
        }
        (best as usize, best_chars)
    }

    /// Characters covered by n-grams that occur earlier in the text. It bounds
    /// [`Self::duplicated_ngram_chars`] for this n and every larger n: each n-gram counted there
    /// occurred before, and a repeated longer n-gram is made of repeated n-grams. One pass then
    /// clears all the larger n of a document with little repetition.
    pub fn covered_by_repeats(units: &Units, n: usize, s: &mut Scratch) -> usize {
        Self::top_and_cover(units, n, s).2
    }

    /// One pass for n: the most frequent n-gram (occurrences, characters) and the characters
    /// covered by repeated n-grams.
    fn top_and_cover(units: &Units, n: usize, s: &mut Scratch) -> (usize, usize, usize) {
        let len = units.len();
        if len < n {
            return (0, 0, 0);
        }
        s.table.reset(len + 1 - n);
        let (mut best, mut best_chars) = (0u32, 0usize);
        let (mut covered, mut until) = (0usize, 0usize);
        for i in 0..=len - n {
            let c = s.table.add(units.ngram(i, n));
            if c > 1 {
                let from = until.max(i);
                covered += units.ngram_chars(from, i + n - from);
                until = i + n;
                if c > best {
                    best = c;
                    best_chars = units.ngram_chars(i, n);
                }
            } else if best == 0 {
                best = 1;
                best_chars = units.ngram_chars(i, n);
            }
        }
        (best as usize, best_chars, covered)
    }

    /// The most characters any `n` consecutive units hold (0 when there are fewer than `n`).
    fn widest_window(units: &Units, n: usize) -> usize {
        if units.len() < n {
            return 0; // found by tests/config_extremes.rs: n above a document's length indexed past its end
        }
        (0..=units.len() - n).map(|i| units.ngram_chars(i, n)).max().unwrap_or(0)
    }

    /// Characters in n-grams seen before, scanning left to right and skipping past each
    /// repeat (datatrove's `find_all_duplicate`).
    pub fn duplicated_ngram_chars(units: &Units, n: usize, s: &mut Scratch) -> usize {
        let len = units.len();
        if len < n {
            return 0;
        }
        s.table.reset(len + 1 - n);
        let mut dup = 0;
        let mut i = 0;
        while i + n <= len {
            if s.table.seen(units.ngram(i, n)) {
                dup += units.ngram_chars(i, n);
                i += n;
            } else {
                i += 1;
            }
        }
        dup
    }

    /// `Err(name)` when a rule fails. `units` must be prepared up to [`Self::max_n`].
    pub fn check(&self, lines: &[Line], chars: usize, script: Script, units: &Units, s: &mut Scratch) -> Result<(), &str> {
        if !self.cfg.enabled || chars == 0 {
            return Ok(());
        }
        let r = self.lines(lines, chars, s);
        let c = &self.cfg;
        if r.dup_para_frac > c.max_dup_para_frac {
            return Err("repeated_paragraphs");
        }
        if r.dup_para_char_frac > c.max_dup_para_char_frac {
            return Err("repeated_paragraph_chars");
        }
        if r.dup_line_frac > c.max_dup_line_frac {
            return Err("repeated_lines");
        }
        if r.dup_line_char_frac > c.max_dup_line_char_frac {
            return Err("repeated_line_chars");
        }
        let rules = match script {
            Script::Cjk => &self.cjk,
            Script::Latin => &self.latin,
        };
        // Cheap bounds first. One pass at the smallest top n gives that rule exactly, a bound on
        // the other top rules (the most frequent longer n-gram occurs at most as often), and —
        // when the duplicated rules' n are not smaller — a bound on those (characters covered by
        // repeats). A second pass at the smallest duplicated n gives a tighter bound. A rule whose
        // bound is within its threshold passes without a pass of its own; the verdict is the same
        // as computing every rule (rules are still judged in their configured order).
        let min_n = |want_top: bool| rules.iter().filter(|r| r.2 == want_top).map(|r| r.0.n).min();
        let (min_top, min_dup) = (min_n(true), min_n(false));
        let mut base: Option<(usize, usize, usize, usize)> = None; // (n, count, chars, covered)
        let mut cover: Option<usize> = None;
        for (limit, name, top) in rules {
            let allowed = limit.max_frac * chars as f64;
            let mut base = |s: &mut Scratch| {
                *base.get_or_insert_with(|| {
                    let n0 = min_top.expect("asked only when a top rule exists");
                    let (count, best_chars, covered) = Self::top_and_cover(units, n0, s);
                    (n0, count, best_chars, covered)
                })
            };
            let measured = if *top {
                let (n0, count, best_chars, _) = base(s);
                if limit.n == n0 {
                    count * best_chars
                } else if ((count * Self::widest_window(units, limit.n)) as f64) <= allowed {
                    continue;
                } else {
                    Self::top_ngram_chars(units, limit.n, s)
                }
            } else {
                if let Some(n0) = min_top.filter(|&n0| n0 <= limit.n) {
                    let (_, _, _, covered) = base(s);
                    debug_assert!(n0 <= limit.n);
                    if covered as f64 <= allowed {
                        continue;
                    }
                }
                let bound = *cover.get_or_insert_with(|| Self::covered_by_repeats(units, min_dup.expect("a duplicated rule exists"), s));
                if bound as f64 <= allowed {
                    continue;
                }
                Self::duplicated_ngram_chars(units, limit.n, s)
            };
            if ratio(measured, chars) > limit.max_frac {
                return Err(name);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clean::stats::compute;

    fn units(text: &str) -> Units {
        let mut u = Units::default();
        compute(text, &mut u, &mut Vec::new());
        u.prepare_pow(20);
        u
    }

    #[test]
    fn lines_and_paragraphs() {
        let f = RepetitionFilter::new(&RepetitionConfig::default());
        let mut s = Scratch::default();
        let text = "a\nb\na\n\na\nb\na\n\nc";
        let mut lines = Vec::new();
        let st = compute(text, &mut Units::default(), &mut lines);
        let r = f.lines(&lines, st.chars, &mut s);
        // Lines a b a a b a c: 4 repeats of 7.
        assert!((r.dup_line_frac - 4.0 / 7.0).abs() < 1e-9);
        // Paragraphs "a\nb\na", "a\nb\na", "c": one repeat of 3, 5 characters of 15.
        assert!((r.dup_para_frac - 1.0 / 3.0).abs() < 1e-9);
        assert!((r.dup_para_char_frac - 5.0 / 15.0).abs() < 1e-9);
    }

    #[test]
    fn ngrams_match_datatrove_definitions() {
        let mut s = Scratch::default();
        // Words: "the cat the cat the dog" → top 2-gram "the cat" ×2, 6 characters each.
        let u = units("the cat the cat the dog");
        assert_eq!(RepetitionFilter::top_ngram_chars(&u, 2, &mut s), 12);
        // find_all_duplicate(n=2): [the cat] new, [cat the] new, [the cat] dup (+6, skip 2),
        // [the dog] new → 6.
        assert_eq!(RepetitionFilter::duplicated_ngram_chars(&u, 2, &mut s), 6);
        // CJK characters are units: 专利专利专利 → top 2-gram 专利 ×3.
        let u = units("专利专利专利");
        assert_eq!(RepetitionFilter::top_ngram_chars(&u, 2, &mut s), 6);
        assert_eq!(RepetitionFilter::duplicated_ngram_chars(&u, 2, &mut s), 4);
        assert_eq!(RepetitionFilter::top_ngram_chars(&u, 7, &mut s), 0);
    }

    /// The bounds that let `check` skip passes really bound the measures, on real texts and on
    /// repetitive ones.
    #[test]
    fn bounds_hold() {
        let mut s = Scratch::default();
        let mut texts: Vec<String> = crate::clean::tests::fixture_texts().into_iter().step_by(7).map(|t| t.text).collect();
        texts.push("好消息好消息，全场五折，走过路过不要错过。".repeat(20));
        texts.push("the cat sat on the mat and the cat sat on the hat ".repeat(9));
        for t in &texts {
            let u = units(t);
            for n0 in [1, 2, 5, 10] {
                let cover = RepetitionFilter::covered_by_repeats(&u, n0, &mut s);
                let (count, _) = RepetitionFilter::top_ngram(&u, n0, &mut s);
                for n in n0..=20 {
                    assert!(RepetitionFilter::duplicated_ngram_chars(&u, n, &mut s) <= cover, "n0 {n0} n {n}");
                    assert!(RepetitionFilter::top_ngram_chars(&u, n, &mut s) <= count * RepetitionFilter::widest_window(&u, n));
                }
            }
        }
    }
}
