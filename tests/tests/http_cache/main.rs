//! RFC 9111 conformance of the HTTP cache, table-driven, against a real axum origin on
//! 127.0.0.1 reached through hyper's client, with the cache layer in between.
//!
//! The origin answers `/<case>/<anything>?<settings>` with the response the settings
//! describe (`cc` Cache-Control, `vary`, `etag`, `lm` Last-Modified, `exp` Expires,
//! `date`, `age`, `status`, `cookie`, `skey`, `len`, `loc`), and a body that names the
//! origin call (`call 3`), so a step can tell a stored response from a fresh one. Each
//! case names the RFC section it checks and runs on a fresh store.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::IntoResponse;
use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tower::ServiceExt;
use tower_cache::http::{HttpCacheLayer, HttpPolicy};
use tower_cache::{Cache, MemoryTier};
use tower_layer::Layer;

mod freshness;
mod interim;
mod proxy_policy;
mod range;
mod rfc_cases;
mod targeted;
mod vary;

const BOUND: Duration = Duration::from_secs(60);

#[derive(Clone, Default)]
struct Origin {
    calls: Arc<AtomicUsize>,
}

async fn origin(
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
type Check = fn(&http::HeaderMap, &str) -> Result<(), String>;

/// One request of a case and what must come of it.
struct Step {
    method: &'static str,
    path: &'static str,
    headers: &'static [(&'static str, &'static str)],
    /// Whether the origin must be asked (a miss or pass) or not (a hit).
    origin: bool,
    /// Whether to check `origin` (not for steps that start a background refresh).
    origin_checked: bool,
    status: u16,
    /// Extra check on the response.
    check: Option<Check>,
}

const fn get(path: &'static str, origin: bool) -> Step {
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

const fn with(
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
const fn in_background(mut step: Step) -> Step {
    step.origin_checked = false;
    step
}

const fn checked(mut step: Step, check: Check) -> Step {
    step.check = Some(check);
    step
}

struct Case {
    name: &'static str,
    rfc: &'static str,
    policy: fn() -> HttpPolicy,
    steps: &'static [Step],
}

fn default_policy() -> HttpPolicy {
    HttpPolicy::new()
}

const fn case(name: &'static str, rfc: &'static str, steps: &'static [Step]) -> Case {
    Case {
        name,
        rfc,
        policy: default_policy,
        steps,
    }
}

fn has_age(h: &http::HeaderMap, _: &str) -> Result<(), String> {
    h.get("age")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .map(drop)
        .ok_or_else(|| "no valid Age header on a hit".to_string())
}

fn age_at_least_100(h: &http::HeaderMap, _: &str) -> Result<(), String> {
    let age: u64 = h
        .get("age")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .ok_or("no Age")?;
    (age >= 100).then_some(()).ok_or(format!("Age {age} < 100"))
}

fn no_hop_by_hop(h: &http::HeaderMap, _: &str) -> Result<(), String> {
    for name in ["x-private-hop", "keep-alive", "connection"] {
        if h.contains_key(name) {
            return Err(format!("{name} replayed from the cache"));
        }
    }
    Ok(())
}

fn revalidated_first_call(h: &http::HeaderMap, body: &str) -> Result<(), String> {
    expect_header(h, "x-cache", "REVALIDATED")?;
    (body == "call 1")
        .then_some(())
        .ok_or(format!("body {body:?}, expected the stored \"call 1\""))
}

fn updated_by_304(h: &http::HeaderMap, _: &str) -> Result<(), String> {
    expect_header(h, "x-updated", "by-304")
}

fn stale_first_call(h: &http::HeaderMap, body: &str) -> Result<(), String> {
    expect_header(h, "x-cache", "STALE")?;
    (body == "call 1")
        .then_some(())
        .ok_or(format!("body {body:?}, expected the stored \"call 1\""))
}

fn empty_body(_: &http::HeaderMap, body: &str) -> Result<(), String> {
    body.is_empty()
        .then_some(())
        .ok_or(format!("body {body:?} on a HEAD or 304"))
}

fn gzip_variant(_: &http::HeaderMap, body: &str) -> Result<(), String> {
    body.contains("accept-encoding=gzip")
        .then_some(())
        .ok_or(format!("wrong variant: {body}"))
}

fn br_variant(_: &http::HeaderMap, body: &str) -> Result<(), String> {
    body.contains("accept-encoding=br")
        .then_some(())
        .ok_or(format!("wrong variant: {body}"))
}

fn whole_first_call(_: &http::HeaderMap, body: &str) -> Result<(), String> {
    body.starts_with("call 1")
        .then_some(())
        .ok_or(format!("expected the stored body of call 1, got {body:?}"))
}

fn x_cache_hit(h: &http::HeaderMap, _: &str) -> Result<(), String> {
    expect_header(h, "x-cache", "HIT-MEM")
}

fn x_cache_miss(h: &http::HeaderMap, _: &str) -> Result<(), String> {
    expect_header(h, "x-cache", "MISS")
}

fn x_cache_pass(h: &http::HeaderMap, _: &str) -> Result<(), String> {
    expect_header(h, "x-cache", "PASS")
}

fn expect_header(h: &http::HeaderMap, name: &str, value: &str) -> Result<(), String> {
    match h.get(name).and_then(|v| v.to_str().ok()) {
        Some(v) if v == value => Ok(()),
        other => Err(format!("{name}: {other:?}, expected {value}")),
    }
}

const CASES: &[Case] = &[
    // --- storing (RFC 9111 section 3) ---
    case(
        "max-age is stored and served",
        "9111 3, 4.2.1",
        &[
            checked(get("/a/x?cc=max-age%3D60", true), x_cache_miss),
            checked(get("/a/x?cc=max-age%3D60", false), x_cache_hit),
        ],
    ),
    case(
        "a hit carries Age",
        "9111 5.1",
        &[
            get("/b/x?cc=max-age%3D60", true),
            checked(get("/b/x?cc=max-age%3D60", false), has_age),
        ],
    ),
    case(
        "s-maxage is stored",
        "9111 5.2.2.10",
        &[
            get("/c/x?cc=s-maxage%3D60", true),
            get("/c/x?cc=s-maxage%3D60", false),
        ],
    ),
    case(
        "s-maxage wins over max-age=0 in a shared cache",
        "9111 5.2.2.10",
        &[
            get("/d/x?cc=max-age%3D0,s-maxage%3D60", true),
            get("/d/x?cc=max-age%3D0,s-maxage%3D60", false),
        ],
    ),
    case(
        "s-maxage=0 wins over max-age",
        "9111 5.2.2.10",
        &[
            get("/e/x?cc=max-age%3D60,s-maxage%3D0", true),
            get("/e/x?cc=max-age%3D60,s-maxage%3D0", true),
        ],
    ),
    case(
        "Expires in the future is stored",
        "9111 5.3",
        &[get("/f/x?exp=60", true), get("/f/x?exp=60", false)],
    ),
    case(
        "Expires in the past is not served",
        "9111 5.3",
        &[get("/g/x?exp=-60", true), get("/g/x?exp=-60", true)],
    ),
    case(
        "Expires: 0 is a time in the past",
        "9111 5.3",
        &[get("/h/x?exp=0", true), get("/h/x?exp=0", true)],
    ),
    case(
        "max-age wins over Expires",
        "9111 5.3",
        &[
            get("/i/x?cc=max-age%3D60&exp=-60", true),
            get("/i/x?cc=max-age%3D60&exp=-60", false),
        ],
    ),
    case(
        "no-store is never stored",
        "9111 5.2.2.5",
        &[
            checked(get("/j/x?cc=no-store,max-age%3D60", true), x_cache_pass),
            get("/j/x?cc=no-store,max-age%3D60", true),
        ],
    ),
    case(
        "private is never stored by a shared cache",
        "9111 5.2.2.7",
        &[
            get("/k/x?cc=private,max-age%3D60", true),
            get("/k/x?cc=private,max-age%3D60", true),
        ],
    ),
    case(
        "qualified private is treated as private",
        "9111 5.2.2.7",
        &[
            get("/l/x?cc=private%3D%22set-cookie%22,max-age%3D60", true),
            get("/l/x?cc=private%3D%22set-cookie%22,max-age%3D60", true),
        ],
    ),
    case(
        "no-cache responses are not served without validation",
        "9111 5.2.2.4",
        &[
            get("/m/x?cc=no-cache,max-age%3D60", true),
            get("/m/x?cc=no-cache,max-age%3D60", true),
        ],
    ),
    case(
        "max-age=0 is not served without validation",
        "9111 4.2.1",
        &[
            get("/n/x?cc=max-age%3D0", true),
            get("/n/x?cc=max-age%3D0", true),
        ],
    ),
    case(
        "no freshness information: not stored by default",
        "9111 4.2.2",
        &[get("/o/x", true), get("/o/x", true)],
    ),
    case(
        "Last-Modified without freshness: validated on every use",
        "9111 4.2.2",
        &[get("/p/x?lm=-3600", true), get("/p/x?lm=-3600", true)],
    ),
    Case {
        name: "heuristic freshness when turned on",
        rfc: "9111 4.2.2",
        policy: || HttpPolicy::new().heuristic(0.1, Duration::from_secs(3600)),
        steps: &[get("/q/x?lm=-36000", true), get("/q/x?lm=-36000", false)],
    },
    Case {
        name: "a default TTL when turned on",
        rfc: "9111 4.2.2",
        policy: || HttpPolicy::new().default_ttl(Duration::from_secs(60)),
        steps: &[get("/r/x", true), get("/r/x", false)],
    },
    case(
        "404 with max-age is stored",
        "9110 15.1, 9111 3",
        &[
            with("GET", "/s/x?status=404&cc=max-age%3D60", &[], true, 404),
            with("GET", "/s/x?status=404&cc=max-age%3D60", &[], false, 404),
        ],
    ),
    case(
        "500 with explicit max-age is stored",
        "9111 3",
        &[
            with("GET", "/t/x?status=500&cc=max-age%3D60", &[], true, 500),
            with("GET", "/t/x?status=500&cc=max-age%3D60", &[], false, 500),
        ],
    ),
    Case {
        name: "500 without freshness is not stored even with a default TTL",
        rfc: "9110 15.1",
        policy: || HttpPolicy::new().default_ttl(Duration::from_secs(60)),
        steps: &[
            with("GET", "/u/x?status=500", &[], true, 500),
            with("GET", "/u/x?status=500", &[], true, 500),
        ],
    },
    case(
        "Set-Cookie responses are not stored",
        "9111 7.3 (security)",
        &[
            get("/v/x?cc=max-age%3D60&cookie=1", true),
            get("/v/x?cc=max-age%3D60&cookie=1", true),
        ],
    ),
    Case {
        name: "Set-Cookie responses are stored when configured",
        rfc: "9111 3",
        policy: || HttpPolicy::new().store_set_cookie(true),
        steps: &[
            get("/w/x?cc=max-age%3D60&cookie=1", true),
            get("/w/x?cc=max-age%3D60&cookie=1", false),
        ],
    },
    case(
        "duplicate conflicting max-age is treated as stale",
        "9111 4.2.1",
        &[
            get("/x/x?cc=max-age%3D60,max-age%3D120", true),
            get("/x/x?cc=max-age%3D60,max-age%3D120", true),
        ],
    ),
    case(
        "an invalid max-age is stale",
        "9111 1.2.2",
        &[
            get("/y/x?cc=max-age%3Dabc", true),
            get("/y/x?cc=max-age%3Dabc", true),
        ],
    ),
    // --- methods ---
    case(
        "HEAD is answered from a stored GET",
        "9111 4, 9110 9.3.2",
        &[
            get("/z/x?cc=max-age%3D60", true),
            checked(
                with("HEAD", "/z/x?cc=max-age%3D60", &[], false, 200),
                empty_body,
            ),
        ],
    ),
    case(
        "a HEAD miss does not store",
        "9111 3",
        &[
            with("HEAD", "/aa/x?cc=max-age%3D60", &[], true, 200),
            get("/aa/x?cc=max-age%3D60", true),
        ],
    ),
    case(
        "POST is passed through",
        "9111 3",
        &[
            with("POST", "/ab/x?cc=max-age%3D60", &[], true, 200),
            with("POST", "/ab/x?cc=max-age%3D60", &[], true, 200),
        ],
    ),
    case(
        "POST invalidates the stored GET",
        "9111 4.4",
        &[
            get("/ac/x?cc=max-age%3D60", true),
            get("/ac/x?cc=max-age%3D60", false),
            with("POST", "/ac/x?cc=max-age%3D60", &[], true, 200),
            get("/ac/x?cc=max-age%3D60", true),
        ],
    ),
    case(
        "DELETE invalidates, a failed one does not",
        "9111 4.4",
        &[
            get("/ad/x?cc=max-age%3D60", true),
            with("DELETE", "/ad/x?cc=max-age%3D60&status=500", &[], true, 500),
            get("/ad/x?cc=max-age%3D60", false),
            with("DELETE", "/ad/x?cc=max-age%3D60", &[], true, 200),
            get("/ad/x?cc=max-age%3D60", true),
        ],
    ),
    case(
        "PUT invalidates a same-origin Location",
        "9111 4.4",
        &[
            get("/ae/target?cc=max-age%3D60", true),
            get("/ae/target?cc=max-age%3D60", false),
            with(
                "PUT",
                "/ae/other?loc=%2Fae%2Ftarget%3Fcc%3Dmax-age%253D60",
                &[],
                true,
                200,
            ),
            get("/ae/target?cc=max-age%3D60", true),
        ],
    ),
    case(
        "a cross-origin Location is not invalidated",
        "9111 4.4",
        &[
            get("/af/target?cc=max-age%3D60", true),
            with(
                "PUT",
                "/af/other?loc=http%3A%2F%2Fevil.example%2Faf%2Ftarget%3Fcc%3Dmax-age%253D60",
                &[],
                true,
                200,
            ),
            get("/af/target?cc=max-age%3D60", false),
        ],
    ),
    // --- ranges ---
    // (The range cases are in `range.rs`.)
    case(
        "a range is answered from the stored response",
        "9110 14.2",
        &[
            get("/ag/x?cc=max-age%3D60", true),
            with(
                "GET",
                "/ag/x?cc=max-age%3D60",
                &[("range", "bytes=0-1")],
                false,
                206,
            ),
        ],
    ),
    case(
        "206 is not stored",
        "9111 3.3",
        &[
            with("GET", "/ah/x?cc=max-age%3D60&status=206", &[], true, 206),
            with("GET", "/ah/x?cc=max-age%3D60&status=206", &[], true, 206),
        ],
    ),
    // --- Authorization (RFC 9111 section 3.5) ---
    case(
        "Authorization: not stored without permission",
        "9111 3.5",
        &[
            with(
                "GET",
                "/ai/x?cc=max-age%3D60",
                &[("authorization", "Bearer alice")],
                true,
                200,
            ),
            with(
                "GET",
                "/ai/x?cc=max-age%3D60",
                &[("authorization", "Bearer bob")],
                true,
                200,
            ),
            get("/ai/x?cc=max-age%3D60", true),
        ],
    ),
    case(
        "Authorization: stored with public",
        "9111 3.5",
        &[
            with(
                "GET",
                "/aj/x?cc=public,max-age%3D60",
                &[("authorization", "Bearer alice")],
                true,
                200,
            ),
            get("/aj/x?cc=public,max-age%3D60", false),
        ],
    ),
    case(
        "Authorization: stored with s-maxage",
        "9111 3.5",
        &[
            with(
                "GET",
                "/ak/x?cc=s-maxage%3D60",
                &[("authorization", "Bearer alice")],
                true,
                200,
            ),
            get("/ak/x?cc=s-maxage%3D60", false),
        ],
    ),
    case(
        "Authorization: stored with must-revalidate",
        "9111 3.5",
        &[
            with(
                "GET",
                "/al/x?cc=must-revalidate,max-age%3D60",
                &[("authorization", "Bearer alice")],
                true,
                200,
            ),
            get("/al/x?cc=must-revalidate,max-age%3D60", false),
        ],
    ),
    // --- Vary (RFC 9111 section 4.1) ---
    case(
        "Vary selects by the listed request header",
        "9111 4.1",
        &[
            checked(
                with(
                    "GET",
                    "/am/x?cc=max-age%3D60&vary=accept-encoding",
                    &[("accept-encoding", "gzip")],
                    true,
                    200,
                ),
                gzip_variant,
            ),
            checked(
                with(
                    "GET",
                    "/am/x?cc=max-age%3D60&vary=accept-encoding",
                    &[("accept-encoding", "br")],
                    true,
                    200,
                ),
                br_variant,
            ),
            checked(
                with(
                    "GET",
                    "/am/x?cc=max-age%3D60&vary=accept-encoding",
                    &[("accept-encoding", "gzip")],
                    false,
                    200,
                ),
                gzip_variant,
            ),
            checked(
                with(
                    "GET",
                    "/am/x?cc=max-age%3D60&vary=accept-encoding",
                    &[("accept-encoding", "br")],
                    false,
                    200,
                ),
                br_variant,
            ),
        ],
    ),
    case(
        "Vary: an absent header is its own variant",
        "9111 4.1",
        &[
            with(
                "GET",
                "/an/x?cc=max-age%3D60&vary=accept-encoding",
                &[("accept-encoding", "gzip")],
                true,
                200,
            ),
            get("/an/x?cc=max-age%3D60&vary=accept-encoding", true),
            get("/an/x?cc=max-age%3D60&vary=accept-encoding", false),
        ],
    ),
    case(
        "Vary normalises whitespace in lists",
        "9111 4.1",
        &[
            with(
                "GET",
                "/ao/x?cc=max-age%3D60&vary=accept-encoding",
                &[("accept-encoding", "gzip, br")],
                true,
                200,
            ),
            with(
                "GET",
                "/ao/x?cc=max-age%3D60&vary=accept-encoding",
                &[("accept-encoding", "gzip,br")],
                false,
                200,
            ),
        ],
    ),
    case(
        "Vary: * is never served from the cache",
        "9111 4.1",
        &[
            get("/ap/x?cc=max-age%3D60&vary=*", true),
            get("/ap/x?cc=max-age%3D60&vary=*", true),
        ],
    ),
    case(
        "Vary: Cookie keeps users apart",
        "9111 4.1",
        &[
            with(
                "GET",
                "/aq/x?cc=max-age%3D60&vary=cookie",
                &[("cookie", "user=alice")],
                true,
                200,
            ),
            with(
                "GET",
                "/aq/x?cc=max-age%3D60&vary=cookie",
                &[("cookie", "user=bob")],
                true,
                200,
            ),
            with(
                "GET",
                "/aq/x?cc=max-age%3D60&vary=cookie",
                &[("cookie", "user=alice")],
                false,
                200,
            ),
        ],
    ),
    case(
        "Vary on two headers",
        "9111 4.1",
        &[
            with(
                "GET",
                "/ar/x?cc=max-age%3D60&vary=accept-encoding,accept-language",
                &[("accept-encoding", "gzip"), ("accept-language", "fr")],
                true,
                200,
            ),
            with(
                "GET",
                "/ar/x?cc=max-age%3D60&vary=accept-encoding,accept-language",
                &[("accept-encoding", "gzip"), ("accept-language", "de")],
                true,
                200,
            ),
            with(
                "GET",
                "/ar/x?cc=max-age%3D60&vary=accept-encoding,accept-language",
                &[("accept-encoding", "gzip"), ("accept-language", "fr")],
                false,
                200,
            ),
        ],
    ),
    // --- request directives (RFC 9111 section 5.2.1) ---
    case(
        "request no-store bypasses",
        "9111 5.2.1.5",
        &[
            get("/as/x?cc=max-age%3D60", true),
            with(
                "GET",
                "/as/x?cc=max-age%3D60",
                &[("cache-control", "no-store")],
                true,
                200,
            ),
        ],
    ),
    case(
        "request no-cache goes to the origin",
        "9111 5.2.1.4",
        &[
            get("/at/x?cc=max-age%3D60", true),
            with(
                "GET",
                "/at/x?cc=max-age%3D60",
                &[("cache-control", "no-cache")],
                true,
                200,
            ),
        ],
    ),
    case(
        "Pragma: no-cache without Cache-Control",
        "9111 5.4",
        &[
            get("/au/x?cc=max-age%3D60", true),
            with(
                "GET",
                "/au/x?cc=max-age%3D60",
                &[("pragma", "no-cache")],
                true,
                200,
            ),
        ],
    ),
    case(
        "Pragma is ignored when Cache-Control is present",
        "9111 5.4",
        &[
            get("/av/x?cc=max-age%3D60", true),
            with(
                "GET",
                "/av/x?cc=max-age%3D60",
                &[("pragma", "no-cache"), ("cache-control", "max-stale=0")],
                false,
                200,
            ),
        ],
    ),
    case(
        "request max-age=0 goes to the origin",
        "9111 5.2.1.1",
        &[
            get("/aw/x?cc=max-age%3D60", true),
            with(
                "GET",
                "/aw/x?cc=max-age%3D60",
                &[("cache-control", "max-age=0")],
                true,
                200,
            ),
        ],
    ),
    case(
        "request max-age above the age is served",
        "9111 5.2.1.1",
        &[
            get("/ax/x?cc=max-age%3D60", true),
            with(
                "GET",
                "/ax/x?cc=max-age%3D60",
                &[("cache-control", "max-age=30")],
                false,
                200,
            ),
        ],
    ),
    case(
        "request min-fresh beyond what is left goes to the origin",
        "9111 5.2.1.3",
        &[
            get("/ay/x?cc=max-age%3D60", true),
            with(
                "GET",
                "/ay/x?cc=max-age%3D60",
                &[("cache-control", "min-fresh=120")],
                true,
                200,
            ),
        ],
    ),
    case(
        "only-if-cached with nothing stored is 504",
        "9111 5.2.1.7",
        &[with(
            "GET",
            "/az/x?cc=max-age%3D60",
            &[("cache-control", "only-if-cached")],
            false,
            504,
        )],
    ),
    case(
        "only-if-cached with a stored response is served",
        "9111 5.2.1.7",
        &[
            get("/ba/x?cc=max-age%3D60", true),
            with(
                "GET",
                "/ba/x?cc=max-age%3D60",
                &[("cache-control", "only-if-cached")],
                false,
                200,
            ),
        ],
    ),
    // --- age and staleness (RFC 9111 section 4.2) ---
    case(
        "an Age past max-age arrives stale: not served",
        "9111 4.2.3",
        &[
            get("/bb/x?cc=max-age%3D60&age=100", true),
            get("/bb/x?cc=max-age%3D60&age=100", true),
        ],
    ),
    case(
        "a stale response is served to max-stale",
        "9111 5.2.1.2",
        &[
            get("/bc/x?cc=max-age%3D60&age=100", true),
            checked(
                with(
                    "GET",
                    "/bc/x?cc=max-age%3D60&age=100",
                    &[("cache-control", "max-stale=3600")],
                    false,
                    200,
                ),
                age_at_least_100,
            ),
        ],
    ),
    case(
        "max-stale with too little allowance goes to the origin",
        "9111 5.2.1.2",
        &[
            get("/bd/x?cc=max-age%3D60&age=100", true),
            with(
                "GET",
                "/bd/x?cc=max-age%3D60&age=100",
                &[("cache-control", "max-stale=10")],
                true,
                200,
            ),
        ],
    ),
    case(
        "must-revalidate is never served stale",
        "9111 5.2.2.2",
        &[
            get("/be/x?cc=max-age%3D60,must-revalidate&age=30", true),
            get("/be/x?cc=max-age%3D60,must-revalidate&age=30", false),
        ],
    ),
    case(
        "proxy-revalidate arriving stale is not stored",
        "9111 5.2.2.8",
        &[
            get("/bf/x?cc=max-age%3D60,proxy-revalidate&age=100", true),
            with(
                "GET",
                "/bf/x?cc=max-age%3D60,proxy-revalidate&age=100",
                &[("cache-control", "max-stale")],
                true,
                200,
            ),
        ],
    ),
    case(
        "an old Date ages the response",
        "9111 4.2.3",
        &[
            get("/bg/x?cc=max-age%3D60&date=-100", true),
            get("/bg/x?cc=max-age%3D60&date=-100", true),
        ],
    ),
    // --- validation from the client (RFC 9110 section 13) ---
    case(
        "If-None-Match matching a fresh entry is 304",
        "9110 13.1.2",
        &[
            get("/bh/x?cc=max-age%3D60&etag=%22v1%22", true),
            checked(
                with(
                    "GET",
                    "/bh/x?cc=max-age%3D60&etag=%22v1%22",
                    &[("if-none-match", "\"v0\", \"v1\"")],
                    false,
                    304,
                ),
                empty_body,
            ),
        ],
    ),
    case(
        "If-None-Match weak comparison",
        "9110 8.8.3.2",
        &[
            get("/bi/x?cc=max-age%3D60&etag=W%2F%22v1%22", true),
            with(
                "GET",
                "/bi/x?cc=max-age%3D60&etag=W%2F%22v1%22",
                &[("if-none-match", "\"v1\"")],
                false,
                304,
            ),
        ],
    ),
    case(
        "If-None-Match not matching is a full response",
        "9110 13.1.2",
        &[
            get("/bj/x?cc=max-age%3D60&etag=%22v1%22", true),
            with(
                "GET",
                "/bj/x?cc=max-age%3D60&etag=%22v1%22",
                &[("if-none-match", "\"v2\"")],
                false,
                200,
            ),
        ],
    ),
    case(
        "If-Modified-Since after Last-Modified is 304",
        "9110 13.1.3",
        &[
            get("/bk/x?cc=max-age%3D60&lm=-3600", true),
            with(
                "GET",
                "/bk/x?cc=max-age%3D60&lm=-3600",
                &[("if-modified-since", "Sun, 06 Nov 2033 08:49:37 GMT")],
                false,
                304,
            ),
        ],
    ),
    // --- headers on the way out ---
    case(
        "hop-by-hop headers are not replayed",
        "9110 7.6.1, 9111 3.1",
        &[
            get("/bl/x?cc=max-age%3D60&hop=1", true),
            checked(get("/bl/x?cc=max-age%3D60&hop=1", false), no_hop_by_hop),
        ],
    ),
    case(
        "bodies over the limit stream through unstored",
        "9111 3.1",
        &[
            get("/bm/x?cc=max-age%3D60&len=3000000", true),
            get("/bm/x?cc=max-age%3D60&len=3000000", true),
        ],
    ),
    // --- validation (RFC 9111 section 4.3) ---
    case("a stale entry with an ETag is revalidated with If-None-Match", "9111 4.3.1, 4.3.3", &[
        get("/ca/x?cc=max-age%3D1&age=5&etag=%22e1%22", true),
        checked(get("/ca/x?cc=max-age%3D1&age=5&etag=%22e1%22", true), revalidated_first_call),
    ]),
    case("a stale entry with Last-Modified is revalidated with If-Modified-Since", "9111 4.3.1", &[
        get("/cb/x?cc=max-age%3D1&age=5&lm=-3600", true),
        checked(get("/cb/x?cc=max-age%3D1&age=5&lm=-3600", true), revalidated_first_call),
    ]),
    case("no-cache with a validator is stored and validated on every use", "9111 5.2.2.4", &[
        get("/cc/x?cc=no-cache&etag=%22e1%22", true),
        checked(get("/cc/x?cc=no-cache&etag=%22e1%22", true), revalidated_first_call),
        checked(get("/cc/x?cc=no-cache&etag=%22e1%22", true), revalidated_first_call),
    ]),
    case("a 304 updates the stored header fields", "9111 4.3.4", &[
        get("/cd/x?cc=max-age%3D0&etag=%22e1%22&upd=1", true),
        checked(get("/cd/x?cc=max-age%3D0&etag=%22e1%22&upd=1", true), updated_by_304),
    ]),
    case("a 304 with fresh max-age makes the entry fresh again", "9111 4.3.4", &[
        get("/ce/x?cc=max-age%3D60&age=100&etag=%22e1%22", true),
        checked(get("/ce/x?cc=max-age%3D60&age=100&etag=%22e1%22", true), revalidated_first_call),
    ]),
    case("request no-cache revalidates a fresh entry", "9111 5.2.1.4", &[
        get("/cf/x?cc=max-age%3D60&etag=%22e1%22", true),
        checked(with("GET", "/cf/x?cc=max-age%3D60&etag=%22e1%22", &[("cache-control", "no-cache")], true, 200), revalidated_first_call),
    ]),
    // --- serving stale (RFC 5861) ---
    case("stale-while-revalidate serves stale at once", "5861 3", &[
        get("/cg/x?cc=max-age%3D1,stale-while-revalidate%3D600&age=5", true),
        in_background(checked(get("/cg/x?cc=max-age%3D1,stale-while-revalidate%3D600&age=5", false), stale_first_call)),
    ]),
    case("stale-while-revalidate does not apply with must-revalidate", "5861 3, 9111 5.2.2.2", &[
        get("/ch/x?cc=max-age%3D1,must-revalidate,stale-while-revalidate%3D600&age=5&etag=%22e%22", true),
        checked(get("/ch/x?cc=max-age%3D1,must-revalidate,stale-while-revalidate%3D600&age=5&etag=%22e%22", true), revalidated_first_call),
    ]),
    case("stale-if-error serves stale when the origin answers 5xx", "5861 4", &[
        get("/ci/x?cc=max-age%3D1,stale-if-error%3D600&age=5", true),
        checked(with("GET", "/ci/x?cc=max-age%3D1,stale-if-error%3D600&age=5", &[("x-fail", "1")], true, 200), stale_first_call),
    ]),
    case("a request's stale-if-error applies too", "5861 4", &[
        get("/cj/x?cc=max-age%3D1&age=5&etag=%22e%22", true),
        checked(with("GET", "/cj/x?cc=max-age%3D1&age=5&etag=%22e%22", &[("x-fail", "1"), ("cache-control", "stale-if-error=600")], true, 200), stale_first_call),
    ]),
    case("without stale-if-error a 5xx is passed on", "5861 4", &[
        get("/ck/x?cc=max-age%3D1&age=5&etag=%22e%22", true),
        with("GET", "/ck/x?cc=max-age%3D1&age=5&etag=%22e%22", &[("x-fail", "1")], true, 500),
    ]),
    case(
        "a revalidation that may not be stored still answers a plain GET in full (cookie)",
        "9111 4.3.3, 9110 15.4.5",
        &[
            get("/cz/x?cc=max-age%3D1&age=5&etag=%22e%22", true),
            checked(
                with("GET", "/cz/x?cc=max-age%3D1&age=5&etag=%22e%22", &[("cookie", "u=1")], true, 200),
                whole_first_call,
            ),
        ],
    ),
    case(
        "a revalidation whose 304 sets a cookie still answers a plain GET in full",
        "9111 4.3.3, 9110 15.4.5",
        &[
            get("/da/x?cc=max-age%3D1&age=5&etag=%22e%22&c304", true),
            checked(get("/da/x?cc=max-age%3D1&age=5&etag=%22e%22&c304", true), whole_first_call),
        ],
    ),
    case(
        "a private variant is passed alone; the stored variants stay served",
        "9111 4.1",
        &[
            with("GET", "/db/x?cc=max-age%3D60&vary=accept-language&pfor=de", &[("accept-language", "fr")], true, 200),
            with("GET", "/db/x?cc=max-age%3D60&vary=accept-language&pfor=de", &[("accept-language", "de")], true, 200),
            with("GET", "/db/x?cc=max-age%3D60&vary=accept-language&pfor=de", &[("accept-language", "fr")], false, 200),
            with("GET", "/db/x?cc=max-age%3D60&vary=accept-language&pfor=de", &[("accept-language", "de")], true, 200),
        ],
    ),
    case(
        "a private variant first: the variants that follow are stored",
        "9111 4.1",
        &[
            with("GET", "/dc/x?cc=max-age%3D60&vary=accept-language&pfor=de", &[("accept-language", "de")], true, 200),
            with("GET", "/dc/x?cc=max-age%3D60&vary=accept-language&pfor=de", &[("accept-language", "fr")], true, 200),
            with("GET", "/dc/x?cc=max-age%3D60&vary=accept-language&pfor=de", &[("accept-language", "fr")], false, 200),
            with("GET", "/dc/x?cc=max-age%3D60&vary=accept-language&pfor=de", &[("accept-language", "de")], true, 200),
        ],
    ),
    case(
        "queries are part of the key",
        "9111 2",
        &[
            get("/bn/x?cc=max-age%3D60&v=1", true),
            get("/bn/x?cc=max-age%3D60&v=2", true),
            get("/bn/x?cc=max-age%3D60&v=1", false),
        ],
    ),
];

async fn run_case(case: &Case) -> Result<(), String> {
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

/// An origin that personalises by `Authorization` or `Cookie` and picks, per path, how it
/// marks the response: the body names the user it was made for ("for alice"), or says
/// "shared" where the origin declares the response the same for everyone. Case 4 is the
/// common mistake: a personal page with only `max-age`; the cache must not share it.
async fn personal_origin(
    axum::extract::Path(p): axum::extract::Path<u32>,
    req_headers: HeaderMap,
) -> impl IntoResponse {
    let user_of = |name: &str| {
        req_headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(['=', ' ']).next())
            .map(str::to_string)
    };
    let by_auth = user_of("authorization");
    let user = by_auth.clone().or_else(|| user_of("cookie"));
    let mut h = HeaderMap::new();
    let (cc, vary, cookie, identity) = match p % 8 {
        0 => ("private, max-age=60", None, false, user),
        1 => ("no-store", None, false, user),
        2 => ("max-age=60", Some("cookie, authorization"), false, user),
        3 => ("max-age=60", None, true, user),
        4 => ("max-age=60", None, false, user),
        5 => ("public, max-age=60", None, false, None),
        // Shared by declaration, varying on Authorization only: personal by that alone.
        6 => ("s-maxage=60", Some("authorization"), false, by_auth),
        _ => ("no-cache", None, false, user),
    };
    h.insert("cache-control", HeaderValue::from_static(cc));
    if let Some(v) = vary {
        h.insert("vary", HeaderValue::from_static(v));
    }
    if cookie {
        h.insert("set-cookie", HeaderValue::from_static("session=private"));
    }
    let body = match identity {
        Some(u) => format!("for {u}"),
        None => "shared".to_string(),
    };
    (h, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_response_to_one_users_credentials_is_served_to_another() {
    tokio::time::timeout(BOUND, async {
        let app = axum::Router::new().route("/p/{n}", axum::routing::get(personal_origin));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move { axum::serve(listener, app).await });
        let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
        let store = Cache::new(MemoryTier::builder().max_entries(10_000).build().unwrap());
        let svc = HttpCacheLayer::new(store).layer(client);
        let users = [None, Some("alice"), Some("bob"), Some("carol")];
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        let mut tasks = Vec::new();
        for _ in 0..800 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let user = users[(x % 4) as usize];
            let by_cookie = x & 16 != 0;
            let path = format!("/p/{}", (x >> 8) % 24);
            let svc = svc.clone();
            tasks.push(tokio::spawn(async move {
                let mut req = Request::get(format!("http://{addr}{path}"));
                if let Some(u) = user {
                    req = if by_cookie {
                        req.header("cookie", format!("user={u}"))
                    } else {
                        req.header("authorization", format!("Bearer {u}"))
                    };
                }
                let res = svc
                    .oneshot(req.body(Full::default()).unwrap())
                    .await
                    .unwrap();
                let body = res.into_body().collect().await.unwrap().to_bytes();
                (user, path, String::from_utf8_lossy(&body).into_owned())
            }));
        }
        let mut hits_checked = 0;
        for t in tasks {
            let (user, path, body) = t.await.unwrap();
            // Whatever a user gets is either shared or made for that user.
            let own = user.map(|u| format!("for {u}"));
            assert!(
                body == "shared" || Some(&body) == own.as_ref(),
                "{user:?} asked {path} and got {body:?}"
            );
            hits_checked += 1;
        }
        assert_eq!(hits_checked, 800);
        server.abort();
    })
    .await
    .expect("bounded");
}

// === streaming and single flight ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_head_and_first_bytes_arrive_before_the_origin_finishes_and_the_whole_is_stored() {
    use tokio::sync::mpsc;
    tokio::time::timeout(BOUND, async {
        let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(4);
        let rx = Arc::new(std::sync::Mutex::new(Some(rx)));
        let calls = Arc::new(AtomicUsize::new(0));
        let origin = tower::service_fn({
            let (rx, calls) = (rx.clone(), calls.clone());
            move |_req: Request<Full<Bytes>>| {
                calls.fetch_add(1, Ordering::SeqCst);
                let rx = rx.lock().unwrap().take().expect("one origin call");
                async move {
                    let body = http_body_util::StreamBody::new(ChannelStream(rx));
                    let res = http::Response::builder()
                        .header("cache-control", "max-age=60")
                        .body(body)
                        .unwrap();
                    Ok::<_, std::convert::Infallible>(res)
                }
            }
        });
        let store = Cache::new(MemoryTier::builder().max_entries(100).build().unwrap());
        let svc = HttpCacheLayer::new(store).layer(origin);
        let res = svc
            .clone()
            .oneshot(
                Request::get("http://t/stream")
                    .body(Full::default())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(
            res.headers()["x-cache"],
            "MISS",
            "the head came before the body ended"
        );
        let mut body = res.into_body();
        tx.send(Ok(Bytes::from("first "))).await.unwrap();
        let frame = body.frame().await.unwrap().unwrap();
        assert_eq!(
            frame.into_data().unwrap(),
            "first ",
            "bytes stream through at once"
        );
        // A second request for the URL waits for the first (single flight), then hits.
        let second = tokio::spawn({
            let svc = svc.clone();
            async move {
                let res = svc
                    .oneshot(
                        Request::get("http://t/stream")
                            .body(Full::default())
                            .unwrap(),
                    )
                    .await
                    .unwrap();
                let status = res.headers()["x-cache"].to_str().unwrap().to_string();
                (status, res.into_body().collect().await.unwrap().to_bytes())
            }
        });
        tx.send(Ok(Bytes::from("second"))).await.unwrap();
        drop(tx);
        let mut rest = Vec::new();
        while let Some(f) = body.frame().await {
            rest.extend_from_slice(&f.unwrap().into_data().unwrap());
        }
        assert_eq!(rest, b"second");
        let (status, bytes) = second.await.unwrap();
        assert_eq!(
            (status.as_str(), &bytes[..]),
            ("HIT-MEM", &b"first second"[..])
        );
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    })
    .await
    .expect("bounded");
}

/// The sending end of a [`ChannelStream`].
type ChunkSender = tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>;

/// A `Stream` over a channel of body chunks.
struct ChannelStream(tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>);

impl futures_core::Stream for ChannelStream {
    type Item = Result<http_body::Frame<Bytes>, std::io::Error>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.0
            .poll_recv(cx)
            .map(|o| o.map(|r| r.map(http_body::Frame::data)))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aborted_body_is_not_stored_and_waiters_go_on() {
    use tokio::sync::mpsc;
    tokio::time::timeout(BOUND, async {
        let calls = Arc::new(AtomicUsize::new(0));
        let senders: Arc<std::sync::Mutex<Vec<ChunkSender>>> = Arc::default();
        let origin = tower::service_fn({
            let (calls, senders) = (calls.clone(), senders.clone());
            move |_req: Request<Full<Bytes>>| {
                calls.fetch_add(1, Ordering::SeqCst);
                let (tx, rx) = mpsc::channel(4);
                senders.lock().unwrap().push(tx);
                async move {
                    let res = http::Response::builder()
                        .header("cache-control", "max-age=60")
                        .body(http_body_util::StreamBody::new(ChannelStream(rx)))
                        .unwrap();
                    Ok::<_, std::convert::Infallible>(res)
                }
            }
        });
        let store = Cache::new(MemoryTier::builder().max_entries(100).build().unwrap());
        let svc = HttpCacheLayer::new(store).layer(origin);
        let first = svc
            .clone()
            .oneshot(
                Request::get("http://t/abort")
                    .body(Full::default())
                    .unwrap(),
            )
            .await
            .unwrap();
        let mut body = first.into_body();
        let tx = senders.lock().unwrap().remove(0);
        tx.send(Ok(Bytes::from("part"))).await.unwrap();
        body.frame().await.unwrap().unwrap();
        tx.send(Err(std::io::Error::other("origin reset")))
            .await
            .unwrap();
        assert!(
            body.frame().await.unwrap().is_err(),
            "the client sees the abort"
        );
        drop(body);
        // Nothing was stored: the next request goes to the origin.
        let again = tokio::spawn({
            let svc = svc.clone();
            async move {
                svc.oneshot(
                    Request::get("http://t/abort")
                        .body(Full::default())
                        .unwrap(),
                )
                .await
                .unwrap()
                .headers()["x-cache"]
                    .to_str()
                    .unwrap()
                    .to_string()
            }
        });
        let status = again.await.unwrap();
        assert_eq!(status, "MISS");
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    })
    .await
    .expect("bounded");
}

// === through the standalone proxy, as a child process ===

/// The proxy as a child process, killed when dropped.
struct Proxy {
    child: tokio::process::Child,
    addr: std::net::SocketAddr,
}

impl Proxy {
    async fn start(upstream: &str) -> Proxy {
        Self::start_with(support::free_addr().unwrap(), upstream, &[]).await
    }

    async fn start_with(addr: std::net::SocketAddr, upstream: &str, extra: &[String]) -> Proxy {
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_cache-proxy"))
            .args(["--listen", &addr.to_string(), "--upstream", upstream])
            .args(["--upstream-timeout-ms", "2000"])
            .args(extra)
            .kill_on_drop(true)
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Until it listens (the whole test is bounded).
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Proxy { child, addr }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

async fn send_via(
    proxy: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &'static str,
) -> (u16, http::HeaderMap, String) {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut req = Request::builder()
        .method(method)
        .uri(format!("http://{proxy}{path}"));
    for (n, v) in headers {
        req = req.header(*n, *v);
    }
    let res = client
        .request(
            req.body(Full::new(Bytes::from_static(body.as_bytes())))
                .unwrap(),
        )
        .await
        .unwrap();
    let (parts, b) = res.into_parts();
    let b = b.collect().await.unwrap().to_bytes();
    (
        parts.status.as_u16(),
        parts.headers,
        String::from_utf8_lossy(&b).into_owned(),
    )
}

async fn echo(req: axum::extract::Request) -> impl IntoResponse {
    let method = req.method().to_string();
    let custom = req
        .headers()
        .get("x-custom")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_string();
    let hop = req.headers().contains_key("x-hop");
    let body = axum::body::to_bytes(req.into_body(), 1 << 20)
        .await
        .unwrap();
    format!(
        "{method} custom={custom} hop={hop} body={}",
        String::from_utf8_lossy(&body)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_standalone_proxy_caches_forwards_and_reports_upstream_failure() {
    tokio::time::timeout(BOUND, async {
        let calls = Arc::new(AtomicUsize::new(0));
        let app = axum::Router::new()
            .route("/echo", axum::routing::any(echo))
            .fallback(origin)
            .with_state(Origin {
                calls: calls.clone(),
            });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let origin_addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move { axum::serve(listener, app).await });
        let proxy = Proxy::start(&format!("http://{origin_addr}")).await;

        // Cached per the policy.
        let (s, h, b1) = send_via(proxy.addr, "GET", "/a/x?cc=max-age%3D60", &[], "").await;
        assert_eq!((s, h["x-cache"].to_str().unwrap()), (200, "MISS"));
        let (s, h, b2) = send_via(proxy.addr, "GET", "/a/x?cc=max-age%3D60", &[], "").await;
        assert_eq!((s, h["x-cache"].to_str().unwrap()), (200, "HIT-MEM"));
        assert_eq!(b1, b2);
        assert!(h.contains_key("age"));
        let (_, h, _) = send_via(proxy.addr, "GET", "/b/x?cc=no-store", &[], "").await;
        assert_eq!(h["x-cache"], "PASS");
        assert_eq!(calls.load(Ordering::SeqCst), 2);

        // Every method, header and body forwarded; hop-by-hop fields are not.
        let (s, _, b) = send_via(
            proxy.addr,
            "PATCH",
            "/echo",
            &[
                ("x-custom", "kept"),
                ("connection", "x-hop"),
                ("x-hop", "1"),
            ],
            "payload",
        )
        .await;
        assert_eq!(
            (s, b.as_str()),
            (200, "PATCH custom=kept hop=false body=payload")
        );

        // The upstream goes away: 502.
        server.abort();
        let _ = server.await;
        let (s, _, _) = send_via(proxy.addr, "GET", "/c/x?cc=max-age%3D60", &[], "").await;
        assert_eq!(s, 502);
        // What was stored is still served.
        let (s, h, _) = send_via(proxy.addr, "GET", "/a/x?cc=max-age%3D60", &[], "").await;
        assert_eq!((s, h["x-cache"].to_str().unwrap()), (200, "HIT-MEM"));
    })
    .await
    .expect("bounded");
}

#[tokio::test]
async fn the_proxy_answers_504_when_the_upstream_hangs() {
    tokio::time::timeout(BOUND, async {
        // Accepts connections and never answers.
        let hang = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let hang_addr = hang.local_addr().unwrap();
        let holder = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = hang.accept().await {
                held.push(s);
            }
        });
        let proxy = Proxy::start(&format!("http://{hang_addr}")).await;
        let (s, _, _) = send_via(proxy.addr, "GET", "/slow", &[], "").await;
        assert_eq!(s, 504);
        holder.abort();
    })
    .await
    .expect("bounded");
}

const TOKEN: &str = "a purge token of some length";

async fn origin_server() -> (
    std::net::SocketAddr,
    tokio::task::JoinHandle<std::io::Result<()>>,
) {
    let app = axum::Router::new()
        .fallback(origin)
        .with_state(Origin::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (
        addr,
        tokio::spawn(async move { axum::serve(listener, app).await }),
    )
}

fn x_cache_of(h: &http::HeaderMap) -> String {
    h.get("x-cache")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_purges_by_url_and_tag_only_with_the_token() {
    tokio::time::timeout(BOUND, async {
        let (origin_addr, server) = origin_server().await;
        let proxy = Proxy::start_with(
            support::free_addr().unwrap(),
            &format!("http://{origin_addr}"),
            &["--purge-token".into(), TOKEN.into()],
        )
        .await;
        let url = "/p/x?cc=max-age%3D60&skey=group-1";
        assert_eq!(
            x_cache_of(&send_via(proxy.addr, "GET", url, &[], "").await.1),
            "MISS"
        );
        assert_eq!(
            x_cache_of(&send_via(proxy.addr, "GET", url, &[], "").await.1),
            "HIT-MEM"
        );
        // Without the token, or with another: 401, nothing purged.
        let (s, _, _) = send_via(proxy.addr, "PURGE", url, &[], "").await;
        assert_eq!(s, 401);
        let bad = [("authorization", "Bearer not-the-token-at-all!!")];
        let (s, _, _) = send_via(proxy.addr, "PURGE", url, &bad, "").await;
        assert_eq!(s, 401);
        assert_eq!(
            x_cache_of(&send_via(proxy.addr, "GET", url, &[], "").await.1),
            "HIT-MEM"
        );
        let auth = format!("Bearer {TOKEN}");
        let (s, _, b) = send_via(proxy.addr, "PURGE", url, &[("authorization", &auth)], "").await;
        assert_eq!((s, b.as_str()), (200, r#"{"removed":1}"#));
        assert_eq!(
            x_cache_of(&send_via(proxy.addr, "GET", url, &[], "").await.1),
            "MISS"
        );
        // By surrogate key.
        let (s, _, b) = send_via(
            proxy.addr,
            "POST",
            "/anything",
            &[("authorization", &auth), ("x-purge-tag", "group-1")],
            "",
        )
        .await;
        assert_eq!((s, b.as_str()), (200, r#"{"removed":1}"#));
        assert_eq!(
            x_cache_of(&send_via(proxy.addr, "GET", url, &[], "").await.1),
            "MISS"
        );
        server.abort();
    })
    .await
    .expect("bounded");
}

/// Two proxies, A and B, started with the flags `flags(other's address)` gives; a purge
/// on A must empty B's entry too.
/// `connected` returns once the bus links them.
async fn a_purge_spreads<F: std::future::Future<Output = ()>>(
    flags: impl Fn(std::net::SocketAddr) -> Vec<String>,
    connected: F,
) {
    let (origin_addr, server) = origin_server().await;
    let (a_addr, b_addr) = (support::free_addr().unwrap(), support::free_addr().unwrap());
    let upstream = format!("http://{origin_addr}");
    let a = Proxy::start_with(a_addr, &upstream, &flags(b_addr)).await;
    let b = Proxy::start_with(b_addr, &upstream, &flags(a_addr)).await;
    connected.await;
    let url = "/q/x?cc=max-age%3D60";
    // Clients reach every proxy by the same public name, so the keys agree.
    let host = ("host", "app.test");
    for p in [&a, &b] {
        send_via(p.addr, "GET", url, &[host], "").await;
        assert_eq!(
            x_cache_of(&send_via(p.addr, "GET", url, &[host], "").await.1),
            "HIT-MEM"
        );
    }
    let auth = format!("Bearer {TOKEN}");
    let (s, _, _) = send_via(a.addr, "PURGE", url, &[("authorization", &auth), host], "").await;
    assert_eq!(s, 200);
    // B hears of it over the bus (bounded by the test's timeout).
    loop {
        let only = ("cache-control", "only-if-cached");
        let (status, _, _) = send_via(b.addr, "GET", url, &[host, only], "").await;
        if status == 504 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_on_one_proxy_reaches_its_peers() {
    tokio::time::timeout(
        BOUND,
        a_purge_spreads(
            |peer| {
                vec![
                    "--purge-token".to_string(),
                    TOKEN.into(),
                    "--secret".into(),
                    "a secret every proxy shares".into(),
                    "--peer".into(),
                    format!("http://{peer}/_cache/invalidate"),
                ]
            },
            async {},
        ),
    )
    .await
    .expect("bounded");
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_on_one_proxy_reaches_the_others_over_redis() {
    let redis = support::RedisServer::start().unwrap();
    let url = redis.url();
    tokio::time::timeout(
        BOUND,
        a_purge_spreads(
            |_| {
                vec![
                    "--purge-token".to_string(),
                    TOKEN.into(),
                    "--secret".into(),
                    "a secret every proxy shares".into(),
                    "--redis".into(),
                    url.clone(),
                ]
            },
            async {
                // Both proxies subscribed, or A's purge could go out before B listens.
                while redis.subscribers("cache_proxy:invalidate").unwrap() < 2 {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            },
        ),
    )
    .await
    .expect("bounded");
}

#[tokio::test]
async fn the_one_line_layer_with_a_disk_tier_survives_a_restart() {
    tokio::time::timeout(BOUND, async {
        let dir = tempfile::tempdir().unwrap();
        let origin = tower::service_fn(|_req: Request<Full<Bytes>>| async {
            let mut res = http::Response::new(Full::new(Bytes::from("stored")));
            res.headers_mut()
                .insert("cache-control", "max-age=600".parse().unwrap());
            Ok::<_, std::convert::Infallible>(res)
        });
        {
            let svc = HttpCacheLayer::on_disk(dir.path()).unwrap().layer(origin);
            let res = svc
                .oneshot(Request::get("http://t/x").body(Full::default()).unwrap())
                .await
                .unwrap();
            assert_eq!(res.headers()["x-cache"], "MISS");
            res.into_body().collect().await.unwrap();
        }
        // The first layer and its tiers are gone (a restart); a new one on the same
        // directory waits for the old environment to close, then finds the entry on disk.
        let svc = HttpCacheLayer::on_disk(dir.path()).unwrap().layer(origin);
        let res = svc
            .oneshot(Request::get("http://t/x").body(Full::default()).unwrap())
            .await
            .unwrap();
        assert_eq!(res.headers()["x-cache"], "HIT-DISK");
    })
    .await
    .expect("bounded");
}

// === keys and fields a client cannot forge ===

/// An origin that reflects what it was asked: the `Host`, the path, and the fields an
/// origin may act on. `/v*` varies on `X-V`; `/obs*` is private, said on a line with
/// obs-text in an extension; everything is fresh for 60 s.
async fn reflecting_origin(req: axum::extract::Request) -> impl IntoResponse {
    let field = |name: &str| {
        req.headers().get(name).map_or("-".to_string(), |v| {
            String::from_utf8_lossy(v.as_bytes()).into_owned()
        })
    };
    let path = req
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    let body = format!(
        "host={} path={path} x-v={} xfh={} user={}",
        field("host"),
        field("x-v"),
        field("x-forwarded-host"),
        field("x-user"),
    );
    let mut h = HeaderMap::new();
    if path.starts_with("/swr") {
        // Stale on arrival, refreshed in the background; the body counts the calls.
        static CALLS: AtomicUsize = AtomicUsize::new(0);
        let n = CALLS.fetch_add(1, Ordering::SeqCst);
        h.append(
            "cache-control",
            HeaderValue::from_static("max-age=1, stale-while-revalidate=600"),
        );
        h.append("age", HeaderValue::from_static("5"));
        return (h, format!("{body} n={n}"));
    }
    h.append("cache-control", HeaderValue::from_static("max-age=60"));
    if path.starts_with("/v") {
        h.append("vary", HeaderValue::from_static("x-v"));
    }
    if path.starts_with("/obs") {
        h.append(
            "cache-control",
            HeaderValue::from_bytes(b"private, ext=\"caf\xe9\"").unwrap(),
        );
    }
    (h, body)
}

/// The cache over a forwarder that does what a reverse proxy does after the cache: sends
/// the request on in origin-form to the origin, without the fields `Connection` names.
type EdgeService = tower::util::BoxCloneService<
    Request<Full<Bytes>>,
    http::Response<tower_cache::http::HttpCacheBody<hyper::body::Incoming>>,
    hyper_util::client::legacy::Error,
>;

async fn edge_stack(
    forwarded: tower_cache::http::ForwardedFields,
) -> (EdgeService, tokio::task::JoinHandle<std::io::Result<()>>) {
    let app = axum::Router::new().fallback(reflecting_origin);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let forward = tower::service_fn(move |mut req: Request<Full<Bytes>>| {
        let client = client.clone();
        async move {
            let named: Vec<http::HeaderName> = req
                .headers()
                .get_all("connection")
                .iter()
                .flat_map(|v| v.as_bytes().split(|&b| b == b','))
                .filter_map(|t| http::HeaderName::from_bytes(t.trim_ascii()).ok())
                .collect();
            for n in named {
                req.headers_mut().remove(n);
            }
            req.headers_mut().remove("connection");
            let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
            *req.uri_mut() = format!("http://{origin}{path}").parse().unwrap();
            client.request(req).await
        }
    });
    let store = Cache::new(MemoryTier::builder().max_entries(1000).build().unwrap());
    let svc = HttpCacheLayer::new(store)
        .forwarded_fields(forwarded)
        .layer(forward);
    (tower::util::BoxCloneService::new(svc), server)
}

/// Sends `GET path` with `fields` through `svc`: status, `x-cache`, body.
async fn edge_get(
    svc: &EdgeService,
    path: &str,
    fields: &[(&str, &[u8])],
) -> (u16, String, String) {
    let mut req = Request::get(path);
    for (n, v) in fields {
        req = req.header(*n, *v);
    }
    let res = svc
        .clone()
        .oneshot(req.body(Full::default()).unwrap())
        .await
        .unwrap();
    let status = res.status().as_u16();
    let x_cache = x_cache_of(res.headers());
    let body = res.into_body().collect().await.unwrap().to_bytes();
    (status, x_cache, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_with_a_path_or_query_cannot_fill_another_urls_entry() {
    tokio::time::timeout(BOUND, async {
        let (svc, server) = edge_stack(Default::default()).await;
        // The poisoning attempts are refused...
        let (s, _, _) = edge_get(&svc, "/app.js", &[("host", b"proxy:8080/static")]).await;
        assert_eq!(s, 400);
        let (s, _, _) = edge_get(&svc, "/b", &[("host", b"h/q?a=")]).await;
        assert_eq!(s, 400);
        // ...so the URLs they aimed at get their own responses.
        let (s, _, b) = edge_get(&svc, "/static/app.js", &[("host", b"proxy:8080")]).await;
        assert_eq!(
            (s, b.as_str()),
            (
                200,
                "host=proxy:8080 path=/static/app.js x-v=- xfh=- user=-"
            )
        );
        let (s, _, b) = edge_get(&svc, "/q?a=/b", &[("host", b"h")]).await;
        assert_eq!(
            (s, b.as_str()),
            (200, "host=h path=/q?a=/b x-v=- xfh=- user=-")
        );
        for bad in [&b"h#x"[..], b"u@h", b"h h", b"h:99999", b"caf\xe9"] {
            let (s, _, _) = edge_get(&svc, "/", &[("host", bad)]).await;
            assert_eq!(s, 400, "{}", String::from_utf8_lossy(bad));
        }
        server.abort();
    })
    .await
    .expect("bounded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hosts_no_host_or_a_host_the_target_contradicts_are_refused() {
    tokio::time::timeout(BOUND, async {
        let (svc, server) = edge_stack(Default::default()).await;
        let two = [("host", &b"a.test"[..]), ("host", b"b.test")];
        assert_eq!(edge_get(&svc, "/x", &two).await.0, 400);
        assert_eq!(edge_get(&svc, "/x", &[]).await.0, 400);
        assert_eq!(
            edge_get(&svc, "http://a.test/x", &[("host", b"b.test")])
                .await
                .0,
            400
        );
        // The same host both ways, or only in the target (HTTP/2's `:authority`): served,
        // the origin getting the authority lower-cased, as the key has it.
        let (s, _, b) = edge_get(&svc, "http://a.test/x", &[("host", b"A.test")]).await;
        assert_eq!(
            (s, b.as_str()),
            (200, "host=a.test path=/x x-v=- xfh=- user=-")
        );
        let (s, x, _) = edge_get(&svc, "http://a.test/x", &[]).await;
        assert_eq!((s, x.as_str()), (200, "HIT-MEM"));
        server.abort();
    })
    .await
    .expect("bounded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_cannot_hide_a_field_the_cache_reads() {
    tokio::time::timeout(BOUND, async {
        let (svc, server) = edge_stack(Default::default()).await;
        let host = ("host", &b"a.test"[..]);
        // `X-V` named in Connection is gone before the cache reads it: the response made
        // without it is stored as the variant without it...
        let hidden = [host, ("connection", b"X-V"), ("x-v", b"fr")];
        let (s, _, b) = edge_get(&svc, "/v", &hidden).await;
        assert_eq!(
            (s, b.as_str()),
            (200, "host=a.test path=/v x-v=- xfh=- user=-")
        );
        // ...and the variant for `X-V: fr` is made with it.
        let (s, _, b) = edge_get(&svc, "/v", &[host, ("x-v", b"fr")]).await;
        assert_eq!(
            (s, b.as_str()),
            (200, "host=a.test path=/v x-v=fr xfh=- user=-")
        );
        let (_, x, b) = edge_get(&svc, "/v", &[host]).await;
        assert_eq!(
            (x.as_str(), b.as_str()),
            ("HIT-MEM", "host=a.test path=/v x-v=- xfh=- user=-")
        );
        // Options that name end-to-end fields are refused.
        for named in [
            "Host",
            "content-length",
            "Authorization",
            "cookie",
            "x-forwarded-for",
        ] {
            let (s, _, _) = edge_get(&svc, "/", &[host, ("connection", named.as_bytes())]).await;
            assert_eq!(s, 400, "Connection: {named}");
        }
        server.abort();
    })
    .await
    .expect("bounded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_fields_never_reach_the_origin_unkeyed() {
    use tower_cache::http::ForwardedFields;
    tokio::time::timeout(BOUND, async {
        let host = ("host", &b"a.test"[..]);
        let evil = ("x-forwarded-host", &b"evil.test"[..]);
        // By default they are dropped: the origin never sees them.
        let (svc, server) = edge_stack(ForwardedFields::Drop).await;
        let (_, _, b) = edge_get(&svc, "/f", &[host, evil]).await;
        assert_eq!(b, "host=a.test path=/f x-v=- xfh=- user=-");
        let (_, x, b) = edge_get(&svc, "/f", &[host]).await;
        assert_eq!(
            (x.as_str(), b.as_str()),
            ("HIT-MEM", "host=a.test path=/f x-v=- xfh=- user=-")
        );
        server.abort();
        // Keyed: passed on, and each value its own entry.
        let (svc, server) = edge_stack(ForwardedFields::Key).await;
        let (_, _, b) = edge_get(&svc, "/f", &[host, evil]).await;
        assert_eq!(b, "host=a.test path=/f x-v=- xfh=evil.test user=-");
        let (_, x, b) = edge_get(&svc, "/f", &[host]).await;
        assert_eq!(
            (x.as_str(), b.as_str()),
            ("MISS", "host=a.test path=/f x-v=- xfh=- user=-")
        );
        let (_, x, b) = edge_get(&svc, "/f", &[host, evil]).await;
        assert_eq!(
            (x.as_str(), b.as_str()),
            ("HIT-MEM", "host=a.test path=/f x-v=- xfh=evil.test user=-")
        );
        // A background refresh asks with the values the entry is keyed by.
        let (_, _, first) = edge_get(&svc, "/swr", &[host, evil]).await;
        loop {
            let (_, x, b) = edge_get(&svc, "/swr", &[host, evil]).await;
            assert_eq!(x, "STALE");
            assert!(b.contains("xfh=evil.test"), "{b}");
            if b != first {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        server.abort();
    })
    .await
    .expect("bounded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_control_line_with_obs_text_keeps_its_directives() {
    tokio::time::timeout(BOUND, async {
        let (svc, server) = edge_stack(Default::default()).await;
        let host = ("host", &b"a.test"[..]);
        // `private` sits on a line with obs-text: one user's page never reaches another.
        let (_, _, b) = edge_get(&svc, "/obs", &[host, ("x-user", b"alice")]).await;
        assert!(b.ends_with("user=alice"), "{b}");
        let (_, _, b) = edge_get(&svc, "/obs", &[host, ("x-user", b"bob")]).await;
        assert!(b.ends_with("user=bob"), "bob got {b}");
        // A request's `no-store` on such a line is heard: not answered from the cache.
        edge_get(&svc, "/s", &[host]).await;
        assert_eq!(edge_get(&svc, "/s", &[host]).await.1, "HIT-MEM");
        let no_store = ("cache-control", &b"no-store, ext=\"caf\xe9\""[..]);
        assert_eq!(edge_get(&svc, "/s", &[host, no_store]).await.1, "PASS");
        // A line that is no directive list at all: neither served nor stored.
        let broken = ("cache-control", &b"max-age=60, ext=caf\xe9"[..]);
        assert_eq!(edge_get(&svc, "/s", &[host, broken]).await.1, "PASS");
        server.abort();
    })
    .await
    .expect("bounded");
}
