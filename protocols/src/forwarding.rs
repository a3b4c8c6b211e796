//! Multi-hop forwarding of end-to-end messages over the routing table.
//!
//! The origin signs a [`Kind::Data`](crate::Kind) envelope once; it travels unchanged
//! inside per-hop [`Relay`] wrappers that carry the mutable part (the hop count). So a relay
//! can count hops without breaking the origin's signature, and the destination can check
//! that the origin really wrote what it receives, however many relays it crossed.
//!
//! Each relay drops what it has already seen (duplicate suppression by `(origin, id)`)
//! and what has run out of hops, and says why, so operators can see where traffic dies.
//! What it has no route for, or could not hand to a next hop that died, it parks for a
//! few seconds: the route is usually being repaired, and the message goes on when it is.
//! Sans-IO: the caller supplies the next hop and the time.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use crate::{Envelope, EnvelopeError, Identity, Kind, Millis, NodeId};

/// Which subsystem at the destination a message is for. Application messages go to
/// whoever embeds the node; the others are the node's own traffic between subsystems
/// that talk across several hops (Raft among validators that are not neighbors).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Service {
    #[default]
    App,
    Ledger,
    /// End-to-end sealed messages and the key exchange they need
    /// ([`crate::e2e::E2eMessage`]). Delivered to the application once opened, marked
    /// with this service so it knows the message arrived sealed.
    E2e,
}

/// What the origin signs: who it is for, a per-origin message id, and the bytes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Data {
    pub destination: NodeId,
    pub id: u64,
    pub service: Service,
    pub payload: Vec<u8>,
}

/// One hop's wrapper around the origin's encoded, signed `Data` envelope.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Relay {
    pub origin: NodeId,
    pub destination: NodeId,
    pub id: u64,
    /// Links this message may cross at most, set by the origin.
    pub hop_limit: u8,
    /// Links it has crossed, counting the one it arrived over.
    pub hops: u8,
    /// The origin's envelope, exactly as it signed it.
    pub inner: Vec<u8>,
}

/// A message that reached its destination with its origin's signature intact.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivered {
    pub origin: NodeId,
    pub id: u64,
    pub service: Service,
    pub payload: Vec<u8>,
    /// Links it crossed.
    pub hops: u8,
    /// What the message is (kind, file name, MIME type, checksum), for messages that
    /// arrived sealed end to end; `None` for plain ones.
    pub content: Option<crate::e2e::ContentMeta>,
}

/// Why a relay addressed to us was refused at the destination.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    #[error("inner envelope: {0}")]
    Envelope(#[from] EnvelopeError),
    #[error("inner envelope is a {0:?}, not data")]
    NotData(Kind),
    #[error("relay names an origin other than the inner envelope's signer")]
    OriginMismatch,
    #[error("message is addressed to another node or carries another id than its relay")]
    HeaderMismatch,
}

impl OpenError {
    /// A stable lowercase name, used as a metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            OpenError::Envelope(e) => e.reason(),
            OpenError::NotData(_) => "not_data",
            OpenError::OriginMismatch => "origin_mismatch",
            OpenError::HeaderMismatch => "header_mismatch",
        }
    }
}

/// Seals `data` as the origin: what [`Forwarder::originate`] carries.
pub fn seal_data(identity: &Identity, data: &Data) -> Vec<u8> {
    Envelope::seal_message(identity, Kind::Data, data).encode()
}

/// Checks a relay that [`Forwarder`] delivered to `me`: the inner envelope must be data
/// signed by the relay's origin and agree with the relay's header, so no relay on the way
/// can have forged or redirected it.
pub fn open(me: NodeId, relay: Relay) -> Result<Delivered, OpenError> {
    let envelope = Envelope::decode(&relay.inner)?;
    if envelope.kind != Kind::Data {
        return Err(OpenError::NotData(envelope.kind));
    }
    if envelope.from != relay.origin {
        return Err(OpenError::OriginMismatch);
    }
    envelope.verify()?;
    let data: Data = envelope.decode_payload()?;
    if data.destination != me || data.id != relay.id || relay.destination != me {
        return Err(OpenError::HeaderMismatch);
    }
    Ok(Delivered {
        origin: relay.origin,
        id: data.id,
        service: data.service,
        payload: data.payload,
        hops: relay.hops,
        content: None,
    })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum DropReason {
    Duplicate,
    HopLimit,
    NoRoute,
}

impl DropReason {
    pub fn name(self) -> &'static str {
        match self {
            DropReason::Duplicate => "duplicate",
            DropReason::HopLimit => "hop_limit",
            DropReason::NoRoute => "no_route",
        }
    }
}

/// What to do with a relay.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// It is for us: check `inner`'s signature and hand it to the application.
    Deliver(Relay),
    /// Send this (hop count already raised) to `next_hop`.
    Forward {
        next_hop: NodeId,
        relay: Relay,
    },
    Drop(DropReason),
    /// No route now: kept until one appears ([`Forwarder::unpark`]) or the wait ends.
    Parked,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ForwardingConfig {
    /// Hops a message may take at most.
    pub hop_limit: u8,
    /// How long a seen `(origin, id)` is remembered.
    pub dedup_window_ms: u64,
    /// At most this many remembered ids; the oldest go first.
    pub dedup_capacity: usize,
    /// Link-layer retries: a relay unacknowledged by the next hop within
    /// `ack_timeout_ms` is sent again, up to this many times in all. Loss on a mesh is per
    /// hop, so without this a message over five 1%-loss hops arrives only 95% of the time;
    /// duplicates from lost acks are suppressed by the next hop's duplicate cache.
    pub link_attempts: u8,
    pub ack_timeout_ms: u64,
    /// How long a relay without a route waits for one. A failure is detected in about a
    /// second and repaired soon after, and a message parked for that long still arrives
    /// instead of being dropped at the hop before the failure. 0 drops at once.
    pub park_ms: u64,
    /// Relays parked at most; beyond it the oldest is dropped.
    pub park_capacity: usize,
}

impl Default for ForwardingConfig {
    fn default() -> Self {
        ForwardingConfig {
            hop_limit: 64,
            dedup_window_ms: 60_000,
            dedup_capacity: 65_536,
            link_attempts: 3,
            ack_timeout_ms: 250,
            park_ms: 5_000,
            park_capacity: 256,
        }
    }
}

/// Per-node forwarding state: the duplicate cache and counters.
pub struct Forwarder {
    me: NodeId,
    config: ForwardingConfig,
    next_id: u64,
    seen: BTreeMap<(NodeId, u64), Millis>,
    seen_order: VecDeque<(Millis, NodeId, u64)>,
    /// Relays waiting for a route, oldest first, with when they were parked.
    parked: VecDeque<(Millis, Relay)>,
    /// Messages of others passed on.
    pub relayed: u64,
    /// Bytes of the origins' envelopes this node passed on for others.
    pub relayed_bytes: u64,
    pub delivered: u64,
    pub dropped: BTreeMap<DropReason, u64>,
    /// Relays that had to wait for a route, and those of them that went on.
    pub parked_total: u64,
    pub resumed: u64,
    /// Parked relays dropped (expired or pushed out) since the driver last asked.
    parked_drops_unreported: u64,
}

impl Forwarder {
    /// `first_id` should differ across restarts (the actor seeds it from its RNG), so
    /// a restarted origin's new messages are not taken for duplicates of old ones.
    pub fn new(me: NodeId, config: ForwardingConfig, first_id: u64) -> Self {
        Forwarder {
            me,
            config,
            next_id: first_id,
            seen: BTreeMap::new(),
            seen_order: VecDeque::new(),
            parked: VecDeque::new(),
            relayed: 0,
            relayed_bytes: 0,
            delivered: 0,
            dropped: BTreeMap::new(),
            parked_total: 0,
            resumed: 0,
            parked_drops_unreported: 0,
        }
    }

    /// Starts a message of ours: the `Data` to sign, and then [`Forwarder::originate`].
    pub fn new_data(&mut self, destination: NodeId, service: Service, payload: Vec<u8>) -> Data {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        Data {
            destination,
            id,
            service,
            payload,
        }
    }

    /// Wraps our signed `Data` envelope for its first hop.
    pub fn originate(
        &mut self,
        now: Millis,
        data: &Data,
        signed: Vec<u8>,
        next_hop: Option<NodeId>,
    ) -> Decision {
        let relay = Relay {
            origin: self.me,
            destination: data.destination,
            id: data.id,
            hop_limit: self.config.hop_limit,
            hops: 1,
            inner: signed,
        };
        self.remember(now, self.me, data.id);
        if data.destination == self.me {
            self.delivered += 1;
            return Decision::Deliver(relay);
        }
        match next_hop {
            Some(next_hop) => Decision::Forward { next_hop, relay },
            None => self.drop(DropReason::NoRoute),
        }
    }

    /// Keeps a relay that has no next hop now until a route to its destination appears.
    pub fn park(&mut self, now: Millis, relay: Relay) -> Decision {
        self.expire_parked(now);
        if self.config.park_ms == 0 || self.config.park_capacity == 0 {
            return self.drop(DropReason::NoRoute);
        }
        if self.parked.len() >= self.config.park_capacity {
            self.parked.pop_front();
            self.drop(DropReason::NoRoute);
            self.parked_drops_unreported += 1;
        }
        self.parked.push_back((now, relay));
        self.parked_total += 1;
        Decision::Parked
    }

    /// The parked relays for `destination`, now that it has a route again.
    pub fn unpark(&mut self, now: Millis, destination: &NodeId) -> Vec<Relay> {
        self.expire_parked(now);
        let mut ready = Vec::new();
        self.parked.retain(|(_, relay)| {
            let go = relay.destination == *destination;
            if go {
                ready.push(relay.clone());
            }
            !go
        });
        self.resumed += ready.len() as u64;
        for relay in &ready {
            if relay.origin != self.me {
                self.relayed += 1;
                self.relayed_bytes += relay.inner.len() as u64;
            }
        }
        ready
    }

    /// Relays waiting for a route.
    pub fn parked(&self) -> usize {
        self.parked.len()
    }

    /// Drops the relays that waited the whole of `park_ms` in vain.
    pub fn expire_parked(&mut self, now: Millis) {
        while let Some((at, _)) = self.parked.front() {
            if now.since(*at) < self.config.park_ms {
                break;
            }
            self.parked.pop_front();
            self.drop(DropReason::NoRoute);
            self.parked_drops_unreported += 1;
        }
    }

    /// Parked relays dropped since the last call: they leave without a decision, so
    /// the driver counts them from here.
    pub fn take_parked_drops(&mut self) -> u64 {
        std::mem::take(&mut self.parked_drops_unreported)
    }

    /// Decides what to do with a relay that arrived from a neighbor.
    pub fn handle_relay(
        &mut self,
        now: Millis,
        relay: Relay,
        next_hop: Option<NodeId>,
    ) -> Decision {
        self.expire(now);
        if self.seen.contains_key(&(relay.origin, relay.id)) {
            return self.drop(DropReason::Duplicate);
        }
        self.remember(now, relay.origin, relay.id);
        if relay.destination == self.me {
            self.delivered += 1;
            return Decision::Deliver(relay);
        }
        if relay.hops >= relay.hop_limit {
            return self.drop(DropReason::HopLimit);
        }
        let relay = Relay {
            hops: relay.hops + 1,
            ..relay
        };
        self.route(now, relay, next_hop)
    }

    fn route(&mut self, now: Millis, relay: Relay, next_hop: Option<NodeId>) -> Decision {
        match next_hop {
            Some(next_hop) => {
                self.relayed += 1;
                self.relayed_bytes += relay.inner.len() as u64;
                Decision::Forward { next_hop, relay }
            }
            None => self.park(now, relay),
        }
    }

    fn drop(&mut self, reason: DropReason) -> Decision {
        *self.dropped.entry(reason).or_default() += 1;
        Decision::Drop(reason)
    }

    fn remember(&mut self, now: Millis, origin: NodeId, id: u64) {
        if self.seen.insert((origin, id), now).is_none() {
            self.seen_order.push_back((now, origin, id));
        }
        while self.seen_order.len() > self.config.dedup_capacity {
            if let Some((_, o, i)) = self.seen_order.pop_front() {
                self.seen.remove(&(o, i));
            }
        }
    }

    fn expire(&mut self, now: Millis) {
        while let Some(&(at, origin, id)) = self.seen_order.front() {
            if now.since(at) < self.config.dedup_window_ms {
                break;
            }
            self.seen_order.pop_front();
            self.seen.remove(&(origin, id));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn id(n: u8) -> NodeId {
        NodeId([n; 32])
    }

    fn relay(origin: u8, destination: u8, msg: u64, hops: u8) -> Relay {
        Relay {
            origin: id(origin),
            destination: id(destination),
            id: msg,
            hop_limit: 5,
            hops,
            inner: vec![1, 2, 3],
        }
    }

    #[test]
    fn forwards_toward_the_next_hop_and_counts_a_hop() {
        let mut f = Forwarder::new(id(2), ForwardingConfig::default(), 0);
        match f.handle_relay(Millis(0), relay(1, 3, 7, 1), Some(id(3))) {
            Decision::Forward { next_hop, relay } => {
                assert_eq!(next_hop, id(3));
                assert_eq!(relay.hops, 2);
                assert_eq!(relay.inner, vec![1, 2, 3], "the signed part is untouched");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(f.relayed, 1);
    }

    #[test]
    fn delivers_what_is_ours_once() {
        let mut f = Forwarder::new(id(3), ForwardingConfig::default(), 0);
        assert!(matches!(
            f.handle_relay(Millis(0), relay(1, 3, 7, 5), None),
            Decision::Deliver(_)
        ));
        assert_eq!(
            f.handle_relay(Millis(10), relay(1, 3, 7, 5), None),
            Decision::Drop(DropReason::Duplicate)
        );
        assert_eq!(f.delivered, 1);
    }

    #[test]
    fn drops_say_why() {
        let mut f = Forwarder::new(id(2), ForwardingConfig::default(), 0);
        assert_eq!(
            f.handle_relay(Millis(0), relay(1, 9, 1, 5), Some(id(9))),
            Decision::Drop(DropReason::HopLimit)
        );
        assert_eq!(f.dropped.get(&DropReason::HopLimit), Some(&1));
        let config = ForwardingConfig {
            park_ms: 0,
            ..ForwardingConfig::default()
        };
        let mut f = Forwarder::new(id(2), config, 0);
        assert_eq!(
            f.handle_relay(Millis(0), relay(1, 9, 2, 1), None),
            Decision::Drop(DropReason::NoRoute)
        );
        assert_eq!(f.dropped.get(&DropReason::NoRoute), Some(&1));
    }

    #[test]
    fn a_relay_without_a_route_waits_for_one() {
        let config = ForwardingConfig::default();
        let park_ms = config.park_ms;
        let mut f = Forwarder::new(id(2), config, 0);
        assert_eq!(
            f.handle_relay(Millis(0), relay(1, 9, 1, 1), None),
            Decision::Parked
        );
        assert_eq!(
            f.handle_relay(Millis(10), relay(1, 8, 2, 1), None),
            Decision::Parked
        );
        assert_eq!(f.unpark(Millis(20), &id(7)), vec![]);
        let ready = f.unpark(Millis(20), &id(9));
        assert_eq!(ready, vec![relay(1, 9, 1, 2)], "its hop counted once");
        assert_eq!((f.relayed, f.parked_total, f.resumed), (1, 2, 1));
        // The other waits in vain and is dropped.
        f.expire_parked(Millis(10 + park_ms));
        assert_eq!(f.parked(), 0);
        assert_eq!(f.unpark(Millis(10 + park_ms), &id(8)), vec![]);
        assert_eq!(f.dropped.get(&DropReason::NoRoute), Some(&1));
    }

    #[test]
    fn parking_is_bounded() {
        let config = ForwardingConfig {
            park_capacity: 2,
            ..ForwardingConfig::default()
        };
        let mut f = Forwarder::new(id(2), config, 0);
        for msg in 0..3 {
            f.handle_relay(Millis(0), relay(1, 9, msg, 1), None);
        }
        assert_eq!(f.parked(), 2);
        assert_eq!(f.dropped.get(&DropReason::NoRoute), Some(&1));
        assert_eq!(f.take_parked_drops(), 1);
        assert_eq!(f.take_parked_drops(), 0);
        let ids: Vec<u64> = f.unpark(Millis(0), &id(9)).iter().map(|r| r.id).collect();
        assert_eq!(ids, vec![1, 2], "the oldest went first");
    }

    #[test]
    fn the_destination_opens_what_the_origin_sealed_and_nothing_forged() {
        let origin = Identity::from_seed([1; 32]);
        let forger = Identity::from_seed([2; 32]);
        let me = Identity::from_seed([3; 32]).id();
        let mut f = Forwarder::new(origin.id(), ForwardingConfig::default(), 40);
        let data = f.new_data(me, Service::App, b"hello".to_vec());
        let Decision::Forward { relay, .. } =
            f.originate(Millis(0), &data, seal_data(&origin, &data), Some(id(9)))
        else {
            panic!("a route was given");
        };
        let delivered = open(me, relay.clone()).expect("genuine message opens");
        assert_eq!(delivered.payload, b"hello");
        assert_eq!(
            (delivered.origin, delivered.id, delivered.hops),
            (origin.id(), 40, 1)
        );

        let forged = Relay {
            inner: seal_data(&forger, &data),
            ..relay.clone()
        };
        assert_eq!(open(me, forged), Err(OpenError::OriginMismatch));
        let redirected = Relay {
            id: 41,
            ..relay.clone()
        };
        assert_eq!(open(me, redirected), Err(OpenError::HeaderMismatch));
        let mut tampered = relay.clone();
        let last = tampered.inner.len() - 70;
        tampered.inner[last] ^= 1;
        assert!(open(me, tampered).is_err());
        assert_eq!(open(id(4), relay), Err(OpenError::HeaderMismatch));
    }

    #[test]
    fn ids_are_forgotten_after_the_window() {
        let config = ForwardingConfig::default();
        let window = config.dedup_window_ms;
        let mut f = Forwarder::new(id(3), config, 0);
        f.handle_relay(Millis(0), relay(1, 3, 7, 5), None);
        assert!(matches!(
            f.handle_relay(Millis(window + 1), relay(1, 3, 7, 5), None),
            Decision::Deliver(_)
        ));
    }

    proptest! {
        /// A message forwarded along any chain of relays, some of which see it twice,
        /// reaches its destination at most once and never takes more hops than allowed.
        #[test]
        fn at_most_once_and_within_the_hop_limit(
            path_len in 1usize..80,
            repeats in proptest::collection::vec(any::<bool>(), 40),
        ) {
            let config = ForwardingConfig::default();
            let limit = config.hop_limit;
            let nodes: Vec<NodeId> = (0..=path_len as u8).map(|n| id(n + 1)).collect();
            let mut forwarders: Vec<Forwarder> =
                nodes.iter().map(|n| Forwarder::new(*n, config.clone(), 0)).collect();
            let destination = *nodes.last().expect("non-empty");
            let mut origin = Forwarder::new(nodes[0], config.clone(), 0);
            let data = origin.new_data(destination, Service::App, b"hi".to_vec());
            let mut decision = origin.originate(Millis(0), &data, vec![], Some(nodes.get(1).copied().unwrap_or(destination)));
            let mut hops = 0u32;
            let mut deliveries = 0;
            let mut at = 1usize;
            while let Decision::Forward { relay, .. } = decision.clone() {
                hops += 1;
                prop_assert!(hops <= u32::from(limit));
                let next = nodes.get(at + 1).copied();
                decision = forwarders[at].handle_relay(Millis(hops.into()), relay.clone(), next);
                if repeats[at % repeats.len()] {
                    // The same relay arrives again: it must not go anywhere twice.
                    prop_assert_eq!(forwarders[at].handle_relay(Millis(hops.into()), relay, next), Decision::Drop(DropReason::Duplicate));
                }
                if let Decision::Deliver(_) = decision { deliveries += 1; }
                at += 1;
            }
            prop_assert!(deliveries <= 1);
            prop_assert_eq!(deliveries == 1, path_len <= usize::from(limit));
        }
    }
}
