//! Training runs end to end on CPU: overfitting one batch (f32 and bf16 compute), exact resume
//! after an interruption (in-process and `kill -9` of the binary), checkpoints that
//! candle-transformers loads with the same logits, sharded weights, and the error paths.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use coretech::shard::Batch;
use coretech::train::checkpoint::{self, SaveDtype};
use coretech::train::config::{ComputeDtype, ModelConfig, TrainConfig};
use coretech::train::data::{DataConfig, StageConfig, StageKind, SyntheticConfig, VecSource};
use coretech::train::metrics::{read_metrics, MetricsConfig};
use coretech::train::model::param_specs;
use coretech::train::ops::ReferenceOps;
use coretech::train::optim::AdamWConfig;
use coretech::train::schedule::{Decay, ScheduleConfig};
use coretech::train::trainer::{open_source, Trainer};
use coretech::train::{Qwen2, Qwen2Config};

fn one_batch() -> Batch {
    // Two rows of 32 random-looking tokens (vocab 128), three documents, every target counted.
    let t = 32;
    let mut b = Batch { batch: 2, seq_len: t, ..Default::default() };
    Batch::row_layout(&[20, 12], t, &mut b.position_ids, &mut b.segment_ids);
    Batch::row_layout(&[32], t, &mut b.position_ids, &mut b.segment_ids);
    b.input_ids = (0..64u64).map(|i| ((i * 2654435761) % 128) as u32).collect();
    b.loss_mask = vec![1; 64];
    b
}

fn base_cfg(dir: &Path) -> TrainConfig {
    TrainConfig {
        output: dir.to_path_buf(),
        model: ModelConfig { preset: Some("test".into()), ..Default::default() },
        batch_size: 2,
        seq_len: 32,
        optimizer: AdamWConfig { lr: 1e-2, weight_decay: 0.0, ..Default::default() },
        schedule: ScheduleConfig { warmup_steps: 5, decay: Decay::Cosine, min_lr_ratio: 0.1 },
        checkpoint: coretech::train::checkpoint::CheckpointConfig { every: 0, keep_last: 2, dtype: SaveDtype::F32, ..Default::default() },
        metrics: MetricsConfig { progress: false, ..Default::default() },
        ..Default::default()
    }
}

fn overfit(dtype: ComputeDtype, steps: u64) -> Vec<f64> {
    let dir = tempfile::tempdir().unwrap();
    let cfg = TrainConfig { dtype, max_steps: Some(steps), ..base_cfg(dir.path()) };
    let mut tr = Trainer::new(&cfg, Box::new(VecSource::new(vec![one_batch()], 0))).unwrap();
    assert!(tr.model.params.iter().all(|p| p.dtype() == dtype.dtype()), "the model computes in {dtype:?}");
    assert!(tr.opt.states.iter().all(|s| s.master.dtype() == DType::F32 && s.exp_avg_sq.dtype() == DType::F32));
    let s = tr.run().unwrap();
    assert_eq!(s.steps, steps);
    assert!(dir.path().join("loss.svg").is_file());
    let svg = std::fs::read_to_string(dir.path().join("loss.svg")).unwrap();
    assert!(svg.contains("<polyline") || svg.contains("<path"), "no curve in loss.svg");
    let losses: Vec<f64> = read_metrics(&dir.path().join("metrics.jsonl")).unwrap().iter().map(|m| m.loss.unwrap()).collect();
    eprintln!("{dtype:?}: loss {:.4} -> {:.4} after {steps} steps", losses[0], losses.last().unwrap());
    losses
}

#[test]
fn a_tiny_model_overfits_one_batch() {
    let losses = overfit(ComputeDtype::F32, 60);
    // Starts near ln(128) = 4.85 and memorises the 61 counted predictions.
    assert!((losses[0] - 128f64.ln()).abs() < 0.3, "first loss {}", losses[0]);
    assert!(*losses.last().unwrap() < 0.2, "loss after 60 steps: {:?}", &losses[50..]);
}

#[test]
fn bf16_compute_with_f32_master_weights_trains_on_cpu() {
    let losses = overfit(ComputeDtype::Bf16, 60);
    assert!((losses[0] - 128f64.ln()).abs() < 0.3, "first loss {}", losses[0]);
    assert!(*losses.last().unwrap() < 0.3, "bf16 loss after 60 steps: {:?}", &losses[50..]);
}

fn curriculum_cfg(dir: &Path) -> TrainConfig {
    TrainConfig {
        grad_accum: 2,
        checkpoint: coretech::train::checkpoint::CheckpointConfig { every: 3, keep_last: 2, dtype: SaveDtype::F32, ..Default::default() },
        data: DataConfig {
            stages: vec![
                StageConfig { name: "cpt".into(), ..Default::default() },
                StageConfig { name: "sft".into(), kind: StageKind::Sft, epochs: 2, replay: 0.25, ..Default::default() },
            ],
            synthetic: SyntheticConfig { rows: 12, pool_docs: 6, min_doc_len: 4, max_doc_len: 20, ..Default::default() },
            ..Default::default()
        },
        ..base_cfg(dir)
    }
}

fn losses_bits(dir: &Path) -> Vec<(u64, u64, u64)> {
    read_metrics(&dir.join("metrics.jsonl"))
        .unwrap()
        .iter()
        .map(|m| (m.step, m.loss.unwrap().to_bits(), m.grad_norm.unwrap().to_bits()))
        .collect()
}

#[test]
fn an_interrupted_run_resumes_bit_for_bit() {
    let full = tempfile::tempdir().unwrap();
    let cfg = curriculum_cfg(full.path());
    let src = open_source(&cfg, 128).unwrap();
    let s = Trainer::new(&cfg, src).unwrap().run().unwrap();
    // 12 + 24 rows, 2 per micro-batch, 2 micro-batches per step.
    assert_eq!((s.steps, s.total_steps), (9, 9));
    let reference = losses_bits(full.path());
    assert_eq!(reference.len(), 9);
    // Stage 1 starts at step 4: a stage-end checkpoint at step 3 (also a periodic one), then 6, 9.
    let kept: Vec<u64> = checkpoint::list(&full.path().join("checkpoints")).unwrap().iter().map(|c| c.0).collect();
    assert_eq!(kept, [6, 9], "keep_last = 2");

    for stop in [1u64, 4, 7] {
        let part = tempfile::tempdir().unwrap();
        let cfg = curriculum_cfg(part.path());
        let mut tr = Trainer::new(&cfg, open_source(&cfg, 128).unwrap()).unwrap();
        assert!(!tr.run_steps(stop).unwrap());
        drop(tr); // "killed" after `stop` steps: whatever was checkpointed survives
                  // A save killed midway leaves a .tmp directory, which resuming ignores and removes.
        std::fs::create_dir_all(part.path().join("checkpoints/step-00000008.tmp")).unwrap();
        let mut tr = Trainer::new(&cfg, open_source(&cfg, 128).unwrap()).unwrap();
        let last_saved = stop / 3 * 3;
        assert_eq!(tr.resumed_from, (last_saved > 0).then_some(last_saved), "stop {stop}");
        tr.run().unwrap();
        assert_eq!(losses_bits(part.path()), reference, "stopped after {stop}");
        let a = std::fs::read(full.path().join("checkpoints/step-00000009/optimizer.safetensors")).unwrap();
        let b = std::fs::read(part.path().join("checkpoints/step-00000009/optimizer.safetensors")).unwrap();
        assert!(a == b, "final optimizer state differs after a stop at {stop}");
    }
}

#[test]
fn resuming_with_another_config_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = curriculum_cfg(dir.path());
    let mut tr = Trainer::new(&cfg, open_source(&cfg, 128).unwrap()).unwrap();
    tr.run_steps(3).unwrap();
    drop(tr);
    let changed = TrainConfig { optimizer: AdamWConfig { lr: 2e-2, ..cfg.optimizer.clone() }, ..cfg.clone() };
    let e = Trainer::new(&changed, open_source(&changed, 128).unwrap()).err().unwrap().to_string();
    assert!(e.contains("config hash"), "{e}");
    // Settings that do not change the numbers may change.
    let ok = TrainConfig {
        recompute: coretech::train::plan::Recompute::All,
        metrics: MetricsConfig { progress: false, plot_every: 1, ..Default::default() },
        ..cfg
    };
    assert_eq!(Trainer::new(&ok, open_source(&ok, 128).unwrap()).unwrap().resumed_from, Some(3));
}

#[test]
fn checkpoints_load_in_candle_transformers_with_the_same_logits() {
    use candle_transformers::models::qwen2;
    let dir = tempfile::tempdir().unwrap();
    let tok = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/tokenizers/qwen2.5");
    let mut cfg = TrainConfig { max_steps: Some(3), ..base_cfg(dir.path()) };
    cfg.checkpoint.tokenizer = Some(tok);
    cfg.checkpoint.max_shard_bytes = 40_000; // forces several shards and an index
    let s = Trainer::new(&cfg, Box::new(VecSource::new(vec![one_batch()], 0))).unwrap().run().unwrap();
    let ck = s.checkpoint.unwrap();
    for f in [
        "config.json",
        "model.safetensors.index.json",
        "optimizer.safetensors.index.json", // the optimizer state is sharded like the model
        "trainer_state.json",
        "tokenizer.json",
        "chat_template.jinja",
    ] {
        assert!(ck.join(f).is_file(), "{f} missing from {}", ck.display());
    }
    let shards =
        std::fs::read_dir(&ck).unwrap().filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with("model-")).count();
    assert!(shards >= 2, "{shards} shard files");
    assert!(!ck.join("model.safetensors").exists());
    // The shipped tokenizer is the real one, decompressed.
    let tk = tokenizers::Tokenizer::from_file(ck.join("tokenizer.json")).unwrap();
    assert_eq!(tk.token_to_id("<|im_end|>"), Some(151645));

    // Our model from the checkpoint (the same loader reads HF Qwen2.5 weights).
    let arch = Qwen2Config::from_hf_file(&ck.join("config.json")).unwrap();
    let specs = param_specs(&arch);
    let w = checkpoint::load_weights(&ck, &specs, &Device::Cpu).unwrap();
    let model = Qwen2::new(&arch, DType::F32, &w, &Device::Cpu).unwrap();
    let t = 16;
    let mut b = Batch {
        batch: 1,
        seq_len: t,
        input_ids: (0..t as u32).map(|i| (i * 7 + 3) % 128).collect(),
        loss_mask: vec![1; t],
        ..Default::default()
    };
    Batch::row_layout(&[t as u32], t, &mut b.position_ids, &mut b.segment_ids);
    let ours = model.logits(&ReferenceOps, &model.inputs(&b).unwrap()).unwrap();

    // candle-transformers, from the files alone.
    let hf: qwen2::Config = serde_json::from_str(&std::fs::read_to_string(ck.join("config.json")).unwrap()).unwrap();
    let mut files: Vec<_> = std::fs::read_dir(&ck)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("model-"))
        .collect();
    files.sort();
    let vb = unsafe { candle_nn::VarBuilder::from_mmaped_safetensors(&files, DType::F32, &Device::Cpu).unwrap() };
    let mut theirs = qwen2::ModelForCausalLM::new(&hf, vb).unwrap();
    let ids = Tensor::from_vec(b.input_ids.clone(), (1, t), &Device::Cpu).unwrap();
    let last = theirs.forward(&ids, 0).unwrap().flatten_all().unwrap();
    let diff = (ours.get(t - 1).unwrap() - last).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
    assert!(diff < 1e-4, "last-position logits differ by {diff}");

    // A new run can start from the checkpoint's weights.
    let next = tempfile::tempdir().unwrap();
    let cfg2 =
        TrainConfig { model: ModelConfig { from: Some(ck.clone()), ..Default::default() }, max_steps: Some(1), ..base_cfg(next.path()) };
    let tr = Trainer::new(&cfg2, Box::new(VecSource::new(vec![one_batch()], 0))).unwrap();
    for (a, b) in tr.model.params.iter().zip(&model.params) {
        assert_eq!(a.flatten_all().unwrap().to_vec1::<f32>().unwrap(), b.flatten_all().unwrap().to_vec1::<f32>().unwrap());
    }
}

#[test]
fn broken_weights_are_reported_with_file_and_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let arch = Qwen2Config::preset("test").unwrap();
    let specs = param_specs(&arch);
    let p = coretech::train::model::init_params(&arch, 0, DType::F32, &Device::Cpu).unwrap();
    // A file without the final norm.
    checkpoint::write_model(dir.path(), &arch, &specs[..specs.len() - 1], &p[..p.len() - 1], SaveDtype::F32, u64::MAX).unwrap();
    let e = checkpoint::load_weights(dir.path(), &specs, &Device::Cpu).unwrap_err().to_string();
    assert!(e.contains("model.norm.weight") && e.contains("missing") && e.contains(&dir.path().display().to_string()), "{e}");
    // A config whose shape disagrees with the weights.
    let wide = param_specs(&Qwen2Config { intermediate_size: 80, ..arch.clone() });
    let e = checkpoint::load_weights(dir.path(), &wide, &Device::Cpu).unwrap_err().to_string();
    assert!(e.contains("gate_proj") && e.contains("shape"), "{e}");
    // An index naming a shard that is not there.
    std::fs::write(dir.path().join("model.safetensors.index.json"), r#"{"weight_map":{"a":"model-00001-of-00002.safetensors"}}"#).unwrap();
    let e = checkpoint::load_weights(dir.path(), &specs, &Device::Cpu).unwrap_err().to_string();
    assert!(e.contains("model-00001-of-00002.safetensors") && e.contains("missing"), "{e}");
    let e = checkpoint::load_weights(&dir.path().join("nope"), &specs, &Device::Cpu).unwrap_err().to_string();
    assert!(e.contains("no model.safetensors"), "{e}");
    // Bad batches are data errors naming the place.
    let model = Qwen2::new(&arch, DType::F32, &p, &Device::Cpu).unwrap();
    let mut b = one_batch();
    b.input_ids[40] = 500;
    let e = model.inputs(&b).unwrap_err().to_string();
    assert!(e.contains("500") && e.contains("row 1"), "{e}");
    b.loss_mask.pop();
    assert!(model.inputs(&b).unwrap_err().to_string().contains("loss_mask"));
}

#[test]
fn config_errors_name_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = base_cfg(dir.path());
    cfg.model = ModelConfig { preset: Some("test".into()), from: Some(dir.path().into()), ..Default::default() };
    assert!(cfg.model.arch().unwrap_err().to_string().contains("exactly one"));
    let cfg = TrainConfig { seq_len: 1, ..base_cfg(dir.path()) };
    assert!(cfg.validate().unwrap_err().to_string().contains("seq_len"));
    let mut cfg = base_cfg(dir.path());
    cfg.data.source = coretech::train::data::SourceKind::Shards;
    cfg.data.stages[0].shards = Some(dir.path().into());
    let e = open_source(&cfg, 128).err().unwrap().to_string();
    assert!(e.contains(".manifest.json") && e.contains(&dir.path().display().to_string()), "an empty shard directory: {e}");
    let mut cfg = base_cfg(dir.path());
    cfg.checkpoint.tokenizer = Some(dir.path().join("missing.json"));
    assert!(cfg.validate().unwrap_err().to_string().contains("missing.json"));
}

#[test]
fn example_pipelines_parse_and_validate() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if p.file_name().unwrap().to_string_lossy().starts_with("train-") {
            let cfg = coretech::config::PipelineConfig::load(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            assert!(!cfg.train.is_empty(), "{}", p.display());
            for (name, t) in &cfg.train {
                assert!(
                    cfg.stages.contains(&coretech::config::Stage::Train(name.clone())),
                    "{}: stage train:{name} not listed",
                    p.display()
                );
                let mut t = t.clone();
                // Paths are relative to the repository root.
                t.checkpoint.tokenizer = t.checkpoint.tokenizer.map(|p| Path::new(env!("CARGO_MANIFEST_DIR")).join(p));
                t.validate().unwrap();
                t.model.arch().unwrap();
                n += 1;
            }
        }
    }
    assert!(n >= 1);
}

/// f32 → bf16 bits, round to nearest even (independent of candle, as transformers writes them).
fn bf16_bits(x: f32) -> u16 {
    let b = x.to_bits();
    ((b + 0x7FFF + ((b >> 16) & 1)) >> 16) as u16
}

/// A tiny untied Qwen2 written the way transformers' `save_pretrained(max_shard_size=…)` lays
/// out the released Qwen2.5-7B: bf16 shards `model-0000i-of-00003.safetensors` filled in
/// state-dict order, and `model.safetensors.index.json` with `metadata.total_size` and a sorted
/// `weight_map`. Written with the safetensors crate alone, not with our writer. Returns the f32
/// values (already bf16-exact) in `param_specs` order.
fn write_hf_sharded(dir: &Path, arch: &Qwen2Config) -> Vec<Vec<f32>> {
    use safetensors::tensor::{Dtype, TensorView};
    let specs = param_specs(arch);
    let values: Vec<Vec<f32>> = specs
        .iter()
        .enumerate()
        .map(|(k, s)| {
            (0..s.numel()).map(|i| f32::from_bits((bf16_bits(((i * 7 + k * 13) % 29) as f32 / 29.0 - 0.5) as u32) << 16)).collect()
        })
        .collect();
    let bytes: Vec<Vec<u8>> = values.iter().map(|v| v.iter().flat_map(|x| bf16_bits(*x).to_le_bytes()).collect()).collect();
    let total: usize = bytes.iter().map(Vec::len).sum();
    // Three shards in state-dict order (embedding first, lm_head last), split by size.
    let mut shard_of = Vec::new();
    let mut acc = 0;
    for b in &bytes {
        shard_of.push((acc * 3 / total).min(2));
        acc += b.len();
    }
    let mut weight_map = std::collections::BTreeMap::new();
    for k in 0..3 {
        let name = format!("model-{:05}-of-00003.safetensors", k + 1);
        let views: Vec<(String, TensorView)> = specs
            .iter()
            .enumerate()
            .filter(|(i, _)| shard_of[*i] == k)
            .map(|(i, s)| (s.name.clone(), TensorView::new(Dtype::BF16, s.shape.clone(), &bytes[i]).unwrap()))
            .collect();
        assert!(!views.is_empty(), "shard {k} is empty");
        for (n, _) in &views {
            weight_map.insert(n.clone(), name.clone());
        }
        let meta = std::collections::HashMap::from([("format".to_string(), "pt".to_string())]);
        safetensors::serialize_to_file(views, Some(meta), &dir.join(&name)).unwrap();
    }
    let index = serde_json::json!({ "metadata": { "total_size": total }, "weight_map": weight_map });
    std::fs::write(dir.join("model.safetensors.index.json"), serde_json::to_string_pretty(&index).unwrap()).unwrap();
    std::fs::write(dir.join("config.json"), arch.to_hf_json("bfloat16").to_string()).unwrap();
    values
}

/// Every tensor our sharded files hold is where the index says, the index's total matches, and
/// the shards together hold exactly `names`.
fn check_index(dir: &Path, stem: &str, names: &[String]) {
    let index: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join(format!("{stem}.safetensors.index.json"))).unwrap()).unwrap();
    let map = index["weight_map"].as_object().unwrap();
    let mut files: Vec<&str> = map.values().map(|v| v.as_str().unwrap()).collect();
    files.sort();
    files.dedup();
    assert!(files.len() >= 2, "{stem}: {files:?}");
    let (mut seen, mut total) = (Vec::new(), 0u64);
    for f in &files {
        assert!(f.starts_with(&format!("{stem}-")) && f.ends_with(&format!("-of-{:05}.safetensors", files.len())), "{f}");
        let data = std::fs::read(dir.join(f)).unwrap();
        let st = safetensors::SafeTensors::deserialize(&data).unwrap();
        for (name, view) in st.tensors() {
            assert_eq!(map[&name].as_str().unwrap(), *f, "{name} is in {f}, the index says otherwise");
            total += view.data().len() as u64;
            seen.push(name);
        }
    }
    assert_eq!(index["metadata"]["total_size"].as_u64().unwrap(), total, "{stem}: total_size");
    seen.sort();
    let mut want = names.to_vec();
    want.sort();
    assert_eq!(seen, want, "{stem}: tensors in the shards");
}

#[test]
fn hf_sharded_weights_load_and_sharded_checkpoints_resume_bit_for_bit() {
    let arch = Qwen2Config { tie_word_embeddings: false, ..Qwen2Config::preset("test").unwrap() };
    let hf = tempfile::tempdir().unwrap();
    let values = write_hf_sharded(hf.path(), &arch);
    let specs = param_specs(&arch);
    let loaded = checkpoint::load_weights(hf.path(), &specs, &Device::Cpu).unwrap();
    for ((s, t), v) in specs.iter().zip(&loaded).zip(&values) {
        assert_eq!(&t.flatten_all().unwrap().to_vec1::<f32>().unwrap(), v, "{}", s.name);
    }

    // Runs from those weights; checkpoints sharded like them, the optimizer state too.
    let cfg_for = |dir: &Path| {
        let mut cfg =
            TrainConfig { model: ModelConfig { from: Some(hf.path().into()), ..Default::default() }, max_steps: Some(5), ..base_cfg(dir) };
        cfg.checkpoint.every = 2;
        cfg.checkpoint.max_shard_bytes = 30_000;
        cfg
    };
    let full = tempfile::tempdir().unwrap();
    let cfg = cfg_for(full.path());
    let s = Trainer::new(&cfg, Box::new(VecSource::new(vec![one_batch()], 0))).unwrap().run().unwrap();
    let ck = s.checkpoint.unwrap();
    let names: Vec<String> = specs.iter().map(|s| s.name.clone()).collect();
    check_index(&ck, "model", &names);
    let opt_names: Vec<String> =
        ["master", "exp_avg", "exp_avg_sq"].iter().flat_map(|k| names.iter().map(move |n| format!("{k}.{n}"))).collect();
    check_index(&ck, "optimizer", &opt_names);
    assert!(!ck.join("model.safetensors").exists() && !ck.join("optimizer.safetensors").exists());
    let reference = losses_bits(full.path());
    assert_eq!(reference.len(), 5);

    // Killed after 3 steps (last checkpoint: step 2), resumed from the sharded state.
    let part = tempfile::tempdir().unwrap();
    let cfg = cfg_for(part.path());
    let mut tr = Trainer::new(&cfg, Box::new(VecSource::new(vec![one_batch()], 0))).unwrap();
    assert!(!tr.run_steps(3).unwrap());
    drop(tr);
    let mut tr = Trainer::new(&cfg, Box::new(VecSource::new(vec![one_batch()], 0))).unwrap();
    assert_eq!(tr.resumed_from, Some(2));
    tr.run().unwrap();
    assert_eq!(losses_bits(part.path()), reference);
    let last = |d: &Path| checkpoint::load_weights(&checkpoint::weights_dir(d).unwrap(), &specs, &Device::Cpu).unwrap();
    for ((a, b), s) in last(full.path()).iter().zip(last(part.path())).zip(&specs) {
        let (a, b) = (a.flatten_all().unwrap().to_vec1::<f32>().unwrap(), b.flatten_all().unwrap().to_vec1::<f32>().unwrap());
        assert!(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()), "{} differs after the resume", s.name);
    }
}

#[test]
fn weights_only_checkpoints_start_new_runs_but_refuse_to_resume() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = TrainConfig { max_steps: Some(3), ..base_cfg(dir.path()) };
    cfg.checkpoint.optimizer_state = false;
    cfg.checkpoint.every = 2;
    let mut tr = Trainer::new(&cfg, Box::new(VecSource::new(vec![one_batch()], 0))).unwrap();
    assert!(!tr.run_steps(2).unwrap());
    drop(tr);
    let ck = checkpoint::weights_dir(dir.path()).unwrap();
    assert!(ck.join("model.safetensors").is_file() && ck.join("trainer_state.json").is_file());
    assert!(std::fs::read_dir(&ck).unwrap().all(|e| !e.unwrap().file_name().to_string_lossy().starts_with("optimizer")));
    let e = Trainer::new(&cfg, Box::new(VecSource::new(vec![one_batch()], 0))).err().unwrap().to_string();
    assert!(e.contains("optimizer_state = false") && e.contains(&ck.display().to_string()), "{e}");
    // A new run starts from its weights.
    let next = tempfile::tempdir().unwrap();
    let cfg2 =
        TrainConfig { model: ModelConfig { from: Some(ck.clone()), ..Default::default() }, max_steps: Some(1), ..base_cfg(next.path()) };
    let tr = Trainer::new(&cfg2, Box::new(VecSource::new(vec![one_batch()], 0))).unwrap();
    let w = checkpoint::load_weights(&ck, &param_specs(&tr.model.cfg), &Device::Cpu).unwrap();
    for (a, b) in tr.model.params.iter().zip(&w) {
        assert_eq!(a.flatten_all().unwrap().to_vec1::<f32>().unwrap(), b.flatten_all().unwrap().to_vec1::<f32>().unwrap());
    }
}
