//! Attacks on the `cache_proxy` example as a shared cache, black box: the binary as a
//! child process, driven with raw bytes over real sockets on 127.0.0.1, in front of an
//! axum origin that answers with what it was sent. Each test asserts what a shared cache
//! should do, so it fails while the fault is there.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const BOUND: Duration = Duration::from_secs(60);

/// The proxy as a child process, killed when dropped.
struct Proxy {
    _child: tokio::process::Child,
    addr: SocketAddr,
}

impl Proxy {
    async fn start(upstream: SocketAddr, extra: &[&str]) -> Proxy {
        let addr = support::free_addr().unwrap();
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_cache-proxy"))
            .args(["--listen", &addr.to_string()])
            .args(["--upstream", &format!("http://{upstream}")])
            .args(extra)
            .kill_on_drop(true)
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        while TcpStream::connect(addr).await.is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("the proxy exited at start: {status}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Proxy {
            _child: child,
            addr,
        }
    }
}

/// An origin that answers every request with what it saw (host as sent, path, the
/// forwarding fields the proxy set, and the request body), fresh for 60 s; with
/// `vary`, a `Vary` of that value.
async fn origin(vary: Option<&'static str>) -> SocketAddr {
    let app = axum::Router::new().fallback(move |req: axum::extract::Request| async move {
        let (parts, body) = req.into_parts();
        let field = |name: &str| {
            parts
                .headers
                .get_all(name)
                .iter()
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .collect::<Vec<_>>()
                .join("|")
        };
        let body = axum::body::to_bytes(body, 1 << 20)
            .await
            .unwrap_or_default();
        let text = format!(
            "[host={}] [path={}] [xff={}] [fwd={}] [body={}]",
            field("host"),
            parts.uri.path_and_query().map_or("/", |p| p.as_str()),
            field("x-forwarded-for"),
            field("forwarded"),
            String::from_utf8_lossy(&body),
        );
        let mut res = axum::response::Response::new(axum::body::Body::from(text));
        res.headers_mut()
            .insert("cache-control", "max-age=60".parse().unwrap());
        if let Some(v) = vary {
            res.headers_mut().insert("vary", v.parse().unwrap());
        }
        res
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// Writes `raw` on a new connection from `from` (a loopback source address) and reads
/// until the proxy closes it.
async fn exchange_from(from: [u8; 4], proxy: SocketAddr, raw: &[u8]) -> String {
    let socket = TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::from((from, 0)))
        .expect("bind a loopback source address");
    let mut s = socket.connect(proxy).await.unwrap();
    s.write_all(raw).await.unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out).await;
    String::from_utf8_lossy(&out).into_owned()
}

async fn exchange(proxy: SocketAddr, raw: &[u8]) -> String {
    exchange_from([127, 0, 0, 1], proxy, raw).await
}

fn x_cache(raw: &str) -> &str {
    raw.lines()
        .find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case("x-cache").then(|| v.trim())
        })
        .unwrap_or("")
}

/// "Fat GET" (web cache poisoning by a request body): the body of a GET is forwarded to
/// the origin but is not part of the key, so an origin that reads it (search and
/// GraphQL endpoints often do) has its answer to one client's body stored for the URL
/// and served to everyone. A shared cache must not store (or must not forward the body
/// of) a GET that carries content.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_get_with_a_body_does_not_poison_the_url() {
    tokio::time::timeout(BOUND, async {
        let origin = origin(None).await;
        let proxy = Proxy::start(origin, &[]).await;
        let attacker = exchange(
            proxy.addr,
            b"GET /search HTTP/1.1\r\nHost: a.test\r\nContent-Length: 25\r\nConnection: close\r\n\r\n<script>alert(1)</script>",
        )
        .await;
        assert!(attacker.contains("[body=<script>"), "{attacker}");
        // A chunked body reaches the origin too (it was once sent on as empty).
        let chunked = exchange(
            proxy.addr,
            b"GET /search HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n8\r\n<script>\r\n0\r\n\r\n",
        )
        .await;
        assert!(chunked.contains("[body=<script>]"), "{chunked}");
        let victim = exchange(
            proxy.addr,
            b"GET /search HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(
            !victim.contains("<script>"),
            "the victim got the attacker's body-dependent response ({}): {victim}",
            x_cache(&victim)
        );
    })
    .await
    .expect("bounded");
}

/// `Vary: X-Forwarded-For` (or `Forwarded`): the origin says its answer depends on the
/// client address the proxy itself puts in those fields, but the cache computes the
/// variant from the client's request after the edge dropped them, so every client is the
/// same variant (absent) and a second client gets the first client's answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vary_on_a_field_the_proxy_sets_keeps_clients_apart() {
    tokio::time::timeout(BOUND, async {
        let origin = origin(Some("X-Forwarded-For")).await;
        let proxy = Proxy::start(origin, &[]).await;
        let req = b"GET /geo HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n";
        let first = exchange_from([127, 0, 0, 1], proxy.addr, req).await;
        assert!(first.contains("[xff=127.0.0.1]"), "{first}");
        let second = exchange_from([127, 0, 0, 2], proxy.addr, req).await;
        assert!(
            second.contains("[xff=127.0.0.2]"),
            "a client at 127.0.0.2 got the answer for 127.0.0.1 ({}): {second}",
            x_cache(&second)
        );
    })
    .await
    .expect("bounded");
}

/// The key lower-cases the authority, but the `Host` goes to the origin as the client
/// spelt it: an origin that reflects it (absolute links, redirects, canonical URLs) has
/// one client's spelling stored for everyone's. The origin should see the authority the
/// key was made of (or the spelling should be part of the key).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_host_as_forwarded_is_the_host_as_keyed() {
    tokio::time::timeout(BOUND, async {
        let origin = origin(None).await;
        let proxy = Proxy::start(origin, &[]).await;
        let attacker = exchange(
            proxy.addr,
            b"GET /home HTTP/1.1\r\nHost: A.TeSt\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(attacker.contains("[host="), "{attacker}");
        let victim = exchange(
            proxy.addr,
            b"GET /home HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(
            victim.contains("[host=a.test]"),
            "the victim got a response made for another spelling of the host ({}): {victim}",
            x_cache(&victim)
        );
    })
    .await
    .expect("bounded");
}

/// A raw origin: its `n`th request (from 0) gets `answer(n)`'s bytes; `None` for a
/// response head and a body that never ends (the socket held open).
async fn raw_origin(
    answer: impl Fn(usize) -> Option<Vec<u8>> + Send + Sync + 'static,
) -> (SocketAddr, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let count = std::sync::Arc::new(AtomicUsize::new(0));
    let answer = std::sync::Arc::new(answer);
    let counter = count.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let (answer, counter) = (answer.clone(), counter.clone());
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let n = counter.fetch_add(1, Ordering::SeqCst);
                match answer(n) {
                    Some(bytes) => {
                        let _ = s.write_all(&bytes).await;
                        let _ = s.shutdown().await;
                    }
                    None => {
                        let _ = s
                            .write_all(b"HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nContent-Length: 10\r\n\r\nabc")
                            .await;
                        tokio::time::sleep(Duration::from_secs(3600)).await;
                    }
                }
            });
        }
    });
    (addr, count)
}

/// A `stale-while-revalidate` refresh runs in the background with no client: when the
/// origin sends its head and then stalls the body, the refresh never ends, keeps its
/// upstream connection, and keeps the URL's single-flight slot. Every later miss of the
/// URL then waits the whole collapse wait (10 s) for a fetch that will never finish,
/// each time the entry expires, until the process restarts. A background fetch should be
/// bounded (body timeout) and should not hold the slot other requests wait on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_background_refresh_does_not_make_later_misses_wait() {
    tokio::time::timeout(BOUND, async {
        let (origin, _count) = raw_origin(|n| {
            (n != 1).then(|| {
                format!(
                    "HTTP/1.1 200 OK\r\nCache-Control: max-age=1, stale-while-revalidate=2\r\nContent-Length: 6\r\nConnection: close\r\n\r\nbody-{}",
                    n % 10
                )
                .into_bytes()
            })
        })
        .await;
        let proxy = Proxy::start(origin, &[]).await;
        let req = b"GET /swr HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n";
        let first = exchange(proxy.addr, req).await;
        assert_eq!(x_cache(&first), "MISS", "{first}");
        tokio::time::sleep(Duration::from_millis(1500)).await;
        // Stale within its window: served at once, refreshed in the background (the
        // origin's second request, which stalls).
        let stale = exchange(proxy.addr, req).await;
        assert_eq!(x_cache(&stale), "STALE", "{stale}");
        // Past the window (and the entry's keep time): a miss.
        tokio::time::sleep(Duration::from_millis(3500)).await;
        let started = tokio::time::Instant::now();
        let later = exchange(proxy.addr, req).await;
        let took = started.elapsed();
        assert!(later.contains("body-2"), "{later}");
        assert!(
            took < Duration::from_secs(5),
            "a miss waited {took:?} on a stalled background refresh: {later}"
        );
    })
    .await
    .expect("bounded");
}

/// Cache deception: `/account.css` on an origin that ignores the suffix answers the
/// account page, fresh for 60 s but without `public` or `private`. The request carries
/// the victim's cookie, so the cache must not store it (it does not: no extension rules,
/// and a response to a request with cookies is stored only when the origin says it may
/// be shared). Passes; kept as a regression check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_static_looking_path_with_cookies_is_not_stored() {
    tokio::time::timeout(BOUND, async {
        let (origin, _count) = raw_origin(|n| {
            Some(
                format!(
                    "HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nContent-Type: text/html\r\nContent-Length: 16\r\nConnection: close\r\n\r\naccount-of-user{}",
                    n % 10
                )
                .into_bytes(),
            )
        })
        .await;
        let proxy = Proxy::start(origin, &[]).await;
        let victim = exchange(
            proxy.addr,
            b"GET /account.css HTTP/1.1\r\nHost: a.test\r\nCookie: session=victim\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(victim.contains("account-of-user0"), "{victim}");
        let attacker = exchange(
            proxy.addr,
            b"GET /account.css HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(
            !attacker.contains("account-of-user0"),
            "the victim's page was served to another client: {attacker}"
        );
    })
    .await
    .expect("bounded");
}

/// The invalidation endpoint other proxies post to sits on the client listener and reads
/// its body with no time limit; a request in progress is never idle, so a client that
/// sends `POST /_cache/invalidate` with a `Content-Length` and then nothing holds its
/// connection (and a `--max-connections` slot) forever: a handful of such connections
/// shut every client out. The same request to any other path is bounded by the upstream
/// timeout (the test passes with `/other`); this one should be too (a body-read timeout,
/// or the idle timeout counting a stalled body).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_invalidation_body_does_not_hold_a_connection_slot_forever() {
    tokio::time::timeout(BOUND, async {
        let origin = origin(None).await;
        let proxy = Proxy::start(
            origin,
            &[
                "--purge-token",
                "a-purge-token-of-32-bytes-tests!",
                "--secret",
                "a-secret-of-32-bytes-for-tests!!",
                "--peer",
                "http://127.0.0.1:9/_cache/invalidate",
                "--max-connections",
                "2",
                "--header-read-timeout-ms",
                "500",
                "--idle-timeout-ms",
                "500",
                "--upstream-timeout-ms",
                "1000",
            ],
        )
        .await;
        let mut held = Vec::new();
        for _ in 0..2 {
            let mut s = TcpStream::connect(proxy.addr).await.unwrap();
            s.write_all(
                b"POST /_cache/invalidate HTTP/1.1\r\nHost: a.test\r\nContent-Length: 100\r\n\r\n",
            )
            .await
            .unwrap();
            held.push(s);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        // Every timeout the proxy has is a second or less: a client well after them must
        // be served.
        let served = tokio::time::timeout(
            Duration::from_secs(8),
            exchange(
                proxy.addr,
                b"GET /ok HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n",
            ),
        )
        .await;
        assert!(
            served.as_ref().is_ok_and(|r| r.contains("[path=/ok]")),
            "two stalled invalidation bodies shut other clients out: {served:?}"
        );
        drop(held);
    })
    .await
    .expect("bounded");
}

/// One client's never-storable answer evicts everyone's entry: a logged-in user's reload
/// (`Cache-Control: no-cache` with a cookie) goes to the origin, which answers `private`
/// to cookies; the cache then marks the whole URL pass for 10 s in place of the fresh
/// shared entry, so every anonymous client goes to the origin until the mark expires,
/// and one client repeating it every 10 s keeps the URL uncached. A response the cache
/// may not store for this request should leave the stored response for others alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_answer_to_one_client_does_not_evict_the_shared_entry() {
    tokio::time::timeout(BOUND, async {
        let app = axum::Router::new().fallback(|req: axum::extract::Request| async move {
            let private = req.headers().contains_key("cookie");
            let mut res = axum::response::Response::new(axum::body::Body::from(if private {
                "your account"
            } else {
                "public home"
            }));
            res.headers_mut().insert(
                "cache-control",
                if private { "private" } else { "max-age=60" }.parse().unwrap(),
            );
            res
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let origin = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let proxy = Proxy::start(origin, &[]).await;
        let anon = b"GET /home HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n";
        assert_eq!(x_cache(&exchange(proxy.addr, anon).await), "MISS");
        assert_eq!(x_cache(&exchange(proxy.addr, anon).await), "HIT-MEM");
        let reload = exchange(
            proxy.addr,
            b"GET /home HTTP/1.1\r\nHost: a.test\r\nCookie: session=u1\r\nCache-Control: no-cache\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(reload.contains("your account"), "{reload}");
        let after = exchange(proxy.addr, anon).await;
        assert_eq!(
            x_cache(&after),
            "HIT-MEM",
            "one client's private answer evicted the fresh shared entry: {after}"
        );
    })
    .await
    .expect("bounded");
}

/// Forwarding fields spelt with underscores (`X_Forwarded_Host`) are not recognised as
/// forwarding fields, so they reach the origin; an origin behind a CGI-style interface
/// (PHP, WSGI, Rack/Puma before CVE-2024-45614) reads `X_Forwarded_Host` and
/// `X-Forwarded-Host` as the same `HTTP_X_FORWARDED_HOST`, builds its links from it, and
/// the cache stores the attacker's host for the URL. The edge should treat the
/// underscore spellings as the fields they alias (drop them, or refuse the request).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_underscore_spelling_of_a_forwarding_field_does_not_reach_the_origin() {
    tokio::time::timeout(BOUND, async {
        // The origin sees headers as CGI does: upper-cased, `-` as `_`.
        let app = axum::Router::new().fallback(|req: axum::extract::Request| async move {
            let cgi = |want: &str| {
                req.headers()
                    .iter()
                    .filter(|(n, _)| {
                        format!("HTTP_{}", n.as_str().to_ascii_uppercase().replace('-', "_"))
                            == want
                    })
                    .map(|(_, v)| String::from_utf8_lossy(v.as_bytes()).into_owned())
                    .last()
                    .unwrap_or_default()
            };
            let host = match cgi("HTTP_X_FORWARDED_HOST") {
                h if h.is_empty() => cgi("HTTP_HOST"),
                h => h,
            };
            let mut res = axum::response::Response::new(axum::body::Body::from(format!(
                "<script src=\"http://{host}/app.js\"></script>"
            )));
            res.headers_mut()
                .insert("cache-control", "max-age=60".parse().unwrap());
            res
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let origin = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let proxy = Proxy::start(origin, &[]).await;
        // The dashed spelling is dropped at the edge, as documented.
        let dashed = exchange(
            proxy.addr,
            b"GET /a HTTP/1.1\r\nHost: a.test\r\nX-Forwarded-Host: evil.test\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(dashed.contains("http://a.test/app.js"), "{dashed}");
        let _attacker = exchange(
            proxy.addr,
            b"GET /b HTTP/1.1\r\nHost: a.test\r\nX_Forwarded_Host: evil.test\r\nConnection: close\r\n\r\n",
        )
        .await;
        let victim = exchange(
            proxy.addr,
            b"GET /b HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(
            victim.contains("http://a.test/app.js"),
            "the victim got a page built from the attacker's X_Forwarded_Host ({}): {victim}",
            x_cache(&victim)
        );
    })
    .await
    .expect("bounded");
}

/// The purge token's scheme is matched case-sensitively (`Bearer ` only): RFC 9110
/// section 11.1 makes auth schemes case-insensitive, and a purge sent as `bearer TOKEN`
/// (as some clients and proxies normalise it) is refused with 401, so the entry the
/// operator meant to remove stays served. Not a bypass: the fault is a refused purge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_with_a_lower_case_bearer_scheme_is_accepted() {
    tokio::time::timeout(BOUND, async {
        let origin = origin(None).await;
        let token = "a-purge-token-of-32-bytes-tests!";
        let proxy = Proxy::start(origin, &["--purge-token", token]).await;
        let get = b"GET /p HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n";
        exchange(proxy.addr, get).await;
        assert_eq!(x_cache(&exchange(proxy.addr, get).await), "HIT-MEM");
        // Without the token: refused, and the entry stays.
        let refused = exchange(
            proxy.addr,
            b"PURGE /p HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(refused.starts_with("HTTP/1.1 401"), "{refused}");
        assert_eq!(x_cache(&exchange(proxy.addr, get).await), "HIT-MEM");
        let purge = format!(
            "PURGE /p HTTP/1.1\r\nHost: a.test\r\nAuthorization: bearer {token}\r\nConnection: close\r\n\r\n"
        );
        let res = exchange(proxy.addr, purge.as_bytes()).await;
        assert!(res.starts_with("HTTP/1.1 200"), "{res}");
        assert_eq!(x_cache(&exchange(proxy.addr, get).await), "MISS");
    })
    .await
    .expect("bounded");
}

/// A URL's variants are filed under one `Vary` list; a response with another list (a
/// CORS layer that adds `Vary: Origin` only when the request has an `Origin`, which is
/// common) to a request that misses (another `Accept-Encoding`) replaces the index with a new epoch and orphans every stored variant. One
/// request with an `Origin` empties the URL's cache for everyone; mixed traffic keeps it
/// empty. A response whose `Vary` differs should be filed beside the others (or under the
/// union of the lists), not wipe them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_with_another_vary_list_does_not_wipe_the_variants() {
    tokio::time::timeout(BOUND, async {
        let app = axum::Router::new().fallback(|req: axum::extract::Request| async move {
            let cors = req.headers().contains_key("origin");
            let mut res = axum::response::Response::new(axum::body::Body::from("page"));
            res.headers_mut()
                .insert("cache-control", "max-age=60".parse().unwrap());
            res.headers_mut().insert(
                "vary",
                if cors { "Accept-Encoding, Origin" } else { "Accept-Encoding" }
                    .parse()
                    .unwrap(),
            );
            res
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let origin = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let proxy = Proxy::start(origin, &[]).await;
        let plain = b"GET /v HTTP/1.1\r\nHost: a.test\r\nAccept-Encoding: gzip\r\nConnection: close\r\n\r\n";
        assert_eq!(x_cache(&exchange(proxy.addr, plain).await), "MISS");
        assert_eq!(x_cache(&exchange(proxy.addr, plain).await), "HIT-MEM");
        let cors = exchange(
            proxy.addr,
            b"GET /v HTTP/1.1\r\nHost: a.test\r\nAccept-Encoding: br\r\nOrigin: http://x.test\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert_eq!(x_cache(&cors), "MISS", "{cors}");
        let after = exchange(proxy.addr, plain).await;
        assert_eq!(
            x_cache(&after),
            "HIT-MEM",
            "one request with an Origin orphaned the stored variants: {after}"
        );
    })
    .await
    .expect("bounded");
}

/// With `--key-forwarded` (behind a trusted proxy that sets `X-Forwarded-*` on every
/// request), entries are keyed by URL and forwarding fields, but `PURGE` removes the key
/// of the URL alone: the documented "removes only the entry for the values it carries"
/// removes nothing, answers 200, and the content the operator purged (a leak, say) stays
/// served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_under_key_forwarded_removes_the_entry_it_names() {
    tokio::time::timeout(BOUND, async {
        let origin = origin(None).await;
        let token = "a-purge-token-of-32-bytes-tests!";
        let proxy = Proxy::start(origin, &["--key-forwarded", "--purge-token", token]).await;
        let get = b"GET /k HTTP/1.1\r\nHost: a.test\r\nX-Forwarded-For: 10.0.0.1\r\nX-Forwarded-Proto: https\r\nConnection: close\r\n\r\n";
        assert_eq!(x_cache(&exchange(proxy.addr, get).await), "MISS");
        assert_eq!(x_cache(&exchange(proxy.addr, get).await), "HIT-MEM");
        let purge = format!(
            "PURGE /k HTTP/1.1\r\nHost: a.test\r\nX-Forwarded-For: 10.0.0.1\r\nX-Forwarded-Proto: https\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
        );
        let res = exchange(proxy.addr, purge.as_bytes()).await;
        assert!(res.starts_with("HTTP/1.1 200"), "{res}");
        let after = exchange(proxy.addr, get).await;
        assert_eq!(
            x_cache(&after),
            "MISS",
            "the purge answered {:?} and the entry is still served: {after}",
            res.lines().last()
        );
    })
    .await
    .expect("bounded");
}

/// Cache-poisoned denial of service through a precondition: `If-Match` and
/// `If-Unmodified-Since` are not treated as conditional, so the request is keyed as a
/// plain GET and sent on; the origin answers `412 Precondition Failed`, and when it puts
/// its usual `max-age` on every response (a framework-wide header), the 412 is stored for
/// the URL and every client gets it. The answer to one client's precondition is not an
/// answer for everyone: a response to a request with preconditions the cache did not
/// evaluate should not be stored (or at least not a 412).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_precondition_is_not_stored_for_everyone() {
    tokio::time::timeout(BOUND, async {
        let app = axum::Router::new().fallback(|req: axum::extract::Request| async move {
            let failed = req
                .headers()
                .get("if-match")
                .is_some_and(|v| v.as_bytes() != b"\"v1\"");
            let mut res = axum::response::Response::new(axum::body::Body::from(if failed {
                "precondition failed"
            } else {
                "the page"
            }));
            if failed {
                *res.status_mut() = axum::http::StatusCode::PRECONDITION_FAILED;
            }
            res.headers_mut()
                .insert("cache-control", "max-age=60".parse().unwrap());
            res.headers_mut().insert("etag", "\"v1\"".parse().unwrap());
            res
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let origin = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let proxy = Proxy::start(origin, &[]).await;
        let attacker = exchange(
            proxy.addr,
            b"GET /doc HTTP/1.1\r\nHost: a.test\r\nIf-Match: \"nope\"\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(attacker.starts_with("HTTP/1.1 412"), "{attacker}");
        let victim = exchange(
            proxy.addr,
            b"GET /doc HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(
            victim.starts_with("HTTP/1.1 200") && victim.contains("the page"),
            "the victim got the attacker's 412 ({}): {victim}",
            x_cache(&victim)
        );
    })
    .await
    .expect("bounded");
}

/// The cache answers a client's `If-None-Match` from any stored response, whatever its
/// status: a stored `404` with an `ETag` (or any stored response, for `If-None-Match: *`)
/// is answered `304 Not Modified`, which tells the client to keep using the 200 it holds
/// for a resource that is gone. RFC 9110 section 13.2.1: preconditions are ignored when
/// the response would not be 2xx; the client should get the stored 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_404_is_not_answered_not_modified() {
    tokio::time::timeout(BOUND, async {
        let (origin, _count) = raw_origin(|_| {
            Some(
                b"HTTP/1.1 404 Not Found\r\nCache-Control: max-age=60\r\nETag: \"gone\"\r\nContent-Length: 4\r\nConnection: close\r\n\r\ngone"
                    .to_vec(),
            )
        })
        .await;
        let proxy = Proxy::start(origin, &[]).await;
        let first = exchange(
            proxy.addr,
            b"GET /deleted HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(first.starts_with("HTTP/1.1 404"), "{first}");
        let conditional = exchange(
            proxy.addr,
            b"GET /deleted HTTP/1.1\r\nHost: a.test\r\nIf-None-Match: *\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(
            conditional.starts_with("HTTP/1.1 404"),
            "a stored 404 was answered as not modified: {conditional}"
        );
    })
    .await
    .expect("bounded");
}

/// A request body of unknown length: over HTTP/2 it goes in DATA frames with no
/// `Content-Length` field, so nothing in the header fields says the GET has content.
struct UnsizedBody(Option<bytes::Bytes>);

impl http_body::Body for UnsizedBody {
    type Data = bytes::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
        std::task::Poll::Ready(self.0.take().map(|b| Ok(http_body::Frame::data(b))))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_none()
    }
}

/// The fat GET over HTTP/2: the body arrives in DATA frames without a `Content-Length`,
/// so a check of the header fields alone sees a plain GET, stores the origin's answer
/// to the attacker's body and serves it to everyone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_get_with_a_body_over_http2_does_not_poison_the_url() {
    tokio::time::timeout(BOUND, async {
        let origin = origin(None).await;
        let proxy = Proxy::start(origin, &[]).await;
        let client: hyper_util::client::legacy::Client<_, UnsizedBody> =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .http2_only(true)
                .build_http();
        let send = |body: Option<&'static str>| {
            let client = client.clone();
            let url = format!("http://{}/search", proxy.addr);
            async move {
                let req = http::Request::get(url)
                    .body(UnsizedBody(body.map(|b: &'static str| {
                        bytes::Bytes::from_static(b.as_bytes())
                    })))
                    .unwrap();
                let res = client.request(req).await.unwrap();
                assert_eq!(res.version(), http::Version::HTTP_2);
                let cache = res.headers().get("x-cache").cloned();
                let body = http_body_util::BodyExt::collect(res.into_body())
                    .await
                    .unwrap()
                    .to_bytes();
                (cache, String::from_utf8_lossy(&body).into_owned())
            }
        };
        let (_, attacker) = send(Some("<script>alert(1)</script>")).await;
        assert!(attacker.contains("[body=<script>"), "{attacker}");
        let (cache, victim) = send(None).await;
        assert!(
            !victim.contains("<script>"),
            "the victim got the attacker's body-dependent response ({cache:?}): {victim}"
        );
        // The plain GET is cached as usual.
        let (cache, again) = send(None).await;
        assert_eq!(again, victim);
        assert_eq!(cache.as_ref().map(|v| v.as_bytes()), Some(&b"HIT-MEM"[..]));
    })
    .await
    .expect("bounded");
}
