//! The hybrid handshake: three messages, mutual authentication by Ed25519 identities,
//! X25519 + ML-KEM-768 key agreement, a [`Session`] at the end.
//!
//! ```text
//! Initiator                                              Responder
//!   Init     { suites, initiator id, X25519 e_i, ML-KEM-768 ek_i }  ->
//!            <-  Response { suite, responder id, X25519 e_r, ML-KEM ct,
//!                           sig_r(th2), confirm_r }
//!   Finish   { sig_i(th3), confirm_i }                               ->
//! ```
//!
//! - `th2` is the transcript hash over every field of `Init` and the unsigned fields of
//!   `Response` (including the offered and chosen suites); `th3` adds `sig_r` and
//!   `confirm_r`; the session id adds `sig_i` and `confirm_i`.
//! - `prk = HKDF-Extract(salt = th2, X25519(e_i, e_r) || ML-KEM shared secret)`.
//! - `confirm_r = HKDF-Expand(prk, "responder-confirm" || th2)`, `confirm_i` likewise over
//!   `th3`: proof that the sender derived the same `prk` (ML-KEM decapsulation never
//!   errors; a mismatch shows up here).
//! - Traffic keys: `HKDF-Expand(prk, "initiator-to-responder" || session id)` and the
//!   reverse.
//!
//! The state machine is sans-IO: [`Handshake::initiate`] returns the first message,
//! [`Handshake::handle_message`] takes each message from the peer and returns the reply to
//! send and, once established, the [`Session`]. Any error aborts the handshake.

use std::fmt;

use ml_kem::ml_kem_768;
use rand::{CryptoRng, RngCore};
use serde::{Deserialize, Serialize};
use x25519_dalek::EphemeralSecret;
use zeroize::Zeroizing;

use super::hybrid::{
    KemFailure, MLKEM768_CIPHERTEXT_LEN, MLKEM768_ENCAPSULATION_KEY_LEN, Transcript, combine,
    expand, mlkem_decapsulate, mlkem_encapsulate, mlkem_ephemeral, mlkem_public, x25519_ephemeral,
    x25519_ephemeral_agree,
};
use super::session::{RekeyPolicy, Session};
use super::{SUITE, WireSignature, ct_eq, is_truncation};
use crate::identity::verify_signature;
use crate::{Identity, Millis, NodeId};

/// The handshake version this build writes and accepts (the first byte of every message).
pub const HANDSHAKE_VERSION: u8 = 1;
/// Largest handshake message accepted; the largest real one (`Init`) is about 1.3 KiB.
pub const MAX_HANDSHAKE_MESSAGE_BYTES: usize = 4096;
/// At most this many suites in an offer.
pub const MAX_OFFERED_SUITES: usize = 8;
/// Longest suite name accepted.
pub const MAX_SUITE_NAME_BYTES: usize = 64;

const PROTOCOL: &[u8] = b"x0tta6bl4/crypto/handshake/v1";
const RESPONDER_SIGNATURE: &[u8] = b"x0tta6bl4/crypto/handshake/v1/responder-signature\0";
const INITIATOR_SIGNATURE: &[u8] = b"x0tta6bl4/crypto/handshake/v1/initiator-signature\0";
const RESPONDER_CONFIRM: &[u8] = b"x0tta6bl4/crypto/handshake/v1/responder-confirm";
const INITIATOR_CONFIRM: &[u8] = b"x0tta6bl4/crypto/handshake/v1/initiator-confirm";
const INITIATOR_TO_RESPONDER: &[u8] = b"x0tta6bl4/crypto/handshake/v1/initiator-to-responder";
const RESPONDER_TO_INITIATOR: &[u8] = b"x0tta6bl4/crypto/handshake/v1/responder-to-initiator";

/// Which side of a handshake (and so of a session) a node is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    Initiator,
    Responder,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    #[error("handshake message is truncated")]
    Truncated,
    #[error("handshake message of {0} bytes exceeds the limit of {MAX_HANDSHAKE_MESSAGE_BYTES}")]
    TooLarge(usize),
    #[error("malformed handshake message: {0}")]
    Malformed(String),
    #[error("unsupported handshake version {0} (this build speaks {HANDSHAKE_VERSION})")]
    UnsupportedVersion(u8),
    #[error("none of the offered suites {offered:?} is supported (this build speaks {SUITE})")]
    UnsupportedSuite { offered: Vec<String> },
    #[error("suite downgrade: we offered {offered:?}, the peer answered with {chosen:?}")]
    Downgrade {
        offered: Vec<String>,
        chosen: String,
    },
    #[error("bad signature (forged, or the transcript was altered in transit)")]
    BadSignature,
    #[error("wrong peer identity: expected {expected}, got {found}")]
    WrongIdentity { expected: NodeId, found: NodeId },
    #[error("the peer presented our own identity (reflected handshake)")]
    Reflection,
    #[error("key exchange failed: {0}")]
    KeyExchange(&'static str),
    #[error("key confirmation failed (ML-KEM decapsulation or key schedule mismatch)")]
    KeyConfirmation,
    #[error("unexpected {got} message while {state}")]
    UnexpectedMessage {
        state: &'static str,
        got: &'static str,
    },
}

impl HandshakeError {
    /// A stable lowercase name, used as a metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            HandshakeError::Truncated => "truncated",
            HandshakeError::TooLarge(_) => "too_large",
            HandshakeError::Malformed(_) => "malformed",
            HandshakeError::UnsupportedVersion(_) => "unsupported_version",
            HandshakeError::UnsupportedSuite { .. } => "unsupported_suite",
            HandshakeError::Downgrade { .. } => "downgrade",
            HandshakeError::BadSignature => "bad_signature",
            HandshakeError::WrongIdentity { .. } => "wrong_identity",
            HandshakeError::Reflection => "reflection",
            HandshakeError::KeyExchange(_) => "key_exchange",
            HandshakeError::KeyConfirmation => "key_confirmation",
            HandshakeError::UnexpectedMessage { .. } => "unexpected_message",
        }
    }
}

impl From<KemFailure> for HandshakeError {
    fn from(failure: KemFailure) -> Self {
        HandshakeError::KeyExchange(failure.describe())
    }
}

/// Message 1, initiator to responder.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Init {
    /// Suites the initiator accepts, most preferred first.
    pub suites: Vec<String>,
    pub initiator: NodeId,
    /// Ephemeral X25519 public key.
    pub x25519: [u8; 32],
    /// Ephemeral ML-KEM-768 encapsulation key.
    pub mlkem_ek: Vec<u8>,
}

/// Message 2, responder to initiator.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    /// The suite the responder chose from the offer.
    pub suite: String,
    pub responder: NodeId,
    /// Ephemeral X25519 public key.
    pub x25519: [u8; 32],
    /// ML-KEM-768 ciphertext to the initiator's `mlkem_ek`.
    pub mlkem_ct: Vec<u8>,
    /// The responder's signature over `th2`.
    pub signature: WireSignature,
    /// Key confirmation over `th2`.
    pub confirm: [u8; 32],
}

/// Message 3, initiator to responder.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finish {
    /// The initiator's signature over `th3`.
    pub signature: WireSignature,
    /// Key confirmation over `th3`.
    pub confirm: [u8; 32],
}

impl fmt::Debug for Init {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Init")
            .field("suites", &self.suites)
            .field("initiator", &self.initiator)
            .field("mlkem_ek_len", &self.mlkem_ek.len())
            .finish()
    }
}

impl fmt::Debug for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Response")
            .field("suite", &self.suite)
            .field("responder", &self.responder)
            .field("mlkem_ct_len", &self.mlkem_ct.len())
            .finish()
    }
}

/// Any handshake message, as it travels: the version byte, then this enum in postcard.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum HandshakeMessage {
    Init(Init),
    Response(Response),
    Finish(Finish),
}

#[derive(Serialize)]
struct WireOut<'a> {
    version: u8,
    message: &'a HandshakeMessage,
}

#[derive(Deserialize)]
struct WireIn {
    version: u8,
    message: HandshakeMessage,
}

impl HandshakeMessage {
    /// A stable lowercase name.
    pub fn name(&self) -> &'static str {
        match self {
            HandshakeMessage::Init(_) => "init",
            HandshakeMessage::Response(_) => "response",
            HandshakeMessage::Finish(_) => "finish",
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        // Our own message types always serialize (no maps, no unsized fields).
        postcard::to_stdvec(&WireOut {
            version: HANDSHAKE_VERSION,
            message: self,
        })
        .unwrap_or_default()
    }

    /// Decodes and checks field lengths. Total: any byte string yields a message or a
    /// typed error, never a panic, and nothing is allocated beyond the input's size.
    pub fn decode(bytes: &[u8]) -> Result<HandshakeMessage, HandshakeError> {
        let Some(&version) = bytes.first() else {
            return Err(HandshakeError::Truncated);
        };
        if bytes.len() > MAX_HANDSHAKE_MESSAGE_BYTES {
            return Err(HandshakeError::TooLarge(bytes.len()));
        }
        // postcard writes a u8 as one raw byte, so the version can be refused before the
        // rest is parsed.
        if version != HANDSHAKE_VERSION {
            return Err(HandshakeError::UnsupportedVersion(version));
        }
        let (wire, rest): (WireIn, _) = postcard::take_from_bytes(bytes).map_err(|e| {
            if is_truncation(&e) {
                HandshakeError::Truncated
            } else {
                HandshakeError::Malformed(e.to_string())
            }
        })?;
        if !rest.is_empty() {
            return Err(HandshakeError::Malformed("trailing bytes".into()));
        }
        if wire.version != HANDSHAKE_VERSION {
            return Err(HandshakeError::UnsupportedVersion(wire.version));
        }
        wire.message.validate()?;
        Ok(wire.message)
    }

    fn validate(&self) -> Result<(), HandshakeError> {
        let malformed = |what: String| Err(HandshakeError::Malformed(what));
        match self {
            HandshakeMessage::Init(init) => {
                if init.suites.is_empty() || init.suites.len() > MAX_OFFERED_SUITES {
                    return malformed(format!(
                        "{} suites offered, expected 1 to {MAX_OFFERED_SUITES}",
                        init.suites.len()
                    ));
                }
                if init
                    .suites
                    .iter()
                    .any(|s| s.is_empty() || s.len() > MAX_SUITE_NAME_BYTES)
                {
                    return malformed("suite name empty or too long".into());
                }
                if init.mlkem_ek.len() != MLKEM768_ENCAPSULATION_KEY_LEN {
                    return malformed(format!(
                        "ML-KEM-768 encapsulation key of {} bytes, expected {MLKEM768_ENCAPSULATION_KEY_LEN}",
                        init.mlkem_ek.len()
                    ));
                }
            }
            HandshakeMessage::Response(response) => {
                if response.suite.is_empty() || response.suite.len() > MAX_SUITE_NAME_BYTES {
                    return malformed("suite name empty or too long".into());
                }
                if response.mlkem_ct.len() != MLKEM768_CIPHERTEXT_LEN {
                    return malformed(format!(
                        "ML-KEM-768 ciphertext of {} bytes, expected {MLKEM768_CIPHERTEXT_LEN}",
                        response.mlkem_ct.len()
                    ));
                }
            }
            HandshakeMessage::Finish(_) => {}
        }
        Ok(())
    }
}

/// What the handshake needs to know besides the keys.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HandshakeConfig {
    /// When set, a peer that authenticates as anyone else is refused.
    pub expected_peer: Option<NodeId>,
    /// Rekeying of the resulting session.
    pub rekey: RekeyPolicy,
}

impl HandshakeConfig {
    /// A configuration that accepts only `peer`.
    pub fn expecting(peer: NodeId) -> Self {
        HandshakeConfig {
            expected_peer: Some(peer),
            ..HandshakeConfig::default()
        }
    }
}

/// What one step of the handshake produced.
#[derive(Debug)]
pub struct Step {
    /// A message to send to the peer.
    pub reply: Option<Vec<u8>>,
    /// The session, once the handshake is complete on this side.
    pub session: Option<Session>,
}

struct InitiatorPending {
    x25519: EphemeralSecret,
    mlkem: ml_kem_768::DecapsulationKey,
    offered: Vec<String>,
    transcript: Transcript,
}

struct ResponderPending {
    prk: Zeroizing<[u8; 32]>,
    peer: NodeId,
    transcript: Transcript,
}

enum State {
    AwaitingInit,
    AwaitingResponse(Box<InitiatorPending>),
    AwaitingFinish(Box<ResponderPending>),
    Established,
    Failed,
}

impl State {
    fn name(&self) -> &'static str {
        match self {
            State::AwaitingInit => "awaiting init",
            State::AwaitingResponse(_) => "awaiting response",
            State::AwaitingFinish(_) => "awaiting finish",
            State::Established => "established",
            State::Failed => "failed",
        }
    }
}

/// One side of one handshake. Ephemeral secrets are zeroized on drop and never printed.
pub struct Handshake {
    role: Role,
    local: NodeId,
    config: HandshakeConfig,
    state: State,
}

impl fmt::Debug for Handshake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handshake")
            .field("role", &self.role)
            .field("local", &self.local)
            .field("state", &self.state.name())
            .finish()
    }
}

fn signed_bytes(domain: &[u8], transcript_hash: &[u8; 32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(domain.len() + 32);
    out.extend_from_slice(domain);
    out.extend_from_slice(transcript_hash);
    out
}

fn absorb_init(t: &mut Transcript, init: &Init) {
    t.absorb(b"version", &[HANDSHAKE_VERSION]);
    t.absorb(b"offered-suites", &(init.suites.len() as u64).to_be_bytes());
    for suite in &init.suites {
        t.absorb(b"offered-suite", suite.as_bytes());
    }
    t.absorb(b"initiator", init.initiator.as_bytes());
    t.absorb(b"initiator-x25519", &init.x25519);
    t.absorb(b"initiator-mlkem768-ek", &init.mlkem_ek);
}

fn absorb_response(
    t: &mut Transcript,
    suite: &str,
    responder: &NodeId,
    x25519: &[u8; 32],
    ct: &[u8],
) {
    t.absorb(b"suite", suite.as_bytes());
    t.absorb(b"responder", responder.as_bytes());
    t.absorb(b"responder-x25519", x25519);
    t.absorb(b"responder-mlkem768-ct", ct);
}

fn traffic_keys(
    prk: &[u8; 32],
    session_id: &[u8; 32],
) -> (Zeroizing<[u8; 32]>, Zeroizing<[u8; 32]>) {
    (
        expand(prk, &[INITIATOR_TO_RESPONDER, session_id]),
        expand(prk, &[RESPONDER_TO_INITIATOR, session_id]),
    )
}

impl Handshake {
    /// Starts a handshake as initiator: returns the state and the `Init` message to send.
    pub fn initiate<R: CryptoRng + RngCore + ?Sized>(
        identity: &Identity,
        config: HandshakeConfig,
        rng: &mut R,
    ) -> (Handshake, Vec<u8>) {
        let (x25519, x25519_public) = x25519_ephemeral(rng);
        let mlkem = mlkem_ephemeral(rng);
        let init = Init {
            suites: vec![SUITE.to_string()],
            initiator: identity.id(),
            x25519: x25519_public,
            mlkem_ek: mlkem_public(&mlkem),
        };
        let mut transcript = Transcript::new(PROTOCOL);
        absorb_init(&mut transcript, &init);
        let offered = init.suites.clone();
        let message = HandshakeMessage::Init(init).encode();
        let handshake = Handshake {
            role: Role::Initiator,
            local: identity.id(),
            config,
            state: State::AwaitingResponse(Box::new(InitiatorPending {
                x25519,
                mlkem,
                offered,
                transcript,
            })),
        };
        (handshake, message)
    }

    /// Prepares to answer a handshake as responder.
    pub fn respond(identity: &Identity, config: HandshakeConfig) -> Handshake {
        Handshake {
            role: Role::Responder,
            local: identity.id(),
            config,
            state: State::AwaitingInit,
        }
    }

    pub fn role(&self) -> Role {
        self.role
    }

    /// Whether this side has produced its session.
    pub fn is_established(&self) -> bool {
        matches!(self.state, State::Established)
    }

    /// Whether the handshake was aborted by an error.
    pub fn is_failed(&self) -> bool {
        matches!(self.state, State::Failed)
    }

    /// Takes one message from the peer. `identity` must be the one the handshake was
    /// created with; `rng` is drawn from only by the responder, `now` starts the session's
    /// rekey clock. On any error the handshake is aborted and refuses further messages.
    pub fn handle_message<R: CryptoRng + RngCore + ?Sized>(
        &mut self,
        identity: &Identity,
        now: Millis,
        message: &[u8],
        rng: &mut R,
    ) -> Result<Step, HandshakeError> {
        let state = std::mem::replace(&mut self.state, State::Failed);
        let message = HandshakeMessage::decode(message)?;
        match (state, message) {
            (State::AwaitingInit, HandshakeMessage::Init(init)) => {
                self.on_init(identity, init, rng)
            }
            (State::AwaitingResponse(pending), HandshakeMessage::Response(response)) => {
                self.on_response(*pending, identity, now, response)
            }
            (State::AwaitingFinish(pending), HandshakeMessage::Finish(finish)) => {
                self.on_finish(*pending, now, finish)
            }
            (state, message) => Err(HandshakeError::UnexpectedMessage {
                state: state.name(),
                got: message.name(),
            }),
        }
    }

    fn check_peer(&self, peer: NodeId) -> Result<(), HandshakeError> {
        if peer == self.local {
            return Err(HandshakeError::Reflection);
        }
        match self.config.expected_peer {
            Some(expected) if expected != peer => Err(HandshakeError::WrongIdentity {
                expected,
                found: peer,
            }),
            _ => Ok(()),
        }
    }

    fn on_init<R: CryptoRng + RngCore + ?Sized>(
        &mut self,
        identity: &Identity,
        init: Init,
        rng: &mut R,
    ) -> Result<Step, HandshakeError> {
        if !init.suites.iter().any(|s| s == SUITE) {
            return Err(HandshakeError::UnsupportedSuite {
                offered: init.suites,
            });
        }
        self.check_peer(init.initiator)?;
        let (mlkem_ct, mlkem_secret) = mlkem_encapsulate(&init.mlkem_ek, rng)?;
        let (x25519, x25519_public) = x25519_ephemeral(rng);
        let x25519_secret = x25519_ephemeral_agree(x25519, &init.x25519)?;

        let mut transcript = Transcript::new(PROTOCOL);
        absorb_init(&mut transcript, &init);
        absorb_response(
            &mut transcript,
            SUITE,
            &self.local,
            &x25519_public,
            &mlkem_ct,
        );
        let th2 = transcript.hash();
        let prk = combine(&th2, &x25519_secret, &mlkem_secret);
        let signature = identity.sign(&signed_bytes(RESPONDER_SIGNATURE, &th2));
        let confirm = *expand(&prk, &[RESPONDER_CONFIRM, &th2]);
        transcript.absorb(b"responder-signature", &signature);
        transcript.absorb(b"responder-confirm", &confirm);

        let reply = HandshakeMessage::Response(Response {
            suite: SUITE.to_string(),
            responder: self.local,
            x25519: x25519_public,
            mlkem_ct,
            signature: WireSignature::from_bytes(&signature),
            confirm,
        })
        .encode();
        self.state = State::AwaitingFinish(Box::new(ResponderPending {
            prk,
            peer: init.initiator,
            transcript,
        }));
        Ok(Step {
            reply: Some(reply),
            session: None,
        })
    }

    fn on_response(
        &mut self,
        pending: InitiatorPending,
        identity: &Identity,
        now: Millis,
        response: Response,
    ) -> Result<Step, HandshakeError> {
        let InitiatorPending {
            x25519,
            mlkem,
            offered,
            mut transcript,
        } = pending;
        if response.suite != SUITE || !offered.contains(&response.suite) {
            return Err(HandshakeError::Downgrade {
                offered,
                chosen: response.suite,
            });
        }
        self.check_peer(response.responder)?;
        absorb_response(
            &mut transcript,
            &response.suite,
            &response.responder,
            &response.x25519,
            &response.mlkem_ct,
        );
        let th2 = transcript.hash();
        if !verify_signature(
            &response.responder,
            &signed_bytes(RESPONDER_SIGNATURE, &th2),
            &response.signature.to_bytes(),
        ) {
            return Err(HandshakeError::BadSignature);
        }
        let x25519_secret = x25519_ephemeral_agree(x25519, &response.x25519)?;
        let mlkem_secret = mlkem_decapsulate(&mlkem, &response.mlkem_ct)?;
        let prk = combine(&th2, &x25519_secret, &mlkem_secret);
        if !ct_eq(
            expand(&prk, &[RESPONDER_CONFIRM, &th2]).as_ref(),
            &response.confirm,
        ) {
            return Err(HandshakeError::KeyConfirmation);
        }
        transcript.absorb(b"responder-signature", &response.signature.to_bytes());
        transcript.absorb(b"responder-confirm", &response.confirm);
        let th3 = transcript.hash();
        let signature = identity.sign(&signed_bytes(INITIATOR_SIGNATURE, &th3));
        let confirm = *expand(&prk, &[INITIATOR_CONFIRM, &th3]);
        transcript.absorb(b"initiator-signature", &signature);
        transcript.absorb(b"initiator-confirm", &confirm);
        let session_id = transcript.hash();
        let (i2r, r2i) = traffic_keys(&prk, &session_id);

        let reply = HandshakeMessage::Finish(Finish {
            signature: WireSignature::from_bytes(&signature),
            confirm,
        })
        .encode();
        let session = Session::new(
            Role::Initiator,
            response.responder,
            session_id,
            i2r,
            r2i,
            self.config.rekey,
            now,
        );
        self.state = State::Established;
        Ok(Step {
            reply: Some(reply),
            session: Some(session),
        })
    }

    fn on_finish(
        &mut self,
        pending: ResponderPending,
        now: Millis,
        finish: Finish,
    ) -> Result<Step, HandshakeError> {
        let ResponderPending {
            prk,
            peer,
            mut transcript,
        } = pending;
        let th3 = transcript.hash();
        if !verify_signature(
            &peer,
            &signed_bytes(INITIATOR_SIGNATURE, &th3),
            &finish.signature.to_bytes(),
        ) {
            return Err(HandshakeError::BadSignature);
        }
        if !ct_eq(
            expand(&prk, &[INITIATOR_CONFIRM, &th3]).as_ref(),
            &finish.confirm,
        ) {
            return Err(HandshakeError::KeyConfirmation);
        }
        transcript.absorb(b"initiator-signature", &finish.signature.to_bytes());
        transcript.absorb(b"initiator-confirm", &finish.confirm);
        let session_id = transcript.hash();
        let (i2r, r2i) = traffic_keys(&prk, &session_id);
        let session = Session::new(
            Role::Responder,
            peer,
            session_id,
            r2i,
            i2r,
            self.config.rekey,
            now,
        );
        self.state = State::Established;
        Ok(Step {
            reply: None,
            session: Some(session),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    fn alice() -> Identity {
        Identity::from_seed([1; 32])
    }
    fn bob() -> Identity {
        Identity::from_seed([2; 32])
    }
    fn mallory() -> Identity {
        Identity::from_seed([66; 32])
    }
    fn rng(seed: u64) -> ChaCha20Rng {
        ChaCha20Rng::seed_from_u64(seed)
    }

    fn reply(step: Result<Step, HandshakeError>) -> Vec<u8> {
        step.expect("step").reply.expect("a reply")
    }

    fn run(
        a: &Identity,
        a_config: HandshakeConfig,
        b: &Identity,
        b_config: HandshakeConfig,
    ) -> Result<(Session, Session), HandshakeError> {
        let mut r = rng(1);
        let (mut init, m1) = Handshake::initiate(a, a_config, &mut r);
        let mut resp = Handshake::respond(b, b_config);
        let m2 = resp
            .handle_message(b, Millis(10), &m1, &mut r)?
            .reply
            .expect("response");
        let step = init.handle_message(a, Millis(20), &m2, &mut r)?;
        let a_session = step.session.expect("initiator session");
        let m3 = step.reply.expect("finish");
        let b_session = resp
            .handle_message(b, Millis(30), &m3, &mut r)?
            .session
            .expect("responder session");
        assert!(init.is_established() && resp.is_established());
        Ok((a_session, b_session))
    }

    /// Alice's `Init` and a responder state for Bob, ready to tamper with.
    fn init_message(seed: u64) -> (Handshake, Vec<u8>) {
        Handshake::initiate(&alice(), HandshakeConfig::default(), &mut rng(seed))
    }

    fn decode_response(bytes: &[u8]) -> Response {
        match HandshakeMessage::decode(bytes).expect("decodes") {
            HandshakeMessage::Response(r) => r,
            other => panic!("not a response: {other:?}"),
        }
    }

    fn decode_init(bytes: &[u8]) -> Init {
        match HandshakeMessage::decode(bytes).expect("decodes") {
            HandshakeMessage::Init(i) => i,
            other => panic!("not an init: {other:?}"),
        }
    }

    #[test]
    fn round_trip_gives_matching_sessions() {
        let (mut a, mut b) = run(
            &alice(),
            HandshakeConfig::expecting(bob().id()),
            &bob(),
            HandshakeConfig::expecting(alice().id()),
        )
        .expect("handshake");
        assert_eq!(a.id(), b.id());
        assert_eq!(a.peer(), bob().id());
        assert_eq!(b.peer(), alice().id());
        assert_eq!((a.role(), b.role()), (Role::Initiator, Role::Responder));
        assert_eq!(a.send_key_for_test(), b.recv_key_for_test());
        assert_eq!(b.send_key_for_test(), a.recv_key_for_test());
        assert_ne!(a.send_key_for_test(), a.recv_key_for_test());
        let f = a.seal(Millis(40), b"hello bob", b"").expect("seal");
        assert_eq!(b.open(&f, b"").expect("open"), b"hello bob");
        let g = b.seal(Millis(40), b"hello alice", b"").expect("seal");
        assert_eq!(a.open(&g, b"").expect("open"), b"hello alice");
    }

    #[test]
    fn message_sizes_are_within_the_limit() {
        let mut r = rng(2);
        let (mut init, m1) = Handshake::initiate(&alice(), HandshakeConfig::default(), &mut r);
        let mut resp = Handshake::respond(&bob(), HandshakeConfig::default());
        let m2 = reply(resp.handle_message(&bob(), Millis::ZERO, &m1, &mut r));
        let m3 = reply(init.handle_message(&alice(), Millis::ZERO, &m2, &mut r));
        for m in [&m1, &m2, &m3] {
            assert!(m.len() <= MAX_HANDSHAKE_MESSAGE_BYTES, "{}", m.len());
        }
        assert!(m1.len() > MLKEM768_ENCAPSULATION_KEY_LEN);
        assert!(m2.len() > MLKEM768_CIPHERTEXT_LEN);
    }

    #[test]
    fn different_randomness_gives_different_sessions() {
        let a1 = run(
            &alice(),
            HandshakeConfig::default(),
            &bob(),
            HandshakeConfig::default(),
        )
        .expect("one")
        .0;
        let mut r = rng(99);
        let (mut init, m1) = Handshake::initiate(&alice(), HandshakeConfig::default(), &mut r);
        let mut resp = Handshake::respond(&bob(), HandshakeConfig::default());
        let m2 = reply(resp.handle_message(&bob(), Millis::ZERO, &m1, &mut r));
        let a2 = init
            .handle_message(&alice(), Millis::ZERO, &m2, &mut r)
            .expect("two")
            .session
            .expect("session");
        assert_ne!(a1.id(), a2.id());
        assert_ne!(a1.send_key_for_test(), a2.send_key_for_test());
    }

    #[test]
    fn mitm_answering_with_its_own_identity_is_rejected_by_the_initiator() {
        let mut r = rng(3);
        let (mut init, m1) =
            Handshake::initiate(&alice(), HandshakeConfig::expecting(bob().id()), &mut r);
        let mut evil = Handshake::respond(&mallory(), HandshakeConfig::default());
        let m2 = reply(evil.handle_message(&mallory(), Millis::ZERO, &m1, &mut r));
        assert_eq!(
            init.handle_message(&alice(), Millis::ZERO, &m2, &mut r)
                .err(),
            Some(HandshakeError::WrongIdentity {
                expected: bob().id(),
                found: mallory().id()
            })
        );
        assert!(init.is_failed());
    }

    #[test]
    fn without_an_expected_peer_the_session_names_whoever_authenticated() {
        let (a, _) = run(
            &alice(),
            HandshakeConfig::default(),
            &mallory(),
            HandshakeConfig::default(),
        )
        .expect("handshake with mallory");
        assert_eq!(a.peer(), mallory().id());
    }

    #[test]
    fn mitm_initiating_with_its_own_identity_is_rejected_by_the_responder() {
        let mut r = rng(4);
        let (_, m1) = Handshake::initiate(&mallory(), HandshakeConfig::default(), &mut r);
        let mut resp = Handshake::respond(&bob(), HandshakeConfig::expecting(alice().id()));
        assert_eq!(
            resp.handle_message(&bob(), Millis::ZERO, &m1, &mut r).err(),
            Some(HandshakeError::WrongIdentity {
                expected: alice().id(),
                found: mallory().id()
            })
        );
    }

    #[test]
    fn mitm_claiming_the_responders_identity_fails_the_signature() {
        let mut r = rng(5);
        let (mut init, m1) =
            Handshake::initiate(&alice(), HandshakeConfig::expecting(bob().id()), &mut r);
        let mut evil = Handshake::respond(&mallory(), HandshakeConfig::default());
        let mut response = decode_response(&reply(evil.handle_message(
            &mallory(),
            Millis::ZERO,
            &m1,
            &mut r,
        )));
        response.responder = bob().id();
        let forged = HandshakeMessage::Response(response).encode();
        assert_eq!(
            init.handle_message(&alice(), Millis::ZERO, &forged, &mut r)
                .err(),
            Some(HandshakeError::BadSignature)
        );
    }

    #[test]
    fn mitm_claiming_the_initiators_identity_fails_the_signature() {
        // Mallory relays Bob's genuine Response to Alice but swaps in her own ephemeral keys
        // towards Bob, claiming to be Alice.
        let mut r = rng(6);
        let (mut mallory_init, mallory_m1) =
            Handshake::initiate(&mallory(), HandshakeConfig::default(), &mut r);
        let mut as_alice = decode_init(&mallory_m1);
        as_alice.initiator = alice().id();
        let mut resp = Handshake::respond(&bob(), HandshakeConfig::expecting(alice().id()));
        let m2 = reply(resp.handle_message(
            &bob(),
            Millis::ZERO,
            &HandshakeMessage::Init(as_alice.clone()).encode(),
            &mut r,
        ));
        // Mallory holds the ephemeral secrets, so she can decapsulate and confirm keys; give
        // her state the transcript Bob saw. What she cannot do is sign as Alice.
        if let State::AwaitingResponse(pending) = &mut mallory_init.state {
            let mut t = Transcript::new(PROTOCOL);
            absorb_init(&mut t, &as_alice);
            pending.transcript = t;
        }
        let m3 = reply(mallory_init.handle_message(&mallory(), Millis::ZERO, &m2, &mut r));
        assert_eq!(
            resp.handle_message(&bob(), Millis::ZERO, &m3, &mut r).err(),
            Some(HandshakeError::BadSignature)
        );
    }

    #[test]
    fn re_signing_the_response_as_another_identity_fails_key_confirmation() {
        // Unknown key share: Mallory takes Bob's Response, puts her own id in it and signs
        // the resulting transcript herself. Her signature is valid, but the transcript (and
        // so the key) differs from Bob's, and she cannot recompute Bob's confirmation tag.
        let mut r = rng(20);
        let (mut init, m1) = init_message(20);
        let mut resp = Handshake::respond(&bob(), HandshakeConfig::default());
        let mut response = decode_response(&reply(resp.handle_message(
            &bob(),
            Millis::ZERO,
            &m1,
            &mut r,
        )));
        response.responder = mallory().id();
        let mut t = Transcript::new(PROTOCOL);
        absorb_init(&mut t, &decode_init(&m1));
        absorb_response(
            &mut t,
            &response.suite,
            &response.responder,
            &response.x25519,
            &response.mlkem_ct,
        );
        response.signature = WireSignature::from_bytes(
            &mallory().sign(&signed_bytes(RESPONDER_SIGNATURE, &t.hash())),
        );
        assert_eq!(
            init.handle_message(
                &alice(),
                Millis::ZERO,
                &HandshakeMessage::Response(response).encode(),
                &mut r
            )
            .err(),
            Some(HandshakeError::KeyConfirmation)
        );
    }

    #[test]
    fn substituted_ephemeral_keys_break_the_transcript() {
        let mut r = rng(7);
        let (mut init, m1) = init_message(7);
        let (_, other) = Handshake::initiate(&mallory(), HandshakeConfig::default(), &mut rng(70));
        let mut changed = decode_init(&m1);
        let other = decode_init(&other);
        changed.x25519 = other.x25519;
        changed.mlkem_ek = other.mlkem_ek;
        let mut resp = Handshake::respond(&bob(), HandshakeConfig::default());
        let m2 = reply(resp.handle_message(
            &bob(),
            Millis::ZERO,
            &HandshakeMessage::Init(changed).encode(),
            &mut r,
        ));
        assert_eq!(
            init.handle_message(&alice(), Millis::ZERO, &m2, &mut r)
                .err(),
            Some(HandshakeError::BadSignature)
        );
    }

    #[test]
    fn truncated_messages_are_rejected_at_every_length() {
        let mut r = rng(8);
        let (mut init, m1) = init_message(8);
        let mut resp = Handshake::respond(&bob(), HandshakeConfig::default());
        let m2 = reply(resp.handle_message(&bob(), Millis::ZERO, &m1, &mut r));
        let m3 = reply(init.handle_message(&alice(), Millis::ZERO, &m2, &mut r));
        for m in [&m1, &m2, &m3] {
            for len in 0..m.len() {
                let err = HandshakeMessage::decode(&m[..len]).expect_err("prefix must not decode");
                assert!(
                    matches!(
                        err,
                        HandshakeError::Truncated | HandshakeError::Malformed(_)
                    ),
                    "length {len}: {err:?}"
                );
            }
        }
        // And through the state machines, which abort.
        let mut resp = Handshake::respond(&bob(), HandshakeConfig::default());
        assert_eq!(
            resp.handle_message(&bob(), Millis::ZERO, &m1[..m1.len() - 1], &mut r)
                .err(),
            Some(HandshakeError::Truncated)
        );
        assert!(resp.is_failed());
        let (mut init, m1) = init_message(8);
        let mut resp = Handshake::respond(&bob(), HandshakeConfig::default());
        let m2 = reply(resp.handle_message(&bob(), Millis::ZERO, &m1, &mut r));
        assert_eq!(
            init.handle_message(&alice(), Millis::ZERO, &m2[..700], &mut r)
                .err(),
            Some(HandshakeError::Truncated)
        );
        let (mut init, m1) = init_message(8);
        let mut resp = Handshake::respond(&bob(), HandshakeConfig::default());
        let m2 = reply(resp.handle_message(&bob(), Millis::ZERO, &m1, &mut r));
        let m3 = reply(init.handle_message(&alice(), Millis::ZERO, &m2, &mut r));
        assert_eq!(
            resp.handle_message(&bob(), Millis::ZERO, &m3[..m3.len() - 1], &mut r)
                .err(),
            Some(HandshakeError::Truncated)
        );
    }

    #[test]
    fn an_offer_without_our_suite_is_refused() {
        let mut r = rng(9);
        let (_, m1) = init_message(9);
        let mut weak = decode_init(&m1);
        weak.suites = vec!["x25519/chacha20poly1305".into()];
        let mut resp = Handshake::respond(&bob(), HandshakeConfig::default());
        assert_eq!(
            resp.handle_message(
                &bob(),
                Millis::ZERO,
                &HandshakeMessage::Init(weak).encode(),
                &mut r
            )
            .err(),
            Some(HandshakeError::UnsupportedSuite {
                offered: vec!["x25519/chacha20poly1305".into()]
            })
        );
    }

    #[test]
    fn a_downgraded_answer_is_detected() {
        let mut r = rng(10);
        let (mut init, m1) = init_message(10);
        let mut resp = Handshake::respond(&bob(), HandshakeConfig::default());
        let mut response = decode_response(&reply(resp.handle_message(
            &bob(),
            Millis::ZERO,
            &m1,
            &mut r,
        )));
        response.suite = "x25519/chacha20poly1305".into();
        assert_eq!(
            init.handle_message(
                &alice(),
                Millis::ZERO,
                &HandshakeMessage::Response(response).encode(),
                &mut r
            )
            .err(),
            Some(HandshakeError::Downgrade {
                offered: vec![SUITE.into()],
                chosen: "x25519/chacha20poly1305".into()
            })
        );
    }

    #[test]
    fn a_rewritten_offer_is_detected_through_the_transcript() {
        // An attacker adds a weaker suite to Alice's offer; Bob still picks ours, but the
        // offer he signed is not the one Alice made.
        let mut r = rng(11);
        let (mut init, m1) = init_message(11);
        let mut changed = decode_init(&m1);
        changed.suites.insert(0, "x25519/chacha20poly1305".into());
        let mut resp = Handshake::respond(&bob(), HandshakeConfig::default());
        let m2 = reply(resp.handle_message(
            &bob(),
            Millis::ZERO,
            &HandshakeMessage::Init(changed).encode(),
            &mut r,
        ));
        assert_eq!(decode_response(&m2).suite, SUITE);
        assert_eq!(
            init.handle_message(&alice(), Millis::ZERO, &m2, &mut r)
                .err(),
            Some(HandshakeError::BadSignature)
        );
    }

    #[test]
    fn failed_key_confirmation_is_reported() {
        let mut r = rng(12);
        let (mut init, m1) = init_message(12);
        let mut resp = Handshake::respond(&bob(), HandshakeConfig::default());
        let m2 = reply(resp.handle_message(&bob(), Millis::ZERO, &m1, &mut r));
        let mut response = decode_response(&m2);
        response.confirm[0] ^= 1;
        assert_eq!(
            init.handle_message(
                &alice(),
                Millis::ZERO,
                &HandshakeMessage::Response(response).encode(),
                &mut r
            )
            .err(),
            Some(HandshakeError::KeyConfirmation)
        );

        let (mut init, m1) = init_message(12);
        let mut resp = Handshake::respond(&bob(), HandshakeConfig::default());
        let m2 = reply(resp.handle_message(&bob(), Millis::ZERO, &m1, &mut r));
        let m3 = reply(init.handle_message(&alice(), Millis::ZERO, &m2, &mut r));
        let HandshakeMessage::Finish(mut finish) = HandshakeMessage::decode(&m3).expect("finish")
        else {
            panic!("not a finish");
        };
        finish.confirm[31] ^= 0x80;
        assert_eq!(
            resp.handle_message(
                &bob(),
                Millis::ZERO,
                &HandshakeMessage::Finish(finish).encode(),
                &mut r
            )
            .err(),
            Some(HandshakeError::KeyConfirmation)
        );
    }

    #[test]
    fn a_tampered_finish_signature_is_rejected() {
        let mut r = rng(13);
        let (mut init, m1) = init_message(13);
        let mut resp = Handshake::respond(&bob(), HandshakeConfig::default());
        let m2 = reply(resp.handle_message(&bob(), Millis::ZERO, &m1, &mut r));
        let m3 = reply(init.handle_message(&alice(), Millis::ZERO, &m2, &mut r));
        let HandshakeMessage::Finish(mut finish) = HandshakeMessage::decode(&m3).expect("finish")
        else {
            panic!("not a finish");
        };
        finish.signature.s[3] ^= 1;
        assert_eq!(
            resp.handle_message(
                &bob(),
                Millis::ZERO,
                &HandshakeMessage::Finish(finish).encode(),
                &mut r
            )
            .err(),
            Some(HandshakeError::BadSignature)
        );
    }

    #[test]
    fn messages_out_of_order_are_unexpected() {
        let mut r = rng(14);
        let (mut init, m1) = init_message(14);
        // The initiator is sent its own Init back.
        assert_eq!(
            init.handle_message(&alice(), Millis::ZERO, &m1, &mut r)
                .err(),
            Some(HandshakeError::UnexpectedMessage {
                state: "awaiting response",
                got: "init"
            })
        );
        // A failed handshake stays failed.
        assert_eq!(
            init.handle_message(&alice(), Millis::ZERO, &m1, &mut r)
                .err(),
            Some(HandshakeError::UnexpectedMessage {
                state: "failed",
                got: "init"
            })
        );
        let finish = HandshakeMessage::Finish(Finish {
            signature: WireSignature::from_bytes(&[0; 64]),
            confirm: [0; 32],
        })
        .encode();
        let mut resp = Handshake::respond(&bob(), HandshakeConfig::default());
        assert_eq!(
            resp.handle_message(&bob(), Millis::ZERO, &finish, &mut r)
                .err(),
            Some(HandshakeError::UnexpectedMessage {
                state: "awaiting init",
                got: "finish"
            })
        );
        // A second Init after the first has been answered.
        let mut resp = Handshake::respond(&bob(), HandshakeConfig::default());
        reply(resp.handle_message(&bob(), Millis::ZERO, &m1, &mut r));
        assert_eq!(
            resp.handle_message(&bob(), Millis::ZERO, &m1, &mut r).err(),
            Some(HandshakeError::UnexpectedMessage {
                state: "awaiting finish",
                got: "init"
            })
        );
    }

    #[test]
    fn reflected_handshakes_and_degenerate_keys_are_refused() {
        let mut r = rng(15);
        let (_, m1) = init_message(15);
        let mut me = Handshake::respond(&alice(), HandshakeConfig::default());
        assert_eq!(
            me.handle_message(&alice(), Millis::ZERO, &m1, &mut r).err(),
            Some(HandshakeError::Reflection)
        );

        let mut zero = decode_init(&m1);
        zero.x25519 = [0; 32];
        let mut resp = Handshake::respond(&bob(), HandshakeConfig::default());
        assert_eq!(
            resp.handle_message(
                &bob(),
                Millis::ZERO,
                &HandshakeMessage::Init(zero).encode(),
                &mut r
            )
            .err(),
            Some(HandshakeError::KeyExchange(
                KemFailure::X25519NonContributory.describe()
            ))
        );

        // Coefficients of 0xfff are >= q: FIPS 203's modulus check refuses the key.
        let mut bad_ek = decode_init(&m1);
        bad_ek.mlkem_ek = vec![0xff; MLKEM768_ENCAPSULATION_KEY_LEN];
        let mut resp = Handshake::respond(&bob(), HandshakeConfig::default());
        assert_eq!(
            resp.handle_message(
                &bob(),
                Millis::ZERO,
                &HandshakeMessage::Init(bad_ek).encode(),
                &mut r
            )
            .err(),
            Some(HandshakeError::KeyExchange(
                KemFailure::InvalidEncapsulationKey.describe()
            ))
        );
    }

    #[test]
    fn unknown_versions_oversized_and_wrongly_sized_fields_are_typed_errors() {
        let (_, m1) = init_message(16);
        let mut v = m1.clone();
        v[0] = 2;
        assert_eq!(
            HandshakeMessage::decode(&v),
            Err(HandshakeError::UnsupportedVersion(2))
        );
        let big = vec![HANDSHAKE_VERSION; MAX_HANDSHAKE_MESSAGE_BYTES + 1];
        assert_eq!(
            HandshakeMessage::decode(&big),
            Err(HandshakeError::TooLarge(MAX_HANDSHAKE_MESSAGE_BYTES + 1))
        );
        let mut short = decode_init(&m1);
        short.mlkem_ek.truncate(100);
        assert!(matches!(
            HandshakeMessage::decode(&HandshakeMessage::Init(short).encode()),
            Err(HandshakeError::Malformed(_))
        ));
        let mut many = decode_init(&m1);
        many.suites = vec![SUITE.into(); MAX_OFFERED_SUITES + 1];
        assert!(matches!(
            HandshakeMessage::decode(&HandshakeMessage::Init(many).encode()),
            Err(HandshakeError::Malformed(_))
        ));
        let mut trailing = m1.clone();
        trailing.push(0);
        assert!(matches!(
            HandshakeMessage::decode(&trailing),
            Err(HandshakeError::Malformed(_))
        ));
    }

    #[test]
    fn debug_never_shows_secrets() {
        let (init, _) = init_message(17);
        let shown = format!("{init:?}");
        assert!(shown.contains("awaiting response"), "{shown}");
        assert!(!shown.contains("x25519"), "{shown}");
    }

    proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = HandshakeMessage::decode(&bytes);
            let mut versioned = bytes;
            versioned.insert(0, HANDSHAKE_VERSION);
            let _ = HandshakeMessage::decode(&versioned);
        }

        #[test]
        fn arbitrary_bytes_never_advance_a_handshake(
            bytes in proptest::collection::vec(any::<u8>(), 0..2048),
            variant in 0u8..3,
        ) {
            let mut r = rng(18);
            let mut input = vec![HANDSHAKE_VERSION, variant];
            input.extend_from_slice(&bytes);
            let mut resp = Handshake::respond(&bob(), HandshakeConfig::default());
            prop_assert!(resp.handle_message(&bob(), Millis::ZERO, &input, &mut r).is_err());
            let (mut init, _) = init_message(18);
            prop_assert!(init.handle_message(&alice(), Millis::ZERO, &input, &mut r).is_err());
        }

        /// Any single changed byte in the Response makes the initiator refuse it.
        #[test]
        fn any_changed_response_byte_is_refused(index in any::<prop::sample::Index>(), flip in 1u8..=255) {
            let mut r = rng(19);
            let (mut init, m1) = init_message(19);
            let mut resp = Handshake::respond(&bob(), HandshakeConfig::default());
            let mut m2 = reply(resp.handle_message(&bob(), Millis::ZERO, &m1, &mut r));
            let i = index.index(m2.len());
            m2[i] ^= flip;
            prop_assert!(init.handle_message(&alice(), Millis::ZERO, &m2, &mut r).is_err());
        }
    }
}
