//! HTTP caching: [`HttpCacheLayer`], a shared cache that follows RFC 9111, and the
//! simpler pieces for [`CacheLayer`](crate::CacheLayer).
//!
//! # The shared cache
//!
//! [`HttpCacheLayer`] behaves as a shared cache (Varnish, Squid, nginx's `proxy_cache`)
//! must, and errs on the side of storing less:
//!
//! - **What is stored** (RFC 9111 section 3): responses to `GET` with a final status and
//!   explicit freshness (`s-maxage`, which wins, then `max-age`, then `Expires`; or the
//!   same from a targeted field, see [below](#targeted-cache-control)); statuses
//!   cacheable by default only with heuristic freshness or a default TTL, both opt-in
//!   ([`HttpPolicy`]). Never `no-store` (unless with `must-understand`), `private`
//!   (qualified or not), `Set-Cookie` (unless [`HttpPolicy::store_set_cookie`]),
//!   `Vary: *`, nor responses to a `GET` or `HEAD` with content or with
//!   `If-Match` / `If-Unmodified-Since` (passed through: the content is not in the key,
//!   and the cache does not evaluate those preconditions), nor responses that vary on a
//!   forwarding field. A response to a request with `Authorization` only with `public`,
//!   `s-maxage` or `must-revalidate` (section 3.5); to a request with `Cookie` (on which
//!   the RFC is silent) only with `public`, `s-maxage` or `Vary: Cookie`, as Varnish and
//!   nginx do, so an origin that personalises by cookie and forgets `private` leaks
//!   nothing. `no-cache` responses and responses
//!   with no freshness left are not stored (they would need validation on every use).
//! - **What is served** (sections 4 and 5.2.1): a stored response while fresh, within the
//!   request's `max-age` and `min-fresh`; stale only within the request's `max-stale`, and
//!   never with `must-revalidate`, `proxy-revalidate` or `s-maxage`. Request `no-cache`
//!   (or `Pragma: no-cache` without `Cache-Control`) goes to the origin; `no-store`
//!   bypasses; `only-if-cached` answers `504` when nothing fits. Age is computed as
//!   section 4.2.3 says, with millisecond resident time.
//! - **Vary** (section 4.1): each combination of the listed request headers (values
//!   normalised: list elements trimmed; `Accept-Encoding` and `Accept-Language` by
//!   meaning, see [below](#vary)) is its own stored variant; `Vary: Cookie` keeps
//!   users apart. A response with another list than the URL's stored variants is filed
//!   beside them and matched by its own list, leaving them in place. At most
//!   [`HttpCacheLayer::max_variants`] variants per URL.
//! - **On the way out**: `Age` on every hit, a status header (default
//!   `x-cache: HIT-MEM | HIT-DISK | MISS | PASS`), hop-by-hop fields (`Connection` and
//!   the fields it names, `Keep-Alive`, `Transfer-Encoding`, `TE`, `Trailer`,
//!   `Upgrade`, `Proxy-*`) never stored. A `HEAD` is answered from a stored `GET`; a
//!   client's `If-None-Match` / `If-Modified-Since` is answered `304` from a fresh 2xx
//!   entry (any other stored status is sent as it is, RFC 9110 section 13.2.1).
//! - **Ranges** (RFC 9110 section 14): a `GET` with `Range: bytes=...` is answered
//!   from a stored `200` as any request is (fresh, same variant), with `206` and
//!   `Content-Range` for one range (`N-M`, `N-`, `-N`; one running past the end clipped),
//!   or `416` with `Content-Range: bytes */LENGTH` when no range is satisfiable. The
//!   part is a slice of the stored record, never a copy. **Large bodies on disk** are
//!   never copied whole to answer a request, nor held whole while they arrive:
//!   - the disk tier stores values of 1 MiB and more
//!     ([`DiskTierBuilder::addressable_threshold`](crate::DiskTierBuilder::addressable_threshold))
//!     uncompressed, with a checksum per 64 KiB block (as nginx and Varnish store bodies
//!     as they come; most large bodies are compressed media already);
//!   - a response too large for the memory tier is served from such a record in place:
//!     its head is decoded from the record's first block (a head longer than that from a
//!     prefix read in doubling steps), a range copies only its own bytes out of LMDB,
//!     and a whole body is sent in chunks of at most 64 KiB, each read on tokio's
//!     blocking pool in a read transaction of its own (none is held while the client
//!     reads). This holds for fresh hits, stale entries served (`stale-while-revalidate`,
//!     `stale-if-error`), entries revalidated with a `304`, and a stored `206` part
//!     answering a range it covers;
//!   - revalidating such an entry does not read its body: the disk tier's writer writes
//!     the new head in front of the body it keeps, in its own transaction, and only while
//!     the key still holds the record the body came from;
//!   - each chunk checks that the key still holds the record the response began with, or
//!     one that kept its bytes behind a new head (a revalidation meanwhile). If the
//!     record was replaced by another response or removed, the body ends with an error:
//!     the client sees a cut connection, never a body made of two responses;
//!   - a response that will not fit the memory tier is copied to a spool file of the
//!     disk tier as it streams to the client (about 1 MiB waits for the file before the
//!     body waits for the disk; small frames are gathered into 256 KiB writes), and the
//!     writer builds its record from the file. The bytes in spool files at once are
//!     capped at the disk tier's byte bound
//!     ([`DiskStats::spooled_bytes`](crate::DiskStats::spooled_bytes)): as they are
//!     stored, eviction keeps the stored bytes within the bound, so the tier's disk use
//!     stays under twice it. A response that would pass the cap, or whose file cannot be
//!     written, still reaches its client and is not stored
//!     ([`DiskStats::spool_faults`](crate::DiskStats::spool_faults)). Without a spool
//!     folder (a file system without file locks), such a response is kept in memory while
//!     it arrives, as before;
//!   - a new response for a URL waits for the bodies still streaming from the large
//!     record it replaces ([`HttpCacheLayer::replace_wait`], 30 s), so a download in
//!     progress ends whole. Only the newest response of a URL waits (the one asked for
//!     last; an older one waiting is dropped), a reader of a record since purged or
//!     replaced holds nothing,
//!     and requests for the URL meanwhile do not wait for it: they get the stored
//!     response, or go to the origin as they would. Requests that waited for a large
//!     miss wake once its disk write is applied, and find it there;
//!   - a part next to a stored part extends it on disk, within
//!     [`HttpCacheLayer::max_body`] (sequential range requests build the whole
//!     response).
//!
//!   A response that fits the memory tier is read whole and promoted, as before. Read
//!   whole too: records stored whole and compressed (by versions before the addressable
//!   form, or under a raised `addressable_threshold`), and values of the generic
//!   [`CacheLayer`](crate::CacheLayer), which caches typed values decoded whole. Parts
//!   are combined (RFC 9111 section 3.4) in memory only: a part held on disk, or one
//!   spooled, is not combined with another; the newer part replaces it.
//!   Where deployed servers differ,
//!   the choices are: **several ranges** get the whole `200` (allowed by section 14.2;
//!   Varnish does the same, nginx and Apache send `multipart/byteranges`), except that
//!   one satisfiable range among unsatisfiable ones is sent alone; a `Range` that
//!   cannot be read (another unit, a last position before the first, two `Range`
//!   lines, more than 16 ranges) is ignored: the whole `200`. `If-Range` (section
//!   13.1.5) holds only for a strong entity tag equal to a strong stored `ETag`, or a
//!   date equal to a stored `Last-Modified` that is at least a second before the
//!   stored `Date` (strong, section 8.8.2.2); otherwise the whole `200`. A `HEAD` with
//!   `Range` gets the whole response's head (range handling is defined for `GET` only,
//!   section 14.2; nginx answers such a `HEAD` with a `206` head). `Range` on any other
//!   stored status is ignored, and `If-None-Match` is evaluated first (a `304`).
//!   **A miss with `Range`** goes to the origin with its `Range` and `If-Range`, and
//!   does not wait for another request of the URL: a client asking for a few bytes of
//!   a large file never makes the cache fetch all of it (Varnish and nginx's
//!   `proxy_cache` fetch the whole response instead, unless told otherwise). A `200`
//!   the origin answers with (it ignored the `Range`) is stored as any `200`; a stale
//!   entry is revalidated with the `Range` kept, and a `304` freshens it and the range
//!   is served from it.
//! - **Parts** (RFC 9111 sections 3.3 and 3.4): a `206` to a `GET` with `Range` is
//!   stored when it is one range of a known length (`Content-Range: bytes A-B/LENGTH`,
//!   its body exactly that long, within [`HttpCacheLayer::max_body`]) and the response
//!   is storable as a `200` would be (`206` is heuristically cacheable, RFC 9110
//!   section 15.1); multipart or `*`-length ones are passed. A stored part answers, while
//!   fresh, only a `GET` whose one range lies wholly within it (and whose `If-Range`
//!   holds); every other request for the URL (the whole, a `HEAD`, a range past it)
//!   goes to the origin as a miss. It is never revalidated: stale, it is a miss. **One
//!   part is kept per key** (per variant): a new part of the same representation (the
//!   same strong `ETag` and complete length; weak tags and dates do not count) that
//!   overlaps or touches the stored one is combined with it into one span, at most
//!   `max_body` bytes, with the new part's fields (the newest); a span that covers the
//!   whole becomes a complete `200` (`Content-Length` the complete length, no
//!   `Content-Range`) and serves every request. A part with another validator, another
//!   length, a gap, or a span over the limit replaces the stored part. A part of the
//!   same representation as a stale stored `200` stores that body again under the
//!   part's fields. Combining copies both parts into one buffer of the span's size;
//!   nothing else is kept beside the entry.
//! - **Interim responses** (RFC 9110 section 15.2): a `1xx` the inner service returns
//!   is passed on as it is (`PASS`), never stored and never marks the URL pass; only a
//!   final response is stored. Whether a client sees one depends on the server and
//!   client around the layer. hyper 1.x relays none: its client reads past every
//!   `1xx` but `101` (`hyper::ext::on_informational` can watch them on HTTP/1), and its
//!   server cannot send one (a `1xx` from a service becomes a `500`); the only interim
//!   response it sends is the `100 Continue` it writes when a service first reads the
//!   body of a request with `Expect: 100-continue`. So behind hyper (as in
//!   `cache_proxy`) an origin's `103 Early Hints` is dropped (its `Link` fields with
//!   it), and the client gets the final response only, which is stored as usual.
//! - **Streaming**: the head goes to the client as soon as the origin sends it; the body
//!   streams through while a copy is kept, and the entry is stored when the body ended
//!   whole within [`HttpCacheLayer::max_body`]. One request per URL goes to the origin;
//!   the others wait for it (up to [`HttpCacheLayer::collapse_wait`]) and are served
//!   what it stored. A variant whose response may never be stored is marked pass for a
//!   while so that requests for it do not queue; the URL's other variants stay served,
//!   and an answer to a request with `Cookie` or `Authorization` marks nothing. A
//!   background refresh (`stale-while-revalidate`) has a slot of its own, which misses
//!   never wait on, and ends within [`HttpCacheLayer::refresh_timeout`].
//! - **Revalidation**: a `304` updates the stored fields; when the updated response may
//!   not be stored (the client's credentials, a `Set-Cookie` on the `304`), the client,
//!   who sent no condition, still gets the whole response, never the bare `304`. A `304`
//!   updates the stored response only when it names it (section 4.3.4): its `ETag` is
//!   the stored one (strongly, when strong), or without an `ETag` its `Last-Modified` is
//!   the stored one. A `304` with neither (a bare answer to the cache's own conditional
//!   request, which many origins send) updates it too: the choice made where the RFC
//!   would update nothing. A `304` naming another representation updates nothing: the
//!   request is sent again without validators (same method), its answer handled as a
//!   miss's, and a background refresh fetches the new representation the same way.
//! - **Before anything else** ([`prepare_request`]): a request needs exactly one valid
//!   authority (one `Host`, or the target's authority, equal when both are present), and
//!   is answered `400` otherwise; hop-by-hop fields and the fields `Connection` names are
//!   removed before the key and the `Vary` values are read (a `Connection` option naming
//!   an end-to-end field is refused); forwarding fields (`X-Forwarded-*`, `Forwarded`,
//!   `X-Original-URL`, ...) are removed, or keyed on ([`ForwardedFields`]), and their
//!   underscore spellings always removed; the authority is lower-cased, so the origin
//!   gets the one keyed. Keys are built only from validated parts ([`url_key`]).
//! - **Invalidation** (section 4.4): a successful `POST`, `PUT`, `PATCH` or `DELETE`
//!   removes the target URI and a same-origin `Location` / `Content-Location`.
//!   `Surrogate-Key` and `xkey` values are stored as the entry's tags.
//!
//! Where the RFCs leave room (duplicated or malformed directives, invalid dates), the
//! choice made is the one that stores or serves less; see the parser's notes. Field
//! values are read as bytes: obs-text never makes a parser skip a line, and a
//! `Cache-Control` line that is not a directive list means neither stored nor served.
//!
//! # Targeted cache control
//!
//! RFC 9213, opt-in: [`HttpPolicy::target_fields`] lists the fields this cache obeys,
//! most specific first (`[CDN_CACHE_CONTROL]`, or a field of the deployment's own before
//! it; `cache_proxy` obeys `CDN-Cache-Control` by default).
//!
//! - The first listed field present with a valid, non-empty value is the response's
//!   policy for this cache, in place of `Cache-Control` **and** `Expires` (section 2.1):
//!   `CDN-Cache-Control: max-age=60` with `Cache-Control: no-store` is stored for a
//!   minute; `CDN-Cache-Control: private`, `no-store`, `no-cache` or `max-age=0` is not
//!   stored, or not served without validation, whatever `Cache-Control` says. The
//!   directives are those of `Cache-Control` (`max-age`, `s-maxage`, `no-store`,
//!   `no-cache`, `private`, `public`, `must-revalidate`, `proxy-revalidate`,
//!   `must-understand`, `stale-while-revalidate`, `stale-if-error`); others are ignored.
//! - A field is a Structured Fields Dictionary (section 2.2): an empty one, or one that
//!   does not parse (`max-age=60,`, `Max-Age=60`, `no-store max-age=1`), is ignored as
//!   if absent, and the next listed field, then `Cache-Control`, applies. Parameters
//!   are ignored; `?0` turns a directive off; a member given twice counts once, the
//!   last.
//! - **Choice** (deployed CDNs differ): a directive whose value is not of its type
//!   (`max-age="60"`, `max-age=1.5`, `max-age=-1`) is invalid, and an invalid
//!   `max-age` makes the response stale, as in `Cache-Control`.
//! - **Choice** (the RFC lets a cache do either): responses are forwarded with their
//!   `Cache-Control` and their targeted fields exactly as the origin sent them, so that
//!   a browser applies `Cache-Control` and a CDN further down the same targeted field.
//!   Fields not on the list change nothing and are passed on.
//!
//! # Freshness
//!
//! RFC 9111 section 4.2, as the RFC asks recipients to read what real servers send:
//!
//! - **Heuristic freshness** (section 4.2.2), opt-in with [`HttpPolicy::heuristic`]
//!   (`cache_proxy`: 10%, capped at a day): for a response without explicit freshness,
//!   with `Last-Modified` and a status cacheable by default (RFC 9110 section 15.1: 200,
//!   203, 204, 206, 300, 301, 308, 404, 405, 410, 414, 501, or any status with
//!   `public`), the fraction of `Date - Last-Modified`, at most the cap.
//! - **Large values** (section 1.2.2): a `max-age` or `s-maxage` past 2^31 is 2^31, and an
//!   `Expires` however far ahead (2038 and after, year 9999) is at most that too; the
//!   entry is kept at most [`MAX_TTL`](crate::MAX_TTL) (a year), then fetched again.
//! - **Dates** (RFC 9110 section 5.6.7): `Expires`, `Date`, `Last-Modified` and
//!   `If-Modified-Since` in IMF-fixdate, RFC 850 and asctime form; a two-digit year is
//!   in the century that puts it at most 50 years ahead (`70` is 2070 until 2070; a
//!   parser that reads it as 1970 expires such responses). Read robustly: names in any
//!   case, the weekday missing or wrong (not checked), the zone `GMT`, `UTC`, `UT`,
//!   `Z`, a numeric offset (`+0100`) or none. Anything else is invalid, and an invalid
//!   `Expires` (`0`, `-1`, `30 Feb`, ISO 8601) is in the past (section 5.3).
//! - **Age** (section 5.1): a list (`Age: 10, 100`, or two lines) is its first member;
//!   a first member that is not a non-negative integer (`-5`, `1.5`, `100s`) makes the
//!   field ignored. **Choice** (caches differ; some read `100s` as 100): as the RFC
//!   says, ignored; the response's `Date` still bounds its age. A huge `Age` is 2^31:
//!   stale.
//! - **must-understand** (section 5.2.2.3): stored only with a status the cache
//!   implements the caching of (200, 203, 204, 300, 301, 302, 307, 308, 404, 405, 410,
//!   414, 501), and then its `no-store` is ignored; with any other status (`206`, `500`,
//!   an unknown `299`) not stored. It does not lift `private`.
//! - Any final status with explicit freshness is stored (`204`, `302`, `410`, `500`
//!   with `max-age`); only `206` (ranges are passed through) and `304` are not.
//!
//! # Vary
//!
//! - **Negotiation fields by meaning** (on by default,
//!   [`HttpCacheLayer::normalize_negotiation`]): `Accept-Encoding` and `Accept-Language`
//!   values are keyed with names lower-cased, spaces dropped, elements sorted (the
//!   preference is the q-value's), `q=1` dropped and other q-values written shortest,
//!   and elements with `q=0` dropped as if unlisted, except under a `*` (which the
//!   `q=0` excepts) and for `identity` and `*` themselves. So `gzip, br`,
//!   `BR,gzip` and `gzip;q=1.0, br, zstd;q=0` share a variant. **Choice**: a list this
//!   does not fit (another parameter, a name twice) is compared as sent. An empty
//!   `Accept-Encoding` (identity only) stays distinct from an absent one (anything).
//!   The origin gets the request as the client sent it: equivalent lists accept the
//!   same responses, so either answer suits both clients.
//! - **A bound per URL** ([`HttpCacheLayer::max_variants`], 64 by default): the URL's
//!   index lists its variants in the order they were stored; storing one past the
//!   bound drops the oldest, counted in
//!   [`CacheStats::variant_evictions`](crate::CacheStats::variant_evictions). A
//!   response that varies on a field each client sends anew (`User-Agent`, a random
//!   header) holds at most that many entries. The index is updated under a lock of its
//!   URL, so variants stored at once all count.
//!
//! One line for the common case, in axum (the cache passes the inner service's error
//! type on, so over a router it is infallible and needs no `HandleErrorLayer`);
//! [`HttpCacheLayer::on_disk`] adds a disk tier in a directory:
//!
//! ```
//! use tower_cache::http::HttpCacheLayer;
//!
//! let app: axum::Router = axum::Router::new()
//!     .route("/report", axum::routing::get(|| async { ([("cache-control", "max-age=60")], "report") }))
//!     .layer(HttpCacheLayer::default());
//! ```
//!
//! The full configuration: tiers, policy, limits.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! use std::time::Duration;
//! use bytes::Bytes;
//! use http::{Request, Response};
//! use http_body_util::{BodyExt, Full};
//! use tower::{ServiceBuilder, ServiceExt};
//! use tower_cache::http::{HttpCacheLayer, HttpPolicy};
//! use tower_cache::{Cache, DiskTier, MemoryTier};
//!
//! let dir = tempfile::tempdir()?;
//! let store = Cache::new(MemoryTier::builder().bytes_only(256 << 20).build()?)
//!     .with_disk(DiskTier::builder(dir.path()).map_size(1 << 30).open()?);
//! let cache = HttpCacheLayer::new(store)
//!     .policy(HttpPolicy::new().heuristic(0.1, Duration::from_secs(3600)))
//!     .max_body(4 << 20);
//! let svc = ServiceBuilder::new().layer(cache).service_fn(|_req: Request<Full<Bytes>>| async {
//!     let mut res = Response::new(Full::new(Bytes::from("hello")));
//!     res.headers_mut().insert("cache-control", "max-age=60".parse().unwrap());
//!     Ok::<_, std::convert::Infallible>(res)
//! });
//! let first = svc.clone().oneshot(Request::get("http://example.test/").body(Full::default())?).await?;
//! assert_eq!(first.headers()["x-cache"], "MISS");
//! assert_eq!(first.into_body().collect().await?.to_bytes(), "hello");
//! let second = svc.oneshot(Request::get("http://example.test/").body(Full::default())?).await?;
//! assert_eq!(second.headers()["x-cache"], "HIT-MEM");
//! # Ok(()) }
//! ```
//!
//! # The simple pieces
//!
//! [`UrlKey`], [`StoreSuccessful`] and [`ResponseCodec`] cache `http` responses through the
//! generic [`CacheLayer`](crate::CacheLayer) by method, host and path, for a service
//! whose responses are the same for everyone. They are not a shared-cache policy, but
//! they refuse what would leak: `UrlKey` bypasses requests with `Authorization`,
//! `Cookie` or `Range`, and `StoreSuccessful` refuses `no-store`, `private`, `no-cache`,
//! `max-age=0`, `Set-Cookie`, `Vary` and partial content.

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use ::http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use bytes::{Buf, Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use pin_project_lite::pin_project;

use crate::service::{CacheKey, Codec, StorePolicy};

mod body;
mod collapse;
mod edge;
mod entry;
mod headers;
mod key;
mod layer;
mod policy;
mod range;
mod service;
mod spool;
mod store;

pub use self::body::HttpCacheBody;
pub use self::edge::{prepare_request, ForwardedFields, RequestRefused};
pub(crate) use self::key::keyed_url;
pub use self::key::{try_url_key, url_key};
pub use self::layer::{
    HttpCacheLayer, DEFAULT_COLLAPSE_WAIT, DEFAULT_HTTP_MEMORY_BYTES, DEFAULT_HTTP_PASS_TTL,
    DEFAULT_MAX_STORED_BODY, DEFAULT_MAX_VARIANTS, DEFAULT_REFRESH_TIMEOUT, DEFAULT_REPLACE_WAIT,
};
pub use self::policy::{HttpPolicy, CDN_CACHE_CONTROL};
pub use self::service::HttpCacheService;
use crate::BoxError;

/// Keys `GET` and `HEAD` requests for the generic [`CacheLayer`](crate::CacheLayer) (for
/// the rules of HTTP caching, [`HttpCacheLayer`]) by method, host and path with query;
/// bypasses every
/// other method, requests with `Authorization`, `Cookie` or `Range`, and requests whose
/// authority is doubled, invalid or contradicted by the target (the host is validated
/// before it is part of a key). A request with no authority at all is keyed by path.
#[derive(Debug, Clone, Copy, Default)]
pub struct UrlKey;

impl<B> CacheKey<Request<B>> for UrlKey {
    fn key<'r>(&self, req: &'r Request<B>) -> Option<Cow<'r, str>> {
        let method = req.method();
        if method != Method::GET && method != Method::HEAD {
            return None;
        }
        // What may differ per user, or is only a part: never from a shared entry.
        let h = req.headers();
        if h.contains_key(::http::header::AUTHORIZATION)
            || h.contains_key(::http::header::COOKIE)
            || h.contains_key(::http::header::RANGE)
        {
            return None;
        }
        // Keyed only by a validated authority (one that holds no `/`, so that it cannot
        // run into the path); a request with none shares the service's one entry per
        // path; one with two, a bad one or one its target contradicts is not cached.
        let host = if h.contains_key(::http::header::HOST) || req.uri().authority().is_some() {
            edge::authority(req).ok()?
        } else {
            String::new()
        };
        let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
        if !path.starts_with('/') {
            return None;
        }
        Some(Cow::Owned(format!("{method} {host}{path}")))
    }
}

/// Stores HTTP responses with a 2xx status for the layer's TTL, except what a shared
/// entry must not hold: `no-store`, `private`, `no-cache`, `max-age=0`, `Set-Cookie`,
/// `Vary` (the key does not vary) and partial content.
#[derive(Debug, Clone, Copy, Default)]
pub struct StoreSuccessful;

impl<B> StorePolicy<Response<B>> for StoreSuccessful {
    fn ttl(&self, res: &Response<B>, default: Duration) -> Option<Duration> {
        let h = res.headers();
        let cc = headers::CacheControl::parse(h);
        let forbidden = cc.no_store
            || cc.private
            || cc.malformed
            || cc.no_cache
            || cc.max_age.is_some_and(|a| a.or(0) == 0)
            || cc.s_maxage.is_some_and(|a| a.or(0) == 0)
            || h.contains_key(::http::header::SET_COOKIE)
            || h.contains_key(::http::header::VARY)
            || res.status() == StatusCode::PARTIAL_CONTENT;
        (res.status().is_success() && !forbidden).then_some(default)
    }
}

/// The old name of [`UrlKey`].
#[deprecated(
    since = "0.1.0",
    note = "renamed `UrlKey` (a key for the generic `CacheLayer`; \
                                      for HTTP caching rules use `HttpCacheLayer`)"
)]
pub type HttpKey = UrlKey;
/// The old name of [`UrlKey`], as a value.
#[deprecated(since = "0.1.0", note = "renamed `UrlKey`")]
#[allow(non_upper_case_globals)]
pub const HttpKey: UrlKey = UrlKey;
/// The old name of [`ResponseCodec`].
#[deprecated(
    since = "0.1.0",
    note = "renamed `ResponseCodec` (a codec for the generic \
                                      `CacheLayer`; for HTTP caching rules use `HttpCacheLayer`)"
)]
pub type HttpCodec = ResponseCodec;

/// The codec for `http::Response<B>` in the generic [`CacheLayer`](crate::CacheLayer):
/// buffers bodies up to a limit and stores status, headers and body, as they are (for
/// the rules of HTTP caching, [`HttpCacheLayer`]).
///
/// A body over the limit is not stored; the client still gets all of it (what was
/// buffered, then the rest as it streams). Trailers are passed on but never stored.
#[derive(Debug, Clone, Copy)]
pub struct ResponseCodec {
    max_body: usize,
}

/// Default body limit of [`ResponseCodec`]: 1 MiB.
pub const DEFAULT_MAX_BODY: usize = 1 << 20;

impl Default for ResponseCodec {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_BODY)
    }
}

impl ResponseCodec {
    /// A codec that stores bodies of at most `max_body` bytes.
    pub const fn new(max_body: usize) -> Self {
        Self { max_body }
    }
}

const HTTP_FORMAT_V1: u8 = 1;

fn encode_http(parts: &::http::response::Parts, body: &[u8]) -> Option<Bytes> {
    let mut out = BytesMut::with_capacity(64 + body.len());
    out.extend_from_slice(&[HTTP_FORMAT_V1]);
    out.extend_from_slice(&parts.status.as_u16().to_le_bytes());
    out.extend_from_slice(&u16::try_from(parts.headers.len()).ok()?.to_le_bytes());
    for (name, value) in &parts.headers {
        for part in [name.as_str().as_bytes(), value.as_bytes()] {
            out.extend_from_slice(&u16::try_from(part.len()).ok()?.to_le_bytes());
            out.extend_from_slice(part);
        }
    }
    out.extend_from_slice(body);
    Some(out.freeze())
}

fn decode_http(stored: &Bytes) -> Result<(StatusCode, HeaderMap, Bytes), BoxError> {
    fn take<'a>(b: &mut &'a [u8], n: usize) -> Result<&'a [u8], BoxError> {
        if b.len() < n {
            return Err("stored response is truncated".into());
        }
        let (head, rest) = b.split_at(n);
        *b = rest;
        Ok(head)
    }
    fn u16_of(b: &mut &[u8]) -> Result<usize, BoxError> {
        let s = take(b, 2)?;
        Ok(u16::from_le_bytes([s[0], s[1]]) as usize)
    }
    let mut b: &[u8] = stored;
    if take(&mut b, 1)?[0] != HTTP_FORMAT_V1 {
        return Err("stored response has an unknown format version".into());
    }
    let status = StatusCode::from_u16(u16_of(&mut b)? as u16)?;
    let n = u16_of(&mut b)?;
    // Stored bytes may be anything (another codec wrote them, say): never trust a count
    // with an allocation, and never let a header map past its limit panic.
    let mut headers = HeaderMap::with_capacity(n.min(64));
    for _ in 0..n {
        let len = u16_of(&mut b)?;
        let name = HeaderName::from_bytes(take(&mut b, len)?)?;
        let len = u16_of(&mut b)?;
        let value = HeaderValue::from_bytes(take(&mut b, len)?)?;
        headers.try_append(name, value)?;
    }
    let body = stored.slice(stored.len() - b.len()..);
    Ok((status, headers, body))
}

impl<B> Codec<Response<B>> for ResponseCodec
where
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    type Response = Response<CacheBody<B>>;
    type EncodeFuture =
        Pin<Box<dyn Future<Output = Result<(Self::Response, Option<Bytes>), BoxError>> + Send>>;

    fn encode(&self, res: Response<B>) -> Self::EncodeFuture {
        let max_body = self.max_body;
        Box::pin(async move {
            let (parts, mut body) = res.into_parts();
            let mut buf = BytesMut::new();
            let mut trailers = None;
            let mut complete = false;
            while buf.len() <= max_body {
                match body.frame().await {
                    None => {
                        complete = true;
                        break;
                    }
                    Some(Err(e)) => return Err(e.into()),
                    Some(Ok(frame)) => match frame.into_data() {
                        Ok(mut data) => {
                            buf.extend_from_slice(&data.copy_to_bytes(data.remaining()))
                        }
                        Err(frame) => {
                            trailers = frame.into_trailers().ok();
                        }
                    },
                }
            }
            let prefix = buf.freeze();
            let stored = if complete && trailers.is_none() && prefix.len() <= max_body {
                encode_http(&parts, &prefix)
            } else {
                None
            };
            let body = CacheBody {
                prefix: Some(prefix).filter(|p| !p.is_empty()),
                trailers,
                rest: if complete { None } else { Some(body) },
            };
            Ok((Response::from_parts(parts, body), stored))
        })
    }

    fn decode(&self, stored: Bytes) -> Result<Self::Response, BoxError> {
        let (status, headers, body) = decode_http(&stored)?;
        let mut res = Response::new(CacheBody::full(body));
        *res.status_mut() = status;
        *res.headers_mut() = headers;
        Ok(res)
    }

    fn passthrough(&self, res: Response<B>) -> Self::Response {
        res.map(CacheBody::streaming)
    }
}

pin_project! {
    /// The body of a response from a [`CacheService`](crate::CacheService) with the
    /// [`ResponseCodec`]: stored bytes, a buffered prefix, then the rest of an origin body.
    #[derive(Debug)]
    pub struct CacheBody<B> {
        prefix: Option<Bytes>,
        trailers: Option<HeaderMap>,
        #[pin]
        rest: Option<B>,
    }
}

/// An empty body, so that layers which answer on their own (a 503 from a readiness
/// gate, say) can build one.
impl<B> Default for CacheBody<B> {
    fn default() -> Self {
        Self::full(Bytes::new())
    }
}

impl<B> CacheBody<B> {
    /// A body of `bytes`.
    pub fn full(bytes: Bytes) -> Self {
        Self {
            prefix: Some(bytes).filter(|b| !b.is_empty()),
            trailers: None,
            rest: None,
        }
    }

    fn streaming(body: B) -> Self {
        Self {
            prefix: None,
            trailers: None,
            rest: Some(body),
        }
    }
}

impl<B> Body for CacheBody<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        if let Some(prefix) = this.prefix.take() {
            return Poll::Ready(Some(Ok(Frame::data(prefix))));
        }
        if let Some(rest) = this.rest.as_pin_mut() {
            return match rest.poll_frame(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
                Poll::Ready(Some(Ok(frame))) => Poll::Ready(Some(Ok(
                    frame.map_data(|mut d| d.copy_to_bytes(d.remaining()))
                ))),
            };
        }
        Poll::Ready(this.trailers.take().map(|t| Ok(Frame::trailers(t))))
    }

    fn is_end_stream(&self) -> bool {
        self.prefix.is_none()
            && self.trailers.is_none()
            && self.rest.as_ref().is_none_or(|r| r.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        let prefix = self.prefix.as_ref().map_or(0, |p| p.len() as u64);
        match &self.rest {
            None => SizeHint::with_exact(prefix),
            Some(rest) => {
                let h = rest.size_hint();
                let mut out = SizeHint::new();
                out.set_lower(h.lower() + prefix);
                if let Some(upper) = h.upper() {
                    out.set_upper(upper + prefix);
                }
                out
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoding_garbage_fails_without_panicking() {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for len in 0..2_000usize {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            let _ = decode_http(&Bytes::from(bytes));
        }
        // A header count far past what a header map holds.
        let mut many = vec![HTTP_FORMAT_V1, 200, 0, 0xff, 0xff];
        for _ in 0..40_000 {
            many.extend_from_slice(&[1, 0, b'a', 1, 0, b'b']);
        }
        assert!(decode_http(&Bytes::from(many)).is_err());
    }
}
