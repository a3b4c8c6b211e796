//! A node's long-term keys and their file encoding.
//!
//! Every node has an Ed25519 key pair (its [`NodeId`], and libp2p's `PeerId`) and an
//! ML-KEM-768 key pair (for the post-quantum half of hybrid key exchange). Both are
//! derived from seeds, which are also what we store: a 32-byte Ed25519 secret and the
//! 64-byte FIPS 203 seed `d || z`. Reading and writing the files is the node's business;
//! this module only says what the bytes mean.

use std::fmt;

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use ml_kem::{KeyExport, ml_kem_768};
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use zeroize::Zeroizing;

use crate::NodeId;

/// Magic at the start of every key file: the format name and its version.
const KEY_FILE_MAGIC: &[u8; 8] = b"x0key\x00\x01\x00";
const TAG_ED25519: u8 = 1;
const TAG_MLKEM768: u8 = 2;

/// Length of an ML-KEM-768 encapsulation (public) key in bytes.
pub const MLKEM768_PUBLIC_KEY_LEN: usize = 1184;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("not an x0tta6bl4 key file (bad magic)")]
    BadMagic,
    #[error("key file holds a {found} key, expected {expected}")]
    WrongKeyType {
        expected: &'static str,
        found: String,
    },
    #[error("key file is {found} bytes, expected {expected} (truncated or corrupt)")]
    BadLength { expected: usize, found: usize },
}

/// The long-term secret keys of one node. Secrets are zeroized on drop and never printed.
pub struct Identity {
    signing: SigningKey,
    kem: ml_kem_768::DecapsulationKey,
    kem_seed: Zeroizing<[u8; 64]>,
    id: NodeId,
}

impl Identity {
    /// Derives both key pairs from one 32-byte seed (ChaCha20 as the expander).
    ///
    /// The node feeds this from the operating system's entropy; the simulator from its
    /// run seed, which is what makes simulated identities reproducible.
    pub fn from_seed(seed: [u8; 32]) -> Self {
        let mut rng = ChaCha20Rng::from_seed(seed);
        let mut ed = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(ed.as_mut());
        let mut kem_seed = Zeroizing::new([0u8; 64]);
        rng.fill_bytes(kem_seed.as_mut());
        Self::from_parts(&ed, kem_seed)
    }

    fn from_parts(ed_secret: &[u8; 32], kem_seed: Zeroizing<[u8; 64]>) -> Self {
        let signing = SigningKey::from_bytes(ed_secret);
        let kem = ml_kem_768::DecapsulationKey::from_seed((*kem_seed).into());
        let id = NodeId(signing.verifying_key().to_bytes());
        Identity {
            signing,
            kem,
            kem_seed,
            id,
        }
    }

    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The 32-byte Ed25519 secret, for handing to libp2p's keypair constructor.
    pub fn ed25519_secret(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.signing.to_bytes())
    }

    /// The ML-KEM-768 encapsulation key that peers use to send us secrets.
    pub fn kem_public_key(&self) -> Vec<u8> {
        self.kem.encapsulation_key().to_bytes().to_vec()
    }

    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.signing.sign(message).to_bytes()
    }

    /// The Ed25519 key file: magic, tag, 32-byte secret.
    pub fn ed25519_file_bytes(&self) -> Zeroizing<Vec<u8>> {
        key_file(TAG_ED25519, &self.signing.to_bytes())
    }

    /// The ML-KEM-768 key file: magic, tag, 64-byte FIPS 203 seed.
    pub fn mlkem_file_bytes(&self) -> Zeroizing<Vec<u8>> {
        key_file(TAG_MLKEM768, self.kem_seed.as_ref())
    }

    /// Rebuilds an identity from the two key files' contents.
    pub fn from_file_bytes(ed25519_file: &[u8], mlkem_file: &[u8]) -> Result<Self, IdentityError> {
        let ed = parse_key_file::<32>(ed25519_file, TAG_ED25519)?;
        let kem = parse_key_file::<64>(mlkem_file, TAG_MLKEM768)?;
        Ok(Self::from_parts(&ed, kem))
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("id", &self.id)
            .field("secrets", &"<redacted>")
            .finish()
    }
}

/// Checks an Ed25519 signature by `signer` over `message`.
pub fn verify_signature(signer: &NodeId, message: &[u8], signature: &[u8; 64]) -> bool {
    let Ok(key) = VerifyingKey::from_bytes(signer.as_bytes()) else {
        return false;
    };
    key.verify(message, &Signature::from_bytes(signature))
        .is_ok()
}

fn tag_name(tag: u8) -> String {
    match tag {
        TAG_ED25519 => "ed25519".into(),
        TAG_MLKEM768 => "ml-kem-768".into(),
        other => format!("unknown (tag {other})"),
    }
}

fn key_file(tag: u8, secret: &[u8]) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(KEY_FILE_MAGIC.len() + 1 + secret.len()));
    out.extend_from_slice(KEY_FILE_MAGIC);
    out.push(tag);
    out.extend_from_slice(secret);
    out
}

fn parse_key_file<const N: usize>(
    bytes: &[u8],
    tag: u8,
) -> Result<Zeroizing<[u8; N]>, IdentityError> {
    let header = KEY_FILE_MAGIC.len() + 1;
    if bytes.len() < header || &bytes[..KEY_FILE_MAGIC.len()] != KEY_FILE_MAGIC {
        return Err(IdentityError::BadMagic);
    }
    let found_tag = bytes[KEY_FILE_MAGIC.len()];
    if found_tag != tag {
        return Err(IdentityError::WrongKeyType {
            expected: if tag == TAG_ED25519 {
                "ed25519"
            } else {
                "ml-kem-768"
            },
            found: tag_name(found_tag),
        });
    }
    let body = &bytes[header..];
    if body.len() != N {
        return Err(IdentityError::BadLength {
            expected: header + N,
            found: bytes.len(),
        });
    }
    let mut out = Zeroizing::new([0u8; N]);
    out.copy_from_slice(body);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_keys_different_seed_different_keys() {
        let a = Identity::from_seed([1; 32]);
        let b = Identity::from_seed([1; 32]);
        let c = Identity::from_seed([2; 32]);
        assert_eq!(a.id(), b.id());
        assert_eq!(a.kem_public_key(), b.kem_public_key());
        assert_ne!(a.id(), c.id());
        assert_eq!(a.kem_public_key().len(), MLKEM768_PUBLIC_KEY_LEN);
    }

    #[test]
    fn files_round_trip_to_the_same_identity() {
        let a = Identity::from_seed([3; 32]);
        let b = Identity::from_file_bytes(&a.ed25519_file_bytes(), &a.mlkem_file_bytes())
            .expect("round trip");
        assert_eq!(a.id(), b.id());
        assert_eq!(a.kem_public_key(), b.kem_public_key());
    }

    #[test]
    fn damaged_files_are_refused() {
        let a = Identity::from_seed([4; 32]);
        let ed = a.ed25519_file_bytes();
        let kem = a.mlkem_file_bytes();
        assert!(matches!(
            Identity::from_file_bytes(&ed[..20], &kem),
            Err(IdentityError::BadLength { .. })
        ));
        assert!(matches!(
            Identity::from_file_bytes(&kem, &ed),
            Err(IdentityError::WrongKeyType { .. })
        ));
        assert_eq!(
            Identity::from_file_bytes(b"hello world, not a key", &kem).err(),
            Some(IdentityError::BadMagic)
        );
    }

    #[test]
    fn signatures_verify_only_for_the_signer_and_message() {
        let a = Identity::from_seed([5; 32]);
        let b = Identity::from_seed([6; 32]);
        let sig = a.sign(b"beacon");
        assert!(verify_signature(&a.id(), b"beacon", &sig));
        assert!(!verify_signature(&a.id(), b"beacon!", &sig));
        assert!(!verify_signature(&b.id(), b"beacon", &sig));
    }

    #[test]
    fn debug_never_shows_secrets() {
        let a = Identity::from_seed([9; 32]);
        let shown = format!("{a:?}");
        assert!(shown.contains("redacted"));
        assert!(!shown.contains(&format!("{:?}", a.ed25519_secret().as_ref())));
    }
}
