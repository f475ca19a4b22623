//! Any JSON body as a task submission: a spec or field errors, never a panic;
//! accepted specs keep every documented bound.
#![no_main]

use agentcom_protocol::{parse_task_spec, MAX_DESCRIPTION};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    match parse_task_spec(&value, "") {
        Ok(spec) => {
            assert!(spec.priority <= 3);
            assert!(!spec.description.is_empty());
            assert!(spec.description.chars().count() <= MAX_DESCRIPTION);
            let mut sorted = spec.needed_capabilities.clone();
            sorted.sort();
            sorted.dedup();
            assert_eq!(sorted, spec.needed_capabilities);
        }
        Err(errors) => assert!(!errors.is_empty()),
    }
});
