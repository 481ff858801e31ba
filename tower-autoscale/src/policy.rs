//! [`ScalingPolicy`]: what a service may scale to, on which metrics, how fast.
//!
//! Deserializable from TOML or JSON (durations in seconds); every field has a
//! default, so a policy file names only what it changes:
//!
//! ```
//! use tower_autoscale::ScalingPolicy;
//!
//! let policy: ScalingPolicy = serde_json::from_str(r#"{
//!     "min_instances": 2,
//!     "max_instances": 8,
//!     "scale_down": { "stabilization_window": 120 }
//! }"#).unwrap();
//! let policy = policy.validated().unwrap();
//! assert_eq!(policy.max_instances, 8);
//! assert_eq!(policy.tolerance, 0.1);
//! ```

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::BuildError;

/// A load metric a policy can target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Average CPU share of the ready instances (0 to 1).
    Cpu,
    /// Average memory share of the ready instances (0 to 1).
    Memory,
    /// Average requests in flight per ready instance.
    InFlight,
    /// Requests waiting for an instance, in all (scale-up only: an empty queue is no
    /// reason to shrink).
    QueueDepth,
    /// 99th percentile latency in milliseconds (scale-up only).
    P99Ms,
    /// Failed share of requests, 0 to 1 (scale-up only).
    ErrorRate,
}

impl Metric {
    /// An average per instance, with the HPA's rules for unready and missing ones.
    pub fn is_per_instance(self) -> bool {
        matches!(self, Metric::Cpu | Metric::Memory | Metric::InFlight)
    }

    /// Only ever asks for more instances, never fewer.
    pub fn is_scale_up_only(self) -> bool {
        !self.is_per_instance()
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Metric::Cpu => "cpu",
            Metric::Memory => "memory",
            Metric::InFlight => "in_flight",
            Metric::QueueDepth => "queue_depth",
            Metric::P99Ms => "p99_ms",
            Metric::ErrorRate => "error_rate",
        })
    }
}

/// A target for one metric.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricTarget {
    /// Which metric.
    pub metric: Metric,
    /// The value to hold it at: desired = ceil(current x value / target).
    pub target: f64,
    /// For per-instance metrics: no scale-down while the value is at or above this
    /// ("scale down below 30% CPU"), however far below the target it is.
    #[serde(default)]
    pub scale_down_below: Option<f64>,
}

impl MetricTarget {
    /// A target without a scale-down floor.
    pub fn new(metric: Metric, target: f64) -> Self {
        Self {
            metric,
            target,
            scale_down_below: None,
        }
    }

    /// The defaults: CPU 65% (up above 71.5% with the tolerance, down below 30%),
    /// memory 75% (down below 50%), queue depth 10, p99 500 ms, error rate 1%.
    pub fn defaults() -> Vec<MetricTarget> {
        vec![
            MetricTarget {
                metric: Metric::Cpu,
                target: 0.65,
                scale_down_below: Some(0.30),
            },
            MetricTarget {
                metric: Metric::Memory,
                target: 0.75,
                scale_down_below: Some(0.50),
            },
            MetricTarget::new(Metric::QueueDepth, 10.0),
            MetricTarget::new(Metric::P99Ms, 500.0),
            MetricTarget::new(Metric::ErrorRate, 0.01),
        ]
    }
}

/// How to pick among rate policies, as the HPA's `selectPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Select {
    /// The policy allowing the largest change.
    Max,
    /// The policy allowing the smallest change.
    Min,
    /// No change in this direction at all.
    Disabled,
}

/// What a rate policy counts in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RateKind {
    /// Instances per period.
    Instances,
    /// Percent of the instances at the start of the period.
    Percent,
}

/// At most `value` instances (or percent) of change per `period`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RatePolicy {
    /// Instances or percent.
    pub kind: RateKind,
    /// How many.
    pub value: u32,
    /// Over what period (seconds in files).
    #[serde(with = "secs")]
    pub period: Duration,
}

/// One direction's rules, as the HPA's `behavior.scaleUp` / `scaleDown`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScalingRules {
    /// Recommendations over this window are considered: scale up to the lowest of them,
    /// down to the highest (seconds in files).
    #[serde(with = "secs")]
    pub stabilization_window: Duration,
    /// The rate policies.
    pub policies: Vec<RatePolicy>,
    /// How to pick among them.
    pub select: Select,
}

impl ScalingRules {
    /// The HPA's scale-up default: no window; 100% or 4 instances per 15 s, the larger.
    pub fn scale_up_default() -> Self {
        Self {
            stabilization_window: Duration::ZERO,
            policies: vec![
                RatePolicy {
                    kind: RateKind::Percent,
                    value: 100,
                    period: Duration::from_secs(15),
                },
                RatePolicy {
                    kind: RateKind::Instances,
                    value: 4,
                    period: Duration::from_secs(15),
                },
            ],
            select: Select::Max,
        }
    }

    /// The HPA's scale-down default: a 300 s window; 100% per 15 s.
    pub fn scale_down_default() -> Self {
        Self {
            stabilization_window: Duration::from_secs(300),
            policies: vec![RatePolicy {
                kind: RateKind::Percent,
                value: 100,
                period: Duration::from_secs(15),
            }],
            select: Select::Max,
        }
    }
}

/// Knative's panic mode: when a metric reaches `threshold` times its target, scale up
/// at once (no up window, no rate limit) and allow no scale-down for `hold`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PanicWindow {
    /// The ratio of value to target that starts it (default 2.0, Knative's 200%).
    pub threshold: f64,
    /// How long scale-down stays blocked after the last panicking evaluation
    /// (default 60 s; seconds in files).
    #[serde(with = "secs")]
    pub hold: Duration,
}

impl Default for PanicWindow {
    fn default() -> Self {
        Self {
            threshold: 2.0,
            hold: Duration::from_secs(60),
        }
    }
}

/// Holt's linear trend over throughput, to scale ahead of a rising load. It may only
/// raise the floor: desired = max(reactive, forecast). With hysteresis: a forecast acts
/// only when the predicted throughput and the predicted load on the running instances
/// both leave the tolerance band for three evaluations in a row, only for a count beyond
/// the band above the reactive answer, and never within the down window after a
/// scale-down.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Forecast {
    /// Level smoothing, in (0, 1] (default 0.5).
    pub alpha: f64,
    /// Trend smoothing, in (0, 1] (default 0.3).
    pub beta: f64,
    /// How far ahead, in evaluations (default 3: 30 s at the default 10 s interval).
    pub horizon: u32,
}

impl Default for Forecast {
    fn default() -> Self {
        Self {
            alpha: 0.5,
            beta: 0.3,
            horizon: 3,
        }
    }
}

/// A service's scaling policy; see the [module docs](self).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScalingPolicy {
    /// Never fewer (default 1).
    pub min_instances: usize,
    /// Never more, whatever the load says (default 10).
    pub max_instances: usize,
    /// The targets (default [`MetricTarget::defaults`]); the largest proposal wins.
    pub metrics: Vec<MetricTarget>,
    /// No change while every value is within this share of its target (default 0.1).
    pub tolerance: f64,
    /// Scale-up rules (default: the HPA's; a file may give only some fields).
    #[serde(deserialize_with = "rules::up")]
    pub scale_up: ScalingRules,
    /// Scale-down rules (default: the HPA's; a file may give only some fields).
    #[serde(deserialize_with = "rules::down")]
    pub scale_down: ScalingRules,
    /// A new instance's samples are ignored this long (default 30 s; seconds in files):
    /// instances whose sample gives an `age` below it are left out like unready ones.
    #[serde(with = "secs")]
    pub warm_up: Duration,
    /// Panic mode (default on, Knative's settings); `null` turns it off.
    pub panic: Option<PanicWindow>,
    /// Forecasting (default on); `null` turns it off.
    pub forecast: Option<Forecast>,
}

impl Default for ScalingPolicy {
    fn default() -> Self {
        Self {
            min_instances: 1,
            max_instances: 10,
            metrics: MetricTarget::defaults(),
            tolerance: 0.1,
            scale_up: ScalingRules::scale_up_default(),
            scale_down: ScalingRules::scale_down_default(),
            warm_up: Duration::from_secs(30),
            panic: Some(PanicWindow::default()),
            forecast: Some(Forecast::default()),
        }
    }
}

/// A policy setting that cannot work: the [`BuildError`] that
/// [`ScalingPolicy::validated`] and [`ScalingPolicyBuilder::build`] give, under the name
/// the engine's errors use.
pub type PolicyError = BuildError;

impl ScalingPolicy {
    /// A builder from the defaults: setters, then [`build`](ScalingPolicyBuilder::build),
    /// which checks every setting.
    ///
    /// ```
    /// use tower_autoscale::{Metric, MetricTarget, ScalingPolicy};
    ///
    /// let policy = ScalingPolicy::builder()
    ///     .min_instances(2)
    ///     .max_instances(8)
    ///     .metrics(vec![MetricTarget::new(Metric::InFlight, 4.0)])
    ///     .forecast(None)
    ///     .build()
    ///     .unwrap();
    /// assert_eq!(policy.max_instances, 8);
    /// ```
    pub fn builder() -> ScalingPolicyBuilder {
        ScalingPolicyBuilder {
            policy: Self::default(),
        }
    }

    /// Checks every setting of a policy made as a value (a struct literal, or read from
    /// a file); the error names the one to change. [`ScalingPolicyBuilder::build`] and
    /// [`DecisionEngine::add_service`](crate::DecisionEngine::add_service) run it too.
    pub fn validated(self) -> Result<Self, PolicyError> {
        let err = |setting: String, m: String| Err(BuildError::new(setting, m));
        if self.max_instances == 0 {
            return err(
                "max_instances".into(),
                "max_instances is 0; allow at least 1 instance".into(),
            );
        }
        if self.min_instances > self.max_instances {
            return err(
                "min_instances".into(),
                format!(
                    "min_instances ({}) is above max_instances ({}); lower min or raise max",
                    self.min_instances, self.max_instances
                ),
            );
        }
        if !(0.0..1.0).contains(&self.tolerance) {
            return err(
                "tolerance".into(),
                format!(
                    "tolerance {} is outside [0, 1); 0.1 is the HPA's default",
                    self.tolerance
                ),
            );
        }
        for m in &self.metrics {
            if !(m.target.is_finite() && m.target > 0.0) {
                return err(
                    format!("metrics.{}", m.metric),
                    format!(
                        "metrics.{}: target {} must be a number above zero",
                        m.metric, m.target
                    ),
                );
            }
            if let Some(floor) = m.scale_down_below {
                if !m.metric.is_per_instance() {
                    return err(
                        format!("metrics.{}", m.metric),
                        format!(
                        "metrics.{}: scale_down_below applies to cpu, memory and in_flight only (this metric never scales down)",
                        m.metric
                    ));
                }
                if !(floor.is_finite() && floor >= 0.0 && floor < m.target) {
                    return err(
                        format!("metrics.{}", m.metric),
                        format!(
                        "metrics.{}: scale_down_below {floor} must be at least 0 and below the target {}",
                        m.metric, m.target
                    ));
                }
            }
        }
        let mut seen = std::collections::HashSet::new();
        for m in &self.metrics {
            if !seen.insert(m.metric) {
                return err(
                    format!("metrics.{}", m.metric),
                    format!("metrics.{} is given twice; keep one", m.metric),
                );
            }
        }
        for (dir, rules) in [
            ("scale_up", &self.scale_up),
            ("scale_down", &self.scale_down),
        ] {
            if rules.select != Select::Disabled && rules.policies.is_empty() {
                return err(
                    format!("{dir}.policies"),
                    format!(
                        "{dir}.policies is empty; give one, or set {dir}.select to \"disabled\""
                    ),
                );
            }
            for p in &rules.policies {
                if p.value == 0 {
                    return err(
                        format!("{dir}.policies"),
                        format!(
                        "{dir}.policies: a value of 0 allows no change; use select = \"disabled\" instead"
                    ));
                }
                if p.period.is_zero() {
                    return err(
                        format!("{dir}.policies"),
                        format!("{dir}.policies: a period of 0 s; give one, e.g. 15 s"),
                    );
                }
                if dir == "scale_down" && p.kind == RateKind::Percent && p.value > 100 {
                    return err(
                        "scale_down.policies".into(),
                        format!(
                        "scale_down.policies: {}% is more than all the instances; give at most 100",
                        p.value
                    ),
                    );
                }
            }
        }
        if let Some(p) = &self.panic {
            if !(p.threshold.is_finite() && p.threshold > 1.0) {
                return err(
                    "panic.threshold".into(),
                    format!(
                        "panic.threshold {} must be above 1 (2.0 is Knative's 200%)",
                        p.threshold
                    ),
                );
            }
        }
        if let Some(f) = &self.forecast {
            let unit = |x: f64| x > 0.0 && x <= 1.0;
            if !unit(f.alpha) || !unit(f.beta) {
                return err(
                    "forecast".into(),
                    format!(
                        "forecast.alpha {} and forecast.beta {} must be in (0, 1]",
                        f.alpha, f.beta
                    ),
                );
            }
            if f.horizon == 0 {
                return err(
                    "forecast.horizon".into(),
                    "forecast.horizon is 0; give at least 1 evaluation".into(),
                );
            }
        }
        Ok(self)
    }
}

/// Builds a checked [`ScalingPolicy`]; see [`ScalingPolicy::builder`]. Every setting
/// starts at its default.
#[derive(Debug, Clone)]
pub struct ScalingPolicyBuilder {
    policy: ScalingPolicy,
}

impl ScalingPolicyBuilder {
    /// Never fewer instances than this.
    pub fn min_instances(mut self, n: usize) -> Self {
        self.policy.min_instances = n;
        self
    }

    /// Never more instances than this.
    pub fn max_instances(mut self, n: usize) -> Self {
        self.policy.max_instances = n;
        self
    }

    /// The targets (replacing the defaults); the largest proposal wins.
    pub fn metrics(mut self, metrics: Vec<MetricTarget>) -> Self {
        self.policy.metrics = metrics;
        self
    }

    /// No change while every value is within this share of its target.
    pub fn tolerance(mut self, tolerance: f64) -> Self {
        self.policy.tolerance = tolerance;
        self
    }

    /// The scale-up rules.
    pub fn scale_up(mut self, rules: ScalingRules) -> Self {
        self.policy.scale_up = rules;
        self
    }

    /// The scale-down rules.
    pub fn scale_down(mut self, rules: ScalingRules) -> Self {
        self.policy.scale_down = rules;
        self
    }

    /// How long a new instance's samples are ignored.
    pub fn warm_up(mut self, warm_up: Duration) -> Self {
        self.policy.warm_up = warm_up;
        self
    }

    /// Panic mode, or `None` for none.
    pub fn panic(mut self, panic: Option<PanicWindow>) -> Self {
        self.policy.panic = panic;
        self
    }

    /// Forecasting, or `None` for none.
    pub fn forecast(mut self, forecast: Option<Forecast>) -> Self {
        self.policy.forecast = forecast;
        self
    }

    /// The policy, once every setting is checked; the error names the one to change.
    pub fn build(self) -> Result<ScalingPolicy, BuildError> {
        self.policy.validated()
    }
}

/// Rules given in part, completed from the direction's defaults.
mod rules {
    use serde::{Deserialize, Deserializer};

    use super::{RatePolicy, ScalingRules, Select};

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Patch {
        #[serde(default, with = "super::secs_opt")]
        stabilization_window: Option<std::time::Duration>,
        #[serde(default)]
        policies: Option<Vec<RatePolicy>>,
        #[serde(default)]
        select: Option<Select>,
    }

    fn fill<'de, D: Deserializer<'de>>(d: D, base: ScalingRules) -> Result<ScalingRules, D::Error> {
        let p = Patch::deserialize(d)?;
        Ok(ScalingRules {
            stabilization_window: p.stabilization_window.unwrap_or(base.stabilization_window),
            policies: p.policies.unwrap_or(base.policies),
            select: p.select.unwrap_or(base.select),
        })
    }

    pub(super) fn up<'de, D: Deserializer<'de>>(d: D) -> Result<ScalingRules, D::Error> {
        fill(d, ScalingRules::scale_up_default())
    }

    pub(super) fn down<'de, D: Deserializer<'de>>(d: D) -> Result<ScalingRules, D::Error> {
        fill(d, ScalingRules::scale_down_default())
    }
}

/// Optional durations as seconds.
mod secs_opt {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        match Option::<f64>::deserialize(d)? {
            None => Ok(None),
            Some(v) => Duration::try_from_secs_f64(v).map(Some).map_err(|_| {
                serde::de::Error::custom(format!(
                    "{v} is not a duration in seconds (give a number from 0 up)"
                ))
            }),
        }
    }
}

/// Durations as (fractional) seconds in files.
mod secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let v = f64::deserialize(d)?;
        Duration::try_from_secs_f64(v).map_err(|_| {
            serde::de::Error::custom(format!(
                "{v} is not a duration in seconds (give a number from 0 up)"
            ))
        })
    }
}
