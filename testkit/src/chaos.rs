//! The chaos suites' shared parts: the seeded RNG, the fault-injecting worker
//! that survives hub restarts, and the one exactly-once audit both suites run.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::agent::{try_connect_agent, Agent, Incoming};
use crate::fixtures::{count_events, history_events, list_all_tasks};
use crate::http::try_http;
use crate::hub::Hub;
use crate::support::{lock_log, random_hex, LoggedThread, HTTP_TIMEOUT, REPLY_TIMEOUT};

/// A small seeded PRNG (SplitMix64), std only, so a chaos run can be replayed
/// from its seed.
#[derive(Debug, Clone)]
pub struct ChaosRng(u64);

impl ChaosRng {
    pub fn new(seed: u64) -> ChaosRng {
        ChaosRng(seed)
    }

    /// An independent stream derived from this seed and `stream`.
    pub fn fork(seed: u64, stream: u64) -> ChaosRng {
        let mut r = ChaosRng(seed ^ stream.wrapping_mul(0xA076_1D64_78BD_642F));
        r.next_u64();
        r
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            return lo;
        }
        lo + self.next_u64() % (hi - lo + 1)
    }

    /// True with probability `per_mille / 1000`.
    pub fn chance(&mut self, per_mille: u64) -> bool {
        self.next_u64() % 1000 < per_mille
    }

    /// A duration uniform in `lo_ms..=hi_ms` milliseconds.
    pub fn millis(&mut self, lo_ms: u64, hi_ms: u64) -> Duration {
        Duration::from_millis(self.range(lo_ms, hi_ms))
    }

    /// A WebSocket masking key.
    pub fn mask(&mut self) -> [u8; 4] {
        let b = self.next_u64().to_be_bytes();
        [b[0], b[1], b[2], b[3]]
    }
}

/// The chaos seed: `AGENTCOM_CHAOS_SEED` when set (to replay a run), else a
/// fresh random one. Printed by the caller.
pub fn chaos_seed() -> u64 {
    match std::env::var("AGENTCOM_CHAOS_SEED") {
        Ok(s) if !s.trim().is_empty() => s
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("AGENTCOM_CHAOS_SEED must be a u64, got {s:?}")),
        _ => u64::from_str_radix(&random_hex(1), 16).expect("random_hex gives hex"),
    }
}

/// Whether the long chaos mode is asked for (`AGENTCOM_CHAOS_LONG=1`).
pub fn chaos_long() -> bool {
    std::env::var("AGENTCOM_CHAOS_LONG").is_ok_and(|v| v == "1")
}

/// Fault rates of a [`ChaosWorker`], in per mille (0 disables).
#[derive(Debug, Clone, Copy)]
pub struct ChaosFaults {
    /// Instead of sending `task_complete`, write half its frame and drop the socket.
    pub cut_complete_mid_frame: u64,
    /// Accept a task, then drop the socket abruptly while holding it.
    pub drop_while_holding: u64,
    /// Write half of `task_complete`, leave that socket stalled open and reconnect
    /// on a new one (the hub replaces the stalled session).
    pub stall_mid_frame: u64,
    /// Before a (re)connect, open a socket, write half an `identify` frame, drop it.
    pub cut_identify: u64,
    /// On reconnect, forget the tasks held before (no `task_recovering`).
    pub forget_on_reconnect: u64,
}

impl ChaosFaults {
    pub const NONE: ChaosFaults = ChaosFaults {
        cut_complete_mid_frame: 0,
        drop_while_holding: 0,
        stall_mid_frame: 0,
        cut_identify: 0,
        forget_on_reconnect: 0,
    };
}

/// What a [`ChaosWorker`] did.
#[derive(Debug, Clone, Default)]
pub struct ChaosWorkerLog {
    pub agent_id: String,
    /// Every `task_assign` as (task_id, generation).
    pub assigned: Vec<(String, u64)>,
    /// Completions the hub acknowledged, as (task_id, generation sent).
    pub completed: Vec<(String, u64)>,
    /// Successful connections (the first included).
    pub connects: usize,
    /// Failed connection attempts (hub down, mostly).
    pub connect_failures: usize,
    /// Faults injected, by kind.
    pub faults: std::collections::BTreeMap<&'static str, usize>,
    /// `error` frames received.
    pub errors: Vec<Value>,
    pub recovered_continue: usize,
    pub recovered_reassign: usize,
}

impl ChaosWorkerLog {
    pub fn fault_count(&self) -> usize {
        self.faults.values().sum()
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Held {
    /// Accepted; complete when `due`.
    Working(Instant),
    /// `task_complete` sent, waiting for the ack.
    CompleteSent,
    /// `task_recovering` sent after a reconnect.
    Recovering,
}

/// An agent thread that survives hub restarts: it reads the hub's current port
/// from `port` (0 while the hub is down), reconnects with a short backoff, sends
/// `task_recovering` for every task it held (completing on `task_continue`,
/// dropping on `task_reassign`), accepts and completes every `task_assign` after
/// `work`, and injects the [`ChaosFaults`] while `faults_on` is set.
pub struct ChaosWorker {
    pub agent_id: String,
    thread: LoggedThread<ChaosWorkerLog>,
}

impl ChaosWorker {
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        agent_id: &str,
        token: &str,
        port: Arc<std::sync::atomic::AtomicU16>,
        work: Duration,
        faults: ChaosFaults,
        faults_on: Arc<AtomicBool>,
        mut rng: ChaosRng,
        max_lifetime: Duration,
    ) -> ChaosWorker {
        let log = ChaosWorkerLog {
            agent_id: agent_id.to_string(),
            ..ChaosWorkerLog::default()
        };
        let (agent_id2, token) = (agent_id.to_string(), token.to_string());
        let thread = LoggedThread::spawn(log, move |log2, stop2| {
            let born = Instant::now();
            let mut held: Vec<(String, u64, Held)> = Vec::new();
            // Stalled half-frame sockets, dropped a little later.
            let mut stalled: VecDeque<(Agent, Instant)> = VecDeque::new();
            let fault = |log: &Mutex<ChaosWorkerLog>, kind: &'static str| {
                *lock_log(log).faults.entry(kind).or_default() += 1;
            };
            let live = || !stop2.load(Ordering::SeqCst) && born.elapsed() < max_lifetime;
            while live() {
                while stalled
                    .front()
                    .is_some_and(|(_, at)| at.elapsed() > Duration::from_secs(2))
                {
                    stalled.pop_front();
                }
                let p = port.load(Ordering::SeqCst);
                if p == 0 {
                    thread::sleep(Duration::from_millis(20));
                    continue;
                }
                let faulty = faults_on.load(Ordering::SeqCst);
                if faulty && rng.chance(faults.cut_identify) {
                    if let Ok(stream) = TcpStream::connect(("127.0.0.1", p)) {
                        let _ = stream.set_read_timeout(Some(REPLY_TIMEOUT));
                        if let Ok((ws, _)) =
                            tungstenite::client(format!("ws://127.0.0.1:{p}/ws"), stream)
                        {
                            let mut half = Agent {
                                agent_id: agent_id2.clone(),
                                ws,
                                pending: VecDeque::new(),
                                closed: None,
                            };
                            half.write_half_frame(
                                &json!({"type": "identify", "agent_id": agent_id2, "token": token}),
                                rng.mask(),
                            );
                            half.drop_abruptly();
                            fault(&log2, "cut_identify_mid_frame");
                        }
                    }
                }
                let mut agent = match try_connect_agent(p, &agent_id2, &token) {
                    Ok(a) => a,
                    Err(_) => {
                        lock_log(&log2).connect_failures += 1;
                        thread::sleep(rng.millis(10, 60));
                        continue;
                    }
                };
                lock_log(&log2).connects += 1;
                if faulty && !held.is_empty() && rng.chance(faults.forget_on_reconnect) {
                    held.clear();
                    fault(&log2, "forget_on_reconnect");
                }
                let mut sent_ok = true;
                for (task_id, generation, state) in held.iter_mut() {
                    *state = Held::Recovering;
                    sent_ok &= agent
                        .try_send_text(
                            &json!({"type": "task_recovering", "task_id": task_id, "generation": *generation})
                                .to_string(),
                        )
                        .is_ok();
                }
                if !sent_ok {
                    continue;
                }
                let mut last_sent = Instant::now();
                // One connection's life; `break` reconnects.
                'session: while live() {
                    let faulty = faults_on.load(Ordering::SeqCst);
                    let now = Instant::now();
                    for entry in held.iter_mut() {
                        let (task_id, generation) = (entry.0.clone(), entry.1);
                        let Held::Working(due) = entry.2 else {
                            continue;
                        };
                        if now < due {
                            continue;
                        }
                        let frame = json!({
                            "type": "task_complete", "task_id": task_id, "generation": generation,
                            "result": {"done_by": agent_id2}, "tokens_used": 1
                        });
                        if faulty && rng.chance(faults.cut_complete_mid_frame) {
                            agent.write_half_frame(&frame, rng.mask());
                            agent.drop_abruptly();
                            fault(&log2, "cut_complete_mid_frame");
                            break 'session;
                        }
                        if faulty && rng.chance(faults.stall_mid_frame) {
                            agent.write_half_frame(&frame, rng.mask());
                            stalled.push_back((agent, Instant::now()));
                            fault(&log2, "stall_mid_frame");
                            break 'session;
                        }
                        if agent.try_send_text(&frame.to_string()).is_err() {
                            break 'session;
                        }
                        last_sent = Instant::now();
                        entry.2 = Held::CompleteSent;
                    }
                    if last_sent.elapsed() > Duration::from_millis(1000) {
                        if agent.try_send_text(r#"{"type":"ping"}"#).is_err() {
                            break 'session;
                        }
                        last_sent = Instant::now();
                    }
                    let wait = held
                        .iter()
                        .filter_map(|(_, _, s)| match s {
                            Held::Working(due) => Some(due.saturating_duration_since(now)),
                            _ => None,
                        })
                        .min()
                        .unwrap_or(Duration::from_millis(100))
                        .clamp(Duration::from_millis(1), Duration::from_millis(100));
                    let v = match agent.recv_any(wait) {
                        Incoming::Timeout => continue,
                        Incoming::Closed { .. } => break 'session,
                        Incoming::Frame(v) => v,
                    };
                    let task_id = v["task_id"].as_str().unwrap_or_default().to_string();
                    let pos = held.iter().position(|(t, _, _)| *t == task_id);
                    match v["type"].as_str().unwrap_or_default() {
                        "task_assign" => {
                            let generation = v["generation"].as_u64().unwrap_or_default();
                            lock_log(&log2).assigned.push((task_id.clone(), generation));
                            let entry = (
                                task_id.clone(),
                                generation,
                                Held::Working(Instant::now() + work),
                            );
                            match pos {
                                Some(i) => held[i] = entry,
                                None => held.push(entry),
                            }
                            let accepted = json!({"type": "task_accepted", "task_id": task_id, "generation": generation});
                            if agent.try_send_text(&accepted.to_string()).is_err() {
                                break 'session;
                            }
                            last_sent = Instant::now();
                            if faulty && rng.chance(faults.drop_while_holding) {
                                agent.drop_abruptly();
                                fault(&log2, "drop_while_holding");
                                break 'session;
                            }
                        }
                        "task_ack" if v["status"] == "complete" => {
                            if let Some(i) = pos {
                                let (t, g, _) = held.remove(i);
                                lock_log(&log2).completed.push((t, g));
                            }
                        }
                        "task_continue" => {
                            if let Some(i) = pos {
                                held[i].1 = v["generation"].as_u64().unwrap_or(held[i].1);
                                held[i].2 = Held::Working(Instant::now());
                                lock_log(&log2).recovered_continue += 1;
                            }
                        }
                        "task_reassign" => {
                            // Only the recovery answer: a fresh assignment of the
                            // same task that overtook it stays.
                            if let Some(i) = pos.filter(|&i| held[i].2 == Held::Recovering) {
                                held.remove(i);
                                lock_log(&log2).recovered_reassign += 1;
                            }
                        }
                        "task_cancelled" => {
                            if let Some(i) = pos {
                                held.remove(i);
                            }
                        }
                        "error" => {
                            let refused_complete = v["error"]
                                .as_str()
                                .is_some_and(|e| e.starts_with("task_complete_failed"));
                            if let Some(i) =
                                pos.filter(|&i| refused_complete && held[i].2 == Held::CompleteSent)
                            {
                                held.remove(i);
                            }
                            lock_log(&log2).errors.push(v);
                        }
                        _ => {}
                    }
                }
            }
        });
        ChaosWorker {
            agent_id: agent_id.to_string(),
            thread,
        }
    }

    /// A copy of what the worker did so far.
    pub fn log(&self) -> ChaosWorkerLog {
        self.thread.log()
    }

    /// Stops the thread (its socket is dropped) and returns the final log.
    pub fn stop(self) -> ChaosWorkerLog {
        self.thread.stop()
    }
}

// ---------------------------------------------------------------------------
// The exactly-once audit (both chaos suites)
// ---------------------------------------------------------------------------

/// Tasks not yet finished (queued, assigned or blocked), or `None` if the hub
/// did not answer.
pub fn unfinished(hub: &Hub) -> Option<u64> {
    let (status, stats) = try_http(
        "GET",
        &hub.url("/api/tasks/stats"),
        Some(&hub.admin_token),
        None,
        HTTP_TIMEOUT,
    )
    .ok()?;
    (status == 200).then(|| {
        ["queued", "assigned", "blocked"]
            .iter()
            .map(|s| stats["by_status"][s].as_u64().unwrap_or(0))
            .sum()
    })
}

/// The result of checking every task against what submitters and workers saw.
#[derive(Debug, Default)]
pub struct Audit {
    pub tasks: usize,
    pub completed: usize,
    pub unacknowledged_present: usize,
    /// Problems: an acknowledged task missing, or a task not completed.
    pub lost: BTreeMap<String, String>,
    /// Problems: more than one completion, or more than one task per submission.
    pub duplicated: BTreeMap<String, String>,
}

impl Audit {
    /// The end of a chaos test: on a problem prints the lost and duplicated
    /// tasks and the refused submits, with where `keep` copied the logs; then
    /// fails unless a run finished and nothing was lost, duplicated or
    /// refused (answered with neither 201 nor silence).
    pub fn verdict(
        &self,
        (seed, runs): (u64, usize),
        refused: &[(String, u16, Value)],
        keep: impl FnOnce() -> PathBuf,
    ) {
        if !self.lost.is_empty() || !self.duplicated.is_empty() || !refused.is_empty() {
            let kept = keep();
            println!(
                "chaos seed={seed}: logs kept in {}; lost:\n{}\nduplicated:\n{}\nrefused submits: {:?}",
                kept.display(),
                show(&self.lost),
                show(&self.duplicated),
                refused.iter().take(5).collect::<Vec<_>>()
            );
        }
        assert!(runs >= 1, "no chaos run finished before the deadline");
        assert_eq!(self.lost.len(), 0, "lost tasks (seed {seed})");
        assert_eq!(self.duplicated.len(), 0, "duplicated tasks (seed {seed})");
        assert!(
            refused.is_empty(),
            "submits answered with neither 201 nor silence (seed {seed}): {:?}",
            refused.iter().take(5).collect::<Vec<_>>()
        );
    }
}

/// Checks every task of the hub against what the submitters saw: each task
/// carries the `metadata.chaos_key` of its submission; `acknowledged` maps the
/// keys answered 201 to their task ids, `unanswered` holds the keys whose submit
/// got no answer. Every acknowledged task must exist under its id and be
/// completed exactly once; an unanswered one may exist, and then completes
/// exactly once too; nothing else may exist. `worker_logs` (empty when the
/// agents are sidecars) adds: a completion was acknowledged to at most one
/// (agent, generation) per task.
pub fn audit(
    hub: &Hub,
    acknowledged: &HashMap<String, String>,
    unanswered: &HashSet<String>,
    worker_logs: &[ChaosWorkerLog],
) -> Audit {
    let tasks = list_all_tasks(hub, "", 1000);
    let mut a = Audit {
        tasks: tasks.len(),
        ..Audit::default()
    };
    let mut by_key: HashMap<&str, Vec<&Value>> = HashMap::new();
    for t in &tasks {
        let id = t["id"].as_str().unwrap_or_default();
        let Some(key) = t["metadata"]["chaos_key"].as_str() else {
            a.duplicated
                .insert(id.to_string(), format!("task nobody submitted: {t}"));
            continue;
        };
        by_key.entry(key).or_default().push(t);
        let completions = count_events(t, "completed");
        if completions > 1 {
            a.duplicated.insert(
                id.to_string(),
                format!("{completions} completed events (key {key}): {t}"),
            );
        }
        if t["status"] == "completed" && completions >= 1 {
            a.completed += 1;
        } else {
            a.lost.insert(
                id.to_string(),
                format!(
                    "not completed (key {key}, status {}, assigned_to {}, events {:?})",
                    t["status"],
                    t["assigned_to"],
                    history_events(t)
                ),
            );
        }
    }
    for (key, tasks) in &by_key {
        if tasks.len() > 1 {
            a.duplicated.insert(
                key.to_string(),
                format!("{} tasks for one submission", tasks.len()),
            );
        }
        match (acknowledged.get(*key), unanswered.contains(*key)) {
            (Some(id), _) if tasks.iter().all(|t| t["id"] != id.as_str()) => {
                a.lost.insert(
                    id.clone(),
                    format!("acknowledged as {id} but stored under another id (key {key})"),
                );
            }
            (Some(_), _) => {}
            (None, true) => a.unacknowledged_present += 1,
            (None, false) => {
                a.duplicated.insert(
                    key.to_string(),
                    "task exists for a key never submitted or refused".into(),
                );
            }
        }
    }
    for (key, id) in acknowledged {
        if !by_key.contains_key(key.as_str()) {
            a.lost.insert(
                id.clone(),
                format!("acknowledged (201, key {key}) but absent"),
            );
        }
    }
    let mut acked_completions: HashMap<&str, HashSet<(&str, u64)>> = HashMap::new();
    for log in worker_logs {
        for (task_id, generation) in &log.completed {
            acked_completions
                .entry(task_id)
                .or_default()
                .insert((&log.agent_id, *generation));
        }
    }
    for (task_id, holders) in acked_completions {
        if holders.len() > 1 {
            a.duplicated.insert(
                task_id.to_string(),
                format!("completion acknowledged to {holders:?}"),
            );
        }
    }
    a
}

/// The first 20 problems of an audit, one per line.
pub fn show(problems: &BTreeMap<String, String>) -> String {
    problems
        .iter()
        .take(20)
        .map(|(k, v)| format!("  {k}: {v}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Copies `files` (path, name to keep it under) into `temp_dir()/dir_name`, so
/// a failed run's logs outlive its temp dirs; returns that directory.
pub fn keep_files(dir_name: &str, files: impl IntoIterator<Item = (PathBuf, String)>) -> PathBuf {
    let dir = std::env::temp_dir().join(dir_name);
    let _ = std::fs::create_dir_all(&dir);
    for (path, name) in files {
        let _ = std::fs::copy(&path, dir.join(name));
    }
    dir
}

/// What one chaos submitter saw.
#[derive(Default)]
pub struct SubmitLog {
    /// chaos key → task id, for every 201.
    pub acknowledged: Vec<(String, String)>,
    /// Keys whose request got no answer (the hub died, or was down).
    pub unanswered: Vec<String>,
    /// Keys answered with something other than 201: (key, status, body).
    pub refused: Vec<(String, u16, Value)>,
}

impl SubmitLog {
    /// Posts `tasks` (those of `keys`, in order: one task alone, more as a
    /// batch) with the admin token and records what its answer covered.
    pub fn post(
        &mut self,
        url: &str,
        admin_token: &str,
        keys: Vec<String>,
        mut tasks: Vec<Value>,
        timeout: Duration,
    ) {
        let single = tasks.len() == 1;
        let body = if single {
            tasks.remove(0)
        } else {
            Value::Array(tasks)
        };
        match try_http("POST", url, Some(admin_token), Some(&body), timeout) {
            Ok((201, resp)) => {
                let ids = created_ids(&resp, single);
                assert_eq!(
                    ids.len(),
                    keys.len(),
                    "201 with one task id per submitted task: {resp}"
                );
                self.acknowledged.extend(keys.into_iter().zip(ids));
            }
            Ok((status, resp)) => {
                for k in keys {
                    self.refused.push((k, status, resp.clone()));
                }
            }
            Err(_) => self.unanswered.extend(keys),
        }
    }
}

/// How a chaos submitter paces itself.
#[derive(Debug, Clone, Copy)]
pub struct SubmitPace {
    /// Pause between two requests (ms range).
    pub gap: (u64, u64),
    /// Largest batch (a quarter of the requests are batches).
    pub max_batch: u64,
    /// Timeout of one request.
    pub timeout: Duration,
}

/// Posts tasks (single and batch) with the admin token until `stop` or
/// `deadline`, to the hub whose port `port` holds (0 while none serves). Every
/// task carries a unique `metadata.chaos_key` (`<name>-<n>`), so [`audit`]
/// can tell what each answer covered.
pub fn chaos_submitter(
    name: String,
    port: Arc<std::sync::atomic::AtomicU16>,
    admin_token: String,
    stop: Arc<AtomicBool>,
    mut rng: ChaosRng,
    pace: SubmitPace,
    deadline: Instant,
) -> SubmitLog {
    let mut log = SubmitLog::default();
    let priorities = ["urgent", "high", "normal", "low"];
    let mut n = 0u64;
    while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
        thread::sleep(rng.millis(pace.gap.0, pace.gap.1));
        let p = port.load(Ordering::SeqCst);
        if p == 0 {
            continue;
        }
        let count = if rng.chance(250) {
            rng.range(2, pace.max_batch)
        } else {
            1
        };
        let keys: Vec<String> = (0..count)
            .map(|_| {
                n += 1;
                format!("{name}-{n}")
            })
            .collect();
        let tasks: Vec<Value> = keys
            .iter()
            .map(|k| {
                json!({
                    "description": format!("chaos task {k}"),
                    "priority": priorities[rng.range(0, 3) as usize],
                    "metadata": {"chaos_key": k},
                })
            })
            .collect();
        let url = format!("http://127.0.0.1:{p}/api/tasks");
        log.post(&url, &admin_token, keys, tasks, pace.timeout);
    }
    log
}

/// The task ids a 201 to `POST /api/tasks` gave: its `task_id` (`single`),
/// else each of its `tasks`.
pub fn created_ids(resp: &Value, single: bool) -> Vec<String> {
    if single {
        return vec![resp["task_id"].as_str().unwrap_or_default().to_string()];
    }
    resp["tasks"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|t| t["task_id"].as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// One chaos run's submitters: `count` [`chaos_submitter`] threads, named
/// `r<run>s<i>` with RNG streams forked from `seed`.
pub struct ChaosSubmitters {
    stop: Arc<AtomicBool>,
    threads: Vec<thread::JoinHandle<SubmitLog>>,
}

impl ChaosSubmitters {
    pub fn start(
        (count, run, seed): (usize, usize, u64),
        port: &Arc<std::sync::atomic::AtomicU16>,
        admin_token: &str,
        pace: SubmitPace,
        deadline: Instant,
    ) -> ChaosSubmitters {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..count)
            .map(|s| {
                let (port, stop) = (Arc::clone(port), Arc::clone(&stop));
                let token = admin_token.to_string();
                let rng = ChaosRng::fork(seed, 1000 + (run * 16 + s) as u64);
                let name = format!("r{run}s{s}");
                thread::spawn(move || chaos_submitter(name, port, token, stop, rng, pace, deadline))
            })
            .collect();
        ChaosSubmitters { stop, threads }
    }

    /// Stops them and merges what they saw.
    pub fn finish(self) -> SubmitLog {
        self.stop.store(true, Ordering::SeqCst);
        let mut all = SubmitLog::default();
        for t in self.threads {
            let log = t.join().expect("submitter thread");
            all.acknowledged.extend(log.acknowledged);
            all.unanswered.extend(log.unanswered);
            all.refused.extend(log.refused);
        }
        all
    }
}

/// Copies a hub's stderr logs somewhere that outlives its temp dir.
pub fn keep_hub_logs(hub: &Hub, name: &str) -> PathBuf {
    keep_files(
        name,
        hub.log_paths().into_iter().filter_map(|p| {
            let file = p.file_name()?.to_string_lossy().into_owned();
            Some((p, file))
        }),
    )
}
