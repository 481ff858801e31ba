//! Per-client rate limiting (GCRA, the `governor` crate): by client address first,
//! then by user, in at most `--max-clients` buckets each.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;

use super::Gateway;

type Limiter = governor::DefaultDirectRateLimiter;

/// Per-client rate limiting for the services' routes: the client's address first,
/// before anything about the request is looked up (so that a client over its limit
/// costs no lookup and leaves nothing behind, whatever `x-user-id` it names), then its
/// user's limit when it names a user that exists.
pub(super) async fn check(State(gw): State<Arc<Gateway>>, req: Request, next: Next) -> Response {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    let ip = peer.map_or_else(|| "unknown".to_string(), |p| p.ip().to_string());
    if let Err(wait) = gw.addresses.admit(&ip, gw.parts.rate_limit) {
        return refuse(&gw, &ip, gw.parts.rate_limit, wait);
    }
    let user = req
        .headers()
        .get("x-user-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(id) = user {
        if let Some(limit) = gw.user_limit(id).await {
            let client = format!("user:{id}");
            if let Err(wait) = gw.users.admit(&client, limit) {
                return refuse(&gw, &client, limit, wait);
            }
        }
    }
    next.run(req).await
}

/// 429 with `retry-after`.
fn refuse(gw: &Gateway, client: &str, limit: u32, wait: Duration) -> Response {
    gw.limited.fetch_add(1, Ordering::Relaxed);
    let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
    (
        StatusCode::TOO_MANY_REQUESTS,
        [(http::header::RETRY_AFTER, secs.to_string())],
        Json(serde_json::json!({
            "error": format!("{client} is over its limit of {limit} requests/s; retry in {secs} s")
        })),
    )
        .into_response()
}

impl Gateway {
    /// The requests-per-second limit of user `id` (read from the user's record, cached
    /// as `ratelimit:user:{id}`), or `None` for a user that does not exist. Nothing is
    /// cached and no dependency is recorded for a user that does not exist, so made-up
    /// ids leave nothing behind.
    async fn user_limit(&self, id: u64) -> Option<u32> {
        let key = format!("ratelimit:user:{id}");
        let (db, cache, k) = (self.parts.db.clone(), self.cache.clone(), key.clone());
        self.cache
            .get_or_load(&key, Duration::from_secs(120), async move {
                if db.user(id).await.is_none() {
                    return Err(format!("no user {id}"));
                }
                // Recorded before the read of the value: a change to the user after it
                // drops this entry (or stops this fill).
                cache
                    .register_entry_dependency(&k, &format!("user:{id}"))
                    .await
                    .map_err(|e| e.to_string())?;
                match db.user(id).await {
                    Some(u) => Ok(Bytes::from(u.rate_limit.to_string())),
                    None => Err(format!("no user {id}")),
                }
            })
            .await
            .ok()
            .and_then(|b| std::str::from_utf8(&b).ok()?.parse::<u32>().ok())
    }

    /// Rate-limit buckets held for client addresses and for users.
    pub fn limiter_counts(&self) -> (usize, usize) {
        (self.addresses.len(), self.users.len())
    }
}

// === impl Limiters ===

/// Rate-limit buckets by client, at most `max` of them. A bucket idle for a second is
/// full again (every limit is per second, its burst a second's worth), so dropping it
/// loses nothing; when the map is full of buckets used within the last second, the
/// least recently used half goes (those clients start again from a full bucket).
pub(super) struct Limiters {
    max: usize,
    map: std::sync::RwLock<HashMap<String, Bucket>>,
}

struct Bucket {
    limit: u32,
    limiter: Arc<Limiter>,
    /// Milliseconds since `epoch` at the last use.
    used_ms: AtomicU64,
}

impl Limiters {
    pub(super) fn new(max: usize) -> Self {
        Self {
            max: max.max(1),
            map: std::sync::RwLock::new(HashMap::new()),
        }
    }

    pub(super) fn len(&self) -> usize {
        self.map.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether `client` may make one more request now at `limit` a second; if not, how
    /// long until it may.
    fn admit(&self, client: &str, limit: u32) -> Result<(), Duration> {
        let now = epoch_ms();
        // The common case, a client seen before at the same limit, takes a read lock.
        let known = self
            .map
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(client)
            .filter(|b| b.limit == limit)
            .map(|b| {
                b.used_ms.store(now, Ordering::Relaxed);
                b.limiter.clone()
            });
        let limiter = match known {
            Some(l) => l,
            None => {
                let mut map = self.map.write().unwrap_or_else(|e| e.into_inner());
                match map.get(client) {
                    Some(b) if b.limit == limit => b.limiter.clone(),
                    _ => {
                        if map.len() >= self.max && !map.contains_key(client) {
                            evict(&mut map, self.max, now);
                        }
                        let per_second = NonZeroU32::new(limit.max(1)).unwrap_or(NonZeroU32::MIN);
                        let limiter =
                            Arc::new(Limiter::direct(governor::Quota::per_second(per_second)));
                        map.insert(
                            client.to_string(),
                            Bucket {
                                limit,
                                limiter: limiter.clone(),
                                used_ms: AtomicU64::new(now),
                            },
                        );
                        limiter
                    }
                }
            }
        };
        limiter.check().map_err(|not_until| {
            not_until.wait_time_from(governor::clock::Clock::now(
                &governor::clock::DefaultClock::default(),
            ))
        })
    }
}

/// Makes room in a full map: drops the buckets idle for a second (full again), then, if
/// that freed less than a quarter, the least recently used half (so that the cost of a
/// pass is spread over many inserts).
fn evict(map: &mut HashMap<String, Bucket>, max: usize, now: u64) {
    map.retain(|_, b| now.saturating_sub(b.used_ms.load(Ordering::Relaxed)) < 1_000);
    if map.len() <= max - max / 4 {
        return;
    }
    let mut used: Vec<u64> = map
        .values()
        .map(|b| b.used_ms.load(Ordering::Relaxed))
        .collect();
    let middle = used.len() / 2;
    let (_, cut, _) = used.select_nth_unstable(middle);
    let cut = *cut;
    map.retain(|_, b| b.used_ms.load(Ordering::Relaxed) > cut);
}

/// Milliseconds since the first call (a monotonic clock for the buckets' last use).
fn epoch_ms() -> u64 {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64
}
