//! The fleet's gateway, an axum app:
//!
//! - `/api/v1/training/*`, `/api/v1/budget/*`, `/api/v1/reports/*`: through each
//!   service's balancer (request bodies up to 1 MiB are buffered so that idempotent
//!   requests can be retried on another instance; responses stream back);
//! - per-client rate limiting (GCRA, the `governor` crate): every request counts
//!   first against its IP address (`--rate-limit`, default 1,000 requests/s), before
//!   anything is looked up; then, when its `x-user-id` names a user that exists, against
//!   that user's limit (read from the user's record, cached as `ratelimit:user:{id}`,
//!   which depends on `user:{id}`: a change to the user drops it everywhere); over
//!   either: 429 with `retry-after`. At most `--max-clients` buckets are kept for
//!   addresses and as many for users (idle ones go first);
//! - writes to the data services need the fleet's token (`Authorization: Bearer`, 401
//!   without it); only the gateway's host names are answered (421 for another `Host`);
//! - an `x-request-id` on every request and response (kept if the client sent one), in
//!   the `tracing` span of the request;
//! - `/metrics`: Prometheus text through the `metrics` facade, with every layer's figures
//!   (requests by route and status, balancers, endpoints, breakers, caches, the bus,
//!   scaling, rate limiting);
//! - `/health`, `/health/{live,ready,startup}`: the gateway's own probes (ready while
//!   both data services are);
//! - the orchestrator API ([`crate::orchestrator`]) and `/api/v1/system/overview` (what
//!   the live views show), `/api/v1/system/history` (a point a second for the last five
//!   minutes, for the dashboard's charts);
//! - `/`: the dashboard (HTML, CSS and JavaScript embedded in the binary).
//!
//! The services' routes, labels, token check and readiness come from the fleet's table
//! of services ([`super::services::SERVICES`]). One file per job: this one holds the
//! state ([`Gateway`], built from [`Parts`]); `routes.rs` the axum routes and the
//! per-request span and figures; `forward.rs` the forwarding through a balancer;
//! `access.rs` host names and the token for writes; `rate_limit.rs` the per-client
//! limits; `overview.rs` the view models the live views read; `prometheus.rs` the
//! `/metrics` text; `history.rs` the dashboard's charts.

mod access;
mod forward;
mod history;
mod overview;
mod prometheus;
mod rate_limit;
mod routes;

pub use self::access::host_names;
pub use self::history::{Point, HISTORY_POINTS};
pub use self::overview::{
    ActionView, CacheView, DecisionView, InstanceView, Overview, ServiceView,
};
use self::rate_limit::Limiters;
pub use self::routes::router;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};
use tower_autoscale::ScalingManager;
use tower_balance_ext::LoadStats;
use tower_cache::coordinator::Coordinator;
use tower_cache::Cache;
use tower_health::{HealthMonitor, Probe, Probes};

use super::data::{cascade_dependents, tiered_cache, Db, FleetBus};
use super::services::{data_services, RunningService};
use super::BoxError;

/// The dashboard page.
pub const DASHBOARD: &str = include_str!("dashboard.html");

/// Everything the gateway is built from.
#[derive(Debug)]
pub struct Parts {
    /// The services, in the order of [`SERVICES`](super::services::SERVICES).
    pub services: Vec<RunningService>,
    /// The scaling manager.
    pub manager: ScalingManager,
    /// The bearer token for scaling and for writes to the data services.
    pub token: String,
    /// The host names the gateway answers to (`Host` values, with their port where a
    /// client sends one), lowercase.
    pub hosts: Vec<String>,
    /// The origin (for users' rate limits).
    pub db: Arc<Db>,
    /// The monitor of the data services.
    pub monitor: HealthMonitor,
    /// Requests per second per client address.
    pub rate_limit: u32,
    /// Rate-limit buckets kept at most, for addresses and for users each.
    pub max_clients: usize,
    /// The edge's connection counters.
    pub edge: Arc<super::edge::Stats>,
    /// How long a request body may take to arrive (408 after it).
    pub body_timeout: Duration,
    /// Where the gateway's own cache lives.
    pub cache_dir: PathBuf,
    /// The bus.
    pub bus: FleetBus,
    /// The bus's shared secret.
    pub secret: Vec<u8>,
}

/// The gateway's state; see the [module docs](self).
pub struct Gateway {
    parts: Parts,
    cache: Cache,
    coordinator: Coordinator,
    addresses: Limiters,
    users: Limiters,
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    probes: Probes,
    started: Instant,
    requests: AtomicU64,
    limited: AtomicU64,
    next_id: AtomicU64,
    history: Mutex<std::collections::VecDeque<Point>>,
    states: Mutex<overview::StateClock>,
}

/// The gateway's own cache's node id on the invalidation bus.
pub const GATEWAY_NODE: u64 = 3;

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("requests", &self.requests)
            .finish_non_exhaustive()
    }
}

impl Gateway {
    /// The gateway over `parts`, with its own cache (memory 1,000 entries / 10 s, disk
    /// 120 s) and coordinator.
    pub async fn new(parts: Parts) -> Result<Self, BoxError> {
        let cache = tiered_cache(&parts.cache_dir, 1_000, Duration::from_secs(10))?;
        let coordinator = parts
            .bus
            .coordinator(cache.clone(), GATEWAY_NODE, &parts.secret)?;
        cascade_dependents(&cache, "user:*")?;
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let probes = Probes::new();
        let monitor = parts.monitor.clone();
        probes.register(
            Probe::readiness("data-services", move || {
                let ok = data_services().all(|(s, _)| monitor.is_ready_for_traffic(s.name));
                async move {
                    if ok {
                        Ok(())
                    } else {
                        Err("a data service is not ready")
                    }
                }
            })
            .period(Duration::from_millis(250))
            .timeout(Duration::from_millis(100)),
        )?;
        probes.start();
        let max_clients = parts.max_clients;
        Ok(Self {
            parts,
            cache,
            coordinator,
            addresses: Limiters::new(max_clients),
            users: Limiters::new(max_clients),
            recorder,
            handle,
            probes,
            started: Instant::now(),
            requests: AtomicU64::new(0),
            limited: AtomicU64::new(0),
            next_id: AtomicU64::new(1),
            history: Mutex::new(std::collections::VecDeque::with_capacity(HISTORY_POINTS)),
            states: Mutex::new(overview::StateClock::default()),
        })
    }

    /// The gateway's own cache (users' rate limits).
    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    /// The gateway's coordinator.
    pub fn coordinator(&self) -> &Coordinator {
        &self.coordinator
    }

    /// The services.
    pub fn services(&self) -> &[RunningService] {
        &self.parts.services
    }

    /// The figures of the balancer in front of service `name`.
    pub fn load(&self, name: &str) -> Option<LoadStats> {
        self.service(name).map(RunningService::stats)
    }

    fn service(&self, name: &str) -> Option<&RunningService> {
        self.parts.services.iter().find(|s| s.name() == name)
    }

    /// Requests refused by the rate limiter so far.
    pub fn limited(&self) -> u64 {
        self.limited.load(Ordering::Relaxed)
    }

    fn loads(&self) -> BTreeMap<String, LoadStats> {
        self.parts
            .services
            .iter()
            .map(|s| (s.name().to_string(), s.stats()))
            .collect()
    }
}
