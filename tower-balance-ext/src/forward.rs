//! A lean HTTP/1.1 reverse proxy in front of a balancer (feature `http1-forward`).
//!
//! [`Forwarder`] serves client connections and hands each request to a balancer over
//! [`Upstream`]s, pooled raw HTTP/1.1 connections to one address each. Unlike a proxy
//! built from a server and a client of a general HTTP library, it does not build a
//! request or response object per message: it parses each head in place
//! (`httparse`), writes a normalized copy of it, and moves body bytes as they come,
//! with the client's connection, the pick and the upstream connection all in one task.
//! On two cores it serves 0.97-1.26x HAProxy's requests per second where hyper's
//! server and client around the same balancer serve about 0.8x (the workspace README's
//! fleet figures).
//!
//! It is strict rather than lenient, which is what keeps a proxy safe from request
//! smuggling: a request must be HTTP/1.1 with exactly one `Host`; a request body must
//! have one `Content-Length` (up to [`ForwardConfig::max_request_body`], buffered) and
//! no `Transfer-Encoding` (501); `Upgrade` and `Expect` are refused (501, 417); heads are
//! bounded (431). Every head is rewritten from what was parsed (so the upstream never
//! sees bytes the proxy read differently), hop-by-hop headers (`Connection` and the
//! headers it names, `Keep-Alive`, `Proxy-Connection`, `TE`, `Trailer`, `Upgrade`) are
//! dropped both ways, and response bodies stream through whatever their framing
//! (length, chunked, until close), with no limit on their size.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tower_balance_ext::BoxError> {
//! use std::net::SocketAddr;
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//! use tokio::net::{TcpListener, TcpStream};
//! use tower_balance_ext::forward::{self, Exchange, Forwarder, Upstream};
//! use tower_balance_ext::{discover, BalancerBuilder, Pick};
//!
//! # let backend = TcpListener::bind("127.0.0.1:0").await?;
//! # let backend_addr = backend.local_addr()?;
//! # tokio::spawn(async move {
//! #     let (mut s, _) = backend.accept().await.unwrap();
//! #     let mut buf = [0u8; 1024];
//! #     let _ = s.read(&mut buf).await;
//! #     let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await;
//! # });
//! let backends: Vec<SocketAddr> = vec![backend_addr]; // your servers
//! let upstreams: Vec<(SocketAddr, Upstream)> =
//!     backends.iter().map(|a| (*a, Upstream::new(*a))).collect();
//! let balancer = BalancerBuilder::new(Pick::LeastConnections)
//!     .failure_if(forward::server_error)
//!     .retry(Exchange::retry_copy)
//!     .build(discover::fixed(upstreams))?;
//! let listener = TcpListener::bind("127.0.0.1:0").await?;
//! let addr = listener.local_addr()?;
//! tokio::spawn(Forwarder::new(balancer).serve(listener));
//!
//! let mut client = TcpStream::connect(addr).await?;
//! client.write_all(b"GET / HTTP/1.1\r\nhost: example.test\r\n\r\n").await?;
//! let mut answer = Vec::new();
//! while !answer.ends_with(b"ok") {
//!     let mut chunk = [0u8; 1024];
//!     let n = client.read(&mut chunk).await?;
//!     assert!(n > 0, "closed early");
//!     answer.extend_from_slice(&chunk[..n]);
//! }
//! assert!(answer.starts_with(b"HTTP/1.1 200 OK\r\n"));
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tower_service::Service;

use crate::{BoxError, BuildError};

/// The most headers a head may carry.
const MAX_HEADERS: usize = 100;

/// Limits and timeouts of a [`Forwarder`] and its [`Upstream`]s.
#[derive(Debug, Clone)]
pub struct ForwardConfig {
    /// The largest request or response head, in bytes (default 64 KiB; a larger
    /// request head is answered 431, a larger response head 502).
    pub max_head: usize,
    /// The largest request body, buffered before the request is sent (default 1 MiB;
    /// larger is answered 413).
    pub max_request_body: usize,
    /// How long a client connection may stay idle, take to send a request, or leave
    /// a write of the response waiting because it stopped reading (default 60 s; the
    /// connection is then closed).
    pub client_timeout: Duration,
    /// How long an upstream may take to answer with a head, and to send each part of a
    /// body (default 30 s; the request is then answered 504).
    pub upstream_timeout: Duration,
    /// Idle connections kept per upstream (default 128).
    pub max_idle_per_upstream: usize,
    /// Client connections served at once by [`Forwarder::serve`]; beyond it, new
    /// connections wait in the listener's backlog (default 10,000; at least 1).
    pub max_connections: usize,
}

/// The smallest `max_head` accepted: a request line and a Host header fit.
const MIN_HEAD: usize = 256;

impl ForwardConfig {
    /// The settings an [`Upstream`] uses.
    fn check_upstream(&self) -> Result<(), BuildError> {
        if self.upstream_timeout.is_zero() {
            return Err(BuildError(
                "upstream_timeout is zero: every request would time out; give a duration (default 30 s)".into(),
            ));
        }
        if self.max_head < MIN_HEAD {
            return Err(BuildError(format!(
                "max_head is {} bytes: heads that small do not fit a request line and a Host; give at least {MIN_HEAD} (default 64 KiB)",
                self.max_head
            )));
        }
        Ok(())
    }
}

/// `d` from now, or as far ahead as the clock goes (a `Duration::MAX` timeout never
/// fires rather than overflowing).
fn after(d: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(d)
        .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 24 * 3600))
}

impl Default for ForwardConfig {
    fn default() -> Self {
        Self {
            max_head: 64 * 1024,
            max_request_body: 1024 * 1024,
            client_timeout: Duration::from_secs(60),
            upstream_timeout: Duration::from_secs(30),
            max_idle_per_upstream: 128,
            max_connections: 10_000,
        }
    }
}

/// One request as the forwarder sends it: its normalized head and its whole body.
/// Cheap to clone (the bytes are shared), so a balancer may retry it.
#[derive(Clone)]
pub struct Exchange {
    head: Bytes,
    body: Bytes,
    head_request: bool,
    idempotent: bool,
}

impl fmt::Debug for Exchange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Exchange")
            .field("head", &String::from_utf8_lossy(&self.head))
            .field("body_len", &self.body.len())
            .finish()
    }
}

impl Exchange {
    /// Whether its method is idempotent (GET, HEAD, OPTIONS, TRACE, PUT, DELETE).
    pub fn is_idempotent(&self) -> bool {
        self.idempotent
    }

    /// A copy for a retry on another endpoint when the method is idempotent: give it
    /// to [`BalancerBuilder::retry`](crate::BalancerBuilder::retry).
    pub fn retry_copy(&self) -> Option<Exchange> {
        self.idempotent.then(|| self.clone())
    }

    /// The normalized head the upstream receives.
    pub fn head(&self) -> &[u8] {
        &self.head
    }
}

/// An upstream's answer: its status, the normalized head to send to the client, and
/// the body still to come, read from the upstream connection as the client takes it.
pub struct Forwarded {
    status: u16,
    head: Vec<u8>,
    body: Body,
}

impl fmt::Debug for Forwarded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Forwarded")
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

impl Forwarded {
    /// The upstream's status code.
    pub fn status(&self) -> u16 {
        self.status
    }
}

/// For [`BalancerBuilder::failure_if`](crate::BalancerBuilder::failure_if): 5xx and 429
/// answers count as failures.
pub fn server_error(res: &Forwarded) -> bool {
    res.status >= 500 || res.status == 429
}

/// An upstream's failure, with the status the client is answered.
#[derive(Debug)]
pub struct UpstreamError {
    addr: SocketAddr,
    kind: UpstreamErrorKind,
}

#[derive(Debug)]
enum UpstreamErrorKind {
    Timeout(Duration),
    Io(io::Error),
    Protocol(&'static str),
}

impl UpstreamError {
    /// 504 for a timeout, 502 otherwise.
    pub fn status(&self) -> u16 {
        match self.kind {
            UpstreamErrorKind::Timeout(_) => 504,
            _ => 502,
        }
    }
}

impl fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            UpstreamErrorKind::Timeout(t) => write!(f, "{} sent no answer within {t:?}", self.addr),
            UpstreamErrorKind::Io(e) => write!(f, "{}: {e}", self.addr),
            UpstreamErrorKind::Protocol(m) => write!(f, "{}: {m}", self.addr),
        }
    }
}

impl std::error::Error for UpstreamError {}

/// An upstream connection, its read buffer and its timer.
struct Conn {
    stream: TcpStream,
    buf: BytesMut,
    timer: Timer,
}

/// A timer set once and moved forward only when it fires: a wait with a later deadline
/// than the last costs no timer operation, where a fresh timeout per request would add
/// one and remove one every time (about 8% of the forwarder's CPU time per request).
struct Timer(Pin<Box<tokio::time::Sleep>>);

impl Timer {
    fn new(deadline: Instant) -> Self {
        Self(Box::pin(tokio::time::sleep_until(deadline)))
    }

    /// `fut`'s output, or `None` once `deadline` has passed.
    async fn run<F: Future>(&mut self, deadline: Instant, fut: F) -> Option<F::Output> {
        if self.0.deadline() > deadline {
            self.0.as_mut().reset(deadline);
        }
        let mut fut = std::pin::pin!(fut);
        std::future::poll_fn(|cx| {
            if let Poll::Ready(out) = fut.as_mut().poll(cx) {
                return Poll::Ready(Some(out));
            }
            while self.0.as_mut().poll(cx).is_ready() {
                if Instant::now() >= deadline {
                    return Poll::Ready(None);
                }
                // Set for an earlier wait: move it to this one's deadline.
                self.0.as_mut().reset(deadline);
            }
            Poll::Pending
        })
        .await
    }
}

struct Pool {
    addr: SocketAddr,
    idle: Mutex<Vec<Conn>>,
    config: ForwardConfig,
}

impl Pool {
    fn take(&self) -> Option<Conn> {
        self.idle.lock().ok()?.pop()
    }

    fn put(&self, conn: Conn) {
        if let Ok(mut idle) = self.idle.lock() {
            if idle.len() < self.config.max_idle_per_upstream {
                idle.push(conn);
            }
        }
    }
}

/// Pooled raw HTTP/1.1 connections to one address: the endpoint service of a
/// [`Forwarder`]'s balancer. Cheap to clone (clones share the pool).
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
    // A request that must not be sent twice goes only over a pooled connection that
    // the upstream has not closed meanwhile (one non-blocking read tells; closed ones
    // are dropped); an idempotent one is simply sent again if it was.
    let pooled = loop {
        match pool.take() {
            Some(conn) if !req.idempotent && !still_open(&conn) => continue,
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

/// Whether an idle pooled connection is still open: a non-blocking read finds nothing
/// to read (end of stream, stray bytes or an error all mean it is not fit for use).
fn still_open(conn: &Conn) -> bool {
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
            reusable: head.reusable,
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

/// A response head, parsed.
struct ResponseHead {
    len: usize,
    status: u16,
    informational: bool,
    framing: Framing,
    reusable: bool,
    /// The normalized head for the client.
    out: Vec<u8>,
}

fn response_head(
    res: &httparse::Response<'_, '_>,
    len: usize,
    req: &Exchange,
) -> Result<ResponseHead, &'static str> {
    let status = res.code.ok_or("no status")?;
    if status == 101 {
        return Err("101 Switching Protocols to a request that asked for no upgrade");
    }
    let informational = (100..200).contains(&status);
    let connection = connection_tokens(res.headers);
    let mut close = res.version != Some(1);
    let mut length: Option<u64> = None;
    let mut chunked = false;
    let mut transfer_encoding = false;
    for h in res.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let n = parse_length(h.value).ok_or("invalid Content-Length in the response")?;
            if length.is_some_and(|l| l != n) {
                return Err("two different Content-Lengths in the response");
            }
            length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            transfer_encoding = true;
            // The last coding decides: chunked ends the message, anything else runs
            // until the connection closes.
            chunked = last_token(h.value).eq_ignore_ascii_case(b"chunked");
        } else if h.name.eq_ignore_ascii_case("connection") && has_token(h.value, b"close") {
            close = true;
        }
    }
    let framing = if req.head_request || status == 204 || status == 304 || informational {
        Framing::Length(0)
    } else if transfer_encoding {
        if chunked {
            Framing::Chunked(Chunked::default())
        } else {
            Framing::UntilClose
        }
    } else if let Some(n) = length {
        Framing::Length(n)
    } else {
        Framing::UntilClose
    };
    let until_close = matches!(framing, Framing::UntilClose);
    let mut out = Vec::with_capacity(len + 24);
    out.extend_from_slice(b"HTTP/1.1 ");
    // Three digits (httparse checks), written without a formatter.
    out.extend_from_slice(&[
        b'0' + (status / 100 % 10) as u8,
        b'0' + (status / 10 % 10) as u8,
        b'0' + (status % 10) as u8,
    ]);
    out.push(b' ');
    out.extend_from_slice(res.reason.unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for h in res.headers.iter() {
        if hop_by_hop(h.name, &connection)
            // With Transfer-Encoding, a Content-Length is wrong (RFC 9112, 6.3).
            || (transfer_encoding && h.name.eq_ignore_ascii_case("content-length"))
        {
            continue;
        }
        push_header(&mut out, h.name.as_bytes(), h.value);
    }
    if until_close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    Ok(ResponseHead {
        len,
        status,
        informational,
        framing,
        reusable: !close && !until_close,
        out,
    })
}

/// Where a body ends.
#[derive(Debug)]
enum Framing {
    Length(u64),
    Chunked(Chunked),
    UntilClose,
}

/// A scanner of chunked framing: finds where the message ends without changing it.
#[derive(Debug, Default)]
struct Chunked {
    state: ChunkState,
    size: u64,
    /// Bytes of the current size line's extension or trailer line.
    line: usize,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    #[default]
    Size,
    SizeWhitespace,
    Extension,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    TrailerStart,
    Trailer,
    TrailerLf,
    EndLf,
    Done,
}

/// The longest chunk extension or trailer line.
const MAX_CHUNK_LINE: usize = 8 * 1024;

impl Chunked {
    /// Scans `buf`; how many of its bytes belong to the message (all of them unless it
    /// ends inside `buf`).
    fn scan(&mut self, buf: &[u8]) -> Result<usize, &'static str> {
        let mut i = 0;
        while i < buf.len() && self.state != ChunkState::Done {
            if self.state == ChunkState::Data {
                let take = (buf.len() - i).min(usize::try_from(self.size).unwrap_or(usize::MAX));
                i += take;
                self.size -= take as u64;
                if self.size == 0 {
                    self.state = ChunkState::DataCr;
                }
                continue;
            }
            let b = buf[i];
            i += 1;
            self.state = match (self.state, b) {
                (ChunkState::Size, b) if b.is_ascii_hexdigit() => {
                    let digit = (b as char).to_digit(16).unwrap_or(0) as u64;
                    self.size = self
                        .size
                        .checked_mul(16)
                        .and_then(|s| s.checked_add(digit))
                        .ok_or("chunk size overflows")?;
                    self.line += 1;
                    if self.line > 64 {
                        return Err("chunk size line over the limit");
                    }
                    ChunkState::Size
                }
                (ChunkState::Size, _) if self.line == 0 => return Err("chunk size missing"),
                (ChunkState::Size | ChunkState::SizeWhitespace, b' ' | b'\t') => {
                    ChunkState::SizeWhitespace
                }
                (ChunkState::Size | ChunkState::SizeWhitespace, b';') => {
                    self.line = 0;
                    ChunkState::Extension
                }
                (ChunkState::Size | ChunkState::SizeWhitespace | ChunkState::Extension, b'\r') => {
                    ChunkState::SizeLf
                }
                (ChunkState::Extension, b'\n') => return Err("bare LF in a chunk extension"),
                (ChunkState::Extension, _) => {
                    self.count_line()?;
                    ChunkState::Extension
                }
                (ChunkState::SizeLf, b'\n') => {
                    self.line = 0;
                    if self.size == 0 {
                        ChunkState::TrailerStart
                    } else {
                        ChunkState::Data
                    }
                }
                (ChunkState::DataCr, b'\r') => ChunkState::DataLf,
                (ChunkState::DataLf, b'\n') => ChunkState::Size,
                (ChunkState::TrailerStart, b'\r') => ChunkState::EndLf,
                (ChunkState::Trailer, b'\r') => ChunkState::TrailerLf,
                (ChunkState::TrailerStart | ChunkState::Trailer, b'\n') => {
                    return Err("bare LF in a trailer")
                }
                (ChunkState::TrailerStart | ChunkState::Trailer, _) => {
                    self.count_line()?;
                    ChunkState::Trailer
                }
                (ChunkState::TrailerLf, b'\n') => {
                    self.line = 0;
                    ChunkState::TrailerStart
                }
                (ChunkState::EndLf, b'\n') => ChunkState::Done,
                _ => return Err("malformed chunked body"),
            };
        }
        Ok(i)
    }

    fn done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// One more byte of a chunk extension or a trailer line, within the limit.
    fn count_line(&mut self) -> Result<(), &'static str> {
        self.line += 1;
        if self.line > MAX_CHUNK_LINE {
            return Err("chunk extension or trailer line over the limit");
        }
        Ok(())
    }
}

/// The rest of an answer's body, on its upstream connection, which goes back to the
/// pool once the body has been read to its end.
struct Body {
    framing: Framing,
    conn: Option<Conn>,
    pool: Arc<Pool>,
    reusable: bool,
}

impl Body {
    /// Sends the head and the whole body to `client`. `Ok(true)` when the client's
    /// connection may carry another request.
    async fn forward(mut self, head: &[u8], client: &mut Client<'_>) -> io::Result<bool> {
        let Some(mut conn) = self.conn.take() else {
            return Ok(false);
        };
        let timeout = self.pool.config.upstream_timeout;
        // The head and whatever of the body came with it, in one write.
        let mut out = Vec::with_capacity(head.len() + conn.buf.len().min(64 * 1024));
        out.extend_from_slice(head);
        let mut done = match self.take(&mut conn.buf, &mut out) {
            Ok(done) => done,
            Err(e) => {
                // Nothing sent yet: the client can still be told.
                let message = format!("{}: {e}", self.pool.addr);
                answer(client, 502, &message, true).await?;
                return Ok(false);
            }
        };
        client.write(&out).await?;
        while !done {
            conn.buf.clear();
            conn.buf.reserve(16 * 1024);
            let read = conn.stream.read_buf(&mut conn.buf);
            let n = match conn.timer.run(after(timeout), read).await {
                Some(r) => r?,
                None => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the upstream stalled in a body",
                    ))
                }
            };
            if n == 0 {
                if matches!(self.framing, Framing::UntilClose) {
                    return Ok(false);
                }
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the upstream closed the connection in a body",
                ));
            }
            out.clear();
            done = self.take(&mut conn.buf, &mut out)?;
            client.write(&out).await?;
        }
        if self.reusable && conn.buf.is_empty() {
            self.pool.put(conn);
        }
        Ok(!matches!(self.framing, Framing::UntilClose))
    }

    /// Moves the body's bytes from `buf` to `out`; whether the body has ended. Bytes
    /// past its end (an upstream that answers more than asked) make the connection
    /// unfit for reuse.
    fn take(&mut self, buf: &mut BytesMut, out: &mut Vec<u8>) -> io::Result<bool> {
        let bad = |m: &'static str| io::Error::new(io::ErrorKind::InvalidData, m);
        let (n, done) = match &mut self.framing {
            Framing::Length(left) => {
                let n = buf.len().min(usize::try_from(*left).unwrap_or(usize::MAX));
                *left -= n as u64;
                (n, *left == 0)
            }
            Framing::Chunked(c) => {
                let n = c.scan(buf).map_err(bad)?;
                (n, c.done())
            }
            Framing::UntilClose => (buf.len(), false),
        };
        out.extend_from_slice(&buf[..n]);
        buf.advance(n);
        if !buf.is_empty() {
            self.reusable = false;
            buf.clear();
        }
        Ok(done)
    }
}

/// A client's connection and its timer: every read and write is bounded by the client
/// timeout, so a client that stops reading cannot hold its task and an upstream
/// connection forever.
struct Client<'a> {
    stream: &'a mut TcpStream,
    timer: Timer,
    timeout: Duration,
}

impl Client<'_> {
    /// Reads more into `buf`; `false` when the client closed or `deadline` passed.
    async fn read(&mut self, buf: &mut BytesMut, deadline: Instant) -> io::Result<bool> {
        match self.timer.run(deadline, self.stream.read_buf(buf)).await {
            Some(Ok(0)) | None => Ok(false),
            Some(Ok(_)) => Ok(true),
            Some(Err(e)) => Err(e),
        }
    }

    async fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        let deadline = after(self.timeout);
        match self.timer.run(deadline, self.stream.write_all(bytes)).await {
            Some(r) => r,
            None => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client stopped reading",
            )),
        }
    }
}

/// A client's request that is answered by the proxy itself.
struct Refusal {
    status: u16,
    message: &'static str,
}

/// A parsed request head.
struct RequestHead {
    len: usize,
    body: usize,
    close: bool,
    exchange_head: Vec<u8>,
    head_request: bool,
    idempotent: bool,
}

fn request_head(
    req: &httparse::Request<'_, '_>,
    len: usize,
    max_body: usize,
) -> Result<RequestHead, Refusal> {
    let refuse = |status, message| Err(Refusal { status, message });
    let (Some(method), Some(path), Some(version)) = (req.method, req.path, req.version) else {
        return refuse(400, "incomplete request line");
    };
    if version != 1 {
        return refuse(505, "only HTTP/1.1 is forwarded");
    }
    let connection = connection_tokens(req.headers);
    let mut close = false;
    let mut hosts = 0;
    let mut length: Option<u64> = None;
    for h in req.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("host") {
            hosts += 1;
        } else if name.eq_ignore_ascii_case("content-length") {
            let Some(n) = parse_length(h.value) else {
                return refuse(400, "invalid Content-Length");
            };
            if length.is_some_and(|l| l != n) {
                return refuse(400, "two different Content-Lengths");
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return refuse(
                501,
                "request bodies with Transfer-Encoding are not forwarded; send a Content-Length",
            );
        } else if name.eq_ignore_ascii_case("upgrade") {
            return refuse(501, "upgrades are not forwarded");
        } else if name.eq_ignore_ascii_case("expect") {
            return refuse(417, "Expect is not supported; send the body at once");
        } else if name.eq_ignore_ascii_case("connection") && has_token(h.value, b"close") {
            close = true;
        }
    }
    if hosts != 1 {
        return refuse(400, "a request needs exactly one Host header");
    }
    let body = match length {
        None => 0,
        Some(n) if n > max_body as u64 => return refuse(413, "request body over the limit"),
        Some(n) => n as usize,
    };
    let mut out = Vec::with_capacity(len + 8);
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for h in req.headers.iter() {
        if !hop_by_hop(h.name, &connection) {
            push_header(&mut out, h.name.as_bytes(), h.value);
        }
    }
    out.extend_from_slice(b"\r\n");
    Ok(RequestHead {
        len,
        body,
        close,
        exchange_head: out,
        head_request: method == "HEAD",
        idempotent: http::Method::from_bytes(method.as_bytes())
            .is_ok_and(|m| crate::is_idempotent(&m)),
    })
}

/// A proxy serving client connections through a balancer of [`Upstream`]s (or any
/// service from [`Exchange`] to [`Forwarded`]). Cheap to clone.
#[derive(Clone, Debug)]
pub struct Forwarder<S> {
    service: S,
    config: Arc<ForwardConfig>,
}

impl<S> Forwarder<S>
where
    S: Service<Exchange, Response = Forwarded> + Clone + Send + Sync + 'static,
    S::Error: Into<BoxError> + Send,
    S::Future: Send,
{
    /// A forwarder over `service` with the default [`ForwardConfig`].
    pub fn new(service: S) -> Self {
        Self {
            service,
            config: Arc::new(ForwardConfig::default()),
        }
    }

    /// A forwarder with `config`'s limits and client timeout; a setting that cannot
    /// work is refused, naming it.
    pub fn with_config(service: S, config: ForwardConfig) -> Result<Self, BuildError> {
        config.check_upstream()?;
        if config.client_timeout.is_zero() {
            return Err(BuildError(
                "client_timeout is zero: every connection would close at once; give a duration (default 60 s)".into(),
            ));
        }
        if config.max_connections == 0 {
            return Err(BuildError(
                "max_connections is 0: no client would be served; give at least 1 (default 10,000)"
                    .into(),
            ));
        }
        Ok(Self {
            service,
            config: Arc::new(config),
        })
    }

    /// Accepts connections on `listener` and serves each in a task of its own (at most
    /// [`ForwardConfig::max_connections`] at once), until accepting fails for a reason
    /// other than a connection aborted early or running out of file descriptors (then
    /// it waits 50 ms and goes on).
    pub async fn serve(self, listener: TcpListener) -> io::Result<()> {
        self.serve_with_shutdown(listener, std::future::pending())
            .await
    }

    /// [`serve`](Self::serve) until `shutdown` completes, then drains: stops accepting,
    /// lets every request in progress finish (its answer sent whole), closes each
    /// connection as it goes idle, and returns once all are closed. Bound the drain
    /// with `tokio::time::timeout` if its clients may be slow.
    pub async fn serve_with_shutdown<F>(self, listener: TcpListener, shutdown: F) -> io::Result<()>
    where
        F: Future<Output = ()>,
    {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let permits = Arc::new(tokio::sync::Semaphore::new(
            self.config.max_connections.max(1),
        ));
        let mut tasks = tokio::task::JoinSet::new();
        let mut shutdown = std::pin::pin!(shutdown);
        let result = loop {
            let permit = tokio::select! {
                biased;
                () = &mut shutdown => break Ok(()),
                p = permits.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => break Ok(()), // never closed
                },
            };
            let accepted = tokio::select! {
                biased;
                () = &mut shutdown => break Ok(()),
                a = listener.accept() => a,
            };
            let stream = match accepted {
                Ok((stream, _)) => stream,
                Err(e) if is_transient(&e) => {
                    tracing::warn!(error = %e, "accept failed; retrying in 50 ms");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
                Err(e) => break Err(e),
            };
            let this = self.clone();
            let stopped = stopped.clone();
            tasks.spawn(async move {
                let _permit = permit;
                if let Err(e) = this.serve_until(stream, Some(stopped)).await {
                    tracing::debug!(error = %e, "client connection ended with an error");
                }
            });
            while tasks.try_join_next().is_some() {}
        };
        drop(listener);
        let _ = stop.send(true);
        while tasks.join_next().await.is_some() {}
        result
    }

    /// Serves one client connection until the client closes it, asks to close it,
    /// stays idle past the client timeout, or sends what cannot be forwarded.
    pub async fn serve_connection(&self, stream: TcpStream) -> io::Result<()> {
        self.serve_until(stream, None).await
    }

    /// The same, closing the connection once idle after `stopped` turns true.
    async fn serve_until(
        &self,
        mut stream: TcpStream,
        mut stopped: Option<tokio::sync::watch::Receiver<bool>>,
    ) -> io::Result<()> {
        let _ = stream.set_nodelay(true);
        let config = &self.config;
        let mut buf = BytesMut::with_capacity(4096);
        let mut client = Client {
            stream: &mut stream,
            timer: Timer::new(after(config.client_timeout)),
            timeout: config.client_timeout,
        };
        loop {
            // The whole request within the client timeout.
            let deadline = after(config.client_timeout);
            // A whole request head.
            let head = loop {
                let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
                let mut req = httparse::Request::new(&mut headers);
                match req.parse(&buf) {
                    Ok(httparse::Status::Complete(len)) if len > config.max_head => {
                        break Err(Refusal {
                            status: 431,
                            message: "request head over the limit",
                        })
                    }
                    Ok(httparse::Status::Complete(len)) => {
                        break request_head(&req, len, config.max_request_body)
                    }
                    Ok(httparse::Status::Partial) if buf.len() < config.max_head => {}
                    Ok(httparse::Status::Partial) => {
                        break Err(Refusal {
                            status: 431,
                            message: "request head over the limit",
                        })
                    }
                    Err(httparse::Error::TooManyHeaders) => {
                        break Err(Refusal {
                            status: 431,
                            message: "too many request headers",
                        })
                    }
                    Err(_) => {
                        break Err(Refusal {
                            status: 400,
                            message: "malformed request head",
                        })
                    }
                }
                buf.reserve(4096);
                let more = match stopped.as_mut() {
                    // Between requests, a drain closes the connection.
                    Some(stopped) if buf.is_empty() => tokio::select! {
                        biased;
                        _ = stopped.wait_for(|s| *s) => false,
                        r = client.read(&mut buf, deadline) => r?,
                    },
                    _ => client.read(&mut buf, deadline).await?,
                };
                if !more {
                    return Ok(());
                }
            };
            let head = match head {
                Ok(head) => head,
                Err(refusal) => {
                    // Whatever follows cannot be framed: answer and close.
                    return answer(&mut client, refusal.status, refusal.message, true).await;
                }
            };
            // Its body, buffered.
            while buf.len() < head.len + head.body {
                buf.reserve(head.len + head.body - buf.len());
                if !client.read(&mut buf, deadline).await? {
                    return Ok(());
                }
            }
            buf.advance(head.len);
            let body = buf.split_to(head.body).freeze();
            let exchange = Exchange {
                head: Bytes::from(head.exchange_head),
                body,
                head_request: head.head_request,
                idempotent: head.idempotent,
            };
            let mut service = self.service.clone();
            let result = match std::future::poll_fn(|cx| service.poll_ready(cx)).await {
                Ok(()) => service.call(exchange).await.map_err(Into::into),
                Err(e) => Err(e.into()),
            };
            match result {
                Ok(res) => {
                    let Forwarded {
                        head: out, body, ..
                    } = res;
                    if !body.forward(&out, &mut client).await? || head.close {
                        return Ok(());
                    }
                }
                Err(e) => {
                    let status = error_status(&*e);
                    tracing::debug!(error = %e, status, "request not forwarded");
                    answer(&mut client, status, &e.to_string(), head.close).await?;
                    if head.close {
                        return Ok(());
                    }
                }
            }
        }
    }
}

/// The status for a failed forward: the upstream's (502/504), the balancer's 503 when
/// no endpoint is ready, 502 otherwise.
fn error_status(e: &(dyn std::error::Error + 'static)) -> u16 {
    if let Some(u) = e.downcast_ref::<UpstreamError>() {
        return u.status();
    }
    if e.downcast_ref::<crate::NoReadyEndpoints>().is_some() {
        return 503;
    }
    if e.downcast_ref::<crate::breaker::BreakerOpen>().is_some() {
        return 503;
    }
    502
}

/// Answers `status` with `message` as a text body.
async fn answer(
    client: &mut Client<'_>,
    status: u16,
    message: &str,
    close: bool,
) -> io::Result<()> {
    let reason = http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Error");
    let body = format!("{message}\n");
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\n{}\r\n",
        body.len(),
        if close { "connection: close\r\n" } else { "" }
    );
    let mut out = head.into_bytes();
    out.extend_from_slice(body.as_bytes());
    client.write(&out).await?;
    if close {
        let deadline = after(client.timeout);
        let _ = client.timer.run(deadline, client.stream.shutdown()).await;
    }
    Ok(())
}

fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    ) || e.raw_os_error().is_some_and(|c| c == 24 || c == 23) // EMFILE, ENFILE
}

/// The header names listed in `Connection` headers (lowercase).
fn connection_tokens(headers: &[httparse::Header<'_>]) -> Vec<Vec<u8>> {
    let mut tokens = Vec::new();
    for h in headers {
        if h.name.eq_ignore_ascii_case("connection") {
            for t in h.value.split(|b| *b == b',') {
                let t = t.trim_ascii();
                if !t.is_empty() {
                    tokens.push(t.to_ascii_lowercase());
                }
            }
        }
    }
    tokens
}

/// Headers meant for one connection only, which a proxy does not pass on.
fn hop_by_hop(name: &str, connection: &[Vec<u8>]) -> bool {
    const HOP: [&str; 6] = [
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "upgrade",
    ];
    HOP.iter().any(|h| name.eq_ignore_ascii_case(h))
        || connection
            .iter()
            .any(|t| t.eq_ignore_ascii_case(name.as_bytes()))
}

fn has_token(value: &[u8], token: &[u8]) -> bool {
    value
        .split(|b| *b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
}

fn last_token(value: &[u8]) -> &[u8] {
    value
        .split(|b| *b == b',')
        .map(<[u8]>::trim_ascii)
        .rfind(|t| !t.is_empty())
        .unwrap_or(b"")
}

/// A Content-Length value: digits only (a list of equal values is accepted).
fn parse_length(value: &[u8]) -> Option<u64> {
    let mut found: Option<u64> = None;
    for part in value.split(|b| *b == b',') {
        let part = part.trim_ascii();
        if part.is_empty() || part.len() > 19 || !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let n: u64 = std::str::from_utf8(part).ok()?.parse().ok()?;
        if found.is_some_and(|f| f != n) {
            return None;
        }
        found = Some(n);
    }
    found
}

fn push_header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan_all(parts: &[&[u8]]) -> Result<(usize, bool), &'static str> {
        let mut c = Chunked::default();
        let mut total = 0;
        for p in parts {
            total += c.scan(p)?;
            if c.done() {
                break;
            }
        }
        Ok((total, c.done()))
    }

    #[test]
    fn chunked_scanner_finds_the_end_across_any_split() {
        let msg: &[u8] =
            b"5\r\nhello\r\n1a;ext=1\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nx-trailer: 1\r\n\r\n";
        for split in 0..=msg.len() {
            let (a, b) = msg.split_at(split);
            assert_eq!(
                scan_all(&[a, b, b"GET /next"]),
                Ok((msg.len(), true)),
                "split {split}"
            );
        }
        // Byte by byte.
        let bytes: Vec<&[u8]> = msg.chunks(1).collect();
        assert_eq!(scan_all(&bytes), Ok((msg.len(), true)));
        // Bytes after the end are not the message's.
        let mut c = Chunked::default();
        assert_eq!(c.scan(b"0\r\n\r\nHTTP/1.1"), Ok(5));
        assert!(c.done());
    }

    proptest::proptest! {
        /// Any chunked body (chunk sizes in any case and with leading zeros, extensions,
        /// trailers), followed by anything, split anywhere: the scanner ends exactly at
        /// the body's end.
        #[test]
        fn chunked_scanner_ends_exactly_at_the_end(
            chunks in proptest::collection::vec(
                (proptest::collection::vec(proptest::num::u8::ANY, 1..300), proptest::bool::ANY, 0usize..3),
                0..8,
            ),
            trailers in proptest::collection::vec("[a-z]{1,8}: [a-z0-9]{0,8}", 0..3),
            suffix in proptest::collection::vec(proptest::num::u8::ANY, 0..40),
            cuts in proptest::collection::vec(0usize..4000, 0..6),
        ) {
            let mut body = Vec::new();
            for (data, upper, zeros) in &chunks {
                let size = format!("{}{:x}", "0".repeat(*zeros), data.len());
                body.extend_from_slice(if *upper { size.to_uppercase() } else { size }.as_bytes());
                if *upper {
                    body.extend_from_slice(b" ;name=\"v\"");
                }
                body.extend_from_slice(b"\r\n");
                body.extend_from_slice(data);
                body.extend_from_slice(b"\r\n");
            }
            body.extend_from_slice(b"0\r\n");
            for t in &trailers {
                body.extend_from_slice(t.as_bytes());
                body.extend_from_slice(b"\r\n");
            }
            body.extend_from_slice(b"\r\n");
            let end = body.len();
            body.extend_from_slice(&suffix);
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (body.len() + 1)).collect();
            cuts.push(0);
            cuts.push(body.len());
            cuts.sort_unstable();
            let parts: Vec<&[u8]> = cuts.windows(2).map(|w| &body[w[0]..w[1]]).collect();
            proptest::prop_assert_eq!(scan_all(&parts), Ok((end, true)));
        }

        /// Bytes of any kind never make the scanner panic or claim more than it was given.
        #[test]
        fn chunked_scanner_takes_no_more_than_it_is_given(
            bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..500),
        ) {
            let mut c = Chunked::default();
            if let Ok(n) = c.scan(&bytes) {
                proptest::prop_assert!(n <= bytes.len());
            }
        }
    }

    #[test]
    fn chunked_scanner_refuses_malformed_framing() {
        for bad in [
            &b"z\r\n"[..],
            b"\r\n",
            b"5\nhello",
            b"5\r\nhelloX\r\n",
            b"ffffffffffffffffff\r\n",
            b"0\r\nx\n",
        ] {
            assert!(
                scan_all(&[bad]).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let long = [&b"1;"[..], &vec![b'a'; MAX_CHUNK_LINE + 1]].concat();
        assert!(scan_all(&[&long]).is_err());
    }

    #[test]
    fn content_length_values() {
        assert_eq!(parse_length(b"42"), Some(42));
        assert_eq!(parse_length(b" 42 "), Some(42));
        assert_eq!(parse_length(b"42, 42"), Some(42));
        for bad in [
            &b"42, 43"[..],
            b"-1",
            b"+1",
            b"",
            b"4 2",
            b"0x10",
            b"99999999999999999999",
        ] {
            assert_eq!(
                parse_length(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn hop_by_hop_headers_and_connection_tokens() {
        let headers = [
            httparse::Header {
                name: "Connection",
                value: b"keep-alive, X-Secret",
            },
            httparse::Header {
                name: "x-secret",
                value: b"1",
            },
        ];
        let tokens = connection_tokens(&headers);
        assert!(hop_by_hop("X-SECRET", &tokens));
        assert!(hop_by_hop("keep-alive", &tokens));
        assert!(hop_by_hop("TE", &tokens));
        assert!(!hop_by_hop("x-other", &tokens));
        assert_eq!(last_token(b"gzip, chunked "), b"chunked");
        assert!(has_token(b"Keep-Alive, Close", b"close"));
    }
}
