//! Who may use the gateway: only its own host names are answered, and writes to the
//! data services need the fleet's token.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::Gateway;
use crate::fleet::services::data_services;

/// Writes to the data services (any method but GET, HEAD and OPTIONS) need
/// `Authorization: Bearer <token>`: 401 without it.
pub(super) async fn writes_need_token(
    State(gw): State<Arc<Gateway>>,
    req: Request,
    next: Next,
) -> Response {
    let reads = [http::Method::GET, http::Method::HEAD, http::Method::OPTIONS];
    let data = data_services().any(|(s, _)| req.uri().path().starts_with(s.prefix));
    if !data || reads.contains(req.method()) {
        return next.run(req).await;
    }
    if crate::auth::authorized(
        req.headers().get(http::header::AUTHORIZATION),
        &gw.parts.token,
    ) {
        return next.run(req).await;
    }
    (
        StatusCode::UNAUTHORIZED,
        [(http::header::WWW_AUTHENTICATE, "Bearer")],
        Json(serde_json::json!({
            "error": "writes need Authorization: Bearer <token> (the fleet's token, FLEET_TOKEN)"
        })),
    )
        .into_response()
}

/// Answers only requests for one of the gateway's host names (its `Host`, and the
/// authority of an absolute-form target when there is one): 421 for another (a page
/// on another site that rebinds its name to this address cannot use the gateway), 400
/// without one.
pub(super) async fn known_host(
    State(gw): State<Arc<Gateway>>,
    req: Request,
    next: Next,
) -> Response {
    let host = req.headers().get(http::header::HOST).map(|h| h.as_bytes());
    let authority = req.uri().authority().map(|a| a.as_str().as_bytes());
    let known = |name: &[u8]| {
        gw.parts
            .hosts
            .iter()
            .any(|h| h.as_bytes().eq_ignore_ascii_case(name))
    };
    match (host, authority) {
        (None, None) => (
            StatusCode::BAD_REQUEST,
            Json(serde_json::json!({ "error": "a request needs a Host header" })),
        )
            .into_response(),
        (h, a) if h.is_none_or(known) && a.is_none_or(known) => next.run(req).await,
        _ => (
            StatusCode::MISDIRECTED_REQUEST,
            Json(serde_json::json!({
                "error": "this gateway does not answer to that host name; add it with --host NAME"
            })),
        )
            .into_response(),
    }
}

/// The host names a gateway on `port` answers to: `localhost`, `127.0.0.1` and `[::1]`
/// with the port, and each of `extra` as given and with the port (all without a port
/// too when it is 80, as clients leave the default port out).
pub fn host_names(port: u16, extra: &[String]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for name in ["localhost", "127.0.0.1", "[::1]"]
        .into_iter()
        .map(str::to_owned)
        .chain(extra.iter().map(|n| n.to_ascii_lowercase()))
    {
        names.push(format!("{name}:{port}"));
        if port == 80 || extra.iter().any(|e| e.eq_ignore_ascii_case(&name)) {
            names.push(name);
        }
    }
    names.sort();
    names.dedup();
    names
}
