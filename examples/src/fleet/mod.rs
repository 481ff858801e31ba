//! The whole fleet on one machine, as a library so that the
//! `fleet` example and the end-to-end tests run the same code.
//!
//! [`Fleet::start`] brings up, on 127.0.0.1 with real sockets:
//!
//! - the **data services** `budget` and `reports` ([`data`]): each with a two-tier cache
//!   (memory 500 entries / 5 s, LMDB 60 s) and a coordinator on the fleet's bus (in
//!   process, or Redis with `--bus redis://HOST:PORT`);
//! - the **training** service: autoscaled child processes of the running binary
//!   (`--role training --port N`, see [`training`]) under a `ProcessScaler`, each
//!   endpoint behind a circuit breaker in a latency-aware balancer with retries;
//! - the **autoscaler** loop (every 10 s by default, `--interval`);
//! - the **gateway** ([`gateway`]) on `--port` (3000): the services' routes through
//!   their balancers, per-client rate limiting, request ids, `/metrics`, `/health/*`,
//!   the orchestrator API and the dashboard at `/`; writes need the fleet's token, only
//!   its host names are answered, and its connections are bounded ([`edge`]).
//!
//! [`main`] adds the live view ([`view`]) and the load and chaos modes ([`load`]).
//!
//! Which services run, and how, is one table: [`services::SERVICES`]. The rest, a job
//! per file: `config.rs` the settings ([`Config`]) and `cli.rs` their flags; `start.rs`
//! bringing the fleet up and down ([`Fleet`]); `program.rs` the `fleet` program
//! ([`main`]); `util.rs` the clock and random helpers.

mod cli;
mod config;
pub mod data;
pub mod edge;
pub mod gateway;
pub mod load;
mod program;
pub mod services;
mod start;
pub mod training;
mod util;
pub mod view;

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use tower_autoscale::{InstanceEndpoint, ProcessScaler};
use tower_balance_ext::breaker::{BreakerHandle, CircuitBreaker};
use tower_balance_ext::HttpEndpoint;
use tower_health::ReadinessService;

pub use self::cli::{help, parse_duration};
pub use self::config::{Config, Shape, ViewMode};
pub use self::program::main;
pub use self::start::Fleet;
pub use self::util::{random_u64, unix_ms};

/// Errors of the fleet's setup.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A training endpoint: a pooled HTTP client behind a circuit breaker, counted by the
/// scaler (for its in-flight figures).
pub type TrainingEndpoint =
    InstanceEndpoint<CircuitBreaker<HttpEndpoint<Full<Bytes>>, Response<Incoming>>>;
/// The training service's balancer.
pub type TrainingBalancer =
    tower_balance_ext::Balancer<SocketAddr, TrainingEndpoint, Request<Full<Bytes>>>;
/// A data service's balancer: its endpoint behind a readiness gate following a monitor.
pub type DataBalancer = tower_balance_ext::Balancer<
    SocketAddr,
    ReadinessService<HttpEndpoint<Full<Bytes>>>,
    Request<Full<Bytes>>,
>;
/// Each training endpoint's circuit breaker, by address.
pub type Breakers = Arc<std::sync::Mutex<Vec<(SocketAddr, BreakerHandle<Response<Incoming>>)>>>;
/// The training instances' scaler.
pub type TrainingScaler =
    ProcessScaler<CircuitBreaker<HttpEndpoint<Full<Bytes>>, Response<Incoming>>>;
