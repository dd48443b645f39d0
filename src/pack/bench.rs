//! `coretech bench tokenize|pack|load`: throughput of the tokenizer, of the whole pack stage
//! and of the loader, as JSON for benchmark runs (`benches/` compares them with HF tokenizers
//! and LLaMA-Factory-style packing in Python).
//!
//! Input texts come from a document shard directory or a JSONL file of `{"text": …}` lines
//! (`source` optional), so the Python side can read the very same texts.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::{PackConfig, PackMode, ShuffleConfig};
use crate::doc::Document;
use crate::error::{Error, Result};
use crate::shard::{documents, Loader, LoaderConfig, ShardWriter};
use crate::tokenize::{Tokenizer, TokenizerConfig};

/// One benchmark's figures.
#[derive(Debug, Clone, Serialize)]
pub struct BenchResult {
    /// `tokenize`, `pack` or `load`.
    pub bench: String,
    /// Encoder or mode details.
    pub detail: String,
    /// Worker threads (rayon pool size, or 1 for the loader without prefetch).
    pub threads: usize,
    /// Tokens processed.
    pub tokens: u64,
    /// Text bytes processed (tokenize/pack) or token bytes delivered (load, 4 per token).
    pub bytes: u64,
    /// Wall time of the measured part.
    pub seconds: f64,
    /// Tokens per second.
    pub tokens_per_s: f64,
    /// Tokens per second per thread.
    pub tokens_per_s_per_thread: f64,
    /// Megabytes (10^6) of text per second.
    pub mb_per_s: f64,
    /// CPU time of all threads during the measured part (tokenize only; Linux): on a shared
    /// machine, tokens per CPU-second is the figure wall time cannot give.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_seconds: Option<f64>,
    /// Wall time of loading the tokenizer (tokenize only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub load_seconds: Option<f64>,
    /// CPU time of loading the tokenizer (tokenize only; Linux).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub load_cpu_seconds: Option<f64>,
    /// Peak resident memory of the process, bytes (tokenize only; Linux).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peak_rss_bytes: Option<u64>,
    /// sha256 of the ids, each text as u32-LE count then u32-LE ids, in input order (tokenize
    /// only): the comparison scripts check other tools' ids against it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ids_sha256: Option<String>,
}

impl BenchResult {
    fn new(bench: &str, detail: String, threads: usize, tokens: u64, bytes: u64, seconds: f64) -> Self {
        let s = seconds.max(1e-9);
        Self {
            bench: bench.into(),
            detail,
            threads,
            tokens,
            bytes,
            seconds,
            tokens_per_s: tokens as f64 / s,
            tokens_per_s_per_thread: tokens as f64 / s / threads.max(1) as f64,
            mb_per_s: bytes as f64 / 1e6 / s,
            cpu_seconds: None,
            load_seconds: None,
            load_cpu_seconds: None,
            peak_rss_bytes: None,
            ids_sha256: None,
        }
    }
}

/// Reads the benchmark texts: a document shard directory, or JSONL with `text` (and `source`).
pub fn load_docs(input: &Path) -> Result<Vec<Document>> {
    if input.is_dir() {
        let mut docs = Vec::new();
        for f in documents::shard_files(input)? {
            for b in documents::read_shard(&f, 4096)? {
                docs.extend(b?);
            }
        }
        return Ok(docs);
    }
    let file = std::fs::File::open(input).map_err(|e| Error::io(input, e))?;
    let mut docs = Vec::new();
    for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|e| Error::io(input, e))?;
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value =
            serde_json::from_str(&line).map_err(|e| Error::Other(format!("{}:{}: not JSON: {e}", input.display(), n + 1)))?;
        let text = v
            .get("text")
            .and_then(|t| t.as_str())
            .ok_or_else(|| Error::Other(format!("{}:{}: no \"text\" string", input.display(), n + 1)))?;
        let source = v.get("source").and_then(|t| t.as_str()).unwrap_or("text");
        docs.push(Document { id: format!("{source}:{n}"), source: source.into(), text: text.into(), ..Default::default() });
    }
    Ok(docs)
}

fn pool(threads: usize) -> Result<rayon::ThreadPool> {
    rayon::ThreadPoolBuilder::new().num_threads(threads).build().map_err(|e| Error::Other(format!("rayon pool: {e}")))
}

/// Tokenizes every text (in batches of `batch` texts, in parallel on `threads` threads). Nothing
/// is encoded before the timed pass, so the fast engine's piece cache starts empty, as on text
/// it has not seen.
pub fn tokenize(input: &Path, tokenizer: &TokenizerConfig, threads: usize, batch: usize) -> Result<BenchResult> {
    let docs = load_docs(input)?;
    let texts: Vec<&str> = docs.iter().map(|d| d.text.as_str()).collect();
    let bytes: u64 = texts.iter().map(|t| t.len() as u64).sum();
    let pool = pool(threads)?;
    let (t_load, cpu_load) = (Instant::now(), process_cpu_ns());
    let tok = Tokenizer::load(tokenizer)?;
    let load_seconds = t_load.elapsed().as_secs_f64();
    let load_cpu = cpu_load.zip(process_cpu_ns()).map(|(a, z)| z.saturating_sub(a) as f64 * 1e-9);
    let cpu0 = process_cpu_ns();
    let t0 = Instant::now();
    let ids = pool.install(|| -> Result<Vec<Vec<u32>>> {
        let mut all = Vec::with_capacity(texts.len());
        for chunk in texts.chunks(batch.max(1)) {
            all.extend(tok.encode_batch(chunk)?);
        }
        Ok(all)
    })?;
    let secs = t0.elapsed().as_secs_f64();
    let cpu = cpu0.zip(process_cpu_ns()).map(|(a, z)| z.saturating_sub(a) as f64 * 1e-9);
    let mut h = Sha256::new();
    for v in &ids {
        h.update((v.len() as u32).to_le_bytes());
        for x in v {
            h.update(x.to_le_bytes());
        }
    }
    let tokens = ids.iter().map(|v| v.len() as u64).sum();
    let mut r = BenchResult::new("tokenize", format!("engine {}", tok.engine()), threads, tokens, bytes, secs);
    r.cpu_seconds = cpu;
    r.load_seconds = Some(load_seconds);
    r.load_cpu_seconds = load_cpu;
    r.peak_rss_bytes = peak_rss();
    r.ids_sha256 = Some(crate::core::fsio::hex(&h.finalize()));
    Ok(r)
}

/// CPU time of every thread of this process so far, in nanoseconds (the first field of
/// `/proc/self/task/*/schedstat`; `None` where that does not exist).
fn process_cpu_ns() -> Option<u64> {
    let mut total = 0u64;
    for e in std::fs::read_dir("/proc/self/task").ok()? {
        let s = std::fs::read_to_string(e.ok()?.path().join("schedstat")).ok()?;
        total += s.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(total)
}

/// Peak resident set size of this process (`VmHWM` in `/proc/self/status`), bytes.
fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb = status.lines().find_map(|l| l.strip_prefix("VmHWM:"))?.split_whitespace().next()?.parse::<u64>().ok()?;
    Some(kb * 1024)
}

/// The whole pack stage (read document shards, tokenize, pack, shuffle, write token shards)
/// on the texts, in a temp directory. Writing the input document shard is not timed.
/// With `keep`, the token shards are written there and kept (for `bench load`).
pub fn pack(
    input: &Path,
    tokenizer: &TokenizerConfig,
    threads: usize,
    seq_len: usize,
    mode: PackMode,
    keep: Option<&Path>,
) -> Result<BenchResult> {
    let work = tempfile_dir()?;
    let docs_dir = if input.is_dir() {
        input.to_path_buf()
    } else {
        let docs = load_docs(input)?;
        let dir = work.join("documents");
        let mut w = ShardWriter::create(&dir.join("part-00000.parquet"), documents::schema(), &Default::default())?;
        for c in docs.chunks(4096) {
            w.write(&documents::to_batch(c))?;
        }
        w.finish()?;
        dir
    };
    let bytes: u64 = load_docs(&docs_dir)?.iter().map(|d| d.text.len() as u64).sum();
    let cfg = PackConfig {
        inputs: vec![docs_dir],
        output: keep.map(Path::to_path_buf).unwrap_or_else(|| work.join("tokens")),
        seq_len,
        mode,
        tokenizer: tokenizer.clone(),
        eos_token: "<|endoftext|>".into(),
        seed: 0,
        mixture: Default::default(),
        rows_per_shard: 16_384,
        batch_docs: 1024,
        open_bins: 64,
        shuffle: ShuffleConfig::default(),
        writer: crate::shard::WriterConfig { row_group_rows: 256, ..Default::default() },
        validation: None,
    };
    let tok = Tokenizer::load(tokenizer)?; // loaded before timing, as the Python side does
    let pool = pool(threads)?;
    let t0 = Instant::now();
    pool.install(|| super::stage::run_with(&cfg, &Default::default(), Some(&tok)))?;
    let secs = t0.elapsed().as_secs_f64();
    let m = crate::shard::Manifest::load(&cfg.output)?;
    let tokens = m.info.get("tokens").and_then(|v| v.as_u64()).unwrap_or(0);
    let _ = std::fs::remove_dir_all(&work);
    Ok(BenchResult::new(
        "pack",
        format!("engine {}, mode {mode:?}, seq_len {seq_len}, document shards to token shards on disk", tok.engine()),
        threads,
        tokens,
        bytes,
        secs,
    ))
}

/// Reads every batch of a token shard directory (`epochs` passes).
pub fn load(dir: &Path, batch_size: usize, epochs: u32, prefetch: usize) -> Result<BenchResult> {
    let cfg = LoaderConfig { stages: vec![vec![dir.to_path_buf()]], batch_size, epochs, prefetch, ..Default::default() };
    let t0 = Instant::now();
    let mut tokens = 0u64;
    for b in Loader::new(cfg)? {
        tokens += b?.input_ids.len() as u64;
    }
    let secs = t0.elapsed().as_secs_f64();
    let detail = if prefetch == 0 { "no prefetch thread (one core)".to_string() } else { format!("prefetch {prefetch}") };
    Ok(BenchResult::new("load", detail, 1, tokens, tokens * 4, secs))
}

/// A fresh temp directory for a benchmark (removed by the benchmark).
fn tempfile_dir() -> Result<PathBuf> {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let dir = std::env::temp_dir().join(format!("coretech-bench-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    Ok(dir)
}
