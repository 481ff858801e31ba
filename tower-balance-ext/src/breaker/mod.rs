//! A circuit breaker per endpoint: closed, open, half-open.
//!
//! Wrap each endpoint service (for instance in the constructor a discovery source
//! calls) so a failing endpoint stops receiving requests for a while instead of failing
//! them all:
//!
//! - **Closed**: requests pass; the breaker trips on `consecutive_failures` failures in
//!   a row, on a failure rate over a sliding window (once it holds `min_calls` calls),
//!   or on a slow-call rate.
//! - **Open**: for `open_for`, doubling on each trip that follows a failed probe up to
//!   `max_open_for`, less up to a fifth at random (so a fleet's breakers do not probe
//!   in step). `poll_ready` either fails at once with [`BreakerOpen`]
//!   ([`WhenOpen::Fail`], the default) or pends until half-open ([`WhenOpen::Wait`]:
//!   behind a [`Balancer`](crate::Balancer), the endpoint is then skipped as not ready
//!   and comes back by itself).
//! - **Half-open**: one probe at a time; its success closes the breaker, its failure
//!   opens it again.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! use std::time::Duration;
//! use tower::{Layer, ServiceExt};
//! use tower_balance_ext::breaker::{BreakerState, CircuitBreakerLayer};
//!
//! let layer = CircuitBreakerLayer::builder()
//!     .consecutive_failures(3)
//!     .open_for(Duration::from_secs(5), Duration::from_secs(60))
//!     .on_state_change(|from, to| println!("breaker: {from:?} -> {to:?}"))
//!     .build()
//!     .unwrap();
//! let svc = layer.layer(tower::service_fn(|x: u32| async move {
//!     Err::<u32, _>(std::io::Error::other("down"))
//! }));
//! let handle = svc.handle();
//! for _ in 0..3 {
//!     let _ = svc.clone().oneshot(1).await;
//! }
//! assert_eq!(handle.state(), BreakerState::Open);
//! # }
//! ```

mod error;
pub mod future;
mod layer;
mod service;
mod state;

pub use error::BreakerOpen;
pub use future::ResponseFuture;
pub use layer::{CircuitBreakerBuilder, CircuitBreakerLayer};
pub use service::{BreakerHandle, BreakerStats, CircuitBreaker};
pub use state::{BreakerState, WhenOpen};
