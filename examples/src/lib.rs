//! Runnable examples for the workspace's crates.
//!
//! Each file in `examples/examples/` is a complete program meant to be read top to bottom
//! and copied. Run one with `cargo run -p examples --example NAME`. The main one, `fleet`,
//! runs a whole fleet of services on one machine.

mod activity;
pub mod auth;
pub mod balance_proxy;
pub mod cache_proxy;
pub mod flags;
pub mod fleet;
pub mod orchestrator;
pub mod stats;
