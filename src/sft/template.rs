//! Qwen ChatML: the one renderer of conversations for training and inference, tokenization
//! and the loss mask.
//!
//! Text (the Qwen2.5 chat template, `fixtures/tokenizers/qwen2.5/chat_template.jinja`, and
//! LLaMA-Factory's `qwen` template): `<|im_start|>system\n{system}<|im_end|>\n` then
//! `<|im_start|>{role}\n{content}<|im_end|>\n` per turn, then, for generation,
//! `<|im_start|>assistant\n`. [`render_turns`] is the only function that writes it: the SFT
//! build ([`render`], an example) and inference ([`render_chat`], a conversation whose leading
//! system message is the system prompt) both call it, so the prompt a model answers at
//! evaluation is the training text up to the answer (tested on every fixture example, text and
//! ids). The system prompt is the example's or conversation's own, else a default
//! ([`DEFAULT_SYSTEM_PROMPT`] unless configured); an empty one writes no system turn, as in
//! LLaMA-Factory (transformers' template would write an empty turn; the two agree otherwise).
//! The whole text is encoded at once, so the ids equal transformers' `apply_chat_template`
//! (tested against a golden file made by `tests/golden/make_sft_ids.py`).
//!
//! Loss mask, as LLaMA-Factory's `qwen` template labels: its assistant formatter is
//! `{{content}}<|im_end|>\n` and `_encode_supervised_example` keeps the labels of exactly those
//! tokens (every turn; prompt tokens −100). So a token is 1 when it lies inside an assistant
//! content or the `<|im_end|>` and `\n` that close it. LLaMA-Factory encodes each message
//! separately; the two encodings differ only if a token spans the `assistant\n` | content
//! boundary, which needs a content starting with a line break. Such tokens get mask 0 and are
//! counted (`straddling`); none occur in the fixtures.
//!
//! Truncation (`cutoff_len`) is LLaMA-Factory's: per (prompt, answer) pair in order,
//! `infer_seqlen` shares the remaining budget between the pair's prompt and answer, cutting
//! each from its end; turns after the budget is spent are dropped.

use std::ops::Range;

use super::example::{Example, Message, Role};
use super::tokenizer::SftTokenizer;
use crate::error::Result;

/// The Qwen2.5 template's system prompt for a conversation that has none (the default of
/// `sft.template.default_system` and of inference).
pub const DEFAULT_SYSTEM_PROMPT: &str = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.";

/// The ChatML special tokens (defined with the tokenizer, which the trainer's checkpoint files
/// name too; re-exported here where the template uses them).
pub use crate::tokenize::{END_OF_TEXT, IM_END, IM_START};

/// A conversation rendered as ChatML text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// The full text.
    pub text: String,
    /// Byte ranges that carry loss: each assistant content plus its `<|im_end|>\n`.
    pub targets: Vec<Range<usize>>,
    /// Byte ranges of the assistant contents alone.
    pub answers: Vec<Range<usize>>,
    /// Byte ranges of the user contents.
    pub questions: Vec<Range<usize>>,
}

/// The ChatML renderer: a system turn when `system` is not empty, then every turn of `turns` in
/// order (a system message among them is a turn like any other), then `<|im_start|>assistant\n`
/// with `add_generation_prompt`.
pub fn render_turns(system: &str, turns: &[Message], add_generation_prompt: bool) -> Rendered {
    let mut text = String::new();
    let (mut targets, mut answers, mut questions) = (Vec::new(), Vec::new(), Vec::new());
    let mut turn = |text: &mut String, role: Role, content: &str| {
        text.push_str(IM_START);
        text.push_str(role.as_str());
        text.push('\n');
        let start = text.len();
        text.push_str(content);
        let content_end = text.len();
        text.push_str(IM_END);
        text.push('\n');
        match role {
            Role::Assistant => {
                answers.push(start..content_end);
                targets.push(start..text.len());
            }
            Role::User => questions.push(start..content_end),
            Role::System => {}
        }
    };
    if !system.is_empty() {
        turn(&mut text, Role::System, system);
    }
    for m in turns {
        turn(&mut text, m.role, &m.content);
    }
    if add_generation_prompt {
        text.push_str(IM_START);
        text.push_str(Role::Assistant.as_str());
        text.push('\n');
    }
    Rendered { text, targets, answers, questions }
}

/// Renders a training example: its own system prompt, else `default_system` (none at all when
/// that is empty, as in LLaMA-Factory).
pub fn render(ex: &Example, default_system: &str) -> Rendered {
    render_turns(ex.system.as_deref().unwrap_or(default_system), &ex.messages, false)
}

/// Renders a conversation for inference: a leading system message is the system prompt, else
/// `default_system`; with `add_generation_prompt` the text ends where the model's answer starts.
pub fn render_chat(messages: &[Message], default_system: &str, add_generation_prompt: bool) -> Rendered {
    match messages.split_first() {
        Some((first, rest)) if first.role == Role::System => render_turns(&first.content, rest, add_generation_prompt),
        _ => render_turns(default_system, messages, add_generation_prompt),
    }
}

/// A tokenized example.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tokenized {
    /// Token ids.
    pub input_ids: Vec<u32>,
    /// 1 on tokens that carry loss.
    pub loss_mask: Vec<u8>,
    /// Tokens inside user contents.
    pub question_tokens: usize,
    /// Tokens inside assistant contents.
    pub answer_tokens: usize,
    /// Tokens spanning the start of a target (mask 0; see the module doc).
    pub straddling: usize,
}

fn inside(r: &[Range<usize>], (s, e): (usize, usize)) -> bool {
    r.iter().any(|t| s >= t.start && e <= t.end && s < t.end)
}

/// Encodes a rendered example and builds its loss mask.
pub fn tokenize(r: &Rendered, tok: &SftTokenizer) -> Result<Tokenized> {
    let super::tokenizer::Encoded { ids, offsets } = tok.encode(&r.text)?;
    let mut t = Tokenized { loss_mask: Vec::with_capacity(ids.len()), ..Default::default() };
    for &(s, e) in &offsets {
        t.loss_mask.push(inside(&r.targets, (s, e)) as u8);
        t.question_tokens += inside(&r.questions, (s, e)) as usize;
        t.answer_tokens += inside(&r.answers, (s, e)) as usize;
        t.straddling += r.targets.iter().any(|x| s < x.start && e > x.start) as usize;
    }
    t.input_ids = ids;
    Ok(t)
}

/// LLaMA-Factory's `infer_seqlen`: how many prompt (`source`) and answer (`target`) tokens of
/// a pair fit in `cutoff` (same float arithmetic as the Python, so the same results).
pub fn infer_seqlen(source: usize, target: usize, cutoff: usize) -> (usize, usize) {
    let max_target = if target * 2 < cutoff {
        cutoff
    } else if source * 2 < cutoff {
        cutoff - source
    } else {
        (cutoff as f64 * (target as f64 / (source + target) as f64)) as usize
    };
    let new_target = max_target.min(target);
    let new_source = cutoff.saturating_sub(new_target).min(source);
    (new_source, new_target)
}

/// What truncation cut.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cut {
    /// Prompt tokens removed.
    pub prompt_tokens: usize,
    /// Answer tokens removed.
    pub answer_tokens: usize,
    /// Whole (prompt, answer) pairs dropped because the budget was spent.
    pub turns_dropped: usize,
}

impl Cut {
    /// Whether anything was cut.
    pub fn any(&self) -> bool {
        self.prompt_tokens + self.answer_tokens > 0
    }
}

/// Applies LLaMA-Factory's cutoff to a tokenized example (in place); returns what was cut.
pub fn truncate(t: &mut Tokenized, cutoff: usize) -> Cut {
    // (source, target) pairs: a run of mask-0 tokens, then the run of mask-1 tokens after it.
    let mut pairs: Vec<(Range<usize>, Range<usize>)> = Vec::new();
    let n = t.input_ids.len();
    let mut i = 0;
    while i < n {
        let s0 = i;
        while i < n && t.loss_mask[i] == 0 {
            i += 1;
        }
        let t0 = i;
        while i < n && t.loss_mask[i] == 1 {
            i += 1;
        }
        pairs.push((s0..t0, t0..i));
    }
    let (mut ids, mut mask) = (Vec::with_capacity(cutoff.min(n)), Vec::with_capacity(cutoff.min(n)));
    let mut cut = Cut::default();
    let mut total = 0usize;
    for (src, tgt) in pairs {
        if total >= cutoff {
            cut.turns_dropped += 1;
            cut.prompt_tokens += src.len();
            cut.answer_tokens += tgt.len();
            continue;
        }
        let (sl, tl) = infer_seqlen(src.len(), tgt.len(), cutoff - total);
        ids.extend_from_slice(&t.input_ids[src.start..src.start + sl]);
        mask.extend(std::iter::repeat_n(0u8, sl));
        ids.extend_from_slice(&t.input_ids[tgt.start..tgt.start + tl]);
        mask.extend(std::iter::repeat_n(1u8, tl));
        cut.prompt_tokens += src.len() - sl;
        cut.answer_tokens += tgt.len() - tl;
        total += sl + tl;
    }
    t.input_ids = ids;
    t.loss_mask = mask;
    cut
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sft::example::Split;

    fn ex(system: Option<&str>, turns: &[(&str, &str)]) -> Example {
        let mut messages = Vec::new();
        for (q, a) in turns {
            messages.push(Message { role: Role::User, content: q.to_string() });
            messages.push(Message { role: Role::Assistant, content: a.to_string() });
        }
        Example {
            id: "t:0".into(),
            dataset: "t".into(),
            position: Default::default(),
            ordinal: 0,
            task: "general".into(),
            task_from: "inferred".into(),
            split: Split::Train,
            system: system.map(str::to_string),
            messages,
        }
    }

    #[test]
    fn renders_chatml_with_default_system_and_targets() {
        let r = render(&ex(None, &[("Q1", "A1"), ("Q2", "A2")]), "SYS");
        assert_eq!(r.text, "<|im_start|>system\nSYS<|im_end|>\n<|im_start|>user\nQ1<|im_end|>\n<|im_start|>assistant\nA1<|im_end|>\n<|im_start|>user\nQ2<|im_end|>\n<|im_start|>assistant\nA2<|im_end|>\n");
        let t: Vec<&str> = r.targets.iter().map(|x| &r.text[x.clone()]).collect();
        assert_eq!(t, ["A1<|im_end|>\n", "A2<|im_end|>\n"]);
        let own = render(&ex(Some("Mine"), &[("Q", "A")]), "SYS");
        assert!(own.text.starts_with("<|im_start|>system\nMine<|im_end|>\n"));
        assert!(render(&ex(None, &[("Q", "A")]), "").text.starts_with("<|im_start|>user\n"));
    }

    #[test]
    fn chat_default_system_turn_then_user_then_generation_prompt() {
        let text = render_chat(&[Message::new(Role::User, "hi")], DEFAULT_SYSTEM_PROMPT, true).text;
        assert_eq!(
            text,
            "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n\
             <|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn chat_own_system_prompt_and_history() {
        let msgs = [
            Message::new(Role::System, "S"),
            Message::new(Role::User, "q1"),
            Message::new(Role::Assistant, "a1"),
            Message::new(Role::User, "q2"),
        ];
        assert_eq!(
            render_chat(&msgs, DEFAULT_SYSTEM_PROMPT, false).text,
            "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nq1<|im_end|>\n<|im_start|>assistant\na1<|im_end|>\n<|im_start|>user\nq2<|im_end|>\n"
        );
    }

    #[test]
    fn chat_later_system_turn_is_kept_in_place() {
        let msgs = [Message::new(Role::User, "q"), Message::new(Role::System, "S2")];
        let text = render_chat(&msgs, DEFAULT_SYSTEM_PROMPT, false).text;
        assert!(text.starts_with(&format!("<|im_start|>system\n{DEFAULT_SYSTEM_PROMPT}<|im_end|>\n<|im_start|>user\nq")));
        assert!(text.ends_with("<|im_start|>system\nS2<|im_end|>\n"));
    }

    #[test]
    fn training_and_chat_render_one_conversation_alike() {
        // The same conversation as an example (training) and as messages (inference): equal
        // text, whichever system prompt applies, the empty one included (no system turn).
        for (own, default) in [(None, "SYS"), (Some("Mine"), "SYS"), (None, "")] {
            let e = ex(own, &[("Q1", "A1"), ("Q2", "A2")]);
            let mut msgs: Vec<Message> = own.map(|s| Message::new(Role::System, s)).into_iter().collect();
            msgs.extend(e.messages.iter().cloned());
            let train = render(&e, default);
            assert_eq!(render_chat(&msgs, default, false), train);
            // The generation prompt for the last question is the training text up to its answer.
            let prompt = render_chat(&msgs[..msgs.len() - 1], default, true).text;
            assert_eq!(format!("{prompt}A2<|im_end|>\n"), train.text);
        }
    }

    #[test]
    fn infer_seqlen_matches_llamafactory_cases() {
        // Fits: unchanged.
        assert_eq!(infer_seqlen(10, 20, 100), (10, 20));
        // Short target: the source is cut.
        assert_eq!(infer_seqlen(200, 10, 100), (90, 10));
        // Short source: the target is cut.
        assert_eq!(infer_seqlen(10, 200, 100), (10, 90));
        // Both long: shared in proportion, int() truncation.
        assert_eq!(infer_seqlen(300, 100, 100), (75, 25));
        assert_eq!(infer_seqlen(60, 70, 100), (47, 53));
    }

    #[test]
    fn truncation_cuts_pairs_in_order_and_drops_late_turns() {
        let mut t =
            Tokenized { input_ids: (0..14).collect(), loss_mask: vec![0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 1, 1, 1, 1], ..Default::default() };
        let cut = truncate(&mut t, 7);
        assert_eq!(t.input_ids, [0, 1, 2, 3, 4, 5, 6]);
        assert_eq!(cut, Cut { prompt_tokens: 3, answer_tokens: 4, turns_dropped: 1 });
        let mut t = Tokenized { input_ids: (0..6).collect(), loss_mask: vec![0, 0, 0, 1, 1, 1], ..Default::default() };
        assert!(!truncate(&mut t, 6).any());
        assert_eq!(t.loss_mask, [0, 0, 0, 1, 1, 1]);
    }
}
