//! Bringing the fleet up and down: [`Fleet::start`] walks the table of services
//! ([`SERVICES`]), starting each data service with its balancer and each autoscaled
//! service's instances with theirs, then the autoscaler and the gateway.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Response;
use http_body_util::Full;
use hyper::body::Incoming;
use tower_autoscale::{
    Autoscaler, DecisionEngine, LoadSource, Metric, MetricTarget, ProcessScaler, RateKind,
    RatePolicy, ScalingManager, ScalingPolicy, ScalingRules, Select,
};
use tower_balance_ext::breaker::CircuitBreakerLayer;
use tower_balance_ext::{discover, BalancerBuilder, HttpEndpoint};
use tower_health::{Gate, HealthMonitor, ReadinessLayer, Target, TargetState};
use tower_layer::Layer;

use super::data::{DataService, Db, FleetBus};
use super::services::{Backend, DataSpec, RunningService, ServiceKind, ServiceSpec, SERVICES};
use super::{
    edge, gateway, random_u64, BoxError, Breakers, Config, DataBalancer, TrainingBalancer,
    TrainingScaler,
};

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

/// A running fleet; see the [fleet module docs](crate::fleet).
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
fn health_word(state: TargetState) -> &'static str {
    match state {
        TargetState::Unknown => "not checked yet",
        TargetState::Healthy => "healthy",
        TargetState::Unhealthy => "unhealthy",
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
    let breakers: Breakers = Arc::default();
    let breaker = CircuitBreakerLayer::<Response<Incoming>>::builder()
        .http()
        .consecutive_failures(5)
        .open_for(Duration::from_millis(500), Duration::from_secs(10))
        .build()?;
    let (scaler, discovery) = ProcessScaler::builder(program, args, training_ports()?)
        .check_interval(Duration::from_millis(100))
        .drain_grace(Duration::from_secs(5))
        .stop_timeout(Duration::from_secs(2))
        .start_timeout(Duration::from_secs(20))
        .warm_up(Duration::ZERO)
        .start({
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

    let policy = ScalingPolicy::builder()
        .min_instances(cfg.instances.0)
        .max_instances(cfg.instances.1)
        // Requests in flight per instance: a quarter of what one serves at once.
        .metrics(vec![MetricTarget::new(
            Metric::InFlight,
            (cfg.work.concurrency as f64 / 4.0).max(1.0),
        )])
        .scale_down(ScalingRules {
            stabilization_window: cfg.scale_down_window,
            policies: vec![RatePolicy {
                kind: RateKind::Instances,
                value: 1,
                period: cfg.interval,
            }],
            select: Select::Max,
        })
        .warm_up(Duration::ZERO)
        .forecast(None)
        .panic(Some(tower_autoscale::PanicWindow {
            threshold: 2.0,
            hold: cfg.scale_down_window,
        }))
        .build()?;
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
            if t.state == TargetState::Unhealthy {
                let latency_ms = t.last_latency.map_or(-1.0, |l| l.as_secs_f64() * 1e3);
                tracing::warn!(target = %t.name, was = health_word(was), error, latency_ms, "unhealthy");
            } else {
                tracing::info!(target = %t.name, was = health_word(was), now = health_word(t.state), "health changed");
            }
        });
        let engine = DecisionEngine::new();
        let manager = ScalingManager::new(engine.clone());
        manager.set_manual_hold(cfg.manual_hold);
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
        let autoscaler = Autoscaler::builder(manager.clone())
            .interval(cfg.interval)
            .spawn()?;

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
