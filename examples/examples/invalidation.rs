//! How fast invalidations spread and reach: a load run.
//!
//! ```sh
//! cargo run --release -p examples --example invalidation
//! ```
//!
//! 1. Propagation: three nodes on 127.0.0.1 linked by the HTTP bus; node 1 invalidates a
//!    key 2,000 times, one after another; the time from the call to the moment both
//!    other nodes applied it, p50 and p99 (target p99 <= 5 ms). With `--features redis`
//!    the same over Redis pub/sub, through a `redis-server` child process the example
//!    starts on a free loopback port.
//! 2. A prefix pattern over 1,000,000 disk entries (1,000 of them match): the LMDB range
//!    scan, against the same pattern with a leading `*` (a full scan).
//! 3. A cascade over 10,000 dependents (a fan-out of 100 x 100).

use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tower_cache::coordinator::{Coordinator, HttpBus};
use tower_cache::{Cache, DiskTier, EntryMeta, MemoryTier, WriteTiers};

const SECRET: &[u8] = b"a secret all three nodes share";

use examples::stats::percentile as pct;

async fn propagation() {
    let mut listeners = Vec::new();
    for _ in 0..3 {
        listeners.push(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap());
    }
    let urls: Vec<String> = listeners
        .iter()
        .map(|l| format!("http://{}/_cache/invalidate", l.local_addr().unwrap()))
        .collect();
    let mut nodes = Vec::new();
    for (i, listener) in listeners.into_iter().enumerate() {
        let mut b = HttpBus::builder(SECRET);
        for (j, url) in urls.iter().enumerate() {
            if i != j {
                b = b.peer(url.clone());
            }
        }
        let bus = b.build().unwrap();
        let endpoint = bus.endpoint();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let svc = TowerToHyperService::new(endpoint.clone());
                tokio::spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        let cache = Cache::new(MemoryTier::builder().build().unwrap());
        nodes.push(
            Coordinator::builder(cache, bus)
                .node_id(i as u64 + 1)
                .secret(SECRET)
                .start()
                .unwrap(),
        );
    }
    measure(&nodes, "the HTTP bus").await;
}

/// Node 1 invalidates a key `n` times, one after another; the time until both other
/// nodes applied each.
async fn measure(nodes: &[Coordinator], bus: &str) {
    let n = 2000;
    let mut lags = Vec::with_capacity(n);
    for i in 1..=n as u64 {
        let start = Instant::now();
        nodes[0].invalidate(&format!("key:{i}")).await.unwrap();
        nodes[1].applied(i).await;
        nodes[2].applied(i).await;
        lags.push(start.elapsed());
    }
    lags.sort();
    println!(
        "propagation over {bus}, 3 nodes on loopback, {n} invalidations: p50 {:?}, p99 {:?} (target p99 <= 5 ms), max {:?}",
        pct(&lags, 0.5),
        pct(&lags, 0.99),
        lags[lags.len() - 1]
    );
}

/// The same over Redis pub/sub, through a `redis-server` child process on a free
/// loopback port (feature `redis`; skipped with a message when the server is not
/// installed).
#[cfg(feature = "redis")]
async fn propagation_over_redis() {
    use tower_cache::coordinator::RedisBus;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let child = std::process::Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(std::process::Stdio::null())
        .spawn();
    let Ok(mut child) = child else {
        println!("propagation over Redis: skipped, no redis-server on PATH (apt-get install -y redis-server)");
        return;
    };
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if start.elapsed() > Duration::from_secs(20) {
            println!("propagation over Redis: skipped, redis-server did not start");
            let _ = child.kill();
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let url = format!("redis://127.0.0.1:{port}/");
    let mut nodes = Vec::new();
    let mut buses = Vec::new();
    for i in 0..3u64 {
        let bus = RedisBus::connect(&url, "invalidation-bench").unwrap();
        buses.push(bus.clone());
        let cache = Cache::new(MemoryTier::builder().build().unwrap());
        nodes.push(
            Coordinator::builder(cache, bus)
                .node_id(i + 1)
                .secret(SECRET)
                .start()
                .unwrap(),
        );
    }
    while !buses.iter().all(RedisBus::is_connected) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    measure(&nodes, "Redis pub/sub").await;
    drop(nodes);
    let _ = child.kill();
    let _ = child.wait();
}

/// Writes 1,000,000 one-byte entries, one in a thousand under `provider:`.
async fn fill_a_million(disk: &DiskTier) {
    let value = Bytes::from_static(b"v");
    for i in 0..1_000_000u32 {
        let key = if i % 1000 == 0 {
            format!("provider:{i:07}")
        } else {
            format!("user:{i:07}")
        };
        // A full queue: let the writer catch up.
        while disk
            .try_set(
                &key,
                value.clone(),
                Duration::from_secs(3600),
                EntryMeta::default(),
            )
            .is_err()
        {
            disk.flush().await.unwrap();
        }
    }
    disk.flush().await.unwrap();
}

async fn pattern_over_a_million() {
    let open = |dir: &std::path::Path| DiskTier::builder(dir).map_size(4 << 30).open().unwrap();
    let (dir, dir2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (disk, disk2) = (open(dir.path()), open(dir2.path()));
    let fill_start = Instant::now();
    fill_a_million(&disk).await;
    println!(
        "filled 1,000,000 disk entries in {:?} ({} stored)",
        fill_start.elapsed(),
        disk.stats().entries
    );
    // The same entries twice: one for the range scan, one for the full scan.
    fill_a_million(&disk2).await;
    let memory = || MemoryTier::builder().build().unwrap();
    let (cache, cache2) = (
        Cache::new(memory()).with_disk(disk),
        Cache::new(memory()).with_disk(disk2),
    );
    let start = Instant::now();
    let n = cache.invalidate_pattern("provider:*").await.unwrap();
    let prefix = start.elapsed();
    let start = Instant::now();
    let m = cache2.invalidate_pattern("*provider:*").await.unwrap();
    let full = start.elapsed();
    println!(
        "pattern over 1,000,000 disk entries: `provider:*` removed {n} in {prefix:?} (range scan); `*provider:*` removed {m} in {full:?} (full scan): {:.0}x",
        full.as_secs_f64() / prefix.as_secs_f64()
    );
}

async fn cascade() {
    let cache = Cache::new(MemoryTier::builder().max_entries(20_000).build().unwrap());
    let ttl = Duration::from_secs(3600);
    cache
        .set("root", "r".into(), ttl, WriteTiers::ALL)
        .await
        .unwrap();
    for i in 0..100 {
        let mid = format!("mid:{i}");
        cache
            .set(&mid, "m".into(), ttl, WriteTiers::ALL)
            .await
            .unwrap();
        cache.register_dependency(&mid, "root").await.unwrap();
        for j in 0..99 {
            let leaf = format!("leaf:{i}:{j}");
            cache
                .set(&leaf, "l".into(), ttl, WriteTiers::ALL)
                .await
                .unwrap();
            cache.register_dependency(&leaf, &mid).await.unwrap();
        }
    }
    let start = Instant::now();
    let n = cache.invalidate_with_dependents("root").await.unwrap();
    println!(
        "cascade: {n} entries (root, 100 x 100 dependents) in {:?}",
        start.elapsed()
    );
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        propagation().await;
        #[cfg(feature = "redis")]
        propagation_over_redis().await;
        #[cfg(not(feature = "redis"))]
        println!("propagation over Redis: run with --features redis (needs redis-server)");
        cascade().await;
        pattern_over_a_million().await;
    });
}
