//! The client side: serving connections, reading requests, answering refusals.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tower_service::Service;

use super::config::{after, ForwardConfig};
use super::error::UpstreamError;
use super::head::{request_head, Peer, Refusal};
use super::timer::Timer;
use super::{Exchange, Forwarded, MAX_HEADERS};
use crate::{BoxError, BuildError};

/// A client's connection and its timer: every read and write is bounded by the client
/// timeout, so a client that stops reading cannot hold its task and an upstream
/// connection forever.
pub(super) struct Client<'a> {
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

    /// Ends the connection with a reset rather than a clean close.
    fn abort(&mut self) {
        let _ = socket2::SockRef::from(&*self.stream).set_linger(Some(Duration::ZERO));
    }

    pub(super) async fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
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

/// The settings of a [`Forwarder`]: its [`ForwardConfig`], checked by
/// [`build`](Self::build).
#[derive(Clone, Debug)]
pub struct ForwarderBuilder<S> {
    service: S,
    config: ForwardConfig,
}

impl<S> ForwarderBuilder<S>
where
    S: Service<Exchange, Response = Forwarded> + Clone + Send + Sync + 'static,
    S::Error: Into<BoxError> + Send,
    S::Future: Send,
{
    /// The default settings, over `service`.
    pub fn new(service: S) -> Self {
        Self {
            service,
            config: ForwardConfig::default(),
        }
    }

    /// The limits and timeouts (default [`ForwardConfig::default`]).
    pub fn config(mut self, config: ForwardConfig) -> Self {
        self.config = config;
        self
    }

    /// Checks the settings; a setting that cannot work is refused, naming it.
    pub fn build(self) -> Result<Forwarder<S>, BuildError> {
        let config = self.config;
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
        Ok(Forwarder {
            service: self.service,
            config: Arc::new(config),
        })
    }
}

/// A proxy serving client connections through a balancer of [`Upstream`](super::Upstream)s (or any
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

    /// The settings of a forwarder over `service`, checked by
    /// [`build`](ForwarderBuilder::build).
    pub fn builder(service: S) -> ForwarderBuilder<S> {
        ForwarderBuilder::new(service)
    }

    /// A forwarder with `config`'s limits and client timeout; a setting that cannot
    /// work is refused, naming it.
    #[deprecated(note = "use Forwarder::builder(service).config(config).build()")]
    pub fn with_config(service: S, config: ForwardConfig) -> Result<Self, BuildError> {
        Self::builder(service).config(config).build()
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
        let peer = Peer::new(stream.peer_addr().ok().map(|a| a.ip()), config.trusted_hops);
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
                        break request_head(&req, &buf, len, config.max_request_body, peer)
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
                    return answer(&mut client, refusal.status, refusal.message, true, false).await;
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
                http10: head.http10,
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
                    match body.forward(&out, &mut client).await {
                        Ok(true) if !head.close => {}
                        Ok(_) => return Ok(()),
                        Err(e) => {
                            // Cut short: an abortive close (RST), so that no client
                            // takes what came for the whole body, whatever its framing
                            // (for one read until the close, a clean close would say
                            // it is complete).
                            client.abort();
                            return Err(e);
                        }
                    }
                }
                Err(e) => {
                    let status = error_status(&*e);
                    tracing::debug!(error = %e, status, "request not forwarded");
                    // The detail (upstream addresses among it) stays in the log.
                    answer(
                        &mut client,
                        status,
                        client_message(status),
                        head.close,
                        head.head_request,
                    )
                    .await?;
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
    let status = if let Some(u) = e.downcast_ref::<UpstreamError>() {
        u.status()
    } else if let Some(n) = e.downcast_ref::<crate::NoReadyEndpoints>() {
        n.status()
    } else if let Some(b) = e.downcast_ref::<crate::breaker::BreakerOpen>() {
        b.status()
    } else {
        http::StatusCode::BAD_GATEWAY
    };
    status.as_u16()
}

/// What a client is told of a failed forward.
fn client_message(status: u16) -> &'static str {
    match status {
        503 => "no upstream is ready to take the request",
        504 => "the upstream did not answer in time",
        _ => "the upstream failed to answer",
    }
}

/// Answers `status` with `message` as a text body.
pub(super) async fn answer(
    client: &mut Client<'_>,
    status: u16,
    message: &str,
    close: bool,
    head_request: bool,
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
    // An answer to HEAD has no body (RFC 9110 §9.3.2): the client would read it as the
    // start of its next answer.
    if !head_request {
        out.extend_from_slice(body.as_bytes());
    }
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
