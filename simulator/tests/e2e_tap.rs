//! End-to-end sealing under a wiretap: a message from one end of a four-node line to the
//! other crosses two relays, and no link ever carries its plaintext, while an unsealed
//! message between the same nodes does show up on the tap (so the tap would have seen it).
#![allow(clippy::expect_used, clippy::unwrap_used)] // a failed expectation is the test failing

use std::sync::{Arc, Mutex};
use std::time::Duration;

mod common;

use x0_actors::NodeSettings;
use x0_protocols::forwarding::Service;

const SECRET: &[u8] = b"sealed-marker: the vault code is 7731";
const CONTROL: &[u8] = b"plain-marker: anyone on the path can read this";

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn relays_never_carry_the_plaintext_of_a_sealed_message() {
    common::paused_runtime().block_on(async {
        // A line 0 - 1 - 2 - 3: 0 and 3 talk only through relays 1 and 2.
        let common::Line {
            network,
            nodes,
            ids,
            received,
        } = common::line(4, NodeSettings::default()).await;
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

        nodes[0]
            .send_sealed(ids[3], SECRET.to_vec())
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

        let wire = tapped.lock().unwrap();
        assert!(
            wire.iter().any(|b| contains(b, CONTROL)),
            "the tap sees plaintext it is shown"
        );
        assert!(
            !wire.iter().any(|b| contains(b, SECRET)),
            "a sealed message's plaintext was on a link"
        );
    });
}
