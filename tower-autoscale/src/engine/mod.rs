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
//! 7. **Manual hold**: after a manual scale ([`DecisionEngine::hold`]), until the hold
//!    ends, no fewer instances than a manual scale-up set (more are allowed), and no more
//!    than a manual scale-down set (fewer are allowed; a panic still scales up).
//! 8. **Bounds**: never below `min_instances`, never above `max_instances`.
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

mod decide;
mod decision;
mod error;
mod forecast;
mod hold;
mod proposal;
mod rate;
mod reason;

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex};

use tokio::time::Instant;

use crate::policy::ScalingPolicy;
use crate::sample::{LoadSample, LoadSource};

use self::decide::decide;
pub use self::decision::{Action, Decision, Proposal, SampleSummary};
pub use self::error::EngineError;
use self::forecast::Holt;
pub use self::hold::{Keep, ManualHold};
pub use self::reason::Reason;

type Hook = Arc<dyn Fn(&Decision) + Send + Sync>;

struct ServiceState {
    policy: ScalingPolicy,
    source: Arc<dyn LoadSource>,
    recommendations: VecDeque<(Instant, usize)>,
    /// Scale events: when, and the change (+ up, - down).
    events: VecDeque<(Instant, i64)>,
    panic_until: Option<Instant>,
    /// A manual scale's hold, and when it ends.
    hold: Option<(Instant, ManualHold)>,
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
                hold: None,
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

    /// Holds a service at `keep` `instances` for `duration` (a manual scale): until then,
    /// decisions never go below (for [`Keep::AtLeast`]) or above (for [`Keep::AtMost`])
    /// it, and say so with [`Reason::ManualHold`]. Replaces an earlier hold. The hold set,
    /// or `None` for an unknown service.
    pub fn hold(
        &self,
        name: &str,
        instances: usize,
        keep: Keep,
        duration: std::time::Duration,
    ) -> Option<ManualHold> {
        let mut services = self.lock();
        let st = services.get_mut(name)?;
        let now = Instant::now();
        // A duration too long for the clock holds for thirty years.
        let until = now
            .checked_add(duration)
            .or_else(|| now.checked_add(std::time::Duration::from_secs(86_400 * 365 * 30)))
            .unwrap_or(now);
        let hold = ManualHold {
            instances,
            keep,
            until_unix_ms: crate::util::unix_ms().saturating_add(
                u64::try_from(until.saturating_duration_since(now).as_millis()).unwrap_or(u64::MAX),
            ),
        };
        st.hold = Some((until, hold.clone()));
        Some(hold)
    }

    /// The manual hold in force on a service, if any (see [`hold`](Self::hold)).
    pub fn manual_hold(&self, name: &str) -> Option<ManualHold> {
        let services = self.lock();
        let (until, hold) = services.get(name)?.hold.as_ref()?;
        (Instant::now() < *until).then(|| hold.clone())
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
