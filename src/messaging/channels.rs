//! Channels: create, subscribe, unsubscribe, publish, history, list.

use actix::prelude::*;

use super::*;

#[derive(Message)]
#[rtype(result = "Result<ChannelInfo, MsgError>")]
pub(crate) struct CreateChannel {
    pub name: String,
    pub description: String,
    pub by: String,
}

impl Handler<CreateChannel> for Messaging {
    type Result = ResponseActFuture<Self, Result<ChannelInfo, MsgError>>;

    fn handle(&mut self, msg: CreateChannel, _: &mut Context<Self>) -> Self::Result {
        if self.channels.contains_key(&msg.name) {
            return Box::pin(fut::ready(Err(MsgError::ChannelExists(msg.name))));
        }
        let record = ChannelRecord {
            name: msg.name,
            description: msg.description,
            created_at: now_ms(),
            created_by: msg.by,
            subscribers: BTreeSet::new(),
            last_seq: 0,
            count: 0,
        };
        let info = record.info();
        let result = self.save_channel(record).map(|_| info);
        self.after_flush(result)
    }
}

/// Subscribe an agent; answers whether it was subscribed already.
#[derive(Message)]
#[rtype(result = "Result<bool, MsgError>")]
pub(crate) struct Subscribe {
    pub channel: String,
    pub agent_id: String,
}

impl Handler<Subscribe> for Messaging {
    type Result = ResponseActFuture<Self, Result<bool, MsgError>>;

    fn handle(&mut self, msg: Subscribe, _: &mut Context<Self>) -> Self::Result {
        let result = self.channel(&msg.channel).cloned().and_then(|mut c| {
            if c.subscribers.contains(&msg.agent_id) {
                return Ok(true);
            }
            c.subscribers.insert(msg.agent_id.clone());
            let others = c.others(&msg.agent_id);
            self.save_channel(c)?;
            self.presence.do_send(DeliverMany {
                agents: others,
                frame: ServerFrame::ChannelAgentJoined {
                    channel: msg.channel.clone(),
                    agent_id: msg.agent_id.clone(),
                },
            });
            Ok(false)
        });
        self.after_flush(result)
    }
}

/// Unsubscribe an agent; answers whether it was subscribed.
#[derive(Message)]
#[rtype(result = "Result<bool, MsgError>")]
pub(crate) struct Unsubscribe {
    pub channel: String,
    pub agent_id: String,
}

impl Handler<Unsubscribe> for Messaging {
    type Result = ResponseActFuture<Self, Result<bool, MsgError>>;

    fn handle(&mut self, msg: Unsubscribe, _: &mut Context<Self>) -> Self::Result {
        let result = self.channel(&msg.channel).cloned().and_then(|mut c| {
            let was = c.subscribers.remove(&msg.agent_id);
            if was {
                self.save_channel(c)?;
            }
            Ok(was)
        });
        self.after_flush(result)
    }
}

/// Publish on a channel; answers (seq, message id).
#[derive(Message)]
#[rtype(result = "Result<(u64, String), MsgError>")]
pub(crate) struct Publish {
    pub channel: String,
    pub from: String,
    pub message_type: Option<String>,
    pub payload: Map<String, Value>,
    pub reply_to: Option<String>,
    /// A fixed id: published before, it is answered `(0, id)` and nothing is
    /// published twice.
    pub id: Option<String>,
}

impl Handler<Publish> for Messaging {
    type Result = ResponseActFuture<Self, Result<(u64, String), MsgError>>;

    fn handle(&mut self, msg: Publish, _: &mut Context<Self>) -> Self::Result {
        match self.sent_before(msg.id.as_deref()) {
            Ok(Some(id)) => return Box::pin(fut::ready(Ok((0, id)))),
            Ok(None) => {}
            Err(e) => return Box::pin(fut::ready(Err(e))),
        }
        let result = self.check_size(&msg.payload).and_then(|_| {
            let mut c = self.channel(&msg.channel)?.clone();
            let message = ChatMessage {
                id: msg.id.unwrap_or_else(new_message_id),
                from: msg.from.clone(),
                to: None,
                channel: Some(msg.channel.clone()),
                message_type: msg.message_type.unwrap_or_else(|| "chat".into()),
                payload: Value::Object(msg.payload),
                reply_to: msg.reply_to,
                timestamp: now_ms(),
            };
            self.record(&message)?;
            c.last_seq += 1;
            c.count += 1;
            let entry = SeqEntry {
                seq: c.last_seq,
                message,
                stored_at: now_ms(),
            };
            self.store
                .channel_log
                .insert(scoped_key(&c.name, entry.seq), encode(&entry))?;
            while c.count > self.limits.channel_history {
                let oldest = self
                    .store
                    .channel_log
                    .scan_prefix(scope_prefix(&c.name))
                    .keys()
                    .next();
                let Some(oldest) = oldest.transpose()? else {
                    break;
                };
                self.store.channel_log.remove(oldest)?;
                c.count -= 1;
            }
            let subscribers = c.others(&msg.from);
            self.save_channel(c)?;
            self.presence.do_send(DeliverMany {
                agents: subscribers,
                frame: ServerFrame::for_message(&entry.message),
            });
            Ok((entry.seq, entry.message.id))
        });
        self.after_flush(result)
    }
}

/// Channel messages with seq > `since`, oldest first, at most `limit`.
#[derive(Message)]
#[rtype(result = "Result<Vec<SeqEntry>, MsgError>")]
pub(crate) struct ChannelHistory {
    pub channel: String,
    pub since: u64,
    pub limit: usize,
}

impl Handler<ChannelHistory> for Messaging {
    type Result = Result<Vec<SeqEntry>, MsgError>;

    fn handle(&mut self, msg: ChannelHistory, _: &mut Context<Self>) -> Self::Result {
        self.channel(&msg.channel)?;
        let start = scoped_key(&msg.channel, msg.since.saturating_add(1));
        let end = scoped_key(&msg.channel, u64::MAX);
        let mut out = Vec::new();
        for item in self.store.channel_log.range(start..=end).take(msg.limit) {
            let (k, v) = item?;
            out.push(decode("channel_log", &k, &v)?);
        }
        Ok(out)
    }
}

/// Every channel, by name.
#[derive(Message)]
#[rtype(result = "Vec<ChannelInfo>")]
pub(crate) struct ListChannels;

impl Handler<ListChannels> for Messaging {
    type Result = MessageResult<ListChannels>;

    fn handle(&mut self, _: ListChannels, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.channels.values().map(ChannelRecord::info).collect())
    }
}

/// One channel with its subscribers.
#[derive(Message)]
#[rtype(result = "Result<(ChannelInfo, Vec<String>, u64), MsgError>")]
pub(crate) struct GetChannel {
    pub channel: String,
}

impl Handler<GetChannel> for Messaging {
    type Result = Result<(ChannelInfo, Vec<String>, u64), MsgError>;

    fn handle(&mut self, msg: GetChannel, _: &mut Context<Self>) -> Self::Result {
        let c = self.channel(&msg.channel)?;
        Ok((
            c.info(),
            c.subscribers.iter().cloned().collect(),
            c.last_seq,
        ))
    }
}
