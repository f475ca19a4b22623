//! Approvals (ext, PROTOCOL.md 6.27): when a task waits for a person, the
//! rules that make a completion wait, what a completion reports of its
//! changes, and the sidecar's report of a merge.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::schema::{check_fields, id, opt, req, str_list, Field, FieldError, Kind};

/// When a task waits for approval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalStage {
    /// Before it is scheduled: approve queues it, reject cancels it.
    BeforeStart,
    /// Its holder's completion is held until approved; reject sends it back
    /// to the holder with the reason.
    BeforeComplete,
}

impl ApprovalStage {
    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalStage::BeforeStart => "before_start",
            ApprovalStage::BeforeComplete => "before_complete",
        }
    }

    pub fn parse(s: &str) -> Option<ApprovalStage> {
        [ApprovalStage::BeforeStart, ApprovalStage::BeforeComplete]
            .into_iter()
            .find(|a| a.as_str() == s)
    }
}

/// The answers an approval takes.
pub const APPROVE: &str = "approve";
pub const REJECT: &str = "reject";

/// Most rules, most globs per rule, longest rule name.
pub const MAX_RULES: usize = 100;
pub const MAX_RULE_GLOBS: usize = 100;
pub const MAX_RULE_NAME: usize = 64;
/// Longest reason of a rejection or a failed merge (characters).
pub const MAX_REVIEW_NOTE: usize = 2_000;

/// A completion needs approval when one of its changed paths matches one of
/// `paths`, or when it deletes more than `max_deleted_lines` lines.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalRule {
    pub name: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_deleted_lines: Option<u64>,
}

const RULE_FIELDS: &[Field] = &[
    req("name", id(MAX_RULE_NAME)),
    opt("paths", Kind::StrList),
    opt("max_deleted_lines", Kind::UInt),
];

/// Checks `{"rules":[{name, paths?, max_deleted_lines?}, ...]}` (the body of
/// `PUT /api/admin/approval-rules`; the config's `approval_rules` is the same
/// list). Each rule needs `paths` or `max_deleted_lines`; names are unique.
/// The hub checks the globs themselves.
pub fn parse_rules(body: &Value) -> Result<Vec<ApprovalRule>, Vec<FieldError>> {
    let rules = match body.get("rules") {
        Some(Value::Array(a)) => a,
        Some(_) => {
            return Err(vec![FieldError::new(
                "rules",
                "wrong_type",
                "expected a list",
            )])
        }
        None => {
            return Err(vec![FieldError::new(
                "rules",
                "required",
                "field is required",
            )])
        }
    };
    if let Some(extra) = body
        .as_object()
        .and_then(|o| o.keys().find(|k| *k != "rules"))
    {
        return Err(vec![FieldError::new(
            extra,
            "unknown_field",
            "not a field of this body",
        )]);
    }
    if rules.len() > MAX_RULES {
        return Err(vec![FieldError::new(
            "rules",
            "invalid_value",
            format!("at most {MAX_RULES} rules"),
        )]);
    }
    let mut errors = Vec::new();
    let mut out: Vec<ApprovalRule> = Vec::new();
    for (i, rule) in rules.iter().enumerate() {
        let at = |e: FieldError| FieldError {
            field: format!("rules[{i}].{}", e.field),
            ..e
        };
        let Value::Object(obj) = rule else {
            errors.push(FieldError::new(
                &format!("rules[{i}]"),
                "wrong_type",
                "a rule must be an object",
            ));
            continue;
        };
        let found = check_fields(obj, RULE_FIELDS);
        if !found.is_empty() {
            errors.extend(found.into_iter().map(at));
            continue;
        }
        let parsed = rule_of(obj);
        if parsed.paths.is_empty() && parsed.max_deleted_lines.is_none() {
            errors.push(at(FieldError::new(
                "paths",
                "required",
                "a rule needs paths or max_deleted_lines",
            )));
        }
        if parsed.paths.len() > MAX_RULE_GLOBS {
            errors.push(at(FieldError::new(
                "paths",
                "invalid_value",
                format!("at most {MAX_RULE_GLOBS} globs"),
            )));
        }
        if out.iter().any(|r| r.name == parsed.name) {
            errors.push(at(FieldError::new("name", "invalid_value", "used twice")));
        }
        out.push(parsed);
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

fn rule_of(obj: &Map<String, Value>) -> ApprovalRule {
    ApprovalRule {
        name: obj
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        paths: str_list(obj, "paths"),
        max_deleted_lines: obj.get("max_deleted_lines").and_then(Value::as_u64),
    }
}

/// What a completion changed, as the sidecar's `git submit` reports it in the
/// result's `changes`: `{paths, lines_added, lines_deleted}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Changes {
    #[serde(default)]
    pub paths: Vec<String>,
    #[serde(default)]
    pub lines_added: u64,
    #[serde(default)]
    pub lines_deleted: u64,
}

impl Changes {
    /// The `changes` of a result, when it has a readable one.
    pub fn of_result(result: &Map<String, Value>) -> Option<Changes> {
        let c = result.get("changes")?.as_object()?;
        Some(Changes {
            paths: c
                .get("paths")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default(),
            lines_added: c.get("lines_added").and_then(Value::as_u64).unwrap_or(0),
            lines_deleted: c.get("lines_deleted").and_then(Value::as_u64).unwrap_or(0),
        })
    }
}

/// `task_merged` (ext): the holder's sidecar merged the approved pull request,
/// or could not (`error`: a conflict, a failing required check).
pub fn check_merged(obj: &Map<String, Value>) -> Vec<FieldError> {
    let merged = obj.get("merged").and_then(Value::as_bool);
    let error = obj.get("error").and_then(Value::as_str);
    if merged == Some(false) && error.is_none_or(|e| e.trim().is_empty()) {
        return vec![FieldError::new(
            "error",
            "required",
            "say why the merge failed",
        )];
    }
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rules_are_checked_whole() {
        let ok = parse_rules(&json!({"rules": [
            {"name": "infra", "paths": ["infra/**", "**/*.toml"]},
            {"name": "big-deletes", "max_deleted_lines": 200}
        ]}))
        .expect("valid");
        assert_eq!(ok.len(), 2);
        assert_eq!(ok[1].max_deleted_lines, Some(200));
        let errors = parse_rules(&json!({"rules": [
            {"name": "empty"},
            {"name": "empty", "paths": ["a"]},
            {"paths": ["a"]},
            7
        ]}))
        .expect_err("invalid");
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "rules[0].paths",
                "rules[1].name",
                "rules[2].name",
                "rules[3]"
            ]
        );
        assert!(parse_rules(&json!({"rules": [], "x": 1})).is_err());
        assert!(parse_rules(&json!({})).is_err());
        assert_eq!(parse_rules(&json!({"rules": []})), Ok(vec![]));
    }

    #[test]
    fn changes_come_from_the_result() {
        let result = json!({"changes": {"paths": ["infra/main.tf"], "lines_deleted": 3}});
        let c = Changes::of_result(result.as_object().expect("object")).expect("changes");
        assert_eq!((c.paths.len(), c.lines_added, c.lines_deleted), (1, 0, 3));
        assert!(Changes::of_result(&Map::new()).is_none());
    }

    #[test]
    fn a_failed_merge_says_why() {
        let check = |v: Value| check_merged(v.as_object().expect("object"));
        assert!(check(json!({"merged": true})).is_empty());
        assert_eq!(check(json!({"merged": false}))[0].field, "error");
        assert!(check(json!({"merged": false, "error": "conflict"})).is_empty());
    }
}
