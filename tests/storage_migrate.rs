//! `agentcom-hub migrate` (#22): a whole store from sled to Postgres and back,
//! verified record by record (the digest of every tree, key and value); a hub
//! started on the copy serves what the original held. Runs in the Postgres
//! pass of the suite (`tests/on-postgres`).

mod common;

use std::process::{Command, Output};

use common::*;
use serde_json::json;

fn migrate(from: &str, to: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_agentcom-hub"))
        .args([
            "migrate",
            "--from",
            from,
            "--to",
            to,
            "--failover-ms",
            "1000",
        ])
        .output()
        .expect("run migrate")
}

fn digest_line(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .find(|l| l.contains("sha256"))
        .unwrap_or_else(|| panic!("no digest: {stdout}"))
        .to_string()
}

#[test]
fn a_store_goes_to_postgres_and_back_record_for_record() {
    if !on_postgres() {
        eprintln!("skipped on sled: a migration needs a Postgres server");
        return;
    }
    // A store with tasks (finished and not), an agent, a message, context.
    let mut original = Hub::start_on_sled("");
    let token = register_agent(&original, "w", &[]);
    let mut w = Agent::connect(&original, "w", &token);
    let done = submit(&original, json!({"description": "done"}));
    let assign = w.take(&done);
    w.complete(&assign);
    let waiting = submit(
        &original,
        json!({"description": "waiting", "needed_capabilities": ["x"]}),
    );
    original.put("/api/context/project.style", &json!({"text": "tabs"}));
    original.post(
        "/api/message",
        &json!({"to": "w", "payload": {"text": "hi"}}),
    );
    w.close();
    original.stop();

    let (_, url) = create_database();
    let to_pg = migrate(
        &format!("sled:{}", original.data_dir().display()),
        &format!("postgres:{url}"),
    );
    let first = digest_line(&to_pg);
    // Into a database that holds a store already: refused, nothing changed.
    let again = migrate(
        &format!("sled:{}", original.data_dir().display()),
        &format!("postgres:{url}"),
    );
    assert_eq!(
        again.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    let back_dir = tempfile::tempdir().expect("dir");
    let back = back_dir.path().join("data");
    let to_sled = migrate(
        &format!("postgres:{url}"),
        &format!("sled:{}", back.display()),
    );
    let second = digest_line(&to_sled);
    let sha = |line: &str| line.split("sha256 ").nth(1).unwrap_or_default().to_string();
    assert_eq!(
        sha(&first),
        sha(&second),
        "the round trip keeps every record"
    );
    assert!(!sha(&first).is_empty());
    // Bad endpoints: exit 2.
    assert_eq!(migrate("mysql:x", "sled:/tmp/x").status.code(), Some(2));

    // A hub on the round-tripped copy serves what the original held (its
    // admin token is the original's: the copy holds its hash).
    let mut copy = Hub::start_on_sled("");
    copy.stop();
    std::fs::remove_dir_all(copy.data_dir()).expect("remove");
    std::fs::rename(&back, copy.data_dir()).expect("move the copy in");
    copy.start_again();
    let admin = Some(original.admin_token.as_str());
    for (id, status) in [(&done, "completed"), (&waiting, "queued")] {
        let (code, t) = copy.get_as(&format!("/api/tasks/{id}"), admin);
        assert_eq!((code, t["status"].as_str()), (200, Some(status)), "{t}");
    }
    let (_, style) = copy.get_as("/api/context/project.style", admin);
    assert_eq!(style["text"], "tabs", "{style}");
    let mut w = Agent::connect(&copy, "w", &token);
    w.assert_alive();
}
