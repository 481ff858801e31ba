//! Measures how fast `HealthMonitor`, with its default settings, notices that a target
//! died and that it came back.
//!
//! ```sh
//! cargo run --release -p examples --example health_detection
//! ```
//!
//! Each round starts a tiny HTTP server on 127.0.0.1, waits until the monitor calls it
//! healthy, kills it (listener and connections closed at once, as a crash would), times
//! how long until the monitor says unhealthy, restarts it on the same port and times how
//! long until healthy again. It prints the median, 90th percentile and maximum over the
//! rounds. Target: at most 1 second for both (a common target is 10 seconds;
//! Kubernetes' default probe settings take about 30).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tower_health::{monitor, HealthMonitor, Target, TargetState};

const ROUNDS: usize = 15;
const GIVE_UP: Duration = Duration::from_secs(10);

/// Serves `200 ok` on every path until the returned task is aborted.
async fn serve(addr: SocketAddr) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let listener = TcpListener::bind(addr).await?;
    Ok(tokio::spawn(async move {
        // Connections live in this set: aborting the task closes them all.
        let mut conns = JoinSet::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let Ok((stream, _)) = accepted else { continue };
                    let svc = hyper::service::service_fn(|_req| async {
                        Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from_static(b"ok"))))
                    });
                    conns.spawn(hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc));
                }
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
            }
        }
    }))
}

async fn until(monitor: &HealthMonitor, state: TargetState) -> Option<Duration> {
    let start = Instant::now();
    let mut rx = monitor.watch("target")?;
    tokio::time::timeout(GIVE_UP, async {
        while monitor.health("target").map(|h| h.state) != Some(state) {
            let _ = rx.changed().await;
        }
    })
    .await
    .ok()?;
    Some(start.elapsed())
}

fn summary(name: &str, mut xs: Vec<Duration>) {
    xs.sort();
    let pick = |q: f64| xs[((xs.len() - 1) as f64 * q).round() as usize];
    println!(
        "{name:<10} median {:>6.0} ms | p90 {:>6.0} ms | max {:>6.0} ms | target <= 1000 ms: {}",
        pick(0.5).as_secs_f64() * 1e3,
        pick(0.9).as_secs_f64() * 1e3,
        xs[xs.len() - 1].as_secs_f64() * 1e3,
        if xs[xs.len() - 1] <= Duration::from_secs(1) {
            "met"
        } else {
            "NOT met"
        }
    );
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let probe = TcpListener::bind("127.0.0.1:0").await?;
    let addr = probe.local_addr()?;
    drop(probe);

    println!(
        "defaults: interval {:?}, timeout {:?}, failure threshold {}, success threshold {}, backoff up to {:?}",
        monitor::DEFAULT_INTERVAL,
        monitor::DEFAULT_TIMEOUT,
        monitor::DEFAULT_FAILURE_THRESHOLD,
        monitor::DEFAULT_SUCCESS_THRESHOLD,
        monitor::DEFAULT_MAX_BACKOFF
    );
    let mut server = serve(addr).await?;
    let monitor = HealthMonitor::new();
    monitor.register(Target::new("target", addr.to_string()).path("/"))?;
    until(&monitor, TargetState::Healthy)
        .await
        .ok_or("the target never became healthy")?;

    let (mut down, mut up) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        // Let the monitor settle into its healthy rhythm at a random phase.
        tokio::time::sleep(Duration::from_millis(300 + (round as u64 * 37) % 250)).await;
        server.abort();
        let _ = server.await;
        down.push(
            until(&monitor, TargetState::Unhealthy)
                .await
                .ok_or("a dead target was never marked unhealthy")?,
        );
        // Stay dead a while, so recovery is measured from the backoff rhythm.
        tokio::time::sleep(Duration::from_millis(800)).await;
        server = serve(addr).await?;
        up.push(
            until(&monitor, TargetState::Healthy)
                .await
                .ok_or("a restarted target was never marked healthy")?,
        );
    }
    server.abort();
    println!("{ROUNDS} rounds against 127.0.0.1:");
    summary("detection", down);
    summary("recovery", up);
    Ok(())
}
