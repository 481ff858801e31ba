//! The lean HTTP/1.1 forwarder over real loopback sockets, by topic: scripted raw
//! backends that record what reaches them, a raw client that checks what comes back.
#![cfg(feature = "http1-forward")]

#[path = "../common/mod.rs"]
mod common;

mod clients;
mod refusals;
mod relaying;
mod settings;
mod upstream_faults;
