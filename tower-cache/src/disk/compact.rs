//! Compaction: LMDB's compacting copy, then a swap.

use std::fs;
use std::path::Path;

use heed::CompactionOption;

use super::env::open_env;
use super::stats::{bump, CompactReport};
use super::writer::Writer;
use crate::error::DiskError;

impl Writer {
    pub(super) fn compact(&self) -> Result<CompactReport, DiskError> {
        let path = &self.shared.path;
        let data = path.join("data.mdb");
        let tmp = path.join("data.mdb.compact");
        let size = |p: &Path| fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        let before_bytes = size(&data);
        let _ = fs::remove_file(&tmp);
        let fail = |e: DiskError| {
            bump(&self.shared.counters.errors, 1);
            e
        };
        {
            let state = self.shared.state();
            let o = state.as_ref().ok_or_else(|| fail(DiskError::closed()))?;
            o.env
                .copy_to_path(&tmp, CompactionOption::Enabled)
                .map_err(|e| fail(DiskError::lmdb("compacting copy", e)))?;
        }
        let mut state = self.shared.state.write().unwrap_or_else(|p| p.into_inner());
        if let Some(o) = state.take() {
            o.env.prepare_for_closing().wait();
        }
        let renamed = fs::rename(&tmp, &data).map_err(|e| DiskError::io("replace", &data, e));
        // Reopen whatever is there now: the compacted file, or the old one if the rename
        // failed. Until it is open, reads miss and writes fail, counted.
        match open_env(path, self.map_size) {
            Ok(o) => *state = Some(o),
            Err(e) => return Err(fail(DiskError::reopen(e))),
        }
        renamed.map_err(fail)?;
        Ok(CompactReport {
            before_bytes,
            after_bytes: size(&data),
        })
    }
}
