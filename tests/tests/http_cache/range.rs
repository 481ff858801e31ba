//! Range requests through the HTTP cache (RFC 9110 section 14, RFC 9111 sections 3.3 and
//! 3.4), table-driven, against a real axum origin on 127.0.0.1 reached through hyper's
//! client, with the cache layer in between.
//!
//! The origin answers `/<case>/<anything>?<settings>` with the 26 letters `a..z` (or
//! `len` bytes), and the settings: `cc` Cache-Control, `etag`, `lm=start` (a
//! Last-Modified ten seconds before the test started, which a step's header names as
//! `$START`), `date=lm` (a Date equal to it, which makes it weak), `status`. With
//! `honour` it acts on a single `Range` itself (a `206`), as origins with range support
//! do; without it it ignores `Range` (a `200`). It answers `If-None-Match` with its ETag
//! `304`, and names its call in `x-call`. Each case names the RFC section it checks and runs on a fresh store.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::IntoResponse;
use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tower::ServiceExt;
use tower_cache::http::HttpCacheLayer;
use tower_cache::{Cache, MemoryTier};
use tower_layer::Layer;

use super::BOUND;

const ALPHABET: &str = "abcdefghijklmnopqrstuvwxyz";
/// In a step's header value, replaced by the origin's `lm=start` date.
const START: &str = "$START";

/// A Last-Modified ten seconds before the test started, the same for every case.
fn start_date() -> String {
    static AT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    AT.get_or_init(|| {
        httpdate::fmt_http_date(std::time::SystemTime::now() - std::time::Duration::from_secs(10))
    })
    .clone()
}

#[derive(Clone, Default)]
pub(crate) struct RangeOrigin {
    pub(crate) calls: Arc<AtomicUsize>,
    /// The `Range` of each request the origin got.
    pub(crate) ranges: Arc<Mutex<Vec<Option<String>>>>,
}

/// A single `bytes=A-B` / `bytes=A-` as a simple origin reads it.
fn simple_range(v: &str, len: usize) -> Option<(usize, usize)> {
    let (a, b) = v.strip_prefix("bytes=")?.split_once('-')?;
    let a: usize = a.parse().ok()?;
    let b: usize = if b.is_empty() {
        len - 1
    } else {
        b.parse::<usize>().ok()?.min(len - 1)
    };
    (a <= b).then_some((a, b))
}

pub(crate) async fn range_origin(
    State(o): State<RangeOrigin>,
    Query(q): Query<HashMap<String, String>>,
    req: HeaderMap,
) -> axum::response::Response {
    let n = o.calls.fetch_add(1, Ordering::SeqCst) + 1;
    let range = req
        .get("range")
        .map(|v| v.to_str().unwrap_or("?").to_owned());
    o.ranges.lock().unwrap().push(range.clone());
    let mut h = HeaderMap::new();
    let set = |h: &mut HeaderMap, name: &'static str, v: &str| {
        h.insert(name, HeaderValue::from_str(v).unwrap());
    };
    set(&mut h, "x-call", &n.to_string());
    if let Some(v) = q.get("cc") {
        set(&mut h, "cache-control", v);
    }
    if let Some(v) = q.get("etag") {
        set(&mut h, "etag", v);
    }
    if q.get("lm").is_some_and(|v| v == "start") {
        set(&mut h, "last-modified", &start_date());
    }
    if q.get("date").is_some_and(|v| v == "lm") {
        set(&mut h, "date", &start_date());
    }
    let body: String = match q.get("len") {
        Some(n) => ALPHABET.chars().cycle().take(n.parse().unwrap()).collect(),
        None => ALPHABET.to_owned(),
    };
    let etag = q.get("etag");
    if etag.is_some()
        && req.get("if-none-match").and_then(|v| v.to_str().ok()) == etag.map(|e| e.as_str())
    {
        return (StatusCode::NOT_MODIFIED, h).into_response();
    }
    let status = q.get("status").map_or(StatusCode::OK, |s| {
        StatusCode::from_u16(s.parse().unwrap()).unwrap()
    });
    let if_range_ok = match req.get("if-range").and_then(|v| v.to_str().ok()) {
        None => true,
        Some(v) => etag.is_some_and(|e| e == v),
    };
    if let (true, true, Some(r)) = (q.contains_key("honour"), if_range_ok, &range) {
        if let Some((a, b)) = simple_range(r, body.len()) {
            set(
                &mut h,
                "content-range",
                &format!("bytes {a}-{b}/{}", body.len()),
            );
            return (StatusCode::PARTIAL_CONTENT, h, body[a..=b].to_owned()).into_response();
        }
    }
    (status, h, body).into_response()
}

/// One request of a case and what must come of it.
struct Step {
    method: &'static str,
    path: &'static str,
    headers: &'static [(&'static str, &'static str)],
    /// Whether the origin must be asked.
    origin: bool,
    status: u16,
    /// The whole body expected, if checked.
    body: Option<&'static str>,
    /// Response fields expected: a value, or `None` for absent.
    fields: &'static [(&'static str, Option<&'static str>)],
}

const fn get(path: &'static str, origin: bool) -> Step {
    Step {
        method: "GET",
        path,
        headers: &[],
        origin,
        status: 200,
        body: None,
        fields: &[],
    }
}

/// A GET with `headers` that must be answered with `status` and `body`.
const fn ask(
    path: &'static str,
    headers: &'static [(&'static str, &'static str)],
    origin: bool,
    status: u16,
    body: &'static str,
) -> Step {
    Step {
        method: "GET",
        path,
        headers,
        origin,
        status,
        body: Some(body),
        fields: &[],
    }
}

const fn fields(mut step: Step, fields: &'static [(&'static str, Option<&'static str>)]) -> Step {
    step.fields = fields;
    step
}

const fn head(mut step: Step) -> Step {
    step.method = "HEAD";
    step
}

struct Case {
    name: &'static str,
    rfc: &'static str,
    steps: &'static [Step],
}

const fn case(name: &'static str, rfc: &'static str, steps: &'static [Step]) -> Case {
    Case { name, rfc, steps }
}

const CASES: &[Case] = &[
    // --- a range of a stored complete response ---
    case(
        "a single range of a stored 200 is a 206 with Content-Range",
        "9110 14.1.2, 14.4, 15.3.7",
        &[
            get("/a/x?cc=max-age%3D60", true),
            fields(
                ask("/a/x?cc=max-age%3D60", &[("range", "bytes=2-4")], false, 206, "cde"),
                &[
                    ("content-range", Some("bytes 2-4/26")),
                    ("content-length", Some("3")),
                    ("x-cache", Some("HIT-MEM")),
                ],
            ),
            // The stored response is still whole.
            ask("/a/x?cc=max-age%3D60", &[], false, 200, ALPHABET),
        ],
    ),
    case(
        "a suffix range is the last bytes",
        "9110 14.1.1",
        &[
            get("/b/x?cc=max-age%3D60", true),
            fields(
                ask("/b/x?cc=max-age%3D60", &[("range", "bytes=-3")], false, 206, "xyz"),
                &[("content-range", Some("bytes 23-25/26"))],
            ),
            fields(
                ask("/b/x?cc=max-age%3D60", &[("range", "bytes=-100")], false, 206, ALPHABET),
                &[("content-range", Some("bytes 0-25/26"))],
            ),
        ],
    ),
    case(
        "an open-ended range runs to the end",
        "9110 14.1.1",
        &[
            get("/c/x?cc=max-age%3D60", true),
            fields(
                ask("/c/x?cc=max-age%3D60", &[("range", "bytes=24-")], false, 206, "yz"),
                &[("content-range", Some("bytes 24-25/26"))],
            ),
        ],
    ),
    case(
        "a range past the end is clipped to it",
        "9110 14.1.2",
        &[
            get("/d/x?cc=max-age%3D60", true),
            fields(
                ask("/d/x?cc=max-age%3D60", &[("range", "bytes=20-100")], false, 206, "uvwxyz"),
                &[("content-range", Some("bytes 20-25/26"))],
            ),
        ],
    ),
    case(
        "an unsatisfiable range is a 416 with the current length",
        "9110 15.5.17, 14.4",
        &[
            get("/e/x?cc=max-age%3D60", true),
            fields(
                ask("/e/x?cc=max-age%3D60", &[("range", "bytes=26-")], false, 416, ""),
                &[("content-range", Some("bytes */26"))],
            ),
            ask("/e/x?cc=max-age%3D60", &[("range", "bytes=-0")], false, 416, ""),
        ],
    ),
    case(
        "several ranges: the whole 200 (no multipart/byteranges)",
        "9110 14.2, 14.6",
        &[
            get("/f/x?cc=max-age%3D60", true),
            fields(
                ask("/f/x?cc=max-age%3D60", &[("range", "bytes=0-1,4-5")], false, 200, ALPHABET),
                &[("content-range", None)],
            ),
            // One satisfiable range among unsatisfiable ones: that one part.
            ask("/f/x?cc=max-age%3D60", &[("range", "bytes=90-99,1-2")], false, 206, "bc"),
        ],
    ),
    case(
        "an invalid Range is ignored: the whole 200",
        "9110 14.1.1, 14.2",
        &[
            get("/g/x?cc=max-age%3D60", true),
            ask("/g/x?cc=max-age%3D60", &[("range", "bytes=5-2")], false, 200, ALPHABET),
            ask("/g/x?cc=max-age%3D60", &[("range", "pages=1-2")], false, 200, ALPHABET),
            ask("/g/x?cc=max-age%3D60", &[("range", "bytes=x-")], false, 200, ALPHABET),
            ask("/g/x?cc=max-age%3D60", &[("range", "bytes = 1-2")], false, 200, ALPHABET),
            ask("/g/x?cc=max-age%3D60", &[("range", "bytes=")], false, 200, ALPHABET),
            ask(
                "/g/x?cc=max-age%3D60",
                &[("range", "bytes=1-2"), ("range", "bytes=3-4")],
                false,
                200,
                ALPHABET,
            ),
        ],
    ),
    case(
        "more ranges than the bound: the whole 200",
        "9110 14.2",
        &[
            get("/h/x?cc=max-age%3D60", true),
            ask(
                "/h/x?cc=max-age%3D60",
                &[("range", "bytes=0-0,1-1,2-2,3-3,4-4,5-5,6-6,7-7,8-8,9-9,10-10,11-11,12-12,13-13,14-14,15-15,16-16")],
                false,
                200,
                ALPHABET,
            ),
        ],
    ),
    case(
        "If-Range with the strong ETag: the range",
        "9110 13.1.5",
        &[
            get("/i/x?cc=max-age%3D60&etag=%22v1%22", true),
            ask(
                "/i/x?cc=max-age%3D60&etag=%22v1%22",
                &[("range", "bytes=0-1"), ("if-range", "\"v1\"")],
                false,
                206,
                "ab",
            ),
        ],
    ),
    case(
        "If-Range with another or a weak ETag: the whole 200",
        "9110 13.1.5, 8.8.3.2",
        &[
            get("/j/x?cc=max-age%3D60&etag=%22v1%22", true),
            ask(
                "/j/x?cc=max-age%3D60&etag=%22v1%22",
                &[("range", "bytes=0-1"), ("if-range", "\"v0\"")],
                false,
                200,
                ALPHABET,
            ),
            ask(
                "/j/x?cc=max-age%3D60&etag=%22v1%22",
                &[("range", "bytes=0-1"), ("if-range", "W/\"v1\"")],
                false,
                200,
                ALPHABET,
            ),
        ],
    ),
    case(
        "If-Range with a weak stored ETag: the whole 200",
        "9110 13.1.5, 8.8.3.2",
        &[
            get("/k/x?cc=max-age%3D60&etag=W%2F%22v1%22", true),
            ask(
                "/k/x?cc=max-age%3D60&etag=W%2F%22v1%22",
                &[("range", "bytes=0-1"), ("if-range", "\"v1\"")],
                false,
                200,
                ALPHABET,
            ),
        ],
    ),
    case(
        "If-Range with the exact, strong Last-Modified: the range",
        "9110 13.1.5, 8.8.2.2",
        &[
            get("/l/x?cc=max-age%3D60&lm=start", true),
            ask(
                "/l/x?cc=max-age%3D60&lm=start",
                &[("range", "bytes=0-1"), ("if-range", START)],
                false,
                206,
                "ab",
            ),
            ask(
                "/l/x?cc=max-age%3D60&lm=start",
                &[("range", "bytes=0-1"), ("if-range", "Sun, 06 Nov 1994 08:49:38 GMT")],
                false,
                200,
                ALPHABET,
            ),
        ],
    ),
    case(
        "If-Range with a weak Last-Modified (equal to Date): the whole 200",
        "9110 13.1.5, 8.8.2.2",
        &[
            get("/m/x?cc=max-age%3D60&lm=start&date=lm", true),
            ask(
                "/m/x?cc=max-age%3D60&lm=start&date=lm",
                &[("range", "bytes=0-1"), ("if-range", START)],
                false,
                200,
                ALPHABET,
            ),
        ],
    ),
    case(
        "If-Range without Range is ignored",
        "9110 13.1.5",
        &[
            get("/n/x?cc=max-age%3D60&etag=%22v1%22", true),
            ask("/n/x?cc=max-age%3D60&etag=%22v1%22", &[("if-range", "\"v0\"")], false, 200, ALPHABET),
        ],
    ),
    case(
        "a HEAD with Range gets the whole response's head, no body",
        "9110 14.2, 9.3.2",
        &[
            get("/o/x?cc=max-age%3D60", true),
            fields(
                head(ask("/o/x?cc=max-age%3D60", &[("range", "bytes=0-1")], false, 200, "")),
                &[("content-length", Some("26")), ("content-range", None)],
            ),
        ],
    ),
    case(
        "Range on a stored 404 is ignored",
        "9110 14.2",
        &[
            with_status(get("/p/x?cc=max-age%3D60&status=404", true), 404),
            fields(
                ask("/p/x?cc=max-age%3D60&status=404", &[("range", "bytes=0-1")], false, 404, ALPHABET),
                &[("content-range", None)],
            ),
        ],
    ),
    case(
        "If-None-Match is evaluated before Range",
        "9110 13.2.2",
        &[
            get("/q/x?cc=max-age%3D60&etag=%22v1%22", true),
            ask(
                "/q/x?cc=max-age%3D60&etag=%22v1%22",
                &[("range", "bytes=0-1"), ("if-none-match", "\"v1\"")],
                false,
                304,
                "",
            ),
        ],
    ),
    case(
        "a stale entry revalidated by a range request: freshened, then the range served",
        "9111 4.3.4, 9110 14.2",
        &[
            get("/r/x?cc=max-age%3D0&etag=%22v1%22", true),
            fields(
                ask(
                    "/r/x?cc=max-age%3D0&etag=%22v1%22",
                    &[("range", "bytes=3-5")],
                    true,
                    206,
                    "def",
                ),
                &[("x-cache", Some("REVALIDATED")), ("content-range", Some("bytes 3-5/26"))],
            ),
        ],
    ),
    // --- a miss with Range ---
    case(
        "a miss with Range goes to the origin with it; a 200 that ignores it is stored",
        "9111 3, 9110 14.2",
        &[
            fields(
                ask("/s/x?cc=max-age%3D60", &[("range", "bytes=0-1")], true, 200, ALPHABET),
                &[("x-cache", Some("MISS"))],
            ),
            ask("/s/x?cc=max-age%3D60", &[("range", "bytes=0-1")], false, 206, "ab"),
        ],
    ),
    // --- parts stored (RFC 9111 sections 3.3 and 3.4) ---
    case(
        "a stored 206 answers a range within it, and only that",
        "9111 3.3",
        &[
            fields(
                ask(
                    "/t/x?cc=max-age%3D60&honour",
                    &[("range", "bytes=0-9")],
                    true,
                    206,
                    "abcdefghij",
                ),
                &[("x-cache", Some("MISS"))],
            ),
            fields(
                ask(
                    "/t/x?cc=max-age%3D60&honour",
                    &[("range", "bytes=2-4")],
                    false,
                    206,
                    "cde",
                ),
                &[
                    ("content-range", Some("bytes 2-4/26")),
                    ("content-length", Some("3")),
                    ("x-cache", Some("HIT-MEM")),
                ],
            ),
            // Past the part, or the whole: the origin.
            ask(
                "/t/x?cc=max-age%3D60&honour",
                &[("range", "bytes=8-12")],
                true,
                206,
                "ijklm",
            ),
            head(ask("/t/x?cc=max-age%3D60&honour", &[], true, 200, "")),
            ask("/t/x?cc=max-age%3D60&honour", &[], true, 200, ALPHABET),
            // The whole 200 replaced the part.
            ask(
                "/t/x?cc=max-age%3D60&honour",
                &[("range", "bytes=20-")],
                false,
                206,
                "uvwxyz",
            ),
        ],
    ),
    case(
        "parts of one representation (same strong ETag and length) are combined",
        "9111 3.4",
        &[
            ask(
                "/u/x?cc=max-age%3D60&honour&etag=%22v1%22",
                &[("range", "bytes=0-9")],
                true,
                206,
                "abcdefghij",
            ),
            ask(
                "/u/x?cc=max-age%3D60&honour&etag=%22v1%22",
                &[("range", "bytes=8-15")],
                true,
                206,
                "ijklmnop",
            ),
            // The two overlapping parts are one now.
            fields(
                ask(
                    "/u/x?cc=max-age%3D60&honour&etag=%22v1%22",
                    &[("range", "bytes=5-12")],
                    false,
                    206,
                    "fghijklm",
                ),
                &[("content-range", Some("bytes 5-12/26")), ("x-call", Some("2"))],
            ),
            ask(
                "/u/x?cc=max-age%3D60&honour&etag=%22v1%22",
                &[("range", "bytes=16-")],
                true,
                206,
                "qrstuvwxyz",
            ),
            // Complete: a 200 with the newest part's fields.
            fields(
                ask("/u/x?cc=max-age%3D60&honour&etag=%22v1%22", &[], false, 200, ALPHABET),
                &[
                    ("content-length", Some("26")),
                    ("content-range", None),
                    ("x-call", Some("3")),
                    ("x-cache", Some("HIT-MEM")),
                ],
            ),
            fields(
                head(ask("/u/x?cc=max-age%3D60&honour&etag=%22v1%22", &[], false, 200, "")),
                &[("content-length", Some("26"))],
            ),
        ],
    ),
    case(
        "parts without a strong ETag are not combined: the newest is kept",
        "9111 3.4, 9110 8.8.3.2",
        &[
            ask("/v/x?cc=max-age%3D60&honour", &[("range", "bytes=0-12")], true, 206, "abcdefghijklm"),
            ask("/v/x?cc=max-age%3D60&honour", &[("range", "bytes=13-")], true, 206, "nopqrstuvwxyz"),
            ask("/v/x?cc=max-age%3D60&honour", &[], true, 200, ALPHABET),
            ask(
                "/w/x?cc=max-age%3D60&honour&etag=W%2F%22v1%22",
                &[("range", "bytes=0-12")],
                true,
                206,
                "abcdefghijklm",
            ),
            ask(
                "/w/x?cc=max-age%3D60&honour&etag=W%2F%22v1%22",
                &[("range", "bytes=13-")],
                true,
                206,
                "nopqrstuvwxyz",
            ),
            ask("/w/x?cc=max-age%3D60&honour&etag=W%2F%22v1%22", &[("range", "bytes=13-14")], false, 206, "no"),
            ask("/w/x?cc=max-age%3D60&honour&etag=W%2F%22v1%22", &[("range", "bytes=0-1")], true, 206, "ab"),
        ],
    ),
    case(
        "a stale part is not served",
        "9111 3.3, 4",
        &[
            ask(
                "/y/x?cc=max-age%3D0&honour&etag=%22v1%22",
                &[("range", "bytes=0-9")],
                true,
                206,
                "abcdefghij",
            ),
            ask(
                "/y/x?cc=max-age%3D0&honour&etag=%22v1%22",
                &[("range", "bytes=0-1")],
                true,
                206,
                "ab",
            ),
        ],
    ),
    case(
        "If-Range that does not hold for a stored part: to the origin",
        "9110 13.1.5, 9111 3.3",
        &[
            ask(
                "/z/x?cc=max-age%3D60&honour&etag=%22v1%22",
                &[("range", "bytes=0-9")],
                true,
                206,
                "abcdefghij",
            ),
            ask(
                "/z/x?cc=max-age%3D60&honour&etag=%22v1%22",
                &[("range", "bytes=0-1"), ("if-range", "\"v1\"")],
                false,
                206,
                "ab",
            ),
            ask(
                "/z/x?cc=max-age%3D60&honour&etag=%22v1%22",
                &[("range", "bytes=0-1"), ("if-range", "\"v0\"")],
                true,
                200,
                ALPHABET,
            ),
        ],
    ),
];

const fn with_status(mut step: Step, status: u16) -> Step {
    step.status = status;
    step
}

async fn run_case(case: &Case) -> Result<(), String> {
    let origin = RangeOrigin::default();
    let calls = origin.calls.clone();
    let app = axum::Router::new()
        .fallback(range_origin)
        .with_state(origin);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let store = Cache::new(MemoryTier::builder().max_entries(1000).build().unwrap());
    let svc = HttpCacheLayer::new(store).layer(client);
    let result = async {
        for (i, step) in case.steps.iter().enumerate() {
            let before = calls.load(Ordering::SeqCst);
            let mut req = Request::builder()
                .method(step.method)
                .uri(format!("http://{addr}{}", step.path));
            for (n, v) in step.headers {
                req = req.header(*n, v.replace(START, &start_date()));
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
            if asked != step.origin {
                return Err(format!(
                    "step {i}: origin {} asked, expected {}; x-cache {:?}",
                    if asked { "was" } else { "was not" },
                    if step.origin { "asked" } else { "not asked" },
                    parts.headers.get("x-cache")
                ));
            }
            if parts.status.as_u16() != step.status {
                return Err(format!(
                    "step {i}: status {}, expected {} (body {body:?})",
                    parts.status, step.status
                ));
            }
            if let Some(want) = step.body {
                if body != want {
                    return Err(format!("step {i}: body {body:?}, expected {want:?}"));
                }
            }
            for (name, want) in step.fields {
                let got = parts.headers.get(*name).map(|v| v.to_str().unwrap_or("?"));
                if got != *want {
                    return Err(format!("step {i}: {name}: {got:?}, expected {want:?}"));
                }
            }
        }
        Ok(())
    }
    .await;
    server.abort();
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc_9110_ranges_from_the_cache() {
    tokio::time::timeout(BOUND, async {
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

// === big bodies, from the disk tier ===

/// The bytes `first..=last` of the origin's `len=` body.
fn cycle(first: usize, last: usize) -> String {
    ALPHABET
        .chars()
        .cycle()
        .skip(first)
        .take(last + 1 - first)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranges_of_a_big_body_are_served_from_the_disk_tier() {
    tokio::time::timeout(BOUND, async {
        let origin = RangeOrigin::default();
        let calls = origin.calls.clone();
        let app = axum::Router::new()
            .fallback(range_origin)
            .with_state(origin);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move { axum::serve(listener, app).await });
        let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
        let dir = tempfile::tempdir().unwrap();
        let len = 900_000;
        let url = format!("http://{addr}/big/x?cc=max-age%3D600&len={len}");
        let fetch = |svc: tower_cache::http::HttpCacheService<_>, range: Option<&'static str>| {
            let mut req = Request::get(url.as_str());
            if let Some(r) = range {
                req = req.header("range", r);
            }
            async move {
                let res = svc
                    .oneshot(req.body(Full::default()).unwrap())
                    .await
                    .unwrap();
                let (parts, body) = res.into_parts();
                let body = body.collect().await.unwrap().to_bytes();
                (parts, String::from_utf8(body.to_vec()).unwrap())
            }
        };
        {
            let svc = HttpCacheLayer::on_disk(dir.path())
                .unwrap()
                .layer(client.clone());
            let (parts, body) = fetch(svc, None).await;
            assert_eq!(parts.headers["x-cache"], "MISS");
            assert_eq!(body.len(), len);
        }
        // A restart: the memory tier is empty, the entry is on disk.
        let svc = HttpCacheLayer::on_disk(dir.path()).unwrap().layer(client);
        let (parts, body) = fetch(svc.clone(), Some("bytes=500000-500009")).await;
        assert_eq!(parts.status, 206);
        assert_eq!(parts.headers["x-cache"], "HIT-DISK");
        assert_eq!(parts.headers["content-range"], "bytes 500000-500009/900000");
        assert_eq!(body, cycle(500_000, 500_009));
        // Promoted: the next range is a memory hit of the same record.
        let (parts, body) = fetch(svc.clone(), Some("bytes=-5")).await;
        assert_eq!(
            (parts.status.as_u16(), &*body),
            (206, &*cycle(len - 5, len - 1))
        );
        assert_eq!(parts.headers["x-cache"], "HIT-MEM");
        let (parts, _) = fetch(svc, Some("bytes=900000-")).await;
        assert_eq!(parts.status, 416);
        assert_eq!(parts.headers["content-range"], "bytes */900000");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        server.abort();
    })
    .await
    .expect("bounded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_answers_ranges_from_its_cache() {
    // RFC 9110 sections 14.2 and 15.3.7, through `cache_proxy` as a child process.
    tokio::time::timeout(BOUND, async {
        let origin = RangeOrigin::default();
        let calls = origin.calls.clone();
        let ranges = origin.ranges.clone();
        let app = axum::Router::new()
            .fallback(range_origin)
            .with_state(origin);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move { axum::serve(listener, app).await });
        let proxy = super::Proxy::start(&format!("http://{addr}")).await;
        let path = "/px/x?cc=max-age%3D60&honour&etag=%22v1%22";
        // A miss with Range reaches the origin with it, and the part is stored.
        let (s, h, b) =
            super::send_via(proxy.addr, "GET", path, &[("range", "bytes=0-9")], "").await;
        assert_eq!(
            (s, b.as_str(), h["x-cache"].to_str().unwrap()),
            (206, "abcdefghij", "MISS")
        );
        assert_eq!(
            ranges.lock().unwrap().as_slice(),
            &[Some("bytes=0-9".to_owned())]
        );
        let (s, h, b) =
            super::send_via(proxy.addr, "GET", path, &[("range", "bytes=3-5")], "").await;
        assert_eq!(
            (s, b.as_str(), h["x-cache"].to_str().unwrap()),
            (206, "def", "HIT-MEM")
        );
        assert_eq!(h["content-range"], "bytes 3-5/26");
        // The rest, then the whole from the combined parts.
        let (s, _, _) =
            super::send_via(proxy.addr, "GET", path, &[("range", "bytes=10-")], "").await;
        assert_eq!(s, 206);
        let (s, h, b) = super::send_via(proxy.addr, "GET", path, &[], "").await;
        assert_eq!(
            (s, b.as_str(), h["x-cache"].to_str().unwrap()),
            (200, ALPHABET, "HIT-MEM")
        );
        let (s, h, b) =
            super::send_via(proxy.addr, "GET", path, &[("range", "bytes=30-")], "").await;
        assert_eq!(
            (s, b.as_str(), h["content-range"].to_str().unwrap()),
            (416, "", "bytes */26")
        );
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        server.abort();
    })
    .await
    .expect("bounded");
}
