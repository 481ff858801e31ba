//! Shared helpers for the workspace's integration tests.
//!
//! Every integration test under `tests/tests/<area>/main.rs` uses these: a free loopback
//! port, a small HTTP/1.1 server on 127.0.0.1 that can be shut down gracefully or killed,
//! a bounded HTTP client for asserting on that server, and tracing initialisation.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use support::{get, TestServer};
//! use bytes::Bytes;
//! use http_body_util::Full;
//!
//! support::init_tracing();
//! let server = TestServer::start(|_req| async { http::Response::new(Full::new(Bytes::from("hi"))) }).await?;
//! let (status, body) = get(server.addr(), "/").await?;
//! assert_eq!(status, 200);
//! assert_eq!(body, "hi");
//! server.shutdown().await;
//! # Ok(()) }
//! ```

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener as StdTcpListener};
use std::sync::Once;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};

/// How long [`get`] waits for a whole exchange before it gives up.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);

/// A loopback port that was free a moment ago.
///
/// The port is found by binding `127.0.0.1:0` and releasing it, so another process may
/// take it before the caller binds it; prefer [`TestServer::start`], which keeps its
/// listener, when the caller does not need to know the port in advance.
pub fn free_port() -> io::Result<u16> {
    let listener = StdTcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?.port())
}

/// A loopback address on a port that was free a moment ago (see [`free_port`]).
pub fn free_addr() -> io::Result<SocketAddr> {
    Ok(SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()?)))
}

/// Installs a `tracing` subscriber that writes through the test harness's capture.
///
/// The filter comes from `RUST_LOG` (default `warn`). Safe to call from every test: only
/// the first call installs anything.
pub fn init_tracing() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
        // Another test harness may have installed a global subscriber first; that one wins.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
    });
}

/// A small HTTP/1.1 server on 127.0.0.1 for tests.
///
/// Each request is answered by the handler given to [`TestServer::start`]. Dropping the
/// server kills it like [`TestServer::kill`].
#[derive(Debug)]
pub struct TestServer {
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl TestServer {
    /// Starts a server on a fresh loopback port.
    pub async fn start<F, Fut>(handler: F) -> io::Result<Self>
    where
        F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Response<Full<Bytes>>> + Send + 'static,
    {
        Self::start_on(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), handler).await
    }

    /// Starts a server on the given address, e.g. to bring a killed server back on the
    /// port its clients know. Only loopback addresses are accepted.
    pub async fn start_on<F, Fut>(addr: SocketAddr, handler: F) -> io::Result<Self>
    where
        F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Response<Full<Bytes>>> + Send + 'static,
    {
        if !addr.ip().is_loopback() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("test servers bind loopback addresses only, not {addr}"),
            ));
        }
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(serve(listener, handler, rx));
        Ok(Self {
            addr,
            shutdown: Some(tx),
            task: Some(task),
        })
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, lets requests in flight finish, then returns.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    /// Closes the listener and every connection at once, as a crashed process would.
    pub async fn kill(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

async fn serve<F, Fut>(listener: TcpListener, handler: F, mut shutdown: oneshot::Receiver<()>)
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let graceful = GracefulShutdown::new();
    // Connections live in this set, so aborting the accept task (kill) drops them all.
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let handler = handler.clone();
                let svc = hyper::service::service_fn(move |req| {
                    let fut = handler(req);
                    async move { Ok::<_, Infallible>(fut.await) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc);
                let conn = graceful.watch(conn);
                connections.spawn(async move {
                    let _ = conn.await;
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    let _ = tokio::time::timeout(Duration::from_secs(10), graceful.shutdown()).await;
    connections.shutdown().await;
}

/// Sends `GET path` to `addr` on a fresh connection and returns the status and body.
///
/// Bounded by [`CLIENT_TIMEOUT`]; a timeout is an [`io::ErrorKind::TimedOut`] error.
pub async fn get(addr: SocketAddr, path: &str) -> io::Result<(StatusCode, Bytes)> {
    let req = Request::get(path)
        .header(http::header::HOST, addr.to_string())
        .body(Empty::<Bytes>::new())
        .map_err(io::Error::other)?;
    send(addr, req).await
}

/// Sends `req` to `addr` on a fresh connection and returns the status and body.
///
/// Bounded by [`CLIENT_TIMEOUT`]; a timeout is an [`io::ErrorKind::TimedOut`] error.
pub async fn send<B>(addr: SocketAddr, req: Request<B>) -> io::Result<(StatusCode, Bytes)>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    exchange(addr, req, CLIENT_TIMEOUT)
        .await
        .map(|(status, _, body)| (status, body))
}

/// Sends `req` to `addr` on a fresh connection; the status, headers and body, within
/// `within` (a timeout is an [`io::ErrorKind::TimedOut`] error).
pub async fn exchange<B>(
    addr: SocketAddr,
    req: Request<B>,
    within: Duration,
) -> io::Result<(StatusCode, http::HeaderMap, Bytes)>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let exchange = async {
        let stream = TcpStream::connect(addr).await?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(io::Error::other)?;
        let conn = tokio::spawn(conn);
        let res = sender.send_request(req).await.map_err(io::Error::other)?;
        let (parts, body) = res.into_parts();
        let body = body.collect().await.map_err(io::Error::other)?.to_bytes();
        conn.abort();
        Ok((parts.status, parts.headers, body))
    };
    tokio::time::timeout(within, exchange)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "test client timed out"))?
}

/// A `redis-server` child process on a free loopback port, killed when dropped.
///
/// `.ci/run` installs `redis-server` when it is missing; the tests that need one sit
/// behind the `redis` feature.
#[derive(Debug)]
pub struct RedisServer {
    child: std::process::Child,
    /// The server's port on 127.0.0.1.
    pub port: u16,
}

impl RedisServer {
    /// Starts one and waits until it accepts connections (at most 20 seconds).
    pub fn start() -> io::Result<RedisServer> {
        let port = free_port()?;
        let child = std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .map_err(|e| io::Error::other(format!("redis-server: {e} (is it installed?)")))?;
        let mut server = RedisServer { child, port };
        let start = std::time::Instant::now();
        while std::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err() {
            if start.elapsed() > std::time::Duration::from_secs(20) {
                let _ = server.child.kill();
                return Err(io::Error::other("redis-server did not start in 20 s"));
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        Ok(server)
    }

    /// The server's URL.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// How many clients subscribe to `channel` now (`PUBSUB NUMSUB`), so a test can
    /// wait until its subscribers are in place before it publishes.
    pub fn subscribers(&self, channel: &str) -> io::Result<u64> {
        use std::io::{BufRead, Write};
        let mut stream = std::net::TcpStream::connect((Ipv4Addr::LOCALHOST, self.port))?;
        stream.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
        write!(
            stream,
            "*3\r\n$6\r\nPUBSUB\r\n$6\r\nNUMSUB\r\n${}\r\n{channel}\r\n",
            channel.len()
        )?;
        // The reply: *2, $len, the channel, :count.
        let mut reader = io::BufReader::new(stream);
        let mut line = String::new();
        for _ in 0..4 {
            line.clear();
            reader.read_line(&mut line)?;
        }
        line.trim()
            .strip_prefix(':')
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| io::Error::other(format!("unexpected PUBSUB reply {line:?}")))
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A process scaler's settings for `program` (the tests' `instance-server`, whose path
/// only a test knows: `env!("CARGO_BIN_EXE_instance-server")`) started as
/// `program --port {port}` on 50 ports from a free one, checked every 50 ms.
pub fn instance_server_config(program: &str) -> io::Result<tower_autoscale::ProcessConfig> {
    let base = free_port()?.clamp(20_000, 60_000);
    let mut cfg = tower_autoscale::ProcessConfig::new(
        program,
        vec!["--port".into(), "{port}".into()],
        (base, base + 50),
    );
    cfg.check_interval = std::time::Duration::from_millis(50);
    cfg.start_timeout = std::time::Duration::from_secs(20);
    cfg.drain_grace = std::time::Duration::from_secs(10);
    cfg.stop_timeout = std::time::Duration::from_secs(2);
    Ok(cfg)
}

/// A whole fleet (`examples::fleet`) running as a child process of the test: the
/// `fleet` binary of this package with `--port 0 --view plain` and the test's flags,
/// its scaling token set through `FLEET_TOKEN`, its data under a temporary directory.
/// Killed (with its training instances, which die with it) when dropped.
#[derive(Debug)]
pub struct FleetProcess {
    child: tokio::process::Child,
    /// The gateway's address.
    pub gateway: SocketAddr,
    /// The scaling token.
    pub token: String,
    /// What the fleet printed so far (and goes on printing), line by line.
    pub output: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    _data: tempfile::TempDir,
}

impl FleetProcess {
    /// Starts `program` (the `fleet` binary) with `args` and waits (at most 60 s) until
    /// its gateway is up.
    pub async fn start(program: &str, args: &[&str]) -> io::Result<FleetProcess> {
        use tokio::io::AsyncBufReadExt;
        let data = tempfile::tempdir()?;
        let token = format!("test-token-{}", free_port()?);
        let mut child = tokio::process::Command::new(program)
            .args(["--port", "0", "--view", "plain", "--data-dir"])
            .arg(data.path())
            .args(args)
            .env("FLEET_TOKEN", &token)
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .kill_on_drop(true)
            .spawn()?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| io::Error::other("no stdout"))?;
        let output: std::sync::Arc<std::sync::Mutex<Vec<String>>> = Default::default();
        let (tx, rx) = oneshot::channel::<SocketAddr>();
        let out = output.clone();
        tokio::spawn(async move {
            let mut tx = Some(tx);
            let mut lines = tokio::io::BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let addr = line
                    .strip_prefix("gateway on http://")
                    .and_then(|rest| rest.split_whitespace().next()?.parse().ok());
                // Kept before the start is announced, so the caller sees the line.
                out.lock().unwrap_or_else(|e| e.into_inner()).push(line);
                if let (Some(addr), Some(tx)) = (addr, tx.take()) {
                    let _ = tx.send(addr);
                }
            }
        });
        let gateway = tokio::time::timeout(Duration::from_secs(60), rx)
            .await
            .map_err(|_| {
                io::Error::new(io::ErrorKind::TimedOut, "the fleet did not start in 60 s")
            })?
            .map_err(|_| io::Error::other("the fleet exited before its gateway was up"))?;
        Ok(FleetProcess {
            child,
            gateway,
            token,
            output,
            _data: data,
        })
    }

    /// The fleet's process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Waits (at most `within`) for the fleet to exit; its exit status.
    pub async fn wait(&mut self, within: Duration) -> io::Result<std::process::ExitStatus> {
        tokio::time::timeout(within, self.child.wait())
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "the fleet did not exit"))?
    }

    /// Sends `method path` with an optional bearer token, `x-user-id` and JSON body to
    /// the gateway; the status, the `x-request-id` it answered with, and the body as JSON
    /// (or `null`).
    pub async fn call(
        &self,
        method: http::Method,
        path: &str,
        bearer: Option<&str>,
        user: Option<u64>,
        body: Option<&str>,
    ) -> io::Result<(StatusCode, Option<String>, serde_json::Value)> {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, self.gateway.to_string());
        if let Some(t) = bearer {
            req = req.header(http::header::AUTHORIZATION, format!("Bearer {t}"));
        }
        if let Some(u) = user {
            req = req.header("x-user-id", u.to_string());
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or("").to_string())))
            .map_err(io::Error::other)?;
        let (status, headers, body) = exchange(self.gateway, req, Duration::from_secs(30)).await?;
        let id = headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let json = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
        Ok((status, id, json))
    }

    /// `PUT path` with the JSON `body` and the fleet's token (the gateway asks for it on
    /// every write); the status and the answer as JSON.
    pub async fn put(&self, path: &str, body: &str) -> io::Result<(StatusCode, serde_json::Value)> {
        let (status, _, json) = self
            .call(http::Method::PUT, path, Some(&self.token), None, Some(body))
            .await?;
        Ok((status, json))
    }

    /// `GET /api/v1/system/overview`.
    pub async fn overview(&self) -> io::Result<serde_json::Value> {
        Ok(self
            .call(
                http::Method::GET,
                "/api/v1/system/overview",
                None,
                None,
                None,
            )
            .await?
            .2)
    }

    /// The overview's entry for `service`.
    pub async fn service(&self, service: &str) -> io::Result<serde_json::Value> {
        let o = self.overview().await?;
        o["services"]
            .as_array()
            .and_then(|s| s.iter().find(|s| s["name"] == service))
            .cloned()
            .ok_or_else(|| io::Error::other(format!("no service {service} in {o}")))
    }
}
