//! Pooled raw connections to one upstream: sending a request, reading the answer's head.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tower_service::Service;

use super::body::Body;
use super::config::{after, ForwardConfig};
use super::error::{UpstreamError, UpstreamErrorKind};
use super::head::{response_head, ResponseHead};
use super::timer::Timer;
use super::{Exchange, Forwarded, MAX_HEADERS};
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
    fn take(&self) -> Option<Conn> {
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

    /// Connections to `addr` with `config`'s head limit, upstream timeout and idle
    /// pool size; a setting that cannot work is refused, naming it.
    pub fn with_config(addr: SocketAddr, config: ForwardConfig) -> Result<Self, BuildError> {
        config.check_upstream()?;
        Ok(Self::pooled(addr, config))
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
    type Future = Pin<Box<dyn Future<Output = Result<Forwarded, BoxError>> + Send>>;

    /// Always ready: connections are opened as requests need them.
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Exchange) -> Self::Future {
        let pool = self.pool.clone();
        Box::pin(async move {
            exchange(&pool, &req).await.map_err(|kind| {
                UpstreamError {
                    addr: pool.addr,
                    kind,
                }
                .into()
            })
        })
    }
}

/// Sends `req` over a pooled connection (or a new one) and reads the answer's head. A
/// pooled connection that the upstream closed while idle fails before any answer; an
/// idempotent request is then sent again over a new connection.
async fn exchange(pool: &Arc<Pool>, req: &Exchange) -> Result<Forwarded, UpstreamErrorKind> {
    let timeout = pool.config.upstream_timeout;
    let deadline = after(timeout);
    // Every request goes only over a pooled connection that is still open and holds
    // nothing unread (one non-blocking read tells): bytes there are an answer nobody
    // asked for, which would be served to this request's client, and every later
    // client's answer would be the one before. Such connections are closed. An
    // idempotent request is still sent again over a new connection if the upstream
    // closes a pooled one as the request goes out.
    let pooled = loop {
        match pool.take() {
            Some(conn) if !idle_and_clean(&conn) => continue,
            other => break other,
        }
    };
    if let Some(conn) = pooled {
        match send(pool, conn, req, deadline).await {
            Ok(res) => return Ok(res),
            Err(Sent::Unanswered(e)) if req.idempotent => {
                tracing::debug!(addr = %pool.addr, error = %e, "pooled connection closed; sending again over a new one");
            }
            Err(Sent::Unanswered(e)) => return Err(UpstreamErrorKind::Io(e)),
            Err(Sent::Failed(kind)) => return Err(kind),
        }
    }
    let stream = tokio::time::timeout_at(deadline, TcpStream::connect(pool.addr))
        .await
        .map_err(|_| UpstreamErrorKind::Timeout(timeout))?
        .map_err(UpstreamErrorKind::Io)?;
    let _ = stream.set_nodelay(true);
    let conn = Conn {
        stream,
        buf: BytesMut::with_capacity(4096),
        timer: Timer::new(deadline),
    };
    send(pool, conn, req, deadline).await.map_err(|e| match e {
        Sent::Unanswered(e) => UpstreamErrorKind::Io(e),
        Sent::Failed(kind) => kind,
    })
}

/// Whether an idle pooled connection is fit for a request: open, with nothing to read.
/// A non-blocking read tells; end of stream, stray bytes or an error all mean it is
/// not, and the connection is dropped (closed).
fn idle_and_clean(conn: &Conn) -> bool {
    let mut byte = [0u8; 1];
    matches!(conn.stream.try_read(&mut byte), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
}

enum Sent {
    /// Nothing of an answer came back (the connection was closed or reset).
    Unanswered(io::Error),
    Failed(UpstreamErrorKind),
}

async fn send(
    pool: &Arc<Pool>,
    mut conn: Conn,
    req: &Exchange,
    deadline: Instant,
) -> Result<Forwarded, Sent> {
    let Conn { stream, buf, timer } = &mut conn;
    let io = write_and_read_head(stream, buf, req, pool.config.max_head);
    let Some(head) = timer.run(deadline, io).await else {
        return Err(Sent::Failed(UpstreamErrorKind::Timeout(
            pool.config.upstream_timeout,
        )));
    };
    let head = head?;
    Ok(Forwarded {
        status: head.status,
        head: head.out,
        body: Body {
            framing: head.framing,
            conn: Some(conn),
            pool: pool.clone(),
            // After a request with a body, the connection is closed: a backend that
            // answers without reading a body would read it as the next request, and
            // answer it to the next client.
            reusable: head.reusable && req.body.is_empty(),
        },
    })
}

/// Writes the request and reads the final answer's head (informational answers
/// dropped), leaving what follows it in `buf`.
async fn write_and_read_head(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    req: &Exchange,
    max_head: usize,
) -> Result<ResponseHead, Sent> {
    let write = if req.body.is_empty() {
        stream.write_all(&req.head).await
    } else {
        let mut both = Vec::with_capacity(req.head.len() + req.body.len());
        both.extend_from_slice(&req.head);
        both.extend_from_slice(&req.body);
        stream.write_all(&both).await
    };
    write.map_err(Sent::Unanswered)?;
    buf.clear();
    loop {
        // Read until a whole head is in.
        let parsed = loop {
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut res = httparse::Response::new(&mut headers);
            match res.parse(buf) {
                Ok(httparse::Status::Complete(len)) if len <= max_head => {
                    break response_head(&res, len, req)
                }
                Ok(httparse::Status::Complete(_)) => {
                    return Err(Sent::Failed(UpstreamErrorKind::Protocol(
                        "response head over the limit",
                    )))
                }
                Ok(httparse::Status::Partial) if buf.len() < max_head => {}
                Ok(httparse::Status::Partial) => {
                    return Err(Sent::Failed(UpstreamErrorKind::Protocol(
                        "response head over the limit",
                    )))
                }
                Err(_) => {
                    return Err(Sent::Failed(UpstreamErrorKind::Protocol(
                        "malformed response head",
                    )))
                }
            }
            buf.reserve(4096);
            let empty = buf.is_empty();
            match stream.read_buf(buf).await {
                Ok(0) if empty => {
                    return Err(Sent::Unanswered(io::ErrorKind::UnexpectedEof.into()));
                }
                Ok(0) => {
                    return Err(Sent::Failed(UpstreamErrorKind::Protocol(
                        "connection closed in the response head",
                    )))
                }
                Ok(_) => {}
                Err(e) if empty => return Err(Sent::Unanswered(e)),
                Err(e) => return Err(Sent::Failed(UpstreamErrorKind::Io(e))),
            }
        };
        let head = parsed.map_err(|m| Sent::Failed(UpstreamErrorKind::Protocol(m)))?;
        buf.advance(head.len);
        if head.informational {
            // 100 Continue, 103 Early Hints: dropped; the final answer follows.
            continue;
        }
        return Ok(head);
    }
}
