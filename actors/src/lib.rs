//! x0tta6bl4's actors: one ractor actor per subsystem under a [`NodeSupervisor`].
//!
//! Actors are thin: they hold a sans-IO protocol from `x0-protocols`, feed it messages and
//! timer ticks on tokio time, and hand its outputs to the [`NetworkPort`]. They never
//! import a transport; the node (libp2p) and the simulator (virtual links) plug in below.

pub mod clock;
pub mod crdt;
pub mod discovery;
pub mod e2e;
pub mod ledger;
pub mod link;
pub mod observer;
pub mod port;
pub mod routing;
pub mod sessions;
pub mod supervisor;
pub mod timer;

use std::time::Duration;

use ractor::{Actor, ActorRef};
use tokio::task::JoinHandle;
use x0_protocols::NodeId;

pub use crdt::{
    Change, ChannelInfo, ChannelMessage, CrdtSettings, CrdtStatus, CrdtStore, MapChange, MapWatch,
    RegistryRecord, ReplicatedMap,
};
pub use discovery::NeighborInfo;
pub use ledger::{
    LedgerError, LedgerSettings, LedgerStatus, LedgerStore, MembershipChange, ReadResult,
    StoreError,
};
pub use observer::{NoObserver, NodeObserver};
pub use port::{Inbound, NetworkPort, PortError, Topic};
pub use routing::{ForwardingStats, RouteEntry, SendError, Sent};
pub use sessions::{Admission, SessionInfo};
pub use supervisor::{NodeArgs, NodeMsg, NodeSettings, NodeStatus, NodeSupervisor, Subsystem};
use x0_protocols::channel::{ChannelError, ChannelId};
use x0_protocols::crdt::{EntryError, Key, SignedEntry};
pub use x0_protocols::forwarding::Delivered;
use x0_protocols::forwarding::Service;
use x0_protocols::ledger::{Applied, Command};

#[derive(Debug, thiserror::Error)]
pub enum ActorError {
    #[error("could not start the node's actors: {0}")]
    Spawn(String),
    #[error("the node's actors are not running")]
    Down,
    #[error("the node did not answer within {0:?}")]
    Timeout(Duration),
    #[error(transparent)]
    Send(#[from] SendError),
    #[error("the write was refused: {0}")]
    Refused(#[from] EntryError),
    #[error("this node runs without CRDT sync")]
    CrdtDisabled,
    #[error(transparent)]
    Channel(#[from] ChannelError),
}

/// How long a query to a running node's actors may take before we call it hung.
const QUERY_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest wait on a ledger request: past any client timeout the ledger is configured
/// with, so the ledger's own error arrives first.
const LEDGER_QUERY_TIMEOUT: Duration = Duration::from_secs(120);

/// A running actor tree: the handle that the node, the simulator and tests hold.
pub struct NodeHandle {
    id: NodeId,
    supervisor: ActorRef<NodeMsg>,
    join: JoinHandle<()>,
}

impl NodeHandle {
    pub async fn spawn(args: NodeArgs) -> Result<NodeHandle, ActorError> {
        let id = args.identity.id();
        // No actor name: ractor's registry is process-global, and a simulator runs
        // thousands of nodes in one process.
        let (supervisor, join) = Actor::spawn(None, NodeSupervisor, args)
            .await
            .map_err(|e| ActorError::Spawn(e.to_string()))?;
        Ok(NodeHandle {
            id,
            supervisor,
            join,
        })
    }

    pub fn id(&self) -> NodeId {
        self.id
    }

    /// Hands an envelope from the network to the node. Never blocks.
    pub fn deliver(&self, inbound: Inbound) {
        if self.supervisor.cast(NodeMsg::Inbound(inbound)).is_err() {
            metrics::counter!("x0_node_inbound_dropped_total", "reason" => "node_down")
                .increment(1);
        }
    }

    pub async fn neighbors(&self) -> Result<Vec<NeighborInfo>, ActorError> {
        self.query(NodeMsg::Neighbors).await
    }

    pub async fn routes(&self) -> Result<Vec<RouteEntry>, ActorError> {
        self.query(NodeMsg::Routes).await
    }

    /// The established post-quantum sessions with neighbors.
    pub async fn sessions(&self) -> Result<Vec<SessionInfo>, ActorError> {
        self.query(NodeMsg::Sessions).await
    }

    pub async fn status(&self) -> Result<NodeStatus, ActorError> {
        self.query(NodeMsg::Status).await
    }

    /// Sends `payload` to `destination` over the mesh and returns once the node has
    /// accepted it (routed it to a first hop), not once it arrived: delivery on a mesh is
    /// best effort, and the destination's node sees it through its delivery sink.
    pub async fn send(&self, destination: NodeId, payload: Vec<u8>) -> Result<Sent, ActorError> {
        let result = self
            .query(|reply| NodeMsg::Send {
                destination,
                service: Service::App,
                payload,
                reply: Some(reply),
            })
            .await?;
        Ok(result?)
    }

    /// Sends `plaintext` sealed to `destination`'s end-to-end keys (fetched from it over
    /// the mesh the first time), so relays carry it but cannot read or alter it; large
    /// messages go in parts, joined and checked against their SHA-256 there. Returns
    /// the message's id at once; [`NodeHandle::outbox`] follows it from created to sent,
    /// delivered (the destination's signed receipt) and read, or failed or expired
    /// (`ttl_ms`, default [`e2e::DEFAULT_TTL_MS`]).
    pub async fn send_sealed(
        &self,
        destination: NodeId,
        plaintext: Vec<u8>,
        content: e2e::Outgoing,
        ttl_ms: Option<u64>,
    ) -> Result<u64, ActorError> {
        self.query(|reply| {
            NodeMsg::E2e(e2e::E2eMsg::Send {
                destination,
                plaintext,
                content,
                ttl_ms,
                reply: Some(reply),
            })
        })
        .await
    }

    /// The sealed messages this node sent and where each one is.
    pub async fn outbox(&self) -> Result<Vec<e2e::OutboxEntry>, ActorError> {
        self.query(|reply| NodeMsg::E2e(e2e::E2eMsg::Outbox(reply)))
            .await
    }

    /// Tells `origin` that its sealed message `message_id` was read here.
    pub fn mark_read(&self, origin: NodeId, message_id: u64) {
        let _ = self
            .supervisor
            .cast(NodeMsg::E2e(e2e::E2eMsg::MarkRead { origin, message_id }));
    }

    /// Like [`NodeHandle::send`] without waiting for the answer: for traffic generators
    /// that learn the outcome at the destination.
    pub fn send_nowait(&self, destination: NodeId, payload: Vec<u8>) {
        let _ = self.supervisor.cast(NodeMsg::Send {
            destination,
            service: Service::App,
            payload,
            reply: None,
        });
    }

    /// Appends `command` to the ledger: forwarded to the leader wherever it is, retried
    /// through leader changes, and answered once committed and applied.
    pub async fn ledger_append(&self, command: Command) -> Result<Applied, LedgerError> {
        self.ledger_query(|reply| ledger::LedgerMsg::Append { command, reply })
            .await
    }

    /// Appends several commands proposed together (they share log flushes and
    /// replication rounds); answered in order, each applied at most once however often
    /// the batch is retried.
    pub async fn ledger_append_many(
        &self,
        commands: Vec<Command>,
    ) -> Result<Vec<Applied>, LedgerError> {
        self.ledger_query(|reply| ledger::LedgerMsg::AppendMany { commands, reply })
            .await
    }

    /// Reads up to `limit` entries from 1-based position `from`. Linearizable reads go
    /// through the leader; others read this node's replica (or the leader's, on a node
    /// that keeps none).
    pub async fn ledger_read(
        &self,
        from: u64,
        limit: u32,
        linearizable: bool,
    ) -> Result<ReadResult, LedgerError> {
        self.ledger_query(|reply| ledger::LedgerMsg::Read {
            from,
            limit,
            linearizable,
            reply,
        })
        .await
    }

    pub async fn ledger_status(&self) -> Result<LedgerStatus, LedgerError> {
        self.ledger_query(ledger::LedgerMsg::Status).await
    }

    /// Changes Raft's voter set through the leader (joint consensus).
    pub async fn ledger_change(
        &self,
        change: MembershipChange,
    ) -> Result<LedgerStatus, LedgerError> {
        self.ledger_query(|reply| ledger::LedgerMsg::ChangeMembership { change, reply })
            .await
    }

    async fn ledger_query<T: Send + 'static>(
        &self,
        make: impl FnOnce(ractor::RpcReplyPort<Result<T, LedgerError>>) -> ledger::LedgerMsg,
    ) -> Result<T, LedgerError> {
        // The ledger bounds its own retries by its client timeout; this only guards
        // against an actor that never answers.
        let (tx, rx) = tokio::sync::oneshot::channel();
        let message = make(tx.into());
        if self
            .supervisor
            .cast(NodeMsg::Ledger(Box::new(message)))
            .is_err()
        {
            return Err(LedgerError::Down);
        }
        match tokio::time::timeout(LEDGER_QUERY_TIMEOUT, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(LedgerError::Down),
            Err(_) => Err(LedgerError::Unavailable(
                LEDGER_QUERY_TIMEOUT.as_millis() as u64
            )),
        }
    }

    /// Writes `value` at `name` in the application key space `space` (any space not
    /// starting with `x0/`), signed by this node. It replicates to every node; when two
    /// nodes write the same key, the later stamp wins everywhere.
    pub async fn crdt_put(
        &self,
        space: &str,
        name: impl Into<Vec<u8>>,
        value: Vec<u8>,
    ) -> Result<std::sync::Arc<SignedEntry>, ActorError> {
        self.crdt_write(Key::new(space, name), Some(value)).await
    }

    /// Deletes `name` in `space` everywhere (a tombstone, collected after the policy's
    /// tombstone expiry).
    pub async fn crdt_delete(
        &self,
        space: &str,
        name: impl Into<Vec<u8>>,
    ) -> Result<std::sync::Arc<SignedEntry>, ActorError> {
        self.crdt_write(Key::new(space, name), None).await
    }

    async fn crdt_write(
        &self,
        key: Key,
        value: Option<Vec<u8>>,
    ) -> Result<std::sync::Arc<SignedEntry>, ActorError> {
        Ok(self
            .crdt_query(|reply| crdt::CrdtMsg::Write { key, value, reply })
            .await??)
    }

    /// This replica's entry at `name` in `space` (a tombstone has no value).
    pub async fn crdt_get(
        &self,
        space: &str,
        name: impl Into<Vec<u8>>,
    ) -> Result<Option<std::sync::Arc<SignedEntry>>, ActorError> {
        let key = Key::new(space, name);
        self.crdt_query(|reply| crdt::CrdtMsg::Get { key, reply })
            .await
    }

    /// Every entry of one key space in this replica, tombstones included.
    pub async fn crdt_space(
        &self,
        space: &str,
    ) -> Result<Vec<std::sync::Arc<SignedEntry>>, ActorError> {
        let space = space.to_string();
        self.crdt_query(|reply| crdt::CrdtMsg::Space { space, reply })
            .await
    }

    /// Every node's signed record, as this replica knows them.
    pub async fn registry(&self) -> Result<Vec<RegistryRecord>, ActorError> {
        self.crdt_query(crdt::CrdtMsg::Registry).await
    }

    pub async fn crdt_status(&self) -> Result<CrdtStatus, ActorError> {
        self.crdt_query(crdt::CrdtMsg::Status).await
    }

    /// Every change to this replica from now on (writes here and merges from peers).
    /// A receiver that falls more than 1,024 changes behind skips the oldest.
    pub async fn crdt_watch(&self) -> Result<tokio::sync::broadcast::Receiver<Change>, ActorError> {
        self.query(NodeMsg::CrdtWatch).await
    }

    /// Creates a channel owned by this node, readable by `members` and this node only.
    /// Every member must have a registry record (its public keys) on this replica.
    pub async fn channel_create(
        &self,
        name: &str,
        members: Vec<NodeId>,
    ) -> Result<ChannelInfo, ActorError> {
        let name = name.to_string();
        self.channel_query(|reply| crdt::ChannelRequest::Create {
            name,
            members,
            reply,
        })
        .await
    }

    /// Replaces the members of a channel this node owns. The channel gets a new key:
    /// removed members cannot read what is posted from now on.
    pub async fn channel_set_members(
        &self,
        name: &str,
        members: Vec<NodeId>,
    ) -> Result<ChannelInfo, ActorError> {
        let name = name.to_string();
        self.channel_query(|reply| crdt::ChannelRequest::SetMembers {
            name,
            members,
            reply,
        })
        .await
    }

    /// Deletes a channel this node owns, with every member's key.
    pub async fn channel_delete(&self, name: &str) -> Result<(), ActorError> {
        let name = name.to_string();
        self.channel_query(|reply| crdt::ChannelRequest::Delete { name, reply })
            .await
    }

    /// The channels this node is a member of.
    pub async fn channels(&self) -> Result<Vec<ChannelInfo>, ActorError> {
        self.crdt_query(|reply| crdt::CrdtMsg::Channel(crdt::ChannelRequest::List(reply)))
            .await
    }

    /// Posts `body` to a channel this node is a member of.
    pub async fn channel_post(
        &self,
        channel: ChannelId,
        content: e2e::Outgoing,
        body: Vec<u8>,
    ) -> Result<ChannelMessage, ActorError> {
        self.channel_query(|reply| crdt::ChannelRequest::Post {
            channel,
            content,
            body,
            reply,
        })
        .await
    }

    /// Every post of `channel` this node can read, oldest first.
    pub async fn channel_read(
        &self,
        channel: ChannelId,
    ) -> Result<Vec<ChannelMessage>, ActorError> {
        self.channel_query(|reply| crdt::ChannelRequest::Read { channel, reply })
            .await
    }

    /// Every channel post written elsewhere that this node can read, from now on, as
    /// soon as it can be read. A receiver that falls 1,024 posts behind skips the oldest.
    pub async fn channel_watch(
        &self,
    ) -> Result<tokio::sync::broadcast::Receiver<ChannelMessage>, ActorError> {
        self.query(NodeMsg::ChannelWatch).await
    }

    async fn channel_query<T: Send + 'static>(
        &self,
        make: impl FnOnce(ractor::RpcReplyPort<Result<T, ChannelError>>) -> crdt::ChannelRequest,
    ) -> Result<T, ActorError> {
        Ok(self
            .crdt_query(|reply| crdt::CrdtMsg::Channel(make(reply)))
            .await??)
    }

    async fn crdt_query<T: Send + 'static>(
        &self,
        make: impl FnOnce(ractor::RpcReplyPort<T>) -> crdt::CrdtMsg,
    ) -> Result<T, ActorError> {
        // The supervisor drops the request when CRDT sync is off, which closes the port.
        match self.query(|reply| NodeMsg::Crdt(make(reply))).await {
            Err(ActorError::Down) if self.is_running() => Err(ActorError::CrdtDisabled),
            other => other,
        }
    }

    /// Fault injection: makes a subsystem actor panic, as a bug would.
    pub fn crash(&self, subsystem: Subsystem, reason: impl Into<String>) {
        let _ = self
            .supervisor
            .cast(NodeMsg::Crash(subsystem, reason.into()));
    }

    /// Stops every actor of the node without waiting (a crash, from the outside).
    pub fn stop(&self) {
        self.supervisor.stop(None);
    }

    pub fn is_running(&self) -> bool {
        !self.join.is_finished()
    }

    /// Stops every actor of the node and waits until they are gone.
    pub async fn shutdown(self) {
        self.supervisor.stop(None);
        let _ = self.join.await;
    }

    async fn query<T: Send + 'static>(
        &self,
        make: impl FnOnce(ractor::RpcReplyPort<T>) -> NodeMsg,
    ) -> Result<T, ActorError> {
        match self.supervisor.call(make, Some(QUERY_TIMEOUT)).await {
            Ok(ractor::rpc::CallResult::Success(v)) => Ok(v),
            Ok(ractor::rpc::CallResult::Timeout) => Err(ActorError::Timeout(QUERY_TIMEOUT)),
            Ok(ractor::rpc::CallResult::SenderError) | Err(_) => Err(ActorError::Down),
        }
    }
}
