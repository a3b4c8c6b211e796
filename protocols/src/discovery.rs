//! Neighbor discovery: periodic beacons and a neighbor table.
//!
//! Every node broadcasts a [`Beacon`] to its one-hop neighbors every `beacon_interval`
//! (jittered from the node's seed so that neighbors do not fall into lock-step). A beacon
//! carries a sequence number and, for each neighbor heard recently, the last sequence
//! heard from it and how long ago. From that a node learns, without extra messages:
//!
//! - **loss** on the link from the neighbor, from gaps in its sequence numbers;
//! - **RTT**, when the neighbor echoes one of our beacons: the time since we sent that
//!   beacon minus the time the neighbor held it (the NTP/OLSR trick);
//! - **bidirectionality**, because the echo proves the neighbor hears us.
//!
//! Echoes of every neighbor ride in one beacon of every [`ECHO_ALL_EVERY`]; the beacons
//! between carry only those of neighbors still new to us, whose link waits on the echo
//! to count as bidirectional. RTT needs no sample every second, and echoes were four
//! fifths of a beacon's bytes at a mean degree of 8.
//!
//! A neighbor not heard for `expiry` is removed. Outputs are the beacons to broadcast and
//! `NeighborUp` / `NeighborDown` events for the subsystems built on top.

use std::collections::{BTreeMap, VecDeque};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::{Millis, NodeId, ShortId};

/// At most this many echoes ride in one beacon, keeping beacons small in dense meshes.
pub const MAX_ECHOES_PER_BEACON: usize = 64;
/// One beacon in this many echoes every neighbor (see [`Beacon::echoes_all`]).
pub const ECHO_ALL_EVERY: u32 = 4;
/// A neighbor is echoed in every beacon until we have had this many of its beacons.
const NEW_NEIGHBOR_BEACONS: u64 = 2 * ECHO_ALL_EVERY as u64;
/// Beacons whose send time we remember, to match echoes for RTT.
const SENT_HISTORY: usize = 16;
/// Width of the sequence window loss is computed over.
const LOSS_WINDOW: u32 = 32;
/// Weight of a new RTT sample in the moving average.
const RTT_ALPHA: f64 = 0.25;

#[derive(Clone, Debug, PartialEq)]
pub struct DiscoveryConfig {
    /// Mean time between two beacons of this node.
    pub beacon_interval_ms: u64,
    /// Beacon times vary by up to ± this fraction of the interval.
    pub jitter: f64,
    /// A neighbor silent this long is removed.
    pub expiry_ms: u64,
    /// Neighbors beyond this count are ignored, bounding table memory against floods.
    pub max_neighbors: usize,
}

impl Default for DiscoveryConfig {
    fn default() -> Self {
        DiscoveryConfig {
            beacon_interval_ms: 1000,
            jitter: 0.1,
            expiry_ms: 3500,
            max_neighbors: 256,
        }
    }
}

/// What a node says to its neighbors every interval.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Beacon {
    pub seq: u32,
    pub echoes: Vec<Echo>,
}

impl Beacon {
    /// Whether this beacon echoes every neighbor of its sender, rather than only the
    /// new ones: what tells a receiver which of its neighbors the sender hears.
    pub fn echoes_all(&self) -> bool {
        echoes_all(self.seq)
    }
}

fn echoes_all(seq: u32) -> bool {
    seq.is_multiple_of(ECHO_ALL_EVERY)
}

/// "I last heard `seq` from `neighbor`, `held_ms` ago."
///
/// The neighbor is named by its short id: every beacon echoes every neighbor, every
/// second, so full ids made up three quarters of all beacon bytes. The receiver looks
/// for its own; the failure detector maps the rest onto neighbors it knows in full.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Echo {
    pub neighbor: ShortId,
    pub seq: u32,
    pub held_ms: u32,
}

/// One row of the neighbor table.
#[derive(Clone, Debug, PartialEq)]
pub struct Neighbor {
    pub id: NodeId,
    pub first_seen: Millis,
    pub last_seen: Millis,
    /// Last proof of life of any kind (a beacon, or an answered probe): what expiry
    /// goes by. `last_seen` stays the last beacon, which RTT echoes are timed from.
    pub last_alive: Millis,
    pub last_seq: u32,
    /// Smoothed round-trip time, once the neighbor has echoed one of our beacons.
    pub rtt_ms: Option<f64>,
    /// Whether the neighbor has echoed us, i.e. the link works both ways.
    pub bidirectional: bool,
    pub beacons_received: u64,
    /// Bit `i` set: beacon `last_seq - i` arrived.
    received_window: u32,
    /// How many sequence numbers the window covers so far (grows to `LOSS_WINDOW`).
    window_span: u32,
}

impl Neighbor {
    /// Fraction of this neighbor's recent beacons that did not arrive, in `[0, 1]`.
    pub fn loss(&self) -> f64 {
        if self.window_span == 0 {
            return 0.0;
        }
        let received = self.received_window.count_ones().min(self.window_span);
        1.0 - f64::from(received) / f64::from(self.window_span)
    }

    /// Loss as a fraction of a full window: what link costs use, so that one lost beacon
    /// among a new neighbor's first three does not read as 33% loss and upset routing.
    pub fn damped_loss(&self) -> f64 {
        let received = self.received_window.count_ones().min(self.window_span);
        f64::from(self.window_span - received) / f64::from(LOSS_WINDOW)
    }

    fn new(id: NodeId, now: Millis, seq: u32) -> Self {
        Neighbor {
            id,
            first_seen: now,
            last_seen: now,
            last_alive: now,
            last_seq: seq,
            rtt_ms: None,
            bidirectional: false,
            beacons_received: 1,
            received_window: 1,
            window_span: 1,
        }
    }

    /// Records that beacon `seq` arrived; returns false if it looks like a restart.
    fn record_seq(&mut self, seq: u32) -> bool {
        if seq > self.last_seq {
            let advance = seq - self.last_seq;
            self.received_window = if advance >= LOSS_WINDOW {
                0
            } else {
                self.received_window << advance
            } | 1;
            self.window_span = (self.window_span + advance).min(LOSS_WINDOW);
            self.last_seq = seq;
            true
        } else if self.last_seq - seq < LOSS_WINDOW {
            // Late or duplicate: fill its slot, the count cannot go above the span.
            self.received_window |= 1 << (self.last_seq - seq);
            true
        } else {
            false
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DiscoveryEvent {
    NeighborUp(NodeId),
    NeighborDown(NodeId),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Send this beacon to every one-hop neighbor.
    Broadcast(Beacon),
    Event(DiscoveryEvent),
}

/// Why a beacon was not taken into the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BeaconRejected {
    FromSelf,
    TableFull,
}

/// The discovery state machine of one node.
pub struct Discovery {
    me: NodeId,
    config: DiscoveryConfig,
    rng: ChaCha8Rng,
    next_seq: u32,
    next_beacon_at: Millis,
    sent: VecDeque<(u32, Millis)>,
    neighbors: BTreeMap<NodeId, Neighbor>,
    outputs: VecDeque<Output>,
}

impl Discovery {
    /// Starts discovery at `now`; the first beacon goes out within one interval, at a
    /// seeded random offset so nodes started together do not beacon together.
    pub fn new(me: NodeId, config: DiscoveryConfig, seed: u64, now: Millis) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let first = rng.random_range(0..=config.beacon_interval_ms.max(1));
        Discovery {
            me,
            config,
            rng,
            next_seq: 0,
            next_beacon_at: now.plus(first),
            sent: VecDeque::with_capacity(SENT_HISTORY),
            neighbors: BTreeMap::new(),
            outputs: VecDeque::new(),
        }
    }

    pub fn id(&self) -> NodeId {
        self.me
    }

    /// Takes a beacon that `from` sent (its signature already checked by the caller).
    pub fn handle_beacon(
        &mut self,
        now: Millis,
        from: NodeId,
        beacon: &Beacon,
    ) -> Result<(), BeaconRejected> {
        if from == self.me {
            return Err(BeaconRejected::FromSelf);
        }
        if !self.neighbors.contains_key(&from) {
            if self.neighbors.len() >= self.config.max_neighbors {
                return Err(BeaconRejected::TableFull);
            }
            self.neighbors
                .insert(from, Neighbor::new(from, now, beacon.seq));
            self.outputs
                .push_back(Output::Event(DiscoveryEvent::NeighborUp(from)));
        } else if let Some(neighbor) = self.neighbors.get_mut(&from) {
            if !neighbor.record_seq(beacon.seq) {
                // Sequence went far backwards: the neighbor restarted. Keep it up (it
                // never went silent) but start its statistics afresh.
                let first_seen = neighbor.first_seen;
                *neighbor = Neighbor::new(from, now, beacon.seq);
                neighbor.first_seen = first_seen;
            }
            neighbor.last_seen = now;
            neighbor.last_alive = neighbor.last_alive.max(now);
            neighbor.beacons_received += 1;
        }
        let me = ShortId::of(&self.me);
        if let Some(echo) = beacon.echoes.iter().find(|e| e.neighbor == me) {
            let sent_at = self
                .sent
                .iter()
                .find(|(seq, _)| *seq == echo.seq)
                .map(|(_, at)| *at);
            if let Some(neighbor) = self.neighbors.get_mut(&from) {
                neighbor.bidirectional = true;
                if let Some(sent_at) = sent_at {
                    let sample = now.since(sent_at).saturating_sub(u64::from(echo.held_ms)) as f64;
                    neighbor.rtt_ms = Some(match neighbor.rtt_ms {
                        Some(avg) => avg + RTT_ALPHA * (sample - avg),
                        None => sample,
                    });
                }
            }
        }
        Ok(())
    }

    /// Sends a beacon if one is due and expires silent neighbors.
    pub fn handle_timeout(&mut self, now: Millis) {
        let expiry = self.config.expiry_ms;
        let expired: Vec<NodeId> = self
            .neighbors
            .values()
            .filter(|n| now.since(n.last_alive) >= expiry)
            .map(|n| n.id)
            .collect();
        for id in expired {
            self.neighbors.remove(&id);
            self.outputs
                .push_back(Output::Event(DiscoveryEvent::NeighborDown(id)));
        }
        if now >= self.next_beacon_at {
            let beacon = self.make_beacon(now);
            self.outputs.push_back(Output::Broadcast(beacon));
            self.next_beacon_at = now.plus(self.jittered_interval());
        }
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// Other proof that `id` is alive (it answered a probe): postpones its expiry, so a
    /// run of lost beacons on a lossy link does not drop a neighbor that still answers.
    pub fn touch(&mut self, now: Millis, id: &NodeId) {
        if let Some(neighbor) = self.neighbors.get_mut(id) {
            neighbor.last_alive = neighbor.last_alive.max(now);
        }
    }

    /// Drops a neighbor the failure detector declared dead, before expiry would have;
    /// emits `NeighborDown`. A later beacon from it brings it back as a new neighbor.
    pub fn remove_neighbor(&mut self, id: &NodeId) -> bool {
        let removed = self.neighbors.remove(id).is_some();
        if removed {
            self.outputs
                .push_back(Output::Event(DiscoveryEvent::NeighborDown(*id)));
        }
        removed
    }

    /// When [`Discovery::handle_timeout`] should next be called.
    pub fn next_deadline(&self) -> Option<Millis> {
        let expiry = self
            .neighbors
            .values()
            .map(|n| n.last_alive.plus(self.config.expiry_ms))
            .min();
        Some(match expiry {
            Some(at) => at.min(self.next_beacon_at),
            None => self.next_beacon_at,
        })
    }

    pub fn neighbors(&self) -> impl Iterator<Item = &Neighbor> {
        self.neighbors.values()
    }

    pub fn neighbor(&self, id: &NodeId) -> Option<&Neighbor> {
        self.neighbors.get(id)
    }

    fn make_beacon(&mut self, now: Millis) -> Beacon {
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        if self.sent.len() == SENT_HISTORY {
            self.sent.pop_front();
        }
        self.sent.push_back((seq, now));
        // Echo the most recently heard neighbors first: they are the likeliest to be
        // waiting on an RTT sample, and the list is capped.
        let mut heard: Vec<&Neighbor> = self.neighbors.values().collect();
        heard.sort_by_key(|n| std::cmp::Reverse(n.last_seen));
        let all = echoes_all(seq);
        let echoes = heard
            .into_iter()
            .filter(|n| all || n.beacons_received < NEW_NEIGHBOR_BEACONS)
            .take(MAX_ECHOES_PER_BEACON)
            .map(|n| Echo {
                neighbor: ShortId::of(&n.id),
                seq: n.last_seq,
                held_ms: u32::try_from(now.since(n.last_seen)).unwrap_or(u32::MAX),
            })
            .collect();
        Beacon { seq, echoes }
    }

    fn jittered_interval(&mut self) -> u64 {
        let base = self.config.beacon_interval_ms as f64;
        let spread = base * self.config.jitter.clamp(0.0, 1.0);
        let offset = if spread > 0.0 {
            self.rng.random_range(-spread..=spread)
        } else {
            0.0
        };
        (base + offset).round().max(1.0) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn id(n: u8) -> NodeId {
        NodeId([n; 32])
    }

    fn drain(d: &mut Discovery) -> Vec<Output> {
        std::iter::from_fn(|| d.poll_output()).collect()
    }

    fn beacon(seq: u32) -> Beacon {
        Beacon {
            seq,
            echoes: vec![],
        }
    }

    #[test]
    fn first_beacon_is_within_one_interval_and_then_periodic() {
        let cfg = DiscoveryConfig::default();
        let mut d = Discovery::new(id(1), cfg.clone(), 7, Millis(0));
        let first = d.next_deadline().expect("deadline");
        assert!(first.0 <= cfg.beacon_interval_ms);
        d.handle_timeout(first);
        assert!(matches!(
            drain(&mut d)[..],
            [Output::Broadcast(Beacon { seq: 0, .. })]
        ));
        let second = d.next_deadline().expect("deadline");
        let gap = second.since(first);
        assert!((900..=1100).contains(&gap), "gap {gap}");
    }

    #[test]
    fn neighbor_appears_then_expires() {
        let mut d = Discovery::new(id(1), DiscoveryConfig::default(), 1, Millis(0));
        d.handle_beacon(Millis(10), id(2), &beacon(0))
            .expect("accepted");
        assert_eq!(
            drain(&mut d),
            vec![Output::Event(DiscoveryEvent::NeighborUp(id(2)))]
        );
        d.handle_timeout(Millis(3000));
        assert!(d.neighbor(&id(2)).is_some());
        d.handle_timeout(Millis(3510));
        assert!(d.neighbor(&id(2)).is_none());
        assert!(drain(&mut d).contains(&Output::Event(DiscoveryEvent::NeighborDown(id(2)))));
    }

    #[test]
    fn own_beacons_and_overflow_are_refused() {
        let cfg = DiscoveryConfig {
            max_neighbors: 1,
            ..DiscoveryConfig::default()
        };
        let mut d = Discovery::new(id(1), cfg, 1, Millis(0));
        assert_eq!(
            d.handle_beacon(Millis(0), id(1), &beacon(0)),
            Err(BeaconRejected::FromSelf)
        );
        d.handle_beacon(Millis(0), id(2), &beacon(0))
            .expect("first fits");
        assert_eq!(
            d.handle_beacon(Millis(0), id(3), &beacon(0)),
            Err(BeaconRejected::TableFull)
        );
    }

    #[test]
    fn loss_counts_sequence_gaps() {
        let mut d = Discovery::new(id(1), DiscoveryConfig::default(), 1, Millis(0));
        // Seqs 0..10 with 2, 5 and 7 missing: 3 of 10 lost.
        for seq in (0..10).filter(|s| ![2, 5, 7].contains(s)) {
            d.handle_beacon(Millis(u64::from(seq) * 1000), id(2), &beacon(seq))
                .expect("accepted");
        }
        let loss = d.neighbor(&id(2)).expect("present").loss();
        assert!((loss - 0.3).abs() < 1e-9, "loss {loss}");
        let damped = d.neighbor(&id(2)).expect("present").damped_loss();
        assert!((damped - 3.0 / 32.0).abs() < 1e-9, "damped {damped}");
        // A late arrival fills its gap.
        d.handle_beacon(Millis(9500), id(2), &beacon(5))
            .expect("accepted");
        let loss = d.neighbor(&id(2)).expect("present").loss();
        assert!((loss - 0.2).abs() < 1e-9, "loss {loss}");
    }

    #[test]
    fn every_neighbor_is_echoed_in_one_beacon_of_four_and_new_ones_in_all() {
        let mut d = Discovery::new(id(1), DiscoveryConfig::default(), 1, Millis(0));
        let mut now = Millis(0);
        let echoed = |d: &mut Discovery, now: Millis| {
            d.handle_timeout(now);
            let Some(Output::Broadcast(sent)) = drain(d)
                .into_iter()
                .find(|o| matches!(o, Output::Broadcast(_)))
            else {
                panic!("no beacon at {now:?}");
            };
            let mut echoed: Vec<ShortId> = sent.echoes.iter().map(|e| e.neighbor).collect();
            echoed.sort();
            (sent.echoes_all(), echoed)
        };
        // 2 is an old neighbor by the time 3 appears.
        for seq in 0..NEW_NEIGHBOR_BEACONS as u32 {
            now = now.plus(1000);
            d.handle_beacon(now, id(2), &beacon(seq)).expect("accepted");
        }
        d.handle_beacon(now, id(3), &beacon(0)).expect("accepted");
        let both = {
            let mut v = vec![ShortId::of(&id(2)), ShortId::of(&id(3))];
            v.sort();
            v
        };
        let mut kinds = vec![];
        for k in 0..ECHO_ALL_EVERY {
            now = now.plus(1000);
            d.handle_beacon(now, id(2), &beacon(NEW_NEIGHBOR_BEACONS as u32 + k))
                .expect("accepted");
            d.handle_beacon(now, id(3), &beacon(k + 1))
                .expect("accepted");
            let (all, echoed) = echoed(&mut d, now.plus(1100));
            now = now.plus(1100);
            match all {
                true => assert_eq!(echoed, both),
                false => assert_eq!(echoed, vec![ShortId::of(&id(3))], "only the new one"),
            }
            kinds.push(all);
        }
        assert_eq!(kinds.iter().filter(|&&all| all).count(), 1, "{kinds:?}");
    }

    #[test]
    fn rtt_comes_from_echoes_minus_hold_time() {
        let mut a = Discovery::new(id(1), DiscoveryConfig::default(), 1, Millis(0));
        let at = a.next_deadline().expect("deadline");
        a.handle_timeout(at);
        let Some(Output::Broadcast(sent)) = a.poll_output() else {
            panic!("expected a beacon");
        };
        // b receives it 20 ms later, holds it 300 ms, its echo arrives 20 ms after that.
        let echo = Beacon {
            seq: 0,
            echoes: vec![Echo {
                neighbor: ShortId::of(&id(1)),
                seq: sent.seq,
                held_ms: 300,
            }],
        };
        a.handle_beacon(at.plus(340), id(2), &echo)
            .expect("accepted");
        let n = a.neighbor(&id(2)).expect("present");
        assert_eq!(n.rtt_ms, Some(40.0));
        assert!(n.bidirectional);
    }

    #[test]
    fn a_restarted_neighbor_stays_up_with_fresh_statistics() {
        let mut d = Discovery::new(id(1), DiscoveryConfig::default(), 1, Millis(0));
        d.handle_beacon(Millis(0), id(2), &beacon(500))
            .expect("accepted");
        d.handle_beacon(Millis(1000), id(2), &beacon(0))
            .expect("accepted");
        let n = d.neighbor(&id(2)).expect("present");
        assert_eq!(n.last_seq, 0);
        assert_eq!(n.loss(), 0.0);
    }

    /// Inputs for the model-based property test below.
    #[derive(Debug, Clone)]
    enum Step {
        Beacon { from: u8, seq: u32, advance: u64 },
        Tick { advance: u64 },
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            (2u8..8, 0u32..200, 0u64..2000).prop_map(|(from, seq, advance)| Step::Beacon {
                from,
                seq,
                advance
            }),
            (0u64..5000).prop_map(|advance| Step::Tick { advance }),
        ]
    }

    proptest! {
        /// Whatever arrives in whatever order: the table never holds us, never holds a
        /// neighbor past expiry after a timeout, loss stays a fraction, and Up/Down events
        /// alternate per neighbor and agree with the table.
        #[test]
        fn table_invariants_hold(steps in proptest::collection::vec(step(), 1..200)) {
            let cfg = DiscoveryConfig::default();
            let mut d = Discovery::new(id(1), cfg.clone(), 3, Millis(0));
            let mut now = Millis(0);
            let mut up: BTreeMap<NodeId, bool> = BTreeMap::new();
            for s in steps {
                match s {
                    Step::Beacon { from, seq, advance } => {
                        now = now.plus(advance);
                        let _ = d.handle_beacon(now, id(from), &beacon(seq));
                    }
                    Step::Tick { advance } => {
                        now = now.plus(advance);
                        d.handle_timeout(now);
                        for n in d.neighbors() {
                            prop_assert!(now.since(n.last_seen) < cfg.expiry_ms);
                        }
                    }
                }
                while let Some(out) = d.poll_output() {
                    match out {
                        Output::Event(DiscoveryEvent::NeighborUp(n)) => {
                            prop_assert!(!up.get(&n).copied().unwrap_or(false));
                            up.insert(n, true);
                        }
                        Output::Event(DiscoveryEvent::NeighborDown(n)) => {
                            prop_assert!(up.get(&n).copied().unwrap_or(false));
                            up.insert(n, false);
                        }
                        Output::Broadcast(_) => {}
                    }
                }
                prop_assert!(d.neighbor(&id(1)).is_none());
                for n in d.neighbors() {
                    prop_assert!((0.0..=1.0).contains(&n.loss()));
                    prop_assert_eq!(up.get(&n.id).copied(), Some(true));
                }
            }
        }

        /// Two nodes exchanging every beacon always end up knowing each other, with a
        /// link both ways and an RTT equal to twice the one-way delay.
        #[test]
        fn two_nodes_discover_each_other(seed in any::<u64>(), delay in 1u64..200) {
            let cfg = DiscoveryConfig::default();
            let mut nodes = [
                Discovery::new(id(1), cfg.clone(), seed, Millis(0)),
                Discovery::new(id(2), cfg, seed.wrapping_add(1), Millis(0)),
            ];
            let mut in_flight: Vec<(Millis, usize, Beacon)> = vec![];
            let mut now = Millis(0);
            while now < Millis(10_000) {
                for (i, node) in nodes.iter_mut().enumerate() {
                    node.handle_timeout(now);
                    while let Some(out) = node.poll_output() {
                        if let Output::Broadcast(b) = out {
                            in_flight.push((now.plus(delay), 1 - i, b));
                        }
                    }
                }
                let (due, later): (Vec<_>, Vec<_>) = in_flight.into_iter().partition(|(at, _, _)| *at <= now);
                in_flight = later;
                for (_, to, b) in due {
                    let from = nodes[1 - to].id();
                    nodes[to].handle_beacon(now, from, &b).expect("accepted");
                }
                now = now.plus(1);
            }
            for (i, node) in nodes.iter().enumerate() {
                let other = nodes[1 - i].id();
                let n = node.neighbor(&other).expect("knows the other");
                prop_assert!(n.bidirectional);
                let rtt = n.rtt_ms.expect("has an rtt");
                prop_assert!((rtt - 2.0 * delay as f64).abs() <= 1.0, "rtt {} delay {}", rtt, delay);
            }
        }
    }
}
