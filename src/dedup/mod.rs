//! Deduplication: exact (xxh3-128 of normalized text) and near (MinHash + LSH bands +
//! union-find), with two audits of every removal beside the output: the pair table
//! `OUTPUT.duplicates.parquet` and the removed documents themselves in `OUTPUT.rejects/`.
//!
//! The stage runs in four steps that talk only through files under the work directory, so a
//! Slurm job array can run each step on many machines (`--task-index/--task-count`):
//!
//! 1. `signatures` (task i: input shards s ≡ i mod N): per shard, the MinHash signatures
//!    (`sig/part-S.sig`, fixed-size records), the facts the keep policy needs (`sig/part-S.meta`)
//!    and sorted runs of bucket entries per band (`runs/bBB/part-S-R.run`, spilled whenever the
//!    buffer is full: an external sort).
//! 2. `buckets` (task i: bands b ≡ i mod N; band `bands` is the exact-text key): k-way merge of
//!    the band's runs; documents with equal keys are candidates. An exact-text bucket pairs
//!    every member with its first; an LSH bucket pairs a member with the bucket's leaders (its
//!    first 16 members) whose MinHash estimate passes the pre-check (`near.threshold` less a
//!    margin), so groups are joined by likely near copies only. Pairs go to `edges/bBB.edges`.
//! 3. `cluster` (one task): union-find over the pairs, one kept document per cluster by the
//!    keep policy, `removed/part-S.bin` per shard and `OUTPUT.duplicates.parquet`.
//! 4. `filter` (task i: shards s ≡ i mod N): rewrites each shard without its removed rows and
//!    writes the removed rows, with the kept id and the similarity, to the rejects folder.
//!
//! On one machine `coretech dedup cfg.toml` runs the four steps in order with rayon. On Slurm:
//! ```text
//! A=$(sbatch --parsable --array=0-63 --wrap 'coretech dedup cfg.toml --step signatures --task-index $SLURM_ARRAY_TASK_ID --task-count 64')
//! B=$(sbatch --parsable --dependency=afterok:$A --array=0-14 --wrap 'coretech dedup cfg.toml --step buckets --task-index $SLURM_ARRAY_TASK_ID --task-count 15')
//! C=$(sbatch --parsable --dependency=afterok:$B --wrap 'coretech dedup cfg.toml --step cluster')
//! D=$(sbatch --parsable --dependency=afterok:$C --array=0-63 --wrap 'coretech dedup cfg.toml --step filter --task-index $SLURM_ARRAY_TASK_ID --task-count 64')
//! sbatch --dependency=afterok:$D --wrap 'coretech merge OUTPUT'
//! ```
//! Every step's results are independent of the input order and the thread count: bucket
//! members are ordered by a hash of their id, and the kept document of a cluster is chosen by
//! (source priority, date, id).

pub mod bench;
pub mod cluster;
pub mod extsort;
pub mod minhash;
pub mod normalize;
pub mod policy;
pub mod shingle;
pub mod stage;
pub mod unionfind;
pub mod verify;

use std::collections::BTreeMap;
use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use normalize::NormalizeConfig;
pub use policy::{Identity, SourcePolicy};
pub use stage::{run, Step};

use crate::shard::WriterConfig;

/// The `dedup` stage: document shards → deduplicated document shards, with the removals beside
/// them (`OUTPUT.duplicates.parquet`, `OUTPUT.rejects/`).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DedupConfig {
    /// Input document shard directory (the `docs` stage output; a merged multi-task output works).
    #[schemars(length(min = 1))]
    pub input: PathBuf,
    /// Output directory: deduplicated shards, `.manifest.json`, `.report.json` (nothing else a
    /// folder reader would take for a shard: the removal pairs go beside it, to
    /// `OUTPUT.duplicates.parquet`).
    #[schemars(length(min = 1))]
    pub output: PathBuf,
    /// Directory of the intermediate files (signatures, bucket runs, pairs); must be shared by
    /// all tasks of a multi-machine run. Empty: `OUTPUT/.work`.
    #[serde(default)]
    pub work_dir: PathBuf,
    /// Keep the intermediate files after a successful single-machine run.
    #[serde(default)]
    pub keep_work: bool,
    /// Exact deduplication.
    #[serde(default)]
    pub exact: ExactConfig,
    /// Near deduplication (MinHash LSH).
    #[serde(default)]
    pub near: NearConfig,
    /// Which document of a cluster is kept.
    #[serde(default)]
    pub keep: KeepConfig,
    /// Per-source policies (`[dedup.sources.ipc]`: `exact`, `near`, `identity`); a source not
    /// listed, and a field left out, takes the built-in default (see `dedup::policy`: IPC
    /// entries are identified by their code, office patents by their publication number).
    #[serde(default)]
    pub sources: BTreeMap<String, SourcePolicy>,
    /// How candidate groups become removals: `centers` (a document is removed in favour of the
    /// kept document of its group it is a near copy of, checked directly) or `components` (one
    /// kept document per group of LSH candidates, unchecked, as datatrove does).
    #[serde(default)]
    pub clustering: Clustering,
    /// Kept documents of one candidate group that later members are checked against; members of
    /// larger groups beyond them are kept unchecked (counted in the log). Bounds the memory of
    /// the group index (about 500 bytes per kept document).
    #[serde(default = "default_max_kept_per_group")]
    #[schemars(range(min = 1))]
    pub max_kept_per_group: usize,
    /// Memory of the cluster step's per-document state (union-find pages, external sorts), in
    /// MiB; beyond it the state lives in files under the work directory.
    #[serde(default = "default_cluster_memory_mb")]
    #[schemars(range(min = 1))]
    pub cluster_memory_mb: usize,
    /// Memory for bucket entries before a sorted run is spilled to disk, in MiB, shared by the
    /// worker threads.
    #[serde(default = "default_sort_buffer_mb")]
    #[schemars(range(min = 1, max = 1_048_576))]
    pub sort_buffer_mb: usize,
    /// Sorted runs merged at once (open files per merge); more runs are merged in passes.
    #[serde(default = "default_merge_fan_in")]
    #[schemars(range(min = 2))]
    pub merge_fan_in: usize,
    /// Documents decoded from a shard at a time.
    #[serde(default = "default_read_batch_rows")]
    #[schemars(range(min = 1))]
    pub read_batch_rows: usize,
    /// Parquet settings of the output shards.
    #[serde(default)]
    pub writer: WriterConfig,
    /// Write every document the stage removes (exact and near duplicates) to the rejects folder
    /// (Parquet + manifest) with the kept document's id and the similarity, so a removed patent
    /// can be found and checked (`coretech inspect` reads it).
    #[serde(default = "crate::core::default_true")]
    pub rejects: bool,
    /// The rejects folder; default `OUTPUT.rejects` beside the output (never inside it: readers
    /// of the output folder would take rejects for documents). A multi-task build writes
    /// `task-NNNNN/` folders in it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejects_dir: Option<PathBuf>,
}

fn default_sort_buffer_mb() -> usize {
    128
}
fn default_max_kept_per_group() -> usize {
    50_000
}
fn default_cluster_memory_mb() -> usize {
    32
}
fn default_merge_fan_in() -> usize {
    128
}
fn default_read_batch_rows() -> usize {
    1024
}

/// Exact deduplication settings.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ExactConfig {
    /// Remove documents whose normalized text equals another's.
    pub enabled: bool,
    /// What the comparison ignores.
    pub normalize: NormalizeConfig,
    /// Seed of the xxh3-128 key.
    pub seed: u64,
}

impl Default for ExactConfig {
    fn default() -> Self {
        Self { enabled: true, normalize: NormalizeConfig::default(), seed: 0 }
    }
}

/// Near deduplication settings. The LSH bands only form candidate groups (every removal is
/// checked against the document it names), so they are tuned for recall: at 18 bands × 6 rows a
/// pair at Jaccard 0.81 shares no band with probability 0.3 % (datatrove's 14 × 8: 5.7 %), and
/// copies of one original are linked through each other besides.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct NearConfig {
    /// Remove near-duplicates (MinHash LSH).
    pub enabled: bool,
    /// Words per shingle where a shingle starts on a non-CJK word (word n-grams).
    #[schemars(range(min = 1))]
    pub word_ngram: usize,
    /// Characters per shingle where a shingle starts on a CJK character (character n-grams).
    #[schemars(range(min = 1))]
    pub cjk_ngram: usize,
    /// LSH bands.
    #[schemars(range(min = 1, max = 512))]
    pub bands: usize,
    /// Hash values per band (signature length = bands × rows).
    #[schemars(range(min = 1, max = 64))]
    pub rows: usize,
    /// Seed of the shingle hash and the MinHash family.
    pub seed: u64,
    /// Fold case before shingling.
    pub case_fold: bool,
    /// A candidate pair from a shared band becomes a duplicate pair only if its estimated Jaccard
    /// (verification sketch) is at least this; 0 accepts every LSH candidate, as datatrove does.
    /// The default sits just above 0.8 by the sketch's measured error (MAE about 0.005), so
    /// pairs below Jaccard 0.8 (templated IPC siblings) are not merged.
    #[schemars(range(min = 0.0, max = 1.0))]
    pub threshold: f64,
    /// Bins of the one-permutation sketch that checks LSH candidates and estimates the Jaccard
    /// of removals (a power of two; 0 checks with the MinHash values instead).
    #[schemars(range(min = 0, max = 65536))]
    pub verify_bins: usize,
    /// An estimate within this distance of `threshold` is replaced by the exact Jaccard of the
    /// two shingle sets (4 bytes per shingle kept in the work directory), so copies just above
    /// the threshold are removed and documents just below it are not (the sketch's error is
    /// about 0.01 on long texts). 0: decide on the estimate alone, no shingle files.
    #[schemars(range(min = 0.0, max = 1.0))]
    pub exact_check_margin: f64,
}

impl Default for NearConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            word_ngram: 5,
            cjk_ngram: 5,
            bands: 18,
            rows: 6,
            seed: 1,
            case_fold: true,
            threshold: 0.81,
            verify_bins: 1024,
            exact_check_margin: 0.05,
        }
    }
}

/// How candidate groups become removals.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Clustering {
    /// Greedy in keep order within each group of LSH candidates: a document is removed in
    /// favour of the kept document of its group it is most similar to, if that similarity is at
    /// least `near.threshold` (an exact twin first); otherwise it is kept. Every removal is
    /// backed by a direct check against the document it names.
    #[default]
    Centers,
    /// One kept document per group of LSH candidates (per identity), unchecked: chains of
    /// similar documents collapse, as in datatrove.
    Components,
}

/// Which end of the date order wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DatePreference {
    /// The earliest publication (the original) is kept.
    Oldest,
    /// The latest publication is kept.
    Newest,
}

/// The keep policy of a cluster: the first document by source priority, then date, then id.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct KeepConfig {
    /// Sources in order of preference; sources not listed come after, by name.
    pub source_priority: Vec<String>,
    /// Which date wins among equal sources (documents without a date come last).
    pub date: DatePreference,
}

impl Default for KeepConfig {
    fn default() -> Self {
        Self { source_priority: ["cnipa", "epo", "uspto", "ipc", "wudao"].map(String::from).to_vec(), date: DatePreference::Oldest }
    }
}

impl DedupConfig {
    /// A config with defaults for `input` → `output`.
    pub fn new(input: impl Into<PathBuf>, output: impl Into<PathBuf>) -> Self {
        Self {
            input: input.into(),
            output: output.into(),
            work_dir: PathBuf::new(),
            keep_work: false,
            exact: ExactConfig::default(),
            near: NearConfig::default(),
            keep: KeepConfig::default(),
            sources: BTreeMap::new(),
            clustering: Clustering::default(),
            max_kept_per_group: default_max_kept_per_group(),
            cluster_memory_mb: default_cluster_memory_mb(),
            sort_buffer_mb: default_sort_buffer_mb(),
            merge_fan_in: default_merge_fan_in(),
            read_batch_rows: default_read_batch_rows(),
            writer: WriterConfig::default(),
            rejects: true,
            rejects_dir: None,
        }
    }

    /// The rejects folder (`rejects_dir`, else `OUTPUT.rejects` beside the output).
    pub fn rejects_dir(&self) -> Option<PathBuf> {
        self.rejects_dir.clone().or_else(|| crate::stage::default_rejects_dir(&self.output))
    }

    /// The table of removal pairs, `OUTPUT.duplicates.parquet` beside the output (see
    /// [`stage::DUPLICATES_SUFFIX`]); `None` when the output has no folder name.
    pub fn duplicates_file(&self) -> Option<PathBuf> {
        crate::stage::beside(&self.output, stage::DUPLICATES_SUFFIX)
    }

    /// The work directory in use.
    pub fn work(&self) -> PathBuf {
        if self.work_dir.as_os_str().is_empty() {
            self.output.join(".work")
        } else {
            self.work_dir.clone()
        }
    }

    /// The MinHash family of this config.
    pub fn hasher(&self) -> minhash::MinHasher {
        let n = &self.near;
        minhash::MinHasher::new(n.bands, n.rows, n.verify_bins, n.seed, n.word_ngram, n.cjk_ngram, n.case_fold)
    }

    /// Checks the settings a run depends on.
    pub fn validate(&self) -> crate::Result<()> {
        crate::core::schema::check(self, "dedup")?;
        if self.near.verify_bins != 0 && !self.near.verify_bins.is_power_of_two() {
            return Err(crate::Error::Config {
                file: String::new(),
                key: "dedup.near.verify_bins".into(),
                message: format!("{} is not 0 or a power of two", self.near.verify_bins),
            });
        }
        let no_name = |key: &str, what: &str| crate::Error::Config {
            file: String::new(),
            key: key.into(),
            message: format!("the output {} has no folder name to put {what} beside", self.output.display()),
        };
        if self.duplicates_file().is_none() {
            return Err(no_name("dedup.output", "the duplicates table"));
        }
        if self.rejects && self.rejects_dir().is_none() {
            return Err(no_name("dedup.rejects_dir", "the rejects (set `rejects_dir`)"));
        }
        Ok(())
    }
}
