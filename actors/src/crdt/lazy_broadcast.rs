//! A broadcast channel that exists only once someone subscribes.
//!
//! tokio's broadcast channel allocates its whole ring up front: a thousand simulated
//! nodes that nobody watches would carry a thousand idle rings (about 200 MB for channel
//! posts alone, measured). Sending without subscribers does nothing, as with tokio's
//! channel when every receiver is gone.

use std::sync::{Arc, OnceLock};

use tokio::sync::broadcast;

/// Messages a receiver may fall behind by before it skips the oldest.
const CAPACITY: usize = 1024;

pub struct LazyBroadcast<T>(Arc<OnceLock<broadcast::Sender<T>>>);

impl<T> Clone for LazyBroadcast<T> {
    fn clone(&self) -> Self {
        LazyBroadcast(self.0.clone())
    }
}

impl<T: Clone> Default for LazyBroadcast<T> {
    fn default() -> Self {
        LazyBroadcast(Arc::new(OnceLock::new()))
    }
}

impl<T: Clone> LazyBroadcast<T> {
    pub fn subscribe(&self) -> broadcast::Receiver<T> {
        self.0
            .get_or_init(|| broadcast::channel(CAPACITY).0)
            .subscribe()
    }

    /// Whether anyone has ever subscribed (and so whether sending is worth preparing).
    pub fn watched(&self) -> bool {
        self.0.get().is_some_and(|tx| tx.receiver_count() > 0)
    }

    pub fn send(&self, message: T) {
        if let Some(tx) = self.0.get() {
            let _ = tx.send(message);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_subscribers_from_before_a_send_receive_it() {
        let lazy = LazyBroadcast::<u32>::default();
        lazy.send(1);
        assert!(!lazy.watched());
        let mut rx = lazy.clone().subscribe();
        assert!(lazy.watched());
        lazy.send(2);
        assert_eq!(rx.try_recv().unwrap(), 2);
        assert!(rx.try_recv().is_err());
    }
}
