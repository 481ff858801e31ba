//! The [`Balancer`]: spreads requests over the endpoints a `Discover` stream yields.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! use tower::{discover::ServiceList, ServiceExt};
//! use tower_balance_ext::{BalancerBuilder, Pick};
//!
//! let endpoint = |n: u32| {
//!     tower::service_fn(move |x: u32| async move { Ok::<_, std::convert::Infallible>(x + n) })
//! };
//! let balancer = BalancerBuilder::new(Pick::RoundRobin)
//!     .build(ServiceList::new(vec![endpoint(1), endpoint(2)]))
//!     .unwrap();
//! // Cheap to clone: every task may hold its own handle.
//! let first = balancer.clone().oneshot(10).await.unwrap();
//! let second = balancer.clone().oneshot(10).await.unwrap();
//! assert_eq!(first + second, 23);
//! # }
//! ```
//!
//! # How endpoints are chosen and skipped
//!
//! Each request picks an endpoint with the [`Pick`] algorithm among those that are
//! *ready*, clones that endpoint's service, and polls its `poll_ready` once:
//!
//! - **Ready**: the request is sent.
//! - **Pending** (a readiness gate of `tower-health` while the endpoint starts, fails
//!   its probes or drains; a circuit breaker in pending mode): the endpoint is marked
//!   not ready and skipped by every request until a background task sees its
//!   `poll_ready` succeed again; this request picks another.
//! - **Error**: the endpoint is set aside, and probed again after a backoff
//!   ([`readmit_backoff`](BalancerBuilder::readmit_backoff), doubling up to its
//!   maximum, with jitter) rather than forgotten.
//!
//! When no endpoint is ready, the request waits up to
//! [`ready_timeout`](BalancerBuilder::ready_timeout) for one, then fails with
//! [`NoReadyEndpoints`] (a 503 for HTTP); an endpoint that comes back while it waits
//! (re-admitted, or added) takes it at once, even one this request found not ready
//! or failing a moment before. Below the
//! [`panic_threshold`](BalancerBuilder::panic_threshold) share of ready endpoints, the
//! endpoints set aside after errors are tried too (as Envoy's panic mode), so one bad
//! health signal cannot take the whole service down. A new or recovered endpoint can
//! ramp up over a [`slow_start`](BalancerBuilder::slow_start) window.
//!
//! A panic in an endpoint's `poll_ready`, `call` or response future is caught and
//! counted ([`LoadSnapshot::endpoint_panics`](crate::LoadSnapshot::endpoint_panics)):
//! it sets that endpoint aside as an error would, and the request that met it goes
//! elsewhere (or, after `call`, fails with [`EndpointPanicked`] unless it may be
//! retried). The background task survives them; should it panic anyway (in the
//! discovery stream), it starts again where it was
//! ([`LoadSnapshot::driver_restarts`](crate::LoadSnapshot::driver_restarts)).
//!
//! Removing an endpoint loses no request: requests already sent hold their own clone
//! of its service and finish.
//!
//! # Cost
//!
//! A pick looks at a fixed number of endpoints however large the pool and however
//! many of its endpoints are not ready: each snapshot of the pool carries the list of
//! its ready endpoints, which the background task takes again when endpoints change
//! state. (The consistent-hash pick walks its key's own order past endpoints that are
//! not ready: about 1/p steps with a share p of them ready.) Discovery changes that
//! arrive together are applied in order as one rebuild of the pool.
//!
//! # No `Buffer` needed
//!
//! A `Balancer` is a handle on shared state: clone it into every task. Its `poll_ready`
//! is always ready; the waiting for a ready endpoint happens in the response future,
//! bounded by `ready_timeout`. The endpoint services must be `Clone` (hyper's client,
//! tonic's channel and most tower stacks are); the balancer never needs them `Sync`.

mod builder;
mod driver;
pub mod error;
pub mod future;
mod limit;
pub(crate) mod pick;
pub(crate) mod pool;
mod service;
mod shared;

pub use builder::BalancerBuilder;
pub use error::{BuildError, EndpointPanicked, NoHashKey, NoReadyEndpoints, ZeroWeight};
pub use pick::Pick;
pub use service::Balancer;
