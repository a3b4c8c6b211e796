//! The swarm task: owns the libp2p `Swarm`, turns commands into network actions and
//! network events into inbound envelopes.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use libp2p::core::ConnectedPoint;
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{self, OutboundRequestId, ProtocolSupport, ResponseChannel};
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{
    Multiaddr, PeerId, StreamProtocol, Swarm, gossipsub, identify, kad, noise, ping, tcp, yamux,
};
use tokio::sync::{mpsc, oneshot};
use x0_actors::{Inbound, PortError};
use x0_protocols::{Envelope, Identity};

use super::codec::{EnvelopeCodec, PROTOCOL};
use super::{Libp2pPort, node_id_of};

const KAD_PROTOCOL: StreamProtocol = StreamProtocol::new("/x0tta6bl4/kad/1");
const IDENTIFY_PROTOCOL: &str = "/x0tta6bl4/id/1";
/// The mesh-wide gossip topic every node joins.
pub const MESH_TOPIC: &str = "x0/mesh/1";
/// How long an actor may take to answer an inbound request.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
const BOOTSTRAP_RETRY: Duration = Duration::from_secs(3);
const KAD_REFRESH: Duration = Duration::from_secs(30);

pub enum Command {
    Send {
        to: PeerId,
        bytes: Vec<u8>,
    },
    SendToAll {
        bytes: Vec<u8>,
        /// Peers sent their copy another way (sealed in their session).
        except: Vec<PeerId>,
    },
    Publish {
        topic: String,
        bytes: Vec<u8>,
    },
    Request {
        to: PeerId,
        bytes: Vec<u8>,
        reply: ReplyTo,
    },
    ListenAddrs(oneshot::Sender<Vec<Multiaddr>>),
    PeerAddrs(oneshot::Sender<BTreeMap<PeerId, Multiaddr>>),
    Shutdown,
}

#[derive(NetworkBehaviour)]
struct Behaviour {
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    kad: kad::Behaviour<kad::store::MemoryStore>,
    gossipsub: gossipsub::Behaviour,
    envelopes: request_response::Behaviour<EnvelopeCodec>,
}

pub struct SwarmConfig {
    pub listen: Vec<Multiaddr>,
    pub bootstrap: Vec<Multiaddr>,
    pub max_peers: usize,
    /// Find and dial the rest of the mesh through Kademlia. Off, the node keeps to its
    /// bootstrap peers (and whoever dials it): a fixed topology, as a radio mesh whose
    /// range decides the neighbors, or a test that needs multi-hop paths on one host.
    pub discover: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum SwarmError {
    #[error("building the libp2p transport: {0}")]
    Transport(String),
    #[error("cannot listen on {addr}: {reason}")]
    Listen { addr: Multiaddr, reason: String },
}

/// A running swarm: the port for the actors, and where inbound envelopes come out.
pub struct SwarmHandle {
    pub port: Libp2pPort,
    pub inbound: mpsc::Receiver<Inbound>,
    pub task: tokio::task::JoinHandle<()>,
    pub control: SwarmControl,
}

/// Questions and orders for the swarm task from outside the actors (API, shutdown).
#[derive(Clone)]
pub struct SwarmControl {
    commands: mpsc::Sender<Command>,
}

impl SwarmControl {
    /// The addresses the node listens on, with real ports.
    pub async fn listen_addrs(&self) -> Vec<Multiaddr> {
        let (tx, rx) = oneshot::channel();
        if self.commands.send(Command::ListenAddrs(tx)).await.is_err() {
            return Vec::new();
        }
        rx.await.unwrap_or_default()
    }

    /// Connected peers and the address each is reached at.
    pub async fn peer_addrs(&self) -> BTreeMap<PeerId, Multiaddr> {
        let (tx, rx) = oneshot::channel();
        if self.commands.send(Command::PeerAddrs(tx)).await.is_err() {
            return BTreeMap::new();
        }
        rx.await.unwrap_or_default()
    }

    pub async fn shutdown(&self) {
        let _ = self.commands.send(Command::Shutdown).await;
    }
}

/// Builds the swarm, starts listening, and runs it on its own task.
///
/// Returns once every listen address is bound (so `listen_addrs` is accurate).
pub async fn spawn_swarm(
    identity: &Identity,
    config: SwarmConfig,
) -> Result<SwarmHandle, SwarmError> {
    let mut secret = *identity.ed25519_secret();
    let keypair = libp2p::identity::Keypair::ed25519_from_bytes(&mut secret)
        .map_err(|e| SwarmError::Transport(e.to_string()))?;
    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .map_err(|e| SwarmError::Transport(e.to_string()))?
        .with_quic()
        .with_behaviour(|key| {
            let peer_id = key.public().to_peer_id();
            let mut kad_config = kad::Config::new(KAD_PROTOCOL);
            kad_config.set_query_timeout(Duration::from_secs(30));
            // We bootstrap ourselves once connected and then every KAD_REFRESH; kad's own
            // timer fires before any connection and only logs a warning.
            kad_config.set_periodic_bootstrap_interval(None);
            let mut kad = kad::Behaviour::with_config(
                peer_id,
                kad::store::MemoryStore::new(peer_id),
                kad_config,
            );
            // Loopback and private meshes never get a confirmed external address, which
            // would leave Kademlia in client mode and invisible to its peers.
            kad.set_mode(Some(kad::Mode::Server));
            // Room for the largest envelope plus gossipsub's own framing.
            let gossip_config = gossipsub::ConfigBuilder::default()
                .max_transmit_size(x0_protocols::envelope::MAX_ENVELOPE_BYTES + 4096)
                .build()?;
            let gossipsub = gossipsub::Behaviour::new(
                gossipsub::MessageAuthenticity::Signed(key.clone()),
                gossip_config,
            )?;
            Ok(Behaviour {
                identify: identify::Behaviour::new(identify::Config::new(
                    IDENTIFY_PROTOCOL.to_string(),
                    key.public(),
                )),
                ping: ping::Behaviour::new(ping::Config::new()),
                kad,
                gossipsub,
                envelopes: request_response::Behaviour::with_codec(
                    EnvelopeCodec,
                    [(PROTOCOL, ProtocolSupport::Full)],
                    request_response::Config::default()
                        .with_request_timeout(Duration::from_secs(10)),
                ),
            })
        })
        .map_err(|e| SwarmError::Transport(e.to_string()))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build();

    let topic = gossipsub::IdentTopic::new(MESH_TOPIC);
    swarm
        .behaviour_mut()
        .gossipsub
        .subscribe(&topic)
        .map_err(|e| SwarmError::Transport(e.to_string()))?;

    let mut listeners = HashSet::new();
    for addr in &config.listen {
        let id = swarm
            .listen_on(addr.clone())
            .map_err(|e| SwarmError::Listen {
                addr: addr.clone(),
                reason: e.to_string(),
            })?;
        listeners.insert(id);
    }
    // Wait until each listener reports an address (or fails), so callers see real ports.
    let mut bound = Vec::new();
    while !listeners.is_empty() {
        match tokio::time::timeout(Duration::from_secs(10), swarm.select_next_some()).await {
            Ok(SwarmEvent::NewListenAddr {
                listener_id,
                address,
            }) => {
                listeners.remove(&listener_id);
                bound.push(address);
            }
            Ok(SwarmEvent::ListenerClosed {
                listener_id,
                reason,
                addresses,
                ..
            }) if listeners.contains(&listener_id) => {
                let addr = addresses.first().cloned().unwrap_or_else(Multiaddr::empty);
                return Err(SwarmError::Listen {
                    addr,
                    reason: format!("{reason:?}"),
                });
            }
            Ok(SwarmEvent::ListenerError { listener_id, error })
                if listeners.contains(&listener_id) =>
            {
                return Err(SwarmError::Listen {
                    addr: Multiaddr::empty(),
                    reason: error.to_string(),
                });
            }
            Ok(_) => {}
            Err(_) => {
                return Err(SwarmError::Listen {
                    addr: config
                        .listen
                        .first()
                        .cloned()
                        .unwrap_or_else(Multiaddr::empty),
                    reason: "no address bound within 10 s".into(),
                });
            }
        }
    }

    let (command_tx, command_rx) = mpsc::channel(4096);
    let (inbound_tx, inbound_rx) = mpsc::channel(4096);
    let mut task = SwarmTask {
        swarm,
        config,
        listen_addrs: bound,
        connected: BTreeMap::new(),
        pending: HashMap::new(),
        replies: FuturesUnordered::new(),
        inbound: inbound_tx,
        bootstrapped: false,
    };
    task.dial_bootstrap();
    let handle = tokio::spawn(task.run(command_rx));
    Ok(SwarmHandle {
        port: Libp2pPort::new(command_tx.clone()),
        inbound: inbound_rx,
        task: handle,
        control: SwarmControl {
            commands: command_tx,
        },
    })
}

/// Where the answer to an outbound request goes.
type ReplyTo = oneshot::Sender<Result<Vec<u8>, PortError>>;

type PendingReply =
    futures::future::BoxFuture<'static, (Option<Envelope>, ResponseChannel<Vec<u8>>)>;

struct SwarmTask {
    swarm: Swarm<Behaviour>,
    config: SwarmConfig,
    listen_addrs: Vec<Multiaddr>,
    /// Connected peers and the address we reach them at.
    connected: BTreeMap<PeerId, Multiaddr>,
    /// Outbound requests waiting for a response; `None` for fire-and-forget sends.
    pending: HashMap<OutboundRequestId, Option<ReplyTo>>,
    /// Inbound requests whose answer the actors are working on.
    replies: FuturesUnordered<PendingReply>,
    inbound: mpsc::Sender<Inbound>,
    bootstrapped: bool,
}

impl SwarmTask {
    async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        let mut bootstrap_retry = tokio::time::interval(BOOTSTRAP_RETRY);
        let mut kad_refresh = tokio::time::interval(KAD_REFRESH);
        loop {
            tokio::select! {
                command = commands.recv() => match command {
                    Some(Command::Shutdown) | None => break,
                    Some(command) => self.handle_command(command),
                },
                event = self.swarm.select_next_some() => self.handle_event(event),
                Some((answer, channel)) = self.replies.next(), if !self.replies.is_empty() => {
                    let bytes = answer.map(|e| e.encode()).unwrap_or_default();
                    let _ = self.swarm.behaviour_mut().envelopes.send_response(channel, bytes);
                }
                _ = bootstrap_retry.tick() => {
                    // Without discovery the bootstrap peers are the topology: keep
                    // redialing the missing ones (a restarted neighbor comes back).
                    if self.connected.is_empty() || !self.config.discover {
                        self.dial_bootstrap();
                    }
                }
                _ = kad_refresh.tick() => {
                    if !self.connected.is_empty() && self.config.discover {
                        let _ = self.swarm.behaviour_mut().kad.bootstrap();
                    }
                }
            }
        }
        tracing::debug!("swarm task stopped");
    }

    /// Whether `addr` (with or without a `/p2p/` suffix) is one of the bootstrap addresses.
    fn is_bootstrap(&self, addr: &Multiaddr) -> bool {
        let strip = |a: &Multiaddr| -> Multiaddr {
            a.iter()
                .filter(|p| !matches!(p, Protocol::P2p(_)))
                .collect()
        };
        let addr = strip(addr);
        self.config.bootstrap.iter().any(|b| strip(b) == addr)
    }

    fn dial_bootstrap(&mut self) {
        let reached: Vec<Multiaddr> = self.connected.values().cloned().collect();
        for addr in self.config.bootstrap.clone() {
            let opts = match addr.iter().last() {
                Some(Protocol::P2p(peer)) if self.connected.contains_key(&peer) => continue,
                Some(Protocol::P2p(peer)) => DialOpts::peer_id(peer)
                    .addresses(vec![addr.clone()])
                    .build(),
                _ if reached.contains(&addr) => continue,
                _ => DialOpts::unknown_peer_id().address(addr.clone()).build(),
            };
            if let Err(e) = self.swarm.dial(opts) {
                tracing::debug!(%addr, error = %e, "bootstrap dial failed");
            }
        }
    }

    fn handle_command(&mut self, command: Command) {
        match command {
            Command::Send { to, bytes } => {
                // Sends are one hop: a peer we hold no connection to is no neighbor,
                // and dialing it would add a link the topology does not have.
                if !self.connected.contains_key(&to) {
                    metrics::counter!("x0_network_send_failures_total", "reason" => "not_connected")
                        .increment(1);
                    tracing::debug!(peer = %to, kind = ?bytes.get(1), "send to a peer we are not connected to dropped");
                    return;
                }
                let id = self
                    .swarm
                    .behaviour_mut()
                    .envelopes
                    .send_request(&to, bytes);
                self.pending.insert(id, None);
                metrics::counter!("x0_network_envelopes_sent_total").increment(1);
            }
            Command::SendToAll { bytes, except } => {
                let peers: Vec<PeerId> = self
                    .connected
                    .keys()
                    .filter(|p| !except.contains(p))
                    .copied()
                    .collect();
                for peer in peers {
                    let id = self
                        .swarm
                        .behaviour_mut()
                        .envelopes
                        .send_request(&peer, bytes.clone());
                    self.pending.insert(id, None);
                    metrics::counter!("x0_network_envelopes_sent_total").increment(1);
                }
            }
            Command::Publish { topic, bytes } => {
                let topic = gossipsub::IdentTopic::new(topic);
                let gossip = &mut self.swarm.behaviour_mut().gossipsub;
                let _ = gossip.subscribe(&topic);
                if let Err(e) = gossip.publish(topic, bytes) {
                    metrics::counter!("x0_network_send_failures_total", "reason" => "gossip")
                        .increment(1);
                    tracing::debug!(error = %e, "gossip publish failed");
                }
            }
            Command::Request { to, bytes, reply } => {
                let id = self
                    .swarm
                    .behaviour_mut()
                    .envelopes
                    .send_request(&to, bytes);
                self.pending.insert(id, Some(reply));
                metrics::counter!("x0_network_envelopes_sent_total").increment(1);
            }
            Command::ListenAddrs(reply) => {
                let _ = reply.send(self.listen_addrs.clone());
            }
            Command::PeerAddrs(reply) => {
                let _ = reply.send(self.connected.clone());
            }
            Command::Shutdown => {}
        }
    }

    fn handle_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::NewListenAddr { address, .. } if !self.listen_addrs.contains(&address) => {
                self.listen_addrs.push(address);
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                endpoint,
                connection_id,
                ..
            } if !self.config.discover
                && endpoint.is_dialer()
                && !self.is_bootstrap(endpoint.get_remote_address()) =>
            {
                // A fixed topology: behaviours (Kademlia, request-response) may dial
                // peers they learned of, but only the configured links may exist.
                tracing::debug!(peer = %peer_id, "closing a connection outside the fixed topology");
                self.swarm.close_connection(connection_id);
            }
            SwarmEvent::ConnectionEstablished {
                peer_id, endpoint, ..
            } => {
                let remote = match &endpoint {
                    ConnectedPoint::Dialer { address, .. } => {
                        self.swarm
                            .behaviour_mut()
                            .kad
                            .add_address(&peer_id, address.clone());
                        address.clone()
                    }
                    ConnectedPoint::Listener { send_back_addr, .. } => send_back_addr.clone(),
                };
                self.connected.entry(peer_id).or_insert(remote);
                metrics::gauge!("x0_network_connected_peers").set(self.connected.len() as f64);
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established: 0,
                ..
            } => {
                self.connected.remove(&peer_id);
                metrics::gauge!("x0_network_connected_peers").set(self.connected.len() as f64);
            }
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
                peer_id,
                info,
                ..
            })) => {
                // We reach a peer that dialed us at an ephemeral port; show its own
                // listen address on the same transport instead.
                if let Some(known) = self.connected.get_mut(&peer_id)
                    && !info.listen_addrs.contains(known)
                    && let Some(better) =
                        info.listen_addrs.iter().find(|a| same_transport(a, known))
                {
                    *known = better.clone();
                }
                for addr in info.listen_addrs {
                    self.swarm.behaviour_mut().kad.add_address(&peer_id, addr);
                }
                // The first peer whose addresses we know: look for the rest of the mesh.
                if !self.bootstrapped && self.config.discover {
                    self.bootstrapped = self.swarm.behaviour_mut().kad.bootstrap().is_ok();
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Kad(kad::Event::RoutingUpdated {
                peer,
                addresses,
                ..
            })) => {
                let wanted = self.config.discover
                    && !self.connected.contains_key(&peer)
                    && self.connected.len() < self.config.max_peers
                    && peer != *self.swarm.local_peer_id();
                if wanted {
                    let opts = DialOpts::peer_id(peer)
                        .addresses(addresses.into_vec())
                        .build();
                    let _ = self.swarm.dial(opts);
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Envelopes(event)) => {
                self.handle_envelope_event(event)
            }
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(gossipsub::Event::Message {
                propagation_source,
                message,
                ..
            })) => {
                self.deliver(propagation_source, message.data, None);
            }
            _ => {}
        }
    }

    fn handle_envelope_event(&mut self, event: request_response::Event<Vec<u8>, Vec<u8>>) {
        match event {
            request_response::Event::Message { peer, message, .. } => match message {
                request_response::Message::Request {
                    request, channel, ..
                } => {
                    let (reply_tx, reply_rx) = oneshot::channel();
                    if self.deliver(peer, request, Some(reply_tx)) {
                        self.replies.push(Box::pin(async move {
                            let answer = tokio::time::timeout(REPLY_TIMEOUT, reply_rx)
                                .await
                                .ok()
                                .and_then(Result::ok);
                            (answer, channel)
                        }));
                    } else {
                        let _ = self
                            .swarm
                            .behaviour_mut()
                            .envelopes
                            .send_response(channel, Vec::new());
                    }
                }
                request_response::Message::Response {
                    request_id,
                    response,
                } => {
                    if let Some(Some(reply)) = self.pending.remove(&request_id) {
                        let _ = reply.send(Ok(response));
                    }
                }
            },
            request_response::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                let reason = match &error {
                    request_response::OutboundFailure::DialFailure => "dial_failure",
                    request_response::OutboundFailure::Timeout => "timeout",
                    request_response::OutboundFailure::ConnectionClosed => "connection_closed",
                    request_response::OutboundFailure::UnsupportedProtocols => {
                        "unsupported_protocol"
                    }
                    request_response::OutboundFailure::Io(_) => "io",
                };
                metrics::counter!("x0_network_send_failures_total", "reason" => reason)
                    .increment(1);
                tracing::debug!(%peer, %error, "envelope not delivered");
                if let Some(Some(reply)) = self.pending.remove(&request_id) {
                    let failure = match (&error, node_id_of(&peer)) {
                        (request_response::OutboundFailure::Timeout, _) => PortError::Timeout,
                        (_, Some(node)) => PortError::Unreachable(node),
                        (_, None) => PortError::Closed,
                    };
                    let _ = reply.send(Err(failure));
                }
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                tracing::debug!(%peer, %error, "inbound envelope failed");
            }
            request_response::Event::ResponseSent { .. } => {}
        }
    }

    /// Hands an envelope to the node; false if it was dropped (with `reply` unused).
    fn deliver(
        &mut self,
        peer: PeerId,
        bytes: Vec<u8>,
        reply: Option<oneshot::Sender<Envelope>>,
    ) -> bool {
        let Some(link_peer) = node_id_of(&peer) else {
            metrics::counter!("x0_node_inbound_dropped_total", "reason" => "non_ed25519_peer")
                .increment(1);
            return false;
        };
        metrics::counter!("x0_network_envelopes_received_total").increment(1);
        let inbound = Inbound {
            link_peer,
            bytes: Bytes::from(bytes),
            reply,
        };
        if self.inbound.try_send(inbound).is_err() {
            metrics::counter!("x0_node_inbound_dropped_total", "reason" => "network_queue_full")
                .increment(1);
            return false;
        }
        true
    }
}

/// Whether two addresses use the same transport (TCP, or UDP for QUIC).
fn same_transport(a: &Multiaddr, b: &Multiaddr) -> bool {
    fn transport(m: &Multiaddr) -> Option<&'static str> {
        m.iter().nth(1).map(|p| match p {
            Protocol::Tcp(_) => "tcp",
            Protocol::Udp(_) => "udp",
            _ => "other",
        })
    }
    transport(a).is_some() && transport(a) == transport(b)
}
