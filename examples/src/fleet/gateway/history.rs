//! The dashboard's charts: a [`Point`] a second for the last five minutes.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use super::Gateway;

/// Points the gateway keeps for the dashboard's charts: one a second, five minutes.
pub const HISTORY_POINTS: usize = 300;

/// One second of the fleet, for the dashboard's charts.
#[derive(Debug, Clone, Serialize)]
pub struct Point {
    /// When, in milliseconds since the Unix epoch.
    pub at_unix_ms: u64,
    /// Per service: (name, requests/s, p99 ms, cache hit %, ready instances).
    pub services: Vec<(String, f64, f64, Option<f64>, usize)>,
}

impl Gateway {
    /// Records a [`Point`] every second while `gw` lives (the fleet starts this).
    pub fn spawn_history(gw: &Arc<Gateway>) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(gw);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let Some(gw) = weak.upgrade() else { return };
                let o = gw.overview();
                let point = Point {
                    at_unix_ms: crate::fleet::unix_ms(),
                    services: o
                        .services
                        .iter()
                        .map(|s| {
                            (
                                s.name.clone(),
                                s.rps,
                                s.p99_ms,
                                s.cache.as_ref().map(|c| c.hit_pct),
                                s.ready,
                            )
                        })
                        .collect(),
                };
                let mut h = gw.history.lock().unwrap_or_else(|e| e.into_inner());
                if h.len() == HISTORY_POINTS {
                    h.pop_front();
                }
                h.push_back(point);
            }
        })
    }

    /// The last five minutes, a point a second, oldest first.
    pub fn history(&self) -> Vec<Point> {
        self.history
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect()
    }
}
