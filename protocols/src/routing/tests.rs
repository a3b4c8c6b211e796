//! The routing protocol alone: message-level cases, then random networks.
use super::*;
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn id(n: usize) -> NodeId {
    let mut b = [0u8; 32];
    b[..8].copy_from_slice(&(n as u64 + 1).to_le_bytes());
    NodeId(b)
}

/// The tag a test's made-up neighbor gives destination `n`.
fn their_tag(n: usize) -> Tag {
    n as Tag + 1
}

/// `r`'s own tag for node `n`, which it names it by.
fn tag_of(r: &Routing, n: usize) -> Tag {
    r.slot_of(&id(n)).expect("a known node")
}

/// Router 1, linked to 2 and 3, routing to 9 through 2 (which advertises it at 100).
fn routing_9_through_2(now: Millis) -> Routing {
    let mut r = Routing::new(id(1), RoutingConfig::default(), now);
    r.set_link(now, id(2), 100);
    r.set_link(now, id(3), 100);
    r.handle_message(now, id(2), update(1, &[(9, 100)]));
    r
}

/// A message with one seqno request.
fn request(destination: Tag, seqno: u32, hops_left: u8) -> RoutingMessage {
    RoutingMessage::SeqnoRequests(vec![SeqnoRequest {
        destination,
        seqno,
        hops_left,
    }])
}

fn update(serial: u32, adverts: &[(usize, u16)]) -> RoutingMessage {
    RoutingMessage::Update {
        serial,
        adverts: adverts
            .iter()
            .map(|&(d, metric)| Advert {
                destination: Destination::full(their_tag(d), id(d)),
                seqno: 0,
                metric,
            })
            .collect(),
        incarnation: 0,
        digest: None,
    }
}

/// An update about destination 9 alone, under `seqno`.
fn update_9(serial: u32, seqno: u32, metric: u16) -> RoutingMessage {
    RoutingMessage::Update {
        serial,
        adverts: vec![Advert {
            destination: Destination::full(their_tag(9), id(9)),
            seqno,
            metric,
        }],
        incarnation: 0,
        digest: None,
    }
}

/// Drains outputs meant for `to` (sent to it or broadcast).
fn for_neighbor(r: &mut Routing, to: NodeId) -> Vec<RoutingMessage> {
    std::iter::from_fn(|| r.poll_output())
        .filter_map(|o| match o {
            Output::Send(n, m) if n == to => Some(m),
            Output::Broadcast(m) => Some(m),
            _ => None,
        })
        .collect()
}

/// The adverts of the updates `r` has for `to`, in order.
fn adverts_for(r: &mut Routing, to: NodeId) -> Vec<Advert> {
    for_neighbor(r, to)
        .into_iter()
        .flat_map(|m| match m {
            RoutingMessage::Update { adverts, .. } => adverts,
            _ => vec![],
        })
        .collect()
}

/// Delivers everything `from` has for `to` and returns what `to` sends back to `from`.
fn exchange(now: Millis, from: &mut Routing, to: &mut Routing) -> Vec<RoutingMessage> {
    for m in for_neighbor(from, to.id()) {
        to.handle_message(now, from.id(), m);
    }
    for_neighbor(to, from.id())
}

/// Two routers linked and past their first exchange.
fn linked_pair(now: Millis) -> (Routing, Routing) {
    let config = RoutingConfig::default();
    let mut a = Routing::new(id(1), config.clone(), now);
    let mut b = Routing::new(id(2), config, now);
    a.set_link(now, id(2), 100);
    b.set_link(now, id(1), 100);
    for _ in 0..3 {
        for m in exchange(now, &mut a, &mut b) {
            a.handle_message(now, id(2), m);
        }
    }
    (a, b)
}

#[test]
fn an_alternate_must_be_closer_to_the_destination_than_we_are() {
    let now = Millis(0);
    let mut r = Routing::new(id(1), RoutingConfig::default(), now);
    for n in [2, 3, 4] {
        r.set_link(now, id(n), 100);
    }
    // Destination 9: via 2 at 100 (best), via 3 at 150, via 4 at 500 (farther than us).
    r.handle_message(now, id(2), update(1, &[(9, 100)]));
    r.handle_message(now, id(3), update(1, &[(9, 150)]));
    r.handle_message(now, id(4), update(1, &[(9, 500)]));
    assert_eq!(r.next_hop(&id(9)), Some(id(2)));
    assert_eq!(r.alternate_next_hop(&id(9), &id(2)), Some(id(3)));
    // Without 3, only 4 is left, and 4 may route through us: no alternate.
    r.remove_link(now, id(3));
    assert_eq!(r.alternate_next_hop(&id(9), &id(2)), None);
}

#[test]
fn a_table_sent_before_the_link_was_mutual_is_asked_for_again() {
    let now = Millis(0);
    let mut a = Routing::new(id(1), RoutingConfig::default(), now);
    let mut b = Routing::new(id(2), RoutingConfig::default(), now);
    // A sees the link first; what it sends B now is dropped (B has no link yet).
    a.set_link(now, id(2), 100);
    for m in for_neighbor(&mut a, id(2)) {
        b.handle_message(now, id(1), m);
    }
    assert_eq!(b.next_hop(&id(1)), None);
    // B sees the link; its table request makes A resend, long before a refresh.
    b.set_link(now, id(1), 100);
    let to_a = for_neighbor(&mut b, id(1));
    assert!(to_a.contains(&RoutingMessage::TableRequest {
        buckets: ALL_BUCKETS,
        full: true
    }));
    for m in to_a {
        a.handle_message(now, id(2), m);
    }
    for m in for_neighbor(&mut a, id(2)) {
        b.handle_message(now, id(1), m);
    }
    assert_eq!(b.next_hop(&id(1)), Some(id(1)));
    assert_eq!(a.next_hop(&id(2)), Some(id(2)));
}

#[test]
fn a_link_that_comes_up_on_both_sides_exchanges_one_table_each_way() {
    let now = Millis(0);
    let mut a = Routing::new(id(1), RoutingConfig::default(), now);
    let mut b = Routing::new(id(2), RoutingConfig::default(), now);
    a.set_link(now, id(2), 100);
    b.set_link(now, id(1), 100);
    let to_b = for_neighbor(&mut a, id(2));
    let to_a = for_neighbor(&mut b, id(1));
    for messages in [&to_a, &to_b] {
        assert_eq!(messages.len(), 1, "{messages:?}");
        assert!(matches!(messages[0], RoutingMessage::Table { .. }));
    }
    for m in to_b {
        b.handle_message(now, id(1), m);
    }
    assert!(
        for_neighbor(&mut b, id(1))
            .iter()
            .all(|m| !matches!(m, RoutingMessage::TableRequest { .. }))
    );
    assert_eq!(b.next_hop(&id(1)), Some(id(1)));
}

/// A router that once had a route to node 1 and, by `now`, has advertised its route
/// to 9 through its own link.
fn knows_1_and_routes_to_9(me: usize, now: Millis) -> Routing {
    let start = Millis(0);
    let mut r = Routing::new(id(me), RoutingConfig::default(), start);
    for n in [1, 9] {
        r.set_link(start, id(n), 100);
        r.handle_message(start, id(n), update(1, &[(n, 0)]));
    }
    r.remove_link(start, id(1));
    r.handle_timeout(now);
    while r.poll_output().is_some() {}
    r
}

#[test]
fn a_returning_node_asks_one_neighbor_for_names_and_places_the_others_rows() {
    let now = Millis(1000);
    let mut a = knows_1_and_routes_to_9(2, now);
    let mut b = knows_1_and_routes_to_9(3, now);
    // Node 1 comes back with an empty table. Its neighbors knew it: tables by short id.
    let mut back = Routing::new(id(1), RoutingConfig::default(), now);
    a.set_link(now, id(1), 100);
    b.set_link(now, id(1), 100);
    back.set_link(now, id(2), 100);
    back.set_link(now, id(3), 100);
    let _ = for_neighbor(&mut back, id(2));
    let from_a = for_neighbor(&mut a, id(1));
    let from_b = for_neighbor(&mut b, id(1));
    for table in from_a.iter().chain(&from_b) {
        let RoutingMessage::Table { adverts, .. } = table else {
            panic!("not a table: {table:?}");
        };
        assert!(
            adverts
                .iter()
                .all(|a| matches!(a.destination.name, Name::Short(_)))
        );
    }
    let name_requests = |r: &mut Routing, to| {
        for_neighbor(r, to)
            .into_iter()
            .filter(|m| matches!(m, RoutingMessage::TableRequest { full: true, .. }))
            .collect::<Vec<_>>()
    };
    for m in from_a {
        back.handle_message(now, id(2), m);
    }
    let asked_a = name_requests(&mut back, id(2));
    assert_eq!(asked_a.len(), 1, "{asked_a:?}");
    // B's rows wait for the names A was asked for.
    for m in from_b {
        back.handle_message(now, id(3), m);
    }
    assert_eq!(name_requests(&mut back, id(3)), Vec::new());
    for m in asked_a {
        a.handle_message(now, id(1), m);
    }
    for m in for_neighbor(&mut a, id(1)) {
        back.handle_message(now, id(2), m);
    }
    assert_eq!(back.next_hop(&id(9)), Some(id(2)));
    // B's row for 9 was placed: with A gone, B's route takes over, with no new message.
    back.remove_link(now, id(2));
    assert_eq!(back.next_hop(&id(9)), Some(id(3)));
}

/// Node 1 (`a`) gains a link to a new node 3, takes its table, and has its triggered
/// update ready; returns the time after that.
fn gain_neighbor_3(now: Millis, a: &mut Routing) -> Millis {
    let config = RoutingConfig::default();
    let mut c = Routing::new(id(3), config.clone(), now);
    a.set_link(now, id(3), 100);
    c.set_link(now, id(1), 100);
    for m in for_neighbor(&mut c, id(1)) {
        a.handle_message(now, id(3), m);
    }
    let now = now.plus(config.triggered_delay_ms);
    a.handle_timeout(now);
    now
}

#[test]
fn matching_digests_keep_routes_alive_and_a_mismatch_asks_for_one_bucket() {
    let config = RoutingConfig::default();
    let mut now = Millis(0);
    let (mut a, mut b) = linked_pair(now);
    assert_eq!(b.next_hop(&id(1)), Some(id(1)));
    // Several route lifetimes of periodic refreshes only: b keeps its route to a.
    while now.0 < 3 * config.route_expiry_ms {
        now = now.plus(config.update_interval_ms);
        a.handle_timeout(now);
        b.handle_timeout(now);
        let back = exchange(now, &mut a, &mut b);
        assert!(
            back.iter()
                .all(|m| !matches!(m, RoutingMessage::TableRequest { .. })),
            "digests match in a steady pair: {back:?}"
        );
        for m in back {
            a.handle_message(now, id(2), m);
        }
    }
    assert_eq!(b.next_hop(&id(1)), Some(id(1)));
    // a learns a new destination, and the update telling b is lost: the next digest
    // differs in that destination's bucket, b asks for it, and the table it gets back
    // carries the route.
    now = gain_neighbor_3(now, &mut a);
    let lost: Vec<_> = std::iter::from_fn(|| a.poll_output()).collect();
    assert!(
        lost.iter()
            .any(|o| matches!(o, Output::Broadcast(RoutingMessage::Update { .. }))),
        "{lost:?}"
    );
    now = now.plus(config.update_interval_ms);
    a.handle_timeout(now);
    let back = exchange(now, &mut a, &mut b);
    let bucket = 1 << wire::bucket(ShortId::of(&id(3)));
    assert!(
        back.contains(&RoutingMessage::TableRequest {
            buckets: bucket,
            full: false
        }),
        "{back:?}"
    );
    // The bucket comes back by short ids; b has never heard of 3, so it asks again for
    // that bucket in full.
    let mut requests = back;
    for full in [false, true] {
        for m in std::mem::take(&mut requests) {
            a.handle_message(now, id(2), m);
        }
        let resent = for_neighbor(&mut a, id(2));
        let [
            RoutingMessage::Table {
                buckets, adverts, ..
            },
        ] = &resent[..]
        else {
            panic!("one table: {resent:?}");
        };
        assert_eq!(*buckets, bucket);
        assert_eq!(
            adverts
                .iter()
                .all(|a| matches!(a.destination.name, Name::Full(_))),
            full
        );
        for m in resent {
            b.handle_message(now, id(1), m);
        }
        requests = for_neighbor(&mut b, id(1));
    }
    assert!(requests.is_empty(), "{requests:?}");
    assert_eq!(b.next_hop(&id(3)), Some(id(1)));
}

#[test]
fn a_lost_update_about_a_known_destination_is_repaired_by_short_ids() {
    let config = RoutingConfig::default();
    let mut now = Millis(0);
    let (mut a, mut b) = linked_pair(now);
    now = gain_neighbor_3(now, &mut a);
    let _ = exchange(now, &mut a, &mut b);
    assert_eq!(b.next_hop(&id(3)), Some(id(1)));
    // a loses 3, and the retraction to b is lost.
    a.remove_link(now, id(3));
    now = now.plus(config.triggered_delay_ms);
    a.handle_timeout(now);
    let _lost = for_neighbor(&mut a, id(2));
    now = now.plus(config.update_interval_ms);
    a.handle_timeout(now);
    let back = exchange(now, &mut a, &mut b);
    for m in back {
        a.handle_message(now, id(2), m);
    }
    let resent = for_neighbor(&mut a, id(2));
    assert!(
        matches!(&resent[..], [RoutingMessage::Table { adverts, .. }]
            if adverts.iter().all(|a| matches!(a.destination.name, Name::Short(_)))),
        "{resent:?}"
    );
    for m in resent {
        b.handle_message(now, id(1), m);
    }
    assert_eq!(b.next_hop(&id(3)), None);
    assert!(for_neighbor(&mut b, id(1)).is_empty());
}

#[test]
fn a_destination_every_neighbor_named_is_first_named_by_short_id() {
    let now = Millis(0);
    let mut r = Routing::new(id(1), RoutingConfig::default(), now);
    r.set_link(now, id(2), 100);
    r.set_link(now, id(3), 100);
    // Both neighbors name 9; only 2 names 8, which 3 may never have heard of.
    r.handle_message(now, id(2), update(1, &[(9, 100), (8, 100)]));
    r.handle_message(now, id(3), update(1, &[(9, 150)]));
    r.handle_timeout(now.plus(RoutingConfig::default().triggered_delay_ms));
    let names: Vec<(Tag, Name)> = adverts_for(&mut r, id(3))
        .into_iter()
        .map(|a| (a.destination.tag, a.destination.name))
        .collect();
    assert!(names.contains(&(tag_of(&r, 9), Name::Short(ShortId::of(&id(9))))));
    assert!(names.contains(&(tag_of(&r, 8), Name::Full(id(8)))));
}

#[test]
fn a_tag_whose_naming_was_lost_is_asked_for_by_name() {
    let config = RoutingConfig::default();
    let mut now = Millis(0);
    let (mut a, mut b) = linked_pair(now);
    now = gain_neighbor_3(now, &mut a);
    // The update naming 3 in full is lost on its way to b.
    let _lost = for_neighbor(&mut a, id(2));
    // 3's link gets much dearer: a tells it by its tag alone, which b cannot place.
    a.set_link(now, id(3), 1000);
    now = now.plus(config.triggered_delay_ms);
    a.handle_timeout(now);
    let asked = exchange(now, &mut a, &mut b);
    let tag = tag_of(&a, 3);
    assert_eq!(b.next_hop(&id(3)), None);
    assert_eq!(asked, vec![RoutingMessage::NameRequest { tags: vec![tag] }]);
    // a names it in full, with the route as it told it.
    for m in asked {
        a.handle_message(now, id(2), m);
    }
    let named = for_neighbor(&mut a, id(2));
    let expected = Advert {
        destination: Destination::full(tag, id(3)),
        seqno: 0,
        metric: 1000,
    };
    assert!(
        matches!(&named[..], [RoutingMessage::Update { adverts, .. }] if adverts == &[expected]),
        "{named:?}"
    );
    for m in named {
        b.handle_message(now, id(1), m);
    }
    assert_eq!(b.next_hop(&id(3)), Some(id(1)));
    // From then on the tag alone does.
    a.set_link(now, id(3), 100);
    now = now.plus(config.triggered_delay_ms);
    a.handle_timeout(now);
    assert_eq!(exchange(now, &mut a, &mut b), vec![]);
    let metric = b
        .routes()
        .find(|r| r.destination == id(3))
        .map(|r| r.metric);
    assert_eq!(metric, Some(200));
}

#[test]
fn tags_from_a_neighbors_earlier_run_are_not_read_in_its_new_one() {
    let now = Millis(0);
    // 2 names 9 in full, under its tag for it, in its run 0.
    let mut r = routing_9_through_2(now);
    let _ = std::iter::from_fn(|| r.poll_output()).count();
    let by_tag = |serial, incarnation, metric| RoutingMessage::Update {
        serial,
        incarnation,
        adverts: vec![Advert {
            destination: Destination::tag(their_tag(9)),
            seqno: 0,
            metric,
        }],
        digest: None,
    };
    let metric_to_9 = |r: &Routing| {
        r.routes()
            .find(|r| r.destination == id(9))
            .map(|r| r.metric)
    };
    assert_eq!(metric_to_9(&r), Some(200));
    // In the same run, the tag alone names 9.
    r.handle_message(now, id(2), by_tag(2, 0, 50));
    assert_eq!(metric_to_9(&r), Some(150));
    // 2's router restarted and numbers anew: the tag is not read as 9's, but asked for.
    r.handle_message(now, id(2), by_tag(3, 1, 900));
    assert_eq!(metric_to_9(&r), Some(150));
    let asked: Vec<RoutingMessage> = for_neighbor(&mut r, id(2))
        .into_iter()
        .filter(|m| matches!(m, RoutingMessage::NameRequest { .. }))
        .collect();
    assert_eq!(
        asked,
        vec![RoutingMessage::NameRequest {
            tags: vec![their_tag(9)]
        }]
    );
}

#[test]
fn a_metric_drift_is_told_with_the_refresh_only_beyond_half_a_significant_change() {
    let config = RoutingConfig::default();
    let mut now = Millis(0);
    let mut r = routing_9_through_2(now);
    now = now.plus(config.triggered_delay_ms);
    r.handle_timeout(now);
    let told_9 = |r: &mut Routing| -> Vec<u16> {
        let tag = tag_of(r, 9);
        adverts_for(r, id(3))
            .into_iter()
            .filter(|a| a.destination.tag == tag)
            .map(|a| a.metric)
            .collect()
    };
    assert_eq!(told_9(&mut r), vec![200]);
    // 10% longer: less than half of a significant change, so not even the refresh
    // tells it.
    r.set_link(now, id(2), 120);
    now = now.plus(config.update_interval_ms);
    r.handle_timeout(now);
    assert_eq!(told_9(&mut r), vec![]);
    // 15% longer than told: the refresh does.
    r.set_link(now, id(2), 130);
    now = now.plus(config.triggered_delay_ms);
    r.handle_timeout(now);
    assert_eq!(
        told_9(&mut r),
        vec![],
        "not significant enough for an update"
    );
    now = now.plus(config.update_interval_ms);
    r.handle_timeout(now);
    assert_eq!(told_9(&mut r), vec![230]);
}

#[test]
fn a_late_copy_of_an_older_update_does_not_overwrite_a_newer_one() {
    let now = Millis(0);
    let mut r = Routing::new(id(1), RoutingConfig::default(), now);
    r.set_link(now, id(2), 100);
    r.handle_message(now, id(2), update(7, &[(9, 100)]));
    r.handle_message(now, id(2), update(6, &[(9, INFINITY)]));
    assert_eq!(r.next_hop(&id(9)), Some(id(2)), "the retraction was older");
    r.handle_message(now, id(2), update(8, &[(9, INFINITY)]));
    assert_eq!(r.next_hop(&id(9)), None);
}

#[test]
fn an_unknown_short_id_asks_for_its_bucket_in_full() {
    let now = Millis(0);
    let mut r = Routing::new(id(1), RoutingConfig::default(), now);
    r.set_link(now, id(2), 100);
    let _: Vec<_> = std::iter::from_fn(|| r.poll_output()).collect();
    let short = ShortId::of(&id(9));
    r.handle_message(
        now,
        id(2),
        RoutingMessage::Update {
            serial: 1,
            incarnation: 0,
            adverts: vec![Advert {
                destination: Destination::short(their_tag(9), short),
                seqno: 0,
                metric: 100,
            }],
            digest: None,
        },
    );
    assert_eq!(r.next_hop(&id(9)), None);
    assert_eq!(
        for_neighbor(&mut r, id(2)),
        vec![RoutingMessage::TableRequest {
            buckets: 1 << wire::bucket(short),
            full: true
        }]
    );
}

#[test]
fn changes_name_known_destinations_by_tag() {
    let now = Millis(0);
    let mut r = routing_9_through_2(now);
    let later = now.plus(1000);
    r.handle_timeout(later);
    let first = adverts_for(&mut r, id(2));
    assert!(
        first.contains(&Advert {
            destination: Destination::full(tag_of(&r, 9), id(9)),
            seqno: 0,
            metric: 200
        }),
        "{first:?}"
    );
    // Moving to another next hop is told by tag: every neighbor was told the id.
    r.handle_message(later, id(3), update(1, &[(9, 10)]));
    r.handle_timeout(later.plus(1000));
    let second = adverts_for(&mut r, id(2));
    assert_eq!(
        second,
        vec![Advert {
            destination: Destination::tag(tag_of(&r, 9)),
            seqno: 0,
            metric: 110
        }]
    );
}

/// A little network of routers with a message queue; links can fail, messages can be
/// lost or reordered.
struct Net {
    nodes: Vec<Routing>,
    links: BTreeSet<(usize, usize)>,
    in_flight: Vec<(usize, usize, RoutingMessage)>,
    now: Millis,
}

impl Net {
    fn new(n: usize) -> Self {
        Net {
            nodes: (0..n)
                .map(|i| Routing::new(id(i), RoutingConfig::default(), Millis(0)))
                .collect(),
            links: BTreeSet::new(),
            in_flight: vec![],
            now: Millis(0),
        }
    }

    fn index(&self, node: NodeId) -> usize {
        self.nodes
            .iter()
            .position(|r| r.id() == node)
            .expect("known node")
    }

    fn link_up(&mut self, a: usize, b: usize, cost: u16) {
        self.links.insert((a.min(b), a.max(b)));
        self.nodes[a].set_link(self.now, id(b), cost);
        self.nodes[b].set_link(self.now, id(a), cost);
        self.collect();
    }

    fn link_down(&mut self, a: usize, b: usize) {
        self.links.remove(&(a.min(b), a.max(b)));
        self.nodes[a].remove_link(self.now, id(b));
        self.nodes[b].remove_link(self.now, id(a));
        self.collect();
    }

    fn up(&self, a: usize, b: usize) -> bool {
        self.links.contains(&(a.min(b), a.max(b)))
    }

    fn collect(&mut self) {
        for i in 0..self.nodes.len() {
            while let Some(out) = self.nodes[i].poll_output() {
                match out {
                    Output::Broadcast(m) => {
                        for j in 0..self.nodes.len() {
                            if j != i && self.up(i, j) {
                                self.in_flight.push((i, j, m.clone()));
                            }
                        }
                    }
                    Output::Send(to, m) => {
                        let j = self.index(to);
                        if self.up(i, j) {
                            self.in_flight.push((i, j, m));
                        }
                    }
                    Output::RouteChanged { .. } => {}
                }
            }
        }
    }

    /// Delivers message `k` of the queue (if its link is still up).
    fn deliver(&mut self, k: usize) {
        let (from, to, m) = self.in_flight.remove(k);
        if self.up(from, to) {
            self.nodes[to].handle_message(self.now, id(from), m);
            self.collect();
        }
    }

    fn tick(&mut self, ms: u64) {
        self.now = self.now.plus(ms);
        for node in &mut self.nodes {
            node.handle_timeout(self.now);
        }
        self.collect();
    }

    /// Delivers everything in order, with ticks, for three periodic-update intervals.
    fn settle(&mut self) {
        let rounds = 3 * RoutingConfig::default().update_interval_ms / 500;
        for _ in 0..rounds {
            while !self.in_flight.is_empty() {
                self.deliver(0);
            }
            self.tick(500);
        }
    }

    /// Panics if following next hops toward any destination revisits a node.
    fn assert_loop_free(&self) {
        for d in 0..self.nodes.len() {
            for start in 0..self.nodes.len() {
                let mut at = start;
                let mut seen = BTreeSet::from([start]);
                while let Some(hop) = self.nodes[at].next_hop(&id(d)) {
                    at = self.index(hop);
                    assert!(
                        seen.insert(at),
                        "routing loop toward {d} from {start}: {seen:?}"
                    );
                }
            }
        }
    }

    fn connected(&self, a: usize, b: usize) -> bool {
        let mut seen = BTreeSet::from([a]);
        let mut queue = vec![a];
        while let Some(x) = queue.pop() {
            for y in 0..self.nodes.len() {
                if self.up(x, y) && seen.insert(y) {
                    queue.push(y);
                }
            }
        }
        seen.contains(&b)
    }
}

#[test]
fn link_cost_grows_with_loss_and_rtt() {
    assert_eq!(link_cost(0.0, Some(1.0)), 257);
    assert!(link_cost(0.1, Some(1.0)) > link_cost(0.0, Some(1.0)));
    assert!(link_cost(0.0, Some(50.0)) > link_cost(0.0, Some(1.0)));
    assert!(link_cost(1.0, Some(1e9)) < INFINITY);
}

#[test]
fn a_line_learns_multi_hop_routes() {
    let mut net = Net::new(4);
    for i in 0..3 {
        net.link_up(i, i + 1, 256);
    }
    net.settle();
    assert_eq!(net.nodes[0].next_hop(&id(3)), Some(id(1)));
    assert_eq!(net.nodes[3].next_hop(&id(0)), Some(id(2)));
    let route = net.nodes[0]
        .routes()
        .find(|r| r.destination == id(3))
        .expect("route");
    assert_eq!(route.metric, 3 * 256);
}

#[test]
fn a_broken_link_is_routed_around() {
    // Square 0-1-2-3-0 with 0-1-2 cheaper.
    let mut net = Net::new(4);
    net.link_up(0, 1, 100);
    net.link_up(1, 2, 100);
    net.link_up(2, 3, 300);
    net.link_up(3, 0, 300);
    net.settle();
    assert_eq!(net.nodes[0].next_hop(&id(2)), Some(id(1)));
    net.link_down(1, 2);
    net.settle();
    assert_eq!(net.nodes[0].next_hop(&id(2)), Some(id(3)));
    assert_eq!(net.nodes[1].next_hop(&id(2)), Some(id(0)));
    net.assert_loop_free();
}

#[test]
fn a_partitioned_destination_becomes_unreachable() {
    let mut net = Net::new(3);
    net.link_up(0, 1, 100);
    net.link_up(1, 2, 100);
    net.settle();
    net.link_down(1, 2);
    net.settle();
    assert_eq!(net.nodes[0].next_hop(&id(2)), None);
    assert_eq!(net.nodes[0].next_hop(&id(1)), Some(id(1)));
    assert_eq!(
        net.nodes[0].routes().count(),
        1,
        "only the route to 1 remains"
    );
}

#[test]
fn updates_from_strangers_are_ignored() {
    let mut r = Routing::new(id(0), RoutingConfig::default(), Millis(0));
    r.handle_message(
        Millis(0),
        id(9),
        RoutingMessage::Update {
            serial: 1,
            incarnation: 0,
            adverts: vec![Advert {
                destination: Destination::full(their_tag(5), id(5)),
                seqno: 1,
                metric: 1,
            }],
            digest: None,
        },
    );
    assert_eq!(r.next_hop(&id(5)), None);
}

#[derive(Debug, Clone)]
enum Event {
    Toggle(usize, usize),
    Cost(usize, usize, u16),
    /// `a`'s failure detector suspects its link to `b`, or stops suspecting it.
    Suspect(usize, usize, bool),
    Deliver(usize),
    Drop(usize),
    Tick(u64),
}

fn event(n: usize) -> impl Strategy<Value = Event> {
    prop_oneof![
        (0..n, 0..n).prop_map(|(a, b)| Event::Toggle(a, b)),
        (0..n, 0..n, 1u16..2000).prop_map(|(a, b, c)| Event::Cost(a, b, c)),
        (0..n, 0..n, any::<bool>()).prop_map(|(a, b, s)| Event::Suspect(a, b, s)),
        any::<usize>().prop_map(Event::Deliver),
        any::<usize>().prop_map(Event::Deliver),
        any::<usize>().prop_map(Event::Deliver),
        any::<usize>().prop_map(Event::Drop),
        (1u64..6000).prop_map(Event::Tick),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Random topology, random link failures, cost changes and suspicions, messages
    /// delivered in any order or lost: no routing loop ever forms. Then, once the network is left alone,
    /// every connected pair has a route and the route follows live links.
    #[test]
    fn loop_free_under_churn_and_convergent_after(
        seed in any::<u64>(),
        events in proptest::collection::vec(event(7), 1..300),
    ) {
        let n = 7;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut net = Net::new(n);
        for a in 0..n {
            for b in (a + 1)..n {
                if rng.random_bool(0.4) {
                    net.link_up(a, b, rng.random_range(1..1000));
                }
            }
        }
        for e in events {
            match e {
                Event::Toggle(a, b) if a != b => {
                    if net.up(a, b) { net.link_down(a, b) } else { net.link_up(a, b, 300) }
                }
                Event::Cost(a, b, c) if a != b && net.up(a, b) => net.link_up(a, b, c),
                Event::Suspect(a, b, suspected) if a != b && net.up(a, b) => {
                    let now = net.now;
                    net.nodes[a].suspect_link(now, id(b), suspected);
                    net.collect();
                }
                Event::Deliver(k) if !net.in_flight.is_empty() => {
                    let k = k % net.in_flight.len();
                    net.deliver(k);
                }
                Event::Drop(k) if !net.in_flight.is_empty() => {
                    let k = k % net.in_flight.len();
                    net.in_flight.remove(k);
                }
                Event::Tick(ms) => net.tick(ms),
                _ => {}
            }
            net.assert_loop_free();
        }
        net.settle();
        net.assert_loop_free();
        for a in 0..n {
            for b in 0..n {
                if a == b { continue; }
                let hop = net.nodes[a].next_hop(&id(b));
                if net.connected(a, b) {
                    let hop = hop.map(|h| net.index(h));
                    prop_assert!(hop.is_some_and(|h| net.up(a, h)), "{a} has no live route to {b}");
                } else {
                    prop_assert_eq!(hop, None, "{} routes to unreachable {}", a, b);
                }
            }
        }
    }
}

#[test]
fn a_restarted_router_outruns_the_seqno_its_neighbors_remember() {
    let now = Millis(0);
    // a restarted: seqno 0. b's table still speaks of a at seqno 5, which is what every
    // feasibility distance for a is at.
    let mut a = Routing::new(id(1), RoutingConfig::default(), now);
    a.set_link(now, id(2), 100);
    let _ = for_neighbor(&mut a, id(2));
    a.handle_message(
        now,
        id(2),
        RoutingMessage::Table {
            serial: 1,
            incarnation: 0,
            buckets: ALL_BUCKETS,
            adverts: vec![
                Advert {
                    destination: Destination::full(their_tag(2), id(2)),
                    seqno: 0,
                    metric: 0,
                },
                Advert {
                    destination: Destination::full(their_tag(1), id(1)),
                    seqno: 5,
                    metric: 100,
                },
            ],
        },
    );
    assert_eq!(a.seqno(), 6, "no seqno request needed");
    a.handle_timeout(now.plus(RoutingConfig::default().urgent_delay_ms));
    let told = for_neighbor(&mut a, id(2));
    assert!(
        told.iter()
            .any(|m| matches!(m, RoutingMessage::Update { adverts, .. }
            if adverts.iter().any(|ad| ad.destination == Destination::tag(0) && ad.seqno == 6))),
        "{told:?}"
    );
}

#[test]
fn a_table_in_full_replaces_what_a_restarted_neighbor_said_under_older_serials() {
    let now = Millis(0);
    let mut r = Routing::new(id(1), RoutingConfig::default(), now);
    r.set_link(now, id(2), 100);
    r.handle_message(now, id(2), update(1_000_000, &[(9, 100)]));
    assert_eq!(r.next_hop(&id(9)), Some(id(2)));
    // 2 restarted, numbering from 0: its table no longer lists 9.
    r.handle_message(
        now,
        id(2),
        RoutingMessage::Table {
            serial: 3,
            incarnation: 0,
            buckets: ALL_BUCKETS,
            adverts: vec![Advert {
                destination: Destination::full(their_tag(2), id(2)),
                seqno: 0,
                metric: 0,
            }],
        },
    );
    assert_eq!(r.next_hop(&id(9)), None);
    // And its next updates count.
    r.handle_message(now, id(2), update(4, &[(9, 50)]));
    assert_eq!(r.next_hop(&id(9)), Some(id(2)));
}

#[test]
fn a_newer_seqno_alone_is_told_only_back_along_a_requests_path() {
    let config = RoutingConfig::default();
    let mut now = Millis(0);
    let mut r = routing_9_through_2(now);
    now = now.plus(config.triggered_delay_ms);
    r.handle_timeout(now);
    let _ = for_neighbor(&mut r, id(3));
    // The destination moved to seqno 1: r follows, and tells no one.
    r.handle_message(now, id(2), update_9(2, 1, 100));
    assert_eq!(r.routes().next().map(|route| route.seqno), Some(1));
    now = now.plus(config.triggered_delay_ms);
    r.handle_timeout(now);
    assert_eq!(for_neighbor(&mut r, id(3)), vec![]);
    // 3 is starved and asks for seqno 2: r passes the request on toward 9 ...
    r.handle_message(now, id(3), request(tag_of(&r, 9), 2, 5));
    let passed_on: Vec<Output> = std::iter::from_fn(|| r.poll_output()).collect();
    assert!(
        passed_on.iter().any(|o| matches!(o, Output::Send(to, RoutingMessage::SeqnoRequests(r)) if *to == id(2) && r[0].seqno == 2)),
        "{passed_on:?}"
    );
    // ... and the answer goes out at once.
    r.handle_message(now, id(2), update_9(3, 2, 100));
    now = now.plus(config.urgent_delay_ms);
    r.handle_timeout(now);
    let told = for_neighbor(&mut r, id(3));
    assert!(
        told.iter()
            .any(|m| matches!(m, RoutingMessage::Update { adverts, .. }
            if adverts.iter().any(|a| a.seqno == 2))),
        "{told:?}"
    );
}

#[test]
fn an_unanswered_seqno_request_is_resent_until_given_up() {
    let config = RoutingConfig::default();
    let mut now = Millis(0);
    // 3 has no route to 9: asking it would be wasted.
    let mut r = routing_9_through_2(now);
    // 2's route got longer than anything r can take without a newer seqno.
    r.handle_message(now, id(2), update(2, &[(9, 500)]));
    assert_eq!(r.next_hop(&id(9)), None);
    let requests = |r: &mut Routing| {
        std::iter::from_fn(|| r.poll_output())
            .filter(|o| match o {
                Output::Send(to, RoutingMessage::SeqnoRequests(_)) => {
                    assert_eq!(*to, id(2), "asked a neighbor without a route");
                    true
                }
                Output::Broadcast(RoutingMessage::SeqnoRequests(_)) => {
                    panic!("asked every neighbor")
                }
                _ => false,
            })
            .count()
    };
    assert_eq!(requests(&mut r), 1);
    // Woken only when it asks to be, so a resend it forgot to schedule never goes out.
    let mut resent_at = Vec::new();
    while now.0 < 30_000 {
        now = r.next_deadline().expect("a deadline");
        r.handle_timeout(now);
        resent_at.extend(std::iter::repeat_n(now.0, requests(&mut r)));
    }
    // Each resend waits as long as the request has been open, until it is given up on.
    let interval = config.request_interval_ms;
    assert_eq!(
        resent_at,
        [1, 2, 4, 8].map(|k| k * interval),
        "resent at these times"
    );
}

/// A seqno request for 9 from `asker`, with five hops left.
fn request_9_from(r: &mut Routing, now: Millis, asker: usize) {
    r.handle_message(now, id(asker), request(tag_of(r, 9), 1, 5));
}

#[test]
fn a_request_heard_from_several_neighbors_is_passed_on_once() {
    let now = Millis(0);
    let mut r = Routing::new(id(1), RoutingConfig::default(), now);
    for n in 2..=4 {
        r.set_link(now, id(n), 100);
    }
    r.handle_message(now, id(2), update(1, &[(9, 100)]));
    let _ = std::iter::from_fn(|| r.poll_output()).count();
    for asker in [3, 4] {
        request_9_from(&mut r, now, asker);
    }
    let passed_on: Vec<Output> = std::iter::from_fn(|| r.poll_output())
        .filter(|o| matches!(o, Output::Send(_, RoutingMessage::SeqnoRequests(_))))
        .collect();
    assert_eq!(
        passed_on,
        vec![Output::Send(id(2), request(their_tag(9), 1, 4))]
    );
}

#[test]
fn a_destination_is_named_in_full_only_the_first_time() {
    let config = RoutingConfig::default();
    let mut now = Millis(0);
    let mut r = Routing::new(id(1), config.clone(), now);
    r.set_link(now, id(2), 100);
    r.set_link(now, id(3), 100);
    let told = |r: &mut Routing, now: Millis| -> Vec<Destination> {
        r.handle_timeout(now);
        adverts_for(r, id(3))
            .into_iter()
            .map(|a| a.destination)
            .collect()
    };
    r.handle_message(now, id(2), update_9(1, 0, 100));
    now = now.plus(config.triggered_delay_ms);
    let tag = tag_of(&r, 9);
    assert_eq!(told(&mut r, now), vec![Destination::full(tag, id(9))]);
    // Lost, and back under a newer seqno: 3 already knows 9's id, and our tag for it.
    r.handle_message(now, id(2), update_9(2, 0, INFINITY));
    now = now.plus(config.triggered_delay_ms);
    assert_eq!(told(&mut r, now), vec![Destination::tag(tag)]);
    r.handle_message(now, id(2), update_9(3, 1, 100));
    now = now.plus(config.triggered_delay_ms);
    assert_eq!(told(&mut r, now), vec![Destination::tag(tag)]);
}

/// r routes to 9 through 2, and hears of a longer, unfeasible route through 3.
fn holding_router(now: Millis) -> Routing {
    let mut r = Routing::new(id(1), RoutingConfig::default(), now);
    for n in 2..=4 {
        r.set_link(now, id(n), 100);
    }
    r.handle_message(now, id(2), update(1, &[(9, 100)]));
    r.handle_message(now, id(3), update(1, &[(9, 400)]));
    assert_eq!(r.next_hop(&id(9)), Some(id(2)));
    r.handle_timeout(now.plus(RoutingConfig::default().triggered_delay_ms));
    let _ = std::iter::from_fn(|| r.poll_output()).count();
    r
}

/// What r tells 4 about 9 by `until`, ticking every 10 ms.
fn told_about_9(r: &mut Routing, mut now: Millis, until: Millis) -> Vec<(u32, u16)> {
    let mut told = vec![];
    while now < until {
        now = now.plus(10);
        r.handle_timeout(now);
        let tag = tag_of(r, 9);
        told.extend(
            adverts_for(r, id(4))
                .into_iter()
                .filter(|a| a.destination.tag == tag)
                .map(|a| (a.seqno, a.metric)),
        );
    }
    told
}

#[test]
fn a_lost_route_answered_within_the_hold_is_never_retracted() {
    let config = RoutingConfig::default();
    let now = Millis(0);
    let mut r = holding_router(now);
    r.remove_link(now, id(2));
    assert_eq!(r.next_hop(&id(9)), None);
    let answer_at = now.plus(config.retraction_hold_ms / 2);
    assert_eq!(told_about_9(&mut r, now, answer_at), vec![]);
    // The request is answered: 3's route under seqno 1.
    r.handle_message(answer_at, id(3), update_9(2, 1, 400));
    assert_eq!(r.next_hop(&id(9)), Some(id(3)));
    // Neighbors never heard the route was lost, so nobody waits on it: it goes with
    // the batch, not at once.
    let urgent_end = answer_at.plus(config.urgent_delay_ms + 10);
    assert_eq!(told_about_9(&mut r, answer_at, urgent_end), vec![]);
    let told = told_about_9(
        &mut r,
        urgent_end,
        answer_at.plus(config.retraction_hold_ms * 2),
    );
    assert_eq!(
        told,
        vec![(1, 500)],
        "the new route, and no retraction before it"
    );
}

#[test]
fn a_route_found_unasked_goes_with_the_batch_and_an_answer_to_the_asker_at_once() {
    let config = RoutingConfig::default();
    assert!(config.urgent_delay_ms < config.triggered_delay_ms);
    let mut now = Millis(0);
    let mut r = Routing::new(id(1), config.clone(), now);
    for n in 2..=4 {
        r.set_link(now, id(n), 100);
    }
    let _ = std::iter::from_fn(|| r.poll_output()).count();
    // What neighbors 3 and 4 are told of 9 by `at`.
    let told_9_by = |r: &mut Routing, at: Millis| {
        r.handle_timeout(at);
        let tag = tag_of(r, 9);
        let outputs: Vec<Output> = std::iter::from_fn(|| r.poll_output()).collect();
        [3, 4].map(|n| {
            outputs
                .iter()
                .filter_map(|o| match o {
                    Output::Send(to, m) if *to == id(n) => Some(m),
                    Output::Broadcast(m) => Some(m),
                    _ => None,
                })
                .flat_map(|m| match m {
                    RoutingMessage::Update { adverts, .. } => adverts.clone(),
                    _ => vec![],
                })
                .filter(|a| a.destination.tag == tag)
                .map(|a| (a.seqno, a.metric))
                .collect::<Vec<_>>()
        })
    };
    // 9 joined, and 2 tells r of it: nobody waits on it, so it waits for the batch.
    r.handle_message(now, id(2), update_9(1, 0, 100));
    assert_eq!(
        told_9_by(&mut r, now.plus(config.urgent_delay_ms)),
        [vec![], vec![]]
    );
    now = now.plus(config.triggered_delay_ms);
    assert_eq!(told_9_by(&mut r, now), [vec![(0, 200)], vec![(0, 200)]]);
    // Lost, with nobody else to ask, then asked for by 3.
    r.handle_message(now, id(2), update_9(2, 0, INFINITY));
    now = now.plus(config.triggered_delay_ms);
    let retracted = vec![(0, INFINITY)];
    assert_eq!(told_9_by(&mut r, now), [retracted.clone(), retracted]);
    r.handle_message(now, id(3), request(tag_of(&r, 9), 1, 5));
    // The answer goes to 3 at once, and to 4 with the batch.
    r.handle_message(now, id(2), update_9(3, 1, 100));
    assert_eq!(
        told_9_by(&mut r, now.plus(config.urgent_delay_ms)),
        [vec![(1, 200)], vec![]]
    );
    now = now.plus(config.triggered_delay_ms);
    assert_eq!(told_9_by(&mut r, now), [vec![(1, 200)], vec![(1, 200)]]);
}

#[test]
fn a_lost_route_is_retracted_when_the_hold_passes_unanswered() {
    let config = RoutingConfig::default();
    let now = Millis(0);
    let mut r = holding_router(now);
    // 2's route got longer: r's through it is no longer feasible.
    r.handle_message(now, id(2), update(2, &[(9, 900)]));
    assert_eq!(r.next_hop(&id(9)), None);
    let hold_end = now.plus(config.retraction_hold_ms);
    assert_eq!(told_about_9(&mut r, now, hold_end), vec![]);
    let told = told_about_9(
        &mut r,
        hold_end,
        hold_end.plus(config.triggered_delay_ms + 10),
    );
    assert_eq!(told, vec![(0, INFINITY)]);
    // The answer comes late: the neighbors told of the loss wait on it without asking,
    // so it goes to all of them at once.
    let answer_at = hold_end.plus(config.triggered_delay_ms + 10);
    r.handle_message(answer_at, id(3), update_9(2, 1, 400));
    assert_eq!(r.next_hop(&id(9)), Some(id(3)));
    let told = told_about_9(
        &mut r,
        answer_at,
        answer_at.plus(config.urgent_delay_ms + 10),
    );
    assert_eq!(told, vec![(1, 500)]);
}

#[test]
fn a_lost_route_with_nobody_left_to_ask_is_retracted_without_a_hold() {
    let config = RoutingConfig::default();
    let now = Millis(0);
    let mut r = holding_router(now);
    r.remove_link(now, id(2));
    // 3 loses its route too: nothing left to wait for.
    r.handle_message(now, id(3), update(2, &[(9, INFINITY)]));
    // With the triggered update, well before a hold would end.
    assert!(config.triggered_delay_ms < config.retraction_hold_ms);
    let told = told_about_9(&mut r, now, now.plus(config.triggered_delay_ms + 10));
    assert_eq!(told, vec![(0, INFINITY)]);
}

#[test]
fn a_retraction_from_the_next_hop_is_passed_on_without_a_hold() {
    // The next hop held its retraction already: holding it again at every hop would
    // add up along the path.
    let config = RoutingConfig::default();
    let now = Millis(0);
    let mut r = holding_router(now);
    r.handle_message(now, id(2), update(2, &[(9, INFINITY)]));
    // With the triggered update, well before a hold would end.
    assert!(config.triggered_delay_ms < config.retraction_hold_ms);
    let told = told_about_9(&mut r, now, now.plus(config.triggered_delay_ms + 10));
    assert_eq!(told, vec![(0, INFINITY)]);
}

/// Seqno requests for 9 that `r` sends by `until`, ticking every 10 ms, and to whom.
fn requests_for_9(r: &mut Routing, mut now: Millis, until: Millis) -> Vec<NodeId> {
    let mut asked = vec![];
    loop {
        asked.extend(
            std::iter::from_fn(|| r.poll_output()).filter_map(|o| match o {
                Output::Send(to, RoutingMessage::SeqnoRequests(requests))
                    if requests.iter().any(|r| r.destination == their_tag(9)) =>
                {
                    Some(to)
                }
                _ => None,
            }),
        );
        if now >= until {
            return asked;
        }
        now = now.plus(10);
        r.handle_timeout(now);
    }
}

#[test]
fn a_retraction_from_the_next_hop_is_asked_about_only_if_still_unanswered_later() {
    // The next hop asked already: its answer, or nobody's, will come. r asks on its own
    // only when a request interval has passed without a route.
    let config = RoutingConfig::default();
    let now = Millis(0);
    let mut r = holding_router(now);
    r.handle_message(now, id(2), update(2, &[(9, INFINITY)]));
    assert_eq!(r.next_hop(&id(9)), None);
    let later = now.plus(config.request_interval_ms);
    assert_eq!(requests_for_9(&mut r, now, Millis(later.0 - 10)), vec![]);
    // 3 still has its (unfeasible) route a request interval on: now r asks it.
    assert_eq!(requests_for_9(&mut r, later, later.plus(10)), vec![id(3)]);

    // The same, but the answer to the next hop's request comes in time: no request.
    let mut r = holding_router(now);
    r.handle_message(now, id(2), update(2, &[(9, INFINITY)]));
    let answer_at = now.plus(config.request_interval_ms / 2);
    assert_eq!(requests_for_9(&mut r, now, answer_at), vec![]);
    r.handle_message(answer_at, id(2), update_9(3, 1, 100));
    assert_eq!(r.next_hop(&id(9)), Some(id(2)));
    let end = answer_at.plus(config.request_interval_ms * 3);
    assert_eq!(requests_for_9(&mut r, answer_at, end), vec![]);
}

#[test]
fn a_retraction_from_the_next_hop_is_asked_about_at_once_for_a_neighbor_that_waits() {
    // 4 asked r, and r passed the request on to its next hop 2: it died there when 2
    // retracted, so r asks 3 at once for 4.
    let now = Millis(0);
    let mut r = holding_router(now);
    request_9_from(&mut r, now, 4);
    assert_eq!(requests_for_9(&mut r, now, now), vec![id(2)]);
    r.handle_message(now, id(2), update(2, &[(9, INFINITY)]));
    assert_eq!(r.next_hop(&id(9)), None);
    assert_eq!(requests_for_9(&mut r, now, now), vec![id(3)]);
}

#[test]
fn a_request_goes_on_along_an_unfeasible_route_when_ours_cannot_carry_it() {
    let config = RoutingConfig::default();
    let now = Millis(0);
    // Our route leads back to the asker: on to 3, whose route r could not take itself.
    let mut r = holding_router(now);
    request_9_from(&mut r, now, 2);
    assert_eq!(requests_for_9(&mut r, now, now), vec![id(3)]);

    // Our route is gone and our own request is a request interval old: a neighbor's
    // request goes on to 3 too, instead of dying here.
    let mut r = holding_router(now);
    r.remove_link(now, id(2));
    assert_eq!(requests_for_9(&mut r, now, now), vec![id(3)]);
    let later = now.plus(config.request_interval_ms + 10);
    let _ = requests_for_9(&mut r, now, later);
    request_9_from(&mut r, later, 4);
    assert_eq!(requests_for_9(&mut r, later, later), vec![id(3)]);

    // Nobody but the asker advertises a route: nowhere to go.
    let mut r = holding_router(now);
    r.remove_link(now, id(3));
    request_9_from(&mut r, now, 2);
    assert_eq!(requests_for_9(&mut r, now, now), vec![]);
}

#[test]
fn a_suspected_next_hop_gives_way_to_a_feasible_route_until_refuted() {
    let now = Millis(0);
    let mut r = Routing::new(id(1), RoutingConfig::default(), now);
    for n in [2, 3] {
        r.set_link(now, id(n), 100);
    }
    r.handle_message(now, id(2), update(1, &[(9, 100)]));
    r.handle_message(now, id(3), update(1, &[(9, 150)]));
    assert_eq!(r.next_hop(&id(9)), Some(id(2)));
    r.suspect_link(now, id(2), true);
    assert_eq!(r.next_hop(&id(9)), Some(id(3)));
    r.suspect_link(now, id(2), false);
    assert_eq!(r.next_hop(&id(9)), Some(id(2)));
}

/// A holding router whose failure detector suspects 2, its next hop toward 9 and
/// still its only feasible one.
fn suspecting_its_next_hop(now: Millis) -> Routing {
    let mut r = holding_router(now);
    r.suspect_link(now, id(2), true);
    assert_eq!(r.next_hop(&id(9)), Some(id(2)));
    r
}

#[test]
fn a_suspected_next_hop_with_only_unfeasible_alternatives_is_asked_around_at_once() {
    let now = Millis(0);
    let mut r = suspecting_its_next_hop(now);
    // The request the loss of 2 would send goes out now.
    assert_eq!(requests_for_9(&mut r, now, now), vec![id(3)]);
    // The answer makes 3's route the one taken, while 2 is only suspected.
    let answer_at = now.plus(50);
    r.handle_message(answer_at, id(3), update_9(2, 1, 400));
    assert_eq!(r.next_hop(&id(9)), Some(id(3)));
    // Neighbors hear of it with the next triggered update: it is far longer than the
    // route they were told of.
    let told = told_about_9(
        &mut r,
        answer_at,
        answer_at.plus(RoutingConfig::default().triggered_delay_ms + 10),
    );
    assert_eq!(told, vec![(1, 500)]);
}

#[test]
fn a_next_hop_lost_after_its_suspicion_holds_the_retraction_from_the_request() {
    let config = RoutingConfig::default();
    let hold = config.retraction_hold_ms;
    let suspected_at = Millis(0);
    let mut r = suspecting_its_next_hop(suspected_at);
    assert_eq!(
        requests_for_9(&mut r, suspected_at, suspected_at),
        vec![id(3)]
    );
    // Declared down halfway through the hold the request started.
    let lost_at = suspected_at.plus(hold / 2);
    assert_eq!(told_about_9(&mut r, suspected_at, lost_at), vec![]);
    r.remove_link(lost_at, id(2));
    assert_eq!(r.next_hop(&id(9)), None);
    let hold_end = suspected_at.plus(hold);
    assert_eq!(told_about_9(&mut r, lost_at, hold_end), vec![]);
    // Retracted with the first triggered update after the request's hold, not a whole
    // hold after the loss.
    let retracted_by = hold_end.plus(config.triggered_delay_ms + 10);
    assert!(retracted_by < lost_at.plus(hold));
    let told = told_about_9(&mut r, hold_end, retracted_by);
    assert_eq!(told, vec![(0, INFINITY)]);
}

#[test]
fn requests_made_together_go_to_a_neighbor_in_one_message() {
    let now = Millis(0);
    let mut r = Routing::new(id(1), RoutingConfig::default(), now);
    for n in 2..=3 {
        r.set_link(now, id(n), 100);
    }
    // 2 is the next hop toward 8 and 9; 3's routes to them are longer, unfeasible.
    r.handle_message(now, id(2), update(1, &[(8, 100), (9, 100)]));
    r.handle_message(now, id(3), update(1, &[(8, 400), (9, 400)]));
    let _ = std::iter::from_fn(|| r.poll_output()).count();
    r.suspect_link(now, id(2), true);
    let sent: Vec<Output> = std::iter::from_fn(|| r.poll_output())
        .filter(|o| matches!(o, Output::Send(_, RoutingMessage::SeqnoRequests(_))))
        .collect();
    let request = |n| SeqnoRequest {
        destination: their_tag(n),
        seqno: 1,
        hops_left: RoutingConfig::default().request_hop_limit,
    };
    assert_eq!(
        sent,
        vec![Output::Send(
            id(3),
            RoutingMessage::SeqnoRequests(vec![request(8), request(9)])
        )]
    );
}

#[test]
fn a_request_also_goes_around_a_suspected_next_hop() {
    let now = Millis(0);
    let mut r = suspecting_its_next_hop(now);
    let _ = std::iter::from_fn(|| r.poll_output()).count();
    // 4 asks for a newer seqno than r's own request: r passes it on around 2, and to
    // 2 as well, in case the suspicion is wrong.
    r.handle_message(now, id(4), request(tag_of(&r, 9), 2, 5));
    assert_eq!(requests_for_9(&mut r, now, now), vec![id(2), id(3)]);
}

#[test]
fn a_request_that_died_with_the_route_it_followed_goes_on_to_the_next_at_once() {
    let now = Millis(0);
    let mut r = holding_router(now);
    r.handle_message(now, id(4), update(1, &[(9, 600)]));
    r.remove_link(now, id(2));
    assert_eq!(requests_for_9(&mut r, now, now), vec![id(3)]);
    // 3 had lost its route too: r asks 4 at once, well within the request interval.
    let later = now.plus(30);
    r.handle_message(later, id(3), update(2, &[(9, INFINITY)]));
    assert_eq!(requests_for_9(&mut r, later, later), vec![id(4)]);
    // 4's route ends too: nobody is left to ask, and nothing more is sent.
    r.handle_message(later, id(4), update(2, &[(9, INFINITY)]));
    assert_eq!(requests_for_9(&mut r, later, later), vec![]);
}
