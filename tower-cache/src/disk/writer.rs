//! The writer thread: group commit, the byte bound, a full map.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use heed::{PutFlags, RwTxn};
use tokio::sync::{mpsc, oneshot};

use super::env::{is_map_full, live_bytes, read_meta, Dbs, Opened, META_STORED};
use super::index::{put_sorted, remove_entry, remove_expired, Totals};
use super::record::{self, encode_addressable_filled, encode_record_of, expiry_key};
use super::stats::bump;
use super::{Kept, SpoolFile};
use super::{Op, Shared};
use crate::error::DiskError;

// === writer thread ===

pub(super) struct Writer {
    pub(super) shared: Arc<Shared>,
    pub(super) rx: mpsc::Receiver<Op>,
    pub(super) map_size: usize,
    pub(super) max_bytes: u64,
    pub(super) compress_threshold: usize,
    pub(super) addressable_threshold: usize,
    pub(super) max_batch: usize,
    /// Most writes per transaction now: `max_batch`, less after the map filled up.
    pub(super) txn_limit: usize,
    /// Live bytes of pages when the bound was last lowered.
    pub(super) live_at_lowering: u64,
    /// The bound the tier was built with: a lowered bound rises back towards it.
    pub(super) configured_max_bytes: u64,
    /// The bound never drops below this: one entry of the largest value with its header.
    pub(super) entry_floor: u64,
}

/// How often one batch may make room after even a single write found the map full.
pub(super) const MAP_FULL_ROOMS: usize = 3;

pub(super) enum Done {
    Put(Option<oneshot::Sender<Result<(), DiskError>>>),
    Delete(Option<oneshot::Sender<Result<bool, DiskError>>>, bool),
    Clear(oneshot::Sender<Result<(), DiskError>>),
    Cleanup(oneshot::Sender<Result<usize, DiskError>>, usize),
    Keys(
        oneshot::Sender<Result<Vec<Box<str>>, DiskError>>,
        Vec<Box<str>>,
    ),
}

/// What one op of a batch did.
pub(super) enum Outcome {
    Count(usize),
    Keys(Vec<Box<str>>),
}

impl Done {
    pub(super) fn fail(self, e: &DiskError) {
        let e = || DiskError::new(e.to_string());
        match self {
            Done::Put(Some(a)) => drop(a.send(Err(e()))),
            Done::Delete(Some(a), _) => drop(a.send(Err(e()))),
            Done::Clear(a) => drop(a.send(Err(e()))),
            Done::Cleanup(a, _) => drop(a.send(Err(e()))),
            Done::Keys(a, _) => drop(a.send(Err(e()))),
            Done::Put(None) | Done::Delete(None, _) => {}
        }
    }

    pub(super) fn succeed(self) {
        match self {
            Done::Put(Some(a)) => drop(a.send(Ok(()))),
            Done::Delete(Some(a), found) => drop(a.send(Ok(found))),
            Done::Clear(a) => drop(a.send(Ok(()))),
            Done::Cleanup(a, n) => drop(a.send(Ok(n))),
            Done::Keys(a, k) => drop(a.send(Ok(k))),
            Done::Put(None) | Done::Delete(None, _) => {}
        }
    }
}

impl Writer {
    pub(super) fn run(mut self) {
        // No up-front allocation of a huge max_batch: the batch grows with what is queued.
        let mut batch = Vec::with_capacity(self.max_batch.min(1024));
        while let Some(first) = self.rx.blocking_recv() {
            batch.push(first);
            while batch.len() < self.max_batch {
                match self.rx.try_recv() {
                    Ok(op) => batch.push(op),
                    Err(_) => break,
                }
            }
            // Compact and Close act on the whole environment: commit what came before
            // them, then run them on their own.
            let mut ops = Vec::with_capacity(batch.len());
            for op in batch.drain(..) {
                match op {
                    Op::Compact(ack) => {
                        self.commit(std::mem::take(&mut ops));
                        let _ = ack.send(self.compact());
                    }
                    Op::Close(ack) => {
                        self.commit(std::mem::take(&mut ops));
                        self.close();
                        // Refuse further writes before saying the tier is closed, so a
                        // write after `close()` returns is an error, never silently lost.
                        self.rx.close();
                        let _ = ack.send(());
                        return;
                    }
                    op => ops.push(op),
                }
            }
            self.commit(ops);
        }
        self.close();
    }

    pub(super) fn close(&self) {
        let mut state = self.shared.state.write().unwrap_or_else(|p| p.into_inner());
        if let Some(o) = state.take() {
            let _ = o.env.force_sync();
            o.env.prepare_for_closing().wait();
        }
    }

    pub(super) fn commit(&mut self, ops: Vec<Op>) {
        if ops.is_empty() {
            return;
        }
        let shared = self.shared.clone();
        let c = &shared.counters;
        let state = shared.state();
        let Some(o) = state.as_ref() else {
            let e = DiskError::closed();
            bump(&c.errors, 1);
            for op in ops {
                Self::done_of(op).fail(&e);
            }
            return;
        };
        // A full map: a transaction needs free pages for every page it touches (LMDB
        // copies on write, and a page freed by one commit is handed out again only
        // from the second commit after it), so many small records under random keys
        // can fill the map long before the byte bound. Commit in smaller pieces then,
        // and remember the size that fitted (growing it back slowly); if even a single
        // write does not fit, the data itself is too big for the map: make room and
        // lower the bound.
        let mut ops = ops;
        let mut rooms = 0;
        while !ops.is_empty() {
            let n = self.txn_limit.min(ops.len());
            // A panic while a batch is applied (a bug, or a record no check foresaw)
            // aborts its transaction and fails its writes; the writer goes on.
            let applied =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.apply(o, &ops[..n])));
            let applied = match applied {
                Ok(applied) => applied,
                Err(panic) => {
                    let why = panic
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_default();
                    bump(&c.errors, 1);
                    let e = DiskError::new(format!("disk tier: a write batch panicked: {why}"));
                    tracing::error!(error = %e, writes = n, "disk tier: writes lost");
                    for op in ops.drain(..n) {
                        Self::done_of(op).fail(&e);
                    }
                    continue;
                }
            };
            let e = match applied {
                Ok((puts, evicted, expired, results)) => {
                    bump(&c.writes, puts);
                    bump(&c.write_batches, 1);
                    bump(&c.evictions, evicted);
                    bump(&c.expirations, expired);
                    for (op, outcome) in ops.drain(..n).zip(results) {
                        let mut done = Self::done_of(op);
                        match (&mut done, outcome) {
                            (Done::Delete(_, f), Outcome::Count(found)) => *f = found > 0,
                            (Done::Cleanup(_, n), Outcome::Count(found)) => *n = found,
                            (Done::Keys(_, k), Outcome::Keys(keys)) => *k = keys,
                            _ => {}
                        }
                        done.succeed();
                    }
                    if n == self.txn_limit && n < self.max_batch {
                        self.txn_limit = (n + n / 8 + 1).min(self.max_batch);
                    }
                    continue;
                }
                Err(e) => e,
            };
            let e = if is_map_full(&e) {
                bump(&c.map_full, 1);
                if n > 1 {
                    self.txn_limit = n.div_ceil(2);
                    tracing::debug!(
                        writes = self.txn_limit,
                        "disk tier: map full; committing in smaller transactions"
                    );
                    continue;
                }
                if rooms < MAP_FULL_ROOMS {
                    rooms += 1;
                    let now_ms = ops[0].now_ms();
                    match self.make_room(o, now_ms) {
                        Ok(()) => continue,
                        Err(e) => e,
                    }
                } else {
                    e
                }
            } else {
                e
            };
            // Not to be saved by making room: these writes fail, the rest go on.
            bump(&c.errors, 1);
            let e = DiskError::lmdb("commit", e);
            tracing::error!(error = %e, writes = n, "disk tier: writes lost");
            for op in ops.drain(..n) {
                Self::done_of(op).fail(&e);
            }
        }
    }

    /// Frees a quarter of the stored bytes after the map filled up, and lowers the byte
    /// bound to what is left so that later batches evict before the map fills again.
    ///
    /// Eviction runs in transactions of its own, in steps: LMDB hands a page freed by
    /// one commit out again only from the second commit after it, and deleting needs
    /// fresh pages itself (copy on write), which a full map may have few of. A step that
    /// hits the full map again is halved.
    pub(super) fn make_room(&mut self, o: &Opened, now_ms: u64) -> heed::Result<()> {
        let (stored, live) = {
            let rtxn = o.env.read_txn()?;
            (
                read_meta(&o.dbs, &rtxn, META_STORED),
                live_bytes(&o.dbs, &rtxn)?,
            )
        };
        let target = stored / 4 * 3;
        self.lower_bound(target, live);
        let mut step = (stored - target) / 4;
        let mut txns = 0;
        loop {
            let mut wtxn = o.env.write_txn()?;
            let mut t = Totals::read(&o.dbs, &wtxn);
            // Two commits at least, so the pages the first one frees can be reused by the
            // retried batch.
            if t.stored <= target && txns >= 2 {
                return Ok(());
            }
            let goal = t
                .stored
                .saturating_sub(step.max(1))
                .max(target.min(t.stored));
            let result = (|| {
                let expired = remove_expired(&o.dbs, &mut wtxn, now_ms, &mut t, 64)?;
                let evicted = self.evict_oldest(&o.dbs, &mut wtxn, &mut t, goal)?;
                t.write(&o.dbs, &mut wtxn)?;
                Ok::<_, heed::Error>((expired, evicted))
            })();
            let result = result.and_then(|n| wtxn.commit().map(|()| n));
            match result {
                Ok((expired, evicted)) => {
                    bump(&self.shared.counters.expirations, expired as u64);
                    bump(&self.shared.counters.evictions, evicted);
                    txns += 1;
                    if expired == 0 && evicted == 0 && t.stored > target {
                        // Nothing left to evict: the retry will tell.
                        return Ok(());
                    }
                }
                Err(e) if is_map_full(&e) && step > 1 => step /= 2,
                Err(e) => return Err(e),
            }
        }
    }

    pub(super) fn done_of(op: Op) -> Done {
        match op {
            Op::Put { ack, .. } => Done::Put(ack),
            Op::Delete { ack, .. } => Done::Delete(ack, false),
            Op::Clear(ack) => Done::Clear(ack),
            Op::Cleanup { ack, .. } => Done::Cleanup(ack, 0),
            Op::RemoveMatching { ack, .. } => Done::Keys(ack, Vec::new()),
            Op::Depend { ack, .. } => Done::Clear(ack),
            Op::PruneDependents { ack, .. } => Done::Keys(ack, Vec::new()),
            Op::Compact(_) | Op::Close(_) => unreachable!("handled by the writer loop"),
        }
    }

    /// Applies a batch in one transaction; returns (puts, evicted, expired, per-op result).
    #[allow(clippy::type_complexity)]
    pub(super) fn apply(
        &mut self,
        o: &Opened,
        ops: &[Op],
    ) -> heed::Result<(u64, u64, u64, Vec<Outcome>)> {
        let dbs = &o.dbs;
        let mut wtxn = o.env.write_txn()?;
        let mut t = Totals::read(dbs, &wtxn);
        let mut now_ms = 0;
        let mut puts = 0;
        let (mut evicted, mut expired) = (0, 0);
        let mut results = Vec::with_capacity(ops.len());
        for op in ops {
            let r = match op {
                // A load's write-through that a write or delete of its key overtook
                // while it waited in the queue: the newer state stands.
                Op::Put {
                    fence: Some(fence), ..
                } if !fence.holds() => {
                    bump(&self.shared.counters.superseded, 1);
                    0
                }
                Op::Put {
                    key,
                    value,
                    expires_ms,
                    now_ms: at,
                    meta,
                    tail,
                    ..
                } => {
                    now_ms = now_ms.max(*at);
                    let seq = t.seq + 1;
                    let encode = |parts: &[&[u8]], lineage| {
                        encode_record_of(
                            parts,
                            lineage,
                            *expires_ms,
                            meta,
                            seq,
                            self.compress_threshold,
                            self.addressable_threshold,
                        )
                    };
                    let built = match tail {
                        None => Some((encode(&[value], None), value.len())),
                        // The kept bytes are copied from the record the key holds, in
                        // this transaction: a write that replaced it since wins.
                        Some(Kept::Record(tail, around)) => {
                            // The bytes that go around the kept ones (read off a spool
                            // file here, on the writer's thread).
                            let (before, after) = match around.bytes() {
                                Ok(both) => both,
                                Err(e) => {
                                    tracing::warn!(error = %e, "disk tier: spool file unreadable; not stored");
                                    bump(&self.shared.counters.spool_faults, 1);
                                    results.push(Outcome::Count(0));
                                    continue;
                                }
                            };
                            let head = value.len() + before.len();
                            let old = dbs.entries.get(&wtxn, key.as_bytes())?;
                            match old.map(|old| tail.of(old, head)) {
                                Some(record::Kept::Bytes(kept, lineage)) => Some((
                                    encode(&[value, &before, kept, &after], lineage),
                                    head + kept.len() + after.len(),
                                )),
                                Some(record::Kept::Damaged(why)) => {
                                    // What every reader of a damaged record does.
                                    bump(&self.shared.counters.corrupt, 1);
                                    tracing::warn!(key = &**key, why, "disk tier: corrupt record dropped");
                                    remove_entry(dbs, &mut wtxn, key.as_bytes(), &mut t)?;
                                    results.push(Outcome::Count(0));
                                    continue;
                                }
                                Some(record::Kept::Gone) | None => None,
                            }
                        }
                        Some(Kept::File(file, len)) => match usize::try_from(*len) {
                            // A large spooled value is read from its file straight into
                            // the record: one copy.
                            Ok(n) if n.saturating_add(value.len()) >= self.addressable_threshold => {
                                encode_addressable_filled(
                                    value,
                                    n,
                                    |out| fill_from(file, n, out),
                                    *expires_ms,
                                    meta,
                                    seq,
                                )
                                .inspect_err(|e| {
                                    tracing::warn!(error = %e, "disk tier: spool file unreadable; not stored");
                                })
                                .ok()
                                .map(|rec| (rec, value.len() + n))
                            }
                            _ => read_spool(file, *len)
                                .map(|b| (encode(&[value, &b], None), value.len() + b.len())),
                        },
                    };
                    let Some((rec, logical)) = built else {
                        // A spool file that does not hold the value is a fault; anything
                        // else, a write overtaken.
                        let spooled = matches!(tail, Some(Kept::File(..)));
                        let c = &self.shared.counters;
                        bump(
                            if spooled {
                                &c.spool_faults
                            } else {
                                &c.superseded
                            },
                            1,
                        );
                        results.push(Outcome::Count(0));
                        continue;
                    };
                    t.seq = seq;
                    // A new key (the common case) needs one B-tree descent; an existing
                    // one first drops its old record and index rows.
                    match dbs.entries.put_with_flags(
                        &mut wtxn,
                        PutFlags::NO_OVERWRITE,
                        key.as_bytes(),
                        &rec,
                    ) {
                        Err(heed::Error::Mdb(heed::MdbError::KeyExist)) => {
                            remove_entry(dbs, &mut wtxn, key.as_bytes(), &mut t)?;
                            dbs.entries.put(&mut wtxn, key.as_bytes(), &rec)?;
                        }
                        other => other?,
                    }
                    put_sorted(
                        dbs.expiry,
                        &mut wtxn,
                        &expiry_key(*expires_ms, key.as_bytes()),
                        &[],
                    )?;
                    // Sequence numbers only grow: appending skips the search.
                    put_sorted(dbs.order, &mut wtxn, &t.seq.to_be_bytes(), key.as_bytes())?;
                    t.stored += rec.len() as u64;
                    t.logical += logical as u64;
                    puts += 1;
                    1
                }
                Op::Delete { key, tombstone, .. } => {
                    if let Some(t) = tombstone {
                        put_tombstone(dbs, &mut wtxn, t)?;
                    }
                    remove_entry(dbs, &mut wtxn, key.as_bytes(), &mut t)? as usize
                }
                Op::Clear(_) => {
                    dbs.entries.clear(&mut wtxn)?;
                    dbs.expiry.clear(&mut wtxn)?;
                    dbs.order.clear(&mut wtxn)?;
                    t.stored = 0;
                    t.logical = 0;
                    1
                }
                Op::Cleanup { now_ms: at, .. } => {
                    forget_tombstones(dbs, &mut wtxn, *at)?;
                    let n = remove_expired(dbs, &mut wtxn, *at, &mut t, usize::MAX)?;
                    expired += n as u64;
                    n
                }
                Op::RemoveMatching {
                    select,
                    tombstone,
                    keep_newer_than,
                    ..
                } => {
                    if let Some(t) = tombstone {
                        put_tombstone(dbs, &mut wtxn, t)?;
                    }
                    let keys = select_keys(dbs, &wtxn, select)?;
                    let mut removed = Vec::with_capacity(keys.len());
                    for key in keys {
                        if let Some(bound) = keep_newer_than {
                            let version = dbs
                                .entries
                                .get(&wtxn, key.as_bytes())?
                                .and_then(super::record::record_version);
                            if version.is_some_and(|v| crate::version::outlives(v, *bound)) {
                                continue;
                            }
                        }
                        if remove_entry(dbs, &mut wtxn, key.as_bytes(), &mut t)? {
                            removed.push(key);
                        }
                    }
                    results.push(Outcome::Keys(removed));
                    continue;
                }
                Op::Depend {
                    on,
                    dependent,
                    scoped,
                    ..
                } => {
                    let row = super::dependency_key(on, dependent);
                    if !scoped {
                        dbs.deps.put(&mut wtxn, row.as_bytes(), &[])?;
                    } else if dbs.deps.get(&wtxn, row.as_bytes())?.is_none() {
                        dbs.deps
                            .put(&mut wtxn, row.as_bytes(), super::SCOPED_EDGE)?;
                    }
                    1
                }
                Op::PruneDependents { keys, .. } => {
                    let mut absent = std::collections::HashSet::new();
                    for key in keys {
                        if dbs.entries.get(&wtxn, key.as_bytes())?.is_none() {
                            absent.insert(&**key);
                        }
                    }
                    // One pass over the edges, whatever the number of keys.
                    let mut rows = Vec::new();
                    for row in dbs.deps.iter(&wtxn)? {
                        let (k, v) = row?;
                        if v != super::SCOPED_EDGE {
                            continue;
                        }
                        let dependent = k
                            .iter()
                            .position(|&b| b == 0)
                            .and_then(|at| std::str::from_utf8(&k[at + 1..]).ok());
                        if dependent.is_some_and(|d| absent.contains(d)) {
                            rows.push(k.to_vec());
                        }
                    }
                    for row in rows {
                        dbs.deps.delete(&mut wtxn, &row)?;
                    }
                    results.push(Outcome::Keys(absent.into_iter().map(Box::from).collect()));
                    continue;
                }
                Op::Compact(_) | Op::Close(_) => 0,
            };
            results.push(Outcome::Count(r));
        }
        // Keep LMDB room to work: a transaction copies every page it touches, and the
        // pages a commit frees come back only two commits later, so the live pages must
        // stay well under the map. Small records under random keys take far more pages
        // than their bytes; when the live pages pass three quarters of the map, lower the
        // bound (again only if they keep growing: evicting thins pages before it frees
        // them).
        let live = live_bytes(dbs, &wtxn)?;
        if live > self.map_size as u64 / 4 * 3 && live > self.live_at_lowering && t.stored > 0 {
            self.lower_bound(t.stored / 4 * 3, live);
        } else {
            self.raise_bound(live);
        }
        if t.stored > self.max_bytes {
            // Expired entries first (as of the latest write in the batch), then the
            // oldest writes.
            let n = remove_expired(dbs, &mut wtxn, now_ms, &mut t, usize::MAX)?;
            expired += n as u64;
            if t.stored > self.max_bytes {
                evicted += self.evict_oldest(dbs, &mut wtxn, &mut t, self.max_bytes)?;
            }
        }
        // At its floor the bound cannot go lower, yet small records can still take more
        // pages than the map has: then evict by pages, oldest first, keeping the newest
        // write.
        let budget = self.map_size as u64 / 4 * 3;
        if self.max_bytes <= self.entry_floor && live > budget {
            evicted += self.evict_for_pages(dbs, &mut wtxn, &mut t, budget)?;
        }
        t.write(dbs, &mut wtxn)?;
        wtxn.commit()?;
        Ok((puts, evicted, expired, results))
    }

    /// Lowers the byte bound to `bound` (the map cannot hold what the bound allowed), but
    /// never below what one entry of the largest value needs.
    pub(super) fn lower_bound(&mut self, bound: u64, live: u64) {
        self.live_at_lowering = live;
        let bound = bound.max(self.entry_floor);
        if bound >= self.max_bytes {
            return;
        }
        tracing::warn!(
            map_size = self.map_size,
            live_bytes = live,
            old_bound = self.max_bytes,
            new_bound = bound,
            "disk tier: records take more of the map than the byte bound allowed for \
             (small records cost LMDB more than their bytes); lowering the bound. \
             Raise map_size to keep more."
        );
        self.set_bound(bound);
    }

    /// Raises a lowered bound by an eighth (up to the configured one) while the live pages
    /// stay under half the map, as after eviction or compaction freed pages. Lowering
    /// starts at three quarters, so the two do not chase each other.
    fn raise_bound(&mut self, live: u64) {
        if self.max_bytes < self.configured_max_bytes && live < self.map_size as u64 / 2 {
            let raised = self
                .max_bytes
                .saturating_add(self.max_bytes / 8 + 1)
                .min(self.configured_max_bytes);
            self.live_at_lowering = live;
            self.set_bound(raised);
        }
    }

    fn set_bound(&mut self, bound: u64) {
        self.max_bytes = bound;
        self.shared
            .counters
            .bound_bytes
            .store(bound, Ordering::Relaxed);
    }

    /// Evicts the oldest entries, 64 at a time, until the live pages fit `budget` or only
    /// the newest write is left.
    fn evict_for_pages(
        &self,
        dbs: &Dbs,
        wtxn: &mut RwTxn<'_>,
        t: &mut Totals,
        budget: u64,
    ) -> heed::Result<u64> {
        let mut evicted = 0;
        while live_bytes(dbs, wtxn)? > budget {
            let mut step = 0;
            while step < 64 {
                let Some((seq, key)) = dbs.order.first(wtxn)? else {
                    return Ok(evicted);
                };
                if seq == t.seq.to_be_bytes() {
                    return Ok(evicted);
                }
                let (seq, key) = (seq.to_vec(), key.to_vec());
                if remove_entry(dbs, wtxn, &key, t)? {
                    evicted += 1;
                } else {
                    dbs.order.delete(wtxn, &seq)?;
                }
                step += 1;
            }
        }
        Ok(evicted)
    }

    pub(super) fn evict_oldest(
        &self,
        dbs: &Dbs,
        wtxn: &mut RwTxn<'_>,
        t: &mut Totals,
        target: u64,
    ) -> heed::Result<u64> {
        let mut evicted = 0;
        while t.stored > target {
            let Some((_, key)) = dbs.order.first(wtxn)? else {
                break;
            };
            let key = key.to_vec();
            if !remove_entry(dbs, wtxn, &key, t)? {
                // An order row without its entry: drop it and go on.
                if let Some((seq, _)) = dbs.order.first(wtxn)? {
                    let seq = seq.to_vec();
                    dbs.order.delete(wtxn, &seq)?;
                }
                continue;
            }
            evicted += 1;
        }
        Ok(evicted)
    }
}

/// The keys a selection reaches: a prefix range scan (then the glob) for a pattern, a scan
/// of the records' tag lists for a tag.
fn select_keys(
    dbs: &Dbs,
    txn: &heed::RoTxn<'_>,
    select: &crate::target::Select,
) -> heed::Result<Vec<Box<str>>> {
    let mut keys = Vec::new();
    match select {
        crate::target::Select::Pattern(glob) => {
            let mut take = |k: &[u8]| {
                if let Ok(k) = std::str::from_utf8(k) {
                    if glob.matches(k) {
                        keys.push(k.into());
                    }
                }
            };
            // LMDB refuses an empty key to position on: no prefix, a full scan.
            if glob.prefix().is_empty() {
                for row in dbs.entries.iter(txn)? {
                    take(row?.0);
                }
            } else {
                for row in dbs.entries.prefix_iter(txn, glob.prefix().as_bytes())? {
                    take(row?.0);
                }
            }
        }
        crate::target::Select::Tag(tag) => {
            for row in dbs.entries.iter(txn)? {
                let (k, v) = row?;
                if super::record::record_has_tag(v, tag) {
                    if let Ok(k) = std::str::from_utf8(k) {
                        keys.push(k.into());
                    }
                }
            }
        }
    }
    Ok(keys)
}

/// Records a tombstone, keeping the newer version if the target has one already.
fn put_tombstone(
    dbs: &Dbs,
    wtxn: &mut RwTxn<'_>,
    t: &crate::target::Tombstone,
) -> heed::Result<()> {
    let (mut version, mut until) = (t.version, t.until_ms);
    if let Some(old) = dbs.tombs.get(wtxn, t.row.as_bytes())? {
        if old.len() == 16 {
            version = version.max(super::record::u64_at(old, 0));
            until = until.max(super::record::u64_at(old, 8));
        }
    }
    let mut v = [0u8; 16];
    v[..8].copy_from_slice(&version.to_le_bytes());
    v[8..].copy_from_slice(&until.to_le_bytes());
    dbs.tombs.put(wtxn, t.row.as_bytes(), &v)
}

/// Forgets tombstones past their time (a small table: a full walk).
fn forget_tombstones(dbs: &Dbs, wtxn: &mut RwTxn<'_>, now_ms: u64) -> heed::Result<()> {
    if now_ms == 0 {
        return Ok(());
    }
    let mut gone = Vec::new();
    for row in dbs.tombs.iter(wtxn)? {
        let (k, v) = row?;
        if v.len() != 16 || super::record::u64_at(v, 8) <= now_ms {
            gone.push(k.to_vec());
        }
    }
    for k in gone {
        dbs.tombs.delete(wtxn, &k)?;
    }
    Ok(())
}

/// The bytes of a spool file, if it holds the `len` it should (a file cut short or
/// unreadable stores nothing).
fn read_spool(file: &SpoolFile, len: u64) -> Option<Vec<u8>> {
    match std::fs::read(file.path()) {
        Ok(bytes) if bytes.len() as u64 == len => Some(bytes),
        Ok(bytes) => {
            tracing::warn!(
                want = len,
                found = bytes.len(),
                "disk tier: spool file cut short; not stored"
            );
            None
        }
        Err(e) => {
            tracing::warn!(error = %e, "disk tier: spool file unreadable; not stored");
            None
        }
    }
}

/// Appends the `len` bytes of a spool file to `out`.
fn fill_from(file: &SpoolFile, len: usize, out: &mut Vec<u8>) -> std::io::Result<()> {
    use std::io::Read;
    let read = std::fs::File::open(file.path())?
        .take(len as u64)
        .read_to_end(out)?;
    if read != len {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!("spool file cut short: {read} of {len} bytes"),
        ));
    }
    Ok(())
}
