//! What the tiers store: a value with its deadline, version and tags.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

/// Tags (or dependencies) of an entry: invalidating a tag reaches every entry that carries it.
///
/// Cheap to clone; the empty set allocates nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tags(Option<Arc<[Box<str>]>>);

impl Tags {
    /// No tags.
    pub const fn none() -> Self {
        Self(None)
    }

    /// The tags as string slices.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().flat_map(|t| t.iter().map(|s| &**s))
    }

    /// Whether there are no tags.
    pub fn is_empty(&self) -> bool {
        self.0.as_ref().is_none_or(|t| t.is_empty())
    }

    /// How many tags there are.
    pub fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |t| t.len())
    }

    pub(crate) fn encoded_len(&self) -> usize {
        self.iter().map(|t| 2 + t.len()).sum()
    }
}

impl<S: Into<Box<str>>> FromIterator<S> for Tags {
    fn from_iter<I: IntoIterator<Item = S>>(iter: I) -> Self {
        let tags: Vec<Box<str>> = iter.into_iter().map(Into::into).collect();
        if tags.is_empty() {
            Self(None)
        } else {
            Self(Some(tags.into()))
        }
    }
}

/// Metadata stored with every entry in every tier.
///
/// `version` orders writes of one key across nodes (a hybrid logical clock once cluster
/// invalidation is on; `0` otherwise); `tags` are what tag and dependency invalidation
/// reach. Both persist in the disk tier, so a restart remembers them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EntryMeta {
    /// The version of the write that produced the entry.
    pub version: u64,
    /// Tags the entry depends on.
    pub tags: Tags,
}

/// An entry as a tier returns it: the value, the time it has left, and its metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The stored bytes.
    pub value: Bytes,
    /// Time left before the entry expires.
    pub ttl_left: Duration,
    /// Version and tags.
    pub meta: EntryMeta,
}

/// The memory tier's record: value, deadline, version, weight, tag size and a flag.
///
/// Kept small (56 bytes) and free of reference-counted options on purpose: quick_cache
/// clones the whole record on every hit, and an `Option<Arc<_>>` field alone costs about
/// 10 ns per hit (measured). Tags live in a side table of the memory tier; the record
/// only says whether there are any and how much they weigh.
#[derive(Debug, Clone)]
pub(crate) struct Stored {
    pub(crate) value: Bytes,
    /// Deadline in the tier clock's Unix milliseconds.
    pub(crate) expires: u64,
    pub(crate) version: u64,
    /// What the entry weighs against the memory tier's capacity, fixed when it is stored
    /// (quick_cache asks again on removal, so it must not change with the bounds).
    pub(crate) weight: u32,
    /// Bytes of the entry's tags (low 31 bits) and [`Stored::PASS`].
    bits: u32,
}

impl Stored {
    /// The flag of a hit-for-pass marker: not a value, but a note that the key's last
    /// response was not cacheable (or its load failed), so requests go to the origin
    /// without queueing behind a leader.
    const PASS: u32 = 1 << 31;

    pub(crate) fn new(value: Bytes, expires: u64, version: u64, tag_bytes: usize) -> Self {
        Self {
            value,
            expires,
            version,
            weight: 0,
            bits: tag_bytes.min((Self::PASS - 1) as usize) as u32,
        }
    }

    /// A hit-for-pass marker until `expires`.
    pub(crate) fn pass_marker(expires: u64) -> Self {
        Self {
            value: Bytes::new(),
            expires,
            version: 0,
            weight: 0,
            bits: Self::PASS,
        }
    }

    #[inline]
    pub(crate) fn is_pass(&self) -> bool {
        self.bits & Self::PASS != 0
    }

    #[inline]
    pub(crate) fn tag_bytes(&self) -> u32 {
        self.bits & !Self::PASS
    }

    pub(crate) fn weight_bytes(&self, key: &str) -> u64 {
        (key.len() + self.value.len() + self.tag_bytes() as usize + ENTRY_OVERHEAD) as u64
    }
}

/// Bytes counted for an entry's bookkeeping beside its key and value.
pub(crate) const ENTRY_OVERHEAD: usize = 64;

/// Where a tier reads the time to check deadlines.
///
/// Deadlines are Unix milliseconds in both tiers (the disk tier's survive a restart), so a
/// disk hit is promoted with exactly the time it has left.
///
/// A hit has to read the time. A clock read costs about 25 ns on a VM, as much as the
/// whole `quick_cache` lookup, so production tiers read a millisecond clock that one
/// background thread advances ([`TimeSource::Coarse`]); tests that drive expiry with
/// `tokio::time::pause()` need [`TimeSource::Tokio`]. [`TimeSource::Auto`], the default,
/// picks between the two when the tier is built.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum TimeSource {
    /// The default: [`TimeSource::Tokio`] if the tier is built inside a tokio runtime whose
    /// clock is paused (`#[tokio::test(start_paused = true)]`, or `tokio::time::pause()`
    /// called before the build), otherwise [`TimeSource::Coarse`]. The choice is made once,
    /// at build time: a test that pauses the clock after building the tier must ask for
    /// [`TimeSource::Tokio`] itself.
    #[default]
    Auto,
    /// Follow `tokio::time`: anchored to the wall clock once, then moved by
    /// `tokio::time::Instant`, so `tokio::time::pause()` and `advance()` drive expiry.
    /// Costs a clock read per cache hit.
    Tokio,
    /// A shared millisecond clock that one background thread advances; a hit reads an
    /// atomic instead of the clock. Expiry may be up to about a millisecond late. Real time
    /// only: it does not follow `tokio::time::pause()`.
    Coarse,
}

impl TimeSource {
    /// What [`TimeSource::Auto`] resolves to here and now; the other sources are returned
    /// as they are.
    pub fn resolve(self) -> TimeSource {
        match self {
            TimeSource::Auto if tokio_clock_paused() => TimeSource::Tokio,
            TimeSource::Auto => TimeSource::Coarse,
            other => other,
        }
    }
}

/// Whether this thread runs inside a tokio runtime whose clock is paused.
///
/// A paused clock stands still until the runtime advances it, which it cannot do while
/// this (synchronous) code runs; a running clock moves with the real one. So: let real
/// time move by 20 microseconds and see whether tokio's clock followed.
fn tokio_clock_paused() -> bool {
    if tokio::runtime::Handle::try_current().is_err() {
        return false;
    }
    let before = Instant::now();
    let real = std::time::Instant::now();
    while real.elapsed() < Duration::from_micros(20) {
        std::hint::spin_loop();
    }
    Instant::now() == before
}

/// Unix milliseconds, advancing with the chosen [`TimeSource`].
#[derive(Debug, Clone, Copy)]
pub(crate) enum Clock {
    Tokio { anchor: Instant, anchor_ms: u64 },
    Coarse(&'static AtomicU64),
}

/// The coarse clock: one thread stores the time every millisecond.
fn coarse() -> &'static AtomicU64 {
    static NOW: OnceLock<&'static AtomicU64> = OnceLock::new();
    NOW.get_or_init(|| {
        let now: &'static AtomicU64 = Box::leak(Box::new(AtomicU64::new(crate::util::now_ms())));
        let start = std::time::Instant::now();
        let start_ms = now.load(Ordering::Relaxed);
        let spawned = std::thread::Builder::new()
            .name("tower-cache-clock".into())
            .spawn(move || loop {
                std::thread::sleep(Duration::from_millis(1));
                now.store(start_ms + start.elapsed().as_millis() as u64, Ordering::Relaxed);
            });
        if let Err(e) = spawned {
            // Without the thread the clock would stand still and nothing would expire.
            tracing::error!(error = %e, "cannot start the coarse clock thread; entries will not expire");
        }
        now
    })
}

impl Clock {
    /// A clock for `source`; [`TimeSource::Auto`] is resolved here.
    pub(crate) fn new(source: TimeSource) -> Self {
        match source.resolve() {
            TimeSource::Coarse => Clock::Coarse(coarse()),
            _ => Clock::Tokio {
                anchor: Instant::now(),
                anchor_ms: crate::util::now_ms(),
            },
        }
    }

    /// The source this clock reads (never [`TimeSource::Auto`]).
    pub(crate) fn source(&self) -> TimeSource {
        match self {
            Clock::Tokio { .. } => TimeSource::Tokio,
            Clock::Coarse(_) => TimeSource::Coarse,
        }
    }

    #[inline]
    pub(crate) fn now_ms(&self) -> u64 {
        match self {
            Clock::Coarse(now) => now.load(Ordering::Relaxed),
            Clock::Tokio { anchor, anchor_ms } => {
                let d = Instant::now().saturating_duration_since(*anchor);
                anchor_ms + d.as_secs() * 1000 + u64::from(d.subsec_millis())
            }
        }
    }

    /// The deadline `ttl` from now, at least one millisecond away.
    #[inline]
    pub(crate) fn deadline(&self, ttl: Duration) -> u64 {
        let ms = ttl.as_nanos().div_ceil(1_000_000).max(1);
        self.now_ms()
            .saturating_add(ms.min(u64::MAX as u128) as u64)
    }
}
