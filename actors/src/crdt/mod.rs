//! The `CrdtSync` actor: this node's replica of the mesh state and its gossip.
//!
//! It drives [`x0_protocols::crdt::CrdtSync`] on tokio time, sends its messages to link
//! peers as `Crdt` envelopes, keeps this node's registry record fresh, saves the state
//! (debounced) and tells watchers of every change. The protocol does the rest.

mod channels;
mod lazy_broadcast;
mod map;
mod store;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use rand::{Rng, SeedableRng};
use rand_chacha::{ChaCha8Rng, ChaCha20Rng};
use serde::{Deserialize, Serialize};
use x0_protocols::crdt::{
    CrdtSync, EntryError, Key, NodeRecord, Output, Policy, REGISTRY, SignedEntry, SyncMessage,
    SyncSettings, SyncStats, Verifier, record_key,
};
use x0_protocols::e2e::keys_for;
use x0_protocols::{Envelope, Identity, Kind, Millis, NodeId};

pub use channels::{ChannelInfo, ChannelMessage, ChannelRequest};
pub use lazy_broadcast::LazyBroadcast;
pub use map::{MapChange, MapWatch, ReplicatedMap};
pub use store::{CrdtStore, CrdtStoreError};

use channels::Channels;

use crate::clock::NodeClock;
use crate::discovery::LinkEvent;
use crate::observer::NodeObserver;
use crate::port::NetworkPort;
use crate::timer::Timer;

/// How often a changed state is written to the store, at most.
const SAVE_EVERY_MS: u64 = 2_000;

/// What the node says about itself in the registry, and how the state is spread.
#[derive(Clone, Debug, PartialEq)]
pub struct CrdtSettings {
    pub policy: Policy,
    pub sync: SyncSettings,
    /// How often this node re-signs its registry record; well inside the expiry, so a
    /// lost refresh or two does not expire a live node.
    pub refresh_ms: u64,
    pub addresses: Vec<String>,
    pub roles: Vec<String>,
}

impl CrdtSettings {
    /// Sets the record expiry, and the refresh to a third of it (a lost refresh or two
    /// then still does not expire a live node).
    pub fn set_record_expiry(&mut self, ms: u64) {
        self.policy.record_expiry_ms = ms;
        self.refresh_ms = ms / 3;
    }
}

impl Default for CrdtSettings {
    fn default() -> Self {
        let policy = Policy::default();
        CrdtSettings {
            refresh_ms: policy.record_expiry_ms / 3,
            policy,
            sync: SyncSettings::default(),
            addresses: Vec::new(),
            roles: Vec::new(),
        }
    }
}

/// One change to the replicated state, for watchers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// The key now holds this entry (its value, or a tombstone).
    Written(Arc<SignedEntry>),
    /// The entry at this key expired and was dropped.
    Expired(Key),
}

/// A node as the registry shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryRecord {
    /// As text (`12D3KooW…`), the way every other API shows node ids.
    #[serde(with = "node_id_text")]
    pub id: NodeId,
    pub addresses: Vec<String>,
    /// Hex of the ML-KEM-768 encapsulation key (1,184 bytes).
    pub mlkem_public_key: String,
    pub x25519_public_key: String,
    pub roles: Vec<String>,
    pub software: String,
    /// The record's version: its writer's stamp, in mesh milliseconds (Unix time in a
    /// real node).
    pub version: u64,
    /// Mesh time of the last refresh (same as `version`) and when it expires.
    pub updated_ms: u64,
    pub expires_ms: u64,
}

/// Counters and sizes, for `/api/v1/crdt` and the simulator's report.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrdtStatus {
    pub entries: usize,
    pub records: usize,
    pub state_bytes: usize,
    /// Fingerprint of the whole state: equal on two nodes means the same state.
    pub root: u64,
    pub neighbors: usize,
    pub sync: SyncStats,
    pub saves: u64,
    pub save_errors: u64,
}

pub enum CrdtMsg {
    Inbound(Envelope),
    Link(LinkEvent),
    Tick(u64),
    Write {
        key: Key,
        value: Option<Vec<u8>>,
        reply: RpcReplyPort<Result<Arc<SignedEntry>, EntryError>>,
    },
    Get {
        key: Key,
        reply: RpcReplyPort<Option<Arc<SignedEntry>>>,
    },
    Space {
        space: String,
        reply: RpcReplyPort<Vec<Arc<SignedEntry>>>,
    },
    Registry(RpcReplyPort<Vec<RegistryRecord>>),
    Status(RpcReplyPort<CrdtStatus>),
    /// From the e2e actor: tell it `node`'s keys from the registry (or that there are none).
    LookupKeys {
        node: NodeId,
    },
    Channel(ChannelRequest),
}

pub struct CrdtArgs {
    pub identity: Arc<Identity>,
    pub port: Arc<dyn NetworkPort>,
    pub settings: CrdtSettings,
    pub clock: NodeClock,
    /// Mesh time at the clock's epoch (see [`CrdtSync::mesh_time`]).
    pub epoch_ms: u64,
    pub seed: u64,
    /// Seeds the generator of channel keys and nonces (never the configurable seed).
    pub crypto_seed: [u8; 32],
    pub store: Option<CrdtStore>,
    pub verifier: Arc<dyn Verifier>,
    pub changes: LazyBroadcast<Change>,
    /// Told of every channel post this node can read, as it becomes readable.
    pub channel_posts: LazyBroadcast<ChannelMessage>,
    pub observer: Arc<dyn NodeObserver>,
    /// Told of other nodes' end-to-end keys as their registry records arrive.
    pub supervisor: ActorRef<crate::supervisor::NodeMsg>,
    /// Inbound envelopes queued for this actor; the supervisor stops queueing past a
    /// limit, and this actor counts them down as it takes them.
    pub pending: Arc<AtomicUsize>,
}

pub struct CrdtState {
    args: CrdtArgs,
    sync: CrdtSync,
    /// This node's registry record, encoded.
    record: Vec<u8>,
    next_refresh: Millis,
    timer: Timer,
    dirty: bool,
    next_save: Millis,
    saves: u64,
    save_errors: u64,
    rng: ChaCha8Rng,
    channels: Channels,
}

pub struct CrdtActor;

impl Actor for CrdtActor {
    type Msg = CrdtMsg;
    type State = CrdtState;
    type Arguments = CrdtArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<CrdtMsg>,
        args: CrdtArgs,
    ) -> Result<CrdtState, ActorProcessingErr> {
        let now = args.clock.now();
        let mut sync = CrdtSync::new(
            args.identity.id(),
            args.settings.policy,
            args.settings.sync,
            args.epoch_ms,
            args.seed,
        );
        if let Some(store) = &args.store {
            match store.load() {
                Ok(entries) => {
                    let refused = sync.restore(now, entries, args.verifier.as_ref());
                    if refused > 0 {
                        tracing::info!(refused, "saved CRDT entries expired or refused at load");
                    }
                }
                Err(e) => {
                    metrics::counter!("x0_crdt_store_damaged_total").increment(1);
                    let aside = store.set_aside();
                    tracing::error!(error = %e, ?aside, "CRDT state set aside; refetching it from neighbors");
                }
            }
        }
        let channels = Channels::new(
            args.identity.id(),
            keys_for(&args.identity),
            ChaCha20Rng::from_seed(args.crypto_seed),
            args.channel_posts.clone(),
            sync.state(),
        );
        let record = NodeRecord {
            addresses: args.settings.addresses.clone(),
            e2e: channels.public().clone(),
            roles: args.settings.roles.clone(),
            software: format!("x0tta6bl4/{}", env!("CARGO_PKG_VERSION")),
        }
        .encode();
        let mut state = CrdtState {
            sync,
            record,
            next_refresh: now,
            timer: Timer::default(),
            dirty: false,
            next_save: now.plus(SAVE_EVERY_MS),
            saves: 0,
            save_errors: 0,
            rng: ChaCha8Rng::seed_from_u64(args.seed.rotate_left(29)),
            channels,
            args,
        };
        state.publish_record(now, true);
        state.drain();
        state.arm(&myself);
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<CrdtMsg>,
        message: CrdtMsg,
        state: &mut CrdtState,
    ) -> Result<(), ActorProcessingErr> {
        let now = state.args.clock.now();
        match message {
            CrdtMsg::Inbound(envelope) => {
                state.args.pending.fetch_sub(1, Ordering::Relaxed);
                match envelope.decode_payload::<SyncMessage>() {
                    Ok(message) => {
                        let verifier = state.args.verifier.clone();
                        state
                            .sync
                            .handle_message(now, envelope.from, message, verifier.as_ref());
                    }
                    Err(e) => {
                        metrics::counter!("x0_crdt_rejected_total", "reason" => "undecodable")
                            .increment(1);
                        tracing::debug!(peer = %envelope.from, error = %e, "undecodable CRDT message");
                    }
                }
            }
            CrdtMsg::Link(LinkEvent::Up { neighbor, .. }) => state.sync.link_up(neighbor),
            CrdtMsg::Link(LinkEvent::Down { neighbor }) => state.sync.link_down(neighbor),
            CrdtMsg::Link(LinkEvent::Cost { .. } | LinkEvent::Suspected { .. }) => {}
            CrdtMsg::Tick(generation) => {
                if state.timer.fire(generation) {
                    state.sync.handle_timeout(now);
                    if state.next_refresh <= now {
                        state.publish_record(now, false);
                    }
                    if state.dirty && state.next_save <= now {
                        state.save(now);
                    }
                }
            }
            CrdtMsg::Write { key, value, reply } => {
                let result = if key.space.starts_with(x0_protocols::crdt::RESERVED_PREFIX) {
                    Err(EntryError::NotAllowed(key.space))
                } else {
                    let identity = state.args.identity.clone();
                    state.sync.write(now, &identity, key, value)
                };
                let _ = reply.send(result);
            }
            CrdtMsg::Get { key, reply } => {
                let _ = reply.send(state.sync.state().get(&key).cloned());
            }
            CrdtMsg::Space { space, reply } => {
                let _ = reply.send(state.sync.state().space(&space).cloned().collect());
            }
            CrdtMsg::LookupKeys { node } => state.lookup_keys(node),
            CrdtMsg::Channel(request) => {
                let identity = state.args.identity.clone();
                state
                    .channels
                    .handle(&mut state.sync, &identity, now, request);
            }
            CrdtMsg::Registry(reply) => {
                let _ = reply.send(state.registry());
            }
            CrdtMsg::Status(reply) => {
                let _ = reply.send(state.status());
            }
        }
        state.drain();
        state.arm(&myself);
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<CrdtMsg>,
        state: &mut CrdtState,
    ) -> Result<(), ActorProcessingErr> {
        if state.dirty {
            let now = state.args.clock.now();
            state.save(now);
        }
        Ok(())
    }
}

impl CrdtState {
    /// Re-signs this node's record when it is missing, changed or due for refresh. At
    /// start, a node that finds its own unchanged, fresh record in its saved state
    /// keeps it, so churn does not flood the mesh with records nobody needs.
    fn publish_record(&mut self, now: Millis, starting: bool) {
        let key = record_key(&self.args.identity.id());
        let refresh = self.args.settings.refresh_ms;
        // A little jitter, so nodes started together do not refresh together.
        let jitter = self.rng.random_range(0..=refresh / 10);
        if starting
            && let Some(current) = self.sync.state().get(&key)
            && current.entry.value.as_deref() == Some(self.record.as_slice())
        {
            let age = self.sync.mesh_time(now).saturating_sub(current.entry.stamp);
            if age + jitter < refresh {
                self.next_refresh = now.plus(refresh - age - jitter);
                return;
            }
        }
        let identity = self.args.identity.clone();
        match self
            .sync
            .write(now, &identity, key, Some(self.record.clone()))
        {
            Ok(_) => self.next_refresh = now.plus(refresh - jitter),
            Err(e) => {
                // Try again in a while rather than on every tick.
                self.next_refresh = now.plus(refresh / 10);
                tracing::error!(error = %e, "could not write this node's registry record");
            }
        }
    }

    fn drain(&mut self) {
        let mut changed = false;
        while let Some(output) = self.sync.poll_output() {
            match output {
                Output::Send(to, message) => {
                    let envelope =
                        Envelope::link_local(self.args.identity.id(), Kind::Crdt, &message);
                    self.args.port.send(to, &envelope);
                }
                Output::Applied(entry) => {
                    changed = true;
                    metrics::counter!("x0_crdt_applied_total").increment(1);
                    self.dirty = true;
                    self.args.observer.crdt_applied(&entry);
                    self.channels.on_applied(self.sync.state(), &entry);
                    self.args.changes.send(Change::Written(entry));
                }
                Output::Expired(key) => {
                    changed = true;
                    metrics::counter!("x0_crdt_expired_total").increment(1);
                    self.dirty = true;
                    self.args.changes.send(Change::Expired(key));
                }
                Output::Rejected { from, error } => {
                    metrics::counter!("x0_crdt_rejected_total", "reason" => rejection_reason(&error))
                        .increment(1);
                    tracing::debug!(peer = %from, %error, "refused a CRDT entry");
                }
            }
        }
        if changed {
            let state = self.sync.state();
            self.args.observer.crdt_root(state.root());
            metrics::gauge!("x0_crdt_entries").set(state.len() as f64);
            metrics::gauge!("x0_crdt_state_bytes").set(state.bytes() as f64);
        }
    }

    /// Answers the e2e actor's question for `node`'s end-to-end keys from its signed
    /// registry record. Asked per destination, not pushed per record: a thousand
    /// records' ML-KEM keys copied into every node's cache would cost 1.2 MB a node.
    fn lookup_keys(&self, node: NodeId) {
        use crate::e2e::E2eMsg;
        let record = self
            .sync
            .state()
            .get(&record_key(&node))
            .and_then(|e| e.entry.value.as_deref())
            .and_then(|v| NodeRecord::decode(v).ok());
        let answer = match record {
            Some(record) => E2eMsg::LearnKeys {
                node,
                keys: record.e2e,
            },
            None => E2eMsg::KeysUnknown { node },
        };
        let _ = self
            .args
            .supervisor
            .cast(crate::supervisor::NodeMsg::E2e(answer));
    }

    fn arm(&mut self, myself: &ActorRef<CrdtMsg>) {
        let mut deadline = self.sync.next_deadline().min(self.next_refresh);
        if self.dirty {
            deadline = deadline.min(self.next_save);
        }
        self.timer
            .arm(myself, &self.args.clock, Some(deadline), CrdtMsg::Tick);
    }

    fn save(&mut self, now: Millis) {
        self.next_save = now.plus(SAVE_EVERY_MS);
        let Some(store) = &self.args.store else {
            self.dirty = false;
            return;
        };
        let entries: Vec<Arc<SignedEntry>> = self.sync.state().entries().cloned().collect();
        match store.save(&entries) {
            Ok(()) => {
                self.dirty = false;
                self.saves += 1;
            }
            Err(e) => {
                self.save_errors += 1;
                metrics::counter!("x0_crdt_save_errors_total").increment(1);
                tracing::warn!(error = %e, "could not save the CRDT state; will retry");
            }
        }
    }

    fn registry(&self) -> Vec<RegistryRecord> {
        let expiry = self.sync.policy().record_expiry_ms;
        self.sync
            .state()
            .space(REGISTRY)
            .filter_map(|entry| {
                let record = NodeRecord::decode(entry.entry.value.as_deref()?).ok()?;
                Some(RegistryRecord {
                    id: entry.entry.writer,
                    addresses: record.addresses,
                    mlkem_public_key: hex::encode(&record.e2e.mlkem),
                    x25519_public_key: hex::encode(record.e2e.x25519),
                    roles: record.roles,
                    software: record.software,
                    version: entry.entry.stamp,
                    updated_ms: entry.entry.stamp,
                    expires_ms: entry.entry.stamp.saturating_add(expiry),
                })
            })
            .collect()
    }

    fn status(&self) -> CrdtStatus {
        let state = self.sync.state();
        CrdtStatus {
            entries: state.len(),
            records: state.space(REGISTRY).count(),
            state_bytes: state.bytes(),
            root: state.root(),
            neighbors: self.sync.neighbors().count(),
            sync: self.sync.stats(),
            saves: self.saves,
            save_errors: self.save_errors,
        }
    }
}

fn rejection_reason(error: &EntryError) -> &'static str {
    match error {
        EntryError::BadSignature => "bad_signature",
        EntryError::TooLarge(_) => "too_large",
        EntryError::NotAllowed(_) => "not_allowed",
        EntryError::Expired => "expired",
        EntryError::FromTheFuture => "from_the_future",
    }
}

/// Serde for a node id as its text form.
mod node_id_text {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};
    use x0_protocols::NodeId;

    pub fn serialize<S: Serializer>(id: &NodeId, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(id)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<NodeId, D::Error> {
        String::deserialize(deserializer)?
            .parse()
            .map_err(D::Error::custom)
    }
}
