//! Approval rules (ext, PROTOCOL.md 6.27): a completion whose changed paths
//! match a rule's globs, or that deletes more lines than a rule allows, waits
//! for a person's approval. The rules an operator set
//! (`PUT /api/admin/approval-rules`) are kept in `meta`; until one is set, the
//! config's `approval_rules` apply.

use serde_json::{Map, Value};

use crate::domain::scopes::Scope;
use crate::domain::task::Task;
use crate::error::StoreError;
use crate::protocol::{ApprovalRule, ApprovalStage, Changes, FieldError};
use crate::storage::store::{decode, encode, Store};

/// Where the operator's rules are kept in `meta`.
const RULES_KEY: &str = "queue_approval_rules";

/// One rule with its globs compiled.
#[derive(Debug, Clone)]
struct Compiled {
    rule: ApprovalRule,
    scope: Option<Scope>,
}

/// See the module documentation.
#[derive(Debug, Clone, Default)]
pub(super) struct ApprovalRules {
    rules: Vec<Compiled>,
    /// Whether the rules are the operator's (stored) or the config's.
    pub(super) stored: bool,
}

impl ApprovalRules {
    /// Compiles `rules`; a glob that does not parse is refused with its field.
    pub(super) fn compile(rules: Vec<ApprovalRule>) -> Result<ApprovalRules, Vec<FieldError>> {
        let mut errors = Vec::new();
        let mut compiled = Vec::new();
        for (i, rule) in rules.into_iter().enumerate() {
            let scope = match rule.paths.is_empty() {
                true => None,
                false => match Scope::parse(&rule.paths) {
                    Ok(s) => Some(s),
                    Err(e) => {
                        errors.push(FieldError::new(
                            &format!("rules[{i}].paths"),
                            "invalid_value",
                            e.to_string(),
                        ));
                        None
                    }
                },
            };
            compiled.push(Compiled { rule, scope });
        }
        match errors.is_empty() {
            true => Ok(ApprovalRules {
                rules: compiled,
                stored: false,
            }),
            false => Err(errors),
        }
    }

    /// The stored rules, else `configured`.
    pub(super) fn load(
        store: &Store,
        configured: &[ApprovalRule],
    ) -> Result<ApprovalRules, StoreError> {
        let (rules, stored) = match store.meta.get(RULES_KEY)? {
            Some(v) => (decode("meta", RULES_KEY.as_bytes(), &v)?, true),
            None => (configured.to_vec(), false),
        };
        let mut compiled = ApprovalRules::compile(rules).unwrap_or_else(|errors| {
            // The config was checked at start and stored rules at their PUT.
            tracing::error!(?errors, "approval rules do not compile; none apply");
            ApprovalRules::default()
        });
        compiled.stored = stored;
        Ok(compiled)
    }

    /// Writes the rules (made durable by the caller's flush).
    pub(super) fn save(&self, store: &Store) -> Result<(), StoreError> {
        store.meta.insert(RULES_KEY, encode(&self.list()))?;
        Ok(())
    }

    pub(super) fn list(&self) -> Vec<ApprovalRule> {
        self.rules.iter().map(|c| c.rule.clone()).collect()
    }

    /// Why `task`'s completion with `result` needs approval (empty: it does
    /// not).
    pub(super) fn reasons(&self, task: &Task, result: Option<&Map<String, Value>>) -> Vec<String> {
        let mut reasons = Vec::new();
        if task.approval == Some(ApprovalStage::BeforeComplete) {
            reasons.push("the submitter asked for approval before completion".to_string());
        }
        let Some(changes) = result.and_then(Changes::of_result) else {
            return reasons;
        };
        for c in &self.rules {
            let matched = c
                .scope
                .as_ref()
                .and_then(|s| changes.paths.iter().find(|p| s.covers(p)));
            if let Some(path) = matched {
                reasons.push(format!("rule {}: changes {path}", c.rule.name));
            } else if let Some(max) = c
                .rule
                .max_deleted_lines
                .filter(|max| changes.lines_deleted > *max)
            {
                reasons.push(format!(
                    "rule {}: deletes {} lines (more than {max})",
                    c.rule.name, changes.lines_deleted
                ));
            }
        }
        reasons
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rules() -> ApprovalRules {
        ApprovalRules::compile(vec![
            ApprovalRule {
                name: "infra".into(),
                paths: vec!["infra/**".into(), "**/*.toml".into()],
                max_deleted_lines: None,
            },
            ApprovalRule {
                name: "deletes".into(),
                paths: vec![],
                max_deleted_lines: Some(100),
            },
        ])
        .expect("compiles")
    }

    fn result(paths: &[&str], deleted: u64) -> Map<String, Value> {
        json!({"changes": {"paths": paths, "lines_added": 1, "lines_deleted": deleted}})
            .as_object()
            .cloned()
            .unwrap_or_default()
    }

    #[test]
    fn rules_match_paths_and_deletions() {
        let task = crate::domain::task::tests::task(1);
        let r = rules();
        assert_eq!(
            r.reasons(&task, Some(&result(&["infra/main.tf"], 0))),
            ["rule infra: changes infra/main.tf"]
        );
        assert_eq!(
            r.reasons(&task, Some(&result(&["a/Cargo.toml"], 0))).len(),
            1
        );
        assert!(r
            .reasons(&task, Some(&result(&["src/main.rs"], 100)))
            .is_empty());
        assert_eq!(
            r.reasons(&task, Some(&result(&["src/main.rs"], 101))),
            ["rule deletes: deletes 101 lines (more than 100)"]
        );
        assert!(r.reasons(&task, None).is_empty(), "no changes reported");
        let mut asked = task.clone();
        asked.approval = Some(ApprovalStage::BeforeComplete);
        assert_eq!(r.reasons(&asked, None).len(), 1);
    }

    #[test]
    fn a_bad_glob_is_refused_with_its_field() {
        let errors = ApprovalRules::compile(vec![ApprovalRule {
            name: "x".into(),
            paths: vec!["a/[".into()],
            max_deleted_lines: None,
        }])
        .expect_err("refused");
        assert_eq!(errors[0].field, "rules[0].paths");
    }
}
