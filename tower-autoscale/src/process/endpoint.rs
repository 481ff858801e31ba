//! [`InstanceEndpoint`]: an instance's endpoint behind its readiness gate, counting its
//! requests in flight so that a drain knows when it is done.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use tower_service::Service;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// An instance's endpoint service: behind a readiness gate that follows the scaler's
/// health monitor (an instance that stops being ready after it joined gets no new
/// request until it is ready again: its `poll_ready` is pending, so a balancer skips
/// it), counting its requests in flight (from `call` until the response future
/// completes or is dropped).
#[derive(Debug)]
pub struct InstanceEndpoint<S> {
    pub(super) inner: tower_health::ReadinessService<S>,
    pub(super) in_flight: Arc<AtomicUsize>,
}

impl<S: Clone> Clone for InstanceEndpoint<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            in_flight: self.in_flight.clone(),
        }
    }
}

struct Decrement(Arc<AtomicUsize>);

impl Drop for Decrement {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl<S, Req> Service<Req> for InstanceEndpoint<S>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        let guard = Decrement(self.in_flight.clone());
        let fut = self.inner.call(req);
        Box::pin(async move {
            let r = fut.await;
            drop(guard);
            r
        })
    }
}
