//! How a request becomes a cache key.

use std::borrow::Cow;

/// Derives the cache key of a request; `None` means "do not serve this request from the
/// cache" (it goes straight to the inner service).
///
/// Implemented for closures `Fn(&Req) -> Option<String>`; [`RequestAsKey`] borrows the
/// key from requests that are strings already, without allocating.
pub trait CacheKey<Req>: Send + Sync + 'static {
    /// The key of `req`, or `None` to bypass the cache.
    fn key<'r>(&self, req: &'r Req) -> Option<Cow<'r, str>>;
}

impl<F, Req> CacheKey<Req> for F
where
    F: Fn(&Req) -> Option<String> + Send + Sync + 'static,
{
    #[inline]
    fn key<'r>(&self, req: &'r Req) -> Option<Cow<'r, str>> {
        self(req).map(Cow::Owned)
    }
}

/// Uses the request itself as the key, for requests that are strings (`String`,
/// `&'static str`, `Arc<str>`, ...). Borrows: no allocation on a hit.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestAsKey;

impl<Req: AsRef<str>> CacheKey<Req> for RequestAsKey {
    #[inline]
    fn key<'r>(&self, req: &'r Req) -> Option<Cow<'r, str>> {
        Some(Cow::Borrowed(req.as_ref()))
    }
}
