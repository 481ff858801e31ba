//! The manager and the control loop, with an in-memory scaler (the processes are tested
//! in the workspace's `tests` package), in paused time.
#![allow(missing_docs)]

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tower_autoscale::{
    AuditEntry, Autoscaler, DecisionEngine, InstanceLoad, Keep, LoadSample, Metric, MetricTarget,
    ScaleError, Scaler, ScalingManager, ScalingPolicy,
};

/// A scaler whose instances are a number; each `scale_to` is recorded.
#[derive(Clone, Default)]
struct Counter {
    n: Arc<AtomicUsize>,
    calls: Arc<AtomicUsize>,
}

impl Scaler for Counter {
    fn current(&self) -> usize {
        self.n.load(Ordering::SeqCst)
    }

    fn scale_to(
        &self,
        n: usize,
    ) -> Pin<Box<dyn Future<Output = Result<usize, ScaleError>> + Send + '_>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.n.store(n, Ordering::SeqCst);
        Box::pin(std::future::ready(Ok(n)))
    }
}

#[tokio::test(start_paused = true)]
async fn the_loop_evaluates_every_interval_acts_and_stops_cleanly() {
    let scaler = Counter::default();
    scaler.n.store(2, Ordering::SeqCst);
    // CPU load that needs 2 x 0.9 / 0.6 = 3 instances of work spread over the current ones.
    let s2 = scaler.clone();
    let source = move || {
        let n = s2.current();
        let per = 1.8 / n as f64;
        LoadSample {
            per_instance: (0..n)
                .map(|i| InstanceLoad::new(format!("i{i}")).cpu(per))
                .collect(),
            ..LoadSample::new(n)
        }
    };
    let engine = DecisionEngine::new();
    engine
        .add_service(
            "training",
            ScalingPolicy {
                metrics: vec![MetricTarget::new(Metric::Cpu, 0.6)],
                panic: None,
                forecast: None,
                max_instances: 8,
                ..Default::default()
            },
            source,
        )
        .unwrap();
    let decisions = Arc::new(AtomicUsize::new(0));
    let d2 = decisions.clone();
    engine.on_decision(move |_| {
        d2.fetch_add(1, Ordering::SeqCst);
    });
    let manager = ScalingManager::new(engine);
    manager.add_scaler("training", scaler.clone());
    let auto = Autoscaler::builder(manager.clone())
        .interval(Duration::from_secs(10))
        .spawn()
        .unwrap();
    // The first tick is at once; then every 10 s.
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert_eq!(scaler.current(), 3);
    tokio::time::sleep(Duration::from_secs(25)).await;
    assert_eq!(decisions.load(Ordering::SeqCst), 3);
    assert_eq!(scaler.current(), 3, "steady at the target: holds");
    assert_eq!(scaler.calls.load(Ordering::SeqCst), 1);
    auto.stop().await;
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(decisions.load(Ordering::SeqCst), 3, "stopped");
    let history = manager.history();
    assert!(matches!(history[0], AuditEntry::Decision(_)));
    assert!(matches!(
        history[1],
        AuditEntry::Action {
            from: 2,
            to: 3,
            now: 3,
            ..
        }
    ));
    let json: serde_json::Value = serde_json::from_str(&manager.history_json()).unwrap();
    assert_eq!(json[1]["entry"], "action");
    assert_eq!(json[1]["by"], "autoscaler");
    assert!(json[0]["proposals"][0]["metric"] == "cpu");
}

#[tokio::test(start_paused = true)]
async fn the_manager_never_goes_past_max() {
    let scaler = Counter::default();
    scaler.n.store(2, Ordering::SeqCst);
    let engine = DecisionEngine::new();
    engine
        .add_service(
            "s",
            ScalingPolicy {
                metrics: vec![MetricTarget::new(Metric::QueueDepth, 1.0)],
                panic: None,
                forecast: None,
                max_instances: 3,
                ..Default::default()
            },
            || LoadSample {
                waiting: Some(1e9),
                ..LoadSample::new(2)
            },
        )
        .unwrap();
    let manager = ScalingManager::new(engine);
    manager.add_scaler("s", scaler.clone());
    let d = manager.tick("s").await.unwrap();
    assert_eq!(d.desired, 3);
    assert_eq!(scaler.current(), 3);
    assert!(manager.scale_by("s", 1).await.is_err());
    assert_eq!(scaler.current(), 3);
    assert!(manager.tick("nope").await.is_none());
}

#[tokio::test(start_paused = true)]
async fn scaling_down_step_by_step_never_turns_into_a_scale_up() {
    // One instance per period down, in-flight gone: 4, 3, 2, 1, never back up.
    let scaler = Counter::default();
    scaler.n.store(4, Ordering::SeqCst);
    let s2 = scaler.clone();
    let engine = DecisionEngine::new();
    engine
        .add_service(
            "s",
            ScalingPolicy {
                metrics: vec![MetricTarget::new(Metric::InFlight, 2.0)],
                scale_down: tower_autoscale::ScalingRules {
                    stabilization_window: Duration::ZERO,
                    policies: vec![tower_autoscale::RatePolicy {
                        kind: tower_autoscale::RateKind::Instances,
                        value: 1,
                        period: Duration::from_secs(1),
                    }],
                    select: tower_autoscale::Select::Max,
                },
                panic: None,
                forecast: None,
                ..Default::default()
            },
            move || {
                let n = s2.current();
                LoadSample {
                    per_instance: (0..n)
                        .map(|i| InstanceLoad::new(format!("i{i}")).in_flight(0.0))
                        .collect(),
                    ..LoadSample::new(n)
                }
            },
        )
        .unwrap();
    let manager = ScalingManager::new(engine);
    manager.add_scaler("s", scaler.clone());
    let mut seen = vec![scaler.current()];
    for _ in 0..12 {
        manager.tick("s").await;
        seen.push(scaler.current());
        tokio::time::advance(Duration::from_millis(500)).await;
    }
    assert!(seen.windows(2).all(|w| w[1] <= w[0]), "{seen:?}");
    assert_eq!(*seen.last().unwrap(), 1, "{seen:?}");
}

/// The builders refuse settings that cannot work, naming the setting, before anything
/// starts: a zero interval, a command without `{port}`, a zero check interval, a
/// policy without instances.
#[tokio::test]
async fn builders_name_the_setting_that_cannot_work() {
    let manager = ScalingManager::new(DecisionEngine::new());
    let err = Autoscaler::builder(manager)
        .interval(Duration::ZERO)
        .spawn()
        .unwrap_err();
    assert_eq!(err.setting(), "interval");

    let no_port =
        tower_autoscale::ProcessScaler::builder("true", vec!["--port".into()], (4100, 4101))
            .start(|addr| addr)
            .unwrap_err();
    assert_eq!(no_port.setting(), "args");
    assert!(no_port.to_string().contains("{port}"), "{no_port}");
    let zero = tower_autoscale::ProcessScaler::builder("true", vec!["{port}".into()], (4100, 4101))
        .check_interval(Duration::ZERO)
        .start(|addr| addr)
        .unwrap_err();
    assert_eq!(zero.setting(), "check_interval");

    let policy = tower_autoscale::ScalingPolicy::builder()
        .min_instances(3)
        .max_instances(2)
        .build()
        .unwrap_err();
    assert_eq!(policy.setting(), "min_instances");
    assert!(
        policy.to_string().contains("above max_instances"),
        "{policy}"
    );
}

/// A manager over a counter scaler at `n` whose CPU load always asks for `wants`
/// instances, with no scale-down window or panic to slow a change.
fn wanting(n: usize, wants: usize) -> (ScalingManager, Counter) {
    let scaler = Counter::default();
    scaler.n.store(n, Ordering::SeqCst);
    let s2 = scaler.clone();
    let source = move || {
        let n = s2.current().max(1);
        let per = 0.6 * wants as f64 / n as f64;
        LoadSample {
            per_instance: (0..n)
                .map(|i| InstanceLoad::new(format!("i{i}")).cpu(per))
                .collect(),
            ..LoadSample::new(n)
        }
    };
    let engine = DecisionEngine::new();
    let mut policy = ScalingPolicy {
        metrics: vec![MetricTarget::new(Metric::Cpu, 0.6)],
        panic: None,
        forecast: None,
        max_instances: 8,
        ..Default::default()
    };
    policy.scale_down.stabilization_window = Duration::ZERO;
    engine.add_service("training", policy, source).unwrap();
    let manager = ScalingManager::new(engine);
    manager.add_scaler("training", scaler.clone());
    (manager, scaler)
}

#[tokio::test(start_paused = true)]
async fn a_manual_scale_up_holds_against_the_autoscaler_until_its_hold_ends() {
    let (manager, scaler) = wanting(1, 1);
    manager.set_manual_hold(Duration::from_secs(60));
    assert_eq!(manager.scale_by("training", 1).await.unwrap(), 2);
    let hold = manager.engine().manual_hold("training").unwrap();
    assert_eq!((hold.instances, hold.keep), (2, Keep::AtLeast));
    let d = manager.tick("training").await.unwrap();
    assert_eq!((d.desired, scaler.current()), (2, 2), "{d:?}");
    assert!(
        d.reasons
            .iter()
            .any(|r| r.to_string() == "a manual scale keeps at least 2 instances for 60 s more"),
        "{:?}",
        d.reasons
    );
    tokio::time::advance(Duration::from_secs(61)).await;
    assert_eq!(manager.engine().manual_hold("training"), None);
    let d = manager.tick("training").await.unwrap();
    assert_eq!((d.desired, scaler.current()), (1, 1), "{d:?}");
}

#[tokio::test(start_paused = true)]
async fn without_a_hold_the_autoscaler_reverts_a_manual_scale_at_once() {
    let (manager, scaler) = wanting(1, 1);
    manager.set_manual_hold(Duration::ZERO);
    assert_eq!(manager.scale_by("training", 1).await.unwrap(), 2);
    assert_eq!(manager.engine().manual_hold("training"), None);
    manager.tick("training").await.unwrap();
    assert_eq!(scaler.current(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_manual_scale_down_keeps_at_most_its_count_but_lets_fewer_through() {
    let (manager, scaler) = wanting(3, 3);
    assert_eq!(manager.manual_hold(), tower_autoscale::DEFAULT_MANUAL_HOLD);
    assert_eq!(manager.scale_by("training", -1).await.unwrap(), 2);
    let d = manager.tick("training").await.unwrap();
    assert_eq!((d.desired, scaler.current()), (2, 2), "{d:?}");
    let (manager, scaler) = wanting(3, 1);
    // A hold longer than the clock can count is no failure: it holds for decades.
    manager.set_manual_hold(Duration::MAX);
    assert_eq!(manager.scale_by("training", -1).await.unwrap(), 2);
    let hold = manager.engine().manual_hold("training").unwrap();
    let decades = u64::try_from(Duration::from_secs(86_400 * 365 * 29).as_millis()).unwrap();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    assert!(hold.until_unix_ms > now_ms + decades, "{hold:?}");
    assert_eq!(hold.keep, Keep::AtMost);
    manager.tick("training").await.unwrap();
    assert_eq!(
        scaler.current(),
        1,
        "fewer than a manual scale-down is allowed"
    );
}
