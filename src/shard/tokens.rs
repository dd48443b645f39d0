//! The token shard (DESIGN.md, "Token shard"): one row per packed sequence.
//!
//! | column | type | meaning |
//! |---|---|---|
//! | `input_ids` | list<uint32>, exactly `seq_len` | token ids; padding (only after the last segment) is `pad_id` |
//! | `seg_lens` | list<uint32> | lengths of the segments (documents or examples, each with its closing token) in order; they sum to the real tokens of the row, the rest is padding |
//! | `loss_mask` | list<uint8>, `seq_len` (only when the build has one: SFT, whole-document mode) | 1 where the token is a target that counts, 0 for prompts and padding |
//! | `source` | list<utf8>, one per segment | the source of each segment (`wudao`, `ipc`, …) |
//! | `stage` | uint32 (only when the build has stages) | curriculum stage of the row |
//!
//! Without a `loss_mask` column every real token counts and padding does not (readers derive
//! it from `seg_lens`).
//!
//! SFT token shards ([`sft_schema`]) are this schema with `loss_mask` and `stage`, followed by
//! [`SFT_SEGMENT_COLUMNS`]: per segment `task` and `example_id` (list<utf8>), so every reader
//! of token shards reads them as they are.

use std::path::Path;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, ListArray, RecordBatch, StringBuilder, UInt32Array, UInt32Builder, UInt8Builder};
use arrow::array::{ListBuilder, PrimitiveArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, UInt32Type, UInt8Type};

use crate::error::{Error, Result};

/// One packed row.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Row {
    /// Token ids, exactly `seq_len`.
    pub input_ids: Vec<u32>,
    /// Segment lengths (sum = real tokens; the rest is padding).
    pub seg_lens: Vec<u32>,
    /// Loss mask, `seq_len` entries, when the build has one.
    pub loss_mask: Option<Vec<u8>>,
    /// Source of each segment.
    pub sources: Vec<String>,
    /// Curriculum stage, when the build has stages.
    pub stage: Option<u32>,
}

impl Row {
    /// Real (non-padding) tokens of the row.
    pub fn real_tokens(&self) -> usize {
        self.seg_lens.iter().map(|&l| l as usize).sum()
    }
}

/// Which optional columns a token shard set has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Columns {
    /// A `loss_mask` column.
    pub loss_mask: bool,
    /// A `stage` column.
    pub stage: bool,
}

fn list_of(item: DataType) -> DataType {
    DataType::List(Arc::new(Field::new("item", item, false)))
}

/// The Arrow schema of token shards with these optional columns.
pub fn schema(cols: Columns) -> SchemaRef {
    let mut fields =
        vec![Field::new("input_ids", list_of(DataType::UInt32), false), Field::new("seg_lens", list_of(DataType::UInt32), false)];
    if cols.loss_mask {
        fields.push(Field::new("loss_mask", list_of(DataType::UInt8), false));
    }
    fields.push(Field::new("source", list_of(DataType::Utf8), false));
    if cols.stage {
        fields.push(Field::new("stage", DataType::UInt32, false));
    }
    Arc::new(Schema::new(fields))
}

/// The token-shard columns an SFT shard has: a loss mask and curriculum stages.
pub const SFT_COLUMNS: Columns = Columns { loss_mask: true, stage: true };

/// The columns SFT shards add after the token shard's, one list entry per segment.
pub const SFT_SEGMENT_COLUMNS: [&str; 2] = ["task", "example_id"];

/// The Arrow schema of SFT token shards: [`schema`] with [`SFT_COLUMNS`], then
/// [`SFT_SEGMENT_COLUMNS`] as list<utf8>.
pub fn sft_schema() -> SchemaRef {
    let base = schema(SFT_COLUMNS);
    let mut fields: Vec<Field> = base.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.extend(SFT_SEGMENT_COLUMNS.iter().map(|n| Field::new(*n, list_of(DataType::Utf8), false)));
    Arc::new(Schema::new(fields))
}

/// The per-segment values of the SFT columns of one row (same length as its `seg_lens`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SftSegments {
    /// Task of each segment.
    pub task: Vec<String>,
    /// Example id of each segment.
    pub example_id: Vec<String>,
}

/// An SFT record batch: the token columns of `rows` (which have a mask and a stage) and the
/// per-segment columns of `segments` (one per row).
pub fn sft_to_batch(rows: &[Row], segments: &[SftSegments]) -> RecordBatch {
    assert_eq!(rows.len(), segments.len(), "one SftSegments per row");
    let mut cols = token_arrays(rows, SFT_COLUMNS);
    let picks: [fn(&SftSegments) -> &Vec<String>; 2] = [|s| &s.task, |s| &s.example_id];
    for pick in picks {
        let mut b = ListBuilder::new(StringBuilder::new()).with_field(Arc::new(Field::new("item", DataType::Utf8, false)));
        for seg in segments {
            for v in pick(seg) {
                b.values().append_value(v);
            }
            b.append(true);
        }
        cols.push(Arc::new(b.finish()));
    }
    RecordBatch::try_new(sft_schema(), cols).expect("sft batch matches schema")
}

/// Builds a record batch from rows (all rows must agree with `cols`).
pub fn to_batch(rows: &[Row], cols: Columns) -> RecordBatch {
    RecordBatch::try_new(schema(cols), token_arrays(rows, cols)).expect("token batch matches schema")
}

/// The token columns of `rows`, in [`schema`] order.
fn token_arrays(rows: &[Row], cols: Columns) -> Vec<ArrayRef> {
    let item = |t: DataType| Arc::new(Field::new("item", t, false));
    let mut ids =
        ListBuilder::new(UInt32Builder::with_capacity(rows.iter().map(|r| r.input_ids.len()).sum())).with_field(item(DataType::UInt32));
    let mut segs = ListBuilder::new(UInt32Builder::new()).with_field(item(DataType::UInt32));
    let mut mask = ListBuilder::new(UInt8Builder::new()).with_field(item(DataType::UInt8));
    let mut src = ListBuilder::new(StringBuilder::new()).with_field(item(DataType::Utf8));
    let mut stage = UInt32Builder::new();
    for r in rows {
        ids.values().append_slice(&r.input_ids);
        ids.append(true);
        segs.values().append_slice(&r.seg_lens);
        segs.append(true);
        if cols.loss_mask {
            let m = r.loss_mask.as_deref().expect("row has a loss mask when the schema does");
            mask.values().append_slice(m);
            mask.append(true);
        }
        for s in &r.sources {
            src.values().append_value(s);
        }
        src.append(true);
        if cols.stage {
            stage.append_value(r.stage.expect("row has a stage when the schema does"));
        }
    }
    let mut arrays: Vec<ArrayRef> = vec![Arc::new(ids.finish()), Arc::new(segs.finish())];
    if cols.loss_mask {
        arrays.push(Arc::new(mask.finish()));
    }
    arrays.push(Arc::new(src.finish()));
    if cols.stage {
        arrays.push(Arc::new(stage.finish()));
    }
    arrays
}

/// A decoded token record batch, column by column (zero-copy views into Arrow buffers).
pub struct TokenBatch {
    /// Rows in the batch.
    pub rows: usize,
    ids: ListArray,
    segs: ListArray,
    mask: Option<ListArray>,
    sources: ListArray,
    stage: Option<UInt32Array>,
}

impl TokenBatch {
    /// Checks the columns of a token shard batch; `path` is used in errors.
    pub fn new(batch: &RecordBatch, path: &Path) -> Result<TokenBatch> {
        let bad = |m: String| Error::Shard { path: path.to_path_buf(), message: m };
        let list = |name: &str, item: DataType| -> Result<ListArray> {
            let c = batch.column_by_name(name).ok_or_else(|| bad(format!("not a token shard: column {name:?} missing")))?;
            let l = c.as_list_opt::<i32>().ok_or_else(|| bad(format!("column {name:?} is {} (expected list<{item}>)", c.data_type())))?;
            if l.values().data_type() != &item {
                return Err(bad(format!("column {name:?} holds {} (expected {item})", l.values().data_type())));
            }
            if l.null_count() > 0 {
                return Err(bad(format!("column {name:?} has nulls")));
            }
            Ok(l.clone())
        };
        let ids = list("input_ids", DataType::UInt32)?;
        let segs = list("seg_lens", DataType::UInt32)?;
        let sources = list("source", DataType::Utf8)?;
        let mask = if batch.column_by_name("loss_mask").is_some() { Some(list("loss_mask", DataType::UInt8)?) } else { None };
        let stage = match batch.column_by_name("stage") {
            None => None,
            Some(c) => Some(
                c.as_primitive_opt::<UInt32Type>()
                    .ok_or_else(|| bad(format!("column \"stage\" is {} (expected uint32)", c.data_type())))?
                    .clone(),
            ),
        };
        Ok(TokenBatch { rows: batch.num_rows(), ids, segs, mask, sources, stage })
    }

    /// Token ids of row `i`.
    pub fn ids(&self, i: usize) -> &[u32] {
        slice_u32(&self.ids, i)
    }

    /// Segment lengths of row `i`.
    pub fn seg_lens(&self, i: usize) -> &[u32] {
        slice_u32(&self.segs, i)
    }

    /// Loss mask of row `i`, if the shard has one.
    pub fn loss_mask(&self, i: usize) -> Option<&[u8]> {
        self.mask.as_ref().map(|m| {
            let off = m.value_offsets();
            let v: &PrimitiveArray<UInt8Type> = m.values().as_primitive();
            &v.values()[off[i] as usize..off[i + 1] as usize]
        })
    }

    /// Segment sources of row `i`.
    pub fn sources(&self, i: usize) -> Vec<&str> {
        let off = self.sources.value_offsets();
        let v = self.sources.values().as_string::<i32>();
        (off[i] as usize..off[i + 1] as usize).map(|j| v.value(j)).collect()
    }

    /// Stage of row `i`, if the shard has one.
    pub fn stage(&self, i: usize) -> Option<u32> {
        self.stage.as_ref().map(|s| s.value(i))
    }

    /// Row `i` as an owned [`Row`].
    pub fn row(&self, i: usize) -> Row {
        Row {
            input_ids: self.ids(i).to_vec(),
            seg_lens: self.seg_lens(i).to_vec(),
            loss_mask: self.loss_mask(i).map(|m| m.to_vec()),
            sources: self.sources(i).into_iter().map(String::from).collect(),
            stage: self.stage(i),
        }
    }

    /// Checks row `i` against the contract: `seq_len` ids, segments within the row, a mask of
    /// the same length.
    pub fn validate_row(&self, i: usize, seq_len: usize, path: &Path) -> Result<()> {
        let bad = |m: String| Error::Shard { path: path.to_path_buf(), message: m };
        let n = self.ids(i).len();
        if n != seq_len {
            return Err(bad(format!("row {i}: {n} input_ids (expected seq_len {seq_len})")));
        }
        let real: u64 = self.seg_lens(i).iter().map(|&l| l as u64).sum();
        if real > seq_len as u64 {
            return Err(bad(format!("row {i}: seg_lens sum to {real} > seq_len {seq_len}")));
        }
        if let Some(m) = self.loss_mask(i) {
            if m.len() != seq_len {
                return Err(bad(format!("row {i}: {} loss_mask entries (expected {seq_len})", m.len())));
            }
        }
        Ok(())
    }
}

fn slice_u32(l: &ListArray, i: usize) -> &[u32] {
    let off = l.value_offsets();
    let v: &PrimitiveArray<UInt32Type> = l.values().as_primitive();
    &v.values()[off[i] as usize..off[i + 1] as usize]
}

/// Reads every row of a token shard (tests, inspect; the loader streams by row group).
pub fn read_rows(path: &Path) -> Result<Vec<Row>> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .and_then(|b| b.build())
        .map_err(|e| Error::Shard { path: path.to_path_buf(), message: e.to_string() })?;
    let mut rows = Vec::new();
    for b in reader {
        let b = b.map_err(|e| Error::Shard { path: path.to_path_buf(), message: e.to_string() })?;
        let tb = TokenBatch::new(&b, path)?;
        rows.extend((0..tb.rows).map(|i| tb.row(i)));
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_through_parquet() {
        let dir = tempfile::tempdir().unwrap();
        let cols = Columns { loss_mask: true, stage: true };
        let rows = vec![
            Row {
                input_ids: vec![1, 2, 3, 4],
                seg_lens: vec![3, 1],
                loss_mask: Some(vec![0, 1, 1, 1]),
                sources: vec!["ipc".into(), "wudao".into()],
                stage: Some(1),
            },
            Row {
                input_ids: vec![5, 6, 0, 0],
                seg_lens: vec![2],
                loss_mask: Some(vec![1, 1, 0, 0]),
                sources: vec!["epo".into()],
                stage: Some(2),
            },
        ];
        let path = dir.path().join("part-00000.parquet");
        let mut w = crate::shard::ShardWriter::create(&path, schema(cols), &Default::default()).unwrap();
        w.write(&to_batch(&rows, cols)).unwrap();
        w.finish().unwrap();
        assert_eq!(read_rows(&path).unwrap(), rows);
    }

    #[test]
    fn wrong_columns_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("docs.parquet");
        let mut w = crate::shard::ShardWriter::create(&path, crate::shard::documents::schema(), &Default::default()).unwrap();
        w.write(&crate::shard::documents::to_batch(&[crate::Document::default()])).unwrap();
        w.finish().unwrap();
        let e = read_rows(&path).unwrap_err().to_string();
        assert!(e.contains("docs.parquet") && e.contains("input_ids"), "{e}");
    }
}
