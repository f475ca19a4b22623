//! `TaskRecords`: everything the task queue keeps, as the operations it needs.
//! A task is three records: its spec (written once, at creation), its state
//! (rewritten by every change: small), and its id's entry; a task that shares
//! another's correlation also has an entry under it. The queue decides what the
//! bytes mean; this is the one place that knows where they live, so another
//! backend implements these operations and nothing else of the queue changes.
//!
//! Stores written before the split hold the whole task in the state tree and no
//! spec: `StoredTask::spec` is then `None`.

use sled::IVec;

use crate::error::StoreError;
use crate::storage::store::{key_seq, scoped_key, seq_key, Store};

/// One task's records as stored.
pub(crate) struct StoredTask {
    pub seq: u64,
    /// `None` for a task written before specs were kept apart.
    pub spec: Option<IVec>,
    pub state: IVec,
}

/// See the module documentation. Cheap to clone.
#[derive(Clone)]
pub(crate) struct TaskRecords {
    store: Store,
}

impl TaskRecords {
    pub(crate) fn new(store: Store) -> TaskRecords {
        TaskRecords { store }
    }

    /// Writes a new task. `correlation`: the correlation it joins, when that is
    /// not its own id.
    pub(crate) fn create(
        &self,
        seq: u64,
        id: &str,
        spec: Vec<u8>,
        state: Vec<u8>,
        correlation: Option<&str>,
    ) -> Result<(), StoreError> {
        let key = seq_key(seq);
        self.store.task_specs.insert(key, spec)?;
        self.store.tasks.insert(key, state)?;
        self.store.task_ids.insert(id.as_bytes(), &key)?;
        if let Some(correlation) = correlation {
            self.store
                .task_correlations
                .insert(scoped_key(correlation, seq), &[])?;
        }
        Ok(())
    }

    /// Writes a task's new state.
    /// Removes a task from the live store (its archive holds it).
    pub(crate) fn remove(
        &self,
        seq: u64,
        id: &str,
        correlation: Option<&str>,
    ) -> Result<(), StoreError> {
        let key = seq_key(seq);
        self.store.tasks.remove(key)?;
        self.store.task_specs.remove(key)?;
        self.store.task_ids.remove(id.as_bytes())?;
        if let Some(correlation) = correlation {
            self.store
                .task_correlations
                .remove(scoped_key(correlation, seq))?;
        }
        Ok(())
    }

    pub(crate) fn update(&self, seq: u64, state: Vec<u8>) -> Result<(), StoreError> {
        Ok(self.store.tasks.insert(seq_key(seq), state)?)
    }

    /// The sequence of the task with this id.
    pub(crate) fn seq_of(&self, id: &str) -> Result<Option<u64>, StoreError> {
        Ok(self
            .store
            .task_ids
            .get(id.as_bytes())?
            .and_then(|v| key_seq(&v)))
    }

    /// Puts an id's entry back (a crash between a record and its id entry).
    pub(crate) fn repair_id(&self, id: &str, seq: u64) -> Result<(), StoreError> {
        if self.seq_of(id)?.is_none() {
            self.store.task_ids.insert(id.as_bytes(), &seq_key(seq))?;
        }
        Ok(())
    }

    pub(crate) fn get(&self, seq: u64) -> Result<Option<StoredTask>, StoreError> {
        let key = seq_key(seq);
        let Some(state) = self.store.tasks.get(key)? else {
            return Ok(None);
        };
        Ok(Some(StoredTask {
            seq,
            spec: self.store.task_specs.get(key)?,
            state,
        }))
    }

    /// Every task from sequence `from` on, in creation order. The specs are read
    /// alongside (both trees are in sequence order), not looked up one by one.
    pub(crate) fn scan_from(
        &self,
        from: u64,
    ) -> impl Iterator<Item = Result<StoredTask, StoreError>> + '_ {
        let mut specs = self.store.task_specs.range(seq_key(from)..).peekable();
        self.store.tasks.range(seq_key(from)..).map(move |item| {
            let (key, state) = item?;
            let seq = key_seq(&key).ok_or_else(|| StoreError::Corrupt {
                tree: "tasks",
                key: format!("{key:?}"),
                reason: "a task key is not a sequence".into(),
            })?;
            // Specs of tasks without a state (none, normally) are passed over.
            while specs
                .next_if(|s| s.as_ref().is_ok_and(|(k, _)| k.as_ref() < key.as_ref()))
                .is_some()
            {}
            let spec = match specs
                .next_if(|s| s.as_ref().map_or(true, |(k, _)| k.as_ref() == key.as_ref()))
            {
                Some(item) => Some(item?.1),
                None => None,
            };
            Ok(StoredTask { seq, spec, state })
        })
    }

    /// The highest task sequence stored, if any.
    pub(crate) fn last_seq(&self) -> Result<Option<u64>, StoreError> {
        Ok(self.store.tasks.last()?.and_then(|(k, _)| key_seq(&k)))
    }

    /// A value the queue keeps about its tasks as a whole (a checkpoint).
    pub(crate) fn put_summary(&self, name: &str, value: Vec<u8>) -> Result<(), StoreError> {
        self.store.meta.insert(name, value)?;
        Ok(())
    }

    /// Reads and removes a value written by [`TaskRecords::put_summary`].
    pub(crate) fn take_summary(&self, name: &str) -> Result<Option<IVec>, StoreError> {
        Ok(self.store.meta.take(name)?)
    }

    /// Whether every task's id entry is known to be there: the store was closed
    /// cleanly last time (after a crash, `repair_id` is worth its reads).
    pub(crate) fn ids_complete(&self) -> bool {
        self.store.opened_seal().is_some()
    }

    /// The sequences of the tasks that joined `correlation`, from `from` on (the
    /// task whose id it is has no entry, except in older stores). A key without
    /// a sequence is passed over.
    pub(crate) fn correlated(
        &self,
        correlation: &str,
        from: u64,
    ) -> impl Iterator<Item = Result<u64, StoreError>> {
        let start = scoped_key(correlation, from);
        let end = scoped_key(correlation, u64::MAX);
        self.store
            .task_correlations
            .range(start..=end)
            .filter_map(|item| match item {
                Ok((key, _)) => key
                    .len()
                    .checked_sub(8)
                    .and_then(|at| key_seq(&key[at..]))
                    .map(Ok),
                Err(e) => Some(Err(e.into())),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scan_pairs_each_state_with_its_spec_and_reads_older_whole_records() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let records = TaskRecords::new(store.clone());
        // 1 and 3: whole records of the older layout (no spec); 2 and 4: split.
        store
            .tasks
            .insert(seq_key(1), b"whole-1".to_vec())
            .expect("old");
        records
            .create(2, "t2", b"spec-2".to_vec(), b"state-2".to_vec(), None)
            .expect("create");
        store
            .tasks
            .insert(seq_key(3), b"whole-3".to_vec())
            .expect("old");
        records
            .create(4, "t4", b"spec-4".to_vec(), b"state-4".to_vec(), Some("t2"))
            .expect("create");
        records.update(4, b"state-4b".to_vec()).expect("update");
        let seen: Vec<(u64, Option<Vec<u8>>, Vec<u8>)> = records
            .scan_from(0)
            .map(|t| {
                let t = t.expect("stored");
                (t.seq, t.spec.map(|s| s.to_vec()), t.state.to_vec())
            })
            .collect();
        assert_eq!(
            seen,
            vec![
                (1, None, b"whole-1".to_vec()),
                (2, Some(b"spec-2".to_vec()), b"state-2".to_vec()),
                (3, None, b"whole-3".to_vec()),
                (4, Some(b"spec-4".to_vec()), b"state-4b".to_vec()),
            ]
        );
        assert_eq!(records.scan_from(3).count(), 2);
        assert_eq!(records.seq_of("t4").expect("id"), Some(4));
        let joined: Vec<u64> = records
            .correlated("t2", 0)
            .map(|s| s.expect("seq"))
            .collect();
        assert_eq!(joined, vec![4]);
    }
}
