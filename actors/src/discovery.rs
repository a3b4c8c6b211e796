//! The `Discovery` actor: drives the discovery state machine on tokio time.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::{Deserialize, Serialize};
use x0_protocols::discovery::{Beacon, Discovery, DiscoveryConfig, DiscoveryEvent, Output};
use x0_protocols::{Envelope, Identity, Kind, Millis, NodeId};

use crate::clock::NodeClock;
use crate::port::{NetworkPort, Topic};

/// What the neighbor table says about one neighbor, for the API and the simulator.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NeighborInfo {
    pub id: NodeId,
    pub rtt_ms: Option<f64>,
    pub loss: f64,
    pub bidirectional: bool,
    pub last_seen_ms_ago: u64,
    pub known_for_ms: u64,
    pub beacons_received: u64,
}

pub enum DiscoveryMsg {
    /// A decoded beacon envelope; its signature is checked here.
    Beacon(Envelope),
    /// Timer fired; the number says which schedule it belongs to.
    Tick(u64),
    Neighbors(RpcReplyPort<Vec<NeighborInfo>>),
    /// Fault injection: the actor panics while handling this, as a bug would.
    Crash(String),
}

pub struct DiscoveryArgs {
    pub identity: Arc<Identity>,
    pub port: Arc<dyn NetworkPort>,
    pub config: DiscoveryConfig,
    pub seed: u64,
    pub clock: NodeClock,
    /// Inbound beacons queued for this actor; the supervisor stops forwarding past a bound.
    pub pending: Arc<AtomicUsize>,
}

pub struct DiscoveryState {
    protocol: Discovery,
    args: DiscoveryArgs,
    /// Neighbors whose beacon signature we have checked since they last came up.
    verified: BTreeSet<NodeId>,
    timer_generation: u64,
    timer_at: Option<Millis>,
}

pub struct DiscoveryActor;

impl Actor for DiscoveryActor {
    type Msg = DiscoveryMsg;
    type State = DiscoveryState;
    type Arguments = DiscoveryArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: DiscoveryArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let protocol = Discovery::new(
            args.identity.id(),
            args.config.clone(),
            args.seed,
            args.clock.now(),
        );
        let mut state = DiscoveryState {
            protocol,
            args,
            verified: BTreeSet::new(),
            timer_generation: 0,
            timer_at: None,
        };
        state.arm_timer(&myself);
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            DiscoveryMsg::Beacon(envelope) => {
                state.args.pending.fetch_sub(1, Ordering::Relaxed);
                state.take_beacon(&envelope);
            }
            DiscoveryMsg::Tick(generation) => {
                if generation != state.timer_generation {
                    return Ok(());
                }
                state.timer_at = None;
                let now = state.args.clock.now();
                state.protocol.handle_timeout(now);
            }
            DiscoveryMsg::Neighbors(reply) => {
                let _ = reply.send(state.neighbor_infos());
                return Ok(());
            }
            DiscoveryMsg::Crash(reason) => panic!("injected fault: {reason}"),
        }
        state.flush_outputs();
        state.arm_timer(&myself);
        Ok(())
    }
}

impl DiscoveryState {
    /// Takes a beacon into the table.
    ///
    /// The signature is checked on the first beacon of each neighbor (and again after it
    /// went down), not on every one: beacons are one-hop, the supervisor has already
    /// required `from` to be the transport-authenticated link peer (Noise in the node, the
    /// link table in the simulator), so later checks would prove nothing new. The first
    /// check catches a peer whose envelope key does not match its transport key. Checking
    /// every beacon cost 90% of a 1000-node simulation's CPU (measured with perf).
    fn take_beacon(&mut self, envelope: &Envelope) {
        if !self.verified.contains(&envelope.from)
            && let Err(e) = envelope.verify()
        {
            metrics::counter!("x0_node_envelope_rejected_total", "kind" => "beacon", "reason" => e.reason())
                .increment(1);
            return;
        }
        let beacon: Beacon = match envelope.decode_payload() {
            Ok(b) => b,
            Err(e) => {
                metrics::counter!("x0_node_envelope_rejected_total", "kind" => "beacon", "reason" => e.reason())
                    .increment(1);
                return;
            }
        };
        metrics::counter!("x0_discovery_beacons_received_total").increment(1);
        let now = self.args.clock.now();
        match self.protocol.handle_beacon(now, envelope.from, &beacon) {
            // Only table members are remembered, so the set is bounded like the table.
            Ok(()) => {
                self.verified.insert(envelope.from);
            }
            Err(reason) => metrics::counter!("x0_discovery_beacons_ignored_total", "reason" => format!("{reason:?}"))
                .increment(1),
        }
    }

    fn flush_outputs(&mut self) {
        while let Some(output) = self.protocol.poll_output() {
            match output {
                Output::Broadcast(beacon) => {
                    let envelope =
                        Envelope::seal_message(&self.args.identity, Kind::Beacon, &beacon);
                    self.args.port.broadcast(&Topic::Neighbors, &envelope);
                    metrics::counter!("x0_discovery_beacons_sent_total").increment(1);
                }
                Output::Event(DiscoveryEvent::NeighborUp(id)) => {
                    tracing::info!(neighbor = %id, "neighbor up");
                }
                Output::Event(DiscoveryEvent::NeighborDown(id)) => {
                    self.verified.remove(&id);
                    tracing::info!(neighbor = %id, "neighbor down");
                }
            }
        }
        metrics::gauge!("x0_discovery_peers").set(self.protocol.neighbors().count() as f64);
    }

    /// Makes sure a tick is scheduled for the protocol's next deadline. A later-armed,
    /// earlier timer supersedes the old one; the old one's tick is then ignored.
    fn arm_timer(&mut self, myself: &ActorRef<DiscoveryMsg>) {
        let Some(deadline) = self.protocol.next_deadline() else {
            return;
        };
        if self.timer_at.is_some_and(|at| at <= deadline) {
            return;
        }
        self.timer_generation += 1;
        self.timer_at = Some(deadline);
        let generation = self.timer_generation;
        myself.send_after(self.args.clock.until(deadline), move || {
            DiscoveryMsg::Tick(generation)
        });
    }

    fn neighbor_infos(&self) -> Vec<NeighborInfo> {
        let now = self.args.clock.now();
        self.protocol
            .neighbors()
            .map(|n| NeighborInfo {
                id: n.id,
                rtt_ms: n.rtt_ms,
                loss: n.loss(),
                bidirectional: n.bidirectional,
                last_seen_ms_ago: now.since(n.last_seen),
                known_for_ms: now.since(n.first_seen),
                beacons_received: n.beacons_received,
            })
            .collect()
    }
}
