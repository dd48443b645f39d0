//! The Qwen2.5 chat template (ChatML), as `fixtures/tokenizers/qwen2.5/chat_template.jinja`
//! renders it without tools: a system turn (the default one when the conversation has none),
//! then `<|im_start|>{role}\n{content}<|im_end|>\n` per turn, then `<|im_start|>assistant\n`
//! as the generation prompt. LLaMA-Factory's `qwen` template renders the same text.

use serde::{Deserialize, Serialize};

/// The system prompt of the template when a conversation has none.
pub const DEFAULT_SYSTEM_PROMPT: &str = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.";

/// Starts a turn.
pub const IM_START: &str = "<|im_start|>";
/// Ends a turn; the chat models' end of answer.
pub const IM_END: &str = "<|im_end|>";
/// End of document; the base models' EOS.
pub const END_OF_TEXT: &str = "<|endoftext|>";

/// Who speaks a turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Instructions to the model.
    System,
    /// The user.
    User,
    /// The model.
    Assistant,
}

impl Role {
    /// The role name the template writes after `<|im_start|>`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }
}

/// One turn of a conversation.
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

fn turn(out: &mut String, role: &str, content: &str) {
    out.push_str(IM_START);
    out.push_str(role);
    out.push('\n');
    out.push_str(content);
    out.push_str(IM_END);
    out.push('\n');
}

/// Renders `messages` as the template does; with `add_generation_prompt` the text ends with
/// `<|im_start|>assistant\n`, where the model's answer starts.
pub fn render(messages: &[Message], add_generation_prompt: bool) -> String {
    let mut out = String::new();
    match messages.first() {
        Some(m) if m.role == Role::System => turn(&mut out, "system", &m.content),
        _ => turn(&mut out, "system", DEFAULT_SYSTEM_PROMPT),
    }
    for (i, m) in messages.iter().enumerate() {
        // The leading system turn was written above; a later one is a turn like any other.
        if i == 0 && m.role == Role::System {
            continue;
        }
        turn(&mut out, m.role.as_str(), &m.content);
    }
    if add_generation_prompt {
        out.push_str(IM_START);
        out.push_str("assistant\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_system_turn_then_user_then_generation_prompt() {
        let text = render(&[Message::new(Role::User, "hi")], true);
        assert_eq!(
            text,
            "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n\
             <|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn own_system_prompt_and_history() {
        let msgs = [
            Message::new(Role::System, "S"),
            Message::new(Role::User, "q1"),
            Message::new(Role::Assistant, "a1"),
            Message::new(Role::User, "q2"),
        ];
        assert_eq!(
            render(&msgs, false),
            "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nq1<|im_end|>\n<|im_start|>assistant\na1<|im_end|>\n<|im_start|>user\nq2<|im_end|>\n"
        );
    }

    #[test]
    fn later_system_turn_is_kept_in_place() {
        let msgs = [Message::new(Role::User, "q"), Message::new(Role::System, "S2")];
        let text = render(&msgs, false);
        assert!(text.starts_with(&format!("<|im_start|>system\n{DEFAULT_SYSTEM_PROMPT}<|im_end|>\n<|im_start|>user\nq")));
        assert!(text.ends_with("<|im_start|>system\nS2<|im_end|>\n"));
    }
}
