//! [`ProcessConfig`]: the settings of a [`ProcessScaler`](super::ProcessScaler).

use std::time::Duration;

use crate::error::BuildError;

/// The settings of a [`ProcessScaler`](super::ProcessScaler).
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
    /// How long a removed instance must have had nothing in flight before it is
    /// stopped (default 250 ms, within `drain_grace`): a balancer that picked it just
    /// before it read the removal may still send it a request.
    pub drain_settle: Duration,
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
            drain_settle: Duration::from_millis(250),
            stop_timeout: Duration::from_secs(10),
            check_interval: Duration::from_millis(250),
            warm_up: Duration::from_secs(30),
            restart_backoff: Duration::from_millis(100),
            restart_backoff_max: Duration::from_secs(30),
        }
    }

    /// The wait before the restart that follows `streak` crashes in a row (1 for the
    /// first): `restart_backoff` doubled `streak - 1` times, at most `restart_backoff_max`.
    pub(super) fn backoff(&self, streak: u32) -> Duration {
        crate::util::doubling_backoff(self.restart_backoff, streak, self.restart_backoff_max)
    }

    pub(super) fn check(&self) -> Result<(), BuildError> {
        if self.ports.0 == 0 || self.ports.0 > self.ports.1 {
            return Err(BuildError::new(
                "ports",
                format!(
                    "port range {}..={}: give a first port above 0 and not above the last",
                    self.ports.0, self.ports.1
                ),
            ));
        }
        if !self.args.iter().any(|a| a.contains("{port}")) {
            return Err(BuildError::new(
                "args",
                "no argument contains {port}: the instance would not know where to listen",
            ));
        }
        if self.check_interval.is_zero() {
            return Err(BuildError::new("check_interval", "check_interval is zero"));
        }
        if self.restart_backoff.is_zero() {
            return Err(BuildError::new(
                "restart_backoff",
                "restart_backoff is zero: a crashing instance would be restarted in a busy loop",
            ));
        }
        if self.restart_backoff_max < self.restart_backoff {
            return Err(BuildError::new(
                "restart_backoff_max",
                format!(
                    "restart_backoff_max ({} ms) is below restart_backoff ({} ms)",
                    self.restart_backoff_max.as_millis(),
                    self.restart_backoff.as_millis()
                ),
            ));
        }
        Ok(())
    }
}

/// Builds a [`ProcessScaler`](super::ProcessScaler); see
/// [`ProcessScaler::builder`](super::ProcessScaler::builder). Each setter sets the
/// [`ProcessConfig`] field of the same name.
#[derive(Debug, Clone)]
pub struct ProcessScalerBuilder {
    pub(super) cfg: ProcessConfig,
}

impl ProcessScalerBuilder {
    /// The health path the monitor checks (default `/health/ready`).
    pub fn health_path(mut self, path: impl Into<String>) -> Self {
        self.cfg.health_path = path.into();
        self
    }

    /// How long a new instance may take to be ready (default 30 s).
    pub fn start_timeout(mut self, timeout: Duration) -> Self {
        self.cfg.start_timeout = timeout;
        self
    }

    /// How long a removed instance may take to finish its requests (default 30 s).
    pub fn drain_grace(mut self, grace: Duration) -> Self {
        self.cfg.drain_grace = grace;
        self
    }

    /// After SIGTERM, how long before SIGKILL (default 10 s).
    pub fn stop_timeout(mut self, timeout: Duration) -> Self {
        self.cfg.stop_timeout = timeout;
        self
    }

    /// How often the monitor checks each instance (default 250 ms; not zero).
    pub fn check_interval(mut self, interval: Duration) -> Self {
        self.cfg.check_interval = interval;
        self
    }

    /// An instance younger than this is reported as warming up (default 30 s).
    pub fn warm_up(mut self, warm_up: Duration) -> Self {
        self.cfg.warm_up = warm_up;
        self
    }

    /// The first wait before a crashed instance is started again (default 100 ms; not
    /// zero).
    pub fn restart_backoff(mut self, backoff: Duration) -> Self {
        self.cfg.restart_backoff = backoff;
        self
    }

    /// The longest wait between restarts (default 30 s; not below `restart_backoff`).
    pub fn restart_backoff_max(mut self, max: Duration) -> Self {
        self.cfg.restart_backoff_max = max;
        self
    }

    /// Checks the settings and makes the scaler, inserting each ready instance's
    /// endpoint (made by `make` from its address) into the balancer that reads the
    /// returned discovery stream. No instance starts yet (`scale_to` starts them).
    #[allow(clippy::type_complexity)]
    pub fn start<S, M>(
        self,
        make: M,
    ) -> Result<
        (
            super::ProcessScaler<S>,
            tower_balance_ext::discover::Receiver<std::net::SocketAddr, super::InstanceEndpoint<S>>,
        ),
        BuildError,
    >
    where
        S: Send + 'static,
        M: Fn(std::net::SocketAddr) -> S + Send + Sync + 'static,
    {
        super::ProcessScaler::start_checked(self.cfg, make)
    }
}
