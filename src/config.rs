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

/// A stage `coretech run` executes; `stages` lists them by name (`docs`, `dedup`, `pack`, `sft`,
/// `eval`, `train:<name>`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Stage {
    /// Raw files → document shards (`[docs]`).
    Docs,
    /// Exact and near deduplication of document shards (`[dedup]`).
    Dedup,
    /// Tokenizing and packing into token shards (`[pack]`).
    Pack,
    /// SFT token shards from instruction data (`[sft]`).
    Sft,
    /// Scoring a checkpoint on an SFT test split (`[eval]`).
    Eval,
    /// A training run (`[train.<name>]`).
    Train(String),
}

/// The stage names other than `train:<name>`, with the section each needs.
const FIXED_STAGES: [(&str, Stage); 5] =
    [("docs", Stage::Docs), ("dedup", Stage::Dedup), ("pack", Stage::Pack), ("sft", Stage::Sft), ("eval", Stage::Eval)];

/// Prefix of a training stage's name.
const TRAIN_PREFIX: &str = "train:";

impl Stage {
    /// The dotted key of the section this stage runs (`docs`, `train.cpt`).
    pub fn section(&self) -> String {
        match self {
            Stage::Train(name) => format!("train.{name}"),
            other => other.to_string(),
        }
    }
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stage::Train(name) => write!(f, "{TRAIN_PREFIX}{name}"),
            other => f.write_str(FIXED_STAGES.iter().find(|(_, s)| s == other).map(|(n, _)| *n).unwrap_or_default()),
        }
    }
}

impl std::str::FromStr for Stage {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        if let Some((_, stage)) = FIXED_STAGES.iter().find(|(n, _)| *n == s) {
            return Ok(stage.clone());
        }
        match s.strip_prefix(TRAIN_PREFIX) {
            Some(name) if !name.is_empty() => Ok(Stage::Train(name.to_string())),
            _ => Err(format!(
                "{s:?} is not a stage; allowed values: {}, or {TRAIN_PREFIX}<name> for a [train.<name>] section",
                FIXED_STAGES.iter().map(|(n, _)| format!("{n:?}")).collect::<Vec<_>>().join(", ")
            )),
        }
    }
}

impl Serialize for Stage {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Stage {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for Stage {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Stage".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let fixed: Vec<serde_json::Value> = FIXED_STAGES.iter().map(|(n, _)| serde_json::Value::from(*n)).collect();
        schemars::json_schema!({
            "description": "A stage: its section must be present.",
            "anyOf": [
                { "type": "string", "enum": fixed },
                { "type": "string", "pattern": format!("^{TRAIN_PREFIX}.+$"), "description": "A [train.<name>] section." }
            ]
        })
    }
}

/// A pipeline: which stages run, in order, and each stage's settings.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// Stages `coretech run` executes, in order (e.g. `["docs", "dedup", "train:cpt"]`); each
    /// needs its section.
    #[serde(default)]
    pub stages: Vec<Stage>,
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
    #[schemars(length(min = 1), inner(length(min = 1)))]
    pub inputs: Vec<String>,
    /// Output directory of the shards and `.manifest.json`.
    #[schemars(length(min = 1))]
    pub output: PathBuf,
    /// Documents per shard.
    #[serde(default = "default_rows_per_shard")]
    #[schemars(range(min = 1))]
    pub rows_per_shard: usize,
    /// Records framed per parallel batch (a batch also ends at 64 MiB of records).
    #[serde(default = "default_batch_records")]
    #[schemars(range(min = 1))]
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
    /// Normalization and quality filters: the base every clean policy starts from.
    #[serde(default)]
    pub clean: CleanConfig,
    /// Clean policies by name: overrides of `[docs.clean]` (any of its keys), over the built-in
    /// `web` (none), `patent` (no Gopher quality/repetition rules) and `reference` (only the
    /// `empty` filter) of that name; see `clean::policy`.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, CleanConfig>")]
    pub policies: BTreeMap<String, serde_json::Value>,
    /// Policy by source (`uspto`, `epo`, `cnipa` → `patent`; `ipc` → `reference`; others `web`).
    #[serde(default)]
    pub policy_by_source: BTreeMap<String, String>,
    /// Policy by input entry, keyed by the entry as written in `inputs` (before the source's).
    #[serde(default)]
    pub policy_by_input: BTreeMap<String, String>,
    /// Parquet settings.
    #[serde(default)]
    pub writer: WriterConfig,
    /// Write every document the stage drops with its reason to the rejects folder (Parquet +
    /// manifest), so a dropped patent can be found (`coretech inspect` reads it).
    #[serde(default = "crate::core::default_true")]
    pub rejects: bool,
    /// The rejects folder; default `OUTPUT.rejects` beside the output (never inside it: readers
    /// of the output folder would take rejects for documents). A multi-task build writes
    /// `task-NNNNN/` folders in it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejects_dir: Option<PathBuf>,
}

fn default_rows_per_shard() -> usize {
    50_000
}
fn default_batch_records() -> usize {
    512
}

impl DocsConfig {
    /// Checks the section: ranges (from the schema) and the settings that depend on each other.
    pub fn validate(&self) -> Result<()> {
        crate::core::schema::check(self, "docs")?;
        self.clean.validate().map_err(|e| in_section(e, "docs"))?;
        crate::clean::policy::Policies::new(&self.clean, &self.policies, &self.policy_by_source, &self.policy_by_input, &self.inputs)?;
        if self.rejects && self.rejects_dir().is_none() {
            return Err(Error::Config {
                file: String::new(),
                key: "docs.rejects_dir".into(),
                message: format!("the output {} has no folder name to put the rejects beside; set `rejects_dir`", self.output.display()),
            });
        }
        Ok(())
    }

    /// The rejects folder (`rejects_dir`, else `OUTPUT.rejects` beside the output).
    pub fn rejects_dir(&self) -> Option<PathBuf> {
        self.rejects_dir.clone().or_else(|| crate::stage::default_rejects_dir(&self.output))
    }
}

/// The schema generated from the types (compared with the committed file in tests).
pub fn generated_schema() -> serde_json::Value {
    crate::core::schema::schema_of::<PipelineConfig>()
}

/// Puts `prefix` in front of the key of a config error that names a key inside a section.
pub fn in_section(e: Error, prefix: &str) -> Error {
    match e {
        Error::Config { file, key, message } if !key.starts_with(prefix) => {
            Error::Config { file, key: crate::core::schema::join_key(prefix, &key), message }
        }
        other => other,
    }
}

/// Names `file` in a config error that does not name one yet.
pub fn in_file(e: Error, file: &str) -> Error {
    match e {
        Error::Config { file: f, key, message } if f.is_empty() => Error::Config { file: file.to_string(), key, message },
        other => other,
    }
}

impl PipelineConfig {
    /// Reads, validates and parses a pipeline file.
    pub fn load(path: &Path) -> Result<PipelineConfig> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Validates and parses TOML text; `name` is used in errors. Everything that can be
    /// checked without reading other files is checked here, before any stage runs: the schema
    /// (types, ranges, enums, unknown keys), every stage's section, and each section's own
    /// `validate()`.
    pub fn parse(text: &str, name: &str) -> Result<PipelineConfig> {
        let cfg_err = |key: String, message: String| Error::Config { file: name.to_string(), key, message };
        let value: toml::Value = toml::from_str(text).map_err(|e| {
            let at = e.span().map(|s| line_col(text, s.start)).unwrap_or_else(|| "(syntax)".into());
            cfg_err(at, format!("not valid TOML: {}", e.message().trim()))
        })?;
        if let Some(key) = non_finite(&value, String::new()) {
            return Err(cfg_err(key, "must be a finite number (nan and inf are not allowed)".into()));
        }
        let json = serde_json::to_value(&value).map_err(|e| cfg_err(crate::core::schema::ROOT.into(), e.to_string()))?;
        let schema: serde_json::Value = serde_json::from_str(PIPELINE_SCHEMA).expect("committed schema is JSON");
        let validator = jsonschema::validator_for(&schema).expect("committed schema is valid");
        let mut problems = crate::core::schema::problems(&schema, &validator, &json);
        if !problems.is_empty() {
            let first = problems.remove(0);
            let more = if problems.is_empty() {
                String::new()
            } else {
                format!(
                    " (and {} more: {})",
                    problems.len(),
                    problems.iter().map(|p| format!("{}: {}", p.key, p.message)).collect::<Vec<_>>().join("; ")
                )
            };
            return Err(cfg_err(first.key, format!("{}{more}", first.message)));
        }
        let cfg: PipelineConfig = serde_json::from_value(json).map_err(|e| cfg_err(crate::core::schema::ROOT.into(), e.to_string()))?;
        cfg.validate().map_err(|e| in_file(e, name))?;
        Ok(cfg)
    }

    /// Checks what the schema cannot: every listed stage has its section, and every section
    /// passes its own `validate()` (ranges again, for configs built in code, and the settings
    /// that depend on each other).
    pub fn validate(&self) -> Result<()> {
        let bad = |key: String, message: String| Error::Config { file: String::new(), key, message };
        for (i, stage) in self.stages.iter().enumerate() {
            let present = match stage {
                Stage::Docs => self.docs.is_some(),
                Stage::Dedup => self.dedup.is_some(),
                Stage::Pack => self.pack.is_some(),
                Stage::Sft => self.sft.is_some(),
                Stage::Eval => self.eval.is_some(),
                Stage::Train(name) => self.train.contains_key(name),
            };
            if !present {
                let have = match stage {
                    Stage::Train(_) if self.train.is_empty() => " (the file has no [train.<name>] section)".to_string(),
                    Stage::Train(_) => {
                        format!(" (the file has {})", self.train.keys().map(|k| format!("[train.{k}]")).collect::<Vec<_>>().join(", "))
                    }
                    _ => String::new(),
                };
                return Err(bad(format!("stages[{i}]"), format!("stage \"{stage}\" needs a [{}] section{have}", stage.section())));
            }
        }
        crate::core::schema::check(&self.ipc, "ipc")?;
        if let Some(d) = &self.docs {
            d.validate()?;
        }
        if let Some(d) = &self.dedup {
            d.validate().map_err(|e| in_section(e, "dedup"))?;
        }
        if let Some(p) = &self.pack {
            p.validate().map_err(|e| in_section(e, "pack"))?;
        }
        if let Some(s) = &self.sft {
            s.validate().map_err(|e| in_section(e, "sft"))?;
        }
        if let Some(e) = &self.eval {
            e.validate().map_err(|e| in_section(e, "eval"))?;
        }
        for (name, t) in &self.train {
            t.validate().map_err(|e| in_section(e.into(), &format!("train.{name}")))?;
        }
        Ok(())
    }
}

/// `line L, column C` of a byte offset (both 1-based).
fn line_col(text: &str, offset: usize) -> String {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    format!("line {line}, column {col}")
}

/// The dotted key of the first NaN or infinite float in a TOML document (JSON, and so the
/// schema, has no such numbers).
fn non_finite(v: &toml::Value, key: String) -> Option<String> {
    let join = |k: &str| if key.is_empty() { k.to_string() } else { format!("{key}.{k}") };
    match v {
        toml::Value::Float(f) if !f.is_finite() => Some(if key.is_empty() { crate::core::schema::ROOT.into() } else { key }),
        toml::Value::Table(t) => t.iter().find_map(|(k, v)| non_finite(v, join(k))),
        toml::Value::Array(a) => a.iter().enumerate().find_map(|(i, v)| non_finite(v, format!("{key}[{i}]"))),
        _ => None,
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
