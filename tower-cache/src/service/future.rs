//! The response future of [`CacheService`](crate::CacheService).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;

use crate::BoxError;

type BoxFuture<T> = Pin<Box<dyn Future<Output = Result<T, BoxError>> + Send>>;

pin_project! {
    /// Resolves to the cached or loaded response.
    ///
    /// A memory hit is answered without allocating: the response is ready when the
    /// future is made. Misses run boxed.
    pub struct ResponseFuture<T> {
        #[pin]
        kind: Kind<T>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<T> {
        Ready { res: Option<T> },
        Boxed { #[pin] fut: BoxFuture<T> },
    }
}

impl<T> ResponseFuture<T> {
    #[inline]
    pub(crate) fn ready(res: T) -> Self {
        Self {
            kind: Kind::Ready { res: Some(res) },
        }
    }

    pub(crate) fn boxed(fut: impl Future<Output = Result<T, BoxError>> + Send + 'static) -> Self {
        Self {
            kind: Kind::Boxed { fut: Box::pin(fut) },
        }
    }
}

impl<T> Future for ResponseFuture<T> {
    type Output = Result<T, BoxError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Ready { res } => Poll::Ready(Ok(res
                .take()
                .expect("ResponseFuture polled after completion"))),
            KindProj::Boxed { fut } => fut.poll(cx),
        }
    }
}

impl<T> fmt::Debug for ResponseFuture<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}
