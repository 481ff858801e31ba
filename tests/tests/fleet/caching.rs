//! The data services' caches: cross-service invalidation over the bus (in process and
//! Redis), hit rates, single flight, and no stale read after an acknowledged write.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::{Method, StatusCode};
use serde_json::Value;
use support::FleetProcess;

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_through_one_service_invalidates_the_others_entries_over_the_bus() {
    let fleet = FleetProcess::start(FLEET, &["--serve", "--interval", "1h"])
        .await
        .unwrap();
    let get = |path: String, user: Option<u64>| {
        let fleet = &fleet;
        async move {
            fleet
                .call(Method::GET, &path, None, user, None)
                .await
                .unwrap()
        }
    };
    let origin_loads = |svc: &'static str| {
        let fleet = &fleet;
        async move {
            fleet.service(svc).await.unwrap()["cache"]["origin_loads"]
                .as_u64()
                .unwrap()
        }
    };

    // A report, read twice: the second read comes from the reports cache.
    let (s, _, first) = get("/api/v1/reports/users/7".into(), None).await;
    assert_eq!(s, StatusCode::OK, "{first}");
    let loads = origin_loads("reports").await;
    let (_, _, again) = get("/api/v1/reports/users/7".into(), None).await;
    assert_eq!(again, first);
    assert_eq!(
        origin_loads("reports").await,
        loads,
        "the second read was not cached"
    );

    // A write through budget: the report in the reports service goes with it.
    write_ok(&fleet, "/api/v1/budget/users/7", r#"{"spent": 42.5}"#).await;
    eventually(
        Duration::from_secs(5),
        "the report shows the write",
        || async { get("/api/v1/reports/users/7".into(), None).await.2["spent"] == 42.5 },
    )
    .await;

    // A write through reports: the rate cached in budget goes with it.
    let (_, _, rate) = get("/api/v1/budget/providers/openai".into(), None).await;
    assert_eq!(rate["rate"], 2.5);
    let (_, _, rate) = get("/api/v1/budget/providers/openai".into(), None).await;
    assert_eq!(rate["rate"], 2.5);
    write_ok(
        &fleet,
        "/api/v1/reports/providers/openai",
        r#"{"rate": 9.0}"#,
    )
    .await;
    eventually(
        Duration::from_secs(5),
        "budget shows the new rate",
        || async { get("/api/v1/budget/providers/openai".into(), None).await.2["rate"] == 9.0 },
    )
    .await;

    // The gateway's `ratelimit:user:42` depends on `user:42`: a lower limit written
    // through budget reaches the gateway's cached limit, and the user is held to it.
    let (s, _, _) = get("/api/v1/budget/users/42".into(), Some(42)).await;
    assert_eq!(s, StatusCode::OK, "the default limit is 1,000/s");
    write_ok(&fleet, "/api/v1/budget/users/42", r#"{"rate_limit": 1}"#).await;
    eventually(
        Duration::from_secs(5),
        "user 42 is held to 1 request/s",
        || async {
            let mut limited = false;
            for _ in 0..5 {
                let (s, _, _) = get("/api/v1/budget/users/42".into(), Some(42)).await;
                limited |= s == StatusCode::TOO_MANY_REQUESTS;
            }
            limited
        },
    )
    .await;
    // Another user is not.
    for _ in 0..5 {
        let (s, _, _) = get("/api/v1/budget/users/43".into(), Some(43)).await;
        assert_eq!(s, StatusCode::OK);
    }
    // Bad writes are refused with a message and change nothing.
    let (s, body) = fleet
        .put("/api/v1/budget/users/7", r#"{"spent": -1}"#)
        .await
        .unwrap();
    assert_eq!(s, StatusCode::BAD_REQUEST, "{body}");
    let (s, _) = fleet
        .put("/api/v1/reports/providers/nobody", r#"{"rate": 1}"#)
        .await
        .unwrap();
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(
        get("/api/v1/reports/users/7".into(), None).await.2["spent"],
        42.5
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zipf_workload_is_served_mostly_from_the_cache() {
    let fleet = FleetProcess::start(FLEET, &["--serve", "--interval", "1h"])
        .await
        .unwrap();
    let gateway = fleet.gateway;
    let tasks: Vec<_> = (0..8u64)
        .map(|w| {
            tokio::spawn(async move {
                let mut zipf = examples::fleet::load::Zipf::new(1_000, 17 + w);
                let mut bad = Vec::new();
                for _ in 0..300 {
                    let path = format!("/api/v1/budget/users/{}", zipf.next_rank());
                    match support::get(gateway, &path).await {
                        Ok((StatusCode::OK, _)) => {}
                        Ok((s, body)) => {
                            bad.push(format!("{s}: {}", String::from_utf8_lossy(&body)))
                        }
                        Err(e) => bad.push(e.to_string()),
                    }
                }
                bad
            })
        })
        .collect();
    let mut bad = Vec::new();
    for t in tasks {
        bad.extend(
            tokio::time::timeout(Duration::from_secs(120), t)
                .await
                .unwrap()
                .unwrap(),
        );
    }
    assert!(
        bad.is_empty(),
        "{} of 2,400 reads failed: {bad:?}",
        bad.len()
    );
    let budget = fleet.service("budget").await.unwrap();
    let hits = budget["cache"]["hit_pct"].as_f64().unwrap();
    println!("budget cache hit rate on Zipf(1.0): {hits:.1}%");
    assert!(hits >= 60.0, "hit rate {hits:.1}% on Zipf: {budget}");
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_bus_redis_a_write_reaches_the_other_service_through_redis() {
    let redis = support::RedisServer::start().unwrap();
    let url = redis.url();
    let fleet = FleetProcess::start(FLEET, &["--serve", "--interval", "1h", "--bus", &url])
        .await
        .unwrap();
    assert!(
        fleet
            .output
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains(&format!("bus: Redis at {url}"))),
        "the fleet did not say it uses Redis"
    );
    // Three coordinators (budget, reports, gateway) subscribe to the fleet's channel.
    eventually(Duration::from_secs(10), "three subscribers", || async {
        redis.subscribers("fleet-invalidations").unwrap_or(0) == 3
    })
    .await;
    let get = || async {
        fleet
            .call(Method::GET, "/api/v1/reports/users/9", None, None, None)
            .await
            .unwrap()
            .2
    };
    assert_eq!(get().await["spent"], 9.0);
    write_ok(&fleet, "/api/v1/budget/users/9", r#"{"spent": 1.5}"#).await;
    eventually(
        Duration::from_secs(5),
        "the report shows the write",
        || async { get().await["spent"] == 1.5 },
    )
    .await;
}

/// A storm: 1,000 identical reads of one uncached key at once through the gateway.
/// Every one is answered, and the origin is read once (single flight in the service's
/// cache), not a thousand times.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_of_identical_reads_is_answered_from_one_origin_read() {
    let fleet = FleetProcess::start(
        FLEET,
        &["--serve", "--interval", "1h", "--rate-limit", "1000000"],
    )
    .await
    .unwrap();
    let before = fleet.service("budget").await.unwrap()["cache"]["origin_loads"]
        .as_u64()
        .unwrap();
    let gateway = fleet.gateway;
    let storm: Vec<_> = (0..1_000)
        .map(|_| {
            tokio::spawn(async move {
                let req = http::Request::get("/api/v1/budget/users/4321")
                    .header(http::header::HOST, gateway.to_string())
                    .body(http_body_util::Empty::<bytes::Bytes>::new())
                    .unwrap();
                support::exchange(gateway, req, Duration::from_secs(60)).await
            })
        })
        .collect();
    let mut ok = 0;
    for r in storm {
        let (status, _, body) = r.await.unwrap().unwrap();
        assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
        let user: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(user["id"], 4321);
        ok += 1;
    }
    assert_eq!(ok, 1_000);
    let after = fleet.service("budget").await.unwrap()["cache"]["origin_loads"]
        .as_u64()
        .unwrap();
    assert_eq!(
        after - before,
        1,
        "the origin was read {} times",
        after - before
    );
}

/// Writers against readers on one key, with evictions: once a write through budget has
/// been answered, no read of budget that starts after it returns an older value (the
/// oracle: the last acknowledged write, taken when the read starts; writes only grow).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_read_after_an_acknowledged_write_returns_an_older_value() {
    let fleet = FleetProcess::start(
        FLEET,
        &[
            "--serve",
            "--interval",
            "1h",
            "--rate-limit",
            "1000000",
            "--origin-ms",
            "2",
        ],
    )
    .await
    .unwrap();
    let gateway = fleet.gateway;
    let acked = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..6u64)
        .map(|r| {
            let (acked, done) = (acked.clone(), done.clone());
            tokio::spawn(async move {
                let mut zipf = examples::fleet::load::Zipf::new(5_000, 99 + r);
                let mut checked = 0u64;
                while !done.load(Ordering::Acquire) {
                    let floor = acked.load(Ordering::Acquire);
                    let (s, body) = support::get(gateway, "/api/v1/budget/users/5")
                        .await
                        .unwrap();
                    assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
                    let user: Value = serde_json::from_slice(&body).unwrap();
                    let spent = user["spent"].as_f64().unwrap() as u64;
                    assert!(
                        spent >= floor,
                        "read {spent} after the write of {floor} was acknowledged"
                    );
                    checked += 1;
                    // Other keys, so the 500-entry memory tier evicts.
                    let _ = support::get(
                        gateway,
                        &format!("/api/v1/budget/users/{}", 10 + zipf.next_rank()),
                    )
                    .await;
                }
                checked
            })
        })
        .collect();
    for v in 100..300u64 {
        let (s, body) = fleet
            .put("/api/v1/budget/users/5", &format!("{{\"spent\": {v}}}"))
            .await
            .unwrap();
        assert_eq!(s, StatusCode::OK, "{body}");
        acked.store(v, Ordering::Release);
    }
    done.store(true, Ordering::Release);
    let mut checked = 0;
    for r in readers {
        checked += tokio::time::timeout(Duration::from_secs(60), r)
            .await
            .unwrap()
            .unwrap();
    }
    assert!(checked > 100, "only {checked} reads checked");
}
