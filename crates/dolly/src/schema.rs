//! The three shapes of instruction data people fine-tune on, read into one record:
//!
//! * `dolly`: `instruction`, `context`, `response`, `category` (databricks-dolly-15k; the
//!   category must be one of Dolly's eight);
//! * `alpaca`: `instruction`, `input` (optional), `output`, and an optional `category`;
//! * `messages`: `messages: [{role, content}, …]` with roles `system` (first only), `user`
//!   and `assistant` (or `model`) alternating from a user turn and ending with an assistant
//!   turn, and an optional `category`. The last exchange is the record's instruction and
//!   response; the turns before it are its `earlier` turns.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::load::{DollyRecord, CATEGORIES};
use sweelol_records::py_strip;

/// Which shape a data file has (`[data] format`; detected from the first record when not
/// given).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataFormat {
    Dolly,
    Alpaca,
    Messages,
}

impl fmt::Display for DataFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DataFormat::Dolly => "dolly",
            DataFormat::Alpaca => "alpaca",
            DataFormat::Messages => "messages",
        })
    }
}

impl DataFormat {
    /// The format whose fields `keys` (a record's keys, or a parquet file's columns) has.
    pub fn detect<'a>(keys: impl IntoIterator<Item = &'a str>) -> Result<DataFormat, String> {
        let keys: Vec<&str> = keys.into_iter().collect();
        let has = |k: &str| keys.contains(&k);
        if has("messages") {
            Ok(DataFormat::Messages)
        } else if has("instruction") && has("output") {
            Ok(DataFormat::Alpaca)
        } else if has("instruction") && has("response") {
            Ok(DataFormat::Dolly)
        } else {
            Err(format!(
                "cannot tell the format from the first record's fields ({}): dolly has instruction/context/response/category, \
                 alpaca instruction/input/output, messages a `messages` list; set [data] format",
                keys.join(", ")
            ))
        }
    }

    /// The fields (or parquet columns) a record of this format reads; the optional ones
    /// may be missing.
    pub fn fields(self) -> (&'static [&'static str], &'static [&'static str]) {
        match self {
            DataFormat::Dolly => (&["instruction", "context", "response", "category"], &[]),
            DataFormat::Alpaca => (&["instruction", "output"], &["input", "category"]),
            DataFormat::Messages => (&["messages"], &["category"]),
        }
    }
}

/// Who speaks a turn.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
}

/// One message of a conversation.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Turn {
    pub role: Role,
    pub content: String,
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A string field: `Ok(None)` when it is missing (or null) and `optional`.
fn string_field(obj: &Map<String, Value>, name: &str, optional: bool) -> Result<Option<String>, String> {
    match obj.get(name) {
        None | Some(Value::Null) if optional => Ok(None),
        None => Err(format!("missing field `{name}`")),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(format!("field `{name}` must be a string, found {}", json_kind(other))),
    }
}

/// One JSON record of `format`, checked.
pub fn record_from_json(value: &Value, format: DataFormat) -> Result<DollyRecord, String> {
    let obj = value.as_object().ok_or_else(|| format!("expected a JSON object, found {}", json_kind(value)))?;
    let field = |name: &str| string_field(obj, name, false).map(Option::unwrap_or_default);
    let optional = |name: &str| string_field(obj, name, true).map(Option::unwrap_or_default);
    let record = match format {
        DataFormat::Dolly => DollyRecord {
            instruction: field("instruction")?,
            context: field("context")?,
            response: field("response")?,
            category: field("category")?,
            earlier: Vec::new(),
        },
        DataFormat::Alpaca => DollyRecord {
            instruction: field("instruction")?,
            context: optional("input")?,
            response: field("output")?,
            category: optional("category")?,
            earlier: Vec::new(),
        },
        DataFormat::Messages => {
            let list = match obj.get("messages") {
                None => return Err("missing field `messages`".into()),
                Some(Value::Array(list)) => list,
                Some(other) => return Err(format!("field `messages` must be a list, found {}", json_kind(other))),
            };
            let mut turns = Vec::with_capacity(list.len());
            for (i, m) in list.iter().enumerate() {
                let m = m.as_object().ok_or_else(|| format!("messages[{i}] must be an object, found {}", json_kind(m)))?;
                let role = string_field(m, "role", false).map_err(|e| format!("messages[{i}]: {e}"))?.unwrap_or_default();
                let content = string_field(m, "content", false).map_err(|e| format!("messages[{i}]: {e}"))?.unwrap_or_default();
                turns.push((role, content));
            }
            conversation(turns, optional("category")?)?
        }
    };
    validated(record, format)
}

/// A `messages` list as a record: the last exchange (user, assistant) is its instruction
/// and response, the turns before it its `earlier` turns. `turns` are (role, content).
pub fn conversation(turns: Vec<(String, String)>, category: String) -> Result<DollyRecord, String> {
    let mut parsed = Vec::with_capacity(turns.len());
    for (i, (role, content)) in turns.into_iter().enumerate() {
        let role = match role.as_str() {
            "system" => Role::System,
            "user" => Role::User,
            "assistant" | "model" => Role::Assistant,
            other => return Err(format!("messages[{i}]: role {other:?} is not system, user or assistant")),
        };
        // System first, then user and assistant alternating from a user turn.
        let expected = match parsed.last().map(|t: &Turn| t.role) {
            None if role == Role::System => Role::System,
            None | Some(Role::System) | Some(Role::Assistant) => Role::User,
            Some(Role::User) => Role::Assistant,
        };
        if role != expected {
            return Err(format!(
                "messages[{i}]: {} turn where {} turn must come (a system turn only first, then user and assistant alternating)",
                role_name(role),
                role_name(expected)
            ));
        }
        parsed.push(Turn { role, content });
    }
    if parsed.last().map(|t| t.role) != Some(Role::Assistant) {
        return Err("`messages` must end with an assistant turn (the response to train on)".into());
    }
    let response = parsed.pop().expect("checked above").content;
    let instruction = parsed.pop().expect("a user turn precedes every assistant turn").content;
    Ok(DollyRecord { instruction, context: String::new(), response, category, earlier: parsed })
}

fn role_name(r: Role) -> &'static str {
    match r {
        Role::System => "a system",
        Role::User => "a user",
        Role::Assistant => "an assistant",
    }
}

/// The checks every record passes: the texts the chat template trims must not trim to
/// nothing, and a Dolly record's category must be one of Dolly's.
pub fn validated(r: DollyRecord, format: DataFormat) -> Result<DollyRecord, String> {
    let (instruction, response) = match format {
        DataFormat::Dolly => ("instruction", "response"),
        DataFormat::Alpaca => ("instruction", "output"),
        DataFormat::Messages => ("the last user turn", "the last assistant turn"),
    };
    if py_strip(&r.instruction).is_empty() {
        return Err(format!("{} is empty", quoted(instruction)));
    }
    if py_strip(&r.response).is_empty() {
        return Err(format!("{} is empty", quoted(response)));
    }
    if let Some(i) = r.earlier.iter().position(|t| t.role != Role::System && py_strip(&t.content).is_empty()) {
        return Err(format!("messages[{i}] is empty"));
    }
    if format == DataFormat::Dolly && !CATEGORIES.contains(&r.category.as_str()) {
        return Err(format!(
            "field `category` has unknown value {:?} (expected one of {})",
            r.category,
            CATEGORIES.join(", ")
        ));
    }
    Ok(r)
}

/// `field \`name\`` for a field, the words as they are otherwise.
fn quoted(what: &str) -> String {
    if what.contains(' ') { what.to_string() } else { format!("field `{what}`") }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_format_is_told_by_the_fields() {
        assert_eq!(DataFormat::detect(["instruction", "context", "response", "category"]), Ok(DataFormat::Dolly));
        assert_eq!(DataFormat::detect(["instruction", "input", "output"]), Ok(DataFormat::Alpaca));
        assert_eq!(DataFormat::detect(["messages", "category"]), Ok(DataFormat::Messages));
        let msg = DataFormat::detect(["prompt", "completion"]).unwrap_err();
        assert!(msg.contains("prompt, completion") && msg.contains("set [data] format"), "{msg}");
    }

    #[test]
    fn alpaca_records_take_input_as_context_and_need_no_category() {
        let r = record_from_json(&json!({"instruction": "Add.", "input": "2 and 3", "output": "5"}), DataFormat::Alpaca).unwrap();
        assert_eq!((r.instruction.as_str(), r.context.as_str(), r.response.as_str(), r.category.as_str()), ("Add.", "2 and 3", "5", ""));
        let r = record_from_json(&json!({"instruction": "Hi.", "output": "Hello.", "category": "chat"}), DataFormat::Alpaca).unwrap();
        assert_eq!((r.context.as_str(), r.category.as_str()), ("", "chat"));
        let msg = record_from_json(&json!({"instruction": "Hi.", "output": "  "}), DataFormat::Alpaca).unwrap_err();
        assert_eq!(msg, "field `output` is empty");
    }

    #[test]
    fn a_conversation_ends_in_its_last_exchange_and_keeps_the_turns_before() {
        let v = json!({"messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi."},
            {"role": "assistant", "content": "Hello."},
            {"role": "user", "content": "Name a colour."},
            {"role": "assistant", "content": "Blue."}
        ]});
        let r = record_from_json(&v, DataFormat::Messages).unwrap();
        assert_eq!((r.instruction.as_str(), r.response.as_str()), ("Name a colour.", "Blue."));
        let roles: Vec<Role> = r.earlier.iter().map(|t| t.role).collect();
        assert_eq!(roles, [Role::System, Role::User, Role::Assistant]);
    }

    #[test]
    fn a_malformed_conversation_is_refused_naming_the_message() {
        let check = |v: Value, want: &str| {
            let msg = record_from_json(&v, DataFormat::Messages).unwrap_err();
            assert!(msg.contains(want), "{msg} (wanted {want})");
        };
        check(json!({"messages": [{"role": "user", "content": "a"}]}), "must end with an assistant turn");
        check(json!({"messages": [{"role": "assistant", "content": "a"}]}), "messages[0]: an assistant turn where a user turn");
        check(
            json!({"messages": [{"role": "user", "content": "a"}, {"role": "system", "content": "b"}]}),
            "messages[1]: a system turn where an assistant turn",
        );
        check(json!({"messages": [{"role": "user", "content": "a"}, {"role": "bot", "content": "b"}]}), "messages[1]: role \"bot\"");
        check(json!({"messages": [{"role": "user"}, {"role": "assistant", "content": "b"}]}), "messages[0]: missing field `content`");
        check(json!({"messages": "hi"}), "field `messages` must be a list, found a string");
    }
}
