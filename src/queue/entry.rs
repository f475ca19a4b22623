//! How memory keeps a live task. A queued task is kept compact: what scheduling,
//! counting and listing need, about a tenth of the whole task, so a million
//! queued tasks fit in memory whatever their descriptions and metadata. Its
//! record is read from the store when a change or a reader needs all of it. An
//! assigned or blocked task (a few per agent) is kept whole.

use std::collections::HashSet;
use std::sync::Arc;

use super::records::QueuedFields;
use crate::domain::matching::TaskId;
use crate::domain::task::{Task, TaskStatus};

/// A capability list, shared by every queued task that needs the same list.
pub(super) type Caps = Arc<[String]>;

/// A queued task as memory keeps it (see the module documentation).
#[derive(Debug, Clone)]
pub(super) struct Queued {
    /// Shared with the id index and the scheduler.
    pub(super) id: TaskId,
    pub(super) seq: u64,
    pub(super) priority: u8,
    pub(super) updated_at: i64,
    pub(super) run_after: Option<i64>,
    pub(super) capabilities: Caps,
    /// The agent whose attempt of this task failed last (served last).
    pub(super) avoid: Option<Box<str>>,
    /// Its fairness group, concurrency key and standing-order mark, shared by
    /// every task with the same three (`None`: none of them).
    pub(super) tags: Option<Arc<Tags>>,
}

/// A queued task's fairness group and concurrency key, and whether it is a
/// standing-order run.
#[derive(Debug, PartialEq, Eq, Hash)]
pub(super) struct Tags {
    pub(super) fair: Option<Arc<str>>,
    pub(super) key: Option<Arc<str>>,
    pub(super) standing: bool,
}

impl Queued {
    /// Since when it waits for an agent: its last change (creation, a return to
    /// the queue, a new lane), or its `run_after` when that came later.
    pub(super) fn waiting_since(&self) -> i64 {
        self.updated_at.max(self.run_after.unwrap_or(i64::MIN))
    }
}

/// A live task in memory.
#[derive(Debug, Clone)]
pub(super) enum Entry {
    Queued(Queued),
    Whole(Box<Task>),
}

impl Entry {
    pub(super) fn id(&self) -> &str {
        match self {
            Entry::Queued(q) => &q.id,
            Entry::Whole(t) => &t.id,
        }
    }

    pub(super) fn seq(&self) -> u64 {
        match self {
            Entry::Queued(q) => q.seq,
            Entry::Whole(t) => t.seq,
        }
    }

    pub(super) fn status(&self) -> TaskStatus {
        match self {
            Entry::Queued(_) => TaskStatus::Queued,
            Entry::Whole(t) => t.status,
        }
    }

    pub(super) fn priority(&self) -> u8 {
        match self {
            Entry::Queued(q) => q.priority,
            Entry::Whole(t) => t.priority,
        }
    }

    pub(super) fn assigned_to(&self) -> Option<&str> {
        match self {
            Entry::Queued(_) => None,
            Entry::Whole(t) => t.assigned_to.as_deref(),
        }
    }

    /// The id to index the entry by (the same allocation for a queued task).
    pub(super) fn shared_id(&self) -> TaskId {
        match self {
            Entry::Queued(q) => q.id.clone(),
            Entry::Whole(t) => t.id.as_str().into(),
        }
    }

    /// The whole task, when memory keeps it whole (assigned and blocked tasks).
    pub(super) fn whole(&self) -> Option<&Task> {
        match self {
            Entry::Queued(_) => None,
            Entry::Whole(t) => Some(t),
        }
    }
}

/// One shared copy of each capability list queued tasks need.
#[derive(Default)]
pub(super) struct CapsTable {
    lists: HashSet<Caps>,
    tags: HashSet<Arc<Tags>>,
}

impl CapsTable {
    /// The shared copy of `caps`. Lists no task needs any more are dropped when
    /// the table has grown (each costs a few bytes until then).
    pub(super) fn share(&mut self, caps: &[String]) -> Caps {
        if let Some(c) = self.lists.get(caps) {
            return c.clone();
        }
        if self.lists.len() >= 1024 {
            self.lists.retain(|c| Arc::strong_count(c) > 1);
        }
        let c: Caps = caps.into();
        self.lists.insert(c.clone());
        c
    }
}

impl CapsTable {
    /// The shared tags of (fairness group, concurrency key, standing-order
    /// run); `None` for none of them.
    pub(super) fn tags(
        &mut self,
        fair: Option<&str>,
        key: Option<&str>,
        standing: bool,
    ) -> Option<Arc<Tags>> {
        if fair.is_none() && key.is_none() && !standing {
            return None;
        }
        let t = Tags {
            fair: fair.map(Into::into),
            key: key.map(Into::into),
            standing,
        };
        if let Some(shared) = self.tags.get(&t) {
            return Some(shared.clone());
        }
        if self.tags.len() >= 1024 {
            self.tags.retain(|c| Arc::strong_count(c) > 1);
        }
        let shared = Arc::new(t);
        self.tags.insert(shared.clone());
        Some(shared)
    }
}

/// The compact entry of a queued task read light from the store.
pub(super) fn queued_of(seq: u64, fields: QueuedFields, caps: &mut CapsTable) -> Entry {
    Entry::Queued(Queued {
        capabilities: caps.share(&fields.needed_capabilities),
        id: fields.id.into(),
        seq,
        priority: fields.priority,
        updated_at: fields.updated_at,
        run_after: fields.run_after,
        avoid: fields.avoid.map(String::into_boxed_str),
        tags: caps.tags(
            fields.fair.as_deref(),
            fields.concurrency_key.as_deref(),
            fields.standing,
        ),
    })
}

/// What memory keeps of `task`: compact when queued, whole otherwise.
pub(super) fn entry_of(task: Task, caps: &mut CapsTable) -> Entry {
    if task.status != TaskStatus::Queued {
        return Entry::Whole(Box::new(task));
    }
    let avoid = task
        .attempts
        .last()
        .filter(|a| a.outcome.as_deref() == Some("failed"))
        .map(|a| a.agent_id.as_str().into());
    let tags = caps.tags(
        task.fairness_group(),
        task.concurrency_key.as_deref(),
        task.is_standing_run(),
    );
    Entry::Queued(Queued {
        tags,
        capabilities: caps.share(&task.needed_capabilities),
        id: task.id.into(),
        seq: task.seq,
        priority: task.priority,
        updated_at: task.updated_at,
        run_after: task.run_after,
        avoid,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::records::sample_task;
    use serde_json::json;

    fn task(caps: &[&str]) -> Task {
        sample_task(
            json!({"description": "d", "priority": "high", "needed_capabilities": caps}),
            "t-1",
            9,
        )
    }

    #[test]
    fn a_queued_task_is_kept_compact_and_shares_its_capability_list() {
        let mut table = CapsTable::default();
        let a = entry_of(task(&["gpu", "rust"]), &mut table);
        let b = entry_of(task(&["gpu", "rust"]), &mut table);
        let (Entry::Queued(a), Entry::Queued(b)) = (&a, &b) else {
            panic!("queued tasks are compact");
        };
        assert!(Arc::ptr_eq(&a.capabilities, &b.capabilities));
        assert_eq!((a.seq, a.priority, &*a.id), (9, 1, "t-1"));
        let mut assigned = task(&[]);
        assigned.status = TaskStatus::Assigned;
        assigned.assigned_to = Some("agent-a".into());
        let e = entry_of(assigned, &mut table);
        assert_eq!(e.assigned_to(), Some("agent-a"));
        assert!(e.whole().is_some(), "assigned tasks are whole");
    }
}
