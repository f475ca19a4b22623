//! Any bytes as an agent frame: decoding and validation must answer Ok or a
//! structured error, never panic, and every error must serialize.
#![no_main]

use agentcom_protocol::{parse_client_frame, ServerFrame};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    match parse_client_frame(&text) {
        Ok(frame) => {
            // A frame that passed validation re-encodes and decodes to itself.
            let again = serde_json::to_string(&frame).expect("valid frames serialize");
            assert_eq!(parse_client_frame(&again).ok(), Some(frame));
        }
        Err(e) => {
            let reply: ServerFrame = e.into();
            serde_json::to_string(&reply).expect("error frames serialize");
        }
    }
});
