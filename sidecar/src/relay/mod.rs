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
//! - **Up to `slots` tasks at once**, each with its own worker and its own
//!   record file (slot 0: `current.json`). Another task while every slot is
//!   held → `task_rejected` reason `busy`.
//! - **Same task, new generation = same work.** When the hub reclaims a task
//!   (our socket dropped) and hands it straight back, the running work is
//!   adopted: no second wake, and a result already written is reported at the
//!   new generation. `task_reassign` therefore releases a task only after
//!   `release_grace_ms`; until then the woken processes keep running.
//!
//! Architecture invariant: the relay never blocks on I/O other than the small
//! fsynced state writes; waking and watching happen in the worker task.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use agentcom_protocol::{ClientFrame, ServerFrame, Spend, TaskAssignment, MAX_REASON};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{sleep_until, Instant};

use crate::config::Config;
use crate::inbox::Mail;
use crate::link::{self, LinkConfig, LinkEvent, Outbound};
use crate::results::AgentProgress;
use crate::state::{now_ms, Answer, Loaded, OutboxEntry, StateDir, TaskRecord};
use crate::worker::WorkerMsg;

mod acks;
mod tasks;

use acks::Kind;

/// Truncates text to the protocol's reason limit (longer is refused by the hub).
pub fn clip(text: &str) -> String {
    text.chars().take(MAX_REASON).collect()
}

/// One task the sidecar holds, in one slot, with its worker.
struct Held {
    /// Its slot: which record file keeps it.
    slot: usize,
    record: TaskRecord,
    /// (epoch, worker) while the agent works on it.
    worker: Option<(u64, JoinHandle<()>)>,
    next_progress: Option<Instant>,
    /// The agent's latest progress file, repeated by the lease renewals.
    progress: Option<AgentProgress>,
    /// The worker saw the agent's processes end: no more lease renewals.
    agent_gone: bool,
    /// The latest running total of spend sent to the hub.
    last_spend: Spend,
}

impl Held {
    /// The attempt's running total of spend: the earlier wakes' and what the
    /// agent's latest progress says of this one (`None`: it said nothing).
    fn spend_total(&self) -> Option<Spend> {
        let p = self.progress.as_ref()?;
        if p.tokens_used.is_none() && p.cost_usd.is_none() {
            return None;
        }
        Some(self.record.spend_base.plus(Spend {
            tokens: p.tokens_used.unwrap_or(0),
            cost_usd: p.cost_usd.unwrap_or(0.0),
        }))
    }
}

impl Held {
    fn new(slot: usize, record: TaskRecord) -> Held {
        Held {
            slot,
            record,
            worker: None,
            next_progress: None,
            progress: None,
            agent_gone: false,
            last_spend: Spend::default(),
        }
    }

    /// Until when a released task may still be handed straight back.
    fn release_deadline(&self) -> Option<Instant> {
        let until = self.record.released_until_ms?;
        let left = until.saturating_sub(now_ms());
        Some(Instant::now() + Duration::from_millis(left))
    }
}

pub struct Relay {
    cfg: Arc<Config>,
    store: StateDir,
    /// The tasks held, by task id.
    held: BTreeMap<String, Held>,
    outbox: BTreeMap<u64, OutboxEntry>,
    /// The identified connection, if any.
    conn: Option<u64>,
    /// Outbox entries already written on the current connection.
    sent: HashSet<u64>,
    /// Reports sent on the current connection that the hub will answer, in order.
    inflight: VecDeque<(String, Kind, u64)>,
    /// task id → the generations of the `task_recovering` frames sent for it
    /// on this connection and not yet answered, oldest first (the hub answers
    /// each, in order, with `task_continue`, `task_reassign` or an error).
    recovering: HashMap<String, VecDeque<u64>>,
    out_tx: mpsc::Sender<Outbound>,
    worker_tx: mpsc::UnboundedSender<(u64, WorkerMsg)>,
    epoch: u64,
    outbox_retry_at: Option<Instant>,
    /// How many tasks it may hold: what the hub granted in `identified`, else
    /// what the config asks (else 1).
    capacity: usize,
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
        urls: cfg.hub_urls.clone(),
        identify: ClientFrame::Identify {
            agent_id: cfg.agent_id.clone(),
            token: cfg.token.clone(),
            name: cfg.name.clone(),
            status: Some("ready".into()),
            capabilities: Some(cfg.capabilities.clone()),
            // Not configured: the hub grants what the token says.
            slots: cfg.slots,
            reserve_slot_for_standing: cfg.reserve_slot_for_standing.then_some(true),
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
        held: BTreeMap::new(),
        outbox: BTreeMap::new(),
        conn: None,
        sent: HashSet::new(),
        inflight: VecDeque::new(),
        recovering: HashMap::new(),
        out_tx,
        worker_tx,
        epoch: 0,
        outbox_retry_at: None,
        capacity: cfg.slots.unwrap_or(1) as usize,
        mail,
    };
    relay.start(loaded);
    tracing::info!(agent_id = %cfg.agent_id, hubs = ?cfg.hub_urls, "sidecar running");

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
    for held in relay.held.values_mut() {
        if let Some((_, h)) = held.worker.take() {
            h.abort();
        }
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
        for (slot, r) in loaded.records {
            tracing::info!(task_id = %r.task_id(), generation = r.generation(), phase = ?r.phase,
                released = r.is_released(), slot, "unfinished task found; recovering it with the hub");
            self.held
                .insert(r.task_id().to_string(), Held::new(slot, r));
        }
        self.outbox = loaded.outbox;
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

    fn next_deadline(&self) -> Instant {
        self.held
            .values()
            .flat_map(|h| [h.release_deadline(), h.next_progress])
            .chain([self.outbox_retry_at])
            .flatten()
            .min()
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600))
    }

    fn on_timer(&mut self) {
        let now = Instant::now();
        let released: Vec<String> = self
            .held
            .values()
            .filter(|h| h.record.released_until_ms.is_some_and(|u| u <= now_ms()))
            .map(|h| h.record.task_id().to_string())
            .collect();
        for task_id in released {
            self.finalize_release(&task_id);
        }
        let renew: Vec<String> = self
            .held
            .values()
            .filter(|h| h.next_progress.is_some_and(|t| t <= now))
            .map(|h| h.record.task_id().to_string())
            .collect();
        for task_id in renew {
            if let Some(h) = self.held.get_mut(&task_id) {
                h.next_progress = None;
            }
            self.progress_tick(&task_id);
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

    fn progress_tick(&mut self, task_id: &str) {
        let Some(h) = self.held.get(task_id) else {
            return;
        };
        let r = &h.record;
        if r.report.is_some() || r.is_released() || h.worker.is_none() || h.agent_gone {
            return;
        }
        // A renewal repeats the agent's latest progress (the hub keeps it on the
        // task); without one it carries nothing but the lease.
        let spend = h.spend_total();
        let frame = ClientFrame::TaskProgress {
            task_id: task_id.to_string(),
            progress: h.progress.as_ref().and_then(|p| p.percent),
            generation: Some(r.generation()),
            message: h.progress.as_ref().and_then(|p| p.message.clone()),
            tokens_used: spend.map(|s| s.tokens),
            cost_usd: spend.map(|s| s.cost_usd),
        };
        let interval = self.progress_interval(r.assignment.lease_ms);
        self.enqueue(task_id, frame);
        if let Some(h) = self.held.get_mut(task_id) {
            h.next_progress = Some(Instant::now() + interval);
        }
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

    // ---------------------------------------------------------------------
    // Link events
    // ---------------------------------------------------------------------

    pub fn on_link(&mut self, ev: LinkEvent) {
        match ev {
            LinkEvent::Online { conn, slots } => {
                self.capacity = slots.or(self.cfg.slots).unwrap_or(1) as usize;
                tracing::info!(slots = self.capacity, "tasks it may hold at once");
                self.on_online(conn)
            }
            LinkEvent::Offline { conn } => {
                if self.conn == Some(conn) {
                    self.mail.on_offline();
                    self.conn = None;
                    self.sent.clear();
                    self.inflight.clear();
                    self.recovering.clear();
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
        self.recovering.clear();
        let recover: Vec<(String, u64)> = self
            .held
            .values()
            .filter(|h| !h.record.is_released())
            .map(|h| (h.record.task_id().to_string(), h.record.generation()))
            .collect();
        for (task_id, generation) in recover {
            // With our generation: if the hub reclaimed the task meanwhile,
            // it answers task_reassign, and a fresh task_assign (which we
            // adopt) follows if it hands the task straight back. Without the
            // generation the hub could confirm an assignment whose push is
            // still on its way and then take it back as `agent_unavailable`.
            tracing::info!(task_id = %task_id, "sending task_recovering");
            self.recover(&task_id, generation);
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
            ServerFrame::TaskReassign { task_id, reason } => {
                self.on_reassign(&task_id, reason.as_deref())
            }
            ServerFrame::TaskAnswer {
                task_id,
                generation,
                question_id,
                answer,
                answered_by,
                kind,
                note,
                merge,
            } => {
                let approval = kind.as_deref() == Some("approval");
                let answer = Answer {
                    question_id,
                    answer,
                    answered_by,
                    kind,
                    note,
                };
                match answer.kind.as_deref() {
                    _ if approval => self.on_decision(&task_id, generation, answer, merge),
                    Some("budget") => self.on_resume(&task_id, generation, answer.question_id),
                    _ => self.on_answer(&task_id, generation, answer),
                }
            }
            ServerFrame::TaskCancelled {
                task_id, reason, ..
            } => self.on_cancelled(&task_id, &reason),
            ServerFrame::TaskPaused {
                task_id,
                generation,
                question_id,
                spent,
                budget,
                ..
            } => self.on_paused(&task_id, generation, question_id, (spent, budget)),
            ServerFrame::Error(e) => self.on_error(e),
            frame @ (ServerFrame::Message { .. } | ServerFrame::ChannelMessage { .. }) => {
                if let Some((message, mailbox_seq)) = frame.into_message() {
                    self.mail.on_push(message, mailbox_seq);
                }
            }
            _ => {}
        }
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
        budget_tokens: v["budget_tokens"].as_u64(),
        budget_usd: v["budget_usd"].as_f64(),
        approval: v["approval"]
            .as_str()
            .and_then(agentcom_protocol::ApprovalStage::parse),
        merge_on_approval: v["merge_on_approval"].as_bool() == Some(true),
        inputs: v["inputs"].as_object().cloned(),
        context: v["context"].as_object().cloned(),
    })
}
