//! The agent's lifecycle frames in the FSM: each frame becomes the queue's
//! report (`to_report`), and the FSM moves on the queue's verdict and answers
//! the agent (`task_ack`, a refusal, a reassignment). A `usage_limited` report
//! also goes to `Presence`, which pauses the agent's credential group.

use actix::prelude::*;

use super::AgentFsm;
use crate::domain::task::{Ask, FailReport, Merge};
use crate::protocol::{parse_task_specs, ClientFrame, ErrorFrame, ServerFrame, Spend};
use crate::queue::{AgentReport, QueueError, Report, ReportReply};

/// A lifecycle frame from the agent; answers the frame to send back, if any.
#[derive(Message)]
#[rtype(result = "Option<ServerFrame>")]
pub(crate) struct Lifecycle(pub ClientFrame);

/// How a lifecycle frame maps onto a queue report and its reply.
enum Reply {
    Ack(&'static str),
    Recover,
    StateReport,
    Silent,
}

/// `Err` is the answer to a frame refused before it reaches the queue.
fn to_report(frame: ClientFrame) -> Option<Result<(String, Report, Reply), ServerFrame>> {
    Some(Ok(match frame {
        ClientFrame::TaskAccepted {
            task_id,
            generation,
        } => (
            task_id,
            Report::Accept { generation },
            Reply::Ack("task_accept_failed"),
        ),
        ClientFrame::TaskProgress {
            task_id,
            progress,
            generation,
            message,
            tokens_used,
            cost_usd,
        } => (
            task_id,
            Report::Progress {
                generation,
                progress,
                message,
                spend: (tokens_used.is_some() || cost_usd.is_some()).then(|| Spend {
                    tokens: tokens_used.unwrap_or(0),
                    cost_usd: cost_usd.unwrap_or(0.0),
                }),
            },
            Reply::Silent,
        ),
        ClientFrame::TaskComplete {
            task_id,
            generation,
            result,
            tokens_used,
            cost_usd,
            follow_ups,
        } => {
            let specs = match parse_task_specs(&follow_ups.unwrap_or_default(), |i| {
                format!("follow_ups[{i}].")
            }) {
                Ok(specs) => specs,
                Err(errors) => {
                    return Some(Err(ServerFrame::Error(ErrorFrame {
                        task_id: Some(task_id),
                        errors: Some(errors),
                        ..ErrorFrame::plain("task_complete_failed: invalid_follow_ups")
                    })))
                }
            };
            (
                task_id,
                Report::Complete {
                    generation,
                    result,
                    tokens_used,
                    cost_usd,
                    follow_ups: specs,
                },
                Reply::Ack("task_complete_failed"),
            )
        }
        ClientFrame::TaskFailed {
            task_id,
            generation,
            error,
            reason,
            retry_after_s,
            terminal,
        } => (
            task_id,
            Report::Fail {
                generation,
                report: FailReport {
                    error: error
                        .or_else(|| reason.clone())
                        .unwrap_or_else(|| "unspecified".into()),
                    reason,
                    retry_after_s,
                    terminal: terminal.unwrap_or(false),
                },
            },
            Reply::Ack("task_fail_failed"),
        ),
        ClientFrame::TaskRejected {
            task_id,
            reason,
            generation,
        } => (
            task_id,
            Report::Reject { generation, reason },
            Reply::Ack("task_reject_failed"),
        ),
        ClientFrame::TaskBlocked {
            task_id,
            generation,
            reason,
            needs,
        } => (
            task_id,
            Report::Block {
                generation,
                reason,
                needs,
            },
            Reply::Ack("task_block_failed"),
        ),
        ClientFrame::TaskRecovering {
            task_id,
            generation,
        } => (task_id, Report::Recover { generation }, Reply::Recover),
        ClientFrame::StateReport {
            task_id,
            generation,
        } => (task_id, Report::Recover { generation }, Reply::StateReport),
        ClientFrame::WakeResult {
            task_id, status, ..
        } => (
            task_id,
            Report::Wake {
                success: status == "success",
            },
            Reply::Silent,
        ),
        ClientFrame::TaskInputRequired {
            task_id,
            generation,
            question,
            options,
            default,
            timeout_ms,
        } => (
            task_id,
            Report::Ask {
                generation,
                ask: Ask {
                    question,
                    options: options.unwrap_or_default(),
                    default,
                    timeout_ms,
                },
            },
            Reply::Ack("task_input_required_failed"),
        ),
        ClientFrame::TaskMerged {
            task_id,
            generation,
            merged,
            method,
            error,
        } => (
            task_id,
            Report::Merged {
                generation,
                outcome: Merge {
                    merged,
                    method,
                    error,
                    at: 0,
                },
            },
            Reply::Ack("task_merged_failed"),
        ),
        ClientFrame::UsageLimited {
            task_id: Some(task_id),
            generation,
            reason,
            ..
        } => (
            task_id,
            Report::UsageLimited { generation, reason },
            Reply::Ack("usage_limited_failed"),
        ),
        _ => return None,
    }))
}

impl Handler<Lifecycle> for AgentFsm {
    type Result = AtomicResponse<Self, Option<ServerFrame>>;

    fn handle(&mut self, msg: Lifecycle, ctx: &mut Context<Self>) -> Self::Result {
        if let ClientFrame::UsageLimited {
            resets_at,
            task_id: None,
            reason,
            ..
        } = &msg.0
        {
            // No task: the pause is the whole answer.
            let report = self.usage_report(*resets_at, None, reason.clone(), ctx);
            let report = self.presence.send(report);
            return AtomicResponse::new(Box::pin(report.into_actor(self).map(|answer, _, _| {
                Some(match answer {
                    Ok(Ok((credential_group, until))) => ServerFrame::UsagePaused {
                        credential_group,
                        until,
                    },
                    _ => {
                        ServerFrame::Error(ErrorFrame::plain("usage_limited_failed: storage_error"))
                    }
                })
            })));
        }
        // With a task, the pause first: the task goes back to the queue only
        // once the whole group is paused (none of it may be offered the task).
        let pause = match &msg.0 {
            ClientFrame::UsageLimited {
                resets_at,
                task_id: Some(task_id),
                reason,
                ..
            } => {
                let report =
                    self.usage_report(*resets_at, Some(task_id.clone()), reason.clone(), ctx);
                Some(self.presence.send(report))
            }
            _ => None,
        };
        let (task_id, report, reply) = match to_report(msg.0) {
            None => return AtomicResponse::new(Box::pin(fut::ready(None))),
            Some(Err(refusal)) => return AtomicResponse::new(Box::pin(fut::ready(Some(refusal)))),
            Some(Ok(report)) => report,
        };
        let is_reject = matches!(report, Report::Reject { .. });
        let reported_generation = match &report {
            Report::Recover { generation } => *generation,
            _ => None,
        };
        let queue = self.queue.clone();
        let report = AgentReport {
            agent_id: self.agent_id.clone(),
            group: self.credential_group.clone(),
            task_id: task_id.clone(),
            report,
        };
        let request = async move {
            if let Some(pause) = pause {
                // Whatever its answer: the pause is in place or failed to save.
                let _ = pause.await;
            }
            queue.send(report).await
        };
        AtomicResponse::new(Box::pin(request.into_actor(self).map(
            move |result, act, ctx| {
                let verdict = match result {
                    Ok(v) => v,
                    Err(e) => {
                        tracing::error!(error = %e, "task queue unreachable");
                        return Some(ServerFrame::Error(ErrorFrame::plain("hub_unavailable")));
                    }
                };
                match (verdict, reply) {
                    (Err(e), Reply::Ack(prefix)) => Some(ServerFrame::Error(ErrorFrame {
                        task_id: Some(task_id),
                        errors: match &e {
                            QueueError::Invalid(errors) => Some(errors.clone()),
                            _ => None,
                        },
                        ..ErrorFrame::plain(format!("{prefix}: {}", e.as_str()))
                    })),
                    (Err(e), _) => Some(ServerFrame::Error(ErrorFrame {
                        task_id: Some(task_id),
                        ..ErrorFrame::plain(format!("task_report_failed: {}", e.as_str()))
                    })),
                    (Ok(ReportReply::Accepted(generation)), _) => {
                        // The queue is the truth: whatever the FSM thought, the agent
                        // now works on this task at this generation.
                        act.unresponsive = false;
                        act.working(&task_id, generation, ctx);
                        Some(ServerFrame::TaskAck {
                            task_id,
                            status: "accepted".into(),
                        })
                    }
                    (Ok(ReportReply::Ack(status)), _) => {
                        // A question or a held completion keeps the task with
                        // its holder, and so does work sent back after review.
                        if !matches!(status.as_str(), "input_required" | "rework") {
                            let delay = is_reject.then_some(act.timings.reject_backoff);
                            act.release_task(&task_id, ctx, delay);
                        }
                        Some(ServerFrame::TaskAck { task_id, status })
                    }
                    (Ok(ReportReply::Holds(generation)), reply) => {
                        act.unresponsive = false;
                        act.working(&task_id, generation, ctx);
                        Some(match reply {
                            Reply::StateReport => ServerFrame::StateReportAck {
                                task_id,
                                action: "continue".into(),
                            },
                            _ => ServerFrame::TaskContinue {
                                task_id,
                                generation,
                            },
                        })
                    }
                    (Ok(ReportReply::NotHeld { unknown }), reply) => {
                        // A report about an older generation says nothing about the
                        // one the FSM holds now; only let go of what it matches.
                        let about_current = act
                            .held
                            .get(&task_id)
                            .is_some_and(|t| reported_generation.is_none_or(|r| r == t.generation));
                        if about_current {
                            act.release_task(&task_id, ctx, None);
                        }
                        Some(match reply {
                            Reply::StateReport => ServerFrame::StateReportAck {
                                task_id,
                                action: "abort".into(),
                            },
                            _ => ServerFrame::TaskReassign {
                                task_id,
                                reason: unknown.then(|| "unknown_task".to_string()),
                            },
                        })
                    }
                    (Ok(ReportReply::Noted), _) => None,
                }
            },
        )))
    }
}

impl AgentFsm {
    /// The queue says the agent works on `task_id` at `generation`: whatever
    /// the FSM thought, it now holds it, accepted.
    fn working(&mut self, task_id: &str, generation: u64, ctx: &mut Context<Self>) {
        self.stop_accept_timer(task_id, ctx);
        self.held.working(task_id, generation);
        self.changed();
        // A task it did not hold (a recovery) may fill its last slot.
        self.offer(ctx);
    }
}
