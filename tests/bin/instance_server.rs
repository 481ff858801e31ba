//! A small service instance for the scaling tests: `instance-server --port N` serves
//! `GET /health/ready` (200, or 503 after `/unready` until `/ready`) and `GET /work`
//! (answers its port after 20 ms) on 127.0.0.1:N until it is killed or sent SIGTERM.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;

/// Whether `/health/ready` answers 200 (`/unready` and `/ready` flip it).
static READY: AtomicBool = AtomicBool::new(true);

fn main() {
    let mut args = std::env::args().skip(1);
    let mut port = None;
    while let Some(a) = args.next() {
        if a == "--port" {
            port = args.next().and_then(|p| p.parse::<u16>().ok());
        }
    }
    let Some(port) = port else {
        eprintln!("usage: instance-server --port N");
        std::process::exit(2);
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    rt.block_on(async move {
        let listener = match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("instance-server: cannot listen on {port}: {e}");
                std::process::exit(1);
            }
        };
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    move |req: http::Request<hyper::body::Incoming>| async move {
                        let res = match req.uri().path() {
                            "/health/ready" if READY.load(Ordering::Relaxed) => {
                                Response::new(Full::new(Bytes::from_static(b"ready")))
                            }
                            "/health/ready" => Response::builder()
                                .status(StatusCode::SERVICE_UNAVAILABLE)
                                .body(Full::new(Bytes::from_static(b"not ready")))
                                .expect("a valid response"),
                            "/unready" => {
                                READY.store(false, Ordering::Relaxed);
                                Response::new(Full::new(Bytes::new()))
                            }
                            "/ready" => {
                                READY.store(true, Ordering::Relaxed);
                                Response::new(Full::new(Bytes::new()))
                            }
                            "/work" => {
                                tokio::time::sleep(Duration::from_millis(20)).await;
                                Response::new(Full::new(Bytes::from(port.to_string())))
                            }
                            _ => Response::builder()
                                .status(StatusCode::NOT_FOUND)
                                .body(Full::new(Bytes::new()))
                                .expect("a valid response"),
                        };
                        Ok::<_, Infallible>(res)
                    },
                );
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
}
