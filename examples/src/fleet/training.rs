//! One instance of the `training` service, run as a child process of the fleet's binary
//! (`--role training --port N`): readiness probe, `/health/*`, graceful shutdown on
//! SIGTERM, and `/api/v1/training/*` doing `--work-ms` of waiting plus `--cpu-ms` of
//! CPU per request, at most `--concurrency` requests at a time (the rest queue), so
//! that every instance has the same capacity.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use tokio::net::TcpListener;
use tower::{service_fn, Service};
use tower_health::{GracefulServer, HealthEndpoints, Probe, Probes};

use super::BoxError;

/// What one training instance does per request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Work {
    /// Time spent waiting (I/O, a model server) per request.
    pub wait: Duration,
    /// CPU time per request.
    pub cpu: Duration,
    /// Requests served at once; the rest queue.
    pub concurrency: usize,
}

impl Default for Work {
    fn default() -> Self {
        Self {
            wait: Duration::from_millis(40),
            cpu: Duration::from_millis(2),
            concurrency: 8,
        }
    }
}

impl Work {
    /// The child's arguments for this work.
    pub fn args(&self) -> Vec<String> {
        vec![
            "--work-ms".into(),
            self.wait.as_millis().to_string(),
            "--cpu-ms".into(),
            self.cpu.as_millis().to_string(),
            "--concurrency".into(),
            self.concurrency.to_string(),
        ]
    }
}

/// Spins for `d` of CPU.
fn burn(d: Duration) -> u64 {
    let end = Instant::now() + d;
    let mut x = 0x9E37_79B9_7F4A_7C15_u64;
    while Instant::now() < end {
        for _ in 0..1000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
        }
    }
    x
}

/// Serves one training instance on 127.0.0.1:`port` until SIGTERM (after a drain) or
/// SIGKILL.
pub async fn run(port: u16, work: Work) -> Result<(), BoxError> {
    let probes = Probes::new();
    probes.register(
        Probe::readiness("model-loaded", || async { Ok::<_, String>(()) })
            .period(Duration::from_millis(100))
            .timeout(Duration::from_millis(50)),
    )?;
    probes.start();
    let endpoints = HealthEndpoints::new(probes.clone());
    let slots = Arc::new(tokio::sync::Semaphore::new(work.concurrency.max(1)));
    let app = service_fn(move |req: Request<Incoming>| {
        let (mut endpoints, slots) = (endpoints.clone(), slots.clone());
        async move {
            if req.uri().path().starts_with("/api/v1/training/") {
                let _slot = slots.acquire().await;
                if !work.wait.is_zero() {
                    tokio::time::sleep(work.wait).await;
                }
                if !work.cpu.is_zero() {
                    let cpu = work.cpu;
                    let _ = tokio::task::spawn_blocking(move || burn(cpu)).await;
                }
                let body = format!("{{\"trained_by\":{port}}}");
                return Ok::<_, Infallible>(
                    Response::builder()
                        .header(http::header::CONTENT_TYPE, "application/json")
                        .body(Full::new(Bytes::from(body)))
                        .unwrap_or_default(),
                );
            }
            endpoints.call(req).await
        }
    });
    let listener = TcpListener::bind(("127.0.0.1", port))
        .await
        .map_err(|e| format!("training instance: cannot listen on 127.0.0.1:{port}: {e}"))?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    GracefulServer::new()
        .probes(probes)
        .drain_delay(Duration::from_millis(200))
        .grace(Duration::from_secs(5))
        .serve(listener, app, async move {
            term.recv().await;
        })
        .await?;
    Ok(())
}

/// `--role training --port N [--work-ms N --cpu-ms N --concurrency N]` in `args`: this
/// process is a training instance.
pub fn from_args(args: &[String]) -> Option<Result<(u16, Work), String>> {
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
    };
    if value("--role").map(String::as_str) != Some("training") {
        return None;
    }
    let num = |flag: &str, default: u64| -> Result<u64, String> {
        match value(flag) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|_| format!("{flag} {v}: give a whole number")),
        }
    };
    let d = Work::default();
    Some((|| {
        let port = num("--port", 0)?;
        if port == 0 || port > u16::MAX as u64 {
            return Err("--role training needs --port N (1 to 65535)".to_string());
        }
        Ok((
            port as u16,
            Work {
                wait: Duration::from_millis(num("--work-ms", d.wait.as_millis() as u64)?),
                cpu: Duration::from_millis(num("--cpu-ms", d.cpu.as_millis() as u64)?),
                concurrency: num("--concurrency", d.concurrency as u64)?.clamp(1, 10_000) as usize,
            },
        ))
    })())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn training_role_flags() {
        assert!(from_args(&words("--serve")).is_none());
        let (port, work) = from_args(&words("--role training --port 4100 --work-ms 7"))
            .unwrap()
            .unwrap();
        assert_eq!(port, 4100);
        assert_eq!(work.wait, Duration::from_millis(7));
        assert_eq!(work.concurrency, Work::default().concurrency);
        let err = from_args(&words("--role training")).unwrap().unwrap_err();
        assert!(err.contains("--port"), "{err}");
    }
}
