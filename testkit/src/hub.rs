//! The hub process: the real `agentcom-hub` binary as a child process on an
//! ephemeral 127.0.0.1 port, with a sled data directory in a temp dir, or,
//! when `AGENTCOM_TEST_POSTGRES` names a Postgres server (a connection string
//! without `dbname`), on a database of its own there (`storage = "postgres"`).

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
    /// The database of this hub, when the suite runs on Postgres.
    pub postgres_db: Option<String>,
    /// What the running process announces (a standby waits on it for its
    /// listening line).
    announce: std::sync::Mutex<Option<mpsc::Receiver<Announce>>>,
}

/// A line the hub prints on stdout about where it listens.
enum Announce {
    Listening(u16),
    Standby(u16),
}

/// The Postgres server the suite runs on (`AGENTCOM_TEST_POSTGRES`), if any.
pub fn postgres_base() -> Option<String> {
    std::env::var("AGENTCOM_TEST_POSTGRES")
        .ok()
        .filter(|s| !s.trim().is_empty())
}

/// Whether the suite runs on Postgres (tests of sled's own files skip then).
pub fn on_postgres() -> bool {
    postgres_base().is_some()
}

/// On Postgres, a test of sled's own files (a backup's, a data directory's)
/// says it does not apply and is skipped; it runs on sled.
pub fn skip_on_postgres(what: &str) -> bool {
    if on_postgres() {
        eprintln!("skipped on Postgres: this test checks {what}");
    }
    on_postgres()
}

/// A new, empty database on the suite's Postgres server: its name and
/// connection string. Dropped by the hub that uses it (or left to the server).
pub fn create_database() -> (String, String) {
    let base = postgres_base().expect("AGENTCOM_TEST_POSTGRES");
    let db = format!("agentcom_t_{}", random_hex(2).to_lowercase());
    postgres_admin(&base, &format!("CREATE DATABASE {db}"));
    let url = format!("{base} dbname={db}");
    (db, url)
}

/// Runs `sql` on the server's `postgres` database.
fn postgres_admin(base: &str, sql: &str) {
    let mut client = postgres::Client::connect(&format!("{base} dbname=postgres"), postgres::NoTls)
        .unwrap_or_else(|e| panic!("AGENTCOM_TEST_POSTGRES: cannot connect: {e}"));
    client
        .batch_execute(sql)
        .unwrap_or_else(|e| panic!("postgres: {sql}: {e}"));
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
        Hub::launch_on(bin, config, postgres_base().is_some(), 0)
    }

    /// The workspace's hub (with [`Hub::start_with_config`]'s defaults) on
    /// `port` of 127.0.0.1, kept on restarts: for set-ups that name the
    /// hub's URL in a config before it starts (see [`free_port`]).
    pub fn start_on_port(config: &str, port: u16) -> Hub {
        let hub = Hub::launch_on(
            &hub_bin(),
            &format!("retry_backoff_base_ms = 0\n{config}"),
            postgres_base().is_some(),
            port,
        );
        hub.keep_port_on_restart();
        hub
    }

    /// The workspace's hub on sled, whatever the suite runs on (a migration's
    /// source).
    pub fn start_on_sled(config: &str) -> Hub {
        Hub::launch_on(&hub_bin(), config, false, 0)
    }

    fn launch_on(bin: &Path, config: &str, on_postgres: bool, port: u16) -> Hub {
        let root = tempfile::Builder::new()
            .prefix("agentcom-hub-test-")
            .tempdir()
            .expect("create temp dir for the hub");
        let postgres_db = postgres_base()
            .filter(|_| on_postgres)
            .map(|_| create_database().0);
        let config = match (&postgres_db, postgres_base()) {
            (Some(db), Some(base)) => {
                let lease = if config.contains("failover_ms") {
                    ""
                } else {
                    "failover_ms = 1000\n"
                };
                format!("storage = \"postgres\"\npostgres_url = \"{base} dbname={db}\"\n{lease}{config}")
            }
            _ => config.to_string(),
        };
        std::fs::write(root.path().join("config.toml"), &config).expect("write config file");
        let mut hub = Hub {
            bin: bin.to_path_buf(),
            child: None,
            root,
            port: 0,
            admin_token: format!("adm_{}", random_hex(3)),
            starts: 0,
            admin_env: true,
            bind_port: port,
            keep_port: AtomicBool::new(false),
            postgres_db,
            announce: std::sync::Mutex::new(None),
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

    /// The arguments an offline command (`agentcom-hub agent add …`) needs to
    /// work on this hub's store: its data directory, and on Postgres its
    /// config (which names the database).
    pub fn offline_args(&self) -> Vec<std::ffi::OsString> {
        let mut args = vec!["--data-dir".into(), self.data_dir().into_os_string()];
        if self.postgres_db.is_some() {
            args.push("--config".into());
            args.push(self.root.path().join("config.toml").into_os_string());
        }
        args
    }

    /// A second hub on this hub's Postgres database, with a directory of its
    /// own: a standby until it holds the leader lease, so this returns once it
    /// serves (the active hub gone or stopped).
    pub fn standby_of(&self) -> Hub {
        self.standby_on_port(0)
    }

    /// [`Hub::standby_of`] on `port` of 127.0.0.1 (0: a free one).
    pub fn standby_on_port(&self, port: u16) -> Hub {
        assert!(
            self.postgres_db.is_some(),
            "standby_of needs the suite on Postgres"
        );
        let config =
            std::fs::read_to_string(self.root.path().join("config.toml")).expect("read config");
        let root = tempfile::Builder::new()
            .prefix("agentcom-hub-standby-")
            .tempdir()
            .expect("create temp dir for the standby");
        std::fs::write(root.path().join("config.toml"), config).expect("write config file");
        let mut hub = Hub {
            bin: self.bin.clone(),
            child: None,
            root,
            port: 0,
            admin_token: self.admin_token.clone(),
            starts: 0,
            admin_env: true,
            bind_port: port,
            keep_port: AtomicBool::new(false),
            postgres_db: self.postgres_db.clone(),
            announce: std::sync::Mutex::new(None),
        };
        hub.spawn_until(true);
        hub
    }

    /// Waits until a standby holds the lease and serves (it keeps its port).
    pub fn wait_serving(&mut self) {
        let guard = self.announce.lock().expect("announce lock");
        let rx = guard.as_ref().expect("a running standby");
        let deadline = Instant::now() + SOON;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(Announce::Listening(port)) => {
                    drop(guard);
                    self.port = port;
                    return;
                }
                Ok(Announce::Standby(_)) => {}
                Err(e) => panic!(
                    "the standby did not start serving within {SOON:?} ({e}); stderr:\n{}",
                    tail(&self.log_path(), 60)
                ),
            }
        }
    }

    /// The hub process's id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Waits up to `timeout` for the hub process to end by itself; its exit
    /// code (`None`: still running, or ended by a signal).
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    return status.code();
                }
            }
            thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// The first column of every row `sql` answers (text) on this hub's
    /// Postgres database.
    pub fn postgres_strings(&self, sql: &str) -> Vec<String> {
        let (Some(db), Some(base)) = (&self.postgres_db, postgres_base()) else {
            panic!("postgres_strings needs the suite on Postgres");
        };
        let mut client = postgres::Client::connect(&format!("{base} dbname={db}"), postgres::NoTls)
            .expect("connect to the hub's database");
        client
            .query(sql, &[])
            .expect("query")
            .iter()
            .map(|r| r.get(0))
            .collect()
    }

    /// One number from this hub's Postgres database (`sql` answers one
    /// `bigint`).
    pub fn postgres_number(&self, sql: &str) -> i64 {
        let (Some(db), Some(base)) = (&self.postgres_db, postgres_base()) else {
            panic!("postgres_number needs the suite on Postgres");
        };
        let mut client = postgres::Client::connect(&format!("{base} dbname={db}"), postgres::NoTls)
            .expect("connect to the hub's database");
        client.query_one(sql, &[]).expect("query").get(0)
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
        self.spawn_until(false);
    }

    /// Starts the process; returns once it listens, or with `standby` once it
    /// answers as a standby (Postgres: another hub holds the lease).
    fn spawn_until(&mut self, standby: bool) {
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
        let (tx, rx) = mpsc::channel::<Announce>();
        // Reads stdout until the child exits (EOF), forwarding everything but the
        // listening line, which reports the port.
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(port) = parse_listening_line(&line) {
                    let _ = tx.send(Announce::Listening(port));
                } else if let Some(port) = parse_standby_line(&line) {
                    let _ = tx.send(Announce::Standby(port));
                } else {
                    println!("[hub stdout] {line}");
                }
            }
        });
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        let announced = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(Announce::Listening(port)) => break Ok(port),
                Ok(Announce::Standby(port)) if standby => break Ok(port),
                Ok(Announce::Standby(_)) => {}
                Err(e) => break Err(e),
            }
        };
        match announced {
            Ok(port) => {
                self.port = port;
                self.child = Some(child);
                if let Ok(mut a) = self.announce.lock() {
                    *a = Some(rx);
                }
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

    /// Sled only: writes a backup now (`POST /api/admin/backup`) and answers its
    /// file, for [`Hub::restore_backup`].
    pub fn backup_now(&self) -> String {
        let (status, backup) = self.post("/api/admin/backup", &serde_json::json!({}));
        assert_eq!(status, 201, "POST /api/admin/backup: {backup}");
        backup["path"]
            .as_str()
            .unwrap_or_else(|| panic!("no path in {backup}"))
            .to_string()
    }

    /// Sled only: the hub stops, its data dir is replaced by the backup `file`
    /// (`agentcom-hub restore`), and it starts again on it: a hub come back
    /// from an older backup.
    pub fn restore_backup(&mut self, file: &str) {
        self.stop();
        std::fs::remove_dir_all(self.data_dir()).expect("wipe the data dir");
        let restored = Command::new(hub_bin())
            .args(["restore", file, "--data-dir"])
            .arg(self.data_dir())
            .output()
            .expect("run agentcom-hub restore");
        assert!(
            restored.status.success(),
            "restore: {}",
            String::from_utf8_lossy(&restored.stderr)
        );
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

    /// Starts a stopped hub of a Postgres pair again on its port as a standby
    /// (another hub leads); returns once it answers as one. [`Hub::wait_serving`]
    /// then waits for it to take over.
    pub fn start_again_as_standby(&mut self) {
        let before = self.bind_port;
        self.bind_port = self.port;
        self.spawn_until(true);
        self.bind_port = before;
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
        if let (Some(db), Some(base)) = (&self.postgres_db, postgres_base()) {
            if !thread::panicking() {
                postgres_admin(&base, &format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"));
            }
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

fn parse_standby_line(line: &str) -> Option<u16> {
    let rest = line.split("standby on http://127.0.0.1:").nth(1)?;
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    digits.parse().ok()
}

fn parse_listening_line(line: &str) -> Option<u16> {
    let rest = line.split("listening on http://127.0.0.1:").nth(1)?;
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    digits.parse().ok()
}

/// A port of 127.0.0.1 free now (the kernel's pick): for a hub whose URL a
/// config must name before it starts.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}

/// Two hubs on one Postgres database, the active one and a standby, and both
/// URLs as a client lists them, the standby first (so a client must move on);
/// `None`, said on stderr, when the suite runs on sled: nothing to fail over.
pub fn active_and_standby() -> Option<(Hub, Hub, String)> {
    if !on_postgres() {
        eprintln!("skipped on sled: failover needs the Postgres backend");
        return None;
    }
    let active = Hub::start();
    let standby = active.standby_of();
    let hubs = format!("{},{}", standby.url(""), active.url(""));
    Some((active, standby, hubs))
}
