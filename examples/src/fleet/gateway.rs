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

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{any, get};
use axum::{Json, Router};
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};
use serde::Serialize;
use tower::{Service, ServiceExt};
use tower_autoscale::{AuditEntry, InstanceState, ScalingManager};
use tower_balance_ext::{EndpointState, LoadStats, NoReadyEndpoints};
use tower_cache::coordinator::Coordinator;
use tower_cache::Cache;
use tower_health::{HealthEndpoints, HealthMonitor, Probe, Probes};
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};

use super::data::{cascade_dependents, tiered_cache, Db, FleetBus};
use super::services::{data_services, Backend, RunningService, SERVICES};
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

type Limiter = governor::DefaultDirectRateLimiter;

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
}

/// The gateway's own cache's node id on the invalidation bus.
pub const GATEWAY_NODE: u64 = 3;

/// Points the gateway keeps for the dashboard's charts: one a second, five minutes.
pub const HISTORY_POINTS: usize = 300;

/// One second of the fleet, for the dashboard's charts.
#[derive(Debug, Clone, Serialize)]
pub struct Point {
    /// When, in milliseconds since the Unix epoch.
    pub at_unix_ms: u64,
    /// Per service: (name, requests/s, p99 ms, cache hit %, ready instances).
    pub services: Vec<(String, f64, f64, Option<f64>, usize)>,
}

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
        })
    }

    /// Records a [`Point`] every second while `gw` lives (the fleet starts this).
    pub fn spawn_history(gw: &Arc<Gateway>) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(gw);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let Some(gw) = weak.upgrade() else { return };
                let o = gw.overview();
                let point = Point {
                    at_unix_ms: super::unix_ms(),
                    services: o
                        .services
                        .iter()
                        .map(|s| {
                            (
                                s.name.clone(),
                                s.rps,
                                s.p99_ms,
                                s.cache.as_ref().map(|c| c.hit_pct),
                                s.ready,
                            )
                        })
                        .collect(),
                };
                let mut h = gw.history.lock().unwrap_or_else(|e| e.into_inner());
                if h.len() == HISTORY_POINTS {
                    h.pop_front();
                }
                h.push_back(point);
            }
        })
    }

    /// The last five minutes, a point a second, oldest first.
    pub fn history(&self) -> Vec<Point> {
        self.history
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect()
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

    /// The figures the live views show.
    pub fn overview(&self) -> Overview {
        let history = self.parts.manager.history();
        let services = self
            .parts
            .services
            .iter()
            .map(|svc| self.service_view(svc, &history))
            .collect();
        let actions = history
            .iter()
            .rev()
            .filter_map(|e| match e {
                AuditEntry::Action {
                    at_unix_ms,
                    service,
                    by,
                    from,
                    to,
                    now,
                    error,
                } => Some(ActionView {
                    at_unix_ms: *at_unix_ms,
                    service: service.clone(),
                    by: by.to_string(),
                    from: *from,
                    to: *to,
                    now: *now,
                    error: error.clone(),
                    reason: history.iter().rev().find_map(|h| match h {
                        AuditEntry::Decision(d)
                            if d.service == *service
                                && d.at_unix_ms <= *at_unix_ms
                                && d.desired == *to
                                && *by == "autoscaler" =>
                        {
                            Some(DecisionView::from(d).reason)
                        }
                        _ => None,
                    }),
                }),
                _ => None,
            })
            .take(30)
            .collect();
        Overview {
            uptime_s: self.started.elapsed().as_secs_f64(),
            gateway_requests: self.requests.load(Ordering::Relaxed),
            rate_limited: self.limited.load(Ordering::Relaxed),
            services,
            actions,
        }
    }

    /// One service's figures: its instances (processes for an autoscaled service,
    /// endpoints for a data service), its cache and its latest scaling decision.
    fn service_view(&self, svc: &RunningService, history: &[AuditEntry]) -> ServiceView {
        let s = svc.stats().snapshot();
        let mut view = ServiceView {
            name: svc.name().to_string(),
            requests: s.requests,
            rps: s.throughput,
            p99_ms: s.p99.as_secs_f64() * 1e3,
            error_pct: s.error_rate * 100.0,
            in_flight: s.in_flight,
            cache: svc.cache().map(CacheView::from),
            ..ServiceView::default()
        };
        match &svc.backend {
            Backend::Autoscaled {
                scaler, breakers, ..
            } => {
                let breakers = breakers.lock().unwrap_or_else(|e| e.into_inner()).clone();
                for d in scaler.instance_details() {
                    let addr = format!("127.0.0.1:{}", d.port);
                    let e = s.endpoints.iter().find(|e| e.name == addr);
                    let state = match d.state {
                        InstanceState::Starting => "starting",
                        InstanceState::Ready => "ready",
                        InstanceState::Draining => "draining",
                        InstanceState::Crashed => "crashed",
                        InstanceState::CrashLoopBackOff => "crash_loop_back_off",
                    };
                    view.count(state);
                    view.instances.push(InstanceView {
                        name: addr.clone(),
                        pid: d.pid,
                        state: state.into(),
                        share: e.map_or(0.0, |e| e.share),
                        in_flight: e.map_or(d.in_flight as u64, |e| e.in_flight),
                        requests: e.map_or(0, |e| e.requests),
                        errors: e.map_or(0, |e| e.errors),
                        p99_ms: e.map_or(0.0, |e| e.p99.as_secs_f64() * 1e3),
                        breaker: breakers
                            .iter()
                            .find(|(a, _)| a.to_string() == addr)
                            .map(|(_, b)| format!("{:?}", b.state()).to_lowercase()),
                    });
                }
                let policy = self.parts.manager.engine().policy(svc.name());
                view.bounds = policy.map(|p| (p.min_instances, p.max_instances));
                view.last_decision = history.iter().rev().find_map(|e| match e {
                    AuditEntry::Decision(d) if d.service == svc.name() => {
                        Some(DecisionView::from(d))
                    }
                    _ => None,
                });
            }
            Backend::Data { .. } => {
                for e in &s.endpoints {
                    let state = match e.state {
                        EndpointState::Ready => "ready",
                        EndpointState::NotReady => "starting",
                        _ => "failing",
                    };
                    view.count(state);
                    view.instances.push(InstanceView {
                        name: e.name.clone(),
                        pid: Some(std::process::id()),
                        state: state.into(),
                        share: e.share,
                        in_flight: e.in_flight,
                        requests: e.requests,
                        errors: e.errors,
                        p99_ms: e.p99.as_secs_f64() * 1e3,
                        breaker: None,
                    });
                }
            }
        }
        view
    }

    /// Prometheus text: the figures of every layer, set as gauges at the scrape, beside
    /// the per-request counters and histograms.
    pub fn metrics(&self) -> String {
        let o = self.overview();
        metrics::with_local_recorder(&self.recorder, || {
            for s in &o.services {
                let svc = s.name.clone();
                metrics::gauge!("fleet_service_requests_per_second", "service" => svc.clone())
                    .set(s.rps);
                metrics::gauge!("fleet_service_p99_seconds", "service" => svc.clone())
                    .set(s.p99_ms / 1e3);
                metrics::gauge!("fleet_service_error_ratio", "service" => svc.clone())
                    .set(s.error_pct / 100.0);
                metrics::gauge!("fleet_service_in_flight", "service" => svc.clone())
                    .set(s.in_flight as f64);
                for (state, n) in [
                    ("ready", s.ready),
                    ("starting", s.starting),
                    ("draining", s.draining),
                ] {
                    metrics::gauge!("fleet_instances", "service" => svc.clone(), "state" => state)
                        .set(n as f64);
                }
                for i in &s.instances {
                    let labels = [("service", svc.clone()), ("instance", i.name.clone())];
                    metrics::gauge!("fleet_endpoint_share", &labels).set(i.share);
                    metrics::gauge!("fleet_endpoint_in_flight", &labels).set(i.in_flight as f64);
                    metrics::gauge!("fleet_endpoint_requests", &labels).set(i.requests as f64);
                    metrics::gauge!("fleet_endpoint_errors", &labels).set(i.errors as f64);
                    metrics::gauge!("fleet_endpoint_p99_seconds", &labels).set(i.p99_ms / 1e3);
                    if let Some(b) = &i.breaker {
                        metrics::gauge!("fleet_breaker_open", &labels).set(if b == "closed" {
                            0.0
                        } else {
                            1.0
                        });
                    }
                }
                if let Some(c) = &s.cache {
                    for (tier, v) in [("memory", c.memory_hit_pct), ("disk", c.disk_hit_pct)] {
                        metrics::gauge!("fleet_cache_hit_ratio", "service" => svc.clone(), "tier" => tier)
                            .set(v / 100.0);
                    }
                    metrics::gauge!("fleet_cache_origin_loads", "service" => svc.clone())
                        .set(c.origin_loads as f64);
                    metrics::gauge!("fleet_cache_entries", "service" => svc.clone(), "tier" => "memory")
                        .set(c.memory_entries as f64);
                    metrics::gauge!("fleet_cache_entries", "service" => svc.clone(), "tier" => "disk")
                        .set(c.disk_entries as f64);
                }
                if let Some(d) = &s.last_decision {
                    metrics::gauge!("fleet_autoscaler_desired_instances", "service" => svc.clone())
                        .set(d.to as f64);
                }
            }
            for svc in &self.parts.services {
                let Backend::Autoscaled { breakers, .. } = &svc.backend else {
                    continue;
                };
                for (addr, b) in breakers.lock().unwrap_or_else(|e| e.into_inner()).iter() {
                    let st = b.stats();
                    metrics::gauge!("fleet_breaker_trips", "instance" => addr.to_string())
                        .set(st.trips as f64);
                    metrics::gauge!("fleet_breaker_rejected", "instance" => addr.to_string())
                        .set(st.rejected as f64);
                }
            }
            let c = self.coordinator.status();
            metrics::gauge!("fleet_bus_published").set(c.published as f64);
            metrics::gauge!("fleet_bus_applied").set(c.applied as f64);
            metrics::gauge!("fleet_bus_rejected").set(c.rejected as f64);
            if let Some(lag) = c.lag_p99 {
                metrics::gauge!("fleet_bus_lag_p99_seconds").set(lag.as_secs_f64());
            }
            metrics::gauge!("fleet_rate_limited_total").set(o.rate_limited as f64);
            let edge = &self.parts.edge;
            metrics::gauge!("fleet_gateway_connections_open").set(edge.open() as f64);
            metrics::gauge!("fleet_gateway_connections_accepted").set(edge.accepted() as f64);
            metrics::gauge!("fleet_gateway_connections_refused").set(edge.refused() as f64);
            metrics::gauge!("fleet_gateway_connections_idle_closed").set(edge.idle_closed() as f64);
            let (addresses, users) = self.limiter_counts();
            metrics::gauge!("fleet_rate_limiter_buckets", "client" => "address")
                .set(addresses as f64);
            metrics::gauge!("fleet_rate_limiter_buckets", "client" => "user").set(users as f64);
            let g = CacheView::from(&self.cache);
            metrics::gauge!("fleet_cache_entries", "service" => "gateway", "tier" => "memory")
                .set(g.memory_entries as f64);
            metrics::gauge!("fleet_cache_entries", "service" => "gateway", "tier" => "disk")
                .set(g.disk_entries as f64);
            let caches = self.parts.services.iter().map(|s| (s.name(), s.cache()));
            for (svc, cache) in std::iter::once(("gateway", Some(&self.cache))).chain(caches) {
                if let Some(c) = cache {
                    metrics::gauge!("fleet_cache_dependencies", "service" => svc)
                        .set(c.dependency_count() as f64);
                }
            }
            metrics::gauge!("fleet_gateway_uptime_seconds").set(o.uptime_s);
        });
        self.handle.render()
    }

    /// The requests-per-second limit of user `id` (read from the user's record, cached
    /// as `ratelimit:user:{id}`), or `None` for a user that does not exist. Nothing is
    /// cached and no dependency is recorded for a user that does not exist, so made-up
    /// ids leave nothing behind.
    async fn user_limit(&self, id: u64) -> Option<u32> {
        let key = format!("ratelimit:user:{id}");
        let (db, cache, k) = (self.parts.db.clone(), self.cache.clone(), key.clone());
        self.cache
            .get_or_load(&key, Duration::from_secs(120), async move {
                if db.user(id).await.is_none() {
                    return Err(format!("no user {id}"));
                }
                // Recorded before the read of the value: a change to the user after it
                // drops this entry (or stops this fill).
                cache
                    .register_entry_dependency(&k, &format!("user:{id}"))
                    .await
                    .map_err(|e| e.to_string())?;
                match db.user(id).await {
                    Some(u) => Ok(Bytes::from(u.rate_limit.to_string())),
                    None => Err(format!("no user {id}")),
                }
            })
            .await
            .ok()
            .and_then(|b| std::str::from_utf8(&b).ok()?.parse::<u32>().ok())
    }

    /// Rate-limit buckets held for client addresses and for users.
    pub fn limiter_counts(&self) -> (usize, usize) {
        (self.addresses.len(), self.users.len())
    }
}

// === impl Limiters ===

/// Rate-limit buckets by client, at most `max` of them. A bucket idle for a second is
/// full again (every limit is per second, its burst a second's worth), so dropping it
/// loses nothing; when the map is full of buckets used within the last second, the
/// least recently used half goes (those clients start again from a full bucket).
struct Limiters {
    max: usize,
    map: std::sync::RwLock<HashMap<String, Bucket>>,
}

struct Bucket {
    limit: u32,
    limiter: Arc<Limiter>,
    /// Milliseconds since `epoch` at the last use.
    used_ms: AtomicU64,
}

impl Limiters {
    fn new(max: usize) -> Self {
        Self {
            max: max.max(1),
            map: std::sync::RwLock::new(HashMap::new()),
        }
    }

    fn len(&self) -> usize {
        self.map.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether `client` may make one more request now at `limit` a second; if not, how
    /// long until it may.
    fn admit(&self, client: &str, limit: u32) -> Result<(), Duration> {
        let now = epoch_ms();
        // The common case, a client seen before at the same limit, takes a read lock.
        let known = self
            .map
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(client)
            .filter(|b| b.limit == limit)
            .map(|b| {
                b.used_ms.store(now, Ordering::Relaxed);
                b.limiter.clone()
            });
        let limiter = match known {
            Some(l) => l,
            None => {
                let mut map = self.map.write().unwrap_or_else(|e| e.into_inner());
                match map.get(client) {
                    Some(b) if b.limit == limit => b.limiter.clone(),
                    _ => {
                        if map.len() >= self.max && !map.contains_key(client) {
                            evict(&mut map, self.max, now);
                        }
                        let per_second = NonZeroU32::new(limit.max(1)).unwrap_or(NonZeroU32::MIN);
                        let limiter =
                            Arc::new(Limiter::direct(governor::Quota::per_second(per_second)));
                        map.insert(
                            client.to_string(),
                            Bucket {
                                limit,
                                limiter: limiter.clone(),
                                used_ms: AtomicU64::new(now),
                            },
                        );
                        limiter
                    }
                }
            }
        };
        limiter.check().map_err(|not_until| {
            not_until.wait_time_from(governor::clock::Clock::now(
                &governor::clock::DefaultClock::default(),
            ))
        })
    }
}

/// Makes room in a full map: drops the buckets idle for a second (full again), then, if
/// that freed less than a quarter, the least recently used half (so that the cost of a
/// pass is spread over many inserts).
fn evict(map: &mut HashMap<String, Bucket>, max: usize, now: u64) {
    map.retain(|_, b| now.saturating_sub(b.used_ms.load(Ordering::Relaxed)) < 1_000);
    if map.len() <= max - max / 4 {
        return;
    }
    let mut used: Vec<u64> = map
        .values()
        .map(|b| b.used_ms.load(Ordering::Relaxed))
        .collect();
    let middle = used.len() / 2;
    let (_, cut, _) = used.select_nth_unstable(middle);
    let cut = *cut;
    map.retain(|_, b| b.used_ms.load(Ordering::Relaxed) > cut);
}

/// Milliseconds since the first call (a monotonic clock for the buckets' last use).
fn epoch_ms() -> u64 {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// What the live views show; see [`Gateway::overview`].
#[derive(Debug, Clone, Default, Serialize)]
pub struct Overview {
    /// Seconds since the gateway started.
    pub uptime_s: f64,
    /// Requests the gateway has seen.
    pub gateway_requests: u64,
    /// Requests it refused for the rate limit.
    pub rate_limited: u64,
    /// Per service.
    pub services: Vec<ServiceView>,
    /// The latest scaling actions, newest first.
    pub actions: Vec<ActionView>,
}

/// One service in the [`Overview`].
#[derive(Debug, Clone, Default, Serialize)]
pub struct ServiceView {
    /// Its name.
    pub name: String,
    /// Instances ready.
    pub ready: usize,
    /// Instances starting.
    pub starting: usize,
    /// Instances draining (or failing).
    pub draining: usize,
    /// The autoscaler's bounds.
    pub bounds: Option<(usize, usize)>,
    /// Requests through its balancer.
    pub requests: u64,
    /// Requests a second (last few seconds).
    pub rps: f64,
    /// p99 latency.
    pub p99_ms: f64,
    /// Errors, percent of requests (last few seconds).
    pub error_pct: f64,
    /// Requests in flight.
    pub in_flight: u64,
    /// Per instance.
    pub instances: Vec<InstanceView>,
    /// Its cache.
    pub cache: Option<CacheView>,
    /// The autoscaler's latest decision.
    pub last_decision: Option<DecisionView>,
}

impl ServiceView {
    fn count(&mut self, state: &str) {
        match state {
            "ready" => self.ready += 1,
            "starting" => self.starting += 1,
            _ => self.draining += 1,
        }
    }
}

/// One instance in a [`ServiceView`].
#[derive(Debug, Clone, Default, Serialize)]
pub struct InstanceView {
    /// Its address.
    pub name: String,
    /// Its process.
    pub pid: Option<u32>,
    /// ready, starting, draining, crashed or failing.
    pub state: String,
    /// Its share of the service's requests.
    pub share: f64,
    /// Requests in flight.
    pub in_flight: u64,
    /// Requests sent to it.
    pub requests: u64,
    /// Of which failed.
    pub errors: u64,
    /// p99 latency.
    pub p99_ms: f64,
    /// Its circuit breaker's state.
    pub breaker: Option<String>,
}

/// A cache in a [`ServiceView`].
#[derive(Debug, Clone, Default, Serialize)]
pub struct CacheView {
    /// Reads answered from memory, percent of reads.
    pub memory_hit_pct: f64,
    /// Reads answered from disk, percent of reads.
    pub disk_hit_pct: f64,
    /// Both.
    pub hit_pct: f64,
    /// Entries in memory.
    pub memory_entries: u64,
    /// Entries on disk.
    pub disk_entries: u64,
    /// Loads from the origin.
    pub origin_loads: u64,
}

impl From<&Cache> for CacheView {
    fn from(c: &Cache) -> Self {
        let s = c.stats();
        let reads = (s.memory_hits + s.disk_hits + s.misses).max(1) as f64;
        Self {
            memory_hit_pct: s.memory_hits as f64 * 100.0 / reads,
            disk_hit_pct: s.disk_hits as f64 * 100.0 / reads,
            hit_pct: (s.memory_hits + s.disk_hits) as f64 * 100.0 / reads,
            memory_entries: s.memory.entries,
            disk_entries: s.disk.map_or(0, |d| d.entries),
            origin_loads: s.loads,
        }
    }
}

/// A scaling decision in a [`ServiceView`].
#[derive(Debug, Clone, Default, Serialize)]
pub struct DecisionView {
    /// When, in milliseconds since the Unix epoch.
    pub at_unix_ms: u64,
    /// scale up, scale down or hold.
    pub action: String,
    /// Instances then.
    pub from: usize,
    /// Instances wanted.
    pub to: usize,
    /// Why, in words.
    pub reason: String,
}

impl From<&tower_autoscale::Decision> for DecisionView {
    fn from(d: &tower_autoscale::Decision) -> Self {
        let metrics = d
            .proposals
            .iter()
            .map(|p| {
                format!(
                    "{} {:.1} vs target {} -> {}",
                    p.metric, p.value, p.target, p.instances
                )
            })
            .collect::<Vec<_>>()
            .join("; ");
        let rules = d
            .reasons
            .iter()
            .map(|r| format!("{r:?}"))
            .collect::<Vec<_>>()
            .join(", ");
        Self {
            at_unix_ms: d.at_unix_ms,
            action: match d.action {
                tower_autoscale::Action::ScaleUp(_) => "scale up",
                tower_autoscale::Action::ScaleDown(_) => "scale down",
                _ => "hold",
            }
            .into(),
            from: d.current,
            to: d.desired,
            reason: if rules.is_empty() {
                metrics
            } else {
                format!("{metrics}; {rules}")
            },
        }
    }
}

/// A scaling action in the [`Overview`].
#[derive(Debug, Clone, Default, Serialize)]
pub struct ActionView {
    /// When, in milliseconds since the Unix epoch.
    pub at_unix_ms: u64,
    /// The service.
    pub service: String,
    /// autoscaler or manual.
    pub by: String,
    /// Instances before.
    pub from: usize,
    /// Asked for.
    pub to: usize,
    /// After.
    pub now: usize,
    /// What went wrong.
    pub error: Option<String>,
    /// The decision's reason, for the autoscaler's actions.
    pub reason: Option<String>,
}

/// Request ids: a per-gateway prefix and a counter.
#[derive(Clone)]
struct Ids(Arc<Gateway>, u32);

impl MakeRequestId for Ids {
    fn make_request_id<B>(&mut self, _req: &http::Request<B>) -> Option<RequestId> {
        let n = self.0.next_id.fetch_add(1, Ordering::Relaxed);
        HeaderValue::from_str(&format!("{:08x}-{n:x}", self.1))
            .ok()
            .map(RequestId::new)
    }
}

/// The gateway's routes over `gw`.
pub fn router(gw: Arc<Gateway>) -> Router {
    let loads = gw.loads();
    let orchestrator =
        crate::orchestrator::router(gw.parts.manager.clone(), loads, gw.parts.token.clone());
    let mut services = Router::new();
    for (i, svc) in gw.parts.services.iter().enumerate() {
        services = services.route(
            &format!("{}{{*rest}}", svc.spec.prefix),
            any(
                move |State(gw): State<Arc<Gateway>>, req: Request| async move {
                    gw.forward(i, req).await
                },
            ),
        );
    }
    let services = services
        .route_layer(axum::middleware::from_fn_with_state(
            gw.clone(),
            writes_need_token,
        ))
        .route_layer(axum::middleware::from_fn_with_state(gw.clone(), rate_limit));
    let health = HealthEndpoints::new(gw.probes.clone());
    let prefix = (super::random_u64() & 0xffff_ffff) as u32;
    Router::new()
        .route("/", get(|| async { Html(DASHBOARD) }))
        .route("/metrics", get(metrics))
        .route("/api/v1/system/overview", get(overview))
        .route(
            "/api/v1/system/history",
            get(|State(gw): State<Arc<Gateway>>| async move { Json(gw.history()) }),
        )
        .route_service("/health", health.clone())
        .route_service("/health/{probe}", health)
        .merge(services)
        .with_state(gw.clone())
        .merge(orchestrator)
        .layer(axum::middleware::from_fn_with_state(gw.clone(), known_host))
        .layer(axum::middleware::from_fn_with_state(gw.clone(), observe))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(Ids(gw, prefix)))
}

async fn overview(State(gw): State<Arc<Gateway>>) -> Json<Overview> {
    Json(gw.overview())
}

async fn metrics(State(gw): State<Arc<Gateway>>) -> impl IntoResponse {
    (
        [(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        gw.metrics(),
    )
}

/// The route's first segments, for labels (bounded: ids are left out): a service's
/// name for its routes.
fn route_label(path: &str) -> &'static str {
    let services = SERVICES.iter().map(|s| (s.prefix, s.name));
    for (prefix, label) in services.chain([
        ("/api/v1/system/", "system"),
        ("/health", "health"),
        ("/metrics", "metrics"),
    ]) {
        if path.starts_with(prefix) {
            return label;
        }
    }
    if path == "/" {
        "dashboard"
    } else {
        "other"
    }
}

/// Counts and times every request, in a `tracing` span with its request id.
async fn observe(State(gw): State<Arc<Gateway>>, req: Request, next: Next) -> Response {
    use tracing::Instrument;
    gw.requests.fetch_add(1, Ordering::Relaxed);
    let route = route_label(req.uri().path());
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let span =
        tracing::info_span!("request", %id, method = %req.method(), path = %req.uri().path());
    let start = Instant::now();
    let res = next.run(req).instrument(span.clone()).await;
    let status = res.status().as_u16().to_string();
    let elapsed = start.elapsed();
    span.in_scope(|| tracing::debug!(status = %status, ms = elapsed.as_secs_f64() * 1e3, "done"));
    metrics::with_local_recorder(&gw.recorder, || {
        metrics::counter!("fleet_gateway_requests_total", "route" => route, "status" => status)
            .increment(1);
        metrics::histogram!("fleet_gateway_request_seconds", "route" => route)
            .record(elapsed.as_secs_f64());
    });
    res
}

/// Per-client rate limiting for the services' routes: the client's address first,
/// before anything about the request is looked up (so that a client over its limit
/// costs no lookup and leaves nothing behind, whatever `x-user-id` it names), then its
/// user's limit when it names a user that exists.
async fn rate_limit(State(gw): State<Arc<Gateway>>, req: Request, next: Next) -> Response {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    let ip = peer.map_or_else(|| "unknown".to_string(), |p| p.ip().to_string());
    if let Err(wait) = gw.addresses.admit(&ip, gw.parts.rate_limit) {
        return refuse(&gw, &ip, gw.parts.rate_limit, wait);
    }
    let user = req
        .headers()
        .get("x-user-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(id) = user {
        if let Some(limit) = gw.user_limit(id).await {
            let client = format!("user:{id}");
            if let Err(wait) = gw.users.admit(&client, limit) {
                return refuse(&gw, &client, limit, wait);
            }
        }
    }
    next.run(req).await
}

/// 429 with `retry-after`.
fn refuse(gw: &Gateway, client: &str, limit: u32, wait: Duration) -> Response {
    gw.limited.fetch_add(1, Ordering::Relaxed);
    let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
    (
        StatusCode::TOO_MANY_REQUESTS,
        [(http::header::RETRY_AFTER, secs.to_string())],
        Json(serde_json::json!({
            "error": format!("{client} is over its limit of {limit} requests/s; retry in {secs} s")
        })),
    )
        .into_response()
}

/// Writes to the data services (any method but GET, HEAD and OPTIONS) need
/// `Authorization: Bearer <token>`: 401 without it.
async fn writes_need_token(State(gw): State<Arc<Gateway>>, req: Request, next: Next) -> Response {
    let reads = [http::Method::GET, http::Method::HEAD, http::Method::OPTIONS];
    let data = data_services().any(|(s, _)| req.uri().path().starts_with(s.prefix));
    if !data || reads.contains(req.method()) {
        return next.run(req).await;
    }
    if crate::auth::authorized(
        req.headers().get(http::header::AUTHORIZATION),
        &gw.parts.token,
    ) {
        return next.run(req).await;
    }
    (
        StatusCode::UNAUTHORIZED,
        [(http::header::WWW_AUTHENTICATE, "Bearer")],
        Json(serde_json::json!({
            "error": "writes need Authorization: Bearer <token> (the fleet's token, FLEET_TOKEN)"
        })),
    )
        .into_response()
}

/// Answers only requests for one of the gateway's host names (its `Host`, and the
/// authority of an absolute-form target when there is one): 421 for another (a page
/// on another site that rebinds its name to this address cannot use the gateway), 400
/// without one.
async fn known_host(State(gw): State<Arc<Gateway>>, req: Request, next: Next) -> Response {
    let host = req.headers().get(http::header::HOST).map(|h| h.as_bytes());
    let authority = req.uri().authority().map(|a| a.as_str().as_bytes());
    let known = |name: &[u8]| {
        gw.parts
            .hosts
            .iter()
            .any(|h| h.as_bytes().eq_ignore_ascii_case(name))
    };
    match (host, authority) {
        (None, None) => (
            StatusCode::BAD_REQUEST,
            Json(serde_json::json!({ "error": "a request needs a Host header" })),
        )
            .into_response(),
        (h, a) if h.is_none_or(known) && a.is_none_or(known) => next.run(req).await,
        _ => (
            StatusCode::MISDIRECTED_REQUEST,
            Json(serde_json::json!({
                "error": "this gateway does not answer to that host name; add it with --host NAME"
            })),
        )
            .into_response(),
    }
}

/// The host names a gateway on `port` answers to: `localhost`, `127.0.0.1` and `[::1]`
/// with the port, and each of `extra` as given and with the port (all without a port
/// too when it is 80, as clients leave the default port out).
pub fn host_names(port: u16, extra: &[String]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for name in ["localhost", "127.0.0.1", "[::1]"]
        .into_iter()
        .map(str::to_owned)
        .chain(extra.iter().map(|n| n.to_ascii_lowercase()))
    {
        names.push(format!("{name}:{port}"));
        if port == 80 || extra.iter().any(|e| e.eq_ignore_ascii_case(&name)) {
            names.push(name);
        }
    }
    names.sort();
    names.dedup();
    names
}

impl Gateway {
    /// Sends `req` through the balancer of service number `i`.
    async fn forward(&self, i: usize, req: Request) -> Response {
        let timeout = self.parts.body_timeout;
        match self.parts.services.get(i).map(|s| &s.backend) {
            Some(Backend::Data { balancer, .. }) => forward(balancer.clone(), req, timeout).await,
            Some(Backend::Autoscaled { balancer, .. }) => {
                forward(balancer.clone(), req, timeout).await
            }
            None => StatusCode::NOT_FOUND.into_response(),
        }
    }
}

/// Sends `req` through `svc` once its body (at most 1 MiB) has arrived, within
/// `body_timeout` (408 after it); the answer's body streams back.
async fn forward<S>(svc: S, req: Request, body_timeout: Duration) -> Response
where
    S: Service<http::Request<Full<Bytes>>, Response = http::Response<Incoming>, Error = BoxError>,
{
    let (parts, body) = req.into_parts();
    let body = match tokio::time::timeout(body_timeout, axum::body::to_bytes(body, 1 << 20)).await {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => {
            return (
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body over 1 MiB or broken: {e}"),
            )
                .into_response()
        }
        Err(_) => {
            return (
                StatusCode::REQUEST_TIMEOUT,
                [(http::header::CONNECTION, "close")],
                format!("the request body did not arrive within {body_timeout:?}"),
            )
                .into_response()
        }
    };
    match svc
        .oneshot(http::Request::from_parts(parts, Full::new(body)))
        .await
    {
        Ok(res) => res.map(axum::body::Body::new),
        Err(e) => {
            let code = if e.downcast_ref::<NoReadyEndpoints>().is_some() {
                StatusCode::SERVICE_UNAVAILABLE
            } else {
                StatusCode::BAD_GATEWAY
            };
            (code, Json(serde_json::json!({ "error": e.to_string() }))).into_response()
        }
    }
}
