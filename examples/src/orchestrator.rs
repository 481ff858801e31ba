//! The fleet's orchestrator API, as an axum `Router` to mount:
//!
//! - `POST /api/v1/system/scale/{service}/{up|down}`: one instance more or fewer. Needs
//!   `Authorization: Bearer <token>` (401 without it); a count outside the policy's
//!   bounds answers 409 with the reason and changes nothing; an unknown service 404, a
//!   direction other than up or down 400.
//! - `GET /api/v1/system/scaling-status`: per service, the instances, the last
//!   decisions with their reasons, and the audit history.
//! - `GET /api/v1/system/load-distribution`: per service and instance, the share of
//!   requests, in flight, p99 and latency estimate, and health, from the balancer.
//!
//! All answers are JSON.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use tower_autoscale::{AuditEntry, ManualScaleError, ScalingManager};
use tower_balance_ext::{EndpointState, LoadStats};

struct Api {
    manager: ScalingManager,
    loads: BTreeMap<String, LoadStats>,
    token: String,
}

/// The orchestrator's routes over `manager` (scaling) and each service's balancer
/// statistics; POSTs need `token`.
pub fn router(
    manager: ScalingManager,
    loads: BTreeMap<String, LoadStats>,
    token: String,
) -> Router {
    let api = Arc::new(Api {
        manager,
        loads,
        token,
    });
    Router::new()
        .route("/api/v1/system/scale/{service}/{direction}", post(scale))
        .route("/api/v1/system/scaling-status", get(status))
        .route("/api/v1/system/load-distribution", get(distribution))
        .with_state(api)
}

fn error(code: StatusCode, message: impl Into<String>) -> (StatusCode, Json<Value>) {
    (code, Json(json!({ "error": message.into() })))
}

async fn scale(
    State(api): State<Arc<Api>>,
    Path((service, direction)): Path<(String, String)>,
    headers: HeaderMap,
) -> (StatusCode, Json<Value>) {
    if !crate::auth::authorized(headers.get(http::header::AUTHORIZATION), &api.token) {
        return error(
            StatusCode::UNAUTHORIZED,
            "give Authorization: Bearer <token>",
        );
    }
    let delta = match direction.as_str() {
        "up" => 1,
        "down" => -1,
        other => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("`{other}` is neither up nor down"),
            )
        }
    };
    match api.manager.scale_by(&service, delta).await {
        Ok(n) => (
            StatusCode::OK,
            Json(json!({ "service": service, "instances": n })),
        ),
        Err(ManualScaleError::UnknownService(s)) => {
            error(StatusCode::NOT_FOUND, format!("no service named `{s}`"))
        }
        Err(ManualScaleError::BeyondBounds(b)) => error(StatusCode::CONFLICT, b.to_string()),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn status(State(api): State<Arc<Api>>) -> Json<Value> {
    let history = api.manager.history();
    let services: Vec<Value> = api
        .manager
        .services()
        .into_iter()
        .map(|name| {
            let decisions: Vec<&AuditEntry> = history
                .iter()
                .filter(|e| matches!(e, AuditEntry::Decision(d) if d.service == name))
                .rev()
                .take(10)
                .collect();
            let actions: Vec<&AuditEntry> = history
                .iter()
                .filter(|e| matches!(e, AuditEntry::Action { service, .. } if *service == name))
                .rev()
                .take(50)
                .collect();
            json!({
                "name": name,
                "instances": api.manager.instances(&name),
                "policy": api.manager.engine().policy(&name),
                "last_decisions": decisions,
                "history": actions,
            })
        })
        .collect();
    Json(json!({ "services": services }))
}

async fn distribution(State(api): State<Arc<Api>>) -> Json<Value> {
    let services: Vec<Value> = api
        .loads
        .iter()
        .map(|(name, stats)| {
            let s = stats.snapshot();
            let instances: Vec<Value> = s
                .endpoints
                .iter()
                .map(|e| {
                    json!({
                        "instance": e.name,
                        "share": e.share,
                        "requests": e.requests,
                        "in_flight": e.in_flight,
                        "errors": e.errors,
                        "p99_ms": e.p99.as_secs_f64() * 1e3,
                        "latency_estimate_ms": e.ewma.as_secs_f64() * 1e3,
                        "health": match e.state {
                            EndpointState::Ready => "ready",
                            EndpointState::NotReady => "not ready",
                            EndpointState::SetAside => "set aside",
                            EndpointState::Removed => "removed",
                            _ => "unknown",
                        },
                    })
                })
                .collect();
            json!({
                "service": name,
                "requests": s.requests,
                "in_flight": s.in_flight,
                "waiting": s.waiting,
                "throughput": s.throughput,
                "error_rate": s.error_rate,
                "p99_ms": s.p99.as_secs_f64() * 1e3,
                "instances": instances,
            })
        })
        .collect();
    Json(json!({ "services": services }))
}
