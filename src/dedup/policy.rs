//! Per-source dedup policies: which documents take part in exact and near dedup, and which
//! documents carry an identity. Two documents of one source whose identities differ are never
//! duplicates of each other (exact or near): two IPC entries with different codes are two
//! pieces of knowledge however alike their templated text is. Documents without an identity,
//! or of different sources, are compared as usual, so a web page that copies an IPC entry is
//! still removed in favour of the entry.
//!
//! Built-in defaults, each with its reason (a `[dedup.sources.NAME]` table overrides any field):
//!
//! | source | exact | near | identity | why |
//! |---|---|---|---|---|
//! | `ipc` | on | on | `ipc` (the code) | each entry is the only text that defines its code, and sibling entries are near-identical by construction (`A01B 1/12` "带齿铲刀的" vs `A01B 1/04` "带齿的"); only copies of the same code collapse |
//! | `cnipa`, `epo`, `uspto` | on | on | `id` (the publication number with kind code) | a publication is a record in its own right: an A and a B publication of one family, or a continuation, are kept (the project's "never drop a valid patent" rule); the same publication read twice (two bulk files, two formats of one office) still collapses |
//! | any other (`wudao`, `text`, …) | on | on | none | web text: a near copy is a copy, whatever its URL or id |

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What identifies a document for the rule "documents of one source with different identities
/// are never duplicates of each other".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Identity {
    /// No identity: compared with every document.
    None,
    /// The document id (`{source}:{native id}`, e.g. the publication number).
    Id,
    /// The document's IPC symbols (for IPC reference entries: the code they describe).
    Ipc,
}

/// Dedup settings of one source; a field left out takes the source's built-in default.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SourcePolicy {
    /// Whether the source's documents take part in exact dedup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<bool>,
    /// Whether they take part in near dedup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub near: Option<bool>,
    /// What identifies a document of this source (`none`, `id`, `ipc`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<Identity>,
}

/// A source's policy with every field decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resolved {
    /// Takes part in exact dedup.
    pub exact: bool,
    /// Takes part in near dedup.
    pub near: bool,
    /// Identity key.
    pub identity: Identity,
}

/// The built-in policy of a source (see the module doc for the reasons).
pub fn builtin(source: &str) -> Resolved {
    let identity = match source {
        "ipc" => Identity::Ipc,
        "cnipa" | "epo" | "uspto" => Identity::Id,
        _ => Identity::None,
    };
    Resolved { exact: true, near: true, identity }
}

/// The policy of `source`: the configured fields over the built-in ones.
pub fn resolve(overrides: &BTreeMap<String, SourcePolicy>, source: &str) -> Resolved {
    let b = builtin(source);
    match overrides.get(source) {
        None => b,
        Some(o) => {
            Resolved { exact: o.exact.unwrap_or(b.exact), near: o.near.unwrap_or(b.near), identity: o.identity.unwrap_or(b.identity) }
        }
    }
}

/// One line naming the policy `source` runs under and where it comes from, for the run report
/// (`ipc: exact on, near on, identity ipc (built-in)`).
pub fn describe(overrides: &BTreeMap<String, SourcePolicy>, source: &str) -> String {
    let r = resolve(overrides, source);
    let on = |b: bool| if b { "on" } else { "off" };
    let identity = match r.identity {
        Identity::None => "none",
        Identity::Id => "id",
        Identity::Ipc => "ipc",
    };
    let from = if overrides.contains_key(source) { "configured" } else { "built-in" };
    format!("{source}: exact {}, near {}, identity {identity} ({from})", on(r.exact), on(r.near))
}

/// The identity of a document under `identity`, as a 64-bit key (0: none). The source is part
/// of the key, so identities of different sources never compare equal.
pub fn identity_key(identity: Identity, source: &str, id: &str, ipc: &[&str]) -> u64 {
    let value = match identity {
        Identity::None => return 0,
        Identity::Id => id.to_string(),
        Identity::Ipc => {
            if ipc.is_empty() {
                return 0;
            }
            let mut codes: Vec<&str> = ipc.to_vec();
            codes.sort_unstable();
            codes.dedup();
            codes.join("\u{1f}")
        }
    };
    let h = xxhash_rust::xxh3::xxh3_64(format!("{source}\u{0}{value}").as_bytes());
    h.max(1)
}

/// Whether two documents may be duplicates of each other: not when both carry an identity of
/// the same source and the identities differ.
pub fn compatible(source_a: &str, identity_a: u64, source_b: &str, identity_b: u64) -> bool {
    identity_a == 0 || identity_b == 0 || source_a != source_b || identity_a == identity_b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipc_codes_separate_only_within_a_source() {
        let p = BTreeMap::new();
        let r = resolve(&p, "ipc");
        assert_eq!(r.identity, Identity::Ipc);
        let a = identity_key(r.identity, "ipc", "ipc:A01B 1/04", &["A01B 1/04"]);
        let b = identity_key(r.identity, "ipc", "ipc:A01B 1/12", &["A01B 1/12"]);
        let a2 = identity_key(r.identity, "ipc", "ipc:A01B 1/04", &["A01B 1/04"]);
        assert!(!compatible("ipc", a, "ipc", b), "two codes are never duplicates");
        assert!(compatible("ipc", a, "ipc", a2), "copies of one code collapse");
        assert!(compatible("ipc", a, "wudao", 0), "a web copy of an entry is a duplicate");
        assert_eq!(identity_key(Identity::Ipc, "ipc", "ipc:x", &[]), 0, "no code, no identity");
        assert_eq!(resolve(&p, "wudao").identity, Identity::None);
        assert_eq!(resolve(&p, "cnipa").identity, Identity::Id);
    }

    #[test]
    fn overrides_replace_only_the_fields_they_set() {
        let mut p = BTreeMap::new();
        p.insert("ipc".to_string(), SourcePolicy { near: Some(false), ..Default::default() });
        p.insert("cnipa".to_string(), SourcePolicy { identity: Some(Identity::None), ..Default::default() });
        assert_eq!(resolve(&p, "ipc"), Resolved { exact: true, near: false, identity: Identity::Ipc });
        assert_eq!(resolve(&p, "cnipa").identity, Identity::None);
        assert_eq!(describe(&p, "ipc"), "ipc: exact on, near off, identity ipc (configured)");
        assert_eq!(describe(&p, "wudao"), "wudao: exact on, near on, identity none (built-in)");
    }
}
