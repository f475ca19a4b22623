//! Chaos suite, hub side: `kill -9` of the hub at random points under load, many
//! times, plus agent connections cut mid-frame and dropped while holding tasks.
//! After every run each task acknowledged to its submitter (HTTP 201) exists and
//! completes exactly once; a task whose submit got no answer may exist, and then
//! completes exactly once too.
//!
//! Quick by default (CI); `AGENTCOM_CHAOS_LONG=1` for the long mode. The fault
//! schedule comes from a seeded RNG: the seed is printed, and
//! `AGENTCOM_CHAOS_SEED=<seed>` replays it (thread timing still varies).
//!
//! ```sh
//! cargo test --test chaos_hub_kill -- --nocapture
//! AGENTCOM_CHAOS_LONG=1 cargo test --release --test chaos_hub_kill -- --nocapture
//! ```

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// Short timers so the hub recovers quickly: a held task nobody recovers is
/// reclaimed after 1 s, a silent lease after 5 s, a stalled socket after 3 s.
/// Reclaims are unlimited here: chaos reclaims a task many times, and dead-
/// lettering it would hide whether it completes.
const HUB_CONFIG: &str = "acceptance_timeout_ms = 1000\ndefault_lease_ms = 5000\nsweep_interval_ms = 100\nidle_timeout_ms = 3000\nscheduler_sweep_ms = 500\ndefault_max_reclaims = 1000000\n";

/// Per mille, per task (or per connect / reconnect for the last two).
const FAULTS: ChaosFaults = ChaosFaults {
    cut_complete_mid_frame: 12,
    drop_while_holding: 12,
    stall_mid_frame: 6,
    cut_identify: 60,
    forget_on_reconnect: 150,
};

/// Timeout of one submit request.
const SUBMIT_TIMEOUT: Duration = Duration::from_secs(10);

struct Mode {
    name: &'static str,
    runs: usize,
    workers: usize,
    submitters: usize,
    /// Load before the kill (ms range).
    before_kill: (u64, u64),
    /// Time the hub stays down.
    down: (u64, u64),
    /// Load after the restart, before draining.
    after_restart: (u64, u64),
    /// Pause between two submit requests of one submitter.
    submit_gap: (u64, u64),
    /// Largest batch (a quarter of the requests are batches).
    max_batch: u64,
    /// Bound for one run's drain (every task finished).
    drain: Duration,
    /// Bound for the whole test; runs stop early when it passes.
    deadline: Duration,
}

static QUICK: Mode = Mode {
    name: "quick",
    runs: 4,
    workers: 4,
    submitters: 2,
    before_kill: (300, 1200),
    down: (0, 300),
    after_restart: (300, 800),
    submit_gap: (10, 40),
    max_batch: 8,
    drain: Duration::from_secs(60),
    deadline: Duration::from_secs(150),
};

static LONG: Mode = Mode {
    name: "long",
    runs: 50,
    workers: 8,
    submitters: 3,
    before_kill: (200, 2000),
    down: (0, 1000),
    after_restart: (200, 1500),
    submit_gap: (2, 30),
    max_batch: 20,
    drain: Duration::from_secs(120),
    deadline: Duration::from_secs(40 * 60),
};

#[test]
fn hub_kill9_under_load_every_acknowledged_task_completes_exactly_once() {
    let mode: &'static Mode = if chaos_long() { &LONG } else { &QUICK };
    let seed = chaos_seed();
    println!(
        "chaos seed={seed} mode={} (replay: AGENTCOM_CHAOS_SEED={seed} cargo test --test chaos_hub_kill -- --nocapture)",
        mode.name
    );
    let started = Instant::now();
    let deadline = started + mode.deadline;
    let mut rng = ChaosRng::fork(seed, 0);

    let mut hub = Hub::start_with_config(HUB_CONFIG);
    let port = Arc::new(AtomicU16::new(hub.port));
    let faults_on = Arc::new(AtomicBool::new(true));
    let workers: Vec<ChaosWorker> = (0..mode.workers)
        .map(|i| {
            let id = format!("chaos-agent-{i}");
            let token = register_agent(&hub, &id, &[]);
            let work = rng.millis(0, 15);
            ChaosWorker::start(
                &id,
                &token,
                Arc::clone(&port),
                work,
                FAULTS,
                Arc::clone(&faults_on),
                ChaosRng::fork(seed, 100 + i as u64),
                mode.deadline + Duration::from_secs(60),
            )
        })
        .collect();

    let mut acknowledged: HashMap<String, String> = HashMap::new();
    let mut unanswered: HashSet<String> = HashSet::new();
    let mut refused: Vec<(String, u16, Value)> = Vec::new();
    let mut hub_kills = 0usize;
    let mut runs = 0usize;
    let mut last = Audit::default();
    for run in 1..=mode.runs {
        if Instant::now() >= deadline {
            println!("chaos: deadline reached after {runs} runs");
            break;
        }
        faults_on.store(true, Ordering::SeqCst);
        let pace = SubmitPace {
            gap: mode.submit_gap,
            max_batch: mode.max_batch,
            timeout: SUBMIT_TIMEOUT,
        };
        let submitters = ChaosSubmitters::start(
            (mode.submitters, run, seed),
            &port,
            &hub.admin_token,
            pace,
            deadline,
        );

        thread::sleep(rng.millis(mode.before_kill.0, mode.before_kill.1));
        hub.kill9();
        port.store(0, Ordering::SeqCst);
        hub_kills += 1;
        thread::sleep(rng.millis(mode.down.0, mode.down.1));
        hub.start_again();
        port.store(hub.port, Ordering::SeqCst);
        thread::sleep(rng.millis(mode.after_restart.0, mode.after_restart.1));

        let log = submitters.finish();
        acknowledged.extend(log.acknowledged);
        unanswered.extend(log.unanswered);
        refused.extend(log.refused);
        runs = run;

        // Drain with faults off: every task must finish.
        faults_on.store(false, Ordering::SeqCst);
        let drained = wait_for(mode.drain, || unfinished(&hub) == Some(0));
        let logs: Vec<ChaosWorkerLog> = workers.iter().map(ChaosWorker::log).collect();
        last = audit(&hub, &acknowledged, &unanswered, &logs);
        let worker_faults: usize = logs.iter().map(ChaosWorkerLog::fault_count).sum();
        println!(
            "chaos run {run}/{}: tasks={} acknowledged={} unanswered={} (present {}) completed={} faults={} drained={drained} t={:.1}s",
            mode.runs,
            last.tasks,
            acknowledged.len(),
            unanswered.len(),
            last.unacknowledged_present,
            last.completed,
            hub_kills + worker_faults,
            started.elapsed().as_secs_f64()
        );
        if !last.lost.is_empty() || !last.duplicated.is_empty() {
            break;
        }
    }

    faults_on.store(false, Ordering::SeqCst);
    let logs: Vec<ChaosWorkerLog> = workers.into_iter().map(ChaosWorker::stop).collect();
    let mut by_kind: BTreeMap<&str, usize> = BTreeMap::new();
    by_kind.insert("hub_kill9", hub_kills);
    for log in &logs {
        for (k, n) in &log.faults {
            *by_kind.entry(k).or_default() += n;
        }
    }
    let faults: usize = by_kind.values().sum();
    let errors: usize = logs.iter().map(|l| l.errors.len()).sum();
    println!(
        "chaos faults by kind: {by_kind:?}; agent reconnects: {}; recoveries continue/reassign: {}/{}; error frames: {errors}; refused submits: {}",
        logs.iter().map(|l| l.connects.saturating_sub(1)).sum::<usize>(),
        logs.iter().map(|l| l.recovered_continue).sum::<usize>(),
        logs.iter().map(|l| l.recovered_reassign).sum::<usize>(),
        refused.len(),
    );
    println!(
        "chaos: runs={runs} faults={faults} acknowledged={} completed={} lost={} duplicated={}",
        acknowledged.len(),
        last.completed,
        last.lost.len(),
        last.duplicated.len()
    );
    last.verdict((seed, runs), &refused, || {
        keep_hub_logs(&hub, &format!("agentcom-chaos-hub-{seed}"))
    });
}
