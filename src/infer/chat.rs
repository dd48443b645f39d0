//! A multi-turn chat: the conversation so far is rendered with ChatML each turn, so the model
//! sees the whole history; the KV cache carries over between turns when the new prompt extends
//! the tokens it holds. [`repl`] is `coretech chat` on stdin/stdout.

use std::io::{BufRead, Write};

use super::generate::{generate, Generation, GenerationConfig, StopReason};
use super::model::Checkpoint;
use super::{tokenizer, InferError, Result};
use crate::sft::template::{render_chat, DEFAULT_SYSTEM_PROMPT};
use crate::sft::{Message, Role};

/// A conversation with one model.
#[derive(Debug, Clone)]
pub struct ChatSession {
    /// The system prompt; `None` uses the template's default.
    pub system: Option<String>,
    /// User and assistant turns so far.
    pub history: Vec<Message>,
    /// Generation settings of every turn.
    pub config: GenerationConfig,
}

impl ChatSession {
    /// An empty conversation.
    pub fn new(system: Option<String>, config: GenerationConfig) -> Self {
        ChatSession { system, history: Vec::new(), config }
    }

    /// The messages of the next prompt: system (if set), history, then `user`.
    pub fn messages_with(&self, user: &str) -> Vec<Message> {
        let mut msgs: Vec<Message> = self.system.iter().map(|s| Message::new(Role::System, s.clone())).collect();
        msgs.extend(self.history.iter().cloned());
        msgs.push(Message::new(Role::User, user));
        msgs
    }

    /// Asks `user`, streams the answer to `on_text`, and records both turns.
    pub fn ask(&mut self, ckpt: &mut Checkpoint, user: &str, on_text: impl FnMut(&str) -> std::io::Result<()>) -> Result<Generation> {
        let prompt = render_chat(&self.messages_with(user), DEFAULT_SYSTEM_PROMPT, true).text;
        let ids = tokenizer::encode(&ckpt.tokenizer, &prompt)?;
        let answer = generate(ckpt, &ids, &self.config, on_text)?;
        self.history.push(Message::new(Role::User, user));
        self.history.push(Message::new(Role::Assistant, answer.text.clone()));
        Ok(answer)
    }

    /// Forgets the turns (the system prompt stays).
    pub fn reset(&mut self) {
        self.history.clear();
    }
}

/// Reads questions line by line from `input` and streams answers to `out`; `/reset` starts a
/// new conversation, `/exit`, `/quit` or end of input ends. Prompts and notes go to `note`.
pub fn repl(
    ckpt: &mut Checkpoint,
    session: &mut ChatSession,
    input: impl BufRead,
    mut out: impl Write,
    mut note: impl Write,
) -> Result<()> {
    let io_err = |e| InferError::io("<terminal>", e);
    write!(note, "> ").and_then(|_| note.flush()).map_err(io_err)?;
    for line in input.lines() {
        let line = line.map_err(|e| InferError::io("<stdin>", e))?;
        let q = line.trim();
        match q {
            "" => {}
            "/exit" | "/quit" => break,
            "/reset" => {
                session.reset();
                writeln!(note, "(conversation reset)").map_err(io_err)?;
            }
            _ => {
                let answer = session.ask(ckpt, q, |t| {
                    out.write_all(t.as_bytes())?;
                    out.flush()
                })?;
                writeln!(out).map_err(io_err)?;
                match answer.stop {
                    StopReason::StopToken => {}
                    StopReason::MaxNewTokens => writeln!(note, "(stopped after {} new tokens)", answer.tokens.len()).map_err(io_err)?,
                    StopReason::ContextFull => writeln!(note, "(context full: /reset to continue)").map_err(io_err)?,
                }
            }
        }
        write!(note, "> ").and_then(|_| note.flush()).map_err(io_err)?;
    }
    writeln!(note).map_err(io_err)?;
    Ok(())
}
