//! The catalog's routes of people and coordination in the loop: usage
//! pauses, questions and approvals, approval rules, budgets and spend, topic
//! events and subscriptions, an agent's status line.

use serde_json::{json, Value};

use super::catalog::route;
use super::{Auth, BodyDoc, Route};
use crate::protocol::{CONTEXT_PUT_FIELDS, PUBLISH_FIELDS};
use crate::web::http::agents::STATUS_FIELDS;
use crate::web::http::approvals::REJECT_FIELDS;
use crate::web::http::budgets::RAISE_FIELDS;
use crate::web::http::questions::ANSWER_FIELDS;

fn approval_rules_schema() -> Value {
    json!({
        "type": "object",
        "required": ["rules"],
        "additionalProperties": false,
        "properties": {"rules": {"type": "array", "maxItems": crate::protocol::MAX_RULES, "items": {
            "type": "object",
            "required": ["name"],
            "additionalProperties": false,
            "properties": {
                "name": {"type": "string", "maxLength": crate::protocol::MAX_RULE_NAME},
                "paths": {"type": "array", "items": {"type": "string"}},
                "max_deleted_lines": {"type": "integer", "minimum": 0}
            }
        }}}
    })
}

fn daily_budgets_schema() -> Value {
    let limit = json!({
        "type": "object",
        "additionalProperties": false,
        "properties": {
            "tokens": {"type": "integer", "minimum": 1},
            "usd": {"type": "number", "exclusiveMinimum": 0}
        }
    });
    json!({
        "type": "object",
        "additionalProperties": false,
        "properties": {
            "agents": {"type": "object", "additionalProperties": limit},
            "groups": {"type": "object", "additionalProperties": limit}
        }
    })
}

pub(super) fn routes() -> Vec<Route> {
    use Auth::*;
    vec![
        route(
            "GET",
            "/api/usage",
            Token,
            "Credential groups paused for a usage limit, with until when",
        ),
        route(
            "POST",
            "/api/usage/{group}/resume",
            Steer,
            "End a usage-limit pause early",
        ),
        route(
            "GET",
            "/api/questions",
            Token,
            "Questions agents wait on (tasks input_required), oldest first",
        ),
        Route {
            body: BodyDoc::Fields(ANSWER_FIELDS),
            ..route(
                "POST",
                "/api/tasks/{id}/answer",
                Steer,
                "Answer the question a task waits on; its agent goes on",
            )
        },
        route(
            "POST",
            "/api/tasks/{id}/approve",
            Steer,
            "Approve what a task waits for: before start it is queued; a held completion completes (or its agent merges the pull request first)",
        ),
        Route {
            body: BodyDoc::Fields(REJECT_FIELDS),
            ..route(
                "POST",
                "/api/tasks/{id}/reject",
                Steer,
                "Reject: before start it is cancelled; a held completion goes back to its agent with the reason",
            )
        },
        route(
            "GET",
            "/api/admin/approval-rules",
            Token,
            "The approval rules in force and their source (api or config)",
        ),
        Route {
            body: BodyDoc::Schema(approval_rules_schema),
            ..route(
                "PUT",
                "/api/admin/approval-rules",
                Admin,
                "Replace the approval rules: {rules:[{name, paths?, max_deleted_lines?}]}",
            )
        },
        Route {
            body: BodyDoc::Fields(RAISE_FIELDS),
            ..route(
                "POST",
                "/api/tasks/{id}/budget",
                Steer,
                "Set a task's budget (budget_tokens, budget_usd); a task paused for it resumes",
            )
        },
        route(
            "GET",
            "/api/spend",
            Token,
            "Spend today by agent, credential group and capability, the daily budgets, each kept day's total",
        ),
        route(
            "GET",
            "/api/admin/budgets",
            Token,
            "The daily budgets and today's spend (as /api/spend)",
        ),
        Route {
            body: BodyDoc::Schema(daily_budgets_schema),
            ..route(
                "PUT",
                "/api/admin/budgets",
                Admin,
                "Replace the daily budgets: {agents: {id: {tokens?, usd?}}, groups: {group: {tokens?, usd?}}}",
            )
        },
        route("GET", "/api/topics", Token, "Every topic with its event count and newest event"),
        route("GET", "/api/subscriptions", Token, "Every subscription: topic, filter, action, cursor, fired"),
        route(
            "POST",
            "/api/subscriptions",
            Steer,
            "Subscribe {topic, filter?, task (a template) | deliver {agent | channel}}: each matching event makes one task or a message",
        ),
        route("DELETE", "/api/subscriptions/{id}", Steer, "Delete a subscription"),
        Route {
            body: BodyDoc::Fields(STATUS_FIELDS),
            ..route(
                "PUT",
                "/api/agents/{id}/status",
                Token,
                "Set an agent's status line (the agent itself, or the admin or a coordinator)",
            )
        },
        Route {
            body: BodyDoc::Fields(PUBLISH_FIELDS),
            ..route(
                "POST",
                "/api/topics/{topic}/events",
                Token,
                "Publish a topic event {payload, dedupe_key?}: 201 once durable; 200 with the earlier event when its dedupe_key was used",
            )
        },
        Route {
            query: &[
                ("since", "integer", "only events published at or after this time (ms)"),
                ("cursor", "integer", "only events after this sequence (next_cursor of the previous page)"),
                ("limit", "integer", "at most this many (1-1000, default 100)"),
                ("newest", "boolean", "true: the newest limit events instead (oldest first, no cursor)"),
            ],
            ..route(
                "GET",
                "/api/topics/{topic}/events",
                Token,
                "A topic's events in order: {events, next_cursor}",
            )
        },
        Route {
            query: &[
                ("prefix", "string", "only keys starting with this"),
                ("deleted", "boolean", "true: deleted keys too"),
            ],
            ..route("GET", "/api/context", Token, "Shared context keys: {keys: [{key, version, kind, size, updated_at, updated_by, deleted}]}")
        },
        Route {
            query: &[("version", "integer", "this version instead of the newest")],
            ..route("GET", "/api/context/{key}", Token, "A shared context key: its head and value (JSON) or text")
        },
        Route {
            query: &[("limit", "integer", "at most this many (1-1000, default 100)")],
            ..route("GET", "/api/context/{key}/history", Token, "A key's kept versions, newest first")
        },
        Route {
            body: BodyDoc::Fields(CONTEXT_PUT_FIELDS),
            ..route(
                "PUT",
                "/api/context/{key}",
                Token,
                "Write a key {value | text, if_version?} (the writers its prefix allows): 201 for version 1, 409 version_conflict when if_version is not the current one",
            )
        },
        Route {
            query: &[("if_version", "integer", "delete only if this is the current version")],
            ..route("DELETE", "/api/context/{key}", Token, "Delete a key (a version of its own; the history stays)")
        },
    ]
}
