//! Failure detection of one-hop neighbors, after SWIM with Lifeguard's refinements.
//!
//! Missed beacons alone make a poor death certificate: on a lossy radio link a few
//! beacons in a row go missing now and then, and tearing the link down for that churns
//! routing for nothing. So when the driver notices a neighbor has gone quiet, this detector
//! *probes* it the SWIM way: a direct `Ping`, and at the same time `PingReq`s asking a few
//! other neighbors to ping it on our behalf. Any ack, direct or relayed, clears it. Only a
//! probe round that nobody answers makes it **suspected**, and only a suspicion that lasts
//! makes it **dead**; meanwhile we keep probing, so one more lucky packet saves the link.
//!
//! SWIM assumes every member can reach every other; a mesh node only reaches its
//! neighbors. So helpers are picked among our neighbors that *say they hear the target*
//! (two-hop knowledge from their beacons), falling back to any neighbor only when none does.
//!
//! From Lifeguard (Dadgar et al., 2018) come two refinements that keep a node with its own
//! problems (a saturated CPU, a bad radio) from accusing healthy neighbors:
//!
//! - **Local health.** When a probe round gets no answer at all, not even the `Nack`s that
//!   helpers send when *they* cannot reach the target, the silence is more likely ours than
//!   the target's. Each such round raises a local health multiplier that stretches our probe
//!   timeouts; each direct ack lowers it again.
//! - **Dynamic suspicion.** A suspicion starts long and shrinks logarithmically with each
//!   independent helper confirming it cannot reach the target either, so a real failure seen
//!   from several sides is acted on quickly, and a lonely suspicion gets time to be refuted.
//!
//! Every answer is matched by nonce, so a replayed old ack cannot keep a dead neighbor alive.
//! Sans-IO like every protocol here.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::{Millis, NodeId};

/// Indirect probes we run for others at once; requests beyond it are dropped, so a flood of
/// `PingReq`s costs a bounded amount of memory and pings.
pub const MAX_PENDING_RELAYS: usize = 256;
/// Entries kept from one neighbor's list of who it hears: a hostile neighbor cannot grow it.
const MAX_TWO_HOP: usize = 256;
/// Past probe rounds of one target kept to match late answers; two are alive at most in
/// practice (a round is settled one probe timeout after the next one starts).
const ROUNDS_KEPT: usize = 4;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FailureConfig {
    /// How long to wait for an ack (direct or indirect) before a probe round counts as
    /// failed; scaled by the local health multiplier (LHM+1).
    pub probe_timeout_ms: u64,
    /// Helpers asked to probe the target indirectly.
    pub indirect_probes: usize,
    /// Suspicion timeout with `confirmations` independent confirmations.
    pub suspicion_min_ms: u64,
    /// Suspicion timeout with no confirmation.
    pub suspicion_max_ms: u64,
    /// Confirmations that bring the suspicion timeout down to its minimum (Lifeguard's K).
    pub confirmations: u32,
    /// Upper bound of the local health multiplier.
    pub max_health: u32,
    /// For the driver: a neighbor unheard for this long gets probed
    /// ([`FailureDetector::suspect_silence`]). A little over one beacon interval, so one
    /// lost beacon triggers a cheap probe instead of waiting for expiry.
    pub silence_ms: u64,
}

impl Default for FailureConfig {
    fn default() -> Self {
        FailureConfig {
            probe_timeout_ms: 200,
            indirect_probes: 3,
            suspicion_min_ms: 300,
            suspicion_max_ms: 900,
            confirmations: 3,
            max_health: 8,
            silence_ms: 1150,
        }
    }
}

impl FailureConfig {
    /// Lifeguard's suspicion timeout after `confirmations` independent confirmations:
    /// `max(min, max − (max − min) · ln(C+1)/ln(K+1))`. Logarithmic, so the first
    /// confirmations count most: they are the ones that tell "I lost it" from "we all did".
    pub fn suspicion_timeout_ms(&self, confirmations: u32) -> u64 {
        let min = self.suspicion_min_ms;
        let max = self.suspicion_max_ms.max(min);
        if confirmations >= self.confirmations {
            return min;
        }
        let fraction =
            (f64::from(confirmations) + 1.0).ln() / (f64::from(self.confirmations) + 1.0).ln();
        let timeout = max as f64 - (max - min) as f64 * fraction;
        (timeout.round() as u64).clamp(min, max)
    }

    /// A zero timeout would make a round expire the instant it starts and spin the driver.
    fn probe_timeout(&self) -> u64 {
        self.probe_timeout_ms.max(1)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SwimMessage {
    Ping {
        nonce: u32,
    },
    Ack {
        nonce: u32,
    },
    /// "Please ping `target` for me and tell me if it answers."
    PingReq {
        target: NodeId,
        nonce: u32,
    },
    /// `target` answered the ping made on the requester's behalf.
    IndirectAck {
        target: NodeId,
        nonce: u32,
    },
    /// The helper could not reach the target in time (`adjacent: true`), or is not its
    /// neighbor (`adjacent: false`).
    Nack {
        target: NodeId,
        nonce: u32,
        adjacent: bool,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    Send(NodeId, SwimMessage),
    /// Probing failed: the neighbor is now suspected.
    Suspect(NodeId),
    /// A suspected neighbor answered or was heard from: suspicion refuted.
    Alive(NodeId),
    /// Suspicion timed out: declare the neighbor failed (the caller removes the link).
    Dead(NodeId),
}

/// One probe round: a direct ping plus the ping requests sent with it, all under one nonce.
#[derive(Clone, Debug)]
struct Round {
    nonce: u32,
    helpers: Vec<NodeId>,
    /// When the round's helpers have had time to answer even if the round itself timed
    /// out: only then can "nobody answered" be held against our own health.
    settle_at: Millis,
    /// A helper answered (a `Nack` of either kind), so the helpers can hear us.
    answered: bool,
}

/// A neighbor under probing, possibly suspected.
#[derive(Clone, Debug)]
struct Probe {
    suspected_since: Option<Millis>,
    /// A helper reached the target while we could not: the node lives, our link to it
    /// may not. Direct answers are what count for a link, so this does not refute, but
    /// it buys the link a longer suspicion before it is declared down.
    reached_indirectly: bool,
    /// Distinct helpers that reported they could not reach the target either.
    confirmations: BTreeSet<NodeId>,
    /// When the newest round fails.
    deadline: Millis,
    /// Newest last; older ones stay until settled so their late answers still count.
    rounds: VecDeque<Round>,
}

#[derive(Clone, Debug, Default)]
struct Peer {
    /// Who this neighbor says it hears: the helpers worth asking to probe those nodes.
    theirs: BTreeSet<NodeId>,
    probe: Option<Probe>,
}

/// A ping we run on someone else's behalf, keyed in the table by our own ping's nonce.
#[derive(Clone, Debug)]
struct Relay {
    requester: NodeId,
    target: NodeId,
    their_nonce: u32,
    deadline: Millis,
}

/// The failure detector of one node, over its one-hop neighbors.
pub struct FailureDetector {
    me: NodeId,
    config: FailureConfig,
    rng: ChaCha8Rng,
    next_nonce: u32,
    health: u32,
    neighbors: BTreeMap<NodeId, Peer>,
    relays: BTreeMap<u32, Relay>,
    outputs: VecDeque<Output>,
}

impl FailureDetector {
    pub fn new(me: NodeId, config: FailureConfig, seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        // A seeded random start keeps a restarted node from reusing the nonces its
        // neighbors may still have in flight from before.
        let next_nonce = rng.random();
        FailureDetector {
            me,
            config,
            rng,
            next_nonce,
            health: 0,
            neighbors: BTreeMap::new(),
            relays: BTreeMap::new(),
            outputs: VecDeque::new(),
        }
    }

    pub fn id(&self) -> NodeId {
        self.me
    }

    /// Starts watching `id`. Already known: nothing changes, so an ongoing probe survives.
    pub fn add_neighbor(&mut self, _now: Millis, id: NodeId) {
        if id != self.me {
            self.neighbors.entry(id).or_default();
        }
    }

    /// Forget a neighbor (link gone for another reason); no output.
    pub fn remove_neighbor(&mut self, id: NodeId) {
        self.neighbors.remove(&id);
        // Its requests would only be answered into a link that no longer exists.
        self.relays.retain(|_, r| r.requester != id);
    }

    /// Two-hop knowledge: which nodes `neighbor` says it hears (from its beacons). Used to
    /// pick helpers adjacent to a target.
    pub fn set_neighbors_of(&mut self, neighbor: NodeId, theirs: Vec<NodeId>) {
        if let Some(peer) = self.neighbors.get_mut(&neighbor) {
            peer.theirs = theirs
                .into_iter()
                .filter(|n| *n != neighbor)
                .take(MAX_TWO_HOP)
                .collect();
        }
    }

    /// Any authenticated message from `id` arrived (a beacon, an update): proof of life.
    /// Ends probing/suspicion of it (emits `Alive` if it was suspected).
    pub fn heard_from(&mut self, _now: Millis, id: NodeId) {
        self.refute(id, false);
    }

    /// The driver noticed `id` has gone quiet (e.g. missed beacons): start a probe round
    /// now. No-op if already probing/suspected or not a neighbor.
    pub fn suspect_silence(&mut self, now: Millis, id: NodeId) {
        if self.neighbors.get(&id).is_some_and(|p| p.probe.is_none()) {
            self.start_round(now, id);
        }
    }

    pub fn handle_message(&mut self, now: Millis, from: NodeId, message: SwimMessage) {
        if from == self.me {
            return;
        }
        match message {
            // Answering costs no state, and a node that just came up must be able to
            // check its links before it knows who its neighbors are.
            SwimMessage::Ping { nonce } => {
                self.outputs
                    .push_back(Output::Send(from, SwimMessage::Ack { nonce }));
            }
            // Everything else would make us keep state or probe for a stranger.
            _ if !self.neighbors.contains_key(&from) => {}
            SwimMessage::Ack { nonce } => self.handle_ack(from, nonce),
            SwimMessage::PingReq { target, nonce } => {
                self.handle_ping_req(now, from, target, nonce);
            }
            SwimMessage::IndirectAck { target, nonce } => {
                let Some(round) = self.round_mut(&target, nonce, &from) else {
                    return;
                };
                round.answered = true;
                if let Some(probe) = self.probe_mut(&target) {
                    probe.reached_indirectly = true;
                }
            }
            SwimMessage::Nack {
                target,
                nonce,
                adjacent,
            } => {
                let Some(round) = self.round_mut(&target, nonce, &from) else {
                    return;
                };
                round.answered = true;
                if adjacent {
                    if let Some(probe) = self.probe_mut(&target) {
                        probe.confirmations.insert(from);
                    }
                    self.expire_if_due(now, target);
                }
            }
        }
    }

    pub fn handle_timeout(&mut self, now: Millis) {
        let due: Vec<u32> = self
            .relays
            .iter()
            .filter(|(_, r)| r.deadline <= now)
            .map(|(nonce, _)| *nonce)
            .collect();
        for nonce in due {
            if let Some(relay) = self.relays.remove(&nonce) {
                self.outputs.push_back(Output::Send(
                    relay.requester,
                    SwimMessage::Nack {
                        target: relay.target,
                        nonce: relay.their_nonce,
                        adjacent: true,
                    },
                ));
            }
        }
        let probing: Vec<NodeId> = self
            .neighbors
            .iter()
            .filter(|(_, p)| p.probe.is_some())
            .map(|(id, _)| *id)
            .collect();
        for id in probing {
            self.advance(now, id);
        }
    }

    /// When [`FailureDetector::handle_timeout`] should next be called.
    pub fn next_deadline(&self) -> Option<Millis> {
        let relays = self.relays.values().map(|r| r.deadline);
        let probes = self
            .neighbors
            .values()
            .filter_map(|p| p.probe.as_ref())
            .flat_map(|probe| {
                let expiry = self.suspicion_expiry(probe);
                std::iter::once(probe.deadline)
                    .chain(expiry)
                    .chain(probe.rounds.iter().map(|r| r.settle_at))
            });
        relays.chain(probes).min()
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// Lifeguard's local health multiplier, 0..=max_health: 0 is healthy.
    pub fn health(&self) -> u32 {
        self.health
    }

    pub fn is_suspected(&self, id: &NodeId) -> bool {
        self.neighbors
            .get(id)
            .and_then(|p| p.probe.as_ref())
            .is_some_and(|probe| probe.suspected_since.is_some())
    }

    fn handle_ack(&mut self, from: NodeId, nonce: u32) {
        if self.relays.get(&nonce).is_some_and(|r| r.target == from) {
            if let Some(relay) = self.relays.remove(&nonce) {
                self.outputs.push_back(Output::Send(
                    relay.requester,
                    SwimMessage::IndirectAck {
                        target: from,
                        nonce: relay.their_nonce,
                    },
                ));
            }
            // It answered a ping of ours, fresh by its nonce: as good a sign of life for
            // our own probing as an ack to it, though it says nothing of our health.
            self.refute(from, false);
            return;
        }
        let ours = self
            .neighbors
            .get(&from)
            .and_then(|p| p.probe.as_ref())
            .is_some_and(|probe| probe.rounds.iter().any(|r| r.nonce == nonce));
        if ours {
            self.refute(from, true);
        }
    }

    fn handle_ping_req(&mut self, now: Millis, from: NodeId, target: NodeId, nonce: u32) {
        if target == self.me {
            // We are the target and evidently alive; no need to ping ourselves.
            self.outputs.push_back(Output::Send(
                from,
                SwimMessage::IndirectAck { target, nonce },
            ));
            return;
        }
        if !self.neighbors.contains_key(&target) {
            // Said at once, so the requester counts us as an answer (its own links work)
            // but not as a confirmation (we could not have reached the target anyway).
            self.outputs.push_back(Output::Send(
                from,
                SwimMessage::Nack {
                    target,
                    nonce,
                    adjacent: false,
                },
            ));
            return;
        }
        let duplicate = self
            .relays
            .values()
            .any(|r| r.requester == from && r.target == target && r.their_nonce == nonce);
        if duplicate || self.relays.len() >= MAX_PENDING_RELAYS {
            return;
        }
        let ours = self.fresh_nonce();
        self.outputs
            .push_back(Output::Send(target, SwimMessage::Ping { nonce: ours }));
        self.relays.insert(
            ours,
            Relay {
                requester: from,
                target,
                their_nonce: nonce,
                deadline: now.plus(self.config.probe_timeout()),
            },
        );
    }

    /// Settles old rounds, fails the current one if due, and ends the suspicion if due.
    fn advance(&mut self, now: Millis, id: NodeId) {
        let Some(probe) = self.neighbors.get_mut(&id).and_then(|p| p.probe.as_mut()) else {
            return;
        };
        let mut missed = 0u32;
        while let Some(round) = probe.rounds.pop_front() {
            if round.settle_at > now {
                probe.rounds.push_front(round);
                break;
            }
            // With no helper asked, silence tells nothing about us: the target alone was
            // quiet, which is what we are trying to find out about.
            if !round.answered && !round.helpers.is_empty() {
                missed += 1;
            }
        }
        let timed_out = now >= probe.deadline;
        if timed_out && probe.suspected_since.is_none() {
            probe.suspected_since = Some(now);
            self.outputs.push_back(Output::Suspect(id));
        }
        self.health = self
            .health
            .saturating_add(missed)
            .min(self.config.max_health);
        if self.expire_if_due(now, id) {
            return;
        }
        if timed_out {
            // Keep trying while suspected: a lossy link should lose a round, not the link.
            self.start_round(now, id);
        }
    }

    fn start_round(&mut self, now: Millis, target: NodeId) {
        let helpers = self.choose_helpers(target);
        let nonce = self.fresh_nonce();
        self.outputs
            .push_back(Output::Send(target, SwimMessage::Ping { nonce }));
        for helper in &helpers {
            self.outputs.push_back(Output::Send(
                *helper,
                SwimMessage::PingReq { target, nonce },
            ));
        }
        let probe_timeout = self.config.probe_timeout();
        let deadline = now.plus(probe_timeout.saturating_mul(u64::from(self.health) + 1));
        // Helpers wait one (unscaled) probe timeout before they nack, so their nacks
        // arrive after a healthy node's round deadline; give them that long again.
        let settle_at = deadline.plus(probe_timeout);
        let Some(peer) = self.neighbors.get_mut(&target) else {
            return;
        };
        let probe = peer.probe.get_or_insert_with(|| Probe {
            suspected_since: None,
            reached_indirectly: false,
            confirmations: BTreeSet::new(),
            deadline,
            rounds: VecDeque::new(),
        });
        probe.deadline = deadline;
        probe.rounds.push_back(Round {
            nonce,
            helpers,
            settle_at,
            answered: false,
        });
        if probe.rounds.len() > ROUNDS_KEPT {
            probe.rounds.pop_front();
        }
    }

    /// Up to `indirect_probes` other neighbors, seeded-random so that the load and the
    /// trust spread over all of them; those that hear the target first, since only they
    /// can reach it in one hop.
    fn choose_helpers(&mut self, target: NodeId) -> Vec<NodeId> {
        let others = self.neighbors.iter().filter(|(id, _)| **id != target);
        let mut pool: Vec<NodeId> = others
            .clone()
            .filter(|(_, p)| p.theirs.contains(&target))
            .map(|(id, _)| *id)
            .collect();
        if pool.is_empty() {
            // They will most likely say they are not adjacent, but an answer at all still
            // tells our own health apart from the target's.
            pool = others.map(|(id, _)| *id).collect();
        }
        let count = self.config.indirect_probes.min(pool.len());
        for i in 0..count {
            let j = self.rng.random_range(i..pool.len());
            pool.swap(i, j);
        }
        pool.truncate(count);
        pool
    }

    /// Ends the probing of `id`, which showed signs of life.
    fn refute(&mut self, id: NodeId, direct: bool) {
        let Some(probe) = self.neighbors.get_mut(&id).and_then(|p| p.probe.take()) else {
            return;
        };
        if probe.suspected_since.is_some() {
            self.outputs.push_back(Output::Alive(id));
        }
        if direct {
            self.health = self.health.saturating_sub(1);
        }
    }

    /// Declares `id` dead if its suspicion has run out; returns whether it did.
    fn expire_if_due(&mut self, now: Millis, id: NodeId) -> bool {
        let due = self
            .neighbors
            .get(&id)
            .and_then(|p| p.probe.as_ref())
            .and_then(|probe| self.suspicion_expiry(probe))
            .is_some_and(|at| now >= at);
        if due {
            self.remove_neighbor(id);
            self.outputs.push_back(Output::Dead(id));
        }
        due
    }

    fn suspicion_expiry(&self, probe: &Probe) -> Option<Millis> {
        let confirmations = u32::try_from(probe.confirmations.len()).unwrap_or(u32::MAX);
        let timeout = if probe.reached_indirectly {
            // Alive elsewhere: only a link that stays silent through many direct
            // rounds is down, not one that lost a few pings.
            self.config.suspicion_max_ms.saturating_mul(2)
        } else {
            self.config.suspicion_timeout_ms(confirmations)
        };
        probe.suspected_since.map(|since| since.plus(timeout))
    }

    fn probe_mut(&mut self, target: &NodeId) -> Option<&mut Probe> {
        self.neighbors
            .get_mut(target)
            .and_then(|p| p.probe.as_mut())
    }

    /// The round of `target` with this nonce, if `helper` was one of those asked in it.
    fn round_mut(&mut self, target: &NodeId, nonce: u32, helper: &NodeId) -> Option<&mut Round> {
        self.probe_mut(target)?
            .rounds
            .iter_mut()
            .find(|r| r.nonce == nonce && r.helpers.contains(helper))
    }

    fn fresh_nonce(&mut self) -> u32 {
        let nonce = self.next_nonce;
        self.next_nonce = nonce.wrapping_add(1);
        nonce
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The timings these tests were written against, pinned so that tuning the
    /// defaults does not silently change what they check.
    fn pinned() -> FailureConfig {
        FailureConfig {
            probe_timeout_ms: 200,
            indirect_probes: 3,
            suspicion_min_ms: 400,
            suspicion_max_ms: 1200,
            confirmations: 3,
            max_health: 8,
            silence_ms: 1500,
        }
    }
    use proptest::prelude::*;
    // Both globs above bring an `Rng`; this one is the one the harness means.
    use rand::Rng;

    fn id(n: u8) -> NodeId {
        NodeId([n; 32])
    }

    fn drain(d: &mut FailureDetector) -> Vec<Output> {
        std::iter::from_fn(|| d.poll_output()).collect()
    }

    /// Node 1 with the given neighbors.
    fn detector(config: FailureConfig, neighbors: &[u8]) -> FailureDetector {
        let mut d = FailureDetector::new(id(1), config, 7);
        for n in neighbors {
            d.add_neighbor(Millis(0), id(*n));
        }
        d
    }

    /// Fires every deadline up to `until`, returning the outputs with when they appeared.
    fn run(d: &mut FailureDetector, until: Millis) -> Vec<(Millis, Output)> {
        let mut out = vec![];
        while let Some(at) = d.next_deadline().filter(|at| *at <= until) {
            d.handle_timeout(at);
            out.extend(drain(d).into_iter().map(|o| (at, o)));
        }
        out
    }

    fn last_ping_to(outputs: &[Output], target: NodeId) -> u32 {
        outputs
            .iter()
            .rev()
            .find_map(|o| match o {
                Output::Send(to, SwimMessage::Ping { nonce }) if *to == target => Some(*nonce),
                _ => None,
            })
            .expect("a ping to the target")
    }

    fn ping_reqs(outputs: &[Output]) -> BTreeSet<NodeId> {
        outputs
            .iter()
            .filter_map(|o| match o {
                Output::Send(to, SwimMessage::PingReq { .. }) => Some(*to),
                _ => None,
            })
            .collect()
    }

    fn only(outputs: Vec<(Millis, Output)>) -> Vec<Output> {
        outputs.into_iter().map(|(_, o)| o).collect()
    }

    #[test]
    fn ping_is_answered_with_ack_even_from_a_stranger() {
        let mut d = detector(pinned(), &[2]);
        d.handle_message(Millis(0), id(2), SwimMessage::Ping { nonce: 5 });
        d.handle_message(Millis(0), id(9), SwimMessage::Ping { nonce: 6 });
        assert_eq!(
            drain(&mut d),
            vec![
                Output::Send(id(2), SwimMessage::Ack { nonce: 5 }),
                Output::Send(id(9), SwimMessage::Ack { nonce: 6 }),
            ]
        );
    }

    #[test]
    fn strangers_get_nothing_but_acks() {
        let mut d = detector(pinned(), &[2]);
        d.handle_message(
            Millis(0),
            id(9),
            SwimMessage::PingReq {
                target: id(2),
                nonce: 1,
            },
        );
        d.handle_message(Millis(0), id(9), SwimMessage::Ack { nonce: 1 });
        assert!(drain(&mut d).is_empty());
        assert_eq!(d.next_deadline(), None);
    }

    #[test]
    fn silent_target_is_suspected_then_dead_at_the_unconfirmed_timeout() {
        let mut d = detector(pinned(), &[2]);
        d.suspect_silence(Millis(0), id(2));
        let first = drain(&mut d);
        assert!(matches!(first[..], [Output::Send(to, SwimMessage::Ping { .. })] if to == id(2)));
        let out = run(&mut d, Millis(5000));
        let events: Vec<(Millis, Output)> = out
            .iter()
            .filter(|(_, o)| !matches!(o, Output::Send(..)))
            .cloned()
            .collect();
        // Suspected when the first round times out, dead `suspicion_max_ms` later.
        assert_eq!(
            events,
            vec![
                (Millis(200), Output::Suspect(id(2))),
                (Millis(1400), Output::Dead(id(2))),
            ]
        );
        // It kept probing while suspected.
        let pings = out
            .iter()
            .filter(|(_, o)| matches!(o, Output::Send(_, SwimMessage::Ping { .. })))
            .count();
        assert!(pings >= 5, "{pings} pings");
        assert_eq!(d.next_deadline(), None);
        assert!(!d.is_suspected(&id(2)));
        // It is gone: silence about it is no longer our business.
        d.suspect_silence(Millis(5000), id(2));
        assert!(drain(&mut d).is_empty());
    }

    #[test]
    fn an_ack_during_suspicion_refutes_it() {
        let mut d = detector(pinned(), &[2]);
        d.suspect_silence(Millis(0), id(2));
        drain(&mut d);
        let out = only(run(&mut d, Millis(300)));
        assert!(out.contains(&Output::Suspect(id(2))));
        assert!(d.is_suspected(&id(2)));
        let nonce = last_ping_to(&out, id(2));
        d.handle_message(Millis(300), id(2), SwimMessage::Ack { nonce });
        assert_eq!(drain(&mut d), vec![Output::Alive(id(2))]);
        assert!(!d.is_suspected(&id(2)));
        assert!(run(&mut d, Millis(10_000)).is_empty());
    }

    #[test]
    fn an_ack_with_a_wrong_nonce_proves_nothing() {
        let mut d = detector(pinned(), &[2]);
        d.suspect_silence(Millis(0), id(2));
        let nonce = last_ping_to(&drain(&mut d), id(2));
        d.handle_message(
            Millis(10),
            id(2),
            SwimMessage::Ack {
                nonce: nonce.wrapping_add(1000),
            },
        );
        assert!(drain(&mut d).is_empty());
        assert!(only(run(&mut d, Millis(5000))).contains(&Output::Dead(id(2))));
    }

    #[test]
    fn heard_from_refutes_suspicion() {
        let mut d = detector(pinned(), &[2]);
        d.suspect_silence(Millis(0), id(2));
        run(&mut d, Millis(300));
        drain(&mut d);
        assert!(d.is_suspected(&id(2)));
        d.heard_from(Millis(300), id(2));
        assert_eq!(drain(&mut d), vec![Output::Alive(id(2))]);
        assert!(run(&mut d, Millis(10_000)).is_empty());
        // While merely probing, life ends the round quietly.
        d.suspect_silence(Millis(10_000), id(2));
        drain(&mut d);
        d.heard_from(Millis(10_050), id(2));
        assert!(drain(&mut d).is_empty());
        assert_eq!(d.next_deadline(), None);
    }

    #[test]
    fn helpers_adjacent_to_the_target_are_preferred() {
        let mut d = detector(pinned(), &[2, 3, 4, 5, 6, 7]);
        d.set_neighbors_of(id(4), vec![id(2), id(9)]);
        d.set_neighbors_of(id(6), vec![id(2)]);
        d.suspect_silence(Millis(0), id(2));
        assert_eq!(ping_reqs(&drain(&mut d)), BTreeSet::from([id(4), id(6)]));
        // No one hears 3: any three of the others.
        d.suspect_silence(Millis(0), id(3));
        let helpers = ping_reqs(&drain(&mut d));
        assert_eq!(helpers.len(), 3);
        assert!(!helpers.contains(&id(3)));
    }

    #[test]
    fn three_adjacent_nacks_shorten_suspicion_to_the_minimum() {
        let mut d = detector(pinned(), &[2, 3, 4, 5]);
        for h in [3, 4, 5] {
            d.set_neighbors_of(id(h), vec![id(2)]);
        }
        d.suspect_silence(Millis(0), id(2));
        let first = drain(&mut d);
        assert_eq!(ping_reqs(&first), BTreeSet::from([id(3), id(4), id(5)]));
        let nonce = last_ping_to(&first, id(2));
        assert!(only(run(&mut d, Millis(200))).contains(&Output::Suspect(id(2))));
        let nack = SwimMessage::Nack {
            target: id(2),
            nonce,
            adjacent: true,
        };
        // A neighbor we did not ask cannot confirm anything.
        d.handle_message(Millis(240), id(2), nack.clone());
        for h in [3, 4, 5] {
            d.handle_message(Millis(250), id(h), nack.clone());
            // Repeating oneself is not independent confirmation.
            d.handle_message(Millis(250), id(h), nack.clone());
        }
        assert!(drain(&mut d).is_empty());
        assert!(!only(run(&mut d, Millis(599))).contains(&Output::Dead(id(2))));
        assert_eq!(
            only(run(&mut d, Millis(600)))
                .into_iter()
                .filter(|o| !matches!(o, Output::Send(..)))
                .collect::<Vec<_>>(),
            vec![Output::Dead(id(2))]
        );
    }

    #[test]
    fn suspicion_timeout_shrinks_logarithmically() {
        let cfg = pinned();
        assert_eq!(cfg.suspicion_timeout_ms(0), 1200);
        assert_eq!(cfg.suspicion_timeout_ms(1), 800);
        assert_eq!(cfg.suspicion_timeout_ms(2), 566);
        assert_eq!(cfg.suspicion_timeout_ms(3), 400);
        assert_eq!(cfg.suspicion_timeout_ms(30), 400);
        let no_k = FailureConfig {
            confirmations: 0,
            ..cfg
        };
        assert_eq!(no_k.suspicion_timeout_ms(0), 400);
    }

    #[test]
    fn helper_relays_an_ack_and_nacks_on_timeout() {
        // Node 1 helps requester 2 probe target 3.
        let mut d = detector(pinned(), &[2, 3]);
        d.handle_message(
            Millis(0),
            id(2),
            SwimMessage::PingReq {
                target: id(3),
                nonce: 7,
            },
        );
        let ours = last_ping_to(&drain(&mut d), id(3));
        d.handle_message(Millis(10), id(3), SwimMessage::Ack { nonce: ours });
        assert_eq!(
            drain(&mut d),
            vec![Output::Send(
                id(2),
                SwimMessage::IndirectAck {
                    target: id(3),
                    nonce: 7
                }
            )]
        );
        assert_eq!(d.next_deadline(), None);

        d.handle_message(
            Millis(20),
            id(2),
            SwimMessage::PingReq {
                target: id(3),
                nonce: 8,
            },
        );
        drain(&mut d);
        assert_eq!(d.next_deadline(), Some(Millis(220)));
        assert_eq!(
            only(run(&mut d, Millis(1000))),
            vec![Output::Send(
                id(2),
                SwimMessage::Nack {
                    target: id(3),
                    nonce: 8,
                    adjacent: true
                }
            )]
        );
    }

    #[test]
    fn non_adjacent_helper_nacks_at_once() {
        let mut d = detector(pinned(), &[2]);
        d.handle_message(
            Millis(0),
            id(2),
            SwimMessage::PingReq {
                target: id(3),
                nonce: 4,
            },
        );
        assert_eq!(
            drain(&mut d),
            vec![Output::Send(
                id(2),
                SwimMessage::Nack {
                    target: id(3),
                    nonce: 4,
                    adjacent: false
                }
            )]
        );
        assert_eq!(d.next_deadline(), None);
    }

    #[test]
    fn pending_relays_are_bounded() {
        let mut d = detector(pinned(), &[2, 3]);
        for nonce in 0..1000 {
            d.handle_message(
                Millis(0),
                id(2),
                SwimMessage::PingReq {
                    target: id(3),
                    nonce,
                },
            );
        }
        assert_eq!(drain(&mut d).len(), MAX_PENDING_RELAYS);
        assert_eq!(run(&mut d, Millis(1000)).len(), MAX_PENDING_RELAYS);
    }

    #[test]
    fn an_indirect_ack_delays_but_does_not_refute_a_silent_link() {
        let mut d = detector(pinned(), &[2, 3]);
        d.set_neighbors_of(id(3), vec![id(2)]);
        d.suspect_silence(Millis(0), id(2));
        let nonce = last_ping_to(&drain(&mut d), id(2));
        run(&mut d, Millis(200));
        assert!(d.is_suspected(&id(2)));
        // A late answer to the first round still counts: 2 lives, reached through 3.
        d.handle_message(
            Millis(250),
            id(3),
            SwimMessage::IndirectAck {
                target: id(2),
                nonce,
            },
        );
        assert!(
            !drain(&mut d).contains(&Output::Alive(id(2))),
            "the link is still silent"
        );
        // Without it the link would be down at 200 + 1200 ms; alive elsewhere, it gets
        // twice the longest suspicion of direct silence.
        let dead =
            |outputs: &[(Millis, Output)]| outputs.iter().any(|(_, o)| *o == Output::Dead(id(2)));
        let outputs = run(&mut d, Millis(1_500));
        assert!(!dead(&outputs), "{outputs:?}");
        let outputs = run(&mut d, Millis(2_700));
        assert!(dead(&outputs), "{outputs:?}");
    }

    #[test]
    fn health_rises_when_nobody_answers_and_falls_on_acks() {
        let cfg = FailureConfig {
            max_health: 2,
            suspicion_min_ms: 60_000,
            suspicion_max_ms: 60_000,
            ..pinned()
        };
        let mut d = detector(cfg, &[2, 3]);
        d.set_neighbors_of(id(3), vec![id(2)]);
        d.suspect_silence(Millis(0), id(2));
        let mut healths = vec![];
        let mut now = Millis(0);
        while now < Millis(10_000) {
            now = d.next_deadline().expect("still probing");
            d.handle_timeout(now);
            healths.push(d.health());
        }
        assert!(healths.windows(2).all(|w| w[0] <= w[1]), "{healths:?}");
        assert_eq!(d.health(), 2);
        drain(&mut d);

        // Rounds are stretched by the multiplier...
        d.heard_from(now, id(2));
        d.suspect_silence(now, id(3));
        let nonce = last_ping_to(&drain(&mut d), id(3));
        assert_eq!(d.next_deadline(), Some(now.plus(600)));
        // ...and every direct ack brings it down by one, to zero at most.
        d.handle_message(now, id(3), SwimMessage::Ack { nonce });
        assert_eq!(d.health(), 1);
        for expected in [0, 0] {
            d.suspect_silence(now, id(3));
            let nonce = last_ping_to(&drain(&mut d), id(3));
            d.handle_message(now, id(3), SwimMessage::Ack { nonce });
            assert_eq!(d.health(), expected);
        }
    }

    #[test]
    fn helper_nacks_keep_health_steady() {
        let mut d = detector(pinned(), &[2, 3]);
        d.set_neighbors_of(id(3), vec![id(2)]);
        d.suspect_silence(Millis(0), id(2));
        let mut nonce = last_ping_to(&drain(&mut d), id(2));
        let mut now = Millis(0);
        while let Some(at) = d.next_deadline() {
            now = at;
            d.handle_timeout(now);
            let out = drain(&mut d);
            if out.contains(&Output::Dead(id(2))) {
                break;
            }
            // The helper's nack for the round that just failed comes after its deadline,
            // as a real helper's would: it still shows the helper hears us.
            d.handle_message(
                now.plus(30),
                id(3),
                SwimMessage::Nack {
                    target: id(2),
                    nonce,
                    adjacent: true,
                },
            );
            nonce = last_ping_to(&out, id(2));
            assert_eq!(d.health(), 0);
        }
        assert_eq!(d.health(), 0);
        // One confirmation: dead 800 ms after the suspicion began at 200.
        assert_eq!(now, Millis(1000));
    }

    // ---- A tiny mesh to check the detector end to end. ----

    const TICK_MS: u64 = 1000;

    /// A ring of six where every node also reaches two hops around (so each link has two
    /// common neighbors to probe through), plus node 6 hanging off node 0 alone (probing it
    /// falls back to helpers that cannot reach it, and it has no helper at all).
    fn topology() -> Vec<Vec<usize>> {
        let mut links = vec![Vec::new(); 7];
        for i in 0..6 {
            for step in [1, 2] {
                let j = (i + step) % 6;
                links[i].push(j);
                links[j].push(i);
            }
        }
        links[0].push(6);
        links[6].push(0);
        for l in &mut links {
            l.sort_unstable();
            l.dedup();
        }
        links
    }

    fn node(i: usize) -> NodeId {
        id(u8::try_from(i + 1).expect("small mesh"))
    }

    fn index(n: NodeId) -> usize {
        usize::from(n.0[0]) - 1
    }

    struct Mesh {
        nodes: Vec<FailureDetector>,
        links: Vec<Vec<usize>>,
        /// Whom each node's detector currently watches, as the harness's discovery sees it.
        known: Vec<BTreeSet<usize>>,
        crash: Option<(Millis, usize)>,
        crashed: Option<usize>,
        /// Ordered by delivery time: the latency is fixed and time only moves forward.
        in_flight: VecDeque<(Millis, usize, usize, SwimMessage)>,
        rng: ChaCha8Rng,
        loss: f64,
        latency: u64,
        next_tick: Millis,
        suspected: BTreeSet<(usize, usize)>,
        /// (when, declared by, declared dead)
        deaths: Vec<(Millis, usize, usize)>,
    }

    impl Mesh {
        fn new(seed: u64, loss: f64, latency: u64, crash: Option<(Millis, usize)>) -> Self {
            let links = topology();
            let nodes = (0..links.len())
                .map(|i| FailureDetector::new(node(i), pinned(), seed.wrapping_add(i as u64)))
                .collect();
            let mut mesh = Mesh {
                nodes,
                known: vec![BTreeSet::new(); links.len()],
                links,
                crash,
                crashed: None,
                in_flight: VecDeque::new(),
                rng: ChaCha8Rng::seed_from_u64(seed ^ 0x5eed),
                loss,
                latency,
                next_tick: Millis(TICK_MS),
                suspected: BTreeSet::new(),
                deaths: vec![],
            };
            for i in 0..mesh.links.len() {
                for j in mesh.links[i].clone() {
                    mesh.connect(Millis(0), i, j);
                }
            }
            mesh
        }

        fn connect(&mut self, now: Millis, i: usize, j: usize) {
            self.nodes[i].add_neighbor(now, node(j));
            let theirs = self.links[j].iter().map(|k| node(*k)).collect();
            self.nodes[i].set_neighbors_of(node(j), theirs);
            self.known[i].insert(j);
        }

        fn up(&self, i: usize) -> bool {
            self.crashed != Some(i)
        }

        fn run_until(&mut self, end: Millis) {
            loop {
                let mut now = self.next_tick;
                if let Some((at, ..)) = self.in_flight.front() {
                    now = now.min(*at);
                }
                if let (Some((at, _)), None) = (self.crash, self.crashed) {
                    now = now.min(at);
                }
                for (i, d) in self.nodes.iter().enumerate() {
                    if let Some(at) = d.next_deadline().filter(|_| self.up(i)) {
                        now = now.min(at);
                    }
                }
                if now > end {
                    return;
                }
                self.step(now);
            }
        }

        fn step(&mut self, now: Millis) {
            let crashing = self
                .crash
                .filter(|(at, _)| *at <= now && self.crashed.is_none());
            if let Some((_, c)) = crashing {
                self.crashed = Some(c);
                self.in_flight.retain(|m| m.1 != c);
            }
            while self.in_flight.front().is_some_and(|m| m.0 <= now) {
                let Some((_, from, to, message)) = self.in_flight.pop_front() else {
                    break;
                };
                if self.up(to) {
                    self.nodes[to].handle_message(now, node(from), message);
                }
            }
            for i in 0..self.nodes.len() {
                if self.up(i) && self.nodes[i].next_deadline().is_some_and(|at| at <= now) {
                    self.nodes[i].handle_timeout(now);
                    assert!(
                        self.nodes[i].next_deadline().is_none_or(|at| at > now),
                        "a deadline left in the past would spin the driver"
                    );
                }
            }
            if now >= self.next_tick {
                self.tick(now);
                self.next_tick = self.next_tick.plus(TICK_MS);
            }
            for i in 0..self.nodes.len() {
                while let Some(out) = self.nodes[i].poll_output() {
                    if !self.up(i) {
                        continue;
                    }
                    match out {
                        Output::Send(to, message) => {
                            if !self.rng.random_bool(self.loss) {
                                self.in_flight.push_back((
                                    now.plus(self.latency),
                                    i,
                                    index(to),
                                    message,
                                ));
                            }
                        }
                        Output::Suspect(j) => {
                            assert!(self.suspected.insert((i, index(j))), "suspected twice");
                        }
                        Output::Alive(j) => {
                            assert!(self.suspected.remove(&(i, index(j))), "alive unsuspected");
                        }
                        Output::Dead(j) => {
                            assert!(self.suspected.remove(&(i, index(j))), "dead unsuspected");
                            assert!(!self.nodes[i].is_suspected(&j));
                            self.known[i].remove(&index(j));
                            self.deaths.push((now, i, index(j)));
                        }
                    }
                }
            }
        }

        /// What a beacon driver would do once a second: a crashed neighbor has missed its
        /// beacons; a live one has with probability `loss`; a live one declared dead is
        /// rediscovered from its next beacon.
        fn tick(&mut self, now: Millis) {
            for i in 0..self.nodes.len() {
                if !self.up(i) {
                    continue;
                }
                for j in self.links[i].clone() {
                    if !self.up(j) {
                        self.nodes[i].suspect_silence(now, node(j));
                    } else if !self.known[i].contains(&j) {
                        self.connect(now, i, j);
                    } else if self.rng.random_bool(self.loss) {
                        self.nodes[i].suspect_silence(now, node(j));
                    }
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        /// A crash is noticed at the first beacon tick after it; from there every neighbor
        /// declares the node dead within one probe round at the worst local health plus the
        /// longest suspicion, whatever the loss.
        #[test]
        fn a_crashed_node_is_declared_dead_by_every_neighbor(
            seed in any::<u64>(),
            loss in 0.0f64..=0.2,
            crashed in 0usize..7,
            crash_second in 2u64..20,
            latency in 1u64..=40,
        ) {
            let cfg = pinned();
            let crash_at = Millis(crash_second * TICK_MS + TICK_MS / 2);
            let noticed = Millis((crash_second + 1) * TICK_MS);
            let bound = cfg.probe_timeout_ms * (u64::from(cfg.max_health) + 1)
                + cfg.suspicion_max_ms;
            let mut mesh = Mesh::new(seed, loss, latency, Some((crash_at, crashed)));
            mesh.run_until(noticed.plus(bound));
            for &i in &mesh.links[crashed] {
                // Any declaration counts: one made falsely just before the crash stands,
                // since a crashed node is never rediscovered.
                prop_assert!(
                    mesh.deaths.iter().any(|(_, by, dead)| *by == i && *dead == crashed),
                    "node {} never declared {} dead (deaths {:?})", i, crashed, mesh.deaths
                );
            }
        }

        /// Ten minutes of a lossy mesh with nobody crashing: beacons are missed and probes
        /// lost all the time, yet no live neighbor is ever declared dead.
        #[test]
        fn live_neighbors_are_not_declared_dead(
            seed in any::<u64>(),
            loss in 0.0f64..=0.05,
            latency in 1u64..=40,
        ) {
            let mut mesh = Mesh::new(seed, loss, latency, None);
            mesh.run_until(Millis(600_000));
            prop_assert!(mesh.deaths.is_empty(), "false deaths {:?}", mesh.deaths);
        }
    }
}
