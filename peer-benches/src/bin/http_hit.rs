//! Cached HTTP hits through hyper: tower-cache's `HttpCacheLayer` against
//! `http-cache-tower` (moka manager), `tower-http-cache` (in-memory backend) and the
//! uncached origin, all in one run.
//!
//! ```sh
//! cargo run --release --manifest-path peer-benches/Cargo.toml --bin http_hit
//! ```
//!
//! Three hyper servers on 127.0.0.1 serve the same origin handler (a 1 KiB body with
//! `Cache-Control: max-age=3600`): bare, behind our layer, behind http-cache-tower's. The
//! load is 32 keep-alive HTTP/1.1 connections sending one request after another to one
//! URL (all hits after the first), 3 s per round, the three servers taken in turn, two
//! rounds. Printed: requests per second, p50 and p99 latency, and the ratios.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tower::ServiceExt;
use tower_layer::Layer;

const CONNECTIONS: usize = 32;
const ROUND: Duration = Duration::from_secs(3);
const BODY: usize = 1024;

async fn origin(_req: Request<Full<Bytes>>) -> Result<Response<Full<Bytes>>, Infallible> {
    let mut res = Response::new(Full::new(Bytes::from(vec![b'x'; BODY])));
    res.headers_mut()
        .insert("cache-control", "max-age=3600".parse().unwrap());
    Ok(res)
}

/// Serves `svc` (over bodies collected into `Full`) on a fresh loopback port.
async fn serve<S, B>(svc: S) -> SocketAddr
where
    S: tower::Service<Request<Full<Bytes>>, Response = Response<B>> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let _ = stream.set_nodelay(true);
            let svc = svc.clone().map_request(|req: Request<Incoming>| {
                // The handlers take a collected body; GETs have none.
                req.map(|_| Full::default())
            });
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), TowerToHyperService::new(svc))
                    .await;
            });
        }
    });
    addr
}

/// Drives `addr` for a round; returns (requests per second, p50, p99).
async fn load(addr: SocketAddr) -> (f64, Duration, Duration) {
    let start = Instant::now();
    let tasks: Vec<_> = (0..CONNECTIONS)
        .map(|_| {
            tokio::spawn(async move {
                let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
                stream.set_nodelay(true).unwrap();
                let (mut send, conn) =
                    hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
                tokio::spawn(conn);
                let mut lat = Vec::with_capacity(100_000);
                while start.elapsed() < ROUND {
                    let t = Instant::now();
                    let req = Request::get(format!("http://{addr}/hit"))
                        .header("host", addr.to_string())
                        .body(Empty::<Bytes>::new())
                        .unwrap();
                    let res = send.send_request(req).await.unwrap();
                    let body = res.into_body().collect().await.unwrap().to_bytes();
                    assert_eq!(body.len(), BODY);
                    lat.push(t.elapsed());
                }
                lat
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let secs = start.elapsed().as_secs_f64();
    all.sort();
    let p = |q: f64| all[((all.len() - 1) as f64 * q) as usize];
    (all.len() as f64 / secs, p(0.5), p(0.99))
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let bare = serve(tower::service_fn(origin)).await;
        let ours = serve(
            tower_cache::http::HttpCacheLayer::default().layer(tower::service_fn(origin)),
        )
        .await;
        let theirs = serve(
            http_cache_tower::HttpCacheLayer::new(http_cache::MokaManager::default())
                .layer(tower::service_fn(origin)),
        )
        .await;
        let thc = serve(
            tower_http_cache::CacheLayer::builder(tower_http_cache::backend::memory::InMemoryBackend::new(10_000))
                .ttl(Duration::from_secs(3600))
                .build()
                .layer(tower::service_fn(origin)),
        )
        .await;
        let names = [
            "uncached origin",
            "tower-cache HttpCacheLayer",
            "http-cache-tower (moka)",
            "tower-http-cache (memory)",
        ];
        let addrs = [bare, ours, theirs, thc];
        let mut results: Vec<Vec<(f64, Duration, Duration)>> = vec![Vec::new(); 4];
        for round in 0..2 {
            for i in 0..4 {
                // Rotate the order so that no contestant always runs first.
                let which = (i + round) % 4;
                results[which].push(load(addrs[which]).await);
            }
        }
        println!("1 KiB cached hits through hyper on 127.0.0.1, {CONNECTIONS} keep-alive connections, 2 rounds of {ROUND:?}");
        println!("{:<30} {:>12} {:>10} {:>10}", "", "requests/s", "p50", "p99");
        let best = |r: &Vec<(f64, Duration, Duration)>| {
            r.iter().cloned().fold((0.0f64, Duration::MAX, Duration::MAX), |a, b| {
                (a.0.max(b.0), a.1.min(b.1), a.2.min(b.2))
            })
        };
        let summary: Vec<_> = results.iter().map(best).collect();
        for (name, (rps, p50, p99)) in names.iter().zip(&summary) {
            println!("{name:<30} {rps:>12.0} {p50:>10.1?} {p99:>10.1?}");
        }
        println!(
            "tower-cache / http-cache-tower: {:.2}x requests/s (target >= 1.5x), p99 {:.2}x; tower-cache / tower-http-cache: {:.2}x, p99 {:.2}x; tower-cache / uncached origin: {:.2}x",
            summary[1].0 / summary[2].0,
            summary[1].2.as_secs_f64() / summary[2].2.as_secs_f64(),
            summary[1].0 / summary[3].0,
            summary[1].2.as_secs_f64() / summary[3].2.as_secs_f64(),
            summary[1].0 / summary[0].0
        );
    });
}
