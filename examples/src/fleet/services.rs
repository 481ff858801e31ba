//! The fleet's services as data: [`SERVICES`] is the one place that says which services
//! the fleet runs, what each is called (in routes, figures, logs and metrics labels),
//! where the gateway sends it requests, what kind it is and how its balancer picks.
//! Everything else (the start-up, the gateway's routes, its rate limits and token check,
//! its readiness, the overview, `/metrics`) walks this table: adding a data service is
//! one entry here (with its handlers, [`DataSpec::routes`]); nothing tests a service's
//! name.
//!
//! ```
//! use examples::fleet::services::{ServiceKind, SERVICES};
//!
//! let data: Vec<&str> = SERVICES
//!     .iter()
//!     .filter(|s| matches!(s.kind, ServiceKind::Data(_)))
//!     .map(|s| s.name)
//!     .collect();
//! assert_eq!(data, ["budget", "reports"]);
//! ```

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tower_balance_ext::{LoadStats, Pick};
use tower_cache::Cache;

use super::data::{self, DataState};
use super::{Breakers, DataBalancer, TrainingBalancer, TrainingScaler};

/// One service of the fleet.
#[derive(Debug)]
pub struct ServiceSpec {
    /// Its name: in the gateway's routes, the overview, logs, the health monitor, the
    /// autoscaler and the `service` label of `/metrics`.
    pub name: &'static str,
    /// The path prefix the gateway forwards to it (`/api/v1/{name}/`).
    pub prefix: &'static str,
    /// What runs it.
    pub kind: ServiceKind,
    /// How the gateway's balancer in front of it picks an endpoint.
    pub balancer: BalancerSpec,
}

/// What runs a service.
#[derive(Debug)]
pub enum ServiceKind {
    /// An axum app in the fleet's process with a two-tier cache and a coordinator on the
    /// fleet's bus, watched by the gateway's health monitor ([`data`]).
    Data(DataSpec),
    /// Child processes of the fleet's binary (`--role training`), started and stopped by
    /// the autoscaler, each behind a circuit breaker ([`super::training`]).
    Autoscaled,
}

/// The settings of a data service.
#[derive(Debug)]
pub struct DataSpec {
    /// Its node id on the invalidation bus (unique; the gateway's own cache is node 3).
    pub node: u64,
    /// Its handlers.
    pub routes: fn() -> Router<Arc<DataState>>,
    /// The health path the gateway's monitor checks; the gateway is ready while every
    /// data service is.
    pub health_path: &'static str,
    /// A key pattern whose invalidations it counts (and logs) as they reach it.
    pub counts_invalidations: Option<&'static str>,
}

/// How a balancer in front of a service works.
#[derive(Debug, Clone, Copy)]
pub struct BalancerSpec {
    /// The algorithm.
    pub pick: Pick,
    /// How long a request waits for a ready endpoint before a 503.
    pub ready_timeout: Duration,
}

/// The fleet's services, in the order the views show them.
pub static SERVICES: [ServiceSpec; 3] = [
    ServiceSpec {
        name: "budget",
        prefix: "/api/v1/budget/",
        kind: ServiceKind::Data(DataSpec {
            node: 1,
            routes: data::budget_routes,
            health_path: "/health/ready",
            counts_invalidations: Some("provider:*"),
        }),
        balancer: BalancerSpec {
            pick: Pick::LatencyAware,
            ready_timeout: Duration::from_secs(2),
        },
    },
    ServiceSpec {
        name: "reports",
        prefix: "/api/v1/reports/",
        kind: ServiceKind::Data(DataSpec {
            node: 2,
            routes: data::reports_routes,
            health_path: "/health/ready",
            counts_invalidations: None,
        }),
        balancer: BalancerSpec {
            pick: Pick::LatencyAware,
            ready_timeout: Duration::from_secs(2),
        },
    },
    ServiceSpec {
        name: "training",
        prefix: "/api/v1/training/",
        kind: ServiceKind::Autoscaled,
        balancer: BalancerSpec {
            pick: Pick::LatencyAware,
            ready_timeout: Duration::from_secs(5),
        },
    },
];

/// The data services of [`SERVICES`].
pub fn data_services() -> impl Iterator<Item = (&'static ServiceSpec, &'static DataSpec)> {
    SERVICES.iter().filter_map(|s| match &s.kind {
        ServiceKind::Data(d) => Some((s, d)),
        ServiceKind::Autoscaled => None,
    })
}

/// A running service, as the gateway holds it.
#[derive(Debug)]
pub struct RunningService {
    /// Its entry in [`SERVICES`].
    pub spec: &'static ServiceSpec,
    /// Its balancer and what runs behind it.
    pub backend: Backend,
}

/// What the gateway holds of a running service, by kind.
#[derive(Debug)]
pub enum Backend {
    /// A data service.
    Data {
        /// Its balancer (its endpoint behind a readiness gate).
        balancer: DataBalancer,
        /// Its cache, for the figures (`None` with `--no-cache`).
        cache: Option<Cache>,
    },
    /// An autoscaled service.
    Autoscaled {
        /// Its balancer over the ready instances.
        balancer: TrainingBalancer,
        /// Its instances' scaler.
        scaler: TrainingScaler,
        /// Each instance's circuit breaker.
        breakers: Breakers,
    },
}

impl RunningService {
    /// Its name.
    pub fn name(&self) -> &'static str {
        self.spec.name
    }

    /// Its balancer's figures.
    pub fn stats(&self) -> LoadStats {
        match &self.backend {
            Backend::Data { balancer, .. } => balancer.stats(),
            Backend::Autoscaled { balancer, .. } => balancer.stats(),
        }
    }

    /// Its cache, if it has one.
    pub fn cache(&self) -> Option<&Cache> {
        match &self.backend {
            Backend::Data { cache, .. } => cache.as_ref(),
            Backend::Autoscaled { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_prefixes_and_nodes_are_unique_and_agree() {
        for (i, s) in SERVICES.iter().enumerate() {
            assert_eq!(s.prefix, format!("/api/v1/{}/", s.name), "{}", s.name);
            for t in &SERVICES[i + 1..] {
                assert_ne!(s.name, t.name);
            }
        }
        let mut nodes: Vec<u64> = data_services().map(|(_, d)| d.node).collect();
        nodes.push(super::super::gateway::GATEWAY_NODE);
        let all = nodes.len();
        nodes.sort_unstable();
        nodes.dedup();
        assert_eq!(nodes.len(), all, "bus node ids must differ");
        let autoscaled = SERVICES
            .iter()
            .filter(|s| matches!(s.kind, ServiceKind::Autoscaled))
            .count();
        assert_eq!(autoscaled, 1, "the fleet runs one autoscaled service");
    }
}
