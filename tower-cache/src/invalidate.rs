//! Invalidation on a [`Cache`]: by key, by glob pattern, by tag, and
//! along registered dependencies, with listeners.
//!
//! - [`Cache::invalidate`]: one key, every tier.
//! - [`Cache::invalidate_pattern`]: every key matching a glob (`*`, `?`), e.g.
//!   `provider:*`. On disk the pattern's literal prefix bounds an LMDB range scan, so
//!   `provider:*` reads only the `provider:` keys.
//! - [`Cache::invalidate_tag`]: every entry stored with a tag (given on insert, or taken
//!   from `Surrogate-Key` by the HTTP cache). Tags persist in the disk records.
//! - [`Cache::register_dependency`] (or [`Cache::register_entry_dependency`], whose edge
//!   goes with the entry) and [`Cache::invalidate_with_dependents`]: an entry
//!   that depends on another goes when it goes, transitively; cycles are harmless. Edges
//!   persist in the disk tier (when there is one), so a restart keeps them.
//! - [`Cache::on_invalidate`]: a callback for every invalidated key matching a pattern;
//!   a callback that panics is contained and counted ([`Cache::listener_panics`]), and
//!   stays registered.
//!
//! Every invalidation is a write in the sense of the store's consistency guarantee (see
//! [`Cache`]): when it returns, no read returns an entry it removed, and no
//! load or promotion that was in flight lands afterwards. A pattern or tag invalidation
//! cannot know which keys loads are in flight for, so it stops every fill in flight at
//! that moment (they are served, not stored).
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use tower_cache::{Cache, EntryMeta, MemoryTier, WriteTiers};
//!
//! let cache = Cache::new(MemoryTier::builder().build()?);
//! let ttl = Duration::from_secs(60);
//! cache.set("provider:1:rates", "1.2".into(), ttl, WriteTiers::ALL).await?;
//! cache.set("provider:2:rates", "1.3".into(), ttl, WriteTiers::ALL).await?;
//! cache.set("user:7", "alice".into(), ttl, WriteTiers::ALL).await?;
//! cache.set("ratelimit:user:7", "3".into(), ttl, WriteTiers::ALL).await?;
//! cache.register_dependency("ratelimit:user:7", "user:7").await?;
//! assert_eq!(cache.dependency_count(), 1);
//!
//! assert_eq!(cache.invalidate_pattern("provider:*").await?, 2);
//! assert_eq!(cache.invalidate_with_dependents("user:7").await?, 2);
//! assert!(cache.get("ratelimit:user:7").await.is_none());
//! # Ok(()) }
//! ```
//!
//! The invalidation methods are on [`Cache`]; this module gathers the types
//! they use, and [`PurgeService`] (purges over HTTP, in [`crate::purge`]).

#[cfg(doc)]
use crate::Cache;

pub use crate::error::InvalidateError;
pub use crate::purge::PurgeService;
pub use crate::target::{Glob, PatternError};
