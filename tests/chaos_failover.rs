//! Chaos suite, failover (#22): two hubs on one Postgres database, agents and
//! submitters under load, and the active hub taken down at random points
//! many times: `kill -9`, and now and then a SIGSTOP long enough for the
//! standby to take the lease, then SIGCONT. Each time the standby takes over
//! (a new epoch) and the old hub comes back as the next standby.
//!
//! After every run each task acknowledged to its submitter (HTTP 201) exists
//! and completes exactly once (a task whose submit got no answer may exist,
//! and then completes exactly once too). The epochs are checked: the lease's
//! epoch rises by one per takeover, no row carries an epoch above it, and a
//! paused leader that resumed after losing the lease wrote no row (its
//! epoch's rows after it resumed are a subset of those at the takeover), and
//! exits with code 3.
//!
//! Runs in the Postgres pass of the suite (`tests/on-postgres`). Quick by
//! default; `AGENTCOM_CHAOS_LONG=1` for the long mode (20 kills and 4
//! pauses). The fault schedule comes from a seeded RNG (`AGENTCOM_CHAOS_SEED`
//! replays it).
//!
//! ```sh
//! tests/on-postgres cargo test --test chaos_failover -- --nocapture
//! AGENTCOM_CHAOS_LONG=1 tests/on-postgres cargo test --release --test chaos_failover -- --nocapture
//! ```

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// As the hub-kill suite's: short timers so a takeover's reclaims come soon.
const HUB_CONFIG: &str = "acceptance_timeout_ms = 1000\ndefault_lease_ms = 5000\nsweep_interval_ms = 100\nidle_timeout_ms = 3000\nscheduler_sweep_ms = 500\ndefault_max_reclaims = 1000000\n";

/// Per mille; lighter than the hub-kill suite's: the hubs are the fault here.
const FAULTS: ChaosFaults = ChaosFaults {
    cut_complete_mid_frame: 5,
    drop_while_holding: 5,
    stall_mid_frame: 0,
    cut_identify: 20,
    forget_on_reconnect: 100,
};

struct Mode {
    name: &'static str,
    kills: usize,
    /// SIGSTOP / SIGCONT of the leader, spread among the kills.
    pauses: usize,
    workers: usize,
    submitters: usize,
    /// Load before the fault (ms range).
    before_fault: (u64, u64),
    /// Load after the takeover, before draining.
    after_takeover: (u64, u64),
    pace: SubmitPace,
    drain: Duration,
    deadline: Duration,
}

static QUICK: Mode = Mode {
    name: "quick",
    kills: 8,
    pauses: 2,
    workers: 4,
    submitters: 2,
    before_fault: (300, 1200),
    after_takeover: (300, 800),
    pace: SubmitPace {
        gap: (10, 40),
        max_batch: 8,
        timeout: Duration::from_secs(10),
    },
    drain: Duration::from_secs(60),
    deadline: Duration::from_secs(240),
};

static LONG: Mode = Mode {
    name: "long",
    kills: 20,
    pauses: 4,
    workers: 8,
    submitters: 3,
    before_fault: (200, 2000),
    after_takeover: (200, 1500),
    pace: SubmitPace {
        gap: (2, 30),
        max_batch: 20,
        timeout: Duration::from_secs(10),
    },
    drain: Duration::from_secs(120),
    deadline: Duration::from_secs(40 * 60),
};

/// The lease's epoch now.
fn lease_epoch(hub: &Hub) -> i64 {
    hub.postgres_number("SELECT epoch FROM agentcom_leader")
}

/// A digest of each row written at `epoch`.
fn rows_of_epoch(hub: &Hub, epoch: i64) -> HashSet<String> {
    hub.postgres_strings(&format!(
        "SELECT md5(tree || ':' || encode(k, 'hex') || ':' || encode(v, 'hex')) FROM agentcom_kv WHERE epoch = {epoch}"
    ))
    .into_iter()
    .collect()
}

#[test]
fn the_active_hub_dies_again_and_again_and_every_acknowledged_task_completes_once() {
    if !on_postgres() {
        eprintln!("skipped on sled: failover needs the Postgres backend");
        return;
    }
    let mode: &'static Mode = if chaos_long() { &LONG } else { &QUICK };
    let seed = chaos_seed();
    println!(
        "chaos seed={seed} mode={} (replay: AGENTCOM_CHAOS_SEED={seed} tests/on-postgres cargo test --test chaos_failover -- --nocapture)",
        mode.name
    );
    let started = Instant::now();
    let deadline = started + mode.deadline;
    let mut rng = ChaosRng::fork(seed, 0);

    let mut active = Hub::start_with_config(HUB_CONFIG);
    active.keep_port_on_restart();
    let mut standby = active.standby_of();
    standby.keep_port_on_restart();
    let port = Arc::new(AtomicU16::new(active.port));
    let faults_on = Arc::new(AtomicBool::new(true));
    let workers: Vec<ChaosWorker> = (0..mode.workers)
        .map(|i| {
            let id = format!("chaos-agent-{i}");
            let token = register_agent(&active, &id, &[]);
            ChaosWorker::start(
                &id,
                &token,
                Arc::clone(&port),
                rng.millis(0, 15),
                FAULTS,
                Arc::clone(&faults_on),
                ChaosRng::fork(seed, 100 + i as u64),
                mode.deadline + Duration::from_secs(60),
            )
        })
        .collect();

    // Which runs pause the leader instead of killing it.
    let runs_total = mode.kills + mode.pauses;
    let mut pause_runs: HashSet<usize> = HashSet::new();
    while pause_runs.len() < mode.pauses {
        pause_runs.insert(rng.range(1, runs_total as u64) as usize);
    }

    let mut acknowledged: HashMap<String, String> = HashMap::new();
    let mut unanswered: HashSet<String> = HashSet::new();
    let mut refused: Vec<(String, u16, Value)> = Vec::new();
    let (mut kills, mut pauses, mut deposed_writes, mut runs) = (0usize, 0usize, 0usize, 0usize);
    let mut server_errors = 0usize;
    let mut exit_codes: Vec<Option<i32>> = Vec::new();
    let mut last = Audit::default();
    let first_epoch = lease_epoch(&active);
    for run in 1..=runs_total {
        if Instant::now() >= deadline {
            println!("chaos: deadline reached after {runs} runs");
            break;
        }
        faults_on.store(true, Ordering::SeqCst);
        let submitters = ChaosSubmitters::start(
            (mode.submitters, run, seed),
            &port,
            &active.admin_token,
            mode.pace,
            deadline,
        );

        thread::sleep(rng.millis(mode.before_fault.0, mode.before_fault.1));
        let epoch = lease_epoch(&active);
        if pause_runs.contains(&run) {
            // Clients keep talking to the paused leader until the standby serves.
            let pid = active.pid().expect("the active hub runs") as i32;
            signal(pid, libc::SIGSTOP);
            standby.wait_serving();
            port.store(standby.port, Ordering::SeqCst);
            let at_takeover = rows_of_epoch(&standby, epoch);
            signal(pid, libc::SIGCONT);
            exit_codes.push(active.wait_exit(SOON));
            let after = rows_of_epoch(&standby, epoch);
            deposed_writes += after.difference(&at_takeover).count();
            pauses += 1;
        } else {
            active.kill9();
            port.store(0, Ordering::SeqCst);
            standby.wait_serving();
            port.store(standby.port, Ordering::SeqCst);
            kills += 1;
        }
        assert_eq!(lease_epoch(&standby), epoch + 1, "one takeover, one epoch");
        active.start_again_as_standby();
        std::mem::swap(&mut active, &mut standby);
        thread::sleep(rng.millis(mode.after_takeover.0, mode.after_takeover.1));

        let log = submitters.finish();
        acknowledged.extend(log.acknowledged);
        unanswered.extend(log.unanswered);
        // A hub that lost its lease answers what it could not commit with an
        // error: not acknowledged, like no answer at all.
        for (key, status, body) in log.refused {
            if status >= 500 {
                unanswered.insert(key);
                server_errors += 1;
            } else {
                refused.push((key, status, body));
            }
        }
        runs = run;

        faults_on.store(false, Ordering::SeqCst);
        let drained = wait_for(mode.drain, || unfinished(&active) == Some(0));
        let logs: Vec<ChaosWorkerLog> = workers.iter().map(ChaosWorker::log).collect();
        last = audit(&active, &acknowledged, &unanswered, &logs);
        println!(
            "chaos run {run}/{runs_total}: epoch={} tasks={} acknowledged={} unanswered={} (present {}) completed={} drained={drained} t={:.1}s",
            lease_epoch(&active),
            last.tasks,
            acknowledged.len(),
            unanswered.len(),
            last.unacknowledged_present,
            last.completed,
            started.elapsed().as_secs_f64()
        );
        if !last.lost.is_empty() || !last.duplicated.is_empty() || deposed_writes > 0 {
            break;
        }
    }

    faults_on.store(false, Ordering::SeqCst);
    let logs: Vec<ChaosWorkerLog> = workers.into_iter().map(ChaosWorker::stop).collect();
    let mut by_kind: BTreeMap<&str, usize> = BTreeMap::new();
    by_kind.insert("hub_kill9", kills);
    by_kind.insert("hub_pause", pauses);
    for log in &logs {
        for (k, n) in &log.faults {
            *by_kind.entry(k).or_default() += n;
        }
    }
    let epoch_now = lease_epoch(&active);
    let newest_row = active.postgres_number("SELECT max(epoch) FROM agentcom_kv");
    println!(
        "chaos faults by kind: {by_kind:?}; agent reconnects: {}; recoveries continue/reassign: {}/{}; submits answered 5xx: {server_errors}; refused submits: {}",
        logs.iter().map(|l| l.connects.saturating_sub(1)).sum::<usize>(),
        logs.iter().map(|l| l.recovered_continue).sum::<usize>(),
        logs.iter().map(|l| l.recovered_reassign).sum::<usize>(),
        refused.len(),
    );
    println!(
        "chaos failover: runs={runs} takeovers={} epochs {first_epoch}..={epoch_now} newest row epoch={newest_row} paused leaders' exit codes={exit_codes:?} deposed writes={deposed_writes} acknowledged={} completed={} lost={} duplicated={}",
        kills + pauses,
        acknowledged.len(),
        last.completed,
        last.lost.len(),
        last.duplicated.len()
    );
    last.verdict((seed, runs), &refused, || {
        keep_hub_logs(&standby, &format!("agentcom-chaos-failover-{seed}-standby"));
        keep_hub_logs(&active, &format!("agentcom-chaos-failover-{seed}"))
    });
    assert_eq!(
        deposed_writes, 0,
        "rows written by a deposed leader (seed {seed})"
    );
    assert!(
        exit_codes.iter().all(|c| *c == Some(3)),
        "a paused leader that lost its lease exits with 3: {exit_codes:?}"
    );
    assert_eq!(
        epoch_now,
        first_epoch + runs as i64,
        "one epoch per takeover"
    );
    assert!(newest_row <= epoch_now, "no row above the lease's epoch");
}
