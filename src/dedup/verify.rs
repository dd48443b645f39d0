//! `coretech dedup --verify-sample N`: the exact Jaccard (same shingling) of N random removed/
//! kept pairs of near duplicates against the MinHash estimate recorded in the duplicates table
//! (`OUTPUT.duplicates.parquet`).

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;

use super::shingle::{jaccard, shingle_set};
use super::stage::{duplicates_table, read_duplicates, DuplicateRow};
use super::DedupConfig;
use crate::core::rng::SplitMix64;
use crate::error::{Error, Result};
use crate::shard::documents;

/// One checked pair.
#[derive(Debug, Clone)]
pub struct CheckedPair {
    /// The removed document.
    pub removed_id: String,
    /// The kept document.
    pub kept_id: String,
    /// MinHash estimate.
    pub estimated: f64,
    /// Exact Jaccard of the shingle sets.
    pub exact: f64,
}

/// The error statistics of a sample.
#[derive(Debug, Clone, Default)]
pub struct VerifyReport {
    /// Near-duplicate pairs in the duplicates table.
    pub near_pairs: usize,
    /// The checked pairs.
    pub pairs: Vec<CheckedPair>,
    /// Signature length (for the binomial standard error).
    pub k: usize,
}

impl VerifyReport {
    /// Mean of estimate − exact.
    pub fn bias(&self) -> f64 {
        mean(self.pairs.iter().map(|p| p.estimated - p.exact))
    }
    /// Mean absolute error.
    pub fn mae(&self) -> f64 {
        mean(self.pairs.iter().map(|p| (p.estimated - p.exact).abs()))
    }
    /// Root mean square error.
    pub fn rmse(&self) -> f64 {
        mean(self.pairs.iter().map(|p| (p.estimated - p.exact).powi(2))).sqrt()
    }
    /// Largest absolute error.
    pub fn max_abs(&self) -> f64 {
        self.pairs.iter().map(|p| (p.estimated - p.exact).abs()).fold(0.0, f64::max)
    }
    /// Share of pairs whose error is within two binomial standard errors √(J(1−J)/k).
    pub fn within_two_se(&self) -> f64 {
        let k = self.k.max(1) as f64;
        mean(self.pairs.iter().map(|p| {
            let se = (p.exact * (1.0 - p.exact) / k).sqrt().max(0.5 / k);
            ((p.estimated - p.exact).abs() <= 2.0 * se) as u8 as f64
        }))
    }

    /// A printable summary.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "verify-sample: {} of {} near-duplicate pairs, signature length {}", self.pairs.len(), self.near_pairs, self.k);
        if self.pairs.is_empty() {
            return s;
        }
        let _ = writeln!(
            s,
            "exact Jaccard: mean {:.4}, min {:.4}",
            mean(self.pairs.iter().map(|p| p.exact)),
            self.pairs.iter().map(|p| p.exact).fold(1.0, f64::min)
        );
        let _ = writeln!(
            s,
            "estimate - exact: bias {:+.4}, MAE {:.4}, RMSE {:.4}, max |error| {:.4}",
            self.bias(),
            self.mae(),
            self.rmse(),
            self.max_abs()
        );
        let _ = writeln!(s, "within 2 binomial standard errors: {:.1} %", 100.0 * self.within_two_se());
        let mut worst: Vec<&CheckedPair> = self.pairs.iter().collect();
        worst.sort_by(|a, b| (b.estimated - b.exact).abs().total_cmp(&(a.estimated - a.exact).abs()));
        for p in worst.iter().take(5) {
            let _ = writeln!(s, "  {} ~ {}: estimated {:.3}, exact {:.3}", p.removed_id, p.kept_id, p.estimated, p.exact);
        }
        s
    }
}

fn mean(it: impl Iterator<Item = f64>) -> f64 {
    let (mut n, mut sum) = (0usize, 0.0);
    for x in it {
        n += 1;
        sum += x;
    }
    if n == 0 {
        0.0
    } else {
        sum / n as f64
    }
}

/// Checks `n` near-duplicate pairs drawn with `seed` from the output of a finished run.
pub fn verify_sample(cfg: &DedupConfig, n: usize, seed: u64) -> Result<VerifyReport> {
    let path = duplicates_table(cfg)?;
    let near: Vec<DuplicateRow> = read_duplicates(&path)?.into_iter().filter(|r| r.kind == "near").collect();
    // Seeded partial Fisher-Yates: a reproducible sample without replacement.
    let mut idx: Vec<usize> = (0..near.len()).collect();
    let mut rng = SplitMix64::new(seed);
    let take = n.min(idx.len());
    for i in 0..take {
        let j = i + rng.below((idx.len() - i) as u64) as usize;
        idx.swap(i, j);
    }
    let sample: Vec<&DuplicateRow> = idx[..take].iter().map(|&i| &near[i]).collect();
    let wanted: HashSet<&str> = sample.iter().flat_map(|r| [r.removed_id.as_str(), r.kept_id.as_str()]).collect();
    let mut texts: HashMap<String, String> = HashMap::new();
    for shard in documents::shard_files(&cfg.input)? {
        for batch in documents::read_shard(&shard, cfg.read_batch_rows)? {
            for d in batch? {
                if wanted.contains(d.id.as_str()) && !texts.contains_key(&d.id) {
                    texts.insert(d.id, d.text);
                }
            }
        }
    }
    let nc = &cfg.near;
    let mut pairs = Vec::with_capacity(take);
    for r in sample {
        let (a, b) = match (texts.get(&r.removed_id), texts.get(&r.kept_id)) {
            (Some(a), Some(b)) => (a, b),
            _ => {
                return Err(Error::Other(format!(
                    "{} / {}: not found in {} (input changed since the run?)",
                    r.removed_id,
                    r.kept_id,
                    cfg.input.display()
                )))
            }
        };
        let exact =
            jaccard(&shingle_set(a, nc.word_ngram, nc.cjk_ngram, nc.case_fold), &shingle_set(b, nc.word_ngram, nc.cjk_ngram, nc.case_fold));
        pairs.push(CheckedPair { removed_id: r.removed_id.clone(), kept_id: r.kept_id.clone(), estimated: r.jaccard, exact });
    }
    Ok(VerifyReport { near_pairs: near.len(), pairs, k: nc.bands * nc.rows })
}
