//! What an agent holds: its tasks, each awaiting acceptance or accepted, within
//! its slots (PROTOCOL.md 6.24). Pure bookkeeping; the FSM adds timers and
//! messages.

use crate::protocol::Slots;

/// One task the agent holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HeldTask {
    pub task_id: String,
    pub generation: u64,
    /// Accepted (or recovered); else pushed and awaiting `task_accepted`.
    pub working: bool,
    /// A standing-order run: it may sit in the slot kept for those.
    pub standing: bool,
}

/// The tasks an agent holds, oldest first, and its slots.
#[derive(Debug, Default)]
pub(crate) struct HeldTasks {
    tasks: Vec<HeldTask>,
    slots: Slots,
}

impl HeldTasks {
    pub(crate) fn slots(&self) -> Slots {
        self.slots
    }

    pub(crate) fn set_slots(&mut self, slots: Slots) {
        self.slots = slots;
    }

    /// What the agent may take now: `None` when every slot is taken,
    /// `Some(true)` when only the slot kept for standing orders is free,
    /// `Some(false)` when any task fits.
    pub(crate) fn room(&self) -> Option<bool> {
        if self.tasks.len() >= self.slots.slots as usize {
            return None;
        }
        Some(!self.fits(false))
    }

    /// Whether a task (a standing-order run or not) fits in a free slot.
    pub(crate) fn fits(&self, standing: bool) -> bool {
        if self.tasks.len() >= self.slots.slots as usize {
            return false;
        }
        let general = self.tasks.iter().filter(|t| !t.standing).count();
        standing || general < self.slots.general() as usize
    }

    /// A pushed task, awaiting acceptance (replacing an older generation).
    pub(crate) fn hold(&mut self, task_id: String, generation: u64, standing: bool) {
        self.tasks.retain(|t| t.task_id != task_id);
        self.tasks.push(HeldTask {
            task_id,
            generation,
            working: false,
            standing,
        });
    }

    /// The queue says the agent works on this task at this generation (an
    /// acceptance or a recovery); a task the agent did not hold is added.
    pub(crate) fn working(&mut self, task_id: &str, generation: u64) {
        match self.tasks.iter_mut().find(|t| t.task_id == task_id) {
            Some(t) => {
                t.generation = generation;
                t.working = true;
            }
            None => self.tasks.push(HeldTask {
                task_id: task_id.to_string(),
                generation,
                working: true,
                standing: false,
            }),
        }
    }

    pub(crate) fn get(&self, task_id: &str) -> Option<&HeldTask> {
        self.tasks.iter().find(|t| t.task_id == task_id)
    }

    /// Whether it holds `task_id` at exactly `generation`.
    pub(crate) fn holds_at(&self, task_id: &str, generation: u64) -> bool {
        self.get(task_id)
            .is_some_and(|t| t.generation == generation)
    }

    /// Lets go of a task; what it was, if held.
    pub(crate) fn release(&mut self, task_id: &str) -> Option<HeldTask> {
        let pos = self.tasks.iter().position(|t| t.task_id == task_id)?;
        Some(self.tasks.remove(pos))
    }

    /// Lets go of every task.
    pub(crate) fn take_all(&mut self) -> Vec<HeldTask> {
        std::mem::take(&mut self.tasks)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &HeldTask> {
        self.tasks.iter()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// Whether any task is accepted.
    pub(crate) fn any_working(&self) -> bool {
        self.tasks.iter().any(|t| t.working)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(slots: u32, reserve_standing: bool) -> HeldTasks {
        let mut h = HeldTasks::default();
        h.set_slots(Slots {
            slots,
            reserve_standing,
        });
        h
    }

    #[test]
    fn one_slot_holds_one_task() {
        let mut h = HeldTasks::default();
        assert_eq!(h.room(), Some(false));
        h.hold("a".into(), 1, false);
        assert_eq!(h.room(), None);
        assert!(!h.fits(true));
        h.working("a", 2);
        assert!(h.holds_at("a", 2) && h.any_working());
        assert!(h.release("a").is_some());
        assert_eq!(h.room(), Some(false));
    }

    #[test]
    fn three_slots_hold_three_tasks() {
        let mut h = held(3, false);
        for (i, id) in ["a", "b", "c"].iter().enumerate() {
            assert_eq!(h.room(), Some(false), "slot {i} free");
            h.hold(id.to_string(), 1, false);
        }
        assert_eq!(h.room(), None);
        assert_eq!(h.take_all().len(), 3);
        assert!(h.is_empty());
    }

    #[test]
    fn the_kept_slot_takes_only_standing_runs() {
        let mut h = held(3, true);
        h.hold("a".into(), 1, false);
        assert_eq!(h.room(), Some(false));
        h.hold("b".into(), 1, false);
        assert_eq!(h.room(), Some(true), "only the kept slot is free");
        assert!(!h.fits(false) && h.fits(true));
        h.hold("run".into(), 1, true);
        assert_eq!(h.room(), None);
        // A standing run in a general slot leaves the kept one for another.
        let mut h = held(2, true);
        h.hold("run".into(), 1, true);
        assert_eq!(h.room(), Some(false));
        h.hold("a".into(), 1, false);
        assert_eq!(h.room(), None);
    }

    #[test]
    fn a_recovered_task_it_did_not_hold_counts() {
        let mut h = held(2, false);
        h.working("x", 4);
        assert_eq!(h.get("x").map(|t| t.working), Some(true));
        h.hold("x".into(), 5, false);
        assert_eq!(h.iter().count(), 1, "a new generation replaces the old");
        assert!(!h.get("x").is_some_and(|t| t.working));
    }
}
