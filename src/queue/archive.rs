//! Retention of finished work (ext, PROTOCOL.md 6.34): completed, cancelled
//! and dead-lettered tasks last changed before the cutoff are written to an
//! archive file (off the queue's thread), then removed from the live store in
//! one flush with their index entries (`storage::archive`). A task changed
//! meanwhile (an operator's retry) stays. The task with the highest sequence
//! is never archived, so the next start counts on from it.
//!
//! | message | from | answers |
//! |---|---|---|
//! | [`ArchiveOld`] | `Retention` | nothing (one pass, at most a batch) |

use actix::prelude::*;
use serde_json::{json, Value};

use super::{records, TaskQueue};
use crate::domain::task::TaskStatus;
use crate::error::StoreError;
use crate::storage::archive::{write_archive, ArchiveFile, ArchivedTask};
use crate::storage::eventlog::NewEvent;
use crate::util::now_ms;

/// Most tasks one pass archives (a full batch is followed by another pass).
const BATCH: usize = 1_000;
/// Most stored tasks one pass looks at.
const SCAN: usize = 20_000;

/// Archive finished tasks last changed before `cutoff` (ms).
#[derive(Message, Clone, Copy)]
#[rtype(result = "()")]
pub(crate) struct ArchiveOld {
    pub cutoff: i64,
}

/// A task picked for the archive, as it was when picked.
struct Picked {
    seq: u64,
    id: String,
    correlation: Option<String>,
    updated_at: i64,
    status: TaskStatus,
}

impl TaskQueue {
    /// Finished tasks created and last changed before `cutoff`, oldest first,
    /// with their records.
    fn pick_old(&self, cutoff: i64) -> Result<(Vec<Picked>, Vec<Value>), StoreError> {
        let newest = self.records.last_seq()?.unwrap_or(0);
        let mut picked = Vec::new();
        let mut views = Vec::new();
        for stored in self.records.scan_from(0).take(SCAN) {
            let stored = stored?;
            if stored.seq >= newest || self.index.live.contains_key(&stored.seq) {
                continue;
            }
            let task = records::decode_task(&stored)?;
            if task.created_at >= cutoff {
                // Created later: nothing after it finished before the cutoff.
                break;
            }
            if !task.status.is_terminal() || task.updated_at >= cutoff {
                continue;
            }
            let mut view = task.view();
            view["attempts"] = json!(task.attempts);
            views.push(view);
            picked.push(Picked {
                seq: task.seq,
                correlation: (task.correlation() != task.id)
                    .then(|| task.correlation().to_string()),
                id: task.id,
                updated_at: task.updated_at,
                status: task.status,
            });
            if picked.len() == BATCH {
                break;
            }
        }
        Ok((picked, views))
    }

    /// Removes what the written `file` holds (unless changed since it was
    /// picked), with the index entries, in one flush.
    fn remove_archived(
        &mut self,
        picked: Vec<Picked>,
        file: ArchiveFile,
    ) -> Result<usize, StoreError> {
        let archive = self.peers.archive.clone();
        archive.add_file(&file)?;
        let mut removed = 0;
        for p in picked {
            let unchanged = !self.index.ids.contains_key(p.id.as_str())
                && self
                    .read_stored(&p.id)?
                    .is_some_and(|t| t.updated_at == p.updated_at && t.status == p.status);
            if !unchanged {
                continue;
            }
            let entry = ArchivedTask {
                file: file.file.clone(),
                status: p.status.as_str().to_string(),
            };
            archive.add_task(&p.id, &entry)?;
            self.records
                .remove(p.seq, &p.id, p.correlation.as_deref())?;
            if let Some(c) = self.index.counts.get_mut(&p.status) {
                *c = c.saturating_sub(1);
            }
            self.index.dead_letter.remove(&p.seq);
            removed += 1;
        }
        let details = json!({"file": file.file, "count": removed, "sha256": file.sha256});
        self.log.append(vec![NewEvent::untasked(
            "tasks_archived",
            None,
            "hub",
            details,
        )])?;
        Ok(removed)
    }
}

impl Handler<ArchiveOld> for TaskQueue {
    type Result = ();

    fn handle(&mut self, msg: ArchiveOld, ctx: &mut Context<Self>) {
        if self.archiving || self.frozen {
            return;
        }
        let (picked, views) = match self.pick_old(msg.cutoff) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "finished tasks could not be read for the archive");
                return;
            }
        };
        if picked.is_empty() {
            return;
        }
        self.archiving = true;
        let dir = self.peers.archive.dir().to_path_buf();
        let full = picked.len() == BATCH;
        let job =
            actix_rt::task::spawn_blocking(move || write_archive(&dir, "tasks", &views, now_ms()));
        ctx.spawn(job.into_actor(self).map(move |written, act, ctx| {
            act.archiving = false;
            let file = match written {
                Ok(Ok(file)) => file,
                Ok(Err(e)) => {
                    return tracing::error!(error = %e, "archive not written; the tasks stay")
                }
                Err(e) => return tracing::error!(error = %e, "archive job failed; the tasks stay"),
            };
            match act.remove_archived(picked, file) {
                Ok(n) => tracing::info!(archived = n, "finished tasks archived"),
                Err(e) => tracing::error!(error = %e, "archived tasks not removed"),
            }
            let durable = act.store.durable();
            ctx.spawn(durable.into_actor(act).map(move |flushed, _, ctx| {
                if let Err(e) = flushed {
                    return tracing::error!(error = %e, "archive removal not flushed");
                }
                if full {
                    ctx.notify(msg);
                }
            }));
        }));
    }
}
