//! The `Sessions` actor: a hybrid post-quantum session (X25519 + ML-KEM-768, signed by
//! both identities) with every neighbor, and admission control for closed meshes.
//!
//! When discovery reports a link up, the side with the smaller node id starts the
//! handshake of [`x0_protocols::crypto`]; the other answers. A handshake that has not
//! finished within [`HANDSHAKE_TIMEOUT_MS`] is started again. In a closed mesh a peer
//! outside the trust list is refused at the handshake, and the refusal is logged and
//! counted (the supervisor also drops everything else such a peer sends).
//!
//! An established session is installed in [`LinkSessions`], where every envelope to that
//! neighbor is then sealed (see [`crate::link`]). A neighbor whose frames we cannot open
//! has a session we lack (we restarted, or a handshake message was lost): we then start a
//! handshake ourselves, whichever side would normally start.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use serde::{Deserialize, Serialize};
use x0_protocols::crypto::{Handshake, HandshakeConfig, HandshakeMessage, SUITE};
use x0_protocols::{Envelope, Identity, Kind, Millis, NodeId};

use crate::clock::NodeClock;
use crate::discovery::LinkEvent;
use crate::link::LinkSessions;
use crate::port::NetworkPort;
use crate::timer::Timer;

/// A handshake not finished within this long is abandoned and, by the initiator, retried.
pub const HANDSHAKE_TIMEOUT_MS: u64 = 5_000;

/// Who may join the mesh.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Admission {
    /// Anyone with a valid identity.
    #[default]
    Open,
    /// Only the listed identities.
    Closed(BTreeSet<NodeId>),
    /// The ledger's members (admitted by `Membership` entries), plus `trusted` (the
    /// validators and whoever else must be reachable before the ledger is). `members` is
    /// kept current by the ledger actor as entries are applied.
    Ledger {
        trusted: BTreeSet<NodeId>,
        members: BTreeSet<NodeId>,
    },
}

impl Admission {
    pub fn admits(&self, peer: &NodeId) -> bool {
        match self {
            Admission::Open => true,
            Admission::Closed(trusted) => trusted.contains(peer),
            Admission::Ledger { trusted, members } => {
                trusted.contains(peer) || members.contains(peer)
            }
        }
    }

    /// Takes the ledger's current members; `false` if this admission does not follow
    /// the ledger (or nothing changed).
    pub fn set_ledger_members(&mut self, current: BTreeSet<NodeId>) -> bool {
        match self {
            Admission::Ledger { members, .. } if *members != current => {
                *members = current;
                true
            }
            _ => false,
        }
    }
}

/// Where a handshake message's acknowledgment goes (the transport's reply channel).
pub type AckPort = tokio::sync::oneshot::Sender<Envelope>;

/// One established session, for `/api/v1/peers`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionInfo {
    pub peer: NodeId,
    pub suite: String,
    /// Whether we started the handshake.
    pub initiator: bool,
    pub age_ms: u64,
    /// Envelopes sealed to the peer and opened from it under this session (and the one
    /// it replaced).
    pub frames_sent: u64,
    pub frames_received: u64,
}

pub enum SessionMsg {
    Link(LinkEvent),
    /// A handshake envelope from its (authenticated) link peer, and where the
    /// acknowledgment goes. It is sent once the message has been taken in, so an
    /// initiator acknowledged for its last message knows we hold the session and can
    /// seal to us.
    Handshake {
        envelope: Envelope,
        ack: Option<AckPort>,
    },
    Sessions(RpcReplyPort<Vec<SessionInfo>>),
    /// Who may join changed (the ledger admitted or removed members).
    Admission(Admission),
    /// A link frame from this peer did not open: it holds a session we do not.
    Unreadable(NodeId),
    Tick(u64),
}

pub struct SessionArgs {
    pub identity: Arc<Identity>,
    pub port: Arc<dyn NetworkPort>,
    pub clock: NodeClock,
    pub admission: Admission,
    /// Seeds the handshakes' ephemeral keys: from the OS in a real node, from the run's
    /// seed in the simulator.
    pub rng_seed: [u8; 32],
    /// Where established sessions go to carry traffic.
    pub link_sessions: Arc<LinkSessions>,
}

struct Pending {
    handshake: Handshake,
    initiator: bool,
    started: Millis,
    /// As responder: the Init we answered and our answer, so a retransmitted Init gets
    /// the same answer instead of a second, conflicting handshake.
    answered: Option<(Vec<u8>, Vec<u8>)>,
}

/// Handshake messages are sent as requests and resent until the peer acknowledges them:
/// a lost Finish would otherwise leave one side with a session and the other without.
const SEND_ATTEMPTS: u32 = 4;
const ACK_TIMEOUT_MS: u64 = 300;

/// A session installed in [`LinkSessions`] (which holds its keys).
struct Established {
    initiator: bool,
    since: Millis,
    /// As responder: the Init this session answered. The initiator resends it when its
    /// acknowledgment is lost, also after the session is up; that copy must not start a
    /// second handshake, whose pending state the initiator's resent Finish would then
    /// fail as a bad signature.
    init: Option<Vec<u8>>,
}

/// A peer's frames that do not open are ignored this long after its session came up:
/// frames sealed under the session before are still in flight.
const UNREADABLE_GRACE_MS: u64 = 2_000;

pub struct SessionState {
    args: SessionArgs,
    rng: ChaCha20Rng,
    links: BTreeSet<NodeId>,
    pending: BTreeMap<NodeId, Pending>,
    sessions: BTreeMap<NodeId, Established>,
    timer: Timer,
}

pub struct SessionActor;

impl Actor for SessionActor {
    type Msg = SessionMsg;
    type State = SessionState;
    type Arguments = SessionArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: SessionArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        // A restarted actor knows no sessions, so none may stay in use: peers whose
        // frames we then cannot open get a new handshake.
        args.link_sessions.clear();
        Ok(SessionState {
            rng: ChaCha20Rng::from_seed(args.rng_seed),
            args,
            links: BTreeSet::new(),
            pending: BTreeMap::new(),
            sessions: BTreeMap::new(),
            timer: Timer::default(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let now = state.args.clock.now();
        match message {
            SessionMsg::Link(LinkEvent::Up { neighbor, .. }) => {
                state.links.insert(neighbor);
                state.start_if_ours(now, neighbor);
            }
            SessionMsg::Link(LinkEvent::Cost { .. } | LinkEvent::Suspected { .. }) => {}
            SessionMsg::Link(LinkEvent::Down { neighbor }) => {
                state.links.remove(&neighbor);
                state.pending.remove(&neighbor);
                state.sessions.remove(&neighbor);
                state.args.link_sessions.remove(&neighbor);
            }
            SessionMsg::Unreadable(peer) => state.unreadable(now, peer),
            SessionMsg::Handshake { envelope, ack } => {
                state.take(now, envelope);
                if let Some(ack) = ack {
                    let _ = ack.send(Envelope::seal(
                        &state.args.identity,
                        Kind::Handshake,
                        Vec::new(),
                    ));
                }
            }
            SessionMsg::Admission(admission) => {
                state.args.admission = admission;
                // Revoked peers lose their session; newly admitted ones get one.
                let admission = &state.args.admission;
                let link_sessions = &state.args.link_sessions;
                state.sessions.retain(|peer, _| {
                    let keep = admission.admits(peer);
                    if !keep {
                        link_sessions.remove(peer);
                    }
                    keep
                });
                state.pending.retain(|peer, _| admission.admits(peer));
                for peer in state.links.clone() {
                    state.start_if_ours(now, peer);
                }
            }
            SessionMsg::Sessions(reply) => {
                let _ = reply.send(state.infos(now));
                return Ok(());
            }
            SessionMsg::Tick(generation) => {
                if !state.timer.fire(generation) {
                    return Ok(());
                }
                state.retry_stale(now);
            }
        }
        let deadline = state
            .pending
            .values()
            .map(|p| p.started.plus(HANDSHAKE_TIMEOUT_MS))
            .min();
        state
            .timer
            .arm(&myself, &state.args.clock, deadline, SessionMsg::Tick);
        Ok(())
    }
}

impl SessionState {
    fn me(&self) -> NodeId {
        self.args.identity.id()
    }

    /// Starts a handshake with `peer` if we are the side that starts and none is under way.
    fn start_if_ours(&mut self, now: Millis, peer: NodeId) {
        if self.me() >= peer || self.sessions.contains_key(&peer) {
            return;
        }
        self.start(now, peer);
    }

    fn start(&mut self, now: Millis, peer: NodeId) {
        if self.pending.contains_key(&peer) || !self.args.admission.admits(&peer) {
            return;
        }
        let (handshake, init) = Handshake::initiate(
            &self.args.identity,
            HandshakeConfig::expecting(peer),
            &mut self.rng,
        );
        self.pending.insert(
            peer,
            Pending {
                handshake,
                initiator: true,
                started: now,
                answered: None,
            },
        );
        self.send(peer, init, None);
    }

    /// `peer` seals under a session we do not hold: start a new one, unless one is
    /// being made or ours is too new for its frames to have caught up.
    fn unreadable(&mut self, now: Millis, peer: NodeId) {
        if !self.links.contains(&peer)
            || self
                .sessions
                .get(&peer)
                .is_some_and(|s| now.since(s.since) < UNREADABLE_GRACE_MS)
        {
            return;
        }
        tracing::debug!(%peer, "peer seals under a session we lack; starting a handshake");
        self.start(now, peer);
    }

    fn retry_stale(&mut self, now: Millis) {
        let stale: Vec<NodeId> = self
            .pending
            .iter()
            .filter(|(_, p)| now.since(p.started) >= HANDSHAKE_TIMEOUT_MS)
            .map(|(peer, _)| *peer)
            .collect();
        for peer in stale {
            self.pending.remove(&peer);
            metrics::counter!("x0_handshake_failures_total", "reason" => "timeout").increment(1);
            if self.links.contains(&peer) {
                self.start_if_ours(now, peer);
            }
        }
    }

    fn take(&mut self, now: Millis, envelope: Envelope) {
        let peer = envelope.from;
        if !self.args.admission.admits(&peer) {
            metrics::counter!("x0_admission_refused_total").increment(1);
            tracing::warn!(%peer, "handshake refused: peer is not in the trust list");
            return;
        }
        let is_init = matches!(
            HandshakeMessage::decode(&envelope.payload),
            Ok(HandshakeMessage::Init(_))
        );
        if is_init {
            // The Init of the session we hold, resent: the initiator finished with it.
            if self
                .sessions
                .get(&peer)
                .and_then(|s| s.init.as_ref())
                .is_some_and(|init| *init == envelope.payload)
            {
                return;
            }
            // The same Init again: our answer was lost or slow; give the same answer.
            if let Some((init, answer)) = self.pending.get(&peer).and_then(|p| p.answered.as_ref())
                && *init == envelope.payload
            {
                let answer = answer.clone();
                self.send(peer, answer, None);
                return;
            }
            // Both sides started at once: the smaller id's handshake goes on.
            if self.pending.get(&peer).is_some_and(|p| p.initiator) && self.me() < peer {
                return;
            }
            // A new Init restarts the handshake (the peer restarted, or gave up on ours).
            self.pending.insert(
                peer,
                Pending {
                    handshake: Handshake::respond(
                        &self.args.identity,
                        HandshakeConfig::expecting(peer),
                    ),
                    initiator: false,
                    started: now,
                    answered: None,
                },
            );
        }
        let Some(pending) = self.pending.get_mut(&peer) else {
            // A retransmission of a message whose handshake already completed.
            if !self.sessions.contains_key(&peer) {
                metrics::counter!("x0_handshake_failures_total", "reason" => "unexpected")
                    .increment(1);
            }
            return;
        };
        let step = pending.handshake.handle_message(
            &self.args.identity,
            now,
            &envelope.payload,
            &mut self.rng,
        );
        match step {
            Ok(step) => {
                let initiator = pending.initiator;
                // The initiator seals only once the responder has its last message, so
                // the responder can open the first frame.
                let confirm = step.session.as_ref().filter(|_| initiator).map(|s| s.id());
                if let Some(reply) = step.reply {
                    if is_init {
                        pending.answered = Some((envelope.payload.clone(), reply.clone()));
                    }
                    self.send(peer, reply, confirm);
                }
                if let Some(session) = step.session {
                    let init = self
                        .pending
                        .remove(&peer)
                        .and_then(|p| p.answered)
                        .map(|(init, _)| init);
                    self.args.link_sessions.install(peer, session, !initiator);
                    self.sessions.insert(
                        peer,
                        Established {
                            initiator,
                            since: now,
                            init,
                        },
                    );
                    metrics::counter!("x0_sessions_established_total").increment(1);
                    tracing::debug!(%peer, suite = SUITE, "session established");
                }
            }
            Err(e) => {
                self.pending.remove(&peer);
                metrics::counter!("x0_handshake_failures_total", "reason" => e.reason())
                    .increment(1);
                tracing::warn!(%peer, error = %e, "handshake failed");
            }
        }
    }

    /// Sends a handshake message until the peer acknowledges it; with `confirm`, the
    /// acknowledgment lets us seal under that session.
    fn send(&self, peer: NodeId, message: Vec<u8>, confirm: Option<[u8; 32]>) {
        let envelope = Envelope::seal(&self.args.identity, Kind::Handshake, message);
        let port = self.args.port.clone();
        let link_sessions = self.args.link_sessions.clone();
        let timeout = std::time::Duration::from_millis(ACK_TIMEOUT_MS);
        tokio::spawn(async move {
            for _ in 0..SEND_ATTEMPTS {
                match port.request(peer, &envelope, timeout).await {
                    Ok(_) => {
                        if let Some(id) = confirm {
                            link_sessions.start_sending(peer, id);
                        }
                        return;
                    }
                    Err(crate::port::PortError::Timeout) => continue,
                    Err(_) => return,
                }
            }
        });
    }

    fn infos(&self, now: Millis) -> Vec<SessionInfo> {
        self.sessions
            .iter()
            .map(|(peer, s)| {
                let counters = self.args.link_sessions.counters(peer);
                SessionInfo {
                    peer: *peer,
                    suite: SUITE.to_string(),
                    initiator: s.initiator,
                    age_ms: now.since(s.since),
                    frames_sent: counters.frames_sent,
                    frames_received: counters.frames_received,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::expect_used, clippy::unwrap_used)] // a failed expectation is the test failing

    use std::sync::Mutex;
    use std::time::Duration;

    use futures::FutureExt;
    use futures::future::BoxFuture;

    use super::*;
    use crate::port::{PortError, Topic};

    /// Records handshake messages and acknowledges each at once.
    #[derive(Default)]
    struct Outbox {
        requests: Mutex<Vec<Envelope>>,
    }

    impl NetworkPort for Outbox {
        fn send(&self, _: NodeId, _: &Envelope) {}

        fn broadcast(&self, _: &Topic, _: &Envelope) {}

        fn request(
            &self,
            _: NodeId,
            envelope: &Envelope,
            _: Duration,
        ) -> BoxFuture<'static, Result<Envelope, PortError>> {
            self.requests.lock().unwrap().push(envelope.clone());
            futures::future::ready(Ok(envelope.clone())).boxed()
        }
    }

    fn side(identity: u8, rng: u8) -> (SessionState, Arc<Outbox>) {
        let outbox = Arc::new(Outbox::default());
        let clock = NodeClock::start();
        let state = SessionState {
            rng: ChaCha20Rng::from_seed([rng; 32]),
            args: SessionArgs {
                identity: Arc::new(Identity::from_seed([identity; 32])),
                port: outbox.clone(),
                clock,
                admission: Admission::Open,
                rng_seed: [rng; 32],
                link_sessions: Arc::new(LinkSessions::new(clock)),
            },
            links: BTreeSet::new(),
            pending: BTreeMap::new(),
            sessions: BTreeMap::new(),
            timer: Timer::default(),
        };
        (state, outbox)
    }

    /// What `side` sent since the last call (its sends run as tasks).
    async fn sent(outbox: &Outbox) -> Vec<Envelope> {
        for _ in 0..4 {
            tokio::task::yield_now().await;
        }
        std::mem::take(&mut *outbox.requests.lock().unwrap())
    }

    #[tokio::test]
    async fn an_init_resent_after_the_session_is_up_starts_no_second_handshake() {
        let now = Millis(0);
        let (mut initiator, to_responder) = side(1, 1);
        let (mut responder, to_initiator) = side(2, 2);
        initiator.start(now, responder.me());
        let [init] = <[Envelope; 1]>::try_from(sent(&to_responder).await).unwrap();
        responder.take(now, init.clone());
        let [response] = <[Envelope; 1]>::try_from(sent(&to_initiator).await).unwrap();
        initiator.take(now, response);
        let [finish] = <[Envelope; 1]>::try_from(sent(&to_responder).await).unwrap();
        responder.take(now, finish.clone());
        assert!(responder.sessions.contains_key(&initiator.me()));

        // The initiator's acknowledgments were lost: it resends the Init, then the Finish.
        responder.take(now, init);
        assert!(sent(&to_initiator).await.is_empty(), "no second answer");
        responder.take(now, finish);
        assert!(responder.pending.is_empty());
        assert!(responder.sessions.contains_key(&initiator.me()));

        // A restarted initiator's new Init is answered.
        let (mut restarted, to_responder) = side(1, 3);
        restarted.start(now, responder.me());
        let [new_init] = <[Envelope; 1]>::try_from(sent(&to_responder).await).unwrap();
        responder.take(now, new_init);
        assert_eq!(sent(&to_initiator).await.len(), 1);
    }
}
