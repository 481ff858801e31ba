//! The fleet's figures, measured in one run (the README's table):
//!
//! 1. throughput with 3 training instances vs 1, at equal per-instance capacity (each
//!    instance serves 4 requests at a time, 20 ms each: 200 requests/s), closed loop
//!    through the gateway;
//! 2. hit rate and p50 latency of budget reads on a Zipf(1.0) workload, with the
//!    service's two-tier cache vs without it (origin round trip 20 ms);
//! 3. time from a training instance's death (SIGKILL) to the last request the
//!    balancer sends it, under load, and how many client requests failed;
//! 4. the gateway's balancer as a plain reverse proxy vs HAProxy (roundrobin and
//!    leastconn) in front of the same three loopback backends (a child process of
//!    their own) under the same `wrk` load, with 1 and then 2 threads each:
//!    requests/s and p99 (skipped, with a note, when `haproxy` or `wrk` is not
//!    installed: `apt-get install -y haproxy wrk`).
//!
//! ```sh
//! cargo run --release -p examples --example fleet_figures
//! cargo run --release -p examples --example fleet_figures -- --proxy-only   # 4 alone
//! # 4 alone, 7 rounds, and at 1 thread also the forwarder on a current-thread runtime
//! # (one event loop, as HAProxy's `nbthread 1`) beside the 1-worker multi-thread one:
//! cargo run --release -p examples --example fleet_figures -- --proxy-only --rounds 7 --current-thread
//! ```
//!
//! Section 4 is closed loop (`wrk`: each connection sends its next request when the last
//! answer is in), so it measures throughput and the latency of a saturated proxy.
//! `peer-benches/open_loop.sh` compares the same proxies at fixed offered rates (open
//! loop, `oha --latency-correction`) and `peer-benches/per_request.sh` their CPU time,
//! instructions and system calls per request; both run the forwarder as a process of its
//! own with `--role forwarder` and the backends with `--role backends --listen A,B,C`
//! (see [`forwarder_role`] and [`serve_backends`]).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use examples::fleet::load::Zipf;
use examples::fleet::training::Work;
use examples::fleet::{BoxError, Config, Fleet, ViewMode};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tower::ServiceExt;
use tower_balance_ext::forward::{self, Exchange, Forwarder, Upstream};
use tower_balance_ext::{discover, BalancerBuilder, HttpEndpoint, Pick};

/// Closed-loop figures: requests that succeeded, failed, and the latencies.
#[derive(Default)]
struct Run {
    ok: AtomicU64,
    failed: AtomicU64,
    latencies: Mutex<Vec<Duration>>,
}

impl Run {
    fn pct(&self, q: f64) -> Duration {
        let mut l = self.latencies.lock().unwrap().clone();
        l.sort();
        examples::stats::percentile(&l, q)
    }
}

/// `workers` clients, each sending `path(worker, i)` in turn until `duration` is up or
/// it has sent `per_worker` requests.
async fn drive<F>(
    gateway: SocketAddr,
    workers: usize,
    duration: Duration,
    per_worker: usize,
    path: F,
) -> Arc<Run>
where
    F: Fn(usize, usize) -> String + Send + Sync + 'static,
{
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(workers)
        .build_http();
    let run = Arc::new(Run::default());
    let path = Arc::new(path);
    let end = Instant::now() + duration;
    let tasks: Vec<_> = (0..workers)
        .map(|w| {
            let (client, run, path) = (client.clone(), run.clone(), path.clone());
            tokio::spawn(async move {
                for i in 0..per_worker {
                    if Instant::now() >= end {
                        break;
                    }
                    let uri = format!("http://{gateway}{}", path(w, i));
                    let start = Instant::now();
                    let ok = match client.get(uri.parse().expect("a valid uri")).await {
                        Ok(res) => {
                            res.status() == StatusCode::OK
                                && res.into_body().collect().await.is_ok()
                        }
                        Err(_) => false,
                    };
                    if ok {
                        run.ok.fetch_add(1, Ordering::Relaxed);
                        run.latencies.lock().unwrap().push(start.elapsed());
                    } else {
                        run.failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        let _ = t.await;
    }
    run
}

fn config() -> Config {
    Config {
        port: 0,
        view: ViewMode::Off,
        interval: Duration::from_secs(3600),
        // The closed-loop clients all come from 127.0.0.1: no per-client limit here.
        rate_limit: 1_000_000,
        ..Config::default()
    }
}

/// [`config`] with `instances` (min, max) training instances, each serving
/// `concurrency` requests at a time that wait `wait` (no CPU work).
fn training_config(instances: (usize, usize), wait: Duration, concurrency: usize) -> Config {
    Config {
        instances,
        work: Work {
            wait,
            cpu: Duration::ZERO,
            concurrency,
        },
        ..config()
    }
}

/// 1. Throughput, 3 instances vs 1.
async fn scaling() -> Result<(f64, f64), BoxError> {
    let cfg = training_config((1, 3), Duration::from_millis(20), 4);
    let fleet = Fleet::start(&cfg).await?;
    let mut rps = Vec::new();
    for n in [1, 3] {
        fleet.scaler.scale_to(n).await?;
        // Warm the pools, then measure.
        drive(
            fleet.gateway,
            48,
            Duration::from_secs(1),
            usize::MAX,
            |_, _| "/api/v1/training/run".into(),
        )
        .await;
        let secs = 4.0;
        let run = drive(
            fleet.gateway,
            48,
            Duration::from_secs_f64(secs),
            usize::MAX,
            |_, _| "/api/v1/training/run".into(),
        )
        .await;
        let r = run.ok.load(Ordering::Relaxed) as f64 / secs;
        println!(
            "  {n} instance(s): {r:.0} requests/s ({} failed, p50 {:.1} ms, p99 {:.1} ms)",
            run.failed.load(Ordering::Relaxed),
            run.pct(0.5).as_secs_f64() * 1e3,
            run.pct(0.99).as_secs_f64() * 1e3
        );
        rps.push(r);
    }
    fleet.shutdown().await;
    Ok((rps[0], rps[1]))
}

/// 2. Zipf reads of budget, with and without the cache: (hit %, p50 with, p50 without).
async fn cache() -> Result<(f64, Duration, Duration), BoxError> {
    let mut out = Vec::new();
    for no_cache in [false, true] {
        let mut cfg = config();
        cfg.no_cache = no_cache;
        let fleet = Fleet::start(&cfg).await?;
        let zipfs: Vec<Mutex<Zipf>> = (0..16)
            .map(|w| Mutex::new(Zipf::new(1_000, 7 + w)))
            .collect();
        let run = drive(
            fleet.gateway,
            16,
            Duration::from_secs(60),
            400,
            move |w, _| {
                format!(
                    "/api/v1/budget/users/{}",
                    zipfs[w].lock().unwrap().next_rank()
                )
            },
        )
        .await;
        let hits = fleet
            .data_service("budget")
            .and_then(|s| s.cache.as_ref())
            .map(|c| c.stats().hit_ratio() * 100.0)
            .unwrap_or(0.0);
        println!(
            "  {}: {} reads, {} failed, p50 {:.2} ms, p99 {:.1} ms, hit rate {hits:.1}%, {} origin reads",
            if no_cache { "without the cache" } else { "with the cache   " },
            run.ok.load(Ordering::Relaxed),
            run.failed.load(Ordering::Relaxed),
            run.pct(0.5).as_secs_f64() * 1e3,
            run.pct(0.99).as_secs_f64() * 1e3,
            fleet.db.reads()
        );
        out.push((hits, run.pct(0.5)));
        fleet.shutdown().await;
    }
    Ok((out[0].0, out[0].1, out[1].1))
}

/// Death to zero traffic (figure 3): median ms to the last request sent to it, median
/// ms to its removal from the balancer, failed client requests, trials.
async fn death() -> Result<(f64, f64, u64, usize), BoxError> {
    let cfg = training_config((3, 3), Duration::from_millis(5), 64);
    let fleet = Fleet::start(&cfg).await?;
    let gateway = fleet.gateway;
    let load = tokio::spawn(drive(
        gateway,
        16,
        Duration::from_secs(12),
        usize::MAX,
        |_, _| "/api/v1/training/run".into(),
    ));
    let (mut times, mut removals) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let details = fleet.scaler.instance_details();
        let Some(victim) = details.iter().find(|d| d.pid.is_some()) else {
            continue;
        };
        let (port, pid) = (victim.port, victim.pid.unwrap_or(0));
        let name = format!("127.0.0.1:{port}");
        let sent = |f: &Fleet| {
            f.state
                .load("training")?
                .snapshot()
                .endpoints
                .iter()
                .find(|e| e.name == name)
                .map(|e| e.requests)
        };
        let mut last_count = sent(&fleet);
        let killed = Instant::now();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        )?;
        let mut last_sent = killed;
        let mut removed = None;
        // Watch until its replacement (a new process on the same port) is up.
        while killed.elapsed() < Duration::from_secs(2) {
            let replaced = fleet
                .scaler
                .instance_details()
                .iter()
                .any(|d| d.port == port && d.pid.is_some_and(|p| p != pid));
            if replaced {
                break;
            }
            let now = sent(&fleet);
            if now.is_some() && now != last_count {
                last_count = now;
                last_sent = Instant::now();
            }
            if now.is_none() && removed.is_none() {
                removed = Some(killed.elapsed());
            }
            tokio::time::sleep(Duration::from_micros(500)).await;
        }
        times.push(last_sent.duration_since(killed));
        removals.push(removed.unwrap_or(Duration::MAX));
    }
    let run = load.await?;
    fleet.shutdown().await;
    times.sort();
    let median = times
        .get(times.len() / 2)
        .copied()
        .unwrap_or_default()
        .as_secs_f64()
        * 1e3;
    println!(
        "  death to the last request sent to it: {times:?} (median {median:.1} ms, polled every 0.5 ms); out of the balancer after {removals:?}; client requests {} ok, {} failed",
        run.ok.load(Ordering::Relaxed),
        run.failed.load(Ordering::Relaxed)
    );
    removals.sort();
    let removed = removals
        .get(removals.len() / 2)
        .copied()
        .unwrap_or_default()
        .as_secs_f64()
        * 1e3;
    Ok((
        median,
        removed,
        run.failed.load(Ordering::Relaxed),
        times.len(),
    ))
}

/// Three tiny backends in a child process of this binary (`--role backends`), so that
/// neither proxy shares a process or a runtime with them: each proxy under test is one
/// process between `wrk` and the backends' process. The child prints its addresses on
/// one line and exits when its stdin closes (or when killed).
struct Backends {
    child: std::process::Child,
    addrs: Vec<SocketAddr>,
}

impl Backends {
    fn start() -> Result<Self, BoxError> {
        use std::io::BufRead;
        let mut child = std::process::Command::new(std::env::current_exe()?)
            .args(["--role", "backends"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()?;
        let mut line = String::new();
        let stdout = child.stdout.take().ok_or("no stdout from the backends")?;
        std::io::BufReader::new(stdout).read_line(&mut line)?;
        let addrs = line
            .split_whitespace()
            .map(str::parse)
            .collect::<Result<Vec<SocketAddr>, _>>()?;
        if addrs.len() != 3 {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("the backends' process printed {line:?}").into());
        }
        Ok(Self { child, addrs })
    }
}

impl Drop for Backends {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `--role backends` child: three backends, their addresses on stdout, until
/// stdin closes. With `listen` (`--listen A,B,C`, for scripts, whose background
/// processes have no stdin to watch), on those addresses until killed.
async fn serve_backends(listen: Option<Vec<SocketAddr>>) -> Result<(), BoxError> {
    let fixed = listen.is_some();
    let wanted = listen.unwrap_or_else(|| vec![SocketAddr::from(([127, 0, 0, 1], 0)); 3]);
    let mut addrs = Vec::new();
    for addr in wanted {
        addrs.push(backend(addr).await?.to_string());
    }
    println!("{}", addrs.join(" "));
    if fixed {
        std::future::pending::<()>().await;
    }
    tokio::task::spawn_blocking(|| {
        let mut sink = Vec::new();
        let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
    })
    .await?;
    Ok(())
}

/// A tiny backend on `addr`: answers "ok" at once.
async fn backend(addr: SocketAddr) -> Result<SocketAddr, BoxError> {
    let listener = TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|_req: Request<Incoming>| async {
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok\n"))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok(addr)
}

/// The gateway's balancer as a plain reverse proxy: request and response bodies stream
/// through, one pooled client per backend.
/// It runs on its own runtime of `threads` worker threads (kept for the rest of the
/// process), as HAProxy gets `nbthread` of the same count.
fn our_proxy(
    backends: &[SocketAddr],
    pick: Pick,
    lean: bool,
    threads: Threads,
) -> Result<SocketAddr, BoxError> {
    let backends = backends.to_vec();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let built = match threads {
            Threads::CurrentThread => tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build(),
            Threads::Workers(n) => tokio::runtime::Builder::new_multi_thread()
                .worker_threads(n)
                .enable_all()
                .build(),
        };
        let rt = match built {
            Ok(rt) => rt,
            Err(e) => {
                let _ = tx.send(Err(e.to_string()));
                return;
            }
        };
        rt.block_on(async move {
            let serving = if lean {
                serve_forwarder(&backends, pick).await
            } else {
                serve_proxy(&backends, pick).await
            };
            match serving {
                Ok(addr) => {
                    let _ = tx.send(Ok(addr));
                    std::future::pending::<()>().await;
                }
                Err(e) => {
                    let _ = tx.send(Err(e.to_string()));
                }
            }
        });
    });
    Ok(rx.recv()??)
}

/// The balancer in front of `tower_balance_ext::forward`'s lean HTTP/1.1 path: pooled
/// raw upstream connections, heads parsed in place, one task per client connection.
async fn serve_forwarder(backends: &[SocketAddr], pick: Pick) -> Result<SocketAddr, BoxError> {
    serve_forwarder_on(SocketAddr::from(([127, 0, 0, 1], 0)), backends, pick).await
}

/// [`serve_forwarder`] listening on `listen`.
async fn serve_forwarder_on(
    listen: SocketAddr,
    backends: &[SocketAddr],
    pick: Pick,
) -> Result<SocketAddr, BoxError> {
    let upstreams: Vec<(SocketAddr, Upstream)> =
        backends.iter().map(|a| (*a, Upstream::new(*a))).collect();
    let balancer = BalancerBuilder::new(pick)
        .failure_if(forward::server_error)
        .retry(Exchange::retry_copy)
        .build(discover::fixed(upstreams))?;
    let listener = TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(Forwarder::new(balancer).serve(listener));
    Ok(addr)
}

/// The proxy's accept loop (hyper's server and hyper-util's client around the
/// balancer), spawned on the current runtime; its address.
async fn serve_proxy(backends: &[SocketAddr], pick: Pick) -> Result<SocketAddr, BoxError> {
    let endpoints: Vec<_> = backends
        .iter()
        .map(|a| (*a, HttpEndpoint::<Incoming>::new(*a)))
        .collect();
    let balancer = BalancerBuilder::new(pick)
        .http()
        .build(discover::fixed(endpoints))?;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let balancer = balancer.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let balancer = balancer.clone();
                    async move {
                        Ok::<_, Infallible>(match balancer.oneshot(req).await {
                            Ok(res) => res.map(|b| b.boxed()),
                            Err(e) => Response::builder()
                                .status(StatusCode::BAD_GATEWAY)
                                .body(
                                    Full::new(Bytes::from(e.to_string()))
                                        .map_err(|never| match never {})
                                        .boxed(),
                                )
                                .unwrap_or_default(),
                        })
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok(addr)
}

/// Runs `wrk` for `secs` against `addr`: (requests/s, p99 ms).
fn wrk(addr: SocketAddr, secs: u64) -> Result<(f64, f64), BoxError> {
    let out = std::process::Command::new("wrk")
        .args(["-t1", "-c64", &format!("-d{secs}s"), "--latency"])
        .arg(format!("http://{addr}/"))
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let rps = text
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .ok_or_else(|| format!("no Requests/sec in wrk's output: {text}"))?;
    let p99 = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("99%"))
        .map(|v| v.trim())
        .and_then(|v| {
            let (num, unit) = v.split_at(v.find(|c: char| c.is_alphabetic()).unwrap_or(v.len()));
            let n: f64 = num.parse().ok()?;
            Some(match unit {
                "us" => n / 1e3,
                "ms" => n,
                "s" => n * 1e3,
                _ => n,
            })
        })
        .ok_or_else(|| format!("no 99% in wrk's output: {text}"))?;
    Ok((rps, p99))
}

/// HAProxy in front of `backends` with `balance`, on a free port; the child process.
fn haproxy(
    backends: &[SocketAddr],
    balance: &str,
    threads: usize,
    dir: &std::path::Path,
) -> Result<(std::process::Child, SocketAddr), BoxError> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let servers: String = backends
        .iter()
        .enumerate()
        .map(|(i, a)| format!("    server b{i} {a}\n"))
        .collect();
    let cfg = format!(
        "global\n    maxconn 4096\n    nbthread {threads}\ndefaults\n    mode http\n    timeout connect 5s\n    timeout client 30s\n    timeout server 30s\n    option http-keep-alive\nfrontend f\n    bind 127.0.0.1:{port}\n    default_backend b\nbackend b\n    balance {balance}\n    http-reuse always\n{servers}"
    );
    let path = dir.join(format!("haproxy-{balance}-{threads}.cfg"));
    std::fs::write(&path, cfg)?;
    let child = std::process::Command::new("haproxy")
        .arg("-f")
        .arg(&path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let end = Instant::now() + Duration::from_secs(5);
    while std::net::TcpStream::connect(addr).is_err() {
        if Instant::now() > end {
            return Err("haproxy did not start".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok((child, addr))
}

/// Rounds of `wrk` per proxy, unless `--rounds N`.
const ROUNDS: usize = 5;

/// The runtime a proxy of ours runs on.
#[derive(Clone, Copy)]
enum Threads {
    /// A multi-thread runtime of this many workers.
    Workers(usize),
    /// A current-thread runtime: one event loop.
    CurrentThread,
}

/// What section 4 runs.
#[derive(Clone, Copy)]
struct ProxyRun {
    rounds: usize,
    /// At 1 thread, also the forwarder on a current-thread runtime.
    current_thread: bool,
}

/// One proxy's figures in section 4.
struct ProxyRow {
    /// "ours, hyper", "ours, lean" or "HAProxy".
    proxy: &'static str,
    /// HAProxy's name of the policy: "roundrobin" or "leastconn".
    policy: &'static str,
    threads: usize,
    rps: f64,
    p99: f64,
}

/// Worker threads given to each proxy (ours: tokio workers; HAProxy: `nbthread`).
const PROXY_THREADS: [usize; 2] = [1, 2];

/// 4. Ours vs HAProxy, with 1 and then 2 threads each; medians of the rounds.
async fn proxies(run: ProxyRun) -> Result<Option<Vec<ProxyRow>>, BoxError> {
    let rounds = run.rounds;
    let have = |p: &str| {
        std::process::Command::new("sh")
            .args(["-c", &format!("command -v {p}")])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    // Setting up starts processes and waits for them: off the runtime's workers.
    use tokio::task::block_in_place as setup;
    if !setup(|| have("haproxy") && have("wrk")) {
        println!("  skipped: needs haproxy and wrk (apt-get install -y haproxy wrk)");
        return Ok(None);
    }
    let backend_process = setup(Backends::start)?;
    let backends = backend_process.addrs.clone();
    let dir = tempfile::tempdir()?;
    let mut rows = Vec::new();
    for threads in PROXY_THREADS {
        // (proxy, policy, address, HAProxy's process)
        let mut targets: Vec<(&str, &str, SocketAddr, Option<std::process::Child>)> = Vec::new();
        for balance in ["roundrobin", "leastconn"] {
            let (child, addr) = setup(|| haproxy(&backends, balance, threads, dir.path()))?;
            targets.push(("HAProxy", balance, addr, Some(child)));
        }
        let mut ours = vec![
            ("ours, hyper", false, Threads::Workers(threads)),
            ("ours, lean", true, Threads::Workers(threads)),
        ];
        if run.current_thread && threads == 1 {
            ours.push(("ours, lean ct", true, Threads::CurrentThread));
        }
        for (name, lean, runtime) in ours {
            for (balance, pick) in [
                ("roundrobin", Pick::RoundRobin),
                ("leastconn", Pick::LeastConnections),
            ] {
                let addr = setup(|| our_proxy(&backends, pick, lean, runtime))?;
                targets.push((name, balance, addr, None));
            }
        }
        let mut results: Vec<Vec<(f64, f64)>> = vec![Vec::new(); targets.len()];
        for (_, _, addr, _) in &targets {
            let addr = *addr;
            let _ = tokio::task::spawn_blocking(move || wrk(addr, 1)).await?; // warm-up
        }
        // Rounds interleave the proxies, so a noisy moment on this shared machine hits
        // them all alike; medians.
        for _round in 0..rounds {
            for (i, (_, _, addr, _)) in targets.iter().enumerate() {
                let addr = *addr;
                results[i].push(tokio::task::spawn_blocking(move || wrk(addr, 3)).await??);
            }
        }
        for ((proxy, policy, _, child), mut r) in targets.into_iter().zip(results) {
            r.sort_by(|a, b| a.0.total_cmp(&b.0));
            let rps = r[rounds / 2].0;
            let mut p: Vec<f64> = r.iter().map(|x| x.1).collect();
            p.sort_by(f64::total_cmp);
            let p99 = p[rounds / 2];
            println!(
                "  {proxy:<12} {policy:<11} {threads} thread(s) {rps:>9.0} requests/s  p99 {p99:>6.2} ms  (rounds: {r:?})"
            );
            rows.push(ProxyRow {
                proxy,
                policy,
                threads,
                rps,
                p99,
            });
            if let Some(mut c) = child {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
    Ok(Some(rows))
}

async fn figures() -> Result<(), BoxError> {
    println!("1. throughput, training instances of equal capacity (4 at a time x 20 ms = 200/s each), 48 closed-loop clients through the gateway:");
    let (one, three) = scaling().await?;
    println!("2. budget reads, Zipf(1.0) over 1,000 users, 16 clients x 400 reads, origin 20 ms:");
    let (hits, with, without) = cache().await?;
    println!("3. SIGKILL of a training instance under load (16 clients, 3 instances):");
    let (death_ms, removed_ms, death_failed, trials) = death().await?;
    println!(
        "4. reverse proxy in front of 3 loopback backends (their own process), wrk -t1 -c64, 3 s x 5 interleaved rounds (medians):"
    );
    let proxies = proxies(ProxyRun {
        rounds: ROUNDS,
        current_thread: false,
    })
    .await?;

    let improvement = 100.0 * (1.0 - with.as_secs_f64() / without.as_secs_f64().max(1e-9));
    println!("\n| figure | measured | target |");
    println!("| --- | --- | --- |");
    println!(
        "| throughput, 3 instances vs 1 | {three:.0} vs {one:.0} requests/s: **{:.2}x** | >= 2.8x |",
        three / one.max(1e-9)
    );
    println!("| cache hit rate, Zipf | **{hits:.1}%** | >= 80% |");
    println!(
        "| p50, with vs without the cache | {:.2} ms vs {:.1} ms: **{improvement:.0}% lower** | >= 70% |",
        with.as_secs_f64() * 1e3,
        without.as_secs_f64() * 1e3
    );
    println!(
        "| death (SIGKILL) to the last request sent to it, median of {trials} | **{death_ms:.1} ms** (out of the balancer after {removed_ms:.1} ms), {death_failed} client requests failed | - |"
    );
    if let Some(rows) = proxies {
        proxy_rows(&rows);
    }
    Ok(())
}

/// The table's rows for section 4: each of ours against HAProxy with the same policy
/// and thread count.
fn proxy_rows(rows: &[ProxyRow]) {
    for ours in rows.iter().filter(|r| r.proxy != "HAProxy") {
        let Some(peer) = rows
            .iter()
            .find(|r| r.proxy == "HAProxy" && r.policy == ours.policy && r.threads == ours.threads)
        else {
            continue;
        };
        let policy = if ours.policy == "roundrobin" {
            "round robin"
        } else {
            "least connections"
        };
        let path = if ours.proxy == "ours, lean" {
            "lean forwarder"
        } else if ours.proxy == "ours, lean ct" {
            "lean forwarder, current-thread runtime"
        } else {
            "hyper server + client"
        };
        println!(
            "| proxy ({path}), {policy} vs HAProxy {}, {} thread(s) each | {:.0} vs {:.0} requests/s: **{:.2}x**; p99 {:.2} vs {:.2} ms ({:.2}x) | >= 1x, p99 <= 1x |",
            peer.policy,
            ours.threads,
            ours.rps,
            peer.rps,
            ours.rps / peer.rps.max(1e-9),
            ours.p99,
            peer.p99,
            ours.p99 / peer.p99.max(1e-9)
        );
    }
}

/// The value after `flag` in `args`.
fn flag<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
}

/// Addresses given as `A,B,C` after `name`.
fn addrs(name: &str, v: &str) -> Result<Vec<SocketAddr>, BoxError> {
    v.split(',')
        .map(|a| {
            a.parse()
                .map_err(|e| format!("{name} {a}: {e}; give HOST:PORT[,HOST:PORT...]").into())
        })
        .collect()
}

/// `--role forwarder`: section 4's lean forwarder as a process of its own, so that a
/// script can time, pin and profile it like any other proxy (`peer-benches/open_loop.sh`):
///
/// ```sh
/// fleet_figures --role forwarder --listen 127.0.0.1:19000 \
///     --upstream 127.0.0.1:19101,127.0.0.1:19102,127.0.0.1:19103 \
///     --pick round-robin|least-conn --threads 1|2|...|current
/// ```
///
/// It prints its address on one line and serves until killed.
fn forwarder_role(args: &[String]) -> Result<(), BoxError> {
    let listen: SocketAddr = flag(args, "--listen")
        .unwrap_or("127.0.0.1:0")
        .parse()
        .map_err(|e| format!("--listen: {e}; give HOST:PORT"))?;
    let upstream = addrs(
        "--upstream",
        flag(args, "--upstream").ok_or("--role forwarder needs --upstream A,B,C")?,
    )?;
    let pick = match flag(args, "--pick").unwrap_or("round-robin") {
        "round-robin" => Pick::RoundRobin,
        "least-conn" => Pick::LeastConnections,
        other => return Err(format!("--pick {other}: give round-robin or least-conn").into()),
    };
    let runtime = match flag(args, "--threads").unwrap_or("1") {
        "current" => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?,
        n => match n.parse::<usize>() {
            Ok(n) if n > 0 => tokio::runtime::Builder::new_multi_thread()
                .worker_threads(n)
                .enable_all()
                .build()?,
            _ => return Err(format!("--threads {n}: give a number above 0 or current").into()),
        },
    };
    runtime.block_on(async move {
        let addr = serve_forwarder_on(listen, &upstream, pick).await?;
        println!("{addr}");
        std::future::pending::<Result<(), BoxError>>().await
    })
}

fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if flag(&args, "--role") == Some("backends") {
        let listen = match flag(&args, "--listen") {
            Some(v) => Some(addrs("--listen", v)?),
            None => None,
        };
        // One thread: the backends answer at once and leave the cores to the proxies.
        return tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(serve_backends(listen));
    }
    if flag(&args, "--role") == Some("forwarder") {
        return forwarder_role(&args);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    if let Some(role) = examples::fleet::training::from_args(&args) {
        let (port, work) = role?;
        return rt.block_on(examples::fleet::training::run(port, work));
    }
    if args.iter().any(|a| a == "--proxy-only") {
        // Section 4 alone (the one that needs haproxy and wrk).
        let rounds = match args.iter().position(|a| a == "--rounds") {
            None => ROUNDS,
            Some(i) => match args.get(i + 1).and_then(|v| v.parse::<usize>().ok()) {
                Some(n) if n > 0 => n,
                _ => {
                    eprintln!("--rounds takes a whole number of rounds above 0, e.g. --rounds 7");
                    std::process::exit(2);
                }
            },
        };
        let run = ProxyRun {
            rounds,
            current_thread: args.iter().any(|a| a == "--current-thread"),
        };
        return rt.block_on(async move {
            println!("4. reverse proxy in front of 3 loopback backends (their own process), wrk -t1 -c64, 3 s x {rounds} interleaved rounds (medians):");
            if let Some(rows) = proxies(run).await? {
                proxy_rows(&rows);
            }
            Ok(())
        });
    }
    rt.block_on(figures())
}
