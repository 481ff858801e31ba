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

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, Response, StatusCode, Uri, Version};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tower_cache::coordinator::{Coordinator, HttpBus};
use tower_cache::http::{prepare_request, ForwardedFields, HttpCacheLayer, HttpPolicy};
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
    /// How long a connection may take to send a whole request head.
    pub header_read_timeout: Duration,
    /// How long a connection may move no byte, with no request in progress, before it
    /// is shut down.
    pub idle_timeout: Duration,
    /// How many connections are served at once; more wait in the listen backlog.
    pub max_connections: usize,
    /// Key on the forwarding fields clients send (`X-Forwarded-*`, `Forwarded`, ...)
    /// instead of removing them.
    pub key_forwarded: bool,
    /// The targeted cache-control fields obeyed (RFC 9213), most specific first.
    pub target_fields: Vec<HeaderName>,
    /// The cap of heuristic freshness; `None` when it is off.
    pub heuristic_max: Option<Duration>,
    /// The most variants stored per URL.
    pub max_variants: usize,
    /// Whether `Accept-Encoding` and `Accept-Language` are keyed by meaning.
    pub normalize_negotiation: bool,
}

/// Default of `--header-read-timeout-ms`: 30 s.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Default of `--idle-timeout-ms`: 60 s.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Default of `--max-connections`: 10,000.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Default of `--heuristic-max-secs`: a day, as many deployed caches cap it.
pub const DEFAULT_HEURISTIC_MAX: Duration = Duration::from_secs(86_400);
/// The share of the time since `Last-Modified` a response is heuristically fresh for.
pub const HEURISTIC_FRACTION: f64 = 0.1;

/// The value of `--target-fields` (one flag value, a list).
#[derive(Debug, Clone)]
struct TargetList(Vec<HeaderName>);

/// `--target-fields`: comma-separated field names, or `none`.
fn target_fields(v: &str) -> Result<TargetList, String> {
    if v.trim().eq_ignore_ascii_case("none") {
        return Ok(TargetList(Vec::new()));
    }
    v.split(',')
        .map(str::trim)
        .map(|name| {
            HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                format!("{name:?} is not a field name; give names separated by commas, or none")
            })
        })
        .collect::<Result<_, _>>()
        .map(TargetList)
}

fn heuristic_max_secs(v: &str) -> Result<Duration, String> {
    match v.parse::<u64>() {
        Ok(0) => Err("give at least 1 second, or --no-heuristic-freshness".into()),
        Ok(n) if n > u64::from(u32::MAX) => Err(format!("give at most {} seconds", u32::MAX)),
        Ok(n) => Ok(Duration::from_secs(n)),
        Err(e) => Err(format!("{e}; give whole seconds")),
    }
}

fn max_variants(v: &str) -> Result<usize, String> {
    match v.parse::<usize>() {
        Ok(0) => Err("give at least 1".into()),
        Ok(n) if n > usize::from(u16::MAX) => Err(format!("give at most {}", u16::MAX)),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("{e}; give a whole number")),
    }
}

/// A duration flag in milliseconds, at least 1.
fn millis(v: &str) -> Result<Duration, String> {
    let ms: u64 = v
        .parse()
        .map_err(|e| format!("{e}; give whole milliseconds"))?;
    if ms == 0 {
        return Err("give at least 1 millisecond".into());
    }
    Ok(Duration::from_millis(ms))
}

fn upstream_url(v: &str) -> Result<Uri, String> {
    let uri: Uri = v.parse().map_err(|e| format!("{e}"))?;
    if uri.scheme_str() != Some("http") || uri.authority().is_none() {
        return Err("give an http://host:port URL (https is not supported)".into());
    }
    Ok(uri)
}

fn memory_mb(v: &str) -> Result<u64, String> {
    match v.parse::<u64>() {
        Ok(0) => Err("give the memory tier at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("{e}; give a whole number")),
    }
}

fn max_connections(v: &str) -> Result<usize, String> {
    match v.parse::<usize>() {
        Ok(n) if (1..=tokio::sync::Semaphore::MAX_PERMITS).contains(&n) => Ok(n),
        Ok(_) => Err(format!(
            "give at least 1 and at most {}",
            tokio::sync::Semaphore::MAX_PERMITS
        )),
        Err(e) => Err(format!("{e}; give a whole number")),
    }
}

/// The flags, as clap reads them (with `--help`'s descriptions and defaults).
#[derive(Debug, clap::Parser)]
#[command(
    name = "cache_proxy",
    about = "A caching reverse proxy (RFC 9111) in front of one HTTP/1.1 upstream, with purges spread between proxies"
)]
struct Flags {
    /// Where clients connect (HOST:PORT).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// The upstream's base URL, http://HOST:PORT.
    #[arg(long, value_parser = upstream_url)]
    upstream: Option<Uri>,
    /// The memory tier's bound, in MiB.
    #[arg(long, default_value = "256", value_parser = memory_mb)]
    memory_mb: u64,
    /// A directory for the disk tier (LMDB); memory only without it.
    #[arg(long)]
    disk_dir: Option<PathBuf>,
    /// How long the upstream may take to send its response head, in milliseconds.
    #[arg(long, default_value = "30000", value_parser = millis)]
    upstream_timeout_ms: Duration,
    /// How long a connection may take to send a whole request head, in milliseconds.
    #[arg(long, default_value = "30000", value_parser = millis)]
    header_read_timeout_ms: Duration,
    /// How long an idle kept-alive connection stays open, in milliseconds.
    #[arg(long, default_value = "60000", value_parser = millis)]
    idle_timeout_ms: Duration,
    /// Connections served at once; more wait in the listen backlog.
    #[arg(long, default_value = "10000", value_parser = max_connections)]
    max_connections: usize,
    /// Key on the forwarding fields clients send (X-Forwarded-*, Forwarded, ...)
    /// instead of removing them.
    #[arg(long)]
    key_forwarded: bool,
    /// The targeted cache-control fields obeyed (RFC 9213), most specific first,
    /// separated by commas; none for none.
    #[arg(long, default_value = "CDN-Cache-Control", value_parser = target_fields)]
    target_fields: TargetList,
    /// Store no response on heuristic freshness (Last-Modified without max-age).
    #[arg(long)]
    no_heuristic_freshness: bool,
    /// The longest heuristic freshness, in seconds.
    #[arg(long, default_value = "86400", value_parser = heuristic_max_secs)]
    heuristic_max_secs: Duration,
    /// The most variants (Vary) stored per URL; storing more drops the oldest.
    #[arg(long, default_value = "64", value_parser = max_variants)]
    max_variants: usize,
    /// Key Accept-Encoding and Accept-Language variants on the fields as sent, not on
    /// their meaning.
    #[arg(long)]
    exact_vary: bool,
    /// The bearer token purges need; no purges without it.
    #[arg(long)]
    purge_token: Option<String>,
    /// The secret every proxy shares to sign invalidations (with --peer or --redis).
    #[arg(long)]
    secret: Option<String>,
    /// Another proxy's invalidation endpoint (http://HOST:PORT/_cache/invalidate);
    /// repeat for each.
    #[arg(long = "peer")]
    peers: Vec<String>,
    /// A Redis server whose pub/sub carries purges between proxies, instead of --peer
    /// (a build with --features redis).
    #[arg(long)]
    redis: Option<String>,
}

impl Args {
    /// Parses the flags the module docs list (`--help` shows them); the message of an
    /// error says what to change.
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Self, String> {
        use clap::Parser;
        let f = Flags::try_parse_from(std::iter::once("cache_proxy".to_owned()).chain(args))
            .map_err(crate::flags::flag_error)?;
        if let Some(url) = &f.redis {
            if !cfg!(feature = "redis") {
                return Err(format!(
                    "--redis {url}: this build has no Redis bus; rebuild with --features redis"
                ));
            }
        }
        let Flags {
            listen,
            upstream,
            memory_mb,
            disk_dir,
            upstream_timeout_ms,
            header_read_timeout_ms,
            idle_timeout_ms,
            max_connections,
            key_forwarded,
            target_fields,
            no_heuristic_freshness,
            heuristic_max_secs,
            max_variants,
            exact_vary,
            purge_token,
            secret,
            peers,
            redis,
        } = f;
        let peers_given = peers.clone();
        let redis_given = redis.is_some();
        Ok(Self {
            listen: listen.ok_or("--listen is required, e.g. --listen 127.0.0.1:8080")?,
            upstream: upstream
                .ok_or("--upstream is required, e.g. --upstream http://127.0.0.1:8000")?,
            memory_mb,
            disk_dir,
            upstream_timeout: upstream_timeout_ms,
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
            purge_token: if purge_token.is_none()
                && (secret.is_some() || !peers_given.is_empty() || redis_given)
            {
                // Without a token no purge service and no invalidation endpoint exist:
                // peers' purges would go to the upstream as ordinary requests.
                return Err(
                    "--secret, --peer and --redis need --purge-token TOKEN: without it no \
                     invalidation endpoint is mounted and purges do not spread; add \
                     --purge-token"
                        .into(),
                );
            } else {
                purge_token
            },
            secret,
            header_read_timeout: header_read_timeout_ms,
            idle_timeout: idle_timeout_ms,
            max_connections,
            key_forwarded,
            target_fields: target_fields.0,
            heuristic_max: (!no_heuristic_freshness).then_some(heuristic_max_secs),
            max_variants,
            normalize_negotiation: !exact_vary,
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

/// The address of the client a request came from, put in its extensions at the edge.
#[derive(Debug, Clone, Copy)]
struct ClientAddr(SocketAddr);

/// Announces content of unknown length (an HTTP/1 chunked body, or an HTTP/2 body
/// without `Content-Length`) with `Transfer-Encoding: chunked`, which the edge removed as
/// hop-by-hop: the cache then sees that the request has content, and the HTTP/1.1
/// client frames it anew. Without it the client sends a GET's or HEAD's body as empty.
fn announce_unsized_content<B: hyper::body::Body>(req: &mut Request<B>) {
    if !req.body().is_end_stream() && !req.headers().contains_key(http::header::CONTENT_LENGTH) {
        req.headers_mut().insert(
            http::header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
    }
}

/// The request as the upstream must see it: HTTP/1.1 whatever the client spoke, its URL
/// on the upstream, the client's authority as `Host` (an HTTP/2 request's `:authority`),
/// hop-by-hop fields removed, and the client's address in the forwarding fields.
fn to_upstream(
    upstream: &Uri,
    forwarded: ForwardedFields,
    mut req: Request<ProxyBody>,
) -> Result<Request<ProxyBody>, ()> {
    // The edge checked the request and removed these fields before the cache read it; a
    // request the cache makes on its own (a background refresh) carries none either.
    // Checked again here so that this function alone is a correct forwarder.
    prepare_request(&mut req, forwarded).map_err(drop)?;
    announce_unsized_content(&mut req);
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let uri = Uri::builder()
        .scheme("http")
        .authority(upstream.authority().ok_or(())?.clone())
        .path_and_query(path)
        .build()
        .map_err(drop)?;
    if !req.headers().contains_key(http::header::HOST) {
        let authority = req.uri().authority().ok_or(())?.as_str();
        let host = HeaderValue::from_str(authority).map_err(drop)?;
        req.headers_mut().insert(http::header::HOST, host);
    }
    *req.uri_mut() = uri;
    *req.version_mut() = Version::HTTP_11;
    if let Some(ClientAddr(peer)) = req.extensions().get::<ClientAddr>().copied() {
        let ip = peer.ip();
        let headers = req.headers_mut();
        let xff = match headers.get("x-forwarded-for").map(|v| v.to_str()) {
            Some(Ok(prior)) => format!("{prior}, {ip}"),
            _ => ip.to_string(),
        };
        let node = match ip {
            std::net::IpAddr::V4(v4) => format!("for={v4};proto=http"),
            std::net::IpAddr::V6(v6) => format!("for=\"[{v6}]\";proto=http"),
        };
        let fwd = match headers.get("forwarded").map(|v| v.to_str()) {
            Some(Ok(prior)) => format!("{prior}, {node}"),
            _ => node,
        };
        for (name, value) in [("x-forwarded-for", xff), ("forwarded", fwd)] {
            if let Ok(v) = HeaderValue::from_str(&value) {
                headers.insert(name, v);
            }
        }
        if !headers.contains_key("x-forwarded-proto") {
            headers.insert("x-forwarded-proto", HeaderValue::from_static("http"));
        }
    }
    Ok(req)
}

/// What every response of the proxy carries.
type AnyBody =
    http_body_util::combinators::UnsyncBoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// A short plain-text answer of the edge itself.
fn refuse(status: StatusCode, text: String) -> Response<AnyBody> {
    let mut res = Response::new(
        Full::new(Bytes::from(text))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *res.status_mut() = status;
    res.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    res
}

/// The largest body the invalidation endpoint's request is read into memory with; the
/// endpoint applies its own, smaller bound.
const MAX_CONTROL_BODY: usize = 64 << 10;

/// The request with its whole body read within `within`, or the answer to send instead:
/// `408` (and the connection closed) when the body stalls, `413` when it is too large,
/// `400` when it breaks off.
async fn read_body_within(
    req: Request<hyper::body::Incoming>,
    within: Duration,
) -> Result<Request<Full<Bytes>>, Response<AnyBody>> {
    let (parts, body) = req.into_parts();
    let read = http_body_util::Limited::new(body, MAX_CONTROL_BODY).collect();
    match tokio::time::timeout(within, read).await {
        Ok(Ok(body)) => Ok(Request::from_parts(parts, Full::new(body.to_bytes()))),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request body too large\n".into(),
        )),
        Ok(Err(_)) => Err(refuse(
            StatusCode::BAD_REQUEST,
            "bad request: the body broke off\n".into(),
        )),
        Err(_) => {
            let mut res = refuse(
                StatusCode::REQUEST_TIMEOUT,
                "request body not received in time\n".into(),
            );
            res.headers_mut()
                .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
            Err(res)
        }
    }
}

/// Checks a request at the edge (see the module docs), then sends it to the
/// invalidation endpoint, the purge service or the cache.
async fn route<C>(
    cache: C,
    purge: Option<PurgeService>,
    endpoint: Option<tower_cache::coordinator::InvalidateEndpoint>,
    client: SocketAddr,
    forwarded: ForwardedFields,
    body_timeout: Duration,
    mut req: Request<hyper::body::Incoming>,
) -> Result<Response<AnyBody>, Infallible>
where
    C: tower::Service<
        Request<ProxyBody>,
        Response = Response<tower_cache::http::HttpCacheBody<ProxyBody>>,
        Error = Infallible,
    >,
{
    use tower::ServiceExt;
    // RFC 9112 section 3.2: an HTTP/1.1 request without Host is refused; an HTTP/2
    // request's `:authority` stands for it (checked with the rest below).
    if req.version() == Version::HTTP_11 && !req.headers().contains_key(http::header::HOST) {
        return Ok(refuse(
            StatusCode::BAD_REQUEST,
            "bad request: no Host field\n".into(),
        ));
    }
    if let Err(why) = prepare_request(&mut req, forwarded) {
        return Ok(refuse(
            StatusCode::BAD_REQUEST,
            format!("bad request: {why}\n"),
        ));
    }
    // The edge removed `Transfer-Encoding` (hop-by-hop): content of unknown length is
    // announced again so that the cache sees the request has content.
    announce_unsized_content(&mut req);
    req.extensions_mut().insert(ClientAddr(client));
    let never = |never: Infallible| -> Box<dyn std::error::Error + Send + Sync> { match never {} };
    if let Some(e) = endpoint.filter(|_| req.uri().path() == "/_cache/invalidate") {
        // A request in progress is never idle: the body is read within the header-read
        // timeout, or the connection is answered 408 and closed.
        let req = match read_body_within(req, body_timeout).await {
            Ok(req) => req,
            Err(res) => return Ok(res),
        };
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

// === connection limits ===

use crate::activity::{Activity, InProgress, Tracked};

/// Serves one connection under the header-read and idle timeouts.
///
/// hyper's HTTP/1 header-read timeout bounds each request head once the protocol is
/// known; the first head is also bounded here from the moment the connection opened
/// (hyper reads the protocol preface with no timeout). A connection that moves no byte
/// for the idle timeout with no request in progress is shut down gracefully, and closed
/// if it stays silent for another idle timeout.
async fn serve<S>(
    stream: tokio::net::TcpStream,
    svc: S,
    activity: Arc<Activity>,
    header_read_timeout: Duration,
    idle_timeout: Duration,
) where
    S: hyper::service::Service<
            Request<hyper::body::Incoming>,
            Response = Response<AnyBody>,
            Error = Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    builder.http2().timer(TokioTimer::new());
    let io = TokioIo::new(Tracked::new(stream, activity.clone()));
    let conn = builder.serve_connection(io, svc);
    tokio::pin!(conn);
    let first_head_by = activity.opened + header_read_timeout;
    let mut shut_down = false;
    loop {
        let idle_at = activity.last() + idle_timeout;
        let first_pending = activity.started.load(Ordering::Relaxed) == 0;
        let wake = if first_pending {
            idle_at.min(first_head_by)
        } else {
            idle_at
        };
        tokio::select! {
            _ = conn.as_mut() => return,
            _ = tokio::time::sleep_until(wake) => {}
        }
        let now = tokio::time::Instant::now();
        if activity.started.load(Ordering::Relaxed) == 0 && now >= first_head_by {
            // No whole request head in time: close.
            return;
        }
        let idle = activity.in_progress.load(Ordering::Relaxed) == 0
            && now >= activity.last() + idle_timeout;
        if idle {
            if shut_down {
                return;
            }
            conn.as_mut().graceful_shutdown();
            shut_down = true;
            activity.touch();
        }
    }
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
    fn a_secret_or_peers_without_a_purge_token_are_refused() {
        let peer = "http://x/_cache/invalidate";
        for flags in [&["--secret", "s"][..], &["--secret", "s", "--peer", peer]] {
            let e = parse(flags).unwrap_err();
            assert!(e.contains("need --purge-token"), "{e}");
        }
        assert!(parse(&["--purge-token", "t", "--secret", "s", "--peer", peer]).is_ok());
    }

    #[test]
    fn limits_have_defaults_and_refuse_zero() {
        let a = parse(&[]).unwrap();
        assert_eq!(a.header_read_timeout, super::DEFAULT_HEADER_READ_TIMEOUT);
        assert_eq!(a.idle_timeout, super::DEFAULT_IDLE_TIMEOUT);
        assert_eq!(a.max_connections, super::DEFAULT_MAX_CONNECTIONS);
        assert!(!a.key_forwarded);
        for flag in [
            "--header-read-timeout-ms",
            "--idle-timeout-ms",
            "--max-connections",
        ] {
            let e = parse(&[flag, "0"]).unwrap_err();
            assert!(e.contains(flag), "{e}");
        }
        let a = parse(&["--header-read-timeout-ms", "500", "--key-forwarded"]).unwrap();
        assert_eq!(a.header_read_timeout, std::time::Duration::from_millis(500));
        assert!(a.key_forwarded);
    }

    #[test]
    fn the_caching_policy_has_edge_defaults_and_flags_to_change_them() {
        let a = parse(&[]).unwrap();
        assert_eq!(
            a.target_fields,
            [http::HeaderName::from_static("cdn-cache-control")]
        );
        assert_eq!(a.heuristic_max, Some(super::DEFAULT_HEURISTIC_MAX));
        assert_eq!(a.max_variants, 64);
        assert!(a.normalize_negotiation);
        let a = parse(&[
            "--target-fields",
            "Edge-Cache-Control, CDN-Cache-Control",
            "--no-heuristic-freshness",
            "--max-variants",
            "8",
            "--exact-vary",
        ])
        .unwrap();
        assert_eq!(a.target_fields.len(), 2);
        assert_eq!(a.target_fields[0], "edge-cache-control");
        assert_eq!(a.heuristic_max, None);
        assert_eq!(a.max_variants, 8);
        assert!(!a.normalize_negotiation);
        assert!(parse(&["--target-fields", "none"])
            .unwrap()
            .target_fields
            .is_empty());
        let a = parse(&["--heuristic-max-secs", "3600"]).unwrap();
        assert_eq!(a.heuristic_max, Some(std::time::Duration::from_secs(3600)));
        for (flag, value) in [
            ("--target-fields", "bad name"),
            ("--heuristic-max-secs", "0"),
            ("--max-variants", "0"),
            ("--max-variants", "x"),
        ] {
            let e = parse(&[flag, value]).unwrap_err();
            assert!(e.contains(flag), "{e}");
        }
    }

    #[test]
    fn redis_needs_the_feature_a_secret_and_no_peers() {
        let url = "redis://127.0.0.1:6379/";
        let e = parse(&["--redis", url]).unwrap_err();
        if cfg!(feature = "redis") {
            assert!(e.contains("--redis needs --secret"), "{e}");
            let ok = parse(&["--purge-token", "t", "--secret", "s", "--redis", url]).unwrap();
            assert_eq!(ok.redis.as_deref(), Some(url));
            let e = parse(&["--secret", "s", "--redis", url, "--peer", "http://x/"]).unwrap_err();
            assert!(e.contains("either --peer or --redis"), "{e}");
        } else {
            assert!(e.contains("rebuild with --features redis"), "{e}");
        }
    }
}
