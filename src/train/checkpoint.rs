//! Checkpoints in HF layout, written atomically (`DIR.tmp/`, fsync, rename):
//! `model.safetensors` (or `model-0000i-of-0000n.safetensors` + `model.safetensors.index.json`)
//! in the configured dtype, `config.json`, the tokenizer files when configured,
//! `optimizer.safetensors` (f32 master weights and moments; sharded like the model above
//! `max_shard_bytes`, left out with `optimizer_state = false`) and `trainer_state.json` (step,
//! loader cursor, schedule, config hash); with a tokenizer also `generation_config.json` and
//! `tokenizer_config.json` (`hf_files`). Every file gets the process umask's mode (0644 under
//! umask 022: a team on shared storage can read it). The run directory's `latest` link points at
//! the newest complete checkpoint. Loading reads HF Qwen2.5 weights and our own alike.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::arch::Qwen2Config;
use super::error::{Result, TrainError};
use super::hf_files::{self, GenerationDefaults, ModelKind};
use super::model::ParamSpec;
use super::ops::AdamState;

/// dtype of the saved model weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "lowercase")]
pub enum SaveDtype {
    /// bfloat16 (as the released Qwen2.5 weights).
    #[default]
    Bf16,
    /// float16.
    F16,
    /// float32.
    F32,
}

impl SaveDtype {
    /// candle dtype.
    pub fn dtype(self) -> DType {
        match self {
            SaveDtype::Bf16 => DType::BF16,
            SaveDtype::F16 => DType::F16,
            SaveDtype::F32 => DType::F32,
        }
    }

    /// `torch_dtype` in config.json.
    pub fn torch_name(self) -> &'static str {
        match self {
            SaveDtype::Bf16 => "bfloat16",
            SaveDtype::F16 => "float16",
            SaveDtype::F32 => "float32",
        }
    }
}

/// The checkpoint section of a training config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct CheckpointConfig {
    /// Save every N optimizer steps (0: only at stage ends and at the end).
    pub every: u64,
    /// Keep the newest K checkpoints (0 keeps all).
    pub keep_last: usize,
    /// Also save when the curriculum moves to the next stage.
    pub at_stage_end: bool,
    /// dtype of `model.safetensors`.
    pub dtype: SaveDtype,
    /// Largest model (and optimizer-state) file; bigger ones are sharded with an index.
    #[schemars(range(min = 1))]
    pub max_shard_bytes: u64,
    /// Also write the f32 master weights and moments (needed to resume; 12 bytes a parameter,
    /// 91 GB at 7B). Off: weights-only checkpoints that a next stage can start from
    /// (`model.from`) but that cannot be resumed.
    pub optimizer_state: bool,
    /// Tokenizer to ship in every checkpoint: a `tokenizer.json`, a `tokenizer.json.zst`, or a
    /// directory holding one (its `tokenizer_config.json`, `special_tokens_map.json`,
    /// `chat_template.jinja`, `generation_config.json`, `vocab.json`, `merges.txt` come along).
    /// With a tokenizer every checkpoint also gets `generation_config.json` and
    /// `tokenizer_config.json` for transformers and vLLM.
    pub tokenizer: Option<PathBuf>,
    /// Sampling defaults in a chat (SFT) model's `generation_config.json`.
    pub generation: GenerationDefaults,
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        Self {
            every: 500,
            keep_last: 3,
            at_stage_end: true,
            dtype: SaveDtype::Bf16,
            max_shard_bytes: 5_000_000_000,
            optimizer_state: true,
            tokenizer: None,
            generation: GenerationDefaults::default(),
        }
    }
}

impl CheckpointConfig {
    /// Checks ranges.
    pub fn validate(&self) -> Result<()> {
        if self.max_shard_bytes == 0 {
            return Err(TrainError::config("checkpoint.max_shard_bytes", "must be > 0"));
        }
        if let Some(t) = &self.tokenizer {
            if !t.exists() {
                return Err(TrainError::file(t, "checkpoint.tokenizer does not exist"));
            }
        }
        self.generation.validate()
    }
}

/// `trainer_state.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainerState {
    /// Format version of this file.
    pub format: u32,
    /// Optimizer steps done (the trainer's step counter).
    pub step: u64,
    /// AdamW steps taken (differs from `step` when a step had no counted target and was skipped).
    pub optimizer_steps: u64,
    /// Steps the schedule spans.
    pub total_steps: u64,
    /// `TrainConfig::math_hash` of the run.
    pub config_hash: String,
    /// The batch source's cursor.
    pub loader: serde_json::Value,
    /// Seed of the run. No random draw happens after the init (no dropout), so the seed is the
    /// whole RNG state; the synthetic source's position is in `loader`.
    pub seed: u64,
    /// Learning rate of the last step.
    pub lr: f64,
    /// Curriculum stage of the last step.
    pub stage: Option<u32>,
    /// Tokens processed so far.
    pub tokens: u64,
    /// Counted targets so far.
    pub targets: u64,
    /// Tool version that wrote it.
    pub version: String,
}

/// Current format of `trainer_state.json`.
pub const STATE_FORMAT: u32 = 1;

/// Name of the checkpoint directory for `step` under `root`.
pub fn dir_for(root: &Path, step: u64) -> PathBuf {
    root.join(format!("step-{step:08}"))
}

/// The weights directory `path` names: itself when it holds a `config.json`, else the newest
/// complete checkpoint of the training run directory it is.
pub fn weights_dir(path: &Path) -> Result<PathBuf> {
    if path.join("config.json").is_file() {
        return Ok(path.to_path_buf());
    }
    if !path.is_dir() {
        return Err(TrainError::file(path, "no such directory (a checkpoint with config.json, or a training run directory)"));
    }
    match list(&path.join("checkpoints"))?.pop() {
        Some((_, ckpt)) => Ok(ckpt),
        None => Err(TrainError::file(path, "neither a weights directory (no config.json) nor a run directory with a complete checkpoint")),
    }
}

/// Name of the run directory's link to its newest complete checkpoint.
pub const LATEST: &str = "latest";

/// Points `run/latest` at checkpoint `ckpt` (a directory under `run/checkpoints`), atomically:
/// a relative symlink made beside it and renamed over the old one.
pub fn update_latest(run: &Path, ckpt: &Path) -> Result<()> {
    let target = ckpt.strip_prefix(run).unwrap_or(ckpt);
    let link = run.join(LATEST);
    let tmp = run.join(format!("{LATEST}.tmp"));
    let _ = std::fs::remove_file(&tmp);
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink(target, &tmp).map_err(|e| TrainError::file(&tmp, e))?;
        std::fs::rename(&tmp, &link).map_err(|e| TrainError::file(&link, e))?;
        sync_dir(run)
    }
    #[cfg(not(unix))]
    {
        // No symlinks to rely on: the pointer is a Unix convenience; runs resolve through `list`.
        let _ = (target, link);
        Ok(())
    }
}

/// Gives `files` the mode a new file of this process gets (0666 less the umask): the safetensors
/// writer creates its temp files 0600.
fn apply_umask(dir: &Path, files: &[PathBuf]) -> Result<()> {
    let probe = dir.join(".mode-probe");
    File::create(&probe).map_err(|e| TrainError::file(&probe, e))?;
    let perms = std::fs::metadata(&probe).map_err(|e| TrainError::file(&probe, e))?.permissions();
    std::fs::remove_file(&probe).map_err(|e| TrainError::file(&probe, e))?;
    for f in files {
        std::fs::set_permissions(f, perms.clone()).map_err(|e| TrainError::file(f, e))?;
    }
    Ok(())
}

/// Complete checkpoints under `root`, oldest first (`.tmp` directories are not checkpoints).
pub fn list(root: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    let rd = match std::fs::read_dir(root) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(TrainError::file(root, e)),
    };
    for entry in rd {
        let entry = entry.map_err(|e| TrainError::file(root, e))?;
        let name = entry.file_name().to_string_lossy().to_string();
        if let Some(step) = name.strip_prefix("step-").and_then(|s| s.parse::<u64>().ok()) {
            if entry.path().join("trainer_state.json").is_file() {
                out.push((step, entry.path()));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Removes leftovers of interrupted saves (`step-*.tmp`).
pub fn remove_partial(root: &Path) -> Result<()> {
    let Ok(rd) = std::fs::read_dir(root) else { return Ok(()) };
    for entry in rd.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if name.starts_with("step-") && name.ends_with(".tmp") {
            std::fs::remove_dir_all(entry.path()).map_err(|e| TrainError::file(entry.path(), e))?;
        }
    }
    Ok(())
}

/// Deletes all but the newest `keep` checkpoints (0 keeps all).
pub fn prune(root: &Path, keep: usize) -> Result<()> {
    if keep == 0 {
        return Ok(());
    }
    let all = list(root)?;
    for (_, dir) in all.iter().take(all.len().saturating_sub(keep)) {
        std::fs::remove_dir_all(dir).map_err(|e| TrainError::file(dir, e))?;
    }
    Ok(())
}

fn sync_file(path: &Path) -> Result<()> {
    File::open(path).and_then(|f| f.sync_all()).map_err(|e| TrainError::file(path, e))
}

fn sync_dir(path: &Path) -> Result<()> {
    // Directories open read-only on Linux; fsync makes the entries (renames) durable.
    File::open(path).and_then(|f| f.sync_all()).map_err(|e| TrainError::file(path, e))
}

fn write_json(path: &Path, v: &impl Serialize) -> Result<()> {
    let mut f = File::create(path).map_err(|e| TrainError::file(path, e))?;
    let text = serde_json::to_string_pretty(v).map_err(|e| TrainError::file(path, e))?;
    f.write_all(text.as_bytes()).and_then(|_| f.write_all(b"\n")).map_err(|e| TrainError::file(path, e))
}

fn write_safetensors(path: &Path, tensors: &[(String, Tensor)]) -> Result<()> {
    let meta: HashMap<String, String> = [("format".to_string(), "pt".to_string())].into();
    let cpu = tensors.iter().map(|(n, t)| Ok((n.clone(), t.to_device(&Device::Cpu)?.contiguous()?))).collect::<Result<Vec<_>>>()?;
    safetensors::serialize_to_file(cpu, Some(meta), path).map_err(|e| TrainError::file(path, e))
}

/// Writes named tensors as `STEM.safetensors`, or, above `max_shard_bytes`, as HF shards
/// `STEM-0000i-of-0000n.safetensors` plus `STEM.safetensors.index.json` (`metadata.total_size`,
/// `weight_map`), the layout of the released Qwen2.5 weights. Each tensor is cast to `dtype`
/// (when given) and copied to the host only while its shard is written, so a 7B model's weights
/// or optimizer state never exist twice on the device or whole in host memory.
fn write_sharded(
    dir: &Path,
    stem: &str,
    tensors: &[(String, &Tensor)],
    dtype: Option<DType>,
    max_shard_bytes: u64,
) -> Result<Vec<PathBuf>> {
    let bytes_of = |t: &Tensor| (t.elem_count() * dtype.unwrap_or(t.dtype()).size_in_bytes()) as u64;
    let mut shards: Vec<Vec<usize>> = vec![Vec::new()];
    let (mut size, mut total) = (0u64, 0u64);
    for (i, (_, t)) in tensors.iter().enumerate() {
        let bytes = bytes_of(t);
        if size > 0 && size + bytes > max_shard_bytes {
            shards.push(Vec::new());
            size = 0;
        }
        size += bytes;
        total += bytes;
        shards.last_mut().expect("one shard").push(i);
    }
    let write = |path: &Path, idx: &[usize]| -> Result<()> {
        let items = idx
            .iter()
            .map(|&i| {
                let (name, t) = &tensors[i];
                Ok((
                    name.clone(),
                    match dtype {
                        Some(d) => t.to_dtype(d)?,
                        None => (*t).clone(),
                    },
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        write_safetensors(path, &items)
    };
    if shards.len() == 1 {
        let path = dir.join(format!("{stem}.safetensors"));
        write(&path, &shards[0])?;
        return Ok(vec![path]);
    }
    let n = shards.len();
    let mut written = Vec::new();
    let mut weight_map = BTreeMap::new();
    for (k, idx) in shards.iter().enumerate() {
        let name = format!("{stem}-{:05}-of-{n:05}.safetensors", k + 1);
        for &i in idx {
            weight_map.insert(tensors[i].0.clone(), name.clone());
        }
        let path = dir.join(&name);
        write(&path, idx)?;
        written.push(path);
    }
    let path = dir.join(format!("{stem}.safetensors.index.json"));
    write_json(&path, &serde_json::json!({ "metadata": { "total_size": total }, "weight_map": weight_map }))?;
    written.push(path);
    Ok(written)
}

/// Writes the HF model files (weights in `dtype`, sharded above `max_shard_bytes`) and
/// `config.json` into `dir`. `params` in `param_specs` order, any dtype.
pub fn write_model(
    dir: &Path,
    cfg: &Qwen2Config,
    specs: &[ParamSpec],
    params: &[Tensor],
    dtype: SaveDtype,
    max_shard_bytes: u64,
) -> Result<Vec<PathBuf>> {
    let named: Vec<(String, &Tensor)> = specs.iter().zip(params).map(|(s, p)| (s.name.clone(), p)).collect();
    let mut written = write_sharded(dir, "model", &named, Some(dtype.dtype()), max_shard_bytes)?;
    let path = dir.join("config.json");
    write_json(&path, &cfg.to_hf_json(dtype.torch_name()))?;
    written.push(path);
    Ok(written)
}

/// Tokenizer side files copied along with `tokenizer.json`.
const TOKENIZER_FILES: &[&str] =
    &["tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja", "generation_config.json", "vocab.json", "merges.txt"];

/// Copies the tokenizer files into `dir` (decompressing a `.zst` `tokenizer.json`).
pub fn write_tokenizer(dir: &Path, src: &Path) -> Result<Vec<PathBuf>> {
    let (folder, main) = if src.is_dir() {
        let main = [src.join("tokenizer.json"), src.join("tokenizer.json.zst")]
            .into_iter()
            .find(|p| p.is_file())
            .ok_or_else(|| TrainError::file(src, "no tokenizer.json or tokenizer.json.zst in this directory"))?;
        (src.to_path_buf(), main)
    } else {
        (src.parent().map(Path::to_path_buf).unwrap_or_default(), src.to_path_buf())
    };
    let mut written = Vec::new();
    let out = dir.join("tokenizer.json");
    if main.extension().is_some_and(|e| e == "zst") {
        let f = File::open(&main).map_err(|e| TrainError::file(&main, e))?;
        let bytes = zstd::decode_all(f).map_err(|e| TrainError::file(&main, format!("zstd: {e}")))?;
        std::fs::write(&out, bytes).map_err(|e| TrainError::file(&out, e))?;
    } else {
        std::fs::copy(&main, &out).map_err(|e| TrainError::file(&main, e))?;
    }
    written.push(out);
    for name in TOKENIZER_FILES {
        let p = folder.join(name);
        if p.is_file() {
            let out = dir.join(name);
            std::fs::copy(&p, &out).map_err(|e| TrainError::file(&p, e))?;
            written.push(out);
        }
    }
    Ok(written)
}

/// Everything a checkpoint holds.
pub struct CheckpointData<'a> {
    /// Architecture.
    pub arch: &'a Qwen2Config,
    /// Parameter names and shapes.
    pub specs: &'a [ParamSpec],
    /// Optimizer state (master weights are what `model.safetensors` is written from).
    pub states: &'a [AdamState],
    /// `trainer_state.json`.
    pub state: &'a TrainerState,
    /// Chat (SFT) or base model: what `generation_config.json` says ends a sequence.
    pub kind: ModelKind,
}

/// Writes a checkpoint for `data.state.step` under `root` atomically; returns its directory.
pub fn save(root: &Path, cfg: &CheckpointConfig, data: &CheckpointData) -> Result<PathBuf> {
    std::fs::create_dir_all(root).map_err(|e| TrainError::file(root, e))?;
    let fin = dir_for(root, data.state.step);
    let tmp = fin.with_extension("tmp");
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| TrainError::file(&tmp, e))?;
    }
    std::fs::create_dir(&tmp).map_err(|e| TrainError::file(&tmp, e))?;
    let masters: Vec<Tensor> = data.states.iter().map(|s| s.master.clone()).collect();
    let mut files = write_model(&tmp, data.arch, data.specs, &masters, cfg.dtype, cfg.max_shard_bytes)?;
    if let Some(t) = &cfg.tokenizer {
        files.extend(write_tokenizer(&tmp, t)?);
        let src_config = Some(tmp.join("tokenizer_config.json")).filter(|p| p.is_file());
        for f in hf_files::write(&tmp, data.kind, &cfg.generation, data.arch.max_position_embeddings, src_config.as_deref())? {
            if !files.contains(&f) {
                files.push(f);
            }
        }
    }
    if cfg.optimizer_state {
        let mut opt = Vec::with_capacity(3 * data.specs.len());
        for (s, st) in data.specs.iter().zip(data.states) {
            opt.push((format!("master.{}", s.name), &st.master));
            opt.push((format!("exp_avg.{}", s.name), &st.exp_avg));
            opt.push((format!("exp_avg_sq.{}", s.name), &st.exp_avg_sq));
        }
        files.extend(write_sharded(&tmp, "optimizer", &opt, None, cfg.max_shard_bytes)?);
    }
    // trainer_state.json last: its presence marks a complete checkpoint.
    let p = tmp.join("trainer_state.json");
    write_json(&p, data.state)?;
    files.push(p);
    apply_umask(&tmp, &files)?;
    for f in &files {
        sync_file(f)?;
    }
    sync_dir(&tmp)?;
    if fin.exists() {
        std::fs::remove_dir_all(&fin).map_err(|e| TrainError::file(&fin, e))?;
    }
    std::fs::rename(&tmp, &fin).map_err(|e| TrainError::file(&fin, e))?;
    sync_dir(root)?;
    if let Some(run) = root.parent() {
        update_latest(run, &fin)?;
    }
    prune(root, cfg.keep_last)?;
    Ok(fin)
}

/// The safetensors files of a model directory (single file or index).
fn weight_files(dir: &Path) -> Result<Vec<PathBuf>> {
    tensor_files(dir, "model")?.ok_or_else(|| TrainError::file(dir, "no model.safetensors or model.safetensors.index.json"))
}

/// The files of `STEM.safetensors` or of the shards `STEM.safetensors.index.json` names; `None`
/// when neither exists.
fn tensor_files(dir: &Path, stem: &str) -> Result<Option<Vec<PathBuf>>> {
    let index = dir.join(format!("{stem}.safetensors.index.json"));
    if index.is_file() {
        let text = std::fs::read_to_string(&index).map_err(|e| TrainError::file(&index, e))?;
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| TrainError::file(&index, format!("not valid JSON: {e}")))?;
        let map = v.get("weight_map").and_then(|m| m.as_object()).ok_or_else(|| TrainError::file(&index, "no weight_map object"))?;
        let mut files: Vec<String> = map.values().filter_map(|f| f.as_str().map(String::from)).collect();
        files.sort();
        files.dedup();
        return files
            .into_iter()
            .map(|f| {
                let p = dir.join(&f);
                if p.is_file() {
                    Ok(p)
                } else {
                    Err(TrainError::file(&index, format!("names shard {f}, which is missing")))
                }
            })
            .collect::<Result<Vec<_>>>()
            .map(Some);
    }
    let single = dir.join(format!("{stem}.safetensors"));
    Ok(single.is_file().then(|| vec![single]))
}

fn open(files: &[PathBuf]) -> Result<candle_core::safetensors::MmapedSafetensors> {
    // SAFETY: the files are mapped read-only for the duration of the load; like every
    // safetensors reader we rely on nobody truncating them meanwhile.
    unsafe { candle_core::safetensors::MmapedSafetensors::multi(files) }
        .map_err(|e| TrainError::file(files.first().cloned().unwrap_or_default(), e))
}

fn load_named(
    st: &candle_core::safetensors::MmapedSafetensors,
    name: &str,
    spec: &ParamSpec,
    where_: &Path,
    device: &Device,
) -> Result<Tensor> {
    let t = st.load(name, &Device::Cpu).map_err(|_| TrainError::file(where_, format!("tensor {name} is missing")))?;
    if t.dims() != spec.shape.as_slice() {
        return Err(TrainError::file(where_, format!("tensor {name} has shape {:?}, the config needs {:?}", t.dims(), spec.shape)));
    }
    Ok(t.to_dtype(DType::F32)?.to_device(device)?)
}

/// Loads model weights (HF layout) from `dir` as f32, in `param_specs` order. A tied model
/// ignores a stored `lm_head.weight`; an untied one needs it.
pub fn load_weights(dir: &Path, specs: &[ParamSpec], device: &Device) -> Result<Vec<Tensor>> {
    let files = weight_files(dir)?;
    let st = open(&files)?;
    specs.iter().map(|s| load_named(&st, &s.name, s, dir, device)).collect()
}

/// Loads the optimizer state of a checkpoint (`optimizer.safetensors` or its shards), one
/// tensor at a time straight to `device`.
pub fn load_optimizer(dir: &Path, specs: &[ParamSpec], decay: &[bool], device: &Device) -> Result<Vec<AdamState>> {
    let files = tensor_files(dir, "optimizer")?.ok_or_else(|| {
        TrainError::file(
            dir,
            "holds no optimizer state (written with checkpoint.optimizer_state = false): it cannot be resumed; \
             start a new run from its weights (model.from) in another output directory",
        )
    })?;
    let st = open(&files)?;
    let path = if files.len() == 1 { files[0].clone() } else { dir.join("optimizer.safetensors.index.json") };
    specs
        .iter()
        .zip(decay)
        .map(|(s, &decay)| {
            Ok(AdamState {
                master: load_named(&st, &format!("master.{}", s.name), s, &path, device)?,
                exp_avg: load_named(&st, &format!("exp_avg.{}", s.name), s, &path, device)?,
                exp_avg_sq: load_named(&st, &format!("exp_avg_sq.{}", s.name), s, &path, device)?,
                decay,
            })
        })
        .collect()
}

/// Reads `trainer_state.json`.
pub fn load_state(dir: &Path) -> Result<TrainerState> {
    let path = dir.join("trainer_state.json");
    let text = std::fs::read_to_string(&path).map_err(|e| TrainError::file(&path, e))?;
    let st: TrainerState = serde_json::from_str(&text).map_err(|e| TrainError::file(&path, format!("not a trainer state: {e}")))?;
    if st.format != STATE_FORMAT {
        return Err(TrainError::file(&path, format!("format {} (this build reads {STATE_FORMAT})", st.format)));
    }
    Ok(st)
}
