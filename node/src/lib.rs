//! The real x0tta6bl4 node: the actor tree of `x0-actors` on a libp2p swarm, with an HTTP
//! API, Prometheus metrics, a TOML config and an identity kept on disk.
//!
//! Run it from the command line (`x0tta6bl4 node --config node.toml`) or embed it:
//!
//! ```
//! # async fn example() -> Result<(), x0_node::NodeError> {
//! let dir = std::env::temp_dir().join(format!("x0-doc-{}", std::process::id()));
//! let node = x0_node::Node::builder()
//!     .data_dir(&dir)
//!     .listen("/ip4/127.0.0.1/tcp/0".parse().expect("a multiaddr"))
//!     .spawn()
//!     .await?;
//! println!("node {} listens on {:?}", node.id(), node.listen_addrs().await);
//! assert!(node.neighbors().await?.is_empty(), "nobody else is here");
//! node.shutdown().await;
//! # let _ = std::fs::remove_dir_all(&dir);
//! # Ok(())
//! # }
//! # tokio::runtime::Runtime::new().expect("runtime").block_on(example()).expect("runs");
//! ```

pub mod api;
pub mod channel_api;
pub mod config;
pub mod crdt_api;
pub mod inbox;
pub mod keystore;
pub mod ledger_api;
pub mod metrics;
pub mod p2p;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use x0_actors::{ActorError, NeighborInfo, NodeArgs, NodeHandle, NodeSettings, NodeStatus};
use x0_protocols::NodeId;

pub use config::NodeConfig;
pub use inbox::{Inbox, InboxMessage};
pub use libp2p::Multiaddr;
pub use x0_actors::{RouteEntry, SendError, Sent};

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("no data directory given (NodeBuilder::data_dir)")]
    NoDataDir,
    #[error("identity: {0}")]
    Keystore(#[from] keystore::KeystoreError),
    #[error("network: {0}")]
    Network(#[from] p2p::SwarmError),
    #[error("HTTP API on {addr}: {source}")]
    Api {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Actors(#[from] ActorError),
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error("ledger store {path}: {reason}")]
    LedgerStore { path: PathBuf, reason: String },
}

/// The ledger's file in a node's data directory.
pub const LEDGER_FILE: &str = "ledger.redb";

/// Opens the node's ledger store, checking every page's checksum and every record, so a
/// damaged file is refused at start rather than trusted or silently replaced.
pub fn open_ledger_store(data_dir: &std::path::Path) -> Result<x0_actors::LedgerStore, NodeError> {
    let path = data_dir.join(LEDGER_FILE);
    let fail = |reason: String| NodeError::LedgerStore {
        path: path.clone(),
        reason,
    };
    let db = redb::Database::builder()
        .set_check_integrity_on_open(true)
        .create(&path)
        .map_err(|e| fail(e.to_string()))?;
    x0_actors::LedgerStore::open(Arc::new(db)).map_err(|e| fail(e.to_string()))
}

/// Builds a node; see the crate docs for an example.
#[derive(Debug, Default)]
pub struct NodeBuilder {
    name: Option<String>,
    data_dir: Option<PathBuf>,
    listen: Vec<Multiaddr>,
    bootstrap: Vec<Multiaddr>,
    max_peers: Option<usize>,
    discover_peers: Option<bool>,
    api_listen: Option<SocketAddr>,
    seed: Option<u64>,
    settings: NodeSettings,
}

impl NodeBuilder {
    /// Everything from a validated config file.
    pub fn config(self, config: &NodeConfig) -> Self {
        NodeBuilder {
            name: config.name.clone(),
            data_dir: Some(config.data_dir.clone()),
            listen: config.listen.clone(),
            bootstrap: config.bootstrap.clone(),
            max_peers: Some(config.max_peers),
            discover_peers: Some(config.discover_peers),
            api_listen: config.api_listen,
            seed: config.seed,
            settings: config.node_settings(),
        }
    }

    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Where the identity lives (created on first start, kept afterwards).
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.data_dir = Some(dir.into());
        self
    }

    /// A libp2p listen address; port 0 picks a free port. Defaults to 127.0.0.1, TCP, port 0.
    pub fn listen(mut self, addr: Multiaddr) -> Self {
        self.listen.push(addr);
        self
    }

    /// An address of a node already in the mesh (`/p2p/<id>` suffix optional).
    pub fn bootstrap(mut self, addr: Multiaddr) -> Self {
        self.bootstrap.push(addr);
        self
    }

    /// Whether to find the rest of the mesh through Kademlia (default) or keep to the
    /// bootstrap peers, which then are this node's whole, fixed set of links.
    pub fn discover_peers(mut self, discover: bool) -> Self {
        self.discover_peers = Some(discover);
        self
    }

    /// Serve the HTTP API here; without it the node runs no HTTP server.
    pub fn api_listen(mut self, addr: SocketAddr) -> Self {
        self.api_listen = Some(addr);
        self
    }

    /// Seed for protocol randomness (beacon jitter); from the OS when not set.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    pub fn settings(mut self, settings: NodeSettings) -> Self {
        self.settings = settings;
        self
    }

    /// Starts the node: identity, swarm, actors, and the HTTP API if configured.
    pub async fn spawn(self) -> Result<Node, NodeError> {
        let data_dir = self.data_dir.ok_or(NodeError::NoDataDir)?;
        validate_settings(&self.settings)?;
        // Bind the API port first: if it is taken, nothing else has started yet.
        let api_listener = match self.api_listen {
            Some(addr) => Some(
                tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(|source| NodeError::Api { addr, source })?,
            ),
            None => None,
        };
        let identity = Arc::new(keystore::load_or_create(&data_dir)?);
        // Open (and check) the ledger store before anything listens: a corrupt store
        // stops the node here, with the file named.
        let ledger_store = match &self.settings.ledger {
            Some(_) => Some(open_ledger_store(&data_dir)?),
            None => None,
        };
        if self.settings.ledger.is_some() {
            x0_actors::ledger::seed_election_rng(u64::from_le_bytes(os_random()?));
        }
        let metrics = metrics::handle();
        let listen = if self.listen.is_empty() {
            vec![
                Multiaddr::empty()
                    .with(libp2p::multiaddr::Protocol::Ip4(
                        std::net::Ipv4Addr::LOCALHOST,
                    ))
                    .with(libp2p::multiaddr::Protocol::Tcp(0)),
            ]
        } else {
            self.listen
        };
        let needs_peers = !self.bootstrap.is_empty();
        let swarm = p2p::spawn_swarm(
            &identity,
            p2p::SwarmConfig {
                listen,
                bootstrap: self.bootstrap,
                max_peers: self.max_peers.unwrap_or(64),
                discover: self.discover_peers.unwrap_or(true),
            },
        )
        .await?;
        let seed = match self.seed {
            Some(seed) => seed,
            None => u64::from_le_bytes(os_random()?),
        };
        let mut settings = self.settings;
        if let Some(crdt) = &mut settings.crdt {
            // The registry record says where to reach us and what we do.
            crdt.addresses = swarm
                .control
                .listen_addrs()
                .await
                .iter()
                .map(|a| format!("{a}/p2p/{}", identity.id()))
                .collect();
            if settings
                .ledger
                .as_ref()
                .is_some_and(|l| l.validators.contains(&identity.id()))
            {
                crdt.roles.push("validator".into());
            }
        }
        let mesh_epoch_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let inbox = Arc::new(Inbox::new(inbox::DEFAULT_CAPACITY));
        let sink = inbox.clone();
        let handle = Arc::new(
            NodeHandle::spawn(NodeArgs {
                identity: identity.clone(),
                port: Arc::new(swarm.port.clone()),
                settings,
                seed,
                observer: Arc::new(move |delivered| sink.push(delivered)),
                // Session keys never come from the configurable seed.
                crypto_seed: os_random()?,
                ledger_store,
                mesh_epoch_ms,
                crdt_store: Some(x0_actors::CrdtStore::File(data_dir.join("crdt.bin"))),
                verifier: Arc::new(x0_protocols::crdt::DirectVerifier),
            })
            .await?,
        );
        let forwarder = tokio::spawn(forward_inbound(swarm.inbound, handle.clone()));
        let channel_feed = match handle.channel_watch().await {
            Ok(posts) => Some(tokio::spawn(feed_channel_posts(posts, inbox.clone()))),
            // Without CRDT sync there are no channels.
            Err(_) => None,
        };

        let mut api_addr = None;
        let mut api_task = None;
        if let Some(listener) = api_listener {
            let bound = listener.local_addr().map_err(|source| NodeError::Api {
                addr: SocketAddr::from(([127, 0, 0, 1], 0)),
                source,
            })?;
            let state = Arc::new(api::ApiState {
                node: handle.clone(),
                inbox: inbox.clone(),
                name: self.name.clone(),
                swarm: swarm.control.clone(),
                needs_peers,
                api_addr: bound,
                metrics,
            });
            let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
            let server =
                axum::serve(listener, api::router(state)).with_graceful_shutdown(async move {
                    let _ = stop_rx.await;
                });
            api_task = Some((
                stop_tx,
                tokio::spawn(async move {
                    if let Err(e) = server.await {
                        tracing::error!(error = %e, "HTTP API stopped");
                    }
                }),
            ));
            api_addr = Some(bound);
        }
        tracing::info!(id = %identity.id(), "node started");
        Ok(Node {
            id: identity.id(),
            name: self.name,
            handle,
            inbox,
            swarm: swarm.control,
            swarm_task: swarm.task,
            forwarder,
            channel_feed,
            api_addr,
            api_task,
        })
    }
}

/// Puts every channel post this node can read into its inbox, as it becomes readable.
async fn feed_channel_posts(
    mut posts: tokio::sync::broadcast::Receiver<x0_actors::ChannelMessage>,
    inbox: Arc<Inbox>,
) {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        match posts.recv().await {
            Ok(post) => inbox.push_channel(post),
            Err(RecvError::Lagged(missed)) => {
                ::metrics::counter!("x0_inbox_evicted_total").increment(missed);
                tracing::warn!(
                    missed,
                    "channel posts arrived faster than the inbox took them"
                );
            }
            Err(RecvError::Closed) => return,
        }
    }
}

/// Bytes from the operating system's CSPRNG.
fn os_random<const N: usize>() -> Result<[u8; N], NodeError> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(|e| keystore::KeystoreError::Entropy(e.to_string()))?;
    Ok(bytes)
}

/// Refuses settings a config file would have refused, for nodes built by hand.
fn validate_settings(settings: &NodeSettings) -> Result<(), NodeError> {
    let d = &settings.discovery;
    let invalid = |key: &'static str, reason: String| {
        NodeError::Config(config::ConfigError::Invalid {
            file: "NodeBuilder".into(),
            key: key.into(),
            reason,
        })
    };
    if !(50..=60_000).contains(&d.beacon_interval_ms) {
        return Err(invalid(
            "discovery.beacon_ms",
            format!("must be between 50 and 60000, got {}", d.beacon_interval_ms),
        ));
    }
    if d.expiry_ms <= d.beacon_interval_ms {
        return Err(invalid(
            "discovery.expiry_ms",
            format!(
                "must be longer than discovery.beacon_ms, got {}",
                d.expiry_ms
            ),
        ));
    }
    Ok(())
}

/// Moves envelopes from the swarm to the actors: the one place the two meet.
async fn forward_inbound(
    mut inbound: tokio::sync::mpsc::Receiver<x0_actors::Inbound>,
    node: Arc<NodeHandle>,
) {
    while let Some(envelope) = inbound.recv().await {
        node.deliver(envelope);
    }
}

/// A running node.
pub struct Node {
    id: NodeId,
    name: Option<String>,
    handle: Arc<NodeHandle>,
    inbox: Arc<Inbox>,
    swarm: p2p::SwarmControl,
    swarm_task: tokio::task::JoinHandle<()>,
    forwarder: tokio::task::JoinHandle<()>,
    channel_feed: Option<tokio::task::JoinHandle<()>>,
    api_addr: Option<SocketAddr>,
    api_task: Option<(
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<()>,
    )>,
}

impl Node {
    pub fn builder() -> NodeBuilder {
        NodeBuilder::default()
    }

    pub fn id(&self) -> NodeId {
        self.id
    }

    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// The addresses the node listens on, with the real ports.
    pub async fn listen_addrs(&self) -> Vec<Multiaddr> {
        self.swarm.listen_addrs().await
    }

    /// Where the HTTP API listens, if it runs.
    pub fn api_addr(&self) -> Option<SocketAddr> {
        self.api_addr
    }

    pub async fn neighbors(&self) -> Result<Vec<NeighborInfo>, NodeError> {
        Ok(self.handle.neighbors().await?)
    }

    pub async fn routes(&self) -> Result<Vec<RouteEntry>, NodeError> {
        Ok(self.handle.routes().await?)
    }

    pub async fn status(&self) -> Result<NodeStatus, NodeError> {
        Ok(self.handle.status().await?)
    }

    /// Sends `payload` to `destination` over as many hops as the mesh needs. Returns once
    /// the message left for its first hop; it arrives in the destination's
    /// [`Node::inbox`] unless the mesh loses it on the way.
    pub async fn send(&self, destination: NodeId, payload: Vec<u8>) -> Result<Sent, NodeError> {
        Ok(self.handle.send(destination, payload).await?)
    }

    /// A map replicated to every node of the mesh under key space `space` (any name
    /// not starting with `x0/`): last writer wins per key, changes can be watched.
    pub fn replicated_map(&self, space: &str) -> Result<x0_actors::ReplicatedMap, NodeError> {
        Ok(x0_actors::ReplicatedMap::new(self.handle.clone(), space)?)
    }

    /// Every node's signed record, as this node's replica holds it.
    pub async fn registry(&self) -> Result<Vec<x0_actors::RegistryRecord>, NodeError> {
        Ok(self.handle.registry().await?)
    }

    /// The node's actors: every operation the node offers, including those without a
    /// wrapper here (channels, sealed sends, the ledger, raw CRDT access).
    pub fn handle(&self) -> &NodeHandle {
        &self.handle
    }

    /// Messages addressed to this node, and posts to its channels.
    pub fn inbox(&self) -> &Inbox {
        &self.inbox
    }

    /// Stops the HTTP API, the actors and the swarm, in that order, and waits for each.
    pub async fn shutdown(self) {
        if let Some((stop, task)) = self.api_task {
            let _ = stop.send(());
            let _ = task.await;
        }
        self.forwarder.abort();
        let _ = self.forwarder.await;
        if let Some(feed) = self.channel_feed {
            feed.abort();
            let _ = feed.await;
        }
        if let Ok(handle) = Arc::try_unwrap(self.handle) {
            handle.shutdown().await;
        }
        self.swarm.shutdown().await;
        let _ = self.swarm_task.await;
        tracing::info!(id = %self.id, "node stopped");
    }
}

/// Runs a node from its config until SIGINT or SIGTERM, then shuts it down gracefully.
pub async fn run_until_signal(config: NodeConfig) -> anyhow::Result<()> {
    let node = Node::builder().config(&config).spawn().await?;
    println!("node id: {}", node.id());
    for addr in node.listen_addrs().await {
        println!("listening on: {addr}/p2p/{}", node.id());
    }
    if let Some(api) = node.api_addr() {
        println!("api: http://{api}");
    }
    wait_for_signal().await?;
    println!("shutting down");
    node.shutdown().await;
    Ok(())
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result?,
        _ = term.recv() => {}
    }
    Ok(())
}
