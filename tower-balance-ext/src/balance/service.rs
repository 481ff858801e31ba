//! The balancer handle: a `Service` over the shared state.

use std::fmt;
use std::hash::Hash;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};

use tower_service::Service;

use super::driver;
use super::error::ZeroWeight;
use super::future::ResponseFuture;
use super::pick::Pick;
use super::shared::Shared;
use crate::stats::{EndpointState, LoadStats};
use crate::util::lock;
use crate::BoxError;

/// A load balancer over the endpoints of a `Discover` stream; see the
/// [module docs](crate::balance).
///
/// Cloning is cheap and shares everything: the endpoints, the counters, the pick's
/// state. A background task (spawned on the tokio runtime the balancer is built in)
/// follows discovery and watches endpoints that are not ready; it stops when the last
/// handle is dropped.
pub struct Balancer<K, S, Req>
where
    S: Service<Req>,
{
    pub(super) shared: Arc<Shared<K, S, Req, S::Response>>,
    pub(super) _driver: Arc<driver::Guard>,
}

impl<K, S: Service<Req>, Req> Clone for Balancer<K, S, Req> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
            _driver: self._driver.clone(),
        }
    }
}

impl<K: fmt::Debug, S: Service<Req>, Req> fmt::Debug for Balancer<K, S, Req> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pool = self.shared.pool.load();
        f.debug_struct("Balancer")
            .field("pick", &self.shared.pick)
            .field(
                "endpoints",
                &pool.endpoints.iter().map(|e| &e.key).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

// === impl Balancer ===

impl<K, S, Req> Balancer<K, S, Req>
where
    K: Hash + Eq + Clone + fmt::Debug + Send + Sync + 'static,
    S: Service<Req> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send,
    Req: Send + 'static,
{
    /// The load statistics handle.
    pub fn stats(&self) -> LoadStats {
        LoadStats {
            cell: self.shared.stats.clone(),
        }
    }

    /// Sets an endpoint's weight (for [`Pick::WeightedRoundRobin`],
    /// [`Pick::LeastConnections`] and [`Pick::LatencyAware`]); for a key not
    /// discovered yet, the weight waits for it.
    pub fn set_weight(&self, key: &K, weight: u32) -> Result<(), ZeroWeight> {
        if weight == 0 {
            return Err(ZeroWeight);
        }
        let mut m = lock(&self.shared.master);
        m.weights.insert(key.clone(), weight);
        if let Some(ep) = m.endpoints.iter().find(|e| &e.key == key) {
            ep.cell.weight.store(weight, Ordering::Relaxed);
            if self.shared.pick == Pick::WeightedRoundRobin {
                self.shared.rebuild(&m);
            }
        }
        Ok(())
    }

    /// The endpoint a request would be sent to now, if any is ready (the pick only:
    /// nothing is sent, though round robin's turn advances).
    pub fn pick(&self, req: &Req) -> Option<K> {
        let key = match &self.shared.hash_key {
            Some(f) => Some(f(req)?),
            None => None,
        };
        self.shared.with_choice(key, &[], |e| e.key.clone())
    }

    /// The count of ready endpoints the picks and the panic threshold go by (kept as
    /// endpoints change state, not recounted). Not part of the API: tests check that
    /// it agrees with [`endpoints`](Self::endpoints) once the balancer is quiet.
    #[doc(hidden)]
    pub fn ready_count(&self) -> usize {
        self.shared.ready.load(Ordering::Acquire)
    }

    /// The keys of the endpoints it holds, with their state.
    pub fn endpoints(&self) -> Vec<(K, EndpointState)> {
        self.shared
            .pool
            .load()
            .endpoints
            .iter()
            .map(|e| (e.key.clone(), e.cell.state()))
            .collect()
    }
}

impl<K, S, Req> Service<Req> for Balancer<K, S, Req>
where
    K: Hash + Eq + Clone + fmt::Debug + Send + Sync + 'static,
    S: Service<Req> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send,
    S::Response: Send + 'static,
    Req: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<K, S, Req>;

    /// Always ready: a request waits for a ready endpoint in its response future.
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Req) -> Self::Future {
        ResponseFuture::new(self.shared.clone(), req)
    }
}
