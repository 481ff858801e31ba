//! Tombstones: the versions of recent invalidations, so that a write older than an
//! invalidation that already happened does not land after it (last writer wins).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::entry::Tags;
use crate::target::Glob;

/// Recent invalidations by key, pattern and tag, each with its version; forgotten after
/// `ttl` (a write delayed longer than that is no longer compared with them).
#[derive(Debug)]
pub(crate) struct Tombstones {
    ttl: Duration,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    keys: HashMap<String, (u64, Instant)>,
    tags: HashMap<String, (u64, Instant)>,
    patterns: Vec<(Glob, u64, Instant)>,
    records: u64,
}

impl Tombstones {
    pub(crate) fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            inner: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        crate::util::lock(&self.inner)
    }

    fn until(&self) -> Instant {
        Instant::now() + self.ttl
    }

    /// How long tombstones are kept.
    pub(crate) fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Brings back a tombstone read from the disk tier, remembered for `left`.
    pub(crate) fn restore(&self, kind: &str, target: &str, version: u64, left: Duration) {
        let until = Instant::now() + left;
        let mut i = self.lock();
        match kind {
            "k" => {
                let slot = i.keys.entry(target.to_owned()).or_insert((version, until));
                *slot = (slot.0.max(version), slot.1.max(until));
            }
            "t" => {
                let slot = i.tags.entry(target.to_owned()).or_insert((version, until));
                *slot = (slot.0.max(version), slot.1.max(until));
            }
            "p" => {
                if let Ok(glob) = Glob::new(target) {
                    i.patterns.push((glob, version, until));
                }
            }
            _ => {}
        }
    }

    pub(crate) fn key(&self, key: &str, version: u64) {
        let until = self.until();
        let mut i = self.lock();
        let slot = i.keys.entry(key.to_owned()).or_insert((version, until));
        *slot = (slot.0.max(version), until);
        i.prune();
    }

    pub(crate) fn tag(&self, tag: &str, version: u64) {
        let until = self.until();
        let mut i = self.lock();
        let slot = i.tags.entry(tag.to_owned()).or_insert((version, until));
        *slot = (slot.0.max(version), until);
        i.prune();
    }

    pub(crate) fn pattern(&self, glob: Glob, version: u64) {
        let until = self.until();
        let mut i = self.lock();
        i.patterns.push((glob, version, until));
        i.prune();
    }

    /// Whether an invalidation that the write is not certain to come after (see
    /// `version::outlives`) covers a write of `key` with `tags` and `version`.
    pub(crate) fn covers(&self, key: &str, tags: &Tags, version: u64) -> bool {
        let now = Instant::now();
        let i = self.lock();
        let covering = |v: u64| !crate::version::outlives(version, v);
        let live = |(v, until): &(u64, Instant)| covering(*v) && *until > now;
        i.keys.get(key).is_some_and(live)
            || tags.iter().any(|t| i.tags.get(t).is_some_and(live))
            || i.patterns
                .iter()
                .any(|(g, v, until)| covering(*v) && *until > now && g.matches(key))
    }
}

impl Inner {
    /// Drops expired tombstones now and then (every 256 records).
    fn prune(&mut self) {
        self.records += 1;
        if !self.records.is_multiple_of(256) {
            return;
        }
        let now = Instant::now();
        self.keys.retain(|_, (_, until)| *until > now);
        self.tags.retain(|_, (_, until)| *until > now);
        self.patterns.retain(|(_, _, until)| *until > now);
    }
}
