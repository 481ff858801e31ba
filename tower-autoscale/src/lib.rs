//! Autoscaling that reads the real load of a [tower] request path.
//!
//! `tower-autoscale` turns the load that the sibling crates measure (the balancer's
//! in-flight requests, queue and latency; the instances' CPU and memory) into scaling
//! decisions with the arithmetic of the Kubernetes horizontal pod autoscaler (desired =
//! ceil(current x metric / target), tolerance, stabilisation windows, rate policies),
//! plus a panic window and a forecast, and says why for every rule that applied. New
//! instances reach a balancer through `tower::discover::Discover` only once
//! `tower-health` says they are ready; instances to be removed leave discovery first, are
//! drained, and only then stopped. This is the one crate of the workspace that depends on
//! its siblings; they never depend on it.
//!
//! - [`LoadSource`] / [`LoadSample`]: what the engine reads; implemented for
//!   `tower_balance_ext::LoadStats` and for any closure.
//! - [`ScalingPolicy`]: min, max, targets, tolerance, windows, rate policies, warm-up,
//!   panic, forecast; validated, deserializable.
//! - [`DecisionEngine`]: `evaluate(service)` gives a [`Decision`] with the action, each
//!   metric's proposal and the reasons.
//!
//! - [`ProcessScaler`]: instances as child processes, inserted into a balancer when
//!   ready, drained before they stop, restarted after a crash.
//! - `KubeScaler` (feature `kube`): a Deployment's replicas through its scale
//!   subresource.
//! - [`ScalingManager`] and [`Autoscaler`]: decisions carried out, an audit history,
//!   the control loop.
//! - [`sim`]: a deterministic simulator with an exact port of the Kubernetes HPA as
//!   the baseline.
//!
//! [tower]: https://docs.rs/tower
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod engine;
#[cfg(feature = "kube")]
#[cfg_attr(docsrs, doc(cfg(feature = "kube")))]
pub mod kube_scaler;
pub mod manager;
pub mod policy;
pub mod process;
pub mod procfs;
pub mod sample;
pub mod sim;
mod util;

pub use engine::{Action, Decision, DecisionEngine, EngineError, Proposal, Reason, SampleSummary};
#[cfg(feature = "kube")]
pub use kube_scaler::KubeScaler;
pub use manager::{AuditEntry, Autoscaler, BeyondBounds, ManualScaleError, Scaler, ScalingManager};
pub use policy::{
    Forecast, Metric, MetricTarget, PanicWindow, PolicyError, RateKind, RatePolicy, ScalingPolicy,
    ScalingRules, Select,
};
pub use process::{
    Counted, InstanceDetails, InstanceState, ProcessConfig, ProcessScaler, ScaleError,
};
pub use procfs::{ProcessSampler, ProcessUse};
pub use sample::{InstanceLoad, LoadSample, LoadSource};
