//! [`HttpCacheLayer`]: a shared HTTP cache (RFC 9111) in front of any `http` service.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use ::http::{HeaderName, HeaderValue};
use tower_layer::Layer;

use super::edge::ForwardedFields;
use super::policy::HttpPolicy;
use super::{collapse::*, service::*};
use crate::cache::Cache;

/// Default largest body stored: 1 MiB. Larger bodies stream through unstored.
pub const DEFAULT_MAX_STORED_BODY: usize = 1 << 20;
/// Default time a URL whose response may never be stored (`no-store`, `private`,
/// `Set-Cookie`, `Vary: *`) is passed without waiting on other requests: 10 s.
pub const DEFAULT_HTTP_PASS_TTL: Duration = Duration::from_secs(10);
/// Default longest wait of a request for another one fetching the same URL: 10 s.
pub const DEFAULT_COLLAPSE_WAIT: Duration = Duration::from_secs(10);
/// Default bound on the variants stored per URL: 64. Past it, the variant stored longest
/// ago is dropped.
pub const DEFAULT_MAX_VARIANTS: usize = 64;
/// Default longest time a background refresh (`stale-while-revalidate`) may take, from
/// the request to the end of the response body: 30 s.
pub const DEFAULT_REFRESH_TIMEOUT: Duration = Duration::from_secs(30);
/// Default longest time a new response for a URL waits for the bodies streaming from the
/// large stored response it replaces: 30 s.
pub const DEFAULT_REPLACE_WAIT: Duration = Duration::from_secs(30);

/// Where a response came from, as the status header says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Status {
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
    pub(super) fn value(self) -> HeaderValue {
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
    pub(super) store: Cache,
    pub(super) policy: HttpPolicy,
    pub(super) max_body: usize,
    pub(super) status_header: Option<HeaderName>,
    pub(super) pass_ttl: Duration,
    pub(super) collapse_wait: Duration,
    pub(super) refresh_timeout: Duration,
    pub(super) replace_wait: Duration,
    pub(super) forwarded: ForwardedFields,
    pub(super) max_variants: usize,
    pub(super) negotiation: bool,
    pub(super) inflight: Arc<Inflight>,
}

impl fmt::Debug for HttpCacheLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpCacheLayer")
            .field("store", &self.store)
            .field("policy", &self.policy)
            .field("max_body", &self.max_body)
            .field("status_header", &self.status_header)
            .field("forwarded", &self.forwarded)
            .field("max_variants", &self.max_variants)
            .field("normalize_negotiation", &self.negotiation)
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
            refresh_timeout: DEFAULT_REFRESH_TIMEOUT,
            replace_wait: DEFAULT_REPLACE_WAIT,
            forwarded: ForwardedFields::Drop,
            max_variants: DEFAULT_MAX_VARIANTS,
            negotiation: true,
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

    /// The longest time a background refresh (`stale-while-revalidate`) may take, from
    /// its request to the end of the response body; past it the refresh is dropped
    /// (its upstream request with it) and the entry stays as it was. Raised to at least
    /// a millisecond.
    pub fn refresh_timeout(mut self, timeout: Duration) -> Self {
        self.refresh_timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// The longest time a new response for a URL waits, before it is stored, for the
    /// bodies still streaming from the large stored response it replaces (one held by
    /// the disk tier and sent in parts). A download in progress is not cut by a newer
    /// response (a background refresh's, say) unless it takes longer than this; then it
    /// ends with an error, never with bytes of the newer response. Meanwhile the URL
    /// still answers with the stored response, and its requests do not wait for the
    /// write. Only the newest response waits (a newer one drops an older one waiting).
    /// A purge does not wait, and voids the waiting write. `Duration::ZERO` stores at
    /// once. Default 30 s.
    pub fn replace_wait(mut self, wait: Duration) -> Self {
        self.replace_wait = wait;
        self
    }

    /// What to do with the forwarding fields a client sends (`X-Forwarded-Host`,
    /// `Forwarded`, `X-Original-URL`, ...): removed by default, or kept and keyed on.
    pub fn forwarded_fields(mut self, forwarded: ForwardedFields) -> Self {
        self.forwarded = forwarded;
        self
    }

    /// The most variants (`Vary`) stored per URL, 64 by default; raised to at least 1.
    /// Storing one more drops the one stored longest ago (counted in
    /// [`CacheStats::variant_evictions`](crate::CacheStats::variant_evictions)), so that
    /// a response varying on a field clients fill at will (`Vary: User-Agent`, or any
    /// header an attacker sends a new value of each time) cannot push the rest of the
    /// cache out.
    pub fn max_variants(mut self, variants: usize) -> Self {
        self.max_variants = variants.max(1);
        self
    }

    /// Whether variants are keyed on the meaning of `Accept-Encoding` and
    /// `Accept-Language` rather than their spelling (on by default): case, spaces,
    /// order, `q=1` and elements with `q=0` do not make another variant (see the
    /// [module docs](super#vary)). The request the origin gets is not changed.
    pub fn normalize_negotiation(mut self, on: bool) -> Self {
        self.negotiation = on;
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
