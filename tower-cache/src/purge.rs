//! [`PurgeService`]: purges over HTTP, as operators expect from Varnish and Fastly.
//!
//! - `PURGE /some/path` (Varnish): the stored response of that URL (all its variants).
//! - `POST` with `X-Purge-Key: <key>`, `X-Purge-Tag: <tag>` (surrogate key) or
//!   `X-Purge-Pattern: <glob>`: that key, every entry with that tag, or every key
//!   matching.
//!
//! Every purge needs `Authorization: Bearer <token>` (the scheme in any case, as RFC 9110
//! has it; the token compared in constant time); without it (or with another token) the
//! answer is `401` and nothing changes. The answer to a purge is `200` with
//! `{"removed":N}`. Given a [`Coordinator`], purges
//! spread to every node.

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use ::http::{HeaderMap, Method, Request, Response, StatusCode};
use bytes::Bytes;
use hmac::{Hmac, Mac};
use http_body_util::Full;
use sha2::Sha256;
use tower_service::Service;

use crate::cache::Cache;
use crate::coordinator::Coordinator;

/// Where purges go: one store, or every node through a coordinator.
#[derive(Clone)]
enum Scope {
    Local(Cache),
    Cluster(Coordinator),
}

/// Answers authenticated purge requests, as operators expect from Varnish and Fastly.
///
/// - `PURGE /some/path`: the stored response of that URL (all its variants).
/// - `POST` with `X-Purge-Key`, `X-Purge-Tag` (surrogate key) or `X-Purge-Pattern`:
///   that key, every entry with that tag, or every key the glob matches.
///
/// Each needs `Authorization: Bearer <token>`; otherwise `401` and nothing changes. The
/// answer is `200` with `{"removed":N}`. Built with [`PurgeService::cluster`], purges
/// spread to every node.
#[derive(Clone)]
pub struct PurgeService {
    scope: Scope,
    /// The token's MAC under a fixed key: a request's token is compared through its own
    /// MAC in constant time, whatever its length.
    token_mac: Arc<[u8]>,
    /// How the cache it purges keys forwarding fields: `PURGE` removes the key made the
    /// same way.
    forwarded: crate::http::ForwardedFields,
}

impl fmt::Debug for PurgeService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PurgeService").finish_non_exhaustive()
    }
}

impl PurgeService {
    /// Purges `cache` for requests bearing `token` (at least 16 characters).
    pub fn new(cache: Cache, token: &str) -> Result<Self, crate::BuildError> {
        Self::with(Scope::Local(cache), token)
    }

    /// Purges on every node of `coordinator`.
    pub fn cluster(coordinator: Coordinator, token: &str) -> Result<Self, crate::BuildError> {
        Self::with(Scope::Cluster(coordinator), token)
    }

    fn with(scope: Scope, token: &str) -> Result<Self, crate::BuildError> {
        if token.len() < 16 {
            return Err(crate::BuildError::new(
                "purge: the token is shorter than 16 characters; give a long random one",
            ));
        }
        Ok(Self {
            scope,
            token_mac: token_mac(token.as_bytes())
                .finalize()
                .into_bytes()
                .to_vec()
                .into(),
            forwarded: crate::http::ForwardedFields::Drop,
        })
    }

    /// How the [`HttpCacheLayer`](crate::http::HttpCacheLayer) whose entries this
    /// service purges treats forwarding fields (give it the same setting). Under
    /// [`ForwardedFields::Key`](crate::http::ForwardedFields::Key), `PURGE /path`
    /// removes the entry keyed with the forwarding fields the purge request carries.
    pub fn forwarded_fields(mut self, forwarded: crate::http::ForwardedFields) -> Self {
        self.forwarded = forwarded;
        self
    }

    /// Whether a request is a purge this service answers (`PURGE`, or a `POST` with one
    /// of the purge headers); a proxy routes those here and the rest to the cache.
    pub fn is_purge<B>(req: &Request<B>) -> bool {
        req.method().as_str() == "PURGE"
            || (req.method() == Method::POST
                && ["x-purge-key", "x-purge-tag", "x-purge-pattern"]
                    .iter()
                    .any(|h| req.headers().contains_key(*h)))
    }
}

fn answer(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut res = Response::new(Full::new(Bytes::from(body)));
    *res.status_mut() = status;
    res.headers_mut().insert(
        ::http::header::CONTENT_TYPE,
        ::http::HeaderValue::from_static("application/json"),
    );
    res
}

fn token_mac(token: &[u8]) -> Hmac<Sha256> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(b"tower-cache purge token")
        .expect("HMAC accepts any key length");
    mac.update(token);
    mac
}

/// The token of an `Authorization: Bearer <token>` value: the scheme is matched in any
/// case (RFC 9110, section 11.1), with one or more spaces before the token.
fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim_start_matches(' ');
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok()).map(str::trim)
}

impl<B: Send + 'static> Service<Request<B>> for PurgeService {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let authorized = header(req.headers(), "authorization")
                .and_then(bearer)
                .is_some_and(|t| {
                    // Constant time (the MAC crate's comparison), and independent of the
                    // given token's length.
                    token_mac(t.trim().as_bytes())
                        .verify_slice(&this.token_mac)
                        .is_ok()
                });
            if !authorized {
                return Ok(answer(
                    StatusCode::UNAUTHORIZED,
                    r#"{"error":"a purge needs Authorization: Bearer <token>"}"#.into(),
                ));
            }
            let h = req.headers();
            let result = if req.method().as_str() == "PURGE" {
                let key = crate::http::keyed_url(&req, this.forwarded)
                    .unwrap_or_else(|_| String::from("http:"));
                match &this.scope {
                    Scope::Local(c) => c.invalidate(&key).await,
                    Scope::Cluster(c) => c.invalidate(&key).await.map(|i| i.removed),
                }
            } else if let Some(key) = header(h, "x-purge-key") {
                match &this.scope {
                    Scope::Local(c) => c.invalidate(key).await,
                    Scope::Cluster(c) => c.invalidate(key).await.map(|i| i.removed),
                }
            } else if let Some(tag) = header(h, "x-purge-tag") {
                match &this.scope {
                    Scope::Local(c) => c.invalidate_tag(tag).await,
                    Scope::Cluster(c) => c.invalidate_tag(tag).await.map(|i| i.removed),
                }
            } else if let Some(pattern) = header(h, "x-purge-pattern") {
                match &this.scope {
                    Scope::Local(c) => c.invalidate_pattern(pattern).await,
                    Scope::Cluster(c) => c.invalidate_pattern(pattern).await.map(|i| i.removed),
                }
            } else {
                return Ok(answer(
                    StatusCode::BAD_REQUEST,
                    r#"{"error":"send PURGE <url>, or POST with X-Purge-Key, X-Purge-Tag or X-Purge-Pattern"}"#.into(),
                ));
            };
            Ok(match result {
                Ok(removed) => answer(StatusCode::OK, format!(r#"{{"removed":{removed}}}"#)),
                Err(e) => answer(
                    StatusCode::BAD_REQUEST,
                    format!(r#"{{"error":{:?}}}"#, e.to_string()),
                ),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt;

    const TOKEN: &str = "a purge token of some length";

    async fn status(svc: &PurgeService, authorization: Option<&str>) -> StatusCode {
        let mut req = Request::post("/").header("x-purge-key", "k");
        if let Some(a) = authorization {
            req = req.header("authorization", a);
        }
        let req = req.body(()).unwrap();
        svc.clone().oneshot(req).await.unwrap().status()
    }

    #[tokio::test]
    async fn a_purge_under_keyed_forwarding_fields_removes_the_entry_they_key() {
        use crate::http::ForwardedFields;
        let cache = Cache::new(crate::MemoryTier::builder().build().unwrap());
        let get = Request::get("/k")
            .header("host", "a.test")
            .header("x-forwarded-proto", "https")
            .body(())
            .unwrap();
        let key = crate::http::keyed_url(&get, ForwardedFields::Key).unwrap();
        assert_ne!(key, crate::http::url_key(&get));
        cache
            .set(
                &key,
                Bytes::from_static(b"x"),
                std::time::Duration::from_secs(60),
                crate::WriteTiers::ALL,
            )
            .await
            .unwrap();
        let svc = PurgeService::new(cache.clone(), TOKEN)
            .unwrap()
            .forwarded_fields(ForwardedFields::Key);
        let purge = Request::builder()
            .method("PURGE")
            .uri("/k")
            .header("host", "a.test")
            .header("x-forwarded-proto", "https")
            .header("authorization", format!("Bearer {TOKEN}"))
            .body(())
            .unwrap();
        let res = svc.oneshot(purge).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert!(cache.get(&key).await.is_none());
    }

    #[tokio::test]
    async fn the_bearer_scheme_is_matched_in_any_case_and_only_the_token_opens() {
        let cache = Cache::new(crate::MemoryTier::builder().build().unwrap());
        let svc = PurgeService::new(cache, TOKEN).unwrap();
        for ok in ["Bearer ", "bearer ", "BEARER ", "bEaReR   "] {
            let value = format!("{ok}{TOKEN}");
            assert_eq!(status(&svc, Some(&value)).await, StatusCode::OK, "{value}");
        }
        let wrong = format!("Bearer {TOKEN}x");
        let basic = format!("Basic {TOKEN}");
        let glued = format!("Bearer{TOKEN}");
        for bad in [
            None,
            Some("Bearer"),
            Some("Bearer "),
            Some(wrong.as_str()),
            Some(basic.as_str()),
            Some(glued.as_str()),
            Some(&TOKEN[..10]),
        ] {
            assert_eq!(status(&svc, bad).await, StatusCode::UNAUTHORIZED, "{bad:?}");
        }
    }
}
