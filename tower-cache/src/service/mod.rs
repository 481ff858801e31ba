//! [`CacheLayer`] and [`CacheService`]: a read-through cache around any `Service`.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! use std::time::Duration;
//! use bytes::Bytes;
//! use tower_cache::{BytesCodec, CacheLayer, MemoryTier, Cache};
//! use tower_layer::Layer;
//! use tower_service::Service;
//!
//! let store = Cache::new(MemoryTier::builder().max_entries(10_000).build()?);
//! let layer = CacheLayer::new(
//!     store,
//!     |key: &String| Some(key.clone()),
//!     BytesCodec,
//!     Duration::from_secs(30),
//! );
//! // Any service works; this one echoes its request.
//! let origin = tower::service_fn(|key: String| async move {
//!     Ok::<_, std::convert::Infallible>(Bytes::from(format!("value of {key}")))
//! });
//! let mut svc = layer.layer(origin);
//! let first = std::future::poll_fn(|cx| svc.poll_ready(cx)).await?;
//! let res = svc.call("user:1".to_string()).await?;
//! assert_eq!(res, "value of user:1");
//! # Ok(()) }
//! ```

mod codec;
mod future;
mod key;
mod policy;

pub use self::codec::{BytesCodec, Codec};
pub use self::future::ResponseFuture;
pub use self::key::{CacheKey, RequestAsKey};
pub use self::policy::{StoreAll, StorePolicy};

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tower_layer::Layer;
use tower_service::Service;

use crate::cache::{Cache, Found, WriteTiers, ERROR_PASS};
use crate::entry::EntryMeta;
use crate::BoxError;

/// Default time a key whose response was not cacheable stays marked pass: 10 s.
pub const DEFAULT_PASS_TTL: Duration = Duration::from_secs(10);

/// Wraps a service in a [`CacheService`].
///
/// A plain configuration: every setting can be changed at any time, also on a clone. The
/// store is shared: every service the layer (or any clone of it) makes reads and writes
/// the same tiers. The key function, codec and policy are cloned into each service the
/// layer makes (they are usually zero-sized, or closures), so they must be `Clone`, as
/// tower-http's layers ask of their closures.
#[derive(Clone)]
pub struct CacheLayer<K, C, P = StoreAll> {
    store: Cache,
    key: K,
    codec: C,
    policy: P,
    ttl: Duration,
    tiers: WriteTiers,
    pass_ttl: Duration,
}

impl<K, C, P> fmt::Debug for CacheLayer<K, C, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheLayer")
            .field("store", &self.store)
            .field("ttl", &self.ttl)
            .field("tiers", &self.tiers)
            .field("pass_ttl", &self.pass_ttl)
            .finish_non_exhaustive()
    }
}

impl<K, C> CacheLayer<K, C, StoreAll> {
    /// A layer caching responses in `store` under the keys `key` derives, stored through
    /// `codec` for `ttl`. Every response is stored; see [`Self::store_policy`].
    ///
    /// A layer is a value, as in tower-http: building one never fails. A `ttl` over
    /// [`MAX_TTL`](crate::error::MAX_TTL) is taken as `MAX_TTL`; a zero `ttl` stores
    /// nothing (every request reaches the inner service).
    pub fn new(store: Cache, key: K, codec: C, ttl: Duration) -> Self {
        Self {
            store,
            key,
            codec,
            policy: StoreAll,
            ttl: ttl.min(crate::error::MAX_TTL),
            tiers: WriteTiers::ALL,
            pass_ttl: DEFAULT_PASS_TTL,
        }
    }
}

impl<K, C, P> CacheLayer<K, C, P> {
    /// Decides per response whether to store it and for how long (e.g.
    /// [`StoreSuccessful`](crate::http::StoreSuccessful), or a closure
    /// `Fn(&Res) -> Option<Duration>`).
    pub fn store_policy<P2>(self, policy: P2) -> CacheLayer<K, C, P2> {
        CacheLayer {
            store: self.store,
            key: self.key,
            codec: self.codec,
            policy,
            ttl: self.ttl,
            tiers: self.tiers,
            pass_ttl: self.pass_ttl,
        }
    }

    /// The tiers responses are written to (default: all).
    pub fn tiers(mut self, tiers: WriteTiers) -> Self {
        self.tiers = tiers;
        self
    }

    /// How long a key stays marked *pass* after its response was not stored (the policy
    /// said no, or the body was over the codec's limit): requests for it go straight to
    /// the inner service, concurrently, instead of queueing behind one leader (Varnish's
    /// hit-for-pass). Default [`DEFAULT_PASS_TTL`]; any write of the key ends it early.
    /// After an error of the inner service the mark lasts at most one second.
    ///
    /// A zero duration is raised to one millisecond: the mark is also what releases the
    /// requests that waited on the leader.
    pub fn pass_ttl(mut self, ttl: Duration) -> Self {
        self.pass_ttl = ttl.clamp(Duration::from_millis(1), crate::error::MAX_TTL);
        self
    }

    /// The store, e.g. for its stats or to invalidate entries.
    pub fn store(&self) -> &Cache {
        &self.store
    }
}

impl<S, K: Clone, C: Clone, P: Clone> Layer<S> for CacheLayer<K, C, P> {
    type Service = CacheService<S, K, C, P>;

    fn layer(&self, inner: S) -> Self::Service {
        // Every clone of the service shares this copy of the configuration.
        CacheService {
            inner,
            shared: Arc::new(self.clone()),
        }
    }
}

/// A read-through cache in front of `S`; made by [`CacheLayer`].
///
/// - `poll_ready` is always ready: a request the cache can answer never waits for the
///   inner service. A miss waits for the inner service's readiness inside its response
///   future, on a clone of the inner service (so `S: Clone`; wrap a service that cannot
///   be cloned in `tower::buffer::Buffer`).
/// - Concurrent misses for one key call the inner service once; the others get the
///   stored response. If that call fails (or its response is not to be stored), one of
///   the waiting requests calls the inner service itself: nobody is left hanging.
/// - Errors of the inner service are returned, never stored.
pub struct CacheService<S, K, C, P = StoreAll> {
    inner: S,
    shared: Arc<CacheLayer<K, C, P>>,
}

impl<S: Clone, K, C, P> Clone for CacheService<S, K, C, P> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<S: fmt::Debug, K, C, P> fmt::Debug for CacheService<S, K, C, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheService")
            .field("inner", &self.inner)
            .field("store", &self.shared.store)
            .finish_non_exhaustive()
    }
}

impl<S, K, C, P> CacheService<S, K, C, P> {
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

    /// The store.
    pub fn store(&self) -> &Cache {
        &self.shared.store
    }
}

/// Waits for `inner` to be ready, then calls it: how every miss reaches the inner service.
pub(crate) async fn ready_call<S: Service<Req>, Req>(
    mut inner: S,
    req: Req,
) -> Result<S::Response, S::Error> {
    std::future::poll_fn(|cx| inner.poll_ready(cx)).await?;
    inner.call(req).await
}

async fn call_inner<S, Req>(inner: S, req: Req) -> Result<S::Response, BoxError>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
{
    ready_call(inner, req).await.map_err(Into::into)
}

impl<S, Req, K, C, P> Service<Req> for CacheService<S, K, C, P>
where
    S: Service<Req> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    S::Response: Send,
    Req: Send + 'static,
    K: CacheKey<Req>,
    C: Codec<S::Response>,
    P: StorePolicy<S::Response>,
{
    type Response = C::Response;
    type Error = BoxError;
    type Future = ResponseFuture<C::Response>;

    #[inline]
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Readiness of the inner service is awaited by misses only: see the type docs.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let shared = &self.shared;
        let Some(key) = shared.key.key(&req) else {
            let (inner, shared) = (self.inner.clone(), shared.clone());
            return ResponseFuture::boxed(async move {
                let res = call_inner(inner, req).await?;
                Ok(shared.codec.passthrough(res))
            });
        };
        // The fast path: a fresh memory entry answers without allocating or touching the
        // inner service.
        if let Some(hit) = shared.store.memory_hit(&key) {
            match shared.codec.decode(hit.value) {
                Ok(res) => return ResponseFuture::ready(res),
                // Bytes the codec cannot read (a codec change): drop them and load afresh.
                Err(_) => {
                    shared.store.memory().delete(&key);
                }
            }
        }
        // A miss in memory: disk, then the inner service with single flight.
        let key = key.into_owned();
        let (inner, shared) = (self.inner.clone(), shared.clone());
        ResponseFuture::boxed(async move {
            let store = &shared.store;
            let lead = match store.lookup(&key).await {
                Found::Hit(hit, _) => match shared.codec.decode(hit.value) {
                    Ok(res) => return Ok(res),
                    Err(_) => {
                        store.memory().delete(&key);
                        let res = call_inner(inner, req).await?;
                        return Ok(shared.codec.passthrough(res));
                    }
                },
                // Marked pass: straight to the inner service, nothing stored. (A record
                // in parts comes only from `lookup_in_parts`.)
                Found::Pass | Found::Record(_) => {
                    let res = call_inner(inner, req).await?;
                    return Ok(shared.codec.passthrough(res));
                }
                Found::Leader(lead) => lead,
            };
            let res = call_inner(inner, req).await;
            store.count_load(res.is_ok());
            let res = match res {
                Ok(res) => res,
                Err(e) => {
                    // Every waiting request calls the inner service itself, at once.
                    store.mark_pass(&key, lead, shared.pass_ttl.min(ERROR_PASS));
                    return Err(e);
                }
            };
            let ttl = shared.policy.ttl(&res, shared.ttl).filter(|t| !t.is_zero());
            let Some(ttl) = ttl else {
                // Not cacheable (or a zero TTL): hit-for-pass, so nobody queues behind a
                // leader for it.
                store.mark_pass(&key, lead, shared.pass_ttl);
                return Ok(shared.codec.passthrough(res));
            };
            let (res, stored) = match shared.codec.encode(res).await {
                Ok(encoded) => encoded,
                Err(e) => {
                    store.mark_pass(&key, lead, shared.pass_ttl.min(ERROR_PASS));
                    return Err(e);
                }
            };
            match stored {
                Some(bytes) => {
                    if let Err(e) =
                        store.fill(&key, lead, bytes, ttl, EntryMeta::default(), shared.tiers)
                    {
                        tracing::debug!(error = %e, key, "response not cached");
                    }
                }
                // Too large to store: the body streams on, the key is passed.
                None => store.mark_pass(&key, lead, shared.pass_ttl),
            }
            Ok(res)
        })
    }
}
