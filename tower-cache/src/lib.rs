//! Multi-tier response caching for [tower] services.
//!
//! `tower-cache` puts a read-through cache in front of any `Service`: a bounded memory
//! tier on [`quick_cache`] (S3-FIFO-style eviction, a TTL per entry), a persistent disk
//! tier on LMDB through [`heed`] (`snap` compression, group-committed writes, an expiry
//! index, compaction), and a [`CacheLayer`] that answers hits without waiting for the
//! inner service, runs concurrent misses for one key once, and never fails a request
//! because of the disk. It stacks with the other crates of the workspace through the
//! `Service` contract alone: put it behind `tower-health`'s readiness gate and in front
//! of `tower-balance-ext`'s balancer, and `tower-autoscale` reads its [`CacheStats`].
//! It depends on none of them.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! use std::time::Duration;
//! use bytes::Bytes;
//! use http::{Request, Response};
//! use http_body_util::{BodyExt, Full};
//! use tower::{ServiceBuilder, ServiceExt};
//! use tower_cache::{CacheLayer, DiskTier, ResponseCodec, UrlKey, MemoryTier, StoreSuccessful, Cache};
//!
//! let dir = tempfile::tempdir()?;
//! let store = Cache::new(MemoryTier::builder().max_entries(500).build()?)
//!     .with_disk(DiskTier::builder(dir.path()).map_size(64 << 20).open()?);
//! let cache = CacheLayer::new(store, UrlKey, ResponseCodec::default(), Duration::from_secs(5))
//!     .store_policy(StoreSuccessful);
//!
//! let svc = ServiceBuilder::new().layer(cache).service_fn(|_req: Request<Full<Bytes>>| async {
//!     Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from("budget: 42"))))
//! });
//! let res = svc.oneshot(Request::get("/budget").body(Full::default())?).await?;
//! assert_eq!(res.into_body().collect().await?.to_bytes(), "budget: 42");
//! # Ok(()) }
//! ```
//!
//! # Conventions
//!
//! - **Layers are values**, as in tower-http: [`CacheLayer::new`] and
//!   [`http::HttpCacheLayer::new`] never fail, and their setters take and return the
//!   layer. Out-of-range settings are brought into range, as each setter says.
//! - **Components with resources** (a tier holding memory or a file, a coordinator or a
//!   bus starting tasks or connections) have a `builder()` whose setters never fail, and
//!   one verb at the end that checks every setting and returns a [`BuildError`] naming
//!   the one to change: [`MemoryTier::builder`]`().build()`,
//!   [`DiskTier::builder`]`(path).open()`, `Coordinator::builder(..).start()`,
//!   `HttpBus::builder(..).build()`, `RedisBus::builder(..).connect()`.
//! - **Errors** are typed where callers branch on them ([`InsertErrorKind`],
//!   [`coordinator::TargetTooLong`], [`PatternError`]); a fault of the disk tier is never
//!   a request's error: it is logged, counted and the request goes on without it.
//!
//! [tower]: https://docs.rs/tower
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod cache;
pub mod coordinator;
pub mod disk;
mod entry;
pub mod error;
mod generation;
pub mod http;
pub mod invalidate;
pub mod memory;
pub mod purge;
mod service;
mod target;
mod util;
mod version;

/// The error type at service boundaries.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

pub use crate::cache::{Cache, CacheStats, ExpiredReport, WriteTiers};
pub use crate::disk::{CompactReport, DiskStats, DiskTier, DiskTierBuilder, OnDamage};
pub use crate::entry::{Entry, EntryMeta, Tags, TimeSource};
pub use crate::error::InvalidateError;
pub use crate::error::{BuildError, DiskError, InsertError, InsertErrorKind, MAX_TTL};
pub use crate::http::{CacheBody, ResponseCodec, StoreSuccessful, UrlKey, DEFAULT_MAX_BODY};
#[allow(deprecated)]
pub use crate::http::{HttpCodec, HttpKey};
pub use crate::memory::{MemoryStats, MemoryTier, MemoryTierBuilder};
pub use crate::purge::PurgeService;
pub use crate::service::{
    BytesCodec, CacheKey, CacheLayer, CacheService, Codec, RequestAsKey, ResponseFuture, StoreAll,
    StorePolicy, DEFAULT_PASS_TTL,
};
pub use crate::target::{Glob, PatternError};

/// The response futures of the services in this crate.
pub mod future {
    pub use crate::service::ResponseFuture;
}
