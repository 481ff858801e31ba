//! The autoscaled training service: up under load and back down after it, and a killed
//! instance under load; a manual scale held against the autoscaler.

use std::time::Duration;

use http::{Method, StatusCode};
use support::FleetProcess;

use crate::helpers::*;

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
async fn a_manual_scale_up_holds_against_the_autoscaler_until_its_hold_ends() {
    let fleet = FleetProcess::start(
        FLEET,
        &[
            "--serve",
            "--interval",
            "500ms",
            "--scale-down-window",
            "1s",
            "--manual-hold",
            "8s",
            "--max-instances",
            "3",
        ],
    )
    .await
    .unwrap();
    let (s, _, body) = fleet
        .call(
            Method::POST,
            "/api/v1/system/scale/training/up",
            Some(&fleet.token),
            None,
            None,
        )
        .await
        .unwrap();
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["instances"], 2, "{body}");
    let until = body["held_until_unix_ms"].as_u64().expect("a hold");
    let words = body["autoscaler"].as_str().unwrap();
    assert!(
        words.starts_with("keeps at least 2 instances until ")
            && words.ends_with("may revise the count after that"),
        "{body}"
    );
    // The scaling status and the overview show the hold and when it ends.
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
    let hold = &status["services"][0]["manual_hold"];
    assert_eq!(hold["instances"], 2, "{status}");
    assert_eq!(hold["keep"], "at least", "{status}");
    assert_eq!(hold["until_unix_ms"].as_u64(), Some(until), "{status}");
    let training = fleet.service("training").await.unwrap();
    assert_eq!(
        training["manual_hold"]["until_unix_ms"].as_u64(),
        Some(until),
        "{training}"
    );
    // With no load, the autoscaler wants 1 but keeps the manual 2 while the hold lasts,
    // and says why.
    eventually(
        Duration::from_secs(8),
        "a decision held by the manual scale",
        || async {
            let t = fleet.service("training").await.unwrap();
            t["last_decision"]["reason"]
                .as_str()
                .is_some_and(|r| r.contains("a manual scale keeps at least 2 instances"))
        },
    )
    .await;
    assert_eq!(instances(&fleet.service("training").await.unwrap()), 2);
    // Once the hold has ended, the autoscaler revises the count: a scale-down decision,
    // in words, in the scaling status.
    let status_now = || async {
        fleet
            .call(
                Method::GET,
                "/api/v1/system/scaling-status",
                None,
                None,
                None,
            )
            .await
            .unwrap()
            .2
    };
    eventually(
        Duration::from_secs(40),
        "a scale-down decision after the hold",
        || async {
            status_now().await["services"][0]["last_decisions"]
                .as_array()
                .unwrap()
                .iter()
                .any(|d| d["action"]["kind"] == "scale down")
        },
    )
    .await;
    eventually(
        Duration::from_secs(40),
        "back to 1 after the hold",
        || async {
            let t = fleet.service("training").await.unwrap();
            instances(&t) == 1 && t["manual_hold"].is_null()
        },
    )
    .await;
    let status = status_now().await;
    let mut off = Vec::new();
    off_convention(&status, "scaling-status", &mut off);
    off_convention(&fleet.overview().await.unwrap(), "overview", &mut off);
    assert!(off.is_empty(), "{off:?}");
}
