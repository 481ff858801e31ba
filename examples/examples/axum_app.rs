//! An axum app with the three layers most services want, to copy:
//! `HealthEndpoints` for the orchestrator's probes, a `ReadinessLayer` that answers 503
//! while the app is not ready (or drains), and a `CacheLayer` in front of a slow handler.
//!
//! ```sh
//! cargo run --release -p examples --example axum_app            # a short demonstration
//! cargo run --release -p examples --example axum_app -- --serve # serve on 127.0.0.1:3000
//! ```

use std::time::Duration;

use axum::error_handling::HandleErrorLayer;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use tower::ServiceBuilder;
use tower_cache::{Cache, CacheLayer, MemoryTier, ResponseCodec, StoreSuccessful, UrlKey};
use tower_health::{Gate, HealthEndpoints, Probe, Probes, ReadinessLayer};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The app: `/health/*` probes, and `/api/budget/{id}` behind readiness and a cache.
fn app(probes: Probes, store: Cache) -> Result<Router, BoxError> {
    let api = Router::new()
        .route(
            "/api/budget/{id}",
            get(
                |axum::extract::Path(id): axum::extract::Path<u32>| async move {
                    // Slow work the cache saves: 50 ms per miss.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    (
                        [("cache-control", "max-age=30")],
                        format!("{{\"id\":{id},\"budget\":{}}}\n", id * 100),
                    )
                },
            ),
        )
        .layer(
            ServiceBuilder::new()
                // axum wants infallible services: the layers' errors become responses.
                .layer(HandleErrorLayer::new(|e: BoxError| async move {
                    (StatusCode::BAD_GATEWAY, e.to_string())
                }))
                .layer(ReadinessLayer::reject_http(
                    Gate::new(probes.ready_watch()),
                    Duration::from_secs(2),
                ))
                .layer(
                    CacheLayer::new(
                        store,
                        UrlKey,
                        ResponseCodec::default(),
                        Duration::from_secs(60),
                    )
                    .store_policy(StoreSuccessful),
                ),
        );
    Ok(Router::new()
        .route_service("/health", HealthEndpoints::new(probes.clone()))
        .route_service("/health/{probe}", HealthEndpoints::new(probes))
        .merge(api))
}

async fn get_text(
    addr: std::net::SocketAddr,
    path: &str,
) -> Result<(u16, String, Duration), BoxError> {
    use http_body_util::BodyExt;
    let start = std::time::Instant::now();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    let res = client.get(format!("http://{addr}{path}").parse()?).await?;
    let status = res.status().as_u16();
    let body = res.into_body().collect().await?.to_bytes();
    Ok((
        status,
        String::from_utf8_lossy(&body).trim().to_string(),
        start.elapsed(),
    ))
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let serve = std::env::args().any(|a| a == "--serve");
    let probes = Probes::new();
    // Not ready until the "warm-up" probe passes (a real app would load its data here).
    let (warm, warm_rx) = tokio::sync::watch::channel(false);
    probes.register(
        Probe::readiness("warm-up", move || {
            let ok = *warm_rx.borrow();
            async move {
                if ok {
                    Ok(())
                } else {
                    Err("still warming up")
                }
            }
        })
        .timeout(Duration::from_millis(40))
        .period(Duration::from_millis(50)),
    )?;
    probes.start();
    let store = Cache::new(MemoryTier::builder().max_entries(10_000).build()?);
    let app = app(probes.clone(), store.clone())?;
    let addr = if serve {
        "127.0.0.1:3000"
    } else {
        "127.0.0.1:0"
    };
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    println!("axum_app on http://{addr}");
    let show = |label: &str, r: (u16, String, Duration)| {
        println!("  {label:<32} {} {:<36} {:?}", r.0, r.1, r.2);
    };
    show(
        "GET /health/ready (warming up)",
        get_text(addr, "/health/ready").await?,
    );
    show(
        "GET /api/budget/7 (not ready)",
        get_text(addr, "/api/budget/7").await?,
    );
    warm.send_replace(true);
    probes.wait_for_ready(Duration::from_secs(5)).await?;
    show("GET /health/ready", get_text(addr, "/health/ready").await?);
    show(
        "GET /api/budget/7 (miss)",
        get_text(addr, "/api/budget/7").await?,
    );
    show(
        "GET /api/budget/7 (hit)",
        get_text(addr, "/api/budget/7").await?,
    );
    let s = store.stats();
    println!(
        "  cache: {} hits, {} misses",
        s.memory_hits + s.disk_hits,
        s.misses
    );
    if serve {
        println!("serving on http://{addr} until Ctrl-C");
        server.await??;
    }
    Ok(())
}
