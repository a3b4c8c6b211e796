//! `NetworkPort` over the swarm task's command channel.

use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::sync::{mpsc, oneshot};
use x0_actors::{NetworkPort, PortError, Topic};
use x0_protocols::{Envelope, NodeId};

use super::peer_id_of;
use super::swarm::Command;

/// The actors' handle on the libp2p swarm. Cloning is cheap.
#[derive(Clone)]
pub struct Libp2pPort {
    commands: mpsc::Sender<Command>,
}

impl Libp2pPort {
    pub(super) fn new(commands: mpsc::Sender<Command>) -> Self {
        Libp2pPort { commands }
    }

    /// Queues a command; a full queue means the swarm is far behind, and dropping is the
    /// mesh's normal answer to overload (counted, never blocking an actor).
    fn submit(&self, command: Command) {
        if self.commands.try_send(command).is_err() {
            metrics::counter!("x0_network_send_failures_total", "reason" => "queue_full")
                .increment(1);
        }
    }
}

impl NetworkPort for Libp2pPort {
    fn send(&self, to: NodeId, envelope: &Envelope) {
        match peer_id_of(&to) {
            Some(peer) => self.submit(Command::Send {
                to: peer,
                bytes: envelope.encode(),
            }),
            None => metrics::counter!("x0_network_send_failures_total", "reason" => "bad_peer_id")
                .increment(1),
        }
    }

    fn broadcast(&self, topic: &Topic, envelope: &Envelope) {
        self.broadcast_except(topic, envelope, &[]);
    }

    fn broadcast_except(&self, topic: &Topic, envelope: &Envelope, except: &[NodeId]) {
        let bytes = envelope.encode();
        match topic {
            Topic::Neighbors => self.submit(Command::SendToAll {
                bytes,
                except: except.iter().filter_map(peer_id_of).collect(),
            }),
            Topic::Gossip(name) => self.submit(Command::Publish {
                topic: name.clone(),
                bytes,
            }),
        }
    }

    fn request(
        &self,
        to: NodeId,
        envelope: &Envelope,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<Envelope, PortError>> {
        let Some(peer) = peer_id_of(&to) else {
            return futures::future::ready(Err(PortError::Unreachable(to))).boxed();
        };
        let (reply, answer) = oneshot::channel();
        let sent = self.commands.try_send(Command::Request {
            to: peer,
            bytes: envelope.encode(),
            reply,
        });
        async move {
            match sent {
                Err(mpsc::error::TrySendError::Full(_)) => return Err(PortError::Overloaded),
                Err(mpsc::error::TrySendError::Closed(_)) => return Err(PortError::Closed),
                Ok(()) => {}
            }
            match tokio::time::timeout(timeout, answer).await {
                Err(_) => Err(PortError::Timeout),
                Ok(Err(_)) => Err(PortError::Closed),
                Ok(Ok(Err(e))) => Err(e),
                Ok(Ok(Ok(bytes))) => Envelope::decode_from(to, &bytes)
                    .map_err(|e| PortError::BadReply(e.to_string())),
            }
        }
        .boxed()
    }
}
