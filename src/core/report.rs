//! The run report: every document read ends in exactly one bucket — kept, filtered (by reason),
//! duplicate, or error (by kind) — per source. Printed as a table and written as JSON.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::error::ReadError;

/// How many error messages are kept verbatim in the report (all are counted).
pub const ERROR_SAMPLES: usize = 50;

/// Counts for one source.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceStats {
    /// Input streams of this source (files, or zip members).
    pub files: u64,
    /// Records read (every framed record, including those that failed to parse).
    pub read: u64,
    /// Documents written.
    pub kept: u64,
    /// Documents dropped, by filter name.
    pub filtered: BTreeMap<String, u64>,
    /// Duplicates removed, by kind (`exact`, `near`).
    pub duplicates: BTreeMap<String, u64>,
    /// Records that could not be read, by error kind.
    pub errors: BTreeMap<String, u64>,
    /// Input bytes (compressed size of the files).
    pub bytes_in: u64,
    /// Bytes of kept text.
    pub bytes_out: u64,
    /// Kept documents whose id an earlier document of the build already has, by kind
    /// (`same-text`, `other-text`, and `renamed` for a repeat within one file; see
    /// `pipeline::ids`). They are among `kept`, not a bucket of the accounting.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub id_collisions: BTreeMap<String, u64>,
}

impl SourceStats {
    /// Sum of the buckets; equals `read` when the accounting is complete.
    pub fn accounted(&self) -> u64 {
        self.kept + self.filtered.values().sum::<u64>() + self.duplicates.values().sum::<u64>() + self.errors.values().sum::<u64>()
    }

    fn add(&mut self, o: &SourceStats) {
        self.files += o.files;
        self.read += o.read;
        self.kept += o.kept;
        self.bytes_in += o.bytes_in;
        self.bytes_out += o.bytes_out;
        for (k, v) in &o.filtered {
            *self.filtered.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &o.duplicates {
            *self.duplicates.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &o.errors {
            *self.errors.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &o.id_collisions {
            *self.id_collisions.entry(k.clone()).or_default() += v;
        }
    }
}

/// The accounting of one stage run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunReport {
    /// Stage name (`docs`, `dedup`, …).
    pub stage: String,
    /// Per-source counts.
    pub sources: BTreeMap<String, SourceStats>,
    /// Input streams no reader recognised (counted, never silently dropped).
    pub unrecognized: Vec<String>,
    /// The first [`ERROR_SAMPLES`] errors, verbatim.
    pub error_samples: Vec<ReadError>,
    /// Wall time of the run (not part of the manifest, which stays deterministic).
    #[serde(default)]
    pub elapsed_s: f64,
    /// The clean policy each source ran under (`docs`; several joined by `+` when input
    /// entries gave one source different policies).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub policies: BTreeMap<String, String>,
    /// Summary lines of stages that read no sources (training: steps, tokens, loss, checkpoint).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

impl RunReport {
    /// An empty report for `stage`.
    pub fn new(stage: &str) -> Self {
        Self { stage: stage.into(), ..Default::default() }
    }

    /// The stats of `source`, created on first use.
    pub fn source(&mut self, source: &str) -> &mut SourceStats {
        if !self.sources.contains_key(source) {
            self.sources.insert(source.to_string(), SourceStats::default());
        }
        self.sources.get_mut(source).unwrap()
    }

    /// Counts an error against `source` and keeps a sample of it.
    pub fn error(&mut self, source: &str, e: &ReadError) {
        let s = self.source(source);
        s.read += 1;
        *s.errors.entry(e.kind.to_string()).or_default() += 1;
        self.sample(e);
    }

    /// Keeps `e` among the error samples (while there is room) without counting it.
    pub fn sample(&mut self, e: &ReadError) {
        if self.error_samples.len() < ERROR_SAMPLES {
            self.error_samples.push(e.clone());
        }
    }

    /// Counts a filtered record.
    pub fn filtered(&mut self, source: &str, reason: &str) {
        let s = self.source(source);
        s.read += 1;
        *s.filtered.entry(reason.to_string()).or_default() += 1;
    }

    /// Notes that a document of `source` ran under the clean policy `policy`.
    pub fn policy(&mut self, source: &str, policy: &str) {
        match self.policies.get_mut(source) {
            Some(p) if p.split('+').any(|x| x == policy) => {}
            Some(p) => {
                let mut v: Vec<&str> = p.split('+').chain([policy]).collect();
                v.sort_unstable();
                *p = v.join("+");
            }
            None => {
                self.policies.insert(source.to_string(), policy.to_string());
            }
        }
    }

    /// Counts a duplicate of kind `kind` (`exact`, `near`, `same-id`).
    pub fn duplicate(&mut self, source: &str, kind: &str) {
        let s = self.source(source);
        s.read += 1;
        *s.duplicates.entry(kind.to_string()).or_default() += 1;
    }

    /// Counts a kept document of `bytes` text bytes.
    pub fn kept(&mut self, source: &str, bytes: u64) {
        let s = self.source(source);
        s.read += 1;
        s.kept += 1;
        s.bytes_out += bytes;
    }

    /// Totals over all sources.
    pub fn total(&self) -> SourceStats {
        let mut t = SourceStats::default();
        for s in self.sources.values() {
            t.add(s);
        }
        t
    }

    /// Adds another report's counts (merging task reports).
    pub fn merge(&mut self, o: &RunReport) {
        for (k, v) in &o.sources {
            self.source(k).add(v);
        }
        self.unrecognized.extend(o.unrecognized.iter().cloned());
        for (source, ps) in &o.policies {
            for p in ps.split('+') {
                self.policy(source, p);
            }
        }
        for e in &o.error_samples {
            self.sample(e);
        }
    }

    /// The counts alone (what goes into a manifest): no timings.
    pub fn accounting(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).expect("report serializes");
        v.as_object_mut().unwrap().remove("elapsed_s");
        v
    }

    /// A human-readable table: one row per source and a total.
    pub fn table(&self) -> String {
        let mut out = String::new();
        if self.sources.is_empty() && !self.notes.is_empty() {
            for n in &self.notes {
                let _ = writeln!(out, "{n}");
            }
            return out;
        }
        let _ = writeln!(
            out,
            "{:<10} {:>6} {:>9} {:>9} {:>9} {:>7} {:>7} {:>10} {:>10} {:>8}",
            "source", "files", "read", "kept", "filtered", "dups", "errors", "MB in", "MB out", "MB/s"
        );
        let secs = self.elapsed_s.max(1e-9);
        let mut row = |name: &str, s: &SourceStats| {
            let _ = writeln!(
                out,
                "{:<10} {:>6} {:>9} {:>9} {:>9} {:>7} {:>7} {:>10.2} {:>10.2} {:>8.1}",
                name,
                s.files,
                s.read,
                s.kept,
                s.filtered.values().sum::<u64>(),
                s.duplicates.values().sum::<u64>(),
                s.errors.values().sum::<u64>(),
                s.bytes_in as f64 / 1e6,
                s.bytes_out as f64 / 1e6,
                s.bytes_in as f64 / 1e6 / secs,
            );
        };
        for (k, s) in &self.sources {
            row(k, s);
        }
        let total = self.total();
        row("total", &total);
        let mut reasons: BTreeMap<String, u64> = BTreeMap::new();
        for s in self.sources.values() {
            for (k, v) in s
                .filtered
                .iter()
                .map(|(k, v)| (format!("filtered:{k}"), v))
                .chain(s.errors.iter().map(|(k, v)| (format!("error:{k}"), v)))
                .chain(s.duplicates.iter().map(|(k, v)| (format!("duplicate:{k}"), v)))
                .chain(s.id_collisions.iter().map(|(k, v)| (format!("id-collision:{k}"), v)))
            {
                *reasons.entry(k).or_default() += v;
            }
        }
        if !reasons.is_empty() {
            let _ = writeln!(out, "by reason: {}", reasons.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(", "));
        }
        if !self.policies.is_empty() {
            let _ = writeln!(out, "clean policy: {}", self.policies.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(", "));
        }
        if !self.unrecognized.is_empty() {
            let _ = writeln!(out, "unrecognized inputs ({}): {}", self.unrecognized.len(), self.unrecognized.join(", "));
        }
        for e in self.error_samples.iter().take(10) {
            let _ = writeln!(out, "error: {}", e.with_causes());
        }
        for n in &self.notes {
            let _ = writeln!(out, "{n}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{Position, ReadErrorKind};

    #[test]
    fn buckets_add_up() {
        let mut r = RunReport::new("docs");
        r.kept("epo", 10);
        r.filtered("epo", "biblio-only");
        r.error("uspto", &ReadError::new(Position::new("f", Some(1), None), ReadErrorKind::Xml, "bad"));
        let t = r.total();
        assert_eq!((t.read, t.accounted(), t.kept), (3, 3, 1));
        assert!(r.table().contains("filtered:biblio-only=1"));
        assert!(r.accounting().get("elapsed_s").is_none());
    }
}
