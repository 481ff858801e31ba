//! [`ScalingManager`]: carries decisions out through a [`Scaler`] per service, keeps a
//! bounded audit history, and runs the control loop ([`Autoscaler`]).

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;

use crate::engine::{Action, Decision, DecisionEngine};
use crate::error::BuildError;
use crate::process::{InstanceDetails, ProcessScaler, ScaleError};

/// Something that runs a service's instances.
pub trait Scaler: Send + Sync + 'static {
    /// Instances running or starting.
    fn current(&self) -> usize;

    /// Starts or stops instances until `n` run; returns how many run.
    fn scale_to(
        &self,
        n: usize,
    ) -> Pin<Box<dyn Future<Output = Result<usize, ScaleError>> + Send + '_>>;

    /// The instances, for status pages.
    fn instances(&self) -> Vec<InstanceDetails> {
        Vec::new()
    }
}

impl<S: Send + 'static> Scaler for ProcessScaler<S> {
    fn current(&self) -> usize {
        ProcessScaler::current(self)
    }

    fn scale_to(
        &self,
        n: usize,
    ) -> Pin<Box<dyn Future<Output = Result<usize, ScaleError>> + Send + '_>> {
        Box::pin(ProcessScaler::scale_to(self, n))
    }

    fn instances(&self) -> Vec<InstanceDetails> {
        self.instance_details()
    }
}

/// One entry of the audit history.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case", tag = "entry")]
#[non_exhaustive]
pub enum AuditEntry {
    /// The engine decided (with its inputs, proposals and reasons).
    Decision(Decision),
    /// Instances were started or stopped.
    Action {
        /// Milliseconds since the Unix epoch.
        at_unix_ms: u64,
        /// The service.
        service: String,
        /// `autoscaler` or `manual`.
        by: &'static str,
        /// Instances before.
        from: usize,
        /// Instances asked for.
        to: usize,
        /// Instances after.
        now: usize,
        /// What went wrong, if anything.
        error: Option<String>,
    },
}

/// A manual scale beyond the policy's bounds: nothing changed (409 for HTTP).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BeyondBounds {
    /// The count asked for.
    pub asked: usize,
    /// The policy's minimum.
    pub min: usize,
    /// The policy's maximum.
    pub max: usize,
}

impl fmt::Display for BeyondBounds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} instances is outside the policy's {}..={}; nothing was changed",
            self.asked, self.min, self.max
        )
    }
}

impl std::error::Error for BeyondBounds {}

/// Why a manual scale failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum ManualScaleError {
    /// No such service.
    UnknownService(String),
    /// Outside the policy's bounds.
    BeyondBounds(BeyondBounds),
    /// The scaler failed.
    Scale(ScaleError),
}

impl fmt::Display for ManualScaleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownService(n) => write!(f, "no service named `{n}`"),
            Self::BeyondBounds(b) => b.fmt(f),
            Self::Scale(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for ManualScaleError {}

const AUDIT: usize = 1000;

struct Inner {
    engine: DecisionEngine,
    scalers: Mutex<HashMap<String, Arc<dyn Scaler>>>,
    audit: Mutex<VecDeque<AuditEntry>>,
}

/// Carries out decisions; see the [module docs](self). Cheap to clone.
#[derive(Clone)]
pub struct ScalingManager {
    inner: Arc<Inner>,
}

impl fmt::Debug for ScalingManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScalingManager")
            .field("engine", &self.inner.engine)
            .finish_non_exhaustive()
    }
}

impl ScalingManager {
    /// A manager acting on `engine`'s decisions.
    pub fn new(engine: DecisionEngine) -> Self {
        Self {
            inner: Arc::new(Inner {
                engine,
                scalers: Mutex::new(HashMap::new()),
                audit: Mutex::new(VecDeque::new()),
            }),
        }
    }

    /// The engine.
    pub fn engine(&self) -> &DecisionEngine {
        &self.inner.engine
    }

    /// Sets the scaler of a service the engine knows.
    pub fn add_scaler(&self, service: &str, scaler: impl Scaler) {
        self.inner
            .scalers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(service.to_owned(), Arc::new(scaler));
    }

    fn scaler(&self, service: &str) -> Option<Arc<dyn Scaler>> {
        self.inner
            .scalers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(service)
            .cloned()
    }

    /// The services with a scaler, sorted.
    pub fn services(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .inner
            .scalers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect();
        v.sort();
        v
    }

    fn record(&self, e: AuditEntry) {
        let mut a = self.inner.audit.lock().unwrap_or_else(|e| e.into_inner());
        a.push_back(e);
        while a.len() > AUDIT {
            a.pop_front();
        }
    }

    /// The audit history, oldest first (at most 1,000 entries).
    pub fn history(&self) -> Vec<AuditEntry> {
        self.inner
            .audit
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    /// The audit history as JSON.
    pub fn history_json(&self) -> String {
        serde_json::to_string(&self.history()).unwrap_or_else(|_| "[]".into())
    }

    /// The instances of a service.
    pub fn instances(&self, service: &str) -> Vec<InstanceDetails> {
        self.scaler(service)
            .map(|s| s.instances())
            .unwrap_or_default()
    }

    async fn act(
        &self,
        service: &str,
        scaler: &dyn Scaler,
        to: usize,
        by: &'static str,
    ) -> Result<usize, ScaleError> {
        let from = scaler.current();
        let result = scaler.scale_to(to).await;
        let now = scaler.current();
        // The engine records the changes it decides; manual ones are told to it here,
        // so its rate limits count them too.
        if now != from && by == "manual" {
            self.inner.engine.record_scale(service, from, now);
        }
        self.record(AuditEntry::Action {
            at_unix_ms: crate::util::unix_ms(),
            service: service.to_owned(),
            by,
            from,
            to,
            now,
            error: result.as_ref().err().map(|e| e.to_string()),
        });
        result
    }

    /// Evaluates a service and carries the decision out (nothing for a hold or a dry
    /// run). The decision and the action go to the history.
    pub async fn tick(&self, service: &str) -> Option<Decision> {
        let decision = self.inner.engine.evaluate(service).ok()?;
        self.record(AuditEntry::Decision(decision.clone()));
        let dry = decision
            .reasons
            .iter()
            .any(|r| matches!(r, crate::engine::Reason::DryRun));
        if decision.action != Action::Hold && !dry {
            if let Some(scaler) = self.scaler(service) {
                // Never beyond the policy's max, whatever was decided.
                let max = self
                    .inner
                    .engine
                    .policy(service)
                    .map_or(decision.desired, |p| p.max_instances);
                let to = decision.desired.min(max);
                if let Err(e) = self.act(service, scaler.as_ref(), to, "autoscaler").await {
                    tracing::warn!(%service, error = %e, "scaling failed");
                }
            }
        }
        Some(decision)
    }

    /// Scales a service by hand (the orchestrator's `POST .../scale/{service}/{up|down}`):
    /// a count outside the policy's bounds changes nothing and is refused.
    pub async fn scale_by(&self, service: &str, delta: i64) -> Result<usize, ManualScaleError> {
        let scaler = self
            .scaler(service)
            .ok_or_else(|| ManualScaleError::UnknownService(service.to_owned()))?;
        let policy = self
            .inner
            .engine
            .policy(service)
            .ok_or_else(|| ManualScaleError::UnknownService(service.to_owned()))?;
        let current = scaler.current() as i64;
        let asked = current.saturating_add(delta).max(0) as usize;
        if asked < policy.min_instances || asked > policy.max_instances {
            let b = BeyondBounds {
                asked,
                min: policy.min_instances,
                max: policy.max_instances,
            };
            self.record(AuditEntry::Action {
                at_unix_ms: crate::util::unix_ms(),
                service: service.to_owned(),
                by: "manual",
                from: current as usize,
                to: asked,
                now: current as usize,
                error: Some(b.to_string()),
            });
            return Err(ManualScaleError::BeyondBounds(b));
        }
        self.act(service, scaler.as_ref(), asked, "manual")
            .await
            .map_err(ManualScaleError::Scale)
    }
}

/// The control loop: every `interval`, each service is evaluated and its decision
/// carried out. Stop it with [`Autoscaler::stop`] (or by dropping it).
#[derive(Debug)]
pub struct Autoscaler {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Autoscaler {
    /// A builder for the loop over `manager`'s services, every 10 s by default.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use std::time::Duration;
    /// use tower_autoscale::{Autoscaler, DecisionEngine, ScalingManager};
    ///
    /// let manager = ScalingManager::new(DecisionEngine::new());
    /// let autoscaler = Autoscaler::builder(manager)
    ///     .interval(Duration::from_secs(5))
    ///     .spawn()
    ///     .unwrap();
    /// autoscaler.stop().await;
    /// # }
    /// ```
    pub fn builder(manager: ScalingManager) -> AutoscalerBuilder {
        AutoscalerBuilder {
            manager,
            interval: Duration::from_secs(10),
        }
    }

    /// Starts the loop on the current tokio runtime, with a zero `interval` taken as
    /// 1 ms.
    #[deprecated(
        note = "use `Autoscaler::builder(manager).interval(..).spawn()`, which refuses a zero interval"
    )]
    pub fn spawn(manager: ScalingManager, interval: Duration) -> Self {
        Self::run(manager, interval.max(Duration::from_millis(1)))
    }

    fn run(manager: ScalingManager, interval: Duration) -> Self {
        let (tx, mut rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = &mut rx => return,
                    _ = tick.tick() => {
                        for s in manager.services() {
                            manager.tick(&s).await;
                        }
                    }
                }
            }
        });
        Self {
            stop: Some(tx),
            task: Some(task),
        }
    }

    /// Stops the loop after the evaluation under way, if any.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

/// Builds an [`Autoscaler`]; see [`Autoscaler::builder`].
#[derive(Debug)]
pub struct AutoscalerBuilder {
    manager: ScalingManager,
    interval: Duration,
}

impl AutoscalerBuilder {
    /// How often each service is evaluated (default 10 s; not zero).
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// Starts the loop on the current tokio runtime; must be called within one.
    pub fn spawn(self) -> Result<Autoscaler, BuildError> {
        if self.interval.is_zero() {
            return Err(BuildError::new(
                "interval",
                "interval is zero: give the period between evaluations, e.g. 10 s",
            ));
        }
        Ok(Autoscaler::run(self.manager, self.interval))
    }
}

impl Drop for Autoscaler {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}
