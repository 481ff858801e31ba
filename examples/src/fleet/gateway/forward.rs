//! Forwarding a request to a service through its balancer.

use std::time::Duration;

use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use tower::{Service, ServiceExt};
use tower_balance_ext::NoReadyEndpoints;

use super::Gateway;
use crate::fleet::services::Backend;
use crate::fleet::BoxError;

impl Gateway {
    /// Sends `req` through the balancer of service number `i`.
    pub(super) async fn forward(&self, i: usize, req: Request) -> Response {
        let timeout = self.parts.body_timeout;
        match self.parts.services.get(i).map(|s| &s.backend) {
            Some(Backend::Data { balancer, .. }) => forward(balancer.clone(), req, timeout).await,
            Some(Backend::Autoscaled { balancer, .. }) => {
                forward(balancer.clone(), req, timeout).await
            }
            None => StatusCode::NOT_FOUND.into_response(),
        }
    }
}

/// Sends `req` through `svc` once its body (at most 1 MiB) has arrived, within
/// `body_timeout` (408 after it); the answer's body streams back.
async fn forward<S>(svc: S, req: Request, body_timeout: Duration) -> Response
where
    S: Service<http::Request<Full<Bytes>>, Response = http::Response<Incoming>, Error = BoxError>,
{
    let (parts, body) = req.into_parts();
    let body = match tokio::time::timeout(body_timeout, axum::body::to_bytes(body, 1 << 20)).await {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => {
            return (
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body over 1 MiB or broken: {e}"),
            )
                .into_response()
        }
        Err(_) => {
            return (
                StatusCode::REQUEST_TIMEOUT,
                [(http::header::CONNECTION, "close")],
                format!(
                    "the request body did not arrive within {:.1} s",
                    body_timeout.as_secs_f64()
                ),
            )
                .into_response()
        }
    };
    match svc
        .oneshot(http::Request::from_parts(parts, Full::new(body)))
        .await
    {
        Ok(res) => res.map(axum::body::Body::new),
        Err(e) => {
            let code = if e.downcast_ref::<NoReadyEndpoints>().is_some() {
                StatusCode::SERVICE_UNAVAILABLE
            } else {
                StatusCode::BAD_GATEWAY
            };
            (code, Json(serde_json::json!({ "error": e.to_string() }))).into_response()
        }
    }
}
