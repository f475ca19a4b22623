//! Paused priority lanes: queued tasks of a paused lane stay queued and are not
//! scheduled; assigned ones run on. Kept in `meta`, so a restart keeps them.

use crate::error::StoreError;
use crate::protocol::LANES;
use crate::storage::store::{decode, encode, Store};

/// Where the paused lanes are kept in `meta`.
const PAUSED_KEY: &str = "queue_paused_lanes";

/// See the module documentation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Lanes {
    paused: [bool; LANES.len()],
}

impl Lanes {
    /// The lanes as the store holds them (none paused when nothing is stored).
    pub(super) fn load(store: &Store) -> Result<Lanes, StoreError> {
        let mut lanes = Lanes::default();
        if let Some(v) = store.meta.get(PAUSED_KEY)? {
            let paused: Vec<u8> = decode("meta", PAUSED_KEY.as_bytes(), &v)?;
            for l in paused {
                lanes.set(l, true);
            }
        }
        Ok(lanes)
    }

    /// Writes the paused lanes (made durable by the caller's flush).
    pub(super) fn save(&self, store: &Store) -> Result<(), StoreError> {
        store.meta.insert(PAUSED_KEY, encode(&self.paused()))?;
        Ok(())
    }

    /// Pauses or resumes lane `lane`; lanes past the last are ignored.
    pub(super) fn set(&mut self, lane: u8, paused: bool) {
        if let Some(p) = self.paused.get_mut(usize::from(lane)) {
            *p = paused;
        }
    }

    /// Whether a task of this priority is held back by a paused lane.
    pub(super) fn holds(&self, priority: u8) -> bool {
        self.paused[super::index::lane(priority)]
    }

    /// The paused lanes, in order.
    pub(super) fn paused(&self) -> Vec<u8> {
        (0..LANES.len() as u8)
            .filter(|l| self.paused[usize::from(*l)])
            .collect()
    }

    /// The lanes whose state differs between `self` and `other`.
    pub(super) fn changed_from(&self, other: &Lanes) -> Vec<usize> {
        (0..LANES.len())
            .filter(|l| self.paused[*l] != other.paused[*l])
            .collect()
    }
}
