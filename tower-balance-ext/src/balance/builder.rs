//! The balancer's settings, checked when it is built.

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::{mpsc, Notify};
use tower::discover::Discover;
use tower_service::Service;

use super::driver;
use super::error::BuildError;
use super::pick::Pick;
use super::pool::Pool;
use super::service::Balancer;
use super::shared::{HashKey, IsFailure, Master, RetryCopy, Shared};
use crate::retry::Budget;
use crate::stats::StatsCell;
use crate::util::saturating_ns;
use crate::BoxError;

/// The settings of a [`Balancer`], checked by [`build`](Self::build).
pub struct BalancerBuilder<Req, Res> {
    pick: Pick,
    ready_timeout: Duration,
    panic_threshold: u8,
    slow_start: Duration,
    backoff: (Duration, Duration),
    decay: Duration,
    idle_decay: Duration,
    failure_penalty: Duration,
    learned_limit: u32,
    bounded_load: Option<f64>,
    hash_key: Option<HashKey<Req>>,
    is_failure: IsFailure<Res>,
    retry: Option<RetryCopy<Req>>,
    max_attempts: u32,
    budget: (f64, u32, Duration),
}

impl<Req, Res> Clone for BalancerBuilder<Req, Res> {
    fn clone(&self) -> Self {
        Self {
            pick: self.pick,
            ready_timeout: self.ready_timeout,
            panic_threshold: self.panic_threshold,
            slow_start: self.slow_start,
            backoff: self.backoff,
            decay: self.decay,
            idle_decay: self.idle_decay,
            failure_penalty: self.failure_penalty,
            learned_limit: self.learned_limit,
            bounded_load: self.bounded_load,
            hash_key: self.hash_key.clone(),
            is_failure: self.is_failure.clone(),
            retry: self.retry.clone(),
            max_attempts: self.max_attempts,
            budget: self.budget,
        }
    }
}

impl<Req, Res> fmt::Debug for BalancerBuilder<Req, Res> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BalancerBuilder")
            .field("pick", &self.pick)
            .field("ready_timeout", &self.ready_timeout)
            .field("panic_threshold", &self.panic_threshold)
            .field("slow_start", &self.slow_start)
            .field("backoff", &self.backoff)
            .field("decay", &self.decay)
            .field("idle_decay", &self.idle_decay)
            .field("failure_penalty", &self.failure_penalty)
            .field("learned_limit", &self.learned_limit)
            .field("bounded_load", &self.bounded_load)
            .field("hash_key", &self.hash_key.is_some())
            .field("retry", &self.retry.is_some())
            .field("max_attempts", &self.max_attempts)
            .field("budget", &self.budget)
            .finish()
    }
}

impl<Req, Res> BalancerBuilder<Req, Res> {
    /// The settings' defaults, with the given pick algorithm.
    pub fn new(pick: Pick) -> Self {
        Self {
            pick,
            ready_timeout: Duration::from_secs(1),
            panic_threshold: 50,
            slow_start: Duration::ZERO,
            backoff: (Duration::from_millis(100), Duration::from_secs(10)),
            decay: Duration::from_secs(10),
            idle_decay: Duration::from_secs(10),
            failure_penalty: Duration::from_secs(1),
            learned_limit: 1_000,
            bounded_load: None,
            hash_key: None,
            is_failure: Arc::new(|_| false),
            retry: None,
            max_attempts: 2,
            budget: (0.2, 10, Duration::from_secs(10)),
        }
    }

    /// How long a request waits for a ready endpoint before it fails with
    /// [`NoReadyEndpoints`](super::NoReadyEndpoints) (default 1 s; zero fails at once).
    pub fn ready_timeout(mut self, timeout: Duration) -> Self {
        self.ready_timeout = timeout;
        self
    }

    /// Below this percentage of ready endpoints, endpoints set aside after
    /// `poll_ready` errors are tried too (default 50, as Envoy; 0 turns it off).
    pub fn panic_threshold(mut self, percent: u8) -> Self {
        self.panic_threshold = percent;
        self
    }

    /// A new or recovered endpoint takes from a tenth of its share to all of it over
    /// this window (default zero: off).
    pub fn slow_start(mut self, window: Duration) -> Self {
        self.slow_start = window;
        self
    }

    /// An endpoint whose `poll_ready` failed is probed again after `min`, doubling
    /// after each further failure up to `max` (defaults 100 ms and 10 s), with jitter.
    pub fn readmit_backoff(mut self, min: Duration, max: Duration) -> Self {
        self.backoff = (min, max);
        self
    }

    /// The time constant of the peak-EWMA latency estimate (default 10 s): how fast
    /// fast samples pull a high estimate down.
    pub fn decay(mut self, tau: Duration) -> Self {
        self.decay = tau;
        self
    }

    /// The time constant at which the latency estimate of an endpoint that gets no
    /// requests fades toward zero (default 10 s): by `exp(-idle / tau)`, as tower's
    /// PeakEwma, so an endpoint that was `k` times slower than the others when it last
    /// answered is tried again after about `tau x ln k` (30 s for 20x at the default),
    /// and takes its share again if it has recovered.
    pub fn idle_decay(mut self, tau: Duration) -> Self {
        self.idle_decay = tau;
        self
    }

    /// The latency a failure counts as for [`Pick::LatencyAware`], when it came back
    /// faster than that (default 1 s): a fast-failing endpoint must not attract traffic.
    pub fn failure_penalty(mut self, latency: Duration) -> Self {
        self.failure_penalty = latency;
        self
    }

    /// For [`Pick::LatencyAware`]: the largest concurrency limit each endpoint may
    /// learn (default 1,000; 0 turns the limits off). Each endpoint's limit is learned
    /// from its latency as TCP Vegas learns a window (it starts at 20): it grows while
    /// the endpoint has that many requests in flight and its latency stays near the
    /// lowest seen over the last second or two, shrinks as latency rises with load or
    /// after a failure, and stays between 1 and this maximum. The pick then
    /// weighs an endpoint as latency x (1 + in-flight / limit) rather than latency x
    /// (in-flight + 1): an endpoint that serves many requests at once without slowing
    /// down is not passed over for a slower idle one, while one whose latency rises
    /// with load gets a lower limit, so its in-flight requests count for more. Latency
    /// there is the geometric mean of the peak-EWMA estimate and the latency without a
    /// queue, which tells the endpoints' speeds apart more steadily than the peak alone.
    pub fn learned_limit(mut self, max: u32) -> Self {
        self.learned_limit = max;
        self
    }

    /// For [`Pick::ConsistentHash`]: the request's key, hashed (see
    /// [`hash_key`](crate::hash_key)). A request for which it returns `None` fails with
    /// [`NoHashKey`](super::NoHashKey).
    pub fn hash_key<F>(mut self, key: F) -> Self
    where
        F: Fn(&Req) -> Option<u64> + Send + Sync + 'static,
    {
        self.hash_key = Some(Arc::new(key));
        self
    }

    /// For [`Pick::ConsistentHash`]: an endpoint with more than `factor` times the mean
    /// in-flight load passes the key on to the next endpoint of its order
    /// ("consistent hashing with bounded loads"; 1.25 is a common choice, at least 1).
    pub fn bounded_load(mut self, factor: f64) -> Self {
        self.bounded_load = Some(factor);
        self
    }

    /// Which responses count as failures, besides errors (default: none). Failures
    /// count in the statistics, as slow for [`Pick::LatencyAware`], and are retried.
    pub fn failure_if<F>(mut self, is_failure: F) -> Self
    where
        F: Fn(&Res) -> bool + Send + Sync + 'static,
    {
        self.is_failure = Arc::new(is_failure);
        self
    }

    /// Retries a failed request on another endpoint when `copy` gives a copy of it
    /// (return `None` for requests that must not be sent twice): once by default (see
    /// [`max_attempts`](Self::max_attempts)), and only while the
    /// [retry budget](Self::retry_budget) lasts.
    pub fn retry<F>(mut self, copy: F) -> Self
    where
        F: Fn(&Req) -> Option<Req> + Send + Sync + 'static,
    {
        self.retry = Some(Arc::new(copy));
        self
    }

    /// How many calls one request may make in all, the first included, when
    /// [`retry`](Self::retry) is set (default 2: the first and one retry; 1 turns
    /// retries off; 0 is refused). Each retry goes to an endpoint the request has not
    /// tried, and must also be allowed by the [retry budget](Self::retry_budget).
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts;
        self
    }

    /// The retry budget: retries may add `ratio` of the requests plus `min_per_sec` per
    /// second, counted over `window` (defaults 0.2, 10 and 10 s; the window from 1 to
    /// 60 s).
    pub fn retry_budget(mut self, ratio: f64, min_per_sec: u32, window: Duration) -> Self {
        self.budget = (ratio, min_per_sec, window);
        self
    }

    fn check(&self) -> Result<(), BuildError> {
        let err = |m: String| Err(BuildError(m));
        if self.panic_threshold > 100 {
            return err(format!(
                "panic_threshold is {}%; give a percentage from 0 (off) to 100",
                self.panic_threshold
            ));
        }
        let (min, max) = self.backoff;
        if min.is_zero() || min > max {
            return err(format!(
                "readmit_backoff({min:?}, {max:?}): give a minimum above zero and not above the maximum"
            ));
        }
        if self.decay.is_zero() {
            return err(
                "decay is zero; give the latency estimate a time constant, e.g. 10 s".into(),
            );
        }
        if self.idle_decay.is_zero() {
            return err(
                "idle_decay is zero: an idle endpoint's latency estimate would vanish at once; give it a time constant, e.g. 10 s".into(),
            );
        }
        match (self.pick, self.hash_key.is_some()) {
            (Pick::ConsistentHash, false) => {
                return err("Pick::ConsistentHash needs a request key: call .hash_key(...)".into())
            }
            (p, true) if p != Pick::ConsistentHash => {
                return err(format!(
                    "hash_key is only used by Pick::ConsistentHash, not {p:?}; remove it or change the pick"
                ))
            }
            _ => {}
        }
        if let Some(c) = self.bounded_load {
            if self.pick != Pick::ConsistentHash {
                return err("bounded_load is only used by Pick::ConsistentHash".into());
            }
            if c.is_nan() || c < 1.0 {
                return err(format!(
                    "bounded_load({c}): give a factor of at least 1 (1.25 is common)"
                ));
            }
        }
        if self.max_attempts == 0 {
            return err("max_attempts is 0; give at least 1 (1: no retries, 2: one retry)".into());
        }
        let (ratio, _, window) = self.budget;
        if !(0.0..=1000.0).contains(&ratio) {
            return err(format!(
                "retry_budget ratio {ratio}: give a ratio from 0 to 1000 retries per request"
            ));
        }
        if window < Duration::from_secs(1) || window > Duration::from_secs(60) {
            return err(format!(
                "retry_budget window {window:?}: give a window from 1 to 60 seconds"
            ));
        }
        Ok(())
    }
}

impl<B, ResB> BalancerBuilder<http::Request<B>, http::Response<ResB>> {
    /// HTTP defaults: 5xx and 429 responses count as failures (besides transport
    /// errors).
    pub fn http(self) -> Self {
        self.failure_if(|res: &http::Response<ResB>| {
            res.status().is_server_error() || res.status() == http::StatusCode::TOO_MANY_REQUESTS
        })
    }

    /// Retries requests with an idempotent method (GET, HEAD, OPTIONS, TRACE, PUT,
    /// DELETE) on another endpoint; the body type must be `Clone`, that is buffered
    /// (`Full<Bytes>`, `String`, ...).
    pub fn retry_idempotent(self) -> Self
    where
        B: Clone + 'static,
    {
        self.retry(crate::retry::clone_idempotent)
    }
}

impl<Req, Res> BalancerBuilder<Req, Res> {
    /// Checks the settings and starts the balancer over `discover`, whose background
    /// task runs on the current tokio runtime.
    pub fn build<D>(self, discover: D) -> Result<Balancer<D::Key, D::Service, Req>, BuildError>
    where
        D: Discover + Send + 'static,
        D::Key: Hash + Eq + Clone + fmt::Debug + Send + Sync + 'static,
        D::Service: Service<Req, Response = Res> + Clone + Send + 'static,
        <D::Service as Service<Req>>::Error: Into<BoxError>,
        <D::Service as Service<Req>>::Future: Send,
        D::Error: Into<BoxError>,
        Req: Send + 'static,
        Res: Send + 'static,
    {
        self.check()?;
        let handle = tokio::runtime::Handle::try_current().map_err(|_| {
            BuildError("build the balancer inside a tokio runtime: it spawns a task that follows discovery".into())
        })?;
        let (tx, rx) = mpsc::unbounded_channel();
        let (ratio, floor, window) = self.budget;
        let shared = Arc::new(Shared {
            pool: ArcSwap::from_pointee(Pool::empty()),
            master: Mutex::new(Master {
                endpoints: Vec::new(),
                weights: HashMap::new(),
                next_id: 0,
            }),
            changed: Arc::new(Notify::new()),
            cursor: AtomicUsize::new(0),
            ready: AtomicUsize::new(0),
            ready_gen: AtomicU64::new(0),
            stats: Arc::new(StatsCell::new()),
            watch: tx,
            pick: self.pick,
            ready_timeout: self.ready_timeout,
            panic_threshold: self.panic_threshold,
            slow_start_ns: saturating_ns(self.slow_start),
            backoff: self.backoff,
            tau_ns: saturating_ns(self.decay) as f64,
            idle_tau_ns: saturating_ns(self.idle_decay) as f64,
            penalty_ns: saturating_ns(self.failure_penalty) as f64,
            limit_max: if self.pick == Pick::LatencyAware {
                f64::from(self.learned_limit)
            } else {
                0.0
            },
            bounded_load: self.bounded_load,
            hash_key: self.hash_key,
            is_failure: self.is_failure,
            retry: self.retry,
            max_attempts: self.max_attempts,
            budget: Budget::new(ratio, floor, window),
        });
        let guard = driver::spawn::<D, Req>(&handle, Arc::downgrade(&shared), discover, rx);
        Ok(Balancer {
            shared,
            _driver: Arc::new(guard),
        })
    }
}
