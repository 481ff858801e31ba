//! Request collapsing: one fetch per URL, the others wait for it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

// === single flight ===

/// The URLs being fetched, each with the requests waiting for it.
#[derive(Default)]
pub(super) struct Inflight {
    pub(super) map: Mutex<HashMap<String, Arc<Notify>>>,
}

pub(super) enum Join {
    Leader(LeaderGuard),
    Wait(tokio::sync::futures::OwnedNotified),
}

impl Inflight {
    pub(super) fn join(self: &Arc<Self>, key: &str) -> Join {
        let mut map = crate::util::lock(&self.map);
        if let Some(n) = map.get(key) {
            // Created under the lock, before the leader can notify: no wake-up is lost.
            return Join::Wait(n.clone().notified_owned());
        }
        map.insert(key.to_owned(), Arc::new(Notify::new()));
        Join::Leader(LeaderGuard {
            inflight: self.clone(),
            key: key.to_owned(),
        })
    }
}

/// The right to fetch a URL for everyone; dropping it wakes the waiters.
pub(super) struct LeaderGuard {
    pub(super) inflight: Arc<Inflight>,
    pub(super) key: String,
}

impl Drop for LeaderGuard {
    fn drop(&mut self) {
        let removed = crate::util::lock(&self.inflight.map).remove(&self.key);
        if let Some(n) = removed {
            n.notify_waiters();
        }
    }
}
