//! Holt's linear trend over throughput, for the forecast.

/// Holt's linear trend.
#[derive(Debug, Clone, Default)]
pub(super) struct Holt {
    level: f64,
    trend: f64,
    seen: u32,
}

impl Holt {
    pub(super) fn update(&mut self, x: f64, alpha: f64, beta: f64) {
        match self.seen {
            0 => self.level = x,
            1 => {
                self.trend = x - self.level;
                self.level = x;
            }
            _ => {
                let prev = self.level;
                self.level = alpha * x + (1.0 - alpha) * (self.level + self.trend);
                self.trend = beta * (self.level - prev) + (1.0 - beta) * self.trend;
            }
        }
        self.seen = self.seen.saturating_add(1);
    }

    pub(super) fn predict(&self, steps: u32) -> Option<f64> {
        (self.seen >= 3).then(|| (self.level + self.trend * f64::from(steps)).max(0.0))
    }
}
