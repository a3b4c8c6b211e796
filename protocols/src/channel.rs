//! Channels: named groups whose messages every member can read and nobody else can.
//!
//! A channel lives in the replicated state (see [`crate::crdt`]), so its messages travel
//! by the same gossip as every other entry and reach members wherever they are in the
//! mesh; relays and other nodes hold only ciphertext. Three reserved key spaces carry it:
//!
//! - [`CHANNELS`]: the owner's signed descriptor (the current key epoch and the member
//!   list), named `owner ‖ channel name`;
//! - [`CHANNEL_KEYS`]: one grant per member and epoch, the epoch's [`GroupKey`] in a
//!   [`crate::crypto::seal`] box to the member's registry keys, signed by the owner, named
//!   `owner ‖ tag ‖ epoch ‖ member`;
//! - [`CHANNEL_POSTS`]: one entry per message, encrypted under the epoch's key, named
//!   `tag ‖ writer ‖ message id`.
//!
//! Only the owner may write the first two, and only the writer named in a post's key may
//! write it ([`may_write`]), so nobody can replace another member's message. Changing the
//! members starts a new epoch with a fresh key granted to the new member list only: a
//! removed member keeps what it could read before, and reads nothing after.

use std::fmt;
use std::str::FromStr;

use rand::{CryptoRng, RngCore};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::crdt::{Key, MAX_VALUE_LEN};
use crate::crypto::group::{
    GROUP_OVERHEAD, GroupCiphertext, GroupKey, group_decrypt, group_encrypt,
};
use crate::crypto::seal::{E2eKeys, E2ePublic, SealError, open_sealed, seal_to_public};
use crate::crypto::sha256;
use crate::e2e::ContentMeta;
use crate::{Identity, NodeId};

/// Channel descriptors: the current epoch and members, written by the owner.
pub const CHANNELS: &str = "x0/channels";
/// Key grants: each member's copy of an epoch's key, written by the owner.
pub const CHANNEL_KEYS: &str = "x0/channel-keys";
/// Messages, encrypted under their epoch's key, each written by its sender.
pub const CHANNEL_POSTS: &str = "x0/channel-posts";

/// Longest channel name, in bytes.
pub const MAX_CHANNEL_NAME: usize = 64;
/// Most members a channel has: its descriptor must fit one entry.
pub const MAX_MEMBERS: usize = 100;
/// Largest message body: with its description and encryption it must fit one entry.
/// Larger files go as direct end-to-end messages, which are split into parts.
pub const MAX_POST_BODY: usize = 3 * 1024;

const TAG_LABEL: &[u8] = b"x0tta6bl4/channel/tag/v1";
const POST_LABEL: &[u8] = b"x0tta6bl4/channel/post/v1";
const ID_LEN: usize = 32;
const TAG_LEN: usize = 16;
const GRANT_NAME_LEN: usize = ID_LEN + TAG_LEN + 8 + ID_LEN;
const POST_NAME_LEN: usize = TAG_LEN + ID_LEN + 8;
const GRANT_PLAINTEXT_LEN: usize = TAG_LEN + 8 + 32;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChannelError {
    #[error("invalid channel name {0:?}: 1 to {MAX_CHANNEL_NAME} letters, digits, '.', '_' or '-'")]
    InvalidName(String),
    #[error("invalid channel {0:?}: expected <owner node id>/<name>")]
    InvalidId(String),
    #[error("{0} members is too many (at most {MAX_MEMBERS})")]
    TooManyMembers(usize),
    #[error(
        "message of {0} bytes is too large for a channel (at most {MAX_POST_BODY}); send large files as direct messages"
    )]
    TooLarge(usize),
    #[error("no such channel: {0}")]
    UnknownChannel(String),
    #[error("channel {0} already exists")]
    Exists(String),
    #[error("only the channel's owner may do that")]
    NotOwner,
    #[error("this node is not a member of {0}")]
    NotMember(String),
    #[error("no registry record (and so no public keys) for {0} yet")]
    UnknownMember(NodeId),
    #[error("this node's key for {0} has not arrived yet; try again shortly")]
    KeyPending(String),
    #[error("write refused: {0}")]
    Refused(#[from] crate::crdt::EntryError),
    #[error("malformed {0}")]
    Malformed(&'static str),
    #[error("key grant refused: {0}")]
    Grant(#[from] SealError),
    #[error("key grant is bound to another channel or epoch")]
    MisboundGrant,
    #[error("message does not open under the channel's key (tampered with, or moved)")]
    Decryption,
    #[error("message content does not match its size and SHA-256")]
    Integrity,
}

impl ChannelError {
    /// A stable lowercase name, used as a metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            ChannelError::InvalidName(_) => "invalid_name",
            ChannelError::InvalidId(_) => "invalid_id",
            ChannelError::TooManyMembers(_) => "too_many_members",
            ChannelError::TooLarge(_) => "too_large",
            ChannelError::UnknownChannel(_) => "unknown_channel",
            ChannelError::Exists(_) => "exists",
            ChannelError::NotOwner => "not_owner",
            ChannelError::NotMember(_) => "not_member",
            ChannelError::UnknownMember(_) => "unknown_member",
            ChannelError::KeyPending(_) => "key_pending",
            ChannelError::Refused(_) => "refused",
            ChannelError::Malformed(_) => "malformed",
            ChannelError::Grant(_) => "bad_grant",
            ChannelError::MisboundGrant => "misbound_grant",
            ChannelError::Decryption => "decryption_failed",
            ChannelError::Integrity => "integrity",
        }
    }
}

/// A channel: its owner and a name unique among that owner's channels. Written as
/// `<owner>/<name>`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ChannelId {
    pub owner: NodeId,
    pub name: String,
}

impl ChannelId {
    pub fn new(owner: NodeId, name: &str) -> Result<ChannelId, ChannelError> {
        let valid = !name.is_empty()
            && name.len() <= MAX_CHANNEL_NAME
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if !valid {
            return Err(ChannelError::InvalidName(name.to_string()));
        }
        Ok(ChannelId {
            owner,
            name: name.to_string(),
        })
    }

    /// A short, collision-resistant handle for the channel in grant and post names.
    pub fn tag(&self) -> [u8; TAG_LEN] {
        let digest = sha256(&[TAG_LABEL, self.owner.as_bytes(), self.name.as_bytes()]);
        let mut tag = [0u8; TAG_LEN];
        tag.copy_from_slice(&digest[..TAG_LEN]);
        tag
    }

    pub fn descriptor_key(&self) -> Key {
        let mut name = self.owner.as_bytes().to_vec();
        name.extend_from_slice(self.name.as_bytes());
        Key::new(CHANNELS, name)
    }

    /// The channel a descriptor key names, if it is one.
    pub fn from_descriptor_key(key: &Key) -> Option<ChannelId> {
        if key.space != CHANNELS || key.name.len() <= ID_LEN {
            return None;
        }
        let owner = NodeId(key.name[..ID_LEN].try_into().ok()?);
        let name = std::str::from_utf8(&key.name[ID_LEN..]).ok()?;
        ChannelId::new(owner, name).ok()
    }

    /// Where `member`'s grant of the `epoch` key lives.
    pub fn grant_key(&self, epoch: u64, member: &NodeId) -> Key {
        let mut name = self.grants_prefix();
        name.extend_from_slice(&epoch.to_be_bytes());
        name.extend_from_slice(member.as_bytes());
        Key::new(CHANNEL_KEYS, name)
    }

    /// The common start of this channel's grant names (they sort by epoch after it).
    pub fn grants_prefix(&self) -> Vec<u8> {
        let mut name = self.owner.as_bytes().to_vec();
        name.extend_from_slice(&self.tag());
        name
    }

    pub fn post_key(&self, writer: &NodeId, post_id: u64) -> Key {
        let mut name = self.tag().to_vec();
        name.extend_from_slice(writer.as_bytes());
        name.extend_from_slice(&post_id.to_be_bytes());
        Key::new(CHANNEL_POSTS, name)
    }
}

impl fmt::Display for ChannelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.owner, self.name)
    }
}

impl fmt::Debug for ChannelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChannelId({}/{})", self.owner.short(), self.name)
    }
}

impl FromStr for ChannelId {
    type Err = ChannelError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (owner, name) = s
            .split_once('/')
            .ok_or_else(|| ChannelError::InvalidId(s.to_string()))?;
        let owner = owner
            .parse()
            .map_err(|_| ChannelError::InvalidId(s.to_string()))?;
        ChannelId::new(owner, name)
    }
}

/// Where a grant key points: the channel's owner and tag, the epoch and the member.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GrantName {
    pub owner: NodeId,
    pub tag: [u8; TAG_LEN],
    pub epoch: u64,
    pub member: NodeId,
}

impl GrantName {
    pub fn parse(key: &Key) -> Option<GrantName> {
        let n = &key.name;
        if key.space != CHANNEL_KEYS || n.len() != GRANT_NAME_LEN {
            return None;
        }
        Some(GrantName {
            owner: NodeId(n[..ID_LEN].try_into().ok()?),
            tag: n[ID_LEN..ID_LEN + TAG_LEN].try_into().ok()?,
            epoch: u64::from_be_bytes(n[ID_LEN + TAG_LEN..ID_LEN + TAG_LEN + 8].try_into().ok()?),
            member: NodeId(n[ID_LEN + TAG_LEN + 8..].try_into().ok()?),
        })
    }
}

/// Where a post key points: the channel's tag, the writer and its id for the message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PostName {
    pub tag: [u8; TAG_LEN],
    pub writer: NodeId,
    pub post_id: u64,
}

impl PostName {
    pub fn parse(key: &Key) -> Option<PostName> {
        let n = &key.name;
        if key.space != CHANNEL_POSTS || n.len() != POST_NAME_LEN {
            return None;
        }
        Some(PostName {
            tag: n[..TAG_LEN].try_into().ok()?,
            writer: NodeId(n[TAG_LEN..TAG_LEN + ID_LEN].try_into().ok()?),
            post_id: u64::from_be_bytes(n[TAG_LEN + ID_LEN..].try_into().ok()?),
        })
    }
}

/// Who may write `key`, for the channel spaces: `None` when `key` is in none of them.
/// The owner writes descriptors and grants; a post is written by the writer its name
/// carries.
pub fn may_write(key: &Key, writer: &NodeId) -> Option<bool> {
    let owner_prefixed = || key.name.get(..ID_LEN) == Some(writer.as_bytes().as_slice());
    match key.space.as_str() {
        CHANNELS => Some(ChannelId::from_descriptor_key(key).is_some() && owner_prefixed()),
        CHANNEL_KEYS => Some(GrantName::parse(key).is_some() && owner_prefixed()),
        CHANNEL_POSTS => Some(PostName::parse(key).is_some_and(|p| p.writer == *writer)),
        _ => None,
    }
}

/// The owner's description of a channel: the current key epoch and who holds its key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Descriptor {
    /// Starts at the mesh time of the change that made it, so epochs only grow, even
    /// across a delete and re-create.
    pub epoch: u64,
    /// Sorted, no duplicates, the owner included.
    pub members: Vec<NodeId>,
}

impl Descriptor {
    /// The descriptor for `members` (the owner is added) at `epoch`.
    pub fn new(
        owner: NodeId,
        epoch: u64,
        members: impl IntoIterator<Item = NodeId>,
    ) -> Result<Descriptor, ChannelError> {
        let mut members: Vec<NodeId> = members.into_iter().collect();
        members.push(owner);
        members.sort();
        members.dedup();
        if members.len() > MAX_MEMBERS {
            return Err(ChannelError::TooManyMembers(members.len()));
        }
        Ok(Descriptor { epoch, members })
    }

    pub fn is_member(&self, node: &NodeId) -> bool {
        self.members.binary_search(node).is_ok()
    }

    pub fn encode(&self) -> Vec<u8> {
        // Owned data into a Vec: cannot fail.
        postcard::to_stdvec(self).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Result<Descriptor, ChannelError> {
        let descriptor: Descriptor =
            postcard::from_bytes(bytes).map_err(|_| ChannelError::Malformed("descriptor"))?;
        let sorted = descriptor.members.windows(2).all(|w| w[0] < w[1]);
        if !sorted || descriptor.members.len() > MAX_MEMBERS {
            return Err(ChannelError::Malformed("descriptor"));
        }
        Ok(descriptor)
    }
}

/// The grant of `key` for `epoch` of `channel` to one member, sealed to its public keys
/// and signed by the owner. Channel and epoch are sealed in with the key, so a grant
/// copied to another place is refused.
pub fn seal_grant<R: CryptoRng + RngCore + ?Sized>(
    channel: &ChannelId,
    epoch: u64,
    key: &GroupKey,
    member: &E2ePublic,
    owner: &Identity,
    rng: &mut R,
) -> Result<Vec<u8>, ChannelError> {
    let mut plaintext = Zeroizing::new(Vec::with_capacity(GRANT_PLAINTEXT_LEN));
    plaintext.extend_from_slice(&channel.tag());
    plaintext.extend_from_slice(&epoch.to_be_bytes());
    plaintext.extend_from_slice(key.as_bytes());
    Ok(seal_to_public(member, owner, &plaintext, rng)?)
}

/// Opens this member's grant of the `epoch` key of `channel`.
pub fn open_grant(
    channel: &ChannelId,
    epoch: u64,
    keys: &E2eKeys,
    grant: &[u8],
) -> Result<GroupKey, ChannelError> {
    let opened = open_sealed(keys, grant, Some(channel.owner))?;
    let plaintext = Zeroizing::new(opened.plaintext);
    if plaintext.len() != GRANT_PLAINTEXT_LEN {
        return Err(ChannelError::Malformed("grant"));
    }
    if plaintext[..TAG_LEN] != channel.tag()
        || plaintext[TAG_LEN..TAG_LEN + 8] != epoch.to_be_bytes()
    {
        return Err(ChannelError::MisboundGrant);
    }
    let mut key = [0u8; 32];
    key.copy_from_slice(&plaintext[TAG_LEN + 8..]);
    let key = GroupKey::from_bytes(key);
    Ok(key)
}

/// A post as stored: the epoch whose key encrypts it, and the ciphertext.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Post {
    pub epoch: u64,
    pub sealed: GroupCiphertext,
}

impl Post {
    pub fn decode(bytes: &[u8]) -> Result<Post, ChannelError> {
        postcard::from_bytes(bytes).map_err(|_| ChannelError::Malformed("post"))
    }
}

/// What a post says, inside the encryption.
#[derive(Serialize, Deserialize)]
struct PostBody {
    meta: ContentMeta,
    body: Vec<u8>,
}

fn post_aad(channel: &ChannelId, epoch: u64, writer: &NodeId, post_id: u64) -> Vec<u8> {
    let mut aad = POST_LABEL.to_vec();
    aad.extend_from_slice(&channel.tag());
    aad.extend_from_slice(&epoch.to_be_bytes());
    aad.extend_from_slice(writer.as_bytes());
    aad.extend_from_slice(&post_id.to_be_bytes());
    aad
}

/// Encrypts one message for `channel` under the `epoch` key, bound to its writer and id.
/// Returns the entry value ([`Post`], encoded).
#[allow(clippy::too_many_arguments)]
pub fn seal_post<R: CryptoRng + RngCore + ?Sized>(
    channel: &ChannelId,
    epoch: u64,
    key: &GroupKey,
    writer: &NodeId,
    post_id: u64,
    meta: ContentMeta,
    body: &[u8],
    rng: &mut R,
) -> Result<Vec<u8>, ChannelError> {
    if body.len() > MAX_POST_BODY {
        return Err(ChannelError::TooLarge(body.len()));
    }
    let plaintext = Zeroizing::new(
        postcard::to_stdvec(&PostBody {
            meta,
            body: body.to_vec(),
        })
        .map_err(|_| ChannelError::Malformed("post"))?,
    );
    let sealed = group_encrypt(
        key,
        &post_aad(channel, epoch, writer, post_id),
        &plaintext,
        rng,
    );
    let value = postcard::to_stdvec(&Post { epoch, sealed })
        .map_err(|_| ChannelError::Malformed("post"))?;
    if value.len() > MAX_VALUE_LEN {
        // A long file name or MIME type can push a body under the limit over it.
        return Err(ChannelError::TooLarge(plaintext.len() + GROUP_OVERHEAD));
    }
    Ok(value)
}

/// Opens a post of `channel` under its epoch's `key`, and checks its content against
/// the description.
pub fn open_post(
    channel: &ChannelId,
    key: &GroupKey,
    writer: &NodeId,
    post_id: u64,
    post: &Post,
) -> Result<(ContentMeta, Vec<u8>), ChannelError> {
    let plaintext = group_decrypt(
        key,
        &post_aad(channel, post.epoch, writer, post_id),
        &post.sealed,
    )
    .map_err(|_| ChannelError::Decryption)?;
    let PostBody { meta, body } =
        postcard::from_bytes(&plaintext).map_err(|_| ChannelError::Malformed("post"))?;
    if meta.size != body.len() as u64 || meta.sha256 != sha256(&[&body]) {
        return Err(ChannelError::Integrity);
    }
    Ok((meta, body))
}

/// The description of a post body of `kind`, with its size and SHA-256.
pub fn describe(
    kind: crate::e2e::ContentKind,
    name: Option<String>,
    mime: Option<String>,
    body: &[u8],
) -> ContentMeta {
    ContentMeta {
        kind,
        name,
        mime,
        size: body.len() as u64,
        sha256: sha256(&[body]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::e2e::{ContentKind, keys_for};
    use rand::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    fn node(n: u8) -> Identity {
        Identity::from_seed([n; 32])
    }

    fn channel() -> ChannelId {
        ChannelId::new(node(1).id(), "ops").unwrap()
    }

    fn text(body: &[u8]) -> ContentMeta {
        describe(ContentKind::Text, None, None, body)
    }

    #[test]
    fn ids_round_trip_as_text_and_names_are_checked() {
        let id = channel();
        assert_eq!(id.to_string().parse::<ChannelId>().unwrap(), id);
        assert!(matches!(
            ChannelId::new(node(1).id(), "no spaces"),
            Err(ChannelError::InvalidName(_))
        ));
        assert!(ChannelId::new(node(1).id(), "").is_err());
        assert!(ChannelId::new(node(1).id(), &"x".repeat(65)).is_err());
        assert!(matches!(
            "ops".parse::<ChannelId>(),
            Err(ChannelError::InvalidId(_))
        ));
        assert_eq!(
            ChannelId::from_descriptor_key(&id.descriptor_key()),
            Some(id)
        );
    }

    #[test]
    fn only_owners_write_descriptors_and_grants_and_only_writers_their_posts() {
        let (owner, member) = (node(1).id(), node(2).id());
        let id = channel();
        assert_eq!(may_write(&id.descriptor_key(), &owner), Some(true));
        assert_eq!(may_write(&id.descriptor_key(), &member), Some(false));
        assert_eq!(may_write(&id.grant_key(5, &member), &owner), Some(true));
        assert_eq!(may_write(&id.grant_key(5, &member), &member), Some(false));
        assert_eq!(may_write(&id.post_key(&member, 9), &member), Some(true));
        assert_eq!(may_write(&id.post_key(&member, 9), &owner), Some(false));
        let short = Key::new(CHANNEL_POSTS, vec![0; 10]);
        assert_eq!(may_write(&short, &owner), Some(false));
        assert_eq!(may_write(&Key::new("app", b"k".to_vec()), &owner), None);
        let grant = GrantName::parse(&id.grant_key(5, &member)).unwrap();
        assert_eq!((grant.owner, grant.epoch, grant.member), (owner, 5, member));
        let post = PostName::parse(&id.post_key(&member, 9)).unwrap();
        assert_eq!((post.tag, post.writer, post.post_id), (id.tag(), member, 9));
    }

    #[test]
    fn a_member_opens_its_grant_and_reads_posts_others_cannot() {
        let mut rng = ChaCha20Rng::seed_from_u64(3);
        let (owner, member, outsider) = (node(1), node(2), node(3));
        let id = channel();
        let key = GroupKey::generate(&mut rng);
        let grant = seal_grant(&id, 7, &key, keys_for(&member).public(), &owner, &mut rng).unwrap();
        let opened = open_grant(&id, 7, &keys_for(&member), &grant).unwrap();
        assert_eq!(opened.as_bytes(), key.as_bytes());
        // Another node cannot open the grant, and the grant does not move.
        assert!(matches!(
            open_grant(&id, 7, &keys_for(&outsider), &grant),
            Err(ChannelError::Grant(SealError::BadSignature))
        ));
        assert_eq!(
            open_grant(&id, 8, &keys_for(&member), &grant).err(),
            Some(ChannelError::MisboundGrant)
        );
        let elsewhere = ChannelId::new(owner.id(), "other").unwrap();
        assert_eq!(
            open_grant(&elsewhere, 7, &keys_for(&member), &grant).err(),
            Some(ChannelError::MisboundGrant)
        );
        // A grant not signed by the channel's owner is refused.
        let forged = seal_grant(
            &id,
            7,
            &key,
            keys_for(&member).public(),
            &outsider,
            &mut rng,
        )
        .unwrap();
        assert!(matches!(
            open_grant(&id, 7, &keys_for(&member), &forged),
            Err(ChannelError::Grant(SealError::WrongSender { .. }))
        ));

        let body = b"the relay on hill 3 is down";
        let value = seal_post(&id, 7, &key, &owner.id(), 42, text(body), body, &mut rng).unwrap();
        assert!(!value.windows(body.len()).any(|w| w == body));
        let post = Post::decode(&value).unwrap();
        let (meta, read) = open_post(&id, &opened, &owner.id(), 42, &post).unwrap();
        assert_eq!(
            (meta.kind, read.as_slice()),
            (ContentKind::Text, body.as_slice())
        );
        // Bound to writer, id and channel; a wrong key or flipped bit does not open.
        assert_eq!(
            open_post(&id, &opened, &member.id(), 42, &post).err(),
            Some(ChannelError::Decryption)
        );
        assert_eq!(
            open_post(&id, &opened, &owner.id(), 43, &post).err(),
            Some(ChannelError::Decryption)
        );
        assert_eq!(
            open_post(&elsewhere, &opened, &owner.id(), 42, &post).err(),
            Some(ChannelError::Decryption)
        );
        let wrong = GroupKey::generate(&mut rng);
        assert_eq!(
            open_post(&id, &wrong, &owner.id(), 42, &post).err(),
            Some(ChannelError::Decryption)
        );
        let mut tampered = post.clone();
        tampered.sealed.ciphertext[3] ^= 0x40;
        assert_eq!(
            open_post(&id, &opened, &owner.id(), 42, &tampered).err(),
            Some(ChannelError::Decryption)
        );
    }

    #[test]
    fn posts_are_bounded_to_fit_an_entry() {
        let mut rng = ChaCha20Rng::seed_from_u64(4);
        let key = GroupKey::generate(&mut rng);
        let writer = node(1).id();
        let big = vec![1u8; MAX_POST_BODY + 1];
        assert_eq!(
            seal_post(&channel(), 1, &key, &writer, 1, text(&big), &big, &mut rng).err(),
            Some(ChannelError::TooLarge(MAX_POST_BODY + 1))
        );
        let largest = vec![1u8; MAX_POST_BODY];
        let meta = describe(
            ContentKind::File,
            Some("x".repeat(200)),
            Some("application/octet-stream".into()),
            &largest,
        );
        let value = seal_post(&channel(), 1, &key, &writer, 1, meta, &largest, &mut rng).unwrap();
        assert!(value.len() <= MAX_VALUE_LEN);
    }

    #[test]
    fn descriptors_include_the_owner_and_refuse_disorder() {
        let owner = node(1).id();
        let d = Descriptor::new(owner, 10, [node(2).id(), node(2).id()]).unwrap();
        assert_eq!(d.members.len(), 2);
        assert!(d.is_member(&owner) && d.is_member(&node(2).id()));
        assert!(!d.is_member(&node(3).id()));
        assert_eq!(Descriptor::decode(&d.encode()).unwrap(), d);
        let disordered = Descriptor {
            epoch: 1,
            members: vec![d.members[1], d.members[0]],
        };
        assert!(Descriptor::decode(&disordered.encode()).is_err());
        let many = (0..=MAX_MEMBERS as u8).map(|n| NodeId([n; 32]));
        assert!(matches!(
            Descriptor::new(owner, 1, many),
            Err(ChannelError::TooManyMembers(_))
        ));
    }
}
