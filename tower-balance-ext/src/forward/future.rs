//! The response future of an [`Upstream`](super::Upstream): one request sent over a
//! pooled connection (or a new one), and the answer's head read.

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, BytesMut};
use tokio::io::AsyncWrite;
use tokio::net::TcpStream;
use tokio::time::{error::Elapsed, Instant};

use super::body::Body;
use super::config::after;
use super::error::{Cause, UpstreamError};
use super::head::{response_head, ResponseHead};
use super::timer::Timer;
use super::upstream::{idle_and_clean, Conn, Pool};
use super::{Exchange, Forwarded, MAX_HEADERS};
use crate::BoxError;

/// A new connection being opened (not the common case: connections are pooled).
type Connecting = Pin<Box<dyn Future<Output = Result<io::Result<TcpStream>, Elapsed>> + Send>>;

/// The response future of an [`Upstream`](super::Upstream): sends the request and
/// resolves to the answer's head, the body left on the connection for the client to
/// take. Every field is `Unpin`, so no pinning is involved.
///
/// Every request goes only over a pooled connection that is still open and holds
/// nothing unread (one non-blocking read tells): bytes there are an answer nobody asked
/// for, which would be served to this request's client, and every later client's
/// answer would be the one before. Such connections are closed. An idempotent request
/// is sent again over a new connection if the upstream closes a pooled one as the
/// request goes out, before any answer.
pub struct ResponseFuture {
    pool: Arc<Pool>,
    req: Exchange,
    deadline: Instant,
    state: State,
}

enum State {
    /// Not polled yet: no connection taken.
    Start,
    Connect(Connecting),
    Send(Sending),
    Done,
}

/// A request on its way over `conn`, then its answer's head on the way back.
struct Sending {
    conn: Conn,
    /// Whether the connection came from the pool (and may be replaced by a new one
    /// when it turns out closed before any answer).
    pooled: bool,
    /// The head and the body in one buffer, when there is a body (one write).
    both: Option<Vec<u8>>,
    written: usize,
    reading: bool,
}

/// How sending over one connection failed.
enum Sent {
    /// Nothing of an answer came back (the connection was closed or reset).
    Unanswered(io::Error),
    Failed(Cause),
}

impl ResponseFuture {
    pub(super) fn new(pool: Arc<Pool>, req: Exchange) -> Self {
        Self {
            deadline: after(pool.config.upstream_timeout),
            pool,
            req,
            state: State::Start,
        }
    }

    fn sending(&self, conn: Conn, pooled: bool) -> Sending {
        let both = (!self.req.body.is_empty()).then(|| {
            let mut both = Vec::with_capacity(self.req.head.len() + self.req.body.len());
            both.extend_from_slice(&self.req.head);
            both.extend_from_slice(&self.req.body);
            both
        });
        let mut conn = conn;
        conn.timer.arm(self.deadline);
        Sending {
            conn,
            pooled,
            both,
            written: 0,
            reading: false,
        }
    }

    fn connect(&self) -> State {
        let addr = self.pool.addr;
        State::Connect(Box::pin(tokio::time::timeout_at(
            self.deadline,
            TcpStream::connect(addr),
        )))
    }

    fn fail(&mut self, cause: Cause) -> Poll<Result<Forwarded, BoxError>> {
        self.state = State::Done;
        Poll::Ready(Err(UpstreamError {
            addr: self.pool.addr,
            cause,
        }
        .into()))
    }
}

impl fmt::Debug for ResponseFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Start => "start",
            State::Connect(_) => "connecting",
            State::Send(s) if s.reading => "reading the answer",
            State::Send(_) => "sending",
            State::Done => "done",
        };
        f.debug_struct("ResponseFuture")
            .field("addr", &self.pool.addr)
            .field("state", &state)
            .finish_non_exhaustive()
    }
}

impl Future for ResponseFuture {
    type Output = Result<Forwarded, BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        loop {
            match &mut this.state {
                State::Start => {
                    this.deadline = after(this.pool.config.upstream_timeout);
                    let pooled = loop {
                        match this.pool.take() {
                            Some(conn) if !idle_and_clean(&conn) => continue,
                            other => break other,
                        }
                    };
                    this.state = match pooled {
                        Some(conn) => State::Send(this.sending(conn, true)),
                        None => this.connect(),
                    };
                }
                State::Connect(connecting) => {
                    let stream = match connecting.as_mut().poll(cx) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(Err(_)) => {
                            let timeout = this.pool.config.upstream_timeout;
                            return this.fail(Cause::Timeout(timeout));
                        }
                        Poll::Ready(Ok(Err(e))) => return this.fail(Cause::Io(e)),
                        Poll::Ready(Ok(Ok(stream))) => stream,
                    };
                    let _ = stream.set_nodelay(true);
                    let conn = Conn {
                        stream,
                        buf: BytesMut::with_capacity(4096),
                        timer: Timer::new(this.deadline),
                    };
                    this.state = State::Send(this.sending(conn, false));
                }
                State::Send(sending) => {
                    let head = match poll_send(sending, &this.req, &this.pool, this.deadline, cx) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(Ok(head)) => head,
                        Poll::Ready(Err(Sent::Unanswered(e)))
                            if sending.pooled && this.req.idempotent =>
                        {
                            tracing::debug!(addr = %this.pool.addr, error = %e, "pooled connection closed; sending again over a new one");
                            this.state = this.connect();
                            continue;
                        }
                        Poll::Ready(Err(Sent::Unanswered(e))) => return this.fail(Cause::Io(e)),
                        Poll::Ready(Err(Sent::Failed(kind))) => return this.fail(kind),
                    };
                    let State::Send(sending) = std::mem::replace(&mut this.state, State::Done)
                    else {
                        unreachable!("in the sending state")
                    };
                    return Poll::Ready(Ok(Forwarded {
                        status: head.status,
                        head: head.out,
                        body: Body {
                            framing: head.framing,
                            conn: Some(sending.conn),
                            pool: this.pool.clone(),
                            // After a request with a body, the connection is closed: a
                            // backend that answers without reading a body would read it
                            // as the next request, and answer it to the next client.
                            reusable: head.reusable && this.req.body.is_empty(),
                        },
                    }));
                }
                State::Done => panic!("Upstream's ResponseFuture polled after completion"),
            }
        }
    }
}

/// Writes the request and reads the final answer's head (informational answers
/// dropped), leaving what follows it in the connection's buffer; fails with a timeout
/// once `deadline` has passed.
fn poll_send(
    s: &mut Sending,
    req: &Exchange,
    pool: &Pool,
    deadline: Instant,
    cx: &mut Context<'_>,
) -> Poll<Result<ResponseHead, Sent>> {
    if let Poll::Ready(out) = poll_write_and_read_head(s, req, pool.config.max_head, cx) {
        return Poll::Ready(out);
    }
    if s.conn.timer.poll_passed(deadline, cx) {
        return Poll::Ready(Err(Sent::Failed(Cause::Timeout(
            pool.config.upstream_timeout,
        ))));
    }
    Poll::Pending
}

fn poll_write_and_read_head(
    s: &mut Sending,
    req: &Exchange,
    max_head: usize,
    cx: &mut Context<'_>,
) -> Poll<Result<ResponseHead, Sent>> {
    let Conn { stream, buf, .. } = &mut s.conn;
    if !s.reading {
        let out: &[u8] = s.both.as_deref().unwrap_or(&req.head);
        while s.written < out.len() {
            match Pin::new(&mut *stream).poll_write(cx, &out[s.written..]) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(Sent::Unanswered(io::ErrorKind::WriteZero.into())))
                }
                Poll::Ready(Ok(n)) => s.written += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(Sent::Unanswered(e))),
            }
        }
        s.both = None;
        s.reading = true;
        buf.clear();
    }
    loop {
        // Parse what is in; read more until a whole head is in.
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut res = httparse::Response::new(&mut headers);
        let parsed = match res.parse(buf) {
            Ok(httparse::Status::Complete(len)) if len <= max_head => {
                Some(response_head(&res, len, req))
            }
            Ok(httparse::Status::Complete(_)) => {
                return Poll::Ready(Err(Sent::Failed(Cause::Protocol(
                    "response head over the limit",
                ))))
            }
            Ok(httparse::Status::Partial) if buf.len() < max_head => None,
            Ok(httparse::Status::Partial) => {
                return Poll::Ready(Err(Sent::Failed(Cause::Protocol(
                    "response head over the limit",
                ))))
            }
            Err(_) => {
                return Poll::Ready(Err(Sent::Failed(Cause::Protocol(
                    "malformed response head",
                ))))
            }
        };
        if let Some(parsed) = parsed {
            let head = match parsed {
                Ok(head) => head,
                Err(m) => return Poll::Ready(Err(Sent::Failed(Cause::Protocol(m)))),
            };
            buf.advance(head.len);
            if head.informational {
                // 100 Continue, 103 Early Hints: dropped; the final answer follows.
                continue;
            }
            return Poll::Ready(Ok(head));
        }
        buf.reserve(4096);
        let empty = buf.is_empty();
        let read = loop {
            match stream.poll_read_ready(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => break Err(e),
                Poll::Ready(Ok(())) => {}
            }
            match stream.try_read_buf(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                other => break other,
            }
        };
        match read {
            Ok(0) if empty => {
                return Poll::Ready(Err(Sent::Unanswered(io::ErrorKind::UnexpectedEof.into())))
            }
            Ok(0) => {
                return Poll::Ready(Err(Sent::Failed(Cause::Protocol(
                    "connection closed in the response head",
                ))))
            }
            Ok(_) => {}
            Err(e) if empty => return Poll::Ready(Err(Sent::Unanswered(e))),
            Err(e) => return Poll::Ready(Err(Sent::Failed(Cause::Io(e)))),
        }
    }
}
