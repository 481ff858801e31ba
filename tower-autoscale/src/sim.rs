//! A deterministic, discrete-time [`Simulator`] to judge a scaler against load traces,
//! with an exact port of the Kubernetes HPA's algorithm ([`Hpa`]) as the baseline.
//!
//! **Model** (one step per second): instances serve up to `capacity` requests per second
//! each, and take `startup` seconds to become ready. Requests beyond the ready capacity
//! wait in a backlog. The p99 latency is that of an M/M/1 queue per instance,
//! `service_ms x ln(100) / (1 - utilisation)`, plus the time to work off the backlog,
//! capped at 60 s. CPU per ready instance is the utilisation (1 while a backlog waits).
//! Every `interval` seconds the scaler sees the sample a real source would give (per
//! instance CPU and readiness, in flight, waiting, throughput, p99) and answers a count;
//! new instances start at once, removed ones stop at once (newest first).
//!
//! **Scores**, over the whole trace:
//! - *SLO-violation seconds*: seconds with p99 above the SLO;
//! - *needed(t)* = max(min, ceil(rate / (capacity x target utilisation))); the share of
//!   seconds *under-provisioned* (ready < needed) and *over-provisioned* (running >
//!   needed), and *accuracy* = 1 - mean(|running - needed| / max(needed, 1));
//! - *instance-seconds*: the sum of running instances (starting ones included);
//! - *actions* (changes of count) and *direction flips* (an up after a down, or a down
//!   after an up).
//!
//! Same trace, same scaler settings: same score (no randomness at all).

use std::time::Duration;

use crate::engine::DecisionEngine;
use crate::policy::{Metric, MetricTarget, ScalingPolicy};
use crate::sample::{InstanceLoad, LoadSample};

/// A load trace: requests per second, one value per second.
#[derive(Debug, Clone, PartialEq)]
pub struct Trace {
    /// Its name, for tables and file names.
    pub name: String,
    /// Requests per second, per second.
    pub rates: Vec<f64>,
}

/// Why a CSV trace cannot be read, or a simulator setting cannot work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceError(String);

impl std::fmt::Display for TraceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TraceError {}

impl Trace {
    /// `low` for `at` seconds, then `high` until `len`.
    pub fn step(low: f64, high: f64, at: usize, len: usize) -> Self {
        Self {
            name: "step".into(),
            rates: (0..len).map(|t| if t < at { low } else { high }).collect(),
        }
    }

    /// From `low` to `high` linearly over `len` seconds.
    pub fn ramp(low: f64, high: f64, len: usize) -> Self {
        let span = len.max(2) - 1;
        Self {
            name: "ramp".into(),
            rates: (0..len)
                .map(|t| low + (high - low) * t as f64 / span as f64)
                .collect(),
        }
    }

    /// A daily sine compressed into `period` seconds: between `low` and `high`, over
    /// `cycles` periods.
    pub fn daily_sine(low: f64, high: f64, period: usize, cycles: usize) -> Self {
        let mid = (low + high) / 2.0;
        let amp = (high - low) / 2.0;
        Self {
            name: "daily-sine".into(),
            rates: (0..period * cycles)
                .map(|t| mid - amp * (2.0 * std::f64::consts::PI * t as f64 / period as f64).cos())
                .collect(),
        }
    }

    /// A flash crowd: `base`, then `peak` for `width` seconds from `at`.
    pub fn spike(base: f64, peak: f64, at: usize, width: usize, len: usize) -> Self {
        Self {
            name: "flash-crowd".into(),
            rates: (0..len)
                .map(|t| {
                    if t >= at && t < at + width {
                        peak
                    } else {
                        base
                    }
                })
                .collect(),
        }
    }

    /// A noisy random walk from `start`: each second the level moves by a normal step
    /// of standard deviation `step` (kept within `low..=high`), and the rate seen is the
    /// level with normal noise of `noise` (a share of the level) on top. The same
    /// `seed` gives the same trace.
    pub fn random_walk(
        seed: u64,
        start: f64,
        step: f64,
        noise: f64,
        (low, high): (f64, f64),
        len: usize,
    ) -> Self {
        let mut rng = SplitMix64(seed);
        let mut level = start.clamp(low, high);
        Self {
            name: "random-walk".into(),
            rates: (0..len)
                .map(|_| {
                    level = (level + step * rng.normal()).clamp(low, high);
                    (level * (1.0 + noise * rng.normal())).max(0.0)
                })
                .collect(),
        }
    }

    /// A slow sawtooth: from `low` up to `high` over `period` seconds, then back to
    /// `low` at once, for `len` seconds.
    pub fn sawtooth(low: f64, high: f64, period: usize, len: usize) -> Self {
        let period = period.max(1);
        Self {
            name: "sawtooth".into(),
            rates: (0..len)
                .map(|t| low + (high - low) * (t % period) as f64 / period as f64)
                .collect(),
        }
    }

    /// A day of requests compressed into `period` seconds, `cycles` times: a quiet
    /// night at `low`, a morning rise, a midday dip and an evening peak at `high`,
    /// with normal noise of `noise` (a share of the rate) every second. The same `seed`
    /// gives the same trace.
    pub fn diurnal(
        seed: u64,
        (low, high): (f64, f64),
        noise: f64,
        period: usize,
        cycles: usize,
    ) -> Self {
        let mut rng = SplitMix64(seed);
        let period = period.max(1);
        let tau = 2.0 * std::f64::consts::PI;
        Self {
            name: "diurnal".into(),
            rates: (0..period.saturating_mul(cycles))
                .map(|t| {
                    let x = (t % period) as f64 / period as f64;
                    // Two humps (late morning, evening), in 0..=1.
                    let shape = (0.55 * (1.0 - (tau * x).cos()) / 2.0
                        + 0.45 * (1.0 - (2.0 * tau * x).cos()) / 2.0
                            * ((tau * x).sin() < 0.0) as u8 as f64)
                        .clamp(0.0, 1.0);
                    let rate = low + (high - low) * shape;
                    (rate * (1.0 + noise * rng.normal())).max(0.0)
                })
                .collect(),
        }
    }

    /// The traces of the simulator's comparison table: a step, a ramp, a daily sine, a
    /// flash crowd, a noisy random walk, a slow sawtooth and a noisy diurnal curve.
    pub fn standard() -> Vec<Self> {
        vec![
            Self::step(100.0, 1200.0, 600, 2400),
            Self::ramp(50.0, 2000.0, 3600),
            Self::daily_sine(100.0, 1500.0, 3600, 2),
            Self::spike(200.0, 2500.0, 900, 300, 2400),
            Self::random_walk(7, 800.0, 15.0, 0.1, (100.0, 2000.0), 3600),
            Self::sawtooth(200.0, 1400.0, 1800, 5400),
            Self::diurnal(11, (100.0, 1500.0), 0.1, 3600, 2),
        ]
    }

    /// From a CSV of `seconds,requests_per_second` lines (a header line is allowed),
    /// linearly interpolated per second.
    pub fn from_csv(name: &str, text: &str) -> Result<Self, TraceError> {
        let mut points: Vec<(f64, f64)> = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut it = line.split(',');
            let (Some(a), Some(b)) = (it.next(), it.next()) else {
                return Err(TraceError(format!(
                    "line {}: give `seconds,rate`, not `{line}`",
                    i + 1
                )));
            };
            let (Ok(t), Ok(r)) = (a.trim().parse::<f64>(), b.trim().parse::<f64>()) else {
                if i == 0 {
                    continue; // a header
                }
                return Err(TraceError(format!(
                    "line {}: `{line}` is not two numbers",
                    i + 1
                )));
            };
            if !(t.is_finite() && r.is_finite() && t >= 0.0 && r >= 0.0) {
                return Err(TraceError(format!(
                    "line {}: time and rate must be numbers from 0 up",
                    i + 1
                )));
            }
            if points.last().is_some_and(|(pt, _)| t <= *pt) {
                return Err(TraceError(format!("line {}: times must increase", i + 1)));
            }
            points.push((t, r));
        }
        if points.len() < 2 {
            return Err(TraceError("a trace needs at least two points".into()));
        }
        let end = points[points.len() - 1].0.min(7.0 * 24.0 * 3600.0) as usize;
        let mut rates = Vec::with_capacity(end + 1);
        let mut j = 0;
        for t in 0..=end {
            let t = t as f64;
            while j + 1 < points.len() && points[j + 1].0 < t {
                j += 1;
            }
            let (t0, r0) = points[j];
            let (t1, r1) = points[(j + 1).min(points.len() - 1)];
            let r = if t <= t0 || t1 <= t0 {
                r0
            } else {
                r0 + (r1 - r0) * ((t - t0) / (t1 - t0)).min(1.0)
            };
            rates.push(r);
        }
        Ok(Self {
            name: name.into(),
            rates,
        })
    }
}

/// SplitMix64: a small, fast, seeded generator for the traces (not for secrets).
#[derive(Debug, Clone)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Close to a standard normal (the sum of twelve uniforms, less six).
    fn normal(&mut self) -> f64 {
        (0..12).map(|_| self.unit()).sum::<f64>() - 6.0
    }
}

/// The simulated world.
#[derive(Debug, Clone, PartialEq)]
pub struct SimConfig {
    /// Requests per second one instance serves at 100% CPU (a finite number above 0).
    pub capacity: f64,
    /// Seconds from start to ready (any; one longer than the trace never becomes ready).
    pub startup: u64,
    /// Seconds between scaler evaluations (at least 1).
    pub interval: u64,
    /// Mean service time in milliseconds (a finite number above 0).
    pub service_ms: f64,
    /// The p99 objective in milliseconds (a finite number above 0).
    pub slo_ms: f64,
    /// The CPU target both scalers aim at, in (0, 1].
    pub target_cpu: f64,
    /// Instances at the start, ready from the first second (brought within
    /// `min..=max`).
    pub initial: usize,
    /// Fewest instances (0 allowed: no instance while nothing is asked).
    pub min: usize,
    /// Most instances (1 to [`Simulator::MAX_INSTANCES`]).
    pub max: usize,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            capacity: 100.0,
            startup: 30,
            interval: 15,
            service_ms: 20.0,
            slo_ms: 500.0,
            target_cpu: 0.6,
            initial: 2,
            min: 1,
            max: 50,
        }
    }
}

/// One simulated second.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tick {
    /// Requests per second offered.
    pub rate: f64,
    /// Instances running (starting ones included).
    pub running: usize,
    /// Instances ready.
    pub ready: usize,
    /// p99 latency in milliseconds.
    pub p99_ms: f64,
    /// Requests waiting.
    pub backlog: f64,
}

/// The scores of one run; see the [module docs](self).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Score {
    /// Seconds with p99 over the SLO.
    pub slo_violation_secs: u64,
    /// Share of seconds with fewer ready instances than needed.
    pub under_share: f64,
    /// Share of seconds with more instances than needed.
    pub over_share: f64,
    /// 1 - mean relative error of the count.
    pub accuracy: f64,
    /// Sum of running instances over the seconds.
    pub instance_secs: u64,
    /// Changes of count.
    pub actions: u64,
    /// Up after down or down after up.
    pub flips: u64,
}

/// One run: every second, and the score.
#[derive(Debug, Clone)]
pub struct Run {
    /// The scaler's name.
    pub scaler: String,
    /// Per second.
    pub ticks: Vec<Tick>,
    /// The score.
    pub score: Score,
}

/// A scaler under simulation: given the sample of the moment, a count.
pub trait SimScaler {
    /// Its name in tables.
    fn name(&self) -> String;
    /// The count wanted at simulated second `t`.
    fn decide(&mut self, t: u64, sample: &LoadSample) -> usize;
}

/// tower-autoscale's engine under simulation, on a clock the simulator drives.
#[derive(Debug)]
pub struct EngineScaler {
    engine: DecisionEngine,
    base: tokio::time::Instant,
    label: String,
}

impl EngineScaler {
    /// The engine with `policy`.
    pub fn new(label: &str, policy: ScalingPolicy) -> Result<Self, crate::EngineError> {
        let engine = DecisionEngine::new();
        engine.add_service("sim", policy, || LoadSample::new(0))?;
        Ok(Self {
            engine,
            base: tokio::time::Instant::now(),
            label: label.into(),
        })
    }

    /// The policy the simulator's comparison uses: CPU at the same target as the HPA,
    /// queue depth and p99 (80% of the SLO), panic and forecast on, the HPA's windows
    /// and rate limits otherwise.
    pub fn default_policy(cfg: &SimConfig) -> ScalingPolicy {
        ScalingPolicy {
            min_instances: cfg.min,
            max_instances: cfg.max,
            metrics: vec![
                MetricTarget::new(Metric::Cpu, cfg.target_cpu),
                MetricTarget::new(Metric::QueueDepth, cfg.capacity),
                MetricTarget::new(Metric::P99Ms, cfg.slo_ms * 0.8),
            ],
            ..ScalingPolicy::default()
        }
    }
}

impl SimScaler for EngineScaler {
    fn name(&self) -> String {
        self.label.clone()
    }

    fn decide(&mut self, t: u64, sample: &LoadSample) -> usize {
        let now = self.base + Duration::from_secs(t);
        self.engine
            .evaluate_sample_at("sim", sample, now)
            .map(|d| d.desired)
            .unwrap_or(sample.instances)
    }
}

/// An exact port of the Kubernetes HPA (v2, `replica_calculator.go` and
/// `horizontal.go`) with its default behaviour, on CPU only: unready pods ignored (and
/// counted at 0 on a scale-up), tolerance 0.1, scale-down stabilisation 300 s, scale-up
/// limited to max(100%, 4 pods) per 15 s, scale-down to 100% per 15 s.
#[derive(Debug, Clone)]
pub struct Hpa {
    target: f64,
    min: usize,
    max: usize,
    recommendations: Vec<(u64, usize)>,
    events: Vec<(u64, i64)>,
}

impl Hpa {
    /// The HPA on CPU at `target` utilisation within `min..=max`.
    pub fn new(target: f64, min: usize, max: usize) -> Self {
        Self {
            target,
            min,
            max,
            recommendations: Vec::new(),
            events: Vec::new(),
        }
    }

    /// `GetResourceReplicas` and `calcPlainMetricReplicas`: unready pods are ignored
    /// (at 0 on a scale-up); ready pods without a usable value (NaN, infinite or
    /// negative, or none) are missing: at the target on a scale-down, at 0 on a
    /// scale-up, left out at exactly the target.
    fn replicas(&self, current: usize, sample: &LoadSample) -> usize {
        let mut ready = Vec::new();
        let (mut unready, mut missing) = (0usize, 0usize);
        for i in &sample.per_instance {
            match i.cpu.filter(|c| c.is_finite() && *c >= 0.0) {
                _ if !i.ready => unready += 1,
                Some(c) => ready.push(c),
                None => missing += 1,
            }
        }
        if ready.is_empty() {
            return current;
        }
        let ratio = ready.iter().sum::<f64>() / ready.len() as f64 / self.target;
        let up_with_unready = unready > 0 && ratio > 1.0;
        if !up_with_unready && missing == 0 {
            if (1.0 - ratio).abs() <= 0.1 {
                return current;
            }
            return (ratio * ready.len() as f64).ceil() as usize;
        }
        let mut values = ready.clone();
        if ratio < 1.0 {
            values.extend(std::iter::repeat_n(self.target, missing));
        } else if ratio > 1.0 {
            values.extend(std::iter::repeat_n(0.0, missing));
        }
        if up_with_unready {
            values.extend(std::iter::repeat_n(0.0, unready));
        }
        let new_ratio = values.iter().sum::<f64>() / values.len() as f64 / self.target;
        if (1.0 - new_ratio).abs() <= 0.1
            || (ratio < 1.0 && new_ratio > 1.0)
            || (ratio > 1.0 && new_ratio < 1.0)
        {
            return current;
        }
        let n = (new_ratio * values.len() as f64).ceil() as usize;
        if (new_ratio < 1.0 && n > current) || (new_ratio > 1.0 && n < current) {
            return current;
        }
        n
    }
}

impl SimScaler for Hpa {
    fn name(&self) -> String {
        "Kubernetes HPA (default behaviour)".into()
    }

    fn decide(&mut self, t: u64, sample: &LoadSample) -> usize {
        let current = sample.instances;
        let desired = self.replicas(current, sample);
        // Stabilisation: scale-up window 0, scale-down window 300 s.
        self.recommendations.push((t, desired));
        self.recommendations.retain(|(at, _)| t - at <= 300);
        let up = desired;
        let down = self
            .recommendations
            .iter()
            .filter(|(at, _)| t - at < 300)
            .map(|(_, r)| *r)
            .max()
            .unwrap_or(desired);
        let mut d = current.max(up).min(down);
        // Rate limits over the last 15 s.
        let recent = |up: bool| -> usize {
            self.events
                .iter()
                .filter(|(at, _)| t - at < 15)
                .map(|(_, c)| if up { (*c).max(0) } else { (-*c).max(0) } as usize)
                .sum()
        };
        if d > current {
            let start = current.saturating_sub(recent(true));
            let limit = (start * 2).max(start + 4);
            d = d.min(limit).min(self.max);
        } else if d < current {
            // 100% of the instances per 15 s: no limit short of the minimum.
            let _ = recent(false);
            d = d.max(self.min);
        }
        d = d.clamp(self.min, self.max);
        if d != current {
            self.events.push((t, d as i64 - current as i64));
            self.events.retain(|(at, _)| t - at < 60);
        }
        d
    }
}

/// Runs traces through scalers; see the [module docs](self).
#[derive(Debug, Clone, Default)]
pub struct Simulator {
    /// The world's settings.
    pub cfg: SimConfig,
}

impl Simulator {
    /// The most instances a simulated world may have (`max`): each is simulated one
    /// by one, every second.
    pub const MAX_INSTANCES: usize = 100_000;

    /// A simulator of `cfg`, checked: the error names the setting.
    pub fn new(cfg: SimConfig) -> Result<Self, TraceError> {
        let bad = |m: String| Err(TraceError(m));
        if !(cfg.capacity.is_finite() && cfg.capacity > 0.0) {
            return bad(format!(
                "capacity is {}: give a finite number of requests per second above 0",
                cfg.capacity
            ));
        }
        if cfg.interval == 0 {
            return bad("interval is 0: give at least 1 s between evaluations".into());
        }
        if !(cfg.target_cpu > 0.0 && cfg.target_cpu <= 1.0) {
            return bad(format!(
                "target_cpu is {}: give a share in (0, 1]",
                cfg.target_cpu
            ));
        }
        for (name, v) in [("service_ms", cfg.service_ms), ("slo_ms", cfg.slo_ms)] {
            if !(v.is_finite() && v > 0.0) {
                return bad(format!(
                    "{name} is {v}: give a finite number of milliseconds above 0"
                ));
            }
        }
        if cfg.max == 0 || cfg.max > Self::MAX_INSTANCES {
            return bad(format!(
                "max is {}: give 1 to {} instances",
                cfg.max,
                Self::MAX_INSTANCES
            ));
        }
        if cfg.min > cfg.max {
            return bad(format!(
                "min ({}) is above max ({}): lower min or raise max",
                cfg.min, cfg.max
            ));
        }
        Ok(Self { cfg })
    }

    /// The p99 in milliseconds with `ready` instances at `rate` and `backlog` waiting.
    fn p99_ms(&self, rate: f64, ready: usize, backlog: f64) -> f64 {
        if rate <= 0.0 && backlog <= 0.0 {
            // Nothing asked, nothing late.
            return 0.0;
        }
        let cap = ready as f64 * self.cfg.capacity;
        if cap <= 0.0 {
            return 60_000.0;
        }
        let rho = (rate / cap).min(0.999);
        let queueing = self.cfg.service_ms * 100f64.ln() / (1.0 - rho);
        let backlog_ms = backlog / cap * 1000.0;
        (queueing + backlog_ms).min(60_000.0)
    }

    /// Runs `trace` with `scaler`.
    pub fn run(&self, trace: &Trace, scaler: &mut dyn SimScaler) -> Run {
        let c = &self.cfg;
        // When each running instance is (or will be) ready, in simulated seconds: the
        // first ones from the start, later ones `startup` after they start (never, in
        // effect, when that is beyond the end of time).
        let mut instances: Vec<u64> = vec![0; c.initial.clamp(c.min, c.max)];
        let mut backlog = 0.0f64;
        let mut ticks = Vec::with_capacity(trace.rates.len());
        let mut last_dir = 0i8;
        let (mut actions, mut flips) = (0u64, 0u64);
        for (t, &rate) in trace.rates.iter().enumerate() {
            let t = t as u64;
            let ready = instances.iter().filter(|r| **r <= t).count();
            let cap = ready as f64 * c.capacity;
            backlog = (backlog + rate - cap).max(0.0);
            let p99 = self.p99_ms(rate, ready, backlog);
            let cpu = if cap <= 0.0 || backlog > 0.0 {
                1.0
            } else {
                (rate / cap).min(1.0)
            };
            ticks.push(Tick {
                rate,
                running: instances.len(),
                ready,
                p99_ms: p99,
                backlog,
            });
            if t > 0 && t.is_multiple_of(c.interval.max(1)) {
                let sample = LoadSample {
                    instances: instances.len(),
                    per_instance: instances
                        .iter()
                        .enumerate()
                        .map(|(i, ready_at)| {
                            let r = *ready_at <= t;
                            InstanceLoad {
                                name: format!("i{i}"),
                                ready: r,
                                warming_up: false,
                                age: None,
                                cpu: Some(if r { cpu } else { 0.0 }),
                                memory: None,
                                in_flight: None,
                            }
                        })
                        .collect(),
                    in_flight: Some(rate.min(cap) * c.service_ms / 1000.0),
                    waiting: Some(backlog),
                    throughput: Some(rate),
                    p50: None,
                    p99: Some(Duration::from_secs_f64(p99 / 1000.0)),
                    error_rate: Some(0.0),
                    hit_ratio: None,
                };
                let want = scaler.decide(t, &sample).clamp(c.min, c.max);
                let have = instances.len();
                if want != have {
                    actions += 1;
                    let dir = if want > have { 1 } else { -1 };
                    if last_dir != 0 && dir != last_dir {
                        flips += 1;
                    }
                    last_dir = dir;
                    if want > have {
                        instances.extend(std::iter::repeat_n(
                            t.saturating_add(c.startup),
                            want - have,
                        ));
                    } else {
                        // Newest first (starting ones before ready ones).
                        instances.sort_unstable();
                        instances.truncate(want);
                    }
                }
            }
        }
        let score = self.score(&ticks, actions, flips);
        Run {
            scaler: scaler.name(),
            ticks,
            score,
        }
    }

    fn score(&self, ticks: &[Tick], actions: u64, flips: u64) -> Score {
        let c = &self.cfg;
        let n = ticks.len().max(1) as f64;
        let mut s = Score {
            slo_violation_secs: 0,
            under_share: 0.0,
            over_share: 0.0,
            accuracy: 0.0,
            instance_secs: 0,
            actions,
            flips,
        };
        let mut err = 0.0;
        for tk in ticks {
            let needed = ((tk.rate / (c.capacity * c.target_cpu)).ceil() as usize).max(c.min);
            if tk.p99_ms > c.slo_ms {
                s.slo_violation_secs += 1;
            }
            if tk.ready < needed {
                s.under_share += 1.0;
            }
            if tk.running > needed {
                s.over_share += 1.0;
            }
            // With `min` 0 and nothing asked, none is needed: count the error against one.
            err += (tk.running as f64 - needed as f64).abs() / needed.max(1) as f64;
            s.instance_secs = s.instance_secs.saturating_add(tk.running as u64);
        }
        s.under_share /= n;
        s.over_share /= n;
        s.accuracy = 1.0 - err / n;
        s
    }
}
