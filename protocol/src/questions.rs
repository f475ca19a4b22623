//! Questions from agents (ext, PROTOCOL.md 6.26): the limits of a question,
//! its options, default and timeout, and the body of an answer.

use serde_json::{Map, Value};

use crate::schema::FieldError;

/// Longest question (characters).
pub const MAX_QUESTION: usize = 2_000;
/// Longest answer, option or default (characters).
pub const MAX_ANSWER: usize = 2_000;
/// Most options.
pub const MAX_OPTIONS: usize = 20;
/// Shortest and longest time a question may wait (ms).
pub const QUESTION_TIMEOUT_MS: (u64, u64) = (1_000, 7 * 24 * 3_600_000);

/// The rules of a question beyond the field types: at most [`MAX_OPTIONS`]
/// non-empty options of at most [`MAX_ANSWER`] characters, a default among the
/// options when there are options, a timeout in range.
pub fn check_question(obj: &Map<String, Value>) -> Vec<FieldError> {
    let mut errors = Vec::new();
    if obj
        .get("question")
        .and_then(Value::as_str)
        .is_some_and(|q| q.trim().is_empty())
    {
        errors.push(FieldError::new(
            "question",
            "invalid_value",
            "must not be empty",
        ));
    }
    let options: Vec<&str> = obj
        .get("options")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if options.len() > MAX_OPTIONS {
        errors.push(FieldError::new(
            "options",
            "invalid_value",
            format!("at most {MAX_OPTIONS} options"),
        ));
    }
    if let Some(i) = options
        .iter()
        .position(|o| o.trim().is_empty() || o.chars().count() > MAX_ANSWER)
    {
        errors.push(FieldError::new(
            &format!("options[{i}]"),
            "invalid_value",
            format!("1 to {MAX_ANSWER} characters"),
        ));
    }
    let default = obj.get("default").and_then(Value::as_str);
    if let Some(d) = default {
        if !options.is_empty() && !options.contains(&d) {
            errors.push(FieldError::new(
                "default",
                "invalid_value",
                "must be one of the options",
            ));
        }
    }
    if let Some(t) = obj.get("timeout_ms").and_then(Value::as_u64) {
        let (lo, hi) = QUESTION_TIMEOUT_MS;
        if !(lo..=hi).contains(&t) {
            errors.push(FieldError::new(
                "timeout_ms",
                "invalid_value",
                format!("{lo} to {hi} ms"),
            ));
        }
    }
    errors
}

/// An answer's text: 1 to [`MAX_ANSWER`] characters.
pub fn check_answer(answer: Option<&str>) -> Result<String, FieldError> {
    match answer {
        Some(a) if !a.trim().is_empty() && a.chars().count() <= MAX_ANSWER => Ok(a.to_string()),
        Some(_) => Err(FieldError::new(
            "answer",
            "invalid_value",
            format!("1 to {MAX_ANSWER} characters"),
        )),
        None => Err(FieldError::new("answer", "required", "field is required")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn question_rules() {
        let check = |v: Value| check_question(v.as_object().expect("object"));
        assert!(
            check(json!({"options": ["yes", "no"], "default": "no", "timeout_ms": 60000}))
                .is_empty()
        );
        assert_eq!(
            check(json!({"options": ["yes"], "default": "maybe"}))[0].field,
            "default"
        );
        assert_eq!(check(json!({"options": ["", "no"]}))[0].field, "options[0]");
        assert_eq!(check(json!({"timeout_ms": 5}))[0].field, "timeout_ms");
        let many: Vec<String> = (0..21).map(|i| i.to_string()).collect();
        assert_eq!(check(json!({"options": many}))[0].field, "options");
        assert!(check_answer(Some("yes")).is_ok());
        assert!(check_answer(Some(" ")).is_err() && check_answer(None).is_err());
    }
}
