//! The write a stored response ends with: whole, as a new head in front of a body the
//! disk tier keeps, or around a stored part; at once, or once the bodies streaming from
//! the record it replaces have ended.

use ::http::StatusCode;
use bytes::Bytes;

use super::super::body::DiskBody;
use super::super::entry::{self, HttpEntry};
use super::super::range;
use super::{IndexUpdate, LeaderGuard};
use crate::cache::Cache;
use crate::disk::{Around, Unread};
use crate::entry::EntryMeta;
use crate::generation::Ticket;

/// Stores `entry` as `c` says: whole, or, for a body the disk tier holds in parts, as a
/// new head that the disk tier's writer puts in front of that body (the body never
/// passes through memory; nothing is written if the key no longer holds its record).
pub(super) fn put(c: &Commit, entry: &HttpEntry) -> Written {
    let meta = c.meta.clone();
    match &entry.on_disk {
        None => match entry::encode_entry(entry) {
            Some(bytes) => c
                .store
                .store_loaded(&c.key, bytes, c.ttl, meta, c.ticket.clone())
                .map(|_| None),
            None => Ok(None),
        },
        Some(body) => {
            let head = entry::encode_head(entry, body.len, 0);
            match head.zip(body.record.tail(body.offset, body.len)) {
                Some((head, tail)) => c
                    .store
                    .store_spliced(
                        &c.key,
                        head.freeze(),
                        tail,
                        Around::After(Bytes::new()),
                        c.ttl,
                        meta,
                        c.ticket.clone(),
                    )
                    .map(|()| None),
                None => Ok(None),
            }
        }
    }
}

/// Whether a part (`head`, a body of `len` bytes) keeps the response stored before it
/// (`before`, whose body the disk tier holds) where it is (RFC 9111 section 3.4): a part
/// of the same complete representation (the stored body with the part's fields), or one
/// next to a stored part (the new bytes before and after it). Then the entry to store
/// (head only) and the ranges of the new body that go before and after the stored body.
#[allow(clippy::type_complexity)]
pub(super) fn keeps_stored(
    head: &HttpEntry,
    len: u64,
    before: &HttpEntry,
    on_disk: &DiskBody,
    limit: usize,
) -> Option<(HttpEntry, (std::ops::Range<usize>, std::ops::Range<usize>))> {
    let entry = |status, headers| HttpEntry {
        status,
        headers,
        body: Bytes::new(),
        freshness: head.freshness,
        vary: head.vary.clone(),
        on_disk: None,
    };
    range::part_alone(&head.headers, len)?;
    if let Some(headers) =
        range::refreshes_complete(&head.headers, before.status, &before.headers, on_disk.len)
    {
        return Some((entry(StatusCode::OK, headers), (0..0, 0..0)));
    }
    let ext = range::extend_part(
        &head.headers,
        len,
        before.status,
        &before.headers,
        on_disk.len,
    )?;
    // The union is a stored body like any other: within the largest stored.
    let union = on_disk.len + (ext.before.len() + ext.after.len()) as u64;
    if union > limit as u64 {
        return None;
    }
    Some((entry(ext.status, ext.headers), (ext.before, ext.after)))
}

/// Stores `head` with the stored body the disk tier holds (`on_disk`, kept where it is by
/// the disk tier's writer: readers follow it), `before` in front of it (from memory),
/// and the new bytes `around` it (`around_len` of them).
pub(super) fn extend_stored(
    commit: Commit,
    head: HttpEntry,
    on_disk: &DiskBody,
    before: Bytes,
    around: Around,
    around_len: u64,
) {
    let total = on_disk.len + before.len() as u64 + around_len;
    let (Some(mut bytes), Some(tail)) = (
        entry::encode_head(&head, total, before.len()),
        on_disk.record.tail(on_disk.offset, on_disk.len),
    ) else {
        return;
    };
    bytes.extend_from_slice(&before);
    let bytes = bytes.freeze();
    commit.run(move |c: &Commit| {
        c.store
            .store_spliced(
                &c.key,
                bytes,
                tail,
                around,
                c.ttl,
                c.meta.clone(),
                c.ticket.clone(),
            )
            .map(|()| None)
    });
}

/// What a write did: queued (and, for a write the disk tier alone takes, what resolves
/// once it is applied), or refused.
type Written = Result<Option<crate::cache::Spooled>, crate::InsertError>;

/// The write of a response under its key (and its URL's index), with what decides it.
pub(super) struct Commit {
    pub(super) store: Cache,
    pub(super) primary: String,
    pub(super) key: String,
    pub(super) index: Option<IndexUpdate>,
    pub(super) ticket: Ticket,
    pub(super) ttl: std::time::Duration,
    pub(super) meta: EntryMeta,
    /// When the response was asked for (see `DiskTier::next_order`).
    pub(super) order: u64,
    /// The epoch of the URL's index this write replaces (its variants go).
    pub(super) replaces_index: Option<u64>,
    /// Held until the write: requests waiting for this URL wake when it drops.
    pub(super) _leader: Option<LeaderGuard>,
}

impl Commit {
    /// Writes now. A write the disk tier alone takes keeps the requests waiting for the
    /// URL waiting until it is applied: they find it on disk, rather than all going to
    /// the origin while it is queued.
    pub(super) fn run(mut self, write: impl FnOnce(&Commit) -> Written) {
        let index = self.index.take();
        let mut committed = None;
        // The variants of the index this write replaces, read before it does.
        let orphans = self
            .replaces_index
            .map(|epoch| super::listed_variants(&self.store, &self.primary, epoch));
        let store_entry = || match write(&self) {
            Ok(c) => {
                if let Some(orphans) = orphans {
                    super::drop_variants(&self.store, orphans);
                }
                committed = c;
            }
            Err(e) => tracing::debug!(error = %e, key = self.key, "response not stored"),
        };
        match index {
            Some(update) => update.apply(&self.store, &self.primary, self.ttl, store_entry),
            None => store_entry(),
        }
        if let (Some(spooled), Ok(rt)) = (committed, tokio::runtime::Handle::try_current()) {
            let leader = self._leader.take();
            rt.spawn(async move {
                let mut spooled = spooled;
                let _ = (&mut spooled.committed).await;
                // The write ends, then the waiters look again.
                drop(spooled);
                drop(leader);
            });
        }
    }

    /// Writes once no body streams from the large record the key holds, nor from the one
    /// its URL's key holds when the write puts an index of variants there (or after
    /// `wait`): a download in progress is not cut by the response that replaces it. A
    /// write of the key meanwhile (a purge) voids this one, and so does a newer response
    /// for the key (only the newest waits). Requests waiting for the URL do not wait for
    /// this: they look again at once.
    pub(super) fn when_unread(
        mut self,
        wait: std::time::Duration,
        write: impl FnOnce(&Commit) -> Written + Send + 'static,
    ) {
        let (Some(disk), Ok(rt)) = (
            self.store.disk().cloned(),
            tokio::runtime::Handle::try_current(),
        ) else {
            return self.run(write);
        };
        // The newest response of the key (by when it was asked for) supersedes the ones
        // still waiting; an older one than a response waiting is not needed.
        let mine = self.order;
        if !disk.defer(&self.key, mine) {
            return;
        }
        let primary =
            (self.index.is_some() && self.primary != self.key).then(|| self.primary.clone());
        let read = disk.is_read(&self.key) || primary.as_deref().is_some_and(|p| disk.is_read(p));
        if !read {
            disk.undefer(&self.key, mine);
            return self.run(write);
        }
        drop(self._leader.take());
        rt.spawn(async move {
            let key = self.key.clone();
            let _ = tokio::time::timeout(wait, async {
                let done = disk.unread(&key, &key, mine).await;
                if let (Unread::Done, Some(p)) = (done, &primary) {
                    disk.unread(&key, p, mine).await;
                }
            })
            .await;
            // Past the wait too: a newer response of the key waits, or was written.
            let superseded = disk.superseded(&key, mine);
            disk.undefer(&key, mine);
            if !superseded {
                self.run(write);
            }
        });
    }
}
