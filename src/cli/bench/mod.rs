//! `agentcom-hub bench`: drives a real hub over real sockets and reports durable
//! task lifecycles per second, submit→assign latency, the assign→complete round
//! trip, hub CPU and peak RSS, and lost or duplicated completions.
//!
//! It starts its own hub (this same binary, `serve`, on a temporary data dir and an
//! ephemeral loopback port) unless `--hub` names one. N simulated agents connect
//! over WebSockets and complete every task the moment it is assigned; submitters
//! post the tasks over HTTP (single or batched). Every loop is bounded by the task
//! count and by `--timeout-secs`.
//!
//! Architecture invariant: the bench is a client. It uses only the public HTTP and
//! WebSocket API and the protocol types; it links no actor of the hub.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use agentcom_hub::protocol::ServerFrame;

mod command;
mod scale;
pub use command::{command, BenchArgs};
pub use scale::{scale_idle_agents, scale_queued};

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Target a running hub instead of starting one (needs `admin_token`).
    pub hub: Option<String>,
    /// Run the bench's own hub on Postgres: a key=value connection string to
    /// a server where the bench makes a database of its own (dropped after).
    pub postgres: Option<String>,
    pub admin_token: Option<String>,
    pub agents: usize,
    pub tasks: usize,
    /// Tasks per `POST /api/tasks` (1 = single submits).
    pub batch: usize,
    /// Concurrent submitters.
    pub submitters: usize,
    /// Number of distinct capabilities; 0 = tasks need none.
    pub capabilities: usize,
    /// Spread tasks over the four priority lanes.
    pub mixed_priorities: bool,
    /// Distinct write scopes (one repository, `mod<i>/**` each); 0 = none.
    pub scopes: usize,
    /// Distinct concurrency keys (round-robin fairness groups); 0 = none.
    pub concurrency_keys: usize,
    /// Subscriptions to `task.completed` that match no bench task.
    pub subscriptions: usize,
    /// Bytes of filler in each task's description.
    pub payload_bytes: usize,
    /// Submit at this many tasks per second (below saturation: a latency run)
    /// instead of as fast as the hub takes them.
    pub rate: Option<f64>,
    /// Stop submitting after this long (the run then counts what was submitted).
    pub duration: Option<Duration>,
    pub timeout: Duration,
    pub progress: bool,
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

impl Percentiles {
    fn of(mut samples: Vec<f64>) -> Percentiles {
        if samples.is_empty() {
            return Percentiles::default();
        }
        samples.sort_by(f64::total_cmp);
        let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q).round() as usize];
        Percentiles {
            p50: at(0.50),
            p90: at(0.90),
            p99: at(0.99),
            max: at(1.0),
        }
    }
}

/// The measured outcome.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BenchReport {
    /// The bench's own hub's storage (`sled`, `postgres`), or `remote` (--hub).
    pub storage: &'static str,
    pub agents: usize,
    pub tasks: usize,
    /// Submission rate asked for (`None`: as fast as possible).
    pub rate_per_s: Option<f64>,
    pub batch: usize,
    /// Distinct write scopes and concurrency keys the tasks carried.
    pub scopes: usize,
    pub concurrency_keys: usize,
    pub submitted: usize,
    pub completed: usize,
    pub elapsed_s: f64,
    pub throughput_per_s: f64,
    pub assign_latency_ms: Percentiles,
    pub round_trip_ms: Percentiles,
    pub hub_cpu_s: Option<f64>,
    pub hub_peak_rss_bytes: Option<u64>,
    pub lost: usize,
    pub duplicated: usize,
    /// With subscriptions: `task.completed` events published, and the seconds
    /// from the first submit until the last of them was.
    pub subscriptions: usize,
    pub hub_events: Option<u64>,
    pub events_elapsed_s: Option<f64>,
}

#[derive(Default)]
struct Timeline {
    submitted: HashMap<String, Instant>,
    assigned: HashMap<String, (Instant, u32)>,
    completed: HashMap<String, (Instant, u32)>,
}

/// A hub this bench started; killed and its data removed on drop.
struct OwnHub {
    child: Child,
    dir: PathBuf,
    /// On Postgres: the server's connection string and the bench's database.
    database: Option<(String, String)>,
}

impl Drop for OwnHub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
        if let Some((server, db)) = &self.database {
            if let Err(e) = postgres_admin(
                server,
                &format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"),
            ) {
                eprintln!("bench: {e}");
            }
        }
    }
}

/// One statement on the server's `postgres` database.
fn postgres_admin(server: &str, sql: &str) -> Result<(), String> {
    let mut client =
        postgres::Client::connect(&format!("{server} dbname=postgres"), postgres::NoTls)
            .map_err(|e| format!("cannot connect to Postgres ({server}): {e}"))?;
    client
        .batch_execute(sql)
        .map_err(|e| format!("postgres: {sql}: {e}"))
}

impl OwnHub {
    /// Stops the hub with SIGTERM (waits up to 60 s, then kills it).
    fn stop(&mut self) {
        // SAFETY: kill(2) on our own child's pid has no memory-safety preconditions.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the bench's own hub on a temporary data dir, on sled, or on a new
/// database of the Postgres server `postgres` names (key=value form).
fn start_hub(admin: &str, postgres: Option<&str>) -> Result<(OwnHub, String), String> {
    let tag = format!("{}_{:x}", std::process::id(), rand::random::<u32>());
    let dir = std::env::temp_dir().join(format!("agentcom-bench-{tag}"));
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let mut config = String::from("log_level = \"warn\"\n");
    let database = match postgres {
        Some(server) => {
            let db = format!("agentcom_bench_{tag}");
            postgres_admin(server, &format!("CREATE DATABASE {db}"))?;
            let url = format!("{server} dbname={db}");
            config.push_str(&format!(
                "storage = \"postgres\"\npostgres_url = {}\n",
                toml::Value::String(url)
            ));
            Some((server.to_string(), db))
        }
        None => None,
    };
    std::fs::write(dir.join("hub.toml"), config).map_err(|e| e.to_string())?;
    match spawn_hub(&dir, admin) {
        Ok((child, url)) => Ok((
            OwnHub {
                child,
                dir,
                database,
            },
            url,
        )),
        Err(e) => {
            let _ = std::fs::remove_dir_all(&dir);
            if let Some((server, db)) = &database {
                let _ = postgres_admin(
                    server,
                    &format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"),
                );
            }
            Err(e)
        }
    }
}

/// Runs `agentcom-hub serve` on `dir` and waits for its listening line.
fn spawn_hub(dir: &std::path::Path, admin: &str) -> Result<(Child, String), String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find own binary: {e}"))?;
    let mut child = Command::new(exe)
        .arg("serve")
        .arg("--data-dir")
        .arg(dir.join("data"))
        .arg("--bind")
        .arg("127.0.0.1:0")
        .arg("--config")
        .arg(dir.join("hub.toml"))
        .env("AGENTCOM_ADMIN_TOKEN", admin)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start the hub: {e}"))?;
    let Some(stdout) = child.stdout.take() else {
        let _ = child.kill();
        return Err("hub stdout missing".into());
    };
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(url) = line.strip_prefix("agentcom-hub listening on ") {
                let _ = tx.send(url.trim().to_string());
            }
        }
    });
    match rx.recv_timeout(Duration::from_secs(300)) {
        Ok(url) => Ok((child, url)),
        Err(_) => {
            let _ = child.kill();
            Err("the hub did not start within 300 s".into())
        }
    }
}

/// A `kB` field (e.g. `VmRSS:`) of /proc/PID/status.
fn status_kb(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// Current resident set size of a process, bytes.
fn current_rss(pid: u32) -> Option<u64> {
    Some(status_kb(pid, "VmRSS:")? * 1024)
}

/// (utime + stime seconds, peak RSS bytes) of a process, from /proc.
fn process_usage(pid: u32) -> Option<(f64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces) start past ')'.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    // SAFETY: sysconf has no preconditions; it only reads a system constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let hwm_kb = status_kb(pid, "VmHWM:")?;
    Some((ticks / hz, hwm_kb * 1024))
}

fn http_get(url: &str, token: &str) -> Result<Value, String> {
    ureq::get(url)
        .timeout(Duration::from_secs(60))
        .set("Authorization", &format!("Bearer {token}"))
        .call()
        .map_err(|e| format!("GET {url}: {e}"))?
        .into_json()
        .map_err(|e| format!("GET {url}: {e}"))
}

fn http_post(url: &str, token: &str, body: &Value) -> Result<Value, String> {
    ureq::post(url)
        .timeout(Duration::from_secs(60))
        .set("Authorization", &format!("Bearer {token}"))
        .send_json(body.clone())
        .map_err(|e| format!("POST {url}: {e}"))?
        .into_json()
        .map_err(|e| format!("POST {url}: {e}"))
}

/// Registers `n` agents (4 threads); answers (agent id, token) pairs.
fn register_agents(
    url: &str,
    admin: &str,
    n: usize,
    capabilities: usize,
) -> Result<Vec<(String, String)>, String> {
    let run_id = format!("{:08x}", rand::random::<u32>());
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let (url, admin, run_id) = (url.to_string(), admin.to_string(), run_id.clone());
            std::thread::spawn(move || -> Result<Vec<(String, String)>, String> {
                let mut out = Vec::new();
                for i in (t..n).step_by(4) {
                    let agent_id = format!("bench-{run_id}-{i}");
                    let caps: Vec<String> = (capabilities > 0)
                        .then(|| format!("cap-{}", i % capabilities))
                        .into_iter()
                        .collect();
                    let answer = http_post(
                        &format!("{url}/admin/tokens"),
                        &admin,
                        &json!({"agent_id": agent_id, "capabilities": caps}),
                    )?;
                    let token = answer["token"]
                        .as_str()
                        .ok_or("no token issued")?
                        .to_string();
                    out.push((agent_id, token));
                }
                Ok(out)
            })
        })
        .collect();
    let mut all = Vec::with_capacity(n);
    for t in threads {
        all.extend(t.join().map_err(|_| "a registration thread panicked")??);
    }
    Ok(all)
}

/// Runs the benchmark and returns its report.
pub fn run(opts: &BenchOptions) -> Result<BenchReport, String> {
    if opts.agents == 0 || opts.tasks == 0 || opts.batch == 0 || opts.submitters == 0 {
        return Err("agents, tasks, batch and submitters must be at least 1".into());
    }
    if opts.capabilities > opts.agents {
        return Err("--capabilities may not exceed --agents (some tasks could never run)".into());
    }
    let (own, url, admin) = match &opts.hub {
        Some(url) => {
            let admin = opts
                .admin_token
                .clone()
                .ok_or("--hub needs the admin token in AGENTCOM_ADMIN_TOKEN")?;
            (None, url.trim_end_matches('/').to_string(), admin)
        }
        None => {
            let admin = format!("bench-{:016x}", rand::random::<u64>());
            let (hub, url) = start_hub(&admin, opts.postgres.as_deref())?;
            (Some(hub), url, admin)
        }
    };
    let hub_pid = own.as_ref().map(|h| h.child.id());
    let agent_tokens = register_agents(&url, &admin, opts.agents, opts.capabilities)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the client runtime: {e}"))?;
    let timeline = Arc::new(Mutex::new(Timeline::default()));
    let done = Arc::new(AtomicUsize::new(0));
    // How many completions end the run: all tasks, or what was submitted when
    // `--duration-secs` ran out.
    let target = Arc::new(AtomicUsize::new(opts.tasks));
    let cpu_before = hub_pid.and_then(process_usage).map(|u| u.0);
    let ws_url = format!("{}/ws", url.replacen("http://", "ws://", 1));
    let deadline = Instant::now() + opts.timeout;

    // Connect every agent before any task exists.
    let agents = runtime.block_on(connect_workers(
        &ws_url,
        agent_tokens,
        timeline.clone(),
        done.clone(),
        target.clone(),
        deadline,
    ))?;

    for i in 0..opts.subscriptions {
        let sub = json!({"topic": "task.completed", "filter": {"agent_id": format!("nobody-{i}")},
                         "task": {"description": "review {{payload.task_id}}"}});
        http_post(&format!("{url}/api/subscriptions"), &admin, &sub)?;
    }

    // Submit, from plain threads (blocking HTTP), in batches.
    let started = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let submitted = Arc::new(AtomicUsize::new(0));
    let stop_submitting = opts.duration.map(|d| started + d);
    let filler = "x".repeat(opts.payload_bytes);
    let mut submitters = Vec::new();
    for _ in 0..opts.submitters {
        let (next, submitted, timeline, url, admin, filler, opts) = (
            next.clone(),
            submitted.clone(),
            timeline.clone(),
            url.clone(),
            admin.clone(),
            filler.clone(),
            opts.clone(),
        );
        submitters.push(std::thread::spawn(move || -> Result<(), String> {
            loop {
                let first = next.fetch_add(opts.batch, Ordering::Relaxed);
                if first >= opts.tasks
                    || Instant::now() >= deadline
                    || stop_submitting.is_some_and(|at| Instant::now() >= at)
                {
                    return Ok(());
                }
                if let Some(rate) = opts.rate {
                    // Task `first` is due `first / rate` seconds into the run.
                    let due = started + Duration::from_secs_f64(first as f64 / rate);
                    std::thread::sleep(due.saturating_duration_since(Instant::now()));
                }
                let last = (first + opts.batch).min(opts.tasks);
                let specs: Vec<Value> = (first..last)
                    .map(|i| {
                        let mut spec = json!({"description": format!("bench task {i} {filler}")});
                        if opts.mixed_priorities {
                            spec["priority"] = json!(i % 4);
                        }
                        if opts.capabilities > 0 {
                            spec["needed_capabilities"] =
                                json!([format!("cap-{}", i % opts.capabilities)]);
                        }
                        if opts.scopes > 0 {
                            spec["repo"] = json!("bench");
                            spec["write_paths"] = json!([format!("mod{}/**", i % opts.scopes)]);
                        }
                        if opts.concurrency_keys > 0 {
                            spec["concurrency_key"] =
                                json!(format!("key-{}", i % opts.concurrency_keys));
                        }
                        spec
                    })
                    .collect();
                let body = if opts.batch == 1 {
                    specs[0].clone()
                } else {
                    Value::Array(specs)
                };
                let sent = Instant::now();
                let answer = http_post(&format!("{url}/api/tasks"), &admin, &body)?;
                submitted.fetch_add(last - first, Ordering::Relaxed);
                let ids: Vec<String> = if opts.batch == 1 {
                    answer["task_id"]
                        .as_str()
                        .map(str::to_string)
                        .into_iter()
                        .collect()
                } else {
                    answer["tasks"]
                        .as_array()
                        .map(|a| {
                            a.iter()
                                .filter_map(|t| t["task_id"].as_str().map(str::to_string))
                                .collect()
                        })
                        .unwrap_or_default()
                };
                if let Ok(mut t) = timeline.lock() {
                    for id in ids {
                        t.submitted.insert(id, sent);
                    }
                }
            }
        }));
    }
    let progress = opts.progress.then(|| {
        let bar = indicatif::ProgressBar::new(opts.tasks as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:40} {pos}/{len} completed, {per_sec} ({elapsed})",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    });
    let mut submit_error = None;
    for s in submitters {
        match s.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => submit_error = Some(e),
            Err(_) => submit_error = Some("a submitter thread panicked".into()),
        }
    }
    target.store(submitted.load(Ordering::Relaxed), Ordering::Relaxed);
    if let Some(bar) = &progress {
        bar.set_length(target.load(Ordering::Relaxed) as u64);
    }
    while done.load(Ordering::Relaxed) < target.load(Ordering::Relaxed) && Instant::now() < deadline
    {
        if let Some(bar) = &progress {
            bar.set_position(done.load(Ordering::Relaxed) as u64);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    if let Some(bar) = &progress {
        bar.set_position(done.load(Ordering::Relaxed) as u64);
        bar.finish();
    }
    runtime.block_on(async {
        for h in agents {
            let _ = h.await;
        }
    });
    if let Some(e) = submit_error {
        return Err(e);
    }
    // With subscriptions, the run ends when every completion is published.
    let mut hub_events = None;
    let mut events_elapsed_s = None;
    if opts.subscriptions > 0 {
        let want = done.load(Ordering::Relaxed) as u64;
        while Instant::now() < deadline {
            let topics = http_get(&format!("{url}/api/topics"), &admin)?;
            let n = topics["topics"]
                .as_array()
                .and_then(|t| t.iter().find(|t| t["topic"] == "task.completed"))
                .and_then(|t| t["count"].as_u64())
                .unwrap_or(0);
            hub_events = Some(n);
            if n >= want {
                events_elapsed_s = Some(started.elapsed().as_secs_f64());
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let usage = hub_pid.and_then(process_usage);
    let t = timeline.lock().map_err(|_| "timeline poisoned")?;
    let last_completion = t
        .completed
        .values()
        .map(|(at, _)| *at)
        .max()
        .unwrap_or(started);
    let elapsed = last_completion
        .duration_since(started)
        .as_secs_f64()
        .max(1e-9);
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let assign_latency = t
        .submitted
        .iter()
        .filter_map(|(id, sent)| {
            t.assigned
                .get(id)
                .map(|(at, _)| ms(at.saturating_duration_since(*sent)))
        })
        .collect();
    let round_trip = t
        .assigned
        .iter()
        .filter_map(|(id, (at, _))| {
            t.completed
                .get(id)
                .map(|(done, _)| ms(done.saturating_duration_since(*at)))
        })
        .collect();
    let completed = t.completed.len();
    let lost = t
        .submitted
        .keys()
        .filter(|id| !t.completed.contains_key(*id))
        .count();
    let duplicated = t.completed.values().filter(|(_, n)| *n > 1).count()
        + t.assigned.values().filter(|(_, n)| *n > 1).count();
    Ok(BenchReport {
        storage: match (&opts.hub, &opts.postgres) {
            (Some(_), _) => "remote",
            (None, Some(_)) => "postgres",
            (None, None) => "sled",
        },
        scopes: opts.scopes,
        concurrency_keys: opts.concurrency_keys,
        agents: opts.agents,
        tasks: opts.tasks,
        rate_per_s: opts.rate,
        batch: opts.batch,
        submitted: t.submitted.len(),
        completed,
        elapsed_s: elapsed,
        throughput_per_s: completed as f64 / elapsed,
        assign_latency_ms: Percentiles::of(assign_latency),
        round_trip_ms: Percentiles::of(round_trip),
        hub_cpu_s: match (usage, cpu_before) {
            (Some((after, _)), Some(before)) => Some(after - before),
            _ => None,
        },
        hub_peak_rss_bytes: usage.map(|u| u.1),
        lost,
        duplicated,
        subscriptions: opts.subscriptions,
        hub_events,
        events_elapsed_s,
    })
}

/// Connects and identifies agents that accept and complete every task they are
/// assigned, until `total` completions were seen (by all of them) or `deadline`.
async fn connect_workers(
    ws_url: &str,
    agent_tokens: Vec<(String, String)>,
    timeline: Arc<Mutex<Timeline>>,
    done: Arc<AtomicUsize>,
    target: Arc<AtomicUsize>,
    deadline: Instant,
) -> Result<Vec<tokio::task::JoinHandle<()>>, String> {
    let mut handles = Vec::new();
    for (agent_id, token) in agent_tokens {
        let (ws, _) = tokio_tungstenite::connect_async_with_config(ws_url, None, true)
            .await
            .map_err(|e| format!("agent {agent_id} cannot connect: {e}"))?;
        let (mut sink, mut stream) = ws.split();
        let identify = json!({"type": "identify", "agent_id": agent_id, "token": token});
        sink.send(Message::text(identify.to_string()))
            .await
            .map_err(|e| e.to_string())?;
        loop {
            match tokio::time::timeout(Duration::from_secs(30), stream.next()).await {
                Ok(Some(Ok(Message::Text(t)))) if t.contains("\"identified\"") => break,
                Ok(Some(Ok(_))) => continue,
                _ => return Err(format!("agent {agent_id} was not identified")),
            }
        }
        let (timeline, done, target) = (timeline.clone(), done.clone(), target.clone());
        handles.push(tokio::spawn(async move {
                while done.load(Ordering::Relaxed) < target.load(Ordering::Relaxed)
                    && Instant::now() < deadline
                {
                    let frame = match tokio::time::timeout(Duration::from_millis(200), stream.next()).await {
                        Err(_) => continue,
                        Ok(Some(Ok(Message::Text(t)))) => t,
                        Ok(Some(Ok(_))) => continue,
                        Ok(_) => break,
                    };
                    match serde_json::from_str::<ServerFrame>(&frame) {
                        Ok(ServerFrame::TaskAssign(a)) => {
                            if let Ok(mut t) = timeline.lock() {
                                let entry = t.assigned.entry(a.task_id.clone()).or_insert((Instant::now(), 0));
                                entry.1 += 1;
                            }
                            let accept = json!({"type": "task_accepted", "task_id": a.task_id, "generation": a.generation});
                            let complete = json!({"type": "task_complete", "task_id": a.task_id,
                                                  "generation": a.generation, "result": {"ok": true}, "tokens_used": 1});
                            // Both frames in one write, as a sidecar that finishes at once would.
                            if sink.feed(Message::text(accept.to_string())).await.is_err()
                                || sink.send(Message::text(complete.to_string())).await.is_err()
                            {
                                break;
                            }
                        }
                        Ok(ServerFrame::TaskAck { task_id, status }) if status == "complete" => {
                            if let Ok(mut t) = timeline.lock() {
                                let entry = t.completed.entry(task_id).or_insert((Instant::now(), 0));
                                entry.1 += 1;
                                if entry.1 == 1 {
                                    done.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                        }
                        _ => {}
                    }
                }
                let _ = sink.close().await;
            }));
    }
    Ok(handles)
}

/// A human-readable report.
pub fn render(r: &BenchReport) -> String {
    let p = |x: &Percentiles| {
        format!(
            "p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2} ms",
            x.p50, x.p90, x.p99, x.max
        )
    };
    format!(
        "agents {}  tasks {}  batch {}  rate {}\n\
         completed {}/{} in {:.2} s: {:.0} durable lifecycles/s\n\
         submit→assign   {}\n\
         assign→complete {}\n\
         hub cpu {}  hub peak rss {}\n\
         lost {}  duplicated {}{}",
        r.agents,
        r.tasks,
        r.batch,
        r.rate_per_s.map_or("max".into(), |r| format!("{r:.0}/s")),
        r.completed,
        r.submitted,
        r.elapsed_s,
        r.throughput_per_s,
        p(&r.assign_latency_ms),
        p(&r.round_trip_ms),
        r.hub_cpu_s.map_or("n/a".into(), |c| format!("{c:.2} s")),
        r.hub_peak_rss_bytes
            .map_or("n/a".into(), |b| format!("{:.1} MiB", b as f64 / 1048576.0)),
        r.lost,
        r.duplicated,
        match (r.hub_events, r.events_elapsed_s) {
            (Some(n), Some(s)) => format!(
                "\n{} subscriptions: {n} task.completed events, all published after {s:.2} s",
                r.subscriptions
            ),
            (Some(n), None) => format!(
                "\n{} subscriptions: only {n} task.completed events published",
                r.subscriptions
            ),
            _ => String::new(),
        },
    )
}
