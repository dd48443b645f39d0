//! Clean policies: which filters a document meets depends on where it comes from.
//!
//! `[docs.clean]` is the base every policy starts from (all normalizers, and the web-text
//! filters: length, script ratio, Gopher quality, Gopher repetition). A policy is a set of
//! overrides of it (any `[docs.clean]` key), built in or given as `[docs.policies.NAME]` (given
//! keys are applied over the built-in ones of that name). A document runs under the policy of
//! its input entry (`[docs.policy_by_input]`, keyed by the entry as written in `inputs`), else
//! of its source (`[docs.policy_by_source]`, over the built-in map), else `web`.
//!
//! The built-in policies and why:
//! - `web` (WuDao, generic text): the base as it is. Web pages carry navigation, spam and
//!   templated junk; Gopher's quality and repetition rules are what they were made for.
//! - `patent` (USPTO, EPO, CNIPA): no Gopher quality or repetition rules. Office text is
//!   curated; on a real weekly USPTO grant file the n-gram repetition rules dropped 41 % of the
//!   design patents (short, formulaic by law) and `min_alpha_ratio = 0.8` dropped chemistry and
//!   table-heavy utility patents (word alpha ratio 0.75–0.80). What stays catches real faults:
//!   empty or near-empty text (`empty`, `min_length`), text in the wrong script for its
//!   language (`*_ratio`: encoding damage, a mislabelled language), and the readers' own
//!   `biblio-only` / `not-a-patent` skips; markup leftovers are normalized away.
//! - `reference` (IPC descriptions): only `empty`. Each entry is the one text that says what
//!   its code means; short and templated by construction, never junk.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::{CleanConfig, Cleaner};
use crate::error::{Error, Result};

/// The policy of a source missing from `policy_by_source` and the built-in map.
pub const DEFAULT_POLICY: &str = "web";

/// The built-in policies: overrides of `[docs.clean]`.
pub fn builtin(name: &str) -> Option<Value> {
    Some(match name {
        "web" => json!({}),
        "patent" => json!({ "quality": { "enabled": false }, "repetition": { "enabled": false } }),
        "reference" => json!({
            "length": { "min_chars": 1 },
            "script": { "enabled": false },
            "quality": { "enabled": false },
            "repetition": { "enabled": false },
        }),
        _ => return None,
    })
}

/// The built-in policy of a source.
pub fn builtin_source_policy(source: &str) -> &'static str {
    match source {
        "uspto" | "epo" | "cnipa" => "patent",
        "ipc" => "reference",
        _ => DEFAULT_POLICY,
    }
}

/// The policies of one build, each with its cleaner.
#[derive(Debug)]
pub struct Policies {
    names: Vec<String>,
    cleaners: Vec<Cleaner>,
    by_source: BTreeMap<String, usize>,
    by_input: BTreeMap<String, usize>,
}

/// `over` applied onto `base`: objects merge key by key, anything else replaces.
fn merge(base: &mut Value, over: &Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                merge(b.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (b, o) => *b = o.clone(),
    }
}

impl Policies {
    /// Builds every policy the config names or uses. Errors name the key: an unknown policy
    /// name, an input entry that is not in `inputs`, an override that is not a clean setting.
    pub fn new(
        base: &CleanConfig,
        given: &BTreeMap<String, Value>,
        by_source: &BTreeMap<String, String>,
        by_input: &BTreeMap<String, String>,
        inputs: &[String],
    ) -> Result<Policies> {
        let bad = |key: String, message: String| Error::Config { file: String::new(), key, message };
        let base_value = serde_json::to_value(base).expect("clean config serializes");
        let mut names: Vec<String> = ["web", "patent", "reference"].iter().map(|s| s.to_string()).collect();
        names.extend(given.keys().filter(|k| builtin(k).is_none()).cloned());
        let mut cleaners = Vec::new();
        for name in &names {
            let mut v = base_value.clone();
            merge(&mut v, &builtin(name).unwrap_or_else(|| json!({})));
            if let Some(o) = given.get(name) {
                merge(&mut v, o);
            }
            let key = format!("docs.policies.{name}");
            let cfg: CleanConfig = serde_json::from_value(v).map_err(|e| bad(key.clone(), format!("not a [docs.clean] setting: {e}")))?;
            // A key the clean checks name from `clean.` is this policy's own key.
            cleaners.push(Cleaner::new(&cfg).map_err(|e| match e {
                Error::Config { key: k, message, .. } => bad(format!("{key}.{}", k.strip_prefix("clean.").unwrap_or(&k)), message),
                other => bad(key, other.to_string()),
            })?);
        }
        let index = |key: &str, name: &str| -> Result<usize> {
            names.iter().position(|n| n == name).ok_or_else(|| {
                bad(key.to_string(), format!("unknown policy {name:?} (allowed: {}, or one defined in [docs.policies])", names.join(", ")))
            })
        };
        let mut sources: BTreeMap<String, usize> = BTreeMap::new();
        for s in ["uspto", "epo", "cnipa", "ipc", "wudao", "text"] {
            sources.insert(s.into(), index("docs.policy_by_source", builtin_source_policy(s))?);
        }
        for (s, p) in by_source {
            sources.insert(s.clone(), index(&format!("docs.policy_by_source.{s}"), p)?);
        }
        let mut inputs_map = BTreeMap::new();
        for (entry, p) in by_input {
            if !inputs.contains(entry) {
                return Err(bad(format!("docs.policy_by_input.{entry:?}"), format!("not an entry of docs.inputs ({inputs:?})")));
            }
            inputs_map.insert(entry.clone(), index(&format!("docs.policy_by_input.{entry:?}"), p)?);
        }
        Ok(Policies { names, cleaners, by_source: sources, by_input: inputs_map })
    }

    /// The policy of a document of `source` read from the input entry `entry`.
    pub fn select(&self, entry: Option<&str>, source: &str) -> usize {
        entry
            .and_then(|e| self.by_input.get(e))
            .or_else(|| self.by_source.get(source))
            .copied()
            .unwrap_or_else(|| self.names.iter().position(|n| n == DEFAULT_POLICY).expect("web is built in"))
    }

    /// The cleaner of policy `i`.
    pub fn cleaner(&self, i: usize) -> &Cleaner {
        &self.cleaners[i]
    }

    /// The name of policy `i`.
    pub fn name(&self, i: usize) -> &str {
        &self.names[i]
    }
}
