//! Curriculum stages with their own epochs and learning-rate schedules: the LR of every step
//! (in `metrics.jsonl`) follows each stage's schedule or multiplier, replay keeps working, and a
//! run stopped in the middle of a stage resumes with the same LRs and losses bit for bit.

use std::path::{Path, PathBuf};

use coretech::shard::tokens::{self, Columns, Row};
use coretech::shard::{Manifest, ShardWriter, WriterConfig};
use coretech::train::checkpoint::{CheckpointConfig, SaveDtype};
use coretech::train::config::{ModelConfig, TrainConfig};
use coretech::train::data::{DataConfig, SourceKind, StageConfig, StageKind, SyntheticConfig};
use coretech::train::metrics::{read_metrics, MetricsConfig};
use coretech::train::optim::AdamWConfig;
use coretech::train::schedule::{Decay, ScheduleConfig};
use coretech::train::trainer::{lr_at, open_source, stage_steps, Trainer};

const SEQ: usize = 16;

fn write_set(dir: &Path, rows: usize, sft: bool) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let cols = Columns { loss_mask: sft, stage: false };
    let mut m = Manifest { kind: "tokens".into(), tool_version: "test".into(), ..Default::default() };
    m.info.insert("seq_len".into(), SEQ.into());
    let rows: Vec<Row> = (0..rows)
        .map(|r| {
            let real = 10 + r % 6;
            let ids: Vec<u32> = (0..SEQ).map(|t| if t < real { ((r * 5 + t * 3) % 120) as u32 + 1 } else { 0 }).collect();
            let loss_mask = sft.then(|| (0..SEQ).map(|t| (t >= 4 && t < real) as u8).collect());
            Row { input_ids: ids, seg_lens: vec![4, real as u32 - 4], loss_mask, sources: vec!["t".into(), "t".into()], stage: None }
        })
        .collect();
    let path = dir.join("part-00000.parquet");
    let mut w = ShardWriter::create(&path, tokens::schema(cols), &WriterConfig { row_group_rows: 4, ..Default::default() }).unwrap();
    for c in rows.chunks(4) {
        w.write(&tokens::to_batch(c, cols)).unwrap();
    }
    m.shards.push(w.finish().unwrap());
    m.save(dir).unwrap();
    dir.to_path_buf()
}

/// Three SFT stages: 1 epoch on the run's schedule; 3 epochs at half the LR;
/// 2 epochs with their own warmup and linear decay (25 % replay in stages 1 and 2).
fn cfg(out: &Path, dirs: &[PathBuf]) -> TrainConfig {
    let stage = |i: usize, epochs: u32| StageConfig {
        name: format!("s{i}"),
        kind: StageKind::Sft,
        shards: Some(dirs[i].clone()),
        epochs,
        ..Default::default()
    };
    TrainConfig {
        output: out.to_path_buf(),
        model: ModelConfig { preset: Some("test".into()), ..Default::default() },
        batch_size: 2,
        seq_len: SEQ,
        grad_accum: 1,
        optimizer: AdamWConfig { lr: 1e-2, weight_decay: 0.0, ..Default::default() },
        schedule: ScheduleConfig { warmup_steps: 2, decay: Decay::Cosine, min_lr_ratio: 0.1 },
        checkpoint: CheckpointConfig { every: 3, keep_last: 2, dtype: SaveDtype::F32, ..Default::default() },
        metrics: MetricsConfig { progress: false, ..Default::default() },
        data: DataConfig {
            source: SourceKind::Shards,
            stages: vec![
                stage(0, 1),
                StageConfig { replay: 0.25, lr_multiplier: 0.5, ..stage(1, 3) },
                StageConfig {
                    replay: 0.25,
                    schedule: Some(ScheduleConfig { warmup_steps: 2, decay: Decay::Linear, min_lr_ratio: 0.0 }),
                    ..stage(2, 2)
                },
            ],
            prefetch: 0,
            ..Default::default()
        },
        ..Default::default()
    }
}

/// (step, stage, lr bits, loss bits) of every step.
fn steps(dir: &Path) -> Vec<(u64, Option<u32>, u64, u64)> {
    read_metrics(&dir.join("metrics.jsonl")).unwrap().iter().map(|m| (m.step, m.stage, m.lr.to_bits(), m.loss.unwrap().to_bits())).collect()
}

#[test]
fn stage_steps_follow_the_last_micro_batch() {
    // 5, 4, 3 micro-batches; grad_accum 2: steps cover [0,1] [2,3] [4,5] [6,7] [8,9] [10,11].
    // Step 2 ends in stage 1 (micro-batch 5), step 4 ends in stage 2 (micro-batch 9).
    assert_eq!(stage_steps(&[5, 4, 3], 2), [(0, 2), (2, 2), (4, 2)]);
    assert_eq!(stage_steps(&[4, 4], 1), [(0, 4), (4, 4)]);
    // An empty stage has no steps and never sets the LR.
    assert_eq!(stage_steps(&[4, 0, 2], 1), [(0, 4), (4, 0), (4, 2)]);
}

#[test]
fn per_stage_epochs_and_schedules_set_every_steps_lr_and_resume_exactly() {
    let data = tempfile::tempdir().unwrap();
    let dirs: Vec<PathBuf> = [6, 4, 4].iter().enumerate().map(|(i, &n)| write_set(&data.path().join(format!("s{i}")), n, true)).collect();
    let full = tempfile::tempdir().unwrap();
    let c = cfg(full.path(), &dirs);
    let src = open_source(&c, 128).unwrap();
    // Stage 0: 6 rows, 1 epoch = 3 micro-batches. Stage 1: 4 rows + 1 replay slot (p - ⌊p/4⌋ = 4 at p = 5)
    // → 3 micro-batches per epoch × 3. Stage 2: 3 micro-batches × 2.
    assert_eq!(src.stage_batches(), Some(vec![3, 9, 6]));
    let s = Trainer::new(&c, src).unwrap().run().unwrap();
    assert_eq!((s.steps, s.total_steps), (18, 18));
    let reference = steps(full.path());
    let stages: Vec<u32> = reference.iter().map(|r| r.1.unwrap()).collect();
    assert_eq!(stages, [[0; 3].as_slice(), &[1; 9], &[2; 6]].concat());
    let lr: Vec<f64> = reference.iter().map(|r| f64::from_bits(r.2)).collect();
    let ss = stage_steps(&[3, 9, 6], 1);
    for (k, &l) in lr.iter().enumerate() {
        assert_eq!(l, lr_at(&c, Some(&ss), k as u64, 18), "step {k}");
    }
    // Stage 0 runs the run's schedule (warmup 2 of 18 steps); stage 1 half of it.
    assert_eq!(&lr[..3], &[c.schedule.lr(1e-2, 0, 18), c.schedule.lr(1e-2, 1, 18), c.schedule.lr(1e-2, 2, 18)]);
    for (k, &l) in lr.iter().enumerate().take(12).skip(3) {
        assert_eq!(l, 0.5 * c.schedule.lr(1e-2, k as u64, 18));
    }
    // Stage 2 restarts: warmup 2 steps to the peak, then linear decay to 0 at its last step.
    let want = [0.005, 0.01, 0.01, 0.01 * 2.0 / 3.0, 0.01 / 3.0, 0.0];
    assert!(lr[12..].iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-15), "{:?}", &lr[12..]);

    // Stopped in the middle of stage 1 (checkpoint at step 6) and of stage 2 (at 15).
    for stop in [7u64, 16] {
        let part = tempfile::tempdir().unwrap();
        let c = cfg(part.path(), &dirs);
        let mut tr = Trainer::new(&c, open_source(&c, 128).unwrap()).unwrap();
        assert!(!tr.run_steps(stop).unwrap());
        drop(tr);
        let mut tr = Trainer::new(&c, open_source(&c, 128).unwrap()).unwrap();
        assert_eq!(tr.resumed_from, Some(stop / 3 * 3));
        tr.run().unwrap();
        assert_eq!(steps(part.path()), reference, "resumed after a stop at step {stop}");
    }
}

#[test]
fn synthetic_stages_report_their_sizes_and_a_stage_schedule_needs_them() {
    let out = tempfile::tempdir().unwrap();
    let c = TrainConfig {
        output: out.path().to_path_buf(),
        model: ModelConfig { preset: Some("test".into()), ..Default::default() },
        batch_size: 3,
        seq_len: SEQ,
        metrics: MetricsConfig { progress: false, ..Default::default() },
        data: DataConfig {
            stages: vec![
                StageConfig { name: "a".into(), ..Default::default() },
                StageConfig { name: "b".into(), epochs: 2, lr_multiplier: 0.1, ..Default::default() },
            ],
            synthetic: SyntheticConfig { rows: 10, ..Default::default() },
            ..Default::default()
        },
        ..Default::default()
    };
    // 10 rows then 20: batches of 3 end at rows 3, 6, 9 (stage a), 12 … 30 (b, from the batch
    // holding row 10 on).
    assert_eq!(open_source(&c, 128).unwrap().stage_batches(), Some(vec![3, 7]));
    let mut tr = Trainer::new(&c, open_source(&c, 128).unwrap()).unwrap();
    tr.run_steps(10).unwrap();
    let lr: Vec<f64> = read_metrics(&out.path().join("metrics.jsonl")).unwrap().iter().map(|m| m.lr).collect();
    assert_eq!(lr[3], 0.1 * c.schedule.lr(c.optimizer.lr, 3, 10));
    // A source that does not know its stage sizes cannot place a stage schedule.
    let batches = vec![open_source(&c, 128).unwrap().next_batch().unwrap().unwrap()];
    let e = Trainer::new(&c, Box::new(coretech::train::data::VecSource::new(batches, 1))).err().unwrap().to_string();
    assert!(e.contains("data.stages") && e.contains("stage sizes"), "{e}");
}
