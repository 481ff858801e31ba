//! The readiness gate: a [`Gate`] that follows readiness (and draining), and a
//! [`ReadinessLayer`] that holds or refuses traffic while the gate is closed.
//!
//! Two modes:
//!
//! - **pending** ([`ReadinessLayer::pending`]), for endpoints inside a balancer:
//!   `poll_ready` pends while the gate is closed and is **woken when readiness changes**
//!   (through a `watch` channel: no timer, no re-poll loop). `tower::balance` and
//!   `tower-balance-ext` skip endpoints that are not ready, so an endpoint that is
//!   starting, failing or draining simply gets no traffic.
//! - **reject**, for a server's own front door: [`ReadinessLayer::reject_http`] answers
//!   `503 Service Unavailable` with `Retry-After`, [`ReadinessLayer::reject`] fails
//!   with [`Rejected`] for other services. `poll_ready` never waits then.
//!
//! Every mode counts requests in flight; [`Gate::drain`] closes the gate and resolves when
//! in-flight reaches zero or a deadline passes. The HTTP modes
//! ([`ReadinessLayer::reject_http`], [`ReadinessLayer::pending_http`]) count a request
//! until its response **body** ends (a streamed or long-polled response is still in
//! flight after its head went out); the others until the response future completes.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! use std::time::Duration;
//! use tower::{ServiceBuilder, ServiceExt};
//! use tower_health::{Gate, ReadinessLayer};
//!
//! let (ready, rx) = tokio::sync::watch::channel(true);
//! let gate = Gate::new(rx);
//! let svc = ServiceBuilder::new()
//!     .layer(ReadinessLayer::reject(gate.clone()))
//!     .service_fn(|x: u32| async move { Ok::<_, std::convert::Infallible>(x + 1) });
//! assert_eq!(svc.clone().oneshot(1).await?, 2);
//! ready.send(false)?;
//! assert!(svc.clone().oneshot(1).await.unwrap_err().is::<tower_health::Rejected>());
//! let report = gate.drain(Duration::from_secs(1)).await;
//! assert!(report.drained);
//! # Ok(()) }
//! ```

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::sync::{watch, Notify};
use tower_layer::Layer;
use tower_service::Service;

use crate::error::Rejected;
use crate::BoxError;

/// Follows a readiness signal, adds draining, and counts requests in flight.
///
/// Cloning shares the gate.
#[derive(Clone)]
pub struct Gate {
    inner: Arc<GateInner>,
}

struct GateInner {
    ready: watch::Receiver<bool>,
    /// The sender of a gate that owns its readiness ([`Gate::always_ready`]).
    _own_ready: Option<watch::Sender<bool>>,
    draining: watch::Sender<bool>,
    in_flight: AtomicUsize,
    idle: Notify,
}

impl fmt::Debug for Gate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gate")
            .field("open", &self.is_open())
            .field("draining", &self.is_draining())
            .field("in_flight", &self.in_flight())
            .finish()
    }
}

/// What [`Gate::drain`] saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrainReport {
    /// In-flight reached zero before the deadline.
    pub drained: bool,
    /// Requests still in flight when it returned.
    pub in_flight: usize,
}

impl Gate {
    /// A gate that follows `ready` (e.g. [`Probes::ready_watch`](crate::Probes::ready_watch)
    /// or [`HealthMonitor::watch`](crate::HealthMonitor::watch)).
    pub fn new(ready: watch::Receiver<bool>) -> Self {
        Self::with_sender(ready, None)
    }

    fn with_sender(ready: watch::Receiver<bool>, own: Option<watch::Sender<bool>>) -> Self {
        let (draining, _) = watch::channel(false);
        Self {
            inner: Arc::new(GateInner {
                ready,
                _own_ready: own,
                draining,
                in_flight: AtomicUsize::new(0),
                idle: Notify::new(),
            }),
        }
    }

    /// A gate that is open until drained.
    pub fn always_ready() -> Self {
        let (tx, rx) = watch::channel(true);
        // The gate keeps the sender, so its receiver never reports a closed channel.
        Self::with_sender(rx, Some(tx))
    }

    /// Whether traffic may pass: ready and not draining.
    pub fn is_open(&self) -> bool {
        *self.inner.ready.borrow() && !*self.inner.draining.borrow()
    }

    /// Whether [`Self::drain`] or [`Self::set_draining`] closed the gate.
    pub fn is_draining(&self) -> bool {
        *self.inner.draining.borrow()
    }

    /// Requests that have been called and not yet finished.
    pub fn in_flight(&self) -> usize {
        self.inner.in_flight.load(Ordering::Acquire)
    }

    /// Closes (or reopens) the gate whatever readiness says.
    pub fn set_draining(&self, draining: bool) {
        self.inner.draining.send_replace(draining);
    }

    /// Closes the gate, then waits until nothing is in flight or `deadline` passes.
    pub async fn drain(&self, deadline: Duration) -> DrainReport {
        self.set_draining(true);
        let wait = async {
            loop {
                let idle = self.inner.idle.notified();
                if self.in_flight() == 0 {
                    return;
                }
                idle.await;
            }
        };
        let drained = tokio::time::timeout(deadline, wait).await.is_ok();
        DrainReport {
            drained,
            in_flight: self.in_flight(),
        }
    }

    /// Resolves when the gate is open. Never busy-waits: it sleeps on the watch channels.
    pub async fn opened(&self) {
        let mut ready = self.inner.ready.clone();
        let mut draining = self.inner.draining.subscribe();
        let mut ready_alive = true;
        loop {
            if *ready.borrow_and_update() && !*draining.borrow_and_update() {
                return;
            }
            if ready_alive {
                tokio::select! {
                    r = ready.changed() => ready_alive = r.is_ok(),
                    _ = draining.changed() => {}
                }
            } else if !*ready.borrow() {
                // The readiness source is gone while not ready: it can never open.
                std::future::pending::<()>().await;
            } else {
                // The draining sender lives in the gate we hold: this cannot fail.
                let _ = draining.changed().await;
            }
        }
    }

    fn enter(&self) -> InFlight {
        self.inner.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight {
            gate: self.inner.clone(),
        }
    }
}

/// Counts one request in flight until dropped; a [`Mode`] decides how long the response
/// keeps it (for HTTP: until the body ends).
pub struct InFlight {
    gate: Arc<GateInner>,
}

impl fmt::Debug for InFlight {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InFlight").finish_non_exhaustive()
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.gate.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.gate.idle.notify_waiters();
        }
    }
}

// === modes ===

/// How a [`ReadinessService`] treats traffic while its gate is closed, and how long a
/// response counts in flight.
///
/// `Res` and `E` are the inner service's response and error. The modes that can fail a
/// request ([`Pending`], [`PendingHttp`], [`Reject`]) return a [`BoxError`]; the one
/// that answers instead ([`RejectHttp`]) passes the inner service's error on as it is, so
/// over an infallible service (an axum router) it is infallible too.
pub trait Mode<Res, E>: Clone + Send + Sync + 'static {
    /// The response the service returns.
    type Response;
    /// The error the service returns.
    type Error;
    /// `true`: `poll_ready` pends until the gate opens. `false`: requests are answered
    /// with [`Mode::reject`].
    fn waits(&self) -> bool;
    /// The answer to a request refused while the gate is closed.
    fn reject(&self) -> Result<Res, Self::Error>;
    /// Hands the response out; `in_flight` counts the request until it is dropped.
    fn track(&self, res: Res, in_flight: InFlight) -> Self::Response;
    /// The service's error for an error of the inner service.
    fn error(&self, e: E) -> Self::Error;
}

/// Pend in `poll_ready` while closed.
#[derive(Debug, Clone, Copy, Default)]
pub struct Pending;

impl<Res, E: Into<BoxError>> Mode<Res, E> for Pending {
    type Response = Res;
    type Error = BoxError;
    fn waits(&self) -> bool {
        true
    }
    fn reject(&self) -> Result<Res, BoxError> {
        Err(Rejected::new().into())
    }
    fn track(&self, res: Res, _in_flight: InFlight) -> Res {
        res
    }
    fn error(&self, e: E) -> BoxError {
        e.into()
    }
}

/// Pend in `poll_ready` while closed; count an HTTP request until its body ends.
#[derive(Debug, Clone, Copy, Default)]
pub struct PendingHttp;

impl<B: Send + 'static, E: Into<BoxError>> Mode<http::Response<B>, E> for PendingHttp {
    type Response = http::Response<InFlightBody<B>>;
    type Error = BoxError;
    fn waits(&self) -> bool {
        true
    }
    fn reject(&self) -> Result<http::Response<B>, BoxError> {
        Err(Rejected::new().into())
    }
    fn track(&self, res: http::Response<B>, in_flight: InFlight) -> Self::Response {
        res.map(|body| InFlightBody::new(body, in_flight))
    }
    fn error(&self, e: E) -> BoxError {
        e.into()
    }
}

/// Fail with [`Rejected`] while closed.
#[derive(Debug, Clone, Copy, Default)]
pub struct Reject;

/// The old name of [`Reject`] (a mode, not an error).
#[deprecated(since = "0.1.0", note = "renamed `Reject`")]
pub type RejectError = Reject;

impl<Res, E: Into<BoxError>> Mode<Res, E> for Reject {
    type Response = Res;
    type Error = BoxError;
    fn waits(&self) -> bool {
        false
    }
    fn reject(&self) -> Result<Res, BoxError> {
        Err(Rejected::new().into())
    }
    fn track(&self, res: Res, _in_flight: InFlight) -> Res {
        res
    }
    fn error(&self, e: E) -> BoxError {
        e.into()
    }
}

/// Answer `503 Service Unavailable` with `Retry-After` while closed; count a request
/// until its body ends.
#[derive(Debug, Clone, Copy)]
pub struct RejectHttp {
    retry_after: u64,
}

impl<B: Default + Send + 'static, E: 'static> Mode<http::Response<B>, E> for RejectHttp {
    type Response = http::Response<InFlightBody<B>>;
    /// The inner service's error, as it is: the refusal is an answer, not an error.
    type Error = E;
    fn waits(&self) -> bool {
        false
    }
    fn error(&self, e: E) -> E {
        e
    }
    fn reject(&self) -> Result<http::Response<B>, E> {
        let mut res = http::Response::new(B::default());
        *res.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
        res.headers_mut().insert(
            http::header::RETRY_AFTER,
            http::HeaderValue::from(self.retry_after),
        );
        Ok(res)
    }
    fn track(&self, res: http::Response<B>, in_flight: InFlight) -> Self::Response {
        res.map(|body| InFlightBody::new(body, in_flight))
    }
}

pin_project! {
    /// A response body that keeps its request counted in flight until the body ends
    /// (its last frame, an error, or the body dropped).
    pub struct InFlightBody<B> {
        #[pin]
        inner: B,
        in_flight: Option<InFlight>,
    }
}

impl<B> InFlightBody<B> {
    fn new(inner: B, in_flight: InFlight) -> Self {
        Self {
            inner,
            in_flight: Some(in_flight),
        }
    }

    /// The wrapped body.
    pub fn into_inner(self) -> B {
        self.inner
    }
}

impl<B: Default> Default for InFlightBody<B> {
    /// An empty body that counts nothing.
    fn default() -> Self {
        Self {
            inner: B::default(),
            in_flight: None,
        }
    }
}

impl<B> fmt::Debug for InFlightBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InFlightBody")
            .field("in_flight", &self.in_flight.is_some())
            .finish_non_exhaustive()
    }
}

impl<B: http_body::Body> http_body::Body for InFlightBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        if matches!(polled, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) {
            this.in_flight.take();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

// === layer ===

/// Wraps a service in a [`ReadinessService`] behind a [`Gate`]. Cheap to clone; clones
/// share the gate.
#[derive(Debug, Clone)]
pub struct ReadinessLayer<M = Pending> {
    gate: Gate,
    mode: M,
}

impl ReadinessLayer<Pending> {
    /// `poll_ready` pends while the gate is closed (for endpoints inside a balancer).
    pub fn pending(gate: Gate) -> Self {
        Self {
            gate,
            mode: Pending,
        }
    }
}

impl ReadinessLayer<PendingHttp> {
    /// Like [`ReadinessLayer::pending`] for HTTP services: a request counts in flight
    /// until its response body ends.
    pub fn pending_http(gate: Gate) -> Self {
        Self {
            gate,
            mode: PendingHttp,
        }
    }
}

impl ReadinessLayer<Reject> {
    /// Requests fail with [`Rejected`] while the gate is closed.
    pub fn reject(gate: Gate) -> Self {
        Self { gate, mode: Reject }
    }
}

impl ReadinessLayer<RejectHttp> {
    /// HTTP requests get `503` with `Retry-After: retry_after` (whole seconds, at least
    /// one) while the gate is closed.
    pub fn reject_http(gate: Gate, retry_after: Duration) -> Self {
        Self {
            gate,
            mode: RejectHttp {
                retry_after: retry_after.as_secs().max(1),
            },
        }
    }
}

impl<M> ReadinessLayer<M> {
    /// The gate.
    pub fn gate(&self) -> &Gate {
        &self.gate
    }
}

impl<S, M: Clone> Layer<S> for ReadinessLayer<M> {
    type Service = ReadinessService<S, M>;

    fn layer(&self, inner: S) -> Self::Service {
        ReadinessService {
            inner,
            gate: self.gate.clone(),
            mode: self.mode.clone(),
            waiting: None,
            admitted: false,
        }
    }
}

// `Sync` so the service can live in frameworks that share services across threads (axum).
type Waiting = Pin<Box<dyn Future<Output = ()> + Send + Sync>>;

/// A service behind a [`Gate`]; see the [module docs](crate::gate).
pub struct ReadinessService<S, M = Pending> {
    inner: S,
    gate: Gate,
    mode: M,
    waiting: Option<Waiting>,
    admitted: bool,
}

// Written by hand: a clone must not share the original's pending wait or its admission
// from a `poll_ready` the clone did not make.
impl<S: Clone, M: Clone> Clone for ReadinessService<S, M> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            gate: self.gate.clone(),
            mode: self.mode.clone(),
            waiting: None,
            admitted: false,
        }
    }
}

impl<S: fmt::Debug, M: fmt::Debug> fmt::Debug for ReadinessService<S, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReadinessService")
            .field("inner", &self.inner)
            .field("gate", &self.gate)
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl<S, M> ReadinessService<S, M> {
    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// The gate.
    pub fn gate(&self) -> &Gate {
        &self.gate
    }
}

impl<S, M, Req> Service<Req> for ReadinessService<S, M>
where
    S: Service<Req>,
    M: Mode<S::Response, S::Error>,
{
    type Response = M::Response;
    type Error = M::Error;
    type Future = ResponseFuture<S::Future, S::Response, M>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), M::Error>> {
        loop {
            if self.gate.is_open() {
                self.waiting = None;
                return match self.inner.poll_ready(cx) {
                    Poll::Ready(Ok(())) => {
                        self.admitted = true;
                        Poll::Ready(Ok(()))
                    }
                    Poll::Ready(Err(e)) => Poll::Ready(Err(self.mode.error(e))),
                    Poll::Pending => Poll::Pending,
                };
            }
            if !self.mode.waits() {
                // Reject mode: ready at once; `call` answers with the rejection.
                self.admitted = false;
                return Poll::Ready(Ok(()));
            }
            let gate = self.gate.clone();
            let waiting = self
                .waiting
                .get_or_insert_with(|| Box::pin(async move { gate.opened().await }));
            match waiting.as_mut().poll(cx) {
                Poll::Ready(()) => self.waiting = None,
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let guard = self.gate.enter();
        if std::mem::take(&mut self.admitted) {
            ResponseFuture {
                kind: Kind::Inner {
                    fut: self.inner.call(req),
                },
                in_flight: Some(guard),
                mode: self.mode.clone(),
                _res: PhantomData,
            }
        } else {
            if self.mode.waits() {
                panic!("ReadinessService::call without a ready poll_ready: poll_ready must return Ready before call");
            }
            ResponseFuture {
                kind: Kind::Rejected { done: false },
                in_flight: Some(guard),
                mode: self.mode.clone(),
                _res: PhantomData,
            }
        }
    }
}

pin_project! {
    /// The response future of [`ReadinessService`]; counts the request in flight until
    /// it completes or is dropped, then hands the count to the response (see [`Mode`]).
    pub struct ResponseFuture<F, R, M> {
        #[pin]
        kind: Kind<F>,
        in_flight: Option<InFlight>,
        mode: M,
        _res: PhantomData<fn() -> R>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F> {
        Inner { #[pin] fut: F },
        // Answered by the mode when polled.
        Rejected { done: bool },
    }
}

impl<F, R, M> fmt::Debug for ResponseFuture<F, R, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<F, R, E, M> Future for ResponseFuture<F, R, M>
where
    F: Future<Output = Result<R, E>>,
    M: Mode<R, E>,
{
    type Output = Result<M::Response, M::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let res = match this.kind.project() {
            KindProj::Inner { fut } => {
                std::task::ready!(fut.poll(cx)).map_err(|e| this.mode.error(e))
            }
            KindProj::Rejected { done } => {
                assert!(!*done, "ResponseFuture polled after completion");
                *done = true;
                this.mode.reject()
            }
        };
        let in_flight = this
            .in_flight
            .take()
            .expect("ResponseFuture polled after completion");
        Poll::Ready(res.map(|res| this.mode.track(res, in_flight)))
    }
}
