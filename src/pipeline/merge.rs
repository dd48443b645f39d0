//! Combining the outputs of a multi-task build (`output/task-*/manifest.json`) into one
//! manifest at `output/manifest.json` that lists every shard and sums the accounting.

use std::path::Path;

use crate::core::RunReport;
use crate::error::{Error, Result};
use crate::shard::Manifest;

/// Merges the task manifests under `dir`. Fails if a task is missing or unfinished, or if the
/// tasks were built with different configs.
pub fn merge(dir: &Path) -> Result<Manifest> {
    let mut tasks: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir() && p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("task-")))
        .collect();
    tasks.sort();
    if tasks.is_empty() {
        return Err(Error::Other(format!("{}: no task-* directories to merge", dir.display())));
    }
    let mut merged = Manifest::default();
    let mut report = RunReport::default();
    let mut expected_count: Option<u64> = None;
    for (i, t) in tasks.iter().enumerate() {
        let m = Manifest::load(t).map_err(|e| Error::Other(format!("{}: task not finished ({e})", t.display())))?;
        let count = m.info.get("task_count").and_then(|v| v.as_u64()).unwrap_or(1);
        let index = m.info.get("task_index").and_then(|v| v.as_u64()).unwrap_or(0);
        if *expected_count.get_or_insert(count) != count || index != i as u64 {
            return Err(Error::Other(format!("{}: task {index} of {count} does not fit the other tasks (expected task {i})", t.display())));
        }
        if i == 0 {
            merged.kind = m.kind.clone();
            merged.stage = m.stage.clone();
            merged.tool_version = m.tool_version.clone();
        } else if m.kind != merged.kind {
            return Err(Error::Other(format!("{}: kind {} differs from {}", t.display(), m.kind, merged.kind)));
        }
        let rel = t.file_name().unwrap().to_string_lossy().to_string();
        for s in &m.shards {
            let mut s = s.clone();
            s.file = format!("{rel}/{}", s.file);
            merged.shards.push(s);
        }
        if let Ok(r) = serde_json::from_value::<RunReport>(m.accounting.clone()) {
            if report.stage.is_empty() {
                report.stage = r.stage.clone();
            }
            report.merge(&r);
        }
        merged.info.insert(format!("task_{i:05}_config_hash"), m.config_hash.clone().into());
    }
    if expected_count != Some(tasks.len() as u64) {
        return Err(Error::Other(format!(
            "{}: found {} task directories, the tasks say {}",
            dir.display(),
            tasks.len(),
            expected_count.unwrap_or(0)
        )));
    }
    merged.config_hash = crate::core::hash_of(&merged.info);
    merged.info.insert("task_count".into(), (tasks.len() as u64).into());
    merged.accounting = report.accounting();
    merged.save(dir)?;
    Ok(merged)
}
