//! Discovery sources: where a [`Balancer`](crate::Balancer) learns which endpoints
//! exist. Each yields `tower::discover::Change`s, so any `Discover` works as well.
//!
//! - [`fixed`]: a list known up front;
//! - [`channel`]: endpoints inserted and removed by code, e.g. a scaling manager that
//!   inserts an instance once it is ready and removes it before draining it.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! use tower::ServiceExt;
//! use tower_balance_ext::{discover, BalancerBuilder, Pick};
//!
//! let (endpoints, discovery) = discover::channel();
//! let balancer = BalancerBuilder::new(Pick::RoundRobin).build(discovery).unwrap();
//! endpoints.insert("a", tower::service_fn(|x: u32| async move { Ok::<_, std::convert::Infallible>(x) }));
//! assert_eq!(balancer.clone().oneshot(7).await.unwrap(), 7);
//! endpoints.remove("a");
//! # }
//! ```

use std::convert::Infallible;
use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::Stream;
use tokio::sync::mpsc;
use tower::discover::Change;

/// The sending side of [`channel`]: cheap to clone.
pub struct Sender<K, S> {
    tx: mpsc::UnboundedSender<Change<K, S>>,
}

impl<K, S> Clone for Sender<K, S> {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
        }
    }
}

impl<K, S> fmt::Debug for Sender<K, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sender")
            .field("closed", &self.tx.is_closed())
            .finish()
    }
}

impl<K, S> Sender<K, S> {
    /// Adds an endpoint (or replaces the one under `key`). Returns false if the
    /// balancer is gone.
    pub fn insert(&self, key: K, service: S) -> bool {
        self.tx.send(Change::Insert(key, service)).is_ok()
    }

    /// Removes an endpoint; requests already sent to it finish. Returns false if the
    /// balancer is gone.
    pub fn remove(&self, key: K) -> bool {
        self.tx.send(Change::Remove(key)).is_ok()
    }
}

/// A `Discover` fed by a [`Sender`]; it ends when every sender is dropped (the
/// balancer keeps the endpoints it has).
pub struct Receiver<K, S> {
    rx: mpsc::UnboundedReceiver<Change<K, S>>,
}

impl<K, S> fmt::Debug for Receiver<K, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Receiver").finish_non_exhaustive()
    }
}

impl<K, S> Stream for Receiver<K, S> {
    type Item = Result<Change<K, S>, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx).map(|c| c.map(Ok))
    }
}

impl<K, S> Unpin for Receiver<K, S> {}

/// A discovery channel: endpoints inserted and removed through the [`Sender`].
pub fn channel<K, S>() -> (Sender<K, S>, Receiver<K, S>) {
    let (tx, rx) = mpsc::unbounded_channel();
    (Sender { tx }, Receiver { rx })
}

/// A fixed list of endpoints under their keys (tower's `ServiceList` numbers them
/// instead).
pub fn fixed<K, S>(endpoints: impl IntoIterator<Item = (K, S)>) -> Receiver<K, S> {
    let (tx, rx) = channel();
    for (k, s) in endpoints {
        tx.insert(k, s);
    }
    rx
}
