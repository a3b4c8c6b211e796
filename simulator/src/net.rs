//! The simulated network: a sparse link table, a link model, and one event queue.
//!
//! Every transmission is drawn against the link model (loss, latency, jitter) from the
//! run's seeded RNG and queued with its delivery time. One pump task sleeps on tokio's
//! paused clock until the earliest delivery is due, so an idle mesh costs nothing and a
//! busy one costs one heap operation per envelope: no per-tick loop over all nodes.

use std::cmp::Ordering as CmpOrdering;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt;
use futures::future::BoxFuture;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;
use x0_actors::{Inbound, NetworkPort, NodeHandle, PortError, Topic};
use x0_protocols::{Envelope, Kind, NodeId};

/// How every link behaves unless a fault says otherwise.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkModel {
    /// One-way base latency.
    pub latency_ms: f64,
    /// Extra delay drawn uniformly from `[0, jitter_ms]` per envelope.
    pub jitter_ms: f64,
    /// Probability that one envelope is lost, in `[0, 1]`.
    pub loss: f64,
}

impl Default for LinkModel {
    fn default() -> Self {
        LinkModel {
            latency_ms: 10.0,
            jitter_ms: 5.0,
            loss: 0.01,
        }
    }
}

/// Totals over the whole run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrafficStats {
    pub envelopes_sent: u64,
    pub envelopes_delivered: u64,
    pub envelopes_dropped: u64,
    pub bytes_sent: u64,
    /// Bytes of multi-hop application messages (relays); the rest is control traffic.
    pub data_bytes_sent: u64,
    /// Bytes sent by envelope kind code (index 0: unrecognized), for the overhead report.
    /// A link frame counts under the kind of the envelope it carries.
    pub bytes_by_kind: [u64; KIND_SLOTS],
    /// Transmissions by the same kind codes: with the bytes, the mean size, which tells
    /// how much of a kind's cost is per-message framing and sealing.
    #[serde(default)]
    pub messages_by_kind: [u64; KIND_SLOTS],
}

impl TrafficStats {
    /// What was sent after `earlier`, a snapshot of the same counters.
    pub fn since(&self, earlier: &TrafficStats) -> TrafficStats {
        let minus = |now: [u64; KIND_SLOTS], then: [u64; KIND_SLOTS]| {
            std::array::from_fn(|i| now[i].saturating_sub(then[i]))
        };
        TrafficStats {
            envelopes_sent: self.envelopes_sent.saturating_sub(earlier.envelopes_sent),
            envelopes_delivered: self
                .envelopes_delivered
                .saturating_sub(earlier.envelopes_delivered),
            envelopes_dropped: self
                .envelopes_dropped
                .saturating_sub(earlier.envelopes_dropped),
            bytes_sent: self.bytes_sent.saturating_sub(earlier.bytes_sent),
            data_bytes_sent: self.data_bytes_sent.saturating_sub(earlier.data_bytes_sent),
            bytes_by_kind: minus(self.bytes_by_kind, earlier.bytes_by_kind),
            messages_by_kind: minus(self.messages_by_kind, earlier.messages_by_kind),
        }
    }
}

/// Slots of [`TrafficStats::bytes_by_kind`]: every kind code, and 0.
pub const KIND_SLOTS: usize = 9;

/// A link, named by its two ends in ascending order.
pub type LinkKey = (u32, u32);

pub fn link_key(a: u32, b: u32) -> LinkKey {
    (a.min(b), a.max(b))
}

/// What is true of a link right now, whatever the nodes believe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkTruth {
    /// Both ends up and the link not cut.
    pub alive: bool,
    /// Since when it has been in that state.
    pub since: Instant,
}

/// Extra loss and latency on some links for a while (a loss burst, a latency spike).
struct Impairment {
    id: u64,
    /// `None`: every link.
    links: Option<HashSet<LinkKey>>,
    loss: f64,
    extra_ms: f64,
}

enum Delivery {
    Envelope {
        from: u32,
        to: u32,
        bytes: Bytes,
        reply: Option<oneshot::Sender<Envelope>>,
    },
    Reply {
        envelope: Envelope,
        to: oneshot::Sender<Envelope>,
    },
}

/// Heap entry ordered by delivery time, then by the order it was queued, so that ties
/// resolve the same way in every run.
struct Scheduled {
    at: Instant,
    order: u64,
    delivery: Delivery,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.order) == (other.at, other.order)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> CmpOrdering {
        // BinaryHeap is a max-heap: reverse for earliest first.
        (other.at, other.order).cmp(&(self.at, self.order))
    }
}

struct NetState {
    adjacency: Vec<Vec<u32>>,
    index: HashMap<NodeId, u32>,
    ids: Vec<NodeId>,
    nodes: Vec<Option<Arc<NodeHandle>>>,
    model: LinkModel,
    rng: ChaCha8Rng,
    queue: BinaryHeap<Scheduled>,
    next_order: u64,
    stats: TrafficStats,
    up: Vec<bool>,
    /// When each node last came up, and when each down node went down.
    up_since: Vec<Instant>,
    down_since: Vec<Option<Instant>>,
    /// Links cut, with how many faults cut them and since when.
    cuts: HashMap<LinkKey, (u32, Instant)>,
    restored_at: HashMap<LinkKey, Instant>,
    impairments: Vec<Impairment>,
    next_impairment: u64,
    started: Instant,
    /// Sees every envelope put on a link, as an eavesdropper on the wire would.
    tap: Option<Tap>,
}

/// A wiretap: `(from, to, bytes)` of every transmission.
pub type Tap = Arc<dyn Fn(u32, u32, &[u8]) + Send + Sync>;

/// The shared network every simulated node's port writes into.
#[derive(Clone)]
pub struct SimNetwork {
    state: Arc<Mutex<NetState>>,
    wake: Arc<Notify>,
}

impl SimNetwork {
    pub fn new(
        adjacency: Vec<Vec<u32>>,
        ids: Vec<NodeId>,
        model: LinkModel,
        rng: ChaCha8Rng,
    ) -> Self {
        let index = ids
            .iter()
            .enumerate()
            .map(|(i, id)| (*id, i as u32))
            .collect();
        let nodes = vec![None; ids.len()];
        let now = Instant::now();
        let count = ids.len();
        SimNetwork {
            state: Arc::new(Mutex::new(NetState {
                adjacency,
                index,
                ids,
                nodes,
                model,
                rng,
                queue: BinaryHeap::new(),
                next_order: 0,
                stats: TrafficStats::default(),
                up: vec![true; count],
                up_since: vec![now; count],
                down_since: vec![None; count],
                cuts: HashMap::new(),
                restored_at: HashMap::new(),
                impairments: Vec::new(),
                next_impairment: 0,
                started: now,
                tap: None,
            })),
            wake: Arc::new(Notify::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, NetState> {
        // The simulator is single-threaded; a poisoned lock means a panic already ended the run.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The port node `index` sends through.
    pub fn port(&self, index: u32) -> Arc<dyn NetworkPort> {
        Arc::new(SimPort {
            net: self.clone(),
            me: index,
        })
    }

    /// Plugs a running node in (or takes it out, with `None`: it then receives nothing).
    pub fn attach(&self, index: u32, node: Option<Arc<NodeHandle>>) {
        self.lock().nodes[index as usize] = node;
    }

    pub fn stats(&self) -> TrafficStats {
        self.lock().stats
    }

    pub fn index_of(&self, id: &NodeId) -> Option<u32> {
        self.lock().index.get(id).copied()
    }

    /// Marks a node up or down (the caller starts or stops its actors). A down node's
    /// links carry nothing.
    pub fn set_up(&self, index: u32, up: bool) {
        let mut state = self.lock();
        let i = index as usize;
        if state.up[i] == up {
            return;
        }
        let now = Instant::now();
        state.up[i] = up;
        if up {
            state.up_since[i] = now;
            state.down_since[i] = None;
        } else {
            state.down_since[i] = Some(now);
        }
    }

    /// Cuts a link (both directions) until as many [`SimNetwork::restore`] calls.
    pub fn cut(&self, link: LinkKey) {
        let now = Instant::now();
        self.lock().cuts.entry(link).or_insert((0, now)).0 += 1;
    }

    pub fn restore(&self, link: LinkKey) {
        let mut state = self.lock();
        let now = Instant::now();
        if let Some(entry) = state.cuts.get_mut(&link) {
            entry.0 -= 1;
            if entry.0 == 0 {
                state.cuts.remove(&link);
                state.restored_at.insert(link, now);
            }
        }
    }

    /// Adds loss and latency to `links` (`None`: all) until [`SimNetwork::lift`].
    pub fn impair(&self, links: Option<HashSet<LinkKey>>, loss: f64, extra_ms: f64) -> u64 {
        let mut state = self.lock();
        let id = state.next_impairment;
        state.next_impairment += 1;
        state.impairments.push(Impairment {
            id,
            links,
            loss,
            extra_ms,
        });
        id
    }

    pub fn lift(&self, impairment: u64) {
        self.lock().impairments.retain(|i| i.id != impairment);
    }

    /// Whether a link is working now and since when, for scoring failure detection.
    pub fn link_truth(&self, a: u32, b: u32) -> LinkTruth {
        let state = self.lock();
        let link = link_key(a, b);
        let (a, b) = (a as usize, b as usize);
        let cut = state.cuts.get(&link).map(|(_, since)| *since);
        if state.up[a] && state.up[b] && cut.is_none() {
            let restored = state
                .restored_at
                .get(&link)
                .copied()
                .unwrap_or(state.started);
            LinkTruth {
                alive: true,
                since: state.up_since[a].max(state.up_since[b]).max(restored),
            }
        } else {
            let since = [state.down_since[a], state.down_since[b], cut]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(state.started);
            LinkTruth {
                alive: false,
                since,
            }
        }
    }

    /// The links that work now, as adjacency lists (for true shortest paths and
    /// connectivity).
    pub fn live_adjacency(&self) -> Vec<Vec<u32>> {
        let state = self.lock();
        state
            .adjacency
            .iter()
            .enumerate()
            .map(|(a, neighbors)| {
                if !state.up[a] {
                    return Vec::new();
                }
                neighbors
                    .iter()
                    .copied()
                    .filter(|&b| {
                        state.up[b as usize] && !state.cuts.contains_key(&link_key(a as u32, b))
                    })
                    .collect()
            })
            .collect()
    }

    /// Delivers queued envelopes as they fall due, until the runtime is dropped.
    pub async fn pump(self) {
        loop {
            let next = {
                let mut state = self.lock();
                let now = Instant::now();
                let mut due = Vec::new();
                while state.queue.peek().is_some_and(|s| s.at <= now) {
                    if let Some(s) = state.queue.pop() {
                        due.push(s.delivery);
                    }
                }
                for delivery in due {
                    state.deliver(delivery);
                }
                state.queue.peek().map(|s| s.at)
            };
            match next {
                Some(at) => {
                    tokio::select! {
                        biased;
                        _ = self.wake.notified() => {}
                        _ = tokio::time::sleep_until(at) => {}
                    }
                }
                None => self.wake.notified().await,
            }
        }
    }

    /// Taps every link: `tap` sees each envelope as it is sent, before loss.
    pub fn set_tap(&self, tap: Option<Tap>) {
        self.lock().tap = tap;
    }

    /// Puts `bytes` on the link `from` → `to`. `inner` is the kind of the envelope a
    /// link frame carries, for the traffic statistics; without it the kind on the wire
    /// counts.
    fn transmit(
        &self,
        from: u32,
        to: u32,
        bytes: Bytes,
        reply: Option<oneshot::Sender<Envelope>>,
        inner: Option<Kind>,
    ) {
        let mut state = self.lock();
        if let Some(tap) = &state.tap {
            tap(from, to, &bytes);
        }
        state.stats.envelopes_sent += 1;
        state.stats.bytes_sent += bytes.len() as u64;
        let code = match inner {
            Some(kind) => kind.code() as usize,
            None => usize::from(bytes.get(1).copied().unwrap_or(0)),
        };
        if code == Kind::Relay.code() as usize {
            state.stats.data_bytes_sent += bytes.len() as u64;
        }
        state.stats.bytes_by_kind[code.min(KIND_SLOTS - 1)] += bytes.len() as u64;
        state.stats.messages_by_kind[code.min(KIND_SLOTS - 1)] += 1;
        if state.cuts.contains_key(&link_key(from, to)) {
            state.stats.envelopes_dropped += 1;
            return;
        }
        let Some(delay) = state.draw_link_delay(link_key(from, to)) else {
            state.stats.envelopes_dropped += 1;
            return;
        };
        let woke = state.schedule(
            delay,
            Delivery::Envelope {
                from,
                to,
                bytes,
                reply,
            },
        );
        drop(state);
        if woke {
            self.wake.notify_one();
        }
    }
}

/// Whether encoded envelope bytes are a relay (multi-hop data). The postcard envelope
/// starts with the version byte, then the kind as a varint: one byte for every kind.
impl NetState {
    /// `None` if the envelope is lost, else how long it takes.
    fn draw_delay(&mut self) -> Option<Duration> {
        self.draw_with(0.0, 0.0)
    }

    /// Like `draw_delay`, with the impairments active on `link`.
    fn draw_link_delay(&mut self, link: LinkKey) -> Option<Duration> {
        let (mut loss, mut extra_ms) = (0.0, 0.0);
        for impairment in &self.impairments {
            if impairment.links.as_ref().is_none_or(|l| l.contains(&link)) {
                loss += impairment.loss;
                extra_ms += impairment.extra_ms;
            }
        }
        self.draw_with(loss, extra_ms)
    }

    fn draw_with(&mut self, extra_loss: f64, extra_ms: f64) -> Option<Duration> {
        let loss = self.model.loss + extra_loss;
        if loss > 0.0 && self.rng.random::<f64>() < loss {
            return None;
        }
        let jitter = if self.model.jitter_ms > 0.0 {
            self.rng.random_range(0.0..=self.model.jitter_ms)
        } else {
            0.0
        };
        Some(Duration::from_secs_f64(
            (self.model.latency_ms + extra_ms + jitter).max(0.0) / 1000.0,
        ))
    }

    /// Queues a delivery; true if it is now the earliest, so the pump must re-arm.
    fn schedule(&mut self, delay: Duration, delivery: Delivery) -> bool {
        let at = Instant::now() + delay;
        let earliest = self.queue.peek().is_none_or(|s| at < s.at);
        let order = self.next_order;
        self.next_order += 1;
        self.queue.push(Scheduled {
            at,
            order,
            delivery,
        });
        earliest
    }

    fn deliver(&mut self, delivery: Delivery) {
        match delivery {
            Delivery::Envelope {
                from,
                to,
                bytes,
                reply,
            } => {
                let Some(node) = self.nodes[to as usize].clone() else {
                    self.stats.envelopes_dropped += 1;
                    return;
                };
                self.stats.envelopes_delivered += 1;
                node.deliver(Inbound {
                    link_peer: self.ids[from as usize],
                    bytes,
                    reply,
                });
            }
            Delivery::Reply { envelope, to } => {
                self.stats.envelopes_delivered += 1;
                let _ = to.send(envelope);
            }
        }
    }

    fn linked(&self, a: u32, b: u32) -> bool {
        self.adjacency[a as usize].binary_search(&b).is_ok()
    }
}

/// One node's view of the simulated network.
struct SimPort {
    net: SimNetwork,
    me: u32,
}

impl NetworkPort for SimPort {
    fn send(&self, to: NodeId, envelope: &Envelope) {
        self.send_as(to, envelope, None);
    }

    fn send_sealed(&self, to: NodeId, sealed: &Envelope, inner: Kind) {
        self.send_as(to, sealed, Some(inner));
    }

    fn broadcast(&self, topic: &Topic, envelope: &Envelope) {
        self.broadcast_except(topic, envelope, &[]);
    }

    fn broadcast_except(&self, topic: &Topic, envelope: &Envelope, except: &[NodeId]) {
        match topic {
            Topic::Neighbors => {
                let bytes = Bytes::from(envelope.encode());
                let neighbors = {
                    let net = self.net.lock();
                    net.adjacency[self.me as usize]
                        .iter()
                        .copied()
                        .filter(|&to| !except.contains(&net.ids[to as usize]))
                        .collect::<Vec<u32>>()
                };
                for to in neighbors {
                    self.net.transmit(self.me, to, bytes.clone(), None, None);
                }
            }
            Topic::Gossip(_) => {
                // No subsystem gossips yet; the gossip overlay arrives with CRDT sync.
                tracing::debug!("gossip broadcast ignored: no gossip overlay in the simulator yet");
            }
        }
    }

    fn request(
        &self,
        to: NodeId,
        envelope: &Envelope,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<Envelope, PortError>> {
        self.request_as(to, envelope, None, timeout)
    }

    fn request_sealed(
        &self,
        to: NodeId,
        sealed: &Envelope,
        inner: Kind,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<Envelope, PortError>> {
        self.request_as(to, sealed, Some(inner), timeout)
    }
}

impl SimPort {
    /// `to`'s index, if it is linked to this node.
    fn neighbor_index(&self, to: NodeId) -> Option<u32> {
        let state = self.net.lock();
        state
            .index
            .get(&to)
            .copied()
            .filter(|t| state.linked(self.me, *t))
    }

    fn send_as(&self, to: NodeId, envelope: &Envelope, inner: Option<Kind>) {
        let target = self.neighbor_index(to);
        match target {
            Some(t) => self
                .net
                .transmit(self.me, t, Bytes::from(envelope.encode()), None, inner),
            None => self.net.lock().stats.envelopes_dropped += 1,
        }
    }

    fn request_as(
        &self,
        to: NodeId,
        envelope: &Envelope,
        inner: Option<Kind>,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<Envelope, PortError>> {
        let target = self.neighbor_index(to);
        let Some(target) = target else {
            self.net.lock().stats.envelopes_dropped += 1;
            return futures::future::ready(Err(PortError::Unreachable(to))).boxed();
        };
        let (answer_tx, answer_rx) = oneshot::channel::<Envelope>();
        let (reply_tx, reply_rx) = oneshot::channel::<Envelope>();
        self.net.transmit(
            self.me,
            target,
            Bytes::from(envelope.encode()),
            Some(answer_tx),
            inner,
        );
        // The answer crosses the link back, with its own loss and delay.
        let net = self.net.clone();
        tokio::spawn(async move {
            if let Ok(answer) = answer_rx.await {
                let mut state = net.lock();
                state.stats.envelopes_sent += 1;
                state.stats.bytes_sent += answer.encode().len() as u64;
                match state.draw_delay() {
                    Some(delay) => {
                        let woke = state.schedule(
                            delay,
                            Delivery::Reply {
                                envelope: answer,
                                to: reply_tx,
                            },
                        );
                        drop(state);
                        if woke {
                            net.wake.notify_one();
                        }
                    }
                    None => state.stats.envelopes_dropped += 1,
                }
            }
        });
        let deadline = Instant::now() + timeout;
        async move {
            match tokio::time::timeout_at(deadline, reply_rx).await {
                Ok(Ok(envelope)) => Ok(envelope),
                // Lost on the way there or back: on a real link the requester would
                // only notice by waiting, so it waits.
                Ok(Err(_)) => {
                    tokio::time::sleep_until(deadline).await;
                    Err(PortError::Timeout)
                }
                Err(_) => Err(PortError::Timeout),
            }
        }
        .boxed()
    }
}
