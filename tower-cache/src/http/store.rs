//! Storing responses, background refreshes, and marking URLs that pass.

use std::sync::Arc;
use std::time::SystemTime;

use ::http::{HeaderMap, HeaderName, Method, Request, Response, StatusCode};
use bytes::Bytes;
use http_body::Body;
use tower_service::Service;

use super::edge;
use super::entry::{self, HttpEntry};
use super::headers;
use super::policy;
use super::range;
use super::{body::*, collapse::*, key::*, layer::*, service::*};
use crate::cache::Cache;
use crate::disk::Around;
use crate::entry::{EntryMeta, Tags};
use crate::generation::Ticket;
use crate::service::ready_call as call_inner;
use crate::BoxError;

mod commit;
use self::commit::{extend_stored, keeps_stored, put, Commit};

/// Stores a revalidated entry under `key`, with the tags its fields name.
pub(super) fn store_entry(store: &Cache, key: &str, entry: &HttpEntry, ticket: Ticket) {
    let commit = Commit {
        store: store.clone(),
        primary: String::new(),
        key: key.to_owned(),
        index: None,
        ticket,
        ttl: entry.freshness.keep_for(policy::unix_ms(SystemTime::now())),
        meta: EntryMeta {
            version: 0,
            tags: surrogate_keys(&entry.headers),
        },
        order: crate::disk::DiskTier::next_order(),
        replaces_index: None,
        _leader: None,
    };
    if let Err(e) = put(&commit, entry) {
        tracing::debug!(error = %e, key, "revalidated response not stored");
    }
}

/// What the body of a storable response stores once it ends.
#[allow(clippy::too_many_arguments)]
pub(super) fn store_job(
    config: &HttpCacheLayer,
    primary: &str,
    index: Option<(u64, Vec<HeaderName>)>,
    primary_ticket: Ticket,
    req_headers: &HeaderMap,
    parts: &::http::response::Parts,
    freshness: policy::Freshness,
    leader: Option<LeaderGuard>,
    before: Option<HttpEntry>,
    order: u64,
) -> StoreJob {
    let store = &config.store;
    let names = headers::vary(&parts.headers).unwrap_or_default();
    let negotiation = config.negotiation;
    // A response that does not vary replaces the URL's index, if it has one: the
    // variants it lists go with it.
    let replaces_index = match (&index, names.is_empty()) {
        (Some((epoch, _)), true) => Some(*epoch),
        _ => None,
    };
    let (key, index_update) = if names.is_empty() {
        (primary.to_owned(), None)
    } else {
        // The URL's index stays as it is, epoch and list, even when this response varies
        // on other fields (a CORS layer adding `Origin` to some responses): the variants
        // stored under it stay reachable. The entry is filed by the index's list and
        // keeps its own, which a lookup matches the request against.
        let (epoch, index_names) = match index {
            Some((epoch, old)) => (epoch, old),
            None => (new_epoch(), names.clone()),
        };
        let hash = variant_hash(&vary_values(req_headers, &index_names, negotiation));
        (
            variant_key_of(primary, epoch, hash),
            Some(IndexUpdate {
                epoch,
                names: index_names,
                variant: hash,
                max_variants: config.max_variants,
                ticket: primary_ticket.clone(),
            }),
        )
    };
    let ticket = if key == primary {
        primary_ticket.clone()
    } else {
        store.ticket(&key)
    };
    let mut stored_headers = parts.headers.clone();
    headers::strip_hop_by_hop(&mut stored_headers);
    stored_headers.remove(::http::header::AGE);
    if let Some(name) = &config.status_header {
        stored_headers.remove(name);
    }
    StoreJob {
        store: store.clone(),
        primary: primary.to_owned(),
        key,
        index: index_update,
        head: HttpEntry {
            status: parts.status,
            headers: stored_headers,
            body: Bytes::new(),
            freshness,
            vary: vary_values(req_headers, &names, negotiation),
            on_disk: None,
        },
        tags: surrogate_keys(&parts.headers),
        ticket,
        before,
        limit: config.max_body,
        replace_wait: config.replace_wait,
        order,
        replaces_index,
        _leader: leader,
    }
}

/// A request to refresh a stale entry in the background: the URL and the request
/// headers the entry's key was made of (the host, the fields it varies on, and the
/// forwarding fields when they are keyed; otherwise the request has none of those).
pub(super) fn template_of<B>(
    req: &Request<B>,
    vary: &[(HeaderName, Option<Vec<u8>>)],
) -> Request<()> {
    let mut t = Request::new(());
    *t.uri_mut() = req.uri().clone();
    let forwarding = req
        .headers()
        .keys()
        .filter(|n| edge::is_forwarding_field(n));
    let mut names: Vec<&HeaderName> = vec![&::http::header::HOST];
    names.extend(forwarding);
    names.extend(vary.iter().map(|(n, _)| n));
    names.dedup();
    for name in names {
        if t.headers().contains_key(name) {
            continue;
        }
        for v in req.headers().get_all(name) {
            t.headers_mut().append(name.clone(), v.clone());
        }
    }
    t
}

/// A request like `template` (method, target, version, fields), with an empty body.
fn copy_request<B: Default>(template: &Request<()>) -> Request<B> {
    let mut req = Request::new(B::default());
    *req.method_mut() = template.method().clone();
    *req.uri_mut() = template.uri().clone();
    *req.version_mut() = template.version();
    *req.headers_mut() = template.headers().clone();
    req
}

/// A background refresh of a stale entry (`stale-while-revalidate`).
pub(super) struct Refresh {
    pub(super) config: Arc<HttpCacheLayer>,
    pub(super) primary: String,
    pub(super) key: String,
    pub(super) index: Option<(u64, Vec<HeaderName>)>,
    pub(super) entry: HttpEntry,
    pub(super) template: Request<()>,
    pub(super) guard: LeaderGuard,
}

/// The single-flight slot of a URL's background refresh, apart from the slot misses
/// wait on.
pub(super) fn refresh_slot(primary: &str) -> String {
    format!("{primary}\u{1f}refresh")
}

impl Refresh {
    /// Runs the refresh within the layer's refresh timeout: a refresh that takes longer
    /// (an origin that stalls its body, say) is dropped, its slot released.
    pub(super) async fn run<S, ReqB, ResB>(self, inner: S)
    where
        S: Service<Request<ReqB>, Response = Response<ResB>> + Clone,
        ReqB: Default,
        ResB: Body<Data = Bytes>,
        ResB::Error: Into<BoxError>,
    {
        let limit = self.config.refresh_timeout;
        let key = self.primary.clone();
        if tokio::time::timeout(limit, self.fetch(inner))
            .await
            .is_err()
        {
            tracing::debug!(key, "background refresh timed out");
        }
    }

    async fn fetch<S, ReqB, ResB>(self, inner: S)
    where
        S: Service<Request<ReqB>, Response = Response<ResB>> + Clone,
        ReqB: Default,
        ResB: Body<Data = Bytes>,
        ResB::Error: Into<BoxError>,
    {
        let store = &self.config.store;
        let stale_ticket = store.ticket(&self.key);
        let primary_ticket = store.ticket(&self.primary);
        let order = crate::disk::DiskTier::next_order();
        let (parts, ()) = self.template.into_parts();
        let unconditional = Request::from_parts(parts, ());
        let mut req = copy_request::<ReqB>(&unconditional);
        add_validators(req.headers_mut(), &self.entry);
        let mut req_headers = req.headers().clone();
        let mut request_time = SystemTime::now();
        let Ok(mut res) = call_inner(inner.clone(), req).await else {
            return;
        };
        if res.status() == StatusCode::NOT_MODIFIED && !updates(res.headers(), &self.entry) {
            // A `304` for another representation updates nothing stored (RFC 9111
            // section 4.3.4): the new representation is asked for whole.
            let again = copy_request::<ReqB>(&unconditional);
            req_headers = again.headers().clone();
            request_time = SystemTime::now();
            res = match call_inner(inner, again).await {
                Ok(res) if res.status() != StatusCode::NOT_MODIFIED => res,
                _ => return,
            };
        }
        let response_time = SystemTime::now();
        if res.status() == StatusCode::NOT_MODIFIED {
            let (e, storable) = freshen(
                &self.config,
                self.entry,
                res.headers(),
                &req_headers,
                request_time,
                response_time,
            );
            if storable {
                store_entry(store, &self.key, &e, stale_ticket);
            }
            return;
        }
        let Ok(freshness) = policy::storable(
            &self.config.policy,
            &Method::GET,
            &req_headers,
            res.status(),
            res.headers(),
            request_time,
            response_time,
        ) else {
            return;
        };
        // Asked without `Range`, a 206 is not an answer to store.
        if varies_on_forwarding(res.headers()) || res.status() == StatusCode::PARTIAL_CONTENT {
            return;
        }
        let (parts, body) = res.into_parts();
        let job = store_job(
            &self.config,
            &self.primary,
            self.index,
            primary_ticket,
            &req_headers,
            &parts,
            freshness,
            Some(self.guard),
            None,
            order,
        );
        // Nobody reads this body: drain it through the tee so that it is stored.
        let mut tee = std::pin::pin!(HttpCacheBody::tee(body, self.config.max_body, job));
        while let Some(frame) = std::future::poll_fn(|cx| tee.as_mut().poll_frame(cx)).await {
            if frame.is_err() {
                break;
            }
        }
    }
}

/// Marks pass the variant of the URL a never-storable response answered, and only that
/// one: the URL's stored variants stay served. Without variants (no index, and the
/// response does not vary), the whole URL.
pub(super) fn mark_pass(
    config: &HttpCacheLayer,
    primary: &str,
    index: Option<(u64, Vec<HeaderName>)>,
    primary_ticket: Ticket,
    req: &HeaderMap,
    res: &HeaderMap,
) {
    let store = &config.store;
    let (epoch, names) = match index {
        Some(index) => index,
        None => {
            let names = headers::vary(res).unwrap_or_default();
            if names.is_empty() {
                store.mark_pass_key(primary, config.pass_ttl);
                return;
            }
            // An index for the mark to hang from; a later storable response of the same
            // Vary keeps it (and its epoch).
            let epoch = new_epoch();
            let Some(record) = entry::encode_index(epoch, &names, &[]) else {
                return;
            };
            let _ = store.store_loaded(
                primary,
                record,
                config.pass_ttl,
                EntryMeta::default(),
                primary_ticket,
            );
            (epoch, names)
        }
    };
    let key = variant_key(
        primary,
        epoch,
        &vary_values(req, &names, config.negotiation),
    );
    store.mark_pass_key(&key, config.pass_ttl);
}

/// Whether a response may never be stored whoever asks (so the URL is worth marking
/// pass), as opposed to one the request made unstorable.
pub(super) fn response_never_storable(policy: &policy::HttpPolicy, res: &HeaderMap) -> bool {
    let cc = policy.response_directives(res);
    (cc.no_store && !cc.must_understand)
        || cc.private
        || cc.malformed
        || res.contains_key(::http::header::SET_COOKIE)
        || headers::vary(res).is_none()
}

/// Whether a response varies on a forwarding field (`Vary: X-Forwarded-For`). Such a
/// field reaches the origin from what sits between the cache and the origin (a proxy
/// that adds the client's address), not from the request the cache keyed, or is in the
/// key already ([`ForwardedFields::Key`](super::ForwardedFields::Key)): the variant the
/// cache would file the response under is not the one the origin chose, so it is not
/// stored.
pub(super) fn varies_on_forwarding(res: &HeaderMap) -> bool {
    headers::vary(res).is_some_and(|names| names.iter().any(edge::is_forwarding_field))
}

/// Tags from `Surrogate-Key` and `xkey` (space-separated), stored with the entry.
pub(super) fn surrogate_keys(res: &HeaderMap) -> Tags {
    res.get_all("surrogate-key")
        .iter()
        .chain(res.get_all("xkey").iter())
        .flat_map(|v| v.as_bytes().split(u8::is_ascii_whitespace))
        .filter(|t| !t.is_empty())
        .take(256)
        // A tag is bytes on the wire; one that is not UTF-8 is kept, its bad bytes
        // replaced, rather than dropped.
        .map(|t| {
            String::from_utf8_lossy(t)
                .chars()
                .take(256)
                .collect::<String>()
        })
        .collect()
}

/// What a streamed body stores once it ends whole within the limit.
pub(super) struct StoreJob {
    pub(super) store: Cache,
    pub(super) primary: String,
    pub(super) key: String,
    pub(super) index: Option<IndexUpdate>,
    pub(super) head: HttpEntry,
    pub(super) tags: Tags,
    pub(super) ticket: Ticket,
    /// For a part (a `206`): the response stored under the key when the request was
    /// made, which the part may be combined with (RFC 9111 section 3.4).
    pub(super) before: Option<HttpEntry>,
    /// The largest body stored, and so the largest combined part.
    pub(super) limit: usize,
    /// How long the store waits for bodies streaming from the record it replaces.
    pub(super) replace_wait: std::time::Duration,
    /// When the response was asked for: the newest response of a key wins.
    pub(super) order: u64,
    /// The epoch of the URL's index this response (which does not vary) replaces.
    pub(super) replaces_index: Option<u64>,
    /// Held until the body ends: requests waiting for this URL wake when it drops.
    pub(super) _leader: Option<LeaderGuard>,
}

impl StoreJob {
    /// The write this job ends with, and what it writes: the response's head, and what
    /// was stored under the key before (for a part, of the same variant).
    fn into_commit(self) -> (Commit, HttpEntry, Option<HttpEntry>, std::time::Duration) {
        let now = policy::unix_ms(SystemTime::now());
        let ttl = self.head.freshness.keep_for(now);
        let before = self.before.filter(|b| b.vary == self.head.vary);
        let commit = Commit {
            store: self.store,
            primary: self.primary,
            key: self.key,
            index: self.index,
            ticket: self.ticket,
            ttl,
            meta: EntryMeta {
                version: 0,
                tags: self.tags,
            },
            order: self.order,
            replaces_index: self.replaces_index,
            _leader: self._leader,
        };
        (commit, self.head, before, self.replace_wait)
    }

    /// Stores a body that ended whole in memory.
    pub(super) fn finish(self, body: Bytes) {
        let limit = self.limit;
        let (commit, head, before, wait) = self.into_commit();
        if head.status != StatusCode::PARTIAL_CONTENT {
            let entry = HttpEntry { body, ..head };
            return commit.when_unread(wait, move |c: &Commit| put(c, &entry));
        }
        let len = body.len() as u64;
        match before
            .as_ref()
            .and_then(|b| Some((b, b.on_disk.as_deref()?)))
        {
            // The stored response is held by the disk tier: it is not read back; a part
            // of it keeps it where it is, with the new bytes around it.
            Some((b, on_disk)) => match keeps_stored(&head, len, b, on_disk, limit) {
                Some((head, ext)) => {
                    let (before, after) = (body.slice(ext.0), body.slice(ext.1));
                    let n = after.len() as u64;
                    extend_stored(commit, head, on_disk, before, Around::After(after), n);
                }
                None => {
                    let Some((status, headers)) = range::part_alone(&head.headers, len) else {
                        return;
                    };
                    let entry = HttpEntry {
                        status,
                        headers,
                        body,
                        ..head
                    };
                    commit.when_unread(wait, move |c: &Commit| put(c, &entry));
                }
            },
            None => {
                let before = before.as_ref().map(|b| (b.status, &b.headers, &b.body));
                let Some((status, headers, body)) =
                    range::combine(&head.headers, body, before, limit)
                else {
                    return;
                };
                let entry = HttpEntry {
                    status,
                    headers,
                    body,
                    ..head
                };
                commit.when_unread(wait, move |c: &Commit| put(c, &entry));
            }
        }
    }

    /// Stores a body that was written to a spool file as it streamed (`len` bytes): the
    /// disk tier's writer puts the head and the file's bytes into one record. A part
    /// next to a stored part held by the disk tier extends it (the new bytes outside the
    /// stored range are read from the file); otherwise a part is stored on its own.
    pub(super) fn finish_spooled(self, file: crate::disk::SpoolFile, len: u64) {
        let limit = self.limit;
        let (commit, mut head, before, wait) = self.into_commit();
        if head.status == StatusCode::PARTIAL_CONTENT {
            let stored = before
                .as_ref()
                .and_then(|b| Some((b, b.on_disk.as_deref()?)));
            if let Some((b, on_disk)) = stored {
                if let Some((head, (before, after))) = keeps_stored(&head, len, b, on_disk, limit) {
                    // The new bytes outside the stored range are read off the file by
                    // the disk tier's writer.
                    let n = (before.len() + after.len()) as u64;
                    let around = Around::File {
                        file,
                        before,
                        after,
                    };
                    return extend_stored(commit, head, on_disk, Bytes::new(), around, n);
                }
            }
            let Some((status, headers)) = range::part_alone(&head.headers, len) else {
                return;
            };
            (head.status, head.headers) = (status, headers);
        }
        let Some(bytes) = entry::encode_head(&head, len, 0) else {
            return;
        };
        let head = bytes.freeze();
        commit.when_unread(wait, move |c: &Commit| {
            c.store.store_spooled(
                &c.key,
                head,
                file,
                len,
                c.ttl,
                c.meta.clone(),
                c.ticket.clone(),
            )
        });
    }
}

/// What storing a variant changes in its URL's index: the variant goes to the end of the
/// list, and the oldest ones past the bound are dropped.
pub(super) struct IndexUpdate {
    pub(super) epoch: u64,
    pub(super) names: Vec<HeaderName>,
    /// The hash of the variant stored.
    pub(super) variant: u64,
    pub(super) max_variants: usize,
    /// The URL's ticket: a write of the URL since the origin was asked voids the update.
    pub(super) ticket: Ticket,
}

impl IndexUpdate {
    /// Updates the index and stores the variant (`store_variant`) under a lock of the
    /// URL.
    fn apply(
        self,
        store: &Cache,
        primary: &str,
        ttl: std::time::Duration,
        store_variant: impl FnOnce(),
    ) {
        // The index is read, changed and written, and the variant stored, under a lock of
        // its URL: two variants stored at once both count against the bound, and a
        // variant another store drops from the list is already there to be dropped (it
        // was stored after the list was written, unlisted, before).
        let _lock = index_lock(primary);
        let current = store.memory().get_fresh_uncounted(primary);
        // The index lives as long as the longest-lived variant it lists, so that none
        // outlives the list that bounds it.
        let ttl = match &current {
            Some(s) => {
                let now = store.memory().deadline(std::time::Duration::ZERO);
                ttl.max(std::time::Duration::from_millis(
                    s.expires.saturating_sub(now),
                ))
            }
            None => ttl,
        };
        let mut variants = match current.and_then(|s| entry::index_variants(&s.value)) {
            Some((epoch, listed)) if epoch == self.epoch => listed,
            Some((other, listed)) => {
                // Another index was made meanwhile (two first variants of the URL stored
                // at once); this one replaces it, and the variants it lists could no
                // longer be reached: they go, so that none is held unlisted.
                for old in listed {
                    drop_variant(store, &variant_key_of(primary, other, old));
                    store.count_variant_eviction();
                }
                Vec::new()
            }
            None => Vec::new(),
        };
        variants.retain(|v| *v != self.variant);
        variants.push(self.variant);
        let excess = variants.len().saturating_sub(self.max_variants);
        for old in variants.drain(..excess) {
            drop_variant(store, &variant_key_of(primary, self.epoch, old));
            store.count_variant_eviction();
        }
        if let Some(record) = entry::encode_index(self.epoch, &self.names, &variants) {
            // Not left to a lookup of the URL in progress: a list lost to it would leave
            // every variant stored meanwhile unlisted, and the bound would not hold.
            let _ = store.store_loaded_replacing(
                primary,
                record,
                ttl,
                EntryMeta::default(),
                self.ticket,
            );
        }
        store_variant();
    }
}

/// Removes a dropped variant: from memory at once, from disk in the background (when
/// there is a runtime to run it on; otherwise its disk copy expires with its TTL, and
/// nothing lists it).
/// The variants the URL's index of epoch `epoch` lists (read from memory, or off the
/// disk tier), as keys.
fn listed_variants(store: &Cache, primary: &str, epoch: u64) -> Vec<String> {
    let index = store
        .memory()
        .get_fresh_uncounted(primary)
        .map(|s| s.value)
        .or_else(|| store.disk().and_then(|d| d.get(primary)));
    match index.and_then(|v| entry::index_variants(&v)) {
        Some((listed, variants)) if listed == epoch => variants
            .into_iter()
            .map(|v| variant_key_of(primary, epoch, v))
            .collect(),
        _ => Vec::new(),
    }
}

/// Drops variants a response that does not vary made unreachable (it replaced their
/// index).
fn drop_variants(store: &Cache, keys: Vec<String>) {
    for key in keys {
        drop_variant(store, &key);
        store.count_variant_eviction();
    }
}

fn drop_variant(store: &Cache, key: &str) {
    store.memory().delete(key);
    if store.disk().is_some() {
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let (store, key) = (store.clone(), key.to_owned());
            rt.spawn(async move {
                let _ = store.delete(&key).await;
            });
        }
    }
}

/// One of a few locks, picked by the URL's primary key.
fn index_lock(primary: &str) -> std::sync::MutexGuard<'static, ()> {
    use std::hash::{Hash, Hasher};
    const LOCKS: usize = 32;
    static INDEX_LOCKS: [std::sync::Mutex<()>; LOCKS] =
        [const { std::sync::Mutex::new(()) }; LOCKS];
    let mut h = std::hash::DefaultHasher::new();
    primary.hash(&mut h);
    crate::util::lock(&INDEX_LOCKS[(h.finish() % LOCKS as u64) as usize])
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use ::http::{Request, Response};
    use futures_util::StreamExt;
    use http_body::Frame;
    use http_body_util::combinators::UnsyncBoxBody;
    use http_body_util::{BodyExt, Full, StreamBody};
    use tower::{Layer, ServiceExt};

    use super::*;

    type TestBody = UnsyncBoxBody<Bytes, Infallible>;

    #[tokio::test(start_paused = true)]
    async fn a_stalled_background_refresh_gives_its_slot_up_after_the_refresh_timeout() {
        let calls = Arc::new(AtomicUsize::new(0));
        let origin = {
            let calls = calls.clone();
            tower::service_fn(move |_req: Request<()>| {
                let n = calls.fetch_add(1, Ordering::SeqCst);
                async move {
                    // Stale at once (Age past max-age), within its revalidation window.
                    let body: TestBody = if n == 0 {
                        Full::new(Bytes::from_static(b"first")).boxed_unsync()
                    } else {
                        // A head, then a body that never ends.
                        let frames = futures_util::stream::iter([Ok::<_, Infallible>(
                            Frame::data(Bytes::from_static(b"par")),
                        )])
                        .chain(futures_util::stream::pending());
                        StreamBody::new(frames).boxed_unsync()
                    };
                    let res = Response::builder()
                        .header("cache-control", "max-age=1, stale-while-revalidate=600")
                        .header("age", "5")
                        .body(body)
                        .unwrap();
                    Ok::<_, Infallible>(res)
                }
            })
        };
        let store = Cache::new(crate::MemoryTier::builder().build().unwrap());
        let timeout = Duration::from_secs(5);
        let svc = HttpCacheLayer::new(store)
            .refresh_timeout(timeout)
            .layer(origin);
        let get = || {
            Request::get("/r")
                .header("host", "a.test")
                .body(())
                .unwrap()
        };
        let status = |res: &Response<_>| res.headers()["x-cache"].to_str().unwrap().to_owned();
        let first = svc.clone().oneshot(get()).await.unwrap();
        assert_eq!(status(&first), "MISS");
        first.into_body().collect().await.unwrap();
        // Stale: served, and one refresh starts (the origin's second call), which stalls.
        let stale = svc.clone().oneshot(get()).await.unwrap();
        assert_eq!(status(&stale), "STALE");
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        // While it runs, no second refresh starts.
        let stale = svc.clone().oneshot(get()).await.unwrap();
        assert_eq!(status(&stale), "STALE");
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        // Past the refresh timeout the stalled refresh is dropped: the next stale hit
        // starts another.
        tokio::time::sleep(timeout).await;
        let stale = svc.clone().oneshot(get()).await.unwrap();
        assert_eq!(status(&stale), "STALE");
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_response_with_another_vary_list_is_filed_beside_the_variants() {
        let origin = tower::service_fn(|req: Request<()>| async move {
            let cors = req.headers().contains_key("origin");
            let res = Response::builder()
                .header("cache-control", "max-age=60")
                .header(
                    "vary",
                    if cors {
                        "Accept-Encoding, Origin"
                    } else {
                        "Accept-Encoding"
                    },
                )
                .body(Full::new(Bytes::from(if cors { "cors" } else { "plain" })).boxed_unsync())
                .unwrap();
            Ok::<Response<TestBody>, Infallible>(res)
        });
        let store = Cache::new(crate::MemoryTier::builder().build().unwrap());
        let svc = HttpCacheLayer::new(store).layer(origin);
        let get = |ae: &'static str, origin: Option<&'static str>| {
            let mut b = Request::get("/v")
                .header("host", "a.test")
                .header("accept-encoding", ae);
            if let Some(o) = origin {
                b = b.header("origin", o);
            }
            b.body(()).unwrap()
        };
        let fetch = |req| {
            let svc = svc.clone();
            async move {
                let res = svc.oneshot(req).await.unwrap();
                let x = res.headers()["x-cache"].to_str().unwrap().to_owned();
                let body = res.into_body().collect().await.unwrap().to_bytes();
                (x, String::from_utf8_lossy(&body).into_owned())
            }
        };
        assert_eq!(fetch(get("gzip", None)).await.0, "MISS");
        assert_eq!(
            fetch(get("gzip", None)).await,
            ("HIT-MEM".into(), "plain".into())
        );
        assert_eq!(fetch(get("br", Some("http://x.test"))).await.0, "MISS");
        // The plain variant is still there, and the CORS one is served by its own list.
        assert_eq!(
            fetch(get("gzip", None)).await,
            ("HIT-MEM".into(), "plain".into())
        );
        assert_eq!(
            fetch(get("br", Some("http://x.test"))).await,
            ("HIT-MEM".into(), "cors".into())
        );
        // Another Origin is another variant of the CORS response: not served from it.
        assert_eq!(fetch(get("br", Some("http://y.test"))).await.0, "MISS");
    }
}
