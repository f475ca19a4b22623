//! The `agentcom-hub` command line: `agent add|list|revoke` on a real data dir, and
//! structured refusals of bad arguments and config files (exit code 2).

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::*;
use serde_json::json;

fn hub_cli(args: &[&str], data_dir: &Path) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_agentcom-hub"));
    cmd.args(args).arg("--data-dir").arg(data_dir);
    // On Postgres the hub's config names its database.
    let config = data_dir
        .parent()
        .map(|p| p.join("config.toml"))
        .filter(|c| on_postgres() && c.exists() && !args.contains(&"--config"));
    if let Some(c) = config {
        cmd.arg("--config").arg(c);
    }
    cmd.env_remove("AGENTCOM_DATA_DIR")
        .env_remove("AGENTCOM_BIND")
        .env_remove("AGENTCOM_ADMIN_TOKEN")
        .output()
        .expect("run agentcom-hub")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn agent_add_prints_a_token_that_identifies_and_revoke_ends_it() {
    let mut hub = Hub::start();
    hub.stop();
    let dir = hub.data_dir();

    let added = hub_cli(
        &[
            "agent",
            "add",
            "builder",
            "--capabilities",
            "review,code",
            "--credential-group",
            "team-claude",
            "--slots",
            "3",
        ],
        &dir,
    );
    assert!(added.status.success(), "{}", text(&added.stderr));
    let token = text(&added.stdout).trim().to_string();
    assert!(token.starts_with("ac_"), "token line: {token:?}");

    let again = hub_cli(&["agent", "add", "builder"], &dir);
    assert_eq!(again.status.code(), Some(1));
    assert!(
        text(&again.stderr).contains("already exists"),
        "{}",
        text(&again.stderr)
    );

    let listed = hub_cli(&["agent", "list"], &dir);
    assert!(listed.status.success(), "{}", text(&listed.stderr));
    let listing = text(&listed.stdout);
    assert!(
        listing.contains("builder")
            && listing.contains("code,review")
            && listing.contains("group team-claude")
            && listing.contains("slots 3"),
        "{listing}"
    );
    assert!(!listing.contains(&token), "the full token is never listed");

    let bad = hub_cli(&["agent", "add", "x", "--credential-group", ""], &dir);
    assert_eq!(bad.status.code(), Some(2), "{}", text(&bad.stderr));
    let eye = hub_cli(&["agent", "add", "eye", "--role", "observer"], &dir);
    assert!(eye.status.success(), "{}", text(&eye.stderr));
    let listed = text(&hub_cli(&["agent", "list"], &dir).stdout);
    assert!(listed.contains("role observer"), "{listed}");
    let bad = hub_cli(&["agent", "add", "x", "--role", "admin"], &dir);
    assert_eq!(bad.status.code(), Some(2), "{}", text(&bad.stderr));
    for slots in ["0", "33", "many"] {
        let bad = hub_cli(&["agent", "add", "x", "--slots", slots], &dir);
        assert_eq!(bad.status.code(), Some(2), "{}", text(&bad.stderr));
        assert!(
            text(&bad.stderr).contains("--slots"),
            "{}",
            text(&bad.stderr)
        );
    }

    hub.start_again();
    let (_, tokens) = hub.get("/admin/tokens");
    assert_eq!(
        tokens["tokens"][0]["credential_group"], "team-claude",
        "{tokens}"
    );
    assert_eq!(tokens["tokens"][0]["slots"], 3, "{tokens}");
    let mut agent = Agent::open(&hub);
    let identified = agent.identify("builder", &token, None);
    assert_eq!(
        identified,
        json!({"type": "identified", "agent_id": "builder", "slots": 3,
               "reserve_slot_for_standing": false}),
        "the token's slots are granted"
    );
    let (_, agents) = hub.get("/api/agents");
    assert_eq!(
        agents["agents"][0]["capabilities"],
        json!(["code", "review"]),
        "registered capabilities apply when identify names none: {agents}"
    );

    // While the hub runs, the data dir is locked: a clear error, nothing written.
    let locked = hub_cli(&["agent", "add", "intruder"], &dir);
    assert_eq!(locked.status.code(), Some(1));
    assert!(
        text(&locked.stderr).contains("in use"),
        "{}",
        text(&locked.stderr)
    );

    agent.close();
    hub.stop();
    let revoked = hub_cli(&["agent", "revoke", "builder"], &dir);
    assert!(revoked.status.success(), "{}", text(&revoked.stderr));
    let missing = hub_cli(&["agent", "revoke", "intruder"], &dir);
    assert_eq!(missing.status.code(), Some(1), "intruder was never written");

    hub.start_again();
    let mut refused = Agent::open(&hub);
    assert_error(&refused.identify("builder", &token, None), "invalid_token");
}

#[test]
fn bad_config_and_arguments_exit_2_naming_the_problem() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let config = dir.path().join("hub.toml");

    std::fs::write(&config, "acceptance_timeout = 5\n").expect("write config");
    let cfg = config.to_str().expect("utf-8 path");
    let out = hub_cli(&["serve", "--config", cfg], &data);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("acceptance_timeout"),
        "{}",
        text(&out.stderr)
    );

    std::fs::write(&config, "sweep_interval_ms = \"soon\"\n").expect("write config");
    let out = hub_cli(&["serve", "--config", cfg], &data);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("sweep_interval_ms"),
        "{}",
        text(&out.stderr)
    );

    let out = hub_cli(&["serve", "--bind", "nowhere"], &data);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("bind"), "{}", text(&out.stderr));

    let out = hub_cli(&["agent", "add", ""], &data);
    assert_eq!(out.status.code(), Some(2));

    let out = hub_cli(&["agent", "frobnicate"], &data);
    assert_eq!(out.status.code(), Some(2), "clap usage errors exit 2");

    assert!(!data.exists(), "no refused command created the data dir");
}
