//! Loop-free distance-vector routing, after Babel (RFC 8966).
//!
//! Each node advertises, for every destination it can reach, a `(seqno, metric)` pair.
//! Loop freedom comes from Babel's **feasibility condition**: a node remembers, per
//! destination, the best `(seqno, metric)` it has itself advertised (its feasibility
//! distance, FD) and only ever selects a route whose advertisement is strictly better:
//! a newer seqno, or the same seqno with a smaller metric. Since a node's FD only
//! improves, and every node downstream of it advertised something better still, a
//! next-hop chain can never close on itself, even while updates are lost or late.
//!
//! When the only routes left are not feasible, the node retracts the destination
//! (metric = [`INFINITY`]) and sends a seqno request toward it; the destination answers
//! with a newer seqno, which makes fresh routes feasible again everywhere.
//!
//! What goes on the wire is kept small because at 1000 nodes it is most of the mesh's
//! control traffic ([`wire`]): changes go out as triggered updates naming destinations by
//! the sender's own numbers for them ([`Tag`]s, learned once); the periodic refresh is a
//! per-bucket digest, not the table; a neighbor that missed something asks for the
//! buckets that differ, or for the names of the tags it cannot place. A whole table goes
//! to a neighbor only when its link comes up.
//!
//! Link costs come from outside (the actor derives them from discovery's measured loss
//! and RTT, see [`link_cost`]). Sans-IO like every protocol here.

mod wire;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};

pub use wire::{
    ALL_BUCKETS, Advert, BUCKETS, BucketMask, Destination, Digest, MAX_TAG, Name, RoutingMessage,
    SeqnoRequest, Tag,
};
use wire::{advert_hash, bucket, serial_newer};

pub use crate::ShortId;
use crate::{Millis, NodeId};

/// The metric of an unreachable destination; advertising it is a retraction.
pub const INFINITY: u16 = u16::MAX;

/// A table message carries at most about this many adverts (whole buckets are never
/// split), so a 10,000-node table stays far below the envelope limit.
const TABLE_ADVERTS_PER_MESSAGE: usize = 1024;

/// How long a seqno request we sent or passed on is waited for.
const AWAIT_ANSWER_MS: u64 = 10_000;

/// Senders whose messages were dropped before their link counted, remembered so the
/// link's start can ask them again; bounded against floods of strangers.
const DROPPED_FROM_REMEMBERED: usize = 256;

/// Rows named by short ids we could not place yet, kept while their names are asked for
/// (see [`Routing::unplaced`]): room for the tables of a dozen neighbors of a 5000-node
/// mesh, and no more, against a neighbor that sends short ids nobody can name.
const UNPLACED_ROWS: usize = 65_536;

#[derive(Clone, Debug, PartialEq)]
pub struct RoutingConfig {
    /// The periodic refresh (a digest of the advertised table) goes to all neighbors
    /// this often; triggered updates come in between.
    pub update_interval_ms: u64,
    /// A route not refreshed for this long is dropped.
    pub route_expiry_ms: u64,
    /// Hops a seqno request travels toward the destination at most.
    pub request_hop_limit: u8,
    /// A seqno request for one destination is not repeated more often than this.
    pub request_interval_ms: u64,
    /// Changes are collected this long before a triggered update carries them all, so a
    /// burst of changes costs one message instead of one per change.
    pub triggered_delay_ms: u64,
    /// The delay instead for what someone waits on: the answer to a seqno request, sent
    /// to the neighbor that asked, and a route found again by our own request after
    /// neighbors were told we had none, sent to all. That is what a repair waits on, hop
    /// after hop, so it goes out almost at once (RFC 8966 §3.7.2 sends it immediately
    /// too). A route found unasked is not urgent (see `Routing::reselect`), nor is a
    /// retraction (see `retraction_hold_ms`).
    pub urgent_delay_ms: u64,
    /// A route whose metric is within this fraction of what neighbors were told waits
    /// for the periodic update, whatever its next hop and seqno, unless it was lost in
    /// between. Safe: loop freedom rests on each node's own feasibility distance, not on
    /// how fresh its neighbors' view of it is.
    pub significant_change: f64,
    /// A lost route with unfeasible alternatives is retracted only if the seqno request
    /// sent for it is not answered within this long. The answer then reaches the nodes
    /// routing through us as a newer seqno, and they keep their routes; a retraction
    /// would make each of them lose its route and ask on its own. Safe: to neighbors a
    /// held retraction is one that was lost, which the feasibility condition allows for.
    pub retraction_hold_ms: u64,
}

impl Default for RoutingConfig {
    fn default() -> Self {
        RoutingConfig {
            update_interval_ms: 16_000,
            route_expiry_ms: 56_000,
            request_hop_limit: 32,
            request_interval_ms: 1000,
            triggered_delay_ms: 200,
            urgent_delay_ms: 20,
            significant_change: 0.25,
            retraction_hold_ms: 500,
        }
    }
}

/// ETX-like cost of a link from its measured loss and RTT.
///
/// `256 / delivery²` (both directions assumed alike, as only inbound loss is measured)
/// plus the RTT in milliseconds: a lossless 1 ms link costs 257, one losing 10% about 317.
/// Loss is quantized to whole percents so jitter in the estimate does not churn routes.
pub fn link_cost(loss: f64, rtt_ms: Option<f64>) -> u16 {
    let loss = (loss.clamp(0.0, 0.99) * 100.0).round() / 100.0;
    let delivery = (1.0 - loss).max(0.01);
    let etx = 256.0 / (delivery * delivery);
    let rtt = rtt_ms.unwrap_or(0.0).clamp(0.0, 10_000.0);
    (etx + rtt).round().min(f64::from(INFINITY - 1)) as u16
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Send to every neighbor.
    Broadcast(RoutingMessage),
    /// Send to one neighbor.
    Send(NodeId, RoutingMessage),
    /// The selected route to `destination` changed (`None`: unreachable now).
    RouteChanged {
        destination: NodeId,
        next_hop: Option<NodeId>,
        metric: u16,
    },
}

/// A route as seen from the table, for the API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteInfo {
    pub destination: NodeId,
    pub next_hop: NodeId,
    pub metric: u16,
    pub seqno: u32,
    /// When the route was selected.
    pub since: Millis,
}

/// A node's place in [`Routing::dests`]. Dense indexes instead of 32-byte keys: the
/// table is consulted on every update for every advert, and key comparisons were a
/// quarter of a 1000-node simulation's CPU.
type Slot = u32;

/// The node itself is always slot 0, which is also its tag (see [`Tag`]).
const ME: Slot = 0;

/// A neighbor's tag we have not learned.
const NO_SLOT: Slot = Slot::MAX;

/// What one neighbor advertised for one destination.
#[derive(Clone, Copy, Debug)]
struct Heard {
    neighbor: Slot,
    /// The neighbor's tag for the destination, which a seqno request to it names.
    tag: Tag,
    seqno: u32,
    metric: u16,
    /// The serial of the message it came in (or was last confirmed by).
    serial: u32,
    at: Millis,
}

/// A row with a short id we could not place when it came, from message `serial`.
#[derive(Clone, Copy, Debug)]
struct Unplaced {
    neighbor: Slot,
    tag: Tag,
    serial: u32,
    seqno: u32,
    metric: u16,
    at: Millis,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Selected {
    next_hop: Slot,
    seqno: u32,
    metric: u16,
    since: Millis,
}

/// The feasibility distance: the best `(seqno, metric)` we advertised for a destination.
#[derive(Clone, Copy, Debug)]
struct Feasibility {
    seqno: u32,
    metric: u16,
}

impl Feasibility {
    /// Babel's feasibility condition.
    fn admits(&self, seqno: u32, metric: u16) -> bool {
        metric != INFINITY && (seqno > self.seqno || (seqno == self.seqno && metric < self.metric))
    }
}

/// A neighbor that asked for a newer seqno of a destination than our route has: it
/// gets the route that has one as soon as we do (see [`Routing::answer_waiters`]).
#[derive(Clone, Copy, Debug)]
struct Waiter {
    asker: Slot,
    seqno: u32,
    since: Millis,
}

impl Waiter {
    /// Still waiting: asked within the time a request's answer is awaited.
    fn open(&self, now: Millis) -> bool {
        now.since(self.since) < AWAIT_ANSWER_MS
    }
}

/// Everything known about one destination (which may also be a neighbor).
#[derive(Debug)]
struct Dest {
    id: NodeId,
    short: ShortId,
    /// Cost of our link to it, while it is a neighbor.
    link: Option<u16>,
    /// While a neighbor: the failure detector suspects it (see [`Routing::suspect_link`]).
    suspected: bool,
    /// While a neighbor: the slot of each of its tags that we learned ([`NO_SLOT`] for
    /// the rest), and the incarnation they belong to (see [`Routing::meet_incarnation`]).
    names: Vec<Slot>,
    incarnation: Option<u8>,
    /// What each neighbor last advertised for it (a handful of rows).
    heard: Vec<Heard>,
    selected: Option<Selected>,
    feasibility: Option<Feasibility>,
    /// What we last told every neighbor, which is what they hold of our table.
    /// Insignificant metric changes are not sent at once, so this can lag `selected`;
    /// digests and tables carry this view, so that they match what neighbors were told.
    advertised: Option<(u32, u16)>,
    /// Whether an update has named this destination, in full or by short id (see
    /// `first_naming`), with our tag for it.
    /// Neighbors keep the ids and tags they learn while our router runs, and a newly
    /// linked one gets our table with both, so one naming is enough, and after it the
    /// tag alone names the destination; one that missed it finds a tag it cannot place
    /// and asks for its name ([`RoutingMessage::NameRequest`]). Naming a route in full
    /// each time it came back after a loss was a third of the routing traffic at 1000
    /// nodes under churn; naming it by tag instead of short id after that took 12 to
    /// 16% off what was left.
    named: bool,
    last_request: Option<Millis>,
    /// The neighbor our last seqno request went to (the nearest advertiser then).
    asked: Option<Slot>,
    /// The neighbor the last request we sent or passed on went to first (see
    /// `handle_request`).
    ahead: Option<Slot>,
    /// A seqno request we sent or passed on toward this destination, and when: the
    /// route that satisfies it is announced at once, so the answer travels back along
    /// the request's path (RFC 8966 §3.8.1.2).
    awaiting: Option<(u32, Millis)>,
    /// Lost with a seqno request out: when the retraction goes out if no answer came
    /// (see `RoutingConfig::retraction_hold_ms`).
    retract_at: Option<Millis>,
    /// Queued for the next triggered update.
    dirty: bool,
}

impl Dest {
    fn new(id: NodeId) -> Dest {
        Dest {
            id,
            short: ShortId::of(&id),
            link: None,
            suspected: false,
            names: Vec::new(),
            incarnation: None,
            heard: Vec::new(),
            selected: None,
            feasibility: None,
            advertised: None,
            named: false,
            last_request: None,
            asked: None,
            ahead: None,
            awaiting: None,
            retract_at: None,
            dirty: false,
        }
    }

    fn heard_from(&self, neighbor: Slot) -> Option<&Heard> {
        self.heard.iter().find(|h| h.neighbor == neighbor)
    }
}

/// How an update names `dest` (our `slot`) the first time, to all `links` at once: by
/// short id when each of them has named it to us, so can place it, and in full
/// otherwise. A node that returns to the mesh learns every destination from its
/// neighbors' tables and then advertises all of them anew; named in full, that was a
/// 38 KB update to each neighbor, 4 to 6% of the routing bytes at 1000 nodes under
/// churn.
fn first_naming(slot: Slot, dest: &Dest, links: &BTreeMap<NodeId, Slot>) -> Destination {
    if links.values().all(|&n| dest.heard_from(n).is_some()) {
        Destination::short(slot, dest.short)
    } else {
        Destination::full(slot, dest.id)
    }
}

/// Hashes ids (already uniformly random bytes) cheaply and the same way in every run,
/// so nothing about the table depends on a random hasher seed.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = (self.0.rotate_left(23) ^ u64::from_le_bytes(word))
                .wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
}

type IdMap<K> = HashMap<K, Slot, BuildHasherDefault<IdHasher>>;

pub struct Routing {
    me: NodeId,
    config: RoutingConfig,
    seqno: u32,
    /// Tells this run of the router from earlier ones to neighbors (see
    /// [`RoutingMessage::Update`]): its tags are its slots, numbered afresh.
    incarnation: u8,
    /// Numbers our updates and tables. Starts from the node's clock, so a routing actor
    /// restarted by its supervisor numbers on past its previous run; after the whole
    /// node restarts, the tables it sends in full reset what neighbors kept.
    serial: u32,
    dests: Vec<Dest>,
    by_id: IdMap<NodeId>,
    by_short: IdMap<ShortId>,
    /// Live neighbors, in a fixed order for broadcasts and the API.
    links: BTreeMap<NodeId, Slot>,
    dropped_from: BTreeSet<NodeId>,
    /// Rows from neighbors' messages whose short ids we cannot place, waiting for the
    /// names asked for in [`Routing::names_asked`]. A node that returns to the mesh
    /// with an empty table gets its neighbors' tables by short id (they knew it
    /// before); one of them is asked for names, and the others' rows wait here instead
    /// of each neighbor sending its table in full.
    unplaced: HashMap<ShortId, Vec<Unplaced>>,
    unplaced_rows: usize,
    /// Buckets whose names were asked for, and when: one neighbor at a time.
    names_asked: (BucketMask, Millis),
    /// Slots queued for the next triggered update, in the order they changed.
    dirty: Vec<Slot>,
    /// When the pending triggered update goes out.
    triggered_at: Option<Millis>,
    /// Whether a pending change is urgent (see `RoutingConfig::urgent_delay_ms`).
    urgent: bool,
    /// Neighbors waiting on seqno requests we could not answer yet, by destination.
    waiters: HashMap<Slot, Vec<Waiter>>,
    /// Seqno requests made since the outputs were last polled, by neighbor: they go as
    /// one message to each (see [`SeqnoRequest`]).
    requests_out: Vec<(Slot, Vec<SeqnoRequest>)>,
    /// Answers due to neighbors that asked, as (asker, destination), and when they go.
    answers: Vec<(Slot, Slot)>,
    answers_at: Option<Millis>,
    next_periodic: Millis,
    /// No heard route expires before this (a lower bound, refreshed by each expiry scan).
    next_expiry: Option<Millis>,
    /// When to resend seqno requests that have not been answered yet.
    next_retry: Option<Millis>,
    /// When the earliest held retraction is due.
    next_retraction: Option<Millis>,
    route_count: usize,
    outputs: VecDeque<Output>,
}

impl Routing {
    pub fn new(me: NodeId, config: RoutingConfig, now: Millis) -> Self {
        let mut routing = Routing {
            me,
            seqno: 0,
            // Two runs started in different milliseconds differ here but one time in 256;
            // a neighbor that misses our new numbering by that chance and by losing the
            // tables we send at the start as well is left to the name requests.
            incarnation: (now.0 ^ now.0 >> 8 ^ now.0 >> 16) as u8,
            serial: now.0 as u32,
            dests: Vec::new(),
            by_id: IdMap::default(),
            by_short: IdMap::default(),
            links: BTreeMap::new(),
            dropped_from: BTreeSet::new(),
            unplaced: HashMap::new(),
            unplaced_rows: 0,
            names_asked: (0, now),
            dirty: Vec::new(),
            triggered_at: None,
            waiters: HashMap::new(),
            requests_out: Vec::new(),
            answers: Vec::new(),
            answers_at: None,
            urgent: false,
            next_periodic: now.plus(config.update_interval_ms),
            next_expiry: None,
            next_retry: None,
            next_retraction: None,
            route_count: 0,
            outputs: VecDeque::new(),
            config,
        };
        routing.intern(me);
        routing.dests[ME as usize].advertised = Some((0, 0));
        routing
    }

    pub fn id(&self) -> NodeId {
        self.me
    }

    /// A neighbor came up, or its link cost changed.
    pub fn set_link(&mut self, now: Millis, neighbor: NodeId, cost: u16) {
        let Some(slot) = self.intern(neighbor).filter(|&s| s != ME) else {
            return;
        };
        let cost = cost.clamp(1, INFINITY - 1);
        let is_new = self.dests[slot as usize].link.replace(cost).is_none();
        if is_new {
            self.links.insert(neighbor, slot);
            // Tell the newcomer everything we know right away rather than wait; ask for
            // the same if it already spoke to us before we counted the link. By short
            // ids to a neighbor that was in the mesh before, as it will have learned
            // them then; in full to a stranger. (A neighbor that returns having
            // forgotten them asks one of us for the names, see `unplaced`: at 1000
            // nodes under churn every neighbor sending its table in full to every
            // returning node was an eighth of the routing bytes.)
            let known = self.dests[slot as usize].feasibility.is_some();
            for table in self.tables(ALL_BUCKETS, !known) {
                self.outputs.push_back(Output::Send(neighbor, table));
            }
            if self.dropped_from.remove(&neighbor) {
                self.outputs.push_back(Output::Send(
                    neighbor,
                    RoutingMessage::TableRequest {
                        buckets: ALL_BUCKETS,
                        full: true,
                    },
                ));
            }
        }
        for d in self.heard_through(slot) {
            self.reselect(now, d);
        }
        self.schedule_triggered(now);
    }

    /// The failure detector suspects `neighbor` (`true`), or the suspicion was refuted
    /// (`false`).
    ///
    /// A suspicion is settled a few hundred milliseconds later, and a node suspected by
    /// direct and indirect probes alike is nearly always dead. So routes through it give
    /// way now to any other feasible route, and where there is none, the seqno request
    /// that its loss would send goes out now: its answer makes a route through another
    /// neighbor the one selected (see `awaiting`). By the time the failure is declared,
    /// the repair is mostly done. If the suspicion is refuted, routes through the
    /// neighbor compete again as before.
    pub fn suspect_link(&mut self, now: Millis, neighbor: NodeId, suspected: bool) {
        let Some(&slot) = self.links.get(&neighbor) else {
            return;
        };
        if std::mem::replace(&mut self.dests[slot as usize].suspected, suspected) == suspected {
            return;
        }
        for d in self.heard_through(slot) {
            self.reselect(now, d);
        }
        self.schedule_triggered(now);
    }

    /// A neighbor is gone: every route through it goes too.
    pub fn remove_link(&mut self, now: Millis, neighbor: NodeId) {
        let Some(slot) = self.links.remove(&neighbor) else {
            return;
        };
        self.dests[slot as usize].link = None;
        self.dests[slot as usize].suspected = false;
        self.dests[slot as usize].names = Vec::new();
        self.dests[slot as usize].incarnation = None;
        let through = self.heard_through(slot);
        for &d in &through {
            self.dests[d as usize].heard.retain(|h| h.neighbor != slot);
        }
        for d in through {
            self.reselect(now, d);
        }
        self.schedule_triggered(now);
    }

    pub fn handle_message(&mut self, now: Millis, from: NodeId, message: RoutingMessage) {
        let known_before = self.dests.len();
        let Some(&neighbor) = self.links.get(&from) else {
            // Only neighbors we have a measured link to may feed the table.
            if self.dropped_from.len() >= DROPPED_FROM_REMEMBERED {
                self.dropped_from.clear();
            }
            self.dropped_from.insert(from);
            return;
        };
        match message {
            RoutingMessage::Update {
                serial,
                incarnation,
                adverts,
                digest,
            } => {
                self.meet_incarnation(neighbor, incarnation);
                let (unknown, untagged) = self.apply_adverts(now, neighbor, serial, &adverts);
                self.ask_names(from, untagged);
                let names = self.names_to_ask(now, unknown);
                let mut differing = 0;
                if let Some(digest) = digest {
                    differing = self.check_digest(now, neighbor, serial, &digest) & !unknown;
                }
                if names | differing != 0 {
                    self.outputs.push_back(Output::Send(
                        from,
                        RoutingMessage::TableRequest {
                            buckets: names | differing,
                            full: names != 0,
                        },
                    ));
                }
            }
            RoutingMessage::Table {
                serial,
                incarnation,
                buckets,
                adverts,
            } => {
                self.meet_incarnation(neighbor, incarnation);
                if adverts
                    .iter()
                    .all(|a| matches!(a.destination.name, Name::Full(_)))
                {
                    // A table in full is what a router sends when its link comes up,
                    // also after it restarted and began numbering its messages anew: it
                    // replaces what we kept from it for those buckets, whatever the
                    // serials.
                    for dest in &mut self.dests {
                        if buckets & 1 << bucket(dest.short) == 0 {
                            continue;
                        }
                        for h in dest.heard.iter_mut().filter(|h| h.neighbor == neighbor) {
                            h.serial = serial.wrapping_sub(1);
                        }
                    }
                }
                self.forget_unlisted(now, neighbor, serial, buckets, &adverts);
                self.forget_unplaced(neighbor, buckets);
                let (unknown, untagged) = self.apply_adverts(now, neighbor, serial, &adverts);
                self.ask_names(from, untagged);
                let names = self.names_to_ask(now, unknown);
                if names != 0 {
                    self.outputs.push_back(Output::Send(
                        from,
                        RoutingMessage::TableRequest {
                            buckets: names,
                            full: true,
                        },
                    ));
                }
            }
            RoutingMessage::TableRequest { buckets, full } => {
                for table in self.tables(buckets, full) {
                    self.outputs.push_back(Output::Send(from, table));
                }
            }
            RoutingMessage::NameRequest { tags } => self.name_tags(from, &tags),
            RoutingMessage::SeqnoRequests(requests) => {
                for request in requests {
                    self.handle_request(now, neighbor, request);
                }
            }
        }
        if self.dests.len() > known_before && self.unplaced_rows > 0 {
            self.place_unplaced(now);
        }
        self.schedule_triggered(now);
    }

    /// Of the buckets with short ids we could not place, those whose names to ask the
    /// sender for: the ones not already asked of a neighbor within a request interval
    /// (the rows wait in `unplaced` for that answer).
    fn names_to_ask(&mut self, now: Millis, unknown: BucketMask) -> BucketMask {
        let (asked, at) = self.names_asked;
        let pending = match now.since(at) < self.config.request_interval_ms {
            true => asked,
            false => 0,
        };
        let ask = unknown & !pending;
        if ask != 0 {
            self.names_asked = (pending | ask, now);
        }
        ask
    }

    /// A table from `neighbor` for `buckets` replaces what it said before about them,
    /// also in rows still waiting for names (what it lists and we cannot place waits
    /// anew).
    fn forget_unplaced(&mut self, neighbor: Slot, buckets: BucketMask) {
        if self.unplaced_rows == 0 {
            return;
        }
        let rows = &mut self.unplaced_rows;
        self.unplaced.retain(|short, waiting| {
            if buckets & 1 << bucket(*short) != 0 {
                let before = waiting.len();
                waiting.retain(|row| row.neighbor != neighbor);
                *rows -= before - waiting.len();
            }
            !waiting.is_empty()
        });
    }

    /// Takes in the waiting rows whose short ids have been named since they came; rows
    /// waiting longer than a request's answer is awaited are dropped (their neighbor's
    /// digest will show what we miss).
    fn place_unplaced(&mut self, now: Millis) {
        let placed: Vec<ShortId> = self
            .unplaced
            .keys()
            .filter(|short| self.by_short.contains_key(short))
            .copied()
            .collect();
        for short in placed {
            for row in self.unplaced.remove(&short).unwrap_or_default() {
                self.unplaced_rows -= 1;
                if self.dests[row.neighbor as usize].link.is_none() {
                    continue;
                }
                let advert = Advert {
                    destination: Destination::short(row.tag, short),
                    seqno: row.seqno,
                    metric: row.metric,
                };
                self.apply_adverts(now, row.neighbor, row.serial, &[advert]);
            }
        }
        let rows = &mut self.unplaced_rows;
        self.unplaced.retain(|_, waiting| {
            let before = waiting.len();
            waiting.retain(|row| now.since(row.at) < AWAIT_ANSWER_MS);
            *rows -= before - waiting.len();
            !waiting.is_empty()
        });
    }

    pub fn handle_timeout(&mut self, now: Millis) {
        if self.next_expiry.is_some_and(|at| now >= at) {
            self.expire_routes(now);
        }
        if self.next_retry.is_some_and(|at| now >= at) {
            self.retry_requests(now);
        }
        if self.next_retraction.is_some_and(|at| now >= at) {
            self.retract_held(now);
        }
        if self.answers_at.is_some_and(|at| now >= at) {
            self.answers_at = None;
            self.send_answers();
        }
        if now >= self.next_periodic {
            self.next_periodic = now.plus(self.config.update_interval_ms);
            self.send_periodic(now);
        } else if self.triggered_at.is_some_and(|at| now >= at) {
            self.triggered_at = None;
            self.send_triggered();
        }
        self.schedule_triggered(now);
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        for (neighbor, requests) in std::mem::take(&mut self.requests_out) {
            let to = self.dests[neighbor as usize].id;
            let message = RoutingMessage::SeqnoRequests(requests);
            self.outputs.push_back(Output::Send(to, message));
        }
        self.outputs.pop_front()
    }

    pub fn next_deadline(&self) -> Option<Millis> {
        let mut next = self.next_periodic;
        for at in [
            self.triggered_at,
            self.answers_at,
            self.next_expiry,
            self.next_retry,
            self.next_retraction,
        ]
        .into_iter()
        .flatten()
        {
            next = next.min(at);
        }
        Some(next)
    }

    /// A next hop other than `avoid` that cannot loop back through us: a neighbor whose
    /// own advertised distance is below ours (RFC 5286's loop-free alternate). For a
    /// relay whose next hop stopped answering before the failure detector has ruled.
    pub fn alternate_next_hop(&self, destination: &NodeId, avoid: &NodeId) -> Option<NodeId> {
        let dest = &self.dests[self.slot_of(destination)? as usize];
        let ours = dest.selected?.metric;
        dest.heard
            .iter()
            .filter(|h| h.metric != INFINITY && h.metric < ours)
            .filter_map(|h| {
                let neighbor = &self.dests[h.neighbor as usize];
                let cost = neighbor.link?;
                (neighbor.id != *avoid).then_some((h.metric.saturating_add(cost), neighbor.id))
            })
            .min()
            .map(|(_, n)| n)
    }

    /// How many destinations we have a route to.
    pub fn route_count(&self) -> usize {
        self.route_count
    }

    /// The next hop toward `destination`, if we have a route.
    pub fn next_hop(&self, destination: &NodeId) -> Option<NodeId> {
        let selected = self.dests[self.slot_of(destination)? as usize].selected?;
        Some(self.dests[selected.next_hop as usize].id)
    }

    /// Every route, by destination.
    pub fn routes(&self) -> impl Iterator<Item = RouteInfo> + '_ {
        let mut routes: Vec<RouteInfo> = self
            .dests
            .iter()
            .filter_map(|d| {
                let s = d.selected?;
                Some(RouteInfo {
                    destination: d.id,
                    next_hop: self.dests[s.next_hop as usize].id,
                    metric: s.metric,
                    seqno: s.seqno,
                    since: s.since,
                })
            })
            .collect();
        routes.sort_by_key(|r| r.destination);
        routes.into_iter()
    }

    /// Live links and their costs.
    pub fn links(&self) -> impl Iterator<Item = (NodeId, u16)> + '_ {
        self.links
            .iter()
            .filter_map(|(n, &slot)| Some((*n, self.dests[slot as usize].link?)))
    }

    pub fn seqno(&self) -> u32 {
        self.seqno
    }

    fn slot_of(&self, id: &NodeId) -> Option<Slot> {
        self.by_id.get(id).copied()
    }

    /// The slot of `id`, made if new. `None` for an id whose short id another node
    /// already has (see [`ShortId`]): it cannot be told apart on the wire.
    fn intern(&mut self, id: NodeId) -> Option<Slot> {
        if let Some(slot) = self.slot_of(&id) {
            return Some(slot);
        }
        let short = ShortId::of(&id);
        if self.by_short.contains_key(&short) {
            return None;
        }
        let slot = self.dests.len() as Slot;
        self.dests.push(Dest::new(id));
        self.by_id.insert(id, slot);
        self.by_short.insert(short, slot);
        Some(slot)
    }

    /// Our slot for a destination `neighbor` named, learning its tag when the name
    /// comes with one.
    fn resolve(&mut self, neighbor: Slot, destination: &Destination) -> Option<Slot> {
        let slot = match destination.name {
            Name::Tag if destination.tag == ME => return Some(neighbor),
            Name::Tag => {
                let names = &self.dests[neighbor as usize].names;
                return names
                    .get(destination.tag as usize)
                    .copied()
                    .filter(|&slot| slot != NO_SLOT);
            }
            Name::Full(id) => self.intern(id)?,
            Name::Short(short) => *self.by_short.get(&short)?,
        };
        // Tag 0 is the sender itself, whatever the name says.
        if destination.tag != ME {
            let names = &mut self.dests[neighbor as usize].names;
            let tag = destination.tag as usize;
            if names.len() <= tag {
                names.resize(tag + 1, NO_SLOT);
            }
            names[tag] = slot;
        }
        Some(slot)
    }

    /// A message from `neighbor` in `incarnation`: tags learned from an earlier run of
    /// its router name other destinations now, so they are forgotten.
    fn meet_incarnation(&mut self, neighbor: Slot, incarnation: u8) {
        let dest = &mut self.dests[neighbor as usize];
        if dest.incarnation != Some(incarnation) {
            dest.incarnation = Some(incarnation);
            dest.names.clear();
        }
    }

    /// Asks `neighbor` to name tags of its that we could not place: we missed the
    /// update that named them (or its run of the router is new to us). Rare, so each
    /// is asked for as it comes.
    fn ask_names(&mut self, neighbor: NodeId, mut tags: Vec<Tag>) {
        if tags.is_empty() {
            return;
        }
        tags.sort_unstable();
        tags.dedup();
        self.outputs
            .push_back(Output::Send(neighbor, RoutingMessage::NameRequest { tags }));
    }

    /// Names our `tags` in full for `neighbor`, with what neighbors were last told of
    /// each (what our digest says), a retraction where that was none.
    fn name_tags(&mut self, neighbor: NodeId, tags: &[Tag]) {
        let adverts: Vec<Advert> = tags
            .iter()
            .filter_map(|&tag| {
                let dest = self.dests.get(tag as usize)?;
                let (seqno, metric) = dest
                    .advertised
                    .unwrap_or((dest.feasibility.map_or(0, |f| f.seqno), INFINITY));
                Some(Advert {
                    destination: Destination::full(tag, dest.id),
                    seqno,
                    metric,
                })
            })
            .collect();
        if adverts.is_empty() {
            return;
        }
        let message = self.update(adverts, None);
        self.outputs.push_back(Output::Send(neighbor, message));
    }

    /// An update of ours, numbered next.
    fn update(&mut self, adverts: Vec<Advert>, digest: Option<Digest>) -> RoutingMessage {
        RoutingMessage::Update {
            serial: self.next_serial(),
            incarnation: self.incarnation,
            adverts,
            digest,
        }
    }

    /// Destinations some neighbor's advert reaches through `neighbor`, and the
    /// neighbor itself.
    fn heard_through(&self, neighbor: Slot) -> Vec<Slot> {
        let mut through: Vec<Slot> = (0..self.dests.len() as Slot)
            .filter(|&d| d != ME && self.dests[d as usize].heard_from(neighbor).is_some())
            .collect();
        if !through.contains(&neighbor) {
            through.push(neighbor);
        }
        through
    }

    /// Takes in what `neighbor` advertised in message `serial`. Returns the buckets of
    /// short ids we do not know, to be asked for in full, and the tags we do not know,
    /// to be asked for by name.
    fn apply_adverts(
        &mut self,
        now: Millis,
        neighbor: Slot,
        serial: u32,
        adverts: &[Advert],
    ) -> (BucketMask, Vec<Tag>) {
        let mut unknown: BucketMask = 0;
        let mut untagged = Vec::new();
        for advert in adverts {
            let Some(slot) = self.resolve(neighbor, &advert.destination) else {
                match advert.destination.name {
                    Name::Tag => untagged.push(advert.destination.tag),
                    Name::Short(short) => {
                        unknown |= 1 << bucket(short);
                        if self.unplaced_rows < UNPLACED_ROWS {
                            self.unplaced_rows += 1;
                            self.unplaced.entry(short).or_default().push(Unplaced {
                                neighbor,
                                tag: advert.destination.tag,
                                serial,
                                seqno: advert.seqno,
                                metric: advert.metric,
                                at: now,
                            });
                        }
                    }
                    // An id whose short id another node has (see `intern`).
                    Name::Full(_) => {}
                }
                continue;
            };
            if slot == ME && advert.seqno > self.seqno {
                self.outrun_old_seqno(advert.seqno);
            }
            let fresh = Heard {
                neighbor,
                tag: advert.destination.tag,
                seqno: advert.seqno,
                metric: advert.metric,
                serial,
                at: now,
            };
            let dest = &mut self.dests[slot as usize];
            let unchanged = match dest.heard.iter_mut().find(|h| h.neighbor == neighbor) {
                // A late copy of an older message: what we hold is newer.
                Some(h) if serial_newer(h.serial, serial) => continue,
                Some(h) => {
                    let same = h.seqno == fresh.seqno && h.metric == fresh.metric;
                    *h = fresh;
                    same
                }
                None => {
                    dest.heard.push(fresh);
                    false
                }
            };
            // Entries only ever get later expiries, so an existing bound holds.
            self.next_expiry
                .get_or_insert(now.plus(self.config.route_expiry_ms));
            // A repeat of what we know changes no choice, unless we are starved (then
            // reselecting retries the seqno request).
            let starved = dest.selected.is_none();
            if slot != ME && (!unchanged || starved) {
                self.reselect(now, slot);
            }
        }
        (unknown, untagged)
    }

    /// A table for `buckets` from `neighbor`: what it no longer lists is gone, unless
    /// we heard it in a newer message than the table.
    fn forget_unlisted(
        &mut self,
        now: Millis,
        neighbor: Slot,
        serial: u32,
        buckets: BucketMask,
        adverts: &[Advert],
    ) {
        let listed: BTreeSet<ShortId> = adverts
            .iter()
            .filter_map(|a| a.destination.short_id())
            .collect();
        let mut dropped = Vec::new();
        for (slot, dest) in self.dests.iter_mut().enumerate() {
            if buckets & 1 << bucket(dest.short) == 0 || listed.contains(&dest.short) {
                continue;
            }
            let before = dest.heard.len();
            dest.heard
                .retain(|h| h.neighbor != neighbor || serial_newer(h.serial, serial));
            if dest.heard.len() != before {
                dropped.push(slot as Slot);
            }
        }
        for slot in dropped {
            if slot != ME {
                self.reselect(now, slot);
            }
        }
    }

    /// Compares a neighbor's digest with our record of its table: matching buckets are
    /// refreshed, differing ones returned to be asked for.
    fn check_digest(
        &mut self,
        now: Millis,
        neighbor: Slot,
        serial: u32,
        digest: &Digest,
    ) -> BucketMask {
        let mut mine = Digest::default();
        for dest in &self.dests {
            if let Some(h) = dest.heard_from(neighbor).filter(|h| h.metric != INFINITY) {
                let sum = &mut mine.0[bucket(dest.short)];
                *sum = sum.wrapping_add(advert_hash(dest.short, h.seqno, h.metric));
            }
        }
        let differing: BucketMask = (0..BUCKETS)
            .filter(|&b| mine.0[b] != digest.0[b])
            .fold(0, |mask, b| mask | 1 << b);
        let mut starved = Vec::new();
        for (slot, dest) in self.dests.iter_mut().enumerate() {
            if differing & 1 << bucket(dest.short) != 0 {
                continue;
            }
            if let Some(h) = dest.heard.iter_mut().find(|h| h.neighbor == neighbor) {
                h.at = now;
                if serial_newer(serial, h.serial) {
                    h.serial = serial;
                }
                if h.metric != INFINITY && dest.selected.is_none() && slot as Slot != ME {
                    starved.push(slot as Slot);
                }
            }
        }
        // As a resent table would: a destination we have no route to retries its seqno
        // request.
        for slot in starved {
            self.reselect(now, slot);
        }
        differing
    }

    /// Our advertised table for `buckets`, in messages of bounded size, naming
    /// destinations in full or by short id, each with our tag for it.
    fn tables(&mut self, buckets: BucketMask, full: bool) -> Vec<RoutingMessage> {
        let mut by_bucket: Vec<Vec<Advert>> = vec![Vec::new(); BUCKETS];
        for (tag, dest) in (0..).zip(&self.dests) {
            let bucket = bucket(dest.short);
            if buckets & 1 << bucket == 0 {
                continue;
            }
            if let Some((seqno, metric)) = dest.advertised {
                let destination = match full {
                    true => Destination::full(tag, dest.id),
                    false => Destination::short(tag, dest.short),
                };
                by_bucket[bucket].push(Advert {
                    destination,
                    seqno,
                    metric,
                });
            }
        }
        let mut messages = Vec::new();
        let mut covered: BucketMask = 0;
        let mut adverts = Vec::new();
        for (bucket, rows) in by_bucket.into_iter().enumerate() {
            if buckets & 1 << bucket == 0 {
                continue;
            }
            if !adverts.is_empty() && adverts.len() + rows.len() > TABLE_ADVERTS_PER_MESSAGE {
                self.serial = self.serial.wrapping_add(1);
                messages.push(RoutingMessage::Table {
                    serial: self.serial,
                    incarnation: self.incarnation,
                    buckets: covered,
                    adverts: std::mem::take(&mut adverts),
                });
                covered = 0;
            }
            covered |= 1 << bucket;
            adverts.extend(rows);
        }
        self.serial = self.serial.wrapping_add(1);
        messages.push(RoutingMessage::Table {
            serial: self.serial,
            incarnation: self.incarnation,
            buckets: covered,
            adverts,
        });
        messages
    }

    /// Fingerprints of our advertised table, per bucket.
    fn digest(&self) -> Digest {
        let mut sums = Digest::default();
        for dest in &self.dests {
            if let Some((seqno, metric)) = dest.advertised {
                let sum = &mut sums.0[bucket(dest.short)];
                *sum = sum.wrapping_add(advert_hash(dest.short, seqno, metric));
            }
        }
        sums
    }

    /// Drops routes not refreshed within the expiry and finds the next expiry.
    fn expire_routes(&mut self, now: Millis) {
        let expiry = self.config.route_expiry_ms;
        let mut touched = Vec::new();
        let mut next: Option<Millis> = None;
        for (slot, dest) in self.dests.iter_mut().enumerate() {
            let before = dest.heard.len();
            dest.heard.retain(|h| now.since(h.at) < expiry);
            if dest.heard.len() != before && slot as Slot != ME {
                touched.push(slot as Slot);
            }
            for h in &dest.heard {
                let at = h.at.plus(expiry);
                next = Some(next.map_or(at, |n| n.min(at)));
            }
        }
        self.next_expiry = next;
        for slot in touched {
            self.reselect(now, slot);
        }
    }

    /// Resends the seqno requests of destinations still without a route: a request or
    /// its answer may be lost, or die at a hop with no route of its own, and without a
    /// resend the asker would wait for the next refresh to try again.
    fn retry_requests(&mut self, now: Millis) {
        self.next_retry = None;
        let waiting: Vec<Slot> = (1..self.dests.len() as Slot)
            .filter(|&slot| {
                let dest = &self.dests[slot as usize];
                dest.selected.is_none()
                    && dest
                        .awaiting
                        .is_some_and(|(_, at)| now.since(at) < AWAIT_ANSWER_MS)
            })
            .collect();
        for slot in waiting {
            self.reselect(now, slot);
        }
    }

    /// Sends the retractions whose seqno requests went unanswered for the hold.
    fn retract_held(&mut self, now: Millis) {
        self.next_retraction = None;
        for slot in 1..self.dests.len() as Slot {
            let Some(at) = self.dests[slot as usize].retract_at else {
                continue;
            };
            if now >= at {
                self.retract(slot);
            } else {
                self.next_retraction = Some(self.next_retraction.map_or(at, |n| n.min(at)));
            }
        }
    }

    /// Queues a retraction. Not urgent: a retraction goes out when nobody is left to
    /// ask or a request went unanswered, so the destination is mostly gone, and
    /// collecting retractions for the triggered delay lets one message carry many.
    fn retract(&mut self, slot: Slot) {
        self.dests[slot as usize].retract_at = None;
        self.mark_dirty(slot);
    }

    /// Picks the best feasible route to `slot` and records the consequences.
    fn reselect(&mut self, now: Millis, slot: Slot) {
        let dest = &self.dests[slot as usize];
        let fd = dest.feasibility;
        // While a seqno request we passed on is open, a route new enough to answer it
        // wins over a shorter old one: the asker can take only that one.
        let wanted = dest
            .awaiting
            .filter(|(_, at)| now.since(*at) < AWAIT_ANSWER_MS)
            .map(|(wanted, _)| wanted);
        let best = dest
            .heard
            .iter()
            .filter_map(|h| {
                let cost = self.dests[h.neighbor as usize].link?;
                if h.metric == INFINITY || fd.is_some_and(|fd| !fd.admits(h.seqno, h.metric)) {
                    return None;
                }
                let total = h.metric.saturating_add(cost).min(INFINITY - 1);
                Some((total, h.neighbor, h.seqno))
            })
            // Lowest metric; ties go to the newer seqno, then the lower id. A suspected
            // next hop only if nothing else is feasible.
            .min_by_key(|&(metric, neighbor, seqno)| {
                (
                    self.dests[neighbor as usize].suspected,
                    wanted.is_some_and(|wanted| seqno < wanted),
                    metric,
                    std::cmp::Reverse(seqno),
                    self.dests[neighbor as usize].id,
                )
            });
        let current = dest.selected;
        match best {
            Some((metric, next_hop, seqno)) => {
                if self.dests[next_hop as usize].suspected {
                    // Only a suspected neighbor's route is feasible: ask for the seqno
                    // that would make another one so (see `suspect_link`).
                    if let Some((_, via)) = self.nearest_advertiser(slot, next_hop) {
                        self.request_seqno(now, slot, via);
                    }
                }
                let changed = current.is_none_or(|c| {
                    c.next_hop != next_hop || c.metric != metric || c.seqno != seqno
                });
                if !changed {
                    return;
                }
                let since = match current {
                    Some(c) if c.next_hop == next_hop => c.since,
                    _ => now,
                };
                let significant_change = self.config.significant_change;
                let waited_on = self.answer_waiters(now, slot, seqno);
                let dest = &mut self.dests[slot as usize];
                dest.retract_at = None;
                let answers_request = dest
                    .awaiting
                    .is_some_and(|(wanted, at)| seqno >= wanted && now.since(at) < AWAIT_ANSWER_MS);
                if answers_request {
                    dest.awaiting = None;
                    dest.asked = None;
                }
                dest.selected = Some(Selected {
                    next_hop,
                    seqno,
                    metric,
                    since,
                });
                // We are about to advertise (seqno, metric): the FD may only improve.
                let fd = dest
                    .feasibility
                    .get_or_insert(Feasibility { seqno, metric });
                if seqno > fd.seqno {
                    *fd = Feasibility { seqno, metric };
                } else if seqno == fd.seqno {
                    fd.metric = fd.metric.min(metric);
                }
                // Neighbors hear only (seqno, metric), and need a newer seqno only when
                // they are starved for the destination, which they say with a seqno
                // request. So a new next hop at about the distance they were told is not
                // told, nor is a newer seqno, except to whoever asked for it (and then,
                // with the next triggered update, to all, so that every neighbor holds
                // what our digest says). (Advertising the older seqno stays safe: it is
                // worse than our feasibility distance, so the chain argument of the
                // module docs holds.) When a node fails, nodes around it bump the seqnos
                // of hundreds of destinations whose routes ran through it; telling every
                // bump to the whole mesh was 80% of its routing traffic at 1000 nodes.
                // A route found again after it was lost is told, even within the
                // retraction hold: by then neighbors may hold a newer seqno than the one
                // we told, which makes our old advert unfeasible to them.
                let significant = waited_on
                    || current.is_none()
                    || dest.advertised.is_none_or(|(_, told)| {
                        f64::from(told.abs_diff(metric)) > significant_change * f64::from(told)
                    });
                // Our own request answered after neighbors were told we had no route:
                // those that routed through us wait on it without asking (see
                // `await_next_hops_request`), one hop after another behind us, so it
                // goes to all of them at once.
                let awaited = answers_request && dest.advertised.is_none() && dest.named;
                if current.is_none() {
                    self.route_count += 1;
                }
                if significant {
                    self.mark_dirty(slot);
                }
                if awaited {
                    self.urgent = true;
                }
                if current.is_none_or(|c| c.next_hop != next_hop || c.metric != metric) {
                    self.outputs.push_back(Output::RouteChanged {
                        destination: self.dests[slot as usize].id,
                        next_hop: Some(self.dests[next_hop as usize].id),
                        metric,
                    });
                }
            }
            None => {
                // Unfeasible routes remain: ask the destination for a newer seqno, through
                // the neighbor with the best of them (RFC 8966 §3.8.2.1), whose answer
                // would make that route feasible.
                let unfeasible = self.nearest_advertiser(slot, ME);
                let hold = self.config.retraction_hold_ms;
                let mut next_hop_asked = false;
                if let Some(current) = current {
                    // A next hop that retracted has held its retraction already (or had
                    // no one to ask): holding ours too would add up hop after hop.
                    let retracted = self.dests[slot as usize]
                        .heard_from(current.next_hop)
                        .is_some_and(|h| h.metric == INFINITY);
                    next_hop_asked = retracted;
                    self.dests[slot as usize].selected = None;
                    self.route_count -= 1;
                    // The hold counts from when a request went out: mostly at the next
                    // hop's suspicion, half a second before its loss, and by then the
                    // nodes around that still route through it have had as long to
                    // answer. Holding again from the loss left their requests circling
                    // among them, each route stale, for another half second.
                    let asked_at = self.request_out_since(now, slot).unwrap_or(now);
                    let at = asked_at.plus(hold).max(now);
                    if unfeasible.is_some() && at > now && !retracted {
                        self.dests[slot as usize].retract_at = Some(at);
                        self.next_retraction = Some(self.next_retraction.map_or(at, |n| n.min(at)));
                    } else {
                        self.retract(slot);
                    }
                    self.outputs.push_back(Output::RouteChanged {
                        destination: self.dests[slot as usize].id,
                        next_hop: None,
                        metric: INFINITY,
                    });
                } else if unfeasible.is_none() && self.dests[slot as usize].retract_at.is_some() {
                    // Nobody is left to answer: retract now.
                    self.retract(slot);
                }
                // A neighbor waiting on a request we passed on along this route is not
                // left to wait: see `await_next_hops_request`.
                let passed_on = self.is_waited_on(now, slot);
                match unfeasible {
                    Some(_) if next_hop_asked && !passed_on => {
                        self.await_next_hops_request(now, slot)
                    }
                    Some((_, via)) => self.request_seqno(now, slot, via),
                    None => {}
                }
            }
        }
    }

    /// Whether a neighbor waits on a seqno request for `slot` that we passed on.
    fn is_waited_on(&self, now: Millis, slot: Slot) -> bool {
        self.waiters
            .get(&slot)
            .is_some_and(|waiters| waiters.iter().any(|w| w.open(now)))
    }

    /// The linked neighbor other than `except` whose advertised route to `slot` is the
    /// shortest from here, feasible or not, with that distance.
    fn nearest_advertiser(&self, slot: Slot, except: Slot) -> Option<(u16, Slot)> {
        self.nearest_advertiser_among(slot, |n| n != except)
    }

    /// [`Routing::nearest_advertiser`] among the neighbors `among` admits.
    fn nearest_advertiser_among(
        &self,
        slot: Slot,
        among: impl Fn(Slot) -> bool,
    ) -> Option<(u16, Slot)> {
        self.dests[slot as usize]
            .heard
            .iter()
            .filter(|h| h.metric != INFINITY && among(h.neighbor))
            .filter_map(|h| {
                let cost = self.dests[h.neighbor as usize].link?;
                Some((h.metric.saturating_add(cost), h.neighbor))
            })
            .min()
    }

    /// The neighbors to pass a seqno request for `slot` from `from` on to: our next
    /// hop, unless the request came from there, else the nearest other neighbor that
    /// advertises a route, feasible or not; and when that one is suspected by the
    /// failure detector, also the nearest one that is not. Around a node that just
    /// failed, routes through it are the stale ones a request dies on; but a suspicion
    /// can be wrong, and the suspect may be the destination itself, so it is asked too.
    fn request_paths(&self, slot: Slot, from: Slot) -> [Option<Slot>; 2] {
        let best = self.dests[slot as usize]
            .selected
            .map(|s| s.next_hop)
            .filter(|&n| n != from)
            .or_else(|| self.nearest_advertiser(slot, from).map(|(_, n)| n));
        let Some(best) = best.filter(|&n| self.dests[n as usize].suspected) else {
            return [best, None];
        };
        let around = self
            .nearest_advertiser_among(slot, |n| n != from && !self.dests[n as usize].suspected)
            .map(|(_, n)| n);
        [Some(best), around]
    }

    fn mark_dirty(&mut self, slot: Slot) {
        let dest = &mut self.dests[slot as usize];
        if !dest.dirty {
            dest.dirty = true;
            self.dirty.push(slot);
        }
    }

    /// Our next hop retracted the route: it asked for a newer seqno and heard nothing
    /// for the hold, or had nobody to ask. Its request may still be answered, and the
    /// answer reaches us as its new route; and when the destination is gone, as it mostly
    /// is, a request of our own would be lost too. At 1000 nodes under churn every node
    /// asking in the wave of a departed node's retractions was most of the seqno
    /// requests. So we wait a request interval as if we had asked, then ask (the retry of
    /// `retry_requests`) whoever still advertises a route by then.
    ///
    /// Unless a neighbor waits on a request we passed on along the route: that request
    /// died with it, so we ask on at once, as for a request of our own that died
    /// (`request_died_with`). Around a failure on a long detour, the retraction wave is
    /// what tells the nodes there that their routes are stale, and a request that rides
    /// it gets out of the stale region as soon as the wave reaches its edge; waiting out
    /// the interval at each node held such repairs for seconds. At 1000 nodes under
    /// churn: a quarter fewer repairs over 2 s, for 8% more routing bytes.
    fn await_next_hops_request(&mut self, now: Millis, slot: Slot) {
        let _ = self.open_request(now, slot);
    }

    /// Notes a seqno request for `slot` as sent now and schedules its resend. Returns the
    /// seqno to ask for and whether the request is a resend, or `None` when it is too
    /// early to ask again (see [`Routing::request_gap`]).
    fn open_request(&mut self, now: Millis, slot: Slot) -> Option<(u32, bool)> {
        let seqno = self.dests[slot as usize]
            .feasibility
            .map_or(0, |fd| fd.seqno.saturating_add(1));
        if let Some(last) = self.dests[slot as usize].last_request {
            let gap = self.request_gap(slot, seqno, last);
            if now.since(last) < gap {
                self.schedule_retry(last.plus(gap));
                return None;
            }
        }
        let dest = &mut self.dests[slot as usize];
        dest.last_request = Some(now);
        // A resend keeps the first request's time, so resends stop when it is
        // given up on.
        let resend = dest.awaiting.is_some_and(|(wanted, _)| wanted == seqno);
        if !resend {
            dest.awaiting = Some((seqno, now));
        }
        let gap = self.request_gap(slot, seqno, now);
        self.schedule_retry(now.plus(gap));
        Some((seqno, resend))
    }

    /// How long after a request for `seqno` sent at `last` the next may go: a request
    /// interval, or, for a resend while the request is open, as long as it had been
    /// open by then, so resends go out 1, 2, 4 and 8 s after the first. The destination
    /// of a request that went unanswered twice has mostly left the mesh, and at 1000
    /// nodes under churn resending every second until it was given up on was half of
    /// the seqno requests sent, and every copy was passed on toward where it had been.
    fn request_gap(&self, slot: Slot, seqno: u32, last: Millis) -> u64 {
        let open_since = self.dests[slot as usize]
            .awaiting
            .filter(|&(wanted, _)| wanted == seqno)
            .map(|(_, first)| last.since(first))
            .filter(|&open| open < AWAIT_ANSWER_MS)
            .unwrap_or(0);
        self.config.request_interval_ms.max(open_since)
    }

    fn schedule_retry(&mut self, at: Millis) {
        self.next_retry = Some(self.next_retry.map_or(at, |next| next.min(at)));
    }

    fn request_seqno(&mut self, now: Millis, slot: Slot, via: Slot) {
        // When the request we sent died with the route it followed, the next nearest is
        // asked at once, not a request interval later: around a failure the nearest
        // routes are the stale ones through it, and they go one after the other as
        // retractions spread. Asking along each in turn as it goes finds the way out of
        // the stale region at the speed of the retractions; waiting out the interval
        // each time made repairs around a node on long detours take seconds.
        let opened = match self.request_died_with(now, slot) {
            Some(seqno) => Some((seqno, false)),
            None => self.open_request(now, slot),
        };
        let Some((seqno, resend)) = opened else {
            return;
        };
        self.dests[slot as usize].asked = Some(via);
        self.dests[slot as usize].ahead = Some(via);
        let hops_left = self.config.request_hop_limit;
        // A resend goes to every neighbor that still advertises a route: the first may
        // have died at a hop whose own route leads back to us. A neighbor that has
        // none would drop it.
        let to: Vec<(Slot, Tag)> = self.dests[slot as usize]
            .heard
            .iter()
            .filter(|h| match resend {
                true => h.metric != INFINITY && self.dests[h.neighbor as usize].link.is_some(),
                false => h.neighbor == via,
            })
            .map(|h| (h.neighbor, h.tag))
            .collect();
        for (neighbor, tag) in to {
            self.send_request(neighbor, tag, seqno, hops_left);
        }
    }

    /// Sends a seqno request to `neighbor`, naming the destination by the neighbor's
    /// `tag` for it.
    fn send_request(&mut self, neighbor: Slot, tag: Tag, seqno: u32, hops_left: u8) {
        let request = SeqnoRequest {
            destination: tag,
            seqno,
            hops_left,
        };
        match self.requests_out.iter_mut().find(|(n, _)| *n == neighbor) {
            Some((_, requests)) => requests.push(request),
            None => self.requests_out.push((neighbor, vec![request])),
        }
    }

    /// Since when a seqno request that would make a route to `slot` feasible again
    /// has been out, sent or passed on by us.
    fn request_out_since(&self, now: Millis, slot: Slot) -> Option<Millis> {
        let dest = &self.dests[slot as usize];
        let needed = dest.feasibility.map_or(0, |fd| fd.seqno.saturating_add(1));
        dest.awaiting
            .filter(|&(wanted, at)| wanted >= needed && now.since(at) < AWAIT_ANSWER_MS)
            .map(|(_, at)| at)
    }

    /// The seqno of our open request for `slot` if the neighbor we sent it to has lost
    /// its route since (or its link): the request died there.
    fn request_died_with(&self, now: Millis, slot: Slot) -> Option<u32> {
        let dest = &self.dests[slot as usize];
        let (wanted, _) = dest
            .awaiting
            .filter(|(_, at)| now.since(*at) < AWAIT_ANSWER_MS)?;
        let asked = dest.asked?;
        let gone = self.dests[asked as usize].link.is_none()
            || dest.heard_from(asked).is_none_or(|h| h.metric == INFINITY);
        gone.then_some(wanted)
    }

    /// Neighbors still speak of us under a seqno newer than ours: we restarted and
    /// forgot it. Every node's feasibility distance for us is at that seqno, so our
    /// routes would be refused everywhere until seqno requests reached us; taking the
    /// next seqno at once makes them feasible again (as a router that lost its seqno
    /// must, RFC 8966 §3.5.4).
    fn outrun_old_seqno(&mut self, heard: u32) {
        self.seqno = heard.saturating_add(1);
        self.dests[ME as usize].advertised = Some((self.seqno, 0));
        self.mark_dirty(ME);
        self.urgent = true;
    }

    fn handle_request(&mut self, now: Millis, from: Slot, request: SeqnoRequest) {
        let SeqnoRequest {
            destination,
            seqno,
            hops_left,
        } = request;
        // Our own tag: the asker learned it from our adverts.
        let slot = destination as Slot;
        if slot as usize >= self.dests.len() {
            return;
        }
        if slot == ME {
            if seqno > self.seqno {
                self.seqno = seqno;
                self.dests[ME as usize].advertised = Some((seqno, 0));
            }
            self.mark_dirty(ME);
            self.answer(now, from, ME);
            return;
        }
        let selected = self.dests[slot as usize].selected;
        // Our route is already new enough: the asker is waiting on it to repair.
        if selected.is_some_and(|s| s.seqno >= seqno) {
            self.mark_dirty(slot);
            self.answer(now, from, slot);
            return;
        }
        let waiters = self.waiters.entry(slot).or_default();
        match waiters.iter_mut().find(|w| w.asker == from) {
            Some(w) => {
                w.seqno = w.seqno.max(seqno);
                w.since = now;
            }
            None => waiters.push(Waiter {
                asker: from,
                seqno,
                since: now,
            }),
        }
        if hops_left <= 1 {
            return;
        }
        // On toward the destination: along our route, or, when we have none, it leads
        // back to the asker or its next hop is suspected, along the nearest route a
        // neighbor still advertises, feasible or not (RFC 8966 §3.8.1.2; see
        // `request_paths`). Around a failure the nodes a request must cross are the ones
        // that just lost their routes, holding their retractions; dropping it there left
        // a detour of many hops to the periodic refresh, seconds later. A request
        // changes no route, so an unfeasible one is safe to follow, and `hops_left` and
        // the once-per-interval rule below bound any circling.
        let paths = self.request_paths(slot, from);
        if paths[0].is_none() {
            return;
        }
        let ahead = self.dests[slot as usize].ahead;
        let ahead_suspected = ahead.is_some_and(|n| self.dests[n as usize].suspected);
        let dest = &mut self.dests[slot as usize];
        // The same request reaches us from several neighbors, and each passed
        // on copy is passed on again: one copy per request interval goes ahead,
        // and the answer goes to every asker (see `answer_waiters`). Unless the copy
        // ahead went to a suspected neighbor and this one would go another way: we
        // select a suspected neighbor's route only when nothing else is feasible, so
        // its answer may never reach the askers, while our next hop may hold the
        // newer seqno already and only not have told it.
        let passed_on = dest.awaiting.is_some_and(|(wanted, at)| {
            wanted >= seqno && now.since(at) < self.config.request_interval_ms
        }) && (ahead == paths[0] || !ahead_suspected);
        if passed_on {
            return;
        }
        let wanted = dest.awaiting.map_or(seqno, |(w, _)| w.max(seqno));
        dest.awaiting = Some((wanted, now));
        dest.ahead = paths[0];
        for via in paths.into_iter().flatten() {
            if let Some(tag) = self.dests[slot as usize].heard_from(via).map(|h| h.tag) {
                self.send_request(via, tag, seqno, hops_left - 1);
            }
        }
    }

    /// Queues answers for the neighbors waiting on a seqno of `slot` that `seqno`
    /// satisfies. Returns whether there were any.
    fn answer_waiters(&mut self, now: Millis, slot: Slot, seqno: u32) -> bool {
        let Some(waiters) = self.waiters.get_mut(&slot) else {
            return false;
        };
        let mut answered = Vec::new();
        waiters.retain(|w| {
            let satisfied = seqno >= w.seqno;
            if satisfied {
                answered.push(w.asker);
            }
            !satisfied && w.open(now)
        });
        if waiters.is_empty() {
            self.waiters.remove(&slot);
        }
        for asker in &answered {
            self.answer(now, *asker, slot);
        }
        !answered.is_empty()
    }

    /// Queues our route to `slot` for the neighbor `asker`, which asked for it. The
    /// answer goes to the asker alone, within the urgent delay: it is what a repair
    /// waits on, hop after hop back along the request's path. Every other neighbor
    /// hears of the route with the next triggered update if it is news to them; at
    /// 1000 nodes under churn broadcasting each answer at once made two thirds of the
    /// triggered updates urgent, eight messages for what one neighbor waited on.
    fn answer(&mut self, now: Millis, asker: Slot, slot: Slot) {
        self.answers.push((asker, slot));
        let at = now.plus(self.config.urgent_delay_ms);
        self.answers_at = Some(self.answers_at.map_or(at, |t| t.min(at)));
    }

    /// Sends the queued answers, one update per asker.
    fn send_answers(&mut self) {
        let mut answers = std::mem::take(&mut self.answers);
        answers.sort_unstable();
        answers.dedup();
        for group in answers.chunk_by(|a, b| a.0 == b.0) {
            let asker = group[0].0;
            if self.dests[asker as usize].link.is_none() {
                continue;
            }
            let adverts: Vec<Advert> = group
                .iter()
                .filter_map(|&(_, slot)| self.current_advert(slot))
                .collect();
            if adverts.is_empty() {
                continue;
            }
            let message = self.update(adverts, None);
            self.outputs
                .push_back(Output::Send(self.dests[asker as usize].id, message));
        }
    }

    /// Our route to `slot` as it is now, for a neighbor that asked for it by our tag.
    fn current_advert(&self, slot: Slot) -> Option<Advert> {
        let dest = &self.dests[slot as usize];
        let destination = match dest.named || slot == ME {
            true => Destination::tag(slot),
            false => Destination::full(slot, dest.id),
        };
        if slot == ME {
            return Some(Advert {
                destination,
                seqno: self.seqno,
                metric: 0,
            });
        }
        let selected = self.dests[slot as usize].selected?;
        Some(Advert {
            destination,
            seqno: selected.seqno,
            metric: selected.metric,
        })
    }

    fn schedule_triggered(&mut self, now: Millis) {
        if self.dirty.is_empty() {
            return;
        }
        let delay = if self.urgent {
            self.config.urgent_delay_ms
        } else {
            self.config.triggered_delay_ms
        };
        let at = now.plus(delay);
        self.triggered_at = Some(self.triggered_at.map_or(at, |t| t.min(at)));
    }

    /// What changed since the last update, as adverts, now recorded as advertised.
    fn take_dirty(&mut self) -> Vec<Advert> {
        let mut adverts = Vec::with_capacity(self.dirty.len());
        for slot in std::mem::take(&mut self.dirty) {
            let seqno = self.seqno;
            let dest = &mut self.dests[slot as usize];
            dest.dirty = false;
            let tagged = Destination::tag(slot);
            let advert = if slot == ME {
                Advert {
                    destination: tagged,
                    seqno,
                    metric: 0,
                }
            } else if let Some(s) = dest.selected {
                let destination = match dest.named {
                    true => tagged,
                    false => first_naming(slot, dest, &self.links),
                };
                dest.named = true;
                dest.advertised = Some((s.seqno, s.metric));
                Advert {
                    destination,
                    seqno: s.seqno,
                    metric: s.metric,
                }
            } else if dest.advertised.take().is_some() {
                Advert {
                    destination: tagged,
                    seqno: dest.feasibility.map_or(0, |f| f.seqno),
                    metric: INFINITY,
                }
            } else {
                // Never told anyone, so nothing to take back.
                continue;
            };
            adverts.push(advert);
        }
        adverts
    }

    fn next_serial(&mut self) -> u32 {
        self.serial = self.serial.wrapping_add(1);
        self.serial
    }

    /// Sends what changed since the last update (the triggered update of RFC 8966).
    fn send_triggered(&mut self) {
        self.urgent = false;
        let adverts = self.take_dirty();
        if adverts.is_empty() {
            return;
        }
        let message = self.update(adverts, None);
        self.outputs.push_back(Output::Broadcast(message));
    }

    /// The periodic refresh: metric drifts too small for a triggered update, pending
    /// changes, and the digest of the table they leave.
    fn send_periodic(&mut self, now: Millis) {
        // Metric drifts too small to have been told, beyond half of what a triggered
        // update waits for (link costs move by a few percent all the time, and telling
        // each at 1000 nodes was a third of the routing traffic; from a quarter to half
        // took 40% off the refresh, for paths 0.3% longer). A newer seqno alone is not
        // drift (see `reselect`).
        let tolerance = self.config.significant_change / 2.0;
        for slot in 1..self.dests.len() as Slot {
            let dest = &self.dests[slot as usize];
            if dest.retract_at.is_some() {
                continue;
            }
            let drifted = match (dest.selected, dest.advertised) {
                (Some(s), Some((_, told))) => {
                    f64::from(s.metric.abs_diff(told)) > tolerance * f64::from(told)
                }
                (selected, advertised) => selected.is_some() != advertised.is_some(),
            };
            if drifted {
                self.mark_dirty(slot);
            }
        }
        self.triggered_at = None;
        self.urgent = false;
        self.waiters.retain(|_, waiters| {
            waiters.retain(|w| w.open(now));
            !waiters.is_empty()
        });
        let adverts = self.take_dirty();
        let digest = Some(self.digest());
        let message = self.update(adverts, digest);
        self.outputs.push_back(Output::Broadcast(message));
        self.schedule_triggered(now);
    }
}

#[cfg(test)]
mod tests;
