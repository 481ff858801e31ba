//! [`HealthEndpoints`]: Kubernetes-style probe endpoints as a `Service`.
//!
//! | path | answers |
//! | --- | --- |
//! | `/health` | JSON: overall status and, unless terse, every probe's status, last check, consecutive failures and message; 200 if ready, 503 if not |
//! | `/health/live` | 200 if live, 503 if not |
//! | `/health/ready` | 200 if ready, 503 if not |
//! | `/health/startup` | 200 once started, 503 before |
//!
//! `GET` and `HEAD` are answered; other methods get 405, other paths 404. **No probe runs
//! on the request path**: answers come from the probes' last results, so a slow
//! dependency never makes the health endpoint slow. [`HealthEndpoints::terse`] hides probe
//! details for endpoints exposed to the public.
//!
//! Mount it in axum 0.8 with `.route_service("/health", endpoints.clone())` and
//! `.route_service("/health/{probe}", endpoints)` (as the workspace's axum test does), or
//! serve it with hyper.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use http_body_util::{BodyExt, Empty};
//! use tower::ServiceExt;
//! use tower_health::{HealthEndpoints, Probes};
//!
//! let endpoints = HealthEndpoints::new(Probes::new());
//! let res = endpoints
//!     .oneshot(http::Request::get("/health/ready").body(Empty::<bytes::Bytes>::new())?)
//!     .await?;
//! assert_eq!(res.status(), 200);
//! # Ok(()) }
//! ```

use std::convert::Infallible;
use std::fmt::Write;
use std::future::{ready, Ready};
use std::task::{Context, Poll};
use std::time::UNIX_EPOCH;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use tower_service::Service;

use crate::probe::Probes;

/// Probe endpoints; see the [module docs](crate::endpoints). Cheap to clone.
#[derive(Debug, Clone)]
pub struct HealthEndpoints {
    probes: Probes,
    terse: bool,
    prefix: String,
}

impl HealthEndpoints {
    /// Endpoints under `/health` answering from `probes`.
    pub fn new(probes: Probes) -> Self {
        Self {
            probes,
            terse: false,
            prefix: "/health".into(),
        }
    }

    /// Hide probe details (names, messages) in `/health`: only the overall status.
    pub fn terse(mut self, terse: bool) -> Self {
        self.terse = terse;
        self
    }

    /// Serve under `prefix` instead of `/health` (e.g. `""` when mounted with
    /// `nest_service("/health", ...)`).
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into().trim_end_matches('/').to_string();
        self
    }

    fn answer(&self, method: &Method, path: &str) -> Response<Full<Bytes>> {
        let Some(rest) = path.strip_prefix(self.prefix.as_str()) else {
            return plain(StatusCode::NOT_FOUND, "not found\n");
        };
        let status = self.probes.status();
        let (ok, body) = match rest {
            "" | "/" => (status.ready, None),
            "/live" => (
                status.live,
                Some(if status.live { "live\n" } else { "not live\n" }),
            ),
            "/ready" => (
                status.ready,
                Some(if status.ready {
                    "ready\n"
                } else {
                    "not ready\n"
                }),
            ),
            "/startup" => (
                status.started,
                Some(if status.started {
                    "started\n"
                } else {
                    "starting\n"
                }),
            ),
            _ => return plain(StatusCode::NOT_FOUND, "not found\n"),
        };
        if method != Method::GET && method != Method::HEAD {
            let mut res = plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
            res.headers_mut()
                .insert(header::ALLOW, http::HeaderValue::from_static("GET, HEAD"));
            return res;
        }
        let code = if ok {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        let mut res = match body {
            Some(text) => plain(code, text),
            None => {
                let mut res = Response::new(Full::new(Bytes::from(self.json())));
                *res.status_mut() = code;
                res.headers_mut().insert(
                    header::CONTENT_TYPE,
                    http::HeaderValue::from_static("application/json"),
                );
                res
            }
        };
        res.headers_mut().insert(
            header::CACHE_CONTROL,
            http::HeaderValue::from_static("no-store"),
        );
        if method == Method::HEAD {
            *res.body_mut() = Full::new(Bytes::new());
        }
        res
    }

    /// The JSON document `/health` answers with.
    pub fn json(&self) -> String {
        let s = self.probes.status();
        let word = |b: bool| if b { "pass" } else { "fail" };
        let mut out = format!(
            "{{\"status\":\"{}\",\"started\":{},\"ready\":{},\"live\":{},\"draining\":{}",
            word(s.ready && s.live),
            s.started,
            s.ready,
            s.live,
            s.draining
        );
        if !self.terse {
            out.push_str(",\"probes\":[");
            for (i, p) in self.probes.statuses().iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                let last = p
                    .last_check
                    .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                    .map_or("null".to_string(), |d| d.as_millis().to_string());
                let _ = write!(
                    out,
                    "{{\"name\":{},\"kind\":\"{}\",\"status\":\"{}\",\"last_check_unix_ms\":{last},\"consecutive_failures\":{},\"message\":{}}}",
                    json_string(&p.name),
                    p.kind.as_str(),
                    p.state.as_str(),
                    p.consecutive_failures,
                    p.message.as_deref().map_or("null".to_string(), json_string),
                );
            }
            out.push(']');
        }
        out.push('}');
        out
    }
}

fn plain(code: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    let mut res = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *res.status_mut() = code;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    res
}

/// A JSON string literal for `s`.
pub(crate) fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

impl<B> Service<Request<B>> for HealthEndpoints {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        ready(Ok(self.answer(req.method(), req.uri().path())))
    }
}
