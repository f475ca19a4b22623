//! The event bus: what happened in the hub, for whoever watches (the dashboard).
//!
//! A bounded broadcast channel. Publishers never wait and never fail: an event
//! nobody listens to is dropped, and a listener that falls more than
//! [`CAPACITY`] events behind is told it lagged (the dashboard then sends a fresh
//! snapshot instead of the events it missed). Publishers that would have to build
//! an event at some cost ask [`EventBus::watched`] first.
//!
//! Architecture invariant: the bus carries copies of facts already made durable
//! by their owners; nothing reads it to decide anything about tasks or agents.

use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;
use tokio::sync::broadcast;

/// Events a listener may fall behind before it is told it lagged.
pub(crate) const CAPACITY: usize = 4096;

/// One thing that happened (PROTOCOL.md section 4, the dashboard's `events`).
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum HubEvent {
    /// A task's history grew by `event`; `status` is the task's status after it.
    /// `seq` rises with every task event of the hub, so a listener can ignore one
    /// that arrives after a later event of the same task.
    TaskEvent {
        task_id: String,
        event: String,
        agent_id: Option<String>,
        timestamp: i64,
        status: &'static str,
        seq: u64,
        priority: u8,
        /// Only for a new task.
        #[serde(skip_serializing_if = "Option::is_none")]
        description: Option<String>,
        /// Only for `completed`: the row for recent completions.
        #[serde(skip_serializing_if = "Option::is_none")]
        completion: Option<Value>,
        /// Only for `progress`: the task's latest `{percent, message, at}`.
        #[serde(skip_serializing_if = "Option::is_none")]
        progress: Option<Value>,
    },
    AgentJoined {
        agent: Value,
    },
    AgentLeft {
        agent_id: String,
    },
    /// An agent's card changed (FSM state, current task, status text, flags).
    StatusChanged {
        agent: Value,
    },
    MetricsSnapshot {
        data: Value,
    },
    AlertFired {
        data: Value,
    },
    /// An active alert was acknowledged, escalated or repeated (ext).
    AlertUpdated {
        data: Value,
    },
    AlertCleared {
        rule_id: String,
    },
    /// The live claims on repository paths changed (ext): every direct
    /// reservation and running task's claim, as `GET /api/reservations` lists.
    Reservations {
        reservations: Vec<Value>,
    },
    /// A concurrency key's limit or running count changed (ext): every key
    /// with a limit or a running task, as `GET /api/admin/concurrency` lists.
    Concurrency {
        keys: Vec<Value>,
    },
    /// A credential group was paused or resumed (ext): every pause in force,
    /// as `GET /api/usage` lists.
    Usage {
        pauses: Vec<Value>,
    },
    /// A topic event was published (ext, PROTOCOL.md 6.30).
    TopicEvent {
        topic: String,
        seq: u64,
    },
    /// `backup_complete`, `backup_failed`, `compaction_complete`,
    /// `compaction_failed`, `recovery_complete`, `recovery_failed`.
    #[serde(untagged)]
    Storage(StorageEvent),
}

/// A storage event, tagged by its kind.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct StorageEvent {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub data: Value,
}

/// Cheap to clone; every clone publishes to the same listeners. Events travel as
/// `Arc`s: each listener's copy is a reference count, not a deep copy.
#[derive(Clone)]
pub(crate) struct EventBus {
    tx: broadcast::Sender<Arc<HubEvent>>,
}

impl Default for EventBus {
    fn default() -> Self {
        EventBus::new()
    }
}

impl EventBus {
    pub(crate) fn new() -> EventBus {
        let (tx, _) = broadcast::channel(CAPACITY);
        EventBus { tx }
    }

    /// Whether anyone listens (skip building events nobody would read).
    pub(crate) fn watched(&self) -> bool {
        self.tx.receiver_count() > 0
    }

    pub(crate) fn publish(&self, event: HubEvent) {
        // No listener is not an error: the event is simply not needed.
        let _ = self.tx.send(Arc::new(event));
    }

    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Arc<HubEvent>> {
        self.tx.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn events_serialize_with_their_protocol_type() {
        let storage = HubEvent::Storage(StorageEvent {
            kind: "backup_complete",
            data: json!({"path": "/b"}),
        });
        assert_eq!(
            serde_json::to_value(&storage).ok(),
            Some(json!({"type": "backup_complete", "data": {"path": "/b"}}))
        );
        let left = HubEvent::AgentLeft {
            agent_id: "a".into(),
        };
        assert_eq!(
            serde_json::to_value(&left).ok(),
            Some(json!({"type": "agent_left", "agent_id": "a"}))
        );
    }

    #[test]
    fn a_listener_that_falls_behind_is_told_so() {
        let bus = EventBus::new();
        assert!(!bus.watched());
        bus.publish(HubEvent::AgentLeft {
            agent_id: "nobody listens".into(),
        });
        let mut rx = bus.subscribe();
        assert!(bus.watched());
        for i in 0..CAPACITY + 1 {
            bus.publish(HubEvent::AgentLeft {
                agent_id: i.to_string(),
            });
        }
        assert!(matches!(
            rx.try_recv(),
            Err(broadcast::error::TryRecvError::Lagged(1))
        ));
    }
}
