//! A standalone caching reverse proxy, built only from `tower-cache`'s `HttpCacheLayer`
//! and hyper: put it in front of a service written in any language.
//!
//! ```sh
//! cargo run --release -p examples --example cache_proxy -- \
//!     --listen 127.0.0.1:8080 --upstream http://127.0.0.1:8000 [--memory-mb 256] [--disk-dir DIR] \
//!     [--purge-token TOKEN] [--secret SECRET --peer http://other:8080/_cache/invalidate ...]
//!     [--secret SECRET --redis redis://127.0.0.1:6379/]   (with --features redis)
//! ```
//!
//! Purges, with `--purge-token`: `PURGE /path` removes that URL, a `POST` with
//! `X-Purge-Key`, `X-Purge-Tag` (surrogate key) or `X-Purge-Pattern` removes a key, a
//! tag's entries or the keys a glob matches; each needs `Authorization: Bearer TOKEN`
//! (401 otherwise). With `--peer` (and the `--secret` every proxy shares), purges spread
//! to the other proxies over HTTP: each serves `POST /_cache/invalidate` for them. With
//! `--redis URL` instead (built with `--features redis`), they spread over that Redis
//! server's pub/sub.
//!
//! It forwards every method and header as the client sent them (the `Host` too), except
//! what a proxy must change: hop-by-hop fields are not forwarded (RFC 9110 section 7.6.1)
//! and the cache adds its validators when it revalidates. Connections to the upstream are
//! kept alive and pooled. An upstream that cannot be reached answers `502 Bad Gateway`,
//! one that does not answer within `--upstream-timeout-ms` (default 30,000) `504 Gateway
//! Timeout`. Clients may speak HTTP/1.1 or HTTP/2.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode, Uri};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use tower_cache::coordinator::{Coordinator, HttpBus};
use tower_cache::http::HttpCacheLayer;
use tower_cache::{Cache, DiskTier, MemoryTier, PurgeService};
use tower_layer::Layer;

/// The body every part of the proxy speaks.
pub type ProxyBody = BoxBody<Bytes, hyper::Error>;

/// The proxy's settings, from the command line.
#[derive(Debug, Clone)]
pub struct Args {
    /// Where to listen.
    pub listen: SocketAddr,
    /// The upstream's base URL, `http://host:port`.
    pub upstream: Uri,
    /// The memory tier's byte bound, in MiB.
    pub memory_mb: u64,
    /// A directory for the disk tier, if any.
    pub disk_dir: Option<PathBuf>,
    /// How long to wait for the upstream's response head.
    pub upstream_timeout: Duration,
    /// The bearer token purges need; no purges without it.
    pub purge_token: Option<String>,
    /// The secret the proxies share to sign invalidations.
    pub secret: Option<String>,
    /// Other proxies' invalidation endpoints.
    pub peers: Vec<String>,
    /// A Redis server whose pub/sub carries purges between proxies, instead of
    /// `--peer` (feature `redis`).
    pub redis: Option<String>,
}

impl Args {
    /// Parses `--listen`, `--upstream`, `--memory-mb`, `--disk-dir`,
    /// `--upstream-timeout-ms`; the message of an error says what to change.
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Self, String> {
        let mut listen = None;
        let mut upstream = None;
        let mut memory_mb = 256;
        let mut disk_dir = None;
        let mut timeout_ms = 30_000u64;
        let mut purge_token = None;
        let mut secret = None;
        let mut peers = Vec::new();
        let mut redis = None;
        let mut it = args.into_iter();
        while let Some(flag) = it.next() {
            let mut value = || it.next().ok_or(format!("{flag} needs a value"));
            match flag.as_str() {
                "--listen" => {
                    listen = Some(
                        value()?
                            .parse::<SocketAddr>()
                            .map_err(|e| format!("--listen: {e}; give host:port"))?,
                    )
                }
                "--upstream" => {
                    let v = value()?;
                    let uri: Uri = v.parse().map_err(|e| format!("--upstream {v}: {e}"))?;
                    if uri.scheme_str() != Some("http") || uri.authority().is_none() {
                        return Err(format!(
                            "--upstream {v}: give an http://host:port URL (https is not supported)"
                        ));
                    }
                    upstream = Some(uri);
                }
                "--memory-mb" => {
                    memory_mb = value()?
                        .parse()
                        .map_err(|e| format!("--memory-mb: {e}; give a whole number"))?;
                    if memory_mb == 0 {
                        return Err("--memory-mb is 0; give the memory tier at least 1".into());
                    }
                }
                "--disk-dir" => disk_dir = Some(PathBuf::from(value()?)),
                "--upstream-timeout-ms" => {
                    timeout_ms = value()?
                        .parse()
                        .map_err(|e| format!("--upstream-timeout-ms: {e}"))?;
                }
                "--purge-token" => purge_token = Some(value()?),
                "--secret" => secret = Some(value()?),
                "--peer" => peers.push(value()?),
                "--redis" => {
                    let url = value()?;
                    if !cfg!(feature = "redis") {
                        return Err(format!(
                            "--redis {url}: this build has no Redis bus; rebuild with --features redis"
                        ));
                    }
                    redis = Some(url);
                }
                other => return Err(format!("unknown flag {other}")),
            }
        }
        Ok(Self {
            listen: listen.ok_or("--listen is required, e.g. --listen 127.0.0.1:8080")?,
            upstream: upstream
                .ok_or("--upstream is required, e.g. --upstream http://127.0.0.1:8000")?,
            memory_mb,
            disk_dir,
            upstream_timeout: Duration::from_millis(timeout_ms.max(1)),
            peers: if !peers.is_empty() && secret.is_none() {
                return Err("--peer needs --secret, the same on every proxy".into());
            } else if !peers.is_empty() && redis.is_some() {
                return Err("give either --peer or --redis, not both".into());
            } else {
                peers
            },
            redis: if redis.is_some() && secret.is_none() {
                return Err("--redis needs --secret, the same on every proxy".into());
            } else {
                redis
            },
            purge_token,
            secret,
        })
    }
}

fn full(status: StatusCode, text: &'static str) -> Response<ProxyBody> {
    let mut res = Response::new(
        Full::new(Bytes::from_static(text.as_bytes()))
            .map_err(|never| match never {})
            .boxed(),
    );
    *res.status_mut() = status;
    res
}

/// The request as the upstream must see it: its URL on the upstream, hop-by-hop fields
/// removed.
fn to_upstream(upstream: &Uri, mut req: Request<ProxyBody>) -> Result<Request<ProxyBody>, ()> {
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let uri = Uri::builder()
        .scheme("http")
        .authority(upstream.authority().ok_or(())?.clone())
        .path_and_query(path)
        .build()
        .map_err(drop)?;
    *req.uri_mut() = uri;
    let headers = req.headers_mut();
    let named: Vec<http::HeaderName> = headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| http::HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        http::header::CONNECTION,
        http::header::TE,
        http::header::TRAILER,
        http::header::TRANSFER_ENCODING,
        http::header::UPGRADE,
        http::header::PROXY_AUTHORIZATION,
    ] {
        headers.remove(name);
    }
    headers.remove("keep-alive");
    Ok(req)
}

/// What every response of the proxy carries.
type AnyBody =
    http_body_util::combinators::UnsyncBoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// Sends a request to the invalidation endpoint, the purge service or the cache.
async fn route<C>(
    cache: C,
    purge: Option<PurgeService>,
    endpoint: Option<tower_cache::coordinator::InvalidateEndpoint>,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<AnyBody>, Infallible>
where
    C: tower::Service<
        Request<ProxyBody>,
        Response = Response<tower_cache::http::HttpCacheBody<ProxyBody>>,
        Error = Infallible,
    >,
{
    use tower::ServiceExt;
    let never = |never: Infallible| -> Box<dyn std::error::Error + Send + Sync> { match never {} };
    if let Some(e) = endpoint.filter(|_| req.uri().path() == "/_cache/invalidate") {
        let res = e.oneshot(req).await?;
        return Ok(res.map(|b| b.map_err(never).boxed_unsync()));
    }
    if let Some(p) = purge.filter(|_| PurgeService::is_purge(&req)) {
        let res = p.oneshot(req).await?;
        return Ok(res.map(|b| b.map_err(never).boxed_unsync()));
    }
    let res = cache.oneshot(req.map(BodyExt::boxed)).await?;
    Ok(res.map(BodyExt::boxed_unsync))
}

/// A coordinator whose purges travel over Redis pub/sub.
#[cfg(feature = "redis")]
fn redis_node(store: Cache, secret: &str, url: &str) -> std::io::Result<Coordinator> {
    let bus = tower_cache::coordinator::RedisBus::connect(url, "cache_proxy:invalidate")
        .map_err(std::io::Error::other)?;
    Coordinator::builder(store, bus)
        .secret(secret.as_bytes())
        .start()
        .map_err(std::io::Error::other)
}

/// Without the `redis` feature, `Args::parse` refuses `--redis`.
#[cfg(not(feature = "redis"))]
fn redis_node(_store: Cache, _secret: &str, url: &str) -> std::io::Result<Coordinator> {
    Err(std::io::Error::other(format!(
        "--redis {url}: this build has no Redis bus; rebuild with --features redis"
    )))
}

/// Runs the proxy until the process is stopped.
pub async fn run(args: Args) -> std::io::Result<()> {
    let memory = MemoryTier::builder()
        .bytes_only(args.memory_mb.saturating_mul(1 << 20))
        .build()
        .map_err(std::io::Error::other)?;
    let mut store = Cache::new(memory);
    if let Some(dir) = &args.disk_dir {
        store = store.with_disk(
            DiskTier::builder(dir)
                .open()
                .map_err(std::io::Error::other)?,
        );
    }
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<HttpConnector, ProxyBody> = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .build(connector);
    let upstream = args.upstream.clone();
    let timeout = args.upstream_timeout;
    let forward = tower::service_fn(move |req: Request<ProxyBody>| {
        let (client, upstream) = (client.clone(), upstream.clone());
        async move {
            let Ok(req) = to_upstream(&upstream, req) else {
                return Ok::<_, Infallible>(full(StatusCode::BAD_REQUEST, "bad request target\n"));
            };
            Ok(
                match tokio::time::timeout(timeout, client.request(req)).await {
                    Ok(Ok(res)) => res.map(BodyExt::boxed),
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "upstream unreachable");
                        full(StatusCode::BAD_GATEWAY, "upstream unreachable\n")
                    }
                    Err(_) => full(StatusCode::GATEWAY_TIMEOUT, "upstream timed out\n"),
                },
            )
        }
    });
    let cache = HttpCacheLayer::new(store.clone()).layer(forward);
    // Purges, and the endpoint other proxies send theirs to.
    let mut endpoint = None;
    let mut purge = None;
    if let Some(token) = &args.purge_token {
        purge = Some(
            if let (Some(secret), Some(url)) = (&args.secret, &args.redis) {
                PurgeService::cluster(redis_node(store.clone(), secret, url)?, token)
            } else if let Some(secret) = &args.secret {
                let mut bus = HttpBus::builder(secret.as_bytes());
                for p in &args.peers {
                    bus = bus.peer(p.clone());
                }
                let bus = bus.build().map_err(std::io::Error::other)?;
                endpoint = Some(bus.endpoint());
                let node = Coordinator::builder(store.clone(), bus)
                    .secret(secret.as_bytes())
                    .start()
                    .map_err(std::io::Error::other)?;
                PurgeService::cluster(node, token)
            } else {
                PurgeService::new(store.clone(), token)
            }
            .map_err(std::io::Error::other)?,
        );
    }
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    println!(
        "cache_proxy: listening on {}, upstream {}",
        listener.local_addr()?,
        args.upstream
    );
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let (cache, purge, endpoint) = (cache.clone(), purge.clone(), endpoint.clone());
        tokio::spawn(async move {
            let svc = tower::service_fn(move |req: Request<hyper::body::Incoming>| {
                let (cache, purge, endpoint) = (cache.clone(), purge.clone(), endpoint.clone());
                async move { route(cache, purge, endpoint, req).await }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), TowerToHyperService::new(svc))
                .await;
        });
    }
}

/// The example's `main`: parses the process's arguments and runs the proxy.
pub fn main() {
    let args = match Args::parse(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("cache_proxy: {e}");
            std::process::exit(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cache_proxy: cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = rt.block_on(run(args)) {
        eprintln!("cache_proxy: {e}");
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::Args;

    fn parse(extra: &[&str]) -> Result<Args, String> {
        let base = [
            "--listen",
            "127.0.0.1:8080",
            "--upstream",
            "http://127.0.0.1:8000",
        ];
        Args::parse(base.iter().chain(extra).map(|s| s.to_string()))
    }

    #[test]
    fn bad_flags_say_what_to_change() {
        assert!(parse(&[]).is_ok());
        let e = parse(&["--peer", "http://x/_cache/invalidate"]).unwrap_err();
        assert!(e.contains("--peer needs --secret"), "{e}");
        let e = parse(&["--memory-mb", "0"]).unwrap_err();
        assert!(e.contains("at least 1"), "{e}");
        let e = parse(&["--bogus"]).unwrap_err();
        assert!(e.contains("unknown flag --bogus"), "{e}");
        let e = Args::parse(["--listen".to_string()]).unwrap_err();
        assert!(e.contains("--listen needs a value"), "{e}");
    }

    #[test]
    fn redis_needs_the_feature_a_secret_and_no_peers() {
        let url = "redis://127.0.0.1:6379/";
        let e = parse(&["--redis", url]).unwrap_err();
        if cfg!(feature = "redis") {
            assert!(e.contains("--redis needs --secret"), "{e}");
            let ok = parse(&["--secret", "s", "--redis", url]).unwrap();
            assert_eq!(ok.redis.as_deref(), Some(url));
            let e = parse(&["--secret", "s", "--redis", url, "--peer", "http://x/"]).unwrap_err();
            assert!(e.contains("either --peer or --redis"), "{e}");
        } else {
            assert!(e.contains("rebuild with --features redis"), "{e}");
        }
    }
}
