//! Hybrid post-quantum sessions and end-to-end sealing.
//!
//! One suite, [`SUITE`]: X25519 and ML-KEM-768 (FIPS 203) shared secrets combined with
//! HKDF-SHA256, used with ChaCha20-Poly1305, authenticated by the nodes' Ed25519
//! identities. Three pieces, all sans-IO (randomness comes in as an RNG argument, time as
//! [`crate::Millis`]):
//!
//! - [`handshake`]: a three-message mutually authenticated key exchange that yields a
//!   [`Session`];
//! - [`session`]: per-direction AEAD keys with counter nonces, a sliding replay window and
//!   deterministic rekeying;
//! - [`seal`]: self-contained signed sealed boxes to a recipient's long-term [`E2ePublic`]
//!   keys, for end-to-end messages that cross relays;
//! - [`group`]: symmetric keys shared by a channel's members, handed out in sealed boxes.
//!
//! The construction and its security argument are written down in `README.md` next to
//! this file.

mod aead;
pub mod group;
pub mod handshake;
mod hybrid;
pub(crate) use hybrid::sha256;
pub mod seal;
pub mod session;

#[cfg(test)]
mod kat;

pub use handshake::{Handshake, HandshakeConfig, HandshakeError, HandshakeMessage, Role, Step};
pub use hybrid::{MLKEM768_CIPHERTEXT_LEN, MLKEM768_ENCAPSULATION_KEY_LEN, X25519_KEY_LEN};
pub use seal::{
    E2eKeys, E2ePublic, Opened, SealError, SealedBox, open_sealed, seal_to, seal_to_public,
};
pub use session::{Frame, RekeyPolicy, Session, SessionError};

/// The one cipher suite this build speaks. Its name is bound into every transcript, key
/// derivation and signature, so a peer tricked into another suite is detected.
pub const SUITE: &str = "x25519+mlkem768/chacha20poly1305";

/// Ed25519 signatures travel as two 32-byte halves: serde derives (de)serialization for
/// arrays only up to 32 elements.
#[derive(Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WireSignature {
    pub r: [u8; 32],
    pub s: [u8; 32],
}

impl WireSignature {
    pub fn from_bytes(signature: &[u8; 64]) -> Self {
        let mut r = [0u8; 32];
        let mut s = [0u8; 32];
        r.copy_from_slice(&signature[..32]);
        s.copy_from_slice(&signature[32..]);
        WireSignature { r, s }
    }

    pub fn to_bytes(&self) -> [u8; 64] {
        let mut out = [0u8; 64];
        out[..32].copy_from_slice(&self.r);
        out[32..].copy_from_slice(&self.s);
        out
    }
}

impl std::fmt::Debug for WireSignature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "WireSignature({:02x}{:02x}{:02x}{:02x}…)",
            self.r[0], self.r[1], self.r[2], self.r[3]
        )
    }
}

/// Compares two secrets without an early exit, so the time taken does not say where they
/// first differ.
pub(crate) fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// Maps a postcard decoding error onto "ran out of bytes" or "something else is wrong".
pub(crate) fn is_truncation(error: &postcard::Error) -> bool {
    matches!(error, postcard::Error::DeserializeUnexpectedEnd)
}
