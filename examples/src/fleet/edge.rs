//! The gateway's connections: an HTTP/1.1 accept loop that bounds what a client can hold
//! open without sending a request.
//!
//! - **Connections**: at most [`Limits::max_connections`] at once (`--max-connections`,
//!   default 10,000); one accepted beyond it is closed at once, before anything is read.
//! - **Header read timeout**: a request's head must arrive whole within
//!   [`Limits::header_read`] (`--header-read-timeout`, default 30 s) of the moment the
//!   gateway starts waiting for it: a connection that sends nothing, or half a head, is
//!   closed. The wait for the next request on a kept-alive connection is such a wait too.
//! - **Idle timeout**: a connection with no request in flight that moves no byte either
//!   way for [`Limits::idle`] (`--idle-timeout`, default 60 s) is closed (one that stopped
//!   reading its answer, say). The gateway also gives a request body that long to arrive
//!   (408 otherwise).
//!
//! Each request carries the client's address as `ConnectInfo<SocketAddr>`, as
//! `axum::serve` with connect info gives it.
//!
//! ```no_run
//! # async fn demo(app: axum::Router) -> std::io::Result<()> {
//! use std::sync::Arc;
//! use examples::fleet::edge::{serve, Limits, Stats};
//!
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! serve(listener, app, Limits::default(), Arc::new(Stats::default())).await;
//! # Ok(()) }
//! ```

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

use crate::activity::{Activity, InProgress, Tracked};
use tower::ServiceExt;

/// What a client may hold at the gateway's edge; see the [module docs](self).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// How long a request's head may take to arrive (default 30 s).
    pub header_read: Duration,
    /// How long a connection may stay without a request in flight and without a byte
    /// moving (default 60 s); also how long a request body may take.
    pub idle: Duration,
    /// Connections open at once (default 10,000).
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            header_read: Duration::from_secs(30),
            idle: Duration::from_secs(60),
            max_connections: 10_000,
        }
    }
}

/// Counters of the edge, shown in `/metrics`. Cloning the `Arc` shares them.
#[derive(Debug, Default)]
pub struct Stats {
    open: AtomicUsize,
    accepted: AtomicU64,
    refused: AtomicU64,
    idle_closed: AtomicU64,
}

impl Stats {
    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    /// Connections closed at once because [`Limits::max_connections`] were open.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Connections closed for the idle timeout.
    pub fn idle_closed(&self) -> u64 {
        self.idle_closed.load(Ordering::Relaxed)
    }
}

/// Serves `app` on `listener` under `limits` until the task is dropped (which drops
/// every connection with it).
pub async fn serve(listener: TcpListener, app: Router, limits: Limits, stats: Arc<Stats>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of descriptors or a connection reset before it was accepted: wait
                // a moment rather than spin.
                tracing::warn!(error = %e, "gateway: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        while connections.try_join_next().is_some() {}
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            stats.refused.fetch_add(1, Ordering::Relaxed);
            drop(stream);
            continue;
        };
        stats.accepted.fetch_add(1, Ordering::Relaxed);
        let _ = stream.set_nodelay(true);
        let (app, stats) = (app.clone(), stats.clone());
        connections.spawn(async move {
            stats.open.fetch_add(1, Ordering::Relaxed);
            connection(stream, peer, app, limits, &stats).await;
            stats.open.fetch_sub(1, Ordering::Relaxed);
            drop(slot);
        });
    }
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    app: Router,
    limits: Limits,
    stats: &Stats,
) {
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Tracked::new(stream, activity.clone()));
    let requests = activity.clone();
    let service = hyper::service::service_fn(move |mut req: http::Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo(peer));
        let in_flight = InProgress::start(&requests);
        let app = app.clone();
        async move {
            let res = app.oneshot(req.map(axum::body::Body::new)).await;
            drop(in_flight);
            res
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read)
        .serve_connection(io, service)
        .with_upgrades();
    tokio::pin!(conn);
    loop {
        let deadline = activity.last() + limits.idle;
        tokio::select! {
            _ = conn.as_mut() => return,
            _ = tokio::time::sleep_until(deadline) => {}
        }
        let quiet = activity.in_progress.load(Ordering::Relaxed) == 0
            && activity.last() + limits.idle <= Instant::now();
        if quiet {
            stats.idle_closed.fetch_add(1, Ordering::Relaxed);
            conn.as_mut().graceful_shutdown();
            // Nothing is in flight: the connection closes at once; bounded all the same.
            let _ = tokio::time::timeout(limits.idle, conn.as_mut()).await;
            return;
        }
        if activity.in_progress.load(Ordering::Relaxed) > 0 {
            // A request in flight is not idle: look again an idle period from now.
            activity.touch();
        }
    }
}
