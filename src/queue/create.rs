//! The one path of creation: `create_tasks`, for submits, a completion's
//! follow-ups and standing-order runs (fixed ids). All or nothing: entries are
//! planned (existing task, or new), their dependencies resolved against existing
//! tasks and the batch's own `ref`s and checked for cycles; only then are the new
//! tasks written (staged in order, events first) and indexed.

use std::collections::HashMap;
use std::sync::Arc;

use super::change::{task_events, Settle};
use super::records;
use super::scopes::TaskScope;
use super::{QueueError, TaskQueue};
use crate::domain::completions::short_description;
use crate::domain::dependencies::cycle_members;
use crate::domain::task::Task;
use crate::ops::telemetry::Counter;
use crate::protocol::{FieldError, TaskSpec, MAX_FAN_IN};
use crate::util::{new_task_id, now_ms};

/// One accepted submission.
#[derive(Debug, Clone)]
pub(crate) struct Submitted {
    pub task_id: String,
    pub priority: u8,
    pub created_at: i64,
    /// An unfinished task with the same `dedupe_key` existed (or, for hub-made
    /// tasks with a fixed id, that task existed): this is that task, and nothing
    /// was created.
    pub existing: bool,
}

impl Submitted {
    fn of(task: &Task, existing: bool) -> Submitted {
        Submitted {
            task_id: task.id.clone(),
            priority: task.priority,
            created_at: task.created_at,
            existing,
        }
    }
}

/// A task to create: a validated spec plus what only the hub sets.
#[derive(Debug, Clone)]
pub(crate) struct NewTask {
    pub spec: TaskSpec,
    /// A fixed id (follow-ups, standing-order runs): creating it twice creates it
    /// once.
    pub id: Option<String>,
    /// (parent task id, correlation id) of a follow-up.
    pub parent: Option<(String, String)>,
}

impl NewTask {
    pub(crate) fn from_spec(spec: TaskSpec) -> NewTask {
        NewTask {
            spec,
            id: None,
            parent: None,
        }
    }
}

/// The id of the `index`-th follow-up of `parent`'s completion at `generation`:
/// the same every time, so a repeated or replayed completion creates nothing new.
pub fn follow_up_id(parent: &str, generation: u64, index: usize) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(format!("follow-up\0{parent}\0{generation}\0{index}"));
    format!("task-{}", hex::encode(&digest[..8]))
}

/// Where a batch entry's task comes from.
enum Planned {
    /// Answered with an existing task.
    Existing(Submitted),
    /// The `n`-th new task.
    New(usize),
}

/// A batch, planned: what each entry becomes, the new tasks with their ids, and
/// the `ref`s the batch names.
struct Plan {
    entries: Vec<Planned>,
    fresh: Vec<(NewTask, String)>,
    refs: HashMap<String, String>,
    /// The compiled write scopes of new tasks that declare one, by task id.
    scopes: Vec<(String, Arc<TaskScope>)>,
}

impl Plan {
    /// The batch entry of each new task (for field names in errors).
    fn entry_of_new(&self) -> Vec<usize> {
        self.entries
            .iter()
            .enumerate()
            .filter_map(|(i, p)| matches!(p, Planned::New(_)).then_some(i))
            .collect()
    }
}

impl TaskQueue {
    /// Creates tasks (one, a batch, or a completion's follow-ups) in one write,
    /// made durable by the caller's flush. `field` names entry `i` in errors.
    /// Dependencies are resolved against existing tasks and the batch's own `ref`s;
    /// an unknown one, a `ref` used twice or a cycle refuses the whole batch.
    pub(super) fn create_tasks(
        &mut self,
        items: Vec<NewTask>,
        submitted_by: &str,
        field: impl Fn(usize) -> String,
    ) -> Result<Vec<Submitted>, QueueError> {
        let now = now_ms();
        let mut errors = Vec::new();
        let mut plan = self.plan(items, now, &field, &mut errors)?;
        self.fan_in(&mut plan, &field, &mut errors)?;
        self.resolve_dependencies(&mut plan, &field, &mut errors);
        if !errors.is_empty() {
            return Err(QueueError::Invalid(errors));
        }
        let tasks = self.write_new(plan.fresh, submitted_by, now)?;
        for (id, scope) in plan.scopes {
            self.scopes.track_compiled(&id, scope);
        }
        let replies: Vec<Submitted> = plan
            .entries
            .into_iter()
            .map(|p| match p {
                Planned::Existing(s) => s,
                Planned::New(n) => Submitted::of(&tasks[n], false),
            })
            .collect();
        let settle = self.index_new(tasks, now);
        for s in replies.iter().filter(|s| !s.existing) {
            self.offer_live(&s.task_id, now);
        }
        self.settle_dependencies(settle);
        Ok(replies)
    }

    /// Decides for each entry: an existing task (its fixed id exists, or its
    /// `dedupe_key` is held, also by an earlier entry of the batch) or a new one.
    fn plan(
        &self,
        items: Vec<NewTask>,
        now: i64,
        field: &impl Fn(usize) -> String,
        errors: &mut Vec<FieldError>,
    ) -> Result<Plan, QueueError> {
        let mut entries = Vec::with_capacity(items.len());
        let mut fresh: Vec<(NewTask, String)> = Vec::new();
        let mut batch_keys: HashMap<String, usize> = HashMap::new();
        let mut refs: HashMap<String, String> = HashMap::new();
        let mut scopes = Vec::new();
        for (i, mut item) in items.into_iter().enumerate() {
            let existing = match &item.id {
                Some(id) => self.read(id)?.map(|t| Submitted::of(&t, true)),
                None => None,
            };
            let existing = existing.or_else(|| {
                let key = item.spec.dedupe_key.as_ref()?;
                self.dedupe_hit(key).or_else(|| {
                    // The same key twice in one batch: one task.
                    let n = *batch_keys.get(key)?;
                    Some(Submitted {
                        task_id: fresh[n].1.clone(),
                        priority: fresh[n].0.spec.priority,
                        created_at: now,
                        existing: true,
                    })
                })
            });
            let id = match &existing {
                Some(s) => s.task_id.clone(),
                None => item.id.clone().unwrap_or_else(new_task_id),
            };
            if let Some(r) = &item.spec.batch_ref {
                if refs.insert(r.clone(), id.clone()).is_some() {
                    errors.push(FieldError::new(
                        &format!("{}ref", field(i)),
                        "invalid_value",
                        format!("ref {r:?} names two entries of the batch"),
                    ));
                }
            }
            match existing {
                Some(s) => entries.push(Planned::Existing(s)),
                None => {
                    let spec = &item.spec;
                    match self.scopes.compile(
                        spec.repo.as_deref(),
                        &spec.write_paths,
                        &spec.read_paths,
                    ) {
                        Ok(Some(scope)) => scopes.push((id.clone(), scope)),
                        Ok(None) => {}
                        Err((name, e)) => errors.push(FieldError::new(
                            &format!("{}{name}", field(i)),
                            "invalid_glob",
                            e.to_string(),
                        )),
                    }
                    if let Some(key) = &item.spec.dedupe_key {
                        batch_keys.insert(key.clone(), fresh.len());
                    }
                    // A parent named by the submitter: its correlation, unless
                    // the submitter named one.
                    if let (None, Some(pid)) = (&item.parent, item.spec.parent_task_id.clone()) {
                        match self.read(&pid)? {
                            Some(parent) => {
                                let correlation = item
                                    .spec
                                    .correlation_id
                                    .clone()
                                    .unwrap_or_else(|| parent.correlation().to_string());
                                item.parent = Some((pid, correlation));
                            }
                            None => errors.push(FieldError::new(
                                &format!("{}parent_task_id", field(i)),
                                "invalid_value",
                                format!("no task {pid:?}"),
                            )),
                        }
                    }
                    entries.push(Planned::New(fresh.len()));
                    fresh.push((item, id));
                }
            }
        }
        Ok(Plan {
            entries,
            fresh,
            refs,
            scopes,
        })
    }

    /// The live task holding `key`, as a submit reply.
    fn dedupe_hit(&self, key: &str) -> Option<Submitted> {
        let id = self.index.dedupe.get(key)?;
        let task = self.read(id).ok().flatten()?;
        Some(Submitted::of(&task, true))
    }

    /// Rewrites each new task's `depends_on` to task ids (a batch `ref` or an
    /// existing task) and refuses unknown dependencies and cycles.
    fn resolve_dependencies(
        &self,
        plan: &mut Plan,
        field: &impl Fn(usize) -> String,
        errors: &mut Vec<FieldError>,
    ) {
        let new_ids: HashMap<String, usize> = plan
            .fresh
            .iter()
            .enumerate()
            .map(|(n, (_, id))| (id.clone(), n))
            .collect();
        let entry_of = plan.entry_of_new();
        let mut edges: Vec<Vec<usize>> = vec![Vec::new(); plan.fresh.len()];
        for (n, (item, _)) in plan.fresh.iter_mut().enumerate() {
            let mut resolved = Vec::with_capacity(item.spec.depends_on.len());
            for dep in &item.spec.depends_on {
                let id = match plan.refs.get(dep) {
                    Some(id) => id.clone(),
                    None if self.status_of(dep).is_some() || new_ids.contains_key(dep) => {
                        dep.clone()
                    }
                    None => {
                        errors.push(FieldError::new(
                            &format!("{}depends_on", field(entry_of[n])),
                            "unknown_dependency",
                            format!("{dep:?} is neither a task nor a ref of this batch"),
                        ));
                        continue;
                    }
                };
                if let Some(&m) = new_ids.get(&id) {
                    edges[n].push(m);
                }
                if !resolved.contains(&id) {
                    resolved.push(id);
                }
            }
            item.spec.depends_on = resolved;
            for input in &mut item.spec.inputs_from {
                if let Some(id) = plan.refs.get(input) {
                    *input = id.clone();
                }
            }
        }
        for n in cycle_members(&edges) {
            errors.push(FieldError::new(
                &format!("{}depends_on", field(entry_of[n])),
                "dependency_cycle",
                "the batch's dependencies form a cycle through this entry",
            ));
        }
    }

    /// Adds to each new task with `depends_on_correlation` every task of that
    /// correlation: the stored ones and the batch's own entries that join it
    /// (at most `MAX_FAN_IN`; none is refused, as a typo would wait forever).
    fn fan_in(
        &self,
        plan: &mut Plan,
        field: &impl Fn(usize) -> String,
        errors: &mut Vec<FieldError>,
    ) -> Result<(), QueueError> {
        let joining: Vec<(String, String)> = plan
            .fresh
            .iter()
            .filter_map(|(item, id)| {
                let c = item
                    .parent
                    .as_ref()
                    .map(|(_, c)| c.clone())
                    .or_else(|| item.spec.correlation_id.clone())?;
                Some((c, id.clone()))
            })
            .collect();
        let entry_of = plan.entry_of_new();
        for (n, (item, own_id)) in plan.fresh.iter_mut().enumerate() {
            let Some(correlation) = item.spec.depends_on_correlation.clone() else {
                continue;
            };
            let name = format!("{}depends_on_correlation", field(entry_of[n]));
            let mut members = self.correlation_members(&correlation, MAX_FAN_IN + 1)?;
            for (c, id) in &joining {
                if *c == correlation && !members.contains(id) {
                    members.push(id.clone());
                }
            }
            members.retain(|m| m != own_id);
            if members.is_empty() {
                errors.push(FieldError::new(
                    &name,
                    "unknown_dependency",
                    format!("no task has correlation id {correlation:?}"),
                ));
                continue;
            }
            for m in members {
                if !item.spec.depends_on.contains(&m) {
                    item.spec.depends_on.push(m);
                }
            }
            if item.spec.depends_on.len() > MAX_FAN_IN {
                errors.push(FieldError::new(
                    &name,
                    "too_many_dependencies",
                    format!("a task may wait for at most {MAX_FAN_IN} tasks"),
                ));
            }
        }
        Ok(())
    }

    /// The ids of up to `limit` stored tasks of `correlation` (with the task
    /// whose id names it).
    fn correlation_members(
        &self,
        correlation: &str,
        limit: usize,
    ) -> Result<Vec<String>, QueueError> {
        let mut ids = Vec::new();
        if self.status_of(correlation).is_some() {
            ids.push(correlation.to_string());
        }
        for seq in self.records.correlated(correlation, 0).take(limit) {
            let seq = seq?;
            let id = match self.index.live.get(&seq) {
                Some(entry) => Some(entry.id().to_string()),
                None => match self.records.get(seq)? {
                    Some(stored) => Some(records::decode_task(&stored)?.id),
                    None => None,
                },
            };
            if let Some(id) = id.filter(|id| !ids.contains(id)) {
                ids.push(id);
            }
        }
        Ok(ids)
    }

    /// Builds the new tasks and writes them, their events first.
    fn write_new(
        &mut self,
        fresh: Vec<(NewTask, String)>,
        submitted_by: &str,
        now: i64,
    ) -> Result<Vec<Task>, QueueError> {
        self.writable()?;
        let mut tasks = Vec::with_capacity(fresh.len());
        let mut events = Vec::new();
        for (item, id) in fresh {
            let seq = self.index.next_seq;
            self.index.next_seq += 1;
            let mut task = Task::new(id, seq, item.spec, submitted_by, self.policy.defaults, now);
            if let Some((parent, correlation)) = item.parent {
                task.parent_task_id = Some(parent);
                task.correlation_id = Some(correlation);
            }
            events.extend(task_events(&task, &task.history, submitted_by));
            tasks.push(task);
        }
        // The events first, then the records (staged writes reach sled in order).
        self.log.append(events)?;
        for task in &tasks {
            // A task that is its own correlation is found by its id.
            let joins = (task.correlation() != task.id).then(|| task.correlation());
            self.records.create(
                task.seq,
                &task.id,
                records::encode_spec(task),
                records::encode_state(task),
                joins,
            )?;
        }
        self.peers
            .telemetry
            .add(Counter::Submitted, tasks.len() as u64);
        Ok(tasks)
    }

    /// Puts the new tasks in memory, then tracks their dependencies (every new
    /// task is in place by then, so dependencies inside the batch resolve).
    /// Answers the tasks to block on a dependency that cannot complete.
    fn index_new(&mut self, tasks: Vec<Task>, now: i64) -> Vec<Settle> {
        let mut with_deps = Vec::new();
        for task in tasks {
            if let Some(key) = &task.dedupe_key {
                self.index.dedupe.insert(key.clone(), task.id.clone());
            }
            if self.peers.bus.watched() {
                let description = Some(short_description(&task.description));
                self.outbox
                    .announce(&task, "queued", task.created_at, description, None);
            }
            self.index.count(&task, None, now);
            if !task.depends_on.is_empty() {
                with_deps.push((task.id.clone(), task.depends_on.clone()));
            }
            self.index.insert_live(task);
        }
        let mut settle = Vec::new();
        for (task, depends_on) in with_deps {
            if let Some((dep, status)) = self.track_dependencies(&task, &depends_on) {
                settle.push(Settle::Block { task, dep, status });
            }
        }
        settle
    }

    /// Creates the follow-ups of a completion about to be accepted, before the
    /// completion is written: a crash can then leave follow-ups without their
    /// completion (the agent's retry of the report finds them by their fixed ids)
    /// but never a completion without its follow-ups. A repeat of an accepted
    /// completion creates nothing.
    pub(super) fn create_follow_ups(
        &mut self,
        task_id: &str,
        agent: &str,
        generation: u64,
        specs: Vec<TaskSpec>,
    ) -> Result<(), QueueError> {
        if specs.is_empty() {
            return Ok(());
        }
        let Some(parent) = self.index.whole(task_id) else {
            // Finished or unknown: `complete` answers the repeat or the refusal.
            return Ok(());
        };
        if parent.check_holder(agent, Some(generation)).is_err() {
            return Ok(());
        }
        let correlation = parent.correlation().to_string();
        let items = specs
            .into_iter()
            .enumerate()
            .map(|(i, spec)| NewTask {
                spec,
                id: Some(follow_up_id(task_id, generation, i)),
                parent: Some((task_id.to_string(), correlation.clone())),
            })
            .collect();
        self.create_tasks(items, agent, |i| format!("follow_ups[{i}]."))?;
        Ok(())
    }
}
