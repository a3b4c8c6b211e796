//! Link encryption: every envelope to a neighbor travels inside the two nodes' hybrid
//! post-quantum session, once there is one.
//!
//! The transport under the mesh (libp2p's Noise in the node) is classical: whoever
//! records a link today and breaks X25519 later reads it. So the envelopes actors send to
//! a neighbor are sealed into a [`Session`] frame (X25519 + ML-KEM-768 keys,
//! ChaCha20-Poly1305, counter nonces, replay window, rekeying) and sent as a
//! [`Kind::Link`] envelope; the supervisor opens them on arrival. Three things travel
//! outside it: discovery beacons (broadcast, and how neighbors find each other at all),
//! handshake messages (which set the session up), and whatever is sent in the first
//! round trip of a link, before its session exists.
//!
//! The sessions live here, shared, because every actor seals on its own send path and
//! the supervisor opens on its inbound path: a mailbox round trip per envelope would
//! cost more than the encryption. The sessions actor decides what is installed.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::future::BoxFuture;
use x0_protocols::crypto::{Session, SessionError};
use x0_protocols::{Envelope, Kind, NodeId};

use crate::clock::NodeClock;
use crate::port::{NetworkPort, PortError, Topic};

/// Bound into every frame's authentication, so a link frame cannot pass for any other
/// use of the session keys.
const LINK_AAD: &[u8] = b"x0tta6bl4/link/v1";

/// Why a link frame did not open.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    #[error("no session with this peer")]
    NoSession,
    #[error(transparent)]
    Session(#[from] SessionError),
}

impl LinkError {
    /// A stable lowercase name, used as a metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            LinkError::NoSession => "no_session",
            LinkError::Session(e) => e.reason(),
        }
    }
}

/// Frames through one peer's session, for `/api/v1/peers`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkCounters {
    pub frames_sent: u64,
    pub frames_received: u64,
}

struct LinkSession {
    current: Session,
    /// The session it replaced: frames the peer sealed before it switched still open.
    previous: Option<Session>,
    /// Whether we seal under `current` yet. The initiator waits until the responder
    /// acknowledged the handshake's last message, so the responder can open its first
    /// frame.
    sending: bool,
    /// Whether the peer has shown it holds `current` (a frame it sealed under it opened)
    /// and has not since beaconed in the clear, as a peer that lost its sessions does.
    /// Beacons are sealed only to such peers: a restarted peer finds its neighbors by
    /// their beacons, and could not read sealed ones.
    peer_seals: bool,
    counters: LinkCounters,
}

/// This node's sessions with its neighbors.
pub struct LinkSessions {
    clock: NodeClock,
    sessions: Mutex<BTreeMap<NodeId, LinkSession>>,
}

impl LinkSessions {
    pub fn new(clock: NodeClock) -> LinkSessions {
        LinkSessions {
            clock,
            sessions: Mutex::new(BTreeMap::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<NodeId, LinkSession>> {
        // Session state is plain data; a panic elsewhere cannot leave it half-written.
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Installs a freshly established session with `peer`, keeping the one it replaces
    /// for opening only.
    pub fn install(&self, peer: NodeId, session: Session, sending: bool) {
        let mut sessions = self.lock();
        let previous = sessions.remove(&peer);
        let counters = previous.as_ref().map(|p| p.counters).unwrap_or_default();
        sessions.insert(
            peer,
            LinkSession {
                current: session,
                previous: previous.map(|p| p.current),
                sending,
                peer_seals: false,
                counters,
            },
        );
    }

    /// Starts sealing to `peer` under the session with this id (the responder has
    /// acknowledged it); a session replaced meanwhile is left alone.
    pub fn start_sending(&self, peer: NodeId, session_id: [u8; 32]) {
        if let Some(link) = self.lock().get_mut(&peer)
            && link.current.id() == session_id
        {
            link.sending = true;
        }
    }

    /// `peer` sent a beacon outside any session: it may have lost its sessions.
    pub fn heard_in_clear(&self, peer: &NodeId) {
        if let Some(link) = self.lock().get_mut(peer) {
            link.peer_seals = false;
        }
    }

    /// Peers whose beacons can go sealed (see `LinkSession::peer_seals`).
    fn beacon_peers(&self) -> Vec<NodeId> {
        self.lock()
            .iter()
            .filter(|(_, l)| l.sending && l.peer_seals)
            .map(|(peer, _)| *peer)
            .collect()
    }

    pub fn remove(&self, peer: &NodeId) {
        self.lock().remove(peer);
    }

    pub fn clear(&self) {
        self.lock().clear();
    }

    pub fn counters(&self, peer: &NodeId) -> LinkCounters {
        self.lock()
            .get(peer)
            .map(|l| l.counters)
            .unwrap_or_default()
    }

    /// `envelope` sealed for `to` as a [`Kind::Link`] envelope from `me`: `None` when
    /// there is no session to seal under yet, or `Err` when the session cannot seal it.
    pub fn seal(
        &self,
        me: NodeId,
        to: NodeId,
        envelope: &Envelope,
    ) -> Option<Result<Envelope, SessionError>> {
        let now = self.clock.now();
        let mut sessions = self.lock();
        let link = sessions.get_mut(&to).filter(|l| l.sending)?;
        let frame = match link.current.seal(now, &envelope.encode_in_link(), LINK_AAD) {
            Ok(frame) => frame,
            Err(e) => return Some(Err(e)),
        };
        link.counters.frames_sent += 1;
        Some(Ok(Envelope::link_frame(me, frame)))
    }

    /// Opens a [`Kind::Link`] envelope from `peer` and returns the envelope inside,
    /// still encoded ([`Envelope::decode_in_link`] decodes it).
    pub fn open(&self, peer: NodeId, link_envelope: &Envelope) -> Result<Vec<u8>, LinkError> {
        let frame = &link_envelope.payload;
        let mut sessions = self.lock();
        let link = sessions.get_mut(&peer).ok_or(LinkError::NoSession)?;
        let opened = match link.current.open(frame, LINK_AAD) {
            Ok(inner) => {
                link.peer_seals = true;
                Ok(inner)
            }
            // Sealed before the peer switched sessions: the old one still opens it.
            Err(e) => match link.previous.as_mut() {
                Some(previous) => previous.open(frame, LINK_AAD).map_err(|_| e),
                None => Err(e),
            },
        };
        let inner = opened?;
        link.counters.frames_received += 1;
        Ok(inner)
    }
}

/// The port every actor sends through: seals each envelope for its neighbor when a
/// session is up, and passes it on as it is when not (see the module docs for what
/// travels outside sessions).
pub struct SealingPort {
    me: NodeId,
    inner: Arc<dyn NetworkPort>,
    sessions: Arc<LinkSessions>,
}

impl SealingPort {
    pub fn new(me: NodeId, inner: Arc<dyn NetworkPort>, sessions: Arc<LinkSessions>) -> Self {
        SealingPort {
            me,
            inner,
            sessions,
        }
    }

    /// What goes on the wire for `envelope` to `to`.
    fn wrap(&self, to: NodeId, envelope: &Envelope) -> OnTheWire {
        if envelope.kind == Kind::Handshake {
            return OnTheWire::AsItIs;
        }
        match self.sessions.seal(self.me, to, envelope) {
            None => OnTheWire::AsItIs,
            Some(Ok(sealed)) => OnTheWire::Sealed(sealed),
            Some(Err(e)) => {
                metrics::counter!("x0_link_send_failures_total", "reason" => e.reason())
                    .increment(1);
                tracing::warn!(peer = %to, error = %e, "could not seal an envelope; not sent");
                OnTheWire::Nothing
            }
        }
    }
}

enum OnTheWire {
    /// No session yet, or a handshake message.
    AsItIs,
    Sealed(Envelope),
    /// The session could not seal it (too large, or out of nonces).
    Nothing,
}

impl NetworkPort for SealingPort {
    fn send(&self, to: NodeId, envelope: &Envelope) {
        match self.wrap(to, envelope) {
            OnTheWire::Sealed(sealed) => self.inner.send_sealed(to, &sealed, envelope.kind),
            OnTheWire::AsItIs => self.inner.send(to, envelope),
            OnTheWire::Nothing => {}
        }
    }

    /// A broadcast to the neighbors (a beacon) goes sealed to each neighbor that holds
    /// a session with us, without the signature and sender it needs in the clear (a
    /// third of its size), and as it is to the others, which is how new and restarted
    /// neighbors find us.
    fn broadcast(&self, topic: &Topic, envelope: &Envelope) {
        if *topic != Topic::Neighbors || envelope.kind == Kind::Handshake {
            return self.inner.broadcast(topic, envelope);
        }
        let mut sealed_to = Vec::new();
        for peer in self.sessions.beacon_peers() {
            if let OnTheWire::Sealed(sealed) = self.wrap(peer, envelope) {
                self.inner.send_sealed(peer, &sealed, envelope.kind);
                sealed_to.push(peer);
            }
        }
        self.inner.broadcast_except(topic, envelope, &sealed_to);
    }

    fn request(
        &self,
        to: NodeId,
        envelope: &Envelope,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<Envelope, PortError>> {
        match self.wrap(to, envelope) {
            OnTheWire::Sealed(sealed) => {
                self.inner
                    .request_sealed(to, &sealed, envelope.kind, timeout)
            }
            OnTheWire::AsItIs => self.inner.request(to, envelope, timeout),
            OnTheWire::Nothing => Box::pin(futures::future::ready(Err(PortError::Unreachable(to)))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha20Rng;
    use x0_protocols::Identity;
    use x0_protocols::crypto::{Handshake, HandshakeConfig};

    fn sessions(a: &Identity, b: &Identity, seed: u64) -> (Session, Session) {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let now = x0_protocols::Millis(0);
        let (mut init, m1) = Handshake::initiate(a, HandshakeConfig::expecting(b.id()), &mut rng);
        let mut resp = Handshake::respond(b, HandshakeConfig::expecting(a.id()));
        let s2 = resp.handle_message(b, now, &m1, &mut rng).unwrap();
        let s3 = init
            .handle_message(a, now, &s2.reply.unwrap(), &mut rng)
            .unwrap();
        let s4 = resp
            .handle_message(b, now, &s3.reply.unwrap(), &mut rng)
            .unwrap();
        (s3.session.unwrap(), s4.session.unwrap())
    }

    #[test]
    fn sealed_envelopes_open_once_at_the_peer_and_nowhere_else() {
        let (a, b) = (Identity::from_seed([1; 32]), Identity::from_seed([2; 32]));
        let (sa, sb) = sessions(&a, &b, 1);
        let (at_a, at_b) = (
            LinkSessions::new(NodeClock::start()),
            LinkSessions::new(NodeClock::start()),
        );
        let envelope = Envelope::seal(&a, Kind::Routing, b"route to 7 via 3".to_vec());
        // No session yet: nothing to seal under.
        assert!(at_a.seal(a.id(), b.id(), &envelope).is_none());
        at_a.install(b.id(), sa, false);
        // Installed but not confirmed by the responder: still nothing.
        assert!(at_a.seal(a.id(), b.id(), &envelope).is_none());
        let id = sb.id();
        at_a.start_sending(b.id(), id);
        at_b.install(a.id(), sb, true);
        let sealed = at_a.seal(a.id(), b.id(), &envelope).unwrap().unwrap();
        assert_eq!(sealed.kind, Kind::Link);
        let wire = sealed.encode();
        assert!(!wire.windows(16).any(|w| w == b"route to 7 via 3"));
        let inner = at_b.open(a.id(), &sealed).unwrap();
        // Everything but the signature, which nobody checks inside a session.
        let opened = Envelope::decode_in_link(a.id(), &inner).unwrap();
        assert_eq!(
            (opened.from, opened.kind, &opened.payload),
            (envelope.from, envelope.kind, &envelope.payload)
        );
        assert_eq!(at_b.counters(&a.id()).frames_received, 1);
        // Replayed, tampered with, or from a peer without a session: refused.
        assert!(matches!(
            at_b.open(a.id(), &sealed),
            Err(LinkError::Session(SessionError::Replayed(0)))
        ));
        let mut tampered = at_a.seal(a.id(), b.id(), &envelope).unwrap().unwrap();
        let last = tampered.payload.len() - 1;
        tampered.payload[last] ^= 1;
        assert!(matches!(
            at_b.open(a.id(), &tampered),
            Err(LinkError::Session(SessionError::AuthenticationFailed))
        ));
        let c = Identity::from_seed([3; 32]);
        assert_eq!(at_b.open(c.id(), &sealed), Err(LinkError::NoSession));
    }

    #[test]
    fn frames_sealed_under_a_replaced_session_still_open() {
        let (a, b) = (Identity::from_seed([1; 32]), Identity::from_seed([2; 32]));
        let (old_a, old_b) = sessions(&a, &b, 1);
        let (new_a, new_b) = sessions(&a, &b, 2);
        let (at_a, at_b) = (
            LinkSessions::new(NodeClock::start()),
            LinkSessions::new(NodeClock::start()),
        );
        at_a.install(b.id(), old_a, true);
        at_b.install(a.id(), old_b, true);
        let envelope = Envelope::seal(&a, Kind::Routing, b"x".to_vec());
        let in_flight = at_a.seal(a.id(), b.id(), &envelope).unwrap().unwrap();
        at_b.install(a.id(), new_b, true);
        at_a.install(b.id(), new_a, true);
        assert!(at_b.open(a.id(), &in_flight).is_ok());
        let fresh = at_a.seal(a.id(), b.id(), &envelope).unwrap().unwrap();
        assert!(at_b.open(a.id(), &fresh).is_ok());
        assert_eq!(at_a.counters(&b.id()).frames_sent, 2);
    }
}
