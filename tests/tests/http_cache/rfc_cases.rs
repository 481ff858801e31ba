//! A table runner for cases that need response fields the query-string origin of
//! `main.rs` cannot spell (dates in every form, targeted fields, odd `Age` values): each
//! case gives its response head as a function of the time it is sent, and a list of
//! requests, each with whether the origin must be asked. The origin is a real axum server
//! on 127.0.0.1, reached through hyper's client with the cache layer in between; each
//! case runs on a fresh store.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tower::ServiceExt;
use tower_cache::http::{HttpCacheLayer, HttpPolicy};
use tower_cache::{Cache, MemoryTier};
use tower_layer::Layer;

/// A response head: status and fields, made when the origin answers.
pub(crate) type Head = fn(SystemTime) -> (u16, Vec<(&'static str, String)>);

/// A check of a response (the hit's head, say).
pub(crate) type Check = fn(&http::HeaderMap) -> Result<(), String>;

pub(crate) struct RfcCase {
    pub(crate) name: &'static str,
    /// The section checked, and where deployed caches disagree, the choice made.
    pub(crate) rfc: &'static str,
    pub(crate) policy: fn() -> HttpPolicy,
    pub(crate) layer: fn(HttpCacheLayer) -> HttpCacheLayer,
    pub(crate) head: Head,
    /// Requests in order: their fields, and whether the origin must be asked.
    pub(crate) steps: Vec<(&'static [(&'static str, &'static str)], bool)>,
    /// Checked on the last response.
    pub(crate) check: Option<Check>,
}

/// A case of two plain GETs: the second is a hit when `stored`.
pub(crate) fn two_gets(
    name: &'static str,
    rfc: &'static str,
    policy: fn() -> HttpPolicy,
    head: Head,
    stored: bool,
) -> RfcCase {
    RfcCase {
        name,
        rfc,
        policy,
        layer: |l| l,
        head,
        steps: vec![(&[], true), (&[], !stored)],
        check: None,
    }
}

/// An HTTP-date `offset` seconds from `now`, in IMF-fixdate.
pub(crate) fn imf(now: SystemTime, offset: i64) -> String {
    httpdate::fmt_http_date(shift(now, offset))
}

pub(crate) fn shift(now: SystemTime, offset: i64) -> SystemTime {
    if offset >= 0 {
        now + Duration::from_secs(offset as u64)
    } else {
        now - Duration::from_secs(offset.unsigned_abs())
    }
}

pub(crate) fn fields(list: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
    list.iter().map(|(n, v)| (*n, v.to_string())).collect()
}

async fn run(case: &RfcCase) -> Result<(), String> {
    let calls = Arc::new(AtomicUsize::new(0));
    let head = case.head;
    let counter = calls.clone();
    let app = axum::Router::new().fallback(move || {
        let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
        async move {
            let (status, list) = head(SystemTime::now());
            let mut h = HeaderMap::new();
            for (name, value) in list {
                h.append(
                    HeaderName::from_static(name),
                    HeaderValue::from_str(&value).unwrap(),
                );
            }
            (
                StatusCode::from_u16(status).unwrap(),
                h,
                format!("call {n}"),
            )
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let store = Cache::new(MemoryTier::builder().max_entries(1000).build().unwrap());
    let svc = (case.layer)(HttpCacheLayer::new(store).policy((case.policy)())).layer(client);
    let result = async {
        let mut last = None;
        for (i, (fields, origin)) in case.steps.iter().enumerate() {
            let before = calls.load(Ordering::SeqCst);
            let mut req = Request::get(format!("http://{addr}/r"));
            for (n, v) in *fields {
                req = req.header(*n, *v);
            }
            let res = svc
                .clone()
                .oneshot(req.body(Full::default()).unwrap())
                .await
                .map_err(|e| format!("step {i}: {e}"))?;
            let (parts, body) = res.into_parts();
            body.collect().await.map_err(|e| format!("step {i}: {e}"))?;
            let asked = calls.load(Ordering::SeqCst) > before;
            if asked != *origin {
                return Err(format!(
                    "step {i}: origin {}, expected {}; x-cache {:?}",
                    if asked { "asked" } else { "not asked" },
                    if *origin { "asked" } else { "not asked" },
                    parts.headers.get("x-cache")
                ));
            }
            last = Some(parts.headers);
        }
        if let (Some(check), Some(h)) = (case.check, last) {
            check(&h)?;
        }
        Ok(())
    }
    .await;
    server.abort();
    result
}

/// Runs every case (bounded in time) and fails with the list of those that failed.
pub(crate) async fn run_all(cases: &[RfcCase]) {
    tokio::time::timeout(Duration::from_secs(60), async {
        let mut failures = Vec::new();
        for case in cases {
            if let Err(e) = run(case).await {
                failures.push(format!("[RFC {}] {}: {e}", case.rfc, case.name));
            }
        }
        assert!(
            failures.is_empty(),
            "{} of {} cases failed:\n{}",
            failures.len(),
            cases.len(),
            failures.join("\n")
        );
    })
    .await
    .expect("bounded");
}

/// The header `name` of a response is `value`.
pub(crate) fn expect(h: &http::HeaderMap, name: &str, value: &str) -> Result<(), String> {
    match h.get(name).map(|v| v.as_bytes()) {
        Some(v) if v == value.as_bytes() => Ok(()),
        other => Err(format!(
            "{name}: {:?}, expected {value:?}",
            other.map(String::from_utf8_lossy)
        )),
    }
}
