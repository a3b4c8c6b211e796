//! Channels on this node's replica: creating them, granting keys, posting and reading.
//!
//! The protocol ([`x0_protocols::channel`]) says what the entries are; this part of the
//! CRDT actor writes them with the node's identity, opens the grants addressed to this
//! node with its end-to-end keys, and tells watchers of each post as soon as it can be
//! read. A post becomes readable when the last of three things arrives (the post, this
//! node's grant for its epoch, the channel's descriptor), in whatever order gossip brings
//! them; each arrival checks for the others, so every post is told once.

use std::collections::HashMap;
use std::sync::Arc;

use super::LazyBroadcast;
use rand::RngCore;
use rand_chacha::ChaCha20Rng;
use serde::{Deserialize, Serialize};
use x0_protocols::channel::{
    CHANNEL_KEYS, CHANNEL_POSTS, CHANNELS, ChannelError, ChannelId, Descriptor, GrantName, Post,
    PostName, describe, open_grant, open_post, seal_grant, seal_post,
};
use x0_protocols::crdt::{CrdtSync, MeshState, NodeRecord, SignedEntry, record_key};
use x0_protocols::crypto::group::GroupKey;
use x0_protocols::crypto::seal::{E2eKeys, E2ePublic};
use x0_protocols::e2e::ContentMeta;
use x0_protocols::{Identity, Millis, NodeId};

use crate::e2e::Outgoing;

/// Opened epoch keys kept; past this the cache starts over (grants stay in the state).
const MAX_OPENED: usize = 1024;

/// A channel as its members see it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelInfo {
    /// `<owner>/<name>`: what the API and CLI take.
    pub id: String,
    #[serde(with = "super::node_id_text")]
    pub owner: NodeId,
    pub name: String,
    /// The current key epoch (mesh time of the last membership change).
    pub epoch: u64,
    #[serde(with = "node_ids_text")]
    pub members: Vec<NodeId>,
}

/// One readable post. Its `Debug` leaves out the body, so logging a post does not
/// write its plaintext.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelMessage {
    /// `<owner>/<name>`.
    pub channel: String,
    #[serde(with = "super::node_id_text")]
    pub from: NodeId,
    /// The writer's id for this post.
    pub post_id: u64,
    /// Mesh time the writer posted it (Unix milliseconds in a real node).
    pub sent_ms: u64,
    pub epoch: u64,
    pub content: ContentMeta,
    pub body: Vec<u8>,
}

impl std::fmt::Debug for ChannelMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChannelMessage")
            .field("channel", &self.channel)
            .field("from", &self.from)
            .field("post_id", &self.post_id)
            .field("sent_ms", &self.sent_ms)
            .field("epoch", &self.epoch)
            .field("kind", &self.content.kind)
            .field("body_len", &self.body.len())
            .finish()
    }
}

pub enum ChannelRequest {
    /// A new channel owned by this node, for `members` and this node.
    Create {
        name: String,
        members: Vec<NodeId>,
        reply: ractor::RpcReplyPort<Result<ChannelInfo, ChannelError>>,
    },
    /// Replaces the members of a channel this node owns, under a new key.
    SetMembers {
        name: String,
        members: Vec<NodeId>,
        reply: ractor::RpcReplyPort<Result<ChannelInfo, ChannelError>>,
    },
    /// Deletes a channel this node owns: its descriptor and every key grant.
    Delete {
        name: String,
        reply: ractor::RpcReplyPort<Result<(), ChannelError>>,
    },
    /// Channels this node is a member of.
    List(ractor::RpcReplyPort<Vec<ChannelInfo>>),
    Post {
        channel: ChannelId,
        content: Outgoing,
        body: Vec<u8>,
        reply: ractor::RpcReplyPort<Result<ChannelMessage, ChannelError>>,
    },
    /// Every post of `channel` this node can read, oldest first.
    Read {
        channel: ChannelId,
        reply: ractor::RpcReplyPort<Result<Vec<ChannelMessage>, ChannelError>>,
    },
}

/// This node's side of every channel: its keys, the epoch keys it opened, and the
/// channels it has seen, by tag.
pub struct Channels {
    me: NodeId,
    keys: E2eKeys,
    rng: ChaCha20Rng,
    opened: HashMap<([u8; 16], u64), GroupKey>,
    known: HashMap<[u8; 16], ChannelId>,
    posts: LazyBroadcast<ChannelMessage>,
}

impl Channels {
    pub fn new(
        me: NodeId,
        keys: E2eKeys,
        rng: ChaCha20Rng,
        posts: LazyBroadcast<ChannelMessage>,
        state: &MeshState,
    ) -> Channels {
        let known = state
            .space(CHANNELS)
            .filter_map(|e| ChannelId::from_descriptor_key(e.key()))
            .map(|id| (id.tag(), id))
            .collect();
        Channels {
            me,
            keys,
            rng,
            opened: HashMap::new(),
            known,
            posts,
        }
    }

    pub fn public(&self) -> &E2ePublic {
        self.keys.public()
    }

    pub fn handle(
        &mut self,
        sync: &mut CrdtSync,
        identity: &Identity,
        now: Millis,
        request: ChannelRequest,
    ) {
        match request {
            ChannelRequest::Create {
                name,
                members,
                reply,
            } => {
                let result = ChannelId::new(self.me, &name).and_then(|id| {
                    if descriptor(sync.state(), &id).is_some() {
                        return Err(ChannelError::Exists(id.to_string()));
                    }
                    self.start_epoch(sync, identity, now, &id, members, 0)
                });
                let _ = reply.send(result);
            }
            ChannelRequest::SetMembers {
                name,
                members,
                reply,
            } => {
                let result = ChannelId::new(self.me, &name).and_then(|id| {
                    let current = descriptor(sync.state(), &id)
                        .ok_or_else(|| ChannelError::UnknownChannel(id.to_string()))?;
                    self.start_epoch(sync, identity, now, &id, members, current.epoch)
                });
                let _ = reply.send(result);
            }
            ChannelRequest::Delete { name, reply } => {
                let _ = reply.send(self.delete(sync, identity, now, &name));
            }
            ChannelRequest::List(reply) => {
                let _ = reply.send(self.list(sync.state()));
            }
            ChannelRequest::Post {
                channel,
                content,
                body,
                reply,
            } => {
                let _ = reply.send(self.post(sync, identity, now, &channel, content, &body));
            }
            ChannelRequest::Read { channel, reply } => {
                let _ = reply.send(self.read(sync.state(), &channel));
            }
        }
    }

    /// Writes a fresh key for `members` (and this node) under a new epoch: one grant per
    /// member, then the descriptor, so a member that sees the descriptor has usually
    /// seen its grant too.
    fn start_epoch(
        &mut self,
        sync: &mut CrdtSync,
        identity: &Identity,
        now: Millis,
        id: &ChannelId,
        members: Vec<NodeId>,
        previous_epoch: u64,
    ) -> Result<ChannelInfo, ChannelError> {
        let epoch = sync.mesh_time(now).max(previous_epoch + 1);
        let descriptor = Descriptor::new(self.me, epoch, members)?;
        let publics = descriptor
            .members
            .iter()
            .map(|member| self.public_keys(sync.state(), member).map(|k| (*member, k)))
            .collect::<Result<Vec<_>, _>>()?;
        let key = GroupKey::generate(&mut self.rng);
        for (member, public) in publics {
            let grant = seal_grant(id, epoch, &key, &public, identity, &mut self.rng)?;
            sync.write(now, identity, id.grant_key(epoch, &member), Some(grant))?;
        }
        sync.write(
            now,
            identity,
            id.descriptor_key(),
            Some(descriptor.encode()),
        )?;
        self.known.insert(id.tag(), id.clone());
        self.remember(id, epoch, key);
        Ok(info(id, &descriptor))
    }

    fn public_keys(&self, state: &MeshState, node: &NodeId) -> Result<E2ePublic, ChannelError> {
        if *node == self.me {
            return Ok(self.keys.public().clone());
        }
        state
            .get(&record_key(node))
            .and_then(|e| e.entry.value.as_deref())
            .and_then(|v| NodeRecord::decode(v).ok())
            .map(|record| record.e2e)
            .ok_or(ChannelError::UnknownMember(*node))
    }

    fn delete(
        &mut self,
        sync: &mut CrdtSync,
        identity: &Identity,
        now: Millis,
        name: &str,
    ) -> Result<(), ChannelError> {
        let id = ChannelId::new(self.me, name)?;
        descriptor(sync.state(), &id)
            .ok_or_else(|| ChannelError::UnknownChannel(id.to_string()))?;
        let prefix = id.grants_prefix();
        let grants: Vec<_> = sync
            .state()
            .prefixed(CHANNEL_KEYS, &prefix)
            .filter(|e| e.entry.value.is_some())
            .map(|e| e.key().clone())
            .collect();
        for key in grants {
            sync.write(now, identity, key, None)?;
        }
        sync.write(now, identity, id.descriptor_key(), None)?;
        self.opened.retain(|(tag, _), _| *tag != id.tag());
        Ok(())
    }

    fn list(&self, state: &MeshState) -> Vec<ChannelInfo> {
        state
            .space(CHANNELS)
            .filter_map(|entry| {
                let id = ChannelId::from_descriptor_key(entry.key())?;
                let descriptor = Descriptor::decode(entry.entry.value.as_deref()?).ok()?;
                descriptor
                    .is_member(&self.me)
                    .then(|| info(&id, &descriptor))
            })
            .collect()
    }

    fn post(
        &mut self,
        sync: &mut CrdtSync,
        identity: &Identity,
        now: Millis,
        id: &ChannelId,
        content: Outgoing,
        body: &[u8],
    ) -> Result<ChannelMessage, ChannelError> {
        let current = descriptor(sync.state(), id)
            .ok_or_else(|| ChannelError::UnknownChannel(id.to_string()))?;
        if !current.is_member(&self.me) {
            return Err(ChannelError::NotMember(id.to_string()));
        }
        let key = self
            .epoch_key(sync.state(), id, current.epoch)
            .ok_or_else(|| ChannelError::KeyPending(id.to_string()))?;
        let post_id = self.rng.next_u64();
        let meta = describe(content.kind, content.name, content.mime, body);
        let value = seal_post(
            id,
            current.epoch,
            &key,
            &self.me,
            post_id,
            meta.clone(),
            body,
            &mut self.rng,
        )?;
        let entry = sync.write(now, identity, id.post_key(&self.me, post_id), Some(value))?;
        Ok(ChannelMessage {
            channel: id.to_string(),
            from: self.me,
            post_id,
            sent_ms: entry.entry.stamp,
            epoch: current.epoch,
            content: meta,
            body: body.to_vec(),
        })
    }

    fn read(
        &mut self,
        state: &MeshState,
        id: &ChannelId,
    ) -> Result<Vec<ChannelMessage>, ChannelError> {
        descriptor(state, id).ok_or_else(|| ChannelError::UnknownChannel(id.to_string()))?;
        let prefix = id.grants_prefix();
        let granted = state.prefixed(CHANNEL_KEYS, &prefix).any(|e| {
            e.entry.value.is_some()
                && GrantName::parse(e.key()).is_some_and(|g| g.member == self.me)
        });
        if !granted {
            return Err(ChannelError::NotMember(id.to_string()));
        }
        let tag = id.tag();
        let mut messages: Vec<ChannelMessage> = state
            .prefixed(CHANNEL_POSTS, &tag)
            .filter_map(|entry| self.open(state, id, entry))
            .collect();
        messages.sort_by_key(|m| (m.sent_ms, m.from, m.post_id));
        Ok(messages)
    }

    /// The post in `entry`, if this node holds its epoch's key and it opens. Posts of
    /// epochs this node was not granted are not for it; anything else that fails is
    /// counted.
    fn open(
        &mut self,
        state: &MeshState,
        id: &ChannelId,
        entry: &SignedEntry,
    ) -> Option<ChannelMessage> {
        let name = PostName::parse(entry.key())?;
        let post = match Post::decode(entry.entry.value.as_deref()?) {
            Ok(post) => post,
            Err(e) => return reject(&e),
        };
        let key = self.epoch_key(state, id, post.epoch)?;
        // Only a member of the post's epoch may write in it.
        if !holds_grant(state, id, post.epoch, &name.writer) {
            return reject(&ChannelError::NotMember(id.to_string()));
        }
        match open_post(id, &key, &name.writer, name.post_id, &post) {
            Ok((content, body)) => Some(ChannelMessage {
                channel: id.to_string(),
                from: name.writer,
                post_id: name.post_id,
                sent_ms: entry.entry.stamp,
                epoch: post.epoch,
                content,
                body,
            }),
            Err(e) => reject(&e),
        }
    }

    /// This node's key for `epoch` of `id`, from the cache or its grant.
    fn epoch_key(&mut self, state: &MeshState, id: &ChannelId, epoch: u64) -> Option<GroupKey> {
        if let Some(key) = self.opened.get(&(id.tag(), epoch)) {
            return Some(key.clone());
        }
        let grant = state.get(&id.grant_key(epoch, &self.me))?;
        match open_grant(id, epoch, &self.keys, grant.entry.value.as_deref()?) {
            Ok(key) => {
                self.remember(id, epoch, key.clone());
                Some(key)
            }
            Err(e) => reject(&e),
        }
    }

    fn remember(&mut self, id: &ChannelId, epoch: u64, key: GroupKey) {
        if self.opened.len() >= MAX_OPENED {
            self.opened.clear();
        }
        self.opened.insert((id.tag(), epoch), key);
    }

    /// Called for every entry the replica takes: tells watchers of each post that just
    /// became readable here.
    pub fn on_applied(&mut self, state: &MeshState, entry: &Arc<SignedEntry>) {
        if entry.entry.value.is_none() || !self.posts.watched() {
            if let Some(id) = ChannelId::from_descriptor_key(entry.key()) {
                self.known.insert(id.tag(), id);
            }
            return;
        }
        let key = entry.key();
        match key.space.as_str() {
            CHANNEL_POSTS => {
                let Some(name) = PostName::parse(key) else {
                    return;
                };
                if name.writer == self.me {
                    return;
                }
                if let Some(id) = self.known.get(&name.tag).cloned()
                    && let Some(message) = self.open(state, &id, entry)
                {
                    self.posts.send(message);
                }
            }
            CHANNEL_KEYS => {
                if let Some(grant) = GrantName::parse(key)
                    && grant.member == self.me
                    && let Some(id) = self.known.get(&grant.tag).cloned()
                {
                    self.tell_posts(state, &id, Some(grant.epoch));
                }
            }
            CHANNELS => {
                if let Some(id) = ChannelId::from_descriptor_key(key)
                    && self.known.insert(id.tag(), id.clone()).is_none()
                {
                    self.tell_posts(state, &id, None);
                }
            }
            _ => {}
        }
    }

    /// Tells watchers of the posts of `id` (of one epoch, or all) written by others.
    fn tell_posts(&mut self, state: &MeshState, id: &ChannelId, epoch: Option<u64>) {
        let tag = id.tag();
        let entries: Vec<Arc<SignedEntry>> = state
            .prefixed(CHANNEL_POSTS, &tag)
            .filter(|e| PostName::parse(e.key()).is_some_and(|p| p.writer != self.me))
            .filter(|e| {
                epoch.is_none_or(|epoch| {
                    e.entry
                        .value
                        .as_deref()
                        .and_then(|v| Post::decode(v).ok())
                        .is_some_and(|p| p.epoch == epoch)
                })
            })
            .cloned()
            .collect();
        for entry in entries {
            if let Some(message) = self.open(state, id, &entry) {
                self.posts.send(message);
            }
        }
    }
}

fn descriptor(state: &MeshState, id: &ChannelId) -> Option<Descriptor> {
    let entry = state.get(&id.descriptor_key())?;
    Descriptor::decode(entry.entry.value.as_deref()?).ok()
}

fn holds_grant(state: &MeshState, id: &ChannelId, epoch: u64, member: &NodeId) -> bool {
    state
        .get(&id.grant_key(epoch, member))
        .is_some_and(|e| e.entry.value.is_some())
}

fn info(id: &ChannelId, descriptor: &Descriptor) -> ChannelInfo {
    ChannelInfo {
        id: id.to_string(),
        owner: id.owner,
        name: id.name.clone(),
        epoch: descriptor.epoch,
        members: descriptor.members.clone(),
    }
}

fn reject<T>(error: &ChannelError) -> Option<T> {
    metrics::counter!("x0_channel_rejected_total", "reason" => error.reason()).increment(1);
    tracing::debug!(%error, "a channel entry did not open");
    None
}

/// Serde for a list of node ids as their text forms.
mod node_ids_text {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};
    use x0_protocols::NodeId;

    pub fn serialize<S: Serializer>(ids: &[NodeId], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(ids.iter().map(|id| id.to_string()))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<NodeId>, D::Error> {
        Vec::<String>::deserialize(deserializer)?
            .iter()
            .map(|s| s.parse().map_err(D::Error::custom))
            .collect()
    }
}
