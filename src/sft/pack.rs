//! SFT token shards: whole examples packed into rows of `seq_len` tokens, one curriculum stage
//! per row, written atomically with a manifest.
//!
//! Row columns: `input_ids` list<uint32> (exactly `seq_len`, padded with `<|endoftext|>`),
//! `seg_lens` list<uint32> (one per example; padding is not a segment, as in
//! [`crate::shard::Batch::row_layout`]), `loss_mask` list<uint8> (1 on answer tokens and the
//! `<|im_end|>\n` closing them, 0 on prompts and padding), `stage` uint32, and per segment
//! `task`, `source` (dataset) and `example_id` list<utf8>.
//!
//! The packer here is a plain next-fit in the given order; TODO(lead): swap [`pack_rows`] for
//! `crate::pack`'s whole-example best-fit.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use arrow::array::{ArrayRef, ListBuilder, RecordBatch, StringBuilder, UInt32Array, UInt32Builder, UInt8Builder};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};

use crate::error::{Error, Result};
use crate::shard::{ShardInfo, ShardWriter, WriterConfig};

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

/// Packs `items` (all of one stage, in training order) into rows: next-fit, an example never
/// split, padding with `pad_id` (mask 0). An item longer than `seq_len` is an error (the
/// caller enforces the cutoff).
pub fn pack_rows(items: &[PackItem], stage: u32, seq_len: usize, pad_id: u32) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    let mut cur: Option<Row> = None;
    for it in items {
        let n = it.input_ids.len();
        if n > seq_len {
            return Err(Error::Other(format!("{}: {n} tokens do not fit seq_len {seq_len}", it.id)));
        }
        if cur.as_ref().is_some_and(|r| r.input_ids.len() + n > seq_len) {
            rows.push(finish(cur.take().expect("checked"), seq_len, pad_id));
        }
        let r = cur.get_or_insert_with(|| Row {
            input_ids: Vec::with_capacity(seq_len),
            seg_lens: Vec::new(),
            loss_mask: Vec::with_capacity(seq_len),
            stage,
            task: Vec::new(),
            source: Vec::new(),
            example_id: Vec::new(),
        });
        r.input_ids.extend_from_slice(&it.input_ids);
        r.loss_mask.extend_from_slice(&it.loss_mask);
        r.seg_lens.push(n as u32);
        r.task.push(it.task.clone());
        r.source.push(it.source.clone());
        r.example_id.push(it.id.clone());
    }
    if let Some(r) = cur {
        rows.push(finish(r, seq_len, pad_id));
    }
    Ok(rows)
}

fn finish(mut r: Row, seq_len: usize, pad_id: u32) -> Row {
    r.input_ids.resize(seq_len, pad_id);
    r.loss_mask.resize(seq_len, 0);
    r
}

/// The Arrow schema of SFT token shards.
pub fn schema() -> SchemaRef {
    static S: OnceLock<SchemaRef> = OnceLock::new();
    S.get_or_init(|| {
        let list = |name: &str, t: DataType| Field::new(name, DataType::List(Arc::new(Field::new("item", t, false))), false);
        Arc::new(Schema::new(vec![
            list("input_ids", DataType::UInt32),
            list("seg_lens", DataType::UInt32),
            list("loss_mask", DataType::UInt8),
            Field::new("stage", DataType::UInt32, false),
            list("task", DataType::Utf8),
            list("source", DataType::Utf8),
            list("example_id", DataType::Utf8),
        ]))
    })
    .clone()
}

/// A record batch of rows.
pub fn to_batch(rows: &[Row]) -> RecordBatch {
    let item = |t: DataType| Arc::new(Field::new("item", t, false));
    let mut ids = ListBuilder::new(UInt32Builder::new()).with_field(item(DataType::UInt32));
    let mut segs = ListBuilder::new(UInt32Builder::new()).with_field(item(DataType::UInt32));
    let mut mask = ListBuilder::new(UInt8Builder::new()).with_field(item(DataType::UInt8));
    let mut strs: Vec<ListBuilder<StringBuilder>> =
        (0..3).map(|_| ListBuilder::new(StringBuilder::new()).with_field(item(DataType::Utf8))).collect();
    for r in rows {
        ids.values().append_slice(&r.input_ids);
        ids.append(true);
        segs.values().append_slice(&r.seg_lens);
        segs.append(true);
        mask.values().append_slice(&r.loss_mask);
        mask.append(true);
        for (b, v) in strs.iter_mut().zip([&r.task, &r.source, &r.example_id]) {
            for s in v {
                b.values().append_value(s);
            }
            b.append(true);
        }
    }
    let stage: ArrayRef = Arc::new(rows.iter().map(|r| r.stage).collect::<UInt32Array>());
    let mut cols: Vec<ArrayRef> = vec![Arc::new(ids.finish()), Arc::new(segs.finish()), Arc::new(mask.finish()), stage];
    cols.extend(strs.iter_mut().map(|b| Arc::new(b.finish()) as ArrayRef));
    RecordBatch::try_new(schema(), cols).expect("sft batch matches schema")
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
    fn next_fit_keeps_examples_whole_and_pads() {
        let rows = pack_rows(&[item("a", 5), item("b", 4), item("c", 3), item("d", 8)], 1, 8, 0).unwrap();
        let segs: Vec<Vec<u32>> = rows.iter().map(|r| r.seg_lens.clone()).collect();
        assert_eq!(segs, [vec![5], vec![4, 3], vec![8]]);
        for r in &rows {
            assert_eq!((r.input_ids.len(), r.loss_mask.len(), r.stage), (8, 8, 1));
        }
        assert_eq!(rows[0].input_ids[5..], [0, 0, 0]);
        assert_eq!(rows[0].loss_mask[5..], [0, 0, 0]);
        assert_eq!(rows[1].example_id, ["b", "c"]);
        assert!(pack_rows(&[item("x", 9)], 0, 8, 0).is_err());
    }

    #[test]
    fn shards_round_trip_in_parquet() {
        let dir = tempfile::tempdir().unwrap();
        let rows = pack_rows(&[item("a", 5), item("b", 4)], 2, 6, 0).unwrap();
        let infos = write_shards(dir.path(), &rows, 1, &Default::default()).unwrap();
        assert_eq!(infos.len(), 2);
        assert_eq!(infos.iter().map(|i| i.tokens.unwrap()).collect::<Vec<_>>(), [5, 4]);
        let f = std::fs::File::open(dir.path().join("part-00001.parquet")).unwrap();
        let mut r = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(f).unwrap().build().unwrap();
        let b = r.next().unwrap().unwrap();
        assert_eq!(b.schema(), schema());
        assert_eq!(b, to_batch(&rows[1..]));
    }
}
