//! What the fleet's tests share: the fleet binary, polling, a training load, writes,
//! `/metrics` gauges and raw connections.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use serde_json::Value;
use support::FleetProcess;

pub(crate) const FLEET: &str = env!("CARGO_BIN_EXE_fleet");

/// Polls `check` every 100 ms until it holds, for at most `within`.
pub(crate) async fn eventually<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = tokio::time::Instant::now() + within;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < end,
            "not within {within:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub(crate) fn instances(service: &Value) -> u64 {
    service["ready"].as_u64().unwrap_or(0) + service["starting"].as_u64().unwrap_or(0)
}

/// Workers sending `GET /api/v1/training/run` until stopped; (ok, failed).
pub(crate) struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    pub(crate) fn start(fleet: &FleetProcess, workers: usize) -> Load {
        let (stop, ok, failed) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicU64::new(0)),
        );
        let gateway = fleet.gateway;
        let tasks = (0..workers)
            .map(|_| {
                let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        match support::get(gateway, "/api/v1/training/run").await {
                            Ok((s, _)) if s == StatusCode::OK => ok.fetch_add(1, Ordering::Relaxed),
                            other => {
                                eprintln!("failed request: {other:?}");
                                failed.fetch_add(1, Ordering::Relaxed)
                            }
                        };
                    }
                })
            })
            .collect();
        Load {
            stop,
            ok,
            failed,
            tasks,
        }
    }

    pub(crate) async fn stop(self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(35), t).await;
        }
        (
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }
}

/// A write through the gateway that must succeed.
pub(crate) async fn write_ok(fleet: &FleetProcess, path: &str, body: &str) {
    let (s, answer) = fleet.put(path, body).await.unwrap();
    assert_eq!(s, StatusCode::OK, "PUT {path} {body}: {answer}");
}

/// The value of the gauge `series` (name and labels, as printed) in `/metrics`.
pub(crate) async fn gauge(fleet: &FleetProcess, series: &str) -> f64 {
    let (s, raw) = support::get(fleet.gateway, "/metrics").await.unwrap();
    assert_eq!(s, StatusCode::OK);
    let text = String::from_utf8_lossy(&raw);
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("/metrics has no {series}:\n{text}"))
}

/// Writes `request` on a fresh connection to `addr` and reads until the gateway closes
/// it (at most 10 s); what came back.
pub(crate) async fn raw_exchange(addr: std::net::SocketAddr, request: String) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether the gateway closes `stream` (an end of stream or a reset) within 20 s, and
/// what it sent before.
pub(crate) async fn closed_by_gateway(mut stream: tokio::net::TcpStream) -> (bool, String) {
    use tokio::io::AsyncReadExt;
    let mut out = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(20), async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .is_ok();
    (closed, String::from_utf8_lossy(&out).into_owned())
}

/// The numbers in `v` with more than three decimals, and the states or kinds (values of
/// `state`, `health`, `breaker`, `kind`, `keep`, `by`, `action`) that are not lower-case
/// words: what the API's convention rules out, each with where it is.
pub(crate) fn off_convention(v: &Value, at: &str, out: &mut Vec<String>) {
    match v {
        Value::Number(n) if n.is_f64() => {
            let text = n.to_string();
            if text.split_once('.').is_some_and(|(_, d)| d.len() > 3) || text.contains('e') {
                out.push(format!("{at} = {text}"));
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                off_convention(item, &format!("{at}[{i}]"), out);
            }
        }
        Value::Object(fields) => {
            for (k, f) in fields {
                let here = format!("{at}.{k}");
                if let (
                    "state" | "health" | "breaker" | "kind" | "keep" | "by" | "action",
                    Value::String(s),
                ) = (k.as_str(), f)
                {
                    if !s
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c == ' ' || c == '-')
                    {
                        out.push(format!("{here} = {s:?}"));
                    }
                }
                off_convention(f, &here, out);
            }
        }
        _ => {}
    }
}
