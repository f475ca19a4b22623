//! Issue test 7: onboarding end to end in a temporary HOME against a real hub:
//! `agentcom-hub agent invite` → `agentcom-sidecar join` → verified. An invalid
//! or reused invite gives a clear error and writes nothing.
//!
//! There is no systemd user session here (and the environment makes sure of
//! it), so join prints the manual steps and starts the sidecar as a detached
//! background process with a pid file, which the test stops.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::*;

/// Stops the background sidecar join started (pid file), even on panic.
struct Background(PathBuf);

impl Drop for Background {
    fn drop(&mut self) {
        let Ok(text) = fs::read_to_string(&self.0) else {
            return;
        };
        let Ok(pid) = text.trim().parse::<i32>() else {
            return;
        };
        signal(pid, libc::SIGTERM);
        let gone = wait_for(Duration::from_secs(10), || {
            !Path::new(&format!("/proc/{pid}")).exists()
                || fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") Z"))
        });
        if !gone {
            signal(pid, libc::SIGKILL);
        }
    }
}

fn invite(hub: &Hub, name: &str, caps: Option<&str>) -> Vec<String> {
    let mut cmd = Command::new(hub_bin());
    cmd.args(["agent", "invite", name, "--hub", &hub.url("")])
        .env("AGENTCOM_ADMIN_TOKEN", &hub.admin_token);
    if let Some(c) = caps {
        cmd.args(["--capabilities", c]);
    }
    let out = cmd.output().expect("run agentcom-hub agent invite");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "invite failed: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "exactly one line: {stdout:?}");
    let words: Vec<String> = lines[0]
        .split_whitespace()
        .map(|w| w.trim_matches('\'').to_string())
        .collect();
    assert_eq!(&words[..2], ["agentcom-sidecar", "join"], "{stdout}");
    words[2..].to_vec()
}

fn join(home: &Path, args: &[String]) -> Output {
    let runtime = home.join("no-runtime");
    let _ = fs::create_dir_all(&runtime);
    Command::new(sidecar_bin())
        .arg("join")
        .args(args)
        .args(["--verify-timeout-secs", "60"])
        .env("HOME", home)
        .env("XDG_RUNTIME_DIR", &runtime)
        .env("DBUS_SESSION_BUS_ADDRESS", "unix:path=/nonexistent/bus")
        .env_remove("AGENTCOM_SIDECAR_CONFIG")
        .stdin(Stdio::null())
        .output()
        .expect("run agentcom-sidecar join")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn arg_after(args: &[String], flag: &str) -> String {
    let i = args.iter().position(|a| a == flag).expect("flag present");
    args[i + 1].clone()
}

#[test]
fn invite_join_verify_then_rerun_resumes_and_bad_invites_write_nothing() {
    let hub = Hub::start();
    let home = tempfile::tempdir().expect("home");
    let args = invite(&hub, "newbie", Some("code,review"));
    assert_eq!(arg_after(&args, "--agent-id"), "newbie");
    assert_eq!(arg_after(&args, "--capabilities"), "code,review");
    // Each agent has its own directory (a machine runs several).
    let sidecar_dir = home.path().join(".agentcom").join("sidecar").join("newbie");
    let _bg = Background(sidecar_dir.join("sidecar.pid"));

    let out = join(home.path(), &args);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(
        out.status.success(),
        "join failed:\n{stdout}\n{stderr}\n{}",
        tail(&sidecar_dir.join("sidecar.log"), 30)
    );
    assert!(
        stdout.contains("no systemd user service was installed"),
        "{stdout}"
    );
    assert!(
        stdout.contains("run --config"),
        "manual steps printed: {stdout}"
    );
    assert!(stdout.contains("verified:"), "{stdout}");

    // The config: complete, private, and usable.
    let config = sidecar_dir.join("config.toml");
    let mode = fs::metadata(&config)
        .expect("config written")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "config holds the token");
    let cfg: toml::Table =
        toml::from_str(&fs::read_to_string(&config).expect("read")).expect("TOML");
    assert_eq!(cfg["agent_id"].as_str(), Some("newbie"));
    assert_eq!(cfg["hub_url"].as_str(), Some(hub.ws_url().as_str()));
    assert!(cfg["token"].as_str().is_some_and(|t| !t.is_empty()));
    let caps: Vec<&str> = cfg["capabilities"]
        .as_array()
        .expect("caps")
        .iter()
        .filter_map(|c| c.as_str())
        .collect();
    assert_eq!(caps, ["code", "review"]);

    // The hub saw the onboarding task completed by the sidecar itself.
    let task_id = stdout
        .split_whitespace()
        .find(|w| w.starts_with("task-"))
        .expect("task id in the output")
        .to_string();
    let t = hub.task(&task_id);
    assert_eq!(t["status"], "completed", "{t}");
    assert_eq!(t["result"]["onboarding"], "ok", "{t}");
    assert_eq!(t["metadata"]["onboarding"], true, "{t}");
    assert!(hub
        .agent("newbie")
        .is_some_and(|a| a["fsm_state"] != "offline"));

    // Re-running resumes: the invite is not needed again, the running sidecar is
    // reused, and the path is verified again.
    let pid_before = fs::read_to_string(sidecar_dir.join("sidecar.pid")).expect("pid file");
    let out = join(home.path(), &args);
    let stdout2 = text(&out.stdout);
    assert!(
        out.status.success(),
        "rerun failed:\n{stdout2}\n{}",
        text(&out.stderr)
    );
    assert!(stdout2.contains("already exists"), "{stdout2}");
    assert!(stdout2.contains("reusing it"), "{stdout2}");
    assert!(stdout2.contains("verified:"), "{stdout2}");
    assert_eq!(
        fs::read_to_string(sidecar_dir.join("sidecar.pid")).expect("pid file"),
        pid_before
    );

    // The used invite in a fresh HOME: refused, nothing written.
    let home2 = tempfile::tempdir().expect("home2");
    let out = join(home2.path(), &args);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let err = text(&out.stderr);
    assert!(
        err.contains("refused the invite") && err.contains("Nothing was written"),
        "{err}"
    );
    assert!(
        !home2.path().join(".agentcom").exists(),
        "nothing written for a reused invite"
    );

    // An invalid code for a fresh name: refused, nothing written.
    let home3 = tempfile::tempdir().expect("home3");
    let mut bad = invite(&hub, "other", None);
    let i = bad.iter().position(|a| a == "--invite").expect("--invite");
    bad[i + 1] = "not-a-real-invite".into();
    let out = join(home3.path(), &bad);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("refused the invite"),
        "{}",
        text(&out.stderr)
    );
    assert!(
        !home3.path().join(".agentcom").exists(),
        "nothing written for a bad invite"
    );

    // An invite for another agent name: refused, nothing written.
    let home4 = tempfile::tempdir().expect("home4");
    let mut wrong = invite(&hub, "third", None);
    let i = wrong
        .iter()
        .position(|a| a == "--agent-id")
        .expect("--agent-id");
    wrong[i + 1] = "impostor".into();
    let out = join(home4.path(), &wrong);
    assert_eq!(out.status.code(), Some(1));
    assert!(!home4.path().join(".agentcom").exists());
}

#[test]
fn join_with_several_hubs_writes_hub_urls_and_the_sidecar_finds_the_live_one() {
    // The hub's config names two hubs of one database; the first is gone.
    let (live, gone) = (free_port(), free_port());
    let hubs = [
        format!("http://127.0.0.1:{gone}"),
        format!("http://127.0.0.1:{live}"),
    ];
    let hub = Hub::start_on_port(
        &format!("hub_urls = [\"{}\", \"{}\"]\n", hubs[0], hubs[1]),
        live,
    );
    let home = tempfile::tempdir().expect("home");
    let mut args = invite(&hub, "pair", None);
    // join too takes the list, and registers with the hub that answers.
    let i = args.iter().position(|a| a == "--hub").expect("--hub");
    args[i + 1] = hubs.join(",");
    let sidecar_dir = home.path().join(".agentcom").join("sidecar").join("pair");
    let _bg = Background(sidecar_dir.join("sidecar.pid"));
    let out = join(home.path(), &args);
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "join failed:\n{stdout}\n{}\n{}",
        text(&out.stderr),
        tail(&sidecar_dir.join("sidecar.log"), 30)
    );
    assert!(stdout.contains("verified:"), "{stdout}");
    let cfg: toml::Table = toml::from_str(
        &fs::read_to_string(sidecar_dir.join("config.toml")).expect("config written"),
    )
    .expect("TOML");
    let list = |key: &str| -> Vec<String> {
        cfg[key]
            .as_array()
            .unwrap_or_else(|| panic!("{key} in {cfg:?}"))
            .iter()
            .filter_map(|u| u.as_str().map(str::to_string))
            .collect()
    };
    assert_eq!(
        list("hub_urls"),
        [
            format!("ws://127.0.0.1:{gone}/ws"),
            format!("ws://127.0.0.1:{live}/ws")
        ]
    );
    assert_eq!(list("hub_api_urls"), hubs);
    assert!(!cfg.contains_key("hub_url"), "{cfg:?}");
    // The sidecar passed over the hub that is gone.
    assert!(hub
        .agent("pair")
        .is_some_and(|a| a["fsm_state"] != "offline"));
}
