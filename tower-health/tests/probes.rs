//! Probes on a paused clock: startup gating, thresholds both ways, timeouts, readiness.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tower_health::{Probe, ProbeState, Probes};

const P: Duration = Duration::from_secs(1);

/// A check whose outcome the test flips, counting its calls.
#[derive(Clone, Default)]
struct Switch {
    ok: Arc<AtomicBool>,
    calls: Arc<AtomicUsize>,
}

impl Switch {
    fn new(ok: bool) -> Self {
        let s = Self::default();
        s.set(ok);
        s
    }
    fn set(&self, ok: bool) {
        self.ok.store(ok, Ordering::SeqCst);
    }
    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
    fn check(&self) -> impl Fn() -> std::future::Ready<Result<(), String>> + Send + Sync + 'static {
        let s = self.clone();
        move || {
            s.calls.fetch_add(1, Ordering::SeqCst);
            std::future::ready(if s.ok.load(Ordering::SeqCst) {
                Ok(())
            } else {
                Err("switched off".to_string())
            })
        }
    }
}

/// Lets every probe task run its due checks.
async fn tick(n: u32) {
    for _ in 0..n {
        tokio::time::sleep(P).await;
    }
    tokio::task::yield_now().await;
}

#[tokio::test(start_paused = true)]
async fn readiness_and_liveness_wait_for_startup() {
    let startup = Switch::new(false);
    let ready = Switch::new(true);
    let live = Switch::new(true);
    let probes = Probes::new();
    probes
        .register(Probe::startup("init", startup.check()).period(P))
        .unwrap();
    probes
        .register(Probe::readiness("db", ready.check()).period(P))
        .unwrap();
    probes
        .register(Probe::liveness("loop", live.check()).period(P))
        .unwrap();
    probes.start();
    tick(5).await;
    assert!(startup.calls() >= 5);
    assert_eq!(
        ready.calls(),
        0,
        "readiness must not run before startup passes"
    );
    assert_eq!(
        live.calls(),
        0,
        "liveness must not run before startup passes"
    );
    let s = probes.status();
    assert!(!s.started && !s.ready);

    startup.set(true);
    tick(2).await;
    let s = probes.status();
    assert!(s.started && s.ready && s.live, "{s:?}");
    assert!(ready.calls() >= 1 && live.calls() >= 1);
    let calls = startup.calls();
    tick(3).await;
    assert_eq!(
        startup.calls(),
        calls,
        "a startup probe stops once it has passed"
    );
}

#[tokio::test(start_paused = true)]
async fn thresholds_apply_in_both_directions() {
    let db = Switch::new(true);
    let probes = Probes::new();
    probes
        .register(
            Probe::readiness("db", db.check())
                .period(P)
                .failure_threshold(3)
                .success_threshold(2),
        )
        .unwrap();
    probes.start();
    tokio::task::yield_now().await;
    tick(1).await;
    assert_eq!(
        probes.probe_status("db").unwrap().state,
        ProbeState::Passing
    );

    db.set(false);
    tick(2).await;
    let s = probes.probe_status("db").unwrap();
    assert_eq!(
        s.state,
        ProbeState::Passing,
        "two failures are below the threshold of 3"
    );
    assert_eq!(s.consecutive_failures, 2);
    assert!(probes.status().ready);
    tick(1).await;
    let s = probes.probe_status("db").unwrap();
    assert_eq!(s.state, ProbeState::Failing);
    assert_eq!(s.message.as_deref(), Some("switched off"));
    assert!(!probes.status().ready);

    db.set(true);
    tick(1).await;
    assert_eq!(
        probes.probe_status("db").unwrap().state,
        ProbeState::Failing,
        "one success is below 2"
    );
    tick(1).await;
    let s = probes.probe_status("db").unwrap();
    assert_eq!(s.state, ProbeState::Passing);
    assert_eq!(s.message, None);
    assert!(probes.status().ready);
}

#[tokio::test(start_paused = true)]
async fn a_failing_liveness_probe_makes_the_service_not_live() {
    let live = Switch::new(true);
    let probes = Probes::new();
    probes
        .register(
            Probe::liveness("loop", live.check())
                .period(P)
                .failure_threshold(2),
        )
        .unwrap();
    probes.start();
    tick(1).await;
    assert!(probes.status().live);
    live.set(false);
    tick(3).await;
    assert!(!probes.status().live);
    assert!(probes.status().ready, "liveness does not decide readiness");
}

#[tokio::test(start_paused = true)]
async fn a_check_that_hangs_fails_by_its_timeout() {
    let probes = Probes::new();
    probes
        .register(
            Probe::readiness("stuck", std::future::pending::<Result<(), String>>)
                .period(P)
                .timeout(Duration::from_millis(200))
                .failure_threshold(1),
        )
        .unwrap();
    probes.start();
    tick(1).await;
    let s = probes.probe_status("stuck").unwrap();
    assert_eq!(s.state, ProbeState::Failing);
    assert!(s.message.unwrap().contains("timed out"));
}

#[tokio::test(start_paused = true)]
async fn a_period_shorter_than_the_default_timeout_bounds_the_check() {
    // No timeout given: the default (500 ms) is capped at the period, so a 100 ms period
    // is accepted (it was refused as "timeout longer than the period") and a check that
    // hangs fails within it.
    let probes = Probes::new();
    probes
        .register(
            Probe::readiness("quick", std::future::pending::<Result<(), String>>)
                .period(Duration::from_millis(100))
                .failure_threshold(1),
        )
        .unwrap();
    probes.start();
    for _ in 0..4 {
        tokio::time::advance(Duration::from_millis(50)).await;
        tokio::task::yield_now().await;
    }
    let s = probes.probe_status("quick").unwrap();
    assert_eq!(s.state, ProbeState::Failing);
    assert!(s.message.unwrap().contains("timed out after 100ms"));
}

#[tokio::test(start_paused = true)]
async fn wait_for_ready_names_the_failing_probes() {
    let probes = Probes::new();
    probes
        .register(Probe::readiness("db", || async { Err::<(), _>("connection refused") }).period(P))
        .unwrap();
    probes
        .register(Probe::readiness("cache", || async { Ok::<_, String>(()) }).period(P))
        .unwrap();
    probes.start();
    let err = probes
        .wait_for_ready(Duration::from_secs(5))
        .await
        .unwrap_err();
    assert_eq!(err.failing(), ["db (connection refused)"]);
    assert!(err.to_string().contains("db (connection refused)"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn wait_for_ready_returns_once_ready() {
    let db = Switch::new(false);
    let probes = Probes::new();
    probes
        .register(Probe::readiness("db", db.check()).period(P))
        .unwrap();
    probes.start();
    let waiter = tokio::spawn({
        let probes = probes.clone();
        async move { probes.wait_for_ready(Duration::from_secs(30)).await }
    });
    tick(3).await;
    db.set(true);
    waiter.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn draining_turns_readiness_off_and_back() {
    let probes = Probes::new();
    let mut rx = probes.ready_watch();
    assert!(*rx.borrow_and_update());
    probes.set_draining(true);
    assert!(rx.has_changed().unwrap(), "the watch is told");
    assert!(!*rx.borrow_and_update());
    assert!(probes.status().draining);
    probes.set_draining(false);
    assert!(*rx.borrow_and_update());
}

#[tokio::test(start_paused = true)]
async fn probes_registered_after_start_run_too() {
    let probes = Probes::new();
    probes.start();
    let late = Switch::new(true);
    probes
        .register(Probe::readiness("late", late.check()).period(P))
        .unwrap();
    tick(1).await;
    assert!(late.calls() >= 1);
}

#[test]
fn bad_probe_settings_are_build_errors_that_say_what_to_change() {
    let probes = Probes::new();
    let ok = || async { Ok::<_, String>(()) };
    let cases = [
        (
            Probe::readiness("a", ok).period(Duration::ZERO),
            "period is zero",
        ),
        (
            Probe::readiness("b", ok).failure_threshold(0),
            "thresholds must be at least 1",
        ),
        (
            Probe::readiness("c", ok).success_threshold(0),
            "thresholds must be at least 1",
        ),
        (
            Probe::readiness("d", ok)
                .period(Duration::from_secs(1))
                .timeout(Duration::from_secs(2)),
            "lower the timeout",
        ),
        (Probe::readiness("", ok), "name is empty"),
    ];
    for (probe, want) in cases {
        let err = probes.register(probe).unwrap_err().to_string();
        assert!(err.contains(want), "`{err}` should say `{want}`");
    }
    probes.register(Probe::readiness("dup", ok)).unwrap();
    let err = probes.register(Probe::readiness("dup", ok)).unwrap_err();
    assert!(err.to_string().contains("already registered"));
}
