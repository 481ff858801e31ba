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
    let (s, body) = fleet
        .put("/api/v1/budget/users/7", r#"{"spent": 42.5}"#)
        .await
        .unwrap();
    assert_eq!(s, StatusCode::OK, "{body}");
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
    let (s, body) = fleet
        .put("/api/v1/reports/providers/openai", r#"{"rate": 9.0}"#)
        .await
        .unwrap();
    assert_eq!(s, StatusCode::OK, "{body}");
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
    let (s, body) = fleet
        .put("/api/v1/budget/users/42", r#"{"rate_limit": 1}"#)
        .await
        .unwrap();
    assert_eq!(s, StatusCode::OK, "{body}");
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
                let mut ok = 0;
                for _ in 0..300 {
                    let path = format!("/api/v1/budget/users/{}", zipf.next_rank());
                    if let Ok((StatusCode::OK, _)) = support::get(gateway, &path).await {
                        ok += 1;
                    }
                }
                ok
            })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        ok += tokio::time::timeout(Duration::from_secs(120), t)
            .await
            .unwrap()
            .unwrap();
    }
    assert_eq!(ok, 2_400);
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
    let (s, body) = fleet
        .put("/api/v1/budget/users/9", r#"{"spent": 1.5}"#)
        .await
        .unwrap();
    assert_eq!(s, StatusCode::OK, "{body}");
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
