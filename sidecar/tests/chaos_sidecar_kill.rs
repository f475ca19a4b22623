//! Chaos suite, sidecar side: `kill -9` and restart sidecars again and again
//! while their agents work (a wake command that sleeps a random short time, then
//! writes the result), and `kill -9` the hub once in the middle. After every run
//! each task acknowledged to its submitter completes exactly once; a task whose
//! submit got no answer may exist, and then completes exactly once too. Sidecar
//! i has i + 1 slots, so relays running several tasks at once are killed too.
//!
//! Quick by default (CI); `AGENTCOM_CHAOS_LONG=1` for the long mode. The fault
//! schedule comes from a seeded RNG: the seed is printed, and
//! `AGENTCOM_CHAOS_SEED=<seed>` replays it (process timing still varies).
//!
//! ```sh
//! cargo test -p agentcom-sidecar --test chaos_sidecar_kill -- --nocapture
//! AGENTCOM_CHAOS_LONG=1 cargo test -p agentcom-sidecar --test chaos_sidecar_kill -- --nocapture
//! ```

mod common;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

/// Fast recovery: a held task nobody recovers is reclaimed after 3 s. Reclaims
/// are unlimited: chaos reclaims a task many times, and dead-lettering it would
/// hide whether it completes.
const HUB_CONFIG: &str = "acceptance_timeout_ms = 3000\ndefault_lease_ms = 15000\nsweep_interval_ms = 100\nscheduler_sweep_ms = 500\ndefault_max_reclaims = 1000000\n";

const SUBMIT_TIMEOUT: Duration = Duration::from_secs(10);

struct Mode {
    name: &'static str,
    runs: usize,
    sidecars: usize,
    tasks_per_run: usize,
    sidecar_kills_per_run: usize,
    /// Gap between two kills (ms range).
    kill_gap: (u64, u64),
    /// How long a killed sidecar stays down.
    down: (u64, u64),
    /// Longest the agent works on a task (ms).
    work_max_ms: u64,
    /// Gap between two submit requests.
    submit_gap: (u64, u64),
    drain: Duration,
    deadline: Duration,
}

static QUICK: Mode = Mode {
    name: "quick",
    runs: 3,
    sidecars: 3,
    tasks_per_run: 40,
    sidecar_kills_per_run: 5,
    kill_gap: (150, 700),
    down: (0, 400),
    work_max_ms: 300,
    submit_gap: (10, 80),
    drain: Duration::from_secs(60),
    deadline: Duration::from_secs(150),
};

static LONG: Mode = Mode {
    name: "long",
    runs: 12,
    sidecars: 4,
    tasks_per_run: 200,
    sidecar_kills_per_run: 10,
    kill_gap: (100, 1500),
    down: (0, 1000),
    work_max_ms: 500,
    submit_gap: (5, 60),
    drain: Duration::from_secs(180),
    deadline: Duration::from_secs(40 * 60),
};

/// Submits `count` tasks (single and small batches, each with a unique
/// `chaos_key`), with random gaps, then returns.
fn submitter(
    name: String,
    base: String,
    admin_token: String,
    count: usize,
    mut rng: ChaosRng,
    mode: &'static Mode,
    deadline: Instant,
) -> SubmitLog {
    let mut log = SubmitLog::default();
    let mut n = 0usize;
    while n < count && Instant::now() < deadline {
        thread::sleep(rng.millis(mode.submit_gap.0, mode.submit_gap.1));
        let batch = (rng.range(1, 3) as usize).min(count - n);
        let keys: Vec<String> = (0..batch)
            .map(|_| {
                n += 1;
                format!("{name}-{n}")
            })
            .collect();
        let tasks: Vec<Value> = keys
            .iter()
            .map(
                |k| json!({"description": format!("chaos task {k}"), "metadata": {"chaos_key": k}}),
            )
            .collect();
        log.post(
            &format!("{base}/api/tasks"),
            &admin_token,
            keys,
            tasks,
            SUBMIT_TIMEOUT,
        );
    }
    log
}

/// The shared audit; sidecars keep no worker log of their own.
fn audit(hub: &Hub, acknowledged: &HashMap<String, String>, unanswered: &HashSet<String>) -> Audit {
    agentcom_testkit::audit(hub, acknowledged, unanswered, &[])
}

/// Copies hub and sidecar logs somewhere that outlives the temp dirs.
fn keep_logs(hub: &Hub, sidecars: &[Sidecar], seed: u64) -> PathBuf {
    let named = |p: PathBuf, prefix: &str| {
        let name = format!("{prefix}{}", p.file_name()?.to_string_lossy());
        Some((p, name))
    };
    let hub_logs = hub.log_paths().into_iter().filter_map(|p| named(p, ""));
    let sidecar_logs = sidecars.iter().flat_map(|sc| {
        let prefix = format!("{}-", sc.agent_id);
        sc.log_paths()
            .into_iter()
            .filter_map(move |p| named(p, &prefix))
    });
    keep_files(
        &format!("agentcom-chaos-sidecar-{seed}"),
        hub_logs.chain(sidecar_logs),
    )
}

#[test]
fn sidecar_and_hub_kill9_while_agents_work_every_task_completes_exactly_once() {
    let mode: &'static Mode = if chaos_long() { &LONG } else { &QUICK };
    let seed = chaos_seed();
    println!(
        "chaos seed={seed} mode={} (replay: AGENTCOM_CHAOS_SEED={seed} cargo test -p agentcom-sidecar --test chaos_sidecar_kill -- --nocapture)",
        mode.name
    );
    let started = Instant::now();
    let deadline = started + mode.deadline;
    let mut rng = ChaosRng::fork(seed, 0);

    let mut hub = Hub::start_with_config(HUB_CONFIG);
    let mut sidecars: Vec<Sidecar> = (0..mode.sidecars)
        .map(|i| {
            // Sidecar i runs i + 1 tasks at once (slots): one-slot and
            // many-slot relays go through the same faults.
            let slots = format!("slots = {}\n", i + 1);
            let mut sc = Sidecar::prepare(&hub, &format!("chaos-sc-{i}"), &slots);
            let wake = sleepy_agent(sc.dir.path(), rng.next_u64(), mode.work_max_ms);
            sc.set_wake(&wake);
            sc.spawn();
            sc
        })
        .collect();
    for sc in &sidecars {
        sc.wait_online(&hub);
    }

    // The hub dies once, in the middle run, halfway through its sidecar kills.
    let hub_kill_run = mode.runs / 2 + 1;
    let mut acknowledged: HashMap<String, String> = HashMap::new();
    let mut unanswered: HashSet<String> = HashSet::new();
    let mut refused: Vec<(String, u16, Value)> = Vec::new();
    let (mut sidecar_kills, mut hub_kills, mut runs) = (0usize, 0usize, 0usize);
    let mut last = Audit::default();
    for run in 1..=mode.runs {
        if Instant::now() >= deadline {
            println!("chaos: deadline reached after {runs} runs");
            break;
        }
        let submit = {
            let (base, token) = (hub.url(""), hub.admin_token.clone());
            let rng = ChaosRng::fork(seed, 1000 + run as u64);
            let (name, count) = (format!("r{run}"), mode.tasks_per_run);
            thread::spawn(move || submitter(name, base, token, count, rng, mode, deadline))
        };
        for k in 0..mode.sidecar_kills_per_run {
            thread::sleep(rng.millis(mode.kill_gap.0, mode.kill_gap.1));
            let i = rng.range(0, sidecars.len() as u64 - 1) as usize;
            sidecars[i].kill9();
            sidecar_kills += 1;
            if run == hub_kill_run && k == mode.sidecar_kills_per_run / 2 {
                hub.kill9();
                hub_kills += 1;
                thread::sleep(rng.millis(mode.down.0, mode.down.1));
                hub.start_again();
            }
            thread::sleep(rng.millis(mode.down.0, mode.down.1));
            sidecars[i].spawn();
        }
        let log = submit.join().expect("submitter thread");
        acknowledged.extend(log.acknowledged);
        unanswered.extend(log.unanswered);
        refused.extend(log.refused);
        runs = run;

        let drained = wait_for(mode.drain, || unfinished(&hub) == Some(0));
        last = audit(&hub, &acknowledged, &unanswered);
        println!(
            "chaos run {run}/{}: tasks={} acknowledged={} unanswered={} (present {}) completed={} faults={} drained={drained} t={:.1}s",
            mode.runs,
            last.tasks,
            acknowledged.len(),
            unanswered.len(),
            last.unacknowledged_present,
            last.completed,
            sidecar_kills + hub_kills,
            started.elapsed().as_secs_f64()
        );
        if !last.lost.is_empty() || !last.duplicated.is_empty() {
            break;
        }
    }

    let wakes_total: usize = sidecars.iter().map(|sc| wakes(sc.dir.path()).len()).sum();
    println!(
        "chaos faults: sidecar_kill9={sidecar_kills} hub_kill9={hub_kills}; agent wakes={wakes_total} for {} tasks; refused submits: {}",
        last.tasks,
        refused.len()
    );
    let faults = sidecar_kills + hub_kills;
    println!(
        "chaos: runs={runs} faults={faults} acknowledged={} completed={} lost={} duplicated={}",
        acknowledged.len(),
        last.completed,
        last.lost.len(),
        last.duplicated.len()
    );
    last.verdict((seed, runs), &refused, || keep_logs(&hub, &sidecars, seed));
}
