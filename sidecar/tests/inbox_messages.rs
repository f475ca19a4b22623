//! Issue 17, part 4: messages reach the agent exactly once, through restarts.
//! Direct messages and broadcasts to an agent whose sidecar is `kill -9`ed and
//! restarted, and whose connection is cut (the hub is killed and restarted), at
//! random points: each is in the inbox once, in order per sender. A broadcast
//! sent while an agent was offline is in its inbox after it connects. The CLI
//! reads (`inbox`) and sends (`send`).

mod common;

use std::collections::{HashMap, HashSet};
use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

/// `agentcom-sidecar inbox --json --peek` of `sc`: the unread messages.
fn peek(sc: &Sidecar) -> Vec<Value> {
    let out = Command::new(sidecar_bin())
        .args(["inbox", "--json", "--peek", "--config"])
        .arg(sc.config_path())
        .output()
        .expect("run agentcom-sidecar inbox");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect()
}

/// Sends one message over HTTP, again while the hub is down (bounded);
/// answers its id.
fn send(hub: &Hub, token: &str, body: &Value) -> String {
    for _ in 0..200 {
        match try_http(
            "POST",
            &hub.url("/api/message"),
            Some(token),
            Some(body),
            Duration::from_secs(5),
        ) {
            Ok((200, resp)) => {
                return resp["id"]
                    .as_str()
                    .unwrap_or_else(|| panic!("no id in {resp}"))
                    .to_string()
            }
            Ok((status, resp)) if status < 500 => panic!("message refused: {status} {resp}"),
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
    }
    panic!("the hub did not take the message {body}");
}

#[test]
fn messages_reach_the_inbox_exactly_once_through_kills_and_cut_connections() {
    let seed = chaos_seed();
    let mut rng = ChaosRng::new(seed);
    // The talker sends faster than an agent's default message rate, and faster
    // than a sidecar writes (two fsyncs a message): a mailbox large enough that
    // the cap never evicts (evictions are counted, and checked below).
    let mut hub =
        Hub::start_with_config("rate_limit_normal_per_min = 100000\nmailbox_cap = 100000\n");
    let talker = hub.register_agent("talker");
    let mut sc = Sidecar::start(&hub, "listener", "");
    // Registered, but offline for every broadcast below.
    let mut late = Sidecar::prepare(&hub, "late", "");
    let admin = hub.admin_token.clone();

    // (sender, n) of every message sent to the listener, in send order.
    let mut sent: HashMap<String, (String, u64)> = HashMap::new();
    let mut broadcasts = Vec::new();
    let mut faults = 0;
    // Long mode: ten times as many messages (and faults).
    let total: u64 = if chaos_long() { 2200 } else { 220 };
    println!("inbox chaos seed={seed} messages={total} (replay: AGENTCOM_CHAOS_SEED={seed})");
    for n in 0..total {
        match rng.range(0, 25) {
            0 => {
                sc.kill9();
                sc.spawn();
                faults += 1;
            }
            1 => {
                hub.kill9();
                hub.start_again();
                faults += 1;
            }
            _ => {}
        }
        let (sender, token, body) = if n % 11 == 10 {
            ("talker", &talker, json!({"payload": {"n": n, "all": true}}))
        } else if n % 2 == 0 {
            (
                "admin",
                &admin,
                json!({"to": "listener", "payload": {"n": n}}),
            )
        } else {
            (
                "talker",
                &talker,
                json!({"to": "listener", "payload": {"n": n}}),
            )
        };
        let id = send(&hub, token, &body);
        if n % 11 == 10 {
            broadcasts.push(id.clone());
        }
        sent.insert(id, (sender.to_string(), n));
    }
    assert_eq!(broadcasts.len() as u64, total / 11);

    let mut inbox = Vec::new();
    let complete = wait_for(SOON, || {
        inbox = peek(&sc);
        let have: HashSet<&str> = inbox.iter().filter_map(|m| m["id"].as_str()).collect();
        sent.keys().all(|id| have.contains(id.as_str()))
    });
    // A send the hub took but could not answer (it was killed) was sent again:
    // such a first copy may be in the inbox too, once, like any message.
    let all: Vec<String> = inbox
        .iter()
        .map(|m| m["id"].as_str().unwrap_or_default().to_string())
        .collect();
    let unique_all: HashSet<&String> = all.iter().collect();
    assert_eq!(unique_all.len(), all.len(), "a message twice (seed {seed})");
    let ids: Vec<String> = all.into_iter().filter(|id| sent.contains_key(id)).collect();
    let unique: HashSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "a message twice (seed {seed})");
    let missing: Vec<&String> = sent.keys().filter(|id| !unique.contains(id)).collect();
    assert!(
        complete && missing.is_empty(),
        "seed {seed}, {faults} faults: {} of {} in the inbox, missing {missing:?}\n{}",
        ids.len(),
        sent.len(),
        sc.log_tail()
    );
    println!(
        "inbox chaos: faults={faults} sent={} in_inbox={} duplicated=0 missing=0",
        sent.len(),
        ids.len()
    );
    // In order per sender.
    let mut last: HashMap<String, u64> = HashMap::new();
    for id in &ids {
        let (sender, n) = &sent[id];
        if let Some(before) = last.insert(sender.clone(), *n) {
            assert!(before < *n, "seed {seed}: {sender}'s {n} after {before}");
        }
    }
    // Safe in the inbox means acknowledged: the hub's mailbox is empty.
    let ok = wait_for(SOON, || hub.get("/api/mailbox/listener").1["count"] == 0);
    assert!(ok, "{}", hub.get("/api/mailbox/listener").1);

    // Reading marks read; --ack marks one; a second read shows nothing new.
    let out = Command::new(sidecar_bin())
        .args(["inbox", "--config"])
        .arg(sc.config_path())
        .output()
        .expect("inbox");
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).lines().count(),
        inbox.len()
    );
    assert!(peek(&sc).is_empty());

    // The late agent connects: every broadcast is in its inbox, in order.
    late.spawn();
    late.wait_online(&hub);
    let mut got = Vec::new();
    let ok = wait_for(SOON, || {
        got = peek(&late)
            .iter()
            .filter_map(|m| m["id"].as_str())
            .filter(|id| broadcasts.iter().any(|b| b == id))
            .map(str::to_string)
            .collect();
        got.len() >= broadcasts.len()
    });
    assert!(
        ok && got == broadcasts,
        "late inbox {got:?} != {broadcasts:?}"
    );
}

#[test]
fn send_and_message_command_work_from_the_cli() {
    let hub = Hub::start();
    let d = tempfile::tempdir().expect("tempdir");
    let woke = d.path().join("woke.log");
    let mut rx = Sidecar::prepare(
        &hub,
        "rx",
        &format!(
            "message_command = {}\n",
            toml_str(&format!(
                "printf '%s %s\\n' \"$AGENTCOM_MESSAGE_FROM\" \"$AGENTCOM_MESSAGE_ID\" >> '{}'",
                woke.display()
            ))
        ),
    );
    rx.spawn();
    rx.wait_online(&hub);
    let tx = Sidecar::prepare(&hub, "tx", "");
    let out = Command::new(sidecar_bin())
        .args(["send", "rx", "hello from tx", "--type", "note", "--config"])
        .arg(tx.config_path())
        .output()
        .expect("send");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sent: Value = serde_json::from_slice(&out.stdout).expect("JSON answer");
    let id = sent["id"].as_str().expect("id").to_string();
    let ok = wait_for(SOON, || {
        std::fs::read_to_string(&woke).is_ok_and(|t| t.contains(&format!("tx {id}")))
    });
    assert!(ok, "message_command did not run\n{}", rx.log_tail());
    let unread = peek(&rx);
    assert_eq!(unread.len(), 1, "{unread:?}");
    assert_eq!(unread[0]["payload"]["text"], "hello from tx");
    assert_eq!(unread[0]["message_type"], "note");
    // --ack of an unknown id fails; of the message, marks it read.
    let status = |args: &[&str]| {
        Command::new(sidecar_bin())
            .args(args)
            .arg("--config")
            .arg(rx.config_path())
            .status()
            .expect("inbox")
    };
    assert!(!status(&["inbox", "--ack", "msg-nope"]).success());
    assert!(status(&["inbox", "--ack", &id]).success());
    assert!(peek(&rx).is_empty());
    // A bad payload file is refused before anything is sent.
    let bad = d.path().join("bad.json");
    std::fs::write(&bad, "[1]").expect("write");
    let out = Command::new(sidecar_bin())
        .args(["send", "rx", "--json"])
        .arg(&bad)
        .arg("--config")
        .arg(tx.config_path())
        .output()
        .expect("send");
    assert_eq!(out.status.code(), Some(2));
}

/// The ids in `sc`'s inbox (unread), each once or the test fails.
fn inbox_ids(sc: &Sidecar) -> Vec<String> {
    let ids: Vec<String> = peek(sc)
        .iter()
        .map(|m| m["id"].as_str().unwrap_or_default().to_string())
        .collect();
    let unique: HashSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "a message twice: {ids:?}");
    ids
}

/// Waits until `sc`'s inbox holds every one of `ids`; answers what it holds.
fn wait_for_inbox(sc: &Sidecar, ids: &[String]) -> Vec<String> {
    let mut have = Vec::new();
    let ok = wait_for(SOON, || {
        have = inbox_ids(sc);
        ids.iter().all(|id| have.contains(id))
    });
    assert!(
        ok,
        "inbox {have:?} misses some of {ids:?}\n{}",
        sc.log_tail()
    );
    have
}

#[test]
fn a_hub_restored_from_an_older_backup_loses_no_message() {
    if skip_on_postgres("a sled data dir restored from a backup file") {
        return;
    }
    let mut hub = Hub::start();
    let sc = Sidecar::start(&hub, "listener", "");
    let admin = hub.admin_token.clone();
    let file = hub.backup_now();

    // Three messages the backup does not hold: the inbox's cursor is 3.
    let mut sent: Vec<String> = (1..=3)
        .map(|n| {
            send(
                &hub,
                &admin,
                &json!({"to": "listener", "payload": {"n": n}}),
            )
        })
        .collect();
    wait_for_inbox(&sc, &sent);

    // The hub comes back from the older backup: its mailbox sequences start
    // again at 1, below the sidecar's cursor.
    hub.restore_backup(&file);
    sc.wait_online(&hub);
    for n in 4..=5 {
        sent.push(send(
            &hub,
            &admin,
            &json!({"to": "listener", "payload": {"n": n}}),
        ));
    }
    wait_for_inbox(&sc, &sent);

    // The sidecar restarts: its cursor comes from the inbox again (3), above
    // the hub's. What comes next is kept too, once.
    let mut sc = sc;
    sc.kill9();
    sc.spawn();
    sc.wait_online(&hub);
    for n in 6..=8 {
        sent.push(send(
            &hub,
            &admin,
            &json!({"to": "listener", "payload": {"n": n}}),
        ));
    }
    let have = wait_for_inbox(&sc, &sent);
    assert_eq!(have, sent, "in order, each once");
    // Safe in the inbox means acknowledged: the hub's mailbox is empty.
    let ok = wait_for(SOON, || hub.get("/api/mailbox/listener").1["count"] == 0);
    assert!(ok, "{}", hub.get("/api/mailbox/listener").1);
}
