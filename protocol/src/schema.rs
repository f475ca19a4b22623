//! The schema engine: field kinds, field lists, their JSON Schema, and the checks
//! that turn a JSON object into a list of `{field, error, detail}` failures.
//!
//! Every inbound object (agent frames, HTTP bodies, task specs) is checked here
//! before serde sees it, so types are strict (no coercion of `"3"` to `3`) and
//! `null` counts as absent.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Most capabilities an agent may declare or a task may need.
pub const MAX_CAPABILITIES: usize = 64;
/// Longest capability name.
pub const MAX_CAPABILITY_LEN: usize = 128;

/// One field-level validation failure, as sent in `errors` arrays.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FieldError {
    pub field: String,
    /// One of `required`, `wrong_type`, `too_long`, `invalid_value`, `unknown_message_type`.
    pub error: String,
    pub detail: String,
    /// For `too_long`: the first 50 characters of the value plus `...`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// For `unknown_message_type`: every type the hub understands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub known_types: Option<Vec<String>>,
}

impl FieldError {
    pub fn new(field: &str, error: &str, detail: impl Into<String>) -> Self {
        FieldError {
            field: field.to_string(),
            error: error.to_string(),
            detail: detail.into(),
            value: None,
            known_types: None,
        }
    }
}

impl FieldError {
    /// Adds the echoed value (`too_long`: first 50 characters plus `...`).
    pub fn with_value(mut self, value: String) -> Self {
        self.value = Some(value);
        self
    }
}

/// One field of a schema.
#[derive(Debug, Clone, Copy)]
pub struct Field {
    pub name: &'static str,
    pub kind: Kind,
    pub required: bool,
}

/// A required field.
pub const fn req(name: &'static str, kind: Kind) -> Field {
    Field {
        name,
        kind,
        required: true,
    }
}

/// An optional field (`null` counts as absent).
pub const fn opt(name: &'static str, kind: Kind) -> Field {
    Field {
        name,
        kind,
        required: false,
    }
}

/// A string of at most `max` characters.
pub const fn text(max: usize) -> Kind {
    Kind::Str {
        max,
        non_empty: false,
    }
}

/// A non-empty string of at most `max` characters (ids, names).
pub const fn id(max: usize) -> Kind {
    Kind::Str {
        max,
        non_empty: true,
    }
}

/// The type a field must have.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    /// A string of at most `max` characters; `non_empty` refuses "".
    Str { max: usize, non_empty: bool },
    /// A non-negative integer (JSON number without fraction).
    UInt,
    /// A non-negative number (an amount of money).
    Number,
    /// `true` or `false`.
    Bool,
    /// A JSON object.
    Object,
    /// A list of non-empty strings (capabilities, task ids).
    StrList,
    /// A list of at most `max` JSON objects (follow-up task specs).
    ObjectList { max: usize },
    /// Anything; accepted for compatibility, not interpreted.
    Any,
}

impl Kind {
    /// The JSON Schema of a value of this kind.
    pub fn json_schema(&self) -> Value {
        match self {
            Kind::Str { max, non_empty } => {
                let mut s = serde_json::json!({"type": "string", "maxLength": max});
                if *non_empty {
                    s["minLength"] = 1.into();
                }
                s
            }
            Kind::UInt => serde_json::json!({"type": "integer", "minimum": 0}),
            Kind::Number => serde_json::json!({"type": "number", "minimum": 0}),
            Kind::Bool => serde_json::json!({"type": "boolean"}),
            Kind::Object => serde_json::json!({"type": "object"}),
            Kind::StrList => serde_json::json!({
                "type": "array",
                "items": {"type": "string", "minLength": 1, "maxLength": MAX_CAPABILITY_LEN},
                "maxItems": MAX_CAPABILITIES,
            }),
            Kind::ObjectList { max } => serde_json::json!({
                "type": "array",
                "items": {"type": "object"},
                "maxItems": max,
            }),
            Kind::Any => serde_json::json!({}),
        }
    }
}

/// The JSON Schema of an object with `fields` (unknown fields are ignored by the
/// hub, so `additionalProperties` is left open).
pub fn object_schema(fields: &[Field]) -> Value {
    let properties: Map<String, Value> = fields
        .iter()
        .map(|f| (f.name.to_string(), f.kind.json_schema()))
        .collect();
    let required: Vec<&str> = fields
        .iter()
        .filter(|f| f.required)
        .map(|f| f.name)
        .collect();
    serde_json::json!({"type": "object", "properties": properties, "required": required})
}

pub(crate) fn too_long(field: &str, text: &str, max: usize) -> FieldError {
    let mut e = FieldError::new(field, "too_long", format!("at most {max} characters"));
    let head: String = text.chars().take(50).collect();
    e.value = Some(format!("{head}..."));
    e
}

/// Checks one value against a kind; `None` when it fits.
fn check_kind(name: &str, kind: Kind, v: &Value) -> Option<FieldError> {
    match kind {
        Kind::Any => None,
        Kind::Str { max, non_empty } => match v.as_str() {
            None => Some(FieldError::new(name, "wrong_type", "expected a string")),
            Some(text) if text.chars().count() > max => Some(too_long(name, text, max)),
            Some("") if non_empty => {
                Some(FieldError::new(name, "invalid_value", "must not be empty"))
            }
            Some(_) => None,
        },
        Kind::UInt => match v {
            Value::Number(n) if n.is_u64() => None,
            Value::Number(n) if n.is_i64() => Some(FieldError::new(
                name,
                "invalid_value",
                "must not be negative",
            )),
            _ => Some(FieldError::new(name, "wrong_type", "expected an integer")),
        },
        Kind::Number => match v.as_f64() {
            Some(n) if n.is_finite() && n >= 0.0 => None,
            Some(_) => Some(FieldError::new(
                name,
                "invalid_value",
                "must not be negative",
            )),
            None => Some(FieldError::new(name, "wrong_type", "expected a number")),
        },
        Kind::Bool => match v {
            Value::Bool(_) => None,
            _ => Some(FieldError::new(
                name,
                "wrong_type",
                "expected true or false",
            )),
        },
        Kind::Object => match v {
            Value::Object(_) => None,
            _ => Some(FieldError::new(name, "wrong_type", "expected an object")),
        },
        Kind::StrList => {
            let Some(items) = v.as_array() else {
                return Some(FieldError::new(
                    name,
                    "wrong_type",
                    "expected a list of strings",
                ));
            };
            if items.len() > MAX_CAPABILITIES {
                return Some(FieldError::new(
                    name,
                    "too_long",
                    format!("at most {MAX_CAPABILITIES} entries"),
                ));
            }
            for item in items {
                match item.as_str() {
                    None => {
                        return Some(FieldError::new(
                            name,
                            "wrong_type",
                            "expected a list of strings",
                        ))
                    }
                    Some("") => {
                        return Some(FieldError::new(
                            name,
                            "invalid_value",
                            "entries must not be empty",
                        ))
                    }
                    Some(t) if t.chars().count() > MAX_CAPABILITY_LEN => {
                        return Some(too_long(name, t, MAX_CAPABILITY_LEN))
                    }
                    Some(_) => {}
                }
            }
            None
        }
        Kind::ObjectList { max } => {
            let Some(items) = v.as_array() else {
                return Some(FieldError::new(
                    name,
                    "wrong_type",
                    "expected a list of objects",
                ));
            };
            if items.len() > max {
                return Some(FieldError::new(
                    name,
                    "too_long",
                    format!("at most {max} entries"),
                ));
            }
            if items.iter().any(|i| !i.is_object()) {
                return Some(FieldError::new(
                    name,
                    "wrong_type",
                    "expected a list of objects",
                ));
            }
            None
        }
    }
}

/// Validates an object against a schema; an empty list means it fits.
pub fn check_fields(obj: &Map<String, Value>, fields: &[Field]) -> Vec<FieldError> {
    let mut errors = Vec::new();
    for f in fields {
        match obj.get(f.name) {
            None | Some(Value::Null) => {
                if f.required {
                    errors.push(FieldError::new(f.name, "required", "field is required"));
                }
            }
            Some(v) => {
                if let Some(e) = check_kind(f.name, f.kind, v) {
                    errors.push(e);
                }
            }
        }
    }
    errors
}

/// Drops `null` members so serde's `Option` and defaults see them as absent.
pub(crate) fn without_nulls(obj: &Map<String, Value>) -> Map<String, Value> {
    obj.iter()
        .filter(|(_, v)| !v.is_null())
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// The strings of the list `key` of `obj` (empty when absent, null or not a
/// list; entries that are not strings are skipped: `check_fields` reports them).
pub fn str_list(obj: &serde_json::Map<String, serde_json::Value>, key: &str) -> Vec<String> {
    obj.get(key)
        .and_then(serde_json::Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|c| c.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}
