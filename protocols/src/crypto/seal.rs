//! End-to-end sealed boxes: a message for one recipient that relays carry but cannot read,
//! signed by its sender.
//!
//! The sender draws an ephemeral X25519 key and encapsulates to the recipient's long-term
//! ML-KEM-768 key; both shared secrets go through HKDF-SHA256 salted with the hash of the
//! header (version, suite, sender, recipient key fingerprint, ephemeral key, ML-KEM
//! ciphertext); the derived single-use key encrypts with ChaCha20-Poly1305 (zero nonce,
//! the header hash as associated data); the sender signs header hash and ciphertext with
//! its Ed25519 identity.
//!
//! The recipient checks the signature before touching the KEM, and the sender's id is
//! bound into the key derivation, so a third party that strips the signature and signs
//! the box as its own makes the recipient derive a different key. The recipient's key
//! fingerprint is bound too (it is not sent): a box cannot be redirected to someone else.

use std::fmt;

use ml_kem::ml_kem_768;
use rand::{CryptoRng, RngCore};
use serde::{Deserialize, Serialize};
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

use super::aead::{self, NONCE_LEN};
use super::hybrid::{
    KemFailure, MLKEM768_CIPHERTEXT_LEN, MLKEM768_ENCAPSULATION_KEY_LEN, Transcript, combine,
    expand, extract, mlkem_decapsulate, mlkem_encapsulate, mlkem_from_seed, mlkem_public, sha256,
    x25519_ephemeral, x25519_ephemeral_agree, x25519_static_agree,
};
use super::{SUITE, WireSignature, is_truncation};
use crate::identity::verify_signature;
use crate::{Identity, NodeId};

/// The sealed-box version this build writes and accepts (the first byte).
pub const SEALED_VERSION: u8 = 1;
/// Largest plaintext one box carries (the envelope limit).
pub const MAX_SEALED_PLAINTEXT: usize = 1 << 20;
/// Largest sealed box accepted: the plaintext limit plus headers, KEM ciphertext and tag.
pub const MAX_SEALED_BYTES: usize = MAX_SEALED_PLAINTEXT + 4096;

const KEY_DERIVATION: &[u8] = b"x0tta6bl4/crypto/e2e-keys/v1";
const FINGERPRINT: &[u8] = b"x0tta6bl4/crypto/e2e-public/v1";
const PROTOCOL: &[u8] = b"x0tta6bl4/crypto/seal/v1";
const SIGNATURE: &[u8] = b"x0tta6bl4/crypto/seal/v1/signature\0";
const MESSAGE_KEY: &[u8] = b"x0tta6bl4/crypto/seal/v1/key";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("sealed box is truncated")]
    Truncated,
    #[error("sealed box of {0} bytes exceeds the limit of {MAX_SEALED_BYTES}")]
    TooLarge(usize),
    #[error("malformed sealed box: {0}")]
    Malformed(String),
    #[error("unsupported sealed-box version {0} (this build speaks {SEALED_VERSION})")]
    UnsupportedVersion(u8),
    #[error("unsupported suite {0:?} (this build speaks {SUITE})")]
    UnsupportedSuite(String),
    #[error("plaintext of {0} bytes exceeds the limit of {MAX_SEALED_PLAINTEXT}")]
    PlaintextTooLarge(usize),
    #[error("recipient key refused: {0}")]
    InvalidRecipientKey(&'static str),
    #[error("sealed by {found}, expected {expected}")]
    WrongSender { expected: NodeId, found: NodeId },
    #[error("bad signature (forged, tampered with, or sealed to a different recipient key)")]
    BadSignature,
    #[error("key exchange failed: {0}")]
    KeyExchange(&'static str),
    #[error("decryption failed (the sender sealed an inconsistent box)")]
    DecryptionFailed,
}

impl SealError {
    /// A stable lowercase name, used as a metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            SealError::Truncated => "truncated",
            SealError::TooLarge(_) => "too_large",
            SealError::Malformed(_) => "malformed",
            SealError::UnsupportedVersion(_) => "unsupported_version",
            SealError::UnsupportedSuite(_) => "unsupported_suite",
            SealError::PlaintextTooLarge(_) => "plaintext_too_large",
            SealError::InvalidRecipientKey(_) => "invalid_recipient_key",
            SealError::WrongSender { .. } => "wrong_sender",
            SealError::BadSignature => "bad_signature",
            SealError::KeyExchange(_) => "key_exchange",
            SealError::DecryptionFailed => "decryption_failed",
        }
    }
}

/// The public half of a node's end-to-end keys: what senders need to seal to it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct E2ePublic {
    pub x25519: [u8; 32],
    /// ML-KEM-768 encapsulation key, [`MLKEM768_ENCAPSULATION_KEY_LEN`] bytes.
    pub mlkem: Vec<u8>,
}

impl E2ePublic {
    /// SHA-256 over both keys: what a sealed box is bound to.
    pub fn fingerprint(&self) -> [u8; 32] {
        fingerprint(&self.x25519, &self.mlkem)
    }
}

impl fmt::Debug for E2ePublic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let fp = self.fingerprint();
        write!(
            f,
            "E2ePublic({:02x}{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}{:02x})",
            fp[0], fp[1], fp[2], fp[3], fp[4], fp[5], fp[6], fp[7]
        )
    }
}

fn fingerprint(x25519: &[u8; 32], mlkem: &[u8]) -> [u8; 32] {
    sha256(&[
        FINGERPRINT,
        x25519,
        &(mlkem.len() as u64).to_be_bytes(),
        mlkem,
    ])
}

/// A node's long-term end-to-end secret keys (X25519 and ML-KEM-768), derived from one
/// 32-byte seed. Zeroized on drop, never printed.
pub struct E2eKeys {
    x25519: StaticSecret,
    mlkem: ml_kem_768::DecapsulationKey,
    public: E2ePublic,
}

impl fmt::Debug for E2eKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("E2eKeys")
            .field("public", &self.public)
            .field("secrets", &"<redacted>")
            .finish()
    }
}

impl E2eKeys {
    /// Derives both key pairs from `seed` with HKDF-SHA256 under a label of their own, so
    /// the same seed given to [`Identity::from_seed`] yields unrelated keys.
    pub fn from_seed(seed: [u8; 32]) -> Self {
        let seed = Zeroizing::new(seed);
        let prk = extract(KEY_DERIVATION, seed.as_ref());
        let x25519 = StaticSecret::from(*expand(&prk, &[b"x25519"]));
        let mut mlkem_seed = Zeroizing::new([0u8; 64]);
        mlkem_seed[..32].copy_from_slice(expand(&prk, &[b"mlkem768-d"]).as_ref());
        mlkem_seed[32..].copy_from_slice(expand(&prk, &[b"mlkem768-z"]).as_ref());
        let mlkem = mlkem_from_seed(&mlkem_seed);
        let public = E2ePublic {
            x25519: PublicKey::from(&x25519).to_bytes(),
            mlkem: mlkem_public(&mlkem),
        };
        E2eKeys {
            x25519,
            mlkem,
            public,
        }
    }

    pub fn public(&self) -> &E2ePublic {
        &self.public
    }
}

/// A decoded (not yet verified) sealed box.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedBox {
    pub version: u8,
    pub suite: String,
    pub sender: NodeId,
    /// The sender's ephemeral X25519 public key.
    pub x25519: [u8; 32],
    /// ML-KEM-768 ciphertext to the recipient's long-term key.
    pub mlkem_ct: Vec<u8>,
    /// ChaCha20-Poly1305 ciphertext and tag.
    pub ciphertext: Vec<u8>,
    pub signature: WireSignature,
}

impl fmt::Debug for SealedBox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SealedBox")
            .field("suite", &self.suite)
            .field("sender", &self.sender)
            .field("ciphertext_len", &self.ciphertext.len())
            .finish()
    }
}

impl SealedBox {
    pub fn encode(&self) -> Vec<u8> {
        // Plain structs of bytes and strings always serialize.
        postcard::to_stdvec(self).unwrap_or_default()
    }

    /// Total: any byte string yields a box or a typed error, never a panic.
    pub fn decode(bytes: &[u8]) -> Result<SealedBox, SealError> {
        let Some(&version) = bytes.first() else {
            return Err(SealError::Truncated);
        };
        if bytes.len() > MAX_SEALED_BYTES {
            return Err(SealError::TooLarge(bytes.len()));
        }
        if version != SEALED_VERSION {
            return Err(SealError::UnsupportedVersion(version));
        }
        let (sealed, rest): (SealedBox, _) = postcard::take_from_bytes(bytes).map_err(|e| {
            if is_truncation(&e) {
                SealError::Truncated
            } else {
                SealError::Malformed(e.to_string())
            }
        })?;
        if !rest.is_empty() {
            return Err(SealError::Malformed("trailing bytes".into()));
        }
        if sealed.suite != SUITE {
            return Err(SealError::UnsupportedSuite(sealed.suite));
        }
        if sealed.mlkem_ct.len() != MLKEM768_CIPHERTEXT_LEN {
            return Err(SealError::Malformed(format!(
                "ML-KEM-768 ciphertext of {} bytes, expected {MLKEM768_CIPHERTEXT_LEN}",
                sealed.mlkem_ct.len()
            )));
        }
        Ok(sealed)
    }
}

/// What [`open_sealed`] returns: who sealed it (verified) and what they said.
#[derive(Clone, PartialEq, Eq)]
pub struct Opened {
    pub sender: NodeId,
    pub plaintext: Vec<u8>,
}

impl fmt::Debug for Opened {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Opened")
            .field("sender", &self.sender)
            .field("plaintext_len", &self.plaintext.len())
            .finish()
    }
}

fn header_hash(
    suite: &str,
    sender: &NodeId,
    recipient: &[u8; 32],
    x25519: &[u8; 32],
    mlkem_ct: &[u8],
) -> [u8; 32] {
    let mut t = Transcript::new(PROTOCOL);
    t.absorb(b"version", &[SEALED_VERSION]);
    t.absorb(b"suite", suite.as_bytes());
    t.absorb(b"sender", sender.as_bytes());
    t.absorb(b"recipient", recipient);
    t.absorb(b"x25519", x25519);
    t.absorb(b"mlkem768-ct", mlkem_ct);
    t.hash()
}

fn signed_bytes(header_hash: &[u8; 32], ciphertext: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(SIGNATURE.len() + 64);
    out.extend_from_slice(SIGNATURE);
    out.extend_from_slice(header_hash);
    out.extend_from_slice(&sha256(&[ciphertext]));
    out
}

fn recipient_key_error(failure: KemFailure) -> SealError {
    SealError::InvalidRecipientKey(failure.describe())
}

/// Seals `plaintext` to the holder of `recipient_x25519` / `recipient_mlkem`, signed by
/// `sender`. Returns the encoded box.
pub fn seal_to<R: CryptoRng + RngCore + ?Sized>(
    recipient_x25519: &[u8; 32],
    recipient_mlkem: &[u8],
    sender: &Identity,
    plaintext: &[u8],
    rng: &mut R,
) -> Result<Vec<u8>, SealError> {
    if plaintext.len() > MAX_SEALED_PLAINTEXT {
        return Err(SealError::PlaintextTooLarge(plaintext.len()));
    }
    if recipient_mlkem.len() != MLKEM768_ENCAPSULATION_KEY_LEN {
        return Err(recipient_key_error(KemFailure::InvalidEncapsulationKey));
    }
    let (mlkem_ct, mlkem_secret) =
        mlkem_encapsulate(recipient_mlkem, rng).map_err(recipient_key_error)?;
    let (ephemeral, x25519) = x25519_ephemeral(rng);
    let x25519_secret =
        x25519_ephemeral_agree(ephemeral, recipient_x25519).map_err(recipient_key_error)?;

    let recipient = fingerprint(recipient_x25519, recipient_mlkem);
    let sender_id = sender.id();
    let header = header_hash(SUITE, &sender_id, &recipient, &x25519, &mlkem_ct);
    let prk = combine(&header, &x25519_secret, &mlkem_secret);
    let key = expand(&prk, &[MESSAGE_KEY]);
    // The key is used for this one message only, so a fixed nonce is safe.
    let ciphertext = aead::encrypt(&key, &[0u8; NONCE_LEN], &header, plaintext)
        .map_err(|_| SealError::PlaintextTooLarge(plaintext.len()))?;
    let signature = sender.sign(&signed_bytes(&header, &ciphertext));
    Ok(SealedBox {
        version: SEALED_VERSION,
        suite: SUITE.to_string(),
        sender: sender_id,
        x25519,
        mlkem_ct,
        ciphertext,
        signature: WireSignature::from_bytes(&signature),
    }
    .encode())
}

/// [`seal_to`] with the recipient's keys as one [`E2ePublic`].
pub fn seal_to_public<R: CryptoRng + RngCore + ?Sized>(
    recipient: &E2ePublic,
    sender: &Identity,
    plaintext: &[u8],
    rng: &mut R,
) -> Result<Vec<u8>, SealError> {
    seal_to(&recipient.x25519, &recipient.mlkem, sender, plaintext, rng)
}

/// Verifies and opens a sealed box addressed to `recipient`. With `expected_sender`, a box
/// from anyone else is refused before any cryptography is done.
pub fn open_sealed(
    recipient: &E2eKeys,
    sealed: &[u8],
    expected_sender: Option<NodeId>,
) -> Result<Opened, SealError> {
    let sealed = SealedBox::decode(sealed)?;
    if let Some(expected) = expected_sender
        && expected != sealed.sender
    {
        return Err(SealError::WrongSender {
            expected,
            found: sealed.sender,
        });
    }
    let header = header_hash(
        &sealed.suite,
        &sealed.sender,
        &recipient.public.fingerprint(),
        &sealed.x25519,
        &sealed.mlkem_ct,
    );
    if !verify_signature(
        &sealed.sender,
        &signed_bytes(&header, &sealed.ciphertext),
        &sealed.signature.to_bytes(),
    ) {
        return Err(SealError::BadSignature);
    }
    let x25519_secret = x25519_static_agree(&recipient.x25519, &sealed.x25519)
        .map_err(|f| SealError::KeyExchange(f.describe()))?;
    let mlkem_secret = mlkem_decapsulate(&recipient.mlkem, &sealed.mlkem_ct)
        .map_err(|f| SealError::KeyExchange(f.describe()))?;
    let prk = combine(&header, &x25519_secret, &mlkem_secret);
    let key = expand(&prk, &[MESSAGE_KEY]);
    let plaintext = aead::decrypt(&key, &[0u8; NONCE_LEN], &header, &sealed.ciphertext)
        .map_err(|_| SealError::DecryptionFailed)?;
    Ok(Opened {
        sender: sealed.sender,
        plaintext,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    fn sender() -> Identity {
        Identity::from_seed([3; 32])
    }
    fn recipient() -> E2eKeys {
        E2eKeys::from_seed([4; 32])
    }
    fn rng(seed: u64) -> ChaCha20Rng {
        ChaCha20Rng::seed_from_u64(seed)
    }
    fn sealed(plaintext: &[u8]) -> Vec<u8> {
        seal_to_public(recipient().public(), &sender(), plaintext, &mut rng(1)).expect("seal")
    }

    #[test]
    fn sealed_boxes_open_for_the_recipient() {
        let bytes = sealed(b"meet at the relay");
        let opened = open_sealed(&recipient(), &bytes, Some(sender().id())).expect("open");
        assert_eq!(opened.sender, sender().id());
        assert_eq!(opened.plaintext, b"meet at the relay");
        let anyone = open_sealed(&recipient(), &bytes, None).expect("open");
        assert_eq!(anyone, opened);
        let empty = sealed(b"");
        assert_eq!(
            open_sealed(&recipient(), &empty, None)
                .expect("open")
                .plaintext,
            b""
        );
    }

    #[test]
    fn the_same_message_seals_differently_each_time() {
        let pk = recipient();
        let a = seal_to_public(pk.public(), &sender(), b"x", &mut rng(1)).expect("seal");
        let b = seal_to_public(pk.public(), &sender(), b"x", &mut rng(2)).expect("seal");
        assert_ne!(a, b);
    }

    #[test]
    fn an_unexpected_sender_is_refused() {
        let bytes = sealed(b"hi");
        let other = Identity::from_seed([9; 32]).id();
        assert_eq!(
            open_sealed(&recipient(), &bytes, Some(other)),
            Err(SealError::WrongSender {
                expected: other,
                found: sender().id()
            })
        );
    }

    #[test]
    fn every_tampered_byte_is_refused() {
        let bytes = sealed(b"tamper with me");
        let keys = recipient();
        for i in 0..bytes.len() {
            let mut t = bytes.clone();
            t[i] ^= 0x01;
            let err = open_sealed(&keys, &t, None).expect_err("tampered box must not open");
            // Any typed error will do; the signature catches everything that decodes.
            assert!(!err.reason().is_empty(), "byte {i}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(matches!(
            open_sealed(&keys, &longer, None),
            Err(SealError::Malformed(_))
        ));
        for len in 0..bytes.len() {
            assert!(
                open_sealed(&keys, &bytes[..len], None).is_err(),
                "prefix {len}"
            );
        }
    }

    #[test]
    fn a_box_for_someone_else_does_not_open() {
        let bytes = sealed(b"not for you");
        let other = E2eKeys::from_seed([5; 32]);
        assert_eq!(
            open_sealed(&other, &bytes, None),
            Err(SealError::BadSignature)
        );
    }

    #[test]
    fn re_signing_a_box_as_another_sender_does_not_claim_it() {
        // Mallory takes Alice's box, replaces the sender and signs it herself: her signature
        // is valid, but the sender is bound into the key derivation, so it will not decrypt.
        let keys = recipient();
        let mallory = Identity::from_seed([66; 32]);
        let mut sealed_box = SealedBox::decode(&sealed(b"alice wrote this")).expect("decode");
        sealed_box.sender = mallory.id();
        let header = header_hash(
            &sealed_box.suite,
            &sealed_box.sender,
            &keys.public().fingerprint(),
            &sealed_box.x25519,
            &sealed_box.mlkem_ct,
        );
        sealed_box.signature = WireSignature::from_bytes(
            &mallory.sign(&signed_bytes(&header, &sealed_box.ciphertext)),
        );
        assert_eq!(
            open_sealed(&keys, &sealed_box.encode(), None),
            Err(SealError::DecryptionFailed)
        );
    }

    #[test]
    fn bad_recipient_keys_and_sizes_are_typed_errors() {
        let pk = recipient().public().clone();
        let mut r = rng(3);
        assert_eq!(
            seal_to(&[0; 32], &pk.mlkem, &sender(), b"x", &mut r),
            Err(SealError::InvalidRecipientKey(
                KemFailure::X25519NonContributory.describe()
            ))
        );
        assert_eq!(
            seal_to(&pk.x25519, &pk.mlkem[..100], &sender(), b"x", &mut r),
            Err(SealError::InvalidRecipientKey(
                KemFailure::InvalidEncapsulationKey.describe()
            ))
        );
        assert_eq!(
            seal_to(
                &pk.x25519,
                &[0xff; MLKEM768_ENCAPSULATION_KEY_LEN],
                &sender(),
                b"x",
                &mut r
            ),
            Err(SealError::InvalidRecipientKey(
                KemFailure::InvalidEncapsulationKey.describe()
            ))
        );
        let big = vec![0u8; MAX_SEALED_PLAINTEXT + 1];
        assert_eq!(
            seal_to_public(&pk, &sender(), &big, &mut r),
            Err(SealError::PlaintextTooLarge(MAX_SEALED_PLAINTEXT + 1))
        );
        assert_eq!(SealedBox::decode(&[]), Err(SealError::Truncated));
        assert_eq!(
            SealedBox::decode(&[2, 0]),
            Err(SealError::UnsupportedVersion(2))
        );
        let huge = vec![SEALED_VERSION; MAX_SEALED_BYTES + 1];
        assert_eq!(
            SealedBox::decode(&huge),
            Err(SealError::TooLarge(MAX_SEALED_BYTES + 1))
        );
        let mut other_suite = SealedBox::decode(&sealed(b"x")).expect("decode");
        other_suite.suite = "x25519/chacha20poly1305".into();
        assert_eq!(
            open_sealed(&recipient(), &other_suite.encode(), None),
            Err(SealError::UnsupportedSuite(
                "x25519/chacha20poly1305".into()
            ))
        );
    }

    #[test]
    fn keys_are_deterministic_domain_separated_and_never_printed() {
        let a = E2eKeys::from_seed([7; 32]);
        let b = E2eKeys::from_seed([7; 32]);
        let c = E2eKeys::from_seed([8; 32]);
        assert_eq!(a.public(), b.public());
        assert_ne!(a.public(), c.public());
        assert_eq!(a.public().mlkem.len(), MLKEM768_ENCAPSULATION_KEY_LEN);
        // The same seed as an identity gives an unrelated ML-KEM key.
        assert_ne!(
            a.public().mlkem,
            Identity::from_seed([7; 32]).kem_public_key()
        );
        let shown = format!("{a:?}");
        assert!(shown.contains("redacted"), "{shown}");
        assert!(
            !shown.contains(&format!("{:?}", a.x25519.to_bytes())),
            "{shown}"
        );
    }

    proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = SealedBox::decode(&bytes);
            let mut versioned = bytes;
            versioned.insert(0, SEALED_VERSION);
            let _ = SealedBox::decode(&versioned);
        }

        #[test]
        fn opening_arbitrary_bytes_never_panics_or_succeeds(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let keys = recipient();
            let mut versioned = bytes;
            versioned.insert(0, SEALED_VERSION);
            prop_assert!(open_sealed(&keys, &versioned, None).is_err());
        }

        #[test]
        fn every_plaintext_round_trips(plaintext in proptest::collection::vec(any::<u8>(), 0..1024), seed in any::<u64>()) {
            let keys = recipient();
            let bytes = seal_to_public(keys.public(), &sender(), &plaintext, &mut rng(seed)).expect("seal");
            prop_assert_eq!(open_sealed(&keys, &bytes, Some(sender().id())).expect("open").plaintext, plaintext);
        }
    }
}
