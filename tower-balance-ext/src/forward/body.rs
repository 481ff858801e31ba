//! Relaying a response body from its upstream connection to the client.

use std::io;
use std::sync::Arc;

use bytes::{Buf, BytesMut};
use tokio::io::AsyncReadExt;

use super::chunked::Chunked;
use super::config::after;
use super::server::{answer, Client};
use super::upstream::{Conn, Pool};

/// Where a body ends.
#[derive(Debug)]
pub(super) enum Framing {
    Length(u64),
    Chunked(Chunked),
    UntilClose,
}

/// The rest of an answer's body, on its upstream connection, which goes back to the
/// pool once the body has been read to its end.
pub(super) struct Body {
    pub(super) framing: Framing,
    pub(super) conn: Option<Conn>,
    pub(super) pool: Arc<Pool>,
    pub(super) reusable: bool,
}

impl Body {
    /// Sends the head and the whole body to `client`. `Ok(true)` when the client's
    /// connection may carry another request.
    pub(super) async fn forward(
        mut self,
        head: &[u8],
        client: &mut Client<'_>,
    ) -> io::Result<bool> {
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
                tracing::debug!(addr = %self.pool.addr, error = %e, "malformed response body");
                answer(
                    client,
                    502,
                    "the upstream sent a malformed body",
                    true,
                    false,
                )
                .await?;
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
