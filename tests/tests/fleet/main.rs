//! End-to-end tests of the whole fleet (`examples::fleet`), run as a real child process
//! (the `fleet` binary of this package) whose training instances are real child
//! processes of it, driven over real sockets through its gateway. Each test bounds
//! itself in time.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::{Method, StatusCode};
use serde_json::Value;
use support::FleetProcess;

const FLEET: &str = env!("CARGO_BIN_EXE_fleet");

/// Polls `check` every 100 ms until it holds, for at most `within`.
async fn eventually<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = tokio::time::Instant::now() + within;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < end,
            "not within {within:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn instances(service: &Value) -> u64 {
    service["ready"].as_u64().unwrap_or(0) + service["starting"].as_u64().unwrap_or(0)
}

/// Workers sending `GET /api/v1/training/run` until stopped; (ok, failed).
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(fleet: &FleetProcess, workers: usize) -> Load {
        let (stop, ok, failed) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicU64::new(0)),
        );
        let gateway = fleet.gateway;
        let tasks = (0..workers)
            .map(|_| {
                let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        match support::get(gateway, "/api/v1/training/run").await {
                            Ok((s, _)) if s == StatusCode::OK => ok.fetch_add(1, Ordering::Relaxed),
                            other => {
                                eprintln!("failed request: {other:?}");
                                failed.fetch_add(1, Ordering::Relaxed)
                            }
                        };
                    }
                })
            })
            .collect();
        Load {
            stop,
            ok,
            failed,
            tasks,
        }
    }

    async fn stop(self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(35), t).await;
        }
        (
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }
}

/// A write through the gateway that must succeed.
async fn write_ok(fleet: &FleetProcess, path: &str, body: &str) {
    let (s, answer) = fleet.put(path, body).await.unwrap();
    assert_eq!(s, StatusCode::OK, "PUT {path} {body}: {answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_answers_401_409_404_and_400_and_changes_nothing_it_refuses() {
    let fleet = FleetProcess::start(
        FLEET,
        &["--serve", "--interval", "1h", "--max-instances", "2"],
    )
    .await
    .unwrap();
    let post = |path: &'static str, token: Option<&'static str>| {
        let fleet = &fleet;
        async move {
            let t = token.map(|t| if t == "good" { fleet.token.as_str() } else { t });
            fleet.call(Method::POST, path, t, None, None).await.unwrap()
        }
    };
    let (s, _, body) = post("/api/v1/system/scale/training/up", None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{body}");
    let (s, _, _) = post("/api/v1/system/scale/training/up", Some("wrong")).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _, body) = post("/api/v1/system/scale/payroll/up", Some("good")).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(
        body["error"].as_str().unwrap().contains("payroll"),
        "{body}"
    );
    let (s, _, body) = post("/api/v1/system/scale/training/sideways", Some("good")).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(
        body["error"].as_str().unwrap().contains("sideways"),
        "{body}"
    );
    // Nothing the refusals asked for happened.
    assert_eq!(instances(&fleet.service("training").await.unwrap()), 1);

    let (s, _, body) = post("/api/v1/system/scale/training/up", Some("good")).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["instances"], 2);
    // Beyond the policy's max of 2: 409 with a message, and still 2.
    let (s, _, body) = post("/api/v1/system/scale/training/up", Some("good")).await;
    assert_eq!(s, StatusCode::CONFLICT, "{body}");
    assert!(body["error"].as_str().unwrap().contains('2'), "{body}");
    let status = fleet
        .call(
            Method::GET,
            "/api/v1/system/scaling-status",
            None,
            None,
            None,
        )
        .await
        .unwrap()
        .2;
    let training = &status["services"][0];
    assert_eq!(training["name"], "training");
    assert_eq!(
        training["instances"].as_array().unwrap().len(),
        2,
        "{status}"
    );
    let (s, _, _) = post("/api/v1/system/scale/training/down", Some("good")).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _, _) = post("/api/v1/system/scale/training/down", Some("good")).await;
    assert_eq!(s, StatusCode::CONFLICT, "below the min of 1");

    // The load distribution, the probes, request ids and the metrics.
    let dist = fleet
        .call(
            Method::GET,
            "/api/v1/system/load-distribution",
            None,
            None,
            None,
        )
        .await
        .unwrap()
        .2;
    assert_eq!(dist["services"].as_array().unwrap().len(), 3, "{dist}");
    // Ready once the monitor has seen both data services ready.
    eventually(Duration::from_secs(10), "the gateway is ready", || async {
        fleet
            .call(Method::GET, "/health/ready", None, None, None)
            .await
            .unwrap()
            .0
            == StatusCode::OK
    })
    .await;
    let (_, id, _) = fleet
        .call(Method::GET, "/health/live", None, None, None)
        .await
        .unwrap();
    assert!(id.is_some_and(|i| !i.is_empty()), "no x-request-id");
    let (s, _, _) = fleet
        .call(Method::GET, "/api/v1/nothing-here", None, None, None)
        .await
        .unwrap();
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _, body) = fleet
        .call(
            Method::GET,
            "/api/v1/budget/users/not-a-number",
            None,
            None,
            None,
        )
        .await
        .unwrap();
    assert_eq!(s, StatusCode::BAD_REQUEST, "{body}");
    // The dashboard's charts start from the gateway's history: a point a second.
    eventually(Duration::from_secs(5), "two history points", || async {
        let h = fleet
            .call(Method::GET, "/api/v1/system/history", None, None, None)
            .await
            .unwrap()
            .2;
        h.as_array().is_some_and(|p| {
            p.len() >= 2 && p[0]["services"].as_array().is_some_and(|s| s.len() == 3)
        })
    })
    .await;
    let (_, raw) = support::get(fleet.gateway, "/metrics").await.unwrap();
    let metrics = String::from_utf8_lossy(&raw);
    for name in [
        "fleet_gateway_requests_total",
        "fleet_instances{service=\"training\",state=\"ready\"} 1",
        "fleet_endpoint_share",
        "fleet_bus_published",
        "fleet_service_p99_seconds{service=\"budget\"}",
    ] {
        assert!(metrics.contains(name), "/metrics lacks {name}:\n{metrics}");
    }
}

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn training_scales_up_under_load_and_back_down_after_it() {
    let fleet = FleetProcess::start(
        FLEET,
        &[
            "--serve",
            "--interval",
            "500ms",
            "--scale-down-window",
            "2s",
            "--max-instances",
            "3",
            "--work-ms",
            "100",
            "--cpu-ms",
            "0",
        ],
    )
    .await
    .unwrap();
    assert_eq!(instances(&fleet.service("training").await.unwrap()), 1);
    let load = Load::start(&fleet, 12);
    eventually(Duration::from_secs(30), "scaled up under load", || async {
        instances(&fleet.service("training").await.unwrap()) >= 2
    })
    .await;
    let (ok, failed) = load.stop().await;
    assert!(ok > 0);
    assert_eq!(failed, 0, "requests failed while scaling up");
    eventually(
        Duration::from_secs(40),
        "scaled back down after the load",
        || async {
            let t = fleet.service("training").await.unwrap();
            instances(&t) == 1
        },
    )
    .await;
    // The scale-down's action is recorded once its instance has drained.
    eventually(
        Duration::from_secs(20),
        "the scale-down recorded",
        || async {
            let o = fleet.overview().await.unwrap();
            o["actions"]
                .as_array()
                .unwrap()
                .iter()
                .any(|a| a["by"] == "autoscaler" && a["now"] == 1)
        },
    )
    .await;
    let o = fleet.overview().await.unwrap();
    let actions = o["actions"].as_array().unwrap();
    assert!(
        actions
            .iter()
            .any(|a| a["by"] == "autoscaler" && a["now"].as_u64() >= Some(2)),
        "{o}"
    );
    // Every action the autoscaler took carries its decision's reason.
    assert!(
        actions
            .iter()
            .filter(|a| a["by"] == "autoscaler")
            .all(|a| a["reason"]
                .as_str()
                .is_some_and(|r| r.contains("in_flight"))),
        "{o}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_training_instance_under_load_fails_no_idempotent_request() {
    let fleet = FleetProcess::start(
        FLEET,
        &[
            "--serve",
            "--interval",
            "1h",
            "--min-instances",
            "3",
            "--max-instances",
            "3",
        ],
    )
    .await
    .unwrap();
    let training = fleet.service("training").await.unwrap();
    assert_eq!(training["ready"], 3, "{training}");
    let load = Load::start(&fleet, 8);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let victim = training["instances"][0]["pid"].as_u64().unwrap() as i32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(victim),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (ok, failed) = load.stop().await;
    assert!(ok > 100, "only {ok} requests went through");
    assert_eq!(failed, 0, "{failed} of {} requests failed", ok + failed);
    // The scaler restarts the crashed instance.
    eventually(Duration::from_secs(30), "three ready again", || async {
        let t = fleet.service("training").await.unwrap();
        t["ready"] == 3
            && t["instances"]
                .as_array()
                .unwrap()
                .iter()
                .all(|i| i["pid"].as_u64() != Some(victim as u64))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_stops_and_drains_every_child_process() {
    let mut fleet = FleetProcess::start(
        FLEET,
        &["--serve", "--interval", "1h", "--min-instances", "2"],
    )
    .await
    .unwrap();
    let training = fleet.service("training").await.unwrap();
    let pids: Vec<i32> = training["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["pid"].as_u64().unwrap() as i32)
        .collect();
    assert_eq!(pids.len(), 2);
    let alive = |pid: i32| nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok();
    assert!(pids.iter().all(|p| alive(*p)));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(fleet.pid().unwrap() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let status = fleet.wait(Duration::from_secs(30)).await.unwrap();
    assert!(status.success(), "{status}");
    assert!(
        pids.iter().all(|p| !alive(*p)),
        "a training instance outlived the fleet"
    );
    let out = fleet.output.lock().unwrap().join("\n");
    assert!(out.contains("draining 2 training instance(s)"), "{out}");
    assert!(out.contains("stopped"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_port_and_bad_flags_are_refused_with_what_to_change() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::process::Command::new(FLEET)
            .args(["--serve", "--port", &port])
            .output(),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("127.0.0.1:{port}")) && err.contains("--port"),
        "{err}"
    );
    for (args, says) in [
        (&["--load", "sideways"][..], "ramp, step or spike"),
        (&["--chaos", "kill-all"][..], "kill-one"),
        (&["--interval", "0s"][..], "above 0"),
        (
            &["--min-instances", "5", "--max-instances", "2"][..],
            "min <= max",
        ),
        (&["--bogus"][..], "unknown flag"),
        (&["--bus", "carrier-pigeon://x"][..], "redis://"),
    ] {
        let out = tokio::time::timeout(
            Duration::from_secs(30),
            tokio::process::Command::new(FLEET).args(args).output(),
        )
        .await
        .unwrap()
        .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{args:?}: {err}");
    }
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_cannot_escape_its_limit_by_naming_other_users() {
    let fleet = FleetProcess::start(FLEET, &["--serve", "--interval", "1h", "--rate-limit", "5"])
        .await
        .unwrap();
    let mut codes = Vec::new();
    for id in 0..30u64 {
        let (s, _, body) = fleet
            .call(
                Method::GET,
                &format!("/api/v1/budget/users/{id}"),
                None,
                Some(id),
                None,
            )
            .await
            .unwrap();
        if s == StatusCode::TOO_MANY_REQUESTS {
            assert!(
                body["error"].as_str().unwrap().contains("5 requests/s"),
                "{body}"
            );
        }
        codes.push(s);
    }
    let limited = codes
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert!(
        limited >= 10,
        "30 requests from one address at a limit of 5/s: {limited} refused"
    );
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

/// SIGKILL the whole fleet in the middle of writes and reads, then start it again on
/// the same data directory: it starts (the LMDB files are whole), serves, and no
/// training instance of the killed fleet is left running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_killed_mid_work_restarts_on_its_data_and_leaves_no_orphan() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().to_str().unwrap().to_string();
    let args = [
        "--serve",
        "--interval",
        "1h",
        "--min-instances",
        "2",
        "--rate-limit",
        "1000000",
        "--data-dir",
        dir.as_str(),
    ];
    let mut fleet = FleetProcess::start(FLEET, &args).await.unwrap();
    let pids: Vec<i32> = fleet.service("training").await.unwrap()["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["pid"].as_u64().unwrap() as i32)
        .collect();
    assert_eq!(pids.len(), 2);
    // Work in flight: reads filling the disk tiers, writes invalidating.
    let gateway = fleet.gateway;
    let work: Vec<_> = (0..8u64)
        .map(|w| {
            let token = fleet.token.clone();
            tokio::spawn(async move {
                for i in 0..200u64 {
                    let id = (w * 37 + i) % 500;
                    let _ = support::get(gateway, &format!("/api/v1/reports/users/{id}")).await;
                    if i % 10 == 0 {
                        let req = http::Request::put(format!("/api/v1/budget/users/{id}"))
                            .header(http::header::HOST, gateway.to_string())
                            .header(http::header::AUTHORIZATION, format!("Bearer {token}"))
                            .body(http_body_util::Full::new(bytes::Bytes::from(format!(
                                "{{\"spent\": {i}}}"
                            ))))
                            .unwrap();
                        let _ = support::send(gateway, req).await;
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(700)).await;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(fleet.pid().unwrap() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let status = fleet.wait(Duration::from_secs(10)).await.unwrap();
    assert!(!status.success());
    for w in work {
        let _ = tokio::time::timeout(Duration::from_secs(60), w).await;
    }
    let alive = |pid: i32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z"))
    };
    eventually(
        Duration::from_secs(10),
        "the killed fleet's instances are gone",
        || async { pids.iter().all(|p| !alive(*p)) },
    )
    .await;

    let again = FleetProcess::start(FLEET, &args).await.unwrap();
    let (s, _, report) = again
        .call(Method::GET, "/api/v1/reports/users/3", None, None, None)
        .await
        .unwrap();
    assert_eq!(s, StatusCode::OK, "{report}");
    assert_eq!(report["user"], 3);
    // A write after the restart still reaches the other service.
    let (s, _) = again
        .put("/api/v1/budget/users/3", r#"{"spent": 77.0}"#)
        .await
        .unwrap();
    assert_eq!(s, StatusCode::OK);
    eventually(
        Duration::from_secs(5),
        "the report shows the write",
        || async {
            again
                .call(Method::GET, "/api/v1/reports/users/3", None, None, None)
                .await
                .unwrap()
                .2["spent"]
                == 77.0
        },
    )
    .await;
    assert_eq!(again.service("training").await.unwrap()["ready"], 2);
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

/// Damage at the gateway: malformed and duplicated `x-user-id`, a body cut mid-way, a
/// body over the limit; each gets an answer or a closed connection, and the gateway goes
/// on serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_cut_requests_do_not_hurt_the_gateway() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let fleet = FleetProcess::start(FLEET, &["--serve", "--interval", "1h"])
        .await
        .unwrap();
    // `cut`: close our side after writing (hyper then closes at once, as a cut
    // connection), else wait for the answer (`connection: close` ends it).
    let raw = |bytes: Vec<u8>, cut: bool| {
        let gateway = fleet.gateway;
        async move {
            let mut s = tokio::net::TcpStream::connect(gateway).await.unwrap();
            let _ = s.write_all(&bytes).await;
            if cut {
                let _ = s.shutdown().await;
            }
            let mut out = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
            String::from_utf8_lossy(&out).into_owned()
        }
    };
    let host = fleet.gateway;
    let token = &fleet.token;
    for (user, expect) in [
        ("abc", "HTTP/1.1 200"),
        ("-1", "HTTP/1.1 200"),
        ("18446744073709551616", "HTTP/1.1 200"),
        // Not a valid header value at all: hyper refuses the request.
        ("\u{7f}", "HTTP/1.1 400"),
    ] {
        let answer = raw(format!(
            "GET /api/v1/budget/users/1 HTTP/1.1\r\nhost: {host}\r\nx-user-id: {user}\r\nconnection: close\r\n\r\n"
        )
        .into_bytes(), false)
        .await;
        // Not a user: counted against the address only, and served.
        assert!(answer.starts_with(expect), "{user:?}: {answer}");
    }
    let answer = raw(format!("GET /api/v1/budget/users/1 HTTP/1.1\r\nhost: {host}\r\nx-user-id: 1\r\nx-user-id: 2\r\nconnection: close\r\n\r\n").into_bytes(), false).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // A body cut mid-way: no write happens.
    let before = fleet
        .call(Method::GET, "/api/v1/budget/users/8", None, None, None)
        .await
        .unwrap()
        .2;
    let _ = raw(format!("PUT /api/v1/budget/users/8 HTTP/1.1\r\nhost: {host}\r\nauthorization: Bearer {token}\r\ncontent-length: 100\r\n\r\n{{\"spent\": 9").into_bytes(), true).await;
    // A body over 1 MiB: 413.
    let big = format!(
        "PUT /api/v1/budget/users/8 HTTP/1.1\r\nhost: {host}\r\nauthorization: Bearer {token}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{}",
        2 << 20,
        " ".repeat(2 << 20)
    );
    let answer = raw(big.into_bytes(), false).await;
    assert!(
        answer.starts_with("HTTP/1.1 413"),
        "{}",
        &answer[..answer.len().min(200)]
    );
    let after = fleet
        .call(Method::GET, "/api/v1/budget/users/8", None, None, None)
        .await
        .unwrap();
    assert_eq!(after.0, StatusCode::OK);
    assert_eq!(after.2, before, "a cut or refused write changed the user");
}

/// The value of the gauge `series` (name and labels, as printed) in `/metrics`.
async fn gauge(fleet: &FleetProcess, series: &str) -> f64 {
    let (s, raw) = support::get(fleet.gateway, "/metrics").await.unwrap();
    assert_eq!(s, StatusCode::OK);
    let text = String::from_utf8_lossy(&raw);
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("/metrics has no {series}:\n{text}"))
}

/// One address naming another user in each request (half of them real users, half
/// made up) at a limit of 5 requests/s: the requests refused for the address cost no
/// lookup and leave nothing behind (no cache entry, no dependency, no bucket), and made-up
/// users leave nothing behind even when admitted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_user_ids_from_one_address_leave_nothing_behind() {
    let fleet = FleetProcess::start(FLEET, &["--serve", "--interval", "1h", "--rate-limit", "5"])
        .await
        .unwrap();
    let mut admitted = 0u64;
    for i in 0..400u64 {
        let id = if i % 2 == 0 { i } else { 1_000_000_000 + i };
        let (s, _, body) = fleet
            .call(
                Method::GET,
                "/api/v1/budget/providers/openai",
                None,
                Some(id),
                None,
            )
            .await
            .unwrap();
        match s {
            StatusCode::TOO_MANY_REQUESTS => {}
            StatusCode::OK => admitted += 1,
            other => panic!("{other}: {body}"),
        }
    }
    assert!(admitted < 200, "{admitted} of 400 admitted at 5/s");
    let dependencies = gauge(&fleet, "fleet_cache_dependencies{service=\"gateway\"}").await;
    let users = gauge(&fleet, "fleet_rate_limiter_buckets{client=\"user\"}").await;
    let addresses = gauge(&fleet, "fleet_rate_limiter_buckets{client=\"address\"}").await;
    let entries = gauge(
        &fleet,
        "fleet_cache_entries{service=\"gateway\",tier=\"memory\"}",
    )
    .await;
    println!(
        "admitted {admitted}: {dependencies} dependencies, {users} user buckets, {entries} cache entries"
    );
    let bound = admitted as f64;
    assert!(
        dependencies <= bound,
        "{dependencies} dependencies for {admitted} admitted"
    );
    assert!(
        users <= bound,
        "{users} user buckets for {admitted} admitted"
    );
    assert!(
        entries <= bound,
        "{entries} cache entries for {admitted} admitted"
    );
    assert_eq!(addresses, 1.0);
}

/// Many real users, each admitted: the buckets kept stay within `--max-clients`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_limiter_keeps_at_most_max_clients_buckets() {
    let fleet = FleetProcess::start(
        FLEET,
        &[
            "--serve",
            "--interval",
            "1h",
            "--rate-limit",
            "1000000",
            "--max-clients",
            "16",
            "--origin-ms",
            "0",
        ],
    )
    .await
    .unwrap();
    for id in 0..200u64 {
        let (s, _, body) = fleet
            .call(
                Method::GET,
                "/api/v1/budget/providers/openai",
                None,
                Some(id),
                None,
            )
            .await
            .unwrap();
        assert_eq!(s, StatusCode::OK, "{body}");
        let users = gauge(&fleet, "fleet_rate_limiter_buckets{client=\"user\"}").await;
        assert!(users <= 16.0, "{users} user buckets after {} users", id + 1);
    }
    // The dependencies are one a user at most (every user named exists).
    let dependencies = gauge(&fleet, "fleet_cache_dependencies{service=\"gateway\"}").await;
    assert!(dependencies <= 200.0, "{dependencies}");
}

/// Writes `request` on a fresh connection to `addr` and reads until the gateway closes
/// it (at most 10 s); what came back.
async fn raw_exchange(addr: std::net::SocketAddr, request: String) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// Writes through the gateway need the fleet's token (401 without it, with another, or
/// with another scheme; the scheme's case does not matter), and values out of range are
/// refused with 400; nothing refused changes anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_need_the_token_and_values_in_range() {
    let fleet = FleetProcess::start(FLEET, &["--serve", "--interval", "1h"])
        .await
        .unwrap();
    let token = fleet.token.clone();
    let put = |path: &'static str, auth: Option<String>, body: &'static str| {
        let fleet = &fleet;
        async move {
            let mut req =
                http::Request::put(path).header(http::header::HOST, fleet.gateway.to_string());
            if let Some(a) = auth {
                req = req.header(http::header::AUTHORIZATION, a);
            }
            let req = req
                .body(http_body_util::Full::new(bytes::Bytes::from(body)))
                .unwrap();
            let (s, body) = support::send(fleet.gateway, req).await.unwrap();
            (s, String::from_utf8_lossy(&body).into_owned())
        }
    };
    for auth in [
        None,
        Some("Bearer wrong".to_string()),
        Some(format!("Bearer {token}x")),
        Some(format!("Bearer {}", &token[..token.len() - 1])),
        Some(format!("Basic {token}")),
        Some(token.clone()),
    ] {
        let (s, body) = put(
            "/api/v1/budget/users/7",
            auth.clone(),
            r#"{"rate_limit": 0}"#,
        )
        .await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{auth:?}: {body}");
        let (s, body) = put(
            "/api/v1/reports/providers/openai",
            auth.clone(),
            r#"{"rate": 1e300}"#,
        )
        .await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{auth:?}: {body}");
    }
    let good = Some(format!("bEaReR {token}"));
    for (path, body) in [
        ("/api/v1/budget/users/7", r#"{"rate_limit": 0}"#),
        ("/api/v1/budget/users/7", r#"{"rate_limit": 2000000}"#),
        ("/api/v1/budget/users/7", r#"{"limit": 1e300}"#),
        ("/api/v1/budget/users/7", r#"{"spent": -1}"#),
        ("/api/v1/budget/users/7", r#"{"spent": 1e400}"#),
        ("/api/v1/reports/providers/openai", r#"{"rate": 1e300}"#),
        ("/api/v1/reports/providers/openai", r#"{"rate": -2}"#),
    ] {
        let (s, answer) = put(path, good.clone(), body).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{path} {body}: {answer}");
    }
    // Nothing changed.
    let user = fleet
        .call(Method::GET, "/api/v1/budget/users/7", None, None, None)
        .await
        .unwrap()
        .2;
    assert_eq!(user["rate_limit"], 1000, "{user}");
    assert_eq!(user["spent"], 7.0, "{user}");
    let rate = fleet
        .call(
            Method::GET,
            "/api/v1/budget/providers/openai",
            None,
            None,
            None,
        )
        .await
        .unwrap()
        .2;
    assert_eq!(rate["rate"], 2.5, "{rate}");
    // With the token and a value in range: written.
    let (s, body) = put("/api/v1/budget/users/7", good, r#"{"rate_limit": 5}"#).await;
    assert_eq!(s, StatusCode::OK, "{body}");
}

/// The gateway answers only its own host names: `localhost`, `127.0.0.1` and `[::1]`
/// with its port, and each `--host`; another name (a DNS rebinding page) gets 421, in
/// `Host` or in an absolute-form target, and a request without a host gets 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_gateways_host_names_are_answered() {
    let fleet = FleetProcess::start(
        FLEET,
        &["--serve", "--interval", "1h", "--host", "Fleet.Example"],
    )
    .await
    .unwrap();
    let port = fleet.gateway.port();
    let ask = |target: String, host: Option<String>| {
        let gateway = fleet.gateway;
        async move {
            let host = host.map(|h| format!("host: {h}\r\n")).unwrap_or_default();
            raw_exchange(
                gateway,
                format!("GET {target} HTTP/1.1\r\n{host}connection: close\r\n\r\n"),
            )
            .await
        }
    };
    let path = || "/api/v1/budget/users/1".to_string();
    for host in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        format!("LOCALHOST:{port}"),
        format!("[::1]:{port}"),
        "fleet.example".to_string(),
        format!("fleet.example:{port}"),
    ] {
        let answer = ask(path(), Some(host.clone())).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{host}: {answer}");
    }
    for host in [
        format!("attacker.example:{port}"),
        "attacker.example".to_string(),
        format!("127.0.0.2:{port}"),
        "localhost".to_string(),
        format!("localhost:{}", port.wrapping_add(1)),
    ] {
        let answer = ask(path(), Some(host.clone())).await;
        assert!(answer.starts_with("HTTP/1.1 421"), "{host}: {answer}");
    }
    let answer = ask(
        format!("http://attacker.example:{port}/api/v1/budget/users/1"),
        Some(format!("127.0.0.1:{port}")),
    )
    .await;
    assert!(
        answer.starts_with("HTTP/1.1 421"),
        "absolute form: {answer}"
    );
    let answer = raw_exchange(
        fleet.gateway,
        "GET /api/v1/budget/users/1 HTTP/1.0\r\n\r\n".to_string(),
    )
    .await;
    assert!(
        answer.starts_with("HTTP/1.0 400") || answer.starts_with("HTTP/1.1 400"),
        "no host: {answer}"
    );
}

/// Whether the gateway closes `stream` (an end of stream or a reset) within 20 s, and
/// what it sent before.
async fn closed_by_gateway(mut stream: tokio::net::TcpStream) -> (bool, String) {
    use tokio::io::AsyncReadExt;
    let mut out = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(20), async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .is_ok();
    (closed, String::from_utf8_lossy(&out).into_owned())
}

/// Slowloris: a connection that sends nothing, one that sends half a head, one that
/// sends a head and part of its body, and a kept-alive connection left idle after its
/// request are each closed by the gateway (at 1 s header read and 2 s idle timeouts),
/// and the gateway goes on serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_slow_connections_are_closed() {
    use tokio::io::AsyncWriteExt;
    let fleet = FleetProcess::start(
        FLEET,
        &[
            "--serve",
            "--interval",
            "1h",
            "--header-read-timeout",
            "1s",
            "--idle-timeout",
            "2s",
        ],
    )
    .await
    .unwrap();
    let (gateway, token) = (fleet.gateway, fleet.token.clone());
    let connect = || async move { tokio::net::TcpStream::connect(gateway).await.unwrap() };
    let silent = connect().await;
    let mut half_head = connect().await;
    half_head
        .write_all(format!("GET /health/live HTTP/1.1\r\nhost: {gateway}\r\nx-a").as_bytes())
        .await
        .unwrap();
    let mut half_body = connect().await;
    half_body
        .write_all(
            format!(
                "PUT /api/v1/budget/users/3 HTTP/1.1\r\nhost: {gateway}\r\nauthorization: Bearer {token}\r\ncontent-length: 100\r\n\r\n{{\"spent\""
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let mut kept_alive = connect().await;
    kept_alive
        .write_all(format!("GET /health/live HTTP/1.1\r\nhost: {gateway}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let (silent, half_head, half_body, kept_alive) = tokio::join!(
        closed_by_gateway(silent),
        closed_by_gateway(half_head),
        closed_by_gateway(half_body),
        closed_by_gateway(kept_alive),
    );
    assert!(silent.0, "a silent connection stayed open");
    assert!(half_head.0, "half a head stayed open: {}", half_head.1);
    assert!(half_body.0, "half a body stayed open: {}", half_body.1);
    assert!(
        half_body.1.is_empty() || half_body.1.starts_with("HTTP/1.1 408"),
        "{}",
        half_body.1
    );
    assert!(kept_alive.0, "an idle kept-alive connection stayed open");
    assert!(kept_alive.1.starts_with("HTTP/1.1 200"), "{}", kept_alive.1);
    // The user was not written, and the gateway serves.
    let user = fleet
        .call(Method::GET, "/api/v1/budget/users/3", None, None, None)
        .await
        .unwrap();
    assert_eq!(user.0, StatusCode::OK);
    assert_eq!(user.2["spent"], 3.0, "{}", user.2);
}

/// A storm of 60 connections that send nothing against `--max-connections 20`: the
/// gateway holds 20 and closes the other 40 at once; once the storm is gone it serves
/// again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_storm_is_held_to_max_connections() {
    let fleet = FleetProcess::start(
        FLEET,
        &[
            "--serve",
            "--interval",
            "1h",
            "--max-connections",
            "20",
            "--header-read-timeout",
            "5m",
            "--idle-timeout",
            "5m",
        ],
    )
    .await
    .unwrap();
    let gateway = fleet.gateway;
    let mut storm = Vec::new();
    for _ in 0..60 {
        storm.push(tokio::net::TcpStream::connect(gateway).await.unwrap());
    }
    // Each read waits at most 20 s; the ones held stay open past it (5 min timeouts).
    let reads: Vec<_> = storm
        .into_iter()
        .map(|s| tokio::spawn(closed_by_gateway(s)))
        .collect();
    let mut closed = 0;
    for r in reads {
        closed += usize::from(r.await.unwrap().0);
    }
    assert_eq!(
        closed, 40,
        "of 60 connections at a limit of 20, {closed} closed"
    );
    // The 20 held are gone with the storm (dropped above): the gateway serves again.
    eventually(
        Duration::from_secs(10),
        "the gateway serves again",
        || async {
            support::get(gateway, "/health/live")
                .await
                .is_ok_and(|(s, _)| s == StatusCode::OK)
        },
    )
    .await;
    let refused = gauge(&fleet, "fleet_gateway_connections_refused").await;
    assert!(refused >= 40.0, "{refused}");
}

/// The fleet's token is not in its training instances' environment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn training_instances_do_not_inherit_the_token() {
    let fleet = FleetProcess::start(FLEET, &["--serve", "--interval", "1h"])
        .await
        .unwrap();
    let training = fleet.service("training").await.unwrap();
    let pid = training["instances"][0]["pid"].as_u64().unwrap();
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    let vars: Vec<String> = environ
        .split(|b| *b == 0)
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect();
    // The rest of the fleet's environment is there (the tests set RUST_LOG).
    assert!(vars.iter().any(|v| v == "RUST_LOG=warn"), "{vars:?}");
    assert!(
        !vars.iter().any(|v| v.starts_with("FLEET_TOKEN=")),
        "a training instance has FLEET_TOKEN"
    );
    assert!(
        !vars.iter().any(|v| v.contains(&fleet.token)),
        "a training instance has the token"
    );
}

/// With a long header read timeout, a kept-alive connection left idle after its request
/// is closed by the idle timeout (1 s), and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_is_closed_by_the_idle_timeout() {
    use tokio::io::AsyncWriteExt;
    let fleet = FleetProcess::start(
        FLEET,
        &[
            "--serve",
            "--interval",
            "1h",
            "--header-read-timeout",
            "5m",
            "--idle-timeout",
            "1s",
        ],
    )
    .await
    .unwrap();
    let gateway = fleet.gateway;
    let mut kept_alive = tokio::net::TcpStream::connect(gateway).await.unwrap();
    kept_alive
        .write_all(format!("GET /health/live HTTP/1.1\r\nhost: {gateway}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let (closed, answer) = closed_by_gateway(kept_alive).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(closed, "an idle kept-alive connection stayed open");
    let idle_closed = gauge(&fleet, "fleet_gateway_connections_idle_closed").await;
    assert!(idle_closed >= 1.0, "{idle_closed}");
}
