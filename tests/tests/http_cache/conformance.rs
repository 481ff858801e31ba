//! The table of RFC 9111 cases (the main conformance run) and the origin it uses.

use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::IntoResponse;
use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tower::ServiceExt;
use tower_cache::http::{HttpCacheLayer, HttpPolicy};
use tower_cache::{Cache, MemoryTier};
use tower_layer::Layer;

use super::cases::CASES;
use super::*;

#[derive(Clone, Default)]
pub(crate) struct Origin {
    pub(crate) calls: Arc<AtomicUsize>,
}

pub(crate) async fn origin(
    State(o): State<Origin>,
    Query(q): Query<HashMap<String, String>>,
    req_headers: HeaderMap,
) -> impl IntoResponse {
    let n = o.calls.fetch_add(1, Ordering::SeqCst) + 1;
    let mut h = HeaderMap::new();
    let set = |h: &mut HeaderMap, name: &'static str, v: &str| {
        h.append(name, HeaderValue::from_str(v).unwrap());
    };
    let now = SystemTime::now();
    let date = |offset: i64| {
        let t = if offset >= 0 {
            now + Duration::from_secs(offset as u64)
        } else {
            now - Duration::from_secs((-offset) as u64)
        };
        httpdate::fmt_http_date(t)
    };
    if let Some(v) = q.get("cc") {
        // `pfor`: the response to that Accept-Language is private, the others as `cc`.
        let private = q.get("pfor").is_some_and(|l| {
            req_headers
                .get("accept-language")
                .is_some_and(|al| al.as_bytes() == l.as_bytes())
        });
        set(&mut h, "cache-control", if private { "private" } else { v });
    }
    if let Some(v) = q.get("vary") {
        set(&mut h, "vary", v);
    }
    if let Some(v) = q.get("etag") {
        set(&mut h, "etag", v);
    }
    if let Some(v) = q.get("lm") {
        set(&mut h, "last-modified", &date(v.parse().unwrap()));
    }
    match q.get("exp").map(String::as_str) {
        Some("0") => set(&mut h, "expires", "0"),
        Some(v) => set(&mut h, "expires", &date(v.parse().unwrap())),
        None => {}
    }
    if let Some(v) = q.get("date") {
        set(&mut h, "date", &date(v.parse().unwrap()));
    }
    if let Some(v) = q.get("age") {
        set(&mut h, "age", v);
    }
    if q.contains_key("cookie") {
        set(&mut h, "set-cookie", "session=secret-of-this-user");
    }
    if let Some(v) = q.get("skey") {
        set(&mut h, "surrogate-key", v);
    }
    if let Some(v) = q.get("loc") {
        set(&mut h, "location", v);
    }
    if q.contains_key("hop") {
        set(&mut h, "connection", "x-private-hop");
        set(&mut h, "x-private-hop", "1");
        set(&mut h, "keep-alive", "timeout=5");
    }
    // Echo what the response varied on, so a test can see which variant it got.
    let mut body = format!("call {n}");
    for name in [
        "accept-encoding",
        "accept-language",
        "authorization",
        "cookie",
    ] {
        if let Some(v) = req_headers.get(name) {
            body.push_str(&format!(" {name}={}", v.to_str().unwrap_or("?")));
        }
    }
    if let Some(len) = q.get("len") {
        body = "x".repeat(len.parse().unwrap());
        body.push_str(&format!(" call {n}"));
    }
    let status = q.get("status").map_or(StatusCode::OK, |s| {
        StatusCode::from_u16(s.parse().unwrap()).unwrap()
    });
    if req_headers.contains_key("x-fail") {
        return (StatusCode::INTERNAL_SERVER_ERROR, h, format!("failure {n}"));
    }
    // Conditional requests: 304 when the validator matches.
    let etag_matches = match (req_headers.get("if-none-match"), q.get("etag")) {
        (Some(inm), Some(etag)) => inm.to_str().unwrap_or("") == etag,
        _ => false,
    };
    let unmodified = req_headers.contains_key("if-modified-since")
        && q.contains_key("lm")
        && !req_headers.contains_key("if-none-match");
    if etag_matches || unmodified {
        if q.contains_key("upd") {
            set(&mut h, "x-updated", "by-304");
        }
        if q.contains_key("c304") {
            set(&mut h, "set-cookie", "session=set-by-a-304");
        }
        return (StatusCode::NOT_MODIFIED, h, String::new());
    }
    (status, h, body)
}

/// An extra check of a response's headers and body.
pub(crate) type Check = fn(&http::HeaderMap, &str) -> Result<(), String>;

/// One request of a case and what must come of it.
pub(crate) struct Step {
    pub(crate) method: &'static str,
    pub(crate) path: &'static str,
    pub(crate) headers: &'static [(&'static str, &'static str)],
    /// Whether the origin must be asked (a miss or pass) or not (a hit).
    pub(crate) origin: bool,
    /// Whether to check `origin` (not for steps that start a background refresh).
    pub(crate) origin_checked: bool,
    pub(crate) status: u16,
    /// Extra check on the response.
    pub(crate) check: Option<Check>,
}

pub(crate) const fn get(path: &'static str, origin: bool) -> Step {
    Step {
        method: "GET",
        path,
        headers: &[],
        origin,
        origin_checked: true,
        status: 200,
        check: None,
    }
}

pub(crate) const fn with(
    method: &'static str,
    path: &'static str,
    headers: &'static [(&'static str, &'static str)],
    origin: bool,
    status: u16,
) -> Step {
    Step {
        method,
        path,
        headers,
        origin,
        origin_checked: true,
        status,
        check: None,
    }
}

/// A step that starts a background refresh: whether the origin is asked is not checked.
pub(crate) const fn in_background(mut step: Step) -> Step {
    step.origin_checked = false;
    step
}

pub(crate) const fn checked(mut step: Step, check: Check) -> Step {
    step.check = Some(check);
    step
}

pub(crate) struct Case {
    pub(crate) name: &'static str,
    pub(crate) rfc: &'static str,
    pub(crate) policy: fn() -> HttpPolicy,
    pub(crate) steps: &'static [Step],
}

pub(crate) fn default_policy() -> HttpPolicy {
    HttpPolicy::new()
}

pub(crate) const fn case(name: &'static str, rfc: &'static str, steps: &'static [Step]) -> Case {
    Case {
        name,
        rfc,
        policy: default_policy,
        steps,
    }
}

pub(crate) fn has_age(h: &http::HeaderMap, _: &str) -> Result<(), String> {
    h.get("age")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .map(drop)
        .ok_or_else(|| "no valid Age header on a hit".to_string())
}

pub(crate) fn age_at_least_100(h: &http::HeaderMap, _: &str) -> Result<(), String> {
    let age: u64 = h
        .get("age")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .ok_or("no Age")?;
    (age >= 100).then_some(()).ok_or(format!("Age {age} < 100"))
}

pub(crate) fn no_hop_by_hop(h: &http::HeaderMap, _: &str) -> Result<(), String> {
    for name in ["x-private-hop", "keep-alive", "connection"] {
        if h.contains_key(name) {
            return Err(format!("{name} replayed from the cache"));
        }
    }
    Ok(())
}

pub(crate) fn revalidated_first_call(h: &http::HeaderMap, body: &str) -> Result<(), String> {
    expect_header(h, "x-cache", "REVALIDATED")?;
    (body == "call 1")
        .then_some(())
        .ok_or(format!("body {body:?}, expected the stored \"call 1\""))
}

pub(crate) fn updated_by_304(h: &http::HeaderMap, _: &str) -> Result<(), String> {
    expect_header(h, "x-updated", "by-304")
}

pub(crate) fn stale_first_call(h: &http::HeaderMap, body: &str) -> Result<(), String> {
    expect_header(h, "x-cache", "STALE")?;
    (body == "call 1")
        .then_some(())
        .ok_or(format!("body {body:?}, expected the stored \"call 1\""))
}

pub(crate) fn empty_body(_: &http::HeaderMap, body: &str) -> Result<(), String> {
    body.is_empty()
        .then_some(())
        .ok_or(format!("body {body:?} on a HEAD or 304"))
}

pub(crate) fn gzip_variant(_: &http::HeaderMap, body: &str) -> Result<(), String> {
    body.contains("accept-encoding=gzip")
        .then_some(())
        .ok_or(format!("wrong variant: {body}"))
}

pub(crate) fn br_variant(_: &http::HeaderMap, body: &str) -> Result<(), String> {
    body.contains("accept-encoding=br")
        .then_some(())
        .ok_or(format!("wrong variant: {body}"))
}

pub(crate) fn whole_first_call(_: &http::HeaderMap, body: &str) -> Result<(), String> {
    body.starts_with("call 1")
        .then_some(())
        .ok_or(format!("expected the stored body of call 1, got {body:?}"))
}

pub(crate) fn x_cache_hit(h: &http::HeaderMap, _: &str) -> Result<(), String> {
    expect_header(h, "x-cache", "HIT-MEM")
}

pub(crate) fn x_cache_miss(h: &http::HeaderMap, _: &str) -> Result<(), String> {
    expect_header(h, "x-cache", "MISS")
}

pub(crate) fn x_cache_pass(h: &http::HeaderMap, _: &str) -> Result<(), String> {
    expect_header(h, "x-cache", "PASS")
}

pub(crate) fn expect_header(h: &http::HeaderMap, name: &str, value: &str) -> Result<(), String> {
    match h.get(name).and_then(|v| v.to_str().ok()) {
        Some(v) if v == value => Ok(()),
        other => Err(format!("{name}: {other:?}, expected {value}")),
    }
}

pub(crate) async fn run_case(case: &Case) -> Result<(), String> {
    let calls = Arc::new(AtomicUsize::new(0));
    let app = axum::Router::new().fallback(origin).with_state(Origin {
        calls: calls.clone(),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let store = Cache::new(MemoryTier::builder().max_entries(1000).build().unwrap());
    let svc = HttpCacheLayer::new(store)
        .policy((case.policy)())
        .layer(client);
    let result = async {
        for (i, step) in case.steps.iter().enumerate() {
            let before = calls.load(Ordering::SeqCst);
            let mut req = Request::builder()
                .method(step.method)
                .uri(format!("http://{addr}{}", step.path));
            for (n, v) in step.headers {
                req = req.header(*n, *v);
            }
            let res = svc
                .clone()
                .oneshot(req.body(Full::default()).unwrap())
                .await
                .map_err(|e| format!("step {i}: {e}"))?;
            let (parts, body) = res.into_parts();
            let body = body.collect().await.map_err(|e| format!("step {i}: {e}"))?;
            let body = String::from_utf8_lossy(&body.to_bytes()).into_owned();
            let asked = calls.load(Ordering::SeqCst) > before;
            if step.origin_checked && asked != step.origin {
                return Err(format!(
                    "step {i} ({} {}): origin {} asked, expected {}; x-cache {:?}",
                    step.method,
                    step.path,
                    if asked { "was" } else { "was not" },
                    if step.origin { "asked" } else { "not asked" },
                    parts.headers.get("x-cache")
                ));
            }
            if parts.status.as_u16() != step.status {
                return Err(format!(
                    "step {i}: status {}, expected {}",
                    parts.status, step.status
                ));
            }
            if let Some(check) = step.check {
                check(&parts.headers, &body).map_err(|e| format!("step {i}: {e}"))?;
            }
        }
        Ok(())
    }
    .await;
    server.abort();
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc_9111_conformance() {
    tokio::time::timeout(BOUND, async {
        assert!(
            CASES.len() >= 60,
            "{} cases; the suite asks for at least 60",
            CASES.len()
        );
        let mut failures = Vec::new();
        for case in CASES {
            if let Err(e) = run_case(case).await {
                failures.push(format!("[RFC {}] {}: {e}", case.rfc, case.name));
            }
        }
        assert!(
            failures.is_empty(),
            "{} of {} cases failed:\n{}",
            failures.len(),
            CASES.len(),
            failures.join("\n")
        );
    })
    .await
    .expect("bounded");
}

// === no user's private response reaches another ===
