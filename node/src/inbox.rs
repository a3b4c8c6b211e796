//! The node's inbox: messages addressed to this node, kept until the API reads them.
//!
//! Bounded: a node nobody reads from keeps the newest `capacity` messages and counts
//! what it let go, instead of growing without end. Each message gets a local sequence
//! number so a client can poll with "after the last one I saw" and miss nothing that is
//! still held.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use x0_actors::{ChannelMessage, Delivered};
use x0_protocols::NodeId;

/// Messages held when nobody reads them.
pub const DEFAULT_CAPACITY: usize = 1000;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct InboxMessage {
    /// Local sequence number, 1 for the first message since the node started.
    pub seq: u64,
    pub from: NodeId,
    /// The origin's id for this message.
    pub id: u64,
    pub hops: u8,
    pub received_at_unix_ms: u64,
    /// Arrived sealed end to end (only this node could read it on the way).
    pub encrypted: bool,
    /// What a sealed message is (kind, file name, MIME type, size, SHA-256).
    pub content: Option<x0_protocols::e2e::ContentMeta>,
    /// Posted to this channel (`<owner>/<name>`) rather than sent to this node.
    pub channel: Option<String>,
    pub payload: Vec<u8>,
}

#[derive(Debug)]
pub struct Inbox {
    capacity: usize,
    state: Mutex<InboxState>,
    arrived: tokio::sync::Notify,
}

#[derive(Debug, Default)]
struct InboxState {
    next_seq: u64,
    messages: VecDeque<InboxMessage>,
    evicted: u64,
}

impl Inbox {
    pub fn new(capacity: usize) -> Self {
        Inbox {
            capacity: capacity.max(1),
            state: Mutex::new(InboxState {
                next_seq: 1,
                ..InboxState::default()
            }),
            arrived: tokio::sync::Notify::new(),
        }
    }

    pub fn push(&self, delivered: Delivered) {
        self.hold(InboxMessage {
            seq: 0,
            from: delivered.origin,
            id: delivered.id,
            hops: delivered.hops,
            received_at_unix_ms: 0,
            encrypted: delivered.service == x0_protocols::forwarding::Service::E2e,
            content: delivered.content,
            channel: None,
            payload: delivered.payload,
        });
    }

    /// A channel post that just became readable here. It came by gossip, so it has no
    /// hop count.
    pub fn push_channel(&self, post: ChannelMessage) {
        self.hold(InboxMessage {
            seq: 0,
            from: post.from,
            id: post.post_id,
            hops: 0,
            received_at_unix_ms: 0,
            encrypted: true,
            content: Some(post.content),
            channel: Some(post.channel),
            payload: post.body,
        });
    }

    /// Numbers, stamps and keeps `message`, dropping the oldest past capacity.
    fn hold(&self, mut message: InboxMessage) {
        message.received_at_unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        {
            let mut state = self.lock();
            message.seq = state.next_seq;
            state.next_seq += 1;
            state.messages.push_back(message);
            while state.messages.len() > self.capacity {
                state.messages.pop_front();
                state.evicted += 1;
                metrics::counter!("x0_inbox_evicted_total").increment(1);
            }
        }
        self.arrived.notify_waiters();
    }

    /// Messages with a sequence number above `after`, oldest first.
    pub fn after(&self, after: u64) -> Vec<InboxMessage> {
        self.lock()
            .messages
            .iter()
            .filter(|m| m.seq > after)
            .cloned()
            .collect()
    }

    /// Waits until a message above `after` is held, then returns those messages.
    pub async fn wait_after(&self, after: u64) -> Vec<InboxMessage> {
        loop {
            let notified = self.arrived.notified();
            let found = self.after(after);
            if !found.is_empty() {
                return found;
            }
            notified.await;
        }
    }

    /// Messages let go because the inbox was full.
    pub fn evicted(&self) -> u64 {
        self.lock().evicted
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, InboxState> {
        // A panic while holding the lock leaves plain data behind; keep serving it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivered(n: u8) -> Delivered {
        Delivered {
            origin: NodeId([n; 32]),
            id: u64::from(n),
            service: x0_protocols::forwarding::Service::App,
            payload: vec![n],
            hops: 1,
            content: None,
        }
    }

    #[test]
    fn keeps_the_newest_and_counts_what_it_let_go() {
        let inbox = Inbox::new(2);
        for n in 1..=3 {
            inbox.push(delivered(n));
        }
        let held = inbox.after(0);
        assert_eq!(held.iter().map(|m| m.seq).collect::<Vec<_>>(), vec![2, 3]);
        assert_eq!(inbox.evicted(), 1);
        assert_eq!(inbox.after(2).len(), 1);
    }

    #[tokio::test]
    async fn a_waiter_wakes_on_arrival() {
        let inbox = std::sync::Arc::new(Inbox::new(10));
        let waiter = tokio::spawn({
            let inbox = inbox.clone();
            async move { inbox.wait_after(0).await }
        });
        tokio::task::yield_now().await;
        inbox.push(delivered(7));
        let got = waiter.await.expect("waiter");
        assert_eq!(got[0].payload, vec![7]);
    }
}
