//! The gateway's edge: damaged requests, the token for writes and value ranges, host
//! names, slow and idle connections, connection storms.

use std::time::Duration;

use http::{Method, StatusCode};
use support::FleetProcess;

use crate::helpers::*;

/// Damage at the gateway: malformed and duplicated `x-user-id`, a body cut mid-way, a
/// body over the limit; each gets an answer or a closed connection, and the gateway goes
/// on serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_cut_requests_do_not_hurt_the_gateway() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let fleet = FleetProcess::start(FLEET, &["--serve", "--interval", "1h"])
        .await
        .unwrap();
    // `cut`: close our side after writing (hyper then closes at once, as a cut
    // connection), else wait for the answer (`connection: close` ends it).
    let raw = |bytes: Vec<u8>, cut: bool| {
        let gateway = fleet.gateway;
        async move {
            let mut s = tokio::net::TcpStream::connect(gateway).await.unwrap();
            let _ = s.write_all(&bytes).await;
            if cut {
                let _ = s.shutdown().await;
            }
            let mut out = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
            String::from_utf8_lossy(&out).into_owned()
        }
    };
    let host = fleet.gateway;
    let token = &fleet.token;
    for (user, expect) in [
        ("abc", "HTTP/1.1 200"),
        ("-1", "HTTP/1.1 200"),
        ("18446744073709551616", "HTTP/1.1 200"),
        // Not a valid header value at all: hyper refuses the request.
        ("\u{7f}", "HTTP/1.1 400"),
    ] {
        let answer = raw(format!(
            "GET /api/v1/budget/users/1 HTTP/1.1\r\nhost: {host}\r\nx-user-id: {user}\r\nconnection: close\r\n\r\n"
        )
        .into_bytes(), false)
        .await;
        // Not a user: counted against the address only, and served.
        assert!(answer.starts_with(expect), "{user:?}: {answer}");
    }
    let answer = raw(format!("GET /api/v1/budget/users/1 HTTP/1.1\r\nhost: {host}\r\nx-user-id: 1\r\nx-user-id: 2\r\nconnection: close\r\n\r\n").into_bytes(), false).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // A body cut mid-way: no write happens.
    let before = fleet
        .call(Method::GET, "/api/v1/budget/users/8", None, None, None)
        .await
        .unwrap()
        .2;
    let _ = raw(format!("PUT /api/v1/budget/users/8 HTTP/1.1\r\nhost: {host}\r\nauthorization: Bearer {token}\r\ncontent-length: 100\r\n\r\n{{\"spent\": 9").into_bytes(), true).await;
    // A body over 1 MiB: 413.
    let big = format!(
        "PUT /api/v1/budget/users/8 HTTP/1.1\r\nhost: {host}\r\nauthorization: Bearer {token}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{}",
        2 << 20,
        " ".repeat(2 << 20)
    );
    let answer = raw(big.into_bytes(), false).await;
    assert!(
        answer.starts_with("HTTP/1.1 413"),
        "{}",
        &answer[..answer.len().min(200)]
    );
    let after = fleet
        .call(Method::GET, "/api/v1/budget/users/8", None, None, None)
        .await
        .unwrap();
    assert_eq!(after.0, StatusCode::OK);
    assert_eq!(after.2, before, "a cut or refused write changed the user");
}

/// Writes through the gateway need the fleet's token (401 without it, with another, or
/// with another scheme; the scheme's case does not matter), and values out of range are
/// refused with 400; nothing refused changes anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_need_the_token_and_values_in_range() {
    let fleet = FleetProcess::start(FLEET, &["--serve", "--interval", "1h"])
        .await
        .unwrap();
    let token = fleet.token.clone();
    let put = |path: &'static str, auth: Option<String>, body: &'static str| {
        let fleet = &fleet;
        async move {
            let mut req =
                http::Request::put(path).header(http::header::HOST, fleet.gateway.to_string());
            if let Some(a) = auth {
                req = req.header(http::header::AUTHORIZATION, a);
            }
            let req = req
                .body(http_body_util::Full::new(bytes::Bytes::from(body)))
                .unwrap();
            let (s, body) = support::send(fleet.gateway, req).await.unwrap();
            (s, String::from_utf8_lossy(&body).into_owned())
        }
    };
    for auth in [
        None,
        Some("Bearer wrong".to_string()),
        Some(format!("Bearer {token}x")),
        Some(format!("Bearer {}", &token[..token.len() - 1])),
        Some(format!("Basic {token}")),
        Some(token.clone()),
    ] {
        let (s, body) = put(
            "/api/v1/budget/users/7",
            auth.clone(),
            r#"{"rate_limit": 0}"#,
        )
        .await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{auth:?}: {body}");
        let (s, body) = put(
            "/api/v1/reports/providers/openai",
            auth.clone(),
            r#"{"rate": 1e300}"#,
        )
        .await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{auth:?}: {body}");
    }
    let good = Some(format!("bEaReR {token}"));
    for (path, body) in [
        ("/api/v1/budget/users/7", r#"{"rate_limit": 0}"#),
        ("/api/v1/budget/users/7", r#"{"rate_limit": 2000000}"#),
        ("/api/v1/budget/users/7", r#"{"limit": 1e300}"#),
        ("/api/v1/budget/users/7", r#"{"spent": -1}"#),
        ("/api/v1/budget/users/7", r#"{"spent": 1e400}"#),
        ("/api/v1/reports/providers/openai", r#"{"rate": 1e300}"#),
        ("/api/v1/reports/providers/openai", r#"{"rate": -2}"#),
    ] {
        let (s, answer) = put(path, good.clone(), body).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{path} {body}: {answer}");
    }
    // Nothing changed.
    let user = fleet
        .call(Method::GET, "/api/v1/budget/users/7", None, None, None)
        .await
        .unwrap()
        .2;
    assert_eq!(user["rate_limit"], 1000, "{user}");
    assert_eq!(user["spent"], 7.0, "{user}");
    let rate = fleet
        .call(
            Method::GET,
            "/api/v1/budget/providers/openai",
            None,
            None,
            None,
        )
        .await
        .unwrap()
        .2;
    assert_eq!(rate["rate"], 2.5, "{rate}");
    // With the token and a value in range: written.
    let (s, body) = put("/api/v1/budget/users/7", good, r#"{"rate_limit": 5}"#).await;
    assert_eq!(s, StatusCode::OK, "{body}");
}

/// The gateway answers only its own host names: `localhost`, `127.0.0.1` and `[::1]`
/// with its port, and each `--host`; another name (a DNS rebinding page) gets 421, in
/// `Host` or in an absolute-form target, and a request without a host gets 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_gateways_host_names_are_answered() {
    let fleet = FleetProcess::start(
        FLEET,
        &["--serve", "--interval", "1h", "--host", "Fleet.Example"],
    )
    .await
    .unwrap();
    let port = fleet.gateway.port();
    let ask = |target: String, host: Option<String>| {
        let gateway = fleet.gateway;
        async move {
            let host = host.map(|h| format!("host: {h}\r\n")).unwrap_or_default();
            raw_exchange(
                gateway,
                format!("GET {target} HTTP/1.1\r\n{host}connection: close\r\n\r\n"),
            )
            .await
        }
    };
    let path = || "/api/v1/budget/users/1".to_string();
    for host in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        format!("LOCALHOST:{port}"),
        format!("[::1]:{port}"),
        "fleet.example".to_string(),
        format!("fleet.example:{port}"),
    ] {
        let answer = ask(path(), Some(host.clone())).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{host}: {answer}");
    }
    for host in [
        format!("attacker.example:{port}"),
        "attacker.example".to_string(),
        format!("127.0.0.2:{port}"),
        "localhost".to_string(),
        format!("localhost:{}", port.wrapping_add(1)),
    ] {
        let answer = ask(path(), Some(host.clone())).await;
        assert!(answer.starts_with("HTTP/1.1 421"), "{host}: {answer}");
    }
    let answer = ask(
        format!("http://attacker.example:{port}/api/v1/budget/users/1"),
        Some(format!("127.0.0.1:{port}")),
    )
    .await;
    assert!(
        answer.starts_with("HTTP/1.1 421"),
        "absolute form: {answer}"
    );
    let answer = raw_exchange(
        fleet.gateway,
        "GET /api/v1/budget/users/1 HTTP/1.0\r\n\r\n".to_string(),
    )
    .await;
    assert!(
        answer.starts_with("HTTP/1.0 400") || answer.starts_with("HTTP/1.1 400"),
        "no host: {answer}"
    );
}

/// Slowloris: a connection that sends nothing, one that sends half a head, one that
/// sends a head and part of its body, and a kept-alive connection left idle after its
/// request are each closed by the gateway (at 1 s header read and 2 s idle timeouts),
/// and the gateway goes on serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_slow_connections_are_closed() {
    use tokio::io::AsyncWriteExt;
    let fleet = FleetProcess::start(
        FLEET,
        &[
            "--serve",
            "--interval",
            "1h",
            "--header-read-timeout",
            "1s",
            "--idle-timeout",
            "2s",
        ],
    )
    .await
    .unwrap();
    let (gateway, token) = (fleet.gateway, fleet.token.clone());
    let connect = || async move { tokio::net::TcpStream::connect(gateway).await.unwrap() };
    let silent = connect().await;
    let mut half_head = connect().await;
    half_head
        .write_all(format!("GET /health/live HTTP/1.1\r\nhost: {gateway}\r\nx-a").as_bytes())
        .await
        .unwrap();
    let mut half_body = connect().await;
    half_body
        .write_all(
            format!(
                "PUT /api/v1/budget/users/3 HTTP/1.1\r\nhost: {gateway}\r\nauthorization: Bearer {token}\r\ncontent-length: 100\r\n\r\n{{\"spent\""
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let mut kept_alive = connect().await;
    kept_alive
        .write_all(format!("GET /health/live HTTP/1.1\r\nhost: {gateway}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let (silent, half_head, half_body, kept_alive) = tokio::join!(
        closed_by_gateway(silent),
        closed_by_gateway(half_head),
        closed_by_gateway(half_body),
        closed_by_gateway(kept_alive),
    );
    assert!(silent.0, "a silent connection stayed open");
    assert!(half_head.0, "half a head stayed open: {}", half_head.1);
    assert!(half_body.0, "half a body stayed open: {}", half_body.1);
    assert!(
        half_body.1.is_empty() || half_body.1.starts_with("HTTP/1.1 408"),
        "{}",
        half_body.1
    );
    assert!(kept_alive.0, "an idle kept-alive connection stayed open");
    assert!(kept_alive.1.starts_with("HTTP/1.1 200"), "{}", kept_alive.1);
    // The user was not written, and the gateway serves.
    let user = fleet
        .call(Method::GET, "/api/v1/budget/users/3", None, None, None)
        .await
        .unwrap();
    assert_eq!(user.0, StatusCode::OK);
    assert_eq!(user.2["spent"], 3.0, "{}", user.2);
}

/// A storm of 60 connections that send nothing against `--max-connections 20`: the
/// gateway holds 20 and closes the other 40 at once; once the storm is gone it serves
/// again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_storm_is_held_to_max_connections() {
    let fleet = FleetProcess::start(
        FLEET,
        &[
            "--serve",
            "--interval",
            "1h",
            "--max-connections",
            "20",
            "--header-read-timeout",
            "5m",
            "--idle-timeout",
            "5m",
        ],
    )
    .await
    .unwrap();
    let gateway = fleet.gateway;
    let mut storm = Vec::new();
    for _ in 0..60 {
        storm.push(tokio::net::TcpStream::connect(gateway).await.unwrap());
    }
    // Each read waits at most 20 s; the ones held stay open past it (5 min timeouts).
    let reads: Vec<_> = storm
        .into_iter()
        .map(|s| tokio::spawn(closed_by_gateway(s)))
        .collect();
    let mut closed = 0;
    for r in reads {
        closed += usize::from(r.await.unwrap().0);
    }
    assert_eq!(
        closed, 40,
        "of 60 connections at a limit of 20, {closed} closed"
    );
    // The 20 held are gone with the storm (dropped above): the gateway serves again.
    eventually(
        Duration::from_secs(10),
        "the gateway serves again",
        || async {
            support::get(gateway, "/health/live")
                .await
                .is_ok_and(|(s, _)| s == StatusCode::OK)
        },
    )
    .await;
    let refused = gauge(&fleet, "fleet_gateway_connections_refused").await;
    assert!(refused >= 40.0, "{refused}");
}

/// With a long header read timeout, a kept-alive connection left idle after its request
/// is closed by the idle timeout (1 s), and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_is_closed_by_the_idle_timeout() {
    use tokio::io::AsyncWriteExt;
    let fleet = FleetProcess::start(
        FLEET,
        &[
            "--serve",
            "--interval",
            "1h",
            "--header-read-timeout",
            "5m",
            "--idle-timeout",
            "1s",
        ],
    )
    .await
    .unwrap();
    let gateway = fleet.gateway;
    let mut kept_alive = tokio::net::TcpStream::connect(gateway).await.unwrap();
    kept_alive
        .write_all(format!("GET /health/live HTTP/1.1\r\nhost: {gateway}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let (closed, answer) = closed_by_gateway(kept_alive).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(closed, "an idle kept-alive connection stayed open");
    let idle_closed = gauge(&fleet, "fleet_gateway_connections_idle_closed").await;
    assert!(idle_closed >= 1.0, "{idle_closed}");
}
