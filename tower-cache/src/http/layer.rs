//! [`HttpCacheLayer`]: a shared HTTP cache (RFC 9111) in front of any `http` service.

use std::collections::HashMap;
use std::fmt;
use std::hash::Hasher;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use ::http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::sync::Notify;
use tower_layer::Layer;
use tower_service::Service;

use super::edge::{self, ForwardedFields, RequestRefused};
use super::entry::{self, HttpEntry, Record};
use super::headers;
use super::policy::{self, HttpPolicy, RequestRules};
use crate::cache::{Cache, Found};
use crate::entry::{EntryMeta, Tags};
use crate::generation::Ticket;
use crate::BoxError;

/// Default largest body stored: 1 MiB. Larger bodies stream through unstored.
pub const DEFAULT_MAX_STORED_BODY: usize = 1 << 20;
/// Default time a URL whose response may never be stored (`no-store`, `private`,
/// `Set-Cookie`, `Vary: *`) is passed without waiting on other requests: 10 s.
pub const DEFAULT_HTTP_PASS_TTL: Duration = Duration::from_secs(10);
/// Default longest wait of a request for another one fetching the same URL: 10 s.
pub const DEFAULT_COLLAPSE_WAIT: Duration = Duration::from_secs(10);

/// Where a response came from, as the status header says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    HitMemory,
    HitDisk,
    /// A stale entry served (`stale-while-revalidate`, `stale-if-error`, `max-stale`).
    Stale,
    /// A stale entry the origin confirmed with `304`.
    Revalidated,
    Miss,
    Pass,
}

impl Status {
    fn value(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            Status::HitMemory => "HIT-MEM",
            Status::HitDisk => "HIT-DISK",
            Status::Stale => "STALE",
            Status::Revalidated => "REVALIDATED",
            Status::Miss => "MISS",
            Status::Pass => "PASS",
        })
    }
}

/// A shared HTTP cache in front of an `http` service; see the [module docs](super).
///
/// A plain configuration: cheap to clone, every setting changeable on a clone. Clones
/// share the store and the table of requests in flight.
#[derive(Clone)]
pub struct HttpCacheLayer {
    store: Cache,
    policy: HttpPolicy,
    max_body: usize,
    status_header: Option<HeaderName>,
    pass_ttl: Duration,
    collapse_wait: Duration,
    forwarded: ForwardedFields,
    inflight: Arc<Inflight>,
}

impl fmt::Debug for HttpCacheLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpCacheLayer")
            .field("store", &self.store)
            .field("policy", &self.policy)
            .field("max_body", &self.max_body)
            .field("status_header", &self.status_header)
            .field("forwarded", &self.forwarded)
            .finish_non_exhaustive()
    }
}

impl HttpCacheLayer {
    /// A cache in `store` with the RFC 9111 shared-cache policy and the defaults: bodies
    /// up to 1 MiB stored, an `x-cache` status header.
    pub fn new(store: Cache) -> Self {
        Self {
            store,
            policy: HttpPolicy::default(),
            max_body: DEFAULT_MAX_STORED_BODY,
            status_header: Some(HeaderName::from_static("x-cache")),
            pass_ttl: DEFAULT_HTTP_PASS_TTL,
            collapse_wait: DEFAULT_COLLAPSE_WAIT,
            forwarded: ForwardedFields::Drop,
            inflight: Arc::default(),
        }
    }

    /// The policy's settings (heuristic freshness, default TTL, `Set-Cookie`).
    pub fn policy(mut self, policy: HttpPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// The largest body stored; larger ones stream through and are not stored.
    pub fn max_body(mut self, bytes: usize) -> Self {
        self.max_body = bytes;
        self
    }

    /// The response header that says where a response came from (`HIT-MEM`, `HIT-DISK`,
    /// `MISS`, `PASS`); `None` for no header. Default `x-cache`.
    pub fn status_header(mut self, name: Option<HeaderName>) -> Self {
        self.status_header = name;
        self
    }

    /// How long a URL whose response may never be stored is passed straight through
    /// (Varnish's hit-for-pass). Raised to at least a millisecond.
    pub fn pass_ttl(mut self, ttl: Duration) -> Self {
        self.pass_ttl = ttl.clamp(Duration::from_millis(1), crate::error::MAX_TTL);
        self
    }

    /// How long a request waits for another one fetching the same URL before it asks the
    /// origin itself.
    pub fn collapse_wait(mut self, wait: Duration) -> Self {
        self.collapse_wait = wait;
        self
    }

    /// What to do with the forwarding fields a client sends (`X-Forwarded-Host`,
    /// `Forwarded`, `X-Original-URL`, ...): removed by default, or kept and keyed on.
    pub fn forwarded_fields(mut self, forwarded: ForwardedFields) -> Self {
        self.forwarded = forwarded;
        self
    }

    /// The store.
    pub fn store(&self) -> &Cache {
        &self.store
    }
}

/// Default byte bound of the memory tier of [`HttpCacheLayer::default`]: 64 MiB.
pub const DEFAULT_HTTP_MEMORY_BYTES: u64 = 64 << 20;

impl Default for HttpCacheLayer {
    /// The common case in one line: the RFC 9111 shared-cache policy over a 64 MiB memory
    /// tier. For a disk tier or other bounds, build a [`Cache`] and use
    /// [`HttpCacheLayer::new`].
    fn default() -> Self {
        let memory = crate::MemoryTier::builder()
            .bytes_only(DEFAULT_HTTP_MEMORY_BYTES)
            .build()
            .expect("a 64 MiB byte bound is a valid memory tier");
        Self::new(Cache::new(memory))
    }
}

impl HttpCacheLayer {
    /// The common case with a disk tier: the default policy over a 64 MiB memory tier and
    /// an LMDB disk tier in `dir` (a 1 GiB map; see [`DiskTier`](crate::DiskTier) for more
    /// settings). Fails, saying why, if the directory cannot be used.
    pub fn on_disk(dir: impl AsRef<std::path::Path>) -> Result<Self, crate::BuildError> {
        let memory = crate::MemoryTier::builder()
            .bytes_only(DEFAULT_HTTP_MEMORY_BYTES)
            .build()?;
        let disk = crate::DiskTier::builder(dir).open()?;
        Ok(Self::new(Cache::new(memory).with_disk(disk)))
    }
}

impl<S> Layer<S> for HttpCacheLayer {
    type Service = HttpCacheService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        HttpCacheService {
            inner,
            config: Arc::new(self.clone()),
        }
    }
}

/// The service of an [`HttpCacheLayer`].
///
/// `poll_ready` is always ready: a hit never waits for the inner service. A miss waits for
/// the inner service's readiness in its response future, on a clone of it.
pub struct HttpCacheService<S> {
    inner: S,
    config: Arc<HttpCacheLayer>,
}

impl<S: Clone> Clone for HttpCacheService<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            config: self.config.clone(),
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for HttpCacheService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpCacheService")
            .field("inner", &self.inner)
            .field("config", &self.config)
            .finish()
    }
}

impl<S> HttpCacheService<S> {
    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

type BoxFuture<T, E> = Pin<Box<dyn std::future::Future<Output = Result<T, E>> + Send>>;

impl<S, ReqB, ResB> Service<Request<ReqB>> for HttpCacheService<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Send + 'static,
    ReqB: Default + Send + 'static,
    ResB: Body<Data = Bytes> + Send + 'static,
    ResB::Error: Into<BoxError>,
{
    type Response = Response<HttpCacheBody<ResB>>;
    /// The inner service's error, passed on as it is: the cache adds no error of its own
    /// (its faults degrade to the origin), so over an infallible service (an axum router,
    /// say) the cache is infallible too and needs no `HandleErrorLayer`.
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, S::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        let inner = self.inner.clone();
        let config = self.config.clone();
        Box::pin(async move { handle(config, inner, req).await })
    }
}

use crate::service::ready_call as call_inner;

/// The key the HTTP cache stores a request's URL under: `http:` then the authority
/// (validated, lower-cased), then the path with query (method-independent: a HEAD is
/// answered from a stored GET). Invalidating this key removes the URL's stored response
/// and every variant of it.
///
/// A request whose authority is missing, doubled, invalid or contradicted by its target
/// (the requests [`HttpCacheLayer`] refuses) gets `"http:"`, a key under which nothing is
/// ever stored. [`try_url_key`] says why instead.
pub fn url_key<B>(req: &Request<B>) -> String {
    try_url_key(req).unwrap_or_else(|_| String::from("http:"))
}

/// The key [`url_key`] gives, or why the request cannot be keyed.
///
/// The parts cannot run into one another: a validated authority holds no `/` and the
/// path starts with one, so the first `/` ends the authority.
pub fn try_url_key<B>(req: &Request<B>) -> Result<String, RequestRefused> {
    let host = edge::authority(req)?;
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    if !path.starts_with('/') {
        return Err(RequestRefused::new("the request target is not a path"));
    }
    // No scheme: a server sees origin-form requests (no scheme), a proxy absolute-form
    // ones, and both must find the same entry.
    Ok(format!("http:{host}{path}"))
}

/// The primary key of a request under `config`: the URL key, and under
/// [`ForwardedFields::Key`] the forwarding fields the request carries (names and
/// hex-encoded values, so that no value can imitate another's).
fn primary_key<B>(config: &HttpCacheLayer, req: &Request<B>) -> Result<String, RequestRefused> {
    let mut key = try_url_key(req)?;
    if config.forwarded == ForwardedFields::Key {
        let mut names: Vec<&HeaderName> = req
            .headers()
            .keys()
            .filter(|n| edge::is_forwarding_field(n))
            .collect();
        if !names.is_empty() {
            names.sort_by(|a, b| a.as_str().cmp(b.as_str()));
            key.push_str("\u{1f}f");
            for name in names {
                key.push_str(name.as_str());
                for v in req.headers().get_all(name) {
                    key.push('=');
                    for b in v.as_bytes() {
                        key.push_str(&format!("{b:02x}"));
                    }
                }
                key.push(';');
            }
        }
    }
    Ok(key)
}

/// The key of one variant of a URL: its index's epoch and a hash of the request's values
/// of the headers the responses vary on (the values themselves are stored and compared).
fn variant_key(primary: &str, epoch: u64, values: &[(HeaderName, Option<Vec<u8>>)]) -> String {
    // FNV-1a: stable across builds, so keys on disk survive an upgrade.
    let mut h = Fnv(0xcbf2_9ce4_8422_2325);
    for (name, value) in values {
        h.write(name.as_str().as_bytes());
        match value {
            Some(v) => {
                h.write(&[1]);
                h.write(&(v.len() as u64).to_le_bytes());
                h.write(v);
            }
            None => h.write(&[0]),
        }
    }
    format!("{primary}\u{1f}v{epoch:x}.{:016x}", h.finish())
}

struct Fnv(u64);

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x100_0000_01b3);
        }
    }
}

fn vary_values(req: &HeaderMap, names: &[HeaderName]) -> Vec<(HeaderName, Option<Vec<u8>>)> {
    names
        .iter()
        .map(|n| (n.clone(), headers::vary_value(req, n)))
        .collect()
}

/// A random epoch for a new index.
fn new_epoch() -> u64 {
    let t = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut h = Fnv(t);
    h.write(&std::process::id().to_le_bytes());
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    h.write(
        &NEXT
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            .to_le_bytes(),
    );
    h.finish()
}

/// What a lookup found for a request.
enum Looked {
    /// A stored response that may answer the request.
    Hit(HttpEntry, Status),
    /// A stored response that may not answer it as it is (stale, or to be validated),
    /// under `key`.
    Stale {
        entry: HttpEntry,
        key: String,
        index: Option<(u64, Vec<HeaderName>)>,
    },
    /// Nothing stored; the index of the URL's variants, if there is one.
    Miss {
        index: Option<(u64, Vec<HeaderName>)>,
    },
    /// The URL is marked pass.
    Pass,
}

async fn look_up(store: &Cache, primary: &str, req: &HeaderMap, rules: &RequestRules) -> Looked {
    let now = policy::unix_ms(SystemTime::now());
    let (bytes, from_disk) = match store.lookup(primary).await {
        Found::Hit(s, disk) => (s.value, disk),
        Found::Pass => return Looked::Pass,
        Found::Leader(_) => return Looked::Miss { index: None },
    };
    let (entry, from_disk, key, index) = match entry::decode(&bytes) {
        Some(Record::Entry(e)) if e.vary.is_empty() => (e, from_disk, primary.to_owned(), None),
        Some(Record::Index { epoch, names }) => {
            let values = vary_values(req, &names);
            let key = variant_key(primary, epoch, &values);
            let index = Some((epoch, names));
            match store.lookup(&key).await {
                Found::Hit(s, disk) => match entry::decode(&s.value) {
                    Some(Record::Entry(e)) if e.vary == values => (e, disk, key, index),
                    _ => return Looked::Miss { index },
                },
                // This variant is marked pass; the others are not.
                Found::Pass => return Looked::Pass,
                Found::Leader(_) => return Looked::Miss { index },
            }
        }
        // Undecodable, or an entry with Vary under the primary key: nothing usable.
        _ => return Looked::Miss { index: None },
    };
    if policy::servable(&entry.freshness, rules, now) {
        let status = if from_disk {
            Status::HitDisk
        } else {
            Status::HitMemory
        };
        Looked::Hit(entry, status)
    } else {
        Looked::Stale { entry, key, index }
    }
}

/// Whether a client's conditional GET/HEAD is satisfied by `entry` (RFC 9110 section
/// 13.1): answer 304.
fn not_modified(req: &HeaderMap, entry: &HttpEntry) -> bool {
    if let Some(inm) = headers::if_none_match(req) {
        return match (inm, headers::etag(&entry.headers)) {
            (None, _) => true,
            (Some(tags), Some(etag)) => tags.iter().any(|t| t.weak_eq(&etag)),
            (Some(_), None) => false,
        };
    }
    if let Some(Ok(since)) = headers::date(req, ::http::header::IF_MODIFIED_SINCE) {
        if let Some(Ok(modified)) = headers::date(&entry.headers, ::http::header::LAST_MODIFIED) {
            return modified <= since;
        }
    }
    false
}

fn respond_from<B>(
    config: &HttpCacheLayer,
    entry: HttpEntry,
    status: Status,
    method: &Method,
    req: &HeaderMap,
) -> Response<HttpCacheBody<B>> {
    let age = entry.freshness.age(policy::unix_ms(SystemTime::now()));
    let unchanged = not_modified(req, &entry);
    let mut headers = entry.headers;
    headers.insert(::http::header::AGE, HeaderValue::from(age));
    if let Some(name) = &config.status_header {
        headers.insert(name.clone(), status.value());
    }
    let (code, body) = if unchanged {
        // RFC 9110 section 15.4.5: the fields a 200 would have sent, no content.
        headers.remove(::http::header::CONTENT_LENGTH);
        (StatusCode::NOT_MODIFIED, Bytes::new())
    } else if method == Method::HEAD {
        (entry.status, Bytes::new())
    } else {
        (entry.status, entry.body)
    };
    let mut res = Response::new(HttpCacheBody::full(body));
    *res.status_mut() = code;
    *res.headers_mut() = headers;
    res
}

fn mark<B>(config: &HttpCacheLayer, res: &mut Response<B>, status: Status) {
    if let Some(name) = &config.status_header {
        res.headers_mut().insert(name.clone(), status.value());
    }
}

fn passthrough<B>(config: &HttpCacheLayer, res: Response<B>) -> Response<HttpCacheBody<B>> {
    let mut res = res.map(HttpCacheBody::streaming);
    mark(config, &mut res, Status::Pass);
    res
}

/// Invalidates the URLs a successful unsafe request changed (RFC 9111 section 4.4): the
/// target URI and same-origin `Location` and `Content-Location`.
async fn invalidate_after<B>(store: &Cache, req_key: &str, req: &Request<B>, res: &Response<()>) {
    if !(res.status().is_success() || res.status().is_redirection()) {
        return;
    }
    let _ = store.delete(req_key).await;
    let Ok(authority) = edge::authority(req) else {
        return;
    };
    for name in [::http::header::LOCATION, ::http::header::CONTENT_LOCATION] {
        let Some(target) = res.headers().get(&name) else {
            continue;
        };
        let Ok(uri) = ::http::Uri::try_from(target.as_bytes()) else {
            continue;
        };
        // Same origin only: a relative reference, or the request's own host.
        let same_origin = match uri.authority() {
            None => true,
            Some(a) => authority.eq_ignore_ascii_case(a.as_str()),
        };
        if !same_origin || !uri.path().starts_with('/') {
            continue;
        }
        let b = Request::builder()
            .uri(uri.path_and_query().map_or("/", |p| p.as_str()))
            .header(::http::header::HOST, authority.as_str());
        if let Ok(key) = b
            .body(())
            .map_err(drop)
            .and_then(|r| try_url_key(&r).map_err(drop))
        {
            let _ = store.delete(&key).await;
        }
    }
}

/// The answer to a request the cache refuses to key.
fn refused<B>(why: &RequestRefused) -> Response<HttpCacheBody<B>> {
    let mut res = Response::new(HttpCacheBody::full(Bytes::from(format!(
        "bad request: {why}\n"
    ))));
    *res.status_mut() = StatusCode::BAD_REQUEST;
    res.headers_mut().insert(
        ::http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    res
}

async fn handle<S, ReqB, ResB>(
    config: Arc<HttpCacheLayer>,
    inner: S,
    req: Request<ReqB>,
) -> Result<Response<HttpCacheBody<ResB>>, S::Error>
where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Send + 'static,
    ReqB: Default + Send + 'static,
    ResB: Body<Data = Bytes> + Send + 'static,
    ResB::Error: Into<BoxError>,
{
    let store = &config.store;
    let mut req = req;
    // Before anything is read from it: the fields the key and the policy read are the
    // ones the origin gets.
    if let Err(why) = edge::prepare_request(&mut req, config.forwarded) {
        return Ok(refused(&why));
    }
    let method = req.method().clone();
    let primary = match primary_key(&config, &req) {
        Ok(key) => key,
        Err(why) => return Ok(refused(&why)),
    };
    if method != Method::GET && method != Method::HEAD {
        let unsafe_method = !matches!(method, Method::OPTIONS | Method::TRACE | Method::CONNECT);
        let (parts, body) = req.into_parts();
        let head = Request::from_parts(parts.clone(), ());
        let res = call_inner(inner, Request::from_parts(parts, body)).await?;
        if unsafe_method {
            let mut seen = Response::new(());
            *seen.status_mut() = res.status();
            for name in [::http::header::LOCATION, ::http::header::CONTENT_LOCATION] {
                if let Some(v) = res.headers().get(&name) {
                    seen.headers_mut().insert(name, v.clone());
                }
            }
            invalidate_after(store, &primary, &head, &seen).await;
        }
        return Ok(passthrough(&config, res));
    }
    let rules = RequestRules::of(req.headers());
    if rules.no_store || req.headers().contains_key(::http::header::RANGE) {
        let res = call_inner(inner, req).await?;
        return Ok(passthrough(&config, res));
    }
    let looked = look_up(store, &primary, req.headers(), &rules).await;
    let now = policy::unix_ms(SystemTime::now());
    // stale-while-revalidate (RFC 5861 section 3): serve the stale entry at once and
    // refresh it in the background, once per URL.
    let mut looked = match looked {
        Looked::Stale { entry, key, index } if while_revalidate(&entry, &rules, now) => {
            if let Join::Leader(guard) = config.inflight.join(&primary) {
                let refresh = Refresh {
                    config: config.clone(),
                    primary: primary.clone(),
                    key,
                    index,
                    entry: entry.clone(),
                    template: template_of(&req, &entry.vary),
                    guard,
                };
                tokio::spawn(refresh.run(inner.clone()));
            }
            return Ok(respond_from(
                &config,
                entry,
                Status::Stale,
                &method,
                req.headers(),
            ));
        }
        other => other,
    };
    // One request per URL asks the origin; the others wait for it, then look again.
    // Conditional requests go on their own (the origin may answer them 304).
    let conditional = req.headers().contains_key(::http::header::IF_NONE_MATCH)
        || req
            .headers()
            .contains_key(::http::header::IF_MODIFIED_SINCE);
    let mut leader = None;
    if method == Method::GET
        && matches!(looked, Looked::Miss { .. } | Looked::Stale { .. })
        && !rules.only_if_cached
        && !conditional
    {
        match config.inflight.join(&primary) {
            Join::Leader(guard) => leader = Some(guard),
            Join::Wait(notified) => {
                let _ = tokio::time::timeout(config.collapse_wait, notified).await;
                looked = look_up(store, &primary, req.headers(), &rules).await;
            }
        }
    }
    let (stale, index) = match looked {
        Looked::Hit(entry, status) => {
            return Ok(respond_from(&config, entry, status, &method, req.headers()));
        }
        Looked::Pass => {
            let res = call_inner(inner, req).await?;
            return Ok(passthrough(&config, res));
        }
        Looked::Stale { entry, key, index } => (Some((entry, key)), index),
        Looked::Miss { index } => (None, index),
    };
    if rules.only_if_cached {
        // RFC 9111 section 5.2.1.7.
        let mut res = Response::new(HttpCacheBody::full(Bytes::new()));
        *res.status_mut() = StatusCode::GATEWAY_TIMEOUT;
        mark(&config, &mut res, Status::Miss);
        return Ok(res);
    }
    // Tickets before the origin is asked: a write of the URL from now on voids the fill.
    let primary_ticket = store.ticket(&primary);
    let stale_ticket = stale.as_ref().map(|(_, key)| store.ticket(key));
    // The client's own fields: what the response to it is judged and built by.
    let req_headers = req.headers().clone();
    // A stale entry with a validator is revalidated (RFC 9111 section 4.3.1), unless the
    // client's own conditional request is passed on as it is.
    let validating = match &stale {
        Some((entry, _)) if !conditional => add_validators(req.headers_mut(), entry),
        _ => false,
    };
    let request_time = SystemTime::now();
    let res = match call_inner(inner, req).await {
        Ok(res) => res,
        Err(e) => {
            // stale-if-error (RFC 5861 section 4): the origin failed; a stale entry in
            // its window answers instead.
            return match stale {
                Some((entry, _)) if stale_if_error(&entry, &rules, now) => Ok(respond_from(
                    &config,
                    entry,
                    Status::Stale,
                    &method,
                    &req_headers,
                )),
                _ => Err(e),
            };
        }
    };
    let response_time = SystemTime::now();
    if let Some((entry, key)) = stale {
        if validating && res.status() == StatusCode::NOT_MODIFIED {
            let (updated, storable) = freshen(
                &config,
                entry,
                res.headers(),
                &req_headers,
                request_time,
                response_time,
            );
            if let (true, Some(ticket)) = (storable, stale_ticket) {
                store_entry(store, &key, &updated, ticket);
            }
            drop(leader);
            // The client sent no condition: it gets the whole response, even when the
            // updated one may not be stored (RFC 9111 section 4.3.3), never the bare 304.
            return Ok(respond_from(
                &config,
                updated,
                Status::Revalidated,
                &method,
                &req_headers,
            ));
        }
        if res.status().is_server_error() && stale_if_error(&entry, &rules, now) {
            drop(leader);
            return Ok(respond_from(
                &config,
                entry,
                Status::Stale,
                &method,
                &req_headers,
            ));
        }
    }
    let decision = policy::storable(
        &config.policy,
        &method,
        &req_headers,
        res.status(),
        res.headers(),
        request_time,
        response_time,
    );
    let freshness = match decision {
        Ok(f) => f,
        Err(why) => {
            if response_never_storable(res.headers()) {
                mark_pass(
                    &config,
                    &primary,
                    index,
                    primary_ticket,
                    &req_headers,
                    res.headers(),
                );
            }
            tracing::trace!(key = primary, why, "response not stored");
            return Ok(passthrough(&config, res));
        }
    };
    if res.body().size_hint().lower() > config.max_body as u64 {
        return Ok(passthrough(&config, res));
    }
    let (parts, body) = res.into_parts();
    let job = store_job(
        &config,
        &primary,
        index,
        primary_ticket,
        &req_headers,
        &parts,
        freshness,
        leader,
    );
    let mut parts = parts;
    if let Some(name) = &config.status_header {
        parts.headers.insert(name.clone(), Status::Miss.value());
    }
    Ok(Response::from_parts(
        parts,
        HttpCacheBody::tee(body, config.max_body, job),
    ))
}

/// Whether the stale `entry` may answer at once while it is refreshed in the background
/// (RFC 5861 section 3): within its `stale-while-revalidate` window, and the request does
/// not ask for more freshness than that.
fn while_revalidate(entry: &HttpEntry, rules: &RequestRules, now_ms: u64) -> bool {
    let f = &entry.freshness;
    !f.must_revalidate
        && !f.no_cache
        && !rules.no_cache
        && rules.max_age.is_none()
        && rules.min_fresh == 0
        && f.stale_while_revalidate > 0
        && f.stale_within(now_ms, f.stale_while_revalidate)
}

/// Whether the stale `entry` may answer because the origin failed (RFC 5861 section 4):
/// within the response's or the request's `stale-if-error` window.
fn stale_if_error(entry: &HttpEntry, rules: &RequestRules, now_ms: u64) -> bool {
    let f = &entry.freshness;
    let window = f.stale_if_error.max(rules.stale_if_error.unwrap_or(0));
    !f.must_revalidate && window > 0 && f.stale_within(now_ms, window)
}

/// Adds the entry's validators to a request; returns whether there were any.
fn add_validators(req: &mut HeaderMap, entry: &HttpEntry) -> bool {
    let mut added = false;
    if let Some(etag) = entry.headers.get(::http::header::ETAG) {
        req.insert(::http::header::IF_NONE_MATCH, etag.clone());
        added = true;
    }
    if let Some(lm) = entry.headers.get(::http::header::LAST_MODIFIED) {
        req.insert(::http::header::IF_MODIFIED_SINCE, lm.clone());
        added = true;
    }
    added
}

/// The stored response updated by a `304` (RFC 9111 section 4.3.4): the 304's fields
/// replace the stored ones of the same name, and the freshness is computed anew; and
/// whether the updated response may be stored. One that may not still answers the
/// request that was validated.
fn freshen(
    config: &HttpCacheLayer,
    entry: HttpEntry,
    not_modified: &HeaderMap,
    req: &HeaderMap,
    request_time: SystemTime,
    response_time: SystemTime,
) -> (HttpEntry, bool) {
    let mut headers = entry.headers;
    let mut fresh = not_modified.clone();
    headers::strip_hop_by_hop(&mut fresh);
    fresh.remove(::http::header::CONTENT_LENGTH);
    if let Some(name) = &config.status_header {
        fresh.remove(name);
    }
    for name in fresh.keys() {
        headers.remove(name);
    }
    for (name, value) in &fresh {
        headers.append(name.clone(), value.clone());
    }
    // The stored response's own request made it storable; the conditional one may carry
    // the client's credentials, which a 304 does not make shareable.
    let decision = policy::storable(
        &config.policy,
        &Method::GET,
        req,
        entry.status,
        &headers,
        request_time,
        response_time,
    );
    let storable = decision.is_ok();
    // Not storable: answered once, with the age the 304 gives.
    let freshness = decision.unwrap_or(policy::Freshness {
        response_time: policy::unix_ms(response_time),
        initial_age: headers::age(not_modified).unwrap_or(0),
        lifetime: 0,
        must_revalidate: true,
        no_cache: true,
        validator: false,
        stale_while_revalidate: 0,
        stale_if_error: 0,
    });
    let entry = HttpEntry {
        headers,
        freshness,
        ..entry
    };
    (entry, storable)
}

/// Stores a whole entry under `key` (a revalidated one).
fn store_entry(store: &Cache, key: &str, entry: &HttpEntry, ticket: Ticket) {
    let ttl = entry.freshness.keep_for(policy::unix_ms(SystemTime::now()));
    if let Some(bytes) = entry::encode_entry(entry) {
        let _ = store.store_loaded(key, bytes, ttl, EntryMeta::default(), ticket);
    }
}

/// What the body of a storable response stores once it ends.
#[allow(clippy::too_many_arguments)]
fn store_job(
    config: &HttpCacheLayer,
    primary: &str,
    index: Option<(u64, Vec<HeaderName>)>,
    primary_ticket: Ticket,
    req_headers: &HeaderMap,
    parts: &::http::response::Parts,
    freshness: policy::Freshness,
    leader: Option<LeaderGuard>,
) -> StoreJob {
    let store = &config.store;
    let names = headers::vary(&parts.headers).unwrap_or_default();
    let (key, index_record) = if names.is_empty() {
        (primary.to_owned(), None)
    } else {
        let epoch = match index {
            Some((epoch, old)) if old == names => epoch,
            _ => new_epoch(),
        };
        let values = vary_values(req_headers, &names);
        (
            variant_key(primary, epoch, &values),
            entry::encode_index(epoch, &names),
        )
    };
    let ticket = if key == primary {
        primary_ticket.clone()
    } else {
        store.ticket(&key)
    };
    let mut stored_headers = parts.headers.clone();
    headers::strip_hop_by_hop(&mut stored_headers);
    stored_headers.remove(::http::header::AGE);
    if let Some(name) = &config.status_header {
        stored_headers.remove(name);
    }
    StoreJob {
        store: store.clone(),
        primary: primary.to_owned(),
        key,
        index: index_record.map(|i| (i, primary_ticket)),
        head: HttpEntry {
            status: parts.status,
            headers: stored_headers,
            body: Bytes::new(),
            freshness,
            vary: vary_values(req_headers, &names),
        },
        tags: surrogate_keys(&parts.headers),
        ticket,
        _leader: leader,
    }
}

/// A request to refresh a stale entry in the background: the URL and the request
/// headers the entry's key was made of (the host, the fields it varies on, and the
/// forwarding fields when they are keyed; otherwise the request has none of those).
fn template_of<B>(req: &Request<B>, vary: &[(HeaderName, Option<Vec<u8>>)]) -> Request<()> {
    let mut t = Request::new(());
    *t.uri_mut() = req.uri().clone();
    let forwarding = req
        .headers()
        .keys()
        .filter(|n| edge::is_forwarding_field(n));
    let mut names: Vec<&HeaderName> = vec![&::http::header::HOST];
    names.extend(forwarding);
    names.extend(vary.iter().map(|(n, _)| n));
    names.dedup();
    for name in names {
        if t.headers().contains_key(name) {
            continue;
        }
        for v in req.headers().get_all(name) {
            t.headers_mut().append(name.clone(), v.clone());
        }
    }
    t
}

/// A background refresh of a stale entry (`stale-while-revalidate`).
struct Refresh {
    config: Arc<HttpCacheLayer>,
    primary: String,
    key: String,
    index: Option<(u64, Vec<HeaderName>)>,
    entry: HttpEntry,
    template: Request<()>,
    guard: LeaderGuard,
}

impl Refresh {
    async fn run<S, ReqB, ResB>(self, inner: S)
    where
        S: Service<Request<ReqB>, Response = Response<ResB>>,
        ReqB: Default,
        ResB: Body<Data = Bytes>,
        ResB::Error: Into<BoxError>,
    {
        let store = &self.config.store;
        let stale_ticket = store.ticket(&self.key);
        let primary_ticket = store.ticket(&self.primary);
        let (parts, ()) = self.template.into_parts();
        let mut req = Request::from_parts(parts, ReqB::default());
        add_validators(req.headers_mut(), &self.entry);
        let req_headers = req.headers().clone();
        let request_time = SystemTime::now();
        let Ok(res) = call_inner(inner, req).await else {
            return;
        };
        let response_time = SystemTime::now();
        if res.status() == StatusCode::NOT_MODIFIED {
            let (e, storable) = freshen(
                &self.config,
                self.entry,
                res.headers(),
                &req_headers,
                request_time,
                response_time,
            );
            if storable {
                store_entry(store, &self.key, &e, stale_ticket);
            }
            return;
        }
        let Ok(freshness) = policy::storable(
            &self.config.policy,
            &Method::GET,
            &req_headers,
            res.status(),
            res.headers(),
            request_time,
            response_time,
        ) else {
            return;
        };
        let (parts, body) = res.into_parts();
        let job = store_job(
            &self.config,
            &self.primary,
            self.index,
            primary_ticket,
            &req_headers,
            &parts,
            freshness,
            Some(self.guard),
        );
        // Nobody reads this body: drain it through the tee so that it is stored.
        let mut tee = std::pin::pin!(HttpCacheBody::tee(body, self.config.max_body, job));
        while let Some(frame) = std::future::poll_fn(|cx| tee.as_mut().poll_frame(cx)).await {
            if frame.is_err() {
                break;
            }
        }
    }
}

/// Marks pass the variant of the URL a never-storable response answered, and only that
/// one: the URL's stored variants stay served. Without variants (no index, and the
/// response does not vary), the whole URL.
fn mark_pass(
    config: &HttpCacheLayer,
    primary: &str,
    index: Option<(u64, Vec<HeaderName>)>,
    primary_ticket: Ticket,
    req: &HeaderMap,
    res: &HeaderMap,
) {
    let store = &config.store;
    let (epoch, names) = match index {
        Some(index) => index,
        None => {
            let names = headers::vary(res).unwrap_or_default();
            if names.is_empty() {
                store.mark_pass_key(primary, config.pass_ttl);
                return;
            }
            // An index for the mark to hang from; a later storable response of the same
            // Vary keeps it (and its epoch).
            let epoch = new_epoch();
            let Some(record) = entry::encode_index(epoch, &names) else {
                return;
            };
            let _ = store.store_loaded(
                primary,
                record,
                config.pass_ttl,
                EntryMeta::default(),
                primary_ticket,
            );
            (epoch, names)
        }
    };
    let key = variant_key(primary, epoch, &vary_values(req, &names));
    store.mark_pass_key(&key, config.pass_ttl);
}

/// Whether a response may never be stored whoever asks (so the URL is worth marking
/// pass), as opposed to one the request made unstorable.
fn response_never_storable(res: &HeaderMap) -> bool {
    let cc = headers::CacheControl::parse(res);
    cc.no_store
        || cc.private
        || cc.malformed
        || res.contains_key(::http::header::SET_COOKIE)
        || headers::vary(res).is_none()
}

/// Tags from `Surrogate-Key` and `xkey` (space-separated), stored with the entry.
fn surrogate_keys(res: &HeaderMap) -> Tags {
    res.get_all("surrogate-key")
        .iter()
        .chain(res.get_all("xkey").iter())
        .flat_map(|v| v.as_bytes().split(u8::is_ascii_whitespace))
        .filter(|t| !t.is_empty())
        .take(256)
        // A tag is bytes on the wire; one that is not UTF-8 is kept, its bad bytes
        // replaced, rather than dropped.
        .map(|t| {
            String::from_utf8_lossy(t)
                .chars()
                .take(256)
                .collect::<String>()
        })
        .collect()
}

/// What a streamed body stores once it ends whole within the limit.
struct StoreJob {
    store: Cache,
    primary: String,
    key: String,
    index: Option<(Bytes, Ticket)>,
    head: HttpEntry,
    tags: Tags,
    ticket: Ticket,
    /// Held until the body ends: requests waiting for this URL wake when it drops.
    _leader: Option<LeaderGuard>,
}

impl StoreJob {
    fn finish(self, body: Bytes) {
        let now = policy::unix_ms(SystemTime::now());
        let ttl = self.head.freshness.keep_for(now);
        let entry = HttpEntry { body, ..self.head };
        let Some(bytes) = entry::encode_entry(&entry) else {
            return;
        };
        let meta = EntryMeta {
            version: 0,
            tags: self.tags.clone(),
        };
        if let Some((index, ticket)) = self.index {
            let _ =
                self.store
                    .store_loaded(&self.primary, index, ttl, EntryMeta::default(), ticket);
        }
        if let Err(e) = self
            .store
            .store_loaded(&self.key, bytes, ttl, meta, self.ticket)
        {
            tracing::debug!(error = %e, key = self.key, "response not stored");
        }
    }
}

// === single flight ===

/// The URLs being fetched, each with the requests waiting for it.
#[derive(Default)]
struct Inflight {
    map: Mutex<HashMap<String, Arc<Notify>>>,
}

enum Join {
    Leader(LeaderGuard),
    Wait(tokio::sync::futures::OwnedNotified),
}

impl Inflight {
    fn join(self: &Arc<Self>, key: &str) -> Join {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get(key) {
            // Created under the lock, before the leader can notify: no wake-up is lost.
            return Join::Wait(n.clone().notified_owned());
        }
        map.insert(key.to_owned(), Arc::new(Notify::new()));
        Join::Leader(LeaderGuard {
            inflight: self.clone(),
            key: key.to_owned(),
        })
    }
}

/// The right to fetch a URL for everyone; dropping it wakes the waiters.
struct LeaderGuard {
    inflight: Arc<Inflight>,
    key: String,
}

impl Drop for LeaderGuard {
    fn drop(&mut self) {
        let removed = self
            .inflight
            .map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.key);
        if let Some(n) = removed {
            n.notify_waiters();
        }
    }
}

// === body ===

pin_project! {
    /// The body of a response from an [`HttpCacheService`]: stored bytes, the origin's
    /// body passed through, or the origin's body streamed through while a copy is kept
    /// for the store.
    pub struct HttpCacheBody<B> {
        #[pin]
        kind: BodyKind<B>,
    }
}

pin_project! {
    #[project = BodyProj]
    enum BodyKind<B> {
        Full { data: Option<Bytes> },
        Streaming { #[pin] inner: B },
        Tee {
            #[pin]
            inner: B,
            copy: BytesMut,
            limit: usize,
            job: Option<StoreJob>,
        },
    }
}

impl<B> fmt::Debug for HttpCacheBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpCacheBody").finish_non_exhaustive()
    }
}

impl<B> Default for HttpCacheBody<B> {
    fn default() -> Self {
        Self::full(Bytes::new())
    }
}

impl<B> HttpCacheBody<B> {
    fn full(data: Bytes) -> Self {
        Self {
            kind: BodyKind::Full {
                data: (!data.is_empty()).then_some(data),
            },
        }
    }

    fn streaming(inner: B) -> Self {
        Self {
            kind: BodyKind::Streaming { inner },
        }
    }

    fn tee(inner: B, limit: usize, job: StoreJob) -> Self {
        Self {
            kind: BodyKind::Tee {
                inner,
                copy: BytesMut::new(),
                limit,
                job: Some(job),
            },
        }
    }
}

impl<B> Body for HttpCacheBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project().kind.project() {
            BodyProj::Full { data } => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            BodyProj::Streaming { inner } => inner.poll_frame(cx).map_err(Into::into),
            BodyProj::Tee {
                mut inner,
                copy,
                limit,
                job,
            } => match std::task::ready!(inner.as_mut().poll_frame(cx)) {
                Some(Ok(frame)) => {
                    if let Some(data) = frame.data_ref() {
                        if copy.len().saturating_add(data.len()) > *limit {
                            // Over the limit: streams on, is not stored; waiters go on.
                            job.take();
                            *copy = BytesMut::new();
                        } else if job.is_some() {
                            copy.extend_from_slice(data);
                        }
                    }
                    // A server stops polling a body that says it has ended (a known
                    // length, all sent): store now rather than wait for a last poll.
                    if job.is_some() && inner.is_end_stream() {
                        if let Some(job) = job.take() {
                            job.finish(std::mem::take(copy).freeze());
                        }
                    }
                    Poll::Ready(Some(Ok(frame)))
                }
                Some(Err(e)) => {
                    // An aborted body is not stored.
                    job.take();
                    Poll::Ready(Some(Err(e.into())))
                }
                None => {
                    if let Some(job) = job.take() {
                        job.finish(std::mem::take(copy).freeze());
                    }
                    Poll::Ready(None)
                }
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            BodyKind::Full { data } => data.is_none(),
            BodyKind::Streaming { inner } => inner.is_end_stream(),
            // The copy is stored by the time this is true (see `poll_frame`).
            BodyKind::Tee { job, inner, .. } => job.is_none() && inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            BodyKind::Full { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            BodyKind::Streaming { inner } | BodyKind::Tee { inner, .. } => inner.size_hint(),
        }
    }
}
