//! Cluster-wide invalidation between nodes over the HTTP bus on real loopback sockets:
//! delivery order, gaps, restarts, replays, clock skew and floods.

#[path = "../common/mod.rs"]
mod common;
mod delivery;
mod digests;
mod replay;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use tower_cache::coordinator::{Coordinator, HttpBus, InvalidateEndpoint};
use tower_cache::{Cache, MemoryTier, WriteTiers};

const TTL: Duration = Duration::from_secs(600);
const SECRET: &[u8] = b"sixteen+ bytes of shared secret";

/// What the test server does with a request before the endpoint sees it.
#[derive(Clone, Copy, Debug)]
enum Action {
    /// Hands it to the endpoint after this delay.
    Pass(Duration),
    /// Answers with this status; the endpoint never sees it.
    Fail(u16),
}

type Hook = Arc<dyn Fn(&Bytes) -> Action + Send + Sync>;

fn pass() -> Hook {
    Arc::new(|_| Action::Pass(Duration::ZERO))
}

/// Serves `endpoint` on `listener`, letting `hook` delay or fail each request first.
fn serve(listener: tokio::net::TcpListener, endpoint: InvalidateEndpoint, hook: Hook) {
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let (endpoint, hook) = (endpoint.clone(), hook.clone());
            let svc =
                hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let (endpoint, hook) = (endpoint.clone(), hook.clone());
                    async move {
                        let (parts, body) = req.into_parts();
                        let body = body.collect().await?.to_bytes();
                        match hook(&body) {
                            Action::Pass(delay) => {
                                if !delay.is_zero() {
                                    tokio::time::sleep(delay).await;
                                }
                                let req = http::Request::from_parts(parts, Full::new(body));
                                let res = tower::ServiceExt::oneshot(endpoint, req).await;
                                Ok::<_, hyper::Error>(res.unwrap_or_else(|e| match e {}))
                            }
                            Action::Fail(code) => {
                                let mut res = http::Response::new(Full::default());
                                *res.status_mut() = http::StatusCode::from_u16(code).unwrap();
                                Ok(res)
                            }
                        }
                    }
                });
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
}

/// `n` nodes, each serving its endpoint on a loopback port (with its hook) and sending to
/// every other one; node ids are 1..=n.
async fn cluster(hooks: Vec<Hook>) -> (Vec<Coordinator>, Vec<String>) {
    let mut listeners = Vec::new();
    for _ in &hooks {
        listeners.push(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap());
    }
    let urls: Vec<String> = listeners
        .iter()
        .map(|l| format!("http://{}/_cache/invalidate", l.local_addr().unwrap()))
        .collect();
    let mut nodes = Vec::new();
    for (i, (listener, hook)) in listeners.into_iter().zip(hooks).enumerate() {
        let mut b = HttpBus::builder(SECRET);
        for (j, url) in urls.iter().enumerate() {
            if i != j {
                b = b.peer(url.clone());
            }
        }
        let bus = b.build().unwrap();
        serve(listener, bus.endpoint(), hook);
        let node = Coordinator::builder(Cache::new(MemoryTier::builder().build().unwrap()), bus)
            .node_id(i as u64 + 1)
            .secret(SECRET)
            .start()
            .unwrap();
        nodes.push(node);
    }
    (nodes, urls)
}

async fn put(c: &Coordinator, key: &str) {
    c.cache()
        .set(key, "v".into(), TTL, WriteTiers::ALL)
        .await
        .unwrap();
}

async fn applied(c: &Coordinator, n: u64) {
    tokio::time::timeout(Duration::from_secs(40), c.applied(n))
        .await
        .unwrap_or_else(|_| panic!("node {} applied {:?}", c.node_id(), c.status()));
}

/// A small deterministic generator (xorshift), for jitter.
fn jitter(seed: u64, max_ms: u64) -> Hook {
    let state = Arc::new(AtomicU64::new(seed | 1));
    Arc::new(move |_| {
        let mut x = state.load(Ordering::Relaxed);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        state.store(x, Ordering::Relaxed);
        Action::Pass(Duration::from_millis(x % (max_ms + 1)))
    })
}

/// A node with id `id` that sends to `url` only (it serves no endpoint).
fn sender(url: &str, id: u64) -> Coordinator {
    let bus = HttpBus::builder(SECRET).peer(url).build().unwrap();
    Coordinator::builder(Cache::new(MemoryTier::builder().build().unwrap()), bus)
        .node_id(id)
        .secret(SECRET)
        .start()
        .unwrap()
}

/// A receiver with id `id` serving its endpoint on loopback, recording every frame its
/// server is sent; returns it, its URL and the frames.
async fn receiver(
    id: u64,
    configure: impl FnOnce(
        tower_cache::coordinator::CoordinatorBuilder<HttpBus>,
    ) -> tower_cache::coordinator::CoordinatorBuilder<HttpBus>,
) -> (Coordinator, String, Arc<Mutex<Vec<Bytes>>>) {
    let (listener, url) = listen().await;
    let frames = Arc::new(Mutex::new(Vec::new()));
    let hook: Hook = {
        let frames = frames.clone();
        Arc::new(move |f| {
            frames.lock().unwrap().push(f.clone());
            Action::Pass(Duration::ZERO)
        })
    };
    let bus = HttpBus::builder(SECRET).build().unwrap();
    serve(listener, bus.endpoint(), hook);
    let node = configure(
        Coordinator::builder(Cache::new(MemoryTier::builder().build().unwrap()), bus)
            .node_id(id)
            .secret(SECRET),
    )
    .start()
    .unwrap();
    (node, url, frames)
}

/// POSTs `frame` to `url` over a fresh connection; returns the status.
async fn post(url: &str, frame: Bytes) -> u16 {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let req = http::Request::post(url).body(Full::new(frame)).unwrap();
    client.request(req).await.unwrap().status().as_u16()
}

/// `n` distinct signed frames from node 9 (invalidations of `f0`, `f1`, ...), in order.
async fn frames_of_another_node(n: usize) -> Vec<Bytes> {
    use tower_cache::coordinator::{Bus, BusEvent, InProcessBus};
    let bus = InProcessBus::with_capacity(n + 1);
    let mut rx = bus.subscribe();
    let other = Coordinator::builder(Cache::new(MemoryTier::builder().build().unwrap()), bus)
        .node_id(9)
        .secret(SECRET)
        .start()
        .unwrap();
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        other.invalidate(&format!("f{i}")).await.unwrap();
        match rx.next().await.unwrap() {
            BusEvent::Frame(f) => out.push(f),
            e => panic!("{e:?}"),
        }
    }
    out
}

async fn call(endpoint: &InvalidateEndpoint, frame: Bytes) -> u16 {
    let req = http::Request::post("/_cache/invalidate")
        .body(Full::new(frame))
        .unwrap();
    tower::ServiceExt::oneshot(endpoint.clone(), req)
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Whether `frame` is a digest (kind 4, no target: 36 bytes of head and a 32-byte tag).
fn is_digest(frame: &[u8]) -> bool {
    frame.len() == 68 && frame[33] == 4
}

/// A hook that answers `503` while the returned flag is set (set to `down` at first), and
/// passes requests on otherwise.
fn failing_while(down: bool) -> (Arc<std::sync::atomic::AtomicBool>, Hook) {
    let flag = Arc::new(std::sync::atomic::AtomicBool::new(down));
    let hook: Hook = {
        let flag = flag.clone();
        Arc::new(move |_| {
            if flag.load(Ordering::SeqCst) {
                Action::Fail(503)
            } else {
                Action::Pass(Duration::ZERO)
            }
        })
    };
    (flag, hook)
}

/// A loopback listener and the URL of the endpoint it is to serve.
async fn listen() -> (tokio::net::TcpListener, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/_cache/invalidate",
        listener.local_addr().unwrap()
    );
    (listener, url)
}
