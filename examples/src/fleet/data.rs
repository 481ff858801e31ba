//! The fleet's data services, `budget` and `reports`: each an axum app on its own loopback socket with startup and
//! readiness probes, `/health/*` endpoints, a two-tier cache (memory 500 entries for at
//! most 5 s, LMDB on disk for 60 s) and a [`Coordinator`] on the fleet's bus.
//!
//! Both read one in-process [`Db`] (the origin: each read takes `origin_latency`). Keys:
//!
//! | key | held by | from |
//! | --- | --- | --- |
//! | `user:{id}` | budget | the user's record |
//! | `provider:{name}` | budget, reports | the provider's rate |
//! | `report:user:{id}` | reports | user and rates; depends on `user:{id}` and every `provider:*` |
//! | `ratelimit:user:{id}` | gateway | the user's rate limit; depends on `user:{id}` |
//!
//! A write through either service invalidates the other's entries over the bus: `PUT
//! /api/v1/budget/users/{id}` invalidates `user:{id}` everywhere (and, on each node, what
//! depends on it: the report, the gateway's rate limit); `PUT
//! /api/v1/reports/providers/{name}` invalidates `provider:{name}` everywhere (budget
//! subscribes to `provider:*` and counts what reaches it).

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tower_cache::coordinator::{Coordinator, InProcessBus};
use tower_cache::{Cache, DiskTier, MemoryTier};
use tower_health::{HealthEndpoints, Probe, Probes};

use super::services::{DataSpec, ServiceSpec};
use super::BoxError;

/// How long the data services keep an entry on disk (60 s).
pub const DISK_TTL: Duration = Duration::from_secs(60);
/// How long they keep it in memory (5 s).
pub const MEMORY_TTL: Duration = Duration::from_secs(5);
/// Entries in their memory tiers (500).
pub const MEMORY_ENTRIES: u64 = 500;
/// The largest budget or amount spent a write may set.
pub const MAX_AMOUNT: f64 = 1e12;
/// The largest rate limit a write may give a user, in requests a second (a user's
/// limit is at least 1).
pub const MAX_RATE_LIMIT: u32 = 1_000_000;
/// The largest provider rate a write may set.
pub const MAX_PROVIDER_RATE: f64 = 1e6;
/// Users in the database.
pub const USERS: u64 = 10_000;
/// The providers, with their starting rates.
pub const PROVIDERS: [(&str, f64); 4] = [
    ("anthropic", 3.0),
    ("openai", 2.5),
    ("mistral", 0.8),
    ("google", 1.2),
];

/// One user's record.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct User {
    /// The user's id.
    pub id: u64,
    /// Monthly budget.
    pub limit: f64,
    /// Spent so far.
    pub spent: f64,
    /// Requests a second the gateway lets this user make.
    pub rate_limit: u32,
}

/// The origin both services read: users and provider rates, each read taking
/// `latency` (a database round trip).
#[derive(Debug)]
pub struct Db {
    users: RwLock<HashMap<u64, User>>,
    providers: RwLock<HashMap<String, f64>>,
    latency: Duration,
    reads: AtomicU64,
}

impl Db {
    /// The starting data: [`USERS`] users and the [`PROVIDERS`].
    pub fn new(latency: Duration) -> Arc<Self> {
        let users = (0..USERS)
            .map(|id| {
                (
                    id,
                    User {
                        id,
                        limit: 100.0 + (id % 50) as f64 * 10.0,
                        spent: (id % 97) as f64,
                        rate_limit: 1_000,
                    },
                )
            })
            .collect();
        let providers = PROVIDERS.iter().map(|(n, r)| (n.to_string(), *r)).collect();
        Arc::new(Self {
            users: RwLock::new(users),
            providers: RwLock::new(providers),
            latency,
            reads: AtomicU64::new(0),
        })
    }

    /// Reads the origin has served.
    pub fn reads(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }

    async fn read(&self) {
        self.reads.fetch_add(1, Ordering::Relaxed);
        if !self.latency.is_zero() {
            tokio::time::sleep(self.latency).await;
        }
    }

    /// One user, after a database round trip.
    pub async fn user(&self, id: u64) -> Option<User> {
        self.read().await;
        self.users
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .cloned()
    }

    /// One provider's rate, after a database round trip.
    pub async fn provider(&self, name: &str) -> Option<f64> {
        self.read().await;
        self.providers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .copied()
    }

    /// Every provider's rate, after a database round trip.
    pub async fn providers(&self) -> Vec<(String, f64)> {
        self.read().await;
        let mut all: Vec<_> = self
            .providers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(n, r)| (n.clone(), *r))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    fn update_user(&self, id: u64, change: &UserChange) -> Option<User> {
        let mut users = self.users.write().unwrap_or_else(|e| e.into_inner());
        let u = users.get_mut(&id)?;
        if let Some(limit) = change.limit {
            u.limit = limit;
        }
        if let Some(spent) = change.spent {
            u.spent = spent;
        }
        if let Some(rate) = change.rate_limit {
            u.rate_limit = rate;
        }
        Some(u.clone())
    }

    fn set_provider(&self, name: &str, rate: f64) -> bool {
        let mut p = self.providers.write().unwrap_or_else(|e| e.into_inner());
        match p.get_mut(name) {
            Some(r) => {
                *r = rate;
                true
            }
            None => false,
        }
    }
}

/// The bus the fleet's coordinators share.
#[derive(Debug, Clone)]
pub enum FleetBus {
    /// In this process (the default).
    InProcess(InProcessBus),
    /// Redis pub/sub at this URL (`--bus redis://HOST:PORT`).
    Redis(String),
}

impl FleetBus {
    /// `redis://...` or the in-process bus.
    pub fn from_flag(flag: Option<&str>) -> Result<Self, String> {
        match flag {
            None | Some("memory") | Some("in-process") => Ok(Self::InProcess(InProcessBus::new())),
            Some(url) if url.starts_with("redis://") => {
                if cfg!(feature = "redis") {
                    Ok(Self::Redis(url.to_string()))
                } else {
                    Err(format!(
                        "--bus {url}: this build has no Redis bus; rebuild with --features redis"
                    ))
                }
            }
            Some(other) => Err(format!(
                "--bus {other}: give redis://HOST:PORT, or leave it out for the in-process bus"
            )),
        }
    }

    /// A coordinator for `cache` on this bus.
    pub fn coordinator(
        &self,
        cache: Cache,
        node: u64,
        secret: &[u8],
    ) -> Result<Coordinator, BoxError> {
        match self {
            Self::InProcess(bus) => Ok(Coordinator::builder(cache, bus.clone())
                .node_id(node)
                .secret(secret)
                .start()?),
            #[cfg(feature = "redis")]
            Self::Redis(url) => {
                let bus = tower_cache::coordinator::RedisBus::connect(url, "fleet-invalidations")?;
                Ok(Coordinator::builder(cache, bus)
                    .node_id(node)
                    .secret(secret)
                    .start()?)
            }
            #[cfg(not(feature = "redis"))]
            Self::Redis(_) => {
                Err("this build has no Redis bus; rebuild with --features redis".into())
            }
        }
    }

    /// "in-process" or the Redis URL.
    pub fn describe(&self) -> String {
        match self {
            Self::InProcess(_) => "in-process".into(),
            Self::Redis(url) => format!("Redis at {url}"),
        }
    }
}

/// A two-tier cache: memory `entries` for at most `memory_ttl`, LMDB under
/// `dir` (entries written for their full TTL there).
pub fn tiered_cache(dir: &Path, entries: u64, memory_ttl: Duration) -> Result<Cache, BoxError> {
    std::fs::create_dir_all(dir)
        .map_err(|e| format!("cannot create the cache directory {}: {e}", dir.display()))?;
    Ok(Cache::new(
        MemoryTier::builder()
            .max_entries(entries)
            .max_ttl(memory_ttl)
            .build()?,
    )
    .with_disk(DiskTier::builder(dir).map_size(256 << 20).open()?))
}

/// On every invalidation of a key matching `pattern` (local or from the bus), also
/// removes what depends on that key in `cache` (dependencies are recorded per node).
pub fn cascade_dependents(cache: &Cache, pattern: &str) -> Result<(), BoxError> {
    let busy: Arc<Mutex<HashSet<String>>> = Arc::default();
    let store = cache.clone();
    cache.on_invalidate(pattern, move |key| {
        // The cascade names `key` again when it is done; skip that echo.
        if !busy
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.to_owned())
        {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            busy.lock().unwrap_or_else(|e| e.into_inner()).remove(key);
            return;
        };
        let (store, busy, key) = (store.clone(), busy.clone(), key.to_owned());
        rt.spawn(async move {
            if let Err(e) = store.invalidate_with_dependents(&key).await {
                tracing::warn!(error = %e, key, "cascading an invalidation failed");
            }
            busy.lock().unwrap_or_else(|e| e.into_inner()).remove(&key);
        });
    })?;
    Ok(())
}

/// A running data service.
#[derive(Debug)]
pub struct DataService {
    /// Which one: its entry in the fleet's table of services.
    pub spec: &'static ServiceSpec,
    /// Its address on 127.0.0.1.
    pub addr: SocketAddr,
    /// Its cache (`None` when started without one, for the figures).
    pub cache: Option<Cache>,
    /// Its coordinator on the fleet's bus.
    pub coordinator: Option<Coordinator>,
    /// Invalidations that reached it of the keys its [`DataSpec::counts_invalidations`]
    /// names (budget's subscription to `provider:*`).
    pub provider_invalidations: Arc<AtomicU64>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

/// What a data service's handlers share: the origin, its cache and its coordinator.
#[derive(Debug)]
pub struct DataState {
    db: Arc<Db>,
    cache: Option<Cache>,
    coordinator: Option<Coordinator>,
}

impl DataService {
    /// Starts the data service `spec` describes (`data`: its data settings) on a free
    /// loopback port with its cache under `dir` (or none), its coordinator on `bus`.
    pub async fn start(
        spec: &'static ServiceSpec,
        data: &DataSpec,
        db: Arc<Db>,
        dir: Option<&Path>,
        bus: &FleetBus,
        secret: &[u8],
    ) -> Result<Self, BoxError> {
        let (cache, coordinator) = match dir {
            Some(dir) => {
                let cache = tiered_cache(&dir.join(spec.name), MEMORY_ENTRIES, MEMORY_TTL)?;
                let coord = bus.coordinator(cache.clone(), data.node, secret)?;
                // What depends on a user or a rate goes with it, wherever the
                // invalidation began.
                cascade_dependents(&cache, "user:*")?;
                cascade_dependents(&cache, "provider:*")?;
                (Some(cache), Some(coord))
            }
            None => (None, None),
        };
        let provider_invalidations = Arc::new(AtomicU64::new(0));
        if let (Some(pattern), Some(cache)) = (data.counts_invalidations, &cache) {
            // Subscribed to the invalidations of `pattern` (budget: every provider's).
            let (seen, name) = (provider_invalidations.clone(), spec.name);
            cache.on_invalidate(pattern, move |key| {
                seen.fetch_add(1, Ordering::Relaxed);
                tracing::info!(key, service = name, "invalidation received");
            })?;
        }
        let probes = Probes::new();
        let startup_cache = cache.clone();
        probes.register(
            Probe::startup("cache-open", move || {
                let ok = startup_cache.as_ref().is_none_or(|c| c.disk().is_some());
                async move {
                    if ok {
                        Ok(())
                    } else {
                        Err("disk tier not open")
                    }
                }
            })
            .period(Duration::from_millis(100))
            .timeout(Duration::from_millis(100)),
        )?;
        probes.register(
            Probe::readiness("db", || async { Ok::<_, String>(()) })
                .period(Duration::from_millis(200))
                .timeout(Duration::from_millis(100)),
        )?;
        probes.start();
        let app = Arc::new(DataState {
            db,
            cache: cache.clone(),
            coordinator: coordinator.clone(),
        });
        let routes = (data.routes)()
            .with_state(app)
            .route_service("/health", HealthEndpoints::new(probes.clone()))
            .route_service("/health/{probe}", HealthEndpoints::new(probes.clone()));
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (stop, signal) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let server = tower_health::GracefulServer::new()
                .probes(probes)
                .drain_delay(Duration::from_millis(100))
                .grace(Duration::from_secs(2));
            if let Err(e) = server
                .serve(listener, routes, async {
                    let _ = signal.await;
                })
                .await
            {
                tracing::error!(error = %e, "data service stopped");
            }
        });
        Ok(Self {
            spec,
            addr,
            cache,
            coordinator,
            provider_invalidations,
            stop: Some(stop),
            task,
        })
    }

    /// Stops it, letting requests in flight finish.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), &mut self.task).await;
    }
}

/// Budget's routes: users (read and write) and provider rates (read).
pub fn budget_routes() -> Router<Arc<DataState>> {
    Router::new()
        .route("/api/v1/budget/users/{id}", get(get_user).put(put_user))
        .route("/api/v1/budget/providers/{name}", get(get_provider))
}

/// Reports' routes: per-user reports (read) and provider rates (read and write).
pub fn reports_routes() -> Router<Arc<DataState>> {
    Router::new()
        .route("/api/v1/reports/users/{id}", get(get_report))
        .route(
            "/api/v1/reports/providers/{name}",
            get(get_provider).put(put_provider),
        )
}

fn json_bytes<T: Serialize>(v: &T) -> Bytes {
    Bytes::from(serde_json::to_vec(v).unwrap_or_default())
}

fn answer(bytes: Bytes) -> Response {
    ([(http::header::CONTENT_TYPE, "application/json")], bytes).into_response()
}

fn failure(code: StatusCode, message: impl Into<String>) -> Response {
    (code, Json(serde_json::json!({ "error": message.into() }))).into_response()
}

#[derive(Debug)]
struct NotFound(String);

impl std::fmt::Display for NotFound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Read through the cache when there is one.
async fn cached<F>(app: &DataState, key: &str, load: F) -> Result<Bytes, NotFound>
where
    F: std::future::Future<Output = Result<Bytes, NotFound>>,
{
    match &app.cache {
        Some(c) => c.get_or_load(key, DISK_TTL, load).await,
        None => load.await,
    }
}

fn parse_id(id: &str) -> Result<u64, Box<Response>> {
    id.parse::<u64>().map_err(|_| {
        Box::new(failure(
            StatusCode::BAD_REQUEST,
            format!("user id `{id}` is not a number"),
        ))
    })
}

async fn get_user(State(app): State<Arc<DataState>>, UrlPath(id): UrlPath<String>) -> Response {
    let id = match parse_id(&id) {
        Ok(id) => id,
        Err(r) => return *r,
    };
    let db = app.db.clone();
    match cached(&app, &format!("user:{id}"), async move {
        db.user(id)
            .await
            .map(|u| json_bytes(&u))
            .ok_or_else(|| NotFound(format!("no user {id}")))
    })
    .await
    {
        Ok(b) => answer(b),
        Err(e) => failure(StatusCode::NOT_FOUND, e.0),
    }
}

/// A change to a user's record; absent fields stay as they are.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserChange {
    /// New monthly budget.
    pub limit: Option<f64>,
    /// New amount spent.
    pub spent: Option<f64>,
    /// New requests-per-second limit at the gateway.
    pub rate_limit: Option<u32>,
}

async fn put_user(
    State(app): State<Arc<DataState>>,
    UrlPath(id): UrlPath<String>,
    body: Bytes,
) -> Response {
    let id = match parse_id(&id) {
        Ok(id) => id,
        Err(r) => return *r,
    };
    let change: UserChange = match serde_json::from_slice(&body) {
        Ok(c) => c,
        Err(e) => {
            return failure(
                StatusCode::BAD_REQUEST,
                format!("give a JSON object with limit, spent or rate_limit: {e}"),
            )
        }
    };
    if [change.limit, change.spent]
        .iter()
        .flatten()
        .any(|v| !(0.0..=MAX_AMOUNT).contains(v))
    {
        return failure(
            StatusCode::BAD_REQUEST,
            format!("limit and spent must be numbers from 0 to {MAX_AMOUNT:e}"),
        );
    }
    if change
        .rate_limit
        .is_some_and(|r| !(1..=MAX_RATE_LIMIT).contains(&r))
    {
        return failure(
            StatusCode::BAD_REQUEST,
            format!("rate_limit must be from 1 to {MAX_RATE_LIMIT} requests/s"),
        );
    }
    let Some(user) = app.db.update_user(id, &change) else {
        return failure(StatusCode::NOT_FOUND, format!("no user {id}"));
    };
    let key = format!("user:{id}");
    let version = match &app.coordinator {
        Some(c) => match c.invalidate(&key).await {
            Ok(done) => Some(done.version),
            Err(e) => {
                return failure(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("written, but the invalidation failed: {e}"),
                )
            }
        },
        None => None,
    };
    Json(serde_json::json!({ "user": user, "invalidated": key, "version": version }))
        .into_response()
}

async fn get_provider(
    State(app): State<Arc<DataState>>,
    UrlPath(name): UrlPath<String>,
) -> Response {
    let db = app.db.clone();
    let n = name.clone();
    match cached(&app, &format!("provider:{name}"), async move {
        db.provider(&n)
            .await
            .map(|rate| json_bytes(&serde_json::json!({ "provider": n, "rate": rate })))
            .ok_or_else(|| NotFound(format!("no provider `{n}`")))
    })
    .await
    {
        Ok(b) => answer(b),
        Err(e) => failure(StatusCode::NOT_FOUND, e.0),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RateChange {
    rate: f64,
}

async fn put_provider(
    State(app): State<Arc<DataState>>,
    UrlPath(name): UrlPath<String>,
    body: Bytes,
) -> Response {
    let change: RateChange = match serde_json::from_slice(&body) {
        Ok(c) => c,
        Err(e) => {
            return failure(
                StatusCode::BAD_REQUEST,
                format!("give a JSON object {{\"rate\": number}}: {e}"),
            )
        }
    };
    if !(0.0..=MAX_PROVIDER_RATE).contains(&change.rate) {
        return failure(
            StatusCode::BAD_REQUEST,
            format!("rate must be a number from 0 to {MAX_PROVIDER_RATE}"),
        );
    }
    if !app.db.set_provider(&name, change.rate) {
        return failure(StatusCode::NOT_FOUND, format!("no provider `{name}`"));
    }
    let key = format!("provider:{name}");
    if let Some(c) = &app.coordinator {
        if let Err(e) = c.invalidate(&key).await {
            return failure(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("written, but the invalidation failed: {e}"),
            );
        }
    }
    Json(serde_json::json!({ "provider": name, "rate": change.rate, "invalidated": key }))
        .into_response()
}

async fn get_report(State(app): State<Arc<DataState>>, UrlPath(id): UrlPath<String>) -> Response {
    let id = match parse_id(&id) {
        Ok(id) => id,
        Err(r) => return *r,
    };
    let key = format!("report:user:{id}");
    let db = app.db.clone();
    let (cache, k) = (app.cache.clone(), key.clone());
    match cached(&app, &key, async move {
        // A user that does not exist gets no report, and leaves no dependency behind.
        if db.user(id).await.is_none() {
            return Err(NotFound(format!("no user {id}")));
        }
        if let Some(cache) = cache {
            // Recorded on a miss, before the reads of the values: an invalidation of
            // the user or a rate after this point removes the report, or stops this fill.
            let on = std::iter::once(format!("user:{id}"))
                .chain(PROVIDERS.iter().map(|(n, _)| format!("provider:{n}")));
            for depends_on in on {
                if let Err(e) = cache.register_entry_dependency(&k, &depends_on).await {
                    tracing::warn!(error = %e, "cannot record a dependency");
                }
            }
        }
        let user = db
            .user(id)
            .await
            .ok_or_else(|| NotFound(format!("no user {id}")))?;
        let rates = db.providers().await;
        let cost: Vec<_> = rates
            .iter()
            .map(|(n, r)| serde_json::json!({ "provider": n, "cost": user.spent * r }))
            .collect();
        Ok(json_bytes(&serde_json::json!({
            "user": id,
            "limit": user.limit,
            "spent": user.spent,
            "remaining": user.limit - user.spent,
            "by_provider": cost,
        })))
    })
    .await
    {
        Ok(b) => answer(b),
        Err(e) => failure(StatusCode::NOT_FOUND, e.0),
    }
}
