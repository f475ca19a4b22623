//! Issue 17, part 5: a whole fleet on one machine. Two `join`s write two units
//! (instances of one template) and two state dirs, the first agent untouched;
//! `list` shows both; `remove` stops and removes one, revoking its token only
//! with `--revoke`.
//!
//! `systemctl` is a fake on PATH that does what systemd would with the unit
//! files join wrote: `restart` starts the template's ExecStart with the
//! instance's drop-in environment, `is-active` tells whether that process
//! lives, `disable --now` stops it.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::*;
use serde_json::Value;

const FAKE_SYSTEMCTL: &str = r#"#!/bin/sh
# A stand-in for `systemctl --user`, driven by the unit files join writes.
echo "$*" >> "$FAKE_SYSTEMD/calls.log"
[ "$1" = "--user" ] || exit 64
shift
units="$XDG_CONFIG_HOME/systemd/user"
alive() { [ -f "$FAKE_SYSTEMD/$1.pid" ] && kill -0 "$(cat "$FAKE_SYSTEMD/$1.pid")" 2>/dev/null; }
case "$1" in
  show-environment|daemon-reload|enable) exit 0 ;;
  restart)
    unit="$2"
    if alive "$unit"; then kill "$(cat "$FAKE_SYSTEMD/$unit.pid")"; fi
    exe=$(sed -n 's/^ExecStart="\([^"]*\)" run$/\1/p' "$units/agentcom-sidecar@.service")
    cfg=$(sed -n 's/^Environment="AGENTCOM_SIDECAR_CONFIG=\(.*\)"$/\1/p' "$units/$unit.d/agentcom.conf")
    [ -n "$exe" ] && [ -n "$cfg" ] || { echo "bad unit files for $unit" >&2; exit 1; }
    AGENTCOM_SIDECAR_CONFIG="$cfg" setsid "$exe" run </dev/null >>"$FAKE_SYSTEMD/$unit.out" 2>&1 &
    echo $! > "$FAKE_SYSTEMD/$unit.pid"
    exit 0 ;;
  is-active)
    if alive "$2"; then echo active; exit 0; else echo inactive; exit 3; fi ;;
  disable)
    [ "$2" = "--now" ] && unit="$3" || unit="$2"
    if alive "$unit"; then kill "$(cat "$FAKE_SYSTEMD/$unit.pid")"; fi
    rm -f "$FAKE_SYSTEMD/$unit.pid"
    exit 0 ;;
esac
echo "unexpected: $*" >&2
exit 1
"#;

/// A temporary machine: HOME, XDG_CONFIG_HOME and the fake systemd.
struct Machine {
    home: tempfile::TempDir,
    fake: PathBuf,
}

impl Machine {
    fn new() -> Machine {
        let home = tempfile::tempdir().expect("home");
        let fake = home.path().join("fake-systemd");
        fs::create_dir_all(fake.join("bin")).expect("fake dir");
        let bin = fake.join("bin").join("systemctl");
        fs::write(&bin, FAKE_SYSTEMCTL).expect("fake systemctl");
        fs::set_permissions(&bin, fs::Permissions::from_mode(0o755)).expect("chmod");
        Machine { home, fake }
    }

    fn xdg(&self) -> PathBuf {
        self.home.path().join("xdg-config")
    }

    fn run(&self, args: &[&str]) -> Output {
        let path = format!(
            "{}:{}",
            self.fake.join("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        Command::new(sidecar_bin())
            .args(args)
            .env("HOME", self.home.path())
            .env("XDG_CONFIG_HOME", self.xdg())
            .env("FAKE_SYSTEMD", &self.fake)
            .env("PATH", path)
            .env_remove("AGENTCOM_SIDECAR_CONFIG")
            .stdin(Stdio::null())
            .output()
            .expect("run agentcom-sidecar")
    }

    fn agent_dir(&self, agent: &str) -> PathBuf {
        self.home
            .path()
            .join(".agentcom")
            .join("sidecar")
            .join(agent)
    }

    fn pid(&self, agent: &str) -> Option<i32> {
        fs::read_to_string(
            self.fake
                .join(format!("agentcom-sidecar@{agent}.service.pid")),
        )
        .ok()?
        .trim()
        .parse()
        .ok()
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        for entry in fs::read_dir(&self.fake).into_iter().flatten().flatten() {
            let p = entry.path();
            if p.extension().is_some_and(|e| e == "pid") {
                if let Some(pid) = fs::read_to_string(&p)
                    .ok()
                    .and_then(|t| t.trim().parse().ok())
                {
                    signal(pid, libc::SIGKILL);
                }
            }
        }
    }
}

fn invite(hub: &Hub, name: &str) -> String {
    let (status, resp) = hub.post("/admin/invites", &serde_json::json!({"agent_id": name}));
    assert_eq!(status, 201, "{resp}");
    resp["invite"]
        .as_str()
        .or_else(|| resp["code"].as_str())
        .unwrap_or_else(|| panic!("an invite code: {resp}"))
        .to_string()
}

fn join(m: &Machine, hub: &Hub, agent: &str) -> Output {
    let code = invite(hub, agent);
    m.run(&[
        "join",
        "--hub",
        &hub.url(""),
        "--agent-id",
        agent,
        "--invite",
        &code,
        "--verify-timeout-secs",
        "60",
    ])
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Asserts the command succeeded; answers its standard output.
fn ok(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what}: {}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    let exists = unsafe { libc::kill(pid, 0) == 0 };
    exists && !fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") Z"))
}

fn file(p: &Path) -> String {
    fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn two_joins_two_units_two_dirs_then_list_and_remove() {
    let hub = Hub::start();
    let m = Machine::new();

    let stdout = ok(&join(&m, &hub, "alpha"), "join alpha");
    assert!(
        stdout.contains("agentcom-sidecar@alpha.service"),
        "{stdout}"
    );
    let alpha_pid = m.pid("alpha").expect("alpha started by its unit");
    let alpha_config = file(&m.agent_dir("alpha").join("config.toml"));
    let units = m.xdg().join("systemd").join("user");
    let template = file(&units.join("agentcom-sidecar@.service"));
    assert!(template.contains("KillMode=process"), "{template}");

    ok(&join(&m, &hub, "beta"), "join beta");
    // Two instances of one template, two directories; the first one untouched.
    for agent in ["alpha", "beta"] {
        let drop_in =
            file(&units.join(format!("agentcom-sidecar@{agent}.service.d/agentcom.conf")));
        let config = m.agent_dir(agent).join("config.toml");
        assert!(drop_in.contains(&config.display().to_string()), "{drop_in}");
        assert!(m.agent_dir(agent).join("state").is_dir());
    }
    assert_eq!(
        file(&m.agent_dir("alpha").join("config.toml")),
        alpha_config
    );
    assert_eq!(m.pid("alpha"), Some(alpha_pid), "alpha was not restarted");
    assert!(alive(alpha_pid), "alpha still runs");
    let calls = file(&m.fake.join("calls.log"));
    assert_eq!(
        calls
            .matches("restart agentcom-sidecar@alpha.service")
            .count(),
        1,
        "{calls}"
    );
    for agent in ["alpha", "beta"] {
        let ok = wait_for(SOON, || {
            hub.agent(agent)
                .is_some_and(|a| a["fsm_state"] != "offline")
        });
        assert!(ok, "{agent} is not online");
    }

    // list shows both, with their state.
    let listed = ok(&m.run(&["list", "--json"]), "list");
    let rows: Value = serde_json::from_str(&listed).expect("JSON");
    let rows = rows.as_array().expect("array");
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(rows[0]["agent_id"], "alpha");
    assert_eq!(rows[0]["state"], "active");
    assert_eq!(rows[1]["agent_id"], "beta");
    assert_eq!(rows[1]["unit"], "agentcom-sidecar@beta.service");
    // Without --config, a command must be told which agent.
    let out = m.run(&["inbox"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("alpha") && text(&out.stderr).contains("beta"));

    // remove beta (token kept), then alpha with --revoke.
    let beta_pid = m.pid("beta").expect("beta pid");
    ok(&m.run(&["remove", "beta"]), "remove beta");
    assert!(
        wait_for(Duration::from_secs(10), || !alive(beta_pid)),
        "beta still runs"
    );
    assert!(!units.join("agentcom-sidecar@beta.service.d").exists());
    assert!(!m.agent_dir("beta").exists(), "moved aside");
    assert!(alive(alpha_pid), "removing beta left alpha alone");
    let (_, tokens) = hub.get("/admin/tokens");
    let has = |name: &str| tokens.to_string().contains(&format!("\"{name}\""));
    assert!(
        has("beta"),
        "beta's token is kept without --revoke: {tokens}"
    );

    let stdout = ok(&m.run(&["remove", "alpha", "--revoke"]), "remove");
    assert!(stdout.contains("revoked"), "{stdout}");
    let (_, tokens) = hub.get("/admin/tokens");
    assert!(
        !tokens.to_string().contains("\"alpha\""),
        "alpha revoked: {tokens}"
    );
    let out = m.run(&["list", "--json"]);
    assert_eq!(text(&out.stdout).trim(), "[]");
    let out = m.run(&["remove", "nobody"]);
    assert_eq!(out.status.code(), Some(1));
}
