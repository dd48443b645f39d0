//! Task names of SFT records: a record's own task key (`task_type` in the CoreTech files, present
//! in some records and absent in others) mapped through aliases and the built-in names, or, when
//! absent, inferred by the crate's one classifier ([`crate::ipc::task`]): `ipc`, `tech`, `joint`,
//! else `chat` (general conversation, never in the patent eval set). An input's `task` in the
//! config overrides both.

use crate::error::{Error, Result};
use crate::ipc::task::{Classifier, Task};

use super::config::TaskConfig;

/// Compiled task settings.
#[derive(Debug)]
pub struct TaskResolver {
    cfg: TaskConfig,
    classifier: Classifier,
}

impl TaskResolver {
    /// Compiles the patterns; a bad regex is a config error naming the key.
    pub fn new(cfg: &TaskConfig) -> Result<Self> {
        let classifier = Classifier::new(&cfg.infer).map_err(|(key, e)| Error::Config {
            file: String::new(),
            key: format!("sft.tasks.infer.{key}"),
            message: e.to_string(),
        })?;
        Ok(Self { cfg: cfg.clone(), classifier })
    }

    /// The record keys that carry a task.
    pub fn keys(&self) -> &[String] {
        &self.cfg.keys
    }

    /// Canonical name of a given task value: a configured alias, else a built-in task name
    /// (`IPC`, `key_tech`, `general`…), else the value lower-cased.
    pub fn canonical(&self, value: &str) -> String {
        let v = value.trim();
        if let Some(a) = self.cfg.aliases.get(v) {
            return a.clone();
        }
        Task::from_name(v).map_or_else(|| v.to_lowercase(), |t| t.as_str().to_string())
    }

    /// The inferred task of a question/answer pair.
    pub fn infer(&self, question: &str, answer: &str) -> String {
        self.classifier.classify(question, answer).as_str().to_string()
    }
}
