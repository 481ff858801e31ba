//! The bus a coordinator publishes on and subscribes to, and the in-process one.

use std::fmt;

use bytes::Bytes;
use tokio::sync::broadcast;

use super::*;

/// What a subscription to a [`Bus`] yields.
#[derive(Debug, Clone)]
pub enum BusEvent {
    /// A frame another node (or this one) published.
    Frame(Bytes),
    /// Frames were lost (the subscriber lagged, or the connection dropped and came back):
    /// the receiver must assume it missed invalidations.
    Lost,
}

/// A way to publish invalidation frames to every node and receive theirs.
///
/// Implemented by [`InProcessBus`]; an HTTP and a Redis backend implement it the same way.
pub trait Bus: Send + Sync + 'static {
    /// Publishes a frame to every subscriber (this node's included).
    fn publish(&self, frame: Bytes) -> Result<(), BusError>;
    /// Publishes a digest (a frame that says which number its sender gave its last
    /// invalidation; see [`CoordinatorBuilder::digest_interval`]). Unlike an
    /// invalidation it may be dropped, for example while frames still wait to be sent:
    /// another follows; an error says it was not (it is then not counted as sent, nor as
    /// a publish error). It must not overtake a frame published before it. The default
    /// publishes it as any frame.
    fn publish_digest(&self, frame: Bytes) -> Result<(), BusError> {
        self.publish(frame)
    }
    /// A new subscription.
    fn subscribe(&self) -> Box<dyn Subscription>;
    /// The state of the bus's links (peer URLs, a Redis server), for
    /// [`CoordinationStatus::links`]. A bus without links returns none.
    fn links(&self) -> Vec<LinkState> {
        Vec::new()
    }
    /// Hands the bus the [`FrameGate`] of the coordinator that receives from it (called
    /// once, when the coordinator starts). A bus that takes frames from the network checks
    /// each with it before queueing it, so that duplicates, stale frames and floods are
    /// dropped where they arrive. The default does nothing.
    fn attach(&self, gate: FrameGate) {
        let _ = gate;
    }
}

/// The state of one link of a [`Bus`]: a peer's endpoint, a Redis server.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct LinkState {
    /// What the link goes to (a peer URL; `redis` and the channel).
    pub target: String,
    /// Whether the link works: the last delivery to the peer succeeded (or none was
    /// tried yet), the Redis subscription is up.
    pub up: bool,
    /// Its failures so far: frames given up on (HTTP), reconnects (Redis).
    pub failures: u64,
}

impl LinkState {
    /// A link's state.
    pub fn new(target: impl Into<String>, up: bool, failures: u64) -> Self {
        Self {
            target: target.into(),
            up,
            failures,
        }
    }
}

/// A subscription to a [`Bus`].
pub trait Subscription: Send + 'static {
    /// The next event; `None` when the bus is gone.
    fn next(
        &mut self,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Option<BusEvent>> + Send + '_>>;
}

/// A bus could not take a frame.
#[derive(Debug)]
pub struct BusError {
    message: String,
}

impl BusError {
    /// An error with a message that says what failed.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }
}

impl fmt::Display for BusError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for BusError {}

/// The in-process bus: `tokio::sync::broadcast`. Cloning shares the bus.
#[derive(Debug, Clone)]
pub struct InProcessBus {
    tx: broadcast::Sender<Bytes>,
}

impl InProcessBus {
    /// A bus that holds up to 4,096 frames for a slow subscriber (past that it lags and
    /// is told so).
    pub fn new() -> Self {
        Self::with_capacity(4096)
    }

    /// A bus that holds up to `frames` for a slow subscriber (at least one).
    pub fn with_capacity(frames: usize) -> Self {
        Self {
            tx: broadcast::channel(frames.max(1)).0,
        }
    }
}

impl Default for InProcessBus {
    fn default() -> Self {
        Self::new()
    }
}

impl Bus for InProcessBus {
    fn publish(&self, frame: Bytes) -> Result<(), BusError> {
        // No subscriber is not an error: nobody needs telling.
        let _ = self.tx.send(frame);
        Ok(())
    }

    fn subscribe(&self) -> Box<dyn Subscription> {
        Box::new(InProcessSubscription(self.tx.subscribe()))
    }
}

pub(super) struct InProcessSubscription(pub(super) broadcast::Receiver<Bytes>);

impl Subscription for InProcessSubscription {
    fn next(
        &mut self,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Option<BusEvent>> + Send + '_>> {
        Box::pin(async move {
            match self.0.recv().await {
                Ok(frame) => Some(BusEvent::Frame(frame)),
                Err(broadcast::error::RecvError::Lagged(_)) => Some(BusEvent::Lost),
                Err(broadcast::error::RecvError::Closed) => None,
            }
        })
    }
}
