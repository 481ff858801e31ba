//! The cluster under test: its nodes and redis-server in their namespaces, and the
//! HTTP client that talks to them.

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::net::Lab;
use super::*;

/// The test's HTTP client to the nodes (through the bridge).
#[derive(Clone)]
pub(crate) struct Http(Client<HttpConnector, Full<Bytes>>);

impl Http {
    pub(crate) fn new() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(REQUEST_TIMEOUT));
        Http(
            Client::builder(TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(5))
                .build(connector),
        )
    }

    /// One request; `None` when it failed or timed out.
    pub(crate) async fn call(
        &self,
        addr: SocketAddr,
        method: Method,
        path: &str,
        body: &str,
    ) -> Option<(StatusCode, Bytes)> {
        let req = Request::builder()
            .method(method)
            .uri(format!("http://{addr}{path}"))
            .body(Full::new(Bytes::copy_from_slice(body.as_bytes())))
            .ok()?;
        let exchange = async {
            let res = self.0.request(req).await.ok()?;
            let status = res.status();
            let body = res.into_body().collect().await.ok()?.to_bytes();
            Some((status, body))
        };
        tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .ok()
            .flatten()
    }

    /// A `GET`: its status, body, and whether the node served it from its memory tier.
    pub(crate) async fn read(
        &self,
        addr: SocketAddr,
        path: &str,
    ) -> Option<(StatusCode, Bytes, bool)> {
        let req = Request::get(format!("http://{addr}{path}"))
            .body(Full::new(Bytes::new()))
            .ok()?;
        let exchange = async {
            let res = self.0.request(req).await.ok()?;
            let (status, hit) = (
                res.status(),
                res.headers().get("x-cache").is_some_and(|v| v == "hit"),
            );
            let body = res.into_body().collect().await.ok()?.to_bytes();
            Some((status, body, hit))
        };
        tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .ok()
            .flatten()
    }
}

/// How the nodes send each other invalidations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BusKind {
    /// Each node POSTs to its peers.
    Http,
    /// Redis pub/sub on the origin's server.
    Redis,
}

/// The cluster: the lab, the redis-server and the nodes' processes.
pub(crate) struct Cluster {
    pub(crate) lab: Lab,
    pub(crate) bus: BusKind,
    pub(crate) program: String,
    pub(crate) logs: PathBuf,
    pub(crate) ttl_ms: u64,
    pub(crate) pids: Mutex<Vec<u32>>,
    pub(crate) http: Http,
}

impl Cluster {
    pub(crate) fn node_addr(&self, i: usize) -> SocketAddr {
        SocketAddr::from((self.lab.host(i).addr, PORT))
    }

    pub(crate) fn redis_addr(&self) -> Ipv4Addr {
        self.lab.host(NODES).addr
    }

    /// Waits until the origin's redis-server answers `PING` (at most 20 s).
    async fn wait_redis(&self) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr = SocketAddr::from((self.redis_addr(), REDIS_PORT));
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ping = async {
                let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
                s.write_all(b"PING\r\n").await.ok()?;
                let mut buf = [0u8; 7];
                s.read_exact(&mut buf).await.ok()?;
                (&buf == b"+PONG\r\n").then_some(())
            };
            if let Ok(Some(())) = tokio::time::timeout(Duration::from_millis(500), ping).await {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "redis-server does not answer at {addr} after 20 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub(crate) fn log(&self, i: usize) -> PathBuf {
        self.logs.join(format!("node{}.log", i + 1))
    }

    pub(crate) fn start_node(&self, i: usize) {
        let mut args = vec![
            "--id".to_owned(),
            (i + 1).to_string(),
            "--listen".to_owned(),
            self.node_addr(i).to_string(),
            "--redis".to_owned(),
            format!("{}:{REDIS_PORT}", self.redis_addr()),
            "--ttl-ms".to_owned(),
            self.ttl_ms.to_string(),
            "--bus-timeout-ms".to_owned(),
            BUS_TIMEOUT_MS.to_string(),
        ];
        if let Ok(how) = std::env::var("PARTITION_READ_VERSION") {
            args.extend(["--read-version".to_owned(), how]);
        }
        match self.bus {
            BusKind::Http => {
                for j in (0..NODES).filter(|&j| j != i) {
                    args.push("--peer".to_owned());
                    args.push(format!("http://{}/_cache/invalidate", self.node_addr(j)));
                }
            }
            BusKind::Redis => args.extend(["--bus".to_owned(), "redis".to_owned()]),
        }
        let pid = self.lab.spawn(i, &self.program, &args, &self.log(i));
        self.pids.lock().unwrap()[i] = pid;
    }

    pub(crate) async fn wait_ready(&self, i: usize) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some((StatusCode::OK, _)) = self
                .http
                .call(self.node_addr(i), Method::GET, "/status", "")
                .await
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("node {} not ready in 20 s; {}", i + 1, self.tail(i));
    }

    pub(crate) fn tail(&self, i: usize) -> String {
        let log = std::fs::read_to_string(self.log(i)).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        format!(
            "node {} log ({}):\n{}",
            i + 1,
            self.log(i).display(),
            lines[lines.len().saturating_sub(20)..].join("\n")
        )
    }

    pub(crate) fn signal(&self, i: usize, signal: nix::sys::signal::Signal) {
        let pid = self.pids.lock().unwrap()[i];
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal)
            .unwrap_or_else(|e| panic!("{signal} to node {}: {e}", i + 1));
    }

    pub(crate) async fn status(&self, i: usize) -> Option<serde_json::Value> {
        let (code, body) = self
            .http
            .call(self.node_addr(i), Method::GET, "/status", "")
            .await?;
        (code == StatusCode::OK).then(|| serde_json::from_slice(&body).ok())?
    }

    /// Starts the lab, redis-server and the nodes.
    pub(crate) async fn start(bus: BusKind, ttl_ms: u64, logs: &Path) -> Cluster {
        let mut names: Vec<String> = (1..=NODES).map(|i| format!("node{i}")).collect();
        names.push("redis".to_owned());
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let lab = Lab::create(&names).unwrap_or_else(|e| panic!("cannot build the network: {e}"));
        let cluster = Cluster {
            lab,
            bus,
            program: env!("CARGO_BIN_EXE_cluster-node").to_owned(),
            logs: logs.to_owned(),
            ttl_ms,
            pids: Mutex::new(vec![0; NODES]),
            http: Http::new(),
        };
        let redis_args: Vec<String> = [
            "--bind",
            &cluster.redis_addr().to_string(),
            "--port",
            &REDIS_PORT.to_string(),
            "--save",
            "",
            "--appendonly",
            "no",
            "--protected-mode",
            "no",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        cluster
            .lab
            .spawn(NODES, "redis-server", &redis_args, &logs.join("redis.log"));
        // The nodes' first requests go to the origin: it answers before they start (the
        // previous phase's server may still hold the address for a moment).
        cluster.wait_redis().await;
        for i in 0..NODES {
            cluster.start_node(i);
        }
        for i in 0..NODES {
            cluster.wait_ready(i).await;
        }
        cluster
    }
}
