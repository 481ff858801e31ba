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
//! # Making things: one convention
//!
//! - **A plain value** (settings, samples, targets: [`MetricTarget`], [`ProcessConfig`],
//!   [`LoadSample`]) is made with `new` or `Default` and changed with
//!   setters or its public fields; making one never fails. A value is checked where it
//!   is used, and [`ScalingPolicy`], which is also read from files, keeps its public
//!   fields and is checked by [`ScalingPolicy::validated`] (which the engine runs).
//! - **A component that must be checked, or that starts tasks or processes** is made
//!   with `builder()`, setters, and one verb: [`ScalingPolicy::builder`] `.build()`,
//!   [`ProcessScaler::builder`] `.start(make)`, [`Autoscaler::builder`] `.spawn()`. The
//!   verb returns `Result<_, BuildError>`, and [`BuildError::setting`] names the setting
//!   to change. Registries that check what they are given ([`DecisionEngine::new`],
//!   [`ScalingManager::new`]) are plain values whose `add_*` methods return the error.
//! - Older entry points stay as they were where callers rely on them
//!   ([`ProcessScaler::new`] from a whole [`ProcessConfig`]); `Autoscaler::spawn`, which
//!   took a zero interval silently, is deprecated for its builder.
//!
//! ```
//! use std::time::Duration;
//! use tower_autoscale::{Autoscaler, DecisionEngine, ScalingManager, ScalingPolicy};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let policy = ScalingPolicy::builder().max_instances(4).build().unwrap();
//! let engine = DecisionEngine::new();
//! engine.add_service("api", policy, || tower_autoscale::LoadSample::new(1)).unwrap();
//! let autoscaler = Autoscaler::builder(ScalingManager::new(engine))
//!     .interval(Duration::from_secs(10))
//!     .spawn()
//!     .unwrap();
//! autoscaler.stop().await;
//! # }
//! ```
//!
//! # Layout
//!
//! A folder per part with a file per job, as tower's: `engine/` (the [`Decision`] and
//! its [`Reason`]s, the per-metric proposals, the forecast, the rate limits, the
//! evaluation itself), `process/` (its settings, the counted endpoint, instance states,
//! start, restart, stop, load), `manager/` (the scaler trait, the audit history, manual-scale errors, the control
//! loop), `policy.rs`, `sample.rs`, `procfs.rs`,
//! `sim.rs`, and the shared helpers in `util.rs`.
//!
//! [tower]: https://docs.rs/tower
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod engine;
mod error;
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

pub use engine::{
    Action, Decision, DecisionEngine, EngineError, Keep, ManualHold, Proposal, Reason,
    SampleSummary,
};
pub use error::BuildError;
#[cfg(feature = "kube")]
pub use kube_scaler::KubeScaler;
pub use manager::{
    AuditEntry, Autoscaler, AutoscalerBuilder, BeyondBounds, ManualScaleError, Scaler,
    ScalingManager, DEFAULT_MANUAL_HOLD,
};
pub use policy::{
    Forecast, Metric, MetricTarget, PanicWindow, PolicyError, RateKind, RatePolicy, ScalingPolicy,
    ScalingPolicyBuilder, ScalingRules, Select,
};
#[allow(deprecated)]
pub use process::Counted;
pub use process::{
    InstanceDetails, InstanceEndpoint, InstanceState, ProcessConfig, ProcessScaler,
    ProcessScalerBuilder, ScaleError,
};
pub use procfs::{ProcessSampler, ProcessUse};
pub use sample::{InstanceLoad, LoadSample, LoadSource};
