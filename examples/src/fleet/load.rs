//! The fleet's load generator (`--load ramp|step|spike --duration 60s`) and chaos
//! (`--chaos kill-one`): open-loop requests to the gateway over real sockets, a mix of
//! training runs, budget and report reads (Zipf over the hottest users) and a few
//! writes, with a summary at the end.

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::sync::watch;
use tower_autoscale::{AuditEntry, InstanceState};

use super::{Fleet, Shape};

/// Users the generator reads (Zipf over them: the hottest first).
pub const ZIPF_USERS: usize = 1_000;
/// Requests outstanding at most; beyond it the generator skips (and counts) a send.
const MAX_OUTSTANDING: u64 = 2_048;

/// What to drive.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// The shape of the request rate.
    pub shape: Shape,
    /// For how long.
    pub duration: Duration,
    /// Kill a training instance half-way.
    pub chaos: bool,
    /// After the load, wait (at most 30 s) for training to scale back down to this
    /// many instances before the summary (the demonstration shows the whole cycle).
    pub settle_to: Option<usize>,
}

/// Requests per second at fraction `x` of the run: a ramp from 10 to 300, a step from
/// 20 to 250 at the middle, or 20 with a spike of 300 in the middle third.
pub fn rate_at(shape: Shape, x: f64) -> f64 {
    match shape {
        Shape::Ramp => 10.0 + 290.0 * x.clamp(0.0, 1.0),
        Shape::Step => {
            if x < 0.5 {
                20.0
            } else {
                250.0
            }
        }
        Shape::Spike => {
            if (1.0 / 3.0..2.0 / 3.0).contains(&x) {
                300.0
            } else {
                20.0
            }
        }
    }
}

/// A Zipf(1.0) sampler over `n` ranks (0 the most frequent), with its own xorshift.
#[derive(Debug, Clone)]
pub struct Zipf {
    cdf: Vec<f64>,
    x: u64,
}

impl Zipf {
    /// Over `n` ranks, seeded.
    pub fn new(n: usize, seed: u64) -> Self {
        let mut sum = 0.0;
        let mut cdf: Vec<f64> = (1..=n.max(1))
            .map(|i| {
                sum += 1.0 / i as f64;
                sum
            })
            .collect();
        cdf.iter_mut().for_each(|p| *p /= sum);
        Self { cdf, x: seed | 1 }
    }

    /// A uniform number in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        self.x ^= self.x << 13;
        self.x ^= self.x >> 7;
        self.x ^= self.x << 17;
        (self.x >> 11) as f64 / (1u64 << 53) as f64
    }

    /// The next rank.
    pub fn next_rank(&mut self) -> usize {
        let u = self.uniform();
        self.cdf.partition_point(|&p| p < u).min(self.cdf.len() - 1)
    }
}

/// Counts of one kind of request.
#[derive(Debug, Default)]
pub struct Class {
    ok: AtomicU64,
    failed: AtomicU64,
    limited: AtomicU64,
    latencies: Mutex<Vec<Duration>>,
}

impl Class {
    fn record(&self, status: Option<StatusCode>, took: Duration) {
        match status {
            Some(s) if s.is_success() => {
                self.ok.fetch_add(1, Ordering::Relaxed);
                self.latencies
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(took);
            }
            Some(StatusCode::TOO_MANY_REQUESTS) => {
                self.limited.fetch_add(1, Ordering::Relaxed);
            }
            _ => {
                self.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// (ok, failed, rate-limited, p50, p99).
    pub fn figures(&self) -> (u64, u64, u64, Duration, Duration) {
        let mut l = self
            .latencies
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        l.sort();
        let pct = |q: f64| {
            l.get(((l.len().max(1) - 1) as f64 * q) as usize)
                .copied()
                .unwrap_or_default()
        };
        (
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
            self.limited.load(Ordering::Relaxed),
            pct(0.5),
            pct(0.99),
        )
    }
}

/// What a load run did; printed at the end.
#[derive(Debug, Default)]
pub struct Summary {
    /// Per kind of request: training, budget, reports, writes.
    pub classes: Vec<(&'static str, Arc<Class>)>,
    /// Sends skipped because too many were outstanding.
    pub skipped: u64,
    /// Cache figures per service at the end: (service, memory hit %, disk hit %, origin loads).
    pub caches: Vec<(String, f64, f64, u64)>,
    /// Scaling actions during the run: (seconds in, by, from, to).
    pub actions: Vec<(f64, String, usize, usize)>,
    /// Most training instances at once.
    pub peak: usize,
    /// Training instances at the end.
    pub end_instances: usize,
    /// The instance killed, if any: (port, seconds in).
    pub killed: Option<(u16, f64)>,
    /// Crash restarts.
    pub restarts: u64,
    /// Seconds the run took.
    pub secs: f64,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "\nload summary ({:.0} s):", self.secs)?;
        writeln!(
            f,
            "  {:<9} {:>8} {:>7} {:>8} {:>10} {:>10}",
            "requests", "ok", "failed", "limited", "p50", "p99"
        )?;
        for (name, c) in &self.classes {
            let (ok, failed, limited, p50, p99) = c.figures();
            writeln!(
                f,
                "  {name:<9} {ok:>8} {failed:>7} {limited:>8} {:>8.1}ms {:>8.1}ms",
                p50.as_secs_f64() * 1e3,
                p99.as_secs_f64() * 1e3
            )?;
        }
        if self.skipped > 0 {
            writeln!(
                f,
                "  {} sends skipped (over {MAX_OUTSTANDING} outstanding)",
                self.skipped
            )?;
        }
        for (name, mem, disk, loads) in &self.caches {
            writeln!(
                f,
                "  cache {name:<8} hits {:.1}% (memory {mem:.1}%, disk {disk:.1}%), {loads} origin loads",
                mem + disk
            )?;
        }
        writeln!(
            f,
            "  training: peak {} instances, {} at the end, {} crash restarts",
            self.peak, self.end_instances, self.restarts
        )?;
        if let Some((port, at)) = self.killed {
            writeln!(
                f,
                "  chaos: killed the instance on port {port} at {at:.1} s"
            )?;
        }
        writeln!(f, "  scaling actions: {}", self.actions.len())?;
        for (at, by, from, to) in &self.actions {
            writeln!(f, "    {at:>6.1} s  {by}: {from} -> {to}")?;
        }
        Ok(())
    }
}

/// Sends one request and records it in `class`.
async fn send(
    client: Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    gateway: SocketAddr,
    (method, path, body, user): (Method, String, Option<String>, Option<u64>),
    class: Arc<Class>,
    token: Arc<str>,
) {
    let write = method == Method::PUT;
    let mut req = Request::builder()
        .method(method)
        .uri(format!("http://{gateway}{path}"));
    if write {
        req = req.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
    }
    if let Some(u) = user {
        req = req.header("x-user-id", u.to_string());
    }
    if body.is_some() {
        req = req.header(http::header::CONTENT_TYPE, "application/json");
    }
    let Ok(req) = req.body(Full::new(Bytes::from(body.unwrap_or_default()))) else {
        class.record(None, Duration::ZERO);
        return;
    };
    let start = Instant::now();
    let status = match tokio::time::timeout(Duration::from_secs(30), client.request(req)).await {
        Ok(Ok(res)) => {
            let status = res.status();
            match res.into_body().collect().await {
                Ok(_) => Some(status),
                Err(_) => None,
            }
        }
        _ => None,
    };
    class.record(status, start.elapsed());
}

/// Kills one ready training instance with SIGKILL; its port.
pub fn kill_one(fleet: &Fleet) -> Option<u16> {
    let victim = fleet
        .scaler
        .instance_details()
        .into_iter()
        .filter(|d| d.state == InstanceState::Ready)
        .filter_map(|d| Some((d.port, d.pid?)))
        .next_back()?;
    let pid = nix::unistd::Pid::from_raw(i32::try_from(victim.1).ok()?);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).ok()?;
    Some(victim.0)
}

/// Drives `plan` against the fleet's gateway until it ends or `stop` turns true.
pub async fn run(fleet: &Fleet, plan: Plan, mut stop: watch::Receiver<bool>) -> Summary {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(512)
        .build_http();
    let classes: Vec<(&'static str, Arc<Class>)> = ["training", "budget", "reports", "writes"]
        .into_iter()
        .map(|n| (n, Arc::new(Class::default())))
        .collect();
    let started = Instant::now();
    let started_ms = super::unix_ms();
    let mut summary = Summary {
        peak: fleet.scaler.current(),
        ..Summary::default()
    };
    let outstanding = Arc::new(AtomicU64::new(0));
    // Writes carry the fleet's token, as the gateway asks of every write.
    let token: Arc<str> = Arc::from(fleet.token.as_str());
    let mut zipf = Zipf::new(ZIPF_USERS, 0x5EED);
    let mut next = Instant::now();
    let mut chaos_done = !plan.chaos;
    let mut tasks = tokio::task::JoinSet::new();
    while started.elapsed() < plan.duration && !*stop.borrow() {
        let x = started.elapsed().as_secs_f64() / plan.duration.as_secs_f64();
        if !chaos_done && x >= 0.5 {
            chaos_done = true;
            if let Some(port) = kill_one(fleet) {
                summary.killed = Some((port, started.elapsed().as_secs_f64()));
                tracing::warn!(port, "chaos: killed a training instance");
            }
        }
        // Each tick sends one request of the mix.
        let rate = rate_at(plan.shape, x).max(1.0);
        next += Duration::from_secs_f64(1.0 / rate);
        tokio::select! {
            _ = tokio::time::sleep_until(next.into()) => {}
            _ = stop.changed() => break,
        }
        while tasks.try_join_next().is_some() {}
        summary.peak = summary.peak.max(fleet.scaler.current());
        if outstanding.load(Ordering::Relaxed) >= MAX_OUTSTANDING {
            summary.skipped += 1;
            continue;
        }
        let pick = zipf.uniform();
        let user = zipf.next_rank() as u64;
        let (class, method, path, body, as_user) = if pick < 0.5 {
            (
                0,
                Method::GET,
                "/api/v1/training/run".to_string(),
                None,
                None,
            )
        } else if pick < 0.85 {
            (
                1,
                Method::GET,
                format!("/api/v1/budget/users/{user}"),
                None,
                Some(user),
            )
        } else if pick < 0.97 {
            (
                2,
                Method::GET,
                format!("/api/v1/reports/users/{user}"),
                None,
                Some(user),
            )
        } else if pick < 0.999 {
            let spent = (zipf.uniform() * 100.0).round();
            (
                3,
                Method::PUT,
                format!("/api/v1/budget/users/{user}"),
                Some(format!("{{\"spent\":{spent}}}")),
                Some(user),
            )
        } else {
            let rate = 1.0 + (zipf.uniform() * 20.0).round() / 10.0;
            (
                3,
                Method::PUT,
                "/api/v1/reports/providers/mistral".to_string(),
                Some(format!("{{\"rate\":{rate}}}")),
                None,
            )
        };
        let (client, c, outstanding) = (
            client.clone(),
            classes[class].1.clone(),
            outstanding.clone(),
        );
        let (gateway, token) = (fleet.gateway, token.clone());
        outstanding.fetch_add(1, Ordering::Relaxed);
        tasks.spawn(async move {
            send(client, gateway, (method, path, body, as_user), c, token).await;
            outstanding.fetch_sub(1, Ordering::Relaxed);
        });
    }
    // Requests in flight finish (each is bounded by its own timeout).
    while tasks.join_next().await.is_some() {}
    if let Some(min) = plan.settle_to {
        // Down to `min`, and the action recorded (it is, once its instance drained).
        let settled = || {
            fleet.scaler.current() <= min
                && fleet.manager.history().iter().any(|e| {
                    matches!(e, AuditEntry::Action { at_unix_ms, now, .. }
                        if *at_unix_ms >= started_ms && *now <= min)
                })
        };
        let until = Instant::now() + Duration::from_secs(30);
        let was_up = fleet.scaler.current() > min || summary.peak > min;
        if was_up && !settled() {
            tracing::info!(min, "waiting for training to scale back down");
            while !settled() && Instant::now() < until && !*stop.borrow() {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                    _ = stop.changed() => break,
                }
            }
        }
    }
    summary.secs = started.elapsed().as_secs_f64();
    summary.classes = classes;
    let o = fleet.state.overview();
    for s in &o.services {
        if let Some(c) = &s.cache {
            summary.caches.push((
                s.name.clone(),
                c.memory_hit_pct,
                c.disk_hit_pct,
                c.origin_loads,
            ));
        }
    }
    let g = super::gateway::CacheView::from(fleet.state.cache());
    summary.caches.push((
        "gateway".into(),
        g.memory_hit_pct,
        g.disk_hit_pct,
        g.origin_loads,
    ));
    summary.actions = fleet
        .manager
        .history()
        .iter()
        .filter_map(|e| match e {
            AuditEntry::Action {
                at_unix_ms,
                by,
                from,
                now,
                ..
            } if *at_unix_ms >= started_ms => Some((
                (*at_unix_ms - started_ms) as f64 / 1e3,
                by.to_string(),
                *from,
                *now,
            )),
            _ => None,
        })
        .collect();
    summary.end_instances = fleet.scaler.current();
    summary.restarts = fleet.scaler.restarts();
    summary
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn load_shapes_and_zipf() {
        assert_eq!(rate_at(Shape::Ramp, 0.0), 10.0);
        assert_eq!(rate_at(Shape::Ramp, 1.0), 300.0);
        assert_eq!(rate_at(Shape::Step, 0.4), 20.0);
        assert_eq!(rate_at(Shape::Step, 0.6), 250.0);
        assert_eq!(rate_at(Shape::Spike, 0.5), 300.0);
        assert_eq!(rate_at(Shape::Spike, 0.9), 20.0);
        // Zipf(1.0) over 1,000: rank 0 about 13% of draws, all in range.
        let mut z = Zipf::new(1_000, 3);
        let draws: Vec<usize> = (0..20_000).map(|_| z.next_rank()).collect();
        assert!(draws.iter().all(|r| *r < 1_000));
        let top = draws.iter().filter(|r| **r == 0).count() as f64 / 20_000.0;
        assert!((0.11..0.16).contains(&top), "{top}");
    }
}
