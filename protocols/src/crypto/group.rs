//! Group keys: one symmetric key shared by the members of a channel.
//!
//! A group key is 32 random bytes, handed to each member inside a [`super::seal`] box
//! (so it is as post-quantum as a sealed message) and used with ChaCha20-Poly1305. Many
//! members write under one key without coordinating counters, so each message draws a
//! random 96-bit nonce; a collision becomes likely only after about 2^48 messages under
//! one key, and keys change whenever the membership does. The caller binds each message
//! to its place (channel, key epoch, writer, message id) through the associated data, so
//! a ciphertext moved elsewhere does not open.

use std::fmt;

use rand::{CryptoRng, RngCore};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::aead::{self, NONCE_LEN};

/// The AEAD refused: wrong key, wrong place, or a changed ciphertext.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("group ciphertext does not open under this key and context")]
pub struct GroupDecryptError;

/// A channel's symmetric key for one epoch. Zeroized on drop, never printed.
#[derive(Clone)]
pub struct GroupKey(Zeroizing<[u8; 32]>);

impl fmt::Debug for GroupKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("GroupKey(<redacted>)")
    }
}

impl GroupKey {
    pub fn generate<R: CryptoRng + RngCore + ?Sized>(rng: &mut R) -> GroupKey {
        let mut key = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(key.as_mut());
        GroupKey(key)
    }

    pub fn from_bytes(bytes: [u8; 32]) -> GroupKey {
        GroupKey(Zeroizing::new(bytes))
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

/// One message under a group key: its nonce and the AEAD output (ciphertext and tag).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupCiphertext {
    pub nonce: [u8; NONCE_LEN],
    pub ciphertext: Vec<u8>,
}

impl fmt::Debug for GroupCiphertext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GroupCiphertext")
            .field("ciphertext_len", &self.ciphertext.len())
            .finish()
    }
}

/// Bytes a [`GroupCiphertext`] adds to its plaintext: nonce and Poly1305 tag.
pub const GROUP_OVERHEAD: usize = NONCE_LEN + aead::TAG_LEN;

pub fn group_encrypt<R: CryptoRng + RngCore + ?Sized>(
    key: &GroupKey,
    aad: &[u8],
    plaintext: &[u8],
    rng: &mut R,
) -> GroupCiphertext {
    let mut nonce = [0u8; NONCE_LEN];
    rng.fill_bytes(&mut nonce);
    // ChaCha20-Poly1305 refuses only plaintexts beyond 256 GiB, far past any caller's
    // limit; an empty ciphertext would then fail to open rather than pass.
    let ciphertext = aead::encrypt(key.as_bytes(), &nonce, aad, plaintext).unwrap_or_default();
    GroupCiphertext { nonce, ciphertext }
}

pub fn group_decrypt(
    key: &GroupKey,
    aad: &[u8],
    sealed: &GroupCiphertext,
) -> Result<Vec<u8>, GroupDecryptError> {
    aead::decrypt(key.as_bytes(), &sealed.nonce, aad, &sealed.ciphertext)
        .map_err(|_| GroupDecryptError)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    #[test]
    fn opens_under_the_same_key_and_context_only() {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let key = GroupKey::generate(&mut rng);
        let other = GroupKey::generate(&mut rng);
        let sealed = group_encrypt(&key, b"here", b"hello group", &mut rng);
        assert_eq!(
            group_decrypt(&key, b"here", &sealed).unwrap(),
            b"hello group"
        );
        assert_eq!(
            group_decrypt(&other, b"here", &sealed),
            Err(GroupDecryptError)
        );
        assert_eq!(
            group_decrypt(&key, b"there", &sealed),
            Err(GroupDecryptError)
        );
        let mut tampered = sealed.clone();
        tampered.ciphertext[0] ^= 1;
        assert_eq!(
            group_decrypt(&key, b"here", &tampered),
            Err(GroupDecryptError)
        );
        let again = group_encrypt(&key, b"here", b"hello group", &mut rng);
        assert_ne!(again.nonce, sealed.nonce);
        assert_eq!(
            sealed.ciphertext.len(),
            b"hello group".len() + aead::TAG_LEN
        );
    }

    #[test]
    fn keys_never_print() {
        let key = GroupKey::from_bytes([7; 32]);
        assert_eq!(format!("{key:?}"), "GroupKey(<redacted>)");
    }
}
