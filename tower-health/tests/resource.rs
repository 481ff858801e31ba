//! Resource checks read the real process (Linux) and refuse limits that cannot work.

use tower_health::resource;

#[test]
fn memory_check_compares_the_real_resident_set() {
    let rss = resource::process_rss_bytes().expect("this test runs on Linux");
    assert!(rss > 1 << 20, "a test process uses more than 1 MiB: {rss}");
    let roomy = resource::memory_below(rss * 100).unwrap();
    assert!(tokio_test::block_on(roomy()).is_ok());
    let tight = resource::memory_below(1024).unwrap();
    let err = tokio_test::block_on(tight()).unwrap_err();
    assert!(err.contains("is over 1024"), "{err}");
    assert!(resource::memory_below(0).is_err());
}

#[test]
fn cpu_check_measures_use_between_checks() {
    assert!(resource::process_cpu_seconds().is_some());
    let check = resource::cpu_below(64.0).unwrap();
    assert!(
        tokio_test::block_on(check()).is_ok(),
        "the first check has no baseline"
    );
    // Burn some CPU, then a tiny budget must fail.
    let tight = resource::cpu_below(0.000_001).unwrap();
    let _ = tokio_test::block_on(tight());
    let mut x = 0u64;
    let start = std::time::Instant::now();
    while start.elapsed() < std::time::Duration::from_millis(50) {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
    }
    std::hint::black_box(x);
    let err = tokio_test::block_on(tight()).unwrap_err();
    assert!(err.contains("of a core is over"), "{err}");
    for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        assert!(resource::cpu_below(bad).is_err(), "{bad}");
    }
}

#[test]
fn pool_check_uses_the_callers_numbers() {
    let ok = resource::pool_below(|| (3, 10), 0.8).unwrap();
    assert!(tokio_test::block_on(ok()).is_ok());
    let full = resource::pool_below(|| (9, 10), 0.8).unwrap();
    assert!(tokio_test::block_on(full()).unwrap_err().contains("9/10"));
    let empty = resource::pool_below(|| (0, 0), 0.8).unwrap();
    assert!(tokio_test::block_on(empty()).is_err());
    assert!(resource::pool_below(|| (0, 1), 1.5).is_err());
}
