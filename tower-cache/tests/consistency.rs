//! The tiers' consistency guarantee, checked by a randomized concurrent run and an oracle.
//!
//! Many tasks run random reads, loads, writes (to every tier or to one), deletes and the
//! odd clear on a few keys, with a memory tier far smaller than the key set so that
//! evictions and promotions happen all the time. Every operation is stamped with a
//! logical clock when it starts and when it ends. Afterwards the oracle checks every read
//! that returned a value: the value must have been current at some point during that
//! read, that is
//!
//! - its write (a `set`, or a load's fill) started before the read ended, and
//! - no later `set`, `delete` or `clear` superseded it before the read started: one that
//!   started after the write ended and ended before the read began. For a load's value,
//!   "after the write" is after the origin was *called* (stamped inside the load), since
//!   a load in flight when a write happens must never land.
//!
//! Stamps are taken around the calls, so they are a little early (starts) or late (ends);
//! the checks only flag what is wrong whatever the exact moments inside those margins.
//!
//! A read that finds nothing is always allowed: a cache may forget.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tower_cache::{Cache, DiskTier, MemoryTier, WriteTiers};

const TTL: Duration = Duration::from_secs(600);
const KEYS: u64 = 24;

/// A small xorshift generator: the tests need no cryptographic randomness.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A write of a value (or a delete, `value == None`), with its logical start and end.
#[derive(Debug, Clone)]
struct Write {
    value: Option<String>,
    start: u64,
    end: u64,
    /// A load's fill; `start` is when the origin was called.
    load: bool,
}

#[derive(Debug, Clone)]
struct Read {
    key: u64,
    value: String,
    start: u64,
    end: u64,
    #[allow(dead_code)] // shown in failure messages
    op: &'static str,
}

#[derive(Default)]
struct History {
    writes: Mutex<HashMap<u64, Vec<Write>>>,
    clears: Mutex<Vec<(u64, u64)>>,
    reads: Mutex<Vec<Read>>,
}

impl History {
    fn write(&self, key: u64, w: Write) {
        self.writes.lock().unwrap().entry(key).or_default().push(w);
    }

    fn read(&self, r: Read) {
        self.reads.lock().unwrap().push(r);
    }

    /// Every read that returned a value it may not have returned.
    fn violations(&self) -> Vec<String> {
        let writes = self.writes.lock().unwrap();
        let clears = self.clears.lock().unwrap();
        let mut bad = Vec::new();
        for r in self.reads.lock().unwrap().iter() {
            let log = writes.get(&r.key).map(Vec::as_slice).unwrap_or(&[]);
            let Some(w) = log.iter().find(|w| w.value.as_deref() == Some(&r.value)) else {
                bad.push(format!("{r:?}: a value nobody wrote"));
                continue;
            };
            if w.start >= r.end {
                bad.push(format!("{r:?}: written after the read ended ({w:?})"));
                continue;
            }
            // The moment after which a completed write or delete makes `w` old.
            let after = if w.load { w.start } else { w.end };
            // Only sets, deletes and clears supersede: a load copies the origin, it does
            // not write it.
            let newer = log
                .iter()
                .filter(|o| !o.load)
                .map(|o| (o.start, o.end))
                .chain(clears.iter().copied())
                .find(|&(start, end)| start > after && end < r.start);
            if let Some((start, end)) = newer {
                bad.push(format!(
                    "{r:?}: stale; {w:?} was superseded by an operation over [{start}, {end}]"
                ));
            }
        }
        bad
    }
}

async fn run_oracle(seed: u64, tasks: usize, ops: usize, memory_entries: u64) {
    let dir = tempfile::tempdir().unwrap();
    let store = Cache::new(
        MemoryTier::builder()
            .max_entries(memory_entries)
            .build()
            .unwrap(),
    )
    .with_disk(
        DiskTier::builder(dir.path())
            .map_size(64 << 20)
            .open()
            .unwrap(),
    );
    let clock = Arc::new(AtomicU64::new(1));
    let history = Arc::new(History::default());
    let ids = Arc::new(AtomicU64::new(0));
    let handles: Vec<_> = (0..tasks)
        .map(|t| {
            let (store, clock, history, ids) =
                (store.clone(), clock.clone(), history.clone(), ids.clone());
            tokio::spawn(async move {
                let mut rng = Rng(seed ^ (t as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
                let tick = || clock.fetch_add(1, Ordering::SeqCst);
                for _ in 0..ops {
                    let key = rng.below(KEYS);
                    let name = format!("k{key}");
                    let roll = rng.below(100);
                    let start = tick();
                    match roll {
                        0..=39 => {
                            if let Some(v) = store.get(&name).await {
                                let value = String::from_utf8(v.to_vec()).unwrap();
                                history.read(Read {
                                    key,
                                    value,
                                    start,
                                    end: tick(),
                                    op: "get",
                                });
                            }
                        }
                        40..=59 => {
                            let value = format!("load-{}", ids.fetch_add(1, Ordering::SeqCst));
                            let yields = rng.below(4);
                            let loaded = value.clone();
                            let called = AtomicU64::new(0);
                            let got = store
                                .get_or_load(&name, TTL, async {
                                    called.store(tick(), Ordering::SeqCst);
                                    for _ in 0..yields {
                                        tokio::task::yield_now().await;
                                    }
                                    Ok::<_, std::io::Error>(Bytes::from(loaded))
                                })
                                .await
                                .unwrap();
                            let end = tick();
                            let got = String::from_utf8(got.to_vec()).unwrap();
                            if got == value {
                                // This call ran the load: its value is a write.
                                history.write(
                                    key,
                                    Write {
                                        value: Some(value),
                                        start: called.load(Ordering::SeqCst),
                                        end,
                                        load: true,
                                    },
                                );
                            } else {
                                history.read(Read {
                                    key,
                                    value: got,
                                    start,
                                    end,
                                    op: "get_or_load",
                                });
                            }
                        }
                        60..=84 => {
                            let value = format!("set-{}", ids.fetch_add(1, Ordering::SeqCst));
                            let tiers = match rng.below(10) {
                                0 => WriteTiers::MEMORY,
                                1 => WriteTiers::DISK,
                                _ => WriteTiers::ALL,
                            };
                            store
                                .set(&name, Bytes::from(value.clone()), TTL, tiers)
                                .await
                                .unwrap();
                            history.write(
                                key,
                                Write {
                                    value: Some(value),
                                    start,
                                    end: tick(),
                                    load: false,
                                },
                            );
                        }
                        85..=98 => {
                            store.delete(&name).await.unwrap();
                            history.write(
                                key,
                                Write {
                                    value: None,
                                    start,
                                    end: tick(),
                                    load: false,
                                },
                            );
                        }
                        _ => {
                            store.clear().await.unwrap();
                            history.clears.lock().unwrap().push((start, tick()));
                        }
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.await.unwrap();
    }
    let bad = history.violations();
    let reads = history.reads.lock().unwrap().len();
    assert!(
        bad.is_empty(),
        "{} of {reads} reads returned a value that was not current during the read; first ones:\n{}",
        bad.len(),
        bad.iter().take(10).cloned().collect::<Vec<_>>().join("\n")
    );
    assert!(reads > 100, "the run must read values to check anything");
    let stats = store.stats();
    assert!(
        stats.memory.evictions > 0 && stats.disk_hits > 0,
        "the run must evict and promote to test anything: {stats:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_read_returns_a_value_current_during_the_read() {
    let _w = common::watchdog("consistency_oracle", common::LIMIT);
    for seed in [1, 2, 3] {
        run_oracle(seed * 0x5DEECE66D, 32, 400, 4).await;
    }
}
