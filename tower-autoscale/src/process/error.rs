//! [`ScaleError`]: why a scaling action failed.

use crate::error::BuildError;
use std::fmt;
use std::time::Duration;

/// Why a scaling action failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum ScaleError {
    /// Every port of the range is taken.
    PortsExhausted {
        /// The range.
        range: (u16, u16),
    },
    /// The command could not start.
    Spawn {
        /// The command.
        command: String,
        /// Why.
        error: std::io::Error,
    },
    /// The instance did not become ready in time (it was stopped).
    NeverReady {
        /// Its port.
        port: u16,
        /// How long it was given.
        waited: Duration,
    },
    /// The instance exited before it became ready.
    Exited {
        /// Its port.
        port: u16,
        /// Its exit status.
        status: String,
    },
    /// The scaler's settings cannot work.
    Config(String),
}

impl fmt::Display for ScaleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::PortsExhausted { range } => write!(
                f,
                "no free port left in {}..={}; widen the port range or lower max_instances",
                range.0, range.1
            ),
            Self::Spawn { command, error } => write!(f, "cannot start `{command}`: {error}"),
            Self::NeverReady { port, waited } => write!(
                f,
                "the instance on port {port} was not ready after {:.1} s; it was stopped",
                waited.as_secs_f64()
            ),
            Self::Exited { port, status } => {
                write!(
                    f,
                    "the instance on port {port} exited before it was ready ({status})"
                )
            }
            Self::Config(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for ScaleError {}

/// A setting that cannot work, as [`ScaleError::Config`] (for
/// [`ProcessScaler::new`](super::ProcessScaler::new), which predates [`BuildError`]).
impl From<BuildError> for ScaleError {
    fn from(e: BuildError) -> Self {
        Self::Config(e.to_string())
    }
}
