//! The error of a breaker that refuses a request.

use std::fmt;
use std::time::Duration;

/// The breaker is open (or half-open with its probe taken): the request was not sent.
#[derive(Debug, Clone)]
pub struct BreakerOpen {
    pub(super) retry_after: Duration,
}

impl BreakerOpen {
    /// How long until it lets a probe through.
    pub fn retry_after(&self) -> Duration {
        self.retry_after
    }

    /// `503 Service Unavailable`, for HTTP (with a `Retry-After` of
    /// [`retry_after`](Self::retry_after)).
    pub fn status(&self) -> http::StatusCode {
        http::StatusCode::SERVICE_UNAVAILABLE
    }
}

impl fmt::Display for BreakerOpen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "circuit breaker open; retry after {:?}",
            self.retry_after
        )
    }
}

impl std::error::Error for BreakerOpen {}
