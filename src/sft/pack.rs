//! SFT token shards: whole examples packed into rows of `seq_len` tokens, one curriculum stage
//! per row, written atomically with a manifest.
//!
//! The schema is [`crate::shard::tokens::sft_schema`] (the token shard's columns with its optional
//! `loss_mask` and `stage`, then SFT's per-segment `task` and `example_id`): `input_ids` list<uint32> (exactly `seq_len`,
//! padded with `<|endoftext|>`), `seg_lens` list<uint32> (one per example; padding is not a
//! segment, as in [`crate::shard::Batch::row_layout`]), `loss_mask` list<uint8> (1 on answer
//! tokens and the `<|im_end|>\n` closing them, 0 on prompts and padding), `source` list<utf8>
//! (dataset of each segment), `stage` uint32, then per segment `task` and `example_id`
//! list<utf8>. A row holds examples of several datasets and tasks, hence lists, one per segment.
//!
//! Packing is the crate's whole-example best fit ([`crate::pack::bestfit`]), one stage at a
//! time so rows never mix stages and come out in curriculum order.

use std::path::Path;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;

use crate::error::{Error, Result};
use crate::pack::bestfit::{pack_examples, Example};
use crate::shard::{tokens, ShardInfo, ShardWriter, WriterConfig};

/// One example ready to pack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackItem {
    /// Example id.
    pub id: String,
    /// Task.
    pub task: String,
    /// Dataset.
    pub source: String,
    /// Token ids (at most `seq_len`).
    pub input_ids: Vec<u32>,
    /// Loss mask, same length.
    pub loss_mask: Vec<u8>,
}

/// One packed row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// Exactly `seq_len` ids.
    pub input_ids: Vec<u32>,
    /// Example lengths in order (sum ≤ `seq_len`).
    pub seg_lens: Vec<u32>,
    /// Loss mask, `seq_len` long.
    pub loss_mask: Vec<u8>,
    /// Curriculum stage.
    pub stage: u32,
    /// Task of each segment.
    pub task: Vec<String>,
    /// Dataset of each segment.
    pub source: Vec<String>,
    /// Example id of each segment.
    pub example_id: Vec<String>,
}

/// Packs `items` (all of one stage, in training order) into rows by best fit
/// ([`crate::pack::bestfit::pack_examples`]): each example goes whole into the open row with the
/// least free space that holds it, at most `open_bins` rows stay open, padding is `pad_id`
/// (mask 0). Rows come out in the packer's order (closing order, then creation order). An item
/// longer than `seq_len` is an error (the caller enforces the cutoff), so no example is split.
pub fn pack_rows(items: &[PackItem], stage: u32, seq_len: usize, pad_id: u32, open_bins: usize) -> Result<Vec<Row>> {
    if seq_len == 0 || open_bins == 0 {
        return Err(Error::Other(format!("sft packing: seq_len {seq_len} and open_bins {open_bins} must be positive")));
    }
    if let Some(it) = items.iter().find(|it| it.input_ids.len() > seq_len) {
        return Err(Error::Other(format!("{}: {} tokens do not fit seq_len {seq_len}", it.id, it.input_ids.len())));
    }
    if let Some(it) = items.iter().find(|it| it.loss_mask.len() != it.input_ids.len()) {
        return Err(Error::Other(format!("{}: loss mask of {} for {} tokens", it.id, it.loss_mask.len(), it.input_ids.len())));
    }
    // The packer records one label per segment; the item's index is that label, so each
    // segment maps back to its example (task, dataset, id) exactly.
    let examples: Vec<Example> = items
        .iter()
        .enumerate()
        .map(|(i, it)| Example {
            ids: it.input_ids.clone(),
            loss_mask: Some(it.loss_mask.clone()),
            source: i.to_string(),
            stage: Some(stage),
        })
        .collect();
    let packed = pack_examples(&examples, seq_len, pad_id, open_bins);
    let mut rows = Vec::with_capacity(packed.len());
    for p in packed {
        let idx: Vec<&PackItem> = p.sources.iter().map(|s| &items[s.parse::<usize>().expect("segment label is an item index")]).collect();
        rows.push(Row {
            loss_mask: p.loss_mask.expect("the SFT packer writes a loss mask"),
            input_ids: p.input_ids,
            seg_lens: p.seg_lens,
            stage,
            task: idx.iter().map(|it| it.task.clone()).collect(),
            source: idx.iter().map(|it| it.source.clone()).collect(),
            example_id: idx.iter().map(|it| it.id.clone()).collect(),
        });
    }
    Ok(rows)
}

/// The Arrow schema of SFT token shards (defined by [`crate::shard::tokens::sft_schema`]).
pub fn schema() -> SchemaRef {
    tokens::sft_schema()
}

/// A record batch of rows.
pub fn to_batch(rows: &[Row]) -> RecordBatch {
    let (token_rows, segments): (Vec<tokens::Row>, Vec<tokens::SftSegments>) = rows
        .iter()
        .map(|r| {
            (
                tokens::Row {
                    input_ids: r.input_ids.clone(),
                    seg_lens: r.seg_lens.clone(),
                    loss_mask: Some(r.loss_mask.clone()),
                    sources: r.source.clone(),
                    stage: Some(r.stage),
                },
                tokens::SftSegments { task: r.task.clone(), example_id: r.example_id.clone() },
            )
        })
        .unzip();
    tokens::sft_to_batch(&token_rows, &segments)
}

/// Writes `rows` as `part-NNNNN.parquet` shards of `rows_per_shard` into `dir`; returns the
/// manifest entries (with token counts: real tokens, padding excluded).
pub fn write_shards(dir: &Path, rows: &[Row], rows_per_shard: usize, cfg: &WriterConfig) -> Result<Vec<ShardInfo>> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    // Shards of an earlier run beyond this one's count must not linger.
    for e in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if (name.starts_with("part-") && name.ends_with(".parquet")) || name.ends_with(".tmp") {
            std::fs::remove_file(e.path()).map_err(|err| Error::io(e.path(), err))?;
        }
    }
    let mut out = Vec::new();
    for (n, chunk) in rows.chunks(rows_per_shard.max(1)).enumerate() {
        let path = dir.join(format!("part-{n:05}.parquet"));
        let mut w = ShardWriter::create(&path, schema(), cfg)?;
        for b in chunk.chunks(cfg.row_group_rows.max(1)) {
            w.write(&to_batch(b))?;
        }
        let mut info = w.finish()?;
        info.tokens = Some(chunk.iter().map(|r| r.seg_lens.iter().map(|&l| l as u64).sum::<u64>()).sum());
        out.push(info);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(id: &str, n: usize) -> PackItem {
        PackItem {
            id: id.into(),
            task: "ipc".into(),
            source: "d".into(),
            input_ids: vec![7; n],
            loss_mask: (0..n).map(|i| (i >= n / 2) as u8).collect(),
        }
    }

    #[test]
    fn best_fit_keeps_examples_whole_and_pads() {
        let items = [item("a", 5), item("b", 4), item("c", 3), item("d", 8)];
        // a opens row 1 (3 free), b row 2 (4 free); c fits row 1 exactly (best fit), closing
        // it; d fills a row of its own; row 2 closes at the end.
        let rows = pack_rows(&items, 1, 8, 0, 64).unwrap();
        let ids: Vec<Vec<String>> = rows.iter().map(|r| r.example_id.clone()).collect();
        assert_eq!(ids, [vec!["a", "c"], vec!["d"], vec!["b"]]);
        let segs: Vec<Vec<u32>> = rows.iter().map(|r| r.seg_lens.clone()).collect();
        assert_eq!(segs, [vec![5, 3], vec![8], vec![4]]);
        for r in &rows {
            assert_eq!((r.input_ids.len(), r.loss_mask.len(), r.stage), (8, 8, 1));
            assert_eq!((r.task.len(), r.source.len()), (r.seg_lens.len(), r.seg_lens.len()));
        }
        assert_eq!(rows[2].input_ids[4..], [0, 0, 0, 0]);
        assert_eq!(rows[2].loss_mask, [0, 0, 1, 1, 0, 0, 0, 0]);
        assert_eq!(rows[0].loss_mask, [0, 0, 1, 1, 1, 0, 1, 1]);
        // One open row: when b opens a second row, the fullest (a) is closed.
        let rows = pack_rows(&items, 1, 8, 0, 1).unwrap();
        let ids: Vec<Vec<String>> = rows.iter().map(|r| r.example_id.clone()).collect();
        assert_eq!(ids, [vec!["a"], vec!["d"], vec!["b", "c"]]);
        let e = pack_rows(&[item("x", 9)], 0, 8, 0, 64).unwrap_err();
        assert!(e.to_string().contains("x: 9 tokens do not fit seq_len 8"), "{e}");
        assert!(pack_rows(&items, 1, 8, 0, 0).unwrap_err().to_string().contains("open_bins 0"));
        assert!(pack_rows(&[], 1, 8, 0, 4).unwrap().is_empty());
    }

    proptest::proptest! {
        /// Every example's tokens and mask appear exactly once, whole, inside one row; rows are
        /// `seq_len` long with padding (mask 0) only after the last segment; packing is a pure
        /// function of its input.
        #[test]
        fn every_example_is_packed_once_and_whole(
            lens in proptest::collection::vec(1usize..=24, 0..60),
            seq_len in 24usize..64,
            open_bins in 1usize..8,
        ) {
            let items: Vec<PackItem> = lens.iter().enumerate().map(|(i, &n)| PackItem {
                id: format!("e{i}"),
                task: format!("t{}", i % 3),
                source: format!("d{}", i % 2),
                // Distinct ids per example and position, so a misplaced token is caught.
                input_ids: (0..n as u32).map(|k| 1 + i as u32 * 100 + k).collect(),
                loss_mask: (0..n).map(|k| ((k + i) % 3 == 0) as u8).collect(),
            }).collect();
            let rows = pack_rows(&items, 2, seq_len, 0, open_bins).unwrap();
            let mut seen = vec![0u32; items.len()];
            for r in &rows {
                proptest::prop_assert_eq!(r.input_ids.len(), seq_len);
                proptest::prop_assert_eq!(r.loss_mask.len(), seq_len);
                proptest::prop_assert_eq!(r.stage, 2);
                proptest::prop_assert_eq!(r.example_id.len(), r.seg_lens.len());
                let mut at = 0usize;
                for (j, &l) in r.seg_lens.iter().enumerate() {
                    let i: usize = r.example_id[j][1..].parse().unwrap();
                    let it = &items[i];
                    proptest::prop_assert_eq!(l as usize, it.input_ids.len());
                    proptest::prop_assert_eq!(&r.input_ids[at..at + l as usize], &it.input_ids[..]);
                    proptest::prop_assert_eq!(&r.loss_mask[at..at + l as usize], &it.loss_mask[..]);
                    proptest::prop_assert_eq!((&r.task[j], &r.source[j]), (&it.task, &it.source));
                    seen[i] += 1;
                    at += l as usize;
                }
                proptest::prop_assert!(at <= seq_len);
                proptest::prop_assert!(r.input_ids[at..].iter().all(|&t| t == 0));
                proptest::prop_assert!(r.loss_mask[at..].iter().all(|&m| m == 0));
            }
            proptest::prop_assert!(seen.iter().all(|&c| c == 1), "{:?}", seen);
            proptest::prop_assert_eq!(pack_rows(&items, 2, seq_len, 0, open_bins).unwrap(), rows);
        }
    }

    #[test]
    fn schema_extends_the_token_shard_schema() {
        let tokens = crate::shard::tokens::schema(crate::shard::tokens::Columns { loss_mask: true, stage: true });
        let ours = schema();
        assert_eq!(&ours.fields()[..tokens.fields().len()], &tokens.fields()[..]);
        let rest: Vec<&str> = ours.fields()[tokens.fields().len()..].iter().map(|f| f.name().as_str()).collect();
        assert_eq!(rest, ["task", "example_id"]);
    }

    #[test]
    fn shards_round_trip_in_parquet() {
        let dir = tempfile::tempdir().unwrap();
        let rows = pack_rows(&[item("a", 5), item("b", 4)], 2, 6, 0, 64).unwrap();
        let infos = write_shards(dir.path(), &rows, 1, &Default::default()).unwrap();
        assert_eq!(infos.len(), 2);
        assert_eq!(infos.iter().map(|i| i.tokens.unwrap()).collect::<Vec<_>>(), [5, 4]);
        let f = std::fs::File::open(dir.path().join("part-00001.parquet")).unwrap();
        let mut r = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(f).unwrap().build().unwrap();
        let b = r.next().unwrap().unwrap();
        assert_eq!(b.schema(), schema());
        assert_eq!(b, to_batch(&rows[1..]));
        // The crate's token-shard reader takes it as a token shard with a mask and stages.
        let tb = crate::shard::tokens::TokenBatch::new(&b, dir.path()).unwrap();
        tb.validate_row(0, 6, dir.path()).unwrap();
        let r = tb.row(0);
        assert_eq!((r.input_ids, r.seg_lens), (rows[1].input_ids.clone(), rows[1].seg_lens.clone()));
        assert_eq!((r.loss_mask, r.sources, r.stage), (Some(rows[1].loss_mask.clone()), rows[1].source.clone(), Some(2)));
    }
}
