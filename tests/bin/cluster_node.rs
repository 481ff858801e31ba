//! One node of a cache cluster, for the partition bench: a [`Coordinator`] with a memory
//! tier over an origin (a redis-server every node shares), an [`HttpBus`] to its peers,
//! and a small HTTP API.
//!
//! ```text
//! cluster-node --id N --listen ADDR:PORT --redis ADDR:PORT --ttl-ms MS
//!              [--bus http|redis] [--read-version previous-ms|hlc] [--bus-timeout-ms MS]
//!              [--peer http://ADDR:PORT/_cache/invalidate]...
//! ```
//!
//! The bus is the HTTP bus to the `--peer`s (the default), or, with `--bus redis` (cargo
//! feature `redis`), Redis pub/sub on the origin's server.
//!
//! - `PUT /kv/KEY` (body: the value, a letter then a number, `w17`): writes the value to
//!   the origin, then invalidates `KEY` on every node; `200` once both are done, `503`
//!   when the origin cannot be reached (the write may or may not have landed, now or
//!   later: a socket closed with the command unsent keeps sending it). The write is
//!   fenced by its number: it lands only if the stored value's number is lower (a script
//!   run by the origin), so a delayed older write never overwrites a newer one.
//! - `GET /kv/KEY`: the value through the cache: the memory tier, else the origin (the
//!   value then cached for the TTL under a version from before the origin was read, so an
//!   invalidation that overtakes the read keeps it out); header `x-cache: hit|miss`; `404`
//!   when the origin has no such key, `503` when it cannot be reached.
//!
//!   That version is the node's next version (`--read-version hlc`, the default): across
//!   nodes an entry outlives an invalidation only from a later millisecond, so another
//!   node's invalidation in the read's millisecond removes it whatever the counters say.
//!   `--read-version previous-ms` takes the start of the millisecond before instead (what
//!   the bench did before that rule).
//! - `GET /status`: the coordinator's status as JSON.
//! - `POST /_cache/invalidate`: the bus endpoint the peers send to.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tower_cache::coordinator::{Coordinator, HttpBus, InvalidateEndpoint};
use tower_cache::{Cache, MemoryTier, Tags, WriteTiers};
use tower_service::Service;

/// The secret every node of the bench shares.
const SECRET: &[u8] = b"partition bench: a secret all nodes share";
/// Sets `KEYS[1]` to `ARGV[1]` unless the stored value's number (after its first byte)
/// is at least as high.
const FENCED_SET: &str = "local cur = redis.call('GET', KEYS[1]) \
    if cur and tonumber(string.sub(cur, 2)) and \
       tonumber(string.sub(cur, 2)) >= tonumber(string.sub(ARGV[1], 2)) then return 0 end \
    redis.call('SET', KEYS[1], ARGV[1]) return 1";
/// How long one exchange with the origin may take.
const ORIGIN_TIMEOUT: Duration = Duration::from_millis(800);

struct Config {
    id: u64,
    listen: SocketAddr,
    redis: SocketAddr,
    ttl: Duration,
    bus_timeout: Duration,
    redis_bus: bool,
    read_version_hlc: bool,
    peers: Vec<String>,
}

fn parse(args: &[String]) -> Result<Config, String> {
    let usage = "usage: cluster-node --id N --listen ADDR:PORT --redis ADDR:PORT --ttl-ms MS \
                 [--bus http|redis] [--read-version previous-ms|hlc] [--bus-timeout-ms MS] \
                 [--peer URL]...";
    let (mut id, mut listen, mut redis, mut ttl) = (None, None, None, None);
    let (mut bus_timeout, mut peers) = (Duration::from_millis(500), Vec::new());
    let (mut redis_bus, mut read_version_hlc) = (false, true);
    let mut it = args.iter().skip(1);
    while let Some(flag) = it.next() {
        let value = it
            .next()
            .ok_or_else(|| format!("{flag} needs a value; {usage}"))?;
        let bad = |e: &dyn std::fmt::Display| format!("{flag} {value}: {e}");
        match flag.as_str() {
            "--id" => id = Some(value.parse::<u64>().map_err(|e| bad(&e))?),
            "--listen" => listen = Some(value.parse::<SocketAddr>().map_err(|e| bad(&e))?),
            "--redis" => redis = Some(value.parse::<SocketAddr>().map_err(|e| bad(&e))?),
            "--ttl-ms" => {
                ttl = Some(Duration::from_millis(
                    value.parse::<u64>().map_err(|e| bad(&e))?,
                ));
            }
            "--bus-timeout-ms" => {
                bus_timeout = Duration::from_millis(value.parse::<u64>().map_err(|e| bad(&e))?);
            }
            "--peer" => peers.push(value.clone()),
            "--read-version" => {
                read_version_hlc = match value.as_str() {
                    "previous-ms" => false,
                    "hlc" => true,
                    _ => return Err(format!("--read-version {value}: give previous-ms or hlc")),
                };
            }
            "--bus" => {
                redis_bus = match value.as_str() {
                    "http" => false,
                    "redis" => true,
                    _ => return Err(format!("--bus {value}: give http or redis")),
                };
            }
            _ => return Err(format!("unknown flag {flag}; {usage}")),
        }
    }
    Ok(Config {
        id: id.ok_or(usage)?,
        listen: listen.ok_or(usage)?,
        redis: redis.ok_or(usage)?,
        ttl: ttl.ok_or(usage)?,
        bus_timeout,
        redis_bus,
        read_version_hlc,
        peers,
    })
}

/// A bulk string of the RESP protocol.
fn bulk(out: &mut Vec<u8>, part: &[u8]) {
    out.extend_from_slice(format!("${}\r\n", part.len()).as_bytes());
    out.extend_from_slice(part);
    out.extend_from_slice(b"\r\n");
}

/// Sends one command to redis-server on a fresh connection and reads its answer:
/// `Some(bytes)` for a bulk string, a simple `+OK` or an integer, `None` for a nil.
async fn redis(addr: SocketAddr, command: &[&[u8]]) -> Result<Option<Bytes>, String> {
    let exchange = async {
        let mut out = format!("*{}\r\n", command.len()).into_bytes();
        for part in command {
            bulk(&mut out, part);
        }
        let mut stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        stream
            .write_all(&out)
            .await
            .map_err(|e| format!("write: {e}"))?;
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        reader
            .read_line(&mut line)
            .await
            .map_err(|e| format!("read: {e}"))?;
        let line = line.trim_end();
        match line.as_bytes().first() {
            Some(b'+' | b':') => Ok(Some(Bytes::copy_from_slice(&line.as_bytes()[1..]))),
            Some(b'$') => {
                let len: i64 = line[1..].parse().map_err(|e| format!("length: {e}"))?;
                if len < 0 {
                    return Ok(None);
                }
                let mut body = vec![0; len as usize + 2];
                reader
                    .read_exact(&mut body)
                    .await
                    .map_err(|e| format!("read: {e}"))?;
                body.truncate(len as usize);
                Ok(Some(body.into()))
            }
            _ => Err(format!("unexpected answer {line:?}")),
        }
    };
    tokio::time::timeout(ORIGIN_TIMEOUT, exchange)
        .await
        .map_err(|_| "origin timed out".to_owned())?
}

#[derive(Clone)]
struct Node {
    coordinator: Coordinator,
    /// The HTTP bus's endpoint (none on the Redis bus).
    endpoint: Option<InvalidateEndpoint>,
    redis: SocketAddr,
    ttl: Duration,
    read_version_hlc: bool,
}

/// Bits of a version below its Unix milliseconds (a counter and the node id).
const BELOW_MS: u32 = 20;

fn answer(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut res = Response::new(Full::new(body.into()));
    *res.status_mut() = status;
    res
}

impl Node {
    async fn handle(self, req: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
        let path = req.uri().path().to_owned();
        let key = path.strip_prefix("/kv/").map(str::to_owned);
        match (req.method().clone(), key) {
            (Method::GET, Some(key)) => self.read(&key).await,
            (Method::PUT, Some(key)) => {
                let Ok(body) = Limited::new(req.into_body(), 4096).collect().await else {
                    return answer(StatusCode::BAD_REQUEST, "unreadable body");
                };
                self.write(&key, body.to_bytes()).await
            }
            (Method::GET, None) if path == "/status" => self.status(),
            (Method::POST, None) if path == "/_cache/invalidate" => {
                let Some(mut endpoint) = self.endpoint.clone() else {
                    return answer(StatusCode::NOT_FOUND, "no HTTP bus here");
                };
                let _ = std::future::poll_fn(|cx| {
                    Service::<Request<hyper::body::Incoming>>::poll_ready(&mut endpoint, cx)
                })
                .await;
                match endpoint.call(req).await {
                    Ok(res) => res,
                    Err(never) => match never {},
                }
            }
            _ => answer(StatusCode::NOT_FOUND, "no such route"),
        }
    }

    async fn read(&self, key: &str) -> Response<Full<Bytes>> {
        // From before the origin is read: an invalidation applied meanwhile is newer, and
        // keeps the value read out of the cache (see the module docs).
        let version = if self.read_version_hlc {
            self.coordinator.next_version()
        } else {
            ((self.coordinator.next_version() >> BELOW_MS).saturating_sub(1)) << BELOW_MS
        };
        if let Some(value) = self.coordinator.cache().get(key).await {
            let mut res = answer(StatusCode::OK, value);
            res.headers_mut()
                .insert("x-cache", http::HeaderValue::from_static("hit"));
            return res;
        }
        match redis(self.redis, &[b"GET", key.as_bytes()]).await {
            Ok(Some(value)) => {
                let _ = self
                    .coordinator
                    .set_versioned(
                        key,
                        value.clone(),
                        self.ttl,
                        version,
                        Tags::default(),
                        WriteTiers::ALL,
                    )
                    .await;
                let mut res = answer(StatusCode::OK, value);
                res.headers_mut()
                    .insert("x-cache", http::HeaderValue::from_static("miss"));
                res
            }
            Ok(None) => answer(StatusCode::NOT_FOUND, "no such key"),
            Err(e) => answer(StatusCode::SERVICE_UNAVAILABLE, format!("origin: {e}")),
        }
    }

    async fn write(&self, key: &str, value: Bytes) -> Response<Full<Bytes>> {
        let version = value
            .get(1..)
            .and_then(|n| std::str::from_utf8(n).ok()?.parse::<u64>().ok());
        if version.is_none() {
            return answer(
                StatusCode::BAD_REQUEST,
                "give a value: a letter, then a number",
            );
        }
        let set = [b"EVAL", FENCED_SET.as_bytes(), b"1", key.as_bytes(), &value];
        if let Err(e) = redis(self.redis, &set).await {
            return answer(StatusCode::SERVICE_UNAVAILABLE, format!("origin: {e}"));
        }
        match self.coordinator.invalidate(key).await {
            Ok(_) => answer(StatusCode::OK, "ok"),
            Err(e) => answer(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("invalidate: {e}"),
            ),
        }
    }

    fn status(&self) -> Response<Full<Bytes>> {
        let s = self.coordinator.status();
        let body = serde_json::json!({
            "node": s.node,
            "published": s.published,
            "received": s.received,
            "applied": s.applied,
            "memory_flushes": s.memory_flushes,
            "sequence_gaps": s.sequence_gaps,
            "duplicates": s.duplicates,
            "older_incarnation": s.older_incarnation,
            "outside_window": s.outside_window,
            "clock_skew": s.clock_skew,
            "rejected": s.rejected,
            "busy": s.busy,
            "publish_errors": s.publish_errors,
            "digests_sent": s.digests_sent,
            "digests_received": s.digests_received,
            "peer_nodes": s.peer_nodes.iter().map(|p| serde_json::json!({
                "node": p.node,
                "incarnation": p.incarnation,
                "last_seq": p.last_seq,
            })).collect::<Vec<_>>(),
            "links": s.links.iter().map(|l| serde_json::json!({
                "target": l.target,
                "up": l.up,
                "failures": l.failures,
            })).collect::<Vec<_>>(),
        });
        answer(StatusCode::OK, body.to_string())
    }
}

/// A coordinator on Redis pub/sub, on the origin's server.
#[cfg(feature = "redis")]
fn redis_bus(cache: Cache, config: &Config) -> Result<Coordinator, Box<dyn std::error::Error>> {
    let bus = tower_cache::coordinator::RedisBus::connect(
        &format!("redis://{}/", config.redis),
        "partition-bench",
    )?;
    Ok(Coordinator::builder(cache, bus)
        .node_id(config.id)
        .secret(SECRET)
        .start()?)
}

#[cfg(not(feature = "redis"))]
fn redis_bus(_: Cache, _: &Config) -> Result<Coordinator, Box<dyn std::error::Error>> {
    Err("--bus redis needs the cargo feature `redis`".into())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let config = parse(&args)?;
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cache = Cache::new(MemoryTier::builder().build()?);
    let (coordinator, endpoint) = if config.redis_bus {
        (redis_bus(cache, &config)?, None)
    } else {
        let mut bus = HttpBus::builder(SECRET).timeout(config.bus_timeout);
        for peer in &config.peers {
            bus = bus.peer(peer.clone());
        }
        let bus = bus.build()?;
        let endpoint = bus.endpoint();
        let coordinator = Coordinator::builder(cache, bus)
            .node_id(config.id)
            .secret(SECRET)
            .start()?;
        (coordinator, Some(endpoint))
    };
    let node = Node {
        coordinator,
        endpoint,
        redis: config.redis,
        ttl: config.ttl,
        read_version_hlc: config.read_version_hlc,
    };
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    println!("listening {}", listener.local_addr()?);
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let node = node.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let node = node.clone();
                async move { Ok::<_, Infallible>(node.handle(req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                .await;
        });
    }
}
