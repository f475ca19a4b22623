//! The hub connection: connect, identify, keep alive, reconnect.
//!
//! One task owns the WebSocket. With several hub URLs (ext, #22: hubs on one
//! Postgres, one active) it keeps to the one it is connected to and moves on
//! to the next when a connection fails or ends (a standby refuses the upgrade
//! with 503); the backoff delay comes only once every URL failed in a row.
//! Each connection gets a number; the relay tags
//! what it sends with the number it believes is current, and frames for an older
//! connection are dropped here (the relay re-sends whatever still matters from
//! its durable outbox after the next `Online`).
//!
//! Architecture invariant: the link knows frames only as text plus `identify`,
//! `identified`, `ping` and `pong`; it has no idea of tasks.

use std::time::Duration;

use agentcom_protocol::ClientFrame;
use futures_util::{SinkExt, StreamExt};
use rand::Rng;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::time::{sleep_until, timeout, Instant};
use tokio_tungstenite::tungstenite::Message;

/// What the link tells the relay.
#[derive(Debug)]
pub enum LinkEvent {
    /// Identified on connection `conn`; `slots`: the slots the hub granted,
    /// when it says (ext).
    Online { conn: u64, slots: Option<u32> },
    /// Connection `conn` is gone.
    Offline { conn: u64 },
    /// A text frame from the hub.
    Frame { conn: u64, text: String },
    /// The frame with outbox sequence `seq` was written to the socket.
    Written { conn: u64, seq: u64 },
}

/// A frame for the hub.
#[derive(Debug)]
pub struct Outbound {
    pub conn: u64,
    pub text: String,
    /// Outbox sequence number, when the frame comes from the outbox.
    pub seq: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct LinkConfig {
    /// The hubs' WebSocket URLs (at least one).
    pub urls: Vec<String>,
    pub identify: ClientFrame,
    pub ping_interval: Duration,
    pub pong_timeout: Duration,
    pub reconnect_initial: Duration,
    pub reconnect_max: Duration,
}

/// Reconnect delays: `initial` doubling up to `max`, each drawn uniformly from
/// the upper half of the current step (jitter, so a fleet does not reconnect in
/// lockstep after a hub restart).
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    step: Duration,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff {
            initial,
            max,
            step: initial,
        }
    }

    pub fn reset(&mut self) {
        self.step = self.initial;
    }

    pub fn next_delay(&mut self) -> Duration {
        let step = self.step.min(self.max);
        self.step = (self.step * 2).min(self.max);
        let half = step / 2;
        let jitter_ms = rand::thread_rng().gen_range(0..=half.as_millis() as u64);
        half + Duration::from_millis(jitter_ms)
    }
}

/// Why a connection ended.
enum End {
    /// The relay is gone: stop for good.
    Shutdown,
    /// Reconnect after a backoff delay.
    Retry(String),
}

/// Runs until the relay drops its receiver.
pub async fn run(
    cfg: LinkConfig,
    events: mpsc::Sender<LinkEvent>,
    mut outbound: mpsc::Receiver<Outbound>,
) {
    let mut backoff = Backoff::new(cfg.reconnect_initial, cfg.reconnect_max);
    let mut conn: u64 = 0;
    let urls = cfg.urls.len().max(1);
    let mut current = 0usize;
    // Connections that failed in a row: a whole round of the URLs waits.
    let mut failed_in_a_row = 0usize;
    loop {
        conn += 1;
        let url = cfg.urls.get(current).cloned().unwrap_or_default();
        let (end, was_online) =
            connection(&cfg, &url, conn, &events, &mut outbound, &mut backoff).await;
        if was_online && events.send(LinkEvent::Offline { conn }).await.is_err() {
            return;
        }
        match end {
            End::Shutdown => return,
            End::Retry(why) => {
                failed_in_a_row = if was_online { 1 } else { failed_in_a_row + 1 };
                if urls > 1 {
                    current = (current + 1) % urls;
                    if failed_in_a_row < urls {
                        tracing::info!(reason = %why, next = %cfg.urls[current], "hub connection lost; trying the next hub");
                        continue;
                    }
                    failed_in_a_row = 0;
                }
                let delay = backoff.next_delay();
                tracing::info!(reason = %why, delay_ms = delay.as_millis() as u64, "hub connection lost; reconnecting");
                // Drain frames meant for dead connections while waiting, so the
                // queue never fills with stale ones.
                let until = Instant::now() + delay;
                loop {
                    tokio::select! {
                        _ = sleep_until(until) => break,
                        o = outbound.recv() => if o.is_none() { return },
                    }
                }
            }
        }
    }
}

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

async fn connection(
    cfg: &LinkConfig,
    url: &str,
    conn: u64,
    events: &mpsc::Sender<LinkEvent>,
    outbound: &mut mpsc::Receiver<Outbound>,
    backoff: &mut Backoff,
) -> (End, bool) {
    let ws = match timeout(HANDSHAKE_TIMEOUT, tokio_tungstenite::connect_async(url)).await {
        Ok(Ok((ws, _))) => ws,
        Ok(Err(e)) => return (End::Retry(format!("connect failed: {e}")), false),
        Err(_) => return (End::Retry("connect timed out".into()), false),
    };
    let (mut sink, mut stream) = ws.split();
    let identify = match serde_json::to_string(&cfg.identify) {
        Ok(t) => t,
        Err(e) => return (End::Retry(format!("cannot encode identify: {e}")), false),
    };
    let write_timeout = cfg.pong_timeout.max(Duration::from_secs(1));
    match timeout(write_timeout, sink.send(Message::text(identify))).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return (End::Retry(format!("cannot send identify: {e}")), false),
        Err(_) => return (End::Retry("identify write timed out".into()), false),
    }
    // Wait for `identified`; anything else first is a refusal.
    let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
    let granted = loop {
        let msg = match timeout(
            deadline.saturating_duration_since(Instant::now()),
            stream.next(),
        )
        .await
        {
            Err(_) => return (End::Retry("no identified reply".into()), false),
            Ok(None) => return (End::Retry("closed during identify".into()), false),
            Ok(Some(Err(e))) => return (End::Retry(format!("identify failed: {e}")), false),
            Ok(Some(Ok(m))) => m,
        };
        let Message::Text(text) = msg else { continue };
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        match v["type"].as_str() {
            Some("identified") => {
                break v["slots"].as_u64().and_then(|n| u32::try_from(n).ok());
            }
            Some("error") => {
                let error = v["error"].as_str().unwrap_or("unknown").to_string();
                tracing::error!(error = %error, "the hub refused identify (check agent_id and token)");
                return (End::Retry(format!("identify refused: {error}")), false);
            }
            _ => continue,
        }
    };
    backoff.reset();
    tracing::info!(conn, hub = %url, "identified with the hub");
    let online = LinkEvent::Online {
        conn,
        slots: granted,
    };
    if events.send(online).await.is_err() {
        return (End::Shutdown, true);
    }
    let mut ping = tokio::time::interval_at(Instant::now() + cfg.ping_interval, cfg.ping_interval);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut pong_deadline: Option<Instant> = None;
    let ping_text = serde_json::to_string(&ClientFrame::Ping).unwrap_or_default();
    loop {
        let pong_wait = async {
            match pong_deadline {
                Some(d) => sleep_until(d).await,
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            msg = stream.next() => match msg {
                None => return (End::Retry("connection closed".into()), true),
                Some(Err(e)) => return (End::Retry(format!("read failed: {e}")), true),
                Some(Ok(Message::Text(text))) => {
                    let text = text.to_string();
                    if text.contains("\"pong\"") {
                        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                        if v["type"] == "pong" {
                            pong_deadline = None;
                            continue;
                        }
                    }
                    if events.send(LinkEvent::Frame { conn, text }).await.is_err() {
                        return (End::Shutdown, true);
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    let (code, reason) = frame
                        .map(|f| (u16::from(f.code), f.reason.to_string()))
                        .unwrap_or((0, String::new()));
                    if code == 4000 {
                        tracing::warn!("the hub replaced this connection with a newer one for the same agent (is a second sidecar running?)");
                    }
                    return (End::Retry(format!("closed by the hub: {code} {reason}")), true);
                }
                Some(Ok(_)) => {}
            },
            o = outbound.recv() => {
                let Some(o) = o else { return (End::Shutdown, true) };
                if o.conn != conn {
                    continue;
                }
                match timeout(write_timeout, sink.send(Message::text(o.text))).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => return (End::Retry(format!("write failed: {e}")), true),
                    Err(_) => return (End::Retry("write timed out".into()), true),
                }
                if let Some(seq) = o.seq {
                    if events.send(LinkEvent::Written { conn, seq }).await.is_err() {
                        return (End::Shutdown, true);
                    }
                }
            },
            _ = ping.tick() => {
                match timeout(write_timeout, sink.send(Message::text(ping_text.clone()))).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => return (End::Retry(format!("ping failed: {e}")), true),
                    Err(_) => return (End::Retry("ping write timed out".into()), true),
                }
                if pong_deadline.is_none() {
                    pong_deadline = Some(Instant::now() + cfg.pong_timeout);
                }
            },
            _ = pong_wait => {
                return (End::Retry(format!("no pong within {} ms", cfg.pong_timeout.as_millis())), true);
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_cap_with_jitter_and_resets() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        let mut steps = Vec::new();
        for _ in 0..10 {
            steps.push(b.next_delay());
        }
        let expected_steps = [1u64, 2, 4, 8, 16, 32, 60, 60, 60, 60];
        for (d, step) in steps.iter().zip(expected_steps) {
            let step = Duration::from_secs(step);
            assert!(
                *d >= step / 2 && *d <= step,
                "{d:?} within [{:?}, {step:?}]",
                step / 2
            );
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_secs(1));
    }
}
