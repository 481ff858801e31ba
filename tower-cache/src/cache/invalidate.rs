//! Invalidation on a [`Cache`], part of the cache: by key, pattern, tag and dependency,
//! with listeners; the dependency edges and listeners live in its [`Registry`]. The
//! overview is in [`crate::invalidate`].

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex};

use super::Cache;
use crate::error::InvalidateError;
use crate::target::{Glob, Select, Tombstone};

type Listener = Arc<dyn Fn(&str) + Send + Sync>;

/// The store's dependency edges and listeners. Cloning a `Cache` shares them.
#[derive(Default)]
pub(crate) struct Registry {
    edges: Mutex<Edges>,
    listeners: Mutex<Vec<(Glob, Listener)>>,
    /// Calls of a listener that panicked.
    listener_panics: std::sync::atomic::AtomicU64,
    /// A prune of entry-scoped edges is under way (one at a time).
    pruning: std::sync::atomic::AtomicBool,
    /// Entry-scoped edges pruned so far.
    pruned: std::sync::atomic::AtomicU64,
}

/// Dependency edges held in memory (also on disk when there is a disk tier).
#[derive(Default)]
struct Edges {
    /// `on` -> the keys that depend on it.
    dependents: HashMap<String, HashSet<String>>,
    /// Entry-scoped edges by dependent: `key` -> what its entry depends on.
    scoped: HashMap<String, HashSet<String>>,
    /// How many entry-scoped edges there are, and how many the last prune left.
    scoped_len: usize,
    scoped_after_prune: usize,
}

/// Entry-scoped edges are pruned once there are this many, and again each time they
/// double.
const PRUNE_AT_LEAST: usize = 4096;

impl Registry {
    pub(crate) fn pruned(&self) -> u64 {
        self.pruned.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Edges {
    fn insert(&mut self, key: &str, depends_on: &str, scoped: bool) {
        let new = self
            .dependents
            .entry(depends_on.to_owned())
            .or_default()
            .insert(key.to_owned());
        if scoped {
            if new {
                self.scoped
                    .entry(key.to_owned())
                    .or_default()
                    .insert(depends_on.to_owned());
                self.scoped_len += 1;
            }
        } else if let Some(ons) = self.scoped.get_mut(key) {
            // A lasting edge replaces an entry-scoped one.
            if ons.remove(depends_on) {
                self.scoped_len -= 1;
                if ons.is_empty() {
                    self.scoped.remove(key);
                }
            }
        }
    }

    /// Removes the entry-scoped edges of `key`; returns how many.
    fn remove_scoped(&mut self, key: &str) -> usize {
        let Some(ons) = self.scoped.remove(key) else {
            return 0;
        };
        for on in &ons {
            if let Some(set) = self.dependents.get_mut(on) {
                set.remove(key);
                if set.is_empty() {
                    self.dependents.remove(on);
                }
            }
        }
        self.scoped_len -= ons.len();
        ons.len()
    }

    fn due_for_prune(&self) -> bool {
        self.scoped_len >= PRUNE_AT_LEAST.max(self.scoped_after_prune.saturating_mul(2))
    }
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry").finish_non_exhaustive()
    }
}

use crate::util::lock;

fn check_key(key: &str) -> Result<(), InvalidateError> {
    if key.is_empty() {
        Err(InvalidateError::new(
            "invalidation key is empty; give the key to remove",
        ))
    } else {
        Ok(())
    }
}

impl Cache {
    /// Removes `key` from every tier; returns 1 if a tier held it, else 0.
    pub async fn invalidate(&self, key: &str) -> Result<usize, InvalidateError> {
        check_key(key)?;
        let found = self
            .delete(key)
            .await
            .map_err(|e| InvalidateError::new(e.to_string()))?;
        self.notify([key]);
        Ok(usize::from(found))
    }

    /// Removes every key matching the glob `pattern` from every tier; returns how many
    /// distinct keys were removed.
    pub async fn invalidate_pattern(&self, pattern: &str) -> Result<usize, InvalidateError> {
        let glob = Glob::new(pattern)?;
        let memory = self.memory().keys_where(|k, _| glob.matches(k));
        self.remove_selected(memory, Select::Pattern(glob), None, None)
            .await
    }

    /// Removes every entry stored with `tag` from every tier; returns how many.
    pub async fn invalidate_tag(&self, tag: &str) -> Result<usize, InvalidateError> {
        if tag.is_empty() {
            return Err(InvalidateError::new(
                "invalidation tag is empty; give the tag",
            ));
        }
        let memory = self
            .memory()
            .keys_where(|_, tags| tags.is_some_and(|t| t.iter().any(|x| x == tag)));
        self.remove_selected(memory, Select::Tag(tag.into()), None, None)
            .await
    }

    /// Invalidates `target` and records `tombstone` in the disk tier in the same
    /// transaction (the coordinator's invalidations, so that a restart remembers them).
    /// With `keep_newer_than`, a pattern or tag leaves the entries whose version is above
    /// it in place (a remote invalidation removes only what is not newer than itself).
    pub(crate) async fn invalidate_recorded(
        &self,
        target: &crate::target::Target,
        tombstone: Tombstone,
        keep_newer_than: Option<u64>,
    ) -> Result<usize, InvalidateError> {
        let older = |k: &str| {
            keep_newer_than.is_none_or(|bound| {
                self.memory()
                    .get_fresh_uncounted(k)
                    .is_none_or(|s| !crate::version::outlives(s.version, bound))
            })
        };
        use crate::target::Target;
        match target {
            Target::Key(key) => {
                check_key(key)?;
                let found = self
                    .delete_with(key, Some(tombstone))
                    .await
                    .map_err(|e| InvalidateError::new(e.to_string()))?;
                self.notify([key.as_str()]);
                Ok(usize::from(found))
            }
            Target::Pattern(pattern) => {
                let glob = Glob::new(pattern)?;
                let mut memory = self.memory().keys_where(|k, _| glob.matches(k));
                memory.retain(|k| older(k));
                self.remove_selected(
                    memory,
                    Select::Pattern(glob),
                    Some(tombstone),
                    keep_newer_than,
                )
                .await
            }
            Target::Dependents(key) => {
                let (version, until_ms) = (tombstone.version, tombstone.until_ms);
                let each = move |k: &str| Tombstone {
                    row: format!("k\u{0}{k}").into(),
                    version,
                    until_ms,
                };
                self.invalidate_dependents_recorded(key, &each, keep_newer_than)
                    .await
            }
            Target::Tag(tag) => {
                if tag.is_empty() {
                    return Err(InvalidateError::new(
                        "invalidation tag is empty; give the tag",
                    ));
                }
                let mut memory = self
                    .memory()
                    .keys_where(|_, tags| tags.is_some_and(|t| t.iter().any(|x| x == tag)));
                memory.retain(|k| older(k));
                self.remove_selected(
                    memory,
                    Select::Tag(tag.as_str().into()),
                    Some(tombstone),
                    keep_newer_than,
                )
                .await
            }
        }
    }

    /// Records that `key` depends on `depends_on`: invalidating `depends_on` with
    /// [`Self::invalidate_with_dependents`] removes `key` too. Persists in the disk tier.
    pub async fn register_dependency(
        &self,
        key: &str,
        depends_on: &str,
    ) -> Result<(), InvalidateError> {
        self.add_dependency(key, depends_on, false).await
    }

    /// Records that the entry of `key` depends on `depends_on`, for as long as `key` has
    /// an entry: like [`Self::register_dependency`], but the edge goes when the entry
    /// goes (expired, evicted, deleted or invalidated), so edges recorded for entries
    /// that come and go do not pile up. Record it each time `key` is loaded, before the
    /// values the entry is made of are read (as in the example below).
    ///
    /// Edges are pruned by [`Self::prune_dependencies`], which [`Self::remove_expired`]
    /// calls, and which runs on its own each time the number of these edges doubles
    /// (from 4,096). A prune of `key`'s edges is a write of `key` in the sense of the
    /// store's consistency guarantee: a load of `key` in flight then is served but not
    /// stored, so an entry is never left without the edges recorded for it.
    ///
    /// An edge also recorded with [`Self::register_dependency`] lasts.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::time::Duration;
    /// use tower_cache::{Cache, MemoryTier};
    ///
    /// let cache = Cache::new(MemoryTier::builder().build()?);
    /// let limit = cache
    ///     .get_or_load("ratelimit:user:7", Duration::from_secs(60), async {
    ///         // Recorded before the user's record is read: a change to the user after
    ///         // this point removes the entry, or stops this load from storing it.
    ///         cache.register_entry_dependency("ratelimit:user:7", "user:7").await?;
    ///         Ok::<_, tower_cache::InvalidateError>(bytes::Bytes::from("3"))
    ///     })
    ///     .await?;
    /// assert_eq!(limit, "3");
    /// assert_eq!(cache.dependency_count(), 1);
    ///
    /// cache.delete("ratelimit:user:7").await?;
    /// assert_eq!(cache.prune_dependencies().await?, 1);
    /// assert_eq!(cache.dependency_count(), 0);
    /// # Ok(()) }
    /// ```
    pub async fn register_entry_dependency(
        &self,
        key: &str,
        depends_on: &str,
    ) -> Result<(), InvalidateError> {
        self.add_dependency(key, depends_on, true).await?;
        let due = lock(&self.registry().edges).due_for_prune();
        if due {
            self.prune_dependencies().await?;
        }
        Ok(())
    }

    async fn add_dependency(
        &self,
        key: &str,
        depends_on: &str,
        scoped: bool,
    ) -> Result<(), InvalidateError> {
        check_key(key)?;
        check_key(depends_on)?;
        lock(&self.registry().edges).insert(key, depends_on, scoped);
        if let Some(disk) = self.disk() {
            disk.add_dependency(depends_on, key, scoped)
                .await
                .map_err(|e| InvalidateError::new(e.to_string()))?;
        }
        Ok(())
    }

    /// Removes the edges recorded with [`Self::register_entry_dependency`] whose key has
    /// no entry in any tier; returns how many keys lost their edges. One prune runs at a
    /// time: a call while another runs returns 0 at once.
    pub async fn prune_dependencies(&self) -> Result<usize, InvalidateError> {
        use std::sync::atomic::Ordering;
        let registry = self.registry();
        if registry.pruning.swap(true, Ordering::AcqRel) {
            return Ok(0);
        }
        struct Running<'a>(&'a std::sync::atomic::AtomicBool);
        impl Drop for Running<'_> {
            fn drop(&mut self) {
                self.0.store(false, Ordering::Release);
            }
        }
        let _running = Running(&registry.pruning);

        let mut candidates: HashSet<String> =
            lock(&registry.edges).scoped.keys().cloned().collect();
        if let Some(disk) = self.disk() {
            // Edges recorded before a restart are only on disk.
            match disk.scoped_dependents_without_entry().await {
                Ok(keys) => candidates.extend(keys),
                Err(e) => return Err(InvalidateError::new(e.to_string())),
            }
        }
        candidates.retain(|k| !self.memory().has(k));
        // Announced as writes before the tiers are looked at again: a load of one of
        // these keys that is in flight is not stored after the look (see the docs).
        let _writes: Vec<_> = candidates
            .iter()
            .map(|k| self.generations().begin_write(k))
            .collect();
        let mut absent = Vec::with_capacity(candidates.len());
        for k in candidates {
            if !self.memory().has(&k) {
                // Ends a load of `k` under way (its placeholder), as a delete does.
                self.memory().delete(&k);
                absent.push(k.into_boxed_str());
            }
        }
        let gone = match self.disk() {
            Some(disk) => disk
                .prune_dependents(absent)
                .await
                .map_err(|e| InvalidateError::new(e.to_string()))?,
            None => absent,
        };
        let mut edges = lock(&registry.edges);
        for k in &gone {
            edges.remove_scoped(k);
        }
        edges.scoped_after_prune = edges.scoped_len;
        drop(edges);
        registry
            .pruned
            .fetch_add(gone.len() as u64, Ordering::Relaxed);
        Ok(gone.len())
    }

    /// How many dependency edges the store holds in memory (each `key` -> `depends_on`
    /// pair recorded by [`Self::register_dependency`] counts once), for figures and for
    /// checking that what clients can make the store record stays bounded.
    pub fn dependency_count(&self) -> usize {
        lock(&self.registry().edges)
            .dependents
            .values()
            .map(HashSet::len)
            .sum()
    }

    /// Removes `key` and, transitively, every key that depends on it; returns how many
    /// entries were removed. A dependency cycle ends where it began.
    pub async fn invalidate_with_dependents(&self, key: &str) -> Result<usize, InvalidateError> {
        check_key(key)?;
        let mut seen: HashSet<String> = HashSet::new();
        let mut queue = VecDeque::from([key.to_owned()]);
        let mut removed = 0;
        let mut fault = None;
        while let Some(k) = queue.pop_front() {
            if !seen.insert(k.clone()) {
                continue;
            }
            match self.delete(&k).await {
                Ok(found) => removed += usize::from(found),
                Err(e) => fault = Some(e),
            }
            for d in self.dependents_of(&k) {
                if !seen.contains(&d) {
                    queue.push_back(d);
                }
            }
        }
        self.notify(seen.iter().map(String::as_str));
        match fault {
            Some(e) => Err(InvalidateError::new(e.to_string())),
            None => Ok(removed),
        }
    }

    /// Like [`Self::invalidate_with_dependents`], recording `tombstone(key)` on disk with
    /// each key's delete (the caller remembers it in memory there too, before the delete).
    /// With `keep_newer_than`, a key whose entry is newer than that stays (its dependents
    /// are still followed).
    pub(crate) async fn invalidate_dependents_recorded(
        &self,
        key: &str,
        tombstone: &(dyn Fn(&str) -> Tombstone + Send + Sync),
        keep_newer_than: Option<u64>,
    ) -> Result<usize, InvalidateError> {
        check_key(key)?;
        let mut seen: HashSet<String> = HashSet::new();
        let mut queue = VecDeque::from([key.to_owned()]);
        let mut removed = 0;
        let mut fault = None;
        let mut gone = Vec::new();
        while let Some(k) = queue.pop_front() {
            if !seen.insert(k.clone()) {
                continue;
            }
            let newer = keep_newer_than.is_some_and(|bound| {
                let local = self
                    .memory()
                    .get_fresh_uncounted(&k)
                    .map(|s| s.version)
                    .or_else(|| {
                        self.disk()
                            .and_then(|d| d.get_entry(&k))
                            .map(|e| e.meta.version)
                    });
                local.is_some_and(|v| crate::version::outlives(v, bound))
            });
            if !newer {
                match self.delete_with(&k, Some(tombstone(&k))).await {
                    Ok(found) => removed += usize::from(found),
                    Err(e) => fault = Some(e),
                }
                gone.push(k.clone());
            }
            for d in self.dependents_of(&k) {
                if !seen.contains(&d) {
                    queue.push_back(d);
                }
            }
        }
        self.notify(gone.iter().map(String::as_str));
        match fault {
            Some(e) => Err(InvalidateError::new(e.to_string())),
            None => Ok(removed),
        }
    }

    /// Calls of [`on_invalidate`](Self::on_invalidate) listeners that panicked.
    pub fn listener_panics(&self) -> u64 {
        self.registry()
            .listener_panics
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Calls `callback` with every invalidated key that matches `pattern`.
    ///
    /// The callback runs on the task that invalidates (for a remote invalidation, the
    /// coordinator's receiving task). If it panics, the panic is caught, logged and counted
    /// ([`listener_panics`](Self::listener_panics), and the coordinator's status): the
    /// invalidation completes, every other listener is still called, and the listener
    /// stays registered (a panic for one key says nothing of the next).
    pub fn on_invalidate<F>(&self, pattern: &str, callback: F) -> Result<(), InvalidateError>
    where
        F: Fn(&str) + Send + Sync + 'static,
    {
        let glob = Glob::new(pattern)?;
        lock(&self.registry().listeners).push((glob, Arc::new(callback)));
        Ok(())
    }

    /// The keys recorded as depending on `key`, in memory and on disk.
    fn dependents_of(&self, key: &str) -> Vec<String> {
        let mut out: HashSet<String> = lock(&self.registry().edges)
            .dependents
            .get(key)
            .cloned()
            .unwrap_or_default();
        if let Some(disk) = self.disk() {
            match disk.dependents(key) {
                Ok(d) => out.extend(d),
                Err(e) => tracing::warn!(error = %e, key, "cannot read dependencies from disk"),
            }
        }
        out.into_iter().collect()
    }

    /// Removes the `memory` keys and what `select` reaches on disk, under one announced
    /// write of every key (fills in flight stop).
    async fn remove_selected(
        &self,
        memory: Vec<String>,
        select: Select,
        tombstone: Option<Tombstone>,
        keep_newer_than: Option<u64>,
    ) -> Result<usize, InvalidateError> {
        let _write = self.generations().begin_clear();
        let mut keys: HashSet<String> = HashSet::new();
        let mut fault = None;
        if let Some(disk) = self.disk() {
            match disk
                .remove_matching(select, tombstone, keep_newer_than)
                .await
            {
                Ok(removed) => keys.extend(removed.into_iter().map(String::from)),
                Err(e) => fault = Some(e),
            }
        }
        for k in memory {
            if self.memory().delete(&k) {
                keys.insert(k);
            }
        }
        self.notify(keys.iter().map(String::as_str));
        match fault {
            Some(e) => Err(InvalidateError::new(e.to_string())),
            None => Ok(keys.len()),
        }
    }

    fn notify<'a>(&self, keys: impl IntoIterator<Item = &'a str>) {
        let listeners: Vec<(Glob, Listener)> = lock(&self.registry().listeners).clone();
        if listeners.is_empty() {
            return;
        }
        for key in keys {
            for (glob, callback) in &listeners {
                if glob.matches(key) {
                    // A listener is user code: its panic is contained here, counted and
                    // logged, and the listener stays registered (see `on_invalidate`).
                    let call = std::panic::AssertUnwindSafe(|| callback(key));
                    if std::panic::catch_unwind(call).is_err() {
                        self.registry()
                            .listener_panics
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        tracing::error!(
                            key,
                            "an on_invalidate listener panicked; it stays registered"
                        );
                    }
                }
            }
        }
    }
}
