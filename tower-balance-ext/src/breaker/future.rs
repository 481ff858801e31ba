//! The breaker's response future: records the call's outcome in the breaker.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use tokio::time::Instant;

use super::state::{Breaker, Permit};
use crate::BoxError;

pin_project! {
    /// The response future of [`CircuitBreaker`].
    pub struct ResponseFuture<F, Res> {
        #[pin]
        inner: F,
        breaker: Option<Arc<Breaker<Res>>>,
        permit: Option<Permit<Res>>,
        start: Instant,
    }

    impl<F, Res> PinnedDrop for ResponseFuture<F, Res> {
        fn drop(this: Pin<&mut Self>) {
            // Dropped before it finished: a probe's slot is given back.
            let this = this.project();
            if let (Some(b), Some(_)) = (this.breaker.as_ref(), this.permit.as_ref()) {
                b.release_probe();
            }
        }
    }
}

impl<F, Res> ResponseFuture<F, Res> {
    pub(super) fn new(inner: F, breaker: Arc<Breaker<Res>>, permit: Option<Permit<Res>>) -> Self {
        Self {
            inner,
            breaker: Some(breaker),
            permit,
            start: Instant::now(),
        }
    }
}

impl<F, Res> fmt::Debug for ResponseFuture<F, Res> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<F, Res, E> Future for ResponseFuture<F, Res>
where
    F: Future<Output = Result<Res, E>>,
    E: Into<BoxError>,
{
    type Output = Result<Res, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = std::task::ready!(this.inner.poll(cx)).map_err(Into::into);
        if let Some(b) = this.breaker.take() {
            let failed = match &result {
                Ok(r) => (b.cfg.failure_if)(r),
                Err(_) => true,
            };
            let probe = this.permit.take().is_some();
            b.record(failed, this.start.elapsed(), probe);
        }
        Poll::Ready(result)
    }
}
