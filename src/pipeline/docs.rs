//! The `docs` stage: raw files → read → render → clean → document shards, with the accounting.
//!
//! One thread frames the inputs (in file order) into batches of raw records; the batches are
//! parsed, rendered and cleaned in parallel on rayon (order kept), counted in order, and handed
//! to a writer thread that cuts shards. After each shard is durably written, `.progress.json`
//! records the input position and the counts so far; a killed build restarts from there and
//! ends with byte-identical shards.
//!
//! The output folder, the fingerprint (config, effective `--strict`, task split, the IPC
//! scheme's content, every input file's size and content), the up-to-date and resume decisions
//! belong to [`crate::stage`]. With several tasks each takes a contiguous range of the input
//! files, so the task outputs, merged in task order, hold the documents in the order one task
//! writes them.
//!
//! Every document gets its provenance (`meta.provenance`: input stream, record index, byte
//! offset). A source whose native id is only a position in its file (WuDao's running `id`) is
//! namespaced by the file's path within its input entry (`wudao:{path}:{n}`); the remaining
//! collisions are found over the whole build by [`super::ids`] (here for a one-task build, at
//! `coretech merge` for several tasks). Every filtered document is written to the rejects
//! folder (see [`crate::stage::RejectsWriter`]) unless `docs.rejects` is off.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::clean::policy::Policies;
use crate::config::DocsConfig;
use crate::core::{Fingerprint, RunOptions, RunReport, TaskSplit};
use crate::doc::{Document, Meta, Record, Reject, ID_FROM_KEY, ID_FROM_POSITION, PROVENANCE_KEY};
use crate::error::{Error, Position, ReadError, ReadErrorKind, Result};
use crate::io::framing::frame;
use crate::io::input::{expand_inputs, for_each_stream, peek};
use crate::io::{RawRecord, SNIFF_BYTES};
use crate::ipc::IpcScheme;
use crate::render::render_patent;
use crate::shard::{documents, Manifest, ShardInfo, ShardWriter};
use crate::sources::generic::{frame_parquet, is_parquet, GenericParquet};
use crate::sources::{sniff, Format, ParseContext};
use crate::stage::{glob_root, rejects_up_to_date, test_hooks, RejectsWriter, Stage, StageSpec, PROGRESS_FILE};

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
    /// The finished rejects parts (they end where the shards do).
    #[serde(default)]
    rejects: Vec<ShardInfo>,
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
    Kept { pos: Pos, doc: Document, policy: usize },
    Filtered { pos: Pos, reject: Box<Reject>, policy: Option<usize> },
    Error { pos: Pos, source: String, err: ReadError },
}

enum WriterMsg {
    Docs(Vec<Document>),
    Rejects(Vec<Reject>),
    EndShard { report: Box<RunReport>, pos: Pos },
}

/// Documents handed to the writer at a time (bounds memory between the stages).
const WRITE_CHUNK: usize = 1024;
/// Framed bytes per batch, besides the record count limit.
const BATCH_BYTES: usize = 32 << 20;

/// Test hook (only with the `test-hooks` feature): when this environment variable holds N, the
/// run stops with an error right after its N-th shard and `.progress.json` are durably written:
/// what a build killed at that point leaves behind (resume tests run the binary with it).
pub use crate::stage::test_hooks::STOP_AFTER_SHARDS_ENV;

/// Test hook (only with the `test-hooks` feature): every record of an input stream whose path
/// ends with this variable's value panics in the parse step, as a reader bug would. No real
/// input is known to panic a reader (the fuzz targets found none left), so the tests reach the
/// panic handling through this and [`PANIC_FRAMING_ENV`].
pub const PANIC_PARSING_ENV: &str = "CORETECH_TEST_PANIC_PARSING";

/// Test hook (only with the `test-hooks` feature): framing an input file whose path ends with
/// this variable's value panics right after its first record, as a framing bug would.
pub const PANIC_FRAMING_ENV: &str = "CORETECH_TEST_PANIC_FRAMING";

/// Panics when the hook variable `env` names `file` (test builds only).
fn test_panic(env: &'static str, file: &str) {
    #[cfg(feature = "test-hooks")]
    {
        static TARGETS: std::sync::OnceLock<[Option<String>; 2]> = std::sync::OnceLock::new();
        let targets =
            TARGETS.get_or_init(|| [PANIC_PARSING_ENV, PANIC_FRAMING_ENV].map(|v| std::env::var(v).ok().filter(|v| !v.is_empty())));
        let target = if env == PANIC_PARSING_ENV { &targets[0] } else { &targets[1] };
        if target.as_deref().is_some_and(|t| file.ends_with(t)) {
            panic!("test hook: {file} ({env} is set)");
        }
    }
    #[cfg(not(feature = "test-hooks"))]
    let _ = (env, file);
}

/// Runs the docs stage for one task. Returns the report (also written to `.report.json`).
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
    let range = task.range(all.len());
    let files: Vec<PathBuf> = all[range.clone()].to_vec();
    let names: Vec<(String, String)> = input_names(&cfg.inputs, &all)?[range].to_vec();
    let out_dir = st.dir().to_path_buf();
    st.set_fingerprint(
        &Fingerprint::new()
            .with("config", cfg)
            .with("strict", &strict)
            .with("task", &task)
            .with("ipc_scheme", &scheme.digest())
            .with_files("inputs", &files)?,
    );

    // This task's rejects folder (a multi-task build: one per task inside the configured one).
    let rejects_dir = if cfg.rejects {
        let base =
            cfg.rejects_dir().ok_or_else(|| Error::Other(format!("{}: no rejects folder (set `rejects_dir`)", cfg.output.display())))?;
        let dir = task.output_dir(&base);
        crate::stage::check_overlap(&dir, &cfg.inputs.iter().map(|i| glob_root(i)).collect::<Vec<_>>())?;
        Some(dir)
    } else {
        None
    };

    // Up to date (with its rejects folder), resumable, or fresh.
    if let Some(mut r) = st.up_to_date::<RunReport>() {
        if rejects_dir.as_ref().is_none_or(|d| rejects_up_to_date(d, st.fingerprint())) {
            r.elapsed_s = st.elapsed_s();
            return Ok(r);
        }
        tracing::warn!("{}: the rejects folder is missing or changed; rebuilding", out_dir.display());
    }
    let resumed = st.resume::<Progress>().filter(|p| {
        // Every finished shard must still be there, unchanged in size.
        p.shards.iter().all(|s| std::fs::metadata(out_dir.join(&s.file)).is_ok_and(|m| m.len() == s.bytes))
    });
    let (mut report, shards, start, rejected) = match resumed {
        Some(p) => {
            tracing::info!("{}: resuming after {} finished shards", out_dir.display(), p.shards.len());
            st.clean(|n| n == PROGRESS_FILE || p.shards.iter().any(|s| s.file == n))?;
            (p.report, p.shards, p.pos, p.rejects)
        }
        None => {
            st.clean(|_| false)?;
            (RunReport::new("docs"), Vec::new(), None, Vec::new())
        }
    };
    // The id check's sort spills here (one-task builds; removed when the check ends).
    st.claim(IDS_WORK_DIR)?;
    let rejects = match &rejects_dir {
        Some(dir) => Some(st.rejects(dir, &cfg.writer, rejected)?),
        None => None,
    };
    st.claim(&shard_name(shards.len()))?;
    st.save_progress(&Progress {
        shards: shards.clone(),
        pos: start,
        report: report.clone(),
        rejects: rejects.as_ref().map(|r| r.parts().to_vec()).unwrap_or_default(),
    })?;

    let policies = Policies::new(&cfg.clean, &cfg.policies, &cfg.policy_by_source, &cfg.policy_by_input, &cfg.inputs)?;
    let progress = Arc::new(AtomicU64::new(0));
    let total_bytes: u64 = files.iter().map(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)).sum();
    let bar = super::progress_bar(total_bytes, "docs");

    let (tx, rx) = sync_channel::<Vec<Event>>(4);
    let (wtx, wrx) = sync_channel::<WriterMsg>(4);
    let cx = ParseContext { cfg: &cfg.sources };

    let result: Result<(Vec<ShardInfo>, Option<RejectsWriter>)> = std::thread::scope(|s| {
        let framer = {
            let progress = progress.clone();
            let files = &files;
            s.spawn(move || frame_all(files, start, cfg, tx, progress))
        };
        let writer = {
            let st = &st;
            s.spawn(move || write_all(wrx, st, cfg, shards, rejects))
        };
        let mut pending: Vec<Document> = Vec::new();
        let mut pending_rejects: Vec<Reject> = Vec::new();
        // Rejects since the last shard end: the last part must end with the build too.
        let mut rejects_open = false;
        let mut in_shard: usize = 0;
        let mut last_pos = start.unwrap_or_default();
        let mut failure: Option<Error> = None;
        let mut file_ids = super::ids::FileIds::default();
        'batches: for batch in rx.iter() {
            let outcomes: Vec<Outcome> = batch.into_par_iter().map(|ev| process_caught(ev, &cx, cfg, scheme, &policies, &names)).collect();
            for o in outcomes {
                if let (Some(s), Outcome::Kept { pos, .. } | Outcome::Filtered { pos, .. } | Outcome::Error { pos, .. }) = (start, &o) {
                    if *pos <= s {
                        // Read again only for the file's ids (see `frame_all`).
                        if let Outcome::Kept { pos, mut doc, .. } = o {
                            file_ids.admit(pos.file, &mut doc);
                        }
                        continue;
                    }
                }
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
                    Outcome::Filtered { pos, reject, policy } => {
                        report.filtered(&reject.doc.source, &reject.reason);
                        if let Some(p) = policy {
                            report.policy(&reject.doc.source, policies.name(p));
                        }
                        last_pos = pos;
                        if cfg.rejects {
                            pending_rejects.push(*reject);
                            rejects_open = true;
                        }
                    }
                    Outcome::Error { pos, source, err } => {
                        last_pos = pos;
                        if strict {
                            failure = Some(Error::Read(err));
                            break 'batches;
                        }
                        report.error(&source, &err);
                    }
                    Outcome::Kept { pos, mut doc, policy } => {
                        last_pos = pos;
                        if let Some(notice) = file_ids.admit(pos.file, &mut doc) {
                            if strict {
                                failure = Some(Error::Read(notice));
                                break 'batches;
                            }
                            *report.source(&doc.source).id_collisions.entry(super::ids::RENAMED.into()).or_default() += 1;
                            report.sample(&notice);
                        }
                        report.policy(&doc.source, policies.name(policy));
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
                            rejects_open = false;
                            if (!pending_rejects.is_empty() && wtx.send(WriterMsg::Rejects(std::mem::take(&mut pending_rejects))).is_err())
                                || wtx.send(WriterMsg::EndShard { report: Box::new(report.clone()), pos }).is_err()
                            {
                                break 'batches;
                            }
                        }
                    }
                }
            }
            if pending_rejects.len() >= WRITE_CHUNK && wtx.send(WriterMsg::Rejects(std::mem::take(&mut pending_rejects))).is_err() {
                break 'batches;
            }
            bar.set_position(progress.load(Ordering::Relaxed));
        }
        if failure.is_none() && (in_shard > 0 || rejects_open) {
            let _ = wtx.send(WriterMsg::Docs(std::mem::take(&mut pending)));
            let _ = wtx.send(WriterMsg::Rejects(std::mem::take(&mut pending_rejects)));
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
    let (shards, rejects) = result?;
    if task.count == 1 {
        let paths: Vec<PathBuf> = shards.iter().map(|s| out_dir.join(&s.file)).collect();
        super::ids::check(&paths, &out_dir.join(IDS_WORK_DIR), strict, &mut report)?;
    }

    report.elapsed_s = st.elapsed_s();
    let mut manifest =
        Manifest { tool_version: env!("CARGO_PKG_VERSION").into(), shards, accounting: report.accounting(), ..Default::default() };
    manifest.info.insert("task_index".into(), task.index.into());
    manifest.info.insert("task_count".into(), task.count.into());
    manifest.info.insert("inputs".into(), files.len().into());
    // `merge` checks the ids across tasks as strictly as the tasks ran.
    manifest.info.insert(STRICT_KEY.into(), strict.into());
    if let Some(r) = rejects {
        r.finish(&mut manifest, report.accounting())?;
    }
    st.finish(manifest, &report)?;
    Ok(report)
}

/// The manifest `info` key recording whether the build ran strict.
pub const STRICT_KEY: &str = "strict";

/// The id check's work folder inside a one-task output (see [`super::ids`]).
const IDS_WORK_DIR: &str = ".ids-work/";

/// Shard file name of shard `n`.
pub fn shard_name(n: usize) -> String {
    format!("part-{n:05}.parquet")
}

/// [`process`], with a panic inside it (a reader, renderer or cleaner bug) caught at the record:
/// the record becomes a counted `reader-panic` error at its file, line and offset, and the build
/// goes on with the next record (`--strict` fails on it, as on any error). Only records parse
/// anything; a panic on another event is a bug of this module and goes on unwinding.
fn process_caught(
    ev: Event,
    cx: &ParseContext<'_>,
    cfg: &DocsConfig,
    scheme: &IpcScheme,
    policies: &Policies,
    names: &[(String, String)],
) -> Outcome {
    let at = match &ev {
        Event::Item { pos, format, raw: Ok(raw) } => Some((*pos, format.source(), raw.file.clone(), raw.offset, raw.line)),
        _ => None,
    };
    // Unwind safety: `process` shares only read-only state (config, scheme, policies); the
    // cleaner's per-thread scratch is a RefCell, released by the unwinding.
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| process(ev, cx, cfg, scheme, policies, names))) {
        Ok(o) => o,
        Err(payload) => {
            let Some((pos, source, file, offset, line)) = at else { std::panic::resume_unwind(payload) };
            let err = ReadError::new(
                Position::new(file.to_string(), Some(offset), Some(line)),
                ReadErrorKind::ReaderPanic,
                format!("the {source} reader panicked on this record ({}); the record is skipped", panic_message(&*payload)),
            );
            Outcome::Error { pos, source: source.into(), err }
        }
    }
}

/// The message of a caught panic (`panic!` with a literal or a formatted string).
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".into())
}

fn process(
    ev: Event,
    cx: &ParseContext<'_>,
    cfg: &DocsConfig,
    scheme: &IpcScheme,
    policies: &Policies,
    names: &[(String, String)],
) -> Outcome {
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
            test_panic(PANIC_PARSING_ENV, &raw.file);
            let mut doc = match format.parse(&raw, cx) {
                Ok(Record::Doc(d)) => d,
                Ok(Record::Patent(p)) => render_patent(&p, &cfg.render, Some(scheme)),
                Ok(Record::Skip { reason, id }) => {
                    // Nothing but its id to keep: its rejects row says where it is.
                    let mut meta = Meta::new();
                    meta.insert(PROVENANCE_KEY.into(), provenance(&raw));
                    let doc = Document { id: format!("{source}:{id}"), source: source.into(), meta, ..Default::default() };
                    return Outcome::Filtered { pos, reject: Box::new(Reject { doc, reason, ..Default::default() }), policy: None };
                }
                Err(err) => return Outcome::Error { pos, source: source.into(), err },
            };
            doc.meta.insert(PROVENANCE_KEY.into(), provenance(&raw));
            let (name, entry) = &names[pos.file as usize];
            if doc.meta.get(ID_FROM_KEY).and_then(|v| v.as_str()) == Some(ID_FROM_POSITION) {
                namespace_id(&mut doc, &raw.file, name);
            }
            let policy = policies.select(Some(entry), &doc.source);
            match policies.cleaner(policy).apply(&mut doc) {
                Ok(()) => Outcome::Kept { pos, doc, policy },
                Err(reason) => {
                    Outcome::Filtered { pos, reject: Box::new(Reject { doc, reason, ..Default::default() }), policy: Some(policy) }
                }
            }
        }
    }
}

/// Where a record came from: its input stream (path as expanded from `inputs`; archives
/// `archive.zip!member`), its index in the stream (from 0) and its byte offset.
fn provenance(raw: &crate::io::RawRecord) -> serde_json::Value {
    serde_json::json!({ "input": &*raw.file, "record": raw.index, "offset": raw.offset })
}

/// `wudao:7` read from `data/a.json` under the input entry `data` → `wudao:a.json:7`. `name`
/// is the file's path within its input entry; an archive member keeps its `!member` suffix.
fn namespace_id(doc: &mut Document, stream: &str, name: &str) {
    let prefix = format!("{}:", doc.source);
    let native = doc.id.strip_prefix(&prefix).unwrap_or(&doc.id);
    let member = stream.rfind('!').map(|i| &stream[i..]).unwrap_or("");
    doc.id = format!("{prefix}{name}{member}:{native}");
}

/// For each file (as [`expand_inputs`] lists them), its path relative to the input entry it
/// came from (a directory entry → the path inside it; a glob → the path below its literal
/// root; a file entry → its file name), and that entry. Independent of where the data lies, so
/// ids made from it are the same in every checkout.
fn input_names(inputs: &[String], files: &[PathBuf]) -> Result<Vec<(String, String)>> {
    let mut names: Vec<Option<(String, String)>> = vec![None; files.len()];
    let index: HashMap<&Path, usize> = files.iter().enumerate().map(|(i, f)| (f.as_path(), i)).collect();
    for entry in inputs {
        let root = if entry.contains(['*', '?', '[']) {
            glob_root(entry)
        } else if Path::new(entry).is_dir() {
            PathBuf::from(entry)
        } else {
            Path::new(entry).parent().map(Path::to_path_buf).unwrap_or_default()
        };
        for f in expand_inputs(std::slice::from_ref(entry), Path::new("."))? {
            if let Some(&i) = index.get(f.as_path()) {
                if names[i].is_none() {
                    let rel = f.strip_prefix(&root).unwrap_or(&f);
                    names[i] = Some((rel.to_string_lossy().into_owned(), entry.clone()));
                }
            }
        }
    }
    Ok(names
        .into_iter()
        .zip(files)
        .map(|(n, f)| n.unwrap_or_else(|| (f.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(), String::new())))
        .collect())
}

/// Frames every file in order into batches of events, skipping everything up to `start`.
/// A panic while a file is framed (a framing or decoding bug) is caught at the file: what was
/// framed before it is kept, the file's rest is skipped as one counted `reader-panic` error
/// naming it, and the next file is read.
fn frame_all(files: &[PathBuf], start: Option<Pos>, cfg: &DocsConfig, tx: SyncSender<Vec<Event>>, progress: Arc<AtomicU64>) -> Result<()> {
    let mut batch: Vec<Event> = Vec::new();
    let mut batch_bytes = 0usize;
    let mut open = true; // false once the consumer hung up
    let after_start = |pos: Pos| start.is_none_or(|s| pos > s);
    // A resumed build reads the records of its current file before the resume point again
    // (they are not counted or written): the file's id renaming must see them (`FileIds`).
    let replayed = |pos: Pos| start.is_some_and(|s| pos.file == s.file && pos <= s);
    for (fi, path) in files.iter().enumerate() {
        if !open {
            break;
        }
        let fi = fi as u32;
        if start.is_some_and(|s| fi < s.file) {
            continue;
        }
        // Streams begun in this file (an error after them sorts after their records).
        let mut si: u32 = 0;
        // Unwind safety: after a panic `batch` holds whole events only (each is pushed whole),
        // and the file's reader state is dropped with the closure.
        let framed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            frame_file(path, fi, &mut si, &after_start, &replayed, cfg, &tx, &progress, &mut batch, &mut batch_bytes, &mut open)
        }));
        if let Err(payload) = framed {
            let pos = Pos { file: fi, stream: si.max(1), item: 0 };
            if after_start(pos) {
                let err = ReadError::new(
                    Position::new(path.display().to_string(), None, None),
                    ReadErrorKind::ReaderPanic,
                    format!(
                        "reading this file panicked ({}); the records framed before it are kept, the rest of the file is skipped",
                        panic_message(&*payload)
                    ),
                );
                batch.push(Event::FileError { pos, err });
            }
        }
    }
    if open && !batch.is_empty() {
        let _ = tx.send(batch);
    }
    Ok(())
}

/// Frames file `fi` into `batch` (sending full batches; `open` turns false when the consumer
/// hung up); `si` counts the streams begun.
#[allow(clippy::too_many_arguments)]
fn frame_file(
    path: &Path,
    fi: u32,
    si: &mut u32,
    after_start: &dyn Fn(Pos) -> bool,
    replayed: &dyn Fn(Pos) -> bool,
    cfg: &DocsConfig,
    tx: &SyncSender<Vec<Event>>,
    progress: &Arc<AtomicU64>,
    batch: &mut Vec<Event>,
    batch_bytes: &mut usize,
    open: &mut bool,
) {
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
            if !after_start(pos) && !replayed(pos) {
                return true;
            }
            *batch_bytes += raw.as_ref().map(|r| r.bytes.len()).unwrap_or(0);
            batch.push(Event::Item { pos, format: &GenericParquet, raw });
            if batch.len() >= cfg.batch_records || *batch_bytes >= BATCH_BYTES {
                *batch_bytes = 0;
                if tx.send(std::mem::take(batch)).is_err() {
                    *open = false;
                    return false;
                }
            }
            true
        });
        progress.fetch_add(size, Ordering::Relaxed);
        return;
    }
    let res = for_each_stream(path, progress, |stream| {
        let stream_idx = *si;
        *si += 1;
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
            if !after_start(pos) && !replayed(pos) {
                return true;
            }
            *batch_bytes += raw.as_ref().map(|r| r.bytes.len()).unwrap_or(0);
            batch.push(Event::Item { pos, format, raw });
            if item == 1 {
                test_panic(PANIC_FRAMING_ENV, &path.to_string_lossy());
            }
            if batch.len() >= cfg.batch_records || *batch_bytes >= BATCH_BYTES {
                *batch_bytes = 0;
                if tx.send(std::mem::take(batch)).is_err() {
                    *open = false;
                    return false;
                }
            }
            true
        });
        Ok(())
    });
    if let Err(e) = res {
        let pos = Pos { file: fi, stream: *si, item: 0 };
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

/// Receives documents, rejects and shard boundaries; writes shards, rejects parts and the
/// progress file.
fn write_all<'a>(
    rx: Receiver<WriterMsg>,
    st: &Stage,
    cfg: &DocsConfig,
    mut shards: Vec<ShardInfo>,
    mut rejects: Option<RejectsWriter<'a>>,
) -> Result<(Vec<ShardInfo>, Option<RejectsWriter<'a>>)> {
    let mut current: Option<ShardWriter> = None;
    let stop_after = test_hooks::stop_after_shards();
    for msg in rx {
        match msg {
            WriterMsg::Docs(docs) => {
                if docs.is_empty() {
                    continue;
                }
                if current.is_none() {
                    // Claimed (and saved) with the previous progress.
                    current = Some(ShardWriter::create(&st.dir().join(shard_name(shards.len())), documents::schema(), &cfg.writer)?);
                }
                current.as_mut().unwrap().write(&documents::to_batch(&docs))?;
            }
            WriterMsg::Rejects(r) => {
                if let Some(w) = rejects.as_mut() {
                    w.write(&r)?;
                }
            }
            WriterMsg::EndShard { report, pos } => {
                if let Some(w) = current.take() {
                    shards.push(w.finish()?);
                }
                if let Some(w) = rejects.as_mut() {
                    w.end_part()?;
                }
                st.claim(&shard_name(shards.len()))?;
                let parts = rejects.as_ref().map(|r| r.parts().to_vec()).unwrap_or_default();
                st.save_progress(&Progress { shards: shards.clone(), pos: Some(pos), report: *report, rejects: parts })?;
                if stop_after.is_some_and(|n| shards.len() >= n) {
                    return Err(Error::Other(format!("stopped after {} shards ({STOP_AFTER_SHARDS_ENV} is set)", shards.len())));
                }
            }
        }
    }
    Ok((shards, rejects))
}
