//! `/metrics`: the figures of every layer as Prometheus text ([`Gateway::metrics`]).

use super::{CacheView, Gateway};
use crate::fleet::services::Backend;

impl Gateway {
    /// Prometheus text: the figures of every layer, set as gauges at the scrape, beside
    /// the per-request counters and histograms.
    pub fn metrics(&self) -> String {
        let o = self.overview();
        metrics::with_local_recorder(&self.recorder, || {
            for s in &o.services {
                let svc = s.name.clone();
                metrics::gauge!("fleet_service_requests_per_second", "service" => svc.clone())
                    .set(s.rps);
                metrics::gauge!("fleet_service_p99_seconds", "service" => svc.clone())
                    .set(s.p99_ms / 1e3);
                metrics::gauge!("fleet_service_error_ratio", "service" => svc.clone())
                    .set(s.error_pct / 100.0);
                metrics::gauge!("fleet_service_in_flight", "service" => svc.clone())
                    .set(s.in_flight as f64);
                for (state, n) in [
                    ("ready", s.ready),
                    ("starting", s.starting),
                    ("draining", s.draining),
                ] {
                    metrics::gauge!("fleet_instances", "service" => svc.clone(), "state" => state)
                        .set(n as f64);
                }
                for i in &s.instances {
                    let labels = [("service", svc.clone()), ("instance", i.name.clone())];
                    metrics::gauge!("fleet_endpoint_share", &labels).set(i.share);
                    metrics::gauge!("fleet_endpoint_in_flight", &labels).set(i.in_flight as f64);
                    metrics::gauge!("fleet_endpoint_requests", &labels).set(i.requests as f64);
                    metrics::gauge!("fleet_endpoint_errors", &labels).set(i.errors as f64);
                    metrics::gauge!("fleet_endpoint_p99_seconds", &labels).set(i.p99_ms / 1e3);
                    if let Some(b) = &i.breaker {
                        metrics::gauge!("fleet_breaker_open", &labels).set(if b == "closed" {
                            0.0
                        } else {
                            1.0
                        });
                    }
                }
                if let Some(c) = &s.cache {
                    for (tier, v) in [("memory", c.memory_hit_pct), ("disk", c.disk_hit_pct)] {
                        metrics::gauge!("fleet_cache_hit_ratio", "service" => svc.clone(), "tier" => tier)
                            .set(v / 100.0);
                    }
                    metrics::gauge!("fleet_cache_origin_loads", "service" => svc.clone())
                        .set(c.origin_loads as f64);
                    metrics::gauge!("fleet_cache_entries", "service" => svc.clone(), "tier" => "memory")
                        .set(c.memory_entries as f64);
                    metrics::gauge!("fleet_cache_entries", "service" => svc.clone(), "tier" => "disk")
                        .set(c.disk_entries as f64);
                }
                if let Some(d) = &s.last_decision {
                    metrics::gauge!("fleet_autoscaler_desired_instances", "service" => svc.clone())
                        .set(d.to as f64);
                }
            }
            for svc in &self.parts.services {
                let Backend::Autoscaled { breakers, .. } = &svc.backend else {
                    continue;
                };
                for (addr, b) in breakers.lock().unwrap_or_else(|e| e.into_inner()).iter() {
                    let st = b.stats();
                    metrics::gauge!("fleet_breaker_trips", "instance" => addr.to_string())
                        .set(st.trips as f64);
                    metrics::gauge!("fleet_breaker_rejected", "instance" => addr.to_string())
                        .set(st.rejected as f64);
                }
            }
            let c = self.coordinator.status();
            metrics::gauge!("fleet_bus_published").set(c.published as f64);
            metrics::gauge!("fleet_bus_applied").set(c.applied as f64);
            metrics::gauge!("fleet_bus_rejected").set(c.rejected as f64);
            if let Some(lag) = c.lag_p99 {
                metrics::gauge!("fleet_bus_lag_p99_seconds").set(lag.as_secs_f64());
            }
            metrics::gauge!("fleet_rate_limited_total").set(o.rate_limited as f64);
            let edge = &self.parts.edge;
            metrics::gauge!("fleet_gateway_connections_open").set(edge.open() as f64);
            metrics::gauge!("fleet_gateway_connections_accepted").set(edge.accepted() as f64);
            metrics::gauge!("fleet_gateway_connections_refused").set(edge.refused() as f64);
            metrics::gauge!("fleet_gateway_connections_idle_closed").set(edge.idle_closed() as f64);
            let (addresses, users) = self.limiter_counts();
            metrics::gauge!("fleet_rate_limiter_buckets", "client" => "address")
                .set(addresses as f64);
            metrics::gauge!("fleet_rate_limiter_buckets", "client" => "user").set(users as f64);
            let g = CacheView::from(&self.cache);
            metrics::gauge!("fleet_cache_entries", "service" => "gateway", "tier" => "memory")
                .set(g.memory_entries as f64);
            metrics::gauge!("fleet_cache_entries", "service" => "gateway", "tier" => "disk")
                .set(g.disk_entries as f64);
            let caches = self.parts.services.iter().map(|s| (s.name(), s.cache()));
            for (svc, cache) in std::iter::once(("gateway", Some(&self.cache))).chain(caches) {
                if let Some(c) = cache {
                    metrics::gauge!("fleet_cache_dependencies", "service" => svc)
                        .set(c.dependency_count() as f64);
                }
            }
            metrics::gauge!("fleet_gateway_uptime_seconds").set(o.uptime_s);
        });
        self.handle.render()
    }
}
