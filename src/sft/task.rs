//! Task names: a record's own task key (`task_type` in the CoreTech files, present in some
//! records and absent in others) mapped through aliases, or, when absent, inferred.
//!
//! Inference: a question matching `ipc_question_pattern` (IPC, 分类号, …) or an answer with at
//! least `ipc_min_codes` well-formed IPC codes is `ipc`; anything else is `fallback` (`tech`,
//! CoreTech's other task: "which key technologies does a field involve"). The tech questions
//! are too varied for a pattern (核心科技, 研究方向, 应用领域, 如何运作 …), while the IPC ones
//! always name the classification or answer with codes. On the CoreTech files this agrees with
//! every record that carries `task_type` (tested). Inputs that are neither (general chat) set
//! their `task` in the config.

use regex::Regex;

use super::config::TaskConfig;
use super::validate::extract_codes;
use crate::error::{Error, Result};

/// Compiled task settings.
#[derive(Debug)]
pub struct TaskResolver {
    cfg: TaskConfig,
    ipc_question: Regex,
}

impl TaskResolver {
    /// Compiles the patterns; a bad regex is a config error naming the key.
    pub fn new(cfg: &TaskConfig) -> Result<Self> {
        let re = |key: &str, pat: &str| {
            Regex::new(pat).map_err(|e| Error::Config { file: String::new(), key: format!("sft.tasks.{key}"), message: e.to_string() })
        };
        Ok(Self { cfg: cfg.clone(), ipc_question: re("ipc_question_pattern", &cfg.ipc_question_pattern)? })
    }

    /// The record keys that carry a task.
    pub fn keys(&self) -> &[String] {
        &self.cfg.keys
    }

    /// Canonical name of a given task value.
    pub fn canonical(&self, value: &str) -> String {
        let v = value.trim();
        self.cfg.aliases.get(v).cloned().unwrap_or_else(|| v.to_lowercase())
    }

    /// The inferred task of a question/answer pair.
    pub fn infer(&self, question: &str, answer: &str) -> String {
        if self.ipc_question.is_match(question) {
            return "ipc".into();
        }
        let codes = extract_codes(answer).iter().filter(|m| m.normalized.is_some()).count();
        if codes >= self.cfg.ipc_min_codes.max(1) {
            return "ipc".into();
        }
        self.cfg.fallback.clone()
    }
}
