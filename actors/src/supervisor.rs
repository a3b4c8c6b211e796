//! `NodeSupervisor`: owns a node's subsystem actors, routes inbound envelopes to them and
//! restarts the ones that fail.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use serde::{Deserialize, Serialize};
use x0_protocols::discovery::DiscoveryConfig;
use x0_protocols::{Envelope, Identity, Kind, NodeId};

use crate::clock::NodeClock;
use crate::discovery::{DiscoveryActor, DiscoveryArgs, DiscoveryMsg, NeighborInfo};
use crate::port::{Inbound, NetworkPort};

/// Settings of the actor tree that are the same for a real node and a simulated one.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeSettings {
    pub discovery: DiscoveryConfig,
    /// Inbound envelopes waiting in one actor's mailbox beyond which new ones are dropped
    /// (ractor mailboxes are unbounded; this is what keeps a flooding peer from growing
    /// our memory).
    pub inbound_queue_limit: usize,
    /// More restarts than this within `restart_window_ms` and the supervisor gives up
    /// (fails itself) rather than restart-loop.
    pub max_restarts: u32,
    pub restart_window_ms: u64,
}

impl Default for NodeSettings {
    fn default() -> Self {
        NodeSettings {
            discovery: DiscoveryConfig::default(),
            inbound_queue_limit: 1024,
            max_restarts: 10,
            restart_window_ms: 10_000,
        }
    }
}

pub struct NodeArgs {
    pub identity: Arc<Identity>,
    pub port: Arc<dyn NetworkPort>,
    pub settings: NodeSettings,
    /// Seeds every random choice this node's protocols make.
    pub seed: u64,
}

/// The subsystems a supervisor owns, for fault injection and metric labels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Subsystem {
    Discovery,
}

impl Subsystem {
    pub fn name(self) -> &'static str {
        match self {
            Subsystem::Discovery => "discovery",
        }
    }
}

/// A snapshot of the node's health, for `/api/v1/status` and reports.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub id: NodeId,
    pub uptime_ms: u64,
    pub neighbors: usize,
    pub actor_restarts: u64,
    pub envelopes_received: u64,
    pub envelope_decode_errors: u64,
    pub inbound_dropped: u64,
}

pub enum NodeMsg {
    Inbound(Inbound),
    Neighbors(RpcReplyPort<Vec<NeighborInfo>>),
    Status(RpcReplyPort<NodeStatus>),
    /// Fault injection: make a child panic.
    Crash(Subsystem, String),
}

pub struct NodeState {
    args: NodeArgs,
    clock: NodeClock,
    discovery: ActorRef<DiscoveryMsg>,
    discovery_pending: Arc<AtomicUsize>,
    restarts: u64,
    recent_restarts: Vec<u64>,
    envelopes_received: u64,
    decode_errors: u64,
    inbound_dropped: u64,
}

pub struct NodeSupervisor;

impl NodeSupervisor {
    async fn spawn_discovery(
        myself: &ActorRef<NodeMsg>,
        args: &NodeArgs,
        clock: NodeClock,
        pending: Arc<AtomicUsize>,
        incarnation: u64,
    ) -> Result<ActorRef<DiscoveryMsg>, ActorProcessingErr> {
        let discovery_args = DiscoveryArgs {
            identity: args.identity.clone(),
            port: args.port.clone(),
            config: args.settings.discovery.clone(),
            // A restarted child gets a fresh but still reproducible random stream.
            seed: args.seed ^ incarnation.wrapping_mul(0x9E37_79B9_7F4A_7C15),
            clock,
            pending,
        };
        let (actor, _) =
            Actor::spawn_linked(None, DiscoveryActor, discovery_args, myself.get_cell()).await?;
        Ok(actor)
    }
}

impl Actor for NodeSupervisor {
    type Msg = NodeMsg;
    type State = NodeState;
    type Arguments = NodeArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: NodeArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let clock = NodeClock::start();
        let pending = Arc::new(AtomicUsize::new(0));
        let discovery = Self::spawn_discovery(&myself, &args, clock, pending.clone(), 0).await?;
        Ok(NodeState {
            args,
            clock,
            discovery,
            discovery_pending: pending,
            restarts: 0,
            recent_restarts: Vec::new(),
            envelopes_received: 0,
            decode_errors: 0,
            inbound_dropped: 0,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            NodeMsg::Inbound(inbound) => state.route(inbound),
            NodeMsg::Neighbors(reply) => {
                // The reply port travels on; discovery answers the caller directly.
                if let Err(e) = state.discovery.cast(DiscoveryMsg::Neighbors(reply)) {
                    tracing::warn!(error = %e, "discovery unavailable for a neighbor query");
                }
            }
            NodeMsg::Status(reply) => {
                let neighbors = state
                    .discovery
                    .call(DiscoveryMsg::Neighbors, None)
                    .await
                    .ok()
                    .and_then(|r| r.success_or(()).ok())
                    .map_or(0, |n| n.len());
                let _ = reply.send(NodeStatus {
                    id: state.args.identity.id(),
                    uptime_ms: state.clock.now().0,
                    neighbors,
                    actor_restarts: state.restarts,
                    envelopes_received: state.envelopes_received,
                    envelope_decode_errors: state.decode_errors,
                    inbound_dropped: state.inbound_dropped,
                });
            }
            NodeMsg::Crash(Subsystem::Discovery, reason) => {
                let _ = state.discovery.cast(DiscoveryMsg::Crash(reason));
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, why) = match event {
            SupervisionEvent::ActorFailed(cell, err) => (cell, err.to_string()),
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                (cell, reason.unwrap_or_else(|| "stopped".into()))
            }
            _ => return Ok(()),
        };
        if !is_same(&cell, &state.discovery.get_cell()) {
            return Ok(());
        }
        state.note_restart(Subsystem::Discovery, &why)?;
        // Messages queued for the dead actor are gone with it.
        state.discovery_pending.store(0, Ordering::Relaxed);
        state.discovery = Self::spawn_discovery(
            &myself,
            &state.args,
            state.clock,
            state.discovery_pending.clone(),
            state.restarts,
        )
        .await?;
        Ok(())
    }

    async fn post_stop(
        &self,
        myself: ActorRef<Self::Msg>,
        _state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        myself.stop_children(None);
        Ok(())
    }
}

fn is_same(a: &ActorCell, b: &ActorCell) -> bool {
    a.get_id() == b.get_id()
}

impl NodeState {
    fn route(&mut self, inbound: Inbound) {
        self.envelopes_received += 1;
        let envelope = match Envelope::decode(&inbound.bytes) {
            Ok(envelope) => envelope,
            Err(e) => {
                self.decode_errors += 1;
                metrics::counter!("x0_node_envelope_decode_errors_total", "reason" => e.reason())
                    .increment(1);
                tracing::debug!(peer = %inbound.link_peer, error = %e, "undecodable envelope");
                return;
            }
        };
        match envelope.kind {
            Kind::Beacon => {
                // Beacons describe the link they arrive on: one relayed from elsewhere
                // would fake an adjacency, so it must come from the link peer itself.
                if envelope.from != inbound.link_peer {
                    self.drop_inbound("beacon_not_from_link_peer");
                    return;
                }
                let limit = self.args.settings.inbound_queue_limit;
                if self.discovery_pending.load(Ordering::Relaxed) >= limit {
                    self.drop_inbound("queue_full");
                    return;
                }
                self.discovery_pending.fetch_add(1, Ordering::Relaxed);
                if self.discovery.cast(DiscoveryMsg::Beacon(envelope)).is_err() {
                    self.discovery_pending.fetch_sub(1, Ordering::Relaxed);
                    self.drop_inbound("actor_down");
                }
            }
        }
    }

    fn drop_inbound(&mut self, reason: &'static str) {
        self.inbound_dropped += 1;
        metrics::counter!("x0_node_inbound_dropped_total", "reason" => reason).increment(1);
    }

    /// Counts a restart; refuses (escalating to our own supervisor) if restarts come too
    /// fast for a restart to help.
    fn note_restart(&mut self, subsystem: Subsystem, why: &str) -> Result<(), ActorProcessingErr> {
        let now = self.clock.now().0;
        let window = self.args.settings.restart_window_ms;
        self.recent_restarts
            .retain(|t| now.saturating_sub(*t) < window);
        self.recent_restarts.push(now);
        if self.recent_restarts.len() > self.args.settings.max_restarts as usize {
            return Err(format!(
                "{} failed {} times within {window} ms; giving up",
                subsystem.name(),
                self.recent_restarts.len()
            )
            .into());
        }
        self.restarts += 1;
        metrics::counter!("x0_node_actor_restarts_total", "actor" => subsystem.name()).increment(1);
        tracing::warn!(
            actor = subsystem.name(),
            reason = why,
            "restarting failed actor"
        );
        Ok(())
    }
}
