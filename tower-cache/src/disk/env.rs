//! The LMDB environment: checking its file, opening it and its databases.

use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use heed::types::Bytes as Raw;
use heed::{Database, Env, EnvOpenOptions};

use super::record::u64_at;

#[derive(Debug, Clone, Copy)]
pub(super) struct Dbs {
    pub(super) entries: Database<Raw, Raw>,
    pub(super) expiry: Database<Raw, Raw>,
    pub(super) order: Database<Raw, Raw>,
    pub(super) meta: Database<Raw, Raw>,
    /// Dependency edges, `on \0 dependent` -> empty: they persist with the entries.
    pub(super) deps: Database<Raw, Raw>,
    /// Tombstones of invalidations, `kind \0 target` -> version, until (Unix ms), each u64.
    pub(super) tombs: Database<Raw, Raw>,
}

#[derive(Debug)]
pub(super) struct Opened {
    pub(super) env: Env,
    pub(super) dbs: Dbs,
}

/// Why an environment did not open.
#[derive(Debug)]
pub(super) enum OpenError {
    /// The data file is damaged (truncated, not an LMDB file, inconsistent meta pages).
    Damaged(String),
    Lmdb(heed::Error),
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpenError::Damaged(why) => write!(f, "damaged data file: {why}"),
            OpenError::Lmdb(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for OpenError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            OpenError::Damaged(_) => None,
            OpenError::Lmdb(e) => Some(e),
        }
    }
}

impl From<heed::Error> for OpenError {
    fn from(e: heed::Error) -> Self {
        match e {
            // LMDB's own words for a file it cannot read.
            heed::Error::Mdb(
                heed::MdbError::Invalid
                | heed::MdbError::Corrupted
                | heed::MdbError::VersionMismatch
                | heed::MdbError::PageNotFound
                | heed::MdbError::Incompatible,
            ) => OpenError::Damaged(e.to_string()),
            e => OpenError::Lmdb(e),
        }
    }
}

const MDB_MAGIC: u32 = 0xBEEF_C0DE;
/// The page header before the meta record (64-bit builds).
const PAGE_HEADER: usize = 16;
/// Bytes of the meta record read: up to and including `mm_txnid`.
const META_LEN: usize = 136;

/// One meta page of an LMDB data file (64-bit layout).
#[derive(Debug, Clone, Copy)]
struct Meta {
    page_size: u64,
    free_root: u64,
    main_root: u64,
    last_page: u64,
    txnid: u64,
}

fn parse_meta(page: &[u8]) -> Result<Meta, String> {
    let m = page
        .get(PAGE_HEADER..PAGE_HEADER + META_LEN)
        .ok_or("meta page cut short")?;
    let u32_at = |at: usize| u32::from_le_bytes([m[at], m[at + 1], m[at + 2], m[at + 3]]);
    if u32_at(0) != MDB_MAGIC {
        return Err("no LMDB magic number in the meta page".into());
    }
    let version = u32_at(4);
    if version != 1 && version != 999 {
        return Err(format!("unknown LMDB data format version {version}"));
    }
    Ok(Meta {
        page_size: u64::from(u32_at(24)),
        free_root: u64_at(m, 64),
        main_root: u64_at(m, 112),
        last_page: u64_at(m, 120),
        txnid: u64_at(m, 128),
    })
}

/// Checks, before LMDB maps it, that `data.mdb` holds every page its meta page names.
///
/// LMDB trusts its file: a file cut short (a full disk, a bad copy, a crash of the file
/// system) opens fine, and the first read of a page past the end kills the process with
/// SIGBUS. This reads the two meta pages, takes the one LMDB would (the valid one with the
/// larger transaction id), and checks the page size, that the file reaches its last page,
/// and that both tree roots lie within it. A missing or empty file is a new environment.
pub(super) fn check_data_file(dir: &Path) -> Result<(), String> {
    let data = dir.join("data.mdb");
    let mut file = match fs::File::open(&data) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("cannot read `{}`: {e}", data.display())),
    };
    let len = file
        .metadata()
        .map_err(|e| format!("cannot stat `{}`: {e}", data.display()))?
        .len();
    if len == 0 {
        return Ok(());
    }
    let mut first = vec![0; PAGE_HEADER + META_LEN];
    file.read_exact(&mut first)
        .map_err(|_| format!("{len} bytes, shorter than one meta page"))?;
    let meta0 = parse_meta(&first);
    let page_size = match &meta0 {
        Ok(m) => m.page_size,
        Err(why) => return Err(format!("first meta page: {why}")),
    };
    if !(512..=65_536).contains(&page_size) || !page_size.is_power_of_two() {
        return Err(format!("page size {page_size} in the meta page"));
    }
    if len < 2 * page_size {
        return Err(format!(
            "{len} bytes, shorter than its two meta pages of {page_size}"
        ));
    }
    let mut second = vec![0; PAGE_HEADER + META_LEN];
    file.seek(SeekFrom::Start(page_size))
        .and_then(|_| file.read_exact(&mut second))
        .map_err(|e| format!("cannot read the second meta page: {e}"))?;
    let meta1 = parse_meta(&second);
    let meta = match (meta0, meta1) {
        (Ok(a), Ok(b)) => {
            if a.txnid >= b.txnid {
                a
            } else {
                b
            }
        }
        (Ok(m), Err(_)) | (Err(_), Ok(m)) => m,
        (Err(why), Err(_)) => return Err(format!("both meta pages invalid: {why}")),
    };
    let needed = meta
        .last_page
        .checked_add(1)
        .and_then(|pages| pages.checked_mul(page_size))
        .ok_or_else(|| format!("last page number {} out of range", meta.last_page))?;
    if len < needed {
        return Err(format!(
            "{len} bytes, but its meta page names pages up to byte {needed} (truncated)"
        ));
    }
    const NO_PAGE: u64 = u64::MAX;
    for (name, root) in [("free-page", meta.free_root), ("main", meta.main_root)] {
        if root != NO_PAGE && root > meta.last_page {
            return Err(format!(
                "{name} tree root {root} lies past the last page {}",
                meta.last_page
            ));
        }
    }
    Ok(())
}

/// Moves a damaged `data.mdb` aside as `data.mdb.damaged-<unix seconds>-<pid>`; returns
/// the new path. The lock file stays: LMDB resets it when the first process opens.
pub(super) fn move_aside(dir: &Path) -> std::io::Result<PathBuf> {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let to = dir.join(format!("data.mdb.damaged-{secs}-{}", std::process::id()));
    fs::rename(dir.join("data.mdb"), &to)?;
    Ok(to)
}

/// Checks the data file, then opens the environment and the tier's databases.
#[allow(unsafe_code)]
pub(super) fn open_env(path: &Path, map_size: usize) -> Result<Opened, OpenError> {
    check_data_file(path).map_err(OpenError::Damaged)?;
    let mut options = EnvOpenOptions::new();
    options.map_size(map_size).max_dbs(6).max_readers(512);
    // SAFETY: the directory is this tier's own; the file is only ever changed through
    // LMDB (by this process or others that open it the same way), never truncated or
    // rewritten behind LMDB's back. `compact` swaps the file only after this process
    // has closed its environment, and is documented as needing exclusive use. Damage
    // done before the open (a truncated file) is caught by `check_data_file` above.
    let env = unsafe { options.open(path)? };
    // Readers left behind by a killed process would pin old pages forever.
    let _ = env.clear_stale_readers();
    let mut wtxn = env.write_txn()?;
    let dbs = Dbs {
        entries: env.create_database(&mut wtxn, Some("entries"))?,
        expiry: env.create_database(&mut wtxn, Some("expiry"))?,
        order: env.create_database(&mut wtxn, Some("order"))?,
        meta: env.create_database(&mut wtxn, Some("meta"))?,
        deps: env.create_database(&mut wtxn, Some("deps"))?,
        tombs: env.create_database(&mut wtxn, Some("tombs"))?,
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
