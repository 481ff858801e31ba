//! The LMDB environment: opening it and its databases.

use std::path::Path;

use heed::types::Bytes as Raw;
use heed::{Database, Env, EnvOpenOptions};

use super::record::u64_at;

#[derive(Debug, Clone, Copy)]
pub(super) struct Dbs {
    pub(super) entries: Database<Raw, Raw>,
    pub(super) expiry: Database<Raw, Raw>,
    pub(super) order: Database<Raw, Raw>,
    pub(super) meta: Database<Raw, Raw>,
}

#[derive(Debug)]
pub(super) struct Opened {
    pub(super) env: Env,
    pub(super) dbs: Dbs,
}

#[allow(unsafe_code)]
pub(super) fn open_env(path: &Path, map_size: usize) -> heed::Result<Opened> {
    let mut options = EnvOpenOptions::new();
    options.map_size(map_size).max_dbs(4).max_readers(512);
    // SAFETY: the directory is this tier's own; the file is only ever changed through
    // LMDB (by this process or others that open it the same way), never truncated or
    // rewritten behind LMDB's back. `compact` swaps the file only after this process
    // has closed its environment, and is documented as needing exclusive use.
    let env = unsafe { options.open(path)? };
    // Readers left behind by a killed process would pin old pages forever.
    let _ = env.clear_stale_readers();
    let mut wtxn = env.write_txn()?;
    let dbs = Dbs {
        entries: env.create_database(&mut wtxn, Some("entries"))?,
        expiry: env.create_database(&mut wtxn, Some("expiry"))?,
        order: env.create_database(&mut wtxn, Some("order"))?,
        meta: env.create_database(&mut wtxn, Some("meta"))?,
    };
    wtxn.commit()?;
    Ok(Opened { env, dbs })
}

pub(super) const META_SEQ: &[u8] = b"seq";
pub(super) const META_STORED: &[u8] = b"stored";
pub(super) const META_LOGICAL: &[u8] = b"logical";

pub(super) fn read_meta(dbs: &Dbs, txn: &heed::RoTxn<'_>, key: &[u8]) -> u64 {
    match dbs.meta.get(txn, key) {
        Ok(Some(b)) if b.len() == 8 => u64_at(b, 0),
        _ => 0,
    }
}

/// Bytes of the pages the tier's databases hold now (free pages not counted).
pub(super) fn live_bytes(dbs: &Dbs, txn: &heed::RoTxn<'_>) -> heed::Result<u64> {
    let mut bytes = 0;
    for db in [dbs.entries, dbs.expiry, dbs.order, dbs.meta] {
        let s = db.stat(txn)?;
        let pages = s.branch_pages + s.leaf_pages + s.overflow_pages;
        bytes += pages as u64 * u64::from(s.page_size);
    }
    Ok(bytes)
}

pub(super) fn is_map_full(e: &heed::Error) -> bool {
    matches!(e, heed::Error::Mdb(heed::MdbError::MapFull))
}
