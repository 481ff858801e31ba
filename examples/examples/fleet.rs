//! A fleet on one machine: three instances of a service, a front with a two-tier cache,
//! health probes, a health monitor, and two instances going down under load.
//!
//! ```sh
//! cargo run --release -p examples --example fleet
//! ```
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
//! It prints, per phase, requests, errors, latency percentiles and the cache hit ratio,
//! then how fast the monitor noticed each instance going down, and exits.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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

#[tokio::main]
async fn main() -> Result<(), BoxError> {
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
    Ok(())
}
