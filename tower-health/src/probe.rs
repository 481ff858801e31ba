//! Probes: startup, readiness, liveness and resource checks with Kubernetes semantics.
//!
//! Each probe is an async check run every `period`, bounded by `timeout`, whose result
//! flips the probe's state only after `failure_threshold` consecutive failures or
//! `success_threshold` consecutive successes. As in Kubernetes:
//!
//! - readiness, liveness and resource probes are **not run until every startup probe has
//!   passed**; a startup probe stops once it has passed;
//! - a probe that has not passed yet counts as *not ready* but as *live*;
//! - the service is **ready** when it has started, every readiness and resource probe
//!   passes and it is not draining; it is **live** unless a liveness probe (or a startup
//!   probe) has failed past its threshold.
//!
//! Defaults (Kubernetes' in brackets): period 1 s (10 s), timeout 500 ms or the period if shorter (1 s), failure
//! threshold 3 (3), success threshold 1 (1). In-process checks are cheap, so they run
//! more often than Kubernetes polls a container.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use tower_health::{Probe, Probes};
//!
//! let probes = Probes::new();
//! probes.register(Probe::startup("config", || async { Ok::<_, String>(()) }))?;
//! probes.register(
//!     Probe::readiness("db", || async { Ok::<_, String>(()) })
//!         .period(Duration::from_millis(100))
//!         .timeout(Duration::from_millis(50)),
//! )?;
//! probes.start();
//! probes.wait_for_ready(Duration::from_secs(5)).await?;
//! assert!(probes.status().ready);
//! # Ok(()) }
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tokio::task::AbortHandle;

use crate::error::{BuildError, NotReady};
use crate::lock;

type CheckFuture = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;
type CheckFn = Arc<dyn Fn() -> CheckFuture + Send + Sync>;

/// Default period between checks.
pub const DEFAULT_PERIOD: Duration = Duration::from_secs(1);
/// Default bound on one check.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(500);
/// Default consecutive failures before a probe fails.
pub const DEFAULT_FAILURE_THRESHOLD: u32 = 3;
/// Default consecutive successes before a probe passes.
pub const DEFAULT_SUCCESS_THRESHOLD: u32 = 1;

/// What a probe decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProbeKind {
    /// Initialisation is complete; gates the other kinds.
    Startup,
    /// The service can take traffic.
    Readiness,
    /// The service is not stuck; failing means it should be restarted.
    Liveness,
    /// A resource (memory, CPU, a pool) has room; counts towards readiness.
    Resource,
}

impl ProbeKind {
    /// The lowercase name used in JSON and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            ProbeKind::Startup => "startup",
            ProbeKind::Readiness => "readiness",
            ProbeKind::Liveness => "liveness",
            ProbeKind::Resource => "resource",
        }
    }
}

/// The state of one probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeState {
    /// Not enough results yet to pass or fail.
    Unknown,
    /// Passed `success_threshold` times in a row (and has not failed since past its
    /// threshold).
    Passing,
    /// Failed `failure_threshold` times in a row.
    Failing,
}

impl ProbeState {
    /// The lowercase name used in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            ProbeState::Unknown => "unknown",
            ProbeState::Passing => "pass",
            ProbeState::Failing => "fail",
        }
    }
}

/// One probe's latest results.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeReport {
    /// The probe's name.
    pub name: String,
    /// Its kind.
    pub kind: ProbeKind,
    /// Its state after thresholds.
    pub state: ProbeState,
    /// When it last ran.
    pub last_check: Option<SystemTime>,
    /// Failures in a row.
    pub consecutive_failures: u32,
    /// Successes in a row.
    pub consecutive_successes: u32,
    /// The last failure's message (cleared by a success).
    pub message: Option<String>,
}

/// The service's overall health, derived from its probes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceHealth {
    /// Every startup probe has passed.
    pub started: bool,
    /// Started, every readiness and resource probe passes, and not draining.
    pub ready: bool,
    /// No liveness or startup probe has failed past its threshold.
    pub live: bool,
    /// [`Probes::set_draining`] turned readiness off.
    pub draining: bool,
}

/// A probe: a named async check with its timing and thresholds.
#[derive(Clone)]
pub struct Probe {
    name: String,
    kind: ProbeKind,
    check: CheckFn,
    period: Duration,
    /// Set by [`Probe::timeout`]; otherwise the default, or the period if shorter.
    timeout: Option<Duration>,
    failure_threshold: u32,
    success_threshold: u32,
}

impl fmt::Debug for Probe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Probe")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("period", &self.period)
            .field("timeout", &self.effective_timeout())
            .field("failure_threshold", &self.failure_threshold)
            .field("success_threshold", &self.success_threshold)
            .finish_non_exhaustive()
    }
}

impl Probe {
    /// A probe of `kind` named `name` running `check`; an `Err` is a failure whose
    /// message is kept.
    pub fn new<F, Fut, E>(kind: ProbeKind, name: impl Into<String>, check: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: fmt::Display,
    {
        let check: CheckFn = Arc::new(move || {
            let fut = check();
            Box::pin(async move { fut.await.map_err(|e| e.to_string()) })
        });
        Self {
            name: name.into(),
            kind,
            check,
            period: DEFAULT_PERIOD,
            timeout: None,
            failure_threshold: DEFAULT_FAILURE_THRESHOLD,
            success_threshold: DEFAULT_SUCCESS_THRESHOLD,
        }
    }

    /// A startup probe.
    pub fn startup<F, Fut, E>(name: impl Into<String>, check: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: fmt::Display,
    {
        Self::new(ProbeKind::Startup, name, check)
    }

    /// A readiness probe.
    pub fn readiness<F, Fut, E>(name: impl Into<String>, check: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: fmt::Display,
    {
        Self::new(ProbeKind::Readiness, name, check)
    }

    /// A liveness probe.
    pub fn liveness<F, Fut, E>(name: impl Into<String>, check: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: fmt::Display,
    {
        Self::new(ProbeKind::Liveness, name, check)
    }

    /// A resource probe; see [`crate::resource`] for ready-made checks.
    pub fn resource<F, Fut, E>(name: impl Into<String>, check: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: fmt::Display,
    {
        Self::new(ProbeKind::Resource, name, check)
    }

    /// Time between checks (default 1 s).
    pub fn period(mut self, period: Duration) -> Self {
        self.period = period;
        self
    }

    /// Bound on one check; a check that takes longer fails (default 500 ms, or the
    /// period when that is shorter).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// The bound on one check in force: as set, or the default capped at the period.
    fn effective_timeout(&self) -> Duration {
        self.timeout
            .unwrap_or_else(|| DEFAULT_TIMEOUT.min(self.period))
    }

    /// Consecutive failures before the probe fails (default 3).
    pub fn failure_threshold(mut self, n: u32) -> Self {
        self.failure_threshold = n;
        self
    }

    /// Consecutive successes before the probe passes (default 1).
    pub fn success_threshold(mut self, n: u32) -> Self {
        self.success_threshold = n;
        self
    }

    /// The probe's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn validate(&self) -> Result<(), BuildError> {
        check_schedule(
            "probe",
            &self.name,
            ("period", self.period, "1s"),
            (self.effective_timeout(), "500ms"),
            (self.failure_threshold, self.success_threshold),
        )
    }
}

/// Checks what probes and monitor targets share: a name, a positive period, a positive
/// timeout no longer than the period, thresholds of at least one. Messages name the
/// setting and a sensible value.
pub(crate) fn check_schedule(
    thing: &str,
    name: &str,
    (period_name, period, period_example): (&str, Duration, &str),
    (timeout, timeout_example): (Duration, &str),
    (failure_threshold, success_threshold): (u32, u32),
) -> Result<(), BuildError> {
    let err = |s: String| Err(BuildError::new(format!("{thing} `{name}`: {s}")));
    if name.is_empty() {
        return Err(BuildError::new(format!(
            "{thing}: the name is empty; give every {thing} a name"
        )));
    }
    if period.is_zero() {
        return err(format!(
            "{period_name} is zero; check at least every few seconds, e.g. {period_example}"
        ));
    }
    if timeout.is_zero() {
        return err(format!(
            "timeout is zero; allow the check some time, e.g. {timeout_example}"
        ));
    }
    if timeout > period {
        return err(format!(
            "timeout ({timeout:?}) is longer than the {period_name} ({period:?}); lower the timeout or raise the {period_name}"
        ));
    }
    if failure_threshold == 0 || success_threshold == 0 {
        return err("thresholds must be at least 1".to_string());
    }
    Ok(())
}

/// Applies one result to a probe's counters and state (thresholds both ways).
pub(crate) fn apply_result(
    state: &mut ProbeState,
    failures: &mut u32,
    successes: &mut u32,
    ok: bool,
    failure_threshold: u32,
    success_threshold: u32,
) {
    if ok {
        *failures = 0;
        *successes = successes.saturating_add(1);
        if *successes >= success_threshold {
            *state = ProbeState::Passing;
        }
    } else {
        *successes = 0;
        *failures = failures.saturating_add(1);
        if *failures >= failure_threshold {
            *state = ProbeState::Failing;
        }
    }
}

struct Entry {
    probe: Probe,
    status: Mutex<ProbeReport>,
}

struct Inner {
    entries: Mutex<Vec<Arc<Entry>>>,
    tasks: Mutex<Vec<AbortHandle>>,
    running: Mutex<bool>,
    draining: Mutex<bool>,
    started: watch::Sender<bool>,
    ready: watch::Sender<bool>,
    live: watch::Sender<bool>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for t in lock(&self.tasks).drain(..) {
            t.abort();
        }
    }
}

/// A registry of probes and the health they add up to.
///
/// Cloning shares the registry. Probe tasks run on the tokio runtime that called
/// [`Probes::start`], and stop when the last clone is dropped.
#[derive(Clone)]
pub struct Probes {
    inner: Arc<Inner>,
}

impl fmt::Debug for Probes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Probes")
            .field("status", &self.status())
            .finish_non_exhaustive()
    }
}

impl Default for Probes {
    fn default() -> Self {
        Self::new()
    }
}

impl Probes {
    /// An empty registry: started and live, and ready (no probe says otherwise).
    pub fn new() -> Self {
        let (started, _) = watch::channel(true);
        let (ready, _) = watch::channel(true);
        let (live, _) = watch::channel(true);
        Self {
            inner: Arc::new(Inner {
                entries: Mutex::new(Vec::new()),
                tasks: Mutex::new(Vec::new()),
                running: Mutex::new(false),
                draining: Mutex::new(false),
                started,
                ready,
                live,
            }),
        }
    }

    /// Adds a probe. Fails, with a message saying what to change, on a zero period or
    /// threshold, a timeout longer than the period, or a name already registered.
    ///
    /// Registered after [`Self::start`], the probe starts at once.
    pub fn register(&self, probe: Probe) -> Result<(), BuildError> {
        probe.validate()?;
        let entry = {
            let mut entries = lock(&self.inner.entries);
            if entries.iter().any(|e| e.probe.name == probe.name) {
                return Err(BuildError::new(format!(
                    "probe `{}` is already registered; give each probe its own name",
                    probe.name
                )));
            }
            let entry = Arc::new(Entry {
                status: Mutex::new(ProbeReport {
                    name: probe.name.clone(),
                    kind: probe.kind,
                    state: ProbeState::Unknown,
                    last_check: None,
                    consecutive_failures: 0,
                    consecutive_successes: 0,
                    message: None,
                }),
                probe,
            });
            entries.push(entry.clone());
            entry
        };
        self.recompute();
        if *lock(&self.inner.running) {
            self.spawn(entry);
        }
        Ok(())
    }

    /// Starts every probe's loop on the current tokio runtime. Idempotent.
    ///
    /// # Panics
    ///
    /// If called outside a tokio runtime.
    pub fn start(&self) {
        let mut running = lock(&self.inner.running);
        if *running {
            return;
        }
        *running = true;
        drop(running);
        let entries: Vec<_> = lock(&self.inner.entries).clone();
        for e in entries {
            self.spawn(e);
        }
    }

    fn spawn(&self, entry: Arc<Entry>) {
        let weak = Arc::downgrade(&self.inner);
        let mut started = self.inner.started.subscribe();
        let task = tokio::spawn(async move {
            let p = entry.probe.clone();
            if p.kind != ProbeKind::Startup {
                // Kubernetes semantics: nothing but startup probes runs before startup.
                while !*started.borrow_and_update() {
                    if started.changed().await.is_err() {
                        return;
                    }
                }
            }
            loop {
                let timeout = p.effective_timeout();
                let result = match tokio::time::timeout(timeout, (p.check)()).await {
                    Ok(r) => r,
                    Err(_) => Err(format!("timed out after {timeout:?}")),
                };
                let passed_startup = {
                    let mut s = lock(&entry.status);
                    let ok = result.is_ok();
                    let st = &mut *s;
                    apply_result(
                        &mut st.state,
                        &mut st.consecutive_failures,
                        &mut st.consecutive_successes,
                        ok,
                        p.failure_threshold,
                        p.success_threshold,
                    );
                    st.last_check = Some(SystemTime::now());
                    st.message = result.err();
                    p.kind == ProbeKind::Startup && st.state == ProbeState::Passing
                };
                match weak.upgrade() {
                    Some(inner) => Probes { inner }.recompute(),
                    None => return,
                }
                if passed_startup {
                    // A startup probe is done once it has passed.
                    return;
                }
                tokio::time::sleep(p.period).await;
            }
        });
        lock(&self.inner.tasks).push(task.abort_handle());
    }

    fn recompute(&self) {
        let entries = lock(&self.inner.entries).clone();
        let draining = *lock(&self.inner.draining);
        let mut started = true;
        let mut live = true;
        let mut ready_probes = true;
        for e in &entries {
            let s = lock(&e.status);
            match s.kind {
                ProbeKind::Startup => {
                    started &= s.state == ProbeState::Passing;
                    live &= s.state != ProbeState::Failing;
                }
                ProbeKind::Liveness => live &= s.state != ProbeState::Failing,
                ProbeKind::Readiness | ProbeKind::Resource => {
                    ready_probes &= s.state == ProbeState::Passing;
                }
            }
        }
        let ready = started && ready_probes && !draining;
        self.inner
            .started
            .send_if_modified(|v| std::mem::replace(v, started) != started);
        self.inner
            .live
            .send_if_modified(|v| std::mem::replace(v, live) != live);
        let changed = self
            .inner
            .ready
            .send_if_modified(|v| std::mem::replace(v, ready) != ready);
        if changed {
            tracing::info!(ready, "readiness changed");
        }
    }

    /// The latest status of the probe named `name`.
    pub fn probe_status(&self, name: &str) -> Option<ProbeReport> {
        lock(&self.inner.entries)
            .iter()
            .find(|e| e.probe.name == name)
            .map(|e| lock(&e.status).clone())
    }

    /// Every probe's latest status, in registration order.
    pub fn statuses(&self) -> Vec<ProbeReport> {
        lock(&self.inner.entries)
            .iter()
            .map(|e| lock(&e.status).clone())
            .collect()
    }

    /// The overall status.
    pub fn status(&self) -> ServiceHealth {
        ServiceHealth {
            started: *self.inner.started.borrow(),
            ready: *self.inner.ready.borrow(),
            live: *self.inner.live.borrow(),
            draining: *lock(&self.inner.draining),
        }
    }

    /// A receiver of readiness, for [`Gate`](crate::Gate) and anything else that must
    /// follow it without polling.
    pub fn ready_watch(&self) -> watch::Receiver<bool> {
        self.inner.ready.subscribe()
    }

    /// A receiver of liveness.
    pub fn live_watch(&self) -> watch::Receiver<bool> {
        self.inner.live.subscribe()
    }

    /// Turns readiness off (draining) or lets the probes decide again.
    pub fn set_draining(&self, draining: bool) {
        *lock(&self.inner.draining) = draining;
        self.recompute();
    }

    /// Waits until ready, or fails after `timeout` naming the probes that keep the
    /// service from being ready.
    pub async fn wait_for_ready(&self, timeout: Duration) -> Result<(), NotReady> {
        let mut rx = self.ready_watch();
        let waited = tokio::time::timeout(timeout, rx.wait_for(|r| *r)).await;
        match waited {
            Ok(Ok(_)) => Ok(()),
            _ => {
                let status = self.status();
                let failing = self
                    .statuses()
                    .into_iter()
                    .filter(|s| match s.kind {
                        ProbeKind::Startup => s.state != ProbeState::Passing,
                        ProbeKind::Readiness | ProbeKind::Resource => {
                            status.started && s.state != ProbeState::Passing
                        }
                        ProbeKind::Liveness => false,
                    })
                    .map(|s| match s.message {
                        Some(m) => format!("{} ({m})", s.name),
                        None => s.name,
                    })
                    .collect();
                Err(NotReady::new(timeout, failing, status.draining))
            }
        }
    }
}
