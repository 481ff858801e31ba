//! [`HealthMonitor`]: active and passive health checking of remote targets.
//!
//! Each registered [`Target`] gets a task that sends `GET <path>` over a pooled hyper
//! client (connections are reused) every `interval`, with ±10% jitter so a fleet is not
//! probed in lockstep, each check bounded by `timeout`. A status other than the expected
//! one, a refused or reset connection, garbage instead of HTTP, or a hang past the
//! timeout is a failure. Passive results ([`HealthMonitor::report_success`] and
//! [`HealthMonitor::report_failure`], e.g. from a circuit breaker or real traffic) run the
//! same state machine with counters of their own:
//!
//! ```text
//! Unknown --success x success_threshold--> Healthy --failure x failure_threshold--> Unhealthy
//!    \--failure x failure_threshold--> Unhealthy --success x success_threshold--> Healthy
//! ```
//!
//! A target is unhealthy when **either** side says so: one active success does not wipe
//! out a streak of passive failures from real traffic. A passive failure state ends with
//! `success_threshold` passive successes, or with `failure_threshold` active successes in
//! a row after it began (as much evidence as it took to trip it).
//!
//! An unhealthy target is checked with exponential backoff (up to `max_backoff`, jitter
//! included), and is **never forgotten**: only [`HealthMonitor::unregister`] removes it,
//! and that tells its watchers it is not ready any more.
//!
//! [`HealthMonitor::watch`] gives a `watch::Receiver<bool>` for a [`Gate`](crate::Gate),
//! so a pending-mode [`ReadinessLayer`](crate::ReadinessLayer) around that endpoint makes a
//! balancer skip it while it is unhealthy.
//!
//! Defaults: interval 250 ms, timeout 200 ms, failure threshold 2, success threshold 1,
//! backoff up to 500 ms. A dead target is detected within
//! `interval x failure_threshold + timeout` (700 ms), a recovered one within about
//! `max_backoff` plus one check.
//!
//! ```no_run
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use tower_health::{Gate, HealthMonitor, ReadinessLayer, Target};
//!
//! let monitor = HealthMonitor::new();
//! monitor.register(Target::new("training-1", "127.0.0.1:3001").path("/health/ready"))?;
//! monitor.on_health_change(|t, was| tracing::info!(target = %t.name, ?was, now = ?t.state, "health changed"));
//! let gate = Gate::new(monitor.watch("training-1").expect("registered"));
//! let layer = ReadinessLayer::pending(gate); // wrap the endpoint's client in this
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{StatusCode, Uri};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::sync::watch;
use tokio::task::AbortHandle;

use crate::error::BuildError;
use crate::lock;
use crate::probe::{apply_result, check_schedule, ProbeState};

/// Default time between checks.
pub const DEFAULT_INTERVAL: Duration = Duration::from_millis(250);
/// Default bound on one check.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(200);
/// Default consecutive failures before a target is unhealthy.
pub const DEFAULT_FAILURE_THRESHOLD: u32 = 2;
/// Default consecutive successes before a target is healthy.
pub const DEFAULT_SUCCESS_THRESHOLD: u32 = 1;
/// Default longest wait between checks of an unhealthy target.
pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_millis(500);

/// A target's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetState {
    /// Not checked enough yet; not ready for traffic.
    Unknown,
    /// Passing.
    Healthy,
    /// Failing.
    Unhealthy,
}

/// A snapshot of one target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetReport {
    /// The target's name.
    pub name: String,
    /// The URL it is checked at.
    pub url: String,
    /// Its state.
    pub state: TargetState,
    /// Active check failures in a row.
    pub consecutive_failures: u32,
    /// Active check successes in a row.
    pub consecutive_successes: u32,
    /// Passive failures reported in a row.
    pub passive_failures: u32,
    /// Passive successes reported in a row.
    pub passive_successes: u32,
    /// Checks run (active) or reported (passive).
    pub checks: u64,
    /// When the last result came in.
    pub last_check: Option<SystemTime>,
    /// How long the last active check took.
    pub last_latency: Option<Duration>,
    /// The last failure's reason (cleared by a success).
    pub last_error: Option<String>,
}

impl TargetReport {
    /// A target not checked yet.
    fn unchecked(name: String, url: String) -> Self {
        Self {
            name,
            url,
            state: TargetState::Unknown,
            consecutive_failures: 0,
            consecutive_successes: 0,
            passive_failures: 0,
            passive_successes: 0,
            checks: 0,
            last_check: None,
            last_latency: None,
            last_error: None,
        }
    }
}

/// A remote target to monitor; see the [module docs](crate::monitor) for defaults.
#[derive(Debug, Clone)]
pub struct Target {
    name: String,
    address: String,
    path: String,
    interval: Duration,
    timeout: Duration,
    failure_threshold: u32,
    success_threshold: u32,
    expected_status: u16,
    max_backoff: Duration,
}

impl Target {
    /// A target named `name` at `address` (`host:port` or `http://host:port`).
    pub fn new(name: impl Into<String>, address: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            address: address.into(),
            path: "/health".into(),
            interval: DEFAULT_INTERVAL,
            timeout: DEFAULT_TIMEOUT,
            failure_threshold: DEFAULT_FAILURE_THRESHOLD,
            success_threshold: DEFAULT_SUCCESS_THRESHOLD,
            expected_status: 200,
            max_backoff: DEFAULT_MAX_BACKOFF,
        }
    }

    /// The path to `GET` (default `/health`).
    pub fn path(mut self, path: impl Into<String>) -> Self {
        self.path = path.into();
        self
    }

    /// Time between checks (default 250 ms).
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// Bound on one check (default 200 ms); must not exceed the interval.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Consecutive failures before unhealthy (default 2).
    pub fn failure_threshold(mut self, n: u32) -> Self {
        self.failure_threshold = n;
        self
    }

    /// Consecutive successes before healthy (default 1).
    pub fn success_threshold(mut self, n: u32) -> Self {
        self.success_threshold = n;
        self
    }

    /// The status a healthy target answers with (default 200).
    pub fn expected_status(mut self, status: u16) -> Self {
        self.expected_status = status;
        self
    }

    /// Longest wait between checks of an unhealthy target (default 500 ms; at least the
    /// interval).
    pub fn max_backoff(mut self, max: Duration) -> Self {
        self.max_backoff = max;
        self
    }

    fn build(&self) -> Result<(Uri, StatusCode), BuildError> {
        check_schedule(
            "target",
            &self.name,
            ("interval", self.interval, "250ms"),
            (self.timeout, "200ms"),
            (self.failure_threshold, self.success_threshold),
        )?;
        let err = |s: String| BuildError::new(format!("target `{}`: {s}", self.name));
        if self.max_backoff < self.interval {
            return Err(err(format!(
                "max_backoff ({:?}) is shorter than the interval ({:?}); raise it",
                self.max_backoff, self.interval
            )));
        }
        let status = StatusCode::from_u16(self.expected_status).map_err(|_| {
            err(format!(
                "expected status {} is not an HTTP status",
                self.expected_status
            ))
        })?;
        let authority = self
            .address
            .strip_prefix("http://")
            .unwrap_or(&self.address)
            .trim_end_matches('/');
        let path = if self.path.starts_with('/') {
            self.path.clone()
        } else {
            format!("/{}", self.path)
        };
        let malformed = || {
            err(format!(
                "address `{}` is malformed; give `host:port` or `http://host:port`",
                self.address
            ))
        };
        if authority.is_empty() || authority.contains('/') || authority.contains("://") {
            return Err(malformed());
        }
        let uri: Uri = format!("http://{authority}{path}")
            .parse()
            .map_err(|_| malformed())?;
        if uri.port_u16().is_none() || uri.host().is_none_or(str::is_empty) {
            return Err(malformed());
        }
        Ok((uri, status))
    }
}

type Hook = Arc<dyn Fn(&TargetReport, TargetState) + Send + Sync>;

struct TargetEntry {
    target: Target,
    health: Mutex<Health>,
    ready: watch::Sender<bool>,
    task: Mutex<Option<AbortHandle>>,
}

struct Shared {
    targets: Mutex<HashMap<String, Arc<TargetEntry>>>,
    hooks: Mutex<Vec<Hook>>,
    client: Client<HttpConnector, Empty<Bytes>>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        for entry in lock(&self.targets).values() {
            if let Some(t) = lock(&entry.task).take() {
                t.abort();
            }
        }
    }
}

/// Monitors remote targets; see the [module docs](crate::monitor).
///
/// Cloning shares the targets. Check tasks run on the tokio runtime that registered the
/// target and stop when the last clone is dropped.
#[derive(Clone)]
pub struct HealthMonitor {
    shared: Arc<Shared>,
}

impl fmt::Debug for HealthMonitor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HealthMonitor")
            .field("targets", &self.all_health())
            .finish_non_exhaustive()
    }
}

impl Default for HealthMonitor {
    fn default() -> Self {
        Self::new()
    }
}

impl HealthMonitor {
    /// A monitor with no targets.
    pub fn new() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(2)
            .build(connector);
        Self {
            shared: Arc::new(Shared {
                targets: Mutex::new(HashMap::new()),
                hooks: Mutex::new(Vec::new()),
                client,
            }),
        }
    }

    /// Starts checking `target`. Fails, saying what to change, on a zero interval or
    /// threshold, a timeout longer than the interval, a malformed address or a name
    /// already registered.
    ///
    /// # Panics
    ///
    /// If called outside a tokio runtime.
    pub fn register(&self, target: Target) -> Result<(), BuildError> {
        let (uri, expected) = target.build()?;
        let mut targets = lock(&self.shared.targets);
        if targets.contains_key(&target.name) {
            return Err(BuildError::new(format!(
                "target `{}` is already registered; unregister it first or use another name",
                target.name
            )));
        }
        let (ready, _) = watch::channel(false);
        let entry = Arc::new(TargetEntry {
            health: Mutex::new(Health {
                active: ProbeState::Unknown,
                passive: ProbeState::Unknown,
                active_since_trip: 0,
                snapshot: TargetReport::unchecked(target.name.clone(), uri.to_string()),
            }),
            target,
            ready,
            task: Mutex::new(None),
        });
        let task = tokio::spawn(run(
            entry.clone(),
            Arc::downgrade(&self.shared),
            self.shared.client.clone(),
            uri,
            expected,
        ));
        *lock(&entry.task) = Some(task.abort_handle());
        targets.insert(entry.target.name.clone(), entry);
        Ok(())
    }

    /// Stops checking `name` and forgets it; returns whether it was registered.
    ///
    /// Its watchers ([`Self::watch`]) see "not ready": a pending-mode gate that follows a
    /// removed instance closes, so a balancer stops routing to it.
    pub fn unregister(&self, name: &str) -> bool {
        match lock(&self.shared.targets).remove(name) {
            Some(entry) => {
                if let Some(t) = lock(&entry.task).take() {
                    t.abort();
                }
                entry.ready.send_replace(false);
                true
            }
            None => false,
        }
    }

    /// The health of `name`.
    pub fn health(&self, name: &str) -> Option<TargetReport> {
        lock(&self.shared.targets)
            .get(name)
            .map(|e| lock(&e.health).snapshot.clone())
    }

    /// Every target's health, sorted by name.
    pub fn all_health(&self) -> Vec<TargetReport> {
        let mut all: Vec<_> = lock(&self.shared.targets)
            .values()
            .map(|e| lock(&e.health).snapshot.clone())
            .collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// Whether `name` is healthy (unknown and unregistered targets are not).
    pub fn is_ready_for_traffic(&self, name: &str) -> bool {
        self.health(name)
            .is_some_and(|h| h.state == TargetState::Healthy)
    }

    /// A receiver that is `true` while `name` is healthy; for a [`Gate`](crate::Gate).
    pub fn watch(&self, name: &str) -> Option<watch::Receiver<bool>> {
        lock(&self.shared.targets)
            .get(name)
            .map(|e| e.ready.subscribe())
    }

    /// Calls `hook` with the new snapshot and the previous state whenever a target's
    /// state changes.
    pub fn on_health_change<F>(&self, hook: F)
    where
        F: Fn(&TargetReport, TargetState) + Send + Sync + 'static,
    {
        lock(&self.shared.hooks).push(Arc::new(hook));
    }

    /// A passive success for `name` (e.g. a request to it succeeded).
    pub fn report_success(&self, name: &str) {
        if let Some(e) = lock(&self.shared.targets).get(name).cloned() {
            record(&e, &self.shared, Side::Passive, Ok(()), None);
        }
    }

    /// A passive failure for `name` (e.g. its circuit breaker opened).
    pub fn report_failure(&self, name: &str, reason: impl Into<String>) {
        if let Some(e) = lock(&self.shared.targets).get(name).cloned() {
            record(&e, &self.shared, Side::Passive, Err(reason.into()), None);
        }
    }
}

/// A target's state: each side's own, and the snapshot handed out.
struct Health {
    active: ProbeState,
    passive: ProbeState,
    /// Active successes in a row since the passive side began failing.
    active_since_trip: u32,
    snapshot: TargetReport,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Active,
    Passive,
}

fn record(
    entry: &TargetEntry,
    shared: &Shared,
    side: Side,
    result: Result<(), String>,
    latency: Option<Duration>,
) {
    let t = &entry.target;
    let (changed, snapshot, was) = {
        let mut guard = lock(&entry.health);
        let h = &mut *guard;
        let was = h.snapshot.state;
        let ok = result.is_ok();
        let snap = &mut h.snapshot;
        match side {
            Side::Active => {
                apply_result(
                    &mut h.active,
                    &mut snap.consecutive_failures,
                    &mut snap.consecutive_successes,
                    ok,
                    t.failure_threshold,
                    t.success_threshold,
                );
                if h.passive == ProbeState::Failing {
                    h.active_since_trip = if ok { h.active_since_trip + 1 } else { 0 };
                    if h.active_since_trip >= t.failure_threshold {
                        h.passive = ProbeState::Unknown;
                        snap.passive_failures = 0;
                    }
                }
            }
            Side::Passive => {
                let before = h.passive;
                apply_result(
                    &mut h.passive,
                    &mut snap.passive_failures,
                    &mut snap.passive_successes,
                    ok,
                    t.failure_threshold,
                    t.success_threshold,
                );
                if before != ProbeState::Failing && h.passive == ProbeState::Failing {
                    h.active_since_trip = 0;
                }
            }
        }
        snap.state = match (h.active, h.passive) {
            (ProbeState::Failing, _) | (_, ProbeState::Failing) => TargetState::Unhealthy,
            (ProbeState::Passing, _) | (_, ProbeState::Passing) => TargetState::Healthy,
            _ => TargetState::Unknown,
        };
        snap.checks += 1;
        snap.last_check = Some(SystemTime::now());
        if latency.is_some() {
            snap.last_latency = latency;
        }
        snap.last_error = result.err();
        (snap.state != was, snap.clone(), was)
    };
    if changed {
        entry
            .ready
            .send_replace(snapshot.state == TargetState::Healthy);
        tracing::info!(target_name = %snapshot.name, ?was, now = ?snapshot.state, error = ?snapshot.last_error, "target health changed");
        let hooks: Vec<Hook> = lock(&shared.hooks).clone();
        for hook in hooks {
            hook(&snapshot, was);
        }
    }
}

/// A small per-target random source for jitter.
struct Jitter(u64);

impl Jitter {
    fn new(name: &str) -> Self {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write(name.as_bytes());
        Self(h.finish() | 1)
    }

    /// `d` scaled by a factor in [0.9, 1.1).
    fn apply(&mut self, d: Duration) -> Duration {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        let unit = (self.0 >> 11) as f64 / (1u64 << 53) as f64;
        // `mul_f64` panics past Duration::MAX: saturate instead.
        Duration::try_from_secs_f64(d.as_secs_f64() * (0.9 + 0.2 * unit)).unwrap_or(d)
    }
}

/// The wait before the next check: the interval with jitter, or for an unhealthy target
/// a backoff doubling per failure, jitter included, never past `max_backoff`.
fn next_delay(t: &Target, h: &TargetReport, jitter: &mut Jitter) -> Duration {
    if h.state == TargetState::Unhealthy {
        let extra = h
            .consecutive_failures
            .saturating_sub(t.failure_threshold)
            .min(16);
        let backoff = t.interval.saturating_mul(1 << extra);
        jitter.apply(backoff).min(t.max_backoff)
    } else {
        jitter.apply(t.interval)
    }
}

async fn run(
    entry: Arc<TargetEntry>,
    shared: Weak<Shared>,
    client: Client<HttpConnector, Empty<Bytes>>,
    uri: Uri,
    expected: StatusCode,
) {
    let t = entry.target.clone();
    let mut jitter = Jitter::new(&t.name);
    // Spread the first checks of many targets over a tenth of an interval.
    tokio::time::sleep(jitter.apply(t.interval / 20)).await;
    loop {
        let start = tokio::time::Instant::now();
        let result = match tokio::time::timeout(t.timeout, check(&client, &uri, expected)).await {
            Ok(r) => r,
            Err(_) => Err(format!("no answer within {:?}", t.timeout)),
        };
        let latency = start.elapsed();
        let Some(shared) = shared.upgrade() else {
            return;
        };
        record(&entry, &shared, Side::Active, result, Some(latency));
        drop(shared);
        let delay = {
            let h = lock(&entry.health);
            next_delay(&t, &h.snapshot, &mut jitter)
        };
        tokio::time::sleep(delay.saturating_sub(latency)).await;
    }
}

async fn check(
    client: &Client<HttpConnector, Empty<Bytes>>,
    uri: &Uri,
    expected: StatusCode,
) -> Result<(), String> {
    let req = http::Request::get(uri.clone())
        .header(http::header::USER_AGENT, "tower-health-monitor")
        .body(Empty::new())
        .map_err(|e| e.to_string())?;
    let res = client.request(req).await.map_err(|e| {
        // The hyper error alone says "client error (Connect)"; its sources say why.
        let mut msg = e.to_string();
        let mut src = std::error::Error::source(&e);
        while let Some(s) = src {
            msg.push_str(": ");
            msg.push_str(&s.to_string());
            src = s.source();
        }
        msg
    })?;
    let status = res.status();
    // Read the body so the connection can be reused, and so a truncated answer fails.
    res.into_body()
        .collect()
        .await
        .map_err(|e| format!("reading the body: {e}"))?;
    if status == expected {
        Ok(())
    } else {
        Err(format!("status {status}, expected {expected}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_with_jitter_stays_within_max_backoff() {
        let t = Target::new("t", "127.0.0.1:1")
            .interval(Duration::from_millis(100))
            .max_backoff(Duration::from_millis(500));
        let mut jitter = Jitter::new("t");
        let mut h = TargetReport::unchecked("t".into(), String::new());
        h.state = TargetState::Unhealthy;
        let mut longest = Duration::ZERO;
        for failures in 0..40 {
            h.consecutive_failures = failures;
            for _ in 0..200 {
                let d = next_delay(&t, &h, &mut jitter);
                assert!(
                    d <= Duration::from_millis(500),
                    "{d:?} after {failures} failures"
                );
                longest = longest.max(d);
            }
        }
        assert_eq!(
            longest,
            Duration::from_millis(500),
            "the backoff reaches its cap"
        );
        // Extreme settings saturate instead of panicking.
        for d in [Duration::MAX, Duration::MAX / 2, Duration::ZERO] {
            let _ = jitter.apply(d);
        }
        let huge = Target::new("t", "127.0.0.1:1")
            .interval(Duration::MAX)
            .max_backoff(Duration::MAX);
        let _ = next_delay(&huge, &h, &mut jitter);
        h.state = TargetState::Healthy;
        let d = next_delay(&t, &h, &mut jitter);
        assert!(d >= Duration::from_millis(90) && d <= Duration::from_millis(110));
    }
}
