//! The breaker's settings and its layer.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tower_layer::Layer;

use super::service::CircuitBreaker;
use super::state::{Breaker, BreakerState, Config, Counters, Inner, WhenOpen};

/// The settings of a [`CircuitBreakerLayer`], checked by [`build`](Self::build).
pub struct CircuitBreakerBuilder<Res> {
    cfg: Config<Res>,
}

impl<Res> fmt::Debug for CircuitBreakerBuilder<Res> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.cfg;
        f.debug_struct("CircuitBreakerBuilder")
            .field("consecutive_failures", &c.consecutive)
            .field("failure_rate", &c.rate)
            .field("slow_calls", &c.slow)
            .field("window", &c.window)
            .field("min_calls", &c.min_calls)
            .field("open_for", &c.open_for)
            .field("when_open", &c.when_open)
            .finish_non_exhaustive()
    }
}

impl<Res> CircuitBreakerBuilder<Res> {
    /// Trips after this many failures in a row (default 5; 0 turns it off).
    pub fn consecutive_failures(mut self, n: u32) -> Self {
        self.cfg.consecutive = n;
        self
    }

    /// Trips when at least this share of the window's calls failed (default 0.5; from
    /// above 0 to 1), once the window holds `min_calls` calls.
    pub fn failure_rate(mut self, rate: f64) -> Self {
        self.cfg.rate = Some(rate);
        self
    }

    /// No failure-rate trip.
    pub fn no_failure_rate(mut self) -> Self {
        self.cfg.rate = None;
        self
    }

    /// Trips when at least `rate` of the window's calls took longer than `slower_than`
    /// (default off).
    pub fn slow_calls(mut self, slower_than: Duration, rate: f64) -> Self {
        self.cfg.slow = Some((slower_than, rate));
        self
    }

    /// The sliding window the rates are counted over (default 10 s), and the calls it
    /// must hold before a rate can trip it (default 20).
    pub fn window(mut self, window: Duration, min_calls: u32) -> Self {
        self.cfg.window = window;
        self.cfg.min_calls = min_calls;
        self
    }

    /// How long it stays open: `first` after a trip, doubling after each failed probe
    /// up to `max` (defaults 5 s and 60 s), less up to a fifth at random.
    pub fn open_for(mut self, first: Duration, max: Duration) -> Self {
        self.cfg.open_for = (first, max);
        self
    }

    /// What `poll_ready` does while open (default [`WhenOpen::Fail`]).
    pub fn when_open(mut self, mode: WhenOpen) -> Self {
        self.cfg.when_open = mode;
        self
    }

    /// Which responses count as failures, besides errors (default: none).
    pub fn failure_if<F>(mut self, f: F) -> Self
    where
        F: Fn(&Res) -> bool + Send + Sync + 'static,
    {
        self.cfg.failure_if = Arc::new(f);
        self
    }

    /// Called on every state change, with the old and the new state.
    pub fn on_state_change<F>(mut self, f: F) -> Self
    where
        F: Fn(BreakerState, BreakerState) + Send + Sync + 'static,
    {
        self.cfg.on_change = Some(Arc::new(f));
        self
    }

    /// Checks the settings.
    pub fn build(self) -> Result<CircuitBreakerLayer<Res>, crate::BuildError> {
        let c = &self.cfg;
        let err = |m: String| Err(crate::BuildError(m));
        let rate_ok = |r: f64| r > 0.0 && r <= 1.0;
        if let Some(r) = c.rate {
            if !rate_ok(r) {
                return err(format!(
                    "failure_rate({r}): give a share above 0 and at most 1, or call no_failure_rate()"
                ));
            }
        }
        if let Some((d, r)) = c.slow {
            if !rate_ok(r) {
                return err(format!(
                    "slow_calls rate {r}: give a share above 0 and at most 1"
                ));
            }
            if d.is_zero() {
                return err("slow_calls threshold is zero: every call would be slow".into());
            }
        }
        if (c.rate.is_some() || c.slow.is_some()) && (c.window.is_zero() || c.min_calls == 0) {
            return err(format!(
                "window({:?}, {}): give a window above zero and at least 1 call",
                c.window, c.min_calls
            ));
        }
        if c.consecutive == 0 && c.rate.is_none() && c.slow.is_none() {
            return err(
                "the breaker can never trip: give consecutive_failures, failure_rate or slow_calls"
                    .into(),
            );
        }
        let (first, max) = c.open_for;
        if first.is_zero() || first > max {
            return err(format!(
                "open_for({first:?}, {max:?}): give a first open time above zero and not above the maximum"
            ));
        }
        Ok(CircuitBreakerLayer {
            cfg: Arc::new(self.cfg),
        })
    }
}

impl<B> CircuitBreakerBuilder<http::Response<B>> {
    /// The HTTP default: 5xx responses count as failures (besides transport errors).
    pub fn http(self) -> Self {
        self.failure_if(|r: &http::Response<B>| r.status().is_server_error())
    }
}

/// Wraps each service it layers in its own [`CircuitBreaker`]. Cloning shares the
/// settings, not the state: every layered endpoint trips on its own.
pub struct CircuitBreakerLayer<Res> {
    cfg: Arc<Config<Res>>,
}

impl<Res> Clone for CircuitBreakerLayer<Res> {
    fn clone(&self) -> Self {
        Self {
            cfg: self.cfg.clone(),
        }
    }
}

impl<Res> fmt::Debug for CircuitBreakerLayer<Res> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreakerLayer")
            .finish_non_exhaustive()
    }
}

impl<Res> CircuitBreakerLayer<Res> {
    /// Settings with their defaults: 5 failures in a row or half of at least 20 calls
    /// over 10 s trip it; open for 5 s, doubling up to 60 s; fail fast while open.
    /// The same as [`CircuitBreakerBuilder::new`].
    pub fn builder() -> CircuitBreakerBuilder<Res> {
        CircuitBreakerBuilder::new()
    }
}

impl<Res> CircuitBreakerBuilder<Res> {
    /// Settings with their defaults: 5 failures in a row or half of at least 20 calls
    /// over 10 s trip it; open for 5 s, doubling up to 60 s; fail fast while open.
    pub fn new() -> Self {
        Self {
            cfg: Config {
                consecutive: 5,
                rate: Some(0.5),
                slow: None,
                window: Duration::from_secs(10),
                min_calls: 20,
                open_for: (Duration::from_secs(5), Duration::from_secs(60)),
                when_open: WhenOpen::Fail,
                failure_if: Arc::new(|_| false),
                on_change: None,
            },
        }
    }
}

impl<Res> Default for CircuitBreakerBuilder<Res> {
    fn default() -> Self {
        Self::new()
    }
}

impl<S, Res> Layer<S> for CircuitBreakerLayer<Res> {
    type Service = CircuitBreaker<S, Res>;

    fn layer(&self, inner: S) -> Self::Service {
        CircuitBreaker {
            inner,
            breaker: Arc::new(Breaker {
                cfg: self.cfg.clone(),
                state: Mutex::new(Inner::new()),
                changed: Arc::new(Notify::new()),
                counters: Counters::default(),
            }),
            permit: None,
            sleep: None,
            wait: None,
        }
    }
}
