//! Pipeline configuration: TOML files under `pipelines/`, validated against the JSON Schema
//! in `schemas/pipeline.schema.json` (generated from these types; a test keeps the file in
//! sync), with errors that name the offending key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::clean::CleanConfig;
use crate::dedup::DedupConfig;
use crate::error::{Error, Result};
use crate::infer::eval::EvalStageConfig;
use crate::ipc::IpcConfig;
use crate::pack::PackConfig;
use crate::render::RenderConfig;
use crate::sft::SftConfig;
use crate::shard::WriterConfig;
use crate::sources::SourcesConfig;
use crate::train::TrainConfig;

/// The committed pipeline schema (the contract users validate against).
pub const PIPELINE_SCHEMA: &str = include_str!("../schemas/pipeline.schema.json");

/// A pipeline: which stages run, in order, and each stage's settings.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// Stages `coretech run` executes, in order (e.g. `["docs"]`).
    #[serde(default)]
    pub stages: Vec<String>,
    /// The IPC scheme used for rendering and SFT validation.
    #[serde(default)]
    pub ipc: IpcConfig,
    /// Reading, rendering, cleaning and writing document shards.
    // TOML has no null: the schema states the table itself, so errors point inside it.
    #[serde(default)]
    #[schemars(with = "DocsConfig")]
    pub docs: Option<DocsConfig>,
    /// Exact and near deduplication of document shards.
    #[serde(default)]
    #[schemars(with = "DedupConfig")]
    pub dedup: Option<DedupConfig>,
    /// Tokenizing and packing document shards into token shards.
    #[serde(default)]
    #[schemars(with = "PackConfig")]
    pub pack: Option<PackConfig>,
    /// Training runs, by name; `[train.<name>]` is run by the stage `train:<name>`.
    #[serde(default)]
    pub train: BTreeMap<String, TrainConfig>,
    /// Building SFT token shards from instruction data.
    #[serde(default)]
    #[schemars(with = "SftConfig")]
    pub sft: Option<SftConfig>,
    /// Scoring a checkpoint on an SFT test split (the `eval` stage).
    #[serde(default)]
    #[schemars(with = "EvalStageConfig")]
    pub eval: Option<EvalStageConfig>,
}

/// The `docs` stage: raw files → document shards.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DocsConfig {
    /// Files, directories (walked recursively) and globs; formats are sniffed from content.
    pub inputs: Vec<String>,
    /// Output directory of the shards and `manifest.json`.
    pub output: PathBuf,
    /// Documents per shard.
    #[serde(default = "default_rows_per_shard")]
    pub rows_per_shard: usize,
    /// Records framed per parallel batch.
    #[serde(default = "default_batch_records")]
    pub batch_records: usize,
    /// Fail on the first bad record instead of counting and skipping it.
    #[serde(default)]
    pub strict: bool,
    /// Reader settings.
    #[serde(default)]
    pub sources: SourcesConfig,
    /// Patent rendering.
    #[serde(default)]
    pub render: RenderConfig,
    /// Normalization and quality filters.
    #[serde(default)]
    pub clean: CleanConfig,
    /// Parquet settings.
    #[serde(default)]
    pub writer: WriterConfig,
}

fn default_rows_per_shard() -> usize {
    50_000
}
fn default_batch_records() -> usize {
    512
}

/// The schema generated from the types (compared with the committed file in tests).
pub fn generated_schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(PipelineConfig)).expect("schema serializes")
}

impl PipelineConfig {
    /// Reads, validates and parses a pipeline file.
    pub fn load(path: &Path) -> Result<PipelineConfig> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Validates and parses TOML text; `name` is used in errors.
    pub fn parse(text: &str, name: &str) -> Result<PipelineConfig> {
        let cfg_err = |key: String, message: String| Error::Config { file: name.to_string(), key, message };
        let value: toml::Value = toml::from_str(text).map_err(|e| {
            let at = e.span().map(|s| format!("at byte {}", s.start)).unwrap_or_default();
            cfg_err(at, format!("not valid TOML: {}", e.message()))
        })?;
        let json = serde_json::to_value(&value).map_err(|e| cfg_err(String::new(), e.to_string()))?;
        let schema: serde_json::Value = serde_json::from_str(PIPELINE_SCHEMA).expect("committed schema is JSON");
        let validator = jsonschema::validator_for(&schema).expect("committed schema is valid");
        let mut errors: Vec<(String, String)> =
            validator.iter_errors(&json).map(|e| (pointer_to_key(&e.instance_path().to_string()), e.to_string())).collect();
        if !errors.is_empty() {
            errors.sort();
            let (key, first) = errors.remove(0);
            let more = if errors.is_empty() {
                String::new()
            } else {
                format!(" (and {} more: {})", errors.len(), errors.iter().map(|(k, m)| format!("{k}: {m}")).collect::<Vec<_>>().join("; "))
            };
            return Err(cfg_err(key, format!("{first}{more}")));
        }
        serde_json::from_value(json).map_err(|e| cfg_err(String::new(), e.to_string()))
    }
}

/// `/docs/rows_per_shard` → `docs.rows_per_shard`; the root is `(root)`.
fn pointer_to_key(p: &str) -> String {
    let k = p.trim_start_matches('/').replace('/', ".").replace("~1", "/").replace("~0", "~");
    if k.is_empty() {
        "(root)".into()
    } else {
        k
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `schemas/pipeline.schema.json` must be what the types generate. Regenerate with
    /// `UPDATE_SCHEMAS=1 cargo test schema_file_is_current`.
    #[test]
    fn schema_file_is_current() {
        let generated = serde_json::to_string_pretty(&generated_schema()).unwrap() + "\n";
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/schemas/pipeline.schema.json");
        if std::env::var_os("UPDATE_SCHEMAS").is_some() {
            std::fs::write(path, &generated).unwrap();
        }
        assert_eq!(
            PIPELINE_SCHEMA, generated,
            "schemas/pipeline.schema.json is stale: run UPDATE_SCHEMAS=1 cargo test schema_file_is_current"
        );
    }

    #[test]
    fn errors_name_the_key() {
        let e = PipelineConfig::parse("stages=[\"docs\"]\n[docs]\ninputs=[\"x\"]\noutput=\"o\"\nrows_per_shard=\"many\"\n", "t.toml")
            .unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("docs.rows_per_shard"), "{msg}");
        let e = PipelineConfig::parse("[docs]\ninputs=[\"x\"]\noutput=\"o\"\nrows_per_shrad=5\n", "t.toml").unwrap_err();
        assert!(e.to_string().contains("rows_per_shrad"), "{e}");
        let e = PipelineConfig::parse("[docs\n", "t.toml").unwrap_err();
        assert!(e.to_string().contains("not valid TOML"), "{e}");
    }

    #[test]
    fn minimal_config_parses_with_defaults() {
        let c = PipelineConfig::parse("stages=[\"docs\"]\n[docs]\ninputs=[\"x\"]\noutput=\"o\"\n", "t.toml").unwrap();
        let d = c.docs.unwrap();
        assert_eq!(d.rows_per_shard, 50_000);
        assert_eq!(d.sources.max_record_bytes, crate::io::DEFAULT_MAX_RECORD_BYTES);
    }
}
