//! The fleet's orchestrator API on a real socket over a real process scaler: bearer
//! token, 409 beyond the policy, status and load distribution as JSON.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{Empty, Full};
use tower_autoscale::{DecisionEngine, LoadSource, ProcessScaler, ScalingManager, ScalingPolicy};
use tower_balance_ext::{BalancerBuilder, HttpEndpoint, Pick};

const BOUND: Duration = Duration::from_secs(60);
const TOKEN: &str = "a long orchestrator token";

async fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> (StatusCode, serde_json::Value) {
    let authorization = token.map(|t| format!("Bearer {t}"));
    call_as(addr, method, path, authorization.as_deref()).await
}

/// The same with the whole `Authorization` value.
async fn call_as(
    addr: SocketAddr,
    method: &str,
    path: &str,
    authorization: Option<&str>,
) -> (StatusCode, serde_json::Value) {
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string());
    if let Some(a) = authorization {
        req = req.header("authorization", a);
    }
    let (status, body) = support::send(addr, req.body(Empty::<Bytes>::new()).unwrap())
        .await
        .unwrap();
    (
        status,
        serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_orchestrator_scales_within_the_policy_and_reports_as_json() {
    tokio::time::timeout(BOUND, async {
        let cfg = support::instance_server_config(env!("CARGO_BIN_EXE_instance-server")).unwrap();
        let (scaler, discovery) = ProcessScaler::new(cfg, |addr: SocketAddr| {
            HttpEndpoint::<Full<Bytes>>::new(addr)
        })
        .unwrap();
        let balancer = BalancerBuilder::new(Pick::LeastConnections)
            .build(discovery)
            .unwrap();
        scaler.scale_to(1).await.unwrap();
        let engine = DecisionEngine::new();
        let s2 = scaler.clone();
        engine
            .add_service(
                "training",
                ScalingPolicy {
                    min_instances: 1,
                    max_instances: 2,
                    ..Default::default()
                },
                move || s2.sample(),
            )
            .unwrap();
        let manager = ScalingManager::new(engine);
        manager.add_scaler("training", scaler.clone());
        let loads = BTreeMap::from([("training".to_string(), balancer.stats())]);
        let app = examples::orchestrator::router(manager, loads, TOKEN.into());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });

        let up = "/api/v1/system/scale/training/up";
        let down = "/api/v1/system/scale/training/down";
        // No token, or another: 401, nothing changes.
        assert_eq!(
            call(addr, "POST", up, None).await.0,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            call(addr, "POST", up, Some("not the token")).await.0,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(scaler.current(), 1);
        // Up to the policy's max, then 409 (the scheme in any case, RFC 9110 §11.1).
        let (s, body) = call_as(addr, "POST", up, Some(&format!("bearer {TOKEN}"))).await;
        assert_eq!((s, body["instances"].as_u64()), (StatusCode::OK, Some(2)));
        let (s, body) = call(addr, "POST", up, Some(TOKEN)).await;
        assert_eq!(s, StatusCode::CONFLICT);
        assert!(
            body["error"]
                .as_str()
                .unwrap()
                .contains("outside the policy's 1..=2"),
            "{body}"
        );
        assert_eq!(scaler.current(), 2, "nothing changed");
        // Down to the min, then 409.
        assert_eq!(
            call(addr, "POST", down, Some(TOKEN)).await.0,
            StatusCode::OK
        );
        assert_eq!(
            call(addr, "POST", down, Some(TOKEN)).await.0,
            StatusCode::CONFLICT
        );
        assert_eq!(scaler.current(), 1);
        assert_eq!(
            call(addr, "POST", "/api/v1/system/scale/nope/up", Some(TOKEN))
                .await
                .0,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            call(
                addr,
                "POST",
                "/api/v1/system/scale/training/sideways",
                Some(TOKEN)
            )
            .await
            .0,
            StatusCode::BAD_REQUEST
        );

        let (s, status) = call(addr, "GET", "/api/v1/system/scaling-status", None).await;
        assert_eq!(s, StatusCode::OK);
        let svc = &status["services"][0];
        assert_eq!(svc["name"], "training");
        assert_eq!(svc["instances"].as_array().unwrap().len(), 1);
        assert_eq!(svc["policy"]["max_instances"], 2);
        let history = svc["history"].as_array().unwrap();
        assert!(
            history
                .iter()
                .any(|e| e["by"] == "manual" && e["error"].is_null()),
            "{svc}"
        );
        assert!(history
            .iter()
            .any(|e| e["error"].as_str().is_some_and(|m| m.contains("outside"))));

        // Some traffic, then the distribution.
        for _ in 0..5 {
            let req = Request::get("/work").body(Full::new(Bytes::new())).unwrap();
            tower::ServiceExt::oneshot(balancer.clone(), req)
                .await
                .unwrap();
        }
        let (s, dist) = call(addr, "GET", "/api/v1/system/load-distribution", None).await;
        assert_eq!(s, StatusCode::OK);
        let t = &dist["services"][0];
        assert_eq!(t["service"], "training");
        assert_eq!(t["requests"], 5);
        assert_eq!(t["instances"].as_array().unwrap().len(), 1);
        assert_eq!(t["instances"][0]["share"], 1.0);
        scaler.shutdown().await;
    })
    .await
    .expect("bounded");
}
