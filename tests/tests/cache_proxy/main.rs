//! The `cache_proxy` example as an edge server, black box: the binary as a child process,
//! driven over real sockets on 127.0.0.1 (raw bytes where a client library would not send
//! what an attacker does), in front of an axum origin that reflects what it was sent.

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const BOUND: Duration = Duration::from_secs(60);

/// The proxy as a child process, killed when dropped.
struct Proxy {
    _child: tokio::process::Child,
    addr: std::net::SocketAddr,
}

impl Proxy {
    async fn start(upstream: std::net::SocketAddr, extra: &[&str]) -> Proxy {
        let addr = support::free_addr().unwrap();
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_cache-proxy"))
            .args(["--listen", &addr.to_string()])
            .args(["--upstream", &format!("http://{upstream}")])
            .args(extra)
            .kill_on_drop(true)
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Until it listens (every test is bounded).
        while TcpStream::connect(addr).await.is_err() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Proxy {
            _child: child,
            addr,
        }
    }
}

/// An origin that answers every request with what it saw, fresh for 60 s.
async fn reflect(req: axum::extract::Request) -> impl axum::response::IntoResponse {
    let field = |name: &str| {
        req.headers()
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect::<Vec<_>>()
            .join("|")
    };
    let body = format!(
        "{:?} host={} path={} xfh={} xff={} fwd={}",
        req.version(),
        field("host"),
        req.uri().path_and_query().map_or("/", |p| p.as_str()),
        field("x-forwarded-host"),
        field("x-forwarded-for"),
        field("forwarded"),
    );
    ([("cache-control", "max-age=60")], body)
}

async fn origin() -> (
    std::net::SocketAddr,
    tokio::task::JoinHandle<std::io::Result<()>>,
) {
    let app = axum::Router::new().fallback(reflect);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (
        addr,
        tokio::spawn(async move { axum::serve(listener, app).await }),
    )
}

/// Writes `raw` on a new connection and reads until the proxy closes it.
async fn exchange(proxy: std::net::SocketAddr, raw: &[u8]) -> String {
    let mut s = TcpStream::connect(proxy).await.unwrap();
    s.write_all(raw).await.unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// The status code of a raw response.
fn status(raw: &str) -> &str {
    raw.get(9..12).unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_authorities_and_connection_options_are_refused_at_the_edge() {
    tokio::time::timeout(BOUND, async {
        let (origin, server) = origin().await;
        let proxy = Proxy::start(origin, &[]).await;
        let p = proxy.addr;
        for (what, raw) in [
            ("a Host with a path", &b"GET /app.js HTTP/1.1\r\nHost: proxy:8080/static\r\nConnection: close\r\n\r\n"[..]),
            ("a Host with a query", b"GET /b HTTP/1.1\r\nHost: h/q?a=\r\nConnection: close\r\n\r\n"),
            ("two Hosts", b"GET /x HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\nConnection: close\r\n\r\n"),
            ("no Host", b"GET /x HTTP/1.1\r\nConnection: close\r\n\r\n"),
            ("a target that contradicts Host", b"GET http://a.test/x HTTP/1.1\r\nHost: b.test\r\nConnection: close\r\n\r\n"),
            ("Connection: Host", b"GET /x HTTP/1.1\r\nHost: a.test\r\nConnection: close, Host\r\n\r\n"),
            ("Connection: Authorization", b"GET /x HTTP/1.1\r\nHost: a.test\r\nAuthorization: Bearer x\r\nConnection: close, authorization\r\n\r\n"),
        ] {
            let res = exchange(p, raw).await;
            assert_eq!(status(&res), "400", "{what}: {res}");
        }
        // The URLs the forged requests aimed at get their own responses.
        let res = exchange(p, b"GET /static/app.js HTTP/1.1\r\nHost: proxy:8080\r\nConnection: close\r\n\r\n").await;
        assert!(res.contains("host=proxy:8080 path=/static/app.js"), "{res}");
        // Forwarding fields from the client are dropped; the proxy sets its own.
        let res = exchange(
            p,
            b"GET /f HTTP/1.1\r\nHost: a.test\r\nX-Forwarded-Host: evil.test\r\nX-Forwarded-For: 10.9.9.9\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(
            res.contains("xfh= xff=127.0.0.1 fwd=for=127.0.0.1;proto=http"),
            "{res}"
        );
        server.abort();
    })
    .await
    .expect("bounded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_misses_reach_an_http1_origin_with_the_authority_as_host() {
    tokio::time::timeout(BOUND, async {
        let (origin, server) = origin().await;
        let proxy = Proxy::start(origin, &[]).await;
        let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
            .http2_only(true)
            .build_http();
        let mut bodies = Vec::new();
        for expected in ["MISS", "HIT-MEM"] {
            let req = Request::get(format!("http://{}/h2", proxy.addr))
                .body(Full::default())
                .unwrap();
            let res = client.request(req).await.unwrap();
            assert_eq!(res.version(), http::Version::HTTP_2);
            assert_eq!(res.status(), 200);
            assert_eq!(res.headers()["x-cache"], expected);
            bodies.push(res.into_body().collect().await.unwrap().to_bytes());
        }
        let expected = format!("HTTP/1.1 host={} path=/h2", proxy.addr);
        assert!(
            String::from_utf8_lossy(&bodies[0]).starts_with(&expected),
            "{:?}",
            bodies[0]
        );
        assert_eq!(bodies[0], bodies[1]);
        server.abort();
    })
    .await
    .expect("bounded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_half_sent_and_idle_connections_are_closed() {
    tokio::time::timeout(BOUND, async {
        let (origin, server) = origin().await;
        let proxy = Proxy::start(
            origin,
            &[
                "--header-read-timeout-ms",
                "300",
                "--idle-timeout-ms",
                "300",
            ],
        )
        .await;
        // Sends nothing: closed (the read ends) rather than held open.
        assert_eq!(exchange(proxy.addr, b"").await, "");
        // Half a head: closed without an answer to it.
        let res = exchange(proxy.addr, b"GET / HTTP/1.1\r\nHost: a.test\r\n").await;
        assert!(!res.contains("200"), "{res}");
        // A whole request, then nothing: answered, then closed when idle.
        let res = exchange(proxy.addr, b"GET /idle HTTP/1.1\r\nHost: a.test\r\n\r\n").await;
        assert_eq!(status(&res), "200", "{res}");
        // Over HTTP/2 (the preface, then nothing): closed too.
        let res = exchange(proxy.addr, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await;
        assert!(!res.contains("200"), "{res}");
        // The idle timeout alone (the head timeout far away) ends a kept-alive connection.
        let idle_only = Proxy::start(
            origin,
            &[
                "--header-read-timeout-ms",
                "600000",
                "--idle-timeout-ms",
                "300",
            ],
        )
        .await;
        let res = exchange(
            idle_only.addr,
            b"GET /idle HTTP/1.1\r\nHost: a.test\r\n\r\n",
        )
        .await;
        assert_eq!(status(&res), "200", "{res}");
        server.abort();
    })
    .await
    .expect("bounded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_the_connection_limit_new_connections_wait_their_turn() {
    tokio::time::timeout(BOUND, async {
        let (origin, server) = origin().await;
        let proxy = Proxy::start(origin, &["--max-connections", "2"]).await;
        let first = TcpStream::connect(proxy.addr).await.unwrap();
        let second = TcpStream::connect(proxy.addr).await.unwrap();
        // The accept queue is first in, first out: the proxy takes these two first.
        let probe = exchange(
            proxy.addr,
            b"GET /probe HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n",
        );
        let mut third = tokio::spawn(probe);
        // While both are open the third is not served (it waits in the backlog)...
        let early = tokio::time::timeout(Duration::from_millis(500), &mut third).await;
        assert!(early.is_err(), "served beyond the limit: {early:?}");
        // ...and is as soon as one closes.
        drop(first);
        let res = third.await.unwrap();
        assert_eq!(status(&res), "200", "{res}");
        drop(second);
        server.abort();
    })
    .await
    .expect("bounded");
}

#[tokio::test]
async fn a_secret_or_peers_without_a_purge_token_stop_the_start() {
    tokio::time::timeout(BOUND, async {
        let addr = support::free_addr().unwrap();
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_cache-proxy"))
            .args([
                "--listen",
                &addr.to_string(),
                "--upstream",
                "http://127.0.0.1:9",
            ])
            .args(["--secret", "a secret every proxy shares"])
            .args(["--peer", "http://127.0.0.1:9/_cache/invalidate"])
            .kill_on_drop(true)
            .output()
            .await
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("--purge-token"), "{err}");
    })
    .await
    .expect("bounded");
}
