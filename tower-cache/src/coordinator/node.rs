//! A running coordinator: publishing, receiving, applying and its status.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::watch;

use super::*;
use crate::cache::Cache;
use crate::error::InvalidateError;

pub(super) struct AbortOnDrop(pub(super) tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Spreads invalidations over a [`Bus`]; see the [module docs](crate::coordinator).
///
/// Cloning shares the node; its tasks (receiving, and sending digests) stop when the
/// last clone drops.
#[derive(Clone)]
pub struct Coordinator {
    pub(super) shared: Arc<Shared>,
    pub(super) _tasks: Arc<[AbortOnDrop; 2]>,
}

impl fmt::Debug for Coordinator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Coordinator")
            .field("node", &self.shared.node)
            .field("status", &self.status())
            .finish()
    }
}

pub(super) struct Shared {
    pub(super) cache: Cache,
    pub(super) bus: Box<dyn Bus>,
    pub(super) node: u64,
    /// This start of the node (set once, when it starts).
    pub(super) incarnation: AtomicU64,
    /// Frames older than this (by their version's clock) are refused.
    pub(super) replay_window_ms: u64,
    pub(super) secret: Vec<u8>,
    pub(super) clock: HybridClock,
    /// The last sequence number given to a frame of this incarnation.
    pub(super) seq: Mutex<u64>,
    /// What was applied from each sender.
    pub(super) senders: Mutex<HashMap<u64, Sender>>,
    /// What the bus's gate took from each sender (see [`FrameGate`]).
    pub(super) gate: Mutex<GateState>,
    pub(super) stats: Stats,
    /// Messages applied so far (for tests and for waiting on propagation).
    pub(super) applied: watch::Sender<u64>,
    pub(super) tombstones: tombstones::Tombstones,
    /// When the last remote message came, and the last 1,024 lags in microseconds.
    pub(super) recent: Mutex<(Option<std::time::Instant>, std::collections::VecDeque<u64>)>,
}

/// What a node applied from one sender.
#[derive(Clone, Copy, Debug)]
pub(super) struct Sender {
    /// The sender's start these numbers belong to.
    pub(super) incarnation: u64,
    /// The last sequence number applied.
    pub(super) seq: u64,
    /// When its last message came: one with a newer version than any before it (a
    /// replayed one does not count).
    pub(super) at: std::time::Instant,
    /// The newest version heard from it.
    pub(super) version: u64,
}

impl Sender {
    /// Notes a message of this start with `version` at `now`; whether it was newer than
    /// any before it.
    fn hear(&mut self, version: u64, now: std::time::Instant) -> bool {
        let fresh = version > self.version;
        if fresh {
            self.version = version;
            self.at = now;
        }
        fresh
    }
}

#[derive(Default)]
pub(super) struct Stats {
    pub(super) published: AtomicU64,
    pub(super) received: AtomicU64,
    pub(super) applied: AtomicU64,
    pub(super) own: AtomicU64,
    pub(super) rejected: AtomicU64,
    pub(super) skipped_newer: AtomicU64,
    pub(super) memory_flushes: AtomicU64,
    pub(super) sequence_gaps: AtomicU64,
    pub(super) duplicates: AtomicU64,
    pub(super) older_incarnation: AtomicU64,
    pub(super) outside_window: AtomicU64,
    pub(super) clock_skew: AtomicU64,
    pub(super) busy: AtomicU64,
    pub(super) publish_errors: AtomicU64,
    pub(super) digests_received: AtomicU64,
    pub(super) digests_sent: AtomicU64,
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
    /// Digests this node sent: while it publishes no invalidation, it says every
    /// [`CoordinatorBuilder::digest_interval`] which number it gave its last one (handed
    /// to the bus: one the bus did not take, as it has no peer or frames still wait, is
    /// not counted).
    pub digests_sent: u64,
    /// Digests received from other nodes; one that shows frames never received counts
    /// as a gap ([`Self::sequence_gaps`]) and drops the memory tier.
    pub digests_received: u64,
    /// Other nodes heard from.
    pub peers: u64,
    /// Each node heard from: its id, the last sequence number and how long ago.
    pub peer_nodes: Vec<PeerNode>,
    /// The bus's links and whether each is up (see [`Bus::links`]).
    pub links: Vec<LinkState>,
    /// Time since the last message (an invalidation applied, or a digest) from another
    /// node, if any came.
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
    /// The last sequence number applied from it, or shown by its last digest (a frame
    /// shown by a digest and never received was covered by dropping the memory tier).
    pub last_seq: u64,
    /// Time since its last message (an invalidation or a digest).
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
            digest_interval: std::time::Duration::from_secs(2),
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
            digests_sent: load(&s.digests_sent),
            digests_received: load(&s.digests_received),
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
            target: Some(target),
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
    pub(super) fn restore_tombstones(&self) {
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

pub(super) use crate::util::now_ms as unix_ms;

pub(super) use crate::util::lock;

pub(super) async fn receive(shared: std::sync::Weak<Shared>, mut sub: Box<dyn Subscription>) {
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
                    if !msg.is_digest() {
                        sh.stats.own.fetch_add(1, Ordering::Relaxed);
                    }
                    continue;
                }
                let Some(target) = &msg.target else {
                    receive_digest(&sh, &msg);
                    continue;
                };
                sh.stats.received.fetch_add(1, Ordering::Relaxed);
                if let Some(refused) = sh.refuse_by_time(&msg) {
                    refused.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let gap = match sh.admit(&msg) {
                    Admit::Next { gap } => gap,
                    Admit::Current => continue,
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
                apply(&sh, target, msg.version).await;
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

/// Takes a digest: a sender's last number, so that frames of it lost at the end of its
/// activity show as a gap (counted and flushed as any gap) without waiting for its next
/// invalidation.
fn receive_digest(sh: &Shared, msg: &Message) {
    sh.stats.digests_received.fetch_add(1, Ordering::Relaxed);
    if let Some(refused) = sh.refuse_by_time(msg) {
        refused.fetch_add(1, Ordering::Relaxed);
        return;
    }
    match sh.admit(msg) {
        Admit::Next { gap: true } => {
            sh.stats.sequence_gaps.fetch_add(1, Ordering::Relaxed);
            flush(sh, "a digest shows frames of a sender that never came");
        }
        Admit::Next { gap: false } | Admit::Current => {}
        Admit::Duplicate => {}
        Admit::OlderIncarnation => {
            sh.stats.older_incarnation.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Sends a digest every `every` while this node publishes nothing (one published
/// invalidation shows any gap before it; a digest shows one after the last).
pub(super) async fn send_digests(shared: std::sync::Weak<Shared>, every: std::time::Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    let mut seen = None;
    loop {
        tick.tick().await;
        let Some(sh) = shared.upgrade() else { return };
        let seq = lock(&sh.seq);
        if seen == Some(*seq) {
            let digest = Message::digest(
                sh.node,
                sh.incarnation.load(Ordering::Relaxed),
                *seq,
                sh.clock.now(),
            );
            // Handed to the bus under the numbering lock, as invalidations are, so that it
            // goes after the frame it numbers. A digest not sent is not counted as an
            // error: the next one goes a tick later.
            if let Ok(frame) = digest.encode(&sh.secret) {
                if sh.bus.publish_digest(frame).is_ok() {
                    sh.stats.digests_sent.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        seen = Some(*seq);
    }
}

/// What the receiver makes of a frame, by its sender's incarnation and sequence number.
pub(super) enum Admit {
    /// To apply; `gap` when frames before it were lost.
    Next { gap: bool },
    /// A digest that shows nothing missed.
    Current,
    /// Applied already.
    Duplicate,
    /// From an earlier start of the sender than one already heard from.
    OlderIncarnation,
}

impl Shared {
    /// The counter of the reason to refuse `msg` for its time, if there is one: older
    /// than the replay window, or further ahead than the skew bound.
    pub(super) fn refuse_by_time(&self, msg: &Message) -> Option<&AtomicU64> {
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

    /// Notes that a digest of `msg`'s sender came, for the ages in the status, when it
    /// is of the sender's start heard from (the digest's number is not recorded: only
    /// [`Shared::admit`] does that).
    pub(super) fn heard(&self, msg: &Message) {
        let now = std::time::Instant::now();
        let fresh = lock(&self.senders)
            .get_mut(&msg.node)
            .is_some_and(|last| last.incarnation == msg.incarnation && last.hear(msg.version, now));
        if fresh {
            lock(&self.recent).0 = Some(now);
        }
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
            version: msg.version,
        };
        if msg.is_digest() {
            // A digest applies nothing: hearing it is what the last message's age counts
            // (an invalidation counts once applied). Not a replayed one.
            let fresh = senders.get(&msg.node).is_none_or(|l| {
                msg.incarnation > l.incarnation
                    || (msg.incarnation == l.incarnation && msg.version > l.version)
            });
            if fresh {
                lock(&self.recent).0 = Some(now);
            }
        }
        let Some(last) = senders.get_mut(&msg.node) else {
            // The first frame heard from a sender: frames of its start before this one may
            // predate this node, or have been refused. Unless its start began after this
            // node's (by more than either clock may be off): then they were sent to this
            // node and never came, as a sender that gave up its first frames, then went
            // quiet, says with its digests.
            let numbered_before = if msg.is_digest() { 0 } else { 1 };
            let margin = self.clock.max_skew_ms().saturating_mul(2);
            let mine = clock::incarnation_start_ms(self.incarnation.load(Ordering::Relaxed));
            let gap = msg.seq > numbered_before
                && clock::incarnation_start_ms(msg.incarnation) >= mine.saturating_add(margin);
            senders.insert(msg.node, next);
            return Admit::Next { gap };
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
        last.hear(msg.version, now);
        if msg.is_digest() {
            // The number of a frame already applied, or of one that never came.
            if msg.seq <= last.seq {
                return Admit::Current;
            }
            last.seq = msg.seq;
            return Admit::Next { gap: true };
        }
        if msg.seq <= last.seq {
            // A duplicate (at-least-once delivery): already applied.
            return Admit::Duplicate;
        }
        let gap = msg.seq != last.seq + 1;
        last.seq = msg.seq;
        Admit::Next { gap }
    }
}

pub(super) fn flush(sh: &Shared, why: &str) {
    sh.stats.memory_flushes.fetch_add(1, Ordering::Relaxed);
    tracing::warn!(
        why,
        "invalidations may have been missed; dropping the memory tier"
    );
    sh.cache.memory().clear();
}

pub(super) async fn apply(sh: &Shared, target: &Target, version: u64) {
    let result = match target {
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
                Some(v) if resolve_conflict(key, v, version) == Winner::Local => {
                    sh.remember(target, version);
                    sh.stats.skipped_newer.fetch_add(1, Ordering::Relaxed);
                    Ok(0)
                }
                _ => sh.invalidate(target, version, None).await,
            }
        }
        _ => sh.invalidate(target, version, Some(version)).await,
    };
    if let Err(e) = result {
        tracing::warn!(error = %e, "remote invalidation failed locally");
    }
}

// === what the bus's gate keeps (see `gate`) ===

/// Frames one sender may have waiting between a bus's gate and the coordinator.
pub(super) const WAITING_PER_SENDER: usize = 256;
/// Frames all senders together may have waiting.
pub(super) const WAITING: usize = 4096;
/// Senders a gate keeps track of.
pub(super) const GATE_SENDERS: usize = 4096;

/// What a gate took from each sender, and how many frames wait.
#[derive(Default)]
pub(super) struct GateState {
    pub(super) senders: HashMap<u64, GateSender>,
    pub(super) waiting: usize,
}

pub(super) struct GateSender {
    pub(super) incarnation: u64,
    pub(super) seq: u64,
    pub(super) waiting: usize,
}
