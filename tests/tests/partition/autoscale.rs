//! The partition bench's autoscaling scenario: a whole autoscaled service
//! (`autoscale-host`: a `ProcessScaler` whose instances are `instance-server` child
//! processes on 127.0.0.1, a balancer over its discovery stream, an `Autoscaler` and a
//! closed-loop load generator through the balancer) runs in one network namespace of
//! its own. A seeded nemesis cuts instances off from the scaler without killing them:
//! nftables drop rules on the namespace's loopback for their ports (health checks and
//! traffic alike, both ways), or SIGSTOP (the kernel still accepts their connections;
//! nothing answers). Meanwhile the load rises, so the autoscaler must act while
//! instances are cut off; after the heal it falls back.
//!
//! What an operator needs, checked on the host's report:
//!
//! - every cut-off instance is seen unhealthy and gated out of the balancer within a
//!   bound, no request is handed to an instance while its monitor calls it unhealthy,
//!   only requests begun before the gate closed fail, and requests keep succeeding
//!   during every fault;
//! - the count never exceeds the policy's max (neither the scaler's count nor the child
//!   processes), and the scaling direction does not flap;
//! - after the heal the cut-off instances serve again, the count returns to what the
//!   load needs within a bound, and every child process of the host is one of its
//!   instances at every moment (none untracked), and none is left after the shutdown.
//!
//! Needs root, `ip` and `nft`, and the tests package's `netns` feature (on with
//! `--all-features`). `PARTITION_SEED=N` replays a schedule.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use http::{Method, StatusCode};
use serde_json::Value;

use super::net::{self, Lab};
use super::{say, Http, Rng};

/// The host's status and control API, on its namespace's address.
const API_PORT: u16 = 7100;
/// The first port of the instances (50 in all); the namespace has nothing else on it.
const PORTS_FROM: u16 = 21000;
/// The policy: bounds, and requests in flight per instance.
const MIN: usize = 2;
const MAX: usize = 4;
const TARGET: f64 = 2.0;
/// Workers sending at first (3 instances' worth), during the faults (5: more than the
/// max, so the engine asks for more than it may have all along), after (2).
const LOAD_START: usize = 6;
const LOAD_HIGH: usize = 10;
const LOAD_LOW: usize = 4;
/// Between evaluations, the down window, between health checks, and one request's bound.
const INTERVAL_MS: u64 = 500;
const DOWN_WINDOW_MS: u64 = 3000;
const CHECK_MS: u64 = 200;
const REQUEST_TIMEOUT_MS: u64 = 10_000;
/// How long the nemesis runs.
const NEMESIS_FOR: Duration = Duration::from_secs(20);
/// The longest the monitor may take to call a cut-off instance unhealthy (expected:
/// two failed checks, about 0.5 s).
const DETECT_BOUND: Duration = Duration::from_secs(10);
/// The longest the count may take to return to what the load needs after the heal
/// (expected: the 3 s down window plus one instance per evaluation, about 5 s).
const SETTLE_BOUND: Duration = Duration::from_secs(45);
/// The whole scenario stops here, whatever happens (it takes about 45 s).
const BOUND: Duration = Duration::from_secs(150);

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Instances needed for `load` workers: ceil(load / target), within the bounds.
fn need(load: usize) -> usize {
    ((load as f64 / TARGET).ceil() as usize).clamp(MIN, MAX)
}

/// One fault of the nemesis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// nftables drops every packet to and from the instances' ports on loopback: the
    /// scaler's checks and the balancer's requests go unanswered.
    Partition,
    /// SIGSTOP, then SIGCONT: connections are accepted, nothing answers.
    Pause,
}

/// The nemesis's schedule: (fault, how many of the healthy instances, less one, it
/// takes at most (drawn again against the instances of the moment), how long it lasts,
/// quiet time before it).
fn schedule(rng: &mut Rng) -> Vec<(Fault, u64, Duration, Duration)> {
    let mut out = Vec::new();
    let mut at = Duration::ZERO;
    // Partitions and pauses in turn, from a drawn first one: every run has both.
    let first = rng.below(2);
    while at < NEMESIS_FOR {
        let fault = if (out.len() as u64 + first).is_multiple_of(2) {
            Fault::Partition
        } else {
            Fault::Pause
        };
        let share = rng.next();
        let hold = Duration::from_millis(2500 + rng.below(3500));
        let quiet = Duration::from_millis(500 + rng.below(1500));
        at += hold + quiet;
        out.push((fault, share, hold, quiet));
    }
    out
}

/// The host process in its namespace, and the way to it.
struct Host {
    lab: Lab,
    pid: u32,
    http: Http,
    log: std::path::PathBuf,
}

impl Host {
    fn api(&self) -> SocketAddr {
        SocketAddr::from((self.lab.host(0).addr, API_PORT))
    }

    async fn status(&self) -> Option<Value> {
        let (code, body) = self
            .http
            .call(self.api(), Method::GET, "/status", "")
            .await?;
        (code == StatusCode::OK).then(|| serde_json::from_slice(&body).ok())?
    }

    async fn post(&self, path: &str) {
        let res = self.http.call(self.api(), Method::POST, path, "").await;
        assert!(
            matches!(res, Some((StatusCode::OK, _))),
            "POST {path}: {res:?}"
        );
    }

    fn nft(&self, args: &[&str]) {
        let ns = &self.lab.host(0).ns;
        let mut all = vec!["ip", "netns", "exec", ns, "nft"];
        all.extend_from_slice(args);
        net::run(&all).unwrap_or_else(|e| panic!("{e}"));
    }

    fn tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

/// The instances of a status: (port, pid, state, healthy).
fn instances(s: &Value) -> Vec<(u16, Option<u32>, String, bool)> {
    s["instances"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|i| {
            (
                i["port"].as_u64().unwrap_or(0) as u16,
                i["pid"].as_u64().map(|p| p as u32),
                i["state"].as_str().unwrap_or("").to_owned(),
                i["healthy"].as_bool().unwrap_or(false),
            )
        })
        .collect()
}

/// The pids whose parent is `parent`, from `/proc`, leaving out zombies (exited, not yet
/// reaped).
fn children(parent: u32) -> BTreeSet<u32> {
    let mut out = BTreeSet::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // `pid (comm) state ppid ...`; comm may hold spaces and parentheses.
        let Some(rest) = stat.rsplit_once(") ").map(|(_, r)| r) else {
            continue;
        };
        let mut fields = rest.split_whitespace();
        let state = fields.next().unwrap_or("");
        let ppid = fields.next().and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(parent) && state != "Z" {
            out.insert(pid);
        }
    }
    out
}

/// Whether `pid` runs (a zombie does not).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| s.rsplit_once(") ").is_none_or(|(_, r)| !r.starts_with('Z')))
}

/// What the checks of every poll found.
#[derive(Default)]
struct Watch {
    polls: u64,
    /// Child pids of the host missing from its instances at the previous poll.
    suspects: HashSet<u32>,
    /// Child pids missing from its instances two polls in a row, still running.
    untracked: BTreeSet<u32>,
    max_children: usize,
    /// Polls whose load sample (what the engine reads) called more instances ready than
    /// the monitor did: cut-off instances counted as serving.
    sample_overcounted: u64,
}

impl Watch {
    /// Checks one status against the host's children now: counts within the max, one
    /// port and one pid per instance, every child an instance.
    fn check(&mut self, host: &Host, s: &Value) {
        // The children first: one started after this scan shows in the status; one seen
        // here that the status lacks is suspect until the next poll.
        let kids = children(host.pid);
        self.polls += 1;
        self.max_children = self.max_children.max(kids.len());
        let list = instances(s);
        let current = s["current"].as_u64().unwrap_or(0) as usize;
        assert!(
            current <= MAX && list.len() <= MAX && kids.len() <= MAX,
            "beyond the policy's max {MAX}: count {current}, listed {}, child processes {}",
            list.len(),
            kids.len()
        );
        let ports: BTreeSet<u16> = list.iter().map(|i| i.0).collect();
        let pids: BTreeSet<u32> = list.iter().filter_map(|i| i.1).collect();
        assert_eq!(
            ports.len(),
            list.len(),
            "two instances on one port: {list:?}"
        );
        assert_eq!(
            pids.len(),
            list.iter().filter(|i| i.1.is_some()).count(),
            "one pid listed twice: {list:?}"
        );
        let missing: HashSet<u32> = kids.difference(&pids).copied().collect();
        for pid in missing.intersection(&self.suspects) {
            if alive(*pid) {
                self.untracked.insert(*pid);
            }
        }
        self.suspects = missing;
        let sample_ready = s["sample_ready"].as_u64().unwrap_or(0) as usize;
        let serving = list.iter().filter(|i| i.2 == "ready" && i.3).count();
        if sample_ready > serving {
            self.sample_overcounted += 1;
        }
    }
}

/// One fault as it happened.
#[derive(Debug)]
struct Cut {
    fault: Fault,
    ports: Vec<u16>,
    start_ms: u64,
    /// When the host's monitor called each victim unhealthy.
    detected_ms: BTreeMap<u16, u64>,
    heal_ms: u64,
    /// Requests answered between the last detection and the heal.
    ok_while_cut: u64,
}

/// The first health change of `port` to `healthy` at or after `since` (Unix ms).
fn changed(s: &Value, port: u16, healthy: bool, since: u64) -> Option<u64> {
    s["health_changes"]
        .as_array()?
        .iter()
        .filter_map(|c| {
            let (at, p, h) = (c[0].as_u64()?, c[1].as_u64()?, c[2].as_bool()?);
            (p == u64::from(port) && h == healthy && at >= since).then_some(at)
        })
        .min()
}

/// Scaling directions (+1 up, -1 down) of the host's actions between two moments.
fn directions(s: &Value, from_ms: u64, to_ms: u64) -> Vec<i64> {
    s["actions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|a| a["at"].as_u64().is_some_and(|t| t >= from_ms && t <= to_ms))
        .filter_map(|a| {
            let (from, now) = (a["from"].as_i64()?, a["now"].as_i64()?);
            (now != from).then_some((now - from).signum())
        })
        .collect()
}

fn flips(dirs: &[i64]) -> usize {
    dirs.windows(2).filter(|w| w[0] != w[1]).count()
}

/// Polls the host until `done` holds of its status (checking every status on the way);
/// the status that satisfied it.
async fn poll_until(
    host: &Host,
    watch: &mut Watch,
    within: Duration,
    what: &str,
    mut done: impl FnMut(&Value) -> bool,
) -> Value {
    let start = Instant::now();
    let mut last = Value::Null;
    loop {
        if let Some(s) = host.status().await {
            watch.check(host, &s);
            if done(&s) {
                return s;
            }
            last = s;
        }
        assert!(
            start.elapsed() < within,
            "{what}: not within {within:?}; instances {:?}, actions {}, last decision {}; \
             host log:\n{}",
            instances(&last),
            last["actions"],
            last["last_decision"],
            host.tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Cuts `victims` off (`on`) or heals them: their ports into or out of the dropped set,
/// or SIGSTOP / SIGCONT.
fn cut(host: &Host, fault: Fault, victims: &[(u16, u32)], on: bool) {
    match fault {
        Fault::Partition => {
            let list = victims
                .iter()
                .map(|v| v.0.to_string())
                .collect::<Vec<_>>()
                .join(", ");
            let verb = if on { "add" } else { "delete" };
            host.nft(&[
                verb,
                "element",
                "inet",
                "cut",
                "ports",
                &format!("{{ {list} }}"),
            ]);
        }
        Fault::Pause => {
            let signal = if on {
                nix::sys::signal::Signal::SIGSTOP
            } else {
                nix::sys::signal::Signal::SIGCONT
            };
            for &(_, pid) in victims {
                // A victim stopped meanwhile (a scale-down) is gone: nothing to signal.
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal);
            }
        }
    }
}

/// While `victims` are cut off (since `start_ms`), for at least `hold` and until the
/// monitor has called every one unhealthy (within [`DETECT_BOUND`]): when each was
/// (Unix ms), and the requests answered after the last of them was.
async fn while_cut(
    host: &Host,
    watch: &mut Watch,
    fault: Fault,
    victims: &[(u16, u32)],
    start_ms: u64,
    hold: Duration,
) -> (BTreeMap<u16, u64>, u64) {
    let began = Instant::now();
    let mut detected = BTreeMap::new();
    let mut ok_at_detection = None;
    let mut ok_now = 0;
    while began.elapsed() < hold || detected.len() < victims.len() {
        assert!(
            began.elapsed() < DETECT_BOUND.max(hold),
            "{fault:?} of {victims:?}: the monitor called only {detected:?} unhealthy in \
             {DETECT_BOUND:?}; host log:\n{}",
            host.tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        let Some(s) = host.status().await else {
            continue;
        };
        watch.check(host, &s);
        let now = instances(&s);
        for &(p, pid) in victims {
            // Seen unhealthy; or stopped meanwhile (a scale-down), which gates it out
            // all the same.
            let at = changed(&s, p, false, start_ms).or_else(|| {
                (!now.iter().any(|i| i.0 == p && i.1 == Some(pid)))
                    .then(|| s["now"].as_u64())
                    .flatten()
            });
            if let Some(at) = at {
                detected.entry(p).or_insert(at);
            }
        }
        ok_now = s["ok"].as_u64().unwrap_or(0);
        if detected.len() == victims.len() && ok_at_detection.is_none() {
            ok_at_detection = Some(ok_now);
        }
    }
    (
        detected,
        ok_now.saturating_sub(ok_at_detection.unwrap_or(ok_now)),
    )
}

pub(crate) async fn scenario(seed: u64, logs: &Path) {
    tokio::time::timeout(BOUND, run(seed, logs))
        .await
        .unwrap_or_else(|_| panic!("the autoscaling scenario ends within {BOUND:?}"));
}

async fn run(seed: u64, logs: &Path) {
    let lab =
        Lab::create(&["autoscale"]).unwrap_or_else(|e| panic!("cannot build the network: {e}"));
    let log = logs.join("autoscale-host.log");
    let args: Vec<String> = [
        ("listen", format!("{}:{API_PORT}", lab.host(0).addr)),
        ("instance", env!("CARGO_BIN_EXE_instance-server").to_owned()),
        ("start", need(LOAD_START).to_string()),
        ("min", MIN.to_string()),
        ("max", MAX.to_string()),
        ("target-in-flight", TARGET.to_string()),
        ("concurrency", LOAD_START.to_string()),
        ("workers", LOAD_HIGH.to_string()),
        ("interval-ms", INTERVAL_MS.to_string()),
        ("down-window-ms", DOWN_WINDOW_MS.to_string()),
        ("check-ms", CHECK_MS.to_string()),
        ("request-timeout-ms", REQUEST_TIMEOUT_MS.to_string()),
        ("ports-from", PORTS_FROM.to_string()),
    ]
    .into_iter()
    .flat_map(|(k, v)| [format!("--{k}"), v])
    .collect();
    let pid = lab.spawn(0, env!("CARGO_BIN_EXE_autoscale-host"), &args, &log);
    let host = Host {
        lab,
        pid,
        http: Http::new(),
        log,
    };
    // One set of cut ports, dropped both ways on the namespace's loopback.
    net::run_with_input(
        &[
            "ip",
            "netns",
            "exec",
            &host.lab.host(0).ns,
            "nft",
            "-f",
            "-",
        ],
        Some(
            "table inet cut {\n\
               set ports { type inet_service; }\n\
               chain output { type filter hook output priority 0; policy accept; \
                 tcp dport @ports counter drop; tcp sport @ports counter drop; }\n\
             }\n",
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));

    let mut watch = Watch::default();
    let start_count = need(LOAD_START);
    poll_until(
        &host,
        &mut watch,
        Duration::from_secs(60),
        "the first instances ready",
        |s| {
            let list = instances(s);
            list.len() == start_count && list.iter().all(|i| i.2 == "ready" && i.3)
        },
    )
    .await;
    // A steady second at the first load.
    tokio::time::sleep(Duration::from_secs(1)).await;

    let mut rng = Rng::new(seed);
    let plan = schedule(&mut rng);
    say(format_args!(
        "autoscale scenario: policy {MIN}..={MAX} instances at {TARGET} requests in flight \
         each; load {LOAD_START} -> {LOAD_HIGH} workers during the faults -> {LOAD_LOW} after \
         (needs {} -> {} -> {}); {} faults: {plan:?}",
        need(LOAD_START),
        need(LOAD_HIGH),
        need(LOAD_LOW),
        plan.len()
    ));
    let t0 = Instant::now();
    let nemesis_from = now_ms();
    host.post(&format!("/load?c={LOAD_HIGH}")).await;
    let mut cuts: Vec<Cut> = Vec::new();
    for &(fault, share, hold, quiet) in &plan {
        tokio::time::sleep(quiet).await;
        let s = poll_until(
            &host,
            &mut watch,
            Duration::from_secs(10),
            "a status",
            |_| true,
        )
        .await;
        // Victims: some of the instances serving now, never all of them.
        let serving: Vec<(u16, u32)> = instances(&s)
            .into_iter()
            .filter(|i| i.2 == "ready" && i.3)
            .filter_map(|i| Some((i.0, i.1?)))
            .collect();
        if serving.len() < 2 {
            say(format_args!(
                "[{:6.2}s] nemesis: {fault:?} skipped, {} instance(s) serving",
                t0.elapsed().as_secs_f64(),
                serving.len()
            ));
            continue;
        }
        let k = 1 + (share % (serving.len() as u64 - 1)) as usize;
        let mut pool = serving.clone();
        let mut victims = Vec::new();
        for _ in 0..k {
            victims.push(pool.remove(rng.below(pool.len() as u64) as usize));
        }
        victims.sort_unstable();
        let ports: Vec<u16> = victims.iter().map(|v| v.0).collect();
        let pids: Vec<u32> = victims.iter().map(|v| v.1).collect();
        let list = ports
            .iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        say(format_args!(
            "[{:6.2}s] nemesis: {fault:?} of ports [{list}] (pids {pids:?}) of {} serving, \
             for {:.2}s",
            t0.elapsed().as_secs_f64(),
            serving.len(),
            hold.as_secs_f64()
        ));
        let start_ms = now_ms();
        cut(&host, fault, &victims, true);
        let (detected, ok_while_cut) =
            while_cut(&host, &mut watch, fault, &victims, start_ms, hold).await;
        let heal_ms = now_ms();
        cut(&host, fault, &victims, false);
        say(format_args!(
            "[{:6.2}s] nemesis: healed [{list}]; unhealthy after {:?} ms; {ok_while_cut} \
             requests answered while they were gated out",
            t0.elapsed().as_secs_f64(),
            detected.values().map(|d| d - start_ms).collect::<Vec<_>>()
        ));
        cuts.push(Cut {
            fault,
            ports,
            start_ms,
            detected_ms: detected,
            heal_ms,
            ok_while_cut,
        });
    }
    let nemesis_to = now_ms();

    // The load falls while one instance is cut off: the scale-down stops the cut-off
    // instance before any serving one, so once the count is what the load needs, every
    // instance it counts serves (a cut-off one counted there is capacity that is not).
    let want = need(LOAD_LOW);
    let s = poll_until(
        &host,
        &mut watch,
        SETTLE_BOUND,
        "every instance healthy after the faults",
        |s| {
            let list = instances(s);
            list.len() >= 2 && list.iter().all(|i| i.2 == "ready" && i.3)
        },
    )
    .await;
    let serving: Vec<(u16, u32)> = instances(&s)
        .into_iter()
        .filter_map(|i| Some((i.0, i.1?)))
        .collect();
    let fault = if rng.below(2) == 0 {
        Fault::Partition
    } else {
        Fault::Pause
    };
    let victim = vec![serving[rng.below(serving.len() as u64) as usize]];
    say(format_args!(
        "[{:6.2}s] load falls to {LOAD_LOW} workers during a {fault:?} of port {} (pid {}) \
         of {} serving",
        t0.elapsed().as_secs_f64(),
        victim[0].0,
        victim[0].1,
        serving.len()
    ));
    let start_ms = now_ms();
    cut(&host, fault, &victim, true);
    let (detected, _) =
        while_cut(&host, &mut watch, fault, &victim, start_ms, Duration::ZERO).await;
    let ok_at_detection = host.status().await.and_then(|s| s["ok"].as_u64());
    host.post(&format!("/load?c={LOAD_LOW}")).await;
    let fell = Instant::now();
    let fell_ms = now_ms();
    let at_need = poll_until(
        &host,
        &mut watch,
        SETTLE_BOUND,
        &format!("the count down to the {want} instances the lower load needs, while cut off"),
        |s| s["current"].as_u64() == Some(want as u64) && instances(s).len() == want,
    )
    .await;
    let settle_after = fell.elapsed();
    let counted_cut_off = instances(&at_need)
        .iter()
        .filter(|i| !(i.2 == "ready" && i.3))
        .count();
    let victim_kept = instances(&at_need).iter().any(|i| i.1 == Some(victim[0].1));
    let ok_now = at_need["ok"].as_u64().unwrap_or(0);
    let ok_while_cut = ok_now.saturating_sub(ok_at_detection.unwrap_or(ok_now));
    let heal_ms = now_ms();
    cut(&host, fault, &victim, false);
    say(format_args!(
        "[{:6.2}s] count at {want} {:.2}s after the load fell; instances it counts that \
         do not serve: {counted_cut_off}; the cut-off one kept: {victim_kept}; healed",
        t0.elapsed().as_secs_f64(),
        settle_after.as_secs_f64()
    ));
    cuts.push(Cut {
        fault,
        ports: vec![victim[0].0],
        start_ms,
        detected_ms: detected,
        heal_ms,
        ok_while_cut,
    });

    // After the heal: every instance serves, and the count stays what the load needs.
    let healed = Instant::now();
    poll_until(
        &host,
        &mut watch,
        SETTLE_BOUND,
        "every instance healthy again",
        |s| instances(s).iter().all(|i| i.3),
    )
    .await;
    let all_healthy_after = healed.elapsed();
    let settled = poll_until(
        &host,
        &mut watch,
        SETTLE_BOUND,
        &format!("the count at the {want} instances the load needs"),
        |s| {
            let list = instances(s);
            s["current"].as_u64() == Some(want as u64)
                && list.len() == want
                && list.iter().all(|i| i.2 == "ready" && i.3)
                && children(host.pid).len() == want
        },
    )
    .await;

    // A little longer at the lower load: the count stays.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let last = poll_until(
        &host,
        &mut watch,
        Duration::from_secs(10),
        "a status",
        |_| true,
    )
    .await;
    let settled_ms = settled["now"].as_u64().unwrap_or(0);

    // The figures.
    let detections: Vec<u64> = cuts
        .iter()
        .flat_map(|c| c.detected_ms.values().map(|d| d - c.start_ms))
        .collect();
    let failures: Vec<(u64, u64, String)> = last["failures"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| Some((f[0].as_u64()?, f[1].as_u64()?, f[2].as_str()?.to_owned())))
        .collect();
    // A request may fail only if it began before the gate of some victim closed (and
    // not long before its fault began): it was handed to the instance, or was in it.
    let excused = |began: u64| {
        cuts.iter().any(|c| {
            let closed = c.detected_ms.values().copied().max().unwrap_or(c.heal_ms);
            began + 1000 >= c.start_ms && began <= closed + 200
        })
    };
    let unexcused: Vec<&(u64, u64, String)> = failures.iter().filter(|f| !excused(f.0)).collect();
    let dispatched_unhealthy: u64 = last["dispatched_unhealthy"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(_, v)| v.as_u64())
        .sum();
    let during = directions(&last, nemesis_from, nemesis_to);
    let after = directions(&last, fell_ms, settled_ms);
    let all_dirs = directions(&last, 0, u64::MAX);
    let max_current = last["max_current"].as_u64().unwrap_or(0) as usize;
    let max_processes = last["max_processes"].as_u64().unwrap_or(0) as usize;
    let mut sorted = detections.clone();
    sorted.sort_unstable();
    say(format_args!(
        "autoscale scenario: {} faults ({} partitions, {} pauses) on {} instances; \
         unhealthy and gated out after {} ms (median) / {} ms (longest); requests answered \
         {}, failed {} (all begun before a gate closed: {}), handed to an unhealthy \
         instance {dispatched_unhealthy}; most instances {max_current} (child processes \
         {max_processes}, seen from /proc {}) against the max {MAX}; scaling actions \
         during the faults {:?} ({} direction flips), after {:?}, in all {} of {} decisions; \
         every instance \
         healthy {:.2}s after the last heal, count at {want} {:.2}s after the load fell (with \
         one instance cut off); polls whose load \
         sample counted cut-off instances ready {} of {}; untracked child processes {:?}",
        cuts.len(),
        cuts.iter().filter(|c| c.fault == Fault::Partition).count(),
        cuts.iter().filter(|c| c.fault == Fault::Pause).count(),
        cuts.iter().map(|c| c.ports.len()).sum::<usize>(),
        sorted.get(sorted.len() / 2).copied().unwrap_or(0),
        sorted.last().copied().unwrap_or(0),
        last["ok"],
        failures.len(),
        unexcused.is_empty(),
        watch.max_children,
        during,
        flips(&during),
        after,
        all_dirs.len(),
        last["decisions"],
        all_healthy_after.as_secs_f64(),
        settle_after.as_secs_f64(),
        watch.sample_overcounted,
        watch.polls,
        watch.untracked,
    ));

    // Shut down: every instance drained and stopped, then the host exits.
    let pids_ever: Vec<u32> = last["pids_ever"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p.as_u64().map(|p| p as u32))
        .collect();
    host.post("/shutdown").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while alive(host.pid) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let host_gone = !alive(host.pid);
    let left: Vec<u32> = pids_ever.iter().copied().filter(|p| alive(*p)).collect();
    let shut_down_clean = std::fs::read_to_string(&host.log)
        .unwrap_or_default()
        .contains("shut down, 0 instances left");
    say(format_args!(
        "autoscale scenario: shut down cleanly: {shut_down_clean}; of {} instance processes \
         ever started, still running: {left:?}",
        pids_ever.len()
    ));

    // (a) Gated out: seen unhealthy, no request handed over while unhealthy, only
    // requests begun before a gate closed failed, answers went on during every fault.
    assert!(!cuts.is_empty(), "the nemesis cut nothing off");
    assert_eq!(
        dispatched_unhealthy, 0,
        "requests were handed to instances their monitor called unhealthy: {}",
        last["dispatched_unhealthy"]
    );
    assert!(
        unexcused.is_empty(),
        "requests failed that began after every gate had closed: {unexcused:?}; cuts \
         {cuts:?}; health changes {}; actions {}",
        last["health_changes"],
        last["actions"]
    );
    // Idempotent requests sent to an instance just before it was cut off are tried on
    // another one: none fails.
    assert!(
        failures.is_empty(),
        "idempotent requests failed: {failures:?}; cuts {cuts:?}"
    );
    for c in &cuts {
        assert!(
            c.ok_while_cut > 0,
            "no request was answered while {:?} was cut off: {c:?}",
            c.ports
        );
    }
    // (b) Bounded, no flapping: the count stays within the max (checked at every poll
    // too), and the direction changes at most once while instances are cut off.
    assert!(
        max_current <= MAX && max_processes <= MAX && watch.max_children <= MAX,
        "beyond the max {MAX}: count {max_current}, processes {max_processes}, children {}",
        watch.max_children
    );
    assert!(
        flips(&during) <= 1,
        "the scaling direction flapped while instances were cut off: {during:?}"
    );
    assert!(
        after.iter().all(|d| *d < 0),
        "after the load fell, the count only goes down: {after:?}"
    );
    assert_eq!(
        (counted_cut_off, victim_kept),
        (0, false),
        "at the count the lower load needs, cut-off instances were counted as capacity \
         (the scale-down stopped serving instances and kept the cut-off one)"
    );
    // (c) Not double-counted: back to what the load needs (waited for above), every
    // child process an instance at every poll, none left after the shutdown.
    assert_eq!(
        last["current"].as_u64(),
        Some(want as u64),
        "the count left {want} after it settled"
    );
    assert!(
        watch.untracked.is_empty(),
        "child processes of the host that were none of its instances: {:?}",
        watch.untracked
    );
    assert!(host_gone, "the host did not exit after its shutdown");
    assert!(
        shut_down_clean,
        "the host's shutdown left instances; log:\n{}",
        host.tail()
    );
    assert!(
        left.is_empty(),
        "instance processes outlived the host: {left:?}"
    );
    drop(host);
}
