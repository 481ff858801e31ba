//! [`Autoscaler`]: the control loop over a [`ScalingManager`](super::ScalingManager)'s
//! services, built with [`Autoscaler::builder`].

use std::time::Duration;

use super::ScalingManager;
use crate::error::BuildError;

/// The control loop: every `interval`, each service is evaluated and its decision
/// carried out. Stop it with [`Autoscaler::stop`] (or by dropping it).
#[derive(Debug)]
pub struct Autoscaler {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Autoscaler {
    /// A builder for the loop over `manager`'s services, every 10 s by default.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use std::time::Duration;
    /// use tower_autoscale::{Autoscaler, DecisionEngine, ScalingManager};
    ///
    /// let manager = ScalingManager::new(DecisionEngine::new());
    /// let autoscaler = Autoscaler::builder(manager)
    ///     .interval(Duration::from_secs(5))
    ///     .spawn()
    ///     .unwrap();
    /// autoscaler.stop().await;
    /// # }
    /// ```
    pub fn builder(manager: ScalingManager) -> AutoscalerBuilder {
        AutoscalerBuilder {
            manager,
            interval: Duration::from_secs(10),
        }
    }

    /// Starts the loop on the current tokio runtime, with a zero `interval` taken as
    /// 1 ms.
    #[deprecated(
        note = "use `Autoscaler::builder(manager).interval(..).spawn()`, which refuses a zero interval"
    )]
    pub fn spawn(manager: ScalingManager, interval: Duration) -> Self {
        Self::run(manager, interval.max(Duration::from_millis(1)))
    }

    fn run(manager: ScalingManager, interval: Duration) -> Self {
        let (tx, mut rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = &mut rx => return,
                    _ = tick.tick() => {
                        for s in manager.services() {
                            manager.tick(&s).await;
                        }
                    }
                }
            }
        });
        Self {
            stop: Some(tx),
            task: Some(task),
        }
    }

    /// Stops the loop after the evaluation under way, if any.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

/// Builds an [`Autoscaler`]; see [`Autoscaler::builder`].
#[derive(Debug)]
pub struct AutoscalerBuilder {
    manager: ScalingManager,
    interval: Duration,
}

impl AutoscalerBuilder {
    /// How often each service is evaluated (default 10 s; not zero).
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// Starts the loop on the current tokio runtime; must be called within one.
    pub fn spawn(self) -> Result<Autoscaler, BuildError> {
        if self.interval.is_zero() {
            return Err(BuildError::new(
                "interval",
                "interval is zero: give the period between evaluations, e.g. 10 s",
            ));
        }
        Ok(Autoscaler::run(self.manager, self.interval))
    }
}

impl Drop for Autoscaler {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}
