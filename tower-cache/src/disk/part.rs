//! Reading a large record in parts: its head and first block when it is opened, then
//! any byte range of its value, each in a short read transaction of its own.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::record::{addressable_layout, addressable_slice, decode_header, Layout, Tail, BLOCK};
use super::stats::bump;
use super::{DiskTier, Op};
use crate::error::DiskError;

// === DiskRecord ===

/// A record of the disk tier held in the addressable form, opened without reading its
/// value: its deadline, its length, and the value's first block (the part a reader
/// usually needs first, such as a stored response's head).
///
/// Every [`DiskRecord::read`] opens a read transaction of its own, checks that the key
/// still holds the very record that was opened (by the write sequence number in its
/// header), checks the checksums of the blocks the range touches, and copies out only
/// the range. A record replaced or removed since it was opened fails the read; bytes of
/// two records are never mixed. No read transaction is held between reads, so a slow
/// reader pins no pages and holds no reader slot.
#[derive(Debug, Clone)]
pub(crate) struct DiskRecord {
    disk: DiskTier,
    key: Arc<str>,
    seq: u64,
    layout: Layout,
    expires_ms: u64,
    first: Bytes,
}

impl DiskRecord {
    /// Opens the addressable record `raw` (under `key`, layout checked), copying its
    /// first block.
    pub(super) fn open(
        disk: &DiskTier,
        key: &str,
        raw: &[u8],
        layout: Layout,
    ) -> Result<Self, &'static str> {
        let header = decode_header(raw).ok_or("record shorter than its header")?;
        let first = addressable_slice(raw, layout, 0, layout.len.min(BLOCK))?;
        bump(&disk.shared.counters.value_bytes_read, first.len() as u64);
        Ok(Self {
            disk: disk.clone(),
            key: key.into(),
            seq: header.seq,
            layout,
            expires_ms: header.expires_ms,
            first: Bytes::copy_from_slice(first),
        })
    }

    /// Counts a reader of this record's key until the guard drops (see
    /// [`DiskTier::unread`]): a body streaming from the record, say.
    pub(crate) fn reading(&self) -> Reading {
        let id = self.layout.lineage.id;
        let mut readers = self
            .disk
            .shared
            .readers
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        *readers.entry((self.key.clone(), id)).or_insert(0) += 1;
        Reading {
            disk: self.disk.clone(),
            key: self.key.clone(),
            id,
        }
    }

    /// The length of the value.
    pub(crate) fn len(&self) -> u64 {
        self.layout.len as u64
    }

    /// The value's first block (all of it when it is shorter than a block).
    pub(crate) fn first_block(&self) -> &Bytes {
        &self.first
    }

    /// Bytes `from..from + len` of the value, to be kept by a new write of the key
    /// ([`DiskTier::queue_splice`]) while the key still holds this record; `None` when
    /// the range is outside the value.
    pub(crate) fn tail(&self, from: u64, len: u64) -> Option<Tail> {
        let from = usize::try_from(from).ok()?;
        let len = usize::try_from(len).ok()?;
        (from.checked_add(len)? <= self.layout.len).then_some(Tail {
            seq: self.seq,
            from,
            len,
        })
    }

    /// Time left before the record expires (zero once it has).
    pub(crate) fn ttl_left(&self) -> Duration {
        Duration::from_millis(self.expires_ms.saturating_sub(self.disk.clock.now_ms()))
    }

    /// Bytes `from..from + len` of the value, read in a read transaction of their own,
    /// on the calling thread. Fails if the key no longer holds this record, if the range
    /// is outside the value, or if a block it touches is damaged (then the record is
    /// dropped and counted as corrupt).
    pub(crate) fn read(&self, from: u64, len: usize) -> Result<Bytes, DiskError> {
        let shared = &self.disk.shared;
        // Within the record opened, whatever the key holds now (a record that kept these
        // bytes may have more after them).
        let from = usize::try_from(from)
            .ok()
            .filter(|f| f.checked_add(len).is_some_and(|end| end <= self.layout.len))
            .ok_or_else(|| DiskError::new("disk tier: read past the end of a record"))?;
        let state = shared.state();
        let o = state.as_ref().ok_or_else(DiskError::closed)?;
        let rtxn = o.env.read_txn().map_err(|e| DiskError::lmdb("read", e))?;
        let raw = o
            .dbs
            .entries
            .get(&rtxn, self.key.as_bytes())
            .map_err(|e| DiskError::lmdb("read", e))?
            .ok_or_else(|| DiskError::new("disk tier: the record was removed while it was read"))?;
        // The record opened, or one that kept its bytes behind a new head (a stored
        // response revalidated meanwhile): then the range is found by the lineage.
        let (layout, from) = if decode_header(raw).is_some_and(|h| h.seq == self.seq)
            && raw.len() == self.layout.payload + self.layout.len
        {
            (self.layout, from)
        } else {
            let moved = addressable_layout(raw).ok().and_then(|now| {
                let at = self.layout.lineage.map(from, now.lineage)?;
                Some((now, at))
            });
            moved.ok_or_else(|| {
                DiskError::new("disk tier: the record was replaced while it was read")
            })?
        };
        match addressable_slice(raw, layout, from, len) {
            Ok(part) => {
                bump(&shared.counters.value_bytes_read, part.len() as u64);
                Ok(Bytes::copy_from_slice(part))
            }
            Err("range outside the value") => {
                Err(DiskError::new("disk tier: read past the end of a record"))
            }
            Err(why) => {
                bump(&shared.counters.corrupt, 1);
                tracing::warn!(key = &*self.key, why, "disk tier: corrupt record dropped");
                let _ = self.disk.tx.try_send(Op::Delete {
                    key: (&*self.key).into(),
                    tombstone: None,
                    ack: None,
                });
                Err(DiskError::new(format!("disk tier: corrupt record: {why}")))
            }
        }
    }

    /// Like [`Self::read`], on tokio's blocking pool (inline outside a runtime).
    pub(crate) async fn read_async(&self, from: u64, len: usize) -> Result<Bytes, DiskError> {
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                let record = self.clone();
                rt.spawn_blocking(move || record.read(from, len))
                    .await
                    .unwrap_or_else(|e| Err(DiskError::new(format!("disk tier: read task: {e}"))))
            }
            Err(_) => self.read(from, len),
        }
    }
}

// === readers ===

/// A reader of a key's large record (of one lineage: the record, and those that keep its
/// bytes), counted until dropped.
#[derive(Debug)]
pub(crate) struct Reading {
    disk: DiskTier,
    key: Arc<str>,
    id: u64,
}

impl Drop for Reading {
    fn drop(&mut self) {
        let shared = &self.disk.shared;
        let mut readers = shared.readers.lock().unwrap_or_else(|p| p.into_inner());
        let entry = (self.key.clone(), self.id);
        if let Some(n) = readers.get_mut(&entry) {
            *n -= 1;
            if *n == 0 {
                readers.remove(&entry);
                shared.unread.notify_waiters();
            }
        }
    }
}

/// How a wait for a key's readers ended (see [`DiskTier::unread`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unread {
    /// No reader of the record the key holds is left (or it holds none).
    Done,
    /// A newer write of the key began to wait: this one is not needed.
    Superseded,
}

impl DiskTier {
    /// The lineage of the large record `key` holds, if it holds one (read in place).
    fn lineage_of(&self, key: &str) -> Option<u64> {
        let state = self.shared.state();
        let o = state.as_ref()?;
        let rtxn = o.env.read_txn().ok()?;
        let raw = o.dbs.entries.get(&rtxn, key.as_bytes()).ok()??;
        addressable_layout(raw).ok().map(|l| l.lineage.id)
    }

    /// Whether a body streams from the large record `key` holds now (a reader of a
    /// record since replaced or removed does not count).
    pub(crate) fn is_read(&self, key: &str) -> bool {
        let Some(id) = self.lineage_of(key) else {
            return false;
        };
        let readers = self
            .shared
            .readers
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        readers.contains_key(&(Arc::from(key), id))
    }

    /// A number for a write about to be asked for (taken before the origin is asked):
    /// later requests get larger numbers, so the newest response is the largest.
    pub(crate) fn next_order() -> u64 {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    /// Registers write `mine` (see [`Self::next_order`]) of `key`, which may wait for
    /// the key's readers: it supersedes the writes of `key` registered before it with
    /// smaller numbers (waking those that wait). `false` if a newer one is registered:
    /// this one is not needed.
    pub(crate) fn defer(&self, key: &str, mine: u64) -> bool {
        let mut deferred = self
            .shared
            .deferred
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        match deferred.get_mut(key) {
            Some(n) if *n > mine => return false,
            Some(n) => *n = mine,
            None => {
                deferred.insert(Arc::from(key), mine);
            }
        }
        drop(deferred);
        self.shared.unread.notify_waiters();
        true
    }

    /// Whether a newer write of `key` than `mine` was registered since.
    pub(crate) fn superseded(&self, key: &str, mine: u64) -> bool {
        let deferred = self
            .shared
            .deferred
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        deferred.get(key) != Some(&mine)
    }

    /// Ends the wait of deferred write `mine` of `key` (run or dropped).
    pub(crate) fn undefer(&self, key: &str, mine: u64) {
        let mut deferred = self
            .shared
            .deferred
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if deferred.get(key) == Some(&mine) {
            deferred.remove(key);
        }
    }

    /// Waits until no body streams from the large record `watched` holds, or until a
    /// newer deferred write of `key` than `mine` supersedes this one.
    pub(crate) async fn unread(&self, key: &str, watched: &str, mine: u64) -> Unread {
        loop {
            let notified = self.shared.unread.notified();
            if self.superseded(key, mine) {
                return Unread::Superseded;
            }
            if !self.is_read(watched) {
                return Unread::Done;
            }
            notified.await;
        }
    }
}
