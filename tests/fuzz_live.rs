//! Live fuzzing: random and mutated frames at a running hub, over real sockets.
//! The hub must answer every frame with a well-formed JSON object (or nothing, for
//! frames that need no reply), stay up, and keep scheduling work afterwards.
//!
//! Deterministic: a seeded generator (seed printed; replay with
//! `AGENTCOM_FUZZ_SEED=<n>`), a fixed number of frames, bounded waits.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

const FRAMES: usize = 1500;

/// xorshift64*: tiny, seedable, good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

fn odd_value(rng: &mut Rng) -> Value {
    let choices = [
        json!(null),
        json!(true),
        json!(-1),
        json!(1.5),
        json!(u64::MAX),
        json!(i64::MIN),
        json!(""),
        json!("x".repeat(3000)),
        json!("\u{0}\u{202e}☃"),
        json!([]),
        json!([1, "a", null]),
        json!({}),
        json!({"nested": {"deeper": [{"x": 1}]}}),
        json!("task-0000000000000000"),
        json!("urgent"),
    ];
    rng.pick(&choices).clone()
}

fn valid_frames() -> Vec<Value> {
    vec![
        json!({"type": "ping"}),
        json!({"type": "status", "status": "busy"}),
        json!({"type": "list_agents"}),
        json!({"type": "message", "to": "fuzz-0", "payload": {"a": 1}}),
        json!({"type": "channel_subscribe", "channel": "none"}),
        json!({"type": "channel_history", "channel": "none", "limit": 5}),
        json!({"type": "task_accepted", "task_id": "task-1", "generation": 1}),
        json!({"type": "task_progress", "task_id": "task-1", "progress": 10}),
        json!({"type": "task_complete", "task_id": "task-1", "generation": 1, "result": {}}),
        json!({"type": "task_failed", "task_id": "task-1", "generation": 1, "error": "e"}),
        json!({"type": "task_rejected", "task_id": "task-1", "reason": "busy"}),
        json!({"type": "task_blocked", "task_id": "task-1", "generation": 1, "reason": "r"}),
        json!({"type": "task_recovering", "task_id": "task-1"}),
        json!({"type": "state_report", "task_id": "task-1", "generation": 1}),
        json!({"type": "wake_result", "task_id": "task-1", "status": "success"}),
        json!({"type": "agent_restarting"}),
        json!({"type": "identify", "agent_id": "fuzz-0", "token": "nope"}),
    ]
}

/// One fuzzed frame: a mutated valid frame, or raw garbage.
fn fuzzed(rng: &mut Rng, valid: &[Value]) -> String {
    let mut frame = rng.pick(valid).clone();
    match rng.below(8) {
        0 => {
            // Garbage bytes rendered as text.
            let len = rng.below(200);
            (0..len)
                .map(|_| char::from_u32(rng.below(0x2FF) as u32 + 1).unwrap_or('?'))
                .collect()
        }
        1 => {
            // Truncated JSON.
            let text = frame.to_string();
            let cut = rng.below(text.len());
            text.chars().take(cut).collect()
        }
        2 => {
            // A field gets a value of a random type.
            if let Some(obj) = frame.as_object_mut() {
                let keys: Vec<String> = obj.keys().cloned().collect();
                let key = rng.pick(&keys).clone();
                obj.insert(key, odd_value(rng));
            }
            frame.to_string()
        }
        3 => {
            // A field disappears.
            if let Some(obj) = frame.as_object_mut() {
                let keys: Vec<String> = obj.keys().cloned().collect();
                let key = rng.pick(&keys).clone();
                obj.remove(&key);
            }
            frame.to_string()
        }
        4 => {
            // The type is changed or made odd.
            frame["type"] = odd_value(rng);
            frame.to_string()
        }
        5 => {
            // A non-object document.
            odd_value(rng).to_string()
        }
        6 => {
            // Extra unknown fields (must be ignored).
            frame["protocol_version"] = odd_value(rng);
            frame["zzz"] = odd_value(rng);
            frame.to_string()
        }
        _ => frame.to_string(),
    }
}

#[test]
fn random_and_mutated_frames_get_well_formed_answers_and_the_hub_keeps_working() {
    let seed: u64 = std::env::var("AGENTCOM_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| now_ms() | 1);
    println!("fuzz seed: {seed} (replay with AGENTCOM_FUZZ_SEED={seed})");
    let mut rng = Rng(seed);
    let hub = Hub::start();
    let agents: Vec<(String, String)> = (0..30)
        .map(|i| {
            let id = format!("fuzz-{i}");
            let token = register_agent(&hub, &id, &[]);
            (id, token)
        })
        .collect();
    let valid = valid_frames();
    let mut next_agent = 0;
    let mut sent = 0;
    let mut answered = 0;
    // Bounded: every pass sends at least one frame and the total is FRAMES.
    while sent < FRAMES {
        // Alternate identified and anonymous sockets; each gets fewer than the 10
        // validation errors that close it, so the hub's answers stay observable.
        let mut socket = Agent::open(&hub);
        let identified = next_agent < agents.len() && rng.below(2) == 0;
        if identified {
            let (id, token) = &agents[next_agent];
            next_agent += 1;
            socket.identify_ok(id, token, None);
        }
        let mut violations = 0;
        while violations < 8 && sent < FRAMES {
            let text = fuzzed(&mut rng, &valid);
            socket
                .try_send_text(&text)
                .unwrap_or_else(|e| panic!("seed {seed}: hub dropped the socket on {text:?}: {e}"));
            sent += 1;
            if std::env::var("FUZZ_TRACE").is_ok() {
                println!("-> {text}");
            }
            // A ping after every frame: everything before its answer answers the
            // frame. Identified, the ping gets `pong`; anonymous, every frame gets
            // exactly one answer and the ping's is `not_identified`.
            socket.send(json!({"type": "ping"}));
            let mut answers = 0;
            let deadline = std::time::Instant::now() + REPLY_TIMEOUT;
            loop {
                assert!(
                    std::time::Instant::now() < deadline,
                    "seed {seed}: no pong after {text:?}"
                );
                match socket.recv_any(REPLY_TIMEOUT) {
                    Incoming::Frame(reply) => {
                        if std::env::var("FUZZ_TRACE").is_ok() {
                            println!("<- {reply}");
                        }
                        assert!(
                            reply.is_object() && reply["type"].is_string(),
                            "seed {seed}: malformed answer {reply} to {text:?}"
                        );
                        answers += 1;
                        if reply["type"] == "pong" || (!identified && answers == 2) {
                            assert!(
                                identified || reply["error"] == "not_identified",
                                "seed {seed}: {reply}"
                            );
                            break;
                        }
                        answered += 1;
                        if reply["error"] == "validation_failed" {
                            violations += 1;
                            assert!(
                                reply["errors"].as_array().is_some_and(|e| !e.is_empty()),
                                "seed {seed}: {reply}"
                            );
                        }
                    }
                    other => panic!("seed {seed}: after {text:?} got {other:?}"),
                }
            }
        }
        socket.close();
    }
    println!("fuzz: frames={sent} answered={answered}");
    let (status, health) = hub.get("/health");
    assert_eq!((status, &health["status"]), (200, &json!("ok")), "{health}");
    // Work still flows after the storm.
    let worker = Worker::spawn(&hub, "after-storm", Duration::from_millis(5));
    let task_id = submit(&hub, json!({"description": "after the fuzz"}));
    assert!(
        wait_for(Duration::from_secs(10), || get_task(&hub, &task_id)
            ["status"]
            == "completed"),
        "{}",
        get_task(&hub, &task_id)
    );
    let log = worker.stop();
    assert!(log.errors.is_empty(), "{log:?}");
}
