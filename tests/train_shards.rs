//! Training from token shards (`data.source = "shards"`): a CPT stage then an SFT stage with
//! replay read through the streaming loader, the schedule sized from the shards, an exact resume
//! after an interruption, and the errors a user meets (wrong seq_len, missing directory, a
//! curriculum the loader cannot express).

use std::path::{Path, PathBuf};

use coretech::shard::tokens::{self, Columns, Row};
use coretech::shard::{Manifest, ShardWriter, WriterConfig};
use coretech::train::checkpoint::{CheckpointConfig, SaveDtype};
use coretech::train::config::{ModelConfig, TrainConfig};
use coretech::train::data::{DataConfig, SourceKind, StageConfig, StageKind};
use coretech::train::metrics::{read_metrics, MetricsConfig};
use coretech::train::optim::AdamWConfig;
use coretech::train::trainer::{open_source, Trainer};

const SEQ: usize = 16;

/// A token shard set of `rows` rows (two documents each, ids below 128, a fixed pattern a model
/// can learn), in row groups of 4; SFT sets carry a loss mask over the second document only.
fn write_set(dir: &Path, rows: usize, sft: bool) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let cols = Columns { loss_mask: sft, stage: false };
    let mut m = Manifest { kind: "tokens".into(), tool_version: "test".into(), ..Default::default() };
    m.info.insert("seq_len".into(), SEQ.into());
    let rows: Vec<Row> = (0..rows)
        .map(|r| {
            let real = 10 + r % 6;
            let ids: Vec<u32> = (0..SEQ).map(|t| if t < real { ((r * 7 + t * 3) % 120) as u32 + 1 } else { 0 }).collect();
            let seg_lens = vec![4, real as u32 - 4];
            let loss_mask = sft.then(|| (0..SEQ).map(|t| (t >= 4 && t < real) as u8).collect());
            Row { input_ids: ids, seg_lens, loss_mask, sources: vec!["t".into(), "t".into()], stage: None }
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

fn cfg(out: &Path, cpt: &Path, sft: &Path) -> TrainConfig {
    TrainConfig {
        output: out.to_path_buf(),
        model: ModelConfig { preset: Some("test".into()), ..Default::default() },
        batch_size: 2,
        seq_len: SEQ,
        grad_accum: 2,
        optimizer: AdamWConfig { lr: 1e-2, weight_decay: 0.0, ..Default::default() },
        checkpoint: CheckpointConfig { every: 2, keep_last: 2, dtype: SaveDtype::F32, ..Default::default() },
        metrics: MetricsConfig { progress: false, ..Default::default() },
        data: DataConfig {
            source: SourceKind::Shards,
            stages: vec![
                StageConfig { name: "cpt".into(), shards: Some(cpt.to_path_buf()), epochs: 2, ..Default::default() },
                StageConfig {
                    name: "sft".into(),
                    kind: StageKind::Sft,
                    shards: Some(sft.to_path_buf()),
                    epochs: 2,
                    replay: 0.25,
                    ..Default::default()
                },
            ],
            prefetch: 2,
            ..Default::default()
        },
        ..Default::default()
    }
}

fn losses(dir: &Path) -> Vec<(u64, Option<u64>, u64, u64)> {
    read_metrics(&dir.join("metrics.jsonl"))
        .unwrap()
        .iter()
        .map(|m| (m.step, m.stage.map(u64::from), m.loss.unwrap().to_bits(), m.targets))
        .collect()
}

#[test]
fn trains_a_curriculum_from_shards_and_resumes_exactly() {
    let data = tempfile::tempdir().unwrap();
    let cpt = write_set(&data.path().join("cpt"), 10, false);
    let sft = write_set(&data.path().join("sft"), 6, true);
    let full = tempfile::tempdir().unwrap();
    let c = cfg(full.path(), &cpt, &sft);
    let s = Trainer::new(&c, open_source(&c, 128).unwrap()).unwrap().run().unwrap();
    // CPT: 10 rows × 2 epochs in batches of 2 = 10 micro-batches. SFT: 6 rows + 2 replay slots
    // (25 %) = 8 positions × 2 epochs = 8 micro-batches. 18 micro-batches / grad_accum 2 = 9 steps.
    assert_eq!((s.steps, s.total_steps), (9, 9));
    let reference = losses(full.path());
    assert_eq!(reference.len(), 9);
    assert_eq!(reference.iter().map(|r| r.1).collect::<Vec<_>>(), [0, 0, 0, 0, 0, 1, 1, 1, 1].map(Some).to_vec());
    // CPT counts every next-token target of both documents (3 + real-5 per row), SFT only the
    // masked answer tokens: the first SFT-only step counts fewer targets than any CPT step.
    let cpt_min = reference[..5].iter().map(|r| r.3).min().unwrap();
    assert!(reference[6].3 < cpt_min, "SFT steps count only answer tokens: {reference:?}");

    for stop in [3u64, 6] {
        let part = tempfile::tempdir().unwrap();
        let c = cfg(part.path(), &cpt, &sft);
        let mut tr = Trainer::new(&c, open_source(&c, 128).unwrap()).unwrap();
        assert!(!tr.run_steps(stop).unwrap());
        drop(tr);
        let mut tr = Trainer::new(&c, open_source(&c, 128).unwrap()).unwrap();
        assert_eq!(tr.resumed_from, Some(stop / 2 * 2));
        tr.run().unwrap();
        assert_eq!(losses(part.path()), reference, "resumed after a stop at step {stop}");
    }
}

#[test]
fn max_batches_caps_each_epoch_of_a_stage_and_resumes_exactly() {
    let data = tempfile::tempdir().unwrap();
    let cpt = write_set(&data.path().join("cpt"), 10, false);
    let sft = write_set(&data.path().join("sft"), 6, true);
    let capped = |out: &Path| {
        let mut c = cfg(out, &cpt, &sft);
        c.data.stages[0].max_batches = Some(3);
        c
    };
    let full = tempfile::tempdir().unwrap();
    let c = capped(full.path());
    let s = Trainer::new(&c, open_source(&c, 128).unwrap()).unwrap().run().unwrap();
    // CPT: 3 of 5 micro-batches in each of 2 epochs; SFT: 4 × 2. 14 micro-batches = 7 steps.
    assert_eq!((s.steps, s.total_steps), (7, 7));
    let reference = losses(full.path());
    assert_eq!(reference.iter().map(|r| r.1).collect::<Vec<_>>(), [0, 0, 0, 1, 1, 1, 1].map(Some).to_vec());
    // Stopped inside the capped stage and at its end (the checkpoint at step 2 holds a cursor
    // at the cap of epoch 0): the resumed run skips exactly as the uninterrupted one did.
    for stop in [2u64, 3, 5] {
        let part = tempfile::tempdir().unwrap();
        let c = capped(part.path());
        let mut tr = Trainer::new(&c, open_source(&c, 128).unwrap()).unwrap();
        assert!(!tr.run_steps(stop).unwrap());
        drop(tr);
        let mut tr = Trainer::new(&c, open_source(&c, 128).unwrap()).unwrap();
        tr.run().unwrap();
        assert_eq!(losses(part.path()), reference, "resumed after a stop at step {stop}");
    }
}

#[test]
fn shard_source_errors_name_the_key_or_the_directory() {
    let data = tempfile::tempdir().unwrap();
    let cpt = write_set(&data.path().join("cpt"), 4, false);
    let sft = write_set(&data.path().join("sft"), 4, true);
    let out = tempfile::tempdir().unwrap();

    let c = TrainConfig { seq_len: 32, ..cfg(out.path(), &cpt, &sft) };
    let e = open_source(&c, 128).err().unwrap().to_string();
    assert!(e.contains("seq_len") && e.contains("16"), "{e}");

    let missing = data.path().join("nope");
    let e = open_source(&cfg(out.path(), &missing, &sft), 128).err().unwrap().to_string();
    assert!(e.contains("nope"), "{e}");

    let mut c = cfg(out.path(), &cpt, &sft);
    c.data.stages[0].max_batches = Some(0);
    let e = open_source(&c, 128).err().unwrap().to_string();
    assert!(e.contains("data.stages[0].max_batches"), "{e}");

    let mut c = cfg(out.path(), &cpt, &sft);
    c.data.stages[1].shards = None;
    let e = open_source(&c, 128).err().unwrap().to_string();
    assert!(e.contains("data.stages[1].shards"), "{e}");
}
