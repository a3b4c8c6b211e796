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

use serde::{Deserialize, Serialize};

use crate::Identity;
use crate::crypto::seal::{E2eKeys, E2ePublic};

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

/// What a sealed box carries: the sender's id for the message (for receipts) and the
/// bytes. Inside the seal, so relays see neither.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Letter {
    pub message_id: u64,
    pub body: Vec<u8>,
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
