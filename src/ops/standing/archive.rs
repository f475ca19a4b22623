//! Retention of standing-order runs (ext, PROTOCOL.md 6.34): finished runs
//! that ended before the cutoff (and lie before their order's planned
//! horizon, so nothing plans them again) are written to an archive file off
//! the actor's thread, then removed with their index entries in one flush.

use actix::prelude::*;
use serde_json::json;

use super::{RunStatus, StandingOrders, StandingRun};
use crate::error::StoreError;
use crate::storage::archive::{write_archive, ArchiveFile};
use crate::storage::store::decode;
use crate::util::now_ms;

/// Most runs one pass archives.
const BATCH: usize = 1_000;

/// Archive finished runs that ended before `cutoff` (ms).
#[derive(Message, Clone, Copy)]
#[rtype(result = "()")]
pub(crate) struct ArchiveRuns {
    pub cutoff: i64,
}

impl StandingOrders {
    fn old_runs(&self, cutoff: i64) -> Result<Vec<StandingRun>, StoreError> {
        let mut out = Vec::new();
        for item in self.store.standing_runs.iter() {
            let (k, v) = item?;
            let run: StandingRun = decode("standing_runs", &k, &v)?;
            let ended = run.finished_at.unwrap_or(run.recorded_at);
            let planned = self
                .orders
                .get(&run.order)
                .is_none_or(|o| run.scheduled_for <= o.order.planned_through);
            if run.status != RunStatus::Pending && ended < cutoff && planned {
                out.push(run);
                if out.len() == BATCH {
                    break;
                }
            }
        }
        Ok(out)
    }

    fn remove_runs(&self, runs: &[StandingRun], file: &ArchiveFile) -> Result<(), StoreError> {
        self.archive.add_file(file)?;
        for run in runs {
            self.archive
                .add_run(&run.order, run.scheduled_for, &file.file)?;
            self.store
                .standing_runs
                .remove(Self::run_key(&run.order, run.scheduled_for))?;
        }
        let details = json!({"file": file.file, "count": runs.len(), "sha256": file.sha256});
        self.event("standing_runs_archived", "hub", None, details);
        Ok(())
    }
}

impl Handler<ArchiveRuns> for StandingOrders {
    type Result = ();

    fn handle(&mut self, msg: ArchiveRuns, ctx: &mut Context<Self>) {
        if self.archiving {
            return;
        }
        let runs = match self.old_runs(msg.cutoff) {
            Ok(r) if r.is_empty() => return,
            Ok(r) => r,
            Err(e) => {
                return tracing::error!(error = %e, "standing runs unreadable for the archive")
            }
        };
        self.archiving = true;
        let records: Vec<_> = runs.iter().map(|r| json!(r)).collect();
        let dir = self.archive.dir().to_path_buf();
        let job = actix_rt::task::spawn_blocking(move || {
            write_archive(&dir, "standing_runs", &records, now_ms())
        });
        ctx.spawn(job.into_actor(self).map(move |written, act, _| {
            act.archiving = false;
            match written {
                Ok(Ok(file)) => match act.remove_runs(&runs, &file) {
                    Ok(()) => tracing::info!(archived = runs.len(), "standing runs archived"),
                    Err(e) => tracing::error!(error = %e, "archived runs not removed"),
                },
                Ok(Err(e)) => tracing::error!(error = %e, "run archive not written; the runs stay"),
                Err(e) => tracing::error!(error = %e, "run archive job failed; the runs stay"),
            }
        }));
    }
}
