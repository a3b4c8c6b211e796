//! The `E2e` actor: sends that only the destination can read.
//!
//! It holds this node's end-to-end keys and a cache of other nodes' public keys, learned
//! by asking them over the mesh (see `x0_protocols::e2e`). A send to a node whose keys are
//! not known yet waits (bounded) for them; a sealed message that arrives is opened,
//! checked against its routed origin, and handed to the application like any other
//! delivery, marked as having arrived sealed.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use x0_protocols::crypto::seal::{E2eKeys, E2ePublic, open_sealed, seal_to_public};
use x0_protocols::e2e::{self, E2eMessage};
use x0_protocols::forwarding::{Delivered, Service};
use x0_protocols::{Identity, NodeId};

use crate::observer::NodeObserver;
use crate::routing::SendError;
use crate::supervisor::NodeMsg;

/// Sends waiting for a destination's keys, at most, over all destinations.
const MAX_WAITING: usize = 1024;
/// Public keys remembered, oldest forgotten first.
const MAX_KNOWN: usize = 4096;
/// How long a send waits for the destination's keys before it fails.
const KEY_WAIT: Duration = Duration::from_secs(10);
/// A key request is repeated at most this often per destination.
const REQUEST_EVERY: Duration = Duration::from_secs(2);
const TICK: Duration = Duration::from_millis(500);

pub enum E2eMsg {
    Send {
        destination: NodeId,
        plaintext: Vec<u8>,
        reply: Option<RpcReplyPort<Result<(), SendError>>>,
    },
    /// A routed message of the E2e service, its origin already authenticated.
    Inbound(Delivered),
    Tick,
}

pub struct E2eArgs {
    pub identity: Arc<Identity>,
    pub supervisor: ActorRef<NodeMsg>,
    pub observer: Arc<dyn NodeObserver>,
    /// Seeds the ephemeral keys of sealed boxes: OS randomness in a real node.
    pub rng_seed: [u8; 32],
}

struct Waiting {
    plaintext: Vec<u8>,
    reply: Option<RpcReplyPort<Result<(), SendError>>>,
    since: tokio::time::Instant,
}

pub struct E2eState {
    args: E2eArgs,
    keys: E2eKeys,
    known: BTreeMap<NodeId, E2ePublic>,
    known_order: VecDeque<NodeId>,
    waiting: BTreeMap<NodeId, Vec<Waiting>>,
    waiting_count: usize,
    requested: BTreeMap<NodeId, tokio::time::Instant>,
    rng: ChaCha20Rng,
}

pub struct E2eActor;

impl Actor for E2eActor {
    type Msg = E2eMsg;
    type State = E2eState;
    type Arguments = E2eArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: E2eArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        myself.send_interval(TICK, || E2eMsg::Tick);
        Ok(E2eState {
            keys: e2e::keys_for(&args.identity),
            rng: ChaCha20Rng::from_seed(args.rng_seed),
            args,
            known: BTreeMap::new(),
            known_order: VecDeque::new(),
            waiting: BTreeMap::new(),
            waiting_count: 0,
            requested: BTreeMap::new(),
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            E2eMsg::Send {
                destination,
                plaintext,
                reply,
            } => state.send(destination, plaintext, reply),
            E2eMsg::Inbound(delivered) => state.inbound(delivered),
            E2eMsg::Tick => state.expire(),
        }
        Ok(())
    }
}

impl E2eState {
    fn route(&self, to: NodeId, message: &E2eMessage) {
        let _ = self.args.supervisor.cast(NodeMsg::Send {
            destination: to,
            service: Service::E2e,
            payload: message.encode(),
            reply: None,
        });
    }

    fn send(
        &mut self,
        destination: NodeId,
        plaintext: Vec<u8>,
        reply: Option<RpcReplyPort<Result<(), SendError>>>,
    ) {
        if self.known.contains_key(&destination) || destination == self.args.identity.id() {
            let result = self.seal_and_route(destination, &plaintext);
            if let Some(reply) = reply {
                let _ = reply.send(result);
            }
            return;
        }
        if self.waiting_count >= MAX_WAITING {
            metrics::counter!("x0_e2e_send_failed_total", "reason" => "queue_full").increment(1);
            if let Some(reply) = reply {
                let _ = reply.send(Err(SendError::NoKeys(destination)));
            }
            return;
        }
        self.waiting_count += 1;
        self.waiting.entry(destination).or_default().push(Waiting {
            plaintext,
            reply,
            since: tokio::time::Instant::now(),
        });
        let now = tokio::time::Instant::now();
        let due = self
            .requested
            .get(&destination)
            .is_none_or(|at| now.duration_since(*at) >= REQUEST_EVERY);
        if due {
            self.requested.insert(destination, now);
            self.route(destination, &E2eMessage::KeyRequest);
        }
    }

    fn seal_and_route(&mut self, destination: NodeId, plaintext: &[u8]) -> Result<(), SendError> {
        let public = match self.known.get(&destination) {
            Some(p) => p.clone(),
            None => self.keys.public().clone(),
        };
        match seal_to_public(&public, &self.args.identity, plaintext, &mut self.rng) {
            Ok(sealed) => {
                metrics::counter!("x0_e2e_sealed_total").increment(1);
                self.route(destination, &E2eMessage::Sealed(sealed));
                Ok(())
            }
            Err(e) => {
                metrics::counter!("x0_e2e_send_failed_total", "reason" => e.reason()).increment(1);
                Err(SendError::Seal(e.to_string()))
            }
        }
    }

    fn inbound(&mut self, delivered: Delivered) {
        let message = match E2eMessage::decode(&delivered.payload) {
            Ok(m) => m,
            Err(_) => {
                metrics::counter!("x0_e2e_rejected_total", "reason" => "decode").increment(1);
                return;
            }
        };
        match message {
            E2eMessage::KeyRequest => {
                self.route(
                    delivered.origin,
                    &E2eMessage::Keys(self.keys.public().clone()),
                );
            }
            E2eMessage::Keys(public) => {
                // The routed envelope was signed by its origin: these are its keys.
                if self.known.insert(delivered.origin, public).is_none() {
                    self.known_order.push_back(delivered.origin);
                    if self.known_order.len() > MAX_KNOWN
                        && let Some(old) = self.known_order.pop_front()
                    {
                        self.known.remove(&old);
                    }
                }
                for w in self.waiting.remove(&delivered.origin).unwrap_or_default() {
                    self.waiting_count -= 1;
                    let result = self.seal_and_route(delivered.origin, &w.plaintext);
                    if let Some(reply) = w.reply {
                        let _ = reply.send(result);
                    }
                }
            }
            E2eMessage::Sealed(bytes) => {
                match open_sealed(&self.keys, &bytes, Some(delivered.origin)) {
                    Ok(opened) => {
                        metrics::counter!("x0_e2e_opened_total").increment(1);
                        self.args.observer.delivered(Delivered {
                            payload: opened.plaintext,
                            ..delivered
                        });
                    }
                    Err(e) => {
                        metrics::counter!("x0_e2e_rejected_total", "reason" => e.reason())
                            .increment(1);
                        tracing::debug!(error = %e, origin = %delivered.origin, "refused a sealed message");
                    }
                }
            }
        }
    }

    /// Fails sends that waited too long for keys.
    fn expire(&mut self) {
        let now = tokio::time::Instant::now();
        for (destination, list) in &mut self.waiting {
            let (expired, kept): (Vec<Waiting>, Vec<Waiting>) = std::mem::take(list)
                .into_iter()
                .partition(|w| now.duration_since(w.since) >= KEY_WAIT);
            *list = kept;
            for w in expired {
                self.waiting_count -= 1;
                metrics::counter!("x0_e2e_send_failed_total", "reason" => "no_keys").increment(1);
                if let Some(reply) = w.reply {
                    let _ = reply.send(Err(SendError::NoKeys(*destination)));
                }
            }
        }
        self.waiting.retain(|_, list| !list.is_empty());
        self.requested
            .retain(|_, at| now.duration_since(*at) < KEY_WAIT);
    }
}
