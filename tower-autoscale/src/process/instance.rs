//! Where each instance stands: [`InstanceState`], [`InstanceDetails`] for status pages,
//! and the scaler's own record of an instance.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Serialize;

/// Where an instance stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum InstanceState {
    /// Started, not ready yet.
    Starting,
    /// Ready and in the balancer.
    Ready,
    /// Out of the balancer, finishing its requests.
    Draining,
    /// Exited unasked; waiting to be started again.
    Crashed,
    /// Crashed (or failed to start again) more than once in a row; waiting, with a
    /// backoff that doubles up to its cap, to be started again.
    CrashLoopBackOff,
}

/// Plain English for operators: `starting`, `ready`, `draining`, `crashed`, `crash
/// loop back-off` (serialized in `snake_case`: `crash_loop_back_off`).
impl fmt::Display for InstanceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Starting => "starting",
            Self::Ready => "ready",
            Self::Draining => "draining",
            Self::Crashed => "crashed",
            Self::CrashLoopBackOff => "crash loop back-off",
        })
    }
}

impl InstanceState {
    /// A crashed instance waiting for its restart (no process runs).
    pub const fn is_crashed(self) -> bool {
        matches!(self, Self::Crashed | Self::CrashLoopBackOff)
    }
}

/// One instance, for `instance_details`.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct InstanceDetails {
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// Its process id, while it runs.
    pub pid: Option<u32>,
    /// Where it stands.
    pub state: InstanceState,
    /// Whether the health monitor calls it ready.
    pub healthy: bool,
    /// Requests in flight now.
    pub in_flight: usize,
    /// When it was started, in milliseconds since the Unix epoch.
    pub started_unix_ms: u64,
    /// Times it was restarted after a crash.
    pub restarts: u32,
    /// Crashes and failed restarts in a row, without a steady run in between.
    pub crash_streak: u32,
    /// How a crashed instance last ended (its exit status or why its restart failed).
    pub last_exit: Option<String>,
    /// While crashed: the wait before its next restart, in milliseconds.
    pub backoff_ms: Option<u64>,
}

pub(super) struct Instance {
    /// Unique among the scaler's instances (a restart gets a new one).
    pub(super) id: u64,
    pub(super) port: u16,
    pub(super) name: String,
    pub(super) pid: Option<u32>,
    pub(super) state: InstanceState,
    pub(super) in_flight: Arc<AtomicUsize>,
    pub(super) started: SystemTime,
    pub(super) restarts: u32,
    /// Crashes and failed restarts in a row.
    pub(super) streak: u32,
    /// When it became ready.
    pub(super) ready_at: Option<tokio::time::Instant>,
    /// How it last ended, once crashed.
    pub(super) last_exit: Option<String>,
    /// While crashed: the wait before its next restart.
    pub(super) backoff: Option<Duration>,
    /// Set when we asked it to stop, so its exit is not a crash.
    pub(super) stopping: Arc<AtomicBool>,
    /// Fires to kill it (SIGKILL).
    pub(super) kill: Option<tokio::sync::oneshot::Sender<()>>,
    /// Resolves when the process has exited.
    pub(super) exited: tokio::sync::watch::Receiver<bool>,
}
