//! A fleet on one machine: three instances of a service, a front with a two-tier cache,
//! health probes, a health monitor, and two instances going down under load.
//!
//! ```sh
//! cargo run --release -p examples --example fleet [-- --port 3000] [--serve] [--load ramp --duration 30s]
//! ```
//!
//! `--load ramp|step|spike --duration 30s` drives the training service with that load
//! shape (open loop, up to 300 requests/s) instead of the built-in burst, and prints
//! requests, failures, p50/p99 and the scaling actions at the end.
//!
//! With `--serve` the gateway (orchestrator API and training routes) stays up after
//! the demonstration until Ctrl-C, the autoscaler evaluating every 10 s. The bearer
//! token for scaling is `FLEET_TOKEN`, or one generated and printed at start.
//!
//! Everything runs on 127.0.0.1 with real sockets:
//!
//! - three `budget` instances, each a hyper server with startup and readiness probes,
//!   `/health/*` endpoints and graceful shutdown, answering `/api/budget/<id>` after a
//!   simulated 15 ms of work;
//! - a `HealthMonitor` checking each instance's `/health/ready`;
//! - a front `CacheLayer` (memory tier, then an LMDB disk tier in a temp dir) over
//!   tower-balance-ext's latency-aware `Balancer`, whose endpoints are pooled clients behind
//!   readiness gates that follow the monitor (GETs that fail are retried on another
//!   instance);
//! - a load of Zipf-distributed requests from concurrent workers, in two phases: all
//!   instances up, then one drained gracefully and one killed outright.
//!
//! - then a `training` service autoscaled by tower-autoscale: instances are child
//!   processes of this same binary (`fleet --role training --port N`), inserted into a
//!   balancer once ready, drained before they stop; a burst of load scales it up, the
//!   quiet after it scales it down, every decision printed with its reason; a gateway on
//!   127.0.0.1:3000 (`--port`) serves `/api/v1/training/*` through that balancer and
//!   the orchestrator API (`POST /api/v1/system/scale/{service}/{up|down}` with the
//!   token, `GET /api/v1/system/scaling-status`, `GET /api/v1/system/load-distribution`).
//!
//! It prints, per phase, requests, errors, latency percentiles and the cache hit ratio,
//! how fast the monitor noticed each instance going down, the balancer's spread, and the
//! autoscaler's decisions, and exits.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::response::IntoResponse;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tower::{service_fn, Service, ServiceBuilder, ServiceExt};
use tower_balance_ext::{discover, BalancerBuilder, HttpEndpoint, Pick};
use tower_cache::{Cache, CacheLayer, DiskTier, HttpCodec, HttpKey, MemoryTier, StoreSuccessful};
use tower_health::{
    Gate, GracefulServer, HealthEndpoints, HealthMonitor, HealthState, Probe, Probes,
    ReadinessLayer, Target,
};
use tower_layer::Layer;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const INSTANCES: usize = 3;
const WORKERS: usize = 8;
const KEYS: usize = 2_000;
const PHASE: Duration = Duration::from_secs(2);

/// One running instance of the `budget` service.
struct Instance {
    name: String,
    addr: SocketAddr,
    served: Arc<AtomicU64>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

async fn start_instance(n: usize) -> Result<Instance, BoxError> {
    let name = format!("budget-{n}");
    let probes = Probes::new();
    // Startup: a simulated warm-up; readiness: a dependency check that always passes.
    let born = Instant::now();
    probes.register(
        Probe::startup("warm-up", move || {
            let warm = born.elapsed() > Duration::from_millis(300);
            async move {
                if warm {
                    Ok(())
                } else {
                    Err("warming up")
                }
            }
        })
        .period(Duration::from_millis(100))
        .timeout(Duration::from_millis(50))
        .failure_threshold(100),
    )?;
    probes.register(
        Probe::readiness("ledger-db", || async { Ok::<_, String>(()) })
            .period(Duration::from_millis(200))
            .timeout(Duration::from_millis(100)),
    )?;
    probes.start();

    let served = Arc::new(AtomicU64::new(0));
    let endpoints = HealthEndpoints::new(probes.clone());
    let app = service_fn({
        let (name, served) = (name.clone(), served.clone());
        move |req: Request<Incoming>| {
            let (name, served, mut endpoints) = (name.clone(), served.clone(), endpoints.clone());
            async move {
                let path = req.uri().path().to_string();
                if let Some(id) = path.strip_prefix("/api/budget/") {
                    tokio::time::sleep(Duration::from_millis(15)).await;
                    served.fetch_add(1, Ordering::Relaxed);
                    let body = format!(
                        "{{\"id\":\"{id}\",\"limit\":{},\"served_by\":\"{name}\"}}",
                        id.len() * 100
                    );
                    return Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body))));
                }
                endpoints.call(req).await
            }
        }
    });
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop, signal) = oneshot::channel::<()>();
    let server = GracefulServer::new()
        .probes(probes)
        .drain_delay(Duration::from_millis(300))
        .grace(Duration::from_secs(2));
    let task = tokio::spawn(async move {
        let _ = server
            .serve(listener, app, async {
                let _ = signal.await;
            })
            .await;
    });
    Ok(Instance {
        name,
        addr,
        served,
        stop: Some(stop),
        task,
    })
}

/// The balancer over the instances: each endpoint a pooled client for its address behind
/// a readiness gate that follows the monitor's verdict, so an instance that is down or
/// draining is skipped; GETs that fail on one instance are retried on another.
type Balancer = tower_balance_ext::Balancer<
    SocketAddr,
    tower_health::ReadinessService<HttpEndpoint<Full<Bytes>>>,
    Request<Full<Bytes>>,
>;

fn balancer(monitor: &HealthMonitor, instances: &[Instance]) -> Result<Balancer, BoxError> {
    let endpoints = instances.iter().map(|i| {
        let gate = Gate::new(monitor.watch(&i.name).expect("registered above"));
        (
            i.addr,
            ReadinessLayer::pending(gate).layer(HttpEndpoint::<Full<Bytes>>::new(i.addr)),
        )
    });
    Ok(BalancerBuilder::new(Pick::LatencyAware)
        .http()
        .retry_idempotent()
        .build(discover::fixed(endpoints.collect::<Vec<_>>()))?)
}

/// Sends a request through the balancer and buffers the answer for the cache.
async fn upstream(
    bal: Balancer,
    req: Request<Full<Bytes>>,
) -> Result<Response<Full<Bytes>>, BoxError> {
    let res = bal.oneshot(req).await?;
    let (parts, body) = res.into_parts();
    let body = body.collect().await?.to_bytes();
    Ok(Response::from_parts(parts, Full::new(body)))
}

/// Zipf(1.0) sampler over `KEYS` ids.
struct Zipf {
    cdf: Vec<f64>,
    x: u64,
}

impl Zipf {
    fn new(seed: u64) -> Self {
        let mut sum = 0.0;
        let mut cdf: Vec<f64> = (1..=KEYS)
            .map(|i| {
                sum += 1.0 / i as f64;
                sum
            })
            .collect();
        cdf.iter_mut().for_each(|p| *p /= sum);
        Self { cdf, x: seed | 1 }
    }

    fn next(&mut self) -> usize {
        self.x ^= self.x << 13;
        self.x ^= self.x >> 7;
        self.x ^= self.x << 17;
        let u = (self.x >> 11) as f64 / (1u64 << 53) as f64;
        self.cdf.partition_point(|&p| p < u)
    }
}

#[derive(Default)]
struct Phase {
    latencies: Mutex<Vec<Duration>>,
    errors: AtomicU64,
}

async fn load<S>(front: S, phase: Arc<Phase>, worker: u64)
where
    S: Service<Request<Full<Bytes>>, Response = Response<tower_cache::CacheBody<Full<Bytes>>>>
        + Clone,
    S::Error: Send,
{
    let mut zipf = Zipf::new(worker * 7919 + 1);
    let end = Instant::now() + PHASE;
    while Instant::now() < end {
        let req = Request::get(format!("/api/budget/{}", zipf.next()))
            .header(http::header::HOST, "budget")
            .body(Full::default())
            .expect("a valid request");
        let start = Instant::now();
        let ok = match front.clone().oneshot(req).await {
            Ok(res) => res.status() == StatusCode::OK && res.into_body().collect().await.is_ok(),
            Err(_) => false,
        };
        if ok {
            phase.latencies.lock().unwrap().push(start.elapsed());
        } else {
            phase.errors.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn report(name: &str, phase: &Phase, store: &Cache, before: (u64, u64)) {
    let mut l = phase.latencies.lock().unwrap().clone();
    l.sort();
    let pct = |q: f64| {
        l.get(((l.len().max(1) - 1) as f64 * q) as usize)
            .copied()
            .unwrap_or_default()
    };
    let s = store.stats();
    let (hits, reads) = (
        s.memory_hits + s.disk_hits - before.0,
        s.memory_hits + s.disk_hits + s.misses - before.1,
    );
    println!(
        "{name:<24} {:>6} ok {:>4} errors | p50 {:>8.1} us  p99 {:>8.1} us | hit ratio {:>5.1}%",
        l.len(),
        phase.errors.load(Ordering::Relaxed),
        pct(0.5).as_secs_f64() * 1e6,
        pct(0.99).as_secs_f64() * 1e6,
        if reads == 0 {
            0.0
        } else {
            hits as f64 * 100.0 / reads as f64
        },
    );
}

async fn run_phase<S>(front: &S) -> Arc<Phase>
where
    S: Service<Request<Full<Bytes>>, Response = Response<tower_cache::CacheBody<Full<Bytes>>>>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
    S::Error: Send,
{
    let phase = Arc::new(Phase::default());
    let workers: Vec<_> = (0..WORKERS as u64)
        .map(|w| tokio::spawn(load(front.clone(), phase.clone(), w)))
        .collect();
    for w in workers {
        let _ = w.await;
    }
    phase
}

async fn http_get(addr: SocketAddr, path: &str) -> Result<String, BoxError> {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<Bytes>>();
    let res = client.get(format!("http://{addr}{path}").parse()?).await?;
    let body = res.into_body().collect().await?.to_bytes();
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// `--role training --port N`: this process is one training instance.
fn training_port() -> Option<u16> {
    let args: Vec<String> = std::env::args().collect();
    let role = args
        .iter()
        .position(|a| a == "--role")
        .and_then(|i| args.get(i + 1));
    if role.map(String::as_str) != Some("training") {
        return None;
    }
    args.iter()
        .position(|a| a == "--port")
        .and_then(|i| args.get(i + 1))
        .and_then(|p| p.parse().ok())
}

/// A training instance: `/health/*`, and `/api/v1/training/run` taking 40 ms of work.
/// Stops at SIGTERM (the scaler drains it first) or SIGKILL.
async fn run_training(port: u16) -> Result<(), BoxError> {
    let probes = Probes::new();
    probes.register(
        Probe::readiness("model-loaded", || async { Ok::<_, String>(()) })
            .period(Duration::from_millis(100))
            .timeout(Duration::from_millis(50)),
    )?;
    probes.start();
    let endpoints = HealthEndpoints::new(probes.clone());
    let app = service_fn(move |req: Request<Incoming>| {
        let mut endpoints = endpoints.clone();
        async move {
            if req.uri().path().starts_with("/api/v1/training/") {
                tokio::time::sleep(Duration::from_millis(40)).await;
                let body = format!("{{\"trained_by\":{port}}}");
                return Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body))));
            }
            endpoints.call(req).await
        }
    });
    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
    GracefulServer::new()
        .probes(probes)
        .serve(listener, app, std::future::pending::<()>())
        .await?;
    Ok(())
}

/// The training service under the autoscaler: a burst of load, then quiet.
async fn autoscaled_training() -> Result<(), BoxError> {
    use tower_autoscale::{
        Autoscaler, DecisionEngine, LoadSource, Metric, MetricTarget, ProcessConfig, ProcessScaler,
        RateKind, RatePolicy, ScalingManager, ScalingPolicy, ScalingRules, Select,
    };
    let exe = std::env::current_exe()?;
    let base = TcpListener::bind("127.0.0.1:0")
        .await?
        .local_addr()?
        .port()
        .clamp(20_000, 60_000);
    let mut cfg = ProcessConfig::new(
        exe.to_string_lossy(),
        vec![
            "--role".into(),
            "training".into(),
            "--port".into(),
            "{port}".into(),
        ],
        (base, base + 100),
    );
    cfg.check_interval = Duration::from_millis(100);
    cfg.drain_grace = Duration::from_secs(5);
    cfg.stop_timeout = Duration::from_secs(2);
    cfg.warm_up = Duration::ZERO;
    let (scaler, discovery) = ProcessScaler::new(cfg, HttpEndpoint::<Full<Bytes>>::new)?;
    let balancer = BalancerBuilder::new(Pick::LeastConnections)
        .http()
        .ready_timeout(Duration::from_secs(5))
        .build(discovery)?;
    scaler.scale_to(1).await?;
    // Two requests in flight per instance is the target; a demo-sized scale-down window.
    let policy = ScalingPolicy {
        min_instances: 1,
        max_instances: 4,
        metrics: vec![MetricTarget::new(Metric::InFlight, 2.0)],
        scale_down: ScalingRules {
            stabilization_window: Duration::from_secs(2),
            policies: vec![RatePolicy {
                kind: RateKind::Instances,
                value: 1,
                period: Duration::from_secs(1),
            }],
            select: Select::Max,
        },
        warm_up: Duration::ZERO,
        forecast: None,
        panic: Some(tower_autoscale::PanicWindow {
            threshold: 2.0,
            hold: Duration::from_secs(2),
        }),
        ..ScalingPolicy::default()
    };
    let engine = DecisionEngine::new();
    let (s2, stats) = (scaler.clone(), balancer.stats());
    engine.add_service("training", policy, move || s2.sample().or(stats.sample()))?;
    let started = Instant::now();
    engine.on_decision(move |d| {
        if d.action != tower_autoscale::Action::Hold {
            let why = d
                .proposals
                .iter()
                .map(|p| format!("{} {:.1} vs target {}", p.metric, p.value, p.target))
                .collect::<Vec<_>>()
                .join(", ");
            println!(
                "  {:>5.1} s  {:?}: {} -> {} ({why}; rules: {})",
                started.elapsed().as_secs_f64(),
                d.action,
                d.current,
                d.desired,
                if d.reasons.is_empty() {
                    "none".to_string()
                } else {
                    format!("{:?}", d.reasons)
                }
            );
        }
    });
    let manager = ScalingManager::new(engine);
    manager.add_scaler("training", scaler.clone());
    let auto = Autoscaler::spawn(manager.clone(), Duration::from_millis(500));

    // The gateway: the orchestrator API, and /api/v1/training/* through the balancer.
    let token = std::env::var("FLEET_TOKEN")
        .unwrap_or_else(|_| format!("{:016x}{:016x}", random_u64(), random_u64()));
    let loads = std::collections::BTreeMap::from([("training".to_string(), balancer.stats())]);
    let gateway = examples::orchestrator::router(manager.clone(), loads, token.clone()).route(
        "/api/v1/training/{*rest}",
        axum::routing::any({
            let balancer = balancer.clone();
            move |req: axum::extract::Request| {
                let balancer = balancer.clone();
                async move {
                    let (parts, body) = req.into_parts();
                    let body = match axum::body::to_bytes(body, 1 << 20).await {
                        Ok(b) => b,
                        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
                    };
                    match balancer
                        .oneshot(Request::from_parts(parts, Full::new(body)))
                        .await
                    {
                        Ok(res) => res.map(axum::body::Body::new).into_response(),
                        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
                    }
                }
            }
        }),
    );
    let wanted = gateway_addr();
    let listener = match TcpListener::bind(wanted).await {
        Ok(l) => l,
        Err(e) => {
            println!("gateway: {wanted} is taken ({e}); using a free port instead");
            TcpListener::bind("127.0.0.1:0").await?
        }
    };
    let gw = listener.local_addr()?;
    let gateway_task = tokio::spawn(async move { axum::serve(listener, gateway).await });
    println!(
        "\ngateway on http://{gw}: /api/v1/training/*, /api/v1/system/scaling-status, /api/v1/system/load-distribution; POST /api/v1/system/scale/training/{{up|down}} with `Authorization: Bearer {token}`"
    );

    let shape = load_shape();
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let latencies: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let mut peak = scaler.current();
    match shape {
        None => {
            println!("\ntraining: 1 instance (a child process of this binary), autoscaled every 0.5 s on requests in flight (target 2 each, 1 to 4 instances); 12 workers for 4 s, then quiet:");
            let end = Instant::now() + Duration::from_secs(4);
            let mut workers = Vec::new();
            for _ in 0..12 {
                let (b, ok, failed, lat) = (
                    balancer.clone(),
                    ok.clone(),
                    failed.clone(),
                    latencies.clone(),
                );
                workers.push(tokio::spawn(async move {
                    while Instant::now() < end {
                        one_training_request(&b, &ok, &failed, &lat).await;
                    }
                }));
            }
            for w in workers {
                let _ = w.await;
            }
            peak = peak.max(scaler.current());
        }
        Some((name, duration)) => {
            println!("\ntraining: --load {name} for {duration:?} (open loop, up to 300 requests/s), autoscaled every 0.5 s (target 2 in flight each, 1 to 4 instances):");
            let start = Instant::now();
            let mut tasks = Vec::new();
            let mut next = Instant::now();
            while start.elapsed() < duration {
                let rate =
                    rate_at(name, start.elapsed().as_secs_f64() / duration.as_secs_f64()).max(1.0);
                next += Duration::from_secs_f64(1.0 / rate);
                tokio::time::sleep_until(next.into()).await;
                let (b, ok, failed, lat) = (
                    balancer.clone(),
                    ok.clone(),
                    failed.clone(),
                    latencies.clone(),
                );
                tasks.push(tokio::spawn(async move {
                    one_training_request(&b, &ok, &failed, &lat).await
                }));
                peak = peak.max(scaler.current());
            }
            for t in tasks {
                let _ = t.await;
            }
        }
    }
    // The orchestrator API while the fleet runs.
    let status = http_get(gw, "/api/v1/system/load-distribution").await?;
    println!(
        "  GET /api/v1/system/load-distribution -> {}",
        status.chars().take(160).collect::<String>()
    );
    tokio::time::sleep(Duration::from_secs(6)).await;
    auto.stop().await;
    let mut lat = latencies.lock().unwrap().clone();
    lat.sort();
    let pct = |q: f64| {
        lat.get(((lat.len().max(1) - 1) as f64 * q) as usize)
            .copied()
            .unwrap_or_default()
    };
    println!(
        "training: {} requests, {} failed, p50 {:?}, p99 {:?}; peak {peak} instances, {} now; {} restarts",
        ok.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
        pct(0.5),
        pct(0.99),
        scaler.current(),
        scaler.restarts()
    );
    for d in scaler.instance_details() {
        println!(
            "  instance on port {} (pid {:?}): {:?}",
            d.port, d.pid, d.state
        );
    }
    let actions = manager
        .history()
        .iter()
        .filter(|e| matches!(e, tower_autoscale::AuditEntry::Action { .. }))
        .count();
    println!(
        "  audit history: {} entries, {actions} scaling actions",
        manager.history().len()
    );
    if std::env::args().any(|a| a == "--serve") {
        println!("serving the gateway on http://{gw} until Ctrl-C (the autoscaler keeps running)");
        let auto = Autoscaler::spawn(manager.clone(), Duration::from_secs(10));
        let _ = tokio::signal::ctrl_c().await;
        auto.stop().await;
    }
    gateway_task.abort();
    scaler.shutdown().await;
    Ok(())
}

/// One request to the training service through its balancer, counted and timed.
async fn one_training_request<S>(
    b: &S,
    ok: &AtomicU64,
    failed: &AtomicU64,
    lat: &Mutex<Vec<Duration>>,
) where
    S: Service<Request<Full<Bytes>>, Response = Response<Incoming>> + Clone,
{
    let req = Request::get("/api/v1/training/run")
        .body(Full::new(Bytes::new()))
        .expect("a valid request");
    let start = Instant::now();
    match b.clone().oneshot(req).await {
        Ok(res) if res.status() == StatusCode::OK => {
            let _ = res.into_body().collect().await;
            ok.fetch_add(1, Ordering::Relaxed);
            lat.lock().unwrap().push(start.elapsed());
        }
        _ => {
            failed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// `--load ramp|step|spike` and `--duration Ns` (default 30 s).
fn load_shape() -> Option<(&'static str, Duration)> {
    let args: Vec<String> = std::env::args().collect();
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let name = match value("--load")?.as_str() {
        "ramp" => "ramp",
        "step" => "step",
        "spike" => "spike",
        other => {
            eprintln!("--load {other}: give ramp, step or spike; running the built-in burst");
            return None;
        }
    };
    let secs = value("--duration")
        .and_then(|d| d.trim_end_matches('s').parse::<u64>().ok())
        .unwrap_or(30)
        .clamp(1, 3600);
    Some((name, Duration::from_secs(secs)))
}

/// Requests per second at fraction `x` of the run: a ramp from 10 to 300, a step from
/// 20 to 250 at the middle, or 20 with a spike of 300 in the middle third.
fn rate_at(shape: &str, x: f64) -> f64 {
    match shape {
        "ramp" => 10.0 + 290.0 * x,
        "step" => {
            if x < 0.5 {
                20.0
            } else {
                250.0
            }
        }
        _ => {
            if (1.0 / 3.0..2.0 / 3.0).contains(&x) {
                300.0
            } else {
                20.0
            }
        }
    }
}

/// `--port N` (default 3000) on 127.0.0.1.
fn gateway_addr() -> SocketAddr {
    let args: Vec<String> = std::env::args().collect();
    let port = args
        .iter()
        .position(|a| a == "--port")
        .and_then(|i| args.get(i + 1))
        .and_then(|p| p.parse().ok())
        .unwrap_or(3000);
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A random number from the OS's hasher seeds (no extra dependency for a token).
fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish()
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    if let Some(port) = training_port() {
        return run_training(port).await;
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error")),
        )
        .init();

    let mut instances = Vec::new();
    for n in 1..=INSTANCES {
        instances.push(start_instance(n).await?);
    }
    let monitor = HealthMonitor::new();
    for i in &instances {
        monitor.register(Target::new(&i.name, i.addr.to_string()).path("/health/ready"))?;
    }
    let downs: Arc<Mutex<Vec<(String, Instant)>>> = Arc::default();
    monitor.on_health_change({
        let downs = downs.clone();
        move |t, _was| {
            if t.state == HealthState::Unhealthy {
                downs.lock().unwrap().push((t.name.clone(), Instant::now()));
            }
        }
    });
    println!("fleet: {INSTANCES} budget instances on 127.0.0.1, waiting for them to be ready");
    let ready_by = Instant::now() + Duration::from_secs(10);
    while !instances
        .iter()
        .all(|i| monitor.is_ready_for_traffic(&i.name))
    {
        if Instant::now() > ready_by {
            return Err(format!("instances not ready: {:?}", monitor.all_health()).into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for h in monitor.all_health() {
        println!("  {} at {} is {:?}", h.name, h.url, h.state);
    }

    let cache_dir = tempfile::tempdir()?;
    let store = Cache::new(MemoryTier::builder().max_entries(200).build()?).with_disk(
        DiskTier::builder(cache_dir.path())
            .map_size(64 << 20)
            .open()?,
    );
    let bal = balancer(&monitor, &instances)?;
    let front = ServiceBuilder::new()
        .layer(
            CacheLayer::new(
                store.clone(),
                HttpKey,
                HttpCodec::default(),
                Duration::from_secs(30),
            )?
            .store_policy(StoreSuccessful),
        )
        .service(service_fn({
            let bal = bal.clone();
            move |req| upstream(bal.clone(), req)
        }));

    println!("\nload: {WORKERS} workers, Zipf(1.0) over {KEYS} ids, {PHASE:?} per phase; memory tier 200 entries, disk tier below it");
    let before = (0, 0);
    let p1 = run_phase(&front).await;
    report("all instances up", &p1, &store, before);
    let s = store.stats();
    let before = (
        s.memory_hits + s.disk_hits,
        s.memory_hits + s.disk_hits + s.misses,
    );

    // budget-1 is drained gracefully, budget-2 is killed outright.
    let went_down = Instant::now();
    if let Some(stop) = instances[0].stop.take() {
        let _ = stop.send(());
    }
    instances[1].task.abort();
    let p2 = run_phase(&front).await;
    report("one drained, one killed", &p2, &store, before);

    println!("\nhealth monitor:");
    for (name, at) in downs
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, at)| *at >= went_down)
    {
        println!(
            "  {name} marked unhealthy {:.0} ms after it went down",
            at.duration_since(went_down).as_secs_f64() * 1e3
        );
    }
    for h in monitor.all_health() {
        println!(
            "  {} is {:?} ({} checks, last error: {})",
            h.name,
            h.state,
            h.checks,
            h.last_error.as_deref().unwrap_or("none")
        );
    }
    println!("\norigin calls per instance:");
    for i in &instances {
        println!("  {}: {}", i.name, i.served.load(Ordering::Relaxed));
    }
    let load = bal.stats().snapshot();
    println!(
        "\nbalancer (latency-aware, health-gated): {} requests, {} retried on another instance, {} failed for want of a ready one",
        load.requests, load.retries, load.no_ready_endpoints
    );
    for e in &load.endpoints {
        println!(
            "  {}: {:.0}% of requests, {} errors, p50 {:?}, p99 {:?}, last seen {:?}",
            e.name,
            e.share * 100.0,
            e.errors,
            e.p50,
            e.p99,
            e.state
        );
    }
    let s = store.stats();
    let d = s.disk.unwrap_or_default();
    println!(
        "\ncache: {} memory hits, {} disk hits, {} misses, {} origin loads ({} failed), {} evictions from memory; disk: {} entries, {} bytes stored ({:.1}x compression), {} group commits for {} writes",
        s.memory_hits, s.disk_hits, s.misses, s.loads, s.load_errors, s.memory.evictions,
        d.entries, d.stored_bytes, d.compression_ratio(), d.write_batches, d.writes
    );

    for i in &mut instances {
        if let Some(stop) = i.stop.take() {
            let _ = stop.send(());
        }
    }
    for i in instances {
        let _ = tokio::time::timeout(Duration::from_secs(5), i.task).await;
    }
    autoscaled_training().await?;
    Ok(())
}
