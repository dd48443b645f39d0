//! The deterministic train/validation/test split: examples whose input gives no split are
//! assigned per task (stratified) by a seeded hash of their normalized question, so every copy
//! of a question lands on the same side and the result depends on content, not on file order.

use std::collections::{BTreeMap, BTreeSet};

use xxhash_rust::xxh3::xxh3_64_with_seed;

use super::example::{Example, Split};
use super::text::normalize;

/// Assigns `Split::Auto` examples to train, validation or test: per task, the distinct
/// normalized questions are ordered by their seeded hash; the first `round(test_fraction ·
/// count)` go to test and the next `round(validation_fraction · count)` to validation (each at
/// least one when its fraction is positive and the task has more questions than the held-out
/// sets would take), the rest to train. The test set does not depend on `validation_fraction`.
pub fn assign(examples: &mut [Example], test_fraction: f64, validation_fraction: f64, seed: u64) {
    let mut by_task: BTreeMap<String, BTreeSet<(u64, String)>> = BTreeMap::new();
    for ex in examples.iter().filter(|e| e.split == Split::Auto) {
        let q = normalize(&ex.question());
        by_task.entry(ex.task.clone()).or_default().insert((xxh3_64_with_seed(q.as_bytes(), seed), q));
    }
    let take = |fraction: f64, n: usize, reserved: usize| {
        let mut k = (fraction.clamp(0.0, 1.0) * n as f64).round() as usize;
        if fraction > 0.0 && k == 0 && n >= reserved + 2 {
            k = 1;
        }
        k.min(n - reserved)
    };
    let mut held: BTreeMap<(String, String), Split> = BTreeMap::new();
    for (task, qs) in &by_task {
        let n = qs.len();
        let k_test = take(test_fraction, n, 0);
        let k_val = take(validation_fraction, n, k_test);
        for (i, (_, q)) in qs.iter().take(k_test + k_val).enumerate() {
            held.insert((task.clone(), q.clone()), if i < k_test { Split::Test } else { Split::Validation });
        }
    }
    for ex in examples.iter_mut().filter(|e| e.split == Split::Auto) {
        let key = (ex.task.clone(), normalize(&ex.question()));
        ex.split = held.get(&key).copied().unwrap_or(Split::Train);
    }
}
