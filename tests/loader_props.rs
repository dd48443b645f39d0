//! The loader: over world sizes 1–8 every row is read exactly once per epoch by exactly one
//! rank; save/restore of the cursor at any step continues with the same batches; stages come
//! in order with replay of earlier stages; the order depends on the seed only.

use std::collections::BTreeMap;
use std::path::Path;

use coretech::shard::tokens::{self, Columns, Row};
use coretech::shard::{Batch, Loader, LoaderConfig, Manifest, ShardWriter, WriterConfig};
use proptest::prelude::*;

const SEQ: usize = 6;

/// Writes a token shard set whose row `i` starts with token `base + i`, with shards of the
/// given sizes and row groups of `group` rows; returns the number of rows.
fn write_set(dir: &Path, base: u32, shard_rows: &[usize], group: usize, stage: Option<u32>) -> u64 {
    let cols = Columns { loss_mask: stage.is_some(), stage: stage.is_some() };
    let mut m = Manifest { kind: "tokens".into(), tool_version: "test".into(), ..Default::default() };
    m.info.insert("seq_len".into(), SEQ.into());
    let mut next = base;
    for (k, &n) in shard_rows.iter().enumerate() {
        let rows: Vec<Row> = (0..n)
            .map(|_| {
                let id = next;
                next += 1;
                let real = 1 + (id as usize % SEQ);
                let mut ids = vec![id; real];
                ids.resize(SEQ, 0);
                let seg_lens = if real > 2 { vec![2, real as u32 - 2] } else { vec![real as u32] };
                let sources = seg_lens.iter().map(|_| "t".to_string()).collect();
                let loss_mask = stage.map(|_| (0..SEQ).map(|t| (t < real && t > 0) as u8).collect());
                Row { input_ids: ids, seg_lens, loss_mask, sources, stage }
            })
            .collect();
        let path = dir.join(format!("part-{k:05}.parquet"));
        let mut w =
            ShardWriter::create(&path, tokens::schema(cols), &WriterConfig { row_group_rows: group, ..Default::default() }).unwrap();
        for c in rows.chunks(group.max(1)) {
            w.write(&tokens::to_batch(c, cols)).unwrap();
        }
        m.shards.push(w.finish().unwrap());
    }
    m.save(dir).unwrap();
    (next - base) as u64
}

fn row_ids(b: &Batch) -> Vec<u32> {
    (0..b.batch).map(|r| b.input_ids[r * b.seq_len]).collect()
}

fn all_batches(cfg: LoaderConfig) -> Vec<Batch> {
    Loader::new(cfg).unwrap().map(|b| b.unwrap()).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn every_row_once_per_epoch_over_world_sizes(
        shard_rows in prop::collection::vec(0usize..40, 1..4),
        group in 1usize..9,
        batch_size in 1usize..5,
        epochs in 1u32..3,
        seed in any::<u64>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let n = write_set(dir.path(), 0, &shard_rows, group, None);
        for world in 1..=8usize {
            let mut per_epoch: Vec<BTreeMap<u32, usize>> = vec![BTreeMap::new(); epochs as usize];
            let mut steps = Vec::new();
            for rank in 0..world {
                let cfg = LoaderConfig { stages: vec![vec![dir.path().into()]], batch_size, seed, epochs, rank, world_size: world, prefetch: rank % 2, ..Default::default() };
                let batches = all_batches(cfg);
                steps.push(batches.len());
                // Batches run through the epochs in order; map each to its epoch by position.
                let per = n.div_ceil((world * batch_size) as u64) as usize;
                prop_assert_eq!(batches.len(), per * epochs as usize);
                for (k, b) in batches.iter().enumerate() {
                    prop_assert!(b.batch <= batch_size);
                    prop_assert_eq!(b.input_ids.len(), b.batch * SEQ);
                    for id in row_ids(b) {
                        *per_epoch[k / per.max(1)].entry(id).or_default() += 1;
                    }
                }
            }
            prop_assert!(steps.iter().all(|&s| s == steps[0]), "every rank runs the same number of steps");
            for e in &per_epoch {
                prop_assert_eq!(e.len() as u64, n, "world {}: rows missing", world);
                prop_assert!(e.values().all(|&c| c == 1), "world {}: a row read twice", world);
            }
        }
    }

    #[test]
    fn restore_at_any_step_continues_with_the_same_batches(
        shard_rows in prop::collection::vec(1usize..30, 1..3),
        group in 1usize..7,
        batch_size in 1usize..4,
        world in 1usize..4,
        cut in 0usize..40,
        seed in any::<u64>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        write_set(dir.path(), 0, &shard_rows, group, None);
        let rank = world - 1;
        let cfg = LoaderConfig { stages: vec![vec![dir.path().into()]], batch_size, seed, epochs: 2, rank, world_size: world, prefetch: 2, ..Default::default() };
        let full = all_batches(cfg.clone());
        let cut = cut.min(full.len());
        let mut l = Loader::new(cfg.clone()).unwrap();
        for _ in 0..cut {
            l.next_batch().unwrap().unwrap();
        }
        let state = serde_json::to_string(&l.state()).unwrap();
        drop(l);
        let state: serde_json::Value = serde_json::from_str(&state).unwrap();
        for prefetch in [0, 3] {
            let rest: Vec<Batch> = Loader::restore(LoaderConfig { prefetch, ..cfg.clone() }, &state).unwrap().map(|b| b.unwrap()).collect();
            prop_assert_eq!(&rest[..], &full[cut..]);
        }
    }
}

#[test]
fn batches_follow_the_batch_contract() {
    let dir = tempfile::tempdir().unwrap();
    write_set(dir.path(), 100, &[5], 2, Some(3));
    let b = all_batches(LoaderConfig { stages: vec![vec![dir.path().into()]], batch_size: 5, prefetch: 0, ..Default::default() });
    assert_eq!(b.len(), 1);
    let b = &b[0];
    assert_eq!(b.stage.as_deref(), Some(&[3, 3, 3, 3, 3][..]));
    for r in 0..b.batch {
        let row = &b.input_ids[r * SEQ..(r + 1) * SEQ];
        let id = row[0];
        let real = 1 + (id as usize % SEQ);
        let (mut p, mut s) = (Vec::new(), Vec::new());
        let segs: Vec<u32> = if real > 2 { vec![2, real as u32 - 2] } else { vec![real as u32] };
        Batch::row_layout(&segs, SEQ, &mut p, &mut s);
        assert_eq!(&b.position_ids[r * SEQ..(r + 1) * SEQ], &p[..]);
        assert_eq!(&b.segment_ids[r * SEQ..(r + 1) * SEQ], &s[..]);
        // The stored mask is used as is.
        let mask: Vec<u8> = (0..SEQ).map(|t| (t < real && t > 0) as u8).collect();
        assert_eq!(&b.loss_mask[r * SEQ..(r + 1) * SEQ], &mask[..]);
    }
    // Without a loss_mask column: real tokens count, padding does not.
    let dir2 = tempfile::tempdir().unwrap();
    write_set(dir2.path(), 7, &[1], 1, None);
    let b = &all_batches(LoaderConfig::single(dir2.path(), 1))[0];
    let real = 1 + (7 % SEQ);
    assert_eq!(b.loss_mask, (0..SEQ).map(|t| (t < real) as u8).collect::<Vec<_>>());
    assert_eq!(b.stage, None);
    // A manifest without seq_len (merged task outputs): the rows give it.
    let mut m = Manifest::load(dir2.path()).unwrap();
    m.info.remove("seq_len");
    m.save(dir2.path()).unwrap();
    let l = Loader::new(LoaderConfig::single(dir2.path(), 1)).unwrap();
    assert_eq!(l.seq_len(), SEQ);
    assert_eq!(l.map(|b| b.unwrap()).collect::<Vec<_>>().len(), 1);
}

#[test]
fn stages_in_order_with_replay_of_earlier_rows() {
    let root = tempfile::tempdir().unwrap();
    let (s1, s2) = (root.path().join("s1"), root.path().join("s2"));
    std::fs::create_dir_all(&s1).unwrap();
    std::fs::create_dir_all(&s2).unwrap();
    let n1 = write_set(&s1, 0, &[20], 4, Some(1));
    let n2 = write_set(&s2, 1000, &[30, 10], 4, Some(2));
    let cfg = LoaderConfig {
        stages: vec![vec![s1.clone()], vec![s2.clone()]],
        batch_size: 3,
        seed: 9,
        epochs: 2,
        replay: 0.25,
        prefetch: 1,
        ..Default::default()
    };
    let batches = all_batches(cfg.clone());
    let ids: Vec<u32> = batches.iter().flat_map(row_ids).collect();
    // Stage 1 (both epochs) comes first, without replay.
    let first_stage2 = ids.iter().position(|&i| i >= 1000).unwrap();
    assert_eq!(first_stage2 as u64, 2 * n1);
    assert!(ids[..first_stage2].iter().all(|&i| i < 1000));
    // Stage 2: every stage-2 row twice (two epochs), plus replayed stage-1 rows: 25 % of positions.
    let later = &ids[first_stage2..];
    let own = later.iter().filter(|&&i| i >= 1000).count() as u64;
    let replayed = later.iter().filter(|&&i| i < 1000).count() as u64;
    assert_eq!(own, 2 * n2);
    let share = replayed as f64 / later.len() as f64;
    assert!((0.2..0.3).contains(&share), "replay share {share}");
    let mut counts: BTreeMap<u32, usize> = BTreeMap::new();
    for &i in later.iter().filter(|&&i| i >= 1000) {
        *counts.entry(i).or_default() += 1;
    }
    assert!(counts.values().all(|&c| c == 2) && counts.len() as u64 == n2);
    // Same seed, same order; another seed, another order.
    assert_eq!(all_batches(cfg.clone()), batches);
    let other: Vec<u32> = all_batches(LoaderConfig { seed: 10, ..cfg.clone() }).iter().flat_map(row_ids).collect();
    assert_ne!(other, ids);
    // Epochs differ in order.
    assert_ne!(ids[..n1 as usize], ids[n1 as usize..2 * n1 as usize]);
}

#[test]
fn bad_inputs_and_states_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    write_set(dir.path(), 0, &[4], 2, None);
    let e = Loader::new(LoaderConfig { stages: vec![], ..Default::default() }).err().unwrap().to_string();
    assert!(e.contains("no token shard directories"), "{e}");
    let e = Loader::new(LoaderConfig { rank: 2, world_size: 2, ..LoaderConfig::single(dir.path(), 1) }).err().unwrap().to_string();
    assert!(e.contains("rank 2"), "{e}");
    let e = Loader::new(LoaderConfig::single(dir.path().join("missing"), 1)).err().unwrap().to_string();
    assert!(e.contains("missing"), "{e}");
    let l = Loader::new(LoaderConfig::single(dir.path(), 1)).unwrap();
    let state = l.state();
    let e = Loader::restore(LoaderConfig { batch_size: 2, ..LoaderConfig::single(dir.path(), 1) }, &state).err().unwrap().to_string();
    assert!(e.contains("other data or settings"), "{e}");
    let e = Loader::restore(LoaderConfig::single(dir.path(), 1), &serde_json::json!({"cursor": 3})).err().unwrap().to_string();
    assert!(e.contains("not valid"), "{e}");
    // A shard that lost rows since the manifest was written.
    let m = Manifest::load(dir.path()).unwrap();
    let mut bad = m.clone();
    bad.shards[0].rows += 1;
    bad.save(dir.path()).unwrap();
    let e = Loader::new(LoaderConfig::single(dir.path(), 1)).err().unwrap().to_string();
    assert!(e.contains("part-00000.parquet") && e.contains("manifest says"), "{e}");
    m.save(dir.path()).unwrap();
    // A truncated shard.
    let shard = dir.path().join("part-00000.parquet");
    let bytes = std::fs::read(&shard).unwrap();
    std::fs::write(&shard, &bytes[..bytes.len() / 2]).unwrap();
    let e = Loader::new(LoaderConfig::single(dir.path(), 1)).err().unwrap().to_string();
    assert!(e.contains("part-00000.parquet"), "{e}");
}
