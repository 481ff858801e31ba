//! The probe endpoints: status codes, JSON, HEAD, terse mode.

use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use tower::ServiceExt;
use tower_health::{HealthEndpoints, Probe, Probes};

async fn call(
    ep: &HealthEndpoints,
    method: Method,
    path: &str,
) -> (StatusCode, http::HeaderMap, String) {
    let req = Request::builder()
        .method(method)
        .uri(path)
        .body(Empty::<Bytes>::new())
        .unwrap();
    let res = ep.clone().oneshot(req).await.unwrap();
    let (parts, body) = res.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    (
        parts.status,
        parts.headers,
        String::from_utf8(body.to_vec()).unwrap(),
    )
}

#[tokio::test(start_paused = true)]
async fn endpoints_report_each_probe_kind_with_status_codes() {
    let probes = Probes::new();
    probes
        .register(
            Probe::startup("init", || async { Ok::<_, String>(()) }).period(Duration::from_secs(1)),
        )
        .unwrap();
    probes
        .register(
            Probe::readiness("db", || async { Err::<(), _>("refused \"quoted\"") })
                .period(Duration::from_secs(1))
                .failure_threshold(1),
        )
        .unwrap();
    let ep = HealthEndpoints::new(probes.clone());

    // Before any probe ran: not started, not ready, live.
    assert_eq!(call(&ep, Method::GET, "/health/startup").await.0, 503);
    assert_eq!(call(&ep, Method::GET, "/health/ready").await.0, 503);
    assert_eq!(call(&ep, Method::GET, "/health/live").await.0, 200);

    probes.start();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(call(&ep, Method::GET, "/health/startup").await.0, 200);
    assert_eq!(call(&ep, Method::GET, "/health/ready").await.0, 503);

    let (status, headers, json) = call(&ep, Method::GET, "/health").await;
    assert_eq!(status, 503);
    assert_eq!(headers["content-type"], "application/json");
    assert!(
        json.starts_with("{\"status\":\"fail\",\"started\":true,\"ready\":false,\"live\":true"),
        "{json}"
    );
    assert!(
        json.contains("\"name\":\"db\",\"kind\":\"readiness\",\"status\":\"fail\""),
        "{json}"
    );
    assert!(json.contains("\"consecutive_failures\":"), "{json}");
    assert!(
        json.contains("\"message\":\"refused \\\"quoted\\\"\""),
        "quotes are escaped: {json}"
    );
    assert!(
        json.contains("\"name\":\"init\",\"kind\":\"startup\",\"status\":\"pass\""),
        "{json}"
    );
    assert!(json.contains("\"last_check_unix_ms\":1"), "{json}");
}

#[tokio::test]
async fn head_unknown_paths_and_methods() {
    let ep = HealthEndpoints::new(Probes::new());
    let (status, _, body) = call(&ep, Method::HEAD, "/health/ready").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, ""));
    assert_eq!(call(&ep, Method::GET, "/health/nope").await.0, 404);
    assert_eq!(call(&ep, Method::GET, "/elsewhere").await.0, 404);
    let (status, headers, _) = call(&ep, Method::POST, "/health").await;
    assert_eq!(status, 405);
    assert_eq!(headers["allow"], "GET, HEAD");
    let (status, _, json) = call(&ep, Method::GET, "/health").await;
    assert_eq!(status, 200);
    assert_eq!(json, "{\"status\":\"pass\",\"started\":true,\"ready\":true,\"live\":true,\"draining\":false,\"probes\":[]}");
}

#[tokio::test]
async fn terse_mode_hides_probe_details() {
    let probes = Probes::new();
    probes
        .register(Probe::readiness("secret-db-host", || async {
            Ok::<_, String>(())
        }))
        .unwrap();
    let ep = HealthEndpoints::new(probes).terse(true);
    let (_, _, json) = call(&ep, Method::GET, "/health").await;
    assert!(!json.contains("secret-db-host"), "{json}");
    assert!(!json.contains("probes"), "{json}");
}

#[tokio::test]
async fn draining_answers_503_on_ready_and_a_custom_prefix_works() {
    let probes = Probes::new();
    let ep = HealthEndpoints::new(probes.clone()).prefix("/_sys/");
    assert_eq!(call(&ep, Method::GET, "/_sys/ready").await.0, 200);
    probes.set_draining(true);
    assert_eq!(call(&ep, Method::GET, "/_sys/ready").await.0, 503);
    assert_eq!(call(&ep, Method::GET, "/_sys/live").await.0, 200);
    let (_, _, json) = call(&ep, Method::GET, "/_sys").await;
    assert!(json.contains("\"draining\":true"));
}
