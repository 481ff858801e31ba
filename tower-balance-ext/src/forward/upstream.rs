//! Pooled raw connections to one upstream, the endpoint service of a forwarder's
//! balancer (the exchange itself is its [`ResponseFuture`]).

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::BytesMut;
use tokio::net::TcpStream;
use tower_service::Service;

use super::config::ForwardConfig;
use super::future::ResponseFuture;
use super::timer::Timer;
use super::{Exchange, Forwarded};
use crate::{BoxError, BuildError};

/// An upstream connection, its read buffer and its timer.
pub(super) struct Conn {
    pub(super) stream: TcpStream,
    pub(super) buf: BytesMut,
    pub(super) timer: Timer,
}

pub(super) struct Pool {
    pub(super) addr: SocketAddr,
    idle: Mutex<Vec<Conn>>,
    pub(super) config: ForwardConfig,
}

impl Pool {
    pub(super) fn take(&self) -> Option<Conn> {
        self.idle.lock().ok()?.pop()
    }

    pub(super) fn put(&self, conn: Conn) {
        if let Ok(mut idle) = self.idle.lock() {
            if idle.len() < self.config.max_idle_per_upstream {
                idle.push(conn);
            }
        }
    }
}

/// The settings of an [`Upstream`]: its [`ForwardConfig`] (the head limit, the
/// upstream timeout and the idle pool size), checked by [`build`](Self::build).
#[derive(Clone, Debug)]
pub struct UpstreamBuilder {
    addr: SocketAddr,
    config: ForwardConfig,
}

impl UpstreamBuilder {
    /// The default settings, for connections to `addr`.
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            config: ForwardConfig::default(),
        }
    }

    /// The limits and timeouts (default [`ForwardConfig::default`]); give the
    /// forwarder's, so both sides agree.
    pub fn config(mut self, config: ForwardConfig) -> Self {
        self.config = config;
        self
    }

    /// Checks the settings; a setting that cannot work is refused, naming it.
    pub fn build(self) -> Result<Upstream, BuildError> {
        self.config.check_upstream()?;
        Ok(Upstream::pooled(self.addr, self.config))
    }
}

/// Pooled raw HTTP/1.1 connections to one address: the endpoint service of a
/// [`Forwarder`](super::Forwarder)'s balancer. Cheap to clone (clones share the pool).
#[derive(Clone)]
pub struct Upstream {
    pool: Arc<Pool>,
}

impl fmt::Debug for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Upstream")
            .field("addr", &self.pool.addr)
            .finish_non_exhaustive()
    }
}

impl Upstream {
    /// Connections to `addr` with the default [`ForwardConfig`].
    pub fn new(addr: SocketAddr) -> Self {
        Self::pooled(addr, ForwardConfig::default())
    }

    /// The settings of connections to `addr`, checked by
    /// [`build`](UpstreamBuilder::build).
    pub fn builder(addr: SocketAddr) -> UpstreamBuilder {
        UpstreamBuilder::new(addr)
    }

    /// Connections to `addr` with `config`'s head limit, upstream timeout and idle
    /// pool size; a setting that cannot work is refused, naming it.
    #[deprecated(note = "use Upstream::builder(addr).config(config).build()")]
    pub fn with_config(addr: SocketAddr, config: ForwardConfig) -> Result<Self, BuildError> {
        Self::builder(addr).config(config).build()
    }

    fn pooled(addr: SocketAddr, config: ForwardConfig) -> Self {
        Self {
            pool: Arc::new(Pool {
                addr,
                idle: Mutex::new(Vec::new()),
                config,
            }),
        }
    }

    /// The address it forwards to.
    pub fn addr(&self) -> SocketAddr {
        self.pool.addr
    }
}

impl Service<Exchange> for Upstream {
    type Response = Forwarded;
    type Error = BoxError;
    type Future = ResponseFuture;

    /// Always ready: connections are opened as requests need them.
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Exchange) -> Self::Future {
        ResponseFuture::new(self.pool.clone(), req)
    }
}

/// Whether an idle pooled connection is fit for a request: open, with nothing to read.
/// A non-blocking read tells; end of stream, stray bytes or an error all mean it is
/// not, and the connection is dropped (closed).
pub(super) fn idle_and_clean(conn: &Conn) -> bool {
    let mut byte = [0u8; 1];
    matches!(conn.stream.try_read(&mut byte), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
}
