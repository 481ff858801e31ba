//! Stopping an instance: out of discovery, drained, SIGTERM, then SIGKILL at the
//! deadline.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::{InstanceState, ProcessScaler};

impl<S> ProcessScaler<S>
where
    S: Send + 'static,
{
    /// Removes instance `id` from discovery (if `drain`, waits for its requests up to
    /// the grace period), then SIGTERM, then SIGKILL at the deadline; then forgets it,
    /// or (`keep`) leaves it as a crashed place, counted all along.
    pub(super) async fn stop_instance(&self, id: u64, drain: bool, keep: bool) {
        let found = {
            let mut l = self.lock();
            l.iter_mut().find(|i| i.id == id).map(|i| {
                i.stopping.store(true, Ordering::Release);
                if keep {
                    i.state = InstanceState::CrashLoopBackOff;
                } else {
                    i.state = InstanceState::Draining;
                }
                (
                    i.port,
                    i.pid,
                    i.in_flight.clone(),
                    i.kill.take(),
                    i.exited.clone(),
                )
            })
        };
        let Some((port, pid, in_flight, kill, mut exited)) = found else {
            return;
        };
        self.inner
            .endpoints
            .remove(SocketAddr::from(([127, 0, 0, 1], port)));
        if drain {
            let cfg = &self.inner.cfg;
            // A balancer that picked the endpoint before it read the removal may still
            // send it a request: stop only once nothing has been in flight for
            // `drain_settle` (or at the end of the grace period).
            let _ = tokio::time::timeout(cfg.drain_grace, async {
                let mut quiet_since = tokio::time::Instant::now();
                loop {
                    if in_flight.load(Ordering::Acquire) > 0 {
                        quiet_since = tokio::time::Instant::now();
                    } else if quiet_since.elapsed() >= cfg.drain_settle {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
            .await;
        }
        if let Some(pid) = pid {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        let gone = tokio::time::timeout(self.inner.cfg.stop_timeout, exited.wait_for(|e| *e))
            .await
            .is_ok();
        if !gone {
            if let Some(k) = kill {
                let _ = k.send(());
            }
            let _ = exited.wait_for(|e| *e).await;
        }
        self.settle(id, keep);
    }

    /// Drains and stops the instance on `port`.
    pub(super) async fn stop_port(&self, port: u16) {
        let id = self.lock().iter().find(|i| i.port == port).map(|i| i.id);
        if let Some(id) = id {
            self.stop_instance(id, true, false).await;
        }
    }
}
