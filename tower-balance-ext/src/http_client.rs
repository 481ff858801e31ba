//! [`HttpEndpoint`]: a pooled hyper client bound to one endpoint's address, the usual
//! endpoint service of an HTTP balancer (feature `http-client`).
//!
//! It sends each request to its address, keeping the request's path and query (and its
//! `Host` header, so virtual hosts still work), over keep-alive connections of its own
//! pool. Wrap it in `tower-health`'s pending readiness gate following a health monitor's
//! target, and the balancer skips it while it is not ready:
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! use std::net::SocketAddr;
//! use http_body_util::Full;
//! use bytes::Bytes;
//! use tower_balance_ext::{BalancerBuilder, HttpEndpoint, Pick, Router};
//!
//! let router = Router::new(
//!     BalancerBuilder::new(Pick::LatencyAware).http().retry_idempotent(),
//!     |addr: SocketAddr| HttpEndpoint::<Full<Bytes>>::new(addr),
//!     |req: &http::Request<Full<Bytes>>| {
//!         req.uri().path().split('/').nth(1).map(str::to_owned)
//!     },
//! );
//! router.add_target("training", "127.0.0.1:3001".parse().unwrap(), 1).unwrap();
//! # }
//! ```

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tower_service::Service;

use crate::BoxError;

/// A pooled HTTP/1 client for one address; cheap to clone (clones share the pool).
pub struct HttpEndpoint<B> {
    client: Client<HttpConnector, B>,
    /// `None` for an address no URI can name (the calls then fail).
    authority: Option<http::uri::Authority>,
    addr: SocketAddr,
    timeout: Duration,
}

impl<B> Clone for HttpEndpoint<B> {
    fn clone(&self) -> Self {
        Self {
            client: self.client.clone(),
            authority: self.authority.clone(),
            addr: self.addr,
            timeout: self.timeout,
        }
    }
}

impl<B> fmt::Debug for HttpEndpoint<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpEndpoint")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl<B> HttpEndpoint<B>
where
    B: http_body::Body + Send + 'static + Unpin,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    /// A client for `addr` with its own pool: TCP_NODELAY, idle connections kept 90 s,
    /// connects bounded by 5 s.
    pub fn new(addr: SocketAddr) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .build(connector);
        Self::with_client(client, addr)
    }

    /// The same over a client you configured (its pool is shared by whatever else
    /// uses it).
    pub fn with_client(client: Client<HttpConnector, B>, addr: SocketAddr) -> Self {
        // An IPv6 scope id (`%eth0`) has no place in a URI: leave it out.
        let plain = match addr {
            SocketAddr::V6(v6) => SocketAddr::new(std::net::IpAddr::V6(*v6.ip()), v6.port()),
            v4 => v4,
        };
        let authority = plain.to_string().parse().ok();
        Self {
            client,
            authority,
            addr,
            timeout: Duration::from_secs(30),
        }
    }

    /// How long to wait for the response head (default 30 s): an endpoint that accepts
    /// and never answers fails the request with [`HeadTimeout`] (a failure the balancer
    /// counts, and retries elsewhere when the request may be retried).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The address it sends to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl<B> Service<http::Request<B>> for HttpEndpoint<B>
where
    B: http_body::Body + Send + 'static + Unpin,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    type Response = http::Response<Incoming>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    /// Always ready: the pool opens connections as requests need them.
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let Some(authority) = self.authority.clone() else {
            let e = format!("{} cannot be named in a URI", self.addr);
            return Box::pin(std::future::ready(Err(e.into())));
        };
        let mut parts = req.uri().clone().into_parts();
        parts.scheme = Some(http::uri::Scheme::HTTP);
        parts.authority = Some(authority);
        if parts.path_and_query.is_none() {
            parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
        }
        match http::Uri::from_parts(parts) {
            Ok(uri) => *req.uri_mut() = uri,
            Err(e) => return Box::pin(std::future::ready(Err(e.into()))),
        }
        let fut = self.client.request(req);
        let (timeout, addr) = (self.timeout, self.addr);
        Box::pin(async move {
            match tokio::time::timeout(timeout, fut).await {
                Ok(r) => r.map_err(Into::into),
                Err(_) => Err(HeadTimeout { addr, timeout }.into()),
            }
        })
    }
}

/// The endpoint sent no response head in time.
#[derive(Debug, Clone)]
pub struct HeadTimeout {
    addr: SocketAddr,
    timeout: Duration,
}

impl HeadTimeout {
    /// The endpoint's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `504 Gateway Timeout`, for HTTP.
    pub fn status(&self) -> http::StatusCode {
        http::StatusCode::GATEWAY_TIMEOUT
    }
}

impl fmt::Display for HeadTimeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} sent no response within {:?}",
            self.addr, self.timeout
        )
    }
}

impl std::error::Error for HeadTimeout {}
