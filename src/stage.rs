//! The stage skeleton every corpus stage (`docs`, `dedup`, `pack`, `sft`) runs in: it owns the
//! output folder and everything about it that is not the stage's own work.
//!
//! [`Stage::open`] refuses an output that is, holds or sits inside one of the stage's inputs,
//! takes the folder's lock ([`crate::core::lock`]) and works out which files in it this stage
//! wrote — from its `.progress.json` (an interrupted build) or its `.manifest.json` (a finished
//! one). A non-empty folder holding neither is refused unless `force` is set, and even then its
//! files are never deleted or overwritten. Then the stage's [`Fingerprint`] decides:
//! [`Stage::up_to_date`] (the finished output matches: skip), [`Stage::resume`] (an interrupted
//! build of the same fingerprint: go on from its last saved state), or a fresh build, which
//! first removes what this stage wrote earlier ([`Stage::clean`]).
//!
//! Ownership is a list of names. Before a stage creates a file it claims the name
//! ([`Stage::claim`]) and saves its progress ([`Stage::save_progress`]), so the list on disk
//! always covers every file that may exist, including one a kill interrupted; `NAME.tmp`
//! belongs with `NAME`, and a name ending in `/` covers a whole folder the stage made. Claiming
//! a name that exists and is not ours fails. [`Stage::finish`] writes the manifest (which lists
//! what the finished build owns), `.report.json`, removes leftovers it owned, and drops the
//! progress file. The modelled shape is datatrove's `PipelineStep` and torchtitan's components:
//! one object per run that holds the plumbing, the stage keeps only its own work.

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::core::fsio::{tmp_path, write_atomic, write_json_atomic};
use crate::core::lock::{OutputLock, LOCK_FILE};
use crate::core::Fingerprint;
use crate::doc::Reject;
use crate::error::{Error, Result};
use crate::shard::{documents, Manifest, ShardInfo, ShardWriter, WriterConfig};

/// The progress file of an interrupted build (dot-prefixed like every side file of an output
/// folder, so loaders see only the shards: see [`crate::shard::manifest`]).
pub const PROGRESS_FILE: &str = ".progress.json";
/// The manifest of a finished build (its home is [`crate::shard::manifest`]).
pub use crate::shard::manifest::MANIFEST_FILE;
/// The run report of a finished build.
pub const REPORT_FILE: &str = ".report.json";
/// The side files' names before they were dot-prefixed: a folder a stage wrote under those
/// names is still recognised as that stage's, and its next run removes them.
const LEGACY_SIDE_FILES: [(&str, &str); 3] =
    [(PROGRESS_FILE, "progress.json"), (MANIFEST_FILE, crate::shard::manifest::LEGACY_MANIFEST_FILE), (REPORT_FILE, "report.json")];

/// What a stage declares before it starts.
#[derive(Debug, Clone)]
pub struct StageSpec {
    /// Stage name (`docs`, `dedup`, `pack`, `sft`), recorded in its manifest and progress file.
    pub name: &'static str,
    /// The kind of the manifest it writes (`documents`, `tokens`, `sft`).
    pub kind: &'static str,
    /// The folder this process writes (a task's folder in a multi-task build).
    pub dir: PathBuf,
    /// The configured output (the parent of the task folders), checked against the inputs.
    pub output: PathBuf,
    /// Every path the stage reads: input files and folders, glob roots, reference folders.
    pub inputs: Vec<PathBuf>,
    /// Write into a non-empty folder this stage did not create (its files stay untouched).
    pub force: bool,
}

/// `.progress.json`: the stage's saved state and the names it owns.
#[derive(Debug, Serialize, Deserialize)]
struct Envelope<P> {
    stage: String,
    fingerprint: String,
    owned: BTreeSet<String>,
    state: P,
}

/// One run of a stage in its output folder (holds the folder's lock until dropped).
#[derive(Debug)]
pub struct Stage {
    name: &'static str,
    kind: &'static str,
    dir: PathBuf,
    fingerprint: String,
    owned: Mutex<BTreeSet<String>>,
    /// The state of the last progress save (kept when only the owned names change).
    last_state: Mutex<serde_json::Value>,
    started: Instant,
    _lock: OutputLock,
}

impl Stage {
    /// Checks the output against the inputs, locks it, and finds what in it this stage owns.
    pub fn open(spec: StageSpec) -> Result<Stage> {
        let started = Instant::now();
        check_overlap(&spec.output, &spec.inputs)?;
        if spec.dir != spec.output {
            check_overlap(&spec.dir, &spec.inputs)?;
        }
        // Refused before anything is created, so a refused folder is left exactly as it was.
        if spec.dir.is_dir() {
            not_ours(&spec, &owned_files(&spec.dir, spec.name, spec.kind))?;
        }
        std::fs::create_dir_all(&spec.dir).map_err(|e| Error::io(&spec.dir, e))?;
        let lock = OutputLock::acquire(&spec.dir)?;
        // Again under the lock: another run may have changed the folder in between.
        let owned = owned_files(&spec.dir, spec.name, spec.kind);
        not_ours(&spec, &owned)?;
        Ok(Stage {
            name: spec.name,
            kind: spec.kind,
            dir: spec.dir,
            fingerprint: String::new(),
            owned: Mutex::new(owned),
            last_state: Mutex::new(serde_json::Value::Null),
            started,
            _lock: lock,
        })
    }

    /// Sets what the output depends on; call before [`Stage::up_to_date`] and [`Stage::resume`].
    pub fn set_fingerprint(&mut self, fp: &Fingerprint) {
        self.fingerprint = fp.hash();
    }

    /// The fingerprint's hash (the manifest's `config_hash`).
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The folder this run writes.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Seconds since [`Stage::open`].
    pub fn elapsed_s(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// The finished build's report when the folder holds a finished build of this stage with
    /// the same fingerprint and every file its manifest lists is present at its size.
    pub fn up_to_date<R: DeserializeOwned>(&self) -> Option<R> {
        let m = Manifest::load(&self.dir).ok()?;
        if m.stage != self.name || m.kind != self.kind || m.config_hash != self.fingerprint {
            return None;
        }
        let shards_ok = m.shards.iter().all(|s| std::fs::metadata(self.dir.join(&s.file)).is_ok_and(|md| md.len() == s.bytes));
        let files_ok = m.files.iter().all(|f| self.dir.join(f.trim_end_matches('/')).exists());
        if !shards_ok || !files_ok {
            tracing::warn!("{}: files of the finished build are missing or changed; rebuilding", self.dir.display());
            return None;
        }
        let r = serde_json::from_slice(&std::fs::read(self.dir.join(REPORT_FILE)).ok()?).ok()?;
        tracing::info!("{}: up to date (same inputs, referenced files and options)", self.dir.display());
        Some(r)
    }

    /// The saved state of an interrupted build with the same fingerprint, if any.
    pub fn resume<P: DeserializeOwned>(&self) -> Option<P> {
        let bytes = std::fs::read(self.dir.join(PROGRESS_FILE)).ok()?;
        let env: Envelope<P> = serde_json::from_slice(&bytes).ok()?;
        if env.stage != self.name {
            return None;
        }
        if env.fingerprint != self.fingerprint {
            tracing::warn!("{}: inputs, referenced files or options changed since the interrupted run; starting over", self.dir.display());
            return None;
        }
        Some(env.state)
    }

    /// Whether `rel` (a path relative to the folder) is this stage's.
    pub fn owns(&self, rel: &str) -> bool {
        owns(&self.owned.lock().unwrap(), rel)
    }

    /// Claims `rel` before the stage writes it (a name ending in `/` claims a folder it makes).
    /// Fails if it exists and is not this stage's. Persisted by the next [`Stage::save_progress`],
    /// which must come before the file is created.
    pub fn claim(&self, rel: &str) -> Result<()> {
        let mut owned = self.owned.lock().unwrap();
        if owns(&owned, rel) {
            return Ok(());
        }
        let path = self.dir.join(rel.trim_end_matches('/'));
        if path.symlink_metadata().is_ok() {
            return Err(Error::Other(format!(
                "{}: exists and was not written by this stage; it is never overwritten (move it away or choose another output)",
                path.display()
            )));
        }
        owned.insert(rel.to_string());
        Ok(())
    }

    /// Saves `state` with the fingerprint and the owned names (atomically).
    pub fn save_progress<P: Serialize>(&self, state: &P) -> Result<()> {
        *self.last_state.lock().unwrap() = serde_json::to_value(state).expect("progress serializes");
        self.save_owned()?;
        test_hooks::after_progress_save()
    }

    /// Persists the owned names (with the last saved state).
    fn save_owned(&self) -> Result<()> {
        self.claim(PROGRESS_FILE)?;
        let owned = self.owned.lock().unwrap().clone();
        let state = self.last_state.lock().unwrap().clone();
        let env = Envelope { stage: self.name.to_string(), fingerprint: self.fingerprint.clone(), owned, state };
        write_atomic(&self.dir.join(PROGRESS_FILE), &serde_json::to_vec(&env).expect("progress serializes"))
    }

    /// Removes every file this stage owns for which `keep` is false (and the temp file of
    /// every owned name). Files it does not own are never touched.
    pub fn clean(&self, keep: impl Fn(&str) -> bool) -> Result<()> {
        let owned = self.owned.lock().unwrap().clone();
        for name in &owned {
            let path = self.dir.join(name.trim_end_matches('/'));
            if !keep(name) {
                remove(&path)?;
            }
            remove(&tmp_path(&path))?;
        }
        Ok(())
    }

    /// Ends a build: writes `manifest` (stamped with the stage name and fingerprint) and
    /// `.report.json`, removes owned files the manifest does not list, drops the progress file.
    pub fn finish<R: Serialize>(self, mut manifest: Manifest, report: &R) -> Result<()> {
        manifest.stage = self.name.to_string();
        manifest.kind = self.kind.to_string();
        manifest.config_hash = self.fingerprint.clone();
        let keep: BTreeSet<String> = manifest_owned(&manifest);
        for f in &keep {
            self.claim(f)?;
        }
        self.save_owned()?;
        self.clean(|n| keep.contains(n) || n == PROGRESS_FILE)?;
        manifest.save(&self.dir)?;
        // The report repeats what the build owns, so a folder whose manifest was lost is still
        // recognised as this stage's.
        let mut value = serde_json::to_value(report).expect("report serializes");
        if let Some(o) = value.as_object_mut() {
            o.insert(REPORT_OWNED_KEY.into(), serde_json::json!({ "stage": self.name, "files": keep }));
        }
        write_json_atomic(&self.dir.join(REPORT_FILE), &value)?;
        remove(&self.dir.join(PROGRESS_FILE))
    }
}

/// The suffix of the default rejects folder, beside the output: `OUTPUT.rejects/` (outside
/// the output, so `datasets.load_dataset("parquet", data_dir=OUTPUT)` and folder scans of the
/// output see only its shards).
pub const REJECTS_SUFFIX: &str = ".rejects";

/// The default rejects folder of `output`: its sibling `OUTPUT.rejects` (for `.`, the name of
/// the folder it stands for). `None` when the output has no folder name (`/`).
pub fn default_rejects_dir(output: &Path) -> Option<PathBuf> {
    beside(output, REJECTS_SUFFIX)
}

/// The sibling of `output` named `OUTPUT{suffix}`: where a stage puts what is not a shard of its
/// output (for `.`, the name of the folder it stands for). `None` when the output has no folder
/// name (`/`).
pub fn beside(output: &Path, suffix: &str) -> Option<PathBuf> {
    let name = output.file_name().map(|n| n.to_os_string()).or_else(|| resolve(output).file_name().map(|n| n.to_os_string()))?;
    let mut name = name;
    name.push(suffix);
    let parent = match output.file_name() {
        Some(_) => output.parent().map(Path::to_path_buf).unwrap_or_default(),
        None => resolve(output).parent().map(Path::to_path_buf).unwrap_or_default(),
    };
    Some(parent.join(name))
}

/// The rejects writer of a stage: every document the stage drops, with the reason, in
/// Parquet parts (`part-NNNNN.parquet`, [`documents::rejects_schema`]) and a manifest, in a
/// folder of its own beside the output. Parts end where the stage saves its progress
/// ([`RejectsWriter::end_part`]), so a resumed build keeps the parts saved with its progress
/// and writes the rest again: the same bytes as an uninterrupted build. The one writer of
/// rejected documents: the docs and dedup stages both write through it.
pub struct RejectsWriter<'a> {
    stage: &'a Stage,
    dir: PathBuf,
    cfg: WriterConfig,
    current: Option<RejectsPart>,
    parts: Vec<ShardInfo>,
    rows: u64,
}

/// One part of a rejects folder (`part-NNNNN.parquet`), its file created on the first write.
pub struct RejectsPart {
    stage: &'static str,
    path: PathBuf,
    cfg: WriterConfig,
    writer: Option<ShardWriter>,
}

impl RejectsPart {
    /// Writes rejects into the part.
    pub fn write(&mut self, rejects: &[Reject]) -> Result<()> {
        if rejects.is_empty() {
            return Ok(());
        }
        if self.writer.is_none() {
            self.writer = Some(ShardWriter::create(&self.path, documents::rejects_schema(), &self.cfg)?);
        }
        self.writer.as_mut().expect("opened above").write(&documents::rejects_to_batch(self.stage, rejects))
    }

    /// Finishes the part; `None` when nothing was written (no file was made).
    pub fn finish(self) -> Result<Option<ShardInfo>> {
        self.writer.map(ShardWriter::finish).transpose()
    }
}

/// The number `n` of a part named `part-n.parquet`.
fn part_number(name: &str) -> Option<u64> {
    name.strip_prefix("part-")?.strip_suffix(".parquet")?.parse().ok()
}

/// Whether `name` is a file a rejects writer makes (its parts, its manifest, their temp files).
fn is_rejects_file(name: &str) -> bool {
    let base = name.strip_suffix(".tmp").unwrap_or(name);
    base == MANIFEST_FILE
        || base
            .strip_prefix("part-")
            .and_then(|r| r.strip_suffix(".parquet"))
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

impl Stage {
    /// Opens the rejects folder `dir` (created if absent), keeping the parts of `resumed` (from
    /// the saved progress) and removing the other parts a rejects writer left there. A folder
    /// holding any other file, or the finished rejects of another stage (two stages given one
    /// `rejects_dir`), is refused (nothing in it is touched).
    pub fn rejects(&self, dir: &Path, cfg: &WriterConfig, resumed: Vec<ShardInfo>) -> Result<RejectsWriter<'_>> {
        self.check_rejects(dir)?;
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        // The parts not saved with the progress are leftovers of a killed run (or of an older
        // build): the folder is rewritten from here.
        for name in entries(dir)? {
            if !resumed.iter().any(|p| p.file == name) {
                remove(&dir.join(&name))?;
            }
        }
        let rows = resumed.iter().map(|p| p.rows).sum();
        Ok(RejectsWriter { stage: self, dir: dir.to_path_buf(), cfg: cfg.clone(), current: None, parts: resumed, rows })
    }

    /// The checks of [`Stage::rejects`] alone (touching nothing), for a stage that refuses a bad
    /// rejects folder before its work rather than when it first writes there.
    pub fn check_rejects(&self, dir: &Path) -> Result<()> {
        let (out, rej) = (resolve(&self.dir), resolve(dir));
        if rej == out || rej.starts_with(&out) || out.starts_with(&rej) {
            return Err(Error::Other(format!(
                "rejects folder {} overlaps the output {}: it goes beside the output (readers of the output folder would take \
                 the rejects for documents); choose another `rejects_dir`",
                dir.display(),
                self.dir.display()
            )));
        }
        if dir.is_dir() {
            let foreign: Vec<String> = entries(dir)?.into_iter().filter(|n| !is_rejects_file(n)).collect();
            if !foreign.is_empty() {
                return Err(Error::Other(format!(
                    "{}: the rejects folder holds files no rejects writer made ({}); choose an empty or new `rejects_dir` \
                     (they are never deleted or overwritten)",
                    dir.display(),
                    foreign.iter().take(5).cloned().collect::<Vec<_>>().join(", ")
                )));
            }
            if let Some(m) = Manifest::load(dir).ok().filter(|m| m.kind == REJECTS_KIND && m.stage != self.name) {
                return Err(Error::Other(format!(
                    "{}: holds the rejects of the {} stage; give the {} stage a `rejects_dir` of its own (they are never \
                     deleted or overwritten)",
                    dir.display(),
                    m.stage,
                    self.name
                )));
            }
        }
        Ok(())
    }
}

impl RejectsWriter<'_> {
    /// Writes rejects into the current part (`part-NNNNN.parquet`, numbered in the order the
    /// parts end; started on first use).
    pub fn write(&mut self, rejects: &[Reject]) -> Result<()> {
        if self.current.is_none() {
            self.current = Some(self.unit_part(self.parts.len()));
        }
        self.rows += rejects.len() as u64;
        self.current.as_mut().expect("opened above").write(rejects)
    }

    /// Finishes the current part (call before the stage saves its progress).
    pub fn end_part(&mut self) -> Result<()> {
        if let Some(p) = self.current.take() {
            self.parts.extend(p.finish()?);
        }
        Ok(())
    }

    /// The part of unit `n` of a stage that works on its units in parallel (the dedup filter:
    /// one part per input shard), `part-{n:05}.parquet`: its bytes depend on the unit alone, not
    /// on the order the units finish. Hand the finished part to [`RejectsWriter::add_part`];
    /// save it with the stage's progress as [`RejectsWriter::parts`] are.
    pub fn unit_part(&self, n: usize) -> RejectsPart {
        RejectsPart { stage: self.stage.name, path: self.dir.join(format!("part-{n:05}.parquet")), cfg: self.cfg.clone(), writer: None }
    }

    /// Adds a finished unit part (the manifest lists the parts by number, whatever order they
    /// were added in).
    pub fn add_part(&mut self, part: ShardInfo) {
        self.rows += part.rows;
        self.parts.push(part);
    }

    /// The finished parts (saved with the stage's progress).
    pub fn parts(&self) -> &[ShardInfo] {
        &self.parts
    }

    /// Rows written so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Ends the last part, writes the folder's `manifest.json` (the parts and `accounting`, the
    /// stage's counts the rows must add up to) and names the folder (`rejects_dir`, as given)
    /// and its row count (`rejects`) in the stage's `manifest`.
    pub fn finish(mut self, manifest: &mut Manifest, accounting: serde_json::Value) -> Result<()> {
        self.end_part()?;
        self.parts.sort_by_key(|p| part_number(&p.file));
        let m = Manifest {
            kind: REJECTS_KIND.into(),
            stage: self.stage.name.into(),
            tool_version: env!("CARGO_PKG_VERSION").into(),
            config_hash: self.stage.fingerprint.clone(),
            shards: self.parts.clone(),
            accounting,
            ..Default::default()
        };
        m.save(&self.dir)?;
        manifest.info.insert(REJECTS_DIR_KEY.into(), self.dir.display().to_string().into());
        manifest.info.insert("rejects".into(), self.rows.into());
        Ok(())
    }
}

/// The manifest kind of a rejects folder.
pub const REJECTS_KIND: &str = "rejects";
/// The stage manifest's `info` key naming its rejects folder.
pub const REJECTS_DIR_KEY: &str = "rejects_dir";

/// Whether the rejects folder `dir` holds the finished rejects of the build with `fingerprint`
/// (every part present at its size).
pub fn rejects_up_to_date(dir: &Path, fingerprint: &str) -> bool {
    Manifest::load(dir).is_ok_and(|m| {
        m.kind == REJECTS_KIND
            && m.config_hash == fingerprint
            && m.shards.iter().all(|s| std::fs::metadata(dir.join(&s.file)).is_ok_and(|md| md.len() == s.bytes))
    })
}

/// Refuses a non-empty folder this stage owns nothing in, unless forced.
fn not_ours(spec: &StageSpec, owned: &BTreeSet<String>) -> Result<()> {
    let others: Vec<String> = entries(&spec.dir)?.into_iter().filter(|n| !owns(owned, n)).collect();
    if !owned.is_empty() || others.is_empty() || spec.force {
        return Ok(());
    }
    let shown: Vec<&str> = others.iter().take(5).map(String::as_str).collect();
    Err(Error::Other(format!(
        "{}: the output folder holds files this stage did not write ({}{}); choose an empty or new folder, or pass --force to \
         write beside them (they are never deleted or overwritten)",
        spec.dir.display(),
        shown.join(", "),
        if others.len() > shown.len() { format!(" and {} more", others.len() - shown.len()) } else { String::new() }
    )))
}

/// What a finished build's manifest says it owns: its shards, its extra files, the manifest
/// and the report.
fn manifest_owned(m: &Manifest) -> BTreeSet<String> {
    let mut s: BTreeSet<String> = m.shards.iter().map(|s| s.file.clone()).collect();
    s.extend(m.files.iter().cloned());
    s.insert(MANIFEST_FILE.into());
    s.insert(REPORT_FILE.into());
    s
}

/// The key of `.report.json` that repeats the files a finished build owns.
pub const REPORT_OWNED_KEY: &str = "output_files";

/// The names this stage owns in `dir`: from its progress file, else its manifest, else (a
/// manifest lost) its report; a manifest written before manifests named their stage counts
/// when its kind and shape are this stage's.
fn owned_files(dir: &Path, name: &str, kind: &str) -> BTreeSet<String> {
    let mut owned = owned_files_named(dir, name, kind, |f| f);
    if owned.is_empty() {
        // A folder of the old layout: owned through its old side files, which are owned too
        // (so the next build removes them).
        let legacy = |f: &'static str| LEGACY_SIDE_FILES.iter().find(|(new, _)| *new == f).map_or(f, |(_, old)| *old);
        owned = owned_files_named(dir, name, kind, legacy);
        if !owned.is_empty() {
            owned.extend(LEGACY_SIDE_FILES.iter().map(|(_, old)| old.to_string()).filter(|old| dir.join(old).exists()));
        }
    }
    owned
}

/// [`owned_files`] with the side files named by `side` (the current names, or the old ones).
fn owned_files_named(dir: &Path, name: &str, kind: &str, side: impl Fn(&'static str) -> &'static str) -> BTreeSet<String> {
    if let Some(env) =
        std::fs::read(dir.join(side(PROGRESS_FILE))).ok().and_then(|b| serde_json::from_slice::<Envelope<serde_json::Value>>(&b).ok())
    {
        if env.stage == name {
            let mut o = env.owned;
            o.insert(PROGRESS_FILE.into());
            return o;
        }
        return BTreeSet::new();
    }
    let manifest = dir.join(side(MANIFEST_FILE));
    if let Some(m) = std::fs::read(&manifest).ok().and_then(|b| Manifest::parse(&b, &manifest).ok()) {
        return if m.stage == name || (m.stage.is_empty() && m.kind == kind && legacy_stage(&m) == name) {
            manifest_owned(&m)
        } else {
            BTreeSet::new()
        };
    }
    let report = std::fs::read(dir.join(side(REPORT_FILE))).ok().and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok());
    match report.as_ref().map(|r| &r[REPORT_OWNED_KEY]) {
        Some(o) if o["stage"] == name => o["files"].as_array().into_iter().flatten().filter_map(|f| f.as_str().map(String::from)).collect(),
        _ => BTreeSet::new(),
    }
}

/// The stage that wrote a manifest from before manifests carried `stage`.
fn legacy_stage(m: &Manifest) -> &'static str {
    match m.kind.as_str() {
        "documents" if m.info.contains_key("duplicates") => "dedup",
        "documents" => "docs",
        "tokens" => "pack",
        _ => "",
    }
}

fn owns(owned: &BTreeSet<String>, rel: &str) -> bool {
    if owned.contains(rel) {
        return true;
    }
    if let Some(base) = rel.strip_suffix(".tmp") {
        if owned.contains(base) {
            return true;
        }
    }
    owned.iter().any(|o| o.ends_with('/') && (rel.starts_with(o.as_str()) || rel == o.trim_end_matches('/')))
}

/// Top-level names in `dir`, without the lock file.
fn entries(dir: &Path) -> Result<Vec<String>> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != LOCK_FILE)
        .collect();
    v.sort();
    Ok(v)
}

fn remove(path: &Path) -> Result<()> {
    let Ok(md) = path.symlink_metadata() else { return Ok(()) };
    let r = if md.is_dir() { std::fs::remove_dir_all(path) } else { std::fs::remove_file(path) };
    match r {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(path, e)),
    }
}

/// `path` made absolute, `.`/`..` resolved, and its longest existing prefix canonicalized
/// (symlinks followed), so two spellings of one place compare equal.
pub fn resolve(path: &Path) -> PathBuf {
    let abs = if path.is_absolute() { path.to_path_buf() } else { std::env::current_dir().unwrap_or_default().join(path) };
    let mut lexical = PathBuf::new();
    for c in abs.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                lexical.pop();
            }
            other => lexical.push(other),
        }
    }
    let mut existing = lexical.clone();
    let mut rest: Vec<std::ffi::OsString> = Vec::new();
    while existing.symlink_metadata().is_err() {
        match existing.file_name() {
            Some(n) => rest.push(n.to_owned()),
            None => break,
        }
        existing.pop();
    }
    let mut out = existing.canonicalize().unwrap_or(existing);
    for n in rest.into_iter().rev() {
        out.push(n);
    }
    out
}

/// The part of an input pattern before its first glob component (`data/*.jsonl` → `data`).
pub fn glob_root(pattern: &str) -> PathBuf {
    let mut root = PathBuf::new();
    for c in Path::new(pattern).components() {
        if c.as_os_str().to_string_lossy().contains(['*', '?', '[', '{']) {
            break;
        }
        root.push(c);
    }
    if root.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        root
    }
}

/// Refuses an output that is one of the inputs, sits inside one, or holds one.
pub fn check_overlap(output: &Path, inputs: &[PathBuf]) -> Result<()> {
    if output.as_os_str().is_empty() {
        return Err(Error::Other("the output folder is empty (set `output`)".into()));
    }
    let out = resolve(output);
    for input in inputs {
        let inp = resolve(input);
        let why = if out == inp {
            "is the input"
        } else if out.starts_with(&inp) {
            "is inside the input"
        } else if inp.starts_with(&out) {
            "holds the input"
        } else {
            continue;
        };
        return Err(Error::Other(format!(
            "output {} {why} {}: a stage never writes where it reads (nothing was touched; choose another output)",
            output.display(),
            input.display()
        )));
    }
    Ok(())
}

/// Hooks that let tests stop a build at a chosen point, as a kill would: compiled only with
/// the `test-hooks` feature (the test build turns it on), a no-op otherwise.
pub mod test_hooks {
    use crate::error::Result;

    /// The environment variable that stops the docs stage after N shards
    /// (`CORETECH_TEST_STOP_AFTER_SHARDS`; read only with the `test-hooks` feature).
    pub const STOP_AFTER_SHARDS_ENV: &str = "CORETECH_TEST_STOP_AFTER_SHARDS";

    #[cfg(feature = "test-hooks")]
    thread_local! {
        static INTERRUPT_AFTER: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    }

    /// The next builds on this thread fail right after their `n`-th progress save, as a killed
    /// process would stop; 0 turns it off.
    #[cfg(feature = "test-hooks")]
    pub fn interrupt_after_saves(n: u64) {
        INTERRUPT_AFTER.with(|c| c.set(n));
    }

    /// Called after every progress save.
    pub(crate) fn after_progress_save() -> Result<()> {
        #[cfg(feature = "test-hooks")]
        {
            INTERRUPT_AFTER.with(|c| match c.get() {
                0 => Ok(()),
                1 => {
                    c.set(0);
                    Err(crate::error::Error::Other("interrupted (test hook)".into()))
                }
                n => {
                    c.set(n - 1);
                    Ok(())
                }
            })
        }
        #[cfg(not(feature = "test-hooks"))]
        Ok(())
    }

    /// The shard count after which the docs stage stops (`STOP_AFTER_SHARDS_ENV`), if set.
    pub fn stop_after_shards() -> Option<usize> {
        #[cfg(feature = "test-hooks")]
        {
            std::env::var(STOP_AFTER_SHARDS_ENV).ok().and_then(|v| v.parse().ok())
        }
        #[cfg(not(feature = "test-hooks"))]
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlapping_outputs_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let inp = dir.path().join("in");
        std::fs::create_dir_all(&inp).unwrap();
        for (out, ok) in [(inp.clone(), false), (inp.join("out"), false), (dir.path().to_path_buf(), false), (dir.path().join("out"), true)]
        {
            assert_eq!(check_overlap(&out, std::slice::from_ref(&inp)).is_ok(), ok, "{}", out.display());
        }
        // Another spelling of the same place.
        assert!(check_overlap(&dir.path().join("in/../in/./x"), std::slice::from_ref(&inp)).is_err());
        assert_eq!(glob_root("data/**/*.jsonl"), PathBuf::from("data"));
        assert_eq!(glob_root("*.json"), PathBuf::from("."));
    }

    #[test]
    fn ownership_covers_temp_files_and_claimed_folders() {
        let o: BTreeSet<String> = ["part-00000.parquet".to_string(), ".work/".to_string()].into();
        assert!(owns(&o, "part-00000.parquet.tmp") && owns(&o, ".work/sig/a.sig") && owns(&o, ".work"));
        assert!(!owns(&o, "part-00001.parquet") && !owns(&o, "notes.tmp") && !owns(&o, ".workx"));
    }
}
