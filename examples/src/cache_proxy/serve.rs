//! Connections: limits, timeouts and the HTTP/1 and HTTP/2 server.

use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

use super::*;
use crate::activity::{Activity, Tracked};

/// Serves one connection under the header-read and idle timeouts.
///
/// hyper's HTTP/1 header-read timeout bounds each request head once the protocol is
/// known; the first head is also bounded here from the moment the connection opened
/// (hyper reads the protocol preface with no timeout). A connection that moves no byte
/// for the idle timeout with no request in progress is shut down gracefully, and closed
/// if it stays silent for another idle timeout.
pub(crate) async fn serve<S>(
    stream: tokio::net::TcpStream,
    svc: S,
    activity: Arc<Activity>,
    header_read_timeout: Duration,
    idle_timeout: Duration,
) where
    S: hyper::service::Service<
            Request<hyper::body::Incoming>,
            Response = Response<AnyBody>,
            Error = Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    builder.http2().timer(TokioTimer::new());
    let io = TokioIo::new(Tracked::new(stream, activity.clone()));
    let conn = builder.serve_connection(io, svc);
    tokio::pin!(conn);
    let first_head_by = activity.opened + header_read_timeout;
    let mut shut_down = false;
    loop {
        let idle_at = activity.last() + idle_timeout;
        let first_pending = activity.started.load(Ordering::Relaxed) == 0;
        let wake = if first_pending {
            idle_at.min(first_head_by)
        } else {
            idle_at
        };
        tokio::select! {
            _ = conn.as_mut() => return,
            _ = tokio::time::sleep_until(wake) => {}
        }
        let now = tokio::time::Instant::now();
        if activity.started.load(Ordering::Relaxed) == 0 && now >= first_head_by {
            // No whole request head in time: close.
            return;
        }
        let idle = activity.in_progress.load(Ordering::Relaxed) == 0
            && now >= activity.last() + idle_timeout;
        if idle {
            if shut_down {
                return;
            }
            conn.as_mut().graceful_shutdown();
            shut_down = true;
            activity.touch();
        }
    }
}
