//! Agent slots (ext, PROTOCOL.md 6.24): how many tasks an agent runs at once,
//! and whether one of them is kept for standing-order runs.

use serde_json::{Map, Value};

use crate::schema::FieldError;

/// The most tasks one agent may hold at once.
pub const MAX_SLOTS: u32 = 32;

/// The submitter of standing-order runs: a task with it may use a slot kept
/// for standing orders.
pub const STANDING_SUBMITTER: &str = "standing_order";

/// What an agent may hold at once: `slots` tasks, one of them kept for
/// standing-order runs with `reserve_standing`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slots {
    pub slots: u32,
    pub reserve_standing: bool,
}

impl Default for Slots {
    fn default() -> Self {
        Slots {
            slots: 1,
            reserve_standing: false,
        }
    }
}

impl Slots {
    /// What an agent gets: what it asks for (else its token's number, else
    /// one), never more than its token allows. A reserved slot needs two: with
    /// one slot the reservation is dropped.
    pub fn granted(asked: Option<u32>, reserve: Option<bool>, token: Option<u32>) -> Slots {
        let cap = token.unwrap_or(MAX_SLOTS).clamp(1, MAX_SLOTS);
        let slots = asked.or(token).unwrap_or(1).clamp(1, cap);
        Slots {
            slots,
            reserve_standing: reserve.unwrap_or(false) && slots >= 2,
        }
    }

    /// Slots open to any task (the reserved one excluded).
    pub fn general(&self) -> u32 {
        if self.reserve_standing {
            self.slots.saturating_sub(1)
        } else {
            self.slots
        }
    }
}

/// Checks a number of slots given at `field`: 1 to [`MAX_SLOTS`].
pub fn check_slot_count(field: &str, slots: u64) -> Option<FieldError> {
    (slots == 0 || slots > u64::from(MAX_SLOTS)).then(|| {
        FieldError::new(
            field,
            "invalid_value",
            format!("slots must be 1 to {MAX_SLOTS}"),
        )
    })
}

/// The slot rules of an `identify` frame (the types are checked already): a
/// count in range, and a reserved slot only with two or more.
pub(crate) fn check_identify(obj: &Map<String, Value>) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let slots = obj.get("slots").and_then(Value::as_u64);
    if let Some(e) = slots.and_then(|n| check_slot_count("slots", n)) {
        errors.push(e);
    }
    let reserve = obj
        .get("reserve_slot_for_standing")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if reserve && slots == Some(1) {
        errors.push(FieldError::new(
            "reserve_slot_for_standing",
            "invalid_value",
            "a slot kept for standing orders needs slots of 2 or more",
        ));
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn granted_slots_follow_the_agent_within_its_token() {
        let g = |a, r, t| Slots::granted(a, r, t);
        assert_eq!(g(None, None, None), Slots::default());
        assert_eq!(g(Some(3), None, None).slots, 3);
        assert_eq!(g(None, None, Some(4)).slots, 4);
        assert_eq!(g(Some(8), None, Some(4)).slots, 4, "the token caps");
        assert_eq!(g(Some(2), None, Some(4)).slots, 2, "fewer is fine");
        assert_eq!(g(Some(99), None, None).slots, MAX_SLOTS);
        assert!(g(Some(3), Some(true), None).reserve_standing);
        assert!(
            !g(Some(3), Some(true), Some(1)).reserve_standing,
            "one slot keeps nothing back"
        );
        assert_eq!(g(Some(3), Some(true), None).general(), 2);
        assert_eq!(g(Some(3), None, None).general(), 3);
    }

    #[test]
    fn identify_slot_rules() {
        let check = |v: Value| check_identify(v.as_object().expect("object"));
        assert!(
            check(serde_json::json!({"slots": 3, "reserve_slot_for_standing": true})).is_empty()
        );
        assert_eq!(check(serde_json::json!({"slots": 0}))[0].field, "slots");
        assert_eq!(check(serde_json::json!({"slots": 33}))[0].field, "slots");
        assert_eq!(
            check(serde_json::json!({"slots": 1, "reserve_slot_for_standing": true}))[0].field,
            "reserve_slot_for_standing"
        );
    }
}
