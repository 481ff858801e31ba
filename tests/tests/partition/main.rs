//! The partition bench: three cache nodes (`cluster-node`), each a separate host in its
//! own network namespace, and a redis-server (their shared origin) in another, on an
//! isolated bridge; a seeded, randomised nemesis partitions a node from its peers
//! (nftables), cuts its link, pauses it (SIGSTOP/SIGCONT), or kills and restarts it,
//! while a workload writes, invalidates and reads. Checkers then hold every read against
//! the history of acknowledged writes. A second scenario (the `autoscale` module, with
//! the `netns` feature and without redis-server) cuts the instances of an autoscaled
//! service off from their scaler while the load changes.
//!
//! Needs the `redis` feature, root, `ip` (iproute2), `nft` (nftables) and `redis-server`.
//! Without the feature it prints that it did not run; with it, under `CI=true`, a missing
//! one fails the bench, and elsewhere it prints that it did not run, and why.
//! `PARTITION_SEED=N` replays a schedule (`PARTITION_BUS=http` or `redis` runs one bus); `PARTITION_READ_VERSION=previous-ms` makes the
//! nodes version what they read from the origin with the millisecond before instead of
//! their next version (see `cluster-node`'s docs).

mod autoscale;
mod cluster;
mod nemesis;
mod net;

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{Method, StatusCode};

use cluster::*;
use nemesis::*;

const NODES: usize = 3;
const KEYS: usize = 8;
const PORT: u16 = 7000;
const REDIS_PORT: u16 = 6379;
/// The bench of one bus stops here, whatever happens (it takes about 50 s).
const BOUND: Duration = Duration::from_secs(150);
/// How long one request of the test's clients may take.
const REQUEST_TIMEOUT: Duration = Duration::from_millis(1500);
/// How long the nemesis runs in each phase.
const NEMESIS_FOR: Duration = Duration::from_secs(20);
/// How long the HTTP bus waits for one delivery attempt.
const BUS_TIMEOUT_MS: u64 = 400;

/// Prints a line of the bench's report to the standard error as it is, past the test
/// harness's capture: the schedule, the faults and the figures show in every run, and a
/// bench that did not run never passes silently.
fn say(line: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// Why the bench cannot run here, if it cannot (`redis`: it needs a redis-server too).
fn missing_prerequisite(redis: bool) -> Option<String> {
    let mut programs = vec![("ip", "-V", "iproute2"), ("nft", "--version", "nftables")];
    if redis {
        programs.push(("redis-server", "--version", "redis-server"));
    }
    for (program, arg, package) in programs {
        if net::run(&[program, arg]).is_err() {
            return Some(format!("`{program}` is not installed (package {package})"));
        }
    }
    let probe = format!("fleet-partition-{}-probe", std::process::id());
    if let Err(e) = net::run(&["ip", "netns", "add", &probe]) {
        return Some(format!(
            "cannot create a network namespace (the bench needs root): {e}"
        ));
    }
    let _ = net::run(&["ip", "netns", "del", &probe]);
    None
}

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    /// A generator whose state is `seed` mixed (splitmix64), so that near seeds give
    /// unrelated sequences.
    fn new(seed: u64) -> Self {
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Rng((z ^ (z >> 31)) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn seed() -> u64 {
    match std::env::var("PARTITION_SEED") {
        Ok(s) => s
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("PARTITION_SEED={s:?} is not a number")),
        Err(_) => {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
                % 1_000_000_007
        }
    }
}

/// One write of the workload: `w{n}` to key `key` through node `node`.
#[derive(Debug, Clone)]
struct Write {
    n: u64,
    key: usize,
    end: Instant,
    /// `true` once the node answered `200`; otherwise it may or may not have landed.
    acked: bool,
}

/// One read: the write whose value it returned (`0`: none yet).
#[derive(Debug, Clone)]
struct Read {
    node: usize,
    key: usize,
    start: Instant,
    end: Instant,
    value: u64,
    /// Served from the node's memory tier.
    hit: bool,
}

struct History {
    /// When the phase began: the times printed are from here.
    t0: Instant,
    writes: Mutex<Vec<Write>>,
    reads: Mutex<Vec<Read>>,
    failed_reads: Mutex<u64>,
}

fn key_name(key: usize) -> String {
    format!("k{key}")
}

fn parse_value(body: &[u8]) -> Option<u64> {
    std::str::from_utf8(body)
        .ok()?
        .strip_prefix('w')?
        .parse()
        .ok()
}

/// Writes `w1`, `w2`, ... one at a time (each key's writes are so ordered) through
/// random nodes, until `stop`.
async fn writer(cluster: Arc<Cluster>, history: Arc<History>, stop: Arc<AtomicBool>, seed: u64) {
    let mut rng = Rng::new(seed);
    let mut n = history.writes.lock().unwrap().len() as u64;
    while !stop.load(Ordering::SeqCst) {
        n += 1;
        let key = rng.below(KEYS as u64) as usize;
        let node = rng.below(NODES as u64) as usize;
        let path = format!("/kv/{}", key_name(key));
        let res = cluster
            .http
            .call(
                cluster.node_addr(node),
                Method::PUT,
                &path,
                &format!("w{n}"),
            )
            .await;
        let acked = matches!(res, Some((StatusCode::OK, _)));
        history.writes.lock().unwrap().push(Write {
            n,
            key,
            end: Instant::now(),
            acked,
        });
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
}

/// Reads random keys through node `node` until `stop`.
async fn reader(
    cluster: Arc<Cluster>,
    history: Arc<History>,
    stop: Arc<AtomicBool>,
    node: usize,
    seed: u64,
) {
    let mut rng = Rng::new(seed);
    while !stop.load(Ordering::SeqCst) {
        let key = rng.below(KEYS as u64) as usize;
        let start = Instant::now();
        let path = format!("/kv/{}", key_name(key));
        match cluster.http.read(cluster.node_addr(node), &path).await {
            Some((status, body, hit))
                if status == StatusCode::OK || status == StatusCode::NOT_FOUND =>
            {
                let value = if status == StatusCode::OK {
                    parse_value(&body).expect("a value the workload wrote")
                } else {
                    0
                };
                history.reads.lock().unwrap().push(Read {
                    node,
                    key,
                    start,
                    end: Instant::now(),
                    value,
                    hit,
                });
            }
            _ => *history.failed_reads.lock().unwrap() += 1,
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// How stale a read was: how long before it started a write that superseded its value
/// had been acknowledged (zero when none had).
fn staleness(read: &Read, by_key: &HashMap<usize, Vec<Write>>) -> Duration {
    superseded_by(read, by_key).map_or(Duration::ZERO, |w| read.start - w.end)
}

/// The first acknowledged write that superseded a read's value before the read began.
fn superseded_by<'a>(read: &Read, by_key: &'a HashMap<usize, Vec<Write>>) -> Option<&'a Write> {
    let writes = by_key.get(&read.key).map(Vec::as_slice).unwrap_or(&[]);
    writes
        .iter()
        .filter(|w| w.n > read.value && w.acked && w.end < read.start)
        .min_by_key(|w| w.end)
}

/// The values a node may serve for `key` once every fault has healed: the last
/// acknowledged write, or any later one whose outcome is unknown.
fn allowed(key: usize, writes: &[Write]) -> Vec<u64> {
    let of_key: Vec<&Write> = writes.iter().filter(|w| w.key == key).collect();
    let last_acked = of_key.iter().rposition(|w| w.acked);
    let from = last_acked.unwrap_or(0);
    let mut out: Vec<u64> = of_key[from..].iter().map(|w| w.n).collect();
    if last_acked.is_none() {
        out.push(0);
    }
    out
}

/// Reads every key through every node once: (node, key, value) for those that answered.
async fn read_all(cluster: &Cluster) -> Vec<(usize, usize, Option<u64>)> {
    let mut out = Vec::new();
    for node in 0..NODES {
        for key in 0..KEYS {
            let path = format!("/kv/{}", key_name(key));
            let value = match cluster
                .http
                .call(cluster.node_addr(node), Method::GET, &path, "")
                .await
            {
                Some((StatusCode::OK, body)) => parse_value(&body),
                Some((StatusCode::NOT_FOUND, _)) => Some(0),
                _ => None,
            };
            out.push((node, key, value));
        }
    }
    out
}

/// The (node, key) pairs whose value is not one `writes` allows (or that did not answer).
fn disagreements(
    all: &[(usize, usize, Option<u64>)],
    writes: &[Write],
) -> Vec<(usize, usize, Option<u64>)> {
    all.iter()
        .filter(|(_, key, value)| value.is_none_or(|v| !allowed(*key, writes).contains(&v)))
        .copied()
        .collect()
}

/// Polls until every node serves an allowed value for every key; the time it took.
async fn time_to_agree(cluster: &Cluster, history: &History, within: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let writes = history.writes.lock().unwrap().clone();
        let wrong = disagreements(&read_all(cluster).await, &writes);
        if wrong.is_empty() {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < within,
            "nodes still disagree {within:?} after the heal (node, key, value): {wrong:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Makes every node publish one more invalidation (of a key the checks never read), so
/// that each peer sees the next number of every sender and notices any gap, then waits
/// until every node has heard every other node's last number. A node whose subscription
/// was away when those frames went out hears it from the digests the quiet senders send
/// next (and has dropped its memory tier on reconnecting).
async fn sync_round(cluster: &Cluster, round: u64) {
    for node in 0..NODES {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let res = cluster
                .http
                .call(
                    cluster.node_addr(node),
                    Method::PUT,
                    &format!("/kv/sync-{node}"),
                    &format!("s{round}"),
                )
                .await;
            if matches!(res, Some((StatusCode::OK, _))) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "node {} takes no write after the heal: {res:?}",
                node + 1
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // A TCP connection that lived through a partition (the Redis bus's) retransmits on
    // its exponential backoff: what waits in it may arrive seconds after the heal.
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let mut statuses = Vec::new();
        for node in 0..NODES {
            statuses.push(cluster.status(node).await);
        }
        let heard_all = statuses.iter().all(|s| {
            s.as_ref().is_some_and(|s| {
                statuses
                    .iter()
                    .flatten()
                    .filter(|o| o["node"] != s["node"])
                    .all(|o| {
                        s["peer_nodes"].as_array().is_some_and(|peers| {
                            peers
                                .iter()
                                .any(|p| p["node"] == o["node"] && p["last_seq"] == o["published"])
                        })
                    })
            })
        });
        if heard_all && statuses.iter().all(Option::is_some) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the nodes do not hear each other's last frames after the heal: {statuses:?}\n{}",
            (0..NODES)
                .map(|i| cluster.tail(i))
                .collect::<Vec<_>>()
                .join("\n")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Sums a counter over the nodes' statuses.
async fn total(cluster: &Cluster, field: &str) -> u64 {
    let mut sum = 0;
    for node in 0..NODES {
        if let Some(s) = cluster.status(node).await {
            sum += s[field].as_u64().unwrap_or(0);
        }
    }
    sum
}

/// Frames the nodes' buses gave up on (summed over every link), since each node's start.
async fn given_up(cluster: &Cluster) -> u64 {
    let mut sum = 0;
    for node in 0..NODES {
        if let Some(s) = cluster.status(node).await {
            for link in s["links"].as_array().into_iter().flatten() {
                sum += link["failures"].as_u64().unwrap_or(0);
            }
        }
    }
    sum
}

/// One phase: a cluster whose memory tier keeps entries `ttl_ms`, the nemesis, the
/// workload; returns the history and the cluster (still running) for the checks.
async fn phase(
    name: &str,
    bus: BusKind,
    ttl_ms: u64,
    seed: u64,
    logs: &Path,
) -> (Arc<Cluster>, Arc<History>, Instant) {
    let cluster = Arc::new(Cluster::start(bus, ttl_ms, logs).await);
    let history = Arc::new(History {
        t0: Instant::now(),
        writes: Mutex::default(),
        reads: Mutex::default(),
        failed_reads: Mutex::default(),
    });
    // Every key has an acknowledged value before the faults begin.
    for key in 0..KEYS {
        let n = history.writes.lock().unwrap().len() as u64 + 1;
        let res = cluster
            .http
            .call(
                cluster.node_addr(key % NODES),
                Method::PUT,
                &format!("/kv/{}", key_name(key)),
                &format!("w{n}"),
            )
            .await;
        assert!(
            matches!(res, Some((StatusCode::OK, _))),
            "first write: {res:?}"
        );
        history.writes.lock().unwrap().push(Write {
            n,
            key,
            end: Instant::now(),
            acked: true,
        });
    }
    let mut rng = Rng::new(seed);
    let plan = schedule(&mut rng, NEMESIS_FOR);
    say(format_args!(
        "phase {name}: {bus:?} bus, memory TTL {ttl_ms} ms, {} faults, schedule {plan:?}",
        plan.len()
    ));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = vec![tokio::spawn(writer(
        cluster.clone(),
        history.clone(),
        stop.clone(),
        rng.next(),
    ))];
    for node in 0..NODES {
        tasks.push(tokio::spawn(reader(
            cluster.clone(),
            history.clone(),
            stop.clone(),
            node,
            rng.next(),
        )));
    }
    let healed = nemesis(&cluster, &plan, history.t0).await;
    stop.store(true, Ordering::SeqCst);
    for t in tasks {
        t.await.unwrap();
    }
    (cluster, history, healed)
}

fn by_key(writes: &[Write]) -> HashMap<usize, Vec<Write>> {
    let mut out: HashMap<usize, Vec<Write>> = HashMap::new();
    for w in writes {
        out.entry(w.key).or_default().push(w.clone());
    }
    out
}

fn report(name: &str, history: &History) -> (Duration, u64) {
    let writes = history.writes.lock().unwrap().clone();
    let reads = history.reads.lock().unwrap().clone();
    let keyed = by_key(&writes);
    let stale: Vec<Duration> = reads
        .iter()
        .map(|r| staleness(r, &keyed))
        .filter(|s| !s.is_zero())
        .collect();
    let max = stale.iter().max().copied().unwrap_or_default();
    let mut worst: Vec<&Read> = reads.iter().collect();
    worst.sort_by_key(|r| std::cmp::Reverse(staleness(r, &keyed)));
    for r in worst
        .iter()
        .take(3)
        .filter(|r| !staleness(r, &keyed).is_zero())
    {
        let at = |t: Instant| t.saturating_duration_since(history.t0).as_secs_f64();
        let by = superseded_by(r, &keyed).expect("a stale read has a superseding write");
        say(format_args!(
            "phase {name}:   stale read: node {} key {} got w{} ({}) in [{:.3}s, {:.3}s]; w{} \
             was acknowledged at {:.3}s",
            r.node + 1,
            key_name(r.key),
            r.value,
            if r.hit { "hit" } else { "miss" },
            at(r.start),
            at(r.end),
            by.n,
            at(by.end)
        ));
    }
    let future = reads
        .iter()
        .filter(|r| r.value > writes.len() as u64)
        .count() as u64;
    say(format_args!(
        "phase {name}: {} writes ({} acknowledged), {} reads ({} failed or timed out), \
         {} stale reads, longest staleness {:.3}s",
        writes.len(),
        writes.iter().filter(|w| w.acked).count(),
        reads.len(),
        history.failed_reads.lock().unwrap(),
        stale.len(),
        max.as_secs_f64()
    ));
    (max, future)
}

/// Both phases on one bus.
async fn bench(bus: BusKind, seed: u64, logs: &Path) {
    let tag = |phase: &str| format!("{bus:?}/{phase}").to_lowercase();
    tokio::time::timeout(BOUND, async {
        // Phase 1: a short memory TTL; the bound on what a cut-off node serves is the TTL.
        let ttl_ms = 2000;
        let name = tag("ttl");
        let (cluster, history, healed) = phase(&name, bus, ttl_ms, seed, logs).await;
        let (max, future) = report(&name, &history);
        let agree = time_to_agree(&cluster, &history, Duration::from_secs(15)).await;
        let since_heal = healed.elapsed();
        // The bound: the TTL, plus the longest time a node may take between reading the
        // origin and storing what it read (the origin's timeout), plus the test's client
        // timeout for the read's own way.
        let bound = Duration::from_millis(ttl_ms) + Duration::from_millis(800) + REQUEST_TIMEOUT;
        say(format_args!(
            "phase {name}: staleness bound {:.1}s held: {} (longest {:.3}s); all nodes agreed \
             {:.3}s after the poll began ({:.3}s after the last heal)",
            bound.as_secs_f64(),
            max <= bound,
            max.as_secs_f64(),
            agree.as_secs_f64(),
            since_heal.as_secs_f64()
        ));
        assert_eq!(future, 0, "a node served a value never written");
        assert!(
            max <= bound,
            "a node served a value {max:?} stale, past the bound {bound:?}"
        );
        drop(cluster);

        // Phase 2: a memory TTL longer than the bench: nothing expires, so every stale
        // entry after the heal must go by an invalidation or by the flush of a gap.
        let name = tag("exact");
        let (cluster, history, _) = phase(&name, bus, 600_000, seed.wrapping_add(1), logs).await;
        report(&name, &history);
        let started = Instant::now();
        sync_round(&cluster, 1).await;
        let writes = history.writes.lock().unwrap().clone();
        let all = read_all(&cluster).await;
        let wrong = disagreements(&all, &writes);
        let agree = started.elapsed();
        let gaps = total(&cluster, "sequence_gaps").await;
        let flushes = total(&cluster, "memory_flushes").await;
        let applied = total(&cluster, "applied").await;
        let given_up = given_up(&cluster).await;
        say(format_args!(
            "phase {name}: invalidations applied {applied}, frames given up {given_up}, gaps \
             detected {gaps}, memory flushes {flushes}; invalidations lost: {} (node, key, \
             value: {wrong:?}); all nodes agreed {:.3}s after the heal's sync round began",
            wrong.len(),
            agree.as_secs_f64()
        ));
        if !wrong.is_empty() {
            for i in 0..NODES {
                say(format_args!("{}", cluster.tail(i)));
            }
        }
        assert!(
            wrong.is_empty(),
            "invalidations lost: nodes serve values older than the last acknowledged write"
        );
    })
    .await
    .unwrap_or_else(|_| panic!("the partition bench of the {bus:?} bus ends within {BOUND:?}"));
}

/// The bench's scenarios build their networks one at a time: the names of a network
/// carry the test's pid, and they are heavy enough for a 2-core machine on their own.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_cluster_stays_coherent_under_partitions_pauses_and_kills() {
    let _one = ONE_AT_A_TIME.lock().await;
    if !cfg!(feature = "redis") {
        // The origin is a redis-server, which `.ci/run` installs for this feature's tests.
        say(format_args!(
            "partition bench DID NOT RUN: it needs the tests package's `redis` feature \
             (a redis-server is the nodes' origin); `--all-features` turns it on"
        ));
        return;
    }
    if let Some(why) = missing_prerequisite(true) {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("the partition bench cannot run under CI: {why}");
        }
        say(format_args!("partition bench DID NOT RUN: {why}"));
        return;
    }
    let seed = seed();
    say(format_args!(
        "partition bench: seed {seed} (replay with PARTITION_SEED={seed})"
    ));
    let logs = tempfile::tempdir().unwrap();
    let only = std::env::var("PARTITION_BUS").unwrap_or_default();
    if only != "redis" {
        bench(BusKind::Http, seed, logs.path()).await;
    }
    #[cfg(feature = "redis")]
    if only != "http" {
        bench(BusKind::Redis, seed.wrapping_add(2), logs.path()).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn autoscaler_gates_out_cut_off_instances_without_overscaling_or_orphans() {
    if !cfg!(feature = "netns") {
        say(format_args!(
            "partition bench (autoscaling) DID NOT RUN: it needs the tests package's `netns` \
             feature (root, iproute2 and nftables); `--all-features` turns it on"
        ));
        return;
    }
    let _one = ONE_AT_A_TIME.lock().await;
    if let Some(why) = missing_prerequisite(false) {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("the partition bench cannot run under CI: {why}");
        }
        say(format_args!(
            "partition bench (autoscaling) DID NOT RUN: {why}"
        ));
        return;
    }
    let seed = seed();
    say(format_args!(
        "partition bench (autoscaling): seed {seed} (replay with PARTITION_SEED={seed})"
    ));
    let logs = tempfile::tempdir().unwrap();
    autoscale::scenario(seed, logs.path()).await;
}
