//! A standalone caching reverse proxy, built only from `tower-cache`'s `HttpCacheLayer`
//! and hyper: put it in front of a service written in any language.
//!
//! ```sh
//! cargo run --release -p examples --example cache_proxy -- \
//!     --listen 127.0.0.1:8080 --upstream http://127.0.0.1:8000 [--memory-mb 256] [--disk-dir DIR] \
//!     [--header-read-timeout-ms 30000] [--idle-timeout-ms 60000] [--max-connections 10000] \
//!     [--key-forwarded] [--target-fields CDN-Cache-Control] [--no-heuristic-freshness] \
//!     [--heuristic-max-secs 86400] [--max-variants 64] [--exact-vary] \
//!     [--purge-token TOKEN] [--purge-token TOKEN --secret SECRET --peer http://other:8080/_cache/invalidate ...]
//!     [--purge-token TOKEN --secret SECRET --redis redis://127.0.0.1:6379/]   (with --features redis)
//! ```
//!
//! Purges, with `--purge-token`: `PURGE /path` removes that URL, a `POST` with
//! `X-Purge-Key`, `X-Purge-Tag` (surrogate key) or `X-Purge-Pattern` removes a key, a
//! tag's entries or the keys a glob matches; each needs `Authorization: Bearer TOKEN`
//! (401 otherwise). With `--peer` (and the `--secret` every proxy shares), purges spread
//! to the other proxies over HTTP: each serves `POST /_cache/invalidate` for them. With
//! `--redis URL` instead (built with `--features redis`), they spread over that Redis
//! server's pub/sub. `--secret`, `--peer` and `--redis` need `--purge-token`: the proxy
//! refuses to start without it rather than run with no invalidation endpoint.
//!
//! # What the edge guarantees
//!
//! Every request is checked before anything (cache, purge, invalidation endpoint) sees
//! it; one that fails a check is answered `400 Bad Request`:
//!
//! - **One authority.** An HTTP/1.1 request needs exactly one `Host` field; an HTTP/2
//!   request's `:authority` counts as its host. When the target is in absolute form, or
//!   an HTTP/2 request also sends `Host`, the two must be equal. The authority must be an
//!   RFC 3986 host with an optional port: no `/`, `?`, `#`, `@`, whitespace or control
//!   bytes. So one URL's entry can never be filled with another's response.
//! - **What is keyed.** The cache key is the validated authority (lower-cased) and the
//!   path with query; responses that `Vary` are stored per value of the fields they name.
//! - **What is stripped.** Hop-by-hop fields (`Connection`, `Keep-Alive`,
//!   `Proxy-Connection`, `TE`, `Trailer`, `Transfer-Encoding`, `Upgrade`,
//!   `Proxy-Authorization`) and the fields `Connection` names are removed before the
//!   cache reads the request, so the key and the upstream see the same fields. A
//!   `Connection` option that names an end-to-end field (`Host`, `Content-Length`,
//!   `Authorization`, `Cookie`, `Cache-Control`, `Forwarded`, `X-Forwarded-*`, ...) is
//!   refused. Fields that steer an origin to another host, scheme, client or URL
//!   (`Forwarded`, `X-Forwarded-*`, `X-Real-IP`, `X-Original-URL`, `X-Rewrite-URL`,
//!   `True-Client-IP`, `CF-Connecting-IP`, method overrides, ...) are removed from
//!   clients' requests; with `--key-forwarded` (behind a trusted proxy that sets them)
//!   they are kept and become part of the key. A field that spells any field above with
//!   `_` for `-` (`X_Forwarded_Host`), which CGI-style origins read as that field, is
//!   always removed.
//!   The proxy then sets its own `X-Forwarded-For`, `Forwarded: for=...;proto=http` and
//!   `X-Forwarded-Proto` from the client's address.
//! - **Limits.** A connection that has not sent a whole request head within
//!   `--header-read-timeout-ms` (default 30,000) of opening, or of its previous request
//!   on HTTP/1, is closed; one that moves no byte for `--idle-timeout-ms` (default
//!   60,000) with no request in progress is shut down gracefully. At most
//!   `--max-connections` (default 10,000) are served at once; beyond that, new
//!   connections wait in the listen backlog until one closes. The body of a request to
//!   `/_cache/invalidate` must arrive within `--header-read-timeout-ms` too; otherwise
//!   the answer is `408 Request Timeout` and the connection is closed.
//!
//! # Caching policy
//!
//! The layer's RFC 9111 shared-cache policy (see `tower_cache::http`), with what an edge
//! server is expected to do turned on:
//!
//! - **Targeted cache control** (RFC 9213): `CDN-Cache-Control`, when present and valid,
//!   is this cache's policy in place of `Cache-Control` and `Expires`.
//!   `--target-fields A,B` obeys other fields, most specific first (a field of this
//!   deployment's own before `CDN-Cache-Control`, say); `--target-fields none` obeys
//!   none. Responses go on with both fields as the origin sent them.
//! - **Heuristic freshness** (RFC 9111 section 4.2.2): a response with `Last-Modified`,
//!   no explicit freshness and a status cacheable by default is fresh for 10% of the
//!   time since its last change, at most `--heuristic-max-secs` (default 86,400: a day);
//!   `--no-heuristic-freshness` turns it off.
//! - **Vary**: at most `--max-variants` (default 64) variants per URL, the oldest
//!   dropped; `Accept-Encoding` and `Accept-Language` keyed by meaning (case, order,
//!   `q=1`, `q=0`), unless `--exact-vary`.
//!
//! It forwards every method and the remaining header fields as the client sent them
//! (the `Host` lower-cased, as the key has it), in HTTP/1.1 whatever the client spoke (an HTTP/2 request's
//! `:authority` becomes the `Host`); the cache adds its validators when it revalidates.
//! Connections to the upstream are kept alive and pooled. An upstream that cannot be
//! reached answers `502 Bad Gateway`, one that does not answer within
//! `--upstream-timeout-ms` (default 30,000) `504 Gateway Timeout`. Clients may speak
//! HTTP/1.1 or HTTP/2.
//!
//! Interim (`1xx`) responses are not relayed: hyper's client reads past the upstream's
//! (a `103 Early Hints` and its `Link` fields are dropped, as are `1xx` nobody asked
//! for) and hyper's server cannot send them; the client gets the final response. A
//! request with `Expect: 100-continue` gets hyper's own `100 Continue` when the proxy
//! starts sending its content upstream (once the upstream connection is up), so an
//! upstream that refuses the content (a `417`, a `401`) is heard after the client has
//! started sending it. Range requests are answered from the cache when it holds the
//! response or the part asked for, and sent upstream with their `Range` otherwise.

mod args;
mod route;
mod serve;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::BodyExt;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use hyper_util::service::TowerToHyperService;
use tower_cache::coordinator::{Coordinator, HttpBus};
use tower_cache::http::{ForwardedFields, HttpCacheLayer, HttpPolicy};
use tower_cache::{Cache, DiskTier, MemoryTier, PurgeService};
use tower_layer::Layer;

pub use self::args::*;
use self::route::*;
use self::serve::*;
use crate::activity::{Activity, InProgress};

/// The body every part of the proxy speaks.
pub type ProxyBody = BoxBody<Bytes, hyper::Error>;

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
    let forwarded = if args.key_forwarded {
        ForwardedFields::Key
    } else {
        ForwardedFields::Drop
    };
    let forward = tower::service_fn(move |req: Request<ProxyBody>| {
        let (client, upstream) = (client.clone(), upstream.clone());
        async move {
            let Ok(req) = to_upstream(&upstream, forwarded, req) else {
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
    let mut policy = HttpPolicy::new().target_fields(args.target_fields.iter().cloned());
    if let Some(max) = args.heuristic_max {
        policy = policy.heuristic(HEURISTIC_FRACTION, max);
    }
    let cache = HttpCacheLayer::new(store.clone())
        .policy(policy)
        .max_variants(args.max_variants)
        .normalize_negotiation(args.normalize_negotiation)
        .forwarded_fields(forwarded)
        .layer(forward);
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
            .map_err(std::io::Error::other)?
            .forwarded_fields(forwarded),
        );
    }
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    println!(
        "cache_proxy: listening on {}, upstream {}",
        listener.local_addr()?,
        args.upstream
    );
    // One permit per connection served: beyond the limit, accept waits and new
    // connections wait in the kernel's backlog.
    let limit = Arc::new(tokio::sync::Semaphore::new(args.max_connections));
    let (header_read_timeout, idle_timeout) = (args.header_read_timeout, args.idle_timeout);
    loop {
        let Ok(permit) = limit.clone().acquire_owned().await else {
            return Ok(());
        };
        let (stream, client) = match listener.accept().await {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let (cache, purge, endpoint) = (cache.clone(), purge.clone(), endpoint.clone());
        let activity = Arc::new(Activity::new());
        tokio::spawn(async move {
            let svc = {
                let activity = activity.clone();
                tower::service_fn(move |req: Request<hyper::body::Incoming>| {
                    let (cache, purge, endpoint) = (cache.clone(), purge.clone(), endpoint.clone());
                    let in_progress = InProgress::start(&activity);
                    async move {
                        let res = route(
                            cache,
                            purge,
                            endpoint,
                            client,
                            forwarded,
                            header_read_timeout,
                            req,
                        )
                        .await;
                        drop(in_progress);
                        res
                    }
                })
            };
            serve(
                stream,
                TowerToHyperService::new(svc),
                activity,
                header_read_timeout,
                idle_timeout,
            )
            .await;
            drop(permit);
        });
    }
}

/// The example's `main`: parses the process's arguments and runs the proxy.
pub fn main() {
    let args = match Args::parse(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) if e.starts_with("A caching reverse proxy") => {
            println!("{e}");
            return;
        }
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
