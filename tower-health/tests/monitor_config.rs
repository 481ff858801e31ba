//! Bad monitor settings are build errors that say what to change.

use std::time::Duration;

use tower_health::{HealthMonitor, Target};

#[tokio::test]
async fn bad_targets_are_build_errors_that_say_what_to_change() {
    let monitor = HealthMonitor::new();
    let cases = [
        (
            Target::new("a", "127.0.0.1:1").interval(Duration::ZERO),
            "interval is zero",
        ),
        (
            Target::new("b", "127.0.0.1:1").failure_threshold(0),
            "thresholds must be at least 1",
        ),
        (
            Target::new("c", "127.0.0.1:1")
                .interval(Duration::from_millis(100))
                .timeout(Duration::from_millis(500)),
            "lower the timeout",
        ),
        (Target::new("d", "not an address"), "malformed"),
        (Target::new("e", "127.0.0.1"), "malformed"),
        (Target::new("f", "http://127.0.0.1:80/x"), "malformed"),
        (Target::new("g", ""), "malformed"),
        (
            Target::new("h", "127.0.0.1:1").expected_status(1000),
            "not an HTTP status",
        ),
        (
            Target::new("i", "127.0.0.1:1").max_backoff(Duration::from_millis(1)),
            "max_backoff",
        ),
    ];
    for (target, want) in cases {
        let err = monitor.register(target).unwrap_err().to_string();
        assert!(err.contains(want), "`{err}` should say `{want}`");
    }
    monitor
        .register(Target::new("ok", "http://127.0.0.1:1"))
        .unwrap();
    let dup = monitor
        .register(Target::new("ok", "127.0.0.1:1"))
        .unwrap_err();
    assert!(dup.to_string().contains("already registered"));
    assert_eq!(monitor.all_health().len(), 1);
    assert_eq!(monitor.all_health()[0].url, "http://127.0.0.1:1/health");
}
