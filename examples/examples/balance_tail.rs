//! Tail latency under slow endpoints: round robin, tower's P2C (PeakEwma and
//! PendingRequests) and tower-balance-ext's picks over the same simulated endpoints.
//!
//! ```sh
//! cargo run --release -p examples --example balance_tail
//! ```
//!
//! The endpoints are tower services whose calls sleep for a sampled latency (a base
//! plus an exponential jitter), at most 8 at a time each (more wait their turn).
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

fn random() -> f64 {
    use std::cell::Cell;
    thread_local!(static S: Cell<u64> = const { Cell::new(0x2545_f491_4f6c_dd1d) });
    S.with(|s| {
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

/// A simulated endpoint: latency = base + extra + Exp(jitter), 8 calls at a time.
#[derive(Clone)]
struct Sim {
    base_us: u64,
    jitter_us: f64,
    extra_us: Arc<AtomicU64>,
    slots: Arc<Semaphore>,
    calls: Arc<AtomicU64>,
}

impl Sim {
    fn new(base_us: u64, jitter_us: f64) -> Self {
        Self {
            base_us,
            jitter_us,
            extra_us: Arc::new(AtomicU64::new(0)),
            slots: Arc::new(Semaphore::new(8)),
            calls: Arc::new(AtomicU64::new(0)),
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

    fn call(&mut self, req: u64) -> Self::Future {
        let us = self.base_us as f64
            + self.extra_us.load(Ordering::Relaxed) as f64
            + exponential(self.jitter_us);
        let slots = self.slots.clone();
        self.calls.fetch_add(1, Ordering::Relaxed);
        Box::pin(async move {
            let _slot = slots.acquire_owned().await;
            tokio::time::sleep(Duration::from_micros(us as u64)).await;
            Ok(req)
        })
    }
}

type BoxSvc = tower::util::BoxCloneService<u64, u64, tower::BoxError>;

/// Builds the balancer under test over the endpoints.
fn balancer(kind: &str, sims: &[Sim]) -> BoxSvc {
    let list = || ServiceList::new(sims.to_vec());
    match kind {
        "round robin" => BoxSvc::new(
            BalancerBuilder::new(Pick::RoundRobin)
                .build(discover::fixed(sims.iter().cloned().enumerate()))
                .unwrap(),
        ),
        "ours: least connections" => BoxSvc::new(
            BalancerBuilder::new(Pick::LeastConnections)
                .build(discover::fixed(sims.iter().cloned().enumerate()))
                .unwrap(),
        ),
        "ours: latency-aware" => BoxSvc::new(
            BalancerBuilder::new(Pick::LatencyAware)
                .build(discover::fixed(sims.iter().cloned().enumerate()))
                .unwrap(),
        ),
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

const KINDS: [&str; 5] = [
    "round robin",
    "tower p2c PendingRequests",
    "tower p2c PeakEwma",
    "ours: least connections",
    "ours: latency-aware",
];

struct Run {
    p50: Duration,
    p99: Duration,
    mean: Duration,
}

/// `n` requests arriving at `rate` per second; the latency of each, arrival to answer.
async fn drive(svc: BoxSvc, rate: f64, n: usize) -> Run {
    // Let discovery land.
    tokio::time::sleep(Duration::from_millis(1)).await;
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        tokio::time::sleep(Duration::from_secs_f64(exponential(1e6 / rate) / 1e6)).await;
        let svc = svc.clone();
        tasks.push(tokio::spawn(async move {
            let start = Instant::now();
            svc.oneshot(i as u64).await.unwrap();
            start.elapsed()
        }));
    }
    let mut lat = Vec::with_capacity(n);
    for t in tasks {
        lat.push(t.await.unwrap());
    }
    lat.sort();
    let sum: Duration = lat.iter().sum();
    Run {
        p50: lat[n / 2],
        p99: lat[n * 99 / 100],
        mean: sum / n as u32,
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
            .map(|&ms| Sim::new(ms * 1000, ms as f64 * 100.0))
            .collect();
        let r = drive(balancer(kind, &sims), 50.0, 6_000).await;
        println!(
            "   {kind:<26} p50 {:>10}  p99 {:>10}  mean {:>10}",
            ms(r.p50),
            ms(r.p99),
            ms(r.mean)
        );
    }
}

async fn some_slow(rate: f64) {
    println!(
        "2. four endpoints of 10 ms + Exp(1 ms), {rate} requests/s, 30,000 requests per phase"
    );
    println!(
        "   {:<26} {:>12} {:>12} {:>12} {:>10}  share of the slow two",
        "", "all healthy", "one +5 ms", "two +5 ms", "two/all"
    );
    let mut ours = None;
    for kind in KINDS {
        let mut p99 = Vec::new();
        let mut slow_share = 0.0;
        for slow in 0..3 {
            let sims: Vec<Sim> = (0..4).map(|_| Sim::new(10_000, 1_000.0)).collect();
            for s in &sims[..slow] {
                s.extra_us.store(5_000, Ordering::Relaxed);
            }
            p99.push(drive(balancer(kind, &sims), rate, 30_000).await.p99);
            if slow == 2 {
                let calls: Vec<u64> = sims
                    .iter()
                    .map(|s| s.calls.load(Ordering::Relaxed))
                    .collect();
                slow_share = (calls[0] + calls[1]) as f64 / calls.iter().sum::<u64>() as f64;
            }
        }
        let ratio = p99[2].as_secs_f64() / p99[0].as_secs_f64();
        println!(
            "   {kind:<26} {:>12} {:>12} {:>12} {:>9.2}x  {:>5.1}%",
            ms(p99[0]),
            ms(p99[1]),
            ms(p99[2]),
            ratio,
            slow_share * 100.0
        );
        if kind == "ours: latency-aware" {
            ours = Some(ratio);
        }
    }
    if let Some(r) = ours {
        println!(
            "   ours (latency-aware), p99 with two slow of four / all healthy: {r:.2}x (target <= 1.2x): {}",
            if r <= 1.2 { "met" } else { "not met" }
        );
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async {
        spread().await;
        for rate in [100.0, 300.0, 1000.0] {
            some_slow(rate).await;
        }
    });
}
