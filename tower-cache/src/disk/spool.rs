//! Spool files: a large value written to a file in the disk tier's directory while it
//! arrives (a response body streaming from an origin), then put into the store by the
//! writer thread, so that no caller holds the whole value in memory while it arrives.

use std::path::PathBuf;

use bytes::Bytes;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::stats::bump;
use super::{DiskTier, Shared};

/// The folder of spool files, in the disk tier's directory: one folder in it per open
/// tier, locked while the tier is open (several processes may share the directory).
/// What a process left there when it stopped is never read: a tier that opens removes
/// the folders no open tier holds.
pub(super) const SPOOL_DIR: &str = "spool";

/// This tier's folder of spool files, and the lock that marks it in use.
#[derive(Debug)]
pub(super) struct SpoolDir {
    dir: PathBuf,
    /// The locked file that marks the folder in use (made again with the folder, should
    /// something remove it).
    lock: std::sync::Mutex<std::fs::File>,
}

impl SpoolDir {
    /// Makes this tier's spool folder, after removing those of tiers no longer open.
    /// `None` if it cannot be made (then nothing is spooled; a response too large for
    /// the memory tier streams on and is not stored).
    pub(super) fn open(tier_dir: &std::path::Path) -> Option<SpoolDir> {
        let root = tier_dir.join(SPOOL_DIR);
        clear_abandoned(&root);
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = root.join(format!("{}-{stamp}-{n}", std::process::id()));
        match make(&dir) {
            Ok(lock) => Some(SpoolDir {
                dir,
                lock: std::sync::Mutex::new(lock),
            }),
            Err(e) => {
                tracing::warn!(error = %e, dir = %dir.display(), "disk tier: no spool folder; large responses are kept in memory while they arrive");
                None
            }
        }
    }

    /// The folder, made again (and locked) if something removed it.
    fn ensure(&self) -> std::io::Result<&std::path::Path> {
        let mut lock = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        if !self.dir.join(LOCK).exists() {
            *lock = make(&self.dir)?;
        }
        Ok(&self.dir)
    }
}

/// Makes a spool folder and its lock file, locked.
fn make(dir: &std::path::Path) -> std::io::Result<std::fs::File> {
    std::fs::create_dir_all(dir)?;
    let lock = std::fs::File::create(dir.join(LOCK))?;
    lock.try_lock().map_err(std::io::Error::other)?;
    Ok(lock)
}

impl Drop for SpoolDir {
    fn drop(&mut self) {
        // The tier is gone: so is every file it spooled.
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

const LOCK: &str = "lock";

/// Removes the spool folders under `root` whose lock no open tier holds.
fn clear_abandoned(root: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if !path.is_dir() {
            let _ = std::fs::remove_file(&path);
            continue;
        }
        // A folder without its lock file may be one a tier is making right now: it is
        // left alone for a minute.
        let free = match std::fs::OpenOptions::new()
            .write(true)
            .open(path.join(LOCK))
        {
            Ok(f) => f.try_lock().is_ok(),
            Err(_) => std::fs::metadata(&path)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > std::time::Duration::from_secs(60)),
        };
        if free {
            let _ = std::fs::remove_dir_all(&path);
        }
    }
}

/// A spool file: removed when this is dropped (stored, abandoned, or the process moved
/// on), so none outlives its use but by a crash, and the next open clears those.
#[derive(Debug)]
pub(crate) struct SpoolFile {
    path: PathBuf,
    /// The bytes it holds, counted in the tier's spooled bytes until it goes.
    hold: Option<SpoolHold>,
}

impl SpoolFile {
    pub(super) fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// Bytes `range` of the file. Blocking: call it on the blocking pool.
    pub(crate) fn read(&self, range: std::ops::Range<usize>) -> std::io::Result<Bytes> {
        use std::io::{Read, Seek};
        if range.is_empty() {
            return Ok(Bytes::new());
        }
        let mut file = std::fs::File::open(&self.path)?;
        file.seek(std::io::SeekFrom::Start(range.start as u64))?;
        let mut out = vec![0; range.len()];
        file.read_exact(&mut out)?;
        Ok(out.into())
    }

    /// Counts `hold` (the bytes written to the file) until the file goes.
    pub(crate) fn keep(&mut self, hold: SpoolHold) {
        self.hold = Some(hold);
    }
}

/// Bytes of a spool file counted in [`DiskStats::spooled_bytes`](super::DiskStats),
/// which the tier's byte bound caps; released when dropped.
#[derive(Debug)]
pub(crate) struct SpoolHold {
    shared: Arc<Shared>,
    bytes: u64,
}

impl SpoolHold {
    /// Counts `n` more bytes, if the spooled bytes stay within the tier's byte bound.
    pub(crate) fn grow(&mut self, n: u64) -> bool {
        let c = &self.shared.counters;
        let bound = c.bound_bytes.load(Ordering::Relaxed);
        let grown = c
            .spooled_bytes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |now| {
                now.checked_add(n).filter(|&after| after <= bound)
            });
        if grown.is_ok() {
            self.bytes += n;
        }
        grown.is_ok()
    }
}

impl Drop for SpoolHold {
    fn drop(&mut self) {
        let c = &self.shared.counters;
        c.spooled_bytes.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

impl Drop for SpoolFile {
    fn drop(&mut self) {
        // At once, on the dropping thread (one unlink): a removal handed to the blocking
        // pool would be lost with a runtime that is shutting down.
        let _ = std::fs::remove_file(&self.path);
    }
}

impl DiskTier {
    /// Creates a new spool file, empty, for a value that will be stored with
    /// [`Self::queue_spooled`]. Blocking (one file creation): call it on the blocking pool.
    pub(crate) fn spool_file(&self) -> std::io::Result<(std::fs::File, SpoolFile)> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let Some(spool) = &self.shared.spool else {
            return Err(std::io::Error::other("the disk tier has no spool folder"));
        };
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = spool.ensure()?.join(format!("{n}.part"));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)?;
        Ok((file, SpoolFile { path, hold: None }))
    }

    /// A count of spooled bytes, empty, to grow as a value is spooled.
    pub(crate) fn spool_hold(&self) -> SpoolHold {
        SpoolHold {
            shared: self.shared.clone(),
            bytes: 0,
        }
    }

    /// Counts a spooled value given up (see [`DiskStats::spool_faults`](super::DiskStats)).
    pub(crate) fn count_spool_fault(&self) {
        bump(&self.shared.counters.spool_faults, 1);
    }

    /// Whether large values can be spooled (the tier has its spool folder).
    pub(crate) fn can_spool(&self) -> bool {
        self.shared.spool.is_some()
    }

    /// The largest value the disk tier takes.
    pub(crate) fn max_value_bytes(&self) -> usize {
        self.shared.max_value_bytes
    }
}
