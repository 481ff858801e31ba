//! The orchestrator API through the gateway: authorisation, bounds, unknown services and
//! directions; the overview's times.

use std::time::Duration;

use http::{Method, StatusCode};
use support::FleetProcess;

use crate::helpers::*;

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
    // States and kinds in lower-case words, numbers rounded, in every JSON answer.
    assert_eq!(training["instances"][0]["state"], "ready", "{status}");
    assert_eq!(
        training["last_decisions"][0]["action"]["kind"], "hold",
        "{status}"
    );
    for path in [
        "/api/v1/system/scaling-status",
        "/api/v1/system/overview",
        "/api/v1/system/load-distribution",
    ] {
        let answer = fleet
            .call(Method::GET, path, None, None, None)
            .await
            .unwrap()
            .2;
        let mut off = Vec::new();
        off_convention(&answer, path, &mut off);
        assert!(off.is_empty(), "{off:?}");
    }
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
    // Every instance says when its health was last checked and how long it has been in
    // its state, counted from the overview's own moment.
    eventually(
        Duration::from_secs(10),
        "every instance checked",
        || async {
            let o = fleet.overview().await.unwrap();
            let at = o["at_unix_ms"].as_u64().unwrap();
            let all: Vec<&serde_json::Value> = o["services"]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|s| s["instances"].as_array().unwrap())
                .collect();
            all.len() >= 3
                && all.iter().all(|i| {
                    let (Some(checked), Some(ago), Some(since), Some(for_ms)) = (
                        i["last_check_unix_ms"].as_u64(),
                        i["last_check_ms_ago"].as_u64(),
                        i["state_since_unix_ms"].as_u64(),
                        i["state_since_ms_ago"].as_u64(),
                    ) else {
                        return false;
                    };
                    checked + ago == at && since + for_ms == at && since <= at
                })
        },
    )
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
