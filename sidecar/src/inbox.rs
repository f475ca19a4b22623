//! The agent's inbox: every `message` and `channel_message` the hub pushes to
//! this agent, kept durably until the agent reads it.
//!
//! ```text
//! state_dir/inbox/
//!   <seq>.json        unread messages (InboxEntry), in arrival order
//!   read/<seq>.json   read ones; the newest READ_KEPT stay, so a late repeat
//!                     of a message is still recognised
//! ```
//!
//! The cursor (the highest mailbox sequence written here) is derived from the
//! kept entries. The mailbox read after each connect (and after a gap) asks for
//! everything the hub still holds, not only what lies past the cursor: repeats
//! are recognised by id, and a message the inbox does not know is kept whatever
//! its sequence. So a hub whose mailbox went back (restored from an older
//! backup: its sequences start again below the cursor) loses nothing: its
//! answer's `last_seq` lowers the cursor, and nothing is acknowledged past what
//! was read since (an acknowledgement covers every sequence up to it).
//!
//! The hub keeps every direct message and broadcast in this agent's mailbox
//! until it is acknowledged; its push carries the `mailbox_seq`. The sidecar
//! writes a message here (fsync) before it acknowledges that sequence, and after
//! every (re)connect fetches the mailbox since its cursor, so nothing pushed
//! while it was down or disconnected is missed. Mailbox messages are written in
//! mailbox order: a push that skips a sequence triggers a fetch instead. A
//! message id already here (unread or read) is not written twice.
//!
//! Architecture invariant: [`Inbox`] knows files only. [`Mail`] is the relay's
//! part: it decides what to write and asks the hub (blocking HTTP on the blocking
//! pool, answers through [`MailEvent`]); it never touches task state.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use agentcom_protocol::ChatMessage;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::config::Config;
use crate::http;
use crate::state::{now_ms, write_atomic};
use crate::wake::{self, Attempt, WakeEnv};

/// Read messages kept for recognising repeats.
const READ_KEPT: usize = 1000;
/// Most mailbox pages fetched in one catch-up (1000 messages each).
const MAX_FETCH_PAGES: usize = 100;
/// Messages per mailbox page (the hub's read limit).
const PAGE: usize = 1000;

/// One stored message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InboxEntry {
    /// Arrival order in this inbox.
    pub seq: u64,
    pub received_at_ms: u64,
    /// Its sequence in the hub mailbox (direct messages and broadcasts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mailbox_seq: Option<u64>,
    pub message: ChatMessage,
}

/// The inbox directory.
pub struct Inbox {
    dir: PathBuf,
    next_seq: u64,
    ids: HashSet<String>,
    cursor: u64,
}

fn entry_name(seq: u64) -> String {
    format!("{seq:020}.json")
}

/// The entries of `dir`, oldest first; unreadable files are skipped (and named
/// in the log).
fn entries_in(dir: &Path) -> io::Result<Vec<(PathBuf, InboxEntry)>> {
    let mut out = Vec::new();
    let mut paths: Vec<PathBuf> = match fs::read_dir(dir) {
        Ok(rd) => rd.filter_map(|e| e.ok().map(|e| e.path())).collect(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    paths.sort();
    for path in paths {
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        match fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice::<InboxEntry>(&b).ok())
        {
            Some(entry) => out.push((path, entry)),
            None => tracing::warn!(file = %path.display(), "unreadable inbox entry skipped"),
        }
    }
    Ok(out)
}

/// `<state_dir>/inbox`.
pub fn inbox_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("inbox")
}

/// Unread messages, oldest first.
pub fn unread(dir: &Path) -> io::Result<Vec<InboxEntry>> {
    Ok(entries_in(dir)?.into_iter().map(|(_, e)| e).collect())
}

/// Moves the unread entries `which` accepts to `read/`; answers how many.
pub fn mark_read(dir: &Path, which: impl Fn(&InboxEntry) -> bool) -> io::Result<usize> {
    fs::create_dir_all(dir.join("read"))?;
    let mut n = 0;
    for (path, entry) in entries_in(dir)? {
        if which(&entry) {
            fs::rename(&path, dir.join("read").join(entry_name(entry.seq)))?;
            n += 1;
        }
    }
    prune_read(dir, READ_KEPT)?;
    Ok(n)
}

/// Keeps the newest `keep` read messages.
fn prune_read(dir: &Path, keep: usize) -> io::Result<()> {
    let mut read = entries_in(&dir.join("read"))?;
    if read.len() > keep {
        for (path, _) in read.drain(..read.len() - keep) {
            let _ = fs::remove_file(path);
        }
    }
    Ok(())
}

impl Inbox {
    /// Opens (creating) the inbox and loads what it needs: the ids of every
    /// kept message, the next sequence and the mailbox cursor.
    pub fn open(dir: &Path) -> io::Result<Inbox> {
        fs::create_dir_all(dir.join("read"))?;
        prune_read(dir, READ_KEPT)?;
        let unread = entries_in(dir)?;
        let read = entries_in(&dir.join("read"))?;
        let mut inbox = Inbox {
            dir: dir.to_path_buf(),
            next_seq: 1,
            ids: HashSet::new(),
            cursor: 0,
        };
        for (_, e) in unread.iter().chain(read.iter()) {
            inbox.next_seq = inbox.next_seq.max(e.seq + 1);
            inbox.ids.insert(e.message.id.clone());
            inbox.cursor = inbox.cursor.max(e.mailbox_seq.unwrap_or(0));
        }
        Ok(inbox)
    }

    pub fn cursor(&self) -> u64 {
        self.cursor
    }

    /// Whether a message with this id is kept here (unread or among the read
    /// ones kept).
    pub fn knows(&self, id: &str) -> bool {
        self.ids.contains(id)
    }

    /// The hub's mailbox ends below the cursor (it went back): the cursor
    /// follows it, so nothing is acknowledged past what the hub holds now.
    /// In memory only: after a restart the next mailbox read lowers it again.
    pub fn lower_cursor(&mut self, to: u64) {
        self.cursor = self.cursor.min(to);
    }

    /// Writes a message (fsynced) unless its id is already here; `None` for a
    /// repeat. A mailbox message moves the cursor.
    pub fn add(
        &mut self,
        message: ChatMessage,
        mailbox_seq: Option<u64>,
    ) -> io::Result<Option<InboxEntry>> {
        let fresh = !self.ids.contains(&message.id);
        let entry = InboxEntry {
            seq: self.next_seq,
            received_at_ms: now_ms(),
            mailbox_seq,
            message,
        };
        if fresh {
            let bytes = serde_json::to_vec_pretty(&entry).map_err(io::Error::other)?;
            write_atomic(&self.dir.join(entry_name(entry.seq)), &bytes)?;
            self.next_seq += 1;
            self.ids.insert(entry.message.id.clone());
        }
        if let Some(seq) = mailbox_seq {
            self.cursor = self.cursor.max(seq);
        }
        Ok(fresh.then_some(entry))
    }
}

/// What the hub answered the inbox.
#[derive(Debug)]
pub enum MailEvent {
    /// A mailbox page after `since` (`Err`: the hub could not be asked).
    Fetched {
        since: u64,
        result: Result<MailboxPage, String>,
    },
    /// Time to try a failed fetch again.
    Retry,
    /// An acknowledgement up to `seq` ended (`ok`: the hub took it).
    Acked { seq: u64, ok: bool },
}

/// One answer of `GET /api/mailbox/:id`.
#[derive(Debug, Default)]
pub struct MailboxPage {
    /// `(mailbox seq, message)`, in mailbox order.
    pub entries: Vec<(u64, ChatMessage)>,
    /// The newest sequence the hub's mailbox has given out.
    pub last_seq: Option<u64>,
}

/// The relay's side of the inbox: see the module documentation.
pub struct Mail {
    cfg: Arc<Config>,
    inbox: Inbox,
    tx: mpsc::UnboundedSender<MailEvent>,
    fetching: bool,
    /// Another fetch is due when the running one ends.
    refetch: bool,
    pages: usize,
    online: bool,
    /// The highest sequence to acknowledge, the acknowledgement on its way,
    /// and whether to send one again when it ends (one request at a time;
    /// a burst of messages is acknowledged by the last).
    ack_want: u64,
    ack_in_flight: Option<u64>,
    ack_again: bool,
    /// A mailbox read has ended since the last connect: until then the hub's
    /// `last_seq` is not known, and nothing is acknowledged.
    synced: bool,
    /// Where the next page of a catch-up starts (0: everything the hub holds).
    next_since: u64,
}

impl Mail {
    pub fn open(cfg: Arc<Config>, tx: mpsc::UnboundedSender<MailEvent>) -> io::Result<Mail> {
        let inbox = Inbox::open(&inbox_dir(&cfg.state_dir))?;
        Ok(Mail {
            cfg,
            inbox,
            tx,
            fetching: false,
            refetch: false,
            pages: 0,
            online: false,
            ack_want: 0,
            ack_in_flight: None,
            ack_again: false,
            synced: false,
            next_since: 0,
        })
    }

    /// Identified with the hub: catch up with the mailbox.
    pub fn on_online(&mut self) {
        self.online = true;
        self.synced = false;
        self.pages = 0;
        self.next_since = 0;
        self.fetch();
    }

    pub fn on_offline(&mut self) {
        self.online = false;
        self.synced = false;
    }

    /// A `message` or `channel_message` push.
    pub fn on_push(&mut self, message: ChatMessage, mailbox_seq: Option<u64>) {
        match mailbox_seq {
            // In order: write it and acknowledge it at once.
            Some(seq) if seq == self.inbox.cursor() + 1 && !self.fetching => {
                if self.store(message, Some(seq)) {
                    self.ack(seq);
                }
            }
            // Already here (a repeat): the hub has not heard the
            // acknowledgement.
            Some(seq) if seq <= self.inbox.cursor() && self.inbox.knows(&message.id) => {
                self.ack_again()
            }
            // Not here, yet at or below the cursor: the hub's mailbox went
            // back (an older backup); its read says how far.
            Some(seq) if seq <= self.inbox.cursor() => {
                tracing::warn!(message_id = %message.id, mailbox_seq = seq, cursor = self.inbox.cursor(),
                    "a new message below the inbox cursor: reading the whole mailbox");
                self.next_since = 0;
                self.fetch()
            }
            // A gap: the mailbox says what came before, in order.
            Some(_) => {
                self.next_since = 0;
                self.fetch()
            }
            None => {
                self.store(message, None);
            }
        }
    }

    pub fn on_event(&mut self, ev: MailEvent) {
        let (since, result) = match ev {
            MailEvent::Retry => return self.fetch(),
            MailEvent::Acked { seq, ok } => return self.acked(seq, ok),
            MailEvent::Fetched { since, result } => (since, result),
        };
        self.fetching = false;
        match result {
            Ok(page) => {
                tracing::debug!(
                    since,
                    messages = page.entries.len(),
                    last_seq = ?page.last_seq,
                    refetch = self.refetch,
                    "mailbox read"
                );
                if let Some(last) = page.last_seq.filter(|l| *l < self.inbox.cursor()) {
                    tracing::warn!(
                        hub_last_seq = last,
                        cursor = self.inbox.cursor(),
                        "the hub's mailbox is behind this inbox (restored from an older backup?): \
                         following it; messages are recognised by id"
                    );
                    self.inbox.lower_cursor(last);
                    self.ack_want = self.ack_want.min(last);
                }
                let full = page.entries.len() >= PAGE;
                self.next_since = if full {
                    page.entries.last().map_or(0, |(seq, _)| *seq)
                } else {
                    0
                };
                let mut stored_all = true;
                for (seq, message) in page.entries {
                    // Unknown ids are kept whatever their sequence; repeats
                    // are recognised inside.
                    stored_all &= self.store(message, Some(seq));
                }
                self.synced = true;
                if stored_all && self.inbox.cursor() > 0 {
                    // Also what an acknowledgement lost with a connection left.
                    self.ack_again();
                }
                if full {
                    self.pages += 1;
                }
                if (full || self.refetch) && self.pages < MAX_FETCH_PAGES {
                    self.refetch = false;
                    self.fetch();
                }
            }
            Err(e) => {
                // Asked again after a pause while connected (a reconnect asks
                // anyway); a push meanwhile must not be lost behind it.
                tracing::warn!(since, error = %e, "cannot fetch the mailbox; trying again");
                self.refetch = false;
                if self.online {
                    let tx = self.tx.clone();
                    let pause = self.cfg.timings.outbox_retry;
                    tokio::spawn(async move {
                        tokio::time::sleep(pause).await;
                        let _ = tx.send(MailEvent::Retry);
                    });
                }
            }
        }
    }

    /// Writes one message; false when it could not be written (then it is not
    /// acknowledged and the hub keeps it).
    fn store(&mut self, message: ChatMessage, mailbox_seq: Option<u64>) -> bool {
        let id = message.id.clone();
        match self.inbox.add(message, mailbox_seq) {
            Ok(Some(entry)) => {
                tracing::info!(message_id = %id, from = %entry.message.from, mailbox_seq = ?mailbox_seq,
                    "message kept in the inbox");
                self.notify(&entry);
                true
            }
            Ok(None) => {
                tracing::debug!(message_id = %id, "repeated message ignored");
                true
            }
            Err(e) => {
                tracing::error!(message_id = %id, error = %e, "cannot write the inbox; the hub keeps the message");
                false
            }
        }
    }

    fn fetch(&mut self) {
        if !self.online {
            return;
        }
        if self.fetching {
            self.refetch = true;
            return;
        }
        self.fetching = true;
        let since = self.next_since;
        tracing::debug!(since, "reading the mailbox");
        let path = format!("/api/mailbox/{}?since={since}", self.cfg.agent_id);
        let cfg = Arc::clone(&self.cfg);
        let tx = self.tx.clone();
        tokio::task::spawn_blocking(move || {
            let result = http::to_hub(&cfg.hub_api_urls, "GET", &path, Some(&cfg.token), None)
                .map_err(|e| e.to_string())
                .and_then(|(status, body)| match status {
                    200 => Ok(page_of(&body)),
                    _ => Err(format!("HTTP {status}: {body}")),
                });
            let _ = tx.send(MailEvent::Fetched { since, result });
        });
    }

    /// Tells the hub every mailbox message up to `seq` is safe here.
    fn ack(&mut self, seq: u64) {
        self.ack_want = self.ack_want.max(seq);
        if self.ack_in_flight.is_none() && self.synced {
            self.send_ack();
        }
    }

    /// Acknowledges the cursor again, even if that was sent before.
    fn ack_again(&mut self) {
        self.ack_want = self.ack_want.max(self.inbox.cursor());
        if !self.synced {
            // The connect's mailbox read acknowledges when it ends.
            return;
        }
        if self.ack_in_flight.is_some() {
            self.ack_again = true;
        } else if self.ack_want > 0 {
            self.send_ack();
        }
    }

    fn acked(&mut self, seq: u64, ok: bool) {
        self.ack_in_flight = None;
        // A failed one is sent again when asked again meanwhile (a connect's
        // mailbox read), else by the next message or connect. Before a
        // connect's read ends, nothing is sent: the read acknowledges.
        if !self.synced {
            self.ack_again = false;
            return;
        }
        if self.ack_again || (ok && self.ack_want > seq) {
            self.ack_again = false;
            self.send_ack();
        }
    }

    fn send_ack(&mut self) {
        let seq = self.ack_want;
        self.ack_in_flight = Some(seq);
        let path = format!("/api/mailbox/{}/ack", self.cfg.agent_id);
        let cfg = Arc::clone(&self.cfg);
        let tx = self.tx.clone();
        tokio::task::spawn_blocking(move || {
            let body = json!({"seq": seq});
            let ok = match http::to_hub(
                &cfg.hub_api_urls,
                "POST",
                &path,
                Some(&cfg.token),
                Some(&body),
            ) {
                Ok((200, _)) => true,
                Ok((status, body)) => {
                    tracing::warn!(seq, status, body = %body, "mailbox ack refused");
                    false
                }
                Err(e) => {
                    tracing::warn!(seq, error = %e, "mailbox ack not sent; again later");
                    false
                }
            };
            let _ = tx.send(MailEvent::Acked { seq, ok });
        });
    }

    /// Runs `message_command` for a new message (values only through env).
    fn notify(&self, entry: &InboxEntry) {
        let Some(command) = self.cfg.message_command.clone() else {
            return;
        };
        let m = &entry.message;
        let json = serde_json::to_string(m).unwrap_or_default();
        let dir = inbox_dir(&self.cfg.state_dir);
        let mut vars = vec![
            ("AGENTCOM_MESSAGE_ID".to_string(), m.id.clone()),
            ("AGENTCOM_MESSAGE_FROM".to_string(), m.from.clone()),
            ("AGENTCOM_MESSAGE_TYPE".to_string(), m.message_type.clone()),
            ("AGENTCOM_MESSAGE_JSON".to_string(), json.clone()),
            (
                "AGENTCOM_MESSAGE_FILE".to_string(),
                dir.join(entry_name(entry.seq)).display().to_string(),
            ),
            ("AGENTCOM_INBOX_DIR".to_string(), dir.display().to_string()),
            ("AGENTCOM_AGENT_ID".to_string(), self.cfg.agent_id.clone()),
            (
                "AGENTCOM_SIDECAR_CONFIG".to_string(),
                self.cfg.path.display().to_string(),
            ),
        ];
        if let Some(channel) = &m.channel {
            vars.push(("AGENTCOM_MESSAGE_CHANNEL".to_string(), channel.clone()));
        }
        let env = WakeEnv {
            vars,
            task_id: m.id.clone(),
            description: String::new(),
            task_json: json,
        };
        let log = self.cfg.state_dir.join("logs").join("messages.log");
        let timeout = self.cfg.timings.wake_timeout;
        let id = m.id.clone();
        tokio::spawn(async move {
            match wake::run_attempt(&command, &env, &log, timeout, |_| {}, || false).await {
                Attempt::Failed(e) => {
                    tracing::warn!(message_id = %id, error = %e, "message_command failed")
                }
                Attempt::Success | Attempt::Running(_) => {}
            }
        });
    }
}

/// `(mailbox seq, message)` and `last_seq` of a `GET /api/mailbox` answer.
fn page_of(body: &Value) -> MailboxPage {
    let entries = body["messages"]
        .as_array()
        .map(|entries| {
            entries
                .iter()
                .filter_map(|e| {
                    let seq = e["seq"].as_u64()?;
                    let message = serde_json::from_value(e["message"].clone()).ok()?;
                    Some((seq, message))
                })
                .collect()
        })
        .unwrap_or_default();
    MailboxPage {
        entries,
        last_seq: body["last_seq"].as_u64(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(id: &str) -> ChatMessage {
        ChatMessage {
            id: id.into(),
            from: "alice".into(),
            to: None,
            channel: None,
            message_type: "chat".into(),
            payload: json!({"text": id}),
            reply_to: None,
            timestamp: 1,
        }
    }

    #[test]
    fn messages_are_kept_once_in_order_and_survive_reopen() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("inbox");
        let mut inbox = Inbox::open(&dir).expect("open");
        assert!(inbox.add(msg("m1"), Some(1)).expect("add").is_some());
        assert!(inbox.add(msg("m2"), Some(2)).expect("add").is_some());
        assert!(
            inbox.add(msg("m1"), Some(1)).expect("add").is_none(),
            "a repeat"
        );
        assert!(inbox.add(msg("c1"), None).expect("add").is_some());
        assert_eq!(inbox.cursor(), 2);
        let ids: Vec<String> = unread(&dir)
            .expect("unread")
            .into_iter()
            .map(|e| e.message.id)
            .collect();
        assert_eq!(ids, vec!["m1", "m2", "c1"]);
        assert_eq!(mark_read(&dir, |e| e.message.id == "m1").expect("read"), 1);
        let mut again = Inbox::open(&dir).expect("reopen");
        assert_eq!(again.cursor(), 2);
        assert!(
            again.add(msg("m1"), Some(1)).expect("add").is_none(),
            "a read message is still recognised"
        );
        assert!(again.add(msg("m3"), Some(3)).expect("add").is_some());
        let ids: Vec<String> = unread(&dir)
            .expect("unread")
            .into_iter()
            .map(|e| e.message.id)
            .collect();
        assert_eq!(ids, vec!["m2", "c1", "m3"]);
        // Read messages beyond the kept number go, oldest first.
        mark_read(&dir, |_| true).expect("read all");
        prune_read(&dir, 2).expect("prune");
        let kept: Vec<String> = entries_in(&dir.join("read"))
            .expect("read dir")
            .into_iter()
            .map(|(_, e)| e.message.id)
            .collect();
        assert_eq!(kept, vec!["c1", "m3"]);
    }
}
