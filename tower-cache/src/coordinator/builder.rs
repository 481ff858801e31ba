//! The settings of a coordinator, checked when it starts.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use super::*;
use crate::cache::Cache;
use crate::error::BuildError;

/// Builds a [`Coordinator`]; see [`Coordinator::builder`].
pub struct CoordinatorBuilder<B> {
    pub(super) cache: Cache,
    pub(super) bus: B,
    pub(super) node: Option<u64>,
    pub(super) secret: Option<Vec<u8>>,
    pub(super) tombstone_ttl: std::time::Duration,
    pub(super) replay_window: std::time::Duration,
    pub(super) max_clock_skew: std::time::Duration,
    pub(super) digest_interval: std::time::Duration,
}

impl<B> fmt::Debug for CoordinatorBuilder<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CoordinatorBuilder")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

impl<B: Bus> CoordinatorBuilder<B> {
    /// This node's id (default: random). Ids break version ties, so give each node its own.
    pub fn node_id(mut self, id: u64) -> Self {
        self.node = Some(id);
        self
    }

    /// How long an invalidation's version is remembered against late, older writes
    /// (default 5 minutes; at least a second).
    pub fn tombstone_ttl(mut self, ttl: std::time::Duration) -> Self {
        self.tombstone_ttl = ttl.clamp(std::time::Duration::from_secs(1), crate::error::MAX_TTL);
        self
    }

    /// How old a frame may be, by the time its sender's clock gave it, for this node to
    /// take it (default 5 minutes): an older one is refused and counted
    /// ([`CoordinationStatus::outside_window`]), so a frame captured and sent again
    /// later does nothing. Keep it above the longest a bus may hold a frame (the HTTP bus
    /// gives up within about 15 s) plus the clock difference between hosts; a frame
    /// refused for its age is a lost frame, and the next one shows the gap.
    pub fn replay_window(mut self, window: std::time::Duration) -> Self {
        self.replay_window = window;
        self
    }

    /// How far ahead of this host's clock a frame's version may be (default 1 minute, at
    /// least 1 s): a frame further ahead is refused and counted
    /// ([`CoordinationStatus::clock_skew`]), and nothing (a frame, a versioned write, a
    /// tombstone read back) moves this node's clock further ahead than that. One host
    /// whose clock runs ahead cannot make every other node's invalidations lose as older.
    pub fn max_clock_skew(mut self, skew: std::time::Duration) -> Self {
        self.max_clock_skew = skew;
        self
    }

    /// How often a node that publishes nothing says which number it gave its last
    /// invalidation (default 2 s, at least 10 ms). A receiver that missed the last frames
    /// of a sender gone quiet (given up by the HTTP bus, published while its Redis
    /// subscription was away) sees the gap within about this long, instead of at the
    /// sender's next invalidation, which may never come; a sender's first digest also
    /// tells the others that it restarted. A node that keeps publishing sends none: each
    /// invalidation shows any gap before it. Counted in
    /// [`CoordinationStatus::digests_sent`] and
    /// [`digests_received`](CoordinationStatus::digests_received).
    pub fn digest_interval(mut self, every: std::time::Duration) -> Self {
        self.digest_interval = every;
        self
    }

    /// The secret every node shares, to sign and check messages (required, at least 16
    /// bytes).
    pub fn secret(mut self, secret: &[u8]) -> Self {
        self.secret = Some(secret.to_vec());
        self
    }

    /// Checks the settings and starts receiving on the current tokio runtime.
    ///
    /// # Panics
    ///
    /// If called outside a tokio runtime.
    pub fn start(self) -> Result<Coordinator, BuildError> {
        let secret = self.secret.ok_or_else(|| {
            BuildError::new("coordinator: no secret; give every node the same .secret(..)")
        })?;
        if secret.len() < 16 {
            return Err(BuildError::new(format!(
                "coordinator: the secret is {} bytes; give at least 16 (32 random bytes is usual)",
                secret.len()
            )));
        }
        if self.replay_window < std::time::Duration::from_secs(1) {
            return Err(BuildError::new(format!(
                "coordinator: replay_window is {:?}; give at least 1 s (the default is 5 minutes)",
                self.replay_window
            )));
        }
        if self.max_clock_skew < std::time::Duration::from_secs(1) {
            return Err(BuildError::new(format!(
                "coordinator: max_clock_skew is {:?}; give at least 1 s (the default is 1 minute)",
                self.max_clock_skew
            )));
        }
        if self.digest_interval < std::time::Duration::from_millis(10) {
            return Err(BuildError::new(format!(
                "coordinator: digest_interval is {:?}; give at least 10 ms (the default is 2 s)",
                self.digest_interval
            )));
        }
        let node = self.node.unwrap_or_else(clock::random_node_id);
        let shared = Arc::new(Shared {
            cache: self.cache,
            bus: Box::new(self.bus),
            node,
            incarnation: AtomicU64::new(0),
            replay_window_ms: u64::try_from(self.replay_window.as_millis()).unwrap_or(u64::MAX),
            secret,
            clock: HybridClock::with_max_skew(node, self.max_clock_skew),
            seq: Mutex::new(0),
            senders: Mutex::new(HashMap::new()),
            gate: Mutex::default(),
            stats: Stats::default(),
            applied: watch::channel(0).0,
            tombstones: tombstones::Tombstones::new(self.tombstone_ttl),
            recent: Mutex::default(),
        });
        shared.restore_tombstones();
        // After the restored tombstones moved the clock: a start is never before what a
        // previous run recorded.
        shared
            .incarnation
            .store(clock::new_incarnation(&shared.clock), Ordering::Relaxed);
        shared.bus.attach(FrameGate {
            shared: Arc::downgrade(&shared),
        });
        let subscription = shared.bus.subscribe();
        let receiving = tokio::spawn(receive(Arc::downgrade(&shared), subscription));
        let digests = tokio::spawn(send_digests(Arc::downgrade(&shared), self.digest_interval));
        Ok(Coordinator {
            shared,
            _tasks: Arc::new([
                AbortOnDrop(receiving.abort_handle()),
                AbortOnDrop(digests.abort_handle()),
            ]),
        })
    }
}
