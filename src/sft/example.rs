//! One SFT example as read from any input format: an optional system prompt and alternating
//! user/assistant turns that end with an assistant turn (LLaMA-Factory's `_prompt` + `_response`).

use serde::{Deserialize, Serialize};

use crate::error::Position;

/// Who speaks a turn (of a training example or of a conversation at inference).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Instructions to the model. An example keeps its system prompt in [`Example::system`];
    /// at inference a leading system message is the system prompt and a later one is a turn.
    System,
    /// The question side (LLaMA-Factory `user`, sharegpt `human`).
    User,
    /// The answer side (LLaMA-Factory `assistant`, sharegpt `gpt`); the only side with loss.
    Assistant,
}

impl Role {
    /// The ChatML role name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }
}

/// One turn.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// Speaker.
    pub role: Role,
    /// Text, rendered verbatim.
    pub content: String,
}

impl Message {
    /// A turn of `role`.
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Message { role, content: content.into() }
    }
}

/// Train/validation/test membership.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    /// Training set.
    Train,
    /// Held-out validation set (validation loss while training).
    Validation,
    /// Held-out test set.
    Test,
    /// Not given by the input: the deterministic split decides.
    Auto,
}

impl Split {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Validation => "validation",
            Split::Test => "test",
            Split::Auto => "auto",
        }
    }
}

/// An SFT example.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Example {
    /// Stable id: `{dataset}:{ordinal}`.
    pub id: String,
    /// Dataset name (the `dataset_info.json` key, the configured name, or the file stem).
    pub dataset: String,
    /// Where the record is (file and line).
    pub position: Position,
    /// 0-based index of the record among the records of its file.
    pub ordinal: u64,
    /// Canonical task (`ipc`, `tech`, …), given or inferred.
    pub task: String,
    /// How the task was decided: `given` (a task key in the record), `config` (the input's
    /// `task`), or `inferred`.
    pub task_from: String,
    /// Train/validation/test membership.
    pub split: Split,
    /// The example's own system prompt, if it has a non-empty one.
    pub system: Option<String>,
    /// Alternating user/assistant turns, starting with user and ending with assistant.
    pub messages: Vec<Message>,
}

impl Example {
    /// An example with only what the template reads, a system prompt and turns (no id,
    /// dataset, position or task): benchmarks and checks that render records outside a build.
    pub fn from_turns(system: Option<String>, messages: Vec<Message>) -> Example {
        Example {
            id: String::new(),
            dataset: String::new(),
            position: Default::default(),
            ordinal: 0,
            task: String::new(),
            task_from: String::new(),
            split: Split::Train,
            system,
            messages,
        }
    }

    /// All user turns, joined by a newline (what decontamination and duplicate checks compare).
    pub fn question(&self) -> String {
        self.joined(Role::User)
    }

    /// All assistant turns, joined by a newline.
    pub fn answer(&self) -> String {
        self.joined(Role::Assistant)
    }

    /// Number of user/assistant exchanges.
    pub fn turns(&self) -> usize {
        self.messages.len() / 2
    }

    fn joined(&self, role: Role) -> String {
        let parts: Vec<&str> = self.messages.iter().filter(|m| m.role == role).map(|m| m.content.as_str()).collect();
        parts.join("\n")
    }
}
