//! Tail latency under slow endpoints: round robin, tower's P2C (PeakEwma and
//! PendingRequests) and tower-balance-ext's picks over the same simulated endpoints.
//!
//! ```sh
//! cargo run --release -p examples --example balance_tail
//! ```
//!
//! The endpoints are tower services whose calls sleep for a sampled latency (a base
//! plus an exponential jitter), at most 16 at a time each (more wait their turn).
//! Requests arrive as a Poisson process. It all runs on tokio's paused clock, so the
//! figures are exactly the latencies the decisions produce, free of this machine's
//! noise; the cost of a pick itself is measured by `cargo bench -p tower-balance-ext`.
//!
//! 1. Ten endpoints with latencies spread from 1 ms to 1,000 ms.
//! 2. Four endpoints of 10 ms (plus a jitter of 1 ms on average); then one, then two of
//!    them 5 ms slower, at 100, 300 and 1,000 requests per second. The target: with two
//!    slow of four, tower-balance-ext's p99 at most 1.2x the all-healthy p99. (tokio's
//!    timers tick in whole milliseconds, hence 10 ms rather than 1 ms endpoints.)

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::time::Instant;
use tower::balance::p2c::Balance;
use tower::buffer::Buffer;
use tower::discover::ServiceList;
use tower::load::{CompleteOnResponse, PeakEwmaDiscover, PendingRequestsDiscover};
use tower::{Service, ServiceExt};
use tower_balance_ext::{discover, BalancerBuilder, Pick};

thread_local!(static RNG: std::cell::Cell<u64> = const { std::cell::Cell::new(0x2545_f491_4f6c_dd1d) });

/// Starts the random sequence again from `seed` (one per round).
fn seed(seed: u64) {
    RNG.with(|s| s.set(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1));
}

fn random() -> f64 {
    RNG.with(|s| {
        let mut x = s.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        s.set(x);
        (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    })
}

fn exponential(mean_us: f64) -> f64 {
    -(1.0 - random()).ln() * mean_us
}

/// A simulated endpoint: latency = base + extra + Exp(jitter), 16 calls at a time. It
/// answers with its own index, so each latency is put down to the endpoint that served it.
#[derive(Clone)]
struct Sim {
    index: u64,
    base_us: u64,
    jitter_us: f64,
    extra_us: Arc<AtomicU64>,
    slots: Arc<Semaphore>,
}

impl Sim {
    fn new(index: usize, base_us: u64, jitter_us: f64) -> Self {
        Self {
            index: index as u64,
            base_us,
            jitter_us,
            extra_us: Arc::new(AtomicU64::new(0)),
            slots: Arc::new(Semaphore::new(16)),
        }
    }
}

impl Service<u64> for Sim {
    type Response = u64;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<u64, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: u64) -> Self::Future {
        let us = self.base_us as f64
            + self.extra_us.load(Ordering::Relaxed) as f64
            + exponential(self.jitter_us);
        let slots = self.slots.clone();
        let index = self.index;
        Box::pin(async move {
            let _slot = slots.acquire_owned().await;
            tokio::time::sleep(Duration::from_micros(us as u64)).await;
            Ok(index)
        })
    }
}

type BoxSvc = tower::util::BoxCloneService<u64, u64, tower::BoxError>;

/// Builds the balancer under test over the endpoints.
fn balancer(kind: &str, sims: &[Sim]) -> BoxSvc {
    let list = || ServiceList::new(sims.to_vec());
    let ours = |b: BalancerBuilder<u64, u64>| {
        BoxSvc::new(
            b.build(discover::fixed(sims.iter().cloned().enumerate()))
                .unwrap(),
        )
    };
    match kind {
        "round robin" => ours(BalancerBuilder::new(Pick::RoundRobin)),
        "ours: least connections" => ours(BalancerBuilder::new(Pick::LeastConnections)),
        "ours: latency-aware" => ours(BalancerBuilder::new(Pick::LatencyAware)),
        // As before the learned limits: latency x (in-flight + 1).
        "ours: latency, no limits" => {
            ours(BalancerBuilder::new(Pick::LatencyAware).learned_limit(0))
        }
        "tower p2c PendingRequests" => BoxSvc::new(Buffer::new(
            Balance::new(PendingRequestsDiscover::new(
                list(),
                CompleteOnResponse::default(),
            )),
            4096,
        )),
        "tower p2c PeakEwma" => BoxSvc::new(Buffer::new(
            Balance::new(PeakEwmaDiscover::new(
                list(),
                Duration::from_millis(1),
                Duration::from_secs(10),
                CompleteOnResponse::default(),
            )),
            4096,
        )),
        other => unreachable!("{other}"),
    }
}

const KINDS: [&str; 6] = [
    "round robin",
    "tower p2c PendingRequests",
    "tower p2c PeakEwma",
    "ours: least connections",
    "ours: latency, no limits",
    "ours: latency-aware",
];

/// The latencies of one run, each with the endpoint that served it, sorted.
struct Run {
    lat: Vec<(Duration, u64)>,
    /// Requests per second actually sent (the schedule's length over its count).
    sent_rate: f64,
}

fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 * q) as usize).min(sorted.len() - 1)]
}

impl Run {
    fn all(&self) -> Vec<Duration> {
        self.lat.iter().map(|&(d, _)| d).collect()
    }

    fn p(&self, q: f64) -> Duration {
        quantile(&self.all(), q)
    }

    fn mean(&self) -> Duration {
        self.lat.iter().map(|&(d, _)| d).sum::<Duration>() / self.lat.len().max(1) as u32
    }

    /// The latencies of the requests the endpoints `which` served, sorted.
    fn of(&self, which: impl Fn(u64) -> bool) -> Vec<Duration> {
        self.lat
            .iter()
            .filter(|&&(_, e)| which(e))
            .map(|&(d, _)| d)
            .collect()
    }
}

/// `n` requests in open loop: arrival times drawn as a Poisson process at `rate` per
/// second and fixed in advance, each request sent at its time whatever the earlier ones
/// are doing, and its latency counted from that scheduled time (not from when the
/// sender got to it), so a stall anywhere is charged to the requests it delays.
async fn drive(svc: BoxSvc, rate: f64, n: usize) -> Run {
    // Let discovery land.
    tokio::time::sleep(Duration::from_millis(1)).await;
    let t0 = Instant::now();
    let mut at = 0.0f64;
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        at += exponential(1e6 / rate) / 1e6;
        let scheduled = t0 + Duration::from_secs_f64(at);
        tokio::time::sleep_until(scheduled).await;
        let svc = svc.clone();
        tasks.push(tokio::spawn(async move {
            let endpoint = svc.oneshot(i as u64).await.unwrap();
            (scheduled.elapsed(), endpoint)
        }));
    }
    let mut lat = Vec::with_capacity(n);
    for t in tasks {
        lat.push(t.await.unwrap());
    }
    lat.sort();
    Run {
        lat,
        sent_rate: n as f64 / at,
    }
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

async fn spread() {
    println!("1. ten endpoints, 1 to 1,000 ms (each +10% jitter), 50 requests/s, 6,000 requests");
    for kind in KINDS {
        let sims: Vec<Sim> = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000]
            .iter()
            .enumerate()
            .map(|(i, &ms)| Sim::new(i, ms * 1000, ms as f64 * 100.0))
            .collect();
        let r = drive(balancer(kind, &sims), 50.0, 6_000).await;
        println!(
            "   {kind:<26} p50 {:>10}  p99 {:>10}  mean {:>10}",
            ms(r.p(0.5)),
            ms(r.p(0.99)),
            ms(r.mean())
        );
    }
}

/// One pick at one rate, with none, one and two of the four endpoints slow.
struct Phases {
    /// p99 over all requests: all healthy, one slow, two slow.
    p99: [Duration; 3],
    /// With two slow: p99 of the requests the healthy two served.
    healthy_p99: Duration,
    /// With two slow: per endpoint, share of the requests and p99.
    per_endpoint: Vec<(f64, Duration)>,
    sent_rate: f64,
}

async fn phases(kind: &str, rate: f64, n: usize) -> Phases {
    let mut p99 = [Duration::ZERO; 3];
    let mut last = None;
    for slow in 0..3 {
        let sims: Vec<Sim> = (0..4).map(|i| Sim::new(i, 10_000, 1_000.0)).collect();
        for s in &sims[..slow] {
            s.extra_us.store(5_000, Ordering::Relaxed);
        }
        let run = drive(balancer(kind, &sims), rate, n).await;
        p99[slow] = run.p(0.99);
        last = Some(run);
    }
    let run = last.expect("three phases ran");
    let per_endpoint = (0..4u64)
        .map(|e| {
            let mut of = run.of(|x| x == e);
            of.sort();
            (of.len() as f64 / run.lat.len() as f64, quantile(&of, 0.99))
        })
        .collect();
    let mut healthy = run.of(|e| e >= 2);
    healthy.sort();
    Phases {
        p99,
        healthy_p99: quantile(&healthy, 0.99),
        per_endpoint,
        sent_rate: run.sent_rate,
    }
}

fn median(mut x: Vec<f64>) -> f64 {
    x.sort_by(f64::total_cmp);
    x[x.len() / 2]
}

/// `median (min-max)` of a figure over the rounds.
fn spread_of(x: &[f64], unit: &str) -> String {
    let lo = x.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = x.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!("{:.2}{unit} ({lo:.2}-{hi:.2})", median(x.to_vec()))
}

async fn some_slow(rate: f64, rounds: u64, n: usize) {
    println!(
        "2. four endpoints of 10 ms + Exp(1 ms), open loop at {rate} requests/s, {n} requests \
         per phase; median (min-max) of {rounds} rounds"
    );
    let mut rr_healthy = Vec::new();
    let mut rows = Vec::new();
    for kind in KINDS {
        let mut runs = Vec::new();
        for round in 0..rounds {
            seed(round + 1);
            runs.push(phases(kind, rate, n).await);
        }
        if kind == "round robin" {
            rr_healthy = runs.iter().map(|r| r.healthy_p99.as_secs_f64()).collect();
        }
        rows.push((kind, runs));
    }
    println!(
        "   {:<26} {:>9} {:>9} {:>9} {:>22} {:>20} {:>22}",
        "p99:",
        "healthy",
        "one slow",
        "two slow",
        "two slow / healthy",
        "healthy two's p99",
        "that / round robin's"
    );
    for (kind, runs) in &rows {
        let f = |i: usize| median(runs.iter().map(|r| r.p99[i].as_secs_f64() * 1e3).collect());
        let ratio: Vec<f64> = runs
            .iter()
            .map(|r| r.p99[2].as_secs_f64() / r.p99[0].as_secs_f64())
            .collect();
        let vs_rr: Vec<f64> = runs
            .iter()
            .zip(&rr_healthy)
            .map(|(r, rr)| r.healthy_p99.as_secs_f64() / rr)
            .collect();
        let healthy = median(
            runs.iter()
                .map(|r| r.healthy_p99.as_secs_f64() * 1e3)
                .collect(),
        );
        println!(
            "   {kind:<26} {:>6.2} ms {:>6.2} ms {:>6.2} ms {:>22} {:>17.2} ms {:>22}",
            f(0),
            f(1),
            f(2),
            spread_of(&ratio, "x"),
            healthy,
            spread_of(&vs_rr, "x"),
        );
    }
    println!("   with two slow, per endpoint (slow, slow, healthy, healthy): share of requests / p99, first round");
    for (kind, runs) in &rows {
        let cells: Vec<String> = runs[0]
            .per_endpoint
            .iter()
            .map(|(share, p99)| {
                format!(
                    "{:>5.1}% / {:>6.2} ms",
                    share * 100.0,
                    p99.as_secs_f64() * 1e3
                )
            })
            .collect();
        println!("   {kind:<26} {}", cells.join("  "));
    }
    println!("   sent {:.0} requests/s", rows[0].1[0].sent_rate);
    if let Some((_, runs)) = rows.iter().find(|(k, _)| *k == "ours: latency-aware") {
        let ratio = median(
            runs.iter()
                .map(|r| r.p99[2].as_secs_f64() / r.p99[0].as_secs_f64())
                .collect(),
        );
        let vs_rr = median(
            runs.iter()
                .zip(&rr_healthy)
                .map(|(r, rr)| r.healthy_p99.as_secs_f64() / rr)
                .collect(),
        );
        let verdict = |ok: bool| if ok { "met" } else { "not met" };
        // The targets: the p99 ratio up to 1,000/s; no herding above, where sending
        // too much to the healthy pair would queue there.
        if rate <= 1000.0 {
            println!(
                "   ours (latency-aware), median p99 two slow / all healthy: {ratio:.2}x \
                 (target <= 1.2x: {})",
                verdict(ratio <= 1.2)
            );
        } else {
            println!(
                "   ours (latency-aware), median p99 of the healthy pair / round robin's: \
                 {vs_rr:.2}x (no herding, target <= 1.2x: {})",
                verdict(vs_rr <= 1.2)
            );
        }
    }
}

fn main() {
    // `balance_tail [ROUNDS [RATE,RATE,...]]`: defaults 3 rounds, 100,300,1000,3000.
    let mut args = std::env::args().skip(1);
    let rounds: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(3).max(1);
    let rates: Vec<f64> = args
        .next()
        .map(|s| s.split(',').filter_map(|r| r.parse().ok()).collect())
        .unwrap_or_else(|| vec![100.0, 300.0, 1000.0, 3000.0]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async {
        spread().await;
        for rate in rates {
            some_slow(rate, rounds, 30_000).await;
        }
    });
}
