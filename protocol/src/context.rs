//! Shared context (ext, PROTOCOL.md 6.33): a small versioned document store
//! for the fleet. A key holds JSON or text; every write is a new version;
//! `if_version` makes a write compare-and-set.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::schema::{check_fields, opt, Field, FieldError, Kind};

/// Longest key.
pub const MAX_CONTEXT_KEY: usize = 128;
/// Most keys one task may name in `context_keys`.
pub const MAX_TASK_CONTEXT_KEYS: usize = 20;
/// Most bytes of context one assignment carries inline (the rest by reference).
pub const MAX_ASSIGNMENT_CONTEXT: usize = 256 * 1024;

/// Fields of `PUT /api/context/:key`: exactly one of `value` (any JSON) and
/// `text`.
pub const CONTEXT_PUT_FIELDS: &[Field] = &[
    opt("value", Kind::Any),
    opt(
        "text",
        Kind::Str {
            max: usize::MAX,
            non_empty: false,
        },
    ),
    opt("if_version", Kind::UInt),
];

/// What a key holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "value")]
pub enum ContextValue {
    Json(Value),
    Text(String),
}

impl ContextValue {
    pub fn kind(&self) -> &'static str {
        match self {
            ContextValue::Json(_) => "json",
            ContextValue::Text(_) => "text",
        }
    }

    /// Bytes it takes (the text, or the JSON's encoding).
    pub fn size(&self) -> usize {
        match self {
            ContextValue::Json(v) => serde_json::to_vec(v).map_or(usize::MAX, |b| b.len()),
            ContextValue::Text(t) => t.len(),
        }
    }
}

/// A checked write.
#[derive(Debug, Clone, PartialEq)]
pub struct ContextPut {
    pub value: ContextValue,
    /// The version the writer read (0: the key must not exist).
    pub if_version: Option<u64>,
}

/// A context key: 1 to [`MAX_CONTEXT_KEY`] letters, digits and `. _ - :`
/// (`project.style-guide`, `repo:web.conventions`); a prefix groups keys for
/// write rights.
pub fn check_context_key(key: &str, field: &str) -> Result<(), FieldError> {
    let ok = !key.is_empty()
        && key.len() <= MAX_CONTEXT_KEY
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':'));
    match ok {
        true => Ok(()),
        false => Err(FieldError::new(
            field,
            "invalid_value",
            format!("1 to {MAX_CONTEXT_KEY} letters, digits and . _ - :"),
        )),
    }
}

/// Checks a write of `key`; the value may be at most `max_bytes`.
pub fn parse_context_put(
    key: &str,
    body: &Map<String, Value>,
    max_bytes: usize,
) -> Result<ContextPut, Vec<FieldError>> {
    let mut errors = check_fields(body, CONTEXT_PUT_FIELDS);
    if let Err(e) = check_context_key(key, "key") {
        errors.push(e);
    }
    let value = match (body.get("value"), body.get("text").and_then(Value::as_str)) {
        (Some(v), None) => Some(ContextValue::Json(v.clone())),
        (None, Some(t)) => Some(ContextValue::Text(t.to_string())),
        _ => {
            errors.push(FieldError::new(
                "value",
                "invalid_value",
                "give exactly one of value (JSON) and text",
            ));
            None
        }
    };
    if let Some(v) = &value {
        if v.size() > max_bytes {
            let field = if v.kind() == "text" { "text" } else { "value" };
            errors.push(FieldError::new(
                field,
                "too_large",
                format!("at most {max_bytes} bytes"),
            ));
        }
    }
    match (value, errors.is_empty()) {
        (Some(value), true) => Ok(ContextPut {
            value,
            if_version: body.get("if_version").and_then(Value::as_u64),
        }),
        _ => Err(errors),
    }
}

/// Checks a task's `context_keys`.
pub fn check_context_keys(keys: &[String]) -> Vec<FieldError> {
    let mut errors = Vec::new();
    if keys.len() > MAX_TASK_CONTEXT_KEYS {
        errors.push(FieldError::new(
            "context_keys",
            "invalid_value",
            format!("at most {MAX_TASK_CONTEXT_KEYS} keys"),
        ));
    }
    for key in keys {
        if let Err(e) = check_context_key(key, "context_keys") {
            errors.push(e);
            break;
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn writes_are_checked() {
        let ok = parse_context_put(
            "style",
            &body(json!({"text": "tabs", "if_version": 2})),
            100,
        )
        .expect("ok");
        assert_eq!(ok.value, ContextValue::Text("tabs".into()));
        assert_eq!(ok.if_version, Some(2));
        let json = parse_context_put("a.b", &body(json!({"value": {"x": 1}})), 100).expect("ok");
        assert_eq!(json.value.kind(), "json");
        for (key, bad) in [
            ("k", json!({})),
            ("k", json!({"value": 1, "text": "t"})),
            ("k", json!({"text": "x".repeat(101)})),
            ("a/b", json!({"text": "t"})),
            ("k", json!({"text": "t", "if_version": -1})),
        ] {
            assert!(
                parse_context_put(key, &body(bad.clone()), 100).is_err(),
                "{bad}"
            );
        }
        assert!(check_context_keys(&["a".into(), "b c".into()]).len() == 1);
        assert!(check_context_keys(&["a".into()]).is_empty());
    }
}
