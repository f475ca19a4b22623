//! Issue test 2: task text with `$(...)`, backticks, quotes and newlines reaches
//! the agent intact and executes nothing, whether the wake command is a shell
//! string (values only in environment variables) or an argv list (placeholders
//! substituted as whole arguments).

mod common;

use std::fs;
use std::path::Path;

use common::*;
use serde_json::{json, Value};

fn hostile(dir: &Path) -> String {
    let d = dir.display();
    format!(
        "fix it $(touch {d}/pwned1) `touch {d}/pwned2` ${{HOME}} 'single' \"double\" \\ back\nsecond line; touch {d}/pwned3 #\n$((1+1)) * ?\n"
    )
}

fn assert_nothing_ran(dir: &Path) {
    for f in ["pwned1", "pwned2", "pwned3"] {
        assert!(
            !dir.join(f).exists(),
            "{f} was created: task text was executed"
        );
    }
}

fn run_case(agent_id: &str, wake_for: impl Fn(&Path, &str) -> String) {
    let hub = Hub::start();
    let mut sc = Sidecar::prepare(&hub, agent_id, "");
    let dir = sc.dir.path().to_path_buf();
    let agent = fake_agent(&dir, false);
    let wake = wake_for(&dir, &agent);
    let cfg_path = sc.config_path();
    let mut cfg = fs::read_to_string(&cfg_path).expect("config");
    cfg.push_str(&wake);
    fs::write(&cfg_path, cfg).expect("config");
    sc.spawn();
    sc.wait_online(&hub);

    let description = hostile(&dir);
    let task_id = hub.submit_for(agent_id, json!({"description": description}));
    let done = hub.wait_status(&task_id, "completed", SOON);
    assert_eq!(done["result"]["status"], "success", "{done}");

    assert_nothing_ran(&dir);
    // Byte for byte, through the environment variable.
    let got = fs::read_to_string(dir.join(format!("desc-{task_id}.txt"))).expect("desc");
    assert_eq!(got, description);
    // And through the copies the command itself made.
    let copied = fs::read_to_string(dir.join("copy.txt")).expect("copy.txt");
    assert_eq!(copied, description);
    let json_copy: Value =
        serde_json::from_str(&fs::read_to_string(dir.join("task.json")).expect("task.json"))
            .expect("TASK_JSON_FILE holds JSON");
    assert_eq!(json_copy["description"], description.as_str());
    assert_eq!(json_copy["task_id"], task_id.as_str());
}

#[test]
fn shell_string_command_gets_task_text_only_through_the_environment() {
    run_case("inject-sh", |dir, agent| {
        let d = dir.display();
        // Deliberately careless: unquoted expansions too. Expansion results are
        // data; the shell never parses them again.
        let cmd = format!(
            "echo $TASK_DESCRIPTION > '{d}/naive.txt'; printf '%s' \"$TASK_DESCRIPTION\" > '{d}/copy.txt'; cp \"$TASK_JSON_FILE\" '{d}/task.json'; echo ${{TASK_DESCRIPTION}} $TASK_JSON >> '{d}/naive.txt'; {agent}"
        );
        format!("wake_command = {}\n", toml_str(&cmd))
    });
}

#[test]
fn argv_command_gets_task_text_as_whole_arguments() {
    run_case("inject-argv", |dir, agent| {
        let d = dir.display();
        let script = format!(
            "printf '%s' \"$1\" > '{d}/copy.txt'; printf '%s' \"$2\" > '{d}/task.json'; {agent}"
        );
        format!(
            "wake_command = [\"sh\", \"-c\", {}, \"wake\", \"${{TASK_DESCRIPTION}}\", \"${{TASK_JSON}}\"]\n",
            toml_str(&script)
        )
    });
}
