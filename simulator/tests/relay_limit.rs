//! A relay's per-peer rate limit: a neighbor that pushes more relayed bytes than its
//! budget has the excess refused (and counted), while traffic within it passes.
#![allow(clippy::expect_used, clippy::unwrap_used)] // a failed expectation is the test failing

mod common;

use std::time::Duration;

use x0_actors::NodeSettings;
use x0_protocols::ratelimit::RateLimit;

#[test]
fn a_neighbor_over_its_relay_budget_is_held_back() {
    common::paused_runtime().block_on(async {
        let settings = NodeSettings {
            relay_limit: RateLimit {
                bytes_per_s: 8 * 1024,
                window_ms: 1000,
            },
            ..NodeSettings::default()
        };
        let line = common::line(3, settings).await;
        tokio::time::sleep(Duration::from_secs(15)).await;
        // A burst of 40 KB through relay 1 within a moment: about a quarter fits.
        for i in 0..40u32 {
            let mut payload = vec![0u8; 1024];
            payload[..4].copy_from_slice(&i.to_le_bytes());
            line.nodes[0]
                .send(line.ids[2], payload)
                .await
                .expect("routed");
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
        let relay = line.nodes[1].status().await.unwrap();
        assert!(relay.rate_limited > 0, "{relay:?}");
        let delivered = line
            .received
            .lock()
            .unwrap()
            .iter()
            .filter(|d| d.payload.len() == 1024)
            .count();
        assert!(delivered > 0, "traffic within the budget passes");
        assert!(
            delivered < 40,
            "the excess was held back: {delivered} of 40 arrived"
        );
    });
}
