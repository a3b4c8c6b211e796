//! The `Discovery` actor: drives the discovery state machine on tokio time.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::{Deserialize, Serialize};
use x0_protocols::discovery::{
    Beacon, Discovery, DiscoveryConfig, DiscoveryEvent, Neighbor, Output,
};
use x0_protocols::failure::{self, FailureConfig, FailureDetector, SwimMessage};
use x0_protocols::routing::link_cost;
use x0_protocols::{Envelope, Identity, Kind, Millis, NodeId, ShortId};

use crate::clock::NodeClock;
use crate::observer::NodeObserver;
use crate::port::{NetworkPort, Topic};
use crate::supervisor::NodeMsg;
use crate::timer::Timer;

/// What discovery tells the rest of the node about its links.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkEvent {
    Up {
        neighbor: NodeId,
        cost: u16,
    },
    Cost {
        neighbor: NodeId,
        cost: u16,
    },
    Down {
        neighbor: NodeId,
    },
    /// The failure detector began to suspect `neighbor` (`suspected: true`), or the
    /// suspicion was refuted. Routing steers around a suspect before it is declared down.
    Suspected {
        neighbor: NodeId,
        suspected: bool,
    },
}

/// A link cost is re-announced only when it moved by more than this fraction: measured
/// loss and RTT jitter, and every announcement can ripple through the routing tables.
const COST_HYSTERESIS: f64 = 0.15;

/// What the neighbor table says about one neighbor, for the API and the simulator.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NeighborInfo {
    pub id: NodeId,
    pub rtt_ms: Option<f64>,
    pub loss: f64,
    pub bidirectional: bool,
    pub last_seen_ms_ago: u64,
    pub known_for_ms: u64,
    pub beacons_received: u64,
}

pub enum DiscoveryMsg {
    /// A decoded beacon envelope from its (authenticated) link peer.
    Beacon(Envelope),
    /// A decoded failure-detector probe from its (authenticated) link peer.
    Probe(Envelope),
    /// Another subsystem saw this neighbor stop answering: probe it now.
    Unresponsive(NodeId),
    /// Timer fired; the number says which schedule it belongs to.
    Tick(u64),
    Neighbors(RpcReplyPort<Vec<NeighborInfo>>),
    /// Fault injection: the actor panics while handling this, as a bug would.
    Crash(String),
}

pub struct DiscoveryArgs {
    pub identity: Arc<Identity>,
    pub port: Arc<dyn NetworkPort>,
    pub config: DiscoveryConfig,
    pub seed: u64,
    pub clock: NodeClock,
    /// Inbound beacons queued for this actor; the supervisor stops forwarding past a bound.
    pub pending: Arc<AtomicUsize>,
    /// Where link events go (the supervisor, which hands them to routing).
    pub supervisor: ActorRef<NodeMsg>,
    /// `None`: neighbors fail only by expiry.
    pub failure: Option<FailureConfig>,
    pub observer: Arc<dyn NodeObserver>,
}

pub struct DiscoveryState {
    protocol: Discovery,
    /// SWIM/Lifeguard probing of neighbors that went quiet.
    detector: Option<FailureDetector>,
    /// When each neighbor was last handed to the detector for probing, so a neighbor
    /// whose beacons are lost but who answers probes is not probed on every tick.
    probed_at: BTreeMap<NodeId, Millis>,
    args: DiscoveryArgs,
    /// The link cost last announced for each neighbor.
    announced: BTreeMap<NodeId, u16>,
    timer: Timer,
}

pub struct DiscoveryActor;

impl Actor for DiscoveryActor {
    type Msg = DiscoveryMsg;
    type State = DiscoveryState;
    type Arguments = DiscoveryArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: DiscoveryArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let protocol = Discovery::new(
            args.identity.id(),
            args.config.clone(),
            args.seed,
            args.clock.now(),
        );
        let detector = args.failure.clone().map(|config| {
            FailureDetector::new(args.identity.id(), config, args.seed.rotate_left(29))
        });
        let mut state = DiscoveryState {
            protocol,
            detector,
            probed_at: BTreeMap::new(),
            args,
            announced: BTreeMap::new(),
            timer: Timer::default(),
        };
        state.arm_timer(&myself);
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            DiscoveryMsg::Beacon(envelope) => {
                state.args.pending.fetch_sub(1, Ordering::Relaxed);
                state.take_beacon(&envelope);
            }
            DiscoveryMsg::Probe(envelope) => {
                state.args.pending.fetch_sub(1, Ordering::Relaxed);
                state.take_probe(&envelope);
            }
            DiscoveryMsg::Unresponsive(neighbor) => {
                let now = state.args.clock.now();
                if let Some(detector) = &mut state.detector {
                    detector.suspect_silence(now, neighbor);
                    state.probed_at.insert(neighbor, now);
                }
            }
            DiscoveryMsg::Tick(generation) => {
                if !state.timer.fire(generation) {
                    return Ok(());
                }
                let now = state.args.clock.now();
                state.protocol.handle_timeout(now);
                state.probe_the_silent(now);
                if let Some(detector) = &mut state.detector {
                    detector.handle_timeout(now);
                }
            }
            DiscoveryMsg::Neighbors(reply) => {
                let _ = reply.send(state.neighbor_infos());
                return Ok(());
            }
            DiscoveryMsg::Crash(reason) => panic!("injected fault: {reason}"),
        }
        state.flush_outputs();
        state.arm_timer(&myself);
        Ok(())
    }
}

impl DiscoveryState {
    /// Takes a beacon (its sender already authenticated by the supervisor) into the table.
    fn take_beacon(&mut self, envelope: &Envelope) {
        let beacon: Beacon = match envelope.decode_payload() {
            Ok(b) => b,
            Err(e) => {
                metrics::counter!("x0_node_envelope_rejected_total", "kind" => "beacon", "reason" => e.reason())
                    .increment(1);
                return;
            }
        };
        metrics::counter!("x0_discovery_beacons_received_total").increment(1);
        let now = self.args.clock.now();
        let accepted = self.protocol.handle_beacon(now, envelope.from, &beacon);
        if accepted.is_ok()
            && let Some(detector) = &mut self.detector
        {
            detector.heard_from(now, envelope.from);
            // Its neighbors that are ours too: the helpers an indirect probe can use.
            // Only a beacon that echoes all its sender's neighbors tells them.
            if beacon.echoes_all() {
                let echoed: BTreeSet<ShortId> = beacon.echoes.iter().map(|e| e.neighbor).collect();
                let shared = self
                    .protocol
                    .neighbors()
                    .map(|n| n.id)
                    .filter(|id| echoed.contains(&ShortId::of(id)))
                    .collect();
                detector.set_neighbors_of(envelope.from, shared);
            }
        }
        match accepted {
            Ok(()) => {
                if let Some(neighbor) = self.protocol.neighbor(&envelope.from) {
                    let cost = cost_of(neighbor);
                    let moved = self.announced.get(&envelope.from).is_some_and(|&last| {
                        (f64::from(cost) - f64::from(last)).abs() > COST_HYSTERESIS * f64::from(last)
                    });
                    if moved {
                        self.announced.insert(envelope.from, cost);
                        self.tell(LinkEvent::Cost { neighbor: envelope.from, cost });
                    }
                }
            }
            Err(reason) => metrics::counter!("x0_discovery_beacons_ignored_total", "reason" => format!("{reason:?}"))
                .increment(1),
        }
    }

    fn take_probe(&mut self, envelope: &Envelope) {
        let message: SwimMessage = match envelope.decode_payload() {
            Ok(m) => m,
            Err(e) => {
                metrics::counter!("x0_node_envelope_rejected_total", "kind" => "probe", "reason" => e.reason())
                    .increment(1);
                return;
            }
        };
        let now = self.args.clock.now();
        // Whatever it says, the sender is alive and its link to us works. (An indirect
        // ack proves its target alive, not our link to it: that is no proof here.)
        self.protocol.touch(now, &envelope.from);
        if let Some(detector) = &mut self.detector {
            detector.handle_message(now, envelope.from, message);
        }
    }

    /// Hands neighbors that have gone quiet to the failure detector.
    fn probe_the_silent(&mut self, now: Millis) {
        let due: Vec<NodeId> = self
            .probe_times()
            .filter(|(_, at)| *at <= now)
            .map(|(id, _)| id)
            .collect();
        let Some(detector) = &mut self.detector else {
            return;
        };
        for id in due {
            detector.suspect_silence(now, id);
            self.probed_at.insert(id, now);
        }
    }

    /// When the next neighbor goes quiet enough to be probed.
    fn next_silence_deadline(&self) -> Option<Millis> {
        self.probe_times().map(|(_, at)| at).min()
    }

    /// For each neighbor, when it will have been quiet for `silence_ms`: since its last
    /// beacon, or since we last probed it, whichever is later. Empty without a detector.
    fn probe_times(&self) -> impl Iterator<Item = (NodeId, Millis)> + '_ {
        let silence = self.args.failure.as_ref().map(|f| f.silence_ms);
        self.protocol.neighbors().filter_map(move |n| {
            let quiet_since = self
                .probed_at
                .get(&n.id)
                .map_or(n.last_seen, |&p| p.max(n.last_seen));
            Some((n.id, quiet_since.plus(silence?)))
        })
    }

    fn flush_detector(&mut self) {
        let Some(detector) = &mut self.detector else {
            return;
        };
        let mut dead = Vec::new();
        let mut suspicions = Vec::new();
        while let Some(output) = detector.poll_output() {
            match output {
                failure::Output::Send(to, message) => {
                    let envelope =
                        Envelope::seal_message(&self.args.identity, Kind::Probe, &message);
                    self.args.port.send(to, &envelope);
                    metrics::counter!("x0_failure_probes_sent_total").increment(1);
                }
                failure::Output::Suspect(id) => {
                    metrics::counter!("x0_failure_suspicions_total").increment(1);
                    tracing::debug!(neighbor = %id, "neighbor suspected");
                    self.args.observer.suspected(id);
                    suspicions.push((id, true));
                }
                failure::Output::Alive(id) => {
                    metrics::counter!("x0_failure_refuted_total").increment(1);
                    tracing::debug!(neighbor = %id, "suspicion refuted");
                    suspicions.push((id, false));
                }
                failure::Output::Dead(id) => {
                    metrics::counter!("x0_failure_declared_dead_total").increment(1);
                    tracing::info!(neighbor = %id, "neighbor failed (probes unanswered)");
                    dead.push(id);
                }
            }
        }
        metrics::gauge!("x0_failure_local_health").set(f64::from(detector.health()));
        for (neighbor, suspected) in suspicions {
            self.tell(LinkEvent::Suspected {
                neighbor,
                suspected,
            });
        }
        for id in dead {
            self.protocol.remove_neighbor(&id);
        }
    }

    fn flush_outputs(&mut self) {
        self.flush_detector();
        while let Some(output) = self.protocol.poll_output() {
            match output {
                Output::Broadcast(beacon) => {
                    let envelope =
                        Envelope::seal_message(&self.args.identity, Kind::Beacon, &beacon);
                    self.args.port.broadcast(&Topic::Neighbors, &envelope);
                    metrics::counter!("x0_discovery_beacons_sent_total").increment(1);
                }
                Output::Event(DiscoveryEvent::NeighborUp(id)) => {
                    tracing::info!(neighbor = %id, "neighbor up");
                    let now = self.args.clock.now();
                    if let Some(detector) = &mut self.detector {
                        detector.add_neighbor(now, id);
                    }
                    let cost = self.protocol.neighbor(&id).map_or(u16::MAX - 1, cost_of);
                    self.announced.insert(id, cost);
                    self.tell(LinkEvent::Up { neighbor: id, cost });
                }
                Output::Event(DiscoveryEvent::NeighborDown(id)) => {
                    self.announced.remove(&id);
                    self.probed_at.remove(&id);
                    if let Some(detector) = &mut self.detector {
                        detector.remove_neighbor(id);
                    }
                    tracing::info!(neighbor = %id, "neighbor down");
                    self.tell(LinkEvent::Down { neighbor: id });
                }
            }
        }
        metrics::gauge!("x0_discovery_peers").set(self.protocol.neighbors().count() as f64);
    }

    fn arm_timer(&mut self, myself: &ActorRef<DiscoveryMsg>) {
        let deadline = [
            self.protocol.next_deadline(),
            self.detector.as_ref().and_then(|d| d.next_deadline()),
            self.next_silence_deadline(),
        ]
        .into_iter()
        .flatten()
        .min();
        self.timer
            .arm(myself, &self.args.clock, deadline, DiscoveryMsg::Tick);
    }

    fn tell(&self, event: LinkEvent) {
        // The supervisor outlives its children; if it is gone the node is stopping.
        let _ = self.args.supervisor.cast(NodeMsg::Link(event));
    }

    fn neighbor_infos(&self) -> Vec<NeighborInfo> {
        let now = self.args.clock.now();
        self.protocol
            .neighbors()
            .map(|n| NeighborInfo {
                id: n.id,
                rtt_ms: n.rtt_ms,
                loss: n.loss(),
                bidirectional: n.bidirectional,
                last_seen_ms_ago: now.since(n.last_seen),
                known_for_ms: now.since(n.first_seen),
                beacons_received: n.beacons_received,
            })
            .collect()
    }
}

fn cost_of(neighbor: &Neighbor) -> u16 {
    link_cost(neighbor.damped_loss(), neighbor.rtt_ms)
}
