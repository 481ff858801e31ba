//! The fleet as a process: its start (taken port, bad flags), its stop (Ctrl-C drains
//! every child), a SIGKILL and restart on the same data, and what its children inherit.

use std::time::Duration;

use http::{Method, StatusCode};
use support::FleetProcess;

use crate::helpers::*;

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
