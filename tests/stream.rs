//! The inbox as a live stream: `GET /api/v1/messages/stream` (server-sent events) carries
//! each message as it arrives, sealed ones marked encrypted.
#![allow(clippy::expect_used, clippy::unwrap_used)] // a failed expectation is the test failing

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{NodeProcess, http_post, wait_for};

#[test]
fn messages_arrive_on_the_event_stream_as_they_come() {
    let dir = tempfile::tempdir().expect("temp dir");
    let a = NodeProcess::start(dir.path(), "a", None);
    let b = NodeProcess::start(dir.path(), "b", Some(a.p2p_port));
    let id_b = b.id();

    let mut stream = TcpStream::connect(("127.0.0.1", b.api_port)).expect("connects");
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    write!(
        stream,
        "GET /api/v1/messages/stream HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n"
    )
    .unwrap();

    // Send once a route exists; the stream is already open and waiting.
    wait_for("a to reach b", Duration::from_secs(60), || {
        let body =
            serde_json::json!({ "to": id_b, "text": "live one", "encrypt": true }).to_string();
        let (code, _) = http_post(a.api_port, "/api/v1/messages", &body).ok()?;
        (code == 202).then_some(())
    });

    let mut seen = String::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline && !seen.contains("live one") {
        if let Ok(n) = stream.read(&mut buf) {
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    }
    if !seen.contains("live one") {
        // What the nodes say about it, for whoever reads the failure.
        let (_, metrics_a) = common::http_get(a.api_port, "/metrics").unwrap_or_default();
        let (_, metrics_b) = common::http_get(b.api_port, "/metrics").unwrap_or_default();
        let interesting = |m: &str| {
            m.lines()
                .filter(|l| {
                    !l.starts_with('#')
                        && (l.contains("x0_link")
                            || l.contains("x0_e2e")
                            || l.contains("dropped")
                            || l.contains("handshake")
                            || l.contains("relay"))
                })
                .collect::<Vec<_>>()
                .join("; ")
        };
        panic!(
            "no message on the stream: {seen}\noutbox a: {:?}\ninbox b: {:?}\npeers a: {:?}\nmetrics a: {}\nmetrics b: {}",
            a.get("/api/v1/outbox"),
            b.get("/api/v1/messages"),
            a.get("/api/v1/peers"),
            interesting(&metrics_a),
            interesting(&metrics_b),
        );
    }
    assert!(seen.contains("text/event-stream"), "{seen}");
    assert!(seen.contains("event: message"), "{seen}");
    let data = seen
        .lines()
        .find(|l| l.starts_with("data:") && l.contains("live one"))
        .expect("a data line with the message");
    let message: serde_json::Value =
        serde_json::from_str(data.trim_start_matches("data:").trim()).unwrap();
    assert_eq!(message["encrypted"], true);
    assert_eq!(message["from"], a.id().as_str());
}

#[test]
fn a_file_sent_sealed_from_the_cli_arrives_whole_with_its_name_and_type() {
    let dir = tempfile::tempdir().expect("temp dir");
    let a = NodeProcess::start(dir.path(), "a", None);
    let b = NodeProcess::start(dir.path(), "b", Some(a.p2p_port));
    let id_b = b.id();
    // 200 KB: it travels in two sealed parts.
    let photo: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
    let path = dir.path().join("holiday.png");
    std::fs::write(&path, &photo).unwrap();
    let api = format!("http://127.0.0.1:{}", a.api_port);
    wait_for(
        "the sealed file to be accepted",
        Duration::from_secs(60),
        || {
            let out = common::run(&[
                "send",
                "--api",
                &api,
                "--to",
                &id_b,
                "--encrypt",
                "--file",
                path.to_str().unwrap(),
            ]);
            out.status.success().then_some(())
        },
    );
    let message = wait_for("the file at b", Duration::from_secs(60), || {
        b.get("/api/v1/messages")?
            .as_array()?
            .iter()
            .find(|m| m["name"] == "holiday.png")
            .cloned()
    });
    assert_eq!(message["encrypted"], true);
    assert_eq!(message["kind"], "image");
    assert_eq!(message["mime"], "image/png");
    assert_eq!(message["size"], 200_000);
    assert_eq!(message["hex"].as_str().unwrap(), hex::encode(&photo));
}
