//! The deterministic train/test split: examples whose input gives no split are assigned per
//! task (stratified) by a seeded hash of their normalized question, so every copy of a
//! question lands on the same side and the result depends on content, not on file order.

use std::collections::{BTreeMap, BTreeSet};

use xxhash_rust::xxh3::xxh3_64_with_seed;

use super::example::{Example, Split};
use super::text::normalize;

/// Assigns `Split::Auto` examples to train or test: per task, the distinct normalized questions
/// are ordered by their seeded hash and the first `round(test_fraction · count)` (at least one
/// when the fraction is positive and the task has two or more questions) go to test.
pub fn assign(examples: &mut [Example], test_fraction: f64, seed: u64) {
    let mut by_task: BTreeMap<String, BTreeSet<(u64, String)>> = BTreeMap::new();
    for ex in examples.iter().filter(|e| e.split == Split::Auto) {
        let q = normalize(&ex.question());
        by_task.entry(ex.task.clone()).or_default().insert((xxh3_64_with_seed(q.as_bytes(), seed), q));
    }
    let mut test: BTreeSet<(String, String)> = BTreeSet::new();
    for (task, qs) in &by_task {
        let n = qs.len();
        let mut k = (test_fraction.clamp(0.0, 1.0) * n as f64).round() as usize;
        if test_fraction > 0.0 && k == 0 && n >= 2 {
            k = 1;
        }
        for (_, q) in qs.iter().take(k) {
            test.insert((task.clone(), q.clone()));
        }
    }
    for ex in examples.iter_mut().filter(|e| e.split == Split::Auto) {
        let key = (ex.task.clone(), normalize(&ex.question()));
        ex.split = if test.contains(&key) { Split::Test } else { Split::Train };
    }
}
