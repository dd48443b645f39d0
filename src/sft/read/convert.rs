//! LLaMA-Factory's record conversion (`converter.py`): an alpaca or sharegpt record, parsed as
//! JSON, becomes a system prompt and alternating user/assistant messages, or a reason it holds
//! nothing to train on.

use serde_json::{Map, Value};

use super::dataset_info::Columns;
use crate::error::{Position, ReadError, ReadErrorKind};
use crate::io::json::kind_of;
use crate::sft::example::{Message, Role};

/// A converted record.
pub(super) enum Converted {
    /// The conversation.
    Messages {
        /// The system prompt, if any (empty ones are none).
        system: Option<String>,
        /// The turns.
        messages: Vec<Message>,
    },
    /// Nothing to train on (the reason).
    Filtered(&'static str),
}

/// An optional string field: absent and null are `None`, anything but a string is an error.
fn opt_str<'v>(obj: &'v Map<String, Value>, key: Option<&String>, pos: &Position) -> std::result::Result<Option<&'v str>, ReadError> {
    let Some(key) = key else { return Ok(None) };
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(v) => Err(ReadError::new(pos.clone(), ReadErrorKind::Shape, format!("{key:?} must be a string, found {}", kind_of(v)))),
    }
}

fn as_object<'v>(v: &'v Value, pos: &Position) -> std::result::Result<&'v Map<String, Value>, ReadError> {
    v.as_object().ok_or_else(|| {
        ReadError::new(pos.clone(), ReadErrorKind::Shape, format!("expected a JSON object per record, found {}", kind_of(v)))
    })
}

fn nonempty_system(s: Option<&str>) -> Option<String> {
    s.filter(|s| !s.is_empty()).map(str::to_string)
}

/// LLaMA-Factory's alpaca conversion.
pub(super) fn alpaca(v: &Value, c: &Columns, pos: &Position) -> std::result::Result<Converted, ReadError> {
    let obj = as_object(v, pos)?;
    let missing = |key: &Option<String>| {
        ReadError::new(pos.clone(), ReadErrorKind::MissingField, format!("missing {:?}", key.as_deref().unwrap_or("?")))
    };
    // Without its instruction column a record has no question, unless the input column alone
    // carries one (LLaMA-Factory joins whichever of the two is non-empty).
    let has_query = opt_str(obj, c.query.as_ref(), pos)?.is_some_and(|q| !q.is_empty());
    if c.prompt.as_ref().is_some_and(|k| !obj.contains_key(k)) && !has_query {
        return Err(missing(&c.prompt));
    }
    let response = opt_str(obj, c.response.as_ref(), pos)?.ok_or_else(|| missing(&c.response))?;
    let mut messages = Vec::new();
    if let Some(key) = &c.history {
        match obj.get(key) {
            None | Some(Value::Null) => {}
            Some(Value::Array(pairs)) => {
                for (i, p) in pairs.iter().enumerate() {
                    let pair = p.as_array().filter(|a| a.len() == 2 && a.iter().all(Value::is_string));
                    let Some(pair) = pair else {
                        return Err(ReadError::new(
                            pos.clone(),
                            ReadErrorKind::Shape,
                            format!("{key:?}[{i}] must be a [question, answer] pair of strings"),
                        ));
                    };
                    messages.push(Message { role: Role::User, content: pair[0].as_str().unwrap_or_default().to_string() });
                    messages.push(Message { role: Role::Assistant, content: pair[1].as_str().unwrap_or_default().to_string() });
                }
            }
            Some(other) => {
                return Err(ReadError::new(
                    pos.clone(),
                    ReadErrorKind::Shape,
                    format!("{key:?} must be a list of [question, answer] pairs, found {}", kind_of(other)),
                ))
            }
        }
    }
    let query: Vec<&str> = [opt_str(obj, c.prompt.as_ref(), pos)?, opt_str(obj, c.query.as_ref(), pos)?]
        .into_iter()
        .flatten()
        .filter(|s| !s.is_empty())
        .collect();
    if query.is_empty() {
        return Ok(Converted::Filtered("empty-question"));
    }
    messages.push(Message { role: Role::User, content: query.join("\n") });
    messages.push(Message { role: Role::Assistant, content: response.to_string() });
    Ok(Converted::Messages { system: nonempty_system(opt_str(obj, c.system.as_ref(), pos)?), messages })
}

/// LLaMA-Factory's sharegpt conversion (roles must alternate user/assistant after an optional
/// leading system turn; tool turns are not supported).
pub(super) fn sharegpt(v: &Value, c: &Columns, pos: &Position) -> std::result::Result<Converted, ReadError> {
    let obj = as_object(v, pos)?;
    let key = c.messages.clone().unwrap_or_else(|| "conversations".into());
    let turns = match obj.get(&key) {
        None | Some(Value::Null) => return Err(ReadError::new(pos.clone(), ReadErrorKind::MissingField, format!("missing {key:?}"))),
        Some(Value::Array(a)) => a,
        Some(other) => {
            return Err(ReadError::new(
                pos.clone(),
                ReadErrorKind::Shape,
                format!("{key:?} must be a list of turns, found {}", kind_of(other)),
            ))
        }
    };
    let t = &c.tags;
    let mut parsed: Vec<(String, String)> = Vec::with_capacity(turns.len());
    for (i, turn) in turns.iter().enumerate() {
        let Some(o) = turn.as_object() else {
            return Err(ReadError::new(
                pos.clone(),
                ReadErrorKind::Shape,
                format!("{key}[{i}] must be an object, found {}", kind_of(turn)),
            ));
        };
        let (role_key, content_key) = if c.lenient_tags && !o.contains_key(&t.role) && o.contains_key("role") {
            ("role", "content")
        } else {
            (t.role.as_str(), t.content.as_str())
        };
        let role = o
            .get(role_key)
            .and_then(Value::as_str)
            .ok_or_else(|| ReadError::new(pos.clone(), ReadErrorKind::MissingField, format!("{key}[{i}] has no string {role_key:?}")))?;
        let content = o
            .get(content_key)
            .and_then(Value::as_str)
            .ok_or_else(|| ReadError::new(pos.clone(), ReadErrorKind::MissingField, format!("{key}[{i}] has no string {content_key:?}")))?;
        parsed.push((role.to_string(), content.to_string()));
    }
    let is = |r: &str, tag: &str, alt: &str| r == tag || (c.lenient_tags && r == alt);
    let mut system = None;
    let mut rest = &parsed[..];
    if let Some((r, content)) = parsed.first() {
        if is(r, &t.system, "system") {
            system = nonempty_system(Some(content));
            rest = &parsed[1..];
        }
    }
    if rest.is_empty() {
        return Ok(Converted::Filtered("empty-conversation"));
    }
    let mut messages = Vec::with_capacity(rest.len());
    for (i, (r, content)) in rest.iter().enumerate() {
        let want_user = i % 2 == 0;
        let role = if is(r, &t.user, "user") {
            Role::User
        } else if is(r, &t.assistant, "assistant") {
            Role::Assistant
        } else if r == &t.observation || r == &t.function {
            return Err(ReadError::new(pos.clone(), ReadErrorKind::Unsupported, format!("turn {i}: tool turns ({r:?}) are not supported")));
        } else {
            return Err(ReadError::new(
                pos.clone(),
                ReadErrorKind::Shape,
                format!("turn {i}: unknown role {r:?} (expected {:?} or {:?})", t.user, t.assistant),
            ));
        };
        if (role == Role::User) != want_user {
            let (want, found) = if want_user { (&t.user, r) } else { (&t.assistant, r) };
            return Err(ReadError::new(
                pos.clone(),
                ReadErrorKind::Shape,
                format!("turn {i}: expected a {want:?} turn, found {found:?} (turns must alternate)"),
            ));
        }
        messages.push(Message { role, content: content.clone() });
    }
    Ok(Converted::Messages { system, messages })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alpaca_joins_instruction_and_input_and_reads_history() {
        let c = Columns::bare(false);
        let pos = Position::new("f", None, Some(1));
        let v: Value = serde_json::json!({"instruction": "Q", "input": "ctx", "output": "A", "history": [["q0", "a0"]], "system": "S"});
        let Converted::Messages { system, messages } = alpaca(&v, &c, &pos).unwrap() else { panic!() };
        assert_eq!(system.as_deref(), Some("S"));
        let texts: Vec<&str> = messages.iter().map(|m| m.content.as_str()).collect();
        assert_eq!(texts, ["q0", "a0", "Q\nctx", "A"]);
        // LLaMA-Factory reads no system/history unless dataset_info maps them.
        let lf = Columns::lf_default(false);
        let Converted::Messages { system, messages } = alpaca(&v, &lf, &pos).unwrap() else { panic!() };
        assert_eq!((system, messages.len()), (None, 2));
    }
}
