//! Combining the outputs of a multi-task build (`output/task-*/.manifest.json`) into one
//! manifest at `output/.manifest.json` that lists every shard and sums the accounting. For a
//! docs build, this is where the ids are checked across all tasks ([`super::ids`]), so the
//! merged accounting is the one a single task would have written.

use std::path::Path;

use crate::core::RunReport;
use crate::error::{Error, Result};
use crate::shard::Manifest;
use crate::stage::{REJECTS_DIR_KEY, REJECTS_KIND};

/// The id check's work folder during a merge (removed when the check ends).
const IDS_WORK_DIR: &str = ".ids-work";

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
    // The tasks' rejects folders, as each task's manifest names them.
    let mut rejects: Vec<std::path::PathBuf> = Vec::new();
    // A task that ran strict makes the id check strict.
    let mut strict = false;
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
        strict |= m.info.get(super::docs::STRICT_KEY).and_then(|v| v.as_bool()).unwrap_or(false);
        if let Some(r) = m.info.get(REJECTS_DIR_KEY).and_then(|v| v.as_str()) {
            rejects.push(r.into());
        }
    }
    if expected_count != Some(tasks.len() as u64) {
        return Err(Error::Other(format!(
            "{}: found {} task directories, the tasks say {}",
            dir.display(),
            tasks.len(),
            expected_count.unwrap_or(0)
        )));
    }
    if merged.stage == "docs" {
        let paths: Vec<_> = merged.shards.iter().map(|s| dir.join(&s.file)).collect();
        super::ids::check(&paths, &dir.join(IDS_WORK_DIR), strict, &mut report)?;
    }
    merged.config_hash = crate::core::hash_of(&merged.info);
    merged.info.insert("task_count".into(), (tasks.len() as u64).into());
    merged.accounting = report.accounting();
    if !rejects.is_empty() {
        let base = merge_rejects(&rejects, tasks.len(), merged.accounting.clone())?;
        merged.info.insert(REJECTS_DIR_KEY.into(), base.display().to_string().into());
        merged.info.insert("rejects".into(), rejects_rows(&base)?.into());
    }
    merged.save(dir)?;
    Ok(merged)
}

/// Writes the rejects manifest of a multi-task build at the folder holding the tasks' rejects
/// folders (`REJECTS/task-NNNNN/`), listing every part; returns that folder. The paths are the
/// ones the tasks wrote into their manifests (relative ones: run `merge` where the build ran).
fn merge_rejects(task_dirs: &[std::path::PathBuf], tasks: usize, accounting: serde_json::Value) -> Result<std::path::PathBuf> {
    let base = task_dirs[0].parent().map(std::path::Path::to_path_buf).unwrap_or_default();
    if task_dirs.len() != tasks {
        return Err(Error::Other(format!("{}: {} of {tasks} tasks wrote rejects", base.display(), task_dirs.len())));
    }
    let mut merged = Manifest { kind: REJECTS_KIND.into(), ..Default::default() };
    for (i, t) in task_dirs.iter().enumerate() {
        let name = format!("task-{i:05}");
        if *t != base.join(&name) {
            return Err(Error::Other(format!("{}: task {i}'s rejects folder is not {}", t.display(), base.join(&name).display())));
        }
        let m = Manifest::load(t).map_err(|e| Error::Other(format!("{}: task {i}'s rejects are not finished ({e})", t.display())))?;
        merged.stage = m.stage.clone();
        merged.tool_version = m.tool_version.clone();
        merged.info.insert(format!("task_{i:05}_config_hash"), m.config_hash.clone().into());
        merged.shards.extend(m.shards.into_iter().map(|mut s| {
            s.file = format!("{name}/{}", s.file);
            s
        }));
    }
    merged.config_hash = crate::core::hash_of(&merged.info);
    merged.accounting = accounting;
    merged.save(&base)?;
    Ok(base)
}

/// The rows of a rejects folder's parts, from its manifest.
fn rejects_rows(dir: &std::path::Path) -> Result<u64> {
    Ok(Manifest::load(dir)?.shards.iter().map(|s| s.rows).sum())
}
