//! The rules of a shared HTTP cache (RFC 9111): what may be stored, for how long, and
//! what may be served to which request.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ::http::{HeaderMap, HeaderName, Method, StatusCode};

use super::headers::{self, CacheControl, Delta};

/// Settings of the HTTP policy; the defaults follow RFC 9111 for a shared cache and store
/// only what a response says may be stored.
///
/// Cheap to clone (the target list is shared).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HttpPolicy {
    store_set_cookie: bool,
    heuristic: Option<(f64, Duration)>,
    default_ttl: Option<Duration>,
    targets: Arc<[HeaderName]>,
}

/// The targeted field of RFC 9213 meant for CDN caches: `CDN-Cache-Control`.
pub const CDN_CACHE_CONTROL: HeaderName = HeaderName::from_static("cdn-cache-control");

impl HttpPolicy {
    /// The RFC 9111 shared-cache policy with its conservative defaults: no heuristic
    /// freshness, no default TTL, responses with `Set-Cookie` not stored.
    pub fn new() -> Self {
        Self::default()
    }

    /// Stores responses that carry `Set-Cookie` (off by default: a session cookie stored
    /// in a shared cache is handed to every client). Turn on only when the origin's cookies
    /// are the same for everyone.
    pub fn store_set_cookie(mut self, store: bool) -> Self {
        self.store_set_cookie = store;
        self
    }

    /// Heuristic freshness (RFC 9111 section 4.2.2) for responses without explicit
    /// freshness but with `Last-Modified` and a status cacheable by default: `fraction`
    /// of the time since the last modification (10% is usual), at most `max`. Off by
    /// default. A fraction outside `[0, 1]` is clamped.
    pub fn heuristic(mut self, fraction: f64, max: Duration) -> Self {
        let fraction = if fraction.is_nan() {
            0.0
        } else {
            fraction.clamp(0.0, 1.0)
        };
        self.heuristic = Some((fraction, max));
        self
    }

    /// A freshness lifetime for responses that state none and have a status cacheable by
    /// default (after the heuristic, if that is on). Off by default.
    pub fn default_ttl(mut self, ttl: Duration) -> Self {
        self.default_ttl = Some(ttl);
        self
    }

    /// The targeted cache-control fields (RFC 9213) this cache obeys, most specific first:
    /// for example `[CDN_CACHE_CONTROL]`, or a field of its own before it
    /// (`[my-cdn-cache-control, cdn-cache-control]`). None by default.
    ///
    /// In a response that holds one of them with a valid, non-empty value, the first such
    /// field (in this order) is the response's caching policy for this cache, and its
    /// `Cache-Control` and `Expires` are ignored; a field that is empty or not a valid
    /// Structured Fields Dictionary is ignored as if absent (section 2.2). The response
    /// is forwarded with its `Cache-Control` and its targeted fields as the origin sent
    /// them, so that caches further down (a browser, another CDN) apply their own.
    pub fn target_fields(mut self, names: impl IntoIterator<Item = HeaderName>) -> Self {
        let mut list: Vec<HeaderName> = Vec::new();
        for name in names {
            if !list.contains(&name) {
                list.push(name);
            }
        }
        self.targets = list.into();
        self
    }

    /// The targeted fields obeyed, most specific first.
    pub fn targets(&self) -> &[HeaderName] {
        &self.targets
    }

    /// The cache directives of a response for this cache: those of the first targeted
    /// field that is present and valid, or else `Cache-Control`'s; and whether they came
    /// from a targeted field.
    pub(crate) fn directives_of(&self, res: &HeaderMap) -> (CacheControl, bool) {
        for name in self.targets.iter() {
            if let Some(cc) = CacheControl::parse_targeted(res, name) {
                return (cc, true);
            }
        }
        (CacheControl::parse(res), false)
    }

    /// [`Self::directives_of`] without the origin.
    pub(crate) fn response_directives(&self, res: &HeaderMap) -> CacheControl {
        self.directives_of(res).0
    }
}

/// What a request asks of the cache (RFC 9111 section 5.2.1).
#[derive(Debug, Clone, Default)]
pub(crate) struct RequestRules {
    pub(crate) no_store: bool,
    /// `no-cache`, or `Pragma: no-cache` without `Cache-Control`: a stored response may
    /// not be used without validation.
    pub(crate) no_cache: bool,
    pub(crate) max_age: Option<u64>,
    pub(crate) max_stale: Option<u64>,
    pub(crate) min_fresh: u64,
    pub(crate) only_if_cached: bool,
    /// The request's own `stale-if-error` window (RFC 5861 section 4).
    pub(crate) stale_if_error: Option<u64>,
}

impl RequestRules {
    pub(crate) fn of(headers: &HeaderMap) -> Self {
        let cc = CacheControl::parse(headers);
        let has_cc = headers.contains_key(::http::header::CACHE_CONTROL);
        // `max-age=0` asks for a response of age 0; a stored one has some age, however
        // small (and clients send it to mean "reload"): go to the origin, as `no-cache`.
        let max_age_zero = cc.max_age.is_some_and(|d| d.or(0) == 0);
        Self {
            // A directive list that cannot be read may have said `no-store`: neither
            // serve from the cache nor store.
            no_store: cc.no_store || cc.malformed,
            no_cache: cc.no_cache || max_age_zero || (!has_cc && headers::pragma_no_cache(headers)),
            // An invalid request max-age asks for nothing stored: 0.
            max_age: cc.max_age.map(|d| d.or(0)),
            // An invalid max-stale accepts no staleness.
            max_stale: cc.max_stale.map(|d| d.or(0)),
            min_fresh: cc.min_fresh.map_or(0, |d| d.or(headers::DELTA_MAX)),
            only_if_cached: cc.only_if_cached,
            stale_if_error: cc.stale_if_error.map(|d| d.or(0)),
        }
    }
}

/// How long an entry with a validator is kept past its freshness and stale windows, to
/// be revalidated with a conditional request rather than fetched whole: 5 minutes.
pub(crate) const VALIDATION_KEEP: u64 = 300;

/// Why a response is not stored; also the reason a response is passed.
pub(crate) type NotStored = &'static str;

/// The freshness of a stored response (RFC 9111 section 4.2), as stored with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Freshness {
    /// When the response was received, Unix milliseconds (so that a response stored half
    /// a second ago is not of age 0 to a request's `max-age=0`).
    pub(crate) response_time: u64,
    /// Its age when received (RFC 9111 section 4.2.3 `corrected_initial_age`).
    pub(crate) initial_age: u64,
    /// Its freshness lifetime, seconds.
    pub(crate) lifetime: u64,
    /// Must not be served stale (`must-revalidate`, `proxy-revalidate`, `s-maxage`).
    pub(crate) must_revalidate: bool,
    /// Must be validated before every use (`no-cache`).
    pub(crate) no_cache: bool,
    /// Has a validator (`ETag` or `Last-Modified`): worth keeping past its freshness, to
    /// revalidate with a conditional request.
    pub(crate) validator: bool,
    /// `stale-while-revalidate` and `stale-if-error` windows, seconds.
    pub(crate) stale_while_revalidate: u64,
    pub(crate) stale_if_error: u64,
}

impl Freshness {
    /// The age of the response at `now_ms` (Unix milliseconds), in milliseconds.
    pub(crate) fn age_ms(&self, now_ms: u64) -> u64 {
        self.initial_age
            .saturating_mul(1000)
            .saturating_add(now_ms.saturating_sub(self.response_time))
    }

    /// The age in whole seconds, as the `Age` header gives it.
    pub(crate) fn age(&self, now_ms: u64) -> u64 {
        self.age_ms(now_ms) / 1000
    }

    /// How long to keep the entry from `now_ms`: what freshness it has left, plus the
    /// stale windows it may still be served in, plus (with a validator) time to be
    /// revalidated instead of fetched whole; at most the store's longest TTL (a year),
    /// after which a response fresh for longer (`max-age` up to 2^31, an `Expires` in
    /// 2100) is fetched again rather than refused.
    pub(crate) fn keep_for(&self, now_ms: u64) -> Duration {
        let left = self.lifetime.saturating_sub(self.age(now_ms));
        let stale = if self.must_revalidate {
            0
        } else {
            self.stale_while_revalidate.max(self.stale_if_error)
        };
        let validate = if self.validator { VALIDATION_KEEP } else { 0 };
        Duration::from_secs(
            left.saturating_add(stale.max(validate))
                .clamp(1, crate::error::MAX_TTL.as_secs()),
        )
    }

    /// Whether, stale at `now_ms`, it is still within `window` seconds past its freshness.
    pub(crate) fn stale_within(&self, now_ms: u64, window: u64) -> bool {
        let age = u128::from(self.age_ms(now_ms));
        age <= (u128::from(self.lifetime) + u128::from(window)) * 1000
    }
}

/// Statuses a response may be stored with on heuristic freshness (RFC 9110 section
/// 15.1).
fn heuristically_cacheable(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        200 | 203 | 204 | 206 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501
    )
}

/// Statuses whose caching requirements the cache implements, for `must-understand`
/// (RFC 9111 section 5.2.2.3): the final statuses it stores as RFC 9110 defines them,
/// without special handling it lacks. Not `206` (a part is stored only as a piece of a whole, by its own rules), nor the
/// statuses whose meaning depends on the request (`303`, `304`, `401`, `407`...).
fn understood(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        200 | 203 | 204 | 300 | 301 | 302 | 307 | 308 | 404 | 405 | 410 | 414 | 501
    )
}

/// Whether a response may be stored, and if so its freshness (RFC 9111 section 3).
///
/// `request_time` and `response_time` are when the request was sent and the response
/// head received.
pub(crate) fn storable(
    policy: &HttpPolicy,
    method: &Method,
    req: &HeaderMap,
    status: StatusCode,
    res: &HeaderMap,
    request_time: SystemTime,
    response_time: SystemTime,
) -> Result<Freshness, NotStored> {
    if method != Method::GET {
        return Err("method is not GET");
    }
    if status.is_informational() || status == StatusCode::NOT_MODIFIED {
        return Err("status is not a final, complete response");
    }
    let req_cc = CacheControl::parse(req);
    if req_cc.no_store || req_cc.malformed {
        return Err("request no-store, or a request Cache-Control that cannot be parsed");
    }
    // A targeted field (RFC 9213) replaces `Cache-Control` and `Expires` for this cache.
    let (cc, targeted) = policy.directives_of(res);
    if cc.must_understand {
        // RFC 9111 section 5.2.2.3: stored only by a cache that understands the status,
        // and then `no-store` (which it comes with for the caches that do not) is
        // ignored.
        if !understood(status) {
            return Err("must-understand with a status the cache does not implement");
        }
    } else if cc.no_store {
        return Err("response no-store");
    }
    if cc.malformed {
        // It may have said `private` or `no-store`.
        return Err("response Cache-Control cannot be parsed");
    }
    if cc.private {
        return Err("response private");
    }
    if req.contains_key(::http::header::AUTHORIZATION)
        && !(cc.public || cc.s_maxage.is_some() || cc.must_revalidate)
    {
        // RFC 9111 section 3.5.
        return Err("request has Authorization and the response does not allow sharing");
    }
    // RFC 9111 says nothing of Cookie; an origin that personalises by cookie and forgets
    // `private` would leak one user's page to everyone, so do as Varnish and nginx do:
    // store a response to a request with cookies only when the origin says it may be
    // shared, or when it varies on the cookie (each cookie its own variant).
    if req.contains_key(::http::header::COOKIE)
        && !(cc.public || cc.s_maxage.is_some())
        && !headers::vary(res).is_some_and(|names| names.contains(&::http::header::COOKIE))
    {
        return Err("request has cookies and the response does not allow sharing");
    }
    if !policy.store_set_cookie && res.contains_key(::http::header::SET_COOKIE) {
        return Err("response sets a cookie");
    }
    if headers::vary(res).is_none() {
        return Err("Vary: *");
    }
    let validator = res.contains_key(::http::header::ETAG)
        || matches!(
            headers::date(res, ::http::header::LAST_MODIFIED),
            Some(Ok(_))
        );
    if cc.no_cache && !validator {
        // Must be validated on every use, and cannot be: storing it gains nothing.
        return Err("response no-cache without a validator");
    }
    let date = match headers::date(res, ::http::header::DATE) {
        Some(Ok(d)) => d,
        // Missing or invalid Date: the time it was received (RFC 9110 section 6.6.1).
        _ => response_time,
    };
    let lifetime = if let Some(s) = cc.s_maxage {
        s.or(0)
    } else if let Some(m) = cc.max_age {
        m.or(0)
    } else if let Some(expires) = headers::date(res, ::http::header::EXPIRES).filter(|_| !targeted)
    {
        match expires {
            // Far in the future is 2^31 seconds, as a delta-seconds is (section 1.2.2).
            Ok(e) => headers::secs_between(date, e).min(headers::DELTA_MAX),
            // Invalid, e.g. "0": already expired (section 5.3).
            Err(()) => 0,
        }
    } else if heuristically_cacheable(status) || cc.public {
        heuristic(policy, res, date).unwrap_or(0)
    } else {
        return Err("status is not cacheable by default and no freshness is given");
    };
    if lifetime == 0 && !validator {
        return Err("no freshness lifetime and no validator");
    }
    // RFC 9111 section 4.2.3.
    let now = unix_ms(response_time);
    let apparent_age = headers::secs_between(date, response_time);
    let response_delay = headers::secs_between(request_time, response_time);
    let corrected_age_value = headers::age(res)
        .unwrap_or(0)
        .saturating_add(response_delay);
    let initial_age = apparent_age.max(corrected_age_value);
    if initial_age >= lifetime && (cc.must_revalidate || cc.proxy_revalidate) && !validator {
        return Err("stale on arrival and must be revalidated, without a validator");
    }
    Ok(Freshness {
        response_time: now,
        initial_age,
        lifetime,
        must_revalidate: cc.must_revalidate || cc.proxy_revalidate || cc.s_maxage.is_some(),
        no_cache: cc.no_cache,
        validator,
        stale_while_revalidate: window(cc.stale_while_revalidate),
        stale_if_error: window(cc.stale_if_error),
    })
}

fn window(d: Option<Delta>) -> u64 {
    d.map_or(0, |d| d.or(0))
}

/// Heuristic freshness, or the default TTL, when the policy allows them.
fn heuristic(policy: &HttpPolicy, res: &HeaderMap, date: SystemTime) -> Option<u64> {
    if let Some((fraction, max)) = policy.heuristic {
        if let Some(Ok(modified)) = headers::date(res, ::http::header::LAST_MODIFIED) {
            let since = headers::secs_between(modified, date) as f64;
            let secs = (since * fraction).min(max.as_secs() as f64) as u64;
            if secs > 0 {
                return Some(secs);
            }
        }
    }
    policy
        .default_ttl
        .map(|t| t.as_secs().min(headers::DELTA_MAX))
}

/// Whether a stored response with `freshness` may answer a request with `rules` at
/// `now_ms` (Unix milliseconds) without contacting the origin (RFC 9111 sections 4 and
/// 5.2.1).
pub(crate) fn servable(freshness: &Freshness, rules: &RequestRules, now_ms: u64) -> bool {
    if rules.no_cache || freshness.no_cache {
        return false;
    }
    let age = i128::from(freshness.age_ms(now_ms));
    if rules
        .max_age
        .is_some_and(|max| age > i128::from(max) * 1000)
    {
        return false;
    }
    let left = i128::from(freshness.lifetime) * 1000 - age;
    if left > 0 {
        return left >= i128::from(rules.min_fresh) * 1000;
    }
    // Stale: only as far as the request allows, and never when it must be revalidated.
    !freshness.must_revalidate
        && rules.min_fresh == 0
        && rules
            .max_stale
            .is_some_and(|max| -left <= i128::from(max) * 1000)
}

/// Unix milliseconds of `t`.
pub(crate) use crate::util::unix_ms;
