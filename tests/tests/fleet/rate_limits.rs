//! Per-client rate limiting at the gateway: by address, then by user, in bounded buckets.

use http::{Method, StatusCode};
use support::FleetProcess;

use crate::helpers::*;

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
