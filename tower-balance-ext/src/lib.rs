//! Health-aware load balancing for [tower] services.
//!
//! `tower-balance-ext` spreads requests over a changing set of endpoints with the
//! algorithms service authors reach for (round robin, least connections, smooth weighted,
//! consistent hash for sticky sessions and latency-aware power-of-two-choices), and adds
//! what `tower::balance` leaves out: a per-endpoint circuit breaker, a retry on another
//! endpoint and load statistics. It learns which endpoints exist from a
//! `tower::discover::Discover` stream and which may take traffic from each endpoint's
//! `poll_ready`, so an endpoint wrapped in `tower-health`'s readiness gate is skipped
//! while it is starting, unhealthy or draining, without this crate knowing that crate's
//! types. `tower-autoscale` reads its statistics; this crate depends on none of its
//! siblings.
//!
//! The balancer itself lands with its own issue; this crate currently only reserves the
//! name and its place in the workspace.
//!
//! [tower]: https://docs.rs/tower
#![cfg_attr(docsrs, feature(doc_cfg))]
