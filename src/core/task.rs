//! The share of a multi-machine build one process does (`--task-index I --task-count N`, the
//! form of a Slurm job array).

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// This process's share of a build: task `index` of `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct TaskSplit {
    /// This task, 0-based.
    pub index: usize,
    /// Number of tasks.
    pub count: usize,
}

impl Default for TaskSplit {
    fn default() -> Self {
        Self { index: 0, count: 1 }
    }
}

impl TaskSplit {
    /// Checks `index < count`.
    pub fn new(index: usize, count: usize) -> Result<Self> {
        if count == 0 || index >= count {
            return Err(Error::Other(format!("--task-index {index} must be below --task-count {count}")));
        }
        Ok(Self { index, count })
    }

    /// Where this task writes: `output` itself for a single task, else `output/task-IIIII`.
    pub fn output_dir(&self, output: &Path) -> PathBuf {
        if self.count == 1 {
            output.to_path_buf()
        } else {
            output.join(format!("task-{:05}", self.index))
        }
    }

    /// This task's contiguous range of `n` ordered items (items `[n·i/N, n·(i+1)/N)`). Contiguous
    /// ranges keep the global order: the task outputs, concatenated in task order (what
    /// `coretech merge` lists), hold the items in the order a single task would.
    pub fn range(&self, n: usize) -> std::ops::Range<usize> {
        let at = |i: usize| (n as u128 * i as u128 / self.count as u128) as usize;
        at(self.index)..at(self.index + 1)
    }

    /// Items `i ≡ index (mod count)`: for work whose outputs are not concatenated (dedup's
    /// per-shard steps), where round-robin balances better than ranges.
    pub fn owns(&self, i: usize) -> bool {
        i % self.count == self.index
    }
}

/// Options every stage takes from the command line.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunOptions {
    /// This process's share of the inputs.
    pub task: TaskSplit,
    /// Fail on the first bad record.
    pub strict: bool,
    /// Write into a non-empty output folder the stage did not create (its files are never
    /// deleted or overwritten).
    pub force: bool,
}

impl From<TaskSplit> for RunOptions {
    fn from(task: TaskSplit) -> Self {
        Self { task, ..Default::default() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_cover_every_item_once_in_order() {
        for n in [0usize, 1, 2, 7, 100] {
            for count in 1..6 {
                let all: Vec<usize> = (0..count).flat_map(|i| TaskSplit::new(i, count).unwrap().range(n)).collect();
                assert_eq!(all, (0..n).collect::<Vec<_>>(), "n {n} count {count}");
            }
        }
        assert!(TaskSplit::new(3, 3).is_err());
    }
}
