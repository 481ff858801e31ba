//! What the tiers store: a value with its deadline, version and tags.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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

/// The memory tier's record: value, deadline, metadata.
#[derive(Debug, Clone)]
pub(crate) struct Stored {
    pub(crate) value: Bytes,
    pub(crate) expires: Instant,
    pub(crate) meta: EntryMeta,
}

impl Stored {
    pub(crate) fn weight_bytes(&self, key: &str) -> u64 {
        (key.len() + self.value.len() + self.meta.tags.encoded_len() + ENTRY_OVERHEAD) as u64
    }
}

/// Bytes counted for an entry's bookkeeping beside its key and value.
pub(crate) const ENTRY_OVERHEAD: usize = 64;

/// Wall-clock milliseconds that advance with tokio's clock.
///
/// The disk tier keeps deadlines as Unix milliseconds, so they mean the same after a
/// restart. Reading them through this clock (anchored to the wall clock once, then moved
/// by `tokio::time::Instant`) keeps the two tiers on one time line, and lets tests drive
/// both with `tokio::time::pause()` and `advance()`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    anchor: Instant,
    anchor_ms: u64,
}

impl Clock {
    pub(crate) fn new() -> Self {
        let anchor_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        Self {
            anchor: Instant::now(),
            anchor_ms,
        }
    }

    pub(crate) fn now_ms(&self) -> u64 {
        self.anchor_ms
            + Instant::now()
                .saturating_duration_since(self.anchor)
                .as_millis() as u64
    }
}
