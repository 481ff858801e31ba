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
//!   memory tier** (as Redis client-side caching does) and counts it. A gap after a
//!   sender's last frame shows too: a node that publishes nothing sends a **digest**
//!   every [`CoordinatorBuilder::digest_interval`] (2 s by default), the number of its
//!   last invalidation, so a receiver that missed it learns so within about that long
//!   rather than at the sender's next invalidation, which may never come. The first
//!   frame or digest heard from a sender whose start began after this node's (by more
//!   than twice [`CoordinatorBuilder::max_clock_skew`]) shows a gap too when its number
//!   says earlier frames were sent: they were sent while this node was up. The disk tier is
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

mod builder;
mod bus;
mod clock;
mod gate;
#[cfg(feature = "http-bus")]
#[cfg_attr(docsrs, doc(cfg(feature = "http-bus")))]
mod http_bus;
mod message;
mod node;
#[cfg(feature = "redis")]
mod redis_bus;
#[cfg(test)]
mod tests;
mod tombstones;

pub use self::builder::CoordinatorBuilder;
pub use self::bus::{Bus, BusError, BusEvent, InProcessBus, LinkState, Subscription};
pub use self::gate::{Admission, AdmissionTicket, FrameGate};
pub use self::node::{CoordinationStatus, Coordinator, Invalidated, PeerNode};
// What the parts of the coordinator share among themselves.
use self::node::{
    lock, receive, send_digests, AbortOnDrop, GateSender, Shared, Stats, GATE_SENDERS, WAITING,
    WAITING_PER_SENDER,
};

pub use self::clock::{resolve_conflict, HybridClock, Winner};
#[cfg(feature = "http-bus")]
pub use self::http_bus::{HttpBus, HttpBusBuilder, InvalidateEndpoint};
use self::message::Message;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use self::redis_bus::{RedisBus, RedisBusBuilder};
pub use crate::target::{Target, TargetTooLong};
