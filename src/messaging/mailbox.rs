//! Direct and broadcast messages, and each agent's mailbox: send, read,
//! acknowledge.

use actix::prelude::*;

use super::*;

/// Send a direct (`to`) or broadcast message; answers its id.
#[derive(Message)]
#[rtype(result = "Result<String, MsgError>")]
pub(crate) struct SendMessage {
    pub from: String,
    /// `None` or `"broadcast"`: every other online agent.
    pub to: Option<String>,
    pub message_type: Option<String>,
    pub payload: Map<String, Value>,
    pub reply_to: Option<String>,
    /// A fixed id (the hub's own messages): a message with it sent before is
    /// answered as is, and nothing is sent twice.
    pub id: Option<String>,
}

impl Handler<SendMessage> for Messaging {
    type Result = ResponseActFuture<Self, Result<String, MsgError>>;

    fn handle(&mut self, msg: SendMessage, _: &mut Context<Self>) -> Self::Result {
        if let Err(e) = self.check_size(&msg.payload) {
            return Box::pin(fut::ready(Err(e)));
        }
        match self.sent_before(msg.id.as_deref()) {
            Ok(Some(id)) => return Box::pin(fut::ready(Ok(id))),
            Ok(None) => {}
            Err(e) => return Box::pin(fut::ready(Err(e))),
        }
        let to = msg.to.filter(|t| t != "broadcast");
        if let Some(agent) = &to {
            match self.tokens.get(agent) {
                Ok(Some(_)) => {}
                Ok(None) => {
                    return Box::pin(fut::ready(Err(MsgError::RecipientNotFound(agent.clone()))))
                }
                Err(e) => return Box::pin(fut::ready(Err(e.into()))),
            }
        }
        let message = ChatMessage {
            id: msg.id.unwrap_or_else(new_message_id),
            from: msg.from,
            to: to.clone(),
            channel: None,
            message_type: msg.message_type.unwrap_or_else(|| "chat".into()),
            payload: Value::Object(msg.payload),
            reply_to: msg.reply_to,
            timestamp: now_ms(),
        };
        if let Err(e) = self.record(&message) {
            return Box::pin(fut::ready(Err(e)));
        }
        let id = message.id.clone();
        // The mailbox is the record, the push only a wake-up: every recipient
        // (every registered agent but the sender, for a broadcast) keeps the
        // message until it acknowledges it, online or not.
        let recipients = match to {
            Some(agent) => vec![agent],
            None => match self.tokens.list() {
                Ok(records) => records
                    .into_iter()
                    .map(|r| r.agent_id)
                    .filter(|a| *a != message.from)
                    .collect(),
                Err(e) => return Box::pin(fut::ready(Err(e.into()))),
            },
        };
        let mut pushes = Vec::with_capacity(recipients.len());
        for agent in recipients {
            let seq = match self.mailbox_put(&agent, message.clone()) {
                Ok(seq) => seq,
                Err(e) => return self.after_flush(Err(e)),
            };
            pushes.push(Deliver {
                agent_id: agent,
                frame: ServerFrame::for_mailbox(&message, seq),
            });
        }
        // Pushed only once durable: a mailbox sequence a client has seen is
        // never given to another message after a crash.
        self.after_flush_then(Ok(id), move |act| {
            for push in pushes {
                act.presence.do_send(push);
            }
        })
    }
}

/// An agent's mailbox: entries after `since`, oldest first.
#[derive(Message)]
#[rtype(result = "Result<(Vec<SeqEntry>, MailboxMeta), MsgError>")]
pub(crate) struct ReadMailbox {
    pub agent_id: String,
    pub since: u64,
}

impl Handler<ReadMailbox> for Messaging {
    type Result = Result<(Vec<SeqEntry>, MailboxMeta), MsgError>;

    fn handle(&mut self, msg: ReadMailbox, _: &mut Context<Self>) -> Self::Result {
        let meta = self
            .mailboxes
            .get(&msg.agent_id)
            .cloned()
            .unwrap_or_default();
        let start = scoped_key(&msg.agent_id, msg.since.saturating_add(1));
        let end = scoped_key(&msg.agent_id, u64::MAX);
        let mut out = Vec::new();
        for item in self
            .store
            .mailbox
            .range(start..=end)
            .take(MAILBOX_READ_LIMIT)
        {
            let (k, v) = item?;
            out.push(decode("mailbox", &k, &v)?);
        }
        Ok((out, meta))
    }
}

/// Acknowledge (and drop) an agent's mailbox entries up to `seq`; answers the
/// sequence actually acknowledged.
#[derive(Message)]
#[rtype(result = "Result<u64, MsgError>")]
pub(crate) struct AckMailbox {
    pub agent_id: String,
    pub seq: u64,
}

impl Handler<AckMailbox> for Messaging {
    type Result = ResponseActFuture<Self, Result<u64, MsgError>>;

    fn handle(&mut self, msg: AckMailbox, _: &mut Context<Self>) -> Self::Result {
        let result = (|| {
            let mut meta = self
                .mailboxes
                .get(&msg.agent_id)
                .cloned()
                .unwrap_or_default();
            let up_to = msg.seq.min(meta.last_seq);
            let start = scoped_key(&msg.agent_id, 0);
            let end = scoped_key(&msg.agent_id, up_to);
            let keys: Vec<_> = self
                .store
                .mailbox
                .range(start..=end)
                .keys()
                .collect::<Result<_, _>>()?;
            for k in &keys {
                self.store.mailbox.remove(k)?;
            }
            meta.count = meta.count.saturating_sub(keys.len() as u64);
            meta.acked = meta.acked.max(up_to);
            self.save_mailbox(&msg.agent_id, &meta)?;
            self.mailboxes.insert(msg.agent_id.clone(), meta);
            Ok(up_to)
        })();
        self.after_flush(result)
    }
}
