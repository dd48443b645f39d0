//! The graded examples table (`examples.parquet`) and its statistics, computed with polars:
//! counts per split, task and stage; token-length distributions per split and task; and the
//! per-stage means of the score and of every feature over the training examples.
//!
//! The grading features are the columns `feat_{name}` ([`feature_column`]), so a feature never
//! shares a name with a data column (`feat_ipc_codes`, a count, beside `ipc_codes`, the codes).

use std::fmt::Write as _;
use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{ArrayRef, AsArray, BooleanArray, Float64Array, ListBuilder, RecordBatch, StringArray, StringBuilder, UInt32Array};
use arrow::datatypes::{DataType, Field, Float64Type, Schema, SchemaRef, UInt32Type};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use polars::prelude::*;
use serde::{Deserialize, Serialize};

use super::grade::{Features, FEATURES};
use crate::error::{Error, Result};

/// One kept example with its grade (a row of `examples.parquet`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GradedExample {
    /// Example id.
    pub id: String,
    /// Dataset.
    pub dataset: String,
    /// Task.
    pub task: String,
    /// `given`, `config` or `inferred`.
    pub task_from: String,
    /// `train` or `test`.
    pub split: String,
    /// Curriculum stage.
    pub stage: u32,
    /// Difficulty score (the one that set the stage).
    pub score: f64,
    /// What `score` is: `heuristic`, `ifd`, `answer_loss`, `cond_loss`, or `mix(…)`.
    pub score_used: String,
    /// Model grading: the example's losses (`cond_loss`, `answer_loss`; IFD is their ratio).
    pub model: Option<super::grade_model::ModelScore>,
    /// Heuristic features.
    pub features: Features,
    /// Tokens after templating (and truncation).
    pub tokens: u32,
    /// Whether truncation cut it.
    pub truncated: bool,
    /// Test examples only: whether its n-grams occur in the CPT corpus.
    pub cpt_flagged: bool,
    /// Distinct normalized IPC codes in the answer.
    pub ipc_codes: Vec<String>,
    /// Codes the scheme does not know.
    pub unknown_codes: Vec<String>,
    /// Codes that do not parse (`raw: why`).
    pub malformed_codes: Vec<String>,
    /// System prompt (empty: the default).
    pub system: String,
    /// The turns as JSON (`[{"role","content"}]`).
    pub messages: String,
}

/// Prefix of the feature columns of `examples.parquet`.
pub const FEATURE_PREFIX: &str = "feat_";

/// The column of feature `name` in `examples.parquet`.
pub fn feature_column(name: &str) -> String {
    format!("{FEATURE_PREFIX}{name}")
}

fn schema() -> SchemaRef {
    let utf8 = |n: &str| Field::new(n, DataType::Utf8, false);
    let list = |n: &str| Field::new(n, DataType::List(Arc::new(Field::new("item", DataType::Utf8, false))), false);
    let mut fields = vec![
        utf8("id"),
        utf8("dataset"),
        utf8("task"),
        utf8("task_from"),
        utf8("split"),
        Field::new("stage", DataType::UInt32, false),
        Field::new("score", DataType::Float64, false),
        utf8("score_used"),
        Field::new("cond_loss", DataType::Float64, true),
        Field::new("answer_loss", DataType::Float64, true),
        Field::new("ifd", DataType::Float64, true),
    ];
    fields.extend(FEATURES.iter().map(|f| Field::new(feature_column(f), DataType::Float64, false)));
    fields.extend([
        Field::new("tokens", DataType::UInt32, false),
        Field::new("truncated", DataType::Boolean, false),
        Field::new("cpt_flagged", DataType::Boolean, false),
        list("ipc_codes"),
        list("unknown_codes"),
        list("malformed_codes"),
        utf8("system"),
        utf8("messages"),
    ]);
    Arc::new(Schema::new(fields))
}

/// The rows as one record batch.
pub fn to_batch(rows: &[GradedExample]) -> RecordBatch {
    let s = |f: fn(&GradedExample) -> &str| -> ArrayRef { Arc::new(rows.iter().map(|r| Some(f(r))).collect::<StringArray>()) };
    let list = |f: fn(&GradedExample) -> &Vec<String>| -> ArrayRef {
        let mut b = ListBuilder::new(StringBuilder::new()).with_field(Arc::new(Field::new("item", DataType::Utf8, false)));
        for r in rows {
            for v in f(r) {
                b.values().append_value(v);
            }
            b.append(true);
        }
        Arc::new(b.finish())
    };
    let mut cols: Vec<ArrayRef> = vec![
        s(|r| &r.id),
        s(|r| &r.dataset),
        s(|r| &r.task),
        s(|r| &r.task_from),
        s(|r| &r.split),
        Arc::new(rows.iter().map(|r| r.stage).collect::<UInt32Array>()),
        Arc::new(rows.iter().map(|r| r.score).collect::<Float64Array>()),
        s(|r| &r.score_used),
        Arc::new(rows.iter().map(|r| r.model.map(|m| m.cond_loss)).collect::<Float64Array>()),
        Arc::new(rows.iter().map(|r| r.model.map(|m| m.answer_loss)).collect::<Float64Array>()),
        Arc::new(rows.iter().map(|r| r.model.map(|m| m.ifd())).collect::<Float64Array>()),
    ];
    for f in 0..FEATURES.len() {
        cols.push(Arc::new(rows.iter().map(|r| r.features.values()[f]).collect::<Float64Array>()));
    }
    cols.push(Arc::new(rows.iter().map(|r| r.tokens).collect::<UInt32Array>()));
    cols.push(Arc::new(rows.iter().map(|r| Some(r.truncated)).collect::<BooleanArray>()));
    cols.push(Arc::new(rows.iter().map(|r| Some(r.cpt_flagged)).collect::<BooleanArray>()));
    cols.push(list(|r| &r.ipc_codes));
    cols.push(list(|r| &r.unknown_codes));
    cols.push(list(|r| &r.malformed_codes));
    cols.push(s(|r| &r.system));
    cols.push(s(|r| &r.messages));
    RecordBatch::try_new(schema(), cols).expect("examples batch matches schema")
}

/// Writes `examples.parquet` atomically.
pub fn write_examples(path: &Path, rows: &[GradedExample], cfg: &crate::shard::WriterConfig) -> Result<crate::shard::ShardInfo> {
    let mut w = crate::shard::ShardWriter::create(path, schema(), cfg)?;
    w.write(&to_batch(rows))?;
    w.finish()
}

fn pl_err(e: PolarsError) -> Error {
    Error::Other(format!("polars: {e}"))
}

/// The scalar columns of graded-example batches as a polars frame (list and text columns are
/// left out: statistics do not need them).
pub fn frame(batches: &[RecordBatch]) -> Result<DataFrame> {
    let schema = schema();
    let mut cols = Vec::new();
    for field in schema.fields() {
        let name = field.name().as_str();
        let parts: Vec<&ArrayRef> = batches.iter().filter_map(|b| b.column_by_name(name)).collect();
        if parts.len() != batches.len() {
            return Err(Error::Other(format!("examples table has no column {name:?}")));
        }
        let col = match field.data_type() {
            DataType::Utf8 if name != "messages" && name != "system" => Column::new(
                name.into(),
                parts.iter().flat_map(|a| a.as_string::<i32>().iter().map(|v| v.unwrap_or_default().to_string())).collect::<Vec<String>>(),
            ),
            DataType::UInt32 => {
                Column::new(name.into(), parts.iter().flat_map(|a| a.as_primitive::<UInt32Type>().values().to_vec()).collect::<Vec<u32>>())
            }
            // Model losses are null without model grading.
            DataType::Float64 => {
                Column::new(name.into(), parts.iter().flat_map(|a| a.as_primitive::<Float64Type>().iter()).collect::<Vec<Option<f64>>>())
            }
            DataType::Boolean => Column::new(
                name.into(),
                parts.iter().flat_map(|a| a.as_boolean().iter().map(|v| v.unwrap_or(false))).collect::<Vec<bool>>(),
            ),
            _ => continue,
        };
        cols.push(col);
    }
    DataFrame::new_infer_height(cols).map_err(pl_err)
}

/// Reads `examples.parquet` into a frame.
pub fn read_frame(path: &Path) -> Result<DataFrame> {
    let f = File::open(path).map_err(|e| Error::io(path, e))?;
    let shard_err = |e: &dyn std::fmt::Display| Error::Shard { path: path.to_path_buf(), message: e.to_string() };
    let reader = ParquetRecordBatchReaderBuilder::try_new(f).and_then(|b| b.build()).map_err(|e| shard_err(&e))?;
    let batches: Vec<RecordBatch> = reader.collect::<std::result::Result<_, _>>().map_err(|e| shard_err(&e))?;
    frame(&batches)
}

/// Rows per split, task and stage.
pub fn counts(df: &DataFrame) -> Result<DataFrame> {
    df.clone()
        .lazy()
        .group_by([col("split"), col("task"), col("stage")])
        .agg([len().alias("examples"), col("tokens").sum().alias("tokens"), col("truncated").sum().alias("truncated")])
        .sort(["split", "task", "stage"], Default::default())
        .collect()
        .map_err(pl_err)
}

/// Token-length distributions per split and task (total and answer tokens).
pub fn lengths(df: &DataFrame) -> Result<DataFrame> {
    let q = |c: &str, p: f64, name: &str| col(c).quantile(lit(p), QuantileMethod::Nearest).alias(name);
    df.clone()
        .lazy()
        .group_by([col("split"), col("task")])
        .agg([
            len().alias("n"),
            col("tokens").min().alias("tok_min"),
            q("tokens", 0.5, "tok_p50"),
            q("tokens", 0.9, "tok_p90"),
            col("tokens").max().alias("tok_max"),
            q(&feature_column("answer_tokens"), 0.5, "ans_p50"),
            col(feature_column("answer_tokens")).max().alias("ans_max"),
        ])
        .sort(["split", "task"], Default::default())
        .collect()
        .map_err(pl_err)
}

/// Names of the model-loss columns of `examples.parquet` (null without model grading).
pub const MODEL_COLUMNS: [&str; 3] = ["cond_loss", "answer_loss", "ifd"];

/// Per-stage means of the score, of the model losses and IFD (null without model grading) and
/// of every feature over the training examples.
pub fn stage_means(df: &DataFrame) -> Result<DataFrame> {
    let mut aggs = vec![len().alias("n"), col("score").mean().alias("score")];
    aggs.extend(MODEL_COLUMNS.iter().map(|c| col(*c).mean().alias(*c)));
    // Means keep the plain feature names (report.json `grading.stage_means`).
    aggs.extend(FEATURES.iter().map(|f| col(feature_column(f)).mean().alias(*f)));
    df.clone()
        .lazy()
        .filter(col("split").eq(lit("train")))
        .group_by([col("stage")])
        .agg(aggs)
        .sort(["stage"], Default::default())
        .collect()
        .map_err(pl_err)
}

/// A numeric column as f64 values (nulls as NaN).
pub fn column_f64(df: &DataFrame, name: &str) -> Result<Vec<f64>> {
    let s = df.column(name).map_err(pl_err)?.cast(&polars::prelude::DataType::Float64).map_err(pl_err)?;
    Ok(s.f64().map_err(pl_err)?.iter().map(|v| v.unwrap_or(f64::NAN)).collect())
}

/// A frame as an aligned text table (every column, floats with 3 decimals).
pub fn table(df: &DataFrame) -> String {
    let cols = df.columns();
    let cells: Vec<Vec<String>> = cols
        .iter()
        .map(|c| {
            let mut v = vec![c.name().to_string()];
            for i in 0..df.height() {
                v.push(match c.get(i) {
                    Ok(AnyValue::Float64(x)) => format!("{x:.3}"),
                    Ok(AnyValue::Float32(x)) => format!("{x:.3}"),
                    Ok(AnyValue::String(s)) => s.to_string(),
                    Ok(AnyValue::Null) => "-".into(),
                    Ok(other) => other.to_string(),
                    Err(_) => "?".into(),
                });
            }
            v
        })
        .collect();
    let widths: Vec<usize> = cells.iter().map(|c| c.iter().map(|s| s.chars().count()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for row in 0..=df.height() {
        let line: Vec<String> = cells.iter().zip(&widths).map(|(c, w)| format!("{:>w$}", c[row], w = *w)).collect();
        let _ = writeln!(out, "{}", line.join("  "));
    }
    out
}

/// The `coretech sft stats` text: counts, length distributions and stage means.
pub fn stats_text(df: &DataFrame) -> Result<String> {
    let mut out = String::new();
    let _ = writeln!(out, "examples per split, task and stage:\n{}", table(&counts(df)?));
    let _ = writeln!(out, "token lengths per split and task:\n{}", table(&lengths(df)?));
    let _ = writeln!(out, "training examples: per-stage means of the score, model losses and features:\n{}", table(&stage_means(df)?));
    Ok(out)
}

/// Reads `dir/examples.parquet` and renders the stats.
pub fn stats_of_dir(dir: &Path) -> Result<String> {
    let path = if dir.is_file() { dir.to_path_buf() } else { dir.join("examples.parquet") };
    stats_text(&read_frame(&path)?)
}
