//! The one versioned wire envelope every message between nodes travels in.
//!
//! `Envelope { version, kind, from, payload, signature }`, encoded with postcard. The
//! signature is the sender's Ed25519 signature over a domain-separated encoding of the
//! other fields, so a relayed or gossiped envelope still proves who wrote it. Decoding is
//! total: any byte string yields an envelope or a typed [`EnvelopeError`], never a panic
//! (property-tested below).

use serde::{Deserialize, Serialize};

use crate::identity::verify_signature;
use crate::{Identity, NodeId};

/// The envelope version this build writes and accepts. Version 2: routing payloads name
/// nodes by 6-byte short ids and carry an advert's form in its seqno (a version 1 peer
/// would misread both, so it is refused by its version instead). Version 3: routing
/// payloads name destinations by the sender's tags and carry its incarnation. Version 4:
/// seqno requests travel in lists.
pub const VERSION: u8 = 4;

/// The version byte of a [`Kind::Link`] envelope's compact wire form: the session frame
/// alone, because the transport already names the sender and the frame authenticates
/// itself (see [`Envelope::encode`]). Version 3 wrote the frame without a length (it is
/// the rest of the message) and inside it the envelope without a signature field;
/// version 4 writes that envelope as its kind and payload alone (see
/// [`Envelope::encode_in_link`]); version 5 carries an envelope of [`VERSION`] 3, and
/// version 6 one of version 4.
pub const LINK_FRAME_VERSION: u8 = 6;

/// Largest encoded envelope accepted from the network. Bounds memory per message before
/// anything is parsed.
pub const MAX_ENVELOPE_BYTES: usize = 1 << 20;

const SIGNING_DOMAIN: &[u8] = b"x0tta6bl4/envelope/v1\0";

/// What an envelope carries, and so which actor owns it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// A discovery beacon (one hop, to every neighbor).
    Beacon,
    /// A routing update or seqno request (one hop).
    Routing,
    /// One hop of a multi-hop message: a [`crate::forwarding::Relay`] around a `Data`
    /// envelope, sealed by the relaying neighbor.
    Relay,
    /// An application message, sealed once by its origin and carried inside relays.
    Data,
    /// A failure-detector probe (one hop): pings, acks and indirect probes.
    Probe,
    /// A hybrid post-quantum session handshake message (one hop).
    Handshake,
    /// CRDT sync: announcements, pulls, entries and anti-entropy digests (one hop).
    Crdt,
    /// Another envelope for the link peer, encrypted under the hybrid post-quantum
    /// session of the two nodes ([`crate::crypto::Session`] frame; one hop).
    Link,
}

impl Kind {
    pub fn code(self) -> u16 {
        match self {
            Kind::Beacon => 1,
            Kind::Routing => 2,
            Kind::Relay => 3,
            Kind::Data => 4,
            Kind::Probe => 5,
            Kind::Handshake => 6,
            Kind::Crdt => 7,
            Kind::Link => 8,
        }
    }

    pub fn from_code(code: u16) -> Result<Kind, EnvelopeError> {
        match code {
            1 => Ok(Kind::Beacon),
            2 => Ok(Kind::Routing),
            3 => Ok(Kind::Relay),
            4 => Ok(Kind::Data),
            5 => Ok(Kind::Probe),
            6 => Ok(Kind::Handshake),
            7 => Ok(Kind::Crdt),
            8 => Ok(Kind::Link),
            other => Err(EnvelopeError::UnknownKind(other)),
        }
    }

    /// Envelopes of this kind are sent unsigned ([`Envelope::link_local`]) and ride on
    /// the link's authentication: their contents carry their own signatures (CRDT
    /// entries) or their own authentication (session frames).
    pub fn is_link_local(self) -> bool {
        matches!(self, Kind::Crdt | Kind::Link)
    }

    /// A stable lowercase name, used as a metric label.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Beacon => "beacon",
            Kind::Routing => "routing",
            Kind::Relay => "relay",
            Kind::Data => "data",
            Kind::Probe => "probe",
            Kind::Handshake => "handshake",
            Kind::Crdt => "crdt",
            Kind::Link => "link",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    #[error("envelope is empty")]
    Empty,
    #[error("envelope of {0} bytes exceeds the limit of {MAX_ENVELOPE_BYTES}")]
    TooLarge(usize),
    #[error("unknown envelope version {0} (this build speaks {VERSION})")]
    UnknownVersion(u8),
    #[error("unknown envelope kind {0}")]
    UnknownKind(u16),
    #[error("malformed envelope: {0}")]
    Malformed(String),
    #[error("envelope has trailing bytes")]
    TrailingBytes,
    #[error("bad signature")]
    BadSignature,
    #[error("payload does not decode: {0}")]
    BadPayload(String),
}

impl EnvelopeError {
    /// A stable lowercase name, used as a metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            EnvelopeError::Empty => "empty",
            EnvelopeError::TooLarge(_) => "too_large",
            EnvelopeError::UnknownVersion(_) => "unknown_version",
            EnvelopeError::UnknownKind(_) => "unknown_kind",
            EnvelopeError::Malformed(_) => "malformed",
            EnvelopeError::TrailingBytes => "trailing_bytes",
            EnvelopeError::BadSignature => "bad_signature",
            EnvelopeError::BadPayload(_) => "bad_payload",
        }
    }
}

/// A decoded envelope. Its signature is *not* checked by decoding: the owning actor calls
/// [`Envelope::verify`], so the cost lands on the actor that needs the answer.
#[derive(Clone, PartialEq, Eq)]
pub struct Envelope {
    pub version: u8,
    pub kind: Kind,
    pub from: NodeId,
    pub payload: Vec<u8>,
    pub signature: [u8; 64],
}

impl std::fmt::Debug for Envelope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Envelope")
            .field("kind", &self.kind)
            .field("from", &self.from)
            .field("payload_len", &self.payload.len())
            .finish()
    }
}

#[derive(Serialize, Deserialize)]
struct Wire {
    version: u8,
    kind: u16,
    from: NodeId,
    #[serde(with = "crate::wire_bytes")]
    payload: Vec<u8>,
    signature_r: [u8; 32],
    signature_s: [u8; 32],
}

impl Envelope {
    /// Builds and signs an envelope carrying `payload`.
    pub fn seal(identity: &Identity, kind: Kind, payload: Vec<u8>) -> Envelope {
        let from = identity.id();
        let signature = identity.sign(&signed_bytes(VERSION, kind, &from, &payload));
        Envelope {
            version: VERSION,
            kind,
            from,
            payload,
            signature,
        }
    }

    /// An unsigned envelope for one hop over an authenticated link, for kinds whose
    /// contents carry their own signatures (CRDT sync: every entry is signed by its
    /// writer). The receiver accepts it only from a link peer that has already proved
    /// its key with a signed envelope, so a signature here would prove nothing new;
    /// skipping it saved 43% of a simulation's CPU (measured with perf). The wire format
    /// is unchanged: the signature is all zeros, and [`Envelope::verify`] fails on it.
    pub fn link_local<T: Serialize>(from: NodeId, kind: Kind, message: &T) -> Envelope {
        Envelope {
            version: VERSION,
            kind,
            from,
            // Our own message types always serialize.
            payload: postcard::to_stdvec(message).unwrap_or_default(),
            signature: [0; 64],
        }
    }

    /// A [`Kind::Link`] envelope around a session frame: unsigned, because the frame's
    /// authentication under the session keys says who sent it.
    pub fn link_frame(from: NodeId, frame: Vec<u8>) -> Envelope {
        Envelope {
            version: VERSION,
            kind: Kind::Link,
            from,
            payload: frame,
            signature: [0; 64],
        }
    }

    /// Serializes `message` with postcard and seals it.
    pub fn seal_message<T: Serialize>(identity: &Identity, kind: Kind, message: &T) -> Envelope {
        // Our own message types always serialize; a failure here is a programming error
        // in a type definition, not bad input.
        let payload = postcard::to_stdvec(message).unwrap_or_default();
        Envelope::seal(identity, kind, payload)
    }

    /// Checks that `from` signed this envelope.
    pub fn verify(&self) -> Result<(), EnvelopeError> {
        let message = signed_bytes(self.version, self.kind, &self.from, &self.payload);
        if verify_signature(&self.from, &message, &self.signature) {
            Ok(())
        } else {
            Err(EnvelopeError::BadSignature)
        }
    }

    /// Decodes the payload as a postcard message of type `T`.
    pub fn decode_payload<'a, T: Deserialize<'a>>(&'a self) -> Result<T, EnvelopeError> {
        let (value, rest) = postcard::take_from_bytes(&self.payload)
            .map_err(|e| EnvelopeError::BadPayload(e.to_string()))?;
        if !rest.is_empty() {
            return Err(EnvelopeError::BadPayload("trailing bytes".into()));
        }
        Ok(value)
    }

    /// The wire form. A [`Kind::Link`] envelope (which is never signed, and whose sender
    /// the transport names) is written as [`LINK_FRAME_VERSION`] and its frame: ~100
    /// bytes less than the full form on every sealed envelope, which at 1000 nodes is
    /// most envelopes. Read it back with [`Envelope::decode_from`].
    pub fn encode(&self) -> Vec<u8> {
        if self.kind == Kind::Link {
            let mut out = Vec::with_capacity(1 + self.payload.len());
            out.push(LINK_FRAME_VERSION);
            out.extend_from_slice(&self.payload);
            return out;
        }
        let (signature_r, signature_s) = split_signature(&self.signature);
        let wire = Wire {
            version: self.version,
            kind: self.kind.code(),
            from: self.from,
            payload: self.payload.clone(),
            signature_r,
            signature_s,
        };
        postcard::to_stdvec(&wire).unwrap_or_default()
    }

    /// Decodes an envelope in the full form, which names its sender.
    pub fn decode(bytes: &[u8]) -> Result<Envelope, EnvelopeError> {
        let wire: Wire = decode_wire(bytes, VERSION)?;
        let mut signature = [0u8; 64];
        signature[..32].copy_from_slice(&wire.signature_r);
        signature[32..].copy_from_slice(&wire.signature_s);
        Ok(Envelope {
            version: wire.version,
            kind: Kind::from_code(wire.kind)?,
            from: wire.from,
            payload: wire.payload,
            signature,
        })
    }
}

impl Envelope {
    /// Decodes an envelope that arrived over the link to `link_peer`: either form, the
    /// compact link frame taking its sender from the link.
    pub fn decode_from(link_peer: NodeId, bytes: &[u8]) -> Result<Envelope, EnvelopeError> {
        match bytes.split_first() {
            Some((&LINK_FRAME_VERSION, frame)) if bytes.len() <= MAX_ENVELOPE_BYTES => {
                Ok(Envelope::link_frame(link_peer, frame.to_vec()))
            }
            Some((&LINK_FRAME_VERSION, _)) => Err(EnvelopeError::TooLarge(bytes.len())),
            _ => Envelope::decode(bytes),
        }
    }
}

impl Envelope {
    /// The envelope for a link frame: without `from` (the frame's sender, which the
    /// session authenticates) and without a signature, 98 bytes less than
    /// [`Envelope::encode`] on every envelope a link carries. A signature would prove
    /// nothing there: what arrives in the session is the peer's, whose keys came from a
    /// handshake it signed, so the receiver checks none.
    ///
    /// Only the kind (a varint) and the payload are written: the frame's version
    /// ([`LINK_FRAME_VERSION`]) says which envelope version is inside, and the payload
    /// runs to the end of what the frame opens to. A version byte and a length on every
    /// sealed message were 2 to 3 bytes of the ~30 that each of the 57 messages a node
    /// sends per second pays at 1000 nodes under churn.
    pub fn encode_in_link(&self) -> Vec<u8> {
        let out = Vec::with_capacity(3 + self.payload.len());
        // A u16 always serializes.
        let mut out = postcard::to_extend(&self.kind.code(), out).unwrap_or_default();
        out.extend_from_slice(&self.payload);
        out
    }

    /// The inverse of [`Envelope::encode_in_link`] for a frame `from` sent. Total: any
    /// byte string gives an envelope or a typed error.
    pub fn decode_in_link(from: NodeId, bytes: &[u8]) -> Result<Envelope, EnvelopeError> {
        check_size(bytes)?;
        let (kind, payload): (u16, &[u8]) = postcard::take_from_bytes(bytes)
            .map_err(|e| EnvelopeError::Malformed(e.to_string()))?;
        Ok(Envelope {
            version: VERSION,
            kind: Kind::from_code(kind)?,
            from,
            payload: payload.to_vec(),
            signature: [0; 64],
        })
    }
}

/// Refuses what is empty or larger than any envelope before anything in it is read.
fn check_size(bytes: &[u8]) -> Result<(), EnvelopeError> {
    if bytes.is_empty() {
        return Err(EnvelopeError::Empty);
    }
    if bytes.len() > MAX_ENVELOPE_BYTES {
        return Err(EnvelopeError::TooLarge(bytes.len()));
    }
    Ok(())
}

/// Any wire form, with its size and version checked before anything else is read.
fn decode_wire<'de, T: Deserialize<'de>>(
    bytes: &'de [u8],
    expected_version: u8,
) -> Result<T, EnvelopeError> {
    check_size(bytes)?;
    let version = bytes[0];
    // postcard writes a u8 as one raw byte, so the version is always the first byte
    // and can be refused before the rest is trusted.
    if version != expected_version {
        return Err(EnvelopeError::UnknownVersion(version));
    }
    let (wire, rest) =
        postcard::take_from_bytes(bytes).map_err(|e| EnvelopeError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(EnvelopeError::TrailingBytes);
    }
    Ok(wire)
}

fn split_signature(signature: &[u8; 64]) -> ([u8; 32], [u8; 32]) {
    let mut r = [0u8; 32];
    let mut s = [0u8; 32];
    r.copy_from_slice(&signature[..32]);
    s.copy_from_slice(&signature[32..]);
    (r, s)
}

fn signed_bytes(version: u8, kind: Kind, from: &NodeId, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(SIGNING_DOMAIN.len() + 1 + 2 + 32 + 8 + payload.len());
    out.extend_from_slice(SIGNING_DOMAIN);
    out.push(version);
    out.extend_from_slice(&kind.code().to_le_bytes());
    out.extend_from_slice(from.as_bytes());
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn envelopes_in_links_round_trip_smaller() {
        let identity = Identity::from_seed([5; 32]);
        let signed = Envelope::seal(&identity, Kind::Routing, b"update".to_vec());
        let unsigned = Envelope::link_local(identity.id(), Kind::Crdt, &b"have".to_vec());
        let in_link = unsigned.encode_in_link();
        assert_eq!(
            Envelope::decode_in_link(identity.id(), &in_link).as_ref(),
            Ok(&unsigned)
        );
        // A signed envelope arrives in the link without its signature, which nobody
        // checks there.
        let arrived =
            Envelope::decode_in_link(identity.id(), &signed.encode_in_link()).expect("decodes");
        assert_eq!(arrived.payload, signed.payload);
        assert_eq!(arrived.signature, [0; 64]);
        // Version, sender, signature and the payload's length stay out of the link.
        assert_eq!(signed.encode().len() - signed.encode_in_link().len(), 98);
        assert_eq!(
            unsigned.encode().len() - unsigned.encode_in_link().len(),
            98
        );
        assert_eq!(
            Envelope::decode_in_link(identity.id(), &[]),
            Err(EnvelopeError::Empty)
        );
        // A kind nobody knows, and a kind whose varint never ends.
        assert_eq!(
            Envelope::decode_in_link(identity.id(), &[99]),
            Err(EnvelopeError::UnknownKind(99))
        );
        assert!(matches!(
            Envelope::decode_in_link(identity.id(), &[0x80, 0x80]),
            Err(EnvelopeError::Malformed(_))
        ));
    }

    fn identity() -> Identity {
        Identity::from_seed([42; 32])
    }

    #[test]
    fn link_frames_travel_without_sender_or_signature() {
        let peer = identity().id();
        let frame = Envelope::link_frame(peer, b"sealed bytes".to_vec());
        let bytes = frame.encode();
        assert_eq!(bytes.len(), 1 + 12);
        assert_eq!(bytes[0], LINK_FRAME_VERSION);
        assert_eq!(Envelope::decode_from(peer, &bytes), Ok(frame));
        // Without the link there is no sender to give it.
        assert_eq!(
            Envelope::decode(&bytes),
            Err(EnvelopeError::UnknownVersion(LINK_FRAME_VERSION))
        );
        // The full form still decodes through the same door.
        let beacon = Envelope::seal(&identity(), Kind::Beacon, b"hello".to_vec());
        assert_eq!(Envelope::decode_from(peer, &beacon.encode()), Ok(beacon));
        let mut full_form = beacon_bytes_with_trailing_byte();
        assert_eq!(
            Envelope::decode_from(peer, &full_form),
            Err(EnvelopeError::TrailingBytes)
        );
        // The frame is the rest of the message, bounded like any envelope.
        full_form = vec![LINK_FRAME_VERSION; MAX_ENVELOPE_BYTES + 1];
        assert_eq!(
            Envelope::decode_from(peer, &full_form),
            Err(EnvelopeError::TooLarge(MAX_ENVELOPE_BYTES + 1))
        );
    }

    fn beacon_bytes_with_trailing_byte() -> Vec<u8> {
        let mut bytes = Envelope::seal(&identity(), Kind::Beacon, b"hi".to_vec()).encode();
        bytes.push(0);
        bytes
    }

    #[test]
    fn seal_encode_decode_verify_round_trip() {
        let env = Envelope::seal(&identity(), Kind::Beacon, b"hello".to_vec());
        let back = Envelope::decode(&env.encode()).expect("decodes");
        assert_eq!(back, env);
        back.verify().expect("signature holds");
    }

    #[test]
    fn tampering_breaks_the_signature() {
        let env = Envelope::seal(&identity(), Kind::Beacon, b"hello".to_vec());
        let mut changed = env.clone();
        changed.payload[0] ^= 1;
        assert_eq!(changed.verify(), Err(EnvelopeError::BadSignature));
        let mut forged = env;
        forged.from = Identity::from_seed([1; 32]).id();
        assert_eq!(forged.verify(), Err(EnvelopeError::BadSignature));
    }

    #[test]
    fn unknown_version_and_kind_are_typed_errors() {
        let mut bytes = Envelope::seal(&identity(), Kind::Beacon, vec![]).encode();
        bytes[0] = 9;
        assert_eq!(
            Envelope::decode(&bytes),
            Err(EnvelopeError::UnknownVersion(9))
        );
        let mut bytes = Envelope::seal(&identity(), Kind::Beacon, vec![]).encode();
        bytes[1] = 77; // kind is a one-byte varint for small codes
        assert_eq!(
            Envelope::decode(&bytes),
            Err(EnvelopeError::UnknownKind(77))
        );
        assert_eq!(Envelope::decode(&[]), Err(EnvelopeError::Empty));
    }

    #[test]
    fn oversized_input_is_refused_before_parsing() {
        let bytes = vec![VERSION; MAX_ENVELOPE_BYTES + 1];
        assert_eq!(
            Envelope::decode(&bytes),
            Err(EnvelopeError::TooLarge(MAX_ENVELOPE_BYTES + 1))
        );
    }

    proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = Envelope::decode(&bytes);
            let _ = Envelope::decode_from(identity().id(), &bytes);
        }

        #[test]
        fn decoding_mutated_envelopes_never_panics(
            payload in proptest::collection::vec(any::<u8>(), 0..64),
            index in any::<prop::sample::Index>(),
            value in any::<u8>(),
        ) {
            let mut bytes = Envelope::seal(&identity(), Kind::Beacon, payload).encode();
            let i = index.index(bytes.len());
            bytes[i] = value;
            if let Ok(env) = Envelope::decode(&bytes) {
                // A changed byte that still decodes must not still verify, unless the
                // change was a no-op.
                let original = Envelope::decode(&Envelope::seal(&identity(), Kind::Beacon, env.payload.clone()).encode());
                if env.verify().is_ok() {
                    prop_assert_eq!(Some(env), original.ok());
                }
            }
        }

        #[test]
        fn every_payload_round_trips(payload in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let env = Envelope::seal(&identity(), Kind::Beacon, payload);
            prop_assert_eq!(Envelope::decode(&env.encode()), Ok(env));
        }
    }
}
