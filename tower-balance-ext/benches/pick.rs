//! Per-pick overhead of each pick algorithm, against `tower::balance::p2c` with
//! `PendingRequests` and `PeakEwma`, in one run; prints medians and ratios at the end.
//!
//! ```sh
//! cargo bench -p tower-balance-ext --bench pick
//! ```
//!
//! - `pick/*`: the pick alone ([`Balancer::pick`]) over 10 ready endpoints, per
//!   algorithm (targets: round robin <= 20 ns, latency-aware <= 100 ns).
//! - `dispatch/*`: a whole request through the balancer (pick, clone of the endpoint
//!   service, its `poll_ready`, the call, statistics) to endpoints that answer at once,
//!   against tower's `Balance` (its `poll_ready` + `call`) over the same endpoints.
//!
//! `pingora-load-balancing` is measured by `peer-benches` (heavy to build):
//! `cargo run --release --manifest-path peer-benches/Cargo.toml --bin balance_pick`.

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use criterion::Criterion;
use std::hint::black_box;
use tower::balance::p2c::Balance;
use tower::discover::ServiceList;
use tower::load::{CompleteOnResponse, PeakEwmaDiscover, PendingRequestsDiscover};
use tower::{Service, ServiceExt};
use tower_balance_ext::{discover, hash_key, BalancerBuilder, Pick};

const N: u32 = 10;

type Endpoint = tower::util::ServiceFn<fn(u64) -> std::future::Ready<Result<u64, Infallible>>>;

fn endpoint() -> Endpoint {
    fn answer(x: u64) -> std::future::Ready<Result<u64, Infallible>> {
        std::future::ready(Ok(x))
    }
    tower::service_fn(answer as fn(u64) -> _)
}

fn ours(
    rt: &tokio::runtime::Runtime,
    pick: Pick,
) -> tower_balance_ext::Balancer<u32, Endpoint, u64> {
    rt.block_on(async {
        let mut b = BalancerBuilder::new(pick);
        if pick == Pick::ConsistentHash {
            b = b.hash_key(|k: &u64| Some(hash_key(k)));
        }
        let bal = b
            .build(discover::fixed((0..N).map(|i| (i, endpoint()))))
            .unwrap();
        while bal.endpoints().len() < N as usize {
            tokio::task::yield_now().await;
        }
        // Latency estimates for the latency-aware pick.
        for i in 0..1_000 {
            bal.clone().oneshot(i).await.unwrap();
        }
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

fn pick(c: &mut Criterion, rt: &tokio::runtime::Runtime) {
    let mut g = c.benchmark_group("pick");
    for (name, how) in PICKS {
        let bal = ours(rt, how);
        let _enter = rt.enter();
        let mut k = 0u64;
        g.bench_function(name, |b| {
            b.iter(|| {
                k = k.wrapping_add(1);
                black_box(bal.pick(black_box(&k)))
            })
        });
    }
    g.finish();
}

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

fn dispatch(c: &mut Criterion, rt: &tokio::runtime::Runtime) {
    let mut g = c.benchmark_group("dispatch");
    for (name, how) in PICKS {
        let bal = ours(rt, how);
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut svc = bal.clone();
                timed(rt, iters, |i| {
                    let f = svc.call(i);
                    async move {
                        black_box(f.await.unwrap());
                    }
                })
            })
        });
    }
    g.bench_function("tower_p2c_pending_requests", |b| {
        let list = ServiceList::new((0..N).map(|_| endpoint()).collect::<Vec<_>>());
        let bal = rt.block_on(async {
            Balance::new(PendingRequestsDiscover::new(
                list,
                CompleteOnResponse::default(),
            ))
        });
        tower_requests(b, rt, bal);
    });
    g.bench_function("tower_p2c_peak_ewma", |b| {
        let list = ServiceList::new((0..N).map(|_| endpoint()).collect::<Vec<_>>());
        let bal = rt.block_on(async {
            Balance::new(PeakEwmaDiscover::new(
                list,
                Duration::from_millis(1),
                Duration::from_secs(10),
                CompleteOnResponse::default(),
            ))
        });
        tower_requests(b, rt, bal);
    });
    g.finish();
}

/// Whole requests through one of tower's balancers: `poll_ready`, then `call`.
fn tower_requests<B>(b: &mut criterion::Bencher<'_>, rt: &tokio::runtime::Runtime, mut bal: B)
where
    B: Service<u64, Response = u64>,
    B::Error: std::fmt::Debug,
{
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
        "\n=== tower-balance-ext vs tower::balance::p2c (medians of this run, 10 endpoints) ==="
    );
    let tower_pending = median_ns(dir, "dispatch", "tower_p2c_pending_requests");
    let tower_ewma = median_ns(dir, "dispatch", "tower_p2c_peak_ewma");
    println!(
        "tower p2c, poll_ready + call: PendingRequests {tower_pending:.1} ns | PeakEwma {tower_ewma:.1} ns"
    );
    for (name, _) in PICKS {
        let p = median_ns(dir, "pick", name);
        let d = median_ns(dir, "dispatch", name);
        let target = match name {
            "round_robin" => " (target <= 20 ns)",
            "latency_aware" => " (target <= 100 ns)",
            _ => "",
        };
        println!(
            "{name:>22}: pick {p:6.1} ns{target} | whole request {d:6.1} ns = {:.2}x tower PendingRequests, {:.2}x tower PeakEwma",
            d / tower_pending,
            d / tower_ewma
        );
    }
}

fn main() {
    let dir: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/criterion");
    let mut c = Criterion::default()
        .output_directory(&dir)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .sample_size(30)
        .configure_from_args();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    pick(&mut c, &rt);
    dispatch(&mut c, &rt);
    c.final_summary();
    report(&dir);
}
