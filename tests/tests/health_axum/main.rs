//! `HealthEndpoints`, `ReadinessLayer` and `CacheLayer` mounted in a real axum app on
//! 127.0.0.1.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::error_handling::HandleErrorLayer;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use tower::ServiceBuilder;
use tower_cache::{Cache, CacheLayer, MemoryTier, ResponseCodec, StoreSuccessful, UrlKey};
use tower_health::{Gate, HealthEndpoints, Probes, ReadinessLayer};

const BOUND: Duration = Duration::from_secs(20);

#[tokio::test]
async fn the_layers_mount_in_an_axum_app() {
    support::init_tracing();
    tokio::time::timeout(BOUND, async {
        let probes = Probes::new();
        let calls = Arc::new(AtomicUsize::new(0));
        let store = Cache::new(MemoryTier::builder().max_entries(100).build().unwrap());
        let api = Router::new()
            .route(
                "/api/budget",
                get({
                    let calls = calls.clone();
                    move || async move {
                        calls.fetch_add(1, Ordering::SeqCst);
                        "budget: 42"
                    }
                }),
            )
            // Fallible middleware in axum: errors become responses at the edge, as with
            // tower's own timeout or buffer layers.
            .layer(
                ServiceBuilder::new()
                    .layer(HandleErrorLayer::new(
                        |e: tower_cache::BoxError| async move {
                            (StatusCode::BAD_GATEWAY, e.to_string())
                        },
                    ))
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
        let app = Router::new()
            .route_service("/health", HealthEndpoints::new(probes.clone()))
            .route_service("/health/{probe}", HealthEndpoints::new(probes.clone()))
            .merge(api);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move { axum::serve(listener, app).await });

        let (status, body) = support::get(addr, "/health/ready").await.unwrap();
        assert_eq!((status.as_u16(), &body[..]), (200, &b"ready\n"[..]));
        let (status, body) = support::get(addr, "/health").await.unwrap();
        assert_eq!(status, 200);
        assert!(body.starts_with(b"{\"status\":\"pass\""));

        for _ in 0..3 {
            let (status, body) = support::get(addr, "/api/budget").await.unwrap();
            assert_eq!((status.as_u16(), &body[..]), (200, &b"budget: 42"[..]));
        }
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "two of three answered by the cache"
        );

        probes.set_draining(true);
        let (status, _) = support::get(addr, "/api/budget").await.unwrap();
        assert_eq!(status, 503, "the gate rejects while draining");
        assert_eq!(support::get(addr, "/health/ready").await.unwrap().0, 503);
        server.abort();
    })
    .await
    .expect("bounded");
}
