//! The one-line layer with a disk tier keeps what it stored across a restart.

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use tower::ServiceExt;
use tower_cache::http::HttpCacheLayer;
use tower_layer::Layer;

use super::*;

#[tokio::test]
async fn the_one_line_layer_with_a_disk_tier_survives_a_restart() {
    tokio::time::timeout(BOUND, async {
        let dir = tempfile::tempdir().unwrap();
        let origin = tower::service_fn(|_req: Request<Full<Bytes>>| async {
            let mut res = http::Response::new(Full::new(Bytes::from("stored")));
            res.headers_mut()
                .insert("cache-control", "max-age=600".parse().unwrap());
            Ok::<_, std::convert::Infallible>(res)
        });
        {
            let svc = HttpCacheLayer::on_disk(dir.path()).unwrap().layer(origin);
            let res = svc
                .oneshot(Request::get("http://t/x").body(Full::default()).unwrap())
                .await
                .unwrap();
            assert_eq!(res.headers()["x-cache"], "MISS");
            res.into_body().collect().await.unwrap();
        }
        // The first layer and its tiers are gone (a restart); a new one on the same
        // directory waits for the old environment to close, then finds the entry on disk.
        let svc = HttpCacheLayer::on_disk(dir.path()).unwrap().layer(origin);
        let res = svc
            .oneshot(Request::get("http://t/x").body(Full::default()).unwrap())
            .await
            .unwrap();
        assert_eq!(res.headers()["x-cache"], "HIT-DISK");
    })
    .await
    .expect("bounded");
}
