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
use serde::{Deserialize, Serialize};
use x0_protocols::crypto::seal::{E2eKeys, E2ePublic, open_sealed, seal_to_public};
use x0_protocols::e2e::{self, ContentKind, E2eMessage, Letter, ReceiptStatus};
use x0_protocols::forwarding::{Delivered, Service};
use x0_protocols::{Identity, NodeId};

use crate::crdt::CrdtMsg;
use crate::observer::NodeObserver;
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

/// Where a sealed message is, as its sender sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageStatus {
    /// Accepted; waiting for the destination's keys.
    Created,
    /// Sealed and on its way.
    Sent,
    /// The destination's signed receipt says it was opened.
    Delivered,
    /// The destination's application marked it read.
    Read,
    Failed,
    /// Not delivered within its time to live.
    Expired,
}

/// What a message to be sent is: its kind and, for files and media, name and MIME type.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outgoing {
    pub kind: ContentKind,
    pub name: Option<String>,
    pub mime: Option<String>,
}

/// One message this node sent sealed, for `/api/v1/outbox`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxEntry {
    pub message_id: u64,
    pub destination: NodeId,
    pub status: MessageStatus,
    /// Why it failed, when it did.
    pub reason: Option<String>,
    /// Node uptime when it was created and when its status last changed.
    pub created_ms: u64,
    pub updated_ms: u64,
}

pub enum E2eMsg {
    /// Seal and send; `reply` gets the message id at once, the outbox follows it.
    Send {
        destination: NodeId,
        plaintext: Vec<u8>,
        content: Outgoing,
        ttl_ms: Option<u64>,
        reply: Option<RpcReplyPort<u64>>,
    },
    /// A routed message of the E2e service, its origin already authenticated.
    Inbound(Delivered),
    /// The application read `message_id` from `origin`: tell the sender.
    MarkRead {
        origin: NodeId,
        message_id: u64,
    },
    Outbox(RpcReplyPort<Vec<OutboxEntry>>),
    /// `node`'s keys from its signed registry record (CRDT sync): no need to ask it.
    LearnKeys {
        node: NodeId,
        keys: E2ePublic,
    },
    /// The registry has no record of `node` (or the node runs without CRDT sync): ask it.
    KeysUnknown {
        node: NodeId,
    },
    /// Routing had no route for this sealed part (yet): it is tried again each tick
    /// until its message expires.
    Unroutable(Unrouted),
    Tick,
}

/// A sealed part of a message that routing could not send yet.
pub struct Unrouted {
    destination: NodeId,
    message_id: u64,
    payload: Vec<u8>,
}

pub struct E2eArgs {
    pub identity: Arc<Identity>,
    pub supervisor: ActorRef<NodeMsg>,
    pub observer: Arc<dyn NodeObserver>,
    /// Seeds the ephemeral keys of sealed boxes: OS randomness in a real node.
    pub rng_seed: [u8; 32],
    pub clock: crate::clock::NodeClock,
}

struct Waiting {
    message_id: u64,
    plaintext: Vec<u8>,
    content: Outgoing,
    since: tokio::time::Instant,
}

/// Messages arriving in parts held at once, and how long one may take to complete.
const MAX_PARTIAL: usize = 64;
const PARTIAL_TIMEOUT_MS: u64 = 120_000;
/// Sealed parts held for want of a route, at most; past it, their message fails.
const MAX_UNROUTED: usize = 1024;
/// Sealed messages remembered in the outbox, oldest forgotten first.
const MAX_OUTBOX: usize = 10_000;
/// How long a sent message may take to be delivered before it counts as expired.
pub const DEFAULT_TTL_MS: u64 = 60_000;

struct Tracked {
    entry: OutboxEntry,
    expires_ms: u64,
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
    outbox: BTreeMap<u64, Tracked>,
    next_message_id: u64,
    assembler: e2e::Assembler,
    clock: crate::clock::NodeClock,
    unrouted: Vec<Unrouted>,
    myself: ActorRef<E2eMsg>,
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
        let mut rng = ChaCha20Rng::from_seed(args.rng_seed);
        Ok(E2eState {
            keys: e2e::keys_for(&args.identity),
            // Ids start at a random point, so a restarted sender does not reuse them.
            next_message_id: rand::RngCore::next_u64(&mut rng) >> 1,
            rng,
            outbox: BTreeMap::new(),
            assembler: e2e::Assembler::new(MAX_PARTIAL, PARTIAL_TIMEOUT_MS),
            clock: args.clock,
            args,
            known: BTreeMap::new(),
            known_order: VecDeque::new(),
            waiting: BTreeMap::new(),
            waiting_count: 0,
            requested: BTreeMap::new(),
            unrouted: Vec::new(),
            myself,
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
                content,
                ttl_ms,
                reply,
            } => {
                let id = state.send(
                    destination,
                    plaintext,
                    content,
                    ttl_ms.unwrap_or(DEFAULT_TTL_MS),
                );
                if let Some(reply) = reply {
                    let _ = reply.send(id);
                }
            }
            E2eMsg::Inbound(delivered) => state.inbound(delivered),
            E2eMsg::MarkRead { origin, message_id } => state.route(
                origin,
                &E2eMessage::Receipt {
                    message_id,
                    status: ReceiptStatus::Read,
                },
            ),
            E2eMsg::Outbox(reply) => {
                let _ = reply.send(state.outbox.values().map(|t| t.entry.clone()).collect());
            }
            E2eMsg::LearnKeys { node, keys } => state.learn_keys(node, keys),
            E2eMsg::KeysUnknown { node } => {
                if state.waiting.contains_key(&node) {
                    state.requested.insert(node, tokio::time::Instant::now());
                    state.route(node, &E2eMessage::KeyRequest);
                }
            }
            E2eMsg::Unroutable(part) => state.hold_unrouted(part),
            E2eMsg::Tick => {
                state.expire();
                state.retry_unrouted();
            }
        }
        Ok(())
    }
}

impl E2eState {
    /// Remembers `node`'s keys (bounded, oldest forgotten first) and seals whatever was
    /// waiting for them.
    fn learn_keys(&mut self, node: NodeId, public: E2ePublic) {
        if self.known.insert(node, public).is_none() {
            self.known_order.push_back(node);
            if self.known_order.len() > MAX_KNOWN
                && let Some(old) = self.known_order.pop_front()
            {
                self.known.remove(&old);
            }
        }
        for w in self.waiting.remove(&node).unwrap_or_default() {
            self.waiting_count -= 1;
            self.seal_and_route(node, w.message_id, &w.plaintext, w.content);
        }
    }

    fn route(&self, to: NodeId, message: &E2eMessage) {
        let _ = self.args.supervisor.cast(NodeMsg::Send {
            destination: to,
            service: Service::E2e,
            payload: message.encode(),
            reply: None,
        });
    }

    /// Routes one sealed part and, should routing have no route for it (a node just
    /// started, or a partition), gets it back to try again.
    fn route_part(&self, part: Unrouted) {
        let (tx, rx) = ractor::concurrency::oneshot();
        let payload = part.payload.clone();
        let _ = self.args.supervisor.cast(NodeMsg::Send {
            destination: part.destination,
            service: Service::E2e,
            payload,
            reply: Some(tx.into()),
        });
        let myself = self.myself.clone();
        tokio::spawn(async move {
            if let Ok(Err(crate::routing::SendError::NoRoute(_))) = rx.await {
                let _ = myself.cast(E2eMsg::Unroutable(part));
            }
        });
    }

    fn hold_unrouted(&mut self, part: Unrouted) {
        let live = self
            .outbox
            .get(&part.message_id)
            .is_some_and(|t| t.entry.status == MessageStatus::Sent);
        if !live {
            return;
        }
        if self.unrouted.len() >= MAX_UNROUTED {
            self.fail(part.message_id, "no route to the destination");
            return;
        }
        metrics::counter!("x0_e2e_unrouted_total").increment(1);
        self.unrouted.push(part);
    }

    /// Sends again what had no route, unless its message has ended meanwhile.
    fn retry_unrouted(&mut self) {
        for part in std::mem::take(&mut self.unrouted) {
            let live = self
                .outbox
                .get(&part.message_id)
                .is_some_and(|t| t.entry.status == MessageStatus::Sent);
            if live {
                self.route_part(part);
            }
        }
    }

    fn set_status(&mut self, message_id: u64, status: MessageStatus, reason: Option<String>) {
        let now = self.clock.now().0;
        if let Some(t) = self.outbox.get_mut(&message_id) {
            // Receipts may arrive out of order: never step back from read to delivered.
            if t.entry.status == MessageStatus::Read && status == MessageStatus::Delivered {
                return;
            }
            t.entry.status = status;
            t.entry.reason = reason;
            t.entry.updated_ms = now;
        }
    }

    /// Accepts a message for sending and returns its id; the outbox follows it.
    fn send(
        &mut self,
        destination: NodeId,
        plaintext: Vec<u8>,
        content: Outgoing,
        ttl_ms: u64,
    ) -> u64 {
        let message_id = self.next_message_id;
        self.next_message_id = self.next_message_id.wrapping_add(1);
        let now_ms = self.clock.now().0;
        self.outbox.insert(
            message_id,
            Tracked {
                entry: OutboxEntry {
                    message_id,
                    destination,
                    status: MessageStatus::Created,
                    reason: None,
                    created_ms: now_ms,
                    updated_ms: now_ms,
                },
                expires_ms: now_ms.saturating_add(ttl_ms),
            },
        );
        while self.outbox.len() > MAX_OUTBOX {
            self.outbox.pop_first();
        }
        metrics::counter!("x0_e2e_messages_total", "status" => "created").increment(1);
        if self.known.contains_key(&destination) || destination == self.args.identity.id() {
            self.seal_and_route(destination, message_id, &plaintext, content);
            return message_id;
        }
        if self.waiting_count >= MAX_WAITING {
            self.fail(message_id, "too many messages waiting for keys");
            return message_id;
        }
        self.waiting_count += 1;
        self.waiting.entry(destination).or_default().push(Waiting {
            message_id,
            plaintext,
            content,
            since: tokio::time::Instant::now(),
        });
        let now = tokio::time::Instant::now();
        let due = self
            .requested
            .get(&destination)
            .is_none_or(|at| now.duration_since(*at) >= REQUEST_EVERY);
        if due {
            // The registry first (answered at once, locally); the destination itself
            // only if the registry does not know it (`KeysUnknown`).
            self.requested.insert(destination, now);
            let _ = self
                .args
                .supervisor
                .cast(NodeMsg::Crdt(CrdtMsg::LookupKeys { node: destination }));
        }
        message_id
    }

    fn fail(&mut self, message_id: u64, reason: &str) {
        metrics::counter!("x0_e2e_messages_total", "status" => "failed").increment(1);
        self.set_status(message_id, MessageStatus::Failed, Some(reason.to_string()));
    }

    /// Seals each part of the message on its own and sends them all.
    fn seal_and_route(
        &mut self,
        destination: NodeId,
        message_id: u64,
        plaintext: &[u8],
        content: Outgoing,
    ) {
        if plaintext.len() > e2e::MAX_MESSAGE_BYTES {
            self.fail(message_id, "message larger than 64 MiB");
            return;
        }
        let public = match self.known.get(&destination) {
            Some(p) => p.clone(),
            None => self.keys.public().clone(),
        };
        let letters = e2e::split(
            message_id,
            content.kind,
            content.name,
            content.mime,
            plaintext,
        );
        let mut sealed = Vec::with_capacity(letters.len());
        for letter in letters {
            match seal_to_public(
                &public,
                &self.args.identity,
                &letter.encode(),
                &mut self.rng,
            ) {
                Ok(part) => sealed.push(part),
                Err(e) => {
                    self.fail(message_id, &format!("could not seal: {e}"));
                    return;
                }
            }
        }
        for part in sealed {
            self.route_part(Unrouted {
                destination,
                message_id,
                payload: E2eMessage::Sealed(part).encode(),
            });
        }
        metrics::counter!("x0_e2e_messages_total", "status" => "sent").increment(1);
        self.set_status(message_id, MessageStatus::Sent, None);
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
            // The routed envelope was signed by its origin: these are its keys.
            E2eMessage::Keys(public) => self.learn_keys(delivered.origin, public),
            E2eMessage::Sealed(bytes) => {
                let now = self.clock.now();
                let origin = delivered.origin;
                let letter = open_sealed(&self.keys, &bytes, Some(origin))
                    .map_err(|e| e.reason())
                    .and_then(|opened| Letter::decode(&opened.plaintext).map_err(|_| "letter"))
                    .and_then(|letter| {
                        let id = letter.message_id;
                        self.assembler
                            .add(origin, letter, now)
                            .map(|done| done.map(|whole| (id, whole)))
                            .map_err(|e| e.reason())
                    });
                match letter {
                    // More parts to come.
                    Ok(None) => {}
                    Ok(Some((message_id, (meta, body)))) => {
                        metrics::counter!("x0_e2e_opened_total").increment(1);
                        self.route(
                            origin,
                            &E2eMessage::Receipt {
                                message_id,
                                status: ReceiptStatus::Delivered,
                            },
                        );
                        // The application sees the sender's message id, which is what a
                        // read receipt names.
                        self.args.observer.delivered(Delivered {
                            id: message_id,
                            payload: body,
                            content: Some(meta),
                            ..delivered
                        });
                    }
                    Err(reason) => {
                        metrics::counter!("x0_e2e_rejected_total", "reason" => reason).increment(1);
                        tracing::debug!(reason, origin = %delivered.origin, "refused a sealed message");
                    }
                }
            }
            E2eMessage::Receipt { message_id, status } => {
                // Only the destination may speak for its messages.
                let from_destination = self
                    .outbox
                    .get(&message_id)
                    .is_some_and(|t| t.entry.destination == delivered.origin);
                if from_destination {
                    let status = match status {
                        ReceiptStatus::Delivered => MessageStatus::Delivered,
                        ReceiptStatus::Read => MessageStatus::Read,
                    };
                    self.set_status(message_id, status, None);
                } else {
                    metrics::counter!("x0_e2e_rejected_total", "reason" => "stray_receipt")
                        .increment(1);
                }
            }
        }
    }

    /// Fails sends that waited too long for keys, and expires sent ones never delivered.
    fn expire(&mut self) {
        let now = tokio::time::Instant::now();
        let mut failed = Vec::new();
        for list in self.waiting.values_mut() {
            let (expired, kept): (Vec<Waiting>, Vec<Waiting>) = std::mem::take(list)
                .into_iter()
                .partition(|w| now.duration_since(w.since) >= KEY_WAIT);
            *list = kept;
            failed.extend(expired.into_iter().map(|w| w.message_id));
        }
        self.waiting.retain(|_, list| !list.is_empty());
        for message_id in failed {
            self.waiting_count -= 1;
            self.fail(
                message_id,
                "the destination did not send its keys (unreachable?)",
            );
        }
        self.requested
            .retain(|_, at| now.duration_since(*at) < KEY_WAIT);
        // A key request lost on the way (no route yet, a dropped relay) is asked again
        // while messages still wait for the answer.
        let again: Vec<NodeId> = self
            .waiting
            .keys()
            .filter(|d| {
                self.requested
                    .get(*d)
                    .is_none_or(|at| now.duration_since(*at) >= REQUEST_EVERY)
            })
            .copied()
            .collect();
        for destination in again {
            self.requested.insert(destination, now);
            self.route(destination, &E2eMessage::KeyRequest);
        }
        let now_ms = self.clock.now().0;
        let expired: Vec<u64> = self
            .outbox
            .values()
            .filter(|t| t.entry.status == MessageStatus::Sent && now_ms >= t.expires_ms)
            .map(|t| t.entry.message_id)
            .collect();
        for message_id in expired {
            metrics::counter!("x0_e2e_messages_total", "status" => "expired").increment(1);
            self.set_status(
                message_id,
                MessageStatus::Expired,
                Some("no receipt within its time to live".into()),
            );
        }
    }
}
