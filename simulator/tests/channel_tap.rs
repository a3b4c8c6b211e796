//! Channels under a wiretap, on a five-node line where members and outsiders alternate:
//! every member is told each post by another member exactly once (even though posts,
//! being small, outrun the grants that open them), outsiders are told nothing, and no
//! link ever carries a post's plaintext.
#![allow(clippy::expect_used, clippy::unwrap_used)] // a failed expectation is the test failing

use std::sync::{Arc, Mutex};
use std::time::Duration;

mod common;

use x0_actors::e2e::Outgoing;
use x0_actors::{ChannelMessage, NodeSettings};
use x0_protocols::channel::ChannelId;
use x0_protocols::e2e::ContentKind;

const SECRET: &str = "channel-marker: the vault code is 7731";

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn members_are_told_each_post_once_and_no_link_carries_its_plaintext() {
    common::paused_runtime().block_on(async {
        // A line 0 - 1 - 2 - 3 - 4: the owner 0 and members 2 and 4 hear each other only
        // through outsiders 1 and 3.
        let common::Line {
            network,
            nodes,
            ids,
            ..
        } = common::line(5, NodeSettings::default()).await;
        let tapped: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
        let sink = tapped.clone();
        network.set_tap(Some(Arc::new(move |_from, _to, bytes: &[u8]| {
            sink.lock().unwrap().push(bytes.to_vec());
        })));
        let mut watches = Vec::new();
        for node in &nodes {
            watches.push(node.channel_watch().await.unwrap());
        }
        // Time for links to form and registry records (the members' keys) to spread.
        tokio::time::sleep(Duration::from_secs(20)).await;

        let info = nodes[0]
            .channel_create("vault", vec![ids[2], ids[4]])
            .await
            .expect("create");
        assert_eq!(info.members.len(), 3);
        let channel = ChannelId::new(ids[0], "vault").unwrap();
        let mut posts = Vec::new();
        for (writer, n) in [(0, 1), (0, 2), (4, 3)] {
            let text = format!("{SECRET} #{n}");
            if writer == 4 {
                // The far member posts once its own key has arrived.
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
            let posted = nodes[writer]
                .channel_post(channel.clone(), Outgoing::default(), text.into_bytes())
                .await
                .expect("post");
            assert_eq!(posted.content.kind, ContentKind::Text);
            posts.push((writer, posted.post_id));
        }
        tokio::time::sleep(Duration::from_secs(10)).await;

        for (i, watch) in watches.iter_mut().enumerate() {
            let mut told: Vec<ChannelMessage> = Vec::new();
            while let Ok(message) = watch.try_recv() {
                told.push(message);
            }
            let mut got: Vec<(usize, u64)> = told
                .iter()
                .map(|m| (ids.iter().position(|id| *id == m.from).unwrap(), m.post_id))
                .collect();
            got.sort();
            let mut expected: Vec<(usize, u64)> = if [0, 2, 4].contains(&i) {
                posts.iter().copied().filter(|(w, _)| *w != i).collect()
            } else {
                Vec::new()
            };
            expected.sort();
            assert_eq!(got, expected, "node {i} told {told:?}");
            for message in &told {
                assert!(contains(&message.body, SECRET.as_bytes()));
            }
        }
        // Every member reads the whole history; an outsider is refused.
        for member in [0, 2, 4] {
            let read = nodes[member].channel_read(channel.clone()).await.unwrap();
            assert_eq!(read.len(), 3, "member {member}");
        }
        assert!(nodes[1].channel_read(channel.clone()).await.is_err());

        let tapped = tapped.lock().unwrap();
        assert!(tapped.len() > 100, "the tap saw the traffic");
        assert!(
            !tapped
                .iter()
                .any(|frame| contains(frame, SECRET.as_bytes())),
            "a post's plaintext crossed a link"
        );
    });
}
