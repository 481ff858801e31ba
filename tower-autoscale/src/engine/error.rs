//! [`EngineError`]: why an evaluation could not run.

use std::fmt;

use crate::policy::PolicyError;

/// Why an evaluation could not run.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EngineError {
    /// No service by that name.
    UnknownService(String),
    /// The policy is invalid.
    Policy(PolicyError),
}

impl fmt::Display for EngineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownService(n) => write!(f, "no service named `{n}` in the engine"),
            Self::Policy(e) => write!(f, "invalid policy: {e}"),
        }
    }
}

impl std::error::Error for EngineError {}
