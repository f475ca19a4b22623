//! The hub process: the real `agentcom-hub` binary as a child process on an
//! ephemeral 127.0.0.1 port, with a sled data directory in a temp dir.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

use crate::http::{http, Body};
use crate::support::{hub_bin, random_hex, tail, SOON, STARTUP_TIMEOUT};

/// A running hub: child process, its data dir and the admin token it was created with.
pub struct Hub {
    bin: PathBuf,
    child: Option<Child>,
    /// Holds `data/` (the sled dir), `config.toml` and the hub's stderr logs.
    pub root: TempDir,
    pub port: u16,
    pub admin_token: String,
    starts: usize,
    /// Whether `AGENTCOM_ADMIN_TOKEN` is passed to the next start.
    admin_env: bool,
    /// The port the next start binds (0: any free one).
    bind_port: u16,
    /// Restarts bind the current port again (set once a client was configured
    /// with the hub's URL, like a sidecar); else any free port.
    keep_port: AtomicBool,
}

impl Hub {
    /// Starts the workspace's hub binary with the default configuration.
    pub fn start() -> Hub {
        Hub::start_with_config("")
    }

    /// Starts the workspace's hub binary with `config` (TOML, flat keys) as its
    /// config file. Failed tasks retry at once unless `config` sets
    /// `retry_backoff_base_ms` (only the backoff tests wait for a backoff).
    pub fn start_with_config(config: &str) -> Hub {
        if config.contains("retry_backoff_base_ms") {
            Hub::launch(&hub_bin(), config)
        } else {
            Hub::launch(&hub_bin(), &format!("retry_backoff_base_ms = 0\n{config}"))
        }
    }

    /// Starts the hub binary `bin` with `config` as its config file, on a free
    /// port. Restarts pick a free port again (read `port` after one) until
    /// [`Hub::keep_port_on_restart`].
    pub fn launch(bin: &Path, config: &str) -> Hub {
        let root = tempfile::Builder::new()
            .prefix("agentcom-hub-test-")
            .tempdir()
            .expect("create temp dir for the hub");
        std::fs::write(root.path().join("config.toml"), config).expect("write config file");
        let mut hub = Hub {
            bin: bin.to_path_buf(),
            child: None,
            root,
            port: 0,
            admin_token: format!("adm_{}", random_hex(3)),
            starts: 0,
            admin_env: true,
            bind_port: 0,
            keep_port: AtomicBool::new(false),
        };
        hub.spawn();
        hub
    }

    /// From now on a restart binds the same port again, so clients configured
    /// with the hub's URL (a sidecar) find it; a start then retries briefly
    /// while the port is still busy.
    pub fn keep_port_on_restart(&self) {
        self.keep_port.store(true, Ordering::SeqCst);
    }

    /// The sled data directory (created by the hub on first start).
    pub fn data_dir(&self) -> PathBuf {
        self.root.path().join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.root
            .path()
            .join(format!("hub-stderr-{}.log", self.starts))
    }

    /// Every stderr log written by this hub so far.
    pub fn log_paths(&self) -> Vec<PathBuf> {
        (1..=self.starts)
            .map(|n| self.root.path().join(format!("hub-stderr-{n}.log")))
            .collect()
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "hub already running");
        self.starts += 1;
        let log = File::create(self.log_path()).expect("create hub log file");
        let mut cmd = Command::new(&self.bin);
        cmd.arg("serve")
            .arg("--data-dir")
            .arg(self.data_dir())
            .arg("--bind")
            .arg(format!("127.0.0.1:{}", self.bind_port))
            .arg("--config")
            .arg(self.root.path().join("config.toml"))
            .env_remove("AGENTCOM_ADMIN_TOKEN")
            .env_remove("RUST_LOG")
            .env_remove("AGENTCOM_BIND")
            .env_remove("AGENTCOM_DATA_DIR")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log));
        if self.admin_env {
            cmd.env("AGENTCOM_ADMIN_TOKEN", &self.admin_token);
        }
        let mut child = cmd.spawn().expect("spawn the agentcom-hub binary");
        let stdout = child.stdout.take().expect("hub stdout is piped");
        let (tx, rx) = mpsc::channel::<u16>();
        // Reads stdout until the child exits (EOF), forwarding everything but the
        // listening line, which reports the port.
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                match parse_listening_line(&line) {
                    Some(port) => {
                        let _ = tx.send(port);
                    }
                    None => println!("[hub stdout] {line}"),
                }
            }
        });
        match rx.recv_timeout(STARTUP_TIMEOUT) {
            Ok(port) => {
                self.port = port;
                self.child = Some(child);
            }
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "hub did not print its listening line within {STARTUP_TIMEOUT:?} ({e}); stderr:\n{}",
                    tail(&self.log_path(), 60)
                );
            }
        }
    }

    /// Stops the hub gracefully (SIGTERM, then SIGKILL after 10 s).
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// `kill -9` (SIGKILL on unix): no chance to flush anything.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("SIGKILL the hub");
            child.wait().expect("reap the killed hub");
        }
    }

    /// Stops the hub if it runs, then starts it again on the same data dir.
    /// The port changes.
    pub fn restart(&mut self) {
        self.stop();
        self.start_again();
    }

    /// Restarts without `AGENTCOM_ADMIN_TOKEN` in the environment: the admin token
    /// must then come from the data dir (stored hashed).
    pub fn restart_without_admin_env(&mut self) {
        self.stop();
        self.admin_env = false;
        self.start_again();
    }

    /// Starts the hub again after `kill9` or `stop`, on the same data dir (and,
    /// after [`Hub::keep_port_on_restart`], the same port, retried while busy).
    pub fn start_again(&mut self) {
        if !self.keep_port.load(Ordering::SeqCst) {
            return self.spawn();
        }
        let before = self.bind_port;
        self.bind_port = self.port;
        let deadline = Instant::now() + SOON;
        let result = loop {
            let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.spawn()));
            match ok {
                Ok(()) => break Ok(()),
                Err(_) if Instant::now() < deadline => {
                    thread::sleep(Duration::from_millis(200));
                }
                Err(e) => break Err(e),
            }
        };
        self.bind_port = before;
        if let Err(e) = result {
            std::panic::resume_unwind(e);
        }
    }

    /// Starts the hub again after `kill9` or `stop`, on the same data dir and the
    /// same port (clients that reconnect by themselves, like the dashboard page).
    pub fn start_again_on_same_port(&mut self) {
        let before = self.bind_port;
        self.bind_port = self.port;
        self.spawn();
        self.bind_port = before;
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}/ws", self.port)
    }

    // HTTP with the admin token -------------------------------------------

    pub fn get(&self, path: &str) -> (u16, Value) {
        http("GET", &self.url(path), Some(&self.admin_token), Body::None)
    }

    pub fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        http(
            "POST",
            &self.url(path),
            Some(&self.admin_token),
            Body::Json(body),
        )
    }

    pub fn put(&self, path: &str, body: &Value) -> (u16, Value) {
        http(
            "PUT",
            &self.url(path),
            Some(&self.admin_token),
            Body::Json(body),
        )
    }

    pub fn delete(&self, path: &str) -> (u16, Value) {
        http(
            "DELETE",
            &self.url(path),
            Some(&self.admin_token),
            Body::None,
        )
    }

    // HTTP with any (or no) bearer token ----------------------------------

    pub fn get_as(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        http("GET", &self.url(path), token, Body::None)
    }

    pub fn post_as(&self, path: &str, token: Option<&str>, body: &Value) -> (u16, Value) {
        http("POST", &self.url(path), token, Body::Json(body))
    }

    pub fn put_as(&self, path: &str, token: Option<&str>, body: &Value) -> (u16, Value) {
        http("PUT", &self.url(path), token, Body::Json(body))
    }

    /// Posts `raw` as the body with `Content-Type: application/json` (for bad JSON).
    pub fn post_raw_as(&self, path: &str, token: Option<&str>, raw: &str) -> (u16, Value) {
        http("POST", &self.url(path), token, Body::Raw(raw))
    }

    pub fn delete_as(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        http("DELETE", &self.url(path), token, Body::None)
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if thread::panicking() && self.starts > 0 {
            eprintln!(
                "---- hub stderr (last lines of start #{}) ----\n{}",
                self.starts,
                tail(&self.log_path(), 40)
            );
        }
    }
}

fn parse_listening_line(line: &str) -> Option<u16> {
    let rest = line.split("listening on http://127.0.0.1:").nth(1)?;
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    digits.parse().ok()
}
