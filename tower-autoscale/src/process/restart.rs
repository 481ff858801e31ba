//! Crashes: an exit nobody asked for, after the instance was ready, restarted after a
//! doubling backoff.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;

use super::{InstanceState, ProcessScaler};

impl<S> ProcessScaler<S>
where
    S: Send + 'static,
{
    /// Records the exit of instance `id`'s process; true if it is a crash to restart (it
    /// exited unasked after it was ready). An exit while starting belongs to the start
    /// that waits for it.
    pub(super) fn on_exit(
        &self,
        id: u64,
        status: String,
        exited: &tokio::sync::watch::Sender<bool>,
    ) -> bool {
        let cfg = &self.inner.cfg;
        let mut l = self.lock();
        exited.send_replace(true);
        let Some(i) = l.iter_mut().find(|i| i.id == id) else {
            return false;
        };
        i.last_exit = Some(status);
        if i.stopping.load(Ordering::Acquire) || i.state != InstanceState::Ready {
            return false;
        }
        let steady = i
            .ready_at
            .is_some_and(|t| t.elapsed() >= cfg.restart_backoff_max.saturating_mul(2));
        i.streak = if steady {
            1
        } else {
            i.streak.saturating_add(1)
        };
        i.state = if i.streak > 1 {
            InstanceState::CrashLoopBackOff
        } else {
            InstanceState::Crashed
        };
        i.pid = None;
        i.kill = None;
        i.ready_at = None;
        i.backoff = Some(cfg.backoff(i.streak));
        true
    }

    /// Restarts a crashed instance. Not an `async fn`: a restart starts through
    /// `try_start`, which spawns a keeper that may call this again, and the named
    /// boxed type ends that cycle of future types.
    pub(super) fn crashed(&self, id: u64) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        let me = self.clone();
        Box::pin(async move { me.restart(id).await })
    }

    /// The one restart loop of crashed instance `id`: waits its backoff, starts it
    /// again, and on failure doubles the wait (to the cap) and tries again, until a
    /// start succeeds, a scale-down removes it, or the scaler shuts down.
    pub(super) async fn restart(&self, id: u64) {
        let Some((port, status)) = self
            .lock()
            .iter()
            .find(|i| i.id == id)
            .map(|i| (i.port, i.last_exit.clone().unwrap_or_default()))
        else {
            return;
        };
        self.inner
            .endpoints
            .remove(SocketAddr::from(([127, 0, 0, 1], port)));
        self.inner.monitor.unregister(&format!("127.0.0.1:{port}"));
        self.inner.restarts.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(port, %status, "instance exited unasked; restarting it");
        loop {
            let wait = self
                .lock()
                .iter()
                .find(|i| i.id == id)
                .map(|i| i.backoff.unwrap_or(self.inner.cfg.restart_backoff));
            let Some(wait) = wait else {
                return;
            };
            if !self.inner.closed.load(Ordering::Acquire) {
                tokio::time::sleep(wait).await;
            }
            let _op = self.inner.op.lock().await;
            if self.inner.closed.load(Ordering::Acquire) {
                self.lock().retain(|i| i.id != id);
                return;
            }
            // Gone if a scale-down removed it meanwhile.
            let Some(port) = self
                .lock()
                .iter()
                .find(|i| i.id == id && i.state.is_crashed())
                .map(|i| i.port)
            else {
                return;
            };
            match self.try_start(Some((id, port))).await {
                Ok(_) => return,
                Err(e) => {
                    self.inner.failures.fetch_add(1, Ordering::Relaxed);
                    let mut l = self.lock();
                    let Some(i) = l.iter_mut().find(|i| i.id == id) else {
                        return;
                    };
                    i.streak = i.streak.saturating_add(1);
                    i.state = InstanceState::CrashLoopBackOff;
                    i.last_exit = Some(e.to_string());
                    let wait = self.inner.cfg.backoff(i.streak);
                    i.backoff = Some(wait);
                    let wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
                    tracing::warn!(error = %e, streak = i.streak, wait_ms, "restart failed; backing off");
                }
            }
        }
    }
}
