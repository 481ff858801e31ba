//! Graceful shutdown for hyper (and axum) servers.
//!
//! On SIGTERM (or any future you give), [`GracefulServer`]:
//!
//! 1. turns readiness off (the [`Probes`] report draining, the [`Gate`] closes), so
//!    `/health/ready` answers 503 and load balancers stop sending;
//! 2. keeps serving for `drain_delay`, the time load balancers need to notice;
//! 3. stops accepting connections;
//! 4. lets requests in flight finish for up to `grace`, closing idle keep-alive
//!    connections at once and each busy one after its current response;
//! 5. returns, reporting whether anything had to be cut off.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use std::time::Duration;
//! use tower_health::{shutdown_signal, GracefulServer, HealthEndpoints, Probes};
//!
//! let probes = Probes::new();
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! let report = GracefulServer::new()
//!     .probes(probes.clone())
//!     .drain_delay(Duration::from_secs(5))
//!     .grace(Duration::from_secs(30))
//!     .serve(listener, HealthEndpoints::new(probes), shutdown_signal())
//!     .await?;
//! println!("shut down; cut off {} connections", report.cut_off);
//! # Ok(()) }
//! ```

use std::future::Future;
use std::io;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tower_service::Service;

use crate::gate::Gate;
use crate::probe::Probes;
use crate::BoxError;

/// Resolves on SIGTERM or Ctrl-C (on Unix; Ctrl-C elsewhere). If a handler cannot be
/// installed it logs why and waits on the other.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

/// What happened at shutdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Connections served in all.
    pub connections: u64,
    /// Connections still busy when the grace period ran out, and closed.
    pub cut_off: usize,
}

/// Serves HTTP/1.1 and HTTP/2 (prior knowledge, as gRPC clients speak it; chosen per
/// connection) until a signal, then shuts down gracefully; see the
/// [module docs](crate::shutdown).
#[derive(Debug, Clone)]
pub struct GracefulServer {
    drain_delay: Duration,
    grace: Duration,
    probes: Option<Probes>,
    gate: Option<Gate>,
}

impl Default for GracefulServer {
    fn default() -> Self {
        Self::new()
    }
}

impl GracefulServer {
    /// Defaults: drain delay 5 s, grace 30 s (Kubernetes' default termination grace).
    pub fn new() -> Self {
        Self {
            drain_delay: Duration::from_secs(5),
            grace: Duration::from_secs(30),
            probes: None,
            gate: None,
        }
    }

    /// How long to keep serving after readiness turns off. `Duration::MAX` (or anything
    /// past the clock's range) means: until the process is stopped otherwise.
    pub fn drain_delay(mut self, d: Duration) -> Self {
        self.drain_delay = d;
        self
    }

    /// How long requests in flight may take to finish once accepting has stopped.
    pub fn grace(mut self, d: Duration) -> Self {
        self.grace = d;
        self
    }

    /// Probes to mark draining (so `/health/ready` answers 503).
    pub fn probes(mut self, probes: Probes) -> Self {
        self.probes = Some(probes);
        self
    }

    /// A gate to close.
    pub fn gate(mut self, gate: Gate) -> Self {
        self.gate = Some(gate);
        self
    }

    /// Serves `service` on `listener` until `signal` resolves, then shuts down.
    pub async fn serve<S, B, F>(
        self,
        listener: TcpListener,
        service: S,
        signal: F,
    ) -> io::Result<ShutdownReport>
    where
        S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        B: http_body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
        F: Future<Output = ()>,
    {
        let graceful = GracefulShutdown::new();
        let mut conns = JoinSet::new();
        let mut connections = 0u64;
        let mut signal = std::pin::pin!(signal);
        let mut signalled = false;
        let mut stop_at: Option<tokio::time::Instant> = None;
        let executor = hyper_util::rt::TokioExecutor::new();
        loop {
            let stop = async {
                match stop_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = &mut signal, if !signalled => {
                    signalled = true;
                    tracing::info!(drain_delay = ?self.drain_delay, "shutdown: readiness off, draining");
                    if let Some(p) = &self.probes {
                        p.set_draining(true);
                    }
                    if let Some(g) = &self.gate {
                        g.set_draining(true);
                    }
                    // A delay past the clock's range drains until stopped otherwise.
                    stop_at = tokio::time::Instant::now().checked_add(self.drain_delay);
                }
                () = stop => break,
                accepted = listener.accept() => {
                    let (stream, _) = match accepted {
                        Ok(a) => a,
                        Err(e) => {
                            // Out of file descriptors and the like: back off, go on.
                            tracing::warn!(error = %e, "accept failed");
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            continue;
                        }
                    };
                    connections += 1;
                    let conn = hyper_util::server::conn::auto::Builder::new(executor.clone())
                        .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service.clone()))
                        .into_owned();
                    let conn = graceful.watch(conn);
                    conns.spawn(async move {
                        if let Err(e) = conn.await {
                            tracing::debug!(error = %e, "connection ended with an error");
                        }
                    });
                }
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
            }
        }
        drop(listener);
        tracing::info!(grace = ?self.grace, "shutdown: no longer accepting; finishing requests");
        let finished = tokio::time::timeout(self.grace, graceful.shutdown())
            .await
            .is_ok();
        // Connections that ended on their own are reaped first: only those still open
        // when the grace period ran out were cut off.
        while conns.try_join_next().is_some() {}
        let cut_off = if finished { 0 } else { conns.len() };
        conns.shutdown().await;
        Ok(ShutdownReport {
            connections,
            cut_off,
        })
    }
}
