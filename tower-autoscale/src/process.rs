//! [`ProcessScaler`]: instances as child processes of this host, inserted into a
//! balancer once ready and drained before they stop.
//!
//! - **Start**: a port is taken from the range (checked free by binding it), the
//!   command template runs with `{port}` replaced, and a `tower-health` monitor target
//!   watches the instance's health path. Only when the monitor says it is ready does
//!   the instance reach the balancer (`Change::Insert` on the discovery channel). One
//!   that does not become ready within the start timeout is killed, and the scale-up
//!   fails with [`ScaleError::NeverReady`].
//! - **Stop** (scale-down): the instance with the fewest requests in flight is picked,
//!   removed from discovery first, drained until nothing is in flight (or the grace
//!   period ends), sent SIGTERM, then SIGKILL at the stop deadline.
//! - **Crash**: an instance that exits when not asked to, after it was ready, is removed
//!   from discovery and started again after a backoff. Each crash or failed restart
//!   without a steady run in between doubles the wait, from
//!   [`restart_backoff`](ProcessConfig::restart_backoff) up to
//!   [`restart_backoff_max`](ProcessConfig::restart_backoff_max); after the second the
//!   instance shows [`InstanceState::CrashLoopBackOff`]. A crashed instance keeps its
//!   place in [`current`](ProcessScaler::current) (and in `instance_details`) until a
//!   restart takes it, so restarts never add instances beyond the count asked for; a
//!   scale-down removes crashed instances first.
//! - **One owner for each exit**: an instance that exits before it is ready is the
//!   failure of the start that launched it (a scale-up reports [`ScaleError::Exited`]; a
//!   restart backs off and tries again), never also a crash.
//!
//! Requests in flight are counted by a small wrapper around each endpoint service
//! ([`Counted`]), so draining does not depend on the balancer still listing it.

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use tower_balance_ext::discover;
use tower_health::{HealthMonitor, Target};
use tower_service::Service;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// An instance's endpoint service: behind a readiness gate that follows the scaler's
/// health monitor (an instance that stops being ready after it joined gets no new
/// request until it is ready again: its `poll_ready` is pending, so a balancer skips
/// it), counting its requests in flight (from `call` until the response future
/// completes or is dropped).
#[derive(Debug)]
pub struct Counted<S> {
    inner: tower_health::ReadinessService<S>,
    in_flight: Arc<AtomicUsize>,
}

impl<S: Clone> Clone for Counted<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            in_flight: self.in_flight.clone(),
        }
    }
}

struct Decrement(Arc<AtomicUsize>);

impl Drop for Decrement {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl<S, Req> Service<Req> for Counted<S>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        let guard = Decrement(self.in_flight.clone());
        let fut = self.inner.call(req);
        Box::pin(async move {
            let r = fut.await;
            drop(guard);
            r
        })
    }
}

/// On Linux, the instance gets SIGKILL if the process that started it dies, even by
/// SIGKILL (where `kill_on_drop` cannot run): no orphan keeps a port and a model in
/// memory. The signal follows the *thread* that spawned the child, which here is a
/// runtime worker that lives as long as the runtime.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn die_with_parent(command: &mut tokio::process::Command) {
    // SAFETY: the closure runs in the child between fork and exec and only makes the
    // prctl(PR_SET_PDEATHSIG) system call, which is async-signal-safe; it allocates
    // nothing and takes no lock.
    unsafe {
        command.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                .map_err(std::io::Error::from)
        });
    }
}

#[cfg(not(target_os = "linux"))]
fn die_with_parent(_command: &mut tokio::process::Command) {}

/// Why a scaling action failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum ScaleError {
    /// Every port of the range is taken.
    PortsExhausted {
        /// The range.
        range: (u16, u16),
    },
    /// The command could not start.
    Spawn {
        /// The command.
        command: String,
        /// Why.
        error: std::io::Error,
    },
    /// The instance did not become ready in time (it was stopped).
    NeverReady {
        /// Its port.
        port: u16,
        /// How long it was given.
        waited: Duration,
    },
    /// The instance exited before it became ready.
    Exited {
        /// Its port.
        port: u16,
        /// Its exit status.
        status: String,
    },
    /// The scaler's settings cannot work.
    Config(String),
}

impl fmt::Display for ScaleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::PortsExhausted { range } => write!(
                f,
                "no free port left in {}..={}; widen the port range or lower max_instances",
                range.0, range.1
            ),
            Self::Spawn { command, error } => write!(f, "cannot start `{command}`: {error}"),
            Self::NeverReady { port, waited } => write!(
                f,
                "the instance on port {port} was not ready after {:.1} s; it was stopped",
                waited.as_secs_f64()
            ),
            Self::Exited { port, status } => {
                write!(
                    f,
                    "the instance on port {port} exited before it was ready ({status})"
                )
            }
            Self::Config(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for ScaleError {}

/// Where an instance stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum InstanceState {
    /// Started, not ready yet.
    Starting,
    /// Ready and in the balancer.
    Ready,
    /// Out of the balancer, finishing its requests.
    Draining,
    /// Exited unasked; waiting to be started again.
    Crashed,
    /// Crashed (or failed to start again) more than once in a row; waiting, with a
    /// backoff that doubles up to its cap, to be started again.
    CrashLoopBackOff,
}

/// Plain English for operators: `starting`, `ready`, `draining`, `crashed`, `crash
/// loop back-off` (serialized in `snake_case`: `crash_loop_back_off`).
impl fmt::Display for InstanceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Starting => "starting",
            Self::Ready => "ready",
            Self::Draining => "draining",
            Self::Crashed => "crashed",
            Self::CrashLoopBackOff => "crash loop back-off",
        })
    }
}

impl InstanceState {
    /// A crashed instance waiting for its restart (no process runs).
    pub const fn is_crashed(self) -> bool {
        matches!(self, Self::Crashed | Self::CrashLoopBackOff)
    }
}

/// One instance, for `instance_details`.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct InstanceDetails {
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// Its process id, while it runs.
    pub pid: Option<u32>,
    /// Where it stands.
    pub state: InstanceState,
    /// Whether the health monitor calls it ready.
    pub healthy: bool,
    /// Requests in flight now.
    pub in_flight: usize,
    /// When it was started, in milliseconds since the Unix epoch.
    pub started_unix_ms: u64,
    /// Times it was restarted after a crash.
    pub restarts: u32,
    /// Crashes and failed restarts in a row, without a steady run in between.
    pub crash_streak: u32,
    /// How a crashed instance last ended (its exit status or why its restart failed).
    pub last_exit: Option<String>,
    /// While crashed: the wait before its next restart, in milliseconds.
    pub backoff_ms: Option<u64>,
}

/// The settings of a [`ProcessScaler`].
#[derive(Debug, Clone)]
pub struct ProcessConfig {
    /// The program to run.
    pub program: String,
    /// Its arguments; `{port}` is replaced by the instance's port.
    pub args: Vec<String>,
    /// Ports to use, inclusive.
    pub ports: (u16, u16),
    /// The health path the monitor checks (default `/health/ready`).
    pub health_path: String,
    /// How long a new instance may take to be ready (default 30 s).
    pub start_timeout: Duration,
    /// How long a removed instance may take to finish its requests (default 30 s).
    pub drain_grace: Duration,
    /// After SIGTERM, how long before SIGKILL (default 10 s).
    pub stop_timeout: Duration,
    /// How often the monitor checks each instance (default 250 ms).
    pub check_interval: Duration,
    /// An instance younger than this is reported as warming up (its load is ignored
    /// by the engine; default 30 s, give the policy's `warm_up`).
    pub warm_up: Duration,
    /// The wait before a crashed instance is started again; it doubles with each crash
    /// or failed restart in a row (default 100 ms; not zero).
    pub restart_backoff: Duration,
    /// The longest wait between restarts (default 30 s; not below `restart_backoff`).
    /// An instance ready for twice this long has run steadily: its next crash waits
    /// `restart_backoff` again.
    pub restart_backoff_max: Duration,
}

impl ProcessConfig {
    /// Runs `program` with `args` on ports `ports`, other settings at their defaults.
    pub fn new(program: impl Into<String>, args: Vec<String>, ports: (u16, u16)) -> Self {
        Self {
            program: program.into(),
            args,
            ports,
            health_path: "/health/ready".into(),
            start_timeout: Duration::from_secs(30),
            drain_grace: Duration::from_secs(30),
            stop_timeout: Duration::from_secs(10),
            check_interval: Duration::from_millis(250),
            warm_up: Duration::from_secs(30),
            restart_backoff: Duration::from_millis(100),
            restart_backoff_max: Duration::from_secs(30),
        }
    }

    /// The wait before the restart that follows `streak` crashes in a row (1 for the
    /// first): `restart_backoff` doubled `streak - 1` times, at most `restart_backoff_max`.
    fn backoff(&self, streak: u32) -> Duration {
        let doublings = streak.saturating_sub(1).min(31);
        self.restart_backoff
            .saturating_mul(1u32 << doublings)
            .min(self.restart_backoff_max)
    }

    fn check(&self) -> Result<(), ScaleError> {
        if self.ports.0 == 0 || self.ports.0 > self.ports.1 {
            return Err(ScaleError::Config(format!(
                "port range {}..={}: give a first port above 0 and not above the last",
                self.ports.0, self.ports.1
            )));
        }
        if !self.args.iter().any(|a| a.contains("{port}")) {
            return Err(ScaleError::Config(
                "no argument contains {port}: the instance would not know where to listen".into(),
            ));
        }
        if self.check_interval.is_zero() {
            return Err(ScaleError::Config("check_interval is zero".into()));
        }
        if self.restart_backoff.is_zero() {
            return Err(ScaleError::Config(
                "restart_backoff is zero: a crashing instance would be restarted in a busy loop"
                    .into(),
            ));
        }
        if self.restart_backoff_max < self.restart_backoff {
            return Err(ScaleError::Config(format!(
                "restart_backoff_max ({} ms) is below restart_backoff ({} ms)",
                self.restart_backoff_max.as_millis(),
                self.restart_backoff.as_millis()
            )));
        }
        Ok(())
    }
}

struct Instance {
    /// Unique among the scaler's instances (a restart gets a new one).
    id: u64,
    port: u16,
    name: String,
    pid: Option<u32>,
    state: InstanceState,
    in_flight: Arc<AtomicUsize>,
    started: SystemTime,
    restarts: u32,
    /// Crashes and failed restarts in a row.
    streak: u32,
    /// When it became ready.
    ready_at: Option<tokio::time::Instant>,
    /// How it last ended, once crashed.
    last_exit: Option<String>,
    /// While crashed: the wait before its next restart.
    backoff: Option<Duration>,
    /// Set when we asked it to stop, so its exit is not a crash.
    stopping: Arc<AtomicBool>,
    /// Fires to kill it (SIGKILL).
    kill: Option<tokio::sync::oneshot::Sender<()>>,
    /// Resolves when the process has exited.
    exited: tokio::sync::watch::Receiver<bool>,
}

struct Inner<S> {
    cfg: ProcessConfig,
    monitor: HealthMonitor,
    endpoints: discover::Sender<SocketAddr, Counted<S>>,
    make: Box<dyn Fn(SocketAddr) -> S + Send + Sync>,
    instances: Mutex<Vec<Instance>>,
    /// Serialises scale operations.
    op: tokio::sync::Mutex<()>,
    restarts: AtomicU64,
    failures: AtomicU64,
    next_id: AtomicU64,
    closed: AtomicBool,
    sampler: Mutex<crate::procfs::ProcessSampler>,
}

/// Instances as child processes; see the [module docs](self). Cheap to clone.
pub struct ProcessScaler<S> {
    inner: Arc<Inner<S>>,
}

impl<S> Clone for ProcessScaler<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<S> fmt::Debug for ProcessScaler<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProcessScaler")
            .field("program", &self.inner.cfg.program)
            .field(
                "instances",
                &self.inner.instances.lock().map(|l| l.len()).unwrap_or(0),
            )
            .finish()
    }
}

/// Milliseconds since the Unix epoch at `t` (0 before it).
pub(crate) fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl<S> ProcessScaler<S>
where
    S: Send + 'static,
{
    /// A scaler running `cfg`'s command, inserting each ready instance's endpoint (made
    /// by `make` from its address) into the balancer that reads the returned
    /// discovery stream.
    pub fn new<M>(
        cfg: ProcessConfig,
        make: M,
    ) -> Result<(Self, discover::Receiver<SocketAddr, Counted<S>>), ScaleError>
    where
        M: Fn(SocketAddr) -> S + Send + Sync + 'static,
    {
        cfg.check()?;
        let (tx, rx) = discover::channel();
        Ok((
            Self {
                inner: Arc::new(Inner {
                    cfg,
                    monitor: HealthMonitor::new(),
                    endpoints: tx,
                    make: Box::new(make),
                    instances: Mutex::new(Vec::new()),
                    op: tokio::sync::Mutex::new(()),
                    restarts: AtomicU64::new(0),
                    failures: AtomicU64::new(0),
                    next_id: AtomicU64::new(0),
                    closed: AtomicBool::new(false),
                    sampler: Mutex::new(crate::procfs::ProcessSampler::new()),
                }),
            },
            rx,
        ))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Instance>> {
        self.inner
            .instances
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Instances running or starting, and crashed ones waiting for their restart (not
    /// those draining): a crash does not make room for another start, so a scale-up
    /// during a restart does not end one instance over the count asked for.
    pub fn current(&self) -> usize {
        self.lock()
            .iter()
            .filter(|i| i.state != InstanceState::Draining)
            .count()
    }

    /// Every instance, crashed ones included.
    pub fn instance_details(&self) -> Vec<InstanceDetails> {
        self.lock()
            .iter()
            .map(|i| InstanceDetails {
                port: i.port,
                pid: i.pid,
                state: i.state,
                healthy: !i.state.is_crashed() && self.inner.monitor.is_ready_for_traffic(&i.name),
                in_flight: i.in_flight.load(Ordering::Acquire),
                started_unix_ms: unix_ms(i.started),
                restarts: i.restarts,
                crash_streak: i.streak,
                last_exit: i.last_exit.clone(),
                backoff_ms: i
                    .backoff
                    .map(|b| u64::try_from(b.as_millis()).unwrap_or(u64::MAX)),
            })
            .collect()
    }

    /// Instances in [`InstanceState::CrashLoopBackOff`] now.
    pub fn crash_looping(&self) -> usize {
        self.lock()
            .iter()
            .filter(|i| i.state == InstanceState::CrashLoopBackOff)
            .count()
    }

    /// Crash restarts so far (one for each crash of a ready instance, however many
    /// starts its restart took).
    pub fn restarts(&self) -> u64 {
        self.inner.restarts.load(Ordering::Relaxed)
    }

    /// Failed starts so far (scale-ups and restarts).
    pub fn failures(&self) -> u64 {
        self.inner.failures.load(Ordering::Relaxed)
    }

    /// The health monitor watching the instances.
    pub fn monitor(&self) -> &HealthMonitor {
        &self.inner.monitor
    }

    /// A free port of the range; `reuse` (a crashed instance's own port) may be taken
    /// again.
    fn free_port(&self, reuse: Option<u16>) -> Result<u16, ScaleError> {
        let used: Vec<u16> = self
            .lock()
            .iter()
            .map(|i| i.port)
            .filter(|p| Some(*p) != reuse)
            .collect();
        let (lo, hi) = self.inner.cfg.ports;
        for port in lo..=hi {
            if used.contains(&port) {
                continue;
            }
            if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return Ok(port);
            }
        }
        Err(ScaleError::PortsExhausted { range: (lo, hi) })
    }

    /// Starts one instance and waits until it is ready and in the balancer.
    pub async fn start_one(&self) -> Result<u16, ScaleError> {
        let _op = self.inner.op.lock().await;
        let r = self.try_start(None).await;
        if r.is_err() {
            self.inner.failures.fetch_add(1, Ordering::Relaxed);
        }
        r
    }

    /// Starts a process and waits until it is ready. With `slot` (a crashed instance's
    /// id and port) the new process takes that instance's place, under its id; if it
    /// fails, the place stays, crashed. Without, a failed start leaves nothing behind.
    async fn try_start(&self, slot: Option<(u64, u16)>) -> Result<u16, ScaleError> {
        let cfg = &self.inner.cfg;
        let keep = slot.is_some();
        let port = self.free_port(slot.map(|s| s.1))?;
        let args: Vec<String> = cfg
            .args
            .iter()
            .map(|a| a.replace("{port}", &port.to_string()))
            .collect();
        let mut command = tokio::process::Command::new(&cfg.program);
        command
            .args(&args)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        die_with_parent(&mut command);
        let mut child = command.spawn().map_err(|error| ScaleError::Spawn {
            command: format!("{} {}", cfg.program, args.join(" ")),
            error,
        })?;
        let pid = child.id();
        let name = format!("127.0.0.1:{port}");
        let stopping = Arc::new(AtomicBool::new(false));
        let (kill_tx, kill_rx) = tokio::sync::oneshot::channel::<()>();
        let (exited_tx, exited_rx) = tokio::sync::watch::channel(false);
        let in_flight = Arc::new(AtomicUsize::new(0));
        let id = match slot {
            Some((id, _)) => id,
            None => self.inner.next_id.fetch_add(1, Ordering::Relaxed),
        };
        {
            let mut l = self.lock();
            // A restart takes the crashed instance's place, under the lock that
            // `current` reads, so the count never dips or doubles.
            let (restarts, streak, last_exit) =
                match l.iter().position(|i| Some(i.id) == slot.map(|s| s.0)) {
                    Some(at) => {
                        let old = l.remove(at);
                        (old.restarts.saturating_add(1), old.streak, old.last_exit)
                    }
                    None => (0, 0, None),
                };
            l.push(Instance {
                id,
                port,
                name: name.clone(),
                pid,
                state: InstanceState::Starting,
                in_flight: in_flight.clone(),
                started: SystemTime::now(),
                restarts,
                streak,
                ready_at: None,
                last_exit,
                backoff: None,
                stopping: stopping.clone(),
                kill: Some(kill_tx),
                exited: exited_rx.clone(),
            });
        }
        // The process's keeper: waits for its exit (or kills it), and restarts it if it
        // crashed after it was ready.
        let me = self.clone();
        let keeper = async move {
            let status = tokio::select! {
                s = child.wait() => s.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string()),
                _ = kill_rx => {
                    let _ = child.kill().await;
                    "killed".to_string()
                }
            };
            if me.on_exit(id, status, &exited_tx) {
                me.crashed(id).await;
            }
        };
        tokio::spawn(keeper);
        let _ = self.inner.monitor.unregister(&name);
        let target = Target::new(&name, &name)
            .path(cfg.health_path.clone())
            .interval(cfg.check_interval)
            .timeout(
                cfg.check_interval
                    .mul_f64(0.8)
                    .max(Duration::from_millis(1)),
            );
        if let Err(e) = self.inner.monitor.register(target) {
            self.stop_instance(id, false, keep).await;
            return Err(ScaleError::Config(e.to_string()));
        }
        let Some(mut ready) = self.inner.monitor.watch(&name) else {
            self.stop_instance(id, false, keep).await;
            return Err(ScaleError::Config(format!("health target {name} vanished")));
        };
        let mut exited = exited_rx;
        let outcome = tokio::time::timeout(cfg.start_timeout, async {
            loop {
                if *ready.borrow_and_update() {
                    return Ok(());
                }
                if *exited.borrow() {
                    return Err(());
                }
                tokio::select! {
                    r = ready.changed() => if r.is_err() { return Err(()) },
                    _ = exited.changed() => {}
                }
            }
        })
        .await;
        match outcome {
            Ok(Ok(())) => {
                let addr = SocketAddr::from(([127, 0, 0, 1], port));
                let gate = tower_health::Gate::new(ready.clone());
                let endpoint = Counted {
                    inner: tower_layer::Layer::layer(
                        &tower_health::ReadinessLayer::pending(gate),
                        (self.inner.make)(addr),
                    ),
                    in_flight,
                };
                // Ready and in the balancer under the lock its keeper takes to judge an
                // exit: an exit before this is the start's failure, one after is a crash.
                let joined = {
                    let mut l = self.lock();
                    match l.iter_mut().find(|i| i.id == id) {
                        Some(i) if !*exited.borrow() => {
                            i.state = InstanceState::Ready;
                            i.ready_at = Some(tokio::time::Instant::now());
                            self.inner.endpoints.insert(addr, endpoint);
                            true
                        }
                        _ => false,
                    }
                };
                if joined {
                    tracing::info!(port, pid, "instance ready");
                    Ok(port)
                } else {
                    Err(self.exited_while_starting(id, port, keep, &stopping))
                }
            }
            Ok(Err(())) => Err(self.exited_while_starting(id, port, keep, &stopping)),
            Err(_) => {
                self.stop_instance(id, false, keep).await;
                Err(ScaleError::NeverReady {
                    port,
                    waited: cfg.start_timeout,
                })
            }
        }
    }

    /// The start of instance `id` failed because its process exited: it is left behind
    /// as a crashed place (`keep`) or forgotten.
    fn exited_while_starting(
        &self,
        id: u64,
        port: u16,
        keep: bool,
        stopping: &AtomicBool,
    ) -> ScaleError {
        stopping.store(true, Ordering::Release);
        let status = self
            .lock()
            .iter()
            .find(|i| i.id == id)
            .and_then(|i| i.last_exit.clone())
            .unwrap_or_else(|| "exited during start-up".into());
        self.settle(id, keep);
        ScaleError::Exited { port, status }
    }

    /// After instance `id`'s process is gone: off the monitor, and either forgotten or
    /// (`keep`) left as a crashed place, still counted, for its restart to take.
    fn settle(&self, id: u64, keep: bool) {
        let mut l = self.lock();
        let Some(at) = l.iter().position(|i| i.id == id) else {
            return;
        };
        self.inner.monitor.unregister(&l[at].name);
        if keep {
            let i = &mut l[at];
            i.pid = None;
            i.kill = None;
            i.ready_at = None;
            if !i.state.is_crashed() {
                i.state = InstanceState::CrashLoopBackOff;
            }
        } else {
            l.remove(at);
        }
    }

    /// Records the exit of instance `id`'s process; true if it is a crash to restart (it
    /// exited unasked after it was ready). An exit while starting belongs to the start
    /// that waits for it.
    fn on_exit(&self, id: u64, status: String, exited: &tokio::sync::watch::Sender<bool>) -> bool {
        let cfg = &self.inner.cfg;
        let mut l = self.lock();
        exited.send_replace(true);
        let Some(i) = l.iter_mut().find(|i| i.id == id) else {
            return false;
        };
        i.last_exit = Some(status);
        if i.stopping.load(Ordering::Acquire) || i.state != InstanceState::Ready {
            return false;
        }
        let steady = i
            .ready_at
            .is_some_and(|t| t.elapsed() >= cfg.restart_backoff_max.saturating_mul(2));
        i.streak = if steady {
            1
        } else {
            i.streak.saturating_add(1)
        };
        i.state = if i.streak > 1 {
            InstanceState::CrashLoopBackOff
        } else {
            InstanceState::Crashed
        };
        i.pid = None;
        i.kill = None;
        i.ready_at = None;
        i.backoff = Some(cfg.backoff(i.streak));
        true
    }

    /// Restarts a crashed instance. Not an `async fn`: a restart starts through
    /// `try_start`, which spawns a keeper that may call this again, and the named
    /// boxed type ends that cycle of future types.
    fn crashed(&self, id: u64) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        let me = self.clone();
        Box::pin(async move { me.restart(id).await })
    }

    /// The one restart loop of crashed instance `id`: waits its backoff, starts it
    /// again, and on failure doubles the wait (to the cap) and tries again, until a
    /// start succeeds, a scale-down removes it, or the scaler shuts down.
    async fn restart(&self, id: u64) {
        let Some((port, status)) = self
            .lock()
            .iter()
            .find(|i| i.id == id)
            .map(|i| (i.port, i.last_exit.clone().unwrap_or_default()))
        else {
            return;
        };
        self.inner
            .endpoints
            .remove(SocketAddr::from(([127, 0, 0, 1], port)));
        self.inner.monitor.unregister(&format!("127.0.0.1:{port}"));
        self.inner.restarts.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(port, %status, "instance exited unasked; restarting it");
        loop {
            let wait = self
                .lock()
                .iter()
                .find(|i| i.id == id)
                .map(|i| i.backoff.unwrap_or(self.inner.cfg.restart_backoff));
            let Some(wait) = wait else {
                return;
            };
            if !self.inner.closed.load(Ordering::Acquire) {
                tokio::time::sleep(wait).await;
            }
            let _op = self.inner.op.lock().await;
            if self.inner.closed.load(Ordering::Acquire) {
                self.lock().retain(|i| i.id != id);
                return;
            }
            // Gone if a scale-down removed it meanwhile.
            let Some(port) = self
                .lock()
                .iter()
                .find(|i| i.id == id && i.state.is_crashed())
                .map(|i| i.port)
            else {
                return;
            };
            match self.try_start(Some((id, port))).await {
                Ok(_) => return,
                Err(e) => {
                    self.inner.failures.fetch_add(1, Ordering::Relaxed);
                    let mut l = self.lock();
                    let Some(i) = l.iter_mut().find(|i| i.id == id) else {
                        return;
                    };
                    i.streak = i.streak.saturating_add(1);
                    i.state = InstanceState::CrashLoopBackOff;
                    i.last_exit = Some(e.to_string());
                    let wait = self.inner.cfg.backoff(i.streak);
                    i.backoff = Some(wait);
                    let wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
                    tracing::warn!(error = %e, streak = i.streak, wait_ms, "restart failed; backing off");
                }
            }
        }
    }

    /// Removes instance `id` from discovery (if `drain`, waits for its requests up to
    /// the grace period), then SIGTERM, then SIGKILL at the deadline; then forgets it,
    /// or (`keep`) leaves it as a crashed place, counted all along.
    async fn stop_instance(&self, id: u64, drain: bool, keep: bool) {
        let found = {
            let mut l = self.lock();
            l.iter_mut().find(|i| i.id == id).map(|i| {
                i.stopping.store(true, Ordering::Release);
                if keep {
                    i.state = InstanceState::CrashLoopBackOff;
                } else {
                    i.state = InstanceState::Draining;
                }
                (
                    i.port,
                    i.pid,
                    i.in_flight.clone(),
                    i.kill.take(),
                    i.exited.clone(),
                )
            })
        };
        let Some((port, pid, in_flight, kill, mut exited)) = found else {
            return;
        };
        self.inner
            .endpoints
            .remove(SocketAddr::from(([127, 0, 0, 1], port)));
        if drain {
            let cfg = &self.inner.cfg;
            let _ = tokio::time::timeout(cfg.drain_grace, async {
                while in_flight.load(Ordering::Acquire) > 0 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
            .await;
        }
        if let Some(pid) = pid {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        let gone = tokio::time::timeout(self.inner.cfg.stop_timeout, exited.wait_for(|e| *e))
            .await
            .is_ok();
        if !gone {
            if let Some(k) = kill {
                let _ = k.send(());
            }
            let _ = exited.wait_for(|e| *e).await;
        }
        self.settle(id, keep);
    }

    /// Drains and stops the instance on `port`.
    async fn stop_port(&self, port: u16) {
        let id = self.lock().iter().find(|i| i.port == port).map(|i| i.id);
        if let Some(id) = id {
            self.stop_instance(id, true, false).await;
        }
    }

    /// Removes a crashed instance waiting for its restart if there is one (it serves
    /// nothing), else stops the ready instance with the fewest requests in flight
    /// (draining it first). Returns its port, or `None` if none runs.
    pub async fn stop_one(&self) -> Option<u16> {
        let _op = self.inner.op.lock().await;
        let (id, port) = {
            let l = self.lock();
            l.iter()
                .find(|i| i.state.is_crashed())
                .or_else(|| {
                    l.iter()
                        .filter(|i| i.state == InstanceState::Ready)
                        .min_by_key(|i| i.in_flight.load(Ordering::Acquire))
                })
                .map(|i| (i.id, i.port))?
        };
        self.stop_instance(id, true, false).await;
        Some(port)
    }

    /// Starts or stops instances until `n` run. Stops at the first failed start.
    pub async fn scale_to(&self, n: usize) -> Result<usize, ScaleError> {
        while self.current() < n {
            self.start_one().await?;
        }
        while self.current() > n {
            if self.stop_one().await.is_none() {
                break;
            }
        }
        Ok(self.current())
    }

    /// Starts a new instance, waits until it is ready and in the balancer, then drains
    /// and stops the one on `port`.
    pub async fn migrate_instance(&self, port: u16) -> Result<u16, ScaleError> {
        let new = self.start_one().await?;
        let _op = self.inner.op.lock().await;
        self.stop_port(port).await;
        Ok(new)
    }

    /// Stops every instance (drained) and restarts none.
    pub async fn shutdown(&self) {
        self.inner.closed.store(true, Ordering::Release);
        let _op = self.inner.op.lock().await;
        let ids: Vec<u64> = self.lock().iter().map(|i| i.id).collect();
        for id in ids {
            self.stop_instance(id, true, false).await;
        }
    }
}

/// The instances' CPU (per allowed core) and memory from `/proc`, readiness, warm-up and
/// requests in flight; the count is the instances running or starting.
impl<S: Send + 'static> crate::sample::LoadSource for ProcessScaler<S> {
    fn sample(&self) -> crate::sample::LoadSample {
        let warm_up = self.inner.cfg.warm_up;
        let rows: Vec<(String, Option<u32>, InstanceState, usize, SystemTime)> = self
            .lock()
            .iter()
            .map(|i| {
                (
                    i.name.clone(),
                    i.pid,
                    i.state,
                    i.in_flight.load(Ordering::Acquire),
                    i.started,
                )
            })
            .collect();
        let mut sampler = self.inner.sampler.lock().unwrap_or_else(|e| e.into_inner());
        let pids: Vec<u32> = rows.iter().filter_map(|r| r.1).collect();
        sampler.retain(&pids);
        let mut total_in_flight = 0.0;
        let per_instance = rows
            .iter()
            .filter(|r| matches!(r.2, InstanceState::Ready | InstanceState::Starting))
            .map(|(name, pid, state, in_flight, started)| {
                let usage = pid.and_then(|p| sampler.sample(p));
                total_in_flight += *in_flight as f64;
                crate::sample::InstanceLoad {
                    name: name.clone(),
                    ready: *state == InstanceState::Ready,
                    warming_up: started.elapsed().is_ok_and(|age| age < warm_up),
                    age: started.elapsed().ok(),
                    cpu: usage.map(|u| u.cpu),
                    memory: usage.map(|u| u.memory),
                    in_flight: Some(*in_flight as f64),
                }
            })
            .collect::<Vec<_>>();
        crate::sample::LoadSample {
            instances: per_instance.len(),
            per_instance,
            in_flight: Some(total_in_flight),
            ..Default::default()
        }
    }
}
