//! Error types.

use std::fmt;
use std::time::Duration;

/// A probe, target or layer was configured with a setting that cannot work; the message
/// names the setting and what to change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildError {
    message: String,
}

impl BuildError {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for BuildError {}

/// [`Probes::wait_for_ready`](crate::Probes::wait_for_ready) gave up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotReady {
    waited: Duration,
    failing: Vec<String>,
    draining: bool,
}

impl NotReady {
    pub(crate) fn new(waited: Duration, failing: Vec<String>, draining: bool) -> Self {
        Self {
            waited,
            failing,
            draining,
        }
    }

    /// The probes (with their last messages) that kept the service from being ready.
    pub fn failing(&self) -> &[String] {
        &self.failing
    }
}

impl fmt::Display for NotReady {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "not ready after {:?}", self.waited)?;
        if self.draining {
            f.write_str("; draining")?;
        }
        if !self.failing.is_empty() {
            write!(f, "; probes not passing: {}", self.failing.join(", "))?;
        }
        Ok(())
    }
}

impl std::error::Error for NotReady {}

/// A request was refused because the service behind the gate is not ready or is
/// draining (the reject mode of [`ReadinessLayer`](crate::ReadinessLayer) for non-HTTP
/// services). Check with `err.is::<Rejected>()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rejected {
    _priv: (),
}

impl Rejected {
    pub(crate) fn new() -> Self {
        Self { _priv: () }
    }
}

impl fmt::Display for Rejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("service not ready: request rejected")
    }
}

impl std::error::Error for Rejected {}
