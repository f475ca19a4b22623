//! The catalog of HTTP routes: method, path, who may call it, what it does,
//! its body (the very field list its handler validates with) and its query.

use serde_json::{json, Value};

use super::{Auth, BodyDoc, Route};
use crate::protocol::{
    object_schema, priority_json_schema, RENEW_FIELDS, RESERVE_FIELDS, TASK_SPEC_FIELDS,
};
use crate::web::http::agents::{INVITE_FIELDS, REGISTER_FIELDS, TOKEN_FIELDS};
use crate::web::http::concurrency::LIMIT_FIELDS;
use crate::web::http::limits::OVERRIDE_FIELDS;
use crate::web::http::messaging::{ACK_FIELDS, CHANNEL_FIELDS, MESSAGE_FIELDS, SUBSCRIBER_FIELDS};
use crate::web::http::operator::{LANES_FIELDS, PRIORITY_FIELDS};
use crate::web::http::ops::LEVEL_FIELDS;
use crate::web::http::standing::{ORDER_FIELDS, ORDER_UPDATE_FIELDS};

pub(super) const fn route(
    method: &'static str,
    path: &'static str,
    auth: Auth,
    summary: &'static str,
) -> Route {
    Route {
        method,
        path,
        auth,
        summary,
        body: BodyDoc::None,
        query: &[],
    }
}

fn task_submission() -> Value {
    let mut one = object_schema(TASK_SPEC_FIELDS);
    one["properties"]["priority"] = priority_json_schema();
    json!({"oneOf": [one, {"type": "array", "items": one, "minItems": 1, "maxItems": 1000}]})
}

fn whitelist_body() -> Value {
    json!({"type": "object", "required": ["agents"], "properties": {
        "agents": {"type": "array", "maxItems": 10000,
                   "items": {"type": "string", "minLength": 1, "maxLength": 200}}}})
}

fn thresholds_body() -> Value {
    let number = json!({"type": "number", "minimum": 0});
    let integer = json!({"type": "integer", "minimum": 1});
    json!({"type": "object", "additionalProperties": false,
        "description": "any subset; the rest keep their values",
        "properties": {
            "queue_depth": integer, "queue_growing_checks": integer,
            "failure_rate": {"type": "number", "minimum": 0, "maximum": 1},
            "failure_rate_critical": {"type": "number", "minimum": 0, "maximum": 1},
            "min_finished": integer, "stuck_task_ms": integer, "blocked_task_ms": integer,
            "error_rate_per_min": number, "cooldown_ms": {"type": "integer", "minimum": 0},
            "window_ms": {"type": "integer", "minimum": 100, "maximum": 3600000},
            "agent_offline_ms": integer, "queued_age_ms": integer,
            "dead_letter_growth": integer,
            "agent_failing_attempts": {"type": "integer", "minimum": 1, "maximum": 50}}})
}

/// `POST /api/reservations`: the request, and (admin token) the holder.
fn reservation_body() -> Value {
    let mut schema = object_schema(RESERVE_FIELDS);
    schema["properties"]["holder"] = json!({"type": "string", "minLength": 1, "maxLength": 128,
        "description": "admin token only: the agent the paths are held for (default admin)"});
    schema
}

/// Query parameters of the event-log routes.
const EVENT_QUERY: &[(&str, &str, &str)] = &[
    ("task_id", "string", "one task's events"),
    ("agent_id", "string", "one agent's events"),
    (
        "kind",
        "string",
        "one kind (queued, assigned, completed, agent_connected, ...)",
    ),
    ("since", "integer", "ms since the epoch, inclusive"),
    ("until", "integer", "ms since the epoch, inclusive"),
    ("cursor", "integer", "from the previous page's next_cursor"),
    ("limit", "integer", "page size (≤ 1000)"),
];

pub(super) fn catalog() -> Vec<Route> {
    use Auth::*;
    let mut routes = vec![
        route("GET", "/health", Public, "Liveness and connected agents"),
        route(
            "GET",
            "/ws",
            Public,
            "Agent WebSocket (first frame: identify)",
        ),
        Route {
            body: BodyDoc::Schema(task_submission),
            ..route(
                "POST",
                "/api/tasks",
                Token,
                "Submit one task or a batch of up to 1000",
            )
        },
        Route {
            query: &[
                (
                    "status",
                    "string",
                    "queued|assigned|blocked|completed|dead_letter|cancelled",
                ),
                ("priority", "string", "0-3 or a priority name"),
                ("assigned_to", "string", "agent id"),
                ("correlation_id", "string", "a task and all its follow-ups"),
                ("limit", "integer", "page size (≤ 1000)"),
                ("cursor", "integer", "from the previous page's next_cursor"),
            ],
            ..route("GET", "/api/tasks", Token, "List tasks in creation order")
        },
        route(
            "GET",
            "/api/tasks/dead-letter",
            Token,
            "Dead-lettered tasks",
        ),
        route(
            "GET",
            "/api/tasks/stats",
            Token,
            "Counts by status and priority",
        ),
        route("GET", "/api/tasks/{id}", Token, "One task with its history"),
        route(
            "GET",
            "/api/tasks/{id}/result",
            Token,
            "A task's whole result with its status (what inputs and hub events give by reference)",
        ),
        Route {
            query: &[(
                "timeout_ms",
                "integer",
                "How long to hold the request, at most 60000 (default 30000)",
            )],
            ..route(
                "GET",
                "/api/tasks/{id}/wait",
                Token,
                "Long poll: the task once completed, dead-lettered or cancelled, or at the timeout",
            )
        },
        route(
            "POST",
            "/api/tasks/{id}/retry",
            Steer,
            "Force retry: a dead-lettered, blocked, cancelled or assigned task back to the queue",
        ),
        route("POST", "/api/tasks/{id}/cancel", Steer, "Cancel a task"),
        route(
            "POST",
            "/api/tasks/{id}/dead-letter",
            Steer,
            "Force an unfinished task to dead letter",
        ),
        Route {
            body: BodyDoc::Fields(PRIORITY_FIELDS),
            ..route(
                "POST",
                "/api/tasks/{id}/priority",
                Steer,
                "Move a queued task to another priority lane",
            )
        },
        Route {
            query: EVENT_QUERY,
            ..route(
                "GET",
                "/api/tasks/{id}/events",
                Token,
                "A task's full event log, oldest first",
            )
        },
        route(
            "GET",
            "/api/tasks/{id}/attempts",
            Token,
            "A task's attempts: agent, generation, times, outcome",
        ),
        Route {
            query: EVENT_QUERY,
            ..route(
                "GET",
                "/api/events",
                Token,
                "The event log, oldest first, filtered and paged",
            )
        },
        route("GET", "/api/queue/lanes", Token, "Paused priority lanes"),
        Route {
            body: BodyDoc::Schema(reservation_body),
            ..route(
                "POST",
                "/api/reservations",
                Token,
                "Reserve repository paths: 201 granted, or 409 scope_conflict naming the holder",
            )
        },
        Route {
            query: &[("repo", "string", "only this repository's claims")],
            ..route(
                "GET",
                "/api/reservations",
                Token,
                "Live claims on repository paths: reservations and running tasks' scopes",
            )
        },
        Route {
            body: BodyDoc::Fields(RENEW_FIELDS),
            ..route(
                "POST",
                "/api/reservations/{id}/renew",
                Token,
                "Move a reservation's expiry (its holder, or the admin)",
            )
        },
    ];
    routes.extend(super::people::routes());
    routes.extend(vec![
        route(
            "GET",
            "/api/admin/concurrency",
            Token,
            "Concurrency keys with a limit or a running task: {key, limit, running}",
        ),
        Route {
            body: BodyDoc::Fields(LIMIT_FIELDS),
            ..route(
                "PUT",
                "/api/admin/concurrency/{key}",
                Steer,
                "Cap how many tasks of the key run at once (0-10000)",
            )
        },
        route(
            "DELETE",
            "/api/admin/concurrency/{key}",
            Steer,
            "Remove the key's cap",
        ),
        route(
            "DELETE",
            "/api/reservations/{id}",
            Token,
            "Release a reservation (its holder, or the admin)",
        ),
        Route {
            body: BodyDoc::Fields(ORDER_FIELDS),
            ..route(
                "POST",
                "/api/standing-orders",
                Steer,
                "Create a standing order (cron + time zone, target, task template, window)",
            )
        },
        route(
            "GET",
            "/api/standing-orders",
            Token,
            "Standing orders with their next runs",
        ),
        route(
            "GET",
            "/api/standing-orders/{name}",
            Token,
            "One standing order",
        ),
        Route {
            body: BodyDoc::Fields(ORDER_UPDATE_FIELDS),
            ..route(
                "PUT",
                "/api/standing-orders/{name}",
                Steer,
                "Change some fields of a standing order",
            )
        },
        route(
            "DELETE",
            "/api/standing-orders/{name}",
            Steer,
            "Delete a standing order (its runs stay readable)",
        ),
        Route {
            query: &[
                ("since", "integer", "scheduled at or after (ms)"),
                ("until", "integer", "scheduled at or before (ms)"),
                ("limit", "integer", "at most this many (≤ 1000)"),
            ],
            ..route(
                "GET",
                "/api/standing-orders/{name}/runs",
                Token,
                "Every occurrence with its status: pending, completed, no_work, blocked, failed, missed, cancelled",
            )
        },
        route(
            "POST",
            "/api/agents/{id}/drain",
            Steer,
            "Drain an agent: it finishes its task and takes no new one",
        ),
        route(
            "POST",
            "/api/agents/{id}/undrain",
            Steer,
            "End a drain: the agent takes tasks again",
        ),
        route(
            "POST",
            "/api/agents/{id}/disable",
            Steer,
            "Disable an agent: its task goes back to the queue; it takes none",
        ),
        route(
            "POST",
            "/api/agents/{id}/enable",
            Steer,
            "Enable a disabled agent",
        ),
        Route {
            body: BodyDoc::Fields(LANES_FIELDS),
            ..route(
                "POST",
                "/api/queue/pause",
                Steer,
                "Pause priority lanes (no lanes = the whole queue)",
            )
        },
        Route {
            body: BodyDoc::Fields(LANES_FIELDS),
            ..route(
                "POST",
                "/api/queue/resume",
                Steer,
                "Resume priority lanes (no lanes = the whole queue)",
            )
        },
        route("GET", "/api/agents", Public, "Agents and their presence"),
        route(
            "GET",
            "/api/whoami",
            Token,
            "Whose rights the token carries: admin, or an agent and its id",
        ),
        route(
            "GET",
            "/api/agents/states",
            Token,
            "Every agent's FSM state, slots and running tasks",
        ),
        route(
            "GET",
            "/api/agents/{id}/state",
            Token,
            "One agent's FSM state, slots and running tasks",
        ),
        Route {
            body: BodyDoc::Fields(TOKEN_FIELDS),
            ..route(
                "POST",
                "/admin/tokens",
                Admin,
                "Issue an agent token (shown once)",
            )
        },
        route("GET", "/admin/tokens", Admin, "Agents with token prefixes"),
        route(
            "DELETE",
            "/admin/tokens/{agent_id}",
            Admin,
            "Revoke an agent's token",
        ),
        route(
            "DELETE",
            "/api/agents/{agent_id}/token",
            Token,
            "Revoke that agent's token (the agent itself, or the admin)",
        ),
        Route {
            body: BodyDoc::Fields(INVITE_FIELDS),
            ..route(
                "POST",
                "/admin/invites",
                Admin,
                "One-time invite and join command",
            )
        },
        Route {
            body: BodyDoc::Fields(REGISTER_FIELDS),
            ..route(
                "POST",
                "/api/onboard/register",
                Public,
                "Register with an invite (or as admin)",
            )
        },
        Route {
            body: BodyDoc::Fields(MESSAGE_FIELDS),
            ..route(
                "POST",
                "/api/message",
                Token,
                "Direct message (with to) or broadcast",
            )
        },
        Route {
            query: &[("since", "integer", "entries after this sequence")],
            ..route(
                "GET",
                "/api/mailbox/{agent_id}",
                Token,
                "That agent's mailbox",
            )
        },
        Route {
            body: BodyDoc::Fields(ACK_FIELDS),
            ..route(
                "POST",
                "/api/mailbox/{agent_id}/ack",
                Token,
                "Acknowledge up to seq",
            )
        },
        route("GET", "/api/channels", Token, "Channels"),
        Route {
            body: BodyDoc::Fields(CHANNEL_FIELDS),
            ..route("POST", "/api/channels", Token, "Create a channel")
        },
        route("GET", "/api/channels/{channel}", Token, "One channel"),
        Route {
            body: BodyDoc::Fields(SUBSCRIBER_FIELDS),
            ..route(
                "POST",
                "/api/channels/{channel}/subscribe",
                Token,
                "Subscribe (the admin names agent_id)",
            )
        },
        Route {
            body: BodyDoc::Fields(SUBSCRIBER_FIELDS),
            ..route(
                "POST",
                "/api/channels/{channel}/unsubscribe",
                Token,
                "Unsubscribe (the admin names agent_id)",
            )
        },
        Route {
            body: BodyDoc::Fields(MESSAGE_FIELDS),
            ..route(
                "POST",
                "/api/channels/{channel}/publish",
                Token,
                "Publish to a channel",
            )
        },
        Route {
            query: &[
                ("limit", "integer", "entries"),
                ("since", "integer", "after this sequence"),
            ],
            ..route(
                "GET",
                "/api/channels/{channel}/history",
                Token,
                "Channel history",
            )
        },
        Route {
            query: &[
                ("from", "string", "sender"),
                ("to", "string", "recipient"),
                ("channel", "string", "channel"),
                ("start_time", "integer", "ms"),
                ("end_time", "integer", "ms"),
                ("cursor", "integer", "from the previous page's cursor"),
                ("limit", "integer", "≤ 200"),
            ],
            ..route("GET", "/api/messages", Token, "Message history query")
        },
        route("GET", "/api/threads/{id}", Token, "A thread"),
        route("GET", "/api/threads/{id}/replies", Token, "Direct replies"),
        route(
            "GET",
            "/api/threads/{id}/root",
            Token,
            "The thread's first message",
        ),
        route("GET", "/api/analytics/summary", Token, "Activity summary"),
        route("GET", "/api/analytics/agents", Token, "Activity per agent"),
        route(
            "GET",
            "/api/analytics/agents/{id}/hourly",
            Token,
            "Hourly activity of one agent",
        ),
        Route {
            query: &[("history", "boolean", "add the last hour of snapshots")],
            ..route("GET", "/api/metrics", Watch, "Newest metrics snapshot")
        },
        route("GET", "/metrics", AdminOrScrape, "Prometheus text"),
        route(
            "GET",
            "/api/alerts",
            Watch,
            "Active alerts, events, webhook counts",
        ),
        route(
            "POST",
            "/api/alerts/{rule_id}/acknowledge",
            Steer,
            "Acknowledge an alert",
        ),
        route(
            "GET",
            "/api/config/alert-thresholds",
            Watch,
            "Alert thresholds",
        ),
        Route {
            body: BodyDoc::Schema(thresholds_body),
            ..route(
                "PUT",
                "/api/config/alert-thresholds",
                Admin,
                "Change alert thresholds",
            )
        },
        route(
            "GET",
            "/api/admin/rate-limits",
            Watch,
            "Defaults, overrides, whitelist, limited now",
        ),
        route(
            "GET",
            "/api/admin/rate-limits/whitelist",
            Watch,
            "The whitelist",
        ),
        Route {
            body: BodyDoc::Schema(whitelist_body),
            ..route(
                "PUT",
                "/api/admin/rate-limits/whitelist",
                Admin,
                "Replace the whitelist",
            )
        },
        route(
            "GET",
            "/api/admin/rate-limits/{agent_id}",
            Watch,
            "One agent's limits",
        ),
        Route {
            body: BodyDoc::Fields(&OVERRIDE_FIELDS),
            ..route(
                "PUT",
                "/api/admin/rate-limits/{agent_id}",
                Admin,
                "Set an agent's override",
            )
        },
        route(
            "DELETE",
            "/api/admin/rate-limits/{agent_id}",
            Admin,
            "Remove an agent's override",
        ),
        route(
            "GET",
            "/api/admin/log-level",
            Watch,
            "The log filter in force",
        ),
        Route {
            body: BodyDoc::Fields(&LEVEL_FIELDS),
            ..route(
                "PUT",
                "/api/admin/log-level",
                Admin,
                "Change the log level now",
            )
        },
        route("POST", "/api/admin/backup", Admin, "Take a backup now"),
        route(
            "GET",
            "/api/admin/storage-health",
            Watch,
            "Store size, backups, compaction, recoveries",
        ),
        route(
            "GET",
            "/api/admin/dets-health",
            Watch,
            "Alias of storage-health (v1.1 name)",
        ),
        route(
            "POST",
            "/api/admin/compact",
            Admin,
            "Compact the store now (live swap)",
        ),
        route(
            "POST",
            "/api/admin/restore",
            Admin,
            "Refused while running (409): use agentcom-hub restore",
        ),
        route(
            "GET",
            "/dashboard",
            Public,
            "The operator dashboard (logs in with the admin token)",
        ),
        route(
            "GET",
            "/dashboard/{file}",
            Public,
            "The dashboard's files: app.js, charts.js, style.css",
        ),
        route(
            "GET",
            "/dashboard/session",
            Public,
            "Whether the session cookie is a live login",
        ),
        Route {
            body: BodyDoc::Fields(&[crate::web::http::dashboard::TOKEN_FIELD]),
            ..route(
                "POST",
                "/dashboard/login",
                Public,
                "Admin token in, HttpOnly SameSite=Strict session cookie out (agent token: 403)",
            )
        },
        route("POST", "/dashboard/logout", Public, "Ends the session"),
        Route {
            query: &[(
                "token",
                "string",
                "the admin token (else the session cookie)",
            )],
            ..route(
                "GET",
                "/ws/dashboard",
                Watch,
                "Dashboard WebSocket: snapshot, events every 100 ms, actions",
            )
        },
        route("GET", "/api/schemas", Public, "This description"),
        route("GET", "/api/openapi.json", Public, "OpenAPI 3.0 document"),
    ]);
    routes
}
