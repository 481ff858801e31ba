//! The balancer's background task: follows discovery and watches endpoints that are
//! not ready or set aside until their `poll_ready` succeeds.

use std::fmt;
use std::hash::Hash;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures_util::future::FutureExt;
use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::sync::mpsc;
use tower::discover::{Change, Discover};
use tower::ServiceExt;
use tower_service::Service;

use super::pool::Endpoint;
use super::shared::{Shared, Watch};
use crate::util::{drop_quietly, panic_message};
use crate::BoxError;

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
    /// Its `poll_ready` panicked; the message of the panic.
    Panicked(String),
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
            // The endpoint's own code runs here: a panic in its `poll_ready` is caught,
            // so it costs this endpoint its place, not the task that follows discovery.
            r = AssertUnwindSafe(svc.ready()).catch_unwind() => {
                let outcome = match r {
                    Ok(Ok(_)) => Outcome::Ready,
                    Ok(Err(_)) => Outcome::Failed,
                    Err(p) => Outcome::Panicked(panic_message(&*p)),
                };
                drop_quietly(svc);
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

/// What the task keeps across a restart after a panic.
struct State<D: Discover> {
    discover: Pin<Box<D>>,
    discovering: bool,
    /// Discovery errors in a row: the exponent of the pause before asking again.
    errors_in_a_row: u32,
    paused: bool,
    pause: Pin<Box<tokio::time::Sleep>>,
    watches: FuturesUnordered<WatchFuture<D::Key, D::Service>>,
    rx: mpsc::UnboundedReceiver<Watch<D::Key, D::Service>>,
    /// Changes taken from discovery and not applied yet (kept across a panic).
    burst: Vec<Change<D::Key, D::Service>>,
}

/// The most discovery changes applied in one rebuild.
const MAX_BURST: usize = 1 << 16;

/// How a burst taken from discovery ended.
enum BurstEnd<E> {
    /// Discovery has no more now.
    Pending,
    /// Discovery failed after the burst.
    Failed(E),
    /// Discovery ended after the burst.
    Ended,
}

/// After this long without a panic, a restart starts the backoff from its minimum.
const CALM: Duration = Duration::from_secs(10);

pub(crate) fn spawn<D, Req>(
    handle: &tokio::runtime::Handle,
    shared: Weak<SharedOf<D, Req>>,
    discover: D,
    rx: mpsc::UnboundedReceiver<Watch<D::Key, D::Service>>,
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
        let mut st = State {
            discover: Box::pin(discover),
            discovering: true,
            errors_in_a_row: 0,
            paused: false,
            pause: Box::pin(tokio::time::sleep(Duration::ZERO)),
            watches: FuturesUnordered::new(),
            rx,
            burst: Vec::new(),
        };
        // A panic that escapes (in the discovery stream, or a key's `Debug`) ends one
        // run, not the task: the state outlives it, and the next run goes on from it
        // after a backoff (1 ms doubling to 1 s), so a stream that panics every time
        // does not spin.
        let mut restarts_in_a_row = 0u32;
        let mut last_panic: Option<tokio::time::Instant> = None;
        loop {
            match AssertUnwindSafe(run::<D, Req>(&shared, &mut st))
                .catch_unwind()
                .await
            {
                Ok(()) => return,
                Err(p) => {
                    let Some(s) = shared.upgrade() else { return };
                    s.stats.driver_restarts.fetch_add(1, Ordering::Relaxed);
                    drop(s);
                    tracing::error!(
                        panic = %panic_message(&*p),
                        "the balancer's discovery task panicked; starting it again"
                    );
                    drop_quietly(p);
                    let now = tokio::time::Instant::now();
                    if last_panic.is_some_and(|t| now.saturating_duration_since(t) > CALM) {
                        restarts_in_a_row = 0;
                    }
                    last_panic = Some(now);
                    let wait = crate::util::backoff(
                        Duration::from_millis(1),
                        Duration::from_secs(1),
                        restarts_in_a_row,
                        0.0,
                    );
                    restarts_in_a_row = restarts_in_a_row.saturating_add(1);
                    tokio::time::sleep(wait).await;
                }
            }
        }
    });
    Guard(task.abort_handle())
}

/// Follows discovery and the watched endpoints until the balancer is gone (or a panic).
async fn run<D, Req>(shared: &Weak<SharedOf<D, Req>>, st: &mut State<D>)
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
    let State {
        discover,
        discovering,
        errors_in_a_row,
        paused,
        pause,
        watches,
        rx,
        burst,
    } = st;
    // A burst taken before a panic is applied first.
    if !burst.is_empty() {
        let Some(shared) = shared.upgrade() else {
            return;
        };
        shared.apply(std::mem::take(burst));
    }
    loop {
        // Endpoints changed state: the ready lists are taken again (once for all the
        // events handled in a row).
        let mut states_changed = false;
        tokio::select! {
            // Unconstrained by tokio's cooperative budget, which would cut a burst
            // into pieces of 128 (`MAX_BURST` bounds it instead).
            end = tokio::task::unconstrained(std::future::poll_fn(|cx| take_burst(discover.as_mut(), burst, cx))), if *discovering && !*paused => {
                let Some(shared) = shared.upgrade() else { return };
                // Everything discovery had ready at once, as one rebuild.
                shared.apply(std::mem::take(burst));
                match end {
                    BurstEnd::Pending => *errors_in_a_row = 0,
                    BurstEnd::Failed(e) => {
                        let e: BoxError = e.into();
                        shared.stats.discovery_errors.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(error = %e, "discovery failed; keeping the endpoints known");
                        let wait = crate::util::backoff(Duration::from_millis(1), Duration::from_secs(1), *errors_in_a_row, 0.0);
                        *errors_in_a_row = errors_in_a_row.saturating_add(1);
                        pause.as_mut().reset(tokio::time::Instant::now() + wait);
                        *paused = true;
                    }
                    BurstEnd::Ended => *discovering = false,
                }
            }
            _ = pause.as_mut(), if *paused => *paused = false,
            w = rx.recv() => match w {
                Some(w) => {
                    // An endpoint left the ready state.
                    watches.push(watch::<_, _, Req>(w));
                    states_changed = true;
                }
                None => return,
            },
            Some((ep, outcome)) = watches.next(), if !watches.is_empty() => {
                let Some(shared) = shared.upgrade() else { return };
                handle::<D, Req>(&shared, watches, ep, outcome);
                states_changed = true;
            }
        }
        if states_changed {
            let Some(shared) = shared.upgrade() else {
                return;
            };
            // What else is there now, before the lists are taken again.
            while let Ok(w) = rx.try_recv() {
                watches.push(watch::<_, _, Req>(w));
            }
            while let Some(Some((ep, outcome))) = watches.next().now_or_never() {
                handle::<D, Req>(&shared, watches, ep, outcome);
            }
            shared.publish_ready();
        }
    }
}

/// Takes what discovery has ready now into `burst` (up to `MAX_BURST`); pending while
/// it has nothing.
fn take_burst<D: Discover>(
    mut discover: Pin<&mut D>,
    burst: &mut Vec<Change<D::Key, D::Service>>,
    cx: &mut std::task::Context<'_>,
) -> std::task::Poll<BurstEnd<D::Error>> {
    use std::task::Poll;
    loop {
        if burst.len() >= MAX_BURST {
            return Poll::Ready(BurstEnd::Pending);
        }
        match discover.as_mut().poll_discover(cx) {
            Poll::Ready(Some(Ok(change))) => burst.push(change),
            Poll::Ready(Some(Err(e))) => return Poll::Ready(BurstEnd::Failed(e)),
            Poll::Ready(None) => return Poll::Ready(BurstEnd::Ended),
            Poll::Pending if burst.is_empty() => return Poll::Pending,
            Poll::Pending => return Poll::Ready(BurstEnd::Pending),
        }
    }
}

/// What a watch on an endpoint found.
fn handle<D, Req>(
    shared: &SharedOf<D, Req>,
    watches: &mut FuturesUnordered<WatchFuture<D::Key, D::Service>>,
    ep: Arc<Endpoint<D::Key, D::Service>>,
    outcome: Outcome,
) where
    D: Discover + Send + 'static,
    D::Key: Hash + Eq + Clone + fmt::Debug + Send + Sync + 'static,
    D::Service: Service<Req> + Clone + Send + 'static,
    <D::Service as Service<Req>>::Future: Send,
    <D::Service as Service<Req>>::Response: Send + 'static,
    <D::Service as Service<Req>>::Error: Into<BoxError>,
    D::Error: Into<BoxError>,
    Req: Send + 'static,
{
    match outcome {
        Outcome::Ready => shared.readmit(&ep),
        Outcome::Failed => {
            ep.cell.set_aside_from_not_ready();
            let n = ep.cell.failures.fetch_add(1, Ordering::Relaxed);
            let delay = shared.backoff(n);
            let svc = ep.clone_service();
            watches.push(watch::<_, _, Req>(Watch {
                ep,
                svc,
                delay: Some(delay),
            }));
        }
        Outcome::Panicked(message) => {
            shared.stats.endpoint_panics.fetch_add(1, Ordering::Relaxed);
            tracing::error!(endpoint = %ep.cell.name, panic = %message, "endpoint's poll_ready panicked; set aside");
            ep.cell.set_aside_from_not_ready();
            let n = ep.cell.failures.fetch_add(1, Ordering::Relaxed);
            let delay = shared.backoff(n);
            let svc = ep.clone_service();
            watches.push(watch::<_, _, Req>(Watch {
                ep,
                svc,
                delay: Some(delay),
            }));
        }
        Outcome::Removed => {}
    }
}
