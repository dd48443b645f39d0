//! The document shard: one row per [`Document`] (DESIGN.md, "Document shard").

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use arrow::array::{Array, ArrayRef, AsArray, Float64Array, ListBuilder, RecordBatch, StringArray, StringBuilder};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::doc::{Document, Meta, Reject};
use crate::error::{Error, Result};

/// The Arrow schema of document shards.
pub fn schema() -> SchemaRef {
    static S: OnceLock<SchemaRef> = OnceLock::new();
    S.get_or_init(|| {
        let utf8 = |n: &str| Field::new(n, DataType::Utf8, false);
        Arc::new(Schema::new(vec![
            utf8("id"),
            utf8("source"),
            utf8("lang"),
            utf8("title"),
            Field::new("ipc", DataType::List(Arc::new(Field::new("item", DataType::Utf8, false))), false),
            utf8("date"),
            utf8("text"),
            utf8("meta"),
        ]))
    })
    .clone()
}

/// The Arrow schema of `rejects/` shards: the document columns, then `stage` (`docs`, `dedup`),
/// `reason` (the filter or duplicate kind), `kept_id` (duplicates: the document kept instead;
/// null otherwise) and `similarity` (duplicates: the Jaccard, 1.0 for exact; null otherwise).
pub fn rejects_schema() -> SchemaRef {
    static S: OnceLock<SchemaRef> = OnceLock::new();
    S.get_or_init(|| {
        let mut fields: Vec<Field> = schema().fields().iter().map(|f| f.as_ref().clone()).collect();
        fields.push(Field::new("stage", DataType::Utf8, false));
        fields.push(Field::new("reason", DataType::Utf8, false));
        fields.push(Field::new("kept_id", DataType::Utf8, true));
        fields.push(Field::new("similarity", DataType::Float64, true));
        Arc::new(Schema::new(fields))
    })
    .clone()
}

/// Builds a `rejects/` record batch of rejects dropped by `stage`.
pub fn rejects_to_batch(stage: &str, rejects: &[Reject]) -> RecordBatch {
    let docs: Vec<Document> = rejects.iter().map(|r| r.doc.clone()).collect();
    let mut cols = to_batch(&docs).columns().to_vec();
    cols.push(Arc::new(rejects.iter().map(|_| Some(stage)).collect::<StringArray>()));
    cols.push(Arc::new(rejects.iter().map(|r| Some(r.reason.as_str())).collect::<StringArray>()));
    cols.push(Arc::new(rejects.iter().map(|r| r.kept_id.as_deref()).collect::<StringArray>()));
    cols.push(Arc::new(rejects.iter().map(|r| r.similarity).collect::<Float64Array>()));
    RecordBatch::try_new(rejects_schema(), cols).expect("rejects batch matches schema")
}

/// Builds a record batch from documents.
pub fn to_batch(docs: &[Document]) -> RecordBatch {
    let col = |f: fn(&Document) -> &str| -> ArrayRef { Arc::new(docs.iter().map(|d| Some(f(d))).collect::<StringArray>()) };
    let mut ipc = ListBuilder::new(StringBuilder::new()).with_field(Arc::new(Field::new("item", DataType::Utf8, false)));
    for d in docs {
        for s in &d.ipc {
            ipc.values().append_value(s);
        }
        ipc.append(true);
    }
    let meta: ArrayRef =
        Arc::new(docs.iter().map(|d| Some(serde_json::to_string(&d.meta).expect("meta serializes"))).collect::<StringArray>());
    RecordBatch::try_new(
        schema(),
        vec![
            col(|d| &d.id),
            col(|d| &d.source),
            col(|d| &d.lang),
            col(|d| &d.title),
            Arc::new(ipc.finish()),
            col(|d| &d.date),
            col(|d| &d.text),
            meta,
        ],
    )
    .expect("document batch matches schema")
}

/// Converts a record batch of the document schema back to documents.
pub fn from_batch(batch: &RecordBatch, path: &Path) -> Result<Vec<Document>> {
    let bad = |m: String| Error::Shard { path: path.to_path_buf(), message: m };
    let s = |name: &str| -> Result<&StringArray> {
        batch
            .column_by_name(name)
            .and_then(|c| c.as_any().downcast_ref::<StringArray>())
            .ok_or_else(|| bad(format!("column {name:?} missing or not utf8")))
    };
    let (id, source, lang, title, date, text, meta) = (s("id")?, s("source")?, s("lang")?, s("title")?, s("date")?, s("text")?, s("meta")?);
    let ipc = batch
        .column_by_name("ipc")
        .and_then(|c| c.as_list_opt::<i32>())
        .ok_or_else(|| bad("column \"ipc\" missing or not list<utf8>".into()))?;
    let mut out = Vec::with_capacity(batch.num_rows());
    for i in 0..batch.num_rows() {
        let codes = ipc.value(i);
        let codes = codes.as_string_opt::<i32>().ok_or_else(|| bad("ipc items are not utf8".into()))?;
        let meta: Meta = if meta.value(i).is_empty() {
            Meta::new()
        } else {
            serde_json::from_str(meta.value(i)).map_err(|e| bad(format!("row {i}: meta is not a JSON object: {e}")))?
        };
        out.push(Document {
            id: id.value(i).to_string(),
            source: source.value(i).to_string(),
            lang: lang.value(i).to_string(),
            title: title.value(i).to_string(),
            ipc: (0..codes.len()).map(|j| codes.value(j).to_string()).collect(),
            date: date.value(i).to_string(),
            text: text.value(i).to_string(),
            meta,
        });
    }
    Ok(out)
}

/// Streams the documents of one shard, `batch_rows` at a time (bounded memory).
pub fn read_shard(path: &Path, batch_rows: usize) -> Result<impl Iterator<Item = Result<Vec<Document>>>> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .and_then(|b| b.with_batch_size(batch_rows).build())
        .map_err(|e| Error::Shard { path: path.to_path_buf(), message: e.to_string() })?;
    let path: PathBuf = path.to_path_buf();
    Ok(reader.map(move |b| {
        let b = b.map_err(|e| Error::Shard { path: path.clone(), message: e.to_string() })?;
        from_batch(&b, &path)
    }))
}

/// The shard files of a document directory, in manifest order (or sorted `*.parquet` when
/// there is no manifest).
pub fn shard_files(dir: &Path) -> Result<Vec<PathBuf>> {
    if super::Manifest::present(dir) {
        let m = super::Manifest::load(dir)?;
        return Ok(m.shards.iter().map(|s| dir.join(&s.file)).collect());
    }
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "parquet"))
        // Dot-prefixed files are side files, skipped as the Python loaders skip them.
        .filter(|p| p.file_name().is_some_and(|n| !n.to_string_lossy().starts_with('.')))
        .collect();
    v.sort();
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_through_parquet() {
        let dir = tempfile::tempdir().unwrap();
        let mut meta = Meta::new();
        meta.insert("kind".into(), "B2".into());
        let docs = vec![
            Document {
                id: "epo:EP1B1".into(),
                source: "epo".into(),
                lang: "en".into(),
                title: "T".into(),
                ipc: vec!["H04L 29/06".into(), "G06F 3/01".into()],
                date: "2020-01-02".into(),
                text: "x\ny".into(),
                meta,
            },
            Document { id: "wudao:1".into(), source: "wudao".into(), text: "中文".into(), ..Default::default() },
        ];
        let path = dir.path().join("part-00000.parquet");
        let mut w = crate::shard::ShardWriter::create(&path, schema(), &Default::default()).unwrap();
        w.write(&to_batch(&docs)).unwrap();
        let info = w.finish().unwrap();
        assert_eq!(info.rows, 2);
        assert_eq!(info.sha256, crate::core::fsio::sha256_file(&path).unwrap());
        let back: Vec<Document> = read_shard(&path, 1).unwrap().flat_map(|b| b.unwrap()).collect();
        assert_eq!(back, docs);
    }
}
