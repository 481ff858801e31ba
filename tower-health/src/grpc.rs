//! Drives [`tonic-health`](https://docs.rs/tonic-health)'s gRPC health service from the
//! probes (feature `grpc`).
//!
//! gRPC load balancers and `grpc_health_probe` ask the standard `grpc.health.v1.Health`
//! service; [`report_readiness`] keeps its answer in step with [`Probes`] readiness:
//! `SERVING` while ready, `NOT_SERVING` while not ready or draining.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! use tower_health::{grpc, Probes};
//!
//! let probes = Probes::new();
//! let (reporter, health_service) = tonic_health::server::health_reporter();
//! // "" is the whole server; name your gRPC services too if they differ.
//! let task = grpc::report_readiness(&probes, reporter, [""]);
//! // Add `health_service` to your tonic `Server`.
//! # drop((task, health_service));
//! # }
//! ```

use tokio::task::JoinHandle;
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

use crate::probe::Probes;

/// Sets the status of each of `services` (by gRPC service name; `""` is the whole
/// server) from `probes`' readiness now and on every change, until the probes are
/// dropped.
///
/// # Panics
///
/// If called outside a tokio runtime.
pub fn report_readiness<I, S>(
    probes: &Probes,
    reporter: HealthReporter,
    services: I,
) -> JoinHandle<()>
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    let services: Vec<String> = services.into_iter().map(Into::into).collect();
    let mut ready = probes.ready_watch();
    tokio::spawn(async move {
        loop {
            let status = if *ready.borrow_and_update() {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            for name in &services {
                reporter.set_service_status(name, status).await;
            }
            if ready.changed().await.is_err() {
                return;
            }
        }
    })
}
