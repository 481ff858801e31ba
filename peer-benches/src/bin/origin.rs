//! The origin the proxy comparison (`proxies.sh`) puts every cache in front of.
//!
//! `GET /hit/1k`, `/hit/64k`: bodies of that size, `Cache-Control: max-age=3600`;
//! `/miss/<anything>`: 1 KiB, also cacheable (a miss only because the URL is new).
//!
//! ```sh
//! cargo run --release --manifest-path peer-benches/Cargo.toml --bin origin -- 127.0.0.1:8000
//! ```

use std::convert::Infallible;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

fn main() {
    let addr: std::net::SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8000".into())
        .parse()
        .expect("give the address as host:port");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let small = Bytes::from(vec![b'x'; 1024]);
    let large = Bytes::from(vec![b'y'; 64 * 1024]);
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let _ = stream.set_nodelay(true);
            let (small, large) = (small.clone(), large.clone());
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let body = if req.uri().path() == "/hit/64k" {
                        large.clone()
                    } else {
                        small.clone()
                    };
                    async move {
                        let mut res = Response::new(Full::new(body));
                        res.headers_mut()
                            .insert("cache-control", "max-age=3600".parse().unwrap());
                        Ok::<_, Infallible>(res)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
}
