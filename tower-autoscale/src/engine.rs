//! The [`DecisionEngine`]: the Kubernetes HPA's arithmetic over [`LoadSample`]s, with a
//! panic window and a forecast, and a reason for every rule that changed the answer.
//!
//! Per evaluation, in the HPA's order:
//!
//! 1. **Per metric, a proposal.** Per-instance metrics (CPU, memory, in flight):
//!    `ratio = average over ready instances / target`; within `tolerance` of 1 the
//!    proposal is the current count; otherwise `ceil(ratio x ready)`. Instances not
//!    ready or warming up are left out of the average and, on a scale-up, counted at 0;
//!    instances the source has no numbers for count at 0 on a scale-up and at the target
//!    on a scale-down; if that flips the direction or lands within tolerance, the
//!    proposal is the current count (all as `replica_calculator.go`). A
//!    `scale_down_below` floor holds the count while the value is at or above it.
//!    Service-wide metrics (queue depth, p99, error rate) propose `ceil(current x ratio)`
//!    above `1 + tolerance`, at most doubling the ready instances (they say "more", not
//!    "how many": a queue or a p99 grows without bound past saturation, and instances
//!    still starting are already on their way), and otherwise have no vote (they never
//!    shrink a service). A metric the sample lacks is left out, with a reason.
//! 2. **The largest proposal wins.**
//! 3. **Panic** (Knative): a ratio at or above the panic threshold scales up at once and
//!    blocks scale-down for the hold time.
//! 4. **Forecast**: Holt's linear trend over throughput may raise (never lower) the count.
//! 5. **Stabilisation**: over the up window, the lowest recommendation; over the down
//!    window, the highest (the current count in between). The first evaluation of a
//!    service counts the current count as a recommendation, so a freshly started
//!    autoscaler does not shrink a service at once (the HPA would).
//! 6. **Rate limits**: the changes made within each policy's period bound the next one.
//! 7. **Bounds**: never below `min_instances`, never above `max_instances`.
//!
//! ```
//! use tower_autoscale::{Action, DecisionEngine, InstanceLoad, LoadSample, Metric, MetricTarget, ScalingPolicy};
//!
//! let policy = ScalingPolicy {
//!     metrics: vec![MetricTarget::new(Metric::Cpu, 0.6)],
//!     panic: None,
//!     forecast: None,
//!     ..Default::default()
//! };
//! let engine = DecisionEngine::new();
//! engine.add_service("training", policy, || LoadSample {
//!     instances: 3,
//!     per_instance: (0..3).map(|i| InstanceLoad::new(format!("i{i}")).cpu(0.9)).collect(),
//!     ..LoadSample::new(3)
//! }).unwrap();
//! let d = engine.evaluate("training").unwrap();
//! // The HPA's worked example: 3 instances at 90% CPU with a 60% target want 5.
//! assert_eq!(d.desired, 5);
//! assert_eq!(d.action, Action::ScaleUp(2));
//! ```

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use crate::policy::{
    Metric, MetricTarget, PolicyError, RateKind, ScalingPolicy, ScalingRules, Select,
};
use crate::sample::{LoadSample, LoadSource};

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

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ScaleUp(n) => write!(f, "scale up by {n}"),
            Self::ScaleDown(n) => write!(f, "scale down by {n}"),
            Self::Hold => f.write_str("hold"),
        }
    }
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
            Self::ClampedToMin { min } => write!(f, "raised to the minimum of {min} instances"),
            Self::ClampedToMax { max } => write!(f, "lowered to the maximum of {max} instances"),
            Self::DryRun => f.write_str("dry run: decided, not acted on"),
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

/// Holt's linear trend.
#[derive(Debug, Clone, Default)]
struct Holt {
    level: f64,
    trend: f64,
    seen: u32,
}

impl Holt {
    fn update(&mut self, x: f64, alpha: f64, beta: f64) {
        match self.seen {
            0 => self.level = x,
            1 => {
                self.trend = x - self.level;
                self.level = x;
            }
            _ => {
                let prev = self.level;
                self.level = alpha * x + (1.0 - alpha) * (self.level + self.trend);
                self.trend = beta * (self.level - prev) + (1.0 - beta) * self.trend;
            }
        }
        self.seen = self.seen.saturating_add(1);
    }

    fn predict(&self, steps: u32) -> Option<f64> {
        (self.seen >= 3).then(|| (self.level + self.trend * f64::from(steps)).max(0.0))
    }
}

type Hook = Arc<dyn Fn(&Decision) + Send + Sync>;

struct ServiceState {
    policy: ScalingPolicy,
    source: Arc<dyn LoadSource>,
    recommendations: VecDeque<(Instant, usize)>,
    /// Scale events: when, and the change (+ up, - down).
    events: VecDeque<(Instant, i64)>,
    panic_until: Option<Instant>,
    holt: Holt,
    /// Evaluations in a row whose forecast rose beyond the tolerance.
    forecast_streak: u32,
    history: VecDeque<Decision>,
}

/// Decides scale up, down or hold per service; see the [module docs](self). Cheap to
/// clone (clones share the services).
#[derive(Clone, Default)]
pub struct DecisionEngine {
    services: Arc<Mutex<HashMap<String, ServiceState>>>,
    hooks: Arc<Mutex<Vec<Hook>>>,
    dry_run: bool,
}

impl fmt::Debug for DecisionEngine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<String> = self.lock().keys().cloned().collect();
        f.debug_struct("DecisionEngine")
            .field("services", &names)
            .field("dry_run", &self.dry_run)
            .finish()
    }
}

/// Evaluations in a row a forecast rise must last before it raises the count.
const FORECAST_PERSISTS: u32 = 3;

/// Decisions kept per service.
const HISTORY: usize = 256;

impl DecisionEngine {
    /// An engine with no services.
    pub fn new() -> Self {
        Self::default()
    }

    /// An engine that decides but marks every decision as not to be acted on (and
    /// records no scale events).
    pub fn dry_run(mut self) -> Self {
        self.dry_run = true;
        self
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, ServiceState>> {
        self.services.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds (or replaces) a service with its policy, checked here, and its load source.
    pub fn add_service(
        &self,
        name: &str,
        policy: ScalingPolicy,
        source: impl LoadSource,
    ) -> Result<(), EngineError> {
        let policy = policy.validated().map_err(EngineError::Policy)?;
        self.lock().insert(
            name.to_owned(),
            ServiceState {
                policy,
                source: Arc::new(source),
                recommendations: VecDeque::new(),
                events: VecDeque::new(),
                panic_until: None,
                holt: Holt::default(),
                forecast_streak: 0,
                history: VecDeque::new(),
            },
        );
        Ok(())
    }

    /// Replaces a service's policy.
    pub fn set_policy(&self, name: &str, policy: ScalingPolicy) -> Result<(), EngineError> {
        let policy = policy.validated().map_err(EngineError::Policy)?;
        let mut s = self.lock();
        let st = s
            .get_mut(name)
            .ok_or_else(|| EngineError::UnknownService(name.to_owned()))?;
        st.policy = policy;
        Ok(())
    }

    /// The service's policy.
    pub fn policy(&self, name: &str) -> Option<ScalingPolicy> {
        self.lock().get(name).map(|s| s.policy.clone())
    }

    /// Called with every decision.
    pub fn on_decision<F>(&self, hook: F)
    where
        F: Fn(&Decision) + Send + Sync + 'static,
    {
        self.hooks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Arc::new(hook));
    }

    /// The latest decisions of a service, oldest first (at most 256).
    pub fn history(&self, name: &str) -> Vec<Decision> {
        self.lock()
            .get(name)
            .map(|s| s.history.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Reads the service's source and decides.
    pub fn evaluate(&self, name: &str) -> Result<Decision, EngineError> {
        let source = self
            .lock()
            .get(name)
            .map(|s| s.source.clone())
            .ok_or_else(|| EngineError::UnknownService(name.to_owned()))?;
        // Sample outside the lock: a source may take its time.
        let sample = source.sample();
        self.evaluate_sample(name, &sample)
    }

    /// Decides on a sample you give (for a simulator or a test), now.
    pub fn evaluate_sample(
        &self,
        name: &str,
        sample: &LoadSample,
    ) -> Result<Decision, EngineError> {
        self.evaluate_sample_at(name, sample, Instant::now())
    }

    /// Decides on a sample at a moment you give: a simulator's clock. Moments must not
    /// go backwards for one service.
    pub fn evaluate_sample_at(
        &self,
        name: &str,
        sample: &LoadSample,
        now: Instant,
    ) -> Result<Decision, EngineError> {
        let decision = {
            let mut services = self.lock();
            let st = services
                .get_mut(name)
                .ok_or_else(|| EngineError::UnknownService(name.to_owned()))?;
            let d = decide(name, st, sample, now, self.dry_run);
            st.history.push_back(d.clone());
            while st.history.len() > HISTORY {
                st.history.pop_front();
            }
            d
        };
        let hooks: Vec<Hook> = self.hooks.lock().unwrap_or_else(|e| e.into_inner()).clone();
        for h in hooks {
            h(&decision);
        }
        Ok(decision)
    }

    /// Records a scale event made outside the engine (a manual scale), so the rate
    /// policies count it.
    pub fn record_scale(&self, name: &str, from: usize, to: usize) {
        if let Some(st) = self.lock().get_mut(name) {
            st.events
                .push_back((Instant::now(), to as i64 - from as i64));
        }
    }

    /// The load `horizon` evaluations ahead by Holt's linear trend over throughput, and
    /// the instances it needs at the current load per instance and targets. `None` before three samples with a throughput.
    pub fn predict_load_needed(&self, name: &str, horizon: u32) -> Option<(f64, usize)> {
        let services = self.lock();
        let st = services.get(name)?;
        let predicted = st.holt.predict(horizon)?;
        let last = st.history.back()?;
        let needed = instances_for(predicted, last, &st.policy)?;
        Some((predicted, needed))
    }
}

/// Instances needed for `throughput` at the load per instance the last decision saw.
fn instances_for(throughput: f64, last: &Decision, policy: &ScalingPolicy) -> Option<usize> {
    let now_tp = last.input.throughput?;
    let ready = last.input.ready.max(1) as f64;
    let ratio = last
        .proposals
        .iter()
        .filter(|p| p.metric.is_per_instance())
        .map(|p| p.ratio)
        .fold(0.0f64, f64::max);
    if now_tp <= 0.0 || ratio <= 0.0 {
        return None;
    }
    // One instance at ratio 1 serves this much.
    let per_instance = now_tp / ready / ratio;
    let n = (throughput / per_instance).ceil();
    Some((n as usize).clamp(policy.min_instances, policy.max_instances))
}

/// A value a source gave, if it is one: NaN, infinite or negative values count as
/// missing rather than steering the count.
fn sane(v: Option<f64>) -> Option<f64> {
    v.filter(|x| x.is_finite() && *x >= 0.0)
}

fn raw_value(m: Metric, i: &crate::sample::InstanceLoad) -> Option<f64> {
    match m {
        Metric::Cpu => i.cpu,
        Metric::Memory => i.memory,
        Metric::InFlight => i.in_flight,
        _ => None,
    }
}

fn per_instance_value(m: Metric, i: &crate::sample::InstanceLoad) -> Option<f64> {
    sane(raw_value(m, i))
}

/// The HPA's `calcPlainMetricReplicas` for one per-instance metric.
fn per_instance_proposal(
    t: &MetricTarget,
    sample: &LoadSample,
    current: usize,
    tolerance: f64,
    warm_up: Duration,
    reasons: &mut Vec<Reason>,
) -> Option<Proposal> {
    let mut ready_values = Vec::new();
    let mut unready = 0usize;
    // Ready instances with no usable value: the HPA's missing pods.
    let mut missing_listed = 0usize;
    let mut unusable = 0usize;
    for i in &sample.per_instance {
        let warming = i.warming_up || i.age.is_some_and(|a| a < warm_up);
        match per_instance_value(t.metric, i) {
            Some(v) if i.ready && !warming => ready_values.push(v),
            Some(_) => unready += 1,
            None if !i.ready || warming => unready += 1,
            None => {
                missing_listed += 1;
                if raw_value(t.metric, i).is_some() {
                    unusable += 1;
                }
            }
        }
    }
    if unusable > 0 {
        reasons.push(Reason::UnusableValues {
            metric: t.metric,
            count: unusable,
        });
    }
    if ready_values.is_empty() {
        reasons.push(Reason::MetricMissing { metric: t.metric });
        return None;
    }
    let missing = missing_listed + current.saturating_sub(sample.per_instance.len());
    let avg = ready_values.iter().sum::<f64>() / ready_values.len() as f64;
    let ratio = avg / t.target;
    let mut proposal = Proposal {
        metric: t.metric,
        value: avg,
        target: t.target,
        ratio,
        instances: current,
    };
    if unready > 0 {
        reasons.push(Reason::InstancesIgnored {
            metric: t.metric,
            count: unready,
        });
    }
    let up_with_unready = unready > 0 && ratio > 1.0;
    if !up_with_unready && missing == 0 {
        if (1.0 - ratio).abs() <= tolerance {
            reasons.push(Reason::WithinTolerance { metric: t.metric });
        } else {
            proposal.instances = (ratio * ready_values.len() as f64).ceil() as usize;
        }
    } else {
        let mut values = ready_values.clone();
        if missing > 0 {
            reasons.push(Reason::MissingInstancesAssumed {
                metric: t.metric,
                count: missing,
            });
            // At exactly the target the HPA leaves them out.
            if ratio < 1.0 {
                values.extend(std::iter::repeat_n(t.target, missing));
            } else if ratio > 1.0 {
                values.extend(std::iter::repeat_n(0.0, missing));
            }
        }
        if up_with_unready {
            values.extend(std::iter::repeat_n(0.0, unready));
        }
        let new_ratio = values.iter().sum::<f64>() / values.len() as f64 / t.target;
        let flipped = (ratio < 1.0 && new_ratio > 1.0) || (ratio > 1.0 && new_ratio < 1.0);
        if (1.0 - new_ratio).abs() <= tolerance || flipped {
            reasons.push(Reason::UnsureDirection { metric: t.metric });
        } else {
            let n = (new_ratio * values.len() as f64).ceil() as usize;
            if (new_ratio < 1.0 && n > current) || (new_ratio > 1.0 && n < current) {
                reasons.push(Reason::UnsureDirection { metric: t.metric });
            } else {
                proposal.instances = n;
            }
        }
    }
    if let Some(floor) = t.scale_down_below {
        if proposal.instances < current && avg >= floor {
            reasons.push(Reason::ScaleDownFloor {
                metric: t.metric,
                value: avg,
                floor,
            });
            proposal.instances = current;
        }
    }
    Some(proposal)
}

fn service_proposal(
    t: &MetricTarget,
    sample: &LoadSample,
    current: usize,
    tolerance: f64,
    reasons: &mut Vec<Reason>,
) -> Option<Proposal> {
    let value = sane(match t.metric {
        Metric::QueueDepth => sample.waiting,
        Metric::P99Ms => sample.p99.map(|d| d.as_secs_f64() * 1e3),
        Metric::ErrorRate => sample.error_rate,
        _ => None,
    });
    let Some(value) = value else {
        reasons.push(Reason::MetricMissing { metric: t.metric });
        return None;
    };
    let ratio = value / t.target;
    let mut instances = current;
    if ratio > 1.0 + tolerance {
        // These signals say "more", not "how many" (a queue or a p99 grows without bound
        // past saturation): at most double per evaluation, from the instances the signal
        // reflects (the ready ones), so instances still starting are not asked for twice.
        let ready = if sample.per_instance.is_empty() {
            current
        } else {
            sample.per_instance.iter().filter(|i| i.ready).count()
        };
        instances = current.max((ready.max(1) as f64 * ratio.min(2.0)).ceil() as usize);
    } else if ratio >= 1.0 - tolerance {
        reasons.push(Reason::WithinTolerance { metric: t.metric });
    } else {
        reasons.push(Reason::BelowScaleUpOnlyTarget { metric: t.metric });
    }
    Some(Proposal {
        metric: t.metric,
        value,
        target: t.target,
        ratio,
        instances,
    })
}

fn change_in(events: &VecDeque<(Instant, i64)>, now: Instant, period: Duration, up: bool) -> usize {
    events
        .iter()
        .filter(|(at, _)| now.saturating_duration_since(*at) < period)
        .map(|(_, c)| if up { (*c).max(0) } else { (-*c).max(0) } as usize)
        .sum()
}

/// The HPA's `calculateScaleUpLimitWithScalingRules` / `...ScaleDownLimit...`.
fn rate_limit(
    rules: &ScalingRules,
    events: &VecDeque<(Instant, i64)>,
    now: Instant,
    current: usize,
    up: bool,
) -> usize {
    let mut out: Option<usize> = None;
    for p in &rules.policies {
        let changed = change_in(events, now, p.period, up);
        let proposed = if up {
            let start = current.saturating_sub(changed);
            match p.kind {
                RateKind::Instances => start.saturating_add(p.value as usize),
                RateKind::Percent => {
                    (start as f64 * (1.0 + f64::from(p.value) / 100.0)).ceil() as usize
                }
            }
        } else {
            let start = current.saturating_add(changed);
            match p.kind {
                RateKind::Instances => start.saturating_sub(p.value as usize),
                RateKind::Percent => (start as f64 * (1.0 - f64::from(p.value) / 100.0)) as usize,
            }
        };
        // Max: the policy allowing the largest change; Min: the smallest.
        let pick_larger_change = rules.select == Select::Max;
        out = Some(match out {
            None => proposed,
            Some(o) => {
                if up == pick_larger_change {
                    o.max(proposed)
                } else {
                    o.min(proposed)
                }
            }
        });
    }
    out.unwrap_or(current)
}

fn unix_ms() -> u64 {
    crate::process::unix_ms(std::time::SystemTime::now())
}

fn decide(
    name: &str,
    st: &mut ServiceState,
    sample: &LoadSample,
    now: Instant,
    dry_run: bool,
) -> Decision {
    let p = st.policy.clone();
    let current = sample.instances;
    let mut reasons = Vec::new();
    let mut proposals = Vec::new();
    for t in &p.metrics {
        let prop = if t.metric.is_per_instance() {
            per_instance_proposal(t, sample, current, p.tolerance, p.warm_up, &mut reasons)
        } else {
            service_proposal(t, sample, current, p.tolerance, &mut reasons)
        };
        proposals.extend(prop);
    }
    // Scale-up-only metrics vote only when they ask for more; the others always. Within
    // the down window after a scale-down they vote only at the panic threshold (no
    // reversal on a burst of noise, but a real surge still counts).
    let went_down_lately = st.events.iter().any(|(at, change)| {
        *change < 0 && now.saturating_duration_since(*at) < p.scale_down.stabilization_window
    });
    let surging = |ratio: f64| p.panic.as_ref().is_some_and(|pn| ratio >= pn.threshold);
    let votes = proposals.iter().filter(|pr| {
        !pr.metric.is_scale_up_only()
            || (pr.ratio > 1.0 + p.tolerance && (!went_down_lately || surging(pr.ratio)))
    });
    let mut desired = match votes.map(|pr| pr.instances).max() {
        Some(d) => d,
        None => {
            if proposals.is_empty() {
                reasons.push(Reason::NoMetrics);
            }
            current
        }
    };

    // Panic mode.
    let max_ratio = proposals.iter().map(|p| p.ratio).fold(0.0f64, f64::max);
    let mut panicking = false;
    if let Some(panic) = &p.panic {
        if max_ratio >= panic.threshold && desired > current {
            panicking = true;
            st.panic_until = now.checked_add(panic.hold);
            reasons.push(Reason::Panic { ratio: max_ratio });
        }
        if let Some(until) = st.panic_until {
            if now < until && desired < current {
                reasons.push(Reason::PanicBlocksScaleDown {
                    seconds_left: until.saturating_duration_since(now).as_secs_f64(),
                });
                desired = current;
            } else if now >= until {
                st.panic_until = None;
            }
        }
    }

    // Forecast over throughput: may only raise. The load one instance carries at its
    // target comes from the per-instance metrics (CPU, memory, in flight) only.
    let capacity_ratio = proposals
        .iter()
        .filter(|pr| pr.metric.is_per_instance())
        .map(|pr| pr.ratio)
        .fold(0.0f64, f64::max);
    if let (Some(f), Some(tp)) = (&p.forecast, sane(sample.throughput)) {
        st.holt.update(tp, f.alpha, f.beta);
        if let Some(predicted) = st.holt.predict(f.horizon) {
            let ready = sample.per_instance.iter().filter(|i| i.ready).count().max(
                if sample.per_instance.is_empty() {
                    current
                } else {
                    0
                },
            );
            // Hysteresis, so that noise does not become flips: the forecast acts only
            // when the predicted throughput rises beyond the tolerance band and the
            // predicted load on the instances running now leaves the band too (as a
            // metric must); only once that has held for FORECAST_PERSISTS evaluations
            // in a row; only for a count beyond the band above what the metrics ask
            // for; and never within the down window after a scale-down.
            let per_instance = if tp > 0.0 && capacity_ratio > 0.0 && ready > 0 {
                tp / ready as f64 / capacity_ratio
            } else {
                0.0
            };
            let band = 1.0 + p.tolerance;
            let rising = per_instance > 0.0
                && predicted > tp * band
                && predicted / (per_instance * current.max(1) as f64) > band;
            st.forecast_streak = if rising {
                st.forecast_streak.saturating_add(1)
            } else {
                0
            };
            if rising && st.forecast_streak >= FORECAST_PERSISTS && !went_down_lately {
                let need = (predicted / per_instance).ceil() as usize;
                if need > desired && need as f64 > desired as f64 * band {
                    reasons.push(Reason::Forecast {
                        predicted_throughput: predicted,
                        instances: need,
                    });
                    desired = need;
                }
            }
        }
    }

    // Stabilisation over recent recommendations. Beyond the HPA: a service's first
    // evaluation counts its current count as a recent recommendation, so a freshly
    // started autoscaler does not shrink a service before its down window saw it.
    if st.recommendations.is_empty() {
        st.recommendations.push_back((now, current));
    }
    st.recommendations.push_back((now, desired));
    let longest = p
        .scale_up
        .stabilization_window
        .max(p.scale_down.stabilization_window);
    while st
        .recommendations
        .front()
        .is_some_and(|(at, _)| now.saturating_duration_since(*at) > longest)
    {
        st.recommendations.pop_front();
    }
    // The recommendations younger than the window; with a zero window, this one only.
    let recent = |w: Duration| {
        let older = st
            .recommendations
            .iter()
            .take(st.recommendations.len().saturating_sub(1))
            .filter(move |(at, _)| now.saturating_duration_since(*at) < w)
            .map(|(_, r)| *r);
        older.chain(std::iter::once(desired))
    };
    let up_rec = recent(p.scale_up.stabilization_window)
        .min()
        .unwrap_or(desired);
    let down_rec = recent(p.scale_down.stabilization_window)
        .max()
        .unwrap_or(desired);
    let recommended = desired;
    let mut stabilized = current;
    if stabilized < up_rec {
        stabilized = up_rec;
    }
    if stabilized > down_rec {
        stabilized = down_rec;
    }
    if panicking {
        // Panic skips the up window.
        stabilized = stabilized.max(recommended);
    }
    if recommended > current && stabilized < recommended {
        reasons.push(Reason::StabilizedUp {
            window_seconds: p.scale_up.stabilization_window.as_secs_f64(),
            recommended,
            allowed: stabilized,
        });
    }
    if recommended < current && stabilized > recommended {
        reasons.push(Reason::StabilizedDown {
            window_seconds: p.scale_down.stabilization_window.as_secs_f64(),
            recommended,
            allowed: stabilized,
        });
    }
    desired = stabilized;

    // Rate limits.
    while st
        .events
        .front()
        .is_some_and(|(at, _)| now.saturating_duration_since(*at) > Duration::from_secs(3600))
    {
        st.events.pop_front();
    }
    if desired > current {
        if p.scale_up.select == Select::Disabled {
            reasons.push(Reason::DirectionDisabled {
                direction: "scale_up",
            });
            desired = current;
        } else if !panicking {
            // Never below the current count: a limit only slows a change.
            let limit = rate_limit(&p.scale_up, &st.events, now, current, true).max(current);
            if desired > limit {
                reasons.push(Reason::RateLimited {
                    direction: "scale_up",
                    limit,
                });
                desired = limit;
            }
        }
    } else if desired < current {
        if p.scale_down.select == Select::Disabled {
            reasons.push(Reason::DirectionDisabled {
                direction: "scale_down",
            });
            desired = current;
        } else {
            // Never above the current count: a limit only slows a change.
            let limit = rate_limit(&p.scale_down, &st.events, now, current, false).min(current);
            if desired < limit {
                reasons.push(Reason::RateLimited {
                    direction: "scale_down",
                    limit,
                });
                desired = limit;
            }
        }
    }

    // Bounds, always.
    if desired > p.max_instances {
        reasons.push(Reason::ClampedToMax {
            max: p.max_instances,
        });
        desired = p.max_instances;
    }
    if desired < p.min_instances {
        reasons.push(Reason::ClampedToMin {
            min: p.min_instances,
        });
        desired = p.min_instances;
    }
    let action = match desired.cmp(&current) {
        std::cmp::Ordering::Greater => Action::ScaleUp(desired - current),
        std::cmp::Ordering::Less => Action::ScaleDown(current - desired),
        std::cmp::Ordering::Equal => Action::Hold,
    };
    if dry_run {
        reasons.push(Reason::DryRun);
    } else if action != Action::Hold {
        st.events.push_back((now, desired as i64 - current as i64));
    }
    Decision {
        service: name.to_owned(),
        at_unix_ms: unix_ms(),
        current,
        desired,
        action,
        proposals,
        reasons,
        input: SampleSummary {
            instances: sample.instances,
            ready: sample.per_instance.iter().filter(|i| i.ready).count(),
            in_flight: sample.in_flight,
            waiting: sample.waiting,
            throughput: sample.throughput,
            p99_ms: sample.p99.map(|d| d.as_secs_f64() * 1e3),
            error_rate: sample.error_rate,
        },
    }
}
