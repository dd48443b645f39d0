//! Test corpora for deduplication, generated from the fixtures:
//!
//! * `gen_labelled`: every fixture text plus copies with controlled changes (cross-source exact
//!   and whitespace copies, 0.5–10 % character edits, paragraph shuffles, truncations, CN/EN
//!   mixtures), written as document shards, with the exact Jaccard (same shingling as the
//!   stage) of every pair inside a family as ground truth (`pairs.jsonl`).
//! * `score`: recall on pairs with Jaccard ≥ 0.8 and precision of the removals of a dedup run.
//! * `gen_scale`: a large corpus (≥ 1 GB) of documents composed from fixture chunks with varied
//!   ids and small mutations, a share of them near-copies, for the speed comparison.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::shingle::{is_cjk, Tokens};
use super::stage::{duplicates_table, read_duplicates};
use super::DedupConfig;
use crate::core::rng::SplitMix64;
use crate::doc::Document;
use crate::error::{Error, Result};
use crate::shard::{documents, Manifest, ShardWriter, WriterConfig};

/// A text taken from the fixtures.
#[derive(Debug, Clone)]
pub struct FixtureText {
    /// Source name (`wudao`, `cnipa`, `ipc`, `epo`, `uspto`).
    pub source: String,
    /// Document id.
    pub id: String,
    /// Language code.
    pub lang: String,
    /// The text.
    pub text: String,
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| Error::io(path, e))
}

fn json_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Other(format!("{}: {e}", path.display()))
}

fn strip_tags(s: &str) -> String {
    let re = regex::Regex::new(r"<[^>]*>").expect("regex");
    let t = re.replace_all(s, " ");
    t.replace("&amp;", "&")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// Reads the CPT texts of the fixtures (WuDao `content`, CoreTech patent `text`, IPC `des`, EP
/// full-text parts, USPTO grant descriptions) with a plain parser per file; the project's
/// readers are not used so the benchmark stands on its own.
pub fn load_fixture_texts(fixtures: &Path) -> Result<Vec<FixtureText>> {
    let mut out = Vec::new();
    let mut push = |source: &str, id: String, lang: &str, text: String| {
        if text.chars().count() >= 20 {
            out.push(FixtureText { source: source.into(), id, lang: lang.into(), text });
        }
    };
    let p = fixtures.join("wudao/wudaosailing_corpus_test.json");
    let v: Vec<serde_json::Value> = serde_json::from_str(&read(&p)?).map_err(|e| json_err(&p, e))?;
    for o in v {
        push("wudao", format!("wudao:{}", o["id"]), "zh", o["content"].as_str().unwrap_or_default().to_string());
    }
    let p = fixtures.join("wudao/coretech_wudao_demo.jsonl");
    for line in read(&p)?.lines().filter(|l| !l.trim().is_empty()) {
        let o: serde_json::Value = serde_json::from_str(line).map_err(|e| json_err(&p, e))?;
        push("wudao", format!("wudao:demo-{}", o["id"]), "zh", o["content"].as_str().unwrap_or_default().to_string());
    }
    let p = fixtures.join("cnipa/coretech_Patent_demo.json");
    let v: Vec<serde_json::Value> = serde_json::from_str(&read(&p)?).map_err(|e| json_err(&p, e))?;
    for o in v {
        push(
            "cnipa",
            format!("cnipa:{}", o["patent_id"].as_str().unwrap_or_default()),
            "zh",
            o["text"].as_str().unwrap_or_default().to_string(),
        );
    }
    for (file, tag) in [("ipc/coretech_ipcDes_demo.jsonl", "demo-"), ("ipc/coretech_ipc_description_expand.hier+G06+H04.jsonl", "")] {
        let p = fixtures.join(file);
        for line in read(&p)?.lines().filter(|l| !l.trim().is_empty()) {
            let o: serde_json::Value = serde_json::from_str(line).map_err(|e| json_err(&p, e))?;
            push(
                "ipc",
                format!("ipc:{tag}{}", o["ipc"].as_str().unwrap_or_default()),
                "zh",
                o["des"].as_str().unwrap_or_default().to_string(),
            );
        }
    }
    let p = fixtures.join("epo/EP0600000-fulltext-sample.tsv");
    for line in read(&p)?.lines() {
        let f: Vec<&str> = line.split('\t').collect();
        if f.len() == 7 && matches!(f[5], "ABSTR" | "DESCR" | "CLAIM") {
            let text = strip_tags(f[6]);
            if text.len() > 200 {
                push("epo", format!("epo:EP{}{}:{}:{}", f[1], f[2], f[4], f[5]), f[4], text);
            }
        }
    }
    let p = fixtures.join("uspto/ipg130416.small.xml");
    for doc in read(&p)?.split("<?xml").filter(|d| d.contains("<description")) {
        let num = doc.split("<doc-number>").nth(1).and_then(|r| r.split('<').next()).unwrap_or("?");
        if let Some(desc) = doc.split("<description").nth(1).and_then(|r| r.split("</description>").next()) {
            let desc = desc.split_once('>').map(|x| x.1).unwrap_or(desc);
            push("uspto", format!("uspto:US{num}"), "en", strip_tags(desc));
        }
    }
    Ok(out)
}

/// Applies `rate` × length random character edits (substitutions, deletions, insertions; new
/// characters are CJK where the edited one is, lowercase letters elsewhere).
pub fn char_edits(text: &str, rate: f64, rng: &mut SplitMix64) -> String {
    let chars: Vec<char> = text.chars().collect();
    if chars.is_empty() {
        return String::new();
    }
    let n = ((chars.len() as f64 * rate).round() as usize).max(1);
    let mut edits: BTreeMap<usize, u8> = BTreeMap::new();
    while edits.len() < n.min(chars.len()) {
        edits.insert(rng.below(chars.len() as u64) as usize, (rng.below(4)) as u8);
    }
    let mut out = String::with_capacity(text.len() + n * 3);
    let rand_like = |c: char, rng: &mut SplitMix64| {
        if is_cjk(c) {
            char::from_u32(0x4E00 + rng.below(0x51A5) as u32).unwrap()
        } else {
            (b'a' + rng.below(26) as u8) as char
        }
    };
    for (i, &c) in chars.iter().enumerate() {
        match edits.get(&i) {
            None => out.push(c),
            Some(0) | Some(1) => out.push(rand_like(c, rng)), // substitution (half of the edits)
            Some(2) => {}                                     // deletion
            Some(_) => {
                out.push(c);
                out.push(rand_like(c, rng)); // insertion
            }
        }
    }
    out
}

fn paragraphs(text: &str) -> Vec<String> {
    let lines: Vec<&str> = text.split('\n').filter(|l| !l.trim().is_empty()).collect();
    if lines.len() >= 3 {
        return lines.into_iter().map(String::from).collect();
    }
    // One-paragraph texts (WuDao): shuffle sentences instead.
    let mut out = Vec::new();
    let mut cur = String::new();
    for c in text.chars() {
        cur.push(c);
        if matches!(c, '。' | '！' | '？' | '.') && cur.chars().count() > 20 {
            out.push(std::mem::take(&mut cur));
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

fn truncate_chars(text: &str, keep: f64) -> String {
    let n = text.chars().count();
    text.chars().take(((n as f64) * keep).round() as usize).collect()
}

/// One labelled document.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LabelDoc {
    /// Document id.
    pub id: String,
    /// Family (the original it derives from).
    pub family: u32,
    /// How it was made (`original`, `edit-1%`, `shuffle`, …).
    pub variant: String,
}

/// A ground-truth pair inside a family.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LabelPair {
    /// First document.
    pub a: String,
    /// Second document.
    pub b: String,
    /// Variant of `a`.
    pub va: String,
    /// Variant of `b`.
    pub vb: String,
    /// Exact Jaccard of their shingle sets.
    pub jaccard: f64,
}

/// Shingle set as 64-bit hashes (2⁻⁶⁴ collision odds per pair of distinct shingles: exact for
/// all practical purposes, and fast enough for the hundreds of thousands of ground-truth pairs).
fn shingle_hashes(text: &str, cfg: &DedupConfig, t: &mut Tokens) -> HashSet<u64> {
    t.tokenize(text, cfg.near.case_fold);
    let mut set = HashSet::new();
    t.for_each_shingle(cfg.near.word_ngram, cfg.near.cjk_ngram, |s| {
        set.insert(xxhash_rust::xxh3::xxh3_64_with_seed(s, 0x5eed));
    });
    set
}

/// Writes documents as shards of `rows_per_shard` into `dir` (with a manifest).
pub fn write_shards(dir: &Path, docs: impl IntoIterator<Item = Document>, rows_per_shard: usize) -> Result<Manifest> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut m = Manifest { kind: "documents".into(), tool_version: env!("CARGO_PKG_VERSION").into(), ..Default::default() };
    let mut buf: Vec<Document> = Vec::new();
    let mut writer: Option<ShardWriter> = None;
    let mut in_shard = 0usize;
    let cfg = WriterConfig::default();
    for d in docs {
        if writer.is_none() {
            writer = Some(ShardWriter::create(&dir.join(format!("part-{:05}.parquet", m.shards.len())), documents::schema(), &cfg)?);
        }
        buf.push(d);
        in_shard += 1;
        if buf.len() >= 2048 || in_shard == rows_per_shard {
            writer.as_mut().unwrap().write(&documents::to_batch(&buf))?;
            buf.clear();
        }
        if in_shard == rows_per_shard {
            m.shards.push(writer.take().unwrap().finish()?);
            in_shard = 0;
        }
    }
    if let Some(mut w) = writer {
        if !buf.is_empty() {
            w.write(&documents::to_batch(&buf))?;
        }
        m.shards.push(w.finish()?);
    }
    m.save(dir)?;
    Ok(m)
}

/// Settings of the labelled set.
#[derive(Debug, Clone)]
pub struct LabelledConfig {
    /// Fixture directory (`fixtures/data`).
    pub fixtures: PathBuf,
    /// Output directory: `documents/`, `labels.jsonl`, `pairs.jsonl`.
    pub out: PathBuf,
    /// Seed of every random choice.
    pub seed: u64,
    /// Use at most this many originals (0: all).
    pub max_originals: usize,
}

/// Summary of a generated labelled set.
#[derive(Debug, Clone, Default)]
pub struct LabelledSummary {
    /// Documents written.
    pub docs: usize,
    /// Families (originals).
    pub families: usize,
    /// Ground-truth pairs.
    pub pairs: usize,
    /// Pairs with Jaccard ≥ 0.8.
    pub pairs_08: usize,
}

/// Generates the labelled set; `dedup` gives the shingling of the ground truth.
pub fn gen_labelled(cfg: &LabelledConfig, dedup: &DedupConfig) -> Result<LabelledSummary> {
    let mut texts = load_fixture_texts(&cfg.fixtures)?;
    let mut rng = SplitMix64::new(cfg.seed);
    if cfg.max_originals > 0 && texts.len() > cfg.max_originals {
        rng.shuffle(&mut texts);
        texts.truncate(cfg.max_originals);
    }
    let english: Vec<usize> = (0..texts.len()).filter(|&i| texts[i].lang == "en" && texts[i].text.len() > 500).collect();
    let mut docs: Vec<(Document, LabelDoc)> = Vec::new();
    let mut family = 0u32;
    let mut add_family = |orig: &FixtureText, mixture: bool, rng: &mut SplitMix64, docs: &mut Vec<(Document, LabelDoc)>| {
        let f = family;
        family += 1;
        let base = Document {
            id: orig.id.clone(),
            source: orig.source.clone(),
            lang: orig.lang.clone(),
            date: "2020-01-01".into(),
            text: orig.text.clone(),
            ..Default::default()
        };
        let variant = |name: &str, source: &str, text: String, docs: &mut Vec<(Document, LabelDoc)>| {
            let id = if name == "original" { base.id.clone() } else { format!("{source}:{}~{name}", base.id) };
            let d = Document {
                id: id.clone(),
                source: source.into(),
                date: if name == "original" { base.date.clone() } else { "2021-06-01".into() },
                text,
                ..base.clone()
            };
            docs.push((d, LabelDoc { id, family: f, variant: name.into() }));
        };
        variant("original", &orig.source, orig.text.clone(), docs);
        if mixture {
            for rate in [0.005, 0.01] {
                variant(&format!("mix-edit-{}%", rate * 100.0), &orig.source, char_edits(&orig.text, rate, rng), docs);
            }
            return;
        }
        variant("exact-copy", "mirror", orig.text.clone(), docs);
        let ws: String = orig.text.replace('\n', " \r\n  ").replace(' ', "  ") + "\n";
        variant("whitespace", "mirror", ws, docs);
        for rate in [0.005, 0.01, 0.02, 0.05, 0.10] {
            variant(&format!("edit-{}%", rate * 100.0), &orig.source, char_edits(&orig.text, rate, rng), docs);
        }
        let mut paras = paragraphs(&orig.text);
        if paras.len() >= 3 {
            rng.shuffle(&mut paras);
            let sep = if orig.text.contains('\n') { "\n" } else { "" };
            variant("shuffle", &orig.source, paras.join(sep), docs);
        }
        for keep in [0.9, 0.7, 0.5] {
            variant(&format!("trunc-{}%", (keep * 100.0) as u32), &orig.source, truncate_chars(&orig.text, keep), docs);
        }
    };
    for t in &texts {
        add_family(t, false, &mut rng, &mut docs);
    }
    // CN/EN mixtures: a Chinese text followed by an English one, as new families.
    if !english.is_empty() {
        let chinese: Vec<usize> = (0..texts.len()).filter(|&i| texts[i].lang == "zh" && texts[i].text.len() > 300).collect();
        for (n, &zi) in chinese.iter().step_by(10).enumerate() {
            let ei = english[rng.below(english.len() as u64) as usize];
            let en: String = texts[ei].text.chars().take(texts[zi].text.chars().count()).collect();
            let mix = FixtureText {
                source: texts[zi].source.clone(),
                id: format!("{}:mix-{n}", texts[zi].source),
                lang: "zh".into(),
                text: format!("{}\n{}", texts[zi].text, en),
            };
            add_family(&mix, true, &mut rng, &mut docs);
        }
    }
    // Input order is shuffled: the stage must not rely on originals coming first.
    rng.shuffle(&mut docs);

    std::fs::create_dir_all(&cfg.out).map_err(|e| Error::io(&cfg.out, e))?;
    let labels_path = cfg.out.join("labels.jsonl");
    let mut lw = std::io::BufWriter::new(std::fs::File::create(&labels_path).map_err(|e| Error::io(&labels_path, e))?);
    for (_, l) in &docs {
        writeln!(lw, "{}", serde_json::to_string(l).unwrap()).map_err(|e| Error::io(&labels_path, e))?;
    }
    lw.flush().map_err(|e| Error::io(&labels_path, e))?;

    // Ground truth: exact Jaccard of every pair inside a family.
    let mut by_family: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
    for (i, (_, l)) in docs.iter().enumerate() {
        by_family.entry(l.family).or_default().push(i);
    }
    let fams: Vec<Vec<usize>> = by_family.into_values().collect();
    let pairs: Vec<LabelPair> = fams
        .par_iter()
        .map_init(Tokens::default, |t, members| {
            let sets: Vec<HashSet<u64>> = members.iter().map(|&i| shingle_hashes(&docs[i].0.text, dedup, t)).collect();
            let mut out = Vec::new();
            for x in 0..members.len() {
                for y in x + 1..members.len() {
                    let (a, b) = (&docs[members[x]].1, &docs[members[y]].1);
                    out.push(LabelPair {
                        a: a.id.clone(),
                        b: b.id.clone(),
                        va: a.variant.clone(),
                        vb: b.variant.clone(),
                        jaccard: super::shingle::jaccard(&sets[x], &sets[y]),
                    });
                }
            }
            out
        })
        .flatten()
        .collect();
    let pairs_path = cfg.out.join("pairs.jsonl");
    let mut pw = std::io::BufWriter::new(std::fs::File::create(&pairs_path).map_err(|e| Error::io(&pairs_path, e))?);
    for p in &pairs {
        writeln!(pw, "{}", serde_json::to_string(p).unwrap()).map_err(|e| Error::io(&pairs_path, e))?;
    }
    pw.flush().map_err(|e| Error::io(&pairs_path, e))?;
    let summary = LabelledSummary {
        docs: docs.len(),
        families: fams.len(),
        pairs: pairs.len(),
        pairs_08: pairs.iter().filter(|p| p.jaccard >= 0.8).count(),
    };
    write_shards(&cfg.out.join("documents"), docs.into_iter().map(|(d, _)| d), 5000)?;
    Ok(summary)
}

fn read_jsonl<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Vec<T>> {
    let f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut out = Vec::new();
    for (i, line) in std::io::BufReader::new(f).lines().enumerate() {
        let line = line.map_err(|e| Error::io(path, e))?;
        out.push(serde_json::from_str(&line).map_err(|e| Error::Other(format!("{}:{}: {e}", path.display(), i + 1)))?);
    }
    Ok(out)
}

/// Quality of a dedup run on a labelled set.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Score {
    /// Ground-truth pairs with Jaccard ≥ 0.8.
    pub pairs_08: usize,
    /// Of those, pairs of which at most one document is left in the output (the duplication is
    /// gone).
    pub caught_08: usize,
    /// Of those, pairs whose documents resolve to the same kept document (stricter: the removal
    /// of one names the other, or both name the same kept document).
    pub same_kept_08: usize,
    /// Removals (rows of the duplicates table).
    pub removals: usize,
    /// Removals whose removed and kept documents are of one family, or have exact Jaccard ≥ 0.8.
    pub correct_removals: usize,
    /// Removals across families (distinct documents merged), with their exact Jaccard.
    pub wrong: Vec<(String, String, f64)>,
    /// Share caught per variant, over original–variant pairs: (caught, total).
    pub by_variant: BTreeMap<String, (usize, usize)>,
    /// Recall on pairs with Jaccard ≥ 0.8 by Jaccard bin ("0.80-0.85", …): (caught, total).
    pub by_bin: BTreeMap<String, (usize, usize)>,
}

impl Score {
    /// Recall on pairs with Jaccard ≥ 0.8.
    pub fn recall(&self) -> f64 {
        self.caught_08 as f64 / self.pairs_08.max(1) as f64
    }
    /// Precision of the removals.
    pub fn precision(&self) -> f64 {
        if self.removals == 0 {
            1.0
        } else {
            self.correct_removals as f64 / self.removals as f64
        }
    }
    /// A printable report.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "recall (pairs with Jaccard >= 0.8 of which at most one document is left): {:.4} ({} of {})",
            self.recall(),
            self.caught_08,
            self.pairs_08
        );
        let _ = writeln!(
            s,
            "  stricter, both resolve to the same kept document: {:.4} ({} of {})",
            self.same_kept_08 as f64 / self.pairs_08.max(1) as f64,
            self.same_kept_08,
            self.pairs_08
        );
        let _ = writeln!(
            s,
            "precision (removals within a family or with exact Jaccard >= 0.8): {:.4} ({} of {})",
            self.precision(),
            self.correct_removals,
            self.removals
        );
        let _ = writeln!(s, "distinct documents merged: {}", self.wrong.len());
        for (a, b, j) in self.wrong.iter().take(10) {
            let _ = writeln!(s, "  {a} -> {b} (exact Jaccard {j:.3})");
        }
        let _ = writeln!(s, "recall by exact Jaccard:");
        for (k, (c, t)) in &self.by_bin {
            let _ = writeln!(s, "  {k:<10} {:>7.4} ({c} of {t})", *c as f64 / (*t).max(1) as f64);
        }
        let _ = writeln!(s, "caught per variant (original-variant pairs, any Jaccard):");
        for (k, (c, t)) in &self.by_variant {
            let _ = writeln!(s, "  {k:<16} {:>7.4} ({c} of {t})", *c as f64 / (*t).max(1) as f64);
        }
        s
    }
}

/// Scores the dedup output in `cfg.output` against the labelled set in `labelled`.
pub fn score(labelled: &Path, cfg: &DedupConfig) -> Result<Score> {
    let labels: Vec<LabelDoc> = read_jsonl(&labelled.join("labels.jsonl"))?;
    let pairs: Vec<LabelPair> = read_jsonl(&labelled.join("pairs.jsonl"))?;
    let family: HashMap<&str, u32> = labels.iter().map(|l| (l.id.as_str(), l.family)).collect();
    let dups = read_duplicates(&duplicates_table(cfg)?)?;
    // A pair is caught when both documents resolve to the same kept document.
    let kept_of: HashMap<&str, &str> = dups.iter().map(|r| (r.removed_id.as_str(), r.kept_id.as_str())).collect();
    let resolve = |x: &str| -> Option<String> {
        match kept_of.get(x) {
            Some(k) => Some(k.to_string()),
            None => Some(x.to_string()),
        }
    };
    let same = |a: &str, b: &str| (kept_of.contains_key(a) || kept_of.contains_key(b)) && resolve(a) == resolve(b);
    let gone = |a: &str, b: &str| kept_of.contains_key(a) || kept_of.contains_key(b);
    let mut sc = Score { removals: dups.len(), ..Default::default() };
    for p in &pairs {
        let caught = gone(&p.a, &p.b);
        if p.jaccard >= 0.8 {
            sc.pairs_08 += 1;
            sc.caught_08 += caught as usize;
            sc.same_kept_08 += same(&p.a, &p.b) as usize;
            let bin = if p.jaccard >= 0.999999 {
                "1.00".to_string()
            } else {
                let lo = (p.jaccard * 20.0).floor() / 20.0;
                format!("{lo:.2}-{:.2}", lo + 0.05)
            };
            let e = sc.by_bin.entry(bin).or_default();
            e.0 += caught as usize;
            e.1 += 1;
        }
        let v = if p.va == "original" {
            Some(&p.vb)
        } else if p.vb == "original" {
            Some(&p.va)
        } else {
            None
        };
        if let Some(v) = v {
            let e = sc.by_variant.entry(v.clone()).or_default();
            e.0 += caught as usize;
            e.1 += 1;
        }
    }
    // Removals across families: exact Jaccard decides whether they are real duplicates.
    let cross: Vec<&super::stage::DuplicateRow> = dups
        .iter()
        .filter(|r| family.get(r.removed_id.as_str()) != family.get(r.kept_id.as_str()) || !family.contains_key(r.removed_id.as_str()))
        .collect();
    let wanted: HashSet<&str> = cross.iter().flat_map(|r| [r.removed_id.as_str(), r.kept_id.as_str()]).collect();
    let mut texts: HashMap<String, String> = HashMap::new();
    for shard in documents::shard_files(&cfg.input)? {
        for b in documents::read_shard(&shard, 4096)? {
            for d in b? {
                if wanted.contains(d.id.as_str()) {
                    texts.insert(d.id, d.text);
                }
            }
        }
    }
    let mut t = Tokens::default();
    for r in &cross {
        let j = match (texts.get(&r.removed_id), texts.get(&r.kept_id)) {
            (Some(a), Some(b)) => super::shingle::jaccard(&shingle_hashes(a, cfg, &mut t), &shingle_hashes(b, cfg, &mut t)),
            _ => 0.0,
        };
        if j < 0.8 {
            sc.wrong.push((r.removed_id.clone(), r.kept_id.clone(), j));
        }
    }
    sc.correct_removals = sc.removals - sc.wrong.len();
    Ok(sc)
}

// --- copy families ---------------------------------------------------------------------------

/// One document of a copy-family corpus.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FamilyDoc {
    /// Document id.
    pub id: String,
    /// Family (index of its original in the base set).
    pub family: u32,
    /// `original`, `copy`, `shuffle` or `trunc-90%`.
    pub variant: String,
    /// Exact Jaccard with the family's original (1 for the original).
    pub jaccard: f64,
}

/// Settings of a copy-family corpus.
#[derive(Debug, Clone)]
pub struct FamiliesConfig {
    /// Fixture directory (`fixtures/data`).
    pub fixtures: PathBuf,
    /// Output directory: one `edit-R%/` corpus per edit rate (`documents/`, `labels.jsonl`).
    pub out: PathBuf,
    /// Seed of every random choice.
    pub seed: u64,
    /// Copies per original: all but two are edited copies, one is a paragraph shuffle and one a
    /// 90 % truncation (both also edited).
    pub copies: usize,
    /// Character edit rates, one corpus each.
    pub rates: Vec<f64>,
    /// Two originals with exact Jaccard at least this are near copies: the later one is left out
    /// of the base set, so every removal across families is a mistake.
    pub base_max_jaccard: f64,
}

/// What a generated copy-family corpus holds.
#[derive(Debug, Clone, Default)]
pub struct FamiliesSummary {
    /// Fixture texts read.
    pub texts: usize,
    /// Originals kept in the base set.
    pub originals: usize,
    /// Per edit rate: (directory, documents).
    pub corpora: Vec<(PathBuf, usize)>,
}

/// The sorted 64-bit shingle hashes of a text.
fn sorted_shingles(text: &str, cfg: &DedupConfig, t: &mut Tokens) -> Vec<u64> {
    let mut v: Vec<u64> = shingle_hashes(text, cfg, t).into_iter().collect();
    v.sort_unstable();
    v
}

fn sorted_jaccard(a: &[u64], b: &[u64]) -> f64 {
    if a.is_empty() && b.is_empty() {
        return 1.0;
    }
    let (mut i, mut j, mut inter) = (0, 0, 0usize);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                inter += 1;
                i += 1;
                j += 1;
            }
        }
    }
    inter as f64 / (a.len() + b.len() - inter) as f64
}

/// The directory name of an edit rate's corpus (`edit-0.5%`).
pub fn rate_dir(rate: f64) -> String {
    format!("edit-{}%", rate * 100.0)
}

/// Generates one copy-family corpus per edit rate: every fixture text that is not a near copy of
/// an earlier one (exact Jaccard < `base_max_jaccard`) is an original (`text:ID#0`), followed by
/// `copies` copies (`text:ID#1`…): edited copies, a paragraph shuffle and a 90 % truncation,
/// each with `rate` × length random character edits. All documents have source `text` and no
/// date (the shape of the fixture mix repeated as JSONL and read by the docs stage), so the keep
/// policy falls back to the id and the original is the first of its family. `dedup` gives the
/// shingling of the ground truth (exact Jaccard of each copy with its original). The input order
/// is shuffled.
pub fn gen_families(cfg: &FamiliesConfig, dedup: &DedupConfig) -> Result<FamiliesSummary> {
    let texts = load_fixture_texts(&cfg.fixtures)?;
    // The base set: greedy in fixture order, a text is left out when it is a near copy of one
    // already in (size filter first: J ≥ t needs |small| ≥ t·|large|).
    let sets: Vec<Vec<u64>> = texts.par_iter().map_init(Tokens::default, |t, x| sorted_shingles(&x.text, dedup, t)).collect();
    let mut base: Vec<usize> = Vec::new();
    for i in 0..texts.len() {
        if sets[i].is_empty() {
            continue;
        }
        let near = base.par_iter().any(|&j| {
            let (a, b) = (sets[i].len() as f64, sets[j].len() as f64);
            a.min(b) >= cfg.base_max_jaccard * a.max(b) && sorted_jaccard(&sets[i], &sets[j]) >= cfg.base_max_jaccard
        });
        if !near {
            base.push(i);
        }
    }
    let mut summary = FamiliesSummary { texts: texts.len(), originals: base.len(), corpora: Vec::new() };
    for (ri, &rate) in cfg.rates.iter().enumerate() {
        let mut rng = SplitMix64::new(cfg.seed.wrapping_add(ri as u64 * 0x9E37_79B9));
        let mut docs: Vec<(Document, String, u32)> = Vec::new();
        for (f, &ti) in base.iter().enumerate() {
            let o = &texts[ti];
            // As the corpus of the issue (the fixture mix repeated with edits and read back as
            // JSONL): one source, no dates, the original is copy #0 and comes first by id.
            let orig = Document {
                id: format!("text:{}#0", o.id),
                source: "text".into(),
                lang: o.lang.clone(),
                text: o.text.clone(),
                ..Default::default()
            };
            docs.push((orig.clone(), "original".into(), f as u32));
            let paras = paragraphs(&o.text);
            for c in 0..cfg.copies {
                let (variant, text) = if c + 2 == cfg.copies && paras.len() >= 3 {
                    let mut p = paras.clone();
                    rng.shuffle(&mut p);
                    let sep = if o.text.contains('\n') { "\n" } else { "" };
                    ("shuffle", p.join(sep))
                } else if c + 1 == cfg.copies {
                    ("trunc-90%", truncate_chars(&o.text, 0.9))
                } else {
                    ("copy", o.text.clone())
                };
                let text = char_edits(&text, rate, &mut rng);
                let d = Document { id: format!("text:{}#{}", o.id, c + 1), text, ..orig.clone() };
                docs.push((d, variant.into(), f as u32));
            }
        }
        rng.shuffle(&mut docs);
        let labels: Vec<FamilyDoc> = docs
            .par_iter()
            .map_init(Tokens::default, |t, (d, variant, f)| {
                let jaccard =
                    if variant == "original" { 1.0 } else { sorted_jaccard(&sorted_shingles(&d.text, dedup, t), &sets[base[*f as usize]]) };
                FamilyDoc { id: d.id.clone(), family: *f, variant: variant.clone(), jaccard }
            })
            .collect();
        let dir = cfg.out.join(rate_dir(rate));
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let lp = dir.join("labels.jsonl");
        let mut lw = std::io::BufWriter::new(std::fs::File::create(&lp).map_err(|e| Error::io(&lp, e))?);
        for l in &labels {
            writeln!(lw, "{}", serde_json::to_string(l).unwrap()).map_err(|e| Error::io(&lp, e))?;
        }
        lw.flush().map_err(|e| Error::io(&lp, e))?;
        let n = docs.len();
        write_shards(&dir.join("documents"), docs.into_iter().map(|(d, _, _)| d), 5000)?;
        summary.corpora.push((dir, n));
    }
    Ok(summary)
}

/// Quality of a dedup run on a copy-family corpus.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FamilyScore {
    /// The threshold copies were judged removable by (exact Jaccard with the original).
    pub threshold: f64,
    /// Families.
    pub families: usize,
    /// Copies (documents other than originals).
    pub copies: usize,
    /// Copies whose exact Jaccard with their original is at least the threshold.
    pub removable: usize,
    /// Of those, removed.
    pub removable_removed: usize,
    /// Copies below the threshold that were removed anyway (in favour of their own family).
    pub below_removed: usize,
    /// Families none of whose documents is left.
    pub no_survivor: usize,
    /// Families that keep a removable copy.
    pub with_extra: usize,
    /// Removals.
    pub removals: usize,
    /// Removals whose kept document is of the same family.
    pub same_family: usize,
    /// Removals across families: (removed, kept).
    pub wrong: Vec<(String, String)>,
    /// Per variant: (removable removed, removable).
    pub by_variant: BTreeMap<String, (usize, usize)>,
}

impl FamilyScore {
    /// Removable copies removed / removable copies.
    pub fn recall(&self) -> f64 {
        self.removable_removed as f64 / self.removable.max(1) as f64
    }
    /// Removals within a family / removals.
    pub fn precision(&self) -> f64 {
        if self.removals == 0 {
            1.0
        } else {
            self.same_family as f64 / self.removals as f64
        }
    }
    /// A printable report.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let recall = if self.removable == 0 { "n/a".to_string() } else { format!("{:.4}", self.recall()) };
        let _ = writeln!(
            s,
            "near-copy recall (removable copies removed; removable: exact Jaccard with the original >= {}): {recall} ({} of {}; {} copies in all)",
            self.threshold,
            self.removable_removed,
            self.removable,
            self.copies
        );
        let _ = writeln!(s, "families with no survivor: {} of {}", self.no_survivor, self.families);
        let _ = writeln!(s, "families keeping a removable copy: {}", self.with_extra);
        let _ = writeln!(
            s,
            "precision (removals in favour of the same family): {:.4} ({} of {})",
            self.precision(),
            self.same_family,
            self.removals
        );
        let _ = writeln!(s, "copies below the threshold removed in favour of their family: {}", self.below_removed);
        for (a, b) in self.wrong.iter().take(10) {
            let _ = writeln!(s, "  across families: {a} -> {b}");
        }
        for (k, (c, t)) in &self.by_variant {
            let _ = writeln!(s, "  {k:<10} {:>7.4} ({c} of {t} removable)", *c as f64 / (*t).max(1) as f64);
        }
        s
    }
}

/// Scores the dedup output in `cfg.output` against the corpus in `corpus` (an `edit-R%`
/// directory of [`gen_families`]).
pub fn score_families(corpus: &Path, cfg: &DedupConfig) -> Result<FamilyScore> {
    let labels: Vec<FamilyDoc> = read_jsonl(&corpus.join("labels.jsonl"))?;
    let family: HashMap<&str, u32> = labels.iter().map(|l| (l.id.as_str(), l.family)).collect();
    let dups = read_duplicates(&duplicates_table(cfg)?)?;
    let kept_of: HashMap<&str, &str> = dups.iter().map(|r| (r.removed_id.as_str(), r.kept_id.as_str())).collect();
    let t = cfg.near.threshold;
    let mut sc = FamilyScore { threshold: t, removals: dups.len(), ..Default::default() };
    let mut members: BTreeMap<u32, (usize, usize, bool)> = BTreeMap::new(); // (docs, removed, removable kept)
    for l in &labels {
        let removed = kept_of.contains_key(l.id.as_str());
        let e = members.entry(l.family).or_default();
        e.0 += 1;
        e.1 += removed as usize;
        if l.variant == "original" {
            continue;
        }
        sc.copies += 1;
        let v = sc.by_variant.entry(l.variant.clone()).or_default();
        if l.jaccard >= t {
            sc.removable += 1;
            sc.removable_removed += removed as usize;
            v.1 += 1;
            v.0 += removed as usize;
            e.2 |= !removed;
        } else if removed {
            sc.below_removed += 1;
        }
    }
    sc.families = members.len();
    sc.no_survivor = members.values().filter(|(n, r, _)| n == r).count();
    sc.with_extra = members.values().filter(|(_, _, x)| *x).count();
    for r in &dups {
        if family.contains_key(r.removed_id.as_str()) && family.get(r.removed_id.as_str()) == family.get(r.kept_id.as_str()) {
            sc.same_family += 1;
        } else {
            sc.wrong.push((r.removed_id.clone(), r.kept_id.clone()));
        }
    }
    Ok(sc)
}

/// Generates about `bytes` of text as document shards: each document is 2–6 chunks (~1 KB) of
/// fixture text with 1 % character edits; a share `near_copies` of them (0.2 in the speed
/// benchmark, 0.8 for heavily duplicated input) is instead a copy of a recent document with
/// 0.5–2 % edits (a near duplicate).
pub fn gen_scale(fixtures: &Path, out: &Path, bytes: u64, seed: u64, rows_per_shard: usize, near_copies: f64) -> Result<Manifest> {
    // In millionths, so that 0.2 draws exactly as the original one-in-five rule did.
    let copy_ppm = (near_copies.clamp(0.0, 1.0) * 1e6).round() as u64;
    let texts = load_fixture_texts(fixtures)?;
    let mut chunks: Vec<(usize, String)> = Vec::new();
    for (ti, t) in texts.iter().enumerate() {
        let mut cur = String::new();
        for c in t.text.chars() {
            cur.push(c);
            if cur.len() >= 1000 {
                chunks.push((ti, std::mem::take(&mut cur)));
            }
        }
        if cur.len() >= 200 {
            chunks.push((ti, cur));
        }
    }
    let mut rng = SplitMix64::new(seed);
    let mut total = 0u64;
    let mut n = 0u64;
    let mut recent: Vec<Document> = Vec::new();
    let iter = std::iter::from_fn(|| {
        if total >= bytes {
            return None;
        }
        let d = if !recent.is_empty() && rng.below(1_000_000) < copy_ppm {
            let src = &recent[rng.below(recent.len() as u64) as usize];
            let rate = [0.005, 0.01, 0.02][rng.below(3) as usize];
            Document { id: format!("{}:scale-{n}", src.source), text: char_edits(&src.text, rate, &mut rng), ..src.clone() }
        } else {
            let k = 2 + rng.below(5) as usize;
            let mut text = String::new();
            let mut source = String::new();
            for j in 0..k {
                let (ti, c) = &chunks[rng.below(chunks.len() as u64) as usize];
                if j == 0 {
                    source = texts[*ti].source.clone();
                }
                text.push_str(&char_edits(c, 0.01, &mut rng));
                text.push('\n');
            }
            let date = format!("20{:02}-{:02}-{:02}", rng.below(25), 1 + rng.below(12), 1 + rng.below(28));
            Document { id: format!("{source}:scale-{n}"), source, lang: String::new(), date, text, ..Default::default() }
        };
        n += 1;
        total += d.text.len() as u64;
        if recent.len() < 256 {
            recent.push(d.clone());
        } else {
            let i = rng.below(256) as usize;
            recent[i] = d.clone();
        }
        Some(d)
    });
    write_shards(out, iter, rows_per_shard)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edits_change_the_requested_share() {
        let mut rng = SplitMix64::new(1);
        let text: String = "边缘推断应用干扰感知".repeat(100);
        let e = char_edits(&text, 0.01, &mut rng);
        let diff = text.chars().zip(e.chars()).filter(|(a, b)| a != b).count();
        assert!(diff >= 1 && e != text);
        assert!(e.chars().all(is_cjk), "CJK text gets CJK edits");
    }

    #[test]
    fn fixture_texts_cover_every_source() {
        let t = load_fixture_texts(Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/data"))).unwrap();
        let mut by: BTreeMap<&str, usize> = BTreeMap::new();
        for x in &t {
            *by.entry(x.source.as_str()).or_default() += 1;
        }
        assert!(by["wudao"] >= 480 && by["cnipa"] == 10 && by["ipc"] >= 2800 && by["epo"] >= 5 && by["uspto"] >= 20, "{by:?}");
    }
}
