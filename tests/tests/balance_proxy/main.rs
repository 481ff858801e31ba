//! `balance_proxy` as a child process over real loopback sockets: picks, health checks,
//! retries, consistent hashing, the stats endpoint, flags, and the drain on SIGTERM.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{Empty, Full};
use support::TestServer;
use tokio::io::{AsyncBufReadExt, BufReader};

/// Every test ends within this.
const BOUND: Duration = Duration::from_secs(60);

/// A backend named `name`: `/healthz` answers 200 while `healthy`, `/fail` answers 500
/// while `failing`, `/slow` takes 500 ms; everything else answers the name.
struct Backend {
    server: TestServer,
    healthy: Arc<AtomicBool>,
    failing: Arc<AtomicBool>,
    hits: Arc<AtomicUsize>,
}

async fn backend(name: &'static str) -> Backend {
    let healthy = Arc::new(AtomicBool::new(true));
    let failing = Arc::new(AtomicBool::new(false));
    let hits = Arc::new(AtomicUsize::new(0));
    let (h, f, n) = (healthy.clone(), failing.clone(), hits.clone());
    let server = TestServer::start(move |req: Request<hyper::body::Incoming>| {
        let (h, f, n) = (h.clone(), f.clone(), n.clone());
        async move {
            let status = |s: u16, body: &str| {
                Response::builder()
                    .status(s)
                    .body(Full::new(Bytes::from(body.to_owned())))
                    .unwrap()
            };
            match req.uri().path() {
                "/healthz" if h.load(Ordering::SeqCst) => status(200, "ok"),
                "/healthz" => status(503, "down"),
                "/fail" if f.load(Ordering::SeqCst) => {
                    n.fetch_add(1, Ordering::SeqCst);
                    status(500, name)
                }
                "/slow" => {
                    n.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    status(200, name)
                }
                _ => {
                    n.fetch_add(1, Ordering::SeqCst);
                    status(200, name)
                }
            }
        }
    })
    .await
    .unwrap();
    Backend {
        server,
        healthy,
        failing,
        hits,
    }
}

/// The proxy as a child process, killed when dropped.
struct Proxy {
    child: tokio::process::Child,
    addr: SocketAddr,
    admin: SocketAddr,
}

impl Proxy {
    async fn start(upstreams: &[SocketAddr], extra: &[&str]) -> Proxy {
        let list: Vec<String> = upstreams.iter().map(|a| a.to_string()).collect();
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_balance-proxy"))
            .args(["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
            .args(["--upstream", &list.join(",")])
            .args(extra)
            .kill_on_drop(true)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // The first line names both addresses.
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let line = lines.next_line().await.unwrap().expect("a first line");
        let addr_of = |prefix: &str| -> SocketAddr {
            let rest = &line[line.find(prefix).unwrap() + prefix.len()..];
            let end = rest.find([' ', '/']).unwrap_or(rest.len());
            rest[..end].parse().unwrap()
        };
        let addr = addr_of("on http://");
        let admin = addr_of("stats at http://");
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Proxy { child, addr, admin }
    }

    async fn get(&self, path: &str) -> (StatusCode, String) {
        self.get_with(path, &[]).await
    }

    async fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> (StatusCode, String) {
        let mut req = Request::get(path).header("host", "app.example");
        for (n, v) in headers {
            req = req.header(*n, *v);
        }
        let (status, _, body) =
            support::exchange(self.addr, req.body(Empty::<Bytes>::new()).unwrap(), BOUND)
                .await
                .unwrap();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    async fn stats(&self) -> serde_json::Value {
        let (status, body) = support::get(self.admin, "/stats").await.unwrap();
        assert_eq!(status, 200);
        serde_json::from_slice(&body).unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_health_checks_retries_and_stats() {
    tokio::time::timeout(BOUND, async {
        let (a, b) = (backend("a").await, backend("b").await);
        let proxy = Proxy::start(
            &[a.server.addr(), b.server.addr()],
            &[
                "--pick",
                "round-robin",
                "--health-path",
                "/healthz",
                "--health-interval",
                "100ms",
            ],
        )
        .await;
        // Until both are seen healthy, and both have answered: an endpoint reported ready
        // may join the picks a moment later.
        while proxy.stats().await["ready_upstreams"] != 2 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut seen = std::collections::HashSet::new();
        while seen.len() < 2 {
            let (status, name) = proxy.get("/").await;
            assert_eq!(status, 200);
            seen.insert(name);
        }
        let mut names = Vec::new();
        for _ in 0..10 {
            let (status, name) = proxy.get("/").await;
            assert_eq!(status, 200);
            names.push(name);
        }
        // In turns (the turn may start on either).
        assert!(
            names
                .windows(3)
                .skip(1)
                .all(|w| w[0] != w[1] && w[1] != w[2]),
            "{names:?}"
        );

        // b fails its health checks: it takes no traffic until it passes again.
        b.healthy.store(false, Ordering::SeqCst);
        while !proxy.stats().await["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["healthy"] == false)
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let before = b.hits.load(Ordering::SeqCst);
        for _ in 0..10 {
            assert_eq!(proxy.get("/").await, (StatusCode::OK, "a".into()));
        }
        assert_eq!(b.hits.load(Ordering::SeqCst), before);
        b.healthy.store(true, Ordering::SeqCst);
        while proxy.stats().await["ready_upstreams"] != 2 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }

        // A failing GET is retried once on the other upstream.
        a.failing.store(true, Ordering::SeqCst);
        let mut ok = 0;
        for _ in 0..6 {
            let (status, name) = proxy.get("/fail").await;
            if status == 200 {
                assert_eq!(name, "b");
                ok += 1;
            }
        }
        assert_eq!(
            ok, 6,
            "every GET was answered by b, on the first try or the retry"
        );
        let stats = proxy.stats().await;
        assert!(stats["retries"].as_u64().unwrap() >= 1, "{stats}");
        assert!(stats["requests"].as_u64().unwrap() >= 26, "{stats}");
        assert_eq!(stats["endpoints"].as_array().unwrap().len(), 2);
        let (status, text) = support::get(proxy.admin, "/").await.unwrap();
        assert_eq!(status, 200);
        assert!(text.starts_with(b"requests "), "{text:?}");
    })
    .await
    .expect("bounded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hash_on_a_header_keeps_a_key_on_one_upstream() {
    tokio::time::timeout(BOUND, async {
        let backends = [backend("a").await, backend("b").await, backend("c").await];
        let addrs: Vec<SocketAddr> = backends.iter().map(|b| b.server.addr()).collect();
        let proxy = Proxy::start(&addrs, &["--pick", "hash:x-user"]).await;
        let mut seen = std::collections::HashSet::new();
        for user in 0..12 {
            let user = user.to_string();
            let (status, first) = proxy.get_with("/", &[("x-user", &user)]).await;
            assert_eq!(status, 200);
            for _ in 0..3 {
                assert_eq!(proxy.get_with("/", &[("x-user", &user)]).await.1, first);
            }
            seen.insert(first);
        }
        assert!(seen.len() >= 2, "12 keys on one upstream: {seen:?}");
        // No key: refused, not sent anywhere.
        let hits: usize = backends.iter().map(|b| b.hits.load(Ordering::SeqCst)).sum();
        let (status, _) = proxy.get("/").await;
        assert_eq!(status, 502);
        let after: usize = backends.iter().map(|b| b.hits.load(Ordering::SeqCst)).sum();
        assert_eq!(hits, after);
    })
    .await
    .expect("bounded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_requests_in_progress_then_exits() {
    tokio::time::timeout(BOUND, async {
        let a = backend("a").await;
        let mut proxy = Proxy::start(&[a.server.addr()], &["--pick", "least-conn"]).await;
        let addr = proxy.addr;
        let slow = tokio::spawn(async move {
            let req = Request::get("/slow")
                .header("host", "app.example")
                .body(Empty::<Bytes>::new())
                .unwrap();
            support::exchange(addr, req, BOUND).await
        });
        // Until the slow request reached the backend.
        while a.hits.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let pid = nix::unistd::Pid::from_raw(proxy.child.id().unwrap() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        let (status, _, body) = slow.await.unwrap().unwrap();
        assert_eq!((status.as_u16(), &body[..]), (200, &b"a"[..]));
        let exit = proxy.child.wait().await.unwrap();
        assert!(exit.success(), "{exit:?}");
        assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    })
    .await
    .expect("bounded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flags_have_help_and_bad_ones_say_what_to_change() {
    tokio::time::timeout(BOUND, async {
        let run = |args: &'static [&'static str]| async move {
            tokio::process::Command::new(env!("CARGO_BIN_EXE_balance-proxy"))
                .args(args)
                .output()
                .await
                .unwrap()
        };
        let help = run(&["--help"]).await;
        assert!(help.status.success());
        let text = String::from_utf8_lossy(&help.stdout);
        for flag in [
            "--listen",
            "--upstream",
            "--pick",
            "--health-path",
            "--admin",
            "--threads",
            "--drain-timeout",
        ] {
            assert!(text.contains(flag), "{flag} missing from --help:\n{text}");
        }
        assert!(text.contains("[default: round-robin]"), "{text}");
        for (args, says) in [
            (&["--upstream", "nowhere"][..], "--upstream"),
            (
                &["--upstream", "127.0.0.1:1", "--pick", "random"][..],
                "round-robin, least-conn, latency or hash:HEADER",
            ),
            (
                &["--upstream", "127.0.0.1:1", "--threads", "0"][..],
                "--threads",
            ),
            (&["--listen", "127.0.0.1:1"][..], "--upstream"),
        ] {
            let out = run(args).await;
            assert_eq!(out.status.code(), Some(2), "{args:?}");
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(err.contains(says), "{args:?}: {err}");
        }
    })
    .await
    .expect("bounded");
}
