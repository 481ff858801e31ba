//! Helpers shared by tower-cache's integration tests.
#![allow(dead_code, unreachable_pub)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Ends the whole test process if the test holding the guard runs past `limit` of real
/// time. Tests on a paused tokio clock cannot use `tokio::time::timeout` for this (the
/// paused clock jumps straight to the deadline while the runtime waits on the disk
/// writer thread), so a real-time watchdog bounds them.
pub struct Watchdog(Arc<AtomicBool>);

pub fn watchdog(name: &'static str, limit: Duration) -> Watchdog {
    let done = Arc::new(AtomicBool::new(false));
    let flag = done.clone();
    std::thread::spawn(move || {
        let start = std::time::Instant::now();
        while start.elapsed() < limit {
            if flag.load(Ordering::Relaxed) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("test `{name}` ran past {limit:?}; aborting");
        std::process::exit(101);
    });
    Watchdog(done)
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

pub const LIMIT: Duration = Duration::from_secs(60);
