//! The dedup stage and its four steps (see the module doc of `dedup`): signatures → buckets →
//! cluster → filter, with file-based hand-off, per-unit done markers (resume) and byte-
//! deterministic outputs. The output folder (its lock, what the stage owns in it, the
//! fingerprint, up to date or resume) and the rejects folder beside it belong to
//! [`crate::stage`]; every input shard is checked against the input folder's manifest before it
//! is read.
//!
//! What the stage removes is recorded twice, both beside the output so that every reader of the
//! output folder sees only its shards (`datasets.load_dataset(DIR)`, `pl.scan_parquet("DIR/*.parquet")`):
//! `OUTPUT.duplicates.parquet`, one small row per removal (ids, sources, cluster, kind,
//! Jaccard), written once per build by the cluster step, and `OUTPUT.rejects/`, the removed
//! documents themselves (full rows, `kept_id`, `similarity`), written by the filter step through
//! the one rejects writer the docs stage uses too. The pair table stays a file of its own rather
//! than living only in the rejects: it is what `verify` and the benchmarks read (ids only, a
//! small fraction of the rejects' bytes, which hold every removed text), it exists when the
//! rejects are switched off, and it is one table for a multi-task build whose rejects are
//! split per filter task.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use arrow::array::{Array, ArrayRef, BooleanArray, Float64Array, ListArray, RecordBatch, StringArray, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ProjectionMask;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::cluster::{DocFacts, KIND_EXACT};
use super::extsort::{merge_runs, write_run, Entry};
use super::minhash::{Scratch, Sketch};
use super::normalize::exact_key;
use super::policy::{identity_key, resolve, Identity};
use super::DedupConfig;
use crate::core::fsio::write_atomic;
use crate::core::{Fingerprint, RunOptions};
use crate::core::{RunReport, TaskSplit};
use crate::doc::Reject;
use crate::error::{Error, Result};
use crate::shard::manifest::verified_shards;
use crate::shard::{documents, Manifest, ShardInfo, ShardWriter};
use crate::stage::{check_overlap, rejects_up_to_date, RejectsPart, Stage, StageSpec, PROGRESS_FILE};

/// One step of the stage (for multi-machine runs; a single-machine run does all four).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Signatures, metadata and sorted bucket runs per input shard.
    Signatures,
    /// Merge of each band's runs into verified candidate pairs.
    Buckets,
    /// Union-find, keep policy, removal lists and `OUTPUT.duplicates.parquet`.
    Cluster,
    /// Rewrite of each shard without its removed rows.
    Filter,
}

impl std::str::FromStr for Step {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "signatures" => Step::Signatures,
            "buckets" => Step::Buckets,
            "cluster" => Step::Cluster,
            "filter" => Step::Filter,
            other => return Err(Error::Other(format!("unknown dedup step {other:?} (signatures, buckets, cluster, filter)"))),
        })
    }
}

/// MinHash values per band of the cluster step's in-group candidate index: at 4 rows (27 bands
/// of the default 108 values) a kept document at Jaccard 0.8 is missed with probability 7·10⁻⁷.
const FINE_ROWS: usize = 4;

/// The suffix of the table of removal pairs beside the output: `OUTPUT.duplicates.parquet`
/// (see [`DedupConfig::duplicates_file`]). The stage rewrites that file only when it holds a
/// duplicates table (its columns are [`duplicates_schema`]'s); any other file there is refused.
pub const DUPLICATES_SUFFIX: &str = ".duplicates.parquet";

/// Where the duplicates table lay in the old layout: inside the output folder, where loaders
/// read it as a shard. A build of the old layout owns it (its manifest lists it), so the next
/// build removes it; the top folder of a multi-task build owns nothing, so the cluster step
/// removes it there when its columns are the duplicates table's.
pub const LEGACY_DUPLICATES_FILE: &str = "duplicates.parquet";

/// The format of the removal lists (`removed/part-S.bin`), part of the cluster hash so work
/// files of an older format are rebuilt, not misread.
const REMOVED_FORMAT: &str = "row u32, kind u8, jaccard f64, kept id (u32 length + bytes)";

/// The input shards and the derived facts every step agrees on.
struct Layout {
    shards: Vec<PathBuf>,
    /// `prefix[s]` = global index of shard `s`'s first row; `prefix[n]` = total.
    prefix: Vec<u64>,
    work: PathBuf,
    work_hash: String,
    /// Hash of the buckets step's results: `work_hash` and the pairing scheme.
    edges_hash: String,
    cluster_hash: String,
    /// Signature length (0 when near dedup is off).
    k: usize,
    /// Verification sketch bins (0 when off).
    m: usize,
    /// Near bands (0 when near dedup is off); the exact slot, if any, comes after them.
    nb: usize,
    /// Shingle hashes are stored for exact checks (`near.exact_check_margin` > 0).
    shingle_files: bool,
    slots: usize,
}

impl Layout {
    fn new(cfg: &DedupConfig) -> Result<Self> {
        // Each shard checked against the input's manifest (size, rows, checksum) and hashed.
        let verified = verified_shards(&cfg.input)?;
        if verified.is_empty() {
            return Err(Error::Other(format!("{}: no document shards (*.parquet) to deduplicate", cfg.input.display())));
        }
        let mut prefix = vec![0u64];
        let mut listing = Vec::new();
        let mut shards = Vec::with_capacity(verified.len());
        for v in verified {
            prefix.push(prefix.last().unwrap() + v.rows);
            listing.push((v.path.strip_prefix(&cfg.input).unwrap_or(&v.path).display().to_string(), v.digest.xxh3, v.rows));
            shards.push(v.path);
        }
        let nb = if cfg.near.enabled { cfg.near.bands } else { 0 };
        let k = if cfg.near.enabled { cfg.near.bands * cfg.near.rows } else { 0 };
        let m = if cfg.near.enabled { cfg.near.verify_bins } else { 0 };
        let work_hash = crate::core::hash_of(&(&cfg.exact, &cfg.near, &cfg.sources, &listing));
        // Edges made by an earlier pairing scheme are not reused.
        let edges_hash = crate::core::hash_of(&(&work_hash, "leaders+estimate", BUCKET_LEADERS));
        // The keep policy only matters from the cluster step on.
        let cluster_hash = crate::core::hash_of(&(&edges_hash, &cfg.keep, cfg.clustering, cfg.max_kept_per_group, REMOVED_FORMAT));
        let shingle_files = k > 0 && cfg.near.exact_check_margin > 0.0;
        Ok(Self {
            shards,
            prefix,
            work: cfg.work(),
            work_hash,
            edges_hash,
            cluster_hash,
            k,
            m,
            nb,
            shingle_files,
            slots: nb + cfg.exact.enabled as usize,
        })
    }
    /// Bytes of one document's record in a `.sig` file.
    fn record(&self) -> usize {
        4 * self.k + 2 * self.m + if self.shingle_files { 12 } else { 0 }
    }
    fn total(&self) -> u64 {
        *self.prefix.last().unwrap()
    }
    fn sig(&self, s: usize) -> PathBuf {
        self.work.join("sig").join(format!("part-{s:05}.sig"))
    }
    fn shingles(&self, s: usize) -> PathBuf {
        self.work.join("sig").join(format!("part-{s:05}.shg"))
    }
    fn meta(&self, s: usize) -> PathBuf {
        self.work.join("sig").join(format!("part-{s:05}.meta"))
    }
    fn sig_done(&self, s: usize) -> PathBuf {
        self.work.join("sig").join(format!("part-{s:05}.done"))
    }
    fn run(&self, slot: usize, s: usize, r: usize) -> PathBuf {
        self.work.join("runs").join(format!("b{slot:02}")).join(format!("part-{s:05}-{r:04}.run"))
    }
    fn edges(&self, slot: usize) -> PathBuf {
        self.work.join("edges").join(format!("b{slot:02}.edges"))
    }
    fn edges_done(&self, slot: usize) -> PathBuf {
        self.work.join("edges").join(format!("b{slot:02}.done"))
    }
    fn removed(&self, s: usize) -> PathBuf {
        self.work.join("removed").join(format!("part-{s:05}.bin"))
    }
    fn cluster_done(&self) -> PathBuf {
        self.work.join("cluster.done")
    }
    /// What the output folder of `task` depends on: the clustering (which covers every input
    /// shard's content and the settings), the writer settings and where the rejects go (so a
    /// resumed build never mixes shards written with and without rejects).
    fn fingerprint(&self, cfg: &DedupConfig, task: TaskSplit) -> Fingerprint {
        Fingerprint::new()
            .with("cluster", &self.cluster_hash)
            .with("writer", &cfg.writer)
            .with("task", &task)
            .with("rejects", &rejects_dir(cfg, task))
    }
    /// (shard, row) of a global index.
    fn locate(&self, g: u64) -> (usize, u64) {
        let s = self.prefix.partition_point(|&p| p <= g) - 1;
        (s, g - self.prefix[s])
    }
}

/// Runs the stage (all steps, one task) or one step of a multi-task run. Returns the filter
/// step's report (the other steps return an empty report named after the step).
pub fn run(cfg: &DedupConfig, task: TaskSplit, step: Option<Step>) -> Result<RunReport> {
    run_with(cfg, &RunOptions::from(task), step)
}

/// [`run`] with every option (`--force` included).
pub fn run_with(cfg: &DedupConfig, opts: &RunOptions, step: Option<Step>) -> Result<RunReport> {
    let started = Instant::now();
    let task = opts.task;
    cfg.validate()?;
    check_overlap(&cfg.output, std::slice::from_ref(&cfg.input))?;
    check_overlap(&cfg.work(), std::slice::from_ref(&cfg.input))?;
    let dup_path = duplicates_path(cfg)?;
    check_overlap(&dup_path, std::slice::from_ref(&cfg.input))?;
    if let Some(d) = rejects_dir(cfg, task) {
        check_overlap(&d, std::slice::from_ref(&cfg.input))?;
    }
    // Refused before the steps run, not after hours of signatures.
    if matches!(step, None | Some(Step::Cluster)) {
        check_duplicates_file(&dup_path)?;
    }
    let mut report = match step {
        Some(Step::Signatures) => {
            signatures(cfg, &Layout::new(cfg)?, task)?;
            RunReport::new("dedup:signatures")
        }
        Some(Step::Buckets) => {
            buckets(cfg, &Layout::new(cfg)?, task)?;
            RunReport::new("dedup:buckets")
        }
        Some(Step::Cluster) => {
            if task.index == 0 {
                cluster(cfg, &Layout::new(cfg)?)?;
            }
            RunReport::new("dedup:cluster")
        }
        Some(Step::Filter) => {
            let mut st = open_stage(cfg, opts)?;
            let lay = Layout::new(cfg)?;
            st.set_fingerprint(&lay.fingerprint(cfg, task));
            match up_to_date(cfg, task, &st) {
                Some(r) => r,
                None => filter(cfg, &lay, task, st)?,
            }
        }
        None => {
            if task.count > 1 {
                return Err(Error::Other(
                    "dedup with --task-count > 1 runs one step per job array: --step signatures, then buckets, then cluster, then filter (see `coretech dedup --help`)".into(),
                ));
            }
            let mut st = open_stage(cfg, opts)?;
            let lay = Layout::new(cfg)?;
            st.set_fingerprint(&lay.fingerprint(cfg, task));
            if let Some(r) = up_to_date(cfg, task, &st) {
                r
            } else {
                // A rejects folder that would be refused is refused before the steps run.
                if let Some(d) = rejects_dir(cfg, task) {
                    st.check_rejects(&d)?;
                }
                // Everything the steps write in the output folder is claimed before they run.
                if let Some(w) = work_claim(cfg) {
                    st.claim(&w)?;
                }
                let progress = st.resume::<FilterProgress>().unwrap_or_default();
                st.save_progress(&progress)?;
                signatures(cfg, &lay, task)?;
                buckets(cfg, &lay, task)?;
                cluster(cfg, &lay)?;
                let r = filter(cfg, &lay, task, st)?;
                if !cfg.keep_work {
                    remove_work(&lay)?;
                }
                r
            }
        }
    };
    report.elapsed_s = started.elapsed().as_secs_f64();
    Ok(report)
}

/// The stage's hold on this task's output folder.
fn open_stage(cfg: &DedupConfig, opts: &RunOptions) -> Result<Stage> {
    Stage::open(StageSpec {
        name: "dedup",
        kind: "documents",
        dir: opts.task.output_dir(&cfg.output),
        output: cfg.output.clone(),
        inputs: vec![cfg.input.clone()],
        force: opts.force,
    })
}

/// The work folder as an ownership claim when it lies in the output folder (the default).
fn work_claim(cfg: &DedupConfig) -> Option<String> {
    let rel = cfg.work().strip_prefix(&cfg.output).ok()?.display().to_string();
    (!rel.is_empty()).then(|| format!("{rel}/"))
}

/// The finished build's report when the output, the duplicates table and the rejects folder
/// are all there and of this build.
fn up_to_date(cfg: &DedupConfig, task: TaskSplit, st: &Stage) -> Option<RunReport> {
    let r = st.up_to_date::<RunReport>()?;
    let beside_ok =
        duplicates_path(cfg).is_ok_and(|p| p.exists()) && rejects_dir(cfg, task).is_none_or(|d| rejects_up_to_date(&d, st.fingerprint()));
    if !beside_ok {
        tracing::warn!("{}: the duplicates table or the rejects folder beside it is missing or changed; rebuilding", st.dir().display());
    }
    beside_ok.then_some(r)
}

/// `OUTPUT.duplicates.parquet` (an error naming `dedup.output` when it has no folder name).
fn duplicates_path(cfg: &DedupConfig) -> Result<PathBuf> {
    cfg.duplicates_file().ok_or_else(|| Error::Config {
        file: String::new(),
        key: "dedup.output".into(),
        message: format!("the output {} has no folder name to put the duplicates table beside", cfg.output.display()),
    })
}

/// This task's rejects folder when rejects are on (a multi-task build: `REJECTS/task-NNNNN`).
fn rejects_dir(cfg: &DedupConfig, task: TaskSplit) -> Option<PathBuf> {
    cfg.rejects.then(|| cfg.rejects_dir()).flatten().map(|d| task.output_dir(&d))
}

/// Whether `path` holds a duplicates table: a Parquet file with exactly its columns.
fn is_duplicates_table(path: &Path) -> bool {
    File::open(path)
        .ok()
        .and_then(|f| ParquetRecordBatchReaderBuilder::try_new(f).ok())
        .is_some_and(|b| b.schema().fields() == duplicates_schema().fields())
}

/// Refuses a file at the duplicates table's place that is not a duplicates table: the stage
/// never overwrites what it did not write.
fn check_duplicates_file(path: &Path) -> Result<()> {
    if path.symlink_metadata().is_err() || (path.is_file() && is_duplicates_table(path)) {
        return Ok(());
    }
    Err(Error::Other(format!(
        "{}: exists and is not a duplicates table this stage wrote; it is never overwritten (move it away or choose another \
         output: the table of removals goes beside the output, as OUTPUT{DUPLICATES_SUFFIX})",
        path.display()
    )))
}

/// The duplicates table of a finished run, for its readers (`verify`, the benchmarks): an
/// error naming the run to do when it is missing, or the old layout when that is what is there.
pub fn duplicates_table(cfg: &DedupConfig) -> Result<PathBuf> {
    let path = duplicates_path(cfg)?;
    if path.exists() {
        return Ok(path);
    }
    let old = cfg.output.join(LEGACY_DUPLICATES_FILE);
    Err(Error::Other(if old.exists() {
        format!(
            "{}: not found; {} is of the old layout (the table inside the output); run the dedup stage again, it moves the \
             table beside the output",
            path.display(),
            old.display()
        )
    } else {
        format!("{}: not found; run the dedup stage first", path.display())
    }))
}

fn remove_work(lay: &Layout) -> Result<()> {
    for d in ["sig", "runs", "edges", "removed", "tmp"] {
        let p = lay.work.join(d);
        if p.exists() {
            std::fs::remove_dir_all(&p).map_err(|e| Error::io(&p, e))?;
        }
    }
    let _ = std::fs::remove_file(lay.cluster_done());
    let _ = std::fs::remove_dir(&lay.work); // only if empty
    Ok(())
}

fn shard_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Shard { path: path.to_path_buf(), message: e.to_string() }
}

fn write_json<T: Serialize>(path: &Path, v: &T) -> Result<()> {
    let mut b = serde_json::to_vec_pretty(v).expect("serializes");
    b.push(b'\n');
    write_atomic(path, &b)
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Option<T> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

fn string_col<'a>(batch: &'a RecordBatch, name: &str, path: &Path) -> Result<&'a StringArray> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<StringArray>())
        .ok_or_else(|| shard_err(path, format!("column {name:?} missing or not utf8 (not a document shard?)")))
}

// ---------------------------------------------------------------------------------------------
// Step 1: signatures

/// What a finished shard of the signatures step left.
#[derive(Debug, Serialize, Deserialize)]
struct SigDone {
    hash: String,
    rows: u64,
    /// Run files per slot, relative to the work directory.
    runs: Vec<Vec<String>>,
}

fn load_sig_done(lay: &Layout, s: usize) -> Option<SigDone> {
    read_json::<SigDone>(&lay.sig_done(s))
        .filter(|d| d.hash == lay.work_hash && d.rows == lay.prefix[s + 1] - lay.prefix[s] && d.runs.len() == lay.slots)
}

fn signatures(cfg: &DedupConfig, lay: &Layout, task: TaskSplit) -> Result<()> {
    let mine: Vec<usize> = (0..lay.shards.len()).filter(|s| s % task.count == task.index).collect();
    let hasher = cfg.hasher();
    let budget = (cfg.sort_buffer_mb << 20) / super::extsort::ENTRY_BYTES / rayon::current_num_threads().max(1);
    mine.par_iter().try_for_each(|&s| {
        if load_sig_done(lay, s).is_some() {
            return Ok(());
        }
        sign_shard(cfg, lay, s, &hasher, budget.max(1024))
    })
}

struct DocKeys {
    /// The shingle hashes, when they are stored.
    hashes: Vec<u32>,
    exact: u128,
    shingles: u32,
    identity: u64,
    exact_on: bool,
    near_on: bool,
}

fn sign_shard(cfg: &DedupConfig, lay: &Layout, s: usize, hasher: &super::minhash::MinHasher, budget: usize) -> Result<()> {
    let path = &lay.shards[s];
    // Runs left by an interrupted attempt at this shard.
    for slot in 0..lay.slots {
        let dir = lay.work.join("runs").join(format!("b{slot:02}"));
        if let Ok(rd) = std::fs::read_dir(&dir) {
            let prefix = format!("part-{s:05}-");
            for e in rd.flatten() {
                if e.file_name().to_string_lossy().starts_with(&prefix) {
                    std::fs::remove_file(e.path()).map_err(|err| Error::io(e.path(), err))?;
                }
            }
        }
    }
    let f = File::open(path).map_err(|e| Error::io(path, e))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(f).map_err(|e| shard_err(path, e))?;
    let wanted: Vec<usize> = ["id", "source", "date", "text", "ipc"]
        .iter()
        .map(|n| builder.schema().index_of(n).map_err(|_| shard_err(path, format!("column {n:?} missing (not a document shard?)"))))
        .collect::<Result<_>>()?;
    let mask = ProjectionMask::roots(builder.parquet_schema(), wanted);
    let reader = builder.with_projection(mask).with_batch_size(cfg.read_batch_rows).build().map_err(|e| shard_err(path, e))?;

    std::fs::create_dir_all(lay.work.join("sig")).map_err(|e| Error::io(lay.work.join("sig"), e))?;
    let (sig_path, meta_path) = (lay.sig(s), lay.meta(s));
    let (sig_tmp, meta_tmp) = (crate::core::fsio::tmp_path(&sig_path), crate::core::fsio::tmp_path(&meta_path));
    let mut sig_w = BufWriter::with_capacity(1 << 20, File::create(&sig_tmp).map_err(|e| Error::io(&sig_tmp, e))?);
    let mut meta_w = BufWriter::with_capacity(1 << 20, File::create(&meta_tmp).map_err(|e| Error::io(&meta_tmp, e))?);
    let shg_path = lay.shingles(s);
    let shg_tmp = crate::core::fsio::tmp_path(&shg_path);
    let mut shg_w = match lay.shingle_files {
        true => Some(BufWriter::with_capacity(1 << 20, File::create(&shg_tmp).map_err(|e| Error::io(&shg_tmp, e))?)),
        false => None,
    };
    let (mut shg_len, mut shg_bytes) = (0u64, Vec::<u8>::new());

    let (k, nb) = (lay.k, lay.nb);
    let mut bufs: Vec<Vec<Entry>> = vec![Vec::new(); lay.slots];
    let mut runs: Vec<Vec<String>> = vec![Vec::new(); lay.slots];
    let mut run_no = 0usize;
    let mut buffered = 0usize;
    let mut spill = |bufs: &mut Vec<Vec<Entry>>, runs: &mut Vec<Vec<String>>| -> Result<()> {
        for (slot, b) in bufs.iter_mut().enumerate() {
            if b.is_empty() {
                continue;
            }
            let p = lay.run(slot, s, run_no);
            write_run(&p, b)?;
            runs[slot].push(p.strip_prefix(&lay.work).unwrap_or(&p).display().to_string());
            b.clear();
        }
        run_no += 1;
        Ok(())
    };
    let mut row: u64 = 0;
    let mut sig_bytes: Vec<u8> = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| shard_err(path, e))?;
        let (ids, sources, dates, texts) = (
            string_col(&batch, "id", path)?,
            string_col(&batch, "source", path)?,
            string_col(&batch, "date", path)?,
            string_col(&batch, "text", path)?,
        );
        let ipcs = batch
            .column_by_name("ipc")
            .and_then(|c| c.as_any().downcast_ref::<ListArray>())
            .ok_or_else(|| shard_err(path, "column \"ipc\" missing or not a list (not a document shard?)"))?;
        let n = batch.num_rows();
        // Chunks of at least one value so the zips line up when near dedup is off (k = nb = 0).
        let (kk, nbb, mm) = (k.max(1), nb.max(1), lay.m.max(1));
        let mut sigs = vec![0u32; n * kk];
        let mut bands = vec![0u128; n * nbb];
        let mut bins = vec![0u16; n * mm];
        let keys: Vec<DocKeys> = (0..n)
            .into_par_iter()
            .zip(sigs.par_chunks_mut(kk))
            .zip(bands.par_chunks_mut(nbb))
            .zip(bins.par_chunks_mut(mm))
            .map_init(Scratch::default, |sc, (((i, sig), band), bin)| {
                let text = texts.value(i);
                let (source, id) = (sources.value(i), ids.value(i));
                let policy = resolve(&cfg.sources, source);
                let exact_on = cfg.exact.enabled && policy.exact;
                let near_on = k > 0 && policy.near;
                let exact = if exact_on { exact_key(&cfg.exact.normalize, text, cfg.exact.seed) } else { 0 };
                let mut shingles = 0;
                if near_on {
                    shingles = hasher.signature(text, sc, sig, &mut bin[..lay.m]) as u32;
                    for (b, key) in band.iter_mut().enumerate().take(nb) {
                        *key = hasher.band_key(sig, b);
                    }
                }
                let identity = match policy.identity {
                    Identity::Ipc => {
                        let codes = ipc_codes(ipcs, i);
                        identity_key(policy.identity, source, id, &codes.iter().map(String::as_str).collect::<Vec<_>>())
                    }
                    other => identity_key(other, source, id, &[]),
                };
                let hashes = if near_on && lay.shingle_files { sc.hashes().to_vec() } else { Vec::new() };
                DocKeys { hashes, exact, shingles, identity, exact_on, near_on }
            })
            .collect();
        sig_bytes.clear();
        if k > 0 {
            for i in 0..n {
                for v in &sigs[i * kk..i * kk + k] {
                    sig_bytes.extend_from_slice(&v.to_le_bytes());
                }
                for v in &bins[i * mm..i * mm + lay.m] {
                    sig_bytes.extend_from_slice(&v.to_le_bytes());
                }
                if let Some(w) = shg_w.as_mut() {
                    let h = &keys[i].hashes;
                    sig_bytes.extend_from_slice(&shg_len.to_le_bytes());
                    sig_bytes.extend_from_slice(&(h.len() as u32).to_le_bytes());
                    shg_bytes.clear();
                    for v in h {
                        shg_bytes.extend_from_slice(&v.to_le_bytes());
                    }
                    w.write_all(&shg_bytes).map_err(|e| Error::io(&shg_tmp, e))?;
                    shg_len += h.len() as u64;
                }
            }
        }
        sig_w.write_all(&sig_bytes).map_err(|e| Error::io(&sig_tmp, e))?;
        for (i, d) in keys.iter().enumerate() {
            write_meta(&mut meta_w, d, sources.value(i), dates.value(i), ids.value(i)).map_err(|e| Error::io(&meta_tmp, e))?;
            let gidx = lay.prefix[s] + row + i as u64;
            if d.near_on && d.shingles > 0 {
                for b in 0..nb {
                    bufs[b].push(Entry { key: bands[i * nbb + b], gidx });
                }
                buffered += nb;
            }
            if d.exact_on {
                bufs[nb].push(Entry { key: d.exact, gidx });
                buffered += 1;
            }
            if buffered >= budget {
                spill(&mut bufs, &mut runs)?;
                buffered = 0;
            }
        }
        row += n as u64;
    }
    spill(&mut bufs, &mut runs)?;
    let mut files = vec![(sig_w, &sig_tmp, &sig_path), (meta_w, &meta_tmp, &meta_path)];
    if let Some(w) = shg_w {
        files.push((w, &shg_tmp, &shg_path));
    }
    for (w, tmp, fin) in files {
        let f = w.into_inner().map_err(|e| Error::io(tmp, e.into_error()))?;
        f.sync_all().map_err(|e| Error::io(tmp, e))?;
        std::fs::rename(tmp, fin).map_err(|e| Error::io(fin, e))?;
    }
    write_json(&lay.sig_done(s), &SigDone { hash: lay.work_hash.clone(), rows: row, runs })
}

/// The IPC symbols of row `i` of a shard's `ipc` column.
fn ipc_codes(col: &ListArray, i: usize) -> Vec<String> {
    if col.is_null(i) {
        return Vec::new();
    }
    let v = col.value(i);
    match v.as_any().downcast_ref::<StringArray>() {
        Some(a) => (0..a.len()).filter(|&j| a.is_valid(j)).map(|j| a.value(j).to_string()).collect(),
        None => Vec::new(),
    }
}

fn write_meta(w: &mut impl Write, d: &DocKeys, source: &str, date: &str, id: &str) -> std::io::Result<()> {
    w.write_all(&d.exact.to_le_bytes())?;
    w.write_all(&d.shingles.to_le_bytes())?;
    w.write_all(&d.identity.to_le_bytes())?;
    w.write_all(&[d.exact_on as u8 | (d.near_on as u8) << 1])?;
    w.write_all(&(source.len().min(u16::MAX as usize) as u16).to_le_bytes())?;
    w.write_all(&source.as_bytes()[..source.len().min(u16::MAX as usize)])?;
    w.write_all(&(date.len().min(u16::MAX as usize) as u16).to_le_bytes())?;
    w.write_all(&date.as_bytes()[..date.len().min(u16::MAX as usize)])?;
    w.write_all(&(id.len() as u32).to_le_bytes())?;
    w.write_all(id.as_bytes())
}

/// One document's record in a `.meta` file.
#[derive(Debug, Clone)]
struct MetaRec {
    exact: u128,
    shingles: u32,
    identity: u64,
    flags: u8,
    source: String,
    date: String,
    id: String,
}

struct MetaReader {
    path: PathBuf,
    r: BufReader<File>,
}

impl MetaReader {
    fn open(path: &Path) -> Result<Self> {
        Ok(Self { path: path.to_path_buf(), r: BufReader::with_capacity(1 << 16, File::open(path).map_err(|e| Error::io(path, e))?) })
    }
    fn next_rec(&mut self) -> Result<MetaRec> {
        let path = self.path.clone();
        let bad = |e: std::io::Error| Error::Other(format!("{}: truncated or unreadable metadata file: {e}", path.display()));
        let mut head = [0u8; 31];
        self.r.read_exact(&mut head).map_err(bad)?;
        let exact = u128::from_le_bytes(head[..16].try_into().unwrap());
        let shingles = u32::from_le_bytes(head[16..20].try_into().unwrap());
        let identity = u64::from_le_bytes(head[20..28].try_into().unwrap());
        let flags = head[28];
        let source = self.string(u16::from_le_bytes([head[29], head[30]]) as usize)?;
        let mut l2 = [0u8; 2];
        self.r.read_exact(&mut l2).map_err(bad)?;
        let date = self.string(u16::from_le_bytes(l2) as usize)?;
        let mut l4 = [0u8; 4];
        self.r.read_exact(&mut l4).map_err(bad)?;
        let id = self.string(u32::from_le_bytes(l4) as usize)?;
        Ok(MetaRec { exact, shingles, identity, flags, source, date, id })
    }
    fn string(&mut self, n: usize) -> Result<String> {
        let mut b = vec![0u8; n];
        self.r.read_exact(&mut b).map_err(|e| Error::Other(format!("{}: truncated metadata file: {e}", self.path.display())))?;
        String::from_utf8(b).map_err(|e| Error::Other(format!("{}: bad metadata: {e}", self.path.display())))
    }
}

/// Random access to the signatures of all shards (positioned reads; the page cache, not the
/// process, holds what is hot).
struct SigStore<'a> {
    lay: &'a Layout,
    files: Vec<OnceLock<std::result::Result<File, String>>>,
    shingle_files: Vec<OnceLock<std::result::Result<File, String>>>,
}

impl<'a> SigStore<'a> {
    fn new(lay: &'a Layout) -> Self {
        let n = lay.shards.len();
        Self { lay, files: (0..n).map(|_| OnceLock::new()).collect(), shingle_files: (0..n).map(|_| OnceLock::new()).collect() }
    }
}

impl SigStore<'_> {
    /// Reads the first `len` bytes of document `g`'s record into `buf`.
    fn read_record(&self, g: u64, len: usize, buf: &mut Vec<u8>) -> Result<()> {
        let (s, row) = self.lay.locate(g);
        let f = self.files[s].get_or_init(|| File::open(self.lay.sig(s)).map_err(|e| format!("{}: {e}", self.lay.sig(s).display())));
        let f = f.as_ref().map_err(|e| Error::Other(e.clone()))?;
        buf.resize(len, 0);
        f.read_exact_at(buf, row * self.lay.record() as u64).map_err(|e| Error::io(self.lay.sig(s), e))
    }

    /// Document `g`'s MinHash values only (the buckets step's pre-check needs nothing else: a
    /// fifth of the record's bytes at the default 108 values and 1,024 bins).
    fn minhash(&self, g: u64, out: &mut Sketch) -> Result<()> {
        self.read_record(g, 4 * self.lay.k, &mut out.buf)?;
        out.sig.clear();
        out.sig.extend(out.buf.chunks_exact(4).map(|c| u32::from_le_bytes(c.try_into().unwrap())));
        Ok(())
    }
}

impl super::cluster::SketchSource for SigStore<'_> {
    fn get(&self, g: u64, out: &mut Sketch) -> Result<()> {
        self.read_record(g, self.lay.record(), &mut out.buf)?;
        out.sig.clear();
        out.sig.extend(out.buf[..4 * self.lay.k].chunks_exact(4).map(|c| u32::from_le_bytes(c.try_into().unwrap())));
        out.bins.clear();
        let bins_end = 4 * self.lay.k + 2 * self.lay.m;
        out.bins.extend(out.buf[4 * self.lay.k..bins_end].chunks_exact(2).map(|c| u16::from_le_bytes(c.try_into().unwrap())));
        out.shingles_at = if self.lay.shingle_files {
            let b = &out.buf[bins_end..];
            (u64::from_le_bytes(b[..8].try_into().unwrap()), u32::from_le_bytes(b[8..12].try_into().unwrap()))
        } else {
            (0, 0)
        };
        Ok(())
    }

    fn shingles(&self, g: u64, sketch: &Sketch, out: &mut Vec<u32>) -> Result<bool> {
        out.clear();
        if !self.lay.shingle_files {
            return Ok(false);
        }
        let (s, _) = self.lay.locate(g);
        let path = self.lay.shingles(s);
        let f = self.shingle_files[s].get_or_init(|| File::open(&path).map_err(|e| format!("{}: {e}", path.display())));
        let f = f.as_ref().map_err(|e| Error::Other(e.clone()))?;
        let (offset, n) = sketch.shingles_at;
        let mut bytes = vec![0u8; 4 * n as usize];
        f.read_exact_at(&mut bytes, 4 * offset).map_err(|e| Error::io(&path, e))?;
        out.extend(bytes.chunks_exact(4).map(|c| u32::from_le_bytes(c.try_into().unwrap())));
        Ok(true)
    }
}

// ---------------------------------------------------------------------------------------------
// Step 2: buckets

#[derive(Debug, Serialize, Deserialize)]
struct EdgesDone {
    hash: String,
    pairs: u64,
    /// Members of LSH buckets beyond `BUCKET_LEADERS` that passed no leader's estimate.
    #[serde(default)]
    unlinked: u64,
}

fn all_sig_done(lay: &Layout) -> Result<Vec<SigDone>> {
    let mut v = Vec::with_capacity(lay.shards.len());
    for s in 0..lay.shards.len() {
        match load_sig_done(lay, s) {
            Some(d) => v.push(d),
            None => {
                return Err(Error::Other(format!(
                    "dedup: the signatures step has not finished shard {s} ({}); run `--step signatures` for every task first",
                    lay.shards[s].display()
                )))
            }
        }
    }
    Ok(v)
}

fn buckets(cfg: &DedupConfig, lay: &Layout, task: TaskSplit) -> Result<()> {
    let done = all_sig_done(lay)?;
    let mine: Vec<usize> = (0..lay.slots).filter(|b| b % task.count == task.index).collect();
    let sigs = SigStore::new(lay);
    mine.par_iter().try_for_each(|&slot| {
        if read_json::<EdgesDone>(&lay.edges_done(slot)).is_some_and(|d| d.hash == lay.edges_hash) {
            return Ok(());
        }
        let runs: Vec<PathBuf> = done.iter().flat_map(|d| d.runs[slot].iter().map(|r| lay.work.join(r))).collect();
        let (pairs, unlinked) = bucket_slot(cfg, lay, slot, &runs, &sigs)?;
        write_json(&lay.edges_done(slot), &EdgesDone { hash: lay.edges_hash.clone(), pairs, unlinked })
    })
}

/// How many members of one LSH bucket the others are compared with (by MinHash estimate) when
/// the bucket's pairs are made. Buckets up to this size are paired exhaustively; in larger
/// ones (templated texts sharing a band) each later member is compared with these leaders
/// only, so the work stays linear in the bucket size.
const BUCKET_LEADERS: usize = 16;

/// A bucket's leaders: global index, MinHash values, and which bucket-local component (leaders
/// joined by accepted pairs) each belongs to.
#[derive(Default)]
struct Leaders {
    gidx: Vec<u64>,
    sig: Vec<Vec<u32>>,
    comp: Vec<usize>,
}

/// Merges a band's runs and writes the bucket's candidate pairs. Exact-text buckets (identical
/// normalized text) pair every member with the bucket's first member. LSH buckets pair a member
/// only with leaders whose MinHash estimate passes `cluster::worth_checking` (one pair per
/// bucket-local component), so the cluster step's groups are joined by likely near copies, not
/// by any shared band: a chance band collision between unrelated documents no longer chains
/// their families into one giant group (issue 19: at 4 GB such groups outgrew
/// `max_kept_per_group`). Returns (pairs written, members linked to no leader).
fn bucket_slot(cfg: &DedupConfig, lay: &Layout, slot: usize, runs: &[PathBuf], sigs: &SigStore) -> Result<(u64, u64)> {
    let mut merge = merge_runs::<Entry>(runs, cfg.merge_fan_in, &lay.work.join("tmp").join(format!("b{slot:02}")))?;
    let out = lay.edges(slot);
    std::fs::create_dir_all(out.parent().unwrap()).map_err(|e| Error::io(&out, e))?;
    let tmp = crate::core::fsio::tmp_path(&out);
    let mut w = BufWriter::with_capacity(1 << 16, File::create(&tmp).map_err(|e| Error::io(&tmp, e))?);
    let near_slot = slot < lay.nb;
    let (mut pairs, mut unlinked) = (0u64, 0u64);
    let mut key: Option<u128> = None;
    let mut first = 0u64;
    let mut leaders = Leaders::default();
    let mut sketch = Sketch::default();
    let mut hit: Vec<usize> = Vec::with_capacity(BUCKET_LEADERS);
    let mut put = |w: &mut BufWriter<File>, a: u64, b: u64| -> Result<()> {
        pairs += 1;
        w.write_all(&a.to_le_bytes()).and_then(|_| w.write_all(&b.to_le_bytes())).map_err(|e| Error::io(&tmp, e))
    };
    while let Some(e) = merge.next_entry()? {
        let new_bucket = key != Some(e.key);
        if new_bucket {
            key = Some(e.key);
            first = e.gidx;
            leaders.gidx.clear();
            leaders.comp.clear();
        }
        if !near_slot {
            if !new_bucket {
                put(&mut w, first, e.gidx)?;
            }
            continue;
        }
        sigs.minhash(e.gidx, &mut sketch)?;
        // The first leader of each component this member passes; those components merge.
        hit.clear();
        for i in 0..leaders.gidx.len() {
            if !hit.iter().any(|&j| leaders.comp[j] == leaders.comp[i])
                && super::cluster::worth_checking(cfg.near.threshold, &sketch.sig, &leaders.sig[i])
            {
                hit.push(i);
            }
        }
        for &i in &hit {
            put(&mut w, leaders.gidx[i], e.gidx)?;
        }
        let comp = match hit.iter().map(|&i| leaders.comp[i]).min() {
            Some(c) => {
                let joined: Vec<usize> = hit.iter().map(|&i| leaders.comp[i]).collect();
                for x in leaders.comp.iter_mut() {
                    if joined.contains(x) {
                        *x = c;
                    }
                }
                c
            }
            None => leaders.gidx.len(),
        };
        if leaders.gidx.len() < BUCKET_LEADERS {
            let n = leaders.gidx.len();
            if leaders.sig.len() == n {
                leaders.sig.push(Vec::new());
            }
            leaders.sig[n].clear();
            leaders.sig[n].extend_from_slice(&sketch.sig);
            leaders.gidx.push(e.gidx);
            leaders.comp.push(comp);
        } else if hit.is_empty() {
            unlinked += 1;
        }
    }
    let f = w.into_inner().map_err(|e| Error::io(&tmp, e.into_error()))?;
    f.sync_all().map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, &out).map_err(|e| Error::io(&out, e))?;
    Ok((pairs, unlinked))
}

// ---------------------------------------------------------------------------------------------
// Step 3: cluster

/// What the cluster step found (saved in `cluster.done`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ClusterSummary {
    hash: String,
    /// Clusters of more than one document.
    pub clusters: u64,
    /// Documents in those clusters (candidate groups of two or more, kept and removed alike).
    #[serde(default)]
    pub grouped: u64,
    /// Removed documents by source and kind.
    pub removed: BTreeMap<String, BTreeMap<String, u64>>,
}

fn duplicates_schema() -> SchemaRef {
    let utf8 = |n: &str| Field::new(n, DataType::Utf8, false);
    Arc::new(Schema::new(vec![
        utf8("removed_id"),
        utf8("removed_source"),
        utf8("kept_id"),
        utf8("kept_source"),
        Field::new("cluster_id", DataType::UInt64, false),
        utf8("kind"),
        Field::new("jaccard", DataType::Float64, false),
    ]))
}

/// One row of the duplicates table (`OUTPUT.duplicates.parquet`).
#[derive(Debug, Clone, PartialEq)]
pub struct DuplicateRow {
    /// Id of the removed document.
    pub removed_id: String,
    /// Its source.
    pub removed_source: String,
    /// Id of the document kept in its place.
    pub kept_id: String,
    /// Source of the kept document.
    pub kept_source: String,
    /// xxh3-64 of the kept id: the same for every member of a cluster.
    pub cluster_id: u64,
    /// `exact` (same normalized text as the kept one) or `near`.
    pub kind: String,
    /// Estimated Jaccard of the removed and the kept document (1 for exact).
    pub jaccard: f64,
}

fn duplicates_batch(rows: &[DuplicateRow]) -> RecordBatch {
    let s = |f: fn(&DuplicateRow) -> &str| -> ArrayRef { Arc::new(rows.iter().map(|r| Some(f(r))).collect::<StringArray>()) };
    RecordBatch::try_new(
        duplicates_schema(),
        vec![
            s(|r| &r.removed_id),
            s(|r| &r.removed_source),
            s(|r| &r.kept_id),
            s(|r| &r.kept_source),
            Arc::new(rows.iter().map(|r| r.cluster_id).collect::<UInt64Array>()),
            s(|r| &r.kind),
            Arc::new(rows.iter().map(|r| r.jaccard).collect::<Float64Array>()),
        ],
    )
    .expect("duplicates batch matches schema")
}

/// Reads every row of a duplicates table (`OUTPUT.duplicates.parquet`).
pub fn read_duplicates(path: &Path) -> Result<Vec<DuplicateRow>> {
    let f = File::open(path).map_err(|e| Error::io(path, e))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(f).and_then(|b| b.build()).map_err(|e| shard_err(path, e))?;
    let mut out = Vec::new();
    for b in reader {
        let b = b.map_err(|e| shard_err(path, e))?;
        let (ri, rs, ki, ks, kind) = (
            string_col(&b, "removed_id", path)?,
            string_col(&b, "removed_source", path)?,
            string_col(&b, "kept_id", path)?,
            string_col(&b, "kept_source", path)?,
            string_col(&b, "kind", path)?,
        );
        let cid = b
            .column_by_name("cluster_id")
            .and_then(|c| c.as_any().downcast_ref::<UInt64Array>())
            .ok_or_else(|| shard_err(path, "cluster_id missing"))?;
        let j = b
            .column_by_name("jaccard")
            .and_then(|c| c.as_any().downcast_ref::<Float64Array>())
            .ok_or_else(|| shard_err(path, "jaccard missing"))?;
        for i in 0..b.num_rows() {
            out.push(DuplicateRow {
                removed_id: ri.value(i).into(),
                removed_source: rs.value(i).into(),
                kept_id: ki.value(i).into(),
                kept_source: ks.value(i).into(),
                cluster_id: cid.value(i),
                kind: kind.value(i).into(),
                jaccard: j.value(i),
            });
        }
    }
    Ok(out)
}

fn kind_name(k: u8) -> &'static str {
    if k == KIND_EXACT {
        "exact"
    } else {
        "near"
    }
}

fn cluster(cfg: &DedupConfig, lay: &Layout) -> Result<ClusterSummary> {
    let dup_path = duplicates_path(cfg)?;
    if let Some(d) = read_json::<ClusterSummary>(&lay.cluster_done()) {
        if d.hash == lay.cluster_hash && dup_path.exists() {
            return Ok(d);
        }
    }
    check_duplicates_file(&dup_path)?;
    all_sig_done(lay)?;
    let mut unlinked = 0u64;
    for slot in 0..lay.slots {
        match read_json::<EdgesDone>(&lay.edges_done(slot)) {
            Some(d) if d.hash == lay.edges_hash => unlinked += d.unlinked,
            _ => {
                return Err(Error::Other(format!(
                    "dedup: the buckets step has not finished band {slot}; run `--step buckets` for every task first"
                )))
            }
        }
    }
    let spill = lay.work.join("tmp").join("cluster");
    if spill.exists() {
        std::fs::remove_dir_all(&spill).map_err(|e| Error::io(&spill, e))?;
    }
    let budget = cfg.cluster_memory_mb << 20;
    let params = super::cluster::Params {
        threshold: cfg.near.threshold,
        clustering: cfg.clustering,
        exact: cfg.exact.enabled,
        near: lay.k > 0,
        keep: &cfg.keep,
        max_kept: cfg.max_kept_per_group,
        fine_rows: cfg.near.rows.min(FINE_ROWS),
        exact_margin: cfg.near.exact_check_margin,
        union_find_bytes: budget / 4,
        sort_bytes: budget / 4,
        bins: lay.m,
        sketch_bytes: budget / 4,
        fan_in: cfg.merge_fan_in,
    };
    let edges = |f: &mut dyn FnMut(u64, u64) -> Result<()>| -> Result<()> {
        for slot in 0..lay.slots {
            let p = lay.edges(slot);
            let mut r = BufReader::with_capacity(1 << 16, File::open(&p).map_err(|e| Error::io(&p, e))?);
            let mut buf = [0u8; 16];
            while super::extsort::read_exact_or_end(&mut r, &mut buf).map_err(|e| Error::io(&p, e))? {
                let a = u64::from_le_bytes(buf[..8].try_into().unwrap());
                let b = u64::from_le_bytes(buf[8..].try_into().unwrap());
                f(a, b).map_err(|e| Error::Other(format!("{}: {e}", p.display())))?;
            }
        }
        Ok(())
    };
    let mut shard = 0usize;
    let mut meta: Option<MetaReader> = None;
    let mut g = 0u64;
    let facts = || -> Result<DocFacts> {
        loop {
            if meta.is_none() {
                meta = Some(MetaReader::open(&lay.meta(shard))?);
            }
            if g < lay.prefix[shard + 1] {
                break;
            }
            shard += 1;
            meta = None;
        }
        g += 1;
        let r = meta.as_mut().unwrap().next_rec()?;
        Ok(DocFacts {
            source: r.source,
            date: r.date,
            id: r.id,
            exact: r.exact,
            shingles: r.shingles,
            identity: r.identity,
            exact_on: r.flags & 1 != 0,
            near_on: r.flags & 2 != 0,
        })
    };
    let sigs = SigStore::new(lay);
    let (mut decisions, stats) = super::cluster::cluster(&params, lay.total(), &spill, edges, facts, &sigs)?;

    // Removal lists per shard and the audit table, in input order.
    let mut dw = ShardWriter::create(&dup_path, duplicates_schema(), &cfg.writer)?;
    let mut rows: Vec<DuplicateRow> = Vec::new();
    let mut summary =
        ClusterSummary { hash: lay.cluster_hash.clone(), clusters: stats.groups, grouped: stats.members, ..Default::default() };
    std::fs::create_dir_all(lay.work.join("removed")).map_err(|e| Error::io(lay.work.join("removed"), e))?;
    let mut next = decisions.next_entry()?;
    for s in 0..lay.shards.len() {
        let mut removed: Vec<u8> = Vec::new();
        while let Some(d) = next.take_if(|d| d.gidx < lay.prefix[s + 1]) {
            // REMOVED_FORMAT: the filter step writes the kept id and the similarity into the
            // removed document's rejects row.
            removed.extend_from_slice(&((d.gidx - lay.prefix[s]) as u32).to_le_bytes());
            removed.push(d.kind);
            removed.extend_from_slice(&d.jaccard.to_le_bytes());
            removed.extend_from_slice(&(d.kept_id.len() as u32).to_le_bytes());
            removed.extend_from_slice(d.kept_id.as_bytes());
            *summary.removed.entry(d.removed_source.clone()).or_default().entry(kind_name(d.kind).into()).or_default() += 1;
            rows.push(DuplicateRow {
                removed_id: d.removed_id,
                removed_source: d.removed_source,
                kept_id: d.kept_id,
                kept_source: d.kept_source,
                cluster_id: d.cluster_id,
                kind: kind_name(d.kind).into(),
                jaccard: d.jaccard,
            });
            if rows.len() >= cfg.writer.row_group_rows.max(1) {
                dw.write(&duplicates_batch(&rows))?;
                rows.clear();
            }
            next = decisions.next_entry()?;
        }
        write_atomic(&lay.removed(s), &removed)?;
    }
    if !rows.is_empty() {
        dw.write(&duplicates_batch(&rows))?;
    }
    dw.finish()?;
    // The old layout's table inside the output (a multi-task build's top folder, which no stage
    // run owns), recognised by its columns.
    let old = cfg.output.join(LEGACY_DUPLICATES_FILE);
    if old.is_file() && is_duplicates_table(&old) {
        tracing::info!("{}: removed (old layout; the table is now {})", old.display(), dup_path.display());
        std::fs::remove_file(&old).map_err(|e| Error::io(&old, e))?;
    }
    drop(decisions);
    if spill.exists() {
        std::fs::remove_dir_all(&spill).map_err(|e| Error::io(&spill, e))?;
    }
    write_json(&lay.cluster_done(), &summary)?;
    tracing::info!(
        "dedup: {} groups ({} documents), {} removed {:?}, {} similarity checks ({} exact), {} kept unchecked (groups over max_kept_per_group), {} bucket entries beyond the leaders matched none, {} union-find page transfers",
        stats.groups,
        stats.members,
        stats.removed,
        summary.removed,
        stats.checks,
        stats.exact_checks,
        stats.unchecked,
        unlinked,
        stats.page_io
    );
    Ok(summary)
}

// ---------------------------------------------------------------------------------------------
// Step 4: filter

#[derive(Debug, Default, Serialize, Deserialize)]
struct FilterProgress {
    /// Finished input shards: their output shard (None when every row was removed) and counts.
    done: BTreeMap<usize, (Option<ShardInfo>, RunReport)>,
    /// The rejects part of each finished input shard that had removals.
    #[serde(default)]
    rejects: BTreeMap<usize, ShardInfo>,
}

/// One removed row of an input shard (an entry of its removal list).
struct Removal {
    row: u64,
    kind: u8,
    jaccard: f64,
    kept_id: String,
}

fn load_removed(lay: &Layout, s: usize) -> Result<Vec<Removal>> {
    let p = lay.removed(s);
    let b = std::fs::read(&p).map_err(|e| Error::io(&p, e))?;
    let bad = || Error::Other(format!("{}: truncated or damaged removal list", p.display()));
    let mut out = Vec::new();
    let mut at = 0usize;
    while at < b.len() {
        let head = b.get(at..at + 17).ok_or_else(bad)?;
        let n = u32::from_le_bytes(head[13..17].try_into().unwrap()) as usize;
        let id = b.get(at + 17..at + 17 + n).ok_or_else(bad)?;
        out.push(Removal {
            row: u32::from_le_bytes(head[..4].try_into().unwrap()) as u64,
            kind: head[4],
            jaccard: f64::from_le_bytes(head[5..13].try_into().unwrap()),
            kept_id: String::from_utf8(id.to_vec()).map_err(|_| bad())?,
        });
        at += 17 + n;
    }
    Ok(out)
}

fn filter(cfg: &DedupConfig, lay: &Layout, task: TaskSplit, st: Stage) -> Result<RunReport> {
    let summary = read_json::<ClusterSummary>(&lay.cluster_done())
        .filter(|d| d.hash == lay.cluster_hash)
        .ok_or_else(|| Error::Other("dedup: the cluster step has not finished; run `--step cluster` first".into()))?;
    let out = st.dir().to_path_buf();
    let rejects_dir = rejects_dir(cfg, task);
    let mine: Vec<usize> = (0..lay.shards.len()).filter(|&s| task.owns(s)).collect();
    let present = |dir: &Path, i: &ShardInfo| std::fs::metadata(dir.join(&i.file)).is_ok_and(|m| m.len() == i.bytes);
    let resumed = st.resume::<FilterProgress>().filter(|p| {
        p.done.iter().all(|(_, (info, _))| info.as_ref().is_none_or(|i| present(&out, i)))
            && rejects_dir.as_ref().is_none_or(|d| p.rejects.values().all(|i| present(d, i)))
    });
    let keep_earlier = |n: &str| n == PROGRESS_FILE || work_claim(cfg).is_some_and(|w| w == n);
    let progress = match resumed {
        Some(p) => {
            st.clean(|n| keep_earlier(n) || p.done.values().any(|(i, _)| i.as_ref().is_some_and(|i| i.file == n)))?;
            p
        }
        None => {
            st.clean(keep_earlier)?;
            FilterProgress::default()
        }
    };
    for &s in &mine {
        st.claim(&filtered_name(s))?;
    }
    // The rejects parts saved with the progress are kept, every other part there is removed.
    let mut rejects = match &rejects_dir {
        Some(d) => Some(st.rejects(d, &cfg.writer, progress.rejects.values().cloned().collect())?),
        None => None,
    };
    st.save_progress(&progress)?;
    // One rejects part per input shard (named after it), so the rejects are the same bytes for
    // any thread count and after a resume.
    let parts: Vec<Option<RejectsPart>> = mine.iter().map(|&s| rejects.as_ref().map(|w| w.unit_part(s))).collect();
    let resumed_parts: Vec<usize> = progress.rejects.keys().copied().collect();
    let progress = Mutex::new(progress);
    mine.par_iter().zip(parts).try_for_each(|(&s, part)| {
        if progress.lock().unwrap().done.contains_key(&s) {
            return Ok(());
        }
        let (info, report, rejected) = filter_shard(cfg, lay, s, &out, part)?;
        let mut p = progress.lock().unwrap();
        p.done.insert(s, (info, report));
        p.rejects.extend(rejected.map(|r| (s, r)));
        st.save_progress(&*p)
    })?;
    let progress = progress.into_inner().unwrap();
    if let Some(w) = rejects.as_mut() {
        for (s, part) in &progress.rejects {
            if !resumed_parts.contains(s) {
                w.add_part(part.clone());
            }
        }
    }
    let mut report = RunReport::new("dedup");
    let mut shards = Vec::new();
    for (_, (info, r)) in progress.done {
        report.merge(&r);
        shards.extend(info);
    }
    // The policy each source ran under, so a report says why its IPC entries or patents stayed.
    report.notes = report.sources.keys().map(|src| format!("dedup policy {}", super::policy::describe(&cfg.sources, src))).collect();
    for n in &report.notes {
        tracing::info!("{n}");
    }
    let mut manifest =
        Manifest { tool_version: env!("CARGO_PKG_VERSION").into(), shards, accounting: report.accounting(), ..Default::default() };
    // What else of the folder the finished build owns: the work files when they are kept.
    if task.count == 1 && cfg.keep_work {
        manifest.files.extend(work_claim(cfg));
    }
    manifest.info.insert("task_index".into(), task.index.into());
    manifest.info.insert("task_count".into(), task.count.into());
    manifest.info.insert("input_shards".into(), mine.len().into());
    manifest.info.insert("duplicates".into(), duplicates_path(cfg)?.display().to_string().into());
    manifest.info.insert("clusters".into(), summary.clusters.into());
    manifest.info.insert("grouped_documents".into(), summary.grouped.into());
    if let Some(r) = rejects {
        r.finish(&mut manifest, report.accounting())?;
    }
    st.finish(manifest, &report)?;
    Ok(report)
}

/// Output shard name of input shard `s`.
fn filtered_name(s: usize) -> String {
    format!("part-{s:05}.parquet")
}

/// Rewrites input shard `s` without its removed rows, which go to `rejects` (when on) with the
/// kept id and the similarity. Returns the output shard (None when every row was removed), the
/// counts, and the finished rejects part (None when nothing was removed).
fn filter_shard(
    cfg: &DedupConfig,
    lay: &Layout,
    s: usize,
    out: &Path,
    mut rejects: Option<RejectsPart>,
) -> Result<(Option<ShardInfo>, RunReport, Option<ShardInfo>)> {
    let removed = load_removed(lay, s)?;
    let path = &lay.shards[s];
    let f = File::open(path).map_err(|e| Error::io(path, e))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(f).map_err(|e| shard_err(path, e))?;
    let schema = builder.schema().clone();
    let reader = builder.with_batch_size(cfg.read_batch_rows).build().map_err(|e| shard_err(path, e))?;
    let out_path = out.join(filtered_name(s));
    let mut writer: Option<ShardWriter> = None;
    let mut report = RunReport::new("dedup");
    let mut seen_sources: Vec<String> = Vec::new();
    let mut row = 0u64;
    let mut next = 0usize;
    for batch in reader {
        let batch = batch.map_err(|e| shard_err(path, e))?;
        let (sources, texts) = (string_col(&batch, "source", path)?, string_col(&batch, "text", path)?);
        let mut keep = Vec::with_capacity(batch.num_rows());
        let first_removal = next;
        for i in 0..batch.num_rows() {
            let r = row + i as u64;
            let src = sources.value(i);
            if !seen_sources.iter().any(|x| x == src) {
                seen_sources.push(src.to_string());
            }
            let len = texts.value(i).len() as u64;
            let st = report.source(src);
            st.read += 1;
            st.bytes_in += len;
            if next < removed.len() && removed[next].row == r {
                *st.duplicates.entry(kind_name(removed[next].kind).into()).or_default() += 1;
                next += 1;
                keep.push(false);
            } else {
                st.kept += 1;
                st.bytes_out += len;
                keep.push(true);
            }
        }
        row += batch.num_rows() as u64;
        if let Some(part) = rejects.as_mut().filter(|_| next > first_removal) {
            let gone = BooleanArray::from(keep.iter().map(|k| !k).collect::<Vec<bool>>());
            let gone = arrow::compute::filter_record_batch(&batch, &gone).map_err(|e| shard_err(path, e))?;
            let rows: Vec<Reject> = documents::from_batch(&gone, path)?
                .into_iter()
                .zip(&removed[first_removal..next])
                .map(|(doc, r)| Reject {
                    doc,
                    reason: kind_name(r.kind).into(),
                    kept_id: Some(r.kept_id.clone()),
                    similarity: Some(r.jaccard),
                })
                .collect();
            part.write(&rows)?;
        }
        let kept = arrow::compute::filter_record_batch(&batch, &BooleanArray::from(keep)).map_err(|e| shard_err(path, e))?;
        if kept.num_rows() > 0 {
            if writer.is_none() {
                writer = Some(ShardWriter::create(&out_path, schema.clone(), &cfg.writer)?);
            }
            writer.as_mut().unwrap().write(&kept)?;
        }
    }
    if next != removed.len() {
        return Err(Error::Other(format!(
            "{}: removal list names rows past the end of the shard (input changed since the cluster step?)",
            path.display()
        )));
    }
    for src in seen_sources {
        report.source(&src).files += 1;
    }
    let info = match writer {
        Some(w) => Some(w.finish()?),
        None => None,
    };
    let rejected = match rejects {
        Some(part) => part.finish()?,
        None => None,
    };
    Ok((info, report, rejected))
}
