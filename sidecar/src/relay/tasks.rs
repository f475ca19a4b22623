//! The relay's task frames and workers: each held task in its slot, from
//! `task_assign` (persist, accept, wake) through its worker's events to the
//! final report, and what the hub says of it (continue, reassign, cancel).

use std::sync::Arc;

use agentcom_protocol::{ClientFrame, Limit, Spend, TaskAssignment};
use serde_json::{json, Map};
use tokio::time::Instant;

use super::{clip, Held, Relay};
use crate::state::{now_ms, safe_task_id, Answer, FinalReport, PausedFor, Phase, TaskRecord};
use crate::wake;
use crate::worker::{self, WorkerMsg};

impl Relay {
    fn save_record(&self, task_id: &str) {
        if let Some(h) = self.held.get(task_id) {
            if let Err(e) = self.store.save_record(h.slot, &h.record) {
                tracing::error!(task_id, error = %e, "cannot persist the task state");
            }
        }
    }

    /// The task is done with: its worker stops, its results are archived and
    /// its slot is free.
    pub(super) fn clear_record(&mut self, task_id: &str) {
        self.stop_worker(task_id);
        self.recovering.remove(task_id);
        if let Some(h) = self.held.remove(task_id) {
            self.store
                .archive_results(&self.cfg.results_dir, task_id, h.record.generation());
            if let Err(e) = self.store.clear_record(h.slot) {
                tracing::error!(task_id, error = %e, "cannot remove the task state");
            }
        }
    }

    /// Sends `task_recovering` for a task at `generation` and remembers it.
    pub(super) fn recover(&mut self, task_id: &str, generation: u64) {
        self.recovering
            .entry(task_id.to_string())
            .or_default()
            .push_back(generation);
        let frame = ClientFrame::TaskRecovering {
            task_id: task_id.to_string(),
            generation: Some(generation),
        };
        self.send_now(&frame, None);
    }

    /// The hub answered the oldest `task_recovering` of a task: the generation
    /// that recovery asked about.
    pub(super) fn recovery_answered(&mut self, task_id: &str) -> Option<u64> {
        let asked = self.recovering.get_mut(task_id)?;
        let generation = asked.pop_front();
        if asked.is_empty() {
            self.recovering.remove(task_id);
        }
        generation
    }

    // ---------------------------------------------------------------------
    // Task frames
    // ---------------------------------------------------------------------

    pub(super) fn on_assign(&mut self, a: TaskAssignment) {
        if !safe_task_id(&a.task_id) {
            tracing::warn!(task_id = ?a.task_id, "task id unusable as a file name; rejecting");
            self.reject(&a, "invalid_task_id");
            return;
        }
        if self.held.contains_key(&a.task_id) {
            return self.adopt(a);
        }
        if self.held.len() >= self.capacity {
            // A released task only waits in case the hub hands it back: a new
            // one takes its slot.
            let released = self
                .held
                .values()
                .find(|h| h.record.is_released())
                .map(|h| h.record.task_id().to_string());
            if let Some(task_id) = released {
                self.finalize_release(&task_id);
            }
        }
        if self.held.len() >= self.capacity {
            let holding: Vec<&String> = self.held.keys().collect();
            tracing::info!(task_id = %a.task_id, holding = ?holding, "every slot busy; rejecting");
            self.reject(&a, "busy");
            return;
        }
        self.take(a);
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

    /// A new task in the lowest free slot: persist, accept, then work (or
    /// complete the onboarding check).
    fn take(&mut self, a: TaskAssignment) {
        let slot = (0..)
            .find(|s| !self.held.values().any(|h| h.slot == *s))
            .unwrap_or(0);
        let record = TaskRecord::new(a);
        let task_id = record.task_id().to_string();
        let generation = record.generation();
        let persisted = serde_json::to_value(&record.assignment)
            .map_err(std::io::Error::other)
            .and_then(|json| self.store.write_task_json(&task_id, &json))
            .and_then(|_| self.store.save_record(slot, &record));
        if let Err(e) = persisted {
            tracing::error!(task_id = %task_id, error = %e, "cannot persist the assignment; rejecting it");
            self.reject(&record.assignment, &format!("state_write_failed: {e}"));
            return;
        }
        tracing::info!(task_id = %task_id, generation, slot, onboarding = record.onboarding, "task persisted; accepting");
        let onboarding = record.onboarding;
        self.held.insert(task_id.clone(), Held::new(slot, record));
        self.accept(&task_id, generation);
        if onboarding {
            let mut result = Map::new();
            result.insert("status".into(), json!("success"));
            result.insert("onboarding".into(), json!("ok"));
            result.insert("agent_id".into(), json!(self.cfg.agent_id));
            self.finish(
                &task_id,
                FinalReport::Complete {
                    result,
                    tokens_used: None,
                    cost_usd: None,
                    follow_ups: Vec::new(),
                },
            );
        } else {
            self.start_worker(&task_id);
        }
    }

    /// The hub handed us a task we already hold, at a (possibly) new generation.
    fn adopt(&mut self, a: TaskAssignment) {
        let task_id = a.task_id.clone();
        let generation = a.generation;
        let Some(h) = self.held.get_mut(&task_id) else {
            return;
        };
        let r = &mut h.record;
        let old = r.generation();
        r.assignment = a;
        r.released_until_ms = None;
        let has_report = r.report.clone();
        let has_worker = h.worker.is_some();
        tracing::info!(task_id = %task_id, old_generation = old, generation, "same task assigned again; adopting the work in progress");
        self.save_record(&task_id);
        self.accept(&task_id, generation);
        // Also recover at the new generation: if the hub answered our recovery of
        // the old generation after it had already re-assigned the task, it may
        // consider this agent idle; `task_recovering` puts it back to `working`.
        self.recover(&task_id, generation);
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
                if !has_worker {
                    self.start_worker(&task_id);
                }
            }
        }
        self.flush_outbox();
    }

    pub(super) fn on_continue(&mut self, task_id: &str, generation: u64) {
        let Some(h) = self.held.get_mut(task_id) else {
            tracing::debug!(task_id, "task_continue for no task");
            return;
        };
        if h.record.is_released() {
            return;
        }
        let changed = h.record.generation() != generation;
        if changed {
            h.record.assignment.generation = generation;
        }
        let needs_worker =
            h.record.report.is_none() && h.worker.is_none() && h.record.paused.is_none();
        // Stopped while merging (a restart): merge again (a merged pull
        // request counts as merged).
        let merge_again = (h.record.phase == Phase::Merging && h.worker.is_none())
            .then(|| {
                h.record
                    .report
                    .as_ref()
                    .and_then(FinalReport::result)
                    .cloned()
            })
            .flatten();
        self.recovery_answered(task_id);
        tracing::info!(task_id, generation, "hub confirmed the task; continuing");
        if changed {
            self.save_record(task_id);
            self.regenerate_entries(task_id, generation);
        }
        if needs_worker {
            self.start_worker(task_id);
        }
        if let Some(result) = merge_again {
            self.start_merge(task_id, result);
        }
        self.flush_outbox();
    }

    pub(super) fn on_reassign(&mut self, task_id: &str, reason: Option<&str>) {
        let Some(h) = self.held.get(task_id) else {
            return;
        };
        if h.record.is_released() {
            return;
        }
        let generation = h.record.generation();
        // Only the answer to a recovery of this very generation counts: the
        // hub may push the task again (a new generation, adopted) before it
        // answers our recovery of the old one, and that answer is stale.
        match self.recovery_answered(task_id) {
            Some(asked) if asked == generation => {
                if reason == Some("unknown_task") {
                    // Work the hub lost (restored from an older backup): said
                    // loudly, so an operator can submit it again; what the
                    // agent writes is archived with the task as always.
                    tracing::warn!(
                        task_id,
                        generation,
                        archive = %self.cfg.state_dir.join("archive").display(),
                        "the hub does not know this task (its store restored from an older backup?): \
                         released; its result files go to the archive; submit it again if it must run"
                    );
                }
                self.release(task_id, "task_reassign")
            }
            Some(asked) => {
                tracing::info!(task_id, asked, generation, "stale task_reassign ignored");
            }
            None => {
                // Not an answer we wait for: ask again at the generation we hold.
                tracing::info!(
                    task_id,
                    generation,
                    "unexpected task_reassign; re-syncing with task_recovering"
                );
                self.recover(task_id, generation);
            }
        }
    }

    /// The task is no longer ours; keep it for `release_grace` in case the hub
    /// hands it straight back.
    pub(super) fn release(&mut self, task_id: &str, why: &str) {
        self.stop_worker(task_id);
        let grace = self.cfg.timings.release_grace;
        let Some(h) = self.held.get_mut(task_id) else {
            return;
        };
        h.next_progress = None;
        h.record.released_until_ms = Some(now_ms() + grace.as_millis() as u64);
        tracing::info!(
            task_id,
            reason = why,
            grace_ms = grace.as_millis() as u64,
            "task released by the hub"
        );
        self.save_record(task_id);
        self.drop_entries_for(task_id, false);
    }

    pub(super) fn finalize_release(&mut self, task_id: &str) {
        let Some(h) = self.held.get(task_id) else {
            return;
        };
        tracing::info!(task_id, "released task dropped");
        if h.record.report.is_none() {
            self.stop_group(h.record.pgid);
        }
        self.drop_entries_for(task_id, false);
        self.clear_record(task_id);
    }

    pub(super) fn on_cancelled(&mut self, task_id: &str, reason: &str) {
        let Some(h) = self.held.get(task_id) else {
            return;
        };
        tracing::info!(
            task_id,
            reason,
            "task cancelled by the hub; stopping the agent's processes"
        );
        if let (Some(pgid), Some(_)) = (h.record.pgid, &h.record.paused) {
            // Stopped for its budget: let it run to take the SIGTERM.
            crate::wake::signal_group(pgid, libc::SIGCONT);
        }
        let _ = std::fs::remove_file(crate::results::paused_path(&self.cfg.results_dir, task_id));
        self.stop_group(h.record.pgid);
        self.drop_entries_for(task_id, false);
        self.clear_record(task_id);
    }

    /// The hub has the agent's question: the task waits for the answer (no
    /// worker, no lease renewals; the hub counts no lease meanwhile).
    pub(super) fn await_answer(&mut self, task_id: &str) {
        let asked = self
            .held
            .get(task_id)
            .is_some_and(|h| matches!(h.record.report, Some(FinalReport::InputRequired { .. })));
        if !asked {
            return;
        }
        if let Some(h) = self.held.get_mut(task_id) {
            h.record.phase = Phase::AwaitingAnswer;
        }
        self.save_record(task_id);
    }

    /// `task_answer`: the answer is written for the agent
    /// (`results/<id>.answer.json`, `TASK_ANSWER`) and the agent is woken
    /// again. An answer already handled (a repeat after a recovery) is ignored.
    pub(super) fn on_answer(&mut self, task_id: &str, generation: u64, answer: Answer) {
        let Some(h) = self.held.get_mut(task_id) else {
            return;
        };
        let seen = h
            .record
            .answer
            .as_ref()
            .is_some_and(|a| a.question_id >= answer.question_id);
        if seen || h.record.generation() != generation || h.record.is_released() {
            tracing::debug!(
                task_id,
                question_id = answer.question_id,
                "answer already handled"
            );
            return;
        }
        tracing::info!(task_id, question_id = answer.question_id, by = %answer.answered_by, "answer received; waking the agent again");
        self.rewake(task_id, answer);
    }

    /// The agent is woken again with `answer` (an answer to its question, a
    /// rejection, a failed merge): the answer file, `TASK_ANSWER` and
    /// `TASK_REVIEW`; its earlier result and start mark are done with.
    fn rewake(&mut self, task_id: &str, answer: Answer) {
        let file = crate::results::answer_path(&self.cfg.results_dir, task_id);
        let mut body = serde_json::json!({"task_id": task_id, "question_id": answer.question_id,
                                          "answer": answer.answer, "answered_by": answer.answered_by});
        if let Some(kind) = &answer.kind {
            body["kind"] = json!(kind);
        }
        if let Some(note) = &answer.note {
            body["note"] = json!(note);
        }
        if let Err(e) = crate::state::write_atomic(&file, body.to_string().as_bytes()) {
            tracing::error!(task_id, error = %e, "cannot write the answer file");
        }
        let dir = &self.cfg.results_dir;
        let _ = std::fs::remove_file(crate::results::result_path(dir, task_id));
        let _ = std::fs::remove_file(crate::results::started_path(dir, task_id));
        let Some(h) = self.held.get_mut(task_id) else {
            return;
        };
        let last = h.last_spend;
        let r = &mut h.record;
        // The agent starts counting again from 0.
        let reported = r
            .report
            .as_ref()
            .and_then(FinalReport::spent)
            .unwrap_or_default();
        r.spend_base = r.spend_base.max(last).max(reported);
        r.answer = Some(answer);
        r.report = None;
        r.phase = Phase::Accepted;
        r.wake_attempts = 0;
        r.pgid = None;
        r.confirm_deadline_ms = None;
        self.drop_entries_for(task_id, true);
        self.save_record(task_id);
        self.start_worker(task_id);
    }

    /// The hub holds our completion for a person's approval: the task waits
    /// (no worker, no lease renewals) with the completion kept.
    pub(super) fn await_approval(&mut self, task_id: &str) {
        let Some(h) = self.held.get_mut(task_id) else {
            return;
        };
        if !matches!(h.record.report, Some(FinalReport::Complete { .. })) {
            return;
        }
        h.record.phase = Phase::AwaitingApproval;
        self.save_record(task_id);
    }

    /// A person decided on the held completion (`task_answer`, kind
    /// `approval`): approved, the hub completed it (or, with `merge`, we merge
    /// its pull request first); rejected, the agent is woken again with the
    /// reason. A decision already handled is ignored.
    pub(super) fn on_decision(
        &mut self,
        task_id: &str,
        generation: u64,
        answer: Answer,
        merge: bool,
    ) {
        let Some(h) = self.held.get(task_id) else {
            return;
        };
        let r = &h.record;
        let seen = r
            .answer
            .as_ref()
            .is_some_and(|a| a.question_id >= answer.question_id);
        if seen
            || r.generation() != generation
            || r.is_released()
            || r.phase != Phase::AwaitingApproval
        {
            tracing::debug!(
                task_id,
                question_id = answer.question_id,
                "decision already handled"
            );
            return;
        }
        let result = r.report.as_ref().and_then(FinalReport::result).cloned();
        match (answer.answer.as_str(), merge) {
            ("approve", false) => {
                tracing::info!(task_id, by = %answer.answered_by, "completion approved; done");
                self.drop_entries_for(task_id, false);
                self.clear_record(task_id);
            }
            ("approve", true) => {
                tracing::info!(task_id, by = %answer.answered_by, "completion approved; merging its pull request");
                if let Some(h) = self.held.get_mut(task_id) {
                    h.record.answer = Some(answer);
                    h.record.phase = Phase::Merging;
                }
                self.save_record(task_id);
                self.start_merge(task_id, result.unwrap_or_default());
            }
            _ => {
                tracing::info!(task_id, by = %answer.answered_by, note = ?answer.note, "completion rejected; waking the agent again");
                self.rewake(task_id, answer);
            }
        }
    }

    /// Over a budget (`task_paused`): the agent stops where it is. Its
    /// process group gets SIGSTOP (resumed later exactly where it stopped)
    /// and `results/<id>.paused` says why (an agent that runs detached stops
    /// at its next safe point while it exists); no lease renewals meanwhile.
    pub(super) fn on_paused(
        &mut self,
        task_id: &str,
        generation: u64,
        question_id: u32,
        why: (Spend, Limit),
    ) {
        let Some(h) = self.held.get(task_id) else {
            return;
        };
        let r = &h.record;
        if r.generation() != generation
            || r.is_released()
            || r.report.is_some()
            || r.paused.is_some()
        {
            tracing::debug!(
                task_id,
                "task_paused ignored (done, not ours, or paused already)"
            );
            return;
        }
        let (spent, budget) = why;
        tracing::warn!(
            task_id,
            tokens = spent.tokens,
            cost_usd = spent.cost_usd,
            "over budget: pausing the agent"
        );
        self.stop_worker(task_id);
        let file = crate::results::paused_path(&self.cfg.results_dir, task_id);
        let body = serde_json::json!({"task_id": task_id, "reason": "budget_exceeded",
                                      "spent": spent, "budget": budget});
        if let Err(e) = crate::state::write_atomic(&file, body.to_string().as_bytes()) {
            tracing::error!(task_id, error = %e, "cannot write the paused file");
        }
        let Some(h) = self.held.get_mut(task_id) else {
            return;
        };
        if let Some(pgid) = h.record.pgid {
            crate::wake::signal_group(pgid, libc::SIGSTOP);
        }
        h.record.paused = Some(PausedFor {
            question_id,
            phase: h.record.phase,
        });
        h.record.phase = Phase::Paused;
        h.next_progress = None;
        self.save_record(task_id);
    }

    /// The budget was raised (`task_answer`, kind `budget`): the agent goes
    /// on where it stopped.
    pub(super) fn on_resume(&mut self, task_id: &str, generation: u64, question_id: u32) {
        let Some(h) = self.held.get_mut(task_id) else {
            return;
        };
        let paused = h.record.paused.clone();
        let Some(p) = paused.filter(|p| p.question_id <= question_id) else {
            tracing::debug!(task_id, "resume already handled");
            return;
        };
        if h.record.generation() != generation {
            return;
        }
        tracing::info!(task_id, "budget raised: resuming the agent");
        if let Some(pgid) = h.record.pgid {
            crate::wake::signal_group(pgid, libc::SIGCONT);
        }
        h.record.paused = None;
        h.record.phase = p.phase;
        let _ = std::fs::remove_file(crate::results::paused_path(&self.cfg.results_dir, task_id));
        self.save_record(task_id);
        self.start_worker(task_id);
    }

    /// The hub took our failed merge: the agent is woken again with gh's
    /// words (same branch).
    pub(super) fn merge_failed(&mut self, task_id: &str) {
        let Some(h) = self.held.get(task_id) else {
            return;
        };
        let Some(FinalReport::Merged { error, .. }) = &h.record.report else {
            return;
        };
        let answer = Answer {
            question_id: h.record.answer.as_ref().map_or(0, |a| a.question_id),
            answer: "merge_failed".into(),
            answered_by: "sidecar".into(),
            kind: Some("approval".into()),
            note: error.clone(),
        };
        self.rewake(task_id, answer);
    }

    /// Runs `gh pr merge` for the approved completion `result`; its outcome
    /// comes back as the worker's final report (`task_merged`).
    fn start_merge(&mut self, task_id: &str, result: Map<String, serde_json::Value>) {
        self.stop_worker(task_id);
        let pr_url = result
            .get("pr_url")
            .and_then(serde_json::Value::as_str)
            .map(str::to_string);
        let job = pr_url.map(|pr_url| crate::merge::MergeJob {
            gh: self.cfg.gh_command.clone(),
            repo_dir: self.cfg.repo_dir.clone(),
            pr_url,
            method: self.cfg.merge_method.clone(),
        });
        self.epoch += 1;
        let epoch = self.epoch;
        let tx = self.worker_tx.clone();
        let method = self.cfg.merge_method.clone();
        let run = async move {
            let outcome = match &job {
                Some(job) => crate::merge::merge(job).await,
                None => Err("the result names no pull request (pr_url)".to_string()),
            };
            let report = FinalReport::Merged {
                merged: outcome.is_ok(),
                method: Some(method),
                error: outcome.err(),
                result,
            };
            let _ = tx.send((epoch, WorkerMsg::Final(report)));
        };
        if let Some(h) = self.held.get_mut(task_id) {
            h.worker = Some((epoch, tokio::spawn(run)));
        }
    }

    fn stop_group(&self, pgid: Option<i32>) {
        if let Some(pgid) = pgid {
            let grace = self.cfg.timings.kill_grace;
            tokio::spawn(wake::stop_group(pgid, grace));
        }
    }

    // ---------------------------------------------------------------------
    // Workers
    // ---------------------------------------------------------------------

    fn stop_worker(&mut self, task_id: &str) {
        if let Some(h) = self.held.get_mut(task_id) {
            h.next_progress = None;
            if let Some((_, w)) = h.worker.take() {
                w.abort();
            }
        }
    }

    fn start_worker(&mut self, task_id: &str) {
        self.stop_worker(task_id);
        let Some(h) = self.held.get(task_id) else {
            return;
        };
        let r = &h.record;
        if r.report.is_some() {
            return;
        }
        self.epoch += 1;
        let epoch = self.epoch;
        let ctx = worker::WorkerCtx {
            cfg: Arc::clone(&self.cfg),
            record: r.clone(),
            task_json_file: self.store.task_json_path(task_id),
            wake_log: self.store.wake_log_path(task_id),
            git_record: self.store.git_record_path(task_id),
            epoch,
            tx: self.worker_tx.clone(),
        };
        let interval = self.progress_interval(r.assignment.lease_ms);
        if let Some(h) = self.held.get_mut(task_id) {
            h.agent_gone = false;
            h.worker = Some((epoch, tokio::spawn(worker::work(ctx))));
            h.next_progress = Some(Instant::now() + interval);
        }
    }

    /// An event of the worker started as `epoch` (a stopped worker's are
    /// ignored).
    pub(super) fn on_worker(&mut self, epoch: u64, msg: WorkerMsg) {
        let Some(task_id) = self
            .held
            .values()
            .find(|h| h.worker.as_ref().map(|(e, _)| *e) == Some(epoch))
            .map(|h| h.record.task_id().to_string())
        else {
            return;
        };
        let Some(h) = self.held.get_mut(&task_id) else {
            return;
        };
        match msg {
            WorkerMsg::Phase {
                phase,
                wake_attempts,
                pgid,
                confirm_deadline_ms,
            } => {
                let r = &mut h.record;
                r.phase = phase;
                r.wake_attempts = wake_attempts;
                if pgid.is_some() {
                    r.pgid = pgid;
                }
                r.confirm_deadline_ms = confirm_deadline_ms;
                self.save_record(&task_id);
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
                h.progress = Some(p.clone());
                let spend = h.spend_total();
                if let Some(s) = spend {
                    h.last_spend = h.last_spend.max(s);
                }
                let frame = ClientFrame::TaskProgress {
                    task_id: task_id.clone(),
                    progress: p.percent,
                    generation: Some(h.record.generation()),
                    message: p.message.clone(),
                    tokens_used: spend.map(|s| s.tokens),
                    cost_usd: spend.map(|s| s.cost_usd),
                };
                self.enqueue(&task_id, frame);
            }
            WorkerMsg::AgentGone => {
                h.agent_gone = true;
                h.next_progress = None;
            }
            WorkerMsg::Final(report) => {
                h.worker = None;
                self.finish(&task_id, report);
            }
        }
    }

    /// The outcome is known: persist it, then report it through the outbox.
    fn finish(&mut self, task_id: &str, mut report: FinalReport) {
        self.stop_worker(task_id);
        let Some(h) = self.held.get_mut(task_id) else {
            return;
        };
        // A question's spend is the attempt's so far: the earlier wakes' too.
        if let FinalReport::InputRequired {
            spent: Some(spent), ..
        } = &mut report
        {
            *spent = h.record.spend_base.plus(*spent).max(h.last_spend);
            h.last_spend = *spent;
        }
        // A completion's spend is the attempt's: the earlier wakes' too.
        if let FinalReport::Complete {
            tokens_used,
            cost_usd,
            ..
        } = &mut report
        {
            let base = h.record.spend_base;
            if !base.is_zero() || tokens_used.is_some() || cost_usd.is_some() {
                let wake = Spend {
                    tokens: tokens_used.unwrap_or(0),
                    cost_usd: cost_usd.unwrap_or(0.0),
                };
                let total = base.plus(wake).max(h.last_spend);
                *tokens_used = Some(total.tokens);
                *cost_usd = Some(total.cost_usd);
                h.last_spend = total;
            }
        }
        h.record.report = Some(report.clone());
        h.record.phase = Phase::Reporting;
        let generation = h.record.generation();
        match &report {
            FinalReport::Complete { .. } => {
                tracing::info!(task_id, "result ready; reporting task_complete")
            }
            FinalReport::Failed { reason, .. } => {
                tracing::warn!(task_id, reason = %reason, "reporting task_failed")
            }
            FinalReport::Blocked { reason, needs } => {
                tracing::warn!(task_id, reason = %reason, needs = ?needs, "reporting task_blocked")
            }
            FinalReport::UsageLimited { resets_at, .. } => {
                tracing::warn!(task_id, resets_at, "reporting usage_limited")
            }
            FinalReport::InputRequired { question, .. } => {
                tracing::info!(task_id, question = %question, "asking the hub")
            }
            FinalReport::Merged { merged, error, .. } => {
                tracing::info!(task_id, merged, error = ?error, "reporting task_merged")
            }
        }
        self.save_record(task_id);
        self.drop_entries_for(task_id, false);
        self.enqueue(task_id, report.frame(task_id, generation));
    }
}
