//! The `Routing` actor: drives the loop-free routing protocol from link events and updates.

use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::{Deserialize, Serialize};
use x0_protocols::routing::{Output, Routing, RoutingConfig, RoutingMessage};
use x0_protocols::{Envelope, Identity, Kind, NodeId};

use crate::clock::NodeClock;
use crate::discovery::LinkEvent;
use crate::port::{NetworkPort, Topic};
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

pub enum RoutingMsg {
    /// A decoded routing envelope from a neighbor.
    Inbound(Envelope),
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
}

pub struct RoutingState {
    protocol: Routing,
    args: RoutingArgs,
    timer: Timer,
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
        let mut state = RoutingState {
            protocol,
            args,
            timer: Timer::default(),
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
    fn flush_outputs(&mut self) {
        while let Some(output) = self.protocol.poll_output() {
            match output {
                Output::Broadcast(message) => {
                    let envelope =
                        Envelope::seal_message(&self.args.identity, Kind::Routing, &message);
                    self.args.port.broadcast(&Topic::Neighbors, &envelope);
                    metrics::counter!("x0_routing_messages_sent_total").increment(1);
                }
                Output::Send(to, message) => {
                    let envelope =
                        Envelope::seal_message(&self.args.identity, Kind::Routing, &message);
                    self.args.port.send(to, &envelope);
                    metrics::counter!("x0_routing_messages_sent_total").increment(1);
                }
                Output::RouteChanged {
                    destination,
                    next_hop,
                    ..
                } => {
                    metrics::counter!("x0_routing_route_changes_total").increment(1);
                    tracing::debug!(%destination, next_hop = ?next_hop, "route changed");
                }
            }
        }
        metrics::gauge!("x0_routing_routes").set(self.protocol.routes().count() as f64);
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
