//! `autoscale-host --listen ADDR --instance PROGRAM [--key value ...]`: a whole
//! autoscaled service in one process, for the partition bench's autoscaling scenario. A
//! `ProcessScaler` runs `PROGRAM --port N` instances on 127.0.0.1 (ports from
//! `--ports-from`), a balancer (least connections) reads its discovery stream, an
//! `Autoscaler` runs a `DecisionEngine` over the scaler's and the balancer's load, and a
//! closed-loop load generator (`--concurrency` workers, each request bounded by
//! `--request-timeout-ms`) sends `GET /work` through the balancer.
//!
//! `GET /status` on ADDR answers a JSON report: the instances (the scaler's details), how
//! many the load sample the engine reads calls ready, the requests answered and failed
//! (each failure with its start and end), the requests handed to each port and how many
//! of those went to a port while its health monitor said it was unhealthy, every health
//! change and scaling action with its time (milliseconds since the Unix epoch), the
//! engine's last decision, the most instances and child processes ever seen at once, and
//! every instance pid ever seen. `POST /load?c=N` sets how many of the workers send
//! requests. `POST /shutdown` answers at once, then stops the autoscaler and the load,
//! shuts the scaler down (every instance drained and stopped), prints how many
//! instances were left, and exits (status 1 if any was).
//!
//! Settings (`--key value`, default after each): `start` 3 instances at first, `min` 2,
//! `max` 6, `target-in-flight` 2.0 requests in flight per instance, `concurrency` 6
//! workers sending at first, `workers` 10 in all, `interval-ms` 500 between
//! evaluations, `down-window-ms` 3000 (also panic mode's hold), `check-ms` 200 between
//! health checks, `request-timeout-ms` 2000, `ports-from` 21000 (50 ports).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tower_autoscale::{
    AuditEntry, Autoscaler, DecisionEngine, LoadSource, Metric, MetricTarget, PanicWindow,
    ProcessConfig, ProcessScaler, RateKind, RatePolicy, ScalingManager, ScalingPolicy,
    ScalingRules, Select,
};
use tower_balance_ext::{BalancerBuilder, HttpEndpoint, Pick};
use tower_service::Service;

/// How long one attempt may wait for an instance's answer to begin.
const ATTEMPT_TIMEOUT: Duration = Duration::from_millis(750);

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// What the host saw, for `/status`.
#[derive(Default)]
struct Log {
    ok: u64,
    failed: u64,
    /// (start, end, error) of each failed request (the first 2,000).
    failures: Vec<(u64, u64, String)>,
    /// Requests handed to each port's endpoint.
    dispatched: BTreeMap<u16, u64>,
    /// Of those, handed over while the port's health monitor said unhealthy.
    dispatched_unhealthy: BTreeMap<u16, u64>,
    /// Ports the monitor calls unhealthy now.
    unhealthy: BTreeSet<u16>,
    /// (time, port, healthy) of each health change.
    health_changes: Vec<(u64, u16, bool)>,
    max_current: usize,
    max_processes: usize,
    pids_ever: BTreeSet<u32>,
}

type Shared = Arc<Mutex<Log>>;

fn lock(log: &Shared) -> std::sync::MutexGuard<'_, Log> {
    log.lock().unwrap_or_else(|e| e.into_inner())
}

/// An endpoint that counts what it is handed, and whether its port was unhealthy then.
/// Clones share the counters.
#[derive(Clone)]
struct Tap {
    port: u16,
    inner: HttpEndpoint<Full<Bytes>>,
    log: Shared,
}

impl Service<Request<Full<Bytes>>> for Tap {
    type Response = Response<hyper::body::Incoming>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Full<Bytes>>) -> Self::Future {
        {
            let mut log = lock(&self.log);
            *log.dispatched.entry(self.port).or_default() += 1;
            if log.unhealthy.contains(&self.port) {
                *log.dispatched_unhealthy.entry(self.port).or_default() += 1;
            }
        }
        Box::pin(self.inner.call(req))
    }
}

fn settings() -> (String, String, HashMap<String, String>) {
    let mut args = std::env::args().skip(1);
    let mut map = HashMap::new();
    while let (Some(k), Some(v)) = (args.next(), args.next()) {
        let Some(k) = k.strip_prefix("--") else {
            eprintln!("autoscale-host: `{k}` is not a --key");
            std::process::exit(2);
        };
        map.insert(k.to_owned(), v);
    }
    let (Some(listen), Some(instance)) = (map.remove("listen"), map.remove("instance")) else {
        eprintln!("usage: autoscale-host --listen ADDR --instance PROGRAM [--key value ...]");
        std::process::exit(2);
    };
    (listen, instance, map)
}

fn num<T: std::str::FromStr>(map: &HashMap<String, String>, key: &str, default: T) -> T {
    match map.get(key) {
        None => default,
        Some(v) => v.parse().unwrap_or_else(|_| {
            eprintln!("autoscale-host: --{key} {v:?} is not a number");
            std::process::exit(2);
        }),
    }
}

fn main() {
    let (listen, instance, map) = settings();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    rt.block_on(run(listen, instance, map));
}

async fn run(listen: String, instance: String, map: HashMap<String, String>) {
    let start: usize = num(&map, "start", 3);
    let min: usize = num(&map, "min", 2);
    let max: usize = num(&map, "max", 6);
    let target: f64 = num(&map, "target-in-flight", 2.0);
    let concurrency: usize = num(&map, "concurrency", 6);
    let workers_n: usize = num(&map, "workers", 10);
    let interval = Duration::from_millis(num(&map, "interval-ms", 500));
    let down_window = Duration::from_millis(num(&map, "down-window-ms", 3000));
    let check = Duration::from_millis(num(&map, "check-ms", 200));
    let request_timeout = Duration::from_millis(num(&map, "request-timeout-ms", 2000));
    let ports_from: u16 = num(&map, "ports-from", 21000);

    let log: Shared = Arc::default();
    let mut cfg = ProcessConfig::new(
        instance,
        vec!["--port".into(), "{port}".into()],
        (ports_from, ports_from.saturating_add(49)),
    );
    cfg.check_interval = check;
    cfg.start_timeout = Duration::from_secs(20);
    cfg.drain_grace = Duration::from_secs(3);
    cfg.stop_timeout = Duration::from_secs(2);
    cfg.warm_up = Duration::ZERO;
    let (scaler, discovery) = ProcessScaler::new(cfg, {
        let log = log.clone();
        move |addr: SocketAddr| Tap {
            port: addr.port(),
            // An answer to `/work` takes 20 ms: one that has not begun within this
            // was sent to an instance that was cut off, and is tried on another.
            inner: HttpEndpoint::new(addr).timeout(ATTEMPT_TIMEOUT),
            log: log.clone(),
        }
    })
    .expect("valid scaler settings");
    scaler.monitor().on_health_change({
        let log = log.clone();
        move |t, _| {
            let Some(port) = t
                .name
                .rsplit(':')
                .next()
                .and_then(|p| p.parse::<u16>().ok())
            else {
                return;
            };
            let healthy = t.state == tower_health::TargetState::Healthy;
            let mut log = lock(&log);
            if healthy {
                log.unhealthy.remove(&port);
            } else {
                log.unhealthy.insert(port);
            }
            log.health_changes.push((now_ms(), port, healthy));
        }
    });
    // Idempotent requests are retried on another instance (up to 3 attempts), so a
    // request sent to an instance just before it was cut off is still answered.
    let balancer = BalancerBuilder::new(Pick::LeastConnections)
        .ready_timeout(Duration::from_secs(5))
        .retry_idempotent()
        .max_attempts(3)
        .build(discovery)
        .expect("valid balancer settings");
    if let Err(e) = scaler.scale_to(start).await {
        eprintln!("autoscale-host: cannot start {start} instances: {e}");
        std::process::exit(1);
    }

    // The policy an operator would write for this service (the fleet's): requests in
    // flight per instance, plus the default p99 target; a short down window so the bench
    // sees it act.
    let policy = ScalingPolicy {
        min_instances: min,
        max_instances: max,
        metrics: vec![
            MetricTarget::new(Metric::InFlight, target),
            MetricTarget::new(Metric::P99Ms, 500.0),
        ],
        scale_down: ScalingRules {
            stabilization_window: down_window,
            policies: vec![RatePolicy {
                kind: RateKind::Instances,
                value: 1,
                period: interval,
            }],
            select: Select::Max,
        },
        warm_up: Duration::ZERO,
        forecast: None,
        // Panic mode as the fleet sets it: its hold no longer than the down window.
        panic: Some(PanicWindow {
            threshold: 2.0,
            hold: down_window,
        }),
        ..ScalingPolicy::default()
    };
    let engine = DecisionEngine::new();
    let (s2, stats) = (scaler.clone(), balancer.stats());
    engine
        .add_service("work", policy, move || s2.sample().or(stats.sample()))
        .expect("a valid policy");
    let manager = ScalingManager::new(engine);
    manager.add_scaler("work", scaler.clone());
    let autoscaler = Autoscaler::builder(manager.clone())
        .interval(interval)
        .spawn()
        .expect("a non-zero interval");

    // The load: closed loop, each request bounded; worker `i` sends while `i` is below
    // the concurrency asked for.
    let stop = Arc::new(AtomicBool::new(false));
    let sending = Arc::new(AtomicUsize::new(concurrency));
    let mut workers = Vec::new();
    for i in 0..workers_n {
        let (balancer, stop, log) = (balancer.clone(), stop.clone(), log.clone());
        let sending = sending.clone();
        workers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if i >= sending.load(Ordering::Relaxed) {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
                let began = now_ms();
                let req = Request::get("/work")
                    .body(Full::new(Bytes::new()))
                    .expect("a request");
                let outcome = tokio::time::timeout(request_timeout, async {
                    let mut svc = balancer.clone();
                    std::future::poll_fn(|cx| svc.poll_ready(cx)).await?;
                    let res = svc.call(req).await?;
                    let status = res.status();
                    res.into_body().collect().await?;
                    if status == StatusCode::OK {
                        Ok(())
                    } else {
                        Err(BoxError::from(format!("status {status}")))
                    }
                })
                .await
                .unwrap_or_else(|_| Err(format!("no answer within {request_timeout:?}").into()));
                let mut log = lock(&log);
                match outcome {
                    Ok(()) => log.ok += 1,
                    Err(e) => {
                        log.failed += 1;
                        if log.failures.len() < 2000 {
                            log.failures.push((began, now_ms(), e.to_string()));
                        }
                    }
                }
            }
        }));
    }

    // Every 20 ms: the most instances and processes seen at once, every pid.
    let watcher = tokio::spawn({
        let (scaler, log) = (scaler.clone(), log.clone());
        async move {
            loop {
                let details = scaler.instance_details();
                let current = scaler.current();
                let pids: Vec<u32> = details.iter().filter_map(|d| d.pid).collect();
                {
                    let mut log = lock(&log);
                    log.max_current = log.max_current.max(current);
                    log.max_processes = log.max_processes.max(pids.len());
                    log.pids_ever.extend(pids);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    });

    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .unwrap_or_else(|e| {
            eprintln!("autoscale-host: cannot listen on {listen}: {e}");
            std::process::exit(1);
        });
    let (shutdown_tx, mut shutdown_rx) = tokio::sync::mpsc::channel::<()>(1);
    let status = {
        let (scaler, manager, log) = (scaler.clone(), manager.clone(), log.clone());
        move || status_json(&scaler, &manager, &log)
    };
    let status = Arc::new(status);
    loop {
        let conn = tokio::select! {
            c = listener.accept() => c,
            _ = shutdown_rx.recv() => break,
        };
        let Ok((stream, _)) = conn else { continue };
        let (status, shutdown_tx) = (status.clone(), shutdown_tx.clone());
        let sending = sending.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let (status, shutdown_tx) = (status.clone(), shutdown_tx.clone());
                let sending = sending.clone();
                async move {
                    let res = match (req.method().as_str(), req.uri().path()) {
                        ("GET", "/status") => Response::new(Full::new(Bytes::from(status()))),
                        ("POST", "/load") => {
                            let c = req
                                .uri()
                                .query()
                                .and_then(|q| q.strip_prefix("c="))
                                .and_then(|c| c.parse::<usize>().ok());
                            match c {
                                Some(c) if c <= workers_n => {
                                    sending.store(c, Ordering::Relaxed);
                                    Response::new(Full::new(Bytes::new()))
                                }
                                _ => Response::builder()
                                    .status(StatusCode::BAD_REQUEST)
                                    .body(Full::new(Bytes::from(format!(
                                        "give ?c=N with N at most {workers_n}"
                                    ))))
                                    .expect("a response"),
                            }
                        }
                        ("POST", "/shutdown") => {
                            let _ = shutdown_tx.try_send(());
                            Response::new(Full::new(Bytes::new()))
                        }
                        _ => Response::builder()
                            .status(StatusCode::NOT_FOUND)
                            .body(Full::new(Bytes::new()))
                            .expect("a response"),
                    };
                    Ok::<_, Infallible>(res)
                }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
    autoscaler.stop().await;
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        let _ = w.await;
    }
    watcher.abort();
    scaler.shutdown().await;
    let left = scaler.instance_details().len();
    println!("autoscale-host: shut down, {left} instances left");
    std::process::exit(if left == 0 { 0 } else { 1 });
}

fn status_json<S: Send + 'static>(
    scaler: &ProcessScaler<S>,
    manager: &ScalingManager,
    log: &Shared,
) -> String {
    let actions: Vec<serde_json::Value> = manager
        .history()
        .into_iter()
        .filter_map(|e| match e {
            AuditEntry::Action {
                at_unix_ms,
                from,
                to,
                now,
                error,
                ..
            } => Some(serde_json::json!({
                "at": at_unix_ms, "from": from, "to": to, "now": now, "error": error,
            })),
            _ => None,
        })
        .collect();
    let history = manager.engine().history("work");
    let decisions = history.len();
    let last_decision = history
        .last()
        .and_then(|d| serde_json::to_value(d).ok())
        .unwrap_or_default();
    let sample = scaler.sample();
    let log = lock(log);
    serde_json::json!({
        "now": now_ms(),
        "current": scaler.current(),
        "sample_ready": sample.per_instance.iter().filter(|i| i.ready).count(),
        "instances": scaler.instance_details(),
        "restarts": scaler.restarts(),
        "ok": log.ok,
        "failed": log.failed,
        "failures": log.failures,
        "dispatched": log.dispatched,
        "dispatched_unhealthy": log.dispatched_unhealthy,
        "health_changes": log.health_changes,
        "actions": actions,
        "decisions": decisions,
        "last_decision": last_decision,
        "max_current": log.max_current,
        "max_processes": log.max_processes,
        "pids_ever": log.pids_ever,
    })
    .to_string()
}
