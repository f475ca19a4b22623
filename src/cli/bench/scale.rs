//! `agentcom-hub bench --scale`: what a big fleet or a big queue costs the hub
//! (memory per idle connection; restart time and per-assignment cost with a
//! million queued tasks).

use super::*;

/// What a scale run measured.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ScaleReport {
    pub mode: String,
    pub agents: usize,
    pub queued: usize,
    pub hub_rss_before_bytes: u64,
    pub hub_rss_after_bytes: u64,
    /// idle-agents: hub memory per idle connection.
    pub bytes_per_idle_agent: Option<f64>,
    /// queued: time from start to serving with `queued` tasks in the store.
    pub restart_to_serving_ms: Option<f64>,
    /// queued: mean wall time per lifecycle with few vs `queued` tasks waiting.
    pub per_assignment_ms_1k: Option<f64>,
    pub per_assignment_ms_full: Option<f64>,
    pub per_assignment_ratio: Option<f64>,
}

fn new_runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the client runtime: {e}"))
}

/// `--scale idle-agents`: hub memory per idle, identified connection.
pub fn scale_idle_agents(agents: usize) -> Result<ScaleReport, String> {
    let admin = format!("bench-{:016x}", rand::random::<u64>());
    let (hub, url) = start_hub(&admin, None)?;
    let pid = hub.child.id();
    let tokens = register_agents(&url, &admin, agents, 0)?;
    std::thread::sleep(Duration::from_millis(500));
    let before = current_rss(pid).ok_or("cannot read hub RSS")?;
    let ws_url = format!("{}/ws", url.replacen("http://", "ws://", 1));
    let runtime = new_runtime()?;
    let sockets = runtime.block_on(async {
        let mut sockets = Vec::with_capacity(tokens.len());
        for chunk in tokens.chunks(200) {
            let connects = chunk.iter().map(|(agent_id, token)| {
                let ws_url = ws_url.clone();
                async move {
                    let (mut ws, _) =
                        tokio_tungstenite::connect_async_with_config(ws_url.as_str(), None, true)
                            .await
                            .map_err(|e| format!("{agent_id} cannot connect: {e}"))?;
                    let identify =
                        json!({"type": "identify", "agent_id": agent_id, "token": token});
                    ws.send(Message::text(identify.to_string()))
                        .await
                        .map_err(|e| e.to_string())?;
                    loop {
                        match tokio::time::timeout(Duration::from_secs(60), ws.next()).await {
                            Ok(Some(Ok(Message::Text(t)))) if t.contains("\"identified\"") => {
                                // An idle sidecar still reads (other agents' joins,
                                // pings): drain, so the hub's send buffers stay empty.
                                return Ok::<_, String>(tokio::spawn(async move {
                                    while let Some(Ok(_)) = ws.next().await {}
                                }));
                            }
                            Ok(Some(Ok(_))) => continue,
                            _ => return Err(format!("{agent_id} was not identified")),
                        }
                    }
                }
            });
            for ws in futures_util::future::join_all(connects).await {
                sockets.push(ws?);
            }
        }
        Ok::<_, String>(sockets)
    })?;
    // Joins are broadcast to every online agent (N² frames in all): measure once
    // the hub has written them out, i.e. once it is idle (under 2% of a core).
    let mut cpu = process_usage(pid).map(|u| u.0);
    for _ in 0..120 {
        std::thread::sleep(Duration::from_secs(1));
        let now = process_usage(pid).map(|u| u.0);
        if let (Some(before), Some(after)) = (cpu, now) {
            if after - before < 0.02 {
                break;
            }
        }
        cpu = now;
    }
    let after = current_rss(pid).ok_or("cannot read hub RSS")?;
    for drain in sockets {
        drain.abort();
    }
    drop(runtime);
    Ok(ScaleReport {
        mode: "idle-agents".into(),
        agents,
        hub_rss_before_bytes: before,
        hub_rss_after_bytes: after,
        bytes_per_idle_agent: Some(after.saturating_sub(before) as f64 / agents.max(1) as f64),
        ..ScaleReport::default()
    })
}

/// Mean wall time per lifecycle for `lifecycles` completions by `agents` agents
/// against whatever is queued.
fn timed_lifecycles(
    url: &str,
    admin: &str,
    agents: usize,
    lifecycles: usize,
) -> Result<f64, String> {
    let tokens = register_agents(url, admin, agents, 0)?;
    let ws_url = format!("{}/ws", url.replacen("http://", "ws://", 1));
    let runtime = new_runtime()?;
    let timeline = Arc::new(Mutex::new(Timeline::default()));
    let done = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + Duration::from_secs(600);
    let started = Instant::now();
    let handles = runtime.block_on(connect_workers(
        &ws_url,
        tokens,
        timeline,
        done.clone(),
        Arc::new(AtomicUsize::new(lifecycles)),
        deadline,
    ))?;
    runtime.block_on(async {
        for h in handles {
            let _ = h.await;
        }
    });
    let completed = done.load(Ordering::Relaxed);
    if completed < lifecycles {
        return Err(format!(
            "only {completed}/{lifecycles} lifecycles completed"
        ));
    }
    Ok(started.elapsed().as_secs_f64() * 1000.0 / lifecycles as f64)
}

/// Queues `n` tasks (batches of 1000, 2 submitters), with no agent connected.
fn fill_queue(url: &str, admin: &str, n: usize, progress: bool) -> Result<(), String> {
    let next = Arc::new(AtomicUsize::new(0));
    let bar = progress.then(|| indicatif::ProgressBar::new(n as u64));
    let submitters: Vec<_> = (0..2)
        .map(|_| {
            let (next, url, admin, bar) = (next.clone(), url.to_string(), admin.to_string(), bar.clone());
            std::thread::spawn(move || -> Result<(), String> {
                loop {
                    let first = next.fetch_add(1000, Ordering::Relaxed);
                    if first >= n {
                        return Ok(());
                    }
                    let last = (first + 1000).min(n);
                    let specs: Vec<Value> = (first..last)
                        .map(|i| json!({"description": format!("queued task {i}"), "priority": i % 4}))
                        .collect();
                    http_post(&format!("{url}/api/tasks"), &admin, &Value::Array(specs))?;
                    if let Some(bar) = &bar {
                        bar.inc((last - first) as u64);
                    }
                }
            })
        })
        .collect();
    for s in submitters {
        s.join().map_err(|_| "a submitter panicked")??;
    }
    if let Some(bar) = bar {
        bar.finish();
    }
    Ok(())
}

/// `--scale queued`: hub RSS with `n` queued tasks, restart-to-serving time, and
/// per-assignment cost with 1k vs `n` queued.
pub fn scale_queued(n: usize, progress: bool) -> Result<ScaleReport, String> {
    const AGENTS: usize = 4;
    const LIFECYCLES: usize = 2000;
    let admin = format!("bench-{:016x}", rand::random::<u64>());
    // Small queue first, on its own hub.
    let small = {
        let (_hub, url) = start_hub(&admin, None)?;
        fill_queue(&url, &admin, 1000 + LIFECYCLES, false)?;
        timed_lifecycles(&url, &admin, AGENTS, LIFECYCLES)?
    };
    let (mut hub, url) = start_hub(&admin, None)?;
    let before = current_rss(hub.child.id()).ok_or("cannot read hub RSS")?;
    fill_queue(&url, &admin, n + LIFECYCLES, progress)?;
    let after = current_rss(hub.child.id()).ok_or("cannot read hub RSS")?;
    hub.stop();
    let restarted = Instant::now();
    let (child, url) = spawn_hub(&hub.dir, &admin)?;
    hub.child = child;
    let restart_ms = restarted.elapsed().as_secs_f64() * 1000.0;
    let full = timed_lifecycles(&url, &admin, AGENTS, LIFECYCLES)?;
    Ok(ScaleReport {
        mode: "queued".into(),
        agents: AGENTS,
        queued: n,
        hub_rss_before_bytes: before,
        hub_rss_after_bytes: after,
        restart_to_serving_ms: Some(restart_ms),
        per_assignment_ms_1k: Some(small),
        per_assignment_ms_full: Some(full),
        per_assignment_ratio: Some(full / small.max(1e-9)),
        ..ScaleReport::default()
    })
}
