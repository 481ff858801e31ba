//! The fleet's orchestrator API, as an axum `Router` to mount:
//!
//! - `POST /api/v1/system/scale/{service}/{up|down}`: one instance more or fewer. Needs
//!   `Authorization: Bearer <token>` (401 without it); a count outside the policy's
//!   bounds answers 409 with the reason and changes nothing; an unknown service 404, a
//!   direction other than up or down 400. A change holds against the autoscaler for the
//!   manager's manual hold (the fleet's `--manual-hold`, 5 minutes by default): until
//!   then it keeps at least the count of a scale-up (it may still add more) and at most
//!   that of a scale-down (it may still remove more; a surge at the panic threshold
//!   still adds). The answer says so:
//!   `{"service": "training", "instances": 2, "held_until_unix_ms": 1767225600000,
//!   "autoscaler": "keeps at least 2 instances until 00:00:00 UTC (300 s from now); may
//!   revise the count after that"}` (`held_until_unix_ms` is null without a hold).
//! - `GET /api/v1/system/scaling-status`: per service, the instances, the manual hold in
//!   force (`manual_hold`: [`HoldView`], or null), the last decisions with their
//!   reasons, and the audit history.
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
use serde::Serialize;
use serde_json::{json, Value};
use tower_autoscale::{AuditEntry, ManualHold, ManualScaleError, ScalingManager};
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
        Ok(n) => {
            let hold = api.manager.engine().manual_hold(&service);
            let view = hold.map(|h| HoldView::new(&h, crate::fleet::unix_ms()));
            (
                StatusCode::OK,
                Json(json!({
                    "service": service,
                    "instances": n,
                    "held_until_unix_ms": view.as_ref().map(|v| v.until_unix_ms),
                    "autoscaler": view.map_or_else(
                        || "may revise this count at its next evaluation".to_owned(),
                        |v| v.autoscaler,
                    ),
                })),
            )
        }
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
                "manual_hold": api.manager.engine().manual_hold(&name)
                    .map(|h| HoldView::new(&h, crate::fleet::unix_ms())),
                "policy": api.manager.engine().policy(&name),
                "last_decisions": decisions,
                "history": actions,
            })
        })
        .collect();
    Json(json!({ "services": services }))
}

/// A manual scale's hold as the API and the dashboard show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HoldView {
    /// The count held.
    pub instances: usize,
    /// `at least` (after a scale-up) or `at most` (after a scale-down).
    pub keep: String,
    /// When the hold ends, in milliseconds since the Unix epoch.
    pub until_unix_ms: u64,
    /// Whole seconds until then.
    pub ends_in_s: u64,
    /// What the autoscaler does meanwhile and after, in words.
    pub autoscaler: String,
}

impl HoldView {
    /// `hold` seen at `now_unix_ms`.
    pub fn new(hold: &ManualHold, now_unix_ms: u64) -> Self {
        let ends_in_s = hold
            .until_unix_ms
            .saturating_sub(now_unix_ms)
            .div_ceil(1000);
        Self {
            instances: hold.instances,
            keep: hold.keep.to_string(),
            until_unix_ms: hold.until_unix_ms,
            ends_in_s,
            autoscaler: format!(
                "keeps {} {} instances until {} UTC ({ends_in_s} s from now); may revise the count after that",
                hold.keep,
                hold.instances,
                clock(hold.until_unix_ms)
            ),
        }
    }
}

/// The UTC time of day of a moment in milliseconds since the Unix epoch: `HH:MM:SS`.
fn clock(unix_ms: u64) -> String {
    let s = (unix_ms / 1000) % 86_400;
    format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tower_autoscale::{DecisionEngine, Keep, ScalingPolicy};

    use super::*;

    #[test]
    fn a_hold_says_until_when_and_what_the_autoscaler_may_do() {
        assert_eq!(clock(1_767_225_600_000 + 3_723_456), "01:02:03");
        let engine = DecisionEngine::new();
        engine
            .add_service("training", ScalingPolicy::default(), || {
                tower_autoscale::LoadSample::new(1)
            })
            .unwrap();
        let hold = engine
            .hold("training", 3, Keep::AtLeast, Duration::from_secs(300))
            .unwrap();
        let view = HoldView::new(&hold, hold.until_unix_ms - 299_500);
        assert_eq!(view.ends_in_s, 300);
        assert_eq!(view.keep, "at least");
        assert_eq!(
            view.autoscaler,
            format!(
                "keeps at least 3 instances until {} UTC (300 s from now); may revise the count after that",
                clock(hold.until_unix_ms)
            )
        );
        let past = HoldView::new(&hold, hold.until_unix_ms + 5);
        assert_eq!(past.ends_in_s, 0);
    }
}
