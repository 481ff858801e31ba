//! The forwarder's limits and timeouts.

use std::time::Duration;

use tokio::time::Instant;

use crate::BuildError;

/// Limits and timeouts of a [`Forwarder`](super::Forwarder) and its [`Upstream`](super::Upstream)s.
#[derive(Debug, Clone)]
pub struct ForwardConfig {
    /// The largest request or response head, in bytes (default 64 KiB; a larger
    /// request head is answered 431, a larger response head 502).
    pub max_head: usize,
    /// The largest request body, buffered before the request is sent (default 1 MiB;
    /// larger is answered 413).
    pub max_request_body: usize,
    /// How long a client connection may stay idle, take to send a request, or leave
    /// a write of the response waiting because it stopped reading (default 60 s; the
    /// connection is then closed).
    pub client_timeout: Duration,
    /// How long an upstream may take to answer with a head, and to send each part of a
    /// body (default 30 s; the request is then answered 504).
    pub upstream_timeout: Duration,
    /// Idle connections kept per upstream (default 128).
    pub max_idle_per_upstream: usize,
    /// Client connections served at once by [`Forwarder::serve`](super::Forwarder::serve); beyond it, new
    /// connections wait in the listener's backlog (default 10,000; at least 1).
    pub max_connections: usize,
    /// How many proxies of yours stand in front of this one (default 0). With 0, a
    /// client's own `X-Forwarded-For`, `Forwarded`, `X-Forwarded-Proto`,
    /// `X-Forwarded-Host` and `X-Real-IP` are dropped, and the upstream learns only the
    /// address this proxy saw. With `n`, the peer is taken to be your proxy: the last
    /// `n` entries of the `X-Forwarded-For` and `Forwarded` chains (the ones your
    /// proxies added) are kept and the peer is appended, and the peer's
    /// `X-Forwarded-Proto` and `X-Forwarded-Host` are kept.
    pub trusted_hops: usize,
}

/// The smallest `max_head` accepted: a request line and a Host header fit.
const MIN_HEAD: usize = 256;

impl ForwardConfig {
    /// The settings an [`Upstream`] uses.
    pub(super) fn check_upstream(&self) -> Result<(), BuildError> {
        if self.upstream_timeout.is_zero() {
            return Err(BuildError(
                "upstream_timeout is zero: every request would time out; give a duration (default 30 s)".into(),
            ));
        }
        if self.max_head < MIN_HEAD {
            return Err(BuildError(format!(
                "max_head is {} bytes: heads that small do not fit a request line and a Host; give at least {MIN_HEAD} (default 64 KiB)",
                self.max_head
            )));
        }
        Ok(())
    }
}

/// `d` from now, or as far ahead as the clock goes (a `Duration::MAX` timeout never
/// fires rather than overflowing).
pub(super) fn after(d: Duration) -> Instant {
    crate::util::deadline_after(Instant::now(), d)
}

impl Default for ForwardConfig {
    fn default() -> Self {
        Self {
            max_head: 64 * 1024,
            max_request_body: 1024 * 1024,
            client_timeout: Duration::from_secs(60),
            upstream_timeout: Duration::from_secs(30),
            max_idle_per_upstream: 128,
            max_connections: 10_000,
            trusted_hops: 0,
        }
    }
}
