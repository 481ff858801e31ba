//! Runs one balancer operation many times, for instruction counts under callgrind,
//! which repeat exactly where timings on a shared machine do not:
//!
//! ```sh
//! cargo build --release -p tower-balance-ext --example pick_instructions
//! bash tower-balance-ext/benches/instructions.sh
//! ```
//!
//! `pick_instructions CASE N` runs CASE N times after a warm-up; the script runs each
//! case at two counts and prints the difference per operation, which cancels the
//! set-up.

use std::convert::Infallible;
use std::time::Duration;

use tower::balance::p2c::Balance;
use tower::discover::ServiceList;
use tower::load::{CompleteOnResponse, PeakEwmaDiscover, PendingRequestsDiscover};
use tower::{Service, ServiceExt};
use tower_balance_ext::{discover, hash_key, BalancerBuilder, Pick};

type Endpoint = tower::util::ServiceFn<fn(u64) -> std::future::Ready<Result<u64, Infallible>>>;

fn endpoint() -> Endpoint {
    fn answer(x: u64) -> std::future::Ready<Result<u64, Infallible>> {
        std::future::ready(Ok(x))
    }
    tower::service_fn(answer as fn(u64) -> _)
}

fn pick_of(name: &str) -> Option<Pick> {
    Some(match name {
        "round_robin" => Pick::RoundRobin,
        "least_connections" => Pick::LeastConnections,
        "weighted_round_robin" => Pick::WeightedRoundRobin,
        "consistent_hash" => Pick::ConsistentHash,
        "latency_aware" => Pick::LatencyAware,
        _ => return None,
    })
}

fn main() {
    let mut args = std::env::args().skip(1);
    let case = args.next().unwrap_or_else(|| "pick:round_robin".into());
    let n: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(100_000);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    rt.block_on(async move {
        let (kind, name) = case.split_once(':').unwrap_or(("pick", case.as_str()));
        if let Some(pick) = pick_of(name) {
            let mut b = BalancerBuilder::new(pick);
            if pick == Pick::ConsistentHash {
                b = b.hash_key(|k: &u64| Some(hash_key(k)));
            }
            let bal = b
                .build(discover::fixed((0..10u32).map(|i| (i, endpoint()))))
                .expect("valid settings");
            while bal.endpoints().len() < 10 {
                tokio::task::yield_now().await;
            }
            for i in 0..1_000 {
                bal.clone().oneshot(i).await.expect("answers");
            }
            let mut svc = bal.clone();
            let mut sum = 0u64;
            for i in 0..n {
                if kind == "pick" {
                    sum = sum.wrapping_add(u64::from(bal.pick(&i).unwrap_or(0)));
                } else {
                    sum = sum.wrapping_add(svc.call(i).await.expect("answers"));
                }
            }
            std::hint::black_box(sum);
            return;
        }
        let list = ServiceList::new((0..10).map(|_| endpoint()).collect::<Vec<_>>());
        let mut sum = 0u64;
        match name {
            "tower_p2c_pending_requests" => {
                let mut bal = Balance::new(PendingRequestsDiscover::new(
                    list,
                    CompleteOnResponse::default(),
                ));
                for i in 0..n + 1_000 {
                    sum = sum.wrapping_add(bal.ready().await.unwrap().call(i).await.unwrap());
                }
            }
            "tower_p2c_peak_ewma" => {
                let mut bal = Balance::new(PeakEwmaDiscover::new(
                    list,
                    Duration::from_millis(1),
                    Duration::from_secs(10),
                    CompleteOnResponse::default(),
                ));
                for i in 0..n + 1_000 {
                    sum = sum.wrapping_add(bal.ready().await.unwrap().call(i).await.unwrap());
                }
            }
            other => eprintln!("unknown case {other}"),
        }
        std::hint::black_box(sum);
    });
}
