//! What the live views show ([`Gateway::overview`]): per service its instances,
//! figures, cache and latest scaling decision, and the latest scaling actions; served as
//! JSON at `/api/v1/system/overview` and read by the terminal view and the dashboard.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::SystemTime;

use serde::Serialize;
use tower_autoscale::AuditEntry;
use tower_balance_ext::breaker::BreakerState;
use tower_balance_ext::EndpointState;
use tower_cache::Cache;

use super::Gateway;
use crate::fleet::services::{Backend, RunningService};
use crate::orchestrator::HoldView;

impl Gateway {
    /// The figures the live views show.
    pub fn overview(&self) -> Overview {
        let history = self.parts.manager.history();
        let services = self
            .parts
            .services
            .iter()
            .map(|svc| self.service_view(svc, &history))
            .collect();
        let actions = history
            .iter()
            .rev()
            .filter_map(|e| match e {
                AuditEntry::Action {
                    at_unix_ms,
                    service,
                    by,
                    from,
                    to,
                    now,
                    error,
                } => Some(ActionView {
                    at_unix_ms: *at_unix_ms,
                    service: service.clone(),
                    by: by.to_string(),
                    from: *from,
                    to: *to,
                    now: *now,
                    error: error.clone(),
                    reason: history.iter().rev().find_map(|h| match h {
                        AuditEntry::Decision(d)
                            if d.service == *service
                                && d.at_unix_ms <= *at_unix_ms
                                && d.desired == *to
                                && *by == "autoscaler" =>
                        {
                            Some(DecisionView::from(d).reason)
                        }
                        _ => None,
                    }),
                }),
                _ => None,
            })
            .take(30)
            .collect();
        Overview {
            at_unix_ms: crate::fleet::unix_ms(),
            uptime_s: self.started.elapsed().as_secs_f64(),
            gateway_requests: self.requests.load(Ordering::Relaxed),
            rate_limited: self.limited.load(Ordering::Relaxed),
            services,
            actions,
        }
    }

    /// One service's figures: its instances (processes for an autoscaled service,
    /// endpoints for a data service), its cache and its latest scaling decision.
    fn service_view(&self, svc: &RunningService, history: &[AuditEntry]) -> ServiceView {
        let s = svc.stats().snapshot();
        let mut view = ServiceView {
            name: svc.name().to_string(),
            requests: s.requests,
            rps: s.throughput,
            p99_ms: s.p99.as_secs_f64() * 1e3,
            error_pct: s.error_rate * 100.0,
            in_flight: s.in_flight,
            cache: svc.cache().map(CacheView::from),
            ..ServiceView::default()
        };
        let now = crate::fleet::unix_ms();
        let started = now
            .saturating_sub(u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX));
        let mut states = self.states.lock().unwrap_or_else(|e| e.into_inner());
        match &svc.backend {
            Backend::Autoscaled {
                scaler, breakers, ..
            } => {
                let breakers = breakers.lock().unwrap_or_else(|e| e.into_inner()).clone();
                for d in scaler.instance_details() {
                    let addr = format!("127.0.0.1:{}", d.port);
                    let e = s.endpoints.iter().find(|e| e.name == addr);
                    let state = d.state.to_string();
                    view.count(&state);
                    let checked = scaler.monitor().health(&addr).and_then(|r| r.last_check);
                    let since = states.since(svc.name(), &addr, &state, d.started_unix_ms, now);
                    view.instances.push(InstanceView {
                        last_check_unix_ms: checked.map(unix_ms_of),
                        last_check_ms_ago: checked.map(|c| now.saturating_sub(unix_ms_of(c))),
                        state_since_unix_ms: since,
                        state_since_ms_ago: now.saturating_sub(since),
                        name: addr.clone(),
                        pid: d.pid,
                        state,
                        share: e.map_or(0.0, |e| e.share),
                        in_flight: e.map_or(d.in_flight as u64, |e| e.in_flight),
                        requests: e.map_or(0, |e| e.requests),
                        errors: e.map_or(0, |e| e.errors),
                        p99_ms: e.map_or(0.0, |e| e.p99.as_secs_f64() * 1e3),
                        breaker: breakers
                            .iter()
                            .find(|(a, _)| a.to_string() == addr)
                            .map(|(_, b)| breaker_words(b.state()).to_string()),
                    });
                }
                let policy = self.parts.manager.engine().policy(svc.name());
                view.bounds = policy.map(|p| (p.min_instances, p.max_instances));
                view.manual_hold = self
                    .parts
                    .manager
                    .engine()
                    .manual_hold(svc.name())
                    .map(|h| HoldView::new(&h, crate::fleet::unix_ms()));
                view.last_decision = history.iter().rev().find_map(|e| match e {
                    AuditEntry::Decision(d) if d.service == svc.name() => {
                        Some(DecisionView::from(d))
                    }
                    _ => None,
                });
            }
            Backend::Data { .. } => {
                // The gateway's monitor checks a data service under the service's name.
                let checked = self
                    .parts
                    .monitor
                    .health(svc.name())
                    .and_then(|r| r.last_check);
                for e in &s.endpoints {
                    let state = match e.state {
                        EndpointState::Ready => "ready",
                        EndpointState::NotReady => "starting",
                        _ => "failing",
                    };
                    view.count(state);
                    let since = states.since(svc.name(), &e.name, state, started, now);
                    view.instances.push(InstanceView {
                        last_check_unix_ms: checked.map(unix_ms_of),
                        last_check_ms_ago: checked.map(|c| now.saturating_sub(unix_ms_of(c))),
                        state_since_unix_ms: since,
                        state_since_ms_ago: now.saturating_sub(since),
                        name: e.name.clone(),
                        pid: Some(std::process::id()),
                        state: state.into(),
                        share: e.share,
                        in_flight: e.in_flight,
                        requests: e.requests,
                        errors: e.errors,
                        p99_ms: e.p99.as_secs_f64() * 1e3,
                        breaker: None,
                    });
                }
            }
        }
        let shown: Vec<&str> = view.instances.iter().map(|i| i.name.as_str()).collect();
        states.forget_others(svc.name(), &shown);
        view
    }
}

/// Milliseconds since the Unix epoch of `t` (0 before it).
fn unix_ms_of(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// When each instance's state last changed, as the overviews saw it (the dashboard's
/// history takes one a second, so a change is seen within about a second).
#[derive(Debug, Default)]
pub(super) struct StateClock {
    /// Per (service, instance): its state and since when, in Unix milliseconds.
    seen: HashMap<(String, String), (String, u64)>,
}

impl StateClock {
    /// Since when `instance` of `service` has been in `state`: as before if the state is
    /// the one seen last, `now` if it changed, `first` for an instance not seen before.
    fn since(&mut self, service: &str, instance: &str, state: &str, first: u64, now: u64) -> u64 {
        let key = (service.to_owned(), instance.to_owned());
        match self.seen.get_mut(&key) {
            Some((was, since)) if was == state => *since,
            Some(entry) => {
                *entry = (state.to_owned(), now);
                now
            }
            None => {
                let since = first.min(now);
                self.seen.insert(key, (state.to_owned(), since));
                since
            }
        }
    }

    /// Forgets the instances of `service` not in `shown` (stopped ones).
    fn forget_others(&mut self, service: &str, shown: &[&str]) {
        self.seen
            .retain(|(s, i), _| s != service || shown.contains(&i.as_str()));
    }
}

/// What the live views show; see [`Gateway::overview`].
#[derive(Debug, Clone, Default, Serialize)]
pub struct Overview {
    /// When these figures were taken, in milliseconds since the Unix epoch (the
    /// gateway's clock: the dashboard's time axis and "ago" figures count from it).
    pub at_unix_ms: u64,
    /// Seconds since the gateway started.
    pub uptime_s: f64,
    /// Requests the gateway has seen.
    pub gateway_requests: u64,
    /// Requests it refused for the rate limit.
    pub rate_limited: u64,
    /// Per service.
    pub services: Vec<ServiceView>,
    /// The latest scaling actions, newest first.
    pub actions: Vec<ActionView>,
}

/// One service in the [`Overview`].
#[derive(Debug, Clone, Default, Serialize)]
pub struct ServiceView {
    /// Its name.
    pub name: String,
    /// Instances ready.
    pub ready: usize,
    /// Instances starting.
    pub starting: usize,
    /// Instances draining (or failing).
    pub draining: usize,
    /// The autoscaler's bounds.
    pub bounds: Option<(usize, usize)>,
    /// Requests through its balancer.
    pub requests: u64,
    /// Requests a second (last few seconds).
    pub rps: f64,
    /// p99 latency.
    pub p99_ms: f64,
    /// Errors, percent of requests (last few seconds).
    pub error_pct: f64,
    /// Requests in flight.
    pub in_flight: u64,
    /// Per instance.
    pub instances: Vec<InstanceView>,
    /// Its cache.
    pub cache: Option<CacheView>,
    /// The autoscaler's latest decision.
    pub last_decision: Option<DecisionView>,
    /// A manual scale's hold against the autoscaler, while it lasts.
    pub manual_hold: Option<HoldView>,
}

impl ServiceView {
    fn count(&mut self, state: &str) {
        match state {
            "ready" => self.ready += 1,
            "starting" => self.starting += 1,
            _ => self.draining += 1,
        }
    }
}

/// One instance in a [`ServiceView`].
#[derive(Debug, Clone, Default, Serialize)]
pub struct InstanceView {
    /// Its address.
    pub name: String,
    /// Its process.
    pub pid: Option<u32>,
    /// ready, starting, draining, crashed, crash loop back-off, or failing.
    pub state: String,
    /// Its share of the service's requests.
    pub share: f64,
    /// Requests in flight.
    pub in_flight: u64,
    /// Requests sent to it.
    pub requests: u64,
    /// Of which failed.
    pub errors: u64,
    /// p99 latency.
    pub p99_ms: f64,
    /// Its circuit breaker's state.
    pub breaker: Option<String>,
    /// When its health was last checked, in milliseconds since the Unix epoch (none
    /// before the first check).
    pub last_check_unix_ms: Option<u64>,
    /// How long ago that was, in milliseconds.
    pub last_check_ms_ago: Option<u64>,
    /// Since when it has been in its state, in milliseconds since the Unix epoch.
    pub state_since_unix_ms: u64,
    /// How long it has been in its state, in milliseconds.
    pub state_since_ms_ago: u64,
}

/// A circuit breaker's state in words.
fn breaker_words(state: BreakerState) -> &'static str {
    match state {
        BreakerState::Closed => "closed",
        BreakerState::Open => "open",
        BreakerState::HalfOpen => "half-open",
    }
}

/// A cache in a [`ServiceView`].
#[derive(Debug, Clone, Default, Serialize)]
pub struct CacheView {
    /// Reads answered from memory, percent of reads.
    pub memory_hit_pct: f64,
    /// Reads answered from disk, percent of reads.
    pub disk_hit_pct: f64,
    /// Both.
    pub hit_pct: f64,
    /// Entries in memory.
    pub memory_entries: u64,
    /// Entries on disk.
    pub disk_entries: u64,
    /// Loads from the origin.
    pub origin_loads: u64,
}

impl From<&Cache> for CacheView {
    fn from(c: &Cache) -> Self {
        let s = c.stats();
        let reads = (s.memory_hits + s.disk_hits + s.misses).max(1) as f64;
        Self {
            memory_hit_pct: s.memory_hits as f64 * 100.0 / reads,
            disk_hit_pct: s.disk_hits as f64 * 100.0 / reads,
            hit_pct: (s.memory_hits + s.disk_hits) as f64 * 100.0 / reads,
            memory_entries: s.memory.entries,
            disk_entries: s.disk.map_or(0, |d| d.entries),
            origin_loads: s.loads,
        }
    }
}

/// A scaling decision in a [`ServiceView`].
#[derive(Debug, Clone, Default, Serialize)]
pub struct DecisionView {
    /// When, in milliseconds since the Unix epoch.
    pub at_unix_ms: u64,
    /// scale up, scale down or hold.
    pub action: String,
    /// Instances then.
    pub from: usize,
    /// Instances wanted.
    pub to: usize,
    /// Why, in words.
    pub reason: String,
}

impl From<&tower_autoscale::Decision> for DecisionView {
    fn from(d: &tower_autoscale::Decision) -> Self {
        let metrics = d
            .proposals
            .iter()
            .map(|p| {
                format!(
                    "{} {:.1} vs target {} -> {}",
                    p.metric, p.value, p.target, p.instances
                )
            })
            .collect::<Vec<_>>()
            .join("; ");
        let rules = d
            .reasons
            .iter()
            .map(|r| r.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        Self {
            at_unix_ms: d.at_unix_ms,
            action: crate::orchestrator::action_words(&d.action).into(),
            from: d.current,
            to: d.desired,
            reason: if rules.is_empty() {
                metrics
            } else {
                format!("{metrics}; {rules}")
            },
        }
    }
}

/// A scaling action in the [`Overview`].
#[derive(Debug, Clone, Default, Serialize)]
pub struct ActionView {
    /// When, in milliseconds since the Unix epoch.
    pub at_unix_ms: u64,
    /// The service.
    pub service: String,
    /// autoscaler or manual.
    pub by: String,
    /// Instances before.
    pub from: usize,
    /// Asked for.
    pub to: usize,
    /// After.
    pub now: usize,
    /// What went wrong.
    pub error: Option<String>,
    /// The decision's reason, for the autoscaler's actions.
    pub reason: Option<String>,
}

#[cfg(test)]
mod tests {
    use tower_autoscale::{
        DecisionEngine, InstanceLoad, LoadSample, Metric, MetricTarget, ScalingPolicy,
    };

    use super::*;

    #[test]
    fn a_decisions_reason_is_words_not_debug_output() {
        let policy = ScalingPolicy {
            max_instances: 2,
            metrics: vec![MetricTarget::new(Metric::InFlight, 1.0)],
            panic: None,
            forecast: None,
            ..ScalingPolicy::default()
        };
        let engine = DecisionEngine::new();
        engine
            .add_service("svc", policy, || LoadSample {
                per_instance: vec![InstanceLoad::new("a").in_flight(9.0)],
                ..LoadSample::new(1)
            })
            .unwrap();
        let view = DecisionView::from(&engine.evaluate("svc").unwrap());
        assert_eq!(view.action, "scale up");
        assert!(
            view.reason.contains("in_flight 9.0 vs target 1"),
            "{}",
            view.reason
        );
        assert!(
            view.reason
                .contains("lowered to the maximum of 2 instances"),
            "{}",
            view.reason
        );
        for debug in ["ClampedTo", "{", "Some(", "Duration"] {
            assert!(!view.reason.contains(debug), "{}", view.reason);
        }
        assert_eq!(breaker_words(BreakerState::HalfOpen), "half-open");
    }

    #[test]
    fn an_instances_state_counts_from_its_last_change() {
        let mut c = StateClock::default();
        assert_eq!(c.since("t", "a", "starting", 100, 150), 100);
        assert_eq!(c.since("t", "a", "starting", 100, 900), 100);
        assert_eq!(c.since("t", "a", "ready", 100, 1_000), 1_000);
        assert_eq!(c.since("t", "a", "ready", 100, 5_000), 1_000);
        // A first sight in the future of the clock counts from now.
        assert_eq!(c.since("t", "b", "ready", 9_000, 5_000), 5_000);
        c.forget_others("t", &["b"]);
        assert_eq!(c.since("t", "a", "ready", 6_000, 6_000), 6_000);
        assert_eq!(c.since("t", "b", "ready", 0, 7_000), 5_000);
    }
}
