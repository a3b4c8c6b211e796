//! End-to-end sealing under a wiretap: a message from one end of a four-node line to the
//! other crosses two relays, and no link ever carries its plaintext. With links sealed in
//! the nodes' sessions (the default) an unsealed message stays off the wire too; with
//! link sealing off it shows up on the tap (so the tap would have seen the other).
#![allow(clippy::expect_used, clippy::unwrap_used)] // a failed expectation is the test failing

use std::sync::{Arc, Mutex};
use std::time::Duration;

mod common;

use x0_actors::NodeSettings;
use x0_actors::e2e::{MessageStatus, OutboxEntry, Outgoing};
use x0_protocols::Kind;
use x0_protocols::forwarding::Service;

const SECRET: &[u8] = b"sealed-marker: the vault code is 7731";
const CONTROL: &[u8] = b"plain-marker: anyone on the path can read this";

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn relays_never_carry_the_plaintext_of_a_sealed_message() {
    let wire = tapped_run(NodeSettings::default());
    assert!(
        !wire.iter().any(|b| contains(b, SECRET)),
        "a sealed message's plaintext was on a link"
    );
    assert!(
        !wire.iter().any(|b| contains(b, CONTROL)),
        "an unsealed message's plaintext was on a sealed link"
    );
    let link_frames = wire
        .iter()
        .filter(|b| {
            x0_protocols::Envelope::decode_from(x0_protocols::NodeId([0; 32]), b)
                .is_ok_and(|e| e.kind == Kind::Link)
        })
        .count();
    assert!(link_frames > 100, "{link_frames} link frames");

    let wire = tapped_run(NodeSettings {
        seal_links: false,
        ..NodeSettings::default()
    });
    assert!(
        wire.iter().any(|b| contains(b, CONTROL)),
        "the tap sees plaintext it is shown"
    );
    assert!(
        !wire.iter().any(|b| contains(b, SECRET)),
        "a sealed message's plaintext was on a link"
    );
}

/// Sends one sealed and one plain message from one end of a four-node line to the other
/// and follows the sealed one to read; returns every frame the links carried.
fn tapped_run(settings: NodeSettings) -> Vec<Vec<u8>> {
    common::paused_runtime().block_on(async {
        // A line 0 - 1 - 2 - 3: 0 and 3 talk only through relays 1 and 2.
        let common::Line {
            network,
            nodes,
            ids,
            received,
        } = common::line(4, settings).await;
        let tapped: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
        let sink = tapped.clone();
        network.set_tap(Some(Arc::new(move |_from, _to, bytes: &[u8]| {
            sink.lock().unwrap().push(bytes.to_vec());
        })));
        // Time for links, sessions and routes to form.
        tokio::time::sleep(Duration::from_secs(20)).await;
        assert!(
            nodes[0]
                .routes()
                .await
                .unwrap()
                .iter()
                .any(|r| r.destination == ids[3])
        );

        let message_id = nodes[0]
            .send_sealed(ids[3], SECRET.to_vec(), Outgoing::default(), None)
            .await
            .expect("sealed send");
        nodes[0]
            .send(ids[3], CONTROL.to_vec())
            .await
            .expect("plain send");
        tokio::time::sleep(Duration::from_secs(3)).await;

        let got = received.lock().unwrap().clone();
        let sealed = got
            .iter()
            .find(|d| d.payload == SECRET)
            .expect("the sealed message arrived");
        assert_eq!(sealed.origin, ids[0]);
        assert_eq!(
            sealed.service,
            Service::E2e,
            "marked as having arrived sealed"
        );
        assert!(
            sealed.hops >= 3,
            "it crossed the relays: {} hops",
            sealed.hops
        );
        assert!(
            got.iter()
                .any(|d| d.payload == CONTROL && d.service == Service::App)
        );

        // The sender followed it to delivered (the destination's signed receipt), and to
        // read once the destination's application says so.
        let status = |outbox: Vec<OutboxEntry>| {
            outbox
                .into_iter()
                .find(|e| e.message_id == message_id)
                .map(|e| e.status)
        };
        assert_eq!(
            status(nodes[0].outbox().await.unwrap()),
            Some(MessageStatus::Delivered)
        );
        nodes[3].mark_read(ids[0], sealed.id);
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(
            status(nodes[0].outbox().await.unwrap()),
            Some(MessageStatus::Read)
        );

        tapped.lock().unwrap().clone()
    })
}

#[test]
fn a_sealed_message_to_nobody_fails_and_one_never_receipted_expires() {
    common::paused_runtime().block_on(async {
        let line = common::line(3, NodeSettings::default()).await;
        tokio::time::sleep(Duration::from_secs(15)).await;
        // No node has this id: its keys never come.
        let nobody = x0_protocols::Identity::from_seed([99; 32]).id();
        let lost = line.nodes[0]
            .send_sealed(nobody, b"hello?".to_vec(), Outgoing::default(), None)
            .await
            .unwrap();
        // The destination is up but crashes before it can answer with a receipt.
        let gone = line.nodes[0]
            .send_sealed(
                line.ids[2],
                b"first".to_vec(),
                Outgoing::default(),
                Some(2_000),
            )
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
        line.network.attach(2, None);
        line.network.set_up(2, false);
        let late = line.nodes[0]
            .send_sealed(
                line.ids[2],
                b"second".to_vec(),
                Outgoing::default(),
                Some(2_000),
            )
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_secs(12)).await;
        let outbox = line.nodes[0].outbox().await.unwrap();
        let find = |id: u64| outbox.iter().find(|e| e.message_id == id).unwrap();
        assert_eq!(find(lost).status, MessageStatus::Failed, "{:?}", find(lost));
        assert!(find(lost).reason.as_deref().unwrap_or("").contains("keys"));
        assert_eq!(find(gone).status, MessageStatus::Delivered);
        assert_eq!(
            find(late).status,
            MessageStatus::Expired,
            "{:?}",
            find(late)
        );
    });
}

#[test]
fn a_large_file_travels_sealed_in_parts_and_arrives_whole_with_its_metadata() {
    common::paused_runtime().block_on(async {
        let line = common::line(3, NodeSettings::default()).await;
        tokio::time::sleep(Duration::from_secs(15)).await;
        // 300 KB: three sealed parts.
        let photo: Vec<u8> = (0..300_000u32).map(|i| (i * 31 % 251) as u8).collect();
        let content = Outgoing {
            kind: x0_protocols::e2e::ContentKind::Image,
            name: Some("photo.jpg".into()),
            mime: Some("image/jpeg".into()),
        };
        let id = line.nodes[0]
            .send_sealed(line.ids[2], photo.clone(), content, None)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_secs(5)).await;
        let got = line.received.lock().unwrap().clone();
        let arrived = got.iter().find(|d| d.id == id).expect("the photo arrived");
        assert_eq!(arrived.payload, photo);
        let meta = arrived.content.as_ref().expect("with its description");
        assert_eq!(meta.kind, x0_protocols::e2e::ContentKind::Image);
        assert_eq!(meta.name.as_deref(), Some("photo.jpg"));
        assert_eq!(meta.mime.as_deref(), Some("image/jpeg"));
        assert_eq!(meta.size, 300_000);
        let outbox = line.nodes[0].outbox().await.unwrap();
        assert_eq!(
            outbox.iter().find(|e| e.message_id == id).map(|e| e.status),
            Some(MessageStatus::Delivered)
        );
    });
}

/// With CRDT sync the destination's keys come from its signed registry record, so a
/// sealed message leaves at once; without it the sender must first ask the destination.
#[test]
fn keys_from_the_registry_spare_the_key_request() {
    async fn status_right_after_send(settings: NodeSettings) -> MessageStatus {
        let common::Line { nodes, ids, .. } = common::line(4, settings).await;
        tokio::time::sleep(Duration::from_secs(20)).await;
        let message_id = nodes[0]
            .send_sealed(ids[3], SECRET.to_vec(), Outgoing::default(), None)
            .await
            .expect("sealed send");
        // Local lookups take no virtual time; asking the destination, three hops away
        // over 10 ms links, takes at least 60 ms.
        tokio::time::sleep(Duration::from_millis(10)).await;
        let outbox: Vec<OutboxEntry> = nodes[0].outbox().await.expect("outbox");
        let entry = outbox
            .iter()
            .find(|e| e.message_id == message_id)
            .expect("in the outbox");
        entry.status
    }
    common::paused_runtime().block_on(async {
        assert_eq!(
            status_right_after_send(NodeSettings::default()).await,
            MessageStatus::Sent
        );
        let without_crdt = NodeSettings {
            crdt: None,
            ..NodeSettings::default()
        };
        assert_eq!(
            status_right_after_send(without_crdt).await,
            MessageStatus::Created
        );
    });
}

#[test]
fn a_sealed_message_without_a_route_yet_waits_for_one() {
    common::paused_runtime().block_on(async {
        let line = common::line(3, NodeSettings::default()).await;
        tokio::time::sleep(Duration::from_secs(20)).await;
        // Node 2's keys are known from the registry; then its only link goes, and with
        // it every route to it.
        line.network.cut(x0_simulator::net::link_key(1, 2));
        tokio::time::sleep(Duration::from_secs(15)).await;
        assert!(
            !line.nodes[0]
                .routes()
                .await
                .unwrap()
                .iter()
                .any(|r| r.destination == line.ids[2])
        );
        let id = line.nodes[0]
            .send_sealed(line.ids[2], b"hold on".to_vec(), Outgoing::default(), None)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_secs(3)).await;
        line.network.restore(x0_simulator::net::link_key(1, 2));
        tokio::time::sleep(Duration::from_secs(20)).await;
        let entry = line.nodes[0]
            .outbox()
            .await
            .unwrap()
            .into_iter()
            .find(|e| e.message_id == id)
            .unwrap();
        assert_eq!(entry.status, MessageStatus::Delivered, "{entry:?}");
        assert!(
            line.received
                .lock()
                .unwrap()
                .iter()
                .any(|d| d.payload == b"hold on")
        );
    });
}
