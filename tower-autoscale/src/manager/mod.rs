//! [`ScalingManager`]: carries decisions out through a [`Scaler`] per service, keeps a
//! bounded audit history, and runs the control loop ([`Autoscaler`]).
//!
//! A manual scale ([`ScalingManager::scale_by`]) holds its count for a while (five
//! minutes unless [`ScalingManager::set_manual_hold`] says otherwise): until then the
//! autoscaler keeps at least the count of a manual scale-up and at most that of a manual
//! scale-down ([`DecisionEngine::hold`]); [`DecisionEngine::manual_hold`] says until when.

mod audit;
mod autoscaler;
mod error;
mod scaler;

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::engine::{Action, Decision, DecisionEngine, Keep};
use crate::process::{InstanceDetails, ScaleError};

pub use self::audit::AuditEntry;
pub use self::autoscaler::{Autoscaler, AutoscalerBuilder};
pub use self::error::{BeyondBounds, ManualScaleError};
pub use self::scaler::Scaler;

const AUDIT: usize = 1000;

/// How long a manual scale holds unless set otherwise.
pub const DEFAULT_MANUAL_HOLD: Duration = Duration::from_secs(300);

struct Inner {
    engine: DecisionEngine,
    scalers: Mutex<HashMap<String, Arc<dyn Scaler>>>,
    audit: Mutex<VecDeque<AuditEntry>>,
    manual_hold: Mutex<Duration>,
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
                manual_hold: Mutex::new(DEFAULT_MANUAL_HOLD),
            }),
        }
    }

    /// The engine.
    pub fn engine(&self) -> &DecisionEngine {
        &self.inner.engine
    }

    /// How long a manual scale holds its count against the autoscaler (default
    /// [`DEFAULT_MANUAL_HOLD`]; zero: not at all). Shared by every clone; applies to the
    /// manual scales after this call.
    pub fn set_manual_hold(&self, hold: Duration) {
        *self
            .inner
            .manual_hold
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = hold;
    }

    /// How long a manual scale holds its count (see [`set_manual_hold`](Self::set_manual_hold)).
    pub fn manual_hold(&self) -> Duration {
        *self
            .inner
            .manual_hold
            .lock()
            .unwrap_or_else(|e| e.into_inner())
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
    /// a count outside the policy's bounds changes nothing and is refused. A change holds
    /// for [`manual_hold`](Self::manual_hold): [`DecisionEngine::manual_hold`] says until
    /// when.
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
        // The hold starts before the change, so that an evaluation while instances start
        // or drain does not undo it; it follows what the change came to.
        let hold = self.manual_hold();
        let keep = if delta > 0 {
            Keep::AtLeast
        } else {
            Keep::AtMost
        };
        let engine = &self.inner.engine;
        if !hold.is_zero() {
            engine.hold(service, asked, keep, hold);
        }
        let result = self.act(service, scaler.as_ref(), asked, "manual").await;
        let now = scaler.current();
        if !hold.is_zero() && now != asked {
            // Nothing changed: no hold; a partial change: held where it came to.
            let left = if now == current as usize {
                Duration::ZERO
            } else {
                hold
            };
            engine.hold(service, now, keep, left);
        }
        result.map_err(ManualScaleError::Scale)
    }
}
