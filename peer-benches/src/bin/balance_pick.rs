//! Per-pick cost: tower-balance-ext's round robin and consistent hash against
//! `pingora-load-balancing`'s `RoundRobin` and `Consistent` (Ketama), 10 backends,
//! in interleaved rounds of one run; prints medians and ratios.
//!
//! ```sh
//! apt-get install -y cmake   # pingora's zlib builds with it
//! cargo run --release --manifest-path peer-benches/Cargo.toml --bin balance_pick
//! ```

use std::convert::Infallible;
use std::hint::black_box;
use std::time::Instant;

use pingora_load_balancing::selection::{Consistent, RoundRobin};
use pingora_load_balancing::LoadBalancer;
use tower_balance_ext::{discover, hash_key, BalancerBuilder, Pick};

const PICKS: u64 = 2_000_000;
const ROUNDS: usize = 15;

type Endpoint = tower::util::ServiceFn<fn(u64) -> std::future::Ready<Result<u64, Infallible>>>;

fn endpoint() -> Endpoint {
    fn answer(x: u64) -> std::future::Ready<Result<u64, Infallible>> {
        std::future::ready(Ok(x))
    }
    tower::service_fn(answer as fn(u64) -> _)
}

fn per_pick(f: &mut dyn FnMut(u64)) -> f64 {
    let start = Instant::now();
    for i in 0..PICKS {
        f(i);
    }
    start.elapsed().as_nanos() as f64 / PICKS as f64
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _enter = rt.enter();
    let addrs: Vec<String> = (0..10).map(|i| format!("127.0.0.1:{}", 20_000 + i)).collect();
    let ours = |pick: Pick| {
        let mut b = BalancerBuilder::new(pick);
        if pick == Pick::ConsistentHash {
            b = b.hash_key(|k: &u64| Some(hash_key(k)));
        }
        let bal = b
            .build(discover::fixed((0..10u32).map(|i| (i, endpoint()))))
            .unwrap();
        rt.block_on(async {
            while bal.endpoints().len() < 10 {
                tokio::task::yield_now().await;
            }
        });
        bal
    };
    let our_rr = ours(Pick::RoundRobin);
    let our_ch = ours(Pick::ConsistentHash);
    let p_rr = LoadBalancer::<RoundRobin>::try_from_iter(addrs.iter().map(String::as_str)).unwrap();
    let p_ch = LoadBalancer::<Consistent>::try_from_iter(addrs.iter().map(String::as_str)).unwrap();
    let (mut a, mut b, mut c, mut d) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        a.push(per_pick(&mut |i| {
            black_box(our_rr.pick(&i));
        }));
        b.push(per_pick(&mut |i| {
            black_box(p_rr.select(&i.to_le_bytes(), 256));
        }));
        c.push(per_pick(&mut |i| {
            black_box(our_ch.pick(&i));
        }));
        d.push(per_pick(&mut |i| {
            black_box(p_ch.select(&i.to_le_bytes(), 256));
        }));
    }
    let (a, b, c, d) = (median(a), median(b), median(c), median(d));
    println!("per pick, 10 backends, median of {ROUNDS} interleaved rounds of {PICKS} picks:");
    println!(
        "  round robin:     tower-balance-ext {a:6.1} ns | pingora RoundRobin {b:6.1} ns | ours / pingora {:.2}x",
        a / b
    );
    println!(
        "  consistent hash: tower-balance-ext {c:6.1} ns (Maglev) | pingora Consistent {d:6.1} ns (Ketama) | ours / pingora {:.2}x",
        c / d
    );
}
