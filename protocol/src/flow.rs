//! Results that flow on (ext, PROTOCOL.md 6.32): a task's inputs from the
//! tasks it depends on, telling the submitter when a task ends (`notify`),
//! fan-in by correlation id, and the topics the hub publishes itself.

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

/// Largest result carried inline (bytes of its JSON), in an assignment's
/// `inputs` or a hub event's payload; a larger one is given by reference
/// (`result_ref`, read with `GET /api/tasks/:id/result`).
pub const MAX_INLINE_RESULT: usize = 16 * 1024;
/// Most bytes of results one assignment carries inline; the inputs past it are
/// given by reference.
pub const MAX_INPUTS_BYTES: usize = 64 * 1024;
/// Most tasks a fan-in (`depends_on_correlation`) may wait for.
pub const MAX_FAN_IN: usize = 1_000;
/// Most `depends_on` entries of one task (a fan-in adds up to [`MAX_FAN_IN`]).
pub const MAX_DEPENDS_ON: usize = MAX_FAN_IN;

/// The topics the hub publishes itself.
pub const TOPIC_TASK_COMPLETED: &str = "task.completed";
pub const TOPIC_TASK_DEAD_LETTER: &str = "task.dead_letter";
pub const TOPIC_TASK_CANCELLED: &str = "task.cancelled";
pub const TOPIC_TASK_FINISHED: &str = "task.finished";
pub const TOPIC_STANDING_MISSED: &str = "standing_order.missed";
/// Every topic the hub publishes, with when.
pub const HUB_TOPICS: &[(&str, &str)] = &[
    (
        TOPIC_TASK_COMPLETED,
        "a task completed (while a subscription to the topic exists)",
    ),
    (
        TOPIC_TASK_FINISHED,
        "a task ended, any outcome (for tasks with notify event, or while a subscription exists)",
    ),
    (TOPIC_TASK_DEAD_LETTER, "a task was dead-lettered"),
    (TOPIC_TASK_CANCELLED, "a task was cancelled"),
    (
        TOPIC_STANDING_MISSED,
        "a standing order's run window closed without a run",
    ),
];

/// Who is told when a task ends (`notify`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Notify {
    /// A `task_finished` message to the submitting agent's mailbox.
    Message,
    /// A `task.finished` topic event.
    Event,
}

impl Notify {
    pub fn parse(s: &str) -> Option<Notify> {
        match s {
            "message" => Some(Notify::Message),
            "event" => Some(Notify::Event),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Notify::Message => "message",
            Notify::Event => "event",
        }
    }
}

/// The path a result too large to carry inline is read from.
pub fn result_ref(task_id: &str) -> String {
    format!("/api/tasks/{task_id}/result")
}

/// Size of a result's JSON (0 for none).
pub fn result_bytes(result: Option<&Map<String, Value>>) -> usize {
    result
        .and_then(|r| serde_json::to_vec(r).ok())
        .map_or(0, |v| v.len())
}

/// A task's result as one input or one event carries it: inline when it is at
/// most `room` bytes (and [`MAX_INLINE_RESULT`]), else by reference.
pub fn carried_result(
    task_id: &str,
    status: &str,
    result: Option<&Map<String, Value>>,
    room: usize,
) -> (Value, usize) {
    let bytes = result_bytes(result);
    if bytes <= room.min(MAX_INLINE_RESULT) {
        let v = json!({"task_id": task_id, "status": status, "result": result});
        (v, bytes)
    } else {
        let v = json!({"task_id": task_id, "status": status, "result": null,
                       "result_ref": result_ref(task_id), "result_bytes": bytes});
        (v, 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_result_goes_by_reference() {
        let mut small = Map::new();
        small.insert("summary".into(), json!("ok"));
        let (v, used) = carried_result("t1", "completed", Some(&small), MAX_INPUTS_BYTES);
        assert_eq!(v["result"]["summary"], "ok");
        assert!(used > 0);
        let mut big = Map::new();
        big.insert("blob".into(), json!("x".repeat(MAX_INLINE_RESULT)));
        let (v, used) = carried_result("t2", "completed", Some(&big), MAX_INPUTS_BYTES);
        assert_eq!(used, 0);
        assert_eq!(v["result_ref"], "/api/tasks/t2/result");
        assert!(v["result"].is_null());
        // No room left: by reference even when small.
        let (v, _) = carried_result("t1", "completed", Some(&small), 3);
        assert_eq!(v["result_ref"], "/api/tasks/t1/result");
        assert_eq!(Notify::parse("event"), Some(Notify::Event));
        assert_eq!(Notify::parse("mail"), None);
    }
}
