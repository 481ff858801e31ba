//! [`AuditEntry`]: one entry of the manager's audit history.

use serde::Serialize;

use crate::engine::Decision;

/// One entry of the audit history.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case", tag = "entry")]
#[non_exhaustive]
pub enum AuditEntry {
    /// The engine decided (with its inputs, proposals and reasons).
    Decision(Decision),
    /// Instances were started or stopped.
    Action {
        /// Milliseconds since the Unix epoch.
        at_unix_ms: u64,
        /// The service.
        service: String,
        /// `autoscaler` or `manual`.
        by: &'static str,
        /// Instances before.
        from: usize,
        /// Instances asked for.
        to: usize,
        /// Instances after.
        now: usize,
        /// What went wrong, if anything.
        error: Option<String>,
    },
}
