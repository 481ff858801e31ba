//! The balancer's background task: follows discovery and watches endpoints that are
//! not ready or set aside until their `poll_ready` succeeds.

use std::fmt;
use std::hash::Hash;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::sync::mpsc;
use tower::discover::{Change, Discover};
use tower::ServiceExt;
use tower_service::Service;

use super::pool::Endpoint;
use super::service::Shared;
use crate::BoxError;

/// An endpoint to watch: a clone of its service to poll, after an optional delay.
pub(crate) struct Watch<K, S> {
    pub(crate) ep: Arc<Endpoint<K, S>>,
    pub(crate) svc: S,
    pub(crate) delay: Option<Duration>,
}

/// Stops the task when the last balancer handle is dropped.
pub(crate) struct Guard(tokio::task::AbortHandle);

impl fmt::Debug for Guard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Guard")
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

enum Outcome {
    Ready,
    Failed,
    Removed,
}

type WatchFuture<K, S> =
    Pin<Box<dyn std::future::Future<Output = (Arc<Endpoint<K, S>>, Outcome)> + Send>>;

fn watch<K, S, Req>(w: Watch<K, S>) -> WatchFuture<K, S>
where
    K: Send + Sync + 'static,
    S: Service<Req> + Send + 'static,
    S::Future: Send,
    Req: 'static,
{
    let Watch { ep, mut svc, delay } = w;
    let mut removed = ep.removed.subscribe();
    Box::pin(async move {
        let gone = async move {
            // Resolves when the endpoint is removed (or the sender is gone with it).
            while !*removed.borrow_and_update() {
                if removed.changed().await.is_err() {
                    return;
                }
            }
        };
        tokio::pin!(gone);
        if let Some(d) = delay {
            tokio::select! {
                _ = tokio::time::sleep(d) => {}
                _ = &mut gone => return (ep, Outcome::Removed),
            }
        }
        tokio::select! {
            r = svc.ready() => {
                let outcome = if r.is_ok() { Outcome::Ready } else { Outcome::Failed };
                drop(svc);
                (ep, outcome)
            }
            _ = &mut gone => (ep, Outcome::Removed),
        }
    })
}

/// The balancer state for discovery `D` and requests `Req`.
type SharedOf<D, Req> = Shared<
    <D as Discover>::Key,
    <D as Discover>::Service,
    Req,
    <<D as Discover>::Service as Service<Req>>::Response,
>;

pub(crate) fn spawn<D, Req>(
    handle: &tokio::runtime::Handle,
    shared: Weak<SharedOf<D, Req>>,
    discover: D,
    mut rx: mpsc::UnboundedReceiver<Watch<D::Key, D::Service>>,
) -> Guard
where
    D: Discover + Send + 'static,
    D::Key: Hash + Eq + Clone + fmt::Debug + Send + Sync + 'static,
    D::Service: Service<Req> + Clone + Send + 'static,
    <D::Service as Service<Req>>::Future: Send,
    <D::Service as Service<Req>>::Response: Send + 'static,
    <D::Service as Service<Req>>::Error: Into<BoxError>,
    D::Error: Into<BoxError>,
    Req: Send + 'static,
{
    let task = handle.spawn(async move {
        let mut discover = Box::pin(discover);
        let mut discovering = true;
        // After a discovery error, a pause before asking again (doubling up to 1 s), so
        // a source that fails at once every time does not spin this task.
        let mut errors_in_a_row = 0u32;
        let mut paused = false;
        let pause = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(pause);
        let mut watches: FuturesUnordered<WatchFuture<D::Key, D::Service>> =
            FuturesUnordered::new();
        loop {
            tokio::select! {
                change = std::future::poll_fn(|cx| discover.as_mut().poll_discover(cx)), if discovering && !paused => {
                    let Some(shared) = shared.upgrade() else { return };
                    match change {
                        Some(Ok(change)) => {
                            errors_in_a_row = 0;
                            match change {
                                Change::Insert(key, svc) => shared.insert(key, svc),
                                Change::Remove(key) => shared.remove(&key),
                            }
                        }
                        Some(Err(e)) => {
                            let e: BoxError = e.into();
                            shared.stats.discovery_errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            tracing::warn!(error = %e, "discovery failed; keeping the endpoints known");
                            let wait = crate::hash::backoff(Duration::from_millis(1), Duration::from_secs(1), errors_in_a_row, 0.0);
                            errors_in_a_row = errors_in_a_row.saturating_add(1);
                            pause.as_mut().reset(tokio::time::Instant::now() + wait);
                            paused = true;
                        }
                        None => discovering = false,
                    }
                }
                _ = &mut pause, if paused => paused = false,
                w = rx.recv() => match w {
                    Some(w) => watches.push(watch::<_, _, Req>(w)),
                    None => return,
                },
                Some((ep, outcome)) = watches.next(), if !watches.is_empty() => {
                    let Some(shared) = shared.upgrade() else { return };
                    match outcome {
                        Outcome::Ready => shared.readmit(&ep),
                        Outcome::Failed => {
                            ep.cell.set_aside_from_not_ready();
                            let n = ep.cell.failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            let delay = shared.backoff(n);
                            let svc = ep.clone_service();
                            watches.push(watch::<_, _, Req>(Watch { ep, svc, delay: Some(delay) }));
                        }
                        Outcome::Removed => {}
                    }
                }
            }
        }
    });
    Guard(task.abort_handle())
}
