//! The `docs` stage: raw files → read → render → clean → document shards, with the accounting.
//!
//! One thread frames the inputs (in file order) into batches of raw records; the batches are
//! parsed, rendered and cleaned in parallel on rayon (order kept), counted in order, and handed
//! to a writer thread that cuts shards. After each shard is durably written, `progress.json`
//! records the input position and the counts so far; a killed build restarts from there and
//! ends with byte-identical shards.
//!
//! The output folder, the fingerprint (config, effective `--strict`, task split, the IPC
//! scheme's content, every input file's size and content), the up-to-date and resume decisions
//! belong to [`crate::stage`]. With several tasks each takes a contiguous range of the input
//! files, so the task outputs, merged in task order, hold the documents in the order one task
//! writes them.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::clean::Cleaner;
use crate::config::DocsConfig;
use crate::core::{Fingerprint, RunOptions, RunReport, TaskSplit};
use crate::doc::{Document, Record};
use crate::error::{Error, Position, ReadError, ReadErrorKind, Result};
use crate::io::framing::frame;
use crate::io::input::{expand_inputs, for_each_stream, peek};
use crate::io::{RawRecord, SNIFF_BYTES};
use crate::ipc::IpcScheme;
use crate::render::render_patent;
use crate::shard::{documents, Manifest, ShardInfo, ShardWriter};
use crate::sources::generic::{frame_parquet, is_parquet, GenericParquet};
use crate::sources::{sniff, Format, ParseContext};
use crate::stage::{glob_root, test_hooks, Stage, StageSpec, PROGRESS_FILE};

/// A position in the input sequence: file (index in the task's file list), stream within the
/// file (zip members), and event number within the stream (0 = the stream itself).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Pos {
    /// File index.
    pub file: u32,
    /// Stream index within the file.
    pub stream: u32,
    /// Event index within the stream.
    pub item: u64,
}

/// What is saved after each finished shard (and once at the start).
#[derive(Debug, Serialize, Deserialize)]
struct Progress {
    shards: Vec<ShardInfo>,
    /// The last input position the shards cover (None: nothing read yet).
    pos: Option<Pos>,
    report: RunReport,
}

enum Event {
    Stream { pos: Pos, source: &'static str, bytes: u64 },
    Unrecognized { pos: Pos, name: String },
    Item { pos: Pos, format: &'static dyn Format, raw: std::result::Result<RawRecord, ReadError> },
    FileError { pos: Pos, err: ReadError },
}

enum Outcome {
    Stream { pos: Pos, source: &'static str, bytes: u64 },
    Unrecognized { pos: Pos, name: String },
    Kept { pos: Pos, doc: Document },
    Filtered { pos: Pos, source: String, reason: String },
    Error { pos: Pos, source: String, err: ReadError },
}

enum WriterMsg {
    Docs(Vec<Document>),
    EndShard { report: Box<RunReport>, pos: Pos },
}

/// Documents handed to the writer at a time (bounds memory between the stages).
const WRITE_CHUNK: usize = 1024;
/// Framed bytes per batch, besides the record count limit.
const BATCH_BYTES: usize = 32 << 20;

/// Test hook (only with the `test-hooks` feature): when this environment variable holds N, the
/// run stops with an error right after its N-th shard and `progress.json` are durably written:
/// what a build killed at that point leaves behind (resume tests run the binary with it).
pub use crate::stage::test_hooks::STOP_AFTER_SHARDS_ENV;

/// Runs the docs stage for one task. Returns the report (also written to `report.json`).
pub fn run(cfg: &DocsConfig, scheme: &IpcScheme, task: TaskSplit, strict: bool) -> Result<RunReport> {
    run_with(cfg, scheme, &RunOptions { task, strict, force: false })
}

/// [`run`] with every option (`--force` included).
pub fn run_with(cfg: &DocsConfig, scheme: &IpcScheme, opts: &RunOptions) -> Result<RunReport> {
    let task = opts.task;
    let strict = opts.strict || cfg.strict;
    let mut st = Stage::open(StageSpec {
        name: "docs",
        kind: "documents",
        dir: task.output_dir(&cfg.output),
        output: cfg.output.clone(),
        inputs: cfg.inputs.iter().map(|i| glob_root(i)).collect(),
        force: opts.force,
    })?;
    let all = expand_inputs(&cfg.inputs, Path::new("."))?;
    let files: Vec<PathBuf> = all[task.range(all.len())].to_vec();
    let out_dir = st.dir().to_path_buf();
    st.set_fingerprint(
        &Fingerprint::new()
            .with("config", cfg)
            .with("strict", &strict)
            .with("task", &task)
            .with("ipc_scheme", &scheme.digest())
            .with_files("inputs", &files)?,
    );

    // Up to date, resumable, or fresh.
    if let Some(mut r) = st.up_to_date::<RunReport>() {
        r.elapsed_s = st.elapsed_s();
        return Ok(r);
    }
    let resumed = st.resume::<Progress>().filter(|p| {
        // Every finished shard must still be there, unchanged in size.
        p.shards.iter().all(|s| std::fs::metadata(out_dir.join(&s.file)).is_ok_and(|m| m.len() == s.bytes))
    });
    let (mut report, shards, start) = match resumed {
        Some(p) => {
            tracing::info!("{}: resuming after {} finished shards", out_dir.display(), p.shards.len());
            st.clean(|n| n == PROGRESS_FILE || p.shards.iter().any(|s| s.file == n))?;
            (p.report, p.shards, p.pos)
        }
        None => {
            st.clean(|_| false)?;
            (RunReport::new("docs"), Vec::new(), None)
        }
    };
    st.claim(&shard_name(shards.len()))?;
    st.save_progress(&Progress { shards: shards.clone(), pos: start, report: report.clone() })?;

    let cleaner = Cleaner::new(&cfg.clean)?;
    let progress = Arc::new(AtomicU64::new(0));
    let total_bytes: u64 = files.iter().map(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)).sum();
    let bar = super::progress_bar(total_bytes, "docs");

    let (tx, rx) = sync_channel::<Vec<Event>>(4);
    let (wtx, wrx) = sync_channel::<WriterMsg>(4);
    let cx = ParseContext { cfg: &cfg.sources };

    let result: Result<Vec<ShardInfo>> = std::thread::scope(|s| {
        let framer = {
            let progress = progress.clone();
            let files = &files;
            s.spawn(move || frame_all(files, start, cfg, tx, progress))
        };
        let writer = {
            let st = &st;
            s.spawn(move || write_all(wrx, st, cfg, shards))
        };
        let mut pending: Vec<Document> = Vec::new();
        let mut in_shard: usize = 0;
        let mut last_pos = start.unwrap_or_default();
        let mut failure: Option<Error> = None;
        'batches: for batch in rx.iter() {
            let outcomes: Vec<Outcome> = batch.into_par_iter().map(|ev| process(ev, &cx, cfg, scheme, &cleaner)).collect();
            for o in outcomes {
                match o {
                    Outcome::Stream { pos, source, bytes } => {
                        let st = report.source(source);
                        st.files += 1;
                        st.bytes_in += bytes;
                        last_pos = pos;
                    }
                    Outcome::Unrecognized { pos, name } => {
                        last_pos = pos;
                        if strict {
                            failure = Some(Error::Other(format!("{name}: no reader recognises this input (strict mode)")));
                            break 'batches;
                        }
                        tracing::warn!("{name}: no reader recognises this input; skipped");
                        report.unrecognized.push(name);
                    }
                    Outcome::Filtered { pos, source, reason } => {
                        report.filtered(&source, &reason);
                        last_pos = pos;
                    }
                    Outcome::Error { pos, source, err } => {
                        last_pos = pos;
                        if strict {
                            failure = Some(Error::Read(err));
                            break 'batches;
                        }
                        report.error(&source, &err);
                    }
                    Outcome::Kept { pos, doc } => {
                        last_pos = pos;
                        report.kept(&doc.source, doc.text.len() as u64);
                        pending.push(doc);
                        in_shard += 1;
                        if (pending.len() >= WRITE_CHUNK || in_shard == cfg.rows_per_shard)
                            && wtx.send(WriterMsg::Docs(std::mem::take(&mut pending))).is_err()
                        {
                            break 'batches;
                        }
                        if in_shard == cfg.rows_per_shard {
                            in_shard = 0;
                            if wtx.send(WriterMsg::EndShard { report: Box::new(report.clone()), pos }).is_err() {
                                break 'batches;
                            }
                        }
                    }
                }
            }
            bar.set_position(progress.load(Ordering::Relaxed));
        }
        if failure.is_none() && in_shard > 0 {
            let _ = wtx.send(WriterMsg::Docs(std::mem::take(&mut pending)));
            let _ = wtx.send(WriterMsg::EndShard { report: Box::new(report.clone()), pos: last_pos });
        }
        drop(wtx);
        drop(rx); // stops the framer if we broke off early
        let framed = framer.join().expect("framer thread");
        let written = writer.join().expect("writer thread");
        if let Some(f) = failure {
            return Err(f);
        }
        framed?;
        written
    });
    bar.finish_and_clear();
    let shards = result?;

    report.elapsed_s = st.elapsed_s();
    let mut manifest =
        Manifest { tool_version: env!("CARGO_PKG_VERSION").into(), shards, accounting: report.accounting(), ..Default::default() };
    manifest.info.insert("task_index".into(), task.index.into());
    manifest.info.insert("task_count".into(), task.count.into());
    manifest.info.insert("inputs".into(), files.len().into());
    st.finish(manifest, &report)?;
    Ok(report)
}

/// Shard file name of shard `n`.
pub fn shard_name(n: usize) -> String {
    format!("part-{n:05}.parquet")
}

fn process(ev: Event, cx: &ParseContext<'_>, cfg: &DocsConfig, scheme: &IpcScheme, cleaner: &Cleaner) -> Outcome {
    match ev {
        Event::Stream { pos, source, bytes } => Outcome::Stream { pos, source, bytes },
        Event::Unrecognized { pos, name } => Outcome::Unrecognized { pos, name },
        Event::FileError { pos, err } => Outcome::Error { pos, source: "unknown".into(), err },
        Event::Item { pos, format, raw } => {
            let source = format.source();
            let raw = match raw {
                Ok(r) => r,
                Err(err) => return Outcome::Error { pos, source: source.into(), err },
            };
            let mut doc = match format.parse(&raw, cx) {
                Ok(Record::Doc(d)) => d,
                Ok(Record::Patent(p)) => render_patent(&p, &cfg.render, Some(scheme)),
                Ok(Record::Skip { reason, .. }) => return Outcome::Filtered { pos, source: source.into(), reason },
                Err(err) => return Outcome::Error { pos, source: source.into(), err },
            };
            match cleaner.apply(&mut doc) {
                Ok(()) => Outcome::Kept { pos, doc },
                Err(reason) => Outcome::Filtered { pos, source: doc.source, reason },
            }
        }
    }
}

/// Frames every file in order into batches of events, skipping everything up to `start`.
fn frame_all(files: &[PathBuf], start: Option<Pos>, cfg: &DocsConfig, tx: SyncSender<Vec<Event>>, progress: Arc<AtomicU64>) -> Result<()> {
    let mut batch: Vec<Event> = Vec::new();
    let mut batch_bytes = 0usize;
    let mut open = true; // false once the consumer hung up
    let after_start = |pos: Pos| start.is_none_or(|s| pos > s);
    for (fi, path) in files.iter().enumerate() {
        if !open {
            break;
        }
        let fi = fi as u32;
        if start.is_some_and(|s| fi < s.file) {
            continue;
        }
        let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        // Parquet needs seeking, so it is framed from the file, not from a stream.
        if is_parquet(path) {
            let pos0 = Pos { file: fi, stream: 0, item: 0 };
            if after_start(pos0) {
                batch.push(Event::Stream { pos: pos0, source: GenericParquet.source(), bytes: size });
            }
            let mut item: u64 = 0;
            frame_parquet(path, &cfg.sources, &mut |raw| {
                item += 1;
                let pos = Pos { file: fi, stream: 0, item };
                if !after_start(pos) {
                    return true;
                }
                batch_bytes += raw.as_ref().map(|r| r.bytes.len()).unwrap_or(0);
                batch.push(Event::Item { pos, format: &GenericParquet, raw });
                if batch.len() >= cfg.batch_records || batch_bytes >= BATCH_BYTES {
                    batch_bytes = 0;
                    if tx.send(std::mem::take(&mut batch)).is_err() {
                        open = false;
                        return false;
                    }
                }
                true
            });
            progress.fetch_add(size, Ordering::Relaxed);
            continue;
        }
        let mut si: u32 = 0;
        let res = for_each_stream(path, &progress, |stream| {
            let stream_idx = si;
            si += 1;
            let pos0 = Pos { file: fi, stream: stream_idx, item: 0 };
            // A read error inside the head (a small damaged file) is not fatal: the records
            // before it are framed, and the error is counted where it happened.
            let peeked = match peek(stream, SNIFF_BYTES) {
                Ok(p) => p,
                Err(err) => {
                    if after_start(pos0) {
                        batch.push(Event::FileError { pos: pos0, err });
                    }
                    return Ok(());
                }
            };
            let Some(format) = sniff(&peeked.head) else {
                if after_start(pos0) {
                    batch.push(Event::Unrecognized { pos: pos0, name: peeked.name });
                }
                return Ok(());
            };
            if after_start(pos0) {
                batch.push(Event::Stream { pos: pos0, source: format.source(), bytes: if stream_idx == 0 { size } else { 0 } });
            }
            let mut item: u64 = 0;
            frame(format.framing(), peeked.into_stream(), cfg.sources.max_record_bytes, &mut |raw| {
                item += 1;
                let pos = Pos { file: fi, stream: stream_idx, item };
                if !after_start(pos) {
                    return true;
                }
                batch_bytes += raw.as_ref().map(|r| r.bytes.len()).unwrap_or(0);
                batch.push(Event::Item { pos, format, raw });
                if batch.len() >= cfg.batch_records || batch_bytes >= BATCH_BYTES {
                    batch_bytes = 0;
                    if tx.send(std::mem::take(&mut batch)).is_err() {
                        open = false;
                        return false;
                    }
                }
                true
            });
            Ok(())
        });
        if let Err(e) = res {
            let pos = Pos { file: fi, stream: si, item: 0 };
            if after_start(pos) {
                let err = match e {
                    Error::Read(r) => r,
                    other => ReadError::new(Position::new(path.display().to_string(), None, None), ReadErrorKind::Io, "cannot read input")
                        .with_source(other),
                };
                batch.push(Event::FileError { pos, err });
            }
        }
    }
    if open && !batch.is_empty() {
        let _ = tx.send(batch);
    }
    Ok(())
}

/// Receives documents and shard boundaries; writes shards and the progress file.
fn write_all(rx: Receiver<WriterMsg>, st: &Stage, cfg: &DocsConfig, mut shards: Vec<ShardInfo>) -> Result<Vec<ShardInfo>> {
    let mut current: Option<ShardWriter> = None;
    let stop_after = test_hooks::stop_after_shards();
    for msg in rx {
        match msg {
            WriterMsg::Docs(docs) => {
                if current.is_none() {
                    // Claimed (and saved) with the previous progress.
                    current = Some(ShardWriter::create(&st.dir().join(shard_name(shards.len())), documents::schema(), &cfg.writer)?);
                }
                current.as_mut().unwrap().write(&documents::to_batch(&docs))?;
            }
            WriterMsg::EndShard { report, pos } => {
                if let Some(w) = current.take() {
                    shards.push(w.finish()?);
                }
                st.claim(&shard_name(shards.len()))?;
                st.save_progress(&Progress { shards: shards.clone(), pos: Some(pos), report: *report })?;
                if stop_after.is_some_and(|n| shards.len() >= n) {
                    return Err(Error::Other(format!("stopped after {} shards ({STOP_AFTER_SHARDS_ENV} is set)", shards.len())));
                }
            }
        }
    }
    Ok(shards)
}
