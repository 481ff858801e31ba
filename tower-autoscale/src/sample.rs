//! What the engine reads: [`LoadSample`]s from [`LoadSource`]s.

use std::time::Duration;

/// One instance's numbers, when the source knows them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InstanceLoad {
    /// A name for reasons and history (an address, a pid).
    pub name: String,
    /// Takes traffic. Instances that are not ready are left out of the averages (and
    /// count as 0% on a scale-up, as the Kubernetes HPA does with unready pods).
    pub ready: bool,
    /// Marked as warming up by its source: its samples are ignored.
    pub warming_up: bool,
    /// How long it has run, when known: younger than the policy's `warm_up`, its
    /// samples are ignored too.
    pub age: Option<Duration>,
    /// CPU used, as a share of what it may use (1.0 = all its cores or its quota).
    pub cpu: Option<f64>,
    /// Memory used, as a share of its limit.
    pub memory: Option<f64>,
    /// Requests in flight.
    pub in_flight: Option<f64>,
}

impl InstanceLoad {
    /// A ready instance named `name`.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            ready: true,
            ..Self::default()
        }
    }

    /// Sets whether it is ready.
    pub fn ready(mut self, ready: bool) -> Self {
        self.ready = ready;
        self
    }

    /// Marks it as warming up.
    pub fn warming_up(mut self, warming: bool) -> Self {
        self.warming_up = warming;
        self
    }

    /// How long it has run.
    pub fn age(mut self, age: Duration) -> Self {
        self.age = Some(age);
        self
    }

    /// Its CPU share.
    pub fn cpu(mut self, share: f64) -> Self {
        self.cpu = Some(share);
        self
    }

    /// Its memory share.
    pub fn memory(mut self, share: f64) -> Self {
        self.memory = Some(share);
        self
    }

    /// Its requests in flight.
    pub fn in_flight(mut self, n: f64) -> Self {
        self.in_flight = Some(n);
        self
    }
}

/// A service's load at one moment. Every field a source does not know is `None`; the
/// engine says so in its reasons and leaves that metric out. Build it with a struct
/// literal and `..LoadSample::new(instances)`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LoadSample {
    /// The instances running now (ready or not): the HPA's current replica count.
    pub instances: usize,
    /// Per instance, when known (needed for CPU and memory, which are averages).
    pub per_instance: Vec<InstanceLoad>,
    /// Requests in flight over all instances.
    pub in_flight: Option<f64>,
    /// Requests waiting for an instance (queue depth).
    pub waiting: Option<f64>,
    /// Requests per second.
    pub throughput: Option<f64>,
    /// Median latency.
    pub p50: Option<Duration>,
    /// 99th percentile latency.
    pub p99: Option<Duration>,
    /// Failed share of requests, 0 to 1.
    pub error_rate: Option<f64>,
    /// Cache hit ratio, 0 to 1 (for information: no scaling rule reads it).
    pub hit_ratio: Option<f64>,
}

impl LoadSample {
    /// A sample of `instances` instances and nothing else known.
    pub fn new(instances: usize) -> Self {
        Self {
            instances,
            ..Self::default()
        }
    }

    /// Fills the fields this sample does not know from `other` (to combine sources).
    pub fn or(mut self, other: LoadSample) -> Self {
        if self.per_instance.is_empty() {
            self.per_instance = other.per_instance;
        }
        self.in_flight = self.in_flight.or(other.in_flight);
        self.waiting = self.waiting.or(other.waiting);
        self.throughput = self.throughput.or(other.throughput);
        self.p50 = self.p50.or(other.p50);
        self.p99 = self.p99.or(other.p99);
        self.error_rate = self.error_rate.or(other.error_rate);
        self.hit_ratio = self.hit_ratio.or(other.hit_ratio);
        self.instances = self.instances.max(other.instances);
        self
    }
}

/// Anything that can say what a service's load is now.
pub trait LoadSource: Send + Sync + 'static {
    /// The load now.
    fn sample(&self) -> LoadSample;
}

impl<F> LoadSource for F
where
    F: Fn() -> LoadSample + Send + Sync + 'static,
{
    fn sample(&self) -> LoadSample {
        self()
    }
}

/// The balancer's statistics: in flight, waiting, throughput, p50/p99, error rate, and
/// per endpoint in flight and readiness (as the balancer last saw it).
impl LoadSource for tower_balance_ext::LoadStats {
    fn sample(&self) -> LoadSample {
        let s = self.snapshot();
        let p50 = s.endpoints.iter().map(|e| e.p50).max();
        LoadSample {
            instances: s.endpoints.len(),
            per_instance: s
                .endpoints
                .iter()
                .map(|e| InstanceLoad {
                    name: e.name.clone(),
                    ready: e.state == tower_balance_ext::EndpointState::Ready,
                    warming_up: false,
                    age: None,
                    cpu: None,
                    memory: None,
                    in_flight: Some(e.in_flight as f64),
                })
                .collect(),
            in_flight: Some(s.in_flight as f64),
            waiting: Some(s.waiting as f64),
            throughput: Some(s.throughput),
            p50,
            p99: Some(s.p99),
            error_rate: Some(s.error_rate),
            hit_ratio: None,
        }
    }
}

/// Readiness from a health monitor: one instance per target, ready when healthy.
impl LoadSource for tower_health::HealthMonitor {
    fn sample(&self) -> LoadSample {
        let per_instance: Vec<InstanceLoad> = self
            .all_health()
            .into_iter()
            .map(|t| InstanceLoad::new(t.name).ready(t.state == tower_health::TargetState::Healthy))
            .collect();
        LoadSample {
            instances: per_instance.len(),
            per_instance,
            ..LoadSample::default()
        }
    }
}

/// A cache's hit ratio, for information (no scaling rule reads it).
#[cfg(feature = "cache")]
#[cfg_attr(docsrs, doc(cfg(feature = "cache")))]
impl LoadSource for tower_cache::Cache {
    fn sample(&self) -> LoadSample {
        LoadSample {
            hit_ratio: Some(self.stats().hit_ratio()),
            ..LoadSample::default()
        }
    }
}
