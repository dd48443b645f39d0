//! Data-parallel training on CPU ranks (threads, and processes of the binary) over the TCP
//! collective on localhost: DDP and ZeRO-1/2 with W ranks of batch B give the per-step losses of
//! one process with batch W·B (and of one with grad_accum W), every rank ends with the same
//! weights, the consolidated checkpoint loads into a 1-rank run, a run resumes exactly with the
//! same world size, per-stage learning-rate schedules start at the same step as in one process,
//! and bad launcher values fail clearly.
//!
//! Tolerance: f32 compute; the W-rank gradient is Σ over ranks (rank order) of per-rank sums,
//! the 1-rank gradient one sum over all rows, so they differ by summation order only. Losses
//! are compared with a relative tolerance of 1e-5 (the measured differences are far below; see
//! the assertions' messages).

mod c10d_store;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use candle_core::Device;
use coretech::train::checkpoint::{self, CheckpointConfig, SaveDtype};
use coretech::train::config::{ModelConfig, TrainConfig};
use coretech::train::data::{DataConfig, StageConfig, StageKind, SyntheticConfig};
use coretech::train::dist::store::StoreClient;
use coretech::train::dist::{self, DistConfig, DistMode, Launch, RankSplit};
use coretech::train::metrics::{read_metrics, MetricsConfig};
use coretech::train::model::param_specs;
use coretech::train::optim::AdamWConfig;
use coretech::train::schedule::{Decay, ScheduleConfig};
use coretech::train::trainer::{open_source, Trainer};
use coretech::train::Qwen2Config;

const BIN: &str = env!("CARGO_BIN_EXE_coretech");
const REL_TOL: f64 = 1e-5;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// 48 rows in two stages (CPT, then SFT with replay), `batch` rows per micro-batch.
fn cfg(dir: &Path, mode: DistMode, batch: usize, grad_accum: usize) -> TrainConfig {
    TrainConfig {
        output: dir.to_path_buf(),
        seed: 11,
        model: ModelConfig { preset: Some("test".into()), ..Default::default() },
        batch_size: batch,
        seq_len: 32,
        grad_accum,
        optimizer: AdamWConfig { lr: 1e-2, weight_decay: 0.1, max_grad_norm: 1.0, ..Default::default() },
        schedule: ScheduleConfig { warmup_steps: 3, decay: Decay::Cosine, min_lr_ratio: 0.1 },
        data: DataConfig {
            stages: vec![
                StageConfig { name: "cpt".into(), ..Default::default() },
                StageConfig { name: "sft".into(), kind: StageKind::Sft, replay: 0.25, ..Default::default() },
            ],
            synthetic: SyntheticConfig { rows: 24, vocab: 0, pool_docs: 6, min_doc_len: 5, max_doc_len: 20, prompt_fraction: 0.4 },
            ..Default::default()
        },
        checkpoint: CheckpointConfig { every: 0, keep_last: 0, at_stage_end: true, dtype: SaveDtype::F32, ..Default::default() },
        metrics: MetricsConfig { progress: false, ..Default::default() },
        // A tiny bucket size: several buckets, and the embedding larger than one.
        distributed: DistConfig { mode, bucket_mb: 0.01, timeout_s: 60.0, ..Default::default() },
        ..Default::default()
    }
}

/// What a rank ends with.
struct RankOut {
    params: Vec<Vec<f32>>,
    steps: u64,
}

fn flat_params(tr: &Trainer) -> Vec<Vec<f32>> {
    tr.model.params.iter().map(|p| p.flatten_all().unwrap().to_vec1::<f32>().unwrap()).collect()
}

/// Runs `cfg` on `world` rank threads (at most `max_steps` more steps each, else to the end).
fn run_ranks(cfg: &TrainConfig, world: usize, max_steps: Option<u64>) -> Vec<RankOut> {
    let port = free_port();
    let hs: Vec<_> = (0..world)
        .map(|rank| {
            let cfg = cfg.clone();
            std::thread::spawn(move || {
                let launch = Launch::local(rank, world, port);
                let comm = dist::connect(&cfg.distributed, &launch, &Device::Cpu).unwrap();
                let vocab = cfg.model.arch().unwrap().vocab_size;
                let src = RankSplit::new(open_source(&cfg, vocab).unwrap(), rank, world).unwrap();
                let mut tr = Trainer::new_distributed(&cfg, Box::new(src), comm).unwrap();
                match max_steps {
                    Some(n) => {
                        tr.run_steps(n).unwrap();
                    }
                    None => {
                        tr.run().unwrap();
                    }
                }
                RankOut { params: flat_params(&tr), steps: tr.step }
            })
        })
        .collect();
    hs.into_iter().map(|h| h.join().expect("rank thread")).collect()
}

fn run_single(cfg: &TrainConfig) -> Vec<Vec<f32>> {
    let vocab = cfg.model.arch().unwrap().vocab_size;
    let mut tr = Trainer::new(cfg, open_source(cfg, vocab).unwrap()).unwrap();
    tr.run().unwrap();
    flat_params(&tr)
}

fn losses(dir: &Path) -> Vec<f64> {
    read_metrics(&dir.join("metrics.jsonl")).unwrap().iter().map(|m| m.loss.unwrap()).collect()
}

fn max_rel(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len(), "step counts differ");
    a.iter().zip(b).map(|(x, y)| (x - y).abs() / y.abs().max(1e-12)).fold(0.0, f64::max)
}

fn max_abs_params(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    a.iter().flatten().zip(b.iter().flatten()).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[test]
fn ddp_and_zero_on_two_ranks_match_one_rank_with_the_global_batch() {
    // References: one process with batch 4, and one with batch 2 × grad_accum 2.
    let r4 = tempfile::tempdir().unwrap();
    let single = run_single(&cfg(r4.path(), DistMode::None, 4, 1));
    let ref_losses = losses(r4.path());
    assert_eq!(ref_losses.len(), 12);
    let r22 = tempfile::tempdir().unwrap();
    run_single(&cfg(r22.path(), DistMode::None, 2, 2));
    let accum_losses = losses(r22.path());
    let d = max_rel(&accum_losses, &ref_losses);
    eprintln!("1 rank batch 2 x accum 2 vs batch 4: max rel loss diff {d:.2e}");
    assert!(d < REL_TOL);

    for mode in [DistMode::Ddp, DistMode::Zero1, DistMode::Zero2] {
        let dir = tempfile::tempdir().unwrap();
        let out = run_ranks(&cfg(dir.path(), mode, 2, 1), 2, None);
        assert!(out.iter().all(|o| o.steps == 12));
        let l = losses(dir.path());
        let (d4, d22) = (max_rel(&l, &ref_losses), max_rel(&l, &accum_losses));
        eprintln!("{mode:?} 2 ranks: max rel loss diff {d4:.2e} vs batch 4, {d22:.2e} vs accum 2");
        assert!(d4 < REL_TOL, "{mode:?}: losses {l:?} vs {ref_losses:?}");
        // The first step sees identical weights: the loss is the same sum in the same order.
        assert_eq!(l[0].to_bits(), accum_losses[0].to_bits(), "{mode:?} first loss");
        // Every rank holds bit-identical weights, close to the single process's.
        assert_eq!(out[0].params, out[1].params, "{mode:?}: ranks diverged");
        let pd = max_abs_params(&out[0].params, &single);
        eprintln!("{mode:?}: max |param - single| {pd:.2e}");
        assert!(pd < 1e-4, "{mode:?}: weights differ from the 1-rank run by {pd}");
        // Rank 0 alone wrote the metrics (12 lines, global token counts) and the checkpoints
        // (stage end after step 6, final at 12).
        let m = read_metrics(&dir.path().join("metrics.jsonl")).unwrap();
        assert_eq!(m.len(), 12);
        assert!(m.iter().all(|s| s.tokens == 4 * 32), "global tokens per step");
        let ck: Vec<u64> = checkpoint::list(&dir.path().join("checkpoints")).unwrap().iter().map(|c| c.0).collect();
        assert_eq!(ck, [6, 12]);
    }
}

#[test]
fn zero2_on_three_ranks_pads_uneven_shards_and_matches_one_rank() {
    // Global batch 6 (48 rows: 8 steps); no parameter count divides by 3 evenly everywhere.
    let r = tempfile::tempdir().unwrap();
    let single = run_single(&cfg(r.path(), DistMode::None, 6, 1));
    let dir = tempfile::tempdir().unwrap();
    let out = run_ranks(&cfg(dir.path(), DistMode::Zero2, 2, 1), 3, None);
    let d = max_rel(&losses(dir.path()), &losses(r.path()));
    eprintln!("Zero2 3 ranks: max rel loss diff {d:.2e}");
    assert!(d < REL_TOL);
    assert!(out.iter().all(|o| o.params == out[0].params), "ranks diverged");
    assert!(max_abs_params(&out[0].params, &single) < 1e-4);
}

/// [`cfg`] with per-stage schedules: 22 rows per epoch (the stage boundary falls inside a
/// 4-row step, between the two ranks' micro-batches), the SFT stage run for 2 epochs at half
/// the peak on its own warmup and linear decay, a checkpoint every 4 steps.
fn staged(dir: &Path, mode: DistMode, batch: usize, grad_accum: usize) -> TrainConfig {
    let mut c = cfg(dir, mode, batch, grad_accum);
    c.data.synthetic.rows = 22;
    let sft = &mut c.data.stages[1];
    sft.epochs = 2;
    sft.lr_multiplier = 0.5;
    sft.schedule = Some(ScheduleConfig { warmup_steps: 2, decay: Decay::Linear, min_lr_ratio: 0.2 });
    c.checkpoint.every = 4;
    c
}

#[test]
fn per_stage_schedules_on_two_ranks_match_one_process() {
    let metrics = |d: &Path| read_metrics(&d.join("metrics.jsonl")).unwrap();
    let lrs = |d: &Path| metrics(d).iter().map(|m| (m.lr.to_bits(), m.stage)).collect::<Vec<_>>();
    // One process with batch 4: rows 0–21 stage 0, 22–65 stage 1 (two epochs); 16 full steps,
    // step 6 (rows 20–23) the first of stage 1, as its last row is.
    let r4 = tempfile::tempdir().unwrap();
    let single = run_single(&staged(r4.path(), DistMode::None, 4, 1));
    let reference = metrics(r4.path());
    assert_eq!(reference.len(), 16);
    let c = staged(r4.path(), DistMode::None, 4, 1);
    for m in &reference {
        let step = m.step - 1;
        let (stage, want) = if step < 5 {
            (0, c.schedule.lr(c.optimizer.lr, step, 16))
        } else {
            (1, c.data.stages[1].schedule.as_ref().unwrap().lr(0.5 * c.optimizer.lr, step - 5, 11))
        };
        assert_eq!((m.stage, m.lr), (Some(stage), want), "step {}", m.step);
    }
    for mode in [DistMode::Ddp, DistMode::Zero2] {
        let dir = tempfile::tempdir().unwrap();
        let out = run_ranks(&staged(dir.path(), mode, 2, 1), 2, None);
        assert!(out.iter().all(|o| o.steps == 16));
        // Every step at the same learning rate and stage, bit for bit; losses within tolerance.
        assert_eq!(lrs(dir.path()), lrs(r4.path()), "{mode:?}");
        let d = max_rel(&losses(dir.path()), &losses(r4.path()));
        eprintln!("{mode:?} 2 ranks with stage schedules: max rel loss diff {d:.2e}");
        assert!(d < REL_TOL, "{mode:?}");
        assert_eq!(out[0].params, out[1].params, "{mode:?}: ranks diverged");
        assert!(max_abs_params(&out[0].params, &single) < 1e-4, "{mode:?}");
        // Checkpoints every 4 steps and at the end of stage 0 (step 5).
        let ck: Vec<u64> = checkpoint::list(&dir.path().join("checkpoints")).unwrap().iter().map(|c| c.0).collect();
        assert_eq!(ck, [4, 5, 8, 12, 16], "{mode:?}");
    }
    // Stopped in the middle of the stage schedule (after step 10, last checkpoint at 8): the
    // resumed ranks continue it exactly.
    let full = tempfile::tempdir().unwrap();
    let out = run_ranks(&staged(full.path(), DistMode::Ddp, 2, 1), 2, None);
    let cut = tempfile::tempdir().unwrap();
    run_ranks(&staged(cut.path(), DistMode::Ddp, 2, 1), 2, Some(10));
    let resumed = run_ranks(&staged(cut.path(), DistMode::Ddp, 2, 1), 2, None);
    assert_eq!(lrs(cut.path()), lrs(full.path()));
    let bits = |d: &Path| losses(d).iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(cut.path()), bits(full.path()));
    assert_eq!(resumed[0].params, out[0].params);
}

#[test]
fn zero_checkpoints_are_consolidated_load_anywhere_and_resume_exactly() {
    let spec = |d: &Path| cfg(d, DistMode::Zero2, 2, 1);
    // Uninterrupted 2-rank run, and a DDP run whose full optimizer state is the reference.
    let full = tempfile::tempdir().unwrap();
    let out = run_ranks(&spec(full.path()), 2, None);
    let ddp = tempfile::tempdir().unwrap();
    run_ranks(&cfg(ddp.path(), DistMode::Ddp, 2, 1), 2, None);
    let arch = Qwen2Config::preset("test").unwrap();
    let specs = param_specs(&arch);
    let last = |d: &Path| checkpoint::list(&d.join("checkpoints")).unwrap().pop().unwrap().1;
    // The model file holds rank 0's final weights (f32), every tensor at its HF name and shape.
    let w = checkpoint::load_weights(&last(full.path()), &specs, &Device::Cpu).unwrap();
    let w: Vec<Vec<f32>> = w.iter().map(|t| t.flatten_all().unwrap().to_vec1().unwrap()).collect();
    assert_eq!(w, out[0].params);
    // The gathered optimizer state matches the DDP run's full state.
    let decay: Vec<bool> = specs.iter().map(|s| !s.is_norm_or_bias()).collect();
    let zo = checkpoint::load_optimizer(&last(full.path()), &specs, &decay, &Device::Cpu).unwrap();
    let dd = checkpoint::load_optimizer(&last(ddp.path()), &specs, &decay, &Device::Cpu).unwrap();
    for (i, (a, b)) in zo.iter().zip(&dd).enumerate() {
        for (x, y) in [(&a.master, &b.master), (&a.exp_avg, &b.exp_avg), (&a.exp_avg_sq, &b.exp_avg_sq)] {
            let diff = (x - y).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
            let scale = y.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap().max(1e-12);
            assert!(diff <= 1e-4 * scale, "{}: ZeRO vs DDP optimizer state differs by {diff} (scale {scale})", specs[i].name);
        }
    }

    // Killed after 8 of 12 steps (last checkpoint at the stage end, step 6): the resumed run
    // logs the same losses and ends with the same weights, bit for bit.
    let cut = tempfile::tempdir().unwrap();
    run_ranks(&spec(cut.path()), 2, Some(8));
    let resumed = run_ranks(&spec(cut.path()), 2, None);
    let (a, b) = (losses(cut.path()), losses(full.path()));
    assert_eq!(a.iter().map(|x| x.to_bits()).collect::<Vec<_>>(), b.iter().map(|x| x.to_bits()).collect::<Vec<_>>());
    assert_eq!(resumed[0].params, out[0].params);

    // Another world size cannot resume it exactly, and says so.
    let port = free_port();
    let c = spec(cut.path());
    let err = std::thread::scope(|s| {
        let hs: Vec<_> = (0..3)
            .map(|rank| {
                let c = c.clone();
                s.spawn(move || {
                    let launch = Launch::local(rank, 3, port);
                    let comm = dist::connect(&c.distributed, &launch, &Device::Cpu).unwrap();
                    let src = RankSplit::new(open_source(&c, 128).unwrap(), rank, 3).unwrap();
                    Trainer::new_distributed(&c, Box::new(src), comm).err().map(|e| e.to_string())
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect::<Vec<_>>()
    });
    let e = err[0].as_ref().expect("a 3-rank resume of a 2-rank run fails");
    assert!(e.contains("written by a run of 2 ranks, this run has 3"), "{e}");

    // The consolidated checkpoint starts a 1-rank run (model.from) with the same weights.
    let one = tempfile::tempdir().unwrap();
    let mut c1 = cfg(one.path(), DistMode::None, 4, 1);
    c1.model = ModelConfig { from: Some(last(full.path())), ..Default::default() };
    c1.max_steps = Some(2);
    let tr = Trainer::new(&c1, open_source(&c1, 128).unwrap()).unwrap();
    assert_eq!(flat_params(&tr), out[0].params);
    let mut tr = tr;
    let s = tr.run().unwrap();
    assert_eq!(s.steps, 2);
    assert!(s.final_loss.unwrap().is_finite());
}

fn write_toml(dir: &Path, mode: &str) -> std::path::PathBuf {
    let text = format!(
        r#"stages = ["train:t"]
[train.t]
output = "{out}"
batch_size = 2
seq_len = 32
seed = 5
[train.t.model]
preset = "test"
[train.t.optimizer]
lr = 0.01
[train.t.checkpoint]
every = 0
dtype = "f32"
[train.t.metrics]
progress = false
[train.t.data.synthetic]
rows = 24
{dist}"#,
        out = dir.join("run").display(),
        // "auto" stands for no distributed section at all.
        dist = if mode == "auto" { String::new() } else { format!("[train.t.distributed]\nmode = \"{mode}\"\ntimeout_s = 60\n") }
    );
    let p = dir.join(format!("train-{mode}.toml"));
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn the_cli_runs_one_process_per_rank_from_torchrun_variables() {
    // Reference: one process with batch 4 (the same rows as 2 ranks of batch 2).
    let one = tempfile::tempdir().unwrap();
    let p = write_toml(one.path(), "none");
    let text = std::fs::read_to_string(&p).unwrap().replace("batch_size = 2", "batch_size = 4");
    std::fs::write(&p, text).unwrap();
    let o = Command::new(BIN).arg("train").arg(&p).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let reference = losses(&one.path().join("run"));
    assert_eq!(reference.len(), 6);

    let two = tempfile::tempdir().unwrap();
    let p = write_toml(two.path(), "zero1");
    let port = free_port().to_string();
    let kids: Vec<_> = (0..2)
        .map(|r| {
            Command::new(BIN)
                .arg("train")
                .arg(&p)
                .env("RANK", r.to_string())
                .env("WORLD_SIZE", "2")
                .env("LOCAL_RANK", r.to_string())
                .env("MASTER_ADDR", "127.0.0.1")
                .env("MASTER_PORT", &port)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for k in kids {
        let o = k.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let summary: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(summary["steps"], 6);
    }
    let d = max_rel(&losses(&two.path().join("run")), &reference);
    eprintln!("CLI zero1 2 processes vs 1 process: max rel loss diff {d:.2e}");
    assert!(d < REL_TOL);
}

#[test]
fn bad_launcher_values_fail_before_training() {
    let dir = tempfile::tempdir().unwrap();
    let p = write_toml(dir.path(), "ddp");
    let run = |vars: &[(&str, &str)]| {
        let mut c = Command::new(BIN);
        c.arg("train").arg(&p).env_remove("RANK").env_remove("WORLD_SIZE").env_remove("SLURM_PROCID");
        for (k, v) in vars {
            c.env(k, v);
        }
        let o = c.output().unwrap();
        assert!(!o.status.success());
        String::from_utf8_lossy(&o.stderr).to_string()
    };
    let e = run(&[("RANK", "2"), ("WORLD_SIZE", "2"), ("LOCAL_RANK", "0"), ("MASTER_ADDR", "127.0.0.1"), ("MASTER_PORT", "1234")]);
    assert!(e.contains("env RANK: rank 2 is not below the world size 2"), "{e}");
    let e = run(&[("RANK", "0"), ("WORLD_SIZE", "2")]);
    assert!(e.contains("missing: LOCAL_RANK, MASTER_ADDR, MASTER_PORT"), "{e}");
    let e = run(&[("SLURM_PROCID", "0"), ("SLURM_NTASKS", "two"), ("SLURM_LOCALID", "0")]);
    assert!(e.contains("env SLURM_NTASKS: \"two\" is not a non-negative integer"), "{e}");
    // Rank 1 of 2 whose rank 0 never comes: a clear timeout, not a hang.
    let p2 = dir.path().join("short.toml");
    std::fs::write(&p2, std::fs::read_to_string(&p).unwrap().replace("timeout_s = 60", "timeout_s = 1")).unwrap();
    let port = free_port().to_string();
    let o = Command::new(BIN)
        .arg("train")
        .arg(&p2)
        .envs([("RANK", "1"), ("WORLD_SIZE", "2"), ("LOCAL_RANK", "1"), ("MASTER_ADDR", "127.0.0.1"), ("MASTER_PORT", port.as_str())])
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && e.contains("rank 1: connect to rank 0 at 127.0.0.1:"), "{e}");
}

/// `coretech train` processes with torchrun's variables, for ranks `0..world`.
fn spawn_ranks(config: &Path, world: usize, vars: &[(&str, String)]) -> Vec<std::process::Child> {
    (0..world)
        .map(|r| {
            let mut c = Command::new(BIN);
            c.arg("train").arg(config).env_remove("SLURM_PROCID");
            c.envs([
                ("RANK", r.to_string()),
                ("WORLD_SIZE", world.to_string()),
                ("LOCAL_RANK", r.to_string()),
                ("LOCAL_WORLD_SIZE", world.to_string()),
                ("MASTER_ADDR", "127.0.0.1".to_string()),
            ]);
            c.envs(vars.iter().map(|(k, v)| (*k, v.as_str())));
            c.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap()
        })
        .collect()
}

/// The 1-process, batch-4 reference losses of `write_toml` (the rows 2 ranks of batch 2 read).
fn reference_losses(dir: &Path) -> Vec<f64> {
    let p = write_toml(dir, "none");
    let text = std::fs::read_to_string(&p).unwrap().replace("batch_size = 2", "batch_size = 4");
    std::fs::write(&p, text).unwrap();
    let o = Command::new(BIN).arg("train").arg(&p).env_remove("RANK").env_remove("WORLD_SIZE").output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    losses(&dir.join("run"))
}

#[test]
fn a_torchrun_launch_whose_agent_holds_master_port_trains_one_data_parallel_run() {
    let one = tempfile::tempdir().unwrap();
    let reference = reference_losses(one.path());
    assert_eq!(reference.len(), 6);

    // The stand-in agent holds MASTER_PORT with its store, as torchrun's does; the config has no
    // distributed section, so the two ranks train one data-parallel (ddp) run.
    let store = c10d_store::StoreServer::start();
    let two = tempfile::tempdir().unwrap();
    let p = write_toml(two.path(), "auto");
    let vars = [
        ("MASTER_PORT", store.port.to_string()),
        ("TORCHELASTIC_USE_AGENT_STORE", "True".to_string()),
        ("TORCHELASTIC_RESTART_COUNT", "0".to_string()),
        ("TORCHELASTIC_RUN_ID", "test".to_string()),
    ];
    for k in spawn_ranks(&p, 2, &vars) {
        let o = k.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let summary: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(summary["steps"], 6);
    }
    // Rank 0 published a port of its own, not the agent's.
    let addr = String::from_utf8(store.get("/coretech/attempt_0/rank0_addr").expect("rank 0 published its address")).unwrap();
    let port: u16 = addr.rsplit(':').next().unwrap().parse().unwrap();
    assert!(addr.starts_with("127.0.0.1:") && port != store.port, "{addr}");
    assert_eq!(*store.shared.rejected.lock().unwrap(), 0, "every connection validated first");
    // One run: 6 steps logged once (not every step twice), losses of the 1-process run.
    let l = losses(&two.path().join("run"));
    assert_eq!(l.len(), 6);
    let d = max_rel(&l, &reference);
    eprintln!("torchrun-style (agent store) 2 processes vs 1 process: max rel loss diff {d:.2e}");
    assert!(d < REL_TOL, "{l:?} vs {reference:?}");
}

#[test]
fn mode_none_under_a_launch_of_several_ranks_fails_instead_of_training_copies() {
    let dir = tempfile::tempdir().unwrap();
    let p = write_toml(dir.path(), "none");
    let port = free_port().to_string();
    for k in spawn_ranks(&p, 2, &[("MASTER_PORT", port)]) {
        let o = k.wait_with_output().unwrap();
        let e = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && e.contains("distributed.mode") && e.contains("started 2 ranks"), "{e}");
    }
    assert!(!dir.path().join("run/metrics.jsonl").exists(), "nothing trained");
}

#[test]
fn the_store_client_speaks_the_c10d_protocol() {
    let store = c10d_store::StoreServer::start();
    let t = Duration::from_secs(5);
    let mut a = StoreClient::connect("127.0.0.1", store.port, t).unwrap();
    let mut b = StoreClient::connect("127.0.0.1", store.port, t).unwrap();
    // b waits for a key a sets later.
    let h = std::thread::spawn(move || b.get("k/1", Duration::from_secs(5)).unwrap());
    std::thread::sleep(Duration::from_millis(200));
    a.set("k/1", b"10.0.0.1:4242").unwrap();
    assert_eq!(h.join().unwrap(), b"10.0.0.1:4242");
    // A key that never comes: the wait is cancelled and the timeout named; the connection stays usable.
    let e = a.get("never", Duration::from_millis(300)).unwrap_err().to_string();
    assert!(e.contains("wait for never") && e.contains("did not appear within 0.3 s"), "{e}");
    a.set("k/2", b"x").unwrap();
    assert_eq!(a.get("k/2", t).unwrap(), b"x");
    assert_eq!(*store.shared.rejected.lock().unwrap(), 0);
}

/// torchrun itself, where it is installed (tests/compat/check_torchrun.py; SKIPPED otherwise).
#[test]
fn real_torchrun_when_installed() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/compat/check_torchrun.py");
    let mut pys: Vec<std::path::PathBuf> = std::env::var_os("CORETECH_PYTHON").map(Into::into).into_iter().collect();
    pys.push(Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python"));
    pys.push("python3".into());
    let Some(py) =
        pys.into_iter().find(|p| Command::new(p).args(["-c", "import torch.distributed.run"]).output().is_ok_and(|o| o.status.success()))
    else {
        eprintln!("SKIPPED tests/compat/check_torchrun.py: no python3 with torch (torchrun); set CORETECH_PYTHON");
        return;
    };
    let o = Command::new(py).arg(&script).arg(BIN).output().unwrap();
    eprintln!("{}", String::from_utf8_lossy(&o.stdout));
    assert!(
        o.status.success(),
        "check_torchrun.py failed:\n{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn the_distributed_example_config_parses() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let c = coretech::config::PipelineConfig::load(&root.join("pipelines/train-dist.toml")).unwrap();
    assert_eq!(c.train["cpt"].distributed.mode, DistMode::Zero2);
    // The sbatch script names it.
    let sbatch = std::fs::read_to_string(root.join("scripts/train-dist.sbatch")).unwrap();
    assert!(sbatch.contains("pipelines/train-dist.toml"));
}
