//! What an evaluation gives: a [`Decision`] with its [`Action`], each metric's
//! [`Proposal`], the [`Reason`]s and the [`SampleSummary`] it read.

use std::fmt;

use serde::Serialize;

use super::Reason;
use crate::policy::Metric;

/// What to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "by")]
pub enum Action {
    /// Add this many instances.
    ScaleUp(usize),
    /// Remove this many instances.
    ScaleDown(usize),
    /// Change nothing.
    Hold,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ScaleUp(n) => write!(f, "scale up by {n}"),
            Self::ScaleDown(n) => write!(f, "scale down by {n}"),
            Self::Hold => f.write_str("hold"),
        }
    }
}

/// One metric's proposal.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Proposal {
    /// The metric.
    pub metric: Metric,
    /// Its value (an average for per-instance metrics).
    pub value: f64,
    /// Its target.
    pub target: f64,
    /// value / target.
    pub ratio: f64,
    /// The count it asks for.
    pub instances: usize,
}

/// The outcome of one evaluation.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Decision {
    /// The service.
    pub service: String,
    /// Milliseconds since the Unix epoch.
    pub at_unix_ms: u64,
    /// Instances now.
    pub current: usize,
    /// Instances wanted.
    pub desired: usize,
    /// The change.
    pub action: Action,
    /// Each metric's proposal.
    pub proposals: Vec<Proposal>,
    /// Every rule that applied (serialized each with its tag, its fields and a `text`
    /// in plain English).
    #[serde(serialize_with = "reasons_with_text")]
    pub reasons: Vec<Reason>,
    /// The sample the decision read, in short.
    pub input: SampleSummary,
}

fn reasons_with_text<S: serde::Serializer>(reasons: &[Reason], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(reasons.iter().map(ReasonWithText))
}

/// A reason as serialized in a decision: its derived form plus its words.
struct ReasonWithText<'a>(&'a Reason);

impl Serialize for ReasonWithText<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut v = serde_json::to_value(self.0).map_err(serde::ser::Error::custom)?;
        if let Some(fields) = v.as_object_mut() {
            fields.insert("text".into(), self.0.to_string().into());
        }
        v.serialize(s)
    }
}

/// The inputs of a decision, for its history.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct SampleSummary {
    /// Instances.
    pub instances: usize,
    /// Ready instances.
    pub ready: usize,
    /// Requests in flight.
    pub in_flight: Option<f64>,
    /// Requests waiting.
    pub waiting: Option<f64>,
    /// Requests per second.
    pub throughput: Option<f64>,
    /// p99 in milliseconds.
    pub p99_ms: Option<f64>,
    /// Error rate.
    pub error_rate: Option<f64>,
}
