//! A load balancer to run: an HTTP/1.1 reverse proxy (`tower_balance_ext::forward`) over
//! a balancer of upstream addresses, with health checks, circuit breakers, idempotent
//! retries, a graceful drain and a stats endpoint.
//!
//! ```sh
//! cargo run --release -p examples --example balance_proxy -- \
//!     --listen 127.0.0.1:8080 --upstream 127.0.0.1:9001,127.0.0.1:9002 \
//!     --pick least-conn --health-path /healthz --admin 127.0.0.1:8081
//! ```
//!
//! - `--pick round-robin|least-conn|latency|hash:HEADER`: how an upstream is chosen;
//!   `hash:HEADER` keeps the requests with the same value of `HEADER` on the same
//!   upstream (Maglev consistent hashing), and refuses requests without it (502).
//! - `--health-path PATH`: each upstream is checked with `GET PATH` (every
//!   `--health-interval`, 2 s by default, by `tower-health`'s monitor); one that fails
//!   three checks in a row takes no traffic until it passes again. Without it, every
//!   upstream counts as healthy and only failures set it aside.
//! - Each upstream has a circuit breaker (5 failures in a row, or half of the last 10 s
//!   once 20 calls were made, open it for 5 s and up to 60 s); 5xx and 429 answers count
//!   as failures. Failed idempotent requests (GET, HEAD, OPTIONS, PUT, DELETE) are retried
//!   once on another upstream, within a retry budget of a fifth of the traffic.
//! - `--admin ADDR`: `GET /stats` answers the balancer's figures as JSON (requests,
//!   errors, retries, latency, each upstream's state and health), `GET /` the same as
//!   text.
//! - Ctrl-C or SIGTERM drains: no new connections, requests in progress finish (up to
//!   `--drain-timeout`), then it exits.
//!
//! What it refuses and what it passes on is `forward`'s: see that module's docs.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use tower_balance_ext::breaker::{CircuitBreaker, CircuitBreakerLayer};
use tower_balance_ext::forward::{self, Exchange, ForwardConfig, Forwarded, Forwarder, Upstream};
use tower_balance_ext::{discover, hash_key, Balancer, BalancerBuilder, LoadStats, Pick};
use tower_health::{Gate, HealthMonitor, ReadinessLayer, ReadinessService, Target};
use tower_layer::Layer;

/// Errors of the proxy's setup.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// An upstream as the balancer sees it: gated by its health, behind a breaker.
pub type Endpoint = ReadinessService<CircuitBreaker<Upstream, Forwarded>>;

/// How an upstream is chosen (`--pick`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PickFlag {
    /// `round-robin`.
    RoundRobin,
    /// `least-conn`.
    LeastConnections,
    /// `latency`: the latency-aware pick (peak EWMA over two random choices).
    Latency,
    /// `hash:HEADER`: consistent hashing on a header's value.
    Hash(String),
}

fn parse_pick(v: &str) -> Result<PickFlag, String> {
    match v {
        "round-robin" => Ok(PickFlag::RoundRobin),
        "least-conn" => Ok(PickFlag::LeastConnections),
        "latency" => Ok(PickFlag::Latency),
        _ => match v.strip_prefix("hash:") {
            Some(h)
                if !h.is_empty()
                    && h.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') =>
            {
                Ok(PickFlag::Hash(h.to_ascii_lowercase()))
            }
            _ => Err("give round-robin, least-conn, latency or hash:HEADER".into()),
        },
    }
}

fn parse_duration(v: &str) -> Result<Duration, String> {
    crate::fleet::parse_duration("", v).map_err(|e| e.trim_start().to_owned())
}

/// The proxy's flags.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "balance_proxy",
    about = "An HTTP/1.1 load balancer: health checks, circuit breakers, idempotent retries, a graceful drain"
)]
pub struct Args {
    /// Where clients connect.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// The upstreams, comma-separated (HOST:PORT,HOST:PORT).
    #[arg(long, required = true, value_delimiter = ',')]
    pub upstream: Vec<SocketAddr>,
    /// How an upstream is chosen: round-robin, least-conn, latency or hash:HEADER.
    #[arg(long, default_value = "round-robin", value_parser = parse_pick)]
    pub pick: PickFlag,
    /// Check each upstream with GET on this path; unhealthy ones take no traffic.
    #[arg(long)]
    pub health_path: Option<String>,
    /// How often each upstream is checked.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub health_interval: Duration,
    /// Where `/stats` (JSON) and `/` (text) answer; none without it.
    #[arg(long)]
    pub admin: Option<SocketAddr>,
    /// Runtime worker threads.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub threads: u16,
    /// How long requests in progress may take to finish once a drain begins.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub drain_timeout: Duration,
    /// How long an upstream may take to answer with a head, and each part of a body.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub upstream_timeout: Duration,
    /// How long a client connection may stay idle or take to send a request.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub client_timeout: Duration,
    /// Client connections served at once; more wait in the listener's backlog.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,
    /// How many proxies of yours stand in front of this one: their X-Forwarded-For and
    /// Forwarded entries are kept (otherwise a client's own are dropped).
    #[arg(long, default_value_t = 0)]
    pub trusted_hops: usize,
}

/// The running proxy's parts.
pub struct Proxy {
    balancer: Balancer<SocketAddr, Endpoint, Exchange>,
    forwarder: Forwarder<Balancer<SocketAddr, Endpoint, Exchange>>,
    monitor: Option<HealthMonitor>,
    upstreams: Vec<SocketAddr>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("upstreams", &self.upstreams)
            .finish_non_exhaustive()
    }
}

impl Proxy {
    /// Builds the balancer, breakers and health checks of `args` (inside a runtime).
    pub fn new(args: &Args) -> Result<Self, BoxError> {
        let config = ForwardConfig {
            upstream_timeout: args.upstream_timeout,
            client_timeout: args.client_timeout,
            max_connections: args.max_connections as usize,
            trusted_hops: args.trusted_hops,
            ..ForwardConfig::default()
        };
        let breaker: CircuitBreakerLayer<Forwarded> = CircuitBreakerLayer::builder()
            .failure_if(forward::server_error)
            .open_for(Duration::from_secs(5), Duration::from_secs(60))
            .build()?;
        let monitor = args.health_path.as_ref().map(|_| HealthMonitor::new());
        let mut endpoints = Vec::with_capacity(args.upstream.len());
        for addr in &args.upstream {
            let gate = match (&monitor, &args.health_path) {
                (Some(m), Some(path)) => {
                    let name = addr.to_string();
                    m.register(
                        Target::new(name.clone(), name.clone())
                            .path(path.clone())
                            .interval(args.health_interval)
                            .timeout(args.health_interval.min(Duration::from_secs(1)))
                            .failure_threshold(3),
                    )
                    .map_err(|e| format!("--health-path {path}: {e}"))?;
                    Gate::new(m.watch(&name).ok_or("a registered target has a watch")?)
                }
                _ => Gate::always_ready(),
            };
            let upstream = Upstream::builder(*addr).config(config.clone()).build()?;
            let endpoint = ReadinessLayer::pending(gate).layer(breaker.layer(upstream));
            endpoints.push((*addr, endpoint));
        }
        let builder = BalancerBuilder::new(match args.pick {
            PickFlag::RoundRobin => Pick::RoundRobin,
            PickFlag::LeastConnections => Pick::LeastConnections,
            PickFlag::Latency => Pick::LatencyAware,
            PickFlag::Hash(_) => Pick::ConsistentHash,
        })
        .failure_if(forward::server_error)
        .retry(Exchange::retry_copy)
        .ready_timeout(Duration::from_secs(2));
        let builder = match &args.pick {
            PickFlag::Hash(header) => {
                let header = header.clone();
                builder.hash_key(move |req: &Exchange| req.header(&header).map(hash_key))
            }
            _ => builder,
        };
        let balancer = builder.build(discover::fixed(endpoints))?;
        let forwarder = Forwarder::builder(balancer.clone())
            .config(config)
            .build()?;
        Ok(Self {
            balancer,
            forwarder,
            monitor,
            upstreams: args.upstream.clone(),
        })
    }

    /// The balancer's figures.
    pub fn stats(&self) -> LoadStats {
        self.balancer.stats()
    }

    /// Serves `listener` until `shutdown`, then drains (bounded by `drain`).
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        admin: Option<tokio::net::TcpListener>,
        shutdown: impl std::future::Future<Output = ()>,
        drain: Duration,
    ) -> std::io::Result<()> {
        let stats = self.stats();
        let health = self.monitor.clone();
        let upstreams = self.upstreams.clone();
        let admin_task = admin.map(|l| tokio::spawn(serve_admin(l, stats, health, upstreams)));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let serving = tokio::spawn(self.forwarder.serve_with_shutdown(listener, async {
            let _ = stopped.await;
        }));
        shutdown.await;
        eprintln!("balance_proxy: draining (up to {drain:?})");
        let _ = stop.send(());
        let result = match tokio::time::timeout(drain, serving).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => Err(std::io::Error::other(e)),
            Err(_) => {
                eprintln!("balance_proxy: requests still in progress after {drain:?}; stopping");
                Ok(())
            }
        };
        if let Some(a) = admin_task {
            a.abort();
        }
        result
    }
}

/// The figures as JSON.
fn stats_json(
    stats: &LoadStats,
    health: Option<&HealthMonitor>,
    upstreams: &[SocketAddr],
) -> serde_json::Value {
    let s = stats.snapshot();
    let ms = |d: Duration| (d.as_secs_f64() * 1e6).round() / 1e3;
    let endpoints: Vec<_> = s
        .endpoints
        .iter()
        .map(|e| {
            let healthy = health
                .map(|m| m.is_ready_for_traffic(&e.name))
                .unwrap_or(true);
            serde_json::json!({
                "upstream": e.name,
                "state": format!("{:?}", e.state).to_lowercase(),
                "healthy": healthy,
                "requests": e.requests,
                "in_flight": e.in_flight,
                "errors": e.errors,
                "latency_ewma_ms": ms(e.ewma),
                "p50_ms": ms(e.p50),
                "p99_ms": ms(e.p99),
            })
        })
        .collect();
    serde_json::json!({
        "upstreams": upstreams.len(),
        "ready_upstreams": s.ready_endpoints,
        "requests": s.requests,
        "in_flight": s.in_flight,
        "waiting": s.waiting,
        "requests_per_second": (s.throughput * 10.0).round() / 10.0,
        "error_rate": (s.error_rate * 1e4).round() / 1e4,
        "p99_ms": ms(s.p99),
        "retries": s.retries,
        "retries_refused": s.retries_refused,
        "no_ready_upstream": s.no_ready_endpoints,
        "endpoints": endpoints,
    })
}

async fn serve_admin(
    listener: tokio::net::TcpListener,
    stats: LoadStats,
    health: Option<HealthMonitor>,
    upstreams: Vec<SocketAddr>,
) {
    use axum::routing::get;
    let shared = Arc::new((stats, health, upstreams));
    let json = {
        let shared = shared.clone();
        move || {
            let shared = shared.clone();
            async move { axum::Json(stats_json(&shared.0, shared.1.as_ref(), &shared.2)) }
        }
    };
    let text = move || {
        let shared = shared.clone();
        async move {
            let v = stats_json(&shared.0, shared.1.as_ref(), &shared.2);
            let mut out = format!(
                "requests {}  in flight {}  errors {:.2}%  retries {}  p99 {} ms\n",
                v["requests"],
                v["in_flight"],
                v["error_rate"].as_f64().unwrap_or(0.0) * 100.0,
                v["retries"],
                v["p99_ms"]
            );
            for e in v["endpoints"].as_array().into_iter().flatten() {
                out.push_str(&format!(
                    "{:<22} {:<10} healthy {:<5} requests {:<8} in flight {:<4} errors {}\n",
                    e["upstream"].as_str().unwrap_or(""),
                    e["state"].as_str().unwrap_or(""),
                    e["healthy"],
                    e["requests"],
                    e["in_flight"],
                    e["errors"]
                ));
            }
            out
        }
    };
    let app = axum::Router::new()
        .route("/stats", get(json))
        .route("/", get(text));
    if let Err(e) = axum::serve(listener, app).await {
        eprintln!("balance_proxy: the admin endpoint stopped: {e}");
    }
}

/// The `balance_proxy` program.
pub fn main() {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads as usize)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("balance_proxy: cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = runtime.block_on(run(args)) {
        eprintln!("balance_proxy: {e}");
        std::process::exit(1);
    }
}

async fn run(args: Args) -> Result<(), BoxError> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| {
            format!(
                "cannot listen on {}: {e}; pick another --listen",
                args.listen
            )
        })?;
    let admin = match args.admin {
        Some(a) => Some(
            tokio::net::TcpListener::bind(a)
                .await
                .map_err(|e| format!("cannot listen on {a}: {e}; pick another --admin"))?,
        ),
        None => None,
    };
    let proxy = Proxy::new(&args)?;
    println!(
        "balance_proxy on http://{} over {} upstream(s){}",
        listener.local_addr()?,
        args.upstream.len(),
        admin
            .as_ref()
            .and_then(|a| a.local_addr().ok())
            .map(|a| format!("; stats at http://{a}/stats"))
            .unwrap_or_default()
    );
    let shutdown = async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
    };
    proxy
        .serve(listener, admin, shutdown, args.drain_timeout)
        .await?;
    Ok(())
}
