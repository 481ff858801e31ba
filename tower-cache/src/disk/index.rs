//! Entries and their index rows (expiry, write order), and the running totals.

use heed::types::Bytes as Raw;
use heed::{Database, PutFlags, RwTxn};

use super::env::{read_meta, Dbs, META_LOGICAL, META_SEQ, META_STORED};
use super::record::{decode_header, expiry_key};

/// Running totals kept inside the write transaction.
pub(super) struct Totals {
    pub(super) seq: u64,
    pub(super) stored: u64,
    pub(super) logical: u64,
}

impl Totals {
    pub(super) fn read(dbs: &Dbs, txn: &heed::RoTxn<'_>) -> Self {
        Self {
            seq: read_meta(dbs, txn, META_SEQ),
            stored: read_meta(dbs, txn, META_STORED),
            logical: read_meta(dbs, txn, META_LOGICAL),
        }
    }

    pub(super) fn write(&self, dbs: &Dbs, wtxn: &mut RwTxn<'_>) -> heed::Result<()> {
        dbs.meta.put(wtxn, META_SEQ, &self.seq.to_le_bytes())?;
        dbs.meta
            .put(wtxn, META_STORED, &self.stored.to_le_bytes())?;
        dbs.meta
            .put(wtxn, META_LOGICAL, &self.logical.to_le_bytes())
    }
}

/// Puts a row that usually sorts after every existing one (an append, which skips the
/// B-tree search), falling back to an ordinary put when it does not.
pub(super) fn put_sorted(
    db: Database<Raw, Raw>,
    wtxn: &mut RwTxn<'_>,
    key: &[u8],
    value: &[u8],
) -> heed::Result<()> {
    match db.put_with_flags(wtxn, PutFlags::APPEND, key, value) {
        Err(heed::Error::Mdb(heed::MdbError::KeyExist)) => db.put(wtxn, key, value),
        other => other,
    }
}

/// Deletes an entry and its index rows; returns whether it existed.
pub(super) fn remove_entry(
    dbs: &Dbs,
    wtxn: &mut RwTxn<'_>,
    key: &[u8],
    t: &mut Totals,
) -> heed::Result<bool> {
    let Some(old) = dbs.entries.get(wtxn, key)? else {
        return Ok(false);
    };
    let len = old.len() as u64;
    if let Some(h) = decode_header(old) {
        dbs.expiry.delete(wtxn, &expiry_key(h.expires_ms, key))?;
        dbs.order.delete(wtxn, &h.seq.to_be_bytes())?;
        t.logical = t.logical.saturating_sub(h.logical);
    }
    dbs.entries.delete(wtxn, key)?;
    t.stored = t.stored.saturating_sub(len);
    Ok(true)
}

/// Deletes entries whose deadline is at or before `now_ms`, walking the expiry index.
pub(super) fn remove_expired(
    dbs: &Dbs,
    wtxn: &mut RwTxn<'_>,
    now_ms: u64,
    t: &mut Totals,
    limit: usize,
) -> heed::Result<usize> {
    let mut due = Vec::new();
    for row in dbs.expiry.iter(wtxn)? {
        let (k, _) = row?;
        if k.len() < 8 || u64::from_be_bytes(k[..8].try_into().unwrap_or([0xff; 8])) > now_ms {
            break;
        }
        due.push(k.to_vec());
        if due.len() >= limit {
            break;
        }
    }
    let mut removed = 0;
    for k in due {
        let key = &k[8..];
        if remove_entry(dbs, wtxn, key, t)? {
            removed += 1;
        } else {
            dbs.expiry.delete(wtxn, &k)?;
        }
    }
    Ok(removed)
}
