//! The cost of a pick as the pool grows, against `tower::balance::p2c` in the same run;
//! prints medians and ratios at the end.
//!
//! ```sh
//! cargo bench -p tower-balance-ext --bench pick
//! ```
//!
//! - `pick/KIND/N`: the pick alone ([`Balancer::pick`]) over N endpoints (10, 1,000,
//!   10,000), a tenth of them not ready (their `poll_ready` pends), per pick kind.
//! - `request/KIND/N`: a whole request through the balancer (pick, clone of the
//!   endpoint service, its `poll_ready`, the call, statistics) over the same pools,
//!   beside `request/tower_p2c_*/N`: tower's `Balance` (its `poll_ready` + `call`, the
//!   pick being in `poll_ready`) with `PendingRequests` and `PeakEwma` over the same
//!   endpoints.
//! - `rebuild/*`: one discovery change (an endpoint replaced) at 1,000 endpoints, until
//!   the new pool is in use: with the consistent-hash pick this includes the Maglev
//!   table's rebuild (131,071 slots at 1,000 endpoints); round robin beside it has no
//!   table.
//!
//! `pingora-load-balancing` is measured by `peer-benches` (heavy to build):
//! `cargo run --release --manifest-path peer-benches/Cargo.toml --bin balance_pick`.

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion};
use std::hint::black_box;
use tower::balance::p2c::Balance;
use tower::discover::ServiceList;
use tower::load::{CompleteOnResponse, PeakEwmaDiscover, PendingRequestsDiscover};
use tower::{Service, ServiceExt};
use tower_balance_ext::{discover, hash_key, BalancerBuilder, Pick};

const SIZES: [u32; 3] = [10, 1_000, 10_000];

/// An endpoint that answers at once, or (`stuck`) whose `poll_ready` pends for ever.
#[derive(Clone)]
struct Endpoint {
    stuck: bool,
}

impl Service<u64> for Endpoint {
    type Response = u64;
    type Error = Infallible;
    type Future = std::future::Ready<Result<u64, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        if self.stuck {
            Poll::Pending
        } else {
            Poll::Ready(Ok(()))
        }
    }

    fn call(&mut self, x: u64) -> Self::Future {
        std::future::ready(Ok(x))
    }
}

/// `n` endpoints, every tenth one not ready.
fn endpoints(n: u32) -> impl Iterator<Item = (u32, Endpoint)> {
    (0..n).map(|i| (i, Endpoint { stuck: i % 10 == 9 }))
}

fn ours(
    rt: &tokio::runtime::Runtime,
    pick: Pick,
    n: u32,
) -> tower_balance_ext::Balancer<u32, Endpoint, u64> {
    rt.block_on(async {
        let mut b = BalancerBuilder::new(pick).panic_threshold(0);
        if pick == Pick::ConsistentHash {
            b = b.hash_key(|k: &u64| Some(hash_key(k)));
        }
        let bal = b.build(discover::fixed(endpoints(n))).unwrap();
        while bal.endpoints().len() < n as usize {
            tokio::task::yield_now().await;
        }
        // Requests find the stuck endpoints not ready, and give the latency-aware pick
        // its estimates.
        let mut i = 0;
        while bal.ready_count() > (n - n / 10) as usize || i < 1_000 {
            bal.clone().oneshot(i).await.unwrap();
            i += 1;
        }
        // The background task takes the ready lists again.
        tokio::time::sleep(Duration::from_millis(20)).await;
        bal
    })
}

const PICKS: [(&str, Pick); 5] = [
    ("round_robin", Pick::RoundRobin),
    ("least_connections", Pick::LeastConnections),
    ("weighted_round_robin", Pick::WeightedRoundRobin),
    ("consistent_hash", Pick::ConsistentHash),
    ("latency_aware", Pick::LatencyAware),
];

/// Runs `iters` requests inside one `block_on`, so the runtime's entry is not counted.
fn timed<F, Fut>(rt: &tokio::runtime::Runtime, iters: u64, mut one: F) -> Duration
where
    F: FnMut(u64) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    rt.block_on(async {
        let start = Instant::now();
        for i in 0..iters {
            one(i).await;
        }
        start.elapsed()
    })
}

fn picks_and_requests(c: &mut Criterion, rt: &tokio::runtime::Runtime) {
    for n in SIZES {
        for (name, how) in PICKS {
            let bal = ours(rt, how, n);
            {
                let _enter = rt.enter();
                let mut k = 0u64;
                c.bench_with_input(BenchmarkId::new(format!("pick/{name}"), n), &n, |b, _| {
                    b.iter(|| {
                        k = k.wrapping_add(1);
                        black_box(bal.pick(black_box(&k)))
                    })
                });
            }
            c.bench_with_input(
                BenchmarkId::new(format!("request/{name}"), n),
                &n,
                |b, _| {
                    b.iter_custom(|iters| {
                        let mut svc = bal.clone();
                        timed(rt, iters, |i| {
                            let f = svc.call(i);
                            async move {
                                black_box(f.await.unwrap());
                            }
                        })
                    })
                },
            );
        }
        let list = || ServiceList::new(endpoints(n).map(|(_, e)| e).collect::<Vec<_>>());
        let bal = rt.block_on(async {
            Balance::new(PendingRequestsDiscover::new(
                list(),
                CompleteOnResponse::default(),
            ))
        });
        tower_requests(c, rt, "request/tower_p2c_pending_requests", n, bal);
        let bal = rt.block_on(async {
            Balance::new(PeakEwmaDiscover::new(
                list(),
                Duration::from_millis(1),
                Duration::from_secs(10),
                CompleteOnResponse::default(),
            ))
        });
        tower_requests(c, rt, "request/tower_p2c_peak_ewma", n, bal);
    }
}

/// Whole requests through one of tower's balancers: `poll_ready`, then `call`.
fn tower_requests<B>(
    c: &mut Criterion,
    rt: &tokio::runtime::Runtime,
    name: &str,
    n: u32,
    mut bal: B,
) where
    B: Service<u64, Response = u64>,
    B::Error: std::fmt::Debug,
{
    // The first `poll_ready` takes in every endpoint.
    rt.block_on(async {
        bal.ready().await.unwrap().call(0).await.unwrap();
    });
    c.bench_with_input(BenchmarkId::new(name, n), &n, |b, _| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for i in 0..iters {
                    let r = bal.ready().await.unwrap().call(i).await.unwrap();
                    black_box(r);
                }
                start.elapsed()
            })
        })
    });
}

/// One discovery change at 1,000 endpoints, until the new pool is in use.
fn rebuild(c: &mut Criterion, rt: &tokio::runtime::Runtime) {
    const N: u32 = 1_000;
    for (name, how) in [
        ("consistent_hash", Pick::ConsistentHash),
        ("round_robin", Pick::RoundRobin),
    ] {
        let (tx, rx) = discover::channel();
        let bal = rt.block_on(async {
            let mut b = BalancerBuilder::new(how);
            if how == Pick::ConsistentHash {
                b = b.hash_key(|k: &u64| Some(hash_key(k)));
            }
            let bal = b.build(rx).unwrap();
            for i in 0..N {
                tx.insert(i, Endpoint { stuck: false });
            }
            while bal.endpoints().len() < N as usize {
                tokio::task::yield_now().await;
            }
            bal
        });
        let mut k = 0u32;
        c.bench_function(&format!("rebuild/{name}/{N}"), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        // Replaced under its key: it moves to the end of the pool.
                        let key = k % N;
                        k += 1;
                        tx.insert(key, Endpoint { stuck: false });
                        while bal.endpoints().last().map(|(k, _)| *k) != Some(key) {
                            tokio::task::yield_now().await;
                        }
                    }
                    start.elapsed()
                })
            })
        });
    }
}

fn median_ns(dir: &Path, group: &str, id: &str) -> f64 {
    let path = dir.join(group).join(id).join("new").join("estimates.json");
    std::fs::read_to_string(path)
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|j| j["median"]["point_estimate"].as_f64())
        .unwrap_or(f64::NAN)
}

fn report(dir: &Path) {
    println!(
        "\n=== tower-balance-ext vs tower::balance::p2c (medians of this run; a tenth of the endpoints not ready) ==="
    );
    for n in SIZES {
        let n_s = n.to_string();
        let tower_pending = median_ns(dir, "request_tower_p2c_pending_requests", &n_s);
        let tower_ewma = median_ns(dir, "request_tower_p2c_peak_ewma", &n_s);
        println!(
            "\n{n} endpoints: tower p2c, poll_ready + call: PendingRequests {tower_pending:.1} ns | PeakEwma {tower_ewma:.1} ns"
        );
        for (name, _) in PICKS {
            let p = median_ns(dir, &format!("pick_{name}"), &n_s);
            let r = median_ns(dir, &format!("request_{name}"), &n_s);
            let p10 = median_ns(dir, &format!("pick_{name}"), "10");
            println!(
                "{name:>22}: pick {p:7.1} ns ({:.2}x its cost at 10) | whole request {r:7.1} ns = {:.2}x tower PendingRequests, {:.2}x tower PeakEwma",
                p / p10,
                r / tower_pending,
                r / tower_ewma
            );
        }
    }
    let ch = median_ns(dir, "rebuild_consistent_hash_1000", "");
    let rr = median_ns(dir, "rebuild_round_robin_1000", "");
    println!(
        "\nOne discovery change at 1,000 endpoints, until in use: consistent hash (Maglev table rebuilt) {:.2} ms | round robin {:.3} ms",
        ch / 1e6,
        rr / 1e6
    );
}

fn main() {
    let dir: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/criterion");
    let mut c = Criterion::default()
        .output_directory(&dir)
        .warm_up_time(Duration::from_millis(200))
        .measurement_time(Duration::from_millis(600))
        .sample_size(20)
        .configure_from_args();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    picks_and_requests(&mut c, &rt);
    rebuild(&mut c, &rt);
    c.final_summary();
    report(&dir);
}
