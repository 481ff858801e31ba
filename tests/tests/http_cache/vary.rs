//! Vary (RFC 9111 section 4.1): `Accept-Encoding` and `Accept-Language` keyed by meaning,
//! and a bound on the variants of one URL.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use tower::ServiceExt;
use tower_cache::http::{HttpCacheLayer, HttpPolicy};
use tower_cache::{Cache, MemoryTier};
use tower_layer::Layer;

use super::rfc_cases::{fields, run_all, RfcCase};

type Fields = &'static [(&'static str, &'static str)];

/// A first request with `first`, then one with `second`: served from the first's variant
/// when `shared`.
fn pair(
    name: &'static str,
    rfc: &'static str,
    vary: &'static str,
    first: Fields,
    second: Fields,
    shared: bool,
) -> RfcCase {
    let head: super::rfc_cases::Head = match vary {
        "accept-language" => |_| {
            (
                200,
                fields(&[("cache-control", "max-age=60"), ("vary", "Accept-Language")]),
            )
        },
        _ => |_| {
            (
                200,
                fields(&[("cache-control", "max-age=60"), ("vary", "Accept-Encoding")]),
            )
        },
    };
    RfcCase {
        name,
        rfc,
        policy: HttpPolicy::new,
        layer: |l| l,
        head,
        steps: vec![(first, true), (second, !shared)],
        check: None,
    }
}

const AE: &str = "accept-encoding";
const AL: &str = "accept-language";

fn cases() -> Vec<RfcCase> {
    let mut cases = vec![
        pair(
            "order does not matter",
            "9111 4.1, 9110 12.5.3",
            AE,
            &[(AE, "gzip, br")],
            &[(AE, "br,gzip")],
            true,
        ),
        pair(
            "case does not matter",
            "9111 4.1, 9110 8.4.1",
            AE,
            &[(AE, "gzip, br")],
            &[(AE, "GZIP , Br")],
            true,
        ),
        pair(
            "q=1 is the default",
            "9110 12.4.2",
            AE,
            &[(AE, "gzip, br")],
            &[(AE, "gzip;q=1.000, br;Q=1")],
            true,
        ),
        pair(
            "q-values by value, not spelling",
            "9110 12.4.2",
            AE,
            &[(AE, "gzip;q=0.5, br")],
            &[(AE, "br, gzip; q=0.50")],
            true,
        ),
        pair(
            "q=0 is not acceptable: as if not listed",
            "9110 12.4.2",
            AE,
            &[(AE, "gzip")],
            &[(AE, "gzip, br;q=0")],
            true,
        ),
        pair(
            "two lines are one list",
            "9110 5.3",
            AE,
            &[(AE, "gzip, br")],
            &[(AE, "br"), (AE, "gzip")],
            true,
        ),
        pair(
            "another coding is another variant",
            "9111 4.1",
            AE,
            &[(AE, "gzip, br")],
            &[(AE, "gzip")],
            false,
        ),
        pair(
            "another preference is another variant",
            "9111 4.1",
            AE,
            &[(AE, "gzip;q=0.5, br")],
            &[(AE, "gzip, br;q=0.5")],
            false,
        ),
        // With a wildcard, q=0 excepts a coding from it: not the same as unlisted.
        pair(
            "q=0 under * is kept",
            "9110 12.5.3",
            AE,
            &[(AE, "*")],
            &[(AE, "*, gzip;q=0")],
            false,
        ),
        // identity;q=0 says "not unencoded", which leaving it out does not.
        pair(
            "identity;q=0 is kept",
            "9110 12.5.3",
            AE,
            &[(AE, "gzip")],
            &[(AE, "gzip, identity;q=0")],
            false,
        ),
        // An empty list (identity only) is not an absent one (anything).
        pair(
            "empty is not absent",
            "9110 12.5.3",
            AE,
            &[(AE, "")],
            &[],
            false,
        ),
        pair(
            "all q=0 is empty, not absent",
            "9110 12.5.3",
            AE,
            &[(AE, "")],
            &[(AE, "br;q=0")],
            true,
        ),
        pair(
            "a parameter other than q is compared as sent",
            "9111 4.1",
            AE,
            &[(AE, "gzip;level=1")],
            &[(AE, "gzip; level=1")],
            false,
        ),
        pair(
            "language tags are case-insensitive",
            "9110 12.5.4, 4647 2",
            AL,
            &[(AL, "en-US, fr;q=0.5")],
            &[(AL, "fr;q=0.5,en-us")],
            true,
        ),
        pair(
            "another language is another variant",
            "9111 4.1",
            AL,
            &[(AL, "en-US")],
            &[(AL, "en-GB")],
            false,
        ),
    ];
    let mut exact = pair(
        "normalisation off: order matters",
        "9111 4.1",
        AE,
        &[(AE, "gzip, br")],
        &[(AE, "br, gzip")],
        false,
    );
    exact.layer = |l| l.normalize_negotiation(false);
    cases.push(exact);
    cases
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc_9111_vary_negotiation_fields_keyed_by_meaning() {
    run_all(&cases()).await;
}

type TestBody = http_body_util::combinators::UnsyncBoxBody<Bytes, Infallible>;

/// An origin whose responses vary on `X-Variant`, fresh for a minute.
fn varying_origin() -> impl tower::Service<
    Request<Full<Bytes>>,
    Response = http::Response<TestBody>,
    Error = Infallible,
    Future = impl Send,
> + Clone {
    tower::service_fn(|req: Request<Full<Bytes>>| async move {
        let v = req.headers().get("x-variant").cloned();
        let res = http::Response::builder()
            .header("cache-control", "max-age=60")
            .header("vary", "X-Variant")
            .body(Full::new(Bytes::from(format!("{v:?}"))).boxed_unsync())
            .unwrap();
        Ok::<_, Infallible>(res)
    })
}

#[tokio::test]
async fn the_variants_of_a_url_are_bounded_and_the_oldest_goes() {
    tokio::time::timeout(Duration::from_secs(30), async {
        let store = Cache::new(MemoryTier::builder().max_entries(10_000).build().unwrap());
        let svc = HttpCacheLayer::new(store.clone())
            .max_variants(3)
            .layer(varying_origin());
        let get = |v: String| {
            let svc = svc.clone();
            async move {
                let req = Request::get("http://a.test/r")
                    .header("x-variant", v)
                    .body(Full::default())
                    .unwrap();
                let res = svc.oneshot(req).await.unwrap();
                let x = res.headers()["x-cache"].to_str().unwrap().to_owned();
                res.into_body().collect().await.unwrap();
                x
            }
        };
        for v in 1..=5 {
            assert_eq!(get(format!("v{v}")).await, "MISS", "v{v}");
        }
        assert_eq!(store.stats().variant_evictions, 2);
        // The three stored last are served; the two oldest were dropped.
        for v in [5, 4, 3] {
            assert_eq!(get(format!("v{v}")).await, "HIT-MEM", "v{v}");
        }
        assert_eq!(get("v1".into()).await, "MISS");
        // Storing v1 again dropped v3, the oldest now.
        assert_eq!(get("v3".into()).await, "MISS");
        assert_eq!(store.stats().variant_evictions, 4);

        // A client sending a new value each time: the URL never holds more than the
        // bound (and its index).
        for v in 0..200 {
            get(format!("flood-{v}")).await;
        }
        let entries = store.memory().stats().entries;
        assert!(entries <= 3 + 1, "{entries} entries for one URL");
        assert_eq!(store.stats().variant_evictions, 204);
    })
    .await
    .expect("bounded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn variants_stored_at_once_all_count_against_the_bound() {
    tokio::time::timeout(Duration::from_secs(30), async {
        let store = Cache::new(MemoryTier::builder().max_entries(10_000).build().unwrap());
        let svc = HttpCacheLayer::new(store.clone())
            .max_variants(4)
            .layer(varying_origin());
        let mut tasks = tokio::task::JoinSet::new();
        for v in 0..64 {
            let svc = svc.clone();
            tasks.spawn(async move {
                let req = Request::get("http://a.test/r")
                    .header("x-variant", format!("v{v}"))
                    .body(Full::default())
                    .unwrap();
                let res = svc.oneshot(req).await.unwrap();
                res.into_body().collect().await.unwrap();
            });
        }
        while tasks.join_next().await.is_some() {}
        let entries = store.memory().stats().entries;
        assert!(entries <= 4 + 1, "{entries} entries for one URL");
        // Every variant past the bound is dropped and counted; first variants stored at
        // once may each start an index, and one that replaces another drops its list too.
        let evicted = store.stats().variant_evictions;
        assert!((60..64).contains(&evicted), "{evicted} variants dropped");
    })
    .await
    .expect("bounded");
}

#[tokio::test(start_paused = true)]
async fn the_index_lives_as_long_as_its_longest_lived_variant() {
    tokio::time::timeout(Duration::from_secs(30), async {
        // `/r` answers the `long` variant fresh for 10 minutes, the others for 1 s.
        let origin = tower::service_fn(|req: Request<Full<Bytes>>| async move {
            let long = req.headers().get("x-variant").is_some_and(|v| v == "long");
            let res = http::Response::builder()
                .header(
                    "cache-control",
                    if long { "max-age=600" } else { "max-age=1" },
                )
                .header("vary", "X-Variant")
                .body(Full::new(Bytes::new()).boxed_unsync())
                .unwrap();
            Ok::<_, Infallible>(res)
        });
        let store = Cache::new(
            MemoryTier::builder()
                .time_source(tower_cache::TimeSource::Tokio)
                .build()
                .unwrap(),
        );
        let svc = HttpCacheLayer::new(store).layer(origin);
        let get = |v: &'static str| {
            let svc = svc.clone();
            async move {
                let req = Request::get("http://a.test/r")
                    .header("x-variant", v)
                    .body(Full::default())
                    .unwrap();
                let res = svc.oneshot(req).await.unwrap();
                let x = res.headers()["x-cache"].to_str().unwrap().to_owned();
                res.into_body().collect().await.unwrap();
                x
            }
        };
        assert_eq!(get("long").await, "MISS");
        // A short-lived variant stored after it does not shorten the index's life.
        assert_eq!(get("short").await, "MISS");
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(get("long").await, "HIT-MEM");
    })
    .await
    .expect("bounded");
}
