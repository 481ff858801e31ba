//! A manual scale's hold: for a while after an operator scales a service by hand, the
//! engine does not undo it (step 7 of an evaluation, before the bounds).

use serde::Serialize;
use std::fmt;

/// Which side of a manual count a [`ManualHold`] keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub enum Keep {
    /// No fewer instances (after a manual scale-up): the autoscaler may still add more.
    #[serde(rename = "at least")]
    AtLeast,
    /// No more instances (after a manual scale-down): the autoscaler may still remove
    /// more, and a surge at the panic threshold still scales up.
    #[serde(rename = "at most")]
    AtMost,
}

impl fmt::Display for Keep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::AtLeast => "at least",
            Self::AtMost => "at most",
        })
    }
}

/// A hold set by [`DecisionEngine::hold`](super::DecisionEngine::hold): until
/// `until_unix_ms`, the engine's decisions keep `keep` `instances`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct ManualHold {
    /// The count held.
    pub instances: usize,
    /// Which side of it.
    pub keep: Keep,
    /// When the hold ends, in milliseconds since the Unix epoch; from then on the
    /// autoscaler may revise the count.
    pub until_unix_ms: u64,
}
