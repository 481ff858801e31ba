//! Health probes, readiness gating and remote health monitoring for [tower] services.
//!
//! `tower-health` gives a service Kubernetes-style **probes** (startup, readiness,
//! liveness, resource) with thresholds, **endpoints** that report them (`/health`,
//! `/health/live`, `/health/ready`, `/health/startup`), a **readiness gate** layer that
//! holds traffic while the service (or an endpoint it calls) is not ready and during a
//! drain, a **monitor** that checks remote targets over HTTP, and **graceful shutdown**
//! for hyper and axum servers. Readiness reaches a balancer the tower way: a
//! pending-mode [`ReadinessLayer`] around an endpoint makes its `poll_ready` pend, and
//! `tower::balance` or `tower-balance-ext` skip endpoints that are not ready. So this
//! crate depends on none of its siblings; `tower-autoscale` waits on its readiness
//! before it puts a new instance into discovery.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! use std::time::Duration;
//! use tower::{ServiceBuilder, ServiceExt};
//! use tower_health::{Gate, Probe, Probes, ReadinessLayer};
//!
//! let probes = Probes::new();
//! probes.register(Probe::readiness("warm-cache", || async { Ok::<_, String>(()) }))?;
//! probes.start();
//! let gate = Gate::new(probes.ready_watch());
//! let svc = ServiceBuilder::new()
//!     .layer(ReadinessLayer::pending(gate))
//!     .service_fn(|x: u32| async move { Ok::<_, std::convert::Infallible>(x * 2) });
//! // poll_ready pends until the probe has passed, then the request goes through.
//! assert_eq!(svc.oneshot(21).await?, 42);
//! # Ok(()) }
//! ```
//!
//! # Conventions
//!
//! - **Layers and plain values** ([`ReadinessLayer`], [`Gate`], [`Probe`], [`Probes`],
//!   [`Target`], [`HealthEndpoints`]) are made with `new` (or a named constructor such
//!   as [`ReadinessLayer::reject_http`]) and setters that never fail.
//! - **What runs** checks its settings where it is added: [`Probes::register`] and
//!   [`HealthMonitor::register`] refuse an impossible setting with a [`BuildError`]
//!   that names it.
//! - The gate's modes answer or fail as their names say: [`ReadinessLayer::reject_http`]
//!   answers `503` and passes the inner service's error on as it is.
//!
//! [tower]: https://docs.rs/tower
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod endpoints;
pub mod error;
pub mod gate;
#[cfg(feature = "grpc")]
#[cfg_attr(docsrs, doc(cfg(feature = "grpc")))]
pub mod grpc;
pub mod monitor;
pub mod probe;
pub mod resource;
pub mod shutdown;

/// The error type at service boundaries.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Locks `m`, going on past poisoning: every lock in this crate guards data that is left
/// consistent at each step, so a panic elsewhere while holding it does not make it
/// unusable.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub use crate::endpoints::HealthEndpoints;
pub use crate::error::{BuildError, NotReady, Rejected};
pub use crate::gate::{DrainReport, Gate, InFlightBody, ReadinessLayer, ReadinessService};
pub use crate::monitor::{HealthMonitor, Target, TargetReport, TargetState};
pub use crate::probe::{Probe, ProbeKind, ProbeReport, ProbeState, Probes, ServiceHealth};
pub use crate::shutdown::{shutdown_signal, GracefulServer, ShutdownReport};

/// The old name of [`TargetState`].
#[deprecated(since = "0.1.0", note = "renamed `TargetState`")]
pub type HealthState = TargetState;
/// The old name of [`TargetReport`].
#[deprecated(since = "0.1.0", note = "renamed `TargetReport`")]
pub type TargetHealth = TargetReport;
/// The old name of [`ProbeReport`].
#[deprecated(since = "0.1.0", note = "renamed `ProbeReport`")]
pub type ProbeStatus = ProbeReport;
/// The old name of [`ServiceHealth`].
#[deprecated(since = "0.1.0", note = "renamed `ServiceHealth`")]
pub type HealthStatus = ServiceHealth;
