//! The decision engine against worked HPA examples, and its windows, limits and
//! policy errors (paused time).
#![allow(missing_docs)]

use std::time::Duration;

use tower_autoscale::{
    Action, DecisionEngine, InstanceLoad, LoadSample, Metric, MetricTarget, RateKind, RatePolicy,
    Reason, ScalingPolicy, ScalingRules, Select,
};

fn cpu_policy(target: f64) -> ScalingPolicy {
    ScalingPolicy {
        metrics: vec![MetricTarget::new(Metric::Cpu, target)],
        panic: None,
        forecast: None,
        max_instances: 100,
        ..Default::default()
    }
}

fn cpus(values: &[f64]) -> LoadSample {
    LoadSample {
        per_instance: values
            .iter()
            .enumerate()
            .map(|(i, v)| InstanceLoad::new(format!("i{i}")).cpu(*v))
            .collect(),
        ..LoadSample::new(values.len())
    }
}

fn engine(policy: ScalingPolicy) -> DecisionEngine {
    let e = DecisionEngine::new();
    e.add_service("s", policy, || LoadSample::new(0)).unwrap();
    e
}

fn has(reasons: &[Reason], f: impl Fn(&Reason) -> bool) -> bool {
    reasons.iter().any(f)
}

#[tokio::test(start_paused = true)]
async fn worked_hpa_examples() {
    // 3 at 90% with a 60% target: ceil(3 x 1.5) = 5.
    let e = engine(cpu_policy(0.6));
    let d = e.evaluate_sample("s", &cpus(&[0.9, 0.9, 0.9])).unwrap();
    assert_eq!((d.desired, d.action), (5, Action::ScaleUp(2)));
    // The Kubernetes docs' example: target 50%, current 200% of 1 pod... here 4 at
    // 100% with target 50%: ceil(4 x 2) = 8.
    let e = engine(cpu_policy(0.5));
    let d = e.evaluate_sample("s", &cpus(&[1.0; 4])).unwrap();
    assert_eq!(d.desired, 8);
    // Within tolerance: 3 at 65% with a 60% target (ratio 1.083): hold.
    let e = engine(cpu_policy(0.6));
    let d = e.evaluate_sample("s", &cpus(&[0.65; 3])).unwrap();
    assert_eq!(d.action, Action::Hold);
    assert!(has(&d.reasons, |r| matches!(
        r,
        Reason::WithinTolerance { .. }
    )));
    // Just past it: 3 at 67% (ratio 1.117): ceil(3.35) = 4.
    let d = e.evaluate_sample("s", &cpus(&[0.67; 3])).unwrap();
    assert_eq!(d.desired, 4);
}

#[tokio::test(start_paused = true)]
async fn unready_and_missing_instances_follow_the_hpa_rules() {
    // 2 ready at 90%, 1 not ready: scale-up counts the unready one at 0:
    // avg (0.9 + 0.9 + 0) / 3 = 0.6 / 0.5 = 1.2 -> ceil(1.2 x 3) = 4.
    let e = engine(cpu_policy(0.5));
    let mut s = cpus(&[0.9, 0.9, 0.2]);
    s.per_instance[2].ready = false;
    let d = e.evaluate_sample("s", &s).unwrap();
    assert_eq!(d.desired, 4);
    assert!(has(&d.reasons, |r| matches!(
        r,
        Reason::InstancesIgnored { count: 1, .. }
    )));
    // The same with the unready one making the direction unsure: 2 ready at 55%, 1
    // unready: 1.1 -> (0.55+0.55+0)/3/0.5 = 0.733: flipped, so hold.
    let mut s = cpus(&[0.55, 0.55, 0.0]);
    s.per_instance[2].ready = false;
    let d = e.evaluate_sample("s", &s).unwrap();
    assert_eq!(d.action, Action::Hold);
    assert!(has(&d.reasons, |r| matches!(
        r,
        Reason::UnsureDirection { .. }
    )));
    // Missing instances (4 running, numbers for 2) on a scale-down count at the target:
    // (0.1 + 0.1 + 0.5 + 0.5) / 4 / 0.5 = 0.6 -> ceil(0.6 x 4) = 3 (no down window).
    let mut p = cpu_policy(0.5);
    p.scale_down.stabilization_window = Duration::ZERO;
    let e = engine(p);
    let mut s = cpus(&[0.1, 0.1]);
    s.instances = 4;
    let d = e.evaluate_sample("s", &s).unwrap();
    assert_eq!(d.desired, 3);
    assert!(has(&d.reasons, |r| matches!(
        r,
        Reason::MissingInstancesAssumed { count: 2, .. }
    )));
    // Warming-up instances are left out like unready ones.
    let mut s = cpus(&[0.9, 0.9, 0.0]);
    s.per_instance[2].warming_up = true;
    let d = e.evaluate_sample("s", &s).unwrap();
    assert!(has(&d.reasons, |r| matches!(
        r,
        Reason::InstancesIgnored { count: 1, .. }
    )));
}

#[tokio::test(start_paused = true)]
async fn the_largest_proposal_wins_and_missing_metrics_are_said() {
    let policy = ScalingPolicy {
        metrics: vec![
            MetricTarget::new(Metric::Cpu, 0.6),
            MetricTarget::new(Metric::QueueDepth, 10.0),
            MetricTarget::new(Metric::P99Ms, 500.0),
        ],
        panic: None,
        forecast: None,
        ..Default::default()
    };
    let e = engine(policy);
    let mut s = cpus(&[0.6, 0.6]);
    s.waiting = Some(30.0); // 3x the target, at most doubling: 4
    let d = e.evaluate_sample("s", &s).unwrap();
    assert_eq!(d.desired, 4);
    assert!(has(&d.reasons, |r| matches!(
        r,
        Reason::MetricMissing {
            metric: Metric::P99Ms
        }
    )));
    // An empty queue and a fast p99 never shrink a service.
    let mut s = cpus(&[0.6, 0.6]);
    s.waiting = Some(0.0);
    s.p99 = Some(Duration::from_millis(5));
    let d = e.evaluate_sample("s", &s).unwrap();
    assert_eq!(d.action, Action::Hold);
    // Nothing known at all: hold, with a reason.
    let d = e.evaluate_sample("s", &LoadSample::new(2)).unwrap();
    assert_eq!(d.action, Action::Hold);
    assert!(has(&d.reasons, |r| matches!(r, Reason::NoMetrics)));
}

#[tokio::test(start_paused = true)]
async fn the_down_window_keeps_the_highest_recent_recommendation() {
    let mut p = cpu_policy(0.5);
    p.scale_down.stabilization_window = Duration::from_secs(300);
    let e = engine(p);
    // Load needing 6 of 6, then a dip: the window keeps 6 for 300 s.
    assert_eq!(e.evaluate_sample("s", &cpus(&[0.5; 6])).unwrap().desired, 6);
    tokio::time::advance(Duration::from_secs(60)).await;
    let d = e.evaluate_sample("s", &cpus(&[0.1; 6])).unwrap();
    assert_eq!(d.desired, 6);
    assert!(has(&d.reasons, |r| matches!(
        r,
        Reason::StabilizedDown {
            recommended: 2,
            allowed: 6,
            ..
        }
    )));
    tokio::time::advance(Duration::from_secs(241)).await;
    let d = e.evaluate_sample("s", &cpus(&[0.1; 6])).unwrap();
    assert_eq!(d.desired, 2, "{:?}", d.reasons);
}

#[tokio::test(start_paused = true)]
async fn a_fresh_engine_does_not_shrink_a_service_before_its_down_window_saw_it() {
    let e = engine(cpu_policy(0.5));
    // Idle at once: the HPA would go from 6 to 1 at its first evaluation.
    let d = e.evaluate_sample("s", &cpus(&[0.05; 6])).unwrap();
    assert_eq!(d.action, Action::Hold, "{:?}", d.reasons);
    tokio::time::advance(Duration::from_secs(301)).await;
    let d = e.evaluate_sample("s", &cpus(&[0.05; 6])).unwrap();
    assert_eq!(d.desired, 1);
}

#[tokio::test(start_paused = true)]
async fn rate_policies_limit_each_period() {
    // Default scale-up: max(100%, 4 instances) per 15 s. From 2 wanting 20: 6.
    let e = engine(cpu_policy(0.1));
    let d = e.evaluate_sample("s", &cpus(&[1.0, 1.0])).unwrap();
    assert_eq!(d.desired, 6);
    assert!(has(&d.reasons, |r| matches!(
        r,
        Reason::RateLimited {
            direction: "scale_up",
            limit: 6
        }
    )));
    // Within the same period, the 4 already added count: from 6, start 2 -> still 6.
    let d = e.evaluate_sample("s", &cpus(&[1.0; 6])).unwrap();
    assert_eq!(d.desired, 6, "{:?}", d.reasons);
    // After the period: from 6, max(12, 10) = 12.
    tokio::time::advance(Duration::from_secs(16)).await;
    let d = e.evaluate_sample("s", &cpus(&[1.0; 6])).unwrap();
    assert_eq!(d.desired, 12);
    // Select::Min picks the smaller: min(100% -> 4, 1 instance -> 3) = 3 from 2.
    let mut p = cpu_policy(0.1);
    p.scale_up = ScalingRules {
        stabilization_window: Duration::ZERO,
        policies: vec![
            RatePolicy {
                kind: RateKind::Percent,
                value: 100,
                period: Duration::from_secs(15),
            },
            RatePolicy {
                kind: RateKind::Instances,
                value: 1,
                period: Duration::from_secs(15),
            },
        ],
        select: Select::Min,
    };
    let e = engine(p);
    assert_eq!(
        e.evaluate_sample("s", &cpus(&[1.0, 1.0])).unwrap().desired,
        3
    );
    // Scale-down limited to 1 instance per minute; disabled scale-up holds.
    let mut p = cpu_policy(0.5);
    p.scale_down = ScalingRules {
        stabilization_window: Duration::ZERO,
        policies: vec![RatePolicy {
            kind: RateKind::Instances,
            value: 1,
            period: Duration::from_secs(60),
        }],
        select: Select::Max,
    };
    p.scale_up.select = Select::Disabled;
    let e = engine(p);
    assert_eq!(
        e.evaluate_sample("s", &cpus(&[0.05; 5])).unwrap().desired,
        4
    );
    let d = e.evaluate_sample("s", &cpus(&[0.05; 4])).unwrap();
    assert_eq!(d.desired, 4, "one per minute: {:?}", d.reasons);
    let d = e.evaluate_sample("s", &cpus(&[1.0; 4])).unwrap();
    assert_eq!(d.action, Action::Hold);
    assert!(has(&d.reasons, |r| matches!(
        r,
        Reason::DirectionDisabled {
            direction: "scale_up"
        }
    )));
}

#[tokio::test(start_paused = true)]
async fn never_above_max_or_below_min() {
    let mut p = cpu_policy(0.01);
    p.max_instances = 7;
    p.min_instances = 2;
    p.scale_up.policies = vec![RatePolicy {
        kind: RateKind::Instances,
        value: 1000,
        period: Duration::from_secs(1),
    }];
    p.scale_down.stabilization_window = Duration::ZERO;
    let e = engine(p);
    let d = e.evaluate_sample("s", &cpus(&[1.0; 3])).unwrap();
    assert_eq!(d.desired, 7);
    assert!(has(&d.reasons, |r| matches!(
        r,
        Reason::ClampedToMax { max: 7 }
    )));
    // Even when a source reports more running than max.
    let d = e.evaluate_sample("s", &cpus(&[1.0; 12])).unwrap();
    assert_eq!((d.desired, d.action), (7, Action::ScaleDown(5)));
    let d = e.evaluate_sample("s", &cpus(&[0.0; 3])).unwrap();
    assert_eq!(d.desired, 2);
    assert!(has(&d.reasons, |r| matches!(
        r,
        Reason::ClampedToMin { min: 2 }
    )));
}

#[tokio::test(start_paused = true)]
async fn panic_scales_up_at_once_and_blocks_scale_down() {
    let mut p = cpu_policy(0.5);
    p.panic = Some(Default::default());
    p.scale_up.policies = vec![RatePolicy {
        kind: RateKind::Instances,
        value: 1,
        period: Duration::from_secs(60),
    }];
    p.scale_down.stabilization_window = Duration::ZERO;
    let e = engine(p);
    // 2 at 100% with a 50% target: ratio 2.0, panic: to 4 at once despite 1/min.
    let d = e.evaluate_sample("s", &cpus(&[1.0, 1.0])).unwrap();
    assert_eq!(d.desired, 4, "{:?}", d.reasons);
    assert!(has(&d.reasons, |r| matches!(r, Reason::Panic { .. })));
    // Load drops: no scale-down for the hold time (60 s).
    tokio::time::advance(Duration::from_secs(30)).await;
    let d = e.evaluate_sample("s", &cpus(&[0.1; 4])).unwrap();
    assert_eq!(d.action, Action::Hold);
    assert!(has(&d.reasons, |r| matches!(
        r,
        Reason::PanicBlocksScaleDown { .. }
    )));
    tokio::time::advance(Duration::from_secs(31)).await;
    let d = e.evaluate_sample("s", &cpus(&[0.1; 4])).unwrap();
    assert_eq!(d.action, Action::ScaleDown(3), "{:?}", d.reasons);
}

#[tokio::test(start_paused = true)]
async fn the_forecast_only_raises_the_floor() {
    let mut p = cpu_policy(0.5);
    p.forecast = Some(Default::default());
    let e = engine(p);
    // Throughput rising 100/s per evaluation at a steady 50% per instance (in target).
    let mut last = None;
    for step in 1..=6 {
        let mut s = cpus(&[0.5, 0.5]);
        s.throughput = Some(100.0 * f64::from(step));
        last = Some(e.evaluate_sample("s", &s).unwrap());
        tokio::time::advance(Duration::from_secs(10)).await;
    }
    let d = last.unwrap();
    assert!(
        d.desired > 2,
        "a rising trend scales ahead: {:?}",
        d.reasons
    );
    assert!(has(&d.reasons, |r| matches!(r, Reason::Forecast { .. })));
    let (load, n) = e.predict_load_needed("s", 3).unwrap();
    assert!(load > 600.0 && n >= 3, "{load} {n}");
    // A falling trend never lowers the reactive answer.
    let mut p = cpu_policy(0.5);
    p.forecast = Some(Default::default());
    let e = engine(p);
    for step in (1..=6).rev() {
        let mut s = cpus(&[0.5, 0.5]);
        s.throughput = Some(100.0 * f64::from(step));
        let d = e.evaluate_sample("s", &s).unwrap();
        assert_eq!(d.action, Action::Hold);
    }
}

#[tokio::test(start_paused = true)]
async fn dry_run_hooks_history_and_json() {
    let e = DecisionEngine::new().dry_run();
    e.add_service("s", cpu_policy(0.6), || cpus(&[0.9, 0.9, 0.9]))
        .unwrap();
    let seen = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let s2 = seen.clone();
    e.on_decision(move |d| {
        assert_eq!(d.service, "s");
        s2.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    });
    let d = e.evaluate("s").unwrap();
    assert_eq!(d.desired, 5);
    assert!(has(&d.reasons, |r| matches!(r, Reason::DryRun)));
    // A dry run records no scale event: the next evaluation is not rate limited.
    let d = e.evaluate("s").unwrap();
    assert_eq!(d.desired, 5);
    assert_eq!(seen.load(std::sync::atomic::Ordering::SeqCst), 2);
    assert_eq!(e.history("s").len(), 2);
    let json = serde_json::to_value(&d).unwrap();
    assert_eq!(json["action"]["kind"], "scale_up");
    assert_eq!(json["action"]["by"], 2);
    assert_eq!(json["proposals"][0]["metric"], "cpu");
    assert!(e.evaluate("nope").is_err());
}

#[test]
fn policies_are_checked_and_read_from_toml_and_json() {
    let bad = |p: ScalingPolicy, want: &str| {
        let e = p.validated().unwrap_err();
        assert!(e.to_string().contains(want), "{e}");
    };
    bad(
        ScalingPolicy {
            min_instances: 5,
            max_instances: 2,
            ..Default::default()
        },
        "min_instances (5) is above max_instances (2)",
    );
    bad(
        ScalingPolicy {
            max_instances: 0,
            min_instances: 0,
            ..Default::default()
        },
        "max_instances is 0",
    );
    bad(
        ScalingPolicy {
            metrics: vec![MetricTarget::new(Metric::Cpu, 0.0)],
            ..Default::default()
        },
        "metrics.cpu: target 0",
    );
    bad(
        ScalingPolicy {
            metrics: vec![MetricTarget::new(Metric::Cpu, f64::NAN)],
            ..Default::default()
        },
        "metrics.cpu: target NaN",
    );
    bad(
        ScalingPolicy {
            tolerance: 1.5,
            ..Default::default()
        },
        "tolerance",
    );
    bad(
        ScalingPolicy {
            metrics: vec![MetricTarget {
                metric: Metric::Cpu,
                target: 0.5,
                scale_down_below: Some(0.6),
            }],
            ..Default::default()
        },
        "scale_down_below 0.6",
    );
    bad(
        ScalingPolicy {
            metrics: vec![
                MetricTarget::new(Metric::Cpu, 0.5),
                MetricTarget::new(Metric::Cpu, 0.6),
            ],
            ..Default::default()
        },
        "given twice",
    );
    let mut p = ScalingPolicy::default();
    p.scale_up.policies[0].value = 0;
    bad(p, "a value of 0");
    let mut p = ScalingPolicy::default();
    p.scale_down.policies.clear();
    bad(p, "scale_down.policies is empty");
    bad(
        ScalingPolicy {
            panic: Some(tower_autoscale::PanicWindow {
                threshold: 0.5,
                hold: Duration::ZERO,
            }),
            ..Default::default()
        },
        "panic.threshold",
    );
    assert!(ScalingPolicy::default().validated().is_ok());
    // The engine refuses a bad policy too.
    let e = DecisionEngine::new();
    assert!(e
        .add_service(
            "x",
            ScalingPolicy {
                max_instances: 0,
                min_instances: 0,
                ..Default::default()
            },
            || LoadSample::new(1)
        )
        .is_err());

    let p: ScalingPolicy = toml::from_str(
        r#"
        min_instances = 2
        max_instances = 6
        tolerance = 0.05
        metrics = [ { metric = "cpu", target = 0.6, scale_down_below = 0.3 }, { metric = "p99_ms", target = 250 } ]
        [scale_down]
        stabilization_window = 120
        [scale_up]
        select = "min"
        "#,
    )
    .unwrap();
    let p = p.validated().unwrap();
    assert_eq!(
        (p.min_instances, p.max_instances, p.tolerance),
        (2, 6, 0.05)
    );
    assert_eq!(p.scale_down.stabilization_window, Duration::from_secs(120));
    assert_eq!(
        p.scale_down.policies,
        ScalingRules::scale_down_default().policies
    );
    assert_eq!(p.scale_up.select, Select::Min);
    assert_eq!(p.metrics[1].metric, Metric::P99Ms);
    // Unknown fields and bad durations are errors that name them.
    let e = toml::from_str::<ScalingPolicy>("max_instance = 3").unwrap_err();
    assert!(e.to_string().contains("max_instance"), "{e}");
    let e = serde_json::from_str::<ScalingPolicy>(r#"{"warm_up": -1}"#).unwrap_err();
    assert!(e.to_string().contains("not a duration"), "{e}");
    // JSON round trip.
    let json = serde_json::to_string(&p).unwrap();
    let back: ScalingPolicy = serde_json::from_str(&json).unwrap();
    assert_eq!(back, p);
}

#[tokio::test]
async fn the_balancer_the_monitor_and_the_cache_are_load_sources() {
    use tower::ServiceExt;
    use tower_autoscale::LoadSource;
    let endpoint = |n: u32| {
        tower::service_fn(move |_: ()| async move { Ok::<_, std::convert::Infallible>(n) })
    };
    let b = tower_balance_ext::BalancerBuilder::new(tower_balance_ext::Pick::RoundRobin)
        .build(tower_balance_ext::discover::fixed([
            (1u32, endpoint(1)),
            (2, endpoint(2)),
        ]))
        .unwrap();
    while b.endpoints().len() < 2 {
        tokio::task::yield_now().await;
    }
    for _ in 0..10 {
        b.clone().oneshot(()).await.unwrap();
    }
    let s = b.stats().sample();
    assert_eq!(s.instances, 2);
    assert_eq!(s.in_flight, Some(0.0));
    assert_eq!(s.waiting, Some(0.0));
    assert_eq!(s.error_rate, Some(0.0));
    assert!(s
        .per_instance
        .iter()
        .all(|i| i.ready && i.in_flight == Some(0.0)));
    // A monitor with a target it cannot reach yet: one instance, not ready.
    let monitor = tower_health::HealthMonitor::new();
    monitor
        .register(tower_health::Target::new("a", "127.0.0.1:1"))
        .unwrap();
    let m = monitor.sample();
    assert_eq!((m.instances, m.per_instance[0].ready), (1, false));
    // A cache (feature `cache`): its hit ratio; combined, the first source's numbers win.
    #[cfg(feature = "cache")]
    {
        let cache = tower_cache::Cache::new(tower_cache::MemoryTier::builder().build().unwrap());
        let _ = cache.get("x").await;
        let c = cache.sample();
        assert_eq!(c.hit_ratio, Some(0.0));
        let all = s.clone().or(c).or(m);
        assert_eq!(
            (all.instances, all.hit_ratio, all.in_flight),
            (2, Some(0.0), Some(0.0))
        );
    }
    #[cfg(not(feature = "cache"))]
    {
        let all = s.clone().or(m);
        assert_eq!((all.instances, all.in_flight), (2, Some(0.0)));
    }
}

#[tokio::test(start_paused = true)]
async fn garbage_values_count_as_missing_not_as_load() {
    let mut p = cpu_policy(0.5);
    p.metrics.push(MetricTarget::new(Metric::QueueDepth, 10.0));
    p.scale_down.stabilization_window = Duration::ZERO;
    let e = engine(p);
    let mut s = cpus(&[f64::NAN, -1.0, f64::INFINITY]);
    s.waiting = Some(f64::NAN);
    s.throughput = Some(f64::INFINITY);
    let d = e.evaluate_sample("s", &s).unwrap();
    assert_eq!(d.action, Action::Hold, "{:?}", d.reasons);
    assert!(has(&d.reasons, |r| matches!(
        r,
        Reason::MetricMissing {
            metric: Metric::Cpu
        }
    )));
    assert!(has(&d.reasons, |r| matches!(
        r,
        Reason::MetricMissing {
            metric: Metric::QueueDepth
        }
    )));
}

/// A ready instance whose value is NaN, infinite or negative is a missing instance, as
/// the HPA treats a pod without metrics: assumed at the target on a scale-down (so the
/// shrink is smaller) and at 0 on a scale-up, with the reasons said.
#[tokio::test(start_paused = true)]
async fn an_unusable_value_makes_its_instance_missing_as_in_the_hpa() {
    for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -0.5] {
        // Five at 30% and one unusable, target 60%: the HPA assumes the sixth at 60%,
        // (5 x 0.3 + 0.6) / 6 / 0.6 = 0.583, ceil(0.583 x 6) = 4 (not ceil(0.5 x 5) = 3).
        let mut p = cpu_policy(0.6);
        p.scale_down.stabilization_window = Duration::ZERO;
        let e = engine(p);
        let mut s = cpus(&[0.3, 0.3, 0.3, 0.3, 0.3, bad]);
        let first = e.evaluate_sample("s", &s).unwrap();
        assert_eq!(
            first.proposals[0].instances, 4,
            "{bad}: {:?}",
            first.reasons
        );
        assert!(has(&first.reasons, |r| matches!(
            r,
            Reason::UnusableValues {
                metric: Metric::Cpu,
                count: 1
            }
        )));
        assert!(has(&first.reasons, |r| matches!(
            r,
            Reason::MissingInstancesAssumed {
                metric: Metric::Cpu,
                count: 1
            }
        )));
        // On a scale-up the unusable one counts at 0: five at 90% and one unusable,
        // (5 x 0.9 + 0) / 6 / 0.6 = 1.25, ceil(1.25 x 6) = 8.
        s = cpus(&[0.9, 0.9, 0.9, 0.9, 0.9, bad]);
        let d = e.evaluate_sample("s", &s).unwrap();
        assert_eq!(d.proposals[0].instances, 8, "{bad}: {:?}", d.reasons);
        // Never a scale to the minimum.
        s = cpus(&[0.6, 0.6, 0.6, 0.6, 0.6, bad]);
        let d = e.evaluate_sample("s", &s).unwrap();
        assert_eq!(d.desired, 6, "{bad}: {:?}", d.reasons);
    }
}

/// The forecast has hysteresis: one noisy rise of throughput (CPU in target) adds no
/// instance; a rise that persists for three evaluations does.
#[tokio::test(start_paused = true)]
async fn a_forecast_acts_only_on_a_rise_that_persists_beyond_the_band() {
    let mut p = cpu_policy(0.5);
    p.forecast = Some(Default::default());
    let e = engine(p);
    for tp in [
        400.0, 400.0, 400.0, 400.0, 520.0, 400.0, 400.0, 560.0, 400.0,
    ] {
        let mut s = cpus(&[0.5, 0.5, 0.5, 0.5]);
        s.throughput = Some(tp);
        let d = e.evaluate_sample("s", &s).unwrap();
        assert_eq!(d.action, Action::Hold, "{tp}: {:?}", d.reasons);
        assert!(!has(&d.reasons, |r| matches!(r, Reason::Forecast { .. })));
        tokio::time::advance(Duration::from_secs(15)).await;
    }
}

/// After a scale-down, a burst of queue depth (a scale-up-only metric) below the panic
/// threshold does not reverse it within the down window; one at the threshold does.
#[tokio::test(start_paused = true)]
async fn no_reversal_on_a_queue_burst_within_the_down_window() {
    let mut p = cpu_policy(0.5);
    p.metrics.push(MetricTarget::new(Metric::QueueDepth, 10.0));
    p.scale_down.stabilization_window = Duration::from_secs(60);
    p.panic = Some(Default::default());
    let e = engine(p);
    let mut s = cpus(&[0.5; 4]);
    e.evaluate_sample("s", &s).unwrap();
    tokio::time::advance(Duration::from_secs(61)).await;
    s = cpus(&[0.2; 4]);
    let d = e.evaluate_sample("s", &s).unwrap();
    assert!(matches!(d.action, Action::ScaleDown(_)), "{:?}", d.reasons);
    tokio::time::advance(Duration::from_secs(15)).await;
    let mut s = cpus(&vec![0.5; d.desired]);
    s.waiting = Some(15.0);
    let held = e.evaluate_sample("s", &s).unwrap();
    assert_eq!(held.action, Action::Hold, "{:?}", held.reasons);
    s.waiting = Some(25.0);
    let surge = e.evaluate_sample("s", &s).unwrap();
    assert!(
        matches!(surge.action, Action::ScaleUp(_)),
        "{:?}",
        surge.reasons
    );
}

/// Reasons, actions and instance states read as words (no `Debug` forms), and a
/// decision's reasons serialize with their tag, fields and words.
#[test]
fn reasons_actions_and_states_read_as_plain_words() {
    use tower_autoscale::InstanceState;

    let policy = ScalingPolicy {
        min_instances: 1,
        max_instances: 2,
        metrics: vec![MetricTarget::new(Metric::Cpu, 0.1)],
        panic: None,
        forecast: None,
        ..Default::default()
    };
    let engine = DecisionEngine::new();
    engine
        .add_service("svc", policy, || LoadSample {
            per_instance: vec![InstanceLoad::new("a").cpu(0.99)],
            ..LoadSample::new(1)
        })
        .unwrap();
    let d = engine.evaluate("svc").unwrap();
    assert!(
        d.reasons.contains(&Reason::ClampedToMax { max: 2 }),
        "{:?}",
        d.reasons
    );
    let words: Vec<String> = d.reasons.iter().map(ToString::to_string).collect();
    assert!(words.contains(&"lowered to the maximum of 2 instances".to_string()));
    for w in &words {
        assert!(!w.contains('{') && !w.contains("Some("), "{w}");
    }
    assert_eq!(d.action.to_string(), "scale up by 1");
    let json = serde_json::to_value(&d).unwrap();
    let clamp = json["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["reason"] == "clamped_to_max")
        .unwrap();
    assert_eq!(clamp["max"], 2);
    assert_eq!(clamp["text"], "lowered to the maximum of 2 instances");

    assert_eq!(
        InstanceState::CrashLoopBackOff.to_string(),
        "crash loop back-off"
    );
    assert_eq!(
        serde_json::to_value(InstanceState::CrashLoopBackOff).unwrap(),
        "crash_loop_back_off"
    );
    let rate = Reason::RateLimited {
        direction: "scale_up",
        limit: 3,
    };
    assert_eq!(
        rate.to_string(),
        "rate limit for scaling up: 3 instances for now"
    );
    assert_eq!(
        Reason::MetricMissing {
            metric: Metric::InFlight
        }
        .to_string(),
        "in_flight: no usable value in the sample, left out"
    );
}
