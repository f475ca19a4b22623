//! Results that flow on (ext, PROTOCOL.md 6.32): an assignment carries the
//! results of the dependencies its task names in `inputs_from`, inline up to
//! `MAX_INLINE_RESULT` each and `MAX_INPUTS_BYTES` in all, the rest by
//! reference (`GET /api/tasks/:id/result`); a task's end is staged for the
//! hub's topic events and its submitter's notice in the flush of the change.

use serde_json::{Map, Value};

use super::TaskQueue;
use crate::domain::task::{Task, TaskStatus};
use crate::error::StoreError;
use crate::protocol::{carried_result, TaskAssignment, MAX_ASSIGNMENT_CONTEXT, MAX_INPUTS_BYTES};
use crate::topics::Ended;

impl TaskQueue {
    /// Adds the shared context and the inputs of `assignment`'s task (read
    /// from the store: its dependencies are finished).
    pub(super) fn add_inputs(&self, assignment: &mut TaskAssignment) -> Result<(), StoreError> {
        let Some(task) = self.index.whole(&assignment.task_id) else {
            return Ok(());
        };
        if !task.context_keys.is_empty() {
            assignment.context = Some(crate::context::for_assignment(
                &self.peers.context,
                &task.context_keys,
                MAX_ASSIGNMENT_CONTEXT,
            )?);
        }
        if task.inputs_from.is_empty() {
            return Ok(());
        }
        let mut room = MAX_INPUTS_BYTES;
        let mut inputs = Map::new();
        for dep in &task.inputs_from {
            let value = match self.read(dep)? {
                Some(d) => {
                    let (v, used) =
                        carried_result(&d.id, d.status.as_str(), d.result.as_ref(), room);
                    room = room.saturating_sub(used);
                    v
                }
                None => {
                    serde_json::json!({"task_id": dep, "status": "unknown", "result": Value::Null})
                }
            };
            inputs.insert(dep.clone(), value);
        }
        assignment.inputs = Some(inputs);
        Ok(())
    }
}

impl TaskQueue {
    /// Stages what a task's end tells (`task.completed` and the other hub
    /// topics, `notify`), written with the change that ended it.
    pub(super) fn tell_end(&self, task: &Task, old: TaskStatus) {
        if !task.status.is_terminal() || old.is_terminal() {
            return;
        }
        let ended = Ended {
            task_id: &task.id,
            generation: task.generation,
            status: task.status.as_str(),
            agent_id: task
                .assigned_to
                .as_deref()
                .or(task.attempts.last().map(|a| a.agent_id.as_str())),
            submitted_by: &task.submitted_by,
            correlation_id: task.correlation(),
            parent_task_id: task.parent_task_id.as_deref(),
            description: &task.description,
            metadata: &task.metadata,
            result: task.result.as_ref(),
            last_error: task.last_error.as_deref(),
            tokens_used: task.tokens_used,
            notify: task.notify,
            at: task.updated_at,
        };
        if let Err(e) = self.peers.outlet.task_ended(&ended) {
            tracing::error!(task_id = %task.id, error = %e, "the end of the task not staged for its notices");
        }
    }
}
