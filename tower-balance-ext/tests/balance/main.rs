//! The balancer's behaviour, by topic: picks, readiness, discovery, retries,
//! settings, panics, and chaos.

#[path = "../common/mod.rs"]
mod common;

mod chaos;
mod discovery;
mod limits;
mod panics;
mod picks;
mod readiness;
mod retries;
mod settings;
