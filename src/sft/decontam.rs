//! Decontamination.
//!
//! Train vs test: a training example is removed when its question equals a test question
//! after normalization ([`normalize`]), or when the Jaccard similarity of their n-gram sets
//! (`question_ngram`, units as in [`super::text`]) reaches `question_threshold`.
//!
//! Test vs the CPT corpus: the n-grams (13 by default; one unit per CJK character, so
//! char-level for Chinese) of every test question (and answer, if configured) are hashed with
//! xxh3 into a set — its size is bounded by the test set, not the corpus — and the document
//! shards are streamed past it. A test example with any n-gram in the corpus is flagged, with
//! the share of its n-grams found and the first document (in shard order) that holds one.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::config::DecontamConfig;
use super::example::Example;
use super::text::{for_each_ngram, ngram_set, normalize, unit_hashes};
use crate::error::Result;
use crate::shard::documents::{read_shard, shard_files};

/// A training example that overlaps a test example.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Overlap {
    /// The training example (removed).
    pub train_id: String,
    /// The test example it overlaps.
    pub test_id: String,
    /// `exact` (same normalized question) or `ngram`.
    pub kind: String,
    /// Jaccard similarity of the question n-gram sets (1 for exact).
    pub similarity: f64,
}

/// For each training example, the test example it overlaps, if any.
pub fn train_test_overlap(train: &[&Example], test: &[&Example], cfg: &DecontamConfig) -> Vec<Option<Overlap>> {
    let mut exact: HashMap<String, usize> = HashMap::new();
    let mut sets: Vec<Vec<u64>> = Vec::with_capacity(test.len());
    let mut index: HashMap<u64, Vec<usize>> = HashMap::new();
    for (i, t) in test.iter().enumerate() {
        let q = t.question();
        exact.entry(normalize(&q)).or_insert(i);
        let set = ngram_set(&q, cfg.question_ngram);
        for &g in &set {
            index.entry(g).or_default().push(i);
        }
        sets.push(set);
    }
    train
        .par_iter()
        .map(|ex| {
            let q = ex.question();
            if let Some(&i) = exact.get(&normalize(&q)) {
                return Some(Overlap { train_id: ex.id.clone(), test_id: test[i].id.clone(), kind: "exact".into(), similarity: 1.0 });
            }
            let set = ngram_set(&q, cfg.question_ngram);
            let mut shared: HashMap<usize, usize> = HashMap::new();
            for g in &set {
                for &i in index.get(g).map(Vec::as_slice).unwrap_or(&[]) {
                    *shared.entry(i).or_default() += 1;
                }
            }
            let best = shared
                .into_iter()
                .map(|(i, s)| (s as f64 / (set.len() + sets[i].len() - s) as f64, i))
                .max_by(|a, b| a.0.total_cmp(&b.0).then_with(|| b.1.cmp(&a.1)));
            match best {
                Some((sim, i)) if sim >= cfg.question_threshold => {
                    Some(Overlap { train_id: ex.id.clone(), test_id: test[i].id.clone(), kind: "ngram".into(), similarity: sim })
                }
                _ => None,
            }
        })
        .collect()
}

/// A test example whose n-grams occur in the CPT corpus.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CptHit {
    /// The test example.
    pub id: String,
    /// `question` or `answer`.
    pub field: String,
    /// Its distinct n-grams.
    pub ngrams: usize,
    /// How many of them occur in the corpus.
    pub found: usize,
    /// The first document (in shard order) holding one of them.
    pub first_doc: String,
}

/// The CPT check's findings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CptReport {
    /// Shard directories scanned.
    pub dirs: Vec<String>,
    /// Shard files scanned.
    pub shards: usize,
    /// Documents scanned.
    pub documents: u64,
    /// n of the n-grams.
    pub ngram: usize,
    /// Test texts checked.
    pub checked: usize,
    /// Test texts shorter than n units (nothing to check).
    pub too_short: usize,
    /// Flagged test texts, in test order.
    pub flagged: Vec<CptHit>,
}

/// Streams the CPT document shards and flags test examples whose n-grams occur there.
pub fn cpt_check(test: &[&Example], dirs: &[PathBuf], cfg: &DecontamConfig) -> Result<CptReport> {
    let n = cfg.cpt_ngram;
    let mut report = CptReport { dirs: dirs.iter().map(|d| d.display().to_string()).collect(), ngram: n, ..Default::default() };
    // (example index, field, its n-gram set)
    let mut items: Vec<(usize, &'static str, Vec<u64>)> = Vec::new();
    for (i, ex) in test.iter().enumerate() {
        let mut fields = vec![("question", ex.question())];
        if cfg.cpt_check_answers {
            fields.push(("answer", ex.answer()));
        }
        for (field, text) in fields {
            let set = ngram_set(&text, n);
            report.checked += 1;
            if set.is_empty() {
                report.too_short += 1;
            }
            items.push((i, field, set));
        }
    }
    let wanted: HashSet<u64> = items.iter().flat_map(|(_, _, s)| s.iter().copied()).collect();
    // gram → (stream position, id) of the first document holding it.
    let mut found: HashMap<u64, (u64, String)> = HashMap::new();
    if !wanted.is_empty() {
        for dir in dirs {
            for shard in shard_files(dir)? {
                report.shards += 1;
                for batch in read_shard(&shard, cfg.batch_rows.max(1))? {
                    let docs = batch?;
                    let base = report.documents;
                    report.documents += docs.len() as u64;
                    let hits: Vec<Vec<u64>> = docs
                        .par_iter()
                        .map(|d| {
                            let mut h = Vec::new();
                            for_each_ngram(&unit_hashes(&d.text), n, |g| {
                                if wanted.contains(&g) {
                                    h.push(g);
                                }
                            });
                            h
                        })
                        .collect();
                    for (k, (d, grams)) in docs.iter().zip(hits).enumerate() {
                        for g in grams {
                            found.entry(g).or_insert_with(|| (base + k as u64, d.id.clone()));
                        }
                    }
                }
            }
        }
    }
    for (i, field, set) in &items {
        let hit: Vec<&(u64, String)> = set.iter().filter_map(|g| found.get(g)).collect();
        if let Some(first) = hit.iter().min() {
            report.flagged.push(CptHit {
                id: test[*i].id.clone(),
                field: field.to_string(),
                ngrams: set.len(),
                found: hit.len(),
                first_doc: first.1.clone(),
            });
        }
    }
    Ok(report)
}
