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

mod cli;
pub mod data;
pub mod edge;
pub mod gateway;
pub mod load;
pub mod services;
pub mod training;
pub mod view;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use tower_autoscale::{
    Autoscaler, Counted, DecisionEngine, LoadSource, Metric, MetricTarget, ProcessConfig,
    ProcessScaler, RateKind, RatePolicy, ScalingManager, ScalingPolicy, ScalingRules, Select,
};
use tower_balance_ext::breaker::{BreakerHandle, CircuitBreaker, CircuitBreakerLayer};
use tower_balance_ext::{discover, BalancerBuilder, HttpEndpoint};
use tower_health::{Gate, HealthMonitor, HealthState, ReadinessLayer, ReadinessService, Target};
use tower_layer::Layer;

pub use self::cli::{help, parse_duration};
use self::data::{DataService, Db, FleetBus};
use self::services::{Backend, DataSpec, RunningService, ServiceKind, ServiceSpec, SERVICES};
use self::training::Work;

/// Errors of the fleet's setup.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A training endpoint: a pooled HTTP client behind a circuit breaker, counted by the
/// scaler (for its in-flight figures).
pub type TrainingEndpoint = Counted<CircuitBreaker<HttpEndpoint<Full<Bytes>>, Response<Incoming>>>;
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

/// Load shapes for `--load`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// 10 to 300 requests/s, rising steadily.
    Ramp,
    /// 20 requests/s, then 250 from half-way.
    Step,
    /// 20 requests/s with 300 in the middle third.
    Spike,
}

/// How the live view shows itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ViewMode {
    /// The terminal view when stdout is a terminal, log lines otherwise.
    Auto,
    /// The terminal view.
    Tui,
    /// A log line per service every few seconds.
    Plain,
    /// Nothing.
    Off,
}

/// The fleet's settings, from the command line ([`Config::from_args`]).
#[derive(Debug, Clone)]
pub struct Config {
    /// The gateway's port on 127.0.0.1 (`--port`, default 3000; 0 for any free one).
    pub port: u16,
    /// Where the LMDB files go (`--data-dir`, default a temporary directory).
    pub data_dir: Option<PathBuf>,
    /// The autoscaler's period (`--interval`, default 10 s).
    pub interval: Duration,
    /// A load to drive (`--load ramp|step|spike --duration 60s`).
    pub load: Option<(Shape, Duration)>,
    /// Kill a training instance half-way through the load (`--chaos kill-one`).
    pub chaos: bool,
    /// `--bus redis://HOST:PORT`.
    pub bus: Option<String>,
    /// Keep serving until Ctrl-C (`--serve`).
    pub serve: bool,
    /// `--view auto|tui|plain|off`.
    pub view: ViewMode,
    /// The training instances' work (`--work-ms`, `--cpu-ms`, `--concurrency`).
    pub work: Work,
    /// Training instances at least / at most (`--min-instances`, `--max-instances`).
    pub instances: (usize, usize),
    /// How long load must stay low before scaling down (`--scale-down-window`, 30 s).
    pub scale_down_window: Duration,
    /// Requests per second per client address at the gateway
    /// (`--rate-limit`, default 1,000).
    pub rate_limit: u32,
    /// Rate-limit buckets the gateway keeps at most, for addresses and for users each
    /// (`--max-clients`, default 100,000).
    pub max_clients: usize,
    /// The data services' database round trip (`--origin-ms`, default 20).
    pub origin_latency: Duration,
    /// Host names the gateway answers to besides `localhost`, `127.0.0.1` and `[::1]`
    /// (`--host NAME`, repeatable).
    pub hosts: Vec<String>,
    /// What a client may hold at the gateway's edge (`--header-read-timeout`, 30 s;
    /// `--idle-timeout`, 60 s; `--max-connections`, 10,000).
    pub edge: edge::Limits,
    /// The token for scaling and for writes (`FLEET_TOKEN`, which [`main`] takes out of
    /// the environment so that no child process inherits it); a random one when `None`.
    pub token: Option<String>,
    /// Run the data services without caches (`--no-cache`, for comparisons).
    pub no_cache: bool,
    /// The program for training instances (default: this binary).
    pub program: Option<String>,
    /// Neither `--load` nor `--serve`: the demonstration (which waits for the
    /// scale-down after its load).
    pub demo: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            port: 3000,
            data_dir: None,
            interval: Duration::from_secs(10),
            load: None,
            chaos: false,
            bus: None,
            serve: false,
            view: ViewMode::Auto,
            work: Work::default(),
            instances: (1, 4),
            scale_down_window: Duration::from_secs(30),
            rate_limit: 1_000,
            max_clients: 100_000,
            origin_latency: Duration::from_millis(20),
            hosts: Vec::new(),
            edge: edge::Limits::default(),
            token: None,
            no_cache: false,
            program: None,
            demo: false,
        }
    }
}

/// The data directory: the one given, or a temporary one removed at the end.
#[derive(Debug)]
enum DataDir {
    Given(PathBuf),
    Temp(tempfile::TempDir),
}

impl DataDir {
    fn path(&self) -> &std::path::Path {
        match self {
            Self::Given(p) => p,
            Self::Temp(t) => t.path(),
        }
    }
}

/// A running fleet; see the [module docs](self).
#[derive(Debug)]
pub struct Fleet {
    /// Where the gateway listens.
    pub gateway: SocketAddr,
    /// The bearer token for the scaling API.
    pub token: String,
    /// The scaling manager (decisions, history, manual scaling).
    pub manager: ScalingManager,
    /// The training instances' scaler.
    pub scaler: TrainingScaler,
    /// The gateway's state (balancers, caches, figures).
    pub state: Arc<gateway::Gateway>,
    /// The data services, in the order of [`SERVICES`].
    pub data: Vec<DataService>,
    /// The origin both read.
    pub db: Arc<Db>,
    autoscaler: Option<Autoscaler>,
    history: tokio::task::JoinHandle<()>,
    gateway_task: tokio::task::JoinHandle<()>,
    monitor: HealthMonitor,
    data_dir: DataDir,
}

/// A balancer over one data service: its endpoint behind a gate that follows `monitor`.
fn data_balancer(
    monitor: &HealthMonitor,
    svc: &DataService,
    data: &DataSpec,
) -> Result<DataBalancer, BoxError> {
    let spec = svc.spec;
    // In this process, so a check is slow only when the machine is starved: a longer
    // timeout and one more failure before the gate closes (a dead service is still
    // seen within 2 s) keep a busy moment from turning reads into 503s.
    monitor.register(
        Target::new(spec.name, svc.addr.to_string())
            .path(data.health_path)
            .interval(Duration::from_millis(500))
            .timeout(Duration::from_millis(500))
            .failure_threshold(3)
            .max_backoff(Duration::from_millis(500)),
    )?;
    let gate = Gate::new(
        monitor
            .watch(spec.name)
            .ok_or_else(|| format!("{} is not registered with the monitor", spec.name))?,
    );
    let endpoint = ReadinessLayer::pending(gate).layer(HttpEndpoint::<Full<Bytes>>::new(svc.addr));
    Ok(BalancerBuilder::new(spec.balancer.pick)
        .http()
        .retry_idempotent()
        .ready_timeout(spec.balancer.ready_timeout)
        .build(discover::fixed(vec![(svc.addr, endpoint)]))?)
}

/// A target's health in a word, for logs.
fn health_word(state: HealthState) -> &'static str {
    match state {
        HealthState::Unknown => "not checked yet",
        HealthState::Healthy => "healthy",
        HealthState::Unhealthy => "unhealthy",
    }
}

/// A port range for training instances that does not start at a port in use.
fn training_ports() -> Result<(u16, u16), BoxError> {
    let probe = std::net::TcpListener::bind("127.0.0.1:0")?;
    let base = probe.local_addr()?.port().clamp(20_000, 60_000);
    Ok((base, base + 200))
}

/// Starts the autoscaled service `spec`: child processes of this binary (or
/// `cfg.program`), each behind a circuit breaker, `cfg.instances.0` of them to begin
/// with, under a policy on requests in flight registered with `engine`.
async fn start_autoscaled(
    spec: &'static ServiceSpec,
    cfg: &Config,
    engine: &DecisionEngine,
) -> Result<(TrainingScaler, TrainingBalancer, Breakers), BoxError> {
    let program = match &cfg.program {
        Some(p) => p.clone(),
        None => std::env::current_exe()?.to_string_lossy().into_owned(),
    };
    let mut args = vec![
        "--role".to_string(),
        "training".into(),
        "--port".into(),
        "{port}".into(),
    ];
    args.extend(cfg.work.args());
    let mut pc = ProcessConfig::new(program, args, training_ports()?);
    pc.check_interval = Duration::from_millis(100);
    pc.drain_grace = Duration::from_secs(5);
    pc.stop_timeout = Duration::from_secs(2);
    pc.start_timeout = Duration::from_secs(20);
    pc.warm_up = Duration::ZERO;
    let breakers: Breakers = Arc::default();
    let breaker = CircuitBreakerLayer::<Response<Incoming>>::builder()
        .http()
        .consecutive_failures(5)
        .open_for(Duration::from_millis(500), Duration::from_secs(10))
        .build()?;
    let (scaler, discovery) = ProcessScaler::new(pc, {
        let breakers = breakers.clone();
        move |addr| {
            let svc = breaker.layer(HttpEndpoint::<Full<Bytes>>::new(addr));
            let mut b = breakers.lock().unwrap_or_else(|e| e.into_inner());
            b.retain(|(a, _)| *a != addr);
            b.push((addr, svc.handle()));
            svc
        }
    })?;
    let balancer = BalancerBuilder::new(spec.balancer.pick)
        .http()
        .retry_idempotent()
        .ready_timeout(spec.balancer.ready_timeout)
        .build(discovery)?;
    scaler.scale_to(cfg.instances.0).await?;

    let policy = ScalingPolicy {
        min_instances: cfg.instances.0,
        max_instances: cfg.instances.1,
        // Requests in flight per instance: a quarter of what one serves at once.
        metrics: vec![MetricTarget::new(
            Metric::InFlight,
            (cfg.work.concurrency as f64 / 4.0).max(1.0),
        )],
        scale_down: ScalingRules {
            stabilization_window: cfg.scale_down_window,
            policies: vec![RatePolicy {
                kind: RateKind::Instances,
                value: 1,
                period: cfg.interval,
            }],
            select: Select::Max,
        },
        warm_up: Duration::ZERO,
        forecast: None,
        panic: Some(tower_autoscale::PanicWindow {
            threshold: 2.0,
            hold: cfg.scale_down_window,
        }),
        ..ScalingPolicy::default()
    }
    .validated()?;
    let (s2, stats) = (scaler.clone(), balancer.stats());
    engine.add_service(spec.name, policy, move || s2.sample().or(stats.sample()))?;
    Ok((scaler, balancer, breakers))
}

impl Fleet {
    /// Starts everything; fails with a message naming the flag to change when the
    /// gateway's port is taken.
    pub async fn start(cfg: &Config) -> Result<Self, BoxError> {
        // The gateway's port first: a taken port is the likeliest mistake.
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", cfg.port))
            .await
            .map_err(|e| {
                format!(
                    "the gateway cannot listen on 127.0.0.1:{}: {e}; pick another port with --port N (0 for any free one)",
                    cfg.port
                )
            })?;
        let gateway_addr = listener.local_addr()?;
        let data_dir = match &cfg.data_dir {
            Some(p) => DataDir::Given(p.clone()),
            None => DataDir::Temp(tempfile::Builder::new().prefix("fleet-").tempdir()?),
        };
        let bus = FleetBus::from_flag(cfg.bus.as_deref())?;
        let secret = format!("fleet-{:016x}", random_u64());
        let db = Db::new(cfg.origin_latency);
        let cache_dir = (!cfg.no_cache).then(|| data_dir.path().to_path_buf());
        let monitor = HealthMonitor::new();
        monitor.on_health_change(|t, was| {
            let error = t.last_error.as_deref().unwrap_or("-");
            if t.state == HealthState::Unhealthy {
                let latency_ms = t.last_latency.map_or(-1.0, |l| l.as_secs_f64() * 1e3);
                tracing::warn!(target = %t.name, was = health_word(was), error, latency_ms, "unhealthy");
            } else {
                tracing::info!(target = %t.name, was = health_word(was), now = health_word(t.state), "health changed");
            }
        });
        let engine = DecisionEngine::new();
        let manager = ScalingManager::new(engine.clone());
        let (mut data, mut services, mut scaler) = (Vec::new(), Vec::new(), None);
        for spec in &SERVICES {
            let backend = match &spec.kind {
                ServiceKind::Data(d) => {
                    let svc = DataService::start(
                        spec,
                        d,
                        db.clone(),
                        cache_dir.as_deref(),
                        &bus,
                        secret.as_bytes(),
                    )
                    .await?;
                    let backend = Backend::Data {
                        balancer: data_balancer(&monitor, &svc, d)?,
                        cache: svc.cache.clone(),
                    };
                    data.push(svc);
                    backend
                }
                ServiceKind::Autoscaled => {
                    let (s, balancer, breakers) = start_autoscaled(spec, cfg, &engine).await?;
                    manager.add_scaler(spec.name, s.clone());
                    scaler.get_or_insert_with(|| s.clone());
                    Backend::Autoscaled {
                        balancer,
                        scaler: s,
                        breakers,
                    }
                }
            };
            services.push(RunningService { spec, backend });
        }
        let scaler = scaler.ok_or("the fleet's table of services has no autoscaled service")?;
        let autoscaler = Autoscaler::spawn(manager.clone(), cfg.interval);

        let token = match cfg.token.as_deref().map(str::trim) {
            Some(t) if !t.is_empty() => t.to_string(),
            _ => format!("{:016x}{:016x}", random_u64(), random_u64()),
        };
        let edge_stats = Arc::new(edge::Stats::default());
        let state = Arc::new(
            gateway::Gateway::new(gateway::Parts {
                services,
                manager: manager.clone(),
                token: token.clone(),
                hosts: gateway::host_names(gateway_addr.port(), &cfg.hosts),
                edge: edge_stats.clone(),
                body_timeout: cfg.edge.idle,
                db: db.clone(),
                monitor: monitor.clone(),
                rate_limit: cfg.rate_limit,
                max_clients: cfg.max_clients,
                cache_dir: data_dir.path().join("gateway"),
                bus: bus.clone(),
                secret: secret.into_bytes(),
            })
            .await?,
        );
        let history = gateway::Gateway::spawn_history(&state);
        let app = gateway::router(state.clone());
        let gateway_task = tokio::spawn(edge::serve(listener, app, cfg.edge, edge_stats));
        Ok(Self {
            history,
            gateway: gateway_addr,
            token,
            manager,
            scaler,
            state,
            data,
            db,
            autoscaler: Some(autoscaler),
            gateway_task,
            monitor,
            data_dir,
        })
    }

    /// The data service named `name`.
    pub fn data_service(&self, name: &str) -> Option<&DataService> {
        self.data.iter().find(|d| d.spec.name == name)
    }

    /// Where the LMDB files are.
    pub fn data_dir(&self) -> &std::path::Path {
        self.data_dir.path()
    }

    /// Stops the autoscaler, drains and stops every training instance, stops the
    /// services and the gateway.
    pub async fn shutdown(mut self) {
        if let Some(a) = self.autoscaler.take() {
            a.stop().await;
        }
        self.scaler.shutdown().await;
        self.gateway_task.abort();
        self.history.abort();
        for svc in self.data {
            svc.stop().await;
        }
        drop(self.monitor);
    }
}

/// Milliseconds since the Unix epoch now (0 before it), the unit of the audit history.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A random number from the OS's hasher seeds (no extra dependency for a token).
pub fn random_u64() -> u64 {
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

/// The `fleet` program: a training instance when started with `--role training`,
/// otherwise the whole fleet with its live view, load and chaos as the flags say; stops
/// everything at Ctrl-C (or SIGTERM).
pub async fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(role) = training::from_args(&args) {
        let (port, work) = role?;
        return training::run(port, work).await;
    }
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("{}", help());
        return Ok(());
    }
    // The token leaves the environment before any child process starts, so that the
    // training instances (which need no token) do not inherit it.
    let token = std::env::var("FLEET_TOKEN").ok();
    std::env::remove_var("FLEET_TOKEN");
    let cfg = match Config::from_args(&args) {
        Ok(c) => Config { token, ..c },
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let tui = match cfg.view {
        ViewMode::Tui => true,
        ViewMode::Auto => std::io::IsTerminal::is_terminal(&std::io::stdout()),
        ViewMode::Plain | ViewMode::Off => false,
    };
    if !tui {
        tracing_subscriber::fmt()
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
            )
            .init();
    }
    // The signal handlers go in first: a Ctrl-C from here on stops the fleet cleanly
    // (during the start, as soon as it is up) instead of killing this process.
    use tokio::signal::unix::{signal, SignalKind};
    let (mut interrupt, mut terminate) = match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(i), Ok(t)) => (i, t),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("fleet: cannot handle Ctrl-C and SIGTERM: {e}");
            std::process::exit(1);
        }
    };
    let fleet = match Fleet::start(&cfg).await {
        Ok(f) => f,
        Err(e) => {
            eprintln!("fleet: {e}");
            std::process::exit(1);
        }
    };
    println!(
        "gateway on http://{} (dashboard at /, metrics at /metrics); bus: {}; data in {}",
        fleet.gateway,
        FleetBus::from_flag(cfg.bus.as_deref())
            .map(|b| b.describe())
            .unwrap_or_default(),
        fleet.data_dir().display()
    );
    println!(
        "scaling token: {} (POST /api/v1/system/scale/training/up with `Authorization: Bearer <token>`)",
        if cfg.token.as_deref().is_some_and(|t| !t.trim().is_empty()) {
            "from FLEET_TOKEN".to_string()
        } else {
            fleet.token.clone()
        }
    );
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    // Ctrl-C or SIGTERM (handlers in place since before the start): stop whatever
    // runs, then shut everything down.
    tokio::spawn({
        let stop_tx = stop_tx.clone();
        async move {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
            let _ = stop_tx.send(true);
        }
    });
    let view = view::spawn(fleet.state.clone(), cfg.view, tui, stop_tx.clone());
    let mut summary = None;
    if let Some((shape, duration)) = cfg.load {
        let plan = load::Plan {
            shape,
            duration,
            chaos: cfg.chaos,
            settle_to: cfg.demo.then_some(cfg.instances.0),
        };
        summary = Some(load::run(&fleet, plan, stop_rx.clone()).await);
    }
    if cfg.serve && !*stop_rx.borrow() {
        let mut rx = stop_rx.clone();
        let _ = rx.wait_for(|s| *s).await;
    }
    view.stop().await;
    if let Some(s) = summary {
        println!("{s}");
    }
    println!(
        "stopping: draining {} training instance(s)",
        fleet.scaler.current()
    );
    fleet.shutdown().await;
    println!("stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn no_flags_is_the_demonstration() {
        let c = Config::from_args(&[]).unwrap();
        assert_eq!(c.load, Some((Shape::Spike, Duration::from_secs(30))));
        assert!(c.chaos);
        assert_eq!(c.interval, Duration::from_secs(2));
        assert_eq!(c.scale_down_window, Duration::from_secs(6));
        assert_eq!(c.port, 3000);
        assert!(c.demo);
        assert!(!Config::from_args(&args("--load step")).unwrap().demo);
    }

    #[test]
    fn serve_keeps_the_defaults() {
        let c = Config::from_args(&args("--serve")).unwrap();
        assert_eq!(c.load, None);
        assert!(!c.chaos);
        assert_eq!(c.interval, Duration::from_secs(10));
        assert_eq!(c.scale_down_window, Duration::from_secs(30));
        assert_eq!(c.instances, (1, 4));
    }

    #[test]
    fn flags_are_read() {
        let c = Config::from_args(&args(
            "--port 0 --load ramp --duration 90s --chaos kill-one --interval 500ms \
             --view plain --min-instances 2 --max-instances 6 --work-ms 5 --cpu-ms 1 \
             --concurrency 16 --rate-limit 50 --origin-ms 0 --no-cache --scale-down-window 1m",
        ))
        .unwrap();
        assert_eq!(c.port, 0);
        assert_eq!(c.load, Some((Shape::Ramp, Duration::from_secs(90))));
        assert!(c.chaos && c.no_cache);
        assert_eq!(c.interval, Duration::from_millis(500));
        assert_eq!(c.view, ViewMode::Plain);
        assert_eq!(c.instances, (2, 6));
        assert_eq!(
            c.work,
            Work {
                wait: Duration::from_millis(5),
                cpu: Duration::from_millis(1),
                concurrency: 16
            }
        );
        assert_eq!(c.rate_limit, 50);
        assert_eq!(c.origin_latency, Duration::ZERO);
        assert_eq!(c.scale_down_window, Duration::from_secs(60));
    }

    #[test]
    fn bad_flags_say_what_to_give() {
        for (a, says) in [
            ("--port 70000", "0 to 65535"),
            ("--port", "needs a value"),
            ("--duration 10s", "goes with --load"),
            ("--interval -1s", "duration"),
            ("--interval 2d", "duration"),
            ("--interval 0", "above 0"),
            ("--rate-limit 0", "1 to 1000000"),
            ("--work-ms lots", "whole number"),
            ("--max-instances 40", "<= 32"),
            ("--view fancy", "auto, tui, plain or off"),
            ("--frobnicate", "unknown flag"),
        ] {
            let err = Config::from_args(&args(a)).unwrap_err();
            assert!(err.contains(says), "{a}: {err}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("x", "10").unwrap(), Duration::from_secs(10));
        assert_eq!(
            parse_duration("x", "1.5s").unwrap(),
            Duration::from_millis(1500)
        );
        assert_eq!(parse_duration("x", "2m").unwrap(), Duration::from_secs(120));
        assert_eq!(
            parse_duration("x", "1h").unwrap(),
            Duration::from_secs(3600)
        );
        assert!(parse_duration("x", "25h").is_err());
        assert!(parse_duration("x", "NaNs").is_err());
    }

    #[test]
    fn training_role_flags() {
        assert!(training::from_args(&args("--serve")).is_none());
        let (port, work) = training::from_args(&args("--role training --port 4100 --work-ms 7"))
            .unwrap()
            .unwrap();
        assert_eq!(port, 4100);
        assert_eq!(work.wait, Duration::from_millis(7));
        assert_eq!(work.concurrency, Work::default().concurrency);
        let err = training::from_args(&args("--role training"))
            .unwrap()
            .unwrap_err();
        assert!(err.contains("--port"), "{err}");
    }

    #[test]
    fn load_shapes_and_zipf() {
        assert_eq!(load::rate_at(Shape::Ramp, 0.0), 10.0);
        assert_eq!(load::rate_at(Shape::Ramp, 1.0), 300.0);
        assert_eq!(load::rate_at(Shape::Step, 0.4), 20.0);
        assert_eq!(load::rate_at(Shape::Step, 0.6), 250.0);
        assert_eq!(load::rate_at(Shape::Spike, 0.5), 300.0);
        assert_eq!(load::rate_at(Shape::Spike, 0.9), 20.0);
        // Zipf(1.0) over 1,000: rank 0 about 13% of draws, all in range.
        let mut z = load::Zipf::new(1_000, 3);
        let draws: Vec<usize> = (0..20_000).map(|_| z.next_rank()).collect();
        assert!(draws.iter().all(|r| *r < 1_000));
        let top = draws.iter().filter(|r| **r == 0).count() as f64 / 20_000.0;
        assert!((0.11..0.16).contains(&top), "{top}");
    }

    #[test]
    fn plain_view_lines_carry_the_figures() {
        let o = gateway::Overview {
            uptime_s: 12.0,
            services: vec![gateway::ServiceView {
                name: "budget".into(),
                ready: 2,
                starting: 1,
                rps: 42.5,
                p99_ms: 3.25,
                error_pct: 0.5,
                cache: Some(gateway::CacheView {
                    memory_hit_pct: 60.0,
                    disk_hit_pct: 20.0,
                    hit_pct: 80.0,
                    ..Default::default()
                }),
                last_decision: Some(gateway::DecisionView {
                    action: "scale up".into(),
                    from: 1,
                    to: 3,
                    reason: "in_flight 6.0 vs target 2".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        };
        let line = &view::lines(&o)[0];
        for part in [
            "budget",
            "2 ready 1 starting 0 draining",
            "42.5 req/s",
            "p99     3.2 ms",
            "errors  0.5%",
            "cache 80% (mem 60%, disk 20%)",
            "scale up 1 -> 3: in_flight 6.0 vs target 2",
        ] {
            assert!(line.contains(part), "{part:?} not in {line:?}");
        }
    }
}
