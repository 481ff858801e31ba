//! Spool files: a large value written to a file in the disk tier's directory while it
//! arrives (a response body streaming from an origin), then put into the store by the
//! writer thread, so that no caller holds the whole value in memory while it arrives.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use super::DiskTier;

/// The folder of spool files, in the disk tier's directory. Emptied when the tier opens:
/// what a process left there when it stopped is never read.
pub(super) const SPOOL_DIR: &str = "spool";

/// A spool file: removed when this is dropped (stored, abandoned, or the process moved
/// on), so none outlives its use but by a crash, and the next open clears those.
#[derive(Debug)]
pub(crate) struct SpoolFile {
    path: PathBuf,
}

impl SpoolFile {
    pub(super) fn path(&self) -> &std::path::Path {
        &self.path
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
        Ok((file, SpoolFile { path }))
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
