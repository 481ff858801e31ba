//! Autoscaling that reads the real load of a [tower] request path.
//!
//! `tower-autoscale` turns the load that the sibling crates measure (the cache's hit
//! ratio, the balancer's in-flight requests and latency, the readiness gate's queue) into
//! scaling decisions with the arithmetic of the Kubernetes horizontal pod autoscaler
//! (desired = ceil(current x metric / target), tolerance, stabilisation windows, rate
//! policies), and carries them out: as local child processes by default, or through a
//! Deployment's scale subresource for fleets. New instances reach a balancer through
//! `tower::discover::Discover` only once `tower-health` says they are ready; instances to
//! be removed leave discovery first, are drained, and only then stopped. This is the one
//! crate of the workspace that depends on its siblings; they never depend on it.
//!
//! The decision engine and scalers land with their own issue; this crate currently only
//! reserves the name and its place in the workspace.
//!
//! [tower]: https://docs.rs/tower
#![cfg_attr(docsrs, feature(doc_cfg))]
