//! Responses to one user's credentials are never served to another.

use axum::http::{HeaderMap, HeaderValue};
use axum::response::IntoResponse;
use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tower::ServiceExt;
use tower_cache::http::HttpCacheLayer;
use tower_cache::{Cache, MemoryTier};
use tower_layer::Layer;

use super::*;

/// An origin that personalises by `Authorization` or `Cookie` and picks, per path, how it
/// marks the response: the body names the user it was made for ("for alice"), or says
/// "shared" where the origin declares the response the same for everyone. Case 4 is the
/// common mistake: a personal page with only `max-age`; the cache must not share it.
pub(crate) async fn personal_origin(
    axum::extract::Path(p): axum::extract::Path<u32>,
    req_headers: HeaderMap,
) -> impl IntoResponse {
    let user_of = |name: &str| {
        req_headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(['=', ' ']).next())
            .map(str::to_string)
    };
    let by_auth = user_of("authorization");
    let user = by_auth.clone().or_else(|| user_of("cookie"));
    let mut h = HeaderMap::new();
    let (cc, vary, cookie, identity) = match p % 8 {
        0 => ("private, max-age=60", None, false, user),
        1 => ("no-store", None, false, user),
        2 => ("max-age=60", Some("cookie, authorization"), false, user),
        3 => ("max-age=60", None, true, user),
        4 => ("max-age=60", None, false, user),
        5 => ("public, max-age=60", None, false, None),
        // Shared by declaration, varying on Authorization only: personal by that alone.
        6 => ("s-maxage=60", Some("authorization"), false, by_auth),
        _ => ("no-cache", None, false, user),
    };
    h.insert("cache-control", HeaderValue::from_static(cc));
    if let Some(v) = vary {
        h.insert("vary", HeaderValue::from_static(v));
    }
    if cookie {
        h.insert("set-cookie", HeaderValue::from_static("session=private"));
    }
    let body = match identity {
        Some(u) => format!("for {u}"),
        None => "shared".to_string(),
    };
    (h, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_response_to_one_users_credentials_is_served_to_another() {
    tokio::time::timeout(BOUND, async {
        let app = axum::Router::new().route("/p/{n}", axum::routing::get(personal_origin));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move { axum::serve(listener, app).await });
        let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
        let store = Cache::new(MemoryTier::builder().max_entries(10_000).build().unwrap());
        let svc = HttpCacheLayer::new(store).layer(client);
        let users = [None, Some("alice"), Some("bob"), Some("carol")];
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        let mut tasks = Vec::new();
        for _ in 0..800 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let user = users[(x % 4) as usize];
            let by_cookie = x & 16 != 0;
            let path = format!("/p/{}", (x >> 8) % 24);
            let svc = svc.clone();
            tasks.push(tokio::spawn(async move {
                let mut req = Request::get(format!("http://{addr}{path}"));
                if let Some(u) = user {
                    req = if by_cookie {
                        req.header("cookie", format!("user={u}"))
                    } else {
                        req.header("authorization", format!("Bearer {u}"))
                    };
                }
                let res = svc
                    .oneshot(req.body(Full::default()).unwrap())
                    .await
                    .unwrap();
                let body = res.into_body().collect().await.unwrap().to_bytes();
                (user, path, String::from_utf8_lossy(&body).into_owned())
            }));
        }
        let mut hits_checked = 0;
        for t in tasks {
            let (user, path, body) = t.await.unwrap();
            // Whatever a user gets is either shared or made for that user.
            let own = user.map(|u| format!("for {u}"));
            assert!(
                body == "shared" || Some(&body) == own.as_ref(),
                "{user:?} asked {path} and got {body:?}"
            );
            hits_checked += 1;
        }
        assert_eq!(hits_checked, 800);
        server.abort();
    })
    .await
    .expect("bounded");
}
