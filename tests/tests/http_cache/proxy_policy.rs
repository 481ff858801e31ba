//! `cache_proxy`'s caching policy as a child process: `CDN-Cache-Control` (RFC 9213) and
//! heuristic freshness (RFC 9111 section 4.2.2) on by default, flags to change them.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use axum::http::HeaderMap;

use super::{send_via, Proxy, BOUND};

/// `/cdn`: `CDN-Cache-Control: max-age=60` with `Cache-Control: no-store`; `/lm`:
/// `Last-Modified` an hour ago and no freshness; `/edge`: `Edge-Control: no-store` with
/// `CDN-Cache-Control: max-age=60`.
async fn start_origin() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let app = axum::Router::new().fallback(move |uri: axum::http::Uri| {
        let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
        async move {
            let mut h = HeaderMap::new();
            match uri.path() {
                "/cdn" => {
                    h.insert("cdn-cache-control", "max-age=60".parse().unwrap());
                    h.insert("cache-control", "no-store".parse().unwrap());
                }
                "/edge" => {
                    h.insert("edge-control", "no-store".parse().unwrap());
                    h.insert("cdn-cache-control", "max-age=60".parse().unwrap());
                }
                _ => {
                    let lm = SystemTime::now() - std::time::Duration::from_secs(3600);
                    h.insert(
                        "last-modified",
                        httpdate::fmt_http_date(lm).parse().unwrap(),
                    );
                }
            }
            (h, format!("call {n}"))
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, calls)
}

/// The `x-cache` of two GETs of `path` through `proxy`.
async fn twice(proxy: &Proxy, path: &str) -> (String, String, HeaderMap) {
    let (_, h1, _) = send_via(proxy.addr, "GET", path, &[], "").await;
    let (_, h2, _) = send_via(proxy.addr, "GET", path, &[], "").await;
    let x = |h: &HeaderMap| h["x-cache"].to_str().unwrap().to_owned();
    (x(&h1), x(&h2), h2)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_obeys_cdn_cache_control_and_heuristics_by_default() {
    tokio::time::timeout(BOUND, async {
        let (origin, _) = start_origin().await;
        let proxy = Proxy::start(&format!("http://{origin}")).await;
        let (first, second, h) = twice(&proxy, "/cdn").await;
        assert_eq!((first.as_str(), second.as_str()), ("MISS", "HIT-MEM"));
        // Passed downstream as the origin sent them.
        assert_eq!(h["cache-control"], "no-store");
        assert_eq!(h["cdn-cache-control"], "max-age=60");
        let (first, second, _) = twice(&proxy, "/lm").await;
        assert_eq!((first.as_str(), second.as_str()), ("MISS", "HIT-MEM"));
    })
    .await
    .expect("bounded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_flags_change_the_target_list_and_turn_heuristics_off() {
    tokio::time::timeout(BOUND, async {
        let (origin, calls) = start_origin().await;
        let upstream = format!("http://{origin}");
        let off = [
            "--target-fields".to_string(),
            "none".to_string(),
            "--no-heuristic-freshness".to_string(),
        ];
        let proxy = Proxy::start_with(support::free_addr().unwrap(), &upstream, &off).await;
        let (first, second, _) = twice(&proxy, "/cdn").await;
        assert_eq!((first.as_str(), second.as_str()), ("PASS", "PASS"));
        let (_, second, _) = twice(&proxy, "/lm").await;
        assert_ne!(second, "HIT-MEM");
        assert_eq!(calls.load(Ordering::SeqCst), 4);
        drop(proxy);

        // A field of this deployment's own before CDN-Cache-Control: its no-store wins.
        let own = [
            "--target-fields".to_string(),
            "Edge-Control,CDN-Cache-Control".to_string(),
        ];
        let proxy = Proxy::start_with(support::free_addr().unwrap(), &upstream, &own).await;
        let (_, second, _) = twice(&proxy, "/edge").await;
        assert_eq!(second, "PASS");
        let (_, second, _) = twice(&proxy, "/cdn").await;
        assert_eq!(second, "HIT-MEM");
    })
    .await
    .expect("bounded");
}
