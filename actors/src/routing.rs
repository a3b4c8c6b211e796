//! The `Routing` actor: drives the loop-free routing protocol from link events and
//! updates, and forwards multi-hop messages along the table it keeps.
//!
//! Forwarding lives here rather than in an actor of its own because every relayed
//! message needs a next-hop lookup: one mailbox hop fewer on the hot path, and the table
//! is never read stale from another actor.

use std::collections::BTreeMap;
use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::{Deserialize, Serialize};
use x0_protocols::forwarding::{self, Decision, Forwarder, ForwardingConfig, Relay, Service};
use x0_protocols::routing::{Output, Routing, RoutingConfig, RoutingMessage};
use x0_protocols::{Envelope, Identity, Kind, Millis, NodeId};

use crate::clock::NodeClock;
use crate::discovery::LinkEvent;
use crate::observer::NodeObserver;
use crate::port::NetworkPort;
use crate::supervisor::NodeMsg;
use crate::timer::Timer;

/// One row of the routing table, for the API and the simulator.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteEntry {
    pub destination: NodeId,
    pub next_hop: NodeId,
    pub metric: u16,
    pub seqno: u32,
    /// How long this next hop has been in use.
    pub age_ms: u64,
}

/// Largest application payload [`RoutingMsg::Send`] takes: well inside the envelope
/// limit once wrapped twice (data, then relay).
pub const MAX_PAYLOAD_BYTES: usize = 256 * 1024;

/// Lost routes remembered for repair timing before old ones are forgotten.
const LOST_ROUTES_REMEMBERED: usize = 4096;

/// A message accepted for sending.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sent {
    pub id: u64,
    pub destination: NodeId,
    /// The first hop, or ourselves for a message to ourselves.
    pub next_hop: NodeId,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    #[error("no route to {0}")]
    NoRoute(NodeId),
    #[error("payload of {0} bytes exceeds the limit of {MAX_PAYLOAD_BYTES}")]
    TooLarge(usize),
    #[error("routing is disabled on this node")]
    RoutingDisabled,
    #[error("{0} did not send its end-to-end keys in time (unreachable?)")]
    NoKeys(NodeId),
    #[error("could not seal the message: {0}")]
    Seal(String),
}

/// What this node's forwarding did since its routing actor started.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForwardingStats {
    pub originated: u64,
    pub relayed: u64,
    pub relayed_bytes: u64,
    pub delivered: u64,
    pub dropped: BTreeMap<String, u64>,
    /// Relays that waited for a route to be repaired, and those that then went on.
    pub parked: u64,
    pub resumed: u64,
}

pub enum RoutingMsg {
    /// A decoded routing envelope from a neighbor.
    Inbound(Envelope),
    /// A decoded relay envelope from a neighbor.
    Relay(Envelope),
    Send {
        destination: NodeId,
        service: Service,
        payload: Vec<u8>,
        reply: Option<RpcReplyPort<Result<Sent, SendError>>>,
    },
    Stats(RpcReplyPort<ForwardingStats>),
    /// A relay the next hop never acknowledged: try a loop-free alternate.
    Unacknowledged {
        relay: Relay,
        next_hop: NodeId,
    },
    Link(LinkEvent),
    /// Forget every link (discovery restarted and will report them afresh).
    ResetLinks,
    Tick(u64),
    Routes(RpcReplyPort<Vec<RouteEntry>>),
    /// Fault injection: the actor panics while handling this, as a bug would.
    Crash(String),
}

pub struct RoutingArgs {
    pub identity: Arc<Identity>,
    pub port: Arc<dyn NetworkPort>,
    pub config: RoutingConfig,
    pub clock: NodeClock,
    /// Links known at start (after a restart, what discovery already knows).
    pub links: Vec<(NodeId, u16)>,
    pub forwarding: ForwardingConfig,
    /// First message id; differs per start so a restarted origin is not deduplicated.
    pub first_message_id: u64,
    pub observer: Arc<dyn NodeObserver>,
    /// Told of next hops that stop acknowledging (a hint for the failure detector).
    pub supervisor: ActorRef<crate::supervisor::NodeMsg>,
}

pub struct RoutingState {
    protocol: Routing,
    /// When each destination we currently have no route to lost its route, to time
    /// repairs.
    lost_at: BTreeMap<NodeId, Millis>,
    forwarder: Forwarder,
    originated: u64,
    args: RoutingArgs,
    timer: Timer,
    myself: ActorRef<RoutingMsg>,
}

pub struct RoutingActor;

impl Actor for RoutingActor {
    type Msg = RoutingMsg;
    type State = RoutingState;
    type Arguments = RoutingArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: RoutingArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let now = args.clock.now();
        let mut protocol = Routing::new(args.identity.id(), args.config.clone(), now);
        for (neighbor, cost) in &args.links {
            protocol.set_link(now, *neighbor, *cost);
        }
        let forwarder = Forwarder::new(
            args.identity.id(),
            args.forwarding.clone(),
            args.first_message_id,
        );
        let mut state = RoutingState {
            protocol,
            lost_at: BTreeMap::new(),
            forwarder,
            originated: 0,
            args,
            timer: Timer::default(),
            myself: myself.clone(),
        };
        state.flush_outputs();
        state.arm_timer(&myself);
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let now = state.args.clock.now();
        match message {
            RoutingMsg::Inbound(envelope) => match envelope.decode_payload::<RoutingMessage>() {
                Ok(message) => state.protocol.handle_message(now, envelope.from, message),
                Err(e) => {
                    metrics::counter!("x0_node_envelope_rejected_total", "kind" => "routing", "reason" => e.reason())
                        .increment(1);
                }
            },
            RoutingMsg::Link(
                LinkEvent::Up { neighbor, cost } | LinkEvent::Cost { neighbor, cost },
            ) => {
                state.protocol.set_link(now, neighbor, cost);
            }
            RoutingMsg::Link(LinkEvent::Down { neighbor }) => {
                state.protocol.remove_link(now, neighbor)
            }
            RoutingMsg::Link(LinkEvent::Suspected {
                neighbor,
                suspected,
            }) => state.protocol.suspect_link(now, neighbor, suspected),
            RoutingMsg::ResetLinks => {
                let neighbors: Vec<NodeId> = state.protocol.links().map(|(n, _)| n).collect();
                for neighbor in neighbors {
                    state.protocol.remove_link(now, neighbor);
                }
            }
            RoutingMsg::Tick(generation) => {
                if !state.timer.fire(generation) {
                    return Ok(());
                }
                state.protocol.handle_timeout(now);
                state.forwarder.expire_parked(now);
                state.report_parked_drops();
            }
            RoutingMsg::Relay(envelope) => {
                match envelope.decode_payload::<Relay>() {
                    Ok(relay) => state.forward(now, relay),
                    Err(e) => {
                        metrics::counter!("x0_node_envelope_rejected_total", "kind" => "relay", "reason" => e.reason())
                            .increment(1);
                    }
                }
                return Ok(());
            }
            RoutingMsg::Send {
                destination,
                service,
                payload,
                reply,
            } => {
                let result = state.originate(now, destination, service, payload);
                if let Some(reply) = reply {
                    let _ = reply.send(result);
                }
                return Ok(());
            }
            RoutingMsg::Unacknowledged { relay, next_hop } => {
                state.reroute(now, relay, next_hop);
                return Ok(());
            }
            RoutingMsg::Stats(reply) => {
                let _ = reply.send(state.stats());
                return Ok(());
            }
            RoutingMsg::Routes(reply) => {
                let _ = reply.send(state.route_entries());
                return Ok(());
            }
            RoutingMsg::Crash(reason) => panic!("injected fault: {reason}"),
        }
        state.flush_outputs();
        state.arm_timer(&myself);
        Ok(())
    }
}

impl RoutingState {
    fn originate(
        &mut self,
        now: Millis,
        destination: NodeId,
        service: Service,
        payload: Vec<u8>,
    ) -> Result<Sent, SendError> {
        if payload.len() > MAX_PAYLOAD_BYTES {
            return Err(SendError::TooLarge(payload.len()));
        }
        let me = self.args.identity.id();
        let next_hop = self.protocol.next_hop(&destination);
        if destination != me && next_hop.is_none() {
            metrics::counter!("x0_forwarding_dropped_total", "reason" => "no_route").increment(1);
            return Err(SendError::NoRoute(destination));
        }
        let data = self.forwarder.new_data(destination, service, payload);
        let sealed = forwarding::seal_data(&self.args.identity, &data);
        self.originated += 1;
        metrics::counter!("x0_forwarding_originated_total").increment(1);
        let decision = self.forwarder.originate(now, &data, sealed, next_hop);
        let sent = Sent {
            id: data.id,
            destination,
            next_hop: next_hop.unwrap_or(me),
        };
        self.act(decision, true);
        Ok(sent)
    }

    fn forward(&mut self, now: Millis, relay: Relay) {
        let next_hop = self.protocol.next_hop(&relay.destination);
        let decision = self.forwarder.handle_relay(now, relay, next_hop);
        self.act(decision, false);
    }

    /// Carries out a forwarding decision; `own` is true for messages we originate.
    fn act(&mut self, decision: Decision, own: bool) {
        match decision {
            Decision::Forward { next_hop, relay } => {
                self.send_reliably(next_hop, relay, true);
                if !own {
                    metrics::counter!("x0_forwarding_relayed_total").increment(1);
                }
            }
            Decision::Deliver(relay) => match forwarding::open(self.args.identity.id(), relay) {
                Ok(delivered) => {
                    metrics::counter!("x0_forwarding_delivered_total").increment(1);
                    match delivered.service {
                        Service::App => self.args.observer.delivered(delivered),
                        Service::Ledger | Service::E2e => {
                            let _ = self.args.supervisor.cast(NodeMsg::Service(delivered));
                        }
                    }
                }
                Err(e) => {
                    metrics::counter!("x0_forwarding_dropped_total", "reason" => e.reason())
                        .increment(1);
                    tracing::debug!(error = %e, "refused a message addressed to us");
                }
            },
            Decision::Drop(reason) => {
                metrics::counter!("x0_forwarding_dropped_total", "reason" => reason.name())
                    .increment(1);
            }
            Decision::Parked => {
                metrics::counter!("x0_forwarding_parked_total").increment(1);
                self.report_parked_drops();
            }
        }
    }

    /// Sends a relay to the next hop and resends it until acknowledged, at most
    /// `link_attempts` times: link-layer ARQ, as radio meshes do per hop. If it never is,
    /// the actor hears of it and, when `may_reroute`, tries a loop-free alternate.
    fn send_reliably(&self, next_hop: NodeId, relay: Relay, may_reroute: bool) {
        let envelope = Envelope::seal_message(&self.args.identity, Kind::Relay, &relay);
        let port = self.args.port.clone();
        let myself = self.myself.clone();
        let attempts = self.args.forwarding.link_attempts.max(1);
        let timeout = std::time::Duration::from_millis(self.args.forwarding.ack_timeout_ms.max(1));
        tokio::spawn(async move {
            for attempt in 1..=attempts {
                match port.request(next_hop, &envelope, timeout).await {
                    Ok(_) => return,
                    Err(crate::port::PortError::Timeout) if attempt < attempts => {
                        metrics::counter!("x0_forwarding_retransmits_total").increment(1);
                    }
                    Err(_) => break,
                }
            }
            if may_reroute {
                let _ = myself.cast(RoutingMsg::Unacknowledged { relay, next_hop });
            } else {
                metrics::counter!("x0_forwarding_dropped_total", "reason" => "unacknowledged")
                    .increment(1);
            }
        });
    }

    /// A next hop did not acknowledge: suspect it, and send the relay another
    /// loop-free way if there is one (once; a second failure drops it), or else park
    /// it until the route is repaired.
    fn reroute(&mut self, now: Millis, relay: Relay, failed: NodeId) {
        let _ = self
            .args
            .supervisor
            .cast(crate::supervisor::NodeMsg::Unresponsive(failed));
        let alternate = self
            .protocol
            .next_hop(&relay.destination)
            .filter(|n| *n != failed)
            .or_else(|| {
                self.protocol
                    .alternate_next_hop(&relay.destination, &failed)
            });
        match alternate {
            Some(next_hop) => {
                metrics::counter!("x0_forwarding_rerouted_total").increment(1);
                self.send_reliably(next_hop, relay, false);
            }
            None => {
                let decision = self.forwarder.park(now, relay);
                self.act(decision, false);
            }
        }
    }

    /// Parked relays that waited in vain, or were pushed out by newer ones.
    fn report_parked_drops(&mut self) {
        let dropped = self.forwarder.take_parked_drops();
        if dropped > 0 {
            metrics::counter!("x0_forwarding_dropped_total", "reason" => "no_route")
                .increment(dropped);
        }
    }

    fn stats(&self) -> ForwardingStats {
        ForwardingStats {
            originated: self.originated,
            relayed: self.forwarder.relayed,
            relayed_bytes: self.forwarder.relayed_bytes,
            parked: self.forwarder.parked_total,
            resumed: self.forwarder.resumed,
            delivered: self.forwarder.delivered,
            dropped: self
                .forwarder
                .dropped
                .iter()
                .map(|(reason, n)| (reason.name().to_string(), *n))
                .collect(),
        }
    }

    fn flush_outputs(&mut self) {
        while let Some(output) = self.protocol.poll_output() {
            match output {
                // To each link on its own rather than as one broadcast, so that every
                // copy travels sealed in the link's session like everything else.
                Output::Broadcast(message) => {
                    let envelope = self.envelope(&message);
                    for (neighbor, _) in self.protocol.links() {
                        self.args.port.send(neighbor, &envelope);
                    }
                    metrics::counter!("x0_routing_messages_sent_total").increment(1);
                }
                Output::Send(to, message) => {
                    self.args.port.send(to, &self.envelope(&message));
                    metrics::counter!("x0_routing_messages_sent_total").increment(1);
                }
                Output::RouteChanged {
                    destination,
                    next_hop,
                    ..
                } => {
                    metrics::counter!("x0_routing_route_changes_total").increment(1);
                    tracing::debug!(%destination, next_hop = ?next_hop, "route changed");
                    let now = self.args.clock.now();
                    match next_hop {
                        None => {
                            // Destinations gone for good never repair: forget old
                            // losses before they pile up.
                            if self.lost_at.len() >= LOST_ROUTES_REMEMBERED {
                                self.lost_at.retain(|_, at| now.since(*at) < 60_000);
                            }
                            self.lost_at.entry(destination).or_insert(now);
                        }
                        Some(next_hop) => {
                            for relay in self.forwarder.unpark(now, &destination) {
                                self.send_reliably(next_hop, relay, true);
                            }
                            if let Some(lost) = self.lost_at.remove(&destination) {
                                metrics::histogram!("x0_routing_repair_seconds")
                                    .record(now.since(lost) as f64 / 1000.0);
                            }
                        }
                    }
                }
            }
        }
        metrics::gauge!("x0_routing_routes").set(self.protocol.route_count() as f64);
    }

    /// Signed once, whatever the number of links: a routing message may be the first a
    /// neighbor hears from us after its link came back, before a session exists, and
    /// then the signature is what it checks. Inside a session it is left off the wire.
    fn envelope(&self, message: &RoutingMessage) -> Envelope {
        Envelope::seal_message(&self.args.identity, Kind::Routing, message)
    }

    fn arm_timer(&mut self, myself: &ActorRef<RoutingMsg>) {
        let deadline = self.protocol.next_deadline();
        self.timer
            .arm(myself, &self.args.clock, deadline, RoutingMsg::Tick);
    }

    fn route_entries(&self) -> Vec<RouteEntry> {
        let now = self.args.clock.now();
        self.protocol
            .routes()
            .map(|r| RouteEntry {
                destination: r.destination,
                next_hop: r.next_hop,
                metric: r.metric,
                seqno: r.seqno,
                age_ms: now.since(r.since),
            })
            .collect()
    }
}
