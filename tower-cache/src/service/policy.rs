//! Which responses are stored, and for how long.

use std::time::Duration;

/// Decides whether a response may be stored, and for how long.
///
/// Implemented for closures `Fn(&Res) -> Option<Duration>` (`None`: do not store).
pub trait StorePolicy<Res>: Send + Sync + 'static {
    /// The time-to-live to store `res` with, or `None` not to store it. `default` is the
    /// layer's TTL.
    fn ttl(&self, res: &Res, default: Duration) -> Option<Duration>;
}

impl<F, Res> StorePolicy<Res> for F
where
    F: Fn(&Res) -> Option<Duration> + Send + Sync + 'static,
{
    fn ttl(&self, res: &Res, _default: Duration) -> Option<Duration> {
        self(res)
    }
}

/// Stores every response for the layer's TTL.
#[derive(Debug, Clone, Copy, Default)]
pub struct StoreAll;

impl<Res> StorePolicy<Res> for StoreAll {
    fn ttl(&self, _res: &Res, default: Duration) -> Option<Duration> {
        Some(default)
    }
}
