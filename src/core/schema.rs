//! Config values checked against the JSON Schema their Rust types generate (schemars): ranges,
//! types, enums and unknown keys are declared once, on the types, and every error names the
//! dotted key and, for enums, the allowed values.

use schemars::JsonSchema;
use serde::Serialize;
use serde_json::Value;

use crate::error::{Error, Result};

/// One schema violation: the dotted key (`docs.writer.row_group_rows`, `train.cpt.data.stages[0].epochs`)
/// and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Problem {
    /// Dotted path of the key; `(root)` for the document itself.
    pub key: String,
    /// What is wrong, with the allowed values of an enum or the allowed keys of a table.
    pub message: String,
}

/// Every violation of `instance` under `schema` (compiled as `validator`), sorted by key.
pub fn problems(schema: &Value, validator: &jsonschema::Validator, instance: &Value) -> Vec<Problem> {
    let mut out: Vec<Problem> = validator.iter_errors(instance).map(|e| problem(schema, instance, &e)).collect();
    out.sort();
    out.dedup();
    out
}

/// Checks a config section, however it was built (parsed or in code), against its type's
/// schema. `prefix` is the section's dotted key (`dedup`, `train.cpt`); the error's file is
/// left empty for the caller to fill.
pub fn check<T: JsonSchema + Serialize>(section: &T, prefix: &str) -> Result<()> {
    let schema = schema_of::<T>();
    let validator = jsonschema::validator_for(&schema).expect("generated schema is valid");
    // NaN and infinities serialize as null, which the schema refuses as "not a number".
    let instance = serde_json::to_value(section).map_err(|e| config_error(prefix, e.to_string()))?;
    match problems(&schema, &validator, &instance).into_iter().next() {
        None => Ok(()),
        Some(p) => Err(config_error(&join_key(prefix, &p.key), p.message)),
    }
}

/// The JSON Schema of a config type, with the bounds its integer and float widths imply.
pub fn schema_of<T: JsonSchema>() -> Value {
    let mut schema = serde_json::to_value(schemars::schema_for!(T)).expect("schema serializes");
    bound_formats(&mut schema);
    schema
}

/// Adds the range of a field's Rust type where the schema states none: schemars writes
/// `"format": "uint32"` but no maximum, so a `u32` key set to 2^40 passed the schema and failed
/// later, in serde, without naming the key. Widths of 64 bits need nothing (TOML integers are
/// `i64`, and the minimum of an unsigned type is already there).
fn bound_formats(v: &mut Value) {
    match v {
        Value::Object(map) => {
            let range: Option<(f64, f64)> = match map.get("format").and_then(Value::as_str) {
                Some("int8") => Some((i8::MIN.into(), i8::MAX.into())),
                Some("uint8") => Some((0.0, u8::MAX.into())),
                Some("int16") => Some((i16::MIN.into(), i16::MAX.into())),
                Some("uint16") => Some((0.0, u16::MAX.into())),
                Some("int32") => Some((i32::MIN.into(), i32::MAX.into())),
                Some("uint32") => Some((0.0, u32::MAX.into())),
                Some("float") => Some((f32::MIN.into(), f32::MAX.into())),
                _ => None,
            };
            if let Some((lo, hi)) = range {
                let integer = map.get("format").and_then(Value::as_str) != Some("float");
                let num = |x: f64| if integer { Value::from(x as i64) } else { Value::from(x) };
                map.entry("minimum").or_insert_with(|| num(lo));
                map.entry("maximum").or_insert_with(|| num(hi));
            }
            map.values_mut().for_each(bound_formats);
        }
        Value::Array(a) => a.iter_mut().for_each(bound_formats),
        _ => {}
    }
}

/// `prefix` + `key` as one dotted key (`(root)` stands for the prefix itself).
pub fn join_key(prefix: &str, key: &str) -> String {
    match (prefix.is_empty(), key == ROOT) {
        (true, _) => key.to_string(),
        (false, true) => prefix.to_string(),
        (false, false) if key.starts_with('[') => format!("{prefix}{key}"),
        (false, false) => format!("{prefix}.{key}"),
    }
}

/// The key of the document itself.
pub const ROOT: &str = "(root)";

fn config_error(key: &str, message: String) -> Error {
    Error::Config { file: String::new(), key: key.to_string(), message }
}

/// The segments of a JSON pointer (`/a/b~1c` → `a`, `b/c`).
fn segments(pointer: &str) -> Vec<String> {
    pointer.split('/').skip(1).map(|s| s.replace("~1", "/").replace("~0", "~")).collect()
}

/// Dotted key of a pointer into `instance`: object keys joined by `.`, array indices as `[i]`.
fn dotted(instance: &Value, segs: &[String]) -> String {
    let mut key = String::new();
    let mut at = Some(instance);
    for s in segs {
        match at {
            Some(Value::Array(a)) => {
                key.push_str(&format!("[{s}]"));
                at = s.parse::<usize>().ok().and_then(|i| a.get(i));
            }
            _ => {
                if !key.is_empty() {
                    key.push('.');
                }
                key.push_str(s);
                at = at.and_then(|v| v.get(s));
            }
        }
    }
    if key.is_empty() {
        ROOT.into()
    } else {
        key
    }
}

/// The schema node that describes the instance at `segs` (following `$ref`, `properties`,
/// `additionalProperties`, `items` and the first object-typed branch of `anyOf`/`oneOf`).
fn node_at<'a>(root: &'a Value, segs: &[String]) -> Option<&'a Value> {
    let mut node = resolve(root, root)?;
    for s in segs {
        node = resolve(root, node)?;
        node = if let Some(p) = node.get("properties").and_then(|p| p.get(s.as_str())) {
            p
        } else if let Some(a) = node.get("additionalProperties").filter(|a| a.is_object()) {
            a
        } else {
            node.get("items")?
        };
    }
    resolve(root, node)
}

/// Follows `$ref` (to `#/$defs/...`) and picks the object branch of an `anyOf`/`oneOf`
/// (`Option<Table>` is `anyOf: [Table, null]`).
fn resolve<'a>(root: &'a Value, mut node: &'a Value) -> Option<&'a Value> {
    for _ in 0..16 {
        if let Some(r) = node.get("$ref").and_then(Value::as_str) {
            node = root.pointer(r.trim_start_matches('#'))?;
            continue;
        }
        if node.get("properties").is_none() {
            if let Some(branch) = ["anyOf", "oneOf", "allOf"]
                .iter()
                .filter_map(|k| node.get(*k).and_then(Value::as_array))
                .flatten()
                .find(|b| b.get("$ref").is_some() || b.get("properties").is_some())
            {
                node = branch;
                continue;
            }
        }
        return Some(node);
    }
    None
}

fn quoted(v: &Value) -> String {
    v.to_string()
}

/// Allowed values named by an error tree: `const` and `enum` branches, `pattern`s.
fn allowed(kind: &jsonschema::error::ValidationErrorKind, values: &mut Vec<String>, patterns: &mut Vec<String>) {
    use jsonschema::error::ValidationErrorKind as K;
    match kind {
        K::Constant { expected_value } => values.push(quoted(expected_value)),
        K::Enum { options } => values.extend(options.as_array().into_iter().flatten().map(quoted)),
        K::Pattern { pattern } => patterns.push(pattern.clone()),
        K::OneOfNotValid { context } | K::AnyOf { context } => {
            for e in context.iter().flatten() {
                allowed(e.kind(), values, patterns);
            }
        }
        _ => {}
    }
}

/// The first problem of `found` against the object branch of the schema node at `segs` (with
/// the root's `$defs`, so its references resolve).
fn inner_problem(root: &Value, segs: &[String], found: &Value) -> Option<Problem> {
    let mut branch = node_at(root, segs)?.clone();
    if let (Some(obj), Some(defs)) = (branch.as_object_mut(), root.get("$defs")) {
        obj.entry("$defs").or_insert_with(|| defs.clone());
    }
    let validator = jsonschema::validator_for(&branch).ok()?;
    problems(&branch, &validator, found).into_iter().next()
}

fn problem(root: &Value, instance: &Value, e: &jsonschema::ValidationError<'_>) -> Problem {
    use jsonschema::error::ValidationErrorKind as K;
    let segs = segments(e.instance_path().as_str());
    let key = dotted(instance, &segs);
    let found = e.instance();
    match e.kind() {
        K::AdditionalProperties { unexpected } => {
            let known: Vec<String> = node_at(root, &segs)
                .and_then(|n| n.get("properties"))
                .and_then(Value::as_object)
                .map(|p| p.keys().cloned().collect())
                .unwrap_or_default();
            let mut segs = segs.clone();
            segs.push(unexpected.first().cloned().unwrap_or_default());
            let more = if unexpected.len() > 1 { format!(" (also unknown: {})", unexpected[1..].join(", ")) } else { String::new() };
            Problem { key: dotted(instance, &segs), message: format!("unknown key; allowed here: {}{more}", known.join(", ")) }
        }
        K::Required { property } => {
            let mut segs = segs.clone();
            segs.push(property.as_str().unwrap_or_default().to_string());
            Problem { key: dotted(instance, &segs), message: "missing: this key is required".into() }
        }
        // An optional table (`anyOf: [Table, null]`) that is present but wrong: the table's own
        // problem, so the error names the inner key rather than the whole table.
        K::AnyOf { .. } if found.is_object() => match inner_problem(root, &segs, found) {
            Some(p) => Problem { key: join_key(&key, &p.key), message: p.message },
            None => Problem { key, message: e.to_string() },
        },
        K::OneOfNotValid { .. } | K::AnyOf { .. } | K::Enum { .. } | K::Constant { .. } => {
            let (mut values, mut patterns) = (Vec::new(), Vec::new());
            allowed(e.kind(), &mut values, &mut patterns);
            if values.is_empty() && patterns.is_empty() {
                return Problem { key, message: e.to_string() };
            }
            let mut choices = values.join(", ");
            for p in patterns {
                choices.push_str(&format!("{}a string matching {p}", if choices.is_empty() { "" } else { ", or " }));
            }
            Problem { key, message: format!("{found} is not allowed; allowed values: {choices}") }
        }
        K::MinLength { limit: 1 } | K::MinItems { limit: 1 } => Problem { key, message: format!("{found} must not be empty") },
        _ => Problem { key, message: e.to_string() },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize, JsonSchema)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        #[schemars(range(min = 1, max = 10))]
        n: usize,
        mode: Mode,
    }

    #[derive(Serialize, JsonSchema)]
    #[serde(rename_all = "lowercase")]
    #[allow(dead_code)]
    enum Mode {
        /// One.
        Fast,
        /// Two.
        Slow,
    }

    #[derive(Serialize, JsonSchema)]
    struct Outer {
        list: Vec<Inner>,
    }

    #[test]
    fn ranges_of_a_section_built_in_code_are_checked_with_the_key() {
        let ok = Outer { list: vec![Inner { n: 3, mode: Mode::Fast }] };
        check(&ok, "sec").unwrap();
        let bad = Outer { list: vec![Inner { n: 3, mode: Mode::Fast }, Inner { n: 0, mode: Mode::Slow }] };
        let e = check(&bad, "sec").unwrap_err().to_string();
        assert!(e.contains("sec.list[1].n") && e.contains("minimum of 1"), "{e}");
    }

    #[derive(Serialize, JsonSchema)]
    struct Optional {
        inner: Option<Inner>,
    }

    #[test]
    fn a_present_optional_table_names_its_inner_key() {
        check(&Optional { inner: None }, "sec").unwrap();
        let e = check(&Optional { inner: Some(Inner { n: 11, mode: Mode::Fast }) }, "sec").unwrap_err().to_string();
        assert!(e.contains("sec.inner.n") && e.contains("maximum of 10"), "{e}");
    }

    #[derive(Serialize, JsonSchema)]
    struct Widths {
        epochs: u32,
        penalty: f32,
    }

    #[test]
    fn a_value_beyond_the_rust_type_is_a_schema_error_naming_the_key() {
        let schema = schema_of::<Widths>();
        let v = jsonschema::validator_for(&schema).unwrap();
        let p = problems(&schema, &v, &serde_json::json!({"epochs": 1u64 << 40, "penalty": 1.0}));
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].key, "epochs");
        assert!(p[0].message.contains("maximum of 4294967295"), "{}", p[0].message);
        let p = problems(&schema, &v, &serde_json::json!({"epochs": 1, "penalty": 1e300}));
        assert_eq!(p[0].key, "penalty");
    }

    #[test]
    fn enum_errors_list_the_allowed_values_and_unknown_keys_the_allowed_keys() {
        let schema = serde_json::to_value(schemars::schema_for!(Outer)).unwrap();
        let v = jsonschema::validator_for(&schema).unwrap();
        let doc = serde_json::json!({"list": [{"n": 2, "mode": "fastt"}]});
        let p = problems(&schema, &v, &doc);
        assert_eq!(p[0].key, "list[0].mode");
        assert!(p[0].message.contains("\"fast\", \"slow\""), "{}", p[0].message);
        let doc = serde_json::json!({"list": [{"n": 2, "mode": "fast", "m": 1}]});
        let p = problems(&schema, &v, &doc);
        assert_eq!(p[0].key, "list[0].m");
        assert!(p[0].message.contains("allowed here: mode, n"), "{}", p[0].message);
    }
}
