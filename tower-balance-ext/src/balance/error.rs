//! The balancer's errors: at build time [`BuildError`]; on the request path
//! [`NoReadyEndpoints`], [`NoHashKey`] and [`EndpointPanicked`], which reach the caller
//! as a `BoxError` to downcast (`err.downcast_ref::<NoReadyEndpoints>()`).

use std::fmt;
use std::time::Duration;

/// A balancer setting that cannot work; the message says which and what to change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildError(pub(crate) String);

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BuildError {}

/// No endpoint was ready within the balancer's `ready_timeout`. For HTTP, answer
/// [`status`](Self::status) (503).
#[derive(Debug, Clone)]
pub struct NoReadyEndpoints {
    pub(crate) waited: Duration,
    pub(crate) endpoints: usize,
}

impl NoReadyEndpoints {
    /// How long the request waited.
    pub fn waited(&self) -> Duration {
        self.waited
    }

    /// How many endpoints the balancer had, none of them ready.
    pub fn endpoints(&self) -> usize {
        self.endpoints
    }

    /// `503 Service Unavailable`.
    pub fn status(&self) -> http::StatusCode {
        http::StatusCode::SERVICE_UNAVAILABLE
    }
}

impl fmt::Display for NoReadyEndpoints {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "no ready endpoint among {} after waiting {:?}",
            self.endpoints, self.waited
        )
    }
}

impl std::error::Error for NoReadyEndpoints {}

/// The consistent-hash pick got no key for a request (its `hash_key` returned `None`).
#[derive(Debug, Clone)]
pub struct NoHashKey;

impl fmt::Display for NoHashKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the request has no key for the consistent-hash pick")
    }
}

impl std::error::Error for NoHashKey {}

/// The endpoint's service panicked in `call` or in its response future. The panic
/// was caught: the endpoint is set aside (probed again after a backoff, as after a
/// `poll_ready` error) and counted in
/// [`LoadSnapshot::endpoint_panics`](crate::LoadSnapshot::endpoint_panics). The request
/// is retried on another endpoint when it may be; for HTTP, answer
/// [`status`](Self::status) (502).
#[derive(Debug, Clone)]
pub struct EndpointPanicked {
    pub(crate) endpoint: String,
}

impl EndpointPanicked {
    /// The endpoint's discovery key, as `Debug` prints it.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// `502 Bad Gateway`.
    pub fn status(&self) -> http::StatusCode {
        http::StatusCode::BAD_GATEWAY
    }
}

impl fmt::Display for EndpointPanicked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "endpoint {} panicked while serving the request; it was set aside",
            self.endpoint
        )
    }
}

impl std::error::Error for EndpointPanicked {}

/// A weight of zero: give at least 1.
#[derive(Debug, Clone)]
pub struct ZeroWeight;

impl fmt::Display for ZeroWeight {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a weight of zero; give at least 1 (remove the endpoint to send it nothing)")
    }
}

impl std::error::Error for ZeroWeight {}
