//! Spool files: a large value written to a file in the disk tier's directory while it
//! arrives (a response body streaming from an origin), then put into the store by the
//! writer thread, so that no caller holds the whole value in memory while it arrives.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::stats::bump;
use super::{DiskTier, Shared};

/// The folder of spool files, in the disk tier's directory. Emptied when the tier opens:
/// what a process left there when it stopped is never read.
pub(super) const SPOOL_DIR: &str = "spool";

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
        let path = std::mem::take(&mut self.path);
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn_blocking(move || {
                    let _ = std::fs::remove_file(path);
                });
            }
            Err(_) => {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

impl DiskTier {
    /// Creates a new spool file, empty, for a value that will be stored with
    /// [`Self::queue_spooled`]. Blocking (one file creation): call it on the blocking pool.
    pub(crate) fn spool_file(&self) -> std::io::Result<(std::fs::File, SpoolFile)> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let dir = self.shared.path.join(SPOOL_DIR);
        std::fs::create_dir_all(&dir)?;
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = dir.join(format!("{}-{n}", std::process::id()));
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

    /// The largest value the disk tier takes.
    pub(crate) fn max_value_bytes(&self) -> usize {
        self.shared.max_value_bytes
    }
}

/// Removes the spool files a process left behind (it stopped while values arrived).
pub(super) fn clear_spool(dir: &std::path::Path) {
    let spool = dir.join(SPOOL_DIR);
    if let Ok(entries) = std::fs::read_dir(&spool) {
        for entry in entries.flatten() {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}
