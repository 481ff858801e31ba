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
//! # What reaches the upstream, and what is refused
//!
//! It is strict rather than lenient, which is what keeps a proxy safe from request
//! smuggling and response desynchronization (RFC 9112 §6, §11.2). Every head is
//! rewritten from what was parsed, so the upstream never sees bytes the proxy read
//! differently, and the fields that frame a message (`Content-Length`,
//! `Transfer-Encoding`) are written by the proxy itself from the framing it decided on.
//!
//! A request is refused, with nothing sent upstream and the client's connection closed,
//! when:
//! - its head is over [`ForwardConfig::max_head`] or has over 100 fields (431), or it
//!   is malformed: a bare LF or CR as a line end, obs-fold, a space before a colon, a
//!   NUL or a space in a field name, a field name with `_` that stands for a framing or
//!   routing field (`Transfer_Encoding`) (400);
//! - it has no `Host`, two, or one that is not a valid authority (a host and an
//!   optional port: no `/`, `?`, `#`, `@`, spaces or controls) (400);
//! - its target is not origin-form (`/path`), absolute-form (`http://host/path`), or
//!   `*` for `OPTIONS`, or holds a fragment (400); `CONNECT` (501);
//! - its `Content-Length` is not digits only, or two of its values differ (400), or it
//!   is over [`ForwardConfig::max_request_body`] (413); it has a `Transfer-Encoding`
//!   (501: send a `Content-Length`) or an `Expect` (417);
//! - its `Connection` names a field that frames, routes or identifies the request
//!   (`Content-Length`, `Transfer-Encoding`, `Host`, `Authorization`, `Cookie`, the
//!   `Forwarded` family and the like: [`UNSAFE_CONNECTION_OPTIONS`]) (400), since a
//!   proxy must drop what `Connection` names.
//!
//! What is forwarded: the method, the target in origin-form (an absolute-form target
//! is rewritten and its authority becomes the `Host`, RFC 9112 §3.2.2), the fields
//! without the hop-by-hop ones (`Connection` and the fields it names, `Keep-Alive`,
//! `Proxy-Connection`, `TE`, `Upgrade`: an offer to upgrade, such as `curl --http2`'s
//! `h2c`, is dropped and the request goes on as a plain one), one `Content-Length` when
//! there was one, and the body (up to [`ForwardConfig::max_request_body`], buffered).
//! An HTTP/1.0 request goes upstream as HTTP/1.0 (so the answer is not chunked) and
//! its connection closes after the answer. The fields in which clients name
//! themselves or the scheme and port they came by (`X-Forwarded-For`, `Forwarded`,
//! `X-Forwarded-Proto`, `-Host`, `-Port`, `-Ssl`, `X-Real-IP`, `X-Client-IP`,
//! `True-Client-IP`, `CF-Connecting-IP`, `X-Original-URL` and the like) are dropped
//! unless [`ForwardConfig::trusted_hops`] says the peer is a proxy of yours; the
//! forwarder then adds its own `X-Forwarded-For`, `Forwarded` (RFC 7239) and
//! `X-Forwarded-Proto` naming the peer it saw.
//!
//! A response is checked the same way: a malformed head, two different
//! `Content-Length`s, a `Transfer-Encoding` that is not text, a `101` nobody asked for,
//! or a head over the limit answer the client 502 instead. The framing fields the
//! client gets are written anew from the framing decided on: duplicate equal lengths
//! as one, the transfer codings as one clean list; with both `Content-Length` and
//! `Transfer-Encoding` the length is dropped and the upstream connection is not
//! reused; interim answers (1xx) are dropped. Bodies stream through whatever their
//! framing (length, chunked, until close), with no limit on their size; a body cut
//! short ends the client's connection with a reset, never a clean close that a client
//! reading until the close would take for the end. The forwarder's own error answers
//! to `HEAD` carry no body.
//!
//! Upstream connections: a pooled connection is checked before every request, and
//! one that was closed, or holds bytes nobody asked for (an answer out of turn), is
//! closed and never reused; so is one whose answer left bytes after its end. A
//! connection that carried a request body is closed after its answer, since a backend
//! that answers without reading the body would read it as the next request. What
//! HTTP/1.1 cannot tell apart is an answer nobody asked for that arrives only after the
//! next request went out on the same connection: there are no request ids to match, so
//! a backend that answers twice, late, can still be read as answering the next request
//! (the connection is closed once the extra bytes show).
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

use bytes::Bytes;

mod body;
mod chunked;
mod config;
mod error;
mod fields;
pub mod future;
mod head;
mod server;
#[cfg(test)]
mod tests;
mod timer;
mod upstream;

use body::Body;
pub use config::ForwardConfig;
pub use error::{UpstreamError, UpstreamErrorKind};
pub use fields::UNSAFE_CONNECTION_OPTIONS;
pub use server::{Forwarder, ForwarderBuilder};
pub use upstream::{Upstream, UpstreamBuilder};

/// The most fields a head may carry.
const MAX_HEADERS: usize = 100;

/// One request as the forwarder sends it: its normalized head and its whole body.
/// Cheap to clone (the bytes are shared), so a balancer may retry it.
#[derive(Clone)]
pub struct Exchange {
    head: Bytes,
    body: Bytes,
    head_request: bool,
    idempotent: bool,
    http10: bool,
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

    /// The value of the first field named `name` (any case) in the head the upstream
    /// receives, e.g. for a consistent-hash key.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.head
            .split(|b| *b == b'\n')
            .skip(1)
            .filter_map(|line| {
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                let colon = line.iter().position(|b| *b == b':')?;
                Some((&line[..colon], line[colon + 1..].trim_ascii()))
            })
            .find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v)
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
