//! What an upstream's failure answers the client.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

/// An upstream's failure, with the status the client is answered; the
/// [`kind`](Self::kind) says which part of the exchange failed.
///
/// ```
/// use tower_balance_ext::forward::{UpstreamError, UpstreamErrorKind};
/// # fn handle(e: tower_balance_ext::BoxError) -> u16 {
/// match e.downcast_ref::<UpstreamError>() {
///     Some(u) if u.kind() == UpstreamErrorKind::Timeout => 504,
///     Some(u) => u.status().as_u16(),
///     None => 500,
/// }
/// # }
/// ```
#[derive(Debug)]
pub struct UpstreamError {
    pub(super) addr: SocketAddr,
    pub(super) cause: Cause,
}

/// Which part of an exchange with an upstream failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum UpstreamErrorKind {
    /// No answer's head within [`ForwardConfig::upstream_timeout`](super::ForwardConfig::upstream_timeout)
    /// (connecting included): raise it if the upstream is slow rather than down.
    Timeout,
    /// The connection could not be opened, or failed (refused, reset, closed before
    /// the answer's head): the upstream is down or restarting.
    Connection,
    /// The upstream's answer broke HTTP/1.1 (a malformed head, conflicting framing, a
    /// head over [`ForwardConfig::max_head`](super::ForwardConfig::max_head)): the
    /// upstream needs fixing, or a larger `max_head`.
    Protocol,
}

#[derive(Debug)]
pub(super) enum Cause {
    Timeout(Duration),
    Io(io::Error),
    Protocol(&'static str),
}

impl UpstreamError {
    /// `504 Gateway Timeout` for a timeout, `502 Bad Gateway` otherwise.
    pub fn status(&self) -> http::StatusCode {
        match self.cause {
            Cause::Timeout(_) => http::StatusCode::GATEWAY_TIMEOUT,
            _ => http::StatusCode::BAD_GATEWAY,
        }
    }

    /// Which part of the exchange failed.
    pub fn kind(&self) -> UpstreamErrorKind {
        match self.cause {
            Cause::Timeout(_) => UpstreamErrorKind::Timeout,
            Cause::Io(_) => UpstreamErrorKind::Connection,
            Cause::Protocol(_) => UpstreamErrorKind::Protocol,
        }
    }

    /// The upstream's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.cause {
            Cause::Timeout(t) => write!(f, "{} sent no answer within {t:?}", self.addr),
            Cause::Io(e) => write!(f, "{}: {e}", self.addr),
            Cause::Protocol(m) => write!(f, "{}: {m}", self.addr),
        }
    }
}

impl std::error::Error for UpstreamError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.cause {
            Cause::Io(e) => Some(e),
            _ => None,
        }
    }
}
