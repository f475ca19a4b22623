//! Priority lanes: urgent = 0, high = 1, normal = 2, low = 3.

use serde_json::Value;

use crate::schema::FieldError;

/// The lanes, by number: `LANES[p]` is lane `p`'s name.
pub const LANES: [&str; 4] = ["urgent", "high", "normal", "low"];
/// The lane a task gets when its submission names none.
pub const PRIORITY_NORMAL: u8 = 2;

/// Parses a priority: `urgent`/`critical`, `high`, `normal`, `low`, or 0–3.
pub fn parse_priority(v: &Value) -> Result<u8, FieldError> {
    let bad = || {
        FieldError::new(
            "priority",
            "invalid_value",
            "expected urgent, critical, high, normal, low or an integer 0-3",
        )
    };
    match v {
        Value::String(name) => match name.as_str() {
            "critical" => Ok(0),
            name => LANES
                .iter()
                .position(|lane| *lane == name)
                .map(|p| p as u8)
                .ok_or_else(bad),
        },
        Value::Number(n) => match n.as_u64() {
            Some(p) if p < LANES.len() as u64 => Ok(p as u8),
            _ => Err(bad()),
        },
        _ => Err(bad()),
    }
}

/// The JSON Schema of a `priority` value, as `parse_priority` accepts it.
pub fn priority_json_schema() -> Value {
    let mut names: Vec<&str> = LANES.to_vec();
    names.insert(1, "critical");
    serde_json::json!({
        "oneOf": [
            {"type": "integer", "minimum": 0, "maximum": LANES.len() - 1},
            {"type": "string", "enum": names}
        ],
        "description": "0 urgent … 3 low; default normal (2)"
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priorities() {
        for (v, p) in [("\"critical\"", 0), ("\"low\"", 3), ("1", 1)] {
            let v: Value = serde_json::from_str(v).unwrap();
            assert_eq!(parse_priority(&v).unwrap(), p);
        }
        for v in ["\"asap\"", "4", "-1", "1.5", "null"] {
            let v: Value = serde_json::from_str(v).unwrap();
            assert!(parse_priority(&v).is_err(), "{v}");
        }
    }
}
