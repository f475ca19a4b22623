//! Reads of the message history (filters, threads) and its pruning.

use actix::prelude::*;

use super::*;

/// Message history with filters, in sequence order after `cursor`.
#[derive(Message, Default)]
#[rtype(result = "Result<(Vec<(u64, ChatMessage)>, Option<u64>), MsgError>")]
pub(crate) struct QueryMessages {
    pub from: Option<String>,
    pub to: Option<String>,
    pub channel: Option<String>,
    pub start_time: Option<i64>,
    pub end_time: Option<i64>,
    pub cursor: u64,
    pub limit: usize,
}

impl QueryMessages {
    fn matches(&self, m: &ChatMessage) -> bool {
        self.from.as_ref().is_none_or(|f| *f == m.from)
            && self.to.as_ref().is_none_or(|t| m.to.as_ref() == Some(t))
            && self
                .channel
                .as_ref()
                .is_none_or(|c| m.channel.as_ref() == Some(c))
            && self.start_time.is_none_or(|s| m.timestamp >= s)
            && self.end_time.is_none_or(|e| m.timestamp <= e)
    }
}

impl Handler<QueryMessages> for Messaging {
    type Result = Result<(Vec<(u64, ChatMessage)>, Option<u64>), MsgError>;

    fn handle(&mut self, msg: QueryMessages, _: &mut Context<Self>) -> Self::Result {
        let mut out = Vec::new();
        for item in self
            .store
            .messages
            .range(seq_key(msg.cursor.saturating_add(1))..)
        {
            let (k, v) = item?;
            let m: ChatMessage = decode("messages", &k, &v)?;
            if msg.matches(&m) {
                out.push((key_seq(&k).unwrap_or(0), m));
                if out.len() > msg.limit {
                    break;
                }
            }
        }
        let more = out.len() > msg.limit;
        out.truncate(msg.limit);
        let next = if more {
            out.last().map(|(s, _)| *s)
        } else {
            None
        };
        Ok((out, next))
    }
}

/// Which view of a reply chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ThreadView {
    /// The root and every message below it, in sequence order.
    Thread,
    /// Direct replies to the message.
    Replies,
    /// The first message of the chain.
    Root,
}

#[derive(Message)]
#[rtype(result = "Result<Vec<ChatMessage>, MsgError>")]
pub(crate) struct Thread {
    pub id: String,
    pub view: ThreadView,
}

impl Handler<Thread> for Messaging {
    type Result = Result<Vec<ChatMessage>, MsgError>;

    fn handle(&mut self, msg: Thread, _: &mut Context<Self>) -> Self::Result {
        let found = |m: Option<(u64, ChatMessage)>| {
            m.ok_or_else(|| MsgError::MessageNotFound(msg.id.clone()))
        };
        match msg.view {
            ThreadView::Root => Ok(vec![self.root_of(&msg.id)?.1]),
            ThreadView::Replies => {
                found(self.message_by_id(&msg.id)?)?;
                Ok(self
                    .replies_of(&msg.id)?
                    .into_iter()
                    .map(|(_, m)| m)
                    .collect())
            }
            ThreadView::Thread => {
                let root = self.root_of(&msg.id)?;
                let mut all = vec![root.clone()];
                let mut queue = VecDeque::from([root.1.id]);
                while let Some(id) = queue.pop_front() {
                    for reply in self.replies_of(&id)? {
                        if all.len() >= THREAD_LIMIT {
                            break;
                        }
                        queue.push_back(reply.1.id.clone());
                        all.push(reply);
                    }
                }
                all.sort_by_key(|(seq, _)| *seq);
                all.dedup_by_key(|(seq, _)| *seq);
                Ok(all.into_iter().map(|(_, m)| m).collect())
            }
        }
    }
}

/// Drop what outlived its retention (sent by `Retention`).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct PruneMessages {
    pub now: i64,
}

impl Handler<PruneMessages> for Messaging {
    type Result = ();

    fn handle(&mut self, msg: PruneMessages, _: &mut Context<Self>) {
        if let Err(e) = self.prune(msg.now) {
            tracing::error!(error = ?e, "message retention failed");
        }
    }
}
