//! Health-aware load balancing for [tower] services.
//!
//! `tower-balance-ext` spreads requests over a changing set of endpoints with the
//! algorithms service authors reach for (round robin, least connections, smooth weighted,
//! consistent hash for sticky sessions and latency-aware power-of-two-choices), and adds
//! what `tower::balance` leaves out: endpoints set aside after errors come back after a
//! backoff, a panic threshold and slow start, a per-endpoint circuit breaker, a retry on
//! another endpoint within a budget, and load statistics. It learns which endpoints
//! exist from a `tower::discover::Discover` stream and which may take traffic from each
//! endpoint's `poll_ready`, so an endpoint wrapped in `tower-health`'s readiness gate is
//! skipped while it is starting, unhealthy or draining, without this crate knowing that
//! crate's types. `tower-autoscale` reads its statistics; this crate depends on none of
//! its siblings.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! use tower::{discover::ServiceList, ServiceExt};
//! use tower_balance_ext::{BalancerBuilder, Pick};
//!
//! let endpoint = |n: u32| {
//!     tower::service_fn(move |_req: ()| async move { Ok::<_, std::convert::Infallible>(n) })
//! };
//! let balancer = BalancerBuilder::new(Pick::LatencyAware)
//!     .build(ServiceList::new(vec![endpoint(1), endpoint(2), endpoint(3)]))
//!     .unwrap();
//! let answer = balancer.clone().oneshot(()).await.unwrap();
//! assert!((1..=3).contains(&answer));
//! assert_eq!(balancer.stats().snapshot().requests, 1);
//! # }
//! ```
//!
//! # Conventions
//!
//! **Building.** Two shapes, by what can go wrong:
//!
//! - *Plain values*, whose every setting is valid on its own: `new` (or `Default`),
//!   then setters named after the setting, taking and returning `self`; nothing can
//!   fail. [`HttpEndpoint`]`::new(addr).timeout(d)`, [`Router::new`], the settings
//!   struct [`forward::ForwardConfig`] (`Default` and public fields, checked by the
//!   builders that take it). A `with_*` function is another starting point of the
//!   same kind (`HttpEndpoint::with_client`), never fallible.
//! - *Components* whose settings must be checked together, or which start a task or
//!   hold connections: a builder, `XBuilder::new(required)` or its shorthand
//!   `X::builder(required)`, the same setters, and one verb at the end, `build`,
//!   which checks everything and returns `Result<_, BuildError>` whose message names
//!   the setting to change and why: [`BalancerBuilder`]`::new(pick)...build(discover)`,
//!   [`breaker::CircuitBreakerLayer`]`::builder()...build()`, `forward::Forwarder::builder(service)...build()`,
//!   `forward::Upstream::builder(addr)...build()`. A builder is a plain value: clone
//!   it to build several (as [`Router`] does, one balancer per service). `Balancer`
//!   has no `Balancer::builder`, as its key and service types come from the discovery
//!   given to `build`. Where every default is valid, `X::new(required)` is
//!   `X::builder(required).build()` without the `Result` (`Forwarder::new`,
//!   `Upstream::new`).
//!
//! **Errors.** Services fail with [`BoxError`], as tower's do; the errors a caller
//! may act on are concrete types to downcast (`err.downcast_ref::<NoReadyEndpoints>()`),
//! and those of the request path carry `status()`, the HTTP status to answer:
//! [`NoReadyEndpoints`] (503: no endpoint became ready in time), [`balance::EndpointPanicked`]
//! (502), [`breaker::BreakerOpen`] (503, with `retry_after`), [`UnknownService`] (404),
//! `forward::UpstreamError` (502, or 504 for a timeout; with `kind()`) and
//! `HeadTimeout` (504). [`NoHashKey`] means the consistent-hash key function gave no
//! key for a request. Settings fail with [`BuildError`] (or [`TargetError`] when a
//! router adds a target).
//!
//! [tower]: https://docs.rs/tower
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod balance;
pub mod breaker;
pub mod discover;
#[cfg(feature = "http1-forward")]
#[cfg_attr(docsrs, doc(cfg(feature = "http1-forward")))]
pub mod forward;
mod hash;
#[cfg(feature = "http-client")]
#[cfg_attr(docsrs, doc(cfg(feature = "http-client")))]
pub mod http_client;
mod retry;
pub mod router;
pub mod stats;
mod util;

pub use balance::{
    Balancer, BalancerBuilder, BuildError, NoHashKey, NoReadyEndpoints, Pick, ZeroWeight,
};
pub use hash::hash_key;
#[cfg(feature = "http-client")]
pub use http_client::{HeadTimeout, HttpEndpoint};
pub use retry::{clone_idempotent, is_idempotent};
pub use router::{Router, TargetError, UnknownService};
pub use stats::{EndpointLoad, EndpointState, LoadSnapshot, LoadStats};

/// The error type at service boundaries.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
