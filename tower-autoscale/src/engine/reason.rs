//! [`Reason`]: why a decision is what it is, one entry per rule that applied, in
//! plain English through `Display`.

use std::fmt;

use serde::Serialize;

use super::Keep;
use crate::policy::Metric;

/// Why the answer is what it is: one entry per rule that applied.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "reason")]
#[non_exhaustive]
pub enum Reason {
    /// The sample has no value for this metric; it was left out.
    MetricMissing {
        /// The metric.
        metric: Metric,
    },
    /// The value is within the tolerance of its target.
    WithinTolerance {
        /// The metric.
        metric: Metric,
    },
    /// A scale-up-only metric below its target proposes no change.
    BelowScaleUpOnlyTarget {
        /// The metric.
        metric: Metric,
    },
    /// Instances not ready (or warming up) were left out of an average.
    InstancesIgnored {
        /// The metric.
        metric: Metric,
        /// How many.
        count: usize,
    },
    /// Ready instances gave a value that is no measurement (NaN, infinite or negative):
    /// each counts as an instance without numbers.
    UnusableValues {
        /// The metric.
        metric: Metric,
        /// How many.
        count: usize,
    },
    /// Instances without numbers (ready ones with no usable value, and those the
    /// sample does not list) were assumed at 0 (scale-up) or at the target, as the HPA
    /// does with pods without metrics.
    MissingInstancesAssumed {
        /// The metric.
        metric: Metric,
        /// How many.
        count: usize,
    },
    /// Counting unready and missing instances turned the proposal into no change.
    UnsureDirection {
        /// The metric.
        metric: Metric,
    },
    /// A value at or above `scale_down_below` holds the count.
    ScaleDownFloor {
        /// The metric.
        metric: Metric,
        /// Its value.
        value: f64,
        /// The floor.
        floor: f64,
    },
    /// No metric gave a proposal: the count stays.
    NoMetrics,
    /// Panic mode started or continues: a value at or above the threshold of its target.
    Panic {
        /// The largest ratio of value to target.
        ratio: f64,
    },
    /// Panic mode blocks a scale-down until it has been calm for its hold time.
    PanicBlocksScaleDown {
        /// Seconds left.
        seconds_left: f64,
    },
    /// The forecast raised the count.
    Forecast {
        /// The throughput predicted at the horizon.
        predicted_throughput: f64,
        /// The count it needs.
        instances: usize,
    },
    /// The down window kept a higher recent recommendation.
    StabilizedDown {
        /// The window, in seconds.
        window_seconds: f64,
        /// The recommendation now.
        recommended: usize,
        /// What the window allows.
        allowed: usize,
    },
    /// The up window kept a lower recent recommendation.
    StabilizedUp {
        /// The window, in seconds.
        window_seconds: f64,
        /// The recommendation now.
        recommended: usize,
        /// What the window allows.
        allowed: usize,
    },
    /// A rate policy limited the change.
    RateLimited {
        /// `scale_up` or `scale_down`.
        direction: &'static str,
        /// The limit.
        limit: usize,
    },
    /// The direction is disabled by its rules.
    DirectionDisabled {
        /// `scale_up` or `scale_down`.
        direction: &'static str,
    },
    /// A manual scale holds the count until its hold ends.
    ManualHold {
        /// The count held.
        instances: usize,
        /// Which side of it.
        keep: Keep,
        /// Whole seconds left.
        seconds_left: u64,
    },
    /// Raised to the minimum.
    ClampedToMin {
        /// The minimum.
        min: usize,
    },
    /// Lowered to the maximum.
    ClampedToMax {
        /// The maximum.
        max: usize,
    },
    /// Dry run: decided, not acted on.
    DryRun,
}

/// `scale_up` / `scale_down` (the rules' names in a policy) as words.
fn direction_words(direction: &str) -> &str {
    match direction {
        "scale_up" => "scaling up",
        "scale_down" => "scaling down",
        other => other,
    }
}

/// Plain English for operators (logs, status pages, the fleet's views); the serialized
/// form keeps the variant's `snake_case` tag and its fields.
impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MetricMissing { metric } => {
                write!(f, "{metric}: no usable value in the sample, left out")
            }
            Self::WithinTolerance { metric } => write!(f, "{metric} within tolerance of its target"),
            Self::BelowScaleUpOnlyTarget { metric } => {
                write!(f, "{metric} below its target (it only ever asks for more)")
            }
            Self::InstancesIgnored { metric, count } => write!(
                f,
                "{metric}: {count} instance(s) not ready or warming up left out of the average"
            ),
            Self::UnusableValues { metric, count } => write!(
                f,
                "{metric}: {count} value(s) not a measurement (not a number, infinite or negative), counted as missing"
            ),
            Self::MissingInstancesAssumed { metric, count } => write!(
                f,
                "{metric}: {count} instance(s) without figures assumed idle when scaling up, at the target when scaling down"
            ),
            Self::UnsureDirection { metric } => write!(
                f,
                "{metric}: no clear direction once unready and missing instances count; no change"
            ),
            Self::ScaleDownFloor {
                metric,
                value,
                floor,
            } => write!(
                f,
                "{metric} at {value:.2} is not below its scale-down floor of {floor}: no scale-down"
            ),
            Self::NoMetrics => f.write_str("no metric gave a proposal; the count stays"),
            Self::Panic { ratio } => write!(f, "panic: load at {ratio:.1} times its target"),
            Self::PanicBlocksScaleDown { seconds_left } => write!(
                f,
                "panic mode blocks scaling down for {seconds_left:.0} s more"
            ),
            Self::Forecast {
                predicted_throughput,
                instances,
            } => write!(
                f,
                "forecast: {predicted_throughput:.1} requests/s ahead need {instances} instances"
            ),
            Self::StabilizedDown {
                window_seconds,
                recommended,
                allowed,
            } => write!(
                f,
                "scale-down window of {window_seconds:.0} s keeps {allowed} instances (recommended {recommended})"
            ),
            Self::StabilizedUp {
                window_seconds,
                recommended,
                allowed,
            } => write!(
                f,
                "scale-up window of {window_seconds:.0} s allows {allowed} instances (recommended {recommended})"
            ),
            Self::RateLimited { direction, limit } => write!(
                f,
                "rate limit for {}: {limit} instances for now",
                direction_words(direction)
            ),
            Self::DirectionDisabled { direction } => write!(
                f,
                "{} is disabled by the policy",
                direction_words(direction)
            ),
            Self::ManualHold {
                instances,
                keep,
                seconds_left,
            } => write!(
                f,
                "a manual scale keeps {keep} {instances} instances for {seconds_left} s more"
            ),
            Self::ClampedToMin { min } => write!(f, "raised to the minimum of {min} instances"),
            Self::ClampedToMax { max } => write!(f, "lowered to the maximum of {max} instances"),
            Self::DryRun => f.write_str("dry run: decided, not acted on"),
        }
    }
}
