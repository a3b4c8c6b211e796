//! `NodeSupervisor`: owns a node's subsystem actors, routes inbound envelopes to them and
//! restarts the ones that fail.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use serde::{Deserialize, Serialize};
use x0_protocols::crdt::Verifier;
use x0_protocols::discovery::DiscoveryConfig;
use x0_protocols::failure::FailureConfig;
use x0_protocols::forwarding::{Delivered, ForwardingConfig, Service};
use x0_protocols::ratelimit::{RateLimit, RateLimiter};
use x0_protocols::routing::{RoutingConfig, link_cost};
use x0_protocols::{Envelope, Identity, Kind, NodeId};

use crate::clock::NodeClock;
use crate::crdt::{
    Change, ChannelMessage, CrdtActor, CrdtArgs, CrdtMsg, CrdtSettings, CrdtStore, LazyBroadcast,
};
use crate::discovery::{DiscoveryActor, DiscoveryArgs, DiscoveryMsg, LinkEvent, NeighborInfo};
use crate::e2e::{E2eActor, E2eArgs, E2eMsg};
use crate::ledger::{LedgerActor, LedgerArgs, LedgerMsg, LedgerSettings, LedgerStore};
use crate::link::{LinkError, LinkSessions, SealingPort};
use crate::observer::NodeObserver;
use crate::port::{Inbound, NetworkPort};
use crate::routing::{
    ForwardingStats, RouteEntry, RoutingActor, RoutingArgs, RoutingMsg, SendError, Sent,
};
use crate::sessions::{Admission, SessionActor, SessionArgs, SessionInfo, SessionMsg};

/// Settings of the actor tree that are the same for a real node and a simulated one.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeSettings {
    pub discovery: DiscoveryConfig,
    /// SWIM/Lifeguard probing of quiet neighbors; `None`: neighbors fail by expiry only.
    pub failure: Option<FailureConfig>,
    /// `None` runs the node without a routing actor (discovery only).
    pub routing: Option<RoutingConfig>,
    pub forwarding: ForwardingConfig,
    /// Who may join: everyone, or only a trust list.
    pub admission: Admission,
    /// The Raft ledger; `None` runs the node without one.
    pub ledger: Option<LedgerSettings>,
    /// CRDT sync (the registry and application key spaces); `None` runs without it.
    pub crdt: Option<CrdtSettings>,
    /// Seal every envelope to a neighbor in the two nodes' post-quantum session once it
    /// is up (see [`crate::link`]); off only to measure what it costs.
    pub seal_links: bool,
    /// Bytes of relayed traffic each link peer may hand us, over a sliding window;
    /// beyond it its relays are dropped unacknowledged (so it routes around us).
    pub relay_limit: RateLimit,
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
            failure: Some(FailureConfig::default()),
            routing: Some(RoutingConfig::default()),
            forwarding: ForwardingConfig::default(),
            admission: Admission::Open,
            ledger: None,
            crdt: Some(CrdtSettings::default()),
            seal_links: true,
            relay_limit: RateLimit::default(),
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
    /// Told of deliveries and link changes as they happen.
    pub observer: Arc<dyn NodeObserver>,
    /// Seeds session handshakes' ephemeral keys: OS randomness in a real node.
    pub crypto_seed: [u8; 32],
    /// Where the ledger keeps Raft's log (a redb file in a real node, redb in memory in
    /// the simulator). `None` with a ledger configured: a fresh store in memory.
    pub ledger_store: Option<LedgerStore>,
    /// Mesh time (milliseconds) when the node starts: Unix time in a real node, virtual
    /// time since the run began in the simulator. CRDT stamps and expiry count in it.
    pub mesh_epoch_ms: u64,
    /// Where the CRDT state is saved; `None`: not saved.
    pub crdt_store: Option<CrdtStore>,
    /// Checks CRDT entries' signatures (see [`Verifier`]).
    pub verifier: Arc<dyn Verifier>,
}

/// The subsystems a supervisor owns, for fault injection and metric labels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Subsystem {
    Discovery,
    Routing,
    Sessions,
    Ledger,
    E2e,
    Crdt,
}

impl Subsystem {
    pub fn name(self) -> &'static str {
        match self {
            Subsystem::Discovery => "discovery",
            Subsystem::Routing => "routing",
            Subsystem::Sessions => "sessions",
            Subsystem::Ledger => "ledger",
            Subsystem::E2e => "e2e",
            Subsystem::Crdt => "crdt",
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
    /// Relay envelopes refused because their link peer was over its rate limit.
    pub rate_limited: u64,
    pub relay_limit: RateLimit,
    pub forwarding: ForwardingStats,
}

pub enum NodeMsg {
    Inbound(Inbound),
    /// From discovery: a link came, went or changed cost.
    Link(LinkEvent),
    Neighbors(RpcReplyPort<Vec<NeighborInfo>>),
    Routes(RpcReplyPort<Vec<RouteEntry>>),
    Sessions(RpcReplyPort<Vec<SessionInfo>>),
    Status(RpcReplyPort<NodeStatus>),
    /// Send an application message over the mesh; `reply` (if any) learns whether it
    /// was accepted.
    Send {
        destination: NodeId,
        service: Service,
        payload: Vec<u8>,
        reply: Option<RpcReplyPort<Result<Sent, SendError>>>,
    },
    /// From routing: a message for one of the node's own subsystems arrived.
    Service(Delivered),
    /// For the end-to-end actor (sealed sends, the outbox, read receipts).
    E2e(E2eMsg),
    /// From the ledger: the members its entries have admitted so far.
    LedgerMembers(BTreeSet<NodeId>),
    /// For the ledger actor (client requests from the node's owner).
    Ledger(Box<LedgerMsg>),
    /// For the CRDT actor (reads and writes from the node's owner).
    Crdt(CrdtMsg),
    /// A receiver of every change to the CRDT state from now on.
    CrdtWatch(RpcReplyPort<tokio::sync::broadcast::Receiver<Change>>),
    /// A receiver of every channel post this node can read, from now on.
    ChannelWatch(RpcReplyPort<tokio::sync::broadcast::Receiver<ChannelMessage>>),
    /// From routing: this neighbor stopped acknowledging relays.
    Unresponsive(NodeId),
    /// Fault injection: make a child panic.
    Crash(Subsystem, String),
}

pub struct NodeState {
    args: NodeArgs,
    clock: NodeClock,
    /// Sessions with neighbors, to open what they seal.
    link_sessions: Arc<LinkSessions>,
    discovery: ActorRef<DiscoveryMsg>,
    discovery_pending: Arc<AtomicUsize>,
    routing: Option<ActorRef<RoutingMsg>>,
    sessions: ActorRef<SessionMsg>,
    ledger: Option<ActorRef<LedgerMsg>>,
    e2e: ActorRef<E2eMsg>,
    crdt: Option<ActorRef<CrdtMsg>>,
    crdt_pending: Arc<AtomicUsize>,
    /// Outlive CRDT actor restarts, so watchers keep watching.
    crdt_watchers: CrdtWatchers,
    /// Link peers whose envelope signature has been checked since their link came up.
    verified_links: BTreeSet<NodeId>,
    /// Strangers to a closed mesh already refused (and logged) once.
    refused: BTreeSet<NodeId>,
    restarts: u64,
    recent_restarts: Vec<u64>,
    envelopes_received: u64,
    decode_errors: u64,
    inbound_dropped: u64,
    relay_limiter: RateLimiter,
    rate_limited: u64,
}

pub struct NodeSupervisor;

/// Where the CRDT actor tells of changes and readable channel posts.
struct CrdtWatchers {
    changes: LazyBroadcast<Change>,
    channel_posts: LazyBroadcast<ChannelMessage>,
}

/// A generator seed of its own for one actor: distinct from the other actors' (by
/// `stream`) and from the actor's earlier incarnations, so a restart never replays
/// ephemeral keys or nonces.
fn crypto_stream(args: &NodeArgs, stream: u8, incarnation: u64) -> [u8; 32] {
    let mut seed = args.crypto_seed;
    seed[31] ^= stream;
    for (i, b) in incarnation.to_le_bytes().iter().enumerate() {
        seed[8 + i] ^= b;
    }
    seed
}

impl NodeSupervisor {
    async fn spawn_sessions(
        myself: &ActorRef<NodeMsg>,
        args: &NodeArgs,
        clock: NodeClock,
        links: &Arc<LinkSessions>,
        incarnation: u64,
    ) -> Result<ActorRef<SessionMsg>, ActorProcessingErr> {
        let mut rng_seed = args.crypto_seed;
        // A restarted actor must not replay its predecessor's ephemeral keys.
        for (i, b) in incarnation.to_le_bytes().iter().enumerate() {
            rng_seed[i] ^= b;
        }
        let session_args = SessionArgs {
            identity: args.identity.clone(),
            port: args.port.clone(),
            clock,
            admission: args.settings.admission.clone(),
            rng_seed,
            link_sessions: links.clone(),
        };
        let (actor, _) =
            Actor::spawn_linked(None, SessionActor, session_args, myself.get_cell()).await?;
        Ok(actor)
    }

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
            supervisor: myself.clone(),
            failure: args.settings.failure.clone(),
            observer: args.observer.clone(),
        };
        let (actor, _) =
            Actor::spawn_linked(None, DiscoveryActor, discovery_args, myself.get_cell()).await?;
        Ok(actor)
    }

    async fn spawn_routing(
        myself: &ActorRef<NodeMsg>,
        args: &NodeArgs,
        clock: NodeClock,
        links: Vec<(NodeId, u16)>,
        incarnation: u64,
    ) -> Result<Option<ActorRef<RoutingMsg>>, ActorProcessingErr> {
        let Some(config) = args.settings.routing.clone() else {
            return Ok(None);
        };
        let routing_args = RoutingArgs {
            identity: args.identity.clone(),
            port: args.port.clone(),
            config,
            clock,
            links,
            forwarding: args.settings.forwarding.clone(),
            // Spread ids of successive incarnations far apart (reproducibly), so a
            // restarted origin's messages are not mistaken for duplicates of old ones.
            first_message_id: (args.seed ^ incarnation.wrapping_mul(0xD1B5_4A32_D192_ED03))
                .rotate_left(17),
            observer: args.observer.clone(),
            supervisor: myself.clone(),
        };
        let (actor, _) =
            Actor::spawn_linked(None, RoutingActor, routing_args, myself.get_cell()).await?;
        Ok(Some(actor))
    }

    async fn spawn_e2e(
        myself: &ActorRef<NodeMsg>,
        args: &NodeArgs,
        clock: NodeClock,
        incarnation: u64,
    ) -> Result<ActorRef<E2eMsg>, ActorProcessingErr> {
        let e2e_args = E2eArgs {
            identity: args.identity.clone(),
            supervisor: myself.clone(),
            observer: args.observer.clone(),
            rng_seed: crypto_stream(args, 0xE2, incarnation),
            clock,
        };
        let (actor, _) = Actor::spawn_linked(None, E2eActor, e2e_args, myself.get_cell()).await?;
        Ok(actor)
    }

    async fn spawn_crdt(
        myself: &ActorRef<NodeMsg>,
        args: &NodeArgs,
        clock: NodeClock,
        pending: Arc<AtomicUsize>,
        watchers: &CrdtWatchers,
        incarnation: u64,
    ) -> Result<Option<ActorRef<CrdtMsg>>, ActorProcessingErr> {
        let Some(settings) = args.settings.crdt.clone() else {
            return Ok(None);
        };
        let crdt_args = CrdtArgs {
            identity: args.identity.clone(),
            port: args.port.clone(),
            settings,
            clock,
            epoch_ms: args.mesh_epoch_ms,
            seed: (args.seed ^ incarnation.wrapping_mul(0x94D0_49BB_1331_11EB)).rotate_left(7),
            crypto_seed: crypto_stream(args, 0xC7, incarnation),
            store: args.crdt_store.clone(),
            verifier: args.verifier.clone(),
            changes: watchers.changes.clone(),
            channel_posts: watchers.channel_posts.clone(),
            observer: args.observer.clone(),
            supervisor: myself.clone(),
            pending,
        };
        let (actor, _) = Actor::spawn_linked(None, CrdtActor, crdt_args, myself.get_cell()).await?;
        Ok(Some(actor))
    }

    async fn spawn_ledger(
        myself: &ActorRef<NodeMsg>,
        args: &NodeArgs,
        incarnation: u64,
    ) -> Result<Option<ActorRef<LedgerMsg>>, ActorProcessingErr> {
        let Some(settings) = args.settings.ledger.clone() else {
            return Ok(None);
        };
        let ledger_args = LedgerArgs {
            me: args.identity.id(),
            settings,
            store: args.ledger_store.clone(),
            supervisor: myself.clone(),
            seed: u64::from_le_bytes(args.crypto_seed[8..16].try_into().unwrap_or_default())
                ^ incarnation.wrapping_mul(0xA24B_AED4_963E_E407),
            publish_members: matches!(args.settings.admission, Admission::Ledger { .. }),
        };
        let (actor, _) =
            Actor::spawn_linked(None, LedgerActor, ledger_args, myself.get_cell()).await?;
        Ok(Some(actor))
    }
}

impl Actor for NodeSupervisor {
    type Msg = NodeMsg;
    type State = NodeState;
    type Arguments = NodeArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        mut args: NodeArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let clock = NodeClock::start();
        let link_sessions = Arc::new(LinkSessions::new(clock));
        if args.settings.seal_links {
            // Every actor below sends through it (restarted ones too: they get `args`).
            args.port = Arc::new(SealingPort::new(
                args.identity.id(),
                args.port.clone(),
                link_sessions.clone(),
            ));
        }
        let pending = Arc::new(AtomicUsize::new(0));
        let discovery = Self::spawn_discovery(&myself, &args, clock, pending.clone(), 0).await?;
        let routing = Self::spawn_routing(&myself, &args, clock, Vec::new(), 0).await?;
        let sessions = Self::spawn_sessions(&myself, &args, clock, &link_sessions, 0).await?;
        let ledger = Self::spawn_ledger(&myself, &args, 0).await?;
        let e2e = Self::spawn_e2e(&myself, &args, clock, 0).await?;
        let crdt_pending = Arc::new(AtomicUsize::new(0));
        let crdt_watchers = CrdtWatchers {
            changes: LazyBroadcast::default(),
            channel_posts: LazyBroadcast::default(),
        };
        let crdt = Self::spawn_crdt(
            &myself,
            &args,
            clock,
            crdt_pending.clone(),
            &crdt_watchers,
            0,
        )
        .await?;
        Ok(NodeState {
            link_sessions,
            crdt,
            crdt_pending,
            crdt_watchers,
            clock,
            discovery,
            discovery_pending: pending,
            routing,
            sessions,
            ledger,
            e2e,
            verified_links: BTreeSet::new(),
            refused: BTreeSet::new(),
            restarts: 0,
            recent_restarts: Vec::new(),
            envelopes_received: 0,
            decode_errors: 0,
            inbound_dropped: 0,
            relay_limiter: RateLimiter::new(args.settings.relay_limit.clone()),
            rate_limited: 0,
            args,
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
            NodeMsg::Link(event) => {
                match event {
                    LinkEvent::Down { neighbor } => {
                        state.verified_links.remove(&neighbor);
                        state.args.observer.link_down(neighbor);
                    }
                    LinkEvent::Up { neighbor, .. } => state.args.observer.link_up(neighbor),
                    LinkEvent::Cost { .. } => {}
                    // Only routing acts on a suspicion.
                    LinkEvent::Suspected { .. } => {
                        state.tell_routing(RoutingMsg::Link(event));
                        return Ok(());
                    }
                }
                let _ = state.sessions.cast(SessionMsg::Link(event));
                if let Some(crdt) = &state.crdt {
                    let _ = crdt.cast(CrdtMsg::Link(event));
                }
                state.tell_routing(RoutingMsg::Link(event));
            }
            NodeMsg::Routes(reply) => {
                match &state.routing {
                    Some(routing) => {
                        if let Err(e) = routing.cast(RoutingMsg::Routes(reply)) {
                            tracing::warn!(error = %e, "routing unavailable for a route query");
                        }
                    }
                    // No routing actor: the table is empty.
                    None => {
                        let _ = reply.send(Vec::new());
                    }
                }
            }
            NodeMsg::Sessions(reply) => {
                if let Err(e) = state.sessions.cast(SessionMsg::Sessions(reply)) {
                    tracing::warn!(error = %e, "sessions unavailable for a query");
                }
            }
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
                let forwarding = match &state.routing {
                    Some(routing) => routing
                        .call(RoutingMsg::Stats, None)
                        .await
                        .ok()
                        .and_then(|r| r.success_or(()).ok())
                        .unwrap_or_default(),
                    None => ForwardingStats::default(),
                };
                let _ = reply.send(NodeStatus {
                    id: state.args.identity.id(),
                    uptime_ms: state.clock.now().0,
                    neighbors,
                    actor_restarts: state.restarts,
                    envelopes_received: state.envelopes_received,
                    envelope_decode_errors: state.decode_errors,
                    inbound_dropped: state.inbound_dropped,
                    rate_limited: state.rate_limited,
                    relay_limit: state.relay_limiter.limit().clone(),
                    forwarding,
                });
            }
            NodeMsg::Send {
                destination,
                service,
                payload,
                reply,
            } => match &state.routing {
                Some(routing) => {
                    let _ = routing.cast(RoutingMsg::Send {
                        destination,
                        service,
                        payload,
                        reply,
                    });
                }
                None => {
                    if let Some(reply) = reply {
                        let _ = reply.send(Err(SendError::RoutingDisabled));
                    }
                }
            },
            NodeMsg::LedgerMembers(members) => {
                if state.args.settings.admission.set_ledger_members(members) {
                    let _ = state
                        .sessions
                        .cast(SessionMsg::Admission(state.args.settings.admission.clone()));
                }
            }
            NodeMsg::E2e(message) => {
                let _ = state.e2e.cast(message);
            }
            NodeMsg::Crdt(message) => match (&state.crdt, message) {
                (Some(crdt), message) => {
                    let _ = crdt.cast(message);
                }
                // No registry to look in: the e2e actor asks the destination itself.
                (None, CrdtMsg::LookupKeys { node }) => {
                    let _ = state.e2e.cast(E2eMsg::KeysUnknown { node });
                }
                // Dropping the message (and its reply port) tells the caller the
                // subsystem is down.
                (None, _) => {}
            },
            NodeMsg::CrdtWatch(reply) => {
                let _ = reply.send(state.crdt_watchers.changes.subscribe());
            }
            NodeMsg::ChannelWatch(reply) => {
                let _ = reply.send(state.crdt_watchers.channel_posts.subscribe());
            }
            NodeMsg::Crash(Subsystem::Crdt, reason) => {
                if let Some(crdt) = &state.crdt {
                    crdt.stop(Some(format!("injected fault: {reason}")));
                }
            }
            NodeMsg::Service(delivered) if delivered.service == Service::E2e => {
                let _ = state.e2e.cast(E2eMsg::Inbound(delivered));
            }
            NodeMsg::Service(delivered) => match (delivered.service, &state.ledger) {
                (Service::Ledger, Some(ledger)) => {
                    let _ = ledger.cast(LedgerMsg::Inbound {
                        from: delivered.origin,
                        payload: delivered.payload,
                    });
                }
                (service, _) => {
                    metrics::counter!("x0_node_inbound_dropped_total", "reason" => "no_subsystem")
                        .increment(1);
                    tracing::debug!(?service, "a message for a subsystem this node does not run");
                }
            },
            NodeMsg::Ledger(message) => {
                // Without a ledger the message (and its reply port) is dropped, which the
                // caller sees as the ledger being down.
                if let Some(ledger) = &state.ledger {
                    let _ = ledger.cast(*message);
                }
            }
            NodeMsg::Crash(Subsystem::E2e, reason) => {
                state.e2e.stop(Some(format!("injected fault: {reason}")));
            }
            NodeMsg::Crash(Subsystem::Ledger, reason) => {
                if let Some(ledger) = &state.ledger {
                    ledger.stop(Some(format!("injected fault: {reason}")));
                }
            }
            NodeMsg::Unresponsive(neighbor) => {
                let _ = state.discovery.cast(DiscoveryMsg::Unresponsive(neighbor));
            }
            NodeMsg::Crash(Subsystem::Discovery, reason) => {
                let _ = state.discovery.cast(DiscoveryMsg::Crash(reason));
            }
            NodeMsg::Crash(Subsystem::Routing, reason) => {
                state.tell_routing(RoutingMsg::Crash(reason));
            }
            NodeMsg::Crash(Subsystem::Sessions, reason) => {
                // The sessions actor has no crash message; stopping it abnormally is
                // the same to its supervisor.
                state
                    .sessions
                    .stop(Some(format!("injected fault: {reason}")));
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
        if is_same(&cell, &state.discovery.get_cell()) {
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
            // The new discovery knows no links yet and will announce them as they beacon.
            state.tell_routing(RoutingMsg::ResetLinks);
        } else if state
            .routing
            .as_ref()
            .is_some_and(|r| is_same(&cell, &r.get_cell()))
        {
            state.note_restart(Subsystem::Routing, &why)?;
            // Routes are relearned from neighbors; links come from discovery's table.
            let links = match state.discovery.call(DiscoveryMsg::Neighbors, None).await {
                Ok(ractor::rpc::CallResult::Success(neighbors)) => neighbors
                    .iter()
                    .map(|n| (n.id, link_cost(n.loss, n.rtt_ms)))
                    .collect(),
                _ => Vec::new(),
            };
            state.routing =
                Self::spawn_routing(&myself, &state.args, state.clock, links, state.restarts)
                    .await?;
        } else if state
            .ledger
            .as_ref()
            .is_some_and(|l| is_same(&cell, &l.get_cell()))
        {
            state.note_restart(Subsystem::Ledger, &why)?;
            state.ledger = Self::spawn_ledger(&myself, &state.args, state.restarts).await?;
        } else if state
            .crdt
            .as_ref()
            .is_some_and(|c| is_same(&cell, &c.get_cell()))
        {
            state.note_restart(Subsystem::Crdt, &why)?;
            state.crdt_pending.store(0, Ordering::Relaxed);
            state.crdt = Self::spawn_crdt(
                &myself,
                &state.args,
                state.clock,
                state.crdt_pending.clone(),
                &state.crdt_watchers,
                state.restarts,
            )
            .await?;
            // It starts from its saved state; its links come from discovery's table.
            if let (Some(crdt), Ok(ractor::rpc::CallResult::Success(neighbors))) = (
                &state.crdt,
                state.discovery.call(DiscoveryMsg::Neighbors, None).await,
            ) {
                for n in neighbors {
                    let _ = crdt.cast(CrdtMsg::Link(LinkEvent::Up {
                        neighbor: n.id,
                        cost: link_cost(n.loss, n.rtt_ms),
                    }));
                }
            }
        } else if is_same(&cell, &state.e2e.get_cell()) {
            state.note_restart(Subsystem::E2e, &why)?;
            state.e2e = Self::spawn_e2e(&myself, &state.args, state.clock, state.restarts).await?;
        } else if is_same(&cell, &state.sessions.get_cell()) {
            state.note_restart(Subsystem::Sessions, &why)?;
            state.sessions = Self::spawn_sessions(
                &myself,
                &state.args,
                state.clock,
                &state.link_sessions,
                state.restarts,
            )
            .await?;
            // Sessions are made afresh with the neighbors discovery knows.
            if let Ok(ractor::rpc::CallResult::Success(neighbors)) =
                state.discovery.call(DiscoveryMsg::Neighbors, None).await
            {
                for n in neighbors {
                    let _ = state.sessions.cast(SessionMsg::Link(LinkEvent::Up {
                        neighbor: n.id,
                        cost: link_cost(n.loss, n.rtt_ms),
                    }));
                }
            }
        }
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
    fn route(&mut self, mut inbound: Inbound) {
        self.envelopes_received += 1;
        let reply = inbound.reply.take();
        let envelope = match Envelope::decode_from(inbound.link_peer, &inbound.bytes) {
            Ok(envelope) => envelope,
            Err(e) => {
                self.decode_errors += 1;
                metrics::counter!("x0_node_envelope_decode_errors_total", "reason" => e.reason())
                    .increment(1);
                tracing::debug!(peer = %inbound.link_peer, error = %e, "undecodable envelope");
                return;
            }
        };
        // Everything on the wire is one hop (multi-hop data rides inside relays that each
        // hop seals anew), and beacons and routing updates describe the link they arrive
        // on: an envelope must come from the link peer itself.
        if envelope.from != inbound.link_peer {
            self.drop_inbound("not_from_link_peer");
            return;
        }
        let (envelope, in_session) = if envelope.kind == Kind::Link {
            match self.open_link(&envelope) {
                Some(inner) if inner.from == envelope.from && inner.kind != Kind::Link => {
                    (inner, true)
                }
                Some(_) => {
                    self.drop_inbound("bad_link_content");
                    return;
                }
                None => return,
            }
        } else {
            (envelope, false)
        };
        // What arrived in the session is the peer's: its keys came from a handshake the
        // peer signed. Anything else proves its sender here.
        if !in_session {
            if envelope.kind.is_link_local() {
                // Unsigned (see `Envelope::link_local`): it rides on a link whose peer
                // has already proved its key with a signed envelope; until then it is
                // dropped, and the sender asks again.
                if !self.verified_links.contains(&envelope.from) {
                    self.drop_inbound("unauthenticated_link");
                    return;
                }
            } else if !self.authenticate_link_peer(&envelope) {
                self.drop_inbound("bad_signature");
                return;
            }
            if envelope.kind == Kind::Beacon {
                self.link_sessions.heard_in_clear(&envelope.from);
            }
        }
        if envelope.kind == Kind::Handshake {
            // Refusals of strangers are logged and counted there; it acknowledges
            // receipt (handshakes are resent until acknowledged).
            let message = SessionMsg::Handshake {
                envelope,
                ack: reply,
            };
            if self.sessions.cast(message).is_err() {
                self.drop_inbound("actor_down");
            }
            return;
        }
        if !self.args.settings.admission.admits(&envelope.from) {
            self.drop_inbound("not_admitted");
            // Whichever side would start the handshake, a stranger gets no session:
            // say so once per stranger (the set is bounded like the verified links).
            if self.refused.len() >= 4 * self.args.settings.discovery.max_neighbors {
                self.refused.clear();
            }
            if self.refused.insert(envelope.from) {
                metrics::counter!("x0_admission_refused_total").increment(1);
                tracing::warn!(peer = %envelope.from, "refused: peer is not in the trust list");
            }
            return;
        }
        match envelope.kind {
            Kind::Routing | Kind::Relay => {
                if envelope.kind == Kind::Relay
                    && !self.relay_limiter.allow(
                        envelope.from,
                        inbound.bytes.len() as u64,
                        self.clock.now(),
                    )
                {
                    self.rate_limited += 1;
                    self.drop_inbound("rate_limited");
                    return;
                }
                if envelope.kind == Kind::Relay
                    && let Some(reply) = reply
                {
                    // The hop-by-hop ack: "it reached me", whatever happens next.
                    let _ =
                        reply.send(Envelope::seal(&self.args.identity, Kind::Relay, Vec::new()));
                }
                let message = if envelope.kind == Kind::Routing {
                    RoutingMsg::Inbound(envelope)
                } else {
                    RoutingMsg::Relay(envelope)
                };
                match &self.routing {
                    Some(routing) if routing.cast(message).is_ok() => {}
                    Some(_) => self.drop_inbound("actor_down"),
                    None => self.drop_inbound("routing_disabled"),
                }
            }
            // Data travels only inside relays; handshakes and link frames were handled
            // above.
            Kind::Data | Kind::Handshake | Kind::Link => self.drop_inbound("unexpected_kind"),
            Kind::Crdt => {
                let Some(crdt) = &self.crdt else {
                    self.drop_inbound("crdt_disabled");
                    return;
                };
                if self.crdt_pending.load(Ordering::Relaxed)
                    >= self.args.settings.inbound_queue_limit
                {
                    self.drop_inbound("queue_full");
                    return;
                }
                self.crdt_pending.fetch_add(1, Ordering::Relaxed);
                if crdt.cast(CrdtMsg::Inbound(envelope)).is_err() {
                    self.crdt_pending.fetch_sub(1, Ordering::Relaxed);
                    self.drop_inbound("actor_down");
                }
            }
            Kind::Beacon | Kind::Probe => {
                let limit = self.args.settings.inbound_queue_limit;
                if self.discovery_pending.load(Ordering::Relaxed) >= limit {
                    self.drop_inbound("queue_full");
                    return;
                }
                self.discovery_pending.fetch_add(1, Ordering::Relaxed);
                let message = if envelope.kind == Kind::Beacon {
                    DiscoveryMsg::Beacon(envelope)
                } else {
                    DiscoveryMsg::Probe(envelope)
                };
                if self.discovery.cast(message).is_err() {
                    self.discovery_pending.fetch_sub(1, Ordering::Relaxed);
                    self.drop_inbound("actor_down");
                }
            }
        }
    }

    /// Checks the envelope signature of the first envelope from each link peer.
    ///
    /// Not of every one: these kinds are one-hop and `from` is already required to be the
    /// transport-authenticated link peer (Noise in the node, the link table in the
    /// simulator), so later checks would prove nothing new. The first check catches a peer
    /// whose envelope key does not match its transport key. Checking every beacon cost 90%
    /// of a 1000-node simulation's CPU (measured with perf).
    fn authenticate_link_peer(&mut self, envelope: &Envelope) -> bool {
        if self.verified_links.contains(&envelope.from) {
            return true;
        }
        if let Err(e) = envelope.verify() {
            metrics::counter!("x0_node_envelope_rejected_total", "kind" => envelope.kind.name(), "reason" => e.reason())
                .increment(1);
            return false;
        }
        // Entries leave when their link goes down; a flood of short-lived peers that never
        // become links is bounded by starting over, which only costs re-verification.
        if self.verified_links.len() >= 4 * self.args.settings.discovery.max_neighbors {
            self.verified_links.clear();
        }
        self.verified_links.insert(envelope.from);
        true
    }

    /// The envelope inside a link frame, or `None` (counted) when it does not open.
    fn open_link(&mut self, envelope: &Envelope) -> Option<Envelope> {
        let peer = envelope.from;
        match self.link_sessions.open(peer, envelope) {
            Ok(inner) => match Envelope::decode_in_link(peer, &inner) {
                Ok(inner) => Some(inner),
                Err(e) => {
                    metrics::counter!("x0_link_rejected_total", "reason" => e.reason())
                        .increment(1);
                    None
                }
            },
            Err(e) => {
                metrics::counter!("x0_link_rejected_total", "reason" => e.reason()).increment(1);
                tracing::debug!(%peer, error = %e, "link frame refused");
                if matches!(
                    e,
                    LinkError::NoSession
                        | LinkError::Session(
                            x0_protocols::crypto::SessionError::AuthenticationFailed
                        )
                ) {
                    let _ = self.sessions.cast(SessionMsg::Unreadable(peer));
                }
                None
            }
        }
    }

    fn tell_routing(&self, message: RoutingMsg) {
        if let Some(routing) = &self.routing {
            // A dead routing actor is being restarted; what it missed it relearns.
            let _ = routing.cast(message);
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
