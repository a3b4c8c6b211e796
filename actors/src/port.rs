//! The network port: the only way an actor reaches another node.
//!
//! The real node implements it with libp2p, the simulator with its link model, tests with
//! whatever they like. Actors depend on this trait and never on a transport, which is what
//! lets one actor tree run unchanged in all three places.

use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use tokio::sync::oneshot;
use x0_protocols::{Envelope, Kind, NodeId};

/// Where a broadcast goes.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Topic {
    /// Every directly connected peer, one hop (discovery beacons).
    Neighbors,
    /// A mesh-wide gossip topic (gossipsub in the node).
    Gossip(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PortError {
    #[error("peer {0} is not reachable")]
    Unreachable(NodeId),
    #[error("request timed out")]
    Timeout,
    #[error("reply was not a valid envelope: {0}")]
    BadReply(String),
    #[error("the network is shut down")]
    Closed,
    #[error("the network is overloaded; the envelope was not sent")]
    Overloaded,
}

/// Sending side of the port, held by every actor that talks to peers.
///
/// `send` and `broadcast` are fire-and-forget: delivery is never guaranteed on a mesh, so
/// the port counts failures in its own metrics instead of returning them.
pub trait NetworkPort: Send + Sync + 'static {
    fn send(&self, to: NodeId, envelope: &Envelope);
    fn broadcast(&self, topic: &Topic, envelope: &Envelope);
    /// Sends and waits for one reply envelope (what Raft RPCs need).
    fn request(
        &self,
        to: NodeId,
        envelope: &Envelope,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<Envelope, PortError>>;

    /// [`NetworkPort::broadcast`] to all but the peers in `except`, which were sent
    /// their copy another way (sealed). A transport that cannot leave peers out sends to
    /// all, and the receivers see a beacon twice, which they take as one.
    fn broadcast_except(&self, topic: &Topic, envelope: &Envelope, except: &[NodeId]) {
        let _ = except;
        self.broadcast(topic, envelope);
    }

    /// Sends `sealed`, a [`Kind::Link`] envelope carrying an envelope of kind `inner`.
    /// The kind is for the transport's own accounting (the simulator's traffic report
    /// by kind) and never goes on the wire.
    fn send_sealed(&self, to: NodeId, sealed: &Envelope, inner: Kind) {
        let _ = inner;
        self.send(to, sealed);
    }

    /// [`NetworkPort::request`] for a sealed envelope; see [`NetworkPort::send_sealed`].
    fn request_sealed(
        &self,
        to: NodeId,
        sealed: &Envelope,
        inner: Kind,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<Envelope, PortError>> {
        let _ = inner;
        self.request(to, sealed, timeout)
    }
}

/// An envelope arriving from the network, still encoded.
#[derive(Debug)]
pub struct Inbound {
    /// The peer on the other end of the link it came over, as authenticated by the
    /// transport (Noise in the node, the link table in the simulator).
    pub link_peer: NodeId,
    pub bytes: Bytes,
    /// Where a reply goes, when the transport can carry one. The sender waits for it
    /// only if it used [`NetworkPort::request`]; otherwise dropping it is the answer.
    pub reply: Option<oneshot::Sender<Envelope>>,
}
