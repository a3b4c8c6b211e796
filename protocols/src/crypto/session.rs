//! An established session: per-direction ChaCha20-Poly1305 keys, counter nonces, a
//! sliding replay window and deterministic rekeying.
//!
//! A frame is `version (1) | epoch (varint) | counter (varint) | ciphertext || tag`. The
//! nonce is `epoch (u32 BE) || counter (u64 BE)`, and the header, as sent, is
//! authenticated as associated data ahead of the caller's own `aad`. Varints (LEB128, the
//! shortest form only) make the header 4 or 5 bytes for most of a session's life instead
//! of 13: at 1000 nodes a node seals about a hundred small frames a second, and the fixed
//! header was a sixth of each beacon.
//!
//! The counter is per direction, starts at 0 and never resets, so one replay window covers
//! the whole session. The key changes in *epochs*: the sender moves to epoch `e + 1` after
//! [`RekeyPolicy::max_messages`] frames or [`RekeyPolicy::max_age_ms`] in epoch `e`,
//! whichever comes first, and says so in the header. Both sides derive the epoch `e + 1`
//! key from the epoch `e` key with HKDF, a one-way step, and forget the old key: whoever
//! steals a session's current keys cannot read what was sent under earlier epochs. The
//! receiver keeps the immediately previous epoch's key too, so frames reordered across a
//! boundary still open.

use std::fmt;

use zeroize::Zeroizing;

use super::aead::{self, NONCE_LEN, TAG_LEN};
use super::handshake::Role;
use super::hybrid::expand;
use crate::{Millis, NodeId};

/// The frame format version this build writes and accepts.
pub const FRAME_VERSION: u8 = 2;
/// Most header bytes ahead of the ciphertext: version, epoch and counter as varints.
pub const MAX_FRAME_HEADER_LEN: usize = 1 + 5 + 10;
/// Largest plaintext one frame carries (the envelope limit).
pub const MAX_FRAME_PLAINTEXT: usize = 1 << 20;
/// Largest frame accepted from the network.
pub const MAX_FRAME_BYTES: usize = MAX_FRAME_HEADER_LEN + MAX_FRAME_PLAINTEXT + TAG_LEN;
/// Width of the replay window in counters.
pub const REPLAY_WINDOW: u64 = 1024;
/// How many epochs ahead of the current one a frame may be (all frames of the epochs in
/// between lost) and still be opened.
pub const MAX_EPOCH_SKIP: u32 = 16;

const REKEY_LABEL: &[u8] = b"x0tta6bl4/crypto/session/v1/rekey";

/// When a sender moves to a new key epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RekeyPolicy {
    /// Frames sent under one key before the next; at least 1.
    pub max_messages: u64,
    /// Milliseconds one key is used for before the next.
    pub max_age_ms: u64,
}

impl Default for RekeyPolicy {
    /// WireGuard's figure for time (two minutes); a million frames per key.
    fn default() -> Self {
        RekeyPolicy {
            max_messages: 1 << 20,
            max_age_ms: 120_000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    #[error("frame of {0} bytes is shorter than a header and tag")]
    Truncated(usize),
    #[error("frame of {0} bytes exceeds the limit of {MAX_FRAME_BYTES}")]
    TooLarge(usize),
    #[error("unknown frame version {0} (this build speaks {FRAME_VERSION})")]
    UnsupportedVersion(u8),
    #[error("frame header is malformed (overlong or overflowing varint)")]
    MalformedHeader,
    #[error("plaintext of {0} bytes exceeds the limit of {MAX_FRAME_PLAINTEXT}")]
    PlaintextTooLarge(usize),
    #[error("frame {0} was already received (replay)")]
    Replayed(u64),
    #[error("frame {counter} is older than the replay window (newest {newest})")]
    TooOld { counter: u64, newest: u64 },
    #[error("frame is from key epoch {epoch}, whose key is gone (current {current})")]
    StaleEpoch { epoch: u32, current: u32 },
    #[error("frame is from key epoch {epoch}, too far ahead of {current}")]
    EpochTooFarAhead { epoch: u32, current: u32 },
    #[error("frame failed authentication (tampered, wrong key or wrong associated data)")]
    AuthenticationFailed,
    #[error("session has used up its nonces; run a new handshake")]
    Exhausted,
}

impl SessionError {
    /// A stable lowercase name, used as a metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            SessionError::Truncated(_) => "truncated",
            SessionError::TooLarge(_) => "too_large",
            SessionError::UnsupportedVersion(_) => "unsupported_version",
            SessionError::MalformedHeader => "malformed_header",
            SessionError::PlaintextTooLarge(_) => "plaintext_too_large",
            SessionError::Replayed(_) => "replayed",
            SessionError::TooOld { .. } => "too_old",
            SessionError::StaleEpoch { .. } => "stale_epoch",
            SessionError::EpochTooFarAhead { .. } => "epoch_too_far_ahead",
            SessionError::AuthenticationFailed => "authentication_failed",
            SessionError::Exhausted => "exhausted",
        }
    }
}

/// A decoded (not yet authenticated) frame.
#[derive(Clone, PartialEq, Eq)]
pub struct Frame {
    pub epoch: u32,
    pub counter: u64,
    /// Ciphertext followed by the 16-byte tag.
    pub ciphertext: Vec<u8>,
}

impl fmt::Debug for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Frame")
            .field("epoch", &self.epoch)
            .field("counter", &self.counter)
            .field("ciphertext_len", &self.ciphertext.len())
            .finish()
    }
}

impl Frame {
    fn header(epoch: u32, counter: u64) -> Vec<u8> {
        let mut h = Vec::with_capacity(MAX_FRAME_HEADER_LEN);
        h.push(FRAME_VERSION);
        put_varint(&mut h, u64::from(epoch));
        put_varint(&mut h, counter);
        h
    }

    fn nonce(epoch: u32, counter: u64) -> [u8; NONCE_LEN] {
        let mut n = [0u8; NONCE_LEN];
        n[..4].copy_from_slice(&epoch.to_be_bytes());
        n[4..].copy_from_slice(&counter.to_be_bytes());
        n
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Frame::header(self.epoch, self.counter);
        out.extend_from_slice(&self.ciphertext);
        out
    }

    /// Splits a frame into header fields and ciphertext. Total: any byte string gives a
    /// frame or a typed error.
    pub fn decode(bytes: &[u8]) -> Result<Frame, SessionError> {
        if bytes.len() > MAX_FRAME_BYTES {
            return Err(SessionError::TooLarge(bytes.len()));
        }
        let truncated = || SessionError::Truncated(bytes.len());
        let (&version, rest) = bytes.split_first().ok_or_else(truncated)?;
        if version != FRAME_VERSION {
            return Err(SessionError::UnsupportedVersion(version));
        }
        let (epoch, rest) = take_varint(rest).ok_or_else(truncated)??;
        let epoch = u32::try_from(epoch).map_err(|_| SessionError::MalformedHeader)?;
        let (counter, rest) = take_varint(rest).ok_or_else(truncated)??;
        if rest.len() < TAG_LEN {
            return Err(truncated());
        }
        Ok(Frame {
            epoch,
            counter,
            ciphertext: rest.to_vec(),
        })
    }
}

/// Appends `value` as an unsigned LEB128 varint.
fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push(value as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Reads an unsigned LEB128 varint off the front of `bytes`: `None` when the bytes end
/// inside it, an error when it is longer than the value needs (so each header has one
/// encoding) or overflows a u64.
fn take_varint(bytes: &[u8]) -> Option<Result<(u64, &[u8]), SessionError>> {
    let mut value = 0u64;
    for (i, &byte) in bytes.iter().enumerate().take(10) {
        let bits = u64::from(byte & 0x7f);
        if i == 9 && byte > 1 {
            return Some(Err(SessionError::MalformedHeader));
        }
        value |= bits << (7 * i);
        if byte & 0x80 == 0 {
            if byte == 0 && i > 0 {
                return Some(Err(SessionError::MalformedHeader));
            }
            return Some(Ok((value, &bytes[i + 1..])));
        }
    }
    if bytes.len() >= 10 {
        return Some(Err(SessionError::MalformedHeader));
    }
    None
}

/// The associated data the AEAD authenticates: the header, then the caller's.
fn frame_aad(epoch: u32, counter: u64, aad: &[u8]) -> Vec<u8> {
    let mut out = Frame::header(epoch, counter);
    out.extend_from_slice(aad);
    out
}

/// The key of epoch `epoch + 1`, from the key of `epoch`.
fn next_key(key: &[u8; 32], epoch: u32) -> Zeroizing<[u8; 32]> {
    expand(key, &[REKEY_LABEL, &(epoch + 1).to_be_bytes()])
}

/// RFC 6479-style sliding window over 64-bit counters: a ring of `REPLAY_WINDOW` bits in
/// which counter `c` lives at bit `c % REPLAY_WINDOW`.
#[derive(Clone)]
struct ReplayWindow {
    newest: Option<u64>,
    bits: [u64; (REPLAY_WINDOW / 64) as usize],
}

impl ReplayWindow {
    fn new() -> Self {
        ReplayWindow {
            newest: None,
            bits: [0; (REPLAY_WINDOW / 64) as usize],
        }
    }

    fn slot(counter: u64) -> (usize, u64) {
        let bit = counter % REPLAY_WINDOW;
        ((bit / 64) as usize, 1u64 << (bit % 64))
    }

    /// Whether `counter` may be accepted. Does not record it: that waits for the AEAD, so
    /// forged frames cannot move the window.
    fn check(&self, counter: u64) -> Result<(), SessionError> {
        let Some(newest) = self.newest else {
            return Ok(());
        };
        if counter > newest {
            return Ok(());
        }
        if newest - counter >= REPLAY_WINDOW {
            return Err(SessionError::TooOld { counter, newest });
        }
        let (word, mask) = Self::slot(counter);
        if self.bits[word] & mask != 0 {
            return Err(SessionError::Replayed(counter));
        }
        Ok(())
    }

    /// Records an authenticated `counter` (which passed [`ReplayWindow::check`]).
    fn commit(&mut self, counter: u64) {
        match self.newest {
            Some(newest) if counter <= newest => {}
            Some(newest) => {
                // Slots for the counters skipped over still hold bits from a lap ago.
                let advance = counter - newest;
                if advance >= REPLAY_WINDOW {
                    self.bits = [0; (REPLAY_WINDOW / 64) as usize];
                } else {
                    for c in newest + 1..counter {
                        let (word, mask) = Self::slot(c);
                        self.bits[word] &= !mask;
                    }
                }
                let (word, mask) = Self::slot(counter);
                self.bits[word] &= !mask;
                self.newest = Some(counter);
            }
            None => self.newest = Some(counter),
        }
        let (word, mask) = Self::slot(counter);
        self.bits[word] |= mask;
    }
}

struct EpochKey {
    epoch: u32,
    key: Zeroizing<[u8; 32]>,
}

struct Sender {
    current: EpochKey,
    next_counter: u64,
    epoch_first_counter: u64,
    epoch_started: Millis,
}

struct Receiver {
    current: EpochKey,
    previous: Option<EpochKey>,
    window: ReplayWindow,
}

/// An established, authenticated session with one peer. Keys are zeroized on drop and
/// never printed.
pub struct Session {
    role: Role,
    peer: NodeId,
    id: [u8; 32],
    policy: RekeyPolicy,
    send: Sender,
    recv: Receiver,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("role", &self.role)
            .field("peer", &self.peer)
            .field("send_epoch", &self.send.current.epoch)
            .field("next_send_counter", &self.send.next_counter)
            .field("recv_epoch", &self.recv.current.epoch)
            .field("keys", &"<redacted>")
            .finish()
    }
}

impl Session {
    pub(crate) fn new(
        role: Role,
        peer: NodeId,
        id: [u8; 32],
        send_key: Zeroizing<[u8; 32]>,
        recv_key: Zeroizing<[u8; 32]>,
        policy: RekeyPolicy,
        now: Millis,
    ) -> Session {
        Session {
            role,
            peer,
            id,
            policy: RekeyPolicy {
                max_messages: policy.max_messages.max(1),
                max_age_ms: policy.max_age_ms,
            },
            send: Sender {
                current: EpochKey {
                    epoch: 0,
                    key: send_key,
                },
                next_counter: 0,
                epoch_first_counter: 0,
                epoch_started: now,
            },
            recv: Receiver {
                current: EpochKey {
                    epoch: 0,
                    key: recv_key,
                },
                previous: None,
                window: ReplayWindow::new(),
            },
        }
    }

    /// The authenticated identity of the other side.
    pub fn peer(&self) -> NodeId {
        self.peer
    }

    /// Which side of the handshake we were.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The hash of the whole handshake transcript: the same on both sides, unique per
    /// session, public (usable for channel binding and logs).
    pub fn id(&self) -> [u8; 32] {
        self.id
    }

    pub fn policy(&self) -> RekeyPolicy {
        self.policy
    }

    /// The key epoch our next frame will use (before any rekey that frame triggers).
    pub fn send_epoch(&self) -> u32 {
        self.send.current.epoch
    }

    /// The newest key epoch we have received a frame in.
    pub fn recv_epoch(&self) -> u32 {
        self.recv.current.epoch
    }

    /// When, at the latest, the send key turns over: a driver that wants keys retired on
    /// time even while idle can call [`Session::handle_timeout`] then.
    pub fn next_deadline(&self) -> Millis {
        self.send.epoch_started.plus(self.policy.max_age_ms)
    }

    /// Retires the send key if it has reached its age limit and encrypted at least one
    /// frame, so an idle session does not keep a used key in memory. (A key that has
    /// encrypted nothing is left alone: retiring it protects nothing, and every epoch the
    /// peer has to skip over costs it one of its [`MAX_EPOCH_SKIP`].)
    pub fn handle_timeout(&mut self, now: Millis) -> Result<(), SessionError> {
        let used = self.send.next_counter > self.send.epoch_first_counter;
        if used && now.since(self.send.epoch_started) >= self.policy.max_age_ms {
            self.rekey_send(now)?;
        }
        Ok(())
    }

    fn rekey_send(&mut self, now: Millis) -> Result<(), SessionError> {
        let epoch = self.send.current.epoch;
        if epoch == u32::MAX {
            return Err(SessionError::Exhausted);
        }
        let key = next_key(&self.send.current.key, epoch);
        self.send.current = EpochKey {
            epoch: epoch + 1,
            key,
        };
        self.send.epoch_first_counter = self.send.next_counter;
        self.send.epoch_started = now;
        Ok(())
    }

    /// Encrypts `plaintext` into a frame for the peer, authenticating `aad` along with it
    /// (the peer must pass the same `aad` to [`Session::open`]).
    pub fn seal(
        &mut self,
        now: Millis,
        plaintext: &[u8],
        aad: &[u8],
    ) -> Result<Vec<u8>, SessionError> {
        if plaintext.len() > MAX_FRAME_PLAINTEXT {
            return Err(SessionError::PlaintextTooLarge(plaintext.len()));
        }
        let used = self.send.next_counter - self.send.epoch_first_counter;
        if used >= self.policy.max_messages
            || now.since(self.send.epoch_started) >= self.policy.max_age_ms
        {
            self.rekey_send(now)?;
        }
        let counter = self.send.next_counter;
        if counter == u64::MAX {
            return Err(SessionError::Exhausted);
        }
        let epoch = self.send.current.epoch;
        // The header is both the frame's start and the front of its associated data.
        let mut frame = Frame::header(epoch, counter);
        let full_aad = [frame.as_slice(), aad].concat();
        let ciphertext = aead::encrypt(
            &self.send.current.key,
            &Frame::nonce(epoch, counter),
            &full_aad,
            plaintext,
        )
        .map_err(|_| SessionError::PlaintextTooLarge(plaintext.len()))?;
        self.send.next_counter = counter + 1;
        frame.extend_from_slice(&ciphertext);
        Ok(frame)
    }

    /// Authenticates and decrypts a frame from the peer. Refuses replays, frames older than
    /// the replay window, and frames whose epoch key is gone; a refused frame changes no
    /// state.
    pub fn open(&mut self, frame: &[u8], aad: &[u8]) -> Result<Vec<u8>, SessionError> {
        let frame = Frame::decode(frame)?;
        self.recv.window.check(frame.counter)?;
        let current = self.recv.current.epoch;
        let nonce = Frame::nonce(frame.epoch, frame.counter);
        let full_aad = frame_aad(frame.epoch, frame.counter, aad);

        if frame.epoch == current {
            let plaintext =
                aead::decrypt(&self.recv.current.key, &nonce, &full_aad, &frame.ciphertext)
                    .map_err(|_| SessionError::AuthenticationFailed)?;
            self.recv.window.commit(frame.counter);
            return Ok(plaintext);
        }
        if frame.epoch < current {
            let Some(previous) = self
                .recv
                .previous
                .as_ref()
                .filter(|p| p.epoch == frame.epoch)
            else {
                return Err(SessionError::StaleEpoch {
                    epoch: frame.epoch,
                    current,
                });
            };
            let plaintext = aead::decrypt(&previous.key, &nonce, &full_aad, &frame.ciphertext)
                .map_err(|_| SessionError::AuthenticationFailed)?;
            self.recv.window.commit(frame.counter);
            return Ok(plaintext);
        }
        if frame.epoch - current > MAX_EPOCH_SKIP {
            return Err(SessionError::EpochTooFarAhead {
                epoch: frame.epoch,
                current,
            });
        }
        // Ratchet a copy forward; keep it only if the frame authenticates under it.
        let mut previous = EpochKey {
            epoch: current,
            key: self.recv.current.key.clone(),
        };
        let mut candidate = EpochKey {
            epoch: current + 1,
            key: next_key(&previous.key, current),
        };
        while candidate.epoch < frame.epoch {
            let following = EpochKey {
                epoch: candidate.epoch + 1,
                key: next_key(&candidate.key, candidate.epoch),
            };
            previous = std::mem::replace(&mut candidate, following);
        }
        let plaintext = aead::decrypt(&candidate.key, &nonce, &full_aad, &frame.ciphertext)
            .map_err(|_| SessionError::AuthenticationFailed)?;
        self.recv.window.commit(frame.counter);
        self.recv.current = candidate;
        self.recv.previous = Some(previous);
        Ok(plaintext)
    }

    #[cfg(test)]
    pub(crate) fn send_key_for_test(&self) -> [u8; 32] {
        *self.send.current.key
    }

    #[cfg(test)]
    pub(crate) fn recv_key_for_test(&self) -> [u8; 32] {
        *self.recv.current.key
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pair(policy: RekeyPolicy) -> (Session, Session) {
        let a_to_b = Zeroizing::new([1u8; 32]);
        let b_to_a = Zeroizing::new([2u8; 32]);
        let a = Session::new(
            Role::Initiator,
            NodeId([0xb; 32]),
            [9; 32],
            a_to_b.clone(),
            b_to_a.clone(),
            policy,
            Millis::ZERO,
        );
        let b = Session::new(
            Role::Responder,
            NodeId([0xa; 32]),
            [9; 32],
            b_to_a,
            a_to_b,
            policy,
            Millis::ZERO,
        );
        (a, b)
    }

    fn every(max_messages: u64) -> RekeyPolicy {
        RekeyPolicy {
            max_messages,
            max_age_ms: u64::MAX,
        }
    }

    fn epoch_of(frame: &[u8]) -> u32 {
        Frame::decode(frame).expect("frame").epoch
    }

    #[test]
    fn frames_round_trip_both_ways_with_associated_data() {
        let (mut a, mut b) = pair(RekeyPolicy::default());
        let f = a.seal(Millis(5), b"ping", b"route-7").expect("seal");
        // Version, epoch 0 and counter 0 in one byte each.
        assert_eq!(f.len(), 3 + 4 + TAG_LEN);
        assert_eq!(b.open(&f, b"route-7").expect("open"), b"ping");
        let g = b.seal(Millis(6), b"pong", b"").expect("seal");
        assert_eq!(a.open(&g, b"").expect("open"), b"pong");
        let empty = a.seal(Millis(7), b"", b"").expect("seal");
        assert_eq!(b.open(&empty, b"").expect("open"), b"");
    }

    #[test]
    fn wrong_associated_data_or_direction_is_rejected() {
        let (mut a, mut b) = pair(RekeyPolicy::default());
        let f = a.seal(Millis::ZERO, b"ping", b"route-7").expect("seal");
        assert_eq!(
            b.open(&f, b"route-8"),
            Err(SessionError::AuthenticationFailed)
        );
        // A frame reflected back to its sender uses the other direction's key.
        assert_eq!(
            a.open(&f, b"route-7"),
            Err(SessionError::AuthenticationFailed)
        );
        assert_eq!(b.open(&f, b"route-7").expect("still opens"), b"ping");
    }

    #[test]
    fn every_tampered_byte_is_rejected_and_changes_nothing() {
        let (mut a, mut b) = pair(RekeyPolicy::default());
        let f = a
            .seal(Millis::ZERO, b"attack at dawn", b"aad")
            .expect("seal");
        for i in 0..f.len() {
            for bit in [0x01u8, 0x80] {
                let mut t = f.clone();
                t[i] ^= bit;
                let err = b.open(&t, b"aad").expect_err("tampered frame must fail");
                assert!(
                    matches!(
                        err,
                        SessionError::AuthenticationFailed
                            | SessionError::UnsupportedVersion(_)
                            | SessionError::MalformedHeader
                            | SessionError::EpochTooFarAhead { .. }
                    ),
                    "byte {i}: {err:?}"
                );
            }
        }
        // None of the failures moved the window or the epoch.
        assert_eq!(b.recv_epoch(), 0);
        assert_eq!(
            b.open(&f, b"aad").expect("genuine frame"),
            b"attack at dawn"
        );
    }

    #[test]
    fn replayed_frames_are_rejected() {
        let (mut a, mut b) = pair(RekeyPolicy::default());
        let f0 = a.seal(Millis::ZERO, b"one", b"").expect("seal");
        let f1 = a.seal(Millis::ZERO, b"two", b"").expect("seal");
        b.open(&f0, b"").expect("first");
        assert_eq!(b.open(&f0, b""), Err(SessionError::Replayed(0)));
        b.open(&f1, b"").expect("second");
        assert_eq!(b.open(&f1, b""), Err(SessionError::Replayed(1)));
        assert_eq!(b.open(&f0, b""), Err(SessionError::Replayed(0)));
    }

    #[test]
    fn reordering_inside_the_window_is_accepted_and_older_frames_refused() {
        let (mut a, mut b) = pair(RekeyPolicy::default());
        let frames: Vec<Vec<u8>> = (0..1100u32)
            .map(|i| a.seal(Millis::ZERO, &i.to_be_bytes(), b"").expect("seal"))
            .collect();
        assert_eq!(
            b.open(&frames[1099], b"").expect("newest"),
            1099u32.to_be_bytes()
        );
        assert_eq!(
            b.open(&frames[0], b""),
            Err(SessionError::TooOld {
                counter: 0,
                newest: 1099
            })
        );
        assert_eq!(
            b.open(&frames[75], b""),
            Err(SessionError::TooOld {
                counter: 75,
                newest: 1099
            })
        );
        // 1099 - 76 = 1023: the oldest counter still inside the window.
        b.open(&frames[76], b"").expect("edge of the window");
        b.open(&frames[1000], b"").expect("inside the window");
        assert_eq!(
            b.open(&frames[1000], b""),
            Err(SessionError::Replayed(1000))
        );
        assert_eq!(b.open(&frames[76], b""), Err(SessionError::Replayed(76)));
    }

    #[test]
    fn a_window_jump_of_more_than_its_width_forgets_old_bits_correctly() {
        let (mut a, mut b) = pair(RekeyPolicy::default());
        let frames: Vec<Vec<u8>> = (0..3000u32)
            .map(|i| a.seal(Millis::ZERO, &i.to_be_bytes(), b"").expect("seal"))
            .collect();
        b.open(&frames[5], b"").expect("5");
        // 5 + 1024 * 2 lands on the same ring slot as 5; it must not look like a replay.
        b.open(&frames[5 + 2048], b"")
            .expect("same slot, later lap");
        b.open(&frames[2050], b"").expect("inside the window");
        assert_eq!(
            b.open(&frames[5 + 2048], b""),
            Err(SessionError::Replayed(2053))
        );
    }

    #[test]
    fn forged_frames_do_not_move_the_window() {
        let (mut a, mut b) = pair(RekeyPolicy::default());
        let genuine = a.seal(Millis::ZERO, b"hi", b"").expect("seal");
        let forged = Frame {
            epoch: 0,
            counter: 1 << 40,
            ciphertext: vec![0; 40],
        }
        .encode();
        assert_eq!(
            b.open(&forged, b""),
            Err(SessionError::AuthenticationFailed)
        );
        let forged_epoch = Frame {
            epoch: 3,
            counter: 1,
            ciphertext: vec![0; 40],
        }
        .encode();
        assert_eq!(
            b.open(&forged_epoch, b""),
            Err(SessionError::AuthenticationFailed)
        );
        assert_eq!(b.recv_epoch(), 0);
        assert_eq!(b.open(&genuine, b"").expect("window untouched"), b"hi");
    }

    #[test]
    fn rekeying_by_message_count_crosses_the_boundary_on_both_sides() {
        let (mut a, mut b) = pair(every(3));
        let key0 = a.send_key_for_test();
        let mut epochs = Vec::new();
        for i in 0..10u8 {
            let f = a.seal(Millis::ZERO, &[i], b"").expect("seal");
            epochs.push(epoch_of(&f));
            assert_eq!(b.open(&f, b"").expect("open"), [i]);
            assert_eq!(b.recv_key_for_test(), a.send_key_for_test());
        }
        assert_eq!(epochs, [0, 0, 0, 1, 1, 1, 2, 2, 2, 3]);
        assert_ne!(a.send_key_for_test(), key0);
        assert_eq!(b.recv_epoch(), 3);
        // The other direction keeps its own schedule.
        assert_eq!(b.send_epoch(), 0);
    }

    #[test]
    fn rekeying_by_age_uses_the_callers_clock() {
        let policy = RekeyPolicy {
            max_messages: u64::MAX,
            max_age_ms: 1000,
        };
        let (mut a, mut b) = pair(policy);
        let f0 = a.seal(Millis(0), b"a", b"").expect("seal");
        let f1 = a.seal(Millis(999), b"b", b"").expect("seal");
        let f2 = a.seal(Millis(1000), b"c", b"").expect("seal");
        let f3 = a.seal(Millis(1500), b"d", b"").expect("seal");
        assert_eq!([&f0, &f1, &f2, &f3].map(|f| epoch_of(f)), [0, 0, 1, 1]);
        assert_eq!(a.next_deadline(), Millis(2000));
        a.handle_timeout(Millis(1999)).expect("not yet");
        assert_eq!(a.send_epoch(), 1);
        a.handle_timeout(Millis(2000)).expect("rekey");
        assert_eq!(a.send_epoch(), 2);
        // Nothing sent under epoch 2: timeouts leave it alone, however many.
        for t in 1..100 {
            a.handle_timeout(Millis(2000 + t * 1000)).expect("idle");
        }
        assert_eq!(a.send_epoch(), 2);
        // Old enough by now: the next frame goes out under a fresh key, one epoch on.
        let f4 = a.seal(Millis(200_000), b"e", b"").expect("seal");
        assert_eq!(epoch_of(&f4), 3);
        for (f, m) in [(f0, b"a"), (f1, b"b"), (f2, b"c"), (f3, b"d"), (f4, b"e")] {
            assert_eq!(b.open(&f, b"").expect("open"), m);
        }
    }

    #[test]
    fn frames_reordered_across_one_boundary_open_older_ones_do_not() {
        let (mut a, mut b) = pair(every(3));
        let f: Vec<Vec<u8>> = (0..7u8)
            .map(|i| a.seal(Millis::ZERO, &[i], b"").expect("seal"))
            .collect();
        // Epochs: 0 0 0 1 1 1 2.
        b.open(&f[3], b"").expect("first of epoch 1");
        b.open(&f[0], b"").expect("epoch 0 is the previous epoch");
        b.open(&f[4], b"").expect("epoch 1");
        b.open(&f[1], b"")
            .expect("epoch 0 still the previous epoch");
        b.open(&f[6], b"").expect("epoch 2");
        b.open(&f[5], b"")
            .expect("epoch 1 is now the previous epoch");
        assert_eq!(
            b.open(&f[2], b""),
            Err(SessionError::StaleEpoch {
                epoch: 0,
                current: 2
            })
        );
    }

    #[test]
    fn lost_epochs_are_skipped_within_the_limit() {
        let (mut a, mut b) = pair(every(1));
        let f: Vec<Vec<u8>> = (0..40u8)
            .map(|i| a.seal(Millis::ZERO, &[i], b"").expect("seal"))
            .collect();
        assert_eq!(epoch_of(&f[39]), 39);
        b.open(&f[5], b"").expect("skip 5 epochs");
        b.open(&f[4], b"").expect("previous");
        assert!(matches!(
            b.open(&f[3], b""),
            Err(SessionError::StaleEpoch { .. })
        ));
        b.open(&f[5 + MAX_EPOCH_SKIP as usize], b"")
            .expect("skip exactly the limit");
        assert_eq!(
            b.open(&f[39], b""),
            Err(SessionError::EpochTooFarAhead {
                epoch: 39,
                current: 21
            })
        );
    }

    #[test]
    fn oversized_plaintext_and_bad_frames_are_typed_errors() {
        let (mut a, _) = pair(RekeyPolicy::default());
        let big = vec![0u8; MAX_FRAME_PLAINTEXT + 1];
        assert_eq!(
            a.seal(Millis::ZERO, &big, b""),
            Err(SessionError::PlaintextTooLarge(MAX_FRAME_PLAINTEXT + 1))
        );
        assert_eq!(Frame::decode(&[]), Err(SessionError::Truncated(0)));
        assert_eq!(
            Frame::decode(&[FRAME_VERSION; 17]),
            Err(SessionError::Truncated(17))
        );
        assert_eq!(
            Frame::decode(&[FRAME_VERSION, 0x80]),
            Err(SessionError::Truncated(2))
        );
        assert_eq!(
            Frame::decode(&[7; 40]),
            Err(SessionError::UnsupportedVersion(7))
        );
        let huge = vec![FRAME_VERSION; MAX_FRAME_BYTES + 1];
        assert_eq!(
            Frame::decode(&huge),
            Err(SessionError::TooLarge(MAX_FRAME_BYTES + 1))
        );
    }

    #[test]
    fn headers_are_short_varints_with_one_encoding_each() {
        for (epoch, counter, header_len) in [
            (0, 0, 3),
            (1, 127, 3),
            (1, 128, 4),
            (200, 1 << 20, 6),
            (u32::MAX, u64::MAX, MAX_FRAME_HEADER_LEN),
        ] {
            let frame = Frame {
                epoch,
                counter,
                ciphertext: vec![9; TAG_LEN],
            };
            let bytes = frame.encode();
            assert_eq!(bytes.len(), header_len + TAG_LEN, "{epoch} {counter}");
            assert_eq!(Frame::decode(&bytes), Ok(frame));
        }
        let tag = [9u8; TAG_LEN];
        let with_tag = |header: &[u8]| [header, &tag].concat();
        // Counter 1 written in two bytes: same value, a second encoding.
        assert_eq!(
            Frame::decode(&with_tag(&[FRAME_VERSION, 0, 0x81, 0x00])),
            Err(SessionError::MalformedHeader)
        );
        // An epoch beyond u32, and a counter beyond u64.
        assert_eq!(
            Frame::decode(&with_tag(&[FRAME_VERSION, 0x80, 0x80, 0x80, 0x80, 0x10, 0])),
            Err(SessionError::MalformedHeader)
        );
        let mut overflow = vec![FRAME_VERSION, 0];
        overflow.extend([0xff; 9]);
        overflow.push(0x02);
        assert_eq!(
            Frame::decode(&with_tag(&overflow)),
            Err(SessionError::MalformedHeader)
        );
    }

    #[test]
    fn debug_never_shows_keys() {
        let (a, _) = pair(RekeyPolicy::default());
        let shown = format!("{a:?}");
        assert!(shown.contains("redacted"), "{shown}");
        assert!(
            !shown.contains(&format!("{:?}", a.send_key_for_test())),
            "{shown}"
        );
        assert!(!shown.contains("1, 1, 1"), "{shown}");
    }

    proptest! {
        #[test]
        fn decoding_arbitrary_bytes_as_a_frame_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = Frame::decode(&bytes);
        }

        #[test]
        fn opening_arbitrary_bytes_never_panics_or_succeeds(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let (_, mut b) = pair(every(2));
            prop_assert!(b.open(&bytes, b"").is_err());
        }

        /// Whatever order frames arrive in, with duplicates: each is accepted at most once,
        /// and exactly when its epoch key is still (or already) available.
        #[test]
        fn any_delivery_order_accepts_each_frame_at_most_once(
            deliveries in proptest::collection::vec(0usize..48, 0..120),
        ) {
            let (mut a, mut b) = pair(every(4));
            let frames: Vec<Vec<u8>> = (0..48u8)
                .map(|i| a.seal(Millis::ZERO, &[i], b"").expect("seal"))
                .collect();
            let mut accepted = std::collections::BTreeSet::new();
            let mut current = 0u32;
            for i in deliveries {
                let epoch = epoch_of(&frames[i]);
                let expect_ok = !accepted.contains(&i)
                    && epoch + 1 >= current
                    && epoch <= current + MAX_EPOCH_SKIP;
                match b.open(&frames[i], b"") {
                    Ok(plaintext) => {
                        prop_assert!(expect_ok, "frame {i} accepted unexpectedly");
                        prop_assert_eq!(plaintext, vec![i as u8]);
                        accepted.insert(i);
                        current = current.max(epoch);
                    }
                    Err(e) => prop_assert!(!expect_ok, "frame {i} refused: {e:?}"),
                }
            }
        }
    }
}
