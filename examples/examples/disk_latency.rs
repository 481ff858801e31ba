//! Does the disk tier ever stall the async runtime? A load run.
//!
//! Small disk hits (100-byte values, a memory tier too small to hold them) are read in a
//! loop by several tasks on a 1-worker tokio runtime (the machine this was written on has
//! 2 cores: the other one is left to the blocking pool and the disk writer), while other
//! tasks on the same runtime read large values (16 MiB, compressed on disk) and, in the
//! last phase, a task compacts the environment over and over. Each phase runs twice, on two stores that differ in one
//! setting: large records read **inline** on the worker thread (`blocking_read_threshold`
//! of `usize::MAX`, what the tier did before) or **offloaded** to tokio's blocking pool
//! (the default, 64 KiB).
//!
//! The figure is the time between two consecutive small reads of one task, weighted by
//! its length: a request arriving at a random moment lands in a long gap (a worker thread
//! held by a large read) as often as that gap is long, so the time-weighted percentile is
//! what arriving requests wait, free of coordinated omission. Medians and p99 per phase,
//! and the inline/offloaded ratio, are printed.
//!
//! ```sh
//! cargo run --release -p examples --example disk_latency
//! ```

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tower_cache::{Cache, DiskTier, MemoryTier, WriteTiers};

const SMALL_KEYS: usize = 2_000;
const LARGE_KEYS: usize = 8;
const LARGE: usize = 16 << 20;
const READERS: usize = 4;
const PHASE: Duration = Duration::from_secs(2);
const TTL: Duration = Duration::from_secs(3600);

fn large_value(seed: usize) -> Bytes {
    // Compressible text, as a large report would be: decompression costs real time.
    let line = format!("report {seed}: budget line, provider, amount, currency, notes\n");
    Bytes::from(line.repeat(LARGE / line.len()))
}

async fn store(dir: &std::path::Path, inline: bool) -> Cache {
    let disk = DiskTier::builder(dir)
        .map_size(1 << 30)
        .max_value_bytes(32 << 20)
        .blocking_read_threshold(if inline { usize::MAX } else { 64 << 10 })
        .open()
        .expect("open the disk tier");
    let memory = MemoryTier::builder()
        .max_entries(64)
        .max_value_bytes(1024)
        .build()
        .expect("build the memory tier");
    let cache = Cache::new(memory).with_disk(disk);
    for i in 0..SMALL_KEYS {
        let v = Bytes::from(vec![b'x'; 100]);
        cache
            .set(&format!("small:{i}"), v, TTL, WriteTiers::DISK)
            .await
            .unwrap();
    }
    for i in 0..LARGE_KEYS {
        cache
            .set(&format!("large:{i}"), large_value(i), TTL, WriteTiers::DISK)
            .await
            .unwrap();
    }
    cache
}

#[derive(Clone, Copy)]
enum Phase {
    Quiet,
    LargeReads,
    LargeReadsAndCompaction,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::Quiet => "small hits alone",
            Phase::LargeReads => "+ large reads",
            Phase::LargeReadsAndCompaction => "+ large reads + compaction",
        }
    }
}

/// Runs one phase; returns the gaps between consecutive small reads, sorted.
async fn run(cache: &Cache, phase: Phase) -> Vec<Duration> {
    let stop = Arc::new(AtomicBool::new(false));
    let mut background = Vec::new();
    if !matches!(phase, Phase::Quiet) {
        for t in 0..2 {
            let (cache, stop) = (cache.clone(), stop.clone());
            background.push(tokio::spawn(async move {
                let mut i = t;
                while !stop.load(Ordering::Relaxed) {
                    let v = cache.get(&format!("large:{}", i % LARGE_KEYS)).await;
                    // A miss is allowed (a read during a compaction swap misses), another
                    // value is not.
                    if let Some(v) = v {
                        assert_eq!(v.len(), large_value(0).len());
                    }
                    i += 1;
                    tokio::task::yield_now().await;
                }
            }));
        }
    }
    if matches!(phase, Phase::LargeReadsAndCompaction) {
        let (disk, stop) = (cache.disk().unwrap().clone(), stop.clone());
        background.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                disk.compact().await.unwrap();
            }
        }));
    }
    let readers: Vec<_> = (0..READERS)
        .map(|r| {
            let cache = cache.clone();
            tokio::spawn(async move {
                let mut gaps = Vec::with_capacity(100_000);
                let start = Instant::now();
                let mut last = Instant::now();
                let mut i = r * 7919;
                while start.elapsed() < PHASE {
                    let _ = cache.get(&format!("small:{}", i % SMALL_KEYS)).await;
                    let now = Instant::now();
                    gaps.push(now - last);
                    last = now;
                    i += 1;
                    tokio::task::yield_now().await;
                }
                gaps
            })
        })
        .collect();
    let mut gaps = Vec::new();
    for r in readers {
        gaps.extend(r.await.unwrap());
    }
    stop.store(true, Ordering::Relaxed);
    for b in background {
        b.await.unwrap();
    }
    gaps.sort();
    gaps
}

/// The time-weighted percentile: the gap length below which `p` of all the time lies.
fn pct(sorted: &[Duration], p: f64) -> Duration {
    let total: Duration = sorted.iter().sum();
    let mut seen = Duration::ZERO;
    for &g in sorted {
        seen += g;
        if seen.as_secs_f64() >= total.as_secs_f64() * p {
            return g;
        }
    }
    sorted.last().copied().unwrap_or_default()
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let inline = store(d1.path(), true).await;
        let offloaded = store(d2.path(), false).await;
        println!(
            "small disk hits on a 1-worker runtime, {READERS} reader tasks, {:?} per phase and store",
            PHASE
        );
        println!(
            "{:<30} {:>12} {:>12} {:>12} {:>12} {:>8}",
            "phase", "inline p50", "inline p99", "offload p50", "offload p99", "p99 x"
        );
        for phase in [
            Phase::Quiet,
            Phase::LargeReads,
            Phase::LargeReadsAndCompaction,
        ] {
            let a = run(&inline, phase).await;
            let b = run(&offloaded, phase).await;
            let (a50, a99, b50, b99) = (pct(&a, 0.5), pct(&a, 0.99), pct(&b, 0.5), pct(&b, 0.99));
            println!(
                "{:<30} {:>12?} {:>12?} {:>12?} {:>12?} {:>7.1}x",
                phase.name(),
                a50,
                a99,
                b50,
                b99,
                a99.as_secs_f64() / b99.as_secs_f64().max(1e-9)
            );
        }
        let s = offloaded.stats();
        println!(
            "offloaded store: {} disk hits, {} reads missed during a compaction swap, {} errors",
            s.disk_hits,
            s.disk.map_or(0, |d| d.busy_misses),
            s.disk.map_or(0, |d| d.errors)
        );
    });
}
