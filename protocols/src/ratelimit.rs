//! Per-peer byte budgets over a sliding window: what keeps one noisy neighbor from using
//! a relay's whole capacity.
//!
//! The window is approximated the usual way (as in Cloudflare's and nginx's limiters):
//! the previous fixed window's count, weighted by how much of it still overlaps the
//! sliding window, plus the current window's count. Two counters per peer, no timestamps
//! per message. Sans-IO: the caller supplies the time.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{Millis, NodeId};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateLimit {
    pub bytes_per_s: u64,
    pub window_ms: u64,
}

impl Default for RateLimit {
    fn default() -> Self {
        RateLimit {
            bytes_per_s: 4 * 1024 * 1024,
            window_ms: 1000,
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Window {
    start: Millis,
    current: u64,
    previous: u64,
}

/// Most peers tracked; beyond it the idlest are forgotten (a neighbor table is far
/// smaller).
const MAX_PEERS: usize = 1024;

#[derive(Debug)]
pub struct RateLimiter {
    limit: RateLimit,
    peers: BTreeMap<NodeId, Window>,
}

impl RateLimiter {
    pub fn new(limit: RateLimit) -> Self {
        RateLimiter {
            limit,
            peers: BTreeMap::new(),
        }
    }

    pub fn limit(&self) -> &RateLimit {
        &self.limit
    }

    /// Whether `peer` may have `bytes` more now; if so they are counted against it.
    pub fn allow(&mut self, peer: NodeId, bytes: u64, now: Millis) -> bool {
        let window = self.limit.window_ms.max(1);
        let budget = self.limit.bytes_per_s.saturating_mul(window) / 1000;
        if self.peers.len() >= MAX_PEERS && !self.peers.contains_key(&peer) {
            let stale: Vec<NodeId> = self
                .peers
                .iter()
                .filter(|(_, w)| now.since(w.start) >= 2 * window)
                .map(|(id, _)| *id)
                .collect();
            for id in stale {
                self.peers.remove(&id);
            }
            if self.peers.len() >= MAX_PEERS {
                return false;
            }
        }
        let w = self.peers.entry(peer).or_insert(Window {
            start: now,
            current: 0,
            previous: 0,
        });
        let elapsed = now.since(w.start);
        if elapsed >= window {
            w.previous = if elapsed >= 2 * window { 0 } else { w.current };
            w.current = 0;
            w.start = Millis(now.0 - elapsed % window);
        }
        let into = now.since(w.start);
        let overlap = window - into;
        let estimate = w.previous.saturating_mul(overlap) / window + w.current;
        if estimate.saturating_add(bytes) > budget {
            return false;
        }
        w.current += bytes;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(bytes_per_s: u64) -> RateLimiter {
        RateLimiter::new(RateLimit {
            bytes_per_s,
            window_ms: 1000,
        })
    }

    #[test]
    fn a_peer_within_its_budget_passes_and_one_over_it_is_held_back() {
        let mut l = limiter(10_000);
        let (noisy, quiet) = (NodeId([1; 32]), NodeId([2; 32]));
        let mut passed = 0;
        for i in 0..100 {
            if l.allow(noisy, 1000, Millis(i * 5)) {
                passed += 1;
            }
        }
        assert_eq!(passed, 10, "10 KB/s lets 10 KB through in half a second");
        assert!(
            l.allow(quiet, 1000, Millis(500)),
            "others are not held back"
        );
    }

    #[test]
    fn the_budget_comes_back_as_the_window_slides() {
        let mut l = limiter(10_000);
        let p = NodeId([1; 32]);
        assert!(l.allow(p, 10_000, Millis(0)));
        assert!(!l.allow(p, 1000, Millis(500)));
        // Half a window later half of the old window still counts.
        assert!(l.allow(p, 4000, Millis(1500)));
        assert!(!l.allow(p, 2000, Millis(1500)));
        // Two windows later it is all forgotten.
        assert!(l.allow(p, 10_000, Millis(3000)));
    }

    #[test]
    fn a_steady_sender_gets_about_the_configured_rate() {
        let mut l = limiter(50_000);
        let p = NodeId([1; 32]);
        let mut bytes = 0;
        for ms in 0..10_000u64 {
            if l.allow(p, 1000, Millis(ms)) {
                bytes += 1000;
            }
        }
        // 10 s at 50 KB/s: within a window's worth of the ideal.
        assert!((450_000..=560_000).contains(&bytes), "{bytes}");
    }
}
