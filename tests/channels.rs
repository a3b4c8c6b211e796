//! Channels on a loopback cluster of real node processes: members read every post,
//! the node that is not a member holds the ciphertext and reads nothing, and a change of
//! members locks the removed member out of what is posted afterwards.
#![allow(clippy::expect_used, clippy::unwrap_used)] // a failed expectation is the test failing

mod common;

use std::time::Duration;

use common::{NodeProcess, free_port, http_post, http_request, run, wait_for};
use serde_json::Value;

const PATIENCE: Duration = Duration::from_secs(30);
const SECRET: &str = "meet at relay 7731 at dawn";
const LATER: &str = "new key, new plan 4410";

fn post_texts(node: &NodeProcess, channel: &str) -> Option<Vec<String>> {
    let posts = node.get(&format!("/api/v1/channels/{channel}/messages"))?;
    Some(
        posts
            .as_array()?
            .iter()
            .filter_map(|p| p["text"].as_str().map(String::from))
            .collect(),
    )
}

fn cli(node: &NodeProcess, args: &[&str]) -> String {
    let api = format!("http://127.0.0.1:{}", node.api_port);
    let mut all = vec!["channel", "--api", &api];
    all.extend_from_slice(args);
    let out = run(&all);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "channel {args:?}: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn members_read_outsiders_hold_only_ciphertext_and_removed_members_are_locked_out() {
    let dir = tempfile::tempdir().expect("temp dir");
    let first = free_port();
    let nodes: Vec<NodeProcess> = ["owner", "member", "outsider"]
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let port = if i == 0 { first } else { free_port() };
            let bootstrap: Vec<u16> = if i == 0 { vec![] } else { vec![first] };
            NodeProcess::start_with(dir.path(), name, port, &bootstrap, "")
        })
        .collect();
    let (owner, member, outsider) = (&nodes[0], &nodes[1], &nodes[2]);
    let ids: Vec<String> = nodes.iter().map(NodeProcess::id).collect();
    // The owner needs the members' public keys from their registry records.
    wait_for("every record at the owner", PATIENCE, || {
        let registry = owner.get("/api/v1/registry")?;
        (registry["count"] == 3).then_some(())
    });

    let created = cli(owner, &["create", "ops", "--member", &ids[1]]);
    assert!(
        created.contains(&format!("created {}/ops with 2 members", ids[0])),
        "{created}"
    );
    let channel = format!("{}/ops", ids[0]);
    let (code, body) = http_post(
        owner.api_port,
        &format!("/api/v1/channels/{channel}/messages"),
        &format!(r#"{{"text":"{SECRET}"}}"#),
    )
    .unwrap();
    assert_eq!(code, 201, "{body}");

    // The member reads it, in the channel and in its inbox, and answers by bare name.
    wait_for("the member to read the post", PATIENCE, || {
        post_texts(member, &channel)?
            .contains(&SECRET.to_string())
            .then_some(())
    });
    wait_for("the post in the member's inbox", PATIENCE, || {
        let inbox = member.get("/api/v1/messages")?;
        inbox
            .as_array()?
            .iter()
            .find(|m| m["text"] == SECRET && m["channel"] == channel.as_str())
            .cloned()
    });
    cli(member, &["post", "ops", "ack from the member"]);
    wait_for("the owner to read the answer", PATIENCE, || {
        post_texts(owner, &channel)?
            .contains(&"ack from the member".to_string())
            .then_some(())
    });
    let read = cli(owner, &["read", "ops"]);
    assert!(
        read.contains(SECRET) && read.contains("ack from the member"),
        "{read}"
    );

    // The outsider holds both posts, encrypted, and can read neither.
    wait_for("the ciphertext at the outsider", PATIENCE, || {
        let posts = outsider.get("/api/v1/crdt/x0%2Fchannel-posts")?;
        (posts.as_array()?.len() == 2).then_some(())
    });
    let held = outsider
        .get("/api/v1/crdt/x0%2Fchannel-posts")
        .unwrap()
        .to_string();
    assert!(
        !held.contains(SECRET) && !held.contains(&hex::encode(SECRET)),
        "{held}"
    );
    let (code, _) = common::http_get(
        outsider.api_port,
        &format!("/api/v1/channels/{channel}/messages"),
    )
    .unwrap();
    assert_eq!(code, 403);
    assert_eq!(
        outsider.get("/api/v1/channels").unwrap(),
        Value::Array(vec![])
    );
    // Nobody writes the plaintext to disk, members included.
    std::thread::sleep(Duration::from_secs(3)); // past the state's save interval
    for node in &nodes {
        let saved = std::fs::read(dir.path().join(format!("{}-data/crdt.bin", node.name))).unwrap();
        assert!(
            !saved.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()),
            "{}",
            node.name
        );
    }

    // Only the owner changes members. Swapping the member for the outsider starts a new
    // key: the outsider reads what comes after, the removed member does not.
    let (code, _) = http_request(
        member.api_port,
        "PUT",
        &format!("/api/v1/channels/{channel}/members"),
        Some(&format!(r#"{{"members":["{}"]}}"#, ids[1])),
    )
    .unwrap();
    assert_eq!(code, 403);
    let changed = cli(owner, &["members", "ops", &ids[2]]);
    assert!(changed.contains("now has 2 members"), "{changed}");
    wait_for("the outsider to join", PATIENCE, || {
        let list = outsider.get("/api/v1/channels")?;
        (list.as_array()?.len() == 1).then_some(())
    });
    cli(owner, &["post", &channel, LATER]);
    wait_for("the new member to read the new post", PATIENCE, || {
        let texts = post_texts(outsider, &channel)?;
        texts.contains(&LATER.to_string()).then_some(texts)
    });
    // What was posted before it joined stays closed to the new member.
    assert_eq!(
        post_texts(outsider, &channel).unwrap(),
        vec![LATER.to_string()]
    );
    // The removed member has the new post's ciphertext but not its text.
    wait_for("the new post at the removed member", PATIENCE, || {
        let posts = member.get("/api/v1/crdt/x0%2Fchannel-posts")?;
        (posts.as_array()?.len() == 3).then_some(())
    });
    let kept = post_texts(member, &channel).unwrap();
    assert!(kept.contains(&SECRET.to_string()), "{kept:?}");
    assert!(!kept.contains(&LATER.to_string()), "{kept:?}");
    let (code, body) = http_post(
        member.api_port,
        &format!("/api/v1/channels/{channel}/messages"),
        r#"{"text":"still here?"}"#,
    )
    .unwrap();
    assert_eq!(code, 403, "{body}");

    // Deleting the channel takes it from every member's list.
    cli(owner, &["delete", "ops"]);
    wait_for("the channel to go", PATIENCE, || {
        let list = outsider.get("/api/v1/channels")?;
        list.as_array()?.is_empty().then_some(())
    });
}
