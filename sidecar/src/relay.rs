//! The relay: the sidecar's one owner of task state.
//!
//! It takes frames from the [`link`](crate::link), events from the task's
//! [worker](crate::worker), and timers, one at a time, and is the only code that
//! changes the [`StateDir`]. Its rules:
//!
//! - **Durable before accepted.** An assignment is written (atomically, fsynced)
//!   before `task_accepted` goes out; if it cannot be written the task is
//!   rejected so the hub hands it on at once.
//! - **Outbox.** `task_complete` / `task_failed` stay in the outbox until the hub
//!   answers them (`task_ack`, or a refusal such as `stale_generation`, which is
//!   final and logged). Progress and wake results stay until written to an
//!   identified socket. Everything left is re-sent after each `identified`.
//! - **One task at a time.** Another task while one is held → `task_rejected`
//!   reason `busy`.
//! - **Same task, new generation = same work.** When the hub reclaims a task
//!   (our socket dropped) and hands it straight back, the running work is
//!   adopted: no second wake, and a result already written is reported at the
//!   new generation. `task_reassign` therefore releases a task only after
//!   `release_grace_ms`; until then the woken processes keep running.
//!
//! Architecture invariant: the relay never blocks on I/O other than the small
//! fsynced state writes; waking and watching happen in the worker task.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use agentcom_protocol::{ClientFrame, ErrorFrame, ServerFrame, TaskAssignment, MAX_REASON};
use serde_json::{json, Map, Value};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{sleep_until, Instant};

use crate::config::Config;
use crate::inbox::Mail;
use crate::link::{self, LinkConfig, LinkEvent, Outbound};
use crate::results::AgentProgress;
use crate::state::{
    now_ms, safe_task_id, FinalReport, Loaded, OutboxEntry, Phase, StateDir, TaskRecord,
};
use crate::wake;
use crate::worker::{self, WorkerMsg};

/// Which report a `task_ack` or a refusal answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Accept,
    Complete,
    Failed,
    Block,
    Reject,
    /// `usage_limited` for the task (final, like a failure that spends nothing).
    Usage,
}

impl Kind {
    fn of(frame: &ClientFrame) -> Option<(Kind, String, u64)> {
        match frame {
            ClientFrame::TaskAccepted {
                task_id,
                generation,
            } => Some((Kind::Accept, task_id.clone(), generation.unwrap_or(0))),
            ClientFrame::TaskComplete {
                task_id,
                generation,
                ..
            } => Some((Kind::Complete, task_id.clone(), *generation)),
            ClientFrame::TaskFailed {
                task_id,
                generation,
                ..
            } => Some((Kind::Failed, task_id.clone(), *generation)),
            ClientFrame::TaskRejected {
                task_id,
                generation,
                ..
            } => Some((Kind::Reject, task_id.clone(), generation.unwrap_or(0))),
            ClientFrame::TaskBlocked {
                task_id,
                generation,
                ..
            } => Some((Kind::Block, task_id.clone(), *generation)),
            ClientFrame::UsageLimited {
                task_id: Some(task_id),
                generation,
                ..
            } => Some((Kind::Usage, task_id.clone(), generation.unwrap_or(0))),
            _ => None,
        }
    }
}

/// Truncates text to the protocol's reason limit (longer is refused by the hub).
pub fn clip(text: &str) -> String {
    text.chars().take(MAX_REASON).collect()
}

pub struct Relay {
    cfg: Arc<Config>,
    store: StateDir,
    record: Option<TaskRecord>,
    outbox: BTreeMap<u64, OutboxEntry>,
    /// The identified connection, if any.
    conn: Option<u64>,
    /// Outbox entries already written on the current connection.
    sent: HashSet<u64>,
    /// Reports sent on the current connection that the hub will answer, in order.
    inflight: VecDeque<(String, Kind, u64)>,
    /// (task_id, generation) of the last `task_recovering` sent.
    recovering: Option<(String, u64)>,
    out_tx: mpsc::Sender<Outbound>,
    worker_tx: mpsc::UnboundedSender<(u64, WorkerMsg)>,
    worker: Option<(u64, JoinHandle<()>)>,
    epoch: u64,
    next_progress: Option<Instant>,
    outbox_retry_at: Option<Instant>,
    /// The agent's latest progress file, repeated by the lease renewals.
    progress: Option<AgentProgress>,
    /// The worker saw the agent's processes end: no more lease renewals.
    agent_gone: bool,
    /// The agent's inbox.
    mail: Mail,
}

/// Runs the sidecar until SIGTERM / SIGINT.
pub async fn run(cfg: Config) -> Result<(), String> {
    let (store, loaded) = StateDir::open(&cfg.state_dir).map_err(|e| {
        format!(
            "cannot open the state directory {}: {e}",
            cfg.state_dir.display()
        )
    })?;
    std::fs::create_dir_all(&cfg.results_dir).map_err(|e| {
        format!(
            "cannot create the results directory {}: {e}",
            cfg.results_dir.display()
        )
    })?;
    let cfg = Arc::new(cfg);
    let (link_tx, mut link_rx) = mpsc::channel::<LinkEvent>(1024);
    let (out_tx, out_rx) = mpsc::channel::<Outbound>(1024);
    let (worker_tx, mut worker_rx) = mpsc::unbounded_channel();
    let (mail_tx, mut mail_rx) = mpsc::unbounded_channel();
    let mail = Mail::open(Arc::clone(&cfg), mail_tx)
        .map_err(|e| format!("cannot open the inbox in {}: {e}", cfg.state_dir.display()))?;
    let link_cfg = LinkConfig {
        url: cfg.hub_url.clone(),
        identify: ClientFrame::Identify {
            agent_id: cfg.agent_id.clone(),
            token: cfg.token.clone(),
            name: cfg.name.clone(),
            status: Some("ready".into()),
            capabilities: Some(cfg.capabilities.clone()),
        },
        ping_interval: cfg.timings.ping_interval,
        pong_timeout: cfg.timings.pong_timeout,
        reconnect_initial: cfg.timings.reconnect_initial,
        reconnect_max: cfg.timings.reconnect_max,
    };
    let link_task = tokio::spawn(link::run(link_cfg, link_tx, out_rx));
    let mut relay = Relay {
        cfg: Arc::clone(&cfg),
        store,
        record: None,
        outbox: BTreeMap::new(),
        conn: None,
        sent: HashSet::new(),
        inflight: VecDeque::new(),
        recovering: None,
        out_tx,
        worker_tx,
        worker: None,
        epoch: 0,
        next_progress: None,
        outbox_retry_at: None,
        progress: None,
        agent_gone: false,
        mail,
    };
    relay.start(loaded);
    tracing::info!(agent_id = %cfg.agent_id, hub = %cfg.hub_url, "sidecar running");

    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| format!("cannot install the SIGTERM handler: {e}"))?;
    loop {
        let deadline = relay.next_deadline();
        tokio::select! {
            ev = link_rx.recv() => match ev {
                Some(ev) => relay.on_link(ev),
                None => return Err("the hub connection task ended unexpectedly".into()),
            },
            Some((epoch, msg)) = worker_rx.recv() => relay.on_worker(epoch, msg),
            Some(ev) = mail_rx.recv() => relay.mail.on_event(ev),
            _ = sleep_until(deadline) => relay.on_timer(),
            _ = tokio::signal::ctrl_c() => break,
            _ = sigterm.recv() => break,
        }
    }
    tracing::info!("stopping; the task state is kept for the next start");
    link_task.abort();
    if let Some((_, h)) = relay.worker.take() {
        h.abort();
    }
    Ok(())
}

impl Relay {
    fn start(&mut self, loaded: Loaded) {
        for (original, moved, why) in &loaded.quarantined {
            tracing::error!(file = %original.display(), moved_to = %moved.display(), error = %why,
                "corrupt state file moved aside; inspect it: a task it held may need attention on the hub");
            eprintln!(
                "agentcom-sidecar: corrupt state file {} moved to {} ({why})",
                original.display(),
                moved.display()
            );
        }
        self.record = loaded.record;
        self.outbox = loaded.outbox;
        if let Some(r) = &self.record {
            tracing::info!(task_id = %r.task_id(), generation = r.generation(), phase = ?r.phase,
                released = r.is_released(), "unfinished task found; recovering it with the hub");
        }
        if !self.outbox.is_empty() {
            tracing::info!(
                entries = self.outbox.len(),
                "reports waiting in the outbox; they are sent after identify"
            );
        }
    }

    // ---------------------------------------------------------------------
    // Timers
    // ---------------------------------------------------------------------

    fn release_deadline(&self) -> Option<Instant> {
        let until = self.record.as_ref()?.released_until_ms?;
        let left = until.saturating_sub(now_ms());
        Some(Instant::now() + Duration::from_millis(left))
    }

    fn next_deadline(&self) -> Instant {
        [
            self.release_deadline(),
            self.next_progress,
            self.outbox_retry_at,
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600))
    }

    fn on_timer(&mut self) {
        let now = Instant::now();
        if self
            .record
            .as_ref()
            .and_then(|r| r.released_until_ms)
            .is_some_and(|until| until <= now_ms())
        {
            self.finalize_release();
        }
        if self.next_progress.is_some_and(|t| t <= now) {
            self.next_progress = None;
            self.progress_tick();
        }
        if self.outbox_retry_at.is_some_and(|t| t <= now) {
            self.outbox_retry_at = None;
            self.sent
                .retain(|seq| self.outbox.get(seq).is_some_and(|e| !e.is_final()));
            self.flush_outbox();
        }
    }

    fn progress_interval(&self, lease_ms: u64) -> Duration {
        self.cfg.timings.progress_interval.unwrap_or_else(|| {
            Duration::from_millis(lease_ms / 3)
                .clamp(Duration::from_millis(100), Duration::from_secs(60))
        })
    }

    fn progress_tick(&mut self) {
        let Some(r) = &self.record else { return };
        if r.report.is_some() || r.is_released() || self.worker.is_none() || self.agent_gone {
            return;
        }
        // A renewal repeats the agent's latest progress (the hub keeps it on the
        // task); without one it carries nothing but the lease.
        let frame = ClientFrame::TaskProgress {
            task_id: r.task_id().to_string(),
            progress: self.progress.as_ref().and_then(|p| p.percent),
            generation: Some(r.generation()),
            message: self.progress.as_ref().and_then(|p| p.message.clone()),
        };
        let task_id = r.task_id().to_string();
        let interval = self.progress_interval(r.assignment.lease_ms);
        self.enqueue(&task_id, frame);
        self.next_progress = Some(Instant::now() + interval);
    }

    // ---------------------------------------------------------------------
    // Sending
    // ---------------------------------------------------------------------

    /// Writes a frame to the current connection; false when offline or full.
    fn send_now(&mut self, frame: &ClientFrame, seq: Option<u64>) -> bool {
        let Some(conn) = self.conn else { return false };
        let text = match serde_json::to_string(frame) {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(error = %e, "cannot encode a frame");
                return false;
            }
        };
        match self.out_tx.try_send(Outbound { conn, text, seq }) {
            Ok(()) => {
                if let Some((kind, task_id, generation)) = Kind::of(frame) {
                    self.inflight.push_back((task_id, kind, generation));
                }
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "outbound queue unavailable; the outbox will re-send");
                false
            }
        }
    }

    /// Durably queues a report and sends it if online. Progress is coalesced:
    /// only the newest progress of a task waits.
    fn enqueue(&mut self, task_id: &str, frame: ClientFrame) {
        if matches!(frame, ClientFrame::TaskProgress { .. }) {
            let old: Vec<u64> = self
                .outbox
                .values()
                .filter(|e| {
                    e.task_id == task_id && matches!(e.frame, ClientFrame::TaskProgress { .. })
                })
                .map(|e| e.seq)
                .collect();
            for seq in old {
                self.drop_entry(seq);
            }
        }
        match self.store.push_outbox(task_id, frame.clone()) {
            Ok(entry) => {
                let seq = entry.seq;
                self.outbox.insert(seq, entry);
                if self.send_now(&frame, Some(seq)) {
                    self.sent.insert(seq);
                }
            }
            Err(e) => {
                tracing::error!(task_id, error = %e, "cannot write the outbox; sending without durability");
                self.send_now(&frame, None);
            }
        }
    }

    fn drop_entry(&mut self, seq: u64) {
        if self.outbox.remove(&seq).is_some() {
            if let Err(e) = self.store.remove_outbox(seq) {
                tracing::error!(seq, error = %e, "cannot remove an outbox entry");
            }
        }
        self.sent.remove(&seq);
    }

    /// Drops a task's outbox entries (`finals`: only complete/failed; else all).
    fn drop_entries_for(&mut self, task_id: &str, only_finals: bool) {
        let seqs: Vec<u64> = self
            .outbox
            .values()
            .filter(|e| e.task_id == task_id && (!only_finals || e.is_final()))
            .map(|e| e.seq)
            .collect();
        for seq in seqs {
            self.drop_entry(seq);
        }
    }

    /// Sends every entry not yet written on this connection, oldest first.
    fn flush_outbox(&mut self) {
        if self.conn.is_none() {
            return;
        }
        let pending: Vec<OutboxEntry> = self
            .outbox
            .values()
            .filter(|e| !self.sent.contains(&e.seq))
            .cloned()
            .collect();
        for entry in pending {
            if self.send_now(&entry.frame, Some(entry.seq)) {
                self.sent.insert(entry.seq);
            } else {
                break;
            }
        }
    }

    /// Rewrites a task's waiting reports to `generation` (the hub handed the same
    /// task back at a new generation).
    fn regenerate_entries(&mut self, task_id: &str, generation: u64) {
        let seqs: Vec<u64> = self
            .outbox
            .values()
            .filter(|e| e.task_id == task_id)
            .map(|e| e.seq)
            .collect();
        for seq in seqs {
            if let Some(entry) = self.outbox.get_mut(&seq) {
                entry.set_generation(generation);
                if let Err(e) = self.store.write_outbox(entry) {
                    tracing::error!(seq, error = %e, "cannot rewrite an outbox entry");
                }
                self.sent.remove(&seq);
            }
        }
    }

    fn save_record(&self) {
        if let Some(r) = &self.record {
            if let Err(e) = self.store.save_record(r) {
                tracing::error!(task_id = %r.task_id(), error = %e, "cannot persist the task state");
            }
        }
    }

    fn clear_record(&mut self) {
        self.stop_worker();
        self.next_progress = None;
        self.progress = None;
        if let Some(r) = self.record.take() {
            self.store
                .archive_results(&self.cfg.results_dir, r.task_id(), r.generation());
            if let Err(e) = self.store.clear_record() {
                tracing::error!(task_id = %r.task_id(), error = %e, "cannot remove the task state");
            }
        }
    }

    // ---------------------------------------------------------------------
    // Link events
    // ---------------------------------------------------------------------

    pub fn on_link(&mut self, ev: LinkEvent) {
        match ev {
            LinkEvent::Online { conn } => self.on_online(conn),
            LinkEvent::Offline { conn } => {
                if self.conn == Some(conn) {
                    self.mail.on_offline();
                    self.conn = None;
                    self.sent.clear();
                    self.inflight.clear();
                    self.recovering = None;
                }
            }
            LinkEvent::Frame { conn, text } => {
                if self.conn == Some(conn) {
                    self.on_frame(&text);
                }
            }
            LinkEvent::Written { conn, seq } => {
                if self.conn == Some(conn) && self.outbox.get(&seq).is_some_and(|e| !e.is_final()) {
                    self.drop_entry(seq);
                }
            }
        }
    }

    fn on_online(&mut self, conn: u64) {
        self.conn = Some(conn);
        self.mail.on_online();
        self.sent.clear();
        self.inflight.clear();
        self.recovering = None;
        if let Some(r) = &self.record {
            if !r.is_released() {
                // With our generation: if the hub reclaimed the task meanwhile,
                // it answers task_reassign, and a fresh task_assign (which we
                // adopt) follows if it hands the task straight back. Without the
                // generation the hub could confirm an assignment whose push is
                // still on its way and then take it back as `agent_unavailable`.
                let frame = ClientFrame::TaskRecovering {
                    task_id: r.task_id().to_string(),
                    generation: Some(r.generation()),
                };
                self.recovering = Some((r.task_id().to_string(), r.generation()));
                tracing::info!(task_id = %r.task_id(), "sending task_recovering");
                self.send_now(&frame, None);
            }
        }
        self.flush_outbox();
    }

    fn on_frame(&mut self, text: &str) {
        match serde_json::from_str::<ServerFrame>(text) {
            Ok(frame) => self.on_server_frame(frame),
            Err(_) => {
                let v: Value = serde_json::from_str(text).unwrap_or(Value::Null);
                if v["type"] == "task_assign" {
                    if let Some(a) = lenient_assignment(&v) {
                        return self.on_assign(a);
                    }
                    tracing::warn!("unusable task_assign frame ignored");
                    return;
                }
                tracing::debug!(frame_type = %v["type"], "frame ignored");
            }
        }
    }

    fn on_server_frame(&mut self, frame: ServerFrame) {
        match frame {
            ServerFrame::TaskAssign(a) => self.on_assign(a),
            ServerFrame::TaskAck { task_id, status } => self.on_ack(&task_id, &status),
            ServerFrame::TaskContinue {
                task_id,
                generation,
            } => self.on_continue(&task_id, generation),
            ServerFrame::TaskReassign { task_id } => self.on_reassign(&task_id),
            ServerFrame::TaskCancelled {
                task_id, reason, ..
            } => self.on_cancelled(&task_id, &reason),
            ServerFrame::Error(e) => self.on_error(e),
            frame @ (ServerFrame::Message { .. } | ServerFrame::ChannelMessage { .. }) => {
                if let Some((message, mailbox_seq)) = frame.into_message() {
                    self.mail.on_push(message, mailbox_seq);
                }
            }
            _ => {}
        }
    }

    // ---------------------------------------------------------------------
    // Task frames
    // ---------------------------------------------------------------------

    fn on_assign(&mut self, a: TaskAssignment) {
        if !safe_task_id(&a.task_id) {
            tracing::warn!(task_id = ?a.task_id, "task id unusable as a file name; rejecting");
            self.reject(&a, "invalid_task_id");
            return;
        }
        match &self.record {
            Some(r) if r.task_id() == a.task_id => self.adopt(a),
            Some(r) if r.is_released() => {
                self.finalize_release();
                self.take(a);
            }
            Some(r) => {
                tracing::info!(task_id = %a.task_id, holding = %r.task_id(), "busy; rejecting");
                self.reject(&a, "busy");
            }
            None => self.take(a),
        }
    }

    fn reject(&mut self, a: &TaskAssignment, reason: &str) {
        let frame = ClientFrame::TaskRejected {
            task_id: a.task_id.clone(),
            reason: Some(clip(reason)),
            generation: Some(a.generation),
        };
        self.send_now(&frame, None);
    }

    fn accept(&mut self, task_id: &str, generation: u64) {
        let frame = ClientFrame::TaskAccepted {
            task_id: task_id.to_string(),
            generation: Some(generation),
        };
        self.send_now(&frame, None);
    }

    /// A new task: persist, accept, then work (or complete the onboarding check).
    fn take(&mut self, a: TaskAssignment) {
        let record = TaskRecord::new(a);
        let task_id = record.task_id().to_string();
        let generation = record.generation();
        let persisted = serde_json::to_value(&record.assignment)
            .map_err(std::io::Error::other)
            .and_then(|json| self.store.write_task_json(&task_id, &json))
            .and_then(|_| self.store.save_record(&record));
        if let Err(e) = persisted {
            tracing::error!(task_id = %task_id, error = %e, "cannot persist the assignment; rejecting it");
            self.reject(&record.assignment, &format!("state_write_failed: {e}"));
            return;
        }
        tracing::info!(task_id = %task_id, generation, onboarding = record.onboarding, "task persisted; accepting");
        let onboarding = record.onboarding;
        self.record = Some(record);
        self.accept(&task_id, generation);
        if onboarding {
            let mut result = Map::new();
            result.insert("status".into(), json!("success"));
            result.insert("onboarding".into(), json!("ok"));
            result.insert("agent_id".into(), json!(self.cfg.agent_id));
            self.finish(FinalReport::Complete {
                result,
                tokens_used: None,
                follow_ups: Vec::new(),
            });
        } else {
            self.start_worker();
        }
    }

    /// The hub handed us the task we already hold, at a (possibly) new generation.
    fn adopt(&mut self, a: TaskAssignment) {
        let Some(r) = self.record.as_mut() else {
            return;
        };
        let old = r.generation();
        let generation = a.generation;
        let task_id = a.task_id.clone();
        r.assignment = a;
        r.released_until_ms = None;
        let has_report = r.report.clone();
        tracing::info!(task_id = %task_id, old_generation = old, generation, "same task assigned again; adopting the work in progress");
        self.save_record();
        self.accept(&task_id, generation);
        // Also recover at the new generation: if the hub answered our recovery of
        // the old generation after it had already re-assigned the task, it may
        // consider this agent idle; `task_recovering` puts it back to `working`.
        self.recovering = Some((task_id.clone(), generation));
        self.send_now(
            &ClientFrame::TaskRecovering {
                task_id: task_id.clone(),
                generation: Some(generation),
            },
            None,
        );
        self.regenerate_entries(&task_id, generation);
        match has_report {
            Some(report) => {
                let has_final = self
                    .outbox
                    .values()
                    .any(|e| e.task_id == task_id && e.is_final());
                if !has_final {
                    self.enqueue(&task_id, report.frame(&task_id, generation));
                }
            }
            None => {
                if self.worker.is_none() {
                    self.start_worker();
                }
            }
        }
        self.flush_outbox();
    }

    fn on_continue(&mut self, task_id: &str, generation: u64) {
        let Some(r) = self.record.as_mut() else {
            tracing::debug!(task_id, "task_continue for no task");
            return;
        };
        if r.task_id() != task_id || r.is_released() {
            return;
        }
        self.recovering = None;
        let changed = r.generation() != generation;
        if changed {
            r.assignment.generation = generation;
        }
        let needs_worker = r.report.is_none() && self.worker.is_none();
        tracing::info!(task_id, generation, "hub confirmed the task; continuing");
        if changed {
            self.save_record();
            self.regenerate_entries(task_id, generation);
        }
        if needs_worker {
            self.start_worker();
        }
        self.flush_outbox();
    }

    fn on_reassign(&mut self, task_id: &str) {
        let Some(r) = &self.record else { return };
        if r.task_id() != task_id || r.is_released() {
            return;
        }
        // Only an answer to the recovery of this very generation counts: after
        // adopting a newer assignment the answer is stale.
        if self.recovering.as_ref() != Some(&(task_id.to_string(), r.generation())) {
            // The hub pushed the task again (new generation) before it answered
            // our recovery of the old one; that answer can leave the hub thinking
            // we are idle. Recover again at the generation we now hold, so the
            // hub's view of this agent is `working` on it.
            tracing::info!(
                task_id,
                generation = r.generation(),
                "stale task_reassign; re-syncing with task_recovering"
            );
            let frame = ClientFrame::TaskRecovering {
                task_id: task_id.to_string(),
                generation: Some(r.generation()),
            };
            self.recovering = Some((task_id.to_string(), r.generation()));
            self.send_now(&frame, None);
            return;
        }
        self.recovering = None;
        self.release("task_reassign");
    }

    /// The task is no longer ours; keep it for `release_grace` in case the hub
    /// hands it straight back.
    fn release(&mut self, why: &str) {
        self.stop_worker();
        self.next_progress = None;
        let grace = self.cfg.timings.release_grace;
        let Some(r) = self.record.as_mut() else {
            return;
        };
        r.released_until_ms = Some(now_ms() + grace.as_millis() as u64);
        let task_id = r.task_id().to_string();
        tracing::info!(task_id = %task_id, reason = why, grace_ms = grace.as_millis() as u64, "task released by the hub");
        self.save_record();
        self.drop_entries_for(&task_id, false);
    }

    fn finalize_release(&mut self) {
        let Some(r) = &self.record else { return };
        let task_id = r.task_id().to_string();
        tracing::info!(task_id = %task_id, "released task dropped");
        if r.report.is_none() {
            self.stop_group(r.pgid);
        }
        self.drop_entries_for(&task_id, false);
        self.clear_record();
    }

    fn on_cancelled(&mut self, task_id: &str, reason: &str) {
        let Some(r) = &self.record else { return };
        if r.task_id() != task_id {
            return;
        }
        tracing::info!(
            task_id,
            reason,
            "task cancelled by the hub; stopping the agent's processes"
        );
        self.stop_group(r.pgid);
        self.drop_entries_for(task_id, false);
        self.clear_record();
    }

    fn stop_group(&self, pgid: Option<i32>) {
        if let Some(pgid) = pgid {
            let grace = self.cfg.timings.kill_grace;
            tokio::spawn(wake::stop_group(pgid, grace));
        }
    }

    fn pop_inflight(&mut self, task_id: &str, kind: Kind) -> Option<u64> {
        let pos = self
            .inflight
            .iter()
            .position(|(t, k, _)| t == task_id && *k == kind)?;
        self.inflight.remove(pos).map(|(_, _, g)| g)
    }

    fn on_ack(&mut self, task_id: &str, status: &str) {
        let kind = match status {
            "accepted" => Kind::Accept,
            "complete" => Kind::Complete,
            "retried" | "dead_letter" => Kind::Failed,
            "blocked" => Kind::Block,
            "rejected" => Kind::Reject,
            "usage_limited" => Kind::Usage,
            _ => return,
        };
        self.pop_inflight(task_id, kind);
        if matches!(
            kind,
            Kind::Complete | Kind::Failed | Kind::Block | Kind::Usage
        ) {
            tracing::info!(task_id, status, "report acknowledged by the hub");
            self.drop_entries_for(task_id, true);
            if self.record.as_ref().is_some_and(|r| r.task_id() == task_id) {
                self.drop_entries_for(task_id, false);
                self.clear_record();
            }
        }
    }

    fn on_error(&mut self, e: ErrorFrame) {
        let Some(task_id) = e.task_id.clone() else {
            if e.error == "hub_unavailable" {
                tracing::warn!("hub could not take a report; re-sending later");
                self.outbox_retry_at = Some(Instant::now() + self.cfg.timings.outbox_retry);
            } else {
                tracing::warn!(error = %e.error, "error frame from the hub");
            }
            return;
        };
        let (prefix, reason) = e.error.split_once(": ").unwrap_or((e.error.as_str(), ""));
        let kind = match prefix {
            "task_accept_failed" => Kind::Accept,
            "task_complete_failed" => Kind::Complete,
            "task_fail_failed" => Kind::Failed,
            "task_block_failed" => Kind::Block,
            "task_reject_failed" => Kind::Reject,
            "usage_limited_failed" => Kind::Usage,
            _ => {
                tracing::warn!(task_id = %task_id, error = %e.error, "error frame from the hub");
                return;
            }
        };
        if reason == "hub_unavailable" {
            self.pop_inflight(&task_id, kind);
            self.outbox_retry_at = Some(Instant::now() + self.cfg.timings.outbox_retry);
            return;
        }
        let sent_generation = self.pop_inflight(&task_id, kind);
        let ours = self.record.as_ref().filter(|r| r.task_id() == task_id);
        let current = ours.is_some_and(|r| Some(r.generation()) == sent_generation);
        let released = ours.is_some_and(|r| r.is_released());
        match kind {
            Kind::Accept => {
                tracing::warn!(task_id = %task_id, error = %e.error, "the hub refused our acceptance");
                if current && !released {
                    self.release(&e.error);
                }
            }
            Kind::Complete | Kind::Failed | Kind::Block | Kind::Usage => {
                if ours.is_some() && !current {
                    tracing::debug!(task_id = %task_id, error = %e.error, "refusal of an older generation ignored");
                    return;
                }
                tracing::error!(task_id = %task_id, error = %e.error,
                    "the hub refused the report; it is final, so the report is dropped from the outbox");
                self.drop_entries_for(&task_id, true);
                if current && !released {
                    self.release(&e.error);
                }
            }
            Kind::Reject => {
                tracing::warn!(task_id = %task_id, error = %e.error, "the hub refused a rejection");
            }
        }
    }

    // ---------------------------------------------------------------------
    // Worker
    // ---------------------------------------------------------------------

    fn stop_worker(&mut self) {
        if let Some((_, h)) = self.worker.take() {
            h.abort();
        }
    }

    fn start_worker(&mut self) {
        self.stop_worker();
        let Some(r) = &self.record else { return };
        if r.report.is_some() {
            return;
        }
        self.epoch += 1;
        let epoch = self.epoch;
        let ctx = worker::WorkerCtx {
            cfg: Arc::clone(&self.cfg),
            record: r.clone(),
            task_json_file: self.store.task_json_path(r.task_id()),
            wake_log: self.store.wake_log_path(r.task_id()),
            git_record: self.store.git_record_path(r.task_id()),
            epoch,
            tx: self.worker_tx.clone(),
        };
        let interval = self.progress_interval(r.assignment.lease_ms);
        self.agent_gone = false;
        self.worker = Some((epoch, tokio::spawn(worker::work(ctx))));
        self.next_progress = Some(Instant::now() + interval);
    }

    fn on_worker(&mut self, epoch: u64, msg: WorkerMsg) {
        if self.worker.as_ref().map(|(e, _)| *e) != Some(epoch) {
            return;
        }
        let Some(r) = self.record.as_mut() else {
            return;
        };
        let task_id = r.task_id().to_string();
        match msg {
            WorkerMsg::Phase {
                phase,
                wake_attempts,
                pgid,
                confirm_deadline_ms,
            } => {
                r.phase = phase;
                r.wake_attempts = wake_attempts;
                if pgid.is_some() {
                    r.pgid = pgid;
                }
                r.confirm_deadline_ms = confirm_deadline_ms;
                self.save_record();
            }
            WorkerMsg::Wake {
                attempt,
                success,
                error,
            } => {
                let frame = ClientFrame::WakeResult {
                    task_id: task_id.clone(),
                    status: if success { "success" } else { "failed" }.into(),
                    attempt: Some(u64::from(attempt)),
                    error: error.as_deref().map(clip),
                    reason: (!success).then(|| "wake_failed".to_string()),
                };
                self.enqueue(&task_id, frame);
            }
            WorkerMsg::Progress(p) => {
                let generation = r.generation();
                let frame = ClientFrame::TaskProgress {
                    task_id: task_id.clone(),
                    progress: p.percent,
                    generation: Some(generation),
                    message: p.message.clone(),
                };
                self.progress = Some(p);
                self.enqueue(&task_id, frame);
            }
            WorkerMsg::AgentGone => {
                self.agent_gone = true;
                self.next_progress = None;
            }
            WorkerMsg::Final(report) => {
                self.worker = None;
                self.finish(report);
            }
        }
    }

    /// The outcome is known: persist it, then report it through the outbox.
    fn finish(&mut self, report: FinalReport) {
        self.stop_worker();
        self.next_progress = None;
        let Some(r) = self.record.as_mut() else {
            return;
        };
        r.report = Some(report.clone());
        r.phase = Phase::Reporting;
        let task_id = r.task_id().to_string();
        let generation = r.generation();
        match &report {
            FinalReport::Complete { .. } => {
                tracing::info!(task_id = %task_id, "result ready; reporting task_complete")
            }
            FinalReport::Failed { reason, .. } => {
                tracing::warn!(task_id = %task_id, reason = %reason, "reporting task_failed")
            }
            FinalReport::Blocked { reason, needs } => {
                tracing::warn!(task_id = %task_id, reason = %reason, needs = ?needs, "reporting task_blocked")
            }
            FinalReport::UsageLimited { resets_at, .. } => {
                tracing::warn!(task_id = %task_id, resets_at, "reporting usage_limited")
            }
        }
        self.save_record();
        self.drop_entries_for(&task_id, false);
        self.enqueue(&task_id, report.frame(&task_id, generation));
    }
}

/// The strings of a JSON list (nothing when it is not one).
fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|c| c.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// A `task_assign` from a hub that leaves out the extension fields.
fn lenient_assignment(v: &Value) -> Option<TaskAssignment> {
    Some(TaskAssignment {
        task_id: v["task_id"].as_str()?.to_string(),
        description: v["description"].as_str().unwrap_or_default().to_string(),
        metadata: v.get("metadata").cloned().unwrap_or(Value::Null),
        generation: v["generation"].as_u64().unwrap_or(0),
        assigned_at: v["assigned_at"].as_i64().unwrap_or(0),
        priority: v["priority"]
            .as_u64()
            .and_then(|p| u8::try_from(p).ok())
            .unwrap_or(2),
        attempt: v["attempt"]
            .as_u64()
            .and_then(|p| u32::try_from(p).ok())
            .unwrap_or(1),
        lease_ms: v["lease_ms"].as_u64().unwrap_or(300_000),
        needed_capabilities: strings(&v["needed_capabilities"]),
        stall_ms: v["stall_ms"].as_u64(),
        max_runtime_ms: v["max_runtime_ms"].as_u64(),
        repo: v["repo"].as_str().map(str::to_string),
        write_paths: strings(&v["write_paths"]),
        read_paths: strings(&v["read_paths"]),
    })
}
