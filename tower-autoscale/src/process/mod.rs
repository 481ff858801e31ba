//! [`ProcessScaler`]: instances as child processes of this host, inserted into a
//! balancer once ready and drained before they stop.
//!
//! - **Start**: a port is taken from the range (checked free by binding it), the
//!   command template runs with `{port}` replaced, and a `tower-health` monitor target
//!   watches the instance's health path. Only when the monitor says it is ready does
//!   the instance reach the balancer (`Change::Insert` on the discovery channel). One
//!   that does not become ready within the start timeout is killed, and the scale-up
//!   fails with [`ScaleError::NeverReady`].
//! - **Stop** (scale-down): an instance the monitor calls unhealthy is picked first
//!   (cut off or paused, it is gated out and serves nothing), else the one with the
//!   fewest requests in flight (a crashed one waiting for its restart before either). It
//!   is removed from discovery first, drained until nothing has been in flight for
//!   [`drain_settle`](ProcessConfig::drain_settle) (or the grace period ends), sent
//!   SIGTERM, then SIGKILL at the stop deadline.
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
//! ([`InstanceEndpoint`]), so draining does not depend on the balancer still listing it.

mod config;
mod endpoint;
mod error;
mod instance;
mod load;
mod restart;
mod start;
mod stop;

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tower_balance_ext::discover;
use tower_health::HealthMonitor;

pub use self::config::{ProcessConfig, ProcessScalerBuilder};
pub use self::endpoint::InstanceEndpoint;

/// The old name of [`InstanceEndpoint`].
#[deprecated(since = "0.1.0", note = "renamed `InstanceEndpoint`")]
pub type Counted<S> = InstanceEndpoint<S>;
pub use self::error::ScaleError;
use self::instance::Instance;
pub use self::instance::{InstanceDetails, InstanceState};
use crate::error::BuildError;

struct Inner<S> {
    cfg: ProcessConfig,
    monitor: HealthMonitor,
    endpoints: discover::Sender<SocketAddr, InstanceEndpoint<S>>,
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

/// The builder's entry point sits on `ProcessScaler<()>` so that
/// `ProcessScaler::builder(..)` needs no type annotation (as `HashMap::new`); the
/// endpoint type comes from the closure given to
/// [`start`](ProcessScalerBuilder::start).
impl ProcessScaler<()> {
    /// A builder for a scaler running `program` with `args` (one of which holds
    /// `{port}`) on ports `ports` (inclusive); every other setting at its
    /// [`ProcessConfig`] default.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::time::Duration;
    /// use tower_autoscale::ProcessScaler;
    ///
    /// let args = vec!["--port".to_string(), "{port}".to_string()];
    /// let (scaler, discovery) = ProcessScaler::builder("./server", args, (4100, 4199))
    ///     .start_timeout(Duration::from_secs(20))
    ///     .start(|addr| addr)?;
    /// scaler.scale_to(2).await?;
    /// # drop(discovery); Ok(()) }
    /// ```
    pub fn builder(
        program: impl Into<String>,
        args: Vec<String>,
        ports: (u16, u16),
    ) -> ProcessScalerBuilder {
        ProcessScalerBuilder {
            cfg: ProcessConfig::new(program, args, ports),
        }
    }
}

impl<S> ProcessScaler<S>
where
    S: Send + 'static,
{
    /// A scaler from a whole [`ProcessConfig`] value: the same check and start as
    /// [`ProcessScalerBuilder::start`], with the error as [`ScaleError::Config`].
    pub fn new<M>(
        cfg: ProcessConfig,
        make: M,
    ) -> Result<(Self, discover::Receiver<SocketAddr, InstanceEndpoint<S>>), ScaleError>
    where
        M: Fn(SocketAddr) -> S + Send + Sync + 'static,
    {
        Ok(Self::start_checked(cfg, make)?)
    }

    fn start_checked<M>(
        cfg: ProcessConfig,
        make: M,
    ) -> Result<(Self, discover::Receiver<SocketAddr, InstanceEndpoint<S>>), BuildError>
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
                started_unix_ms: crate::util::unix_ms_at(i.started),
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

    /// Starts one instance and waits until it is ready and in the balancer.
    pub async fn start_one(&self) -> Result<u16, ScaleError> {
        let _op = self.inner.op.lock().await;
        let r = self.try_start(None).await;
        if r.is_err() {
            self.inner.failures.fetch_add(1, Ordering::Relaxed);
        }
        r
    }

    /// Removes a crashed instance waiting for its restart if there is one (it serves
    /// nothing), else a ready one its monitor calls unhealthy (cut off or paused: gated
    /// out, it serves nothing either, whatever it still holds in flight), else stops the
    /// ready instance with the fewest requests in flight (draining it first). Returns
    /// its port, or `None` if none runs.
    pub async fn stop_one(&self) -> Option<u16> {
        let _op = self.inner.op.lock().await;
        let (id, port) = {
            let l = self.lock();
            let monitor = &self.inner.monitor;
            let ready = || l.iter().filter(|i| i.state == InstanceState::Ready);
            l.iter()
                .find(|i| i.state.is_crashed())
                .or_else(|| ready().find(|i| !monitor.is_ready_for_traffic(&i.name)))
                .or_else(|| ready().min_by_key(|i| i.in_flight.load(Ordering::Acquire)))
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
