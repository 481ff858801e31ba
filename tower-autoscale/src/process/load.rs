//! The scaler as a [`LoadSource`](crate::LoadSource): the instances' CPU and memory
//! from `/proc`, readiness, warm-up and requests in flight.

use std::sync::atomic::Ordering;
use std::time::SystemTime;

use super::{InstanceState, ProcessScaler};

/// The instances' CPU (per allowed core) and memory from `/proc`, readiness, warm-up and
/// requests in flight; the count is the instances running or starting. An instance is
/// ready when it joined the balancer and its monitor calls it healthy now: one cut off
/// or paused since is listed as not ready, so the engine leaves its numbers (no
/// requests, no CPU: not load it serves) out of its averages, as the HPA does with
/// unready pods.
impl<S: Send + 'static> crate::sample::LoadSource for ProcessScaler<S> {
    fn sample(&self) -> crate::sample::LoadSample {
        let warm_up = self.inner.cfg.warm_up;
        let rows: Vec<(String, Option<u32>, InstanceState, usize, SystemTime)> = self
            .lock()
            .iter()
            .map(|i| {
                (
                    i.name.clone(),
                    i.pid,
                    i.state,
                    i.in_flight.load(Ordering::Acquire),
                    i.started,
                )
            })
            .collect();
        let mut sampler = self.inner.sampler.lock().unwrap_or_else(|e| e.into_inner());
        let pids: Vec<u32> = rows.iter().filter_map(|r| r.1).collect();
        sampler.retain(&pids);
        let mut total_in_flight = 0.0;
        let per_instance = rows
            .iter()
            .filter(|r| matches!(r.2, InstanceState::Ready | InstanceState::Starting))
            .map(|(name, pid, state, in_flight, started)| {
                let usage = pid.and_then(|p| sampler.sample(p));
                total_in_flight += *in_flight as f64;
                crate::sample::InstanceLoad {
                    name: name.clone(),
                    ready: *state == InstanceState::Ready
                        && self.inner.monitor.is_ready_for_traffic(name),
                    warming_up: started.elapsed().is_ok_and(|age| age < warm_up),
                    age: started.elapsed().ok(),
                    cpu: usage.map(|u| u.cpu),
                    memory: usage.map(|u| u.memory),
                    in_flight: Some(*in_flight as f64),
                }
            })
            .collect::<Vec<_>>();
        crate::sample::LoadSample {
            instances: per_instance.len(),
            per_instance,
            in_flight: Some(total_in_flight),
            ..Default::default()
        }
    }
}
