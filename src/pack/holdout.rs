//! The seeded validation split of the pack stage (`[pack.validation]`): a document is held out
//! when a keyed hash of its id falls below `fraction`. The choice depends on the id and the seed
//! only (not on file order, thread or task count), every copy the mixture makes of a document
//! lands on the same side, and no document has tokens on both sides. The held-out documents are
//! packed like the training ones (same mixture, seq_len, shuffle) into their own directory beside
//! the training shards, so each directory loads as one split in `datasets`/polars.

use std::path::{Path, PathBuf};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::core::rng::{hash_words, unit};
use crate::error::{Error, Result};

/// Key that separates this draw from the mixture's draw on the same seed and id.
const DRAW_DOMAIN: u64 = 0x7661_6c69_6461_7465; // "validate"

/// Filter bucket, in the training part, of the documents held out for validation.
pub const HELD_OUT: &str = "validation-split";
/// Filter bucket, in the validation part, of the documents that went to training.
pub const TRAINING: &str = "train-split";

/// `[pack.validation]`: set aside a seeded share of the documents as a validation split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ValidationSplit {
    /// Share of the documents held out, in (0, 1).
    pub fraction: f64,
    /// Seed of the draw (default: `pack.seed`).
    #[serde(default)]
    pub seed: Option<u64>,
    /// Directory of the validation token shards (default: the output directory's name with
    /// `-validation` appended, beside it: never inside it, where `datasets` would take the
    /// training shards and the validation shards for one split).
    #[serde(default)]
    pub output: Option<PathBuf>,
}

/// The part of the split a pack run writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Part {
    /// The training shards (`pack.output`).
    Train,
    /// The held-out shards (`pack.validation.output`).
    Validation,
}

impl Part {
    /// Lower-case name (the manifest's `info.split`).
    pub fn as_str(self) -> &'static str {
        match self {
            Part::Train => "train",
            Part::Validation => "validation",
        }
    }
}

impl ValidationSplit {
    /// Checks the fraction and that the validation directory is not the training one.
    pub fn check(&self, train_output: &Path) -> Result<()> {
        if !(self.fraction > 0.0 && self.fraction < 1.0) {
            return Err(Error::Config {
                file: String::new(),
                key: "pack.validation.fraction".into(),
                message: format!("{} is not within (0, 1)", self.fraction),
            });
        }
        let out = self.output_of(train_output);
        if out == train_output || out.starts_with(train_output) || train_output.starts_with(&out) {
            return Err(Error::Config {
                file: String::new(),
                key: "pack.validation.output".into(),
                message: format!("{} must be a directory beside {}, not it, inside it or above it", out.display(), train_output.display()),
            });
        }
        Ok(())
    }

    /// The validation directory of a build whose training shards go to `train_output`.
    pub fn output_of(&self, train_output: &Path) -> PathBuf {
        self.output.clone().unwrap_or_else(|| {
            let mut name = train_output.file_name().map(|n| n.to_os_string()).unwrap_or_default();
            name.push("-validation");
            train_output.with_file_name(name)
        })
    }

    /// The seed of the draw.
    pub fn seed_or(&self, pack_seed: u64) -> u64 {
        self.seed.unwrap_or(pack_seed)
    }

    /// Whether the document `id` is held out.
    pub fn holds_out(&self, pack_seed: u64, id: &str) -> bool {
        let h = hash_words(self.seed_or(pack_seed), &[DRAW_DOMAIN, xxhash_rust::xxh3::xxh3_64(id.as_bytes())]);
        unit(h) < self.fraction
    }

    /// Whether a document belongs to `part`.
    pub fn in_part(&self, pack_seed: u64, id: &str, part: Part) -> bool {
        self.holds_out(pack_seed, id) == (part == Part::Validation)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(fraction: f64) -> ValidationSplit {
        ValidationSplit { fraction, seed: None, output: None }
    }

    #[test]
    fn share_follows_the_fraction_and_the_seed() {
        let ids: Vec<String> = (0..20_000).map(|i| format!("wudao:{i}")).collect();
        let s = split(0.05);
        let held: Vec<&String> = ids.iter().filter(|id| s.holds_out(7, id)).collect();
        // Binomial(20000, 0.05): mean 1000, sd ≈ 31.
        assert!((880..1120).contains(&held.len()), "{} held out", held.len());
        // Same seed, same choice; another seed, another set.
        assert_eq!(held, ids.iter().filter(|id| s.holds_out(7, id)).collect::<Vec<_>>());
        let other: Vec<&String> = ids.iter().filter(|id| s.holds_out(8, id)).collect();
        assert!(held.iter().filter(|id| other.contains(id)).count() < held.len() / 5);
        // An explicit seed overrides the pack seed.
        let seeded = ValidationSplit { seed: Some(8), ..split(0.05) };
        assert_eq!(other, ids.iter().filter(|id| seeded.holds_out(7, id)).collect::<Vec<_>>());
        // The parts are complements.
        assert!(ids.iter().all(|id| s.in_part(7, id, Part::Train) != s.in_part(7, id, Part::Validation)));
    }

    #[test]
    fn output_sits_beside_the_training_shards() {
        let s = split(0.1);
        assert_eq!(s.output_of(Path::new("out/demo/tokens")), Path::new("out/demo/tokens-validation"));
        assert!(s.check(Path::new("out/demo/tokens")).is_ok());
        let inside = ValidationSplit { output: Some("out/demo/tokens/validation".into()), ..split(0.1) };
        let e = inside.check(Path::new("out/demo/tokens")).unwrap_err().to_string();
        assert!(e.contains("pack.validation.output") && e.contains("beside"), "{e}");
        for bad in [0.0, 1.0, -0.1, f64::NAN] {
            let e = split(bad).check(Path::new("out/t")).unwrap_err().to_string();
            assert!(e.contains("pack.validation.fraction"), "{e}");
        }
    }
}
