//! Mixture weights: how many copies of each document go into the build. A weight `w` gives
//! every document of the source `floor(w)` copies plus one more with probability `w - floor(w)`,
//! decided per document from hash(seed, document id) — so the same document gets the same
//! answer in every run, on every machine, whatever the order or the thread count.
//!
//! Copies are spread over passes: pass `r` (0-based) packs the documents with more than `r`
//! copies, so the copies of one document land far apart in the token stream (and then the
//! global shuffle mixes the rows anyway).

use std::collections::BTreeMap;

use crate::error::{Error, Result};

use crate::core::rng::{hash_str, unit};

/// Validated weights.
#[derive(Debug, Clone, PartialEq)]
pub struct Mixture {
    weights: BTreeMap<String, f64>,
    seed: u64,
}

impl Mixture {
    /// Checks the weights (finite, ≥ 0).
    pub fn new(weights: &BTreeMap<String, f64>, seed: u64) -> Result<Self> {
        for (k, w) in weights {
            if !w.is_finite() || *w < 0.0 {
                return Err(Error::Config {
                    file: String::new(),
                    key: format!("pack.mixture.{k}"),
                    message: format!("weight {w} must be a finite number ≥ 0"),
                });
            }
        }
        Ok(Self { weights: weights.clone(), seed })
    }

    /// The weight of a source (1 when not listed).
    pub fn weight(&self, source: &str) -> f64 {
        self.weights.get(source).copied().unwrap_or(1.0)
    }

    /// Copies of one document.
    pub fn copies(&self, source: &str, doc_id: &str) -> u32 {
        let w = self.weight(source);
        let whole = w.floor();
        let frac = w - whole;
        whole as u32 + u32::from(frac > 0.0 && unit(hash_str(self.seed, doc_id)) < frac)
    }

    /// Passes needed for the largest weight (at least 1).
    pub fn passes(&self) -> u32 {
        self.weights.values().map(|w| w.ceil() as u32).max().unwrap_or(1).max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_and_fractional_weights() {
        let w: BTreeMap<String, f64> = [("ipc".to_string(), 2.0), ("wudao".to_string(), 0.3), ("none".to_string(), 0.0)].into();
        let m = Mixture::new(&w, 7).unwrap();
        assert_eq!(m.passes(), 2);
        assert_eq!(m.copies("ipc", "ipc:A01"), 2);
        assert_eq!(m.copies("none", "none:1"), 0);
        assert_eq!(m.copies("epo", "epo:EP1"), 1);
        let taken = (0..10_000).filter(|i| m.copies("wudao", &format!("wudao:{i}")) == 1).count();
        assert!((2_700..3_300).contains(&taken), "{taken}");
        // Same seed, same decision; another seed, another sample.
        let again = Mixture::new(&w, 7).unwrap();
        let other = Mixture::new(&w, 8).unwrap();
        let pick = |m: &Mixture| (0..200).map(|i| m.copies("wudao", &format!("wudao:{i}"))).collect::<Vec<_>>();
        assert_eq!(pick(&m), pick(&again));
        assert_ne!(pick(&m), pick(&other));
    }

    #[test]
    fn bad_weights_name_the_key() {
        let w: BTreeMap<String, f64> = [("ipc".to_string(), -1.0)].into();
        let e = Mixture::new(&w, 0).unwrap_err().to_string();
        assert!(e.contains("pack.mixture.ipc"), "{e}");
    }
}
