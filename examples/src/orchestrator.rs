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
//! All answers are JSON, in one convention (the gateway's overview and history follow it
//! too, through [`tidy`]):
//!
//! - **Keys** are `snake_case`; times are whole milliseconds since the Unix epoch
//!   (`..._unix_ms`), durations carry their unit (`..._ms`, `..._s`).
//! - **States and kinds** are lower-case words, the ones the dashboard shows: an
//!   instance's `state` (`starting`, `ready`, `draining`, `crashed`, `crash loop
//!   back-off`), a balancer's `health` (`ready`, `not ready`, `set aside`, `removed`), a
//!   breaker (`closed`, `open`, `half-open`), a decision's `action.kind` (`scale up`,
//!   `scale down`, `hold`), a hold's `keep` (`at least`, `at most`), an action's `by`
//!   (`autoscaler`, `manual`).
//! - **Names of settings** stay as the policy spells them (`in_flight`, `scale_down`, a
//!   reason's `reason` tag such as `stabilized_down`); every reason carries its words in
//!   `text`.
//! - **Numbers** are rounded: milliseconds, seconds, percentages and per-second rates
//!   (keys ending in `_ms`, `_s`, `_seconds`, `_pct`, and `rps`, `throughput`,
//!   `in_flight`, `waiting`) to one decimal; other fractions (shares, ratios, error
//!   rates, metric values) to three. Counts are whole numbers.

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
                "instances": api.manager.instances(&name).iter().map(|i| {
                    let mut v = json!(i);
                    v["state"] = i.state.to_string().into();
                    v
                }).collect::<Vec<_>>(),
                "manual_hold": api.manager.engine().manual_hold(&name)
                    .map(|h| HoldView::new(&h, crate::fleet::unix_ms())),
                "policy": api.manager.engine().policy(&name),
                "last_decisions": decisions.iter().map(|d| {
                    let mut v = json!(d);
                    if let AuditEntry::Decision(d) = d {
                        v["action"]["kind"] = action_words(&d.action).into();
                    }
                    v
                }).collect::<Vec<_>>(),
                "history": actions,
            })
        })
        .collect();
    tidy(Json(json!({ "services": services })))
}

/// A decision's action in words: `scale up`, `scale down` or `hold`.
pub fn action_words(action: &tower_autoscale::Action) -> &'static str {
    match action {
        tower_autoscale::Action::ScaleUp(_) => "scale up",
        tower_autoscale::Action::ScaleDown(_) => "scale down",
        _ => "hold",
    }
}

/// Keys whose numbers are rounded to one decimal (see the [module docs](self)).
fn one_decimal(key: &str) -> bool {
    [
        "_ms",
        "_s",
        "_seconds",
        "_pct",
        "rps",
        "throughput",
        "in_flight",
        "waiting",
    ]
    .iter()
    .any(|end| key.ends_with(end))
}

/// Rounds the numbers of a JSON answer as the [module docs](self) say: one decimal
/// under the keys of times, percentages and rates, three elsewhere; whole numbers stay.
pub fn tidy_numbers(v: &mut Value, key: &str) {
    match v {
        Value::Number(n) if n.is_f64() => {
            let x = n.as_f64().unwrap_or(0.0);
            let scale = if one_decimal(key) { 10.0 } else { 1000.0 };
            let r = (x * scale).round() / scale;
            if let Some(r) = serde_json::Number::from_f64(if r == 0.0 { 0.0 } else { r }) {
                *n = r;
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|i| tidy_numbers(i, key)),
        Value::Object(fields) => fields.iter_mut().for_each(|(k, f)| tidy_numbers(f, k)),
        _ => {}
    }
}

/// `value` as a JSON answer with its numbers rounded ([`tidy_numbers`]).
pub fn tidy(Json(mut value): Json<Value>) -> Json<Value> {
    tidy_numbers(&mut value, "");
    Json(value)
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
    tidy(Json(json!({ "services": services })))
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

    #[test]
    fn numbers_are_rounded_by_what_they_measure() {
        let Json(v) = tidy(Json(json!({
            "uptime_s": 8.994_011_09,
            "p99_ms": 12.345_678,
            "hit_pct": 66.666_666,
            "share": 0.333_333_3,
            "services": [["training", 3.333_33, 0.000_01, null, 2]],
            "input": { "throughput": 41.666_67, "error_rate": 0.012_345, "instances": 3 },
            "at_unix_ms": 1_796_176_706_893_u64,
            "negative_zero_ms": -0.000_1,
        })));
        assert_eq!(
            v,
            json!({
                "uptime_s": 9.0,
                "p99_ms": 12.3,
                "hit_pct": 66.7,
                "share": 0.333,
                "services": [["training", 3.333, 0.0, null, 2]],
                "input": { "throughput": 41.7, "error_rate": 0.012, "instances": 3 },
                "at_unix_ms": 1_796_176_706_893_u64,
                "negative_zero_ms": 0.0,
            })
        );
        assert_eq!(v["negative_zero_ms"].to_string(), "0.0");
        assert_eq!(
            action_words(&tower_autoscale::Action::ScaleDown(1)),
            "scale down"
        );
    }
}
