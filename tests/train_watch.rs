//! Watching a run: validation loss on a held-out shard directory every N steps, at stage ends
//! and at the end (in metrics.jsonl, the same after a resume and under data parallelism),
//! TensorBoard event files that decode (and open in TensorBoard's EventAccumulator where the
//! `tensorboard` package is installed), log lines when stderr is not a terminal, and loss.svg
//! with stage boundaries, validation loss, integer step ticks and the learning rate.

use std::path::{Path, PathBuf};
use std::process::Command;

use coretech::shard::tokens::{self, Columns, Row};
use coretech::shard::{Manifest, ShardWriter, WriterConfig};
use coretech::train::checkpoint::{CheckpointConfig, SaveDtype};
use coretech::train::config::{ModelConfig, TrainConfig};
use coretech::train::data::{DataConfig, StageConfig, StageKind, SyntheticConfig};
use coretech::train::dist::{self, DistConfig, DistMode, Launch, RankSplit};
use coretech::train::metrics::{read_metrics, read_val_metrics, MetricsConfig, ValMetrics};
use coretech::train::tensorboard::read_events;
use coretech::train::trainer::{open_source, Trainer};
use coretech::train::validation::{ValSet, ValidationConfig};

const BIN: &str = env!("CARGO_BIN_EXE_coretech");
const SEQ: usize = 32;

/// A held-out SFT shard set (ids below the `test` preset's vocabulary of 128, loss on the
/// second half of each segment), 3 row groups.
fn write_heldout(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let cols = Columns { loss_mask: true, stage: false };
    let mut m = Manifest { kind: "sft".into(), tool_version: "test".into(), ..Default::default() };
    m.info.insert("seq_len".into(), SEQ.into());
    let rows: Vec<Row> = (0..20u32)
        .map(|i| {
            let seg_lens = vec![10 + i % 7, 12];
            let real: usize = seg_lens.iter().map(|&l| l as usize).sum();
            let mut ids: Vec<u32> = (0..real as u32).map(|t| (i * 7 + t * 3) % 128).collect();
            ids.resize(SEQ, 0);
            let mut mask = Vec::with_capacity(SEQ);
            for &l in &seg_lens {
                mask.extend((0..l).map(|t| u8::from(t >= l / 2)));
            }
            mask.resize(SEQ, 0);
            Row { input_ids: ids, seg_lens, loss_mask: Some(mask), sources: vec!["t".into(), "t".into()], stage: None }
        })
        .collect();
    let path = dir.join("part-00000.parquet");
    let mut w = ShardWriter::create(&path, tokens::schema(cols), &WriterConfig { row_group_rows: 7, ..Default::default() }).unwrap();
    for c in rows.chunks(7) {
        w.write(&tokens::to_batch(c, cols)).unwrap();
    }
    m.shards.push(w.finish().unwrap());
    m.save(dir).unwrap();
}

/// 48 rows over two stages (CPT, then SFT): 12 steps of batch 4 in one process, or of 2 ranks ×
/// batch 2; validation every 4 steps.
fn cfg(dir: &Path, heldout: &Path, batch: usize, mode: DistMode) -> TrainConfig {
    TrainConfig {
        output: dir.to_path_buf(),
        seed: 3,
        model: ModelConfig { preset: Some("test".into()), ..Default::default() },
        batch_size: batch,
        seq_len: SEQ,
        data: DataConfig {
            stages: vec![
                StageConfig { name: "cpt".into(), ..Default::default() },
                StageConfig { name: "sft".into(), kind: StageKind::Sft, ..Default::default() },
            ],
            synthetic: SyntheticConfig { rows: 24, vocab: 0, pool_docs: 6, min_doc_len: 5, max_doc_len: 20, prompt_fraction: 0.4 },
            ..Default::default()
        },
        checkpoint: CheckpointConfig { every: 0, keep_last: 0, dtype: SaveDtype::F32, ..Default::default() },
        metrics: MetricsConfig { progress: false, ..Default::default() },
        validation: ValidationConfig {
            sets: vec![ValSet { name: "heldout".into(), shards: heldout.to_path_buf() }],
            every: 4,
            max_batches: 3,
            batch_size: None,
        },
        distributed: DistConfig { mode, timeout_s: 60.0, ..Default::default() },
        ..Default::default()
    }
}

fn vals(dir: &Path) -> Vec<ValMetrics> {
    read_val_metrics(&dir.join("metrics.jsonl")).unwrap()
}

fn events_file(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("events.out.tfevents."))
        .collect();
    v.sort();
    v
}

#[test]
fn validation_runs_every_n_steps_at_stage_ends_and_at_the_end_and_resumes_without_duplicates() {
    let tmp = tempfile::tempdir().unwrap();
    let heldout = tmp.path().join("heldout");
    write_heldout(&heldout);
    let full = tmp.path().join("full");
    let c = cfg(&full, &heldout, 4, DistMode::None);
    let mut tr = Trainer::new(&c, open_source(&c, 128).unwrap()).unwrap();
    tr.run().unwrap();
    let v = vals(&full);
    // Every 4 steps (4, 8, 12), at the stage end after step 6, at the end (12, once).
    assert_eq!(v.iter().map(|r| r.step).collect::<Vec<_>>(), [4, 6, 8, 12]);
    assert_eq!(v.iter().map(|r| r.stage).collect::<Vec<_>>(), [Some(0), Some(0), Some(1), Some(1)]);
    assert!(v.iter().all(|r| r.set == "heldout" && r.batches == 3 && r.val_loss.is_finite() && r.val_loss > 0.0));
    // 3 batches of 4 rows: the masked halves of 12 rows' segments (minus first positions).
    assert!(v.iter().all(|r| r.targets == v[0].targets && r.targets > 100), "{v:?}");
    // The model learns: validation loss moves between evaluations.
    assert_ne!(v[0].val_loss, v[3].val_loss);
    // The training lines are unchanged by validation: 12 steps, no val line among them.
    assert_eq!(read_metrics(&full.join("metrics.jsonl")).unwrap().len(), 12);

    // Killed after 9 steps (last checkpoint at the stage end, step 6): the resumed run writes
    // each validation once, with the uninterrupted run's losses.
    let cut = tmp.path().join("cut");
    let c2 = cfg(&cut, &heldout, 4, DistMode::None);
    let mut tr = Trainer::new(&c2, open_source(&c2, 128).unwrap()).unwrap();
    tr.run_steps(9).unwrap();
    drop(tr);
    assert_eq!(vals(&cut).iter().map(|r| r.step).collect::<Vec<_>>(), [4, 6, 8]);
    let mut tr = Trainer::new(&c2, open_source(&c2, 128).unwrap()).unwrap();
    assert_eq!(tr.resumed_from, Some(6));
    tr.run().unwrap();
    let (a, b) = (vals(&cut), vals(&full));
    assert_eq!(
        a.iter().map(|r| (r.step, r.val_loss.to_bits())).collect::<Vec<_>>(),
        b.iter().map(|r| (r.step, r.val_loss.to_bits())).collect::<Vec<_>>()
    );

    // TensorBoard: one event file per process start, CRCs valid, the scalars of metrics.jsonl.
    let files = events_file(&full);
    assert_eq!(files.len(), 1);
    let (version, scalars) = read_events(&files[0]).unwrap();
    assert_eq!(version, "brain.Event:2");
    let tag = |t: &str| scalars.iter().filter(|s| s.1 == t).map(|s| (s.0, s.2)).collect::<Vec<_>>();
    let steps = read_metrics(&full.join("metrics.jsonl")).unwrap();
    assert_eq!(tag("train/loss"), steps.iter().map(|m| (m.step as i64, m.loss.unwrap() as f32)).collect::<Vec<_>>());
    for t in ["train/lr", "train/grad_norm", "train/tokens_per_s", "train/stage"] {
        assert_eq!(tag(t).len(), 12, "{t}");
    }
    assert_eq!(tag("val/loss"), b.iter().map(|r| (r.step as i64, r.val_loss as f32)).collect::<Vec<_>>());
    assert_eq!(tag("val/heldout/loss").len(), 4);
    assert_eq!(events_file(&cut).len(), 2, "the resumed process writes its own event file");
    tensorboard_compat(&full, 12, 4);

    // loss.svg: both stages named at their boundary, the validation series, the lr axis, and
    // step ticks that are integers.
    let svg = std::fs::read_to_string(full.join("loss.svg")).unwrap();
    let texts: Vec<&str> = svg.split("<text").skip(1).map(|t| t[t.find('>').unwrap() + 1..t.find("</text>").unwrap()].trim()).collect();
    for want in ["cpt", "sft", "validation loss: heldout", "training loss", "learning rate (right axis)", "step"] {
        assert!(texts.contains(&want), "loss.svg lacks the text {want:?}: {texts:?}");
    }
    // Step ticks are the integers 0..=12 (not "2.0", "2.5", …): 13 labels.
    let ticks: Vec<String> = (0..=12).map(|i| i.to_string()).collect();
    assert!(ticks.iter().all(|t| texts.contains(&t.as_str())), "{texts:?}");
    assert!(!texts.iter().any(|t| ["0.5", "1.5", "2.0", "2.5", "12.0"].contains(t)), "{texts:?}");
}

#[test]
fn validation_under_data_parallelism_equals_one_process() {
    let tmp = tempfile::tempdir().unwrap();
    let heldout = tmp.path().join("heldout");
    write_heldout(&heldout);
    let one = tmp.path().join("one");
    let c = cfg(&one, &heldout, 4, DistMode::None);
    Trainer::new(&c, open_source(&c, 128).unwrap()).unwrap().run().unwrap();
    let two = tmp.path().join("two");
    let c2 = cfg(&two, &heldout, 2, DistMode::Ddp);
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    std::thread::scope(|s| {
        for rank in 0..2 {
            let c2 = c2.clone();
            s.spawn(move || {
                let launch = Launch::local(rank, 2, port);
                let comm = dist::connect(&c2.distributed, &launch, &candle_core::Device::Cpu).unwrap();
                let src = RankSplit::new(open_source(&c2, 128).unwrap(), rank, 2).unwrap();
                Trainer::new_distributed(&c2, Box::new(src), comm).unwrap().run().unwrap();
            });
        }
    });
    let (a, b) = (vals(&one), vals(&two));
    assert_eq!(a.iter().map(|r| (r.step, r.targets)).collect::<Vec<_>>(), b.iter().map(|r| (r.step, r.targets)).collect::<Vec<_>>());
    for (x, y) in a.iter().zip(&b) {
        let d = (x.val_loss - y.val_loss).abs() / x.val_loss;
        assert!(d < 1e-5, "step {}: 1 process {} vs 2 ranks {} (rel {d:.2e})", x.step, x.val_loss, y.val_loss);
    }
}

#[test]
fn off_a_terminal_the_cli_logs_a_line_every_n_steps() {
    let tmp = tempfile::tempdir().unwrap();
    let heldout = tmp.path().join("heldout");
    write_heldout(&heldout);
    let toml = format!(
        r#"stages = ["train:t"]
[train.t]
output = "{out}"
batch_size = 4
seq_len = 32
[train.t.model]
preset = "test"
[train.t.checkpoint]
every = 0
dtype = "f32"
[train.t.metrics]
log_every = 5
[[train.t.data.stages]]
name = "cpt"
[train.t.data.synthetic]
rows = 48
[train.t.validation]
every = 6
[[train.t.validation.sets]]
name = "heldout"
shards = "{heldout}"
"#,
        out = tmp.path().join("run").display(),
        heldout = heldout.display()
    );
    let p = tmp.path().join("t.toml");
    std::fs::write(&p, toml).unwrap();
    // stderr is a pipe here, as in a Slurm log: the bar is hidden and lines are logged.
    let o = Command::new(BIN).arg("train").arg(&p).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    let lines: Vec<&str> = err.lines().filter(|l| l.contains("tokens/s")).collect();
    // Steps 1 (the first), 5, 10 and 12 (the last) of 12.
    assert_eq!(lines.len(), 4, "{err}");
    for (l, step) in lines.iter().zip(["step 1/12", "step 5/12", "step 10/12", "step 12/12"]) {
        assert!(l.contains(step) && l.contains("stage 0 (cpt)") && l.contains("loss ") && l.contains("lr ") && l.contains("eta "), "{l}");
    }
    assert_eq!(err.lines().filter(|l| l.contains("validation heldout")).count(), 2, "{err}");
    assert!(!err.contains('\u{1b}'), "no colour codes in a log file: {err}");
}

/// Opens the run directory with TensorBoard's own reader (tests/compat/check_tensorboard.py).
fn tensorboard_compat(run: &Path, steps: usize, evals: usize) {
    let mut candidates: Vec<PathBuf> = std::env::var_os("CORETECH_PYTHON").map(PathBuf::from).into_iter().collect();
    candidates.push(Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python"));
    candidates.push("python3".into());
    let import = "from tensorboard.backend.event_processing.event_accumulator import EventAccumulator";
    let Some(py) = candidates.into_iter().find(|p| Command::new(p).args(["-c", import]).output().is_ok_and(|o| o.status.success())) else {
        eprintln!("SKIPPED tests/compat/check_tensorboard.py: no python3 with tensorboard (set CORETECH_PYTHON or create .venv)");
        return;
    };
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/compat/check_tensorboard.py");
    let o = Command::new(py).arg(script).arg(run).arg(steps.to_string()).arg(evals.to_string()).output().unwrap();
    eprintln!("{}", String::from_utf8_lossy(&o.stdout));
    assert!(
        o.status.success(),
        "check_tensorboard.py failed:\n{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}
