//! The hybrid KEM building blocks shared by the handshake and sealed boxes: X25519,
//! ML-KEM-768, the HKDF-SHA256 combiner and the transcript hash.
//!
//! Everything that draws randomness takes the caller's rand 0.9 RNG. `ml-kem` and
//! `x25519-dalek` speak rand_core 0.10, so [`RngBridge`] adapts one to the other instead
//! of pulling a second RNG (and a second source of entropy) into protocol code.

use std::convert::Infallible;

use hkdf::Hkdf;
use ml_kem::kem::common::rand_core as rand_core_010;
use ml_kem::{Decapsulate, Encapsulate, KeyExport, ml_kem_768};
use rand::{CryptoRng, RngCore};
use sha2::{Digest, Sha256};
use x25519_dalek::{EphemeralSecret, PublicKey, SharedSecret, StaticSecret};
use zeroize::{Zeroize, Zeroizing};

/// Length of an X25519 public key (and secret, and shared secret).
pub const X25519_KEY_LEN: usize = 32;
/// Length of an ML-KEM-768 encapsulation (public) key.
pub const MLKEM768_ENCAPSULATION_KEY_LEN: usize = 1184;
/// Length of an ML-KEM-768 ciphertext.
pub const MLKEM768_CIPHERTEXT_LEN: usize = 1088;

/// Presents a rand 0.9 RNG as a rand_core 0.10 one (the version `ml-kem` and
/// `x25519-dalek` take). Infallible, like the RNG it wraps.
pub(crate) struct RngBridge<'a, R: ?Sized>(pub(crate) &'a mut R);

impl<R: RngCore + ?Sized> rand_core_010::TryRng for RngBridge<'_, R> {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        Ok(self.0.next_u32())
    }

    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        Ok(self.0.next_u64())
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        self.0.fill_bytes(dst);
        Ok(())
    }
}

impl<R: CryptoRng + ?Sized> rand_core_010::TryCryptoRng for RngBridge<'_, R> {}

/// Why a key exchange or encapsulation could not be completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KemFailure {
    /// The peer's X25519 key is a low-order point: the "shared" secret would be all zero.
    X25519NonContributory,
    /// The ML-KEM encapsulation key has the wrong length or fails the FIPS 203 modulus check.
    InvalidEncapsulationKey,
    /// The ML-KEM ciphertext has the wrong length.
    InvalidCiphertext,
}

impl KemFailure {
    pub(crate) fn describe(self) -> &'static str {
        match self {
            KemFailure::X25519NonContributory => "peer X25519 key is a low-order point",
            KemFailure::InvalidEncapsulationKey => "invalid ML-KEM-768 encapsulation key",
            KemFailure::InvalidCiphertext => "invalid ML-KEM-768 ciphertext",
        }
    }
}

/// A fresh X25519 key pair for one handshake.
pub(crate) fn x25519_ephemeral<R: CryptoRng + RngCore + ?Sized>(
    rng: &mut R,
) -> (EphemeralSecret, [u8; 32]) {
    let secret = EphemeralSecret::random_from_rng(&mut RngBridge(rng));
    let public = PublicKey::from(&secret).to_bytes();
    (secret, public)
}

fn contributory(shared: SharedSecret) -> Result<Zeroizing<[u8; 32]>, KemFailure> {
    if !shared.was_contributory() {
        return Err(KemFailure::X25519NonContributory);
    }
    Ok(Zeroizing::new(shared.to_bytes()))
}

/// X25519 with a one-shot secret; refuses low-order peer keys.
pub(crate) fn x25519_ephemeral_agree(
    secret: EphemeralSecret,
    peer: &[u8; 32],
) -> Result<Zeroizing<[u8; 32]>, KemFailure> {
    contributory(secret.diffie_hellman(&PublicKey::from(*peer)))
}

/// X25519 with a long-term secret; refuses low-order peer keys.
pub(crate) fn x25519_static_agree(
    secret: &StaticSecret,
    peer: &[u8; 32],
) -> Result<Zeroizing<[u8; 32]>, KemFailure> {
    contributory(secret.diffie_hellman(&PublicKey::from(*peer)))
}

/// An ML-KEM-768 decapsulation key from the 64-byte FIPS 203 seed `d || z`.
pub(crate) fn mlkem_from_seed(seed: &[u8; 64]) -> ml_kem_768::DecapsulationKey {
    let mut seed_array = ml_kem::Seed::from(*seed);
    let key = ml_kem_768::DecapsulationKey::from_seed(seed_array);
    seed_array.zeroize();
    key
}

/// A fresh ML-KEM-768 key pair for one handshake.
pub(crate) fn mlkem_ephemeral<R: CryptoRng + RngCore + ?Sized>(
    rng: &mut R,
) -> ml_kem_768::DecapsulationKey {
    let mut seed = Zeroizing::new([0u8; 64]);
    rng.fill_bytes(seed.as_mut());
    mlkem_from_seed(&seed)
}

/// The encoded encapsulation key of `key`.
pub(crate) fn mlkem_public(key: &ml_kem_768::DecapsulationKey) -> Vec<u8> {
    key.encapsulation_key().to_bytes().to_vec()
}

/// Encapsulates a fresh shared secret to `encapsulation_key`: (ciphertext, secret).
pub(crate) fn mlkem_encapsulate<R: CryptoRng + RngCore + ?Sized>(
    encapsulation_key: &[u8],
    rng: &mut R,
) -> Result<(Vec<u8>, Zeroizing<[u8; 32]>), KemFailure> {
    let encoded = ml_kem::Key::<ml_kem_768::EncapsulationKey>::try_from(encapsulation_key)
        .map_err(|_| KemFailure::InvalidEncapsulationKey)?;
    let key = ml_kem_768::EncapsulationKey::new(&encoded)
        .map_err(|_| KemFailure::InvalidEncapsulationKey)?;
    let (ciphertext, mut shared) = key.encapsulate_with_rng(&mut RngBridge(rng));
    let mut out = Zeroizing::new([0u8; 32]);
    out.copy_from_slice(&shared);
    shared.zeroize();
    Ok((ciphertext.to_vec(), out))
}

/// Decapsulates `ciphertext`. ML-KEM rejects implicitly: a tampered ciphertext yields an
/// unrelated secret rather than an error, which key confirmation (or the AEAD) catches.
pub(crate) fn mlkem_decapsulate(
    key: &ml_kem_768::DecapsulationKey,
    ciphertext: &[u8],
) -> Result<Zeroizing<[u8; 32]>, KemFailure> {
    let ciphertext =
        ml_kem_768::Ciphertext::try_from(ciphertext).map_err(|_| KemFailure::InvalidCiphertext)?;
    let mut shared = key.decapsulate(&ciphertext);
    let mut out = Zeroizing::new([0u8; 32]);
    out.copy_from_slice(&shared);
    shared.zeroize();
    Ok(out)
}

/// The hybrid combiner: HKDF-Extract with `salt` (a transcript or header hash) over
/// `x25519_secret || mlkem_secret`. The output pseudorandom key is as strong as the
/// stronger of the two secrets (HKDF-Extract is a dual PRF / randomness extractor over
/// the concatenation), and is bound to everything the salt commits to.
pub(crate) fn combine(
    salt: &[u8; 32],
    x25519_secret: &[u8; 32],
    mlkem_secret: &[u8; 32],
) -> Zeroizing<[u8; 32]> {
    let mut ikm = Zeroizing::new([0u8; 64]);
    ikm[..32].copy_from_slice(x25519_secret);
    ikm[32..].copy_from_slice(mlkem_secret);
    extract(salt, ikm.as_ref())
}

/// HKDF-Extract: a 32-byte pseudorandom key from `ikm`, salted.
pub(crate) fn extract(salt: &[u8], ikm: &[u8]) -> Zeroizing<[u8; 32]> {
    let (mut prk, _) = Hkdf::<Sha256>::extract(Some(salt), ikm);
    let mut out = Zeroizing::new([0u8; 32]);
    out.copy_from_slice(&prk);
    prk.zeroize();
    out
}

/// HKDF-Expand of 32 bytes from a 32-byte pseudorandom key, with `info` the
/// concatenation of `info_parts`.
pub(crate) fn expand(prk: &[u8; 32], info_parts: &[&[u8]]) -> Zeroizing<[u8; 32]> {
    let mut out = Zeroizing::new([0u8; 32]);
    let ok = Hkdf::<Sha256>::from_prk(prk)
        .ok()
        .is_some_and(|hk| hk.expand_multi_info(info_parts, out.as_mut()).is_ok());
    // A 32-byte PRK is exactly SHA-256's length and 32 output bytes are far below HKDF's
    // 255 * 32 limit: both calls succeed for every input, so this branch is dead.
    if !ok {
        unreachable!("HKDF-SHA256 with a 32-byte PRK and 32-byte output cannot fail");
    }
    out
}

/// A running SHA-256 over labelled, length-prefixed fields. Unambiguous (no two field
/// sequences hash the same input) and independent of the wire encoding.
#[derive(Clone)]
pub(crate) struct Transcript(Sha256);

impl Transcript {
    pub(crate) fn new(protocol: &[u8]) -> Self {
        let mut t = Transcript(Sha256::new());
        t.absorb(b"protocol", protocol);
        t
    }

    pub(crate) fn absorb(&mut self, label: &[u8], data: &[u8]) {
        self.0.update((label.len() as u64).to_be_bytes());
        self.0.update(label);
        self.0.update((data.len() as u64).to_be_bytes());
        self.0.update(data);
    }

    pub(crate) fn hash(&self) -> [u8; 32] {
        self.0.clone().finalize().into()
    }
}

/// SHA-256 of the concatenation of `parts`.
pub(crate) fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha256::new();
    for part in parts {
        h.update(part);
    }
    h.finalize().into()
}
