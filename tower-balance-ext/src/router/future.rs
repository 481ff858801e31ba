//! The router's response future.

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use tower_service::Service;

use super::UnknownService;
use crate::balance::future::ResponseFuture as BalancerFuture;
use crate::BoxError;

pin_project! {
    /// The response future of a [`Router`](super::Router): the chosen service's
    /// balancer's, or an [`UnknownService`] error.
    pub struct ResponseFuture<S, Req>
    where
        S: Service<Req>,
    {
        #[pin]
        kind: Kind<S, Req>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<S, Req>
    where
        S: Service<Req>,
    {
        Balanced {
            #[pin]
            fut: BalancerFuture<SocketAddr, S, Req>,
        },
        Unknown {
            error: Option<UnknownService>,
        },
    }
}

impl<S, Req> ResponseFuture<S, Req>
where
    S: Service<Req>,
{
    pub(super) fn balanced(fut: BalancerFuture<SocketAddr, S, Req>) -> Self {
        Self {
            kind: Kind::Balanced { fut },
        }
    }

    pub(super) fn unknown(error: UnknownService) -> Self {
        Self {
            kind: Kind::Unknown { error: Some(error) },
        }
    }
}

impl<S, Req> fmt::Debug for ResponseFuture<S, Req>
where
    S: Service<Req>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Balanced { fut } => f.debug_tuple("ResponseFuture").field(fut).finish(),
            Kind::Unknown { error } => f.debug_tuple("ResponseFuture").field(error).finish(),
        }
    }
}

impl<S, Req> Future for ResponseFuture<S, Req>
where
    S: Service<Req> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send,
    Req: Send + 'static,
{
    type Output = Result<S::Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Balanced { fut } => fut.poll(cx),
            KindProj::Unknown { error } => match error.take() {
                Some(e) => Poll::Ready(Err(e.into())),
                None => panic!("router ResponseFuture polled after completion"),
            },
        }
    }
}
