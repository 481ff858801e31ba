//! A [`Router`]: service names to balancers, for a gateway that proxies several
//! services.
//!
//! Targets are added and removed by address; the router makes each endpoint service
//! from its address with a constructor you give (for HTTP, a pooled client for that
//! address wrapped in a readiness gate that follows a health monitor), and keeps one
//! [`Balancer`] per service name, all built from the same settings.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! use std::net::SocketAddr;
//! use tower::ServiceExt;
//! use tower_balance_ext::{BalancerBuilder, Pick, Router};
//!
//! // Requests are (service name, payload); each endpoint answers with its port.
//! let router = Router::new(
//!     BalancerBuilder::new(Pick::WeightedRoundRobin),
//!     |addr: SocketAddr| {
//!         tower::service_fn(move |_req: (String, u32)| async move {
//!             Ok::<_, std::convert::Infallible>(addr.port())
//!         })
//!     },
//!     |req: &(String, u32)| Some(req.0.clone()),
//! );
//! router.add_target("budget", "127.0.0.1:3001".parse().unwrap(), 1).unwrap();
//! router.add_target("budget", "127.0.0.1:3002".parse().unwrap(), 3).unwrap();
//! let port = router.clone().oneshot(("budget".to_string(), 7)).await.unwrap();
//! assert!(port == 3001 || port == 3002);
//! let err = router.clone().oneshot(("nope".to_string(), 7)).await.unwrap_err();
//! assert!(err.to_string().contains("no service named `nope`"));
//! # }
//! ```

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};

use tower_service::Service;

pub mod future;

use future::ResponseFuture;

use crate::balance::{Balancer, BalancerBuilder, BuildError, ZeroWeight};
use crate::discover;
use crate::stats::{EndpointState, LoadStats};
use crate::util::{read, write};
use crate::BoxError;

type Make<S> = Arc<dyn Fn(SocketAddr) -> S + Send + Sync>;
type Route<Req> = Arc<dyn Fn(&Req) -> Option<String> + Send + Sync>;

struct Named<S: Service<Req>, Req> {
    balancer: Balancer<SocketAddr, S, Req>,
    endpoints: discover::Sender<SocketAddr, S>,
    /// The addresses added and not removed, as of the changes sent (the balancer
    /// applies them later, in the order sent): what `add_target` and `remove_target`
    /// go by, so that a change follows the ones made before it.
    targets: HashSet<SocketAddr>,
}

struct Inner<S: Service<Req>, Req> {
    services: RwLock<HashMap<String, Named<S, Req>>>,
    settings: BalancerBuilder<Req, S::Response>,
    make: Make<S>,
    route: Route<Req>,
}

/// Service names to balancers; see the [module docs](self). Cheap to clone.
pub struct Router<S: Service<Req>, Req> {
    inner: Arc<Inner<S, Req>>,
}

impl<S: Service<Req>, Req> Clone for Router<S, Req> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<S: Service<Req>, Req> fmt::Debug for Router<S, Req> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<String> = self
            .inner
            .services
            .read()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        f.debug_struct("Router").field("services", &names).finish()
    }
}

/// Why a target could not be added.
#[derive(Debug)]
#[non_exhaustive]
pub enum TargetError {
    /// The service name is empty.
    EmptyName,
    /// A weight of zero.
    ZeroWeight(ZeroWeight),
    /// The service's balancer could not be built.
    Build(BuildError),
}

impl fmt::Display for TargetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::EmptyName => f.write_str("the service name is empty; give every service a name"),
            Self::ZeroWeight(e) => e.fmt(f),
            Self::Build(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for TargetError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::EmptyName => None,
            Self::ZeroWeight(e) => Some(e),
            Self::Build(e) => Some(e),
        }
    }
}

/// A request named no service the router knows, or none at all.
#[derive(Debug, Clone)]
pub struct UnknownService(Option<String>);

impl UnknownService {
    /// The service name the request gave, if any.
    pub fn name(&self) -> Option<&str> {
        self.0.as_deref()
    }

    /// `404 Not Found`, for HTTP.
    pub fn status(&self) -> http::StatusCode {
        http::StatusCode::NOT_FOUND
    }
}

impl fmt::Display for UnknownService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Some(name) => write!(f, "no service named `{name}`"),
            None => f.write_str("the request names no service"),
        }
    }
}

impl std::error::Error for UnknownService {}

impl<S, Req> Router<S, Req>
where
    S: Service<Req> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send,
    S::Response: Send + 'static,
    Req: Send + 'static,
{
    /// A router whose balancers are built from `settings`, whose endpoints are made by
    /// `make` from their address, and which sends each request to the service `route`
    /// names.
    pub fn new<M, R>(settings: BalancerBuilder<Req, S::Response>, make: M, route: R) -> Self
    where
        M: Fn(SocketAddr) -> S + Send + Sync + 'static,
        R: Fn(&Req) -> Option<String> + Send + Sync + 'static,
    {
        Self {
            inner: Arc::new(Inner {
                services: RwLock::new(HashMap::new()),
                settings,
                make: Arc::new(make),
                route: Arc::new(route),
            }),
        }
    }

    /// Adds an endpoint at `addr` to service `name` with `weight` (or changes the weight
    /// of one already there), creating the service's balancer on first use (inside a
    /// tokio runtime).
    pub fn add_target(&self, name: &str, addr: SocketAddr, weight: u32) -> Result<(), TargetError> {
        if name.is_empty() {
            return Err(TargetError::EmptyName);
        }
        if weight == 0 {
            return Err(TargetError::ZeroWeight(ZeroWeight));
        }
        let mut services = write(&self.inner.services);
        let entry = match services.entry(name.to_owned()) {
            std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => {
                let (tx, rx) = discover::channel();
                let balancer = self
                    .inner
                    .settings
                    .clone()
                    .build(rx)
                    .map_err(TargetError::Build)?;
                v.insert(Named {
                    balancer,
                    endpoints: tx,
                    targets: HashSet::new(),
                })
            }
        };
        entry
            .balancer
            .set_weight(&addr, weight)
            .map_err(TargetError::ZeroWeight)?;
        if entry.targets.insert(addr) {
            entry.endpoints.insert(addr, (self.inner.make)(addr));
        }
        Ok(())
    }

    /// Removes the endpoint at `addr` from service `name`; requests already sent to it
    /// finish. Returns whether the service existed. Adds and removals apply in the
    /// order they were made: a removal followed at once by an add of the same address
    /// leaves the target in place.
    pub fn remove_target(&self, name: &str, addr: SocketAddr) -> bool {
        match write(&self.inner.services).get_mut(name) {
            Some(e) => {
                if e.targets.remove(&addr) {
                    e.endpoints.remove(addr);
                }
                true
            }
            None => false,
        }
    }

    /// The balancer of service `name`.
    pub fn balancer(&self, name: &str) -> Option<Balancer<SocketAddr, S, Req>> {
        read(&self.inner.services)
            .get(name)
            .map(|e| e.balancer.clone())
    }

    /// The targets of service `name` and their state (the healthy ones are those that
    /// are [`EndpointState::Ready`]).
    pub fn targets(&self, name: &str) -> Vec<(SocketAddr, EndpointState)> {
        self.balancer(name)
            .map(|b| b.endpoints())
            .unwrap_or_default()
    }

    /// Every service's load statistics.
    pub fn stats(&self) -> Vec<(String, LoadStats)> {
        let mut v: Vec<(String, LoadStats)> = read(&self.inner.services)
            .iter()
            .map(|(n, e)| (n.clone(), e.balancer.stats()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }
}

impl<S, Req> Service<Req> for Router<S, Req>
where
    S: Service<Req> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send,
    S::Response: Send + 'static,
    Req: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S, Req>;

    /// Always ready, as each balancer is.
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let name = (self.inner.route)(&req);
        let balancer = name.as_deref().and_then(|n| self.balancer(n));
        match balancer {
            Some(mut b) => ResponseFuture::balanced(b.call(req)),
            None => ResponseFuture::unknown(UnknownService(name)),
        }
    }
}
