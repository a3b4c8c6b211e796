//! End-to-end messaging on top of multi-hop forwarding: what two nodes say to each other
//! so that the relays between them carry only sealed boxes.
//!
//! A sender that does not know the destination's end-to-end public keys asks for them
//! with a routed [`E2eMessage::KeyRequest`]; the answer, [`E2eMessage::Keys`], is itself a
//! routed message, so the destination's signature on the data envelope (checked at
//! delivery, see [`crate::forwarding::open`]) proves that the keys are the destination's
//! and not a relay's. Until the mesh-wide registry of issue 5 publishes keys in signed
//! records, this one round trip is the directory. The message itself travels as
//! [`E2eMessage::Sealed`], a [`crate::crypto::seal`] box signed by the sender.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::crypto::seal::{E2eKeys, E2ePublic};
use crate::crypto::sha256;
use crate::{Identity, Millis, NodeId};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum E2eMessage {
    /// "Send me your end-to-end public keys."
    KeyRequest,
    Keys(E2ePublic),
    /// A sealed box ([`crate::crypto::seal::seal_to`]) for the destination; inside, an
    /// encoded [`Letter`].
    Sealed(Vec<u8>),
    /// The destination's word on a letter: signed, as every routed message is, by its
    /// origin, so a relay cannot forge it.
    Receipt {
        message_id: u64,
        status: ReceiptStatus,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReceiptStatus {
    /// Opened and handed to the application.
    Delivered,
    /// The application marked it read.
    Read,
}

/// What a message is, for the application that shows it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContentKind {
    #[default]
    Text,
    File,
    Image,
    Audio,
    Video,
    /// From the system rather than a person (a node joined, a key rotated, ...).
    Notice,
}

/// A message's description: carried in every part, checked when the parts are joined.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContentMeta {
    pub kind: ContentKind,
    /// File name, for files and media.
    pub name: Option<String>,
    pub mime: Option<String>,
    /// Bytes of the whole message.
    pub size: u64,
    /// SHA-256 of the whole message: the integrity check after reassembly.
    pub sha256: [u8; 32],
}

/// One part of a message inside a sealed box: the sender's id for the message (what
/// receipts name), its description, and a slice of its bytes. Inside the seal, so
/// relays see none of it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Letter {
    pub message_id: u64,
    pub meta: ContentMeta,
    pub part: u32,
    pub parts: u32,
    pub body: Vec<u8>,
}

/// Bytes of a message per part: a sealed part must fit one routed message.
pub const PART_BYTES: usize = 128 * 1024;
/// Largest message accepted, in all its parts.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// Cuts a message into the letters that carry it.
pub fn split(
    message_id: u64,
    kind: ContentKind,
    name: Option<String>,
    mime: Option<String>,
    bytes: &[u8],
) -> Vec<Letter> {
    let meta = ContentMeta {
        kind,
        name,
        mime,
        size: bytes.len() as u64,
        sha256: sha256(&[bytes]),
    };
    let chunks: Vec<&[u8]> = if bytes.is_empty() {
        vec![bytes]
    } else {
        bytes.chunks(PART_BYTES).collect()
    };
    let parts = chunks.len() as u32;
    chunks
        .into_iter()
        .enumerate()
        .map(|(i, body)| Letter {
            message_id,
            meta: meta.clone(),
            part: i as u32,
            parts,
            body: body.to_vec(),
        })
        .collect()
}

/// Why parts could not be joined into a message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AssembleError {
    #[error("parts of one message disagree on its description or part count")]
    Inconsistent,
    #[error("the joined message does not match its SHA-256")]
    Integrity,
    #[error("message of {0} bytes exceeds the limit")]
    TooLarge(u64),
    #[error("too many partial messages held")]
    Overloaded,
}

impl AssembleError {
    pub fn reason(&self) -> &'static str {
        match self {
            AssembleError::Inconsistent => "inconsistent_parts",
            AssembleError::Integrity => "integrity",
            AssembleError::TooLarge(_) => "too_large",
            AssembleError::Overloaded => "overloaded",
        }
    }
}

struct Partial {
    meta: ContentMeta,
    parts: u32,
    received: BTreeMap<u32, Vec<u8>>,
    started: Millis,
}

/// Joins the parts of messages as they arrive, in any order, and checks each whole
/// message against its SHA-256. Bounded: partial messages are dropped after
/// `timeout_ms`, and at most `max_partial` are held at once.
pub struct Assembler {
    partial: BTreeMap<(NodeId, u64), Partial>,
    max_partial: usize,
    timeout_ms: u64,
}

impl Assembler {
    pub fn new(max_partial: usize, timeout_ms: u64) -> Self {
        Assembler {
            partial: BTreeMap::new(),
            max_partial,
            timeout_ms,
        }
    }

    /// Takes one part; returns the whole message once its last part is in.
    pub fn add(
        &mut self,
        origin: NodeId,
        letter: Letter,
        now: Millis,
    ) -> Result<Option<(ContentMeta, Vec<u8>)>, AssembleError> {
        if letter.meta.size > MAX_MESSAGE_BYTES as u64 {
            return Err(AssembleError::TooLarge(letter.meta.size));
        }
        let expected_parts = (letter.meta.size as usize).div_ceil(PART_BYTES).max(1) as u32;
        if letter.parts != expected_parts || letter.part >= letter.parts {
            return Err(AssembleError::Inconsistent);
        }
        if letter.parts == 1 {
            return finish(letter.meta, letter.body).map(Some);
        }
        let key = (origin, letter.message_id);
        let timeout = self.timeout_ms;
        self.partial.retain(|_, p| now.since(p.started) < timeout);
        if !self.partial.contains_key(&key) && self.partial.len() >= self.max_partial {
            return Err(AssembleError::Overloaded);
        }
        let partial = self.partial.entry(key).or_insert_with(|| Partial {
            meta: letter.meta.clone(),
            parts: letter.parts,
            received: BTreeMap::new(),
            started: now,
        });
        if partial.meta != letter.meta || partial.parts != letter.parts {
            self.partial.remove(&key);
            return Err(AssembleError::Inconsistent);
        }
        partial.received.insert(letter.part, letter.body);
        if partial.received.len() < partial.parts as usize {
            return Ok(None);
        }
        let Some(partial) = self.partial.remove(&key) else {
            return Ok(None);
        };
        let bytes: Vec<u8> = partial.received.into_values().flatten().collect();
        finish(partial.meta, bytes).map(Some)
    }
}

fn finish(meta: ContentMeta, bytes: Vec<u8>) -> Result<(ContentMeta, Vec<u8>), AssembleError> {
    if bytes.len() as u64 != meta.size || sha256(&[&bytes]) != meta.sha256 {
        return Err(AssembleError::Integrity);
    }
    Ok((meta, bytes))
}

impl Letter {
    pub fn encode(&self) -> Vec<u8> {
        // Owned data into a Vec: cannot fail.
        postcard::to_allocvec(self).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, postcard::Error> {
        postcard::from_bytes(bytes)
    }
}

impl E2eMessage {
    pub fn encode(&self) -> Vec<u8> {
        // Owned data into a Vec: cannot fail.
        postcard::to_allocvec(self).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, postcard::Error> {
        postcard::from_bytes(bytes)
    }
}

/// A node's end-to-end keys, derived from its identity under a label of their own, so
/// they live as long as the identity without a key file of their own.
pub fn keys_for(identity: &Identity) -> E2eKeys {
    E2eKeys::from_seed(*identity.ed25519_secret())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::seal::{open_sealed, seal_to_public};
    use rand::SeedableRng;

    #[test]
    fn keys_follow_the_identity_and_a_sealed_message_round_trips() {
        let alice = Identity::from_seed([1; 32]);
        let bob = Identity::from_seed([2; 32]);
        assert_eq!(keys_for(&bob).public(), keys_for(&bob).public());
        assert_ne!(keys_for(&alice).public(), keys_for(&bob).public());
        let announced =
            E2eMessage::decode(&E2eMessage::Keys(keys_for(&bob).public().clone()).encode())
                .expect("decodes");
        let E2eMessage::Keys(bob_public) = announced else {
            panic!("not keys");
        };
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(1);
        let sealed = seal_to_public(&bob_public, &alice, b"meet at noon", &mut rng).expect("seals");
        let wire = E2eMessage::Sealed(sealed).encode();
        assert!(
            !wire.windows(12).any(|w| w == b"meet at noon"),
            "no plaintext on the wire"
        );
        let E2eMessage::Sealed(bytes) = E2eMessage::decode(&wire).expect("decodes") else {
            panic!("not sealed");
        };
        let opened = open_sealed(&keys_for(&bob), &bytes, Some(alice.id())).expect("opens");
        assert_eq!(opened.plaintext, b"meet at noon");
        assert!(
            open_sealed(&keys_for(&alice), &bytes, None).is_err(),
            "only bob opens it"
        );
    }
}

#[cfg(test)]
mod assembly_tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Any message, cut into parts delivered in any order, comes back whole, once.
        #[test]
        fn parts_in_any_order_join_into_the_message(
            len in 0usize..(3 * PART_BYTES + 17),
            seed in any::<u64>(),
        ) {
            let bytes: Vec<u8> = (0..len).map(|i| (i as u64 ^ seed) as u8).collect();
            let mut letters = split(7, ContentKind::File, Some("a.bin".into()), None, &bytes);
            // A deterministic shuffle from the seed.
            let n = letters.len();
            for i in 0..n {
                letters.swap(i, (seed as usize).wrapping_add(i * 7) % n);
            }
            let mut assembler = Assembler::new(16, 60_000);
            let origin = NodeId([1; 32]);
            let mut whole = Vec::new();
            for letter in letters {
                if let Some(done) = assembler.add(origin, letter, Millis(0)).expect("consistent") {
                    whole.push(done);
                }
            }
            prop_assert_eq!(whole.len(), 1);
            prop_assert_eq!(&whole[0].1, &bytes);
            prop_assert_eq!(whole[0].0.name.as_deref(), Some("a.bin"));
        }
    }

    #[test]
    fn an_altered_part_fails_the_integrity_check() {
        let bytes = vec![5u8; PART_BYTES + 10];
        let mut letters = split(1, ContentKind::File, None, None, &bytes);
        letters[1].body[0] ^= 1;
        let mut assembler = Assembler::new(16, 60_000);
        let origin = NodeId([1; 32]);
        assert_eq!(
            assembler.add(origin, letters[0].clone(), Millis(0)),
            Ok(None)
        );
        assert_eq!(
            assembler.add(origin, letters[1].clone(), Millis(0)),
            Err(AssembleError::Integrity)
        );
    }

    #[test]
    fn lying_part_counts_are_refused() {
        let mut letter = split(1, ContentKind::Text, None, None, b"hi").remove(0);
        letter.parts = 3;
        let mut assembler = Assembler::new(16, 60_000);
        assert_eq!(
            assembler.add(NodeId([1; 32]), letter, Millis(0)),
            Err(AssembleError::Inconsistent)
        );
    }
}
