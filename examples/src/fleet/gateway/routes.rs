//! The gateway's axum routes: the services' prefixes, the system API, `/metrics`,
//! `/health/*` and the dashboard, with request ids and a span, a count and a timing for
//! every request.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{any, get};
use axum::{Json, Router};
use tower_health::HealthEndpoints;
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};

use super::{access, rate_limit, Gateway, DASHBOARD};
use crate::fleet::services::SERVICES;

/// Request ids: a per-gateway prefix and a counter.
#[derive(Clone)]
struct Ids(Arc<Gateway>, u32);

impl MakeRequestId for Ids {
    fn make_request_id<B>(&mut self, _req: &http::Request<B>) -> Option<RequestId> {
        let n = self.0.next_id.fetch_add(1, Ordering::Relaxed);
        HeaderValue::from_str(&format!("{:08x}-{n:x}", self.1))
            .ok()
            .map(RequestId::new)
    }
}

/// The gateway's routes over `gw`.
pub fn router(gw: Arc<Gateway>) -> Router {
    let loads = gw.loads();
    let orchestrator =
        crate::orchestrator::router(gw.parts.manager.clone(), loads, gw.parts.token.clone());
    let mut services = Router::new();
    for (i, svc) in gw.parts.services.iter().enumerate() {
        services = services.route(
            &format!("{}{{*rest}}", svc.spec.prefix),
            any(
                move |State(gw): State<Arc<Gateway>>, req: Request| async move {
                    gw.forward(i, req).await
                },
            ),
        );
    }
    let services = services
        .route_layer(axum::middleware::from_fn_with_state(
            gw.clone(),
            access::writes_need_token,
        ))
        .route_layer(axum::middleware::from_fn_with_state(
            gw.clone(),
            rate_limit::check,
        ));
    let health = HealthEndpoints::new(gw.probes.clone());
    let prefix = (crate::fleet::random_u64() & 0xffff_ffff) as u32;
    Router::new()
        .route("/", get(|| async { Html(DASHBOARD) }))
        .route("/metrics", get(metrics))
        .route("/api/v1/system/overview", get(overview))
        .route(
            "/api/v1/system/history",
            get(|State(gw): State<Arc<Gateway>>| async move { json(gw.history()) }),
        )
        .route_service("/health", health.clone())
        .route_service("/health/{probe}", health)
        .merge(services)
        .with_state(gw.clone())
        .merge(orchestrator)
        .layer(axum::middleware::from_fn_with_state(
            gw.clone(),
            access::known_host,
        ))
        .layer(axum::middleware::from_fn_with_state(gw.clone(), observe))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(Ids(gw, prefix)))
}

async fn overview(State(gw): State<Arc<Gateway>>) -> Json<serde_json::Value> {
    json(gw.overview())
}

/// `value` as JSON with its numbers rounded as the orchestrator's answers are
/// ([`crate::orchestrator::tidy`]).
fn json(value: impl serde::Serialize) -> Json<serde_json::Value> {
    crate::orchestrator::tidy(Json(
        serde_json::to_value(value).unwrap_or(serde_json::Value::Null),
    ))
}

async fn metrics(State(gw): State<Arc<Gateway>>) -> impl IntoResponse {
    (
        [(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        gw.metrics(),
    )
}

/// The route's first segments, for labels (bounded: ids are left out): a service's
/// name for its routes.
fn route_label(path: &str) -> &'static str {
    let services = SERVICES.iter().map(|s| (s.prefix, s.name));
    for (prefix, label) in services.chain([
        ("/api/v1/system/", "system"),
        ("/health", "health"),
        ("/metrics", "metrics"),
    ]) {
        if path.starts_with(prefix) {
            return label;
        }
    }
    if path == "/" {
        "dashboard"
    } else {
        "other"
    }
}

/// Counts and times every request, in a `tracing` span with its request id.
async fn observe(State(gw): State<Arc<Gateway>>, req: Request, next: Next) -> Response {
    use tracing::Instrument;
    gw.requests.fetch_add(1, Ordering::Relaxed);
    let route = route_label(req.uri().path());
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let span =
        tracing::info_span!("request", %id, method = %req.method(), path = %req.uri().path());
    let start = Instant::now();
    let res = next.run(req).instrument(span.clone()).await;
    let status = res.status().as_u16().to_string();
    let elapsed = start.elapsed();
    span.in_scope(|| tracing::debug!(status = %status, ms = elapsed.as_secs_f64() * 1e3, "done"));
    metrics::with_local_recorder(&gw.recorder, || {
        metrics::counter!("fleet_gateway_requests_total", "route" => route, "status" => status)
            .increment(1);
        metrics::histogram!("fleet_gateway_request_seconds", "route" => route)
            .record(elapsed.as_secs_f64());
    });
    res
}

#[cfg(test)]
mod tests {
    use super::route_label;
    use crate::fleet::services::SERVICES;

    #[test]
    fn a_services_routes_are_labelled_with_its_name() {
        for s in &SERVICES {
            assert_eq!(route_label(&format!("{}x/1", s.prefix)), s.name);
        }
        assert_eq!(route_label("/api/v1/system/overview"), "system");
        assert_eq!(route_label("/"), "dashboard");
        assert_eq!(route_label("/api/v1/unknown/1"), "other");
    }
}
