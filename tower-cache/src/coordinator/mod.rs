//! Cluster-wide invalidation: a [`Coordinator`] spreads a node's invalidations to the
//! other nodes over a [`Bus`], and applies theirs.
//!
//! - **Targets**: a key, a pattern, a tag, or a key with its dependents
//!   ([`Coordinator::invalidate_with_dependents`]: each node follows the dependency
//!   edges it holds, remembering every key it reaches).
//! - **Messages** carry the target, a hybrid-logical-clock version, the origin node id,
//!   its incarnation and a per-sender sequence number; never a value. A target is
//!   carried whole or not at all: one longer than 4,096 bytes is refused with
//!   [`TargetTooLong`] (the error's source) before anything is invalidated. Each message
//!   is signed with HMAC-SHA256 over a shared secret: an unsigned or forged message is
//!   dropped and counted. (The wire format is version 2: nodes of a release that wrote
//!   version 1 and nodes of this one refuse each other's frames; upgrade them together.)
//! - **Versions and conflicts**: a remote invalidation removes a local entry only if the
//!   entry is known to come after the message ([`resolve_conflict`]: last writer wins,
//!   where "last" is certain). One node's versions are ordered as it issued them; across
//!   nodes, an entry outlives an invalidation only from a later millisecond, since two
//!   nodes' counters within one millisecond say nothing of which came first (a read
//!   versioned as it began could otherwise outlive another node's write in that
//!   millisecond until its TTL). This holds for keys, patterns, tags and dependents, in
//!   both tiers, and for the tombstones that refuse older versioned writes. The low 8
//!   bits of the node id are part of the version: give a cluster's nodes ids that differ
//!   there.
//! - **Replay window**: a frame's version carries its sender's clock, so a frame says
//!   when it was sent. A node refuses a frame older than its replay window
//!   ([`CoordinatorBuilder::replay_window`], default 5 minutes) and counts it
//!   ([`CoordinationStatus::outside_window`]). Within the window, a frame sent again is
//!   a duplicate to a node that applied it, and to a node that restarted or joined since,
//!   it removes nothing newer than itself (see above): a captured frame never removes a
//!   later write.
//! - **Delivery order**: a node numbers its frames and hands each to the bus in one step,
//!   so the bus gets them in number order however many tasks invalidate at once; every
//!   bus delivers one sender's frames in that order (the HTTP bus keeps one queue and one
//!   sending task per peer, and sends the next frame only once the last was acknowledged
//!   or given up), so a later invalidation never overtakes an earlier one, and a frame
//!   the endpoint acknowledged is applied.
//! - **Lost messages**: a node that sees a gap in a sender's sequence numbers (counted in
//!   [`CoordinationStatus::sequence_gaps`]: a frame its sender gave up on), or whose
//!   bus reports that it lagged or reconnected, cannot know what it missed: it **drops its
//!   memory tier** (as Redis client-side caching does) and counts it. The disk tier is
//!   left as it is: it may hold entries a lost invalidation should have removed, but the
//!   memory tier it would promote them into is the only tier readers see first, and an
//!   operator who needs the disk exact after an outage clears it (`Cache::clear`) or
//!   relies on its TTLs. Flushing a large disk tier on every network blip would turn a
//!   short partition into a cold cache for every node.
//! - **Tombstones**: every invalidation, local or remote, is remembered with its version
//!   for a while ([`CoordinatorBuilder::tombstone_ttl`], default 5 minutes), in memory and
//!   in the disk tier (written in the same LMDB transaction as the delete, and read back
//!   when a coordinator starts, so a restart remembers them). A write made
//!   through [`Coordinator::set`] carries a version, and lands in a tier only if no
//!   remembered invalidation at least as new covers its key, its tags or a pattern
//!   matching it (checked under the memory tier's shard lock and by the disk writer), so
//!   an older write racing a newer invalidation never outlives it.
//! - **Clock skew**: a frame whose version is further ahead of this host's clock than
//!   [`CoordinatorBuilder::max_clock_skew`] (default 1 minute) is refused and counted
//!   ([`CoordinationStatus::clock_skew`]), and the node's [`HybridClock`] never moves
//!   further ahead of its wall clock than that, whatever it observes (frames, versioned
//!   writes, tombstones read back). One host whose clock runs a year ahead is refused by
//!   the others instead of making their later invalidations lose as older; set the bound
//!   above the clock difference between hosts (NTP keeps it to milliseconds).
//! - **Incarnations**: each start of a coordinator has an incarnation, carried by every
//!   frame: its start time in Unix milliseconds (taken after the tombstones a previous
//!   run recorded were read back, so never before them) in the high 44 bits, 20 random
//!   bits below. Sequence numbers count from 1 in each incarnation. A frame from a newer
//!   incarnation of a sender resets what the receiver tracks of it (a node restarted with
//!   its configured id is heard at once, never taken for duplicates), and counts as a
//!   gap that flushes the memory tier: what the earlier start had given up on before it
//!   stopped went with it, unseen. A frame from an older incarnation is refused and counted
//!   ([`CoordinationStatus::older_incarnation`]), as is a frame already applied
//!   ([`CoordinationStatus::duplicates`]).
//! - **Floods**: a bus that takes frames from the network (the HTTP bus) checks each with
//!   the coordinator's [`FrameGate`] before queueing it: a frame already taken (a retry,
//!   or one frame replayed thousands of times) is acknowledged and dropped there, a
//!   stale one is refused, and at most 256 frames of one sender (4,096 of all) wait for
//!   the coordinator; past that the sender is asked to retry later
//!   ([`CoordinationStatus::busy`]). No flood of frames can make the queue lag, so none
//!   can make a node drop its memory tier. The Redis bus checks each frame with the gate
//!   too and drops duplicates, stale and unsigned frames before its queue (pub/sub cannot
//!   ask a publisher to wait, so there it has no per-sender bound).
//! - **Listeners**: a panic in an `on_invalidate` listener never ends the receiving
//!   task: it is caught, counted ([`CoordinationStatus::listener_panics`]) and the
//!   listener stays registered.
//! - A node ignores its own messages.
//!
//! The in-process bus ([`InProcessBus`], `tokio::sync::broadcast`) links nodes in one
//! process: the default, and what the tests use.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use tower_cache::coordinator::{Coordinator, InProcessBus};
//! use tower_cache::{Cache, MemoryTier, WriteTiers};
//!
//! let bus = InProcessBus::new();
//! let (a, b) = (
//!     Cache::new(MemoryTier::builder().build()?),
//!     Cache::new(MemoryTier::builder().build()?),
//! );
//! let node_a = Coordinator::builder(a.clone(), bus.clone()).secret(b"a secret all nodes share").start()?;
//! let node_b = Coordinator::builder(b.clone(), bus.clone()).secret(b"a secret all nodes share").start()?;
//! b.set("provider:1", "rates".into(), Duration::from_secs(60), WriteTiers::ALL).await?;
//! node_a.invalidate_pattern("provider:*").await?;
//! node_b.applied(1).await; // wait until b applied one message
//! assert!(b.get("provider:1").await.is_none());
//! # Ok(()) }
//! ```

mod clock;
#[cfg(feature = "http-bus")]
#[cfg_attr(docsrs, doc(cfg(feature = "http-bus")))]
mod http_bus;
mod message;
#[cfg(feature = "redis")]
mod redis_bus;
mod tombstones;

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::{broadcast, watch};

pub use self::clock::{resolve_conflict, HybridClock, Winner};
#[cfg(feature = "http-bus")]
pub use self::http_bus::{HttpBus, HttpBusBuilder, InvalidateEndpoint};
use self::message::Message;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use self::redis_bus::{RedisBus, RedisBusBuilder};
use crate::cache::Cache;
use crate::error::BuildError;
use crate::error::InvalidateError;
pub use crate::target::{Target, TargetTooLong};

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

/// A coordinator's checks on a frame where a bus receives it, before any queue: the
/// signature, the replay window, the clock skew bound, the sender's incarnation and
/// sequence number (a frame already taken is a duplicate), and how many of the sender's
/// frames are waiting (at most 256 per sender, 4,096 in all).
///
/// Cloning shares the gate; it holds the coordinator weakly (a gate of a coordinator that
/// stopped admits everything, as no gate would).
#[derive(Clone)]
pub struct FrameGate {
    shared: std::sync::Weak<Shared>,
}

impl fmt::Debug for FrameGate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FrameGate").finish_non_exhaustive()
    }
}

/// What a [`FrameGate`] makes of a frame.
#[derive(Debug)]
#[non_exhaustive]
pub enum Admission {
    /// A frame to queue for the coordinator: keep the ticket with it until the
    /// coordinator has taken it (it holds the sender's place in the bound on waiting
    /// frames).
    New(AdmissionTicket),
    /// Taken already (a retry or a replay), or the node's own: acknowledge it, queue
    /// nothing.
    Duplicate,
    /// Not signed with the shared secret, or malformed.
    Unsigned,
    /// Signed, but never to be taken: older than the replay window, further ahead than the
    /// skew bound, or from an earlier start of its sender.
    Stale,
    /// Too many of this sender's frames (or of all senders') are waiting: ask again later.
    Busy,
}

/// A frame's place in a [`FrameGate`]'s bound on waiting frames; dropping it frees it.
pub struct AdmissionTicket {
    shared: std::sync::Weak<Shared>,
    node: u64,
}

impl fmt::Debug for AdmissionTicket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdmissionTicket")
            .field("node", &self.node)
            .finish()
    }
}

impl Drop for AdmissionTicket {
    fn drop(&mut self) {
        if let Some(sh) = self.shared.upgrade() {
            let mut gate = lock(&sh.gate);
            gate.waiting = gate.waiting.saturating_sub(1);
            if let Some(p) = gate.senders.get_mut(&self.node) {
                p.waiting = p.waiting.saturating_sub(1);
            }
        }
    }
}

/// Frames one sender may have waiting between a bus's gate and the coordinator.
const WAITING_PER_SENDER: usize = 256;
/// Frames all senders together may have waiting.
const WAITING: usize = 4096;
/// Senders a gate keeps track of.
const GATE_SENDERS: usize = 4096;

/// What a gate took from each sender, and how many frames wait.
#[derive(Default)]
struct GateState {
    senders: HashMap<u64, GateSender>,
    waiting: usize,
}

struct GateSender {
    incarnation: u64,
    seq: u64,
    waiting: usize,
}

impl FrameGate {
    /// Checks `frame`; see [`Admission`].
    pub fn admit(&self, frame: &[u8]) -> Admission {
        let Some(sh) = self.shared.upgrade() else {
            return Admission::New(AdmissionTicket {
                shared: std::sync::Weak::new(),
                node: 0,
            });
        };
        let Some(msg) = Message::decode(frame, &sh.secret) else {
            sh.stats.rejected.fetch_add(1, Ordering::Relaxed);
            return Admission::Unsigned;
        };
        if msg.node == sh.node {
            sh.stats.own.fetch_add(1, Ordering::Relaxed);
            return Admission::Duplicate;
        }
        if let Some(refused) = sh.refuse_by_time(&msg) {
            refused.fetch_add(1, Ordering::Relaxed);
            return Admission::Stale;
        }
        let mut gate = lock(&sh.gate);
        if gate.waiting >= WAITING {
            sh.stats.busy.fetch_add(1, Ordering::Relaxed);
            return Admission::Busy;
        }
        let tracked = gate.senders.len();
        let verdict = match gate.senders.get_mut(&msg.node) {
            None if tracked >= GATE_SENDERS => {
                // Forget the senders with nothing waiting before refusing a new one.
                gate.senders.retain(|_, p| p.waiting > 0);
                if gate.senders.len() >= GATE_SENDERS {
                    sh.stats.busy.fetch_add(1, Ordering::Relaxed);
                    return Admission::Busy;
                }
                None
            }
            None => None,
            Some(p) if msg.incarnation < p.incarnation => {
                sh.stats.older_incarnation.fetch_add(1, Ordering::Relaxed);
                Some(Admission::Stale)
            }
            Some(p) if msg.incarnation == p.incarnation && msg.seq <= p.seq => {
                sh.stats.duplicates.fetch_add(1, Ordering::Relaxed);
                Some(Admission::Duplicate)
            }
            Some(p) if p.waiting >= WAITING_PER_SENDER => {
                sh.stats.busy.fetch_add(1, Ordering::Relaxed);
                Some(Admission::Busy)
            }
            Some(p) => {
                p.incarnation = msg.incarnation;
                p.seq = msg.seq;
                p.waiting += 1;
                None
            }
        };
        if let Some(v) = verdict {
            return v;
        }
        gate.senders.entry(msg.node).or_insert(GateSender {
            incarnation: msg.incarnation,
            seq: msg.seq,
            waiting: 1,
        });
        gate.waiting += 1;
        Admission::New(AdmissionTicket {
            shared: self.shared.clone(),
            node: msg.node,
        })
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

struct InProcessSubscription(broadcast::Receiver<Bytes>);

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

/// Builds a [`Coordinator`]; see [`Coordinator::builder`].
pub struct CoordinatorBuilder<B> {
    cache: Cache,
    bus: B,
    node: Option<u64>,
    secret: Option<Vec<u8>>,
    tombstone_ttl: std::time::Duration,
    replay_window: std::time::Duration,
    max_clock_skew: std::time::Duration,
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
        let task = tokio::spawn(receive(Arc::downgrade(&shared), subscription));
        Ok(Coordinator {
            shared,
            _task: Arc::new(AbortOnDrop(task.abort_handle())),
        })
    }
}

struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Spreads invalidations over a [`Bus`]; see the [module docs](crate::coordinator).
///
/// Cloning shares the node; the receiving task stops when the last clone drops.
#[derive(Clone)]
pub struct Coordinator {
    shared: Arc<Shared>,
    _task: Arc<AbortOnDrop>,
}

impl fmt::Debug for Coordinator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Coordinator")
            .field("node", &self.shared.node)
            .field("status", &self.status())
            .finish()
    }
}

struct Shared {
    cache: Cache,
    bus: Box<dyn Bus>,
    node: u64,
    /// This start of the node (set once, when it starts).
    incarnation: AtomicU64,
    /// Frames older than this (by their version's clock) are refused.
    replay_window_ms: u64,
    secret: Vec<u8>,
    clock: HybridClock,
    /// The last sequence number given to a frame of this incarnation.
    seq: Mutex<u64>,
    /// What was applied from each sender.
    senders: Mutex<HashMap<u64, Sender>>,
    /// What the bus's gate took from each sender (see [`FrameGate`]).
    gate: Mutex<GateState>,
    stats: Stats,
    /// Messages applied so far (for tests and for waiting on propagation).
    applied: watch::Sender<u64>,
    tombstones: tombstones::Tombstones,
    /// When the last remote message came, and the last 1,024 lags in microseconds.
    recent: Mutex<(Option<std::time::Instant>, std::collections::VecDeque<u64>)>,
}

/// What a node applied from one sender.
#[derive(Clone, Copy, Debug)]
struct Sender {
    /// The sender's start these numbers belong to.
    incarnation: u64,
    /// The last sequence number applied.
    seq: u64,
    /// When its last frame came.
    at: std::time::Instant,
}

#[derive(Default)]
struct Stats {
    published: AtomicU64,
    received: AtomicU64,
    applied: AtomicU64,
    own: AtomicU64,
    rejected: AtomicU64,
    skipped_newer: AtomicU64,
    memory_flushes: AtomicU64,
    sequence_gaps: AtomicU64,
    duplicates: AtomicU64,
    older_incarnation: AtomicU64,
    outside_window: AtomicU64,
    clock_skew: AtomicU64,
    busy: AtomicU64,
    publish_errors: AtomicU64,
}

/// What a [`Coordinator`] invalidation did here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Invalidated {
    /// Entries removed on this node.
    pub removed: usize,
    /// The invalidation's version: writes at or below it do not outlive it.
    pub version: u64,
}

/// Counters of a [`Coordinator`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CoordinationStatus {
    /// This node's id.
    pub node: u64,
    /// Messages this node published.
    pub published: u64,
    /// Messages received from other nodes (signed correctly).
    pub received: u64,
    /// Remote invalidations applied.
    pub applied: u64,
    /// This node's own messages, ignored.
    pub own: u64,
    /// Frames dropped: unsigned, forged, malformed.
    pub rejected: u64,
    /// Remote key invalidations that left a newer local entry in place.
    pub skipped_newer: u64,
    /// Times the memory tier was dropped after lost messages.
    pub memory_flushes: u64,
    /// Gaps seen in a sender's sequence numbers (frames it gave up sending, or that were
    /// lost on the way); each one dropped the memory tier.
    pub sequence_gaps: u64,
    /// Frames dropped because they were applied already (a retry, or a replay).
    pub duplicates: u64,
    /// Frames refused because they came from an earlier start of their sender than one
    /// already heard from (a replay, or a second process with the same node id).
    pub older_incarnation: u64,
    /// Frames refused because they were older than the replay window
    /// ([`CoordinatorBuilder::replay_window`]).
    pub outside_window: u64,
    /// Frames refused because their version was further ahead of this host's clock than
    /// [`CoordinatorBuilder::max_clock_skew`].
    pub clock_skew: u64,
    /// Frames a bus's gate asked their sender to send again later, as too many of its
    /// frames (or of all senders') were waiting (see [`FrameGate`]).
    pub busy: u64,
    /// Calls of the store's `on_invalidate` listeners that panicked (contained: the
    /// invalidation completed; see [`Cache::on_invalidate`]).
    pub listener_panics: u64,
    /// Publishes the bus refused (the local invalidation was done all the same).
    pub publish_errors: u64,
    /// Other nodes heard from.
    pub peers: u64,
    /// Each node heard from: its id, the last sequence number and how long ago.
    pub peer_nodes: Vec<PeerNode>,
    /// The bus's links and whether each is up (see [`Bus::links`]).
    pub links: Vec<LinkState>,
    /// Time since the last message from another node, if any came.
    pub last_message_age: Option<std::time::Duration>,
    /// Invalidation lag, publish to applied (from the message's clock, so it includes
    /// clock skew between hosts), over the last 1,024 messages: median and p99.
    pub lag_p50: Option<std::time::Duration>,
    /// See `lag_p50`.
    pub lag_p99: Option<std::time::Duration>,
}

/// A node this one has heard from; see [`CoordinationStatus::peer_nodes`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct PeerNode {
    /// Its node id.
    pub node: u64,
    /// The start of it the sequence number belongs to (see the module docs).
    pub incarnation: u64,
    /// The last sequence number applied from it.
    pub last_seq: u64,
    /// Time since its last message.
    pub last_message_age: std::time::Duration,
}

impl Coordinator {
    /// A coordinator for `cache` on `bus`.
    pub fn builder<B: Bus>(cache: Cache, bus: B) -> CoordinatorBuilder<B> {
        CoordinatorBuilder {
            cache,
            bus,
            node: None,
            secret: None,
            tombstone_ttl: std::time::Duration::from_secs(300),
            replay_window: std::time::Duration::from_secs(300),
            max_clock_skew: std::time::Duration::from_secs(60),
        }
    }

    /// This node's id.
    pub fn node_id(&self) -> u64 {
        self.shared.node
    }

    /// The store.
    pub fn cache(&self) -> &Cache {
        &self.shared.cache
    }

    /// Invalidates `key` here, then on every node.
    pub async fn invalidate(&self, key: &str) -> Result<Invalidated, InvalidateError> {
        self.invalidate_everywhere(Target::Key(key.to_owned()))
            .await
    }

    /// Invalidates every key matching `pattern` here, then on every node.
    pub async fn invalidate_pattern(&self, pattern: &str) -> Result<Invalidated, InvalidateError> {
        // Checked before a version is taken or anything is remembered.
        crate::target::Glob::new(pattern)?;
        self.invalidate_everywhere(Target::Pattern(pattern.to_owned()))
            .await
    }

    /// Invalidates every entry with `tag` here, then on every node.
    pub async fn invalidate_tag(&self, tag: &str) -> Result<Invalidated, InvalidateError> {
        self.invalidate_everywhere(Target::Tag(tag.to_owned()))
            .await
    }

    /// Invalidates `key` and, transitively, every key registered as depending on it
    /// ([`Cache::register_dependency`]), here, then on every node: each node follows the
    /// dependency edges it holds. Returns what was removed here.
    pub async fn invalidate_with_dependents(
        &self,
        key: &str,
    ) -> Result<Invalidated, InvalidateError> {
        self.invalidate_everywhere(Target::Dependents(key.to_owned()))
            .await
    }

    /// Remembers, applies here (recording the tombstone on disk), then publishes. A target
    /// longer than a message carries is refused first ([`TargetTooLong`] as the error's
    /// source): nothing is invalidated anywhere.
    async fn invalidate_everywhere(&self, target: Target) -> Result<Invalidated, InvalidateError> {
        target
            .check_len()
            .map_err(|e| InvalidateError::with_source("cannot invalidate across the cluster", e))?;
        let version = self.shared.clock.now();
        let removed = self.shared.invalidate(&target, version, None).await?;
        self.publish(target, version);
        Ok(Invalidated { removed, version })
    }

    /// Writes `value` under a fresh version (returned); it lands only where no
    /// invalidation at least as new covers it (see the module docs). Returns `None` when
    /// the memory tier refused it for that reason.
    pub async fn set(
        &self,
        key: &str,
        value: Bytes,
        ttl: std::time::Duration,
        tags: crate::Tags,
        tiers: crate::WriteTiers,
    ) -> Result<Option<u64>, crate::InsertError> {
        let version = self.shared.clock.now();
        self.set_versioned(key, value, ttl, version, tags, tiers)
            .await
    }

    /// Writes `value` under `version` (from [`Self::next_version`] taken earlier, or from
    /// the data's own source); it lands only where no invalidation at least as new covers
    /// it. Returns the version, or `None` when the memory tier refused it.
    pub async fn set_versioned(
        &self,
        key: &str,
        value: Bytes,
        ttl: std::time::Duration,
        version: u64,
        tags: crate::Tags,
        tiers: crate::WriteTiers,
    ) -> Result<Option<u64>, crate::InsertError> {
        // A version from elsewhere moves the clock, but never past the skew bound.
        let _ = self.shared.clock.observe(version);
        let shared = Arc::downgrade(&self.shared);
        let (k, t) = (key.to_owned(), tags.clone());
        let check: Arc<dyn Fn() -> bool + Send + Sync> = Arc::new(move || {
            shared
                .upgrade()
                .is_none_or(|sh| !sh.tombstones.covers(&k, &t, version))
        });
        let meta = crate::EntryMeta { version, tags };
        let stored = self
            .shared
            .cache
            .set_if(key, value, ttl, meta, tiers, check)
            .await?;
        Ok(stored.then_some(version))
    }

    /// A version for a local write (give it in the entry's `EntryMeta::version`), so that
    /// remote invalidations older than the write leave it in place.
    pub fn next_version(&self) -> u64 {
        self.shared.clock.now()
    }

    /// The same as [`status`](Self::status).
    pub fn coordination_status(&self) -> CoordinationStatus {
        self.status()
    }

    /// Peers, links, counters, flushes and the invalidation-lag histogram.
    pub fn status(&self) -> CoordinationStatus {
        let s = &self.shared.stats;
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut peer_nodes: Vec<PeerNode> = lock(&self.shared.senders)
            .iter()
            .map(|(&node, p)| PeerNode {
                node,
                incarnation: p.incarnation,
                last_seq: p.seq,
                last_message_age: p.at.elapsed(),
            })
            .collect();
        peer_nodes.sort_by_key(|p| p.node);
        CoordinationStatus {
            node: self.shared.node,
            published: load(&s.published),
            received: load(&s.received),
            applied: load(&s.applied),
            own: load(&s.own),
            rejected: load(&s.rejected),
            skipped_newer: load(&s.skipped_newer),
            memory_flushes: load(&s.memory_flushes),
            sequence_gaps: load(&s.sequence_gaps),
            duplicates: load(&s.duplicates),
            older_incarnation: load(&s.older_incarnation),
            outside_window: load(&s.outside_window),
            clock_skew: load(&s.clock_skew),
            busy: load(&s.busy),
            listener_panics: self.shared.cache.listener_panics(),
            publish_errors: load(&s.publish_errors),
            peers: peer_nodes.len() as u64,
            peer_nodes,
            links: self.shared.bus.links(),
            ..self.recent()
        }
    }

    fn recent(&self) -> CoordinationStatus {
        let (last, lags) = &*lock(&self.shared.recent);
        let mut sorted: Vec<u64> = lags.iter().copied().collect();
        sorted.sort_unstable();
        let pct = |q: f64| {
            (!sorted.is_empty()).then(|| {
                std::time::Duration::from_micros(sorted[((sorted.len() - 1) as f64 * q) as usize])
            })
        };
        CoordinationStatus {
            last_message_age: last.map(|t| t.elapsed()),
            lag_p50: pct(0.5),
            lag_p99: pct(0.99),
            ..CoordinationStatus::default()
        }
    }

    /// Waits until at least `n` remote invalidations have been applied (or the node
    /// stops).
    pub async fn applied(&self, n: u64) {
        let mut rx = self.shared.applied.subscribe();
        let _ = rx.wait_for(|&a| a >= n).await;
    }

    fn publish(&self, target: Target, version: u64) {
        let sh = &self.shared;
        // A number is taken and its frame handed to the bus as one step, so the bus
        // receives this node's frames in the order of their numbers, however many tasks
        // invalidate at once (buses take frames without waiting).
        let mut seq = lock(&sh.seq);
        let msg = Message {
            node: sh.node,
            incarnation: sh.incarnation.load(Ordering::Relaxed),
            seq: *seq + 1,
            version,
            target,
        };
        let frame = match msg.encode(&sh.secret) {
            Ok(frame) => {
                *seq += 1;
                frame
            }
            Err(e) => {
                // Checked before the invalidation began; counted should it ever happen.
                sh.stats.publish_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "invalidation not published; applied locally only");
                return;
            }
        };
        match sh.bus.publish(frame) {
            Ok(()) => {
                sh.stats.published.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                sh.stats.publish_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "invalidation not published; applied locally only");
            }
        }
    }
}

impl Shared {
    /// Remembers the invalidation of `target` at `version`, then does it in the store
    /// (recording its tombstones on disk); with `keep_newer_than`, entries newer than
    /// that stay (see [`Cache::invalidate_recorded`]).
    async fn invalidate(
        &self,
        target: &Target,
        version: u64,
        keep_newer_than: Option<u64>,
    ) -> Result<usize, InvalidateError> {
        if let Target::Dependents(key) = target {
            // The keys are found as the edges are followed: each is remembered just
            // before it is deleted.
            let each = |k: &str| {
                let key = Target::Key(k.to_owned());
                self.remember(&key, version);
                self.tombstone(&key, version)
            };
            return self
                .cache
                .invalidate_dependents_recorded(key, &each, keep_newer_than)
                .await;
        }
        // Remembered first: a write older than this invalidation that lands while it is
        // being applied is refused.
        self.remember(target, version);
        self.cache
            .invalidate_recorded(target, self.tombstone(target, version), keep_newer_than)
            .await
    }

    /// Remembers an invalidation of `target` at `version` in memory (see the tombstones).
    fn remember(&self, target: &Target, version: u64) {
        match target {
            Target::Key(key) | Target::Dependents(key) => self.tombstones.key(key, version),
            Target::Tag(tag) => self.tombstones.tag(tag, version),
            Target::Pattern(p) => {
                if let Ok(glob) = crate::target::Glob::new(p) {
                    self.tombstones.pattern(glob, version);
                }
            }
        }
    }

    /// The disk record of an invalidation of `target` at `version`.
    fn tombstone(&self, target: &Target, version: u64) -> crate::target::Tombstone {
        let (kind, what) = match target {
            Target::Key(k) | Target::Dependents(k) => ("k", k),
            Target::Pattern(p) => ("p", p),
            Target::Tag(t) => ("t", t),
        };
        crate::target::Tombstone {
            row: format!("{kind}\u{0}{what}").into(),
            version,
            until_ms: unix_ms().saturating_add(self.tombstones.ttl().as_millis() as u64),
        }
    }

    /// Brings back the tombstones a previous run recorded in the disk tier.
    fn restore_tombstones(&self) {
        let Some(disk) = self.cache.disk() else {
            return;
        };
        let now = unix_ms();
        match disk.tombstones(now) {
            Ok(all) => {
                for t in all {
                    if let Some((kind, target)) = t.row.split_once('\u{0}') {
                        let left = std::time::Duration::from_millis(t.until_ms.saturating_sub(now));
                        self.tombstones.restore(kind, target, t.version, left);
                        let _ = self.clock.observe(t.version);
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot read tombstones from disk"),
        }
    }
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

async fn receive(shared: std::sync::Weak<Shared>, mut sub: Box<dyn Subscription>) {
    while let Some(event) = sub.next().await {
        let Some(sh) = shared.upgrade() else { return };
        match event {
            BusEvent::Lost => flush(&sh, "the bus lost messages"),
            BusEvent::Frame(frame) => {
                let Some(msg) = Message::decode(&frame, &sh.secret) else {
                    sh.stats.rejected.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!("invalidation frame dropped: unsigned, forged or malformed");
                    continue;
                };
                if msg.node == sh.node {
                    sh.stats.own.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                sh.stats.received.fetch_add(1, Ordering::Relaxed);
                if let Some(refused) = sh.refuse_by_time(&msg) {
                    refused.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let gap = match sh.admit(&msg) {
                    Admit::Next { gap } => gap,
                    Admit::Duplicate => {
                        sh.stats.duplicates.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    Admit::OlderIncarnation => {
                        sh.stats.older_incarnation.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(
                            node = msg.node,
                            "invalidation frame from an earlier start of its sender refused"
                        );
                        continue;
                    }
                };
                let _ = sh.clock.observe(msg.version);
                if gap {
                    sh.stats.sequence_gaps.fetch_add(1, Ordering::Relaxed);
                    flush(&sh, "a gap in a sender's sequence numbers");
                }
                apply(&sh, &msg).await;
                {
                    let sent_us =
                        (msg.version >> clock::NODE_AND_COUNTER_BITS).saturating_mul(1000);
                    let now_us = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_micros() as u64);
                    let mut recent = lock(&sh.recent);
                    recent.0 = Some(std::time::Instant::now());
                    if recent.1.len() == 1024 {
                        recent.1.pop_front();
                    }
                    recent.1.push_back(now_us.saturating_sub(sent_us));
                }
                sh.stats.applied.fetch_add(1, Ordering::Relaxed);
                sh.applied.send_modify(|a| *a += 1);
            }
        }
    }
}

/// What the receiver makes of a frame, by its sender's incarnation and sequence number.
enum Admit {
    /// To apply; `gap` when frames before it were lost.
    Next { gap: bool },
    /// Applied already.
    Duplicate,
    /// From an earlier start of the sender than one already heard from.
    OlderIncarnation,
}

impl Shared {
    /// The counter of the reason to refuse `msg` for its time, if there is one: older
    /// than the replay window, or further ahead than the skew bound.
    fn refuse_by_time(&self, msg: &Message) -> Option<&AtomicU64> {
        let sent_ms = msg.version >> clock::NODE_AND_COUNTER_BITS;
        if unix_ms().saturating_sub(sent_ms) > self.replay_window_ms {
            // Counted; logged at debug only, as a flood of them must not flood the log.
            tracing::debug!(
                node = msg.node,
                "invalidation frame older than the replay window refused"
            );
            return Some(&self.stats.outside_window);
        }
        if !self.clock.within_skew(msg.version) {
            tracing::debug!(
                node = msg.node,
                "invalidation frame from a clock too far ahead refused"
            );
            return Some(&self.stats.clock_skew);
        }
        None
    }

    /// Checks `msg` against what was applied from its sender, and records it if it is to
    /// be applied.
    fn admit(&self, msg: &Message) -> Admit {
        let mut senders = lock(&self.senders);
        let now = std::time::Instant::now();
        let next = Sender {
            incarnation: msg.incarnation,
            seq: msg.seq,
            at: now,
        };
        let Some(last) = senders.get_mut(&msg.node) else {
            // The first frame heard from a sender: nothing to compare with (frames of its
            // start before this one may predate this node, or have been refused).
            senders.insert(msg.node, next);
            return Admit::Next { gap: false };
        };
        if msg.incarnation < last.incarnation {
            return Admit::OlderIncarnation;
        }
        if msg.incarnation > last.incarnation {
            // The sender restarted. Whatever its earlier start had given up on went with
            // it, and nothing says whether there was any: a gap, always.
            *last = next;
            return Admit::Next { gap: true };
        }
        last.at = now;
        if msg.seq <= last.seq {
            // A duplicate (at-least-once delivery): already applied.
            return Admit::Duplicate;
        }
        let gap = msg.seq != last.seq + 1;
        last.seq = msg.seq;
        Admit::Next { gap }
    }
}

fn flush(sh: &Shared, why: &str) {
    sh.stats.memory_flushes.fetch_add(1, Ordering::Relaxed);
    tracing::warn!(
        why,
        "invalidations may have been missed; dropping the memory tier"
    );
    sh.cache.memory().clear();
}

async fn apply(sh: &Shared, msg: &Message) {
    let result = match &msg.target {
        Target::Key(key) => {
            // Remove only what is not newer than the invalidation.
            let local = sh
                .cache
                .memory()
                .get_entry(key)
                .map(|e| e.meta.version)
                .or_else(|| {
                    sh.cache
                        .disk()
                        .and_then(|d| d.get_entry(key))
                        .map(|e| e.meta.version)
                });
            match local {
                Some(v) if resolve_conflict(key, v, msg.version) == Winner::Local => {
                    sh.remember(&msg.target, msg.version);
                    sh.stats.skipped_newer.fetch_add(1, Ordering::Relaxed);
                    Ok(0)
                }
                _ => sh.invalidate(&msg.target, msg.version, None).await,
            }
        }
        _ => {
            sh.invalidate(&msg.target, msg.version, Some(msg.version))
                .await
        }
    };
    if let Err(e) = result {
        tracing::warn!(error = %e, "remote invalidation failed locally");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{MemoryTier, WriteTiers};

    #[tokio::test]
    async fn a_gap_in_a_senders_sequence_drops_the_memory_tier() {
        let bus = InProcessBus::new();
        let cache = Cache::new(MemoryTier::builder().build().unwrap());
        let secret = b"sixteen+ bytes of shared secret";
        let node = Coordinator::builder(cache.clone(), bus.clone())
            .node_id(1)
            .secret(secret)
            .start()
            .unwrap();
        cache
            .set(
                "k",
                "v".into(),
                std::time::Duration::from_secs(60),
                WriteTiers::ALL,
            )
            .await
            .unwrap();
        let frame = |seq| {
            Message {
                node: 7,
                incarnation: 1,
                seq,
                version: node.next_version(),
                target: Target::Key("absent".into()),
            }
            .encode(secret)
            .unwrap()
        };
        bus.publish(frame(1)).unwrap();
        bus.publish(frame(2)).unwrap();
        node.applied(2).await;
        assert!(cache.get("k").await.is_some(), "no gap yet");
        bus.publish(frame(2)).unwrap(); // a duplicate: ignored
        bus.publish(frame(5)).unwrap(); // 3 and 4 were lost
        node.applied(3).await;
        assert!(
            cache.get("k").await.is_none(),
            "the memory tier was dropped"
        );
        let s = node.status();
        assert_eq!((s.memory_flushes, s.applied, s.received), (1, 3, 4));
    }

    #[tokio::test]
    async fn a_frame_from_a_clock_a_year_ahead_is_refused_and_moves_no_clock() {
        let bus = InProcessBus::new();
        let cache = Cache::new(MemoryTier::builder().build().unwrap());
        let secret = b"sixteen+ bytes of shared secret";
        let node = Coordinator::builder(cache.clone(), bus.clone())
            .node_id(1)
            .secret(secret)
            .start()
            .unwrap();
        let ttl = std::time::Duration::from_secs(60);
        cache
            .set("k", "v".into(), ttl, WriteTiers::ALL)
            .await
            .unwrap();
        let year = (365 * 24 * 3600 * 1000u64) << clock::NODE_AND_COUNTER_BITS;
        let frame = |seq, version, key: &str| {
            Message {
                node: 7,
                incarnation: 1,
                seq,
                version,
                target: Target::Key(key.into()),
            }
            .encode(secret)
            .unwrap()
        };
        let before = node.next_version();
        bus.publish(frame(1, before + year, "k")).unwrap();
        bus.publish(frame(2, node.next_version(), "absent"))
            .unwrap();
        node.applied(1).await;
        assert_eq!(cache.get("k").await.unwrap(), "v", "the frame was refused");
        let s = node.status();
        assert_eq!((s.clock_skew, s.applied), (1, 1), "{s:?}");
        // A versioned write a year ahead lands, but does not drag the clock either.
        node.set_versioned(
            "w",
            "x".into(),
            ttl,
            before + year,
            Default::default(),
            WriteTiers::ALL,
        )
        .await
        .unwrap();
        let ahead_ms = (node.next_version() - before) >> clock::NODE_AND_COUNTER_BITS;
        assert!(ahead_ms < 120_000, "the clock jumped {ahead_ms} ms");
        let e = Coordinator::builder(cache, bus)
            .secret(secret)
            .max_clock_skew(std::time::Duration::ZERO)
            .start()
            .unwrap_err();
        assert!(e.to_string().contains("max_clock_skew"), "{e}");
    }

    /// A read on this node takes its version (say, as it starts reading the origin), and
    /// another node's invalidation issued in the same millisecond has a lower counter or
    /// node id: the counters of two nodes say nothing of which came first, so the
    /// invalidation wins, by key, pattern, tag and dependency, in memory and on disk, and
    /// a write versioned in that millisecond after the invalidation never lands.
    #[tokio::test]
    async fn another_nodes_invalidation_in_the_same_millisecond_wins() {
        let dir = tempfile::tempdir().unwrap();
        let bus = InProcessBus::new();
        let cache = Cache::new(MemoryTier::builder().build().unwrap()).with_disk(
            crate::DiskTier::builder(dir.path())
                .map_size(16 << 20)
                .open()
                .unwrap(),
        );
        let secret = b"sixteen+ bytes of shared secret";
        let node = Coordinator::builder(cache.clone(), bus.clone())
            .node_id(2)
            .secret(secret)
            .start()
            .unwrap();
        let ttl = std::time::Duration::from_secs(60);
        let read = node.next_version();
        let ms = read >> clock::NODE_AND_COUNTER_BITS;
        // Node 1's first version of that millisecond: below `read` as a number.
        let remote = (ms << clock::NODE_AND_COUNTER_BITS) | 1;
        assert!(remote < read);
        let tagged = crate::Tags::from_iter(["t".to_owned()]);
        for (key, tags) in [
            ("k", crate::Tags::default()),
            ("p:1", crate::Tags::default()),
            ("tagged", tagged),
            ("dep", crate::Tags::default()),
        ] {
            let stored = node
                .set_versioned(key, "read".into(), ttl, read, tags, WriteTiers::ALL)
                .await
                .unwrap();
            assert_eq!(stored, Some(read));
        }
        cache.register_dependency("dep", "user").await.unwrap();
        cache.disk().unwrap().flush().await.unwrap();
        let frame = |seq, target| {
            Message {
                node: 1,
                incarnation: 1,
                seq,
                version: remote,
                target,
            }
            .encode(secret)
            .unwrap()
        };
        bus.publish(frame(1, Target::Key("k".into()))).unwrap();
        bus.publish(frame(2, Target::Pattern("p:*".into())))
            .unwrap();
        bus.publish(frame(3, Target::Tag("t".into()))).unwrap();
        bus.publish(frame(4, Target::Dependents("user".into())))
            .unwrap();
        node.applied(4).await;
        for key in ["k", "p:1", "tagged", "dep"] {
            assert!(cache.memory().get(key).is_none(), "{key} stayed in memory");
            assert!(
                cache.disk().unwrap().get(key).is_none(),
                "{key} stayed on disk"
            );
        }
        assert_eq!(node.status().skipped_newer, 0);
        // A write versioned later in that millisecond by this node's counter is not
        // known to come after node 1's invalidation.
        let stored = node
            .set_versioned(
                "k",
                "late".into(),
                ttl,
                read + (1 << 8),
                Default::default(),
                WriteTiers::ALL,
            )
            .await
            .unwrap();
        assert_eq!(stored, None);
        // One from a later millisecond lands.
        let later = (ms + 1) << clock::NODE_AND_COUNTER_BITS | 2;
        let stored = node
            .set_versioned(
                "k",
                "new".into(),
                ttl,
                later,
                Default::default(),
                WriteTiers::ALL,
            )
            .await
            .unwrap();
        assert_eq!(stored, Some(later));
    }
}
