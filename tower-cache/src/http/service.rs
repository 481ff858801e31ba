//! [`HttpCacheService`]: looks a request up, serves, revalidates or forwards it.

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::SystemTime;

use ::http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use bytes::Bytes;
use http_body::Body;
use tower_service::Service;

use super::edge::{self, RequestRefused};
use super::entry::{self, HttpEntry, Record};
use super::headers;
use super::policy::{self, RequestRules};
use super::range;
use super::{body::*, collapse::*, key::*, layer::*, store::*};
use crate::cache::{Cache, Found};
use crate::service::ready_call as call_inner;
use crate::BoxError;

/// The service of an [`HttpCacheLayer`].
///
/// `poll_ready` is always ready: a hit never waits for the inner service. A miss waits for
/// the inner service's readiness in its response future, on a clone of it.
pub struct HttpCacheService<S> {
    pub(super) inner: S,
    pub(super) config: Arc<HttpCacheLayer>,
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

pub(super) type BoxFuture<T, E> = Pin<Box<dyn std::future::Future<Output = Result<T, E>> + Send>>;

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

/// What a lookup found for a request.
pub(super) enum Looked {
    /// A stored response that may answer the request; its body is in the entry, or held
    /// by the disk tier and read in parts as it is sent.
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
    /// A stored part (a `206`) that cannot answer the request: asked of the origin as a
    /// miss, and what it answers may be combined with the part (RFC 9111 section 3.4).
    Part {
        entry: HttpEntry,
        index: Option<(u64, Vec<HeaderName>)>,
    },
    /// The URL is marked pass.
    Pass,
}

pub(super) async fn look_up(
    config: &HttpCacheLayer,
    primary: &str,
    method: &Method,
    req: &HeaderMap,
    rules: &RequestRules,
    now: u64,
) -> Looked {
    let store = &config.store;
    let (entry, from_disk, key, index) = match fetch(store, primary).await {
        Fetched::Pass => return Looked::Pass,
        Fetched::Miss => return Looked::Miss { index: None },
        Fetched::Entry(e, disk) if e.vary.is_empty() => (e, disk, primary.to_owned(), None),
        Fetched::Index { epoch, names } => {
            let values = vary_values(req, &names, config.negotiation);
            let key = variant_key(primary, epoch, &values);
            let index = Some((epoch, names));
            match fetch(store, &key).await {
                // Matched by the stored response's own Vary list (RFC 9111 section
                // 4.1), which may differ from the index's.
                Fetched::Entry(e, disk) if matches_request(&e, req, config.negotiation) => {
                    (e, disk, key, index)
                }
                // This variant is marked pass; the others are not.
                Fetched::Pass => return Looked::Pass,
                _ => return Looked::Miss { index },
            }
        }
        // An entry with Vary under the primary key: nothing usable.
        Fetched::Entry(..) => return Looked::Miss { index: None },
    };
    let servable = policy::servable(&entry.freshness, rules, now);
    if entry.status == StatusCode::PARTIAL_CONTENT {
        // RFC 9111 section 3.3: a stored part answers only a GET for a range wholly
        // within it, and only while it is fresh (a part is not revalidated).
        let answers = method == Method::GET
            && servable
            && range::piece_answers(req, &entry.headers, entry.body_len()).is_some();
        if !answers {
            return Looked::Part { entry, index };
        }
    }
    if servable {
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

/// What a key of the store holds, as the HTTP cache reads it.
// Lives on the stack for one lookup; boxing the entry would add an allocation to every
// hit.
#[allow(clippy::large_enum_variant)]
enum Fetched {
    /// A stored response and whether it came from the disk tier (whose body the disk
    /// tier may hold in parts: [`HttpEntry::on_disk`]).
    Entry(HttpEntry, bool),
    Index {
        epoch: u64,
        names: Vec<HeaderName>,
    },
    Pass,
    /// Nothing, or nothing that decodes.
    Miss,
}

/// Reads `key`: from memory, or from disk, where a response too large for the memory
/// tier is opened in parts: its head is decoded from the record's first block (or, for
/// a head longer than that, from a prefix read in doubling steps) and its body stays on
/// disk, read as it is sent.
async fn fetch(store: &Cache, key: &str) -> Fetched {
    // A fresh memory entry (the common hit) without the single-flight lookup.
    if let Some(hit) = store.memory_hit(key) {
        return decoded(&hit.value, false);
    }
    let record = match store.lookup_in_parts(key).await {
        Found::Hit(s, disk) => return decoded(&s.value, disk),
        Found::Pass => return Fetched::Pass,
        Found::Leader(_) => return Fetched::Miss,
        Found::Record(record) => record,
    };
    let total = record.len();
    let mut head = record.first_block().clone();
    loop {
        if let Some((e, at, len)) = entry::decode_head(&head) {
            if (at as u64).checked_add(len) != Some(total) {
                return Fetched::Miss;
            }
            let body = DiskBody {
                record,
                offset: at as u64,
                len,
            };
            return Fetched::Entry(
                HttpEntry {
                    on_disk: Some(Box::new(body)),
                    ..e
                },
                true,
            );
        }
        let read = head.len() as u64;
        if read >= total {
            // Not an entry (nothing else the HTTP cache stores is this large).
            return Fetched::Miss;
        }
        let more = usize::try_from(total.min(read.saturating_mul(2).max(1))).unwrap_or(usize::MAX);
        head = match record.read_async(0, more).await {
            Ok(bytes) => bytes,
            Err(e) => {
                tracing::warn!(error = %e, key, "disk tier read failed; going to the origin");
                return Fetched::Miss;
            }
        };
    }
}

fn decoded(bytes: &Bytes, from_disk: bool) -> Fetched {
    match entry::decode(bytes) {
        Some(Record::Entry(e)) => Fetched::Entry(e, from_disk),
        Some(Record::Index { epoch, names }) => Fetched::Index { epoch, names },
        None => Fetched::Miss,
    }
}

/// Whether the request's values of the fields a stored variant varies on are the ones
/// it was stored for.
fn matches_request(entry: &HttpEntry, req: &HeaderMap, negotiation: bool) -> bool {
    !entry.vary.is_empty()
        && entry
            .vary
            .iter()
            .all(|(name, value)| headers::vary_value(req, name, negotiation) == *value)
}

/// Whether a client's conditional GET/HEAD is satisfied by `entry` (RFC 9110 section
/// 13.1): answer 304. Only a stored 2xx is evaluated (section 13.2.1): any other status
/// is sent as it is.
pub(super) fn not_modified(req: &HeaderMap, entry: &HttpEntry) -> bool {
    if !entry.status.is_success() {
        return false;
    }
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

/// The answer from a stored `entry`: the whole response, a range of it, `304` or `416`
/// as the request asks. A body the disk tier holds ([`HttpEntry::on_disk`]) is read from
/// disk chunk by chunk as it is sent, the range asked for only, never whole.
pub(super) fn respond_from<B>(
    config: &HttpCacheLayer,
    mut entry: HttpEntry,
    status: Status,
    now: u64,
    method: &Method,
    req: &HeaderMap,
) -> Response<HttpCacheBody<B>> {
    let age = entry.freshness.age(now);
    let unchanged = not_modified(req, &entry);
    let mut headers = entry.headers;
    if let Some(body) = entry.on_disk.take().map(|b| *b) {
        if let Some(name) = &config.status_header {
            headers.insert(name.clone(), status.value());
        }
        headers.insert(::http::header::AGE, HeaderValue::from(age));
        let ranged = method == Method::GET && req.contains_key(::http::header::RANGE);
        let (code, body) = if unchanged {
            headers.remove(::http::header::CONTENT_LENGTH);
            headers.remove(::http::header::CONTENT_RANGE);
            (StatusCode::NOT_MODIFIED, HttpCacheBody::default())
        } else if method == Method::HEAD {
            (entry.status, HttpCacheBody::default())
        } else if ranged && entry.status == StatusCode::OK {
            match range::plan_complete(req, &mut headers, body.len) {
                range::Plan::Whole => (entry.status, HttpCacheBody::disk(body)),
                range::Plan::Unsatisfiable => {
                    (StatusCode::RANGE_NOT_SATISFIABLE, HttpCacheBody::default())
                }
                range::Plan::Part(r) => (
                    StatusCode::PARTIAL_CONTENT,
                    HttpCacheBody::disk(body.part(r.first, r.len())),
                ),
            }
        } else if ranged && entry.status == StatusCode::PARTIAL_CONTENT {
            // A stored 206 answers only ranges it covers (the lookup checked).
            match range::plan_piece(req, &mut headers, body.len) {
                Some((from, len)) => (entry.status, HttpCacheBody::disk(body.part(from, len))),
                None => (entry.status, HttpCacheBody::disk(body)),
            }
        } else {
            // No `Range`, or a status that ignores it.
            (entry.status, HttpCacheBody::disk(body))
        };
        let mut res = Response::new(body);
        *res.status_mut() = code;
        *res.headers_mut() = headers;
        return res;
    }
    headers.insert(::http::header::AGE, HeaderValue::from(age));
    if let Some(name) = &config.status_header {
        headers.insert(name.clone(), status.value());
    }
    let (code, body) = if unchanged {
        // RFC 9110 section 15.4.5: the fields a 200 would have sent, no content.
        headers.remove(::http::header::CONTENT_LENGTH);
        headers.remove(::http::header::CONTENT_RANGE);
        (StatusCode::NOT_MODIFIED, Bytes::new())
    } else if method == Method::HEAD {
        // RFC 9110 section 14.2: range handling is defined for GET only; a HEAD gets
        // the head of the whole response.
        (entry.status, Bytes::new())
    } else if !req.contains_key(::http::header::RANGE) {
        (entry.status, entry.body)
    } else if entry.status == StatusCode::OK {
        range::from_complete(req, &mut headers, entry.body)
    } else if entry.status == StatusCode::PARTIAL_CONTENT {
        // A stored 206 answers only ranges it covers (the caller checked).
        match range::from_piece(req, &mut headers, entry.body.clone()) {
            Some(answer) => answer,
            None => (entry.status, entry.body),
        }
    } else {
        // Any other stored status ignores the Range (RFC 9110 section 14.2).
        (entry.status, entry.body)
    };
    let mut res = Response::new(HttpCacheBody::full(body));
    *res.status_mut() = code;
    *res.headers_mut() = headers;
    res
}

pub(super) fn mark<B>(config: &HttpCacheLayer, res: &mut Response<B>, status: Status) {
    if let Some(name) = &config.status_header {
        res.headers_mut().insert(name.clone(), status.value());
    }
}

pub(super) fn passthrough<B>(
    config: &HttpCacheLayer,
    res: Response<B>,
) -> Response<HttpCacheBody<B>> {
    let mut res = res.map(HttpCacheBody::streaming);
    mark(config, &mut res, Status::Pass);
    res
}

/// Invalidates the URLs a successful unsafe request changed (RFC 9111 section 4.4): the
/// target URI and same-origin `Location` and `Content-Location`.
pub(super) async fn invalidate_after<B>(
    store: &Cache,
    req_key: &str,
    req: &Request<B>,
    res: &Response<()>,
) {
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
pub(super) fn refused<B>(why: &RequestRefused) -> Response<HttpCacheBody<B>> {
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

pub(super) async fn handle<S, ReqB, ResB>(
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
    // Read before the edge removes `Transfer-Encoding` (a hop-by-hop field).
    let carries_content = edge::carries_content(req.headers());
    // Before anything is read from it: the fields the key and the policy read are the
    // ones the origin gets.
    if let Err(why) = edge::prepare_once(&mut req, config.forwarded) {
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
    // A GET or HEAD with content goes to the origin with it, but the content is not in
    // the key: an origin that reads it would have its answer to one client's content
    // stored for everyone. Passed, never stored. So are requests with preconditions the
    // cache does not evaluate (`If-Match`, `If-Unmodified-Since`): the answer to one
    // client's precondition (a 412) is not an answer for everyone.
    let unevaluated_precondition = req.headers().contains_key(::http::header::IF_MATCH)
        || req
            .headers()
            .contains_key(::http::header::IF_UNMODIFIED_SINCE);
    if rules.no_store || carries_content || unevaluated_precondition {
        let res = call_inner(inner, req).await?;
        return Ok(passthrough(&config, res));
    }
    // The clock is read once for the lookup, the freshness checks and the `Age` of a hit.
    let now = policy::unix_ms(SystemTime::now());
    let looked = look_up(&config, &primary, &method, req.headers(), &rules, now).await;
    // stale-while-revalidate (RFC 5861 section 3): serve the stale entry at once and
    // refresh it in the background, once per URL.
    let mut looked = match looked {
        Looked::Stale { entry, key, index } if while_revalidate(&entry, &rules, now) => {
            // Refreshes have a slot of their own: a miss of the URL never waits on one.
            if let Join::Leader(guard) = config.inflight.join(&refresh_slot(&primary)) {
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
                now,
                &method,
                req.headers(),
            ));
        }
        other => other,
    };
    // One request per URL asks the origin; the others wait for it, then look again.
    // Conditional requests go on their own (the origin may answer them 304), and so do
    // range requests (the origin may answer them with a part).
    let conditional = req.headers().contains_key(::http::header::IF_NONE_MATCH)
        || req
            .headers()
            .contains_key(::http::header::IF_MODIFIED_SINCE);
    let mut leader = None;
    let mut looked_at = now;
    if method == Method::GET
        && matches!(
            looked,
            Looked::Miss { .. } | Looked::Stale { .. } | Looked::Part { .. }
        )
        && !rules.only_if_cached
        && !conditional
        && !req.headers().contains_key(::http::header::RANGE)
    {
        match config.inflight.join(&primary) {
            Join::Leader(guard) => leader = Some(guard),
            Join::Wait(notified) => {
                let _ = tokio::time::timeout(config.collapse_wait, notified).await;
                looked_at = policy::unix_ms(SystemTime::now());
                looked =
                    look_up(&config, &primary, &method, req.headers(), &rules, looked_at).await;
            }
        }
    }
    // A stored part this request's answer may be combined with.
    let mut part = None;
    let (stale, index) = match looked {
        Looked::Hit(entry, status) => {
            return Ok(respond_from(
                &config,
                entry,
                status,
                looked_at,
                &method,
                req.headers(),
            ));
        }
        Looked::Pass => {
            let res = call_inner(inner, req).await?;
            return Ok(passthrough(&config, res));
        }
        Looked::Stale { entry, key, index } => (Some((entry, key)), index),
        Looked::Miss { index } => (None, index),
        Looked::Part { entry, index } => {
            part = Some(entry);
            (None, index)
        }
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
    let order = crate::disk::DiskTier::next_order();
    let stale_ticket = stale.as_ref().map(|(_, key)| store.ticket(key));
    // The client's own fields: what the response to it is judged and built by.
    let req_headers = req.headers().clone();
    // A stale entry with a validator is revalidated (RFC 9111 section 4.3.1), unless the
    // client's own conditional request is passed on as it is.
    let validating = match &stale {
        Some((entry, _)) if !conditional => add_validators(req.headers_mut(), entry),
        _ => false,
    };
    // What it takes to ask again without the validators, should the origin answer with a
    // `304` for another representation than the stored one.
    let retry = validating.then(|| (inner.clone(), req.uri().clone(), req.version()));
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
                    policy::unix_ms(SystemTime::now()),
                    &method,
                    &req_headers,
                )),
                _ => Err(e),
            };
        }
    };
    let mut response_time = SystemTime::now();
    let (mut res, mut stale) = (res, stale);
    let other_representation = res.status() == StatusCode::NOT_MODIFIED
        && stale
            .as_ref()
            .is_some_and(|(entry, _)| !updates(res.headers(), entry));
    if let (true, Some((inner, uri, version))) = (other_representation, retry) {
        // RFC 9111 section 4.3.4: a `304` that names another representation updates no
        // stored response; the client, which sent no condition, gets the whole response
        // (the same method: a HEAD stays a HEAD).
        let mut again = Request::new(ReqB::default());
        *again.method_mut() = method.clone();
        *again.uri_mut() = uri;
        *again.version_mut() = version;
        *again.headers_mut() = req_headers.clone();
        res = match call_inner(inner, again).await {
            Ok(res) => res,
            // The origin failed: a stale entry in its `stale-if-error` window answers.
            Err(e) => {
                return match stale {
                    Some((entry, _)) if stale_if_error(&entry, &rules, now) => Ok(respond_from(
                        &config,
                        entry,
                        Status::Stale,
                        policy::unix_ms(SystemTime::now()),
                        &method,
                        &req_headers,
                    )),
                    _ => Err(e),
                };
            }
        };
        response_time = SystemTime::now();
        if res.status().is_server_error() {
            if let Some((entry, _)) = stale.take() {
                if stale_if_error(&entry, &rules, now) {
                    return Ok(respond_from(
                        &config,
                        entry,
                        Status::Stale,
                        policy::unix_ms(SystemTime::now()),
                        &method,
                        &req_headers,
                    ));
                }
            }
        }
        stale = None;
    }
    let mut stale_entry = None;
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
                policy::unix_ms(SystemTime::now()),
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
                policy::unix_ms(SystemTime::now()),
                &method,
                &req_headers,
            ));
        }
        stale_entry = Some(entry);
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
            // A request with credentials may get an answer for its client alone
            // (`private` to a cookie): that says nothing of the URL's shared response,
            // which stays stored and served.
            let credentials = req_headers.contains_key(::http::header::AUTHORIZATION)
                || req_headers.contains_key(::http::header::COOKIE);
            if !credentials && response_never_storable(&config.policy, res.headers()) {
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
    // A 206 is stored only as one part of a known length, answering a range asked for
    // (RFC 9111 section 3.3); a multipart one is passed.
    let partial = res.status() == StatusCode::PARTIAL_CONTENT;
    if res.body().size_hint().lower() > config.max_body as u64
        || varies_on_forwarding(res.headers())
        || (partial
            && !(req_headers.contains_key(::http::header::RANGE)
                && range::content_range(res.headers()).is_some()))
    {
        return Ok(passthrough(&config, res));
    }
    // What a part may be combined with: the stored part, or the stale whole response.
    let before = match (partial, part, stale_entry) {
        (false, _, _) => None,
        (true, Some(part), _) => Some(part),
        (true, None, stale) => stale,
    };
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
        before,
        order,
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
pub(super) fn while_revalidate(entry: &HttpEntry, rules: &RequestRules, now_ms: u64) -> bool {
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
pub(super) fn stale_if_error(entry: &HttpEntry, rules: &RequestRules, now_ms: u64) -> bool {
    let f = &entry.freshness;
    let window = f.stale_if_error.max(rules.stale_if_error.unwrap_or(0));
    !f.must_revalidate && window > 0 && f.stale_within(now_ms, window)
}

/// Adds the entry's validators to a request; returns whether there were any.
pub(super) fn add_validators(req: &mut HeaderMap, entry: &HttpEntry) -> bool {
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

mod revalidate;
pub(super) use self::revalidate::{freshen, updates};

#[cfg(test)]
mod tests;
